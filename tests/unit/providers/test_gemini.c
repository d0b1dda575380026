/* test_gemini.c — the Gemini adapter against Google's documented wire formats (fixtures in
 * tests/data/providers/gemini/): canonical requests -> GenerateContentRequest and
 * batchEmbedContents, answers and alt=sse streams -> OpenAI chat.completion(.chunk), errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "providers/provider.h"

static char *read_fixture(const char *name, size_t *len)
{
    const char *src = getenv("CTXGATE_SOURCE_DIR");
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/providers/gemini/%s", src ? src : ".", name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *data = malloc((size_t)n + 1);
    assert_int_equal(fread(data, 1, (size_t)n, f), (size_t)n);
    data[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return data;
}

static json_t *load_json(const char *name)
{
    size_t n;
    char *s = read_fixture(name, &n);
    json_t *v = json_decode_fast(s, n, NULL, 0);
    free(s);
    if (!v) fail_msg("%s is not JSON", name);
    return v;
}

static cfg_target gemini_target(json_t *params)
{
    return (cfg_target){.name = "gem",
                        .type = TARGET_GEMINI,
                        .endpoint = "https://generativelanguage.googleapis.com",
                        .model_name = "gemini-2.0-flash",
                        .api_key = "g-key",
                        .parameters = params};
}

static const char *header(const provider_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (!strcmp(r->headers[i].name, name)) return r->headers[i].value;
    return NULL;
}

static void assert_json_text_equal(const char *text, size_t len, json_t *expected)
{
    json_t *got = json_decode_fast(text, len, NULL, 0);
    assert_non_null(got);
    if (!json_equal(got, expected)) {
        char *a = json_dumps(got, JSON_INDENT(1)), *b = json_dumps(expected, JSON_INDENT(1));
        fail_msg("got\n%s\nexpected\n%s", a, b);
    }
    json_decref(got);
}

static void check_request(const char *base, json_t *params, const char *url)
{
    char in[128], want[128];
    snprintf(in, sizeof in, "%s.openai.json", base);
    snprintf(want, sizeof want, "%s.gemini.json", base);
    cfg_target t = gemini_target(params);
    json_t *body = load_json(in);
    json_t *expected = load_json(want);
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256] = "";
    assert_int_equal(provider_build_chat(&t, body, "req-1", pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, url);
    assert_string_equal(header(&r, "x-goog-api-key"), "g-key");
    assert_string_equal(header(&r, "X-Request-Id"), "req-1");
    assert_string_equal(header(&r, "Content-Type"), "application/json");
    assert_null(header(&r, "Authorization"));
    assert_json_text_equal(r.body, r.body_len, expected);
    free(r.body);
    arena_free(pool);
    json_decref(body);
    json_decref(expected);
}

static void request_translations(void **state)
{
    (void)state;
    check_request("chat_multiturn", NULL,
                  "https://generativelanguage.googleapis.com/v1beta/models/"
                  "gemini-2.0-flash:generateContent");
    check_request("chat_tools", NULL,
                  "https://generativelanguage.googleapis.com/v1beta/models/"
                  "gemini-2.0-flash:generateContent");
    json_t *params = json_pack("{s:f}", "temperature", 0.2);
    check_request("chat_image", params,
                  "https://generativelanguage.googleapis.com/v1beta/models/"
                  "gemini-2.0-flash:streamGenerateContent?alt=sse");
    json_decref(params);
}

static void stream_usage_flag_and_endpoint_version(void **state)
{
    (void)state;
    cfg_target t = gemini_target(NULL);
    t.endpoint = "http://127.0.0.1:9/v1beta";
    t.model_name = "models/gemini-2.5-pro";
    t.api_key = NULL;
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256];
    json_t *b =
        json_pack("{s:[{s:s,s:s}],s:b}", "messages", "role", "user", "content", "hi", "stream", 1);
    assert_int_equal(provider_build_chat(&t, b, NULL, pool, &r, err, sizeof err), 0);
    assert_string_equal(
        r.url, "http://127.0.0.1:9/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse");
    assert_true(r.stream_usage_added); /* the client did not ask for usage */
    assert_null(header(&r, "x-goog-api-key"));
    assert_null(header(&r, "X-Request-Id"));
    free(r.body);
    json_decref(b);
    arena_free(pool);
}

