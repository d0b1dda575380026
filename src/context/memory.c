/* memory.c — the Memory context backend: one hash map per ModelContextProtocol, shared by
 * every worker loop of the process (a mutex guards it; operations are a few pointer moves and
 * one copy, so holding it is short). Without encryption an entry holds its record decoded
 * (keeps_records): a read hands out a ctx_record_share() copy and a write takes the record
 * store.c built, so the hot path neither parses nor serialises JSON (that was most of a
 * request's cost). Sealed records, and bytes written by raw CAS, are kept as bytes. Entries sit on
 * two lists: by last access (LRU eviction and TTL sweeps walk it from the oldest) and by creation
 * (FIFO / LIFO eviction). Results are delivered on the caller's loop through ctx_op_defer. The map
 * lives while any handle for the MCP is open: on reload open the new handles before closing the old
 * ones. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "context/backend.h"

typedef struct mem_entry mem_entry;
struct mem_entry {
    char *tenant, *id;
    uint64_t hash;
    ctx_row row;
    mem_entry *hnext;               /* bucket chain */
    mem_entry *lru_prev, *lru_next; /* by accessed_at, oldest first */
    mem_entry *age_prev, *age_next; /* by created_at, oldest first */
};

typedef struct mem_list {
    mem_entry *head, *tail;
} mem_list;

