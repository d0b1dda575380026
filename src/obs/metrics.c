/* metrics.c — Prometheus metrics sharded per worker thread.
 *
 * Each shard has exactly one writer (its worker). The writer finds a label set's series in a
 * private open-addressing hash table that nobody else touches, so the common case (an existing
 * series) takes no lock and no read-modify-write atomic: counters are updated with a relaxed
 * load + relaxed store, which compiles to plain moves yet lets a concurrent scrape read each value
 * whole. The shard mutex is taken only to link a new series (or a new status of a series) into
 * the lists the scraper walks, and by the scraper itself. A scrape sums every shard per label set.
 *
 * Histogram _count is derived from the buckets at render time, so _count always equals the +Inf
 * bucket even when a scrape races an observation. */
#include "obs/metrics.h"

#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/utf8.h"

#ifndef CTXGATE_VERSION
#define CTXGATE_VERSION "0.1.0"
#endif

/* Beyond this many label sets per shard and table, new ones are counted under "_overflow" labels:
 * a bug that puts client input into a label must not grow memory without bound. */
#define OBS_MAX_SERIES 4096
#define OBS_OVERFLOW "_overflow"

/* ---- histogram bucket layouts (upper bounds in microseconds, and as printed) ---- */

typedef struct obs_layout {
    size_t n;
    const uint64_t *le_us;
    const char *const *le_txt;
} obs_layout;

/* Request and upstream durations: LLM calls run from milliseconds (cache, errors) to minutes. */
static const uint64_t dur_le_us[] = {5000,     10000,    25000,    50000,     100000,
                                     250000,   500000,   1000000,  2500000,   5000000,
                                     10000000, 30000000, 60000000, 120000000, 300000000};
static const char *const dur_le_txt[] = {"0.005", "0.01", "0.025", "0.05", "0.1",
                                         "0.25",  "0.5",  "1",     "2.5",  "5",
                                         "10",    "30",   "60",    "120",  "300"};
/* Time to first token: what a user waits before text starts to appear. */
static const uint64_t ttft_le_us[] = {10000,   25000,   50000,   100000,   250000,   500000,
                                      1000000, 2000000, 5000000, 10000000, 30000000, 60000000};
static const char *const ttft_le_txt[] = {"0.01", "0.025", "0.05", "0.1", "0.25", "0.5",
                                          "1",    "2",     "5",    "10",  "30",   "60"};

#define N_DUR (sizeof dur_le_us / sizeof dur_le_us[0])
#define N_TTFT (sizeof ttft_le_us / sizeof ttft_le_us[0])
#define OBS_HIST_MAX 16 /* bounds of the largest layout + 1 for +Inf */

_Static_assert(N_DUR + 1 <= OBS_HIST_MAX, "duration layout too large");
_Static_assert(N_TTFT + 1 <= OBS_HIST_MAX, "ttft layout too large");
_Static_assert(sizeof dur_le_txt / sizeof dur_le_txt[0] == N_DUR, "duration labels");
_Static_assert(sizeof ttft_le_txt / sizeof ttft_le_txt[0] == N_TTFT, "ttft labels");

/* context-store operations: a memory op takes microseconds, a remote one milliseconds */
static const uint64_t ctx_le_us[] = {50,    100,   250,   500,    1000,   2500,   5000,
                                     10000, 25000, 50000, 100000, 250000, 1000000};
static const char *const ctx_le_txt[] = {"0.00005", "0.0001", "0.00025", "0.0005", "0.001",
                                         "0.0025",  "0.005",  "0.01",    "0.025",  "0.05",
                                         "0.1",     "0.25",   "1"};
#define N_CTX (sizeof ctx_le_us / sizeof ctx_le_us[0])
_Static_assert(N_CTX + 1 <= OBS_HIST_MAX, "ctx layout too large");
_Static_assert(sizeof ctx_le_txt / sizeof ctx_le_txt[0] == N_CTX, "ctx labels");
static const obs_layout layout_ctx = {N_CTX, ctx_le_us, ctx_le_txt};
static const obs_layout layout_dur = {N_DUR, dur_le_us, dur_le_txt};
static const obs_layout layout_ttft = {N_TTFT, ttft_le_us, ttft_le_txt};

/* Per-bucket (not cumulative) counts; bucket[layout.n] is the +Inf overflow. */
typedef struct obs_hist {
    _Atomic uint64_t bucket[OBS_HIST_MAX];
    _Atomic uint64_t sum_us;
} obs_hist;

/* ---- series ---- */

/* Label values of one series, interned (copied once when the series is created). The third
 * value is "" for two-label families. */
typedef struct obs_labels {
    char *v[3];
    uint64_t hash;
} obs_labels;

typedef struct obs_status {
    int status;
    _Atomic uint64_t n;
    struct obs_status *next;
} obs_status;

/* {gateway, route, model} */
typedef struct obs_route_series {
    obs_labels labels; /* first: the tables hold obs_labels pointers */
    obs_status *statuses;
    obs_hist duration, upstream, ttft;
    _Atomic uint64_t prompt_tokens, completion_tokens;
    _Atomic uint64_t cost_bits; /* a double's bits, so one relaxed atomic word holds it */
    struct obs_route_series *next;
} obs_route_series;

/* {target, kind} */
typedef struct obs_error_series {
    obs_labels labels;
    _Atomic uint64_t n;
    struct obs_error_series *next;
} obs_error_series;

