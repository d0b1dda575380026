/* gateway_reconcile.c — one reconcile of an LLMGateway.
 *
 * 1. Validate exactly like `ctxgate validate`: the gateway, the ModelContextProtocols it
 *    references and the Secrets it and they reference (from the informer caches; one that does
 *    not exist is simply absent, so the loader reports it) go through cfg_load_objects.
 * 2. Invalid: no owned object is touched; status Ready=False InvalidSpec with the first error
 *    "path: message" (and how many others), a Warning Event InvalidSpec with the same text (only
 *    when that text changed, so a resync does not repeat it).
 * 3. Valid: create-or-update ServiceAccount, Role, RoleBinding, Deployment, Service (+ HPA and
 *    PDB with spec.deployment.autoscaling; removed when it goes), then GET the gateway's
 *    /admin/targets, then write the status.
 *
 * Conditions (metav1.Condition; lastTransitionTime moves only when status changes):
 *   Ready     True  Reconciled         spec valid and every owned object applied
 *             False InvalidSpec        the validation error
 *             False ReconcileError     an API write failed (retried with backoff)
 *   Available True  MinimumReplicasAvailable  Deployment status.availableReplicas >= 1
 *             False DeploymentUnavailable     none available (yet)
 *             Unknown NotReconciled           never reconciled with a valid spec
 *   Degraded  True  TargetsUnhealthy   a target is Unhealthy in /admin/targets
 *             False TargetsHealthy     every target Healthy (or Degraded: still served)
 *             Unknown AdminUnreachable /admin/targets could not be read (no pod yet, ...)
 * An invalid spec leaves Available and Degraded as they were. */
#include <openssl/evp.h>
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

typedef struct gw_state {
    cfg_snapshot *snap;
    const cfg_gateway *g;
    char *admin_key;
    json_t *targets; /* /admin/targets answer's array, or NULL */
    char admin_err[256];
    buf body;
    upstream_req *req;
} gw_state;

static void gw_state_free(void *p)
{
    gw_state *s = p;
    if (!s) return;
    if (s->req) upstream_cancel(s->req);
    cfg_snapshot_unref(s->snap);
    free(s->admin_key);
    json_decref(s->targets);
    buf_free(&s->body);
    free(s);
}

static const char *meta_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(json_object_get(o, "metadata"), k));
}

/* the gateway, the MCPs it references and the Secrets of both, as found in the caches */
typedef struct objset {
    json_t *v[256];
    const char *kind[256];
    size_t n;
} objset;

static bool has_name(const objset *s, const char *kind, const char *name)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->kind[i], kind) == 0 && strcmp(meta_str(s->v[i], "name"), name) == 0)
            return true;
    return false;
}

static json_t *with_kind(const json_t *o, const char *api_version, const char *kind);

static void add_refs(controller *c, const char *ns, const json_t *obj, const char *kind, objset *s,
                     int depth)
{
    cfg_refs refs = {0};
    json_t *x = with_kind(obj, "ctxgate.io/v1alpha1", kind);
    cfg_refs_collect(x, &refs);
    json_decref(x);
    for (size_t i = 0; i < refs.n && s->n < 256; i++) {
        bool secret = refs.v[i].kind == CFG_REF_SECRET;
        const char *k = secret ? "Secret" : "ModelContextProtocol";
        if (has_name(s, k, refs.v[i].name)) continue;
        json_t *o = ctl_cached(c, secret ? INF_SECRETS : INF_MCPS, ns, refs.v[i].name);
        if (!o) continue;
        s->v[s->n] = o;
        s->kind[s->n++] = k;
        if (!secret && depth == 0) add_refs(c, ns, o, k, s, 1);
    }
    cfg_refs_free(&refs);
}

/* The Secret objects in s carry kind "Secret" only when the list's items do; informers' items
 * have no kind (lists drop it), so add it. */
static json_t *with_kind(const json_t *o, const char *api_version, const char *kind)
{
    json_t *x = json_deep_copy(o);
    if (!json_object_get(x, "kind")) json_object_set_new(x, "kind", json_string(kind));
    if (!json_object_get(x, "apiVersion"))
        json_object_set_new(x, "apiVersion", json_string(api_version));
    return x;
}

