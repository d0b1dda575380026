/* h1.c — native HTTP/1.1 keep-alive client for plain http:// upstreams (the in-cluster hot path),
 * on the worker's libuv loop with http_parser. Same contract as client.h; client.c routes here.
 *
 * Connections: a per-loop pool of idle keep-alive connections per (host, port), most recently
 * used first, at most H1_IDLE_MAX per key, closed after H1_IDLE_TIMEOUT_MS idle. Idle
 * connections keep reading, so a server close (EOF) drops them at once. A connection returns to
 * the pool only after a complete response that HTTP/1.1 lets us keep (not HTTP/1.0 without
 * keep-alive, not "Connection: close", not close-delimited), with the request fully written and
 * no stray bytes after the response; any error closes it.
 *
 * Retry rule: a request written on a REUSED connection that sees EOF, ECONNRESET or EPIPE before
 * any response byte is sent once more on a fresh connection. The server closed a keep-alive
 * connection it considered idle (a race every keep-alive client has), so it never processed the
 * request. Nothing else is retried: not a fresh connection (the server may have processed it),
 * not after a response byte, not twice.
 *
 * Names: numeric IPv4/IPv6 hosts are parsed once per key; other names go through uv_getaddrinfo
 * (concurrent requests share one lookup) and are cached per key for H1_DNS_TTL_MS; a failed
 * connect tries the next address.
 *
 * Re-entrancy: user callbacks run from our libuv callbacks (read, write, connect, timers). Every
 * entry point counts itself in `depth`; cancel inside a callback marks the request and leaves
 * the struct to the kick (a zero-delay timer that also delivers on_done for failures and resumes
 * paused requests), so no callback ever runs inside upstream_send/pause/resume/cancel.
 *
 * Pause: a refused body piece stays in the connection's read buffer (the parser is paused right
 * after it and reading stops); resume redelivers it from the kick, then parsing continues.
 *
 * Memory: request structs (timer, head/body/header buffers) and connections (read buffer) are
 * reused, so a steady-state request on a pooled connection allocates nothing. */
#include "upstream/backend.h"

#include "core/buf.h"
#include "core/clock.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

/* idle connections kept per (host, port) per loop: as many as nginx's `keepalive 256`. With
 * fewer, a loop carrying more concurrent requests than that closes connections as answers
 * complete and opens new ones for the next requests: at 256 client connections 64 made the
 * proxy path ~40% slower, with 2x the p99 (docs/benchmarks.md, issue 7) */
#define H1_IDLE_MAX 256
#define H1_IDLE_TIMEOUT_MS 60000  /* an idle connection older than this is closed */
#define H1_SWEEP_MS 5000          /* how often idle connections are checked */
#define H1_DNS_TTL_MS 30000       /* resolved addresses are reused this long */
#define H1_MAX_ADDRS 4            /* addresses kept per name (tried in order) */
#define H1_HEADER_MAX (64 * 1024) /* response header block limit */
#define H1_RBUF_SIZE (16 * 1024)  /* per-connection read buffer */
#define H1_POOL_MAX 256           /* idle request structs kept for reuse */
#define H1_HOSTS_MAX 256          /* (host, port) keys kept; unused ones are evicted */
#define H1_BUF_KEEP (64 * 1024)   /* larger pooled buffers are freed on reuse */
#define H1_DEFAULT_CONNECT_MS 5000

typedef struct h1_req h1_req;
typedef struct h1_conn h1_conn;
typedef struct h1_host h1_host;

enum h1_state {
    H1_IDLE,      /* on the free list */
    H1_ACTIVE,    /* sent; callbacks may still run */
    H1_DONE,      /* on_done running; released right after */
    H1_CANCELLED, /* cancelled (or client freed); the kick releases it */
};

enum {
    TODO_FAIL = 1,   /* report u->fail_res / u->msg through on_done */
    TODO_RESUME = 2, /* redeliver the refused piece and continue parsing */
    TODO_CANCEL = 4, /* release the struct */
};

/* One (host, port) key: the idle pool and the name cache. */
struct h1_host {
    h1_host *next;
    char *name; /* as written in the URL, NUL-terminated */
    size_t name_len;
    uint16_t port;
    bool numeric;  /* literal address: addrs[0] never expires */
    buf host_line; /* "Host: name[:port]\r\n" */
    struct sockaddr_storage addrs[H1_MAX_ADDRS];
    int n_addrs;
    uint64_t resolved_ms;           /* uv_now() of the lookup */
    struct h1_resolve *resolving;   /* lookup in flight */
    h1_req *waiters, *waiters_tail; /* requests waiting for the lookup */
    h1_conn *idle;                  /* idle connections, most recently used first */
    size_t n_idle;
    size_t refs; /* requests, connections and lookups using this key */
};

typedef struct h1_resolve {
    uv_getaddrinfo_t gai;
    struct upstream_h1 *c;
    h1_host *host;
} h1_resolve;

struct h1_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    struct upstream_h1 *c;
    h1_host *host;
    h1_req *req;          /* the request on this connection; NULL when idle */
    h1_conn *next, *prev; /* host's idle list */
    h1_conn *all_next, *all_prev;
    http_parser parser;
    char *rbuf;
    size_t rlen, rpos; /* unparsed bytes are rbuf[rpos, rlen) */
    const char *pend;  /* refused body piece (inside rbuf), redelivered on resume */
    size_t pend_len;
    uint64_t idle_since_ms;
    unsigned served; /* responses completed on this connection */
    bool connected, reading, writing, closing, idle;
    bool msg_done; /* the final response is complete (parser paused there) */
    bool keep;     /* http_should_keep_alive() at message end */
    bool broken;   /* must not return to the pool */
};

struct h1_req {
    upstream_req base; /* ops: must stay first */
    struct upstream_h1 *c;
    uv_timer_t timer;    /* the next of the connect / first-byte / total deadlines */
    h1_req *next, *prev; /* active list, or free list (next only) */
    h1_req *todo_next, *todo_prev;
    unsigned todo;
    bool in_todo;
    uint64_t todo_gen;
    h1_req *wnext, *wprev; /* host's waiter list */
    bool waiting;
    h1_host *host;
    h1_conn *conn;

