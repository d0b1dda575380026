/* route.c — route matching, backend selection by the route's strategy, the models a caller can
 * reach on a path prefix, and the failover timing (backoff with jitter, Retry-After). */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "pipeline/health.h"
#include "pipeline/route.h"

bool route_prefix_match(const cfg_gateway *gw, str path, size_t *prefix_len, str *suffix)
{
    size_t best = 0;
    bool found = false;
    for (size_t i = 0; i < gw->n_routes; i++) {
        const cfg_route *rt = &gw->routes[i];
        size_t n = rt->path_prefix_len;
        if (path.n < n || memcmp(path.p, rt->path_prefix, n) != 0) continue;
        if (path.n > n && path.p[n] != '/') continue;
        if (!found || n > best) {
            best = n;
            found = true;
        }
    }
    if (!found) return false;
    *prefix_len = best;
    *suffix = (str){path.p + best, path.n - best};
    return true;
}

static bool headers_match(const cfg_route *rt, const http_request *r)
{
    for (size_t i = 0; i < rt->n_match_headers; i++) {
        str v = http_request_header(r, rt->match_headers[i].name);
        if (!v.p || !str_eq_c(v, rt->match_headers[i].value)) return false;
    }
    return true;
}

static bool target_named(const cfg_target *t, const char *name)
{
    if (strcmp(t->name, name) == 0) return true;
    for (size_t i = 0; i < t->n_aliases; i++)
        if (strcmp(t->aliases[i], name) == 0) return true;
    return false;
}

static bool model_listed(const cfg_route *rt, const char *model)
{
    for (size_t i = 0; i < rt->n_match_models; i++)
        if (strcmp(rt->match_models[i], model) == 0) return true;
    return false;
}

const cfg_route *route_select(const cfg_gateway *gw, str path, size_t prefix_len,
                              const http_request *r, const char *model)
{
    for (size_t i = 0; i < gw->n_routes; i++) {
        const cfg_route *rt = &gw->routes[i];
        if (rt->path_prefix_len != prefix_len || memcmp(path.p, rt->path_prefix, prefix_len) != 0)
            continue;
        if (!headers_match(rt, r)) continue;
        if (model && rt->n_match_models && !model_listed(rt, model)) continue;
        return rt;
    }
    return NULL;
}

bool route_key_allows(const cfg_api_key *key, const cfg_target *t)
{
    if (!key || key->n_models == 0) return true;
    for (size_t i = 0; i < key->n_models; i++)
        if (target_named(t, key->models[i])) return true;
    return false;
}

