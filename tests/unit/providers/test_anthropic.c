/* test_anthropic.c — the Anthropic adapter against fixtures in the documented Messages API
 * formats (tests/data/providers/anthropic/): canonical requests -> Messages bodies, Message
 * answers -> chat.completion, recorded-format event streams -> chat.completion.chunk events, and
 * error bodies -> OpenAI status, type and code; plus what it refuses and why. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/json.h"
#include "providers/adapters.h"
#include "providers/provider.h"

static cfg_target target(void)
{
    return (cfg_target){
        .name = "claude",
        .type = TARGET_ANTHROPIC,
        .endpoint = "https://api.anthropic.com",
        .model_name = "claude-sonnet-4-20250514",
        .api_key = "sk-ant-test",
    };
}

static char *slurp(const char *name, size_t *len)
{
    const char *root = getenv("CTXGATE_SOURCE_DIR");
    assert_non_null(root);
    char path[1024];
    snprintf(path, sizeof path, "%s/tests/data/providers/anthropic/%s", root, name);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    assert_int_equal(fread(s, 1, (size_t)n, f), (size_t)n);
    s[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return s;
}

static json_t *load_json(const char *name)
{
    size_t n;
    char *s = slurp(name, &n);
    json_error_t e;
    json_t *v = json_loadb(s, n, 0, &e);
    if (!v) fail_msg("%s: %s", name, e.text);
    free(s);
    return v;
}

static void assert_json_equal(json_t *got, json_t *want, const char *what)
{
    if (json_equal(got, want)) return;
    char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    print_error("%s\n got: %s\nwant: %s\n", what, g, w);
    free(g);
    free(w);
    fail();
}

/* builds the upstream request for the canonical document text; rc returned, body decoded */
static int build(cfg_target *t, const char *canonical, provider_request *pr, json_t **body,
                 char *err, size_t errlen)
{
    json_t *doc = json_decode_fast(canonical, strlen(canonical), NULL, 0);
    assert_non_null(doc);
    arena *pool = arena_new(4096);
    int rc = provider_build_chat(t, doc, "req-1", pool, pr, err, errlen);
    *body = NULL;
    if (rc == 0) {
        assert_non_null(pr->body);
        *body = json_loadb(pr->body, pr->body_len, 0, NULL);
        assert_non_null(*body);
    } else {
        assert_null(pr->body);
    }
    /* err_param lives in the pool: keep a copy before the pool goes */
    static char param[256];
    if (pr->err_param) {
        snprintf(param, sizeof param, "%s", pr->err_param);
        pr->err_param = param;
    }
    free(pr->body);
    pr->body = NULL;
    pr->url = NULL; /* pool memory */
    arena_free(pool);
    json_decref(doc);
    return rc;
}

static void request_fixture(const char *stem)
{
    cfg_target t = target();
    char in[128], out[128];
    snprintf(in, sizeof in, "req_%s.in.json", stem);
    snprintf(out, sizeof out, "req_%s.out.json", stem);
    char *canonical = slurp(in, NULL);
    provider_request pr;
    json_t *body;
    char err[256] = "";
    int rc = build(&t, canonical, &pr, &body, err, sizeof err);
    if (rc) fail_msg("%s: rc %d: %s", stem, rc, err);
    json_t *want = load_json(out);
    assert_json_equal(body, want, stem);
    json_decref(want);
    json_decref(body);
    free(canonical);
}

static void requests_translate(void **state)
{
    static const char *const stems[] = {"plain", "system", "multi_turn",
                                        "tools", "images", "thinking"};
    for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++)
        request_fixture(stems[i]);
}

static const char *header(const provider_request *pr, const char *name)
{
    for (size_t i = 0; i < pr->n_headers; i++)
        if (strcmp(pr->headers[i].name, name) == 0) return pr->headers[i].value;
    return NULL;
}

static void request_url_and_headers(void **state)
{
    cfg_target t = target();
    arena *pool = arena_new(1024);
    provider_request pr;
    char err[128];
    json_t *doc = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "claude", "messages", "role", "user",
                            "content", "hi");
    assert_int_equal(provider_build_chat(&t, doc, "req-7", pool, &pr, err, sizeof err), 0);
    assert_string_equal(pr.url, "https://api.anthropic.com/v1/messages");
    assert_string_equal(header(&pr, "x-api-key"), "sk-ant-test");
    assert_string_equal(header(&pr, "anthropic-version"), "2023-06-01");
    assert_string_equal(header(&pr, "content-type"), "application/json");
    assert_string_equal(header(&pr, "X-Request-Id"), "req-7");
    assert_null(header(&pr, "Authorization"));
    assert_false(pr.stream_usage_added);
    free(pr.body);
    /* the configured version, no key, no request id; body NULL builds only URL and headers */
    t.api_version = "2024-10-22";
    t.api_key = NULL;
    t.endpoint = "http://127.0.0.1:9";
    assert_int_equal(provider_build_chat(&t, NULL, NULL, pool, &pr, err, sizeof err), 0);
    assert_null(pr.body);
    assert_string_equal(pr.url, "http://127.0.0.1:9/v1/messages");
    assert_string_equal(header(&pr, "anthropic-version"), "2024-10-22");
    assert_null(header(&pr, "x-api-key"));
    assert_null(header(&pr, "X-Request-Id"));
    /* from raw bytes only in the common shapes (splice_matches_the_document_path): a body
     * without messages is declined to the document path */
    provider_raw_body raw = {.body = "{}", .len = 2, .model = "claude", .object_end = 1};
    assert_int_equal(provider_build_chat_raw(&t, &raw, NULL, pool, &pr, err, sizeof err),
                     PROVIDER_EDECLINED);
    json_decref(doc);
    arena_free(pool);
}

