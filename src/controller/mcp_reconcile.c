/* mcp_reconcile.c — one reconcile of a ModelContextProtocol.
 *
 * Validation as `ctxgate validate` (the MCP and the Secrets it references); storage.provision
 * is only for type Redis. With provision: the finalizer ctxgate.io/cleanup is added first (a
 * merge patch of metadata.finalizers), then the StatefulSet NAME-redis and its headless Service
 * are applied. On deletion (deletionTimestamp set, our finalizer present): the StatefulSet, the
 * Service and the PVC data-NAME-redis-0 are deleted, then the finalizer is removed with a PUT of
 * the object without it (guarded by resourceVersion: a merge patch cannot remove one element).
 * Then the store is checked (store_check.c) and the status written.
 *
 * Conditions:
 *   Ready          True Reconciled / False InvalidSpec / False ReconcileError (as LLMGateway)
 *   StoreReachable True Reachable / False Unreachable /
 *                  Unknown NotCheckedFromController (File: the pods' volume)
 *   Degraded       True StoreUnreachable when the check failed, else False StoreReachable
 * currentActiveSessions: read from the metrics page of every LLMGateway of the namespace that
 * references this MCP (ctxgate_context_active_conversations{mcp="NAME"}, through
 * --gateway-admin-url): a shared store (Redis, PostgreSQL, File) counts every conversation, so
 * the largest answer is taken; Memory stores are per pod, so the answers are summed (one pod per
 * gateway answers through its Service: with several replicas it is a lower bound). Omitted when
 * no gateway answered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/refs.h"
#include "controller/conditions.h"
#include "controller/controller.h"
#include "controller/owned.h"
#include "core/log.h"
#include "upstream/client.h"

#define FINALIZER "ctxgate.io/cleanup"

typedef struct mcp_state {
    cfg_snapshot *snap;
    const cfg_mcp *m;
    bool provision;
    bool check_ok, check_unknown;
    char check_msg[512];
    long long sessions; /* -1 = no gateway answered */
} mcp_state;

typedef struct scrape {
    rc *r;
    buf body;
} scrape;

static void mcp_state_free(void *p)
{
    mcp_state *s = p;
    if (!s) return;
    cfg_snapshot_unref(s->snap);
    free(s);
}

static const json_t *meta(const json_t *o)
{
    return json_object_get(o, "metadata");
}

static bool has_finalizer(const json_t *o)
{
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(meta(o), "finalizers"), i, f)
    {
        if (json_is_string(f) && strcmp(json_string_value(f), FINALIZER) == 0) return true;
    }
    return false;
}

/* ---- deletion ---- */

static void unfinalized(rc *r, const kube_resp *resp, json_t *arg)
{
    if (resp->status == 409) {
        r->requeue = true;
        return;
    }
    if ((resp->status >= 200 && resp->status < 300) || resp->status == 404) {
        log_info("ModelContextProtocol %s/%s: store removed, finalizer released", r->ns, r->name);
        return;
    }
    rc_fail(r, "removing the finalizer: %s", resp->error ? resp->error : "no answer");
}

static void remove_finalizer(rc *r)
{
    if (r->failed) { /* a delete failed: keep the finalizer, retry */
        rc_finish(r);
        return;
    }
    json_t *o = json_deep_copy(r->obj);
    json_object_del(o, "status");
    json_t *m = json_object_get(o, "metadata");
    json_object_del(m, "managedFields");
    json_t *keep = json_array();
    size_t i;
    json_t *f;
    json_array_foreach(json_object_get(m, "finalizers"), i, f)
    {
        if (!json_is_string(f) || strcmp(json_string_value(f), FINALIZER) != 0)
            json_array_append(keep, f);
    }
    json_object_set_new(m, "finalizers", keep);
    r->next = NULL;
    rc_op *op = rc_op_new(r, unfinalized, NULL);
    if (!kube_replace(r->c->kc, &KUBE_MCPS, o, rc_op_cb, op)) rc_op_failed(op);
    json_decref(o);
}

static void cleanup(rc *r)
{
    char n[300], pvc[320];
    snprintf(n, sizeof n, "%s-redis", r->name);
    snprintf(pvc, sizeof pvc, "data-%s-redis-0", r->name);
    r->next = remove_finalizer;
    rc_begin(r);
    rc_delete(r, INF_COUNT, &KUBE_STATEFULSETS, n);
    rc_delete(r, INF_COUNT, &KUBE_SERVICES, n);
    rc_delete(r, INF_COUNT, &KUBE_PVCS, pvc);
    rc_end(r);
}

