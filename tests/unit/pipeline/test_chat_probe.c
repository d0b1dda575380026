/* test_chat_probe.c — the streaming check of Chat Completions bodies: accepted shapes with the
 * fields and byte offsets the raw forwarding relies on, and every rejection with its field. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include <yajl/yajl_parse.h>

#include "core/buf.h"
#include "core/sax_tape.h"
#include "pipeline/chat_probe.h"

static arena *pool;

static int setup(void **state)
{
    pool = arena_new(4096);
    return 0;
}

static int teardown(void **state)
{
    arena_free(pool);
    return 0;
}

static void accepts_and_measures(void **state)
{
    const char *b =
        "{ \"temperature\": 0.2, \"model\" :  \"gpt-4o\" , \"stream\":true,"
        "\"stream_options\":{\"include_usage\":true},"
        "\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"hi\"}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"x\"}]}],"
        "\"tools\":[{\"type\":\"function\",\"function\":{\"name\":\"model\"}}]}  \n";
    chat_probe p;
    assert_int_equal(chat_probe_parse(b, strlen(b), pool, &p, NULL), PROBE_OK);
    assert_true(p.has_model && p.model_is_string);
    assert_string_equal(p.model, "gpt-4o");
    /* the raw span is exactly the JSON string token, quotes included */
    assert_int_equal(p.model_end - p.model_start, strlen("\"gpt-4o\""));
    assert_memory_equal(b + p.model_start, "\"gpt-4o\"", p.model_end - p.model_start);
    assert_true(p.has_messages);
    assert_int_equal(p.n_messages, 2);
    assert_true(p.stream);
    assert_true(p.include_usage);
    assert_int_equal(b[p.object_end], '}');
    assert_int_equal(p.object_end, strrchr(b, '}') - b);
    assert_int_equal(p.n_top_keys, 6);
    assert_true(chat_probe_has_key(&p, "temperature"));
    assert_true(chat_probe_has_key(&p, "tools"));
    assert_false(chat_probe_has_key(&p, "max_tokens"));
}

static void escaped_model_and_defaults(void **state)
{
    const char *b = "{\"model\":\"a\\\"b\\u00e9\",\"messages\":[{\"role\":\"user\"}],"
                    "\"stream\":null,\"stream_options\":null}";
    chat_probe p;
    assert_int_equal(chat_probe_parse(b, strlen(b), pool, &p, NULL), PROBE_OK);
    assert_string_equal(p.model, "a\"b\xc3\xa9");
    assert_memory_equal(b + p.model_start, "\"a\\\"b\\u00e9\"", p.model_end - p.model_start);
    assert_false(p.stream);
    assert_false(p.include_usage);
}

static void missing_fields_are_reported_not_rejected(void **state)
{
    chat_probe p;
    assert_int_equal(chat_probe_parse("{}", 2, pool, &p, NULL), PROBE_OK);
    assert_false(p.has_model);
    assert_false(p.has_messages);
    assert_int_equal(chat_probe_parse("{\"messages\":[]}", 15, pool, &p, NULL), PROBE_OK);
    assert_true(p.has_messages);
    assert_int_equal(p.n_messages, 0);
}

typedef struct {
    const char *body;
    chat_probe_status want;
    const char *param;
    const char *in_message;
} reject_case;