static void now_str(char t[32])
{
    kube_time_now(t, false);
}

static void write_invalid(rc *r, const cfg_diags *d)
{
    char msg[1200];
    rc_first_error(d, "invalid", msg, sizeof msg);
    json_t *st = rc_status_base(r);
    json_t *conds = json_object_get(st, "conditions");
    char now[32];
    now_str(now);
    json_int_t gen = rc_generation(r);
    rc_set_invalid(r, conds, msg, gen, now);
    if (!cond_get(conds, "Available"))
        cond_set(conds, "Available", "Unknown", "NotReconciled",
                 "the spec has never been valid: no Deployment yet", gen, now);
    json_object_set_new(st, "observedGeneration", json_integer(gen));
    json_object_set_new(st, "lastUpdated", json_string(now));
    log_info("LLMGateway %s/%s: invalid spec: %s", r->ns, r->name, msg);
    rc_patch_status(r, &KUBE_LLMGATEWAYS, st);
}

/* ---- /admin/targets ---- */

static char *secret_value(controller *c, const char *ns, const json_t *ref)
{
    const char *name = json_string_value(json_object_get(ref, "name"));
    const char *key = json_string_value(json_object_get(ref, "key"));
    if (!name || !key) return NULL;
    const json_t *sec = ctl_cached(c, INF_SECRETS, ns, name);
    const char *b64 = json_string_value(json_object_get(json_object_get(sec, "data"), key));
    if (!b64) return NULL;
    size_t n = strlen(b64);
    unsigned char *out = malloc(n + 4);
    if (!out) return NULL;
    int len = EVP_DecodeBlock(out, (const unsigned char *)b64, (int)n);
    if (len < 0) {
        free(out);
        return NULL;
    }
    while (n > 0 && b64[n - 1] == '=' && len > 0) {
        len--;
        n--;
    }
    out[len] = 0;
    return (char *)out;
}

char *gw_admin_url(const controller *c, const char *name, const char *ns, int port,
                   const char *path)
{
    buf b = BUF_INIT;
    const char *t = c->o.admin_url;
    while (*t) {
        if (strncmp(t, "{name}", 6) == 0) {
            buf_puts(&b, name);
            t += 6;
        } else if (strncmp(t, "{namespace}", 11) == 0) {
            buf_puts(&b, ns);
            t += 11;
        } else if (strncmp(t, "{port}", 6) == 0) {
            buf_printf(&b, "%d", port);
            t += 6;
        } else {
            buf_append(&b, t, 1);
            t++;
        }
    }
    while (b.len && b.data[b.len - 1] == '/')
        b.data[--b.len] = 0;
    buf_puts(&b, path);
    return buf_steal(&b);
}

static bool on_admin_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    rc *r = udata;
    gw_state *s = r->kind_state;
    if (s->body.len + len < (1u << 20)) buf_append(&s->body, data, len);
    return true;
}

static void on_admin_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                          void *udata)
{
    rc *r = udata;
    gw_state *s = r->kind_state;
    s->req = NULL;
    if (res != UPSTREAM_OK) {
        snprintf(s->admin_err, sizeof s->admin_err, "admin API not reachable: %s",
                 errmsg ? errmsg : "no answer");
    } else if (status != 200) {
        snprintf(s->admin_err, sizeof s->admin_err, "admin API answered HTTP %d", status);
    } else {
        json_t *doc = json_loadb(s->body.data ? s->body.data : "", s->body.len, 0, NULL);
        json_t *arr = json_object_get(doc, "targets");
        if (json_is_array(arr))
            s->targets = json_incref(arr);
        else
            snprintf(s->admin_err, sizeof s->admin_err,
                     "admin API answer has no \"targets\" array");
        json_decref(doc);
    }
    rc_end(r);
}

/* ---- status ---- */

static const json_t *old_health(const rc *r, const char *name)
{
    size_t i;
    json_t *h;
    json_array_foreach(json_object_get(json_object_get(r->obj, "status"), "modelHealth"), i, h)
    {
        const char *n = json_string_value(json_object_get(h, "name"));
        if (n && strcmp(n, name) == 0) return h;
    }
    return NULL;
}

