/* crds.c — apiextensions.k8s.io/v1 CustomResourceDefinitions generated from the schema tables,
 * written with libyaml's emitter so quoting is always right (a string "8080" stays a string). */
#include <jansson.h>
#include <string.h>
#include <yaml.h>

#include "config/load_internal.h"

typedef struct em {
    yaml_emitter_t e;
    int failed;
} em;

static void emit(em *m, yaml_event_t *ev)
{
    if (!m->failed && !yaml_emitter_emit(&m->e, ev)) m->failed = 1;
}

static void map_start(em *m)
{
    yaml_event_t ev;
    yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_MAPPING_STYLE);
    emit(m, &ev);
}

static void map_end(em *m)
{
    yaml_event_t ev;
    yaml_mapping_end_event_initialize(&ev);
    emit(m, &ev);
}

static void seq_start(em *m)
{
    yaml_event_t ev;
    yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1, YAML_BLOCK_SEQUENCE_STYLE);
    emit(m, &ev);
}

static void seq_end(em *m)
{
    yaml_event_t ev;
    yaml_sequence_end_event_initialize(&ev);
    emit(m, &ev);
}

/* a string that must read back as a string */
static void str(em *m, const char *s)
{
    yaml_event_t ev;
    int plain = !cfg_yaml_plain_is_nonstring(s);
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), plain, 1,
                                 plain ? YAML_ANY_SCALAR_STYLE : YAML_DOUBLE_QUOTED_SCALAR_STYLE);
    emit(m, &ev);
}

/* a number or boolean, written plain */
static void lit(em *m, const char *s)
{
    yaml_event_t ev;
    yaml_scalar_event_initialize(&ev, NULL, NULL, (yaml_char_t *)s, (int)strlen(s), 1, 0,
                                 YAML_PLAIN_SCALAR_STYLE);
    emit(m, &ev);
}

static void kv(em *m, const char *k, const char *v)
{
    str(m, k);
    str(m, v);
}

static void json_value(em *m, json_t *v)
{
    char num[64];
    size_t i;
    const char *k;
    json_t *it;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        map_start(m);
        json_object_foreach(v, k, it)
        {
            str(m, k);
            json_value(m, it);
        }
        map_end(m);
        break;
    case JSON_ARRAY:
        seq_start(m);
        json_array_foreach(v, i, it)
        {
            json_value(m, it);
        }
        seq_end(m);
        break;
    case JSON_STRING:
        str(m, json_string_value(v));
        break;
    case JSON_INTEGER:
        snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
        lit(m, num);
        break;
    case JSON_REAL:
        snprintf(num, sizeof num, "%.17g", json_real_value(v));
        if (!strpbrk(num, ".e")) strcat(num, ".0");
        lit(m, num);
        break;
    case JSON_TRUE:
        lit(m, "true");
        break;
    case JSON_FALSE:
        lit(m, "false");
        break;
    case JSON_NULL:
        lit(m, "null");
        break;
    }
}

static void number(em *m, const char *k, double v)
{
    char num[64];
    snprintf(num, sizeof num, "%.17g", v);
    str(m, k);
    lit(m, num);
}

static void unumber(em *m, const char *k, unsigned v)
{
    char num[32];
    snprintf(num, sizeof num, "%u", v);
    str(m, k);
    lit(m, num);
}

/* the key of an array of objects that Kubernetes may treat as a map (merge by key, unique):
 * arrays with unique required names, and status conditions (by type) */
static const char *list_map_key(const sch_field *f)
{
    if (f->items == &sch_conditions_item) return "type";
    if (!(f->flags & SCH_UNIQ) || f->items->kind != SCH_OBJECT) return NULL;
    const sch_field *n = sch_field_find(f->items, "name");
    return n && (n->flags & SCH_REQ) ? "name" : NULL;
}

static void rules(em *m, const sch_rule *r)
{
    if (!r || !r->cel) return;
    str(m, "x-kubernetes-validations");
    seq_start(m);
    for (; r->cel; r++) {
        map_start(m);
        kv(m, "rule", r->cel);
        kv(m, "message", r->message);
        if (r->field_path) kv(m, "fieldPath", r->field_path);
        if (r->reason) kv(m, "reason", r->reason);
        map_end(m);
    }
    seq_end(m);
}

