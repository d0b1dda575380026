/* client.c — one-shot and streaming requests to the Kubernetes API server over the upstream
 * client: bearer token (re-read from its file every 60 s), client certificate, CA; bodies
 * accumulated (64 MiB cap) and parsed with jansson; Status objects turned into error / reason.
 * kube_client_free cancels everything, lets detached calls (Lease release, Events) finish for up
 * to 2 s, then frees once the libuv handles are closed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "kube/kube_internal.h"
#include "upstream/client.h"

#ifndef CTXGATE_VERSION
#define CTXGATE_VERSION "0.1.0"
#endif

#define KUBE_TIMEOUT_MS 30000u
#define KUBE_TOKEN_REREAD_MS 60000u
#define KUBE_BODY_MAX (64u << 20)
#define KUBE_GRACE_MS 2000u

struct kube_call {
    kube_client *c;
    upstream_req *u;
    kube_link link;
    buf body;
    bool overflow;
    bool detached;
    bool in_cb;     /* one of our upstream callbacks is running: free after it */
    bool cancelled; /* no callback of the user any more */
    bool done;      /* upstream on_done ran (or will never run) */
    int status;
    kube_cb cb;
    const kube_stream_fns *stream; /* NULL for one-shot calls */
    kube_stream_fns stream_copy;
    void *udata;
};

struct kube_client {
    uv_loop_t *loop;
    upstream_client *up;
    kube_config cfg;
    char *auth;       /* "Bearer TOKEN" or NULL */
    uv_timer_t timer; /* token re-read; then the final grace period */
    kube_link calls, informers, leaders;
    kube_events_state *events;
    bool closing, finishing;
};

void kube_link_add(kube_link *head, kube_link *l)
{
    if (!head->next) head->next = head->prev = head;
    l->next = head;
    l->prev = head->prev;
    head->prev->next = l;
    head->prev = l;
}

void kube_link_del(kube_link *l)
{
    if (l->next) {
        l->prev->next = l->next;
        l->next->prev = l->prev;
    }
    l->next = l->prev = NULL;
}

static bool link_empty(const kube_link *head)
{
    return !head->next || head->next == head;
}

#define CALL_OF(l) ((kube_call *)((char *)(l)-offsetof(kube_call, link)))

kube_link *kube_client_informers(kube_client *c)
{
    return &c->informers;
}
kube_link *kube_client_leaders(kube_client *c)
{
    return &c->leaders;
}
uv_loop_t *kube_client_loop(kube_client *c)
{
    return c->loop;
}
bool kube_client_closing(const kube_client *c)
{
    return c->closing;
}
kube_events_state **kube_client_events(kube_client *c)
{
    return &c->events;
}
const kube_config *kube_client_config(const kube_client *c)
{
    return &c->cfg;
}

static void set_auth(kube_client *c, const char *token)
{
    free(c->auth);
    c->auth = NULL;
    if (!token || !token[0]) return;
    size_t n = strlen(token) + 8;
    c->auth = malloc(n);
    if (!c->auth) abort();
    snprintf(c->auth, n, "Bearer %s", token);
}

static void reread_token(uv_timer_t *t)
{
    kube_client *c = t->data;
    FILE *f = fopen(c->cfg.token_file, "rb");
    if (!f) {
        log_warn("kube: cannot re-read the token file %s; keeping the previous token",
                 c->cfg.token_file);
        return;
    }
    char tok[16384];
    size_t n = fread(tok, 1, sizeof tok - 1, f);
    fclose(f);
    tok[n] = 0;
    while (n && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' '))
        tok[--n] = 0;
    if (!n) {
        log_warn("kube: the token file %s is empty; keeping the previous token", c->cfg.token_file);
        return;
    }
    if (!c->cfg.token || strcmp(c->cfg.token, tok)) {
        free(c->cfg.token);
        c->cfg.token = kube_strdup(tok);
        set_auth(c, tok);
        log_debug("kube: token re-read from %s", c->cfg.token_file);
    }
}

kube_client *kube_client_new(uv_loop_t *loop, const kube_config *cfg)
{
    kube_client *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->loop = loop;
    c->up = upstream_client_new(loop);
    if (!c->up) {
        free(c);
        return NULL;
    }
    c->cfg.server = kube_strdup(cfg->server);
    c->cfg.token = kube_strdup(cfg->token);
    c->cfg.token_file = kube_strdup(cfg->token_file);
    c->cfg.ca_pem = kube_strdup(cfg->ca_pem);
    c->cfg.cert_pem = kube_strdup(cfg->cert_pem);
    c->cfg.key_pem = kube_strdup(cfg->key_pem);
    c->cfg.insecure = cfg->insecure;
    c->cfg.namespace = kube_strdup(cfg->namespace ? cfg->namespace : "default");
    c->cfg.source = kube_strdup(cfg->source);
    set_auth(c, c->cfg.token);
    c->calls.next = c->calls.prev = &c->calls;
    c->informers.next = c->informers.prev = &c->informers;
    c->leaders.next = c->leaders.prev = &c->leaders;
    uv_timer_init(loop, &c->timer);
    c->timer.data = c;
    if (c->cfg.token_file) {
        uv_timer_start(&c->timer, reread_token, KUBE_TOKEN_REREAD_MS, KUBE_TOKEN_REREAD_MS);
        uv_unref((uv_handle_t *)&c->timer); /* the re-read alone keeps no loop running */
    }
    return c;
}