    enum h1_state state;
    bool paused, headers_fired, got_byte, resp_byte, retried, is_head;
    bool hdr_in_value; /* the last header callback was a value */
    bool hdr_too_big;
    int status;
    int addr_i; /* address being tried */
    upstream_result fail_res;
    unsigned connect_ms, fb_ms, total_ms;
    uint64_t dl_connect, dl_fb, dl_total; /* uv_now() deadlines, 0 = none */
    uint64_t t_send_us, ttfb_us;
    size_t hdr_bytes;

    buf url;  /* for messages */
    buf head; /* request line and headers */
    buf body; /* body copy unless borrowed */
    const char *body_ptr;
    size_t body_len;
    buf resp_headers; /* "name\0value\0" pairs of the current header block */

    void *udata;
    void (*on_headers)(upstream_req *u, int status, void *udata);
    bool (*on_data)(upstream_req *u, const char *data, size_t len, void *udata);
    void (*on_done)(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata);
    char msg[512];
};

struct upstream_h1 {
    uv_loop_t *loop;
    uv_timer_t kick;  /* runs the todo list on a later iteration */
    uv_timer_t sweep; /* closes idle connections past their time; unreferenced */
    h1_req *active;
    h1_req *free_list;
    size_t n_free;
    h1_req *todo_head, *todo_tail;
    uint64_t kick_gen;
    h1_host *hosts;
    size_t n_hosts;
    h1_conn *conns; /* every open connection */
    size_t in_flight;
    size_t n_idle;
    int depth;
    bool free_requested;
    bool closing;
    int open_handles;
    upstream_h1_stats stats;
};

typedef struct upstream_h1 h1_client;

static const upstream_req_ops h1_req_ops;
static const http_parser_settings h1_parser_settings;
static void client_destroy(h1_client *c);
static void kick_fire(uv_timer_t *t);
static void req_start(h1_req *u, bool allow_idle);
static void req_connect(h1_req *u, int addr_i);
static void conn_process(h1_conn *k);
static void sweep_fire(uv_timer_t *t);

/* ---- entry/exit bookkeeping (as in curl.c) ---- */

static void client_enter(h1_client *c)
{
    c->depth++;
}

static void client_leave(h1_client *c)
{
    if (--c->depth == 0 && c->free_requested) client_destroy(c);
}

static void host_free(h1_host *h)
{
    buf_free(&h->host_line);
    free(h->name);
    free(h);
}

static void client_handle_gone(h1_client *c)
{
    if (--c->open_handles == 0 && c->closing) {
        while (c->hosts) {
            h1_host *h = c->hosts;
            c->hosts = h->next;
            host_free(h);
        }
        free(c);
    }
}

static void client_handle_closed(uv_handle_t *h)
{
    client_handle_gone(h->data);
}

/* ---- small helpers ---- */

static void buf_recycle(buf *b)
{
    if (b->cap > H1_BUF_KEEP)
        buf_free(b);
    else
        buf_reset(b);
}

static void buf_add(buf *b, const char *p, size_t n)
{
    buf_append(b, p, n);
}

