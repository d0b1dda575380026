/* test_store.c — the context-store conformance suite: ONE table of cases, each taking a freshly
 * opened store, run against all four backends (Memory, File, Redis, PostgreSQL). Redis and
 * PostgreSQL are real servers started here on free loopback ports (testsrv.c). Backend-specific
 * fault tests follow: File durability across SIGKILL, Redis restart. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "context/backend.h"
#include "context/store.h"
#include "testsrv.c"

typedef struct fixture {
    cfg_store_type type;
    uv_loop_t loop;
    testsrv srv;
    char dir[256]; /* File databases */
    int n;         /* per-test counter: every test gets its own prefix / file / MCP name */
    char name[64], prefix[64], path[300];
} fixture;

static const unsigned char test_key[32] = "0123456789abcdef0123456789abcdef";

/* ---- synchronous wrappers over the async API (the loop runs until the callback) ---- */

static void on_req(ctx_req *r)
{
    *(int *)r->data = 1;
}

static int wait_req(fixture *fx, ctx_req *r, int rc, int *flag)
{
    if (rc != 0) {
        assert_int_equal(r->result, rc);
        assert_true(r->errmsg[0] != 0);
        return rc;
    }
    while (!*flag)
        uv_run(&fx->loop, UV_RUN_ONCE);
    return r->result;
}

#define SYNC(fx, req, call)                                                                        \
    ({                                                                                             \
        int flag_ = 0;                                                                             \
        (req)->data = &flag_;                                                                      \
        int rc_ = (call);                                                                          \
        wait_req((fx), (req), rc_, &flag_);                                                        \
    })

static json_t *msgs(const char *json)
{
    json_error_t e;
    json_t *j = json_loads(json, 0, &e);
    if (!j) fail_msg("bad test JSON %s: %s", json, e.text);
    return j;
}

static int t_append(fixture *fx, ctx_store *s, const char *tenant, const char *id, const char *json,
                    uint64_t expected, uint64_t *version)
{
    ctx_req r = {0};
    json_t *m = msgs(json);
    int rc = SYNC(fx, &r, ctx_store_append(s, &r, tenant, id, m, expected, on_req));
    json_decref(m);
    if (version) *version = r.version;
    if (rc != 0 && rc != CTX_ECONFLICT && rc != CTX_EREADONLY && rc != CTX_EINVAL)
        print_message("append %s: %s\n", id, r.errmsg);
    ctx_req_cleanup(&r);
    return rc;
}

static int t_get(fixture *fx, ctx_store *s, const char *tenant, const char *id, ctx_record **out)
{
    ctx_req r = {0};
    int rc = SYNC(fx, &r, ctx_store_get(s, &r, tenant, id, on_req));
    if (out) {
        *out = r.record;
        r.record = NULL;
    }
    if (rc != 0 && rc != CTX_ENOTFOUND) print_message("get %s: %s\n", id, r.errmsg);
    ctx_req_cleanup(&r);
    return rc;
}

static int t_delete(fixture *fx, ctx_store *s, const char *tenant, const char *id)
{
    ctx_req r = {0};
    return SYNC(fx, &r, ctx_store_delete(s, &r, tenant, id, on_req));
}

static ctx_stats t_stats(fixture *fx, ctx_store *s)
{
    ctx_req r = {0};
    assert_int_equal(SYNC(fx, &r, ctx_store_stats(s, &r, on_req)), 0);
    return r.stats;
}

static void on_closed(ctx_store *s, void *arg)
{
    *(int *)arg = 1;
}

static void fx_close(fixture *fx, ctx_store *s)
{
    int done = 0;
    ctx_store_close(s, on_closed, &done);
    while (!done)
        uv_run(&fx->loop, UV_RUN_ONCE);
}

static cfg_mcp fx_cfg(fixture *fx)
{
    fx->n++;
    snprintf(fx->name, sizeof(fx->name), "conformance-%d", fx->n);
    snprintf(fx->prefix, sizeof(fx->prefix), "t%d:", fx->n);
    snprintf(fx->path, sizeof(fx->path), "%s/t%d.db", fx->dir, fx->n);
    cfg_mcp c;
    memset(&c, 0, sizeof(c));
    c.name = fx->name;
    c.namespace_ = "test";
    c.store = fx->type;
    c.path = fx->path;
    c.url = fx->srv.url;
    c.dsn = fx->srv.url;
    c.password = fx->srv.password[0] ? fx->srv.password : NULL;
    c.key_prefix = fx->prefix;
    c.ttl_seconds = 3600;
    c.max_entries = 100000;
    c.max_turns = 500;
    c.eviction = EVICT_LRU;
    c.format_json = true;
    c.schema_version = 1;
    return c;
}

static ctx_store *fx_open(fixture *fx, const cfg_mcp *c)
{
    ctx_store *s = NULL;
    char err[512];
    int rc = ctx_store_open(&fx->loop, c, &s, err, sizeof(err));
    if (rc != 0) fail_msg("open %s store: %s", fx->type == STORE_REDIS ? "redis" : "?", err);
    return s;
}

/* ---- raw access: what the backend really holds, read without the store ---- */

static void on_op(ctx_op *op)
{
    *(int *)op->data = 1;
}

static void raw_op(fixture *fx, ctx_store *s, ctx_op *op)
{
    int flag = 0;
    op->data = &flag;
    op->done = on_op;
    s->be->submit(s, op);
    while (!flag)
        uv_run(&fx->loop, UV_RUN_ONCE);
    op->data = NULL; /* flag goes out of scope */
}

/* writes bytes as the stored record of (tenant, id) through the backend primitive (v0 fixtures,
 * records moved between ids) */
static void raw_put(fixture *fx, ctx_store *s, const char *tenant, const char *id, const void *blob,
                    size_t len, uint64_t version)
{
    ctx_op op;
    memset(&op, 0, sizeof(op));
    op.kind = CTX_OP_CAS;
    op.tenant = tenant;
    op.id = id;
    op.now = 1700000000000;
    op.old_version = 0;
    op.in.version = version;
    op.in.turns = 1;
    op.in.created_at = op.in.updated_at = op.in.accessed_at = (int64_t)time(NULL) * 1000;
    op.now = op.in.accessed_at;
    op.in.blob = (unsigned char *)blob;
    op.in.blob_len = len;
    raw_op(fx, s, &op);
    assert_int_equal(op.status, 0);
}

