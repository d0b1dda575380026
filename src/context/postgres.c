/* postgres.c — the PostgreSQL context backend: libpq's asynchronous API on the worker's loop
 * (PQconnectStartParams / PQconnectPoll, PQsendQueryParams, a uv_poll on PQsocket), one
 * connection per handle running one statement at a time from a queue of pending operations.
 * Each primitive is a single statement, which is what makes it atomic: CAS is
 * UPDATE ... WHERE version = $n, or INSERT ... ON CONFLICT DO UPDATE ... WHERE <row expired>
 * (so a create never overwrites a live conversation); eviction by maxEntries runs as one DELETE
 * right after an insert. Table <keyPrefix>conversations (sanitized) and its sequence are created
 * when absent. When the server goes away the running op fails with CTX_EUNAVAIL and the
 * connection is re-established with backoff; queued ops wait for the next attempt. A server that
 * keeps the connection open but answers nothing (stopped, partitioned) counts as gone after
 * REPLY_TIMEOUT_MS without an answer to a connect attempt or a statement (libpq's
 * connect_timeout does not apply to PQconnectPoll). */
#include <arpa/inet.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/backend.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define REPLY_TIMEOUT_MS 10000 /* connecting or a statement in flight, no answer: server hangs */

typedef enum { PG_DOWN, PG_CONNECTING, PG_SETUP, PG_READY } pg_state;

typedef struct pg_poll {
    uv_poll_t h;
    struct pg_conn *c;
} pg_poll;

typedef struct pg_conn {
    ctx_store *s;
    char table[96]; /* quoted identifier */
    char seq[96];   /* its sequence, quoted */
    char index_prefix[96];
    PGconn *conn;
    pg_poll *poll;
    int poll_fd;
    pg_state state;
    uv_timer_t timer;
    uv_timer_t reply_timer; /* REPLY_TIMEOUT_MS from a connect attempt or a statement sent */
    int open_timers;        /* pg_close frees the connection once both timers are closed */
    int backoff_ms;
    int setup_tries;
    ctx_op *head, *tail; /* waiting */
    ctx_op *running;
    int step;         /* statement index within the running op */
    PGresult *result; /* last result of the statement in flight */
    char last_err[256];
    void (*close_done)(ctx_store *s);
} pg_conn;

static void conn_start(pg_conn *c);
static void run_next(pg_conn *c);
static void poll_cb(uv_poll_t *h, int status, int events);

/* ---- poll handle (the socket can change while connecting) ---- */

static void poll_closed(uv_handle_t *h)
{
    free(h->data);
}

static void poll_drop(pg_conn *c)
{
    if (c->poll) {
        c->poll->c = NULL;
        uv_poll_stop(&c->poll->h);
        uv_close((uv_handle_t *)&c->poll->h, poll_closed);
        c->poll = NULL;
    }
    c->poll_fd = -1;
}

static void poll_want(pg_conn *c, int events)
{
    int fd = PQsocket(c->conn);
    if (fd != c->poll_fd) poll_drop(c);
    if (!c->poll) {
        pg_poll *p = calloc(1, sizeof(*p));
        if (!p) abort();
        p->c = c;
        p->h.data = p;
        if (uv_poll_init(c->s->loop, &p->h, fd) != 0) {
            free(p);
            return;
        }
        c->poll = p;
        c->poll_fd = fd;
    }
    uv_poll_start(&c->poll->h, events, poll_cb);
}

/* ---- failure and reconnect ---- */

static void fail_waiting(pg_conn *c, int status, const char *why)
{
    ctx_op *op = c->head;
    c->head = c->tail = NULL;
    while (op) {
        ctx_op *next = op->next;
        op->next = NULL;
        if (status == CTX_ECANCELED)
            ctx_op_set_error(op, status, "canceled");
        else
            ctx_op_set_error(op, status,
                             "PostgreSQL context store is unavailable: %s; the store reconnects "
                             "with backoff",
                             why);
        ctx_op_defer(c->s, op);
        op = next;
    }
}

