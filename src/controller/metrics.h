/* metrics.h — the controller's Prometheus series (served on its own /metrics):
 *   ctxgate_controller_reconcile_total{kind,result}   result success | error | requeue
 *   ctxgate_controller_reconcile_errors_total{kind}
 *   ctxgate_controller_reconcile_duration_seconds{kind} histogram
 *   ctxgate_controller_queue_depth, ctxgate_controller_leader (0/1)
 *   ctxgate_controller_informer_lists_total, ctxgate_controller_informer_watches_total
 * Everything runs on the controller's one loop thread: plain counters. */
#ifndef CTXGATE_CONTROLLER_METRICS_H
#define CTXGATE_CONTROLLER_METRICS_H

#include <stddef.h>

#include "core/buf.h"

typedef enum { CM_GATEWAY = 0, CM_MCP = 1 } cm_kind;
typedef enum { CM_SUCCESS = 0, CM_ERROR = 1, CM_REQUEUE = 2 } cm_result;

typedef struct cm_figures {
    size_t queue_depth;
    int leader;
    unsigned long lists, watches; /* summed over the informers, since start */
} cm_figures;

void cm_reconcile(cm_kind kind, cm_result result, double seconds);
unsigned long cm_reconcile_count(cm_kind kind, cm_result result);
void cm_render(buf *out, const cm_figures *f);

#endif
