/* mock.c — the Mock model target: answers from the gateway itself, deterministically, in the
 * exact OpenAI wire format (whole or as an SSE stream), with token usage. For demos, tests and
 * benchmarks; documented in docs/providers.md. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <stdatomic.h>

#include "core/buf.h"
#include "core/log.h"
#include "providers/provider.h"
#include "tokens/tokens.h"

/* The text of a message's content: a string, or the concatenated text parts of an array. */
static void content_text(json_t *content, buf *out)
{
    if (json_is_string(content)) {
        buf_append(out, json_string_value(content), json_string_length(content));
        return;
    }
    if (!json_is_array(content)) return;
    size_t i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        if (json_is_string(text))
            buf_append(out, json_string_value(text), json_string_length(text));
    }
}

const char *mock_answer_text(const cfg_target *t, json_t *messages, arena *pool)
{
    if (t->mock.text) return t->mock.text;
    for (size_t i = json_array_size(messages); i-- > 0;) {
        json_t *m = json_array_get(messages, i);
        json_t *role = json_object_get(m, "role");
        if (!json_is_string(role) || strcmp(json_string_value(role), "user") != 0) continue;
        buf b = BUF_INIT;
        content_text(json_object_get(m, "content"), &b);
        const char *s = arena_strndup(pool, b.data ? b.data : "", b.len);
        buf_free(&b);
        return s;
    }
    return "";
}

static const tok_encoding *mock_encoding(const cfg_target *t)
{
    static _Atomic int warned;
    char err[512];
    const tok_encoding *enc = tok_load(tok_encoding_for_model(t->model_name), err, sizeof err);
    if (!enc && !atomic_exchange(&warned, 1))
        log_warn("counted usage figures (Mock targets, providers that report none) are "
                 "approximate (ceil(bytes/4) per text): %s",
                 err);
    return enc;
}

void provider_prepare(const cfg_gateway *gw)
{
    char err[512];
    for (size_t i = 0; i < gw->n_targets; i++) {
        const cfg_target *t = &gw->targets[i];
        if (t->type == TARGET_MOCK)
            (void)mock_encoding(t);
        else /* the relay counts with it when a provider reports no usage (quietly: maybe never) */
            (void)tok_load(tok_encoding_for_model(t->model_name), err, sizeof err);
    }
}

uint64_t mock_count_tokens(const cfg_target *t, const char *text)
{
    const tok_encoding *enc = mock_encoding(t);
    if (enc) return tok_count(enc, text, strlen(text));
    return (strlen(text) + 3) / 4;
}

uint64_t mock_count_prompt_tokens(const cfg_target *t, json_t *messages)
{
    const tok_encoding *enc = mock_encoding(t);
    if (enc) return tok_count_chat(enc, messages);
    uint64_t total = 0;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        buf b = BUF_INIT;
        content_text(json_object_get(m, "content"), &b);
        total += (b.len + 3) / 4 + 3; /* OpenAI's documented per-message overhead */
        buf_free(&b);
    }
    return total + 3;
}

static json_t *usage_json(uint64_t p, uint64_t c)
{
    return json_pack("{s:I, s:I, s:I}", "prompt_tokens", (json_int_t)p, "completion_tokens",
                     (json_int_t)c, "total_tokens", (json_int_t)(p + c));
}

char *mock_completion_json(const cfg_target *t, const char *id, const char *text,
                           uint64_t prompt_tokens, uint64_t completion_tokens)
{
    json_t *doc =
        json_pack("{s:s, s:s, s:I, s:s, s:[{s:i, s:{s:s, s:s, s:n}, s:n, s:s}], s:o, s:n}", "id",
                  id, "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
                  t->model_name, "choices", "index", 0, "message", "role", "assistant", "content",
                  text, "refusal", "logprobs", "finish_reason", "stop", "usage",
                  usage_json(prompt_tokens, completion_tokens), "system_fingerprint");
    char *s = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return s;
}

static void emit_chunk(json_t *chunk, void (*emit)(void *, const char *, size_t), void *ctx)
{
    char *s = chunk ? json_dumps(chunk, JSON_COMPACT) : NULL;
    if (!s) {
        /* not UTF-8 text, or out of memory: the event is left out rather than sent broken */
        log_warn("Mock: a stream event could not be encoded as JSON; it is left out");
        json_decref(chunk);
        return;
    }
    buf b = BUF_INIT;
    buf_puts(&b, "data: ");
    buf_puts(&b, s);
    buf_puts(&b, "\n\n");
    emit(ctx, b.data, b.len);
    buf_free(&b);
    free(s);
    json_decref(chunk);
}

