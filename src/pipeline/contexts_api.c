/* contexts_api.c — the context REST API on every gateway's fixed paths:
 *   GET /v1/contexts, GET|DELETE /v1/contexts/{id}, GET|POST /v1/contexts/{id}/messages.
 * It reads and writes the same store handles the chat path uses (pl_bound_store), so what a
 * chat request committed is visible here and what is posted here is injected into the next
 * chat request. Every store operation is asynchronous on the worker loop; a pending store
 * request cannot be cancelled, so a client that goes away is finished in the callback.
 *
 * Access: with security.apiKeyRef only that key is accepted (and it may name ?tenant=); without
 * it the gateway's own authentication applies and security.rbac maps the key's app to Read or
 * ReadWrite. Records are keyed by (tenant, id): a gateway key sees its own tenant only. */
#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "context/record.h"
#include "pipeline/auth.h"
#include "core/clock.h"
#include "core/log.h"
#include "core/utf8.h"
#include "pipeline/call.h"

#define CONTEXTS_PATH "/v1/contexts"

typedef enum { API_LIST, API_GET, API_DELETE, API_APPEND, API_MESSAGES } api_op;

/* One API request's state while a store operation runs; freed before the call finishes. */
typedef struct ctx_api {
    pl_call *c;
    api_op op;
    const cfg_mcp *mcp;
    ctx_store *store;
    const char *tenant; /* NULL = the store's default tenant (borrowed: key or request pool) */
    const char *id;     /* percent-decoded conversation id (request pool) */
    uint64_t version;   /* append: the version it produced */
    ctx_req req;
} ctx_api;

typedef struct api_query {
    const char *mcp, *limit, *cursor, *tenant; /* decoded (request pool); NULL when absent */
} api_query;

/* ---- finishing ---- */

static void api_fail(ctx_api *a, pl_call *c, int status, const char *type, const char *code,
                     const char *param, const char *fmt, ...) __attribute__((format(printf, 7, 8)));
static void api_fail(ctx_api *a, pl_call *c, int status, const char *type, const char *code,
                     const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    free(a);
    pl_failv(c, status, NULL, 0, type, code, param, fmt, ap);
    va_end(ap);
}

/* doc NULL: no body (204). */
static void api_respond(ctx_api *a, int status, json_t *doc)
{
    pl_call *c = a->c;
    free(a);
    if (!doc && status != 204) {
        pl_fail(c, 500, "server_error", "encoding_failed", NULL,
                "The answer could not be built as JSON.");
        return;
    }
    if (!doc) {
        pl_finish(c, status, NULL, 0, NULL, 0);
        return;
    }
    char *body = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    if (!body) {
        /* a stored text jansson cannot encode (not UTF-8): never a NULL body */
        log_warn("request %s: the context API answer could not be encoded as JSON", c->request_id);
        pl_fail(c, 500, "server_error", "encoding_failed", NULL,
                "The answer could not be encoded as JSON.");
        return;
    }
    pl_finish(c, status, &pl_json_ct, 1, body, strlen(body));
    free(body);
}

static const char *tenant_name(const ctx_api *a)
{
    return a->tenant ? a->tenant : CTX_TENANT_DEFAULT;
}

/* A store result other than CTX_OK as the API's error. param names the request field a
 * CTX_EINVAL is about (the id and tenant were checked before the store saw them). */