static void write_status(rc *r)
{
    gw_state *s = r->kind_state;
    const cfg_gateway *g = s->g;
    char now[32];
    now_str(now);
    json_int_t gen = rc_generation(r);
    json_t *st = rc_status_base(r);
    json_t *conds = json_object_get(st, "conditions");
    json_object_set_new(st, "observedGeneration", json_integer(gen));
    json_object_set_new(st, "lastUpdated", json_string(now));
    int port = g->listener.port ? g->listener.port : 8080;
    char ep[600];
    snprintf(ep, sizeof ep, "%s://%s.%s.svc:%d", g->listener.tls_cert ? "https" : "http", r->name,
             r->ns, port);
    json_object_set_new(st, "gatewayEndpoint", json_string(ep));
    json_t *routes = json_array();
    for (size_t i = 0; i < g->n_routes; i++)
        json_array_append_new(routes, json_string(g->routes[i].name ? g->routes[i].name : ""));
    json_object_set_new(st, "activeRoutes", routes);

    if (r->failed) {
        cond_set(conds, "Ready", "False", "ReconcileError", r->err, gen, now);
        kube_event_record(r->c->kc, r->obj, "Warning", "ReconcileError", "Reconcile", r->err);
    } else {
        cond_set(conds, "Ready", "True", "Reconciled",
                 "the spec is valid and every owned object is applied", gen, now);
    }

    const json_t *dep = ctl_cached(r->c, INF_DEPLOYMENTS, r->ns, r->name);
    json_int_t avail =
        json_integer_value(json_object_get(json_object_get(dep, "status"), "availableReplicas"));
    char msg[600];
    if (avail >= 1) {
        snprintf(msg, sizeof msg, "%lld gateway pod(s) available", (long long)avail);
        cond_set(conds, "Available", "True", "MinimumReplicasAvailable", msg, gen, now);
    } else {
        cond_set(conds, "Available", "False", "DeploymentUnavailable",
                 dep ? "the Deployment has no available pod yet"
                     : "the Deployment does not exist yet",
                 gen, now);
    }

    json_t *health = json_array();
    buf unhealthy = BUF_INIT;
    for (size_t i = 0; i < g->n_targets; i++) {
        const char *name = g->targets[i].name;
        const json_t *t = NULL;
        size_t k;
        json_t *x;
        json_array_foreach(s->targets, k, x)
        {
            const char *n = json_string_value(json_object_get(x, "name"));
            if (n && strcmp(n, name) == 0) t = x;
        }
        const json_t *prev = old_health(r, name);
        const char *prev_state = json_string_value(json_object_get(prev, "state"));
        const char *prev_time = json_string_value(json_object_get(prev, "lastTransitionTime"));
        json_t *h = json_pack("{s:s}", "name", name);
        const char *state = NULL, *message = NULL, *when = NULL;
        if (t) {
            state = json_string_value(json_object_get(t, "state"));
            message = json_string_value(json_object_get(t, "message"));
            when = json_string_value(json_object_get(t, "lastTransitionTime"));
        } else {
            state = "Unknown";
            message = s->targets ? "the gateway does not serve this target (yet)" : s->admin_err;
        }
        if (state) json_object_set_new(h, "state", json_string(state));
        json_object_set_new(h, "message", json_string(message ? message : ""));
        bool same = (state == NULL && prev_state == NULL) ||
                    (state && prev_state && strcmp(state, prev_state) == 0);
        if (!when) when = same && prev_time ? prev_time : now;
        json_object_set_new(h, "lastTransitionTime", json_string(when));
        json_array_append_new(health, h);
        if (state && strcmp(state, "Unhealthy") == 0)
            buf_printf(&unhealthy, "%s%s", unhealthy.len ? ", " : "", name);
    }
    json_object_set_new(st, "modelHealth", health);
    if (!s->targets) {
        cond_set(conds, "Degraded", "Unknown", "AdminUnreachable", s->admin_err, gen, now);
    } else if (unhealthy.len) {
        snprintf(msg, sizeof msg, "unhealthy targets: %s", unhealthy.data);
        cond_set(conds, "Degraded", "True", "TargetsUnhealthy", msg, gen, now);
    } else {
        cond_set(conds, "Degraded", "False", "TargetsHealthy", "no target is unhealthy", gen, now);
    }
    buf_free(&unhealthy);
    r->next = NULL;
    rc_begin(r);
    rc_patch_status(r, &KUBE_LLMGATEWAYS, st);
    rc_end(r);
}