/* ---- status ---- */

static void redact(const char *url, char *out, size_t n)
{
    const char *p = strstr(url, "://");
    const char *at = p ? strchr(p + 3, '@') : NULL;
    const char *slash = p ? strchr(p + 3, '/') : NULL;
    if (at && (!slash || at < slash)) {
        const char *colon = memchr(p + 3, ':', (size_t)(at - p - 3));
        if (colon) {
            snprintf(out, n, "%.*s%s", (int)(colon - url), url, at);
            return;
        }
    }
    /* key=value DSN: drop password=... */
    const char *pw = strstr(url, "password=");
    if (!p && pw) {
        const char *end = pw + strcspn(pw, " ");
        snprintf(out, n, "%.*s%s", (int)(pw - url), url, *end ? end + 1 : "");
        size_t l = strlen(out);
        while (l && out[l - 1] == ' ')
            out[--l] = 0;
        return;
    }
    snprintf(out, n, "%s", url);
}

static void write_status(rc *r)
{
    mcp_state *s = r->kind_state;
    char now[32];
    kube_time_now(now, false);
    json_int_t gen = rc_generation(r);
    json_t *st = rc_status_base(r);
    json_t *conds = json_object_get(st, "conditions");
    json_object_set_new(st, "observedGeneration", json_integer(gen));
    json_object_set_new(st, "lastReconciledTime", json_string(now));
    char ep[1024] = "memory";
    const cfg_mcp *m = s->m;
    if (s->provision)
        snprintf(ep, sizeof ep, "redis://%s-redis.%s.svc:6379/0", r->name, r->ns);
    else if (m->store == STORE_REDIS && m->url)
        redact(m->url, ep, sizeof ep);
    else if (m->store == STORE_POSTGRESQL && m->dsn)
        redact(m->dsn, ep, sizeof ep);
    else if (m->store == STORE_FILE && m->path)
        snprintf(ep, sizeof ep, "%s", m->path);
    json_object_set_new(st, "connectionEndpoint", json_string(ep));
    json_object_set_new(st, "storageProvisioned", json_boolean(s->provision && !r->failed));
    if (s->sessions >= 0)
        json_object_set_new(st, "currentActiveSessions", json_integer(s->sessions));
    else
        json_object_del(st, "currentActiveSessions");
    if (r->failed) {
        cond_set(conds, "Ready", "False", "ReconcileError", r->err, gen, now);
        kube_event_record(r->c->kc, r->obj, "Warning", "ReconcileError", "Reconcile", r->err);
    } else {
        cond_set(conds, "Ready", "True", "Reconciled",
                 s->provision ? "the spec is valid and the Redis StatefulSet is applied"
                              : "the spec is valid",
                 gen, now);
    }
    if (s->check_unknown) {
        cond_set(conds, "StoreReachable", "Unknown", "NotCheckedFromController", s->check_msg, gen,
                 now);
        cond_set(conds, "Degraded", "False", "StoreNotChecked", s->check_msg, gen, now);
    } else if (s->check_ok) {
        cond_set(conds, "StoreReachable", "True", "Reachable", s->check_msg, gen, now);
        cond_set(conds, "Degraded", "False", "StoreReachable", s->check_msg, gen, now);
    } else {
        cond_set(conds, "StoreReachable", "False", "Unreachable", s->check_msg, gen, now);
        cond_set(conds, "Degraded", "True", "StoreUnreachable", s->check_msg, gen, now);
    }
    r->next = NULL;
    rc_begin(r);
    rc_patch_status(r, &KUBE_MCPS, st);
    rc_end(r);
}

/* the value of ctxgate_context_active_conversations{mcp="NAME",...} in a metrics page, or -1 */
static long long active_in(const char *text, const char *mcp)
{
    char want[300];
    snprintf(want, sizeof want, "mcp=\"%s\"", mcp);
    const char *p = text;
    while ((p = strstr(p, "ctxgate_context_active_conversations{")) != NULL) {
        const char *eol = strchr(p, '\n');
        const char *close = strchr(p, '}');
        const char *hit = strstr(p, want);
        if (close && hit && hit < close && (!eol || close < eol))
            return strtoll(close + 1, NULL, 10);
        p = eol ? eol : p + strlen(p);
    }
    return -1;
}

