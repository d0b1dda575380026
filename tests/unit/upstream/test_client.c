/* test_client.c — upstream client against a loopback HTTP/1.1 test server (plain and TLS) that
 * runs in threads with blocking sockets. The server answers by path:
 *   /fixed            200, X-Test / X-Dup headers, body "hello world"
 *   /interim          100 Continue (with a header) then 200
 *   /echo             the raw request (head + body) as the body
 *   /stream?n=&delay= n 9-byte chunks ("chunk-00\n"), delay ms between them
 *   /gated            "first\n", then waits for the test to open the gate, then "second\n"
 *   /delay?ms=        sleeps, then "late"
 *   /close            promises 1000 bytes, sends 10, closes
 *   /big?n=           n bytes of a position-dependent pattern
 *   /chunked          chunked "hello world" with chunk extensions and a trailer
 *   /chunkbig?n=      the /big pattern, chunked (1000-byte chunks with an extension)
 *   /eofbody          HTTP/1.1 body delimited by the server closing the connection
 *   /connclose        "Connection: close" response; the server then keeps the connection open
 *   /http10           HTTP/1.0 response with Content-Length; the server keeps the connection open
 *   /http10eof        HTTP/1.0 close-delimited body
 *   /once             like /fixed on a connection's first request; on a later one the server
 *                     reads the request and closes without answering
 *   /noanswer         reads the request, closes without answering
 *   /early-hints       100 Continue and 103 Early Hints before the 200, in one write
 *   /hugeheaders?kb=  a 200 whose header block is about kb KiB
 *   anything else     404
 * and counts accepted connections. Every server is started and stopped by its test.
 *
 * The suite runs twice: group "native" (plain http:// goes to the native HTTP/1.1 client) and
 * group "curl" (CTXGATE_UPSTREAM_FORCE_CURL=1: everything through libcurl). Tests of the native
 * client's own rules run in the native group only. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include "core/buf.h"
#include "upstream/backend.h"
#include "upstream/client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ------------------------------------------------------------------ test server */

#define TSRV_MAX_CONNS 512

typedef struct tsrv {
    int lfd;
    int port;
    SSL_CTX *tls; /* NULL: plain HTTP */
    int stop[2];  /* written once at stop; stays readable */
    int gate[2];  /* the test writes a byte to release /gated */
    pthread_t accept_thr;
    atomic_int accepted;
    pthread_mutex_t mu;
    int conn_fds[TSRV_MAX_CONNS];
    pthread_t conn_thr[TSRV_MAX_CONNS];
    int n_conns;
    atomic_int alpn_h2_offered; /* a TLS client listed "h2" in its ALPN offer */
} tsrv;

typedef struct tconn {
    tsrv *s;
    int fd;
    SSL *ssl;
    int n_req; /* requests read on this connection, this one included */
} tconn;

static bool tsrv_sleep(tsrv *s, int ms)
{
    struct pollfd p = {s->stop[0], POLLIN, 0};
    return poll(&p, 1, ms) == 0; /* false: stopping */
}

