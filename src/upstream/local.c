/* local.c — the in-process transport: an answer the gateway makes itself (the Mock provider)
 * goes through the same upstream_req callbacks as a network answer, so the pipeline has one
 * path for every target. After the answer's delay the status and Content-Type are delivered,
 * then its pieces in order, as many per loop turn as the receiver consumes; a piece it does not
 * consume (on_data false) waits for upstream_resume, like a paused socket. Every callback runs
 * from the request's timer, never from inside send/pause/resume/cancel (client.h's rule). */
#include "upstream/backend.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"

typedef struct local_req {
    upstream_req base; /* first: ops */
    upstream_local *owner;
    struct local_req *prev, *next; /* the owner's requests in flight */
    uv_timer_t timer;
    upstream_opts o; /* callbacks and udata (the rest is not used after send) */
    int status;
    char *content_type; /* NULL when none */
    char *data;         /* every piece, back to back */
    size_t *ends;       /* piece i is data[ends[i-1], ends[i]) */
    size_t n_pieces, next_piece;
    bool headers_sent, paused, cancelled, in_callback, done;
    uint64_t send_ns, ttfb_ns;
} local_req;

struct upstream_local {
    uv_loop_t *loop;
    local_req *reqs;
    size_t in_flight;
};

static void req_closed(uv_handle_t *h)
{
    local_req *q = h->data;
    free(q->content_type);
    free(q->data);
    free(q->ends);
    free(q);
}

static void req_unlink(local_req *q)
{
    if (!q->owner) return;
    if (q->prev)
        q->prev->next = q->next;
    else
        q->owner->reqs = q->next;
    if (q->next) q->next->prev = q->prev;
    q->owner->in_flight--;
    q->owner = NULL;
}

static void req_release(local_req *q)
{
    req_unlink(q);
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, req_closed);
}

static void on_tick(uv_timer_t *t)
{
    local_req *q = t->data;
    q->in_callback = true;
    if (!q->headers_sent) {
        q->headers_sent = true;
        if (q->o.on_headers) q->o.on_headers(&q->base, q->status, q->o.udata);
    }
    while (!q->cancelled && !q->paused && q->next_piece < q->n_pieces) {
        size_t from = q->next_piece ? q->ends[q->next_piece - 1] : 0;
        size_t to = q->ends[q->next_piece];
        if (!q->ttfb_ns) q->ttfb_ns = clock_mono_ns();
        if (!q->o.on_data || q->o.on_data(&q->base, q->data + from, to - from, q->o.udata))
            q->next_piece++;
        else
            q->paused = true; /* not consumed: delivered again after resume */
    }
    if (!q->cancelled && !q->paused) {
        q->done = true;
        q->o.on_done(&q->base, UPSTREAM_OK, q->status, NULL, q->o.udata);
    }
    q->in_callback = false;
    if (q->cancelled || q->done) req_release(q);
}

static void local_pause(upstream_req *u)
{
    ((local_req *)u)->paused = true;
}

static void local_resume(upstream_req *u)
{
    local_req *q = (local_req *)u;
    if (!q->paused || q->cancelled || q->done) return;
    q->paused = false;
    if (!q->in_callback) uv_timer_start(&q->timer, on_tick, 0, 0);
}

static void local_cancel(upstream_req *u)
{
    local_req *q = (local_req *)u;
    if (q->done || q->cancelled) return; /* inside on_done: a no-op (client.h) */
    q->cancelled = true;
    if (!q->in_callback) req_release(q);
}

static const char *local_header_get(const upstream_req *u, const char *name)
{
    const local_req *q = (const local_req *)u;
    if (strcasecmp(name, "content-type") == 0) return q->content_type;
    return NULL;
}

static unsigned long local_ttfb_us(const upstream_req *u)
{
    const local_req *q = (const local_req *)u;
    return q->ttfb_ns ? (unsigned long)((q->ttfb_ns - q->send_ns) / 1000u) : 0;
}

static const upstream_req_ops local_ops = {
    .pause = local_pause,
    .resume = local_resume,
    .cancel = local_cancel,
    .header_get = local_header_get,
    .ttfb_us = local_ttfb_us,
};

upstream_local *upstream_local_new(uv_loop_t *loop)
{
    upstream_local *l = calloc(1, sizeof *l);
    if (l) l->loop = loop;
    return l;
}

void upstream_local_free(upstream_local *l)
{
    if (!l) return;
    while (l->reqs) {
        local_req *q = l->reqs;
        q->cancelled = true;
        req_release(q); /* unlinks q */
    }
    free(l);
}

upstream_req *upstream_local_send(upstream_local *l, const upstream_opts *o)
{
    const upstream_local_answer *a = o->local;
    assert(a && o->on_done);
    local_req *q = calloc(1, sizeof *q);
    if (!q) return NULL;
    size_t total = 0;
    for (size_t i = 0; i < a->n_pieces; i++)
        total += a->pieces[i].len;
    q->data = malloc(total ? total : 1);
    q->ends = calloc(a->n_pieces ? a->n_pieces : 1, sizeof *q->ends);
    q->content_type = a->content_type ? strdup(a->content_type) : NULL;
    if (!q->data || !q->ends || (a->content_type && !q->content_type)) {
        free(q->data);
        free(q->ends);
        free(q->content_type);
        free(q);
        return NULL;
    }
    size_t at = 0;
    for (size_t i = 0; i < a->n_pieces; i++) {
        if (a->pieces[i].len) memcpy(q->data + at, a->pieces[i].data, a->pieces[i].len);
        at += a->pieces[i].len;
        q->ends[i] = at;
    }
    q->n_pieces = a->n_pieces;
    q->base.ops = &local_ops;
    q->o = *o;
    q->o.local = NULL;
    q->status = a->status;
    q->send_ns = clock_mono_ns();
    q->owner = l;
    q->next = l->reqs;
    if (l->reqs) l->reqs->prev = q;
    l->reqs = q;
    l->in_flight++;
    uv_timer_init(l->loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, on_tick, a->delay_ms, 0);
    return &q->base;
}

size_t upstream_local_in_flight(const upstream_local *l)
{
    return l ? l->in_flight : 0;
}
