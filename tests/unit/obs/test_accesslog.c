/* test_accesslog.c — obs/accesslog: JSON lines parse with jansson and carry the right fields,
 * hostile strings (quotes, backslashes, control bytes, invalid UTF-8) still give valid JSON,
 * null fields are left out, logfmt lines stay on one line, and concurrent writers through a pipe
 * never interleave lines (short lines and long ones with bodies). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/accesslog.h"

static accesslog_entry full_entry(void)
{
    accesslog_entry e = {
        .request_id = "req-1",
        .remote_addr = "127.0.0.1",
        .method = "POST",
        .path = "/v1/chat/completions",
        .status = 200,
        .duration_us = 12345,
        .upstream_us = 10001,
        .ttft_us = 500,
        .gateway = "gw",
        .route = "default",
        .model = "gpt-4o-mini",
        .target = "openai-main",
        .user = "alice",
        .app = "web",
        .tenant = "acme",
        .prompt_tokens = 42,
        .completion_tokens = 19,
        .usage_source = "counted",
        .attempts = 2,
        .stream = true,
    };
    return e;
}

static json_t *format_and_parse(const accesslog_entry *e)
{
    buf b = BUF_INIT;
    accesslog_format(&b, e, true);
    assert_true(b.len > 2);
    assert_int_equal(b.data[b.len - 1], '\n');
    assert_null(memchr(b.data, '\n', b.len - 1)); /* exactly one line */
    json_error_t err;
    json_t *o = json_loadb(b.data, b.len, 0, &err);
    if (!o) fail_msg("not JSON (%s): %s", err.text, b.data);
    buf_free(&b);
    assert_true(json_is_object(o));
    return o;
}

static void test_json_fields(void **state)
{
    (void)state;
    accesslog_entry e = full_entry();
    json_t *o = format_and_parse(&e);
    const char *ts = json_string_value(json_object_get(o, "ts"));
    assert_non_null(ts);
    /* RFC 3339 UTC with milliseconds: 2024-01-02T03:04:05.678Z */
    assert_int_equal(strlen(ts), 24);
    assert_int_equal(ts[10], 'T');
    assert_int_equal(ts[19], '.');
    assert_int_equal(ts[23], 'Z');
    assert_string_equal(json_string_value(json_object_get(o, "request_id")), "req-1");
    assert_string_equal(json_string_value(json_object_get(o, "remote_addr")), "127.0.0.1");
    assert_string_equal(json_string_value(json_object_get(o, "method")), "POST");
    assert_string_equal(json_string_value(json_object_get(o, "path")), "/v1/chat/completions");
    assert_int_equal(json_integer_value(json_object_get(o, "status")), 200);
    assert_true(json_is_real(json_object_get(o, "duration_ms")));
    assert_true(json_real_value(json_object_get(o, "duration_ms")) == 12.345);
    assert_true(json_real_value(json_object_get(o, "upstream_ms")) == 10.001);
    assert_true(json_real_value(json_object_get(o, "ttft_ms")) == 0.5);
    assert_string_equal(json_string_value(json_object_get(o, "gateway")), "gw");
    assert_string_equal(json_string_value(json_object_get(o, "route")), "default");
    assert_string_equal(json_string_value(json_object_get(o, "model")), "gpt-4o-mini");
    assert_string_equal(json_string_value(json_object_get(o, "target")), "openai-main");
    assert_string_equal(json_string_value(json_object_get(o, "user")), "alice");
    assert_string_equal(json_string_value(json_object_get(o, "app")), "web");
    assert_string_equal(json_string_value(json_object_get(o, "tenant")), "acme");
    assert_int_equal(json_integer_value(json_object_get(o, "prompt_tokens")), 42);
    assert_int_equal(json_integer_value(json_object_get(o, "completion_tokens")), 19);
    assert_string_equal(json_string_value(json_object_get(o, "usage_source")), "counted");
    assert_int_equal(json_integer_value(json_object_get(o, "attempts")), 2);
    assert_true(json_is_true(json_object_get(o, "stream")));
    assert_null(json_object_get(o, "error"));
    assert_null(json_object_get(o, "request_body"));
    assert_null(json_object_get(o, "response_body"));
    json_decref(o);
}

static void test_json_omits_null_fields(void **state)
{
    (void)state;
    accesslog_entry e = {.method = "GET",
                         .path = "/nope",
                         .status = 404,
                         .duration_us = 7,
                         .error = "no route for /nope"};
    json_t *o = format_and_parse(&e);
    static const char *const absent[] = {
        "request_id", "remote_addr",  "upstream_ms",   "ttft_ms",     "gateway",
        "route",      "model",        "target",        "user",        "app",
        "tenant",     "request_body", "response_body", "usage_source"};
    for (size_t i = 0; i < sizeof absent / sizeof absent[0]; i++)
        if (json_object_get(o, absent[i])) fail_msg("field %s should be omitted", absent[i]);
    assert_true(json_real_value(json_object_get(o, "duration_ms")) == 0.007);
    assert_string_equal(json_string_value(json_object_get(o, "error")), "no route for /nope");
    assert_true(json_is_false(json_object_get(o, "stream")));
    json_decref(o);
}

