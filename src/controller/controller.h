/* controller.h — `ctxgate controller`: the state the loop, the informers and the reconcilers
 * share. One libuv loop runs everything: the Lease elector, the informers (started only while
 * this replica leads), the work queue, the reconciles (asynchronous chains of API calls), the
 * gateways' admin reads and the metrics / health HTTP server. */
#ifndef CTXGATE_CONTROLLER_CONTROLLER_H
#define CTXGATE_CONTROLLER_CONTROLLER_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "controller/metrics.h"
#include "controller/workqueue.h"
#include "kube/kube.h"

typedef struct ctl_opts {
    const char *kubeconfig;
    const char *namespace_; /* NULL = every namespace */
    const char *gateway_image;
    const char *redis_image;
    const char *metrics_address;
    int metrics_port;
    bool leader_elect;
    const char *lease_namespace; /* NULL = the kube_config namespace */
    const char *lease_name;
    const char *identity;
    const char *admin_url; /* template with {name} {namespace} {port} */
    unsigned resync_s;
    unsigned lease_s, renew_s, retry_s;
    unsigned workers; /* reconciles in flight at once */
} ctl_opts;

typedef enum {
    INF_GATEWAYS,
    INF_MCPS,
    INF_SECRETS,
    INF_SERVICEACCOUNTS,
    INF_ROLES,
    INF_ROLEBINDINGS,
    INF_DEPLOYMENTS,
    INF_SERVICES,
    INF_HPAS,
    INF_PDBS,
    INF_STATEFULSETS,
    INF_COUNT
} ctl_informer;

typedef struct controller {
    uv_loop_t *loop;
    ctl_opts o;
    kube_config cfg;
    kube_client *kc;
    struct upstream_client *up;
    workqueue *q;
    kube_informer *inf[INF_COUNT];
    kube_leader *leader;
    bool leading;
    unsigned epoch;   /* bumped when leadership ends: reconciles of an older epoch write nothing */
    unsigned running; /* reconciles in flight */
    bool stopping;
    uv_timer_t tick;   /* drives the queue's delayed keys */
    uv_timer_t resync; /* re-enqueues every object */
    uv_idle_t kick;    /* runs queued keys on the next loop turn */
    bool kick_on;
    unsigned long lists_before, watches_before; /* counters of informers stopped earlier */
} controller;

/* A reconcile in flight: an asynchronous chain of calls. */
typedef struct rc rc;
typedef void (*rc_step)(rc *r);
struct rc {
    controller *c;
    char *key; /* as queued (owned) */
    cm_kind kind;
    char *ns, *name;
    unsigned epoch;
    uint64_t start_ns;
    json_t *obj;  /* our copy of the object being reconciled */
    int pending;  /* calls in flight of the current step */
    rc_step next; /* runs when pending drops to 0 */
    bool failed;  /* an error: retried with backoff */
    bool requeue; /* a conflict: retried soon, not an error */
    char err[512];
    void *kind_state; /* the reconciler's own */
    void (*kind_free)(void *);
};

/* controller.c */
bool rc_stale(const rc *r); /* leadership was lost since the reconcile started */
void rc_finish(rc *r);      /* reports the outcome to the queue and frees r */
void rc_fail(rc *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* One API call of a reconcile, counted in r->pending: pass rc_op_cb and the op as the kube_cb
 * and udata of the call. cb runs with r unless the reconcile went stale (leadership lost); arg
 * (may be NULL) is owned by the op and released after cb. When the last pending call ends,
 * r->next runs. */
typedef void (*rc_cb)(rc *r, const kube_resp *resp, json_t *arg);
typedef struct rc_op rc_op;
rc_op *rc_op_new(rc *r, rc_cb cb, json_t *arg);
void rc_op_cb(const kube_resp *resp, void *udata);
/* the call could not start (out of memory): ends op with a failure */
void rc_op_failed(rc_op *op);
void rc_begin(rc *r); /* counts one pending step that rc_end closes (non-kube async work) */
void rc_end(rc *r);
/* The object of kind in ns/name from an informer's cache (borrowed) or NULL. */
json_t *ctl_cached(controller *c, ctl_informer i, const char *ns, const char *name);
void ctl_enqueue(controller *c, const char *kind, const char *ns, const char *name);

/* create-or-update of one desired object (owned.h) against its informer's cache; records a
 * Normal Event Created / Updated on the owner; counted in r->pending. */
void rc_apply(rc *r, ctl_informer inf, const kube_gvr *gvr, json_t *desired);
/* delete ns/name of gvr when it is in the cache (404 ignored) */
void rc_delete(rc *r, ctl_informer inf, const kube_gvr *gvr, const char *name);
/* merge-patch /status with status when it differs from the cached object's (status_same) */
void rc_patch_status(rc *r, const kube_gvr *gvr, json_t *status);
/* r->obj's status as the base of the next one (a copy, with a conditions array always there) */
json_t *rc_status_base(const rc *r);
json_int_t rc_generation(const rc *r); /* r->obj's metadata.generation */
/* out = "path: message" of the first error in diags (+ " (and N more errors)"), or fallback
 * when there is none; diags is a cfg_diags (config/load.h) */
struct cfg_diags;
void rc_first_error(const struct cfg_diags *d, const char *fallback, char *out, size_t n);
/* Ready=False InvalidSpec with msg in conds; a Warning Event InvalidSpec only when the message
 * differs from the one the object's Ready condition already carries (a resync repeats nothing) */
void rc_set_invalid(rc *r, json_t *conds, const char *msg, json_int_t gen, const char *now);

/* gateway_reconcile.c / mcp_reconcile.c: start the reconcile of r (r->obj set) */
void gw_reconcile(rc *r);
void mcp_reconcile(rc *r);
/* The LLMGateway keys (ns/name) that reference MCP or Secret name in ns (for enqueueing). */
void gw_enqueue_referencing(controller *c, const char *ns, const char *kind, const char *name);

/* The gateway's admin base URL from --gateway-admin-url ({name} {namespace} {port}) + path.
 * Caller frees. */
char *gw_admin_url(const controller *c, const char *name, const char *ns, int port,
                   const char *path);

/* store_check.c: is spec.storage reachable (Redis PING, PostgreSQL TCP connect; File unknown,
 * Memory yes)? done(ok, unknown, message) exactly once, within 3 s. */
typedef void (*store_check_cb)(bool ok, bool unknown, const char *message, void *udata);
void store_check(uv_loop_t *loop, const json_t *storage, const char *password, store_check_cb done,
                 void *udata);

/* The controller's entry point (cmd_controller.c parses the flags). Returns the exit status. */
int ctl_run(const ctl_opts *o);

#endif