/* {mcp, backend, op}: context-store operations */
typedef struct obs_ctx_series {
    obs_labels labels;
    obs_hist duration;
    _Atomic uint64_t errors;
    struct obs_ctx_series *next;
} obs_ctx_series;

/* Open-addressing table of series, keyed by label values. */
typedef struct obs_table {
    obs_labels **slot;
    size_t cap; /* power of two */
    size_t n;
} obs_table;

struct obs_shard {
    /* owner-only, read without locks */
    obs_table routes_by_labels;
    obs_table errors_by_labels;
    obs_table ctx_by_labels;
    /* the scraper's view: lists and status lists are linked and walked under mu */
    pthread_mutex_t mu;
    obs_route_series *routes;
    obs_error_series *errors;
    obs_ctx_series *ctx;
    _Atomic int64_t inflight;
    struct obs_shard *next_shard;
};

static pthread_mutex_t g_registry_mu = PTHREAD_MUTEX_INITIALIZER;
static obs_shard *g_shards;
static obs_shard *g_shared; /* the NULL shard, created on first use */
static pthread_mutex_t g_shared_writer_mu = PTHREAD_MUTEX_INITIALIZER;
static _Atomic uint64_t g_reloads_ok, g_reloads_failed;
static void (*_Atomic g_conn_fn)(obs_conn_figures *out, void *ctx);
static void *_Atomic g_conn_ctx;

void obs_set_conn_figures(void (*fn)(obs_conn_figures *out, void *ctx), void *ctx)
{
    atomic_store(&g_conn_ctx, ctx);
    atomic_store(&g_conn_fn, fn);
}

static void put_family(buf *out, const char *name, const char *type, const char *help);

static void render_conn_figures(buf *out)
{
    void (*fn)(obs_conn_figures *, void *) = atomic_load(&g_conn_fn);
    if (!fn) return;
    obs_conn_figures f = {0};
    fn(&f, atomic_load(&g_conn_ctx));
    put_family(out, "ctxgate_http_connections", "gauge", "Client connections open now.");
    buf_printf(out, "ctxgate_http_connections %llu\n", (unsigned long long)f.open);
    put_family(out, "ctxgate_http_connections_max", "gauge",
               "Client connections allowed at once (spec.listener.maxConnections, capped by "
               "the open-file limit).");
    buf_printf(out, "ctxgate_http_connections_max %llu\n", (unsigned long long)f.max);
    put_family(out, "ctxgate_http_connections_limited_total", "counter",
               "Connections closed because of maxConnections: idle ones closed to make room "
               "(action=closed_idle), new ones refused when nothing was idle (action=refused).");
    buf_printf(out, "ctxgate_http_connections_limited_total{action=\"closed_idle\"} %llu\n",
               (unsigned long long)f.idle_closed);
    buf_printf(out, "ctxgate_http_connections_limited_total{action=\"refused\"} %llu\n",
               (unsigned long long)f.refused);
}
static char g_version[64] = CTXGATE_VERSION;

/* ---- single-writer counter updates ---- */

