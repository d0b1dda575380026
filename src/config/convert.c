/* convert.c — YAML documents (libyaml's node API, which keeps line numbers) to JSON, guided by
 * the schema: the schema decides whether `8080` is an integer or a string, so quoting matters
 * only where YAML itself says it does (a quoted "8080" is never an integer). Every type, enum,
 * range, format and required-field rule of schema.h is checked here, with one diagnostic per
 * problem, and defaults are filled in. Cross-document rules live in check.c. */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <openssl/evp.h>
#include <pcre2.h>

#include "config/load_internal.h"
#include "core/buf.h"

#define CONVERT_MAX_DEPTH 64 /* guards against alias cycles and absurd nesting */

typedef struct cvt {
    yaml_document_t *y;
    const char *file;
    cfg_diags *d;
    json_t *lines;
    buf path;
    bool in_refused; /* inside a SCH_REFUSE field: already reported once, nothing more */
} cvt;

static int node_line(const yaml_node_t *n)
{
    return (int)n->start_mark.line + 1;
}

static const char *scalar(const yaml_node_t *n)
{
    return (const char *)n->data.scalar.value;
}

static bool is_plain(const yaml_node_t *n)
{
    return n->type == YAML_SCALAR_NODE && (n->data.scalar.style == YAML_PLAIN_SCALAR_STYLE ||
                                           n->data.scalar.style == YAML_ANY_SCALAR_STYLE);
}

static const char *cpath(cvt *c)
{
    return c->path.data ? c->path.data : "";
}

static size_t path_key(cvt *c, const char *key)
{
    size_t old = c->path.len;
    if (old) buf_puts(&c->path, ".");
    buf_puts(&c->path, key);
    return old;
}

static size_t path_index(cvt *c, size_t i)
{
    size_t old = c->path.len;
    buf_printf(&c->path, "[%zu]", i);
    return old;
}

static void path_pop(cvt *c, size_t old)
{
    c->path.len = old;
    if (c->path.data) c->path.data[old] = 0;
}

static void error_at(cvt *c, const yaml_node_t *n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void error_at(cvt *c, const yaml_node_t *n, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg_diag_add(c->d, c->file, n ? node_line(n) : 0, false, cpath(c), "%s", msg);
}

/* ---- YAML 1.2 core schema resolution of plain scalars ---- */

static bool core_null(const char *s)
{
    return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static int core_bool(const char *s)
{
    if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) return 1;
    if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) return 0;
    return -1;
}

static bool core_int(const char *s, long long *out)
{
    int base = 10;
    const char *p = s;
    if (!strncmp(s, "0x", 2))
        base = 16, p = s + 2;
    else if (!strncmp(s, "0o", 2))
        base = 8, p = s + 2;
    else if (*p == '-' || *p == '+')
        p++;
    if (!*p) return false;
    for (const char *q = p; *q; q++) {
        bool ok = base == 16 ? strchr("0123456789abcdefABCDEF", *q) != NULL
                             : (*q >= '0' && *q <= (base == 8 ? '7' : '9'));
        if (!ok) return false;
    }
    errno = 0;
    long long v = strtoll(base == 10 ? s : p, NULL, base);
    if (errno == ERANGE) return false;
    *out = v;
    return true;
}

static bool core_float(const char *s, double *out)
{
    const char *p = s;
    if (*p == '-' || *p == '+') p++;
    bool digits = false;
    while (*p >= '0' && *p <= '9')
        p++, digits = true;
    if (*p == '.') {
        p++;
        while (*p >= '0' && *p <= '9')
            p++, digits = true;
    }
    if (!digits) return false;
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '-' || *p == '+') p++;
        if (!(*p >= '0' && *p <= '9')) return false;
        while (*p >= '0' && *p <= '9')
            p++;
    }
    if (*p) return false;
    double v = strtod(s, NULL);
    if (!isfinite(v)) return false;
    *out = v;
    return true;
}

bool cfg_yaml_plain_is_nonstring(const char *s)
{
    long long i;
    double f;
    static const char *const yaml11[] = {"y",  "Y",  "yes", "Yes", "YES", "n",   "N",   "no", "No",
                                         "NO", "on", "On",  "ON",  "off", "Off", "OFF", NULL};
    if (core_null(s) || core_bool(s) >= 0 || core_int(s, &i) || core_float(s, &f)) return true;
    if (s[0] == '.' && (!strcasecmp(s + 1, "inf") || !strcasecmp(s + 1, "nan"))) return true;
    for (size_t k = 0; yaml11[k]; k++)
        if (!strcmp(s, yaml11[k])) return true;
    return false;
}

