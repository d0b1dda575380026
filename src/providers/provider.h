/* provider.h — the adapter interface between the gateway's internal request (an OpenAI Chat
 * Completions body, our canonical message representation) and one provider's wire format.
 *
 * An adapter turns the canonical body into an upstream HTTP request, and turns the provider's
 * answer (whole or one SSE event at a time) back. Adapters never do I/O: the pipeline owns the
 * upstream call, retries and timing. OpenAI family and Azure (openai.c), Anthropic
 * (anthropic.c), Gemini (gemini.c), Mock (mock.c). */
#ifndef CTXGATE_PROVIDERS_PROVIDER_H
#define CTXGATE_PROVIDERS_PROVIDER_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "core/arena.h"
#include "core/buf.h"
#include "core/sax_tape.h"
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
    const char *err_param; /* PROVIDER_EREQUEST: the canonical field at fault (static or pool) */
    const upstream_local_answer *local; /* Mock: the answer, made now, sent by no network */
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
    bool stream;          /* the body has "stream": true */
    const sax_tape *tape; /* the body's tokens, when the probe recorded them (else NULL) */
} provider_raw_body;

/* Like provider_build_chat, from raw bytes (no document). out->body is NULL when the client's
 * bytes go upstream unchanged; else a malloc'd edited copy (edits are spliced into the client's
 * bytes, never re-encoded). For an Anthropic target (provider_splices) the body is translated
 * from the raw bytes when it has one of the common shapes (docs/decisions/0004), else
 * PROVIDER_EDECLINED. */
int provider_build_chat_raw(const cfg_target *t, const provider_raw_body *b, const char *request_id,
                            arena *pool, provider_request *out, char *err, size_t errlen);

/* An Anthropic Messages request from a caller of that family, to an Anthropic target: the
 * caller's bytes go upstream with the model (and the target's parameters) spliced in, nothing
 * translated (docs/anthropic-api.md "Same family"). PROVIDER_EUNSUPPORTED for other types. */
int provider_build_messages_raw(const cfg_target *t, const provider_raw_body *b,
                                const char *request_id, arena *pool, provider_request *out,
                                char *err, size_t errlen);
/* POST {prefix}/messages/count_tokens to a target that counts for itself (Anthropic: its
 * count_tokens endpoint, the caller's body with the model id replaced); PROVIDER_EUNSUPPORTED
 * for other types (the gateway counts with its tokenizer where it knows the model). */
bool provider_counts_tokens(const cfg_target *t);
int provider_build_count_tokens(const cfg_target *t, const char *body, size_t len,
                                const char *request_id, arena *pool, provider_request *out,
                                char *err, size_t errlen);
/* The usage of an Anthropic Message answer (prompt = input + cache read + cache creation);
 * false when it has none that reads. */
bool provider_messages_usage(const char *body, size_t len, provider_usage *usage);

/* The upstream request for pr: POST, its URL and headers, body (borrowed: it must live until
 * on_done or cancel) and t's connect / first-token / total timeouts. Callbacks and udata are
 * the caller's to set. */
upstream_opts provider_upstream_opts(const cfg_target *t, const provider_request *pr,
                                     const char *body, size_t body_len);

/* True when the target type answers from the gateway itself (Mock). */
bool provider_is_local(const cfg_target *t);
/* True when the client's own bytes may go upstream (provider_build_chat_raw): the OpenAI
 * family and Azure. Others are built from the canonical document. */
bool provider_takes_raw(const cfg_target *t);
/* True when provider_build_chat_raw may translate the raw bytes for t (Anthropic). */
bool provider_splices(const cfg_target *t);

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

/* ---- providers whose wire format is not OpenAI's (Anthropic, Gemini) ----
 *
 * provider_build_chat above builds their upstream request from the canonical document (never
 * from raw bytes: provider_build_chat_raw returns -1 for them). Their answers are translated
 * back into the canonical OpenAI form here, so everything after the upstream phase (usage,
 * context assembly, the client's own family) sees OpenAI Chat Completions whatever the target.
 *
 * Canonical extensions (never sent to an OpenAI-family target, whose adapter deletes them):
 *   request  "anthropic": {top_k, thinking, metadata, service_tier, ...} — Anthropic-only
 *            parameters a /messages client sent, passed through to an Anthropic target;
 *            a message's "thinking_blocks": [{type:"thinking",thinking,signature} |
 *            {type:"redacted_thinking",data}] — kept so Anthropic → Anthropic round-trips.
 *   answer   message.thinking_blocks as above, message.reasoning_content (the thinking text);
 *            usage.prompt_tokens_details.cached_tokens (Anthropic cache_read_input_tokens,
 *            Gemini cachedContentTokenCount) and usage.cache_creation_input_tokens.
 *   chunk    delta.thinking_blocks / delta.reasoning_content likewise. */

/* provider_build_chat / provider_build_embeddings return 0, PROVIDER_EUNSUPPORTED when the target
 * type has no such API (the pipeline answers 501/400 with err), or PROVIDER_EREQUEST when this
 * request cannot be expressed in the provider's format (400 invalid_request_error; err says why
 * and out->err_param names the canonical field, e.g. "messages[2].content[0].type"). */
