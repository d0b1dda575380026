/* gateway.c — process structure of `ctxgate serve`.
 *
 * The main thread owns configuration: it loads and validates manifests (never on a worker loop),
 * watches the files, handles signals, and publishes each new pl_runtime to every worker through a
 * mutex-guarded slot plus uv_async_send. A worker swaps its runtime pointer on its own loop, so
 * the request path reads configuration without atomics or locks; requests keep a reference to the
 * runtime they started with, which makes in-flight requests finish on the old configuration.
 * With --kube the configuration comes from informers on the main loop (kube_source.h) instead of
 * files; the listener starts once the first valid configuration is in, so /readyz (and every
 * other path) is unreachable until then. */
#include <errno.h>
#include <libgen.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include "config/load.h"
#include "core/log.h"
#include "gateway/gateway.h"
#include "gateway/kube_source.h"
#include "obs/metrics.h"
#include "pipeline/pipeline.h"
#include "providers/provider.h"

typedef struct worker {
    uv_thread_t tid;
    uv_loop_t loop;
    uv_async_t wake;
    uv_mutex_t lock;
    pl_runtime *pending; /* guarded by lock: the next runtime to swap in */
    pl_runtime *initial; /* the first runtime, bound when the thread starts */
    bool stop;           /* guarded by lock */
    pl_worker pl;
    http_server *srv;
    http_server_opts srv_opts;
    http_server *admin_srv;      /* worker 0 with spec.admin: the admin listener */
    http_server_opts admin_opts; /* port 0 = none */
    int servers_draining;        /* servers whose drain has not completed */
    uv_sem_t started;
    int start_rc;
    char start_err[256];
} worker;

static struct {
    gateway_opts opts;
    worker *workers;
    int n_workers;
    _Atomic int draining;
    pl_runtime *rt; /* main thread's reference to the current runtime */
    int port;
    int admin_port; /* spec.admin.port at start; 0 = none */
    uv_loop_t *loop;
    uv_signal_t sig_hup, sig_term, sig_int;
    uv_timer_t debounce;
    uv_fs_event_t *watches;
    size_t n_watches;
    char **watch_names;      /* basename to filter on, NULL = any file in the directory */
    http_conn_budget budget; /* spec.listener.maxConnections, shared by the workers' servers */
    long fd_ceiling;         /* connections the open-file limit leaves room for; 0 = unknown */
    kube_source *ks;         /* --kube: the API objects; NULL otherwise */
    uv_timer_t kube_startup; /* --kube: the deadline for the first valid configuration */
    char kube_msg[1024];     /* --kube: the last waiting / rejection sentence logged */
    uv_timer_t kube_nag;     /* --kube: a wait longer than GW_KUBE_NAG_MS is logged as a warning */
    bool kube_nag_init, kube_nagging;
    bool kube_gone; /* --kube: the LLMGateway's deletion was logged */
} g;

/* --kube: how long start-up waits for a valid configuration; $CTXGATE_KUBE_STARTUP_SECONDS
 * (1..3600) replaces it, for tests of the failure. */
enum { GW_KUBE_STARTUP_S = 30, GW_KUBE_NAG_MS = 5000 };

static int kube_startup_s(void)
{
    const char *e = getenv("CTXGATE_KUBE_STARTUP_SECONDS");
    long n = e ? strtol(e, NULL, 10) : 0;
    return n >= 1 && n <= 3600 ? (int)n : GW_KUBE_STARTUP_S;
}

/* Descriptors kept out of the connection budget: upstream connections, stores, watched files,
 * listening sockets, libuv's own. */
enum { GW_FD_RESERVE = 256 };

/* Raises the soft open-file limit to the hard one (as nginx's worker_rlimit_nofile would) and
 * returns how many client connections it leaves room for. */
static long raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t want = rl.rlim_max;
        rl.rlim_cur = want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) getrlimit(RLIMIT_NOFILE, &rl);
    }
    if (rl.rlim_cur == RLIM_INFINITY) return 0;
    long n = (long)rl.rlim_cur - GW_FD_RESERVE;
    return n > 1 ? n : 1;
}

