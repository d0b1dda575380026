/* load_internal.h — what the loader's files share (conversion, checks, snapshot building).
 * Not a public API: other layers use config.h and load.h. */
#ifndef CTXGATE_CONFIG_LOAD_INTERNAL_H
#define CTXGATE_CONFIG_LOAD_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <yaml.h>

#include "config/load.h"
#include "config/schema.h"

/* one YAML document after schema-guided conversion */
typedef struct cfg_doc {
    const char *file;         /* borrowed from the loader's file list */
    int line;                 /* where the document starts */
    const sch_kind_def *kind; /* NULL when the kind could not be determined */
    json_t *json;             /* the document with defaults; partial when it had errors */
    json_t *lines;            /* field path -> line, for diagnostics */
    json_t *secret;           /* Secret only: key -> decoded value (may hold NUL bytes) */
    const char *name, *ns;    /* borrowed from json; ns "default" when absent */
    bool ok;                  /* converted without errors */
} cfg_doc;

void cfg_diag_add(cfg_diags *d, const char *file, int line, bool warning, const char *path,
                  const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/* convert.c: a YAML document to a cfg_doc; diagnostics go to d. Always fills out (json may be
 * NULL when the document is not even a mapping). */
void cfg_convert_document(yaml_document_t *y, const char *file, cfg_diags *d, cfg_doc *out);
void cfg_doc_clear(cfg_doc *doc);
/* line of path in doc, or of its nearest recorded parent, or of the document */
int cfg_doc_line(const cfg_doc *doc, const char *path);
/* a YAML node by core-schema rules (no schema): for free JSON fields and for tests */
json_t *cfg_yaml_node_to_json(yaml_document_t *y, yaml_node_t *n);
/* true when a plain scalar with this text would not read back as a string */
bool cfg_yaml_plain_is_nonstring(const char *s);

/* check.c: cross-document rules over every converted document. from_cluster: the documents are
 * objects read from the Kubernetes API — a missing Secret is not a missing file, and a
 * summarize.gatewayRef to an LLMGateway not among them is left unchecked (a gateway pod may read
 * only its own LLMGateway). */
void cfg_check_docs(cfg_doc *docs, size_t n, cfg_diags *d, bool from_cluster);
const cfg_doc *cfg_find_doc(const cfg_doc *docs, size_t n, sch_kind_id kind, const char *ns,
                            const char *name);
/* a Secret's decoded value, NULL when the Secret or key is missing */
const json_t *cfg_secret_value(const cfg_doc *docs, size_t n, const char *ns, const char *name,
                               const char *key);

/* snapshot.c: the typed snapshot from error-free documents */
cfg_snapshot *cfg_snapshot_build(const cfg_doc *docs, size_t n);

#endif