static void client_finish(uv_timer_t *t);

static void call_free(kube_call *k)
{
    kube_client *c = k->c;
    kube_link_del(&k->link);
    buf_free(&k->body);
    free(k);
    /* closing and the last detached call ended: finish at once instead of after the grace */
    if (c->closing && !c->finishing && link_empty(&c->calls))
        uv_timer_start(&c->timer, client_finish, 0, 0);
}

/* Status (or any error body) to a sentence and a reason */
static void resp_from_body(kube_resp *r, int status, json_t *body, char *msg, size_t msglen)
{
    r->status = status;
    r->body = body;
    r->error = NULL;
    r->reason = NULL;
    if (status < 400) return;
    const char *m = json_string_value(json_object_get(body, "message"));
    r->reason = json_string_value(json_object_get(body, "reason"));
    if (r->reason && !r->reason[0]) r->reason = NULL;
    if (m && m[0])
        snprintf(msg, msglen, "%s", m);
    else
        snprintf(msg, msglen, "HTTP %d from the API server", status);
    r->error = msg;
}

static void up_headers(upstream_req *u, int status, void *udata)
{
    kube_call *k = udata;
    k->status = status;
    if (k->stream && k->stream->on_status) {
        k->in_cb = true;
        k->stream->on_status(status, k->udata);
        k->in_cb = false;
        if (k->cancelled) call_free(k); /* upstream_cancel already ran in kube_call_cancel */
    }
}

static bool up_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    kube_call *k = udata;
    if (k->stream && k->status == 200) {
        k->in_cb = true;
        k->stream->on_chunk(data, len, k->udata);
        k->in_cb = false;
        if (k->cancelled) call_free(k);
        return true;
    }
    if (k->overflow) return true;
    if (k->body.len + len > KUBE_BODY_MAX) {
        k->overflow = true;
        buf_free(&k->body);
        return true;
    }
    buf_append(&k->body, data, len);
    return true;
}

static void up_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata)
{
    kube_call *k = udata;
    k->done = true;
    k->u = NULL;
    kube_resp r = {0};
    char msg[512];
    json_t *body = NULL;
    if (res != UPSTREAM_OK) {
        snprintf(msg, sizeof msg, "%s", errmsg && errmsg[0] ? errmsg : "request failed");
        r.error = msg;
    } else if (k->overflow) {
        snprintf(msg, sizeof msg, "the response is over %u MiB", KUBE_BODY_MAX >> 20);
        r.error = msg;
    } else {
        json_error_t je = {0};
        if (k->body.len) body = json_loadb(k->body.data, k->body.len, 0, &je);
        resp_from_body(&r, status, body, msg, sizeof msg);
        if (!body && k->body.len && status < 400) {
            snprintf(msg, sizeof msg, "HTTP %d with a body that is not JSON: %s", status, je.text);
            r.error = msg;
        }
    }
    if (!k->cancelled) {
        kube_cb cb = k->stream ? k->stream->on_done : k->cb;
        k->in_cb = true;
        if (cb) cb(&r, k->udata);
        k->in_cb = false;
    }
    json_decref(body);
    call_free(k);
}

static kube_call *send_call(kube_client *c, const char *method, const char *path,
                            const char *content_type, const json_t *body, unsigned timeout_ms,
                            bool detached, kube_cb cb, const kube_stream_fns *stream, void *udata)
{
    if (c->closing && !detached) return NULL;
    kube_call *k = calloc(1, sizeof *k);
    if (!k) return NULL;
    k->c = c;
    k->cb = cb;
    k->udata = udata;
    k->detached = detached;
    if (stream) {
        k->stream_copy = *stream;
        k->stream = &k->stream_copy;
    }
    size_t ul = strlen(c->cfg.server) + strlen(path) + 1;
    char *url = malloc(ul);
    if (!url) abort();
    snprintf(url, ul, "%s%s", c->cfg.server, path);
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    upstream_header h[5];
    size_t nh = 0;
    if (c->auth) h[nh++] = (upstream_header){"Authorization", c->auth};
    h[nh++] = (upstream_header){"Accept", "application/json"};
    h[nh++] = (upstream_header){"User-Agent", "ctxgate/" CTXGATE_VERSION};
    if (text)
        h[nh++] =
            (upstream_header){"Content-Type", content_type ? content_type : "application/json"};
    upstream_opts o = {
        .method = method,
        .url = url,
        .headers = h,
        .n_headers = nh,
        .body = text,
        .body_len = text ? strlen(text) : 0,
        .total_timeout_ms = timeout_ms,
        .insecure_skip_verify = c->cfg.insecure,
        .tls_ca_pem = c->cfg.ca_pem,
        .tls_cert_pem = c->cfg.cert_pem,
        .tls_key_pem = c->cfg.key_pem,
        .udata = k,
        .on_headers = up_headers,
        .on_data = up_data,
        .on_done = up_done,
    };
    kube_link_add(&c->calls, &k->link);
    k->u = upstream_send(c->up, &o);
    free(url);
    free(text);
    if (!k->u) {
        call_free(k);
        return NULL;
    }
    return k;
}