static void api_store_fail(ctx_api *a, int rc, const char *msg, const char *param)
{
    pl_call *c = a->c;
    switch (rc) {
    case CTX_ENOTFOUND:
        api_fail(a, c, 404, "invalid_request_error", "conversation_not_found", NULL,
                 "Conversation '%s' does not exist in ModelContextProtocol '%s' (tenant '%s').",
                 a->id, a->mcp->name, tenant_name(a));
        return;
    case CTX_ECONFLICT:
        api_fail(a, c, 409, "invalid_request_error", "conversation_conflict", "expectedVersion",
                 "%s", msg);
        return;
    case CTX_EINVAL:
        api_fail(a, c, 400, "invalid_request_error", "invalid_value", param, "%s", msg);
        return;
    case CTX_EREADONLY:
        api_fail(a, c, 403, "invalid_request_error", "context_read_only", NULL,
                 "ModelContextProtocol '%s' is ReadOnlyMany (interactionPatterns.readWriteMode): "
                 "its conversations cannot be written through the API.",
                 a->mcp->name);
        return;
    case CTX_ECORRUPT:
        /* the store's own words (paths, addresses, cipher errors) go to the log only */
        log_warn("request %s: conversation '%s' cannot be read: %s", c->request_id, a->id, msg);
        api_fail(a, c, 500, "server_error", "context_record_unreadable", NULL,
                 "Conversation '%s' cannot be read: its stored record is damaged.", a->id);
        return;
    default:
        log_warn("request %s: the context store of ModelContextProtocol '%s' is unavailable: %s",
                 c->request_id, a->mcp->name, msg);
        api_fail(a, c, 503, "server_error", "context_store_unavailable", NULL,
                 "The context store of ModelContextProtocol '%s' is unavailable.", a->mcp->name);
        return;
    }
}

/* The common head of every store callback: false when the call was already finished. */
static const char *op_name(ctx_req_type t)
{
    switch (t) {
    case CTX_REQ_GET:
        return "get";
    case CTX_REQ_APPEND:
        return "append";
    case CTX_REQ_SET_SUMMARY:
        return "set_summary";
    case CTX_REQ_DELETE:
        return "delete";
    case CTX_REQ_LIST:
        return "list";
    case CTX_REQ_STATS:
        return "stats";
    case CTX_REQ_EXPIRE:
        return "expire";
    }
    return "other";
}

static bool api_resume(ctx_api *a)
{
    pl_call *c = a->c;
    c->ctx.ctx_pending = false;
    pl_context_observe(c->w, a->mcp, a->store, op_name(a->req.type), c->ctx.ctx_op_ns,
                       a->req.result);
    if (!c->aborted) return true;
    ctx_req_cleanup(&a->req);
    free(a);
    pl_finish(c, 499, NULL, 0, NULL, 0);
    return false;
}

static void api_started(ctx_api *a, int rc, const char *einval_param)
{
    if (rc == 0) {
        a->c->ctx.ctx_pending = true;
        a->c->ctx.ctx_op_ns = clock_mono_ns(); /* callbacks never run inside the call */
        return;
    }
    char msg[sizeof a->req.errmsg];
    memcpy(msg, a->req.errmsg, sizeof msg);
    ctx_req_cleanup(&a->req);
    api_store_fail(a, rc, msg, einval_param);
}

static bool api_result_ok(ctx_api *a, const char *einval_param)
{
    if (a->req.result == CTX_OK) return true;
    char msg[sizeof a->req.errmsg];
    memcpy(msg, a->req.errmsg, sizeof msg);
    int rc = a->req.result;
    ctx_req_cleanup(&a->req);
    api_store_fail(a, rc, msg, einval_param);
    return false;
}

/* ---- JSON shapes ---- */

static json_t *rfc3339(int64_t ms)
{
    time_t s = (time_t)(ms / 1000);
    int frac = (int)(ms % 1000);
    if (frac < 0) {
        frac += 1000;
        s -= 1;
    }
    struct tm tm;
    if (!gmtime_r(&s, &tm)) return json_null();
    char out[48];
    size_t n = strftime(out, sizeof out, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, sizeof out - n, ".%03dZ", frac);
    return json_string(out);
}

static json_t *string_or_null(const char *s)
{
    return s ? json_string(s) : json_null();
}

/* ---- operations ---- */