static void buf_add_s(buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

static const char *req_url(const h1_req *u)
{
    return u->url.data ? u->url.data : "(unknown url)";
}

/* ---- todo list and the kick ---- */

static void todo_unlink(h1_req *u)
{
    h1_client *c = u->c;
    if (!u->in_todo) return;
    if (u->todo_prev)
        u->todo_prev->todo_next = u->todo_next;
    else
        c->todo_head = u->todo_next;
    if (u->todo_next)
        u->todo_next->todo_prev = u->todo_prev;
    else
        c->todo_tail = u->todo_prev;
    u->todo_next = u->todo_prev = NULL;
    u->todo = 0;
    u->in_todo = false;
}

static void todo_add(h1_req *u, unsigned flag)
{
    h1_client *c = u->c;
    if (!u->in_todo) {
        u->in_todo = true;
        u->todo_prev = c->todo_tail;
        u->todo_next = NULL;
        if (c->todo_tail)
            c->todo_tail->todo_next = u;
        else
            c->todo_head = u;
        c->todo_tail = u;
        u->todo_gen = c->kick_gen;
    }
    u->todo |= flag;
    if (!c->closing && !uv_is_active((uv_handle_t *)&c->kick))
        uv_timer_start(&c->kick, kick_fire, 0, 0);
}

/* ---- active list ---- */

static void active_link(h1_req *u)
{
    h1_client *c = u->c;
    u->prev = NULL;
    u->next = c->active;
    if (c->active) c->active->prev = u;
    c->active = u;
}

static void active_unlink(h1_req *u)
{
    h1_client *c = u->c;
    if (u->prev)
        u->prev->next = u->next;
    else
        c->active = u->next;
    if (u->next) u->next->prev = u->prev;
    u->next = u->prev = NULL;
}

/* ---- hosts ---- */

static void host_unref(h1_client *c, h1_host *h)
{
    h->refs--;
}

/* Drops keys nobody uses once there are too many (names seen once, e.g. per-tenant URLs). */
static void hosts_evict(h1_client *c)
{
    h1_host **pp = &c->hosts;
    while (*pp && c->n_hosts >= H1_HOSTS_MAX) {
        h1_host *h = *pp;
        if (h->refs == 0 && !h->idle && !h->resolving && !h->waiters) {
            *pp = h->next;
            host_free(h);
            c->n_hosts--;
        } else {
            pp = &h->next;
        }
    }
}

static h1_host *host_get(h1_client *c, const char *name, size_t len, uint16_t port)
{
    h1_host *prev = NULL;
    for (h1_host *h = c->hosts; h; prev = h, h = h->next) {
        if (h->port == port && h->name_len == len && strncasecmp(h->name, name, len) == 0) {
            if (prev) { /* most recently used first: the lookup stays short */
                prev->next = h->next;
                h->next = c->hosts;
                c->hosts = h;
            }
            return h;
        }
    }
    if (len >= 256) return NULL;
    if (c->n_hosts >= H1_HOSTS_MAX) hosts_evict(c);
    h1_host *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->name = strndup(name, len);
    if (!h->name) {
        free(h);
        return NULL;
    }
    h->name_len = len;
    h->port = port;
    struct sockaddr_in *a4 = (struct sockaddr_in *)&h->addrs[0];
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&h->addrs[0];
    bool v6 = memchr(h->name, ':', len) != NULL;
    if (inet_pton(AF_INET, h->name, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons(port);
        h->numeric = true;
    } else if (v6 && inet_pton(AF_INET6, h->name, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons(port);
        h->numeric = true;
    }
    if (h->numeric) h->n_addrs = 1;
    /* libcurl's Host header: brackets for IPv6 literals, the port unless it is 80. */
    buf_add_s(&h->host_line, "Host: ");
    if (v6) buf_add_s(&h->host_line, "[");
    buf_add(&h->host_line, name, len);
    if (v6) buf_add_s(&h->host_line, "]");
    if (port != 80) {
        buf_add_s(&h->host_line, ":");
        buf_put_u64(&h->host_line, port);
    }
    buf_add_s(&h->host_line, "\r\n");
    h->next = c->hosts;
    c->hosts = h;
    c->n_hosts++;
    return h;
}

static void waiter_unlink(h1_req *u)
{
    if (!u->waiting) return;
    h1_host *h = u->host;
    if (u->wprev)
        u->wprev->wnext = u->wnext;
    else
        h->waiters = u->wnext;
    if (u->wnext)
        u->wnext->wprev = u->wprev;
    else
        h->waiters_tail = u->wprev;
    u->wnext = u->wprev = NULL;
    u->waiting = false;
}

static void waiter_link(h1_req *u)
{
    h1_host *h = u->host;
    u->wnext = NULL;
    u->wprev = h->waiters_tail;
    if (h->waiters_tail)
        h->waiters_tail->wnext = u;
    else
        h->waiters = u;
    h->waiters_tail = u;
    u->waiting = true;
}

/* ---- connections ---- */

static void conn_closed(uv_handle_t *hd)
{
    h1_conn *k = hd->data;
    h1_client *c = k->c;
    if (k->all_prev)
        k->all_prev->all_next = k->all_next;
    else
        c->conns = k->all_next;
    if (k->all_next) k->all_next->all_prev = k->all_prev;
    host_unref(c, k->host);
    free(k->rbuf);
    free(k);
    client_handle_gone(c);
}

static void idle_unlink(h1_conn *k)
{
    h1_host *h = k->host;
    if (!k->idle) return;
    if (k->prev)
        k->prev->next = k->next;
    else
        h->idle = k->next;
    if (k->next) k->next->prev = k->prev;
    k->next = k->prev = NULL;
    k->idle = false;
    h->n_idle--;
    k->c->n_idle--;
}

/* Closes k; its request (if any) is detached, not finished. */
static void conn_close(h1_conn *k)
{
    if (k->closing) return;
    k->closing = true;
    idle_unlink(k);
    if (k->req) {
        k->req->conn = NULL;
        k->req = NULL;
    }
    uv_close((uv_handle_t *)&k->tcp, conn_closed);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b);

static void conn_alloc_cb(uv_handle_t *hd, size_t hint, uv_buf_t *b)
{
    h1_conn *k = hd->data;
    b->base = k->rbuf + k->rlen;
    b->len = H1_RBUF_SIZE - k->rlen;
}

static void conn_read_start(h1_conn *k)
{
    if (k->reading || k->closing) return;
    if (uv_read_start((uv_stream_t *)&k->tcp, conn_alloc_cb, conn_read_cb) == 0) k->reading = true;
}

static void conn_read_stop(h1_conn *k)
{
    if (!k->reading) return;
    uv_read_stop((uv_stream_t *)&k->tcp);
    k->reading = false;
}

static h1_conn *conn_new(h1_client *c, h1_host *h)
{
    h1_conn *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->rbuf = malloc(H1_RBUF_SIZE);
    if (!k->rbuf || uv_tcp_init(c->loop, &k->tcp) != 0) {
        free(k->rbuf);
        free(k);
        return NULL;
    }
    k->c = c;
    k->host = h;
    h->refs++;
    k->tcp.data = k;
    k->connect_req.data = k;
    k->write_req.data = k;
    c->open_handles++;
    k->all_next = c->conns;
    if (c->conns) c->conns->all_prev = k;
    c->conns = k;
    c->stats.connects++;
    return k;
}

/* Back to the idle pool (or closed when the key already keeps enough). */
static void conn_pool_put(h1_conn *k)
{
    h1_client *c = k->c;
    h1_host *h = k->host;
    k->req = NULL;
    if (h->n_idle >= H1_IDLE_MAX || c->closing || c->free_requested) {
        conn_close(k);
        return;
    }
    k->idle = true;
    k->idle_since_ms = uv_now(c->loop);
    k->prev = NULL;
    k->next = h->idle;
    if (h->idle) h->idle->prev = k;
    h->idle = k;
    h->n_idle++;
    c->n_idle++;
    k->rpos = k->rlen = 0;
    /* Idle connections keep reading (to see a server close) but do not keep the loop alive. */
    uv_unref((uv_handle_t *)&k->tcp);
    conn_read_start(k);
    if (!uv_is_active((uv_handle_t *)&c->sweep))
        uv_timer_start(&c->sweep, sweep_fire, H1_SWEEP_MS, H1_SWEEP_MS);
}

static void conn_attach(h1_conn *k, h1_req *u)
{
    k->req = u;
    u->conn = k;
    k->msg_done = k->keep = false;
    k->pend = NULL;
    k->pend_len = 0;
    http_parser_init(&k->parser, HTTP_RESPONSE);
    k->parser.data = k;
}

/* ---- request completion ---- */

static void req_arm(h1_req *u);

static void req_timer_closed(uv_handle_t *hd)
{
    h1_req *u = hd->data;
    h1_client *c = u->c;
    free(u);
    client_handle_gone(c);
}

static void req_destroy(h1_req *u)
{
    buf_free(&u->url);
    buf_free(&u->head);
    buf_free(&u->body);
    buf_free(&u->resp_headers);
    uv_close((uv_handle_t *)&u->timer, req_timer_closed);
}

static void req_release(h1_req *u)
{
    h1_client *c = u->c;
    todo_unlink(u);
    waiter_unlink(u);
    if (u->conn) conn_close(u->conn); /* mid-request: never reusable */
    uv_timer_stop(&u->timer);
    active_unlink(u);
    if (u->host) host_unref(c, u->host);
    u->host = NULL;
    buf_recycle(&u->url);
    buf_recycle(&u->head);
    buf_recycle(&u->body);
    buf_recycle(&u->resp_headers);
    u->state = H1_IDLE;
    u->on_headers = NULL;
    u->on_data = NULL;
    u->on_done = NULL;
    u->udata = NULL;
    if (c->closing || c->free_requested || c->n_free >= H1_POOL_MAX) {
        req_destroy(u);
        return;
    }
    u->next = c->free_list;
    c->free_list = u;
    c->n_free++;
}

/* Calls on_done once and releases u. u must not be attached to a connection. */
static void req_finish(h1_req *u, upstream_result res, const char *msg)
{
    h1_client *c = u->c;
    u->state = H1_DONE;
    c->in_flight--;
    uv_timer_stop(&u->timer);
    if (u->on_done) u->on_done(&u->base, res, u->status, msg, u->udata);
    req_release(u);
}

/* Detaches u from its connection (closing it) and reports the failure from the kick. */
static void req_fail(h1_req *u, upstream_result res)
{
    if (u->conn) conn_close(u->conn);
    waiter_unlink(u);
    uv_timer_stop(&u->timer);
    u->fail_res = res;
    todo_add(u, TODO_FAIL);
}

/* ---- timers ---- */

static bool req_connecting(const h1_req *u)
{
    return !u->conn || !u->conn->connected;
}

static void req_timer_fire(uv_timer_t *t)
{
    h1_req *u = t->data;
    h1_client *c = u->c;
    if (u->state != H1_ACTIVE) return;
    client_enter(c);
    uint64_t now = uv_now(c->loop);
    bool total_hit = u->dl_total && now >= u->dl_total;
    if (req_connecting(u) && u->dl_connect && now >= u->dl_connect &&
        (!total_hit || u->dl_connect < u->dl_total)) {
        snprintf(u->msg, sizeof u->msg,
                 "cannot connect to upstream %s within %u ms (connect_timeout_ms): connection "
                 "timed out",
                 req_url(u), u->connect_ms);
        req_fail(u, UPSTREAM_CONNECT_FAILED);
    } else if (!u->got_byte && u->dl_fb && now >= u->dl_fb &&
               (!total_hit || u->dl_fb < u->dl_total)) {
        snprintf(u->msg, sizeof u->msg,
                 "upstream %s sent no first byte within %u ms (first_byte_timeout_ms)", req_url(u),
                 u->fb_ms);
        req_fail(u, UPSTREAM_TIMEOUT);
    } else if (total_hit) {
        snprintf(u->msg, sizeof u->msg,
                 "upstream %s did not finish within %u ms (total_timeout_ms): %s", req_url(u),
                 u->total_ms, u->resp_byte ? "the response was still arriving" : "no response");
        req_fail(u, UPSTREAM_TIMEOUT);
    } else {
        req_arm(u);
    }
    client_leave(c);
}

/* Arms the timer for the earliest deadline still relevant. */
static void req_arm(h1_req *u)
{
    uint64_t next = UINT64_MAX;
    if (u->dl_connect && req_connecting(u)) next = u->dl_connect;
    if (u->dl_fb && !u->got_byte && u->dl_fb < next) next = u->dl_fb;
    if (u->dl_total && u->dl_total < next) next = u->dl_total;
    if (next == UINT64_MAX) {
        uv_timer_stop(&u->timer);
        return;
    }
    uint64_t now = uv_now(u->c->loop);
    uv_timer_start(&u->timer, req_timer_fire, next > now ? next - now : 0, 0);
}

/* ---- connection failure and the retry rule ---- */

static void conn_failed(h1_conn *k, int err)
{
    h1_req *u = k->req;
    bool peer_closed = err == UV_EOF || err == UV_ECONNRESET || err == UV_EPIPE;
    bool retry = u && peer_closed && !u->resp_byte && k->served > 0 && !u->retried;
    conn_close(k);
    if (!u) return;
    if (retry) {
        u->retried = true;
        u->c->stats.retries++;
        /* The fresh connection gets its own connect_timeout_ms. */
        u->dl_connect = uv_now(u->c->loop) + u->connect_ms;
        req_start(u, false);
        if (u->state == H1_ACTIVE && !u->in_todo) req_arm(u);
        return;
    }
    snprintf(u->msg, sizeof u->msg, "upstream %s failed %s: %s", req_url(u),
             u->resp_byte ? "mid-response" : "before a response arrived",
             err == UV_EOF ? "the server closed the connection" : uv_strerror(err));
    req_fail(u, UPSTREAM_ERROR);
}

/* ---- writing the request ---- */

static void conn_write_cb(uv_write_t *w, int status)
{
    h1_conn *k = w->data;
    h1_client *c = k->c;
    k->writing = false;
    if (status == 0 || k->closing || status == UV_ECANCELED) return;
    client_enter(c);
    if (k->req && k->req->resp_byte)
        k->broken = true; /* e.g. an early error response: keep reading it */
    else
        conn_failed(k, status);
    client_leave(c);
}

static void req_write(h1_req *u, h1_conn *k)
{
    uv_buf_t b[2];
    unsigned nb = 0;
    b[nb++] = uv_buf_init(u->head.data, (unsigned)u->head.len);
    if (u->body_len) b[nb++] = uv_buf_init((char *)u->body_ptr, (unsigned)u->body_len);
    int n = uv_try_write((uv_stream_t *)&k->tcp, b, nb);
    if (n == UV_EAGAIN || n == UV_ENOSYS) n = 0;
    if (n < 0) {
        conn_failed(k, n);
        return;
    }
    size_t done = (size_t)n;
    unsigned i = 0;
    while (i < nb && done >= b[i].len) {
        done -= b[i].len;
        i++;
    }
    if (i == nb) return;
    b[i].base += done;
    b[i].len -= done;
    int rc = uv_write(&k->write_req, (uv_stream_t *)&k->tcp, b + i, nb - i, conn_write_cb);
    if (rc < 0) {
        conn_failed(k, rc);
        return;
    }
    k->writing = true;
}

/* ---- connecting and resolving ---- */

static void conn_connect_cb(uv_connect_t *cr, int status)
{
    h1_conn *k = cr->data;
    h1_client *c = k->c;
    if (k->closing || status == UV_ECANCELED) return;
    client_enter(c);
    h1_req *u = k->req;
    if (!u) {
        conn_close(k);
    } else if (status < 0) {
        int next = u->addr_i + 1;
        conn_close(k);
        if (next < u->host->n_addrs) {
            req_connect(u, next);
        } else {
            snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s: %s", req_url(u),
                     uv_strerror(status));
            req_fail(u, UPSTREAM_CONNECT_FAILED);
        }
    } else {
        k->connected = true;
        conn_read_start(k);
        req_arm(u);
        req_write(u, k);
    }
    client_leave(c);
}

static void req_connect(h1_req *u, int addr_i)
{
    h1_client *c = u->c;
    h1_host *h = u->host;
    u->addr_i = addr_i;
    h1_conn *k = conn_new(c, h);
    if (!k) {
        snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s: out of memory", req_url(u));
        req_fail(u, UPSTREAM_CONNECT_FAILED);
        return;
    }
    conn_attach(k, u);
    uv_tcp_nodelay(&k->tcp, 1);
    int rc = uv_tcp_connect(&k->connect_req, &k->tcp, (const struct sockaddr *)&h->addrs[addr_i],
                            conn_connect_cb);
    if (rc == 0) uv_tcp_keepalive(&k->tcp, 1, 60);
    if (rc < 0) {
        conn_close(k);
        if (addr_i + 1 < h->n_addrs) {
            req_connect(u, addr_i + 1);
            return;
        }
        snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s: %s", req_url(u),
                 uv_strerror(rc));
        req_fail(u, UPSTREAM_CONNECT_FAILED);
    }
}

static void resolve_cb(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    h1_resolve *r = g->data;
    h1_client *c = r->c;
    h1_host *h = r->host;
    if (c->closing) {
        if (res) uv_freeaddrinfo(res);
        free(r);
        client_handle_gone(c);
        return;
    }
    client_enter(c);
    h->resolving = NULL;
    h->refs--;
    h->n_addrs = 0;
    for (struct addrinfo *a = res; a && h->n_addrs < H1_MAX_ADDRS; a = a->ai_next) {
        if (a->ai_family != AF_INET && a->ai_family != AF_INET6) continue;
        if (a->ai_addrlen > sizeof h->addrs[0]) continue;
        struct sockaddr_storage *s = &h->addrs[h->n_addrs++];
        memcpy(s, a->ai_addr, a->ai_addrlen);
        if (a->ai_family == AF_INET)
            ((struct sockaddr_in *)s)->sin_port = htons(h->port);
        else
            ((struct sockaddr_in6 *)s)->sin6_port = htons(h->port);
    }
    if (res) uv_freeaddrinfo(res);
    h->resolved_ms = uv_now(c->loop);
    free(r);
    c->open_handles--; /* the lookup is over; no close callback for it */
    while (h->waiters && !c->free_requested) {
        h1_req *u = h->waiters;
        waiter_unlink(u);
        if (u->state != H1_ACTIVE) continue;
        if (h->n_addrs) {
            req_connect(u, 0);
        } else {
            snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s: cannot resolve %s: %s",
                     req_url(u), h->name,
                     status < 0 ? uv_strerror(status) : "no IPv4/IPv6 address");
            req_fail(u, UPSTREAM_CONNECT_FAILED);
        }
    }
    client_leave(c);
}

