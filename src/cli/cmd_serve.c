/* cmd_serve.c — `ctxgate serve -f FILE_OR_DIR... [--gateway NAME] [--workers N]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "gateway/gateway.h"

static int serve_usage(FILE *f)
{
    fprintf(f, "usage: ctxgate serve -f FILE_OR_DIR [-f ...] [--gateway NAME] [--workers N]\n"
               "                     [--drain-timeout SECONDS]\n"
               "\n"
               "Serves one LLMGateway (default: the first in the manifests) with the\n"
               "ModelContextProtocol and Secret documents beside it. Reloads on SIGHUP and when\n"
               "the files change; drains in-flight requests on SIGTERM.\n");
    return f == stdout ? 0 : 2;
}

static int parse_int(const char *flag, const char *v, int *out)
{
    char *end;
    long n = strtol(v, &end, 10);
    if (!*v || *end || n < 0 || n > 1024) {
        fprintf(stderr, "ctxgate serve: %s: '%s' is not a number from 0 to 1024\n", flag, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

int cmd_serve(int argc, char **argv)
{
    const char **paths = calloc((size_t)argc, sizeof *paths);
    gateway_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            free(paths);
            return serve_usage(stdout);
        } else if ((strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) && v) {
            paths[o.n_paths++] = v;
            i++;
        } else if (strcmp(a, "--gateway") == 0 && v) {
            o.gateway_name = v;
            i++;
        } else if (strcmp(a, "--workers") == 0 && v) {
            if (parse_int(a, v, &o.workers)) goto bad;
            i++;
        } else if (strcmp(a, "--drain-timeout") == 0 && v) {
            if (parse_int(a, v, &o.drain_timeout_s)) goto bad;
            i++;
        } else {
            fprintf(stderr, "ctxgate serve: unknown or incomplete option '%s'\n", a);
            goto bad;
        }
    }
    if (o.n_paths == 0) {
        fprintf(stderr, "ctxgate serve: give at least one manifest file or directory with -f\n");
        goto bad;
    }
    o.paths = paths;
    int rc = gateway_run(&o);
    free(paths);
    return rc;
bad:
    free(paths);
    serve_usage(stderr);
    return 2;
}
