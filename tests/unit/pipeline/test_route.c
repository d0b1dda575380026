/* test_route.c — route matching by path prefix and filters, model resolution, RoundRobin and
 * Weighted distribution, per-key model permissions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <string.h>

#include "pipeline/route.h"

static cfg_target targets[3];
static cfg_backend be_ab[2], be_c[1];
static cfg_route routes[3];
static cfg_gateway gw;
static const char *alias_a[] = {"gpt-4o"};
static const char *support_models[] = {"support"};
static cfg_header_match billing = {"x-team", "billing"};

static int setup(void **state)
{
    memset(targets, 0, sizeof targets);
    targets[0] = (cfg_target){.name = "a", .aliases = alias_a, .n_aliases = 1, .model_name = "A"};
    targets[1] = (cfg_target){.name = "b", .model_name = "B"};
    targets[2] = (cfg_target){.name = "c", .model_name = "C"};
    be_ab[0] = (cfg_backend){&targets[0], 3};
    be_ab[1] = (cfg_backend){&targets[1], 1};
    be_c[0] = (cfg_backend){&targets[2], 1};
    /* /v1 with filters: only requests with x-team: billing and model "support" */
    routes[0] = (cfg_route){.name = "support",
                            .path_prefix = "/v1",
                            .path_prefix_len = 3,
                            .match_models = support_models,
                            .n_match_models = 1,
                            .match_headers = &billing,
                            .n_match_headers = 1,
                            .backends = be_ab,
                            .n_backends = 2,
                            .strategy = STRATEGY_WEIGHTED,
                            .index = 0};
    /* /v1 catch-all */
    routes[1] = (cfg_route){.name = "default",
                            .path_prefix = "/v1",
                            .path_prefix_len = 3,
                            .backends = be_ab,
                            .n_backends = 2,
                            .strategy = STRATEGY_ROUND_ROBIN,
                            .index = 1};
    routes[2] = (cfg_route){.name = "deep",
                            .path_prefix = "/v1/llm/support",
                            .path_prefix_len = strlen("/v1/llm/support"),
                            .backends = be_c,
                            .n_backends = 1,
                            .index = 2};
    gw = (cfg_gateway){
        .name = "g", .targets = targets, .n_targets = 3, .routes = routes, .n_routes = 3};
    return 0;
}

static http_header hdr_billing[] = {{STR_LIT("x-team"), STR_LIT("billing")}};

static void prefix_longest_wins(void **state)
{
    size_t len;
    str suffix;
    assert_true(
        route_prefix_match(&gw, STR_LIT("/v1/llm/support/chat/completions"), &len, &suffix));
    assert_int_equal(len, strlen("/v1/llm/support"));
    assert_true(str_eq_c(suffix, "/chat/completions"));
    assert_true(route_prefix_match(&gw, STR_LIT("/v1/chat/completions"), &len, &suffix));
    assert_int_equal(len, 3);
    assert_true(str_eq_c(suffix, "/chat/completions"));
}

static void prefix_respects_segment_boundary(void **state)
{
    size_t len;
    str suffix;
    /* "/v1x" must not match prefix "/v1" */
    assert_false(route_prefix_match(&gw, STR_LIT("/v1x/chat/completions"), &len, &suffix));
    assert_false(route_prefix_match(&gw, STR_LIT("/other"), &len, &suffix));
}

static void filters_select_route(void **state)
{
    http_request with = {.headers = hdr_billing, .n_headers = 1};
    http_request without = {0};
    str path = STR_LIT("/v1/chat/completions");
    assert_ptr_equal(route_select(&gw, path, 3, &with, "support"), &routes[0]);
    /* header present but another model: the filtered route declines, the catch-all takes it */
    assert_ptr_equal(route_select(&gw, path, 3, &with, "a"), &routes[1]);
    assert_ptr_equal(route_select(&gw, path, 3, &without, "support"), &routes[1]);
}

static void resolve_by_name_and_alias(void **state)
{
    _Atomic unsigned long rr = 0;
    uint64_t rng = 42;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    assert_ptr_equal(route_resolve(&routes[1], "a", NULL, &ctx, &forbidden), &targets[0]);
    assert_ptr_equal(route_resolve(&routes[1], "gpt-4o", NULL, &ctx, &forbidden), &targets[0]);
    assert_ptr_equal(route_resolve(&routes[1], "b", NULL, &ctx, &forbidden), &targets[1]);
    assert_null(route_resolve(&routes[1], "c", NULL, &ctx, &forbidden)); /* not a backend */
    assert_false(forbidden);
    assert_null(route_resolve(&routes[1], "nope", NULL, &ctx, &forbidden));
}

