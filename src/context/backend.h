/* backend.h — what a context backend implements (internal to src/context/).
 *
 * store.c turns each public request into a few backend primitives on opaque record bytes:
 * LOAD (read and touch), CAS (write if the version is still the one read, or create if absent
 * or expired, evicting by policy), REMOVE, LIST, COUNT, EXPIRE. The read-modify-CAS loop in
 * store.c gives optimistic concurrency on every backend with one atomic primitive each
 * (Memory: a mutex; File: a SQLite transaction; Redis: a Lua script; PostgreSQL: one
 * UPDATE ... WHERE version = $n or INSERT ... ON CONFLICT). ctx_store_append_to is a CAS alone,
 * built from the record its caller read. A backend completes an op by calling op->done on the
 * store's loop, never from inside submit. store.c submits nothing once the store is closing, so
 * a backend's close only has to finish or cancel what it already holds. */
#ifndef CTXGATE_CONTEXT_BACKEND_H
#define CTXGATE_CONTEXT_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "context/record.h"
#include "context/store.h"

typedef enum {
    CTX_OP_LOAD,
    CTX_OP_CAS,
    CTX_OP_REMOVE,
    CTX_OP_LIST,
    CTX_OP_COUNT,
    CTX_OP_EXPIRE
} ctx_op_kind;

/* One stored row: the record bytes plus the index fields backends keep beside them (so that
 * list, eviction and expiry never need to decrypt). */
typedef struct ctx_row {
    uint64_t version;
    int64_t created_at, updated_at, accessed_at; /* Unix ms; accessed = last read or write */
    uint32_t turns;
    unsigned char *blob; /* malloc'd; NULL when rec carries the record instead */
    size_t blob_len;
    /* The record already decoded, for backends with keeps_records (Memory without encryption:
     * decoding and encoding were most of a request's cost). LOAD may return it instead of blob
     * (a ctx_record_share() copy, owned by the op); CAS gets it instead of blob and takes it by
     * setting it to NULL. Its message objects are shared and never modified. */
    ctx_record *rec;
} ctx_row;

typedef struct ctx_op ctx_op;
struct ctx_op {
    ctx_op_kind kind;
    const char *tenant, *id; /* validated; owned by the caller of submit */
    int64_t now;             /* Unix ms */
    int64_t cutoff;          /* rows with accessed_at < cutoff are expired; 0 = no TTL */
    uint64_t old_version;    /* CAS: version read; 0 = create (replacing an expired row) */
    ctx_row in;              /* CAS: the new row (blob borrowed) */
    size_t limit;            /* LIST */
    const char *cursor;      /* LIST: ids > cursor; NULL = from the start */
    /* results */
    int status; /* 0, CTX_ENOTFOUND (LOAD/REMOVE), CTX_ECONFLICT (CAS lost), CTX_E* */
    char errmsg[256];
    ctx_row row;          /* LOAD */
    uint64_t count;       /* COUNT: rows; EXPIRE: rows removed */
    uint64_t evicted;     /* CAS: rows evicted by maxEntries */
    uint64_t expired;     /* any: expired rows removed on the way */
    ctx_list_item *items; /* LIST: malloc'd array (ids malloc'd), ordered by id */
    size_t n_items;
    bool more;      /* LIST: more ids follow */
    unsigned retry; /* the backend's own (Redis: NOSCRIPT retries); zeroed on submit */
    void (*done)(ctx_op *op);
    void *data;   /* store.c's */
    ctx_op *next; /* backend queue link */
};

typedef struct ctx_backend {
    const char *name;
    int (*open)(ctx_store *s, char *err, size_t errlen);
    void (*submit)(ctx_store *s, ctx_op *op);
    /* finish or cancel (CTX_ECANCELED) every op, release everything, then call done(s) */
    void (*close)(ctx_store *s, void (*done)(ctx_store *s));
    bool keeps_records; /* CAS takes a decoded record (row.rec) when the codec does not seal */
} ctx_backend;

/* What a handle keeps from its cfg_mcp (copied: snapshots come and go). */
struct ctx_store {
    uv_loop_t *loop;
    const ctx_backend *be;
    void *impl;
    char *name; /* namespace/name of the MCP */
    char *path, *url, *dsn, *password, *key_prefix, *persona;
    ctx_codec codec;
    int64_t ttl_ms;   /* 0 = never expires */
    long max_entries; /* <= 0 = unbounded */
    int max_turns;    /* <= 0 = unbounded */
    cfg_eviction eviction;
    bool read_only;
    ctx_stats counters;
    unsigned pending; /* requests not yet called back */
    bool closing;
    ctx_close_cb close_cb;
    void *close_arg;
};

extern const ctx_backend ctx_backend_memory, ctx_backend_file, ctx_backend_redis,
    ctx_backend_postgres;

void ctx_row_clear(ctx_row *r);
void ctx_op_set_error(ctx_op *op, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Runs op->done on the next loop iteration (for backends that finish synchronously). */
void ctx_op_defer(ctx_store *s, ctx_op *op);

#endif
