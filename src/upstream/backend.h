/* backend.h — internal to src/upstream/ (and its unit tests): the two transports behind the
 * public upstream_client API and the small vtable client.c dispatches through.
 *
 * - curl.c: libcurl multi on the loop; everything (https, HTTP/2, proxies).
 * - h1.c:   native HTTP/1.1 keep-alive client for plain http:// upstreams no proxy applies to.
 * - local.c: answers made in the process (Mock), delivered through the same callbacks.
 *
 * Every request struct of a backend starts with an upstream_req whose ops pointer routes
 * upstream_pause/resume/cancel/header_get/ttfb_us to that backend. */
#ifndef CTXGATE_UPSTREAM_BACKEND_H
#define CTXGATE_UPSTREAM_BACKEND_H

#include "upstream/client.h"

#include <http_parser.h>
#include <stdint.h>

typedef struct upstream_req_ops {
    void (*pause)(upstream_req *u);
    void (*resume)(upstream_req *u);
    void (*cancel)(upstream_req *u);
    const char *(*header_get)(const upstream_req *u, const char *name);
    unsigned long (*ttfb_us)(const upstream_req *u);
} upstream_req_ops;

struct upstream_req {
    const upstream_req_ops *ops; /* first member of curl_req and h1_req */
};

typedef struct upstream_curl upstream_curl;
upstream_curl *upstream_curl_new(uv_loop_t *loop);
void upstream_curl_free(upstream_curl *c);
upstream_req *upstream_curl_send(upstream_curl *c, const upstream_opts *o);
size_t upstream_curl_in_flight(const upstream_curl *c);

/* The parts of a parsed http:// URL the native client needs (offsets into url). */
typedef struct upstream_h1_target {
    const char *host;
    size_t host_len;
    uint16_t port;
    const char *path; /* path (may be empty: "/" is sent) */
    size_t path_len;
    const char *query; /* after '?', or NULL */
    size_t query_len;
} upstream_h1_target;

typedef struct upstream_h1_stats {
    size_t connects; /* TCP connections opened */
    size_t resolves; /* getaddrinfo lookups started */
    size_t retries;  /* requests re-sent on a fresh connection (the retry-once rule) */
    size_t idle;     /* idle pooled connections right now */
} upstream_h1_stats;

typedef struct upstream_h1 upstream_h1;
upstream_h1 *upstream_h1_new(uv_loop_t *loop);
void upstream_h1_free(upstream_h1 *h);
upstream_req *upstream_h1_send(upstream_h1 *h, const upstream_opts *o, const upstream_h1_target *t);
size_t upstream_h1_in_flight(const upstream_h1 *h);
void upstream_h1_get_stats(const upstream_h1 *h, upstream_h1_stats *out);

/* local.c: in-process answers (upstream_local_answer), on the loop's timers. */
typedef struct upstream_local upstream_local;
upstream_local *upstream_local_new(uv_loop_t *loop);
void upstream_local_free(upstream_local *l); /* cancels what is in flight; frees once closed */
upstream_req *upstream_local_send(upstream_local *l, const upstream_opts *o);
size_t upstream_local_in_flight(const upstream_local *l);

/* Test/diagnostic hooks (client.c). */
typedef struct upstream_client_stats {
    size_t sent_curl;   /* requests dispatched to the libcurl path */
    size_t sent_native; /* requests dispatched to the native HTTP/1.1 path */
    bool force_curl;    /* CTXGATE_UPSTREAM_FORCE_CURL=1 was set when the client was created */
    upstream_h1_stats h1;
} upstream_client_stats;
void upstream_client_get_stats(const upstream_client *c, upstream_client_stats *out);

/* True when libcurl would send a request to this host of an http:// URL through a proxy,
 * judged from the environment exactly as libcurl 7.88 does (http_proxy, all_proxy, ALL_PROXY;
 * no_proxy / NO_PROXY). host is without IPv6 brackets. */
bool upstream_proxy_applies(const char *host, size_t host_len);
/* libcurl's NO_PROXY matching (lib/noproxy.c): true when host is exempt from the proxy. */
bool upstream_noproxy_match(const char *host, size_t host_len, const char *no_proxy);

#endif
