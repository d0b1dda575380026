/* gateway.h — the `serve` runtime: worker threads with one loop each, configuration publishing,
 * live reload (SIGHUP and file changes, or the Kubernetes API with `--kube`) and graceful
 * shutdown (SIGTERM/SIGINT). */
#ifndef CTXGATE_GATEWAY_GATEWAY_H
#define CTXGATE_GATEWAY_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>

typedef struct gateway_opts {
    const char *const *paths; /* manifest files or directories */
    size_t n_paths;
    const char *gateway_name; /* NULL = the first LLMGateway */
    int workers;              /* 0 = number of CPUs */
    int drain_timeout_s;      /* in-flight requests get this long after SIGTERM; 0 = 30 */
    /* --kube: the configuration comes from the API server (kube_source.h), not from paths;
     * gateway_name is then required */
    bool kube;
    const char *kube_namespace; /* NULL = the kube configuration's namespace */
    const char *kubeconfig;     /* NULL = $KUBECONFIG, in-cluster, ~/.kube/config */
} gateway_opts;

/* Runs until SIGTERM/SIGINT. Returns the process exit status: 0 after a clean shutdown, 1 when
 * the initial configuration is invalid (with --kube: no valid configuration from the API server
 * within 30 s) or the listener cannot be bound. */
int gateway_run(const gateway_opts *o);

#endif
