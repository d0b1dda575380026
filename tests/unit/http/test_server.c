/* test_server.c — the HTTP/1.1 front door end to end: each test runs a real http_server on a
 * libuv loop in a background thread, bound to a kernel-chosen loopback port, and drives it from
 * the test thread with plain blocking sockets (or an OpenSSL client). The test handler echoes
 * what it parsed and, by path, answers later from a timer (/later), streams chunks (/stream),
 * floods until backpressure (/flood) or holds the request until told (/hold). Sockets carry a
 * 10 s receive timeout only so that a broken server fails a test instead of hanging it. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <zlib.h>

#include "http/server.h"

/* ---------- server harness ---------- */

typedef struct tsrv {
    uv_loop_t loop;
    uv_async_t async;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    http_server_opts opts;
    http_server *s;
    int port, start_rc;
    char err[256];
    bool started, fn_done;
    void (*fn)(struct tsrv *t, void *arg);
    void *arg;
    atomic_int drained;
} tsrv;

/* what the handler saw, read by the test thread */
static struct {
    atomic_int dispatched, aborts, drains, flood_paused, flood_failed, held_set, max_active;
    atomic_int gone_at_release;
    atomic_long flood_bytes;
    http_request *held; /* loop thread only */
} g;

static void handler(http_request *r, void *ctx);

static void tsrv_on_async(uv_async_t *a)
{
    tsrv *t = a->data;
    pthread_mutex_lock(&t->mu);
    void (*fn)(tsrv *, void *) = t->fn;
    void *arg = t->arg;
    pthread_mutex_unlock(&t->mu);
    if (fn) fn(t, arg);
    pthread_mutex_lock(&t->mu);
    if (fn) {
        t->fn = NULL;
        t->fn_done = true;
        pthread_cond_broadcast(&t->cv);
    }
    pthread_mutex_unlock(&t->mu);
}

static void *tsrv_main(void *arg)
{
    tsrv *t = arg;
    uv_loop_init(&t->loop);
    uv_async_init(&t->loop, &t->async, tsrv_on_async);
    t->async.data = t;
    int rc = http_server_start(&t->loop, &t->opts, &t->s, t->err, sizeof t->err);
    pthread_mutex_lock(&t->mu);
    t->start_rc = rc;
    t->port = rc == 0 ? http_server_port(t->s) : 0;
    t->started = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    if (rc != 0) uv_close((uv_handle_t *)&t->async, NULL);
    uv_run(&t->loop, UV_RUN_DEFAULT);
    uv_loop_close(&t->loop);
    return NULL;
}

static http_conn_budget *g_budget; /* the next tsrv_start's connection budget (then reset) */

static tsrv *tsrv_start(const http_limits *limits, const char *cert, const char *key)
{
    memset(&g, 0, sizeof g);
    tsrv *t = calloc(1, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->opts.host = "127.0.0.1";
    t->opts.port = 0;
    if (limits)
        t->opts.limits = *limits;
    else
        http_limits_default(&t->opts.limits);
    t->opts.tls_cert_pem = cert;
    t->opts.tls_key_pem = key;
    t->opts.budget = g_budget;
    g_budget = NULL;
    t->opts.handler = handler;
    t->opts.handler_ctx = t;
    pthread_create(&t->thread, NULL, tsrv_main, t);
    pthread_mutex_lock(&t->mu);
    while (!t->started)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    if (t->start_rc != 0) fail_msg("server did not start: %s", t->err);
    assert_true(t->port > 0);
    return t;
}

/* runs fn(t, arg) on the loop thread and waits for it */
static void tsrv_call(tsrv *t, void (*fn)(tsrv *, void *), void *arg)
{
    pthread_mutex_lock(&t->mu);
    t->fn = fn;
    t->arg = arg;
    t->fn_done = false;
    pthread_mutex_unlock(&t->mu);
    uv_async_send(&t->async);
    pthread_mutex_lock(&t->mu);
    while (!t->fn_done)
        pthread_cond_wait(&t->cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
}

static void on_drained(void *ctx)
{
    tsrv *t = ctx;
    http_server_free(t->s);
    t->s = NULL;
    uv_close((uv_handle_t *)&t->async, NULL);
    atomic_store(&t->drained, 1);
}

static void do_drain(tsrv *t, void *arg)
{
    http_server_drain(t->s, on_drained, t);
}

static void do_read_active(tsrv *t, void *arg)
{
    *(size_t *)arg = http_server_active_requests(t->s);
}

static void do_set_limits(tsrv *t, void *arg)
{
    http_server_set_limits(t->s, arg);
}

static bool wait_for(atomic_int *v, int want)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(v) >= want) return true;
        usleep(1000);
    }
    return false;
}