static ssize_t tc_read(tconn *t, char *b, size_t n)
{
    for (;;) {
        if (t->ssl && SSL_pending(t->ssl) > 0) return SSL_read(t->ssl, b, (int)n);
        struct pollfd p[2] = {{t->fd, POLLIN, 0}, {t->s->stop[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (p[1].revents) return -1;
        if (!t->ssl) return recv(t->fd, b, n, 0);
        int r = SSL_read(t->ssl, b, (int)n);
        if (r > 0) return r;
        if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ) continue;
        return -1;
    }
}

static bool tc_write(tconn *t, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t w;
        if (t->ssl)
            w = SSL_write(t->ssl, c, (int)n);
        else
            w = send(t->fd, c, n, MSG_NOSIGNAL);
        if (w <= 0) return false;
        c += w;
        n -= (size_t)w;
    }
    return true;
}

static bool tc_printf(tconn *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool tc_printf(tconn *t, const char *fmt, ...)
{
    char tmp[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    return n > 0 && (size_t)n < sizeof tmp && tc_write(t, tmp, (size_t)n);
}

static long query_int(const char *target, const char *key, long dflt)
{
    const char *q = strchr(target, '?');
    size_t kl = strlen(key);
    while (q) {
        q++;
        if (strncmp(q, key, kl) == 0 && q[kl] == '=') return strtol(q + kl + 1, NULL, 10);
        q = strchr(q, '&');
    }
    return dflt;
}

static size_t content_length(const char *head)
{
    for (const char *p = head; (p = strchr(p, '\n')); p++) {
        if (strncasecmp(p + 1, "Content-Length:", 15) == 0) return strtoul(p + 16, NULL, 10);
    }
    return 0;
}

static bool starts_with(const char *s, const char *prefix)
{
    return s && strncmp(s, prefix, strlen(prefix)) == 0;
}

static unsigned char big_byte(size_t i)
{
    return (unsigned char)((i * 7u + (i >> 8) * 13u + 3u) & 0xffu);
}

/* Serves one request; false when the connection must end. */
static bool tsrv_respond(tconn *t, const char *head, size_t head_len, const char *body,
                         size_t body_len)
{
    tsrv *s = t->s;
    char target[512] = "";
    sscanf(head, "%*s %511s", target);
    const char *path = target;
    if (starts_with(path, "http://")) { /* absolute form: we are acting as a proxy */
        path = strchr(path + 7, '/');
        if (!path) path = "/";
    }
    if (starts_with(path, "/fixed")) {
        return tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: Value\r\n"
                            "X-Dup: a\r\nX-Dup: b\r\nContent-Length: 11\r\n\r\nhello world");
    }
    if (starts_with(path, "/interim")) {
        return tc_printf(t, "HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n") &&
               tc_printf(t, "HTTP/1.1 200 OK\r\nX-Final: yes\r\nContent-Length: 2\r\n\r\nok");
    }
    if (starts_with(path, "/echo")) {
        return tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n",
                         head_len + body_len) &&
               tc_write(t, head, head_len) && tc_write(t, body, body_len);
    }
    if (starts_with(path, "/stream")) {
        long n = query_int(target, "n", 5), delay = query_int(target, "delay", 20);
        if (!tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: %ld\r\n\r\n", n * 9)) return false;
        for (long i = 0; i < n; i++) {
            if (i && !tsrv_sleep(s, (int)delay)) return false;
            if (!tc_printf(t, "chunk-%02ld\n", i % 100)) return false;
        }
        return true;
    }
    if (starts_with(path, "/gated")) {
        if (!tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nfirst\n")) return false;
        struct pollfd p[2] = {{s->gate[0], POLLIN, 0}, {s->stop[0], POLLIN, 0}};
        /* Bounded wait: a client that buffers the whole body fails the test instead of
         * hanging it. */
        if (poll(p, 2, 5000) > 0 && p[0].revents) {
            char g;
            if (read(s->gate[0], &g, 1) != 1) return false;
        }
        return tc_printf(t, "second\n");
    }
    if (starts_with(path, "/delay")) {
        if (!tsrv_sleep(s, (int)query_int(target, "ms", 100))) return false;
        return tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate");
    }
    if (starts_with(path, "/close")) {
        tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789");
        return false;
    }
    if (starts_with(path, "/big")) {
        size_t n = (size_t)query_int(target, "n", 65536);
        if (!tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", n)) return false;
        unsigned char chunk[4096];
        for (size_t off = 0; off < n;) {
            size_t k = n - off < sizeof chunk ? n - off : sizeof chunk;
            for (size_t i = 0; i < k; i++)
                chunk[i] = big_byte(off + i);
            if (!tc_write(t, chunk, k)) return false;
            off += k;
        }
        return true;
    }
    if (starts_with(path, "/chunked")) {
        return tc_printf(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "5;ext=1\r\nhello\r\n6;a=b;c=\"d\"\r\n world\r\n"
                            "0\r\nX-Trailer: t\r\n\r\n");
    }
    if (starts_with(path, "/chunkbig")) {
        size_t n = (size_t)query_int(target, "n", 65536);
        if (!tc_printf(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")) return false;
        unsigned char chunk[1000];
        for (size_t off = 0; off < n;) {
            size_t k = n - off < sizeof chunk ? n - off : sizeof chunk;
            for (size_t i = 0; i < k; i++)
                chunk[i] = big_byte(off + i);
            if (!tc_printf(t, "%zx;part=%zu\r\n", k, off) || !tc_write(t, chunk, k) ||
                !tc_write(t, "\r\n", 2))
                return false;
            off += k;
        }
        return tc_printf(t, "0\r\n\r\n");
    }
    if (starts_with(path, "/eofbody")) {
        tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the close\n");
        return false;
    }
    if (starts_with(path, "/connclose")) {
        return tc_printf(t, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
    }
    if (starts_with(path, "/http10eof")) {
        tc_printf(t, "HTTP/1.0 200 OK\r\n\r\nold style");
        return false;
    }
    if (starts_with(path, "/http10")) {
        return tc_printf(t, "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
    }
    if (starts_with(path, "/once")) {
        if (t->n_req > 1) return false;
        return tc_printf(t, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nonce");
    }
    if (starts_with(path, "/noanswer")) return false;
    if (starts_with(path, "/early-hints")) {
        return tc_printf(t, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n"
                            "Link: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\n"
                            "X-Final: yes\r\nContent-Length: 5\r\n\r\nfinal");
    }
    if (starts_with(path, "/hugeheaders")) {
        long kb = query_int(target, "kb", 70);
        buf h = BUF_INIT;
        buf_puts(&h, "HTTP/1.1 200 OK\r\n");
        for (long i = 0; (long)h.len < kb * 1024 - 40; i++)
            buf_printf(&h, "X-Pad-%04ld: %0100d\r\n", i, 0);
        buf_puts(&h, "X-Last: end\r\nContent-Length: 2\r\n\r\nok");
        bool ok = tc_write(t, h.data, h.len);
        buf_free(&h);
        return ok;
    }
    return tc_printf(t, "HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope");
}

/* Server-side close of every connection (the client sees EOF on its pooled ones). */
static void tsrv_drop_conns(tsrv *s)
{
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        shutdown(s->conn_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
}

static void *tsrv_conn_main(void *arg)
{
    tconn *t = arg;
    if (t->s->tls) {
        t->ssl = SSL_new(t->s->tls);
        SSL_set_fd(t->ssl, t->fd);
        if (SSL_accept(t->ssl) <= 0) goto out; /* e.g. the client rejected our certificate */
    }
    size_t cap = 8u << 20, len = 0;
    char *b = malloc(cap + 1);
    for (;;) {
        char *end;
        while (!(b[len] = 0, end = strstr(b, "\r\n\r\n"))) {
            ssize_t r = tc_read(t, b + len, cap - len);
            if (r <= 0) goto done;
            len += (size_t)r;
        }
        size_t head_len = (size_t)(end + 4 - b);
        size_t body_len = content_length(b);
        while (len < head_len + body_len) {
            ssize_t r = tc_read(t, b + len, cap - len);
            if (r <= 0) goto done;
            len += (size_t)r;
        }
        char saved = b[head_len];
        b[head_len] = 0; /* lets the router use string functions on the head */
        char *head = strndup(b, head_len);
        b[head_len] = saved;
        t->n_req++;
        bool keep = tsrv_respond(t, head, head_len, b + head_len, body_len);
        free(head);
        if (!keep) break;
        memmove(b, b + head_len + body_len, len - head_len - body_len);
        len -= head_len + body_len;
    }
done:
    free(b);
out:
    if (t->ssl) SSL_free(t->ssl);
    shutdown(t->fd, SHUT_RDWR);
    free(t);
    return NULL;
}

static void *tsrv_accept_main(void *arg)
{
    tsrv *s = arg;
    for (;;) {
        struct pollfd p[2] = {{s->lfd, POLLIN, 0}, {s->stop[0], POLLIN, 0}};
        if (poll(p, 2, -1) < 0) continue;
        if (p[1].revents) break;
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) continue;
        pthread_mutex_lock(&s->mu);
        if (s->n_conns == TSRV_MAX_CONNS) {
            pthread_mutex_unlock(&s->mu);
            close(fd);
            continue;
        }
        atomic_fetch_add(&s->accepted, 1);
        tconn *t = calloc(1, sizeof *t);
        t->s = s;
        t->fd = fd;
        s->conn_fds[s->n_conns] = fd;
        pthread_create(&s->conn_thr[s->n_conns], NULL, tsrv_conn_main, t);
        s->n_conns++;
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static int listen_loopback(int *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(fd, 256), 0);
    socklen_t al = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &al);
    *port = ntohs(a.sin_port);
    return fd;
}

static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg);

static tsrv *tsrv_start(SSL_CTX *tls)
{
    tsrv *s = calloc(1, sizeof *s);
    s->tls = tls;
    s->lfd = listen_loopback(&s->port);
    assert_int_equal(pipe(s->stop), 0);
    assert_int_equal(pipe(s->gate), 0);
    pthread_mutex_init(&s->mu, NULL);
    if (tls) SSL_CTX_set_alpn_select_cb(tls, tls_alpn_cb, s);
    pthread_create(&s->accept_thr, NULL, tsrv_accept_main, s);
    return s;
}

static void tsrv_stop(tsrv *s)
{
    assert_int_equal(write(s->stop[1], "x", 1), 1);
    pthread_join(s->accept_thr, NULL);
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        shutdown(s->conn_fds[i], SHUT_RDWR);
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < s->n_conns; i++)
        pthread_join(s->conn_thr[i], NULL);
    for (int i = 0; i < s->n_conns; i++)
        close(s->conn_fds[i]);
    close(s->lfd);
    close(s->stop[0]);
    close(s->stop[1]);
    close(s->gate[0]);
    close(s->gate[1]);
    pthread_mutex_destroy(&s->mu);
    if (s->tls) SSL_CTX_free(s->tls);
    free(s);
}

static void url_of(char *out, size_t n, const tsrv *s, const char *path)
{
    snprintf(out, n, "%s://127.0.0.1:%d%s", s->tls ? "https" : "http", s->port, path);
}

/* Records whether the client offered HTTP/2, then declines ALPN so the session stays HTTP/1.1
 * (this server does not speak h2). */
static int tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    tsrv *s = arg;
    for (unsigned i = 0; i < inlen; i += 1u + in[i]) {
        if (in[i] == 2 && i + 3 <= inlen && memcmp(in + i + 1, "h2", 2) == 0)
            atomic_store(&s->alpn_h2_offered, 1);
    }
    return SSL_TLSEXT_ERR_NOACK;
}

/* Self-signed certificate for 127.0.0.1, made in memory (nothing on disk). */
/* A server context with a fresh self-signed certificate for subjectAltName san; *pem (when not
 * NULL) receives the certificate, to be trusted as its own CA (free it). */
static SSL_CTX *tls_ctx_cert(const char *san_text, char **pem)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, key);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(x, name);
    X509V3_CTX v3;
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *san = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san_text);
    assert_non_null(san);
    X509_add_ext(x, san, -1);
    X509_EXTENSION_free(san);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(SSL_CTX_use_certificate(ctx, x), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(ctx, key), 1);
    if (pem) {
        BIO *bio = BIO_new(BIO_s_mem());
        assert_int_equal(PEM_write_bio_X509(bio, x), 1);
        char *data = NULL;
        long n = BIO_get_mem_data(bio, &data);
        assert_true(n > 0);
        *pem = malloc((size_t)n + 1); /* the BIO's data is not NUL-terminated: no strndup */
        assert_non_null(*pem);
        memcpy(*pem, data, (size_t)n);
        (*pem)[n] = 0;
        BIO_free(bio);
    }
    X509_free(x);
    EVP_PKEY_free(key);
    return ctx;
}

static SSL_CTX *tls_ctx_self_signed(void)
{
    return tls_ctx_cert("IP:127.0.0.1", NULL);
}

/* ------------------------------------------------------------------ client side harness */

typedef struct treq {
    upstream_req *u;
    upstream_client *c;
    int n_headers, headers_status;
    int n_data;
    int data_before_headers;
    buf body;
    buf first_piece;
    int done;
    upstream_result res;
    int status;
    char msg[512];
    char x_test[32], x_test_upper[32], x_dup[32], x_interim[32], x_final[32], x_trailer[32];
    char x_last[32], link[64];
    bool missing_is_null;
    unsigned long ttfb;
    /* behaviour knobs */
    int pause_mode; /* 1: every other piece refused, resume from a timer; 2: resume inline */
    int n_refused;
    bool cancel_in_data; /* cancel on the first piece */
    bool cancel_in_headers;
    bool pause_in_headers; /* upstream_pause in on_headers, resume from a timer */
    int data_at_resume;
    bool free_client_in_done;
    int gate_fd;        /* >0: open the server's gate on the first piece */
    struct treq *spawn; /* send this request from inside on_data */
    const char *spawn_url;
    uv_timer_t resume_timer;
    bool timer_init;
    int *counter; /* incremented on on_done */
} treq;

static uv_loop_t loop;
static upstream_client *client;

static void copy_hdr(char *dst, size_t n, const upstream_req *u, const char *name)
{
    const char *v = upstream_header_get(u, name);
    snprintf(dst, n, "%s", v ? v : "(null)");
}

static void resume_fire(uv_timer_t *t)
{
    treq *r = t->data;
    r->data_at_resume = r->n_data;
    upstream_resume(r->u);
}

static void resume_later(treq *r, uint64_t ms)
{
    if (!r->timer_init) {
        uv_timer_init(&loop, &r->resume_timer);
        r->resume_timer.data = r;
        r->timer_init = true;
    }
    uv_timer_start(&r->resume_timer, resume_fire, ms, 0);
}

static void on_headers(upstream_req *u, int status, void *ud)
{
    treq *r = ud;
    r->n_headers++;
    r->headers_status = status;
    if (r->cancel_in_headers) upstream_cancel(u);
    if (r->pause_in_headers) {
        upstream_pause(u);
        resume_later(r, 30);
    }
}

static void on_done(upstream_req *u, upstream_result res, int status, const char *msg, void *ud);

static void send_req(treq *r, const char *url);

static bool on_data(upstream_req *u, const char *d, size_t n, void *ud)
{
    treq *r = ud;
    r->n_data++;
    if (r->n_headers == 0) r->data_before_headers++;
    if (r->n_data == 1) buf_append(&r->first_piece, d, n);
    if (r->gate_fd > 0 && r->n_data == 1) assert_int_equal(write(r->gate_fd, "g", 1), 1);
    if (r->spawn && r->n_data == 1) send_req(r->spawn, r->spawn_url);
    if (r->cancel_in_data) {
        upstream_cancel(u);
        upstream_cancel(u); /* twice: must be harmless */
        return true;
    }
    if (r->pause_mode && r->n_data % 2 == 1) {
        r->n_refused++;
        if (r->pause_mode == 1)
            resume_later(r, 1);
        else
            upstream_resume(u);
        return false; /* not consumed: the same bytes come again */
    }
    buf_append(&r->body, d, n);
    return true;
}

static void on_done(upstream_req *u, upstream_result res, int status, const char *msg, void *ud)
{
    treq *r = ud;
    r->done++;
    r->res = res;
    r->status = status;
    snprintf(r->msg, sizeof r->msg, "%s", msg ? msg : "");
    copy_hdr(r->x_test, sizeof r->x_test, u, "x-test");
    copy_hdr(r->x_test_upper, sizeof r->x_test_upper, u, "X-TEST");
    copy_hdr(r->x_dup, sizeof r->x_dup, u, "X-Dup");
    copy_hdr(r->x_interim, sizeof r->x_interim, u, "x-interim");
    copy_hdr(r->x_final, sizeof r->x_final, u, "x-final");
    copy_hdr(r->x_trailer, sizeof r->x_trailer, u, "x-trailer");
    copy_hdr(r->x_last, sizeof r->x_last, u, "x-last");
    copy_hdr(r->link, sizeof r->link, u, "link");
    r->missing_is_null = upstream_header_get(u, "x-not-there") == NULL;
    r->ttfb = upstream_ttfb_us(u);
    upstream_cancel(u); /* inside on_done: a no-op */
    if (r->counter) (*r->counter)++;
    if (r->free_client_in_done) {
        upstream_client_free(r->c);
        client = NULL;
    }
}

static upstream_opts base_opts(treq *r, const char *url)
{
    upstream_opts o = {0};
    o.method = "GET";
    o.url = url;
    o.udata = r;
    o.on_headers = on_headers;
    o.on_data = on_data;
    o.on_done = on_done;
    return o;
}

static void send_req(treq *r, const char *url)
{
    upstream_opts o = base_opts(r, url);
    r->c = client;
    r->u = upstream_send(client, &o);
    assert_non_null(r->u);
}

static void treq_free(treq *r)
{
    buf_free(&r->body);
    buf_free(&r->first_piece);
    if (r->timer_init) {
        uv_close((uv_handle_t *)&r->resume_timer, NULL);
        r->timer_init = false;
        uv_run(&loop, UV_RUN_NOWAIT); /* finish the close while r is still in scope */
    }
}

/* Runs the loop until *v >= target; fails if the loop runs out of work first. */
static void run_until(const int *v, int target)
{
    while (*v < target) {
        int alive = uv_run(&loop, UV_RUN_ONCE);
        if (*v >= target) break;
        if (!alive) fail_msg("loop went idle with %d of %d completions", *v, target);
    }
}

static upstream_client_stats stats_now(void)
{
    upstream_client_stats st;
    upstream_client_get_stats(client, &st);
    return st;
}

/* Which transport the current group expects plain http:// requests on. */
static bool native_group;

static void assert_transport(size_t n_plain_http)
{
    upstream_client_stats st = stats_now();
    assert_int_equal(st.force_curl, !native_group);
    assert_int_equal(st.sent_native, native_group ? n_plain_http : 0);
    assert_int_equal(st.sent_curl, native_group ? 0 : n_plain_http);
}

static void noop_timer(uv_timer_t *t) {}

/* Like run_until, for conditions that only connections the loop does not count (idle pooled
 * ones) can change: a referenced timer keeps the loop polling meanwhile. */
static void run_until_idle_conns(size_t n)
{
    uv_timer_t keep;
    uv_timer_init(&loop, &keep);
    uv_timer_start(&keep, noop_timer, 5, 5);
    while (stats_now().h1.idle != n)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&keep, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static int setup(void **state)
{
    assert_int_equal(uv_loop_init(&loop), 0);
    client = upstream_client_new(&loop);
    assert_non_null(client);
    return 0;
}

static int teardown(void **state)
{
    if (client) upstream_client_free(client);
    client = NULL;
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0); /* every handle closed */
    return 0;
}

/* ------------------------------------------------------------------ tests */

static void test_get_roundtrip(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    treq r = {0};
    send_req(&r, url);
    assert_int_equal(upstream_client_in_flight(client), 1);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.headers_status, 200);
    assert_int_equal(r.data_before_headers, 0);
    assert_int_equal(r.body.len, 11);
    assert_memory_equal(r.body.data, "hello world", 11);
    assert_string_equal(r.x_test, "Value");
    assert_string_equal(r.x_test_upper, "Value"); /* case-insensitive lookup */
    assert_string_equal(r.x_dup, "b");            /* last value wins */
    assert_true(r.missing_is_null);
    assert_true(r.ttfb > 0);
    assert_int_equal(upstream_client_in_flight(client), 0);
    assert_transport(1);
    treq_free(&r);
    tsrv_stop(s);
}

static void test_post_echo_exact(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/echo");
    char body[] = "{\"x\":1}\0tail-after-nul";
    size_t body_len = sizeof body - 1;
    char expect_body[sizeof body];
    memcpy(expect_body, body, sizeof body);
    upstream_header hs[] = {{"X-A", "1"},
                            {"Content-Type", "application/json"},
                            {"Accept", "text/event-stream"},
                            {"X-Empty", ""}};
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.method = "POST";
    o.headers = hs;
    o.n_headers = 4;
    o.body = body;
    o.body_len = body_len;
    r.u = upstream_send(client, &o);
    assert_non_null(r.u);
    memset(body, 'Z', body_len); /* the client must have copied it */

    /* A POST without Content-Type must not get curl's form-urlencoded default. */
    treq r2 = {0};
    const char *b2 = "raw";
    upstream_opts o2 = base_opts(&r2, url);
    o2.method = "POST";
    o2.body = b2;
    o2.body_len = 3;
    o2.body_borrowed = true;
    r2.u = upstream_send(client, &o2);
    int done = 0;
    r.counter = r2.counter = &done;
    run_until(&done, 2);

    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.status, 200);
    const char *e = r.body.data;
    assert_non_null(e);
    assert_true(starts_with(e, "POST /echo HTTP/1.1\r\n"));
    assert_non_null(strstr(e, "\r\nX-A: 1\r\n"));
    assert_non_null(strstr(e, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(e, "\r\nAccept: text/event-stream\r\n"));
    assert_null(strstr(e, "Accept: */*"));
    assert_non_null(strstr(e, "\r\nX-Empty:"));
    assert_null(strstr(e, "Expect:"));
    char cl[64];
    snprintf(cl, sizeof cl, "\r\nContent-Length: %zu\r\n", body_len);
    assert_non_null(strstr(e, cl));
    assert_true(r.body.len > body_len);
    assert_memory_equal(r.body.data + r.body.len - body_len, expect_body, body_len);

    assert_int_equal(r2.res, UPSTREAM_OK);
    assert_null(strstr(r2.body.data, "x-www-form-urlencoded"));
    assert_null(strstr(r2.body.data, "Expect:"));
    assert_true(r2.body.len > 3 && memcmp(r2.body.data + r2.body.len - 3, "raw", 3) == 0);
    treq_free(&r);
    treq_free(&r2);
    tsrv_stop(s);
}

/* libcurl adds "Expect: 100-continue" on its own for bodies over 1 MiB; the client must not. */
static void test_large_body_and_methods(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/echo");
    size_t n = 2u << 20;
    char *big = malloc(n);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)big_byte(i);
    treq post = {0}, put = {0}, del = {0};
    int done = 0;
    post.counter = put.counter = del.counter = &done;
    upstream_opts o = base_opts(&post, url);
    o.method = "POST";
    o.body = big;
    o.body_len = n;
    o.body_borrowed = true;
    post.u = upstream_send(client, &o);
    o = base_opts(&put, url);
    o.method = "PUT";
    o.body = "put-body";
    o.body_len = 8;
    put.u = upstream_send(client, &o);
    o = base_opts(&del, url);
    o.method = "DELETE";
    del.u = upstream_send(client, &o);
    run_until(&done, 3);
    assert_int_equal(post.res, UPSTREAM_OK);
    assert_null(strstr(post.body.data, "Expect:"));
    assert_true(post.body.len > n);
    assert_memory_equal(post.body.data + post.body.len - n, big, n);
    assert_int_equal(put.res, UPSTREAM_OK);
    assert_true(starts_with(put.body.data, "PUT /echo HTTP/1.1\r\n"));
    assert_memory_equal(put.body.data + put.body.len - 8, "put-body", 8);
    assert_int_equal(del.res, UPSTREAM_OK);
    assert_true(starts_with(del.body.data, "DELETE /echo HTTP/1.1\r\n"));
    assert_null(strstr(del.body.data, "Content-Length"));
    free(big);
    treq_free(&post);
    treq_free(&put);
    treq_free(&del);
    tsrv_stop(s);
}

static void test_connection_reuse(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    treq a = {0}, b = {0};
    send_req(&a, url);
    run_until(&a.done, 1);
    send_req(&b, url);
    run_until(&b.done, 1);
    assert_int_equal(a.res, UPSTREAM_OK);
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 11);
    assert_int_equal(atomic_load(&s->accepted), 1);
    treq_free(&a);
    treq_free(&b);
    tsrv_stop(s);
}