static void parameters_merge_under_the_request(void **state)
{
    cfg_target t = target();
    json_t *params = json_pack("{s:i,s:f,s:{s:i},s:s}", "max_tokens", 100, "temperature", 0.25,
                               "anthropic", "top_k", 5, "user", "configured");
    t.parameters = params;
    provider_request pr;
    json_t *body;
    char err[256];
    assert_int_equal(build(&t,
                           "{\"model\":\"claude\",\"temperature\":0.5,\"messages\":[{\"role\":"
                           "\"user\",\"content\":\"x\"}]}",
                           &pr, &body, err, sizeof err),
                     0);
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 100);
    assert_true(json_real_value(json_object_get(body, "temperature")) == 0.5);
    assert_int_equal(json_integer_value(json_object_get(body, "top_k")), 5);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(body, "metadata"), "user_id")),
        "configured");
    json_decref(body);
    /* the request's max_completion_tokens beats the parameters' max_tokens */
    assert_int_equal(build(&t,
                           "{\"model\":\"claude\",\"max_completion_tokens\":77,\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"x\"}]}",
                           &pr, &body, err, sizeof err),
                     0);
    assert_int_equal(json_integer_value(json_object_get(body, "max_tokens")), 77);
    json_decref(body);
    json_decref(params);
    /* a bad configured max_tokens is named as configuration */
    params = json_pack("{s:s}", "max_tokens", "lots");
    t.parameters = params;
    assert_int_equal(build(&t,
                           "{\"model\":\"claude\",\"messages\":[{\"role\":\"user\","
                           "\"content\":\"x\"}]}",
                           &pr, &body, err, sizeof err),
                     PROVIDER_EREQUEST);
    assert_non_null(strstr(err, "config.parameters.max_tokens"));
    json_decref(params);
}

static void tool_choice_forms(void **state)
{
    static const struct {
        const char *tc, *want;
    } cases[] = {
        {"\"auto\"", "{\"type\":\"auto\"}"},
        {"\"none\"", "{\"type\":\"none\"}"},
        {"{\"type\":\"function\",\"function\":{\"name\":\"f\"}}",
         "{\"type\":\"tool\",\"name\":\"f\"}"},
    };
    cfg_target t = target();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char req[512];
        snprintf(req, sizeof req,
                 "{\"model\":\"claude\",\"tool_choice\":%s,\"tools\":[{\"type\":\"function\","
                 "\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}],"
                 "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                 cases[i].tc);
        provider_request pr;
        json_t *body;
        char err[256];
        assert_int_equal(build(&t, req, &pr, &body, err, sizeof err), 0);
        json_t *want = json_loads(cases[i].want, 0, NULL);
        assert_json_equal(json_object_get(body, "tool_choice"), want, cases[i].tc);
        json_decref(want);
        json_decref(body);
    }
    /* parallel_tool_calls false alone: auto with parallel use disabled */
    provider_request pr;
    json_t *body;
    char err[256];
    assert_int_equal(build(&t,
                           "{\"model\":\"claude\",\"parallel_tool_calls\":false,\"messages\":"
                           "[{\"role\":\"user\",\"content\":\"x\"}]}",
                           &pr, &body, err, sizeof err),
                     0);
    json_t *want = json_pack("{s:s,s:b}", "type", "auto", "disable_parallel_tool_use", 1);
    assert_json_equal(json_object_get(body, "tool_choice"), want, "parallel_tool_calls");
    json_decref(want);
    json_decref(body);
}

