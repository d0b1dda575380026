/* refs.h — which other objects a resource names: the Secrets and ModelContextProtocols an
 * LLMGateway or ModelContextProtocol references, found by walking the schema tables (every field
 * whose sch_field.ref is a REF_SECRET* or REF_MCP* kind), so a new reference field in the schema
 * is followed without touching this code. Used by `serve --kube` (which informers to run) and
 * the admission webhook (which objects to fetch before validating). */
#ifndef CTXGATE_CONFIG_REFS_H
#define CTXGATE_CONFIG_REFS_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum {
    CFG_REF_SECRET, /* a v1 Secret in the referencing object's namespace */
    CFG_REF_MCP,    /* a ModelContextProtocol in the referencing object's namespace */
} cfg_ref_kind;

typedef struct cfg_ref {
    cfg_ref_kind kind;
    char *name; /* the referenced object's metadata.name */
    char *path; /* where: "spec.modelTargets[0].config.apiKeyRef" */
} cfg_ref;

typedef struct cfg_refs {
    cfg_ref *v;
    size_t n, cap;
} cfg_refs;

/* Appends to out every Secret / MCP reference of obj (an LLMGateway or ModelContextProtocol as
 * JSON, the way the API returns it), in document order; one entry per referencing field, so a
 * name may repeat. A reference without a string name is skipped (the schema reports it).
 * Returns the number appended; 0 for any other kind. */
size_t cfg_refs_collect(const json_t *obj, cfg_refs *out);
/* The first reference of kind and name in r, or NULL. */
const cfg_ref *cfg_refs_find(const cfg_refs *r, cfg_ref_kind kind, const char *name);
/* "Secret" / "ModelContextProtocol". */
const char *cfg_ref_kind_name(cfg_ref_kind kind);
void cfg_refs_free(cfg_refs *r);

#endif
