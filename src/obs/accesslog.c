/* accesslog.c — the per-request access log: one JSON (or logfmt) line per finished request.
 *
 * The line is built in a buffer and handed to the kernel in one write(). POSIX makes a
 * write of at most PIPE_BUF bytes to a pipe atomic, so ordinary lines from several workers never
 * interleave and may be written in parallel (they share a read lock). A longer line (bodies) can
 * be split by a full pipe and other lines could land in the gap, so it takes the lock exclusively
 * (writer-preferring, so a long line is not starved by a stream of short ones). The escaper is
 * hand-written because jansson refuses invalid UTF-8 instead of repairing it, and a request path
 * or body is client-controlled bytes. */
#include "obs/accesslog.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/utf8.h"

/* How long a writer waits for a full non-blocking stdout before dropping the line. */
#define ACCESSLOG_STALL_MS 1000

static _Atomic int g_fd = 1;
static pthread_rwlock_t g_write_lock;
static pthread_once_t g_write_lock_once = PTHREAD_ONCE_INIT;
static _Thread_local time_t tl_ts_sec = -1;
static _Thread_local char tl_ts_prefix[32]; /* "YYYY-MM-DDTHH:MM:SS" of tl_ts_sec */

static void write_lock_init(void)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&g_write_lock, &attr);
    pthread_rwlockattr_destroy(&attr);
}

void accesslog_set_fd(int fd)
{
    atomic_store(&g_fd, fd);
}

/* RFC 3339 UTC with milliseconds; the seconds part is formatted once per second per thread. */
static void put_timestamp(buf *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != tl_ts_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(tl_ts_prefix, sizeof tl_ts_prefix, "%Y-%m-%dT%H:%M:%S", &tm);
        tl_ts_sec = ts.tv_sec;
    }
    int ms = (int)(ts.tv_nsec / 1000000);
    buf_puts(out, tl_ts_prefix);
    char frac[5] = {'.', (char)('0' + ms / 100), (char)('0' + ms / 10 % 10), (char)('0' + ms % 10),
                    'Z'};
    buf_append(out, frac, 5);
}

/* The body of a JSON string (no quotes): valid JSON for any input bytes. */
static void put_json_chars(buf *out, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '"' && p[run] != '\\')
            run++;
        if (run > i) {
            buf_append(out, p + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            buf_append(out, e, 2);
            i++;
        } else if (c < 0x20) {
            const char *e = c == '\n' ? "\\n" : c == '\r' ? "\\r" : c == '\t' ? "\\t" : NULL;
            if (e) {
                buf_append(out, e, 2);
            } else {
                char u[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
                buf_append(out, u, 6);
            }
            i++;
        } else {
            size_t len = utf8_seq_len(p + i, n - i);
            if (len) {
                buf_append(out, p + i, len);
                i += len;
            } else {
                buf_append(out, "\\ufffd", 6);
                i++;
            }
        }
    }
}

/* ---- JSON ---- */

static void json_key(buf *out, const char *key)
{
    buf_append(out, ",\"", 2);
    buf_puts(out, key);
    buf_append(out, "\":", 2);
}

static void json_str(buf *out, const char *key, const char *v)
{
    if (!v) return;
    json_key(out, key);
    buf_append(out, "\"", 1);
    put_json_chars(out, v);
    buf_append(out, "\"", 1);
}

static void put_ms(buf *out, uint64_t us)
{
    buf_put_frac3(out, (unsigned long long)us);
}

static void json_ms(buf *out, const char *key, uint64_t us)
{
    json_key(out, key);
    put_ms(out, us);
}