static void on_listed(ctx_req *req)
{
    ctx_api *a = req->data;
    if (!api_resume(a) || !api_result_ok(a, "cursor")) return;
    json_t *data = json_array();
    for (size_t i = 0; i < req->n_items; i++) {
        const ctx_list_item *it = &req->items[i];
        json_array_append_new(data,
                              json_pack("{s:s, s:I, s:o, s:o}", "id", it->id, "turns",
                                        (json_int_t)it->turns, "createdAt", rfc3339(it->created_at),
                                        "updatedAt", rfc3339(it->updated_at)));
    }
    json_t *doc =
        json_pack("{s:o, s:o}", "data", data, "nextCursor", string_or_null(req->next_cursor));
    ctx_req_cleanup(req);
    api_respond(a, 200, doc);
}

static void on_got(ctx_req *req)
{
    ctx_api *a = req->data;
    if (!api_resume(a) || !api_result_ok(a, NULL)) return;
    const ctx_record *rec = req->record;
    json_t *doc;
    if (a->op == API_MESSAGES) {
        doc = json_pack("{s:s, s:I, s:O}", "id", rec->id, "version", (json_int_t)rec->version,
                        "messages", rec->messages);
    } else {
        doc =
            json_pack("{s:s, s:I, s:o, s:o, s:O, s:o, s:o, s:o}", "id", rec->id, "version",
                      (json_int_t)rec->version, "persona", string_or_null(rec->persona), "summary",
                      string_or_null(rec->summary), "messages", rec->messages, "metadata",
                      rec->metadata ? json_incref(rec->metadata) : json_object(), "createdAt",
                      rfc3339(rec->created_at), "updatedAt", rfc3339(rec->updated_at));
    }
    ctx_req_cleanup(req);
    api_respond(a, 200, doc);
}

static void on_deleted(ctx_req *req)
{
    ctx_api *a = req->data;
    if (!api_resume(a) || !api_result_ok(a, NULL)) return;
    ctx_req_cleanup(req);
    api_respond(a, 204, NULL);
}

/* After an append: the record is read once more for its message count. The append already
 * happened, so a failing read still answers 200 (turns null) rather than inviting a retry
 * that would append twice. */
static void on_counted(ctx_req *req)
{
    ctx_api *a = req->data;
    if (!api_resume(a)) return;
    json_t *turns = req->result == CTX_OK && req->record
                        ? json_integer((json_int_t)json_array_size(req->record->messages))
                        : json_null();
    ctx_req_cleanup(req);
    json_t *doc = json_pack("{s:s, s:I, s:o}", "id", a->id, "version", (json_int_t)a->version,
                            "turns", turns);
    api_respond(a, 200, doc);
}

static void on_appended(ctx_req *req)
{
    ctx_api *a = req->data;
    if (!api_resume(a) || !api_result_ok(a, "messages")) return;
    a->version = req->version;
    ctx_req_cleanup(req);
    memset(&a->req, 0, sizeof a->req);
    a->req.data = a;
    int rc = ctx_store_get(a->store, &a->req, a->tenant, a->id, on_counted);
    if (rc != 0) {
        ctx_req_cleanup(&a->req);
        api_respond(
            a, 200,
            json_pack("{s:s, s:I, s:n}", "id", a->id, "version", (json_int_t)a->version, "turns"));
        return;
    }
    a->c->ctx.ctx_pending = true;
}

