/* health.h — per-target health: passive outlier detection on real traffic, active probes, and
 * the state the admin API and /metrics report (docs/gateway.md, "Outlier detection").
 *
 * One health_target per cfg_target (by index) lives in each pl_runtime and is shared by every
 * worker thread. The request path only reads atomics (health_ejected, and health_success on a
 * target with nothing to reset); the mutex is taken for failures and transitions, which are
 * rare. Times are monotonic milliseconds (now_ms) plus the wall clock (wall_ms) for reports;
 * both are passed in, so the state machine is testable without waiting.
 *
 * States: Healthy (no failure since the last success); Degraded (1..unhealthyAfter-1
 * consecutive failures, or readmitted after an ejection and no success yet); Unhealthy
 * (ejected: skipped by balancing and failover until ejectedUntil, unless every candidate is).
 * The n-th ejection in a row lasts baseEjectionSeconds * n, at most maxEjectionSeconds; the
 * count starts over once the target stayed Healthy for maxEjectionSeconds. A readmitted target
 * that fails before its first success is ejected again at once. */
#ifndef CTXGATE_PIPELINE_HEALTH_H
#define CTXGATE_PIPELINE_HEALTH_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "config/config.h"
#include "core/buf.h"
#include "upstream/client.h"

typedef enum { HEALTH_HEALTHY, HEALTH_DEGRADED, HEALTH_UNHEALTHY } health_state;

enum { HEALTH_MESSAGE_MAX = 200 };

typedef struct health_target {
    pthread_mutex_t mu;               /* guards the plain fields below */
    _Atomic int64_t ejected_until_ms; /* monotonic; 0 = not ejected */
    _Atomic int consecutive;          /* consecutive failures since the last success */
    _Atomic bool probation;           /* readmitted after an ejection, no success yet */
    _Atomic uint64_t ejections;       /* times ejected (ctxgate_target_ejections_total) */
    int level;                        /* ejections in a row (the interval's multiplier) */
    int64_t healthy_since_ms;         /* monotonic: last return to Healthy */
    int64_t ejected_until_wall_ms;    /* the wall-clock form of ejected_until_ms */
    health_state last_state;          /* as of the last transition */
    int64_t last_transition_wall_ms;  /* 0 = none yet */
    char message[HEALTH_MESSAGE_MAX]; /* why the last transition happened */
    /* active probes: only worker 0's loop touches these */
    int64_t next_probe_ms;
    bool probe_in_flight;
} health_target;

/* n targets, all Healthy. */
health_target *health_new(size_t n);
void health_free(health_target *h, size_t n);

/* Copies the state of every target of prev whose name t has too (a reload keeps what was
 * learnt: ejections, counts). Either may be NULL. */
void health_inherit(health_target *h, const cfg_gateway *gw, health_target *prev,
                    const cfg_gateway *prev_gw);

/* Ejected now: skipped by route_resolve and the failover plan (lock-free). */
static inline bool health_ejected(const health_target *h, int64_t now_ms)
{
    int64_t until = atomic_load_explicit(&h->ejected_until_ms, memory_order_relaxed);
    return until > now_ms;
}

/* The state at now_ms (an ejection that ran out reads Degraded until the first success). */
health_state health_current(const health_target *h, int64_t now_ms);
const char *health_state_name(health_state s);

/* One success of target t (an answer other than 5xx, or a 2xx probe). active: an active probe,
 * which also readmits an ejected target at once; a passive success while ejected changes
 * nothing (the request may have started before the ejection). */
void health_success(health_target *h, const cfg_target *t, bool active, int64_t now_ms,
                    int64_t wall_ms);
/* One failure (5xx, connect failure, timeout, broken connection; a failed probe), why for the
 * message. A failure while ejected changes nothing. Returns true when it ejected the target. */
bool health_failure(health_target *h, const cfg_target *t, const char *why, int64_t now_ms,
                    int64_t wall_ms);

/* A finished upstream attempt as passive detection sees it: res/status from on_done. 5xx and
 * transport failures count as failures, any other HTTP answer as a success. Mock targets are
 * never fed (always Healthy). */
void health_observe(health_target *h, const cfg_target *t, upstream_result res, int status);

/* Whether t has room for one more attempt (maxConcurrency) given its in_flight count. */
static inline bool health_has_room(const cfg_target *t, long in_flight)
{
    return t->max_concurrency <= 0 || in_flight < t->max_concurrency;
}

/* A consistent copy of one target's figures for reports. */
typedef struct health_snapshot {
    health_state state;
    int consecutive;
    uint64_t ejections;
    int64_t ejected_until_wall_ms; /* 0 = not ejected */
    int64_t last_transition_wall_ms;
    char message[HEALTH_MESSAGE_MAX];
} health_snapshot;
void health_read(health_target *h, int64_t now_ms, health_snapshot *out);

/* ctxgate_target_health{target,state} (1 for the current state, 0 for the others) and
 * ctxgate_target_ejections_total{target}, appended to out in Prometheus text format. */
void health_render_metrics(health_target *h, const cfg_gateway *gw, buf *out);

/* Active probes (healthCheck.intervalSeconds) run on one worker's loop: start on worker 0 once
 * its runtime is set (idempotent); stop before its upstream client is freed (in-flight probes
 * are cancelled). Each probe uses the worker's current runtime. */
struct pl_worker;
void health_probes_start(struct pl_worker *w);
void health_probes_stop(struct pl_worker *w);

/* RFC 3339 UTC with milliseconds ("2025-01-02T03:04:05.678Z") into out (>= 32 bytes). */
void health_format_time(int64_t wall_ms, char *out, size_t n);

#endif
