/* test_anthropic.c — the Anthropic Messages client surface: requests translated into the
 * canonical chat document (and every refusal, with its field path), whole answers, the event
 * stream built from canonical chunks, and error bodies. Expected documents are written from
 * Anthropic's and OpenAI's API references. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "surface/anthropic.h"

/* got must equal the JSON text expected (key order aside); prints both when not. */
static void expect_json(const json_t *got, const char *expected)
{
    json_error_t e;
    json_t *want = json_loads(expected, 0, &e);
    if (!want) fail_msg("bad expected JSON: %s: %s", e.text, expected);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_SORT_KEYS);
        char *w = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        print_error("got:  %s\nwant: %s\n", g ? g : "(null)", w);
        free(g);
        free(w);
        json_decref(want);
        fail();
    }
    json_decref(want);
}

static json_t *canon(const char *body)
{
    anthropic_refusal why;
    json_t *doc = anthropic_request_to_canonical(body, strlen(body), &why);
    if (!doc) fail_msg("refused: [%s] %s", why.param, why.message);
    return doc;
}

static void expect_canon(const char *body, const char *expected)
{
    json_t *doc = canon(body);
    expect_json(doc, expected);
    json_decref(doc);
}

static void expect_refused(const char *body, const char *param, const char *message)
{
    anthropic_refusal why;
    json_t *doc = anthropic_request_to_canonical(body, strlen(body), &why);
    if (doc) {
        char *s = json_dumps(doc, JSON_COMPACT);
        print_error("accepted: %s\n", s);
        free(s);
        json_decref(doc);
        fail();
    }
    assert_string_equal(why.param, param);
    if (!strstr(why.message, message))
        fail_msg("message \"%s\" lacks \"%s\"", why.message, message);
}

#define M(s) "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":[" s "]}"
#define HI "{\"role\":\"user\",\"content\":\"hi\"}"

/* ---- request translation ---- */