static json_t *any_node(yaml_document_t *y, yaml_node_t *n, int depth)
{
    if (!n || depth > CONVERT_MAX_DEPTH) return NULL;
    if (n->type == YAML_SCALAR_NODE) {
        const char *s = scalar(n);
        if (!is_plain(n)) return json_stringn(s, n->data.scalar.length);
        long long i;
        double f;
        int b;
        if (core_null(s)) return json_null();
        if ((b = core_bool(s)) >= 0) return json_boolean(b);
        if (core_int(s, &i)) return json_integer(i);
        if (core_float(s, &f)) return json_real(f);
        return json_stringn(s, n->data.scalar.length);
    }
    if (n->type == YAML_SEQUENCE_NODE) {
        json_t *a = json_array();
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++) {
            json_t *v = any_node(y, yaml_document_get_node(y, *it), depth + 1);
            if (!v) {
                json_decref(a);
                return NULL;
            }
            json_array_append_new(a, v);
        }
        return a;
    }
    json_t *o = json_object();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(y, p->key);
        json_t *v = any_node(y, yaml_document_get_node(y, p->value), depth + 1);
        if (!k || k->type != YAML_SCALAR_NODE || !v) {
            json_decref(v);
            json_decref(o);
            return NULL;
        }
        json_object_set_new(o, scalar(k), v);
    }
    return o;
}

json_t *cfg_yaml_node_to_json(yaml_document_t *y, yaml_node_t *n)
{
    return any_node(y, n, 0);
}

/* ---- schema-guided conversion ---- */

static const char *a_or_an(const char *word)
{
    return strchr("aeiou", word[0]) ? "an" : "a";
}

static void describe_node(const yaml_node_t *n, char *out, size_t len)
{
    if (n->type == YAML_MAPPING_NODE)
        snprintf(out, len, "a mapping");
    else if (n->type == YAML_SEQUENCE_NODE)
        snprintf(out, len, "a list");
    else if (is_plain(n) && core_null(scalar(n)))
        snprintf(out, len, "null");
    else if (is_plain(n))
        snprintf(out, len, "%.200s", scalar(n));
    else
        snprintf(out, len, "the quoted string \"%.200s\"", scalar(n));
}

static void type_error(cvt *c, const yaml_node_t *n, const sch_field *f)
{
    char got[256];
    describe_node(n, got, sizeof got);
    const char *what = sch_kind_name(f->kind);
    if (f->kind == SCH_FREE) what = "mapping";
    if (f->kind == SCH_OBJECT || f->kind == SCH_STRMAP) what = "mapping";
    bool quoted_number = n->type == YAML_SCALAR_NODE && !is_plain(n) &&
                         (f->kind == SCH_INT || f->kind == SCH_NUMBER || f->kind == SCH_BOOL);
    error_at(c, n, "expected %s %s, got %s%s", a_or_an(what), what, got,
             quoted_number ? " (remove the quotes)" : "");
}

static void enum_list(const sch_field *f, char *out, size_t len)
{
    size_t o = 0;
    out[0] = 0;
    for (const sch_enum *e = f->enums; e->value && o < len; e++)
        o += (size_t)snprintf(out + o, len - o, "%s%s", e == f->enums ? "" : ", ", e->value);
}

