/* server.c — the HTTP/1.1 front door (see server.h). http_parser does the byte-level parsing;
 * everything about connections is ours: keep-alive, strictly ordered pipelining, chunked request
 * bodies, Expect: 100-continue, size limits, timeouts, lingering close, streaming with write-queue
 * backpressure, and TLS through memory BIOs on the same loop. On top of http_parser (Debian builds
 * it without its strict checks) we answer framing edge cases as nginx does (docs/gateway.md, "HTTP
 * limits and edge cases"), decode gzip/deflate request bodies with zlib, and keep a per-process
 * connection budget that closes the oldest idle connection at the limit.
 *
 * Mallocs per request on the hot path (keep-alive connection, no TLS):
 *   2  arena_new(4096): the arena header and its first block; it holds the http_request, the
 *      target, header names/values and the body. A request larger than ~4 KiB adds blocks.
 *   0  reading: one 64 KiB read buffer per server is handed to every read; a connection copies
 *      bytes only when they must outlive the read (pipelined requests behind one in flight).
 *   0  parsing scratch: the URL and header pieces collect in per-connection buffers that keep
 *      their capacity across requests.
 *   0 or 1 per response (and per stream chunk): uv_try_write sends head+body straight from the
 *      caller's memory; only what the kernel did not take is copied into one block holding the
 *      uv_write_t and the bytes.
 * Per connection (not per request): the http_conn itself, and for TLS the SSL object and BIOs.
 *
 * Lifetime rules that make use-after-free impossible:
 *   - a connection is freed only when both its uv handles have closed AND no request it
 *     dispatched is still owned by a handler (conn_maybe_free);
 *   - handle closes are always asynchronous, so no handler callback can free the connection
 *     under the code that called it;
 *   - on_abort runs from the TCP handle's close callback with that handle still counted open,
 *     so a handler that finishes the request inside on_abort cannot free the connection early. */
#include "http/server.h"

#include <errno.h>
#include <http_parser.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/utf8.h"
#include "http/tls.h"

enum {
    HTTP_LISTEN_BACKLOG = 1024,
    HTTP_READ_BUF_SIZE = 64 * 1024,
    HTTP_TLS_BUF_SIZE = 64 * 1024,
    /* pipelined bytes held behind a request in flight before we stop reading the socket */
    HTTP_PENDING_MAX = 64 * 1024,
    /* after our FIN, how long we keep reading (and discarding) so the peer sees our last
     * response instead of a reset caused by its unread bytes */
    HTTP_LINGER_MS = 2000,
    HTTP_FIRST_HEADERS = 16,
    /* err_status that closes the connection without an answer (HTTP/0.9) */
    HTTP_CLOSE_SILENTLY = -1,
};

typedef enum { CODING_NONE, CODING_GZIP, CODING_DEFLATE } body_coding;

typedef enum {
    CONN_OPEN,   /* reading and answering */
    CONN_LINGER, /* last response queued, FIN after it, discarding input until EOF or timeout */
    CONN_CLOSED  /* uv_close issued on both handles */
} conn_state;

typedef enum {
    PHASE_IDLE,      /* waiting for the first byte of a request; idle timeout */
    PHASE_HEADERS,   /* request line and headers arriving; header timeout */
    PHASE_BODY,      /* body arriving; body timeout */
    PHASE_IN_FLIGHT, /* dispatched; the handler owns the request; no timer */
} conn_phase;

typedef struct http_write_req {
    uv_write_t req;
    http_conn *conn;
    char data[]; /* the bytes the kernel did not take at once */
} http_write_req;

struct http_server {
    uv_loop_t *loop;
    uv_tcp_t listener;
    int port;
    http_limits limits;
    http_handler_fn handler;
    void *handler_ctx;
    SSL_CTX *tls_ctx; /* NULL: plain HTTP */

    http_conn *conns; /* doubly linked list of every open connection */
    size_t n_conns;
    size_t active; /* requests dispatched and not finished */

    bool draining, listener_closed, drain_done_called;
    void (*drain_done)(void *ctx);
    void *drain_ctx;

    char *read_buf; /* shared by every connection: reads are processed before the next one */
    char *tls_in;   /* plaintext out of SSL_read, parsed in place like read_buf */
    char *tls_out;  /* ciphertext out of the write BIO on its way to the socket */
    buf head;       /* response head scratch, copied by conn_send when it must outlive a call */

    time_t date_sec;
    char date_line[48]; /* "Date: ...\r\n", rebuilt once per second */

    uint64_t id_seed, id_counter;

    http_conn_budget *budget;         /* NULL: no connection limit */
    http_conn *idle_head, *idle_tail; /* idle connections, oldest first (closed at the limit) */
    time_t refuse_logged;             /* last "refused at the limit" warning, once a second */
};

struct http_conn {
    http_server *srv;
    http_conn *prev, *next;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    http_parser parser;
    conn_state state;
    conn_phase phase;
    int handles_open;
    bool pumping;      /* inside the parse loop: nested pumps return at once */
    bool read_stopped; /* too many pipelined bytes held */
    bool broken;       /* a write failed: later writes are dropped */
    bool abort_sent;
    bool want_drain; /* a stream write reported "pause"; on_drain is owed */
    bool resp_keep;  /* the response under way keeps the connection */
    bool resp_chunked;
    bool resp_no_body; /* HEAD, 1xx, 204, 304 */
    bool http10;       /* request under way is HTTP/1.0 */

    http_request *cur;      /* being parsed */
    http_request *ready;    /* parsed completely, about to be dispatched */
    http_request *inflight; /* dispatched, owned by the handler */

    /* parsing scratch reused across requests */
    buf url, hfield, hval;
    int hstate; /* 0 none, 1 in a header name, 2 in a header value */
    size_t hcap;
    size_t head_bytes; /* request line + headers so far, counted by us (see check_header_size) */
    char *body;
    size_t body_len, body_cap;

    buf pend; /* unparsed bytes that must survive the read that brought them */
    size_t pend_off;

    int err_status;
    const char *err_code;
    char err_msg[200];

    http_tls_session *tls;
    char remote_addr[64];

    http_conn *idle_prev, *idle_next;
    bool in_idle; /* on the server's idle list */
    bool counted; /* holds a place in the connection budget */

    /* the bytes http_parser_execute runs over, for the checks it does not make itself (obs-fold,
     * the CRLF after chunk data), and the last bytes of the previous run */
    const char *exec_start, *exec_end;
    char tail[8];
    size_t tail_len;
    uint64_t chunk_left; /* bytes of the current chunk still to come */
    int crlf_need;       /* 2: CR then LF must follow the chunk data; 1: LF; 0: nothing */
    const char *scan_at; /* framing bytes of this run before it are checked for bare CRs */
    bool cr_pending;     /* the last framing byte of the previous run was a CR */
    int lit_idx;         /* -1, or how much of "HTTP/" after the request target is checked */
    size_t raw_len;      /* body bytes as received (before decoding) */
    body_coding coding;  /* Content-Encoding of the request body under way */
    bool z_done;         /* the compressed stream ended */
    z_stream *zs;        /* allocated on the first encoded body, reused */
};

static void conn_close(http_conn *c);
static void conn_close_graceful(http_conn *c);
static int check_version_literal(http_conn *c, const char *p);
static void conn_pump(http_conn *c);
static void conn_send(http_conn *c, const uv_buf_t *bufs, unsigned n);

/* ---------- small pieces ---------- */

void http_limits_default(http_limits *l)
{
    l->max_header_bytes = 32 * 1024;
    l->max_body_bytes = 1024 * 1024;
    l->header_timeout_ms = 10000;
    l->body_timeout_ms = 60000;
    l->idle_timeout_ms = 60000;
    l->write_high_watermark = 256 * 1024;
    l->write_low_watermark = 64 * 1024;
}

/* A zero field means "not set" and takes its default. */
static void limits_fill(http_limits *dst, const http_limits *src)
{
    http_limits d;
    http_limits_default(&d);
    *dst = *src;
    if (!dst->max_header_bytes) dst->max_header_bytes = d.max_header_bytes;
    if (!dst->max_body_bytes) dst->max_body_bytes = d.max_body_bytes;
    if (!dst->header_timeout_ms) dst->header_timeout_ms = d.header_timeout_ms;
    if (!dst->body_timeout_ms) dst->body_timeout_ms = d.body_timeout_ms;
    if (!dst->idle_timeout_ms) dst->idle_timeout_ms = d.idle_timeout_ms;
    if (!dst->write_high_watermark) dst->write_high_watermark = d.write_high_watermark;
    if (!dst->write_low_watermark) dst->write_low_watermark = d.write_low_watermark;
    if (dst->write_low_watermark > dst->write_high_watermark)
        dst->write_low_watermark = dst->write_high_watermark;
}

