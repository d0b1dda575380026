/* redis.c — the Redis context backend: hiredis 0.14's async API on the worker's libuv loop
 * (our own libuv glue, see conn_start), one connection per handle, every primitive one Lua script,
 * so compare-and-set, eviction and index upkeep are atomic on the server. Scripts are called by
 * their SHA1 (EVALSHA: one short command, one round trip); a server that does not have one
 * (NOSCRIPT: restarted, SCRIPT FLUSH) gets SCRIPT LOAD and the EVALSHA again, pipelined.
 *
 * Layout under keyPrefix P (tenants cannot contain ':', so no key below collides with a
 * conversation key):
 *   P<tenant>:<id>      hash {v version, t turns, c created, u updated, a accessed, b record}
 *                       with a native PEXPIRE of ttlSeconds refreshed on every read and write
 *   P:access, P:created sorted sets of "<tenant>:<id>" by a server-side sequence (LRU, FIFO/LIFO)
 *   P:expiry            sorted set by last access time: index entries of natively expired keys
 *                       are dropped from it by the expire sweep (and before evicting, counting
 *                       and listing)
 *   P:list:<tenant>     sorted set of ids (score 0): lexicographic, stable listing pages
 *   P:seq               the sequence
 * The connection is re-established with backoff when the server goes away; operations issued
 * meanwhile wait for the next connect attempt and fail with CTX_EUNAVAIL if it fails. A server
 * that keeps the connection open but answers nothing (stopped, partitioned) is given up on after
 * REPLY_TIMEOUT_MS without any reply while commands are outstanding: the connection is dropped,
 * its operations fail with CTX_EUNAVAIL, and it is re-established like a lost one. */
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/backend.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
#define CONNECT_TIMEOUT_MS 3000
#define REPLY_TIMEOUT_MS 5000 /* commands outstanding and no reply this long: the server hangs */

/* shared by every script: drop one index member (and its key); purge expired members */
#define LUA_PRELUDE                                                                                \
    "local P = ARGV[1]\n"                                                                          \
    "local function drop(m)\n"                                                                     \
    "  local sep = string.find(m, ':', 1, true)\n"                                                 \
    "  local n = redis.call('DEL', P .. m)\n"                                                      \
    "  redis.call('ZREM', P .. ':access', m)\n"                                                    \
    "  redis.call('ZREM', P .. ':created', m)\n"                                                   \
    "  redis.call('ZREM', P .. ':expiry', m)\n"                                                    \
    "  if sep then redis.call('ZREM', P .. ':list:' .. string.sub(m, 1, sep - 1),"                 \
    " string.sub(m, sep + 1)) end\n"                                                               \
    "  return n\n"                                                                                 \
    "end\n"                                                                                        \
    "local function purge(cutoff)\n"                                                               \
    "  if tonumber(cutoff) <= 0 then return 0 end\n"                                               \
    "  local n = 0\n"                                                                              \
    "  for _, m in ipairs(redis.call('ZRANGEBYSCORE', P .. ':expiry', '-inf', '(' .. cutoff)) "    \
    "do\n"                                                                                         \
    "    if redis.call('EXISTS', P .. m) == 0 then drop(m); n = n + 1 end\n"                       \
    "  end\n"                                                                                      \
    "  return n\n"                                                                                 \
    "end\n"

/* ARGV: P tenant id now ttl_ms -> nil | {v, t, c, u, a, b} */
static const char lua_load[] =
    LUA_PRELUDE "local m = ARGV[2] .. ':' .. ARGV[3]\n"
                "local k = P .. m\n"
                "local h = redis.call('HMGET', k, 'v', 't', 'c', 'u', 'a', 'b')\n"
                "if not h[1] then return nil end\n"
                "redis.call('HSET', k, 'a', ARGV[4])\n"
                "redis.call('ZADD', P .. ':access', redis.call('INCR', P .. ':seq'), m)\n"
                "if tonumber(ARGV[5]) > 0 then\n"
                "  redis.call('PEXPIRE', k, ARGV[5])\n"
                "  redis.call('ZADD', P .. ':expiry', ARGV[4], m)\n"
                "end\n"
                "return h\n";

