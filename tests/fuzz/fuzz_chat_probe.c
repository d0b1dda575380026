/* fuzz_chat_probe.c — the Chat Completions body probe (src/pipeline/chat_probe.c) and the raw
 * splice that forwards the client's bytes with the model replaced and parameters added
 * (provider_build_chat_raw, src/providers/openai.c), on arbitrary bodies.
 *
 * Checks beyond "no crash": the probe's offsets lie inside the body and frame the model value
 * and the closing brace; a spliced body is valid JSON exactly when the client's body is (for
 * jansson), names the target's model and
 * carries each configured parameter the client did not set. (An invalid body may become valid:
 * the model value it replaced can be what jansson objected to.) */
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "core/log.h"
#include "pipeline/chat_probe.h"
#include "providers/provider.h"

static cfg_target target_renamed, target_same;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    json_t *params = json_pack("{s:f, s:i, s:s, s:{s:b}}", "temperature", 0.25, "max_tokens", 64,
                               "user", "fuzz\xc3\xa9", "stream_options", "include_usage", 1);
    target_renamed = (cfg_target){.name = "fuzz",
                                  .type = TARGET_OPENAI,
                                  .endpoint = "http://127.0.0.1:1/v1",
                                  .model_name = "gpt-4o-mini-2024-07-18",
                                  .api_key = "sk-fuzz",
                                  .parameters = params};
    target_same = target_renamed;
    target_same.model_name = NULL; /* set per input: the client's own model, only params added */
    target_same.parameters = json_pack("{s:i}", "seed", 7);
    return 0;
}

static void check_splice(const char *body, size_t len, const chat_probe *p, const cfg_target *t,
                         arena *pool)
{
    provider_raw_body raw = {.body = body,
                             .len = len,
                             .model = p->model,
                             .model_start = p->model_start,
                             .model_end = p->model_end,
                             .object_end = p->object_end,
                             .keys = p->top_keys,
                             .n_keys = p->n_top_keys};
    provider_request pr;
    char err[256];
    if (provider_build_chat_raw(t, &raw, "req-1", pool, &pr, err, sizeof err) != 0) abort();
    if (!pr.body) return; /* forwarded unchanged */
    json_t *in = json_loadb(body, len, JSON_ALLOW_NUL, NULL);
    json_error_t je;
    json_t *out = json_loadb(pr.body, pr.body_len, JSON_ALLOW_NUL, &je);
    if (in && !out) {
        fprintf(stderr, "the splice broke a valid body: %s\n%.*s\n", je.text, (int)pr.body_len,
                pr.body);
        abort();
    }
    if (in) {
        const char *m = json_string_value(json_object_get(out, "model"));
        if (!m || strcmp(m, t->model_name) != 0) {
            fprintf(stderr, "spliced body does not name the target's model\n");
            abort();
        }
        const char *k;
        json_t *v;
        json_object_foreach(t->parameters, k, v)
        {
            json_t *got = json_object_get(out, k);
            json_t *orig = json_object_get(in, k);
            if (!got || !json_equal(got, orig ? orig : v)) {
                fprintf(stderr, "parameter '%s' wrong after the splice\n", k);
                abort();
            }
        }
    }
    json_decref(in);
    json_decref(out);
    free(pr.body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    /* the server hands the handler a NUL-terminated body */
    char *body = malloc(size + 1);
    if (!body) abort();
    memcpy(body, data, size);
    body[size] = 0;
    arena *pool = arena_new(4096);
    chat_probe p;
    chat_probe_status st = chat_probe_parse(body, size, pool, &p, NULL);
    if (st != p.status) abort();
    if (st != PROBE_OK) {
        if (!memchr(p.message, 0, sizeof p.message) || !p.message[0]) abort();
    } else {
        if (p.object_end >= size || body[p.object_end] != '}') abort();
        for (size_t i = 0; i < p.n_top_keys; i++)
            if (!p.top_keys[i].p && p.top_keys[i].n) abort();
        if (p.has_model && p.model_is_string) {
            if (p.model_start >= p.model_end || p.model_end > p.object_end) abort();
            if (body[p.model_start] != '"' || body[p.model_end - 1] != '"') abort();
            check_splice(body, size, &p, &target_renamed, pool);
            target_same.model_name = p.model;
            check_splice(body, size, &p, &target_same, pool);
        }
        (void)chat_probe_has_key(&p, "model");
    }
    arena_free(pool);
    free(body);
    return 0;
}
