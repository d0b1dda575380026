/* openai.c — the OpenAI-family adapter (types OpenAI, OpenAICompatible, HuggingFaceEndpoint,
 * CustomLocalModel, and AzureOpenAI, which differs only in its URL and key header): the
 * canonical body is already OpenAI's, so building the upstream request is replacing `model`,
 * merging configured parameters under the request, and adding the key. The dispatch on target
 * type for the other families' answers is in provider.c. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "core/json.h"
#include "core/utf8.h"
#include "providers/adapters.h"
#include "providers/gemini.h"

/* Azure OpenAI's GA api-version when config.apiVersion is not set */
#define AZURE_DEFAULT_API_VERSION "2024-10-21"

bool provider_is_local(const cfg_target *t)
{
    return t->type == TARGET_MOCK;
}

bool provider_takes_raw(const cfg_target *t)
{
    return t->type == TARGET_OPENAI || t->type == TARGET_OPENAI_COMPATIBLE ||
           t->type == TARGET_HUGGINGFACE || t->type == TARGET_CUSTOM_LOCAL ||
           t->type == TARGET_AZURE_OPENAI;
}

bool provider_splices(const cfg_target *t)
{
    return t->type == TARGET_ANTHROPIC;
}

int provider_build_messages_raw(const cfg_target *t, const provider_raw_body *b,
                                const char *request_id, arena *pool, provider_request *out,
                                char *err, size_t errlen)
{
    if (t->type != TARGET_ANTHROPIC) {
        snprintf(err, errlen, "target '%s' does not speak the Anthropic Messages API", t->name);
        return PROVIDER_EUNSUPPORTED;
    }
    return anthropic_build_native(t, b, request_id, pool, out, err, errlen);
}

bool provider_counts_tokens(const cfg_target *t)
{
    return t->type == TARGET_ANTHROPIC;
}

int provider_build_count_tokens(const cfg_target *t, const char *body, size_t len,
                                const char *request_id, arena *pool, provider_request *out,
                                char *err, size_t errlen)
{
    if (!provider_counts_tokens(t)) {
        snprintf(err, errlen, "target '%s' has no token-counting endpoint", t->name);
        return PROVIDER_EUNSUPPORTED;
    }
    return anthropic_build_count_tokens(t, body, len, request_id, pool, out, err, errlen);
}

bool provider_messages_usage(const char *body, size_t len, provider_usage *usage)
{
    return anthropic_answer_usage(body, len, usage);
}

static bool is_openai_family(cfg_target_type type)
{
    return type == TARGET_OPENAI || type == TARGET_OPENAI_COMPATIBLE ||
           type == TARGET_HUGGINGFACE || type == TARGET_CUSTOM_LOCAL || type == TARGET_AZURE_OPENAI;
}

static int check_family(const cfg_target *t, char *err, size_t errlen)
{
    if (is_openai_family(t->type)) return 0;
    if (t->type == TARGET_GEMINI) {
        snprintf(err, errlen,
                 "model target '%s' has type Gemini, whose requests are translated from the "
                 "parsed body, never forwarded as raw bytes",
                 t->name);
        return -1;
    }
    snprintf(err, errlen,
             "model target '%s' has type %s, which this gateway version cannot call yet", t->name,
             cfg_target_type_name(t->type));
    return -1;
}

/* {endpoint}/{path}; Azure: {endpoint}/openai/deployments/{deployment}/{path}?api-version=..,
 * the deployment defaulting to modelName (config validation keeps both a plain path segment) */
static const char *api_url(const cfg_target *t, const char *path, arena *pool)
{
    if (t->type != TARGET_AZURE_OPENAI)
        return arena_cat(pool, t->endpoint, "/", path, (char *)NULL);
    return arena_printf(pool, "%s/openai/deployments/%s/%s?api-version=%s", t->endpoint,
                        t->deployment ? t->deployment : t->model_name, path,
                        t->api_version ? t->api_version : AZURE_DEFAULT_API_VERSION);
}

static void chat_headers(const cfg_target *t, const char *request_id, arena *pool,
                         provider_request *out, const char *path)
{
    out->url = api_url(t, path, pool);
    size_t n = 0;
    out->headers[n++] = (upstream_header){"Content-Type", "application/json"};
    if (t->api_key && t->type == TARGET_AZURE_OPENAI)
        out->headers[n++] = (upstream_header){"api-key", t->api_key};
    else if (t->api_key)
        out->headers[n++] = (upstream_header){"Authorization",
                                              arena_cat(pool, "Bearer ", t->api_key, (char *)NULL)};
    if (request_id && *request_id)
        out->headers[n++] = (upstream_header){"X-Request-Id", request_id};
    out->n_headers = n;
}

