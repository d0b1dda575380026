/* bound.h — a runtime bound to one worker: the configuration plus that worker's handles on the
 * context stores it declares (Redis and PostgreSQL connections live on one loop). Private to
 * src/pipeline/. Only the owning worker's loop touches it, so its count needs no atomics. */
#ifndef CTXGATE_PIPELINE_BOUND_H
#define CTXGATE_PIPELINE_BOUND_H

#include "context/store.h"
#include "pipeline/pipeline.h"

struct pl_bound {
    pl_runtime *rt; /* one reference */
    pl_worker *w;
    ctx_store **stores; /* per rt->snap->mcps[i]; NULL when opening failed */
    char **errors;      /* per store: why it could not be opened (NULL when open) */
    size_t n_stores;
    ctx_stats *reported; /* per store: the handle's counters at the last metrics report */
    long refs;           /* the worker while current, plus every call that started on it */
    size_t closing;      /* handles whose close has not completed */
};

void pl_bound_ref(pl_bound *b);
void pl_bound_unref(pl_bound *b);
/* The worker's handle on mcp (a cfg_mcp of b's snapshot); NULL with *why when unavailable. */
ctx_store *pl_bound_store(pl_bound *b, const cfg_mcp *mcp, const char **why);

#endif
