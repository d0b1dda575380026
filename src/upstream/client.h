/* client.h — asynchronous upstream HTTP client on the worker's libuv loop. One upstream_client per
 * loop; it pools keep-alive connections. Two transports sit behind this one API (backend.h):
 * plain http:// URLs that no proxy applies to go to a native HTTP/1.1 keep-alive client (h1.c,
 * the in-cluster hot path); everything else goes to libcurl multi (curl.c), which uses HTTP/2
 * when a TLS upstream offers it, honours proxies, verifies TLS and reuses easy handles.
 * docs/decisions/0002-upstream-client.md explains the split.
 *
 * A request's callbacks run on the loop. Exactly one of: on_done is called once, or the caller
 * cancelled with upstream_cancel() (then no callback runs after that call returns). No callback
 * ever runs from inside upstream_send/pause/resume/cancel; they are all safe to call from inside
 * any callback of any request.
 *
 * Proxies: libcurl reads https_proxy / HTTPS_PROXY, http_proxy (lower case only: curl ignores
 * upper-case HTTP_PROXY because of "httpoxy"), ALL_PROXY and NO_PROXY / no_proxy from the
 * environment at connect time; this client never sets CURLOPT_PROXY or CURLOPT_NOPROXY, so the
 * environment always decides. An http:// request a proxy would apply to (judged per request,
 * the way libcurl judges it) therefore takes the libcurl path. Redirects are not followed. Only
 * http:// and https:// URLs. */
#ifndef CTXGATE_UPSTREAM_CLIENT_H
#define CTXGATE_UPSTREAM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <uv.h>

typedef struct upstream_client upstream_client;
typedef struct upstream_req upstream_req;

typedef enum {
    UPSTREAM_OK = 0,         /* complete response received (any HTTP status) */
    UPSTREAM_CONNECT_FAILED, /* DNS, refused, TLS handshake, connect timeout */
    UPSTREAM_TIMEOUT,        /* first-byte or total timeout */
    UPSTREAM_ERROR,          /* connection broke mid-response, protocol error, ... */
} upstream_result;

typedef struct upstream_header {
    const char *name;
    const char *value;
} upstream_header;

/* An answer made inside the process (the Mock provider), delivered by the local transport
 * through the same callbacks as a network answer: after delay_ms the status and Content-Type,
 * then the pieces in order (each one on_data call, pause and resume honoured), then on_done. */
typedef struct upstream_piece {
    const char *data;
    size_t len;
} upstream_piece;

typedef struct upstream_local_answer {
    int status;
    const char *content_type;
    unsigned delay_ms;
    const upstream_piece *pieces; /* copied by upstream_send */
    size_t n_pieces;
} upstream_local_answer;

typedef struct upstream_opts {
    const char *method; /* "POST", "GET" */
    const char *url;
    const upstream_header *headers; /* copied by upstream_send */
    size_t n_headers;
    const char *body; /* copied by upstream_send unless body_borrowed */
    size_t body_len;
    bool body_borrowed;             /* body stays valid until on_done / cancel: no copy */
    unsigned connect_timeout_ms;    /* 0 = 5000 */
    unsigned first_byte_timeout_ms; /* from send to the first response body byte; 0 = none */
    unsigned total_timeout_ms;      /* 0 = none */
    /* TLS of https:// URLs (libcurl path; ignored for plain http://). Strings are copied. */
    bool insecure_skip_verify;   /* no certificate nor host name verification */
    const char *tls_ca_pem;      /* PEM CAs trusted instead of the system bundle; NULL = system */
    const char *tls_cert_pem;    /* PEM client certificate (mTLS); NULL = none */
    const char *tls_key_pem;     /* PEM private key of tls_cert_pem */
    const char *tls_server_name; /* replaces the URL's host for SNI, verification and Host while
                                  * connecting to the URL's host and port; NULL = the URL's */
    const upstream_local_answer *local; /* set: answered in-process, url is only a label */
    void *udata;
    /* Status line and headers received. */
    void (*on_headers)(upstream_req *u, int status, void *udata);
    /* A piece of the body. Return true when the piece is consumed. Return false to pause: the
     * piece is NOT consumed and nothing more is delivered until upstream_resume(); delivery then
     * restarts at the first byte of this same piece (possibly in a larger or smaller piece). */
    bool (*on_data)(upstream_req *u, const char *data, size_t len, void *udata);
    /* The end: result, HTTP status (0 when none arrived) and a sentence for logs/errors. */
    void (*on_done)(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata);
} upstream_opts;

upstream_client *upstream_client_new(uv_loop_t *loop);
/* Cancels everything in flight (no callbacks) and frees once libuv handles are closed. */
void upstream_client_free(upstream_client *c);

/* Starts a request. NULL only when o->url is NULL, the client is being freed or memory ran out
 * (then no callback runs); every other failure, including invalid headers, comes via on_done. */
upstream_req *upstream_send(upstream_client *c, const upstream_opts *o);
/* Stop delivering body pieces (the next piece stays with the transport) until upstream_resume(). */
void upstream_pause(upstream_req *u);
/* Continue delivery; takes effect on a later loop iteration, never from inside this call. */
void upstream_resume(upstream_req *u);
/* No callback of u runs after this returns; u is invalid afterwards. No-op inside u's on_done. */
void upstream_cancel(upstream_req *u);
/* A response header (case-insensitive), valid until on_done returns; NULL when absent. */
const char *upstream_header_get(const upstream_req *u, const char *name);
/* Microseconds from send to first body byte (0 before it arrived). */
unsigned long upstream_ttfb_us(const upstream_req *u);
size_t upstream_client_in_flight(const upstream_client *c);

#endif