static bool check_format(cvt *c, const yaml_node_t *n, const sch_field *f, const char *s,
                         const char *what)
{
    switch (f->format) {
    case FMT_HTTP_URL: {
        const char *rest = !strncmp(s, "http://", 7)    ? s + 7
                           : !strncmp(s, "https://", 8) ? s + 8
                                                        : NULL;
        if (!rest || !*rest || *rest == '/') {
            error_at(c, n, "\"%s\" is not an http:// or https:// URL with a host", s);
            return false;
        }
        return true;
    }
    case FMT_URI: {
        const char *sep = strstr(s, "://");
        size_t sl = sep ? (size_t)(sep - s) : 0;
        if (!sep || sl == 0 || strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789+.-") != sl ||
            !sep[3]) {
            error_at(c, n, "\"%s\" is not a URL (scheme://...)", s);
            return false;
        }
        return true;
    }
    case FMT_PATH:
        if (s[0] != '/') {
            error_at(c, n, "\"%s\" must start with '/'", s);
            return false;
        }
        return true;
    case FMT_DNSNAME: {
        size_t len = strlen(s);
        bool ok = len > 0 && len <= 253 &&
                  strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789-.") == len &&
                  isalnum((unsigned char)s[0]) && isalnum((unsigned char)s[len - 1]);
        if (!ok)
            error_at(c, n,
                     "\"%s\" is not a valid name: use lower-case letters, digits, '-' and '.', "
                     "starting and ending with a letter or digit",
                     s);
        return ok;
    }
    case FMT_REGEX: {
        int code;
        PCRE2_SIZE off;
        pcre2_code *re =
            pcre2_compile((PCRE2_SPTR)s, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &off, NULL);
        if (re) {
            pcre2_code_free(re);
            return true;
        }
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof msg);
        error_at(c, n, "\"%s\" does not compile: %s at offset %zu", s, (const char *)msg,
                 (size_t)off);
        return false;
    }
    case FMT_BASE64: {
        size_t len = strlen(s);
        bool ok =
            len % 4 == 0 &&
            strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=") == len;
        if (ok && len) {
            unsigned char *tmp = malloc(len);
            ok = EVP_DecodeBlock(tmp, (const unsigned char *)s, (int)len) >= 0;
            free(tmp);
        }
        if (!ok)
            error_at(c, n, "the value of %s is not valid base64 (use stringData for plain text)",
                     what);
        return ok;
    }
    case FMT_NONE:
    case FMT_DATETIME:
        return true;
    }
    return true;
}

static bool check_range(cvt *c, const yaml_node_t *n, const sch_field *f, double v)
{
    /* the value as written (%g would print 4294967298 as 4.29497e+09) */
    const char *text = n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : "value";
    if (f->has_min && v < f->min) {
        error_at(c, n, "%s is below the minimum %g", text, f->min);
        return false;
    }
    if (f->has_max && v > f->max) {
        error_at(c, n, "%s is above the maximum %g", text, f->max);
        return false;
    }
    return true;
}

static json_t *convert(cvt *c, yaml_node_t *n, const sch_field *f, bool enforced, int depth);

static json_t *convert_scalar(cvt *c, yaml_node_t *n, const sch_field *f, bool enforced)
{
    if (n->type != YAML_SCALAR_NODE ||
        (is_plain(n) && core_null(scalar(n)) && f->kind != SCH_STRING)) {
        type_error(c, n, f);
        return NULL;
    }
    const char *s = scalar(n);
    json_t *v = NULL;
    long long i;
    double d;
    switch (f->kind) {
    case SCH_STRING:
        if (is_plain(n) && core_null(s)) {
            type_error(c, n, f);
            return NULL;
        }
        if (!check_format(c, n, f, s, cpath(c))) return NULL;
        v = json_stringn(s, n->data.scalar.length);
        break;
    case SCH_INT:
        if (!is_plain(n) || !core_int(s, &i)) {
            type_error(c, n, f);
            return NULL;
        }
        if (!check_range(c, n, f, (double)i)) return NULL;
        if (i > INT_MAX || i < INT_MIN) {
            /* the gateway holds these settings as int: refused rather than wrapped around
             * (timeouts.total 4294967297 would be 1 s) */
            error_at(c, n, "%lld is out of range: integers here are at most %d", i, INT_MAX);
            return NULL;
        }
        v = json_integer(i);
        break;
    case SCH_NUMBER:
        if (!is_plain(n) || !core_float(s, &d)) {
            type_error(c, n, f);
            return NULL;
        }
        if (!check_range(c, n, f, d)) return NULL;
        v = json_real(d);
        break;
    case SCH_BOOL: {
        int b = is_plain(n) ? core_bool(s) : -1;
        if (b < 0) {
            type_error(c, n, f);
            return NULL;
        }
        v = json_boolean(b);
        break;
    }
    case SCH_INT_OR_STRING:
        v = is_plain(n) && core_int(s, &i) ? json_integer(i)
                                           : json_stringn(s, n->data.scalar.length);
        break;
    default:
        return NULL;
    }
    if (f->enums) {
        const sch_enum *e = sch_enum_find(f, s);
        if (!e) {
            char list[1024];
            enum_list(f, list, sizeof list);
            if (json_is_integer(v))
                error_at(c, n, "%s is not one of %s", s, list);
            else
                error_at(c, n, "\"%s\" is not one of %s", s, list);
            json_decref(v);
            return NULL;
        }
        if (e->refused && !c->in_refused) {
            error_at(c, n, "\"%s\" is " SCH_REFUSED_MSG, s);
        } else if (enforced && !e->enforced) {
            const char *p = cpath(c), *dot = strrchr(p, '.');
            char field[128];
            snprintf(field, sizeof field, "%s", dot ? dot + 1 : p);
            char *br = strchr(field, '[');
            if (br) *br = 0;
            cfg_diag_add(c->d, c->file, node_line(n), true, p,
                         "%s %s accepted, not yet enforced%s%s", field, s, e->note ? ": " : "",
                         e->note ? e->note : "");
        }
    }
    return v;
}