static void plain_and_system(void **state)
{
    expect_canon(M(HI), "{\"model\":\"claude-x\",\"max_tokens\":100,"
                        "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}");
    expect_canon("{\"model\":\"m\",\"max_tokens\":5,\"system\":\"be brief\",\"messages\":[" HI "]}",
                 "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
                 "\"content\":\"be brief\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
    /* system blocks are joined with a blank line; cache_control is accepted */
    expect_canon("{\"model\":\"m\",\"max_tokens\":5,\"system\":[{\"type\":\"text\",\"text\":\"a\"},"
                 "{\"type\":\"text\",\"text\":\"b\",\"cache_control\":{\"type\":\"ephemeral\"}}],"
                 "\"messages\":[" HI "]}",
                 "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[{\"role\":\"system\","
                 "\"content\":\"a\\n\\nb\"},{\"role\":\"user\",\"content\":\"hi\"}]}");
}

static void multi_turn(void **state)
{
    expect_canon(M(HI
                   ",{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"hello\"}]},"
                   "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                   "{\"type\":\"text\",\"text\":\"b\"}]}"),
                 "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":["
                 "{\"role\":\"user\",\"content\":\"hi\"},"
                 "{\"role\":\"assistant\",\"content\":\"hello\"},"
                 "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},"
                 "{\"type\":\"text\",\"text\":\"b\"}]}]}");
}

static void tool_round_trip(void **state)
{
    expect_canon(
        M(HI
          ",{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"checking\"},"
          "{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{\"city\":"
          "\"Paris\"}},{\"type\":\"tool_use\",\"id\":\"toolu_2\",\"name\":\"time\",\"input\":{}}]},"
          "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"and?\"},"
          "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_1\",\"content\":\"18C\"},"
          "{\"type\":\"tool_result\",\"tool_use_id\":\"toolu_2\",\"is_error\":true,"
          "\"content\":[{\"type\":\"text\",\"text\":\"no clock\"},{\"type\":\"text\","
          "\"text\":\"sorry\"}]}]}"),
        "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":["
        "{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":\"checking\",\"tool_calls\":["
        "{\"id\":\"toolu_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\","
        "\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"toolu_2\",\"type\":\"function\",\"function\":{\"name\":\"time\","
        "\"arguments\":\"{}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_1\",\"content\":\"18C\"},"
        "{\"role\":\"tool\",\"tool_call_id\":\"toolu_2\",\"content\":\"Error: no "
        "clock\\n\\nsorry\"},"
        "{\"role\":\"user\",\"content\":\"and?\"}]}");
    /* only tool calls: content null; only a tool result without content */
    expect_canon(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"t\","
                      "\"name\":\"f\",\"input\":{}}]},{\"role\":\"user\",\"content\":[{\"type\":"
                      "\"tool_result\",\"tool_use_id\":\"t\"}]}"),
                 "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":["
                 "{\"role\":\"user\",\"content\":\"hi\"},"
                 "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"t\","
                 "\"type\":\"function\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]},"
                 "{\"role\":\"tool\",\"tool_call_id\":\"t\",\"content\":\"\"}]}");
}

static void images(void **state)
{
    expect_canon(
        M("{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":"
          "\"base64\",\"media_type\":\"image/png\",\"data\":\"iVBORw0K\"}},"
          "{\"type\":\"image\",\"source\":{\"type\":\"url\",\"url\":"
          "\"https://example.com/a.jpg\"}},{\"type\":\"text\",\"text\":\"what?\"}]}"),
        "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\","
        "\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":"
        "\"data:image/png;base64,iVBORw0K\"}},{\"type\":\"image_url\",\"image_url\":"
        "{\"url\":\"https://example.com/a.jpg\"}},{\"type\":\"text\",\"text\":\"what?\"}]}]}");
    /* one image alone stays an array (a string cannot hold it) */
    json_t *doc =
        canon(M("{\"role\":\"user\",\"content\":[{\"type\":\"image\",\"source\":{\"type\":"
                "\"url\",\"url\":\"http://x/y.png\"}}]}"));
    assert_true(json_is_array(
        json_object_get(json_array_get(json_object_get(doc, "messages"), 0), "content")));
    json_decref(doc);
}

static void thinking(void **state)
{
    expect_canon(
        "{\"model\":\"m\",\"max_tokens\":4096,\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":"
        "2048},\"messages\":[" HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\","
        "\"thinking\":\"hmm\",\"signature\":\"sig1\"},{\"type\":\"redacted_thinking\",\"data\":"
        "\"xyz\"},{\"type\":\"text\",\"text\":\"ok\"}]}," HI "]}",
        "{\"model\":\"m\",\"max_tokens\":4096,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"},"
        "{\"role\":\"assistant\",\"content\":\"ok\",\"thinking_blocks\":[{\"type\":\"thinking\","
        "\"thinking\":\"hmm\",\"signature\":\"sig1\"},{\"type\":\"redacted_thinking\",\"data\":"
        "\"xyz\"}]},{\"role\":\"user\",\"content\":\"hi\"}],"
        "\"anthropic\":{\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":2048}}}");
}

static void tools_and_choice(void **state)
{
    const char *tools = "\"tools\":[{\"name\":\"weather\",\"description\":\"d\",\"input_schema\":"
                        "{\"type\":\"object\",\"properties\":{\"city\":{\"type\":\"string\"}}}},"
                        "{\"name\":\"time\",\"input_schema\":{\"type\":\"object\"}}]";
    const char *otools = "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"weather\","
                         "\"description\":\"d\",\"parameters\":{\"type\":\"object\",\"properties\":"
                         "{\"city\":{\"type\":\"string\"}}}}},{\"type\":\"function\",\"function\":"
                         "{\"name\":\"time\",\"parameters\":{\"type\":\"object\"}}}]";
    struct {
        const char *choice, *out;
    } cases[] = {
        {"", ""},
        {",\"tool_choice\":{\"type\":\"auto\"}", ",\"tool_choice\":\"auto\""},
        {",\"tool_choice\":{\"type\":\"any\"}", ",\"tool_choice\":\"required\""},
        {",\"tool_choice\":{\"type\":\"none\"}", ",\"tool_choice\":\"none\""},
        {",\"tool_choice\":{\"type\":\"tool\",\"name\":\"time\"}",
         ",\"tool_choice\":{\"type\":\"function\",\"function\":{\"name\":\"time\"}}"},
        {",\"tool_choice\":{\"type\":\"auto\",\"disable_parallel_tool_use\":true}",
         ",\"tool_choice\":\"auto\",\"parallel_tool_calls\":false"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char in[1024], want[1024];
        snprintf(in, sizeof in, "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],%s%s}",
                 tools, cases[i].choice);
        snprintf(want, sizeof want,
                 "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"hi\"}],%s%s}",
                 otools, cases[i].out);
        expect_canon(in, want);
    }
    /* auto without tools means what no tools means */
    expect_canon("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                 "],\"tool_choice\":{\"type\":\"auto\"}}",
                 "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"hi\"}]}");
}

static void parameters(void **state)
{
    expect_canon("{\"model\":\"m\",\"max_tokens\":7,\"messages\":[" HI "],\"temperature\":0.5,"
                 "\"top_p\":1,\"top_k\":40,\"stop_sequences\":[\"END\",\"STOP\"],\"stream\":true,"
                 "\"metadata\":{\"user_id\":\"u-42\"},\"service_tier\":\"auto\"}",
                 "{\"model\":\"m\",\"max_tokens\":7,\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"hi\"}],\"temperature\":0.5,\"top_p\":1,\"stop\":[\"END\",\"STOP\"],"
                 "\"stream\":true,\"stream_options\":{\"include_usage\":true},\"user\":\"u-42\","
                 "\"anthropic\":{\"top_k\":40,\"service_tier\":\"auto\"}}");
    /* stream false, null metadata.user_id, a number the fast decoder keeps as text */
    expect_canon("{\"model\":\"m\",\"max_tokens\":7,\"messages\":[" HI "],\"stream\":false,"
                 "\"metadata\":{\"user_id\":null},\"temperature\":0.50}",
                 "{\"model\":\"m\",\"max_tokens\":7,\"messages\":[{\"role\":\"user\",\"content\":"
                 "\"hi\"}],\"temperature\":0.5}");
    /* values are carried whole, even past a \u0000 */
    json_t *doc = canon("{\"model\":\"a\\u0000b\",\"max_tokens\":1,\"messages\":[" HI
                        ",{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":"
                        "\"t\\u0000u\",\"name\":\"f\",\"input\":{}}]}]}");
    assert_int_equal(json_string_length(json_object_get(doc, "model")), 3);
    json_t *call = json_array_get(
        json_object_get(json_array_get(json_object_get(doc, "messages"), 1), "tool_calls"), 0);
    assert_int_equal(json_string_length(json_object_get(call, "id")), 3);
    json_decref(doc);
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"tools\":[{\"name\":\"f\\u0000g\",\"input_schema\":{\"type\":\"object\"}}]}",
                   "tools.0.name", "pattern");
    /* a final empty assistant message (a prefill) is allowed */
    expect_canon(M(HI ",{\"role\":\"assistant\",\"content\":\"\"}"),
                 "{\"model\":\"claude-x\",\"max_tokens\":100,\"messages\":[{\"role\":\"user\","
                 "\"content\":\"hi\"},{\"role\":\"assistant\",\"content\":\"\"}]}");
}

