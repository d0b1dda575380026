/* fuzz_gemini.c — the Gemini adapter on arbitrary upstream bytes: the input is cut into SSE
 * events the way the relay cuts it (at "\n\n" or "\r\n\r\n") and translated event by event; the
 * whole input also goes through the non-streamed answer, embeddings and error translations.
 *
 * Checks beyond "no crash": every translated stream event is a "data: " line ending in a blank
 * line whose payload is [DONE] or a JSON object, nothing follows [DONE], and whole answers are
 * chat.completion / list documents that decode. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "providers/provider.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

static void check_events(const buf *out)
{
    const char *p = out->data;
    const char *end = p ? p + out->len : NULL;
    bool done = false;
    while (p && p < end) {
        if (done || end - p < 8 || memcmp(p, "data: ", 6) != 0) abort();
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        if (!e) abort();
        const char *d = p + 6;
        size_t n = (size_t)(e - d);
        if (n == 6 && !memcmp(d, "[DONE]", 6)) {
            done = true;
        } else {
            json_t *v = json_decode_fast(d, n, NULL, 0);
            if (!json_is_object(v)) abort();
            json_decref(v);
        }
        p = e + 2;
    }
}

static void check_doc(char *text, size_t len, const char *object)
{
    if (!text) return;
    json_t *v = json_decode_fast(text, len, NULL, 0);
    const char *o = json_string_value(json_object_get(v, "object"));
    if (!o || strcmp(o, object) != 0) abort();
    json_decref(v);
    free(text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    const char *d = (const char *)data;
    cfg_target t = {.name = "gem",
                    .type = TARGET_GEMINI,
                    .endpoint = "https://generativelanguage.googleapis.com",
                    .model_name = "gemini-2.0-flash"};
    provider_stream *s = provider_stream_new(&t, "gem");
    if (!s) abort();
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
        char why[320];
        if (provider_stream_event(s, d + pos, end - pos, &out, why, sizeof why))
            break; /* the relay stops here too */
        pos = end;
    }
    check_events(&out);
    if (provider_stream_done(s) &&
        (out.len < 14 || memcmp(out.data + out.len - 14, "data: [DONE]\n\n", 14) != 0))
        abort();
    buf_free(&out);
    provider_stream_free(s);

    char why[320];
    size_t n = 0;
    check_doc(provider_chat_answer(&t, d, size, "gem", &n, NULL, why, sizeof why), n,
              "chat.completion");
    check_doc(provider_embeddings_answer(&t, d, size, "gem", &n, why, sizeof why), n, "list");
    provider_error e;
    provider_map_error(&t, 500, d, size, &e);
    if (e.status < 400 || e.status > 599 || !e.type) abort();
    return 0;
}
