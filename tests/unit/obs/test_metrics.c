/* test_metrics.c — obs/metrics: exact sums of counters recorded concurrently on several shards,
 * histogram bucket placement and cumulative counts, label escaping, series created while a
 * scrape runs, and every rendered page checked line by line by a strict exposition parser.
 * Shards are process-wide and live forever, so each test uses its own gateway label. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <math.h>
#include <pthread.h>
#include <unistd.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "expo.h"
#include "obs/metrics.h"

static char *render(void)
{
    buf b = BUF_INIT;
    obs_render(&b);
    return buf_steal(&b);
}

/* Renders and parses; fails the test with the checker's message when the page is invalid. */
static void scrape(expo_page *pg)
{
    char *text = render();
    bool ok = expo_parse(pg, text);
    if (!ok) fail_msg("invalid exposition: %s", pg->err);
    free(text);
}

static void assert_value(const expo_page *pg, const char *name, const char *labels, const char *le,
                         double want)
{
    double got = expo_value(pg, name, labels, le);
    if (!(got == want))
        fail_msg("%s{%s%s%s} = %g, want %g", name, labels, le ? " le=" : "", le ? le : "", got,
                 want);
}

static void assert_near(const expo_page *pg, const char *name, const char *labels, double want)
{
    double got = expo_value(pg, name, labels, NULL);
    if (!(fabs(got - want) <= 1e-9 * fabs(want) + 1e-9))
        fail_msg("%s{%s} = %.9f, want %.9f", name, labels, got, want);
}

/* ---- the checker itself must reject what a scraper would reject ---- */

static void test_checker_rejects_invalid_pages(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "x_total 1\n",                                    /* no TYPE */
        "# TYPE x_total counter\nx_total{a=\"b} 1\n",     /* unterminated */
        "# TYPE x_total counter\nx_total{a=\"\\q\"} 1\n", /* bad escape */
        "# TYPE x_total counter\nx_total{a=\"b\"} one\n", /* bad value */
        "# TYPE x_total counter\nx_total 1\nx_total 2\n", /* duplicate */
        "# TYPE x counter\nx 1\n",                        /* counter without _total */
        "# TYPE x_total counter\nx_total -1\n",           /* negative counter */
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n", /* no +Inf */
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n",
        "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n"
        "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", /* le not ascending */
        "# TYPE g gauge\ng{a=\"\xff\"} 1\n",             /* invalid UTF-8 */
        "# TYPE g gauge\ng 1",                           /* no final newline */
        "# TYPE g gauge\ng 1\n# TYPE g gauge\n",         /* TYPE twice */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expo_page pg;
        if (expo_parse(&pg, bad[i])) fail_msg("checker accepted bad page %zu: %s", i, bad[i]);
        expo_free(&pg);
    }
    expo_page pg;
    const char *good = "# HELP h a histogram\n# TYPE h histogram\n"
                       "h_bucket{a=\"x\\\"y\\\\z\\n\",le=\"0.5\"} "
                       "1\nh_bucket{a=\"x\\\"y\\\\z\\n\",le=\"+Inf\"} 2\n"
                       "h_sum{a=\"x\\\"y\\\\z\\n\"} 1.5\nh_count{a=\"x\\\"y\\\\z\\n\"} 2\n";
    assert_true(expo_parse(&pg, good));
    expo_free(&pg);
}

/* ---- concurrent recording on per-worker shards sums exactly ---- */

#define CONC_THREADS 8
#define CONC_ITERS 20000

static atomic_int conc_done;
static char conc_err[600]; /* set by the scraper thread: cmocka asserts only on the main thread */

static void *conc_worker(void *arg)
{
    obs_shard *s = arg;
    static const char *const models[] = {"m0", "m1", "m2"};
    for (int i = 0; i < CONC_ITERS; i++) {
        obs_inflight_add(s, 1);
        obs_request r = {
            .gateway = "conc",
            .route = "default",
            .model = models[i % 3],
            .status = (i % 4 == 3) ? 502 : 200,
            .duration_us = 1000,
            .upstream_us = 800,
            .prompt_tokens = 3,
            .completion_tokens = 5,
            .cost_usd = 0.25,
        };
        obs_record_request(s, &r);
        if (i % 4 == 3) obs_upstream_error(s, models[i % 3], "http_5xx");
        obs_inflight_add(s, -1);
    }
    return NULL;
}