static inline void ctr_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t ctr_get(_Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

static inline uint64_t dbl_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double bits_dbl(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static void hist_observe(obs_hist *h, const obs_layout *l, uint64_t us)
{
    size_t i = 0;
    while (i < l->n && us > l->le_us[i])
        i++;
    ctr_add(&h->bucket[i], 1);
    ctr_add(&h->sum_us, us);
}

/* ---- label tables ---- */

static uint64_t labels_hash(const char *a, const char *b, const char *c)
{
    /* FNV-1a with a separator byte so ("ab","c") and ("a","bc") differ */
    uint64_t h = 1469598103934665603ull;
    const char *v[3] = {a, b, c};
    for (int k = 0; k < 3; k++) {
        for (const unsigned char *p = (const unsigned char *)v[k]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ull;
        }
        h ^= 0xff;
        h *= 1099511628211ull;
    }
    return h;
}

static bool labels_eq(const obs_labels *l, uint64_t hash, const char *a, const char *b,
                      const char *c)
{
    return l->hash == hash && strcmp(l->v[0], a) == 0 && strcmp(l->v[1], b) == 0 &&
           strcmp(l->v[2], c) == 0;
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    if (!p) {
        fprintf(stderr, "ctxgate: out of memory allocating metrics (%zu bytes)\n", n * size);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    char *p = strdup(s);
    if (!p) {
        fprintf(stderr, "ctxgate: out of memory copying a metrics label\n");
        abort();
    }
    return p;
}

static obs_labels *table_find(const obs_table *t, uint64_t hash, const char *a, const char *b,
                              const char *c)
{
    if (!t->cap) return NULL;
    for (size_t i = hash & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        obs_labels *l = t->slot[i];
        if (!l) return NULL;
        if (labels_eq(l, hash, a, b, c)) return l;
    }
}

static void table_put(obs_table *t, obs_labels *l)
{
    if ((t->n + 1) * 4 > t->cap * 3) { /* keep the load under 3/4 */
        size_t ncap = t->cap ? t->cap * 2 : 16;
        obs_labels **ns = xcalloc(ncap, sizeof *ns);
        for (size_t i = 0; i < t->cap; i++) {
            obs_labels *o = t->slot[i];
            if (!o) continue;
            size_t j = o->hash & (ncap - 1);
            while (ns[j])
                j = (j + 1) & (ncap - 1);
            ns[j] = o;
        }
        free(t->slot);
        t->slot = ns;
        t->cap = ncap;
    }
    size_t j = l->hash & (t->cap - 1);
    while (t->slot[j])
        j = (j + 1) & (t->cap - 1);
    t->slot[j] = l;
    t->n++;
}

static void labels_init(obs_labels *l, uint64_t hash, const char *a, const char *b, const char *c)
{
    l->v[0] = xstrdup(a);
    l->v[1] = xstrdup(b);
    l->v[2] = xstrdup(c);
    l->hash = hash;
}

static inline const char *nz(const char *s)
{
    return s ? s : "";
}

/* A new series is linked with the status it is created for already attached, so a scrape never
 * shows a label set without its requests_total line. */
static obs_route_series *route_series_get(obs_shard *s, const char *g, const char *r, const char *m,
                                          int status)
{
    uint64_t h = labels_hash(g, r, m);
    obs_labels *l = table_find(&s->routes_by_labels, h, g, r, m);
    if (l) return (obs_route_series *)l;
    if (s->routes_by_labels.n >= OBS_MAX_SERIES) {
        g = r = m = OBS_OVERFLOW;
        h = labels_hash(g, r, m);
        l = table_find(&s->routes_by_labels, h, g, r, m);
        if (l) return (obs_route_series *)l;
    }
    obs_route_series *rs = xcalloc(1, sizeof *rs);
    labels_init(&rs->labels, h, g, r, m);
    rs->cost_bits = dbl_bits(0.0);
    rs->statuses = xcalloc(1, sizeof *rs->statuses);
    rs->statuses->status = status;
    table_put(&s->routes_by_labels, &rs->labels);
    pthread_mutex_lock(&s->mu);
    rs->next = s->routes;
    s->routes = rs;
    pthread_mutex_unlock(&s->mu);
    return rs;
}

static obs_status *status_get(obs_shard *s, obs_route_series *rs, int status)
{
    for (obs_status *st = rs->statuses; st; st = st->next)
        if (st->status == status) return st;
    obs_status *st = xcalloc(1, sizeof *st);
    st->status = status;
    pthread_mutex_lock(&s->mu);
    st->next = rs->statuses;
    rs->statuses = st;
    pthread_mutex_unlock(&s->mu);
    return st;
}

static obs_error_series *error_series_get(obs_shard *s, const char *target, const char *kind)
{
    uint64_t h = labels_hash(target, kind, "");
    obs_labels *l = table_find(&s->errors_by_labels, h, target, kind, "");
    if (l) return (obs_error_series *)l;
    if (s->errors_by_labels.n >= OBS_MAX_SERIES) {
        target = kind = OBS_OVERFLOW;
        h = labels_hash(target, kind, "");
        l = table_find(&s->errors_by_labels, h, target, kind, "");
        if (l) return (obs_error_series *)l;
    }
    obs_error_series *es = xcalloc(1, sizeof *es);
    labels_init(&es->labels, h, target, kind, "");
    table_put(&s->errors_by_labels, &es->labels);
    pthread_mutex_lock(&s->mu);
    es->next = s->errors;
    s->errors = es;
    pthread_mutex_unlock(&s->mu);
    return es;
}

/* ---- shards ---- */

static obs_shard *shard_alloc_locked(void)
{
    obs_shard *s = xcalloc(1, sizeof *s);
    pthread_mutex_init(&s->mu, NULL);
    s->next_shard = g_shards;
    g_shards = s;
    return s;
}

obs_shard *obs_shard_new(void)
{
    pthread_mutex_lock(&g_registry_mu);
    obs_shard *s = shard_alloc_locked();
    pthread_mutex_unlock(&g_registry_mu);
    return s;
}

/* The NULL shard: callers serialise on g_shared_writer_mu to keep its single-writer rule. */
static obs_shard *shared_shard(void)
{
    pthread_mutex_lock(&g_registry_mu);
    if (!g_shared) g_shared = shard_alloc_locked();
    obs_shard *s = g_shared;
    pthread_mutex_unlock(&g_registry_mu);
    return s;
}

static void record_request(obs_shard *s, const obs_request *r)
{
    obs_route_series *rs =
        route_series_get(s, nz(r->gateway), nz(r->route), nz(r->model), r->status);
    ctr_add(&status_get(s, rs, r->status)->n, 1);
    hist_observe(&rs->duration, &layout_dur, r->duration_us);
    if (r->upstream_us) hist_observe(&rs->upstream, &layout_dur, r->upstream_us);
    if (r->ttft_us) hist_observe(&rs->ttft, &layout_ttft, r->ttft_us);
    if (r->prompt_tokens) ctr_add(&rs->prompt_tokens, r->prompt_tokens);
    if (r->completion_tokens) ctr_add(&rs->completion_tokens, r->completion_tokens);
    if (r->cost_usd > 0) {
        double c = bits_dbl(ctr_get(&rs->cost_bits)) + r->cost_usd;
        atomic_store_explicit(&rs->cost_bits, dbl_bits(c), memory_order_relaxed);
    }
}

void obs_record_request(obs_shard *s, const obs_request *r)
{
    if (s) {
        record_request(s, r);
        return;
    }
    s = shared_shard();
    pthread_mutex_lock(&g_shared_writer_mu);
    record_request(s, r);
    pthread_mutex_unlock(&g_shared_writer_mu);
}

void obs_inflight_add(obs_shard *s, int delta)
{
    if (!s) {
        /* several writers: a real read-modify-write */
        atomic_fetch_add_explicit(&shared_shard()->inflight, delta, memory_order_relaxed);
        return;
    }
    atomic_store_explicit(&s->inflight,
                          atomic_load_explicit(&s->inflight, memory_order_relaxed) + delta,
                          memory_order_relaxed);
}

void obs_reload_record(int ok)
{
    atomic_fetch_add_explicit(ok ? &g_reloads_ok : &g_reloads_failed, 1, memory_order_relaxed);
}

static struct {
    pthread_mutex_t mu;
    char error[1024];
    size_t n_errors;
    int64_t wall_ms;
} g_last_reload = {.mu = PTHREAD_MUTEX_INITIALIZER};

void obs_reload_outcome(int ok, const char *first_error, size_t n_errors)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pthread_mutex_lock(&g_last_reload.mu);
    if (ok) {
        g_last_reload.error[0] = 0;
        g_last_reload.n_errors = 0;
    } else {
        snprintf(g_last_reload.error, sizeof g_last_reload.error, "%s",
                 first_error ? first_error : "rejected");
        g_last_reload.n_errors = n_errors ? n_errors : 1;
    }
    g_last_reload.wall_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    pthread_mutex_unlock(&g_last_reload.mu);
}

size_t obs_reload_last_error(char *out, size_t n, int64_t *wall_ms)
{
    pthread_mutex_lock(&g_last_reload.mu);
    snprintf(out, n, "%s", g_last_reload.error);
    size_t k = g_last_reload.n_errors;
    *wall_ms = g_last_reload.wall_ms;
    pthread_mutex_unlock(&g_last_reload.mu);
    return k;
}

void obs_upstream_error(obs_shard *s, const char *target, const char *kind)
{
    if (s) {
        ctr_add(&error_series_get(s, nz(target), nz(kind))->n, 1);
        return;
    }
    s = shared_shard();
    pthread_mutex_lock(&g_shared_writer_mu);
    ctr_add(&error_series_get(s, nz(target), nz(kind))->n, 1);
    pthread_mutex_unlock(&g_shared_writer_mu);
}

static obs_ctx_series *ctx_series_get(obs_shard *s, const char *mcp, const char *backend,
                                      const char *op)
{
    uint64_t h = labels_hash(mcp, backend, op);
    obs_labels *l = table_find(&s->ctx_by_labels, h, mcp, backend, op);
    if (l) return (obs_ctx_series *)l;
    if (s->ctx_by_labels.n >= OBS_MAX_SERIES) {
        mcp = backend = op = OBS_OVERFLOW;
        h = labels_hash(mcp, backend, op);
        l = table_find(&s->ctx_by_labels, h, mcp, backend, op);
        if (l) return (obs_ctx_series *)l;
    }
    obs_ctx_series *cs = xcalloc(1, sizeof *cs);
    labels_init(&cs->labels, h, mcp, backend, op);
    table_put(&s->ctx_by_labels, &cs->labels);
    pthread_mutex_lock(&s->mu);
    cs->next = s->ctx;
    s->ctx = cs;
    pthread_mutex_unlock(&s->mu);
    return cs;
}

static void ctx_op_record(obs_shard *s, const char *mcp, const char *backend, const char *op,
                          uint64_t us, int ok)
{
    obs_ctx_series *cs = ctx_series_get(s, nz(mcp), nz(backend), nz(op));
    hist_observe(&cs->duration, &layout_ctx, us);
    if (!ok) ctr_add(&cs->errors, 1);
}

void obs_ctx_op(obs_shard *s, const char *mcp, const char *backend, const char *op, uint64_t us,
                int ok)
{
    if (s) {
        ctx_op_record(s, mcp, backend, op, us, ok);
        return;
    }
    s = shared_shard();
    pthread_mutex_lock(&g_shared_writer_mu);
    ctx_op_record(s, mcp, backend, op, us, ok);
    pthread_mutex_unlock(&g_shared_writer_mu);
}

/* Store-wide figures: written every few seconds by the workers' maintenance timers, so one
 * process-wide mutex is plenty. */
typedef struct ctx_store_fig {
    char *mcp, *backend;
    int64_t active; /* -1 = not reported yet */
    uint64_t evictions, expirations;
    struct ctx_store_fig *next;
} ctx_store_fig;
static pthread_mutex_t g_ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static ctx_store_fig *g_ctx_figs;

static ctx_store_fig *ctx_fig_get_locked(const char *mcp, const char *backend)
{
    for (ctx_store_fig *f = g_ctx_figs; f; f = f->next)
        if (!strcmp(f->mcp, mcp) && !strcmp(f->backend, backend)) return f;
    ctx_store_fig *f = xcalloc(1, sizeof *f);
    f->mcp = xstrdup(mcp);
    f->backend = xstrdup(backend);
    f->active = -1;
    f->next = g_ctx_figs;
    g_ctx_figs = f;
    return f;
}

void obs_ctx_store_figures(const char *mcp, const char *backend, int64_t active,
                           uint64_t new_evictions, uint64_t new_expirations)
{
    pthread_mutex_lock(&g_ctx_mu);
    ctx_store_fig *f = ctx_fig_get_locked(nz(mcp), nz(backend));
    if (active >= 0) f->active = active;
    f->evictions += new_evictions;
    f->expirations += new_expirations;
    pthread_mutex_unlock(&g_ctx_mu);
}

void obs_set_build_info(const char *version)
{
    pthread_mutex_lock(&g_registry_mu);
    snprintf(g_version, sizeof g_version, "%s", version ? version : "");
    pthread_mutex_unlock(&g_registry_mu);
}

/* ---- scrape: sum the shards per label set ---- */

typedef struct agg_status {
    int status;
    uint64_t n;
} agg_status;

typedef struct agg_hist {
    uint64_t bucket[OBS_HIST_MAX];
    uint64_t sum_us;
} agg_hist;

typedef struct agg_route {
    obs_labels labels; /* borrowed from the first shard's series: shards live for the process */
    agg_status *st;
    size_t nst, capst;
    agg_hist duration, upstream, ttft;
    uint64_t prompt_tokens, completion_tokens;
    double cost;
} agg_route;

typedef struct agg_error {
    obs_labels labels;
    uint64_t n;
} agg_error;

typedef struct agg_ctx {
    obs_labels labels;
    agg_hist duration;
    uint64_t errors;
} agg_ctx;

typedef struct agg {
    obs_table routes_by_labels, errors_by_labels, ctx_by_labels;
    agg_ctx **ctx;
    size_t nctx, capctx;
    agg_route **routes;
    size_t nroutes, caproutes;
    agg_error **errors;
    size_t nerrors, caperrors;
    int64_t inflight;
} agg;

static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return p;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need)
        ncap *= 2;
    void *np = realloc(p, ncap * elem);
    if (!np) {
        fprintf(stderr, "ctxgate: out of memory rendering metrics\n");
        abort();
    }
    *cap = ncap;
    return np;
}

