/* file.c — the File context backend: one SQLite database (WAL, synchronous=FULL, so an append
 * whose callback ran survives kill -9 and power loss), one connection per handle. SQLite calls
 * block, so each op runs on the uv threadpool (uv_queue_work) and its callback comes back on the
 * loop; a handle runs one op at a time, which keeps the connection single-threaded. Every
 * primitive is one transaction (BEGIN IMMEDIATE), which is what makes CAS atomic across
 * handles and processes sharing the file. LRU / FIFO / LIFO order comes from two monotonic
 * sequence columns (milliseconds tie too often). */
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "context/backend.h"

typedef struct file_db {
    ctx_store *s;
    sqlite3 *db;
    uv_work_t work;
    ctx_op *running;
    ctx_op *head, *tail; /* waiting */
    bool in_done;        /* after_cb is calling op->done: it starts the next op itself */
    void (*close_done)(ctx_store *s);
} file_db;

#define T "conversations"

static const char *const schema_sql =
    "CREATE TABLE IF NOT EXISTS " T " ("
    " tenant TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, turns INTEGER NOT NULL,"
    " created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, accessed_at INTEGER NOT NULL,"
    " created_seq INTEGER NOT NULL, accessed_seq INTEGER NOT NULL, record BLOB NOT NULL,"
    " PRIMARY KEY (tenant, id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS " T "_accessed_at ON " T " (accessed_at);"
    "CREATE INDEX IF NOT EXISTS " T "_accessed_seq ON " T " (accessed_seq);"
    "CREATE INDEX IF NOT EXISTS " T "_created_seq ON " T " (created_seq);";

static int sql_fail(ctx_op *op, sqlite3 *db, const char *path)
{
    ctx_op_set_error(op, CTX_EUNAVAIL, "SQLite context store %s: %s", path, sqlite3_errmsg(db));
    return op->status;
}

static int exec(sqlite3 *db, const char *sql)
{
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static sqlite3_stmt *prep(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) return NULL;
    return st;
}

static void bind_key(sqlite3_stmt *st, ctx_op *op)
{
    sqlite3_bind_text(st, 1, op->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, op->id, -1, SQLITE_STATIC);
}

/* Runs sql (params: tenant, id, then ints) to completion; returns sqlite3_changes or -1. */
static int run(sqlite3 *db, const char *sql, ctx_op *op, int n_ints, const int64_t *ints)
{
    sqlite3_stmt *st = prep(db, sql);
    if (!st) return -1;
    if (op) bind_key(st, op);
    for (int i = 0; i < n_ints; i++)
        sqlite3_bind_int64(st, (op ? 3 : 1) + i, ints[i]);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? sqlite3_changes(db) : -1;
}

