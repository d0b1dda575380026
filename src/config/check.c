/* check.c — rules that need more than one field or more than one document: references between
 * objects (Secrets, ModelContextProtocols, targets, routes, templates), type-dependent
 * requirements, and routes that can never be reached. Reference fields are found through the
 * schema's `ref` markers, so a new reference field is checked by declaring it. */
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/cel.h"
#include "config/load_internal.h"
#include "core/buf.h"
#include "tokens/tokens.h"

typedef struct chk {
    cfg_doc *docs;
    size_t n;
    cfg_diags *d;
    cfg_doc *doc;
    json_t *targets;   /* name or alias -> index */
    json_t *routes;    /* name -> true */
    json_t *templates; /* name -> true */
    buf path;
    /* errors of the precise checks paired with rules (sch_offline), for the current document */
    unsigned precise[SCH_OFFLINE_ALIASES + 1];
    bool from_cluster;
} chk;

static void err(chk *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void err(chk *c, const char *path, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg_diag_add(c->d, c->doc->file, cfg_doc_line(c->doc, path), false, path, "%s", msg);
}

static void warn(chk *c, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void warn(chk *c, const char *path, const char *fmt, ...)
{
    char msg[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cfg_diag_add(c->d, c->doc->file, cfg_doc_line(c->doc, path), true, path, "%s", msg);
}

const cfg_doc *cfg_find_doc(const cfg_doc *docs, size_t n, sch_kind_id kind, const char *ns,
                            const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (docs[i].kind && docs[i].kind->id == kind && docs[i].name &&
            !strcmp(docs[i].name, name) && !strcmp(docs[i].ns, ns))
            return &docs[i];
    return NULL;
}

const json_t *cfg_secret_value(const cfg_doc *docs, size_t n, const char *ns, const char *name,
                               const char *key)
{
    const cfg_doc *s = cfg_find_doc(docs, n, SCH_KIND_SECRET, ns, name);
    return s ? json_object_get(s->secret, key) : NULL;
}

static void keys_of(const json_t *obj, char *out, size_t len)
{
    size_t o = 0;
    const char *k;
    const json_t *v;
    out[0] = 0;
    json_object_foreach((json_t *)obj, k, v)
    {
        if (o >= len) break;
        o += (size_t)snprintf(out + o, len - o, "%s%s", o ? ", " : "", k);
    }
    if (!o) snprintf(out, len, "none");
}

static const cfg_doc *need_secret(chk *c, const char *path, const char *name)
{
    const cfg_doc *s = cfg_find_doc(c->docs, c->n, SCH_KIND_SECRET, c->doc->ns, name);
    if (!s && c->from_cluster)
        err(c, path, "Secret \"%s\" not found in namespace \"%s\"", name, c->doc->ns);
    else if (!s)
        err(c, path, "Secret \"%s\" not found in namespace \"%s\" (add a kind: Secret document)",
            name, c->doc->ns);
    return s;
}

static const json_t *need_key(chk *c, const char *path, const cfg_doc *s, const char *key)
{
    const json_t *v = json_object_get(s->secret, key);
    if (!v) {
        char keys[512];
        keys_of(s->secret, keys, sizeof keys);
        err(c, path, "Secret \"%s\" has no key \"%s\" (its keys: %s)", s->name, key, keys);
    }
    return v;
}

static void known_list(const json_t *set, char *out, size_t len)
{
    keys_of(set, out, len);
}

static void check_ref(chk *c, json_t *v, const sch_field *f)
{
    const char *path = c->path.data ? c->path.data : "";
    const char *name =
        json_is_string(v) ? json_string_value(v) : json_string_value(json_object_get(v, "name"));
    const char *key = json_string_value(json_object_get(v, "key"));
    char known[1024];
    if (!name) return; /* a missing name was reported by the schema */
    switch (f->ref) {
    case REF_SECRET: {
        const cfg_doc *s = need_secret(c, path, name);
        if (s && key) need_key(c, path, s, key);
        break;
    }
    case REF_SECRET_TLS: {
        const cfg_doc *s = need_secret(c, path, name);
        if (s && need_key(c, path, s, "tls.crt")) need_key(c, path, s, "tls.key");
        break;
    }
    case REF_SECRET_AES256: {
        const cfg_doc *s = need_secret(c, path, name);
        const json_t *k = s && key ? need_key(c, path, s, key) : NULL;
        if (k && json_string_length(k) != 32)
            err(c, path,
                "Secret \"%s\" key \"%s\" holds %zu bytes; an AES-256 key must be exactly 32 bytes "
                "(data: base64 of 32 random bytes, e.g. `openssl rand -base64 32`)",
                name, key, json_string_length(k));
        break;
    }
    case REF_MCP:
    case REF_MCP_REDIS: {
        const cfg_doc *m = cfg_find_doc(c->docs, c->n, SCH_KIND_MCP, c->doc->ns, name);
        if (!m) {
            err(c, path, "ModelContextProtocol \"%s\" not found in namespace \"%s\"", name,
                c->doc->ns);
            break;
        }
        const char *type = json_string_value(
            json_object_get(json_object_get(json_object_get(m->json, "spec"), "storage"), "type"));
        if (f->ref == REF_MCP_REDIS && (!type || strcmp(type, "Redis")))
            err(c, path,
                "ModelContextProtocol \"%s\" has storage.type %s; a shared store must be type "
                "Redis",
                name, type ? type : "Memory");
        break;
    }
    case REF_TARGET:
        if (!json_object_get(c->targets, name)) {
            c->precise[SCH_OFFLINE_TARGET_REFS]++;
            known_list(c->targets, known, sizeof known);
            err(c, path, "\"%s\" is not a modelTargets name or alias (known: %s)", name, known);
        }
        break;
    case REF_ROUTE:
        if (!json_object_get(c->routes, name)) {
            known_list(c->routes, known, sizeof known);
            err(c, path, "\"%s\" is not a routes name (known: %s)", name, known);
        }
        break;
    case REF_TEMPLATE:
        if (!json_object_get(c->templates, name)) {
            known_list(c->templates, known, sizeof known);
            err(c, path, "\"%s\" is not a transformation.requestTemplates name (known: %s)", name,
                known);
        }
        break;
    case REF_NONE:
        break;
    }
}

/* the rule's error path: the node's path and the rule's field_path (".config.endpoint") */
static void rule_path(chk *c, const sch_rule *r, char *out, size_t len)
{
    const char *base = c->path.data ? c->path.data : "";
    const char *fp = r->field_path ? r->field_path : "";
    if (!*base && *fp == '.') fp++;
    snprintf(out, len, "%s%s", base, fp);
}

/* The node's x-kubernetes-validations rules, as the API server applies them. Rules paired with
 * a precise check (post = true, after the children were walked) speak only when that check
 * found nothing, so one fault gives one error. */
static void apply_rules(chk *c, json_t *v, const sch_field *f, bool post)
{
    char p[512], why[256];
    for (const sch_rule *r = f->rules; r && r->cel; r++) {
        if ((r->offline != SCH_OFFLINE_CEL) != post) continue;
        int ok = cel_eval_bool(r->cel, v, why, sizeof why);
        if (ok == 1) continue;
        if (ok == 0 && r->offline != SCH_OFFLINE_CEL && c->precise[r->offline]) continue;
        rule_path(c, r, p, sizeof p);
        if (ok == 0)
            err(c, p, "%s", r->message);
        else
            err(c, p, "cannot apply the rule \"%s\": %s", r->cel, why);
    }
}

/* maxLength and maxProperties: the limits the CRD declares so its rules stay within the API
 * server's cost budget, applied the same way offline */
static void check_sizes(chk *c, json_t *v, const sch_field *f)
{
    const char *path = c->path.data ? c->path.data : "";
    if (f->kind == SCH_STRING && f->max_len && json_is_string(v) &&
        json_string_length(v) > f->max_len)
        err(c, path, "is %zu characters long; at most %u are allowed", json_string_length(v),
            f->max_len);
    if (f->kind == SCH_STRMAP && json_is_object(v)) {
        if (f->max_props && json_object_size(v) > f->max_props)
            err(c, path, "has %zu entries; at most %u are allowed", json_object_size(v),
                f->max_props);
        const char *k;
        json_t *it;
        json_object_foreach(v, k, it)
        {
            if (f->max_len && json_is_string(it) && json_string_length(it) > f->max_len)
                err(c, path, "the value of \"%s\" is %zu characters long; at most %u are allowed",
                    k, json_string_length(it), f->max_len);
        }
    }
}

static void walk(chk *c, json_t *v, const sch_field *f)
{
    if (f->ref != REF_NONE && f->kind != SCH_STRMAP) check_ref(c, v, f);
    check_sizes(c, v, f);
    apply_rules(c, v, f, false);
    size_t old = c->path.len;
    if (f->kind == SCH_OBJECT && json_is_object(v)) {
        for (const sch_field *m = f->fields; m->name; m++) {
            json_t *mv = json_object_get(v, m->name);
            if (!mv) continue;
            if (old) buf_puts(&c->path, ".");
            buf_puts(&c->path, m->name);
            walk(c, mv, m);
            c->path.len = old;
            c->path.data[old] = 0;
        }
    } else if (f->kind == SCH_ARRAY && json_is_array(v)) {
        size_t i;
        json_t *it;
        json_array_foreach(v, i, it)
        {
            buf_printf(&c->path, "[%zu]", i);
            walk(c, it, f->items);
            c->path.len = old;
            c->path.data[old] = 0;
        }
    } else if (f->kind == SCH_STRMAP && f->ref != REF_NONE && json_is_object(v)) {
        const char *k;
        json_t *it;
        json_object_foreach(v, k, it)
        {
            buf_printf(&c->path, ".%s", k);
            check_ref(c, it, f);
            c->path.len = old;
            c->path.data[old] = 0;
        }
    }
    apply_rules(c, v, f, true);
}

static json_t *at(json_t *o, const char *a, const char *b)
{
    json_t *v = json_object_get(o, a);
    return b ? json_object_get(v, b) : v;
}

static void name_set(json_t *set, json_t *arr)
{
    size_t i;
    json_t *it;
    json_array_foreach(arr, i, it)
    {
        const char *n = json_string_value(json_object_get(it, "name"));
        if (n) json_object_set_new(set, n, json_true());
    }
}

static void path_of(char *out, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void path_of(char *out, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, len, fmt, ap);
    va_end(ap);
}

static size_t prefix_len(const char *p)
{
    size_t n = strlen(p);
    while (n > 0 && p[n - 1] == '/')
        n--;
    return n;
}

static bool has_match(json_t *route)
{
    json_t *m = json_object_get(route, "match");
    return json_array_size(json_object_get(m, "models")) ||
           json_array_size(json_object_get(m, "headers"));
}

/* Gemini's model id and Azure's deployment become a segment of the upstream URL's path: only
 * the characters their ids use, so no value can change the path or add a query. */
static bool url_segment_ok(const char *s)
{
    if (!s || !*s) return false;
    for (; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
              *s == '.' || *s == '-' || *s == '_'))
            return false;
    return true;
}

static void check_url_segment(chk *c, json_t *t, size_t i, const char *type)
{
    bool azure = !strcmp(type, "AzureOpenAI");
    if (!azure && strcmp(type, "Gemini") != 0) return;
    json_t *config = json_object_get(t, "config");
    const char *field = "config.deployment";
    const char *v = azure ? json_string_value(json_object_get(config, "deployment")) : NULL;
    if (!v) {
        field = "config.modelName";
        v = json_string_value(json_object_get(config, "modelName"));
    }
    if (!v) {
        field = "name";
        v = json_string_value(json_object_get(t, "name"));
    }
    if (!v) return; /* the schema reports the missing name */
    const char *id = !azure && !strncmp(v, "models/", 7) ? v + 7 : v;
    if (url_segment_ok(id)) return;
    char p[256];
    path_of(p, sizeof p, "spec.modelTargets[%zu].%s", i, field);
    err(c, p,
        "\"%s\" cannot be the %s in the upstream URL: use letters, digits, '.', '-' and '_' "
        "only%s",
        v, azure ? "deployment" : "Gemini model id",
        azure ? (strcmp(field, "config.deployment") ? " (or set config.deployment)" : "")
              : " (e.g. gemini-2.0-flash)");
}

/* ---- tokenizer data: checked when the configuration is loaded, not at the first request ---- */

/* The encodings a target's requests may be counted in: its modelName's (the pipeline counts in
 * the chosen target's), and those of the names clients send for it. */
static void target_encodings(json_t *t, json_t *need)
{
    const char *model = json_string_value(at(t, "config", "modelName"));
    if (!model) model = json_string_value(json_object_get(t, "name"));
    json_object_set_new(need, tok_encoding_for_model(model), json_true());
    const char *n = json_string_value(json_object_get(t, "name"));
    if (n) json_object_set_new(need, tok_encoding_for_model(n), json_true());
    size_t i;
    json_t *a;
    json_array_foreach(json_object_get(t, "aliases"), i, a)
    {
        if (json_is_string(a))
            json_object_set_new(need, tok_encoding_for_model(json_string_value(a)), json_true());
    }
}

static json_t *target_named(json_t *targets, const char *name)
{
    size_t i, k;
    json_t *t, *a;
    json_array_foreach(targets, i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n && name && !strcmp(n, name)) return t;
        json_array_foreach(json_object_get(t, "aliases"), k, a)
        {
            if (name && json_is_string(a) && !strcmp(json_string_value(a), name)) return t;
        }
    }
    return NULL;
}

/* A route whose ModelContextProtocol trims by tokens (TokenBudget, Summarize) counts every
 * request: the rank files of each encoding its targets use must load now, or the load fails
 * with a message saying where they were looked for. A Mock target counts the tokens of its
 * usage figures and falls back to an estimate without them: a warning. */
static void check_tokenizer(chk *c, json_t *spec)
{
    json_t *targets = json_object_get(spec, "modelTargets");
    json_t *reported = json_object();
    char p[256], why[8192];
    size_t i, j;
    json_t *r, *t;
    json_array_foreach(json_object_get(spec, "routes"), i, r)
    {
        const char *mcp = json_string_value(at(r, "contextRef", "name"));
        const cfg_doc *m = mcp ? cfg_find_doc(c->docs, c->n, SCH_KIND_MCP, c->doc->ns, mcp) : NULL;
        const char *strategy =
            m ? json_string_value(at(json_object_get(m->json, "spec"), "contextStrategy", "type"))
              : NULL;
        if (!strategy || (strcmp(strategy, "TokenBudget") && strcmp(strategy, "Summarize")))
            continue;
        json_t *need = json_object();
        json_array_foreach(json_object_get(r, "backends"), j, t)
        {
            json_t *tj = target_named(targets, json_string_value(json_object_get(t, "target")));
            if (tj) target_encodings(tj, need);
        }
        json_array_foreach(at(r, "failover", "targets"), j, t)
        {
            json_t *tj = target_named(targets, json_string_value(t));
            if (tj) target_encodings(tj, need);
        }
        const char *enc;
        json_t *v;
        json_object_foreach(need, enc, v)
        {
            if (json_object_get(reported, enc) || tok_load_detailed(enc, why, sizeof why)) continue;
            json_object_set_new(reported, enc, json_true());
            path_of(p, sizeof p, "spec.routes[%zu].contextRef", i);
            err(c, p,
                "ModelContextProtocol \"%s\" has contextStrategy.type %s, which counts tokens "
                "in %s, and that cannot be loaded: %s",
                mcp, strategy, enc, why);
        }
        json_decref(need);
    }
    json_array_foreach(targets, i, t)
    {
        const char *type = json_string_value(json_object_get(t, "type"));
        if (!type || strcmp(type, "Mock")) continue;
        const char *model = json_string_value(at(t, "config", "modelName"));
        if (!model) model = json_string_value(json_object_get(t, "name"));
        const char *enc = tok_encoding_for_model(model);
        if (json_object_get(reported, enc) || tok_load_detailed(enc, why, sizeof why)) continue;
        json_object_set_new(reported, enc, json_true());
        path_of(p, sizeof p, "spec.modelTargets[%zu].type", i);
        warn(c, p,
             "Mock usage figures will be estimates (ceil(bytes/4) per text), not %s counts: %s",
             enc, why);
    }
    json_decref(reported);
}

/* ---- config.tls of a model target: PEM that the upstream client could not use fails the load,
 * not the first request ---- */

/* OpenSSL's reason for the last failure, for a message; clears its error queue. */
static const char *ssl_reason(char *out, size_t len)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    if (e && ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) r = NULL;
    snprintf(out, len, "%s", r ? r : "no PEM block found");
    ERR_clear_error();
    return out;
}