/* false when v cannot be encoded (text that is not UTF-8, out of memory) */
static bool append_json(buf *out, json_t *v)
{
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (!s) return false;
    buf_puts(out, s);
    free(s);
    return true;
}

bool provider_raw_has_key(const provider_raw_body *b, const char *key)
{
    for (size_t i = 0; i < b->n_keys; i++)
        if (str_eq_c(b->keys[i], key)) return true;
    return false;
}

int provider_splice_raw(const cfg_target *t, const provider_raw_body *b, const char *extra,
                        provider_request *out, char *err, size_t errlen)
{
    bool rename = strcmp(t->model_name, b->model) != 0;
    bool add = extra && *extra;
    const char *k;
    json_t *v;
    json_object_foreach(t->parameters, k, v)
    {
        if (!provider_raw_has_key(b, k)) add = true;
    }
    if (!rename && !add) return 0; /* the client's bytes as they are */
    buf nb = BUF_INIT;
    buf_reserve(&nb, b->len + 64);
    bool ok = true;
    if (rename) {
        buf_append(&nb, b->body, b->model_start);
        json_t *m = json_string(t->model_name);
        ok = append_json(&nb, m);
        json_decref(m);
        buf_append(&nb, b->body + b->model_end, b->object_end - b->model_end);
    } else {
        buf_append(&nb, b->body, b->object_end);
    }
    json_object_foreach(t->parameters, k, v)
    {
        if (provider_raw_has_key(b, k)) continue; /* a key the request sets wins */
        buf_append(&nb, ",", 1);
        json_t *key = json_string(k);
        ok = ok && append_json(&nb, key);
        json_decref(key);
        buf_append(&nb, ":", 1);
        ok = ok && append_json(&nb, v);
    }
    if (!ok) {
        buf_free(&nb);
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        return -1;
    }
    if (extra) buf_puts(&nb, extra);
    buf_append(&nb, b->body + b->object_end, b->len - b->object_end);
    out->body_len = nb.len;
    out->body = buf_steal(&nb);
    return 0;
}

int provider_build_chat_raw(const cfg_target *t, const provider_raw_body *b, const char *request_id,
                            arena *pool, provider_request *out, char *err, size_t errlen)
{
    if (t->type == TARGET_ANTHROPIC) return anthropic_build_chat_raw(t, b, request_id, pool, out);
    memset(out, 0, sizeof *out);
    if (check_family(t, err, errlen)) return -1;
    chat_headers(t, request_id, pool, out, "chat/completions");
    /* a stream reports its usage only when asked: ask, unless the client or the target's
     * parameters already say what they want */
    bool add_usage = b->stream && !provider_raw_has_key(b, "stream_options") &&
                     !json_object_get(t->parameters, "stream_options");
    if (provider_splice_raw(t, b, add_usage ? ",\"stream_options\":{\"include_usage\":true}" : NULL,
                            out, err, errlen) != 0)
        return -1;
    out->stream_usage_added = add_usage;
    return 0;
}

int provider_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                        provider_request *out, char *err, size_t errlen)
{
    if (t->type == TARGET_MOCK) return mock_build_chat(t, body, request_id, pool, out, err, errlen);
    if (t->type == TARGET_ANTHROPIC)
        return anthropic_build_chat(t, body, request_id, pool, out, err, errlen);
    memset(out, 0, sizeof *out);
    if (t->type == TARGET_GEMINI)
        return gemini_build_chat(t, body, request_id, pool, out, err, errlen);
    if (check_family(t, err, errlen)) return -1;
    json_object_set_new(body, "model", json_string(t->model_name));
    const char *k;
    json_t *v;
    json_object_foreach(t->parameters, k, v)
    {
        if (!json_object_get(body, k)) json_object_set(body, k, v);
    }
    if (json_is_true(json_object_get(body, "stream")) && !json_object_get(body, "stream_options")) {
        json_object_set_new(body, "stream_options", json_pack("{s:b}", "include_usage", 1));
        out->stream_usage_added = true;
    }
    chat_headers(t, request_id, pool, out, "chat/completions");
    out->body = json_encode_fast(body, &out->body_len);
    if (!out->body) {
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        return -1;
    }
    return 0;
}