static void test_json_escapes_hostile_strings(void **state)
{
    (void)state;
    struct {
        const char *in, *want; /* want: the decoded string */
    } cases[] = {
        {"a\"b\\c", "a\"b\\c"},
        {"line1\nline2\r\t\x01\x1f\x7f", "line1\nline2\r\t\x01\x1f\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"bad\xff", "bad\xef\xbf\xbd"},
        {"overlong\xc0\xaf", "overlong\xef\xbf\xbd\xef\xbf\xbd"},
        {"cut\xe2\x82", "cut\xef\xbf\xbd\xef\xbf\xbd"},
        {"surrogate\xed\xa0\x80", "surrogate\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"toobig\xf4\x90\x80\x80", "toobig\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"},
        {"</script>\"}{\"injected\":1", "</script>\"}{\"injected\":1"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        accesslog_entry e = full_entry();
        e.path = cases[i].in;
        e.error = cases[i].in;
        e.req_body = cases[i].in;
        json_t *o = format_and_parse(&e);
        assert_string_equal(json_string_value(json_object_get(o, "path")), cases[i].want);
        assert_string_equal(json_string_value(json_object_get(o, "error")), cases[i].want);
        assert_string_equal(json_string_value(json_object_get(o, "request_body")), cases[i].want);
        assert_null(json_object_get(o, "injected"));
        json_decref(o);
    }
}

static void test_json_valid_for_any_bytes(void **state)
{
    (void)state;
    /* every single byte, then pseudo-random byte strings */
    char s[2] = {0, 0};
    for (int c = 1; c < 256; c++) {
        s[0] = (char)c;
        accesslog_entry e = full_entry();
        e.user = s;
        json_decref(format_and_parse(&e));
    }
    unsigned long long x = 88172645463325252ull;
    char r[64];
    for (int k = 0; k < 5000; k++) {
        size_t n = 1 + k % 63;
        for (size_t i = 0; i < n; i++) {
            x ^= x << 13, x ^= x >> 7, x ^= x << 17;
            r[i] = (char)((x & 0xff) ? (x & 0xff) : 1);
        }
        r[n] = 0;
        accesslog_entry e = full_entry();
        e.path = r;
        e.resp_body = r;
        json_decref(format_and_parse(&e));
    }
}

static void test_text_format_one_line(void **state)
{
    (void)state;
    accesslog_entry e = full_entry();
    e.error = "upstream 'x' said \"no\"\nbye";
    e.user = "";
    buf b = BUF_INIT;
    accesslog_format(&b, &e, false);
    assert_int_equal(b.data[b.len - 1], '\n');
    assert_null(memchr(b.data, '\n', b.len - 1));
    assert_true(strncmp(b.data, "ts=", 3) == 0);
    assert_non_null(strstr(b.data, " status=200 duration_ms=12.345 upstream_ms=10.001"));
    assert_non_null(strstr(b.data, " method=POST path=/v1/chat/completions"));
    assert_non_null(strstr(b.data, " user=\"\" "));
    assert_non_null(strstr(b.data, " error=\"upstream 'x' said \\\"no\\\"\\nbye\""));
    assert_non_null(strstr(b.data, " stream=true"));
    buf_free(&b);
}

/* ---- concurrent writers through a pipe ---- */

#define WR_THREADS 6
#define WR_LINES 400

static char long_body[3 * 4096]; /* makes a line longer than PIPE_BUF */

static void *writer(void *arg)
{
    long t = (long)arg;
    char rid[32];
    for (int i = 0; i < WR_LINES; i++) {
        snprintf(rid, sizeof rid, "t%ld-%d", t, i);
        accesslog_entry e = full_entry();
        e.request_id = rid;
        if (i % 10 == 0) e.resp_body = long_body;
        accesslog_write(&e, true);
    }
    return NULL;
}

typedef struct reader_result {
    int fd;
    int lines, bad;
    char first_bad[200];
} reader_result;

static void check_line(reader_result *rr, const char *line, size_t n)
{
    json_error_t err;
    json_t *o = json_loadb(line, n, 0, &err);
    if (!o || !json_is_string(json_object_get(o, "request_id"))) {
        if (!rr->bad) snprintf(rr->first_bad, sizeof rr->first_bad, "%.*s", (int)n, line);
        rr->bad++;
    }
    json_decref(o);
    rr->lines++;
}

static void *reader(void *arg)
{
    reader_result *rr = arg;
    buf acc = BUF_INIT;
    char chunk[8192];
    ssize_t n;
    while ((n = read(rr->fd, chunk, sizeof chunk)) > 0) {
        buf_append(&acc, chunk, (size_t)n);
        char *nl;
        while ((nl = memchr(acc.data, '\n', acc.len)) != NULL) {
            check_line(rr, acc.data, (size_t)(nl - acc.data));
            buf_consume(&acc, (size_t)(nl - acc.data) + 1);
        }
    }
    if (acc.len) check_line(rr, acc.data, acc.len);
    buf_free(&acc);
    return NULL;
}

static void test_concurrent_writes_never_interleave(void **state)
{
    (void)state;
    memset(long_body, 'x', sizeof long_body - 1);
    int p[2];
    assert_int_equal(pipe(p), 0);
    reader_result rr = {.fd = p[0]};
    pthread_t rt, wt[WR_THREADS];
    assert_int_equal(pthread_create(&rt, NULL, reader, &rr), 0);
    accesslog_set_fd(p[1]);
    for (long t = 0; t < WR_THREADS; t++)
        assert_int_equal(pthread_create(&wt[t], NULL, writer, (void *)t), 0);
    for (int t = 0; t < WR_THREADS; t++)
        pthread_join(wt[t], NULL);
    accesslog_set_fd(1);
    close(p[1]);
    pthread_join(rt, NULL);
    close(p[0]);
    if (rr.bad) fail_msg("%d of %d lines broken, first: %s", rr.bad, rr.lines, rr.first_bad);
    assert_int_equal(rr.lines, WR_THREADS * WR_LINES);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_fields),
        cmocka_unit_test(test_json_omits_null_fields),
        cmocka_unit_test(test_json_escapes_hostile_strings),
        cmocka_unit_test(test_json_valid_for_any_bytes),
        cmocka_unit_test(test_text_format_one_line),
        cmocka_unit_test(test_concurrent_writes_never_interleave),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