static void record_line(cvt *c, const yaml_node_t *n)
{
    json_object_set_new(c->lines, cpath(c), json_integer(node_line(n)));
}

/* fills absent fields of an object with their defaults, recursing into defaulted objects */
static void apply_defaults(json_t *obj, const sch_field *f)
{
    if (!json_is_object(obj) || f->kind != SCH_OBJECT) return;
    for (const sch_field *m = f->fields; m->name; m++) {
        if (json_object_get(obj, m->name) || !m->def) continue;
        json_t *dv = json_loads(m->def, JSON_DECODE_ANY, NULL);
        if (!dv) continue; /* test_schema checks every default parses */
        if (m->kind == SCH_NUMBER && json_is_integer(dv)) {
            json_t *r = json_real((double)json_integer_value(dv));
            json_decref(dv);
            dv = r;
        }
        json_object_set_new(obj, m->name, dv);
        apply_defaults(dv, m);
    }
}

static json_t *convert_object(cvt *c, yaml_node_t *n, const sch_field *f, bool enforced, int depth)
{
    json_t *o = json_object();
    for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(c->y, p->key);
        yaml_node_t *v = yaml_document_get_node(c->y, p->value);
        if (!k || k->type != YAML_SCALAR_NODE) {
            error_at(c, k, "mapping keys must be plain strings");
            continue;
        }
        const char *key = scalar(k);
        size_t old = path_key(c, key);
        bool dup = false;
        for (yaml_node_pair_t *q = n->data.mapping.pairs.start; q < p; q++) {
            yaml_node_t *qk = yaml_document_get_node(c->y, q->key);
            if (qk && qk->type == YAML_SCALAR_NODE && !strcmp(scalar(qk), key)) dup = true;
        }
        const sch_field *m = f->kind == SCH_OBJECT ? sch_field_find(f, key) : NULL;
        if (dup) {
            error_at(c, k, "duplicate key \"%s\"", key);
        } else if (f->kind == SCH_STRMAP) {
            if (v->type != YAML_SCALAR_NODE || (is_plain(v) && core_null(scalar(v)))) {
                sch_field sf = {.kind = SCH_STRING};
                type_error(c, v, &sf);
            } else {
                char what[300];
                snprintf(what, sizeof what, "key \"%s\"", key);
                if (check_format(c, v, f, scalar(v), what))
                    json_object_set_new(o, key, json_stringn(scalar(v), v->data.scalar.length));
                record_line(c, v);
            }
        } else if (!m) {
            char allowed[2048];
            size_t off = 0;
            allowed[0] = 0;
            for (const sch_field *a = f->fields; a->name && off < sizeof allowed; a++)
                off += (size_t)snprintf(allowed + off, sizeof allowed - off, "%s%s",
                                        a == f->fields ? "" : ", ", a->name);
            error_at(c, k, "unknown field \"%s\"; allowed: %s", key, allowed);
        } else if (is_plain(v) && core_null(scalar(v))) {
            record_line(c, k); /* `field:` with no value means absent, as in kubectl */
        } else {
            bool m_enf = (m->flags & SCH_ENF) != 0;
            bool refuse = (m->flags & SCH_REFUSE) && !c->in_refused;
            if (refuse)
                error_at(c, k, SCH_REFUSED_MSG);
            else if (enforced && !m_enf)
                cfg_diag_add(c->d, c->file, node_line(k), true, cpath(c),
                             "accepted, not yet enforced");
            record_line(c, k);
            bool was_refused = c->in_refused;
            c->in_refused = was_refused || refuse;
            json_t *jv = convert(c, v, m, enforced && m_enf, depth + 1);
            c->in_refused = was_refused;
            if (jv) json_object_set_new(o, key, jv);
        }
        path_pop(c, old);
    }
    if (f->kind == SCH_OBJECT) {
        for (const sch_field *m = f->fields; m->name; m++) {
            if (!(m->flags & SCH_REQ) || json_object_get(o, m->name)) continue;
            bool present = false; /* present but failed conversion: already reported */
            for (yaml_node_pair_t *p = n->data.mapping.pairs.start; p < n->data.mapping.pairs.top;
                 p++) {
                yaml_node_t *k = yaml_document_get_node(c->y, p->key);
                yaml_node_t *v = yaml_document_get_node(c->y, p->value);
                if (k && k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), m->name) &&
                    !(is_plain(v) && core_null(scalar(v))))
                    present = true;
            }
            if (present) continue;
            size_t old = path_key(c, m->name);
            error_at(c, n, "missing required field \"%s\"", m->name);
            path_pop(c, old);
        }
        apply_defaults(o, f);
    }
    return o;
}

