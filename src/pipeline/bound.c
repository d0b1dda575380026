/* bound.c — binding configurations to a worker: opening its store handles for a new runtime
 * before the old one is let go (so Memory stores, shared by name, keep their data across a
 * reload), and closing them once the last request of the old runtime finished. */
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "pipeline/bound.h"

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
        if (!b->stores || !b->errors) abort();
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
    for (size_t i = 0; i < b->n_stores; i++) free(b->errors[i]);
    free(b->errors);
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

void pl_worker_set_runtime(pl_worker *w, pl_runtime *rt)
{
    pl_bound *old = w->bound;
    w->bound = bound_new(w, rt);
    pl_bound_unref(old);
}

void pl_worker_release(pl_worker *w)
{
    pl_bound *old = w->bound;
    w->bound = NULL;
    pl_bound_unref(old);
}

const cfg_gateway *pl_worker_gateway(const pl_worker *w)
{
    return w->bound->rt->gw;
}