/* the stored bytes of (tenant, id), read with the server's own client */
static unsigned char *raw_get(fixture *fx, ctx_store *s, const char *tenant, const char *id,
                              size_t *len)
{
    unsigned char *out = NULL;
    *len = 0;
    if (fx->type == STORE_MEMORY) {
        ctx_op op;
        memset(&op, 0, sizeof(op));
        op.kind = CTX_OP_LOAD;
        op.now = (int64_t)time(NULL) * 1000; /* LOAD touches: keep the entry fresh */
        op.tenant = tenant;
        op.id = id;
        raw_op(fx, s, &op);
        assert_int_equal(op.status, 0);
        if (!op.row.blob) { /* kept decoded (no encryption): these are the bytes it stands for */
            assert_non_null(op.row.rec);
            buf b = BUF_INIT;
            char err[256];
            assert_int_equal(
                ctx_record_encode(&s->codec, tenant, id, op.row.rec, &b, err, sizeof(err)), 0);
            ctx_row_clear(&op.row);
            *len = b.len;
            return (unsigned char *)b.data;
        }
        assert_null(op.row.rec);
        *len = op.row.blob_len;
        return op.row.blob;
    }
    if (fx->type == STORE_FILE) {
        sqlite3 *db;
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_open(fx->path, &db), SQLITE_OK);
        assert_int_equal(
            sqlite3_prepare_v2(db, "SELECT record FROM conversations WHERE tenant = ?1 AND id = ?2",
                               -1, &st, NULL),
            SQLITE_OK);
        sqlite3_bind_text(st, 1, tenant, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, id, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        *len = (size_t)sqlite3_column_bytes(st, 0);
        out = malloc(*len + 1);
        memcpy(out, sqlite3_column_blob(st, 0), *len);
        sqlite3_finalize(st);
        sqlite3_close(db);
        return out;
    }
    if (fx->type == STORE_REDIS) {
        redisContext *rc = redisConnect("127.0.0.1", fx->srv.port);
        assert_non_null(rc);
        assert_int_equal(rc->err, 0);
        redisReply *r = redisCommand(rc, "AUTH %s", fx->srv.password);
        freeReplyObject(r);
        r = redisCommand(rc, "SELECT 2");
        freeReplyObject(r);
        r = redisCommand(rc, "HGET %s%s:%s b", fx->prefix, tenant, id);
        assert_non_null(r);
        assert_int_equal(r->type, REDIS_REPLY_STRING);
        *len = r->len;
        out = malloc(*len + 1);
        memcpy(out, r->str, *len);
        freeReplyObject(r);
        redisFree(rc);
        return out;
    }
    PGconn *pg = PQconnectdb(fx->srv.url);
    assert_int_equal(PQstatus(pg), CONNECTION_OK);
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT record FROM \"t%d_conversations\" WHERE tenant = $1 AND id = $2", fx->n);
    const char *params[] = {tenant, id};
    PGresult *res = PQexecParams(pg, sql, 2, NULL, params, NULL, NULL, 1);
    assert_int_equal(PQresultStatus(res), PGRES_TUPLES_OK);
    assert_int_equal(PQntuples(res), 1);
    *len = (size_t)PQgetlength(res, 0, 0);
    out = malloc(*len + 1);
    memcpy(out, PQgetvalue(res, 0, 0), *len);
    PQclear(res);
    PQfinish(pg);
    return out;
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* ================= the conformance cases ================= */

static void case_get_missing(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    ctx_req r = {0};
    assert_int_equal(SYNC(fx, &r, ctx_store_get(s, &r, "acme", "nope", on_req)), CTX_ENOTFOUND);
    assert_null(r.record);
    assert_non_null(strstr(r.errmsg, "nope"));
    fx_close(fx, s);
}

static void case_append_creates(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.persona = "You are terse.";
    ctx_store *s = fx_open(fx, &c);
    uint64_t v = 0;
    assert_int_equal(t_append(fx, s, "acme", "c1",
                              "[{\"role\":\"user\",\"content\":\"hi\"},"
                              "{\"role\":\"assistant\",\"content\":\"hello\"}]",
                              CTX_VERSION_ANY, &v),
                     0);
    assert_int_equal(v, 1);
    ctx_record *rec = NULL;
    assert_int_equal(t_get(fx, s, "acme", "c1", &rec), 0);
    assert_string_equal(rec->id, "c1");
    assert_int_equal(rec->version, 1);
    assert_int_equal(rec->schema_version, CTX_SCHEMA_VERSION);
    assert_string_equal(rec->persona, "You are terse.");
    assert_null(rec->summary);
    assert_int_equal(json_array_size(rec->messages), 2);
    json_t *m0 = json_array_get(rec->messages, 0);
    assert_string_equal(json_string_value(json_object_get(m0, "content")), "hi");
    assert_true(json_is_integer(json_object_get(m0, "ts")));
    assert_true(json_is_object(rec->metadata));
    assert_true(rec->created_at > 0 && rec->updated_at >= rec->created_at);
    ctx_record_free(rec);
    assert_int_equal(t_stats(fx, s).active, 1);
    fx_close(fx, s);
}

static void case_expected_version(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    uint64_t v = 0;
    const char *m = "[{\"role\":\"user\",\"content\":\"x\"}]";
    assert_int_equal(t_append(fx, s, "acme", "c", m, 0, &v), 0); /* 0 = must not exist */
    assert_int_equal(v, 1);
    assert_int_equal(t_append(fx, s, "acme", "c", m, 1, &v), 0);
    assert_int_equal(v, 2);
    assert_int_equal(t_append(fx, s, "acme", "c", m, 2, &v), 0);
    assert_int_equal(v, 3);
    fx_close(fx, s);
}

static void case_conflict_writes_nothing(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    uint64_t v = 0;
    assert_int_equal(t_append(fx, s, "acme", "c", "[{\"role\":\"user\",\"content\":\"a\"}]", 0, &v),
                     0);
    ctx_req r = {0};
    json_t *m = msgs("[{\"role\":\"user\",\"content\":\"stale\"}]");
    assert_int_equal(SYNC(fx, &r, ctx_store_append(s, &r, "acme", "c", m, 7, on_req)),
                     CTX_ECONFLICT);
    assert_non_null(strstr(r.errmsg, "version 1"));
    /* create-only on an existing conversation conflicts too */
    assert_int_equal(SYNC(fx, &r, ctx_store_append(s, &r, "acme", "c", m, 0, on_req)),
                     CTX_ECONFLICT);
    /* a missing conversation is at version 0 */
    assert_int_equal(SYNC(fx, &r, ctx_store_append(s, &r, "acme", "other", m, 3, on_req)),
                     CTX_ECONFLICT);
    json_decref(m);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "c", &rec), 0);
    assert_int_equal(rec->version, 1);
    assert_int_equal(json_array_size(rec->messages), 1);
    ctx_record_free(rec);
    assert_int_equal(t_get(fx, s, "acme", "other", NULL), CTX_ENOTFOUND);
    fx_close(fx, s);
}

static void case_concurrent_appends(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *a = fx_open(fx, &c), *b = fx_open(fx, &c); /* two handles = two connections */
    uint64_t v;
    assert_int_equal(
        t_append(fx, a, "acme", "race", "[{\"role\":\"user\",\"content\":\"0\"}]", 0, &v), 0);
    for (int round = 0; round < 5; round++) {
        ctx_req ra = {0}, rb = {0};
        int fa = 0, fb = 0;
        ra.data = &fa;
        rb.data = &fb;
        json_t *ma = msgs("[{\"role\":\"user\",\"content\":\"A\"}]");
        json_t *mb = msgs("[{\"role\":\"user\",\"content\":\"B\"}]");
        assert_int_equal(ctx_store_append(a, &ra, "acme", "race", ma, v, on_req), 0);
        assert_int_equal(ctx_store_append(b, &rb, "acme", "race", mb, v, on_req), 0);
        json_decref(ma);
        json_decref(mb);
        while (!fa || !fb)
            uv_run(&fx->loop, UV_RUN_ONCE);
        assert_true((ra.result == 0) != (rb.result == 0)); /* exactly one wins */
        ctx_req *loser = ra.result == 0 ? &rb : &ra;
        assert_int_equal(loser->result, CTX_ECONFLICT);
        uint64_t won = ra.result == 0 ? ra.version : rb.version;
        assert_int_equal(won, v + 1);
        v = won;
    }
    ctx_record *rec;
    assert_int_equal(t_get(fx, a, "acme", "race", &rec), 0);
    assert_int_equal(rec->version, 6);
    assert_int_equal(json_array_size(rec->messages), 6); /* the initial one + one per round */
    ctx_record_free(rec);
    fx_close(fx, a);
    fx_close(fx, b);
}