static const char *server_date_line(http_server *s)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t now = time(NULL);
    if (now != s->date_sec) {
        struct tm tm;
        gmtime_r(&now, &tm);
        snprintf(s->date_line, sizeof s->date_line, "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                 days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour,
                 tm.tm_min, tm.tm_sec);
        s->date_sec = now;
    }
    return s->date_line;
}

/* 16 hex digits: splitmix64's finaliser over seed + counter * odd constant. Both steps are
 * bijections of 64-bit values, so ids never repeat within a server; the random seed keeps
 * servers (worker threads, processes) apart. */
static void server_new_request_id(http_server *s, char out[40])
{
    uint64_t x = s->id_seed + (++s->id_counter) * 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    x ^= x >> 31;
    static const char hex[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--, x >>= 4)
        out[i] = hex[x & 15];
    out[16] = 0;
}

static bool request_id_acceptable(str v)
{
    if (v.n == 0 || v.n > 39) return false;
    for (size_t i = 0; i < v.n; i++)
        if ((unsigned char)v.p[i] <= 0x20 || (unsigned char)v.p[i] >= 0x7f) return false;
    return true;
}

static const char *status_reason(int status)
{
    const char *r = http_status_str((enum http_status)status);
    return (r && r[0] != '<') ? r : "Unknown";
}

static size_t conn_queued(http_conn *c)
{
    return uv_stream_get_write_queue_size((uv_stream_t *)&c->tcp);
}

/* ---------- writing ---------- */

static void on_write_done(uv_write_t *req, int status)
{
    http_write_req *w = (http_write_req *)req;
    http_conn *c = w->conn;
    free(w);
    if (c->state == CONN_CLOSED) return;
    if (status < 0) {
        log_debug("http: write to %s failed: %s", c->remote_addr, uv_strerror(status));
        c->broken = true;
        conn_close(c);
        return;
    }
    if (c->want_drain && c->inflight && conn_queued(c) < c->srv->limits.write_low_watermark) {
        c->want_drain = false;
        http_request *r = c->inflight;
        if (r->on_drain) r->on_drain(r); /* may finish r; c stays valid (closes are async) */
    }
}

/* Sends bytes to the socket: straight from the callers' memory when the kernel takes them,
 * otherwise one block holding the uv_write_t and the rest. */
static void conn_send_raw(http_conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->state == CONN_CLOSED || c->broken) return;
    size_t total = 0;
    for (unsigned i = 0; i < n; i++)
        total += bufs[i].len;
    if (total == 0) return;
    size_t done = 0;
    if (conn_queued(c) == 0) {
        int w = uv_try_write((uv_stream_t *)&c->tcp, bufs, n);
        if (w >= 0) {
            done = (size_t)w;
        } else if (w != UV_EAGAIN) {
            log_debug("http: write to %s failed: %s", c->remote_addr, uv_strerror(w));
            c->broken = true;
            conn_close(c);
            return;
        }
    }
    if (done == total) return;
    size_t rest = total - done;
    http_write_req *w = malloc(sizeof *w + rest);
    if (!w) {
        log_error("http: out of memory queueing %zu bytes for %s; closing it", rest,
                  c->remote_addr);
        c->broken = true;
        conn_close(c);
        return;
    }
    w->conn = c;
    size_t skip = done, at = 0;
    for (unsigned i = 0; i < n; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(w->data + at, bufs[i].base + skip, len - skip);
        at += len - skip;
        skip = 0;
    }
    uv_buf_t b = uv_buf_init(w->data, (unsigned)rest);
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write_done);
    if (rc < 0) {
        free(w);
        log_debug("http: write to %s failed: %s", c->remote_addr, uv_strerror(rc));
        c->broken = true;
        conn_close(c);
    }
}

static void conn_flush_tls(http_conn *c)
{
    char *out = c->srv->tls_out;
    size_t n;
    while ((n = http_tls_output(c->tls, out, HTTP_TLS_BUF_SIZE)) > 0) {
        uv_buf_t b = uv_buf_init(out, (unsigned)n);
        conn_send_raw(c, &b, 1);
    }
}

static void conn_send(http_conn *c, const uv_buf_t *bufs, unsigned n)
{
    if (c->state == CONN_CLOSED || c->broken) return;
    if (!c->tls) {
        conn_send_raw(c, bufs, n);
        return;
    }
    for (unsigned i = 0; i < n; i++) {
        if (!http_tls_write(c->tls, bufs[i].base, bufs[i].len)) {
            log_debug("http: TLS write to %s failed", c->remote_addr);
            c->broken = true;
            conn_close(c);
            return;
        }
    }
    conn_flush_tls(c);
}

/* Server-generated error (parse errors, limits, timeouts): OpenAI error JSON, then close. */
static void conn_fail(http_conn *c)
{
    http_server *s = c->srv;
    if (c->err_status == HTTP_CLOSE_SILENTLY) {
        log_debug("http: closing the connection from %s: %s", c->remote_addr, c->err_msg);
        conn_close_graceful(c);
        return;
    }
    int status = c->err_status ? c->err_status : 400;
    char id[40];
    if (c->cur && c->cur->request_id[0])
        memcpy(id, c->cur->request_id, sizeof id);
    else
        server_new_request_id(s, id);

    /* the message may quote the client's bytes: repaired, so that it always encodes */
    buf msg = BUF_INIT;
    utf8_append_repaired(&msg, c->err_msg, strlen(c->err_msg), 1024);
    json_t *o = json_pack("{s:{s:s%, s:s, s:s, s:n}}", "error", "message", msg.data ? msg.data : "",
                          msg.len, "type", status >= 500 ? "server_error" : "invalid_request_error",
                          "code", c->err_code ? c->err_code : "bad_request", "param");
    buf_free(&msg);
    char *body = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    const char *b = body ? body
                         : "{\"error\":{\"message\":\"The request could not be read.\",\"type\":"
                           "\"invalid_request_error\",\"param\":null,\"code\":\"bad_request\"}}";
    size_t blen = strlen(b);

    buf *h = &s->head;
    buf_reset(h);
    buf_printf(h, "HTTP/1.1 %d %s\r\n", status, status_reason(status));
    buf_puts(h, server_date_line(s));
    buf_printf(h,
               "X-Request-Id: %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
               "Connection: close\r\n\r\n",
               id, blen);
    uv_buf_t bufs[2] = {uv_buf_init(h->data, (unsigned)h->len),
                        uv_buf_init((char *)b, (unsigned)blen)};
    log_debug("http: %d to %s: %s", status, c->remote_addr, c->err_msg);
    conn_send(c, bufs, 2);
    free(body);
    conn_close_graceful(c);
}

/* Records an error found inside a parser callback; the callback pauses the parser and the
 * code that called http_parser_execute sends the response. */
static int conn_fail_later(http_conn *c, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int conn_fail_later(http_conn *c, int status, const char *code, const char *fmt, ...)
{
    if (!c->err_status) {
        c->err_status = status;
        c->err_code = code;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err_msg, sizeof c->err_msg, fmt, ap);
        va_end(ap);
    }
    /* pausing is only legal from a clean state (http_parser asserts it) */
    if (HTTP_PARSER_ERRNO(&c->parser) == HPE_OK) http_parser_pause(&c->parser, 1);
    return 0;
}

/* ---------- closing ---------- */

static void server_check_drained(http_server *s)
{
    if (s->draining && s->listener_closed && s->n_conns == 0 && !s->drain_done_called) {
        s->drain_done_called = true;
        if (s->drain_done) s->drain_done(s->drain_ctx); /* may free s */
    }
}

static void conn_free(http_conn *c)
{
    http_server *s = c->srv;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    s->n_conns--;
    if (c->cur) arena_free(c->cur->pool);
    if (c->ready) arena_free(c->ready->pool);
    buf_free(&c->url);
    buf_free(&c->hfield);
    buf_free(&c->hval);
    buf_free(&c->pend);
    http_tls_session_free(c->tls);
    if (c->zs) {
        inflateEnd(c->zs);
        free(c->zs);
    }
    free(c);
    server_check_drained(s);
}

