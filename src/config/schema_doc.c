/* schema_doc.c — the Markdown field reference generated from the schema tables; docs/reference.md
 * is exactly this output (a unit test fails when they differ). */
#include <string.h>

#include "config/load.h"
#include "config/schema.h"

static void cell(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|')
            fputs("\\|", f);
        else if (*s == '\n')
            fputc(' ', f);
        else
            fputc(*s, f);
    }
}

static const char *format_note(sch_format fmt)
{
    switch (fmt) {
    case FMT_HTTP_URL:
        return " (http/https URL)";
    case FMT_URI:
        return " (URL)";
    case FMT_PATH:
        return " (path, starts with /)";
    case FMT_REGEX:
        return " (PCRE2 regex)";
    case FMT_DNSNAME:
        return " (object name)";
    case FMT_BASE64:
        return " (base64 values)";
    case FMT_DATETIME:
        return " (RFC 3339 time)";
    case FMT_NONE:
        return "";
    }
    return "";
}

static const char *ref_note(sch_ref r)
{
    switch (r) {
    case REF_SECRET:
        return " Names a Secret key.";
    case REF_SECRET_TLS:
        return " Names a Secret with tls.crt and tls.key.";
    case REF_SECRET_AES256:
        return " Names a Secret key of exactly 32 bytes.";
    case REF_MCP:
        return " Names a ModelContextProtocol.";
    case REF_MCP_REDIS:
        return " Names a ModelContextProtocol of storage.type Redis.";
    case REF_TARGET:
        return " Names a modelTargets name or alias.";
    case REF_ROUTE:
        return " Names a route.";
    case REF_TEMPLATE:
        return " Names a transformation.requestTemplates entry.";
    case REF_NONE:
        return "";
    }
    return "";
}

static void type_cell(FILE *f, const sch_field *fl, bool enforced)
{
    const sch_field *t = fl;
    const char *suffix = "";
    if (fl->kind == SCH_ARRAY) {
        t = fl->items;
        suffix = t->kind == SCH_OBJECT ? "" : " list";
    }
    if (fl->kind == SCH_ARRAY && t->kind == SCH_OBJECT)
        fputs("list of objects", f);
    else
        fprintf(f, "%s%s", sch_kind_name(t->kind), suffix);
    fputs(format_note(t->format), f);
    if (t->has_min || t->has_max) {
        const sch_field *r = t;
        if (r->has_min && r->has_max)
            fprintf(f, ", %g..%g", r->min, r->max);
        else if (r->has_min)
            fprintf(f, ", >= %g", r->min);
        else
            fprintf(f, ", <= %g", r->max);
    }
    if (fl != t && fl->has_min)
        fprintf(f, ", at least %g item%s", fl->min, fl->min == 1 ? "" : "s");
    if (fl != t && fl->has_max) fprintf(f, ", at most %g item%s", fl->max, fl->max == 1 ? "" : "s");
    if (t->max_len) fprintf(f, ", at most %u characters", t->max_len);
    if (fl->max_props) fprintf(f, ", at most %u entries", fl->max_props);
    if (t->enums) {
        fputs(": ", f);
        for (const sch_enum *e = t->enums; e->value; e++) {
            fprintf(f, "%s`%s`", e == t->enums ? "" : ", ", e->value);
            if (e->refused)
                fputs(" (refused)", f);
            else if (enforced && !e->enforced)
                fputs(" (not enforced)", f);
        }
    }
}

static void rows(FILE *f, const sch_field *obj, const char *prefix, bool enforced, bool status,
                 bool refused)
{
    for (const sch_field *m = obj->fields; m->name; m++) {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", m->name);
        bool enf = enforced && (m->flags & SCH_ENF);
        bool in_status = status || !strcmp(path, "status");
        bool in_refused = refused || (m->flags & SCH_REFUSE);
        fprintf(f, "| `%s` | ", path);
        type_cell(f, m, enf);
        fputs(" | ", f);
        if (m->def) {
            fputc('`', f);
            cell(f, m->def);
            fputc('`', f);
        }
        fprintf(f, " | %s | %s | ", m->flags & SCH_REQ ? "yes" : "",
                in_status    ? "-"
                : in_refused ? "refused"
                : enf        ? "yes"
                             : "no");
        cell(f, m->desc);
        cell(f, ref_note(m->kind == SCH_ARRAY ? m->items->ref : m->ref));
        fputs(" |\n", f);
        const sch_field *child = m->kind == SCH_ARRAY ? m->items : m;
        if (child->kind == SCH_OBJECT && child->fields && strcmp(path, "metadata")) {
            char sub[260];
            snprintf(sub, sizeof sub, "%s%s", path, m->kind == SCH_ARRAY ? "[]" : "");
            rows(f, child, sub, enf, in_status, in_refused);
        }
    }
}

