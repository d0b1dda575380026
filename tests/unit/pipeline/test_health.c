/* test_health.c — the outlier-detection state machine: ejection after unhealthyAfter
 * consecutive failures, the growing (capped) interval, reset on success, readmission, active
 * probes readmitting early, and balancing around ejected / full targets (panic mode). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pipeline/health.h"
#include "pipeline/route.h"

static cfg_target tgt;

static int setup(void **state)
{
    (void)state;
    tgt = (cfg_target){.name = "a",
                       .health_unhealthy_after = 3,
                       .health_base_ejection_s = 10,
                       .health_max_ejection_s = 25};
    return 0;
}

static void test_eject_after_n(void **state)
{
    (void)state;
    health_target *h = health_new(1);
    assert_int_equal(health_current(h, 0), HEALTH_HEALTHY);
    assert_false(health_failure(h, &tgt, "HTTP 503", 1000, 0));
    assert_int_equal(health_current(h, 1000), HEALTH_DEGRADED);
    assert_false(health_failure(h, &tgt, "HTTP 503", 1001, 0));
    assert_false(health_ejected(h, 1001));
    assert_true(health_failure(h, &tgt, "HTTP 503", 1002, 0));
    assert_true(health_ejected(h, 1002));
    assert_int_equal(health_current(h, 1002), HEALTH_UNHEALTHY);
    assert_int_equal(atomic_load(&h->ejections), 1);
    /* 10 s: ejected until 11002 */
    assert_true(health_ejected(h, 11001));
    assert_false(health_ejected(h, 11002));
    /* a failure while ejected changes nothing */
    assert_false(health_failure(h, &tgt, "timeout", 5000, 0));
    assert_int_equal(atomic_load(&h->ejections), 1);
    health_free(h, 1);
}

static void test_success_resets(void **state)
{
    (void)state;
    health_target *h = health_new(1);
    health_failure(h, &tgt, "HTTP 500", 0, 0);
    health_failure(h, &tgt, "HTTP 500", 1, 0);
    health_success(h, &tgt, false, 2, 0);
    assert_int_equal(health_current(h, 2), HEALTH_HEALTHY);
    assert_int_equal(atomic_load(&h->consecutive), 0);
    /* two more are not three in a row */
    health_failure(h, &tgt, "HTTP 500", 3, 0);
    assert_false(health_failure(h, &tgt, "HTTP 500", 4, 0));
    assert_false(health_ejected(h, 4));
    health_free(h, 1);
}

static void eject(health_target *h, int64_t at)
{
    for (int i = 0; i < 3; i++)
        health_failure(h, &tgt, "HTTP 503", at, 0);
}

static void test_growing_interval_capped(void **state)
{
    (void)state;
    health_target *h = health_new(1);
    eject(h, 0);
    assert_int_equal(atomic_load(&h->ejected_until_ms), 10000);
    /* readmitted: Degraded until the first success; a failure then ejects again at once, for
     * twice as long */
    assert_int_equal(health_current(h, 10000), HEALTH_DEGRADED);
    assert_true(health_failure(h, &tgt, "HTTP 503", 10000, 0));
    assert_int_equal(atomic_load(&h->ejected_until_ms), 30000);
    /* the third: 30 s, capped at maxEjectionSeconds 25 */
    assert_true(health_failure(h, &tgt, "HTTP 503", 30000, 0));
    assert_int_equal(atomic_load(&h->ejected_until_ms), 55000);
    assert_int_equal(atomic_load(&h->ejections), 3);
    /* a success after readmission: Healthy; the next ejection soon after still grows */
    health_success(h, &tgt, false, 55000, 0);
    assert_int_equal(health_current(h, 55000), HEALTH_HEALTHY);
    eject(h, 56000);
    assert_int_equal(atomic_load(&h->ejected_until_ms), 56000 + 25000);
    /* Healthy for maxEjectionSeconds: the multiplier starts over */
    health_success(h, &tgt, false, 81000, 0);
    eject(h, 81000 + 25000);
    assert_int_equal(atomic_load(&h->ejected_until_ms), 106000 + 10000);
    health_free(h, 1);
}

