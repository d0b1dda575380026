/* test_utf8.c — strict UTF-8 checks, repair and boundary-safe truncation (core/utf8.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/utf8.h"

static void strict_check(void **state)
{
    static const struct {
        const char *s;
        size_t bad; /* offset of the fault, or strlen(s) */
    } cases[] = {
        {"plain ascii, longer than eight bytes", 36},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 14},
        {"\xed\x9f\xbf\xee\x80\x80\xf4\x8f\xbf\xbf", 10}, /* U+D7FF U+E000 U+10FFFF */
        {"abcdefgh\xc0\xaf", 8},                          /* overlong '/' */
        {"\xe0\x80\xaf", 0},                              /* overlong, 3 bytes */
        {"\xf0\x80\x80\xaf", 0},                          /* overlong, 4 bytes */
        {"x\xed\xa0\x80", 1},                             /* U+D800 encoded */
        {"xy\xed\xbf\xbf", 2},                            /* U+DFFF encoded */
        {"\xf4\x90\x80\x80", 0},                          /* U+110000 */
        {"\xf5\x80\x80\x80", 0},
        {"ok\xe2\x82", 2}, /* truncated */
        {"\x80", 0},       /* stray continuation */
        {"\xff", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t got = utf8_check(cases[i].s, strlen(cases[i].s));
        if (got != cases[i].bad) fail_msg("case %zu: fault at %zu, want %zu", i, got, cases[i].bad);
    }
    assert_true(utf8_valid("", 0));
}

static void json_string_escapes(void **state)
{
    bool sur;
    const char *ok = "a\\ud83d\\ude00b \\u00e9 \\\\udc00 \\n\\\" \\uDBFF\\uDFFF";
    assert_int_equal(utf8_check_json_string(ok, strlen(ok), &sur), strlen(ok));
    const char *lone_low = "a\\udc00b";
    assert_int_equal(utf8_check_json_string(lone_low, strlen(lone_low), &sur), 1);
    assert_true(sur);
    const char *mispaired = "\\ud800\\u0041";
    assert_int_equal(utf8_check_json_string(mispaired, strlen(mispaired), &sur), 0);
    assert_true(sur);
    const char *at_end = "xx\\ud800";
    assert_int_equal(utf8_check_json_string(at_end, strlen(at_end), &sur), 2);
    assert_true(sur);
    /* the fault is found at every offset within and across eight-byte words */
    for (size_t k = 0; k < 24; k++) {
        char t[64];
        memset(t, 'a', k);
        memcpy(t + k, "\\udc00\\n tail of plain text", 24);
        assert_int_equal(utf8_check_json_string(t, k + 24, &sur), k);
        memcpy(t + k, "\\n\xc0\xaf tail of plain text..", 24);
        assert_int_equal(utf8_check_json_string(t, k + 24, &sur), k + 2);
        memcpy(t + k, "\xc3\xa9\\\\udc00 plain text......", 24);
        assert_int_equal(utf8_check_json_string(t, k + 24, &sur), k + 24);
    }
    const char *raw_bad = "\\n\xc0\xaf";
    assert_int_equal(utf8_check_json_string(raw_bad, strlen(raw_bad), &sur), 2);
    assert_false(sur);
}

static void repair_and_bound(void **state)
{
    buf b = BUF_INIT;
    utf8_append_repaired(&b, "/\xff/\xc0\xaf/", 6, 100);
    assert_string_equal(b.data, "/\xef\xbf\xbd/\xef\xbf\xbd\xef\xbf\xbd/");
    assert_true(utf8_valid(b.data, b.len));
    buf_reset(&b);
    /* a cut never splits a character, and marks itself */
    const char *euros = "\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac\xe2\x82\xac"; /* 12 bytes */
    utf8_append_repaired(&b, euros, 12, 12);
    assert_int_equal(b.len, 12); /* fits exactly: whole */
    buf_reset(&b);
    utf8_append_repaired(&b, euros, 12, 11);
    assert_string_equal(b.data, "\xe2\x82\xac\xe2\x82\xac\xe2\x80\xa6"); /* €€… */
    buf_reset(&b);
    utf8_append_repaired(&b, "a\0b", 3, 10);
    assert_string_equal(b.data, "ab");
    buf_free(&b);
    assert_int_equal(utf8_prefix(euros, 12, 7), 6);
    assert_int_equal(utf8_prefix(euros, 12, 12), 12);
    assert_int_equal(utf8_prefix("abc", 3, 2), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(strict_check),
        cmocka_unit_test(json_string_escapes),
        cmocka_unit_test(repair_and_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