static void after_apply(rc *r)
{
    gw_state *s = r->kind_state;
    if (r->requeue && !r->failed) { /* a conflict: the retry in a second writes the status */
        rc_finish(r);
        return;
    }
    int port = s->g->admin.port ? s->g->admin.port : s->g->listener.port;
    if (!port) port = 8080;
    char *url = gw_admin_url(r->c, r->name, r->ns, port, "/admin/targets");
    char auth[600];
    upstream_header h[1];
    size_t nh = 0;
    if (s->admin_key) {
        snprintf(auth, sizeof auth, "Bearer %s", s->admin_key);
        h[nh++] = (upstream_header){"Authorization", auth};
    }
    upstream_opts o = {.method = "GET",
                       .url = url,
                       .headers = h,
                       .n_headers = nh,
                       .connect_timeout_ms = 2000,
                       .total_timeout_ms = 5000,
                       .insecure_skip_verify = true, /* the gateway's own certificate */
                       .udata = r,
                       .on_data = on_admin_data,
                       .on_done = on_admin_done};
    r->next = write_status;
    rc_begin(r);
    s->req = upstream_send(r->c->up, &o);
    free(url);
    if (!s->req) {
        snprintf(s->admin_err, sizeof s->admin_err, "admin API request could not start");
        rc_end(r);
    }
}

static void add_unique(const char **v, size_t *n, size_t cap, const char *s)
{
    for (size_t i = 0; i < *n; i++)
        if (strcmp(v[i], s) == 0) return;
    if (*n < cap) v[(*n)++] = s;
}

void gw_reconcile(rc *r)
{
    controller *c = r->c;
    if (json_object_get(json_object_get(r->obj, "metadata"), "deletionTimestamp")) {
        rc_finish(r);
        return;
    }
    objset set = {.n = 0};
    set.v[set.n] = r->obj;
    set.kind[set.n++] = "LLMGateway";
    add_refs(c, r->ns, r->obj, "LLMGateway", &set, 0);
    json_t *objs[256];
    for (size_t i = 0; i < set.n; i++) {
        const char *k = set.kind[i];
        objs[i] = with_kind(set.v[i], strcmp(k, "Secret") == 0 ? "v1" : "ctxgate.io/v1alpha1", k);
    }
    cfg_snapshot *snap = NULL;
    cfg_diags d = {0};
    int rcode = cfg_load_objects(objs, NULL, set.n, &snap, &d);
    for (size_t i = 0; i < set.n; i++)
        json_decref(objs[i]);
    const cfg_gateway *g = rcode == 0 ? cfg_find_gateway(snap, r->name) : NULL;
    if (rcode != 0 || !g) {
        if (rcode == 0 && !d.n_errors) {
            cfg_diag one = {.path = "",
                            .message = "the gateway is not in the loaded configuration"};
            cfg_diags x = {.items = &one, .n = 1, .n_errors = 1};
            r->next = NULL;
            rc_begin(r);
            write_invalid(r, &x);
            rc_end(r);
        } else {
            r->next = NULL;
            rc_begin(r);
            write_invalid(r, &d);
            rc_end(r);
        }
        cfg_diags_free(&d);
        cfg_snapshot_unref(snap);
        return;
    }
    cfg_diags_free(&d);
    gw_state *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->snap = snap;
    s->g = g;
    r->kind_state = s;
    r->kind_free = gw_state_free;
    const json_t *admin = json_object_get(json_object_get(r->obj, "spec"), "admin");
    s->admin_key = secret_value(c, r->ns, json_object_get(admin, "apiKeyRef"));

    const char *mcps[64], *secrets[128];
    size_t n_mcps = 0, n_secrets = 0;
    for (size_t i = 1; i < set.n; i++) {
        const char *k = set.kind[i];
        if (strcmp(k, "Secret") == 0)
            add_unique(secrets, &n_secrets, 128, meta_str(set.v[i], "name"));
        else
            add_unique(mcps, &n_mcps, 64, meta_str(set.v[i], "name"));
    }
    owned_gateway og = {.name = r->name,
                        .ns = r->ns,
                        .uid = meta_str(r->obj, "uid"),
                        .spec = g->spec ? g->spec : json_object_get(r->obj, "spec"),
                        .port = g->listener.port ? g->listener.port : 8080,
                        .admin_port = g->admin.port,
                        .image = c->o.gateway_image,
                        .mcps = mcps,
                        .n_mcps = n_mcps,
                        .secrets = secrets,
                        .n_secrets = n_secrets};
    owned_list l;
    owned_gateway_objects(&og, &l);
    r->next = after_apply;
    rc_begin(r);
    for (size_t i = 0; i < l.n; i++) {
        const char *k = l.v[i].kind;
        json_t *o = json_incref(l.v[i].obj);
        if (strcmp(k, "ServiceAccount") == 0)
            rc_apply(r, INF_SERVICEACCOUNTS, &KUBE_SERVICEACCOUNTS, o);
        else if (strcmp(k, "Role") == 0)
            rc_apply(r, INF_ROLES, &KUBE_ROLES, o);
        else if (strcmp(k, "RoleBinding") == 0)
            rc_apply(r, INF_ROLEBINDINGS, &KUBE_ROLEBINDINGS, o);
        else if (strcmp(k, "Deployment") == 0)
            rc_apply(r, INF_DEPLOYMENTS, &KUBE_DEPLOYMENTS, o);
        else if (strcmp(k, "Service") == 0)
            rc_apply(r, INF_SERVICES, &KUBE_SERVICES, o);
        else if (strcmp(k, "HorizontalPodAutoscaler") == 0)
            rc_apply(r, INF_HPAS, &KUBE_HPAS, o);
        else
            rc_apply(r, INF_PDBS, &KUBE_PDBS, o);
    }
    if (!owned_gateway_autoscaled(&og)) {
        rc_delete(r, INF_HPAS, &KUBE_HPAS, r->name);
        rc_delete(r, INF_PDBS, &KUBE_PDBS, r->name);
    }
    owned_list_free(&l);
    rc_end(r);
}