/* ARGV: P tenant id old new turns created updated now ttl_ms cutoff max policy blob
 * -> {written 0|1, evicted, expired} */
static const char lua_cas[] = LUA_PRELUDE
    "local m = ARGV[2] .. ':' .. ARGV[3]\n"
    "local k = P .. m\n"
    "local cur = redis.call('HGET', k, 'v')\n"
    "local evicted, expired = 0, 0\n"
    "if ARGV[4] == '0' then\n"
    "  if cur then return {0, 0, 0} end\n"
    "  expired = purge(ARGV[11])\n"
    "  local max = tonumber(ARGV[12])\n"
    "  while max > 0 and redis.call('ZCARD', P .. ':created') >= max do\n"
    "    local v\n"
    "    if ARGV[13] == 'LRU' then v = redis.call('ZRANGE', P .. ':access', 0, 0)[1]\n"
    "    elseif ARGV[13] == 'FIFO' then v = redis.call('ZRANGE', P .. ':created', 0, 0)[1]\n"
    "    else v = redis.call('ZRANGE', P .. ':created', -1, -1)[1] end\n"
    "    if not v then break end\n"
    "    if drop(v) == 1 then evicted = evicted + 1 end\n"
    "  end\n"
    "  redis.call('ZADD', P .. ':created', redis.call('INCR', P .. ':seq'), m)\n"
    "  redis.call('ZADD', P .. ':list:' .. ARGV[2], 0, ARGV[3])\n"
    "elseif cur ~= ARGV[4] then\n"
    "  return {0, 0, 0}\n"
    "end\n"
    "redis.call('HSET', k, 'v', ARGV[5], 't', ARGV[6], 'c', ARGV[7], 'u', ARGV[8], 'a', ARGV[9],"
    " 'b', ARGV[14])\n"
    "redis.call('ZADD', P .. ':access', redis.call('INCR', P .. ':seq'), m)\n"
    "if tonumber(ARGV[10]) > 0 then\n"
    "  redis.call('PEXPIRE', k, ARGV[10])\n"
    "  redis.call('ZADD', P .. ':expiry', ARGV[9], m)\n"
    "end\n"
    "return {1, evicted, expired}\n";

/* ARGV: P tenant id -> 1 | 0 */
static const char lua_remove[] = LUA_PRELUDE "return drop(ARGV[2] .. ':' .. ARGV[3])\n";

/* ARGV: P tenant cursor limit cutoff -> {more, expired, id, t, c, u, id, t, c, u, ...} */
static const char lua_list[] = LUA_PRELUDE
    "local expired = purge(ARGV[5])\n"
    "local from = ARGV[3] == '' and '-' or '(' .. ARGV[3]\n"
    "local limit = tonumber(ARGV[4])\n"
    "local ids = redis.call('ZRANGEBYLEX', P .. ':list:' .. ARGV[2], from, '+', 'LIMIT', 0,"
    " limit + 1)\n"
    "local out = {#ids > limit and 1 or 0, expired}\n"
    "for i = 1, math.min(#ids, limit) do\n"
    "  local h = redis.call('HMGET', P .. ARGV[2] .. ':' .. ids[i], 't', 'c', 'u')\n"
    "  if h[1] then\n"
    "    table.insert(out, ids[i]); table.insert(out, h[1]); table.insert(out, h[2]);"
    " table.insert(out, h[3])\n"
    "  else drop(ARGV[2] .. ':' .. ids[i]) end\n"
    "end\n"
    "return out\n";

/* ARGV: P cutoff -> {count, expired} */
static const char lua_count[] =
    LUA_PRELUDE "local expired = purge(ARGV[2])\n"
                "return {redis.call('ZCARD', P .. ':created'), expired}\n";

/* ARGV: P cutoff -> expired */
static const char lua_expire[] = LUA_PRELUDE "return purge(ARGV[2])\n";

/* indexed by ctx_op_kind */
static const char *const scripts[] = {lua_load, lua_cas,   lua_remove,
                                      lua_list, lua_count, lua_expire};
#define N_SCRIPTS (sizeof(scripts) / sizeof(scripts[0]))