static void count_request(void **state)
{
    anthropic_refusal why;
    const char *b = "{\"model\":\"m\",\"system\":\"s\",\"messages\":[" HI "],\"tools\":[{\"name\":"
                    "\"f\",\"input_schema\":{\"type\":\"object\"}}]}";
    json_t *doc = anthropic_count_request(b, strlen(b), &why);
    assert_non_null(doc);
    expect_json(doc, "{\"model\":\"m\",\"messages\":[{\"role\":\"system\",\"content\":\"s\"},"
                     "{\"role\":\"user\",\"content\":\"hi\"}],\"tools\":[{\"type\":\"function\","
                     "\"function\":{\"name\":\"f\",\"parameters\":{\"type\":\"object\"}}}]}");
    json_decref(doc);
    const char *c = "{\"model\":\"m\",\"max_tokens\":5,\"messages\":[" HI "]}";
    assert_null(anthropic_count_request(c, strlen(c), &why));
    assert_string_equal(why.param, "max_tokens");
    const char *d = "{\"model\":\"m\"}";
    assert_null(anthropic_count_request(d, strlen(d), &why));
    assert_string_equal(why.message, "messages: Field required");
}

/* ---- refusals ---- */

static void refusals_top_level(void **state)
{
    expect_refused("{\"model\":", "", "not valid JSON");
    expect_refused("[1]", "", "must be a JSON object");
    expect_refused("{\"max_tokens\":1,\"messages\":[" HI "]}", "model", "model: Field required");
    expect_refused("{\"model\":3,\"max_tokens\":1,\"messages\":[" HI "]}", "model",
                   "model: Input should be a valid string");
    expect_refused("{\"model\":\"\",\"max_tokens\":1,\"messages\":[" HI "]}", "model",
                   "at least 1 character");
    expect_refused("{\"model\":\"m\",\"messages\":[" HI "]}", "max_tokens",
                   "max_tokens: Field required");
    expect_refused("{\"model\":\"m\",\"max_tokens\":\"5\",\"messages\":[" HI "]}", "max_tokens",
                   "max_tokens: Input should be a valid integer");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1.5,\"messages\":[" HI "]}", "max_tokens",
                   "valid integer");
    expect_refused("{\"model\":\"m\",\"max_tokens\":0,\"messages\":[" HI "]}", "max_tokens",
                   "greater than or equal to 1");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1}", "messages", "messages: Field required");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":{}}", "messages", "valid list");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[]}", "messages",
                   "at least one message");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"frequency\":1}",
                   "frequency", "frequency: Extra inputs are not permitted");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"mcp_servers\":[]}",
                   "mcp_servers", "not supported by this gateway");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"system\":5}",
                   "system", "valid string or list");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"system\":[{\"type\":"
                   "\"image\"}]}",
                   "system.0.type", "'text'");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"temperature\":2}",
                   "temperature", "between 0 and 1");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"top_p\":\"x\"}",
                   "top_p", "valid number");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"top_k\":-1}", "top_k",
                   "greater than or equal to 0");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"stream\":1}",
                   "stream", "valid boolean");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"stop_sequences\":[\"a\",3]}",
                   "stop_sequences.1", "non-empty string");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"metadata\":{\"session\":1}}",
                   "metadata.session", "Extra inputs");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"metadata\":{\"user_id\":5}}",
                   "metadata.user_id", "valid string");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"service_tier\":\"priority\"}",
                   "service_tier", "'auto' or 'standard_only'");
    expect_refused("{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[" HI
                   "],\"thinking\":{\"type\":\"enabled\"}}",
                   "thinking.budget_tokens", "Field required");
    expect_refused("{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[" HI
                   "],\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":100}}",
                   "thinking.budget_tokens", "1024");
    expect_refused("{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[" HI
                   "],\"thinking\":{\"type\":\"enabled\",\"budget_tokens\":4000}}",
                   "thinking.budget_tokens", "less than max_tokens");
    expect_refused("{\"model\":\"m\",\"max_tokens\":2000,\"messages\":[" HI
                   "],\"thinking\":{\"type\":\"on\"}}",
                   "thinking.type", "Input tag 'on'");
}

