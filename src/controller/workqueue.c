/* workqueue.c — the de-duplicating, rate-limited work queue of workqueue.h. Sets are jansson
 * objects (a hash table keyed by string); the ready queue is a ring of owned strings. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "controller/workqueue.h"

struct workqueue {
    char **ring; /* ready keys in order; [head, head + n) modulo cap */
    size_t head, n, cap;
    json_t *queued;     /* key -> true: in the ring */
    json_t *processing; /* key -> the key as a string (wq_get's answer lives here) */
    json_t *dirty;      /* key -> true: added while processing */
    json_t *delayed;    /* key -> due time (ms) */
    json_t *failures;   /* key -> count */
    uint64_t base_ms, cap_ms;
};

workqueue *wq_new(uint64_t base_ms, uint64_t cap_ms)
{
    workqueue *q = calloc(1, sizeof *q);
    if (!q) abort();
    q->queued = json_object();
    q->processing = json_object();
    q->dirty = json_object();
    q->delayed = json_object();
    q->failures = json_object();
    q->base_ms = base_ms ? base_ms : 5;
    q->cap_ms = cap_ms ? cap_ms : 300000;
    return q;
}

static void ring_clear(workqueue *q)
{
    for (size_t i = 0; i < q->n; i++)
        free(q->ring[(q->head + i) % q->cap]);
    q->head = q->n = 0;
}

void wq_free(workqueue *q)
{
    if (!q) return;
    ring_clear(q);
    free(q->ring);
    json_decref(q->queued);
    json_decref(q->processing);
    json_decref(q->dirty);
    json_decref(q->delayed);
    json_decref(q->failures);
    free(q);
}

static void ring_push(workqueue *q, const char *key)
{
    if (q->n == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 16;
        char **r = malloc(ncap * sizeof *r);
        if (!r) abort();
        for (size_t i = 0; i < q->n; i++)
            r[i] = q->ring[(q->head + i) % q->cap];
        free(q->ring);
        q->ring = r;
        q->cap = ncap;
        q->head = 0;
    }
    char *k = strdup(key);
    if (!k) abort();
    q->ring[(q->head + q->n) % q->cap] = k;
    q->n++;
    json_object_set_new(q->queued, key, json_true());
}

void wq_add(workqueue *q, const char *key)
{
    json_object_del(q->delayed, key);
    if (json_object_get(q->processing, key)) {
        json_object_set_new(q->dirty, key, json_true());
        return;
    }
    if (json_object_get(q->queued, key)) return;
    ring_push(q, key);
}

void wq_add_after(workqueue *q, const char *key, uint64_t now_ms, uint64_t delay_ms)
{
    if (delay_ms == 0) {
        wq_add(q, key);
        return;
    }
    if (json_object_get(q->queued, key)) return; /* already due sooner */
    uint64_t due = now_ms + delay_ms;
    json_t *cur = json_object_get(q->delayed, key);
    if (cur && (uint64_t)json_integer_value(cur) <= due) return;
    json_object_set_new(q->delayed, key, json_integer((json_int_t)due));
}

uint64_t wq_add_rate_limited(workqueue *q, const char *key, uint64_t now_ms)
{
    unsigned f = wq_failures(q, key);
    uint64_t d = q->base_ms;
    for (unsigned i = 0; i < f && d < q->cap_ms; i++)
        d *= 2;
    if (d > q->cap_ms) d = q->cap_ms;
    json_object_set_new(q->failures, key, json_integer((json_int_t)f + 1));
    /* a failure while in flight: the retry waits for the delay even if the key was dirtied */
    json_object_del(q->dirty, key);
    wq_add_after(q, key, now_ms, d);
    return d;
}

unsigned wq_failures(const workqueue *q, const char *key)
{
    return (unsigned)json_integer_value(json_object_get(q->failures, key));
}

void wq_forget(workqueue *q, const char *key)
{
    json_object_del(q->failures, key);
}

void wq_promote(workqueue *q, uint64_t now_ms)
{
    const char *key;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(q->delayed, tmp, key, v)
    {
        if ((uint64_t)json_integer_value(v) > now_ms) continue;
        char *k = strdup(key);
        if (!k) abort();
        json_object_del(q->delayed, k);
        if (json_object_get(q->processing, k))
            json_object_set_new(q->dirty, k, json_true());
        else if (!json_object_get(q->queued, k))
            ring_push(q, k);
        free(k);
    }
}

const char *wq_get(workqueue *q)
{
    if (q->n == 0) return NULL;
    char *k = q->ring[q->head];
    q->head = (q->head + 1) % q->cap;
    q->n--;
    json_object_del(q->queued, k);
    json_t *s = json_string(k);
    json_object_set_new(q->processing, k, s);
    free(k);
    return json_string_value(s); /* lives in the processing set until wq_done */
}

void wq_done(workqueue *q, const char *key)
{
    char *k = strdup(key); /* key may be the processing set's own string */
    if (!k) abort();
    json_object_del(q->processing, k);
    if (json_object_get(q->dirty, k)) {
        json_object_del(q->dirty, k);
        if (!json_object_get(q->queued, k)) ring_push(q, k);
    }
    free(k);
}

size_t wq_len(const workqueue *q)
{
    return q->n;
}

size_t wq_delayed(const workqueue *q)
{
    return json_object_size(q->delayed);
}

size_t wq_in_flight(const workqueue *q)
{
    return json_object_size(q->processing);
}

uint64_t wq_next_due(const workqueue *q, uint64_t now_ms)
{
    uint64_t best = UINT64_MAX;
    const char *key;
    json_t *v;
    json_object_foreach(q->delayed, key, v)
    {
        uint64_t due = (uint64_t)json_integer_value(v);
        uint64_t d = due > now_ms ? due - now_ms : 0;
        if (d < best) best = d;
    }
    return best;
}

void wq_clear(workqueue *q)
{
    ring_clear(q);
    json_object_clear(q->queued);
    json_object_clear(q->dirty);
    json_object_clear(q->delayed);
    json_object_clear(q->failures);
}
