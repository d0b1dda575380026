/* runtime.c — one published configuration as the pipeline sees it. */
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/health.h"
#include "pipeline/pipeline.h"
#include "pipeline/route.h"
#include "providers/provider.h"

pl_runtime *pl_runtime_new(cfg_snapshot *snap, const char *gw_name, char *err, size_t errlen)
{
    const cfg_gateway *gw = cfg_find_gateway(snap, gw_name);
    if (!gw) {
        if (gw_name)
            snprintf(err, errlen, "no LLMGateway named '%s' in the given manifests", gw_name);
        else
            snprintf(err, errlen, "the given manifests contain no LLMGateway");
        return NULL;
    }
    pl_runtime *rt = calloc(1, sizeof *rt);
    if (!rt) abort();
    rt->snap = snap;
    cfg_snapshot_ref(snap);
    rt->gw = gw;
    rt->rr = calloc(gw->n_routes ? gw->n_routes : 1, sizeof *rt->rr);
    rt->stats = calloc(gw->n_targets ? gw->n_targets : 1, sizeof *rt->stats);
    if (!rt->rr || !rt->stats) abort();
    rt->health = health_new(gw->n_targets);
    for (size_t i = 0; i < gw->n_targets; i++)
        if (provider_splices(&gw->targets[i])) rt->any_splice = true;
    atomic_init(&rt->refs, 1);
    return rt;
}

void pl_runtime_inherit_health(pl_runtime *rt, pl_runtime *prev)
{
    if (!rt || !prev) return;
    health_inherit(rt->health, rt->gw, prev->health, prev->gw);
}

void pl_runtime_ref(pl_runtime *rt)
{
    atomic_fetch_add_explicit(&rt->refs, 1, memory_order_relaxed);
}

void pl_runtime_unref(pl_runtime *rt)
{
    if (!rt) return;
    if (atomic_fetch_sub_explicit(&rt->refs, 1, memory_order_acq_rel) != 1) return;
    health_free(rt->health, rt->gw->n_targets); /* rt->gw lives in the snapshot */
    cfg_snapshot_unref(rt->snap);
    free((void *)rt->rr);
    free(rt->stats);
    free(rt);
}
