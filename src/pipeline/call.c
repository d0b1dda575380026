/* call.c — ending a call: the response, the access-log line, metrics, and freeing its state.
 * Every path out of the pipeline goes through pl_finish / pl_finish_stream exactly once. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "core/utf8.h"
#include "obs/accesslog.h"
#include "pipeline/call.h"
#include "pipeline/route.h"
#include "surface/anthropic.h"

static void call_free(pl_call *c)
{
    pl_context_free(c);
    json_decref(c->body);
    free(c->upstream.up_body);
    buf_free(&c->upstream.resp);
    buf_free(&c->upstream.relay_out);
    buf_free(&c->upstream.text);
    buf_free(&c->client_out);
    anthropic_stream_free(c->client_stream);
    provider_stream_free(c->upstream.xs);
    buf_free(&c->upstream.up_raw);
    buf_free(&c->upstream.native_out);
    pl_bound_unref(c->bound);
    arena_free(c->pool); /* c itself is in it */
}

static void on_timer_closed(uv_handle_t *h)
{
    call_free(h->data);
}

static double call_cost(const pl_call *c)
{
    if (!c->plan.target || !c->plan.target->has_pricing || !c->upstream.usage.present) return 0;
    return ((double)c->upstream.usage.prompt_tokens * c->plan.target->input_per_million +
            (double)c->upstream.usage.completion_tokens * c->plan.target->output_per_million) /
           1e6;
}

/* The account phase: the call's figures into the metrics. */
pl_step pl_phase_account(pl_call *c)
{
    const cfg_gateway *gw = c->rt->gw;
    obs_request m = {
        .gateway = gw->name,
        .route = c->route ? c->route->name : "",
        .model = c->plan.target ? c->plan.target->name : "",
        .status = c->status,
        .duration_us = (clock_mono_ns() - c->start_ns) / 1000u,
        .upstream_us = c->upstream.upstream_us,
        .ttft_us = c->upstream.ttft_us,
        .prompt_tokens = c->upstream.usage.prompt_tokens,
        .completion_tokens = c->upstream.usage.completion_tokens,
        .cost_usd = call_cost(c),
    };
    obs_record_request(c->w->obs, &m);
    return PL_CONTINUE;
}

/* The log phase: the access-log line (before the response is handed to the server: method and
 * path live in the request's arena). */
pl_step pl_phase_log(pl_call *c)
{
    const cfg_gateway *gw = c->rt->gw;
    if (!gw->obs.access_log || !c->r) return PL_CONTINUE;
    char method[16], path[512];
    str_copy_c(method, sizeof method, c->r->method_name);
    str_copy_c(path, sizeof path, c->r->path);
    accesslog_entry e = {
        .request_id = c->request_id,
        .remote_addr = c->r->remote_addr,
        .method = method,
        .path = path,
        .status = c->status,
        .duration_us = (clock_mono_ns() - c->start_ns) / 1000u,
        .upstream_us = c->upstream.upstream_us,
        .ttft_us = c->upstream.ttft_us,
        .gateway = gw->name,
        .route = c->route ? c->route->name : NULL,
        .model = c->model,
        .target = c->plan.target ? c->plan.target->name : NULL,
        .user = c->key ? c->key->user : NULL,
        .app = c->key ? c->key->app : NULL,
        .tenant = c->key ? c->key->tenant : NULL,
        .prompt_tokens = c->upstream.usage.prompt_tokens,
        .completion_tokens = c->upstream.usage.completion_tokens,
        .usage_source = c->upstream.usage_source     ? c->upstream.usage_source
                        : !c->upstream.usage.present ? NULL
                        : c->plan.target && provider_is_local(c->plan.target) ? "counted"
                                                                              : "upstream",
        .attempts = c->plan.attempt + (c->plan.target ? 1 : 0),
        .stream = c->stream,
        .error = c->error,
        .req_body = gw->obs.access_log_bodies ? c->r->body.p : NULL,
        /* a relayed answer is not held: c->upstream.resp has only its tail */
        .resp_body = (gw->obs.access_log_bodies && !c->stream && !c->upstream.passthrough)
                         ? c->upstream.resp.data
                         : NULL,
    };
    accesslog_write(&e, gw->obs.access_log_json);
    return PL_CONTINUE;
}

