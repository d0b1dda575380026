/* chat.c — the decode phase of POST {prefix}/chat/completions (the body checked in one
 * streaming pass, chat_probe.c) and the route phase of every chat call: the route and model
 * target for the model, then the attempts (chosen target, then failover targets). */
#include <stdatomic.h>
#include <string.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/json.h"
#include "pipeline/call.h"
#include "pipeline/health.h"
#include "pipeline/route.h"

static bool attempts_have(const pl_call *c, const cfg_target *t)
{
    for (int i = 0; i < c->plan.n_plan; i++)
        if (c->plan.attempts[i] == t) return true;
    return false;
}

/* The attempt plan (docs/gateway.md, "Timeouts and failover"): the chosen target, then the
 * route's failover targets in order (each once; skipping the chosen one and those the key may
 * not use). maxAttempts counts every attempt; when it exceeds the plan the plan starts over, so
 * a route without failover targets retries its chosen target. */
static void plan_attempts(pl_call *c, const cfg_target *first)
{
    const cfg_route *rt = c->route;
    c->plan.n_plan = 0;
    c->plan.attempts[c->plan.n_plan++] = first;
    for (size_t i = 0; i < rt->n_failover_targets && c->plan.n_plan < PL_MAX_ATTEMPTS; i++) {
        const cfg_target *t = rt->failover_targets[i];
        if (attempts_have(c, t) || !route_key_allows(c->key, t)) continue;
        c->plan.attempts[c->plan.n_plan++] = t;
    }
    c->plan.n_attempts = rt->max_attempts > 0 ? rt->max_attempts : 1;
    /* ejected targets leave the plan, unless every one of it is (panic: still try them) */
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    int kept = 0;
    for (int i = 0; i < c->plan.n_plan; i++)
        if (!health_ejected(&c->rt->health[c->plan.attempts[i]->index], now)) kept++;
    if (kept == 0 || kept == c->plan.n_plan) return;
    int k = 0;
    for (int i = 0; i < c->plan.n_plan; i++)
        if (!health_ejected(&c->rt->health[c->plan.attempts[i]->index], now))
            c->plan.attempts[k++] = c->plan.attempts[i];
    c->plan.n_plan = k;
}

/* Takes one of t's maxConcurrency slots (the in_flight count); false when it is full. */
static bool claim_slot(pl_call *c, const cfg_target *t)
{
    _Atomic long *n = &c->rt->stats[t->index].in_flight;
    long before = atomic_fetch_add_explicit(n, 1, memory_order_relaxed);
    if (health_has_room(t, before)) return true;
    atomic_fetch_sub_explicit(n, 1, memory_order_relaxed);
    return false;
}

void pl_start_attempt(pl_call *c)
{
    /* the planned target, or when it is full the next one of the plan with room (the two swap
     * places, with what Retry-After said about them); none: 503, as Envoy's circuit breaker */
    int cur = c->plan.attempt % c->plan.n_plan, found = -1;
    for (int k = 0; k < c->plan.n_plan && found < 0; k++) {
        int i = (cur + k) % c->plan.n_plan;
        if (claim_slot(c, c->plan.attempts[i])) found = i;
    }
    if (found < 0) {
        static const http_header ra = {STR_LIT("Retry-After"), STR_LIT("1")};
        const cfg_target *t = c->plan.attempts[cur];
        pl_fail_headers(c, 503, &ra, 1, "server_error", "target_overloaded", NULL,
                        "Model target '%s'%s is at its maxConcurrency (%ld requests in flight); "
                        "retry shortly.",
                        t->name, c->plan.n_plan > 1 ? " and its failover targets" : "",
                        t->max_concurrency);
        return;
    }
    if (found != cur) {
        const cfg_target *t = c->plan.attempts[found];
        uint64_t nb = c->plan.not_before_ns[found];
        c->plan.attempts[found] = c->plan.attempts[cur];
        c->plan.not_before_ns[found] = c->plan.not_before_ns[cur];
        c->plan.attempts[cur] = t;
        c->plan.not_before_ns[cur] = nb;
    }
    c->plan.target = c->plan.attempts[cur];
    c->plan.target_counted = true;
    pl_proxy_start(c);
}

json_t *pl_call_body(pl_call *c)
{
    if (!c->body) c->body = json_decode_fast(c->r->body.p, c->r->body.n, NULL, 0);
    return c->body;
}

pl_step pl_chat_decode(pl_call *c)
{
    http_request *r = c->r;
    chat_probe *p = &c->probe;
    switch (
        chat_probe_parse(r->body.p, r->body.n, r->pool, p, c->rt->any_splice ? &c->tape : NULL)) {
    case PROBE_OK:
        break;
    case PROBE_BAD_JSON:
        pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL, "%s", p->message);
        return PL_FINISH;
    case PROBE_NOT_OBJECT:
        pl_fail(c, 400, "invalid_request_error", "invalid_type", NULL, "%s", p->message);
        return PL_FINISH;
    case PROBE_DUPLICATE_KEY:
        /* refused rather than "last one wins": the provider might read the other one */
        pl_fail(c, 400, "invalid_request_error", "duplicate_key", p->param, "%s", p->message);
        return PL_FINISH;
    case PROBE_BAD_ENCODING:
        pl_fail(c, 400, "invalid_request_error", "invalid_encoding", p->param, "%s", p->message);
        return PL_FINISH;
    case PROBE_TOO_MANY_KEYS:
        pl_fail(c, 400, "invalid_request_error", "too_many_keys", NULL, "%s", p->message);
        return PL_FINISH;
    case PROBE_BAD_FIELD:
        pl_fail(c, 400, "invalid_request_error",
                strcmp(p->param, "messages") == 0 ? "invalid_value" : "invalid_type", p->param,
                "%s", p->message);
        return PL_FINISH;
    }
    if (!p->has_model) {
        pl_fail(c, 400, "invalid_request_error", "missing_required_parameter", "model",
                "you must provide a model parameter");
        return PL_FINISH;
    }
    c->model = p->model;
    if (!p->has_messages) {
        pl_fail(c, 400, "invalid_request_error", "missing_required_parameter", "messages",
                "Missing required parameter: 'messages'.");
        return PL_FINISH;
    }
    if (p->n_messages == 0) {
        pl_fail(c, 400, "invalid_request_error", "invalid_value", "messages",
                "Invalid 'messages': expected a non-empty array of message objects.");
        return PL_FINISH;
    }
    c->stream = p->stream;
    c->include_usage = p->stream && p->include_usage;
    return PL_CONTINUE;
}