static void conn_maybe_free(http_conn *c)
{
    if (c->handles_open == 0 && !c->inflight) conn_free(c);
}

static void on_conn_tcp_closed(uv_handle_t *h)
{
    http_conn *c = h->data;
    http_request *r = c->inflight;
    if (r && !c->abort_sent) {
        c->abort_sent = true;
        if (r->on_abort) r->on_abort(r); /* may finish r; handles_open still counts us */
    }
    c->handles_open--;
    conn_maybe_free(c);
}

static void on_conn_timer_closed(uv_handle_t *h)
{
    http_conn *c = h->data;
    c->handles_open--;
    conn_maybe_free(c);
}

static void idle_enter(http_conn *c)
{
    http_server *s = c->srv;
    if (c->in_idle) return;
    c->in_idle = true;
    c->idle_next = NULL;
    c->idle_prev = s->idle_tail;
    if (s->idle_tail)
        s->idle_tail->idle_next = c;
    else
        s->idle_head = c;
    s->idle_tail = c;
}

static void idle_leave(http_conn *c)
{
    http_server *s = c->srv;
    if (!c->in_idle) return;
    c->in_idle = false;
    if (c->idle_prev)
        c->idle_prev->idle_next = c->idle_next;
    else
        s->idle_head = c->idle_next;
    if (c->idle_next)
        c->idle_next->idle_prev = c->idle_prev;
    else
        s->idle_tail = c->idle_prev;
    c->idle_prev = c->idle_next = NULL;
}

static void conn_close(http_conn *c)
{
    if (c->state == CONN_CLOSED) return;
    idle_leave(c);
    if (c->counted) {
        c->counted = false; /* uv_close closes the socket at once: its place is free now */
        atomic_fetch_sub(&c->srv->budget->open, 1);
    }
    c->state = CONN_CLOSED;
    c->want_drain = false;
    uv_close((uv_handle_t *)&c->tcp, on_conn_tcp_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_timer_closed);
}

static void on_linger_timeout(uv_timer_t *t)
{
    conn_close(t->data);
}

static void on_conn_shutdown(uv_shutdown_t *req, int status)
{
    http_conn *c = req->data;
    if (c->state != CONN_LINGER) return;
    if (status < 0) {
        conn_close(c);
        return;
    }
    /* everything we wrote is out; give the peer a moment to read it and close its side */
    uv_timer_start(&c->timer, on_linger_timeout, HTTP_LINGER_MS, 0);
}

static void on_conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b);
static void on_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b);

/* Close after the queued response: FIN once it is written, read and discard until the peer
 * closes or HTTP_LINGER_MS passes. The idle timeout bounds the wait for a peer that stops
 * reading our response. */
static void conn_close_graceful(http_conn *c)
{
    if (c->state != CONN_OPEN) return;
    idle_leave(c);
    c->state = CONN_LINGER;
    if (c->cur) {
        arena_free(c->cur->pool);
        c->cur = NULL;
    }
    buf_free(&c->pend);
    c->pend_off = 0;
    if (c->tls) {
        http_tls_shutdown(c->tls);
        conn_flush_tls(c);
        if (c->state == CONN_CLOSED) return;
    }
    uv_timer_start(&c->timer, on_linger_timeout, c->srv->limits.idle_timeout_ms, 0);
    if (c->read_stopped) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read);
    }
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_conn_shutdown) < 0) conn_close(c);
}

/* ---------- parser callbacks ---------- */

/* http_parser 2.9.4 keeps its byte count in a local and stores parser->nread only when
 * http_parser_execute returns, so callbacks count the bytes they are handed themselves (plus
 * the fixed framing of each line); the caller of http_parser_execute also checks parser->nread,
 * which catches whitespace padding the callbacks never see. */
static int check_header_size(http_conn *c)
{
    size_t max = c->srv->limits.max_header_bytes;
    if (c->phase == PHASE_HEADERS && (c->head_bytes > max || c->parser.nread > max))
        return conn_fail_later(c, 431, "request_header_fields_too_large",
                               "request line and headers exceed the %zu-byte limit; send fewer "
                               "or shorter headers",
                               max);
    return 0;
}

static void on_conn_timer(uv_timer_t *t);

static int on_message_begin(http_parser *p)
{
    http_conn *c = p->data;
    arena *a = arena_new(4096);
    if (!a)
        return conn_fail_later(c, 503, "server_overloaded",
                               "the server is out of memory; retry later");
    http_request *r = arena_calloc(a, 1, sizeof *r);
    r->pool = a;
    r->conn = c;
    r->start_ns = clock_mono_ns();
    r->body = (str){"", 0};
    memcpy(r->remote_addr, c->remote_addr, sizeof r->remote_addr);
    c->cur = r;
    buf_reset(&c->url);
    buf_reset(&c->hfield);
    buf_reset(&c->hval);
    c->hstate = 0;
    c->hcap = 0;
    c->head_bytes = 16; /* method, spaces, "HTTP/1.1", CRLF */
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->raw_len = 0;
    c->chunk_left = 0;
    c->crlf_need = 0;
    c->coding = CODING_NONE;
    c->z_done = false;
    c->lit_idx = -1;
    idle_leave(c);
    c->phase = PHASE_HEADERS;
    uv_timer_start(&c->timer, on_conn_timer, c->srv->limits.header_timeout_ms, 0);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    buf_append(&c->url, at, len);
    c->head_bytes += len;
    /* http_parser sets 0.9 just before the last piece of a request line without a version */
    if (p->http_major == 0 && p->http_minor == 9)
        return conn_fail_later(c, HTTP_CLOSE_SILENTLY, "http_0_9",
                               "HTTP/0.9 request line (no version): not supported");
    if (at + len < c->exec_end && at[len] == ' ') {
        c->lit_idx = 0; /* the target ended: "HTTP/" comes next */
        check_version_literal(c, at + len);
        if (c->err_status) return 0;
    }
    return check_header_size(c);
}

static void commit_header(http_conn *c)
{
    http_request *r = c->cur;
    if (r->n_headers == c->hcap) {
        size_t ncap = c->hcap ? c->hcap * 2 : HTTP_FIRST_HEADERS;
        http_header *nh = arena_alloc(r->pool, ncap * sizeof *nh);
        if (r->n_headers) memcpy(nh, r->headers, r->n_headers * sizeof *nh);
        r->headers = nh;
        c->hcap = ncap;
    }
    char *name = arena_alloc(r->pool, c->hfield.len + 1);
    for (size_t i = 0; i < c->hfield.len; i++) {
        char ch = c->hfield.data[i];
        name[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch + 32) : ch;
    }
    name[c->hfield.len] = 0;
    size_t vlen = c->hval.len;
    while (vlen && (c->hval.data[vlen - 1] == ' ' || c->hval.data[vlen - 1] == '\t'))
        vlen--;
    const char *value = vlen ? arena_strndup(r->pool, c->hval.data, vlen) : "";
    r->headers[r->n_headers++] = (http_header){{name, c->hfield.len}, {value, vlen}};
    buf_reset(&c->hfield);
    buf_reset(&c->hval);
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    if (c->phase != PHASE_HEADERS) return 0; /* chunked trailers: ignored */
    if (c->hstate == 2) commit_header(c);
    if (c->hstate != 1) c->head_bytes += 4; /* ": " and CRLF */
    c->hstate = 1;
    c->head_bytes += len;
    buf_append(&c->hfield, at, len);
    /* http_parser takes "Name : v" with the space as part of the name; nginx and RFC 9112
     * refuse it (a proxy in front may read the header differently) */
    if (memchr(at, ' ', len) || memchr(at, '\t', len))
        return conn_fail_later(c, 400, "bad_request",
                               "whitespace in a header name (before the colon) is not allowed");
    return check_header_size(c);
}

/* The byte before at (stepping into the previous run's tail at the run's start), or -1. */
static int byte_before(const http_conn *c, const char *at, size_t back)
{
    size_t in_run = (size_t)(at - c->exec_start);
    if (back <= in_run) return (unsigned char)at[-(ptrdiff_t)back];
    back -= in_run;
    if (back > c->tail_len) return -1;
    return (unsigned char)c->tail[c->tail_len - back];
}