/* the canonical body, the field the refusal names, and a word of its sentence */
static void check_refused(const char *body, const char *param, const char *word)
{
    cfg_target t = gemini_target(NULL);
    json_t *b = json_decode_fast(body, strlen(body), NULL, 0);
    assert_non_null(b);
    arena *pool = arena_new(4096);
    provider_request r;
    char err[512] = "";
    assert_int_equal(provider_build_chat(&t, b, NULL, pool, &r, err, sizeof err),
                     PROVIDER_EREQUEST);
    assert_non_null(r.err_param);
    assert_string_equal(r.err_param, param);
    if (!strstr(err, word)) fail_msg("'%s' does not say '%s'", err, word);
    assert_null(r.body);
    json_decref(b);
    arena_free(pool);
}

static void request_refusals(void **state)
{
    (void)state;
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"tool\","
                  "\"tool_call_id\":\"nope\",\"content\":\"1\"}]}",
                  "messages[1].tool_call_id", "earlier assistant");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
                  "\"tool_calls\":[{\"id\":\"a\",\"type\":\"function\",\"function\":{\"name\":"
                  "\"f\",\"arguments\":\"[1,2]\"}}]}]}",
                  "messages[1].tool_calls[0].function.arguments", "JSON object");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                  "\"image_url\":{\"url\":\"https://example.com/image\"}}]}]}",
                  "messages[0].content[0].image_url.url", "MIME type");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"logit_bias\":{\"1\":2}}",
                  "logit_bias", "not supported");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"temperature\":\"hot\"}",
                  "temperature", "number");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tools\":[{\"type\":"
                  "\"web_search\"}]}",
                  "tools[0].type", "function tools");
    check_refused("{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],\"tool_choice\":\"any\"}",
                  "tool_choice", "required");
    check_refused("{\"messages\":[{\"role\":\"system\",\"content\":\"only rules\"}]}", "messages",
                  "no user");
    check_refused("{\"messages\":[{\"role\":\"critic\",\"content\":\"x\"}]}", "messages[0].role",
                  "critic");
}

static void model_id_and_raw_path(void **state)
{
    (void)state;
    cfg_target t = gemini_target(NULL);
    t.model_name = "../files?key=x";
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256] = "";
    json_t *b = json_pack("{s:[{s:s,s:s}]}", "messages", "role", "user", "content", "hi");
    assert_int_equal(provider_build_chat(&t, b, NULL, pool, &r, err, sizeof err),
                     PROVIDER_EUNSUPPORTED);
    assert_non_null(strstr(err, "not a Gemini model id"));
    t.model_name = "gemini-2.0-flash";
    provider_raw_body raw = {.body = "{}", .len = 2, .model = "gem", .object_end = 1};
    assert_int_equal(provider_build_chat_raw(&t, &raw, NULL, pool, &r, err, sizeof err), -1);
    assert_non_null(strstr(err, "translated"));
    assert_false(provider_speaks_openai(&t));
    json_decref(b);
    arena_free(pool);
}

static json_t *answer(const char *fixture)
{
    cfg_target t = gemini_target(NULL);
    size_t n, out_len = 0;
    char *body = read_fixture(fixture, &n);
    char why[256] = "";
    char *out = provider_chat_answer(&t, body, n, "gem", &out_len, NULL, why, sizeof why);
    if (!out) fail_msg("%s: %s", fixture, why);
    json_t *doc = json_decode_fast(out, out_len, NULL, 0);
    assert_non_null(doc);
    assert_string_equal(json_string_value(json_object_get(doc, "object")), "chat.completion");
    assert_string_equal(json_string_value(json_object_get(doc, "model")), "gem");
    assert_true(json_is_integer(json_object_get(doc, "created")));
    free(out);
    free(body);
    return doc;
}

static json_t *choice0(json_t *doc, const char *field)
{
    json_t *c = json_array_get(json_object_get(doc, "choices"), 0);
    return field ? json_object_get(c, field) : c;
}

