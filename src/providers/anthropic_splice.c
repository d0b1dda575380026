/* anthropic_splice.c — the Anthropic adapter's fast path for the common shapes: a chat request of
 * text messages and plain parameters, and a Message answer of at most one text block. Each is
 * read in one SAX pass (yajl) over the raw bytes, and the client's and the upstream's own JSON
 * string and number tokens are copied into the translation as they are, instead of decoded into
 * a document and encoded again. Anything outside those shapes, and anything wrong, declines:
 * anthropic.c's document path then translates it, or refuses it naming the field. Both paths
 * give the same upstream body and the same answer (tests/unit/providers/test_anthropic.c and
 * tests/fuzz/fuzz_anthropic.c compare them). docs/decisions/0004-anthropic-splice.md says why. */
#include <assert.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_parse.h>

#include "core/json.h"
#include "core/sax_tape.h"
#include "core/utf8.h"
#include "providers/adapters.h"

enum { SPLICE_DEFAULT_MAX_TOKENS = 4096, SPLICE_MAX_DIGITS = 18 };

typedef struct span {
    size_t at, len; /* raw token bytes: [at, at + len) */
} span;

/* What every pass shares: where the last accepted token ended, the open containers, and a
 * value being skipped (a field the translation does not read). */
typedef struct sax {
    const char *body;
    size_t len;
    const sax_tape *tape; /* the body's tokens, recorded by the chat probe: replayed, not lexed */
    yajl_handle h;        /* else the pass's parser */
    size_t pos;           /* replay: where the current token ends */
    size_t last_end;
    int depth;       /* open containers */
    int skip_base;   /* > 0: skipping a container value opened at this depth */
    bool skip_value; /* the next value (scalar or container) is skipped */
} sax;

/* where the token just read ends */
static size_t consumed(const sax *s)
{
    return s->h ? yajl_get_bytes_consumed(s->h) : s->pos;
}

static int accept_token(sax *s)
{
    s->last_end = consumed(s);
    return 1;
}

/* The raw bytes of the token just read: it starts at the first byte after the previous token
 * that is not white space or a separator, and ends where yajl stopped. */
static span token(const sax *s)
{
    size_t at = s->last_end, end = consumed(s);
    while (at < end && (s->body[at] == ' ' || s->body[at] == '\t' || s->body[at] == '\n' ||
                        s->body[at] == '\r' || s->body[at] == ',' || s->body[at] == ':'))
        at++;
    return (span){at, end - at};
}

/* A scalar while skipping: consumed. A container start while a value is to be skipped: the
 * skip covers it. Returns true when the token belongs to a skipped value. */
static bool skipping_scalar(sax *s)
{
    if (s->skip_base) return true;
    if (s->skip_value) {
        s->skip_value = false;
        return true;
    }
    return false;
}

static bool skipping_open(sax *s)
{
    s->depth++;
    if (s->skip_base) return true;
    if (s->skip_value) {
        s->skip_value = false;
        s->skip_base = s->depth;
        return true;
    }
    return false;
}

static bool skipping_close(sax *s)
{
    bool in = s->skip_base != 0;
    if (s->skip_base == s->depth) s->skip_base = 0;
    s->depth--;
    return in;
}

/* an array's end, in either pass (ctx is a pass's state, which starts with its sax) */
static int sax_end_array(void *ctx)
{
    sax *s = ctx;
    skipping_close(s);
    return accept_token(s);
}

/* one pass of cb over s->body (ctx: the pass's state, which starts with s); true when the
 * whole text was read and no callback declined. A recorded pass (s->tape) is replayed. yajl's
 * own UTF-8 check is off: the request's text was checked strictly by the chat probe, the
 * answer's strings are by strict(). */