void pl_attempt_end(pl_call *c, bool ok, uint64_t ttfb_us)
{
    if (!c->plan.target_counted) return;
    c->plan.target_counted = false;
    route_target_stats *s = &c->rt->stats[c->plan.target->index];
    atomic_fetch_sub_explicit(&s->in_flight, 1, memory_order_relaxed);
    if (ok && ttfb_us) route_stats_observe(s, ttfb_us);
}

static void call_destroy(pl_call *c);

/* The response is written: the call lets go of what it counts, and is freed once no entry is
 * on the stack (pl_unhold frees it then). */
static void call_release(pl_call *c)
{
    pl_attempt_end(c, false, 0);
    obs_inflight_add(c->w->obs, -1);
    if (c->timer_init) uv_timer_stop(&c->timer);
    if (c->holds == 0) call_destroy(c);
}

static void call_destroy(pl_call *c)
{
    assert(c->finished && c->holds == 0);
    if (c->timer_init)
        uv_close((uv_handle_t *)&c->timer, on_timer_closed);
    else
        call_free(c);
}

void pl_hold(pl_call *c)
{
    assert(c->holds >= 0);
    c->holds++;
}

void pl_unhold(pl_call *c)
{
    assert(c->holds > 0);
    if (--c->holds == 0 && c->finished) call_destroy(c);
}

/* The single finish: marked (once), then account and log, before the response goes out. */
static http_request *call_finish(pl_call *c)
{
    assert(!c->finished);
    assert(c->r);
    c->finished = true;
    pl_run_finish_phases(c);
    http_request *r = c->r;
    c->r = NULL;
    return r;
}

void pl_finish(pl_call *c, int status, const http_header *hdrs, size_t n, const char *body,
               size_t len)
{
    c->status = c->aborted ? 499 : status;
    /* every answer of a request with X-Conversation-Id echoes it (context.c decides) */
    http_header h[16];
    bool has_conv = false;
    for (size_t i = 0; i < n; i++)
        has_conv |= str_case_eq_c(hdrs[i].name, "x-conversation-id");
    if (!has_conv && n + 2 <= sizeof h / sizeof h[0]) {
        size_t extra = pl_context_headers(c, h + n);
        if (extra) {
            if (n) memcpy(h, hdrs, n * sizeof *hdrs);
            hdrs = h;
            n += extra;
        }
    }
    char *enc = NULL;
    size_t enc_len = 0;
    pl_client_encode_whole(c, status, body, len, &enc, &enc_len);
    http_request *r = call_finish(c);
    http_respond(r, status, hdrs, n, enc ? enc : body, enc ? enc_len : len);
    free(enc);
    call_release(c);
}

/* A started stream ends: logged, then ended (http_stream_end) or broken off (_abort), freed. */
static void stream_close(pl_call *c, void (*close_fn)(http_request *r))
{
    if (c->aborted)
        c->status = 499;
    else if (c->upstream.native && c->r && close_fn == http_stream_end)
        pl_client_write(c, NULL, 0); /* the provider's last events */
    http_request *r = call_finish(c);
    close_fn(r);
    call_release(c);
}

void pl_finish_stream(pl_call *c)
{
    stream_close(c, http_stream_end);
}

void pl_abort_stream(pl_call *c)
{
    stream_close(c, http_stream_abort);
}