static void case_delete(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "acme", "d", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    assert_int_equal(t_delete(fx, s, "acme", "d"), 0);
    assert_int_equal(t_get(fx, s, "acme", "d", NULL), CTX_ENOTFOUND);
    assert_int_equal(t_delete(fx, s, "acme", "d"), CTX_ENOTFOUND);
    assert_int_equal(t_stats(fx, s).active, 0);
    /* recreated from scratch at version 1 */
    uint64_t v;
    assert_int_equal(t_append(fx, s, "acme", "d", "[{\"role\":\"user\",\"content\":\"y\"}]", 0, &v),
                     0);
    assert_int_equal(v, 1);
    fx_close(fx, s);
}

static void case_list_paging(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    enum { N = 23 };
    char id[32];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "conv-%02d", (i * 7) % N); /* created out of order */
        assert_int_equal(t_append(fx, s, "acme", id,
                                  "[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"assistant\","
                                  "\"content\":\"y\"}]",
                                  CTX_VERSION_ANY, NULL),
                         0);
    }
    assert_int_equal(t_append(fx, s, "other", "conv-99", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    int seen[N] = {0}, total = 0, pages = 0;
    char *cursor = NULL;
    char last[64] = "";
    do {
        ctx_req r = {0};
        assert_int_equal(SYNC(fx, &r, ctx_store_list(s, &r, "acme", 5, cursor, on_req)), 0);
        free(cursor);
        cursor = r.next_cursor ? strdup(r.next_cursor) : NULL;
        assert_true(r.n_items <= 5);
        for (size_t i = 0; i < r.n_items; i++) {
            unsigned k = (unsigned)atoi(r.items[i].id + 5);
            assert_true(k < N);
            seen[k % N]++;
            total++;
            assert_true(strcmp(r.items[i].id, last) > 0); /* stable, ascending */
            snprintf(last, sizeof(last), "%s", r.items[i].id);
            assert_int_equal(r.items[i].turns, 2);
            assert_true(r.items[i].created_at > 0);
        }
        ctx_req_cleanup(&r);
        pages++;
    } while (cursor && pages < 20);
    assert_int_equal(total, N);
    for (int i = 0; i < N; i++)
        assert_int_equal(seen[i], 1);
    assert_int_equal(pages, 5);
    fx_close(fx, s);
}

static void case_tenant_isolation(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "alpha", "shared-id",
                              "[{\"role\":\"user\",\"content\":\"alpha secret\"}]", CTX_VERSION_ANY,
                              NULL),
                     0);
    assert_int_equal(t_get(fx, s, "beta", "shared-id", NULL), CTX_ENOTFOUND);
    assert_int_equal(t_delete(fx, s, "beta", "shared-id"), CTX_ENOTFOUND);
    ctx_req r = {0};
    assert_int_equal(SYNC(fx, &r, ctx_store_list(s, &r, "beta", 10, NULL, on_req)), 0);
    assert_int_equal(r.n_items, 0);
    ctx_req_cleanup(&r);
    uint64_t v;
    assert_int_equal(
        t_append(fx, s, "beta", "shared-id", "[{\"role\":\"user\",\"content\":\"beta\"}]", 0, &v),
        0);
    assert_int_equal(v, 1);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "alpha", "shared-id", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 1);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(rec->messages, 0), "content")),
        "alpha secret");
    ctx_record_free(rec);
    /* invalid ids and tenants are refused up front with a message */
    char longid[CTX_ID_MAX + 2];
    memset(longid, 'a', sizeof(longid) - 1);
    longid[sizeof(longid) - 1] = 0;
    assert_int_equal(ctx_store_get(s, &r, "alpha", longid, on_req), CTX_EINVAL);
    assert_non_null(strstr(r.errmsg, "256"));
    assert_int_equal(ctx_store_get(s, &r, "alpha", "has space", on_req), CTX_EINVAL);
    assert_int_equal(ctx_store_get(s, &r, "al:pha", "x", on_req), CTX_EINVAL);
    assert_int_equal(ctx_store_get(s, &r, "alpha", "", on_req), CTX_EINVAL);
    json_t *bad = msgs("[{\"content\":\"no role\"}]");
    assert_int_equal(ctx_store_append(s, &r, "alpha", "x", bad, CTX_VERSION_ANY, on_req),
                     CTX_EINVAL);
    assert_non_null(strstr(r.errmsg, "messages[0].role"));
    json_decref(bad);
    fx_close(fx, s);
}

