/* admin.c — the admin JSON API (GET /admin/targets), the metrics page with the targets' health,
 * and the request handler of spec.admin's listener. Answers are written directly (no pl_call:
 * nothing here goes upstream); errors use the OpenAI error format like every other answer. */
#include <openssl/crypto.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "obs/metrics.h"
#include "pipeline/admin.h"
#include "pipeline/auth.h"
#include "pipeline/bound.h"
#include "pipeline/call.h"
#include "pipeline/health.h"
#include "pipeline/route.h"

bool pl_admin_is_admin_path(str path)
{
    return str_eq_c(path, "/admin") || (path.n > 7 && memcmp(path.p, "/admin/", 7) == 0);
}

bool pl_admin_is_metrics_path(const pl_worker *w, str path)
{
    const pl_runtime *rt = w->bound->rt;
    if (str_eq_c(path, rt->gw->obs.metrics_path)) return true;
    for (size_t i = 0; i < rt->snap->n_mcps; i++) {
        const cfg_mcp *m = &rt->snap->mcps[i];
        if (m->metrics_enabled && m->metrics_path && str_eq_c(path, m->metrics_path)) return true;
    }
    return false;
}

void pl_admin_serve_metrics(http_request *r, pl_worker *w)
{
    buf out = BUF_INIT;
    obs_render(&out);
    health_render_metrics(w->bound->rt->health, w->bound->rt->gw, &out);
    static const http_header ct = {STR_LIT("Content-Type"), STR_LIT(OBS_CONTENT_TYPE)};
    http_respond(r, 200, &ct, 1, out.data ? out.data : "", out.len);
    buf_free(&out);
}

static void fail(http_request *r, int status, const http_header *extra, size_t n_extra,
                 const char *type, const char *code, const char *msg)
{
    size_t len;
    char *body = pl_error_body(type, code, NULL, msg, &len);
    http_header h[4] = {pl_json_ct};
    size_t n = 1;
    for (size_t i = 0; i < n_extra && n < 4; i++)
        h[n++] = extra[i];
    http_respond(r, status, h, n, body, len);
    free(body);
}

static json_t *time_or_null(int64_t wall_ms)
{
    if (wall_ms <= 0) return json_null();
    char t[40];
    health_format_time(wall_ms, t, sizeof t);
    return json_string(t);
}

static void serve_targets(http_request *r, pl_runtime *rt)
{
    const cfg_gateway *gw = rt->gw;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    json_t *arr = json_array();
    for (size_t i = 0; i < gw->n_targets; i++) {
        const cfg_target *t = &gw->targets[i];
        health_snapshot s;
        health_read(&rt->health[i], now, &s);
        long in_flight = atomic_load_explicit(&rt->stats[i].in_flight, memory_order_relaxed);
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:i, s:I, s:o, s:I, s:o, s:o, s:s}", "name", t->name, "type",
            cfg_target_type_name(t->type), "state", health_state_name(s.state),
            "consecutiveFailures", s.consecutive, "ejections", (json_int_t)s.ejections,
            "ejectedUntil", time_or_null(s.ejected_until_wall_ms), "inFlight",
            (json_int_t)(in_flight > 0 ? in_flight : 0), "maxConcurrency",
            t->max_concurrency > 0 ? json_integer((json_int_t)t->max_concurrency) : json_null(),
            "lastTransitionTime", time_or_null(s.last_transition_wall_ms), "message", s.message);
        if (o) json_array_append_new(arr, o);
    }
    json_t *doc = json_pack("{s:o}", "targets", arr);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body) {
        fail(r, 500, NULL, 0, "server_error", "encoding_failed",
             "The target list could not be encoded as JSON.");
        return;
    }
    http_respond(r, 200, &pl_json_ct, 1, body, strlen(body));
    free(body);
}

/* What configuration this process serves and whether the last change was refused, so an
 * operator (and `ctxgate controller`, which reports it in the LLMGateway's conditions) can tell a
 * rejected edit from one being served. */
