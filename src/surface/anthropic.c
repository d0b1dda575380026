/* anthropic.c — the Anthropic Messages API as a client surface (see anthropic.h): the client's
 * /messages and /messages/count_tokens bodies checked field by field and translated into the
 * canonical OpenAI chat document, and the canonical answer (whole, chunk by chunk, or an error)
 * translated back into Anthropic's Message, event stream and error shapes. The mapping and its
 * choices are written down for users in docs/anthropic-api.md. */
#include "surface/anthropic.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/utf8.h"

/* ---------------------------------------------------------------------------------------------
 * Request: validation and translation */

/* snprintf through a va_list: field paths and messages are cut at their buffer's end on
 * purpose (a client's 100-character key still gets a refusal), which is what GCC's
 * -Wformat-truncation would flag at every direct call. */
static void fmt_into(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fmt_into(char *out, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, n, fmt, ap);
    va_end(ap);
}

static json_t *refuse(anthropic_refusal *why, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Fills why (param, and a message that starts with the param as Anthropic's do) and returns
 * NULL, so a checker can `return refuse(...)`. */
static json_t *refuse(anthropic_refusal *why, const char *param, const char *fmt, ...)
{
    fmt_into(why->param, sizeof why->param, "%s", param);
    char sentence[sizeof why->message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(sentence, sizeof sentence, fmt, ap);
    va_end(ap);
    if (*param)
        fmt_into(why->message, sizeof why->message, "%s: %s", param, sentence);
    else
        fmt_into(why->message, sizeof why->message, "%s", sentence);
    /* a cut may split a character of a client's key or value: keep both valid UTF-8 */
    why->param[utf8_check(why->param, strlen(why->param))] = 0;
    why->message[utf8_check(why->message, strlen(why->message))] = 0;
    return NULL;
}

/* refuse() for valid Anthropic the canonical form cannot carry (anthropic_refusal.cannot_carry) */
static json_t *cannot_carry(anthropic_refusal *why, const char *param, const char *sentence)
{
    refuse(why, param, "%s", sentence);
    why->cannot_carry = true;
    return NULL;
}

/* v is a JSON number (an integer, a real, or a raw number the fast decoder kept as text). */
static bool number_value(const json_t *v, double *out)
{
    const char *text;
    size_t len;
    if (json_is_number(v)) {
        *out = json_number_value(v);
        return true;
    }
    if (!json_raw_number_text(v, &text, &len)) return false;
    char tmp[64];
    if (len >= sizeof tmp) return false; /* far beyond any range checked here */
    memcpy(tmp, text, len);
    tmp[len] = 0;
    *out = strtod(tmp, NULL);
    return isfinite(*out);
}

/* The keys obj may have; the first other one is refused as Anthropic does. */
static bool only_keys(const json_t *obj, const char *const *allowed, const char *prefix,
                      anthropic_refusal *why)
{
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool known = false;
        for (const char *const *a = allowed; *a && !known; a++)
            known = strcmp(*a, key) == 0;
        if (!known) {
            char p[128];
            fmt_into(p, sizeof p, "%s%s%s", prefix, *prefix ? "." : "", key);
            refuse(why, p, "Extra inputs are not permitted");
            return false;
        }
    }
    return true;
}

/* Optional field: absent and null are the same. */
static json_t *opt(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

static bool check_cache_control(const json_t *block, const char *path, anthropic_refusal *why)
{
    json_t *cc = opt(block, "cache_control");
    if (!cc) return true;
    char p[128];
    fmt_into(p, sizeof p, "%s.cache_control", path);
    if (!json_is_object(cc)) return refuse(why, p, "Input should be an object"), false;
    static const char *const keys[] = {"type", "ttl", NULL};
    if (!only_keys(cc, keys, p, why)) return false;
    json_t *type = json_object_get(cc, "type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "ephemeral") != 0) {
        fmt_into(p, sizeof p, "%s.cache_control.type", path);
        return refuse(why, p, "Input should be 'ephemeral'"), false;
    }
    json_t *ttl = opt(cc, "ttl");
    if (ttl && !(json_is_string(ttl) && (strcmp(json_string_value(ttl), "5m") == 0 ||
                                         strcmp(json_string_value(ttl), "1h") == 0))) {
        fmt_into(p, sizeof p, "%s.cache_control.ttl", path);
        return refuse(why, p, "Input should be '5m' or '1h'"), false;
    }
    return true;
}

/* A required string field of a block; NULL (why filled) when missing or not a string. */
static const char *req_string(const json_t *obj, const char *key, const char *path,
                              anthropic_refusal *why)
{
    char p[128];
    fmt_into(p, sizeof p, "%s%s%s", path, *path ? "." : "", key);
    json_t *v = json_object_get(obj, key);
    if (!v) return refuse(why, p, "Field required"), NULL;
    if (!json_is_string(v)) return refuse(why, p, "Input should be a valid string"), NULL;
    return json_string_value(v);
}

/* A text block -> its text (borrowed), checked. */
static const char *text_block(const json_t *b, const char *path, anthropic_refusal *why)
{
    static const char *const keys[] = {"type", "text", "cache_control", "citations", NULL};
    if (!only_keys(b, keys, path, why)) return NULL;
    const char *text = req_string(b, "text", path, why);
    if (!text) return NULL;
    json_t *cit = opt(b, "citations");
    if (cit && !json_is_array(cit)) {
        char p[128];
        fmt_into(p, sizeof p, "%s.citations", path);
        return refuse(why, p, "Input should be a valid list"), NULL;
    }
    return check_cache_control(b, path, why) ? text : NULL;
}

static bool is_media_type(const char *m)
{
    static const char *const ok[] = {"image/jpeg", "image/png", "image/gif", "image/webp"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strcmp(m, ok[i]) == 0) return true;
    return false;
}

/* An image block -> an OpenAI image_url part (a new reference). */
static json_t *image_block(const json_t *b, const char *path, anthropic_refusal *why)
{
    static const char *const keys[] = {"type", "source", "cache_control", NULL};
    if (!only_keys(b, keys, path, why) || !check_cache_control(b, path, why)) return NULL;
    char p[128];
    fmt_into(p, sizeof p, "%s.source", path);
    json_t *src = json_object_get(b, "source");
    if (!src) return refuse(why, p, "Field required");
    if (!json_is_object(src)) return refuse(why, p, "Input should be an object");
    char pt[128];
    fmt_into(pt, sizeof pt, "%s.type", p);
    json_t *type = json_object_get(src, "type");
    if (!type) return refuse(why, pt, "Field required");
    if (!json_is_string(type)) return refuse(why, pt, "Input should be a valid string");
    const char *t = json_string_value(type);
    char *url = NULL;
    if (strcmp(t, "base64") == 0) {
        static const char *const bkeys[] = {"type", "media_type", "data", NULL};
        if (!only_keys(src, bkeys, p, why)) return NULL;
        const char *media = req_string(src, "media_type", p, why);
        if (!media) return NULL;
        if (!is_media_type(media)) {
            fmt_into(pt, sizeof pt, "%s.media_type", p);
            return refuse(why, pt,
                          "Input should be 'image/jpeg', 'image/png', 'image/gif' or "
                          "'image/webp'");
        }
        const char *data = req_string(src, "data", p, why);
        if (!data) return NULL;
        if (!*data) {
            fmt_into(pt, sizeof pt, "%s.data", p);
            return refuse(why, pt, "image data must not be empty");
        }
        size_t n = strlen(media) + strlen(data) + sizeof "data:;base64,";
        url = malloc(n);
        if (!url) return NULL;
        fmt_into(url, n, "data:%s;base64,%s", media, data);
    } else if (strcmp(t, "url") == 0) {
        static const char *const ukeys[] = {"type", "url", NULL};
        if (!only_keys(src, ukeys, p, why)) return NULL;
        const char *u = req_string(src, "url", p, why);
        if (!u) return NULL;
        if (strncmp(u, "https://", 8) != 0 && strncmp(u, "http://", 7) != 0) {
            fmt_into(pt, sizeof pt, "%s.url", p);
            return refuse(why, pt, "the image URL must start with http:// or https://");
        }
        url = strdup(u);
        if (!url) return NULL;
    } else if (strcmp(t, "file") == 0) {
        return cannot_carry(why, pt,
                            "file sources (the Files API) are not supported by this gateway; send "
                            "the image as base64 or url");
    } else {
        return refuse(why, pt,
                      "Input tag '%s' found using 'type' does not match any of the "
                      "expected tags: 'base64', 'url'",
                      t);
    }
    json_t *part = json_pack("{s:s, s:{s:s}}", "type", "image_url", "image_url", "url", url);
    free(url);
    return part;
}

static const char *const USER_TAGS = "'text', 'image', 'tool_result'";
static const char *const ASSISTANT_TAGS = "'text', 'tool_use', 'thinking', 'redacted_thinking'";

/* A block's type, checked to be a string; NULL with why filled. */
static const char *block_type(const json_t *b, const char *path, anthropic_refusal *why)
{
    if (!json_is_object(b)) return refuse(why, path, "Input should be an object"), NULL;
    return req_string(b, "type", path, why);
}

/* A type that is valid Anthropic but that this gateway cannot carry: a sentence saying so, or
 * NULL when the type is not one of those. */
static const char *unsupported_type(const char *t)
{
    if (strcmp(t, "document") == 0)
        return "document blocks (PDF and plain-text documents) are not supported by this "
               "gateway: the canonical chat format has no document part; send the text as a text "
               "block";
    if (strcmp(t, "search_result") == 0 || strcmp(t, "server_tool_use") == 0 ||
        strcmp(t, "web_search_tool_result") == 0 || strcmp(t, "container_upload") == 0 ||
        strstr(t, "_tool_result"))
        return "server-tool and search-result blocks are not supported by this gateway";
    return NULL;
}

static void block_path(char *p, size_t n, size_t mi, size_t bi)
{
    fmt_into(p, n, "messages.%zu.content.%zu", mi, bi);
}

/* tool_result content (string or text blocks) -> the tool message's text, in out. */
static bool tool_result_content(const json_t *c, const char *path, buf *out, anthropic_refusal *why)
{
    char p[128];
    fmt_into(p, sizeof p, "%s.content", path);
    if (!c) return true;
    if (json_is_string(c)) {
        buf_append(out, json_string_value(c), json_string_length(c));
        return true;
    }
    if (!json_is_array(c)) return refuse(why, p, "Input should be a valid string or list"), false;
    size_t i;
    json_t *b;
    json_array_foreach(c, i, b)
    {
        char bp[128];
        fmt_into(bp, sizeof bp, "%s.%zu", p, i);
        const char *t = block_type(b, bp, why);
        if (!t) return false;
        if (strcmp(t, "text") == 0) {
            const char *text = text_block(b, bp, why);
            if (!text) return false;
            if (out->len) buf_puts(out, "\n\n");
            buf_append(out, text, json_string_length(json_object_get(b, "text")));
        } else if (strcmp(t, "image") == 0) {
            fmt_into(bp, sizeof bp, "%s.%zu.type", p, i);
            return cannot_carry(why, bp,
                                "images inside a tool_result are not supported by this gateway "
                                "(an OpenAI tool message holds text only); send the image as an "
                                "image block of the user message after the tool_result"),
                   false;
        } else {
            fmt_into(bp, sizeof bp, "%s.%zu.type", p, i);
            return refuse(why, bp,
                          "Input tag '%s' found using 'type' does not match any of the expected "
                          "tags: 'text', 'image'",
                          t),
                   false;
        }
    }
    return true;
}

/* A tool_result block -> a canonical tool message, appended to msgs. */
static bool tool_result_block(const json_t *b, const char *path, json_t *msgs,
                              anthropic_refusal *why)
{
    static const char *const keys[] = {"type",     "tool_use_id",   "content",
                                       "is_error", "cache_control", NULL};
    if (!only_keys(b, keys, path, why) || !check_cache_control(b, path, why)) return false;
    const char *id = req_string(b, "tool_use_id", path, why);
    if (!id) return false;
    char p[128];
    if (!*id) {
        fmt_into(p, sizeof p, "%s.tool_use_id", path);
        return refuse(why, p, "must not be empty"), false;
    }
    json_t *is_error = opt(b, "is_error");
    if (is_error && !json_is_boolean(is_error)) {
        fmt_into(p, sizeof p, "%s.is_error", path);
        return refuse(why, p, "Input should be a valid boolean"), false;
    }
    buf text = BUF_INIT;
    if (!tool_result_content(opt(b, "content"), path, &text, why)) {
        buf_free(&text);
        return false;
    }
    /* OpenAI tool messages have no error flag: the model reads it from the text */
    buf content = BUF_INIT;
    if (json_is_true(is_error)) buf_puts(&content, text.len ? "Error: " : "Error");
    if (text.len) buf_append(&content, text.data, text.len);
    json_t *m = json_pack("{s:s, s:O, s:s%}", "role", "tool", "tool_call_id",
                          json_object_get(b, "tool_use_id"), "content",
                          content.data ? content.data : "", content.len);
    buf_free(&text);
    buf_free(&content);
    return m && json_array_append_new(msgs, m) == 0;
}

/* A user message's content -> tool messages (its tool_result blocks, in order) then one user
 * message with its other blocks, appended to msgs. */
static bool user_message(const json_t *content, size_t mi, json_t *msgs, anthropic_refusal *why)
{
    if (json_is_string(content)) {
        json_t *m = json_pack("{s:s, s:O}", "role", "user", "content", content);
        return m && json_array_append_new(msgs, m) == 0;
    }
    json_t *parts = json_array();
    if (!parts) return false;
    bool images = false;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        char path[128];
        block_path(path, sizeof path, mi, i);
        const char *t = block_type(b, path, why);
        json_t *part = NULL;
        if (!t) goto fail;
        if (strcmp(t, "text") == 0) {
            const char *text = text_block(b, path, why);
            if (!text) goto fail;
            part = json_pack("{s:s, s:O}", "type", "text", "text", json_object_get(b, "text"));
        } else if (strcmp(t, "image") == 0) {
            part = image_block(b, path, why);
            if (!part) goto fail;
            images = true;
        } else if (strcmp(t, "tool_result") == 0) {
            if (!tool_result_block(b, path, msgs, why)) goto fail;
            continue;
        } else {
            char tp[128];
            fmt_into(tp, sizeof tp, "%s.type", path);
            const char *no = unsupported_type(t);
            if (no)
                cannot_carry(why, tp, no);
            else if (strcmp(t, "tool_use") == 0 || strcmp(t, "thinking") == 0 ||
                     strcmp(t, "redacted_thinking") == 0)
                refuse(why, tp, "%s blocks belong in assistant messages", t);
            else
                refuse(why, tp,
                       "Input tag '%s' found using 'type' does not match any of the expected "
                       "tags: %s",
                       t, USER_TAGS);
            goto fail;
        }
        if (!part || json_array_append_new(parts, part) != 0) goto fail;
    }
    if (json_array_size(parts) == 0) {
        json_decref(parts);
        return true; /* only tool results */
    }
    json_t *m;
    if (!images && json_array_size(parts) == 1)
        m = json_pack("{s:s, s:O}", "role", "user", "content",
                      json_object_get(json_array_get(parts, 0), "text"));
    else
        m = json_pack("{s:s, s:O}", "role", "user", "content", parts);
    json_decref(parts);
    return m && json_array_append_new(msgs, m) == 0;
fail:
    json_decref(parts);
    return false;
}

static bool thinking_block(const json_t *b, const char *path, json_t *blocks,
                           anthropic_refusal *why)
{
    static const char *const keys[] = {"type", "thinking", "signature", NULL};
    if (!only_keys(b, keys, path, why)) return false;
    const char *thinking = req_string(b, "thinking", path, why);
    if (!thinking) return false;
    const char *sig = req_string(b, "signature", path, why);
    if (!sig) return false;
    json_t *tb =
        json_pack("{s:s, s:O, s:O}", "type", "thinking", "thinking", json_object_get(b, "thinking"),
                  "signature", json_object_get(b, "signature"));
    return tb && json_array_append_new(blocks, tb) == 0;
}

static bool redacted_block(const json_t *b, const char *path, json_t *blocks,
                           anthropic_refusal *why)
{
    static const char *const keys[] = {"type", "data", NULL};
    if (!only_keys(b, keys, path, why)) return false;
    if (!req_string(b, "data", path, why)) return false;
    json_t *tb =
        json_pack("{s:s, s:O}", "type", "redacted_thinking", "data", json_object_get(b, "data"));
    return tb && json_array_append_new(blocks, tb) == 0;
}

/* A tool_use block -> an OpenAI tool call (arguments: input as JSON text). */
static bool tool_use_block(const json_t *b, const char *path, json_t *calls, anthropic_refusal *why)
{
    static const char *const keys[] = {"type", "id", "name", "input", "cache_control", NULL};
    if (!only_keys(b, keys, path, why) || !check_cache_control(b, path, why)) return false;
    const char *id = req_string(b, "id", path, why);
    if (!id) return false;
    const char *name = req_string(b, "name", path, why);
    if (!name) return false;
    char p[128];
    if (!*id || !*name) {
        fmt_into(p, sizeof p, "%s.%s", path, *id ? "name" : "id");
        return refuse(why, p, "must not be empty"), false;
    }
    json_t *input = json_object_get(b, "input");
    fmt_into(p, sizeof p, "%s.input", path);
    if (!input) return refuse(why, p, "Field required"), false;
    if (!json_is_object(input)) return refuse(why, p, "Input should be a valid dictionary"), false;
    size_t alen;
    char *args = json_encode_fast(input, &alen);
    if (!args) return false;
    /* the client's values themselves (a C string would end at a \u0000 they may hold) */
    json_t *call =
        json_pack("{s:O, s:s, s:{s:O, s:s%}}", "id", json_object_get(b, "id"), "type", "function",
                  "function", "name", json_object_get(b, "name"), "arguments", args, alen);
    free(args);
    return call && json_array_append_new(calls, call) == 0;
}

/* An assistant message's content -> one canonical assistant message: text blocks joined,
 * tool_use blocks as tool_calls, thinking blocks kept in thinking_blocks. */
static bool assistant_message(const json_t *content, size_t mi, json_t *msgs,
                              anthropic_refusal *why)
{
    if (json_is_string(content)) {
        json_t *m = json_pack("{s:s, s:O}", "role", "assistant", "content", content);
        return m && json_array_append_new(msgs, m) == 0;
    }
    buf text = BUF_INIT;
    bool any_text = false;
    json_t *calls = json_array(), *thinking = json_array();
    json_t *m = NULL;
    if (!calls || !thinking) goto fail;
    size_t i;
    json_t *b;
    json_array_foreach(content, i, b)
    {
        char path[128];
        block_path(path, sizeof path, mi, i);
        const char *t = block_type(b, path, why);
        if (!t) goto fail;
        if (strcmp(t, "text") == 0) {
            const char *s = text_block(b, path, why);
            if (!s) goto fail;
            if (any_text) buf_puts(&text, "\n\n");
            buf_append(&text, s, json_string_length(json_object_get(b, "text")));
            any_text = true;
        } else if (strcmp(t, "tool_use") == 0) {
            if (!tool_use_block(b, path, calls, why)) goto fail;
        } else if (strcmp(t, "thinking") == 0) {
            if (!thinking_block(b, path, thinking, why)) goto fail;
        } else if (strcmp(t, "redacted_thinking") == 0) {
            if (!redacted_block(b, path, thinking, why)) goto fail;
        } else {
            char tp[128];
            fmt_into(tp, sizeof tp, "%s.type", path);
            const char *no = unsupported_type(t);
            if (no)
                cannot_carry(why, tp, no);
            else if (strcmp(t, "image") == 0 || strcmp(t, "tool_result") == 0)
                refuse(why, tp, "%s blocks belong in user messages", t);
            else
                refuse(why, tp,
                       "Input tag '%s' found using 'type' does not match any of the expected "
                       "tags: %s",
                       t, ASSISTANT_TAGS);
            goto fail;
        }
    }
    m = json_pack("{s:s}", "role", "assistant");
    if (!m) goto fail;
    if (any_text || json_array_size(calls) == 0) {
        if (json_object_set_new(m, "content", json_stringn(text.data ? text.data : "", text.len)))
            goto fail;
    } else if (json_object_set_new(m, "content", json_null())) {
        goto fail;
    }
    if (json_array_size(calls) && json_object_set(m, "tool_calls", calls)) goto fail;
    if (json_array_size(thinking) && json_object_set(m, "thinking_blocks", thinking)) goto fail;
    if (json_array_append_new(msgs, m)) {
        m = NULL;
        goto fail;
    }
    buf_free(&text);
    json_decref(calls);
    json_decref(thinking);
    return true;
fail:
    buf_free(&text);
    json_decref(calls);
    json_decref(thinking);
    json_decref(m);
    return false;
}

static bool content_is_empty(const json_t *c)
{
    return (json_is_string(c) && json_string_length(c) == 0) ||
           (json_is_array(c) && json_array_size(c) == 0);
}

/* messages -> appended to msgs (after the system message, if any). */
static bool convert_messages(const json_t *messages, json_t *msgs, anthropic_refusal *why)
{
    if (!messages) return refuse(why, "messages", "Field required"), false;
    if (!json_is_array(messages))
        return refuse(why, "messages", "Input should be a valid list"), false;
    size_t n = json_array_size(messages);
    if (n == 0) return refuse(why, "messages", "at least one message is required"), false;
    static const char *const keys[] = {"role", "content", NULL};
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        char p[128];
        fmt_into(p, sizeof p, "messages.%zu", i);
        if (!json_is_object(m)) return refuse(why, p, "Input should be an object"), false;
        if (!only_keys(m, keys, p, why)) return false;
        const char *role = req_string(m, "role", p, why);
        if (!role) return false;
        bool user = strcmp(role, "user") == 0;
        if (!user && strcmp(role, "assistant") != 0) {
            fmt_into(p, sizeof p, "messages.%zu.role", i);
            return refuse(why, p, "Input should be 'user' or 'assistant'"), false;
        }
        json_t *content = json_object_get(m, "content");
        fmt_into(p, sizeof p, "messages.%zu.content", i);
        if (!content) return refuse(why, p, "Field required"), false;
        if (!json_is_string(content) && !json_is_array(content))
            return refuse(why, p, "Input should be a valid string or list of content blocks"),
                   false;
        /* Anthropic's rule: only a final assistant message (a prefill) may be empty */
        if (content_is_empty(content) && (user || i + 1 < n))
            return refuse(why, p,
                          "all messages must have non-empty content except for the optional "
                          "final assistant message"),
                   false;
        if (!(user ? user_message(content, i, msgs, why)
                   : assistant_message(content, i, msgs, why)))
            return false;
    }
    return true;
}

/* system (string or text blocks) -> a leading system message (joined with blank lines). */
static bool convert_system(const json_t *system, json_t *msgs, anthropic_refusal *why)
{
    if (!system) return true;
    json_t *m;
    if (json_is_string(system)) {
        if (json_string_length(system) == 0) return true;
        m = json_pack("{s:s, s:O}", "role", "system", "content", system);
        return m && json_array_append_new(msgs, m) == 0;
    }
    if (!json_is_array(system))
        return refuse(why, "system", "Input should be a valid string or list of text blocks"),
               false;
    buf text = BUF_INIT;
    size_t i;
    json_t *b;
    json_array_foreach(system, i, b)
    {
        char p[128];
        fmt_into(p, sizeof p, "system.%zu", i);
        const char *t = block_type(b, p, why);
        if (!t) goto fail;
        if (strcmp(t, "text") != 0) {
            fmt_into(p, sizeof p, "system.%zu.type", i);
            refuse(why, p, "Input should be 'text'");
            goto fail;
        }
        const char *s = text_block(b, p, why);
        if (!s) goto fail;
        if (text.len) buf_puts(&text, "\n\n");
        buf_append(&text, s, json_string_length(json_object_get(b, "text")));
    }
    if (text.len == 0) {
        buf_free(&text);
        return true;
    }
    m = json_pack("{s:s, s:s%}", "role", "system", "content", text.data, text.len);
    buf_free(&text);
    return m && json_array_append_new(msgs, m) == 0;
fail:
    buf_free(&text);
    return false;
}

static bool valid_tool_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* tools -> OpenAI function tools (a new array, or NULL with why filled). */
static json_t *convert_tools(const json_t *tools, anthropic_refusal *why)
{
    if (!json_is_array(tools)) return refuse(why, "tools", "Input should be a valid list");
    json_t *out = json_array();
    if (!out) return NULL;
    static const char *const keys[] = {"type",         "name",          "description",
                                       "input_schema", "cache_control", NULL};
    size_t i;
    json_t *t;
    json_array_foreach(tools, i, t)
    {
        char p[128], f[128];
        fmt_into(p, sizeof p, "tools.%zu", i);
        if (!json_is_object(t)) {
            refuse(why, p, "Input should be an object");
            goto fail;
        }
        json_t *type = opt(t, "type");
        if (type && !(json_is_string(type) && strcmp(json_string_value(type), "custom") == 0)) {
            fmt_into(f, sizeof f, "%s.type", p);
            cannot_carry(why, f,
                         "server tools (Anthropic-run tools such as web search, bash or the text "
                         "editor) are not supported by this gateway; define the tool with name, "
                         "description and input_schema");
            goto fail;
        }
        if (!only_keys(t, keys, p, why) || !check_cache_control(t, p, why)) goto fail;
        const char *name = req_string(t, "name", p, why);
        if (!name) goto fail;
        fmt_into(f, sizeof f, "%s.name", p);
        if (!valid_tool_name(name) ||
            strlen(name) != json_string_length(json_object_get(t, "name"))) {
            refuse(why, f, "String should match pattern '^[a-zA-Z0-9_-]{1,64}$'");
            goto fail;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(tools, k), "name")),
                       name) == 0) {
                refuse(why, f, "Tool names must be unique ('%s' is tools.%zu.name too)", name, k);
                goto fail;
            }
        json_t *desc = opt(t, "description");
        fmt_into(f, sizeof f, "%s.description", p);
        if (desc && !json_is_string(desc)) {
            refuse(why, f, "Input should be a valid string");
            goto fail;
        }
        json_t *schema = json_object_get(t, "input_schema");
        fmt_into(f, sizeof f, "%s.input_schema", p);
        if (!schema) {
            refuse(why, f, "Field required");
            goto fail;
        }
        if (!json_is_object(schema)) {
            refuse(why, f, "Input should be a valid dictionary");
            goto fail;
        }
        json_t *st = json_object_get(schema, "type");
        if (!json_is_string(st) || strcmp(json_string_value(st), "object") != 0) {
            fmt_into(f, sizeof f, "%s.input_schema.type", p);
            refuse(why, f, "Input should be 'object'");
            goto fail;
        }
        json_t *fn = json_pack("{s:s}", "name", name);
        if (!fn || (desc && json_object_set(fn, "description", desc)) ||
            json_object_set(fn, "parameters", schema) ||
            json_array_append_new(out,
                                  json_pack("{s:s, s:o}", "type", "function", "function", fn))) {
            goto fail;
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* tool_choice -> tool_choice (and parallel_tool_calls) set on doc. */
static bool convert_tool_choice(const json_t *tc, const json_t *tools, json_t *doc,
                                anthropic_refusal *why)
{
    if (!json_is_object(tc)) return refuse(why, "tool_choice", "Input should be an object"), false;
    const char *type = req_string(tc, "type", "tool_choice", why);
    if (!type) return false;
    bool is_tool = strcmp(type, "tool") == 0;
    static const char *const keys[] = {"type", "disable_parallel_tool_use", NULL};
    static const char *const tkeys[] = {"type", "name", "disable_parallel_tool_use", NULL};
    static const char *const nkeys[] = {"type", NULL};
    bool none = strcmp(type, "none") == 0;
    if (!is_tool && !none && strcmp(type, "auto") != 0 && strcmp(type, "any") != 0)
        return refuse(why, "tool_choice.type",
                      "Input tag '%s' found using 'type' does not match any of the expected "
                      "tags: 'auto', 'any', 'tool', 'none'",
                      type),
               false;
    if (!only_keys(tc, is_tool ? tkeys : none ? nkeys : keys, "tool_choice", why)) return false;
    json_t *dp = opt(tc, "disable_parallel_tool_use");
    if (dp && !json_is_boolean(dp))
        return refuse(why, "tool_choice.disable_parallel_tool_use",
                      "Input should be a valid boolean"),
               false;
    if (!tools) {
        if (is_tool || strcmp(type, "any") == 0)
            return refuse(why, "tool_choice", "tool_choice '%s' needs tools", type), false;
        return true; /* auto or none without tools: what having no tools means anyway */
    }
    json_t *choice;
    if (is_tool) {
        const char *name = req_string(tc, "name", "tool_choice", why);
        if (!name) return false;
        bool found = false;
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t) found =
            found || strcmp(json_string_value(json_object_get(t, "name")), name) == 0;
        if (!found)
            return refuse(why, "tool_choice.name", "'%s' is not the name of one of the tools",
                          name),
                   false;
        choice = json_pack("{s:s, s:{s:s}}", "type", "function", "function", "name", name);
    } else if (strcmp(type, "any") == 0) {
        choice = json_string("required");
    } else {
        choice = json_string(type); /* auto, none: the same words in OpenAI */
    }
    if (!choice || json_object_set_new(doc, "tool_choice", choice)) return false;
    if (json_is_true(dp) && json_object_set_new(doc, "parallel_tool_calls", json_false()))
        return false;
    return true;
}