/* The error document for a message that is valid UTF-8 already; NULL on out-of-memory. */
static char *error_json(const char *msg, size_t len, const char *type, const char *code,
                        const char *param)
{
    json_t *e = json_object(), *doc = json_object();
    json_t *pv = json_null();
    if (param) {
        buf p = BUF_INIT;
        utf8_append_repaired(&p, param, strlen(param), PL_ERROR_PARAM_MAX);
        pv = json_stringn(p.data ? p.data : "", p.len);
        buf_free(&p);
    }
    char *out = NULL;
    if (e && doc && json_object_set_new(e, "message", json_stringn(msg, len)) == 0 &&
        json_object_set_new(e, "type", json_string(type)) == 0 &&
        json_object_set(e, "param", pv) == 0 &&
        json_object_set_new(e, "code", code ? json_string(code) : json_null()) == 0 &&
        json_object_set(doc, "error", e) == 0)
        out = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(pv); /* held, not given: a failed step above would otherwise leak it */
    json_decref(e);
    json_decref(doc);
    return out;
}

char *pl_error_body(const char *type, const char *code, const char *param, const char *msg,
                    size_t *len)
{
    buf m = BUF_INIT;
    utf8_append_repaired(&m, msg, strlen(msg), PL_ERROR_MESSAGE_MAX);
    char *out = error_json(m.data ? m.data : "", m.len, type, code, param);
    buf_free(&m);
    if (!out) out = strdup(PL_ERROR_FALLBACK);
    if (!out) abort();
    *len = strlen(out);
    return out;
}

void pl_failv(pl_call *c, int status, const http_header *extra, size_t n_extra, const char *type,
              const char *code, const char *param, const char *fmt, va_list ap)
{
    /* formatted whole (no fixed buffer cutting a character in two), then repaired and bounded */
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    char *raw = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (raw) vsnprintf(raw, (size_t)n + 1, fmt, ap);
    buf m = BUF_INIT;
    if (raw) utf8_append_repaired(&m, raw, (size_t)n, PL_ERROR_MESSAGE_MAX);
    free(raw);
    const char *msg = m.data ? m.data : "";
    c->error = arena_strdup(c->pool, msg);
    char *body = error_json(msg, m.len, type, code, param);
    buf_free(&m);
    http_header hdrs[8];
    size_t nh = 0;
    hdrs[nh++] = pl_json_ct;
    for (size_t i = 0; i < n_extra && nh < 8; i++)
        hdrs[nh++] = extra[i];
    if (!body) {
        pl_finish(c, status, hdrs, nh, PL_ERROR_FALLBACK, sizeof PL_ERROR_FALLBACK - 1);
        return;
    }
    pl_finish(c, status, hdrs, nh, body, strlen(body));
    free(body);
}

const http_header pl_json_ct = {STR_LIT("Content-Type"), STR_LIT("application/json")};

void pl_stream_begin(pl_call *c)
{
    if (c->upstream.stream_started) return;
    c->upstream.stream_started = true;
    http_header h[4] = {
        {STR_LIT("Content-Type"), STR_LIT("text/event-stream; charset=utf-8")},
        {STR_LIT("Cache-Control"), STR_LIT("no-cache")},
    };
    size_t n = 2 + pl_context_headers(c, h + 2);
    http_stream_begin(c->r, 200, h, n);
}

void pl_fail(pl_call *c, int status, const char *type, const char *code, const char *param,
             const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pl_failv(c, status, NULL, 0, type, code, param, fmt, ap);
    va_end(ap);
}

void pl_fail_headers(pl_call *c, int status, const http_header *extra, size_t n_extra,
                     const char *type, const char *code, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pl_failv(c, status, extra, n_extra, type, code, param, fmt, ap);
    va_end(ap);
}

void pl_call_timer(pl_call *c, uint64_t ms, void (*fn)(uv_timer_t *))
{
    if (!c->timer_init) {
        uv_timer_init(c->w->loop, &c->timer);
        c->timer.data = c;
        c->timer_init = true;
    }
    uv_timer_start(&c->timer, fn, ms, 0);
}