static json_int_t usage(json_t *doc, const char *key)
{
    return json_integer_value(json_object_get(json_object_get(doc, "usage"), key));
}

static void answers(void **state)
{
    (void)state;
    json_t *d = answer("answer_text.json");
    assert_string_equal(json_string_value(json_object_get(d, "id")), "mK3kaPqKJ4Gt1dkP8aW7wQg");
    json_t *msg = choice0(d, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "role")), "assistant");
    assert_string_equal(json_string_value(json_object_get(msg, "content")),
                        "The capital of France is Paris.");
    assert_null(json_object_get(msg, "tool_calls"));
    assert_string_equal(json_string_value(choice0(d, "finish_reason")), "stop");
    assert_int_equal(usage(d, "prompt_tokens"), 9);
    assert_int_equal(usage(d, "completion_tokens"), 15); /* 7 candidates + 8 thoughts */
    assert_int_equal(usage(d, "total_tokens"), 24);
    json_t *u = json_object_get(d, "usage");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(u, "prompt_tokens_details"),
                                                        "cached_tokens")),
                     4);
    assert_int_equal(json_integer_value(json_object_get(
                         json_object_get(u, "completion_tokens_details"), "reasoning_tokens")),
                     8);
    json_decref(d);

    d = answer("answer_thinking.json");
    msg = choice0(d, "message");
    assert_string_equal(json_string_value(json_object_get(msg, "content")), "4");
    assert_string_equal(json_string_value(json_object_get(msg, "reasoning_content")),
                        "The user asks for a sum; 2 + 2 is 4.");
    const char *id = json_string_value(json_object_get(d, "id"));
    assert_true(!strncmp(id, "chatcmpl-gemini-", 16)); /* no responseId: a hash of the answer */
    json_t *again = answer("answer_thinking.json");
    assert_string_equal(json_string_value(json_object_get(again, "id")), id);
    json_decref(again);
    json_decref(d);

    d = answer("answer_function_call.json");
    msg = choice0(d, "message");
    assert_true(json_is_null(json_object_get(msg, "content")));
    assert_string_equal(json_string_value(choice0(d, "finish_reason")), "tool_calls");
    json_t *calls = json_object_get(msg, "tool_calls");
    assert_int_equal(json_array_size(calls), 2);
    json_t *c0 = json_array_get(calls, 0), *c1 = json_array_get(calls, 1);
    assert_string_equal(json_string_value(json_object_get(c0, "type")), "function");
    json_t *f0 = json_object_get(c0, "function");
    assert_string_equal(json_string_value(json_object_get(f0, "name")), "get_weather");
    const char *args = json_string_value(json_object_get(f0, "arguments"));
    json_t *a = json_decode_fast(args, strlen(args), NULL, 0);
    json_t *want = json_pack("{s:s,s:s}", "location", "Boston, MA", "unit", "celsius");
    assert_true(json_equal(a, want));
    json_decref(a);
    json_decref(want);
    const char *id0 = json_string_value(json_object_get(c0, "id"));
    const char *id1 = json_string_value(json_object_get(c1, "id"));
    assert_true(!strncmp(id0, "call_", 5));
    assert_string_not_equal(id0, id1);
    json_decref(d);

    d = answer("answer_max_tokens.json");
    assert_string_equal(json_string_value(choice0(d, "finish_reason")), "length");
    assert_string_equal(json_string_value(json_object_get(choice0(d, "message"), "content")),
                        "Once upon a time, in a land far");
    json_decref(d);

    d = answer("answer_blocked.json");
    assert_int_equal(json_array_size(json_object_get(d, "choices")), 1);
    assert_string_equal(json_string_value(choice0(d, "finish_reason")), "content_filter");
    assert_true(json_is_null(json_object_get(choice0(d, "message"), "content")));
    assert_int_equal(usage(d, "prompt_tokens"), 12);
    assert_int_equal(usage(d, "completion_tokens"), 0);
    json_decref(d);

    d = answer("answer_safety.json");
    assert_string_equal(json_string_value(choice0(d, "finish_reason")), "content_filter");
    assert_true(json_is_null(json_object_get(choice0(d, "message"), "content")));
    json_decref(d);
}