static void req_resolve(h1_req *u)
{
    h1_client *c = u->c;
    h1_host *h = u->host;
    waiter_link(u);
    if (h->resolving) return;
    h1_resolve *r = calloc(1, sizeof *r);
    if (!r) {
        waiter_unlink(u);
        snprintf(u->msg, sizeof u->msg, "cannot resolve upstream %s: out of memory", req_url(u));
        req_fail(u, UPSTREAM_CONNECT_FAILED);
        return;
    }
    r->c = c;
    r->host = h;
    r->gai.data = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = uv_getaddrinfo(c->loop, &r->gai, resolve_cb, h->name, NULL, &hints);
    if (rc < 0) {
        free(r);
        waiter_unlink(u);
        snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s: cannot resolve %s: %s",
                 req_url(u), h->name, uv_strerror(rc));
        req_fail(u, UPSTREAM_CONNECT_FAILED);
        return;
    }
    h->resolving = r;
    h->refs++;
    c->open_handles++;
    c->stats.resolves++;
}

/* Puts u on a connection: an idle one when allowed, else a new one (resolving first if the
 * name's addresses are unknown or stale). */
static void req_start(h1_req *u, bool allow_idle)
{
    h1_client *c = u->c;
    h1_host *h = u->host;
    if (allow_idle && h->idle) {
        h1_conn *k = h->idle;
        idle_unlink(k);
        uv_ref((uv_handle_t *)&k->tcp);
        conn_attach(k, u);
        req_write(u, k);
        return;
    }
    if (h->n_addrs && (h->numeric || uv_now(c->loop) - h->resolved_ms < H1_DNS_TTL_MS)) {
        req_connect(u, 0);
        return;
    }
    req_resolve(u);
}

