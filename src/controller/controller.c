/* controller.c — the controller's loop: leader election, informers (run only while leading),
 * the work queue and its workers, the reconcile bookkeeping every reconciler uses (rc_*), the
 * metrics / health HTTP server, and signals.
 *
 * Leadership: the informers start when this replica first becomes leader, and it reconciles
 * only while it holds the Lease. When it loses the Lease (renew deadline passed, or another
 * holder) it empties the queue and bumps `epoch`, so a reconcile still in flight issues no
 * further write (a call already sent may complete: it was sent while we led), and re-enters the
 * election. The informers keep running (reads only; controller-runtime keeps its caches across
 * leadership the same way), so a replica that leads again starts from warm caches: it re-queues
 * every object at once. client-go's default is to exit the process instead; re-entering keeps
 * the metrics endpoint up and is as safe, because nothing writes without leading. SIGTERM /
 * SIGINT release the Lease (another replica takes over at once) and exit 0. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "controller/conditions.h"
#include "controller/controller.h"
#include "controller/owned.h"
#include "core/clock.h"
#include "core/log.h"
#include "http/server.h"
#include "upstream/client.h"

static uint64_t now_ms(void)
{
    return clock_mono_ns() / 1000000u;
}

static controller g_ctl; /* one per process; signals reach it */
static http_server *g_http;
static uv_signal_t g_sigterm, g_sigint;
static uv_timer_t g_reelect;

/* ---- reconcile bookkeeping ---- */

struct rc_op {
    rc *r;
    rc_cb cb;
    json_t *arg;
};

bool rc_stale(const rc *r)
{
    return r->epoch != r->c->epoch || !r->c->leading;
}

void rc_fail(rc *r, const char *fmt, ...)
{
    if (r->failed) return; /* the first error is the one reported */
    r->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
}

static void rc_step_done(rc *r)
{
    if (--r->pending > 0) return;
    rc_step next = r->next;
    r->next = NULL;
    if (next && !rc_stale(r))
        next(r);
    else
        rc_finish(r);
}

void rc_begin(rc *r)
{
    r->pending++;
}

void rc_end(rc *r)
{
    rc_step_done(r);
}

rc_op *rc_op_new(rc *r, rc_cb cb, json_t *arg)
{
    rc_op *op = calloc(1, sizeof *op);
    if (!op) abort();
    op->r = r;
    op->cb = cb;
    op->arg = arg;
    r->pending++;
    return op;
}

void rc_op_cb(const kube_resp *resp, void *udata)
{
    rc_op *op = udata;
    rc *r = op->r;
    if (!rc_stale(r) && op->cb) op->cb(r, resp, op->arg);
    json_decref(op->arg);
    free(op);
    rc_step_done(r);
}

void rc_op_failed(rc_op *op)
{
    kube_resp resp = {.status = 0, .error = "the request could not be started"};
    rc_op_cb(&resp, op);
}

static void ctl_kick(controller *c);

void rc_finish(rc *r)
{
    controller *c = r->c;
    double secs = (double)(clock_mono_ns() - r->start_ns) / 1e9;
    uint64_t now = now_ms();
    if (r->epoch == c->epoch && c->leading) {
        if (r->failed) {
            uint64_t d = wq_add_rate_limited(c->q, r->key, now);
            log_warn("reconcile %s failed (retry in %llu ms): %s", r->key, (unsigned long long)d,
                     r->err);
            cm_reconcile(r->kind, CM_ERROR, secs);
        } else if (r->requeue) { /* a conflict: soon again, counted like a failure */
            wq_add_rate_limited(c->q, r->key, now);
            cm_reconcile(r->kind, CM_REQUEUE, secs);
        } else {
            wq_forget(c->q, r->key);
            cm_reconcile(r->kind, CM_SUCCESS, secs);
        }
    }
    wq_done(c->q, r->key);
    if (r->kind_free) r->kind_free(r->kind_state);
    json_decref(r->obj);
    free(r->key);
    free(r->ns);
    free(r->name);
    free(r);
    c->running--;
    ctl_kick(c);
}

/* ---- caches and the queue ---- */

json_t *ctl_cached(controller *c, ctl_informer i, const char *ns, const char *name)
{
    return c->inf[i] ? kube_informer_get(c->inf[i], ns, name) : NULL;
}

void ctl_enqueue(controller *c, const char *kind, const char *ns, const char *name)
{
    if (!c->leading || !ns || !name) return;
    char key[768];
    snprintf(key, sizeof key, "%s/%s/%s", kind, ns, name);
    wq_add(c->q, key);
    ctl_kick(c);
}