/* An obs-fold (a header line starting with SP or HT) continues the previous value: the value
 * piece is then preceded by whitespace and a line end, where a normal value has the colon. */
static bool value_is_folded(const http_conn *c, const char *at)
{
    for (size_t back = 1;; back++) {
        int ch = byte_before(c, at, back);
        if (ch == ' ' || ch == '\t') continue;
        return ch == '\n' || ch == '\r';
    }
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    if (c->phase != PHASE_HEADERS) return 0;
    /* (an empty value comes as a zero-length piece pointing at the next line: not a fold) */
    if (len && value_is_folded(c, at))
        return conn_fail_later(c, 400, "bad_request",
                               "header %.*s is folded over several lines (obs-fold); send it on "
                               "one line",
                               (int)(c->hfield.len > 64 ? 64 : c->hfield.len),
                               c->hfield.data ? c->hfield.data : "");
    c->hstate = 2;
    c->head_bytes += len;
    buf_append(&c->hval, at, len);
    return check_header_size(c);
}

static void request_split_target(http_request *r, const char *t, size_t n)
{
    r->target = (str){t, n};
    r->path = r->target;
    r->query = (str){"", 0};
    if (n && t[0] != '/') {
        /* absolute-form ("http://host/p?q") from proxies; "*" stays as it is */
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(t, n, 0, &u) == 0) {
            if (u.field_set & (1 << UF_PATH))
                r->path = (str){t + u.field_data[UF_PATH].off, u.field_data[UF_PATH].len};
            else
                r->path = STR_LIT("/");
            if (u.field_set & (1 << UF_QUERY))
                r->query = (str){t + u.field_data[UF_QUERY].off, u.field_data[UF_QUERY].len};
        }
        return;
    }
    const char *q = memchr(t, '?', n);
    const char *h = memchr(t, '#', n);
    const char *end = t + n;
    if (h && (!q || h < q)) q = NULL;
    if (h) end = h;
    if (q) {
        r->path = (str){t, (size_t)(q - t)};
        r->query = (str){q + 1, (size_t)(end - q - 1)};
    } else {
        r->path = (str){t, (size_t)(end - t)};
    }
}

/* nginx's host check, in short: not empty, no whitespace or control bytes, no path separator,
 * no "..". */
static bool host_acceptable(str h)
{
    if (h.n == 0) return false;
    for (size_t i = 0; i < h.n; i++) {
        unsigned char ch = (unsigned char)h.p[i];
        if (ch <= 0x20 || ch == 0x7f || ch == '/' || ch == '\\') return false;
        if (ch == '.' && i + 1 < h.n && h.p[i + 1] == '.') return false;
    }
    return true;
}

/* The header checks http_parser does not make, answered as nginx does: the version (505),
 * Host (400 when missing in HTTP/1.1, sent twice or not a host name), Transfer-Encoding (400 twice
 * or in HTTP/1.0, 501 for any coding but chunked) and Content-Encoding (gzip and deflate are
 * decoded; 415 for anything else). */
static int check_framing_headers(http_conn *c, http_request *r)
{
    http_parser *p = &c->parser;
    if (p->http_major > 1)
        return conn_fail_later(c, 505, "http_version_not_supported",
                               "HTTP/%u.%u is not supported on this port; send HTTP/1.1",
                               p->http_major, p->http_minor);
    if (p->http_major == 0)
        return conn_fail_later(c, 400, "bad_request",
                               "HTTP/0.%u is not a valid version in a request line; send HTTP/1.1",
                               p->http_minor);
    size_t n_host = 0, n_te = 0, n_ce = 0;
    str te = STR_NULL, ce = STR_NULL, host = STR_NULL;
    for (size_t i = 0; i < r->n_headers; i++) {
        str n = r->headers[i].name;
        if (str_eq_c(n, "host")) {
            n_host++;
            host = r->headers[i].value;
        } else if (str_eq_c(n, "transfer-encoding")) {
            n_te++;
            te = r->headers[i].value;
        } else if (str_eq_c(n, "content-encoding")) {
            n_ce++;
            ce = r->headers[i].value;
        }
    }
    if (n_host > 1)
        return conn_fail_later(c, 400, "bad_request", "the Host header is sent more than once");
    if (n_host && !host_acceptable(host))
        return conn_fail_later(c, 400, "bad_request",
                               "the Host header \"%.*s\" is not a valid host name",
                               (int)(host.n > 64 ? 64 : host.n), host.p);
    if (n_host == 0 && p->http_major == 1 && p->http_minor >= 1)
        return conn_fail_later(c, 400, "bad_request", "HTTP/1.1 request without a Host header");
    if (n_te > 1)
        return conn_fail_later(c, 400, "bad_request",
                               "the Transfer-Encoding header is sent more than once");
    if (n_te && p->http_major == 1 && p->http_minor == 0)
        return conn_fail_later(c, 400, "bad_request", "Transfer-Encoding in an HTTP/1.0 request");
    if (n_te && !str_case_eq_c(te, "chunked"))
        return conn_fail_later(c, 501, "not_implemented",
                               "Transfer-Encoding \"%.*s\" is not supported; only chunked is",
                               (int)(te.n > 64 ? 64 : te.n), te.p);
    if (n_ce > 1)
        return conn_fail_later(c, 415, "unsupported_content_encoding",
                               "the Content-Encoding header is sent more than once; send one "
                               "coding: gzip or deflate");
    if (n_ce && !str_case_eq_c(ce, "identity")) {
        if (str_case_eq_c(ce, "gzip") || str_case_eq_c(ce, "x-gzip"))
            c->coding = CODING_GZIP;
        else if (str_case_eq_c(ce, "deflate"))
            c->coding = CODING_DEFLATE;
        else
            return conn_fail_later(c, 415, "unsupported_content_encoding",
                                   "Content-Encoding \"%.*s\" is not supported; send the body "
                                   "as it is, gzip or deflate",
                                   (int)(ce.n > 64 ? 64 : ce.n), ce.p);
    }
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http_conn *c = p->data;
    http_server *s = c->srv;
    http_request *r = c->cur;
    if (c->hstate == 2) commit_header(c);
    c->hstate = 0;
    if (check_header_size(c) || c->err_status) return 0;

    r->method = p->method;
    r->method_name = str_c(http_method_str((enum http_method)p->method));
    request_split_target(r, arena_strndup(r->pool, c->url.data ? c->url.data : "", c->url.len),
                         c->url.len);
    str rid = http_request_header(r, "x-request-id");
    if (request_id_acceptable(rid)) {
        memcpy(r->request_id, rid.p, rid.n);
        r->request_id[rid.n] = 0;
    } else {
        server_new_request_id(s, r->request_id);
    }

    int rc = check_framing_headers(c, r);
    if (rc || c->err_status) return rc;

    if (p->method == HTTP_CONNECT)
        return conn_fail_later(c, 405, "method_not_allowed",
                               "CONNECT is not supported; this is not a forward proxy");
    p->upgrade = 0; /* protocol upgrades are not offered: treat as an ordinary request */

    bool chunked = (p->flags & F_CHUNKED) != 0;
    bool has_len = !chunked && p->content_length != ULLONG_MAX && p->content_length > 0;
    size_t max_body = s->limits.max_body_bytes;
    if (has_len && p->content_length > max_body)
        return conn_fail_later(c, 413, "request_too_large",
                               "request body of %llu bytes exceeds the %zu-byte limit",
                               (unsigned long long)p->content_length, max_body);

    str expect = http_request_header(r, "expect");
    if (expect.p) {
        if (!str_case_eq_c(expect, "100-continue"))
            return conn_fail_later(c, 417, "expectation_failed",
                                   "only \"Expect: 100-continue\" is supported");
        if ((chunked || has_len) && p->http_major == 1 && p->http_minor >= 1) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            uv_buf_t b = uv_buf_init((char *)cont, sizeof cont - 1);
            conn_send(c, &b, 1);
        }
    }

    if (c->coding != CODING_NONE && (chunked || has_len)) {
        /* gzip: 16 + 15 window bits; deflate: the zlib format (RFC 9110 8.4.1.2) */
        int wbits = c->coding == CODING_GZIP ? 16 + MAX_WBITS : MAX_WBITS;
        int zrc;
        if (!c->zs) {
            c->zs = calloc(1, sizeof *c->zs);
            zrc = c->zs ? inflateInit2(c->zs, wbits) : Z_MEM_ERROR;
            if (zrc != Z_OK) {
                free(c->zs);
                c->zs = NULL;
            }
        } else {
            zrc = inflateReset2(c->zs, wbits);
        }
        if (zrc != Z_OK)
            return conn_fail_later(c, 503, "server_overloaded",
                                   "the server is out of memory; retry later");
    } else if (has_len) {
        c->body_cap = (size_t)p->content_length;
        c->body = arena_alloc(r->pool, c->body_cap + 1);
    }
    c->phase = PHASE_BODY;
    if (chunked || has_len)
        uv_timer_start(&c->timer, on_conn_timer, s->limits.body_timeout_ms, 0);
    else
        uv_timer_stop(&c->timer);
    return 0;
}