static void test_probe_readmits(void **state)
{
    (void)state;
    health_target *h = health_new(1);
    eject(h, 0);
    /* a passive success while ejected (a request started earlier) does not readmit */
    health_success(h, &tgt, false, 100, 0);
    assert_true(health_ejected(h, 100));
    /* a successful probe does */
    health_success(h, &tgt, true, 200, 0);
    assert_false(health_ejected(h, 200));
    assert_int_equal(health_current(h, 200), HEALTH_HEALTHY);
    health_snapshot s;
    health_read(h, 200, &s);
    assert_int_equal(s.state, HEALTH_HEALTHY);
    assert_int_equal(s.ejections, 1);
    assert_non_null(strstr(s.message, "probe"));
    health_free(h, 1);
}

static void test_read_after_expiry(void **state)
{
    (void)state;
    health_target *h = health_new(1);
    eject(h, 0);
    health_snapshot s;
    health_read(h, 5000, &s);
    assert_int_equal(s.state, HEALTH_UNHEALTHY);
    assert_non_null(strstr(s.message, "ejected for 10 s after 3 consecutive failures"));
    health_read(h, 10000, &s);
    assert_int_equal(s.state, HEALTH_DEGRADED);
    assert_int_equal(s.ejected_until_wall_ms, 0);
    health_free(h, 1);
}

/* route_resolve: ejected targets are skipped; when all are, still one is chosen (panic); a
 * full target is skipped too */
static void test_balancing_skips(void **state)
{
    (void)state;
    cfg_target ts[2] = {{.name = "a", .index = 0}, {.name = "b", .index = 1}};
    cfg_backend be[2] = {{&ts[0], 1}, {&ts[1], 1}};
    const char *models[] = {"m"};
    cfg_route rt = {.name = "r",
                    .match_models = models,
                    .n_match_models = 1,
                    .backends = be,
                    .n_backends = 2,
                    .strategy = STRATEGY_ROUND_ROBIN};
    _Atomic unsigned long rr = 0;
    route_target_stats stats[2] = {0};
    health_target *h = health_new(2);
    route_pick_ctx ctx = {.rr = &rr, .stats = stats, .health = h, .now_ms = 1000};
    bool forbidden;
    for (int i = 0; i < 3; i++)
        health_failure(&h[0], &tgt, "HTTP 503", 1000, 0);
    for (int i = 0; i < 6; i++)
        assert_ptr_equal(route_resolve(&rt, "m", NULL, &ctx, &forbidden), &ts[1]);
    /* both ejected: panic, both are used again */
    for (int i = 0; i < 3; i++)
        health_failure(&h[1], &tgt, "HTTP 503", 1000, 0);
    int seen[2] = {0};
    for (int i = 0; i < 6; i++)
        seen[route_resolve(&rt, "m", NULL, &ctx, &forbidden) == &ts[0] ? 0 : 1]++;
    assert_true(seen[0] > 0 && seen[1] > 0);
    /* b full (maxConcurrency 1, one in flight), a ejected: b is not picked while a has room */
    ts[1].max_concurrency = 1;
    atomic_store(&stats[1].in_flight, 1);
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(route_resolve(&rt, "m", NULL, &ctx, &forbidden), &ts[0]);
    health_free(h, 2);
}

static void test_metrics_render(void **state)
{
    (void)state;
    cfg_target ts[1] = {{.name = "q\"x", .index = 0}};
    cfg_gateway gw = {.targets = ts, .n_targets = 1};
    health_target *h = health_new(1);
    buf out = BUF_INIT;
    health_render_metrics(h, &gw, &out);
    assert_non_null(
        strstr(out.data, "ctxgate_target_health{target=\"q\\\"x\",state=\"Healthy\"} 1\n"));
    assert_non_null(
        strstr(out.data, "ctxgate_target_health{target=\"q\\\"x\",state=\"Unhealthy\"} 0\n"));
    assert_non_null(strstr(out.data, "ctxgate_target_ejections_total{target=\"q\\\"x\"} 0\n"));
    buf_free(&out);
    health_free(h, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_eject_after_n, setup),
        cmocka_unit_test_setup(test_success_resets, setup),
        cmocka_unit_test_setup(test_growing_interval_capped, setup),
        cmocka_unit_test_setup(test_probe_readmits, setup),
        cmocka_unit_test_setup(test_read_after_expiry, setup),
        cmocka_unit_test_setup(test_balancing_skips, setup),
        cmocka_unit_test_setup(test_metrics_render, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