static void check_unique_names(cvt *c, json_t *arr)
{
    size_t i, j;
    json_t *a, *b;
    json_array_foreach(arr, i, a)
    {
        const char *na = json_string_value(json_object_get(a, "name"));
        if (!na) continue;
        json_array_foreach(arr, j, b)
        {
            if (j >= i) break;
            const char *nb = json_string_value(json_object_get(b, "name"));
            if (!nb || strcmp(na, nb)) continue;
            size_t old = path_index(c, i);
            size_t old2 = path_key(c, "name");
            json_t *ln = json_object_get(c->lines, cpath(c));
            char first[64];
            snprintf(first, sizeof first, "[%zu]", j);
            cfg_diag_add(c->d, c->file, (int)json_integer_value(ln), false, cpath(c),
                         "duplicate name \"%s\" (also used by item %s)", na, first);
            path_pop(c, old2);
            path_pop(c, old);
            break;
        }
    }
}

static json_t *convert(cvt *c, yaml_node_t *n, const sch_field *f, bool enforced, int depth)
{
    if (depth > CONVERT_MAX_DEPTH) {
        error_at(c, n, "nested too deeply (more than %d levels)", CONVERT_MAX_DEPTH);
        return NULL;
    }
    record_line(c, n);
    switch (f->kind) {
    case SCH_OBJECT:
    case SCH_STRMAP:
        if (n->type != YAML_MAPPING_NODE) {
            type_error(c, n, f);
            return NULL;
        }
        return convert_object(c, n, f, enforced, depth);
    case SCH_FREE: {
        if (n->type != YAML_MAPPING_NODE) {
            type_error(c, n, f);
            return NULL;
        }
        json_t *v = any_node(c->y, n, depth);
        if (!v)
            error_at(c, n,
                     "cannot be converted to JSON (non-string keys or nesting deeper than %d)",
                     CONVERT_MAX_DEPTH);
        return v;
    }
    case SCH_ARRAY: {
        if (n->type != YAML_SEQUENCE_NODE) {
            type_error(c, n, f);
            return NULL;
        }
        json_t *a = json_array();
        size_t i = 0;
        for (yaml_node_item_t *it = n->data.sequence.items.start; it < n->data.sequence.items.top;
             it++, i++) {
            size_t old = path_index(c, i);
            json_t *v =
                convert(c, yaml_document_get_node(c->y, *it), f->items, enforced, depth + 1);
            if (v) json_array_append_new(a, v);
            path_pop(c, old);
        }
        size_t count = (size_t)(n->data.sequence.items.top - n->data.sequence.items.start);
        if (f->has_min && (double)count < f->min)
            error_at(c, n, "needs at least %g item%s", f->min, f->min == 1 ? "" : "s");
        if (f->has_max && (double)count > f->max) error_at(c, n, "takes at most %g items", f->max);
        if (f->flags & SCH_UNIQ) check_unique_names(c, a);
        return a;
    }
    default:
        return convert_scalar(c, n, f, enforced);
    }
}