typedef struct mem_db mem_db;
struct mem_db {
    char *name;
    int refs;
    pthread_mutex_t lock;
    mem_entry **buckets;
    size_t n_buckets, count;
    mem_list lru, age;
    mem_db *next;
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mem_db *registry;

static uint64_t key_hash(const char *tenant, const char *id)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *p = tenant; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull; /* separator no id byte can take */
    for (const char *p = id; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

#define LIST_UNLINK(l, e, prev, next)                                                              \
    do {                                                                                           \
        if ((e)->prev)                                                                             \
            (e)->prev->next = (e)->next;                                                           \
        else                                                                                       \
            (l)->head = (e)->next;                                                                 \
        if ((e)->next)                                                                             \
            (e)->next->prev = (e)->prev;                                                           \
        else                                                                                       \
            (l)->tail = (e)->prev;                                                                 \
        (e)->prev = (e)->next = NULL;                                                              \
    } while (0)

#define LIST_PUSH(l, e, prev, next)                                                                \
    do {                                                                                           \
        (e)->prev = (l)->tail;                                                                     \
        (e)->next = NULL;                                                                          \
        if ((l)->tail)                                                                             \
            (l)->tail->next = (e);                                                                 \
        else                                                                                       \
            (l)->head = (e);                                                                       \
        (l)->tail = (e);                                                                           \
    } while (0)

static void entry_free(mem_entry *e)
{
    free(e->tenant);
    free(e->id);
    ctx_row_clear(&e->row);
    free(e);
}

static void entry_remove(mem_db *db, mem_entry *e)
{
    mem_entry **pp = &db->buckets[e->hash % db->n_buckets];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    LIST_UNLINK(&db->lru, e, lru_prev, lru_next);
    LIST_UNLINK(&db->age, e, age_prev, age_next);
    db->count--;
    entry_free(e);
}

static void rehash(mem_db *db)
{
    size_t n = db->n_buckets * 2;
    mem_entry **b = calloc(n, sizeof(*b));
    if (!b) abort();
    for (size_t i = 0; i < db->n_buckets; i++) {
        mem_entry *e = db->buckets[i];
        while (e) {
            mem_entry *next = e->hnext;
            e->hnext = b[e->hash % n];
            b[e->hash % n] = e;
            e = next;
        }
    }
    free(db->buckets);
    db->buckets = b;
    db->n_buckets = n;
}

/* Removes what the TTL says is gone, oldest access first. */
static uint64_t sweep(mem_db *db, int64_t cutoff)
{
    uint64_t n = 0;
    while (cutoff && db->lru.head && db->lru.head->row.accessed_at < cutoff) {
        entry_remove(db, db->lru.head);
        n++;
    }
    return n;
}

static mem_entry *find(mem_db *db, ctx_op *op)
{
    uint64_t h = key_hash(op->tenant, op->id);
    for (mem_entry *e = db->buckets[h % db->n_buckets]; e; e = e->hnext) {
        if (e->hash == h && strcmp(e->tenant, op->tenant) == 0 && strcmp(e->id, op->id) == 0) {
            if (op->cutoff && e->row.accessed_at < op->cutoff) {
                entry_remove(db, e);
                op->expired++;
                return NULL;
            }
            return e;
        }
    }
    return NULL;
}

static void touch(mem_db *db, mem_entry *e, int64_t now)
{
    e->row.accessed_at = now;
    LIST_UNLINK(&db->lru, e, lru_prev, lru_next);
    LIST_PUSH(&db->lru, e, lru_prev, lru_next);
}

/* The entry's row becomes op->in: the decoded record is taken, bytes are copied. */
static void set_row(mem_entry *e, ctx_op *op)
{
    ctx_row_clear(&e->row);
    e->row = op->in;
    if (op->in.rec) {
        op->in.rec = NULL;
        e->row.blob = NULL;
        e->row.blob_len = 0;
        return;
    }
    e->row.blob = malloc(op->in.blob_len ? op->in.blob_len : 1);
    if (!e->row.blob) abort();
    memcpy(e->row.blob, op->in.blob, op->in.blob_len);
}

static void evict_for_insert(ctx_store *s, mem_db *db, ctx_op *op)
{
    while (s->max_entries > 0 && db->count >= (size_t)s->max_entries && db->count > 0) {
        mem_entry *victim = s->eviction == EVICT_LRU    ? db->lru.head
                            : s->eviction == EVICT_FIFO ? db->age.head
                                                        : db->age.tail;
        entry_remove(db, victim);
        op->evicted++;
    }
}

static void do_cas(ctx_store *s, mem_db *db, ctx_op *op)
{
    mem_entry *e = find(db, op);
    if (op->old_version == 0) {
        if (e) {
            op->status = CTX_ECONFLICT;
            return;
        }
        op->expired += sweep(db, op->cutoff);
        evict_for_insert(s, db, op);
        e = calloc(1, sizeof(*e));
        if (!e) abort();
        e->tenant = strdup(op->tenant);
        e->id = strdup(op->id);
        e->hash = key_hash(op->tenant, op->id);
        set_row(e, op);
        if (db->count + 1 > db->n_buckets * 2) rehash(db);
        e->hnext = db->buckets[e->hash % db->n_buckets];
        db->buckets[e->hash % db->n_buckets] = e;
        LIST_PUSH(&db->lru, e, lru_prev, lru_next);
        LIST_PUSH(&db->age, e, age_prev, age_next);
        db->count++;
        return;
    }
    if (!e || e->row.version != op->old_version) {
        op->status = CTX_ECONFLICT;
        return;
    }
    int64_t created = e->row.created_at;
    set_row(e, op);
    e->row.created_at = created;
    touch(db, e, op->now);
}

static int cmp_items(const void *a, const void *b)
{
    return strcmp(((const ctx_list_item *)a)->id, ((const ctx_list_item *)b)->id);
}

static void do_list(mem_db *db, ctx_op *op)
{
    op->expired += sweep(db, op->cutoff);
    size_t cap = 16, n = 0;
    ctx_list_item *items = malloc(cap * sizeof(*items));
    if (!items) abort();
    for (size_t i = 0; i < db->n_buckets; i++) {
        for (mem_entry *e = db->buckets[i]; e; e = e->hnext) {
            if (strcmp(e->tenant, op->tenant) != 0 ||
                (op->cursor && strcmp(e->id, op->cursor) <= 0))
                continue;
            if (n == cap) {
                cap *= 2;
                items = realloc(items, cap * sizeof(*items));
                if (!items) abort();
            }
            items[n++] = (ctx_list_item){e->id, e->row.turns, e->row.created_at, e->row.updated_at};
        }
    }
    qsort(items, n, sizeof(*items), cmp_items);
    op->more = n > op->limit;
    if (n > op->limit) n = op->limit;
    for (size_t i = 0; i < n; i++)
        items[i].id = strdup(items[i].id);
    op->items = items;
    op->n_items = n;
}

static void mem_submit(ctx_store *s, ctx_op *op)
{
    mem_db *db = s->impl;
    pthread_mutex_lock(&db->lock);
    mem_entry *e;
    switch (op->kind) {
    case CTX_OP_LOAD:
        e = find(db, op);
        if (!e) {
            op->status = CTX_ENOTFOUND;
            break;
        }
        touch(db, e, op->now); /* sliding TTL and LRU order follow reads too */
        op->row = e->row;
        if (e->row.rec) {
            op->row.rec = ctx_record_share(e->row.rec);
            break;
        }
        op->row.blob = malloc(e->row.blob_len ? e->row.blob_len : 1);
        if (!op->row.blob) abort();
        memcpy(op->row.blob, e->row.blob, e->row.blob_len);
        break;
    case CTX_OP_CAS:
        do_cas(s, db, op);
        break;
    case CTX_OP_REMOVE:
        e = find(db, op);
        if (e)
            entry_remove(db, e);
        else
            op->status = CTX_ENOTFOUND;
        break;
    case CTX_OP_LIST:
        do_list(db, op);
        break;
    case CTX_OP_COUNT:
        op->expired += sweep(db, op->cutoff);
        op->count = db->count;
        break;
    case CTX_OP_EXPIRE:
        op->count = sweep(db, op->cutoff);
        break;
    }
    pthread_mutex_unlock(&db->lock);
    ctx_op_defer(s, op);
}

static int mem_open(ctx_store *s, char *err, size_t errlen)
{
    pthread_mutex_lock(&registry_lock);
    mem_db *db = registry;
    while (db && strcmp(db->name, s->name) != 0)
        db = db->next;
    if (!db) {
        db = calloc(1, sizeof(*db));
        if (!db) abort();
        db->name = strdup(s->name);
        pthread_mutex_init(&db->lock, NULL);
        db->n_buckets = 64;
        db->buckets = calloc(db->n_buckets, sizeof(*db->buckets));
        if (!db->buckets) abort();
        db->next = registry;
        registry = db;
    }
    db->refs++;
    pthread_mutex_unlock(&registry_lock);
    s->impl = db;
    return 0;
}

static void mem_close(ctx_store *s, void (*done)(ctx_store *s))
{
    mem_db *db = s->impl;
    pthread_mutex_lock(&registry_lock);
    if (--db->refs == 0) {
        mem_db **pp = &registry;
        while (*pp != db)
            pp = &(*pp)->next;
        *pp = db->next;
        while (db->lru.head)
            entry_remove(db, db->lru.head);
        free(db->buckets);
        free(db->name);
        pthread_mutex_destroy(&db->lock);
        free(db);
    }
    pthread_mutex_unlock(&registry_lock);
    s->impl = NULL;
    done(s); /* deferred ops already carry their results; store.c turns them into ECANCELED */
}

const ctx_backend ctx_backend_memory = {"memory", mem_open, mem_submit, mem_close, true};
