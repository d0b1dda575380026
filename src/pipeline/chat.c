/* chat.c — POST {prefix}/chat/completions: checks the body, selects the route and the model
 * target, lays out the attempts (chosen target, then failover targets) and hands over to the
 * Mock or the upstream stage. */
#include <stdatomic.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"
#include "pipeline/call.h"
#include "pipeline/route.h"

static bool attempts_have(const pl_call *c, const cfg_target *t)
{
    for (int i = 0; i < c->n_plan; i++)
        if (c->attempts[i] == t) return true;
    return false;
}

/* The attempt plan (docs/gateway.md, "Timeouts and failover"): the chosen target, then the
 * route's failover targets in order (each once; skipping the chosen one and those the key may
 * not use). maxAttempts counts every attempt; when it exceeds the plan the plan starts over, so
 * a route without failover targets retries its chosen target. */
static void plan_attempts(pl_call *c, const cfg_target *first)
{
    const cfg_route *rt = c->route;
    c->n_plan = 0;
    c->attempts[c->n_plan++] = first;
    for (size_t i = 0; i < rt->n_failover_targets && c->n_plan < PL_MAX_ATTEMPTS; i++) {
        const cfg_target *t = rt->failover_targets[i];
        if (attempts_have(c, t) || !route_key_allows(c->key, t)) continue;
        c->attempts[c->n_plan++] = t;
    }
    c->n_attempts = rt->max_attempts > 0 ? rt->max_attempts : 1;
}

void pl_start_attempt(pl_call *c)
{
    c->target = c->attempts[c->attempt % c->n_plan];
    atomic_fetch_add_explicit(&c->rt->stats[c->target->index].in_flight, 1, memory_order_relaxed);
    c->target_counted = true;
    if (provider_is_local(c->target))
        pl_mock_start(c);
    else
        pl_proxy_start(c);
}

json_t *pl_call_body(pl_call *c)
{
    if (!c->body) c->body = json_decode_fast(c->r->body.p, c->r->body.n, NULL, 0);
    return c->body;
}

void pl_chat(pl_call *c)
{
    http_request *r = c->r;
    const cfg_gateway *gw = c->rt->gw;
    chat_probe *p = &c->probe;
    switch (chat_probe_parse(r->body.p, r->body.n, r->pool, p)) {
    case PROBE_OK:
        break;
    case PROBE_BAD_JSON:
        pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL, "%s", p->message);
        return;
    case PROBE_NOT_OBJECT:
        pl_fail(c, 400, "invalid_request_error", "invalid_type", NULL, "%s", p->message);
        return;
    case PROBE_DUPLICATE_KEY:
        /* refused rather than "last one wins": the provider might read the other one */
        pl_fail(c, 400, "invalid_request_error", "duplicate_key", p->param, "%s", p->message);
        return;
    case PROBE_BAD_ENCODING:
        pl_fail(c, 400, "invalid_request_error", "invalid_encoding", p->param, "%s", p->message);
        return;
    case PROBE_TOO_MANY_KEYS:
        pl_fail(c, 400, "invalid_request_error", "too_many_keys", NULL, "%s", p->message);
        return;
    case PROBE_BAD_FIELD:
        pl_fail(c, 400, "invalid_request_error",
                strcmp(p->param, "messages") == 0 ? "invalid_value" : "invalid_type", p->param,
                "%s", p->message);
        return;
    }
    if (!p->has_model) {
        pl_fail(c, 400, "invalid_request_error", "missing_required_parameter", "model",
                "you must provide a model parameter");
        return;
    }
    c->model = p->model;
    if (!p->has_messages) {
        pl_fail(c, 400, "invalid_request_error", "missing_required_parameter", "messages",
                "Missing required parameter: 'messages'.");
        return;
    }
    if (p->n_messages == 0) {
        pl_fail(c, 400, "invalid_request_error", "invalid_value", "messages",
                "Invalid 'messages': expected a non-empty array of message objects.");
        return;
    }
    c->stream = p->stream;
    c->include_usage = p->stream && p->include_usage;

    c->route = route_select(gw, r->path, c->prefix_len, r, c->model);
    if (!c->route) {
        /* name what this prefix does serve, so a typo is obvious */
        const cfg_route *any = route_select(gw, r->path, c->prefix_len, r, NULL);
        buf known = BUF_INIT;
        route_list_models_buf(gw, r->path, c->prefix_len, r, c->key, &known);
        pl_fail(c, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%s' does not exist on %s%s%s. Known models: %s.", c->model,
                any ? "route '" : "this path", any ? any->name : "", any ? "'" : "",
                known.data ? known.data : "(none)");
        buf_free(&known);
        return;
    }
    bool forbidden = false;
    route_pick_ctx pick = {
        .rr = &c->rt->rr[c->route->index], .rng = &c->w->rng, .stats = c->rt->stats, .r = r};
    const cfg_target *t = route_resolve(c->route, c->model, c->key, &pick, &forbidden);
    if (!t) {
        if (forbidden) {
            pl_fail(c, 403, "invalid_request_error", "model_not_allowed", "model",
                    "The API key '%s' is not allowed to use model '%s'.",
                    c->key ? c->key->name : "", c->model);
            return;
        }
        buf known = BUF_INIT;
        route_list_models_buf(gw, r->path, c->prefix_len, r, c->key, &known);
        pl_fail(c, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%s' does not exist on route '%s'. Known models: %s.", c->model,
                c->route->name, known.data ? known.data : "(none)");
        buf_free(&known);
        return;
    }
    plan_attempts(c, t);
    if (pl_context_begin(c)) return; /* history first; the stage starts the attempt */
    pl_start_attempt(c);
}