/* A number field in [lo, hi] copied to doc as a plain number. */
static bool copy_range(const json_t *root, const char *key, double lo, double hi, json_t *doc,
                       anthropic_refusal *why)
{
    json_t *v = opt(root, key);
    if (!v) return true;
    double d;
    if (!number_value(v, &d)) return refuse(why, key, "Input should be a valid number"), false;
    if (d < lo || d > hi)
        return refuse(why, key, "Input should be between %g and %g", lo, hi), false;
    return json_object_set_new(doc, key,
                               json_is_integer(v) ? json_integer(json_integer_value(v))
                                                  : json_real(d)) == 0;
}

static bool convert_thinking(const json_t *th, json_int_t max_tokens, json_t *anth,
                             anthropic_refusal *why)
{
    if (!json_is_object(th)) return refuse(why, "thinking", "Input should be an object"), false;
    const char *type = req_string(th, "type", "thinking", why);
    if (!type) return false;
    if (strcmp(type, "enabled") == 0) {
        static const char *const keys[] = {"type", "budget_tokens", "display", NULL};
        if (!only_keys(th, keys, "thinking", why)) return false;
        json_t *b = json_object_get(th, "budget_tokens");
        if (!b) return refuse(why, "thinking.budget_tokens", "Field required"), false;
        if (!json_is_integer(b))
            return refuse(why, "thinking.budget_tokens", "Input should be a valid integer"), false;
        if (json_integer_value(b) < 1024)
            return refuse(why, "thinking.budget_tokens",
                          "Input should be greater than or equal to 1024"),
                   false;
        if (max_tokens > 0 && json_integer_value(b) >= max_tokens)
            return refuse(why, "thinking.budget_tokens", "must be less than max_tokens"), false;
    } else if (strcmp(type, "adaptive") == 0) {
        static const char *const keys[] = {"type", "display", NULL};
        if (!only_keys(th, keys, "thinking", why)) return false;
    } else if (strcmp(type, "disabled") == 0) {
        static const char *const keys[] = {"type", NULL};
        if (!only_keys(th, keys, "thinking", why)) return false;
    } else {
        return refuse(why, "thinking.type",
                      "Input tag '%s' found using 'type' does not match any of the expected "
                      "tags: 'enabled', 'disabled', 'adaptive'",
                      type),
               false;
    }
    json_t *d = opt(th, "display");
    if (d && !(json_is_string(d) && (strcmp(json_string_value(d), "summarized") == 0 ||
                                     strcmp(json_string_value(d), "omitted") == 0)))
        return refuse(why, "thinking.display", "Input should be 'summarized' or 'omitted'"), false;
    return json_object_set(anth, "thinking", (json_t *)th) == 0;
}