static void tsrv_join(tsrv *t)
{
    assert_true(wait_for(&t->drained, 1)); /* done() fired */
    pthread_join(t->thread, NULL);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

static void tsrv_stop(tsrv *t)
{
    tsrv_call(t, do_drain, NULL);
    tsrv_join(t);
}

/* ---------- the test handler (loop thread) ---------- */

static long query_num(const http_request *r, const char *key)
{
    size_t kl = strlen(key);
    for (size_t i = 0; i + kl < r->query.n; i++)
        if ((i == 0 || r->query.p[i - 1] == '&') && memcmp(r->query.p + i, key, kl) == 0 &&
            r->query.p[i + kl] == '=')
            return strtol(r->query.p + i + kl + 1, NULL, 10);
    return 0;
}

static void echo(http_request *r)
{
    str hn = STR_LIT(""), hv = STR_LIT("");
    for (size_t i = 0; i < r->n_headers; i++)
        if (str_case_eq_c(r->headers[i].name, "x-test")) {
            hn = r->headers[i].name; /* stored as the server lower-cased it */
            hv = r->headers[i].value;
        }
    char *body =
        arena_printf(r->pool, "%.*s %.*s q=%.*s h=%.*s:%.*s b=%.*s", (int)r->method_name.n,
                     r->method_name.p, (int)r->path.n, r->path.p, (int)r->query.n, r->query.p,
                     (int)hn.n, hn.p, (int)hv.n, hv.p, (int)r->body.n, r->body.p);
    http_header h[] = {{STR_LIT("Content-Type"), STR_LIT("text/plain")}};
    http_respond(r, 200, h, 1, body, strlen(body));
}

typedef struct later {
    uv_timer_t timer; /* first: the close callback frees the whole struct */
    http_request *r;
    int n, i;
} later;

static void later_free(uv_handle_t *h)
{
    free(h);
}

static void later_fire(uv_timer_t *t)
{
    later *l = t->data;
    echo(l->r);
    uv_close((uv_handle_t *)t, later_free);
}

static void stream_tick(uv_timer_t *t)
{
    later *l = t->data;
    if (l->i < l->n) {
        char line[32];
        int n = snprintf(line, sizeof line, "chunk-%d\n", l->i++);
        http_stream_write(l->r, line, (size_t)n);
        return;
    }
    http_stream_end(l->r);
    uv_close((uv_handle_t *)t, later_free);
}

static char flood_chunk[16384];

static void flood_drain(http_request *r)
{
    atomic_fetch_add(&g.drains, 1);
    http_stream_write(r, "END", 3);
    http_stream_end(r);
}

static void flood(http_request *r)
{
    for (size_t i = 0; i < sizeof flood_chunk; i++)
        flood_chunk[i] = (char)('a' + i % 26);
    r->on_drain = flood_drain;
    http_stream_begin(r, 200, NULL, 0);
    long sent = 0;
    for (int i = 0; i < 8192; i++) {
        sent += (long)sizeof flood_chunk;
        if (!http_stream_write(r, flood_chunk, sizeof flood_chunk)) {
            atomic_store(&g.flood_bytes, sent);
            atomic_store(&g.flood_paused, 1);
            return;
        }
    }
    atomic_store(&g.flood_failed, 1);
    http_stream_end(r);
}

static void hold_abort(http_request *r)
{
    atomic_fetch_add(&g.aborts, 1);
}

static void handler(http_request *r, void *ctx)
{
    tsrv *t = ctx;
    int active = (int)http_server_active_requests(t->s);
    if (active > atomic_load(&g.max_active)) atomic_store(&g.max_active, active);
    atomic_fetch_add(&g.dispatched, 1);
    if (str_eq_c(r->path, "/later") || str_eq_c(r->path, "/stream")) {
        later *l = calloc(1, sizeof *l);
        l->r = r;
        l->n = (int)query_num(r, "n");
        uv_timer_init(&t->loop, &l->timer);
        l->timer.data = l;
        if (str_eq_c(r->path, "/later")) {
            uv_timer_start(&l->timer, later_fire, (uint64_t)query_num(r, "ms"), 0);
        } else {
            http_header h[] = {{STR_LIT("Content-Type"), STR_LIT("text/event-stream")}};
            http_stream_begin(r, 200, h, 1);
            uv_timer_start(&l->timer, stream_tick, 1, 1);
        }
        return;
    }
    if (str_eq_c(r->path, "/flood")) {
        flood(r);
        return;
    }
    if (str_eq_c(r->path, "/hold")) {
        r->on_abort = hold_abort;
        g.held = r;
        atomic_store(&g.held_set, 1);
        return;
    }
    echo(r);
}

static void do_release_held(tsrv *t, void *arg)
{
    http_request *r = g.held;
    g.held = NULL;
    atomic_store(&g.gone_at_release, http_request_client_gone(r) ? 1 : 0);
    http_respond(r, 200, NULL, 0, "released", 8);
}

/* ---------- blocking client ---------- */

typedef struct cli {
    int fd;
    SSL *ssl;
    char buf[65536];
    size_t len, off;
} cli;

typedef struct resp {
    int status;
    char head[16384];
    char *body;
    size_t body_len;
} resp;

static int cli_open(cli *c, int port, int rcvbuf)
{
    memset(c, 0, sizeof *c);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct timeval tv = {10, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (rcvbuf) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return connect(c->fd, (struct sockaddr *)&sa, sizeof sa);
}

static void cli_connect(cli *c, int port)
{
    assert_int_equal(cli_open(c, port, 0), 0);
}

static void cli_close(cli *c)
{
    if (c->ssl) SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
}

static void cli_send(cli *c, const char *data, size_t n)
{
    while (n) {
        ssize_t w = c->ssl ? SSL_write(c->ssl, data, (int)n) : send(c->fd, data, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        data += w;
        n -= (size_t)w;
    }
}

static void cli_sends(cli *c, const char *s)
{
    cli_send(c, s, strlen(s));
}

/* more bytes into c->buf; false on EOF, reset or timeout */
static bool cli_fill(cli *c)
{
    if (c->off) {
        memmove(c->buf, c->buf + c->off, c->len - c->off);
        c->len -= c->off;
        c->off = 0;
    }
    if (c->len == sizeof c->buf) return false;
    ssize_t n = c->ssl ? SSL_read(c->ssl, c->buf + c->len, (int)(sizeof c->buf - c->len))
                       : recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
    if (n <= 0) return false;
    c->len += (size_t)n;
    return true;
}

static bool cli_line(cli *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->off, '\n', c->len - c->off);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->off)) + 1;
            if (n >= cap) return false;
            memcpy(out, c->buf + c->off, n);
            out[n] = 0;
            c->off += n;
            return true;
        }
        if (!cli_fill(c)) return false;
    }
}

static bool cli_bytes(cli *c, char *out, size_t n)
{
    while (n) {
        if (c->off == c->len && !cli_fill(c)) return false;
        size_t k = c->len - c->off < n ? c->len - c->off : n;
        memcpy(out, c->buf + c->off, k);
        c->off += k;
        out += k;
        n -= k;
    }
    return true;
}

/* value of a response header (case-insensitive name), copied into a static buffer */
static const char *resp_header(const resp *r, const char *name)
{
    static char val[1024];
    size_t nl = strlen(name);
    const char *p = strchr(r->head, '\n');
    while (p && *++p) {
        const char *eol = strchr(p, '\n');
        if (!eol) break;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            size_t n = (size_t)(eol - v);
            while (n && (v[n - 1] == '\r' || v[n - 1] == ' '))
                n--;
            if (n >= sizeof val) n = sizeof val - 1;
            memcpy(val, v, n);
            val[n] = 0;
            return val;
        }
        p = eol;
    }
    return NULL;
}

static void resp_free(resp *r)
{
    free(r->body);
    r->body = NULL;
}

