/* test_json.c — json_decode_fast / json_encode_fast agree with jansson's own parser and encoder:
 * the same documents from the same text, and text jansson reads back as the same document. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "core/json.h"

#include <yajl/yajl_parse.h>

static const char *const corpus[] = {
    "{}",
    "[]",
    "null",
    "true",
    "\"plain\"",
    "0",
    "-12",
    "9223372036854775807",
    "-9223372036854775808",
    "1.5",
    "-0.25e-3",
    "1e300",
    "{\"model\":\"gpt-4o\",\"temperature\":0.2,\"max_tokens\":256,\"stream\":true,"
    "\"stop\":null,\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}",
    "{\"esc\":\"quote \\\" backslash \\\\ slash \\/ nl \\n tab \\t ctrl \\u0001 nul \\u0000 end\"}",
    "{\"utf8\":\"caf\\u00e9 \xe2\x82\xac \\ud83d\\ude00 \xf0\x9f\x98\x80 "
    "\xe4\xb8\xad\xe6\x96\x87\"}",
    "{\"nested\":{\"a\":[1,[2,[3,{\"b\":[]}]],{}],\"c\":{\"d\":{\"e\":false}}}}",
    "{\"order\":1,\"keeps\":2,\"insertion\":3,\"a\":4}",
    "  {\"ws\" : [ 1 , 2 ] }  \n",
    "{\"tool_calls\":[{\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"f\","
    "\"arguments\":\"{\\\"x\\\":1}\"}}]}",
};

static void decode_matches_jansson(void **state)
{
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        const char *t = corpus[i];
        json_error_t je;
        json_t *want = json_loadb(t, strlen(t), JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        if (!want) fail_msg("jansson refused corpus[%zu]: %s", i, je.text);
        char err[256] = "";
        json_t *raw = json_decode_fast(t, strlen(t), err, sizeof err);
        if (!raw) fail_msg("corpus[%zu] refused: %s", i, err);
        json_t *got = json_plain(raw); /* numbers kept as text (1e300) read as jansson reads them */
        json_decref(raw);
        if (!json_equal(want, got)) fail_msg("corpus[%zu] decodes differently", i);
        /* types, not only values: an integer stays an integer */
        assert_int_equal(json_typeof(want), json_typeof(got));
        json_decref(want);
        json_decref(got);
    }
}