static void refusals_messages(void **state)
{
    expect_refused(M("\"hi\""), "messages.0", "Input should be an object");
    expect_refused(M("{\"content\":\"hi\"}"), "messages.0.role", "messages.0.role: Field required");
    expect_refused(M("{\"role\":\"system\",\"content\":\"hi\"}"), "messages.0.role",
                   "Input should be 'user' or 'assistant'");
    expect_refused(M("{\"role\":\"user\"}"), "messages.0.content", "Field required");
    expect_refused(M("{\"role\":\"user\",\"content\":5}"), "messages.0.content",
                   "valid string or list");
    expect_refused(M("{\"role\":\"user\",\"content\":\"\"}"), "messages.0.content", "non-empty");
    expect_refused(M("{\"role\":\"user\",\"content\":\"x\",\"name\":\"bob\"}"), "messages.0.name",
                   "Extra inputs");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"text\"}]}"),
                   "messages.0.content.0.text", "Field required");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"text\":\"x\"}]}"),
                   "messages.0.content.0.type", "Field required");
    expect_refused(M("{\"role\":\"user\",\"content\":[\"x\"]}"), "messages.0.content.0",
                   "Input should be an object");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":"
                     "\"video\"}]}"),
                   "messages.0.content.1.type",
                   "Input tag 'video' found using 'type' does not match any of the expected tags");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"document\",\"source\":{}}]}"),
                   "messages.0.content.0.type", "document blocks");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\",\"name\":"
                     "\"f\",\"input\":{}}]}"),
                   "messages.0.content.0.type", "belong in assistant messages");
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"image\"}]}"),
                   "messages.1.content.0.type", "belong in user messages");
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[]}," HI), "messages.1.content",
                   "non-empty");
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"text\",\"text\":\"a\","
                        "\"cache_control\":{\"type\":\"forever\"}}]}"),
                   "messages.1.content.0.cache_control.type", "'ephemeral'");
}

static void refusals_images(void **state)
{
#define IMG(src)                                                                                   \
    M("{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"a\"},{\"type\":\"image\"" src \
      "}]}")
    expect_refused(IMG(""), "messages.0.content.1.source", "Field required");
    expect_refused(IMG(",\"source\":\"x\""), "messages.0.content.1.source", "an object");
    expect_refused(IMG(",\"source\":{}"), "messages.0.content.1.source.type", "Field required");
    expect_refused(IMG(",\"source\":{\"type\":\"ftp\"}"), "messages.0.content.1.source.type",
                   "Input tag 'ftp'");
    expect_refused(IMG(",\"source\":{\"type\":\"file\",\"file_id\":\"f\"}"),
                   "messages.0.content.1.source.type", "not supported");
    expect_refused(IMG(",\"source\":{\"type\":\"base64\",\"data\":\"AA\"}"),
                   "messages.0.content.1.source.media_type", "Field required");
    expect_refused(IMG(",\"source\":{\"type\":\"base64\",\"media_type\":\"image/bmp\",\"data\":"
                       "\"AA\"}"),
                   "messages.0.content.1.source.media_type", "'image/png'");
    expect_refused(IMG(",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\"}"),
                   "messages.0.content.1.source.data", "Field required");
    expect_refused(IMG(",\"source\":{\"type\":\"base64\",\"media_type\":\"image/png\",\"data\":"
                       "\"\"}"),
                   "messages.0.content.1.source.data", "empty");
    expect_refused(IMG(",\"source\":{\"type\":\"url\",\"url\":\"file:///etc/passwd\"}"),
                   "messages.0.content.1.source.url", "http");
    expect_refused(IMG(",\"source\":{\"type\":\"url\",\"url\":\"http://a\",\"x\":1}"),
                   "messages.0.content.1.source.x", "Extra inputs");
#undef IMG
}

static void refusals_tool_blocks(void **state)
{
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"name\":"
                        "\"f\",\"input\":{}}]}"),
                   "messages.1.content.0.id", "Field required");
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"tool_use\",\"id\":\"a\","
                        "\"name\":\"f\",\"input\":[]}]}"),
                   "messages.1.content.0.input", "valid dictionary");
    expect_refused(M(HI ",{\"role\":\"assistant\",\"content\":[{\"type\":\"thinking\",\"thinking\":"
                        "\"t\"}]}"),
                   "messages.1.content.0.signature", "Field required");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\"}]}"),
                   "messages.0.content.0.tool_use_id", "Field required");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
                     "\"t\",\"is_error\":\"yes\"}]}"),
                   "messages.0.content.0.is_error", "valid boolean");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
                     "\"t\",\"content\":[{\"type\":\"image\",\"source\":{}}]}]}"),
                   "messages.0.content.0.content.0.type", "images inside a tool_result");
    expect_refused(M("{\"role\":\"user\",\"content\":[{\"type\":\"tool_result\",\"tool_use_id\":"
                     "\"t\",\"content\":7}]}"),
                   "messages.0.content.0.content", "valid string or list");
}

