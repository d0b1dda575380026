/* store.h — the conversation-context store: one asynchronous interface, four backends.
 *
 * Shaped like libuv: a ctx_store is a handle bound to one worker loop (open it on every loop
 * that needs it; Redis and PostgreSQL keep their connection on that loop, Memory is shared
 * process-wide by every handle opened for the same ModelContextProtocol, File runs SQLite on
 * the uv threadpool). Each operation is a one-shot ctx_req: the call returns 0 and the
 * callback runs later on the loop (never from inside the call), or the call returns a negative
 * CTX_E* code, fills req->errmsg and the callback never runs. After the callback the caller
 * owns what the request carries until ctx_req_cleanup().
 *
 * Records are keyed by (tenant, conversation id); a tenant never sees another's records.
 * Versions are optimistic-concurrency counters: a conversation that does not exist has
 * version 0, every append or summary write adds one. */
#ifndef CTXGATE_CONTEXT_STORE_H
#define CTXGATE_CONTEXT_STORE_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "config/config.h"

/* Result codes: 0 or one of these (negative, like libuv). */
enum {
    CTX_OK = 0,
    CTX_ENOTFOUND = -1, /* no such conversation (or it expired) */
    CTX_ECONFLICT = -2, /* expected version did not match; nothing was written */
    CTX_EINVAL = -3,    /* bad id, tenant, messages or configuration; errmsg says which */
    CTX_EREADONLY = -4, /* interactionPatterns.readWriteMode is ReadOnlyMany */
    CTX_ECORRUPT = -5,  /* stored record cannot be decoded or fails authentication */
    CTX_EUNAVAIL = -6,  /* backend unreachable (server down, disk error); retry later */
    CTX_ECANCELED = -7, /* the store was closed with the request pending */
};

#define CTX_VERSION_ANY UINT64_MAX   /* append/set_summary without a version check */
#define CTX_ID_MAX 256               /* bytes; ids and tenants are printable ASCII */
#define CTX_TENANT_DEFAULT "default" /* used when tenant is NULL */
#define CTX_SCHEMA_VERSION 1         /* record schema this build writes */

const char *ctx_strerror(int code); /* "not found", "version conflict", ... */

/* One stored conversation. messages is a JSON array of OpenAI-format messages, each with
 * role, content, optional tool_calls / tool_call_id and ts (Unix milliseconds, set by the
 * store on append when absent). Times are Unix milliseconds. The struct, its strings and the
 * messages array belong to whoever holds the record, but the message objects and metadata may
 * be shared with the store (Memory keeps records decoded): read them, never modify them
 * (json_deep_copy what you want to change). */
typedef struct ctx_record {
    char *id;
    uint64_t version;
    char *persona;    /* NULL when none (set from the MCP persona when created) */
    char *summary;    /* NULL until a Summarize strategy wrote one */
    json_t *messages; /* array, owned */
    json_t *metadata; /* object, owned */
    int64_t created_at;
    int64_t updated_at;
    int schema_version; /* as stored; older versions are upgraded on read (this field then
                           says CTX_SCHEMA_VERSION) */
} ctx_record;

void ctx_record_free(ctx_record *r); /* NULL ok */

typedef struct ctx_list_item {
    char *id;
    uint32_t turns; /* messages stored */
    int64_t created_at;
    int64_t updated_at;
} ctx_list_item;

typedef struct ctx_stats {
    uint64_t active;      /* conversations in the store (all tenants) */
    uint64_t evictions;   /* removed by maxEntries through this handle since open */
    uint64_t expirations; /* removed by ttlSeconds through this handle since open */
    uint64_t trimmed;     /* messages dropped by maxTurnsPerConversation through this handle */
} ctx_stats;

typedef struct ctx_store ctx_store;
typedef struct ctx_req ctx_req;
typedef void (*ctx_cb)(ctx_req *req);
typedef void (*ctx_close_cb)(ctx_store *s, void *arg);

typedef enum {
    CTX_REQ_GET,
    CTX_REQ_APPEND,
    CTX_REQ_SET_SUMMARY,
    CTX_REQ_DELETE,
    CTX_REQ_LIST,
    CTX_REQ_STATS,
    CTX_REQ_EXPIRE,
} ctx_req_type;

