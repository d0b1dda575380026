/* test_workqueue.c — the controller's work queue: de-duplication, one reconcile in flight per
 * key, re-queue of a key added while in flight, exponential per-key retry delays with a cap,
 * forget, delayed adds and clear. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "controller/workqueue.h"

static void test_dedupe(void **state)
{
    (void)state;
    workqueue *q = wq_new(5, 300000);
    wq_add(q, "LLMGateway/ns/a");
    wq_add(q, "LLMGateway/ns/b");
    wq_add(q, "LLMGateway/ns/a");
    assert_int_equal(wq_len(q), 2);
    assert_string_equal(wq_get(q), "LLMGateway/ns/a");
    assert_string_equal(wq_get(q), "LLMGateway/ns/b");
    assert_null(wq_get(q));
    wq_free(q);
}

static void test_one_in_flight(void **state)
{
    (void)state;
    workqueue *q = wq_new(5, 300000);
    wq_add(q, "k");
    const char *k = wq_get(q);
    assert_string_equal(k, "k");
    assert_int_equal(wq_in_flight(q), 1);
    /* added twice while in flight: not handed out again until done, then once */
    wq_add(q, "k");
    wq_add(q, "k");
    assert_int_equal(wq_len(q), 0);
    assert_null(wq_get(q));
    wq_done(q, k);
    assert_int_equal(wq_len(q), 1);
    k = wq_get(q);
    assert_string_equal(k, "k");
    wq_done(q, k);
    assert_int_equal(wq_len(q), 0);
    assert_int_equal(wq_in_flight(q), 0);
    assert_null(wq_get(q));
    wq_free(q);
}

static void test_rate_limited(void **state)
{
    (void)state;
    workqueue *q = wq_new(5, 1000);
    uint64_t now = 1000;
    wq_add(q, "k");
    const char *k = wq_get(q);
    assert_int_equal(wq_add_rate_limited(q, k, now), 5);
    wq_done(q, k); /* the retry waits for its delay */
    assert_int_equal(wq_len(q), 0);
    assert_int_equal(wq_delayed(q), 1);
    assert_int_equal(wq_next_due(q, now), 5);
    wq_promote(q, now + 4);
    assert_null(wq_get(q));
    wq_promote(q, now + 5);
    k = wq_get(q);
    assert_non_null(k);
    assert_int_equal(wq_add_rate_limited(q, k, now), 10);
    wq_done(q, "k");
    assert_int_equal(wq_add_rate_limited(q, "k", now), 20);
    assert_int_equal(wq_add_rate_limited(q, "k", now), 40);
    for (int i = 0; i < 20; i++)
        wq_add_rate_limited(q, "k", now);
    assert_int_equal(wq_add_rate_limited(q, "k", now), 1000); /* capped */
    assert_int_equal(wq_failures(q, "k"), 25);
    /* other keys have their own count */
    assert_int_equal(wq_add_rate_limited(q, "other", now), 5);
    wq_forget(q, "k");
    assert_int_equal(wq_failures(q, "k"), 0);
    assert_int_equal(wq_add_rate_limited(q, "k", now), 5);
    wq_free(q);
}

static void test_add_cancels_delay(void **state)
{
    (void)state;
    workqueue *q = wq_new(5, 1000);
    wq_add_after(q, "k", 0, 500);
    wq_add_after(q, "k", 0, 800); /* the earlier time wins */
    assert_int_equal(wq_next_due(q, 0), 500);
    wq_add(q, "k"); /* an event now: no need to wait */
    assert_int_equal(wq_delayed(q), 0);
    assert_int_equal(wq_len(q), 1);
    assert_int_equal(wq_next_due(q, 0), UINT64_MAX);
    wq_free(q);
}

static void test_clear(void **state)
{
    (void)state;
    workqueue *q = wq_new(5, 1000);
    wq_add(q, "a");
    wq_add(q, "b");
    const char *a = wq_get(q);
    wq_add(q, "a"); /* dirty */
    wq_add_after(q, "c", 0, 100);
    wq_clear(q);
    assert_int_equal(wq_len(q), 0);
    assert_int_equal(wq_delayed(q), 0);
    assert_int_equal(wq_in_flight(q), 1);
    wq_done(q, a);
    assert_int_equal(wq_len(q), 0); /* not re-queued after a clear */
    wq_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dedupe),       cmocka_unit_test(test_one_in_flight),
        cmocka_unit_test(test_rate_limited), cmocka_unit_test(test_add_cancels_delay),
        cmocka_unit_test(test_clear),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