typedef struct redis_conn {
    ctx_store *s;
    char *host;
    int port, db;
    char *user, *pass;
    redisAsyncContext *ac; /* NULL while disconnected */
    bool connected;
    uv_timer_t timer;       /* reconnect backoff, or connect timeout while connecting */
    uv_timer_t reply_timer; /* REPLY_TIMEOUT_MS since the last reply, while outstanding > 0 */
    unsigned outstanding;   /* operations sent on ac and not answered yet */
    int open_timers;        /* redis_close frees the connection once both timers are closed */
    int backoff_ms;
    ctx_op *head, *tail; /* waiting for a connection */
    char last_err[200];
    char sha[N_SCRIPTS][41]; /* hex SHA1 of each script, for EVALSHA */
    void (*close_done)(ctx_store *s);
} redis_conn;

static void conn_start(redis_conn *c);

static void fail_waiting(redis_conn *c, int status, const char *why)
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
                             "Redis context store %s:%d is unavailable: %s; the store reconnects "
                             "with backoff",
                             c->host, c->port, why);
        ctx_op_defer(c->s, op);
        op = next;
    }
}

static void reconnect_cb(uv_timer_t *t)
{
    redis_conn *c = t->data;
    if (!c->ac)
        conn_start(c);
    else if (!c->connected) { /* connect timed out */
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        ac->data = NULL;
        redisAsyncFree(ac);
        snprintf(c->last_err, sizeof(c->last_err), "connect timed out");
        fail_waiting(c, CTX_EUNAVAIL, c->last_err);
        uv_timer_start(&c->timer, reconnect_cb, (uint64_t)c->backoff_ms, 0);
    }
}

static void schedule_reconnect(redis_conn *c)
{
    if (c->close_done) return;
    uv_timer_start(&c->timer, reconnect_cb, (uint64_t)c->backoff_ms, 0);
    c->backoff_ms = c->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff_ms * 2;
}

/* ---- replies ---- */

static int64_t reply_int(const redisReply *r)
{
    if (!r) return 0;
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    if (r->type == REDIS_REPLY_STRING) return strtoll(r->str, NULL, 10);
    return 0;
}

static void parse_reply(ctx_op *op, const redisReply *r)
{
    switch (op->kind) {
    case CTX_OP_LOAD:
        if (r->type == REDIS_REPLY_NIL) {
            op->status = CTX_ENOTFOUND;
            return;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 6 ||
            r->element[5]->type != REDIS_REPLY_STRING) {
            ctx_op_set_error(op, CTX_ECORRUPT, "Redis hash for conversation '%s' lacks fields",
                             op->id);
            return;
        }
        op->row.version = (uint64_t)reply_int(r->element[0]);
        op->row.turns = (uint32_t)reply_int(r->element[1]);
        op->row.created_at = reply_int(r->element[2]);
        op->row.updated_at = reply_int(r->element[3]);
        op->row.accessed_at = reply_int(r->element[4]);
        op->row.blob_len = r->element[5]->len;
        op->row.blob = malloc(op->row.blob_len + 1);
        if (!op->row.blob) abort();
        memcpy(op->row.blob, r->element[5]->str, op->row.blob_len);
        return;
    case CTX_OP_CAS:
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) break;
        if (reply_int(r->element[0]) == 0) op->status = CTX_ECONFLICT;
        op->evicted = (uint64_t)reply_int(r->element[1]);
        op->expired = (uint64_t)reply_int(r->element[2]);
        return;
    case CTX_OP_REMOVE:
        if (reply_int(r) == 0) op->status = CTX_ENOTFOUND;
        return;
    case CTX_OP_LIST: {
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 2) break;
        op->more = reply_int(r->element[0]) != 0;
        op->expired = (uint64_t)reply_int(r->element[1]);
        size_t n = (r->elements - 2) / 4;
        op->items = calloc(n + 1, sizeof(*op->items));
        if (!op->items) abort();
        for (size_t i = 0; i < n; i++) {
            const redisReply *id = r->element[2 + i * 4];
            ctx_list_item *it = &op->items[i];
            it->id = strndup(id->str ? id->str : "", id->len);
            it->turns = (uint32_t)reply_int(r->element[3 + i * 4]);
            it->created_at = reply_int(r->element[4 + i * 4]);
            it->updated_at = reply_int(r->element[5 + i * 4]);
        }
        op->n_items = n;
        return;
    }
    case CTX_OP_COUNT:
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) break;
        op->count = (uint64_t)reply_int(r->element[0]);
        op->expired = (uint64_t)reply_int(r->element[1]);
        return;
    case CTX_OP_EXPIRE:
        op->count = (uint64_t)reply_int(r);
        return;
    }
    ctx_op_set_error(op, CTX_EUNAVAIL, "unexpected reply from Redis (type %d)", r->type);
}