static void refusals_tools(void **state)
{
#define T(tools) "{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI "],\"tools\":" tools "}"
    expect_refused(T("{}"), "tools", "valid list");
    expect_refused(T("[1]"), "tools.0", "an object");
    expect_refused(T("[{\"input_schema\":{\"type\":\"object\"}}]"), "tools.0.name",
                   "Field required");
    expect_refused(T("[{\"name\":\"a b\",\"input_schema\":{\"type\":\"object\"}}]"), "tools.0.name",
                   "pattern");
    expect_refused(T("[{\"name\":\"f\"}]"), "tools.0.input_schema", "Field required");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"array\"}}]"),
                   "tools.0.input_schema.type", "'object'");
    expect_refused(T("[{\"name\":\"f\",\"description\":1,\"input_schema\":{\"type\":\"object\"}}]"),
                   "tools.0.description", "valid string");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}},{\"name\":\"f\","
                     "\"input_schema\":{\"type\":\"object\"}}]"),
                   "tools.1.name", "unique");
    expect_refused(T("[{\"type\":\"web_search_20250305\",\"name\":\"web_search\"}]"),
                   "tools.0.type", "server tools");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"},\"strict\":1}]"),
                   "tools.0.strict", "Extra inputs");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
                     "{\"type\":\"tool\",\"name\":\"g\"}"),
                   "tool_choice.name", "'g' is not the name");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
                     "{\"type\":\"tool\"}"),
                   "tool_choice.name", "Field required");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
                     "{\"type\":\"sometimes\"}"),
                   "tool_choice.type", "Input tag 'sometimes'");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
                     "\"auto\""),
                   "tool_choice", "an object");
    expect_refused(T("[{\"name\":\"f\",\"input_schema\":{\"type\":\"object\"}}],\"tool_choice\":"
                     "{\"type\":\"auto\",\"disable_parallel_tool_use\":\"no\"}"),
                   "tool_choice.disable_parallel_tool_use", "valid boolean");
    expect_refused("{\"model\":\"m\",\"max_tokens\":1,\"messages\":[" HI
                   "],\"tool_choice\":{\"type\":\"any\"}}",
                   "tool_choice", "needs tools");
#undef T
}

/* ---- whole answers ---- */

static json_t *answer(const char *canonical, const char *model)
{
    size_t n = 0;
    char *s = anthropic_response_from_canonical(canonical, strlen(canonical), model, &n);
    assert_non_null(s);
    assert_int_equal(n, strlen(s));
    json_t *v = json_loads(s, 0, NULL);
    free(s);
    assert_non_null(v);
    return v;
}

static void answers(void **state)
{
    json_t *a = answer("{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion\",\"created\":1,"
                       "\"model\":\"gpt-4o\",\"choices\":[{\"index\":0,\"message\":{\"role\":"
                       "\"assistant\",\"content\":\"Hello!\"},\"finish_reason\":\"stop\"}],"
                       "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,"
                       "\"total_tokens\":15}}",
                       "claude-x");
    expect_json(a, "{\"id\":\"msg_chatcmpl-1\",\"type\":\"message\",\"role\":\"assistant\","
                   "\"model\":\"claude-x\",\"content\":[{\"type\":\"text\",\"text\":\"Hello!\"}],"
                   "\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{"
                   "\"input_tokens\":12,\"output_tokens\":3,\"cache_read_input_tokens\":0,"
                   "\"cache_creation_input_tokens\":0}}");
    json_decref(a);

    a = answer(
        "{\"id\":\"c2\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
        "\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\","
        "\"function\":{\"name\":\"weather\",\"arguments\":\"{\\\"city\\\":\\\"Paris\\\"}\"}},"
        "{\"id\":\"call_2\",\"type\":\"function\",\"function\":{\"name\":\"time\","
        "\"arguments\":\"\"}}]},\"finish_reason\":\"tool_calls\"}],\"usage\":{"
        "\"prompt_tokens\":100,\"completion_tokens\":20,\"prompt_tokens_details\":{"
        "\"cached_tokens\":60},\"cache_creation_input_tokens\":30}}",
        "m");
    expect_json(a, "{\"id\":\"msg_c2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
                   "\"content\":[{\"type\":\"tool_use\",\"id\":\"call_1\",\"name\":\"weather\","
                   "\"input\":{\"city\":\"Paris\"}},{\"type\":\"tool_use\",\"id\":\"call_2\","
                   "\"name\":\"time\",\"input\":{}}],\"stop_reason\":\"tool_use\","
                   "\"stop_sequence\":null,\"usage\":{\"input_tokens\":10,\"output_tokens\":20,"
                   "\"cache_read_input_tokens\":60,\"cache_creation_input_tokens\":30}}");
    json_decref(a);

    /* length, thinking blocks first, an Anthropic id kept, bad arguments kept as text */
    a = answer("{\"id\":\"msg_01\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
               "\"partial\",\"thinking_blocks\":[{\"type\":\"thinking\",\"thinking\":\"t\","
               "\"signature\":\"s\"}],\"reasoning_content\":\"t\",\"tool_calls\":[{\"id\":\"x\","
               "\"function\":{\"name\":\"f\",\"arguments\":\"{\\\"a\\\":\"}}]},"
               "\"finish_reason\":\"length\"}]}",
               "m");
    expect_json(a, "{\"id\":\"msg_01\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"m\","
                   "\"content\":[{\"type\":\"thinking\",\"thinking\":\"t\",\"signature\":\"s\"},"
                   "{\"type\":\"text\",\"text\":\"partial\"},{\"type\":\"tool_use\",\"id\":\"x\","
                   "\"name\":\"f\",\"input\":{\"_raw_arguments\":\"{\\\"a\\\":\"}}],"
                   "\"stop_reason\":\"tool_use\",\"stop_sequence\":null,\"usage\":{"
                   "\"input_tokens\":0,\"output_tokens\":0,\"cache_read_input_tokens\":0,"
                   "\"cache_creation_input_tokens\":0}}");
    json_decref(a);

    struct {
        const char *finish, *stop;
    } reasons[] = {{"stop", "end_turn"},
                   {"length", "max_tokens"},
                   {"content_filter", "refusal"},
                   {"tool_calls", "tool_use"}};
    for (size_t i = 0; i < sizeof reasons / sizeof reasons[0]; i++) {
        char body[256];
        snprintf(body, sizeof body,
                 "{\"id\":\"c\",\"choices\":[{\"message\":{\"role\":\"assistant\",\"content\":"
                 "\"x\"},\"finish_reason\":\"%s\"}]}",
                 reasons[i].finish);
        a = answer(body, "m");
        assert_string_equal(json_string_value(json_object_get(a, "stop_reason")), reasons[i].stop);
        /* reasoning_content alone becomes a thinking block with an empty signature */
        json_decref(a);
    }
    a = answer("{\"id\":\"c\",\"choices\":[{\"message\":{\"content\":\"\",\"reasoning_content\":"
               "\"why\"},\"finish_reason\":\"stop\"}]}",
               "m");
    expect_json(json_object_get(a, "content"),
                "[{\"type\":\"thinking\",\"thinking\":\"why\",\"signature\":\"\"}]");
    json_decref(a);

    size_t n;
    assert_null(anthropic_response_from_canonical("{\"error\":{}}", 12, "m", &n));
    assert_null(anthropic_response_from_canonical("nope", 4, "m", &n));
}