static void test_streaming_in_pieces(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/gated");
    treq r = {0};
    r.gate_fd = s->gate[1]; /* the server sends "second" only after we saw "first" */
    send_req(&r, url);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.first_piece.len, 6);
    assert_memory_equal(r.first_piece.data, "first\n", 6);
    assert_true(r.n_data >= 2);
    assert_int_equal(r.body.len, 13);
    assert_memory_equal(r.body.data, "first\nsecond\n", 13);
    treq_free(&r);
    tsrv_stop(s);
}

static void check_big_body(const treq *r, size_t n)
{
    assert_int_equal(r->res, UPSTREAM_OK);
    assert_int_equal(r->body.len, n);
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)r->body.data[i] != big_byte(i))
            fail_msg("byte %zu differs: lost or duplicated data", i);
    }
}

static void test_pause_resume(void **state)
{
    tsrv *s = tsrv_start(NULL);
    const size_t n = 300000;
    char url[128];
    url_of(url, sizeof url, s, "/big?n=300000");
    treq timer_r = {0}, inline_r = {0}, early = {0};
    timer_r.pause_mode = 1;  /* refuse every other piece, resume from a timer */
    inline_r.pause_mode = 2; /* refuse, but call upstream_resume from inside on_data */
    early.pause_in_headers = true;
    int done = 0;
    timer_r.counter = inline_r.counter = early.counter = &done;
    send_req(&timer_r, url);
    send_req(&inline_r, url);
    send_req(&early, url);
    run_until(&done, 3);
    check_big_body(&timer_r, n);
    check_big_body(&inline_r, n);
    check_big_body(&early, n);
    assert_true(timer_r.n_refused > 1);
    assert_true(inline_r.n_refused > 1);
    assert_int_equal(early.data_at_resume, 0); /* nothing delivered while paused */
    treq_free(&timer_r);
    treq_free(&inline_r);
    treq_free(&early);
    tsrv_stop(s);
}