static bool sax_parse(sax *s, const yajl_callbacks *cb, void *ctx)
{
    assert((void *)s == ctx);
    if (s->tape) {
        assert(s->tape->text == s->body && s->tape->len == s->len);
        return sax_tape_replay(s->tape, cb, ctx, &s->pos);
    }
    s->h = json_sax_new(cb, ctx);
    if (!s->h) return false;
    yajl_config(s->h, yajl_dont_validate_strings, 1);
    yajl_status st = yajl_parse(s->h, (const unsigned char *)s->body, s->len);
    if (st == yajl_status_ok) st = yajl_complete_parse(s->h);
    json_sax_free(s->h);
    s->h = NULL;
    return st == yajl_status_ok;
}

/* decoded text the gateway copies must be strict UTF-8, as json_decode_fast requires */
static bool strict(const unsigned char *v, size_t n)
{
    return utf8_valid((const char *)v, n);
}

static bool key_is(const unsigned char *k, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(k, lit, n) == 0;
}

/* a non-negative integer token of at most SPLICE_MAX_DIGITS digits, else -1 */
static long long digits(const char *p, size_t n)
{
    if (n == 0 || n > SPLICE_MAX_DIGITS) return -1;
    long long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v;
}

/* text that needs no JSON escape: written between quotes as it is */
static bool plain_text(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x20 || *p == '"' || *p == '\\') return false;
    return true;
}

static void put_lit(buf *out, const char *lit)
{
    buf_append(out, lit, strlen(lit));
}

static void put_span(buf *out, const char *body, span sp)
{
    buf_append(out, body + sp.at, sp.len);
}

static void put_int(buf *out, long long v)
{
    char tmp[24];
    buf_append(out, tmp, json_int_text(v, tmp));
}

static void put_quoted(buf *out, const char *s)
{
    buf_append(out, "\"", 1);
    put_lit(out, s);
    buf_append(out, "\"", 1);
}

/* ------------------------------------------------------------------------- request ---- */

typedef enum {
    RF_OTHER,
    RF_MODEL,
    RF_MESSAGES,
    RF_MAX,
    RF_TEMP,
    RF_TOP_P,
    RF_STREAM,
    RF_STOP,
    RF_USER
} rfield;
typedef enum { R_NONE, R_SYSTEM, R_USER, R_ASSISTANT } rrole;

typedef struct rmsg {
    rrole role;
    span content;
} rmsg;

typedef struct rq {
    sax s;
    rfield field;
    long long max_tokens; /* -1: absent */
    span temperature, top_p, stop, user;
    int stream; /* -1 absent or null, else the boolean */
    rmsg *msgs;
    size_t n_msgs, cap_msgs;
    arena *pool;
    int mkey; /* in a message: 1 role, 2 content */
    rmsg m;
} rq;

