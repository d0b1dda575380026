/* proxy.c — the upstream stage: one attempt against a provider through the upstream client,
 * the relay of its answer (whole, or SSE events forwarded as they complete, with backpressure
 * both ways), error mapping, and failover to the next planned attempt. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "pipeline/call.h"
#include "pipeline/health.h"
#include "pipeline/route.h"

static void on_client_drain(http_request *r)
{
    pl_call *c = r->udata;
    if (c->finished) return;
    if (c->upstream.client_blocked && c->upstream.req) {
        c->upstream.client_blocked = false;
        upstream_resume(c->upstream.req);
    }
}

static void stream_begin(pl_call *c)
{
    if (!c->upstream.stream_started) c->r->on_drain = on_client_drain;
    pl_stream_begin(c);
}

static size_t max_event(const pl_call *c)
{
    size_t cap = c->plan.target->max_response_bytes;
    return cap < PL_SSE_EVENT_MAX ? cap : PL_SSE_EVENT_MAX;
}

/* The attempt's 2xx answer is refused (the wrong kind, over a limit, not storable): the upstream
 * request is cancelled, nothing is recorded, and the client gets a 502 when nothing was sent
 * yet, else an error event (a stream) or a broken body (a relayed JSON answer). Finishes c. */
static void refuse_answer(pl_call *c, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void refuse_answer(pl_call *c, const char *code, const char *fmt, ...)
{
    char msg[640];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    upstream_req *u = c->upstream.req;
    if (u) {
        c->upstream.req = NULL;
        c->upstream.upstream_us = (clock_mono_ns() - c->upstream.up_start_ns) / 1000u;
        pl_attempt_end(c, false, 0);
        upstream_cancel(u);
        free(c->upstream.up_body);
        c->upstream.up_body = NULL;
    }
    obs_upstream_error(c->w->obs, c->plan.target->name, "answer");
    if (!c->upstream.stream_started) {
        pl_fail(c, 502, "server_error", code, NULL, "%s", msg);
        return;
    }
    c->status = 502;
    if (c->upstream.passthrough) {
        c->error = arena_strdup(c->pool, msg);
        pl_abort_stream(c);
        return;
    }
    pl_stream_fail(c, "server_error", code, msg);
}

static void refuse_too_large(pl_call *c)
{
    refuse_answer(c, "upstream_response_too_large",
                  "The answer of model target '%s' is larger than its maxResponseBytes (%zu "
                  "bytes); it was not relayed in full.",
                  c->plan.target->name, c->plan.target->max_response_bytes);
}

/* The removable `"usage":null` member of a chunk (with one adjacent comma): [*from, *to). The
 * pattern cannot match inside a string, where its quotes would be escaped. */
static bool find_usage_null(const char *p, size_t n, size_t *from, size_t *to)
{
    static const char key[] = "\"usage\":";
    const char *k = memmem(p, n, key, sizeof key - 1);
    if (!k) return false;
    size_t a = (size_t)(k - p), b = a + sizeof key - 1;
    while (b < n && (p[b] == ' ' || p[b] == '\t'))
        b++;
    if (n - b < 4 || memcmp(p + b, "null", 4) != 0) return false;
    b += 4;
    size_t before = a;
    while (before > 0 && (p[before - 1] == ' ' || p[before - 1] == '\t'))
        before--;
    if (before > 0 && p[before - 1] == ',') {
        *from = before - 1;
        *to = b;
        return true;
    }
    size_t after = b;
    while (after < n && (p[after] == ' ' || p[after] == '\t'))
        after++;
    if (after < n && p[after] == ',') {
        *from = a;
        *to = after + 1;
        return true;
    }
    return false;
}

/* The JSON payload of a `data:` event (without trailing line ends); NULL for other events. */
static const char *event_json(const char *ev, size_t len, size_t *n)
{
    if (len < 6 || memcmp(ev, "data:", 5) != 0) return NULL;
    const char *p = ev + 5;
    size_t m = len - 5;
    while (m && *p == ' ')
        p++, m--;
    while (m && (p[m - 1] == '\n' || p[m - 1] == '\r'))
        m--;
    if (!m || *p != '{') return NULL;
    *n = m;
    return p;
}

/* count_text: the event's text, kept to be counted when the stream ends. */
static void collect_text(pl_call *c, const char *ev, size_t len)
{
    size_t n;
    const char *p = event_json(ev, len, &n);
    if (!p) return;
    json_t *doc = json_decode_fast(p, n, NULL, 0);
    pl_message_text(json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "delta"),
                    &c->upstream.text);
    json_decref(doc);
}

void pl_message_text(const json_t *msg, buf *out)
{
    json_t *content = json_object_get(msg, "content");
    if (json_is_string(content))
        buf_append(out, json_string_value(content), json_string_length(content));
    size_t i;
    json_t *tc;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        json_t *name = json_object_get(fn, "name"), *args = json_object_get(fn, "arguments");
        if (json_is_string(name))
            buf_append(out, json_string_value(name), json_string_length(name));
        if (json_is_string(args))
            buf_append(out, json_string_value(args), json_string_length(args));
    }
}

/* Whether an event carries a non-null finish_reason ("finish_reason": "stop", any spacing). */
static bool has_finish_reason(const char *ev, size_t len)
{
    const char *end = ev + len, *p = ev;
    while ((p = memmem(p, (size_t)(end - p), "\"finish_reason\"", 15)) != NULL) {
        p += 15;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p >= end || *p != ':') continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p == '"') return true;
    }
    return false;
}

