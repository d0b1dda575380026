/* record.c — the one codec every context backend stores through (see record.h and
 * docs/context-store.md for both encodings and the sealing format).
 *
 * Stored bytes are either plaintext (JSON starting with '{', or Text starting with the
 * CTX_TEXT_MAGIC line) or sealed: version byte, 12-byte nonce, AES-256-GCM ciphertext of the
 * plaintext, 16-byte tag, with "ctxgate-record\0<tenant>\0<id>" as associated data so a sealed
 * record copied to another key fails authentication instead of being served. */
#include "context/record.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CTX_TEXT_MAGIC "ctxgate-record text 1"
#define NONCE_LEN 12
#define TAG_LEN 16

static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail(int code, char *err, size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

ctx_record *ctx_record_new(const char *id)
{
    ctx_record *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->id = strdup(id ? id : "");
    r->messages = json_array();
    r->metadata = json_object();
    r->schema_version = CTX_SCHEMA_VERSION;
    return r;
}

ctx_record *ctx_record_share(const ctx_record *r)
{
    ctx_record *c = calloc(1, sizeof(*c));
    if (!c) abort();
    *c = *r;
    c->id = strdup(r->id ? r->id : "");
    c->persona = r->persona ? strdup(r->persona) : NULL;
    c->summary = r->summary ? strdup(r->summary) : NULL;
    c->messages = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(r->messages, i, m)
    {
        json_array_append(c->messages, m);
    }
    c->metadata = r->metadata ? json_incref(r->metadata) : json_object();
    return c;
}

void ctx_record_free(ctx_record *r)
{
    if (!r) return;
    free(r->id);
    free(r->persona);
    free(r->summary);
    json_decref(r->messages);
    json_decref(r->metadata);
    free(r);
}

static bool str_same(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

bool ctx_record_equal(const ctx_record *a, const ctx_record *b)
{
    return str_same(a->id, b->id) && a->version == b->version && str_same(a->persona, b->persona) &&
           str_same(a->summary, b->summary) && json_equal(a->messages, b->messages) &&
           json_equal(a->metadata, b->metadata) && a->created_at == b->created_at &&
           a->updated_at == b->updated_at && a->schema_version == b->schema_version;
}

/* ---- validation ---- */

int ctx_id_validate(const char *what, const char *s, bool tenant, char *err, size_t errlen)
{
    if (!s || !*s) return fail(CTX_EINVAL, err, errlen, "%s must not be empty", what);
    size_t n = strlen(s);
    if (n > CTX_ID_MAX)
        return fail(CTX_EINVAL, err, errlen, "%s is %zu bytes long; the limit is %d", what, n,
                    CTX_ID_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x21 || ch > 0x7e)
            return fail(CTX_EINVAL, err, errlen,
                        "%s contains a non-printable or space byte 0x%02x at offset %zu; use "
                        "printable ASCII",
                        what, ch, i);
        if (tenant && ch == ':')
            return fail(CTX_EINVAL, err, errlen, "%s must not contain ':'", what);
    }
    return 0;
}

int ctx_messages_validate(const json_t *messages, char *err, size_t errlen)
{
    static const char *const roles[] = {"system", "user",      "assistant",
                                        "tool",   "developer", "function"};
    if (!json_is_array(messages) || json_array_size(messages) == 0)
        return fail(CTX_EINVAL, err, errlen, "messages must be a non-empty JSON array");
    size_t i;
    const json_t *m;
    json_array_foreach(messages, i, m)
    {
        if (!json_is_object(m))
            return fail(CTX_EINVAL, err, errlen, "messages[%zu] must be an object", i);
        const char *role = json_string_value(json_object_get(m, "role"));
        bool known = false;
        for (size_t k = 0; role && k < sizeof(roles) / sizeof(roles[0]); k++)
            known |= strcmp(role, roles[k]) == 0;
        if (!known)
            return fail(CTX_EINVAL, err, errlen,
                        "messages[%zu].role must be one of system, user, assistant, tool, "
                        "developer, function",
                        i);
        const json_t *content = json_object_get(m, "content");
        if (content && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content))
            return fail(CTX_EINVAL, err, errlen,
                        "messages[%zu].content must be a string, an array of parts or null", i);
        const json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_array(tc))
            return fail(CTX_EINVAL, err, errlen, "messages[%zu].tool_calls must be an array", i);
        const json_t *tcid = json_object_get(m, "tool_call_id");
        if (tcid && !json_is_string(tcid))
            return fail(CTX_EINVAL, err, errlen, "messages[%zu].tool_call_id must be a string", i);
        const json_t *ts = json_object_get(m, "ts");
        if (ts && !json_is_integer(ts))
            return fail(CTX_EINVAL, err, errlen,
                        "messages[%zu].ts must be an integer (Unix milliseconds)", i);
    }
    return 0;
}