static void agg_hist_add(agg_hist *a, obs_hist *h)
{
    for (size_t i = 0; i < OBS_HIST_MAX; i++)
        a->bucket[i] += ctr_get(&h->bucket[i]);
    a->sum_us += ctr_get(&h->sum_us);
}

static void agg_route_add(agg *a, obs_route_series *rs)
{
    const obs_labels *l = &rs->labels;
    agg_route *ar =
        (agg_route *)table_find(&a->routes_by_labels, l->hash, l->v[0], l->v[1], l->v[2]);
    if (!ar) {
        ar = xcalloc(1, sizeof *ar);
        ar->labels = *l;
        table_put(&a->routes_by_labels, &ar->labels);
        a->routes = grow(a->routes, &a->caproutes, a->nroutes + 1, sizeof *a->routes);
        a->routes[a->nroutes++] = ar;
    }
    for (obs_status *st = rs->statuses; st; st = st->next) {
        size_t i = 0;
        while (i < ar->nst && ar->st[i].status != st->status)
            i++;
        if (i == ar->nst) {
            ar->st = grow(ar->st, &ar->capst, ar->nst + 1, sizeof *ar->st);
            ar->st[ar->nst++] = (agg_status){st->status, 0};
        }
        ar->st[i].n += ctr_get(&st->n);
    }
    agg_hist_add(&ar->duration, &rs->duration);
    agg_hist_add(&ar->upstream, &rs->upstream);
    agg_hist_add(&ar->ttft, &rs->ttft);
    ar->prompt_tokens += ctr_get(&rs->prompt_tokens);
    ar->completion_tokens += ctr_get(&rs->completion_tokens);
    ar->cost += bits_dbl(ctr_get(&rs->cost_bits));
}

