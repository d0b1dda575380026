/* review.h — admission.k8s.io/v1 AdmissionReview for `ctxgate webhook`: parsing a review, deciding
 * whether it needs validating, validating its object with the same code as `ctxgate validate`
 * (cfg_load_objects over the object and the Secrets / ModelContextProtocols it references), and
 * building the response review. No I/O: webhook.c fetches the referenced objects. */
#ifndef CTXGATE_WEBHOOK_REVIEW_H
#define CTXGATE_WEBHOOK_REVIEW_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef struct wh_review {
    json_t *doc;           /* the whole review (owned) */
    const char *uid;       /* request.uid */
    const char *operation; /* CREATE, UPDATE, DELETE, CONNECT */
    const char *group;     /* request.kind.group ("" for the core group) */
    const char *kind;      /* request.kind.kind */
    const char *sub;       /* request.subResource, "" when none */
    const char *ns;        /* request.namespace, "" when none */
    json_t *object;        /* request.object (metadata.namespace filled from request.namespace
                              when absent), or NULL */
    json_t *old_object;    /* request.oldObject or NULL */
} wh_review;

/* Parses an AdmissionReview request. Returns 0, or -1 with a sentence in err naming the field at
 * fault (not JSON, wrong apiVersion/kind, request.uid missing, ...). */
int wh_review_parse(const char *body, size_t len, wh_review *out, char *err, size_t errlen);
void wh_review_free(wh_review *r);

/* true when r's object must be validated: CREATE or UPDATE of an LLMGateway or
 * ModelContextProtocol (group ctxgate.io), not a subresource, not being deleted
 * (metadata.deletionTimestamp: finalizers must be removable), and on UPDATE a changed spec (so
 * metadata-only writes such as the controller's finalizers pass even if a Secret has gone).
 * Otherwise false with why (static text) saying which rule let it through. */
bool wh_review_needs_check(const wh_review *r, const char **why);

typedef struct wh_verdict {
    bool allowed;
    int code;           /* status.code when denied: 422 invalid, 500 references unreadable */
    const char *reason; /* status.reason when denied: "Invalid", "InternalError" */
    char *message;      /* owned; NULL when allowed without a message */
    json_t *warnings;   /* owned array of strings (at most 256 bytes each), or NULL */
} wh_verdict;

/* Validates r->object together with found (the referenced objects that exist; a reference not
 * among them is reported missing by the validator). Errors in r->object deny it (422 Invalid,
 * every error in the message as "path: message"); its warnings, and errors about the found
 * objects themselves (an MCP's own missing Secret), go to warnings. */
void wh_validate(const wh_review *r, json_t *const *found, size_t n_found, wh_verdict *out);
/* A denial for an error the webhook met (the API server did not answer, ...). */
void wh_verdict_deny(wh_verdict *v, int code, const char *reason, const char *message);
void wh_verdict_free(wh_verdict *v);

/* The AdmissionReview response for uid, as JSON text (caller frees). */
char *wh_response_build(const char *uid, const wh_verdict *v);

#endif