/* Anthropic parameters this gateway knows of but cannot carry to every target. */
static const char *const UNSUPPORTED_KEYS[] = {"container",
                                               "mcp_servers",
                                               "output_config",
                                               "diagnostics",
                                               "cache_control",
                                               "inference_geo",
                                               "speed",
                                               "user_profile_id",
                                               "workspace_id",
                                               "context_management",
                                               NULL};

static json_t *convert(const char *body, size_t len, bool count, anthropic_refusal *why)
{
    assert(why);
    memset(why, 0, sizeof *why);
    char err[160];
    json_t *root = json_decode_fast(body ? body : "", body ? len : 0, err, sizeof err);
    if (!root) return refuse(why, "", "The request body is not valid JSON: %s", err);
    json_t *doc = NULL, *msgs = NULL, *anth = NULL;
    if (!json_is_object(root)) {
        refuse(why, "", "The request body must be a JSON object");
        goto fail;
    }
    static const char *const mkeys[] = {
        "model",       "max_tokens",     "messages",    "system",       "tools",
        "tool_choice", "stop_sequences", "temperature", "top_p",        "top_k",
        "stream",      "metadata",       "thinking",    "service_tier", NULL};
    static const char *const ckeys[] = {"model",       "messages", "system", "tools",
                                        "tool_choice", "thinking", NULL};
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        for (const char *const *u = UNSUPPORTED_KEYS; *u; u++)
            if (strcmp(*u, key) == 0) {
                cannot_carry(why, key, "this Anthropic parameter is not supported by this gateway");
                goto fail;
            }
    }
    if (!only_keys(root, count ? ckeys : mkeys, "", why)) goto fail;

    const char *model = req_string(root, "model", "", why);
    if (!model) goto fail;
    if (!*model) {
        refuse(why, "model", "String should have at least 1 character");
        goto fail;
    }
    json_int_t max_tokens = 0;
    if (!count) {
        json_t *mt = json_object_get(root, "max_tokens");
        if (!mt) {
            refuse(why, "max_tokens", "Field required");
            goto fail;
        }
        if (!json_is_integer(mt)) {
            refuse(why, "max_tokens", "Input should be a valid integer");
            goto fail;
        }
        max_tokens = json_integer_value(mt);
        if (max_tokens < 1) {
            refuse(why, "max_tokens", "Input should be greater than or equal to 1");
            goto fail;
        }
    }
    doc = json_pack("{s:O}", "model", json_object_get(root, "model"));
    msgs = json_array();
    anth = json_object();
    if (!doc || !msgs || !anth || json_object_set(doc, "messages", msgs)) goto fail;
    if (!convert_system(opt(root, "system"), msgs, why)) goto fail;
    if (!convert_messages(json_object_get(root, "messages"), msgs, why)) goto fail;
    if (!count && json_object_set_new(doc, "max_tokens", json_integer(max_tokens))) goto fail;

    if (!count) {
        if (!copy_range(root, "temperature", 0, 1, doc, why)) goto fail;
        if (!copy_range(root, "top_p", 0, 1, doc, why)) goto fail;
        json_t *stop = opt(root, "stop_sequences");
        if (stop) {
            if (!json_is_array(stop)) {
                refuse(why, "stop_sequences", "Input should be a valid list");
                goto fail;
            }
            size_t i;
            json_array_foreach(stop, i, v)
            {
                if (!json_is_string(v) || json_string_length(v) == 0) {
                    char p[64];
                    fmt_into(p, sizeof p, "stop_sequences.%zu", i);
                    refuse(why, p, "Input should be a non-empty string");
                    goto fail;
                }
            }
            if (json_array_size(stop) && json_object_set(doc, "stop", stop)) goto fail;
        }
        json_t *stream = opt(root, "stream");
        if (stream && !json_is_boolean(stream)) {
            refuse(why, "stream", "Input should be a valid boolean");
            goto fail;
        }
        /* an Anthropic stream always ends with usage: ask every upstream for it */
        if (json_is_true(stream) &&
            (json_object_set_new(doc, "stream", json_true()) ||
             json_object_set_new(doc, "stream_options", json_pack("{s:b}", "include_usage", 1))))
            goto fail;
    }

    json_t *tools = opt(root, "tools");
    if (tools) {
        json_t *ot = convert_tools(tools, why);
        if (!ot) goto fail;
        if (json_array_size(ot) == 0) {
            json_decref(ot);
            tools = NULL;
        } else if (json_object_set_new(doc, "tools", ot)) {
            goto fail;
        }
    }
    json_t *tc = opt(root, "tool_choice");
    if (tc && !convert_tool_choice(tc, tools, doc, why)) goto fail;

    if (!count) {
        json_t *md = opt(root, "metadata");
        if (md) {
            static const char *const keys[] = {"user_id", NULL};
            if (!json_is_object(md)) {
                refuse(why, "metadata", "Input should be an object");
                goto fail;
            }
            if (!only_keys(md, keys, "metadata", why)) goto fail;
            json_t *uid = opt(md, "user_id");
            if (uid && !json_is_string(uid)) {
                refuse(why, "metadata.user_id", "Input should be a valid string");
                goto fail;
            }
            if (uid && json_object_set(doc, "user", uid)) goto fail;
        }
        json_t *tk = opt(root, "top_k");
        if (tk) {
            if (!json_is_integer(tk)) {
                refuse(why, "top_k", "Input should be a valid integer");
                goto fail;
            }
            if (json_integer_value(tk) < 0) {
                refuse(why, "top_k", "Input should be greater than or equal to 0");
                goto fail;
            }
            if (json_object_set(anth, "top_k", tk)) goto fail;
        }
        json_t *st = opt(root, "service_tier");
        if (st) {
            if (!json_is_string(st) || (strcmp(json_string_value(st), "auto") != 0 &&
                                        strcmp(json_string_value(st), "standard_only") != 0)) {
                refuse(why, "service_tier", "Input should be 'auto' or 'standard_only'");
                goto fail;
            }
            if (json_object_set(anth, "service_tier", st)) goto fail;
        }
    }
    json_t *th = opt(root, "thinking");
    if (th && !convert_thinking(th, max_tokens, anth, why)) goto fail;
    if (json_object_size(anth) && json_object_set(doc, "anthropic", anth)) goto fail;

    json_decref(anth);
    json_decref(msgs);
    json_decref(root);
    return doc;
