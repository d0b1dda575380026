/* cmd_crds.c — `ctxgate crds`: prints the CustomResourceDefinitions generated from the schema
 * (pipe into `kubectl apply -f -`). */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "config/load.h"

int cmd_crds(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: ctxgate crds\n\nPrints the LLMGateway and ModelContextProtocol CRDs as YAML "
             "(e.g. ctxgate crds | kubectl apply -f -).");
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr, "ctxgate crds: takes no arguments (got '%s')\n", argv[1]);
        return 2;
    }
    if (cfg_crds_write(stdout) != 0) {
        fprintf(stderr, "ctxgate crds: cannot write the CRDs to standard output\n");
        return 1;
    }
    return 0;
}