int ctx_messages_validate_append(const json_t *messages, char *err, size_t errlen)
{
    int rc = ctx_messages_validate(messages, err, errlen);
    if (rc != 0) return rc;
    size_t i, j;
    const json_t *m, *x;
    json_array_foreach(messages, i, m)
    {
        const json_t *content = json_object_get(m, "content");
        json_array_foreach(json_is_array(content) ? content : NULL, j, x)
        {
            if (!json_is_object(x) || !json_is_string(json_object_get(x, "type")))
                return fail(CTX_EINVAL, err, errlen,
                            "messages[%zu].content[%zu] must be a content part, an object with a "
                            "string type",
                            i, j);
        }
        json_array_foreach(json_object_get(m, "tool_calls"), j, x)
        {
            const json_t *fn = json_object_get(x, "function");
            if (!json_is_object(x) || !json_is_string(json_object_get(x, "id")) ||
                !json_is_string(json_object_get(x, "type")) ||
                !json_is_string(json_object_get(fn, "name")))
                return fail(CTX_EINVAL, err, errlen,
                            "messages[%zu].tool_calls[%zu] must be a tool call that can be "
                            "replayed: an object with a string id, a string type and "
                            "function.name",
                            i, j);
        }
    }
    return 0;
}

/* ---- JSON encoding ---- */

static json_t *record_to_json(const ctx_record *r)
{
    json_t *o = json_object();
    json_object_set_new(o, "schemaVersion", json_integer(CTX_SCHEMA_VERSION));
    json_object_set_new(o, "id", json_string(r->id));
    json_object_set_new(o, "version", json_integer((json_int_t)r->version));
    json_object_set_new(o, "persona", r->persona ? json_string(r->persona) : json_null());
    json_object_set_new(o, "summary", r->summary ? json_string(r->summary) : json_null());
    json_object_set(o, "messages", r->messages);
    json_object_set(o, "metadata", r->metadata);
    json_object_set_new(o, "createdAt", json_integer(r->created_at));
    json_object_set_new(o, "updatedAt", json_integer(r->updated_at));
    return o;
}

static char *opt_dup(const json_t *v)
{
    const char *s = json_string_value(v);
    return s ? strdup(s) : NULL;
}

/* v0: {"turns":[{role, content, ...}], "summary"?} — no id, version, ts or times; those come
 * from the key and the backend's index. */