/* the cross-field rules below obj, as "`path`: message" items (path = where the error points) */
static void rule_items(FILE *f, const sch_field *fl, const char *path)
{
    for (const sch_rule *r = fl->rules; r && r->cel; r++) {
        const char *fp = r->field_path ? r->field_path : "";
        if (!*path && *fp == '.') fp++;
        fprintf(f, "- `%s%s`: %s\n", path, fp, r->message);
    }
    if (fl->kind == SCH_OBJECT && fl->fields && strcmp(path, "metadata") && strcmp(path, "status"))
        for (const sch_field *m = fl->fields; m->name; m++) {
            char sub[260];
            snprintf(sub, sizeof sub, "%s%s%s", path, *path ? "." : "", m->name);
            rule_items(f, m, sub);
        }
    if (fl->kind == SCH_ARRAY) {
        char sub[260];
        snprintf(sub, sizeof sub, "%s[]", path);
        rule_items(f, fl->items, sub);
    }
}

static bool any_rule(const sch_field *fl)
{
    if (fl->rules && fl->rules->cel) return true;
    if (fl->kind == SCH_OBJECT && fl->fields)
        for (const sch_field *m = fl->fields; m->name; m++)
            if (any_rule(m)) return true;
    return fl->kind == SCH_ARRAY && any_rule(fl->items);
}

int cfg_schema_doc_write(FILE *f)
{
    return sch_doc_write(f);
}

int sch_doc_write(FILE *f)
{
    fputs(
        "<!-- Generated by `ctxgate schema-doc` from src/config/schema_*.c. Do not edit by hand:\n"
        "     regenerate with `ctxgate schema-doc > docs/reference.md` (a unit test checks it). "
        "-->\n"
        "# ctxgate resource reference (" SCH_GROUP "/" SCH_VERSION ")\n\n"
        "Every field ctxgate accepts, generated from the same schema tables that drive loading,\n"
        "validation, defaults and the CRDs. Columns: **Default** is applied when the field is "
        "absent\n"
        "(inside an object that is present); **Enforced** `yes` means the gateway implements the\n"
        "field today, `no` means it is validated and accepted with the warning\n"
        "`accepted, not yet enforced`; enum values marked *(not enforced)* warn the same way.\n"
        "`refused` marks security policies not implemented yet: a manifest that declares one\n"
        "(or uses a value marked *(refused)*) is an error, `not supported yet; remove it or\n"
        "upgrade`, because serving without the policy would let traffic through unchecked.\n"
        "Status fields (`-`) are written by the controller and ignored when loading.\n"
        "`metadata` takes the usual Kubernetes fields (`name` is required, `namespace` defaults "
        "to\n"
        "`default`). See docs/configuration.md for how manifests are loaded and checked.\n",
        f);
    for (size_t i = 0; i < SCH_N_KINDS; i++) {
        const sch_kind_def *k = &sch_kinds[i];
        fprintf(f, "\n## %s (`%s`", k->kind, k->api_version);
        if (k->short_name) fprintf(f, ", short name `%s`", k->short_name);
        fprintf(f, ")\n\n%s\n\n", k->desc);
        fputs("| Field | Type | Default | Required | Enforced | Description |\n"
              "| --- | --- | --- | --- | --- | --- |\n",
              f);
        rows(f, k->root, "", true, false, false);
        if (any_rule(k->root)) {
            fputs("\nCross-field rules, each with the message the API server returns (the CRD "
                  "carries them\nas `x-kubernetes-validations`) and `ctxgate validate` prints; for "
                  "the rules about names\n(\"is not a modelTargets name or alias\", aliases) "
                  "`ctxgate validate` names the value and its\nexact place instead:\n\n",
                  f);
            rule_items(f, k->root, "");
        }
    }
    return ferror(f) ? -1 : 0;
}
