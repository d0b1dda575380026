/* metrics.c — counters and the reconcile-duration histogram of metrics.h, rendered in the
 * Prometheus text format (version 0.0.4). */
#include "controller/metrics.h"

static const char *const kind_names[] = {"LLMGateway", "ModelContextProtocol"};
static const char *const result_names[] = {"success", "error", "requeue"};
static const double bounds[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
#define N_BOUNDS (sizeof bounds / sizeof bounds[0])

static struct {
    unsigned long total[2][3];
    unsigned long buckets[2][N_BOUNDS]; /* cumulative at render time */
    unsigned long count[2];
    double sum[2];
} m;

void cm_reconcile(cm_kind kind, cm_result result, double seconds)
{
    m.total[kind][result]++;
    for (size_t i = 0; i < N_BOUNDS; i++)
        if (seconds <= bounds[i]) {
            m.buckets[kind][i]++;
            break;
        }
    m.count[kind]++;
    m.sum[kind] += seconds;
}

unsigned long cm_reconcile_count(cm_kind kind, cm_result result)
{
    return m.total[kind][result];
}

void cm_render(buf *out, const cm_figures *f)
{
    buf_puts(out, "# HELP ctxgate_controller_reconcile_total Reconciles finished, by kind and "
                  "result.\n# TYPE ctxgate_controller_reconcile_total counter\n");
    for (int k = 0; k < 2; k++)
        for (int r = 0; r < 3; r++)
            buf_printf(out, "ctxgate_controller_reconcile_total{kind=\"%s\",result=\"%s\"} %lu\n",
                       kind_names[k], result_names[r], m.total[k][r]);
    buf_puts(out, "# HELP ctxgate_controller_reconcile_errors_total Reconciles that failed and "
                  "were retried.\n# TYPE ctxgate_controller_reconcile_errors_total counter\n");
    for (int k = 0; k < 2; k++)
        buf_printf(out, "ctxgate_controller_reconcile_errors_total{kind=\"%s\"} %lu\n",
                   kind_names[k], m.total[k][CM_ERROR]);
    buf_puts(out, "# HELP ctxgate_controller_reconcile_duration_seconds Time of one reconcile.\n"
                  "# TYPE ctxgate_controller_reconcile_duration_seconds histogram\n");
    for (int k = 0; k < 2; k++) {
        unsigned long cum = 0;
        for (size_t i = 0; i < N_BOUNDS; i++) {
            cum += m.buckets[k][i];
            buf_printf(
                out,
                "ctxgate_controller_reconcile_duration_seconds_bucket{kind=\"%s\",le=\"%g\"} "
                "%lu\n",
                kind_names[k], bounds[i], cum);
        }
        buf_printf(out,
                   "ctxgate_controller_reconcile_duration_seconds_bucket{kind=\"%s\",le=\"+Inf\"} "
                   "%lu\n",
                   kind_names[k], m.count[k]);
        buf_printf(out, "ctxgate_controller_reconcile_duration_seconds_sum{kind=\"%s\"} %.6f\n",
                   kind_names[k], m.sum[k]);
        buf_printf(out, "ctxgate_controller_reconcile_duration_seconds_count{kind=\"%s\"} %lu\n",
                   kind_names[k], m.count[k]);
    }
    buf_printf(out,
               "# HELP ctxgate_controller_queue_depth Keys waiting in the work queue.\n"
               "# TYPE ctxgate_controller_queue_depth gauge\nctxgate_controller_queue_depth %zu\n"
               "# HELP ctxgate_controller_leader 1 while this replica holds the leader Lease.\n"
               "# TYPE ctxgate_controller_leader gauge\nctxgate_controller_leader %d\n"
               "# HELP ctxgate_controller_informer_lists_total Lists made by the informers "
               "(initial and re-lists).\n"
               "# TYPE ctxgate_controller_informer_lists_total counter\n"
               "ctxgate_controller_informer_lists_total %lu\n"
               "# HELP ctxgate_controller_informer_watches_total Watch connections opened by the "
               "informers.\n"
               "# TYPE ctxgate_controller_informer_watches_total counter\n"
               "ctxgate_controller_informer_watches_total %lu\n",
               f->queue_depth, f->leader, f->lists, f->watches);
}