static void refusals_name_the_field(void **state)
{
    static const struct {
        const char *body, *param;
    } cases[] = {
        {"{\"model\":\"c\",\"n\":2,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}", "n"},
        {"{\"model\":\"c\",\"logprobs\":true,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "logprobs"},
        {"{\"model\":\"c\",\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{}},"
         "\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "response_format"},
        {"{\"model\":\"c\",\"modalities\":[\"audio\"],\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "modalities"},
        {"{\"model\":\"c\",\"max_tokens\":0,\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
         "max_tokens"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"},{\"role\":"
         "\"assistant\",\"tool_calls\":[{\"id\":\"t1\",\"type\":\"function\",\"function\":{"
         "\"name\":\"f\",\"arguments\":\"[1,2]\"}}]}]}",
         "messages[1].tool_calls[0].function.arguments"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":"
         "\"input_audio\",\"input_audio\":{}}]}]}",
         "messages[0].content[0].type"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
         "\"image_url\":{\"url\":\"data:image/png,abc\"}}]}]}",
         "messages[0].content[0].image_url.url"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
         "\"image_url\":{\"url\":\"ftp://x/y.png\"}}]}]}",
         "messages[0].content[0].image_url.url"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"tool\",\"content\":\"x\"}]}",
         "messages[0].tool_call_id"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"function\",\"content\":\"x\"}]}",
         "messages[0].role"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"system\",\"content\":\"x\"}]}", "messages"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}",
         "messages[0].content"},
        {"{\"model\":\"c\",\"tools\":[{\"type\":\"web_search\"}],\"messages\":[{\"role\":"
         "\"user\",\"content\":\"x\"}]}",
         "tools[0].type"},
        {"{\"model\":\"c\",\"tool_choice\":\"sometimes\",\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "tool_choice"},
        {"{\"model\":\"c\",\"stop\":[\"a\",1],\"messages\":[{\"role\":\"user\",\"content\":"
         "\"x\"}]}",
         "stop[1]"},
        {"{\"model\":\"c\",\"anthropic\":{\"model\":\"other\"},\"messages\":[{\"role\":\"user\","
         "\"content\":\"x\"}]}",
         "anthropic.model"},
        {"{\"model\":\"c\",\"messages\":[{\"role\":\"assistant\",\"content\":\"x\","
         "\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":\"t\"}]}]}",
         "messages[0].thinking_blocks[0]"},
    };
    cfg_target t = target();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        provider_request pr;
        json_t *body;
        char err[256] = "";
        int rc = build(&t, cases[i].body, &pr, &body, err, sizeof err);
        if (rc != PROVIDER_EREQUEST) fail_msg("case %zu: rc %d (%s)", i, rc, cases[i].body);
        if (!pr.err_param || strcmp(pr.err_param, cases[i].param) != 0)
            fail_msg("case %zu: param '%s', want '%s' (%s)", i,
                     pr.err_param ? pr.err_param : "(null)", cases[i].param, err);
        /* the sentence names the field too */
        const char *root = strchr(cases[i].param, '[');
        size_t n = root ? (size_t)(root - cases[i].param) : strlen(cases[i].param);
        if (!memmem(err, strlen(err), cases[i].param, n)) fail_msg("case %zu: '%s'", i, err);
    }
}

static void dropped_parameters_go_nowhere(void **state)
{
    cfg_target t = target();
    provider_request pr;
    json_t *body;
    char err[256];
    assert_int_equal(build(&t,
                           "{\"model\":\"c\",\"presence_penalty\":1,\"logit_bias\":{\"5\":1},"
                           "\"store\":true,\"stream_options\":{\"include_usage\":true},"
                           "\"n\":null,\"logprobs\":false,\"response_format\":{\"type\":"
                           "\"text\"},\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
                           &pr, &body, err, sizeof err),
                     0);
    json_t *want = json_loads("{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":4096,"
                              "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
                              "\"text\":\"x\"}]}]}",
                              0, NULL);
    assert_json_equal(body, want, "dropped");
    json_decref(want);
    json_decref(body);
}

static void speaks_openai(void **state)
{
    cfg_target t = target();
    assert_false(provider_speaks_openai(&t));
    t.type = TARGET_GEMINI;
    assert_false(provider_speaks_openai(&t));
    t.type = TARGET_OPENAI;
    assert_true(provider_speaks_openai(&t));
    t.type = TARGET_AZURE_OPENAI;
    assert_true(provider_speaks_openai(&t));
    t.type = TARGET_MOCK;
    assert_true(provider_speaks_openai(&t));
    assert_null(provider_stream_new(&t, "m"));
}

static void answer_fixture(const char *stem)
{
    cfg_target t = target();
    char in[128], out[128];
    snprintf(in, sizeof in, "answer_%s.json", stem);
    snprintf(out, sizeof out, "answer_%s.expected.json", stem);
    size_t n;
    char *body = slurp(in, &n);
    size_t len = 0;
    char why[256] = "";
    time_t before = time(NULL);
    char *a = provider_chat_answer(&t, body, n, "claude", &len, NULL, why, sizeof why);
    if (!a) fail_msg("%s: %s", stem, why);
    assert_int_equal(strlen(a), len);
    json_t *got = json_loadb(a, len, 0, NULL);
    assert_non_null(got);
    json_int_t created = json_integer_value(json_object_get(got, "created"));
    assert_true(created >= before && created <= time(NULL));
    json_object_set_new(got, "created", json_integer(0));
    json_t *want = load_json(out);
    assert_json_equal(got, want, stem);
    json_decref(want);
    json_decref(got);
    free(a);
    free(body);
}

static void answers_translate(void **state)
{
    answer_fixture("text");
    answer_fixture("tool_use");
    answer_fixture("thinking");
    answer_fixture("max_tokens");
}

static void bad_answers(void **state)
{
    static const char *const bodies[] = {
        "not json",
        "[]",
        "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"x\"}}",
        "{\"type\":\"message\",\"id\":\"m\",\"content\":[],\"stop_reason\":\"end_turn\"}",
        "{\"type\":\"message\",\"id\":\"m\",\"content\":[],\"stop_reason\":\"end_turn\","
        "\"usage\":{\"input_tokens\":-1,\"output_tokens\":1}}",
        "{\"type\":\"message\",\"id\":\"m\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\","
        "\"name\":\"f\",\"input\":[]}],\"stop_reason\":\"tool_use\",\"usage\":{}}",
        "{\"type\":\"message\",\"id\":\"m\",\"content\":[{\"type\":\"text\"}],\"stop_reason\":"
        "\"end_turn\",\"usage\":{}}",
    };
    cfg_target t = target();
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char why[256] = "";
        size_t len = 0;
        char *a = provider_chat_answer(&t, bodies[i], strlen(bodies[i]), "claude", &len, NULL, why,
                                       sizeof why);
        if (a) fail_msg("case %zu accepted: %s", i, a);
        assert_true(strlen(why) > 10);
    }
}

/* feeds text event by event, cut as the relay cuts it (at "\n\n" or "\r\n\r\n") */
static int feed(provider_stream *s, const char *text, size_t n, buf *out, char *why, size_t whylen)
{
    size_t pos = 0;
    while (pos < n) {
        const char *sep = memmem(text + pos, n - pos, "\n\n", 2);
        size_t seplen = 2;
        const char *crlf = memmem(text + pos, n - pos, "\r\n\r\n", 4);
        if (crlf && (!sep || crlf < sep)) {
            sep = crlf;
            seplen = 4;
        }
        size_t end = sep ? (size_t)(sep - text) + seplen : n;
        int rc = provider_stream_event(s, text + pos, end - pos, out, why, whylen);
        if (rc) return rc;
        pos = end;
    }
    return 0;
}

/* the appended events as a JSON array (chunks with created set to 0 after checking it is one
 * value for the stream; [DONE] as a string) */
static json_t *chunks_of(const buf *out)
{
    json_t *arr = json_array();
    json_int_t created = -1;
    const char *p = out->data ? out->data : "";
    const char *end = p + out->len;
    while (p < end) {
        assert_memory_equal(p, "data: ", 6);
        const char *e = memmem(p, (size_t)(end - p), "\n\n", 2);
        assert_non_null(e);
        const char *d = p + 6;
        size_t dl = (size_t)(e - d);
        if (dl == 6 && memcmp(d, "[DONE]", 6) == 0) {
            json_array_append_new(arr, json_string("[DONE]"));
        } else {
            json_t *c = json_loadb(d, dl, 0, NULL);
            assert_non_null(c);
            json_t *cr = json_object_get(c, "created");
            if (cr) {
                if (created < 0) created = json_integer_value(cr);
                assert_int_equal(json_integer_value(cr), created);
                json_object_set_new(c, "created", json_integer(0));
            }
            json_array_append_new(arr, c);
        }
        p = e + 2;
    }
    return arr;
}

static void stream_fixture(const char *stem, bool crlf)
{
    cfg_target t = target();
    char in[128], out_name[128];
    snprintf(in, sizeof in, "stream_%s.sse", stem);
    snprintf(out_name, sizeof out_name, "stream_%s.expected.json", stem);
    size_t n;
    char *text = slurp(in, &n);
    if (crlf) {
        char *c = malloc(2 * n + 1);
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if (text[i] == '\n') c[m++] = '\r';
            c[m++] = text[i];
        }
        free(text);
        text = c;
        n = m;
    }
    provider_stream *s = provider_stream_new(&t, "claude");
    assert_non_null(s);
    buf out = BUF_INIT;
    char why[256] = "";
    if (feed(s, text, n, &out, why, sizeof why)) fail_msg("%s: %s", stem, why);
    json_t *got = chunks_of(&out);
    json_t *want = load_json(out_name);
    assert_json_equal(got, want, stem);
    const char *last = json_string_value(json_array_get(want, json_array_size(want) - 1));
    bool ends = last && strcmp(last, "[DONE]") == 0;
    assert_int_equal(provider_stream_done(s), ends);
    /* nothing after the end */
    size_t before = out.len;
    const char *late = "event: ping\ndata: {\"type\":\"ping\"}\n\n";
    assert_int_equal(provider_stream_event(s, late, strlen(late), &out, why, sizeof why), 0);
    assert_int_equal(out.len, before);
    json_decref(got);
    json_decref(want);
    buf_free(&out);
    provider_stream_free(s);
    free(text);
}

