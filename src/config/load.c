/* load.c — from paths on the command line to a snapshot: expands directories, reads every YAML
 * document of every file with libyaml, converts each through the schema (convert.c), applies
 * the cross-document rules (check.c) and, when nothing is wrong, builds the snapshot. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config/load_internal.h"

typedef struct strlist {
    char **v;
    size_t n, cap;
} strlist;

static void strlist_push(strlist *l, char *s)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    l->v[l->n++] = s;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static bool manifest_name(const char *name)
{
    size_t n = strlen(name);
    if (name[0] == '.') return false; /* hidden files and ConfigMap mount internals (..data) */
    return (n > 5 && !strcmp(name + n - 5, ".yaml")) || (n > 4 && !strcmp(name + n - 4, ".yml")) ||
           (n > 5 && !strcmp(name + n - 5, ".json"));
}

static void expand_path(const char *path, strlist *files, cfg_diags *d)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        cfg_diag_add(d, path, 0, false, "", "cannot read: %s", strerror(errno));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        strlist_push(files, strdup(path));
        return;
    }
    DIR *dir = opendir(path);
    if (!dir) {
        cfg_diag_add(d, path, 0, false, "", "cannot read directory: %s", strerror(errno));
        return;
    }
    strlist found = {0};
    struct dirent *e;
    size_t plen = strlen(path);
    bool slash = plen && path[plen - 1] == '/';
    while ((e = readdir(dir))) {
        if (!manifest_name(e->d_name)) continue;
        char *full = malloc(plen + strlen(e->d_name) + 2);
        sprintf(full, "%s%s%s", path, slash ? "" : "/", e->d_name);
        struct stat fst;
        if (stat(full, &fst) == 0 && S_ISREG(fst.st_mode))
            strlist_push(&found, full);
        else
            free(full);
    }
    closedir(dir);
    if (!found.n)
        cfg_diag_add(d, path, 0, false, "", "no *.yaml, *.yml or *.json files in this directory");
    if (found.n) qsort(found.v, found.n, sizeof *found.v, cmp_str);
    for (size_t i = 0; i < found.n; i++)
        strlist_push(files, found.v[i]);
    free(found.v);
}

typedef struct doclist {
    cfg_doc *v;
    size_t n, cap;
} doclist;

/* the next free slot of l (grown as needed), for cfg_convert_document to fill */
static cfg_doc *doclist_next(doclist *l)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 8;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        if (!l->v) abort();
    }
    return &l->v[l->n++];
}

static void read_file(const char *file, doclist *docs, cfg_diags *d)
{
    FILE *fp = fopen(file, "rb");
    if (!fp) {
        cfg_diag_add(d, file, 0, false, "", "cannot read: %s", strerror(errno));
        return;
    }
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    for (;;) {
        yaml_document_t ydoc;
        if (!yaml_parser_load(&parser, &ydoc)) {
            const yaml_mark_t *m = parser.problem_mark.line || !parser.context_mark.line
                                       ? &parser.problem_mark
                                       : &parser.context_mark;
            cfg_diag_add(d, file, (int)m->line + 1, false, "", "YAML syntax error: %s%s%s",
                         parser.problem ? parser.problem : "unreadable document",
                         parser.context ? " " : "", parser.context ? parser.context : "");
            break;
        }
        yaml_node_t *root = yaml_document_get_root_node(&ydoc);
        if (!root) { /* end of stream */
            yaml_document_delete(&ydoc);
            break;
        }
        bool empty = root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0;
        if (!empty) {
            cfg_convert_document(&ydoc, file, d, doclist_next(docs));
        }
        yaml_document_delete(&ydoc);
    }
    yaml_parser_delete(&parser);
    fclose(fp);
}

