/* curl.c — the libcurl transport behind upstream_client (see backend.h): one libcurl multi handle
 * per libuv loop (the multi-uv pattern). It serves https, proxied and every other non-native URL.
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION → one uv_poll per socket) and
 * when to wake it (CURLMOPT_TIMERFUNCTION → one uv_timer); we feed events back with
 * curl_multi_socket_action and collect finished transfers with curl_multi_info_read. The multi
 * owns the connection cache, so keep-alive connections (and HTTP/2 streams) are shared by every
 * request on the loop.
 *
 * Re-entrancy: user callbacks run from inside libcurl (header/write callbacks), where libcurl
 * forbids curl_multi_add_handle / curl_multi_remove_handle. So every libuv entry point counts
 * itself in `depth`, and work that needs libcurl's multi API or may call user code (adding a
 * handle, unpausing, cleaning up a cancelled request) is queued on the client's `todo` list and
 * run by a zero-delay uv_timer ("kick") on a later loop iteration. upstream_curl_free inside a
 * callback is honoured when the outermost entry point returns.
 *
 * Memory: request structs (each with its easy handle, first-byte timer and two reusable buffers)
 * live on a free list and are reused, so a steady-state request allocates only its request header
 * list (curl_slist: two small blocks per header) plus whatever libcurl allocates internally; the
 * body copy and the response headers reuse the pooled buffers. Sockets allocate one small struct
 * per connection, not per request. */
#include "upstream/backend.h"

#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Idle request structs kept for reuse; beyond this a finished request is destroyed. */
#define UPSTREAM_POOL_MAX 256
/* A pooled buffer larger than this is freed on reuse so one huge body does not pin memory. */
#define UPSTREAM_BUF_KEEP (64 * 1024)
#define UPSTREAM_DEFAULT_CONNECT_MS 5000

typedef struct curl_req curl_req;

enum req_state {
    REQ_IDLE,      /* on the free list */
    REQ_ACTIVE,    /* sent, callbacks may still run */
    REQ_DONE,      /* on_done is running / has run; released right after */
    REQ_CANCELLED, /* cancelled; waiting for the kick to remove it from the multi */
};

/* Deferred work flags (req->todo). */
enum {
    TODO_ADD = 1,    /* curl_multi_add_handle (send happened inside libcurl) */
    TODO_RESUME = 2, /* curl_easy_pause(CONT) */
    TODO_FAIL = 4,   /* report req->msg through on_done with UPSTREAM_ERROR */
    TODO_CANCEL = 8, /* remove from the multi and recycle */
};

typedef struct upstream_sock {
    uv_poll_t poll;
    curl_socket_t fd;
    int events; /* UV_READABLE / UV_WRITABLE, as libcurl last asked */
    upstream_curl *c;
    struct upstream_sock *next, *prev; /* client's socket list, for free */
} upstream_sock;

struct curl_req {
    upstream_req base; /* ops: must stay first */
    upstream_curl *c;
    CURL *easy;
    uv_timer_t fb_timer;          /* first-byte timeout; initialised once per struct */
    struct curl_req *next, *prev; /* active list, or free list (next only) */
    struct curl_req *todo_next, *todo_prev;
    unsigned todo;     /* TODO_* flags */
    bool in_todo;      /* linked on the client's todo list */
    uint64_t todo_gen; /* kick generation when queued, so a kick runs only older work */

    enum req_state state;
    bool added;         /* easy is in the multi */
    bool paused;        /* write callback answers CURL_WRITEFUNC_PAUSE without calling on_data */
    bool headers_fired; /* on_headers has run */
    bool got_byte;      /* first body byte arrived */
    int status;
    unsigned connect_timeout_ms, first_byte_timeout_ms, total_timeout_ms;
    uint64_t t_send_us, ttfb_us;

    struct curl_slist *req_headers;
    struct curl_slist *connect_to; /* tls_server_name: "name:port:host:port", NULL otherwise */
    bool custom_ca;                /* tls_ca_pem replaced the system CA bundle */
    buf body;                      /* body copy unless borrowed; capacity reused across requests */
    buf resp_headers;              /* "name\0value\0" pairs of the current header block */

    void *udata;
    void (*on_headers)(upstream_req *u, int status, void *udata);
    bool (*on_data)(upstream_req *u, const char *data, size_t len, void *udata);
    void (*on_done)(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata);

