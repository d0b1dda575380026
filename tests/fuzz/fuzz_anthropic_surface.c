/* fuzz_anthropic_surface.c — the Anthropic Messages client surface on arbitrary bytes: the whole
 * input as a client's /messages and /messages/count_tokens body (anthropic_request_to_canonical,
 * anthropic_count_request), as a canonical answer (anthropic_response_from_canonical) and as an
 * OpenAI error body (anthropic_error_from_openai); then cut into SSE events the way the relay
 * cuts a canonical stream (at "\n\n" or "\r\n\r\n") and fed to the stream encoder, ending with
 * anthropic_stream_error when the stream was left open.
 *
 * Checks beyond "no crash": an accepted request encodes and has model and messages; a refusal
 * has a NUL-terminated, valid UTF-8 message; every answer and error body is a JSON object; the
 * encoder's output is a sequence of "event: NAME\ndata: {JSON whose type is NAME}\n\n". */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "core/utf8.h"
#include "surface/anthropic.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

static void check_request(json_t *doc, const anthropic_refusal *why)
{
    if (!doc) {
        const char *end = memchr(why->message, 0, sizeof why->message);
        if (!end || end == why->message) abort();
        if (!utf8_valid(why->message, (size_t)(end - why->message))) abort();
        if (!memchr(why->param, 0, sizeof why->param)) abort();
        return;
    }
    if (!json_is_string(json_object_get(doc, "model"))) abort();
    if (!json_is_array(json_object_get(doc, "messages"))) abort();
    char *s = json_encode_fast(doc, NULL);
    if (!s) abort();
    free(s);
    json_decref(doc);
}

static void check_object(char *text, size_t len)
{
    if (!text) return;
    json_t *v = json_loadb(text, len, JSON_ALLOW_NUL, NULL);
    if (!json_is_object(v)) abort();
    json_decref(v);
    free(text);
}

/* out holds only whole Anthropic events. */
static void check_events(const buf *out)
{
    const char *p = out->data ? out->data : "";
    const char *end = p + out->len;
    while (p < end) {
        if ((size_t)(end - p) < 7 || memcmp(p, "event: ", 7) != 0) abort();
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl || (size_t)(end - nl) < 7 || memcmp(nl + 1, "data: ", 6) != 0) abort();
        const char *d = nl + 7;
        const char *stop = memmem(d, (size_t)(end - d), "\n\n", 2);
        if (!stop) abort();
        json_t *v = json_loadb(d, (size_t)(stop - d), JSON_ALLOW_NUL, NULL);
        const char *type = json_string_value(json_object_get(v, "type"));
        size_t nlen = (size_t)(nl - p - 7);
        if (!type || strlen(type) != nlen || memcmp(type, p + 7, nlen) != 0) abort();
        json_decref(v);
        p = stop + 2;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    const char *d = (const char *)data;
    anthropic_refusal why;
    check_request(anthropic_request_to_canonical(d, size, &why), &why);
    check_request(anthropic_count_request(d, size, &why), &why);

    size_t n = 0;
    char *text = anthropic_response_from_canonical(d, size, "claude-fuzz", &n);
    check_object(text, n);
    text = anthropic_error_from_openai(400 + (int)(size % 200), d, size, &n);
    if (!text) abort();
    check_object(text, n);

    anthropic_stream *s = anthropic_stream_new("claude-fuzz", size);
    if (!s) return 0;
    buf out = BUF_INIT;
    size_t pos = 0;
    while (pos < size) {
        const char *sep = memmem(d + pos, size - pos, "\n\n", 2);
        size_t seplen = 2;
        const char *crlf = memmem(d + pos, size - pos, "\r\n\r\n", 4);
        if (crlf && (!sep || crlf < sep)) {
            sep = crlf;
            seplen = 4;
        }
        size_t end = sep ? (size_t)(sep - d) + seplen : size;
        if (anthropic_stream_event(s, d + pos, end - pos, &out) != 0) break; /* the relay stops */
        pos = end;
    }
    if (anthropic_stream_started(s)) anthropic_stream_error(s, 502, "cut", &out);
    check_events(&out);
    buf_free(&out);
    anthropic_stream_free(s);
    return 0;
}