static void streams_translate(void **state)
{
    static const char *const stems[] = {"text", "tool_use", "thinking", "error"};
    for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++) {
        stream_fixture(stems[i], false);
        stream_fixture(stems[i], true);
    }
}

static void stream_tool_arguments_reassemble(void **state)
{
    cfg_target t = target();
    size_t n;
    char *text = slurp("stream_tool_use.sse", &n);
    provider_stream *s = provider_stream_new(&t, "claude");
    buf out = BUF_INIT;
    char why[256];
    assert_int_equal(feed(s, text, n, &out, why, sizeof why), 0);
    json_t *chunks = chunks_of(&out);
    buf args = BUF_INIT;
    size_t i;
    json_t *c;
    json_array_foreach(chunks, i, c)
    {
        json_t *tc = json_array_get(
            json_object_get(
                json_object_get(json_array_get(json_object_get(c, "choices"), 0), "delta"),
                "tool_calls"),
            0);
        if (json_integer_value(json_object_get(tc, "index")) != 0) continue;
        const char *a =
            json_string_value(json_object_get(json_object_get(tc, "function"), "arguments"));
        if (a) buf_puts(&args, a);
    }
    json_t *input = json_loads(args.data, 0, NULL);
    json_t *want = json_pack("{s:s,s:s}", "location", "San Francisco, CA", "unit", "fahrenheit");
    assert_json_equal(input, want, "reassembled arguments");
    json_decref(want);
    json_decref(input);
    json_decref(chunks);
    buf_free(&args);
    buf_free(&out);
    provider_stream_free(s);
    free(text);
}

static const char start_ev[] =
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\","
    "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"usage\":{\"input_tokens\":3,"
    "\"output_tokens\":1}}}\n\n";

