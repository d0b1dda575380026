/* conditions.h — metav1.Condition lists in a resource's status: set one condition keeping its
 * lastTransitionTime while its status does not change, and compare two statuses ignoring the
 * timestamps that move on every reconcile (so the controller writes /status only when something
 * a reader cares about changed). */
#ifndef CTXGATE_CONTROLLER_CONDITIONS_H
#define CTXGATE_CONTROLLER_CONDITIONS_H

#include <jansson.h>
#include <stdbool.h>

/* Sets condition `type` in the array conds (appended when absent): status "True" / "False" /
 * "Unknown", reason CamelCase, message, observedGeneration. lastTransitionTime becomes now when
 * the condition is new or its status changed, else the previous one is kept. Returns true when
 * anything but lastTransitionTime changed. */
bool cond_set(json_t *conds, const char *type, const char *status, const char *reason,
              const char *message, json_int_t generation, const char *now);
/* The condition of type in conds, or NULL (borrowed). */
json_t *cond_get(const json_t *conds, const char *type);
/* "True"/"False"/"Unknown" of type, or NULL when absent. */
const char *cond_status(const json_t *conds, const char *type);

/* Equal except for every lastTransitionTime, lastUpdated and lastReconciledTime field (at any
 * depth). NULL equals an empty object. */
bool status_same(const json_t *a, const json_t *b);

#endif
