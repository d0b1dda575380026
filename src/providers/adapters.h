/* adapters.h — private to src/providers/: the per-family functions behind provider.h's
 * dispatchers (openai.c switches on the target type and calls these). Not for other layers. */
#ifndef CTXGATE_PROVIDERS_ADAPTERS_H
#define CTXGATE_PROVIDERS_ADAPTERS_H

#include "providers/provider.h"

/* Every family's stream state starts with this, so the dispatchers can tell whose it is. */
struct provider_stream {
    cfg_target_type type;
};

/* ---- Anthropic Messages API (anthropic.c) ---- */
int anthropic_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                         provider_request *out, char *err, size_t errlen);
int anthropic_build_chat_raw(const cfg_target *t, const provider_raw_body *b,
                             const char *request_id, arena *pool, provider_request *out);
const char *anthropic_finish_reason(const char *stop_reason);
char *anthropic_chat_answer(const char *body, size_t len, const char *model, size_t *out_len,
                            provider_usage *usage, char *why, size_t whylen);
provider_stream *anthropic_decoder_new(const char *model);
int anthropic_decoder_event(provider_stream *s, const char *ev, size_t len, buf *out, char *why,
                            size_t whylen);
bool anthropic_decoder_done(const provider_stream *s);
void anthropic_decoder_free(provider_stream *s);
/* An Anthropic caller's own Messages body to an Anthropic target: the client's bytes with the
 * model and the target's parameters spliced in (0, or PROVIDER_EREQUEST with err). */
int anthropic_build_native(const cfg_target *t, const provider_raw_body *b, const char *request_id,
                           arena *pool, provider_request *out, char *err, size_t errlen);
/* POST {endpoint}/v1/messages/count_tokens: an Anthropic caller's count_tokens body with the
 * target's model id. */
int anthropic_build_count_tokens(const cfg_target *t, const char *body, size_t len,
                                 const char *request_id, arena *pool, provider_request *out,
                                 char *err, size_t errlen);
/* openai.c: the raw-body splice both families use: model renamed, the target's parameters the
 * request lacks added, then extra (raw JSON members, each starting with a comma; or NULL);
 * out->body stays NULL when nothing changes. 0, or -1 with err. */
int provider_splice_raw(const cfg_target *t, const provider_raw_body *b, const char *extra,
                        provider_request *out, char *err, size_t errlen);
bool provider_raw_has_key(const provider_raw_body *b, const char *key);
bool anthropic_answer_usage(const char *body, size_t len, provider_usage *usage);
/* anthropic_splice.c: the common shapes from raw bytes; false when declined (out unchanged
 * or partly written: the caller discards it). tape: the body's tokens as the chat probe
 * recorded them (replayed instead of parsing again), or NULL. */
bool anthropic_splice_request(const cfg_target *t, const char *body, size_t len,
                              const sax_tape *tape, arena *pool, buf *out);
bool anthropic_splice_answer(const char *body, size_t len, const char *model, buf *out,
                             provider_usage *usage);
/* the answer by the document path alone (anthropic_chat_answer tries the splice first) */
char *anthropic_chat_answer_doc(const char *body, size_t len, const char *model, size_t *out_len,
                                provider_usage *usage, char *why, size_t whylen);
void anthropic_map_error(int status, const char *body, size_t len, provider_error *out);

#endif