static void start_append(ctx_api *a)
{
    pl_call *c = a->c;
    http_request *r = c->r;
    /* the chat path's checks, so text is held to the same rules: syntax, strict UTF-8,
     * duplicate or too many top-level keys, messages an array of objects with a string role */
    chat_probe *p = &c->probe;
    switch (chat_probe_parse(r->body.p ? r->body.p : "", r->body.n, r->pool, p, NULL)) {
    case PROBE_OK:
        break;
    case PROBE_BAD_JSON:
        api_fail(a, c, 400, "invalid_request_error", "invalid_json", NULL, "%s", p->message);
        return;
    case PROBE_BAD_ENCODING:
        api_fail(a, c, 400, "invalid_request_error", "invalid_encoding", p->param, "%s",
                 p->message);
        return;
    case PROBE_DUPLICATE_KEY:
        api_fail(a, c, 400, "invalid_request_error", "duplicate_key", p->param, "%s", p->message);
        return;
    case PROBE_TOO_MANY_KEYS:
        api_fail(a, c, 400, "invalid_request_error", "too_many_keys", NULL, "%s", p->message);
        return;
    case PROBE_NOT_OBJECT:
    case PROBE_BAD_FIELD:
        break; /* worded below, as this API words them */
    }
    json_error_t jerr;
    c->body = json_loadb(r->body.p ? r->body.p : "", r->body.n, 0, &jerr);
    if (!c->body) {
        api_fail(a, c, 400, "invalid_request_error", "invalid_json", NULL,
                 "We could not parse the JSON body of your request: %s (line %d, column %d).",
                 jerr.text, jerr.line, jerr.column);
        return;
    }
    if (!json_is_object(c->body)) {
        api_fail(a, c, 400, "invalid_request_error", "invalid_type", NULL,
                 "The request body must be a JSON object.");
        return;
    }
    json_t *msgs = json_object_get(c->body, "messages");
    if (!msgs) {
        api_fail(a, c, 400, "invalid_request_error", "missing_required_parameter", "messages",
                 "Missing required parameter: 'messages'.");
        return;
    }
    if (!json_is_array(msgs) || json_array_size(msgs) == 0) {
        api_fail(a, c, 400, "invalid_request_error", "invalid_value", "messages",
                 "Invalid 'messages': expected a non-empty array of message objects.");
        return;
    }
    size_t i;
    json_t *m;
    json_array_foreach(msgs, i, m)
    {
        if (!json_is_object(m) || !json_is_string(json_object_get(m, "role"))) {
            api_fail(a, c, 400, "invalid_request_error", "invalid_value", "messages",
                     "Invalid 'messages[%zu]': each message must be an object with a string "
                     "'role'.",
                     i);
            return;
        }
    }
    uint64_t expected = CTX_VERSION_ANY;
    json_t *ev = json_object_get(c->body, "expectedVersion");
    if (ev && !json_is_null(ev)) {
        if (!json_is_integer(ev) || json_integer_value(ev) < 0) {
            api_fail(a, c, 400, "invalid_request_error", "invalid_value", "expectedVersion",
                     "Invalid 'expectedVersion': expected a non-negative integer (the version "
                     "you read; 0 = the conversation must not exist yet).");
            return;
        }
        expected = (uint64_t)json_integer_value(ev);
    }
    a->req.data = a;
    int rc = ctx_store_append(a->store, &a->req, a->tenant, a->id, msgs, expected, on_appended);
    api_started(a, rc, "messages");
}

/* ---- request parsing ---- */

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

/* Percent-decodes in into the pool ('+' is a space when plus). NULL on a malformed escape or
 * an encoded NUL byte. */
static char *pct_decode(arena *pool, str in, bool plus)
{
    char *out = arena_alloc(pool, in.n + 1);
    size_t n = 0;
    for (size_t i = 0; i < in.n; i++) {
        char ch = in.p[i];
        if (ch == '%') {
            int hi = i + 2 < in.n ? hex_value(in.p[i + 1]) : -1;
            int lo = i + 2 < in.n ? hex_value(in.p[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) return NULL;
            out[n++] = (char)(hi * 16 + lo);
            i += 2;
        } else {
            out[n++] = plus && ch == '+' ? ' ' : ch;
        }
    }
    out[n] = 0;
    return out;
}

/* Splits the query string; the first occurrence of a parameter wins. false + *bad (the
 * parameter's name) on a malformed escape, or a value that is not UTF-8 once decoded. */
static bool parse_query(arena *pool, str q, api_query *out, const char **bad)
{
    memset(out, 0, sizeof *out);
    const char *p = q.p, *end = q.p + q.n;
    while (p && p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(stop - p));
        str k = {p, (size_t)((eq ? eq : stop) - p)};
        str v = eq ? (str){eq + 1, (size_t)(stop - eq - 1)} : STR_LIT("");
        const char **slot = NULL;
        if (str_eq_c(k, "mcp"))
            slot = &out->mcp;
        else if (str_eq_c(k, "limit"))
            slot = &out->limit;
        else if (str_eq_c(k, "cursor"))
            slot = &out->cursor;
        else if (str_eq_c(k, "tenant"))
            slot = &out->tenant;
        if (slot && !*slot) {
            *slot = pct_decode(pool, v, true);
            if (*slot && !utf8_valid(*slot, strlen(*slot))) *slot = NULL;
            if (!*slot) {
                *bad = slot == &out->mcp      ? "mcp"
                       : slot == &out->limit  ? "limit"
                       : slot == &out->cursor ? "cursor"
                                              : "tenant";
                return false;
            }
        }
        p = amp ? amp + 1 : NULL;
    }
    return true;
}