static void invalid_answers(void **state)
{
    (void)state;
    cfg_target t = gemini_target(NULL);
    const char *bad[] = {"",
                         "not json",
                         "[1]",
                         "{}",
                         "{\"candidates\":{}}",
                         "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{}}]}}]}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char why[256] = "";
        size_t n = 0;
        assert_null(
            provider_chat_answer(&t, bad[i], strlen(bad[i]), "gem", &n, NULL, why, sizeof why));
        assert_true(why[0] != 0);
    }
}

/* Feeds an SSE fixture event by event; returns the data payloads of what came out. */
static json_t *run_stream(const char *fixture, provider_stream **keep)
{
    cfg_target t = gemini_target(NULL);
    provider_stream *s = provider_stream_new(&t, "gem");
    assert_non_null(s);
    size_t n;
    char *sse = read_fixture(fixture, &n);
    buf out = BUF_INIT;
    size_t pos = 0;
    while (pos < n) {
        const char *sep = strstr(sse + pos, "\r\n\r\n");
        size_t end = sep ? (size_t)(sep - sse) + 4 : n;
        char why[256] = "";
        if (provider_stream_event(s, sse + pos, end - pos, &out, why, sizeof why))
            fail_msg("%s: %s", fixture, why);
        pos = end;
    }
    free(sse);
    json_t *events = json_array();
    const char *p = out.data;
    while (p && *p) {
        assert_true(!strncmp(p, "data: ", 6));
        const char *e = strstr(p, "\n\n");
        assert_non_null(e);
        size_t len = (size_t)(e - p) - 6;
        if (len == 6 && !strncmp(p + 6, "[DONE]", 6))
            json_array_append_new(events, json_string("[DONE]"));
        else {
            json_t *v = json_decode_fast(p + 6, len, NULL, 0);
            assert_non_null(v);
            json_array_append_new(events, v);
        }
        p = e + 2;
    }
    buf_free(&out);
    if (keep)
        *keep = s;
    else
        provider_stream_free(s);
    return events;
}

static json_t *delta(json_t *chunk)
{
    return json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "delta");
}

static const char *finish(json_t *chunk)
{
    return json_string_value(
        json_object_get(json_array_get(json_object_get(chunk, "choices"), 0), "finish_reason"));
}

static void stream_text(void **state)
{
    (void)state;
    provider_stream *s;
    json_t *ev = run_stream("stream_text.sse", &s);
    assert_true(provider_stream_done(s));
    /* role, 3 text deltas, finish, usage, [DONE] */
    assert_int_equal(json_array_size(ev), 7);
    json_t *first = json_array_get(ev, 0);
    assert_string_equal(json_string_value(json_object_get(first, "object")),
                        "chat.completion.chunk");
    assert_string_equal(json_string_value(json_object_get(first, "id")), "s-1");
    assert_string_equal(json_string_value(json_object_get(first, "model")), "gem");
    assert_string_equal(json_string_value(json_object_get(delta(first), "role")), "assistant");
    const char *texts[] = {"Hello", ", wor", "ld!"};
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(
            json_string_value(json_object_get(delta(json_array_get(ev, i + 1)), "content")),
            texts[i]);
    assert_string_equal(finish(json_array_get(ev, 4)), "stop");
    json_t *uc = json_array_get(ev, 5);
    assert_int_equal(json_array_size(json_object_get(uc, "choices")), 0);
    assert_int_equal(usage(uc, "prompt_tokens"), 4);
    assert_int_equal(usage(uc, "completion_tokens"), 3);
    assert_int_equal(usage(uc, "total_tokens"), 7);
    assert_string_equal(json_string_value(json_array_get(ev, 6)), "[DONE]");
    /* after the end, nothing more */
    buf out = BUF_INIT;
    char why[64];
    const char *more =
        "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"x\"}]}}]}\r\n\r\n";
    assert_int_equal(provider_stream_event(s, more, strlen(more), &out, why, sizeof why), 0);
    assert_int_equal(out.len, 0);
    buf_free(&out);
    provider_stream_free(s);
    json_decref(ev);
}

