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
char *anthropic_chat_answer(const char *body, size_t len, const char *model, size_t *out_len,
                            char *why, size_t whylen);
provider_stream *anthropic_decoder_new(const char *model);
int anthropic_decoder_event(provider_stream *s, const char *ev, size_t len, buf *out, char *why,
                            size_t whylen);
bool anthropic_decoder_done(const provider_stream *s);
void anthropic_decoder_free(provider_stream *s);
void anthropic_map_error(int status, const char *body, size_t len, provider_error *out);

#endif
