/* kube_source.h — `serve --kube`: the configuration of one LLMGateway read from the Kubernetes
 * API. On the main loop, a kube client runs one informer per object the gateway needs: the
 * LLMGateway itself and every ModelContextProtocol and Secret it (or those MCPs) reference, each
 * watched by name (field selector metadata.name=NAME: the gateway's Role grants get/list/watch on
 * those names only, via resourceNames). The informer set follows the references as the objects
 * change. Events are coalesced: on_change runs once, 100 ms after the first event of a burst. */
#ifndef CTXGATE_GATEWAY_KUBE_SOURCE_H
#define CTXGATE_GATEWAY_KUBE_SOURCE_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

#include "config/load.h"

typedef struct kube_source kube_source;

typedef struct kube_source_opts {
    uv_loop_t *loop;
    const char *kubeconfig; /* NULL = $KUBECONFIG, in-cluster, ~/.kube/config (kube_config_load) */
    const char *ns;         /* NULL = the configuration's namespace (the pod's in-cluster) */
    const char *gateway;    /* the LLMGateway's name */
    void (*on_change)(kube_source *ks, void *udata);
    void *udata;
} kube_source_opts;

/* Loads the kube configuration and starts watching. NULL with a sentence in err when the kube
 * configuration cannot be read. */
kube_source *kube_source_start(const kube_source_opts *o, char *err, size_t errlen);

typedef enum {
    KS_LOADED,    /* *out is a new snapshot (refs 1) */
    KS_UNCHANGED, /* the objects are those of the last KS_LOADED / KS_INVALID: nothing to do */
    KS_WAITING,   /* an informer has not listed yet; why says which */
    KS_GONE,      /* the LLMGateway does not exist (deleted, or not created yet) */
    KS_INVALID,   /* diags has the errors; why names the first missing reference, if any */
} ks_result;

/* Builds the configuration from the informers' caches (never blocks). why (may be NULL)
 * receives one sentence for KS_WAITING, KS_GONE and KS_INVALID; every missing referenced object
 * is also logged as an error for KS_INVALID. force: load even when nothing changed. */
ks_result kube_source_load(kube_source *ks, bool force, cfg_snapshot **out, cfg_diags *diags,
                           char *why, size_t whylen);
const char *kube_source_namespace(const kube_source *ks);
const char *kube_source_origin(const kube_source *ks); /* "in-cluster" or the kubeconfig path */
/* Stops every informer and the client; handles close asynchronously on the loop. */
void kube_source_free(kube_source *ks);

#endif