/* An encrypted PEM block fails instead of OpenSSL asking for a passphrase on the terminal. */
static int no_passphrase(char *out, int size, int rwflag, void *u)
{
    (void)out;
    (void)size;
    (void)rwflag;
    (void)u;
    return 0;
}

/* Certificates in a PEM bundle; -1 when a block does not parse (why says what OpenSSL saw). */
static int pem_cert_count(const json_t *pem, X509 **first, char *why, size_t len)
{
    BIO *bio = BIO_new_mem_buf(json_string_value(pem), (int)json_string_length(pem));
    if (!bio) return -1;
    int n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, no_passphrase, NULL))) {
        if (first && !*first)
            *first = x;
        else
            X509_free(x);
        n++;
    }
    /* the loop ends at the end of the input (no start line) or at a block that is broken */
    unsigned long e = ERR_peek_last_error();
    if (n == 0 || (e && ERR_GET_REASON(e) != PEM_R_NO_START_LINE)) {
        ssl_reason(why, len);
        if (first) {
            X509_free(*first);
            *first = NULL;
        }
        n = -1;
    }
    ERR_clear_error();
    BIO_free(bio);
    return n;
}

static const json_t *tls_secret_value(chk *c, json_t *ref, const char *key)
{
    const char *name = json_string_value(json_object_get(ref, "name"));
    return name && key ? cfg_secret_value(c->docs, c->n, c->doc->ns, name, key) : NULL;
}