const cfg_target *pl_chat_resolve(pl_call *c)
{
    http_request *r = c->r;
    const cfg_gateway *gw = c->rt->gw;
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
        return NULL;
    }
    bool forbidden = false;
    route_pick_ctx pick = {.rr = &c->rt->rr[c->route->index],
                           .rng = &c->w->rng,
                           .stats = c->rt->stats,
                           .r = r,
                           .health = c->rt->health,
                           .now_ms = (int64_t)(clock_mono_ns() / 1000000u)};
    const cfg_target *t = route_resolve(c->route, c->model, c->key, &pick, &forbidden);
    if (!t) {
        if (forbidden) {
            pl_fail(c, 403, "invalid_request_error", "model_not_allowed", "model",
                    "The API key '%s' is not allowed to use model '%s'.",
                    c->key ? c->key->name : "", c->model);
            return NULL;
        }
        buf known = BUF_INIT;
        route_list_models_buf(gw, r->path, c->prefix_len, r, c->key, &known);
        pl_fail(c, 404, "invalid_request_error", "model_not_found", "model",
                "The model '%s' does not exist on route '%s'. Known models: %s.", c->model,
                c->route->name, known.data ? known.data : "(none)");
        buf_free(&known);
        return NULL;
    }
    return t;
}

/* The embeddings request as OpenAI takes it: an object with a model and an input (a string, or
 * a non-empty array of strings or of token arrays); other fields go to the provider as sent. */
pl_step pl_embeddings_decode(pl_call *c)
{
    http_request *r = c->r;
    char err[256];
    json_t *doc = json_decode_fast(r->body.p ? r->body.p : "", r->body.n, err, sizeof err);
    if (!doc) {
        pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL,
                "The request body is not valid JSON: %s", err);
        return PL_FINISH;
    }
    json_decref(c->body);
    c->body = doc;
    if (!json_is_object(doc)) {
        pl_fail(c, 400, "invalid_request_error", "invalid_type", NULL,
                "The request body must be a JSON object.");
        return PL_FINISH;
    }
    json_t *model = json_object_get(doc, "model");
    if (!json_is_string(model)) {
        pl_fail(c, 400, "invalid_request_error",
                model ? "invalid_type" : "missing_required_parameter", "model",
                model ? "Invalid type for 'model': expected a string."
                      : "you must provide a model parameter");
        return PL_FINISH;
    }
    json_t *input = json_object_get(doc, "input");
    bool ok = json_is_string(input) || (json_is_array(input) && json_array_size(input) > 0);
    if (!ok) {
        pl_fail(c, 400, "invalid_request_error",
                input ? "invalid_value" : "missing_required_parameter", "input",
                input ? "Invalid 'input': expected a string or a non-empty array."
                      : "Missing required parameter: 'input'.");
        return PL_FINISH;
    }
    c->model = arena_strdup(r->pool, json_string_value(model));
    c->body_modified = true; /* built from the document by the target's adapter */
    return PL_CONTINUE;
}

pl_step pl_phase_route(pl_call *c)
{
    /* count_tokens resolved its target in its decode phase (to know who counts) */
    bool counted = c->endpoint == PL_EP_COUNT_TOKENS;
    const cfg_target *t = counted ? c->plan.target : pl_chat_resolve(c);
    if (!t) return PL_FINISH;
    if (c->deferred && t->type != TARGET_ANTHROPIC) {
        pl_refuse_deferred(c);
        return PL_FINISH;
    }
    plan_attempts(c, t);
    /* only the failover targets that can take the call: an Anthropic one for what only the same
     * family carries, one that counts for itself for count_tokens; t can (ejected or not) */
    if (c->deferred || counted) {
        int k = 0;
        for (int i = 0; i < c->plan.n_plan; i++) {
            const cfg_target *a = c->plan.attempts[i];
            if ((!c->deferred || a->type == TARGET_ANTHROPIC) &&
                (!counted || provider_counts_tokens(a)))
                c->plan.attempts[k++] = a;
        }
        if (k == 0) c->plan.attempts[k++] = t;
        c->plan.n_plan = k;
    }
    return PL_CONTINUE;
}

/* The upstream phase: the first attempt; the phase ends (pl_resume) when an answer came whole,
 * or the call finishes on the way (an error, a stream's end relayed). */
pl_step pl_phase_upstream(pl_call *c)
{
    pl_start_attempt(c);
    return PL_SUSPEND;
}
