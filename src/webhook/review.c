/* review.c — AdmissionReview parsing, the validation verdict and the response (review.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "webhook/review.h"

enum {
    WH_WARNING_MAX = 256,  /* bytes per warning (the API server truncates longer ones) */
    WH_WARNINGS_MAX = 32,  /* warnings per response */
    WH_MESSAGE_MAX = 4096, /* bytes of a denial's message */
};

static const char *str_at(const json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

int wh_review_parse(const char *body, size_t len, wh_review *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    json_error_t je;
    json_t *doc = json_loadb(body, len, 0, &je);
    if (!doc) {
        snprintf(err, errlen, "the body is not JSON: %s (line %d)", je.text, je.line);
        return -1;
    }
    const char *api = str_at(doc, "apiVersion"), *kind = str_at(doc, "kind");
    json_t *req = json_object_get(doc, "request");
    const char *msg = NULL;
    if (!json_is_object(doc))
        msg = "the body is not a JSON object";
    else if (!api || strcmp(api, "admission.k8s.io/v1") != 0)
        msg = "apiVersion: expected admission.k8s.io/v1";
    else if (!kind || strcmp(kind, "AdmissionReview") != 0)
        msg = "kind: expected AdmissionReview";
    else if (!json_is_object(req))
        msg = "request: missing (an AdmissionReview request carries one)";
    else if (!str_at(req, "uid") || !*str_at(req, "uid"))
        msg = "request.uid: missing";
    else if (!str_at(req, "operation"))
        msg = "request.operation: missing";
    else if (!json_is_object(json_object_get(req, "kind")) ||
             !str_at(json_object_get(req, "kind"), "kind"))
        msg = "request.kind.kind: missing";
    if (msg) {
        snprintf(err, errlen, "not an AdmissionReview request: %s", msg);
        json_decref(doc);
        return -1;
    }
    json_t *k = json_object_get(req, "kind");
    out->doc = doc;
    out->uid = str_at(req, "uid");
    out->operation = str_at(req, "operation");
    out->kind = str_at(k, "kind");
    out->group = str_at(k, "group") ? str_at(k, "group") : "";
    out->sub = str_at(req, "subResource") ? str_at(req, "subResource") : "";
    out->ns = str_at(req, "namespace") ? str_at(req, "namespace") : "";
    json_t *obj = json_object_get(req, "object");
    out->object = json_is_object(obj) ? obj : NULL;
    json_t *old = json_object_get(req, "oldObject");
    out->old_object = json_is_object(old) ? old : NULL;
    if (out->object && *out->ns) {
        json_t *md = json_object_get(out->object, "metadata");
        if (!json_is_object(md)) {
            md = json_object();
            json_object_set_new(out->object, "metadata", md);
        }
        if (!str_at(md, "namespace")) json_object_set_new(md, "namespace", json_string(out->ns));
    }
    return 0;
}

void wh_review_free(wh_review *r)
{
    json_decref(r->doc);
    memset(r, 0, sizeof *r);
}

bool wh_review_needs_check(const wh_review *r, const char **why)
{
    const char *w = NULL;
    bool ours =
        strcmp(r->group, "ctxgate.io") == 0 &&
        (strcmp(r->kind, "LLMGateway") == 0 || strcmp(r->kind, "ModelContextProtocol") == 0);
    if (!ours)
        w = "not a ctxgate resource";
    else if (strcmp(r->operation, "CREATE") != 0 && strcmp(r->operation, "UPDATE") != 0)
        w = "only CREATE and UPDATE are validated";
    else if (*r->sub)
        w = "a subresource (status) write";
    else if (!r->object)
        w = "no object in the request";
    else if (json_object_get(json_object_get(r->object, "metadata"), "deletionTimestamp"))
        w = "the object is being deleted";
    else if (strcmp(r->operation, "UPDATE") == 0 && r->old_object &&
             json_equal(json_object_get(r->object, "spec"), json_object_get(r->old_object, "spec")))
        w = "the spec did not change";
    if (why) *why = w;
    return w == NULL;
}

static char *label_of(const json_t *obj)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *kind = str_at(obj, "kind"), *ns = str_at(md, "namespace"),
               *name = str_at(md, "name");
    char buf[512];
    snprintf(buf, sizeof buf, "%s %s/%s", kind ? kind : "object", ns ? ns : "default",
             name ? name : "?");
    return strdup(buf);
}

