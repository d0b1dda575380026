/* workqueue.h — the controller's work queue of object keys ("Kind/namespace/name"), in the shape
 * of client-go's rate-limited work queue: a key is queued at most once (adding it again while
 * queued is a no-op), at most one reconcile of a key is in flight (a key added while it is being
 * processed is queued again when wq_done is called), failures are retried with a per-key
 * exponential delay (base * 2^failures, capped) and wq_forget resets a key's failure count.
 * Time is passed in by the caller (milliseconds, any monotonic origin) so the queue is pure and
 * testable; the controller drives it from a libuv timer. */
#ifndef CTXGATE_CONTROLLER_WORKQUEUE_H
#define CTXGATE_CONTROLLER_WORKQUEUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct workqueue workqueue;

/* base_ms: first retry delay (client-go 5 ms); cap_ms: largest delay (5 min here). */
workqueue *wq_new(uint64_t base_ms, uint64_t cap_ms);
void wq_free(workqueue *q);

/* Queues key now (de-duplicated; a pending delayed add of the same key is dropped). */
void wq_add(workqueue *q, const char *key);
/* Queues key once now_ms + delay_ms has passed (an earlier pending time wins). */
void wq_add_after(workqueue *q, const char *key, uint64_t now_ms, uint64_t delay_ms);
/* A failed reconcile: queues key after its next exponential delay and counts the failure.
 * Returns the delay chosen. */
uint64_t wq_add_rate_limited(workqueue *q, const char *key, uint64_t now_ms);
/* Failures counted for key since the last wq_forget. */
unsigned wq_failures(const workqueue *q, const char *key);
void wq_forget(workqueue *q, const char *key);

/* Moves the delayed keys whose time has come to the queue. */
void wq_promote(workqueue *q, uint64_t now_ms);
/* The next key to reconcile (now in flight; caller owns nothing), or NULL when none is ready.
 * The string stays valid until wq_done(key). Keys in flight are never handed out twice. */
const char *wq_get(workqueue *q);
/* The reconcile of key finished; when key was added meanwhile it is queued again. */
void wq_done(workqueue *q, const char *key);

/* Keys queued now (ready, not in flight): ctxgate_controller_queue_depth. */
size_t wq_len(const workqueue *q);
size_t wq_delayed(const workqueue *q);
size_t wq_in_flight(const workqueue *q);
/* Milliseconds until the earliest delayed key is due (0 = due now), or UINT64_MAX when none. */
uint64_t wq_next_due(const workqueue *q, uint64_t now_ms);
/* Drops everything (queued, delayed, failure counts); keys in flight stay in flight until done
 * but are not re-queued. */
void wq_clear(workqueue *q);

#endif