fail:
    if (!why->message[0]) refuse(why, "", "out of memory while reading the request");
    json_decref(anth);
    json_decref(msgs);
    json_decref(doc);
    json_decref(root);
    return NULL;
}

json_t *anthropic_request_to_canonical(const char *body, size_t len, anthropic_refusal *why)
{
    return convert(body, len, false, why);
}

json_t *anthropic_count_request(const char *body, size_t len, anthropic_refusal *why)
{
    return convert(body, len, true, why);
}

/* ---------------------------------------------------------------------------------------------
 * Answers */

static uint64_t uint_field(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

typedef struct usage_figures {
    uint64_t input, output, cache_read, cache_creation;
} usage_figures;

/* Canonical usage (OpenAI's meaning: prompt_tokens counts every prompt token, cached ones
 * included) -> Anthropic's, whose input_tokens excludes the cache reads and writes. */
static usage_figures usage_from_canonical(const json_t *u)
{
    usage_figures f = {0};
    f.output = uint_field(u, "completion_tokens");
    f.cache_read = uint_field(json_object_get(u, "prompt_tokens_details"), "cached_tokens");
    f.cache_creation = uint_field(u, "cache_creation_input_tokens");
    uint64_t prompt = uint_field(u, "prompt_tokens");
    uint64_t cached = f.cache_read + f.cache_creation;
    f.input = prompt > cached ? prompt - cached : 0;
    return f;
}

static json_t *usage_json(const usage_figures *f)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "input_tokens", (json_int_t)f->input,
                     "cache_creation_input_tokens", (json_int_t)f->cache_creation,
                     "cache_read_input_tokens", (json_int_t)f->cache_read, "output_tokens",
                     (json_int_t)f->output);
}