static int upgrade_v0(json_t *o, const char *id, const ctx_record_meta *meta, ctx_record **out,
                      char *err, size_t errlen)
{
    json_t *turns = json_object_get(o, "turns");
    if (!json_is_array(turns))
        return fail(CTX_ECORRUPT, err, errlen,
                    "record for conversation '%s' has no schemaVersion and no \"turns\" array; "
                    "it is not a ctxgate record",
                    id);
    json_t *msgs = json_array();
    size_t i;
    json_t *t;
    json_array_foreach(turns, i, t)
    {
        json_t *m = json_deep_copy(t);
        if (json_is_object(m) && !json_object_get(m, "ts"))
            json_object_set_new(m, "ts", json_integer(meta ? meta->updated_at : 0));
        json_array_append_new(msgs, m);
    }
    char vmsg[256];
    if (ctx_messages_validate(msgs, vmsg, sizeof(vmsg)) != 0 && json_array_size(msgs) > 0) {
        json_decref(msgs);
        return fail(CTX_ECORRUPT, err, errlen, "v0 record for conversation '%s': %s", id, vmsg);
    }
    ctx_record *r = ctx_record_new(id);
    json_decref(r->messages);
    r->messages = msgs;
    r->summary = opt_dup(json_object_get(o, "summary"));
    if (meta) {
        r->version = meta->version;
        r->created_at = meta->created_at;
        r->updated_at = meta->updated_at;
    }
    *out = r;
    return 0;
}

static int record_from_json(json_t *o, const char *id, const ctx_record_meta *meta,
                            ctx_record **out, char *err, size_t errlen)
{
    if (!json_is_object(o))
        return fail(CTX_ECORRUPT, err, errlen, "record for conversation '%s' is not an object", id);
    json_t *sv = json_object_get(o, "schemaVersion");
    if (!sv) return upgrade_v0(o, id, meta, out, err, errlen);
    if (!json_is_integer(sv) || json_integer_value(sv) < 1)
        return fail(CTX_ECORRUPT, err, errlen,
                    "record for conversation '%s' has an invalid schemaVersion", id);
    if (json_integer_value(sv) > CTX_SCHEMA_VERSION)
        return fail(CTX_ECORRUPT, err, errlen,
                    "record for conversation '%s' has schemaVersion %lld, written by a newer "
                    "ctxgate; this build reads up to %d",
                    id, (long long)json_integer_value(sv), CTX_SCHEMA_VERSION);
    json_t *msgs = json_object_get(o, "messages");
    json_t *md = json_object_get(o, "metadata");
    json_t *ver = json_object_get(o, "version");
    json_t *ca = json_object_get(o, "createdAt"), *ua = json_object_get(o, "updatedAt");
    json_t *rid = json_object_get(o, "id");
    json_t *persona = json_object_get(o, "persona"), *summary = json_object_get(o, "summary");
    if (!json_is_array(msgs) || (md && !json_is_object(md)) || !json_is_integer(ver) ||
        json_integer_value(ver) < 0 || !json_is_integer(ca) || !json_is_integer(ua) ||
        !json_is_string(rid) || (persona && !json_is_null(persona) && !json_is_string(persona)) ||
        (summary && !json_is_null(summary) && !json_is_string(summary)))
        return fail(CTX_ECORRUPT, err, errlen,
                    "record for conversation '%s' is missing or has mistyped fields (messages, "
                    "metadata, version, createdAt, updatedAt, id)",
                    id);
    if (strcmp(json_string_value(rid), id) != 0)
        return fail(CTX_ECORRUPT, err, errlen,
                    "record stored under conversation '%s' belongs to conversation '%s'", id,
                    json_string_value(rid));
    size_t i;
    json_t *m;
    json_array_foreach(
        msgs, i,
        m) if (!json_is_object(m) ||
               !json_is_string(json_object_get(
                   m,
                   "role"))) return fail(CTX_ECORRUPT, err, errlen,
                                         "record for conversation '%s': messages[%zu] has no role",
                                         id, i);
    ctx_record *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->id = strdup(id);
    r->version = (uint64_t)json_integer_value(ver);
    r->persona = opt_dup(persona);
    r->summary = opt_dup(summary);
    r->messages = json_incref(msgs);
    r->metadata = md ? json_incref(md) : json_object();
    r->created_at = json_integer_value(ca);
    r->updated_at = json_integer_value(ua);
    r->schema_version = CTX_SCHEMA_VERSION;
    *out = r;
    return 0;
}