static bool body_append(resp *r, size_t *cap, const char *p, size_t n)
{
    if (r->body_len + n + 1 > *cap) {
        while (r->body_len + n + 1 > *cap)
            *cap = *cap ? *cap * 2 : 4096;
        r->body = realloc(r->body, *cap);
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = 0;
    return true;
}

/* Reads one response (de-chunking). false when the connection ended first. */
static bool cli_response(cli *c, resp *r, bool head_request)
{
    memset(r, 0, sizeof *r);
    char line[8192];
    size_t hl = 0;
    if (!cli_line(c, line, sizeof line)) return false;
    if (sscanf(line, "HTTP/1.%*d %d", &r->status) != 1) return false;
    for (;;) {
        size_t n = strlen(line);
        if (hl + n + 1 < sizeof r->head) {
            memcpy(r->head + hl, line, n + 1);
            hl += n;
        }
        if (strcmp(line, "\r\n") == 0) break;
        if (!cli_line(c, line, sizeof line)) return false;
    }
    size_t cap = 0;
    body_append(r, &cap, "", 0);
    if (head_request || r->status / 100 == 1 || r->status == 204 || r->status == 304) return true;
    const char *te = resp_header(r, "transfer-encoding");
    if (te && strcasecmp(te, "chunked") == 0) {
        for (;;) {
            if (!cli_line(c, line, sizeof line)) return false;
            size_t sz = strtoul(line, NULL, 16);
            if (sz == 0) {
                do {
                    if (!cli_line(c, line, sizeof line)) return false;
                } while (strcmp(line, "\r\n") != 0);
                return true;
            }
            char *tmp = malloc(sz + 2);
            bool ok = cli_bytes(c, tmp, sz + 2) && memcmp(tmp + sz, "\r\n", 2) == 0;
            if (ok) body_append(r, &cap, tmp, sz);
            free(tmp);
            if (!ok) return false;
        }
    }
    const char *cl = resp_header(r, "content-length");
    if (cl) {
        size_t n = strtoul(cl, NULL, 10);
        char *tmp = malloc(n + 1);
        bool ok = cli_bytes(c, tmp, n);
        if (ok) body_append(r, &cap, tmp, n);
        free(tmp);
        return ok;
    }
    /* no length: the body ends with the connection */
    for (;;) {
        if (c->off < c->len) {
            body_append(r, &cap, c->buf + c->off, c->len - c->off);
            c->off = c->len;
        }
        if (!cli_fill(c)) return true;
    }
}

/* true when the server closed the connection with nothing more to say */
static bool cli_eof(cli *c)
{
    if (c->off < c->len) return false;
    char b[256];
    ssize_t n = c->ssl ? SSL_read(c->ssl, b, sizeof b) : recv(c->fd, b, sizeof b, 0);
    if (n == 0) return true;
    if (n < 0 && !c->ssl) return errno == ECONNRESET;
    if (n < 0 && c->ssl) {
        int e = SSL_get_error(c->ssl, (int)n);
        return e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SYSCALL;
    }
    return false;
}

static void get_ok(cli *c, const char *req, const char *want_body)
{
    resp r;
    cli_sends(c, req);
    assert_true(cli_response(c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, want_body);
    resp_free(&r);
}

static void assert_error_json(const resp *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    const char *ct = resp_header(r, "content-type");
    assert_non_null(ct);
    assert_string_equal(ct, "application/json");
    char want[128];
    snprintf(want, sizeof want, "\"code\":\"%s\"", code);
    assert_non_null(strstr(r->body, want));
    assert_non_null(strstr(r->body, "\"type\":\"invalid_request_error\""));
    /* OpenAI SDKs read error.param: present, null when no parameter is at fault */
    assert_non_null(strstr(r->body, "\"param\":null"));
    assert_non_null(strstr(r->body, "{\"error\":{"));
    const char *conn = resp_header(r, "connection");
    assert_non_null(conn);
    assert_string_equal(conn, "close");
    assert_non_null(resp_header(r, "x-request-id"));
}

/* ---------- tests ---------- */

static void test_get_and_post(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    cli_connect(&c, t->port);
    resp r;
    cli_sends(&c, "GET /echo?x=1 HTTP/1.1\r\nHost: a\r\nX-TeSt: v\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "GET /echo q=x=1 h=x-test:v b=");
    assert_string_equal(resp_header(&r, "content-length"), "29");
    assert_string_equal(resp_header(&r, "content-type"), "text/plain");
    const char *date = resp_header(&r, "date");
    assert_non_null(date);
    assert_non_null(strstr(date, " GMT"));
    assert_null(resp_header(&r, "connection"));
    resp_free(&r);

    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=hello world");
    resp_free(&r);

    cli_sends(&c, "HEAD /echo HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_true(cli_response(&c, &r, true));
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "content-length"), "20"); /* as GET would send */
    resp_free(&r);
    get_ok(&c, "GET /after-head HTTP/1.1\r\nHost: t\r\n\r\n",
           "GET /after-head q= h=: b="); /* no body leaked */
    cli_close(&c);
    tsrv_stop(t);
}

static void test_keep_alive(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    get_ok(&c, "GET /one HTTP/1.1\r\nHost: a\r\n\r\n", "GET /one q= h=: b=");
    get_ok(&c, "GET /two HTTP/1.1\r\nHost: a\r\n\r\n", "GET /two q= h=: b=");
    /* Connection: close from the client ends it after the response */
    cli_sends(&c, "GET /three HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(resp_header(&r, "connection"), "close");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);

    /* HTTP/1.0 keeps the connection only when asked to */
    cli_connect(&c, t->port);
    cli_sends(&c, "GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(resp_header(&r, "connection"), "keep-alive");
    resp_free(&r);
    cli_sends(&c, "GET /b HTTP/1.0\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(r.body, "GET /b q= h=: b=");
    assert_string_equal(resp_header(&r, "connection"), "close");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    tsrv_stop(t);
}

static void test_pipelining(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    /* the first answer comes late from a timer: a server that dispatched the others meanwhile
     * would answer them first */
    cli_sends(&c, "GET /later?ms=50 HTTP/1.1\r\nHost: t\r\nX-Test: 1\r\n\r\n"
                  "GET /echo HTTP/1.1\r\nHost: t\r\nX-Test: 2\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nthree");
    const char *want[3] = {"GET /later q=ms=50 h=x-test:1 b=", "GET /echo q= h=x-test:2 b=",
                           "POST /echo q= h=: b=three"};
    for (int i = 0; i < 3; i++) {
        assert_true(cli_response(&c, &r, false));
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, want[i]);
        resp_free(&r);
    }
    assert_int_equal(atomic_load(&g.dispatched), 3);
    assert_int_equal(atomic_load(&g.max_active), 1); /* never two at once */
    /* the connection is still usable */
    get_ok(&c, "GET /four HTTP/1.1\r\nHost: t\r\n\r\n", "GET /four q= h=: b=");
    cli_close(&c);
    tsrv_stop(t);
}

static void test_chunked_request_body(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    cli_sends(&c,
              "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n");
    usleep(20000); /* second half in a separate read */
    cli_sends(&c, "6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=hello world");
    resp_free(&r);
    get_ok(&c, "GET /next HTTP/1.1\r\nHost: t\r\n\r\n", "GET /next q= h=: b=");
    cli_close(&c);
    tsrv_stop(t);
}

static void test_expect_continue(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    cli_sends(
        &c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_true(cli_response(&c, &r, false)); /* before any body byte was sent */
    assert_int_equal(r.status, 100);
    resp_free(&r);
    cli_sends(&c, "abcde");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=abcde");
    resp_free(&r);

    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nExpect: teapot\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 417, "expectation_failed");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_header_limit_431(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.max_header_bytes = 1024;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    cli c;
    resp r;
    char big[2000], req[2200];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;

    cli_connect(&c, t->port);
    snprintf(req, sizeof req, "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: %.*s\r\n\r\n", 500, big);
    get_ok(&c, req, "GET /echo q= h=: b="); /* under the limit */
    snprintf(req, sizeof req, "GET /echo HTTP/1.1\r\nHost: t\r\nX-Big: %s\r\n\r\n", big);
    cli_sends(&c, req);
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 431, "request_header_fields_too_large");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_body_limit_413(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.max_body_bytes = 1000;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    cli c;
    resp r;
    char body[1501], req[2000];
    memset(body, 'b', sizeof body - 1);
    body[sizeof body - 1] = 0;

    /* exactly at the limit passes */
    cli_connect(&c, t->port);
    snprintf(req, sizeof req, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n%.*s",
             1000, body);
    cli_sends(&c, req);
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("POST /echo q= h=: b=") + 1000);
    resp_free(&r);
    /* declared too big: answered at once, without sending any of the body */
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 413, "request_too_large");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);

    /* chunked, overflowing as it arrives */
    cli_connect(&c, t->port);
    snprintf(req, sizeof req,
             "POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: "
             "chunked\r\n\r\n2ee\r\n%.*s\r\n2ee\r\n%.*s\r\n"
             "0\r\n\r\n",
             750, body, 750, body);
    cli_sends(&c, req);
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 413, "request_too_large");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_timeouts_408_and_idle(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.header_timeout_ms = 150;
    l.body_timeout_ms = 150;
    l.idle_timeout_ms = 60000; /* the idle timer must not be what ends the two below */
    tsrv *t = tsrv_start(&l, NULL, NULL);
    cli c;
    resp r;

    cli_connect(&c, t->port);
    cli_sends(&c, "GET /echo HTTP/1.1\r\nHost: a\r\n"); /* headers never end */
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 408, "request_timeout");
    assert_non_null(strstr(r.body, "headers"));
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);

    cli_connect(&c, t->port);
    cli_sends(
        &c,
        "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"); /* body never ends */
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 408, "request_timeout");
    assert_non_null(strstr(r.body, "body"));
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);

    /* idle keep-alive: closed without a word (limits changed live) */
    l.header_timeout_ms = 60000;
    l.body_timeout_ms = 60000;
    l.idle_timeout_ms = 150;
    tsrv_call(t, do_set_limits, &l);
    cli_connect(&c, t->port);
    get_ok(&c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", "GET /x q= h=: b=");
    assert_true(cli_eof(&c));
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_garbage_400(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    cli_sends(&c, "\x01\x02\x03 nonsense\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 400, "bad_request");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    /* a broken request after a good one on the same connection */
    cli_connect(&c, t->port);
    get_ok(&c, "GET /ok HTTP/1.1\r\nHost: t\r\n\r\n", "GET /ok q= h=: b=");
    cli_sends(&c, "GET /bad HTTP/1.1\r\nHost: t\r\nContent-Length: nope\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 400, "bad_request");
    resp_free(&r);
    assert_true(cli_eof(&c));
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_streaming_response(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    const char *want = "chunk-0\nchunk-1\nchunk-2\nchunk-3\nchunk-4\n";
    cli_connect(&c, t->port);
    cli_sends(&c, "GET /stream?n=5 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(resp_header(&r, "transfer-encoding"), "chunked");
    assert_null(resp_header(&r, "content-length"));
    assert_string_equal(resp_header(&r, "content-type"), "text/event-stream");
    assert_string_equal(r.body, want);
    resp_free(&r);
    get_ok(&c, "GET /after HTTP/1.1\r\nHost: t\r\n\r\n",
           "GET /after q= h=: b="); /* still in sync */
    cli_close(&c);

    /* HTTP/1.0 has no chunked coding: raw body, then close */
    cli_connect(&c, t->port);
    cli_sends(&c, "GET /stream?n=5 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_null(resp_header(&r, "transfer-encoding"));
    assert_string_equal(resp_header(&r, "connection"), "close");
    assert_string_equal(r.body, want);
    resp_free(&r);
    cli_close(&c);
    tsrv_stop(t);
}

static void test_backpressure(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.write_high_watermark = 256 * 1024;
    l.write_low_watermark = 16 * 1024;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    cli c;
    resp r;
    assert_int_equal(cli_open(&c, t->port, 4096), 0); /* small window: the kernel fills fast */
    cli_sends(&c, "GET /flood HTTP/1.1\r\nHost: t\r\n\r\n");
    /* we read nothing, so the server's queue grows until http_stream_write says "pause" */
    while (!atomic_load(&g.flood_paused) && !atomic_load(&g.flood_failed))
        usleep(1000);
    assert_int_equal(atomic_load(&g.flood_failed), 0);
    assert_int_equal(atomic_load(&g.flood_paused), 1);
    assert_int_equal(atomic_load(&g.drains), 0);
    /* reading drains the queue; on_drain then ends the stream */
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    long sent = atomic_load(&g.flood_bytes);
    assert_int_equal(r.body_len, (size_t)sent + 3);
    assert_memory_equal(r.body + sent, "END", 3);
    for (long i = 0; i < sent; i += 4099)
        assert_int_equal(r.body[i], 'a' + (i % 16384) % 26);
    resp_free(&r);
    assert_int_equal(atomic_load(&g.drains), 1);
    get_ok(&c, "GET /after HTTP/1.1\r\nHost: t\r\n\r\n", "GET /after q= h=: b=");
    cli_close(&c);
    tsrv_stop(t);
}

static void test_client_disconnect_abort(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    size_t active = 99;
    cli_connect(&c, t->port);
    cli_sends(&c, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(wait_for(&g.held_set, 1));
    tsrv_call(t, do_read_active, &active);
    assert_int_equal(active, 1);
    cli_close(&c);
    assert_true(wait_for(&g.aborts, 1));
    /* the handler still owns the request; finishing it now drops the write */
    tsrv_call(t, do_release_held, NULL);
    assert_int_equal(atomic_load(&g.gone_at_release), 1);
    tsrv_call(t, do_read_active, &active);
    assert_int_equal(active, 0);
    assert_int_equal(atomic_load(&g.aborts), 1); /* once */
    tsrv_stop(t);                                /* completes only once the connection was freed */
}

static void test_request_id(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c;
    resp r;
    char first[64];
    cli_connect(&c, t->port);
    cli_sends(&c, "GET /x HTTP/1.1\r\nHost: t\r\nX-Request-Id: abc-123\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(resp_header(&r, "x-request-id"), "abc-123");
    resp_free(&r);

    cli_sends(&c, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    const char *id = resp_header(&r, "x-request-id");
    assert_non_null(id);
    assert_int_equal(strlen(id), 16);
    assert_int_equal(strspn(id, "0123456789abcdef"), 16);
    snprintf(first, sizeof first, "%s", id);
    resp_free(&r);

    /* 40 characters: too long, replaced */
    cli_sends(&c, "GET /x HTTP/1.1\r\nHost: t\r\nX-Request-Id: "
                  "0123456789012345678901234567890123456789\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    id = resp_header(&r, "x-request-id");
    assert_int_equal(strlen(id), 16);
    assert_string_not_equal(id, first);
    resp_free(&r);
    /* 39 characters: kept */
    cli_sends(&c, "GET /x HTTP/1.1\r\nHost: t\r\nX-Request-Id: "
                  "012345678901234567890123456789012345678\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(resp_header(&r, "x-request-id"), "012345678901234567890123456789012345678");
    resp_free(&r);
    /* server-generated errors carry the client's id too */
    cli_sends(&c, "POST /x HTTP/1.1\r\nHost: t\r\nX-Request-Id: err-1\r\nExpect: nope\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 417);
    assert_string_equal(resp_header(&r, "x-request-id"), "err-1");
    resp_free(&r);
    cli_close(&c);
    tsrv_stop(t);
}

static void test_drain(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli idle, busy, late;
    resp r;
    cli_connect(&idle, t->port);
    get_ok(&idle, "GET /x HTTP/1.1\r\nHost: t\r\n\r\n", "GET /x q= h=: b=");
    cli_connect(&busy, t->port);
    cli_sends(&busy, "GET /hold HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_true(wait_for(&g.held_set, 1));

    tsrv_call(t, do_drain, NULL);
    assert_true(cli_eof(&idle)); /* idle keep-alive connection closed */
    cli_close(&idle);
    assert_int_not_equal(cli_open(&late, t->port, 0), 0); /* listener gone */
    cli_close(&late);
    assert_int_equal(atomic_load(&t->drained), 0); /* the held request is still in flight */

    tsrv_call(t, do_release_held, NULL);
    assert_true(cli_response(&busy, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "released");
    assert_string_equal(resp_header(&r, "connection"), "close");
    resp_free(&r);
    assert_true(cli_eof(&busy));
    cli_close(&busy);
    assert_int_equal(atomic_load(&g.aborts), 0);
    tsrv_join(t); /* done() fired and the loop ran out of handles */
}

/* ---------- TLS ---------- */

static char *bio_string(BIO *b)
{
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *s = malloc((size_t)n + 1);
    memcpy(s, p, (size_t)n);
    s[n] = 0;
    return s;
}

static X509 *make_cert(char **cert_pem, char **key_pem)
{
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    assert_non_null(pk);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, "IP:127.0.0.1");
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    BIO *cb = BIO_new(BIO_s_mem()), *kb = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(cb, x);
    PEM_write_bio_PrivateKey(kb, pk, NULL, NULL, 0, NULL, NULL);
    *cert_pem = bio_string(cb);
    *key_pem = bio_string(kb);
    BIO_free(cb);
    BIO_free(kb);
    EVP_PKEY_free(pk);
    return x;
}

static void tls_connect(cli *c, int port, X509 *trust, int max_version)
{
    cli_connect(c, port);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    X509_STORE_add_cert(SSL_CTX_get_cert_store(ctx), trust);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (max_version) SSL_CTX_set_max_proto_version(ctx, max_version);
    c->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL keeps its own reference */
    X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), "127.0.0.1");
    SSL_set_alpn_protos(c->ssl, (const unsigned char *)"\x02h2\x08http/1.1", 12);
    SSL_set_fd(c->ssl, c->fd);
    if (SSL_connect(c->ssl) != 1) {
        char e[256];
        ERR_error_string_n(ERR_get_error(), e, sizeof e);
        fail_msg("TLS handshake failed: %s", e);
    }
    assert_int_equal(SSL_get_verify_result(c->ssl), X509_V_OK);
    const unsigned char *alpn;
    unsigned alpn_len;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alpn_len);
    assert_int_equal(alpn_len, 8);
    assert_memory_equal(alpn, "http/1.1", 8);
}

static void test_tls(void **state)
{
    char *cert, *key;
    X509 *x = make_cert(&cert, &key);
    tsrv *t = tsrv_start(NULL, cert, key);
    cli c;

    tls_connect(&c, t->port, x, 0);
    assert_int_equal(SSL_version(c.ssl), TLS1_3_VERSION);
    get_ok(&c, "GET /tls?a=b HTTP/1.1\r\nHost: t\r\nX-Test: s\r\n\r\n",
           "GET /tls q=a=b h=x-test:s b=");
    get_ok(&c, "POST /tls HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nsecret",
           "POST /tls q= h=: b=secret");
    cli_sends(&c, "GET /stream?n=3 HTTP/1.1\r\nHost: t\r\n\r\n");
    resp r;
    assert_true(cli_response(&c, &r, false));
    assert_string_equal(r.body, "chunk-0\nchunk-1\nchunk-2\n");
    resp_free(&r);
    cli_close(&c);

    tls_connect(&c, t->port, x, TLS1_2_VERSION);
    assert_int_equal(SSL_version(c.ssl), TLS1_2_VERSION);
    get_ok(&c, "GET /v12 HTTP/1.1\r\nHost: t\r\n\r\n", "GET /v12 q= h=: b=");
    cli_close(&c);

    /* plaintext HTTP to the TLS port: the handshake fails and the connection closes */
    cli_connect(&c, t->port);
    cli_sends(&c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    char junk[4096];
    size_t got = 0;
    ssize_t n;
    while ((n = recv(c.fd, junk + got, sizeof junk - got, 0)) > 0)
        got += (size_t)n;
    assert_true(n == 0 || errno == ECONNRESET); /* closed, not timed out */
    assert_false(got >= 5 && memcmp(junk, "HTTP/", 5) == 0);
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 4);
    tsrv_stop(t);

    X509_free(x);
    free(cert);
    free(key);
}

static void test_start_errors(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_server_opts o = {.host = "not-an-ip", .port = 0, .handler = handler};
    http_limits_default(&o.limits);
    http_server *s = NULL;
    char err[256];
    assert_true(http_server_start(&loop, &o, &s, err, sizeof err) < 0);
    assert_null(s);
    assert_non_null(strstr(err, "not-an-ip"));
    o.host = "127.0.0.1";
    o.tls_cert_pem = "not a certificate";
    o.tls_key_pem = "not a key";
    assert_true(http_server_start(&loop, &o, &s, err, sizeof err) < 0);
    assert_non_null(strstr(err, "tls.crt"));
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
}

/* one request on a fresh connection: the answer's status, or 0 when the server closed the
 * connection without one; the connection must be closed after it either way */
static int answer_status(tsrv *t, const char *req, size_t n, const char *want_in_body)
{
    cli c;
    resp r;
    cli_connect(&c, t->port);
    cli_send(&c, req, n);
    int status = 0;
    if (cli_response(&c, &r, false)) {
        status = r.status;
        assert_string_equal(resp_header(&r, "connection"), "close");
        if (want_in_body && !strstr(r.body, want_in_body))
            fail_msg("answer %d to %.60s has no \"%s\": %s", r.status, req, want_in_body, r.body);
        resp_free(&r);
    }
    assert_true(cli_eof(&c));
    cli_close(&c);
    return status;
}

#define ANSWER(t, lit, want) answer_status(t, lit, sizeof lit - 1, want)

static void test_nginx_edge_answers(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.max_body_bytes = 1000;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\n\r\n", "without a Host"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "Host"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost:\r\n\r\n", "not a valid host"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.0\r\nHost: a b\r\n\r\n", "not a valid host"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost: ../x\r\n\r\n", "not a valid host"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/2.0"), 505);
    assert_int_equal(ANSWER(t, "GET /x HTTP/3.1\r\nHost: a\r\n\r\n", "HTTP/3.1"), 505);
    assert_int_equal(ANSWER(t, "GET /x\r\n", NULL), 0); /* HTTP/0.9: closed, no answer */
    assert_int_equal(ANSWER(t, "GET /x HTTP/0.9\r\nHost: a\r\n\r\n", "HTTP/0.9"), 400);
    assert_int_equal(
        ANSWER(t,
               "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               "0\r\n\r\n",
               "gzip, chunked"),
        501);
    assert_int_equal(
        ANSWER(t, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", "gzip"), 501);
    assert_int_equal(ANSWER(t,
                            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
                            "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                            "more than once"),
                     400);
    assert_int_equal(
        ANSWER(t, "POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "HTTP/1.0"),
        400);
    assert_int_equal(ANSWER(t,
                            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity,\r\n"
                            " chunked\r\n\r\n0\r\n\r\n",
                            "obs-fold"),
                     400);
    assert_int_equal(ANSWER(t,
                            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n\tchunked\r\n\r\n"
                            "0\r\n\r\n",
                            "obs-fold"),
                     400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost: a\r\nX-Test : v\r\n\r\n", "header name"),
                     400);
    /* an empty header value is not a fold */
    cli c;
    cli_connect(&c, t->port);
    get_ok(&c, "GET /e HTTP/1.1\r\nHost: a\r\nX-Test:\r\nX-Other: 1\r\n\r\n",
           "GET /e q= h=x-test: b=");
    cli_close(&c);
    /* http_parser without strict checks takes any byte after these CRs, and any "HTTP/" */
    assert_int_equal(ANSWER(t, "GET /x HXXX/1.1\r\nHost: a\r\n\r\n", "HTTP/"), 400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost: a\r\n\rXGET /y HTTP/1.1\r\n\r\n", "CR"),
                     400);
    assert_int_equal(ANSWER(t,
                            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "2\rXab\r\n0\r\n\r\n",
                            "CR"),
                     400);
    assert_int_equal(ANSWER(t, "GET /x HTTP/1.1\r\nHost: a\r\nX-Test:\rY: b\r\n\r\n", NULL), 400);
    /* CRs inside a body are data */
    cli_connect(&c, t->port);
    get_ok(&c,
           "POST /cr HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\r\r\r\n"
           "1;ext=1\r\n\r\r\n0\r\n\r\n",
           "POST /cr q= h=: b=\r\r\r");
    get_ok(&c, "POST /cr HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n\r\rx",
           "POST /cr q= h=: b=\r\rx");
    cli_close(&c);
    /* chunk data longer than its size: the bytes after it are not CRLF */
    assert_int_equal(ANSWER(t,
                            "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "2\r\nabXX0\r\n\r\n",
                            "CRLF"),
                     400);
    assert_int_equal(atomic_load(&g.dispatched), 3);
    tsrv_stop(t);
}

/* The checks that look at raw bytes hold when the bytes come in separate reads. */
static void test_edge_checks_across_reads(void **state)
{
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    static const char *const split[][2] = {
        {"GET /x HT", "XP/1.1\r\nHost: a\r\n\r\n"},
        {"GET /x ", "HTTX/1.1\r\nHost: a\r\n\r\n"},
        {"GET /x HTTP/1.1\r\nHost: a\r\n\r", "XGET /y HTTP/1.1\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof split / sizeof split[0]; i++) {
        cli c;
        resp r;
        cli_connect(&c, t->port);
        cli_sends(&c, split[i][0]);
        usleep(50 * 1000);
        cli_sends(&c, split[i][1]);
        assert_true(cli_response(&c, &r, false));
        assert_int_equal(r.status, 400);
        resp_free(&r);
        cli_close(&c);
    }
    static const char *const folded[][2] = {
        {"GET /x HTTP/1.1\r\nHost: a\r\nX-Test: a\r\n", " b\r\n\r\n"},
        {"GET /x HTTP/1.1\r\nHost: a\r\nX-Test: a\r\n ", "b\r\n\r\n"},
        {"GET /x HTTP/1.1\r\nHost: a\r\nX-Test:\r\n ", " b\r\n\r\n"},
    };
    for (size_t i = 0; i < sizeof folded / sizeof folded[0]; i++) {
        cli c;
        resp r;
        cli_connect(&c, t->port);
        cli_sends(&c, folded[i][0]);
        usleep(50 * 1000); /* a separate read */
        cli_sends(&c, folded[i][1]);
        assert_true(cli_response(&c, &r, false));
        assert_int_equal(r.status, 400);
        assert_non_null(strstr(r.body, "obs-fold"));
        resp_free(&r);
        cli_close(&c);
    }
    /* a chunk's data ends at the end of a read; the next read must start with CRLF */
    cli c;
    resp r;
    cli_connect(&c, t->port);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc");
    usleep(50 * 1000);
    cli_sends(&c, "\r\n0\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=abc");
    resp_free(&r);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc");
    usleep(50 * 1000);
    cli_sends(&c, "\rX0\r\n\r\n");
    assert_true(cli_response(&c, &r, false));
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "CRLF"));
    resp_free(&r);
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 1);
    tsrv_stop(t);
}

static void test_chunk_size_over_limit_413_at_once(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.max_body_bytes = 1000;
    l.body_timeout_ms = 60000; /* the answer must not wait for it */
    tsrv *t = tsrv_start(&l, NULL, NULL);
    cli c;
    resp r;
    cli_connect(&c, t->port);
    struct timeval tv = {5, 0}; /* far below the body timeout */
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\nab");
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 413, "request_too_large");
    assert_non_null(strstr(r.body, "chunk of 1001 bytes"));
    resp_free(&r);
    cli_close(&c);
    /* the chunks add up past the limit: the second size line is enough */
    cli_connect(&c, t->port);
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    char big[700];
    memset(big, 'x', sizeof big);
    char req[1000];
    int n = snprintf(req, sizeof req,
                     "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                     "2bc\r\n%.700s\r\n12d\r\nab",
                     big);
    cli_send(&c, req, (size_t)n);
    assert_true(cli_response(&c, &r, false));
    assert_error_json(&r, 413, "request_too_large");
    resp_free(&r);
    cli_close(&c);
    assert_int_equal(atomic_load(&g.dispatched), 0);
    tsrv_stop(t);
}

/* gzip (windowBits 31) or zlib (15) of data */
static size_t pack(const char *data, size_t n, int wbits, unsigned char *out, size_t cap)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, wbits, 8, Z_DEFAULT_STRATEGY), Z_OK);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    size_t len = z.total_out;
    deflateEnd(&z);
    return len;
}

static int post_encoded(tsrv *t, const char *coding, const unsigned char *body, size_t n, resp *r)
{
    cli c;
    cli_connect(&c, t->port);
    char head[256];
    int hn = snprintf(head, sizeof head,
                      "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Encoding: %s\r\n"
                      "Content-Length: %zu\r\nConnection: close\r\n\r\n",
                      coding, n);
    cli_send(&c, head, (size_t)hn);
    cli_send(&c, (const char *)body, n);
    bool ok = cli_response(&c, r, false);
    cli_close(&c);
    return ok ? r->status : 0;
}

static void test_content_encoding(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.max_body_bytes = 1000;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    static unsigned char packed[4096];
    resp r;
    const char *text = "hello, compressed world";
    size_t n = pack(text, strlen(text), 31, packed, sizeof packed);
    assert_int_equal(post_encoded(t, "gzip", packed, n, &r), 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=hello, compressed world");
    resp_free(&r);
    n = pack(text, strlen(text), 15, packed, sizeof packed);
    assert_int_equal(post_encoded(t, "deflate", packed, n, &r), 200);
    assert_string_equal(r.body, "POST /echo q= h=: b=hello, compressed world");
    resp_free(&r);
    /* exactly the limit decoded passes, one byte more is 413 (a bomb stops there) */
    static char zeros[200000];
    memset(zeros, 'z', sizeof zeros);
    n = pack(zeros, 1000, 31, packed, sizeof packed);
    assert_int_equal(post_encoded(t, "gzip", packed, n, &r), 200);
    assert_int_equal(r.body_len, strlen("POST /echo q= h=: b=") + 1000);
    resp_free(&r);
    n = pack(zeros, 1001, 31, packed, sizeof packed);
    assert_int_equal(post_encoded(t, "gzip", packed, n, &r), 413);
    assert_non_null(strstr(r.body, "decompressed"));
    resp_free(&r);
    n = pack(zeros, sizeof zeros, 31, packed, sizeof packed);
    assert_true(n < 1000);
    assert_int_equal(post_encoded(t, "gzip", packed, n, &r), 413);
    resp_free(&r);
    /* broken, truncated, trailing garbage, unsupported */
    assert_int_equal(post_encoded(t, "gzip", (const unsigned char *)"plain", 5, &r), 400);
    resp_free(&r);
    n = pack(text, strlen(text), 31, packed, sizeof packed);
    assert_int_equal(post_encoded(t, "gzip", packed, n - 4, &r), 400);
    assert_non_null(strstr(r.body, "ends before the end"));
    resp_free(&r);
    n = pack(text, strlen(text), 15, packed, sizeof packed);
    memcpy(packed + n, "junk", 4);
    assert_int_equal(post_encoded(t, "deflate", packed, n + 4, &r), 400);
    assert_non_null(strstr(r.body, "after the end"));
    resp_free(&r);
    assert_int_equal(post_encoded(t, "br", (const unsigned char *)"x", 1, &r), 415);
    assert_error_json(&r, 415, "unsupported_content_encoding");
    resp_free(&r);
    assert_int_equal(post_encoded(t, "gzip, gzip", (const unsigned char *)"x", 1, &r), 415);
    resp_free(&r);
    assert_int_equal(atomic_load(&g.dispatched), 3);
    tsrv_stop(t);
}

/* Slowloris and slow bodies: bytes dripping in do not extend the header or body timeout. */
static void test_slow_drip_408(void **state)
{
    http_limits l;
    http_limits_default(&l);
    l.header_timeout_ms = 300;
    l.body_timeout_ms = 300;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    const char *phases[] = {"headers", "body"};
    for (int k = 0; k < 2; k++) {
        cli c;
        resp r;
        cli_connect(&c, t->port);
        if (k == 1)
            cli_sends(&c, "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
        const char *drip = k == 0
                               ? "GET /echo HTTP/1.1\r\nHost: a\r\nX-Drip: aaaaaaaaaaaaaaaaaaaaaa"
                                 "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                               : "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
                                 "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
        size_t sent = 0;
        /* one byte every 20 ms, far longer in all than the timeout */
        while (drip[sent]) {
            if (send(c.fd, drip + sent, 1, MSG_NOSIGNAL) != 1) break;
            sent++;
            usleep(20 * 1000);
        }
        assert_true(cli_response(&c, &r, false));
        assert_error_json(&r, 408, "request_timeout");
        assert_non_null(strstr(r.body, phases[k]));
        resp_free(&r);
        cli_close(&c);
    }
    assert_int_equal(atomic_load(&g.dispatched), 0);
    tsrv_stop(t);
}

static void on_closed_free(void *ctx)
{
    (void)ctx;
}

/* The first server of a process binds the port exclusively: a second "process" (another
 * exclusive server) is refused with a message naming the address, while the same process's
 * other servers join with SO_REUSEPORT. */
static void test_exclusive_port(void **state)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    http_server_opts o = {.host = "127.0.0.1", .port = 0, .handler = handler, .exclusive = true};
    http_limits_default(&o.limits);
    http_server *a = NULL, *b = NULL, *x = NULL;
    char err[256];
    assert_int_equal(http_server_start(&loop, &o, &a, err, sizeof err), 0);
    o.port = http_server_port(a);
    o.exclusive = false;
    assert_int_equal(http_server_start(&loop, &o, &b, err, sizeof err), 0); /* a worker joins */
    o.exclusive = true;
    assert_int_equal(http_server_start(&loop, &o, &x, err, sizeof err), UV_EADDRINUSE);
    assert_null(x);
    char want[64];
    snprintf(want, sizeof want, "cannot listen on 127.0.0.1:%d: address already in use", o.port);
    if (!strstr(err, want)) fail_msg("error \"%s\" does not say \"%s\"", err, want);
    http_server_drain(a, on_closed_free, NULL);
    http_server_drain(b, on_closed_free, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    http_server_free(a);
    http_server_free(b);
    /* once the port is free, an exclusive server binds it again */
    assert_int_equal(http_server_start(&loop, &o, &x, err, sizeof err), 0);
    http_server_drain(x, on_closed_free, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    http_server_free(x);
    assert_int_equal(uv_loop_close(&loop), 0);
}

static bool wait_open(http_conn_budget *b, size_t want)
{
    for (int i = 0; i < 500; i++) {
        if (atomic_load(&b->open) == want) return true;
        usleep(10 * 1000);
    }
    return false;
}

static void test_max_connections(void **state)
{
    static http_conn_budget b;
    memset(&b, 0, sizeof b);
    atomic_store(&b.max, 3);
    g_budget = &b;
    tsrv *t = tsrv_start(NULL, NULL, NULL);
    cli c1, c2, c3, c4, c5;
    resp r;
    cli_connect(&c1, t->port);
    assert_true(wait_open(&b, 1));
    cli_connect(&c2, t->port);
    assert_true(wait_open(&b, 2));
    cli_connect(&c3, t->port);
    assert_true(wait_open(&b, 3));
    /* a used connection becomes the most recent idle one */
    get_ok(&c2, "GET /two HTTP/1.1\r\nHost: a\r\n\r\n", "GET /two q= h=: b=");
    /* at the limit: the oldest idle connection (c1) is closed for the new one */
    cli_connect(&c4, t->port);
    get_ok(&c4, "GET /four HTTP/1.1\r\nHost: a\r\n\r\n", "GET /four q= h=: b=");
    assert_true(cli_eof(&c1));
    assert_int_equal(atomic_load(&b.idle_closed), 1);
    assert_true(wait_open(&b, 3));
    /* the next one closes c3 (idle since it connected), not c2 (used since) */
    cli_connect(&c5, t->port);
    get_ok(&c5, "GET /five HTTP/1.1\r\nHost: a\r\n\r\n", "GET /five q= h=: b=");
    assert_true(cli_eof(&c3));
    get_ok(&c2, "GET /two-again HTTP/1.1\r\nHost: a\r\n\r\n", "GET /two-again q= h=: b=");
    assert_int_equal(atomic_load(&b.idle_closed), 2);
    /* nothing idle (each is in the middle of a request): a new connection is refused */
    cli_sends(&c2, "GET /x HTTP/1.1\r\n");
    cli_sends(&c4, "GET /x HTTP/1.1\r\n");
    cli_sends(&c5, "GET /x HTTP/1.1\r\n");
    usleep(50 * 1000);
    cli c6;
    cli_connect(&c6, t->port);
    cli_sends(&c6, "GET /six HTTP/1.1\r\nHost: a\r\n\r\n");
    assert_false(cli_response(&c6, &r, false));
    cli_close(&c6);
    assert_int_equal(atomic_load(&b.refused), 1);
    /* the busy ones are served on */
    cli_sends(&c2, "Host: a\r\n\r\n");
    assert_true(cli_response(&c2, &r, false));
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(&c1);
    cli_close(&c2);
    cli_close(&c3);
    cli_close(&c4);
    cli_close(&c5);
    assert_true(wait_open(&b, 0));
    tsrv_stop(t);
}

/* An idle connection whose last response is still being written is not closed for room. */
static void test_max_connections_spares_unsent(void **state)
{
    static http_conn_budget b;
    memset(&b, 0, sizeof b);
    atomic_store(&b.max, 2);
    g_budget = &b;
    http_limits l;
    http_limits_default(&l);
    l.max_body_bytes = 16 * 1024 * 1024;
    tsrv *t = tsrv_start(&l, NULL, NULL);
    enum { BODY = 12 * 1024 * 1024 };
    char *body = malloc(BODY);
    memset(body, 'w', BODY);
    cli slow, idle, fresh;
    assert_int_equal(cli_open(&slow, t->port, 4096), 0); /* a small window: the answer waits */
    char head[128];
    int hn = snprintf(head, sizeof head,
                      "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n", (int)BODY);
    cli_send(&slow, head, (size_t)hn);
    cli_send(&slow, body, BODY);
    assert_true(wait_for(&g.dispatched, 1)); /* answered at once: the echo sits in the queue */
    cli_connect(&idle, t->port);
    assert_true(wait_open(&b, 2));
    /* at the limit: the oldest idle connection is the slow reader's, still writing: spared */
    cli_connect(&fresh, t->port);
    get_ok(&fresh, "GET /f HTTP/1.1\r\nHost: a\r\n\r\n", "GET /f q= h=: b=");
    assert_true(cli_eof(&idle));
    assert_int_equal(atomic_load(&b.idle_closed), 1);
    /* the slow reader gets its whole answer */
    resp r;
    assert_true(cli_response(&slow, &r, false));
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, strlen("POST /echo q= h=: b=") + BODY);
    resp_free(&r);
    free(body);
    cli_close(&slow);
    cli_close(&idle);
    cli_close(&fresh);
    tsrv_stop(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_and_post),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_pipelining),
        cmocka_unit_test(test_chunked_request_body),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_header_limit_431),
        cmocka_unit_test(test_body_limit_413),
        cmocka_unit_test(test_timeouts_408_and_idle),
        cmocka_unit_test(test_garbage_400),
        cmocka_unit_test(test_streaming_response),
        cmocka_unit_test(test_backpressure),
        cmocka_unit_test(test_client_disconnect_abort),
        cmocka_unit_test(test_request_id),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_tls),
        cmocka_unit_test(test_start_errors),
        cmocka_unit_test(test_nginx_edge_answers),
        cmocka_unit_test(test_edge_checks_across_reads),
        cmocka_unit_test(test_chunk_size_over_limit_413_at_once),
        cmocka_unit_test(test_content_encoding),
        cmocka_unit_test(test_slow_drip_408),
        cmocka_unit_test(test_exclusive_port),
        cmocka_unit_test(test_max_connections),
        cmocka_unit_test(test_max_connections_spares_unsent),
    };
    /* HTTP_TEST_FILTER=test_tls runs one test (cmocka's wildcard pattern) */
    const char *filter = getenv("HTTP_TEST_FILTER");
    if (filter) cmocka_set_test_filter(filter);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
