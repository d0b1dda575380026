/* store.c — the backend-independent half of the context store: argument checks, the
 * read-modify-compare-and-set loop behind append / set_summary (optimistic versions), the
 * single compare-and-set of append_to (built from the record its caller already read), the
 * maxTurnsPerConversation trim, request lifecycle and close. Backends only move rows
 * (backend.h); every record passes through record.c on its way in and out, except that a backend
 * with keeps_records (Memory without encryption) holds records decoded.
 *
 * Lifetime: once ctx_store_close() ran, job_submit() hands nothing more to the backend; a request
 * that needed another step completes with CTX_ECANCELED through its callback. So a backend's
 * close only finishes or cancels the ops it holds, and no op reaches a backend that is gone. */
#include "context/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/clock.h"

#define CAS_RETRIES 32 /* CTX_VERSION_ANY writers retry a lost race this often */

struct ctx_job {
    ctx_store *s;
    ctx_req *req;
    ctx_cb cb;
    char tenant[CTX_ID_MAX + 1];
    char id[CTX_ID_MAX + 1];
    char *cursor;
    json_t *messages;
    char *summary;
    size_t replaces;
    uint64_t expected;
    bool from_base; /* append_to: the CAS is the whole request */
    int attempts;
    ctx_op op;
    buf blob;
};

/* per-store deferral of synchronous completions, so callbacks never run inside the call */
typedef struct ctx_defer {
    uv_idle_t idle;
    ctx_op *head, *tail;
} ctx_defer;

static ctx_defer *defer_of(ctx_store *s);

const char *ctx_strerror(int code)
{
    switch (code) {
    case CTX_OK:
        return "ok";
    case CTX_ENOTFOUND:
        return "conversation not found";
    case CTX_ECONFLICT:
        return "version conflict";
    case CTX_EINVAL:
        return "invalid argument";
    case CTX_EREADONLY:
        return "context store is read-only";
    case CTX_ECORRUPT:
        return "stored record is corrupt or fails authentication";
    case CTX_EUNAVAIL:
        return "context store unavailable";
    case CTX_ECANCELED:
        return "canceled: context store closed";
    default:
        return "unknown context store error";
    }
}

void ctx_row_clear(ctx_row *r)
{
    free(r->blob);
    ctx_record_free(r->rec);
    memset(r, 0, sizeof(*r));
}

void ctx_op_set_error(ctx_op *op, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(op->errmsg, sizeof(op->errmsg), fmt, ap);
    va_end(ap);
    op->status = status;
}

/* ---- deferral ---- */

typedef struct store_box {
    ctx_store s;
    ctx_defer d;
} store_box;

static ctx_defer *defer_of(ctx_store *s)
{
    return &((store_box *)s)->d;
}

static void defer_run(uv_idle_t *h)
{
    ctx_defer *d = h->data;
    ctx_op *op = d->head;
    d->head = d->tail = NULL;
    uv_idle_stop(h);
    while (op) {
        ctx_op *next = op->next;
        op->next = NULL;
        op->done(op);
        op = next;
    }
}

void ctx_op_defer(ctx_store *s, ctx_op *op)
{
    ctx_defer *d = defer_of(s);
    op->next = NULL;
    if (d->tail)
        d->tail->next = op;
    else
        d->head = op;
    d->tail = op;
    uv_idle_start(&d->idle, defer_run);
}

