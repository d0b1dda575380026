/* webhook.c — `ctxgate webhook` (webhook.h): the HTTPS server, the asynchronous fetches of the
 * objects a reviewed resource references, and the certificate reload.
 *
 * A review of an LLMGateway or ModelContextProtocol fetches every Secret / MCP it references
 * (kube_get, in parallel, 3 s in all: below the API server's 5 s webhook budget), then validates
 * the object with the others found (review.c). A reference that is not found (404) is left to
 * the validator, which denies it naming the field. Any other answer (403, 5xx, a timeout) denies
 * the review with 500 InternalError naming the object that could not be read: the webhook cannot
 * tell a valid object from an invalid one then, and the configuration's failurePolicy is Fail. */
#include <errno.h>
#include <libgen.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/refs.h"
#include "core/log.h"
#include "http/server.h"
#include "kube/kube.h"
#include "webhook/review.h"
#include "webhook/webhook.h"

enum {
    WH_FETCH_TIMEOUT_MS = 3000,
    WH_CERT_DEBOUNCE_MS = 500,
};

static const http_header json_ct = {STR_LIT("content-type"), STR_LIT("application/json")};

static struct {
    webhook_opts o;
    uv_loop_t *loop;
    kube_client *kc;
    http_server *srv;
    char *cert_pem, *key_pem;
    uv_fs_event_t watch[2];
    int n_watch;
    uv_timer_t cert_timer;
    uv_signal_t sig_term, sig_int;
    int servers; /* servers started and not yet freed */
    bool stopping;
} w;

/* ---- one review ---- */

typedef struct wh_call wh_call;
typedef struct wh_fetch {
    wh_call *c;
    const cfg_ref *ref;
    kube_call *call;
    json_t *obj; /* found (owned) */
} wh_fetch;

struct wh_call {
    http_request *r;
    wh_review rev;
    cfg_refs refs;
    wh_fetch *f;
    size_t n_f, pending;
    char *api_error; /* the first reference that could not be read */
    uv_timer_t timer;
    bool timer_init, done;
};

static void respond_json(http_request *r, int status, json_t *doc)
{
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!text) {
        http_respond(r, 500, NULL, 0, NULL, 0);
        return;
    }
    http_respond(r, status, &json_ct, 1, text, strlen(text));
    free(text);
}

static void call_free_cb(uv_handle_t *h)
{
    wh_call *c = h->data;
    free(c);
}

static void call_release(wh_call *c)
{
    for (size_t i = 0; i < c->n_f; i++) {
        if (c->f[i].call) kube_call_cancel(c->f[i].call);
        json_decref(c->f[i].obj);
    }
    free(c->f);
    free(c->api_error);
    cfg_refs_free(&c->refs);
    wh_review_free(&c->rev);
    if (c->timer_init) {
        uv_close((uv_handle_t *)&c->timer, call_free_cb);
        return;
    }
    free(c);
}

