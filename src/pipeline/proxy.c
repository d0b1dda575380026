/* proxy.c — the upstream stage: one attempt against a provider through the upstream client,
 * the relay of its answer (whole, or SSE events forwarded as they complete, with backpressure
 * both ways), error mapping, and failover to the next planned attempt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/log.h"
#include "pipeline/call.h"

static void on_client_drain(http_request *r)
{
    pl_call *c = r->udata;
    if (c->client_blocked && c->up) {
        c->client_blocked = false;
        upstream_resume(c->up);
    }
}

static void stream_begin(pl_call *c)
{
    if (!c->stream_started) c->r->on_drain = on_client_drain;
    pl_stream_begin(c);
}

/* Forwards every complete SSE event in c->resp; keeps a trailing partial event. */
static void relay_events(pl_call *c)
{
    size_t end = 0, pos = 0;
    const char *d = c->resp.data;
    size_t n = c->resp.len;
    while (pos < n) {
        const char *sep = memmem(d + pos, n - pos, "\n\n", 2);
        size_t seplen = 2;
        const char *crlf = memmem(d + pos, n - pos, "\r\n\r\n", 4);
        if (crlf && (!sep || crlf < sep)) {
            sep = crlf;
            seplen = 4;
        }
        if (!sep) break;
        size_t ev_end = (size_t)(sep - d) + seplen;
        const char *ev = d + pos;
        size_t ev_len = ev_end - pos;
        if (ev_len >= 12 && memcmp(ev, "data: [DONE]", 12) == 0) {
            c->done_seen = true;
            /* with a context the end is written once the turns are committed: forward what
             * precedes [DONE], drop [DONE] and anything after it */
            if (c->ctx_store) break;
        } else {
            if (c->include_usage || !c->usage.present)
                provider_parse_stream_usage(ev, ev_len, &c->usage);
            if (c->ctx_store) pl_context_stream_event(c, ev, ev_len);
        }
        pos = end = ev_end;
    }
    if (c->done_seen && c->ctx_store) {
        if (end) {
            stream_begin(c);
            if (!http_stream_write(c->r, d, end)) c->client_blocked = true;
        }
        buf_reset(&c->resp);
        return;
    }
    if (end == 0) return;
    stream_begin(c);
    if (!http_stream_write(c->r, d, end)) c->client_blocked = true;
    buf_consume(&c->resp, end);
}

static bool on_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    pl_call *c = udata;
    bool ok_status = c->up_status >= 200 && c->up_status < 300;
    if (!c->stream || !ok_status) {
        buf_append(&c->resp, data, len);
        return true;
    }
    if (c->client_blocked) return false; /* not consumed: delivered again after resume */
    if (c->ttft_us == 0) c->ttft_us = (clock_mono_ns() - c->start_ns) / 1000u;
    buf_append(&c->resp, data, len);
    relay_events(c);
    return true;
}

static void on_headers(upstream_req *u, int status, void *udata)
{
    pl_call *c = udata;
    c->up_status = status;
}

static bool retryable(const pl_call *c, upstream_result res, int status)
{
    unsigned on = c->route->retry_on;
    if (res == UPSTREAM_CONNECT_FAILED) return on & RETRY_ON_CONNECT_FAILURE;
    if (res == UPSTREAM_TIMEOUT) return on & RETRY_ON_TIMEOUT;
    if (res != UPSTREAM_OK) return false;
    switch (status) {
    case 429:
        return on & RETRY_ON_429;
    case 500:
        return on & RETRY_ON_500;
    case 502:
        return on & RETRY_ON_502;
    case 503:
        return on & RETRY_ON_503;
    case 504:
        return on & RETRY_ON_504;
    default:
        return false;
    }
}

static void on_backoff(uv_timer_t *t)
{
    pl_call *c = t->data;
    c->attempt++;
    pl_start_attempt(c);
}

/* The provider's own error text (its error.message), or "no details". */
static const char *provider_text(const pl_call *c, char *out, size_t outlen)
{
    provider_error_message(c->resp.data, c->resp.len, out, outlen);
    return out[0] ? out : "no details";
}

/* Maps a failed attempt to the client's error (no more attempts, nothing streamed yet). The
 * message says what failed in the caller's terms (target, status, timeout); what the upstream
 * client reported (URLs, addresses, system errors) goes to the log with the request id. */