static void agg_error_add(agg *a, obs_error_series *es)
{
    const obs_labels *l = &es->labels;
    agg_error *ae =
        (agg_error *)table_find(&a->errors_by_labels, l->hash, l->v[0], l->v[1], l->v[2]);
    if (!ae) {
        ae = xcalloc(1, sizeof *ae);
        ae->labels = *l;
        table_put(&a->errors_by_labels, &ae->labels);
        a->errors = grow(a->errors, &a->caperrors, a->nerrors + 1, sizeof *a->errors);
        a->errors[a->nerrors++] = ae;
    }
    ae->n += ctr_get(&es->n);
}

static void agg_ctx_add(agg *a, obs_ctx_series *cs)
{
    const obs_labels *l = &cs->labels;
    agg_ctx *ac = (agg_ctx *)table_find(&a->ctx_by_labels, l->hash, l->v[0], l->v[1], l->v[2]);
    if (!ac) {
        ac = xcalloc(1, sizeof *ac);
        ac->labels = *l;
        table_put(&a->ctx_by_labels, &ac->labels);
        a->ctx = grow(a->ctx, &a->capctx, a->nctx + 1, sizeof *a->ctx);
        a->ctx[a->nctx++] = ac;
    }
    agg_hist_add(&ac->duration, &cs->duration);
    ac->errors += ctr_get(&cs->errors);
}

static int labels_cmp(const obs_labels *x, const obs_labels *y)
{
    for (int k = 0; k < 3; k++) {
        int c = strcmp(x->v[k], y->v[k]);
        if (c) return c;
    }
    return 0;
}

static int agg_route_cmp(const void *a, const void *b)
{
    return labels_cmp(&(*(agg_route *const *)a)->labels, &(*(agg_route *const *)b)->labels);
}

static int agg_error_cmp(const void *a, const void *b)
{
    return labels_cmp(&(*(agg_error *const *)a)->labels, &(*(agg_error *const *)b)->labels);
}

static int agg_ctx_cmp(const void *a, const void *b)
{
    return labels_cmp(&(*(agg_ctx *const *)a)->labels, &(*(agg_ctx *const *)b)->labels);
}

static int agg_status_cmp(const void *a, const void *b)
{
    int x = ((const agg_status *)a)->status, y = ((const agg_status *)b)->status;
    return (x > y) - (x < y);
}