/* ---- response parsing ---- */

static void resp_header_end_value(h1_req *u)
{
    if (!u->hdr_in_value) return;
    buf *b = &u->resp_headers;
    while (b->len && (b->data[b->len - 1] == ' ' || b->data[b->len - 1] == '\t'))
        b->len--;
    buf_add(b, "", 1);
    u->hdr_in_value = false;
}

static bool resp_header_count(h1_req *u, size_t n)
{
    u->hdr_bytes += n;
    if (u->hdr_bytes > H1_HEADER_MAX) {
        u->hdr_too_big = true;
        return false;
    }
    return true;
}

static int on_message_begin(http_parser *p)
{
    h1_conn *k = p->data;
    h1_req *u = k->req;
    buf_reset(&u->resp_headers);
    u->hdr_bytes = 0;
    u->hdr_in_value = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    h1_req *u = ((h1_conn *)p->data)->req;
    if (u->hdr_in_value) {
        resp_header_end_value(u);
        if (!resp_header_count(u, 4)) return -1; /* ": " and CRLF */
    }
    if (!resp_header_count(u, n)) return -1;
    buf_add(&u->resp_headers, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    h1_req *u = ((h1_conn *)p->data)->req;
    if (!resp_header_count(u, n)) return -1;
    if (!u->hdr_in_value) {
        buf_add(&u->resp_headers, "", 1);
        u->hdr_in_value = true;
        while (n && (*at == ' ' || *at == '\t'))
            at++, n--;
    }
    buf_add(&u->resp_headers, at, n);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    h1_conn *k = p->data;
    h1_req *u = k->req;
    resp_header_end_value(u);
    if (p->status_code < 200) {
        /* 1xx informational: skipped; the final response follows on the same connection. */
        buf_reset(&u->resp_headers);
        return p->status_code == 101 ? -1 : 0;
    }
    u->status = p->status_code;
    u->headers_fired = true;
    if (u->on_headers) u->on_headers(&u->base, u->status, u->udata);
    if (u->state != H1_ACTIVE) return -1;
    return u->is_head ? 1 : 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    h1_conn *k = p->data;
    h1_req *u = k->req;
    if (!u->got_byte) {
        u->got_byte = true;
        u->ttfb_us = clock_mono_us() - u->t_send_us;
        if (u->ttfb_us == 0) u->ttfb_us = 1;
        if (u->dl_fb) req_arm(u);
    }
    if (!u->paused) {
        bool more = u->on_data ? u->on_data(&u->base, at, n, u->udata) : true;
        if (u->state != H1_ACTIVE) return -1;
        if (more) return 0;
        u->paused = true;
    }
    /* Not consumed: keep the piece, stop the parser right after it. */
    k->pend = at;
    k->pend_len = n;
    http_parser_pause(p, 1);
    return 0;
}

static int on_message_complete(http_parser *p)
{
    h1_conn *k = p->data;
    if (p->status_code < 200) return 0; /* the end of a 1xx block */
    resp_header_end_value(k->req);      /* after trailers */
    k->msg_done = true;
    k->keep = http_should_keep_alive(p) != 0;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings h1_parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* The response on k is complete: pool or close k, then on_done. */
static void conn_complete(h1_conn *k)
{
    h1_req *u = k->req;
    bool keep = k->keep && !k->broken && !k->writing && k->rpos == k->rlen;
    k->served++;
    k->req = NULL;
    u->conn = NULL;
    if (keep)
        conn_pool_put(k);
    else
        conn_close(k);
    req_finish(u, UPSTREAM_OK, NULL);
}

/* Delivers what is buffered on k to its request: first a piece refused earlier, then whatever
 * the parser makes of the unparsed bytes. k must have a request. */
static void conn_process(h1_conn *k)
{
    h1_req *u = k->req;
    if (u->state != H1_ACTIVE) {
        conn_close(k);
        return;
    }
    if (k->pend_len) {
        if (u->paused) return;
        const char *p = k->pend;
        size_t n = k->pend_len;
        k->pend = NULL;
        k->pend_len = 0;
        bool more = u->on_data ? u->on_data(&u->base, p, n, u->udata) : true;
        if (u->state != H1_ACTIVE) {
            if (k->req == u) conn_close(k);
            return;
        }
        if (!more) {
            u->paused = true;
            k->pend = p;
            k->pend_len = n;
            return;
        }
    }
    if (HTTP_PARSER_ERRNO(&k->parser) == HPE_PAUSED) http_parser_pause(&k->parser, 0);
    if (k->rpos < k->rlen) {
        size_t n = http_parser_execute(&k->parser, &h1_parser_settings, k->rbuf + k->rpos,
                                       k->rlen - k->rpos);
        k->rpos += n;
        if (u->state != H1_ACTIVE) {
            if (k->req == u) conn_close(k);
            return;
        }
        enum http_errno e = HTTP_PARSER_ERRNO(&k->parser);
        if (e == HPE_PAUSED) {
            if (k->msg_done) {
                conn_complete(k);
                return;
            }
            conn_read_stop(k); /* a refused piece waits in rbuf for upstream_resume */
            return;
        }
        if (e != HPE_OK) {
            if (u->hdr_too_big)
                snprintf(u->msg, sizeof u->msg,
                         "upstream %s sent a response header block over %d KiB; refusing it",
                         req_url(u), H1_HEADER_MAX / 1024);
            else
                snprintf(u->msg, sizeof u->msg, "upstream %s sent an invalid HTTP response: %s",
                         req_url(u), http_errno_description(e));
            req_fail(u, UPSTREAM_ERROR);
            return;
        }
    }
    k->rpos = k->rlen = 0;
    conn_read_start(k);
}

static void conn_eof(h1_conn *k, ssize_t err)
{
    h1_req *u = k->req;
    if (err == UV_EOF && HTTP_PARSER_ERRNO(&k->parser) == HPE_OK) {
        /* Lets the parser end a close-delimited body. */
        http_parser_execute(&k->parser, &h1_parser_settings, NULL, 0);
        if (u->state != H1_ACTIVE) {
            if (k->req == u) conn_close(k);
            return;
        }
        if (k->msg_done) {
            k->broken = true;
            conn_complete(k);
            return;
        }
    }
    conn_failed(k, (int)err);
}

static void conn_read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *b)
{
    h1_conn *k = s->data;
    h1_client *c = k->c;
    if (nread == 0 || k->closing) return;
    client_enter(c);
    if (!k->req) {
        conn_close(k); /* idle: the server closed it, or sent bytes nobody asked for */
    } else if (nread > 0) {
        k->rlen += (size_t)nread;
        k->req->resp_byte = true;
        conn_process(k);
    } else {
        conn_eof(k, nread);
    }
    client_leave(c);
}

/* ---- idle sweep ---- */

static void sweep_fire(uv_timer_t *t)
{
    h1_client *c = t->data;
    uint64_t now = uv_now(c->loop);
    for (h1_host *h = c->hosts; h; h = h->next) {
        h1_conn *k = h->idle;
        while (k) {
            h1_conn *next = k->next;
            if (now - k->idle_since_ms >= H1_IDLE_TIMEOUT_MS) conn_close(k);
            k = next;
        }
    }
    if (c->n_idle == 0) uv_timer_stop(&c->sweep);
}

/* ---- the kick ---- */

static void kick_fire(uv_timer_t *t)
{
    h1_client *c = t->data;
    client_enter(c);
    uint64_t gen = ++c->kick_gen;
    h1_req *u;
    while (!c->free_requested && (u = c->todo_head) && u->todo_gen < gen) {
        unsigned what = u->todo;
        todo_unlink(u);
        if (u->state == H1_CANCELLED || (what & TODO_CANCEL)) {
            req_release(u);
        } else if (u->state != H1_ACTIVE) {
            continue;
        } else if (what & TODO_FAIL) {
            req_finish(u, u->fail_res, u->msg);
        } else if ((what & TODO_RESUME) && u->paused) {
            u->paused = false;
            if (u->conn && u->conn->connected && u->conn->pend_len) conn_process(u->conn);
        }
    }
    if (c->todo_head && !c->free_requested) uv_timer_start(&c->kick, kick_fire, 0, 0);
    client_leave(c);
}

/* ---- request structs ---- */

static h1_req *req_acquire(h1_client *c)
{
    h1_req *u = c->free_list;
    if (u) {
        c->free_list = u->next;
        c->n_free--;
        u->next = NULL;
        return u;
    }
    u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->c = c;
    u->base.ops = &h1_req_ops;
    uv_timer_init(c->loop, &u->timer);
    u->timer.data = u;
    c->open_handles++;
    return u;
}

static bool header_is(const char *name, const char *what)
{
    return strcasecmp(name, what) == 0;
}

static bool header_text_ok(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

/* Request line and headers into u->head; false (u->msg set) for a header that cannot be sent. */
static bool req_build_head(h1_req *u, const upstream_opts *o, const upstream_h1_target *t,
                           const char *method, bool has_body)
{
    buf *b = &u->head;
    buf_reserve(b, 256);
    buf_add_s(b, method);
    buf_add(b, " ", 1);
    if (t->path_len)
        buf_add(b, t->path, t->path_len);
    else
        buf_add(b, "/", 1);
    if (t->query) {
        buf_add(b, "?", 1);
        buf_add(b, t->query, t->query_len);
    }
    buf_add_s(b, " HTTP/1.1\r\n");
    bool have_host = false;
    for (size_t i = 0; i < o->n_headers; i++) {
        const upstream_header *h = &o->headers[i];
        if (h->name && header_is(h->name, "Host")) have_host = true;
    }
    if (!have_host) buf_add(b, u->host->host_line.data, u->host->host_line.len);
    for (size_t i = 0; i < o->n_headers; i++) {
        const upstream_header *h = &o->headers[i];
        const char *v = h->value ? h->value : "";
        if (!h->name || !h->name[0] || strpbrk(h->name, ":\r\n \t") || !header_text_ok(v)) {
            snprintf(u->msg, sizeof u->msg,
                     "request header %zu (\"%.64s\") has an empty name or contains ':', a space "
                     "or CR/LF; fix the header before sending it upstream",
                     i, h->name ? h->name : "");
            return false;
        }
        /* Framing is ours (Content-Length from body_len); no "Expect: 100-continue". */
        if (header_is(h->name, "Content-Length") || header_is(h->name, "Transfer-Encoding") ||
            header_is(h->name, "Expect"))
            continue;
        buf_add_s(b, h->name);
        if (v[0]) {
            buf_add(b, ": ", 2);
            buf_add_s(b, v);
            buf_add(b, "\r\n", 2);
        } else {
            buf_add(b, ":\r\n", 3);
        }
    }
    if (has_body) {
        buf_add_s(b, "Content-Length: ");
        buf_put_u64(b, o->body_len);
        buf_add(b, "\r\n", 2);
    }
    buf_add(b, "\r\n", 2);
    return true;
}

/* ---- backend API ---- */

upstream_h1 *upstream_h1_new(uv_loop_t *loop)
{
    h1_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    uv_timer_init(loop, &c->kick);
    c->kick.data = c;
    uv_timer_init(loop, &c->sweep);
    c->sweep.data = c;
    uv_unref((uv_handle_t *)&c->sweep);
    c->open_handles = 2;
    return c;
}

static void client_destroy(h1_client *c)
{
    c->closing = true;
    c->free_requested = false;
    while (c->active) {
        h1_req *u = c->active;
        u->state = H1_CANCELLED;
        req_release(u);
    }
    while (c->todo_head)
        todo_unlink(c->todo_head);
    while (c->free_list) {
        h1_req *u = c->free_list;
        c->free_list = u->next;
        req_destroy(u);
    }
    c->n_free = 0;
    c->in_flight = 0;
    for (h1_host *h = c->hosts; h; h = h->next) {
        if (h->resolving) uv_cancel((uv_req_t *)&h->resolving->gai);
    }
    for (h1_conn *k = c->conns; k; k = k->all_next)
        conn_close(k);
    uv_close((uv_handle_t *)&c->kick, client_handle_closed);
    uv_close((uv_handle_t *)&c->sweep, client_handle_closed);
}

void upstream_h1_free(upstream_h1 *c)
{
    if (!c || c->closing) return;
    if (c->depth > 0) {
        c->free_requested = true;
        for (h1_req *u = c->active; u; u = u->next) {
            if (u->state == H1_ACTIVE) u->state = H1_CANCELLED;
            uv_timer_stop(&u->timer);
        }
        c->in_flight = 0;
        return;
    }
    client_destroy(c);
}

upstream_req *upstream_h1_send(upstream_h1 *c, const upstream_opts *o, const upstream_h1_target *t)
{
    if (!c || !o || !o->url || c->closing || c->free_requested) return NULL;
    h1_host *h = host_get(c, t->host, t->host_len, t->port);
    if (!h) return NULL;
    h1_req *u = req_acquire(c);
    if (!u) return NULL;
    u->host = h;
    h->refs++;
    u->conn = NULL;
    u->state = H1_ACTIVE;
    u->paused = u->headers_fired = u->got_byte = u->resp_byte = u->retried = false;
    u->hdr_in_value = u->hdr_too_big = false;
    u->status = 0;
    u->ttfb_us = 0;
    u->msg[0] = 0;
    u->udata = o->udata;
    u->on_headers = o->on_headers;
    u->on_data = o->on_data;
    u->on_done = o->on_done;
    u->connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : H1_DEFAULT_CONNECT_MS;
    u->fb_ms = o->first_byte_timeout_ms;
    u->total_ms = o->total_timeout_ms;
    uint64_t now = uv_now(c->loop);
    u->dl_connect = now + u->connect_ms;
    u->dl_fb = u->fb_ms ? now + u->fb_ms : 0;
    u->dl_total = u->total_ms ? now + u->total_ms : 0;
    u->t_send_us = clock_mono_us();
    buf_add_s(&u->url, o->url);
    active_link(u);
    c->in_flight++;

    const char *method = o->method && o->method[0] ? o->method : (o->body_len ? "POST" : "GET");
    bool has_body = o->body_len > 0 || strcasecmp(method, "POST") == 0 ||
                    strcasecmp(method, "PUT") == 0 || strcasecmp(method, "PATCH") == 0;
    u->is_head = strcasecmp(method, "HEAD") == 0;
    if (!method[0] || !header_text_ok(method) || strpbrk(method, " \t")) {
        snprintf(u->msg, sizeof u->msg, "request method \"%.32s\" is not a valid HTTP method",
                 method);
        req_fail(u, UPSTREAM_ERROR);
        return &u->base;
    }
    if (o->body_len && !o->body) {
        snprintf(u->msg, sizeof u->msg, "request body is NULL but body_len is %zu", o->body_len);
        req_fail(u, UPSTREAM_ERROR);
        return &u->base;
    }
    if (!req_build_head(u, o, t, method, has_body)) {
        req_fail(u, UPSTREAM_ERROR);
        return &u->base;
    }
    u->body_len = o->body_len;
    u->body_ptr = o->body;
    if (o->body_len && !o->body_borrowed) {
        buf_add(&u->body, o->body, o->body_len);
        u->body_ptr = u->body.data;
    }
    req_start(u, true);
    if (u->state == H1_ACTIVE && !u->in_todo) req_arm(u);
    return &u->base;
}

size_t upstream_h1_in_flight(const upstream_h1 *c)
{
    return c ? c->in_flight : 0;
}

void upstream_h1_get_stats(const upstream_h1 *c, upstream_h1_stats *out)
{
    *out = c->stats;
    out->idle = c->n_idle;
}

/* ---- per-request ops ---- */

static void h1_pause(upstream_req *b)
{
    h1_req *u = (h1_req *)b;
    if (u->state != H1_ACTIVE) return;
    u->paused = true;
    u->todo &= ~(unsigned)TODO_RESUME; /* a resume queued earlier must not undo this pause */
    if (u->in_todo && u->todo == 0) todo_unlink(u);
}

static void h1_resume(upstream_req *b)
{
    h1_req *u = (h1_req *)b;
    if (u->state != H1_ACTIVE) return;
    todo_add(u, TODO_RESUME);
}

static void h1_cancel(upstream_req *b)
{
    h1_req *u = (h1_req *)b;
    if (u->state != H1_ACTIVE) return;
    h1_client *c = u->c;
    u->state = H1_CANCELLED;
    c->in_flight--;
    uv_timer_stop(&u->timer);
    if (c->depth > 0)
        todo_add(u, TODO_CANCEL);
    else
        req_release(u);
}

static const char *h1_header_get(const upstream_req *b, const char *name)
{
    const h1_req *u = (const h1_req *)b;
    if (!name) return NULL;
    const char *p = u->resp_headers.data, *end = p + u->resp_headers.len, *found = NULL;
    while (p && p < end) {
        const char *v = p + strlen(p) + 1;
        if (v >= end) break;
        if (strcasecmp(p, name) == 0) found = v;
        p = v + strlen(v) + 1;
    }
    return found;
}

static unsigned long h1_ttfb_us(const upstream_req *b)
{
    return (unsigned long)((const h1_req *)b)->ttfb_us;
}

static const upstream_req_ops h1_req_ops = {
    .pause = h1_pause,
    .resume = h1_resume,
    .cancel = h1_cancel,
    .header_get = h1_header_get,
    .ttfb_us = h1_ttfb_us,
};