static void encode_reads_back_and_keeps_order(void **state)
{
    for (size_t i = 0; i < sizeof corpus / sizeof corpus[0]; i++) {
        json_t *doc =
            json_loadb(corpus[i], strlen(corpus[i]), JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        size_t n = 0;
        char *text = json_encode_fast(doc, &n);
        assert_non_null(text);
        assert_int_equal(n, strlen(text)); /* \u0000 is written escaped: no raw NUL */
        json_t *back = json_loadb(text, n, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
        if (!back || !json_equal(doc, back))
            fail_msg("corpus[%zu] does not read back: %s", i, text);
        json_decref(back);
        free(text);
        json_decref(doc);
    }
    json_t *o = json_pack("{s:i, s:i, s:i}", "z", 1, "a", 2, "m", 3);
    char *s = json_encode_fast(o, NULL);
    assert_string_equal(s, "{\"z\":1,\"a\":2,\"m\":3}");
    free(s);
    json_decref(o);
    /* a real stays a real, in the fewest digits that read back the same */
    json_t *r = json_pack("[f, f, f]", 2.0, 0.1, -1e-9);
    s = json_encode_fast(r, NULL);
    json_t *rb = json_loadb(s, strlen(s), 0, NULL);
    assert_true(json_is_real(json_array_get(rb, 0)));
    assert_true(json_equal(r, rb));
    free(s);
    json_decref(r);
    json_decref(rb);
}

static void numbers_keep_their_text(void **state)
{
    static const char *const texts[] = {
        "0",
        "-7",
        "9223372036854775807",
        "-9223372036854775808",
        "0.5",
        "0.7",
        "0.1",
        "-0.0",
        "1e+300",
        /* none of these survives a 64-bit integer or a double as written */
        "9223372036854775808",
        "123456789012345678901234567890",
        "-0",
        "1e999",
        "-1e999",
        "1E5",
        "1e5",
        "1.50",
        "2.0000000000000000001",
        "0.30000000000000004441",
        "1e-400",
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char in[128], want[128];
        snprintf(in, sizeof in, "{\"seed\": %s , \"a\":[%s]}", texts[i], texts[i]);
        snprintf(want, sizeof want, "{\"seed\":%s,\"a\":[%s]}", texts[i], texts[i]);
        char err[128] = "";
        json_t *doc = json_decode_fast(in, strlen(in), err, sizeof err);
        if (!doc) fail_msg("texts[%zu] '%s' refused: %s", i, texts[i], err);
        char *out = json_encode_fast(doc, NULL);
        assert_non_null(out);
        if (strcmp(out, want) != 0) fail_msg("texts[%zu]: %s came back as %s", i, want, out);
        free(out);
        /* jansson's shallow copy keeps raw numbers */
        json_t *copy = json_copy(doc);
        out = json_encode_fast(copy, NULL);
        assert_string_equal(out, want);
        free(out);
        json_decref(copy);
        json_decref(doc);
    }
    /* json_plain: the nearest double, or NULL beyond the double range */
    json_t *doc = json_decode_fast("[123456789012345678901234567890, 1.50, 7]", 41, NULL, 0);
    assert_true(json_raw_number_text(json_array_get(doc, 0), NULL, NULL));
    json_t *plain = json_plain(doc);
    assert_true(json_is_real(json_array_get(plain, 0)));
    assert_true(json_real_value(json_array_get(plain, 0)) == 1.2345678901234568e+29);
    assert_true(json_real_value(json_array_get(plain, 1)) == 1.5);
    assert_true(json_is_integer(json_array_get(plain, 2)));
    char *s = json_dumps(plain, JSON_COMPACT);
    assert_non_null(s);
    free(s);
    json_decref(plain);
    json_decref(doc);
    doc = json_decode_fast("{\"a\":{\"b\":[1e999]}}", 19, NULL, 0);
    assert_non_null(doc);
    assert_null(json_plain(doc));
    json_decref(doc);
    /* no raw number: the same document */
    doc = json_decode_fast("{\"a\":[1,0.5,\"x\"]}", 18, NULL, 0);
    plain = json_plain(doc);
    assert_ptr_equal(plain, doc);
    json_decref(plain);
    json_decref(doc);
}

static void refuses_bad_input(void **state)
{
    const char *bad[] = {"",
                         "{",
                         "{\"a\":}",
                         "[1,]",
                         "{\"a\":1} x",
                         "\"\xff\"",
                         "nul",
                         "01",
                         "\"\xc0\xaf\"",
                         "\"\xed\xa0\x80\"",
                         "\"a\\udc00\"",
                         "{\"\xf4\x90\x80\x80\":1}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        json_t *v = json_decode_fast(bad[i], strlen(bad[i]), err, sizeof err);
        if (v) fail_msg("bad[%zu] '%s' was accepted", i, bad[i]);
        assert_true(strlen(err) > 0);
    }
    /* nesting is bounded: no stack exhaustion on hostile input */
    buf deep = BUF_INIT;
    for (int i = 0; i < 600; i++)
        buf_puts(&deep, "[");
    for (int i = 0; i < 600; i++)
        buf_puts(&deep, "]");
    char err[256] = "";
    assert_null(json_decode_fast(deep.data, deep.len, err, sizeof err));
    assert_non_null(strstr(err, "nesting"));
    buf_free(&deep);
}

/* Lone UTF-16 surrogate escapes are refused, as jansson refuses them: yajl alone turned a lone
 * low surrogate into bytes that are not UTF-8 (the document then failed to encode) and a lone
 * high one into "?" (found by tests/fuzz/fuzz_sse.c). Pairs and escaped backslashes still
 * read. */
static void lone_surrogates(void **state)
{
    const char *bad[] = {
        "\"\\udc00\"",      "\"a\\ud800b\"",   "\"\\uD83D\"",        "[\"\\ud83d\\u0041\"]",
        "{\"k\\udfff\":1}", "\"\\\\\\udc00\"", "\"\\ud800\\ud800\"", "\"\\ud83d\\ude00\\ude00\"",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        json_t *v = json_decode_fast(bad[i], strlen(bad[i]), err, sizeof err);
        if (v) fail_msg("bad[%zu] %s was accepted", i, bad[i]);
        if (!strstr(err, "lone UTF-16 surrogate")) fail_msg("bad[%zu]: %s", i, err);
    }
    char err[256] = "";
    json_t *v = json_decode_fast("\"\\ud83d\\ude00\"", 14, err, sizeof err);
    assert_non_null(v);
    assert_string_equal(json_string_value(v), "\xf0\x9f\x98\x80");
    json_decref(v);
    /* an escaped backslash, then the letters ud800 */
    v = json_decode_fast("\"\\\\ud800\"", 9, err, sizeof err);
    assert_non_null(v);
    assert_string_equal(json_string_value(v), "\\ud800");
    json_decref(v);
}

/* json_sax_new: a pass on the thread's scratch arena; a pass opened inside another gets its own
 * memory; errors read before the pass is freed; a long escaped string grows yajl's buffers */
typedef struct nest {
    int strings;
    json_t *inner; /* a decode made while the outer pass is open */
    buf longest;
} nest;

static int nest_string(void *ctx, const unsigned char *v, size_t n)
{
    nest *x = ctx;
    if (x->strings++ == 0) x->inner = json_decode_fast("{\"a\":[1,\"\\u00e9\"]}", 18, NULL, 0);
    if (n > x->longest.len) {
        buf_reset(&x->longest);
        buf_append(&x->longest, v, n);
    }
    return 1;
}

static void sax_passes_on_scratch(void **state)
{
    static const yajl_callbacks cb = {.yajl_string = nest_string};
    buf text = BUF_INIT;
    buf_puts(&text, "[\"x\",\"");
    for (int i = 0; i < 5000; i++)
        buf_puts(&text, "ab\\n\\u00e9"); /* escapes: decoded into yajl's growing buffer */
    buf_puts(&text, "\"]");
    for (int round = 0; round < 3; round++) { /* the scratch arena is reset and reused */
        nest x = {.longest = BUF_INIT};
        yajl_handle h = json_sax_new(&cb, &x);
        assert_non_null(h);
        assert_int_equal(yajl_parse(h, (const unsigned char *)text.data, text.len), yajl_status_ok);
        assert_int_equal(yajl_complete_parse(h), yajl_status_ok);
        json_sax_free(h);
        assert_int_equal(x.strings, 2);
        assert_non_null(x.inner);
        assert_string_equal(json_string_value(json_array_get(json_object_get(x.inner, "a"), 1)),
                            "\xc3\xa9");
        json_decref(x.inner);
        assert_int_equal(x.longest.len, 5000 * 5);
        assert_memory_equal(x.longest.data, "ab\n\xc3\xa9", 5);
        buf_free(&x.longest);
    }
    /* the error text is the handle's, read before it is freed */
    nest y = {.longest = BUF_INIT};
    yajl_handle h = json_sax_new(&cb, &y);
    assert_int_equal(yajl_parse(h, (const unsigned char *)"[\"a\",}", 6), yajl_status_error);
    unsigned char *e = yajl_get_error(h, 0, NULL, 0);
    assert_non_null(strstr((const char *)e, "parse error"));
    yajl_free_error(h, e);
    json_sax_free(h);
    json_decref(y.inner);
    buf_free(&y.longest);
    buf_free(&text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(decode_matches_jansson),
        cmocka_unit_test(encode_reads_back_and_keeps_order),
        cmocka_unit_test(numbers_keep_their_text),
        cmocka_unit_test(refuses_bad_input),
        cmocka_unit_test(lone_surrogates),
        cmocka_unit_test(sax_passes_on_scratch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