static const char *stop_reason(const char *finish, bool tool_calls)
{
    if (tool_calls) return "tool_use"; /* whatever the provider called it, the client must act */
    if (!finish) return "end_turn";
    if (strcmp(finish, "length") == 0) return "max_tokens";
    if (strcmp(finish, "tool_calls") == 0 || strcmp(finish, "function_call") == 0)
        return "tool_use";
    if (strcmp(finish, "content_filter") == 0) return "refusal";
    return "end_turn";
}

/* "msg_" + id, unless the id is already one of Anthropic's. */
static char *message_id(const json_t *id)
{
    const char *s = json_is_string(id) ? json_string_value(id) : "";
    size_t n = strlen(s) + 5;
    char *out = malloc(n);
    if (!out) return NULL;
    fmt_into(out, n, "%s%s", strncmp(s, "msg_", 4) == 0 ? "" : "msg_", s);
    return out;
}

/* A tool call's arguments -> the tool_use input: the parsed object; "" is {}; anything else is
 * kept, as text, under "_raw_arguments" (the model wrote invalid arguments; say so, never drop). */
static json_t *tool_input(const json_t *args)
{
    const char *s = json_is_string(args) ? json_string_value(args) : "";
    size_t n = json_is_string(args) ? json_string_length(args) : 0;
    size_t i = 0;
    while (i < n && (s[i] == ' ' || s[i] == '\n' || s[i] == '\t' || s[i] == '\r'))
        i++;
    if (i == n) return json_object();
    json_t *v = json_decode_fast(s, n, NULL, 0);
    if (json_is_object(v)) {
        json_t *plain = json_plain(v);
        json_decref(v);
        if (plain) return plain;
    } else {
        json_decref(v);
    }
    return json_pack("{s:s%}", "_raw_arguments", s, n);
}