static void test_first_byte_timeout(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/delay?ms=5000");
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.first_byte_timeout_ms = 100;
    r.u = upstream_send(client, &o);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_TIMEOUT);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n_data, 0);
    assert_non_null(strstr(r.msg, "no first byte within 100 ms"));
    treq_free(&r);
    tsrv_stop(s);
}

static void test_total_timeout(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/stream?n=100&delay=100");
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.total_timeout_ms = 400;
    o.first_byte_timeout_ms = 5000;
    r.u = upstream_send(client, &o);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_TIMEOUT);
    assert_int_equal(r.status, 200);
    assert_true(r.n_data >= 1);
    assert_true(r.body.len < 900);
    assert_non_null(strstr(r.msg, "within 400 ms"));
    treq_free(&r);
    tsrv_stop(s);
}

static void test_connect_refused(void **state)
{
    int port;
    int fd = listen_loopback(&port);
    close(fd); /* nothing listens there now */
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    treq r = {0};
    send_req(&r, url);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_CONNECT_FAILED);
    assert_int_equal(r.status, 0);
    assert_int_equal(r.n_headers, 0);
    assert_non_null(strstr(r.msg, "cannot connect"));
    treq_free(&r);
}

/* A listener whose accept queue is full drops SYNs, so a connect never completes. */
static void test_connect_timeout(void **state)
{
    int port;
    int lfd = listen_loopback(&port);
    assert_int_equal(listen(lfd, 0), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.connect_timeout_ms = 200;
    r.u = upstream_send(client, &o);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_CONNECT_FAILED);
    assert_int_equal(r.status, 0);
    assert_non_null(strstr(r.msg, "within 200 ms"));
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    treq_free(&r);
}

