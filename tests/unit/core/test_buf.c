/* test_buf.c — growable buffers and arenas: appends, integer formatting, consume, steal;
 * arena alignment, big blocks, strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/arena.h"
#include "core/buf.h"

static void integers_match_printf(void **state)
{
    unsigned long long us[] = {0, 1, 9, 10, 99, 100, 12345, 4294967296ull, ULLONG_MAX};
    long long is[] = {0, -1, 7, -4096, LLONG_MAX, LLONG_MIN};
    char want[64];
    for (size_t i = 0; i < sizeof us / sizeof us[0]; i++) {
        buf b = BUF_INIT;
        buf_put_u64(&b, us[i]);
        snprintf(want, sizeof want, "%llu", us[i]);
        assert_string_equal(b.data, want);
        buf_free(&b);
    }
    for (size_t i = 0; i < sizeof is / sizeof is[0]; i++) {
        buf b = BUF_INIT;
        buf_put_i64(&b, is[i]);
        snprintf(want, sizeof want, "%lld", is[i]);
        assert_string_equal(b.data, want);
        buf_free(&b);
    }
}

static void frac3_formats_milliseconds(void **state)
{
    struct {
        unsigned long long v;
        const char *want;
    } cases[] = {{0, "0.000"},   {5, "0.005"},    {42, "0.042"},
                 {999, "0.999"}, {1000, "1.000"}, {1234567, "1234.567"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = BUF_INIT;
        buf_put_frac3(&b, cases[i].v);
        assert_string_equal(b.data, cases[i].want);
        buf_free(&b);
    }
}

static void append_grow_consume_steal(void **state)
{
    buf b = BUF_INIT;
    for (int i = 0; i < 1000; i++)
        buf_puts(&b, "abc");
    assert_int_equal(b.len, 3000);
    assert_int_equal(b.data[3000], 0);
    buf_consume(&b, 2998);
    assert_string_equal(b.data, "bc");
    buf_printf(&b, "-%d-%s", 42, "x");
    assert_string_equal(b.data, "bc-42-x");
    char big[600];
    memset(big, 'z', sizeof big - 1);
    big[sizeof big - 1] = 0;
    buf_printf(&b, "%s", big); /* longer than the on-stack fast path */
    assert_int_equal(b.len, 7 + 599);
    char *s = buf_steal(&b);
    assert_null(b.data);
    assert_int_equal(b.len, 0);
    assert_int_equal(strlen(s), 606);
    free(s);
    buf_consume(&b, 10); /* on an empty buffer: no-op */
    assert_int_equal(b.len, 0);
}

static void arena_alignment_and_big_blocks(void **state)
{
    arena *a = arena_new(256);
    for (int i = 1; i < 200; i++) {
        void *p = arena_alloc(a, (size_t)i);
        assert_int_equal((uintptr_t)p % 16, 0);
        memset(p, 0xAB, (size_t)i);
    }
    char *big = arena_alloc(a, 100000); /* own block */
    memset(big, 1, 100000);
    char *after = arena_strdup(a, "still works");
    assert_string_equal(after, "still works");
    assert_string_equal(arena_printf(a, "%s-%d", "n", 7), "n-7");
    assert_null(arena_strdup(a, NULL));
    int *z = arena_calloc(a, 10, sizeof(int));
    for (int i = 0; i < 10; i++)
        assert_int_equal(z[i], 0);
    assert_true(arena_used(a) >= 100000);
    arena_free(a);
    arena_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(integers_match_printf),
        cmocka_unit_test(frac3_formats_milliseconds),
        cmocka_unit_test(append_grow_consume_steal),
        cmocka_unit_test(arena_alignment_and_big_blocks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