static void finish(wh_call *c, const wh_verdict *v)
{
    if (c->done) return;
    c->done = true;
    if (c->timer_init) uv_timer_stop(&c->timer);
    json_t *md = json_object_get(c->rev.object, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    log_info("%s %s %s/%s: %s%s%s", c->rev.operation, c->rev.kind, c->rev.ns, name ? name : "?",
             v->allowed ? "allowed" : "denied", v->message ? ": " : "",
             v->message ? v->message : "");
    char *text = wh_response_build(c->rev.uid, v);
    if (text) {
        http_respond(c->r, 200, &json_ct, 1, text, strlen(text));
        free(text);
    } else {
        http_respond(c->r, 500, NULL, 0, NULL, 0);
    }
    c->r = NULL;
    call_release(c);
}

static void complete(wh_call *c)
{
    wh_verdict v = {0};
    if (c->api_error) {
        wh_verdict_deny(&v, 500, "InternalError", c->api_error);
    } else {
        json_t **found = calloc(c->n_f + 1, sizeof *found);
        if (!found) abort();
        size_t n = 0;
        for (size_t i = 0; i < c->n_f; i++)
            if (c->f[i].obj) found[n++] = c->f[i].obj;
        wh_validate(&c->rev, found, n, &v);
        free(found);
    }
    finish(c, &v);
    wh_verdict_free(&v);
}

static const char *ref_ns(const wh_call *c)
{
    const char *ns =
        json_string_value(json_object_get(json_object_get(c->rev.object, "metadata"), "namespace"));
    return ns ? ns : "default";
}

static void set_api_error(wh_call *c, const wh_fetch *f, const char *what, bool rbac)
{
    if (c->api_error) return;
    char buf[1024];
    snprintf(buf, sizeof buf, "cannot check %s %s/%s referenced by %s: %s%s",
             cfg_ref_kind_name(f->ref->kind), ref_ns(c), f->ref->name, f->ref->path, what,
             rbac ? " (the webhook's service account needs get on secrets and "
                    "modelcontextprotocols in every namespace)"
                  : "");
    c->api_error = strdup(buf);
    if (!c->api_error) abort();
}

static void on_fetched(const kube_resp *resp, void *udata)
{
    wh_fetch *f = udata;
    wh_call *c = f->c;
    f->call = NULL;
    if (resp->status == 200 && json_is_object(resp->body)) {
        f->obj = json_incref(resp->body);
    } else if (resp->status != 404) {
        char what[512];
        if (resp->status)
            snprintf(what, sizeof what, "the API server answered %d%s%s", resp->status,
                     resp->error ? ": " : "", resp->error ? resp->error : "");
        else
            snprintf(what, sizeof what, "%s", resp->error ? resp->error : "no answer");
        set_api_error(c, f, what, resp->status == 401 || resp->status == 403);
    }
    if (--c->pending == 0) complete(c);
}

static void on_fetch_timeout(uv_timer_t *t)
{
    wh_call *c = t->data;
    for (size_t i = 0; i < c->n_f; i++) {
        if (!c->f[i].call) continue;
        kube_call_cancel(c->f[i].call);
        c->f[i].call = NULL;
        set_api_error(c, &c->f[i], "no answer from the API server within 3 s", false);
    }
    c->pending = 0;
    complete(c);
}

static void on_abort(http_request *r)
{
    wh_call *c = r->udata;
    wh_verdict v = {.allowed = false, .code = 500, .reason = "InternalError"};
    finish(c, &v); /* the server drops the bytes; the request must still be finished */
}

static void review(http_request *r)
{
    wh_call *c = calloc(1, sizeof *c);
    if (!c) abort();
    c->r = r;
    char err[512];
    if (wh_review_parse(r->body.p, r->body.n, &c->rev, err, sizeof err) != 0) {
        log_warn("POST /validate from %s: %s", r->remote_addr, err);
        respond_json(r, 400, json_pack("{s:s}", "message", err));
        free(c);
        return;
    }
    r->udata = c;
    r->on_abort = on_abort;
    const char *why = NULL;
    if (!wh_review_needs_check(&c->rev, &why)) {
        log_debug("%s %s: allowed without checks (%s)", c->rev.operation, c->rev.kind, why);
        wh_verdict v = {.allowed = true};
        finish(c, &v);
        return;
    }
    cfg_refs_collect(c->rev.object, &c->refs);
    c->f = calloc(c->refs.n + 1, sizeof *c->f);
    if (!c->f) abort();
    for (size_t i = 0; i < c->refs.n; i++) {
        const cfg_ref *ref = &c->refs.v[i];
        if (cfg_refs_find(&c->refs, ref->kind, ref->name) != ref) continue;
        c->f[c->n_f++] = (wh_fetch){.c = c, .ref = ref};
    }
    if (c->n_f == 0) {
        complete(c);
        return;
    }
    uv_timer_init(w.loop, &c->timer);
    c->timer.data = c;
    c->timer_init = true;
    uv_timer_start(&c->timer, on_fetch_timeout, WH_FETCH_TIMEOUT_MS, 0);
    c->pending = c->n_f;
    for (size_t i = 0; i < c->n_f; i++) {
        wh_fetch *f = &c->f[i];
        f->call = kube_get(w.kc, f->ref->kind == CFG_REF_MCP ? &KUBE_MCPS : &KUBE_SECRETS,
                           ref_ns(c), f->ref->name, on_fetched, f);
        if (!f->call) abort();
    }
}

static void handle(http_request *r, void *ctx)
{
    (void)ctx;
    if (str_eq_c(r->path, "/healthz")) {
        respond_json(r, 200, json_pack("{s:s}", "status", "ok"));
    } else if (str_eq_c(r->path, "/validate")) {
        if (str_eq_c(r->method_name, "POST")) {
            review(r);
            return;
        }
        http_header h[2] = {json_ct, {STR_LIT("allow"), STR_LIT("POST")}};
        const char *body = "{\"message\":\"/validate only answers POST (an AdmissionReview)\"}";
        http_respond(r, 405, h, 2, body, strlen(body));
    } else {
        respond_json(r, 404,
                     json_pack("{s:s}", "message",
                               "not found: the webhook serves POST /validate and /healthz"));
    }
}

/* ---- the listener and its certificate ---- */

static char *read_file(const char *path, char *err, size_t errlen)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0, k;
    char chunk[4096];
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + k + 1 > cap) {
            cap = (len + k + 1) * 2;
            buf = realloc(buf, cap);
            if (!buf) abort();
        }
        memcpy(buf + len, chunk, k);
        len += k;
    }
    fclose(f);
    if (!buf) {
        snprintf(err, errlen, "%s is empty", path);
        return NULL;
    }
    buf[len] = 0;
    return buf;
}