static void serve_config(http_request *r, pl_runtime *rt)
{
    char err[1024];
    int64_t when = 0;
    size_t n_errors = obs_reload_last_error(err, sizeof err, &when);
    json_t *last = json_pack("{s:s, s:o}", "result", n_errors ? "rejected" : "accepted", "time",
                             when ? time_or_null(when) : json_null());
    if (last && n_errors) {
        json_object_set_new(last, "error", json_string(err));
        json_object_set_new(last, "errors", json_integer((json_int_t)n_errors));
    }
    json_t *doc = json_pack("{s:s, s:s, s:I, s:s, s:o}", "gateway", rt->gw->name, "namespace",
                            rt->gw->namespace_, "generation", (json_int_t)rt->snap->generation,
                            "source", rt->gw->source, "lastChange", last ? last : json_null());
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body) {
        fail(r, 500, NULL, 0, "server_error", "encoding_failed",
             "The configuration status could not be encoded as JSON.");
        return;
    }
    http_respond(r, 200, &pl_json_ct, 1, body, strlen(body));
    free(body);
}

/* spec.admin.apiKeyRef: digests compared in constant time, never the key text. */
static auth_result admin_key_check(const cfg_admin *a, const http_request *r)
{
    if (!a->has_api_key) return AUTH_OK;
    if (auth_duplicated_header(r)) return AUTH_AMBIGUOUS;
    str k = auth_presented_key(r);
    if (!k.p || k.n == 0) return AUTH_MISSING;
    unsigned char got[32];
    if (!auth_key_digest(k, got)) return AUTH_INVALID;
    return CRYPTO_memcmp(got, a->sha256, 32) == 0 ? AUTH_OK : AUTH_INVALID;
}

void pl_admin_serve(http_request *r, pl_worker *w, bool admin_listener)
{
    pl_runtime *rt = w->bound->rt;
    const cfg_gateway *gw = rt->gw;
    const cfg_api_key *key = NULL;
    auth_result ar = admin_listener ? admin_key_check(&gw->admin, r) : auth_check(gw, r, &key);
    switch (ar) {
    case AUTH_OK:
        break;
    case AUTH_MISSING:
        fail(r, 401, NULL, 0, "invalid_request_error", "missing_api_key",
             admin_listener ? "Missing admin key: send spec.admin's key as 'Authorization: Bearer "
                              "<key>' or 'x-api-key: <key>'."
                            : "Missing API key: send it as 'Authorization: Bearer <key>', "
                              "'x-api-key: <key>' or 'api-key: <key>'.");
        return;
    case AUTH_INVALID:
        fail(r, 401, NULL, 0, "invalid_request_error", "invalid_api_key",
             "Incorrect API key provided.");
        return;
    case AUTH_AMBIGUOUS:
        fail(r, 400, NULL, 0, "invalid_request_error", "duplicate_header",
             "A credentials header is sent more than once; send one key, once.");
        return;
    }
    bool targets = str_eq_c(r->path, "/admin/targets");
    if (!targets && !str_eq_c(r->path, "/admin/config")) {
        fail(r, 404, NULL, 0, "invalid_request_error", "unknown_url",
             "Unknown admin URL; the admin API serves GET /admin/targets and GET /admin/config.");
        return;
    }
    if (!str_eq_c(r->method_name, "GET")) {
        static const http_header allow = {STR_LIT("Allow"), STR_LIT("GET")};
        fail(r, 405, &allow, 1, "invalid_request_error", "method_not_allowed",
             targets ? "/admin/targets only answers GET." : "/admin/config only answers GET.");
        return;
    }
    if (targets)
        serve_targets(r, rt);
    else
        serve_config(r, rt);
}

void pl_handle_admin(http_request *r, void *ctx)
{
    pl_worker *w = ctx;
    if (str_eq_c(r->path, "/healthz")) {
        static const char ok[] = "{\"status\":\"ok\"}";
        http_respond(r, 200, &pl_json_ct, 1, ok, sizeof ok - 1);
        return;
    }
    if (str_eq_c(r->method_name, "GET") && pl_admin_is_metrics_path(w, r->path)) {
        pl_admin_serve_metrics(r, w);
        return;
    }
    if (pl_admin_is_admin_path(r->path)) {
        pl_admin_serve(r, w, true);
        return;
    }
    fail(r, 404, NULL, 0, "invalid_request_error", "unknown_url",
         "Unknown URL on the admin listener: it serves the metrics endpoint, /admin/targets and "
         "/admin/config.");
}
