/* client.c — the public upstream_client: picks a transport per request and forwards the request
 * calls through the request's ops vtable (backend.h).
 *
 * A plain http:// URL that no proxy applies to goes to the native HTTP/1.1 client (h1.c);
 * everything else — https, proxied requests, URLs with credentials, URLs whose path libcurl would
 * normalise — goes to libcurl (curl.c), so the environment decides proxies exactly as before.
 * CTXGATE_UPSTREAM_FORCE_CURL=1, read when the client is created, sends every request to libcurl
 * (tests run the whole suite on both transports with it; also a field switch-back). */
#include "upstream/backend.h"

#include "core/buf.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct upstream_client {
    upstream_curl *curl;
    upstream_h1 *h1;
    upstream_local *local;
    bool force_curl;
    size_t sent_curl, sent_native;
    /* The last URL judged native by its shape, with its parsed parts as offsets: a gateway sends
     * the same few URLs over and over, and a memcmp is cheaper than parsing again. */
    buf last_url;
    upstream_h1_target last_target;
};

upstream_client *upstream_client_new(uv_loop_t *loop)
{
    upstream_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    const char *force = getenv("CTXGATE_UPSTREAM_FORCE_CURL");
    c->force_curl = force && strcmp(force, "1") == 0;
    c->curl = upstream_curl_new(loop);
    c->h1 = upstream_h1_new(loop);
    c->local = upstream_local_new(loop);
    if (!c->curl || !c->h1 || !c->local) {
        upstream_curl_free(c->curl);
        upstream_h1_free(c->h1);
        upstream_local_free(c->local);
        free(c);
        return NULL;
    }
    return c;
}

/* Each transport defers its own teardown while one of its callbacks is on the stack. */
void upstream_client_free(upstream_client *c)
{
    if (!c) return;
    upstream_curl_free(c->curl);
    upstream_h1_free(c->h1);
    upstream_local_free(c->local);
    buf_free(&c->last_url);
    free(c);
}

/* ---- the proxy decision, as libcurl 7.88 makes it for an http:// URL ---- */

/* curl_getenv: an empty variable counts as unset. */
static const char *env_set(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t';
}

static bool cidr4_match(const char *ip, const char *net, unsigned bits)
{
    struct in_addr a, n;
    if (bits > 32 || inet_pton(AF_INET, ip, &a) != 1 || inet_pton(AF_INET, net, &n) != 1)
        return false;
    if (bits && bits != 32) {
        uint32_t mask = 0xffffffffu << (32 - bits);
        return ((ntohl(a.s_addr) ^ ntohl(n.s_addr)) & mask) == 0;
    }
    return a.s_addr == n.s_addr;
}

static bool cidr6_match(const char *ip, const char *net, unsigned bits)
{
    unsigned char a[16], n[16];
    if (!bits) bits = 128;
    unsigned bytes = bits / 8, rest = bits & 7;
    if (bytes > 16 || (bytes == 16 && rest)) return false;
    if (inet_pton(AF_INET6, ip, a) != 1 || inet_pton(AF_INET6, net, n) != 1) return false;
    if (bytes && memcmp(a, n, bytes) != 0) return false;
    /* libcurl 7.88 rejects when the masked remainder is all equal; mirrored as is. */
    if (rest && !((a[bytes] ^ n[bytes]) & (0xff << (8 - rest)))) return false;
    return true;
}

bool upstream_noproxy_match(const char *host, size_t host_len, const char *no_proxy)
{
    if (!host || !host_len || !no_proxy || !no_proxy[0]) return false;
    if (strcmp(no_proxy, "*") == 0) return true;
    char name[256];
    if (host_len >= sizeof name) return false;
    memcpy(name, host, host_len);
    name[host_len] = 0;
    size_t namelen = host_len;
    enum { HOST, IPV4, IPV6 } type = HOST;
    unsigned char scratch[16];
    if (memchr(name, ':', namelen)) {
        type = IPV6;
    } else if (inet_pton(AF_INET, name, scratch) == 1) {
        type = IPV4;
    } else if (name[namelen - 1] == '.') {
        namelen--;
    }
    const char *p = no_proxy;
    while (*p) {
        while (*p && is_blank(*p))
            p++;
        const char *token = p;
        size_t tokenlen = 0;
        while (*p && !is_blank(*p) && *p != ',') {
            p++;
            tokenlen++;
        }
        if (tokenlen) {
            bool match = false;
            if (type == HOST) {
                if (token[tokenlen - 1] == '.') tokenlen--;
                if (tokenlen && *token == '.') {
                    token++;
                    tokenlen--;
                }
                if (tokenlen == namelen)
                    match = strncasecmp(token, name, namelen) == 0;
                else if (tokenlen < namelen)
                    match = name[namelen - tokenlen - 1] == '.' &&
                            strncasecmp(token, name + namelen - tokenlen, tokenlen) == 0;
            } else if (tokenlen < 128) {
                char check[128];
                memcpy(check, token, tokenlen);
                check[tokenlen] = 0;
                unsigned bits = 0;
                char *slash = strchr(check, '/');
                if (slash) {
                    bits = (unsigned)atoi(slash + 1);
                    *slash = 0;
                }
                match =
                    type == IPV6 ? cidr6_match(name, check, bits) : cidr4_match(name, check, bits);
            }
            if (match) return true;
        }
        /* libcurl 7.88 separates entries by commas and/or blanks (checked against it). */
        while (is_blank(*p) || *p == ',')
            p++;
    }
    return false;
}