static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > CTX_ID_MAX) return false;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)id[i] <= 0x20 || (unsigned char)id[i] >= 0x7f) return false;
    return true;
}

static void known_mcps(const cfg_snapshot *snap, buf *out)
{
    for (size_t i = 0; i < snap->n_mcps; i++) {
        if (i) buf_puts(out, ", ");
        buf_puts(out, snap->mcps[i].name);
    }
    if (!snap->n_mcps) buf_puts(out, "(none)");
    buf_append(out, "", 1);
}

/* security.apiKeyRef: digests compared in constant time, never the key text. */
static auth_result admin_check(const cfg_mcp *mcp, const http_request *r)
{
    if (auth_duplicated_header(r)) return AUTH_AMBIGUOUS;
    str k = auth_presented_key(r);
    if (!k.p || k.n == 0) return AUTH_MISSING;
    unsigned char got[32];
    if (!auth_key_digest(k, got)) return AUTH_INVALID;
    return CRYPTO_memcmp(got, mcp->api_key_sha256, 32) == 0 ? AUTH_OK : AUTH_INVALID;
}

typedef enum { ACCESS_NONE, ACCESS_READ, ACCESS_READWRITE } api_access;

/* security.rbac: the most permissive entry naming the caller's app (or naming no apps). */
static api_access rbac_access(const cfg_mcp *mcp, const cfg_api_key *key)
{
    if (json_array_size(mcp->rbac) == 0) return ACCESS_READWRITE;
    const char *app = key ? key->app : NULL;
    api_access best = ACCESS_NONE;
    size_t i;
    json_t *e;
    json_array_foreach(mcp->rbac, i, e)
    {
        json_t *apps = json_object_get(e, "apps");
        bool match = json_array_size(apps) == 0;
        size_t k;
        json_t *name;
        json_array_foreach(apps, k, name)
        {
            const char *s = json_string_value(name);
            if (app && s && strcmp(s, app) == 0) match = true;
        }
        if (!match) continue;
        const char *access = json_string_value(json_object_get(e, "access"));
        api_access got = access && strcmp(access, "Read") == 0 ? ACCESS_READ : ACCESS_READWRITE;
        if (got > best) best = got;
    }
    return best;
}

static void method_not_allowed(ctx_api *a, pl_call *c, const char *allow)
{
    http_header h = {STR_LIT("Allow"), str_c(allow)};
    http_request *r = c->r;
    free(a);
    pl_fail_headers(c, 405, &h, 1, "invalid_request_error", "method_not_allowed", NULL,
                    "Method %.*s is not allowed on %.*s; use %s.", (int)r->method_name.n,
                    r->method_name.p, (int)r->path.n, r->path.p, allow);
}

