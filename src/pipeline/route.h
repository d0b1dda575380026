/* route.h — which route serves a request path, and which backend a model resolves to. */
#ifndef CTXGATE_PIPELINE_ROUTE_H
#define CTXGATE_PIPELINE_ROUTE_H

#include <stdbool.h>

#include "config/config.h"
#include "core/buf.h"
#include "http/server.h"

/* Finds the longest pathPrefix that prefixes path at a '/' boundary ("" = the root prefix).
 * False when none; else *prefix_len and *suffix (the rest, e.g. "/chat/completions"). */
bool route_prefix_match(const cfg_gateway *gw, str path, size_t *prefix_len, str *suffix);

/* The first route with exactly that prefix length whose filters accept the request
 * (header filters; model filter when model is non-NULL). NULL when none. */
const cfg_route *route_select(const cfg_gateway *gw, str path, size_t prefix_len,
                              const http_request *r, const char *model);

/* True when key (NULL = no auth) may use target t. */
bool route_key_allows(const cfg_api_key *key, const cfg_target *t);

/* Live per-target figures the strategies read; one per cfg_target (by index), per runtime. */
typedef struct route_target_stats {
    _Atomic long in_flight; /* attempts running now (LeastConnections) */
    _Atomic uint64_t
        ewma_ttfb_us; /* smoothed time to first byte; 0 = not measured (LatencyBased) */
} route_target_stats;

/* Everything a strategy may consult besides the route itself. */
typedef struct route_pick_ctx {
    _Atomic unsigned long *rr; /* this route's turn counter (RoundRobin and tie-breaks) */
    uint64_t *rng;             /* the worker's generator (Weighted) */
    route_target_stats *stats; /* indexed by cfg_target.index; NULL = no figures */
    const http_request *r;     /* the request (HeaderBased); may be NULL */
    /* indexed by cfg_target.index; NULL = all healthy. Balancing prefers targets that are
     * neither ejected nor full (maxConcurrency, read from stats); when none is, those with
     * room (panic: ejection never refuses all traffic); when none has room, all of them (the
     * attempt then answers 503 target_overloaded). */
    struct health_target *health;
    int64_t now_ms; /* monotonic, for ejection times */
} route_pick_ctx;

/* Whether route_resolve would serve model on rt for key and request r (headers read by
 * HeaderBased), without picking: OK, FORBIDDEN (targets exist, key may use none it could get,
 * or only weight-0 ones under Weighted) or UNKNOWN (neither a backend name/alias nor one of
 * match.models). */
typedef enum { ROUTE_MODEL_OK, ROUTE_MODEL_FORBIDDEN, ROUTE_MODEL_UNKNOWN } route_model_status;
route_model_status route_model_check(const cfg_route *rt, const char *model, const cfg_api_key *key,
                                     const http_request *r);

/* Resolves model on route: a backend target by name/alias, or a match.models name picked by the
 * route's strategy among the backends key may use. Returns the target or NULL;
 * *forbidden is set when targets exist but key may use none of them (route_model_check). */
const cfg_target *route_resolve(const cfg_route *rt, const char *model, const cfg_api_key *key,
                                route_pick_ctx *ctx, bool *forbidden);

/* Whether t is ejected (ctx->health) or has no room (maxConcurrency against ctx->stats). */
bool route_target_ejected(const cfg_target *t, const route_pick_ctx *ctx);
bool route_target_has_room(const cfg_target *t, const route_pick_ctx *ctx);

/* Folds one measured time to first byte into the target's moving average. */
void route_stats_observe(route_target_stats *s, uint64_t ttfb_us);

/* The models surface: calls fn once per model id that a chat request on this path prefix, with
 * r's headers and key, is served for — every route of the prefix whose match.headers r carries
 * contributes its match.models, backend names and aliases (in manifest order), and an id is
 * kept only when the route route_select picks for it resolves it (route_model_check OK), so
 * every id listed answers and none that answers is left out. False (fn never called) when no
 * route of the prefix accepts r's headers. */
typedef void (*route_model_fn)(const char *id, void *ud);
bool route_list_models(const cfg_gateway *gw, str path, size_t prefix_len, const http_request *r,
                       const cfg_api_key *key, route_model_fn fn, void *ud);
/* The same ids appended to out, comma-separated (for messages). */
bool route_list_models_buf(const cfg_gateway *gw, str path, size_t prefix_len,
                           const http_request *r, const cfg_api_key *key, buf *out);

/* Failover timing (docs/gateway.md, "Timeouts and failover"). */
enum {
    ROUTE_BACKOFF_CAP_MS = 10000,     /* the doubling stops here (or at backoffMs if larger) */
    ROUTE_RETRY_AFTER_MAX_MS = 30000, /* longer waits are not made: the answer goes out */
};
/* The pause before the attempt that follows the n-th failed one (n >= 1), "equal jitter":
 * d = min(base_ms * 2^(n-1), max(base_ms, ROUTE_BACKOFF_CAP_MS)); uniform in [d/2, d]. */
uint64_t route_backoff_ms(int base_ms, int n, uint64_t *rng);
/* A Retry-After value (delta-seconds, or an HTTP-date compared with now_wall_ms) in ms from
 * now: 0 for a date already past; -1 when the value is neither. */
int64_t route_retry_after_ms(const char *value, int64_t now_wall_ms);

#endif
