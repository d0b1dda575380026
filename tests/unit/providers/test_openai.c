/* test_openai.c — what the OpenAI-family adapter takes from a provider's error answer: the
 * message, cut at a character boundary and always valid UTF-8, and the rate-limit type. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "core/utf8.h"
#include "providers/provider.h"

static void message_is_cut_between_characters(void **state)
{
    /* 300 euro signs (900 bytes) after 0, 1 or 2 ASCII bytes: every alignment of the cut */
    for (int lead = 0; lead < 3; lead++) {
        char body[2048];
        int n = snprintf(body, sizeof body, "{\"error\":{\"message\":\"%.*s", lead, "ab");
        for (int i = 0; i < 300; i++)
            n += snprintf(body + n, sizeof body - (size_t)n, "\xe2\x82\xac");
        n += snprintf(body + n, sizeof body - (size_t)n, "\",\"type\":\"server_error\"}}");
        char out[PROVIDER_ERROR_MESSAGE_MAX];
        provider_error_message(body, (size_t)n, out, sizeof out);
        size_t len = strlen(out);
        assert_true(len < sizeof out);
        assert_true(len > sizeof out - 4); /* as much as fits */
        assert_true(utf8_valid(out, len));
        assert_int_equal((len - (size_t)lead) % 3, 0);
    }
}

static void message_sources(void **state)
{
    char out[64];
    const char *a = "{\"error\":\"plain string\"}";
    provider_error_message(a, strlen(a), out, sizeof out);
    assert_string_equal(out, "plain string");
    const char *b = "{\"message\":\"top level\"}";
    provider_error_message(b, strlen(b), out, sizeof out);
    assert_string_equal(out, "top level");
    /* not JSON: printable ASCII only, other bytes as spaces */
    const char *c = "<html>\xff\xfe bad gateway</html>";
    provider_error_message(c, strlen(c), out, sizeof out);
    assert_string_equal(out, "<html>   bad gateway</html>");
    provider_error_message(NULL, 0, out, sizeof out);
    assert_string_equal(out, "");
}

static void rate_limit_type(void **state)
{
    const char *tokens = "{\"error\":{\"message\":\"x\",\"type\":\"tokens\"}}";
    assert_string_equal(provider_rate_limit_type(tokens, strlen(tokens)), "tokens");
    const char *quota = "{\"error\":{\"message\":\"x\",\"type\":\"insufficient_quota\"}}";
    assert_string_equal(provider_rate_limit_type(quota, strlen(quota)), "insufficient_quota");
    const char *other = "{\"error\":{\"message\":\"x\",\"type\":\"rate_limit_error\"}}";
    assert_string_equal(provider_rate_limit_type(other, strlen(other)), "requests");
    assert_string_equal(provider_rate_limit_type("busy", 4), "requests");
    assert_string_equal(provider_rate_limit_type(NULL, 0), "requests");
}

static provider_usage usage_of(const char *body)
{
    provider_usage u = {0};
    provider_parse_usage(body, strlen(body), &u);
    return u;
}

/* The usage reader: the last usage key's object, its top-level integer counts only. */
static void usage_reading(void **state)
{
    provider_usage u = usage_of("{\"id\":\"x\",\"choices\":[],\"usage\":{\"prompt_tokens\":42,"
                                "\"completion_tokens\":19,\"total_tokens\":61}}");
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 42);
    assert_int_equal(u.completion_tokens, 19);
    /* nested details do not count; spacing and key order do not matter */
    u = usage_of(
        "{\"usage\" : { \"prompt_tokens_details\": {\"prompt_tokens\": 7, \"x\": [1, "
        "{\"completion_tokens\": 9}]}, \"completion_tokens\": 3, \"prompt_tokens\": 5 } }");
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 5);
    assert_int_equal(u.completion_tokens, 3);
    /* not integers: a fraction, a negative, a string, a number too large */
    u = usage_of("{\"usage\":{\"prompt_tokens\":1.5,\"completion_tokens\":-2}}");
    assert_false(u.present);
    u = usage_of("{\"usage\":{\"prompt_tokens\":\"7\",\"completion_tokens\":"
                 "123456789012345678901}}");
    assert_false(u.present);
    /* usage null, an array, or missing: none */
    assert_false(usage_of("{\"usage\":null}").present);
    assert_false(usage_of("{\"usage\":[1,2]}").present);
    assert_false(usage_of("{\"choices\":[]}").present);
    /* the key inside a string is not the key; the last real one counts */
    u = usage_of("{\"text\":\"say \\\"usage\\\": {}\",\"usage\":{\"prompt_tokens\":2}}");
    assert_true(u.present);
    assert_int_equal(u.prompt_tokens, 2);
    assert_int_equal(u.completion_tokens, 0);
    /* a body cut inside the usage object: the full parse fails too, none */
    assert_false(usage_of("{\"usage\":{\"prompt_tokens\":2,").present);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(message_is_cut_between_characters),
        cmocka_unit_test(message_sources),
        cmocka_unit_test(rate_limit_type),
        cmocka_unit_test(usage_reading),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