static bool on_scrape_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    scrape *sc = udata;
    if (sc->body.len + len < (4u << 20)) buf_append(&sc->body, data, len);
    return true;
}

static void on_scrape_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                           void *udata)
{
    scrape *sc = udata;
    rc *r = sc->r;
    mcp_state *s = r->kind_state;
    long long n = res == UPSTREAM_OK && status == 200 && sc->body.data
                      ? active_in(sc->body.data, r->name)
                      : -1;
    if (n >= 0) {
        bool shared = s->m->store != STORE_MEMORY;
        if (s->sessions < 0)
            s->sessions = n;
        else if (shared)
            s->sessions = n > s->sessions ? n : s->sessions;
        else
            s->sessions += n;
    }
    buf_free(&sc->body);
    free(sc);
    rc_end(r);
}

static void read_sessions(rc *r)
{
    controller *c = r->c;
    r->next = write_status;
    rc_begin(r);
    const char *key;
    json_t *gw;
    json_object_foreach((json_t *)kube_informer_cache(c->inf[INF_GATEWAYS]), key, gw)
    {
        const json_t *m = json_object_get(gw, "metadata");
        const char *ns = json_string_value(json_object_get(m, "namespace"));
        const char *name = json_string_value(json_object_get(m, "name"));
        if (!ns || !name || strcmp(ns, r->ns) != 0) continue;
        json_t *x = json_deep_copy(gw);
        json_object_set_new(x, "kind", json_string("LLMGateway"));
        json_object_set_new(x, "apiVersion", json_string("ctxgate.io/v1alpha1"));
        cfg_refs refs = {0};
        cfg_refs_collect(x, &refs);
        bool uses = cfg_refs_find(&refs, CFG_REF_MCP, r->name) != NULL;
        cfg_refs_free(&refs);
        const json_t *spec = json_object_get(x, "spec");
        json_int_t port =
            json_integer_value(json_object_get(json_object_get(spec, "admin"), "port"));
        if (!port)
            port = json_integer_value(json_object_get(json_object_get(spec, "listener"), "port"));
        if (!port) port = 8080;
        const char *path = json_string_value(
            json_object_get(json_object_get(spec, "observability"), "metricsEndpoint"));
        char *url = uses ? gw_admin_url(c, name, ns, (int)port, path ? path : "/metrics") : NULL;
        json_decref(x);
        if (!url) continue;
        scrape *sc = calloc(1, sizeof *sc);
        if (!sc) abort();
        sc->r = r;
        upstream_opts o = {.method = "GET",
                           .url = url,
                           .connect_timeout_ms = 2000,
                           .total_timeout_ms = 5000,
                           .insecure_skip_verify = true,
                           .udata = sc,
                           .on_data = on_scrape_data,
                           .on_done = on_scrape_done};
        rc_begin(r);
        if (!upstream_send(c->up, &o)) {
            free(sc);
            rc_end(r);
        }
        free(url);
    }
    rc_end(r);
}

static void on_checked(bool ok, bool unknown, const char *message, void *udata)
{
    rc *r = udata;
    mcp_state *s = r->kind_state;
    s->check_ok = ok;
    s->check_unknown = unknown;
    snprintf(s->check_msg, sizeof s->check_msg, "%s", message ? message : "");
    rc_end(r);
}

static void check_store(rc *r)
{
    mcp_state *s = r->kind_state;
    r->next = read_sessions;
    rc_begin(r);
    store_check(r->c->loop, json_object_get(s->m->spec, "storage"), s->m->password, on_checked, r);
}

static void apply_store(rc *r)
{
    mcp_state *s = r->kind_state;
    r->next = check_store;
    rc_begin(r);
    if (s->provision && !r->failed) {
        owned_store os = {
            .name = r->name,
            .ns = r->ns,
            .uid = json_string_value(json_object_get(meta(r->obj), "uid")),
            .image = r->c->o.redis_image,
            .password_ref = json_object_get(
                json_object_get(json_object_get(s->m->spec, "storage"), "config"), "passwordRef")};
        owned_list l;
        owned_store_objects(&os, &l);
        for (size_t i = 0; i < l.n; i++)
            rc_apply(r, strcmp(l.v[i].kind, "StatefulSet") == 0 ? INF_STATEFULSETS : INF_SERVICES,
                     strcmp(l.v[i].kind, "StatefulSet") == 0 ? &KUBE_STATEFULSETS : &KUBE_SERVICES,
                     json_incref(l.v[i].obj));
        owned_list_free(&l);
    }
    rc_end(r);
}

