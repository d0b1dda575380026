/* schema.h — the resource schema written once, as C tables, for every kind ctxgate reads.
 *
 * The same tables drive YAML loading (types come from the schema, not from how a scalar looks),
 * defaults, validation and its diagnostics, the "accepted, not yet enforced" warnings, the CRD
 * manifests (`ctxgate crds`) and the field tables in docs/reference.md (`ctxgate schema-doc`).
 * To enforce a field, add SCH_ENF to its flags (or set `enforced` on an enum value): the
 * warning disappears from validation and the docs change with it. Security policies that are
 * not enforced yet carry SCH_REFUSE (or `refused`) instead: they are errors, not warnings. */
#ifndef CTXGATE_CONFIG_SCHEMA_H
#define CTXGATE_CONFIG_SCHEMA_H

#include <stdbool.h>
#include <stdio.h>

typedef enum {
    SCH_OBJECT,        /* mapping with the listed fields only */
    SCH_ARRAY,         /* sequence of `items` */
    SCH_STRING,        /* any scalar, kept as text (a quoted or plain 8080 both give "8080") */
    SCH_INT,           /* plain integer scalar */
    SCH_NUMBER,        /* plain integer or float scalar, stored as a real */
    SCH_BOOL,          /* true / false */
    SCH_STRMAP,        /* mapping of string to string (labels, Secret data, header values) */
    SCH_FREE,          /* free JSON mapping, converted by YAML core-schema rules */
    SCH_INT_OR_STRING, /* plain integer stays an integer, anything else is a string */
} sch_kind;

typedef enum {
    FMT_NONE,
    FMT_HTTP_URL, /* http:// or https:// with a host */
    FMT_URI,      /* any scheme://rest (redis://, postgres://) */
    FMT_PATH,     /* URL path starting with '/' */
    FMT_REGEX,    /* compiles with PCRE2 */
    FMT_DNSNAME,  /* Kubernetes object name: lower-case letters, digits, '-', '.' */
    FMT_BASE64,   /* standard base64 (Secret data values) */
    FMT_DATETIME, /* RFC 3339 timestamp (status only, not checked) */
} sch_format;

/* what a field's value names; checked once every document is loaded */
typedef enum {
    REF_NONE,
    REF_SECRET,        /* {name, key} of a Secret in the referencing object's namespace */
    REF_SECRET_TLS,    /* {name} of a Secret holding tls.crt and tls.key */
    REF_SECRET_AES256, /* {name, key}: the key's data is exactly 32 bytes */
    REF_MCP,           /* {name} of a ModelContextProtocol */
    REF_MCP_REDIS,     /* {name} of a ModelContextProtocol with storage.type Redis */
    REF_TARGET,        /* a modelTargets name or alias of the same gateway */
    REF_ROUTE,         /* a routes name of the same gateway */
    REF_TEMPLATE,      /* a transformation.requestTemplates name of the same gateway */
} sch_ref;

enum {
    SCH_REQ = 1u << 0,  /* must be present */
    SCH_ENF = 1u << 1,  /* behaviour implemented; otherwise "accepted, not yet enforced" */
    SCH_UNIQ = 1u << 2, /* array of objects whose "name" must be unique */
    /* a security policy not implemented yet (authorization, rate limits, ...): declaring it is
     * an error, "not supported yet; remove it or upgrade", because serving without it would let
     * the traffic it is meant to stop through. Once implemented it becomes SCH_ENF. */
    SCH_REFUSE = 1u << 3,
};

typedef struct sch_enum {
    const char *value;
    bool enforced;    /* false: warns when used in an enforced field */
    bool refused;     /* like SCH_REFUSE: using this value is an error wherever it appears */
    const char *note; /* appended to that warning, e.g. what happens at run time; may be NULL */
} sch_enum;

/* The message of a field or value that SCH_REFUSE / sch_enum.refused refuses. */
#define SCH_REFUSED_MSG                                                                            \
    "not supported yet; remove it or upgrade (this version of ctxgate does not enforce it, so "    \
    "requests would pass unchecked)"

/* How `ctxgate validate` applies a rule. CEL: the rule text itself, by src/config/cel.c. The
 * others pair the rule with a precise check in check.c that names the value at fault and its
 * exact index (which a rule on an enclosing object cannot report); the rule's own message is
 * printed only if that check found nothing while the rule fails. Tests keep both in step. */
