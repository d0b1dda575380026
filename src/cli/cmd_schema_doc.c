/* cmd_schema_doc.c — `ctxgate schema-doc`: prints the Markdown field reference generated from
 * the schema (docs/reference.md is this output). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "config/load.h"

int cmd_schema_doc(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: ctxgate schema-doc\n\nPrints the field reference of every kind as Markdown "
             "(ctxgate schema-doc > docs/reference.md).");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ctxgate schema-doc: takes no arguments (got '%s')\n", argv[1]);
        return 2;
    }
    if (cfg_schema_doc_write(stdout) != 0) {
        fprintf(stderr, "ctxgate schema-doc: cannot write to standard output\n");
        return 1;
    }
    return 0;
}