static void fail_upstream(pl_call *c, upstream_req *u, upstream_result res, int status,
                          const char *errmsg)
{
    const cfg_target *t = c->target;
    const char *tn = t->name;
    if (res != UPSTREAM_OK)
        log_warn("request %s: model target '%s' failed: %s", c->request_id, tn,
                 errmsg && *errmsg ? errmsg : "no details");
    if (res == UPSTREAM_CONNECT_FAILED) {
        pl_fail(c, 502, "server_error", "upstream_unavailable", NULL,
                "Could not connect to model target '%s'.", tn);
        return;
    }
    if (res == UPSTREAM_TIMEOUT) {
        pl_fail(c, 504, "server_error", "upstream_timeout", NULL,
                "Model target '%s' did not answer in time (timeouts: firstToken %d s, total %d s).",
                tn, t->first_token_timeout_s, t->total_timeout_s);
        return;
    }
    if (res != UPSTREAM_OK) {
        pl_fail(c, 502, "server_error", "upstream_error", NULL,
                "The connection to model target '%s' failed before its answer was complete.", tn);
        return;
    }
    char pmsg[PROVIDER_ERROR_MESSAGE_MAX];
    if (status == 429) {
        http_header h[8];
        size_t n = 0;
        const char *names[] = {"retry-after",
                               "x-ratelimit-limit-requests",
                               "x-ratelimit-remaining-requests",
                               "x-ratelimit-reset-requests",
                               "x-ratelimit-limit-tokens",
                               "x-ratelimit-remaining-tokens",
                               "x-ratelimit-reset-tokens"};
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
            const char *v = upstream_header_get(u, names[i]);
            if (v) h[n++] = (http_header){str_c(names[i]), str_c(v)};
        }
        provider_error_message(c->resp.data, c->resp.len, pmsg, sizeof pmsg);
        pl_fail_headers(c, 429, h, n, provider_rate_limit_type(c->resp.data, c->resp.len),
                        "rate_limit_exceeded", NULL, "Model target '%s' is rate limited: %s", tn,
                        pmsg[0] ? pmsg : "HTTP 429");
        return;
    }
    if (status >= 400 && status < 500) {
        /* the provider's own client error: relay it when it is already JSON */
        json_t *doc = json_loadb(c->resp.data ? c->resp.data : "", c->resp.len, 0, NULL);
        bool relay = doc && json_is_object(json_object_get(doc, "error"));
        json_decref(doc);
        if (relay) {
            free(c->error);
            c->error = strdup(provider_text(c, pmsg, sizeof pmsg));
            pl_finish(c, status, &pl_json_ct, 1, c->resp.data, c->resp.len);
            return;
        }
        pl_fail(c, status, "invalid_request_error", "upstream_rejected", NULL,
                "Model target '%s' rejected the request (HTTP %d): %s", tn, status,
                provider_text(c, pmsg, sizeof pmsg));
        return;
    }
    pl_fail(c, 502, "server_error", "upstream_error", NULL, "upstream '%s' returned HTTP %d: %s",
            tn, status, provider_text(c, pmsg, sizeof pmsg));
}

void pl_stream_fail(pl_call *c, const char *type, const char *code, const char *msg)
{
    size_t len;
    char *s = pl_error_body(type, code, NULL, msg, &len);
    buf ev = BUF_INIT;
    buf_puts(&ev, "data: ");
    buf_append(&ev, s, len);
    buf_puts(&ev, "\n\n");
    free(s);
    http_stream_write(c->r, ev.data, ev.len);
    buf_free(&ev);
    free(c->error);
    c->error = strdup(msg);
    c->status = 502;
    pl_finish_stream(c);
}

