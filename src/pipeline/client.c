/* client.c — the caller's API family. The pipeline produces every answer in the canonical
 * OpenAI form (a chat.completion, chunk events, OpenAI error documents); here it is encoded for
 * the caller just before it is written: as it is for OpenAI callers, through the Anthropic
 * encoder (src/surface/anthropic.c) for /messages callers. Also the /messages and
 * /messages/count_tokens entry points, which translate the caller's request into the canonical
 * document and hand it to the chat route (chat.c). */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/call.h"
#include "pipeline/route.h"
#include "surface/anthropic.h"

/* The caller's prompt as the gateway counts it, for message_start (the final figure comes in
 * message_delta from the provider's usage). */
static uint64_t prompt_estimate(pl_call *c)
{
    json_t *body = pl_call_body(c);
    if (!body || !c->plan.target) return 0;
    return mock_count_prompt_tokens(c->plan.target, json_object_get(body, "messages"));
}

/* A native stream (same family): the provider's own events read so far go out as they came;
 * d, their translation, is dropped. */
static bool native_write(pl_call *c)
{
    buf *raw = &c->upstream.native_out;
    if (!raw->len) return true;
    bool ok = http_stream_write(c->r, raw->data, raw->len);
    buf_reset(raw);
    return ok;
}

bool pl_client_write(pl_call *c, const char *d, size_t n)
{
    if (c->upstream.native) return native_write(c);
    if (c->family == PL_FAMILY_OPENAI) return http_stream_write(c->r, d, n);
    if (!n) return true;
    if (!c->client_stream) {
        c->client_stream = anthropic_stream_new(c->model, prompt_estimate(c));
        if (!c->client_stream) abort();
    }
    /* d holds whole events: each ends at a blank line */
    buf_reset(&c->client_out);
    bool started = anthropic_stream_started(c->client_stream);
    size_t pos = 0;
    while (pos < n) {
        const char *end = memmem(d + pos, n - pos, "\n\n", 2);
        size_t ev_end = end ? (size_t)(end - d) + 2 : n;
        if (anthropic_stream_event(c->client_stream, d + pos, ev_end - pos, &c->client_out) != 0)
            log_warn("request %s: an event could not be encoded for the Anthropic caller",
                     c->request_id);
        pos = ev_end;
        if (!started && anthropic_stream_started(c->client_stream)) {
            anthropic_stream_ping(&c->client_out); /* after message_start, as Anthropic does */
            started = true;
        }
    }
    if (!c->client_out.len) return true;
    return http_stream_write(c->r, c->client_out.data, c->client_out.len);
}

void pl_client_encode_whole(pl_call *c, int status, const char *body, size_t len, char **out,
                            size_t *out_len)
{
    *out = NULL;
    if (c->family == PL_FAMILY_OPENAI || !body) return;
    /* the provider's own answer (same family), or a count_tokens answer, goes as it is */
    if ((c->upstream.native || c->endpoint == PL_EP_COUNT_TOKENS) && status >= 200 && status < 300)
        return;
    if (status >= 200 && status < 300)
        *out = anthropic_response_from_canonical(body, len, c->model, out_len);
    else
        *out = anthropic_error_from_openai(status, body, len, out_len);
    if (!*out && status >= 200 && status < 300)
        log_warn("request %s: the answer could not be encoded for the Anthropic caller",
                 c->request_id);
}

/* A refused /messages request: 400 in Anthropic's format (pl_fail builds the OpenAI document,
 * pl_finish encodes it for the caller). */
static void refuse(pl_call *c, const anthropic_refusal *why)
{
    pl_fail(c, 400, "invalid_request_error", "invalid_request", why->param[0] ? why->param : NULL,
            "%s", why->message);
}

/* The chat probe over the caller's Messages body: the model's bytes and the top-level keys the
 * same-family splice needs (true when it passed and the model is a string). */
static bool probe_offsets(pl_call *c)
{
    const http_request *r = c->r;
    return chat_probe_parse(r->body.p ? r->body.p : "", r->body.n, r->pool, &c->probe, NULL) ==
               PROBE_OK &&
           c->probe.model_is_string;
}

/* The request is valid Anthropic that the canonical form cannot carry (a document block, a
 * server tool, container, ...): only an Anthropic target, as the same family, can take it. The
 * refusal waits for the route; a phase that finds the call cannot go that way gives it. */
