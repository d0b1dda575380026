/* store_check.c — is a ModelContextProtocol's store reachable from the controller? Redis: a
 * PING (after AUTH when a password is set) spoken in RESP over a libuv TCP connection;
 * PostgreSQL: a TCP connection to the DSN's host and port (authentication is left to the
 * gateway pods, which hold the same credentials); rediss:// likewise a TCP connection only;
 * File: not checkable here (the path is on the gateway pods' volume); Memory: always. Every
 * check ends within 3 s. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "controller/controller.h"
#include "core/buf.h"

typedef struct sc {
    uv_loop_t *loop;
    uv_getaddrinfo_t gai;
    uv_connect_t conn;
    uv_write_t wr;
    uv_tcp_t tcp;
    uv_timer_t timer;
    int open_handles;
    bool tcp_init, done;
    bool speak_redis; /* false: a TCP connect is the whole check */
    int replies_wanted;
    char host[256], port[16];
    buf out, in;
    bool ok;
    char msg[512];
    store_check_cb cb;
    void *udata;
} sc;

static void sc_release(sc *s)
{
    if (--s->open_handles > 0) return;
    s->cb(s->ok, false, s->msg, s->udata);
    buf_free(&s->out);
    buf_free(&s->in);
    free(s);
}

static void sc_closed(uv_handle_t *h)
{
    sc_release(h->data);
}

static void sc_end(sc *s, bool ok, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void sc_end(sc *s, bool ok, const char *fmt, ...)
{
    if (s->done) return;
    s->done = true;
    s->ok = ok;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->msg, sizeof s->msg, fmt, ap);
    va_end(ap);
    uv_timer_stop(&s->timer);
    uv_close((uv_handle_t *)&s->timer, sc_closed);
    if (s->tcp_init) uv_close((uv_handle_t *)&s->tcp, sc_closed);
}

static void on_timeout(uv_timer_t *t)
{
    sc *s = t->data;
    sc_end(s, false, "%s:%s did not answer within 3 s", s->host, s->port);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    static char mem[4096];
    (void)h;
    (void)suggested;
    *b = uv_buf_init(mem, sizeof mem);
}

static void on_read(uv_stream_t *st, ssize_t n, const uv_buf_t *b)
{
    sc *s = st->data;
    if (n < 0) {
        sc_end(s, false, "Redis at %s:%s closed the connection: %s", s->host, s->port,
               uv_strerror((int)n));
        return;
    }
    buf_append(&s->in, b->base, (size_t)n);
    /* simple-string / error replies, one per line */
    int lines = 0;
    for (size_t i = 0; i < s->in.len; i++)
        if (s->in.data[i] == '\n') lines++;
    if (lines < s->replies_wanted) return;
    const char *p = s->in.data;
    for (int i = 0; i < s->replies_wanted; i++) {
        const char *eol = strchr(p, '\r');
        int len = eol ? (int)(eol - p) : (int)strlen(p);
        if (*p == '-') {
            sc_end(s, false, "Redis at %s:%s answered %.*s", s->host, s->port, len, p);
            return;
        }
        if (i == s->replies_wanted - 1 && strncmp(p, "+PONG", 5) != 0) {
            sc_end(s, false, "Redis at %s:%s answered %.*s to PING", s->host, s->port, len, p);
            return;
        }
        p = strchr(p, '\n') + 1;
    }
    sc_end(s, true, "Redis at %s:%s answered PING", s->host, s->port);
}

static void on_written(uv_write_t *w, int status)
{
    sc *s = w->data;
    if (status < 0) sc_end(s, false, "writing to %s:%s: %s", s->host, s->port, uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status)
{
    sc *s = c->data;
    if (s->done) return;
    if (status < 0) {
        sc_end(s, false, "connecting to %s:%s: %s", s->host, s->port, uv_strerror(status));
        return;
    }
    if (!s->speak_redis) {
        sc_end(s, true, "%s:%s accepts TCP connections (credentials are checked by the gateway)",
               s->host, s->port);
        return;
    }
    uv_buf_t b = uv_buf_init(s->out.data, (unsigned)s->out.len);
    s->wr.data = s;
    uv_write(&s->wr, (uv_stream_t *)&s->tcp, &b, 1, on_written);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_read);
}

static void on_resolved(uv_getaddrinfo_t *g, int status, struct addrinfo *res)
{
    sc *s = g->data;
    if (s->done || status < 0 || !res) {
        if (!s->done) sc_end(s, false, "resolving %s: %s", s->host, uv_strerror(status));
        uv_freeaddrinfo(res);
        sc_release(s); /* the resolution's own count */
        return;
    }
    s->open_handles--; /* the resolution is over; the TCP handle takes its place */
    uv_tcp_init(s->loop, &s->tcp);
    s->tcp.data = s;
    s->tcp_init = true;
    s->open_handles++;
    s->conn.data = s;
    int e = uv_tcp_connect(&s->conn, &s->tcp, res->ai_addr, on_connect);
    uv_freeaddrinfo(res);
    if (e < 0) sc_end(s, false, "connecting to %s:%s: %s", s->host, s->port, uv_strerror(e));
}

