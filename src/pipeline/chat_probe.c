/* chat_probe.c — the streaming check of a Chat Completions body (see chat_probe.h). yajl does the
 * JSON syntax and escapes; the callbacks follow where in the document they are: depth 1 is the
 * top-level object, a value at depth 1 belongs to the current top-level key, depth 2 inside
 * "messages" is one message, depth 3 its fields.
 *
 * Text is checked here, not by yajl: yajl's own UTF-8 check lets overlong forms, encoded
 * surrogates and code points above U+10FFFF through, and it turns a lone surrogate escape into
 * '?' or a mis-paired one (\ud800\u0041) into an unrelated character (U+10041). So yajl's check
 * is off (yajl_dont_validate_strings) and the raw bytes are checked by utf8_check_json_string:
 * the whole body in one pass, then, only when that finds a fault, string by string (check_text)
 * to name the field at fault. About 3 instructions per byte, 12% of the probe's cost. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <yajl/yajl_parse.h>

#include "core/json.h"
#include "core/sax_tape.h"
#include "core/utf8.h"
#include "pipeline/chat_probe.h"

typedef enum { F_OTHER, F_MODEL, F_MESSAGES, F_STREAM, F_STREAM_OPTIONS } top_field;

enum { KEY_SLOTS = 2 * CHAT_PROBE_MAX_TOP_KEYS }; /* a power of two, load <= 1/2 */

typedef struct probe_state {
    chat_probe *p;
    arena *pool;
    yajl_handle h;
    const char *body;
    size_t len;
    int depth;       /* containers open */
    top_field field; /* the top-level key whose value is being read */
    size_t cap_keys;
    bool key_is_role;  /* messages[i]: the current key is "role" */
    bool msg_has_role; /* messages[i] had a string role */
    bool key_is_usage; /* stream_options: the current key is include_usage */
    bool check_text;   /* the body-wide check failed: find and name the fault string by string */
    size_t last_end;   /* where the previous token ended: a string's raw text starts after it */
    sax_tape *tape;    /* NULL, or every token is recorded here */
    /* the top-level keys seen, as a hash set: index + 1 into p->top_keys, 0 = empty */
    unsigned short key_slots[KEY_SLOTS];
} probe_state;

static int fail(probe_state *s, chat_probe_status st, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(probe_state *s, chat_probe_status st, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->p->message, sizeof s->p->message, fmt, ap);
    va_end(ap);
    s->p->status = st;
    s->p->param = param;
    return 0; /* cancels the parse */
}

static size_t consumed(const probe_state *s)
{
    return yajl_get_bytes_consumed(s->h);
}

/* Every callback that accepts its token records where it ended, when strings are being checked
 * one by one (check_text: the only reader); else it costs nothing per token. */
static int accepted(probe_state *s)
{
    if (s->check_text) s->last_end = consumed(s);
    return 1;
}

/* The token just read, on the tape when one is kept. */
static void record(probe_state *s, sax_kind kind, const void *v, size_t n, int truth)
{
    if (s->tape) sax_tape_push(s->tape, kind, v, n, truth, consumed(s));
}

/* Where the current string token is, in words for the client: the message or top-level field. */
static void where(const probe_state *s, bool is_key, char *out, size_t outlen)
{
    if (s->depth == 1 && is_key) {
        snprintf(out, outlen, "a top-level key");
    } else if (s->field == F_MESSAGES && s->depth >= 2) {
        snprintf(out, outlen, "'messages[%zu]'", s->p->n_messages);
    } else if (s->depth >= 1 && s->p->n_top_keys) {
        str k = s->p->top_keys[s->p->n_top_keys - 1];
        snprintf(out, outlen, "'%.*s'", (int)(k.n > 64 ? 64 : k.n), k.p);
    } else {
        snprintf(out, outlen, "the body");
    }
}

/* The raw bytes of the string token that just ended (quotes excluded) must be strict UTF-8 with
 * paired surrogate escapes. */