static void send_op(redis_conn *c, ctx_op *op);

static void reply_timeout_cb(uv_timer_t *t);

/* Any reply shows the server is alive: the reply timeout starts again, or stops when nothing is
 * outstanding. */
static void reply_seen(redis_conn *c)
{
    if (c->outstanding) c->outstanding--;
    if (c->outstanding)
        uv_timer_start(&c->reply_timer, reply_timeout_cb, REPLY_TIMEOUT_MS, 0);
    else
        uv_timer_stop(&c->reply_timer);
}

static void reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    ctx_op *op = privdata;
    redisReply *r = reply;
    redis_conn *c = ac->data;
    if (c && c->ac == ac) reply_seen(c); /* not while ac is being freed */
    if (r && r->type == REDIS_REPLY_ERROR && r->len >= 8 && memcmp(r->str, "NOSCRIPT", 8) == 0 &&
        op->retry == 0 && c && c->ac == ac && !c->close_done) {
        op->retry = 1; /* once: a second NOSCRIPT is reported */
        send_op(c, op);
        return;
    }
    if (!r)
        ctx_op_set_error(op, c && !c->close_done ? CTX_EUNAVAIL : CTX_ECANCELED,
                         "lost the connection to the Redis context store%s%s; retry",
                         c && c->last_err[0] ? ": " : "", c ? c->last_err : "");
    else if (r->type == REDIS_REPLY_ERROR)
        ctx_op_set_error(op, CTX_EUNAVAIL, "Redis context store: %.*s%s%s", (int)r->len, r->str,
                         c && c->last_err[0] ? " — " : "", c ? c->last_err : "");
    else
        parse_reply(op, r);
    op->done(op);
}

/* ---- sending ---- */

static void script_loaded_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    /* nothing to do: the EVALSHA queued right behind reports any failure */
}

static void send_op(redis_conn *c, ctx_op *op)
{
    ctx_store *s = c->s;
    char num[20][24];
    const char *argv[20];
    size_t len[20];
    int n = 0;
#define ARG(p, l) (argv[n] = (p), len[n] = (l), n++)
#define ARGS(p) ARG(p, strlen(p))
#define ARGN(v) (snprintf(num[n], sizeof(num[0]), "%lld", (long long)(v)), ARGS(num[n]))
    int64_t ttl = s->ttl_ms;
    if (op->retry) { /* after NOSCRIPT: load it, then the same EVALSHA, in one write */
        const char *load[] = {"SCRIPT", "LOAD", scripts[op->kind]};
        size_t load_len[] = {6, 4, strlen(scripts[op->kind])};
        redisAsyncCommandArgv(c->ac, script_loaded_cb, NULL, 3, load, load_len);
    }
    ARGS("EVALSHA");
    ARGS(c->sha[op->kind]);
    ARGS("0");
    ARGS(s->key_prefix);
    switch (op->kind) {
    case CTX_OP_LOAD:
        ARGS(op->tenant);
        ARGS(op->id);
        ARGN(op->now);
        ARGN(ttl);
        break;
    case CTX_OP_CAS:
        ARGS(op->tenant);
        ARGS(op->id);
        ARGN(op->old_version);
        ARGN(op->in.version);
        ARGN(op->in.turns);
        ARGN(op->in.created_at);
        ARGN(op->in.updated_at);
        ARGN(op->in.accessed_at);
        ARGN(ttl);
        ARGN(op->cutoff);
        ARGN(s->max_entries > 0 ? s->max_entries : 0);
        ARGS(s->eviction == EVICT_LRU ? "LRU" : s->eviction == EVICT_FIFO ? "FIFO" : "LIFO");
        ARG((const char *)op->in.blob, op->in.blob_len);
        break;
    case CTX_OP_REMOVE:
        ARGS(op->tenant);
        ARGS(op->id);
        break;
    case CTX_OP_LIST:
        ARGS(op->tenant);
        ARGS(op->cursor ? op->cursor : "");
        ARGN(op->limit);
        ARGN(op->cutoff);
        break;
    case CTX_OP_COUNT:
    case CTX_OP_EXPIRE:
        ARGN(op->cutoff);
        break;
    }
#undef ARG
#undef ARGS
#undef ARGN
    if (redisAsyncCommandArgv(c->ac, reply_cb, op, n, argv, len) != REDIS_OK) {
        ctx_op_set_error(op, CTX_EUNAVAIL, "cannot send to the Redis context store %s:%d", c->host,
                         c->port);
        ctx_op_defer(s, op);
        return;
    }
    if (c->outstanding++ == 0)
        uv_timer_start(&c->reply_timer, reply_timeout_cb, REPLY_TIMEOUT_MS, 0);
}