/* Makes room in the body buffer for at least one more byte, up to the body limit; false at the
 * limit. Grows by doubling inside the arena: at most 2x the body is wasted, and it goes with the
 * arena. */
static bool body_grow(http_conn *c, size_t want)
{
    size_t max = c->srv->limits.max_body_bytes;
    if (want <= c->body_cap) return true;
    if (c->body_cap >= max) return false;
    size_t ncap = c->body_cap ? c->body_cap * 2 : 1024;
    if (ncap < want) ncap = want;
    if (ncap > max) ncap = max;
    char *nb = arena_alloc(c->cur->pool, ncap + 1);
    if (c->body_len) memcpy(nb, c->body, c->body_len);
    c->body = nb;
    c->body_cap = ncap;
    return want <= ncap;
}

static int fail_decoded_too_large(http_conn *c)
{
    return conn_fail_later(c, 413, "request_too_large",
                           "the decompressed request body exceeds the %zu-byte limit",
                           c->srv->limits.max_body_bytes);
}

/* Inflates a piece of an encoded body into the body buffer; the decoded size counts against
 * the body limit (a gzip bomb gets 413 as soon as its output passes the limit). */
static int inflate_body(http_conn *c, const char *at, size_t len)
{
    z_stream *z = c->zs;
    size_t max = c->srv->limits.max_body_bytes;
    const char *what = c->coding == CODING_GZIP ? "gzip" : "deflate";
    z->next_in = (Bytef *)at;
    z->avail_in = (uInt)len;
    for (;;) {
        if (c->z_done) {
            if (z->avail_in == 0) return 0;
            if (c->coding != CODING_GZIP)
                return conn_fail_later(c, 400, "bad_request",
                                       "the request body has data after the end of its %s "
                                       "stream",
                                       what);
            inflateReset(z); /* gzip allows several members, one after the other */
            c->z_done = false;
        }
        unsigned char spare;
        bool at_limit = c->body_len >= max;
        if (!at_limit && !body_grow(c, c->body_len + 1)) return fail_decoded_too_large(c);
        if (at_limit) {
            /* the limit is reached: one more byte of output means too large */
            z->next_out = &spare;
            z->avail_out = 1;
        } else {
            z->next_out = (Bytef *)c->body + c->body_len;
            z->avail_out = (uInt)(c->body_cap - c->body_len);
        }
        uInt room = z->avail_out;
        int rc = inflate(z, Z_NO_FLUSH);
        size_t made = room - z->avail_out;
        if (at_limit && made) return fail_decoded_too_large(c);
        c->body_len += made;
        if (rc == Z_STREAM_END) {
            c->z_done = true;
            continue;
        }
        if (rc == Z_OK || rc == Z_BUF_ERROR) {
            if (z->avail_out == 0) continue;                     /* output full: grow and go on */
            if (rc == Z_BUF_ERROR || z->avail_in == 0) return 0; /* wants more input */
            continue;
        }
        return conn_fail_later(c, 400, "bad_request",
                               "the request body is not valid %s data (Content-Encoding: %s): %s",
                               what, what, z->msg ? z->msg : "corrupt stream");
    }
}

/* Every line outside a body (request line, headers, chunk framing, trailers) must end in CRLF:
 * http_parser, built without its strict checks, takes any byte after the CR that ends the
 * headers or a chunk-size line, and takes a bare LF as a line end, where a proxy in front may
 * read either differently (request smuggling). nginx accepts a bare LF; we refuse it, as
 * RFC 9112 section 2.2 allows and Node's llhttp does, because the gateway is often the second
 * parser behind a load balancer. */
static int scan_bare_cr(http_conn *c, const char *from, const char *to)
{
    static const char bare_cr[] =
        "a CR not followed by LF in the request line, headers or chunk framing";
    static const char bare_lf[] = "a line of the request line, headers or chunk framing ends in a "
                                  "bare LF (HTTP/1.1 lines end in CRLF)";
    if (from >= to) return 0;
    const char *p = from;
    if (c->cr_pending) { /* the previous run ended in a CR: this one must start with its LF */
        if (*p != '\n') return conn_fail_later(c, 400, "bad_request", "%s", bare_cr);
        c->cr_pending = false;
        p++;
    }
    /* two memchr passes (this runs on every request head): each LF must follow a CR in this
     * run, each CR must be followed by an LF, or end the run */
    for (const char *q = p; q < to && (q = memchr(q, '\n', (size_t)(to - q))) != NULL; q++)
        if (q == from || q[-1] != '\r')
            return conn_fail_later(c, 400, "bad_request", "%s", bare_lf);
    for (const char *q = p; q < to && (q = memchr(q, '\r', (size_t)(to - q))) != NULL; q++) {
        if (q + 1 == to) {
            c->cr_pending = true;
            break;
        }
        if (q[1] != '\n') return conn_fail_later(c, 400, "bad_request", "%s", bare_cr);
    }
    return 0;
}

/* After the request target the parser skips its spaces and then, built without strict checks,
 * takes any four bytes and a '/' for "HTTP/": check them. */
static int check_version_literal(http_conn *c, const char *p)
{
    static const char lit[] = "HTTP/";
    while (c->lit_idx >= 0 && p < c->exec_end) {
        if (c->lit_idx == 0 && *p == ' ') {
            p++;
            continue;
        }
        if (*p != lit[c->lit_idx])
            return conn_fail_later(c, 400, "bad_request",
                                   "the request line does not end in HTTP/<major>.<minor>");
        p++;
        if (++c->lit_idx == 5) c->lit_idx = -1;
    }
    return 0;
}

/* The bytes after a chunk's data must be CRLF: http_parser (built without strict checks) takes
 * any two bytes, which would let a chunk size that does not match its data go unnoticed. */
static int check_chunk_crlf(http_conn *c, const char *p)
{
    while (c->crlf_need && p < c->exec_end) {
        char want = c->crlf_need == 2 ? '\r' : '\n';
        if (*p != want)
            return conn_fail_later(c, 400, "bad_request",
                                   "chunk data is not followed by CRLF (the chunk size does not "
                                   "match the data)");
        c->crlf_need--;
        p++;
    }
    return 0;
}