int cfg_load_paths_report(const char *const *paths, size_t n_paths, cfg_snapshot **out,
                          cfg_diags *diags, cfg_load_report *report)
{
    strlist files = {0};
    doclist docs = {0};
    size_t errors_before = diags->n_errors;
    if (n_paths == 0)
        cfg_diag_add(diags, "ctxgate", 0, false, "", "no manifest files or directories given");
    for (size_t i = 0; i < n_paths; i++)
        expand_path(paths[i], &files, diags);
    for (size_t i = 0; i < files.n; i++)
        read_file(files.v[i], &docs, diags);
    cfg_check_docs(docs.v, docs.n, diags, false);

    int rc = -1;
    if (diags->n_errors == errors_before) {
        cfg_snapshot *s = cfg_snapshot_build(docs.v, docs.n);
        if (s) {
            *out = s;
            rc = 0;
        }
    }
    if (report) {
        memset(report, 0, sizeof *report);
        for (size_t i = 0; i < docs.n; i++) {
            if (!docs.v[i].kind) continue;
            switch (docs.v[i].kind->id) {
            case SCH_KIND_GATEWAY:
                report->n_gateways++;
                break;
            case SCH_KIND_MCP:
                report->n_mcps++;
                break;
            default:
                report->n_secrets++;
                break;
            }
        }
        report->files = files.v;
        report->n_files = files.n;
        files.v = NULL;
        files.n = 0;
    }
    for (size_t i = 0; i < docs.n; i++)
        cfg_doc_clear(&docs.v[i]);
    free(docs.v);
    for (size_t i = 0; i < files.n; i++)
        free(files.v[i]);
    free(files.v);
    return rc;
}

/* The fields of metadata a configuration reads; the API server adds more (deletionTimestamp,
 * generateName, selfLink, ...) that manifests never carry. */
static const char *const kept_metadata[] = {
    "name",       "namespace",         "labels", "annotations", "uid", "resourceVersion",
    "generation", "creationTimestamp", NULL};

static json_t *trimmed_object(json_t *obj)
{
    json_t *t = json_object();
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v)
    {
        if (!strcmp(k, "status")) continue;
        if (!strcmp(k, "metadata") && json_is_object(v)) {
            json_t *m = json_object();
            for (const char *const *f = kept_metadata; *f; f++) {
                json_t *x = json_object_get(v, *f);
                if (x) json_object_set(m, *f, x);
            }
            json_object_set_new(t, k, m);
            continue;
        }
        json_object_set(t, k, v);
    }
    return t;
}

static char *object_label(json_t *obj)
{
    json_t *md = json_object_get(obj, "metadata");
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *name = json_string_value(json_object_get(md, "name"));
    size_t n = strlen(kind ? kind : "object") + strlen(ns ? ns : "default") +
               strlen(name ? name : "?") + 3;
    char *l = malloc(n);
    if (!l) abort();
    snprintf(l, n, "%s %s/%s", kind ? kind : "object", ns ? ns : "default", name ? name : "?");
    return l;
}

int cfg_load_objects(json_t *const *objs, const char *const *labels, size_t n, cfg_snapshot **out,
                     cfg_diags *diags)
{
    doclist docs = {0};
    strlist names = {0};
    size_t errors_before = diags->n_errors, diags_before = diags->n;
    for (size_t i = 0; i < n; i++) {
        strlist_push(&names, labels && labels[i] ? strdup(labels[i]) : object_label(objs[i]));
        if (!json_is_object(objs[i])) {
            cfg_diag_add(diags, names.v[i], 0, false, "", "not a JSON object");
            continue;
        }
        json_t *t = trimmed_object(objs[i]);
        char *text = json_dumps(t, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
        json_decref(t);
        if (!text) abort();
        yaml_parser_t parser;
        yaml_document_t ydoc;
        yaml_parser_initialize(&parser);
        yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
        if (!yaml_parser_load(&parser, &ydoc)) {
            cfg_diag_add(diags, names.v[i], 0, false, "", "unreadable object: %s",
                         parser.problem ? parser.problem : "parse error");
        } else {
            cfg_convert_document(&ydoc, names.v[i], diags, doclist_next(&docs));
            yaml_document_delete(&ydoc);
        }
        yaml_parser_delete(&parser);
        free(text);
    }
    cfg_check_docs(docs.v, docs.n, diags, true);
    /* lines of the JSON text made above mean nothing to the user: the field path says it all */
    for (size_t i = diags_before; i < diags->n; i++)
        diags->items[i].line = 0;
    int rc = -1;
    if (diags->n_errors == errors_before) {
        cfg_snapshot *s = cfg_snapshot_build(docs.v, docs.n);
        if (s) {
            *out = s;
            rc = 0;
        }
    }
    for (size_t i = 0; i < docs.n; i++)
        cfg_doc_clear(&docs.v[i]);
    free(docs.v);
    for (size_t i = 0; i < names.n; i++)
        free(names.v[i]);
    free(names.v);
    return rc;
}

int cfg_load_paths(const char *const *paths, size_t n_paths, cfg_snapshot **out, cfg_diags *diags)
{
    return cfg_load_paths_report(paths, n_paths, out, diags, NULL);
}

void cfg_load_report_free(cfg_load_report *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++)
        free(r->files[i]);
    free(r->files);
    memset(r, 0, sizeof *r);
}