static int check_text(probe_state *s, bool is_key)
{
    if (!s->check_text) return 1;
    size_t end = consumed(s); /* just past the closing quote */
    size_t start = s->last_end;
    while (start < end && s->body[start] != '"')
        start++;
    start++;
    if (end == 0 || start > end - 1) return 1; /* cannot happen: yajl saw a string */
    bool surrogate;
    size_t n = end - 1 - start;
    size_t bad = utf8_check_json_string(s->body + start, n, &surrogate);
    if (bad == n) return 1;
    char at[96];
    where(s, is_key, at, sizeof at);
    const char *param = s->depth >= 1 && !(s->depth == 1 && is_key) && s->p->n_top_keys
                            ? s->p->top_keys[s->p->n_top_keys - 1].p
                            : NULL;
    if (surrogate)
        return fail(s, PROBE_BAD_ENCODING, param,
                    "Invalid text in %s: the escape '%.6s' at byte %zu is an unpaired UTF-16 "
                    "surrogate; a character outside the Basic Multilingual Plane is written as a "
                    "high and a low surrogate escape together (e.g. \\ud83d\\ude00).",
                    at, s->body + start + bad, start + bad);
    return fail(s, PROBE_BAD_ENCODING, param,
                "Invalid text in %s: the bytes at byte %zu are not valid UTF-8 (an overlong "
                "form, an encoded surrogate, a truncated sequence or a code point above "
                "U+10FFFF).",
                at, start + bad);
}

/* A message (depth 2 in messages) must be an object. */
static int message_not_object(probe_state *s)
{
    return fail(s, PROBE_BAD_FIELD, "messages",
                "Invalid 'messages[%zu]': each message must be an object with a string 'role'.",
                s->p->n_messages);
}

/* Every scalar value goes through here; kind is "string", "boolean", "null" or "number". */
static int scalar(probe_state *s, const char *kind, int truth)
{
    chat_probe *p = s->p;
    if (s->depth == 0)
        return fail(s, PROBE_NOT_OBJECT, NULL, "The request body must be a JSON object.");
    if (s->depth == 1) {
        switch (s->field) {
        case F_MODEL:
            if (strcmp(kind, "string") != 0)
                return fail(s, PROBE_BAD_FIELD, "model",
                            "Invalid type for 'model': expected a string, got %s.", kind);
            break;
        case F_MESSAGES:
            return fail(s, PROBE_BAD_FIELD, "messages",
                        "Invalid 'messages': expected a non-empty array of message objects.");
        case F_STREAM:
            if (strcmp(kind, "boolean") != 0 && strcmp(kind, "null") != 0)
                return fail(s, PROBE_BAD_FIELD, "stream",
                            "Invalid type for 'stream': expected a boolean.");
            p->stream = truth;
            break;
        case F_STREAM_OPTIONS:
            if (strcmp(kind, "null") != 0)
                return fail(s, PROBE_BAD_FIELD, "stream_options",
                            "Invalid type for 'stream_options': expected an object.");
            break;
        case F_OTHER:
            break;
        }
        s->field = F_OTHER;
        return accepted(s);
    }
    if (s->field == F_MESSAGES && s->depth == 2) return message_not_object(s);
    if (s->field == F_MESSAGES && s->depth == 3 && s->key_is_role) {
        if (strcmp(kind, "string") != 0)
            return fail(s, PROBE_BAD_FIELD, "messages",
                        "Invalid 'messages[%zu].role': expected a string.", p->n_messages);
        s->msg_has_role = true;
    }
    if (s->field == F_STREAM_OPTIONS && s->depth == 2 && s->key_is_usage) p->include_usage = truth;
    return accepted(s);
}

static int on_null(void *ctx)
{
    record(ctx, SAX_NULL, NULL, 0, 0);
    return scalar(ctx, "null", 0);
}

static int on_boolean(void *ctx, int b)
{
    record(ctx, SAX_BOOLEAN, NULL, 0, b);
    return scalar(ctx, "boolean", b);
}

static int on_number(void *ctx, const char *v, size_t n)
{
    record(ctx, SAX_NUMBER, v, n, 0);
    return scalar(ctx, "number", 0);
}

static int on_string(void *ctx, const unsigned char *v, size_t n)
{
    record(ctx, SAX_STRING, v, n, 0);
    probe_state *s = ctx;
    if (!check_text(s, false)) return 0;
    if (s->depth == 1 && s->field == F_MODEL) {
        s->p->model = arena_strndup(s->pool, (const char *)v, n);
        s->p->model_is_string = true;
        s->p->model_end = consumed(s);
    }
    return scalar(s, "string", 0);
}