static void schema(em *m, const sch_field *f)
{
    map_start(m);
    if (f->desc) kv(m, "description", f->desc);
    switch (f->kind) {
    case SCH_OBJECT: {
        kv(m, "type", "object");
        bool any_req = false;
        str(m, "properties");
        map_start(m);
        for (const sch_field *c = f->fields; c->name; c++) {
            str(m, c->name);
            schema(m, c);
            any_req |= (c->flags & SCH_REQ) != 0;
        }
        map_end(m);
        if (any_req) {
            str(m, "required");
            seq_start(m);
            for (const sch_field *c = f->fields; c->name; c++)
                if (c->flags & SCH_REQ) str(m, c->name);
            seq_end(m);
        }
        break;
    }
    case SCH_ARRAY:
        kv(m, "type", "array");
        str(m, "items");
        schema(m, f->items);
        if (f->has_min) number(m, "minItems", f->min);
        if (f->has_max) number(m, "maxItems", f->max);
        if (list_map_key(f)) {
            kv(m, "x-kubernetes-list-type", "map");
            str(m, "x-kubernetes-list-map-keys");
            seq_start(m);
            str(m, list_map_key(f));
            seq_end(m);
        } else if (f->items->kind == SCH_STRING && f->items->max_len) {
            kv(m, "x-kubernetes-list-type", "set"); /* names: aliases */
        }
        break;
    case SCH_STRING:
        kv(m, "type", "string");
        if (f->max_len) unumber(m, "maxLength", f->max_len);
        if (f->format == FMT_DATETIME) kv(m, "format", "date-time");
        if (f->format == FMT_PATH) kv(m, "pattern", "^/");
        if (f->format == FMT_HTTP_URL) kv(m, "pattern", "^https?://[^/]");
        break;
    case SCH_INT:
    case SCH_NUMBER:
        kv(m, "type", f->kind == SCH_INT ? "integer" : "number");
        if (f->has_min) number(m, "minimum", f->min);
        if (f->has_max) number(m, "maximum", f->max);
        break;
    case SCH_BOOL:
        kv(m, "type", "boolean");
        break;
    case SCH_STRMAP:
        kv(m, "type", "object");
        str(m, "additionalProperties");
        map_start(m);
        kv(m, "type", "string");
        if (f->max_len) unumber(m, "maxLength", f->max_len);
        map_end(m);
        if (f->max_props) unumber(m, "maxProperties", f->max_props);
        break;
    case SCH_FREE:
        kv(m, "type", "object");
        str(m, "x-kubernetes-preserve-unknown-fields");
        lit(m, "true");
        break;
    case SCH_INT_OR_STRING:
        str(m, "x-kubernetes-int-or-string");
        lit(m, "true");
        break;
    }
    if (f->enums) {
        str(m, "enum");
        seq_start(m);
        for (const sch_enum *e = f->enums; e->value; e++) {
            long long dummy;
            char *end;
            dummy = strtoll(e->value, &end, 10);
            (void)dummy;
            if (f->kind == SCH_INT_OR_STRING && !*end)
                lit(m, e->value);
            else
                str(m, e->value);
        }
        seq_end(m);
    }
    if (f->def) {
        json_t *d = json_loads(f->def, JSON_DECODE_ANY, NULL);
        if (d) {
            str(m, "default");
            json_value(m, d);
            json_decref(d);
        }
    }
    rules(m, f->rules);
    map_end(m);
}

typedef struct column {
    const char *name, *type, *path, *desc;
} column;

static const column gateway_columns[] = {
    {"Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status", "Ready condition"},
    {"Endpoint", "string", ".status.gatewayEndpoint", "URL the gateway answers on"},
    {"Targets", "string", ".spec.modelTargets[*].name", "Model targets"},
    {"Routes", "string", ".status.activeRoutes", "Routes being served"},
    {"Age", "date", ".metadata.creationTimestamp", NULL},
    {0},
};

static const column mcp_columns[] = {
    {"Ready", "string", ".status.conditions[?(@.type==\"Ready\")].status", "Ready condition"},
    {"Storage", "string", ".spec.storage.type", "Storage type"},
    {"Sessions", "integer", ".status.currentActiveSessions", "Conversations stored now"},
    {"Age", "date", ".metadata.creationTimestamp", NULL},
    {0},
};