static void test_close_mid_body(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/close");
    treq r = {0};
    send_req(&r, url);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_ERROR);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body.len, 10);
    assert_non_null(strstr(r.msg, "mid-response"));
    treq_free(&r);
    tsrv_stop(s);
}

static void cancel_fire(uv_timer_t *t)
{
    treq *r = t->data;
    upstream_cancel(r->u);
    upstream_client_free(client); /* free right after, from outside any client callback */
    client = NULL;
}

static void test_cancel_in_flight(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/delay?ms=3000");
    treq slow = {0}, immediate = {0}, fixed = {0};
    send_req(&slow, url);
    send_req(&immediate, url);
    upstream_cancel(immediate.u); /* before the loop ever ran */
    url_of(url, sizeof url, s, "/stream?n=50&delay=20");
    send_req(&fixed, url); /* still running when the client is freed */
    assert_int_equal(upstream_client_in_flight(client), 2);
    uv_timer_t t;
    uv_timer_init(&loop, &t);
    t.data = &slow;
    uv_timer_start(&t, cancel_fire, 100, 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the freed client closed its handles */
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_null(client);
    assert_int_equal(slow.n_headers + slow.n_data + slow.done, 0);
    assert_int_equal(immediate.n_headers + immediate.n_data + immediate.done, 0);
    assert_int_equal(fixed.done, 0);
    treq_free(&slow);
    treq_free(&immediate);
    treq_free(&fixed);
    tsrv_stop(s);
}

static void test_cancel_inside_callbacks(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128], witness_url[128];
    url_of(url, sizeof url, s, "/stream?n=8&delay=20");
    url_of(witness_url, sizeof witness_url, s, "/stream?n=12&delay=20");
    treq in_data = {0}, in_headers = {0}, witness = {0};
    in_data.cancel_in_data = true;
    in_headers.cancel_in_headers = true;
    send_req(&in_data, url);
    send_req(&in_headers, url);
    send_req(&witness, witness_url); /* outlives the cancelled streams */
    run_until(&witness.done, 1);
    assert_int_equal(witness.res, UPSTREAM_OK);
    assert_int_equal(witness.body.len, 12 * 9);
    assert_int_equal(in_data.n_data, 1);
    assert_int_equal(in_data.done, 0);
    assert_int_equal(in_headers.n_headers, 1);
    assert_int_equal(in_headers.n_data, 0);
    assert_int_equal(in_headers.done, 0);
    assert_int_equal(upstream_client_in_flight(client), 0);
    treq_free(&in_data);
    treq_free(&in_headers);
    treq_free(&witness);
    tsrv_stop(s);
}

static void test_free_client_inside_on_done(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    treq first = {0}, slow = {0};
    first.free_client_in_done = true;
    send_req(&first, url);
    url_of(url, sizeof url, s, "/stream?n=20&delay=20");
    send_req(&slow, url);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_null(client);
    assert_int_equal(first.done, 1);
    assert_int_equal(first.res, UPSTREAM_OK);
    assert_int_equal(slow.done, 0);
    treq_free(&first);
    treq_free(&slow);
    tsrv_stop(s);
}