bool pl_contexts_handle(pl_call *c)
{
    http_request *r = c->r;
    str path = r->path;
    static const str base = STR_LIT(CONTEXTS_PATH);
    if (!str_starts_with(path, base) || (path.n > base.n && path.p[base.n] != '/')) return false;

    ctx_api *a = calloc(1, sizeof *a);
    if (!a) abort();
    a->c = c;

    /* /v1/contexts, /v1/contexts/{id}, /v1/contexts/{id}/messages */
    str rest = {path.p + base.n, path.n - base.n};
    str id_raw = STR_NULL;
    bool messages = false;
    if (rest.n > 0) {
        rest.p++, rest.n--;
        const char *slash = memchr(rest.p, '/', rest.n);
        id_raw = (str){rest.p, slash ? (size_t)(slash - rest.p) : rest.n};
        if (slash) {
            str tail = {slash, rest.n - id_raw.n};
            if (!str_eq_c(tail, "/messages") || id_raw.n == 0) id_raw = STR_NULL;
            messages = true;
        }
        if (!id_raw.p || id_raw.n == 0) {
            api_fail(a, c, 404, "invalid_request_error", "unknown_url", NULL,
                     "Unknown request URL: %.*s %.*s. The context API serves " CONTEXTS_PATH
                     ", " CONTEXTS_PATH "/{id} and " CONTEXTS_PATH "/{id}/messages.",
                     (int)r->method_name.n, r->method_name.p, (int)path.n, path.p);
            return true;
        }
    }
    bool get = str_eq_c(r->method_name, "GET");
    if (!id_raw.p) {
        if (!get) {
            method_not_allowed(a, c, "GET");
            return true;
        }
        a->op = API_LIST;
    } else if (messages) {
        if (get)
            a->op = API_MESSAGES;
        else if (str_eq_c(r->method_name, "POST"))
            a->op = API_APPEND;
        else {
            method_not_allowed(a, c, "GET, POST");
            return true;
        }
    } else {
        if (get)
            a->op = API_GET;
        else if (str_eq_c(r->method_name, "DELETE"))
            a->op = API_DELETE;
        else {
            method_not_allowed(a, c, "GET, DELETE");
            return true;
        }
    }

    api_query q;
    const char *bad = NULL;
    if (!parse_query(r->pool, r->query, &q, &bad)) {
        api_fail(a, c, 400, "invalid_request_error", "invalid_value", bad,
                 "Invalid '%s': malformed percent-encoding, or not UTF-8 once decoded.", bad);
        return true;
    }

    /* which ModelContextProtocol */
    const cfg_snapshot *snap = c->rt->snap;
    if (q.mcp && *q.mcp) {
        a->mcp = cfg_find_mcp(snap, q.mcp);
        if (!a->mcp) {
            buf names = BUF_INIT;
            known_mcps(snap, &names);
            api_fail(a, c, 404, "invalid_request_error", "mcp_not_found", "mcp",
                     "ModelContextProtocol '%s' is not part of this configuration. Known: %s.",
                     q.mcp, names.data);
            buf_free(&names);
            return true;
        }
    } else if (snap->n_mcps == 1) {
        a->mcp = &snap->mcps[0];
    } else {
        buf names = BUF_INIT;
        known_mcps(snap, &names);
        if (snap->n_mcps == 0)
            api_fail(a, c, 404, "invalid_request_error", "mcp_not_found", "mcp",
                     "This configuration declares no ModelContextProtocol, so there are no "
                     "contexts to manage.");
        else
            api_fail(a, c, 400, "invalid_request_error", "missing_required_parameter", "mcp",
                     "This configuration has several ModelContextProtocols; name one with "
                     "?mcp=NAME. Known: %s.",
                     names.data);
        buf_free(&names);
        return true;
    }

    /* who is calling, and what they may do */
    const cfg_mcp *mcp = a->mcp;
    bool admin = mcp->has_api_key;
    auth_result ar = admin ? admin_check(mcp, r) : auth_check(c->rt->gw, r, &c->key);
    if (ar == AUTH_AMBIGUOUS) {
        const char *h = auth_duplicated_header(r);
        api_fail(a, c, 400, "invalid_request_error", "duplicate_header", h,
                 "The '%s' header is sent more than once; send one key, once.", h);
        return true;
    }
    if (ar == AUTH_MISSING) {
        api_fail(a, c, 401, "invalid_request_error", "missing_api_key", NULL,
                 "Missing API key: send %s as 'Authorization: Bearer <key>', 'x-api-key: <key>' "
                 "or 'api-key: <key>'.",
                 admin ? "the context API key (security.apiKeyRef)" : "it");
        return true;
    }
    if (ar == AUTH_INVALID) {
        api_fail(a, c, 401, "invalid_request_error", "invalid_api_key", NULL, "%s",
                 admin ? "Incorrect API key provided: ModelContextProtocol's context API needs "
                         "the key of its security.apiKeyRef."
                       : "Incorrect API key provided.");
        return true;
    }
    bool write = a->op == API_APPEND || a->op == API_DELETE;
    if (!admin) {
        api_access acc = rbac_access(mcp, c->key);
        if (acc == ACCESS_NONE || (write && acc != ACCESS_READWRITE)) {
            const char *app = c->key && c->key->app ? c->key->app : NULL;
            api_fail(a, c, 403, "invalid_request_error", "context_access_denied", NULL,
                     "%s%s%s is not granted %s access to the contexts of ModelContextProtocol "
                     "'%s' (security.rbac).",
                     app ? "Application '" : "This caller", app ? app : "", app ? "'" : "",
                     write ? "ReadWrite" : "Read", mcp->name);
            return true;
        }
    }

    /* whose records */
    char err[320];
    const char *own = c->key && c->key->tenant ? c->key->tenant : NULL;
    a->tenant = own;
    if (q.tenant) {
        if (admin) {
            if (ctx_id_validate("tenant", q.tenant, true, err, sizeof err) != 0) {
                api_fail(a, c, 400, "invalid_request_error", "invalid_value", "tenant", "%s", err);
                return true;
            }
            a->tenant = q.tenant;
        } else if (strcmp(q.tenant, own ? own : CTX_TENANT_DEFAULT) != 0) {
            api_fail(a, c, 403, "invalid_request_error", "context_access_denied", "tenant",
                     "Only the context API key (security.apiKeyRef) may name a tenant; this "
                     "caller's tenant is '%s'.",
                     own ? own : CTX_TENANT_DEFAULT);
            return true;
        }
    }

    const char *why = NULL;
    a->store = pl_bound_store(c->bound, mcp, &why);
    if (!a->store) {
        api_store_fail(a, CTX_EUNAVAIL, why ? why : "it could not be opened", NULL);
        return true;
    }

    if (a->op == API_LIST) {
        size_t limit = 100;
        if (q.limit) {
            char *end = NULL;
            errno = 0;
            unsigned long v = strtoul(q.limit, &end, 10);
            if (!*q.limit || *end || errno || q.limit[0] < '0' || q.limit[0] > '9' || v < 1 ||
                v > 1000) {
                api_fail(a, c, 400, "invalid_request_error", "invalid_value", "limit",
                         "Invalid 'limit': expected an integer from 1 to 1000, got '%s'.", q.limit);
                return true;
            }
            limit = v;
        }
        a->req.data = a;
        int rc = ctx_store_list(a->store, &a->req, a->tenant, limit,
                                q.cursor && *q.cursor ? q.cursor : NULL, on_listed);
        api_started(a, rc, "cursor");
        return true;
    }

    char *id = pct_decode(r->pool, id_raw, false);
    if (!id || !id_ok(id)) {
        api_fail(a, c, 400, "invalid_request_error", "invalid_conversation", "id",
                 "The conversation id in the path must be 1 to %d printable ASCII characters "
                 "without spaces once percent-decoded.",
                 CTX_ID_MAX);
        return true;
    }
    a->id = id;
    a->req.data = a;
    int rc;
    switch (a->op) {
    case API_DELETE:
        rc = ctx_store_delete(a->store, &a->req, a->tenant, a->id, on_deleted);
        break;
    case API_APPEND:
        start_append(a);
        return true;
    default:
        rc = ctx_store_get(a->store, &a->req, a->tenant, a->id, on_got);
        break;
    }
    api_started(a, rc, NULL);
    return true;
}