static void finalized(rc *r, const kube_resp *resp, json_t *arg)
{
    if (resp->status >= 200 && resp->status < 300) {
        /* the patched object carries the new resourceVersion */
        if (json_is_object(resp->body)) {
            json_object_set(r->obj, "metadata", json_object_get(resp->body, "metadata"));
        }
        return;
    }
    rc_fail(r, "adding the finalizer %s: %s", FINALIZER, resp->error ? resp->error : "no answer");
}

static void write_invalid(rc *r, const char *msg)
{
    json_t *st = rc_status_base(r);
    json_t *conds = json_object_get(st, "conditions");
    char now[32];
    kube_time_now(now, false);
    json_int_t gen = rc_generation(r);
    rc_set_invalid(r, conds, msg, gen, now);
    json_object_set_new(st, "observedGeneration", json_integer(gen));
    json_object_set_new(st, "lastReconciledTime", json_string(now));
    log_info("ModelContextProtocol %s/%s: invalid spec: %s", r->ns, r->name, msg);
    r->next = NULL;
    rc_begin(r);
    rc_patch_status(r, &KUBE_MCPS, st);
    rc_end(r);
}

void mcp_reconcile(rc *r)
{
    controller *c = r->c;
    if (json_object_get(meta(r->obj), "deletionTimestamp")) {
        if (has_finalizer(r->obj))
            cleanup(r);
        else
            rc_finish(r);
        return;
    }
    /* the MCP and its Secrets */
    json_t *objs[64];
    size_t n = 0;
    objs[n++] = json_incref(r->obj);
    cfg_refs refs = {0};
    cfg_refs_collect(r->obj, &refs);
    for (size_t i = 0; i < refs.n && n < 64; i++) {
        if (refs.v[i].kind != CFG_REF_SECRET) continue;
        bool dup = false;
        for (size_t k = 0; k < i; k++)
            if (refs.v[k].kind == CFG_REF_SECRET && strcmp(refs.v[k].name, refs.v[i].name) == 0)
                dup = true;
        const json_t *sec = dup ? NULL : ctl_cached(c, INF_SECRETS, r->ns, refs.v[i].name);
        if (!sec) continue;
        json_t *x = json_deep_copy(sec);
        if (!json_object_get(x, "kind")) json_object_set_new(x, "kind", json_string("Secret"));
        if (!json_object_get(x, "apiVersion"))
            json_object_set_new(x, "apiVersion", json_string("v1"));
        objs[n++] = x;
    }
    cfg_refs_free(&refs);
    cfg_snapshot *snap = NULL;
    cfg_diags d = {0};
    int rcode = cfg_load_objects(objs, NULL, n, &snap, &d);
    for (size_t i = 0; i < n; i++)
        json_decref(objs[i]);
    const cfg_mcp *m = rcode == 0 ? cfg_find_mcp(snap, r->name) : NULL;
    if (!m) {
        char msg[1200];
        rc_first_error(&d, "the object is not in the loaded configuration", msg, sizeof msg);
        cfg_diags_free(&d);
        cfg_snapshot_unref(snap);
        write_invalid(r, msg);
        return;
    }
    cfg_diags_free(&d);
    mcp_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->snap = snap;
    s->m = m;
    s->sessions = -1;
    r->kind_state = s;
    r->kind_free = mcp_state_free;
    const json_t *storage = json_object_get(json_object_get(r->obj, "spec"), "storage");
    s->provision = json_is_true(json_object_get(storage, "provision"));
    if (s->provision && m->store != STORE_REDIS) {
        write_invalid(r, "spec.storage.provision: only a store of type Redis can be provisioned");
        return;
    }
    if (s->provision && !has_finalizer(r->obj)) {
        json_t *fins = json_deep_copy(json_object_get(meta(r->obj), "finalizers"));
        if (!json_is_array(fins)) {
            json_decref(fins);
            fins = json_array();
        }
        json_array_append_new(fins, json_string(FINALIZER));
        json_t *patch = json_pack("{s:{s:o}}", "metadata", "finalizers", fins);
        r->next = apply_store;
        rc_op *op = rc_op_new(r, finalized, NULL);
        if (!kube_merge_patch(c->kc, &KUBE_MCPS, r->ns, r->name, NULL, patch, rc_op_cb, op))
            rc_op_failed(op);
        json_decref(patch);
        return;
    }
    apply_store(r);
}