static void stream_sse_framing(void **state)
{
    cfg_target t = target();
    provider_stream *s = provider_stream_new(&t, "claude");
    buf out = BUF_INIT;
    char why[256];
    /* a comment and an unknown event append nothing */
    const char *quiet[] = {": keep-alive\n\n", "event: ping\ndata: {\"type\":\"ping\"}\n\n",
                           "event: future_thing\ndata: {\"type\":\"future_thing\"}\n\n"};
    for (size_t i = 0; i < 3; i++)
        assert_int_equal(
            provider_stream_event(s, quiet[i], strlen(quiet[i]), &out, why, sizeof why), 0);
    assert_int_equal(out.len, 0);
    assert_int_equal(provider_stream_event(s, start_ev, strlen(start_ev), &out, why, sizeof why),
                     0);
    buf_reset(&out);
    /* data over several lines (joined with \n: JSON white space), no event line, no space */
    const char *multi = "data:{\"type\":\"content_block_start\",\n"
                        "data: \"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"Hi\"}}"
                        "\n\n";
    assert_int_equal(provider_stream_event(s, multi, strlen(multi), &out, why, sizeof why), 0);
    assert_non_null(strstr(out.data, "\"delta\":{\"content\":\"Hi\"}"));
    buf_free(&out);
    provider_stream_free(s);
}

static void stream_malformed(void **state)
{
    static const struct {
        bool started;
        const char *ev;
    } cases[] = {
        {false, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,"
                "\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n"},
        {false, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{}}\n\n"},
        {true, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":"
               "\"x\"}}\n\n"},
        {true, "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":3,"
               "\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n"},
        {true, "event: content_block_delta\ndata: {not json\n\n"},
        {true, "event: message_delta\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"},
        {true, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"},
        {true, "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\""
               ":\"end_turn\"},\"usage\":{\"output_tokens\":\"many\"}}\n\n"},
        {true, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":"
               "99999999,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n"},
        {true, "event: error\ndata: {\"type\":\"error\"}\n\n"},
        {true, "event: message_delta\n\n"},
    };
    cfg_target t = target();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        provider_stream *s = provider_stream_new(&t, "claude");
        buf out = BUF_INIT;
        char why[256] = "";
        if (cases[i].started)
            assert_int_equal(
                provider_stream_event(s, start_ev, strlen(start_ev), &out, why, sizeof why), 0);
        int rc = provider_stream_event(s, cases[i].ev, strlen(cases[i].ev), &out, why, sizeof why);
        if (rc != -1) fail_msg("case %zu accepted", i);
        assert_true(strlen(why) > 10);
        buf_free(&out);
        provider_stream_free(s);
    }
    /* a delta of the wrong kind for its block */
    provider_stream *s = provider_stream_new(&t, "claude");
    buf out = BUF_INIT;
    char why[256];
    const char *blk = "event: content_block_start\ndata: {\"type\":\"content_block_start\","
                      "\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n";
    const char *bad = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\","
                      "\"index\":0,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":"
                      "\"{\"}}\n\n";
    assert_int_equal(provider_stream_event(s, start_ev, strlen(start_ev), &out, why, sizeof why),
                     0);
    assert_int_equal(provider_stream_event(s, blk, strlen(blk), &out, why, sizeof why), 0);
    assert_int_equal(provider_stream_event(s, bad, strlen(bad), &out, why, sizeof why), -1);
    buf_free(&out);
    provider_stream_free(s);
    provider_stream_free(NULL);
}

static void errors_map(void **state)
{
    static const struct {
        const char *file;
        int status, want_status;
        const char *type, *code;
    } cases[] = {
        {"error_overloaded.json", 529, 503, "server_error", "upstream_overloaded"},
        {"error_invalid_request.json", 400, 400, "invalid_request_error", NULL},
        {"error_rate_limit.json", 429, 429, "requests", "rate_limit_exceeded"},
        {"error_authentication.json", 401, 401, "authentication_error", "invalid_api_key"},
        {"error_api.json", 500, 500, "server_error", "upstream_error"},
    };
    cfg_target t = target();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        char *body = slurp(cases[i].file, &n);
        provider_error e;
        provider_map_error(&t, cases[i].status, body, n, &e);
        assert_int_equal(e.status, cases[i].want_status);
        assert_string_equal(e.type, cases[i].type);
        if (cases[i].code)
            assert_string_equal(e.code, cases[i].code);
        else
            assert_null(e.code);
        char msg[PROVIDER_ERROR_MESSAGE_MAX];
        provider_error_message(body, n, msg, sizeof msg);
        assert_true(strlen(msg) > 5);
        free(body);
    }
    /* 529 without a body is still overloaded; an unknown body goes by status */
    provider_error e;
    provider_map_error(&t, 529, NULL, 0, &e);
    assert_int_equal(e.status, 503);
    assert_string_equal(e.code, "upstream_overloaded");
    provider_map_error(&t, 404, "<html>", 6, &e);
    assert_int_equal(e.status, 404);
    assert_string_equal(e.type, "invalid_request_error");
    provider_map_error(&t, 502, "", 0, &e);
    assert_int_equal(e.status, 502);
    assert_string_equal(e.type, "server_error");
}

/* The splice (anthropic_splice.c) against the document path: every body it translates gives
 * the same upstream body, every answer the same chat.completion; the rest it declines. */