static void on_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata)
{
    pl_call *c = udata;
    c->up = NULL; /* finished: no cancel from here on */
    c->upstream_us = (clock_mono_ns() - c->up_start_ns) / 1000u;
    bool ok = res == UPSTREAM_OK && status >= 200 && status < 300;
    pl_attempt_end(c, ok, upstream_ttfb_us(u));
    free(c->up_body);
    c->up_body = NULL;

    if (ok && !c->stream) {
        provider_parse_usage(c->resp.data, c->resp.len, &c->usage);
        if (c->ctx_store) {
            pl_context_whole_answer(c, c->resp.data ? c->resp.data : "", c->resp.len);
            pl_context_commit(c, pl_context_finish_whole);
            return;
        }
        pl_finish(c, 200, &pl_json_ct, 1, c->resp.data ? c->resp.data : "", c->resp.len);
        return;
    }
    if (ok) {
        stream_begin(c);
        if (c->resp.len) { /* a last event without its blank line */
            provider_parse_stream_usage(c->resp.data, c->resp.len, &c->usage);
            if (c->ctx_store) pl_context_stream_event(c, c->resp.data, c->resp.len);
            http_stream_write(c->r, c->resp.data, c->resp.len);
            http_stream_write(c->r, "\n\n", 2);
        }
        if (c->ctx_store) {
            pl_context_commit(c, pl_context_finish_stream);
            return;
        }
        c->status = 200;
        pl_finish_stream(c);
        return;
    }

    obs_upstream_error(c->w->obs, c->target->name,
                       res == UPSTREAM_CONNECT_FAILED ? "connect"
                       : res == UPSTREAM_TIMEOUT      ? "timeout"
                       : res == UPSTREAM_ERROR        ? "transport"
                                                      : "status");
    if (c->stream_started) {
        char msg[512];
        log_warn("request %s: model target '%s' failed mid-stream: %s", c->request_id,
                 c->target->name,
                 res == UPSTREAM_OK ? "bad status"
                 : errmsg           ? errmsg
                                    : "");
        snprintf(msg, sizeof msg, "Model target '%s' failed mid-stream (%s).", c->target->name,
                 res == UPSTREAM_TIMEOUT ? "it timed out" : "the connection failed");
        pl_stream_fail(c, "server_error",
                       res == UPSTREAM_TIMEOUT ? "upstream_timeout" : "upstream_error", msg);
        return;
    }
    if (c->attempt + 1 < c->n_attempts && retryable(c, res, status)) {
        log_info("request %s: attempt %d on target '%s' failed (%s, HTTP %d); failing over",
                 c->request_id, c->attempt + 1, c->target->name, errmsg ? errmsg : "", status);
        buf_reset(&c->resp);
        c->up_status = 0;
        c->ttft_us = 0;
        pl_call_timer(c, (uint64_t)(c->route->backoff_ms > 0 ? c->route->backoff_ms : 0),
                      on_backoff);
        return;
    }
    fail_upstream(c, u, res, status, errmsg ? errmsg : "");
}

void pl_proxy_start(pl_call *c)
{
    const cfg_target *t = c->target;
    char err[256];
    provider_request pr;
    int rc;
    if (c->body_modified) {
        /* the context stage rewrote the document: each attempt encodes a shallow copy of it */
        json_t *body = json_copy(c->body);
        rc = provider_build_chat(t, body, c->request_id, c->r->pool, &pr, err, sizeof err);
        json_decref(body);
    } else {
        /* the client's own bytes, with at most the model replaced and parameters added */
        const chat_probe *p = &c->probe;
        provider_raw_body raw = {.body = c->r->body.p,
                                 .len = c->r->body.n,
                                 .model = c->model,
                                 .model_start = p->model_start,
                                 .model_end = p->model_end,
                                 .object_end = p->object_end,
                                 .keys = p->top_keys,
                                 .n_keys = p->n_top_keys};
        rc = provider_build_chat_raw(t, &raw, c->request_id, c->r->pool, &pr, err, sizeof err);
        if (rc == 0 && !pr.body) pr.body_len = c->r->body.n;
    }
    if (rc != 0) {
        pl_fail(c, 501, "invalid_request_error", "target_type_unsupported", NULL, "%s", err);
        return;
    }
    c->up_body = pr.body;
    upstream_opts o = provider_upstream_opts(t, &pr, pr.body ? pr.body : c->r->body.p, pr.body_len);
    o.udata = c;
    o.on_headers = on_headers;
    o.on_data = on_data;
    o.on_done = on_done;
    c->up_start_ns = clock_mono_ns();
    c->up = upstream_send(c->w->up, &o);
    if (!c->up) {
        free(c->up_body);
        c->up_body = NULL;
        pl_fail(c, 502, "server_error", "upstream_unavailable", NULL,
                "Could not start a request to model target '%s'.", t->name);
    }
}