static void *conc_scraper(void *arg)
{
    (void)arg;
    double prev = 0;
    while (!atomic_load(&conc_done) && !conc_err[0]) {
        expo_page pg;
        char *text = render();
        if (!expo_parse(&pg, text)) {
            snprintf(conc_err, sizeof conc_err, "invalid exposition: %s", pg.err);
        } else {
            /* counters only grow while being recorded */
            double v =
                expo_value(&pg, "ctxgate_requests_total",
                           "gateway=\"conc\",route=\"default\",model=\"m0\",status=\"200\"", NULL);
            if (isnan(v)) v = 0;
            if (v < prev || v > CONC_THREADS * CONC_ITERS)
                snprintf(conc_err, sizeof conc_err, "counter went from %g to %g", prev, v);
            prev = v;
        }
        expo_free(&pg);
        free(text);
    }
    return NULL;
}

static void test_concurrent_counters_sum_exactly(void **state)
{
    (void)state;
    pthread_t th[CONC_THREADS], sc;
    atomic_store(&conc_done, 0);
    assert_int_equal(pthread_create(&sc, NULL, conc_scraper, NULL), 0);
    for (int t = 0; t < CONC_THREADS; t++)
        assert_int_equal(pthread_create(&th[t], NULL, conc_worker, obs_shard_new()), 0);
    for (int t = 0; t < CONC_THREADS; t++)
        pthread_join(th[t], NULL);
    atomic_store(&conc_done, 1);
    pthread_join(sc, NULL);
    if (conc_err[0]) fail_msg("scraper: %s", conc_err);

    expo_page pg;
    scrape(&pg);
    /* per model: iterations i with i%3 == k; of those, a quarter (i%4 == 3) are 502 */
    for (int k = 0; k < 3; k++) {
        int n = 0, n502 = 0;
        for (int i = 0; i < CONC_ITERS; i++)
            if (i % 3 == k) {
                n++;
                if (i % 4 == 3) n502++;
            }
        n *= CONC_THREADS;
        n502 *= CONC_THREADS;
        char l[256], l200[300], l502[300], le[300];
        snprintf(l, sizeof l, "gateway=\"conc\",route=\"default\",model=\"m%d\"", k);
        snprintf(l200, sizeof l200, "%s,status=\"200\"", l);
        snprintf(l502, sizeof l502, "%s,status=\"502\"", l);
        assert_value(&pg, "ctxgate_requests_total", l200, NULL, n - n502);
        assert_value(&pg, "ctxgate_requests_total", l502, NULL, n502);
        assert_value(&pg, "ctxgate_request_duration_seconds_count", l, NULL, n);
        assert_near(&pg, "ctxgate_request_duration_seconds_sum", l, n * 0.001);
        assert_value(&pg, "ctxgate_upstream_duration_seconds_count", l, NULL, n);
        assert_value(&pg, "ctxgate_prompt_tokens_total", l, NULL, 3.0 * n);
        assert_value(&pg, "ctxgate_completion_tokens_total", l, NULL, 5.0 * n);
        assert_value(&pg, "ctxgate_cost_usd_total", l, NULL, 0.25 * n);
        snprintf(le, sizeof le, "target=\"m%d\",kind=\"http_5xx\"", k);
        assert_value(&pg, "ctxgate_upstream_errors_total", le, NULL, n502);
        /* never streamed: no time-to-first-token series */
        assert_true(isnan(expo_value(&pg, "ctxgate_time_to_first_token_seconds_count", l, NULL)));
    }
    assert_int_equal(expo_count(&pg, "ctxgate_requests_total", "gateway=\"conc\""), 6);
    expo_free(&pg);
}

/* ---- histogram placement ---- */