/* Appends s to the warnings, cut at WH_WARNING_MAX bytes on a UTF-8 boundary. */
static void warn(wh_verdict *v, const char *s)
{
    if (!v->warnings) v->warnings = json_array();
    if (json_array_size(v->warnings) >= WH_WARNINGS_MAX) return;
    char buf[WH_WARNING_MAX + 1];
    size_t n = strlen(s);
    if (n > WH_WARNING_MAX) {
        n = WH_WARNING_MAX;
        while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
            n--;
    }
    memcpy(buf, s, n);
    buf[n] = 0;
    json_array_append_new(v->warnings, json_string(buf));
}

static void diag_text(const cfg_diag *d, bool with_file, char *out, size_t n)
{
    snprintf(out, n, "%s%s%s%s%s", with_file ? d->file : "", with_file ? ": " : "", d->path,
             d->path[0] ? ": " : "", d->message);
}

void wh_validate(const wh_review *r, json_t *const *found, size_t n_found, wh_verdict *out)
{
    memset(out, 0, sizeof *out);
    size_t n = n_found + 1;
    json_t **objs = calloc(n, sizeof *objs);
    const char **labels = calloc(n, sizeof *labels);
    if (!objs || !labels) abort();
    char *label = label_of(r->object);
    if (!label) abort();
    objs[0] = r->object;
    labels[0] = label;
    for (size_t i = 0; i < n_found; i++)
        objs[i + 1] = found[i];
    cfg_diags d = {0};
    cfg_snapshot *snap = NULL;
    if (cfg_load_objects(objs, labels, n, &snap, &d) == 0) cfg_snapshot_unref(snap);
    char *msg = calloc(1, WH_MESSAGE_MAX);
    if (!msg) abort();
    size_t len = (size_t)snprintf(msg, WH_MESSAGE_MAX, "%s: ", label), n_err = 0;
    for (size_t i = 0; i < d.n; i++) {
        const cfg_diag *x = &d.items[i];
        bool own = strcmp(x->file, label) == 0;
        char line[1024];
        diag_text(x, !own, line, sizeof line);
        if (!own || x->warning) {
            warn(out, line);
            continue;
        }
        if (len < WH_MESSAGE_MAX)
            len +=
                (size_t)snprintf(msg + len, WH_MESSAGE_MAX - len, "%s%s", n_err ? "; " : "", line);
        n_err++;
    }
    if (n_err) {
        out->allowed = false;
        out->code = 422;
        out->reason = "Invalid";
        out->message = msg;
    } else {
        out->allowed = true;
        free(msg);
    }
    cfg_diags_free(&d);
    free(label);
    free(labels);
    free(objs);
}

void wh_verdict_deny(wh_verdict *v, int code, const char *reason, const char *message)
{
    v->allowed = false;
    v->code = code;
    v->reason = reason;
    free(v->message);
    v->message = strdup(message);
    if (!v->message) abort();
}

void wh_verdict_free(wh_verdict *v)
{
    free(v->message);
    json_decref(v->warnings);
    memset(v, 0, sizeof *v);
}

char *wh_response_build(const char *uid, const wh_verdict *v)
{
    json_t *resp = json_pack("{s:s, s:b}", "uid", uid ? uid : "", "allowed", v->allowed);
    if (!resp) return NULL;
    if (!v->allowed)
        json_object_set_new(resp, "status",
                            json_pack("{s:i, s:s, s:s}", "code", v->code ? v->code : 403, "reason",
                                      v->reason ? v->reason : "Forbidden", "message",
                                      v->message ? v->message : "denied"));
    if (v->warnings && json_array_size(v->warnings)) json_object_set(resp, "warnings", v->warnings);
    json_t *doc = json_pack("{s:s, s:s, s:o}", "apiVersion", "admission.k8s.io/v1", "kind",
                            "AdmissionReview", "response", resp);
    char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    return text;
}