/* ---- Text encoding ----
 * One field per line, "<name> <value>". Free text is escaped: backslash as \\, LF as \n,
 * CR as \r; JSON values (metadata, non-string content, tool_calls, extra keys) are compact JSON,
 * which never contains a raw newline. A message starts with "message <role>" and ends at the
 * next "message" or "end". */

static void put_escaped(buf *b, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\')
            buf_puts(b, "\\\\");
        else if (*s == '\n')
            buf_puts(b, "\\n");
        else if (*s == '\r')
            buf_puts(b, "\\r");
        else
            buf_append(b, s, 1);
    }
}

static void put_field(buf *b, const char *name, const char *value)
{
    buf_puts(b, name);
    buf_puts(b, " ");
    put_escaped(b, value);
    buf_puts(b, "\n");
}

static void put_json(buf *b, const char *name, const json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_PRESERVE_ORDER);
    buf_puts(b, name);
    buf_puts(b, " ");
    buf_puts(b, s ? s : "null");
    buf_puts(b, "\n");
    free(s);
}

int ctx_record_to_text(const ctx_record *r, buf *b, char *err, size_t errlen)
{
    buf_puts(b, CTX_TEXT_MAGIC "\n");
    buf_printf(b, "schemaVersion %d\n", CTX_SCHEMA_VERSION);
    put_field(b, "id", r->id);
    buf_printf(b, "version %llu\n", (unsigned long long)r->version);
    buf_printf(b, "createdAt %lld\n", (long long)r->created_at);
    buf_printf(b, "updatedAt %lld\n", (long long)r->updated_at);
    if (r->persona) put_field(b, "persona", r->persona);
    if (r->summary) put_field(b, "summary", r->summary);
    put_json(b, "metadata", r->metadata);
    size_t i;
    json_t *m;
    json_array_foreach(r->messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) return fail(CTX_EINVAL, err, errlen, "messages[%zu] has no role", i);
        put_field(b, "message", role);
        json_t *extra = json_object();
        const char *k;
        json_t *v;
        json_object_foreach(m, k, v)
        {
            if (strcmp(k, "role") == 0) continue;
            if (strcmp(k, "content") == 0 && json_is_string(v))
                put_field(b, "content", json_string_value(v));
            else if (strcmp(k, "content") == 0)
                put_json(b, "content-json", v);
            else if (strcmp(k, "tool_call_id") == 0 && json_is_string(v))
                put_field(b, "tool_call_id", json_string_value(v));
            else if (strcmp(k, "tool_calls") == 0)
                put_json(b, "tool_calls", v);
            else if (strcmp(k, "ts") == 0 && json_is_integer(v))
                buf_printf(b, "ts %lld\n", (long long)json_integer_value(v));
            else
                json_object_set(extra, k, v);
        }
        if (json_object_size(extra) > 0) put_json(b, "extra", extra);
        json_decref(extra);
    }
    buf_puts(b, "end\n");
    return 0;
}

static char *unescape(const char *p, size_t n, bool *ok)
{
    char *o = malloc(n + 1);
    if (!o) abort();
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] != '\\') {
            o[j++] = p[i];
            continue;
        }
        if (++i == n) {
            *ok = false;
            break;
        }
        if (p[i] == '\\')
            o[j++] = '\\';
        else if (p[i] == 'n')
            o[j++] = '\n';
        else if (p[i] == 'r')
            o[j++] = '\r';
        else
            *ok = false;
    }
    o[j] = 0;
    if (memchr(p, 0, n)) *ok = false;
    return o;
}

/* A text field's value as a JSON string: unescaped, and NULL (with *ok false) unless it is valid
 * UTF-8, as every string of the JSON encoding must be; jansson does the UTF-8 check. */
static json_t *unescape_json(const char *p, size_t n, bool *ok)
{
    char *s = unescape(p, n, ok);
    json_t *v = *ok ? json_string(s) : NULL;
    free(s);
    if (!v) *ok = false;
    return v;
}