static void test_histogram_buckets_cumulative(void **state)
{
    (void)state;
    obs_shard *s = obs_shard_new();
    /* bounds are inclusive (le): 5000 us is in le="0.005", 5001 us is not */
    static const uint64_t durations[] = {0,       5000,      5001,      10000,     999999,
                                         1000000, 299999999, 300000000, 300000001, 4000000000u};
    uint64_t sum = 0;
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        obs_request r = {.gateway = "hist",
                         .route = "r",
                         .model = "m",
                         .status = 200,
                         .duration_us = durations[i],
                         .ttft_us = i < 3 ? 10000 + i : 0}; /* 10000, 10001, 10002 */
        obs_record_request(s, &r);
        sum += durations[i];
    }
    expo_page pg;
    scrape(&pg);
    const char *l = "gateway=\"hist\",route=\"r\",model=\"m\"";
    const char *name = "ctxgate_request_duration_seconds_bucket";
    struct {
        const char *le;
        double want;
    } want[] = {{"0.005", 2}, {"0.01", 4}, {"0.025", 4}, {"0.05", 4}, {"0.1", 4}, {"0.25", 4},
                {"0.5", 4},   {"1", 6},    {"2.5", 6},   {"5", 6},    {"10", 6},  {"30", 6},
                {"60", 6},    {"120", 6},  {"300", 8},   {"+Inf", 10}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_value(&pg, name, l, want[i].le, want[i].want);
    assert_int_equal(expo_count(&pg, name, l), 16);
    assert_value(&pg, "ctxgate_request_duration_seconds_count", l, NULL, 10);
    assert_near(&pg, "ctxgate_request_duration_seconds_sum", l, (double)sum / 1e6);
    /* ttft has its own layout: 0.01 holds exactly 10000 us */
    assert_value(&pg, "ctxgate_time_to_first_token_seconds_bucket", l, "0.01", 1);
    assert_value(&pg, "ctxgate_time_to_first_token_seconds_bucket", l, "0.025", 3);
    assert_value(&pg, "ctxgate_time_to_first_token_seconds_bucket", l, "60", 3);
    assert_value(&pg, "ctxgate_time_to_first_token_seconds_bucket", l, "+Inf", 3);
    assert_near(&pg, "ctxgate_time_to_first_token_seconds_sum", l, 0.030003);
    assert_int_equal(expo_count(&pg, "ctxgate_time_to_first_token_seconds_bucket", l), 13);
    /* no upstream call recorded: no upstream histogram for this label set */
    assert_true(isnan(expo_value(&pg, "ctxgate_upstream_duration_seconds_count", l, NULL)));
    expo_free(&pg);
}

/* ---- escaping ---- */

static void test_label_escaping(void **state)
{
    (void)state;
    obs_shard *s = obs_shard_new();
    obs_request r = {.gateway = "esc",
                     .route = "a\"b\\c\nd",
                     .model = "caf\xc3\xa9-\xff\xfe",
                     .status = 404,
                     .duration_us = 1};
    obs_record_request(s, &r);
    obs_upstream_error(s, "t\"1", "connect\\fail");
    char *text = render();
    assert_non_null(strstr(text,
                           "ctxgate_requests_total{gateway=\"esc\",route=\"a\\\"b\\\\c\\nd\","
                           "model=\"caf\xc3\xa9-\xef\xbf\xbd\xef\xbf\xbd\",status=\"404\"} 1\n"));
    assert_non_null(strstr(
        text, "ctxgate_upstream_errors_total{target=\"t\\\"1\",kind=\"connect\\\\fail\"} 1\n"));
    expo_page pg;
    if (!expo_parse(&pg, text)) fail_msg("invalid exposition: %s", pg.err);
    expo_free(&pg);
    free(text);
}

/* ---- new series while scraping ---- */

#define NEW_SERIES 1500
static atomic_int new_done;

static void *new_series_writer(void *arg)
{
    obs_shard *s = arg;
    for (int i = 0; i < NEW_SERIES; i++) {
        char route[32];
        snprintf(route, sizeof route, "r%04d", i);
        obs_request r = {.gateway = "grow",
                         .route = route,
                         .model = "m",
                         .status = 200 + i % 3,
                         .duration_us = 100,
                         .upstream_us = 50,
                         .ttft_us = 20};
        obs_record_request(s, &r);
    }
    atomic_store(&new_done, 1);
    return NULL;
}

