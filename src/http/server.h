/* server.h — the HTTP/1.1 front door: one http_server per worker loop, each with its own
 * SO_REUSEPORT listening socket, http_parser for parsing, our own connection handling
 * (keep-alive, pipelining, chunked request bodies, Expect: 100-continue, size limits and
 * timeouts), optional TLS via OpenSSL memory BIOs on the same loop.
 *
 * Ownership: the server allocates an http_request when its headers and body are complete and
 * calls the handler. The handler owns it until it calls http_respond() or http_stream_end()
 * (possibly later, from another callback on the same loop). If the client goes away first, the
 * server calls req->on_abort once; the handler must still finish the request (writes are then
 * dropped) so that ownership stays simple. Pipelined requests are answered in order: the next
 * one is dispatched only after the previous one finished. */
#ifndef CTXGATE_HTTP_SERVER_H
#define CTXGATE_HTTP_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "core/str.h"

typedef struct http_server http_server;
typedef struct http_conn http_conn;
typedef struct http_request http_request;

typedef struct http_header {
    str name; /* request headers: lower-cased by the server */
    str value;
} http_header;

struct http_request {
    arena *pool;     /* request-scoped memory, freed when the request finishes */
    int method;      /* enum http_method from http_parser.h */
    str method_name; /* "GET", "POST", ... */
    str target;      /* raw request-target */
    str path;        /* target without the query, percent-decoding NOT applied */
    str query;       /* after '?', without it; empty when none */
    http_header *headers;
    size_t n_headers;
    str body;             /* complete body (de-chunked), NUL-terminated; empty when none */
    bool keep_alive;      /* connection will stay open after this response */
    char remote_addr[64]; /* peer IP as text */
    uint64_t start_ns;    /* clock_mono_ns() when the first byte of the request arrived */
    char request_id[40];  /* X-Request-Id: the client's (if sane, <= 39 chars) or generated */

    void *udata;                       /* the handler's */
    void (*on_abort)(http_request *r); /* client disconnected before the end; may be NULL */
    void (*on_drain)(http_request *r); /* stream writable again (below low watermark) */

    http_conn *conn; /* private to the server */
};

typedef void (*http_handler_fn)(http_request *r, void *handler_ctx);

typedef struct http_limits {
    size_t max_header_bytes;     /* request line + headers; 431 beyond. default 32 KiB */
    size_t max_body_bytes;       /* 413 beyond. default 1 MiB (the gateway sets it per config) */
    unsigned header_timeout_ms;  /* first byte to end of headers; 408. default 10 s */
    unsigned body_timeout_ms;    /* end of headers to end of body; 408. default 60 s */
    unsigned idle_timeout_ms;    /* keep-alive idle; closed silently. default 60 s */
    size_t write_high_watermark; /* stream writes above this report "pause". default 256 KiB */
    size_t write_low_watermark;  /* on_drain below this. default 64 KiB */
} http_limits;

void http_limits_default(http_limits *l); /* a zero field passed to the server means default */

/* A connection budget shared by every http_server of a process (one per worker loop): at most
 * max client connections open at once. At the limit a new connection closes the oldest idle
 * connection (kept alive between requests, or not yet sent a byte) of the worker that accepted
 * it; when that worker has none, the new connection is accepted and closed at once. Workers
 * race on the count, so it may pass max by at most (workers - 1) for a moment. */
typedef struct http_conn_budget {
    _Atomic size_t max;           /* 0 = no limit; may change while servers run */
    _Atomic size_t open;          /* client connections counted now */
    _Atomic uint64_t refused;     /* accepted and closed at once: the limit, nothing idle */
    _Atomic uint64_t idle_closed; /* idle connections closed to make room */
} http_conn_budget;

typedef struct http_server_opts {
    const char *host; /* default "0.0.0.0" */
    int port;
    /* true: bind without SO_REUSEPORT and listen before turning it on, so that the bind fails
     * with EADDRINUSE when any other socket (another process) holds the port; the servers of
     * this process that start later (exclusive false) then join the port with SO_REUSEPORT.
     * The first worker of a process starts exclusive, the others not. */
    bool exclusive;
    http_conn_budget *budget; /* NULL = no connection limit */
    http_limits limits;
    const char *tls_cert_pem; /* NULL = plain HTTP */
    const char *tls_key_pem;
    http_handler_fn handler;
    void *handler_ctx;
} http_server_opts;

/* Binds with SO_REUSEPORT (after an exclusive bind and listen when o->exclusive) and starts
 * accepting on loop. Returns 0 or a negative errno-style code
 * (uv error), with a sentence in err. host must be an IPv4/IPv6 literal. tls_*_pem are PEM text
 * (not paths); the key must be unencrypted. */
int http_server_start(uv_loop_t *loop, const http_server_opts *o, http_server **out, char *err,
                      size_t errlen);
/* Live-updates limits (new connections and requests use them). */
void http_server_set_limits(http_server *s, const http_limits *l);
/* Stops accepting, closes idle connections, lets in-flight requests finish; calls done(ctx)
 * once every connection is closed. */
void http_server_drain(http_server *s, void (*done)(void *ctx), void *ctx);
void http_server_free(http_server *s); /* after drain completed */
size_t http_server_active_requests(const http_server *s);
/* The bound port: the one asked for, or the kernel's pick when opts.port was 0. */
int http_server_port(const http_server *s);

/* Request helpers */
str http_request_header(const http_request *r, const char *lower_name); /* STR_NULL if absent */
bool http_request_client_gone(const http_request *r);

/* Complete response. The server adds Content-Length, Date, Connection and X-Request-Id;
 * hdrs must not contain those. Finishes the request (r is invalid afterwards). */
void http_respond(http_request *r, int status, const http_header *hdrs, size_t n_hdrs,
                  const char *body, size_t len);

/* Streaming response with Transfer-Encoding: chunked (SSE and friends). */
void http_stream_begin(http_request *r, int status, const http_header *hdrs, size_t n_hdrs);
/* Queues data (copied). Returns true while the connection's write queue is below the high
 * watermark; false means "stop producing until on_drain". Writing after false is allowed
 * (it is queued) but unbounded memory is the caller's fault. Once the client is gone writes are
 * dropped and report true, since no on_drain can follow. HTTP/1.0 clients get the raw body and
 * Connection: close instead of chunked coding. */
bool http_stream_write(http_request *r, const char *data, size_t len);
void http_stream_end(http_request *r); /* finishes the request */
/* Ends a streamed response without its end: no terminating chunk, and the connection closes
 * once the queued bytes are written, so the client sees a broken body, not a short complete
 * one. Finishes the request. */
void http_stream_abort(http_request *r);

#endif
