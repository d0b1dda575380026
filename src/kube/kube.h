/* kube.h — a small asynchronous Kubernetes REST client on a libuv loop: configuration
 * (in-cluster service account or kubeconfig), one-shot requests, informers (list + watch with an
 * object cache), Events, and Lease leader election. Built on the upstream client (libcurl / the
 * native HTTP/1.1 client) and jansson. Every callback runs on the loop the client was made with;
 * nothing here blocks that loop (files — the service-account token, kubeconfig — are read at
 * start and on a timer, they are small local files).
 *
 * Objects are jansson values exactly as the API server sent them. A json_t handed to a callback
 * is borrowed: json_incref it to keep it past the callback. */
#ifndef CTXGATE_KUBE_KUBE_H
#define CTXGATE_KUBE_KUBE_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

/* ---- configuration (config.c) ---- */

typedef struct kube_config {
    char *server;     /* https://host:port, no trailing slash */
    char *token;      /* bearer token, or NULL */
    char *token_file; /* re-read every 60 s when set (in-cluster: the projected token rotates) */
    char *ca_pem;     /* PEM of the CAs trusted for the server; NULL = the system bundle */
    char *cert_pem;   /* client certificate (PEM) or NULL */
    char *key_pem;    /* its private key (PEM) or NULL */
    bool insecure;    /* insecure-skip-tls-verify */
    char *namespace;  /* the namespace of the context / the pod; "default" when none is known */
    char *source;     /* "in-cluster" or the kubeconfig path, for logs */
} kube_config;

/* Finds the configuration the way kubectl and client-go do:
 *   path != NULL           that kubeconfig file;
 *   else $KUBECONFIG        (the first file of a ':'-separated list);
 *   else in-cluster         when KUBERNETES_SERVICE_HOST and _PORT are set: the token, ca.crt and
 *                           namespace files of /var/run/secrets/kubernetes.io/serviceaccount
 *                           ($CTXGATE_SERVICEACCOUNT_DIR replaces that directory, for tests);
 *   else ~/.kube/config.
 * kubeconfig: current-context (or `context` when not NULL), its cluster (server,
 * certificate-authority-data / certificate-authority, insecure-skip-tls-verify) and user (token,
 * tokenFile, client-certificate-data / client-certificate, client-key-data / client-key), relative
 * file paths resolved against the kubeconfig's directory. Returns 0, or -1 with a sentence in err
 * naming the file and field at fault. */
int kube_config_load(const char *path, const char *context, kube_config *out, char *err,
                     size_t errlen);
/* The same from a kubeconfig's text (YAML or JSON); dir resolves relative paths. For tests. */
int kube_config_parse(const char *text, const char *dir, const char *context, kube_config *out,
                      char *err, size_t errlen);
void kube_config_free(kube_config *c);

/* ---- resources and paths (path.c) ---- */

typedef struct kube_gvr {
    const char *group;    /* "" for the core group */
    const char *version;  /* "v1", "v1alpha1" */
    const char *resource; /* plural: "llmgateways" */
    const char *kind;     /* "LLMGateway" */
    bool namespaced;
} kube_gvr;

extern const kube_gvr KUBE_LLMGATEWAYS, KUBE_MCPS, KUBE_SECRETS, KUBE_SERVICEACCOUNTS,
    KUBE_SERVICES, KUBE_PVCS, KUBE_PODS, KUBE_ENDPOINTS, KUBE_DEPLOYMENTS, KUBE_STATEFULSETS,
    KUBE_ROLES, KUBE_ROLEBINDINGS, KUBE_HPAS, KUBE_PDBS, KUBE_EVENTS, KUBE_LEASES, KUBE_CRDS;

/* "/api/v1/namespaces/NS/secrets/NAME" or "/apis/GROUP/VERSION/..."; ns NULL = all namespaces
 * (or a cluster-scoped resource), name NULL = the collection, sub "status" or NULL. Every piece
 * is percent-encoded. Caller frees. */