static void splice_request_case(cfg_target *t, const char *body, bool spliced)
{
    arena *pool = arena_new(4096);
    provider_raw_body raw = {.body = body, .len = strlen(body), .model = "claude"};
    provider_request fast;
    char err[256] = "";
    int rc = provider_build_chat_raw(t, &raw, "req-1", pool, &fast, err, sizeof err);
    if (!spliced) {
        if (rc != PROVIDER_EDECLINED) fail_msg("spliced, not declined: %s", body);
        arena_free(pool);
        return;
    }
    if (rc != 0) fail_msg("declined (%d), not spliced: %s", rc, body);
    assert_string_equal(fast.url, "https://api.anthropic.com/v1/messages");
    assert_string_equal(header(&fast, "x-api-key"), "sk-ant-test");
    json_t *got = json_loadb(fast.body, fast.body_len, 0, NULL);
    if (!got) fail_msg("the spliced body is not JSON: %.*s", (int)fast.body_len, fast.body);
    free(fast.body);
    provider_request slow;
    json_t *want;
    rc = build(t, body, &slow, &want, err, sizeof err);
    if (rc) fail_msg("document path refused (%d: %s) what the splice sent: %s", rc, err, body);
    assert_json_equal(got, want, body);
    json_decref(got);
    json_decref(want);
    arena_free(pool);
}

static void splice_request_matches_the_document_path(void **state)
{
    (void)state;
    cfg_target t = target();
    static const struct {
        const char *body;
        bool spliced;
    } cases[] = {
        {"{\"model\":\"claude\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}", true},
        {"{\"model\":\"claude\",\"temperature\":0.2,\"max_tokens\":256,\"messages\":[{\"role\":"
         "\"system\",\"content\":\"Be brief.\"},{\"role\":\"user\",\"content\":\"Hi\"},{\"role\":"
         "\"assistant\",\"content\":\"Hello!\"},{\"role\":\"user\",\"content\":\"Capital?\"}]}",
         true},
        /* consecutive turns of one role merge; system anywhere; developer is system */
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\"},{\"role\":\"developer\","
         "\"content\":\"sys\"},{\"role\":\"user\",\"content\":\"b\"},{\"role\":\"assistant\","
         "\"content\":\"c\"},{\"role\":\"assistant\",\"content\":\"d\"}],\"model\":\"x\"}",
         true},
        /* escapes, non-ASCII and white space copied as they are; key order in a message */
        {" { \"model\" : \"claude\" ,\n \"messages\" : [ { \"content\" : \"a\\\"b\\\\n\\u00e9 "
         "\xc3\xa9 \\ud83d\\ude00\" , \"role\" : \"user\" } ] , \"top_p\" : 1e0 } ",
         true},
        /* the parameters it maps, and the ones it drops */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stream\":true,"
         "\"stream_options\":{\"include_usage\":true},\"stop\":\"END\",\"user\":\"u-1\","
         "\"max_completion_tokens\":77,\"seed\":5,\"metadata\":{\"a\":[1,{\"b\":[]}]},"
         "\"frequency_penalty\":0,\"presence_penalty\":null,\"logit_bias\":{},\"store\":false}",
         true},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stream\":false,"
         "\"temperature\":null,\"top_p\":null,\"stop\":null,\"user\":null,\"stop\":\"\"}",
         true},
        /* what the document path must judge or refuse: declined */
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
         "\"text\":\"q\"}]}]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\",\"name\":\"n\"}]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"a\"},{\"role\":"
         "\"system\",\"content\":\"b\"},{\"role\":\"user\",\"content\":\"q\"}]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"a\"}]}", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"\"}]}", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":null}]}", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"tool\",\"content\":\"r\"}]}", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"role\":\"user\",\"content\":\"q\"}]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":0}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":1."
         "5}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"max_tokens\":1,"
         "\"max_completion_tokens\":2}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stop\":[\"a\"]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"n\":1}", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"tools\":[]}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"anthropic\":{}}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"stream\":\"y\"}",
         false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}],\"temperature\":"
         "\"hot\"}",
         false},
        {"{\"model\":\"m\",\"messages\":{}}", false},
        {"[1]", false},
        {"{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"q\"}]", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        splice_request_case(&t, cases[i].body, cases[i].spliced);
    /* the fixtures (plain is a common shape; the others have parts, tools or n) */
    static const char *const stems[] = {"plain", "system", "multi_turn",
                                        "tools", "images", "thinking"};
    for (size_t i = 0; i < sizeof stems / sizeof stems[0]; i++) {
        char in[128];
        snprintf(in, sizeof in, "req_%s.in.json", stems[i]);
        char *body = slurp(in, NULL);
        arena *pool = arena_new(4096);
        provider_raw_body raw = {.body = body, .len = strlen(body), .model = "claude"};
        provider_request pr;
        char err[256];
        bool spliced = provider_build_chat_raw(&t, &raw, NULL, pool, &pr, err, sizeof err) == 0;
        if (spliced) free(pr.body);
        arena_free(pool);
        splice_request_case(&t, body, spliced);
        if (i == 0 && !spliced) fail_msg("req_%s is a common shape but was declined", stems[i]);
        free(body);
    }
    /* a target with parameters merges them under the request: declined */
    json_t *params = json_pack("{s:i}", "max_tokens", 9);
    t.parameters = params;
    splice_request_case(&t, cases[0].body, false);
    json_decref(params);
}

static json_t *answer_without_created(char *text, size_t n)
{
    json_t *v = json_loadb(text, n, 0, NULL);
    if (!v) fail_msg("not JSON: %.*s", (int)n, text);
    assert_true(json_is_integer(json_object_get(v, "created")));
    json_object_del(v, "created");
    free(text);
    return v;
}