static void stream_function_call(void **state)
{
    (void)state;
    json_t *ev = run_stream("stream_function_call.sse", NULL);
    assert_int_equal(json_array_size(ev), 5); /* role, call, finish, usage, [DONE] */
    json_t *calls = json_object_get(delta(json_array_get(ev, 1)), "tool_calls");
    assert_int_equal(json_array_size(calls), 1);
    json_t *c = json_array_get(calls, 0);
    assert_int_equal(json_integer_value(json_object_get(c, "index")), 0);
    assert_true(!strncmp(json_string_value(json_object_get(c, "id")), "call_", 5));
    json_t *f = json_object_get(c, "function");
    assert_string_equal(json_string_value(json_object_get(f, "name")), "get_weather");
    assert_string_equal(json_string_value(json_object_get(f, "arguments")),
                        "{\"location\":\"Paris\"}");
    assert_string_equal(finish(json_array_get(ev, 2)), "tool_calls");
    assert_int_equal(usage(json_array_get(ev, 3), "completion_tokens"), 6);
    json_decref(ev);
}

static void stream_error_and_bad_events(void **state)
{
    (void)state;
    provider_stream *s;
    json_t *ev = run_stream("stream_error.sse", &s);
    assert_false(provider_stream_done(s));
    assert_int_equal(json_array_size(ev), 3); /* role, text, error */
    json_t *e = json_object_get(json_array_get(ev, 2), "error");
    assert_string_equal(json_string_value(json_object_get(e, "message")),
                        "The model is overloaded. Please try again later.");
    assert_string_equal(json_string_value(json_object_get(e, "type")), "server_error");
    assert_string_equal(json_string_value(json_object_get(e, "code")), "upstream_overloaded");
    provider_stream_free(s);
    json_decref(ev);

    cfg_target t = gemini_target(NULL);
    s = provider_stream_new(&t, "gem");
    buf out = BUF_INIT;
    char why[256] = "";
    const char *ping = ": keep-alive\r\n\r\n";
    assert_int_equal(provider_stream_event(s, ping, strlen(ping), &out, why, sizeof why), 0);
    assert_int_equal(out.len, 0);
    const char *bad = "data: {\"candidates\": [\r\n\r\n";
    assert_int_equal(provider_stream_event(s, bad, strlen(bad), &out, why, sizeof why), -1);
    assert_non_null(strstr(why, "JSON"));
    provider_stream_free(s);
    buf_free(&out);

    cfg_target openai = {.name = "o", .type = TARGET_OPENAI, .endpoint = "http://x"};
    assert_null(provider_stream_new(&openai, "o"));
}

static void errors(void **state)
{
    (void)state;
    cfg_target t = gemini_target(NULL);
    provider_error e;
    size_t n;
    char *b = read_fixture("error_429.json", &n);
    provider_map_error(&t, 429, b, n, &e);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.type, "requests");
    free(b);
    b = read_fixture("error_key.json", &n);
    provider_map_error(&t, 400, b, n, &e);
    assert_int_equal(e.status, 401);
    assert_string_equal(e.code, "invalid_api_key");
    char msg[PROVIDER_ERROR_MESSAGE_MAX];
    provider_error_message(b, n, msg, sizeof msg);
    assert_string_equal(msg, "API key not valid. Please pass a valid API key.");
    free(b);
    b = read_fixture("error_503.json", &n);
    provider_map_error(&t, 503, b, n, &e);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.type, "server_error");
    assert_string_equal(e.code, "upstream_overloaded");
    free(b);
    const struct {
        const char *status;
        int http;
        const char *type;
    } cases[] = {{"INVALID_ARGUMENT", 400, "invalid_request_error"},
                 {"FAILED_PRECONDITION", 400, "invalid_request_error"},
                 {"UNAUTHENTICATED", 401, "invalid_request_error"},
                 {"PERMISSION_DENIED", 403, "invalid_request_error"},
                 {"NOT_FOUND", 404, "invalid_request_error"},
                 {"INTERNAL", 500, "server_error"},
                 {"DEADLINE_EXCEEDED", 504, "server_error"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char body[256];
        snprintf(body, sizeof body, "{\"error\":{\"code\":%d,\"message\":\"m\",\"status\":\"%s\"}}",
                 cases[i].http, cases[i].status);
        provider_map_error(&t, 418, body, strlen(body), &e); /* the status word decides */
        assert_int_equal(e.status, cases[i].http);
        assert_string_equal(e.type, cases[i].type);
    }
    provider_map_error(&t, 502, "<html>bad gateway</html>", 24, &e);
    assert_int_equal(e.status, 502);
    assert_string_equal(e.type, "server_error");
}