int provider_build_embeddings(const cfg_target *t, json_t *body, const char *request_id,
                              arena *pool, provider_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (t->type == TARGET_GEMINI)
        return gemini_build_embeddings(t, body, request_id, pool, out, err, errlen);
    if (!is_openai_family(t->type)) {
        snprintf(err, errlen, "model target '%s' has type %s, which has no embeddings API", t->name,
                 cfg_target_type_name(t->type));
        return PROVIDER_EUNSUPPORTED;
    }
    json_object_set_new(body, "model", json_string(t->model_name));
    /* only the parameters an embeddings request has: the others are chat defaults
     * (temperature, max_tokens) that /embeddings would refuse */
    static const char *const keys[] = {"dimensions", "encoding_format", "user"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        json_t *v = json_object_get(t->parameters, keys[i]);
        if (v && !json_object_get(body, keys[i])) json_object_set(body, keys[i], v);
    }
    chat_headers(t, request_id, pool, out, "embeddings");
    out->body = json_encode_fast(body, &out->body_len);
    if (!out->body) {
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        return PROVIDER_EUNSUPPORTED;
    }
    return 0;
}

upstream_opts provider_upstream_opts(const cfg_target *t, const provider_request *pr,
                                     const char *body, size_t body_len)
{
    return (upstream_opts){
        .method = "POST",
        .url = pr->url,
        .headers = pr->headers,
        .n_headers = pr->n_headers,
        .body = body,
        .body_len = body_len,
        .body_borrowed = true,
        .connect_timeout_ms = (unsigned)t->connect_timeout_s * 1000u,
        .first_byte_timeout_ms = (unsigned)t->first_token_timeout_s * 1000u,
        .total_timeout_ms = (unsigned)t->total_timeout_s * 1000u,
        .local = pr->local,
        .insecure_skip_verify = t->tls_insecure,
        .tls_ca_pem = t->tls_ca_pem,
        .tls_cert_pem = t->tls_cert_pem,
        .tls_key_pem = t->tls_key_pem,
        .tls_server_name = t->tls_server_name,
    };
}

/* A count is a non-negative integer; anything else is no count. */
static bool count_of(json_t *v, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
    *out = (uint64_t)json_integer_value(v);
    return true;
}

static void usage_from_json(json_t *usage, provider_usage *u)
{
    if (!json_is_object(usage)) return;
    uint64_t p = 0, c = 0;
    bool hp = count_of(json_object_get(usage, "prompt_tokens"), &p);
    bool hc = count_of(json_object_get(usage, "completion_tokens"), &c);
    if (!hp && !hc) return;
    u->present = true;
    u->prompt_tokens = p;
    u->completion_tokens = c;
}

/* The usage object read with yajl's parse events, no document built: prompt_tokens and
 * completion_tokens at its top level, when they are non-negative integers. The parse stops at
 * the end of the object (the rest of the answer is not read). */
typedef struct usage_scan {
    int depth;    /* objects and arrays open */
    int key;      /* the top-level key just read: 1 prompt_tokens, 2 completion_tokens, 0 other */
    bool object;  /* the value is an object */
    bool closed;  /* its closing brace was read */
    bool have[2]; /* prompt, completion found as integers */
    uint64_t v[2];
} usage_scan;

static int us_start_map(void *ctx)
{
    usage_scan *u = ctx;
    if (u->depth == 0) u->object = true;
    u->depth++;
    u->key = 0;
    return 1;
}

static int us_end(void *ctx)
{
    usage_scan *u = ctx;
    if (--u->depth > 0) return 1;
    u->closed = true;
    return 0; /* the object is complete: stop here */
}

static int us_start_array(void *ctx)
{
    usage_scan *u = ctx;
    if (u->depth == 0) return 0; /* not an object */
    u->depth++;
    return 1;
}

static int us_key(void *ctx, const unsigned char *k, size_t n)
{
    usage_scan *u = ctx;
    if (u->depth != 1) return 1;
    u->key = n == 13 && memcmp(k, "prompt_tokens", 13) == 0       ? 1
             : n == 17 && memcmp(k, "completion_tokens", 17) == 0 ? 2
                                                                  : 0;
    return 1;
}

static int us_number(void *ctx, const char *num, size_t n)
{
    usage_scan *u = ctx;
    if (u->depth == 0) return 0; /* not an object */
    if (u->depth != 1 || !u->key) return 1;
    /* an integer in JSON's syntax (no sign, fraction or exponent) that fits */
    uint64_t v = 0;
    bool ok = n > 0 && n <= 19;
    for (size_t i = 0; ok && i < n; i++) {
        ok = num[i] >= '0' && num[i] <= '9';
        v = v * 10 + (uint64_t)(num[i] - '0');
    }
    if (ok) {
        u->have[u->key - 1] = true;
        u->v[u->key - 1] = v;
    }
    u->key = 0;
    return 1;
}

static int us_scalar(usage_scan *u)
{
    if (u->depth == 0) return 0; /* not an object */
    if (u->depth == 1) u->key = 0;
    return 1;
}

