/* load.h — manifests on disk to a validated cfg_snapshot, and the diagnostics on the way.
 *
 * Paths may be files or directories (every *.yaml / *.yml / *.json inside, sorted by name,
 * not recursive). Each file may hold several YAML documents. Recognised kinds: LLMGateway,
 * ModelContextProtocol (apiVersion ctxgate.io/v1alpha1) and v1 Secret; any other kind is an
 * error. Every diagnostic names file, line and field path. */
#ifndef CTXGATE_CONFIG_LOAD_H
#define CTXGATE_CONFIG_LOAD_H

#include <stdbool.h>
#include <stdio.h>

#include <jansson.h>

#include "config/config.h"

typedef struct cfg_diag {
    char *file;    /* as given on the command line (or joined with the directory) */
    int line;      /* 1-based; 0 when unknown */
    char *path;    /* field path, e.g. spec.modelTargets[0].type; may be "" for a document */
    char *message; /* one sentence the user can act on */
    bool warning;  /* true: accepted (e.g. "accepted, not yet enforced"); false: error */
} cfg_diag;

typedef struct cfg_diags {
    cfg_diag *items;
    size_t n, cap;
    size_t n_errors;
} cfg_diags;

/* Loads and validates everything in paths. On success (no errors) returns 0 and a snapshot
 * with refs == 1; on any error returns -1, *out untouched. Warnings are collected either way. */
int cfg_load_paths(const char *const *paths, size_t n_paths, cfg_snapshot **out, cfg_diags *diags);

/* What a load read, for `ctxgate validate`'s per-file and summary lines. */
typedef struct cfg_load_report {
    char **files; /* every file read, in load order (directories expanded) */
    size_t n_files;
    size_t n_gateways, n_mcps, n_secrets; /* documents of each kind, valid or not */
} cfg_load_report;

/* cfg_load_paths, also filling *report (free with cfg_load_report_free); report may be NULL. */
int cfg_load_paths_report(const char *const *paths, size_t n_paths, cfg_snapshot **out,
                          cfg_diags *diags, cfg_load_report *report);
void cfg_load_report_free(cfg_load_report *r);

/* Objects as the Kubernetes API returns them (LLMGateway, ModelContextProtocol, v1 Secret, in
 * any order), loaded and validated exactly like manifests on disk. Fields the API server adds
 * (metadata.managedFields, status, a Secret's type / immutable) are dropped first. labels[i]
 * names objs[i] in diagnostics (cfg_diag.file), e.g. "LLMGateway ai/support"; NULL = built from
 * the object's kind, namespace and name. Returns like cfg_load_paths. A missing Secret reads
 * "Secret \"x\" not found in namespace \"ns\"" (no hint about files); an MCP's
 * summarize.gatewayRef to an LLMGateway not among objs is not checked. */
int cfg_load_objects(json_t *const *objs, const char *const *labels, size_t n, cfg_snapshot **out,
                     cfg_diags *diags);

/* "file:line: path: message" per diagnostic, errors and warnings ("warning: " prefix). */
void cfg_diags_print(FILE *f, const cfg_diags *d);
void cfg_diags_free(cfg_diags *d);

/* Writes the apiextensions.k8s.io/v1 CustomResourceDefinitions (YAML, '---' separated)
 * generated from the schema. Returns 0, or -1 on a write error. */
int cfg_crds_write(FILE *f);

/* Writes the Markdown field reference (docs/reference.md) generated from the schema. */
int cfg_schema_doc_write(FILE *f);

#endif