static void start_one(controller *c, const char *key)
{
    char kind[64] = "", ns[256] = "", name[256] = "";
    const char *a = strchr(key, '/');
    const char *b = a ? strchr(a + 1, '/') : NULL;
    rc *r = calloc(1, sizeof *r);
    if (!r) abort();
    r->c = c;
    r->key = strdup(key);
    r->epoch = c->epoch;
    r->start_ns = clock_mono_ns();
    c->running++;
    if (!a || !b || (size_t)(a - key) >= sizeof kind) {
        r->kind = CM_GATEWAY;
        rc_fail(r, "malformed queue key %s", key);
        rc_finish(r);
        return;
    }
    snprintf(kind, sizeof kind, "%.*s", (int)(a - key), key);
    snprintf(ns, sizeof ns, "%.*s", (int)(b - a - 1), a + 1);
    snprintf(name, sizeof name, "%s", b + 1);
    r->ns = strdup(ns);
    r->name = strdup(name);
    bool gw = strcmp(kind, "LLMGateway") == 0;
    r->kind = gw ? CM_GATEWAY : CM_MCP;
    json_t *obj = ctl_cached(c, gw ? INF_GATEWAYS : INF_MCPS, ns, name);
    if (!obj) { /* deleted: the API server's garbage collector removes what it owned */
        rc_finish(r);
        return;
    }
    r->obj = json_deep_copy(obj);
    /* list items come without kind / apiVersion; Events and the loader need them */
    if (!json_object_get(r->obj, "kind")) json_object_set_new(r->obj, "kind", json_string(kind));
    if (!json_object_get(r->obj, "apiVersion"))
        json_object_set_new(r->obj, "apiVersion", json_string("ctxgate.io/v1alpha1"));
    if (gw)
        gw_reconcile(r);
    else
        mcp_reconcile(r);
}

static void run_queue(controller *c);

static void on_tick(uv_timer_t *t)
{
    run_queue(t->data);
}

static void run_queue(controller *c)
{
    if (!c->leading) return;
    wq_promote(c->q, now_ms());
    while (c->running < c->o.workers) {
        const char *key = wq_get(c->q);
        if (!key) break;
        start_one(c, key);
    }
    uint64_t due = wq_next_due(c->q, now_ms());
    uv_timer_stop(&c->tick);
    if (due != UINT64_MAX) uv_timer_start(&c->tick, on_tick, due ? due : 1, 0);
}

static void on_kick(uv_idle_t *h)
{
    controller *c = h->data;
    uv_idle_stop(h);
    c->kick_on = false;
    run_queue(c);
}

static void ctl_kick(controller *c)
{
    if (c->kick_on || c->stopping) return;
    c->kick_on = true;
    uv_idle_start(&c->kick, on_kick);
}

/* ---- informers ---- */

static const char *obj_str(const json_t *o, const char *a, const char *b)
{
    return json_string_value(json_object_get(json_object_get(o, a), b));
}

static void enqueue_owner(controller *c, const json_t *obj)
{
    const char *ns = obj_str(obj, "metadata", "namespace");
    size_t i;
    json_t *ref;
    json_array_foreach(json_object_get(json_object_get(obj, "metadata"), "ownerReferences"), i, ref)
    {
        if (!json_is_true(json_object_get(ref, "controller"))) continue;
        const char *kind = json_string_value(json_object_get(ref, "kind"));
        const char *name = json_string_value(json_object_get(ref, "name"));
        if (kind && (strcmp(kind, "LLMGateway") == 0 || strcmp(kind, "ModelContextProtocol") == 0))
            ctl_enqueue(c, kind, ns, name);
    }
}

static void on_event(kube_informer *inf, kube_event_type type, json_t *obj, void *udata)
{
    controller *c = &g_ctl;
    ctl_informer which = (ctl_informer)(intptr_t)udata;
    const char *ns = obj_str(obj, "metadata", "namespace");
    const char *name = obj_str(obj, "metadata", "name");
    switch (which) {
    case INF_GATEWAYS:
        ctl_enqueue(c, "LLMGateway", ns, name);
        break;
    case INF_MCPS:
        ctl_enqueue(c, "ModelContextProtocol", ns, name);
        gw_enqueue_referencing(c, ns, "ModelContextProtocol", name);
        break;
    case INF_SECRETS:
        gw_enqueue_referencing(c, ns, "Secret", name);
        break;
    default:
        enqueue_owner(c, obj);
        break;
    }
}

static void on_synced(kube_informer *inf, void *udata)
{
    log_debug("informer %d synced", (int)(intptr_t)udata);
}

