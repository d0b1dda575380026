/* handler.c — the first stages of every request: fixed paths (/healthz, /readyz, metrics),
 * route lookup by path prefix, method checks and authentication; then the API surface
 * (chat.c for /chat/completions, models listing here). */
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "pipeline/auth.h"
#include "pipeline/call.h"
#include "pipeline/route.h"

static void respond_json(http_request *r, int status, const char *body)
{
    http_respond(r, status, &pl_json_ct, 1, body, strlen(body));
}

static void serve_metrics(http_request *r)
{
    buf out = BUF_INIT;
    obs_render(&out);
    static const http_header ct = {STR_LIT("Content-Type"), STR_LIT(OBS_CONTENT_TYPE)};
    http_respond(r, 200, &ct, 1, out.data ? out.data : "", out.len);
    buf_free(&out);
}

/* The gateway's metricsEndpoint, and each exported store's metrics.endpoint. */
static bool is_metrics_path(const pl_worker *w, const cfg_gateway *gw, str path)
{
    if (str_eq_c(path, gw->obs.metrics_path)) return true;
    const cfg_snapshot *snap = w->bound->rt->snap;
    for (size_t i = 0; i < snap->n_mcps; i++) {
        const cfg_mcp *m = &snap->mcps[i];
        if (m->metrics_enabled && m->metrics_path && str_eq_c(path, m->metrics_path)) return true;
    }
    return false;
}

static pl_call *call_new(http_request *r, pl_worker *w)
{
    pl_call *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->r = r;
    c->w = w;
    c->bound = w->bound;
    pl_bound_ref(c->bound);
    c->rt = c->bound->rt;
    c->start_ns = r->start_ns ? r->start_ns : clock_mono_ns();
    memcpy(c->request_id, r->request_id, sizeof c->request_id);
    r->udata = c;
    obs_inflight_add(w->obs, 1);
    return c;
}

static void add_model(const char *id, void *ud)
{
    json_array_append_new(ud, json_pack("{s:s, s:s, s:i, s:s}", "id", id, "object", "model",
                                        "created", 0, "owned_by", "ctxgate"));
}

/* GET {prefix}/models: what a chat request on this prefix, with this request's headers and key,
 * is answered for (route_list_models); 404 when no route of the prefix takes these headers. */
static void list_models(pl_call *c, const cfg_gateway *gw, size_t prefix_len)
{
    http_request *r = c->r;
    json_t *data = json_array();
    if (!route_list_models(gw, r->path, prefix_len, r, c->key, add_model, data)) {
        json_decref(data);
        pl_fail(c, 404, "invalid_request_error", "route_not_found", NULL,
                "No route under %.*s accepts this request (check the route's match headers).",
                (int)prefix_len, r->path.p);
        return;
    }
    json_t *doc = json_pack("{s:s, s:o}", "object", "list", "data", data);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body) {
        pl_fail(c, 500, "server_error", "encoding_failed", NULL,
                "The model list could not be encoded as JSON.");
        return;
    }
    pl_finish(c, 200, &pl_json_ct, 1, body, strlen(body));
    free(body);
}

static void on_abort(http_request *r)
{
    pl_call *c = r->udata;
    c->aborted = true;
    if (c->ctx_pending) return; /* a store request cannot be cancelled: its callback finishes */
    if (c->up) {
        upstream_cancel(c->up);
        c->up = NULL;
    }
    if (c->timer_init) uv_timer_stop(&c->timer);
    /* the request must still be finished: writes are dropped by the server */
    if (c->stream_started)
        pl_finish_stream(c);
    else
        pl_finish(c, 499, NULL, 0, NULL, 0);
}

void pl_handle(http_request *r, void *ctx)
{
    pl_worker *w = ctx;
    if (str_eq_c(r->path, "/healthz")) {
        respond_json(r, 200, "{\"status\":\"ok\"}");
        return;
    }
    if (str_eq_c(r->path, "/readyz")) {
        if (atomic_load_explicit(w->draining, memory_order_relaxed))
            respond_json(r, 503, "{\"status\":\"draining\"}");
        else
            respond_json(r, 200, "{\"status\":\"ready\"}");
        return;
    }
    const cfg_gateway *gw = pl_worker_gateway(w);
    if (str_eq_c(r->method_name, "GET") && is_metrics_path(w, gw, r->path)) {
        serve_metrics(r);
        return;
    }

    pl_call *c = call_new(r, w);
    r->on_abort = on_abort;
    if (pl_contexts_handle(c)) return; /* fixed paths: never a route's /v1 */
    size_t prefix_len = 0;
    str suffix = STR_NULL;
    bool routed = route_prefix_match(gw, r->path, &prefix_len, &suffix);
    bool chat = routed && str_eq_c(suffix, "/chat/completions");
    const char *method = chat ? "POST" : routed && str_eq_c(suffix, "/models") ? "GET" : NULL;
    if (!method) {
        pl_fail(c, 404, "invalid_request_error", "unknown_url", NULL,
                "Unknown request URL: %.*s %.*s. Please check the URL for typos.",
                (int)r->method_name.n, r->method_name.p, (int)r->path.n, r->path.p);
        return;
    }
    if (!str_eq_c(r->method_name, method)) {
        http_header allow = {STR_LIT("Allow"), str_c(method)};
        pl_fail_headers(c, 405, &allow, 1, "invalid_request_error", "method_not_allowed", NULL,
                        "Method %.*s is not allowed on %.*s; use %s.", (int)r->method_name.n,
                        r->method_name.p, (int)r->path.n, r->path.p, method);
        return;
    }

    switch (auth_check(gw, r, &c->key)) {
    case AUTH_OK:
        break;
    case AUTH_MISSING:
        pl_fail(c, 401, "invalid_request_error", "missing_api_key", NULL,
                "Missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key: <key>' "
                "or 'api-key: <key>'.");
        return;
    case AUTH_INVALID:
        pl_fail(c, 401, "invalid_request_error", "invalid_api_key", NULL,
                "Incorrect API key provided.");
        return;
    case AUTH_AMBIGUOUS: {
        const char *h = auth_duplicated_header(r);
        pl_fail(c, 400, "invalid_request_error", "duplicate_header", h,
                "The '%s' header is sent more than once; send one key, once.", h);
        return;
    }
    }

    if (chat) {
        c->prefix_len = prefix_len; /* the route is chosen once the body names a model */
        pl_chat(c);
        return;
    }
    list_models(c, gw, prefix_len);
}