static int us_null(void *ctx)
{
    return us_scalar(ctx);
}

static int us_bool(void *ctx, int b)
{
    (void)b;
    return us_scalar(ctx);
}

static int us_string(void *ctx, const unsigned char *s, size_t n)
{
    (void)s, (void)n;
    return us_scalar(ctx);
}

static const yajl_callbacks usage_callbacks = {
    .yajl_null = us_null,
    .yajl_boolean = us_bool,
    .yajl_number = us_number,
    .yajl_string = us_string,
    .yajl_start_map = us_start_map,
    .yajl_map_key = us_key,
    .yajl_end_map = us_end,
    .yajl_start_array = us_start_array,
    .yajl_end_array = us_end,
};

/* true when text (from a usage value on) held a complete object: *u says what it had */
static bool usage_read(const char *text, size_t len, provider_usage *out)
{
    usage_scan u = {0};
    yajl_handle h = json_sax_new(&usage_callbacks, &u);
    if (!h) return false;
    yajl_parse(h, (const unsigned char *)text, len);
    json_sax_free(h);
    if (!u.object || !u.closed) return false;
    if (u.have[0] || u.have[1]) {
        out->present = true;
        out->prompt_tokens = u.have[0] ? u.v[0] : 0;
        out->completion_tokens = u.have[1] ? u.v[1] : 0;
    }
    return true;
}

/* The last `"usage":` key of the answer, read on its own: OpenAI-family answers put the
 * top-level usage object last, and reading ~60 bytes with parse events instead of building the
 * whole answer is what keeps usage accounting off the profile. A key inside a string cannot
 * match: its quotes would be escaped. Falls back to a full parse when what follows the key is
 * not an object with the counts. */
void provider_parse_usage(const char *body, size_t len, provider_usage *u)
{
    static const char key[] = "\"usage\"";
    const char *found = NULL;
    for (const char *p = body; p && (size_t)(p - body) < len;) {
        const char *hit = memmem(p, len - (size_t)(p - body), key, sizeof key - 1);
        if (!hit) break;
        found = hit;
        p = hit + 1;
    }
    if (found) {
        const char *v = found + sizeof key - 1;
        const char *end = body + len;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r'))
            v++;
        if (v < end && *v == ':') {
            v++;
            if (usage_read(v, (size_t)(end - v), u) && u->present) return;
        }
    }
    json_t *doc = json_loadb(body, len, 0, NULL);
    if (!doc) return;
    usage_from_json(json_object_get(doc, "usage"), u);
    json_decref(doc);
}

void provider_parse_stream_usage(const char *data, size_t len, provider_usage *u)
{
    /* only events that mention usage with a value are worth a parse */
    if (!memmem(data, len, "\"usage\":{", 9) && !memmem(data, len, "\"usage\": {", 10)) return;
    const char *json = memmem(data, len, "{", 1);
    if (!json) return;
    size_t n = len - (size_t)(json - data);
    while (n && (json[n - 1] == '\n' || json[n - 1] == '\r'))
        n--;
    provider_parse_usage(json, n, u);
}

void provider_error_message(const char *body, size_t len, char *out, size_t outlen)
{
    out[0] = 0;
    if (!body || !len || outlen == 0) return;
    json_t *doc = json_loadb(body, len, 0, NULL);
    if (doc) {
        json_t *e = json_object_get(doc, "error");
        json_t *m = json_is_object(e) ? json_object_get(e, "message") : NULL;
        if (!m && json_is_string(e)) m = e;
        if (!m) m = json_object_get(doc, "message");
        if (json_is_string(m)) {
            /* jansson checked the UTF-8; cut at a character boundary, stop at a NUL */
            const char *v = json_string_value(m);
            size_t n = utf8_prefix(v, strlen(v), outlen - 1);
            memcpy(out, v, n);
            out[n] = 0;
        }
        json_decref(doc);
        if (out[0]) return;
    }
    /* not an error document: its printable ASCII, other bytes as spaces */
    size_t n = len < outlen - 1 ? len : outlen - 1;
    for (size_t i = 0; i < n; i++)
        out[i] = (body[i] >= 0x20 && body[i] < 0x7f) ? body[i] : ' ';
    out[n] = 0;
}

const char *provider_rate_limit_type(const char *body, size_t len)
{
    const char *type = "requests";
    json_t *doc = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const char *t = json_string_value(json_object_get(json_object_get(doc, "error"), "type"));
    if (t && strcmp(t, "tokens") == 0) type = "tokens";
    if (t && strcmp(t, "insufficient_quota") == 0) type = "insufficient_quota";
    json_decref(doc);
    return type;
}