    char errbuf[CURL_ERROR_SIZE]; /* libcurl's detail for the last failure */
    char msg[512];                /* the sentence handed to on_done */
};

struct upstream_curl {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t curl_timer; /* libcurl's single timeout */
    uv_timer_t kick;       /* runs the todo list on the next iteration */
    curl_req *active;      /* doubly linked: sent and not yet released */
    curl_req *free_list;
    size_t n_free;
    curl_req *todo_head, *todo_tail;
    uint64_t kick_gen;
    upstream_sock *socks;
    size_t in_flight;
    int depth;           /* nesting of our libuv entry points on the stack */
    int in_curl;         /* inside a libcurl call that may run our callbacks */
    bool free_requested; /* upstream_curl_free called while depth > 0 */
    bool closing;        /* tearing down: handles are being closed */
    int open_handles;    /* uv handles not yet through their close callback */
    buf scratch;         /* formats "Name: value" lines before curl copies them */
};

static pthread_once_t upstream_curl_once = PTHREAD_ONCE_INIT;
static CURLcode upstream_curl_init_rc = CURLE_OK;

static void upstream_curl_global_init(void)
{
    upstream_curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static const upstream_req_ops curl_req_ops;
static void client_destroy(upstream_curl *c);
static void client_read_info(upstream_curl *c);
static void req_release(curl_req *u);
static void kick_fire(uv_timer_t *t);

/* ---- entry/exit bookkeeping ---- */

static void client_enter(upstream_curl *c)
{
    c->depth++;
}

/* May destroy c (a deferred upstream_curl_free): callers must not touch c afterwards. */
static void client_leave(upstream_curl *c)
{
    if (--c->depth == 0 && c->free_requested) client_destroy(c);
}

/* Every uv handle we own ends here; the client is freed after the last one. */
static void client_handle_gone(upstream_curl *c)
{
    if (--c->open_handles == 0 && c->closing) {
        buf_free(&c->scratch);
        free(c);
    }
}

static void client_handle_closed(uv_handle_t *h)
{
    client_handle_gone(h->data);
}

/* ---- todo list ---- */

static void todo_unlink(curl_req *u)
{
    upstream_curl *c = u->c;
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

static void todo_add(curl_req *u, unsigned flag)
{
    upstream_curl *c = u->c;
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

static void active_link(curl_req *u)
{
    upstream_curl *c = u->c;
    u->prev = NULL;
    u->next = c->active;
    if (c->active) c->active->prev = u;
    c->active = u;
}

static void active_unlink(curl_req *u)
{
    upstream_curl *c = u->c;
    if (u->prev)
        u->prev->next = u->next;
    else
        c->active = u->next;
    if (u->next) u->next->prev = u->prev;
    u->next = u->prev = NULL;
}

/* ---- sockets and timers from libcurl ---- */

static void sock_closed(uv_handle_t *h)
{
    upstream_sock *s = h->data;
    upstream_curl *c = s->c;
    free(s);
    client_handle_gone(c);
}

static void sock_close(upstream_sock *s)
{
    upstream_curl *c = s->c;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->socks = s->next;
    if (s->next) s->next->prev = s->prev;
    s->next = s->prev = NULL;
    uv_close((uv_handle_t *)&s->poll, sock_closed);
}

static void client_socket_action(upstream_curl *c, curl_socket_t fd, int ev)
{
    int running = 0;
    c->in_curl++;
    curl_multi_socket_action(c->multi, fd, ev, &running);
    c->in_curl--;
    client_read_info(c);
}

static void sock_poll_cb(uv_poll_t *p, int status, int events)
{
    upstream_sock *s = p->data;
    upstream_curl *c = s->c;
    int ev = 0;
    /* An error (libuv reports POLLERR as a status and stops the handle): let libcurl also read
     * or write in the directions it waits for, so that it reads what arrived before the error
     * (a TLS alert, say) and reports the real failure; the error bit alone only makes it say
     * "select/poll returned error". */
    if (status < 0) {
        ev = CURL_CSELECT_ERR;
        events = s->events;
    }
    if (events & UV_READABLE) ev |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) ev |= CURL_CSELECT_OUT;
    client_enter(c);
    if (!c->free_requested) client_socket_action(c, s->fd, ev);
    client_leave(c);
}

static int curl_socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    upstream_curl *c = userp;
    upstream_sock *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            curl_multi_assign(c->multi, fd, NULL);
            sock_close(s);
        }
        return 0;
    }
    if (c->closing) return 0;
    if (!s) {
        s = calloc(1, sizeof *s);
        if (!s) return -1;
        if (uv_poll_init_socket(c->loop, &s->poll, fd) != 0) {
            log_error("upstream: cannot watch socket %d with libuv", (int)fd);
            free(s);
            return -1;
        }
        s->c = c;
        s->fd = fd;
        s->poll.data = s;
        c->open_handles++;
        s->next = c->socks;
        if (c->socks) c->socks->prev = s;
        c->socks = s;
        curl_multi_assign(c->multi, fd, s);
    }
    int events = 0;
    if (what == CURL_POLL_IN || what == CURL_POLL_INOUT) events |= UV_READABLE;
    if (what == CURL_POLL_OUT || what == CURL_POLL_INOUT) events |= UV_WRITABLE;
    s->events = events;
    uv_poll_start(&s->poll, events, sock_poll_cb);
    return 0;
}