static void test_send_inside_on_data(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128], url2[128];
    url_of(url, sizeof url, s, "/stream?n=3&delay=10");
    url_of(url2, sizeof url2, s, "/fixed");
    treq outer = {0}, inner = {0};
    outer.spawn = &inner;
    outer.spawn_url = url2;
    int done = 0;
    outer.counter = &done;
    send_req(&outer, url);
    inner.counter = &done; /* send_req for inner runs inside outer's on_data */
    run_until(&done, 2);
    assert_int_equal(outer.res, UPSTREAM_OK);
    assert_int_equal(outer.body.len, 27);
    assert_int_equal(inner.res, UPSTREAM_OK);
    assert_int_equal(inner.body.len, 11);
    treq_free(&outer);
    treq_free(&inner);
    tsrv_stop(s);
}

static void test_many_concurrent(void **state)
{
    enum { N = 50 };
    tsrv *s = tsrv_start(NULL);
    static treq rs[N];
    memset(rs, 0, sizeof rs);
    int done = 0;
    for (int i = 0; i < N; i++) {
        char url[128], path[64];
        snprintf(path, sizeof path, "/echo/%d", i);
        url_of(url, sizeof url, s, path);
        rs[i].counter = &done;
        send_req(&rs[i], url);
    }
    assert_int_equal(upstream_client_in_flight(client), N);
    run_until(&done, N);
    for (int i = 0; i < N; i++) {
        char line[64];
        snprintf(line, sizeof line, "GET /echo/%d HTTP/1.1\r\n", i);
        assert_int_equal(rs[i].res, UPSTREAM_OK);
        assert_int_equal(rs[i].done, 1);
        assert_true(rs[i].body.len > strlen(line));
        assert_memory_equal(rs[i].body.data, line, strlen(line));
        treq_free(&rs[i]);
    }
    assert_int_equal(upstream_client_in_flight(client), 0);
    tsrv_stop(s);
}

static void test_interim_headers_cleared(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/interim");
    treq r = {0};
    send_req(&r, url);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.headers_status, 200);
    assert_string_equal(r.x_interim, "(null)");
    assert_string_equal(r.x_final, "yes");
    treq_free(&r);
    tsrv_stop(s);
}

static void test_bad_header_reported(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    upstream_header hs[] = {{"X-Evil", "a\r\nInjected: 1"}};
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.headers = hs;
    o.n_headers = 1;
    r.u = upstream_send(client, &o);
    assert_non_null(r.u);
    assert_int_equal(r.done, 0); /* never synchronously */
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_ERROR);
    assert_non_null(strstr(r.msg, "CR/LF"));
    assert_int_equal(atomic_load(&s->accepted), 0);
    treq_free(&r);
    tsrv_stop(s);
}

static void test_proxy_from_environment(void **state)
{
    tsrv *s = tsrv_start(NULL); /* acts as the proxy: it sees the absolute-form target */
    char proxy[64];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", s->port);
    setenv("http_proxy", proxy, 1);
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    treq r = {0};
    send_req(&r, "http://upstream.invalid/echo");
    run_until(&r.done, 1);
    unsetenv("http_proxy");
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_non_null(r.body.data);
    assert_true(starts_with(r.body.data, "GET http://upstream.invalid/echo HTTP/1.1\r\n"));
    assert_int_equal(stats_now().sent_curl, 1); /* a proxy applies: libcurl in both groups */
    assert_int_equal(stats_now().sent_native, 0);
    treq_free(&r);
    tsrv_stop(s);
}

static void test_tls_verification(void **state)
{
    tsrv *s = tsrv_start(tls_ctx_self_signed());
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    treq strict = {0};
    send_req(&strict, url);
    run_until(&strict.done, 1);
    assert_int_equal(strict.res, UPSTREAM_CONNECT_FAILED);
    assert_int_equal(strict.n_headers, 0);

    treq lax = {0};
    upstream_opts o = base_opts(&lax, url);
    o.insecure_skip_verify = true;
    lax.u = upstream_send(client, &o);
    run_until(&lax.done, 1);
    assert_int_equal(lax.res, UPSTREAM_OK);
    assert_int_equal(lax.status, 200);
    assert_int_equal(lax.body.len, 11);
    assert_memory_equal(lax.body.data, "hello world", 11);
    assert_int_equal(atomic_load(&s->alpn_h2_offered), 1); /* HTTP/2 is offered on TLS */
    treq_free(&strict);
    treq_free(&lax);
    tsrv_stop(s);
}

/* tls_ca_pem is trusted (alone), tls_server_name is what is verified while the connection goes
 * to the URL's address; a connection made under one name is not reused for another. */
static void test_tls_ca_and_server_name(void **state)
{
    (void)state;
    char *pem = NULL;
    tsrv *s = tsrv_start(tls_ctx_cert("DNS:upstream.test", &pem));
    char url[128];
    url_of(url, sizeof url, s, "/fixed");
    struct {
        const char *ca, *name;
        upstream_result want;
    } cases[] = {
        {pem, "upstream.test", UPSTREAM_OK},
        {pem, NULL, UPSTREAM_CONNECT_FAILED}, /* 127.0.0.1 is not in the certificate */
        {pem, "other.test", UPSTREAM_CONNECT_FAILED},
        {NULL, "upstream.test", UPSTREAM_CONNECT_FAILED}, /* the system bundle does not know it */
        {pem, "upstream.test", UPSTREAM_OK},
        {pem, "bad name", UPSTREAM_ERROR}, /* cannot be a URL host: refused before connecting */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        treq r = {0};
        upstream_opts o = base_opts(&r, url);
        o.tls_ca_pem = cases[i].ca;
        o.tls_server_name = cases[i].name;
        r.u = upstream_send(client, &o);
        assert_non_null(r.u);
        run_until(&r.done, 1);
        if (r.res != cases[i].want) fprintf(stderr, "case %zu: %s\n", i, r.msg);
        assert_int_equal(r.res, cases[i].want);
        if (cases[i].want == UPSTREAM_OK) assert_int_equal(r.status, 200);
        treq_free(&r);
    }
    tsrv_stop(s);
    free(pem);
}

/* ------------------------------------------------------------------ native client only */

static void run_one(treq *r, const tsrv *s, const char *path)
{
    char url[160];
    url_of(url, sizeof url, s, path);
    send_req(r, url);
    run_until(&r->done, 1);
}

static void test_native_chunked_extensions_trailers(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0};
    run_one(&a, s, "/chunked");
    assert_int_equal(a.res, UPSTREAM_OK);
    assert_int_equal(a.status, 200);
    assert_int_equal(a.body.len, 11);
    assert_memory_equal(a.body.data, "hello world", 11); /* de-chunked, extensions dropped */
    assert_string_equal(a.x_trailer, "t");
    run_one(&b, s, "/chunked"); /* trailer fully consumed: the connection is reusable */
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 11);
    assert_int_equal(atomic_load(&s->accepted), 1);
    treq_free(&a);
    treq_free(&b);
    tsrv_stop(s);
}