/* canonical keys the Messages API drops (anthropic.c's dropped_keys): skipped */
static bool dropped(const unsigned char *k, size_t n)
{
    static const char *const keys[] = {"frequency_penalty", "presence_penalty", "seed",
                                       "stream_options",    "logit_bias",       "store",
                                       "metadata"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        if (key_is(k, n, keys[i])) return true;
    return false;
}

static int rq_key(void *ctx, const unsigned char *k, size_t n)
{
    rq *q = ctx;
    if (q->s.skip_base) return accept_token(&q->s);
    if (q->s.depth == 1) {
        q->field = key_is(k, n, "model")                   ? RF_MODEL
                   : key_is(k, n, "messages")              ? RF_MESSAGES
                   : key_is(k, n, "max_tokens")            ? RF_MAX
                   : key_is(k, n, "max_completion_tokens") ? RF_MAX
                   : key_is(k, n, "temperature")           ? RF_TEMP
                   : key_is(k, n, "top_p")                 ? RF_TOP_P
                   : key_is(k, n, "stream")                ? RF_STREAM
                   : key_is(k, n, "stop")                  ? RF_STOP
                   : key_is(k, n, "user")                  ? RF_USER
                                                           : RF_OTHER;
        if (q->field == RF_MAX && q->max_tokens >= 0) return 0; /* both given */
        if (q->field == RF_OTHER) {
            if (!dropped(k, n)) return 0; /* a parameter the document path must judge */
            q->s.skip_value = true;
        }
        return accept_token(&q->s);
    }
    if (q->s.depth == 3 && q->field == RF_MESSAGES) {
        q->mkey = key_is(k, n, "role") ? 1 : key_is(k, n, "content") ? 2 : 0;
        if (!q->mkey) return 0; /* name, tool_calls, ...: the document path */
        if (q->mkey == 1 ? q->m.role != R_NONE : q->m.content.len != 0) return 0; /* twice */
        return accept_token(&q->s);
    }
    return 0;
}

static int rq_string(void *ctx, const unsigned char *v, size_t n)
{
    rq *q = ctx;
    if (skipping_scalar(&q->s)) return accept_token(&q->s);
    span sp = token(&q->s);
    if (q->s.depth == 1) {
        switch (q->field) {
        case RF_MODEL:
            break; /* replaced by the target's modelName */
        case RF_STOP:
            q->stop = sp;
            break;
        case RF_USER:
            q->user = sp;
            break;
        default:
            return 0;
        }
        return accept_token(&q->s);
    }
    if (q->s.depth != 3 || q->field != RF_MESSAGES) return 0;
    if (q->mkey == 1) {
        q->m.role = key_is(v, n, "user")        ? R_USER
                    : key_is(v, n, "assistant") ? R_ASSISTANT
                    : key_is(v, n, "system")    ? R_SYSTEM
                    : key_is(v, n, "developer") ? R_SYSTEM
                                                : R_NONE;
        if (q->m.role == R_NONE) return 0; /* tool, or a role the document path refuses */
    } else {
        if (n == 0) return 0; /* an empty text: the document path's rules */
        q->m.content = sp;
    }
    return accept_token(&q->s);
}

static int rq_number(void *ctx, const char *v, size_t n)
{
    rq *q = ctx;
    if (skipping_scalar(&q->s)) return accept_token(&q->s);
    if (q->s.depth != 1) return 0;
    span sp = token(&q->s);
    switch (q->field) {
    case RF_MAX:
        q->max_tokens = digits(v, n);
        if (q->max_tokens < 1) return 0;
        break;
    case RF_TEMP:
        q->temperature = sp;
        break;
    case RF_TOP_P:
        q->top_p = sp;
        break;
    default:
        return 0;
    }
    return accept_token(&q->s);
}

static int rq_boolean(void *ctx, int b)
{
    rq *q = ctx;
    if (skipping_scalar(&q->s)) return accept_token(&q->s);
    if (q->s.depth != 1 || q->field != RF_STREAM) return 0;
    q->stream = b ? 1 : 0;
    return accept_token(&q->s);
}

static int rq_null(void *ctx)
{
    rq *q = ctx;
    if (skipping_scalar(&q->s)) return accept_token(&q->s);
    /* null sampling, stop, stream and user mean "not given", as on the document path */
    if (q->s.depth != 1 || !(q->field == RF_TEMP || q->field == RF_TOP_P || q->field == RF_STREAM ||
                             q->field == RF_STOP || q->field == RF_USER))
        return 0;
    return accept_token(&q->s);
}

static int rq_start_map(void *ctx)
{
    rq *q = ctx;
    if (skipping_open(&q->s)) return accept_token(&q->s);
    if (q->s.depth == 1) return accept_token(&q->s);
    if (q->s.depth != 3 || q->field != RF_MESSAGES) return 0;
    q->m = (rmsg){R_NONE, {0, 0}};
    q->mkey = 0;
    return accept_token(&q->s);
}

static int rq_end_map(void *ctx)
{
    rq *q = ctx;
    if (q->s.depth == 3 && !q->s.skip_base) {
        if (q->m.role == R_NONE || q->m.content.len == 0) return 0;
        q->msgs = arena_grow(q->pool, q->msgs, q->n_msgs, &q->cap_msgs, sizeof *q->msgs, 16);
        q->msgs[q->n_msgs++] = q->m;
    }
    skipping_close(&q->s);
    return accept_token(&q->s);
}

static int rq_start_array(void *ctx)
{
    rq *q = ctx;
    if (skipping_open(&q->s)) return accept_token(&q->s);
    if (q->s.depth != 2 || q->field != RF_MESSAGES) return 0; /* parts, stop arrays, ... */
    return accept_token(&q->s);
}

static const yajl_callbacks rq_callbacks = {
    .yajl_null = rq_null,
    .yajl_boolean = rq_boolean,
    .yajl_number = rq_number,
    .yajl_string = rq_string,
    .yajl_start_map = rq_start_map,
    .yajl_map_key = rq_key,
    .yajl_end_map = rq_end_map,
    .yajl_start_array = rq_start_array,
    .yajl_end_array = sax_end_array,
};

static const char *role_name(rrole r)
{
    return r == R_USER ? "user" : "assistant";
}

/* the Messages body from q: the same fields, in the same order, as anthropic.c writes them */
static bool write_request(const cfg_target *t, const rq *q, const char *body, buf *out)
{
    const rmsg *system = NULL;
    size_t n_turns = 0;
    for (size_t i = 0; i < q->n_msgs; i++) {
        if (q->msgs[i].role != R_SYSTEM) {
            n_turns++;
        } else {
            if (system) return false; /* several: joined as blocks by the document path */
            system = &q->msgs[i];
        }
    }
    if (!n_turns) return false;
    buf_reserve(out, q->s.len + 256);
    put_lit(out, "{\"model\":");
    put_quoted(out, t->model_name);
    put_lit(out, ",\"max_tokens\":");
    put_int(out, q->max_tokens >= 0 ? q->max_tokens : SPLICE_DEFAULT_MAX_TOKENS);
    if (system) {
        put_lit(out, ",\"system\":");
        put_span(out, body, system->content);
    }
    put_lit(out, ",\"messages\":[");
    rrole open = R_NONE;
    for (size_t i = 0; i < q->n_msgs; i++) {
        const rmsg *m = &q->msgs[i];
        if (m->role == R_SYSTEM) continue;
        if (m->role != open) { /* consecutive turns of one role go in one message */
            if (open != R_NONE) put_lit(out, "]},");
            put_lit(out, "{\"role\":\"");
            put_lit(out, role_name(m->role));
            put_lit(out, "\",\"content\":[");
            open = m->role;
        } else {
            buf_append(out, ",", 1);
        }
        put_lit(out, "{\"type\":\"text\",\"text\":");
        put_span(out, body, m->content);
        buf_append(out, "}", 1);
    }
    put_lit(out, "]}]");
    if (q->temperature.len) {
        put_lit(out, ",\"temperature\":");
        put_span(out, body, q->temperature);
    }
    if (q->top_p.len) {
        put_lit(out, ",\"top_p\":");
        put_span(out, body, q->top_p);
    }
    if (q->stop.len) {
        put_lit(out, ",\"stop_sequences\":[");
        put_span(out, body, q->stop);
        buf_append(out, "]", 1);
    }
    if (q->stream >= 0) put_lit(out, q->stream ? ",\"stream\":true" : ",\"stream\":false");
    if (q->user.len) {
        put_lit(out, ",\"metadata\":{\"user_id\":");
        put_span(out, body, q->user);
        buf_append(out, "}", 1);
    }
    buf_append(out, "}", 1);
    return true;
}

bool anthropic_splice_request(const cfg_target *t, const char *body, size_t len,
                              const sax_tape *tape, arena *pool, buf *out)
{
    assert(t->type == TARGET_ANTHROPIC);
    /* the target's parameters merge under the request: the document path's work */
    if (json_object_size(t->parameters) || !t->model_name || !plain_text(t->model_name))
        return false;
    if (tape && !tape->complete) tape = NULL;
    rq q = {.s = {.body = body, .len = len, .tape = tape},
            .max_tokens = -1,
            .stream = -1,
            .pool = pool};
    return sax_parse(&q.s, &rq_callbacks, &q) && write_request(t, &q, body, out);
}

/* -------------------------------------------------------------------------- answer ---- */

typedef enum { AF_OTHER, AF_TYPE, AF_ID, AF_CONTENT, AF_STOP, AF_USAGE } afield;

typedef struct an {
    sax s;
    afield field;
    unsigned seen; /* 1 << afield */
    bool is_message;
    span id;
    char stop[32];
    long long usage[4]; /* input, cache read, cache creation, output */
    int ukey;           /* in usage: the count's index, -1 another key */
    int bkey;           /* in a block: 1 type, 2 text, 0 another key */
    bool blk_text, blk_has_text;
    size_t n_text;
    span text;
} an;

static int an_key(void *ctx, const unsigned char *k, size_t n)
{
    an *a = ctx;
    if (!strict(k, n)) return 0;
    if (a->s.skip_base) return accept_token(&a->s);
    if (a->s.depth == 1) {
        a->field = key_is(k, n, "type")          ? AF_TYPE
                   : key_is(k, n, "id")          ? AF_ID
                   : key_is(k, n, "content")     ? AF_CONTENT
                   : key_is(k, n, "stop_reason") ? AF_STOP
                   : key_is(k, n, "usage")       ? AF_USAGE
                                                 : AF_OTHER;
        if (a->field == AF_OTHER) {
            a->s.skip_value = true; /* role, model, stop_sequence, ...: not read */
        } else {
            if (a->seen & (1u << a->field)) return 0; /* twice: the document path's rules */
            a->seen |= 1u << a->field;
        }
        return accept_token(&a->s);
    }
    if (a->s.depth == 2 && a->field == AF_USAGE) {
        static const char *const keys[] = {"input_tokens", "cache_read_input_tokens",
                                           "cache_creation_input_tokens", "output_tokens"};
        a->ukey = -1;
        for (int i = 0; i < 4; i++)
            if (key_is(k, n, keys[i])) a->ukey = i;
        if (a->ukey < 0) a->s.skip_value = true; /* service_tier, server_tool_use, ... */
        return accept_token(&a->s);
    }
    if (a->s.depth == 3 && a->field == AF_CONTENT) {
        a->bkey = key_is(k, n, "type") ? 1 : key_is(k, n, "text") ? 2 : 0;
        if (!a->bkey) a->s.skip_value = true; /* citations, ...: not in Chat Completions */
        return accept_token(&a->s);
    }
    return 0;
}

static int an_string(void *ctx, const unsigned char *v, size_t n)
{
    an *a = ctx;
    if (!strict(v, n)) return 0;
    if (skipping_scalar(&a->s)) return accept_token(&a->s);
    if (a->s.depth == 1) {
        switch (a->field) {
        case AF_TYPE:
            a->is_message = key_is(v, n, "message");
            break;
        case AF_ID:
            a->id = token(&a->s);
            break;
        case AF_STOP:
            if (n >= sizeof a->stop) return 0;
            memcpy(a->stop, v, n);
            a->stop[n] = 0;
            break;
        default:
            return 0;
        }
        return accept_token(&a->s);
    }
    if (a->s.depth == 3 && a->field == AF_CONTENT) {
        if (a->bkey == 1) {
            if (!key_is(v, n, "text")) return 0; /* tool_use, thinking, ...: the document path */
            a->blk_text = true;
        } else {
            a->text = token(&a->s);
            a->blk_has_text = true;
        }
        return accept_token(&a->s);
    }
    return 0;
}

static int an_number(void *ctx, const char *v, size_t n)
{
    an *a = ctx;
    if (skipping_scalar(&a->s)) return accept_token(&a->s);
    if (a->s.depth != 2 || a->field != AF_USAGE || a->ukey < 0) return 0;
    a->usage[a->ukey] = digits(v, n);
    if (a->usage[a->ukey] < 0) return 0;
    return accept_token(&a->s);
}

static int an_boolean(void *ctx, int b)
{
    (void)b;
    an *a = ctx;
    return skipping_scalar(&a->s) ? accept_token(&a->s) : 0;
}

static int an_null(void *ctx)
{
    an *a = ctx;
    if (skipping_scalar(&a->s)) return accept_token(&a->s);
    /* a null count is no count, as on the document path */
    return a->s.depth == 2 && a->field == AF_USAGE && a->ukey >= 0 ? accept_token(&a->s) : 0;
}

static int an_start_map(void *ctx)
{
    an *a = ctx;
    if (skipping_open(&a->s)) return accept_token(&a->s);
    bool ok = a->s.depth == 1 || (a->s.depth == 2 && a->field == AF_USAGE) ||
              (a->s.depth == 3 && a->field == AF_CONTENT);
    if (!ok) return 0;
    if (a->s.depth == 3) {
        a->blk_text = a->blk_has_text = false;
        a->bkey = 0;
    }
    return accept_token(&a->s);
}

static int an_end_map(void *ctx)
{
    an *a = ctx;
    if (a->s.depth == 3 && !a->s.skip_base) {
        if (!a->blk_text || !a->blk_has_text) return 0;
        if (++a->n_text > 1) return 0; /* texts to join: the document path */
    }
    skipping_close(&a->s);
    return accept_token(&a->s);
}

static int an_start_array(void *ctx)
{
    an *a = ctx;
    if (skipping_open(&a->s)) return accept_token(&a->s);
    return a->s.depth == 2 && a->field == AF_CONTENT ? accept_token(&a->s) : 0;
}

static const yajl_callbacks an_callbacks = {
    .yajl_null = an_null,
    .yajl_boolean = an_boolean,
    .yajl_number = an_number,
    .yajl_string = an_string,
    .yajl_start_map = an_start_map,
    .yajl_map_key = an_key,
    .yajl_end_map = an_end_map,
    .yajl_start_array = an_start_array,
    .yajl_end_array = sax_end_array,
};

bool anthropic_splice_answer(const char *body, size_t len, const char *model, buf *out,
                             provider_usage *usage)
{
    if (!plain_text(model)) return false;
    if (memchr(body, '\\', len) && json_lone_surrogate(body, len) < len) return false;
    an a = {.s = {.body = body, .len = len}};
    unsigned all = 1u << AF_TYPE | 1u << AF_ID | 1u << AF_CONTENT | 1u << AF_STOP | 1u << AF_USAGE;
    if (!sax_parse(&a.s, &an_callbacks, &a) || a.seen != all || !a.is_message) return false;
    long long prompt = a.usage[0] + a.usage[1] + a.usage[2];
    buf_reserve(out, len + 256);
    put_lit(out, "{\"id\":");
    put_span(out, body, a.id);
    put_lit(out, ",\"object\":\"chat.completion\",\"created\":");
    put_int(out, (long long)time(NULL));
    put_lit(out, ",\"model\":");
    put_quoted(out, model);
    put_lit(out, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    if (a.n_text)
        put_span(out, body, a.text);
    else
        put_lit(out, "null");
    put_lit(out, "},\"logprobs\":null,\"finish_reason\":");
    put_quoted(out, anthropic_finish_reason(a.stop));
    put_lit(out, "}],\"usage\":{\"prompt_tokens\":");
    put_int(out, prompt);
    put_lit(out, ",\"completion_tokens\":");
    put_int(out, a.usage[3]);
    put_lit(out, ",\"total_tokens\":");
    put_int(out, prompt + a.usage[3]);
    put_lit(out, ",\"prompt_tokens_details\":{\"cached_tokens\":");
    put_int(out, a.usage[1]);
    put_lit(out, "},\"cache_creation_input_tokens\":");
    put_int(out, a.usage[2]);
    put_lit(out, "}}");
    if (usage) *usage = (provider_usage){true, (uint64_t)prompt, (uint64_t)a.usage[3]};
    return true;
}