static int on_chunk_header(http_parser *p)
{
    http_conn *c = p->data;
    size_t max = c->srv->limits.max_body_bytes;
    c->chunk_left = p->content_length;
    /* answered at once: waiting for the data would hold the client until the body timeout */
    if (p->content_length > max - c->raw_len)
        return conn_fail_later(c, 413, "request_too_large",
                               "a chunk of %llu bytes takes the request body past the %zu-byte "
                               "limit",
                               (unsigned long long)p->content_length, max);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http_conn *c = p->data;
    size_t max = c->srv->limits.max_body_bytes;
    if (len > max - c->raw_len)
        return conn_fail_later(c, 413, "request_too_large",
                               "request body exceeds the %zu-byte limit", max);
    c->raw_len += len;
    if (c->scan_at && at >= c->scan_at) {
        scan_bare_cr(c, c->scan_at, at);
        if (c->err_status) return 0;
        c->scan_at = at + len;
    }
    if (p->flags & F_CHUNKED) {
        c->chunk_left = len < c->chunk_left ? c->chunk_left - len : 0;
        if (c->chunk_left == 0) {
            c->crlf_need = 2;
            check_chunk_crlf(c, at + len);
            if (c->err_status) return 0;
        }
    }
    if (c->coding != CODING_NONE) return inflate_body(c, at, len);
    if (!body_grow(c, c->body_len + len))
        return conn_fail_later(c, 413, "request_too_large",
                               "request body exceeds the %zu-byte limit", max);
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

/* The body is decoded: the request goes on as if it had been sent without Content-Encoding. */
static void drop_header(http_request *r, const char *lower_name)
{
    size_t o = 0;
    for (size_t i = 0; i < r->n_headers; i++)
        if (!str_eq_c(r->headers[i].name, lower_name)) r->headers[o++] = r->headers[i];
    r->n_headers = o;
}

static int on_message_complete(http_parser *p)
{
    http_conn *c = p->data;
    http_request *r = c->cur;
    if (c->coding != CODING_NONE && c->raw_len) {
        if (!c->z_done)
            return conn_fail_later(c, 400, "bad_request",
                                   "the request body ends before the end of its %s stream",
                                   c->coding == CODING_GZIP ? "gzip" : "deflate");
        drop_header(r, "content-encoding");
    }
    if (c->body) {
        c->body[c->body_len] = 0;
        r->body = (str){c->body, c->body_len};
    }
    r->keep_alive = http_should_keep_alive(p) != 0;
    c->http10 = p->http_major == 1 && p->http_minor == 0;
    c->cur = NULL;
    c->ready = r;
    uv_timer_stop(&c->timer);
    /* one request at a time: later pipelined bytes wait until this one is answered */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_chunk_header = on_chunk_header,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ---------- the parse loop ---------- */

static void conn_dispatch(http_conn *c, http_request *r)
{
    http_server *s = c->srv;
    c->inflight = r;
    c->phase = PHASE_IN_FLIGHT;
    c->want_drain = c->resp_chunked = c->resp_no_body = false;
    c->resp_keep = false;
    if (s->draining) r->keep_alive = false;
    s->active++;
    s->handler(r, s->handler_ctx);
}

/* Runs the parser over data; returns the bytes consumed. Errors are answered and close the
 * connection; a completed request is dispatched (its handler may finish it at once). */
static size_t conn_execute(http_conn *c, const char *data, size_t len)
{
    c->exec_start = data;
    c->exec_end = data + len;
    c->scan_at = data;
    /* checks that began at the end of the previous run */
    if (c->crlf_need) check_chunk_crlf(c, data);
    if (c->lit_idx >= 0 && c->phase == PHASE_HEADERS) check_version_literal(c, data);
    if (c->err_status) {
        conn_fail(c);
        return len;
    }
    size_t n = http_parser_execute(&c->parser, &parser_settings, data, len);
    /* the framing bytes after the last body piece; before dispatching what they framed */
    if (!c->err_status && c->scan_at && c->scan_at <= data + n)
        scan_bare_cr(c, c->scan_at, data + n);
    c->scan_at = NULL;
    /* keep the last bytes the parser took, for checks that look back across runs */
    if (n >= sizeof c->tail) {
        memcpy(c->tail, data + n - sizeof c->tail, sizeof c->tail);
        c->tail_len = sizeof c->tail;
    } else if (n) {
        size_t keep = c->tail_len + n > sizeof c->tail ? sizeof c->tail - n : c->tail_len;
        memmove(c->tail, c->tail + c->tail_len - keep, keep);
        memcpy(c->tail + keep, data, n);
        c->tail_len = keep + n;
    }
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (c->state != CONN_OPEN) {
        if (c->ready) {
            arena_free(c->ready->pool);
            c->ready = NULL;
        }
        return len;
    }
    if (!c->err_status && e == HPE_OK) check_header_size(c);
    if (c->err_status) {
        conn_fail(c);
        return len;
    }
    if (e == HPE_PAUSED) {
        http_request *r = c->ready;
        if (r) {
            c->ready = NULL;
            conn_dispatch(c, r);
        }
        return n;
    }
    if (e != HPE_OK) {
        if (e == HPE_HEADER_OVERFLOW)
            conn_fail_later(c, 431, "request_header_fields_too_large",
                            "request line and headers are too large");
        else
            conn_fail_later(c, 400, "bad_request", "malformed HTTP request: %s",
                            http_errno_description(e));
        conn_fail(c);
        return len;
    }
    return n;
}

/* Parses held (pipelined) bytes while no request is in flight. */
static void conn_pump(http_conn *c)
{
    if (c->pumping) return;
    c->pumping = true;
    while (c->state == CONN_OPEN && !c->inflight && c->pend_off < c->pend.len) {
        size_t n = conn_execute(c, c->pend.data + c->pend_off, c->pend.len - c->pend_off);
        if (n == 0 && !c->inflight) break; /* no progress: the parser is stuck, do not spin */
        c->pend_off += n;
    }
    if (c->pend_off >= c->pend.len) {
        c->pend_off = 0;
        if (c->pend.cap > 16 * 1024)
            buf_free(&c->pend);
        else
            buf_reset(&c->pend);
    }
    c->pumping = false;
    if (c->read_stopped && c->state == CONN_OPEN && c->pend.len - c->pend_off < HTTP_PENDING_MAX) {
        c->read_stopped = false;
        uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read);
    }
}

/* New plaintext from the peer. Parsed in place when nothing is held; bytes that must wait for
 * the request in flight are copied into c->pend. */
static void conn_feed(http_conn *c, const char *data, size_t len)
{
    if (c->state != CONN_OPEN) return;
    if (c->pend_off == c->pend.len && !c->inflight && !c->pumping) {
        c->pumping = true;
        while (len && c->state == CONN_OPEN && !c->inflight) {
            size_t n = conn_execute(c, data, len);
            if (n == 0) break;
            data += n;
            len -= n;
        }
        c->pumping = false;
    }
    if (len && c->state == CONN_OPEN) buf_append(&c->pend, data, len);
    conn_pump(c);
    if (c->state == CONN_OPEN && !c->read_stopped &&
        c->pend.len - c->pend_off >= HTTP_PENDING_MAX) {
        c->read_stopped = true;
        uv_read_stop((uv_stream_t *)&c->tcp);
    }
}

/* ---------- connection events ---------- */

static void on_conn_timer(uv_timer_t *t)
{
    http_conn *c = t->data;
    if (c->state != CONN_OPEN) {
        conn_close(c);
        return;
    }
    switch (c->phase) {
    case PHASE_IDLE:
        if (conn_queued(c) > 0)
            conn_close_graceful(c); /* still sending the last response: let it finish */
        else
            conn_close(c);
        break;
    case PHASE_HEADERS:
        conn_fail_later(c, 408, "request_timeout", "request headers did not arrive within %u ms",
                        c->srv->limits.header_timeout_ms);
        conn_fail(c);
        break;
    case PHASE_BODY:
        conn_fail_later(c, 408, "request_timeout", "request body did not arrive within %u ms",
                        c->srv->limits.body_timeout_ms);
        conn_fail(c);
        break;
    case PHASE_IN_FLIGHT:
        break;
    }
}

static void on_conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    http_conn *c = h->data;
    *b = uv_buf_init(c->srv->read_buf, HTTP_READ_BUF_SIZE);
}

static void conn_on_tls_data(http_conn *c, const char *data, size_t len)
{
    char err[300];
    bool was_ready = http_tls_ready(c->tls);
    if (http_tls_feed(c->tls, data, len, err, sizeof err) < 0) {
        log_debug("http: %s from %s; closing the connection", err, c->remote_addr);
        conn_flush_tls(c); /* the alert, if OpenSSL produced one */
        conn_close(c);
        return;
    }
    conn_flush_tls(c);
    if (!http_tls_ready(c->tls)) return;
    if (!was_ready && c->phase == PHASE_IDLE && c->state == CONN_OPEN)
        uv_timer_start(&c->timer, on_conn_timer, c->srv->limits.idle_timeout_ms, 0);
    char *plain = c->srv->tls_in;
    while (c->state == CONN_OPEN) {
        int n = http_tls_read(c->tls, plain, HTTP_TLS_BUF_SIZE);
        if (n == 0) break;
        if (n < 0) {
            conn_close(c); /* close_notify or a broken record: the peer is gone */
            return;
        }
        conn_feed(c, plain, (size_t)n);
    }
    if (c->state != CONN_CLOSED) conn_flush_tls(c);
}