static void reconnect_cb(uv_timer_t *t)
{
    pg_conn *c = t->data;
    if (c->state == PG_DOWN) conn_start(c);
}

static void conn_lost(pg_conn *c, const char *why);

static void reply_timeout_cb(uv_timer_t *t)
{
    pg_conn *c = t->data;
    if (c->state == PG_DOWN || (c->state == PG_READY && !c->running)) return;
    char why[64];
    snprintf(why, sizeof(why), "no reply within %d ms", REPLY_TIMEOUT_MS);
    conn_lost(c, why);
}

/* The server owes an answer from now on (a connect attempt, a statement): it has
 * REPLY_TIMEOUT_MS. */
static void await_reply(pg_conn *c)
{
    uv_timer_start(&c->reply_timer, reply_timeout_cb, REPLY_TIMEOUT_MS, 0);
}

static void conn_lost(pg_conn *c, const char *why)
{
    uv_timer_stop(&c->reply_timer);
    snprintf(c->last_err, sizeof(c->last_err), "%s", why);
    char *nl = strchr(c->last_err, '\n');
    if (nl) *nl = 0;
    poll_drop(c);
    PQclear(c->result);
    c->result = NULL;
    if (c->conn) PQfinish(c->conn);
    c->conn = NULL;
    bool was_connecting = c->state == PG_CONNECTING || c->state == PG_SETUP;
    c->state = PG_DOWN;
    if (c->running) {
        ctx_op *op = c->running;
        c->running = NULL;
        ctx_op_set_error(op, CTX_EUNAVAIL,
                         "lost the connection to the PostgreSQL context store (%s); retry",
                         c->last_err);
        ctx_op_defer(c->s, op);
    }
    if (was_connecting) fail_waiting(c, CTX_EUNAVAIL, c->last_err);
    if (c->close_done) return;
    uv_timer_start(&c->timer, reconnect_cb, (uint64_t)c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* ---- statements ---- */

typedef struct pg_params {
    int n;
    const char *v[12];
    int len[12];
    int fmt[12];
    char num[12][24];
} pg_params;

static void p_str(pg_params *p, const char *s)
{
    p->v[p->n] = s;
    p->len[p->n] = 0;
    p->fmt[p->n++] = 0;
}

static void p_int(pg_params *p, long long v)
{
    snprintf(p->num[p->n], sizeof(p->num[0]), "%lld", v);
    p_str(p, p->num[p->n]);
}

static void p_bin(pg_params *p, const void *d, size_t n)
{
    p->v[p->n] = d;
    p->len[p->n] = (int)n;
    p->fmt[p->n++] = 1;
}

static int send_sql(pg_conn *c, const char *sql, const pg_params *p)
{
    if (!PQsendQueryParams(c->conn, sql, p->n, NULL, p->v, p->len, p->fmt, 1)) return -1;
    int f = PQflush(c->conn);
    if (f < 0) return -1;
    poll_want(c, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    await_reply(c);
    return 0;
}

/* Sends statement `c->step` of the running op; returns 1 when the op has no such step. */
static int send_step(pg_conn *c)
{
    ctx_op *op = c->running;
    ctx_store *s = c->s;
    pg_params p = {0};
    char sql[1024];
    const char *T = c->table, *S = c->seq;
    if (op->kind == CTX_OP_CAS && c->step == 1) {
        if (s->max_entries <= 0) return 1;
        const char *order = s->eviction == EVICT_LRU    ? "accessed_seq ASC"
                            : s->eviction == EVICT_FIFO ? "created_seq ASC"
                                                        : "created_seq DESC";
        snprintf(sql, sizeof(sql),
                 "DELETE FROM %s WHERE (tenant, id) IN (SELECT tenant, id FROM %s"
                 " WHERE NOT (tenant = $1 AND id = $2) ORDER BY %s"
                 " LIMIT GREATEST(0, (SELECT count(*) FROM %s) - $3))",
                 T, T, order, T);
        p_str(&p, op->tenant);
        p_str(&p, op->id);
        p_int(&p, s->max_entries);
        return send_sql(c, sql, &p);
    }
    if (c->step > 0) return 1;
    switch (op->kind) {
    case CTX_OP_LOAD:
        snprintf(sql, sizeof(sql),
                 "UPDATE %s SET accessed_at = $3, accessed_seq = nextval('%s') WHERE tenant = $1"
                 " AND id = $2 AND accessed_at >= $4 RETURNING version, turns, created_at,"
                 " updated_at, accessed_at, record",
                 T, S);
        p_str(&p, op->tenant);
        p_str(&p, op->id);
        p_int(&p, op->now);
        p_int(&p, op->cutoff);
        break;
    case CTX_OP_CAS:
        p_str(&p, op->tenant);
        p_str(&p, op->id);
        p_int(&p, (long long)op->in.version);
        p_int(&p, op->in.turns);
        p_int(&p, op->in.updated_at);
        p_int(&p, op->in.accessed_at);
        p_bin(&p, op->in.blob, op->in.blob_len);
        if (op->old_version) {
            snprintf(sql, sizeof(sql),
                     "UPDATE %s SET version = $3, turns = $4, updated_at = $5, accessed_at = $6,"
                     " accessed_seq = nextval('%s'), record = $7 WHERE tenant = $1 AND id = $2"
                     " AND version = $8 RETURNING 0",
                     T, S);
            p_int(&p, (long long)op->old_version);
        } else {
            /* replaces a row only when it has expired: a live conversation is a conflict */
            snprintf(sql, sizeof(sql),
                     "INSERT INTO %s AS t (tenant, id, version, turns, updated_at, accessed_at,"
                     " record, created_at, created_seq, accessed_seq) VALUES ($1, $2, $3, $4, $5,"
                     " $6, $7, $8, nextval('%s'), nextval('%s')) ON CONFLICT (tenant, id) DO UPDATE"
                     " SET version = EXCLUDED.version, turns = EXCLUDED.turns, created_at ="
                     " EXCLUDED.created_at, updated_at = EXCLUDED.updated_at, accessed_at ="
                     " EXCLUDED.accessed_at, created_seq = EXCLUDED.created_seq, accessed_seq ="
                     " EXCLUDED.accessed_seq, record = EXCLUDED.record WHERE t.accessed_at < $9"
                     " RETURNING (t.xmax::text <> '0')::int4",
                     T, S, S);
            p_int(&p, op->in.created_at);
            p_int(&p, op->cutoff);
        }
        break;
    case CTX_OP_REMOVE:
        snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE tenant = $1 AND id = $2", T);
        p_str(&p, op->tenant);
        p_str(&p, op->id);
        break;
    case CTX_OP_LIST:
        snprintf(sql, sizeof(sql),
                 "SELECT id, turns, created_at, updated_at FROM %s WHERE tenant = $1 AND id > $2"
                 " AND accessed_at >= $3 ORDER BY id LIMIT $4",
                 T);
        p_str(&p, op->tenant);
        p_str(&p, op->cursor ? op->cursor : "");
        p_int(&p, op->cutoff);
        p_int(&p, (long long)op->limit + 1);
        break;
    case CTX_OP_COUNT:
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s WHERE accessed_at >= $1", T);
        p_int(&p, op->cutoff);
        break;
    case CTX_OP_EXPIRE:
        snprintf(sql, sizeof(sql), "DELETE FROM %s WHERE accessed_at < $1", T);
        p_int(&p, op->cutoff);
        break;
    }
    return send_sql(c, sql, &p);
}

static int64_t get_int(const PGresult *r, int row, int col)
{
    const unsigned char *v = (const unsigned char *)PQgetvalue(r, row, col);
    int len = PQgetlength(r, row, col);
    int64_t x = 0;
    for (int i = 0; i < len && i < 8; i++)
        x = (int64_t)(((uint64_t)x << 8) | v[i]);
    if (len == 4) x = (int32_t)(uint32_t)x;
    return x;
}

static uint64_t cmd_tuples(const PGresult *r)
{
    return strtoull(PQcmdTuples((PGresult *)r), NULL, 10);
}

/* Reads the finished statement's result into the running op; returns 1 if the op is done. */
static int take_result(pg_conn *c, const PGresult *r)
{
    ctx_op *op = c->running;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        ctx_op_set_error(op, CTX_EUNAVAIL, "PostgreSQL context store: %s",
                         r ? PQresultErrorMessage(r) : PQerrorMessage(c->conn));
        char *nl = strchr(op->errmsg, '\n');
        if (nl) *nl = 0;
        return 1;
    }
    if (op->kind == CTX_OP_CAS && c->step == 1) {
        op->evicted = cmd_tuples(r);
        return 1;
    }
    int n = PQntuples(r);
    switch (op->kind) {
    case CTX_OP_LOAD:
        if (n == 0) {
            op->status = CTX_ENOTFOUND;
            return 1;
        }
        op->row.version = (uint64_t)get_int(r, 0, 0);
        op->row.turns = (uint32_t)get_int(r, 0, 1);
        op->row.created_at = get_int(r, 0, 2);
        op->row.updated_at = get_int(r, 0, 3);
        op->row.accessed_at = get_int(r, 0, 4);
        op->row.blob_len = (size_t)PQgetlength(r, 0, 5);
        op->row.blob = malloc(op->row.blob_len + 1);
        if (!op->row.blob) abort();
        memcpy(op->row.blob, PQgetvalue(r, 0, 5), op->row.blob_len);
        return 1;
    case CTX_OP_CAS:
        if (n == 0) {
            op->status = CTX_ECONFLICT;
            return 1;
        }
        if (op->old_version == 0) {
            op->expired += get_int(r, 0, 0) != 0; /* replaced an expired row */
            c->step = 1;
            return 0;
        }
        return 1;
    case CTX_OP_REMOVE:
        if (cmd_tuples(r) == 0) op->status = CTX_ENOTFOUND;
        return 1;
    case CTX_OP_LIST:
        op->items = calloc((size_t)n + 1, sizeof(*op->items));
        if (!op->items) abort();
        for (int i = 0; i < n; i++) {
            if ((size_t)i == op->limit) {
                op->more = true;
                break;
            }
            ctx_list_item *it = &op->items[op->n_items++];
            it->id = strndup(PQgetvalue(r, i, 0), (size_t)PQgetlength(r, i, 0));
            it->turns = (uint32_t)get_int(r, i, 1);
            it->created_at = get_int(r, i, 2);
            it->updated_at = get_int(r, i, 3);
        }
        return 1;
    case CTX_OP_COUNT:
        op->count = n ? (uint64_t)get_int(r, 0, 0) : 0;
        return 1;
    case CTX_OP_EXPIRE:
        op->count = cmd_tuples(r);
        return 1;
    }
    return 1;
}

static void send_setup(pg_conn *c)
{
    char sql[2048];
    snprintf(sql, sizeof(sql),
             "CREATE SEQUENCE IF NOT EXISTS %s;"
             "CREATE TABLE IF NOT EXISTS %s (tenant text COLLATE \"C\" NOT NULL, id text COLLATE"
             " \"C\" NOT NULL, version bigint NOT NULL, turns integer NOT NULL, created_at bigint"
             " NOT NULL, updated_at bigint NOT NULL, accessed_at bigint NOT NULL, created_seq"
             " bigint NOT NULL, accessed_seq bigint NOT NULL, record bytea NOT NULL,"
             " PRIMARY KEY (tenant, id));"
             "CREATE INDEX IF NOT EXISTS \"%s_accessed_at\" ON %s (accessed_at);"
             "CREATE INDEX IF NOT EXISTS \"%s_accessed_seq\" ON %s (accessed_seq);"
             "CREATE INDEX IF NOT EXISTS \"%s_created_seq\" ON %s (created_seq);",
             c->seq, c->table, c->index_prefix, c->table, c->index_prefix, c->table,
             c->index_prefix, c->table);
    c->state = PG_SETUP;
    if (!PQsendQuery(c->conn, sql)) {
        conn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    int f = PQflush(c->conn);
    poll_want(c, f == 1 ? UV_READABLE | UV_WRITABLE : UV_READABLE);
    await_reply(c);
}

/* All results of the statement in flight have arrived. */
static void statement_done(pg_conn *c)
{
    PGresult *r = c->result;
    c->result = NULL;
    if (c->state == PG_SETUP) {
        ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
        if (st != PGRES_COMMAND_OK) {
            /* two connections creating the table at once: the loser retries */
            const char *code = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
            bool race = code && (!strcmp(code, "23505") || !strcmp(code, "42P07"));
            snprintf(c->last_err, sizeof(c->last_err), "cannot create table %s: %s", c->table,
                     r ? PQresultErrorMessage(r) : "no result");
            PQclear(r);
            if (race && ++c->setup_tries < 5) {
                send_setup(c);
                return;
            }
            conn_lost(c, c->last_err);
            return;
        }
        PQclear(r);
        c->state = PG_READY;
        c->backoff_ms = BACKOFF_MIN_MS;
        run_next(c);
        return;
    }
    ctx_op *op = c->running;
    if (!op) {
        PQclear(r);
        return;
    }
    int fin = take_result(c, r);
    PQclear(r);
    if (!fin && send_step(c) == 0) return;
    c->running = NULL;
    op->done(op);
    run_next(c);
}

static void run_next(pg_conn *c)
{
    while (c->state == PG_READY && !c->running && c->head) {
        ctx_op *op = c->head;
        c->head = op->next;
        if (!c->head) c->tail = NULL;
        op->next = NULL;
        if (op->kind == CTX_OP_EXPIRE && op->cutoff == 0) { /* no TTL: nothing to sweep */
            ctx_op_defer(c->s, op);
            continue;
        }
        c->running = op;
        c->step = 0;
        if (send_step(c) != 0) {
            conn_lost(c, PQerrorMessage(c->conn));
            return;
        }
    }
    if (c->state == PG_READY && !c->running) {
        uv_timer_stop(&c->reply_timer); /* idle: the server owes nothing */
        poll_want(c, UV_READABLE);      /* notice the server going away while idle */
    }
}

static void poll_cb(uv_poll_t *h, int status, int events)
{
    pg_poll *p = h->data;
    pg_conn *c = p->c;
    if (!c) return;
    if (c->state == PG_CONNECTING) {
        PostgresPollingStatusType ps = PQconnectPoll(c->conn);
        if (ps == PGRES_POLLING_FAILED)
            conn_lost(c, PQerrorMessage(c->conn));
        else if (ps == PGRES_POLLING_OK) {
            PQsetnonblocking(c->conn, 1);
            send_setup(c);
        } else
            poll_want(c, ps == PGRES_POLLING_READING ? UV_READABLE : UV_WRITABLE);
        return;
    }
    if (status < 0) {
        conn_lost(c, uv_strerror(status));
        return;
    }
    if (events & UV_WRITABLE) {
        int f = PQflush(c->conn);
        if (f < 0) {
            conn_lost(c, PQerrorMessage(c->conn));
            return;
        }
        if (f == 0) poll_want(c, UV_READABLE);
    }
    if (!(events & UV_READABLE)) return;
    if (!PQconsumeInput(c->conn) || PQstatus(c->conn) == CONNECTION_BAD) {
        conn_lost(c, PQerrorMessage(c->conn));
        return;
    }
    while (!PQisBusy(c->conn)) {
        PGresult *r = PQgetResult(c->conn);
        if (!r) {
            if (c->running || c->state == PG_SETUP) statement_done(c);
            return;
        }
        if (c->result && PQresultStatus(c->result) == PGRES_FATAL_ERROR)
            PQclear(r); /* keep the first error */
        else {
            PQclear(c->result);
            c->result = r;
        }
    }
}

static void conn_start(pg_conn *c)
{
    const char *keys[] = {"dbname", "password", "connect_timeout", "application_name", NULL};
    const char *vals[] = {c->s->dsn, c->s->password, "5", "ctxgate", NULL};
    if (!c->s->password) { /* keep the DSN's own password, if any */
        keys[1] = "connect_timeout";
        vals[1] = "5";
        keys[2] = "application_name";
        vals[2] = "ctxgate";
        keys[3] = NULL;
        vals[3] = NULL;
    }
    c->setup_tries = 0;
    c->conn = PQconnectStartParams(keys, vals, 1);
    if (!c->conn || PQstatus(c->conn) == CONNECTION_BAD) {
        c->state = PG_CONNECTING;
        conn_lost(c, c->conn ? PQerrorMessage(c->conn) : "out of memory");
        return;
    }
    c->state = PG_CONNECTING;
    poll_want(c, UV_WRITABLE);
    await_reply(c);
}

static void pg_submit(ctx_store *s, ctx_op *op)
{
    pg_conn *c = s->impl;
    op->next = NULL;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    if (c->state == PG_DOWN) { /* waiting out a backoff: try now, there is demand */
        uv_timer_stop(&c->timer);
        conn_start(c);
        return;
    }
    run_next(c);
}

static int pg_open(ctx_store *s, char *err, size_t errlen)
{
    pg_conn *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->s = s;
    char name[64];
    size_t n = 0;
    for (const char *p = s->key_prefix; *p && n < 40; p++)
        name[n++] = isalnum((unsigned char)*p) ? (char)tolower((unsigned char)*p) : '_';
    name[n] = 0;
    if (n && isdigit((unsigned char)name[0])) memmove(name + 1, name, ++n), name[0] = 't';
    snprintf(c->table, sizeof(c->table), "\"%sconversations\"", name);
    snprintf(c->seq, sizeof(c->seq), "\"%sconversations_seq\"", name);
    snprintf(c->index_prefix, sizeof(c->index_prefix), "%sconversations", name);
    c->poll_fd = -1;
    c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(s->loop, &c->reply_timer);
    c->reply_timer.data = c;
    s->impl = c;
    (void)err;
    (void)errlen;
    conn_start(c);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    pg_conn *c = h->data;
    if (--c->open_timers > 0) return;
    ctx_store *s = c->s;
    void (*done)(ctx_store *) = c->close_done;
    free(c);
    s->impl = NULL;
    done(s);
}

static void pg_close(ctx_store *s, void (*done)(ctx_store *s))
{
    pg_conn *c = s->impl;
    c->close_done = done;
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->reply_timer);
    fail_waiting(c, CTX_ECANCELED, "closed");
    if (c->running) {
        ctx_op *op = c->running;
        c->running = NULL;
        ctx_op_set_error(op, CTX_ECANCELED, "canceled");
        ctx_op_defer(s, op);
    }
    poll_drop(c);
    PQclear(c->result);
    c->result = NULL;
    if (c->conn) PQfinish(c->conn);
    c->conn = NULL;
    c->state = PG_DOWN;
    c->open_timers = 2;
    uv_close((uv_handle_t *)&c->timer, timer_closed);
    uv_close((uv_handle_t *)&c->reply_timer, timer_closed);
}

const ctx_backend ctx_backend_postgres = {"postgresql", pg_open, pg_submit, pg_close, false};
