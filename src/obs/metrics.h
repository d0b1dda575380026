/* metrics.h — the gateway's Prometheus metrics. Counters and histograms are sharded per worker
 * thread (obs_shard, no locks or atomics contended on the hot path); a scrape sums the shards.
 * Label sets are created on first use. */
#ifndef CTXGATE_OBS_METRICS_H
#define CTXGATE_OBS_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct obs_shard obs_shard;

/* One shard per worker, created before workers start. */
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
void obs_upstream_error(obs_shard *s, const char *target, const char *kind);

/* Appends the Prometheus text exposition (version 0.0.4) of every shard. */
void obs_render(buf *out);

#endif