static void splice_answer_case(const char *body, bool spliced)
{
    buf fast = BUF_INIT;
    provider_usage fu = {0}, su = {0};
    bool ok = anthropic_splice_answer(body, strlen(body), "claude", &fast, &fu);
    char why[256];
    size_t n = 0;
    char *slow = anthropic_chat_answer_doc(body, strlen(body), "claude", &n, &su, why, sizeof why);
    if (ok != spliced)
        fail_msg("%s, expected %s: %s", ok ? "spliced" : "declined",
                 spliced ? "spliced" : "declined", body);
    if (ok) {
        if (!slow) fail_msg("document path refused (%s) what the splice translated: %s", why, body);
        /* the counts handed to the caller are the answer's usage */
        assert_true(fu.present && su.present);
        assert_int_equal(fu.prompt_tokens, su.prompt_tokens);
        assert_int_equal(fu.completion_tokens, su.completion_tokens);
        provider_usage parsed = {0};
        provider_parse_usage(fast.data, fast.len, &parsed);
        assert_true(parsed.present);
        assert_int_equal(parsed.prompt_tokens, fu.prompt_tokens);
        assert_int_equal(parsed.completion_tokens, fu.completion_tokens);
        size_t fast_len = fast.len;
        json_t *got = answer_without_created(buf_steal(&fast), fast_len);
        json_t *want = answer_without_created(slow, n);
        assert_json_equal(got, want, body);
        json_decref(got);
        json_decref(want);
    } else {
        buf_free(&fast);
        free(slow);
    }
}

static void splice_answer_matches_the_document_path(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        bool spliced;
    } cases[] = {
        {"{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"c\","
         "\"content\":"
         "[{\"type\":\"text\",\"text\":\"Paris.\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":"
         "null,\"usage\":{\"input_tokens\":42,\"output_tokens\":19}}",
         true},
        /* counts of every kind, null ones, extra usage and block keys, escapes */
        {" {\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\":7,"
         "\"cache_creation_input_tokens\":null,\"output_tokens\":3,\"service_tier\":\"standard\","
         "\"server_tool_use\":{\"web_search_requests\":0}},\"stop_reason\":\"max_tokens\","
         "\"content\":[{\"citations\":[{\"a\":[1,true,null]}],\"text\":\"\\\"q\\\"\\n\\u00e9\","
         "\"type\":\"text\"}],\"type\":\"message\",\"id\":\"m\\u0031\",\"container\":null} ",
         true},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"refusal\",\"usage\":{"
         "}}",
         true},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"\"}],"
         "\"stop_reason\":\"something_new\",\"usage\":{\"output_tokens\":1}}",
         true},
        /* joined texts, tools, thinking, and everything wrong: the document path's */
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
         "{\"type\":\"text\",\"text\":\"b\"}],\"stop_reason\":\"end_turn\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\","
         "\"name\":\"f\",\"input\":{}}],\"stop_reason\":\"tool_use\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\"}],\"stop_reason\":"
         "\"end_turn\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":"
         "{\"input_tokens\":-1}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":"
         "{\"input_tokens\":1.0}}",
         false},
        {"{\"id\":7,\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"error\",\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":{}"
         "}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"usage\":{}}", false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":null,\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"content\":[],\"stop_reason\":\"e\","
         "\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"\\ud800\"}]"
         ","
         "\"stop_reason\":\"end_turn\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[{\"type\":\"text\",\"text\":\"\xc0\xaf\"}"
         "],"
         "\"stop_reason\":\"end_turn\",\"usage\":{}}",
         false},
        {"{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"stop_reason\":\"end_turn\",\"usage\":"
         "{}",
         false},
        {"[]", false},
        {"", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        splice_answer_case(cases[i].body, cases[i].spliced);
    static const char *const fixtures[] = {"answer_text.json", "answer_max_tokens.json",
                                           "answer_thinking.json", "answer_tool_use.json"};
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        char *body = slurp(fixtures[i], NULL);
        buf probe = BUF_INIT;
        bool spliced = anthropic_splice_answer(body, strlen(body), "claude", &probe, NULL);
        buf_free(&probe);
        splice_answer_case(body, spliced);
        free(body);
    }
}

/* An Anthropic caller's own body to an Anthropic target (same family): the bytes as they are,
 * model replaced, parameters the request lacks added, max_tokens only when nothing gives it. */