static void test_native_close_delimited(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0};
    run_one(&a, s, "/eofbody");
    assert_int_equal(a.res, UPSTREAM_OK);
    assert_int_equal(a.status, 200);
    assert_int_equal(a.body.len, 16);
    assert_memory_equal(a.body.data, "until the close\n", 16);
    run_one(&b, s, "/http10eof");
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 9);
    assert_memory_equal(b.body.data, "old style", 9);
    assert_int_equal(atomic_load(&s->accepted), 2);
    treq_free(&a);
    treq_free(&b);
    tsrv_stop(s);
}

/* The server keeps these connections open, so only the client's rules prevent a reuse. */
static void test_native_no_reuse_after_close_or_http10(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0}, c = {0}, d = {0};
    run_one(&a, s, "/connclose");
    run_one(&b, s, "/connclose");
    assert_int_equal(a.res, UPSTREAM_OK);
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_memory_equal(b.body.data, "ok", 2);
    assert_int_equal(atomic_load(&s->accepted), 2);
    run_one(&c, s, "/http10");
    run_one(&d, s, "/http10");
    assert_int_equal(c.res, UPSTREAM_OK);
    assert_int_equal(c.status, 200);
    assert_int_equal(d.res, UPSTREAM_OK);
    assert_memory_equal(d.body.data, "ok", 2);
    assert_int_equal(atomic_load(&s->accepted), 4);
    assert_int_equal(stats_now().h1.retries, 0);
    treq_free(&a);
    treq_free(&b);
    treq_free(&c);
    treq_free(&d);
    tsrv_stop(s);
}

static void test_native_keepalive_100_sequential(void **state)
{
    tsrv *s = tsrv_start(NULL);
    for (int i = 0; i < 100; i++) {
        treq r = {0};
        run_one(&r, s, "/fixed");
        assert_int_equal(r.res, UPSTREAM_OK);
        assert_int_equal(r.body.len, 11);
        treq_free(&r);
    }
    assert_int_equal(atomic_load(&s->accepted), 1);
    assert_int_equal(stats_now().h1.connects, 1);
    assert_int_equal(stats_now().h1.idle, 1);
    tsrv_stop(s);
}

/* The server closes the pooled connection and the client sees it while idle. */
static void test_native_idle_closed_by_server(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0};
    run_one(&a, s, "/fixed");
    assert_int_equal(stats_now().h1.idle, 1);
    tsrv_drop_conns(s);
    run_until_idle_conns(0); /* EOF while idle: dropped from the pool */
    run_one(&b, s, "/fixed");
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 11);
    assert_int_equal(atomic_load(&s->accepted), 2);
    assert_int_equal(stats_now().h1.retries, 0);
    treq_free(&a);
    treq_free(&b);
    tsrv_stop(s);
}

/* The server closes the pooled connection and the request is written before the client saw
 * the EOF: the retry-once rule sends it again on a fresh connection. */
static void test_native_idle_close_race_retried(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0};
    run_one(&a, s, "/fixed");
    tsrv_drop_conns(s);
    run_one(&b, s, "/fixed"); /* no loop iteration in between: written on the dead connection */
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 11);
    assert_int_equal(atomic_load(&s->accepted), 2);
    assert_int_equal(stats_now().h1.retries, 1);
    treq_free(&a);
    treq_free(&b);
    tsrv_stop(s);
}

static void test_native_retry_once_rule(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq a = {0}, b = {0}, fresh = {0};
    run_one(&a, s, "/once");
    assert_int_equal(a.res, UPSTREAM_OK);
    /* Reused connection: the server reads the request and closes without a byte → retried. */
    run_one(&b, s, "/once");
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_int_equal(b.body.len, 4);
    assert_memory_equal(b.body.data, "once", 4);
    assert_int_equal(atomic_load(&s->accepted), 2);
    assert_int_equal(stats_now().h1.retries, 1);
    /* Fresh connection: the same failure is an error, never retried. */
    tsrv_drop_conns(s);
    run_until_idle_conns(0);
    run_one(&fresh, s, "/noanswer");
    assert_int_equal(fresh.res, UPSTREAM_ERROR);
    assert_int_equal(fresh.status, 0);
    assert_non_null(strstr(fresh.msg, "before a response arrived"));
    assert_int_equal(atomic_load(&s->accepted), 3);
    assert_int_equal(stats_now().h1.retries, 1);
    treq_free(&a);
    treq_free(&b);
    treq_free(&fresh);
    tsrv_stop(s);
}

static void test_native_informational_responses(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq r = {0}, again = {0};
    run_one(&r, s, "/early-hints");
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.headers_status, 200);
    assert_string_equal(r.link, "(null)"); /* the 103's header is not the response's */
    assert_string_equal(r.x_final, "yes");
    assert_int_equal(r.body.len, 5);
    assert_memory_equal(r.body.data, "final", 5);
    run_one(&again, s, "/interim");
    assert_int_equal(again.res, UPSTREAM_OK);
    assert_int_equal(again.body.len, 2);
    assert_int_equal(atomic_load(&s->accepted), 1);
    treq_free(&r);
    treq_free(&again);
    tsrv_stop(s);
}

static void test_native_header_limit(void **state)
{
    tsrv *s = tsrv_start(NULL);
    treq under = {0}, over = {0};
    run_one(&under, s, "/hugeheaders?kb=60");
    assert_int_equal(under.res, UPSTREAM_OK);
    assert_string_equal(under.x_last, "end");
    run_one(&over, s, "/hugeheaders?kb=70");
    assert_int_equal(over.res, UPSTREAM_ERROR);
    assert_int_equal(over.n_headers, 0);
    assert_non_null(strstr(over.msg, "64 KiB"));
    treq_free(&under);
    treq_free(&over);
    tsrv_stop(s);
}

static void test_native_pause_chunked(void **state)
{
    tsrv *s = tsrv_start(NULL);
    const size_t n = 300000;
    char url[128];
    url_of(url, sizeof url, s, "/chunkbig?n=300000");
    treq timer_r = {0}, inline_r = {0}, early = {0};
    timer_r.pause_mode = 1;
    inline_r.pause_mode = 2;
    early.pause_in_headers = true;
    int done = 0;
    timer_r.counter = inline_r.counter = early.counter = &done;
    send_req(&timer_r, url);
    send_req(&inline_r, url);
    send_req(&early, url);
    run_until(&done, 3);
    check_big_body(&timer_r, n);
    check_big_body(&inline_r, n);
    check_big_body(&early, n);
    assert_true(timer_r.n_refused > 1);
    assert_true(inline_r.n_refused > 1);
    assert_int_equal(early.data_at_resume, 0);
    /* Every connection went back to the pool: the de-chunking ended exactly. */
    assert_int_equal(stats_now().h1.idle, 3);
    treq_free(&timer_r);
    treq_free(&inline_r);
    treq_free(&early);
    tsrv_stop(s);
}