static void curl_timer_fire(uv_timer_t *t)
{
    upstream_curl *c = t->data;
    client_enter(c);
    if (!c->free_requested) client_socket_action(c, CURL_SOCKET_TIMEOUT, 0);
    client_leave(c);
}

static int curl_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
    upstream_curl *c = userp;
    if (c->closing) return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&c->curl_timer);
    else
        uv_timer_start(&c->curl_timer, curl_timer_fire, (uint64_t)timeout_ms, 0);
    return 0;
}

/* ---- completion ---- */

static const char *req_url(curl_req *u)
{
    char *url = NULL;
    curl_easy_getinfo(u->easy, CURLINFO_EFFECTIVE_URL, &url);
    return url ? url : "(unknown url)";
}

static void req_fire_headers(curl_req *u)
{
    long code = 0;
    curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &code);
    u->status = (int)code;
    u->headers_fired = true;
    if (u->on_headers) u->on_headers(&u->base, u->status, u->udata);
}

/* Calls on_done (once) and releases u. Never called from inside libcurl. */
static void req_finish(curl_req *u, upstream_result res, const char *msg)
{
    upstream_curl *c = u->c;
    u->state = REQ_DONE;
    c->in_flight--;
    uv_timer_stop(&u->fb_timer);
    if (u->on_done) u->on_done(&u->base, res, u->status, msg, u->udata);
    req_release(u);
}

static bool curl_code_is_connect(CURLcode rc)
{
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_CONNECT:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ENGINE_INITFAILED:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_USE_SSL_FAILED:
    case CURLE_UNSUPPORTED_PROTOCOL:
    case CURLE_URL_MALFORMAT:
        return true;
    default:
        return false;
    }
}

static void req_complete(curl_req *u, CURLcode rc)
{
    long code = 0;
    curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &code);
    u->status = (int)code;
    const char *detail = u->errbuf[0] ? u->errbuf : curl_easy_strerror(rc);
    upstream_result res;

    if (rc == CURLE_OK) {
        if (!u->headers_fired) {
            req_fire_headers(u);
            if (u->state != REQ_ACTIVE) return; /* cancelled inside on_headers */
        }
        res = UPSTREAM_OK;
        u->msg[0] = 0;
    } else if (rc == CURLE_OPERATION_TIMEDOUT) {
        /* libcurl reports both timeouts with one code. Connected means a fresh connection
         * finished its handshake or a reused one carried our request. */
        curl_off_t connect_us = 0;
        long sent = 0;
        curl_easy_getinfo(u->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        curl_easy_getinfo(u->easy, CURLINFO_REQUEST_SIZE, &sent);
        bool connected = connect_us > 0 || sent > 0;
        bool connect_limit = !u->total_timeout_ms || u->connect_timeout_ms < u->total_timeout_ms;
        if (!connected && connect_limit) {
            res = UPSTREAM_CONNECT_FAILED;
            snprintf(u->msg, sizeof u->msg,
                     "cannot connect to upstream %s within %u ms (connect_timeout_ms): %s",
                     req_url(u), u->connect_timeout_ms, detail);
        } else {
            res = UPSTREAM_TIMEOUT;
            snprintf(u->msg, sizeof u->msg,
                     "upstream %s did not finish within %u ms (total_timeout_ms): %s", req_url(u),
                     u->total_timeout_ms, detail);
        }
    } else if (curl_code_is_connect(rc)) {
        res = UPSTREAM_CONNECT_FAILED;
        const char *hint = "";
        if (rc == CURLE_PEER_FAILED_VERIFICATION)
            hint = u->custom_ca ? "; check the upstream's certificate against the CA configured "
                                  "for it (config.tls.caSecretRef; the system CA bundle is not "
                                  "used) and its name (config.tls.serverName)"
                                : "; check the upstream's certificate or the system CA bundle";
        const char *via = u->connect_to ? strchr(u->connect_to->data, ':') : NULL;
        via = via ? strchr(via + 1, ':') : NULL;
        snprintf(u->msg, sizeof u->msg, "cannot connect to upstream %s%s%s%s: %s%s", req_url(u),
                 via ? " (at " : "", via ? via + 1 : "", via ? ")" : "", detail, hint);
    } else {
        res = UPSTREAM_ERROR;
        snprintf(u->msg, sizeof u->msg, "upstream %s failed %s: %s", req_url(u),
                 u->status ? "mid-response" : "before a response arrived", detail);
    }
    req_finish(u, res, res == UPSTREAM_OK ? NULL : u->msg);
}