char *anthropic_response_from_canonical(const char *body, size_t len, const char *model,
                                        size_t *out_len)
{
    json_t *root = json_decode_fast(body ? body : "", body ? len : 0, NULL, 0);
    json_t *choice = json_array_get(json_object_get(root, "choices"), 0);
    json_t *msg = json_object_get(choice, "message");
    json_t *out = NULL, *content = NULL;
    char *id = NULL, *text = NULL;
    if (!json_is_object(msg)) goto done;
    content = json_array();
    if (!content) goto done;

    json_t *blocks = json_object_get(msg, "thinking_blocks");
    json_t *reasoning = json_object_get(msg, "reasoning_content");
    if (json_is_array(blocks) && json_array_size(blocks)) {
        size_t i;
        json_t *b;
        json_array_foreach(blocks, i, b)
        {
            const char *t = json_string_value(json_object_get(b, "type"));
            json_t *nb = NULL;
            if (t && strcmp(t, "thinking") == 0) {
                json_t *th = json_object_get(b, "thinking"), *sig = json_object_get(b, "signature");
                nb = json_pack("{s:s, s:o, s:o}", "type", "thinking", "thinking",
                               json_is_string(th) ? json_incref(th) : json_string(""), "signature",
                               json_is_string(sig) ? json_incref(sig) : json_string(""));
            } else if (t && strcmp(t, "redacted_thinking") == 0 &&
                       json_is_string(json_object_get(b, "data"))) {
                nb = json_pack("{s:s, s:O}", "type", "redacted_thinking", "data",
                               json_object_get(b, "data"));
            }
            if (nb && json_array_append_new(content, nb)) goto done;
        }
    } else if (json_is_string(reasoning) && json_string_length(reasoning)) {
        /* thinking from a provider that signs nothing (reasoning_content): an empty signature */
        if (json_array_append_new(content, json_pack("{s:s, s:O, s:s}", "type", "thinking",
                                                     "thinking", reasoning, "signature", "")))
            goto done;
    }
    json_t *c = json_object_get(msg, "content");
    if (json_is_string(c) && json_string_length(c)) {
        if (json_array_append_new(content, json_pack("{s:s, s:O}", "type", "text", "text", c)))
            goto done;
    } else if (json_is_array(c)) { /* content parts: their text, in order */
        size_t i;
        json_t *p;
        json_array_foreach(c, i, p)
        {
            json_t *t = json_object_get(p, "text");
            if (json_is_string(t) && json_string_length(t) &&
                json_array_append_new(content, json_pack("{s:s, s:O}", "type", "text", "text", t)))
                goto done;
        }
    }
    json_t *calls = json_object_get(msg, "tool_calls");
    size_t i;
    json_t *call;
    json_array_foreach(calls, i, call)
    {
        json_t *fn = json_object_get(call, "function");
        json_t *cid = json_object_get(call, "id");
        json_t *name = json_object_get(fn, "name");
        char gen[40];
        fmt_into(gen, sizeof gen, "toolu_%zu", i);
        json_t *tb = json_pack("{s:s, s:s, s:s, s:o}", "type", "tool_use", "id",
                               json_is_string(cid) ? json_string_value(cid) : gen, "name",
                               json_is_string(name) ? json_string_value(name) : "", "input",
                               tool_input(json_object_get(fn, "arguments")));
        if (!tb || json_array_append_new(content, tb)) goto done;
    }
    const char *finish = json_string_value(json_object_get(choice, "finish_reason"));
    usage_figures u = usage_from_canonical(json_object_get(root, "usage"));
    id = message_id(json_object_get(root, "id"));
    if (!id) goto done;
    out = json_pack("{s:s, s:s, s:s, s:s, s:O, s:s, s:n, s:o}", "id", id, "type", "message", "role",
                    "assistant", "model", model ? model : "", "content", content, "stop_reason",
                    stop_reason(finish, json_array_size(calls) > 0), "stop_sequence", "usage",
                    usage_json(&u));
    if (out) text = json_encode_fast(out, out_len);
done:
    free(id);
    json_decref(out);
    json_decref(content);
    json_decref(root);
    return text;
}

/* ---------------------------------------------------------------------------------------------
 * Stream encoder */

enum block_kind { BLOCK_NONE, BLOCK_TEXT, BLOCK_THINKING, BLOCK_TOOL };

