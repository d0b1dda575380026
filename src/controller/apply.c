/* apply.c — the writes every reconcile makes: create-or-update of an owned object against its
 * informer's cache, delete, and the /status merge-patch written only when the status changed. */
#include <stdio.h>
#include <string.h>

#include "config/load.h"
#include "controller/conditions.h"
#include "controller/controller.h"
#include "controller/owned.h"

static const char *meta_str(const json_t *o, const char *k)
{
    return json_string_value(json_object_get(json_object_get(o, "metadata"), k));
}

static void applied(rc *r, const kube_resp *resp, json_t *arg)
{
    const char *verb = json_string_value(json_object_get(arg, "verb"));
    const char *kind = json_string_value(json_object_get(arg, "kind"));
    const char *name = json_string_value(json_object_get(arg, "name"));
    if (resp->status >= 200 && resp->status < 300) {
        char note[512];
        snprintf(note, sizeof note, "%s %s %s", verb, kind, name);
        kube_event_record(r->c->kc, r->obj, "Normal", verb,
                          strcmp(verb, "Created") == 0 ? "Create" : "Update", note);
        return;
    }
    /* 409: a stale cache (our own create not seen yet) or a concurrent writer: try again
     * shortly; an AlreadyExists that persists is an object we do not manage in the way */
    if (resp->status == 409 && (strcmp(verb, "Created") != 0 || wq_failures(r->c->q, r->key) < 3)) {
        r->requeue = true;
        return;
    }
    if (resp->status == 409) {
        rc_fail(r,
                "%s %s already exists and is not labelled app.kubernetes.io/managed-by=%s: "
                "delete it or label it so the controller can manage it",
                kind, name, OWNED_MANAGED_BY);
        return;
    }
    rc_fail(r, "%s %s %s: %s", strcmp(verb, "Created") == 0 ? "creating" : "updating", kind, name,
            resp->error ? resp->error : "no answer");
}

void rc_apply(rc *r, ctl_informer inf, const kube_gvr *gvr, json_t *desired)
{
    const char *name = meta_str(desired, "name");
    json_t *actual = ctl_cached(r->c, inf, r->ns, name);
    if (actual && !owned_needs_update(desired, actual)) {
        json_decref(desired);
        return;
    }
    json_t *arg = json_pack("{s:s, s:s, s:s}", "verb", actual ? "Updated" : "Created", "kind",
                            gvr->kind, "name", name ? name : "");
    rc_op *op = rc_op_new(r, applied, arg);
    kube_call *call;
    if (actual) {
        json_t *put = owned_merge_for_update(desired, actual);
        call = kube_replace(r->c->kc, gvr, put, rc_op_cb, op);
        json_decref(put);
    } else {
        call = kube_create(r->c->kc, gvr, desired, rc_op_cb, op);
    }
    json_decref(desired);
    if (!call) rc_op_failed(op);
}

static void deleted(rc *r, const kube_resp *resp, json_t *arg)
{
    if ((resp->status >= 200 && resp->status < 300) || resp->status == 404) return;
    rc_fail(r, "deleting %s: %s", json_string_value(arg), resp->error ? resp->error : "no answer");
}

void rc_delete(rc *r, ctl_informer inf, const kube_gvr *gvr, const char *name)
{
    if (inf != INF_COUNT && !ctl_cached(r->c, inf, r->ns, name)) return;
    char what[400];
    snprintf(what, sizeof what, "%s %s", gvr->kind, name);
    rc_op *op = rc_op_new(r, deleted, json_string(what));
    if (!kube_remove(r->c->kc, gvr, r->ns, name, rc_op_cb, op)) rc_op_failed(op);
}

static void patched(rc *r, const kube_resp *resp, json_t *arg)
{
    if (resp->status >= 200 && resp->status < 300) return;
    if (resp->status == 404) return; /* deleted meanwhile */
    rc_fail(r, "writing status: %s", resp->error ? resp->error : "no answer");
}

void rc_patch_status(rc *r, const kube_gvr *gvr, json_t *status)
{
    const json_t *old = json_object_get(r->obj, "status");
    if (status_same(old, status)) {
        json_decref(status);
        return;
    }
    /* a merge patch keeps keys it does not name: name the ones that went away as null */
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)old, k, v)
    {
        if (!json_object_get(status, k)) json_object_set_new(status, k, json_null());
    }
    json_t *patch = json_pack("{s:o}", "status", status);
    rc_op *op = rc_op_new(r, patched, NULL);
    if (!kube_merge_patch(r->c->kc, gvr, r->ns, r->name, "status", patch, rc_op_cb, op))
        rc_op_failed(op);
    json_decref(patch);
}

json_t *rc_status_base(const rc *r)
{
    const json_t *old = json_object_get(r->obj, "status");
    json_t *st = json_is_object(old) ? json_deep_copy(old) : json_object();
    if (!json_is_array(json_object_get(st, "conditions")))
        json_object_set_new(st, "conditions", json_array());
    return st;
}

json_int_t rc_generation(const rc *r)
{
    return json_integer_value(json_object_get(json_object_get(r->obj, "metadata"), "generation"));
}

void rc_first_error(const cfg_diags *d, const char *fallback, char *out, size_t n)
{
    size_t others = 0;
    bool first = true;
    snprintf(out, n, "%s", fallback);
    for (size_t i = 0; i < d->n; i++) {
        const cfg_diag *x = &d->items[i];
        if (x->warning) continue;
        if (first)
            snprintf(out, n, "%s%s%s", x->path ? x->path : "", x->path && *x->path ? ": " : "",
                     x->message);
        else
            others++;
        first = false;
    }
    if (others) {
        size_t l = strlen(out);
        snprintf(out + l, n - l, " (and %zu more error%s)", others, others == 1 ? "" : "s");
    }
}

void rc_set_invalid(rc *r, json_t *conds, const char *msg, json_int_t gen, const char *now)
{
    const json_t *ready =
        cond_get(json_object_get(json_object_get(r->obj, "status"), "conditions"), "Ready");
    const char *old = json_string_value(json_object_get(ready, "message"));
    if (!old || strcmp(old, msg) != 0)
        kube_event_record(r->c->kc, r->obj, "Warning", "InvalidSpec", "Validate", msg);
    cond_set(conds, "Ready", "False", "InvalidSpec", msg, gen, now);
}