static void check_target_tls(chk *c, size_t i, json_t *t)
{
    json_t *config = json_object_get(t, "config"), *tls = json_object_get(config, "tls");
    if (!tls) return;
    char p[256], why[256];
    const char *type = json_string_value(json_object_get(t, "type"));
    const char *ep = json_string_value(json_object_get(config, "endpoint"));
    if (ep && strncasecmp(ep, "http://", 7) == 0) {
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls", i);
        err(c, p,
            "the endpoint %s is plain http://, so there is no TLS to configure; use an https:// "
            "endpoint or remove tls",
            ep);
    } else if (!ep && type && !strcmp(type, "Mock")) {
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls", i);
        err(c, p, "type Mock makes no upstream connection; remove tls");
    }
    const char *sn = json_string_value(json_object_get(tls, "serverName"));
    static const char host_chars[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.";
    if (sn && (!sn[0] || strspn(sn, host_chars) != strlen(sn))) {
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls.serverName", i);
        err(c, p, "\"%s\" is not a host name (letters, digits, '-' and '.', no port)", sn);
    }
    json_t *ca = json_object_get(tls, "caSecretRef");
    const json_t *pem = tls_secret_value(c, ca, json_string_value(json_object_get(ca, "key")));
    if (pem && pem_cert_count(pem, NULL, why, sizeof why) < 0) {
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls.caSecretRef", i);
        err(c, p,
            "Secret \"%s\" key \"%s\" is not a PEM certificate bundle (%s); put the CA "
            "certificate(s) there as -----BEGIN CERTIFICATE----- blocks",
            json_string_value(json_object_get(ca, "name")),
            json_string_value(json_object_get(ca, "key")), why);
    }
    json_t *cc = json_object_get(tls, "clientCertSecretRef");
    const json_t *crt = tls_secret_value(c, cc, "tls.crt"),
                 *key = tls_secret_value(c, cc, "tls.key");
    if (crt && key) {
        const char *name = json_string_value(json_object_get(cc, "name"));
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls.clientCertSecretRef", i);
        X509 *cert = NULL;
        EVP_PKEY *pk = NULL;
        if (pem_cert_count(crt, &cert, why, sizeof why) < 0) {
            err(c, p, "Secret \"%s\" key \"tls.crt\" is not a PEM certificate (%s)", name, why);
        } else {
            BIO *bio = BIO_new_mem_buf(json_string_value(key), (int)json_string_length(key));
            pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, no_passphrase, NULL) : NULL;
            BIO_free(bio);
            if (!pk)
                err(c, p,
                    "Secret \"%s\" key \"tls.key\" is not an unencrypted PEM private key (%s)",
                    name, ssl_reason(why, sizeof why));
            else if (X509_check_private_key(cert, pk) != 1)
                err(c, p,
                    "Secret \"%s\": tls.key is not the private key of the certificate in tls.crt "
                    "(%s)",
                    name, ssl_reason(why, sizeof why));
        }
        ERR_clear_error();
        EVP_PKEY_free(pk);
        X509_free(cert);
    }
    if (json_is_true(json_object_get(tls, "insecureSkipVerify"))) {
        path_of(p, sizeof p, "spec.modelTargets[%zu].config.tls.insecureSkipVerify", i);
        warn(c, p,
             "the endpoint's certificate is not verified: anyone on the network path can read and "
             "change this target's traffic, its API key included; use caSecretRef (and "
             "serverName) for a private CA instead");
    }
}