static void rejects_with_field(void **state)
{
    reject_case cases[] = {
        {"", PROBE_BAD_JSON, NULL, "empty"},
        {"{\"model\":", PROBE_BAD_JSON, NULL, "could not parse"},
        {"{\"model\":\"x\"} trailing", PROBE_BAD_JSON, NULL, "trailing garbage"},
        {"{\"model\":\"\xff\"}", PROBE_BAD_ENCODING, "model", "byte 10 are not valid UTF-8"},
        /* yajl's own check lets these through; the probe refuses them */
        {"{\"model\":\"a\xc0\xaf"
         "b\"}",
         PROBE_BAD_ENCODING, "model", "byte 11"},                                   /* overlong */
        {"{\"model\":\"\xed\xa0\x80\"}", PROBE_BAD_ENCODING, "model", "not valid"}, /* surrogate */
        {"{\"model\":\"\xf4\x90\x80\x80\"}", PROBE_BAD_ENCODING, "model", "U+10FFFF"},
        {"{\"model\":\"\xe2\x82\"}", PROBE_BAD_ENCODING, "model", "truncated"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"a\\udc00b\"}]}", PROBE_BAD_ENCODING,
         "messages", "'messages[0]': the escape '\\udc00'"},
        {"{\"messages\":[{\"role\":\"user\",\"content\":\"\\ud800\\u0041\"}]}", PROBE_BAD_ENCODING,
         "messages", "unpaired UTF-16 surrogate"},
        {"{\"x\":\"\\uD83D\"}", PROBE_BAD_ENCODING, "x", "'\\uD83D' at byte 6"},
        {"{\"x\":\"\\ud83d\\ud83d\"}", PROBE_BAD_ENCODING, "x", "surrogate"},
        {"{\"x\":{\"k\\udfff\":1}}", PROBE_BAD_ENCODING, "x", "surrogate"},
        {"{\"\xff\":1}", PROBE_BAD_ENCODING, NULL, "a top-level key"},
        {"{\"model\":\"a\x01\"}", PROBE_BAD_JSON, NULL, "could not parse"}, /* still refused */
        {"[1,2]", PROBE_NOT_OBJECT, NULL, "object"},
        {"42", PROBE_NOT_OBJECT, NULL, "object"},
        {"\"s\"", PROBE_NOT_OBJECT, NULL, "object"},
        {"{\"model\":\"a\",\"model\":\"b\"}", PROBE_DUPLICATE_KEY, "model", "twice"},
        {"{\"model\":\"a\",\"messages\":[],\"messages\":[]}", PROBE_DUPLICATE_KEY, "messages",
         "twice"},
        {"{\"model\":5}", PROBE_BAD_FIELD, "model", "number"},
        {"{\"model\":{\"a\":1}}", PROBE_BAD_FIELD, "model", "object"},
        {"{\"model\":[\"a\"]}", PROBE_BAD_FIELD, "model", "array"},
        {"{\"model\":null}", PROBE_BAD_FIELD, "model", "null"},
        {"{\"messages\":\"hi\"}", PROBE_BAD_FIELD, "messages", "array"},
        {"{\"messages\":{\"role\":\"user\"}}", PROBE_BAD_FIELD, "messages", "array"},
        {"{\"messages\":[\"hi\"]}", PROBE_BAD_FIELD, "messages", "messages[0]"},
        {"{\"messages\":[{\"role\":\"user\"},[1]]}", PROBE_BAD_FIELD, "messages", "messages[1]"},
        {"{\"messages\":[{\"content\":\"no role\"}]}", PROBE_BAD_FIELD, "messages", "messages[0]"},
        {"{\"messages\":[{\"role\":7}]}", PROBE_BAD_FIELD, "messages", "messages[0].role"},
        {"{\"stream\":\"yes\"}", PROBE_BAD_FIELD, "stream", "boolean"},
        {"{\"stream\":1}", PROBE_BAD_FIELD, "stream", "boolean"},
        {"{\"stream\":[true]}", PROBE_BAD_FIELD, "stream", "boolean"},
        {"{\"stream_options\":true}", PROBE_BAD_FIELD, "stream_options", "object"},
        {"{\"stream_options\":[]}", PROBE_BAD_FIELD, "stream_options", "object"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        chat_probe p;
        chat_probe_status st =
            chat_probe_parse(cases[i].body, strlen(cases[i].body), pool, &p, NULL);
        if (st != cases[i].want)
            fail_msg("case %zu (%s): status %d, want %d (%s)", i, cases[i].body, st, cases[i].want,
                     p.message);
        if (cases[i].param) {
            assert_non_null(p.param);
            assert_string_equal(p.param, cases[i].param);
        } else {
            assert_null(p.param);
        }
        if (!strstr(p.message, cases[i].in_message))
            fail_msg("case %zu: message '%s' lacks '%s'", i, p.message, cases[i].in_message);
    }
}

static void valid_text_passes(void **state)
{
    /* pairs, every plane, escapes next to multi-byte characters, long ASCII runs */
    const char *b =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":"
        "\"\\ud83d\\ude00 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xed\x9f\xbf \xee\x80\x80 "
        "\xc2\x80 \\u00e9\\n\\\"\\\\ \\uDBFF\\uDFFF \\ue000 0123456789abcdefghijklmnop\"}],"
        "\"caf\xc3\xa9\":\"\\\\udc00 is text, not an escape\"}";
    chat_probe p;
    assert_int_equal(chat_probe_parse(b, strlen(b), pool, &p, NULL), PROBE_OK);
    assert_int_equal(p.n_top_keys, 3);
}

static void top_level_keys_are_bounded_and_hashed(void **state)
{
    /* CHAT_PROBE_MAX_TOP_KEYS keys pass; one more is refused naming the limit */
    buf b = BUF_INIT;
    buf_puts(&b, "{\"model\":\"m\"");
    for (int i = 1; i < CHAT_PROBE_MAX_TOP_KEYS; i++)
        buf_printf(&b, ",\"k%d\":%d", i, i);
    buf_puts(&b, "}");
    chat_probe p;
    assert_int_equal(chat_probe_parse(b.data, b.len, pool, &p, NULL), PROBE_OK);
    assert_int_equal(p.n_top_keys, CHAT_PROBE_MAX_TOP_KEYS);
    assert_true(chat_probe_has_key(&p, "k255"));
    b.len--;
    buf_puts(&b, ",\"one-more\":1}");
    assert_int_equal(chat_probe_parse(b.data, b.len, pool, &p, NULL), PROBE_TOO_MANY_KEYS);
    assert_non_null(strstr(p.message, "more than 256 top-level keys"));
    /* a duplicate far from its first occurrence is still found */
    b.len -= strlen(",\"one-more\":1}");
    buf_puts(&b, "}");
    memcpy(strstr(b.data, "\"k200\""), "\"k2\"  ", 6);
    assert_int_equal(chat_probe_parse(b.data, b.len, pool, &p, NULL), PROBE_DUPLICATE_KEY);
    assert_string_equal(p.param, "k2");
    buf_free(&b);
}

static void nested_keys_named_like_fields_are_ignored(void **state)
{
    /* "model"/"stream" inside messages or tools are data, not the request's fields */
    const char *b =
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"model\":5,\"stream\":\"x\","
        "\"content\":{\"messages\":3}}],\"metadata\":{\"model\":[1],\"model\":2}}";
    chat_probe p;
    assert_int_equal(chat_probe_parse(b, strlen(b), pool, &p, NULL), PROBE_OK);
    assert_string_equal(p.model, "m");
    assert_int_equal(p.n_messages, 1);
}

/* ---- the recorded tape: a replay is the yajl pass over the same bytes, event for event ---- */

typedef struct events {
    buf out;
    yajl_handle h; /* a yajl pass: where the token ended */
    size_t pos;    /* a replay: the same */
} events;

static void ev(events *e, const char *what, const void *v, size_t n)
{
    char at[32];
    snprintf(at, sizeof at, "@%zu ", e->h ? yajl_get_bytes_consumed(e->h) : e->pos);
    buf_puts(&e->out, what);
    if (v) {
        buf_append(&e->out, "<", 1);
        buf_append(&e->out, v, n);
        buf_append(&e->out, ">", 1);
    }
    buf_puts(&e->out, at);
}

static int ev_null(void *c)
{
    ev(c, "null", NULL, 0);
    return 1;
}
static int ev_bool(void *c, int b)
{
    ev(c, b ? "true" : "false", NULL, 0);
    return 1;
}
static int ev_number(void *c, const char *v, size_t n)
{
    ev(c, "num", v, n);
    return 1;
}
static int ev_string(void *c, const unsigned char *v, size_t n)
{
    ev(c, "str", v, n);
    return 1;
}
static int ev_key(void *c, const unsigned char *v, size_t n)
{
    ev(c, "key", v, n);
    return 1;
}
static int ev_start_map(void *c)
{
    ev(c, "{", NULL, 0);
    return 1;
}
static int ev_end_map(void *c)
{
    ev(c, "}", NULL, 0);
    return 1;
}
static int ev_start_array(void *c)
{
    ev(c, "[", NULL, 0);
    return 1;
}
static int ev_end_array(void *c)
{
    ev(c, "]", NULL, 0);
    return 1;
}
static const yajl_callbacks ev_callbacks = {
    .yajl_null = ev_null,
    .yajl_boolean = ev_bool,
    .yajl_number = ev_number,
    .yajl_string = ev_string,
    .yajl_map_key = ev_key,
    .yajl_start_map = ev_start_map,
    .yajl_end_map = ev_end_map,
    .yajl_start_array = ev_start_array,
    .yajl_end_array = ev_end_array,
};

static void tape_replays_the_pass(void **state)
{
    static const char *const bodies[] = {
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
        /* escapes are decoded (the tape keeps its own copy of each), white space is skipped */
        " {\"model\" : \"a\\u00e9\\\"b\" ,\n \"messages\":[{\"role\":\"us\\u0065r\",\"content\":"
        "\"x\\ny\\ud83d\\ude00\",\"k\\\\\":\"\\\\\"}] , \"n\":-1.5e3,\"t\":true,\"f\":false,"
        "\"z\":null,\"a\":[[],{},[{}],\"\"]}\t",
        "{\"model\":\"m\",\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"text\","
        "\"text\":\"\xc3\xa9\"}]}],\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        const char *b = bodies[i];
        size_t len = strlen(b);
        events direct = {.out = BUF_INIT}, replay = {.out = BUF_INIT};
        direct.h = yajl_alloc(&ev_callbacks, NULL, &direct);
        yajl_config(direct.h, yajl_dont_validate_strings, 1);
        assert_int_equal(yajl_parse(direct.h, (const unsigned char *)b, len), yajl_status_ok);
        assert_int_equal(yajl_complete_parse(direct.h), yajl_status_ok);
        yajl_free(direct.h);
        chat_probe p;
        sax_tape tape;
        assert_int_equal(chat_probe_parse(b, len, pool, &p, &tape), PROBE_OK);
        assert_true(tape.complete);
        assert_true(sax_tape_replay(&tape, &ev_callbacks, &replay, &replay.pos));
        buf_append(&direct.out, "", 1);
        buf_append(&replay.out, "", 1);
        assert_string_equal(replay.out.data, direct.out.data);
        buf_free(&direct.out);
        buf_free(&replay.out);
    }
}

static int ev_stop_at_key(void *c, const unsigned char *v, size_t n)
{
    ev(c, "key", v, n);
    return 0;
}

static void tape_incomplete_or_declined(void **state)
{
    chat_probe p;
    sax_tape tape;
    events e = {.out = BUF_INIT};
    /* a body the probe refuses leaves an incomplete tape: never replayed */
    const char *bad = "{\"model\":\"m\",\"messages\":[{\"role\":\"user\"}],\"model\":\"n\"}";
    assert_int_equal(chat_probe_parse(bad, strlen(bad), pool, &p, &tape), PROBE_DUPLICATE_KEY);
    assert_false(tape.complete);
    assert_false(sax_tape_replay(&tape, &ev_callbacks, &e, &e.pos));
    assert_int_equal(e.out.len, 0);
    const char *cut = "{\"model\":\"m\",\"messages\":[";
    assert_int_equal(chat_probe_parse(cut, strlen(cut), pool, &p, &tape), PROBE_BAD_JSON);
    assert_false(tape.complete);
    /* a callback that declines ends the replay there */
    const char *ok = "{\"model\":\"m\",\"messages\":[]}";
    assert_int_equal(chat_probe_parse(ok, strlen(ok), pool, &p, &tape), PROBE_OK);
    yajl_callbacks stop = ev_callbacks;
    stop.yajl_map_key = ev_stop_at_key;
    assert_false(sax_tape_replay(&tape, &stop, &e, &e.pos));
    buf_append(&e.out, "", 1);
    assert_string_equal(e.out.data, "{@1 key<model>@8 ");
    buf_free(&e.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(accepts_and_measures),
        cmocka_unit_test(escaped_model_and_defaults),
        cmocka_unit_test(missing_fields_are_reported_not_rejected),
        cmocka_unit_test(rejects_with_field),
        cmocka_unit_test(nested_keys_named_like_fields_are_ignored),
        cmocka_unit_test(valid_text_passes),
        cmocka_unit_test(top_level_keys_are_bounded_and_hashed),
        cmocka_unit_test(tape_replays_the_pass),
        cmocka_unit_test(tape_incomplete_or_declined),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