static void round_robin_takes_turns(void **state)
{
    static const char *virt_rr[] = {"pool"};
    cfg_route r = routes[1];
    r.match_models = virt_rr;
    r.n_match_models = 1;
    _Atomic unsigned long rr = 0;
    uint64_t rng = 1;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    int counts[2] = {0, 0};
    for (int i = 0; i < 10; i++) {
        const cfg_target *t = route_resolve(&r, "pool", NULL, &ctx, &forbidden);
        assert_non_null(t);
        counts[t == &targets[0] ? 0 : 1]++;
        /* strictly alternating */
        assert_ptr_equal(t, i % 2 == 0 ? &targets[0] : &targets[1]);
    }
    assert_int_equal(counts[0], 5);
    assert_int_equal(counts[1], 5);
}

static void weighted_follows_weights(void **state)
{
    _Atomic unsigned long rr = 0;
    uint64_t rng = 0x1234567;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    int a = 0, n = 4000;
    for (int i = 0; i < n; i++)
        if (route_resolve(&routes[0], "support", NULL, &ctx, &forbidden) == &targets[0]) a++;
    /* weights 3:1 → 75 %; 4000 draws keep a fair generator within ±4 % */
    assert_in_range(a, (int)(n * 0.71), (int)(n * 0.79));
}

static void weighted_zero_weight_never_chosen(void **state)
{
    cfg_backend be[2] = {{&targets[0], 0}, {&targets[1], 5}};
    cfg_route r = routes[0];
    r.backends = be;
    _Atomic unsigned long rr = 0;
    uint64_t rng = 99;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    for (int i = 0; i < 200; i++)
        assert_ptr_equal(route_resolve(&r, "support", NULL, &ctx, &forbidden), &targets[1]);
}

static void key_models_restrict(void **state)
{
    static const char *only_b[] = {"b"};
    cfg_api_key key = {.name = "k", .models = only_b, .n_models = 1};
    _Atomic unsigned long rr = 0;
    uint64_t rng = 7;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    assert_null(route_resolve(&routes[1], "a", &key, &ctx, &forbidden));
    assert_true(forbidden);
    assert_ptr_equal(route_resolve(&routes[1], "b", &key, &ctx, &forbidden), &targets[1]);
    /* virtual model: balancing only over permitted backends */
    for (int i = 0; i < 20; i++)
        assert_ptr_equal(route_resolve(&routes[0], "support", &key, &ctx, &forbidden), &targets[1]);
    /* alias in the key's list permits the target */
    static const char *by_alias[] = {"gpt-4o"};
    cfg_api_key k2 = {.name = "k2", .models = by_alias, .n_models = 1};
    assert_true(route_key_allows(&k2, &targets[0]));
    assert_false(route_key_allows(&k2, &targets[1]));
    assert_true(route_key_allows(NULL, &targets[1]));
}

static void collect(const char *id, void *ud)
{
    buf *b = ud;
    if (b->len) buf_puts(b, ", ");
    buf_puts(b, id);
}

static buf listed_buf = BUF_INIT;

/* the ids listed on /v1 for r and key, comma-separated; NULL when no route takes r */
static const char *listed(const cfg_gateway *g, const http_request *r, const cfg_api_key *key)
{
    buf_free(&listed_buf);
    listed_buf = (buf)BUF_INIT;
    if (!route_list_models(g, STR_LIT("/v1/models"), 3, r, key, collect, &listed_buf)) return NULL;
    return listed_buf.data ? listed_buf.data : "";
}