char *kube_path(const kube_gvr *r, const char *ns, const char *name, const char *sub);
/* "apiVersion" of r: "v1", "apps/v1", "ctxgate.io/v1alpha1". Static storage per gvr. */
const char *kube_api_version(const kube_gvr *r);
/* s percent-encoded for a path piece or a query value (RFC 3986 unreserved kept). Caller frees. */
char *kube_escape(const char *s);

/* ---- requests (client.c) ---- */

typedef struct kube_client kube_client;
typedef struct kube_call kube_call;

typedef struct kube_resp {
    int status;         /* HTTP status; 0 when no answer arrived (then error is set) */
    json_t *body;       /* parsed JSON body, or NULL (borrowed) */
    const char *error;  /* transport failure, or the Status object's message on >= 400; or NULL */
    const char *reason; /* Status.reason on >= 400 ("NotFound", "AlreadyExists", "Conflict",
                         * "Invalid", "Expired", "Gone"), else NULL */
} kube_resp;

typedef void (*kube_cb)(const kube_resp *r, void *udata);

/* Copies cfg. The client re-reads cfg->token_file every 60 s. */
kube_client *kube_client_new(uv_loop_t *loop, const kube_config *cfg);
/* Cancels every call, informer, leader elector and timer of c (no callbacks after this), frees. */
void kube_client_free(kube_client *c);
const kube_config *kube_client_config(const kube_client *c);

/* One request. path may carry a query ("?fieldManager=ctxgate"). body is serialised at once
 * (NULL = none); content_type NULL = "application/json" when there is a body. Timeout 30 s.
 * Exactly one cb call unless cancelled first. NULL only when out of memory. */
kube_call *kube_request(kube_client *c, const char *method, const char *path,
                        const char *content_type, const json_t *body, kube_cb cb, void *udata);
/* No callback of call runs after this returns. A call is invalid once its cb has returned (do
 * not cancel it then); cancelling it from inside its own cb is a no-op. */
void kube_call_cancel(kube_call *call);

/* Conveniences over kube_request (path built with kube_path):
 *   get            GET one object
 *   create         POST obj to the collection of obj's metadata.namespace
 *   replace        PUT obj (metadata.resourceVersion guards it: 409 Conflict when stale)
 *   merge_patch    PATCH application/merge-patch+json; sub "status" patches the subresource
 *   remove         DELETE (propagationPolicy Background) */
kube_call *kube_get(kube_client *c, const kube_gvr *r, const char *ns, const char *name, kube_cb cb,
                    void *udata);
kube_call *kube_create(kube_client *c, const kube_gvr *r, const json_t *obj, kube_cb cb,
                       void *udata);
kube_call *kube_replace(kube_client *c, const kube_gvr *r, const json_t *obj, kube_cb cb,
                        void *udata);
kube_call *kube_merge_patch(kube_client *c, const kube_gvr *r, const char *ns, const char *name,
                            const char *sub, const json_t *patch, kube_cb cb, void *udata);
kube_call *kube_remove(kube_client *c, const kube_gvr *r, const char *ns, const char *name,
                       kube_cb cb, void *udata);

/* ---- informers: list + watch + cache (informer.c) ---- */

typedef enum { KUBE_ADDED, KUBE_MODIFIED, KUBE_DELETED } kube_event_type;
typedef struct kube_informer kube_informer;

typedef struct kube_informer_opts {
    const kube_gvr *gvr;
    const char *ns;             /* NULL = all namespaces */
    const char *label_selector; /* NULL = none */
    const char *field_selector; /* NULL = none; "metadata.name=NAME" watches one object */
    unsigned page_limit;        /* list page size (limit/continue); 0 = 500 */
    /* A change of the cache: obj is the new object (the last known one for DELETED). */
    void (*on_event)(kube_informer *inf, kube_event_type type, json_t *obj, void *udata);
    /* After every complete (re)list has been applied to the cache; on_event calls for the
     * differences between the old cache and the list come before it. */
    void (*on_synced)(kube_informer *inf, void *udata);
    void *udata;
} kube_informer_opts;

