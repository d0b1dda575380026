/* cmd_webhook.c — `ctxgate webhook --tls-cert FILE --tls-key FILE [--address ADDR] [--port PORT]
 * [--kubeconfig PATH]`: the validating admission webhook (webhook/webhook.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "webhook/webhook.h"

static int webhook_usage(FILE *f)
{
    fprintf(f, "usage: ctxgate webhook --tls-cert FILE --tls-key FILE [--address ADDR]\n"
               "                       [--port PORT] [--kubeconfig PATH]\n"
               "\n"
               "Validating admission webhook for LLMGateway and ModelContextProtocol\n"
               "(admission.k8s.io/v1 AdmissionReview on POST /validate; GET /healthz). It runs\n"
               "the checks of `ctxgate validate` that CEL cannot, such as a referenced Secret or\n"
               "ModelContextProtocol that does not exist, fetching them from the API server.\n"
               "  --tls-cert, --tls-key  PEM files (unencrypted key); re-read when they change\n"
               "  --address ADDR         IPv4/IPv6 literal to bind (default 0.0.0.0)\n"
               "  --port PORT            default 9443\n"
               "  --kubeconfig PATH      default: $KUBECONFIG, then the in-cluster service\n"
               "                         account, then ~/.kube/config\n");
    return f == stdout ? 0 : 2;
}

int cmd_webhook(int argc, char **argv)
{
    webhook_opts o = {0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) return webhook_usage(stdout);
        if (!v) {
            fprintf(stderr, "ctxgate webhook: unknown or incomplete option '%s'\n", a);
            return webhook_usage(stderr);
        }
        if (strcmp(a, "--tls-cert") == 0) {
            o.tls_cert_file = v;
        } else if (strcmp(a, "--tls-key") == 0) {
            o.tls_key_file = v;
        } else if (strcmp(a, "--address") == 0) {
            o.address = v;
        } else if (strcmp(a, "--kubeconfig") == 0) {
            o.kubeconfig = v;
        } else if (strcmp(a, "--port") == 0) {
            char *end;
            long p = strtol(v, &end, 10);
            if (!*v || *end || p < 1 || p > 65535) {
                fprintf(stderr, "ctxgate webhook: --port: '%s' is not a port from 1 to 65535\n", v);
                return 2;
            }
            o.port = (int)p;
        } else {
            fprintf(stderr, "ctxgate webhook: unknown option '%s'\n", a);
            return webhook_usage(stderr);
        }
        i++;
    }
    if (!o.tls_cert_file || !o.tls_key_file) {
        fprintf(stderr, "ctxgate webhook: --tls-cert and --tls-key are required (the API server "
                        "only calls webhooks over HTTPS)\n");
        return webhook_usage(stderr);
    }
    return webhook_run(&o);
}
