/* provider.c — the type dispatch of provider.h's answer-side functions (answer, stream and
 * embeddings translation, error mapping): each family's adapter (adapters.h, gemini.h) does the
 * work; OpenAI-speaking types (OpenAI family, Azure, Mock) have nothing to translate. */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>

#include "providers/adapters.h"
#include "providers/gemini.h"
#include "providers/provider.h"

/* A Gemini stream behind the common header every family's stream starts with (adapters.h). */
typedef struct gemini_wrap {
    provider_stream base;
    gemini_stream *g;
} gemini_wrap;

bool provider_speaks_openai(const cfg_target *t)
{
    return t->type != TARGET_ANTHROPIC && t->type != TARGET_GEMINI;
}

static void no_translation(const cfg_target *t, char *why, size_t whylen)
{
    snprintf(why, whylen, "model target '%s' has no answer translation for its type", t->name);
}

char *provider_chat_answer(const cfg_target *t, const char *body, size_t len, const char *model,
                           size_t *out_len, provider_usage *usage, char *why, size_t whylen)
{
    if (t->type == TARGET_ANTHROPIC)
        return anthropic_chat_answer(body, len, model, out_len, usage, why, whylen);
    if (t->type == TARGET_GEMINI) return gemini_chat_answer(body, len, model, out_len, why, whylen);
    no_translation(t, why, whylen);
    return NULL;
}

provider_stream *provider_stream_new(const cfg_target *t, const char *model)
{
    if (t->type == TARGET_ANTHROPIC) return anthropic_decoder_new(model);
    if (t->type != TARGET_GEMINI) return NULL;
    gemini_wrap *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->base.type = TARGET_GEMINI;
    w->g = gemini_stream_new(model);
    if (!w->g) {
        free(w);
        return NULL;
    }
    return &w->base;
}

int provider_stream_event(provider_stream *s, const char *ev, size_t len, buf *out, char *why,
                          size_t whylen)
{
    assert(s);
    if (s->type == TARGET_ANTHROPIC) return anthropic_decoder_event(s, ev, len, out, why, whylen);
    assert(s->type == TARGET_GEMINI);
    return gemini_stream_event(((gemini_wrap *)s)->g, ev, len, out, why, whylen);
}

bool provider_stream_done(const provider_stream *s)
{
    assert(s);
    if (s->type == TARGET_ANTHROPIC) return anthropic_decoder_done(s);
    assert(s->type == TARGET_GEMINI);
    return gemini_stream_done(((const gemini_wrap *)s)->g);
}

void provider_stream_free(provider_stream *s)
{
    if (!s) return;
    if (s->type == TARGET_ANTHROPIC) {
        anthropic_decoder_free(s);
        return;
    }
    assert(s->type == TARGET_GEMINI);
    gemini_stream_free(((gemini_wrap *)s)->g);
    free(s);
}

void provider_map_error(const cfg_target *t, int status, const char *body, size_t len,
                        provider_error *out)
{
    if (t->type == TARGET_ANTHROPIC) {
        anthropic_map_error(status, body, len, out);
        return;
    }
    if (t->type == TARGET_GEMINI) {
        gemini_map_error(status, body, len, out);
        return;
    }
    /* OpenAI-speaking targets: their own error.type is already OpenAI's; by status otherwise */
    if (status == 429)
        *out = (provider_error){429, provider_rate_limit_type(body, len), "rate_limit_exceeded"};
    else if (status >= 500)
        *out = (provider_error){status, "server_error", "upstream_error"};
    else
        *out = (provider_error){status, "invalid_request_error", "upstream_rejected"};
}

char *provider_embeddings_answer(const cfg_target *t, const char *body, size_t len,
                                 const char *model, size_t *out_len, char *why, size_t whylen)
{
    if (t->type == TARGET_GEMINI)
        return gemini_embeddings_answer(body, len, model, out_len, why, whylen);
    no_translation(t, why, whylen);
    return NULL;
}