static void check_gateway(chk *c)
{
    json_t *spec = json_object_get(c->doc->json, "spec");
    char p[256];
    size_t i, j;
    json_t *t, *r;

    /* cross-field rules the CRD carries too (headerBased, Weighted, endpoints, the admin
     * port, ...) are the schema's sch_rule entries, applied by walk() */
    /* names and aliases share one namespace: the request's "model" must pick one target */
    json_array_foreach(json_object_get(spec, "modelTargets"), i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n) json_object_set_new(c->targets, n, json_integer((json_int_t)i));
    }
    json_array_foreach(json_object_get(spec, "modelTargets"), i, t)
    {
        json_t *a;
        json_array_foreach(json_object_get(t, "aliases"), j, a)
        {
            const char *n = json_string_value(a);
            json_t *prev = json_object_get(c->targets, n);
            path_of(p, sizeof p, "spec.modelTargets[%zu].aliases[%zu]", i, j);
            if (prev) {
                c->precise[SCH_OFFLINE_ALIASES]++;
                err(c, p, "\"%s\" is already the name or an alias of spec.modelTargets[%lld]", n,
                    (long long)json_integer_value(prev));
            } else
                json_object_set_new(c->targets, n, json_integer((json_int_t)i));
        }
        const char *type = json_string_value(json_object_get(t, "type"));
        check_target_tls(c, i, t);
        if (type) check_url_segment(c, t, i, type);
    }
    name_set(c->routes, json_object_get(spec, "routes"));
    name_set(c->templates, at(spec, "transformation", "requestTemplates"));

    json_array_foreach(json_object_get(spec, "routes"), i, r)
    {
        const char *pi = json_string_value(json_object_get(r, "pathPrefix"));
        if (!pi || has_match(r)) continue;
        json_t *q;
        json_array_foreach(json_object_get(spec, "routes"), j, q)
        {
            if (j >= i) break;
            const char *pj = json_string_value(json_object_get(q, "pathPrefix"));
            if (!pj || has_match(q) || prefix_len(pi) != prefix_len(pj) ||
                strncmp(pi, pj, prefix_len(pi)))
                continue;
            path_of(p, sizeof p, "spec.routes[%zu].pathPrefix", i);
            err(c, p,
                "route \"%s\" is unreachable: route \"%s\" has the same pathPrefix \"%s\" and "
                "neither has match "
                "filters (add match.models or match.headers, or change the pathPrefix)",
                json_string_value(json_object_get(r, "name")),
                json_string_value(json_object_get(q, "name")), pj);
            break;
        }
    }
    check_tokenizer(c, spec);
}

