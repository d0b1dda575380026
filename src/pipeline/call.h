/* call.h — the state of one API request as it moves through the pipeline stages (private to
 * src/pipeline/). Allocated when a request reaches a route; freed after its response is written
 * and its timer (if any) is closed. */
#ifndef CTXGATE_PIPELINE_CALL_H
#define CTXGATE_PIPELINE_CALL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "pipeline/bound.h"
#include "pipeline/bound.h"
#include "pipeline/pipeline.h"
#include "providers/provider.h"

enum { PL_MAX_ATTEMPTS = 16 };

typedef struct pl_call {
    http_request *r; /* NULL once the response is finished */
    pl_worker *w;
    pl_bound *bound; /* reference held: the configuration and stores this call uses */
    pl_runtime *rt;  /* bound->rt */
    const cfg_route *route;
    size_t prefix_len;      /* of the matched pathPrefix */
    const cfg_api_key *key; /* NULL when authentication is None */
    json_t *body;           /* the parsed request (owned) */
    const char *model;      /* as the client sent it (points into body) */
    bool stream, include_usage;

    const cfg_target *attempts[PL_MAX_ATTEMPTS]; /* chosen target, then failover targets */
    int n_attempts, attempt;
    const cfg_target *target; /* the current attempt's */
    bool target_counted;      /* target's in_flight includes this call */

    upstream_req *up;
    char *up_body; /* request body sent upstream (borrowed by the upstream request) */
    int up_status;
    buf resp;            /* non-stream: the upstream body; stream: a partial SSE event */
    bool stream_started; /* the client has received the status line */
    bool client_blocked; /* client write queue above the watermark: upstream paused */
    bool done_seen;      /* stream: data: [DONE] forwarded */
    bool aborted;        /* the client went away */
    bool timer_init;
    uv_timer_t timer; /* Mock latency and failover backoff */
    provider_usage usage;
    uint64_t up_start_ns, upstream_us, ttft_us;

    int status;  /* what the client got */
    char *error; /* message sent to the client on failure (malloc'd) */
    char request_id[40];
    uint64_t start_ns;
} pl_call;

/* errors.c — OpenAI-format error answers, ending the call */
void pl_fail(pl_call *c, int status, const char *type, const char *code, const char *param,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void pl_fail_headers(pl_call *c, int status, const http_header *extra, size_t n_extra,
                     const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* Responds (whole body), then logs and frees the call. */
void pl_finish(pl_call *c, int status, const http_header *hdrs, size_t n, const char *body,
               size_t len);
/* Ends a streamed answer, then logs and frees the call. */
void pl_finish_stream(pl_call *c);

/* chat.c */
void pl_chat(pl_call *c);
void pl_start_attempt(pl_call *c); /* runs attempts[attempt] */
/* The current attempt is over: in-flight count down, latency figure folded in when ok. */
void pl_attempt_end(pl_call *c, bool ok, uint64_t ttfb_us);
/* proxy.c */
void pl_proxy_start(pl_call *c);
/* mock.c */
void pl_mock_start(pl_call *c);
/* both: schedule fn on the call's timer */
void pl_call_timer(pl_call *c, uint64_t ms, void (*fn)(uv_timer_t *));

#endif