static void test_new_series_under_concurrent_scrape(void **state)
{
    (void)state;
    obs_shard *s = obs_shard_new();
    pthread_t w;
    atomic_store(&new_done, 0);
    assert_int_equal(pthread_create(&w, NULL, new_series_writer, s), 0);
    size_t prev = 0;
    int scrapes = 0;
    /* at most 25 scrapes while the writer runs: enough to overlap with it, and bounded on a slow
     * (sanitized, loaded) machine */
    while ((!atomic_load(&new_done) && scrapes < 25) || scrapes == 0) {
        expo_page pg;
        scrape(&pg);
        size_t n = expo_count(&pg, "ctxgate_requests_total", "gateway=\"grow\"");
        assert_true(n >= prev); /* series never vanish */
        /* every series a scrape shows is complete: its histograms agree with its counter */
        assert_int_equal(
            expo_count(&pg, "ctxgate_request_duration_seconds_count", "gateway=\"grow\""), n);
        prev = n;
        scrapes++;
        expo_free(&pg);
        usleep(1000); /* let the writer run between scrapes, as a real scraper would */
    }
    pthread_join(w, NULL);
    expo_page pg;
    scrape(&pg);
    assert_int_equal(expo_count(&pg, "ctxgate_requests_total", "gateway=\"grow\""), NEW_SERIES);
    assert_value(&pg, "ctxgate_requests_total",
                 "gateway=\"grow\",route=\"r1499\",model=\"m\",status=\"202\"", NULL, 1);
    assert_value(&pg, "ctxgate_time_to_first_token_seconds_count",
                 "gateway=\"grow\",route=\"r0007\",model=\"m\"", NULL, 1);
    expo_free(&pg);
}

/* ---- the shared (NULL) shard is safe from several threads ---- */

static void *null_shard_worker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 10000; i++) {
        obs_request r = {.gateway = "shared",
                         .route = "r",
                         .model = "m",
                         .status = 200,
                         .duration_us = 10,
                         .prompt_tokens = 1};
        obs_record_request(NULL, &r);
        obs_upstream_error(NULL, "shared-target", "timeout");
    }
    return NULL;
}

static void test_null_shard_from_many_threads(void **state)
{
    (void)state;
    pthread_t th[4];
    for (int t = 0; t < 4; t++)
        assert_int_equal(pthread_create(&th[t], NULL, null_shard_worker, NULL), 0);
    for (int t = 0; t < 4; t++)
        pthread_join(th[t], NULL);
    expo_page pg;
    scrape(&pg);
    assert_value(&pg, "ctxgate_requests_total",
                 "gateway=\"shared\",route=\"r\",model=\"m\",status=\"200\"", NULL, 40000);
    assert_value(&pg, "ctxgate_prompt_tokens_total", "gateway=\"shared\",route=\"r\",model=\"m\"",
                 NULL, 40000);
    assert_value(&pg, "ctxgate_upstream_errors_total", "target=\"shared-target\",kind=\"timeout\"",
                 NULL, 40000);
    expo_free(&pg);
}

/* ---- gauges, process-wide counters, process metrics ---- */

static void test_gauges_reloads_process_metrics(void **state)
{
    (void)state;
    expo_page pg;
    scrape(&pg);
    double in0 = expo_value(&pg, "ctxgate_requests_in_flight", "", NULL);
    double ok0 = expo_value(&pg, "ctxgate_config_reloads_total", "result=\"success\"", NULL);
    double bad0 = expo_value(&pg, "ctxgate_config_reloads_total", "result=\"failure\"", NULL);
    expo_free(&pg);

    obs_shard *a = obs_shard_new(), *b = obs_shard_new();
    obs_inflight_add(a, 3);
    obs_inflight_add(b, 2);
    obs_inflight_add(a, -1);
    obs_reload_record(1);
    obs_reload_record(1);
    obs_reload_record(0);
    obs_set_build_info("9.8.7-test");

    scrape(&pg);
    assert_value(&pg, "ctxgate_requests_in_flight", "", NULL, in0 + 4);
    assert_value(&pg, "ctxgate_config_reloads_total", "result=\"success\"", NULL, ok0 + 2);
    assert_value(&pg, "ctxgate_config_reloads_total", "result=\"failure\"", NULL, bad0 + 1);
    assert_value(&pg, "ctxgate_build_info", "version=\"9.8.7-test\"", NULL, 1);
    assert_true(expo_value(&pg, "process_resident_memory_bytes", "", NULL) > 0);
    assert_true(expo_value(&pg, "process_cpu_seconds_total", "", NULL) >= 0);
    assert_true(expo_value(&pg, "process_start_time_seconds", "", NULL) > 1.5e9);
    assert_true(expo_value(&pg, "process_open_fds", "", NULL) >= 3);
    expo_free(&pg);
    obs_inflight_add(a, -2);
    obs_inflight_add(b, -2);
}