kube_call *kube_request_ex(kube_client *c, const char *method, const char *path,
                           const char *content_type, const json_t *body, unsigned timeout_ms,
                           bool detached, kube_cb cb, void *udata)
{
    return send_call(c, method, path, content_type, body, timeout_ms ? timeout_ms : KUBE_TIMEOUT_MS,
                     detached, cb, NULL, udata);
}

kube_call *kube_request(kube_client *c, const char *method, const char *path,
                        const char *content_type, const json_t *body, kube_cb cb, void *udata)
{
    return kube_request_ex(c, method, path, content_type, body, 0, false, cb, udata);
}

kube_call *kube_stream(kube_client *c, const char *path, unsigned timeout_ms,
                       const kube_stream_fns *fns, void *udata)
{
    return send_call(c, "GET", path, NULL, NULL, timeout_ms, false, NULL, fns, udata);
}

void kube_call_cancel(kube_call *k)
{
    if (!k || k->cancelled) return;
    k->cancelled = true;
    if (k->u && !k->done) {
        upstream_cancel(k->u);
        k->u = NULL;
        k->done = true;
    }
    if (!k->in_cb) call_free(k);
}

kube_call *kube_get(kube_client *c, const kube_gvr *r, const char *ns, const char *name, kube_cb cb,
                    void *udata)
{
    char *p = kube_path(r, ns, name, NULL);
    kube_call *k = kube_request(c, "GET", p, NULL, NULL, cb, udata);
    free(p);
    return k;
}

static const char *obj_ns(const json_t *obj)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), "namespace"));
}
static const char *obj_name(const json_t *obj)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
}

kube_call *kube_create(kube_client *c, const kube_gvr *r, const json_t *obj, kube_cb cb,
                       void *udata)
{
    char *p = kube_path(r, obj_ns(obj), NULL, NULL);
    kube_call *k = kube_request(c, "POST", p, NULL, obj, cb, udata);
    free(p);
    return k;
}

kube_call *kube_replace(kube_client *c, const kube_gvr *r, const json_t *obj, kube_cb cb,
                        void *udata)
{
    const char *name = obj_name(obj);
    char *p = kube_path(r, obj_ns(obj), name ? name : "", NULL);
    kube_call *k = kube_request(c, "PUT", p, NULL, obj, cb, udata);
    free(p);
    return k;
}

kube_call *kube_merge_patch(kube_client *c, const kube_gvr *r, const char *ns, const char *name,
                            const char *sub, const json_t *patch, kube_cb cb, void *udata)
{
    char *p = kube_path(r, ns, name, sub);
    kube_call *k = kube_request(c, "PATCH", p, "application/merge-patch+json", patch, cb, udata);
    free(p);
    return k;
}

kube_call *kube_remove(kube_client *c, const kube_gvr *r, const char *ns, const char *name,
                       kube_cb cb, void *udata)
{
    char *p = kube_path(r, ns, name, NULL);
    size_t n = strlen(p) + 40;
    char *q = malloc(n);
    if (!q) abort();
    snprintf(q, n, "%s?propagationPolicy=Background", p);
    kube_call *k = kube_request(c, "DELETE", q, NULL, NULL, cb, udata);
    free(q);
    free(p);
    return k;
}

/* ---- freeing ---- */

static void client_closed(uv_handle_t *h)
{
    kube_client *c = h->data;
    kube_events_state_free(c->events);
    free(c->auth);
    kube_config_free(&c->cfg);
    free(c);
}

static void client_finish(uv_timer_t *t)
{
    kube_client *c = t->data;
    c->finishing = true;
    while (!link_empty(&c->calls))
        kube_call_cancel(CALL_OF(c->calls.next));
    upstream_client_free(c->up);
    c->up = NULL;
    uv_close((uv_handle_t *)&c->timer, client_closed);
}

void kube_client_free(kube_client *c)
{
    if (!c || c->closing) return;
    c->closing = true;
    kube_informer_stop_all(c);
    kube_leader_stop_all(c); /* may start a detached Lease release */
    /* every call a user made; calls running a callback now are freed when it returns */
    for (kube_link *l = c->calls.next, *nx; l != &c->calls; l = nx) {
        nx = l->next;
        kube_call *k = CALL_OF(l);
        if (!k->detached) kube_call_cancel(k);
    }
    uv_timer_stop(&c->timer);
    uv_ref((uv_handle_t *)&c->timer);
    /* detached calls get a grace period (cut short when the last one ends, in call_free); the
     * timer never fires from inside this call */
    bool detached = false;
    for (kube_link *l = c->calls.next; l != &c->calls; l = l->next)
        if (CALL_OF(l)->detached && !CALL_OF(l)->cancelled) detached = true;
    uv_timer_start(&c->timer, client_finish, detached ? KUBE_GRACE_MS : 0, 0);
}
