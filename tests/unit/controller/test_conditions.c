/* test_conditions.c — metav1.Condition bookkeeping: lastTransitionTime kept while the status
 * stays, moved when it changes; reason / message / observedGeneration changes reported; and the
 * status comparison that ignores the timestamps moving on every reconcile. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "controller/conditions.h"

static const char *ltt(const json_t *conds, const char *type)
{
    return json_string_value(json_object_get(cond_get(conds, type), "lastTransitionTime"));
}

static void test_transition_time(void **state)
{
    (void)state;
    json_t *conds = json_array();
    assert_true(
        cond_set(conds, "Ready", "False", "InvalidSpec", "spec.x: bad", 1, "2026-01-01T00:00:00Z"));
    assert_string_equal(ltt(conds, "Ready"), "2026-01-01T00:00:00Z");
    /* same status, same everything: nothing changed, time kept */
    assert_false(
        cond_set(conds, "Ready", "False", "InvalidSpec", "spec.x: bad", 1, "2026-01-01T00:01:00Z"));
    assert_string_equal(ltt(conds, "Ready"), "2026-01-01T00:00:00Z");
    /* same status, another message: a change, but not a transition */
    assert_true(
        cond_set(conds, "Ready", "False", "InvalidSpec", "spec.y: bad", 2, "2026-01-01T00:02:00Z"));
    assert_string_equal(ltt(conds, "Ready"), "2026-01-01T00:00:00Z");
    assert_int_equal(
        json_integer_value(json_object_get(cond_get(conds, "Ready"), "observedGeneration")), 2);
    /* status changes: the time moves */
    assert_true(cond_set(conds, "Ready", "True", "Reconciled", "ok", 3, "2026-01-01T00:03:00Z"));
    assert_string_equal(ltt(conds, "Ready"), "2026-01-01T00:03:00Z");
    assert_string_equal(cond_status(conds, "Ready"), "True");
    assert_string_equal(json_string_value(json_object_get(cond_get(conds, "Ready"), "reason")),
                        "Reconciled");
    /* another type is separate */
    assert_true(cond_set(conds, "Available", "False", "DeploymentUnavailable", "none", 3,
                         "2026-01-01T00:04:00Z"));
    assert_int_equal(json_array_size(conds), 2);
    assert_string_equal(ltt(conds, "Ready"), "2026-01-01T00:03:00Z");
    assert_null(cond_get(conds, "Degraded"));
    assert_null(cond_status(conds, "Degraded"));
    json_decref(conds);
}

static void test_status_same(void **state)
{
    (void)state;
    json_t *a = json_loads("{\"observedGeneration\": 2, \"lastUpdated\": \"t1\", \"conditions\":"
                           " [{\"type\": \"Ready\", \"status\": \"True\", \"lastTransitionTime\":"
                           " \"t1\"}], \"modelHealth\": [{\"name\": \"m\", \"state\": \"Healthy\","
                           " \"lastTransitionTime\": \"t1\"}]}",
                           0, NULL);
    json_t *b = json_deep_copy(a);
    json_object_set_new(b, "lastUpdated", json_string("t2"));
    json_object_set_new(json_array_get(json_object_get(b, "conditions"), 0), "lastTransitionTime",
                        json_string("t2"));
    assert_true(status_same(a, b));
    json_object_set_new(json_array_get(json_object_get(b, "modelHealth"), 0), "state",
                        json_string("Unhealthy"));
    assert_false(status_same(a, b));
    json_t *empty = json_object();
    assert_true(status_same(NULL, empty));
    json_decref(empty);
    assert_false(status_same(NULL, a));
    json_decref(a);
    json_decref(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_transition_time),
        cmocka_unit_test(test_status_same),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