struct anthropic_stream {
    char *model;
    uint64_t input_tokens; /* message_start's figure */
    bool started;          /* message_start written */
    bool finished;         /* finish_reason seen: blocks closed, stop_reason known */
    bool delta_sent;       /* message_delta written */
    bool done;             /* message_stop or error written: nothing more */
    bool have_usage;
    usage_figures usage;
    const char *stop_reason;
    enum block_kind open; /* the block at index next_index - 1, if any is open */
    size_t next_index;    /* the next content block's index */
    /* tool_calls index -> its block index (each tool call index is one tool_use block) */
    struct {
        json_int_t tool_index;
        size_t block_index;
    } * tools;
    size_t n_tools;
    bool saw_tool_calls;
};

anthropic_stream *anthropic_stream_new(const char *model, uint64_t input_tokens)
{
    anthropic_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->model = strdup(model ? model : "");
    if (!s->model) {
        free(s);
        return NULL;
    }
    s->input_tokens = input_tokens;
    return s;
}

void anthropic_stream_free(anthropic_stream *s)
{
    if (!s) return;
    free(s->model);
    free(s->tools);
    free(s);
}

bool anthropic_stream_started(const anthropic_stream *s)
{
    return s && s->started;
}

/* Appends "event: NAME\ndata: {...}\n\n" and releases ev. */
static int emit(buf *out, const char *name, json_t *ev)
{
    if (!ev) return -1;
    size_t n;
    char *text = json_encode_fast(ev, &n);
    json_decref(ev);
    if (!text) return -1;
    buf_puts(out, "event: ");
    buf_puts(out, name);
    buf_puts(out, "\ndata: ");
    buf_append(out, text, n);
    buf_puts(out, "\n\n");
    free(text);
    return 0;
}

static int message_start(anthropic_stream *s, const json_t *chunk, buf *out)
{
    if (s->started) return 0;
    char *id = message_id(json_object_get(chunk, "id"));
    if (!id) return -1;
    usage_figures u = {.input = s->input_tokens};
    int rc = emit(out, "message_start",
                  json_pack("{s:s, s:{s:s, s:s, s:s, s:[], s:s, s:n, s:n, s:o}}", "type",
                            "message_start", "message", "id", id, "type", "message", "role",
                            "assistant", "content", "model", s->model, "stop_reason",
                            "stop_sequence", "usage", usage_json(&u)));
    free(id);
    s->started = rc == 0;
    return rc;
}

static int close_block(anthropic_stream *s, buf *out)
{
    if (s->open == BLOCK_NONE) return 0;
    s->open = BLOCK_NONE;
    return emit(out, "content_block_stop",
                json_pack("{s:s, s:I}", "type", "content_block_stop", "index",
                          (json_int_t)(s->next_index - 1)));
}

/* Closes the open block and starts one of kind with content_block (released). */
static int open_block(anthropic_stream *s, enum block_kind kind, json_t *content_block, buf *out)
{
    if (close_block(s, out)) {
        json_decref(content_block);
        return -1;
    }
    if (!content_block) return -1;
    s->open = kind;
    return emit(out, "content_block_start",
                json_pack("{s:s, s:I, s:o}", "type", "content_block_start", "index",
                          (json_int_t)s->next_index++, "content_block", content_block));
}

static int block_delta(size_t index, json_t *delta, buf *out)
{
    if (!delta) return -1;
    return emit(out, "content_block_delta",
                json_pack("{s:s, s:I, s:o}", "type", "content_block_delta", "index",
                          (json_int_t)index, "delta", delta));
}

static int thinking_text(anthropic_stream *s, const json_t *text, buf *out)
{
    if (!json_is_string(text) || json_string_length(text) == 0) return 0;
    if (s->open != BLOCK_THINKING &&
        open_block(
            s, BLOCK_THINKING,
            json_pack("{s:s, s:s, s:s}", "type", "thinking", "thinking", "", "signature", ""), out))
        return -1;
    return block_delta(s->next_index - 1,
                       json_pack("{s:s, s:O}", "type", "thinking_delta", "thinking", text), out);
}

/* delta.thinking_blocks: signatures (and, without reasoning_content, the thinking text) go into
 * the thinking block; a redacted block is a block of its own. */
static int thinking_blocks(anthropic_stream *s, const json_t *blocks, bool have_reasoning, buf *out)
{
    size_t i;
    json_t *b;
    json_array_foreach(blocks, i, b)
    {
        const char *t = json_string_value(json_object_get(b, "type"));
        if (!t) continue;
        if (strcmp(t, "redacted_thinking") == 0) {
            json_t *data = json_object_get(b, "data");
            if (!json_is_string(data)) continue;
            if (open_block(s, BLOCK_THINKING,
                           json_pack("{s:s, s:O}", "type", "redacted_thinking", "data", data),
                           out) ||
                close_block(s, out))
                return -1;
            continue;
        }
        if (strcmp(t, "thinking") != 0) continue;
        if (!have_reasoning && thinking_text(s, json_object_get(b, "thinking"), out)) return -1;
        json_t *sig = json_object_get(b, "signature");
        if (!json_is_string(sig) || json_string_length(sig) == 0) continue;
        if (s->open != BLOCK_THINKING && open_block(s, BLOCK_THINKING,
                                                    json_pack("{s:s, s:s, s:s}", "type", "thinking",
                                                              "thinking", "", "signature", ""),
                                                    out))
            return -1;
        if (block_delta(s->next_index - 1,
                        json_pack("{s:s, s:O}", "type", "signature_delta", "signature", sig), out))
            return -1;
    }
    return 0;
}

static int tool_call_delta(anthropic_stream *s, const json_t *tc, buf *out)
{
    json_t *idx = json_object_get(tc, "index");
    json_int_t ti = json_is_integer(idx) ? json_integer_value(idx) : 0;
    json_t *fn = json_object_get(tc, "function");
    size_t k = 0;
    while (k < s->n_tools && s->tools[k].tool_index != ti)
        k++;
    if (k == s->n_tools) { /* a new tool call: a new tool_use block */
        void *grown = realloc(s->tools, (s->n_tools + 1) * sizeof *s->tools);
        if (!grown) return -1;
        s->tools = grown;
        json_t *id = json_object_get(tc, "id");
        json_t *name = json_object_get(fn, "name");
        char gen[48];
        fmt_into(gen, sizeof gen, "toolu_%lld", (long long)ti);
        if (open_block(s, BLOCK_TOOL,
                       json_pack("{s:s, s:s, s:s, s:{}}", "type", "tool_use", "id",
                                 json_is_string(id) ? json_string_value(id) : gen, "name",
                                 json_is_string(name) ? json_string_value(name) : "", "input"),
                       out))
            return -1;
        s->tools[s->n_tools].tool_index = ti;
        s->tools[s->n_tools].block_index = s->next_index - 1;
        s->n_tools++;
    }
    json_t *args = json_object_get(fn, "arguments");
    if (!json_is_string(args) || json_string_length(args) == 0) return 0;
    /* a delta for an earlier tool call (interleaved) keeps that call's block index */
    return block_delta(s->tools[k].block_index,
                       json_pack("{s:s, s:O}", "type", "input_json_delta", "partial_json", args),
                       out);
}

static int message_delta(anthropic_stream *s, buf *out)
{
    if (s->delta_sent) return 0;
    s->delta_sent = true;
    usage_figures u = s->usage;
    if (!s->have_usage) u.input = s->input_tokens;
    return emit(out, "message_delta",
                json_pack("{s:s, s:{s:s, s:n}, s:o}", "type", "message_delta", "delta",
                          "stop_reason", s->stop_reason ? s->stop_reason : "end_turn",
                          "stop_sequence", "usage", usage_json(&u)));
}

