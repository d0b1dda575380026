/* main.c — ctxgate's command dispatcher. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "obs/metrics.h"

#ifndef CTXGATE_VERSION
#define CTXGATE_VERSION "0.1.0"
#endif

static void usage(FILE *f)
{
    fprintf(f, "usage: ctxgate <command> [options]\n"
               "\n"
               "commands:\n"
               "  serve -f FILE_OR_DIR...   run the gateway from "
               "LLMGateway/ModelContextProtocol/Secret manifests\n"
               "  serve --kube --gateway NAME  the same, following its resources in a cluster\n"
               "  controller                reconcile LLMGateway and ModelContextProtocol "
               "resources in a cluster\n"
               "  webhook                   validating admission webhook for the resources\n"
               "  validate FILE_OR_DIR...   check manifests offline; exit 1 on any error\n"
               "  crds                      print the CustomResourceDefinitions\n"
               "  schema-doc                print the manifest field reference (Markdown)\n"
               "  ctx list|show|export|delete  manage a running gateway's stored conversations\n"
               "  version                   print the version\n"
               "\n"
               "Run 'ctxgate <command> --help' for a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    obs_set_build_info(CTXGATE_VERSION);
    if (strcmp(cmd, "serve") == 0) return cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "validate") == 0) return cmd_validate(argc - 1, argv + 1);
    if (strcmp(cmd, "crds") == 0) return cmd_crds(argc - 1, argv + 1);
    if (strcmp(cmd, "schema-doc") == 0) return cmd_schema_doc(argc - 1, argv + 1);
    if (strcmp(cmd, "ctx") == 0) return cmd_ctx(argc - 1, argv + 1);
    if (strcmp(cmd, "controller") == 0) return cmd_controller(argc - 1, argv + 1);
    if (strcmp(cmd, "webhook") == 0) return cmd_webhook(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("ctxgate %s\n", CTXGATE_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "ctxgate: unknown command '%s'\n\n", cmd);
    usage(stderr);
    return 2;
}
