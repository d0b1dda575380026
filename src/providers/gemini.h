/* gemini.h — the Gemini adapter's entry points (Google AI generateContent REST API), called by
 * the type dispatch of provider.h's functions; each has the contract of its provider_* namesake
 * for targets of type Gemini. */
#ifndef CTXGATE_PROVIDERS_GEMINI_H
#define CTXGATE_PROVIDERS_GEMINI_H

#include "providers/provider.h"

int gemini_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                      provider_request *out, char *err, size_t errlen);
char *gemini_chat_answer(const char *body, size_t len, const char *model, size_t *out_len,
                         char *why, size_t whylen);

typedef struct gemini_stream gemini_stream;
gemini_stream *gemini_stream_new(const char *model);
int gemini_stream_event(gemini_stream *s, const char *ev, size_t len, buf *out, char *why,
                        size_t whylen);
bool gemini_stream_done(const gemini_stream *s);
void gemini_stream_free(gemini_stream *s); /* NULL ok */

void gemini_map_error(int status, const char *body, size_t len, provider_error *out);

int gemini_build_embeddings(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                            provider_request *out, char *err, size_t errlen);
char *gemini_embeddings_answer(const char *body, size_t len, const char *model, size_t *out_len,
                               char *why, size_t whylen);

/* The model id as it goes into the URL: modelName without a leading "models/". NULL when it is
 * not a plain id (letters, digits, '.', '-', '_'), so it cannot change the URL's path or query. */
const char *gemini_model_id(const char *model_name);

#endif