static void case_ttl_expiry(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.ttl_seconds = 1;
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "acme", "short", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    assert_int_equal(t_append(fx, s, "acme", "short2", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    assert_int_equal(t_get(fx, s, "acme", "short", NULL), 0);
    sleep_ms(2100); /* waiting for expiry, not measuring anything */
    assert_int_equal(t_get(fx, s, "acme", "short", NULL), CTX_ENOTFOUND);
    ctx_req r = {0};
    assert_int_equal(SYNC(fx, &r, ctx_store_expire(s, &r, on_req)), 0);
    ctx_stats st = t_stats(fx, s);
    assert_int_equal(st.active, 0);
    assert_true(st.expirations >= 1);
    /* an expired conversation can be started again (create-only succeeds) */
    uint64_t v;
    assert_int_equal(
        t_append(fx, s, "acme", "short2", "[{\"role\":\"user\",\"content\":\"x\"}]", 0, &v), 0);
    assert_int_equal(v, 1);
    fx_close(fx, s);
}

static void case_sliding_ttl(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.ttl_seconds = 2;
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "acme", "slide", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    sleep_ms(1300);
    assert_int_equal(t_get(fx, s, "acme", "slide", NULL), 0); /* the read refreshes the TTL */
    sleep_ms(1300);                                           /* 2.6 s after the write */
    assert_int_equal(t_get(fx, s, "acme", "slide", NULL), 0);
    sleep_ms(2600);
    assert_int_equal(t_get(fx, s, "acme", "slide", NULL), CTX_ENOTFOUND);
    fx_close(fx, s);
}

static void eviction_case(fixture *fx, cfg_eviction policy, const char *gone)
{
    cfg_mcp c = fx_cfg(fx);
    c.max_entries = 3;
    c.eviction = policy;
    ctx_store *s = fx_open(fx, &c);
    const char *m = "[{\"role\":\"user\",\"content\":\"x\"}]";
    assert_int_equal(t_append(fx, s, "acme", "a", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "b", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_append(fx, s, "other", "c", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "a", NULL), 0); /* a is now the most recently used */
    assert_int_equal(t_append(fx, s, "acme", "b", m, CTX_VERSION_ANY, NULL), 0); /* no new entry */
    assert_int_equal(t_get(fx, s, "acme", "a", NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "d", m, CTX_VERSION_ANY, NULL), 0);
    const char *ids[] = {"a", "b", "c", "d"};
    for (int i = 0; i < 4; i++) {
        const char *tenant = strcmp(ids[i], "c") == 0 ? "other" : "acme";
        int rc = t_get(fx, s, tenant, ids[i], NULL);
        if (strcmp(ids[i], gone) == 0)
            assert_int_equal(rc, CTX_ENOTFOUND);
        else
            assert_int_equal(rc, 0);
    }
    ctx_stats st = t_stats(fx, s);
    assert_int_equal(st.active, 3);
    assert_int_equal(st.evictions, 1);
    fx_close(fx, s);
}

/* order of use: a, b, c created; a read; b written; a read -> LRU is c, FIFO is a, LIFO is c?
 * LIFO removes the newest *created* before the insert: c. */
static void case_evict_lru(void **state)
{
    eviction_case(*state, EVICT_LRU, "c");
}
static void case_evict_fifo(void **state)
{
    eviction_case(*state, EVICT_FIFO, "a");
}
static void case_evict_lifo(void **state)
{
    fixture *fx = *state;
    /* make LIFO differ from LRU: the newest created (c) is also used last */
    cfg_mcp c = fx_cfg(fx);
    c.max_entries = 3;
    c.eviction = EVICT_LIFO;
    ctx_store *s = fx_open(fx, &c);
    const char *m = "[{\"role\":\"user\",\"content\":\"x\"}]";
    assert_int_equal(t_append(fx, s, "acme", "a", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "b", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "c", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "c", NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "a", NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "d", m, CTX_VERSION_ANY, NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "c", NULL), CTX_ENOTFOUND);
    assert_int_equal(t_get(fx, s, "acme", "a", NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "b", NULL), 0);
    assert_int_equal(t_get(fx, s, "acme", "d", NULL), 0);
    assert_int_equal(t_stats(fx, s).evictions, 1);
    fx_close(fx, s);
}

static void case_max_turns(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.max_turns = 3;
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(
        t_append(
            fx, s, "acme", "m",
            "[{\"role\":\"user\",\"content\":\"1\"},{\"role\":\"assistant\",\"content\":\"2\"}]",
            CTX_VERSION_ANY, NULL),
        0);
    ctx_req r = {0};
    uint64_t v;
    json_t *m =
        msgs("[{\"role\":\"user\",\"content\":\"3\"},{\"role\":\"assistant\",\"content\":\"4\"}]");
    assert_int_equal(SYNC(fx, &r, ctx_store_append(s, &r, "acme", "m", m, CTX_VERSION_ANY, on_req)),
                     0);
    json_decref(m);
    assert_int_equal(r.trimmed, 1);
    v = r.version;
    /* a summary survives trimming */
    assert_int_equal(
        SYNC(fx, &r, ctx_store_set_summary(s, &r, "acme", "m", "user said 1..3", 1, v, on_req)), 0);
    assert_int_equal(r.version, v + 1);
    assert_int_equal(
        t_append(
            fx, s, "acme", "m",
            "[{\"role\":\"user\",\"content\":\"5\"},{\"role\":\"assistant\",\"content\":\"6\"}]",
            CTX_VERSION_ANY, NULL),
        0);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "m", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 3);
    const char *want[] = {"4", "5", "6"};
    for (int i = 0; i < 3; i++)
        assert_string_equal(
            json_string_value(json_object_get(json_array_get(rec->messages, (size_t)i), "content")),
            want[i]);
    assert_string_equal(rec->summary, "user said 1..3");
    ctx_record_free(rec);
    assert_int_equal(t_stats(fx, s).trimmed, 2);
    /* set_summary checks its version too */
    assert_int_equal(SYNC(fx, &r, ctx_store_set_summary(s, &r, "acme", "m", "x", 0, 1, on_req)),
                     CTX_ECONFLICT);
    assert_int_equal(
        SYNC(fx, &r, ctx_store_set_summary(s, &r, "acme", "nope", "x", 0, CTX_VERSION_ANY, on_req)),
        CTX_ENOTFOUND);
    fx_close(fx, s);
}

static void case_encryption(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.encrypt = true;
    memcpy(c.enc_key, test_key, 32);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "acme", "sealed",
                              "[{\"role\":\"user\",\"content\":\"TOP-SECRET-PLAINTEXT\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    size_t len;
    unsigned char *raw = raw_get(fx, s, "acme", "sealed", &len);
    assert_true(len > 1 + 12 + 16);
    assert_int_equal(raw[0], 1); /* seal version byte */
    assert_null(memmem(raw, len, "TOP-SECRET", 10));
    assert_null(memmem(raw, len, "messages", 8));
    assert_null(memmem(raw, len, "role", 4));
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "sealed", &rec), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(rec->messages, 0), "content")),
        "TOP-SECRET-PLAINTEXT");
    ctx_record_free(rec);
    /* two writes of the same content differ (fresh nonce) */
    size_t len2;
    assert_int_equal(t_append(fx, s, "acme", "sealed2",
                              "[{\"role\":\"user\",\"content\":\"TOP-SECRET-PLAINTEXT\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    unsigned char *raw2 = raw_get(fx, s, "acme", "sealed2", &len2);
    assert_memory_not_equal(raw + 1, raw2 + 1, 12);
    free(raw2);
    /* the sealed record moved to another conversation (or tenant) fails authentication */
    raw_put(fx, s, "acme", "moved", raw, len, 1);
    raw_put(fx, s, "evil", "sealed", raw, len, 1);
    ctx_req r = {0};
    assert_int_equal(SYNC(fx, &r, ctx_store_get(s, &r, "acme", "moved", on_req)), CTX_ECORRUPT);
    assert_non_null(strstr(r.errmsg, "failed authentication"));
    assert_int_equal(SYNC(fx, &r, ctx_store_get(s, &r, "evil", "sealed", on_req)), CTX_ECORRUPT);
    free(raw);
    /* the same data without the key: a clear error, never ciphertext as history (opened before
     * the first handle closes: Memory data lives while a handle is open) */
    c.encrypt = false;
    ctx_store *plain = fx_open(fx, &c);
    assert_int_equal(SYNC(fx, &r, ctx_store_get(plain, &r, "acme", "sealed", on_req)),
                     CTX_ECORRUPT);
    assert_non_null(strstr(r.errmsg, "encryption"));
    fx_close(fx, plain);
    fx_close(fx, s);
}

static void case_text_format(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.format_json = false;
    ctx_store *s = fx_open(fx, &c);
    const char *tricky =
        "[{\"role\":\"user\",\"content\":\"line1\\nline2\\r\\n\\\\n is not a newline\\\\ "
        "end\\\\\"},"
        "{\"role\":\"assistant\",\"content\":null,\"tool_calls\":[{\"id\":\"call_1\",\"type\":"
        "\"function\","
        "\"function\":{\"name\":\"lookup\",\"arguments\":\"{\\\"q\\\":\\\"a\\\\nb\\\"}\"}}]},"
        "{\"role\":\"tool\",\"tool_call_id\":\"call_1\",\"content\":\"result: "
        "42\",\"name\":\"lookup\"},"
        "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"part\\none\"}],\"ts\":1234},"
        "{\"role\":\"user\",\"content\":\"end\\nmessage user\\nend\"}]";
    assert_int_equal(t_append(fx, s, "acme", "text", tricky, CTX_VERSION_ANY, NULL), 0);
    size_t len;
    unsigned char *raw = raw_get(fx, s, "acme", "text", &len);
    assert_true(len > 21 && memcmp(raw, "ctxgate-record text 1\n", 22) == 0);
    assert_non_null(memmem(raw, len, "\nmessage tool\n", 14));
    free(raw);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "text", &rec), 0);
    json_t *want = msgs(tricky);
    size_t i;
    json_t *m;
    json_array_foreach(rec->messages, i, m)
    {
        json_t *w = json_array_get(want, i);
        if (!json_object_get(w, "ts")) json_object_set(w, "ts", json_object_get(m, "ts"));
    }
    assert_true(json_equal(rec->messages, want));
    json_decref(want);
    ctx_record_free(rec);
    fx_close(fx, s);
}