/* ---- the stream ---- */

typedef struct {
    anthropic_stream *s;
    buf out;
} stream_run;

static void feed(stream_run *r, const char *data)
{
    char ev[2048];
    int n = snprintf(ev, sizeof ev, "data: %s\n\n", data);
    assert_int_equal(anthropic_stream_event(r->s, ev, (size_t)n, &r->out), 0);
}

/* The events in out as one JSON array of {"event": name, "data": {...}} (and checks that each
 * data's type is its event name). */
static json_t *events(const buf *out)
{
    json_t *list = json_array();
    const char *p = out->data ? out->data : "";
    while (*p) {
        assert_memory_equal(p, "event: ", 7);
        const char *nl = strchr(p, '\n');
        assert_non_null(nl);
        char name[64];
        snprintf(name, sizeof name, "%.*s", (int)(nl - p - 7), p + 7);
        assert_memory_equal(nl + 1, "data: ", 6);
        const char *d = nl + 7;
        const char *end = strstr(d, "\n\n");
        assert_non_null(end);
        json_error_t e;
        json_t *data = json_loadb(d, (size_t)(end - d), 0, &e);
        if (!data) fail_msg("bad data: %s", e.text);
        assert_string_equal(json_string_value(json_object_get(data, "type")), name);
        json_array_append_new(list, data);
        p = end + 2;
    }
    return list;
}

#define CHUNK(delta, finish)                                                                       \
    "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"up\","  \
    "\"choices\":[{\"index\":0,\"delta\":" delta ",\"finish_reason\":" finish "}]}"

static const char *START = "{\"type\":\"message_start\",\"message\":{\"id\":\"msg_chatcmpl-9\","
                           "\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":"
                           "\"claude-x\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{"
                           "\"input_tokens\":11,\"cache_creation_input_tokens\":0,"
                           "\"cache_read_input_tokens\":0,\"output_tokens\":0}}}";

static void stream_text(void **state)
{
    stream_run r = {anthropic_stream_new("claude-x", 11), BUF_INIT};
    assert_false(anthropic_stream_started(r.s));
    feed(&r, CHUNK("{\"role\":\"assistant\",\"content\":\"\"}", "null"));
    assert_true(anthropic_stream_started(r.s));
    feed(&r, CHUNK("{\"content\":\"Hel\"}", "null"));
    feed(&r, CHUNK("{\"content\":\"lo\"}", "null"));
    feed(&r, CHUNK("{}", "\"stop\""));
    size_t before = r.out.len;
    feed(&r, "{\"id\":\"chatcmpl-9\",\"object\":\"chat.completion.chunk\",\"choices\":[],"
             "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":2,\"total_tokens\":14}}");
    assert_true(r.out.len > before); /* message_delta waited for the usage chunk */
    feed(&r, "[DONE]");
    json_t *ev = events(&r.out);
    char want[4096];
    snprintf(want, sizeof want,
             "[%s,"
             "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
             "\"text\":\"\"}},"
             "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
             "\"text\":\"Hel\"}},"
             "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
             "\"text\":\"lo\"}},"
             "{\"type\":\"content_block_stop\",\"index\":0},"
             "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\","
             "\"stop_sequence\":null},\"usage\":{\"input_tokens\":12,\"output_tokens\":2,"
             "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}},"
             "{\"type\":\"message_stop\"}]",
             START);
    expect_json(ev, want);
    json_decref(ev);
    /* after message_stop nothing more */
    before = r.out.len;
    feed(&r, CHUNK("{\"content\":\"late\"}", "null"));
    assert_int_equal(r.out.len, before);
    buf_free(&r.out);
    anthropic_stream_free(r.s);
}