/* True when gateway document g has a model target named (or aliased) name. */
static bool gateway_has_target(const cfg_doc *g, const char *name)
{
    size_t i;
    json_t *t;
    json_array_foreach(at(json_object_get(g->json, "spec"), "modelTargets", NULL), i, t)
    {
        const char *n = json_string_value(json_object_get(t, "name"));
        if (n && !strcmp(n, name)) return true;
        size_t k;
        json_t *a;
        json_array_foreach(json_object_get(t, "aliases"), k, a)
        {
            if (json_is_string(a) && !strcmp(json_string_value(a), name)) return true;
        }
    }
    return false;
}

static bool gateway_uses_mcp(const cfg_doc *g, const char *mcp)
{
    size_t i;
    json_t *r;
    json_array_foreach(at(json_object_get(g->json, "spec"), "routes", NULL), i, r)
    {
        const char *n = json_string_value(at(r, "contextRef", "name"));
        if (n && !strcmp(n, mcp)) return true;
    }
    return false;
}

/* Summarize needs a target that writes the summaries: in summarize.gatewayRef's gateway, or
 * else in every gateway of the namespace whose routes use this store. */
static void check_summarize(chk *c, json_t *spec)
{
    json_t *strat = json_object_get(spec, "contextStrategy");
    const char *type = json_string_value(json_object_get(strat, "type"));
    if (!type || strcmp(type, "Summarize") != 0) return;
    json_t *sum = json_object_get(strat, "summarize");
    const char *target = json_string_value(json_object_get(sum, "target"));
    if (!target) return; /* the schema's contextStrategy rule reports it */
    const char *gw = json_string_value(at(sum, "gatewayRef", "name"));
    if (gw) {
        const cfg_doc *g = cfg_find_doc(c->docs, c->n, SCH_KIND_GATEWAY, c->doc->ns, gw);
        if (!g && c->from_cluster) return; /* another gateway's; this view does not hold it */
        if (!g)
            err(c, "spec.contextStrategy.summarize.gatewayRef.name",
                "no LLMGateway \"%s\" in namespace \"%s\"", gw, c->doc->ns);
        else if (!gateway_has_target(g, target))
            err(c, "spec.contextStrategy.summarize.target",
                "\"%s\" is not a model target (name or alias) of LLMGateway \"%s\"", target, gw);
        return;
    }
    for (size_t i = 0; i < c->n; i++) {
        const cfg_doc *g = &c->docs[i];
        if (!g->kind || g->kind->id != SCH_KIND_GATEWAY || strcmp(g->ns, c->doc->ns) != 0) continue;
        if (gateway_uses_mcp(g, c->doc->name) && !gateway_has_target(g, target))
            err(c, "spec.contextStrategy.summarize.target",
                "\"%s\" is not a model target (name or alias) of LLMGateway \"%s\", whose "
                "routes use this store; add it there or set summarize.gatewayRef",
                target, g->name);
    }
}