static uint64_t xorshift(uint64_t *s)
{
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

/* weight-proportional draw; weight 0 is never drawn */
static const cfg_target *pick_weighted(const cfg_backend *const *ok, size_t n, uint64_t *rng)
{
    long total = 0;
    for (size_t i = 0; i < n; i++)
        total += ok[i]->weight;
    if (total <= 0) return NULL;
    long pick = (long)(xorshift(rng) % (uint64_t)total);
    for (size_t i = 0; i < n; i++) {
        pick -= ok[i]->weight;
        if (pick < 0) return ok[i]->target;
    }
    return ok[n - 1]->target;
}

/* The candidate with the smallest score; ties go to the one whose turn it is, so equal
 * candidates share the load instead of the first one taking everything. */
typedef uint64_t (*score_fn)(const cfg_target *t, const route_pick_ctx *ctx);

static const cfg_target *pick_min(const cfg_backend *const *ok, size_t n, route_pick_ctx *ctx,
                                  score_fn score)
{
    unsigned long turn = atomic_fetch_add_explicit(ctx->rr, 1, memory_order_relaxed);
    const cfg_target *best = NULL;
    uint64_t best_score = UINT64_MAX;
    for (size_t k = 0; k < n; k++) {
        const cfg_target *t = ok[(turn + k) % n]->target;
        uint64_t s = score(t, ctx);
        if (!best || s < best_score) {
            best = t;
            best_score = s;
        }
    }
    return best;
}

static uint64_t score_in_flight(const cfg_target *t, const route_pick_ctx *ctx)
{
    long v = ctx->stats
                 ? atomic_load_explicit(&ctx->stats[t->index].in_flight, memory_order_relaxed)
                 : 0;
    return v > 0 ? (uint64_t)v : 0;
}

static uint64_t score_latency(const cfg_target *t, const route_pick_ctx *ctx)
{
    /* an unmeasured target scores 0: it is tried first so that it gets measured */
    return ctx->stats
               ? atomic_load_explicit(&ctx->stats[t->index].ewma_ttfb_us, memory_order_relaxed)
               : 0;
}

static uint64_t score_cost(const cfg_target *t, const route_pick_ctx *ctx)
{
    /* price of a typical exchange: input and output per million tokens, in micro-dollars;
     * a target without pricing is taken as the most expensive */
    if (!t->has_pricing) return UINT64_MAX - 1;
    return (uint64_t)((t->input_per_million + t->output_per_million) * 1e6);
}

static const cfg_target *pick_header(const cfg_route *rt, const cfg_api_key *key,
                                     const route_pick_ctx *ctx)
{
    if (!rt->header_name || !ctx->r) return NULL;
    str v = http_request_header(ctx->r, rt->header_name);
    if (!v.p) return NULL;
    for (size_t i = 0; i < rt->n_header_values; i++) {
        if (str_eq_c(v, rt->header_values[i].value) &&
            route_key_allows(key, rt->header_values[i].target))
            return rt->header_values[i].target;
    }
    return NULL;
}

/* the backend named model (name or alias), NULL when none */
static const cfg_target *named_backend(const cfg_route *rt, const char *model)
{
    for (size_t i = 0; i < rt->n_backends; i++)
        if (target_named(rt->backends[i].target, model)) return rt->backends[i].target;
    return NULL;
}

route_model_status route_model_check(const cfg_route *rt, const char *model, const cfg_api_key *key,
                                     const http_request *r)
{
    const cfg_target *named = named_backend(rt, model);
    if (named) return route_key_allows(key, named) ? ROUTE_MODEL_OK : ROUTE_MODEL_FORBIDDEN;
    if (!model_listed(rt, model)) return ROUTE_MODEL_UNKNOWN;
    if (rt->strategy == STRATEGY_HEADER_BASED) {
        route_pick_ctx hc = {.r = r};
        if (pick_header(rt, key, &hc)) return ROUTE_MODEL_OK;
    }
    for (size_t i = 0; i < rt->n_backends; i++) {
        const cfg_backend *b = &rt->backends[i];
        if (!route_key_allows(key, b->target)) continue;
        if (rt->strategy == STRATEGY_WEIGHTED && b->weight <= 0) continue; /* never drawn */
        return ROUTE_MODEL_OK;
    }
    return ROUTE_MODEL_FORBIDDEN;
}

const cfg_target *route_resolve(const cfg_route *rt, const char *model, const cfg_api_key *key,
                                route_pick_ctx *ctx, bool *forbidden)
{
    /* one judgement for the chat surface and the models listing */
    route_model_status st = route_model_check(rt, model, key, ctx->r);
    *forbidden = st == ROUTE_MODEL_FORBIDDEN;
    if (st != ROUTE_MODEL_OK) return NULL;
    const cfg_target *named = named_backend(rt, model);
    if (named) return named;

    /* a virtual model name: balance over the backends this caller may use */
    if (rt->strategy == STRATEGY_HEADER_BASED) {
        const cfg_target *t = pick_header(rt, key, ctx);
        if (t) return t;
    }
    const cfg_backend *all[64], *avail[64], *room[64];
    size_t n_all = 0, n_avail = 0, n_room = 0;
    for (size_t i = 0; i < rt->n_backends && n_all < 64; i++) {
        const cfg_backend *b = &rt->backends[i];
        if (!route_key_allows(key, b->target)) continue;
        all[n_all++] = b;
        if (rt->strategy == STRATEGY_WEIGHTED && b->weight <= 0) continue;
        if (!route_target_has_room(b->target, ctx)) continue;
        room[n_room++] = b;
        if (!route_target_ejected(b->target, ctx)) avail[n_avail++] = b;
    }
    if (n_all == 0) {
        *forbidden = true;
        return NULL;
    }
    /* healthy with room, else with room (panic), else everyone (the attempt reports overload) */
    const cfg_backend *const *ok = n_avail ? avail : n_room ? room : all;
    size_t n = n_avail ? n_avail : n_room ? n_room : n_all;
    const cfg_target *t = NULL;
    switch (rt->strategy) {
    case STRATEGY_WEIGHTED:
        t = pick_weighted(ok, n, ctx->rng);
        break;
    case STRATEGY_LEAST_CONNECTIONS:
        t = pick_min(ok, n, ctx, score_in_flight);
        break;
    case STRATEGY_LATENCY_BASED:
        t = pick_min(ok, n, ctx, score_latency);
        break;
    case STRATEGY_COST_BASED:
        t = pick_min(ok, n, ctx, score_cost);
        break;
    case STRATEGY_ROUND_ROBIN:
    case STRATEGY_HEADER_BASED: /* no or unknown header value: take turns */
        break;
    }
    if (t) return t;
    if (rt->strategy == STRATEGY_WEIGHTED) {
        *forbidden = true; /* every permitted backend has weight 0 */
        return NULL;
    }
    unsigned long turn = atomic_fetch_add_explicit(ctx->rr, 1, memory_order_relaxed);
    return ok[turn % n]->target;
}

bool route_target_ejected(const cfg_target *t, const route_pick_ctx *ctx)
{
    return ctx->health && health_ejected(&ctx->health[t->index], ctx->now_ms);
}

bool route_target_has_room(const cfg_target *t, const route_pick_ctx *ctx)
{
    if (t->max_concurrency <= 0 || !ctx->stats) return true;
    return health_has_room(
        t, atomic_load_explicit(&ctx->stats[t->index].in_flight, memory_order_relaxed));
}

void route_stats_observe(route_target_stats *s, uint64_t ttfb_us)
{
    /* EWMA with alpha 1/8, like TCP's SRTT; races between workers lose an update, never corrupt */
    uint64_t old = atomic_load_explicit(&s->ewma_ttfb_us, memory_order_relaxed);
    uint64_t next = old == 0 ? ttfb_us : old - old / 8 + ttfb_us / 8;
    atomic_store_explicit(&s->ewma_ttfb_us, next ? next : 1, memory_order_relaxed);
}

/* A candidate id is listed when the route a chat request for it would select resolves it: the
 * very judgement pl_chat makes (route_select, then route_resolve via route_model_check). */
static void offer(const cfg_gateway *gw, str path, size_t prefix_len, const http_request *r,
                  const cfg_api_key *key, const char *id, const char **seen, size_t *n_seen,
                  route_model_fn fn, void *ud)
{
    for (size_t i = 0; i < *n_seen; i++)
        if (strcmp(seen[i], id) == 0) return;
    seen[(*n_seen)++] = id;
    const cfg_route *rt = route_select(gw, path, prefix_len, r, id);
    if (rt && route_model_check(rt, id, key, r) == ROUTE_MODEL_OK) fn(id, ud);
}

bool route_list_models(const cfg_gateway *gw, str path, size_t prefix_len, const http_request *r,
                       const cfg_api_key *key, route_model_fn fn, void *ud)
{
    size_t n_candidates = 0;
    bool any = false;
    for (size_t i = 0; i < gw->n_routes; i++) {
        const cfg_route *rt = &gw->routes[i];
        if (rt->path_prefix_len != prefix_len || memcmp(path.p, rt->path_prefix, prefix_len) != 0)
            continue;
        if (headers_match(rt, r)) any = true;
        n_candidates += rt->n_match_models;
        for (size_t b = 0; b < rt->n_backends; b++)
            n_candidates += 1 + rt->backends[b].target->n_aliases;
    }
    if (!any) return false;
    const char **seen = calloc(n_candidates + 1, sizeof *seen);
    if (!seen) abort();
    size_t n_seen = 0;
    for (size_t i = 0; i < gw->n_routes; i++) {
        const cfg_route *rt = &gw->routes[i];
        if (rt->path_prefix_len != prefix_len || memcmp(path.p, rt->path_prefix, prefix_len) != 0)
            continue;
        if (!headers_match(rt, r)) continue; /* unreachable with these headers */
        for (size_t m = 0; m < rt->n_match_models; m++)
            offer(gw, path, prefix_len, r, key, rt->match_models[m], seen, &n_seen, fn, ud);
        for (size_t b = 0; b < rt->n_backends; b++) {
            const cfg_target *t = rt->backends[b].target;
            offer(gw, path, prefix_len, r, key, t->name, seen, &n_seen, fn, ud);
            for (size_t a = 0; a < t->n_aliases; a++)
                offer(gw, path, prefix_len, r, key, t->aliases[a], seen, &n_seen, fn, ud);
        }
    }
    free(seen);
    return true;
}

static void append_name(const char *id, void *ud)
{
    buf *out = ud;
    if (out->len) buf_puts(out, ", ");
    buf_puts(out, id);
}

bool route_list_models_buf(const cfg_gateway *gw, str path, size_t prefix_len,
                           const http_request *r, const cfg_api_key *key, buf *out)
{
    return route_list_models(gw, path, prefix_len, r, key, append_name, out);
}

uint64_t route_backoff_ms(int base_ms, int n, uint64_t *rng)
{
    if (base_ms <= 0) return 0;
    uint64_t cap = base_ms > ROUTE_BACKOFF_CAP_MS ? (uint64_t)base_ms : ROUTE_BACKOFF_CAP_MS;
    uint64_t d = (uint64_t)base_ms;
    for (int i = 1; i < n && d < cap; i++)
        d *= 2;
    if (d > cap) d = cap;
    uint64_t half = d / 2;
    return half + xorshift(rng) % (d - half + 1);
}

int64_t route_retry_after_ms(const char *value, int64_t now_wall_ms)
{
    if (!value) return -1;
    while (*value == ' ' || *value == '\t')
        value++;
    size_t len = strlen(value);
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (len == 0) return -1;
    size_t digits = strspn(value, "0123456789");
    if (digits == len) { /* delay-seconds */
        int64_t s = 0;
        for (size_t i = 0; i < len; i++) {
            s = s * 10 + (value[i] - '0');
            if (s > INT64_MAX / 1000 / 10) return INT64_MAX / 1000 * 1000; /* "very long" */
        }
        return s * 1000;
    }
    if (digits) return -1; /* "12abc", "1.5": neither form */
    char date[64];
    if (len >= sizeof date) return -1;
    memcpy(date, value, len);
    date[len] = '\0';
    time_t t = curl_getdate(date, NULL);
    if (t == (time_t)-1) return -1;
    int64_t ms = (int64_t)t * 1000 - now_wall_ms;
    return ms > 0 ? ms : 0;
}
