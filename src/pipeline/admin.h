/* admin.h — the admin JSON API (GET /admin/targets: health per target) and the metrics page,
 * served on spec.admin's listener when it is set, else on the main listener. Private to
 * src/pipeline/. */
#ifndef CTXGATE_PIPELINE_ADMIN_H
#define CTXGATE_PIPELINE_ADMIN_H

#include <stdbool.h>

#include "http/server.h"
#include "pipeline/pipeline.h"

/* "/admin" or below it. */
bool pl_admin_is_admin_path(str path);
/* The gateway's metricsEndpoint, or one exported by a ModelContextProtocol store. */
bool pl_admin_is_metrics_path(const pl_worker *w, str path);
/* The Prometheus page: every shard's series plus the targets' health. Finishes r. */
void pl_admin_serve_metrics(http_request *r, pl_worker *w);
/* Answers an /admin path. On the admin listener the key is spec.admin.apiKeyRef's (none set:
 * open); on the main listener (no spec.admin) any key the gateway accepts (authentication None:
 * open). Finishes r. */
void pl_admin_serve(http_request *r, pl_worker *w, bool admin_listener);

#endif