typedef enum {
    SCH_OFFLINE_CEL,
    SCH_OFFLINE_TARGET_REFS, /* check.c's REF_TARGET reference check */
    SCH_OFFLINE_ALIASES,     /* check.c's alias-collision check */
} sch_offline;

/* A cross-field rule, written once: emitted as an x-kubernetes-validations entry on the field
 * that holds it (`self` is that field's value) and applied by `ctxgate validate`. Only
 * standard Kubernetes CEL, and within the API server's cost budget: every list and string a
 * rule reaches has maxItems / maxLength in the schema. */
typedef struct sch_rule {
    const char *cel;     /* NULL ends a rule list */
    const char *message; /* one sentence; the text both the API server and validate print */
    const char
        *field_path;    /* where the error points, relative to self (".headerBased"); NULL = self */
    const char *reason; /* FieldValueRequired | FieldValueForbidden | ...; NULL = Invalid */
    sch_offline offline;
} sch_rule;

typedef struct sch_field sch_field;
struct sch_field {
    const char *name; /* NULL ends a field list; array items have no name */
    sch_kind kind;
    unsigned flags;          /* SCH_REQ | SCH_ENF | SCH_UNIQ | SCH_REFUSE */
    const char *def;         /* default as JSON text, applied when the field is absent */
    const sch_field *fields; /* SCH_OBJECT: members */
    const sch_field *items;  /* SCH_ARRAY: the element */
    const sch_enum *enums;   /* allowed values, NULL-terminated; NULL = any */
    bool has_min, has_max;   /* value for INT/NUMBER, length for ARRAY */
    double min, max;
    sch_format format; /* for STRING (and SCH_STRMAP values) */
    sch_ref ref;
    const char *desc;      /* one line, for docs and the CRD description */
    const sch_rule *rules; /* cross-field rules with self = this field's value; NULL = none */
    unsigned max_len;      /* STRING (and STRMAP values): maxLength in characters; 0 = none */
    unsigned max_props;    /* STRMAP: maxProperties; 0 = none */
};

typedef enum { SCH_KIND_GATEWAY, SCH_KIND_MCP, SCH_KIND_SECRET, SCH_N_KINDS } sch_kind_id;

typedef struct sch_kind_def {
    sch_kind_id id;
    const char *kind;                           /* LLMGateway */
    const char *api_version;                    /* ctxgate.io/v1alpha1 */
    const char *plural, *singular, *short_name; /* CRD names; NULL for built-in kinds */
    const sch_field *root; /* the whole document: apiVersion, kind, metadata, spec, status */
    const char *desc;
} sch_kind_def;

extern const sch_kind_def sch_kinds[SCH_N_KINDS];
extern const sch_field sch_llmgateway_doc;
extern const sch_field sch_mcp_doc;
extern const sch_field sch_secret_doc;

/* shared building blocks (schema_common.c) */
extern const sch_field sch_metadata_fields[];
extern const sch_field sch_secret_ref_fields[];
extern const sch_field sch_name_ref_fields[];
extern const sch_field sch_conditions_item;

#define SCH_GROUP "ctxgate.io"
#define SCH_VERSION "v1alpha1"

const sch_kind_def *sch_kind_find(const char *kind); /* NULL when unknown */
const sch_field *sch_field_find(const sch_field *object, const char *name);
/* the field at a dotted path below `root` ("spec.listener.port"; "[]" steps into items) */
const sch_field *sch_field_at(const sch_field *root, const char *path);
const char *sch_kind_name(sch_kind k); /* "object", "integer", ... for messages and docs */
const sch_enum *sch_enum_find(const sch_field *f, const char *value);

/* One CRD (LLMGateway or ModelContextProtocol) as a YAML stream of one document: `ctxgate crds`
 * prints these one after the other, deploy/crds/<plural>.<group>.yaml holds each. */
int cfg_crd_write(FILE *f, sch_kind_id kind);
/* Writes deploy/crds-style files, DIR/<plural>.ctxgate.io.yaml, for every CRD; 0 on success. */
int cfg_crds_write_dir(const char *dir);

/* Markdown field tables for every kind (docs/reference.md is exactly this output). */
int sch_doc_write(FILE *f);

#endif
