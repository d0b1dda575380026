/* bound.c — binding configurations to a worker: opening its store handles for a new runtime
 * before the old one is let go (so Memory stores, shared by name, keep their data across a
 * reload), and closing them once the last request of the old runtime finished. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "obs/metrics.h"
#include "pipeline/bound.h"
#include "pipeline/call.h"
#include "pipeline/health.h"

static pl_bound *bound_new(pl_worker *w, pl_runtime *rt)
{
    pl_bound *b = calloc(1, sizeof *b);
    if (!b) abort();
    b->rt = rt;
    b->w = w;
    b->refs = 1;
    b->n_stores = rt->snap->n_mcps;
    if (b->n_stores) {
        b->stores = calloc(b->n_stores, sizeof *b->stores);
        b->errors = calloc(b->n_stores, sizeof *b->errors);
        b->reported = calloc(b->n_stores, sizeof *b->reported);
        if (!b->stores || !b->errors || !b->reported) abort();
    }
    for (size_t i = 0; i < b->n_stores; i++) {
        char err[320];
        if (ctx_store_open(w->loop, &rt->snap->mcps[i], &b->stores[i], err, sizeof err) != 0) {
            b->stores[i] = NULL;
            b->errors[i] = strdup(err);
            log_error("worker %u: context store %s unavailable: %s", w->id, rt->snap->mcps[i].name,
                      err);
        }
    }
    return b;
}

static void bound_free(pl_bound *b)
{
    for (size_t i = 0; i < b->n_stores; i++)
        free(b->errors[i]);
    free(b->errors);
    free(b->reported);
    free(b->stores);
    pl_runtime_unref(b->rt);
    free(b);
}

static void on_store_closed(ctx_store *s, void *arg)
{
    pl_bound *b = arg;
    if (--b->closing == 0) bound_free(b);
}

void pl_bound_ref(pl_bound *b)
{
    b->refs++;
}

void pl_bound_unref(pl_bound *b)
{
    if (!b || --b->refs > 0) return;
    /* count first: a close may complete synchronously for some backends */
    for (size_t i = 0; i < b->n_stores; i++)
        if (b->stores[i]) b->closing++;
    if (b->closing == 0) {
        bound_free(b);
        return;
    }
    b->closing++; /* hold until every close is issued */
    for (size_t i = 0; i < b->n_stores; i++)
        if (b->stores[i]) ctx_store_close(b->stores[i], on_store_closed, b);
    if (--b->closing == 0) bound_free(b);
}

ctx_store *pl_bound_store(pl_bound *b, const cfg_mcp *mcp, const char **why)
{
    size_t i = (size_t)(mcp - b->rt->snap->mcps);
    if (i >= b->n_stores) {
        *why = "the route's ModelContextProtocol is not part of this configuration";
        return NULL;
    }
    *why = b->errors[i];
    return b->stores[i];
}

/* ---- upkeep: every few seconds each worker reports its handles' figures; worker 0 also
 * sweeps expired conversations (Redis expires them itself; the sweep is then a no-op) ---- */

enum { MAINT_FIRST_MS = 1000, MAINT_EVERY_MS = 5000 };

typedef struct maint_job {
    pl_bound *b; /* reference held until the store answered */
    size_t i;
    ctx_req req;
} maint_job;

static void on_maint_done(ctx_req *req)
{
    maint_job *j = req->data;
    pl_bound *b = j->b;
    const cfg_mcp *mcp = &b->rt->snap->mcps[j->i];
    if (req->type == CTX_REQ_STATS && req->result == CTX_OK && b->stores[j->i] &&
        mcp->metrics_enabled) {
        ctx_stats *last = &b->reported[j->i];
        obs_ctx_store_figures(mcp->name, ctx_store_backend_name(b->stores[j->i]),
                              (int64_t)req->stats.active, req->stats.evictions - last->evictions,
                              req->stats.expirations - last->expirations);
        *last = req->stats;
    } else if (req->result != CTX_OK && req->result != CTX_ECANCELED) {
        log_warn("context store %s: %s failed: %s", mcp->name,
                 req->type == CTX_REQ_STATS ? "statistics" : "expiry sweep", req->errmsg);
    }
    ctx_req_cleanup(req);
    free(j);
    pl_bound_unref(b);
}

static void maint_issue(pl_bound *b, size_t i, bool expire)
{
    maint_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->b = b;
    j->i = i;
    j->req.data = j;
    pl_bound_ref(b);
    int rc = expire ? ctx_store_expire(b->stores[i], &j->req, on_maint_done)
                    : ctx_store_stats(b->stores[i], &j->req, on_maint_done);
    if (rc != 0) {
        free(j);
        pl_bound_unref(b);
    }
}

static void on_maint(uv_timer_t *t)
{
    pl_worker *w = t->data;
    pl_bound *b = w->bound;
    if (!b) return;
    for (size_t i = 0; i < b->n_stores; i++) {
        if (!b->stores[i]) continue;
        if (w->id == 0 && b->rt->snap->mcps[i].ttl_seconds > 0) maint_issue(b, i, true);
        maint_issue(b, i, false);
    }
}

void pl_worker_set_runtime(pl_worker *w, pl_runtime *rt)
{
    pl_bound *old = w->bound;
    w->bound = bound_new(w, rt);
    pl_bound_unref(old);
    if (!w->maint_init) {
        uv_timer_init(w->loop, &w->maint);
        w->maint.data = w;
        w->maint_init = true;
        uv_timer_start(&w->maint, on_maint, MAINT_FIRST_MS, MAINT_EVERY_MS);
    }
    health_probes_start(w); /* worker 0 only; once */
}

void pl_worker_release(pl_worker *w)
{
    pl_context_cancel_summaries(w);
    health_probes_stop(w);
    if (w->maint_init) {
        uv_timer_stop(&w->maint);
        uv_close((uv_handle_t *)&w->maint, NULL);
        w->maint_init = false;
    }
    pl_bound *old = w->bound;
    w->bound = NULL;
    pl_bound_unref(old);
}

const cfg_gateway *pl_worker_gateway(const pl_worker *w)
{
    return w->bound->rt->gw;
}