/* The budget for a configuration: maxConnections, capped by the open-file limit. */
static size_t max_connections_for(const cfg_gateway *gw, bool warn)
{
    long want = gw->listener.max_connections > 0 ? gw->listener.max_connections : 10000;
    if (g.fd_ceiling > 0 && want > g.fd_ceiling) {
        if (warn)
            log_warn("spec.listener.maxConnections %ld exceeds what the open-file limit allows "
                     "(RLIMIT_NOFILE %ld minus %d kept for upstream connections and files); "
                     "using %ld: raise `ulimit -n` to allow more",
                     want, g.fd_ceiling + GW_FD_RESERVE, GW_FD_RESERVE, g.fd_ceiling);
        want = g.fd_ceiling;
    }
    return (size_t)want;
}

static void conn_figures(obs_conn_figures *out, void *ctx)
{
    http_conn_budget *b = ctx;
    out->open = atomic_load(&b->open);
    out->max = atomic_load(&b->max);
    out->refused = atomic_load(&b->refused);
    out->idle_closed = atomic_load(&b->idle_closed);
}

static void apply_logging(const cfg_gateway *gw)
{
    log_level lvl;
    if (gw->obs.logging_level && log_level_parse(gw->obs.logging_level, &lvl) == 0)
        log_set_level(lvl);
}

static void limits_for(const cfg_gateway *gw, http_limits *l)
{
    http_limits_default(l);
    if (gw->max_body_bytes) l->max_body_bytes = gw->max_body_bytes;
}

/* ---- worker threads ---- */

static void on_server_drained(void *ctx)
{
    worker *w = ctx;
    if (--w->servers_draining > 0) return; /* the other listener is still draining */
    uv_close((uv_handle_t *)&w->wake, NULL);
    pl_worker_release(&w->pl); /* before the client: it cancels summary requests on it */
    upstream_client_free(w->pl.up);
    w->pl.up = NULL;
}

static void on_wake(uv_async_t *a)
{
    worker *w = a->data;
    uv_mutex_lock(&w->lock);
    pl_runtime *next = w->pending;
    w->pending = NULL;
    bool stop = w->stop;
    w->stop = false;
    uv_mutex_unlock(&w->lock);
    if (next) {
        pl_worker_set_runtime(&w->pl, next);
        http_limits l;
        limits_for(next->gw, &l);
        http_server_set_limits(w->srv, &l);
    }
    if (stop && w->srv) {
        w->servers_draining = w->admin_srv ? 2 : 1;
        if (w->admin_srv) http_server_drain(w->admin_srv, on_server_drained, w);
        http_server_drain(w->srv, on_server_drained, w);
    }
}