static bool parse_i64(const char *p, size_t n, long long *out)
{
    char tmp[32];
    if (n == 0 || n >= sizeof(tmp)) return false;
    memcpy(tmp, p, n);
    tmp[n] = 0;
    char *end;
    *out = strtoll(tmp, &end, 10);
    return *end == 0;
}

int ctx_record_from_text(const char *p, size_t n, ctx_record **out, char *err, size_t errlen)
{
    size_t ml = strlen(CTX_TEXT_MAGIC);
    if (n < ml + 1 || memcmp(p, CTX_TEXT_MAGIC "\n", ml + 1) != 0)
        return fail(CTX_ECORRUPT, err, errlen, "text record does not start with '%s'",
                    CTX_TEXT_MAGIC);
    ctx_record *r = ctx_record_new("");
    json_t *msg = NULL; /* message being filled (owned by r->messages) */
    bool have_end = false, have_id = false, have_version = false;
    size_t pos = ml + 1, lineno = 1;
    int rc = 0;
    while (pos < n && !have_end) {
        lineno++;
        const char *line = p + pos;
        const char *nl = memchr(line, '\n', n - pos);
        if (!nl) {
            rc = fail(CTX_ECORRUPT, err, errlen, "text record line %zu is not terminated", lineno);
            break;
        }
        size_t len = (size_t)(nl - line);
        pos += len + 1;
        const char *sp = memchr(line, ' ', len);
        size_t klen = sp ? (size_t)(sp - line) : len;
        const char *val = sp ? sp + 1 : line + len;
        size_t vlen = sp ? len - klen - 1 : 0;
#define KEY(s) (klen == sizeof(s) - 1 && memcmp(line, s, klen) == 0)
        bool ok = true;
        long long num = 0;
        if (KEY("end")) {
            have_end = true;
        } else if (KEY("schemaVersion")) {
            ok = parse_i64(val, vlen, &num) && num >= 1;
            if (ok && num > CTX_SCHEMA_VERSION) {
                rc = fail(CTX_ECORRUPT, err, errlen,
                          "text record has schemaVersion %lld; this build reads up to %d", num,
                          CTX_SCHEMA_VERSION);
                break;
            }
        } else if (KEY("id") || KEY("persona") || KEY("summary")) {
            json_t *v = unescape_json(val, vlen, &ok);
            char **dst = KEY("id") ? &r->id : KEY("persona") ? &r->persona : &r->summary;
            have_id |= KEY("id") && ok;
            if (ok) {
                free(*dst);
                *dst = strdup(json_string_value(v));
                if (!*dst) abort();
            }
            json_decref(v);
        } else if (KEY("version")) {
            ok = parse_i64(val, vlen, &num) && num >= 0;
            r->version = (uint64_t)num;
            have_version = ok;
        } else if (KEY("createdAt") || KEY("updatedAt")) {
            ok = parse_i64(val, vlen, &num);
            *(KEY("createdAt") ? &r->created_at : &r->updated_at) = num;
        } else if (KEY("message")) {
            json_t *role = unescape_json(val, vlen, &ok);
            msg = json_object();
            if (ok) json_object_set_new(msg, "role", role);
            json_array_append_new(r->messages, msg);
        } else if (KEY("metadata") || KEY("content-json") || KEY("tool_calls") || KEY("extra")) {
            json_t *v = json_loadb(val, vlen, JSON_DECODE_ANY, NULL);
            if (!v)
                ok = false;
            else if (KEY("metadata") && json_is_object(v)) {
                json_decref(r->metadata);
                r->metadata = v;
                v = NULL;
            } else if (!msg || KEY("metadata")) {
                ok = false;
            } else if (KEY("extra")) {
                ok = json_is_object(v) && json_object_update(msg, v) == 0;
            } else {
                json_object_set(msg, KEY("tool_calls") ? "tool_calls" : "content", v);
            }
            json_decref(v);
        } else if (KEY("content") || KEY("tool_call_id")) {
            json_t *v = unescape_json(val, vlen, &ok);
            if (msg && ok)
                json_object_set_new(msg, KEY("content") ? "content" : "tool_call_id", v);
            else
                json_decref(v);
            ok = ok && msg;
        } else if (KEY("ts")) {
            ok = msg && parse_i64(val, vlen, &num);
            if (ok) json_object_set_new(msg, "ts", json_integer(num));
        } else {
            ok = false;
        }
#undef KEY
        if (!ok) {
            rc = fail(CTX_ECORRUPT, err, errlen, "text record line %zu ('%.*s') is malformed",
                      lineno, (int)(klen > 40 ? 40 : klen), line);
            break;
        }
    }
    if (rc == 0 && (!have_end || !have_id || !have_version))
        rc = fail(CTX_ECORRUPT, err, errlen,
                  "text record is truncated (missing id, version or end)");
    if (rc == 0 && pos != n)
        rc = fail(CTX_ECORRUPT, err, errlen, "text record has trailing bytes after 'end'");
    if (rc != 0) {
        ctx_record_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- sealing ---- */

static void aad_build(buf *b, const char *tenant, const char *id)
{
    buf_append(b, "ctxgate-record", sizeof("ctxgate-record"));
    buf_append(b, tenant, strlen(tenant) + 1);
    buf_puts(b, id);
}

static int seal(const ctx_codec *c, const char *tenant, const char *id, const buf *plain, buf *out,
                char *err, size_t errlen)
{
    unsigned char nonce[NONCE_LEN];
    if (RAND_bytes(nonce, sizeof(nonce)) != 1)
        return fail(CTX_EUNAVAIL, err, errlen, "no randomness for an encryption nonce");
    buf aad = BUF_INIT;
    aad_build(&aad, tenant, id);
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    size_t start = out->len;
    buf_reserve(out, 1 + NONCE_LEN + plain->len + TAG_LEN + 16);
    unsigned char *o = (unsigned char *)out->data + start;
    o[0] = CTX_SEAL_VERSION;
    memcpy(o + 1, nonce, NONCE_LEN);
    int len = 0, fin = 0,
        ok = x && EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
             EVP_EncryptInit_ex(x, NULL, NULL, c->key, nonce) == 1 &&
             EVP_EncryptUpdate(x, NULL, &len, (unsigned char *)aad.data, (int)aad.len) == 1 &&
             EVP_EncryptUpdate(x, o + 1 + NONCE_LEN, &len, (unsigned char *)plain->data,
                               (int)plain->len) == 1 &&
             EVP_EncryptFinal_ex(x, o + 1 + NONCE_LEN + len, &fin) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, TAG_LEN, o + 1 + NONCE_LEN + len + fin) ==
                 1;
    EVP_CIPHER_CTX_free(x);
    buf_free(&aad);
    if (!ok) return fail(CTX_EUNAVAIL, err, errlen, "AES-256-GCM encryption failed (OpenSSL)");
    out->len = start + 1 + NONCE_LEN + (size_t)len + (size_t)fin + TAG_LEN;
    out->data[out->len] = 0;
    return 0;
}

static int unseal(const ctx_codec *c, const char *tenant, const char *id, const unsigned char *d,
                  size_t n, buf *plain, char *err, size_t errlen)
{
    if (!c->encrypt)
        return fail(CTX_ECORRUPT, err, errlen,
                    "record for conversation '%s' (tenant '%s') is encrypted but this store has "
                    "no encryption key; set spec.storage.encryption",
                    id, tenant);
    if (n < 1 + NONCE_LEN + TAG_LEN)
        return fail(CTX_ECORRUPT, err, errlen,
                    "encrypted record for conversation '%s' is truncated (%zu bytes)", id, n);
    size_t clen = n - 1 - NONCE_LEN - TAG_LEN;
    buf aad = BUF_INIT;
    aad_build(&aad, tenant, id);
    buf_reserve(plain, clen + 16);
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int len = 0, fin = 0;
    int ok = x && EVP_DecryptInit_ex(x, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) == 1 &&
             EVP_DecryptInit_ex(x, NULL, NULL, c->key, d + 1) == 1 &&
             EVP_DecryptUpdate(x, NULL, &len, (unsigned char *)aad.data, (int)aad.len) == 1 &&
             EVP_DecryptUpdate(x, (unsigned char *)plain->data, &len, d + 1 + NONCE_LEN,
                               (int)clen) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, TAG_LEN,
                                 (void *)(d + 1 + NONCE_LEN + clen)) == 1 &&
             EVP_DecryptFinal_ex(x, (unsigned char *)plain->data + len, &fin) == 1;
    EVP_CIPHER_CTX_free(x);
    buf_free(&aad);
    if (!ok)
        return fail(CTX_ECORRUPT, err, errlen,
                    "encrypted record for conversation '%s' (tenant '%s') failed authentication: "
                    "wrong encryption key, or the record was copied from another conversation",
                    id, tenant);
    plain->len = (size_t)len + (size_t)fin;
    plain->data[plain->len] = 0;
    return 0;
}