static json_t *chunk_base(const cfg_target *t, const char *id, time_t created)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:n}", "id", id, "object", "chat.completion.chunk",
                     "created", (json_int_t)created, "model", t->model_name, "system_fingerprint");
}

/* Splits text into n pieces at UTF-8 character boundaries, as even as the bytes allow. */
static size_t piece_end(const char *text, size_t len, size_t start, size_t want)
{
    size_t end = start + want;
    if (end >= len) return len;
    while (end < len && ((unsigned char)text[end] & 0xC0) == 0x80)
        end++;
    return end;
}

void mock_stream_events(const cfg_target *t, const char *id, const char *text,
                        uint64_t prompt_tokens, uint64_t completion_tokens, bool include_usage,
                        void (*emit)(void *ctx, const char *event, size_t len), void *ctx)
{
    time_t created = time(NULL);
    size_t len = strlen(text);
    size_t n = t->mock.chunks > 0 ? (size_t)t->mock.chunks : 1;
    size_t per = (len + n - 1) / n;
    size_t pos = 0;
    for (size_t i = 0; i < n; i++) {
        size_t end = (i == n - 1) ? len : piece_end(text, len, pos, per);
        json_t *delta = json_object();
        if (i == 0) json_object_set_new(delta, "role", json_string("assistant"));
        json_object_set_new(delta, "content", json_stringn(text + pos, end - pos));
        json_t *c = chunk_base(t, id, created);
        json_object_set_new(c, "choices",
                            json_pack("[{s:i, s:o, s:n, s:n}]", "index", 0, "delta", delta,
                                      "logprobs", "finish_reason"));
        if (include_usage) json_object_set_new(c, "usage", json_null());
        emit_chunk(c, emit, ctx);
        pos = end;
    }
    json_t *fin = chunk_base(t, id, created);
    json_object_set_new(fin, "choices",
                        json_pack("[{s:i, s:{}, s:n, s:s}]", "index", 0, "delta", "logprobs",
                                  "finish_reason", "stop"));
    if (include_usage) json_object_set_new(fin, "usage", json_null());
    emit_chunk(fin, emit, ctx);
    if (include_usage) {
        json_t *u = chunk_base(t, id, created);
        json_object_set_new(u, "choices", json_array());
        json_object_set_new(u, "usage", usage_json(prompt_tokens, completion_tokens));
        emit_chunk(u, emit, ctx);
    }
    static const char done[] = "data: [DONE]\n\n";
    emit(ctx, done, sizeof done - 1);
}

/* ---- Mock as an adapter: the answer goes through the local transport ---- */

typedef struct piece_list {
    arena *pool;
    upstream_piece *items;
    size_t n, cap;
} piece_list;

static void add_piece(void *ctx, const char *event, size_t len)
{
    piece_list *l = ctx;
    l->items = arena_grow(l->pool, l->items, l->n, &l->cap, sizeof *l->items, 8);
    l->items[l->n++] = (upstream_piece){arena_strndup(l->pool, event, len), len};
}

int mock_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                    provider_request *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_t *messages = json_object_get(body, "messages");
    const char *text = mock_answer_text(t, messages, pool);
    uint64_t prompt = mock_count_prompt_tokens(t, messages);
    uint64_t completion = mock_count_tokens(t, text);
    const char *id =
        arena_printf(pool, "chatcmpl-%s", request_id && *request_id ? request_id : "mock");
    bool stream = json_is_true(json_object_get(body, "stream"));
    upstream_local_answer *a = arena_calloc(pool, 1, sizeof *a);
    a->status = 200;
    a->delay_ms = t->mock.latency_ms > 0 ? (unsigned)t->mock.latency_ms : 0;
    piece_list l = {.pool = pool};
    if (stream) {
        /* usage comes at the end like an OpenAI stream asked for it; the relay drops it for a
         * client that did not ask (stream_usage_added), as for a real provider */
        json_t *so = json_object_get(body, "stream_options");
        out->stream_usage_added = !json_is_true(json_object_get(so, "include_usage"));
        a->content_type = "text/event-stream";
        mock_stream_events(t, id, text, prompt, completion, true, add_piece, &l);
    } else {
        char *answer = mock_completion_json(t, id, text, prompt, completion);
        if (!answer) {
            snprintf(err, errlen,
                     "the Mock answer of model target '%s' could not be encoded as JSON", t->name);
            return PROVIDER_EREQUEST;
        }
        a->content_type = "application/json";
        add_piece(&l, answer, strlen(answer));
        free(answer);
    }
    a->pieces = l.items;
    a->n_pieces = l.n;
    out->local = a;
    out->url = arena_printf(pool, "mock:%s", t->name);
    return 0;
}