static int start_server(const char *cert, const char *key, bool exclusive, http_server **out,
                        char *err, size_t errlen)
{
    http_server_opts so = {.host = w.o.address,
                           .port = w.o.port,
                           .exclusive = exclusive,
                           .tls_cert_pem = cert,
                           .tls_key_pem = key,
                           .handler = handle};
    http_limits_default(&so.limits);
    so.limits.max_body_bytes = 3u << 20; /* the API server sends at most 3 MiB objects */
    int rc = http_server_start(w.loop, &so, out, err, errlen);
    if (rc == 0) w.servers++;
    return rc;
}

static void on_old_drained(void *ctx)
{
    http_server_free(ctx);
    w.servers--;
}

static void on_cert_timer(uv_timer_t *t)
{
    (void)t;
    char err[512];
    char *cert = read_file(w.o.tls_cert_file, err, sizeof err);
    char *key = cert ? read_file(w.o.tls_key_file, err, sizeof err) : NULL;
    if (!cert || !key) {
        log_warn("certificate change: %s; still serving the previous certificate", err);
        goto out;
    }
    if (strcmp(cert, w.cert_pem) == 0 && strcmp(key, w.key_pem) == 0) goto out;
    http_server *next = NULL;
    if (start_server(cert, key, false, &next, err, sizeof err) != 0) {
        log_error("certificate change: %s; still serving the previous certificate", err);
        goto out;
    }
    http_server_drain(w.srv, on_old_drained, w.srv);
    w.srv = next;
    free(w.cert_pem);
    free(w.key_pem);
    w.cert_pem = cert;
    w.key_pem = key;
    cert = key = NULL;
    log_info("TLS certificate reloaded from %s", w.o.tls_cert_file);
out:
    free(cert);
    free(key);
}

static void on_cert_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    (void)h;
    (void)filename;
    (void)events;
    (void)status;
    /* a Secret volume swaps a "..data" symlink; editors write in steps: wait for the burst */
    uv_timer_start(&w.cert_timer, on_cert_timer, WH_CERT_DEBOUNCE_MS, 0);
}