static void test_native_cancel_while_connecting(void **state)
{
    int port;
    int lfd = listen_loopback(&port);
    assert_int_equal(listen(lfd, 0), 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fillers[4];
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof a);
    }
    char url[128];
    snprintf(url, sizeof url, "http://127.0.0.1:%d/x", port);
    treq r = {0};
    send_req(&r, url);
    uv_run(&loop, UV_RUN_NOWAIT); /* the connect is under way */
    assert_int_equal(stats_now().h1.connects, 1);
    upstream_cancel(r.u);
    assert_int_equal(upstream_client_in_flight(client), 0);
    uv_run(&loop, UV_RUN_DEFAULT); /* returns once the socket is closed */
    assert_int_equal(r.n_headers + r.n_data + r.done, 0);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
    treq_free(&r);
}

static void test_native_cancel_while_resolving(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    snprintf(url, sizeof url, "http://localhost:%d/fixed", s->port);
    treq r = {0};
    send_req(&r, url);
    assert_int_equal(stats_now().h1.resolves, 1);
    assert_int_equal(stats_now().h1.connects, 0);
    upstream_cancel(r.u);
    uv_run(&loop, UV_RUN_DEFAULT); /* the lookup finishes with nobody waiting */
    assert_int_equal(r.n_headers + r.n_data + r.done, 0);
    assert_int_equal(atomic_load(&s->accepted), 0);
    /* The name resolves normally (and from the cache now). */
    treq ok = {0};
    send_req(&ok, url);
    run_until(&ok.done, 1);
    assert_int_equal(ok.res, UPSTREAM_OK);
    assert_int_equal(ok.body.len, 11);
    assert_int_equal(stats_now().h1.resolves, 1);
    treq_free(&r);
    treq_free(&ok);
    tsrv_stop(s);
}

/* http_proxy / ALL_PROXY / NO_PROXY decide the transport as libcurl decides the proxy. */
static void test_native_proxy_env_picks_transport(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char proxy[64], url[128];
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%d", s->port);
    url_of(url, sizeof url, s, "/echo");
    unsetenv("http_proxy");
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    unsetenv("all_proxy");
    setenv("HTTP_PROXY", proxy, 1); /* upper case: ignored by libcurl ("httpoxy") */
    treq a = {0};
    run_one(&a, s, "/echo");
    unsetenv("HTTP_PROXY");
    assert_int_equal(a.res, UPSTREAM_OK);
    assert_true(starts_with(a.body.data, "GET /echo HTTP/1.1\r\n"));
    assert_int_equal(stats_now().sent_native, 1);

    setenv("ALL_PROXY", proxy, 1);
    treq b = {0};
    send_req(&b, "http://upstream.invalid/echo");
    run_until(&b.done, 1);
    assert_int_equal(b.res, UPSTREAM_OK);
    assert_true(starts_with(b.body.data, "GET http://upstream.invalid/echo HTTP/1.1\r\n"));
    assert_int_equal(stats_now().sent_curl, 1);

    setenv("NO_PROXY", "localhost, 127.0.0.0/8", 1); /* exempt: native again */
    treq c = {0};
    run_one(&c, s, "/echo");
    unsetenv("ALL_PROXY");
    unsetenv("NO_PROXY");
    assert_int_equal(c.res, UPSTREAM_OK);
    assert_true(starts_with(c.body.data, "GET /echo HTTP/1.1\r\n"));
    assert_int_equal(stats_now().sent_native, 2);
    assert_int_equal(stats_now().sent_curl, 1);
    treq_free(&a);
    treq_free(&b);
    treq_free(&c);
    tsrv_stop(s);
}

static void test_native_head(void **state)
{
    tsrv *s = tsrv_start(NULL);
    char url[128];
    url_of(url, sizeof url, s, "/chunked");
    treq r = {0};
    upstream_opts o = base_opts(&r, url);
    o.method = "HEAD";
    r.u = upstream_send(client, &o);
    run_until(&r.done, 1);
    assert_int_equal(r.res, UPSTREAM_OK);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.n_headers, 1);
    assert_int_equal(r.n_data, 0); /* a HEAD response has no body, whatever its headers say */
    treq_free(&r);
    tsrv_stop(s);
}

static bool np(const char *host, const char *list)
{
    return upstream_noproxy_match(host, strlen(host), list);
}

static void test_noproxy_matching(void **state)
{
    assert_true(np("anything.example", "*"));
    assert_true(np("example.com", "example.com"));
    assert_true(np("api.example.com", "example.com"));
    assert_true(np("api.example.com", ".example.com"));
    assert_true(np("API.Example.com.", "example.com"));
    assert_false(np("notexample.com", "example.com"));
    assert_false(np("example.com", "api.example.com"));
    assert_true(np("svc", "other, svc"));
    assert_true(np("svc", "other\tsvc")); /* blanks separate too */
    assert_true(np("10.1.2.3", "10.0.0.0/8"));
    assert_false(np("11.1.2.3", "10.0.0.0/8"));
    assert_true(np("127.0.0.1", "127.0.0.1"));
    assert_false(np("127.0.0.1", "127.0.0.2"));
    assert_true(np("::1", "::1"));
    assert_false(np("::1", "::2"));
    assert_false(np("example.com", ""));
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest both[] = {
        cmocka_unit_test_setup_teardown(test_get_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_post_echo_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_body_and_methods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connection_reuse, setup, teardown),
        cmocka_unit_test_setup_teardown(test_streaming_in_pieces, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pause_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_first_byte_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_total_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_mid_body, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_callbacks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_client_inside_on_done, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_inside_on_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_concurrent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_interim_headers_cleared, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_header_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_proxy_from_environment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_verification, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_ca_and_server_name, setup, teardown),
    };
    const struct CMUnitTest native_only[] = {
        cmocka_unit_test_setup_teardown(test_native_chunked_extensions_trailers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_close_delimited, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_no_reuse_after_close_or_http10, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_native_keepalive_100_sequential, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_idle_closed_by_server, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_idle_close_race_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_retry_once_rule, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_informational_responses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_header_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_pause_chunked, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_cancel_while_connecting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_cancel_while_resolving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_proxy_env_picks_transport, setup, teardown),
        cmocka_unit_test_setup_teardown(test_native_head, setup, teardown),
        cmocka_unit_test(test_noproxy_matching),
    };
    int failed = 0;
    unsetenv("CTXGATE_UPSTREAM_FORCE_CURL");
    native_group = true;
    failed += cmocka_run_group_tests_name("native", both, NULL, NULL);
    failed += cmocka_run_group_tests_name("native-only", native_only, NULL, NULL);
    setenv("CTXGATE_UPSTREAM_FORCE_CURL", "1", 1);
    native_group = false;
    failed += cmocka_run_group_tests_name("curl", both, NULL, NULL);
    return failed;
}
