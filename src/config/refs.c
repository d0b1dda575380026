/* refs.c — the reference walk of refs.h: the JSON object and its schema table side by side. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/refs.h"
#include "config/schema.h"

static void push(cfg_refs *out, cfg_ref_kind kind, const char *name, const char *path)
{
    if (out->n == out->cap) {
        out->cap = out->cap ? out->cap * 2 : 8;
        out->v = realloc(out->v, out->cap * sizeof *out->v);
        if (!out->v) abort();
    }
    cfg_ref *r = &out->v[out->n++];
    r->kind = kind;
    r->name = strdup(name);
    r->path = strdup(path);
    if (!r->name || !r->path) abort();
}

static bool ref_kind_of(sch_ref ref, cfg_ref_kind *out)
{
    switch (ref) {
    case REF_SECRET:
    case REF_SECRET_TLS:
    case REF_SECRET_AES256:
        *out = CFG_REF_SECRET;
        return true;
    case REF_MCP:
    case REF_MCP_REDIS:
        *out = CFG_REF_MCP;
        return true;
    default:
        return false;
    }
}

/* path holds the field path of v so far (len bytes used, cap in all). */
static void walk(const sch_field *f, const json_t *v, char *path, size_t len, size_t cap,
                 cfg_refs *out)
{
    cfg_ref_kind k;
    if (ref_kind_of(f->ref, &k)) {
        const char *name = json_string_value(json_object_get(v, "name"));
        if (name && *name) push(out, k, name, path);
        return;
    }
    if (f->kind == SCH_OBJECT && f->fields && json_is_object(v)) {
        for (const sch_field *m = f->fields; m->name; m++) {
            const json_t *mv = json_object_get(v, m->name);
            if (!mv) continue;
            int w = snprintf(path + len, cap - len, "%s%s", len ? "." : "", m->name);
            if (w < 0 || (size_t)w >= cap - len) continue; /* deeper than any real schema */
            walk(m, mv, path, len + (size_t)w, cap, out);
            path[len] = 0;
        }
    } else if (f->kind == SCH_ARRAY && f->items && json_is_array(v)) {
        size_t i;
        const json_t *item;
        json_array_foreach(v, i, item)
        {
            int w = snprintf(path + len, cap - len, "[%zu]", i);
            if (w < 0 || (size_t)w >= cap - len) continue;
            walk(f->items, item, path, len + (size_t)w, cap, out);
            path[len] = 0;
        }
    }
}

size_t cfg_refs_collect(const json_t *obj, cfg_refs *out)
{
    const char *kind = json_string_value(json_object_get(obj, "kind"));
    const sch_kind_def *def = kind ? sch_kind_find(kind) : NULL;
    if (!def || def->id == SCH_KIND_SECRET) return 0;
    size_t before = out->n;
    char path[512] = "";
    walk(def->root, obj, path, 0, sizeof path, out);
    return out->n - before;
}

const cfg_ref *cfg_refs_find(const cfg_refs *r, cfg_ref_kind kind, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->v[i].kind == kind && strcmp(r->v[i].name, name) == 0) return &r->v[i];
    return NULL;
}

const char *cfg_ref_kind_name(cfg_ref_kind kind)
{
    return kind == CFG_REF_MCP ? "ModelContextProtocol" : "Secret";
}

void cfg_refs_free(cfg_refs *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->v[i].name);
        free(r->v[i].path);
    }
    free(r->v);
    memset(r, 0, sizeof *r);
}