static void stream_tool_calls(void **state)
{
    stream_run r = {anthropic_stream_new("claude-x", 11), BUF_INIT};
    feed(&r, CHUNK("{\"role\":\"assistant\",\"content\":\"Let me look.\"}", "null"));
    feed(&r, CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"call_a\",\"type\":\"function\","
                   "\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]}",
                   "null"));
    feed(&r, CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"ci\"}}]}",
                   "null"));
    feed(&r, CHUNK("{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"ty\\\":\\\"P\\\"}"
                   "\"}}]}",
                   "null"));
    feed(&r, CHUNK("{\"tool_calls\":[{\"index\":1,\"id\":\"call_b\",\"type\":\"function\","
                   "\"function\":{\"name\":\"time\",\"arguments\":\"{}\"}}]}",
                   "null"));
    feed(&r, CHUNK("{}", "\"tool_calls\""));
    feed(&r, "[DONE]"); /* no usage chunk: message_delta at [DONE] with what is known */
    json_t *ev = events(&r.out);
    char want[4096];
    snprintf(
        want, sizeof want,
        "[%s,"
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
        "\"text\":\"\"}},"
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"Let me look.\"}},"
        "{\"type\":\"content_block_stop\",\"index\":0},"
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
        "\"id\":\"call_a\",\"name\":\"weather\",\"input\":{}}},"
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"{\\\"ci\"}},"
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"ty\\\":\\\"P\\\"}\"}},"
        "{\"type\":\"content_block_stop\",\"index\":1},"
        "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\","
        "\"id\":\"call_b\",\"name\":\"time\",\"input\":{}}},"
        "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"{}\"}},"
        "{\"type\":\"content_block_stop\",\"index\":2},"
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
        "\"stop_sequence\":null},\"usage\":{\"input_tokens\":11,\"output_tokens\":0,"
        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0}},"
        "{\"type\":\"message_stop\"}]",
        START);
    expect_json(ev, want);
    json_decref(ev);
    buf_free(&r.out);
    anthropic_stream_free(r.s);
}

static void stream_thinking_then_text_after_tool(void **state)
{
    stream_run r = {anthropic_stream_new("claude-x", 11), BUF_INIT};
    feed(&r, CHUNK("{\"role\":\"assistant\",\"reasoning_content\":\"hmm\"}", "null"));
    feed(&r,
         CHUNK("{\"thinking_blocks\":[{\"type\":\"thinking\",\"signature\":\"SIG\"}]}", "null"));
    feed(&r, CHUNK("{\"tool_calls\":[{\"index\":0,\"id\":\"c\",\"function\":{\"name\":\"f\","
                   "\"arguments\":\"{}\"}}]}",
                   "null"));
    feed(&r, CHUNK("{\"content\":\"after\"}", "null"));
    /* finish and usage in one chunk (some providers): message_delta at once */
    feed(&r, "{\"id\":\"chatcmpl-9\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":"
             "\"stop\"}],\"usage\":{\"prompt_tokens\":50,\"completion_tokens\":9,"
             "\"prompt_tokens_details\":{\"cached_tokens\":40}}}");
    feed(&r, "[DONE]");
    json_t *ev = events(&r.out);
    char want[4096];
    snprintf(
        want, sizeof want,
        "[%s,"
        "{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\","
        "\"thinking\":\"\",\"signature\":\"\"}},"
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
        "\"thinking\":\"hmm\"}},"
        "{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\","
        "\"signature\":\"SIG\"}},"
        "{\"type\":\"content_block_stop\",\"index\":0},"
        "{\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\","
        "\"id\":\"c\",\"name\":\"f\",\"input\":{}}},"
        "{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
        "\"partial_json\":\"{}\"}},"
        "{\"type\":\"content_block_stop\",\"index\":1},"
        "{\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"text\","
        "\"text\":\"\"}},"
        "{\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"text_delta\","
        "\"text\":\"after\"}},"
        "{\"type\":\"content_block_stop\",\"index\":2},"
        "{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\","
        "\"stop_sequence\":null},\"usage\":{\"input_tokens\":10,\"output_tokens\":9,"
        "\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":40}},"
        "{\"type\":\"message_stop\"}]",
        START);
    expect_json(ev, want);
    json_decref(ev);
    buf_free(&r.out);
    anthropic_stream_free(r.s);
}