static void client_read_info(upstream_curl *c)
{
    CURLMsg *m;
    int left = 0;
    while (!c->closing && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        curl_req *u = (curl_req *)priv;
        CURLcode rc = m->data.result;
        /* Cancelled requests are skipped: their cleanup is already on the todo list. */
        if (u && u->state == REQ_ACTIVE) req_complete(u, rc);
    }
}

/* ---- libcurl data callbacks (run inside libcurl) ---- */

static void resp_header_line(curl_req *u, const char *p, size_t n)
{
    while (n && (p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    if (n >= 5 && memcmp(p, "HTTP/", 5) == 0) {
        buf_reset(&u->resp_headers); /* a new block: 1xx, or the final response */
        return;
    }
    if (n == 0) {
        long code = 0;
        curl_easy_getinfo(u->easy, CURLINFO_RESPONSE_CODE, &code);
        if (code >= 200 && !u->headers_fired) req_fire_headers(u);
        return;
    }
    if (p[0] == ' ' || p[0] == '\t') { /* obsolete line folding: continue the last value */
        if (u->resp_headers.len == 0) return;
        u->resp_headers.len--; /* drop the value's NUL */
        while (n && (*p == ' ' || *p == '\t'))
            p++, n--;
        buf_append(&u->resp_headers, " ", 1);
        buf_append(&u->resp_headers, p, n);
        buf_append(&u->resp_headers, "", 1);
        return;
    }
    const char *colon = memchr(p, ':', n);
    if (!colon || colon == p) return;
    size_t nl = (size_t)(colon - p);
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    buf_append(&u->resp_headers, p, nl);
    buf_append(&u->resp_headers, "", 1);
    buf_append(&u->resp_headers, v, (size_t)(end - v));
    buf_append(&u->resp_headers, "", 1);
}

static size_t curl_header_cb(char *p, size_t size, size_t n, void *ud)
{
    curl_req *u = ud;
    size_t len = size * n;
    if (u->state != REQ_ACTIVE) return 0; /* aborts the transfer */
    resp_header_line(u, p, len);
    return u->state == REQ_ACTIVE ? len : 0;
}

static size_t curl_write_cb(char *p, size_t size, size_t n, void *ud)
{
    curl_req *u = ud;
    size_t len = size * n;
    if (u->state != REQ_ACTIVE) return 0;
    if (!u->got_byte) {
        u->got_byte = true;
        u->ttfb_us = clock_mono_us() - u->t_send_us;
        if (u->ttfb_us == 0) u->ttfb_us = 1;
        uv_timer_stop(&u->fb_timer);
    }
    if (!u->headers_fired) {
        req_fire_headers(u);
        if (u->state != REQ_ACTIVE) return 0;
    }
    if (u->paused) return CURL_WRITEFUNC_PAUSE;
    bool more = u->on_data ? u->on_data(&u->base, p, len, u->udata) : true;
    if (u->state != REQ_ACTIVE) return 0;
    if (!more) {
        /* Not consumed: libcurl keeps these bytes and hands them to us again after
         * curl_easy_pause(CURLPAUSE_CONT), which the kick issues for upstream_resume(). */
        u->paused = true;
        return CURL_WRITEFUNC_PAUSE;
    }
    return len;
}

static void fb_timer_fire(uv_timer_t *t)
{
    curl_req *u = t->data;
    upstream_curl *c = u->c;
    if (u->state != REQ_ACTIVE || u->got_byte) return;
    client_enter(c);
    snprintf(u->msg, sizeof u->msg,
             "upstream %s sent no first byte within %u ms (first_byte_timeout_ms)", req_url(u),
             u->first_byte_timeout_ms);
    if (!c->free_requested) req_finish(u, UPSTREAM_TIMEOUT, u->msg);
    client_leave(c);
}

/* ---- request struct pool ---- */

static void req_struct_closed(uv_handle_t *h)
{
    curl_req *u = h->data;
    upstream_curl *c = u->c;
    free(u);
    client_handle_gone(c);
}

static void req_destroy(curl_req *u)
{
    if (u->easy) curl_easy_cleanup(u->easy);
    u->easy = NULL;
    buf_free(&u->body);
    buf_free(&u->resp_headers);
    uv_close((uv_handle_t *)&u->fb_timer, req_struct_closed);
}

static curl_req *req_acquire(upstream_curl *c)
{
    curl_req *u = c->free_list;
    if (u) {
        c->free_list = u->next;
        c->n_free--;
        u->next = NULL;
        return u;
    }
    u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->c = c;
    u->easy = curl_easy_init();
    if (!u->easy) {
        free(u);
        return NULL;
    }
    uv_timer_init(c->loop, &u->fb_timer);
    u->fb_timer.data = u;
    c->open_handles++;
    return u;
}

static void buf_recycle(buf *b)
{
    if (b->cap > UPSTREAM_BUF_KEEP)
        buf_free(b);
    else
        buf_reset(b);
}

/* Takes u out of the multi and back to the pool. Never called from inside libcurl. */
static void req_release(curl_req *u)
{
    upstream_curl *c = u->c;
    todo_unlink(u);
    if (u->added) {
        curl_multi_remove_handle(c->multi, u->easy);
        u->added = false;
    }
    uv_timer_stop(&u->fb_timer);
    active_unlink(u);
    curl_slist_free_all(u->req_headers);
    u->req_headers = NULL;
    curl_slist_free_all(u->connect_to);
    u->connect_to = NULL;
    u->custom_ca = false;
    buf_recycle(&u->body);
    buf_recycle(&u->resp_headers);
    u->state = REQ_IDLE;
    u->on_headers = NULL;
    u->on_data = NULL;
    u->on_done = NULL;
    u->udata = NULL;
    if (c->closing || c->free_requested || c->n_free >= UPSTREAM_POOL_MAX) {
        req_destroy(u);
        return;
    }
    curl_easy_reset(u->easy);
    u->next = c->free_list;
    c->free_list = u;
    c->n_free++;
}

/* ---- the kick: deferred work ---- */

static void req_add(curl_req *u)
{
    CURLMcode mc = curl_multi_add_handle(u->c->multi, u->easy);
    if (mc == CURLM_OK) {
        u->added = true;
        return;
    }
    snprintf(u->msg, sizeof u->msg, "cannot start upstream request to %s: %s", req_url(u),
             curl_multi_strerror(mc));
    todo_add(u, TODO_FAIL);
}

static void kick_fire(uv_timer_t *t)
{
    upstream_curl *c = t->data;
    client_enter(c);
    uint64_t gen = ++c->kick_gen;
    curl_req *u;
    while (!c->free_requested && (u = c->todo_head) && u->todo_gen < gen) {
        unsigned what = u->todo;
        todo_unlink(u);
        if (u->state == REQ_CANCELLED || (what & TODO_CANCEL)) {
            req_release(u);
        } else if (u->state != REQ_ACTIVE) {
            continue;
        } else if (what & TODO_FAIL) {
            req_finish(u, UPSTREAM_ERROR, u->msg);
        } else {
            if ((what & TODO_ADD) && !u->added) req_add(u);
            if ((what & TODO_RESUME) && u->added && u->state == REQ_ACTIVE) {
                u->paused = false;
                /* May deliver the held-back bytes right here, through curl_write_cb. */
                c->in_curl++;
                curl_easy_pause(u->easy, CURLPAUSE_CONT);
                c->in_curl--;
            }
        }
    }
    if (!c->free_requested) client_read_info(c);
    if (c->todo_head && !c->free_requested) uv_timer_start(&c->kick, kick_fire, 0, 0);
    client_leave(c);
}

/* ---- public API ---- */

upstream_curl *upstream_curl_new(uv_loop_t *loop)
{
    pthread_once(&upstream_curl_once, upstream_curl_global_init);
    if (upstream_curl_init_rc != CURLE_OK) {
        log_error("upstream: libcurl global init failed: %s",
                  curl_easy_strerror(upstream_curl_init_rc));
        return NULL;
    }
    upstream_curl *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->multi = curl_multi_init();
    if (!c->multi) {
        free(c);
        return NULL;
    }
    uv_timer_init(loop, &c->curl_timer);
    c->curl_timer.data = c;
    uv_timer_init(loop, &c->kick);
    c->kick.data = c;
    c->open_handles = 2;
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
    curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
    curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
    /* Idle keep-alive connections kept in the shared cache (all hosts together). */
    curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, 512L);
    curl_multi_setopt(c->multi, CURLMOPT_PIPELINING, (long)CURLPIPE_MULTIPLEX);
    return c;
}

static void client_destroy(upstream_curl *c)
{
    c->closing = true;
    c->free_requested = false;
    while (c->active) {
        curl_req *u = c->active;
        u->state = REQ_CANCELLED;
        req_release(u); /* closing → destroyed, not pooled */
    }
    while (c->todo_head)
        todo_unlink(c->todo_head);
    while (c->free_list) {
        curl_req *u = c->free_list;
        c->free_list = u->next;
        req_destroy(u);
    }
    c->n_free = 0;
    c->in_flight = 0;
    curl_multi_cleanup(c->multi); /* may report CURL_POLL_REMOVE for cached connections */
    c->multi = NULL;
    while (c->socks)
        sock_close(c->socks);
    uv_close((uv_handle_t *)&c->curl_timer, client_handle_closed);
    uv_close((uv_handle_t *)&c->kick, client_handle_closed);
}

void upstream_curl_free(upstream_curl *c)
{
    if (!c || c->closing) return;
    if (c->depth > 0) {
        /* Inside one of our callbacks: silence every request now, tear down on the way out. */
        c->free_requested = true;
        for (curl_req *u = c->active; u; u = u->next) {
            if (u->state == REQ_ACTIVE) u->state = REQ_CANCELLED;
            uv_timer_stop(&u->fb_timer);
        }
        c->in_flight = 0;
        return;
    }
    client_destroy(c);
}

static bool header_is(const upstream_header *h, const char *name)
{
    return strcasecmp(h->name, name) == 0;
}

static bool header_text_ok(const char *s)
{
    return strpbrk(s, "\r\n") == NULL;
}

/* Builds the request header list; false (with u->msg set) for a header that cannot be sent. */
static bool req_build_headers(curl_req *u, const upstream_opts *o, bool has_body)
{
    upstream_curl *c = u->c;
    bool have_ctype = false;
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
        /* libcurl computes Content-Length from body_len; a second one would corrupt framing. */
        if (header_is(h, "Content-Length")) continue;
        if (header_is(h, "Content-Type")) have_ctype = true;
        buf_reset(&c->scratch);
        /* "Name;" is libcurl's spelling of a header with an empty value. */
        if (v[0])
            buf_printf(&c->scratch, "%s: %s", h->name, v);
        else
            buf_printf(&c->scratch, "%s;", h->name);
        struct curl_slist *l = curl_slist_append(u->req_headers, c->scratch.data);
        if (!l) {
            snprintf(u->msg, sizeof u->msg, "out of memory building upstream request headers");
            return false;
        }
        u->req_headers = l;
    }
    /* No "Expect: 100-continue" round trip, and no invented form Content-Type for bodies. */
    const char *extra[2] = {"Expect:", has_body && !have_ctype ? "Content-Type:" : NULL};
    for (size_t i = 0; i < 2; i++) {
        if (!extra[i]) continue;
        struct curl_slist *l = curl_slist_append(u->req_headers, extra[i]);
        if (!l) {
            snprintf(u->msg, sizeof u->msg, "out of memory building upstream request headers");
            return false;
        }
        u->req_headers = l;
    }
    return true;
}