static const char *error_type_from_openai(const json_t *err)
{
    const char *type = json_string_value(json_object_get(err, "type"));
    const char *code = json_string_value(json_object_get(err, "code"));
    if (code && strcmp(code, "upstream_overloaded") == 0) return "overloaded_error";
    if (code && strstr(code, "timeout")) return "timeout_error";
    if (!type) return "api_error";
    static const struct {
        const char *openai, *anthropic;
    } map[] = {{"invalid_request_error", "invalid_request_error"},
               {"authentication_error", "authentication_error"},
               {"permission_error", "permission_error"},
               {"not_found_error", "not_found_error"},
               {"rate_limit_error", "rate_limit_error"},
               {"requests", "rate_limit_error"},
               {"tokens", "rate_limit_error"},
               {"insufficient_quota", "rate_limit_error"},
               {"overloaded_error", "overloaded_error"},
               {"timeout_error", "timeout_error"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(type, map[i].openai) == 0) return map[i].anthropic;
    return "api_error";
}

static void error_event(anthropic_stream *s, const char *type, const char *message, size_t len,
                        buf *out)
{
    buf msg = BUF_INIT;
    utf8_append_repaired(&msg, message ? message : "", message ? len : 0, 4096);
    json_t *ev = json_pack("{s:s, s:{s:s, s:s%}}", "type", "error", "error", "type", type,
                           "message", msg.data ? msg.data : "", msg.len);
    buf_free(&msg);
    if (emit(out, "error", ev) != 0) /* out of memory: still end the stream visibly */
        buf_puts(out, "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\","
                      "\"message\":\"out of memory\"}}\n\n");
    s->done = true;
}

/* The data of an SSE event: its data lines joined with "\n" (the SSE rule), in d. */
static bool sse_data(const char *ev, size_t len, buf *d)
{
    bool any = false;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(ev + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - ev) : len;
        size_t le = end;
        if (le > pos && ev[le - 1] == '\r') le--;
        if (le - pos >= 5 && memcmp(ev + pos, "data:", 5) == 0) {
            size_t v = pos + 5;
            if (v < le && ev[v] == ' ') v++;
            if (any) buf_puts(d, "\n");
            buf_append(d, ev + v, le - v);
            any = true;
        }
        pos = end + 1;
    }
    return any;
}

static int on_chunk(anthropic_stream *s, const json_t *chunk, buf *out)
{
    json_t *choices = json_object_get(chunk, "choices");
    if (!json_is_array(choices)) return -1;
    if (message_start(s, chunk, out)) return -1;
    json_t *choice = json_array_get(choices, 0);
    json_t *delta = json_object_get(choice, "delta");
    if (delta && !json_is_object(delta)) return -1;
    if (delta && !s->finished) {
        json_t *reasoning = json_object_get(delta, "reasoning_content");
        bool have_reasoning = json_is_string(reasoning) && json_string_length(reasoning);
        if (thinking_text(s, reasoning, out)) return -1;
        json_t *tb = json_object_get(delta, "thinking_blocks");
        if (json_is_array(tb) && thinking_blocks(s, tb, have_reasoning, out)) return -1;
        json_t *text = json_object_get(delta, "content");
        if (json_is_string(text) && json_string_length(text)) {
            if (s->open != BLOCK_TEXT &&
                open_block(s, BLOCK_TEXT, json_pack("{s:s, s:s}", "type", "text", "text", ""), out))
                return -1;
            if (block_delta(s->next_index - 1,
                            json_pack("{s:s, s:O}", "type", "text_delta", "text", text), out))
                return -1;
        }
        json_t *calls = json_object_get(delta, "tool_calls");
        size_t i;
        json_t *tc;
        json_array_foreach(calls, i, tc)
        {
            if (!json_is_object(tc)) return -1;
            s->saw_tool_calls = true;
            if (tool_call_delta(s, tc, out)) return -1;
        }
    }
    json_t *finish = json_object_get(choice, "finish_reason");
    if (json_is_string(finish) && !s->finished) {
        s->finished = true;
        s->stop_reason = stop_reason(json_string_value(finish), s->saw_tool_calls);
        if (close_block(s, out)) return -1;
    }
    json_t *usage = json_object_get(chunk, "usage");
    if (json_is_object(usage)) {
        s->usage = usage_from_canonical(usage);
        s->have_usage = true;
    }
    if (s->finished && s->have_usage) return message_delta(s, out);
    return 0;
}

int anthropic_stream_event(anthropic_stream *s, const char *ev, size_t len, buf *out)
{
    assert(s && out);
    if (s->done) return 0;
    buf d = BUF_INIT;
    if (!ev || !sse_data(ev, len, &d)) {
        buf_free(&d);
        return -1;
    }
    int rc = -1;
    json_t *chunk = NULL;
    if (d.len == 6 && memcmp(d.data, "[DONE]", 6) == 0) {
        if (message_start(s, NULL, out) == 0 && close_block(s, out) == 0 &&
            message_delta(s, out) == 0 &&
            emit(out, "message_stop", json_pack("{s:s}", "type", "message_stop")) == 0)
            rc = 0;
        s->done = true;
        goto done;
    }
    chunk = json_decode_fast(d.data ? d.data : "", d.len, NULL, 0);
    if (!json_is_object(chunk)) goto done;
    json_t *err = json_object_get(chunk, "error");
    if (err) {
        json_t *m = json_object_get(err, "message");
        if (json_is_string(m))
            error_event(s, error_type_from_openai(err), json_string_value(m), json_string_length(m),
                        out);
        else if (json_is_string(err))
            error_event(s, "api_error", json_string_value(err), json_string_length(err), out);
        else
            error_event(s, error_type_from_openai(err), "upstream error", 14, out);
        rc = 0;
        goto done;
    }
    rc = on_chunk(s, chunk, out);
done:
    json_decref(chunk);
    buf_free(&d);
    return rc;
}

void anthropic_stream_ping(buf *out)
{
    buf_puts(out, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
}

void anthropic_stream_error(anthropic_stream *s, int status, const char *message, buf *out)
{
    assert(s && out);
    if (s->done) return;
    error_event(s, anthropic_error_type(status), message, message ? strlen(message) : 0, out);
}

/* ---------------------------------------------------------------------------------------------
 * Errors */

const char *anthropic_error_type(int status)
{
    switch (status) {
    case 400:
        return "invalid_request_error";
    case 401:
        return "authentication_error";
    case 403:
        return "permission_error";
    case 404:
        return "not_found_error";
    case 413:
        return "request_too_large";
    case 429:
        return "rate_limit_error";
    case 503:
    case 529:
        return "overloaded_error";
    case 504:
        return "timeout_error";
    default:
        return "api_error";
    }
}

char *anthropic_error_from_openai(int status, const char *body, size_t len, size_t *out_len)
{
    json_t *root = body ? json_decode_fast(body, len, NULL, 0) : NULL;
    json_t *err = json_object_get(root, "error");
    json_t *m = json_is_object(err) ? json_object_get(err, "message") : err;
    if (!json_is_string(m)) m = json_object_get(root, "message");
    buf msg = BUF_INIT;
    if (json_is_string(m))
        utf8_append_repaired(&msg, json_string_value(m), json_string_length(m), 4096);
    else if (!root && body)
        utf8_append_repaired(&msg, body, len, 4096);
    if (msg.len == 0) buf_printf(&msg, "the request failed with HTTP status %d", status);
    json_t *doc =
        json_pack("{s:s, s:{s:s, s:s%}}", "type", "error", "error", "type",
                  anthropic_error_type(status), "message", msg.data ? msg.data : "", msg.len);
    char *text = doc ? json_encode_fast(doc, out_len) : NULL;
    json_decref(doc);
    json_decref(root);
    buf_free(&msg);
    if (text) return text;
    static const char oom[] =
        "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"out of memory\"}}";
    text = strdup(oom);
    if (!text) abort(); /* the header promises non-NULL: nothing sensible is left to do */
    if (out_len) *out_len = sizeof oom - 1;
    return text;
}
