/* cmd_validate.c — `ctxgate validate FILE_OR_DIR...`: loads manifests exactly as `serve -f` does,
 * prints every diagnostic, an "ok" line per clean file and a summary. Exit 0 without errors,
 * 1 with errors, 2 on usage errors. */
#include <stdio.h>
#include <string.h>

#include "cli/commands.h"
#include "config/load.h"

static void validate_usage(FILE *f)
{
    fputs(
        "usage: ctxgate validate FILE_OR_DIR...\n"
        "\n"
        "Checks LLMGateway, ModelContextProtocol and Secret manifests offline: schema, defaults,\n"
        "references between objects and Secrets. Directories contribute every *.yaml, *.yml and\n"
        "*.json file in them (sorted, not recursive). Exit status: 0 valid, 1 invalid, 2 usage.\n",
        f);
}

int cmd_validate(int argc, char **argv)
{
    int first = 1;
    if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
        validate_usage(stdout);
        return 0;
    }
    if (argc > 1 && !strcmp(argv[1], "--")) first = 2;
    if (argc <= first) {
        validate_usage(stderr);
        return 2;
    }
    for (int i = first; i < argc; i++) {
        if (argv[i][0] == '-' && argv[i][1] && first == 1) {
            fprintf(stderr, "ctxgate validate: unknown option '%s'\n", argv[i]);
            validate_usage(stderr);
            return 2;
        }
    }
    cfg_diags diags = {0};
    cfg_load_report rep;
    cfg_snapshot *snap = NULL;
    int rc = cfg_load_paths_report((const char *const *)argv + first, (size_t)(argc - first), &snap,
                                   &diags, &rep);
    cfg_diags_print(stdout, &diags);
    for (size_t i = 0; i < rep.n_files; i++) {
        bool bad = false;
        for (size_t k = 0; k < diags.n && !bad; k++)
            bad = !diags.items[k].warning && !strcmp(diags.items[k].file, rep.files[i]);
        if (!bad) printf("%s: ok\n", rep.files[i]);
    }
    size_t warnings = diags.n - diags.n_errors;
    size_t docs = rep.n_gateways + rep.n_mcps + rep.n_secrets;
    if (rc == 0)
        printf("%zu document%s valid (%zu LLMGateway, %zu ModelContextProtocol, %zu Secret), %zu "
               "warning%s\n",
               docs, docs == 1 ? "" : "s", rep.n_gateways, rep.n_mcps, rep.n_secrets, warnings,
               warnings == 1 ? "" : "s");
    else
        printf("%zu error%s, %zu warning%s in %zu document%s\n", diags.n_errors,
               diags.n_errors == 1 ? "" : "s", warnings, warnings == 1 ? "" : "s", docs,
               docs == 1 ? "" : "s");
    cfg_snapshot_unref(snap);
    cfg_load_report_free(&rep);
    cfg_diags_free(&diags);
    return rc == 0 ? 0 : 1;
}