static void watch_dir_of(const char *file)
{
    char *copy = strdup(file);
    if (!copy) abort();
    char *dir = dirname(copy);
    for (int i = 0; i < w.n_watch; i++) {
        char got[4096];
        size_t n = sizeof got;
        if (uv_fs_event_getpath(&w.watch[i], got, &n) == 0 && strcmp(got, dir) == 0) {
            free(copy);
            return;
        }
    }
    uv_fs_event_t *h = &w.watch[w.n_watch];
    uv_fs_event_init(w.loop, h);
    int rc = uv_fs_event_start(h, on_cert_event, dir, 0);
    if (rc != 0) {
        log_warn("cannot watch %s for certificate changes (%s); restart to rotate", dir,
                 uv_strerror(rc));
        uv_close((uv_handle_t *)h, NULL);
    } else {
        w.n_watch++;
    }
    free(copy);
}

/* ---- process ---- */

static void on_drained(void *ctx)
{
    http_server_free(ctx);
    w.servers--;
    w.srv = NULL;
    kube_client_free(w.kc);
    w.kc = NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    if (w.stopping) return;
    w.stopping = true;
    log_info("received %s: finishing in-flight reviews", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    uv_close((uv_handle_t *)&w.sig_term, NULL);
    uv_close((uv_handle_t *)&w.sig_int, NULL);
    uv_close((uv_handle_t *)&w.cert_timer, NULL);
    for (int i = 0; i < w.n_watch; i++)
        uv_close((uv_handle_t *)&w.watch[i], NULL);
    http_server_drain(w.srv, on_drained, w.srv);
}

int webhook_run(const webhook_opts *o)
{
    memset(&w, 0, sizeof w);
    w.o = *o;
    if (!w.o.address) w.o.address = "0.0.0.0";
    if (!w.o.port) w.o.port = 9443;
    w.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);
    char err[512];
    w.cert_pem = read_file(o->tls_cert_file, err, sizeof err);
    w.key_pem = w.cert_pem ? read_file(o->tls_key_file, err, sizeof err) : NULL;
    if (!w.cert_pem || !w.key_pem) {
        fprintf(stderr, "ctxgate webhook: --tls-cert/--tls-key: %s\n", err);
        free(w.cert_pem);
        return 1;
    }
    kube_config cfg = {0};
    if (kube_config_load(o->kubeconfig, NULL, &cfg, err, sizeof err) != 0) {
        fprintf(stderr, "ctxgate webhook: %s\n", err);
        free(w.cert_pem);
        free(w.key_pem);
        return 1;
    }
    w.kc = kube_client_new(w.loop, &cfg);
    log_info("webhook: reading referenced objects through %s (%s)", cfg.server, cfg.source);
    kube_config_free(&cfg);
    if (start_server(w.cert_pem, w.key_pem, true, &w.srv, err, sizeof err) != 0) {
        fprintf(stderr, "ctxgate webhook: %s\n", err);
        kube_client_free(w.kc);
        uv_run(w.loop, UV_RUN_DEFAULT);
        free(w.cert_pem);
        free(w.key_pem);
        return 1;
    }
    uv_timer_init(w.loop, &w.cert_timer);
    watch_dir_of(o->tls_cert_file);
    watch_dir_of(o->tls_key_file);
    uv_signal_init(w.loop, &w.sig_term);
    uv_signal_init(w.loop, &w.sig_int);
    uv_signal_start(&w.sig_term, on_signal, SIGTERM);
    uv_signal_start(&w.sig_int, on_signal, SIGINT);
    log_info("webhook: listening on https://%s:%d (POST /validate, /healthz)", w.o.address,
             http_server_port(w.srv));
    uv_run(w.loop, UV_RUN_DEFAULT);
    free(w.cert_pem);
    free(w.key_pem);
    uv_loop_close(w.loop);
    log_info("webhook: shut down cleanly");
    return 0;
}