struct ctx_req {
    void *data; /* the caller's */
    ctx_req_type type;
    int result;           /* 0 or CTX_E*, valid in the callback */
    char errmsg[320];     /* a sentence for the user when result < 0 */
    uint64_t version;     /* get / append / set_summary: the conversation's (new) version */
    ctx_record *record;   /* get: owned by the request; take it by setting this to NULL */
    ctx_list_item *items; /* list: page of the tenant's conversations, ordered by id */
    size_t n_items;
    char *next_cursor;    /* list: NULL on the last page */
    uint32_t trimmed;     /* append: oldest messages dropped by maxTurnsPerConversation */
    ctx_stats stats;      /* stats */
    uint64_t expired;     /* expire: conversations removed by this sweep */
    struct ctx_job *job_; /* private */
};

/* Opens a handle for cfg on loop. Memory: attaches to the process-wide map of this MCP
 * (namespace/name). File: opens SQLite (WAL, synchronous=FULL) and creates the schema before
 * returning. Redis / PostgreSQL: starts connecting; operations queue until connected.
 * cfg is copied; it need not outlive the handle. Returns 0 or CTX_EINVAL / CTX_EUNAVAIL with a
 * message in err. */
int ctx_store_open(uv_loop_t *loop, const cfg_mcp *cfg, ctx_store **out, char *err, size_t errlen);

/* Pending requests complete through their callbacks before cb runs: with CTX_ECANCELED, or with
 * their real result when the backend had already finished them (a write in flight on a server
 * may have been applied even when it reports CTX_ECANCELED). No request is dropped; none is
 * started any more. Connections and handles are closed, then cb(s, arg) runs on the loop (cb
 * may be NULL; s is still a valid pointer during cb and freed after it); the loop must keep
 * running until then. May be called from inside any callback of the store. */
void ctx_store_close(ctx_store *s, ctx_close_cb cb, void *arg);

const char *
ctx_store_backend_name(const ctx_store *s); /* "memory", "file", "redis", "postgresql" */

/* tenant NULL = CTX_TENANT_DEFAULT. Strings and JSON are copied before the call returns. */
int ctx_store_get(ctx_store *s, ctx_req *req, const char *tenant, const char *id, ctx_cb cb);
/* messages: non-empty JSON array of messages. Creates the conversation when absent.
 * expected_version: CTX_VERSION_ANY, or the version the caller read (0 = must not exist).
 * Reads the conversation, then compares-and-sets it (two backend round trips); a caller that
 * has just read the conversation should use ctx_store_append_to. */
int ctx_store_append(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                     const json_t *messages, uint64_t expected_version, ctx_cb cb);
/* Appends messages to base, the record of (tenant, id) the caller read with ctx_store_get, or
 * NULL when the get said CTX_ENOTFOUND (the conversation must not exist yet). The new record
 * (base's history + messages stamped with ts, trimmed to maxTurnsPerConversation, encoded and
 * sealed as usual) is built before the call returns and written with ONE compare-and-set on
 * base's version: one round trip. If the conversation changed, was created or was deleted since
 * the read: CTX_ECONFLICT, nothing written. base is not copied: its messages and metadata may
 * be shared by the stored record, so nobody may modify them afterwards (free base as usual). */
int ctx_store_append_to(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                        const ctx_record *base, const json_t *messages, ctx_cb cb);
/* Stores summary and drops the first `replaces` messages it stands for (Summarize strategy). */
int ctx_store_set_summary(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                          const char *summary, size_t replaces, uint64_t expected_version,
                          ctx_cb cb);
int ctx_store_delete(ctx_store *s, ctx_req *req, const char *tenant, const char *id, ctx_cb cb);
/* limit 1..1000 (0 = 100); cursor NULL for the first page, else a previous next_cursor. */
int ctx_store_list(ctx_store *s, ctx_req *req, const char *tenant, size_t limit, const char *cursor,
                   ctx_cb cb);
int ctx_store_stats(ctx_store *s, ctx_req *req, ctx_cb cb);
/* Removes every conversation idle for longer than ttlSeconds (no-op with ttl 0). */
int ctx_store_expire(ctx_store *s, ctx_req *req, ctx_cb cb);

void ctx_req_cleanup(ctx_req *req); /* frees record / items / cursor still held by req */

#endif