static void agg_collect(agg *a)
{
    pthread_mutex_lock(&g_registry_mu);
    for (obs_shard *s = g_shards; s; s = s->next_shard) {
        pthread_mutex_lock(&s->mu);
        for (obs_route_series *rs = s->routes; rs; rs = rs->next)
            agg_route_add(a, rs);
        for (obs_error_series *es = s->errors; es; es = es->next)
            agg_error_add(a, es);
        for (obs_ctx_series *cs = s->ctx; cs; cs = cs->next)
            agg_ctx_add(a, cs);
        pthread_mutex_unlock(&s->mu);
        a->inflight += atomic_load_explicit(&s->inflight, memory_order_relaxed);
    }
    pthread_mutex_unlock(&g_registry_mu);
    if (a->nroutes) qsort(a->routes, a->nroutes, sizeof *a->routes, agg_route_cmp);
    if (a->nerrors) qsort(a->errors, a->nerrors, sizeof *a->errors, agg_error_cmp);
    if (a->nctx) qsort(a->ctx, a->nctx, sizeof *a->ctx, agg_ctx_cmp);
    for (size_t i = 0; i < a->nroutes; i++)
        if (a->routes[i]->nst)
            qsort(a->routes[i]->st, a->routes[i]->nst, sizeof(agg_status), agg_status_cmp);
}

static void agg_free(agg *a)
{
    for (size_t i = 0; i < a->nroutes; i++) {
        free(a->routes[i]->st);
        free(a->routes[i]);
    }
    for (size_t i = 0; i < a->nerrors; i++)
        free(a->errors[i]);
    for (size_t i = 0; i < a->nctx; i++)
        free(a->ctx[i]);
    free(a->ctx);
    free(a->ctx_by_labels.slot);
    free(a->routes);
    free(a->errors);
    free(a->routes_by_labels.slot);
    free(a->errors_by_labels.slot);
}

/* ---- text exposition ---- */

/* A label value: \ " and newline escaped as the format requires; invalid UTF-8 replaced so the
 * page stays valid UTF-8. */
static void put_label_value(buf *out, const char *v)
{
    const unsigned char *p = (const unsigned char *)v;
    size_t n = strlen(v);
    size_t i = 0;
    while (i < n) {
        size_t run = i;
        while (run < n && p[run] >= 0x20 && p[run] < 0x80 && p[run] != '\\' && p[run] != '"')
            run++;
        if (run > i) {
            buf_append(out, p + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = p[i];
        if (c == '\\') {
            buf_append(out, "\\\\", 2);
            i++;
        } else if (c == '"') {
            buf_append(out, "\\\"", 2);
            i++;
        } else if (c == '\n') {
            buf_append(out, "\\n", 2);
            i++;
        } else if (c < 0x80) { /* other control bytes are legal UTF-8: kept as they are */
            buf_append(out, &c, 1);
            i++;
        } else {
            size_t len = utf8_seq_len(p + i, n - i);
            if (len) {
                buf_append(out, p + i, len);
                i += len;
            } else {
                buf_puts(out, UTF8_REPLACEMENT);
                i++;
            }
        }
    }
}

static const char *const route_label_names[3] = {"gateway", "route", "model"};
static const char *const error_label_names[2] = {"target", "kind"};

/* {a="..",b=".."[,extra_name="extra"]} */
static void put_labels(buf *out, const char *const *names, const obs_labels *l, size_t nl,
                       const char *extra_name, const char *extra_value)
{
    buf_append(out, "{", 1);
    for (size_t k = 0; k < nl; k++) {
        if (k) buf_append(out, ",", 1);
        buf_puts(out, names[k]);
        buf_append(out, "=\"", 2);
        put_label_value(out, l->v[k]);
        buf_append(out, "\"", 1);
    }
    if (extra_name) {
        if (nl) buf_append(out, ",", 1);
        buf_puts(out, extra_name);
        buf_append(out, "=\"", 2);
        put_label_value(out, extra_value);
        buf_append(out, "\"", 1);
    }
    buf_append(out, "}", 1);
}

static void put_family(buf *out, const char *name, const char *type, const char *help)
{
    buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void put_seconds(buf *out, uint64_t us)
{
    buf_printf(out, "%llu.%06llu", (unsigned long long)(us / 1000000),
               (unsigned long long)(us % 1000000));
}

static void put_hist_named(buf *out, const char *name, const char *const *names,
                           const obs_labels *l, const agg_hist *h, const obs_layout *lay)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= lay->n; i++) {
        cum += h->bucket[i];
        buf_puts(out, name);
        buf_puts(out, "_bucket");
        put_labels(out, names, l, 3, "le", i < lay->n ? lay->le_txt[i] : "+Inf");
        buf_append(out, " ", 1);
        buf_put_u64(out, cum);
        buf_append(out, "\n", 1);
    }
    buf_puts(out, name);
    buf_puts(out, "_sum");
    put_labels(out, names, l, 3, NULL, NULL);
    buf_append(out, " ", 1);
    put_seconds(out, h->sum_us);
    buf_append(out, "\n", 1);
    buf_puts(out, name);
    buf_puts(out, "_count");
    put_labels(out, names, l, 3, NULL, NULL);
    buf_append(out, " ", 1);
    buf_put_u64(out, cum);
    buf_append(out, "\n", 1);
}

static void put_hist(buf *out, const char *name, const obs_labels *l, const agg_hist *h,
                     const obs_layout *lay)
{
    uint64_t cum = 0;
    for (size_t i = 0; i <= lay->n; i++) {
        cum += h->bucket[i];
        buf_printf(out, "%s_bucket", name);
        put_labels(out, route_label_names, l, 3, "le", i < lay->n ? lay->le_txt[i] : "+Inf");
        buf_printf(out, " %llu\n", (unsigned long long)cum);
    }
    buf_printf(out, "%s_sum", name);
    put_labels(out, route_label_names, l, 3, NULL, NULL);
    buf_append(out, " ", 1);
    put_seconds(out, h->sum_us);
    buf_printf(out, "\n%s_count", name);
    put_labels(out, route_label_names, l, 3, NULL, NULL);
    buf_printf(out, " %llu\n", (unsigned long long)cum);
}

static uint64_t hist_total(const agg_hist *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i < OBS_HIST_MAX; i++)
        n += h->bucket[i];
    return n;
}