static size_t key_hash(const char *k, size_t n)
{
    size_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* Adds a top-level key; fails on a duplicate or once there are too many. */
static int add_top_key(probe_state *s, const unsigned char *k, size_t n)
{
    chat_probe *p = s->p;
    str key = {(const char *)k, n};
    size_t slot = key_hash(key.p, n) & (KEY_SLOTS - 1);
    for (; s->key_slots[slot]; slot = (slot + 1) & (KEY_SLOTS - 1)) {
        const str *seen = &p->top_keys[s->key_slots[slot] - 1];
        if (str_eq(*seen, key))
            return fail(s, PROBE_DUPLICATE_KEY, seen->p,
                        "The request body has the key '%.*s' twice; send each field once.",
                        (int)(n > 64 ? 64 : n), (const char *)k);
    }
    if (p->n_top_keys == CHAT_PROBE_MAX_TOP_KEYS)
        return fail(s, PROBE_TOO_MANY_KEYS, NULL,
                    "The request body has more than %d top-level keys; a Chat Completions request "
                    "has a few dozen at most.",
                    CHAT_PROBE_MAX_TOP_KEYS);
    p->top_keys =
        arena_grow(s->pool, p->top_keys, p->n_top_keys, &s->cap_keys, sizeof *p->top_keys, 16);
    key.p = arena_strndup(s->pool, key.p, n);
    p->top_keys[p->n_top_keys++] = key;
    s->key_slots[slot] = (unsigned short)p->n_top_keys;
    return 1;
}

static int on_key(void *ctx, const unsigned char *k, size_t n)
{
    record(ctx, SAX_KEY, k, n, 0);
    probe_state *s = ctx;
    chat_probe *p = s->p;
    if (!check_text(s, true)) return 0;
    if (s->depth == 1) {
        if (!add_top_key(s, k, n)) return 0;
        str key = {(const char *)k, n};
        s->field = str_eq_c(key, "model")            ? F_MODEL
                   : str_eq_c(key, "messages")       ? F_MESSAGES
                   : str_eq_c(key, "stream")         ? F_STREAM
                   : str_eq_c(key, "stream_options") ? F_STREAM_OPTIONS
                                                     : F_OTHER;
        if (s->field == F_MODEL) {
            /* the value's raw bytes start at its opening quote, after `:` and white space */
            size_t i = consumed(s);
            while (i < s->len && s->body[i] != '"' && s->body[i] != '{' && s->body[i] != '[')
                i++;
            p->has_model = true;
            p->model_start = i;
        }
        if (s->field == F_MESSAGES) p->has_messages = true;
        return accepted(s);
    }
    if (s->field == F_MESSAGES && s->depth == 3) s->key_is_role = n == 4 && !memcmp(k, "role", 4);
    if (s->field == F_STREAM_OPTIONS && s->depth == 2)
        s->key_is_usage = n == 13 && !memcmp(k, "include_usage", 13);
    return accepted(s);
}

static int on_start_map(void *ctx)
{
    record(ctx, SAX_START_MAP, NULL, 0, 0);
    probe_state *s = ctx;
    if (s->depth == 1) {
        if (s->field == F_MODEL)
            return fail(s, PROBE_BAD_FIELD, "model",
                        "Invalid type for 'model': expected a string, got object.");
        if (s->field == F_MESSAGES)
            return fail(s, PROBE_BAD_FIELD, "messages",
                        "Invalid 'messages': expected a non-empty array of message objects.");
        if (s->field == F_STREAM)
            return fail(s, PROBE_BAD_FIELD, "stream",
                        "Invalid type for 'stream': expected a boolean.");
    }
    if (s->field == F_MESSAGES && s->depth == 2) {
        s->msg_has_role = false;
        s->key_is_role = false;
    }
    s->depth++;
    return accepted(s);
}

static int on_end_map(void *ctx)
{
    record(ctx, SAX_END_MAP, NULL, 0, 0);
    probe_state *s = ctx;
    s->depth--;
    if (s->depth == 0) {
        s->p->object_end = consumed(s) - 1;
        return accepted(s);
    }
    if (s->field == F_MESSAGES && s->depth == 2) {
        if (!s->msg_has_role)
            return fail(s, PROBE_BAD_FIELD, "messages",
                        "Invalid 'messages[%zu]': each message must be an object with a string "
                        "'role'.",
                        s->p->n_messages);
        s->p->n_messages++;
    }
    if (s->depth == 1) s->field = F_OTHER;
    return accepted(s);
}

static int on_start_array(void *ctx)
{
    record(ctx, SAX_START_ARRAY, NULL, 0, 0);
    probe_state *s = ctx;
    if (s->depth == 0)
        return fail(s, PROBE_NOT_OBJECT, NULL, "The request body must be a JSON object.");
    if (s->depth == 1) {
        if (s->field == F_MODEL)
            return fail(s, PROBE_BAD_FIELD, "model",
                        "Invalid type for 'model': expected a string, got array.");
        if (s->field == F_STREAM)
            return fail(s, PROBE_BAD_FIELD, "stream",
                        "Invalid type for 'stream': expected a boolean.");
        if (s->field == F_STREAM_OPTIONS)
            return fail(s, PROBE_BAD_FIELD, "stream_options",
                        "Invalid type for 'stream_options': expected an object.");
    }
    if (s->field == F_MESSAGES && s->depth == 2) return message_not_object(s);
    s->depth++;
    return accepted(s);
}

static int on_end_array(void *ctx)
{
    record(ctx, SAX_END_ARRAY, NULL, 0, 0);
    probe_state *s = ctx;
    s->depth--;
    if (s->depth == 1) s->field = F_OTHER;
    return accepted(s);
}

static const yajl_callbacks callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_boolean,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = on_end_map,
    .yajl_start_array = on_start_array,
    .yajl_end_array = on_end_array,
};

