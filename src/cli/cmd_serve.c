/* cmd_serve.c — `ctxgate serve -f FILE_OR_DIR... [--gateway NAME] [--workers N]`, or
 * `ctxgate serve --kube --gateway NAME [--namespace NS] [--kubeconfig PATH]`. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "gateway/gateway.h"

static int serve_usage(FILE *f)
{
    fprintf(f, "usage: ctxgate serve -f FILE_OR_DIR [-f ...] [--gateway NAME] [--workers N]\n"
               "                     [--drain-timeout SECONDS]\n"
               "       ctxgate serve --kube --gateway NAME [--namespace NS] [--kubeconfig PATH]\n"
               "                     [--workers N] [--drain-timeout SECONDS]\n"
               "\n"
               "Serves one LLMGateway (default: the first in the manifests) with the\n"
               "ModelContextProtocol and Secret documents beside it. Reloads on SIGHUP and when\n"
               "the files change; drains in-flight requests on SIGTERM.\n"
               "\n"
               "--kube reads the configuration from the Kubernetes API instead of files: it\n"
               "watches the LLMGateway NAME and the ModelContextProtocols and Secrets it\n"
               "references (each by name: get/list/watch on those names is all it needs) and\n"
               "applies every change live; an invalid change is logged and the last good\n"
               "configuration keeps serving (GET /admin/config says it was rejected). The\n"
               "listener opens once the first valid configuration has arrived; without one\n"
               "within 30 s serve exits naming what is missing.\n"
               "  --namespace NS     where the objects live (default: the kubeconfig context's\n"
               "                     namespace; in a pod, the pod's)\n"
               "  --kubeconfig PATH  default: $KUBECONFIG, then the in-cluster service account\n"
               "                     (KUBERNETES_SERVICE_HOST), then ~/.kube/config\n");
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
        } else if (strcmp(a, "--kube") == 0) {
            o.kube = true;
        } else if (strcmp(a, "--namespace") == 0 && v) {
            o.kube_namespace = v;
            i++;
        } else if (strcmp(a, "--kubeconfig") == 0 && v) {
            o.kubeconfig = v;
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
    if (o.kube && o.n_paths) {
        fprintf(stderr, "ctxgate serve: -f and --kube are exclusive: the configuration comes "
                        "from files or from the Kubernetes API\n");
        goto bad;
    }
    if (o.kube && !o.gateway_name) {
        fprintf(stderr, "ctxgate serve: --kube needs --gateway NAME (the LLMGateway to serve)\n");
        goto bad;
    }
    if (!o.kube && (o.kube_namespace || o.kubeconfig)) {
        fprintf(stderr, "ctxgate serve: --namespace and --kubeconfig only apply with --kube\n");
        goto bad;
    }
    if (!o.kube && o.n_paths == 0) {
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