static void req_setup_easy(curl_req *u, const upstream_opts *o)
{
    CURL *e = u->easy;
    curl_easy_setopt(e, CURLOPT_PRIVATE, (char *)u);
    curl_easy_setopt(e, CURLOPT_URL, o->url);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 60L);
    curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 30L);
    curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
    /* On https, wait for a pending connection that may turn out to multiplex (HTTP/2) instead
     * of opening a parallel one. Plain http is HTTP/1.1 only, so there is nothing to wait for. */
    if (strncasecmp(o->url, "https:", 6) == 0) curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
    curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L); /* proxy CONNECT reply */
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)u->connect_timeout_ms);
    if (u->total_timeout_ms) curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)u->total_timeout_ms);
    long verify = o->insecure_skip_verify ? 0L : 1L;
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, verify);
    curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    curl_easy_setopt(e, CURLOPT_PROXY_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(e, CURLOPT_PROXY_SSL_VERIFYHOST, 2L);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, u->errbuf);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, curl_header_cb);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, u);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, curl_write_cb);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, u);
}

static void set_blob(CURL *e, CURLoption opt, const char *pem)
{
    struct curl_blob blob = {.data = (void *)pem, .len = strlen(pem), .flags = CURL_BLOB_COPY};
    curl_easy_setopt(e, opt, &blob);
}

