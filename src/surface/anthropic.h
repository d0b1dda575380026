/* anthropic.h — the Anthropic Messages API as a client surface: POST {prefix}/messages and
 * {prefix}/messages/count_tokens in front of any target type.
 *
 * The pipeline works on one internal representation, the canonical OpenAI Chat Completions
 * document (see providers/provider.h for its extensions). This module translates the client's
 * Messages request into it, and the canonical answer — whole, event by event, or an error — back
 * into what the Anthropic API and its SDKs expect. It does no I/O and knows no configuration. */
#ifndef CTXGATE_SURFACE_ANTHROPIC_H
#define CTXGATE_SURFACE_ANTHROPIC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* Why a request was refused: always status 400 and Anthropic type "invalid_request_error",
 * param the field at fault as a path ("messages.1.content.0.source.media_type"), message a
 * sentence naming it. */
typedef struct anthropic_refusal {
    char param[128];
    char message[512];
    /* valid Anthropic that the canonical form cannot carry (documents, server tools, the Files
     * API, container, ...), not a malformed request: an Anthropic target can still take the
     * request as it is (the pipeline's same-family path) */
    bool cannot_carry;
} anthropic_refusal;

/* The client's Messages body -> a new canonical chat document (a new reference), or NULL with
 * why filled in. Checked: model (string), max_tokens (required positive integer), messages
 * (non-empty, roles user/assistant), system (string or text blocks), content (string or blocks:
 * text, image base64/url, tool_use, tool_result, thinking, redacted_thinking, document refused
 * with a clear message), tools (name, description, input_schema), tool_choice (auto, any, tool,
 * none), stop_sequences, temperature, top_p, stream, metadata.user_id -> user; Anthropic-only
 * parameters (top_k, thinking, service_tier) go to the canonical "anthropic" object.
 * Mapping: system -> a leading system message; tool_use blocks -> assistant tool_calls (ids
 * kept); tool_result blocks -> tool messages (in order, before the user's other content);
 * images -> image_url parts (base64 as a data: URL). */
json_t *anthropic_request_to_canonical(const char *body, size_t len, anthropic_refusal *why);

/* A count_tokens body (model, messages, system, tools) -> the canonical messages array and tools
 * it stands for, checked like a Messages request except that max_tokens is not required. */
json_t *anthropic_count_request(const char *body, size_t len, anthropic_refusal *why);

/* A canonical chat.completion answer -> an Anthropic Message JSON (malloc'd, length in *out_len):
 * {id ("msg_" + the answer's id), type:"message", role:"assistant", model (the name the client
 * sent), content: [thinking blocks, text, tool_use {id, name, input (parsed arguments)}],
 * stop_reason (stop -> end_turn, or stop_sequence when a stop sequence ended it; length ->
 * max_tokens; tool_calls -> tool_use; content_filter -> refusal), stop_sequence, usage
 * {input_tokens, output_tokens, cache_read_input_tokens, cache_creation_input_tokens}}.
 * NULL when body is not a chat.completion (the pipeline checked it, so: out of memory). */
char *anthropic_response_from_canonical(const char *body, size_t len, const char *model,
                                        size_t *out_len);

/* Stream encoder: the canonical chunk stream -> Anthropic's event stream, event by event. */
typedef struct anthropic_stream anthropic_stream;
/* input_tokens: the prompt's count as far as the gateway knows it now (message_start needs one;
 * the final figure goes in message_delta.usage). */
anthropic_stream *anthropic_stream_new(const char *model, uint64_t input_tokens);
/* One canonical SSE event ("data: {chunk}\n\n", "data: [DONE]\n\n" or an error event
 * `data: {"error":{...}}\n\n`) -> zero or more Anthropic events appended to out, each
 * "event: NAME\ndata: {...}\n\n": message_start (first chunk), content_block_start / delta
 * (text_delta, input_json_delta, thinking_delta, signature_delta) / stop, message_delta
 * (stop_reason, stop_sequence, usage — held until the usage chunk or [DONE] so it carries the
 * final figures), message_stop at [DONE]. An error event becomes `event: error`. Returns 0, or
 * -1 when the event is not a canonical chunk (the pipeline made it, so: a bug or out of memory). */
int anthropic_stream_event(anthropic_stream *s, const char *ev, size_t len, buf *out);
/* A ping event (the pipeline sends one while the upstream is slow, as Anthropic does). */
void anthropic_stream_ping(buf *out);
/* Ends a started stream with an error: `event: error` with {type:"error",error:{type,message}}. */
void anthropic_stream_error(anthropic_stream *s, int status, const char *message, buf *out);
bool anthropic_stream_started(const anthropic_stream *s); /* message_start written */
void anthropic_stream_free(anthropic_stream *s);          /* NULL ok */

/* Anthropic's error type for an HTTP status: 400 invalid_request_error, 401
 * authentication_error, 403 permission_error, 404 not_found_error, 413 request_too_large, 429
 * rate_limit_error, 503/529 overloaded_error, 504 timeout_error, others api_error. */
const char *anthropic_error_type(int status);
/* An OpenAI-format error body (as the pipeline builds it) -> {"type":"error","error":{"type",
 * "message"}} (malloc'd; message kept, type from the status), never NULL. */
char *anthropic_error_from_openai(int status, const char *body, size_t len, size_t *out_len);

#endif