enum { PROVIDER_EUNSUPPORTED = -1, PROVIDER_EREQUEST = -2 };
/* provider_build_chat_raw for a target that translates (Anthropic): the body is not one of the
 * shapes it splices from the raw bytes; build it from the document with provider_build_chat. */
enum { PROVIDER_EDECLINED = -4 };

/* True when t answers in OpenAI's Chat Completions format as it is (OpenAI family, Azure, Mock):
 * its answers are relayed; otherwise they go through provider_chat_answer / provider_stream_*. */
bool provider_speaks_openai(const cfg_target *t);

/* A 2xx non-streamed chat answer of t -> an OpenAI chat.completion (malloc'd JSON text, length in
 * *out_len) whose "model" is model (the name the client sent): id, choices[0].message (content,
 * tool_calls with their ids, thinking extensions), finish_reason mapped, usage. NULL with a
 * sentence in why when body is not a valid answer in t's format. usage (may be NULL) gets the
 * answer's counts when the adapter has them at hand (Anthropic), so the caller need not read
 * them back out of the text; it is left as it was otherwise. */
char *provider_chat_answer(const cfg_target *t, const char *body, size_t len, const char *model,
                           size_t *out_len, provider_usage *usage, char *why, size_t whylen);

/* Stream translation, one per attempt. NULL when t speaks OpenAI (nothing to translate). */
typedef struct provider_stream provider_stream;
provider_stream *provider_stream_new(const cfg_target *t, const char *model);
/* One complete SSE event of t's stream (its bytes up to and including the blank line that ends
 * it, "event:" and "data:" lines as the provider sent them), appended to out as zero or more
 * OpenAI chat.completion.chunk events ("data: {...}\n\n"): a role chunk first, content and
 * reasoning deltas, tool calls as OpenAI streams them (first chunk with index, id, type,
 * function.name and empty arguments, then argument deltas as they come, never buffered whole),
 * a chunk with finish_reason, then at the provider's end of the answer (Anthropic message_stop;
 * Gemini: the event carrying finishReason) one usage-only chunk {"choices":[],"usage":{...}} and
 * "data: [DONE]\n\n". After that, nothing more is appended. A provider error event becomes
 * `data: {"error":{"message","type","code"}}\n\n` (the OpenAI type for it, e.g. Anthropic
 * overloaded_error -> "server_error", code "upstream_overloaded"). Keep-alives (ping) and unknown
 * event types append nothing. Returns 0, or -1 with a sentence in why when the event is not
 * valid in t's format (bad JSON, an event out of order). */
int provider_stream_event(provider_stream *s, const char *ev, size_t len, buf *out, char *why,
                          size_t whylen);
/* True once the provider's end of the answer was translated ([DONE] appended). */
bool provider_stream_done(const provider_stream *s);
void provider_stream_free(provider_stream *s); /* NULL ok */

/* A non-2xx answer of t: the status the client gets (Anthropic 529 overloaded -> 503, others as
 * sent), and OpenAI's error type and code for it (Anthropic rate_limit_error -> 429 "requests";
 * overloaded_error -> "server_error"/"upstream_overloaded"; Gemini RESOURCE_EXHAUSTED -> 429,
 * UNAVAILABLE -> 503, ...). The message itself comes from provider_error_message, which reads
 * {"error":{"message"}} in every family. type/code point to static strings; code may be NULL. */
typedef struct provider_error {
    int status;
    const char *type;
    const char *code;
} provider_error;
void provider_map_error(const cfg_target *t, int status, const char *body, size_t len,
                        provider_error *out);

/* POST {prefix}/embeddings. OpenAI family and Azure: the client's document with model replaced
 * and parameters merged, to {endpoint}/embeddings (Azure: its deployment URL). Gemini:
 * models/{model}:batchEmbedContents with one request per input string (input a string or an
 * array of strings; token-array inputs are PROVIDER_EREQUEST), dimensions ->
 * outputDimensionality. Anthropic and Mock: PROVIDER_EUNSUPPORTED. */
int provider_build_embeddings(const cfg_target *t, json_t *body, const char *request_id,
                              arena *pool, provider_request *out, char *err, size_t errlen);
/* A 2xx embeddings answer of t -> OpenAI's {"object":"list","data":[{object:"embedding",index,
 * embedding}],"model","usage":{prompt_tokens,total_tokens}} (malloc'd). NULL with why when it is
 * not one. For OpenAI-speaking targets the answer is relayed and this is not called. */
char *provider_embeddings_answer(const cfg_target *t, const char *body, size_t len,
                                 const char *model, size_t *out_len, char *why, size_t whylen);

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
/* provider_build_chat for Mock: the whole answer is made now (whole, or every SSE event as one
 * piece; a stream always ends with its usage chunk, stream_usage_added when the client did not
 * ask) and delivered by the local transport after config.mock.latencyMs. */
int mock_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                    provider_request *out, char *err, size_t errlen);
/* The SSE bytes of the whole streamed answer, event by event: calls emit(ctx, event, len) once
 * per `data: ...\n\n` event, ending with `data: [DONE]`. */
void mock_stream_events(const cfg_target *t, const char *id, const char *text,
                        uint64_t prompt_tokens, uint64_t completion_tokens, bool include_usage,
                        void (*emit)(void *ctx, const char *event, size_t len), void *ctx);

#endif