/* o's TLS settings. libcurl keys its connection cache on the host, the connect-to address and
 * the TLS configuration (verification flags, CA and client certificate blobs), so requests with
 * different settings never share a connection. False (with u->msg) when the URL cannot carry
 * the server name. */
static bool req_setup_tls(curl_req *u, const upstream_opts *o)
{
    CURL *e = u->easy;
    if (o->tls_ca_pem) {
        /* replaces the system bundle: CAINFO_BLOB overrides CAINFO; CAPATH must go too */
        set_blob(e, CURLOPT_CAINFO_BLOB, o->tls_ca_pem);
        curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
        u->custom_ca = true;
    }
    if (o->tls_cert_pem && o->tls_key_pem) {
        curl_easy_setopt(e, CURLOPT_SSLCERTTYPE, "PEM");
        set_blob(e, CURLOPT_SSLCERT_BLOB, o->tls_cert_pem);
        curl_easy_setopt(e, CURLOPT_SSLKEYTYPE, "PEM");
        set_blob(e, CURLOPT_SSLKEY_BLOB, o->tls_key_pem);
    }
    if (!o->tls_server_name || strncasecmp(o->url, "https:", 6) != 0) return true;
    /* The URL names the server (SNI, verification, Host); CONNECT_TO sends the connection to
     * the URL's own host and port. */
    CURLU *h = curl_url();
    char *host = NULL, *port = NULL, *url = NULL;
    bool ok = h && curl_url_set(h, CURLUPART_URL, o->url, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK &&
              curl_url_set(h, CURLUPART_HOST, o->tls_server_name, 0) == CURLUE_OK &&
              curl_url_get(h, CURLUPART_URL, &url, 0) == CURLUE_OK;
    if (ok) {
        buf_reset(&u->c->scratch);
        buf_printf(&u->c->scratch, "%s:%s:%s:%s", o->tls_server_name, port, host, port);
        u->connect_to = curl_slist_append(NULL, u->c->scratch.data);
        ok = u->connect_to != NULL;
    }
    if (ok) {
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_CONNECT_TO, u->connect_to);
    } else {
        snprintf(u->msg, sizeof u->msg,
                 "cannot send %.200s to the TLS server name \"%.100s\": not a valid URL host",
                 o->url, o->tls_server_name);
    }
    curl_free(url);
    curl_free(port);
    curl_free(host);
    curl_url_cleanup(h);
    return ok;
}

