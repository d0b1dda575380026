/* fuzz_anthropic.c — the Anthropic adapter on arbitrary bytes: the input is cut into SSE events
 * the way the relay cuts it (at "\n\n" or "\r\n\r\n") and each goes through
 * provider_stream_event; the whole input also goes through provider_chat_answer and
 * provider_map_error, and, when it is a JSON document, through provider_build_chat as a
 * canonical request.
 *
 * Checks beyond "no crash": every appended stream event is `data: <JSON object>\n\n` or
 * `data: [DONE]\n\n`, nothing is appended once the stream is done, a refused event leaves a
 * sentence; a translated answer is a chat.completion with an assistant message; a built request
 * is a JSON object with model, max_tokens and messages, and a refused one names its field.
 * The splice (anthropic_splice.c) must agree with the document path: a request body the chat
 * probe accepts and the splice translates gives the same upstream body as provider_build_chat,
 * and an answer it translates the same chat.completion (but "created") as the document path. */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "pipeline/chat_probe.h"
#include "providers/adapters.h"
#include "providers/provider.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

static const cfg_target target = {
    .name = "claude",
    .type = TARGET_ANTHROPIC,
    .endpoint = "https://api.anthropic.com",
    .model_name = "claude-sonnet-4-20250514",
    .api_key = "k",
};

/* out[from..] holds only well-formed OpenAI events */
static void check_events(const buf *out, size_t from)
{
    if (!out->data) return; /* nothing appended yet */
    const char *p = out->data + from, *end = out->data + out->len;
    while (p < end) {
        if ((size_t)(end - p) < 8 || memcmp(p, "data: ", 6) != 0) abort();
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        if (!e) abort();
        const char *d = p + 6;
        size_t n = (size_t)(e - d);
        if (!(n == 6 && memcmp(d, "[DONE]", 6) == 0)) {
            json_t *v = json_loadb(d, n, 0, NULL);
            if (!json_is_object(v)) abort();
            json_decref(v);
        }
        p = e + 2;
    }
}

static void check_answer(const char *a, size_t len)
{
    json_t *v = json_loadb(a, len, 0, NULL);
    json_t *msg = json_object_get(json_array_get(json_object_get(v, "choices"), 0), "message");
    const char *role = json_string_value(json_object_get(msg, "role"));
    if (!role || strcmp(role, "assistant") != 0) abort();
    json_decref(v);
}

static void build(const char *d, size_t size)
{
    json_t *doc = json_decode_fast(d, size, NULL, 0);
    if (!doc) return;
    arena *pool = arena_new(4096);
    provider_request pr;
    char err[256] = "";
    int rc = provider_build_chat(&target, doc, "r", pool, &pr, err, sizeof err);
    if (rc == 0) {
        /* json_decode_fast: numbers go upstream as their text, beyond what jansson reads */
        json_t *b = json_decode_fast(pr.body, pr.body_len, NULL, 0);
        if (!json_is_object(b) || !json_is_integer(json_object_get(b, "max_tokens")) ||
            !json_is_array(json_object_get(b, "messages")) || !json_object_get(b, "model"))
            abort();
        json_decref(b);
    } else if (rc == PROVIDER_EREQUEST) {
        if (!pr.err_param || !err[0]) abort();
    } else if (rc != -1 || !err[0]) {
        abort();
    }
    free(pr.body);
    arena_free(pool);
    json_decref(doc);
}

/* text as json_encode_fast writes its json_decode_fast document ("created" left out): equal
 * documents with their keys in one order give equal text, numbers and \u0000 included */
static char *canon(const char *text, size_t len, size_t *out_len)
{
    json_t *v = json_decode_fast(text, len, NULL, 0);
    if (!v) abort();
    json_object_del(v, "created");
    char *s = json_encode_fast(v, out_len);
    if (!s) abort();
    json_decref(v);
    return s;
}

static void same_text(const char *a, size_t alen, const char *b, size_t blen)
{
    size_t n1, n2;
    char *x = canon(a, alen, &n1), *y = canon(b, blen, &n2);
    if (n1 != n2 || memcmp(x, y, n1) != 0) abort();
    free(x);
    free(y);
}

/* a spliced answer equals the document path's */
static void splice_answer(const char *d, size_t size)
{
    buf fast = BUF_INIT;
    provider_usage fu = {0}, su = {0};
    if (!anthropic_splice_answer(d, size, "claude", &fast, &fu)) {
        buf_free(&fast);
        return;
    }
    size_t n = 0;
    char why[320];
    char *slow = anthropic_chat_answer_doc(d, size, "claude", &n, &su, why, sizeof why);
    if (!slow) abort();
    same_text(fast.data, fast.len, slow, n);
    if (fu.prompt_tokens != su.prompt_tokens || fu.completion_tokens != su.completion_tokens)
        abort();
    free(slow);
    buf_free(&fast);
}

/* a spliced request body equals the document path's, for a body the gateway accepts; replaying
 * the probe's recorded tokens gives the same result as parsing the body again */
static void splice_request(const char *d, size_t size)
{
    arena *pool = arena_new(4096);
    chat_probe p;
    sax_tape tape;
    if (chat_probe_parse(d, size, pool, &p, &tape) != PROBE_OK) {
        arena_free(pool);
        return;
    }
    if (!tape.complete) abort();
    provider_raw_body raw = {.body = d, .len = size, .model = "claude"};
    provider_request fast;
    char err[256] = "";
    int rc = provider_build_chat_raw(&target, &raw, "r", pool, &fast, err, sizeof err);
    if (rc != 0 && rc != PROVIDER_EDECLINED) abort();
    raw.tape = &tape;
    provider_request taped;
    int taped_rc = provider_build_chat_raw(&target, &raw, "r", pool, &taped, err, sizeof err);
    if (taped_rc != rc) abort();
    if (rc == 0) {
        same_text(fast.body, fast.body_len, taped.body, taped.body_len);
        free(taped.body);
        json_t *doc = json_decode_fast(d, size, NULL, 0);
        if (!doc) abort();
        provider_request slow;
        if (provider_build_chat(&target, doc, "r", pool, &slow, err, sizeof err) != 0) abort();
        same_text(fast.body, fast.body_len, slow.body, slow.body_len);
        free(slow.body);
        free(fast.body);
        json_decref(doc);
    }
    arena_free(pool);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    const char *d = (const char *)data;
    provider_stream *s = provider_stream_new(&target, "claude");
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
        bool was_done = provider_stream_done(s);
        size_t before = out.len;
        char why[320] = "";
        int rc = provider_stream_event(s, d + pos, end - pos, &out, why, sizeof why);
        if (was_done && out.len != before) abort();
        if (rc != 0 && (rc != -1 || !why[0])) abort();
        check_events(&out, before);
        if (rc) break; /* the relay stops here too */
        pos = end;
    }
    buf_free(&out);
    provider_stream_free(s);

    size_t len = 0;
    char why[320];
    char *a = provider_chat_answer(&target, d, size, "claude", &len, NULL, why, sizeof why);
    if (a) check_answer(a, len);
    free(a);

    provider_error e;
    provider_map_error(&target, 400 + (int)(size % 200), d, size, &e);
    if (!e.type || e.status < 400 || e.status > 599) abort();

    build(d, size);
    splice_answer(d, size);
    splice_request(d, size);
    return 0;
}
