/* mock.c — the Mock target's stage: the answer comes from providers/mock.c after
 * config.mock.latencyMs, whole or as an SSE stream, with usage like a real provider. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"
#include "pipeline/call.h"

static void emit_event(void *ctx, const char *event, size_t len)
{
    pl_call *c = ctx;
    /* with a context, [DONE] is written once the turns are committed */
    if (c->ctx_store && len >= 12 && memcmp(event, "data: [DONE]", 12) == 0) return;
    http_stream_write(c->r, event, len);
}

static void mock_answer(pl_call *c)
{
    const cfg_target *t = c->target;
    json_t *body = pl_call_body(c);
    if (!body) {
        pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL,
                "The request body could not be read as a JSON document.");
        return;
    }
    json_t *messages = json_object_get(body, "messages");
    const char *text = mock_answer_text(t, messages, c->r->pool);
    char id[64];
    snprintf(id, sizeof id, "chatcmpl-%s", c->request_id);
    c->usage.present = true;
    c->usage.prompt_tokens = mock_count_prompt_tokens(t, messages);
    c->usage.completion_tokens = mock_count_tokens(t, text);
    uint64_t first_byte_us = (clock_mono_ns() - c->start_ns) / 1000u;
    if (c->stream) c->ttft_us = first_byte_us;
    pl_attempt_end(c, true, first_byte_us);
    if (c->ctx_store) c->answer = json_pack("{s:s, s:s}", "role", "assistant", "content", text);
    if (!c->stream) {
        char *answer =
            mock_completion_json(t, id, text, c->usage.prompt_tokens, c->usage.completion_tokens);
        if (!answer) {
            pl_fail(c, 500, "server_error", "encoding_failed", NULL,
                    "The Mock answer of model target '%s' could not be encoded as JSON.", t->name);
            return;
        }
        if (c->ctx_store) {
            buf_reset(&c->resp);
            buf_puts(&c->resp, answer);
            free(answer);
            pl_context_commit(c, pl_context_finish_whole);
            return;
        }
        pl_finish(c, 200, &pl_json_ct, 1, answer, strlen(answer));
        free(answer);
        return;
    }
    pl_stream_begin(c);
    mock_stream_events(t, id, text, c->usage.prompt_tokens, c->usage.completion_tokens,
                       c->include_usage, emit_event, c);
    if (c->ctx_store) {
        pl_context_commit(c, pl_context_finish_stream);
        return;
    }
    c->status = 200;
    pl_finish_stream(c);
}

static void on_latency(uv_timer_t *timer)
{
    mock_answer(timer->data);
}

void pl_mock_start(pl_call *c)
{
    if (c->target->mock.latency_ms > 0)
        pl_call_timer(c, (uint64_t)c->target->mock.latency_ms, on_latency);
    else
        mock_answer(c);
}