/* Lists (paged with limit/continue) then watches from the list's resourceVersion with
 * allowWatchBookmarks; a watch that ends is resumed from the last resourceVersion seen (bookmarks
 * included); 410 Gone or a watch ERROR event re-lists; failures reconnect with jittered
 * exponential backoff (0.5 s doubling to 30 s). Strings in opts are copied. */
kube_informer *kube_informer_start(kube_client *c, const kube_informer_opts *opts);
void kube_informer_stop(kube_informer *inf);         /* no callback after this returns */
bool kube_informer_synced(const kube_informer *inf); /* a first list has completed */
/* The cached object or NULL (borrowed; valid until the next event of inf). ns NULL for
 * cluster-scoped resources. */
json_t *kube_informer_get(const kube_informer *inf, const char *ns, const char *name);
/* The whole cache: an object "ns/name" -> object (borrowed, do not modify). */
const json_t *kube_informer_cache(const kube_informer *inf);
/* Counters for metrics and tests: lists done (initial + re-lists), watch connections opened. */
unsigned long kube_informer_lists(const kube_informer *inf);
unsigned long kube_informer_watches(const kube_informer *inf);

/* ---- Events, events.k8s.io/v1 (events.c) ---- */

/* Records an Event about obj (its kind, name, namespace, uid, apiVersion, resourceVersion go in
 * `regarding`). type "Normal" or "Warning"; reason CamelCase; note one sentence (cut at 1 KiB).
 * A repeat of the same (object, type, reason, note) within 10 minutes patches the earlier Event's
 * series {count, lastObservedTime} instead of creating a new one. Fire and forget: failures are
 * logged at debug level. */
void kube_event_record(kube_client *c, const json_t *obj, const char *type, const char *reason,
                       const char *action, const char *note);
/* reportingController / reportingInstance of the Events this client records
 * (default "ctxgate.io/controller" and the host name). */
void kube_event_set_reporter(kube_client *c, const char *controller, const char *instance);

/* ---- Lease leader election, coordination.k8s.io/v1 (leader.c) ---- */

typedef struct kube_leader kube_leader;
typedef struct kube_leader_opts {
    const char *ns, *name; /* the Lease */
    const char *identity;  /* holderIdentity; unique per process (host name + pid) */
    unsigned lease_s;      /* leaseDurationSeconds; 0 = 15 */
    unsigned renew_s; /* renew deadline: give up leadership when not renewed for this; 0 = 10 */
    unsigned retry_s; /* period of acquire / renew attempts; 0 = 2 */
    void (*on_started)(void *udata); /* became leader */
    void (*on_stopped)(void *udata); /* lost leadership (renew deadline passed, or stolen) */
    void *udata;
} kube_leader_opts;

/* Acquires the Lease when it is free, expired (renewTime + leaseDurationSeconds in the past by
 * our clock since we last saw it change) or ours; every update is a PUT guarded by
 * resourceVersion (409 = someone else won). Creates the Lease when absent. */
kube_leader *kube_leader_start(kube_client *c, const kube_leader_opts *o);
bool kube_leader_is_leader(const kube_leader *l);
/* Stops; when leader, releases the Lease (holderIdentity cleared, so another replica takes over
 * at once) with a best-effort request. No callback after this returns. */
void kube_leader_stop(kube_leader *l);

/* ---- time and backoff (time.c) ---- */

/* RFC 3339 UTC with seconds ("2026-12-03T14:50:04Z"), or with microseconds (MicroTime). */
void kube_time_now(char out[32], bool micro);
/* Next delay of a jittered exponential backoff: min(cap, base * 2^attempt) * [0.5, 1.0). */
unsigned kube_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms);

#endif