static void native_body_is_the_callers(void **state)
{
    (void)state;
    cfg_target t = target();
    arena *pool = arena_new(4096);
    char err[256] = "";
    provider_request pr;
    /* offsets as the chat probe gives them */
    const char *body =
        "{\"model\":\"claude\",\"max_tokens\":9,\"top_k\":3,\"messages\":[{\"role\":"
        "\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\",\"cache_control\":{"
        "\"type\":\"ephemeral\"}}]}]}";
    str keys[] = {STR_LIT("model"), STR_LIT("max_tokens"), STR_LIT("top_k"), STR_LIT("messages")};
    provider_raw_body raw = {.body = body,
                             .len = strlen(body),
                             .model = "claude",
                             .model_start = 9,
                             .model_end = 17,
                             .object_end = strlen(body) - 1,
                             .keys = keys,
                             .n_keys = 4};
    assert_int_equal(provider_build_messages_raw(&t, &raw, "r-1", pool, &pr, err, sizeof err), 0);
    assert_string_equal(pr.url, "https://api.anthropic.com/v1/messages");
    assert_string_equal(header(&pr, "x-api-key"), "sk-ant-test");
    assert_string_equal(header(&pr, "anthropic-version"), "2023-06-01");
    assert_string_equal(header(&pr, "X-Request-Id"), "r-1");
    char *want =
        "{\"model\":\"claude-sonnet-4-20250514\",\"max_tokens\":9,\"top_k\":3,\"messages\":"
        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\","
        "\"cache_control\":{\"type\":\"ephemeral\"}}]}]}";
    assert_int_equal(pr.body_len, strlen(want));
    assert_memory_equal(pr.body, want, pr.body_len);
    free(pr.body);
    /* the target's parameters where the request has none */
    t.parameters = json_pack("{s:i,s:i,s:f}", "top_k", 50, "max_tokens", 77, "temperature", 0.5);
    assert_int_equal(provider_build_messages_raw(&t, &raw, NULL, pool, &pr, err, sizeof err), 0);
    json_t *got = json_loadb(pr.body, pr.body_len, 0, NULL);
    assert_non_null(got);
    assert_int_equal(json_integer_value(json_object_get(got, "top_k")), 3);      /* the request's */
    assert_int_equal(json_integer_value(json_object_get(got, "max_tokens")), 9); /* ditto */
    assert_true(json_real_value(json_object_get(got, "temperature")) == 0.5);
    json_decref(got);
    free(pr.body);
    /* a body without max_tokens: none added (the caller's API requires it; the provider says so) */
    json_decref(t.parameters);
    t.parameters = NULL;
    const char *bare = "{\"model\":\"claude\",\"messages\":[]}";
    str bare_keys[] = {STR_LIT("model"), STR_LIT("messages")};
    provider_raw_body b2 = {.body = bare,
                            .len = strlen(bare),
                            .model = "claude",
                            .model_start = 9,
                            .model_end = 17,
                            .object_end = strlen(bare) - 1,
                            .keys = bare_keys,
                            .n_keys = 2};
    assert_int_equal(provider_build_messages_raw(&t, &b2, NULL, pool, &pr, err, sizeof err), 0);
    assert_string_equal(pr.body, "{\"model\":\"claude-sonnet-4-20250514\",\"messages\":[]}");
    free(pr.body);
    /* ... or the target's, when it has one */
    t.parameters = json_pack("{s:i}", "max_tokens", 77);
    assert_int_equal(provider_build_messages_raw(&t, &b2, NULL, pool, &pr, err, sizeof err), 0);
    assert_string_equal(
        pr.body, "{\"model\":\"claude-sonnet-4-20250514\",\"messages\":[],\"max_tokens\":77}");
    free(pr.body);
    json_decref(t.parameters);
    /* another type does not speak it */
    cfg_target o = {
        .name = "gpt", .type = TARGET_OPENAI, .endpoint = "https://x", .model_name = "m"};
    assert_int_equal(provider_build_messages_raw(&o, &b2, NULL, pool, &pr, err, sizeof err),
                     PROVIDER_EUNSUPPORTED);
    /* the answer's usage: every input token counted as prompt */
    provider_usage u = {0};
    const char *ans =
        "{\"type\":\"message\",\"usage\":{\"input_tokens\":5,\"cache_read_input_tokens\""
        ":7,\"cache_creation_input_tokens\":11,\"output_tokens\":3}}";
    assert_true(provider_messages_usage(ans, strlen(ans), &u));
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 23);
    assert_int_equal(u.completion_tokens, 3);
    assert_false(provider_messages_usage("{\"usage\":{\"input_tokens\":-1}}", 29, &u));
    assert_false(provider_messages_usage("not json", 8, &u));
    assert_false(provider_messages_usage("{\"type\":\"message\"}", 18, &u)); /* no usage */
    assert_false(provider_messages_usage("{\"usage\":null}", 14, &u));
    assert_false(provider_messages_usage("{\"usage\":[1]}", 13, &u));
    assert_false(provider_messages_usage("[{\"usage\":{}}]", 14, &u));
    assert_false(provider_messages_usage("{\"usage\":{\"output_tokens\":\"3\"}}", 31, &u));
    assert_false(provider_messages_usage("{\"usage\":{\"output_tokens\":1.5}}", 30, &u));
    /* only the top-level usage counts; null counts are absent; unknown keys ignored */
    const char *nested =
        "{\"content\":[{\"usage\":{\"input_tokens\":99}}],\"usage\":{\"input_tokens\":1,"
        "\"cache_read_input_tokens\":null,\"service_tier\":\"standard\",\"server_tool_use\":"
        "{\"web_search_requests\":2},\"output_tokens\":2}}";
    assert_true(provider_messages_usage(nested, strlen(nested), &u));
    assert_int_equal(u.prompt_tokens, 1);
    assert_int_equal(u.completion_tokens, 2);
    arena_free(pool);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(requests_translate),
        cmocka_unit_test(request_url_and_headers),
        cmocka_unit_test(parameters_merge_under_the_request),
        cmocka_unit_test(tool_choice_forms),
        cmocka_unit_test(refusals_name_the_field),
        cmocka_unit_test(dropped_parameters_go_nowhere),
        cmocka_unit_test(speaks_openai),
        cmocka_unit_test(answers_translate),
        cmocka_unit_test(bad_answers),
        cmocka_unit_test(streams_translate),
        cmocka_unit_test(stream_tool_arguments_reassemble),
        cmocka_unit_test(stream_sse_framing),
        cmocka_unit_test(stream_malformed),
        cmocka_unit_test(errors_map),
        cmocka_unit_test(splice_request_matches_the_document_path),
        cmocka_unit_test(native_body_is_the_callers),
        cmocka_unit_test(splice_answer_matches_the_document_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