static void embeddings(void **state)
{
    (void)state;
    cfg_target t = gemini_target(NULL);
    t.model_name = "gemini-embedding-001";
    json_t *body = load_json("embeddings.openai.json");
    json_t *want = load_json("embeddings.gemini.json");
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256] = "";
    assert_int_equal(provider_build_embeddings(&t, body, "r", pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://generativelanguage.googleapis.com/v1beta/models/"
                               "gemini-embedding-001:batchEmbedContents");
    assert_string_equal(header(&r, "x-goog-api-key"), "g-key");
    assert_json_text_equal(r.body, r.body_len, want);
    free(r.body);
    json_decref(body);
    json_decref(want);

    body = json_pack("{s:[i,i]}", "input", 1, 2);
    assert_int_equal(provider_build_embeddings(&t, body, NULL, pool, &r, err, sizeof err),
                     PROVIDER_EREQUEST);
    assert_string_equal(r.err_param, "input[0]");
    json_decref(body);

    size_t n, out_len;
    char *ans = read_fixture("embeddings.json", &n);
    char why[256] = "";
    char *out = provider_embeddings_answer(&t, ans, n, "gem-embed", &out_len, why, sizeof why);
    assert_non_null(out);
    json_t *d = json_decode_fast(out, out_len, NULL, 0);
    assert_string_equal(json_string_value(json_object_get(d, "object")), "list");
    assert_string_equal(json_string_value(json_object_get(d, "model")), "gem-embed");
    json_t *data = json_object_get(d, "data");
    assert_int_equal(json_array_size(data), 2);
    json_t *e1 = json_array_get(data, 1);
    assert_string_equal(json_string_value(json_object_get(e1, "object")), "embedding");
    assert_int_equal(json_integer_value(json_object_get(e1, "index")), 1);
    assert_int_equal(json_array_size(json_object_get(e1, "embedding")), 3);
    assert_int_equal(usage(d, "prompt_tokens"), 0);
    json_decref(d);
    free(out);
    free(ans);
    assert_null(provider_embeddings_answer(&t, "{\"embeddings\":[{\"values\":[\"x\"]}]}", 34, "g",
                                           &out_len, why, sizeof why));

    cfg_target anth = {
        .name = "c", .type = TARGET_ANTHROPIC, .endpoint = "http://x", .model_name = "claude"};
    cfg_target mock = {.name = "m", .type = TARGET_MOCK, .model_name = "m"};
    body = json_pack("{s:s}", "input", "x");
    assert_int_equal(provider_build_embeddings(&anth, body, NULL, pool, &r, err, sizeof err),
                     PROVIDER_EUNSUPPORTED);
    assert_non_null(strstr(err, "no embeddings API"));
    assert_int_equal(provider_build_embeddings(&mock, body, NULL, pool, &r, err, sizeof err),
                     PROVIDER_EUNSUPPORTED);
    json_decref(body);
    arena_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(request_translations),
        cmocka_unit_test(stream_usage_flag_and_endpoint_version),
        cmocka_unit_test(request_refusals),
        cmocka_unit_test(model_id_and_raw_path),
        cmocka_unit_test(answers),
        cmocka_unit_test(invalid_answers),
        cmocka_unit_test(stream_text),
        cmocka_unit_test(stream_function_call),
        cmocka_unit_test(stream_error_and_bad_events),
        cmocka_unit_test(errors),
        cmocka_unit_test(embeddings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