static void case_schema_upgrade_v0(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    const char *v0 = "{\"turns\":[{\"role\":\"user\",\"content\":\"from the old days\"},"
                     "{\"role\":\"assistant\",\"content\":\"indeed\"}],\"summary\":\"legacy\"}";
    raw_put(fx, s, "acme", "legacy", v0, strlen(v0), 7);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "legacy", &rec), 0);
    assert_int_equal(rec->schema_version, CTX_SCHEMA_VERSION);
    assert_int_equal(rec->version, 7);
    assert_string_equal(rec->id, "legacy");
    assert_string_equal(rec->summary, "legacy");
    assert_int_equal(json_array_size(rec->messages), 2);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(rec->messages, 0), "content")),
        "from the old days");
    assert_true(json_is_integer(json_object_get(json_array_get(rec->messages, 0), "ts")));
    ctx_record_free(rec);
    uint64_t v;
    assert_int_equal(
        t_append(fx, s, "acme", "legacy", "[{\"role\":\"user\",\"content\":\"new\"}]", 7, &v), 0);
    assert_int_equal(v, 8);
    size_t len;
    unsigned char *raw = raw_get(fx, s, "acme", "legacy", &len);
    assert_non_null(memmem(raw, len, "\"schemaVersion\":1", 17)); /* rewritten as v1 */
    free(raw);
    assert_int_equal(t_get(fx, s, "acme", "legacy", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 3);
    ctx_record_free(rec);
    fx_close(fx, s);
}

static void case_read_only(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *w = fx_open(fx, &c);
    assert_int_equal(t_append(fx, w, "acme", "ro", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    c.read_only = true;
    ctx_store *s = fx_open(fx, &c);
    ctx_req r = {0};
    json_t *m = msgs("[{\"role\":\"user\",\"content\":\"y\"}]");
    assert_int_equal(ctx_store_append(s, &r, "acme", "ro", m, CTX_VERSION_ANY, on_req),
                     CTX_EREADONLY);
    assert_non_null(strstr(r.errmsg, "ReadOnlyMany"));
    json_decref(m);
    assert_int_equal(ctx_store_set_summary(s, &r, "acme", "ro", "s", 0, CTX_VERSION_ANY, on_req),
                     CTX_EREADONLY);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "ro", &rec), 0); /* reading still works */
    assert_int_equal(json_array_size(rec->messages), 1);
    ctx_record_free(rec);
    fx_close(fx, s);
    fx_close(fx, w);
}

/* ---- append_to: one compare-and-set from the record the caller read ---- */

static int t_append_to(fixture *fx, ctx_store *s, const char *tenant, const char *id,
                       const ctx_record *base, const char *json, ctx_req *out)
{
    ctx_req r = {0};
    json_t *m = msgs(json);
    int rc = SYNC(fx, &r, ctx_store_append_to(s, &r, tenant, id, base, m, on_req));
    json_decref(m);
    if (rc != 0 && rc != CTX_ECONFLICT) print_message("append_to %s: %s\n", id, r.errmsg);
    if (out)
        *out = r;
    else
        ctx_req_cleanup(&r);
    return rc;
}

static const char *content_at(const ctx_record *rec, size_t i)
{
    return json_string_value(json_object_get(json_array_get(rec->messages, i), "content"));
}

static void case_append_to_creates(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.persona = "You are terse.";
    ctx_store *s = fx_open(fx, &c);
    ctx_req r;
    assert_int_equal(t_get(fx, s, "acme", "n1", NULL), CTX_ENOTFOUND);
    assert_int_equal(t_append_to(fx, s, "acme", "n1", NULL,
                                 "[{\"role\":\"user\",\"content\":\"hi\"},"
                                 "{\"role\":\"assistant\",\"content\":\"hello\"}]",
                                 &r),
                     0);
    assert_int_equal(r.version, 1);
    assert_int_equal(r.trimmed, 0);
    ctx_record *rec = NULL;
    assert_int_equal(t_get(fx, s, "acme", "n1", &rec), 0);
    assert_int_equal(rec->version, 1);
    assert_string_equal(rec->persona, "You are terse.");
    assert_int_equal(json_array_size(rec->messages), 2);
    assert_string_equal(content_at(rec, 1), "hello");
    assert_true(json_is_integer(json_object_get(json_array_get(rec->messages, 0), "ts")));
    assert_true(rec->created_at > 0 && rec->updated_at == rec->created_at);
    ctx_record_free(rec);
    assert_int_equal(t_stats(fx, s).active, 1);
    /* base must be the record of this conversation */
    assert_int_equal(t_get(fx, s, "acme", "n1", &rec), 0);
    json_t *m = msgs("[{\"role\":\"user\",\"content\":\"x\"}]");
    ctx_req bad = {0};
    assert_int_equal(ctx_store_append_to(s, &bad, "acme", "other", rec, m, on_req), CTX_EINVAL);
    assert_true(bad.errmsg[0] != 0);
    json_decref(m);
    ctx_record_free(rec);
    fx_close(fx, s);
}

static void case_append_to_appends(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(
        t_append(fx, s, "acme", "a", "[{\"role\":\"user\",\"content\":\"1\"}]", 0, NULL), 0);
    ctx_req r = {0};
    assert_int_equal(
        SYNC(fx, &r, ctx_store_set_summary(s, &r, "acme", "a", "the gist", 0, 1, on_req)), 0);
    ctx_record *base = NULL, *rec = NULL;
    assert_int_equal(t_get(fx, s, "acme", "a", &base), 0);
    assert_int_equal(base->version, 2);
    sleep_ms(5); /* updatedAt must move on, createdAt must not */
    assert_int_equal(t_append_to(fx, s, "acme", "a", base,
                                 "[{\"role\":\"user\",\"content\":\"2\"},"
                                 "{\"role\":\"assistant\",\"content\":\"3\",\"ts\":42}]",
                                 &r),
                     0);
    assert_int_equal(r.version, 3);
    assert_int_equal(t_get(fx, s, "acme", "a", &rec), 0);
    assert_int_equal(rec->version, 3);
    assert_int_equal(json_array_size(rec->messages), 3);
    assert_string_equal(content_at(rec, 0), "1");
    assert_string_equal(content_at(rec, 1), "2");
    assert_string_equal(content_at(rec, 2), "3");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(rec->messages, 2), "ts")),
                     42);
    assert_string_equal(rec->summary, "the gist");
    assert_int_equal(rec->created_at, base->created_at);
    assert_true(rec->updated_at > base->updated_at);
    /* the base the caller still holds is unchanged */
    assert_int_equal(json_array_size(base->messages), 1);
    ctx_record_free(base);
    /* and the new record is a base in turn */
    assert_int_equal(
        t_append_to(fx, s, "acme", "a", rec, "[{\"role\":\"user\",\"content\":\"4\"}]", &r), 0);
    assert_int_equal(r.version, 4);
    ctx_record_free(rec);
    assert_int_equal(t_get(fx, s, "acme", "a", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 4);
    assert_string_equal(content_at(rec, 3), "4");
    ctx_record_free(rec);
    fx_close(fx, s);
}

