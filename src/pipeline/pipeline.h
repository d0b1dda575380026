/* pipeline.h — the request pipeline's entry point and the state it runs on.
 *
 * A pl_worker belongs to one worker thread and its loop. A pl_runtime is one published
 * configuration plus the little mutable state that must live exactly as long as it (round-robin
 * counters); workers swap their runtime pointer on their own loop, and each request holds a
 * reference to the runtime it started with, so a reload never changes a request mid-flight. */
#ifndef CTXGATE_PIPELINE_PIPELINE_H
#define CTXGATE_PIPELINE_PIPELINE_H

#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "http/server.h"
#include "obs/metrics.h"
#include "upstream/client.h"

typedef struct pl_runtime {
    _Atomic long refs;
    cfg_snapshot *snap;               /* one reference held */
    const cfg_gateway *gw;            /* the gateway this process serves, inside snap */
    _Atomic unsigned long *rr;        /* per-route round-robin counters (gw->n_routes) */
    struct route_target_stats *stats; /* per-target live figures (gw->n_targets) */
    struct health_target *health;     /* per-target health, shared by the workers (health.h) */
    bool any_splice; /* a target translates from the client's bytes (provider_splices): the
                        chat probe records its tokens for it */
} pl_runtime;

/* Builds the runtime for gateway gw_name (NULL = first) of snap; takes its own snapshot ref.
 * Returns NULL with a sentence in err when the snapshot has no such gateway. */
pl_runtime *pl_runtime_new(cfg_snapshot *snap, const char *gw_name, char *err, size_t errlen);
void pl_runtime_ref(pl_runtime *rt);
void pl_runtime_unref(pl_runtime *rt);
/* Carries the health of prev's targets over to rt's targets of the same name (a reload). */
void pl_runtime_inherit_health(pl_runtime *rt, pl_runtime *prev);

typedef struct pl_bound pl_bound; /* a runtime as one worker uses it (bound.h) */

typedef struct pl_worker {
    uv_loop_t *loop;
    upstream_client *up;
    obs_shard *obs;
    pl_bound *bound;                 /* current configuration; only this worker's loop swaps it */
    const _Atomic int *draining;     /* process-wide: /readyz answers 503 when set */
    uv_timer_t maint;                /* context-store upkeep: figures for metrics, TTL sweeps */
    struct summarize_job *summaries; /* background Summarize requests in flight (context.c) */
    bool maint_init;
    struct health_prober *prober; /* worker 0: active health probes (health.c) */
    uint64_t rng;                 /* xorshift state for Weighted picks */
    unsigned id;
} pl_worker;

/* On w's loop: makes rt the worker's configuration, taking over one reference of rt. The
 * worker's handles for rt's context stores are opened first; the previous configuration is
 * released once its last request finished (its store handles are then closed). */
void pl_worker_set_runtime(pl_worker *w, pl_runtime *rt);
/* On w's loop, at shutdown, before the upstream client is freed: cancels background requests
 * (summaries) and releases the configuration; its store handles close asynchronously, so the
 * loop must keep running until its handles are gone. */
void pl_worker_release(pl_worker *w);
const cfg_gateway *pl_worker_gateway(const pl_worker *w);

/* http_handler_fn for http_server: ctx is the pl_worker. */
void pl_handle(http_request *r, void *ctx);
/* http_handler_fn for the listener of spec.admin (metrics and the admin API): ctx is the
 * pl_worker. */
void pl_handle_admin(http_request *r, void *ctx);

#endif
