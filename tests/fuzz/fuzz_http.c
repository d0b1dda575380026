/* fuzz_http.c — the HTTP/1.1 server (src/http/server.c: http_parser callbacks, size limits,
 * pipelining, chunked bodies, Expect, keep-alive, lingering close, streamed responses) driven
 * through a real connection: a server on 127.0.0.1 (port 0) on a private uv loop, and per input
 * one client socket that sends the input and reads everything the server answers.
 *
 * The first input byte shapes the delivery, the rest is what the client sends:
 *   bits 0-2  the number of extra write boundaries (0-7), at offsets derived from the byte, so
 *             requests arrive cut anywhere (partial reads) and several per read (pipelining)
 *   bit 3     the server with small limits (1 KiB of headers, 2 KiB of body, 512-byte write
 *             watermark) instead of the defaults
 * The handler answers by the path's first character after '/': a echoes the body, s streams it
 * (chunked), d answers later (from the driver loop, with pipelined requests held meanwhile),
 * w streams later in three steps, n answers 204, m 304, x with headers the server must drop,
 * anything else 404. The client half-closes once the server has gone quiet and reads until the
 * server closes.
 *
 * Checks beyond "no crash": request fields the server hands over are consistent (path and query
 * inside the target, body NUL-terminated, lower-cased header names); the bytes the client reads
 * are a well-formed sequence of HTTP responses (http_parser in response mode), whenever no
 * request was cut short by the client's own half-close. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#include "core/log.h"
#include "http/server.h"

typedef struct later {
    http_request *r;
    int kind; /* 'd' or 'w' */
    int step;
    struct later *next;
} later;

static uv_loop_t loop;
static http_server *srv_default, *srv_small;
static int port_default, port_small;
static later *pending;
static int aborts;    /* requests whose client went away this input */
static int n_methods; /* methods of the requests answered, in order (HEAD needs no body) */
static int methods[4096];

static void on_abort(http_request *r)
{
    aborts++;
}

static void check_request(const http_request *r)
{
    const char *t = r->target.p, *te = r->target.p + r->target.n;
    /* the path lies in the target, except "/" for an absolute-form target without one */
    bool slash = r->path.n == 1 && r->path.p[0] == '/';
    if (r->path.n && !slash && (r->path.p < t || r->path.p + r->path.n > te)) abort();
    if (r->query.n && (r->query.p < t || r->query.p + r->query.n > te)) abort();
    if (r->body.n && r->body.p[r->body.n] != 0) abort();
    for (size_t i = 0; i < r->n_headers; i++) {
        str n = r->headers[i].name;
        for (size_t j = 0; j < n.n; j++)
            if (isupper((unsigned char)n.p[j])) abort();
    }
    if (strnlen(r->request_id, sizeof r->request_id) >= sizeof r->request_id) abort();
    (void)http_request_header(r, "host");
    (void)http_request_client_gone(r);
}

static void defer(http_request *r, int kind)
{
    later *l = calloc(1, sizeof *l);
    if (!l) abort();
    l->r = r;
    l->kind = kind;
    /* answered in arrival order */
    later **pp = &pending;
    while (*pp)
        pp = &(*pp)->next;
    *pp = l;
}

static void handler(http_request *r, void *ctx)
{
    check_request(r);
    r->on_abort = on_abort;
    if (n_methods < (int)(sizeof methods / sizeof methods[0])) methods[n_methods] = r->method;
    n_methods++;
    char kind = r->path.n > 1 ? r->path.p[1] : 0;
    static const http_header ct = {{"Content-Type", 12}, {"text/plain", 10}};
    switch (kind) {
    case 'a':
        http_respond(r, 200, &ct, 1, r->body.p, r->body.n);
        return;
    case 's': {
        http_stream_begin(r, 200, &ct, 1);
        size_t half = r->body.n / 2;
        http_stream_write(r, r->body.p, half);
        http_stream_write(r, r->body.p + half, r->body.n - half);
        http_stream_end(r);
        return;
    }
    case 'd':
    case 'w':
        defer(r, kind);
        return;
    case 'n':
        http_respond(r, 204, NULL, 0, NULL, 0);
        return;
    case 'm':
        http_respond(r, 304, NULL, 0, "ignored", 7);
        return;
    case 'x': {
        /* the query as a header value, with control bytes (which the server passes through:
         * only CR and LF are its to refuse) made visible */
        char *q = arena_strndup(r->pool, r->query.p, r->query.n);
        for (size_t i = 0; i < r->query.n; i++)
            if (((unsigned char)q[i] < 0x20 && q[i] != '\t') || q[i] == 0x7f) q[i] = '?';
        http_header bad[3] = {{{"X-Bad", 5}, {"a\r\nInjected: 1", 14}},
                              {{"", 0}, {"v", 1}},
                              {{"X-Query", 7}, {q, r->query.n}}};
        http_respond(r, 200, bad, 3, "x", 1);
        return;
    }
    default:
        http_respond(r, 404, NULL, 0, "not found", 9);
        return;
    }
}