static void format_json(buf *out, const accesslog_entry *e)
{
    buf_puts(out, "{\"ts\":\"");
    put_timestamp(out);
    buf_append(out, "\"", 1);
    json_str(out, "request_id", e->request_id);
    json_str(out, "remote_addr", e->remote_addr);
    json_str(out, "method", e->method);
    json_str(out, "path", e->path);
    buf_puts(out, ",\"status\":");
    buf_put_i64(out, e->status);
    json_ms(out, "duration_ms", e->duration_us);
    if (e->upstream_us) json_ms(out, "upstream_ms", e->upstream_us);
    if (e->ttft_us) json_ms(out, "ttft_ms", e->ttft_us);
    json_str(out, "gateway", e->gateway);
    json_str(out, "route", e->route);
    json_str(out, "model", e->model);
    json_str(out, "target", e->target);
    json_str(out, "user", e->user);
    json_str(out, "app", e->app);
    json_str(out, "tenant", e->tenant);
    buf_puts(out, ",\"prompt_tokens\":");
    buf_put_u64(out, e->prompt_tokens);
    buf_puts(out, ",\"completion_tokens\":");
    buf_put_u64(out, e->completion_tokens);
    json_str(out, "usage_source", e->usage_source);
    buf_puts(out, ",\"attempts\":");
    buf_put_i64(out, e->attempts);
    buf_puts(out, e->stream ? ",\"stream\":true" : ",\"stream\":false");
    json_str(out, "error", e->error);
    json_str(out, "request_body", e->req_body);
    json_str(out, "response_body", e->resp_body);
    buf_append(out, "}\n", 2);
}

/* ---- logfmt ---- */

static void text_str(buf *out, const char *key, const char *v)
{
    if (!v) return;
    buf_append(out, " ", 1);
    buf_puts(out, key);
    buf_append(out, "=", 1);
    bool plain = *v != 0;
    for (const unsigned char *p = (const unsigned char *)v; *p && plain; p++)
        plain = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '=' && *p != '\\';
    if (plain) {
        buf_puts(out, v);
        return;
    }
    buf_append(out, "\"", 1);
    put_json_chars(out, v);
    buf_append(out, "\"", 1);
}

static void format_text(buf *out, const accesslog_entry *e)
{
    buf_puts(out, "ts=");
    put_timestamp(out);
    text_str(out, "request_id", e->request_id);
    text_str(out, "remote_addr", e->remote_addr);
    text_str(out, "method", e->method);
    text_str(out, "path", e->path);
    buf_puts(out, " status=");
    buf_put_i64(out, e->status);
    buf_puts(out, " duration_ms=");
    put_ms(out, e->duration_us);
    if (e->upstream_us) {
        buf_puts(out, " upstream_ms=");
        put_ms(out, e->upstream_us);
    }
    if (e->ttft_us) {
        buf_puts(out, " ttft_ms=");
        put_ms(out, e->ttft_us);
    }
    text_str(out, "gateway", e->gateway);
    text_str(out, "route", e->route);
    text_str(out, "model", e->model);
    text_str(out, "target", e->target);
    text_str(out, "user", e->user);
    text_str(out, "app", e->app);
    text_str(out, "tenant", e->tenant);
    buf_puts(out, " prompt_tokens=");
    buf_put_u64(out, e->prompt_tokens);
    buf_puts(out, " completion_tokens=");
    buf_put_u64(out, e->completion_tokens);
    text_str(out, "usage_source", e->usage_source);
    buf_puts(out, " attempts=");
    buf_put_i64(out, e->attempts);
    buf_puts(out, e->stream ? " stream=true" : " stream=false");
    text_str(out, "error", e->error);
    text_str(out, "request_body", e->req_body);
    text_str(out, "response_body", e->resp_body);
    buf_append(out, "\n", 1);
}

void accesslog_format(buf *out, const accesslog_entry *e, bool json)
{
    if (json)
        format_json(out, e);
    else
        format_text(out, e);
}

/* ---- output ---- */

/* Writes all of p; returns 0, or -1 when the descriptor failed or stayed full too long (the line
 * is then dropped: a stuck log reader must not stop the gateway). */
static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, ACCESSLOG_STALL_MS) <= 0) return -1;
        } else {
            return -1;
        }
    }
    return 0;
}

void accesslog_write(const accesslog_entry *e, bool json)
{
    buf b = BUF_INIT;
    buf_reserve(&b, 1024);
    accesslog_format(&b, e, json);
    int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
    pthread_once(&g_write_lock_once, write_lock_init);
    if (b.len <= PIPE_BUF)
        pthread_rwlock_rdlock(&g_write_lock);
    else
        pthread_rwlock_wrlock(&g_write_lock);
    (void)write_all(fd, b.data, b.len);
    pthread_rwlock_unlock(&g_write_lock);
    buf_free(&b);
}