static void on_conn_read(uv_stream_t *st, ssize_t nread, const uv_buf_t *b)
{
    http_conn *c = st->data;
    if (nread < 0) {
        if (nread != UV_EOF)
            log_debug("http: read from %s failed: %s", c->remote_addr, uv_strerror((int)nread));
        conn_close(c); /* a request in flight hears about it through on_abort */
        return;
    }
    if (nread == 0 || c->state != CONN_OPEN) return; /* lingering: discard */
    if (c->tls)
        conn_on_tls_data(c, b->base, (size_t)nread);
    else
        conn_feed(c, b->base, (size_t)nread);
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

/* At maxConnections: closes this worker's oldest idle connection to make room (as nginx reuses
 * idle connections), or, when none is idle, accepts the new one and closes it at once. Returns
 * false when the new connection was refused. */
static bool budget_admit(http_server *s, uv_stream_t *ls)
{
    http_conn_budget *b = s->budget;
    size_t max = atomic_load(&b->max);
    if (!max || atomic_load(&b->open) < max) return true;
    /* the oldest idle connection whose last response is completely sent (a connection still
     * writing one is left alone, as nginx reuses only finished keep-alive connections); the
     * walk is bounded so that a crowd of slow readers cannot make every accept expensive */
    http_conn *old = s->idle_head;
    for (int i = 0; old && conn_queued(old) > 0 && i < 64; i++)
        old = old->idle_next;
    if (old && conn_queued(old) > 0) old = NULL;
    if (old) {
        log_debug("http: %zu connections open (the limit): closing the idle connection from %s",
                  max, old->remote_addr);
        atomic_fetch_add(&b->idle_closed, 1);
        conn_close(old); /* gives its place back at once */
        return true;
    }
    atomic_fetch_add(&b->refused, 1);
    time_t now = time(NULL);
    if (now != s->refuse_logged) {
        s->refuse_logged = now;
        log_warn("http: %zu client connections open (spec.listener.maxConnections) and none of "
                 "this worker's is idle: refusing new connections",
                 max);
    }
    uv_tcp_t *t = malloc(sizeof *t);
    if (!t) return false; /* nothing accepted: libuv retries the accept later */
    uv_tcp_init(s->loop, t);
    uv_accept(ls, (uv_stream_t *)t);
    uv_close((uv_handle_t *)t, free_handle);
    return false;
}

static void on_connection(uv_stream_t *ls, int status)
{
    http_server *s = ls->data;
    if (status < 0) {
        log_warn("http: accept on port %d failed: %s", s->port, uv_strerror(status));
        return;
    }
    if (s->budget && !budget_admit(s, ls)) return;
    http_conn *c = calloc(1, sizeof *c);
    if (!c) {
        log_error("http: out of memory accepting a connection on port %d", s->port);
        return;
    }
    c->srv = s;
    uv_tcp_init(s->loop, &c->tcp);
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c->timer.data = c;
    c->handles_open = 2;
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->n_conns++;
    http_parser_init(&c->parser, HTTP_REQUEST);
    c->parser.data = c;
    c->phase = PHASE_IDLE;
    c->lit_idx = -1;
    snprintf(c->remote_addr, sizeof c->remote_addr, "unknown");
    if (s->budget) {
        c->counted = true;
        atomic_fetch_add(&s->budget->open, 1);
    }
    idle_enter(c);

    int rc = uv_accept(ls, (uv_stream_t *)&c->tcp);
    if (rc < 0) {
        log_debug("http: accept failed: %s", uv_strerror(rc));
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->remote_addr, sizeof c->remote_addr);
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->remote_addr, sizeof c->remote_addr);
    }
    if (s->tls_ctx) {
        c->tls = http_tls_session_new(s->tls_ctx);
        if (!c->tls) {
            log_error("http: out of memory starting TLS for %s", c->remote_addr);
            conn_close(c);
            return;
        }
    }
    /* a new connection gets the header timeout to send something (idle after that) */
    uv_timer_start(&c->timer, on_conn_timer,
                   s->tls_ctx ? s->limits.header_timeout_ms : s->limits.idle_timeout_ms, 0);
    rc = uv_read_start((uv_stream_t *)&c->tcp, on_conn_alloc, on_conn_read);
    if (rc < 0) conn_close(c);
}

/* ---------- finishing requests and responses ---------- */

static void request_finish(http_request *r)
{
    http_conn *c = r->conn;
    http_server *s = c->srv;
    bool keep = c->resp_keep;
    c->inflight = NULL;
    c->want_drain = false;
    s->active--;
    arena_free(r->pool);
    if (c->state == CONN_CLOSED) {
        conn_maybe_free(c); /* frees only once the handles' close callbacks have run */
        return;
    }
    if (c->state != CONN_OPEN) return;
    if (!keep || c->broken) {
        conn_close_graceful(c);
        return;
    }
    c->phase = PHASE_IDLE;
    http_parser_pause(&c->parser, 0);
    uv_timer_start(&c->timer, on_conn_timer, s->limits.idle_timeout_ms, 0);
    idle_enter(c); /* the most recently used: the last to be closed at the limit */
    conn_pump(c);
    if (s->draining && c->state == CONN_OPEN && !c->inflight && c->phase == PHASE_IDLE)
        conn_close_graceful(c);
}

static bool conn_can_write(const http_conn *c)
{
    return c->state == CONN_OPEN && !c->broken;
}