static int64_t next_seq(sqlite3 *db, const char *col)
{
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT coalesce(max(%s), 0) + 1 FROM " T, col);
    sqlite3_stmt *st = prep(db, sql);
    int64_t v = 1;
    if (st && sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* inside a transaction: deletes the row when expired; 1 = live row present, 0 = none, -1 err */
static int live_row(sqlite3 *db, ctx_op *op, ctx_row *row)
{
    sqlite3_stmt *st = prep(db, "SELECT version, turns, created_at, updated_at, accessed_at, record"
                                " FROM " T " WHERE tenant = ?1 AND id = ?2");
    if (!st) return -1;
    bind_key(st, op);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_finalize(st);
        return 0;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return -1;
    }
    int64_t accessed = sqlite3_column_int64(st, 4);
    if (op->cutoff && accessed < op->cutoff) {
        sqlite3_finalize(st);
        if (run(db, "DELETE FROM " T " WHERE tenant = ?1 AND id = ?2", op, 0, NULL) < 0) return -1;
        op->expired++;
        return 0;
    }
    if (row) {
        row->version = (uint64_t)sqlite3_column_int64(st, 0);
        row->turns = (uint32_t)sqlite3_column_int64(st, 1);
        row->created_at = sqlite3_column_int64(st, 2);
        row->updated_at = sqlite3_column_int64(st, 3);
        row->accessed_at = accessed;
        row->blob_len = (size_t)sqlite3_column_bytes(st, 5);
        row->blob = malloc(row->blob_len + 1);
        if (!row->blob) abort();
        if (row->blob_len) memcpy(row->blob, sqlite3_column_blob(st, 5), row->blob_len);
    }
    sqlite3_finalize(st);
    return 1;
}

static int do_load(sqlite3 *db, ctx_op *op)
{
    int r = live_row(db, op, &op->row);
    if (r < 0) return -1;
    if (r == 0) {
        op->status = CTX_ENOTFOUND;
        return 0;
    }
    int64_t v[2] = {op->now, next_seq(db, "accessed_seq")};
    return run(db,
               "UPDATE " T " SET accessed_at = ?3, accessed_seq = ?4 WHERE tenant = ?1 AND id = ?2",
               op, 2, v) < 0
               ? -1
               : 0;
}

static int do_cas(ctx_store *s, sqlite3 *db, ctx_op *op)
{
    const ctx_row *in = &op->in;
    int64_t aseq = next_seq(db, "accessed_seq");
    if (op->old_version != 0) {
        sqlite3_stmt *st = prep(db, "UPDATE " T " SET version = ?3, turns = ?4, updated_at = ?5,"
                                    " accessed_at = ?6, accessed_seq = ?7, record = ?8"
                                    " WHERE tenant = ?1 AND id = ?2 AND version = ?9");
        if (!st) return -1;
        bind_key(st, op);
        sqlite3_bind_int64(st, 3, (int64_t)in->version);
        sqlite3_bind_int64(st, 4, in->turns);
        sqlite3_bind_int64(st, 5, in->updated_at);
        sqlite3_bind_int64(st, 6, in->accessed_at);
        sqlite3_bind_int64(st, 7, aseq);
        sqlite3_bind_blob(st, 8, in->blob, (int)in->blob_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 9, (int64_t)op->old_version);
        int rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return -1;
        if (sqlite3_changes(db) == 0) op->status = CTX_ECONFLICT;
        return 0;
    }
    int r = live_row(db, op, NULL);
    if (r < 0) return -1;
    if (r == 1) {
        op->status = CTX_ECONFLICT;
        return 0;
    }
    if (s->max_entries > 0) {
        sqlite3_stmt *st = prep(db, "SELECT count(*) FROM " T);
        int64_t count = st && sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
        sqlite3_finalize(st);
        if (count < 0) return -1;
        if (count >= s->max_entries) {
            const char *order = s->eviction == EVICT_LRU    ? "accessed_seq ASC"
                                : s->eviction == EVICT_FIFO ? "created_seq ASC"
                                                            : "created_seq DESC";
            char sql[256];
            snprintf(sql, sizeof(sql),
                     "DELETE FROM " T " WHERE (tenant, id) IN (SELECT tenant, id FROM " T
                     " ORDER BY %s LIMIT ?1)",
                     order);
            int64_t n = count - s->max_entries + 1;
            int del = run(db, sql, NULL, 1, &n);
            if (del < 0) return -1;
            op->evicted += (uint64_t)del;
        }
    }
    sqlite3_stmt *st =
        prep(db, "INSERT INTO " T " (tenant, id, version, turns, created_at, updated_at,"
                 " accessed_at, created_seq, accessed_seq, record)"
                 " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)");
    if (!st) return -1;
    bind_key(st, op);
    sqlite3_bind_int64(st, 3, (int64_t)in->version);
    sqlite3_bind_int64(st, 4, in->turns);
    sqlite3_bind_int64(st, 5, in->created_at);
    sqlite3_bind_int64(st, 6, in->updated_at);
    sqlite3_bind_int64(st, 7, in->accessed_at);
    sqlite3_bind_int64(st, 8, next_seq(db, "created_seq"));
    sqlite3_bind_int64(st, 9, aseq);
    sqlite3_bind_blob(st, 10, in->blob, (int)in->blob_len, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static int do_list(sqlite3 *db, ctx_op *op)
{
    sqlite3_stmt *st = prep(db, "SELECT id, turns, created_at, updated_at FROM " T
                                " WHERE tenant = ?1 AND id > ?2 AND accessed_at >= ?3"
                                " ORDER BY id LIMIT ?4");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, op->tenant, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, op->cursor ? op->cursor : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, op->cutoff);
    sqlite3_bind_int64(st, 4, (int64_t)op->limit + 1);
    op->items = calloc(op->limit + 1, sizeof(*op->items));
    if (!op->items) abort();
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (op->n_items == op->limit) {
            op->more = true;
            continue;
        }
        ctx_list_item *it = &op->items[op->n_items++];
        it->id = strdup((const char *)sqlite3_column_text(st, 0));
        it->turns = (uint32_t)sqlite3_column_int64(st, 1);
        it->created_at = sqlite3_column_int64(st, 2);
        it->updated_at = sqlite3_column_int64(st, 3);
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

static void work_cb(uv_work_t *w)
{
    file_db *f = w->data;
    ctx_op *op = f->running;
    sqlite3 *db = f->db;
    int64_t cut = op->cutoff;
    int rc;
    if (exec(db, "BEGIN IMMEDIATE") != SQLITE_OK) {
        sql_fail(op, db, f->s->path);
        return;
    }
    switch (op->kind) {
    case CTX_OP_LOAD:
        rc = do_load(db, op);
        break;
    case CTX_OP_CAS:
        rc = do_cas(f->s, db, op);
        break;
    case CTX_OP_REMOVE:
        rc = run(db, "DELETE FROM " T " WHERE tenant = ?1 AND id = ?2", op, 0, NULL);
        if (rc == 0) op->status = CTX_ENOTFOUND;
        rc = rc < 0 ? -1 : 0;
        break;
    case CTX_OP_LIST:
        rc = do_list(db, op);
        break;
    case CTX_OP_COUNT: {
        sqlite3_stmt *st = prep(db, "SELECT count(*) FROM " T " WHERE accessed_at >= ?1");
        rc = -1;
        if (st) {
            sqlite3_bind_int64(st, 1, cut);
            if (sqlite3_step(st) == SQLITE_ROW) {
                op->count = (uint64_t)sqlite3_column_int64(st, 0);
                rc = 0;
            }
        }
        sqlite3_finalize(st);
        break;
    }
    case CTX_OP_EXPIRE:
        rc = cut ? run(db, "DELETE FROM " T " WHERE accessed_at < ?1", NULL, 1, &cut) : 0;
        if (rc >= 0) op->count = (uint64_t)rc;
        rc = rc < 0 ? -1 : 0;
        break;
    default:
        rc = -1;
    }
    if (rc < 0) {
        sql_fail(op, db, f->s->path);
        exec(db, "ROLLBACK");
        return;
    }
    if (op->status == CTX_ECONFLICT) {
        exec(db, "ROLLBACK");
        op->expired = 0;
        return;
    }
    if (exec(db, "COMMIT") != SQLITE_OK) {
        sql_fail(op, db, f->s->path);
        exec(db, "ROLLBACK");
    }
}

static void start_next(file_db *f);

/* op->done may submit the request's next op or close the store (from the caller's callback);
 * either way start_next must not run (and perhaps free f) before op->done has returned, so
 * in_done holds it off and the one call after op->done decides: next op, or close. */
static void after_cb(uv_work_t *w, int status)
{
    file_db *f = w->data;
    ctx_op *op = f->running;
    f->running = NULL;
    if (status == UV_ECANCELED) ctx_op_set_error(op, CTX_ECANCELED, "canceled");
    f->in_done = true;
    op->done(op);
    f->in_done = false;
    start_next(f);
}

static void start_next(file_db *f)
{
    if (f->running || f->in_done) return;
    if (f->close_done) {
        sqlite3_close(f->db);
        void (*done)(ctx_store *) = f->close_done;
        ctx_store *s = f->s;
        free(f);
        s->impl = NULL;
        done(s);
        return;
    }
    ctx_op *op = f->head;
    if (!op) return;
    f->head = op->next;
    if (!f->head) f->tail = NULL;
    op->next = NULL;
    f->running = op;
    f->work.data = f;
    uv_queue_work(f->s->loop, &f->work, work_cb, after_cb);
}

static void file_submit(ctx_store *s, ctx_op *op)
{
    file_db *f = s->impl;
    if (f->close_done) { /* store.c submits nothing while closing; never drop one anyway */
        ctx_op_set_error(op, CTX_ECANCELED, "canceled");
        ctx_op_defer(s, op);
        return;
    }
    op->next = NULL;
    if (f->tail)
        f->tail->next = op;
    else
        f->head = op;
    f->tail = op;
    start_next(f);
}

static int file_open(ctx_store *s, char *err, size_t errlen)
{
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(
        s->path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    const char *step = "open";
    if (rc == SQLITE_OK) {
        sqlite3_busy_timeout(db, 5000);
        step = "enable WAL on";
        sqlite3_stmt *st = prep(db, "PRAGMA journal_mode=WAL");
        rc = st && sqlite3_step(st) == SQLITE_ROW &&
                     strcmp((const char *)sqlite3_column_text(st, 0), "wal") == 0
                 ? SQLITE_OK
                 : SQLITE_ERROR;
        sqlite3_finalize(st);
    }
    if (rc == SQLITE_OK) {
        step = "configure";
        rc = exec(db, "PRAGMA synchronous=FULL");
    }
    if (rc == SQLITE_OK) {
        step = "create the schema in";
        rc = exec(db, schema_sql);
    }
    if (rc != SQLITE_OK) {
        snprintf(err, errlen,
                 "cannot %s the File context store %s: %s (check spec.storage.config.path and "
                 "that the directory exists and is writable)",
                 step, s->path, db ? sqlite3_errmsg(db) : "out of memory");
        sqlite3_close(db);
        return CTX_EUNAVAIL;
    }
    file_db *f = calloc(1, sizeof(*f));
    if (!f) abort();
    f->s = s;
    f->db = db;
    s->impl = f;
    return 0;
}

static void file_close(ctx_store *s, void (*done)(ctx_store *s))
{
    file_db *f = s->impl;
    ctx_op *op = f->head;
    f->head = f->tail = NULL;
    f->close_done = done;
    while (op) { /* queued, never started: nothing was written */
        ctx_op *next = op->next;
        ctx_op_set_error(op, CTX_ECANCELED, "canceled");
        ctx_op_defer(s, op);
        op = next;
    }
    start_next(f); /* closes now, or once the running op came back and its done returned */
}

const ctx_backend ctx_backend_file = {"file", file_open, file_submit, file_close, false};
