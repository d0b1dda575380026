/* fuzz_sse.c — the OpenAI-family answer parsing on arbitrary upstream bytes: the stream is cut
 * into SSE events the way the relay cuts it (at "\n\n" or "\r\n\r\n"), each event goes through
 * provider_parse_stream_usage and the context stage's answer assembly (pl_context_stream_event,
 * on a call with only the answer slot in use, which is all that function touches); the whole
 * input also goes through the non-streamed readers (provider_parse_usage,
 * provider_error_message, pl_context_whole_answer).
 *
 * Checks beyond "no crash": the assembled answer is an assistant message whose content is a
 * string, null or content parts, and it encodes; the error message is NUL-terminated within its
 * buffer. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "pipeline/call.h"
#include "providers/provider.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

static void check_answer(const json_t *a)
{
    if (!a) return;
    if (!json_is_object(a) || !json_is_string(json_object_get(a, "role"))) abort();
    /* as the client got it: a string, null, or content parts (objects with a string type) */
    json_t *content = json_object_get(a, "content");
    if (!json_is_string(content) && !json_is_null(content) && !json_is_array(content)) abort();
    size_t i;
    json_t *part;
    json_array_foreach(json_is_array(content) ? content : NULL, i, part)
    {
        if (!json_is_object(part) || !json_is_string(json_object_get(part, "type"))) abort();
    }
    char *s = json_dumps(a, JSON_COMPACT);
    if (!s) abort();
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    const char *d = (const char *)data;
    pl_call c;
    memset(&c, 0, sizeof c);
    c.pool = arena_new(4096); /* what the call's own memory holds (tool-call buffers) */
    provider_usage u = {0};
    size_t pos = 0;
    while (pos < size) {
        const char *sep = memmem(d + pos, size - pos, "\n\n", 2);
        size_t seplen = 2;
        const char *crlf = memmem(d + pos, size - pos, "\r\n\r\n", 4);
        if (crlf && (!sep || crlf < sep)) {
            sep = crlf;
            seplen = 4;
        }
        size_t end = sep ? (size_t)(sep - d) + seplen : size; /* the tail, as at end of stream */
        provider_parse_stream_usage(d + pos, end - pos, &u);
        char why[320];
        if (!pl_context_stream_event(&c, d + pos, end - pos, why, sizeof why))
            break; /* the relay stops here too */
        pos = end;
    }
    check_answer(c.ctx.answer);

    provider_usage whole = {0};
    provider_parse_usage(d, size, &whole);
    char msg[200];
    memset(msg, 'x', sizeof msg);
    provider_error_message(d, size, msg, sizeof msg);
    if (!memchr(msg, 0, sizeof msg)) abort();

    char why[320];
    pl_context_whole_answer(&c, d, size, why, sizeof why);
    check_answer(c.ctx.answer);
    pl_context_free(&c); /* what the stage holds: the answer, its text and tool-call buffers */
    arena_free(c.pool);
    return 0;
}
