/* test_arena.c — the arena's reset (the first block kept, big blocks freed), arena_cat, and the
 * counted-string copy used on the request path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "core/arena.h"
#include "core/str.h"

static void reset_keeps_the_first_block(void **state)
{
    arena *a = arena_new(1024);
    char *first = arena_alloc(a, 16);
    for (int round = 0; round < 4; round++) {
        char *big = arena_alloc(a, 100000); /* a block of its own, after the head */
        memset(big, 'x', 100000);
        for (int i = 0; i < 200; i++) /* new normal blocks in front */
            memset(arena_alloc(a, 100), 'y', 100);
        assert_true(arena_used(a) >= 100000 + 200 * 100);
        arena_reset(a);
        assert_int_equal(arena_used(a), 0);
        char *again = arena_alloc(a, 16);
        assert_ptr_equal(again, first); /* the same first block, from its start */
    }
    arena_free(a);
}

static void cat_joins(void **state)
{
    arena *a = arena_new(256);
    assert_string_equal(arena_cat(a, "http://h:1", "/v1/messages", (char *)NULL),
                        "http://h:1/v1/messages");
    assert_string_equal(arena_cat(a, (char *)NULL), "");
    assert_string_equal(arena_cat(a, "", "a", "", "bc", (char *)NULL), "abc");
    arena_free(a);
}

static void str_copy_cuts_and_terminates(void **state)
{
    char small[4];
    assert_string_equal(str_copy_c(small, sizeof small, STR_LIT("POST")), "POS");
    assert_string_equal(str_copy_c(small, sizeof small, STR_LIT("GE")), "GE");
    assert_string_equal(str_copy_c(small, sizeof small, STR_NULL), "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reset_keeps_the_first_block),
        cmocka_unit_test(cat_joins),
        cmocka_unit_test(str_copy_cuts_and_terminates),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
