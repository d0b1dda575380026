/* surface.c — where a request enters: the edge answers (/healthz, /readyz, metrics and the
 * admin API when spec.admin is not set, admin.c) before any pipeline
 * state exists; then the surface phase (which endpoint under which route prefix, the
 * caller's API family, the method) and the decode phase (the body into the canonical request:
 * chat.c for OpenAI callers, client.c for Anthropic ones; the models list is answered here). */
#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "pipeline/admin.h"
#include "pipeline/call.h"
#include "pipeline/route.h"

static void respond_json(http_request *r, int status, const char *body)
{
    http_respond(r, status, &pl_json_ct, 1, body, strlen(body));
}

static pl_call *call_new(http_request *r, pl_worker *w)
{
    arena *pool = arena_new(sizeof(pl_call) + 1024);
    if (!pool) abort();
    pl_call *c = arena_calloc(pool, 1, sizeof *c);
    c->pool = pool;
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
static pl_step list_models(pl_call *c, const cfg_gateway *gw, size_t prefix_len)
{
    http_request *r = c->r;
    json_t *data = json_array();
    if (!route_list_models(gw, r->path, prefix_len, r, c->key, add_model, data)) {
        json_decref(data);
        pl_fail(c, 404, "invalid_request_error", "route_not_found", NULL,
                "No route under %.*s accepts this request (check the route's match headers).",
                (int)prefix_len, r->path.p);
        return PL_FINISH;
    }
    json_t *doc = json_pack("{s:s, s:o}", "object", "list", "data", data);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body) {
        pl_fail(c, 500, "server_error", "encoding_failed", NULL,
                "The model list could not be encoded as JSON.");
        return PL_FINISH;
    }
    pl_finish(c, 200, &pl_json_ct, 1, body, strlen(body));
    free(body);
    return PL_FINISH;
}

static void on_abort(http_request *r)
{
    pl_call *c = r->udata;
    if (c->finished) return;
    c->aborted = true;
    if (c->ctx.ctx_pending) return; /* a store request cannot be cancelled: its callback finishes */
    pl_hold(c);
    if (c->upstream.req) {
        upstream_cancel(c->upstream.req);
        c->upstream.req = NULL;
    }
    if (c->timer_init) uv_timer_stop(&c->timer);
    /* the request must still be finished: writes are dropped by the server */
    if (c->upstream.stream_started)
        pl_finish_stream(c);
    else
        pl_finish(c, 499, NULL, 0, NULL, 0);
    pl_unhold(c);
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
    /* with spec.admin, metrics and the admin API live on its listener only (admin.c) */
    if (!gw->admin.port && str_eq_c(r->method_name, "GET") &&
        pl_admin_is_metrics_path(w, r->path)) {
        pl_admin_serve_metrics(r, w);
        return;
    }
    if (!gw->admin.port && pl_admin_is_admin_path(r->path)) {
        pl_admin_serve(r, w, false);
        return;
    }

    pl_call *c = call_new(r, w);
    r->on_abort = on_abort;
    pl_run(c);
}

pl_step pl_phase_surface(pl_call *c)
{
    http_request *r = c->r;
    const cfg_gateway *gw = c->rt->gw;
    if (pl_contexts_handle(c)) /* fixed paths: never a route's /v1; answered by their own code */
        return c->finished ? PL_FINISH : PL_SUSPEND;
    size_t prefix_len = 0;
    str suffix = STR_NULL;
    bool routed = route_prefix_match(gw, r->path, &prefix_len, &suffix);
    const char *method = NULL;
    if (routed && str_eq_c(suffix, "/chat/completions")) {
        c->endpoint = PL_EP_CHAT;
        method = "POST";
    } else if (routed && str_eq_c(suffix, "/messages")) {
        c->endpoint = PL_EP_MESSAGES;
        method = "POST";
    } else if (routed && str_eq_c(suffix, "/messages/count_tokens")) {
        c->endpoint = PL_EP_COUNT_TOKENS;
        method = "POST";
    } else if (routed && str_eq_c(suffix, "/embeddings")) {
        c->endpoint = PL_EP_EMBEDDINGS;
        method = "POST";
    } else if (routed && str_eq_c(suffix, "/models")) {
        c->endpoint = PL_EP_MODELS;
        method = "GET";
    }
    /* an Anthropic caller gets every answer, errors included, in its own family's format */
    if (method && (c->endpoint == PL_EP_MESSAGES || c->endpoint == PL_EP_COUNT_TOKENS))
        c->family = PL_FAMILY_ANTHROPIC;
    if (!method) {
        pl_fail(c, 404, "invalid_request_error", "unknown_url", NULL,
                "Unknown request URL: %.*s %.*s. Please check the URL for typos.",
                (int)r->method_name.n, r->method_name.p, (int)r->path.n, r->path.p);
        return PL_FINISH;
    }
    if (!str_eq_c(r->method_name, method)) {
        http_header allow = {STR_LIT("Allow"), str_c(method)};
        pl_fail_headers(c, 405, &allow, 1, "invalid_request_error", "method_not_allowed", NULL,
                        "Method %.*s is not allowed on %.*s; use %s.", (int)r->method_name.n,
                        r->method_name.p, (int)r->path.n, r->path.p, method);
        return PL_FINISH;
    }
    c->prefix_len = prefix_len; /* the route is chosen once the body names a model */
    return PL_CONTINUE;
}

pl_step pl_phase_decode(pl_call *c)
{
    switch (c->endpoint) {
    case PL_EP_CHAT:
        return pl_chat_decode(c);
    case PL_EP_MESSAGES:
        return pl_messages_decode(c);
    case PL_EP_COUNT_TOKENS:
        return pl_count_tokens(c);
    case PL_EP_EMBEDDINGS:
        return pl_embeddings_decode(c);
    case PL_EP_MODELS:
        return list_models(c, c->rt->gw, c->prefix_len);
    }
    assert(!"unknown endpoint");
    return PL_FINISH;
}