static bool defer(pl_call *c, const anthropic_refusal *why)
{
    if (!why->cannot_carry || !c->probed) return false;
    anthropic_refusal *kept = arena_alloc(c->pool, sizeof *kept);
    *kept = *why;
    c->deferred = kept;
    c->model = c->probe.model; /* decoded by the probe, in the request's arena */
    c->stream = c->probe.stream;
    c->include_usage = c->stream;
    c->body_modified = true;
    return true;
}

void pl_refuse_deferred(pl_call *c)
{
    assert(c->deferred);
    pl_fail(c, 400, "invalid_request_error", "invalid_request",
            c->deferred->param[0] ? c->deferred->param : NULL,
            "%s (model '%s' is not served by an Anthropic target, which alone could take it as "
            "it is)",
            c->deferred->message, c->model);
}

pl_step pl_messages_decode(pl_call *c)
{
    http_request *r = c->r;
    anthropic_refusal why = {{0}, {0}, false};
    json_t *doc = anthropic_request_to_canonical(r->body.p ? r->body.p : "", r->body.n, &why);
    /* an Anthropic target may take the caller's own bytes (same family): the probe finds the
     * model's bytes and the top-level keys for the splice; a body it refuses is translated */
    c->probed = probe_offsets(c);
    if (!doc) {
        if (defer(c, &why)) return PL_CONTINUE;
        refuse(c, &why);
        return PL_FINISH;
    }
    json_decref(c->body);
    c->body = doc;
    c->body_modified = true; /* never the client's bytes: they are another family's */
    c->model = arena_strdup(r->pool, json_string_value(json_object_get(doc, "model")));
    c->stream = json_is_true(json_object_get(doc, "stream"));
    /* the encoder reports usage in message_delta: the canonical stream must carry it */
    c->include_usage = c->stream;
    if (c->stream) {
        json_t *so = json_object();
        json_object_set_new(so, "include_usage", json_true());
        json_object_set_new(doc, "stream_options", so);
    }
    assert(c->model);
    return PL_CONTINUE;
}

/* Exact counts come from the gateway's tokenizer, which is OpenAI's: targets of type OpenAI and
 * AzureOpenAI, and Mock (which counts with it). For others the count would be a guess. */
static bool tokenizer_knows(const cfg_target *t)
{
    return t->type == TARGET_OPENAI || t->type == TARGET_AZURE_OPENAI || t->type == TARGET_MOCK;
}

pl_step pl_count_tokens(pl_call *c)
{
    http_request *r = c->r;
    anthropic_refusal why = {{0}, {0}, false};
    json_t *doc = anthropic_count_request(r->body.p ? r->body.p : "", r->body.n, &why);
    if (!doc) {
        /* what the canonical form cannot carry may still be counted by an Anthropic target */
        c->probed = why.cannot_carry && probe_offsets(c);
        if (!defer(c, &why)) {
            refuse(c, &why);
            return PL_FINISH;
        }
    } else {
        json_decref(c->body);
        c->body = doc;
        c->model = arena_strdup(r->pool, json_string_value(json_object_get(doc, "model")));
    }
    assert(c->model);
    const cfg_target *t = pl_chat_resolve(c);
    if (!t) return PL_FINISH;
    c->plan.target = t;
    /* a target that counts for itself is asked (its endpoint, through the upstream phase) */
    if (provider_counts_tokens(t)) return PL_CONTINUE;
    if (c->deferred) {
        pl_refuse_deferred(c);
        return PL_FINISH;
    }
    if (!tokenizer_knows(t)) {
        pl_fail(c, 400, "invalid_request_error", "count_not_supported", "model",
                "Model '%s' is served by a target of a type whose tokenizer the gateway does not "
                "have; token counts are exact only for OpenAI, AzureOpenAI and Mock targets (the "
                "gateway counts) and Anthropic targets (the provider counts).",
                c->model);
        return PL_FINISH;
    }
    uint64_t n = mock_count_prompt_tokens(t, json_object_get(doc, "messages"));
    /* tool definitions: their JSON text (OpenAI's own rendering of tools is not published) */
    json_t *tools = json_object_get(doc, "tools");
    if (json_array_size(tools)) {
        char *text = json_dumps(tools, JSON_COMPACT);
        if (text) n += mock_count_tokens(t, text);
        free(text);
    }
    char body[64];
    int len = snprintf(body, sizeof body, "{\"input_tokens\":%llu}", (unsigned long long)n);
    /* not a Message: written as it is (pl_client_encode_whole) */
    pl_finish(c, 200, &pl_json_ct, 1, body, (size_t)len);
    return PL_FINISH;
}