static void worker_main(void *arg)
{
    worker *w = arg;
    uv_loop_init(&w->loop);
    w->pl.loop = &w->loop;
    pl_worker_set_runtime(&w->pl, w->initial); /* stores open on this loop */
    w->initial = NULL;
    w->pl.up = upstream_client_new(&w->loop);
    uv_async_init(&w->loop, &w->wake, on_wake);
    w->wake.data = w;
    w->srv_opts.handler = pl_handle;
    w->srv_opts.handler_ctx = &w->pl;
    w->start_rc =
        http_server_start(&w->loop, &w->srv_opts, &w->srv, w->start_err, sizeof w->start_err);
    if (w->start_rc == 0 && w->admin_opts.port) {
        w->admin_opts.handler = pl_handle_admin;
        w->admin_opts.handler_ctx = &w->pl;
        char aerr[200];
        w->start_rc = http_server_start(&w->loop, &w->admin_opts, &w->admin_srv, aerr, sizeof aerr);
        if (w->start_rc != 0) {
            snprintf(w->start_err, sizeof w->start_err, "spec.admin listener: %s", aerr);
            http_server_drain(w->srv, NULL, NULL);
        }
    }
    uv_sem_post(&w->started);
    if (w->start_rc != 0) {
        uv_close((uv_handle_t *)&w->wake, NULL);
        pl_worker_release(&w->pl);
        upstream_client_free(w->pl.up);
        uv_run(&w->loop, UV_RUN_DEFAULT);
        http_server_free(w->srv); /* started before the admin listener failed; NULL-safe */
        w->srv = NULL;
        uv_loop_close(&w->loop);
        return;
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    http_server_free(w->srv);
    w->srv = NULL;
    if (w->admin_srv) http_server_free(w->admin_srv);
    w->admin_srv = NULL;
    uv_mutex_lock(&w->lock);
    pl_runtime_unref(w->pending);
    w->pending = NULL;
    uv_mutex_unlock(&w->lock);
    if (uv_loop_close(&w->loop) != 0)
        log_warn("worker %u: loop closed with handles open", w->pl.id);
}

static void publish(pl_runtime *rt)
{
    for (int i = 0; i < g.n_workers; i++) {
        worker *w = &g.workers[i];
        pl_runtime_ref(rt);
        uv_mutex_lock(&w->lock);
        pl_runtime *old = w->pending;
        w->pending = rt;
        uv_mutex_unlock(&w->lock);
        pl_runtime_unref(old);
        uv_async_send(&w->wake);
    }
    pl_runtime_unref(g.rt);
    g.rt = rt;
}

/* ---- configuration ---- */

static void log_diags(const cfg_diags *d, bool as_errors)
{
    for (size_t i = 0; i < d->n; i++) {
        const cfg_diag *x = &d->items[i];
        log_level lvl = x->warning ? LOG_WARN : (as_errors ? LOG_ERROR : LOG_WARN);
        char line[16] = ""; /* objects from the API have no line */
        if (x->line > 0) snprintf(line, sizeof line, ":%d", x->line);
        log_msg(lvl, "%s%s: %s%s%s%s", x->file, line, x->warning ? "warning: " : "", x->path,
                x->path[0] ? ": " : "", x->message);
    }
}

/* The first error of a rejected change, for GET /admin/config. */
static void record_rejection(const cfg_diags *d)
{
    for (size_t i = 0; i < d->n; i++) {
        const cfg_diag *x = &d->items[i];
        if (x->warning) continue;
        char first[1024];
        snprintf(first, sizeof first, "%s%s%s%s%s", x->file, x->path[0] ? ": " : "", x->path, ": ",
                 x->message);
        obs_reload_outcome(0, first, d->n_errors);
        return;
    }
    obs_reload_outcome(0, "rejected", d->n_errors);
}

static pl_runtime *runtime_from(cfg_snapshot *snap, bool initial);

static pl_runtime *load_runtime(bool initial)
{
    cfg_diags d = {0};
    cfg_snapshot *snap = NULL;
    int rc = cfg_load_paths(g.opts.paths, g.opts.n_paths, &snap, &d);
    if (rc != 0) {
        if (initial) {
            cfg_diags_print(stderr, &d);
        } else {
            log_diags(&d, true);
            record_rejection(&d);
        }
        cfg_diags_free(&d);
        return NULL;
    }
    log_diags(&d, false);
    cfg_diags_free(&d);
    return runtime_from(snap, initial);
}

/* The servable runtime of a loaded snapshot (whose reference it takes); NULL when the snapshot
 * lacks the gateway. */
static pl_runtime *runtime_from(cfg_snapshot *snap, bool initial)
{
    char err[256];
    pl_runtime *rt = pl_runtime_new(snap, g.opts.gateway_name, err, sizeof err);
    cfg_snapshot_unref(snap);
    if (rt) provider_prepare(rt->gw);
    if (!rt) {
        if (initial) {
            fprintf(stderr, "ctxgate: %s\n", err);
        } else {
            log_error("reload rejected: %s", err);
            obs_reload_outcome(0, err, 1);
        }
    }
    return rt;
}

/* Swaps rt in as the configuration every worker serves (rt's reference is taken over). */
static void swap_runtime(pl_runtime *rt, const char *why)
{
    if (rt->gw->admin.port != g.admin_port)
        log_warn("spec.admin.port changed from %d to %d: the admin listener changes with a "
                 "restart; still as it was",
                 g.admin_port, rt->gw->admin.port);
    pl_runtime_inherit_health(rt, g.rt); /* ejections and counts survive a reload */
    if (rt->gw->listener.port != g.port)
        log_warn("listener.port changed from %d to %d: a port change needs a restart; still "
                 "listening on %d",
                 g.port, rt->gw->listener.port, g.port);
    apply_logging(rt->gw);
    size_t maxc = max_connections_for(rt->gw, rt->gw->listener.max_connections !=
                                                  g.rt->gw->listener.max_connections);
    atomic_store(&g.budget.max, maxc);
    publish(rt);
    obs_reload_record(1);
    obs_reload_outcome(1, NULL, 0);
    log_info("configuration reloaded (%s), generation %llu", why,
             (unsigned long long)rt->snap->generation);
}

static void kube_rebuild(bool force, const char *why);

static void reload(const char *why)
{
    if (g.ks) {
        kube_rebuild(true, why);
        return;
    }
    pl_runtime *rt = load_runtime(false);
    if (!rt) {
        obs_reload_record(0);
        log_error("reload (%s) rejected; still serving the previous configuration", why);
        return;
    }
    swap_runtime(rt, why);
}

/* ---- configuration from the Kubernetes API (--kube) ---- */

static void on_kube_nag(uv_timer_t *t);

/* Stops the informers and the client (their handles close on the loop). */
static void kube_stop(void)
{
    kube_source_free(g.ks);
    g.ks = NULL;
    if (g.kube_nag_init) uv_close((uv_handle_t *)&g.kube_nag, NULL);
    g.kube_nag_init = false;
}

/* A wait for an informer's first list is normal for a moment (a new reference); one that lasts
 * GW_KUBE_NAG_MS is logged as a warning, once per message. */
static void kube_say(const char *msg)
{
    bool same = strcmp(msg, g.kube_msg) == 0;
    if (g.kube_nagging) {
        if (same) log_warn("kube: still waiting: %s", msg);
        return;
    }
    if (same) return;
    snprintf(g.kube_msg, sizeof g.kube_msg, "%s", msg);
    log_debug("kube: waiting: %s", msg);
    if (!g.kube_nag_init) {
        uv_timer_init(g.loop, &g.kube_nag);
        g.kube_nag_init = true;
    }
    uv_timer_start(&g.kube_nag, on_kube_nag, GW_KUBE_NAG_MS, 0);
}

/* One rebuild from the informers' caches; synchronous on the main loop, so at most one runs. */
static void kube_rebuild(bool force, const char *why)
{
    cfg_diags d = {0};
    cfg_snapshot *snap = NULL;
    char msg[1024] = "";
    ks_result r = kube_source_load(g.ks, force, &snap, &d, msg, sizeof msg);
    switch (r) {
    case KS_UNCHANGED:
        break;
    case KS_WAITING:
        kube_say(msg);
        break;
    case KS_GONE:
        if (!g.rt) {
            kube_say(msg);
        } else if (!g.kube_gone) {
            g.kube_gone = true;
            log_warn("%s (deleted?); still serving the last configuration", msg);
        }
        break;
    case KS_INVALID:
        log_diags(&d, true);
        if (msg[0]) snprintf(g.kube_msg, sizeof g.kube_msg, "%s", msg);
        if (g.rt) {
            record_rejection(&d);
            obs_reload_record(0);
            log_error("reload (%s) rejected; still serving the previous configuration", why);
        } else if (!msg[0] && d.n) {
            const cfg_diag *x = &d.items[0];
            snprintf(g.kube_msg, sizeof g.kube_msg, "%s: %s%s%s (and %zu more error(s) above)",
                     x->file, x->path, x->path[0] ? ": " : "", x->message,
                     d.n_errors ? d.n_errors - 1 : 0);
        }
        break;
    case KS_LOADED: {
        log_diags(&d, false);
        g.kube_gone = false;
        g.kube_msg[0] = 0;
        pl_runtime *rt = runtime_from(snap, !g.rt);
        if (!rt) {
            if (g.rt) obs_reload_record(0);
        } else if (!g.rt) {
            g.rt = rt; /* the first configuration: kube_start returns and the workers start */
            uv_stop(g.loop);
        } else {
            swap_runtime(rt, why);
        }
        break;
    }
    }
    cfg_diags_free(&d);
}

static void on_kube_nag(uv_timer_t *t)
{
    (void)t;
    g.kube_nagging = true;
    kube_rebuild(false, "API objects changed");
    g.kube_nagging = false;
}

static void on_kube_change(kube_source *ks, void *udata)
{
    (void)ks;
    (void)udata;
    kube_rebuild(false, "API objects changed");
}

static void on_kube_startup_timeout(uv_timer_t *t)
{
    (void)t;
    if (!g.rt) kube_rebuild(true, "startup");
    uv_stop(g.loop);
}

/* Runs the main loop until the first valid configuration is in g.rt (0), or fails (-1) after
 * kube_startup_s() with what is missing or wrong. */
static int kube_start(void)
{
    char err[512];
    kube_source_opts ko = {.loop = g.loop,
                           .kubeconfig = g.opts.kubeconfig,
                           .ns = g.opts.kube_namespace,
                           .gateway = g.opts.gateway_name,
                           .on_change = on_kube_change};
    g.ks = kube_source_start(&ko, err, sizeof err);
    if (!g.ks) {
        fprintf(stderr, "ctxgate: %s\n", err);
        return -1;
    }
    log_info("kube: serving LLMGateway %s/%s from the API server (%s)", kube_source_namespace(g.ks),
             g.opts.gateway_name, kube_source_origin(g.ks));
    uv_timer_init(g.loop, &g.kube_startup);
    int wait_s = kube_startup_s();
    uv_timer_start(&g.kube_startup, on_kube_startup_timeout, (uint64_t)wait_s * 1000, 0);
    uv_run(g.loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&g.kube_startup, NULL);
    if (g.rt) {
        obs_reload_outcome(1, NULL, 0);
        return 0;
    }
    fprintf(stderr, "ctxgate: no valid configuration for LLMGateway %s/%s within %d s: %s\n",
            kube_source_namespace(g.ks), g.opts.gateway_name, wait_s,
            g.kube_msg[0] ? g.kube_msg : "nothing arrived from the API server");
    kube_stop();
    uv_run(g.loop, UV_RUN_DEFAULT); /* the client's handles close */
    return -1;
}

static void on_debounce(uv_timer_t *t)
{
    reload("files changed");
}

/* The loader reads *.yaml, *.yml and *.json from a directory: only those can change the config. */
static bool is_manifest_name(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot &&
           (strcmp(dot, ".yaml") == 0 || strcmp(dot, ".yml") == 0 || strcmp(dot, ".json") == 0);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    const char *want = h->data;
    if (want && filename && strcmp(filename, want) != 0) return;
    /* kubelet's ConfigMap volumes swap a "..data" symlink: accept it as well as manifests */
    if (!want && filename && !is_manifest_name(filename) && strcmp(filename, "..data") != 0) return;
    /* editors write in several steps; wait for the burst to end */
    uv_timer_start(&g.debounce, on_debounce, 150, 0);
}

static void watch_paths(void)
{
    g.watches = calloc(g.opts.n_paths, sizeof *g.watches);
    g.watch_names = calloc(g.opts.n_paths, sizeof *g.watch_names);
    for (size_t i = 0; i < g.opts.n_paths; i++) {
        const char *p = g.opts.paths[i];
        struct stat st;
        if (stat(p, &st) != 0) continue;
        char *dir;
        if (S_ISDIR(st.st_mode)) {
            dir = strdup(p);
        } else {
            /* watch the directory: editors and kubelet replace files by rename */
            char *a = strdup(p), *b = strdup(p);
            dir = strdup(dirname(a));
            g.watch_names[g.n_watches] = strdup(basename(b));
            free(a);
            free(b);
        }
        uv_fs_event_t *h = &g.watches[g.n_watches];
        uv_fs_event_init(g.loop, h);
        h->data = g.watch_names[g.n_watches];
        int rc = uv_fs_event_start(h, on_fs_event, dir, 0);
        if (rc != 0) {
            log_warn("cannot watch %s for changes (%s); reload with SIGHUP", dir, uv_strerror(rc));
            uv_close((uv_handle_t *)h, NULL);
        }
        free(dir);
        g.n_watches++;
    }
}

/* ---- signals and shutdown ---- */

static void close_main_handles(void)
{
    uv_close((uv_handle_t *)&g.sig_hup, NULL);
    uv_close((uv_handle_t *)&g.sig_term, NULL);
    uv_close((uv_handle_t *)&g.sig_int, NULL);
    uv_close((uv_handle_t *)&g.debounce, NULL);
    kube_stop();
    for (size_t i = 0; i < g.n_watches; i++)
        if (!uv_is_closing((uv_handle_t *)&g.watches[i]))
            uv_close((uv_handle_t *)&g.watches[i], NULL);
}

static void on_signal(uv_signal_t *s, int signum)
{
    if (signum == SIGHUP) {
        reload("SIGHUP");
        return;
    }
    if (atomic_exchange(&g.draining, 1)) return;
    log_info("received %s: draining in-flight requests", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    for (int i = 0; i < g.n_workers; i++) {
        worker *w = &g.workers[i];
        uv_mutex_lock(&w->lock);
        w->stop = true;
        uv_mutex_unlock(&w->lock);
        uv_async_send(&w->wake);
    }
    close_main_handles();
}

static void join_workers(void)
{
    int timeout = g.opts.drain_timeout_s > 0 ? g.opts.drain_timeout_s : 30;
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout;
    for (int i = 0; i < g.n_workers; i++) {
        int rc = pthread_timedjoin_np(g.workers[i].tid, NULL, &deadline);
        if (rc == ETIMEDOUT) {
            log_warn("in-flight requests did not finish within %d s; exiting anyway", timeout);
            exit(0);
        }
    }
}

int gateway_run(const gateway_opts *o)
{
    memset(&g, 0, sizeof g);
    g.opts = *o;
    g.loop = uv_default_loop();
    signal(SIGPIPE, SIG_IGN);

    if (o->kube) {
        if (kube_start() != 0) return 1;
    } else {
        g.rt = load_runtime(true);
        if (!g.rt) return 1;
    }
    const cfg_gateway *gw = g.rt->gw;
    apply_logging(gw);
    g.port = gw->listener.port;
    g.admin_port = gw->admin.port;
    g.fd_ceiling = raise_nofile();
    atomic_store(&g.budget.max, max_connections_for(gw, true));
    obs_set_conn_figures(conn_figures, &g.budget);

    g.n_workers = o->workers > 0 ? o->workers : (int)uv_available_parallelism();
    if (g.n_workers < 1) g.n_workers = 1;
    g.workers = calloc((size_t)g.n_workers, sizeof *g.workers);
    for (int i = 0; i < g.n_workers; i++) {
        worker *w = &g.workers[i];
        uv_mutex_init(&w->lock);
        uv_sem_init(&w->started, 0);
        w->pl.id = (unsigned)i;
        w->pl.obs = obs_shard_new();
        w->pl.draining = &g.draining;
        w->pl.rng = 0x9E3779B97F4A7C15ull ^ ((uint64_t)(i + 1) * 0xBF58476D1CE4E5B9ull) ^
                    (uint64_t)time(NULL);
        w->initial = g.rt;
        pl_runtime_ref(g.rt);
        w->srv_opts.port = g.port;
        w->srv_opts.exclusive = i == 0; /* fails when another process holds the port */
        w->srv_opts.budget = &g.budget;
        w->srv_opts.tls_cert_pem = gw->listener.tls_cert;
        w->srv_opts.tls_key_pem = gw->listener.tls_key;
        limits_for(gw, &w->srv_opts.limits);
        if (i == 0 && gw->admin.port) { /* admin traffic is light: one loop serves it */
            w->admin_opts.port = gw->admin.port;
            w->admin_opts.host = gw->admin.address;
            w->admin_opts.exclusive = true;
            http_limits_default(&w->admin_opts.limits);
        }
        uv_thread_create(&w->tid, worker_main, w);
        uv_sem_wait(&w->started);
        if (w->start_rc != 0) {
            fprintf(stderr, "ctxgate: %s\n", w->start_err);
            uv_thread_join(&w->tid);
            for (int j = 0; j < i; j++) {
                uv_mutex_lock(&g.workers[j].lock);
                g.workers[j].stop = true;
                uv_mutex_unlock(&g.workers[j].lock);
                uv_async_send(&g.workers[j].wake);
                uv_thread_join(&g.workers[j].tid);
            }
            pl_runtime_unref(g.rt);
            if (g.ks) {
                kube_stop();
                uv_run(g.loop, UV_RUN_DEFAULT);
            }
            return 1;
        }
    }

    uv_signal_init(g.loop, &g.sig_hup);
    uv_signal_init(g.loop, &g.sig_term);
    uv_signal_init(g.loop, &g.sig_int);
    uv_signal_start(&g.sig_hup, on_signal, SIGHUP);
    uv_signal_start(&g.sig_term, on_signal, SIGTERM);
    uv_signal_start(&g.sig_int, on_signal, SIGINT);
    uv_timer_init(g.loop, &g.debounce);
    if (!g.ks) watch_paths();
    log_info("listening on port %d (%d workers)%s; at most %zu client connections", g.port,
             g.n_workers, gw->listener.tls_cert ? " with TLS" : "", atomic_load(&g.budget.max));
    if (g.admin_port)
        log_info("admin listener on %s:%d (metrics, /admin/*)%s", gw->admin.address, g.admin_port,
                 gw->admin.has_api_key ? "; /admin/* needs the admin key" : "");

    uv_run(g.loop, UV_RUN_DEFAULT);
    join_workers();
    pl_runtime_unref(g.rt);
    for (size_t i = 0; i < g.n_watches; i++)
        free(g.watch_names[i]);
    free(g.watch_names);
    free(g.watches);
    for (int i = 0; i < g.n_workers; i++) {
        uv_mutex_destroy(&g.workers[i].lock);
        uv_sem_destroy(&g.workers[i].started);
    }
    free(g.workers);
    uv_loop_close(g.loop);
    log_info("shut down cleanly");
    return 0;
}