void gw_enqueue_referencing(controller *c, const char *ns, const char *kind, const char *name)
{
    cfg_ref_kind want = strcmp(kind, "Secret") == 0 ? CFG_REF_SECRET : CFG_REF_MCP;
    const ctl_informer which[] = {INF_GATEWAYS, INF_MCPS};
    for (int w = 0; w < 2; w++) {
        if (!c->inf[which[w]]) continue;
        const char *key;
        json_t *obj;
        json_object_foreach((json_t *)kube_informer_cache(c->inf[which[w]]), key, obj)
        {
            const char *ons = meta_str(obj, "namespace");
            if (!ons || !ns || strcmp(ons, ns) != 0) continue;
            cfg_refs refs = {0};
            json_t *x = with_kind(obj, "ctxgate.io/v1alpha1",
                                  w == 0 ? "LLMGateway" : "ModelContextProtocol");
            cfg_refs_collect(x, &refs);
            bool hit = cfg_refs_find(&refs, want, name) != NULL;
            /* a gateway also depends on the Secrets of the MCPs it references */
            if (!hit && w == 0 && want == CFG_REF_SECRET) {
                for (size_t i = 0; i < refs.n && !hit; i++) {
                    if (refs.v[i].kind != CFG_REF_MCP) continue;
                    json_t *m = ctl_cached(c, INF_MCPS, ns, refs.v[i].name);
                    if (!m) continue;
                    json_t *mx = with_kind(m, "ctxgate.io/v1alpha1", "ModelContextProtocol");
                    cfg_refs mr = {0};
                    cfg_refs_collect(mx, &mr);
                    hit = cfg_refs_find(&mr, CFG_REF_SECRET, name) != NULL;
                    cfg_refs_free(&mr);
                    json_decref(mx);
                }
            }
            cfg_refs_free(&refs);
            json_decref(x);
            if (hit)
                ctl_enqueue(c, w == 0 ? "LLMGateway" : "ModelContextProtocol", ns,
                            meta_str(obj, "name"));
        }
    }
}