/* ---- context-store families ---- */

static void test_context_store_metrics(void **state)
{
    (void)state;
    obs_shard *a = obs_shard_new(), *b = obs_shard_new();
    obs_ctx_op(a, "conv", "redis", "get", 40, 1);            /* <= 50 us bucket */
    obs_ctx_op(b, "conv", "redis", "get", 700, 1);           /* <= 1 ms */
    obs_ctx_op(a, "conv", "redis", "append", 3000, 0);       /* failed */
    obs_ctx_op(NULL, "conv", "redis", "append", 2000000, 1); /* beyond the last bound: +Inf */
    obs_ctx_store_figures("conv", "redis", 7, 2, 1);
    obs_ctx_store_figures("conv", "redis", -1, 1, 0); /* unknown active keeps the last value */
    obs_ctx_store_figures("other", "memory", -1, 0, 0);
    expo_page pg;
    scrape(&pg);
    const char *get = "mcp=\"conv\",backend=\"redis\",op=\"get\"";
    const char *app = "mcp=\"conv\",backend=\"redis\",op=\"append\"";
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_bucket", get, "0.00005", 1);
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_bucket", get, "0.0005", 1);
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_bucket", get, "0.001", 2);
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_count", get, NULL, 2);
    assert_near(&pg, "ctxgate_context_store_op_duration_seconds_sum", get, 0.00074);
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_bucket", app, "1", 1);
    assert_value(&pg, "ctxgate_context_store_op_duration_seconds_bucket", app, "+Inf", 2);
    assert_value(&pg, "ctxgate_context_store_errors_total", get, NULL, 0);
    assert_value(&pg, "ctxgate_context_store_errors_total", app, NULL, 1);
    const char *st = "mcp=\"conv\",backend=\"redis\"";
    assert_value(&pg, "ctxgate_context_active_conversations", st, NULL, 7);
    assert_value(&pg, "ctxgate_context_evictions_total", st, NULL, 3);
    assert_value(&pg, "ctxgate_context_expirations_total", st, NULL, 1);
    /* a store whose size was never reported shows no gauge, but its counters */
    assert_true(isnan(expo_value(&pg, "ctxgate_context_active_conversations",
                                 "mcp=\"other\",backend=\"memory\"", NULL)));
    assert_value(&pg, "ctxgate_context_evictions_total", "mcp=\"other\",backend=\"memory\"", NULL,
                 0);
    expo_free(&pg);
}

/* ---- a runaway label set is capped ---- */

static void test_series_cap_overflows(void **state)
{
    (void)state;
    obs_shard *s = obs_shard_new();
    for (int i = 0; i < 4096 + 10; i++) {
        char model[32];
        snprintf(model, sizeof model, "cap-%d", i);
        obs_request r = {
            .gateway = "cap", .route = "r", .model = model, .status = 200, .duration_us = 1};
        obs_record_request(s, &r);
    }
    char *text = render();
    assert_non_null(strstr(text,
                           "ctxgate_requests_total{gateway=\"cap\",route=\"r\",model=\"cap-0\","
                           "status=\"200\"} 1\n"));
    assert_null(strstr(text, "model=\"cap-4100\""));
    assert_non_null(strstr(text, "ctxgate_requests_total{gateway=\"_overflow\",route=\"_overflow\","
                                 "model=\"_overflow\",status=\"200\"} 10\n"));
    expo_page pg;
    if (!expo_parse(&pg, text)) fail_msg("invalid exposition: %s", pg.err);
    expo_free(&pg);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_checker_rejects_invalid_pages),
        cmocka_unit_test(test_concurrent_counters_sum_exactly),
        cmocka_unit_test(test_histogram_buckets_cumulative),
        cmocka_unit_test(test_label_escaping),
        cmocka_unit_test(test_new_series_under_concurrent_scrape),
        cmocka_unit_test(test_null_shard_from_many_threads),
        cmocka_unit_test(test_gauges_reloads_process_metrics),
        cmocka_unit_test(test_series_cap_overflows),
        cmocka_unit_test(test_context_store_metrics),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