/* One step of the deferred answers; true when something happened. */
static bool run_pending(void)
{
    later *l = pending;
    if (!l) return false;
    http_request *r = l->r;
    if (l->kind == 'd') {
        http_respond(r, 201, NULL, 0, r->body.p, r->body.n);
    } else {
        if (l->step == 0) http_stream_begin(r, 200, NULL, 0);
        if (l->step < 2) {
            http_stream_write(r, "data: x\n\n", 9);
            if (r->body.n) http_stream_write(r, r->body.p, r->body.n);
            l->step++;
            return true;
        }
        http_stream_end(r);
    }
    pending = l->next;
    free(l);
    return true;
}

static http_server *start(const http_limits *lim, int *port)
{
    http_server_opts o = {.host = "127.0.0.1", .port = 0, .handler = handler};
    if (lim) o.limits = *lim;
    http_server *s = NULL;
    char err[256];
    if (http_server_start(&loop, &o, &s, err, sizeof err) != 0) {
        fprintf(stderr, "fuzz_http: %s\n", err);
        abort();
    }
    *port = http_server_port(s);
    return s;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    signal(SIGPIPE, SIG_IGN);
    uv_loop_init(&loop);
    srv_default = start(NULL, &port_default);
    http_limits small = {.max_header_bytes = 1024,
                         .max_body_bytes = 2048,
                         .write_high_watermark = 512,
                         .write_low_watermark = 128};
    srv_small = start(&small, &port_small);
    return 0;
}

/* ---- the client side ---- */

typedef struct client {
    int fd;
    char *in; /* what the server sent */
    size_t in_len, in_cap;
    bool closed; /* the server closed its side */
} client;

/* Runs the loop once without blocking and reads what arrived; true when bytes came. */
static bool pump(client *cl)
{
    uv_run(&loop, UV_RUN_NOWAIT);
    bool got = false;
    while (!cl->closed) {
        if (cl->in_cap - cl->in_len < 16384) {
            cl->in_cap = cl->in_cap ? cl->in_cap * 2 : 65536;
            cl->in = realloc(cl->in, cl->in_cap);
            if (!cl->in) abort();
        }
        ssize_t n = recv(cl->fd, cl->in + cl->in_len, cl->in_cap - cl->in_len, 0);
        if (n > 0) {
            cl->in_len += (size_t)n;
            got = true;
            if (cl->in_len > 16 * 1024 * 1024) abort(); /* the server answers without end */
            continue;
        }
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) cl->closed = true;
        break;
    }
    return got;
}

static void send_all(client *cl, const uint8_t *p, size_t n)
{
    while (n && !cl->closed) {
        ssize_t w = send(cl->fd, p, n, MSG_NOSIGNAL);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && errno == EAGAIN) {
            pump(cl); /* the server is not reading (a request in flight): let it move */
            run_pending();
        } else {
            return; /* reset: the server closed */
        }
    }
}

/* ---- the response check ---- */

typedef struct resp_check {
    int next_method;
} resp_check;

static int on_resp_headers(http_parser *p)
{
    resp_check *rc = p->data;
    if (p->status_code >= 100 && p->status_code < 200) return 0; /* interim: 100 Continue */
    int m = rc->next_method < n_methods && rc->next_method < (int)(sizeof methods / sizeof *methods)
                ? methods[rc->next_method]
                : -1;
    rc->next_method++;
    return m == HTTP_HEAD ? 1 : 0; /* 1: this response has no body */
}

