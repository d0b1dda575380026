/* cmd_crds.c — `ctxgate crds [--out DIR]`: the CustomResourceDefinitions generated from the
 * schema, printed (pipe into `kubectl apply -f -`) or written one file per CRD (deploy/crds/ and
 * the Helm chart's crds/ are exactly this output: `make crds`). */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "config/load.h"
#include "config/schema.h"

int cmd_crds(int argc, char **argv)
{
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        puts("usage: ctxgate crds [--out DIR]\n\nPrints the LLMGateway and ModelContextProtocol "
             "CRDs as YAML (e.g. ctxgate crds | kubectl apply -f -).\nWith --out DIR, writes "
             "DIR/<plural>.ctxgate.io.yaml for each instead (deploy/crds/ is that output).");
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "--out")) {
        if (cfg_crds_write_dir(argv[2]) != 0) {
            fprintf(stderr, "ctxgate crds: cannot write the CRD files into %s: %s\n", argv[2],
                    strerror(errno));
            return 1;
        }
        return 0;
    }
    if (argc > 1) {
        fprintf(stderr,
                "ctxgate crds: unknown or incomplete option '%s' (usage: ctxgate crds "
                "[--out DIR])\n",
                argv[1]);
        return 2;
    }
    if (cfg_crds_write(stdout) != 0) {
        fprintf(stderr, "ctxgate crds: cannot write the CRDs to standard output\n");
        return 1;
    }
    return 0;
}