/* Commands outstanding and no reply for REPLY_TIMEOUT_MS: drop the connection (its operations
 * fail with CTX_EUNAVAIL) and reconnect (on_disconnect schedules it). */
static void reply_timeout_cb(uv_timer_t *t)
{
    redis_conn *c = t->data;
    if (!c->ac || !c->connected || !c->outstanding) return;
    redisAsyncContext *ac = c->ac;
    snprintf(c->last_err, sizeof(c->last_err), "no reply within %d ms", REPLY_TIMEOUT_MS);
    /* as when the server closes the connection: the pending replies run with NULL (operations
     * submitted meanwhile are refused by hiredis), then on_disconnect forgets ac and schedules
     * the reconnect */
    bool disconnect_cb = (ac->c.flags & REDIS_CONNECTED) != 0;
    redisAsyncFree(ac);
    if (!disconnect_cb) {
        c->ac = NULL;
        c->connected = false;
        c->outstanding = 0;
        schedule_reconnect(c);
    }
}

/* ---- connection ---- */

static void setup_reply_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redisReply *r = reply;
    redis_conn *c = ac->data;
    if (c && r && r->type == REDIS_REPLY_ERROR)
        snprintf(c->last_err, sizeof(c->last_err), "%s failed: %.*s (check the password / URL)",
                 (const char *)privdata, (int)r->len, r->str);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    redis_conn *c = ac->data;
    if (!c) return;
    if (status != REDIS_OK) {
        snprintf(c->last_err, sizeof(c->last_err), "%s", ac->errstr);
        c->ac = NULL; /* hiredis frees it after this callback */
        uv_timer_stop(&c->timer);
        fail_waiting(c, CTX_EUNAVAIL, c->last_err);
        schedule_reconnect(c);
        return;
    }
    c->connected = true;
    c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_stop(&c->timer);
    ctx_op *op = c->head;
    c->head = c->tail = NULL;
    while (op) {
        ctx_op *next = op->next;
        op->next = NULL;
        send_op(c, op);
        op = next;
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    redis_conn *c = ac->data;
    if (!c) return;
    c->ac = NULL;
    c->connected = false;
    c->outstanding = 0;
    uv_timer_stop(&c->reply_timer);
    if (!c->close_done) {
        snprintf(c->last_err, sizeof(c->last_err), "connection lost");
        schedule_reconnect(c);
    }
}

/* ---- event-loop glue ----
 * hiredis 0.14's own libuv adapter (hiredis/adapters/libuv.h) returns early when the poll
 * reports an error, so a refused connection is only noticed at the connect timeout. This is the
 * same glue with the one difference newer hiredis made: an error is handed to hiredis, which
 * reads the socket's error (connecting) or the failed read (connected) and reports it. */
typedef struct uv_redis_events {
    redisAsyncContext *ac;
    uv_poll_t poll;
    int events;
} uv_redis_events;