static const kube_gvr *inf_gvr(ctl_informer i)
{
    switch (i) {
    case INF_GATEWAYS:
        return &KUBE_LLMGATEWAYS;
    case INF_MCPS:
        return &KUBE_MCPS;
    case INF_SECRETS:
        return &KUBE_SECRETS;
    case INF_SERVICEACCOUNTS:
        return &KUBE_SERVICEACCOUNTS;
    case INF_ROLES:
        return &KUBE_ROLES;
    case INF_ROLEBINDINGS:
        return &KUBE_ROLEBINDINGS;
    case INF_DEPLOYMENTS:
        return &KUBE_DEPLOYMENTS;
    case INF_SERVICES:
        return &KUBE_SERVICES;
    case INF_HPAS:
        return &KUBE_HPAS;
    case INF_PDBS:
        return &KUBE_PDBS;
    case INF_STATEFULSETS:
    case INF_COUNT:
        break;
    }
    return &KUBE_STATEFULSETS;
}

static void informers_start(controller *c)
{
    for (int i = 0; i < INF_COUNT; i++) {
        kube_informer_opts o = {
            .gvr = inf_gvr((ctl_informer)i),
            .ns = c->o.namespace_,
            .label_selector = i > INF_SECRETS ? OWNED_SELECTOR : NULL,
            .on_event = on_event,
            .on_synced = on_synced,
            .udata = (void *)(intptr_t)i,
        };
        c->inf[i] = kube_informer_start(c->kc, &o);
    }
}

static void informers_stop(controller *c)
{
    for (int i = 0; i < INF_COUNT; i++) {
        if (!c->inf[i]) continue;
        c->lists_before += kube_informer_lists(c->inf[i]);
        c->watches_before += kube_informer_watches(c->inf[i]);
        kube_informer_stop(c->inf[i]);
        c->inf[i] = NULL;
    }
}

static bool informers_synced(const controller *c)
{
    for (int i = 0; i < INF_COUNT; i++)
        if (!c->inf[i] || !kube_informer_synced(c->inf[i])) return false;
    return true;
}

/* every object again, for the status refresh (targets' health, Deployment availability) */
static void on_resync(uv_timer_t *t)
{
    controller *c = t->data;
    if (!c->leading) return;
    const int kinds[] = {INF_GATEWAYS, INF_MCPS};
    for (int k = 0; k < 2; k++) {
        const char *key;
        json_t *obj;
        json_object_foreach((json_t *)kube_informer_cache(c->inf[kinds[k]]), key, obj)
        {
            ctl_enqueue(c, k == 0 ? "LLMGateway" : "ModelContextProtocol",
                        obj_str(obj, "metadata", "namespace"), obj_str(obj, "metadata", "name"));
        }
    }
}

/* ---- leadership ---- */

static void leader_begin(controller *c)
{
    if (c->leading) return;
    log_info("controller %s: leading; starting the informers", c->o.identity);
    c->leading = true;
    if (!c->inf[0])
        informers_start(c);
    else
        on_resync(&c->resync); /* warm caches: every object again, now */
    if (c->o.resync_s)
        uv_timer_start(&c->resync, on_resync, (uint64_t)c->o.resync_s * 1000,
                       (uint64_t)c->o.resync_s * 1000);
}

static void leader_end(controller *c)
{
    if (!c->leading) return;
    c->leading = false;
    c->epoch++;
    uv_timer_stop(&c->resync);
    uv_timer_stop(&c->tick);
    wq_clear(c->q);
}

static void on_started(void *udata)
{
    leader_begin(udata);
}

static void leader_elect(controller *c);

static void on_reelect(uv_timer_t *t)
{
    controller *c = t->data;
    if (c->stopping) return;
    if (c->leader) kube_leader_stop(c->leader);
    c->leader = NULL;
    leader_elect(c);
}

static void on_stopped(void *udata)
{
    controller *c = udata;
    log_warn("controller %s: lost the leader Lease; reconciling stopped, re-entering the election",
             c->o.identity);
    leader_end(c);
    /* kube_leader_stop may not run inside the elector's own callback: on the next turn */
    uv_timer_start(&g_reelect, on_reelect, 0, 0);
}

static void leader_elect(controller *c)
{
    const char *ns = c->o.lease_namespace ? c->o.lease_namespace : c->cfg.namespace;
    kube_leader_opts lo = {
        .ns = ns,
        .name = c->o.lease_name,
        .identity = c->o.identity,
        .lease_s = c->o.lease_s,
        .renew_s = c->o.renew_s,
        .retry_s = c->o.retry_s,
        .on_started = on_started,
        .on_stopped = on_stopped,
        .udata = c,
    };
    c->leader = kube_leader_start(c->kc, &lo);
    if (!c->leader) {
        log_error("controller: cannot start the leader election");
        exit(1);
    }
}

/* ---- metrics and health ---- */

