/* provider.h — the adapter interface between the gateway's internal request (an OpenAI Chat
 * Completions body, our canonical message representation) and one provider's wire format.
 *
 * An adapter turns the canonical body into an upstream HTTP request, and turns the provider's
 * answer (whole or one SSE event at a time) back. Adapters never do I/O: the pipeline owns the
 * upstream call, retries and timing. Issue 2 ships OpenAI-family adapters and Mock. */
#ifndef CTXGATE_PROVIDERS_PROVIDER_H
#define CTXGATE_PROVIDERS_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/str.h"
#include "upstream/client.h"

enum { PROVIDER_MAX_HEADERS = 8 };

typedef struct provider_request {
    const char *url;
    upstream_header headers[PROVIDER_MAX_HEADERS];
    size_t n_headers;
    char *body; /* malloc'd by the adapter (json_dumps); freed by the caller */
    size_t body_len;
    /* the adapter asked for usage on a stream the client did not ask it for (OpenAI family:
     * stream_options.include_usage): the relay strips what the client would not have got */
    bool stream_usage_added;
} provider_request;

typedef struct provider_usage {
    bool present;
    uint64_t prompt_tokens;
    uint64_t completion_tokens;
} provider_usage;

/* Builds the upstream chat request for target t from the canonical body. body is modified in
 * place (model replaced, parameters merged under it; a stream without stream_options gets
 * stream_options.include_usage, see provider_request.stream_usage_added). body NULL: only URL and
 * headers are built (out->body stays NULL) because the caller forwards the client's bytes
 * unchanged. request_id is forwarded as X-Request-Id. Returns 0, or -1 with a sentence in err when
 * the target type has no adapter yet. */
int provider_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                        provider_request *out, char *err, size_t errlen);

/* Loads what the gateway's targets need before they serve (the tokenizer encodings Mock targets
 * count with), so no request pays for it. Call off the loops, at start and on reload. */
void provider_prepare(const cfg_gateway *gw);

/* The client's body, forwarded as its own bytes with at most two edits: the model value
 * replaced and configured parameters the body lacks added before its closing brace. */
typedef struct provider_raw_body {
    const char *body;
    size_t len;
    const char *model;  /* the model the client sent, decoded */
    size_t model_start; /* raw bytes of its value: [model_start, model_end) */
    size_t model_end;
    size_t object_end; /* offset of the top-level object's closing '}' */
    const str *keys;   /* the body's top-level keys, decoded */
    size_t n_keys;
    bool stream; /* the body has "stream": true */
} provider_raw_body;

/* Like provider_build_chat, from raw bytes (no document). out->body is NULL when the client's
 * bytes go upstream unchanged; else a malloc'd edited copy (edits are spliced into the client's
 * bytes, never re-encoded). */
int provider_build_chat_raw(const cfg_target *t, const provider_raw_body *b, const char *request_id,
                            arena *pool, provider_request *out, char *err, size_t errlen);

/* The upstream request for pr: POST, its URL and headers, body (borrowed: it must live until
 * on_done or cancel) and t's connect / first-token / total timeouts. Callbacks and udata are
 * the caller's to set. */
upstream_opts provider_upstream_opts(const cfg_target *t, const provider_request *pr,
                                     const char *body, size_t body_len);

/* True when the target type answers from the gateway itself (Mock). */
bool provider_is_local(const cfg_target *t);

/* Reads `usage` from a complete non-streamed answer. */
void provider_parse_usage(const char *body, size_t len, provider_usage *u);

/* Reads usage from one SSE event's data payload if it carries a non-null usage object. */
void provider_parse_stream_usage(const char *data, size_t len, provider_usage *u);

/* Extracts a human-readable message from a provider error body ({"error":{"message":..}} or
 * text); writes at most outlen-1 bytes and a NUL, always valid UTF-8 (a long message is cut at a
 * character boundary). */
enum { PROVIDER_ERROR_MESSAGE_MAX = 512 };
void provider_error_message(const char *body, size_t len, char *out, size_t outlen);

/* The OpenAI error type for a provider's 429: its own error.type when that is one of OpenAI's
 * rate-limit types ("requests", "tokens", "insufficient_quota"), else "requests". */
const char *provider_rate_limit_type(const char *body, size_t len);

/* ---- Mock: the gateway answers itself (deterministic, for demos and tests) ---- */

/* The answer text: config.mock.text, else the last user message's text. Arena-allocated. */
const char *mock_answer_text(const cfg_target *t, json_t *messages, arena *pool);
/* Token counts for Mock usage: exact, with the BPE encoding OpenAI uses for t's modelName
 * (src/tokens/). When the tokenizer data cannot be loaded the counts fall back to ceil(bytes/4)
 * per text plus OpenAI's per-message overhead, and a warning saying why is logged once. */
uint64_t mock_count_tokens(const cfg_target *t, const char *text);
uint64_t mock_count_prompt_tokens(const cfg_target *t, json_t *messages);
/* A complete chat.completion JSON (malloc'd); NULL when it cannot be encoded (text that is not
 * UTF-8, out of memory). */
char *mock_completion_json(const cfg_target *t, const char *id, const char *text,
                           uint64_t prompt_tokens, uint64_t completion_tokens);
/* The SSE bytes of the whole streamed answer, event by event: calls emit(ctx, event, len) once
 * per `data: ...\n\n` event, ending with `data: [DONE]`. */
void mock_stream_events(const cfg_target *t, const char *id, const char *text,
                        uint64_t prompt_tokens, uint64_t completion_tokens, bool include_usage,
                        void (*emit)(void *ctx, const char *event, size_t len), void *ctx);

#endif
