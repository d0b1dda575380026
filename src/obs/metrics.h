/* metrics.h — the gateway's Prometheus metrics. Counters and histograms are sharded per worker
 * thread (obs_shard, no locks or atomics contended on the hot path); a scrape sums the shards.
 * Label sets are created on first use. */
#ifndef CTXGATE_OBS_METRICS_H
#define CTXGATE_OBS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct obs_shard obs_shard;

/* One shard per worker, created before workers start (later is fine too). A shard has one writer:
 * only its worker thread may record into it. Shards live for the process. NULL, wherever a shard
 * is taken, means a process-wide shard whose writers are serialised by a mutex (for threads that
 * are not workers, and tests). */
obs_shard *obs_shard_new(void);

/* A finished proxied request (route/model may be "" when unknown). durations in microseconds;
 * upstream_us / ttft_us 0 = not applicable (no upstream call / not streamed). */
typedef struct obs_request {
    const char *gateway;
    const char *route;
    const char *model; /* the target name */
    int status;
    uint64_t duration_us;
    uint64_t upstream_us;
    uint64_t ttft_us;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
    double cost_usd;
} obs_request;

void obs_record_request(obs_shard *s, const obs_request *r);
void obs_inflight_add(obs_shard *s, int delta);
void obs_reload_record(int ok); /* process-wide: ctxgate_config_reloads_total{result} */
/* The outcome of the last configuration change, for GET /admin/config (and so for the
 * controller): a rejected one keeps its first error ("where: path: message") and how many there
 * were; an accepted one clears it. Process-wide, thread-safe. */
void obs_reload_outcome(int ok, const char *first_error, size_t n_errors);
/* Copies the last rejection into out (empty when the last change was accepted); returns its
 * error count and sets *wall_ms to when the last outcome was recorded (0 = none yet). */
size_t obs_reload_last_error(char *out, size_t n, int64_t *wall_ms);
void obs_upstream_error(obs_shard *s, const char *target, const char *kind);

/* One context-store operation (op: get, append, set_summary, delete, list, stats, expire);
 * ok 0 counts it in ctxgate_context_store_errors_total. */
void obs_ctx_op(obs_shard *s, const char *mcp, const char *backend, const char *op, uint64_t us,
                int ok);
/* Store-wide figures from a worker's periodic stats: active conversations (-1 = unknown) and
 * the evictions / expirations its handle made since the last report. */
void obs_ctx_store_figures(const char *mcp, const char *backend, int64_t active,
                           uint64_t new_evictions, uint64_t new_expirations);

/* Client-connection figures of the HTTP server (spec.listener.maxConnections), read at each
 * scrape from the function the gateway registers (none registered: not rendered). */
typedef struct obs_conn_figures {
    uint64_t open, max, refused, idle_closed;
} obs_conn_figures;
void obs_set_conn_figures(void (*fn)(obs_conn_figures *out, void *ctx), void *ctx);
/* Appends the Prometheus text exposition (version 0.0.4) of every shard. */
void obs_render(buf *out);

/* The version reported by ctxgate_build_info{version} (default CTXGATE_VERSION or "0.1.0");
 * call once at start, before the first scrape. */
void obs_set_build_info(const char *version);

/* Content-Type of obs_render's output. */
#define OBS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

#endif