static void on_http(http_request *req, void *ctx)
{
    controller *c = ctx;
    static const http_header text = {STR_LIT("Content-Type"), STR_LIT("text/plain")};
    if (str_eq_c(req->path, "/healthz")) {
        http_respond(req, 200, &text, 1, "ok\n", 3);
        return;
    }
    if (str_eq_c(req->path, "/readyz")) {
        /* ready: leading with every informer synced, or standing by as a healthy follower */
        bool ok = c->leading ? informers_synced(c) : c->leader != NULL;
        const char *body = ok ? "ok\n" : "informers not synced\n";
        http_respond(req, ok ? 200 : 503, &text, 1, body, strlen(body));
        return;
    }
    if (str_eq_c(req->path, "/metrics")) {
        cm_figures f = {.queue_depth = wq_len(c->q) + wq_delayed(c->q),
                        .leader = c->leading ? 1 : 0,
                        .lists = c->lists_before,
                        .watches = c->watches_before};
        for (int i = 0; i < INF_COUNT; i++)
            if (c->inf[i]) {
                f.lists += kube_informer_lists(c->inf[i]);
                f.watches += kube_informer_watches(c->inf[i]);
            }
        buf out = BUF_INIT;
        cm_render(&out, &f);
        static const http_header prom = {STR_LIT("Content-Type"),
                                         STR_LIT("text/plain; version=0.0.4; charset=utf-8")};
        http_respond(req, 200, &prom, 1, out.data, out.len);
        buf_free(&out);
        return;
    }
    http_respond(req, 404, &text, 1, "not found\n", 10);
}

/* ---- shutdown ---- */

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void on_drained(void *ctx)
{
    (void)ctx;
    http_server_free(g_http);
    g_http = NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
    controller *c = s->data;
    if (c->stopping) return;
    c->stopping = true;
    log_info("controller: signal %d; releasing the Lease and exiting", signum);
    leader_end(c);
    informers_stop(c);
    if (c->leader) kube_leader_stop(c->leader); /* releases the Lease when we hold it */
    c->leader = NULL;
    kube_client_free(c->kc); /* the release is detached: it completes on the loop */
    c->kc = NULL;
    upstream_client_free(c->up);
    c->up = NULL;
    uv_close((uv_handle_t *)&g_sigterm, close_cb);
    uv_close((uv_handle_t *)&g_sigint, close_cb);
    uv_close((uv_handle_t *)&g_reelect, close_cb);
    uv_close((uv_handle_t *)&c->tick, close_cb);
    uv_close((uv_handle_t *)&c->resync, close_cb);
    uv_close((uv_handle_t *)&c->kick, close_cb);
    if (g_http) http_server_drain(g_http, on_drained, NULL);
}

int ctl_run(const ctl_opts *o)
{
    controller *c = &g_ctl;
    memset(c, 0, sizeof *c);
    c->loop = uv_default_loop();
    c->o = *o;
    if (!c->o.workers) c->o.workers = 4;
    char err[1024];
    if (kube_config_load(o->kubeconfig, NULL, &c->cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ctxgate controller: %s\n", err);
        return 1;
    }
    c->kc = kube_client_new(c->loop, &c->cfg);
    c->up = upstream_client_new(c->loop);
    if (!c->kc || !c->up) {
        fprintf(stderr, "ctxgate controller: out of memory\n");
        return 1;
    }
    kube_event_set_reporter(c->kc, "ctxgate.io/controller", c->o.identity);
    c->q = wq_new(5, 300000);
    uv_timer_init(c->loop, &c->tick);
    uv_timer_init(c->loop, &c->resync);
    uv_timer_init(c->loop, &g_reelect);
    uv_idle_init(c->loop, &c->kick);
    c->tick.data = c->resync.data = g_reelect.data = c->kick.data = c;
    uv_signal_init(c->loop, &g_sigterm);
    uv_signal_init(c->loop, &g_sigint);
    g_sigterm.data = g_sigint.data = c;
    uv_signal_start(&g_sigterm, on_signal, SIGTERM);
    uv_signal_start(&g_sigint, on_signal, SIGINT);

    http_server_opts ho = {.host = o->metrics_address,
                           .port = o->metrics_port,
                           .exclusive = true,
                           .handler = on_http,
                           .handler_ctx = c};
    if (http_server_start(c->loop, &ho, &g_http, err, sizeof err) != 0) {
        fprintf(stderr, "ctxgate controller: --metrics-address/--metrics-port: %s\n", err);
        return 1;
    }
    log_info("controller %s: kube config from %s (server %s); metrics on %s:%d; watching %s",
             c->o.identity, c->cfg.source ? c->cfg.source : "?", c->cfg.server, o->metrics_address,
             http_server_port(g_http), o->namespace_ ? o->namespace_ : "every namespace");
    if (o->leader_elect)
        leader_elect(c);
    else
        leader_begin(c);
    uv_run(c->loop, UV_RUN_DEFAULT);
    wq_free(c->q);
    kube_config_free(&c->cfg);
    return 0;
}