/* ---- open / close ---- */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static int bad(char *err, size_t errlen, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int bad(char *err, size_t errlen, int code, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void store_free(ctx_store *s)
{
    free(s->name);
    free(s->path);
    free(s->url);
    free(s->dsn);
    free(s->password);
    free(s->key_prefix);
    free(s->persona);
    free(s);
}

int ctx_store_open(uv_loop_t *loop, const cfg_mcp *cfg, ctx_store **out, char *err, size_t errlen)
{
    *out = NULL;
    const char *mcp = cfg->name ? cfg->name : "(unnamed)";
    if (cfg->schema_version != 0 && cfg->schema_version != CTX_SCHEMA_VERSION)
        return bad(err, errlen, CTX_EINVAL,
                   "ModelContextProtocol %s: interactionPatterns.versioning.schemaVersion %d is "
                   "not supported; this build writes schemaVersion %d",
                   mcp, cfg->schema_version, CTX_SCHEMA_VERSION);
    const ctx_backend *be = NULL;
    switch (cfg->store) {
    case STORE_MEMORY:
        be = &ctx_backend_memory;
        break;
    case STORE_FILE:
        if (!cfg->path || !*cfg->path)
            return bad(err, errlen, CTX_EINVAL,
                       "ModelContextProtocol %s: storage type File needs spec.storage.config.path",
                       mcp);
        be = &ctx_backend_file;
        break;
    case STORE_REDIS:
        if (!cfg->url || !*cfg->url)
            return bad(err, errlen, CTX_EINVAL,
                       "ModelContextProtocol %s: storage type Redis needs spec.storage.config.url",
                       mcp);
        be = &ctx_backend_redis;
        break;
    case STORE_POSTGRESQL:
        if (!cfg->dsn || !*cfg->dsn)
            return bad(err, errlen, CTX_EINVAL,
                       "ModelContextProtocol %s: storage type PostgreSQL needs "
                       "spec.storage.config.dsn",
                       mcp);
        be = &ctx_backend_postgres;
        break;
    }
    if (!be)
        return bad(err, errlen, CTX_EINVAL, "ModelContextProtocol %s: unknown storage type", mcp);
    store_box *box = calloc(1, sizeof(*box));
    if (!box) abort();
    ctx_store *s = &box->s;
    s->loop = loop;
    s->be = be;
    char name[600];
    snprintf(name, sizeof(name), "%s/%s", cfg->namespace_ ? cfg->namespace_ : "default", mcp);
    s->name = strdup(name);
    s->path = dup_or_null(cfg->path);
    s->url = dup_or_null(cfg->url);
    s->dsn = dup_or_null(cfg->dsn);
    s->password = dup_or_null(cfg->password);
    s->key_prefix = strdup(cfg->key_prefix ? cfg->key_prefix : "ctx:");
    s->persona = dup_or_null(cfg->persona);
    s->codec.text = !cfg->format_json;
    s->codec.encrypt = cfg->encrypt;
    memcpy(s->codec.key, cfg->enc_key, sizeof(s->codec.key));
    s->ttl_ms = cfg->ttl_seconds > 0 ? (int64_t)cfg->ttl_seconds * 1000 : 0;
    s->max_entries = cfg->max_entries;
    s->max_turns = cfg->max_turns;
    s->eviction = cfg->eviction;
    s->read_only = cfg->read_only;
    uv_idle_init(loop, &box->d.idle);
    box->d.idle.data = &box->d;
    int rc = be->open(s, err, errlen);
    if (rc != 0) {
        /* the idle handle must be closed before the memory goes */
        uv_close((uv_handle_t *)&box->d.idle, NULL);
        uv_run(loop, UV_RUN_NOWAIT);
        store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

const char *ctx_store_backend_name(const ctx_store *s)
{
    return s->be->name;
}

static void idle_closed(uv_handle_t *h)
{
    store_box *box = (store_box *)((char *)h - offsetof(store_box, d.idle));
    ctx_store *s = &box->s;
    /* the callback runs while s is still allocated (everything it owned is released): it
     * may use s as an identity, and nothing touches s after it is freed */
    if (s->close_cb) s->close_cb(s, s->close_arg);
    store_free(s);
}

static void backend_closed(ctx_store *s)
{
    ctx_defer *d = defer_of(s);
    defer_run(&d->idle); /* ops finished by the backend on its way out */
    uv_close((uv_handle_t *)&d->idle, idle_closed);
}

void ctx_store_close(ctx_store *s, ctx_close_cb cb, void *arg)
{
    if (s->closing) return;
    s->closing = true;
    s->close_cb = cb;
    s->close_arg = arg;
    s->be->close(s, backend_closed);
}

/* ---- requests ---- */

static void job_finish(struct ctx_job *j, int status, const char *msg)
{
    ctx_req *req = j->req;
    ctx_store *s = j->s;
    req->result = status;
    if (status != 0)
        snprintf(req->errmsg, sizeof(req->errmsg), "%s", msg && *msg ? msg : ctx_strerror(status));
    ctx_cb cb = j->cb;
    free(j->cursor);
    json_decref(j->messages);
    free(j->summary);
    ctx_row_clear(&j->op.row);
    ctx_record_free(j->op.in.rec); /* a CAS that lost keeps its record */
    buf_free(&j->blob);
    free(j);
    req->job_ = NULL;
    s->pending--;
    cb(req);
}

static void job_fail(struct ctx_job *j, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void job_fail(struct ctx_job *j, int status, const char *fmt, ...)
{
    char msg[320];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    job_finish(j, status, msg);
}

static void job_submit(struct ctx_job *j, ctx_op_kind kind);

static int decode_row(struct ctx_job *j, ctx_record **out)
{
    ctx_row *row = &j->op.row;
    if (row->rec) { /* the backend keeps records decoded */
        *out = row->rec;
        row->rec = NULL;
        (*out)->version = row->version;
        return 0;
    }
    ctx_record_meta meta = {row->version, row->created_at, row->updated_at};
    char err[256];
    int rc = ctx_record_decode(&j->s->codec, j->tenant, j->id, row->blob, row->blob_len, &meta, out,
                               err, sizeof(err));
    if (rc != 0) {
        job_finish(j, rc, err);
        return rc;
    }
    (*out)->version = row->version; /* the index's version is the one CAS checks */
    return 0;
}

/* Prepares the CAS of r (taken) over old_version: encoded (and sealed) into j->blob, or handed
 * over decoded to a backend that keeps records. 0, or CTX_E* with err filled. */
static int stage_write(struct ctx_job *j, ctx_record *r, uint64_t old_version, char *err,
                       size_t errlen)
{
    ctx_store *s = j->s;
    ctx_row *in = &j->op.in;
    ctx_record_free(in->rec);
    in->rec = NULL;
    in->blob = NULL;
    in->blob_len = 0;
    j->op.old_version = old_version;
    in->version = r->version;
    in->created_at = r->created_at;
    in->updated_at = r->updated_at;
    in->accessed_at = j->op.now;
    in->turns = (uint32_t)json_array_size(r->messages);
    if (s->be->keeps_records && !s->codec.encrypt) {
        in->rec = r;
        return 0;
    }
    buf_reset(&j->blob);
    int rc = ctx_record_encode(&s->codec, j->tenant, j->id, r, &j->blob, err, errlen);
    ctx_record_free(r);
    if (rc != 0) return rc;
    in->blob = (unsigned char *)j->blob.data;
    in->blob_len = j->blob.len;
    return 0;
}

static void write_record(struct ctx_job *j, ctx_record *r, uint64_t old_version)
{
    char err[256];
    int rc = stage_write(j, r, old_version, err, sizeof(err));
    if (rc != 0) {
        job_finish(j, rc, err);
        return;
    }
    ctx_row_clear(&j->op.row);
    job_submit(j, CTX_OP_CAS);
}

/* The record an append writes: base (NULL = a new conversation) plus deep copies of messages
 * stamped with ts, the oldest dropped beyond maxTurnsPerConversation (the summary stays). It
 * shares base's message objects and metadata, read-only, and builds no message twice: no decode,
 * no copy of the history. */
static ctx_record *appended(ctx_store *s, const char *id, const ctx_record *base,
                            const json_t *messages, int64_t now, uint32_t *trimmed)
{
    size_t nb = base ? json_array_size(base->messages) : 0, nm = json_array_size(messages);
    size_t drop =
        s->max_turns > 0 && nb + nm > (size_t)s->max_turns ? nb + nm - (size_t)s->max_turns : 0;
    ctx_record *r = calloc(1, sizeof(*r));
    if (!r) abort();
    r->id = strdup(id);
    r->persona = dup_or_null(base ? base->persona : s->persona);
    r->summary = dup_or_null(base ? base->summary : NULL);
    r->metadata = base && base->metadata ? json_incref(base->metadata) : json_object();
    r->messages = json_array();
    for (size_t i = drop; i < nb; i++)
        json_array_append(r->messages, json_array_get(base->messages, i));
    for (size_t i = drop > nb ? drop - nb : 0; i < nm; i++) {
        json_t *c = json_deep_copy(json_array_get(messages, i));
        if (!json_object_get(c, "ts")) json_object_set_new(c, "ts", json_integer(now));
        json_array_append_new(r->messages, c);
    }
    r->version = (base ? base->version : 0) + 1;
    r->created_at = base ? base->created_at : now;
    r->updated_at = now;
    r->schema_version = CTX_SCHEMA_VERSION;
    *trimmed = (uint32_t)drop;
    return r;
}

static void append_loaded(struct ctx_job *j)
{
    ctx_store *s = j->s;
    ctx_record *r = NULL;
    uint64_t cur = 0;
    if (j->op.status == CTX_ENOTFOUND) {
        if (j->req->type == CTX_REQ_SET_SUMMARY) {
            job_fail(j, CTX_ENOTFOUND, "conversation '%s' not found", j->id);
            return;
        }
    } else {
        if (decode_row(j, &r) != 0) return;
        cur = r->version;
    }
    if (j->expected != CTX_VERSION_ANY && j->expected != cur) {
        ctx_record_free(r);
        job_fail(j, CTX_ECONFLICT,
                 "conversation '%s' is at version %llu, not the expected %llu; re-read it and "
                 "retry",
                 j->id, (unsigned long long)cur, (unsigned long long)j->expected);
        return;
    }
    if (j->req->type == CTX_REQ_APPEND) {
        ctx_record *next = appended(s, j->id, r, j->messages, j->op.now, &j->req->trimmed);
        ctx_record_free(r);
        write_record(j, next, cur);
        return;
    }
    /* set_summary: r is this job's own record (its messages array too) */
    size_t n = json_array_size(r->messages);
    if (j->replaces > n) {
        ctx_record_free(r);
        job_fail(j, CTX_EINVAL,
                 "the summary replaces %zu messages but conversation '%s' has only %zu",
                 j->replaces, j->id, n);
        return;
    }
    for (size_t k = 0; k < j->replaces; k++)
        json_array_remove(r->messages, 0);
    free(r->summary);
    r->summary = strdup(j->summary);
    r->version = cur + 1;
    r->updated_at = j->op.now;
    r->schema_version = CTX_SCHEMA_VERSION;
    write_record(j, r, cur);
}

static void op_done(ctx_op *op)
{
    struct ctx_job *j = op->data;
    ctx_store *s = j->s;
    ctx_req *req = j->req;
    s->counters.expirations += op->expired;
    op->expired = 0;
    /* A finished op reports what it did, even while closing (a CAS that committed says so);
     * a request that needs another step is canceled by job_submit. */
    if (op->status == CTX_ECANCELED) {
        job_fail(j, CTX_ECANCELED, "context store %s was closed", s->name);
        return;
    }
    if (op->status != 0 && op->status != CTX_ENOTFOUND && op->status != CTX_ECONFLICT) {
        job_finish(j, op->status, op->errmsg);
        return;
    }
    switch (op->kind) {
    case CTX_OP_LOAD:
        if (req->type == CTX_REQ_GET) {
            if (op->status == CTX_ENOTFOUND) {
                job_fail(j, CTX_ENOTFOUND, "conversation '%s' not found", j->id);
                return;
            }
            ctx_record *r;
            if (decode_row(j, &r) != 0) return;
            req->record = r;
            req->version = r->version;
            job_finish(j, 0, NULL);
            return;
        }
        append_loaded(j);
        return;
    case CTX_OP_CAS:
        if (op->status == CTX_ECONFLICT) {
            if (j->expected == CTX_VERSION_ANY && ++j->attempts < CAS_RETRIES) {
                job_submit(j, CTX_OP_LOAD);
                return;
            }
            if (j->from_base) {
                job_fail(j, CTX_ECONFLICT,
                         "conversation '%s' is no longer at version %llu (another writer changed, "
                         "created or deleted it after it was read); re-read it and retry",
                         j->id, (unsigned long long)j->expected);
                return;
            }
            job_fail(j, CTX_ECONFLICT,
                     "conversation '%s' was changed by another writer at the same time; re-read "
                     "it and retry",
                     j->id);
            return;
        }
        s->counters.evictions += op->evicted;
        s->counters.trimmed += req->trimmed;
        req->version = op->in.version;
        job_finish(j, 0, NULL);
        return;
    case CTX_OP_REMOVE:
        if (op->status == CTX_ENOTFOUND)
            job_fail(j, CTX_ENOTFOUND, "conversation '%s' not found", j->id);
        else
            job_finish(j, 0, NULL);
        return;
    case CTX_OP_LIST:
        req->items = op->items;
        req->n_items = op->n_items;
        op->items = NULL;
        req->next_cursor =
            op->more && req->n_items ? strdup(req->items[req->n_items - 1].id) : NULL;
        job_finish(j, 0, NULL);
        return;
    case CTX_OP_COUNT:
        req->stats = s->counters;
        req->stats.active = op->count;
        job_finish(j, 0, NULL);
        return;
    case CTX_OP_EXPIRE:
        req->expired = op->count;
        s->counters.expirations += op->count;
        job_finish(j, 0, NULL);
        return;
    }
}

static void job_submit(struct ctx_job *j, ctx_op_kind kind)
{
    ctx_store *s = j->s;
    ctx_op *op = &j->op;
    if (s->closing) { /* the backend is closing or gone: never hand it a new op */
        job_fail(j, CTX_ECANCELED, "context store %s was closed with the request pending", s->name);
        return;
    }
    ctx_row_clear(&op->row);
    op->kind = kind;
    op->tenant = j->tenant;
    op->id = j->id;
    if (kind != CTX_OP_CAS) /* CAS keeps the time its record was stamped with */
        op->now = clock_wall_ms();
    op->cutoff = s->ttl_ms ? op->now - s->ttl_ms : 0;
    op->cursor = j->cursor;
    op->status = 0;
    op->errmsg[0] = 0;
    op->count = op->evicted = op->expired = 0;
    op->more = false;
    op->retry = 0;
    op->done = op_done;
    op->data = j;
    s->be->submit(s, op);
}

static int req_start(ctx_store *s, ctx_req *req, ctx_req_type type, const char *tenant,
                     const char *id, ctx_cb cb, struct ctx_job **out)
{
    memset(req, 0, offsetof(ctx_req, job_) + sizeof(req->job_));
    req->type = type;
    if (s->closing) {
        snprintf(req->errmsg, sizeof(req->errmsg), "context store %s is closing", s->name);
        return req->result = CTX_ECANCELED;
    }
    if (!tenant) tenant = CTX_TENANT_DEFAULT;
    if (type != CTX_REQ_STATS && type != CTX_REQ_EXPIRE) {
        int rc = ctx_id_validate("tenant", tenant, true, req->errmsg, sizeof(req->errmsg));
        if (rc == 0 && type != CTX_REQ_LIST)
            rc = ctx_id_validate("conversation id", id, false, req->errmsg, sizeof(req->errmsg));
        if (rc != 0) return req->result = rc;
    }
    struct ctx_job *j = calloc(1, sizeof(*j));
    if (!j) abort();
    j->s = s;
    j->req = req;
    j->cb = cb;
    snprintf(j->tenant, sizeof(j->tenant), "%s", tenant);
    snprintf(j->id, sizeof(j->id), "%s", id ? id : "");
    j->expected = CTX_VERSION_ANY;
    req->job_ = j;
    *out = j;
    return 0;
}

static int req_go(struct ctx_job *j, ctx_op_kind kind)
{
    j->s->pending++;
    job_submit(j, kind);
    return 0;
}

int ctx_store_get(ctx_store *s, ctx_req *req, const char *tenant, const char *id, ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_GET, tenant, id, cb, &j);
    req->data = data;
    return rc ? rc : req_go(j, CTX_OP_LOAD);
}

/* What every append checks before it starts; frees the job when it fails. */
static int append_start(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                        const json_t *messages, ctx_cb cb, struct ctx_job **out)
{
    void *data = req->data;
    int rc = req_start(s, req, CTX_REQ_APPEND, tenant, id, cb, out);
    req->data = data;
    if (rc == 0 && s->read_only) {
        rc = req->result = CTX_EREADONLY;
        snprintf(req->errmsg, sizeof(req->errmsg),
                 "context store %s is ReadOnlyMany (interactionPatterns.readWriteMode); history "
                 "is injected but never written",
                 s->name);
    }
    if (rc == 0)
        rc = req->result = ctx_messages_validate_append(messages, req->errmsg, sizeof(req->errmsg));
    if (rc != 0 && req->job_) {
        free(req->job_);
        req->job_ = NULL;
    }
    return rc;
}

int ctx_store_append(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                     const json_t *messages, uint64_t expected_version, ctx_cb cb)
{
    struct ctx_job *j;
    int rc = append_start(s, req, tenant, id, messages, cb, &j);
    if (rc != 0) return rc;
    j->messages = json_deep_copy(messages);
    j->expected = expected_version;
    return req_go(j, CTX_OP_LOAD);
}

int ctx_store_append_to(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                        const ctx_record *base, const json_t *messages, ctx_cb cb)
{
    struct ctx_job *j;
    int rc = append_start(s, req, tenant, id, messages, cb, &j);
    if (rc == 0 && base &&
        (!base->id || strcmp(base->id, j->id) != 0 || !json_is_array(base->messages))) {
        rc = req->result = CTX_EINVAL;
        snprintf(req->errmsg, sizeof(req->errmsg),
                 "append_to: base is not the record of this conversation as read by "
                 "ctx_store_get (its id or messages differ)");
    }
    if (rc == 0) {
        j->from_base = true;
        j->expected = base ? base->version : 0;
        j->op.now = clock_wall_ms();
        ctx_record *r = appended(s, j->id, base, messages, j->op.now, &req->trimmed);
        char err[256];
        rc = stage_write(j, r, j->expected, err, sizeof(err));
        if (rc != 0) {
            req->result = rc;
            snprintf(req->errmsg, sizeof(req->errmsg), "%s", err);
        }
    }
    if (rc != 0) {
        if (req->job_) {
            ctx_record_free(j->op.in.rec);
            buf_free(&j->blob);
            free(req->job_);
            req->job_ = NULL;
        }
        return rc;
    }
    return req_go(j, CTX_OP_CAS);
}

int ctx_store_set_summary(ctx_store *s, ctx_req *req, const char *tenant, const char *id,
                          const char *summary, size_t replaces, uint64_t expected_version,
                          ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_SET_SUMMARY, tenant, id, cb, &j);
    req->data = data;
    if (rc == 0 && s->read_only) {
        rc = req->result = CTX_EREADONLY;
        snprintf(req->errmsg, sizeof(req->errmsg),
                 "context store %s is ReadOnlyMany; summaries are not written", s->name);
    }
    if (rc == 0 && !summary) {
        rc = req->result = CTX_EINVAL;
        snprintf(req->errmsg, sizeof(req->errmsg), "summary must not be NULL");
    }
    if (rc != 0) {
        if (req->job_) {
            free(req->job_);
            req->job_ = NULL;
        }
        return rc;
    }
    j->summary = strdup(summary);
    j->replaces = replaces;
    j->expected = expected_version;
    return req_go(j, CTX_OP_LOAD);
}

int ctx_store_delete(ctx_store *s, ctx_req *req, const char *tenant, const char *id, ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_DELETE, tenant, id, cb, &j);
    req->data = data;
    return rc ? rc : req_go(j, CTX_OP_REMOVE);
}

int ctx_store_list(ctx_store *s, ctx_req *req, const char *tenant, size_t limit, const char *cursor,
                   ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_LIST, tenant, NULL, cb, &j);
    req->data = data;
    if (rc == 0 && (limit > 1000 || (cursor && strlen(cursor) > CTX_ID_MAX))) {
        free(req->job_);
        req->job_ = NULL;
        snprintf(req->errmsg, sizeof(req->errmsg),
                 limit > 1000 ? "limit must be between 1 and 1000" : "cursor is not valid");
        return req->result = CTX_EINVAL;
    }
    if (rc) return rc;
    j->op.limit = limit ? limit : 100;
    j->cursor = cursor ? strdup(cursor) : NULL;
    return req_go(j, CTX_OP_LIST);
}

int ctx_store_stats(ctx_store *s, ctx_req *req, ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_STATS, NULL, NULL, cb, &j);
    req->data = data;
    return rc ? rc : req_go(j, CTX_OP_COUNT);
}

int ctx_store_expire(ctx_store *s, ctx_req *req, ctx_cb cb)
{
    void *data = req->data;
    struct ctx_job *j;
    int rc = req_start(s, req, CTX_REQ_EXPIRE, NULL, NULL, cb, &j);
    req->data = data;
    return rc ? rc : req_go(j, CTX_OP_EXPIRE);
}

void ctx_req_cleanup(ctx_req *req)
{
    ctx_record_free(req->record);
    req->record = NULL;
    for (size_t i = 0; i < req->n_items; i++)
        free(req->items[i].id);
    free(req->items);
    req->items = NULL;
    req->n_items = 0;
    free(req->next_cursor);
    req->next_cursor = NULL;
}