static void resp_cmd(buf *b, const char **argv, int argc)
{
    buf_printf(b, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        buf_printf(b, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
}

/* scheme://[user[:pass]@]host[:port][/...] -> host, port, user, pass */
static bool parse_url(const char *url, char *host, size_t hn, char *port, size_t pn,
                      const char *def_port, char *user, char *pass, size_t un)
{
    const char *p = strstr(url, "://");
    if (!p) return false;
    p += 3;
    const char *end = p + strcspn(p, "/?");
    const char *at = memchr(p, '@', (size_t)(end - p));
    user[0] = pass[0] = 0;
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            snprintf(user, un, "%.*s", (int)(colon - p), p);
            snprintf(pass, un, "%.*s", (int)(at - colon - 1), colon + 1);
        } else {
            snprintf(user, un, "%.*s", (int)(at - p), p);
        }
        p = at + 1;
    }
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', (size_t)(end - p));
        if (!rb) return false;
        snprintf(host, hn, "%.*s", (int)(rb - p - 1), p + 1);
        colon = rb + 1 < end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', (size_t)(end - p));
        snprintf(host, hn, "%.*s", (int)((colon ? colon : end) - p), p);
    }
    if (colon)
        snprintf(port, pn, "%.*s", (int)(end - colon - 1), colon + 1);
    else
        snprintf(port, pn, "%s", def_port);
    return host[0] != 0;
}

/* key=value DSN: host and port */
static void parse_kv(const char *dsn, char *host, size_t hn, char *port, size_t pn)
{
    snprintf(host, hn, "localhost");
    snprintf(port, pn, "5432");
    const char *p = dsn;
    while (*p) {
        while (*p == ' ')
            p++;
        const char *eq = strchr(p, '=');
        if (!eq) break;
        const char *v = eq + 1;
        size_t vl = strcspn(v, " ");
        if ((size_t)(eq - p) == 4 && strncmp(p, "host", 4) == 0)
            snprintf(host, hn, "%.*s", (int)vl, v);
        else if ((size_t)(eq - p) == 4 && strncmp(p, "port", 4) == 0)
            snprintf(port, pn, "%.*s", (int)vl, v);
        p = v + vl;
    }
}

void store_check(uv_loop_t *loop, const json_t *storage, const char *password, store_check_cb done,
                 void *udata)
{
    const char *type = json_string_value(json_object_get(storage, "type"));
    const json_t *cfg = json_object_get(storage, "config");
    if (!type || strcmp(type, "Memory") == 0) {
        done(true, false, "in-process memory of each gateway pod", udata);
        return;
    }
    if (strcmp(type, "File") == 0) {
        done(false, true,
             "the path is on a volume of the gateway pods, which the controller does not mount; "
             "the gateway reports write failures in its metrics",
             udata);
        return;
    }
    sc *s = calloc(1, sizeof *s);
    if (!s) abort();
    s->loop = loop;
    s->cb = done;
    s->udata = udata;
    char user[256], pass[256];
    bool ok;
    if (strcmp(type, "Redis") == 0) {
        const char *url = json_string_value(json_object_get(cfg, "url"));
        ok = url && parse_url(url, s->host, sizeof s->host, s->port, sizeof s->port, "6379", user,
                              pass, sizeof user);
        s->speak_redis = url && strncmp(url, "redis://", 8) == 0;
        const char *pw = password && *password ? password : (pass[0] ? pass : NULL);
        if (pw) {
            const char *a2[] = {"AUTH", pw};
            const char *a3[] = {"AUTH", user, pw};
            if (user[0] && pass[0])
                resp_cmd(&s->out, a3, 3);
            else
                resp_cmd(&s->out, a2, 2);
            s->replies_wanted++;
        }
        const char *ping[] = {"PING"};
        resp_cmd(&s->out, ping, 1);
        s->replies_wanted++;
    } else {
        const char *dsn = json_string_value(json_object_get(cfg, "dsn"));
        ok = dsn != NULL;
        if (dsn && strstr(dsn, "://"))
            ok = parse_url(dsn, s->host, sizeof s->host, s->port, sizeof s->port, "5432", user,
                           pass, sizeof user);
        else if (dsn)
            parse_kv(dsn, s->host, sizeof s->host, s->port, sizeof s->port);
    }
    if (!ok) {
        done(false, false, "the store's address cannot be parsed", udata);
        buf_free(&s->out);
        free(s);
        return;
    }
    uv_timer_init(loop, &s->timer);
    s->timer.data = s;
    s->open_handles = 2; /* the timer and the pending resolution */
    uv_timer_start(&s->timer, on_timeout, 3000, 0);
    s->gai.data = s;
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
    int e = uv_getaddrinfo(loop, &s->gai, on_resolved, s->host, s->port, &hints);
    if (e < 0) {
        s->open_handles--;
        sc_end(s, false, "resolving %s: %s", s->host, uv_strerror(e));
    }
}