int ctx_record_encode(const ctx_codec *c, const char *tenant, const char *id, const ctx_record *r,
                      buf *out, char *err, size_t errlen)
{
    buf plain = BUF_INIT;
    int rc = 0;
    if (c->text) {
        rc = ctx_record_to_text(r, &plain, err, errlen);
    } else {
        json_t *o = record_to_json(r);
        char *s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
        json_decref(o);
        if (!s)
            rc = fail(CTX_EINVAL, err, errlen, "record for '%s' cannot be serialized", id);
        else
            buf_puts(&plain, s);
        free(s);
    }
    if (rc == 0) {
        if (c->encrypt)
            rc = seal(c, tenant, id, &plain, out, err, errlen);
        else
            buf_append(out, plain.data, plain.len);
    }
    buf_free(&plain);
    return rc;
}

int ctx_record_decode(const ctx_codec *c, const char *tenant, const char *id, const void *data,
                      size_t len, const ctx_record_meta *meta, ctx_record **out, char *err,
                      size_t errlen)
{
    const unsigned char *d = data;
    *out = NULL;
    if (len == 0)
        return fail(CTX_ECORRUPT, err, errlen, "record for conversation '%s' is empty", id);
    buf plain = BUF_INIT;
    const char *p = data;
    size_t n = len;
    int rc = 0;
    if (d[0] == CTX_SEAL_VERSION) {
        rc = unseal(c, tenant, id, d, len, &plain, err, errlen);
        p = plain.data;
        n = plain.len;
    } else if (d[0] != '{' && d[0] != 'c') {
        rc = fail(CTX_ECORRUPT, err, errlen,
                  "record for conversation '%s' has an unknown encoding (first byte 0x%02x)", id,
                  d[0]);
    }
    if (rc == 0 && (n == 0 || !p)) {
        rc = fail(CTX_ECORRUPT, err, errlen, "record for conversation '%s' is empty", id);
    } else if (rc == 0 && p[0] == '{') {
        json_error_t je;
        json_t *o = json_loadb(p, n, 0, &je);
        if (!o)
            rc = fail(CTX_ECORRUPT, err, errlen,
                      "record for conversation '%s' is not valid JSON: %s at byte %d", id, je.text,
                      je.position);
        else
            rc = record_from_json(o, id, meta, out, err, errlen);
        json_decref(o);
    } else if (rc == 0) {
        rc = ctx_record_from_text(p, n, out, err, errlen);
        if (rc == 0 && strcmp((*out)->id, id) != 0) {
            rc = fail(CTX_ECORRUPT, err, errlen,
                      "record stored under conversation '%s' belongs to conversation '%s'", id,
                      (*out)->id);
            ctx_record_free(*out);
            *out = NULL;
        }
    }
    buf_free(&plain);
    return rc;
}