static bool status_has_no_body(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

/* Builds the response head in the server's scratch buffer. content_length < 0: streamed. */
static void build_head(http_conn *c, http_request *r, int status, const http_header *hdrs,
                       size_t n_hdrs, long long content_length)
{
    http_server *s = c->srv;
    c->resp_keep = r->keep_alive && !s->draining && c->state == CONN_OPEN;
    buf *h = &s->head;
    buf_reset(h);
    buf_puts(h, "HTTP/1.1 ");
    buf_put_i64(h, status);
    buf_append(h, " ", 1);
    buf_puts(h, status_reason(status));
    buf_append(h, "\r\n", 2);
    buf_puts(h, server_date_line(s));
    buf_puts(h, "X-Request-Id: ");
    buf_puts(h, r->request_id);
    buf_puts(h, "\r\n");
    for (size_t i = 0; i < n_hdrs; i++) {
        str n = hdrs[i].name, v = hdrs[i].value;
        if (!n.n || memchr(n.p, '\n', n.n) || memchr(n.p, '\r', n.n) ||
            (v.n && (memchr(v.p, '\n', v.n) || memchr(v.p, '\r', v.n)))) {
            log_warn("http: dropped response header %.*s: it is empty or contains CR/LF",
                     (int)(n.n > 64 ? 64 : n.n), n.p ? n.p : "");
            continue;
        }
        buf_append(h, n.p, n.n);
        buf_append(h, ": ", 2);
        if (v.n) buf_append(h, v.p, v.n);
        buf_append(h, "\r\n", 2);
    }
    if (!status_has_no_body(status)) {
        if (content_length >= 0) {
            buf_puts(h, "Content-Length: ");
            buf_put_i64(h, content_length);
            buf_append(h, "\r\n", 2);
        } else if (c->resp_chunked)
            buf_puts(h, "Transfer-Encoding: chunked\r\n");
    }
    if (!c->resp_keep)
        buf_puts(h, "Connection: close\r\n");
    else if (c->http10)
        buf_puts(h, "Connection: keep-alive\r\n");
    buf_puts(h, "\r\n");
}

void http_respond(http_request *r, int status, const http_header *hdrs, size_t n_hdrs,
                  const char *body, size_t len)
{
    http_conn *c = r->conn;
    if (conn_can_write(c)) {
        build_head(c, r, status, hdrs, n_hdrs, (long long)len);
        bool no_body = r->method == HTTP_HEAD || status_has_no_body(status) || len == 0;
        uv_buf_t bufs[2] = {uv_buf_init(c->srv->head.data, (unsigned)c->srv->head.len),
                            uv_buf_init((char *)body, (unsigned)len)};
        conn_send(c, bufs, no_body ? 1 : 2);
    }
    request_finish(r);
}

void http_stream_begin(http_request *r, int status, const http_header *hdrs, size_t n_hdrs)
{
    http_conn *c = r->conn;
    c->resp_no_body = r->method == HTTP_HEAD || status_has_no_body(status);
    /* HTTP/1.0 has no chunked coding: the body ends when the connection does */
    c->resp_chunked = !c->http10;
    if (c->http10) r->keep_alive = false;
    if (!conn_can_write(c)) return;
    build_head(c, r, status, hdrs, n_hdrs, -1);
    uv_buf_t b = uv_buf_init(c->srv->head.data, (unsigned)c->srv->head.len);
    conn_send(c, &b, 1);
}

bool http_stream_write(http_request *r, const char *data, size_t len)
{
    http_conn *c = r->conn;
    /* dropped writes report "go on": no on_drain can come for a connection that is gone */
    if (!conn_can_write(c) || c->resp_no_body) return true;
    if (len) {
        if (c->resp_chunked) {
            char sz[24];
            int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
            uv_buf_t bufs[3] = {uv_buf_init(sz, (unsigned)n),
                                uv_buf_init((char *)data, (unsigned)len),
                                uv_buf_init((char *)"\r\n", 2)};
            conn_send(c, bufs, 3);
        } else {
            uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
            conn_send(c, &b, 1);
        }
    }
    if (!conn_can_write(c)) return true;
    if (conn_queued(c) >= c->srv->limits.write_high_watermark) {
        c->want_drain = true;
        return false;
    }
    return true;
}

void http_stream_end(http_request *r)
{
    http_conn *c = r->conn;
    if (conn_can_write(c) && c->resp_chunked && !c->resp_no_body) {
        uv_buf_t b = uv_buf_init((char *)"0\r\n\r\n", 5);
        conn_send(c, &b, 1);
    }
    request_finish(r);
}

void http_stream_abort(http_request *r)
{
    /* no terminating chunk: the connection closes after what is queued, so the client sees
     * an incomplete body rather than a complete-looking short one */
    r->conn->resp_keep = false;
    request_finish(r);
}

str http_request_header(const http_request *r, const char *lower_name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (str_case_eq_c(r->headers[i].name, lower_name)) return r->headers[i].value;
    return STR_NULL;
}

bool http_request_client_gone(const http_request *r)
{
    return !conn_can_write(r->conn);
}

/* ---------- the server ---------- */

static int listen_socket(const char *host, int port, bool exclusive, int *fd_out, char *err,
                         size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)&ss) != 0 &&
        uv_ip6_addr(host, port, (struct sockaddr_in6 *)&ss) != 0) {
        snprintf(err, errlen, "listener host \"%s\" is not an IPv4 or IPv6 address", host);
        return UV_EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int rc = -errno;
        snprintf(err, errlen, "cannot create a socket for %s:%d: %s", host, port, uv_strerror(rc));
        return rc;
    }
    int one = 1;
    /* SO_REUSEPORT: every worker loop binds the same port and the kernel spreads connections.
     * The exclusive (first) socket binds and listens without it, so that it fails while any
     * other socket holds the port, and only then turns it on for this process's other workers:
     * a second process on the same port is refused instead of silently taking a share of the
     * connections. Two processes racing through bind both pass it (SO_REUSEADDR, neither yet
     * listening), but only the first listen() wins. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        (!exclusive && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) < 0) {
        int rc = -errno;
        close(fd);
        snprintf(err, errlen, "cannot set socket options for %s:%d: %s", host, port,
                 uv_strerror(rc));
        return rc;
    }
    socklen_t sl =
        ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(fd, (struct sockaddr *)&ss, sl) < 0 || listen(fd, HTTP_LISTEN_BACKLOG) < 0) {
        int rc = -errno;
        close(fd);
        if (rc == UV_EADDRINUSE)
            snprintf(err, errlen,
                     "cannot listen on %s:%d: address already in use (another process, maybe "
                     "another ctxgate, holds the port)",
                     host, port);
        else
            snprintf(err, errlen,
                     "cannot listen on %s:%d: %s (is the port below 1024 without privileges?)",
                     host, port, uv_strerror(rc));
        return rc;
    }
    if (exclusive && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        int rc = -errno;
        close(fd);
        snprintf(err, errlen, "cannot set SO_REUSEPORT on %s:%d: %s", host, port, uv_strerror(rc));
        return rc;
    }
    *fd_out = fd;
    return 0;
}

static void on_listener_closed_after_failure(uv_handle_t *h)
{
    http_server_free(h->data);
}

int http_server_start(uv_loop_t *loop, const http_server_opts *o, http_server **out, char *err,
                      size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    *out = NULL;
    if (!o->handler) {
        snprintf(err, errlen, "http server needs a request handler");
        return UV_EINVAL;
    }
    if (o->port < 0 || o->port > 65535) {
        snprintf(err, errlen, "listener port %d is outside 0..65535", o->port);
        return UV_EINVAL;
    }
    if (!o->tls_cert_pem != !o->tls_key_pem) {
        snprintf(err, errlen, "TLS needs both a certificate (tls.crt) and a key (tls.key)");
        return UV_EINVAL;
    }
    http_server *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory starting the http server");
        return UV_ENOMEM;
    }
    s->loop = loop;
    limits_fill(&s->limits, &o->limits);
    s->handler = o->handler;
    s->handler_ctx = o->handler_ctx;
    s->budget = o->budget;
    s->read_buf = malloc(HTTP_READ_BUF_SIZE);
    if (!s->read_buf) {
        free(s);
        snprintf(err, errlen, "out of memory starting the http server");
        return UV_ENOMEM;
    }
    if (o->tls_cert_pem) {
        s->tls_in = malloc(HTTP_TLS_BUF_SIZE);
        s->tls_out = malloc(HTTP_TLS_BUF_SIZE);
        if (!s->tls_in || !s->tls_out ||
            http_tls_ctx_new(o->tls_cert_pem, o->tls_key_pem, &s->tls_ctx, err, errlen) < 0) {
            if (!s->tls_in || !s->tls_out)
                snprintf(err, errlen, "out of memory starting the http server");
            http_server_free(s);
            return UV_EINVAL;
        }
    }
    if (getrandom(&s->id_seed, sizeof s->id_seed, 0) != (ssize_t)sizeof s->id_seed)
        s->id_seed = clock_mono_ns() ^ (uint64_t)(uintptr_t)s;

    const char *host = o->host ? o->host : "0.0.0.0";
    int fd = -1;
    int rc = listen_socket(host, o->port, o->exclusive, &fd, err, errlen);
    if (rc < 0) {
        http_server_free(s);
        return rc;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
        s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                 : ((struct sockaddr_in *)&ss)->sin_port);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rc = uv_tcp_open(&s->listener, fd);
    if (rc < 0) close(fd); /* the handle owns the socket only once uv_tcp_open succeeded */
    if (rc == 0) rc = uv_listen((uv_stream_t *)&s->listener, HTTP_LISTEN_BACKLOG, on_connection);
    if (rc < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, o->port, uv_strerror(rc));
        /* the handle is registered with the loop: s is freed by its close callback */
        uv_close((uv_handle_t *)&s->listener, on_listener_closed_after_failure);
        return rc;
    }
    *out = s;
    return 0;
}

int http_server_port(const http_server *s)
{
    return s->port;
}

void http_server_set_limits(http_server *s, const http_limits *l)
{
    limits_fill(&s->limits, l);
}

static void on_listener_closed(uv_handle_t *h)
{
    http_server *s = h->data;
    s->listener_closed = true;
    server_check_drained(s);
}

void http_server_drain(http_server *s, void (*done)(void *ctx), void *ctx)
{
    if (s->draining) return;
    s->draining = true;
    s->drain_done = done;
    s->drain_ctx = ctx;
    uv_close((uv_handle_t *)&s->listener, on_listener_closed);
    http_conn *next;
    for (http_conn *c = s->conns; c; c = next) {
        next = c->next; /* closes below never free synchronously, but do not rely on c->next */
        if (c->inflight)
            c->inflight->keep_alive = false;
        else if (c->state == CONN_OPEN && c->phase == PHASE_IDLE)
            conn_close_graceful(c);
        /* requests still arriving are answered with Connection: close */
    }
}

void http_server_free(http_server *s)
{
    if (!s) return;
    http_tls_ctx_free(s->tls_ctx);
    buf_free(&s->head);
    free(s->read_buf);
    free(s->tls_in);
    free(s->tls_out);
    free(s);
}

size_t http_server_active_requests(const http_server *s)
{
    return s->active;
}