/* Whether an event is the provider's own error event: `data: {"error": ...}`. */
static bool is_error_event(const char *ev, size_t len)
{
    size_t n;
    const char *p = event_json(ev, len, &n);
    if (!p) return false;
    const char *end = p + n;
    for (p++; p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'); p++)
        ;
    return (size_t)(end - p) >= 8 && memcmp(p, "\"error\"", 7) == 0;
}

enum ev_action { EV_FORWARD, EV_CUT, EV_DROP, EV_REPLACE, EV_END, EV_REFUSED };

/* What becomes of one complete event: forwarded as is, with [cut_from, cut_to) removed, dropped,
 * replaced by *repl (malloc'd), the end of what is forwarded (context: [DONE]), or refused. */
static enum ev_action handle_event(pl_call *c, const char *ev, size_t len, size_t *cut_from,
                                   size_t *cut_to, char **repl, char *why, size_t whylen)
{
    if (len >= 12 && memcmp(ev, "data: [DONE]", 12) == 0) {
        c->upstream.done_seen = true;
        /* with a context the end is written once the turns are committed: forward what
         * precedes [DONE], drop [DONE] and anything after it */
        return c->ctx.ctx_store ? EV_END : EV_FORWARD;
    }
    if (c->include_usage || c->upstream.usage_injected || !c->upstream.usage.present)
        provider_parse_stream_usage(ev, len, &c->upstream.usage);
    if (!c->upstream.finish_seen && has_finish_reason(ev, len)) c->upstream.finish_seen = true;
    enum ev_action act = EV_FORWARD;
    if (c->upstream.usage_injected && memmem(ev, len, "\"usage\"", 7)) {
        /* the client did not ask for usage: it gets the chunks it would have got without it */
        if (find_usage_null(ev, len, cut_from, cut_to)) {
            act = EV_CUT;
        } else if (memmem(ev, len, "\"choices\":[]", 12) ||
                   memmem(ev, len, "\"choices\": []", 13)) {
            return EV_DROP; /* the usage-only chunk */
        } else {
            size_t n;
            const char *p = event_json(ev, len, &n);
            json_t *doc = p ? json_decode_fast(p, n, NULL, 0) : NULL;
            if (json_is_object(json_object_get(doc, "usage"))) {
                json_object_del(doc, "usage");
                size_t elen;
                char *enc = json_encode_fast(doc, &elen);
                if (enc) {
                    buf b = BUF_INIT;
                    buf_puts(&b, "data: ");
                    buf_append(&b, enc, elen);
                    buf_puts(&b, "\n\n");
                    free(enc);
                    *repl = buf_steal(&b);
                    act = EV_REPLACE;
                }
            }
            json_decref(doc);
        }
    }
    if (c->ctx.ctx_store) {
        if (!pl_context_stream_event(c, ev, len, why, whylen)) {
            if (act == EV_REPLACE) free(*repl);
            return EV_REFUSED;
        }
    } else {
        if (c->upstream.count_text) collect_text(c, ev, len);
        if (!c->upstream.up_error_event && is_error_event(ev, len))
            c->upstream.up_error_event = true;
    }
    return act;
}

/* Sends d[0, n) of the relay: the status line first when needed. */
static void relay_write(pl_call *c, const char *d, size_t n)
{
    if (!n) return;
    stream_begin(c);
    if (!pl_client_write(c, d, n)) c->upstream.client_blocked = true;
}

/* The end of the next SSE event in d[0..n) (after its blank line: "\n\n" or "\n\r\n"), the
 * scan for '\n' starting at *i: true with *ev_end set; false when no complete event is there
 * yet, with *i where the next scan resumes (a trailing '\n' waits for the byte that decides). */
static bool next_event_end(const char *d, size_t n, size_t *i, size_t *ev_end)
{
    for (;;) {
        const char *nl = *i < n ? memchr(d + *i, '\n', n - *i) : NULL;
        if (!nl) {
            *i = n;
            return false;
        }
        size_t k = (size_t)(nl - d);
        if (k + 1 >= n || (d[k + 1] == '\r' && k + 2 >= n)) {
            *i = k;
            return false;
        }
        if (d[k + 1] == '\n') {
            *ev_end = k + 2;
            return true;
        }
        if (d[k + 1] == '\r' && d[k + 2] == '\n') {
            *ev_end = k + 3;
            return true;
        }
        *i = k + 1;
    }
}

/* Forwards every complete SSE event in c->upstream.resp and keeps a trailing partial one. The scan
 * for the blank line that ends an event resumes where the previous call stopped
 * (c->upstream.scan_pos), so an event costs one pass however many reads it takes. Events pass as
 * the upstream's bytes, in one write per call; only when one is changed are they copied to
 * c->upstream.relay_out. false: c was finished (an event over the size limit, an answer refused).
 */
static bool relay_events(pl_call *c)
{
    char *d = c->upstream.resp.data;
    size_t n = c->upstream.resp.len;
    size_t pos = 0;                  /* start of the current event */
    size_t fwd = 0;                  /* forwarded bytes not yet copied to relay_out start here */
    size_t i = c->upstream.scan_pos; /* where the next '\n' is looked for */
    bool copying = false;            /* the forwarded bytes are in relay_out */
    bool end = false;                /* context: [DONE] seen, nothing more forwarded */
    buf *out = &c->upstream.relay_out;
    while (!end) {
        size_t ev_end;
        if (!next_event_end(d, n, &i, &ev_end)) break;
        size_t ev_len = ev_end - pos;
        if (ev_len > max_event(c)) {
            if (copying) buf_append(out, d + fwd, pos - fwd);
            relay_write(c, copying ? out->data : d, copying ? out->len : pos);
            buf_reset(out);
            refuse_answer(c, "upstream_response_too_large",
                          "An event of model target '%s' is larger than %zu bytes; the stream "
                          "was broken off.",
                          c->plan.target->name, max_event(c));
            return false;
        }
        size_t cut_from = 0, cut_to = 0;
        char *repl = NULL;
        char why[320];
        enum ev_action act =
            handle_event(c, d + pos, ev_len, &cut_from, &cut_to, &repl, why, sizeof why);
        if (act == EV_REFUSED) {
            if (copying) buf_append(out, d + fwd, pos - fwd);
            relay_write(c, copying ? out->data : d, copying ? out->len : pos);
            buf_reset(out);
            refuse_answer(
                c, c->upstream.up_error_event ? "upstream_error" : "invalid_upstream_response",
                "Model target '%s' sent a streamed answer that cannot be recorded: %s.",
                c->plan.target->name, why);
            return false;
        }
        if (act != EV_FORWARD && act != EV_END) {
            if (!copying) {
                buf_reset(out);
                copying = true;
            }
            if (act == EV_CUT) {
                buf_append(out, d + fwd, pos + cut_from - fwd);
                fwd = pos + cut_to;
            } else {
                buf_append(out, d + fwd, pos - fwd);
                if (repl) buf_puts(out, repl);
                fwd = ev_end;
            }
            free(repl);
        }
        if (act == EV_END) {
            end = true;
            break;
        }
        pos = ev_end;
        i = ev_end;
    }
    /* [0, pos) is done with: forwarded (or dropped) now */
    if (copying) {
        buf_append(out, d + fwd, pos - fwd);
        relay_write(c, out->data, out->len);
        buf_reset(out);
    } else {
        relay_write(c, d, pos);
    }
    if (end) {
        buf_reset(&c->upstream.resp);
        c->upstream.scan_pos = 0;
        return true;
    }
    if (n - pos > max_event(c)) {
        refuse_answer(c, "upstream_response_too_large",
                      "An event of model target '%s' is larger than %zu bytes; the stream was "
                      "broken off.",
                      c->plan.target->name, max_event(c));
        return false;
    }
    if (pos) buf_consume(&c->upstream.resp, pos);
    c->upstream.scan_pos = i - pos;
    return true;
}

/* A JSON answer starts with '{' (after white space); false when what came is not JSON. */
static bool starts_like_json(const char *d, size_t n)
{
    size_t i = 0;
    while (i < n && (d[i] == ' ' || d[i] == '\t' || d[i] == '\r' || d[i] == '\n'))
        i++;
    return i < n && d[i] == '{';
}

static void refuse_not_json(pl_call *c)
{
    const char *d = c->upstream.resp.data ? c->upstream.resp.data : "";
    bool sse =
        c->upstream.resp.len >= 5 && (memcmp(d, "data:", 5) == 0 || memcmp(d, "event", 5) == 0);
    refuse_answer(c, "invalid_upstream_response",
                  "Model target '%s' answered with %s instead of a JSON object.",
                  c->plan.target->name,
                  sse                    ? "an event stream to a request without \"stream\": true"
                  : c->upstream.resp.len ? "a body that is not JSON"
                                         : "an empty body");
}

/* Keeps the last PL_USAGE_TAIL bytes of a relayed answer in c->upstream.resp (its usage is there).
 */
static void keep_tail(pl_call *c, const char *data, size_t len)
{
    if (len >= PL_USAGE_TAIL) {
        buf_reset(&c->upstream.resp);
        buf_append(&c->upstream.resp, data + len - PL_USAGE_TAIL, PL_USAGE_TAIL);
        return;
    }
    buf_append(&c->upstream.resp, data, len);
    if (c->upstream.resp.len > 2 * PL_USAGE_TAIL)
        buf_consume(&c->upstream.resp, c->upstream.resp.len - PL_USAGE_TAIL);
}

/* A non-stream 2xx piece. Context routes and small answers are held whole (the context stage
 * needs it; a small one goes out in one write with its length); beyond PL_WHOLE_BUFFER an answer
 * without context is relayed as it arrives, once its first byte says it is JSON. */
static void whole_data(pl_call *c, const char *data, size_t len)
{
    if (c->upstream.passthrough) {
        if (!http_stream_write(c->r, data, len)) c->upstream.client_blocked = true;
        keep_tail(c, data, len);
        return;
    }
    buf_append(&c->upstream.resp, data, len);
    /* held whole when it is recorded or translated (another family's answer, or the caller's) */
    if (c->ctx.ctx_store || c->upstream.resp.len <= PL_WHOLE_BUFFER ||
        c->family != PL_FAMILY_OPENAI || !provider_speaks_openai(c->plan.target))
        return;
    if (!starts_like_json(c->upstream.resp.data, c->upstream.resp.len)) {
        refuse_not_json(c);
        return;
    }
    c->upstream.passthrough = true;
    c->upstream.stream_started = true;
    c->r->on_drain = on_client_drain;
    http_header h[3] = {pl_json_ct};
    size_t n = 1 + pl_context_headers(c, h + 1);
    http_stream_begin(c->r, 200, h, n);
    if (!http_stream_write(c->r, c->upstream.resp.data, c->upstream.resp.len))
        c->upstream.client_blocked = true;
    buf held = c->upstream.resp;
    c->upstream.resp = (buf)BUF_INIT;
    keep_tail(c, held.data, held.len);
    buf_free(&held);
}

/* A target that does not speak OpenAI, streamed: its complete events in c->upstream.up_raw become
 * canonical events appended to c->upstream.resp (for relay_events). at_end: the body ended, a last
 * event without its blank line counts. false: c was finished (an event unreadable or too large). */
static bool translate_events(pl_call *c, const char *data, size_t len, bool at_end)
{
    buf_append(&c->upstream.up_raw, data, len);
    if (at_end && c->upstream.up_raw.len) buf_append(&c->upstream.up_raw, "\n\n", 2);
    const char *d = c->upstream.up_raw.data;
    size_t n = c->upstream.up_raw.len, pos = 0, i = c->upstream.up_scan;
    for (;;) {
        size_t ev_end;
        if (!next_event_end(d, n, &i, &ev_end)) break;
        if (ev_end - pos > max_event(c)) break; /* refused below */
        char why[256];
        if (provider_stream_event(c->upstream.xs, d + pos, ev_end - pos, &c->upstream.resp, why,
                                  sizeof why) != 0) {
            pl_client_write(c, NULL, 0); /* native: what was read before it */
            refuse_answer(c, "invalid_upstream_response",
                          "Model target '%s' sent a stream event that cannot be read: %s.",
                          c->plan.target->name, why);
            return false;
        }
        /* native: the event itself goes to the caller, with the relay of its translation */
        if (c->upstream.native) buf_append(&c->upstream.native_out, d + pos, ev_end - pos);
        pos = ev_end;
        i = ev_end;
    }
    if (n - pos > max_event(c)) {
        refuse_answer(c, "upstream_response_too_large",
                      "An event of model target '%s' is larger than %zu bytes; the stream was "
                      "broken off.",
                      c->plan.target->name, max_event(c));
        return false;
    }
    if (pos) buf_consume(&c->upstream.up_raw, pos);
    c->upstream.up_scan = i - pos;
    return true;
}

static bool data_in(pl_call *c, const char *data, size_t len)
{
    size_t cap = c->plan.target->max_response_bytes;
    bool ok_status = c->upstream.up_status >= 200 && c->upstream.up_status < 300;
    if (!ok_status) {
        /* an error body, read by fail_upstream: what fits under the limit */
        if (c->upstream.resp.len < cap)
            buf_append(&c->upstream.resp, data,
                       len < cap - c->upstream.resp.len ? len : cap - c->upstream.resp.len);
        return true;
    }
    if (c->upstream.client_blocked) return false; /* not consumed: delivered again after resume */
    if (len > cap - c->upstream.resp_total) {
        refuse_too_large(c);
        return true;
    }
    c->upstream.resp_total += len;
    if (!c->stream) {
        whole_data(c, data, len);
        return true;
    }
    if (c->upstream.ttft_us == 0) c->upstream.ttft_us = (clock_mono_ns() - c->start_ns) / 1000u;
    if (c->upstream.xs) {
        if (translate_events(c, data, len, false)) relay_events(c);
        return true;
    }
    buf_append(&c->upstream.resp, data, len);
    relay_events(c);
    return true;
}

static bool ct_is(const char *ct, const char *type)
{
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strlen(type);
    return strncasecmp(ct, type, n) == 0 &&
           (ct[n] == 0 || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

/* application/json, or a +json type (application/problem+json would still be JSON) */
static bool ct_is_json(const char *ct)
{
    if (ct_is(ct, "application/json")) return true;
    const char *semi = strchr(ct, ';');
    size_t n = semi ? (size_t)(semi - ct) : strlen(ct);
    while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    return n >= 5 && strncasecmp(ct + n - 5, "+json", 5) == 0;
}

static void headers_in(pl_call *c, upstream_req *u, int status)
{
    c->upstream.up_status = status;
    if (status < 200 || status >= 300) return;
    const char *ct = upstream_header_get(u, "content-type");
    const char *tn = c->plan.target->name;
    if (c->stream) {
        if (ct && !ct_is(ct, "text/event-stream"))
            refuse_answer(c, "invalid_upstream_response",
                          "Model target '%s' answered a streamed request with Content-Type %.100s "
                          "instead of an event stream.",
                          tn, ct);
        return;
    }
    if (ct && !ct_is_json(ct)) {
        refuse_answer(c, "invalid_upstream_response",
                      "Model target '%s' answered with Content-Type %.100s instead of JSON%s.", tn,
                      ct,
                      ct_is(ct, "text/event-stream")
                          ? " (an event stream to a request without \"stream\": true)"
                          : "");
        return;
    }
    const char *cl = upstream_header_get(u, "content-length");
    if (cl && strtoull(cl, NULL, 10) > c->plan.target->max_response_bytes)
        refuse_answer(c, "upstream_response_too_large",
                      "The answer of model target '%s' is %.30s bytes, larger than its "
                      "maxResponseBytes (%zu bytes).",
                      tn, cl, c->plan.target->max_response_bytes);
}

/* Where the call's token counts come from; counts with the tokenizer when the provider sent
 * none and the text is known (text NULL: it is not). */
static void usage_settle(pl_call *c, const char *text, size_t len)
{
    if (c->upstream.usage.present) {
        c->upstream.usage_source = provider_is_local(c->plan.target) ? "counted" : "upstream";
        return;
    }
    if (!text) {
        c->upstream.usage_source = "none";
        return;
    }
    json_t *body = pl_call_body(c);
    char *t = strndup(text, len);
    if (!t) abort();
    c->upstream.usage.completion_tokens = mock_count_tokens(c->plan.target, t);
    free(t);
    c->upstream.usage.prompt_tokens =
        body ? mock_count_prompt_tokens(c->plan.target, json_object_get(body, "messages")) : 0;
    c->upstream.usage.present = true;
    c->upstream.usage_source = "counted";
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
    pl_hold(c);
    c->plan.attempt++;
    pl_start_attempt(c);
    pl_unhold(c);
}

/* What went wrong with an attempt, for the log: "HTTP 503", "connect failed: ...", ... */
static void describe_failure(char *out, size_t n, upstream_result res, int status,
                             const char *errmsg, const char *retry_after)
{
    const char *what = res == UPSTREAM_CONNECT_FAILED ? "connect failed"
                       : res == UPSTREAM_TIMEOUT      ? "timeout"
                                                      : "transport error";
    if (res == UPSTREAM_OK)
        snprintf(out, n, "HTTP %d%s%s", status, retry_after ? ", Retry-After: " : "",
                 retry_after ? retry_after : "");
    else
        snprintf(out, n, "%s%s%s", what, errmsg && *errmsg ? ": " : "", errmsg ? errmsg : "");
}

/* Forgets what the failed attempt left of its answer (nothing of it reached the client), so the
 * next one starts as the first did: its body and scan, its totals, and any usage it reported
 * (a usage chunk dropped for the client, then a timeout). */
static void attempt_reset(pl_call *c)
{
    buf_reset(&c->upstream.resp);
    buf_reset(&c->upstream.relay_out);
    buf_reset(&c->upstream.text);
    c->upstream.up_status = 0;
    c->upstream.ttft_us = 0;
    c->upstream.resp_total = 0;
    c->upstream.scan_pos = 0;
    buf_reset(&c->upstream.up_raw);
    c->upstream.up_scan = 0;
    c->upstream.done_seen = c->upstream.finish_seen = c->upstream.up_error_event = false;
    c->upstream.usage = (provider_usage){0};
    c->upstream.usage_source = NULL;
}

/* After a failure in retryOn, before any byte reached the client: schedules the next planned
 * attempt after its pause (route_backoff_ms, or longer when that attempt's target asked for it
 * with Retry-After). False when no attempt is left or the pause would exceed
 * ROUTE_RETRY_AFTER_MAX_MS or the next target's timeouts.total: the failure goes to the client. */
static bool retry_later(pl_call *c, upstream_req *u, upstream_result res, int status,
                        const char *errmsg)
{
    const char *ra = res == UPSTREAM_OK ? upstream_header_get(u, "retry-after") : NULL;
    int64_t ra_ms = ra ? route_retry_after_ms(ra, clock_wall_ms()) : -1;
    char why[384];
    describe_failure(why, sizeof why, res, status, errmsg, ra_ms >= 0 ? ra : NULL);
    uint64_t now = clock_mono_ns();
    if (ra_ms >= 0) { /* the target that said so is not asked again before then */
        if (ra_ms > 86400000) ra_ms = 86400000;
        uint64_t nb = now + (uint64_t)ra_ms * 1000000u;
        int cur = c->plan.attempt % c->plan.n_plan;
        if (nb > c->plan.not_before_ns[cur]) c->plan.not_before_ns[cur] = nb;
    }
    int next = c->plan.attempt + 1;
    if (next >= c->plan.n_attempts) {
        if (c->plan.n_attempts > 1)
            log_info("request %s: attempt %d on target '%s' failed (%s); no attempts left "
                     "(maxAttempts %d)",
                     c->request_id, next, c->plan.target->name, why, c->plan.n_attempts);
        return false;
    }
    const cfg_target *nt = c->plan.attempts[next % c->plan.n_plan];
    uint64_t wait_ms = route_backoff_ms(c->route->backoff_ms, next, &c->w->rng);
    uint64_t nb = c->plan.not_before_ns[next % c->plan.n_plan];
    if (nb > now && (nb - now + 999999u) / 1000000u > wait_ms)
        wait_ms = (nb - now + 999999u) / 1000000u;
    uint64_t limit = ROUTE_RETRY_AFTER_MAX_MS;
    if (nt->total_timeout_s > 0 && (uint64_t)nt->total_timeout_s * 1000u < limit)
        limit = (uint64_t)nt->total_timeout_s * 1000u;
    if (wait_ms > limit) {
        log_info("request %s: attempt %d on target '%s' failed (%s); not retrying: the wait for "
                 "'%s' would be %llu ms, over the %llu ms limit",
                 c->request_id, next, c->plan.target->name, why, nt->name,
                 (unsigned long long)wait_ms, (unsigned long long)limit);
        return false;
    }
    log_info("request %s: attempt %d on target '%s' failed (%s); retrying on '%s' in %llu ms",
             c->request_id, next, c->plan.target->name, why, nt->name, (unsigned long long)wait_ms);
    attempt_reset(c);
    uv_update_time(c->w->loop); /* the pause counts from now, not from this loop turn's start */
    pl_call_timer(c, wait_ms, on_backoff);
    return true;
}

/* The provider's own error text (its error.message), or "no details". */
static const char *provider_text(const pl_call *c, char *out, size_t outlen)
{
    provider_error_message(c->upstream.resp.data, c->upstream.resp.len, out, outlen);
    return out[0] ? out : "no details";
}

/* A 503 with a valid Retry-After reaches the client as a 503 with that Retry-After (not the
 * usual 502): the provider said when to come back. */
static bool fail_unavailable(pl_call *c, upstream_req *u, upstream_result res, int status)
{
    const char *ra =
        res == UPSTREAM_OK && status == 503 ? upstream_header_get(u, "retry-after") : NULL;
    if (!ra || route_retry_after_ms(ra, clock_wall_ms()) < 0) return false;
    char pmsg[PROVIDER_ERROR_MESSAGE_MAX];
    http_header h = {STR_LIT("Retry-After"), str_c(ra)};
    pl_fail_headers(c, 503, &h, 1, "server_error", "upstream_overloaded", NULL,
                    "Model target '%s' is unavailable (HTTP 503, Retry-After: %s): %s",
                    c->plan.target->name, ra, provider_text(c, pmsg, sizeof pmsg));
    return true;
}

/* Maps a failed attempt to the client's error (no more attempts, nothing streamed yet). The
 * message says what failed in the caller's terms (target, status, timeout); what the upstream
 * client reported (URLs, addresses, system errors) goes to the log with the request id. */
/* A provider's rate-limit header is passed on only when it looks like one: short, and printable
 * ASCII (a 20 KB or control-byte value would break the client's HTTP parser). */
static bool header_value_relayable(const char *v)
{
    size_t i = 0;
    for (; v[i]; i++)
        if (i >= 128 || (unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) return false;
    return true;
}

/* pe: the mapped error of a target that does not speak OpenAI (NULL for those that do). */
static void fail_upstream(pl_call *c, upstream_req *u, upstream_result res, int status,
                          const char *errmsg, const provider_error *pe)
{
    const cfg_target *t = c->plan.target;
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
            if (v && header_value_relayable(v)) h[n++] = (http_header){str_c(names[i]), str_c(v)};
        }
        provider_error_message(c->upstream.resp.data, c->upstream.resp.len, pmsg, sizeof pmsg);
        pl_fail_headers(c, 429, h, n,
                        pe ? pe->type
                           : provider_rate_limit_type(c->upstream.resp.data, c->upstream.resp.len),
                        "rate_limit_exceeded", NULL, "Model target '%s' is rate limited: %s", tn,
                        pmsg[0] ? pmsg : "HTTP 429");
        return;
    }
    if (pe) { /* another family's error: never relayed as it is */
        bool client = status >= 400 && status < 500;
        pl_fail(c,
                client                           ? status
                : status == 503 || status == 504 ? status
                                                 : 502,
                pe->type,
                pe->code ? pe->code
                : client ? "upstream_rejected"
                         : "upstream_error",
                NULL, "Model target '%s' %s (HTTP %d): %s", tn,
                client ? "rejected the request" : "failed", status,
                provider_text(c, pmsg, sizeof pmsg));
        return;
    }
    if (status >= 400 && status < 500) {
        /* the provider's own client error: relay it when it is already JSON */
        json_t *doc = json_loadb(c->upstream.resp.data ? c->upstream.resp.data : "",
                                 c->upstream.resp.len, 0, NULL);
        bool relay = doc && json_is_object(json_object_get(doc, "error"));
        json_decref(doc);
        if (relay) {
            c->error = arena_strdup(c->pool, provider_text(c, pmsg, sizeof pmsg));
            pl_finish(c, status, &pl_json_ct, 1, c->upstream.resp.data, c->upstream.resp.len);
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
    if (c->upstream.native) { /* the provider's events read so far, then the gateway's own */
        pl_client_write(c, NULL, 0);
        c->upstream.native = false;
    }
    size_t len;
    char *s = pl_error_body(type, code, NULL, msg, &len);
    buf ev = BUF_INIT;
    buf_puts(&ev, "data: ");
    buf_append(&ev, s, len);
    buf_puts(&ev, "\n\n");
    free(s);
    pl_client_write(c, ev.data, ev.len);
    buf_free(&ev);
    c->error = arena_strdup(c->pool, msg);
    if (c->status < 400) c->status = 502; /* a caller may have set the status to log */
    pl_finish_stream(c);
}

static void done_in(pl_call *c, upstream_req *u, upstream_result res, int status,
                    const char *errmsg)
{
    c->upstream.req = NULL; /* finished: no cancel from here on */
    c->upstream.upstream_us = (clock_mono_ns() - c->upstream.up_start_ns) / 1000u;
    bool ok = res == UPSTREAM_OK && status >= 200 && status < 300;
    pl_attempt_end(c, ok, upstream_ttfb_us(u));
    health_observe(&c->rt->health[c->plan.target->index], c->plan.target, res, status);
    free(c->upstream.up_body);
    c->upstream.up_body = NULL;

    if (ok && !c->stream) {
        if (c->upstream.passthrough) { /* relayed: the end, and the usage from the tail kept */
            provider_parse_usage(c->upstream.resp.data ? c->upstream.resp.data : "",
                                 c->upstream.resp.len, &c->upstream.usage);
            usage_settle(c, NULL, 0);
            pl_resume(c);
            return;
        }
        if (!starts_like_json(c->upstream.resp.data, c->upstream.resp.len)) {
            refuse_not_json(c);
            return;
        }
        if (c->endpoint == PL_EP_COUNT_TOKENS) { /* the provider's count, relayed as it is */
            json_t *a = json_decode_fast(c->upstream.resp.data, c->upstream.resp.len, NULL, 0);
            bool good = json_is_integer(json_object_get(a, "input_tokens")) &&
                        json_integer_value(json_object_get(a, "input_tokens")) >= 0;
            json_decref(a);
            if (!good) {
                refuse_answer(c, "invalid_upstream_response",
                              "Model target '%s' answered count_tokens without a non-negative "
                              "integer input_tokens.",
                              c->plan.target->name);
                return;
            }
            c->upstream.usage_source = "none"; /* counting uses no tokens */
            pl_resume(c);
            return;
        }
        provider_usage usage = {0};
        if (c->upstream.native) { /* the caller's family: relayed as it came */
            provider_messages_usage(c->upstream.resp.data, c->upstream.resp.len, &usage);
        } else if (!provider_speaks_openai(
                       c->plan.target)) { /* the provider's format -> canonical */
            char why[256];
            size_t n = 0;
            char *a = c->endpoint == PL_EP_EMBEDDINGS
                          ? provider_embeddings_answer(c->plan.target, c->upstream.resp.data,
                                                       c->upstream.resp.len, c->model, &n, why,
                                                       sizeof why)
                          : provider_chat_answer(c->plan.target, c->upstream.resp.data,
                                                 c->upstream.resp.len, c->model, &n, &usage, why,
                                                 sizeof why);
            if (!a) {
                refuse_answer(c, "invalid_upstream_response",
                              "Model target '%s' sent an answer that cannot be read: %s.",
                              c->plan.target->name, why);
                return;
            }
            buf_reset(&c->upstream.resp);
            buf_append(&c->upstream.resp, a, n);
            free(a);
        }
        if (usage.present) /* the adapter's own counts: the answer is not read again */
            c->upstream.usage = usage;
        else
            provider_parse_usage(c->upstream.resp.data, c->upstream.resp.len, &c->upstream.usage);
        if (c->ctx.ctx_store) {
            char why[320];
            if (!pl_context_whole_answer(c, c->upstream.resp.data ? c->upstream.resp.data : "",
                                         c->upstream.resp.len, why, sizeof why)) {
                refuse_answer(c, "invalid_upstream_response",
                              "Model target '%s' sent an answer that cannot be recorded: %s.",
                              c->plan.target->name, why);
                return;
            }
            if (!c->upstream.usage.present) {
                buf t = BUF_INIT;
                pl_context_answer_text(c, &t);
                usage_settle(c, t.data ? t.data : "", t.len);
                buf_free(&t);
            } else {
                usage_settle(c, NULL, 0);
            }
            pl_resume(c);
            return;
        }
        usage_settle(c, NULL, 0);
        pl_resume(c);
        return;
    }
    if (ok) {
        if (c->upstream.xs &&
            c->upstream.up_raw.len) { /* the provider's last event without its blank line */
            if (!translate_events(c, NULL, 0, true) || !relay_events(c)) return;
        }
        if (c->upstream.resp.len) { /* a last event without its blank line */
            if (!c->upstream.stream_started &&
                starts_like_json(c->upstream.resp.data, c->upstream.resp.len)) {
                refuse_answer(c, "invalid_upstream_response",
                              "Model target '%s' answered a streamed request with a JSON body "
                              "instead of an event stream.",
                              c->plan.target->name);
                return;
            }
            buf_append(&c->upstream.resp, "\n\n", 2);
            if (!relay_events(c)) return;
        }
        if (!c->upstream.stream_started && c->upstream.resp_total == 0) {
            /* a 2xx with no body at all (a 204, say) is not a stream: nothing to relay */
            refuse_answer(c, "invalid_upstream_response",
                          "Model target '%s' answered a streamed request with an empty body.",
                          c->plan.target->name);
            return;
        }
        if (c->upstream.up_error_event) {
            /* plain route: the provider's own error event, relayed as sent, is the end */
            c->status = 502;
            c->error = arena_strdup(c->pool, "the provider ended its stream with an error event");
            pl_finish_stream(c);
            return;
        }
        if (!c->upstream.done_seen && !c->upstream.finish_seen) {
            /* the body ended cleanly, but the answer did not: no finish_reason, no [DONE] */
            log_warn("request %s: model target '%s' ended its stream without a finish_reason "
                     "or [DONE]",
                     c->request_id, c->plan.target->name);
            refuse_answer(c, "upstream_error",
                          "Model target '%s' ended its stream before the answer was complete.",
                          c->plan.target->name);
            return;
        }
        stream_begin(c);
        if (!c->upstream.usage.present) {
            if (c->ctx.ctx_store) {
                buf t = BUF_INIT;
                pl_context_answer_text(c, &t);
                usage_settle(c, t.data ? t.data : "", t.len);
                buf_free(&t);
            } else {
                usage_settle(c,
                             c->upstream.count_text
                                 ? (c->upstream.text.data ? c->upstream.text.data : "")
                                 : NULL,
                             c->upstream.text.len);
            }
        } else {
            usage_settle(c, NULL, 0);
        }
        pl_resume(c);
        return;
    }

    obs_upstream_error(c->w->obs, c->plan.target->name,
                       res == UPSTREAM_CONNECT_FAILED ? "connect"
                       : res == UPSTREAM_TIMEOUT      ? "timeout"
                       : res == UPSTREAM_ERROR        ? "transport"
                                                      : "status");
    if (c->upstream.stream_started &&
        c->upstream.passthrough) { /* a relayed JSON body cannot carry an event */
        c->error = arena_strdup(c->pool, res == UPSTREAM_OK ? "bad status" : errmsg ? errmsg : "");
        c->status = 502;
        pl_abort_stream(c);
        return;
    }
    if (c->upstream.stream_started) {
        char msg[512];
        log_warn("request %s: model target '%s' failed mid-stream: %s", c->request_id,
                 c->plan.target->name,
                 res == UPSTREAM_OK ? "bad status"
                 : errmsg           ? errmsg
                                    : "");
        snprintf(msg, sizeof msg, "Model target '%s' failed mid-stream (%s).", c->plan.target->name,
                 res == UPSTREAM_TIMEOUT ? "it timed out" : "the connection failed");
        pl_stream_fail(c, "server_error",
                       res == UPSTREAM_TIMEOUT ? "upstream_timeout" : "upstream_error", msg);
        return;
    }
    /* another family's error answer: its status in the client's terms (Anthropic 529 -> 503)
     * and the OpenAI type for it */
    provider_error pe = {0};
    bool mapped = res == UPSTREAM_OK && !provider_speaks_openai(c->plan.target);
    if (mapped) {
        provider_map_error(c->plan.target, status,
                           c->upstream.resp.data ? c->upstream.resp.data : "", c->upstream.resp.len,
                           &pe);
        status = pe.status;
    }
    if (retryable(c, res, status) && retry_later(c, u, res, status, errmsg)) return;
    if (fail_unavailable(c, u, res, status)) return;
    fail_upstream(c, u, res, status, errmsg ? errmsg : "", mapped ? &pe : NULL);
}

/* The upstream client's callbacks: each holds the call while it runs (driver.c). */
static bool on_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    pl_call *c = udata;
    pl_hold(c);
    bool consumed = data_in(c, data, len);
    pl_unhold(c);
    return consumed;
}

static void on_headers(upstream_req *u, int status, void *udata)
{
    pl_call *c = udata;
    pl_hold(c);
    headers_in(c, u, status);
    pl_unhold(c);
}

static void on_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata)
{
    pl_call *c = udata;
    pl_hold(c);
    done_in(c, u, res, status, errmsg);
    pl_unhold(c);
}

/* The caller's anthropic-beta header (NUL-terminated in the request's arena), or NULL. */
static const char *beta_header(pl_call *c)
{
    str v = http_request_header(c->r, "anthropic-beta");
    return v.p && v.n ? arena_strndup(c->r->pool, v.p, v.n) : NULL;
}

/* the request's document, decoded once; false when it cannot be (the call is answered 400) */
static bool body_or_fail(pl_call *c)
{
    if (pl_call_body(c)) return true;
    pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL,
            "The request body could not be read as a JSON document.");
    return false;
}

void pl_proxy_start(pl_call *c)
{
    const cfg_target *t = c->plan.target;
    /* the client's own bytes go upstream when they are the target's family and unchanged;
     * otherwise the adapter builds the body from the document (rewritten by the context stage,
     * another family's, or a Mock target's) */
    bool forward = !c->body_modified && provider_takes_raw(t);
    /* another family's target may translate the client's bytes without a document (the common
     * shapes, see provider_build_chat_raw); a body it declines, or one decoded already, goes by
     * the document */
    bool splice = !forward && !c->body_modified && !c->body && provider_splices(t) &&
                  c->endpoint != PL_EP_EMBEDDINGS;
    /* an Anthropic caller and an Anthropic target: the caller's bytes, nothing translated,
     * unless the context stage rewrote the request */
    bool native = c->family == PL_FAMILY_ANTHROPIC && c->endpoint == PL_EP_MESSAGES && c->probed &&
                  t->type == TARGET_ANTHROPIC && !c->ctx.ctx_store;
    bool count = c->endpoint == PL_EP_COUNT_TOKENS; /* the target counts (provider_counts_tokens) */
    if (c->deferred && !native && !count) { /* cannot happen: the route kept Anthropic targets */
        pl_refuse_deferred(c);
        return;
    }
    c->upstream.native = native;
    buf_reset(&c->upstream.native_out);
    provider_stream_free(c->upstream.xs);
    c->upstream.xs = NULL;
    if (!forward && !splice && !native && !count && !body_or_fail(c)) return;
    const chat_probe *p = &c->probe;
    provider_raw_body raw = {.body = c->r->body.p,
                             .len = c->r->body.n,
                             .model = c->model,
                             .model_start = p->model_start,
                             .model_end = p->model_end,
                             .object_end = p->object_end,
                             .keys = p->top_keys,
                             .n_keys = p->n_top_keys,
                             .stream = c->stream,
                             .tape = c->tape.complete ? &c->tape : NULL};
    bool raw_body = forward || splice || native || count;
    pl_send s = {.target = t,
                 .doc = raw_body ? NULL : c->body,
                 .raw = raw_body ? &raw : NULL,
                 .native = native,
                 .count_tokens = count,
                 .beta = native || count ? beta_header(c) : NULL,
                 .embeddings = c->endpoint == PL_EP_EMBEDDINGS,
                 .request_id = c->request_id,
                 .pool = c->r->pool,
                 .udata = c,
                 .on_headers = on_headers,
                 .on_data = on_data,
                 .on_done = on_done};
    pl_sent sent;
    char err[256];
    c->upstream.up_start_ns = clock_mono_ns();
    int rc = pl_send_chat(c->w->up, &s, &sent, err, sizeof err);
    if (rc == PROVIDER_EDECLINED) {
        if (!body_or_fail(c)) return;
        s.doc = c->body;
        s.raw = NULL;
        rc = pl_send_chat(c->w->up, &s, &sent, err, sizeof err);
    }
    switch (rc) {
    case 0:
        break;
    case PROVIDER_EREQUEST:
        pl_fail(c, 400, "invalid_request_error", "unsupported_for_target", sent.err_param, "%s",
                err);
        return;
    case PL_SEND_FAILED:
        pl_fail(c, 502, "server_error", "upstream_unavailable", NULL,
                "Could not start a request to model target '%s'.", t->name);
        return;
    default:
        if (c->endpoint == PL_EP_EMBEDDINGS) /* the model exists, the API does not */
            pl_fail(c, 400, "invalid_request_error", "model_not_supported", "model",
                    "Model '%s' cannot make embeddings: %s.", c->model, err);
        else
            pl_fail(c, 501, "invalid_request_error", "target_type_unsupported", NULL, "%s", err);
        return;
    }
    c->upstream.req = sent.req;
    c->upstream.up_body = sent.body;
    c->upstream.usage_injected = sent.usage_added;
    if (!provider_speaks_openai(t) && c->stream) {
        c->upstream.xs = provider_stream_new(t, c->model);
        if (!c->upstream.xs) abort();
        /* the translation always ends with a usage chunk: the client gets it when it asked */
        c->upstream.usage_injected = !c->include_usage;
    }
    /* no usage will come: the text is collected to count it (context routes assemble it) */
    c->upstream.count_text =
        c->stream && !c->include_usage && !c->upstream.usage_injected && !c->ctx.ctx_store;
}

/* The respond phase: the answer the upstream phase held, or the end of the stream it relayed
 * (after the context-commit phase, whose result decides it on a route with a context). */
pl_step pl_phase_respond(pl_call *c)
{
    if (c->upstream.passthrough) { /* a whole answer relayed as it came: its end */
        c->status = 200;
        pl_finish_stream(c);
        return PL_FINISH;
    }
    if (c->ctx.ctx_store) {
        if (c->stream)
            pl_context_finish_stream(c, c->ctx.commit_rc);
        else
            pl_context_finish_whole(c, c->ctx.commit_rc);
        return PL_FINISH;
    }
    if (!c->stream) {
        pl_finish(c, 200, &pl_json_ct, 1, c->upstream.resp.data ? c->upstream.resp.data : "",
                  c->upstream.resp.len);
        return PL_FINISH;
    }
    /* a provider that ends with a finish_reason but no [DONE]: the client gets the [DONE]
     * OpenAI's wire format promises */
    if (!c->upstream.done_seen) relay_write(c, "data: [DONE]\n\n", 14);
    c->status = 200;
    pl_finish_stream(c);
    return PL_FINISH;
}