static void check_mcp(chk *c)
{
    json_t *storage = at(json_object_get(c->doc->json, "spec"), "storage", NULL);
    const char *type = json_string_value(json_object_get(storage, "type"));
    json_t *config = json_object_get(storage, "config");
    const char *url = json_string_value(json_object_get(config, "url"));
    if (type && !strcmp(type, "Redis") && url && !strncmp(url, "rediss://", 9))
        err(c, "spec.storage.config.url",
            "rediss:// (TLS) is not supported: this build's Redis client (Debian bookworm's "
            "hiredis 0.14) has no TLS; use redis:// on a trusted network or a TLS tunnel");
    json_t *spec = json_object_get(c->doc->json, "spec");
    json_t *sv = at(spec, "interactionPatterns", "versioning");
    json_t *ver = json_object_get(sv, "schemaVersion");
    if (json_is_integer(ver) && json_integer_value(ver) != 1)
        err(c, "spec.interactionPatterns.versioning.schemaVersion",
            "%lld is not supported: this version of ctxgate writes schemaVersion 1 (older stored "
            "records are read and upgraded)",
            (long long)json_integer_value(ver));
    check_summarize(c, spec);
}

void cfg_check_docs(cfg_doc *docs, size_t n, cfg_diags *d, bool from_cluster)
{
    chk c = {.docs = docs, .n = n, .d = d, .path = BUF_INIT, .from_cluster = from_cluster};
    for (size_t i = 0; i < n; i++) {
        cfg_doc *doc = &docs[i];
        if (!doc->kind || !doc->name) continue;
        c.doc = doc;
        const cfg_doc *first = cfg_find_doc(docs, n, doc->kind->id, doc->ns, doc->name);
        if (first != doc) {
            err(&c, "metadata.name",
                "duplicate %s \"%s\" in namespace \"%s\" (first defined at %s:%d)", doc->kind->kind,
                doc->name, doc->ns, first->file, first->line);
            continue;
        }
        if (!doc->ok)
            continue; /* its own errors come first; references from it would only add noise */
        c.targets = json_object();
        c.routes = json_object();
        c.templates = json_object();
        memset(c.precise, 0, sizeof c.precise);
        if (doc->kind->id == SCH_KIND_GATEWAY) check_gateway(&c);
        if (doc->kind->id == SCH_KIND_MCP) check_mcp(&c);
        buf_reset(&c.path);
        buf_puts(&c.path, "");
        walk(&c, doc->json, doc->kind->root);
        json_decref(c.targets);
        json_decref(c.routes);
        json_decref(c.templates);
    }
    buf_free(&c.path);
}