static void models_listed_are_the_reachable_ones(void **state)
{
    http_request with = {.headers = hdr_billing, .n_headers = 1};
    http_request without = {0};
    /* with the header: the filtered route's virtual model, then the catch-all's names */
    assert_string_equal(listed(&gw, &with, NULL), "support, a, gpt-4o, b");
    /* without it the filtered route is out of reach, and so is "support" */
    assert_string_equal(listed(&gw, &without, NULL), "a, gpt-4o, b");
    /* the key's models filter both the names and the virtual model's backends */
    static const char *only_b[] = {"b"};
    cfg_api_key key = {.name = "k", .models = only_b, .n_models = 1};
    assert_string_equal(listed(&gw, &with, &key), "support, b");
    static const char *only_c[] = {"c"};
    cfg_api_key kc = {.name = "kc", .models = only_c, .n_models = 1};
    assert_string_equal(listed(&gw, &with, &kc), "");

    /* a second catch-all on the same prefix is shadowed by the first: its names are not
     * listed, because chat requests for them reach the first route and get 404 */
    cfg_route two[2] = {routes[1], routes[1]};
    two[0].backends = be_ab;
    two[0].n_backends = 1; /* a */
    two[1].backends = be_ab + 1;
    two[1].n_backends = 1; /* b */
    cfg_gateway g2 = gw;
    g2.routes = two;
    g2.n_routes = 2;
    assert_string_equal(listed(&g2, &without, NULL), "a, gpt-4o");
    _Atomic unsigned long rr = 0;
    uint64_t rng = 1;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng, .r = &without};
    bool forbidden;
    const cfg_route *rb = route_select(&g2, STR_LIT("/v1/chat/completions"), 3, &without, "b");
    assert_ptr_equal(rb, &two[0]);
    assert_null(route_resolve(rb, "b", NULL, &ctx, &forbidden));

    /* only routes with the prefix count; none accepting the headers: false */
    cfg_route filtered = routes[0];
    cfg_gateway g3 = gw;
    g3.routes = &filtered;
    g3.n_routes = 1;
    assert_null(listed(&g3, &without, NULL));
    assert_string_equal(listed(&g3, &with, NULL), "support");
    /* Weighted with only weight-0 backends the key may use: not listed */
    cfg_backend zero[2] = {{&targets[0], 0}, {&targets[1], 1}};
    filtered.backends = zero;
    static const char *only_a[] = {"a"};
    cfg_api_key ka = {.name = "ka", .models = only_a, .n_models = 1};
    assert_string_equal(listed(&g3, &with, &ka), "");
    assert_int_equal(route_model_check(&filtered, "support", &ka, &with), ROUTE_MODEL_FORBIDDEN);
    assert_string_equal(listed(&g3, &with, NULL), "support");
    buf_free(&listed_buf);
}

static void backoff_is_equal_jitter_doubling_to_the_cap(void **state)
{
    uint64_t rng = 0x9e3779b97f4a7c15ull;
    struct {
        int base, n;
        uint64_t lo, hi;
    } cases[] = {
        {100, 1, 50, 100},      {100, 2, 100, 200},     {100, 3, 200, 400},
        {100, 10, 5000, 10000}, {100, 60, 5000, 10000}, {20000, 3, 10000, 20000},
        {1, 1, 0, 1},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        uint64_t min = UINT64_MAX, max = 0;
        for (int i = 0; i < 500; i++) {
            uint64_t w = route_backoff_ms(cases[k].base, cases[k].n, &rng);
            assert_in_range(w, cases[k].lo, cases[k].hi);
            if (w < min) min = w;
            if (w > max) max = w;
        }
        if (cases[k].hi - cases[k].lo >= 50)
            assert_true(max - min > (cases[k].hi - cases[k].lo) / 2);
    }
    assert_int_equal(route_backoff_ms(0, 1, &rng), 0);
    assert_int_equal(route_backoff_ms(0, 5, &rng), 0);
}

static void retry_after_seconds_and_dates(void **state)
{
    const int64_t t = 1445412480000; /* Wed, 21 Oct 2015 07:28:00 GMT */
    assert_int_equal(route_retry_after_ms("1", t), 1000);
    assert_int_equal(route_retry_after_ms(" 120 ", t), 120000);
    assert_int_equal(route_retry_after_ms("0", t), 0);
    assert_true(route_retry_after_ms("99999999999999999999999", t) > 86400000);
    assert_int_equal(route_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", t - 2500), 2500);
    assert_int_equal(route_retry_after_ms("Wednesday, 21-Oct-15 07:28:00 GMT", t - 4000), 4000);
    assert_int_equal(route_retry_after_ms("Wed Oct 21 07:28:00 2015", t - 1000), 1000);
    assert_int_equal(route_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", t + 5000), 0); /* past */
    assert_int_equal(route_retry_after_ms("1.5", t), -1);
    assert_int_equal(route_retry_after_ms("-1", t), -1);
    assert_int_equal(route_retry_after_ms("12abc", t), -1);
    assert_int_equal(route_retry_after_ms("soon", t), -1);
    assert_int_equal(route_retry_after_ms("", t), -1);
    assert_int_equal(route_retry_after_ms("  ", t), -1);
    assert_int_equal(route_retry_after_ms(NULL, t), -1);
}

static const char *virt[] = {"pool"};

static void header_based_maps_values(void **state)
{
    cfg_header_value vals[] = {{"premium", &targets[0]}, {"basic", &targets[1]}};
    cfg_route r = routes[1];
    r.match_models = virt;
    r.n_match_models = 1;
    r.strategy = STRATEGY_HEADER_BASED;
    r.header_name = "x-model-tier";
    r.header_values = vals;
    r.n_header_values = 2;
    http_header h_basic[] = {{STR_LIT("x-model-tier"), STR_LIT("basic")}};
    http_header h_other[] = {{STR_LIT("x-model-tier"), STR_LIT("gold")}};
    http_request req_basic = {.headers = h_basic, .n_headers = 1};
    http_request req_other = {.headers = h_other, .n_headers = 1};
    _Atomic unsigned long rr = 0;
    uint64_t rng = 3;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng, .r = &req_basic};
    bool forbidden;
    for (int i = 0; i < 5; i++)
        assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[1]);
    /* an unknown value falls back to taking turns */
    ctx.r = &req_other;
    const cfg_target *x = route_resolve(&r, "pool", NULL, &ctx, &forbidden);
    const cfg_target *y = route_resolve(&r, "pool", NULL, &ctx, &forbidden);
    assert_ptr_not_equal(x, y);
}