bool upstream_proxy_applies(const char *host, size_t host_len)
{
    /* lib/url.c: http_proxy (lower case only: "httpoxy"), else all_proxy, else ALL_PROXY; none
     * applies when no_proxy (else NO_PROXY) matches the host. Read per request, like libcurl,
     * so a changed environment takes effect; the usual case (no proxy) costs three getenv. */
    if (!env_set("http_proxy") && !env_set("all_proxy") && !env_set("ALL_PROXY")) return false;
    const char *no_proxy = env_set("no_proxy");
    if (!no_proxy) no_proxy = env_set("NO_PROXY");
    return !(no_proxy && upstream_noproxy_match(host, host_len, no_proxy));
}

/* "/." followed by '/', '.' or the end: a dot segment libcurl would remove before sending. */
static bool path_has_dot_segment(const char *p, size_t n)
{
    for (size_t i = 0; i + 1 < n; i++) {
        if (p[i] == '/' && p[i + 1] == '.' && (i + 2 == n || p[i + 2] == '/' || p[i + 2] == '.'))
            return true;
    }
    return false;
}

/* Fills t when url is a plain http:// URL the native client sends exactly as libcurl would. */
static bool url_shape_native(const char *url, size_t url_len, upstream_h1_target *t)
{
    if (strncasecmp(url, "http://", 7) != 0) return false;
    struct http_parser_url pu;
    http_parser_url_init(&pu);
    if (http_parser_parse_url(url, url_len, 0, &pu) != 0) return false;
    if (!(pu.field_set & (1 << UF_HOST)) || (pu.field_set & (1 << UF_USERINFO))) return false;
    t->host = url + pu.field_data[UF_HOST].off;
    t->host_len = pu.field_data[UF_HOST].len;
    if (!t->host_len || t->host_len > 255) return false;
    t->port = (pu.field_set & (1 << UF_PORT)) ? pu.port : 80;
    if (!t->port) return false;
    t->path = "";
    t->path_len = 0;
    if (pu.field_set & (1 << UF_PATH)) {
        t->path = url + pu.field_data[UF_PATH].off;
        t->path_len = pu.field_data[UF_PATH].len;
        if (path_has_dot_segment(t->path, t->path_len)) return false;
    }
    t->query = NULL;
    t->query_len = 0;
    if (pu.field_set & (1 << UF_QUERY)) {
        t->query = url + pu.field_data[UF_QUERY].off;
        t->query_len = pu.field_data[UF_QUERY].len;
    }
    return true;
}

static void target_rebase(upstream_h1_target *t, const char *from, const char *to)
{
    t->host = to + (t->host - from);
    if (t->path_len) t->path = to + (t->path - from);
    if (t->query) t->query = to + (t->query - from);
}

static bool url_is_native(upstream_client *c, const char *url, upstream_h1_target *t)
{
    size_t n = strlen(url);
    if (c->last_url.len == n && memcmp(c->last_url.data, url, n) == 0) {
        *t = c->last_target;
        target_rebase(t, c->last_url.data, url);
    } else {
        if (!url_shape_native(url, n, t)) return false;
        buf_reset(&c->last_url);
        buf_append(&c->last_url, url, n);
        c->last_target = *t;
        target_rebase(&c->last_target, url, c->last_url.data);
    }
    return !upstream_proxy_applies(t->host, t->host_len);
}

upstream_req *upstream_send(upstream_client *c, const upstream_opts *o)
{
    if (!c || !o || !o->url) return NULL;
    if (o->local) return upstream_local_send(c->local, o);
    upstream_h1_target t;
    if (!c->force_curl && url_is_native(c, o->url, &t)) {
        c->sent_native++;
        return upstream_h1_send(c->h1, o, &t);
    }
    c->sent_curl++;
    return upstream_curl_send(c->curl, o);
}

void upstream_pause(upstream_req *u)
{
    if (u) u->ops->pause(u);
}

void upstream_resume(upstream_req *u)
{
    if (u) u->ops->resume(u);
}

void upstream_cancel(upstream_req *u)
{
    if (u) u->ops->cancel(u);
}

const char *upstream_header_get(const upstream_req *u, const char *name)
{
    return u ? u->ops->header_get(u, name) : NULL;
}

unsigned long upstream_ttfb_us(const upstream_req *u)
{
    return u ? u->ops->ttfb_us(u) : 0;
}

size_t upstream_client_in_flight(const upstream_client *c)
{
    return c ? upstream_curl_in_flight(c->curl) + upstream_h1_in_flight(c->h1) +
                   upstream_local_in_flight(c->local)
             : 0;
}

void upstream_client_get_stats(const upstream_client *c, upstream_client_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!c) return;
    out->sent_curl = c->sent_curl;
    out->sent_native = c->sent_native;
    out->force_curl = c->force_curl;
    upstream_h1_get_stats(c->h1, &out->h1);
}