static void req_setup_method(curl_req *u, const upstream_opts *o, const char *method, bool has_body)
{
    CURL *e = u->easy;
    if (strcasecmp(method, "HEAD") == 0) {
        curl_easy_setopt(e, CURLOPT_NOBODY, 1L);
        return;
    }
    if (!has_body) {
        if (strcasecmp(method, "GET") == 0)
            curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
        else
            curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
        return;
    }
    const char *body = "";
    if (o->body_len) {
        if (o->body_borrowed) {
            body = o->body;
        } else {
            buf_append(&u->body, o->body, o->body_len);
            body = u->body.data;
        }
    }
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    if (strcasecmp(method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
}

upstream_req *upstream_curl_send(upstream_curl *c, const upstream_opts *o)
{
    if (!c || !o || !o->url || c->closing || c->free_requested) return NULL;
    curl_req *u = req_acquire(c);
    if (!u) return NULL;
    u->base.ops = &curl_req_ops;
    u->state = REQ_ACTIVE;
    u->added = u->paused = u->headers_fired = u->got_byte = false;
    u->status = 0;
    u->ttfb_us = 0;
    u->errbuf[0] = 0;
    u->msg[0] = 0;
    u->udata = o->udata;
    u->on_headers = o->on_headers;
    u->on_data = o->on_data;
    u->on_done = o->on_done;
    u->connect_timeout_ms =
        o->connect_timeout_ms ? o->connect_timeout_ms : UPSTREAM_DEFAULT_CONNECT_MS;
    u->first_byte_timeout_ms = o->first_byte_timeout_ms;
    u->total_timeout_ms = o->total_timeout_ms;
    u->t_send_us = clock_mono_us();
    active_link(u);
    c->in_flight++;

    const char *method = o->method && o->method[0] ? o->method : (o->body_len ? "POST" : "GET");
    bool has_body = o->body_len > 0 || strcasecmp(method, "POST") == 0 ||
                    strcasecmp(method, "PUT") == 0 || strcasecmp(method, "PATCH") == 0;
    req_setup_easy(u, o);
    if (!req_setup_tls(u, o)) {
        todo_add(u, TODO_FAIL);
        return &u->base;
    }
    if (!header_text_ok(method) || strchr(method, ' ')) {
        snprintf(u->msg, sizeof u->msg, "request method \"%.32s\" is not a valid HTTP method",
                 method);
        todo_add(u, TODO_FAIL);
        return &u->base;
    }
    if (o->body_len && !o->body) {
        snprintf(u->msg, sizeof u->msg, "request body is NULL but body_len is %zu", o->body_len);
        todo_add(u, TODO_FAIL);
        return &u->base;
    }
    req_setup_method(u, o, method, has_body);
    if (!req_build_headers(u, o, has_body)) {
        todo_add(u, TODO_FAIL);
        return &u->base;
    }
    curl_easy_setopt(u->easy, CURLOPT_HTTPHEADER, u->req_headers);

    if (u->first_byte_timeout_ms)
        uv_timer_start(&u->fb_timer, fb_timer_fire, u->first_byte_timeout_ms, 0);
    if (c->in_curl)
        todo_add(u, TODO_ADD);
    else
        req_add(u);
    return &u->base;
}

static void curl_pause(upstream_req *b)
{
    curl_req *u = (curl_req *)b;
    if (!u || u->state != REQ_ACTIVE) return;
    u->paused = true;
    u->todo &= ~(unsigned)TODO_RESUME; /* a resume queued earlier must not undo this pause */
    if (u->in_todo && u->todo == 0) todo_unlink(u);
}

static void curl_resume(upstream_req *b)
{
    curl_req *u = (curl_req *)b;
    if (!u || u->state != REQ_ACTIVE) return;
    todo_add(u, TODO_RESUME);
}

static void curl_cancel(upstream_req *b)
{
    curl_req *u = (curl_req *)b;
    if (!u || u->state != REQ_ACTIVE) return;
    upstream_curl *c = u->c;
    u->state = REQ_CANCELLED;
    c->in_flight--;
    uv_timer_stop(&u->fb_timer);
    if (c->depth > 0 || c->in_curl)
        todo_add(u, TODO_CANCEL);
    else
        req_release(u);
}

static const char *curl_header_get(const upstream_req *b, const char *name)
{
    const curl_req *u = (const curl_req *)b;
    if (!u || !name) return NULL;
    const char *p = u->resp_headers.data, *end = p + u->resp_headers.len, *found = NULL;
    while (p && p < end) {
        const char *v = p + strlen(p) + 1;
        if (strcasecmp(p, name) == 0) found = v;
        p = v + strlen(v) + 1;
    }
    return found;
}

static unsigned long curl_ttfb_us(const upstream_req *b)
{
    const curl_req *u = (const curl_req *)b;
    return u ? (unsigned long)u->ttfb_us : 0;
}

size_t upstream_curl_in_flight(const upstream_curl *c)
{
    return c ? c->in_flight : 0;
}

static const upstream_req_ops curl_req_ops = {
    .pause = curl_pause,
    .resume = curl_resume,
    .cancel = curl_cancel,
    .header_get = curl_header_get,
    .ttfb_us = curl_ttfb_us,
};