static yaml_node_t *map_get(yaml_document_t *y, yaml_node_t *map, const char *key)
{
    for (yaml_node_pair_t *p = map->data.mapping.pairs.start; p < map->data.mapping.pairs.top;
         p++) {
        yaml_node_t *k = yaml_document_get_node(y, p->key);
        if (k && k->type == YAML_SCALAR_NODE && !strcmp(scalar(k), key))
            return yaml_document_get_node(y, p->value);
    }
    return NULL;
}

static void decode_secret(cfg_doc *doc)
{
    doc->secret = json_object();
    const char *key;
    json_t *v;
    json_object_foreach(json_object_get(doc->json, "data"), key, v)
    {
        const char *s = json_string_value(v);
        size_t len = strlen(s);
        unsigned char *out = malloc(len / 4 * 3 + 1);
        int n = len ? EVP_DecodeBlock(out, (const unsigned char *)s, (int)len) : 0;
        if (n >= 0) {
            /* EVP_DecodeBlock counts the bytes '=' padding stands for */
            while (len && s[len - 1] == '=' && n > 0)
                len--, n--;
            json_object_set_new(doc->secret, key,
                                json_stringn_nocheck((const char *)out, (size_t)n));
        }
        free(out);
    }
    json_object_foreach(json_object_get(doc->json, "stringData"), key, v)
    {
        json_object_set(doc->secret, key, v);
    }
}

void cfg_convert_document(yaml_document_t *y, const char *file, cfg_diags *d, cfg_doc *out)
{
    memset(out, 0, sizeof *out);
    out->file = file;
    out->lines = json_object();
    yaml_node_t *root = yaml_document_get_root_node(y);
    out->line = root ? node_line(root) : 1;
    size_t errors_before = d->n_errors;
    cvt c = {.y = y, .file = file, .d = d, .lines = out->lines, .path = BUF_INIT};
    if (!root || root->type != YAML_MAPPING_NODE) {
        error_at(&c, root, "a manifest must be a mapping with apiVersion, kind, metadata and spec");
        goto done;
    }
    yaml_node_t *kind = map_get(y, root, "kind"), *ver = map_get(y, root, "apiVersion");
    char list[256] = "";
    for (size_t i = 0; i < SCH_N_KINDS; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "",
                 sch_kinds[i].kind);
    size_t old = path_key(&c, "kind");
    if (!kind || (is_plain(kind) && core_null(scalar(kind)))) {
        error_at(&c, root, "missing required field \"kind\" (one of %s)", list);
    } else if (kind->type != YAML_SCALAR_NODE || !(out->kind = sch_kind_find(scalar(kind)))) {
        char got[256];
        describe_node(kind, got, sizeof got);
        error_at(&c, kind, "\"%s\" is not one of %s", got, list);
    }
    path_pop(&c, old);
    if (!out->kind) goto done;
    old = path_key(&c, "apiVersion");
    if (!ver || (is_plain(ver) && core_null(scalar(ver)))) {
        error_at(&c, root, "missing required field \"apiVersion\" (%s for kind %s)",
                 out->kind->api_version, out->kind->kind);
    } else if (ver->type != YAML_SCALAR_NODE || strcmp(scalar(ver), out->kind->api_version)) {
        char got[256];
        describe_node(ver, got, sizeof got);
        error_at(&c, ver, "\"%s\" is not a valid apiVersion for kind %s (use %s)", got,
                 out->kind->kind, out->kind->api_version);
    }
    path_pop(&c, old);
    out->json = convert(&c, root, out->kind->root, true, 0);
    json_t *md = json_object_get(out->json, "metadata");
    out->name = json_string_value(json_object_get(md, "name"));
    out->ns = json_string_value(json_object_get(md, "namespace"));
    if (!out->ns) out->ns = "default";
    if (out->kind->id == SCH_KIND_SECRET && out->json) decode_secret(out);
done:
    out->ok = d->n_errors == errors_before && out->kind && out->name;
    buf_free(&c.path);
}

void cfg_doc_clear(cfg_doc *doc)
{
    json_decref(doc->json);
    json_decref(doc->lines);
    json_decref(doc->secret);
    memset(doc, 0, sizeof *doc);
}

int cfg_doc_line(const cfg_doc *doc, const char *path)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (;;) {
        json_t *l = json_object_get(doc->lines, tmp);
        if (l) return (int)json_integer_value(l);
        char *cut = strrchr(tmp, '.'), *br = strrchr(tmp, '[');
        if (br > cut) cut = br;
        if (!cut) return doc->line;
        *cut = 0;
    }
}