typedef enum { HIST_DURATION, HIST_UPSTREAM, HIST_TTFT } hist_kind;

static void render_hist_family(buf *out, const agg *a, const char *name, const char *help,
                               hist_kind kind)
{
    put_family(out, name, "histogram", help);
    for (size_t i = 0; i < a->nroutes; i++) {
        const agg_route *ar = a->routes[i];
        const agg_hist *h = kind == HIST_DURATION   ? &ar->duration
                            : kind == HIST_UPSTREAM ? &ar->upstream
                                                    : &ar->ttft;
        /* a label set that never had an upstream call / a stream shows no empty histogram */
        if (kind != HIST_DURATION && hist_total(h) == 0) continue;
        put_hist(out, name, &ar->labels, h, kind == HIST_TTFT ? &layout_ttft : &layout_dur);
    }
}

static void render_token_counter(buf *out, const agg *a, const char *name, const char *help,
                                 bool completion)
{
    put_family(out, name, "counter", help);
    for (size_t i = 0; i < a->nroutes; i++) {
        const agg_route *ar = a->routes[i];
        buf_puts(out, name);
        put_labels(out, route_label_names, &ar->labels, 3, NULL, NULL);
        buf_printf(out, " %llu\n",
                   (unsigned long long)(completion ? ar->completion_tokens : ar->prompt_tokens));
    }
}

/* ---- process metrics from /proc/self ---- */

typedef struct proc_stat {
    double cpu_seconds;
    double start_time;
    uint64_t rss_bytes;
    uint64_t vsize_bytes;
    bool ok;
} proc_stat;

static bool read_file(const char *path, char *dst, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f) return false;
    size_t n = fread(dst, 1, cap - 1, f);
    fclose(f);
    dst[n] = 0;
    return n > 0;
}

static proc_stat proc_read(void)
{
    proc_stat ps = {0};
    char stat[1024];
    if (!read_file("/proc/self/stat", stat, sizeof stat)) return ps;
    /* fields after the command name, which is in parentheses and may hold spaces */
    const char *p = strrchr(stat, ')');
    if (!p) return ps;
    unsigned long utime, stime, vsize;
    unsigned long long starttime;
    long rss;
    /* state(3) ... utime(14) stime(15) ... starttime(22) vsize(23) rss(24) */
    if (sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d %*d %*d %*d %*d "
               "%llu %lu %ld",
               &utime, &stime, &starttime, &vsize, &rss) != 5)
        return ps;
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    if (tck <= 0 || page <= 0) return ps;
    ps.cpu_seconds = (double)(utime + stime) / (double)tck;
    ps.rss_bytes = (uint64_t)rss * (uint64_t)page;
    ps.vsize_bytes = vsize;
    char st[4096];
    if (read_file("/proc/stat", st, sizeof st)) {
        const char *b = strstr(st, "\nbtime ");
        unsigned long long btime;
        if (b && sscanf(b + 7, "%llu", &btime) == 1)
            ps.start_time = (double)btime + (double)starttime / (double)tck;
    }
    ps.ok = true;
    return ps;
}

static long count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d) return -1;
    long n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the directory stream's own descriptor */
}