static void crd(em *m, const sch_kind_def *k, const column *cols)
{
    yaml_event_t ev;
    char name[128], list_kind[128];
    snprintf(name, sizeof name, "%s.%s", k->plural, SCH_GROUP);
    snprintf(list_kind, sizeof list_kind, "%sList", k->kind);
    yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 0);
    emit(m, &ev);
    map_start(m);
    kv(m, "apiVersion", "apiextensions.k8s.io/v1");
    kv(m, "kind", "CustomResourceDefinition");
    str(m, "metadata");
    map_start(m);
    kv(m, "name", name);
    map_end(m);
    str(m, "spec");
    map_start(m);
    kv(m, "group", SCH_GROUP);
    str(m, "names");
    map_start(m);
    kv(m, "kind", k->kind);
    kv(m, "listKind", list_kind);
    kv(m, "plural", k->plural);
    kv(m, "singular", k->singular);
    str(m, "shortNames");
    seq_start(m);
    str(m, k->short_name);
    seq_end(m);
    str(m, "categories");
    seq_start(m);
    str(m, "ctxgate");
    seq_end(m);
    map_end(m);
    kv(m, "scope", "Namespaced");
    str(m, "versions");
    seq_start(m);
    map_start(m);
    kv(m, "name", SCH_VERSION);
    str(m, "served");
    lit(m, "true");
    str(m, "storage");
    lit(m, "true");
    str(m, "subresources");
    map_start(m);
    str(m, "status");
    map_start(m);
    map_end(m);
    map_end(m);
    str(m, "additionalPrinterColumns");
    seq_start(m);
    for (const column *c = cols; c->name; c++) {
        map_start(m);
        kv(m, "name", c->name);
        kv(m, "type", c->type);
        kv(m, "jsonPath", c->path);
        if (c->desc) kv(m, "description", c->desc);
        map_end(m);
    }
    seq_end(m);
    str(m, "schema");
    map_start(m);
    str(m, "openAPIV3Schema");
    map_start(m);
    kv(m, "description", k->desc);
    kv(m, "type", "object");
    str(m, "properties");
    map_start(m);
    bool spec_required = false;
    for (const sch_field *f = k->root->fields; f->name; f++) {
        str(m, f->name);
        if (!strcmp(f->name, "spec") || !strcmp(f->name, "status")) {
            schema(m, f);
            spec_required |= !strcmp(f->name, "spec") && (f->flags & SCH_REQ);
        } else {
            map_start(m); /* apiVersion, kind, metadata: the API server owns their schema */
            kv(m, "type", strcmp(f->name, "metadata") ? "string" : "object");
            map_end(m);
        }
    }
    map_end(m);
    if (spec_required) {
        str(m, "required");
        seq_start(m);
        str(m, "spec");
        seq_end(m);
    }
    map_end(m); /* openAPIV3Schema */
    map_end(m); /* schema */
    map_end(m); /* version */
    seq_end(m);
    map_end(m); /* spec */
    map_end(m);
    yaml_document_end_event_initialize(&ev, 1);
    emit(m, &ev);
}

static int write_kinds(FILE *f, const sch_kind_id *ids, size_t n)
{
    em m = {0};
    yaml_event_t ev;
    if (!yaml_emitter_initialize(&m.e)) return -1;
    yaml_emitter_set_output_file(&m.e, f);
    yaml_emitter_set_unicode(&m.e, 1);
    yaml_emitter_set_width(&m.e, 120);
    yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING);
    emit(&m, &ev);
    for (size_t i = 0; i < n; i++)
        crd(&m, &sch_kinds[ids[i]], ids[i] == SCH_KIND_GATEWAY ? gateway_columns : mcp_columns);
    yaml_stream_end_event_initialize(&ev);
    emit(&m, &ev);
    if (!m.failed && !yaml_emitter_flush(&m.e)) m.failed = 1;
    yaml_emitter_delete(&m.e);
    return m.failed || fflush(f) != 0 || ferror(f) ? -1 : 0;
}

static const sch_kind_id crd_kinds[] = {SCH_KIND_GATEWAY, SCH_KIND_MCP};

int cfg_crds_write(FILE *f)
{
    return write_kinds(f, crd_kinds, sizeof crd_kinds / sizeof crd_kinds[0]);
}

int cfg_crd_write(FILE *f, sch_kind_id kind)
{
    if (kind != SCH_KIND_GATEWAY && kind != SCH_KIND_MCP) return -1;
    return write_kinds(f, &kind, 1);
}

int cfg_crds_write_dir(const char *dir)
{
    for (size_t i = 0; i < sizeof crd_kinds / sizeof crd_kinds[0]; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.%s.yaml", dir, sch_kinds[crd_kinds[i]].plural,
                 SCH_GROUP);
        FILE *f = fopen(path, "w");
        if (!f) return -1;
        int rc = cfg_crd_write(f, crd_kinds[i]);
        if (fclose(f) != 0) rc = -1;
        if (rc != 0) return -1;
    }
    return 0;
}