chat_probe_status chat_probe_parse(const char *body, size_t len, arena *pool, chat_probe *p,
                                   sax_tape *tape)
{
    memset(p, 0, sizeof *p);
    if (len == 0) {
        snprintf(p->message, sizeof p->message,
                 "We could not parse the JSON body of your request: the body is empty.");
        return p->status = PROBE_BAD_JSON;
    }
    probe_state s = {.p = p, .pool = pool, .body = body, .len = len, .tape = tape};
    if (tape) sax_tape_init(tape, body, len, pool);
    s.h = json_sax_new(&callbacks, &s);
    if (!s.h) {
        snprintf(p->message, sizeof p->message, "out of memory");
        return p->status = PROBE_BAD_JSON;
    }
    yajl_config(s.h, yajl_dont_validate_strings, 1); /* checked here, strictly */
    /* Outside its strings a JSON text is ASCII without backslashes, so one pass of the string
     * rule over the whole body checks every string at once, without a call per string. Only when
     * it finds a fault are the strings checked one by one, to say which field holds it (and a
     * fault outside any string is left to yajl's syntax error). */
    bool surrogate;
    s.check_text = utf8_check_json_string(body, len, &surrogate) != len;
    yajl_status st = yajl_parse(s.h, (const unsigned char *)body, len);
    if (st == yajl_status_ok) st = yajl_complete_parse(s.h);
    if (st == yajl_status_error) {
        size_t at = yajl_get_bytes_consumed(s.h);
        unsigned char *e = yajl_get_error(s.h, 0, (const unsigned char *)body, len);
        /* yajl's text reads "parse error: <what>" and ends with white space */
        const char *what = e ? (const char *)e : "syntax error";
        if (!strncmp(what, "parse error: ", 13)) what += 13;
        int n = (int)strlen(what);
        while (n > 0 && (what[n - 1] == ' ' || what[n - 1] == '\n'))
            n--;
        snprintf(p->message, sizeof p->message,
                 "We could not parse the JSON body of your request: %.*s (at byte %zu).", n, what,
                 at);
        if (e) yajl_free_error(s.h, e);
        p->status = PROBE_BAD_JSON;
    }
    if (tape) tape->complete = st == yajl_status_ok && p->status == PROBE_OK;
    json_sax_free(s.h);
    return p->status;
}

bool chat_probe_has_key(const chat_probe *p, const char *key)
{
    for (size_t i = 0; i < p->n_top_keys; i++)
        if (str_eq_c(p->top_keys[i], key)) return true;
    return false;
}