static void render_process(buf *out)
{
    proc_stat ps = proc_read();
    if (ps.ok) {
        put_family(out, "process_cpu_seconds_total", "counter",
                   "Total user and system CPU time spent in seconds.");
        buf_printf(out, "process_cpu_seconds_total %.2f\n", ps.cpu_seconds);
        put_family(out, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
        buf_printf(out, "process_resident_memory_bytes %llu\n", (unsigned long long)ps.rss_bytes);
        put_family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
        buf_printf(out, "process_virtual_memory_bytes %llu\n", (unsigned long long)ps.vsize_bytes);
        if (ps.start_time > 0) {
            put_family(out, "process_start_time_seconds", "gauge",
                       "Start time of the process since unix epoch in seconds.");
            buf_printf(out, "process_start_time_seconds %.2f\n", ps.start_time);
        }
    }
    long fds = count_open_fds();
    if (fds >= 0) {
        put_family(out, "process_open_fds", "gauge", "Number of open file descriptors.");
        buf_printf(out, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        put_family(out, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        buf_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

static const char *const ctx_label_names[3] = {"mcp", "backend", "op"};

static void render_ctx(buf *out, const agg *a)
{
    put_family(out, "ctxgate_context_store_op_duration_seconds", "histogram",
               "Context-store operations, by ModelContextProtocol, backend and operation.");
    for (size_t i = 0; i < a->nctx; i++)
        put_hist_named(out, "ctxgate_context_store_op_duration_seconds", ctx_label_names,
                       &a->ctx[i]->labels, &a->ctx[i]->duration, &layout_ctx);
    put_family(out, "ctxgate_context_store_errors_total", "counter",
               "Context-store operations that failed (conflicts and not-found excluded).");
    for (size_t i = 0; i < a->nctx; i++) {
        buf_puts(out, "ctxgate_context_store_errors_total");
        put_labels(out, ctx_label_names, &a->ctx[i]->labels, 3, NULL, NULL);
        buf_append(out, " ", 1);
        buf_put_u64(out, a->ctx[i]->errors);
        buf_append(out, "\n", 1);
    }
    pthread_mutex_lock(&g_ctx_mu);
    static const char *const fig_names[3] = {"mcp", "backend", ""};
    struct {
        const char *name, *type, *help;
        int which;
    } fams[] = {
        {"ctxgate_context_active_conversations", "gauge",
         "Conversations held by the store (all tenants).", 0},
        {"ctxgate_context_evictions_total", "counter",
         "Conversations removed by contextLifecycle.maxEntries.", 1},
        {"ctxgate_context_expirations_total", "counter",
         "Conversations removed by contextLifecycle.ttlSeconds.", 2},
    };
    for (size_t k = 0; k < sizeof fams / sizeof fams[0]; k++) {
        put_family(out, fams[k].name, fams[k].type, fams[k].help);
        for (ctx_store_fig *f = g_ctx_figs; f; f = f->next) {
            if (fams[k].which == 0 && f->active < 0) continue;
            obs_labels l = {.v = {f->mcp, f->backend, ""}};
            buf_puts(out, fams[k].name);
            put_labels(out, fig_names, &l, 2, NULL, NULL);
            buf_append(out, " ", 1);
            if (fams[k].which == 0)
                buf_put_i64(out, f->active);
            else
                buf_put_u64(out, fams[k].which == 1 ? f->evictions : f->expirations);
            buf_append(out, "\n", 1);
        }
    }
    pthread_mutex_unlock(&g_ctx_mu);
}

void obs_render(buf *out)
{
    agg a;
    memset(&a, 0, sizeof a);
    agg_collect(&a);

    put_family(out, "ctxgate_requests_total", "counter",
               "Requests finished, by gateway, route, model (target) and HTTP status.");
    for (size_t i = 0; i < a.nroutes; i++) {
        const agg_route *ar = a.routes[i];
        for (size_t k = 0; k < ar->nst; k++) {
            char status[16];
            snprintf(status, sizeof status, "%d", ar->st[k].status);
            buf_puts(out, "ctxgate_requests_total");
            put_labels(out, route_label_names, &ar->labels, 3, "status", status);
            buf_printf(out, " %llu\n", (unsigned long long)ar->st[k].n);
        }
    }
    render_hist_family(out, &a, "ctxgate_request_duration_seconds",
                       "Time from request received to response finished.", HIST_DURATION);
    render_hist_family(out, &a, "ctxgate_upstream_duration_seconds",
                       "Time spent in upstream calls (all attempts).", HIST_UPSTREAM);
    render_hist_family(out, &a, "ctxgate_time_to_first_token_seconds",
                       "Time from request received to the first streamed byte sent.", HIST_TTFT);
    render_token_counter(out, &a, "ctxgate_prompt_tokens_total", "Prompt (input) tokens.", false);
    render_token_counter(out, &a, "ctxgate_completion_tokens_total", "Completion (output) tokens.",
                         true);
    put_family(out, "ctxgate_cost_usd_total", "counter",
               "Estimated cost in US dollars from the targets' pricing.");
    for (size_t i = 0; i < a.nroutes; i++) {
        buf_puts(out, "ctxgate_cost_usd_total");
        put_labels(out, route_label_names, &a.routes[i]->labels, 3, NULL, NULL);
        buf_printf(out, " %.10g\n", a.routes[i]->cost);
    }
    put_family(out, "ctxgate_requests_in_flight", "gauge", "Requests being served now.");
    buf_printf(out, "ctxgate_requests_in_flight %lld\n", (long long)a.inflight);
    render_conn_figures(out);
    put_family(out, "ctxgate_config_reloads_total", "counter", "Configuration reloads, by result.");
    buf_printf(out, "ctxgate_config_reloads_total{result=\"success\"} %llu\n",
               (unsigned long long)atomic_load(&g_reloads_ok));
    buf_printf(out, "ctxgate_config_reloads_total{result=\"failure\"} %llu\n",
               (unsigned long long)atomic_load(&g_reloads_failed));
    put_family(out, "ctxgate_upstream_errors_total", "counter",
               "Failed upstream attempts, by target and kind of failure.");
    for (size_t i = 0; i < a.nerrors; i++) {
        buf_puts(out, "ctxgate_upstream_errors_total");
        put_labels(out, error_label_names, &a.errors[i]->labels, 2, NULL, NULL);
        buf_printf(out, " %llu\n", (unsigned long long)a.errors[i]->n);
    }
    render_ctx(out, &a);
    put_family(out, "ctxgate_build_info", "gauge", "Build information; the value is always 1.");
    pthread_mutex_lock(&g_registry_mu);
    char version[sizeof g_version];
    memcpy(version, g_version, sizeof version);
    pthread_mutex_unlock(&g_registry_mu);
    buf_puts(out, "ctxgate_build_info{version=\"");
    put_label_value(out, version);
    buf_puts(out, "\"} 1\n");
    render_process(out);
    agg_free(&a);
}