static void least_connections_prefers_idle(void **state)
{
    route_target_stats stats[3];
    memset(stats, 0, sizeof stats);
    targets[0].index = 0;
    targets[1].index = 1;
    cfg_route r = routes[1];
    r.match_models = virt;
    r.n_match_models = 1;
    r.strategy = STRATEGY_LEAST_CONNECTIONS;
    _Atomic unsigned long rr = 0;
    uint64_t rng = 3;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng, .stats = stats};
    bool forbidden;
    stats[0].in_flight = 5;
    stats[1].in_flight = 2;
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[1]);
    stats[1].in_flight = 9;
    assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[0]);
    /* equal load: both get turns */
    stats[0].in_flight = stats[1].in_flight = 1;
    const cfg_target *x = route_resolve(&r, "pool", NULL, &ctx, &forbidden);
    const cfg_target *y = route_resolve(&r, "pool", NULL, &ctx, &forbidden);
    assert_ptr_not_equal(x, y);
}

static void latency_based_prefers_fast_and_explores(void **state)
{
    route_target_stats stats[3];
    memset(stats, 0, sizeof stats);
    targets[0].index = 0;
    targets[1].index = 1;
    cfg_route r = routes[1];
    r.match_models = virt;
    r.n_match_models = 1;
    r.strategy = STRATEGY_LATENCY_BASED;
    _Atomic unsigned long rr = 0;
    uint64_t rng = 3;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng, .stats = stats};
    bool forbidden;
    route_stats_observe(&stats[0], 50000);
    /* b is unmeasured: explored first */
    assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[1]);
    route_stats_observe(&stats[1], 900000);
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[0]);
    /* the average moves: a turns slow */
    for (int i = 0; i < 60; i++)
        route_stats_observe(&stats[0], 5000000);
    assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[1]);
}

static void cost_based_prefers_cheapest(void **state)
{
    cfg_route r = routes[1];
    r.match_models = virt;
    r.n_match_models = 1;
    r.strategy = STRATEGY_COST_BASED;
    targets[0].has_pricing = true;
    targets[0].input_per_million = 2.5;
    targets[0].output_per_million = 10;
    targets[1].has_pricing = true;
    targets[1].input_per_million = 0.15;
    targets[1].output_per_million = 0.6;
    _Atomic unsigned long rr = 0;
    uint64_t rng = 3;
    route_pick_ctx ctx = {.rr = &rr, .rng = &rng};
    bool forbidden;
    for (int i = 0; i < 4; i++)
        assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[1]);
    targets[1].has_pricing = false; /* unpriced counts as most expensive */
    assert_ptr_equal(route_resolve(&r, "pool", NULL, &ctx, &forbidden), &targets[0]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(prefix_longest_wins, setup),
        cmocka_unit_test_setup(prefix_respects_segment_boundary, setup),
        cmocka_unit_test_setup(filters_select_route, setup),
        cmocka_unit_test_setup(resolve_by_name_and_alias, setup),
        cmocka_unit_test_setup(round_robin_takes_turns, setup),
        cmocka_unit_test_setup(weighted_follows_weights, setup),
        cmocka_unit_test_setup(weighted_zero_weight_never_chosen, setup),
        cmocka_unit_test_setup(key_models_restrict, setup),
        cmocka_unit_test_setup(models_listed_are_the_reachable_ones, setup),
        cmocka_unit_test_setup(backoff_is_equal_jitter_doubling_to_the_cap, setup),
        cmocka_unit_test_setup(retry_after_seconds_and_dates, setup),
        cmocka_unit_test_setup(header_based_maps_values, setup),
        cmocka_unit_test_setup(least_connections_prefers_idle, setup),
        cmocka_unit_test_setup(latency_based_prefers_fast_and_explores, setup),
        cmocka_unit_test_setup(cost_based_prefers_cheapest, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
