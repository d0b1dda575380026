/* cmd_controller.c — `ctxgate controller`: parses the flags and runs the controller
 * (src/controller/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/commands.h"
#include "controller/controller.h"
#include "core/log.h"

#ifndef CTXGATE_VERSION
#define CTXGATE_VERSION "0.1.0"
#endif

static void usage(FILE *f)
{
    fprintf(f,
            "usage: ctxgate controller [flags]\n"
            "Reconciles LLMGateway and ModelContextProtocol resources: owned Deployments, "
            "Services, RBAC,\nautoscalers, provisioned Redis stores, and honest status.\n\n"
            "  --kubeconfig PATH            kubeconfig (default: $KUBECONFIG, in-cluster, "
            "~/.kube/config)\n"
            "  --namespace NS               watch one namespace (default: all)\n"
            "  --gateway-image IMAGE        gateway image (default ctxgate:" CTXGATE_VERSION ")\n"
            "  --redis-image IMAGE          image of provisioned stores (default redis:7-alpine)\n"
            "  --metrics-address ADDR       address of /metrics, /healthz, /readyz (default "
            "0.0.0.0)\n"
            "  --metrics-port PORT          its port (default 8081; 0 = any free port)\n"
            "  --leader-elect=true|false    Lease leader election (default true)\n"
            "  --lease-namespace NS         namespace of the Lease (default: own namespace)\n"
            "  --lease-name NAME            the Lease (default ctxgate-controller)\n"
            "  --identity ID                holder identity (default HOSTNAME_PID)\n"
            "  --lease-duration S           leaseDurationSeconds (default 15)\n"
            "  --renew-deadline S           give up leading when not renewed for S (default 10)\n"
            "  --retry-period S             acquire / renew attempts every S (default 2)\n"
            "  --gateway-admin-url TEMPLATE where a gateway's /admin/targets is read; {name} "
            "{namespace} {port}\n"
            "                               (default http://{name}.{namespace}.svc:{port})\n"
            "  --resync-seconds N           re-reconcile every object every N s (default 30; 0 "
            "= never)\n"
            "  --log-level LEVEL            debug | info | warn | error (default info)\n"
            "  --help                       this text\n");
}

static int parse_uint(const char *flag, const char *v, unsigned max, unsigned *out)
{
    char *end;
    long n = v ? strtol(v, &end, 10) : -1;
    if (!v || *v == 0 || *end || n < 0 || (unsigned long)n > max) {
        fprintf(stderr, "ctxgate controller: %s: expected an integer 0..%u, got '%s'\n", flag, max,
                v ? v : "");
        return -1;
    }
    *out = (unsigned)n;
    return 0;
}

int cmd_controller(int argc, char **argv)
{
    static char identity[300];
    char host[256] = "controller";
    gethostname(host, sizeof host - 1);
    snprintf(identity, sizeof identity, "%s_%d", host, (int)getpid());
    ctl_opts o = {.gateway_image = "ctxgate:" CTXGATE_VERSION,
                  .redis_image = "redis:7-alpine",
                  .metrics_address = "0.0.0.0",
                  .metrics_port = 8081,
                  .leader_elect = true,
                  .lease_name = "ctxgate-controller",
                  .identity = identity,
                  .admin_url = "http://{name}.{namespace}.svc:{port}",
                  .resync_s = 30,
                  .lease_s = 15,
                  .renew_s = 10,
                  .retry_s = 2};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *eq = strchr(a, '=');
        char flag[64];
        const char *val = NULL;
        if (strncmp(a, "--", 2) == 0 && eq && (size_t)(eq - a) < sizeof flag) {
            snprintf(flag, sizeof flag, "%.*s", (int)(eq - a), a);
            val = eq + 1;
        } else {
            snprintf(flag, sizeof flag, "%s", a);
        }
        if (strcmp(flag, "--help") == 0 || strcmp(flag, "-h") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(flag, "--leader-elect") == 0) {
            if (!val || strcmp(val, "true") == 0)
                o.leader_elect = true;
            else if (strcmp(val, "false") == 0)
                o.leader_elect = false;
            else {
                fprintf(stderr, "ctxgate controller: --leader-elect: expected true or false\n");
                return 2;
            }
            continue;
        }
        static const char *const with_value[] = {
            "--kubeconfig",      "--namespace",         "--gateway-image",   "--redis-image",
            "--metrics-address", "--metrics-port",      "--lease-namespace", "--lease-name",
            "--identity",        "--gateway-admin-url", "--resync-seconds",  "--lease-duration",
            "--renew-deadline",  "--retry-period",      "--log-level",       NULL};
        bool known = false;
        for (int k = 0; with_value[k]; k++)
            if (strcmp(flag, with_value[k]) == 0) known = true;
        if (!known) {
            fprintf(stderr, "ctxgate controller: unknown flag %s\n", a);
            usage(stderr);
            return 2;
        }
        if (!val) {
            if (i + 1 >= argc) {
                fprintf(stderr, "ctxgate controller: %s needs a value\n", flag);
                return 2;
            }
            val = argv[++i];
        }
        unsigned u;
        if (strcmp(flag, "--kubeconfig") == 0)
            o.kubeconfig = val;
        else if (strcmp(flag, "--namespace") == 0)
            o.namespace_ = *val ? val : NULL;
        else if (strcmp(flag, "--gateway-image") == 0)
            o.gateway_image = val;
        else if (strcmp(flag, "--redis-image") == 0)
            o.redis_image = val;
        else if (strcmp(flag, "--metrics-address") == 0)
            o.metrics_address = val;
        else if (strcmp(flag, "--metrics-port") == 0) {
            if (parse_uint(flag, val, 65535, &u)) return 2;
            o.metrics_port = (int)u;
        } else if (strcmp(flag, "--lease-namespace") == 0)
            o.lease_namespace = val;
        else if (strcmp(flag, "--lease-name") == 0)
            o.lease_name = val;
        else if (strcmp(flag, "--identity") == 0)
            o.identity = val;
        else if (strcmp(flag, "--gateway-admin-url") == 0)
            o.admin_url = val;
        else if (strcmp(flag, "--resync-seconds") == 0) {
            if (parse_uint(flag, val, 86400, &o.resync_s)) return 2;
        } else if (strcmp(flag, "--lease-duration") == 0) {
            if (parse_uint(flag, val, 3600, &o.lease_s) || !o.lease_s) return 2;
        } else if (strcmp(flag, "--renew-deadline") == 0) {
            if (parse_uint(flag, val, 3600, &o.renew_s) || !o.renew_s) return 2;
        } else if (strcmp(flag, "--retry-period") == 0) {
            if (parse_uint(flag, val, 3600, &o.retry_s) || !o.retry_s) return 2;
        } else if (strcmp(flag, "--log-level") == 0) {
            log_level lvl;
            if (log_level_parse(val, &lvl) != 0) {
                fprintf(stderr, "ctxgate controller: --log-level: unknown level '%s'\n", val);
                return 2;
            }
            log_set_level(lvl);
        }
    }
    if (o.renew_s >= o.lease_s || o.retry_s >= o.renew_s) {
        fprintf(stderr, "ctxgate controller: --retry-period < --renew-deadline < "
                        "--lease-duration is required\n");
        return 2;
    }
    return ctl_run(&o);
}
