/* schema_common.c — schema pieces every kind shares (metadata, Secret references, status
 * conditions), the v1 Secret kind used in standalone mode, and lookups over the tables. */
#include "config/schema.h"

#include <string.h>

const sch_field sch_metadata_fields[] = {
    {.name = "name",
     .kind = SCH_STRING,
     .flags = SCH_REQ | SCH_ENF,
     .format = FMT_DNSNAME,
     .desc = "Object name, unique per kind and namespace."},
    {.name = "namespace",
     .kind = SCH_STRING,
     .flags = SCH_ENF,
     .format = FMT_DNSNAME,
     .desc = "Namespace; \"default\" when absent. References resolve in this namespace."},
    {.name = "labels",
     .kind = SCH_STRMAP,
     .flags = SCH_ENF,
     .desc = "Labels (kept, not interpreted)."},
    {.name = "annotations",
     .kind = SCH_STRMAP,
     .flags = SCH_ENF,
     .desc = "Annotations (kept, not interpreted)."},
    {.name = "uid", .kind = SCH_STRING, .flags = SCH_ENF, .desc = "Set by the API server."},
    {.name = "resourceVersion",
     .kind = SCH_STRING,
     .flags = SCH_ENF,
     .desc = "Set by the API server."},
    {.name = "generation", .kind = SCH_INT, .flags = SCH_ENF, .desc = "Set by the API server."},
    {.name = "creationTimestamp",
     .kind = SCH_STRING,
     .flags = SCH_ENF,
     .format = FMT_DATETIME,
     .desc = "Set by the API server."},
    {.name = "finalizers",
     .kind = SCH_ARRAY,
     .flags = SCH_ENF,
     .items = &(const sch_field){.kind = SCH_STRING},
     .desc = "Set by controllers."},
    {.name = "ownerReferences",
     .kind = SCH_ARRAY,
     .flags = SCH_ENF,
     .items = &(const sch_field){.kind = SCH_FREE},
     .desc = "Set by controllers."},
    {.name = "managedFields",
     .kind = SCH_ARRAY,
     .flags = SCH_ENF,
     .items = &(const sch_field){.kind = SCH_FREE},
     .desc = "Set by the API server."},
    {0},
};

const sch_field sch_secret_ref_fields[] = {
    {.name = "name",
     .kind = SCH_STRING,
     .flags = SCH_REQ | SCH_ENF,
     .format = FMT_DNSNAME,
     .desc = "Secret name, in the referencing object's namespace."},
    {.name = "key",
     .kind = SCH_STRING,
     .flags = SCH_REQ | SCH_ENF,
     .desc = "Key inside the Secret's data."},
    {0},
};

const sch_field sch_name_ref_fields[] = {
    {.name = "name",
     .kind = SCH_STRING,
     .flags = SCH_REQ | SCH_ENF,
     .format = FMT_DNSNAME,
     .desc = "Name of the referenced object, in the referencing object's namespace."},
    {0},
};

static const sch_enum condition_status[] = {{.value = "True", .enforced = true},
                                            {.value = "False", .enforced = true},
                                            {.value = "Unknown", .enforced = true},
                                            {0}};

const sch_field sch_conditions_item = {
    .kind = SCH_OBJECT,
    .fields =
        (const sch_field[]){
            {.name = "type",
             .kind = SCH_STRING,
             .flags = SCH_REQ | SCH_ENF,
             .desc = "Condition type: Ready, Available, Degraded."},
            {.name = "status",
             .kind = SCH_STRING,
             .flags = SCH_REQ | SCH_ENF,
             .enums = condition_status,
             .desc = "True, False or Unknown."},
            {.name = "reason",
             .kind = SCH_STRING,
             .flags = SCH_ENF,
             .desc = "CamelCase reason for the last transition."},
            {.name = "message",
             .kind = SCH_STRING,
             .flags = SCH_ENF,
             .desc = "Human-readable detail."},
            {.name = "lastTransitionTime",
             .kind = SCH_STRING,
             .flags = SCH_ENF,
             .format = FMT_DATETIME,
             .desc = "When status last changed."},
            {.name = "observedGeneration",
             .kind = SCH_INT,
             .flags = SCH_ENF,
             .has_min = true,
             .min = 0,
             .desc = "metadata.generation the condition was computed from."},
            {0},
        },
    .desc = "A metav1.Condition.",
};