static void uvr_poll_cb(uv_poll_t *h, int status, int events)
{
    uv_redis_events *p = h->data;
    if (!p->ac) return;
    if (status < 0) {
        if (p->ac->c.flags & REDIS_CONNECTED)
            redisAsyncHandleRead(p->ac);
        else
            redisAsyncHandleWrite(p->ac);
        return;
    }
    if (events & UV_READABLE) redisAsyncHandleRead(p->ac);
    if (p->ac && (events & UV_WRITABLE)) redisAsyncHandleWrite(p->ac);
}

static void uvr_update(uv_redis_events *p, int add, int del)
{
    p->events = (p->events | add) & ~del;
    if (p->events)
        uv_poll_start(&p->poll, p->events, uvr_poll_cb);
    else
        uv_poll_stop(&p->poll);
}

static void uvr_add_read(void *d)
{
    uvr_update(d, UV_READABLE, 0);
}

static void uvr_del_read(void *d)
{
    uvr_update(d, 0, UV_READABLE);
}

static void uvr_add_write(void *d)
{
    uvr_update(d, UV_WRITABLE, 0);
}

static void uvr_del_write(void *d)
{
    uvr_update(d, 0, UV_WRITABLE);
}

static void uvr_closed(uv_handle_t *h)
{
    free(h->data);
}

static void uvr_cleanup(void *d)
{
    uv_redis_events *p = d;
    p->ac = NULL; /* the context is being freed */
    uv_close((uv_handle_t *)&p->poll, uvr_closed);
}

static int uvr_attach(redisAsyncContext *ac, uv_loop_t *loop)
{
    if (ac->ev.data) return REDIS_ERR;
    uv_redis_events *p = calloc(1, sizeof *p);
    if (!p) return REDIS_ERR;
    if (uv_poll_init(loop, &p->poll, ac->c.fd) != 0) {
        free(p);
        return REDIS_ERR;
    }
    p->ac = ac;
    p->poll.data = p;
    ac->ev.addRead = uvr_add_read;
    ac->ev.delRead = uvr_del_read;
    ac->ev.addWrite = uvr_add_write;
    ac->ev.delWrite = uvr_del_write;
    ac->ev.cleanup = uvr_cleanup;
    ac->ev.data = p;
    return REDIS_OK;
}

static void conn_start(redis_conn *c)
{
    redisAsyncContext *ac = redisAsyncConnect(c->host, c->port);
    if (!ac || ac->err) {
        snprintf(c->last_err, sizeof(c->last_err), "%s", ac ? ac->errstr : "out of memory");
        if (ac) redisAsyncFree(ac);
        fail_waiting(c, CTX_EUNAVAIL, c->last_err);
        schedule_reconnect(c);
        return;
    }
    ac->data = c;
    c->last_err[0] = 0;
    if (uvr_attach(ac, c->s->loop) != REDIS_OK) {
        ac->data = NULL;
        redisAsyncFree(ac);
        snprintf(c->last_err, sizeof(c->last_err), "cannot attach to the event loop");
        fail_waiting(c, CTX_EUNAVAIL, c->last_err);
        schedule_reconnect(c);
        return;
    }
    c->ac = ac;
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    if (c->pass) {
        if (c->user)
            redisAsyncCommand(ac, setup_reply_cb, "AUTH", "AUTH %s %s", c->user, c->pass);
        else
            redisAsyncCommand(ac, setup_reply_cb, "AUTH", "AUTH %s", c->pass);
    }
    if (c->db) redisAsyncCommand(ac, setup_reply_cb, "SELECT", "SELECT %d", c->db);
    redisAsyncCommand(ac, setup_reply_cb, "PING", "PING"); /* makes hiredis 0.14 start connecting */
    uv_timer_start(&c->timer, reconnect_cb, CONNECT_TIMEOUT_MS, 0);
}

static void redis_submit(ctx_store *s, ctx_op *op)
{
    redis_conn *c = s->impl;
    if (c->connected) {
        send_op(c, op);
        return;
    }
    op->next = NULL;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    if (!c->ac) { /* waiting out a backoff: try now, there is demand */
        uv_timer_stop(&c->timer);
        conn_start(c);
    }
}