static void case_append_to_conflicts(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    const char *m = "[{\"role\":\"user\",\"content\":\"x\"}]";
    assert_int_equal(t_append(fx, s, "acme", "c", m, 0, NULL), 0);
    ctx_record *stale = NULL, *rec = NULL;
    assert_int_equal(t_get(fx, s, "acme", "c", &stale), 0);
    assert_int_equal(t_append(fx, s, "acme", "c", "[{\"role\":\"user\",\"content\":\"won\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    /* the base is stale: conflict, nothing written */
    ctx_req r;
    assert_int_equal(
        t_append_to(fx, s, "acme", "c", stale, "[{\"role\":\"user\",\"content\":\"lost\"}]", &r),
        CTX_ECONFLICT);
    assert_non_null(strstr(r.errmsg, "version 1"));
    /* NULL base = must not exist, but it does */
    assert_int_equal(
        t_append_to(fx, s, "acme", "c", NULL, "[{\"role\":\"user\",\"content\":\"lost\"}]", NULL),
        CTX_ECONFLICT);
    assert_int_equal(t_get(fx, s, "acme", "c", &rec), 0);
    assert_int_equal(rec->version, 2);
    assert_int_equal(json_array_size(rec->messages), 2);
    assert_string_equal(content_at(rec, 1), "won");
    ctx_record_free(rec);
    /* deleted after the read: conflict too, and it stays deleted */
    assert_int_equal(t_get(fx, s, "acme", "c", &rec), 0);
    assert_int_equal(t_delete(fx, s, "acme", "c"), 0);
    assert_int_equal(t_append_to(fx, s, "acme", "c", rec, m, NULL), CTX_ECONFLICT);
    assert_int_equal(t_get(fx, s, "acme", "c", NULL), CTX_ENOTFOUND);
    ctx_record_free(rec);
    ctx_record_free(stale);
    /* two writers from the same base: exactly one wins */
    assert_int_equal(t_append(fx, s, "acme", "race", m, 0, NULL), 0);
    ctx_store *b = fx_open(fx, &c);
    assert_int_equal(t_get(fx, s, "acme", "race", &rec), 0);
    ctx_req ra = {0}, rb = {0};
    int fa = 0, fb = 0;
    ra.data = &fa;
    rb.data = &fb;
    json_t *ma = msgs("[{\"role\":\"user\",\"content\":\"A\"}]");
    json_t *mb = msgs("[{\"role\":\"user\",\"content\":\"B\"}]");
    assert_int_equal(ctx_store_append_to(s, &ra, "acme", "race", rec, ma, on_req), 0);
    assert_int_equal(ctx_store_append_to(b, &rb, "acme", "race", rec, mb, on_req), 0);
    json_decref(ma);
    json_decref(mb);
    while (!fa || !fb)
        uv_run(&fx->loop, UV_RUN_ONCE);
    assert_true((ra.result == 0) != (rb.result == 0));
    assert_int_equal(ra.result == 0 ? rb.result : ra.result, CTX_ECONFLICT);
    ctx_record_free(rec);
    assert_int_equal(t_get(fx, s, "acme", "race", &rec), 0);
    assert_int_equal(rec->version, 2);
    assert_int_equal(json_array_size(rec->messages), 2);
    ctx_record_free(rec);
    fx_close(fx, b);
    fx_close(fx, s);
}

static void case_append_to_max_turns(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.max_turns = 3;
    ctx_store *s = fx_open(fx, &c);
    ctx_req r;
    assert_int_equal(t_append_to(fx, s, "acme", "m", NULL,
                                 "[{\"role\":\"user\",\"content\":\"1\"},"
                                 "{\"role\":\"assistant\",\"content\":\"2\"}]",
                                 NULL),
                     0);
    ctx_record *base, *rec;
    assert_int_equal(t_get(fx, s, "acme", "m", &base), 0);
    assert_int_equal(t_append_to(fx, s, "acme", "m", base,
                                 "[{\"role\":\"user\",\"content\":\"3\"},"
                                 "{\"role\":\"assistant\",\"content\":\"4\"}]",
                                 &r),
                     0);
    assert_int_equal(r.trimmed, 1);
    ctx_record_free(base);
    assert_int_equal(t_get(fx, s, "acme", "m", &base), 0);
    /* more new messages than maxTurns: the whole history and the first new one go */
    assert_int_equal(t_append_to(fx, s, "acme", "m", base,
                                 "[{\"role\":\"user\",\"content\":\"5\"},{\"role\":\"assistant\","
                                 "\"content\":\"6\"},{\"role\":\"user\",\"content\":\"7\"},"
                                 "{\"role\":\"assistant\",\"content\":\"8\"}]",
                                 &r),
                     0);
    assert_int_equal(r.trimmed, 4);
    ctx_record_free(base);
    assert_int_equal(t_get(fx, s, "acme", "m", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 3);
    assert_string_equal(content_at(rec, 0), "6");
    assert_string_equal(content_at(rec, 2), "8");
    assert_int_equal(rec->version, 3);
    ctx_record_free(rec);
    assert_int_equal(t_stats(fx, s).trimmed, 5);
    fx_close(fx, s);
}

static void case_append_to_encryption(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.encrypt = true;
    memcpy(c.enc_key, test_key, 32);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append_to(fx, s, "acme", "sealed", NULL,
                                 "[{\"role\":\"user\",\"content\":\"TOP-SECRET-ONE\"}]", NULL),
                     0);
    ctx_record *base, *rec;
    assert_int_equal(t_get(fx, s, "acme", "sealed", &base), 0);
    assert_int_equal(t_append_to(fx, s, "acme", "sealed", base,
                                 "[{\"role\":\"user\",\"content\":\"TOP-SECRET-TWO\"}]", NULL),
                     0);
    ctx_record_free(base);
    size_t len;
    unsigned char *raw = raw_get(fx, s, "acme", "sealed", &len);
    assert_int_equal(raw[0], 1); /* sealed */
    assert_null(memmem(raw, len, "TOP-SECRET", 10));
    free(raw);
    assert_int_equal(t_get(fx, s, "acme", "sealed", &rec), 0);
    assert_int_equal(json_array_size(rec->messages), 2);
    assert_string_equal(content_at(rec, 0), "TOP-SECRET-ONE");
    assert_string_equal(content_at(rec, 1), "TOP-SECRET-TWO");
    ctx_record_free(rec);
    fx_close(fx, s);
}

/* ---- closing with appends in flight: every request is called back exactly once, before the
 * close callback, with its real result or CTX_ECANCELED; nothing runs on freed memory (run
 * under ASan: build with -DCTXGATE_SANITIZE=ON) ---- */

enum { CLOSE_N = 8 };

typedef struct close_probe {
    fixture *fx;
    ctx_store *s;
    int done, ok, canceled, other;
    int closed, done_at_close;
    bool close_in_cb;  /* close from the first request callback */
    bool close_on_cas; /* close right after the first CAS reached the backend */
    bool cas_seen;
    ctx_req req[CLOSE_N];
    int result[CLOSE_N];
} close_probe;

static close_probe *probe_now; /* the wrapped backend finds its probe here */
static const ctx_backend *probe_real;
static ctx_backend probe_be;

static void probe_closed(ctx_store *s, void *arg)
{
    close_probe *p = arg;
    p->closed++;
    p->done_at_close = p->done;
}

static void probe_cb(ctx_req *r)
{
    close_probe *p = r->data;
    int i = (int)(r - p->req);
    assert_int_equal(p->result[i], 1); /* not called back yet (1 = pending) */
    p->result[i] = r->result;
    p->done++;
    if (r->result == 0)
        p->ok++;
    else if (r->result == CTX_ECANCELED)
        p->canceled++;
    else {
        print_message("request %d: %d %s\n", i, r->result, r->errmsg);
        p->other++;
    }
    ctx_req_cleanup(r);
    if (p->close_in_cb && p->done == 1) ctx_store_close(p->s, probe_closed, p);
}

/* the backend as it is, except that the first CAS is followed at once by a close */
static void probe_submit(ctx_store *s, ctx_op *op)
{
    probe_real->submit(s, op);
    close_probe *p = probe_now;
    if (p && p->close_on_cas && op->kind == CTX_OP_CAS && !p->cas_seen) {
        p->cas_seen = true;
        ctx_store_close(s, probe_closed, p);
    }
}

static void close_with_appends(fixture *fx, bool close_now, bool in_cb, bool on_cas, bool new_first)
{
    cfg_mcp c = fx_cfg(fx);
    ctx_store *keeper = fx_open(fx, &c); /* Memory data lives while a handle is open */
    ctx_store *s = fx_open(fx, &c);
    close_probe *p = calloc(1, sizeof(*p));
    p->fx = fx;
    p->s = s;
    p->close_in_cb = in_cb;
    p->close_on_cas = on_cas;
    char id[CLOSE_N][16];
    /* half the appends extend an existing conversation, half create one: both LOAD outcomes
     * (File runs one op at a time: the first one is the op in flight when the close comes) */
    for (int i = 0; i < CLOSE_N; i += 2) {
        int o = new_first ? i + 1 : i, n = new_first ? i : i + 1;
        snprintf(id[o], sizeof(id[o]), "old-%d", o);
        assert_int_equal(t_append(fx, s, "acme", id[o], "[{\"role\":\"user\",\"content\":\"0\"}]",
                                  CTX_VERSION_ANY, NULL),
                         0);
        snprintf(id[n], sizeof(id[n]), "new-%d", n);
    }
    if (on_cas) {
        probe_real = s->be;
        probe_be = *s->be;
        probe_be.submit = probe_submit;
        s->be = &probe_be;
        probe_now = p;
    }
    for (int i = 0; i < CLOSE_N; i++) {
        char json[64];
        snprintf(json, sizeof(json), "[{\"role\":\"user\",\"content\":\"m%d\"}]", i);
        json_t *m = msgs(json);
        p->req[i].data = p;
        p->result[i] = 1;
        assert_int_equal(
            ctx_store_append(s, &p->req[i], "acme", id[i], m, CTX_VERSION_ANY, probe_cb), 0);
        json_decref(m);
    }
    if (close_now) ctx_store_close(s, probe_closed, p);
    while (!p->closed)
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    probe_now = NULL;
    assert_int_equal(p->closed, 1);
    assert_int_equal(p->done, CLOSE_N);
    assert_int_equal(p->done_at_close, CLOSE_N); /* all called back before the close callback */
    assert_int_equal(p->other, 0);
    if (on_cas) assert_true(p->cas_seen);
    /* what reported success is stored */
    for (int i = 0; i < CLOSE_N; i++) {
        if (p->result[i] != 0) continue;
        ctx_record *rec;
        assert_int_equal(t_get(fx, keeper, "acme", id[i], &rec), 0);
        json_t *last = json_array_get(rec->messages, json_array_size(rec->messages) - 1);
        char want[16];
        snprintf(want, sizeof(want), "m%d", i);
        assert_string_equal(json_string_value(json_object_get(last, "content")), want);
        ctx_record_free(rec);
    }
    /* a closing store refuses new requests up front (no callback) */
    free(p);
    fx_close(fx, keeper);
}

static void case_close_while_loading(void **state)
{
    close_with_appends(*state, true, false, false, false);
    close_with_appends(*state, true, false, false, true);
}

static void case_close_while_writing(void **state)
{
    close_with_appends(*state, false, false, true, false);
    close_with_appends(*state, false, false, true, true);
}

static void case_close_from_callback(void **state)
{
    close_with_appends(*state, false, true, false, false);
    close_with_appends(*state, false, true, false, true);
}

static const struct CMUnitTest conformance[] = {
    cmocka_unit_test(case_get_missing),
    cmocka_unit_test(case_append_creates),
    cmocka_unit_test(case_expected_version),
    cmocka_unit_test(case_conflict_writes_nothing),
    cmocka_unit_test(case_concurrent_appends),
    cmocka_unit_test(case_delete),
    cmocka_unit_test(case_list_paging),
    cmocka_unit_test(case_tenant_isolation),
    cmocka_unit_test(case_ttl_expiry),
    cmocka_unit_test(case_sliding_ttl),
    cmocka_unit_test(case_evict_lru),
    cmocka_unit_test(case_evict_fifo),
    cmocka_unit_test(case_evict_lifo),
    cmocka_unit_test(case_max_turns),
    cmocka_unit_test(case_encryption),
    cmocka_unit_test(case_text_format),
    cmocka_unit_test(case_schema_upgrade_v0),
    cmocka_unit_test(case_read_only),
    cmocka_unit_test(case_append_to_creates),
    cmocka_unit_test(case_append_to_appends),
    cmocka_unit_test(case_append_to_conflicts),
    cmocka_unit_test(case_append_to_max_turns),
    cmocka_unit_test(case_append_to_encryption),
    cmocka_unit_test(case_close_while_loading),
    cmocka_unit_test(case_close_while_writing),
    cmocka_unit_test(case_close_from_callback),
};

/* ================= backend-specific fault tests ================= */

/* File: an append whose callback ran survives SIGKILL of the process right after it. */
static void child_appended(ctx_req *r)
{
    if (r->result == 0) kill(getpid(), SIGKILL);
    _exit(3);
}

static void file_durability(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        uv_loop_t loop;
        uv_loop_init(&loop);
        ctx_store *s = NULL;
        char err[256];
        if (ctx_store_open(&loop, &c, &s, err, sizeof(err)) != 0) _exit(2);
        static ctx_req r;
        json_t *m = json_loads("[{\"role\":\"user\",\"content\":\"acknowledged turn\"}]", 0, NULL);
        if (ctx_store_append(s, &r, "acme", "durable", m, CTX_VERSION_ANY, child_appended) != 0)
            _exit(2);
        uv_run(&loop, UV_RUN_DEFAULT);
        _exit(4);
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    ctx_store *s = fx_open(fx, &c);
    ctx_record *rec;
    assert_int_equal(t_get(fx, s, "acme", "durable", &rec), 0);
    assert_string_equal(
        json_string_value(json_object_get(json_array_get(rec->messages, 0), "content")),
        "acknowledged turn");
    ctx_record_free(rec);
    fx_close(fx, s);
}

static void pause_done(uv_timer_t *t)
{
    uv_timer_stop(t);
}

static void pause_loop(fixture *fx, int ms)
{
    uv_timer_t t;
    uv_timer_init(&fx->loop, &t);
    uv_timer_start(&t, pause_done, (uint64_t)ms, 0);
    while (uv_is_active((uv_handle_t *)&t))
        uv_run(&fx->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
}

/* Redis / PostgreSQL: the server restarts between operations; the store reconnects. */
static void server_restart(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    assert_int_equal(t_append(fx, s, "acme", "before", "[{\"role\":\"user\",\"content\":\"x\"}]",
                              CTX_VERSION_ANY, NULL),
                     0);
    testsrv_stop(&fx->srv);
    pause_loop(fx, 300); /* let the store notice the connection is gone */
    ctx_req r = {0};
    int rc = SYNC(fx, &r, ctx_store_get(s, &r, "acme", "before", on_req));
    assert_int_equal(rc, CTX_EUNAVAIL); /* server down: a clear, retryable error */
    assert_true(r.errmsg[0] != 0);
    assert_int_equal(testsrv_restart(&fx->srv), 0);
    uint64_t v;
    assert_int_equal(t_append(fx, s, "acme", "after", "[{\"role\":\"user\",\"content\":\"y\"}]",
                              CTX_VERSION_ANY, &v),
                     0);
    assert_int_equal(v, 1);
    /* Redis runs here with persistence off (--save ''), so "before" is gone; PostgreSQL keeps it */
    assert_int_equal(t_get(fx, s, "acme", "before", NULL),
                     fx->type == STORE_REDIS ? CTX_ENOTFOUND : 0);
    fx_close(fx, s);
}

/* Redis: commands the store sent (INFO commandstats: EVAL, EVALSHA, SCRIPT), read over a
 * connection of the test's own */
static redisContext *redis_raw(fixture *fx)
{
    redisContext *rc = redisConnect("127.0.0.1", fx->srv.port);
    assert_non_null(rc);
    assert_int_equal(rc->err, 0);
    freeReplyObject(redisCommand(rc, "AUTH %s", fx->srv.password));
    return rc;
}

static long redis_store_commands(redisContext *rc)
{
    redisReply *r = redisCommand(rc, "INFO commandstats");
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_STRING);
    long total = 0;
    for (const char *line = r->str; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        const char *names[] = {
            "cmdstat_eval:", "cmdstat_evalsha:", "cmdstat_script|load:", "cmdstat_script:"};
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
            if (strncmp(line, names[i], strlen(names[i])) != 0) continue;
            const char *calls = strstr(line, "calls=");
            const char *rejected = strstr(line, "rejected_calls=");
            total += calls ? atol(calls + 6) : 0;
            total += rejected ? atol(rejected + 15) : 0;
        }
    }
    freeReplyObject(r);
    return total;
}

/* get + append_to = 2 round trips (one EVALSHA each); get + append was 3 */
static void redis_round_trips(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    ctx_store *s = fx_open(fx, &c);
    const char *m = "[{\"role\":\"user\",\"content\":\"x\"}]";
    assert_int_equal(t_append_to(fx, s, "acme", "rt", NULL, m, NULL), 0); /* loads the scripts */
    redisContext *raw = redis_raw(fx);
    for (int round = 0; round < 3; round++) {
        long before = redis_store_commands(raw);
        ctx_record *base;
        assert_int_equal(t_get(fx, s, "acme", "rt", &base), 0);
        assert_int_equal(t_append_to(fx, s, "acme", "rt", base, m, NULL), 0);
        ctx_record_free(base);
        assert_int_equal(redis_store_commands(raw) - before, 2);
    }
    /* the read-then-write append, for comparison: its own read is one more */
    long before = redis_store_commands(raw);
    assert_int_equal(t_get(fx, s, "acme", "rt", NULL), 0);
    assert_int_equal(t_append(fx, s, "acme", "rt", m, 4, NULL), 0);
    assert_int_equal(redis_store_commands(raw) - before, 3);
    /* a server that lost its scripts (restart, SCRIPT FLUSH): NOSCRIPT, SCRIPT LOAD, EVALSHA
     * again, and the request succeeds */
    freeReplyObject(redisCommand(raw, "SCRIPT FLUSH"));
    ctx_record *base;
    assert_int_equal(t_get(fx, s, "acme", "rt", &base), 0);
    assert_int_equal(base->version, 5);
    assert_int_equal(t_append_to(fx, s, "acme", "rt", base, m, NULL), 0);
    ctx_record_free(base);
    before = redis_store_commands(raw);
    assert_int_equal(t_get(fx, s, "acme", "rt", &base), 0); /* loaded again: back to one each */
    assert_int_equal(t_append_to(fx, s, "acme", "rt", base, m, NULL), 0);
    assert_int_equal(redis_store_commands(raw) - before, 2);
    assert_int_equal(base->version, 6);
    ctx_record_free(base);
    redisFree(raw);
    fx_close(fx, s);
}

static void redis_refuses_tls(void **state)
{
    fixture *fx = *state;
    cfg_mcp c = fx_cfg(fx);
    c.url = "rediss://127.0.0.1:6380/0";
    ctx_store *s = NULL;
    char err[512];
    assert_int_equal(ctx_store_open(&fx->loop, &c, &s, err, sizeof(err)), CTX_EINVAL);
    assert_non_null(strstr(err, "hiredis 0.14"));
    assert_null(s);
}

/* ================= groups ================= */

static int setup_common(void **state, cfg_store_type type)
{
    fixture *fx = calloc(1, sizeof(*fx));
    fx->type = type;
    uv_loop_init(&fx->loop);
    snprintf(fx->dir, sizeof(fx->dir), "/tmp/ctxgate-file-XXXXXX");
    if (!mkdtemp(fx->dir)) return -1;
    *state = fx;
    if (type == STORE_REDIS && testsrv_redis_start(&fx->srv, "s3cret-pw", 2) != 0) {
        print_error("cannot start redis-server: %s\n", fx->srv.err);
        return -1;
    }
    if (type == STORE_POSTGRESQL && testsrv_postgres_start(&fx->srv) != 0) {
        print_error("cannot start PostgreSQL: %s\n", fx->srv.err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    fixture *fx = *state;
    testsrv_destroy(&fx->srv);
    uv_run(&fx->loop, UV_RUN_NOWAIT);
    uv_loop_close(&fx->loop);
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    if (system(cmd) != 0) print_error("could not remove %s\n", fx->dir);
    free(fx);
    return 0;
}

static int setup_memory(void **state)
{
    return setup_common(state, STORE_MEMORY);
}
static int setup_file(void **state)
{
    return setup_common(state, STORE_FILE);
}
static int setup_redis(void **state)
{
    return setup_common(state, STORE_REDIS);
}
static int setup_postgres(void **state)
{
    return setup_common(state, STORE_POSTGRESQL);
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 ? argv[1] : NULL; /* e.g. `unit_context_test_store redis` */
    int failed = 0;
    if (!only || !strcmp(only, "memory"))
        failed += _cmocka_run_group_tests("memory", conformance,
                                          sizeof(conformance) / sizeof(conformance[0]),
                                          setup_memory, teardown);
    if (!only || !strcmp(only, "file")) {
        failed += _cmocka_run_group_tests("file", conformance,
                                          sizeof(conformance) / sizeof(conformance[0]), setup_file,
                                          teardown);
        const struct CMUnitTest file_faults[] = {cmocka_unit_test(file_durability)};
        failed += cmocka_run_group_tests_name("file faults", file_faults, setup_file, teardown);
    }
    if (!only || !strcmp(only, "redis")) {
        failed += _cmocka_run_group_tests("redis", conformance,
                                          sizeof(conformance) / sizeof(conformance[0]), setup_redis,
                                          teardown);
        const struct CMUnitTest redis_faults[] = {cmocka_unit_test(server_restart),
                                                  cmocka_unit_test(redis_refuses_tls),
                                                  cmocka_unit_test(redis_round_trips)};
        failed += cmocka_run_group_tests_name("redis faults", redis_faults, setup_redis, teardown);
    }
    if (!only || !strcmp(only, "postgresql")) {
        failed += _cmocka_run_group_tests("postgresql", conformance,
                                          sizeof(conformance) / sizeof(conformance[0]),
                                          setup_postgres, teardown);
        const struct CMUnitTest pg_faults[] = {cmocka_unit_test(server_restart)};
        failed +=
            cmocka_run_group_tests_name("postgresql faults", pg_faults, setup_postgres, teardown);
    }
    return failed ? 1 : 0;
}