static const sch_field secret_fields[] = {
    {.name = "apiVersion", .kind = SCH_STRING, .flags = SCH_REQ | SCH_ENF, .desc = "v1"},
    {.name = "kind", .kind = SCH_STRING, .flags = SCH_REQ | SCH_ENF, .desc = "Secret"},
    {.name = "metadata",
     .kind = SCH_OBJECT,
     .flags = SCH_REQ | SCH_ENF,
     .fields = sch_metadata_fields,
     .desc = "Object metadata; name is required."},
    {.name = "type",
     .kind = SCH_STRING,
     .flags = SCH_ENF,
     .def = "\"Opaque\"",
     .desc = "Secret type (Opaque, kubernetes.io/tls, ...); not interpreted."},
    {.name = "data",
     .kind = SCH_STRMAP,
     .flags = SCH_ENF,
     .format = FMT_BASE64,
     .desc = "Key to base64-encoded value."},
    {.name = "stringData",
     .kind = SCH_STRMAP,
     .flags = SCH_ENF,
     .desc = "Key to plain-text value; wins over data for the same key."},
    {.name = "immutable", .kind = SCH_BOOL, .flags = SCH_ENF, .desc = "Kept, not interpreted."},
    {0},
};

const sch_field sch_secret_doc = {
    .kind = SCH_OBJECT,
    .flags = SCH_ENF,
    .fields = secret_fields,
    .desc = "A v1 Secret; in standalone mode it stands in for the cluster Secret of the same name.",
};

const sch_kind_def sch_kinds[SCH_N_KINDS] = {
    {SCH_KIND_GATEWAY, "LLMGateway", SCH_GROUP "/" SCH_VERSION, "llmgateways", "llmgateway",
     "llmgw", &sch_llmgateway_doc,
     "The blueprint of one gateway: the models it exposes, how requests are routed to them, and "
     "the "
     "policies applied on the way."},
    {SCH_KIND_MCP, "ModelContextProtocol", SCH_GROUP "/" SCH_VERSION, "modelcontextprotocols",
     "modelcontextprotocol", "mcp", &sch_mcp_doc,
     "A declared context store for stateful conversations: where history lives, how long, how it "
     "is "
     "trimmed, and who may read it."},
    {SCH_KIND_SECRET, "Secret", "v1", NULL, NULL, NULL, &sch_secret_doc,
     "A v1 Secret (standalone mode: stands in for the cluster Secret)."},
};

const sch_kind_def *sch_kind_find(const char *kind)
{
    for (size_t i = 0; i < SCH_N_KINDS; i++)
        if (strcmp(sch_kinds[i].kind, kind) == 0) return &sch_kinds[i];
    return NULL;
}

const sch_field *sch_field_find(const sch_field *object, const char *name)
{
    if (!object || object->kind != SCH_OBJECT || !object->fields) return NULL;
    for (const sch_field *f = object->fields; f->name; f++)
        if (strcmp(f->name, name) == 0) return f;
    return NULL;
}

const sch_field *sch_field_at(const sch_field *root, const char *path)
{
    const sch_field *f = root;
    const char *p = path;
    while (f && *p) {
        if (*p == '.') {
            p++;
            continue;
        }
        if (strncmp(p, "[]", 2) == 0) {
            f = f->kind == SCH_ARRAY ? f->items : NULL;
            p += 2;
            continue;
        }
        size_t n = strcspn(p, ".[");
        char name[64];
        if (n >= sizeof name) return NULL;
        memcpy(name, p, n);
        name[n] = 0;
        f = sch_field_find(f, name);
        p += n;
    }
    return f;
}

const char *sch_kind_name(sch_kind k)
{
    switch (k) {
    case SCH_OBJECT:
        return "object";
    case SCH_ARRAY:
        return "list";
    case SCH_STRING:
        return "string";
    case SCH_INT:
        return "integer";
    case SCH_NUMBER:
        return "number";
    case SCH_BOOL:
        return "boolean";
    case SCH_STRMAP:
        return "map of strings";
    case SCH_FREE:
        return "free-form object";
    case SCH_INT_OR_STRING:
        return "integer or string";
    }
    return "?";
}

const sch_enum *sch_enum_find(const sch_field *f, const char *value)
{
    if (!f->enums) return NULL;
    for (const sch_enum *e = f->enums; e->value; e++)
        if (strcmp(e->value, value) == 0) return e;
    return NULL;
}