static void stream_errors(void **state)
{
    /* an error event mid-stream ends it with event: error, and nothing follows */
    stream_run r = {anthropic_stream_new("claude-x", 11), BUF_INIT};
    feed(&r, CHUNK("{\"role\":\"assistant\",\"content\":\"par\"}", "null"));
    feed(&r, "{\"error\":{\"message\":\"upstream is overloaded\",\"type\":\"server_error\","
             "\"code\":\"upstream_overloaded\"}}");
    size_t before = r.out.len;
    feed(&r, "[DONE]");
    assert_int_equal(r.out.len, before);
    json_t *ev = events(&r.out);
    assert_int_equal(json_array_size(ev), 4); /* start, block start, delta, error */
    expect_json(json_array_get(ev, 3), "{\"type\":\"error\",\"error\":{\"type\":"
                                       "\"overloaded_error\",\"message\":\"upstream is "
                                       "overloaded\"}}");
    json_decref(ev);
    buf_free(&r.out);
    anthropic_stream_free(r.s);

    /* the pipeline ends a started stream itself */
    stream_run q = {anthropic_stream_new("claude-x", 11), BUF_INIT};
    feed(&q, CHUNK("{\"content\":\"x\"}", "null"));
    anthropic_stream_error(q.s, 504, "the upstream took too long", &q.out);
    ev = events(&q.out);
    expect_json(json_array_get(ev, json_array_size(ev) - 1),
                "{\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":"
                "\"the upstream took too long\"}}");
    json_decref(ev);
    buf_reset(&q.out);
    anthropic_stream_ping(&q.out);
    assert_string_equal(q.out.data, "event: ping\ndata: {\"type\":\"ping\"}\n\n");
    buf_free(&q.out);
    anthropic_stream_free(q.s);

    /* not canonical chunks */
    anthropic_stream *s = anthropic_stream_new("m", 0);
    buf out = BUF_INIT;
    assert_int_equal(anthropic_stream_event(s, "data: {nope\n\n", 13, &out), -1);
    assert_int_equal(anthropic_stream_event(s, "event: x\n\n", 10, &out), -1);
    assert_int_equal(anthropic_stream_event(s, "data: {\"choices\":3}\n\n", 22, &out), -1);
    /* [DONE] alone still makes a whole, valid message */
    assert_int_equal(anthropic_stream_event(s, "data: [DONE]\r\n\r\n", 16, &out), 0);
    json_t *all = events(&out);
    assert_int_equal(json_array_size(all), 3);
    json_decref(all);
    buf_free(&out);
    anthropic_stream_free(s);
    anthropic_stream_free(NULL);
}

/* ---- error bodies ---- */

static void error_bodies(void **state)
{
    struct {
        int status;
        const char *type;
    } types[] = {{400, "invalid_request_error"},
                 {401, "authentication_error"},
                 {403, "permission_error"},
                 {404, "not_found_error"},
                 {413, "request_too_large"},
                 {429, "rate_limit_error"},
                 {500, "api_error"},
                 {502, "api_error"},
                 {503, "overloaded_error"},
                 {529, "overloaded_error"},
                 {504, "timeout_error"},
                 {409, "api_error"}};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
        assert_string_equal(anthropic_error_type(types[i].status), types[i].type);

    const char *b = "{\"error\":{\"message\":\"model 'x' not found\",\"type\":"
                    "\"invalid_request_error\",\"code\":\"model_not_found\"}}";
    size_t n;
    char *s = anthropic_error_from_openai(404, b, strlen(b), &n);
    json_t *v = json_loads(s, 0, NULL);
    expect_json(v, "{\"type\":\"error\",\"error\":{\"type\":\"not_found_error\",\"message\":"
                   "\"model 'x' not found\"}}");
    assert_int_equal(n, strlen(s));
    json_decref(v);
    free(s);
    s = anthropic_error_from_openai(502, "bad \xff gateway", 13, &n);
    v = json_loads(s, 0, NULL);
    expect_json(v, "{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":"
                   "\"bad \xef\xbf\xbd gateway\"}}");
    json_decref(v);
    free(s);
    s = anthropic_error_from_openai(500, NULL, 0, &n);
    assert_non_null(strstr(s, "status 500"));
    free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plain_and_system),
        cmocka_unit_test(multi_turn),
        cmocka_unit_test(tool_round_trip),
        cmocka_unit_test(images),
        cmocka_unit_test(thinking),
        cmocka_unit_test(tools_and_choice),
        cmocka_unit_test(parameters),
        cmocka_unit_test(count_request),
        cmocka_unit_test(refusals_top_level),
        cmocka_unit_test(refusals_messages),
        cmocka_unit_test(refusals_images),
        cmocka_unit_test(refusals_tool_blocks),
        cmocka_unit_test(refusals_tools),
        cmocka_unit_test(answers),
        cmocka_unit_test(stream_text),
        cmocka_unit_test(stream_tool_calls),
        cmocka_unit_test(stream_thinking_then_text_after_tool),
        cmocka_unit_test(stream_errors),
        cmocka_unit_test(error_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