/* redis://[user][:password@]host[:port][/db] */
static int parse_url(redis_conn *c, const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "rediss://", 9) == 0) {
        snprintf(err, errlen,
                 "rediss:// (TLS) is not supported: this build uses hiredis 0.14, which has no "
                 "TLS; use redis:// on a trusted network or a TLS proxy such as stunnel");
        return CTX_EINVAL;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "Redis URL '%s' must start with redis://", url);
        return CTX_EINVAL;
    }
    const char *p = url + 8;
    const char *at = strchr(p, '@');
    if (at) {
        const char *colon = memchr(p, ':', (size_t)(at - p));
        if (colon) {
            if (colon > p) c->user = strndup(p, (size_t)(colon - p));
            c->pass = strndup(colon + 1, (size_t)(at - colon - 1));
        } else if (at > p) {
            c->pass = strndup(p, (size_t)(at - p)); /* redis://password@host */
        }
        p = at + 1;
    }
    const char *end = p + strcspn(p, ":/");
    c->host = end > p ? strndup(p, (size_t)(end - p)) : strdup("127.0.0.1");
    c->port = 6379;
    if (*end == ':') {
        char *e;
        long port = strtol(end + 1, &e, 10);
        if (port <= 0 || port > 65535 || (*e && *e != '/')) {
            snprintf(err, errlen, "Redis URL '%s' has an invalid port", url);
            return CTX_EINVAL;
        }
        c->port = (int)port;
        end = e;
    }
    if (*end == '/' && end[1]) {
        char *e;
        long db = strtol(end + 1, &e, 10);
        if (db < 0 || db > 1000000 || *e) {
            snprintf(err, errlen, "Redis URL '%s' has an invalid database number", url);
            return CTX_EINVAL;
        }
        c->db = (int)db;
    }
    return 0;
}

static void conn_free(redis_conn *c)
{
    free(c->host);
    free(c->user);
    free(c->pass);
    free(c);
}

static int redis_open(ctx_store *s, char *err, size_t errlen)
{
    redis_conn *c = calloc(1, sizeof(*c));
    if (!c) abort();
    c->s = s;
    int rc = parse_url(c, s->url, err, errlen);
    if (rc != 0) {
        conn_free(c);
        return rc;
    }
    if (s->password) { /* passwordRef wins over a password in the URL */
        free(c->pass);
        c->pass = strdup(s->password);
    }
    for (size_t i = 0; i < N_SCRIPTS; i++) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        if (EVP_Digest(scripts[i], strlen(scripts[i]), md, &md_len, EVP_sha1(), NULL) != 1 ||
            md_len != 20) {
            snprintf(err, errlen, "cannot compute SHA1 of the Redis scripts (OpenSSL)");
            conn_free(c);
            return CTX_EUNAVAIL;
        }
        for (unsigned k = 0; k < md_len; k++)
            snprintf(&c->sha[i][2 * k], 3, "%02x", md[k]);
    }
    c->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(s->loop, &c->timer);
    c->timer.data = c;
    uv_timer_init(s->loop, &c->reply_timer);
    c->reply_timer.data = c;
    s->impl = c;
    conn_start(c);
    return 0;
}

static void timer_closed(uv_handle_t *h)
{
    redis_conn *c = h->data;
    if (--c->open_timers > 0) return;
    ctx_store *s = c->s;
    void (*done)(ctx_store *) = c->close_done;
    conn_free(c);
    s->impl = NULL;
    done(s);
}

static void redis_close(ctx_store *s, void (*done)(ctx_store *s))
{
    redis_conn *c = s->impl;
    c->close_done = done;
    uv_timer_stop(&c->timer);
    uv_timer_stop(&c->reply_timer);
    fail_waiting(c, CTX_ECANCELED, "closed");
    if (c->ac) {
        redisAsyncContext *ac = c->ac;
        c->ac = NULL;
        c->connected = false;
        redisAsyncFree(ac); /* pending replies run with NULL -> ECANCELED */
    }
    c->open_timers = 2;
    uv_close((uv_handle_t *)&c->timer, timer_closed);
    uv_close((uv_handle_t *)&c->reply_timer, timer_closed);
}

const ctx_backend ctx_backend_redis = {"redis", redis_open, redis_submit, redis_close, false};