static void check_responses(const char *d, size_t n)
{
    http_parser_settings st = {.on_headers_complete = on_resp_headers};
    http_parser p;
    http_parser_init(&p, HTTP_RESPONSE);
    resp_check rc = {0};
    p.data = &rc;
    size_t used = http_parser_execute(&p, &st, d, n);
    if (HTTP_PARSER_ERRNO(&p) == HPE_OK && used == n) http_parser_execute(&p, &st, d, 0);
    if (HTTP_PARSER_ERRNO(&p) != HPE_OK) {
        fprintf(stderr, "fuzz_http: the server's answer is not valid HTTP at byte %zu: %s\n%.*s\n",
                used, http_errno_description(HTTP_PARSER_ERRNO(&p)), (int)(n > 4000 ? 4000 : n), d);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 128 * 1024) return -1;
    uint8_t shape = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    aborts = 0;
    n_methods = 0;

    client cl = {.fd = -1};
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_port = htons((uint16_t)((shape & 8) ? port_small : port_default));
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    /* hundreds of thousands of connections a minute: a moment without a free local port is the
     * machine's, not the server's; retry before calling it a finding */
    for (int attempt = 0; cl.fd < 0; attempt++) {
        cl.fd = socket(AF_INET, SOCK_STREAM, 0);
        if (cl.fd < 0) abort();
        if (connect(cl.fd, (struct sockaddr *)&sa, sizeof sa) == 0) break;
        int e = errno;
        close(cl.fd);
        cl.fd = -1;
        if (attempt == 200) {
            fprintf(stderr, "fuzz_http: connect to the server failed: %s\n", strerror(e));
            abort();
        }
        uv_run(&loop, UV_RUN_NOWAIT);
        usleep(10000);
    }
    /* closed with a reset once done, so no TIME_WAIT holds a local port per input */
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(cl.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    int one = 1;
    setsockopt(cl.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(cl.fd, F_SETFL, fcntl(cl.fd, F_GETFL) | O_NONBLOCK);
    pump(&cl); /* accept */

    /* write boundaries: a small LCG seeded by the shape byte */
    size_t cuts[9];
    size_t n_cuts = 0;
    uint32_t x = shape * 2654435761u + (uint32_t)n;
    for (int i = 0; i < (shape & 7) && n > 1; i++) {
        x = x * 1103515245u + 12345u;
        cuts[n_cuts++] = 1 + (x >> 8) % (n - 1);
    }
    cuts[n_cuts++] = n;
    for (size_t i = 1; i < n_cuts; i++) /* insertion sort */
        for (size_t j = i; j > 0 && cuts[j - 1] > cuts[j]; j--) {
            size_t t = cuts[j];
            cuts[j] = cuts[j - 1];
            cuts[j - 1] = t;
        }
    size_t off = 0;
    for (size_t i = 0; i < n_cuts; i++) {
        if (cuts[i] <= off) continue;
        send_all(&cl, p + off, cuts[i] - off);
        off = cuts[i];
        pump(&cl);
        pump(&cl);
    }

    /* let the server and the deferred answers settle, then half-close and read to the end */
    int quiet = 0;
    for (int i = 0; i < 10000 && quiet < 3 && !cl.closed; i++) {
        bool moved = pump(&cl);
        moved |= run_pending();
        quiet = moved ? 0 : quiet + 1;
    }
    int cut_short = pending != NULL || http_server_active_requests(srv_default) ||
                    http_server_active_requests(srv_small);
    shutdown(cl.fd, SHUT_WR);
    for (int i = 0; i < 100000 && !cl.closed; i++) {
        pump(&cl);
        run_pending();
    }
    if (!cl.closed) {
        fprintf(stderr, "fuzz_http: the server never closed a half-closed connection\n");
        abort();
    }
    while (run_pending()) {
    }
    close(cl.fd);
    for (int i = 0; i < 4; i++)
        uv_run(&loop, UV_RUN_NOWAIT);
    if (http_server_active_requests(srv_default) || http_server_active_requests(srv_small))
        abort(); /* every request was finished */

    if (!cut_short && !aborts) check_responses(cl.in, cl.in_len);
    free(cl.in);
    return 0;
}
