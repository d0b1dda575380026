/* check.c — rules that need more than one field or more than one document: references between
 * objects (Secrets, ModelContextProtocols, targets, routes, templates), type-dependent
 * requirements, and routes that can never be reached. Reference fields are found through the
 * schema's `ref` markers, so a new reference field is checked by declaring it. */
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

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
    if (!s)
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

static void walk(chk *c, json_t *v, const sch_field *f)
{
    if (f->ref != REF_NONE && f->kind != SCH_STRMAP) check_ref(c, v, f);
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

/* Types whose endpoint has no safe default: without one the provider key would be sent to
 * whoever the default names (a Hugging Face token to OpenAI). Only OpenAI, Anthropic and Gemini
 * default to their own API; Mock needs none. NULL: not required. */
static const char *endpoint_example(const char *type)
{
    static const struct {
        const char *type, *example;
    } required[] = {
        {"AzureOpenAI", "https://{resource}.openai.azure.com"},
        {"HuggingFaceEndpoint", "the Inference Endpoint's URL with /v1, e.g. "
                                "https://{name}.{region}.aws.endpoints.huggingface.cloud/v1"},
        {"OpenAICompatible", "the server's OpenAI-compatible base URL, e.g. "
                             "http://127.0.0.1:8000/v1 for vLLM, http://127.0.0.1:11434/v1 for "
                             "Ollama"},
        {"CustomLocalModel",
         "the model server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1"},
    };
    for (size_t i = 0; type && i < sizeof required / sizeof required[0]; i++)
        if (!strcmp(type, required[i].type)) return required[i].example;
    return NULL;
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

static void check_gateway(chk *c)
{
    json_t *spec = json_object_get(c->doc->json, "spec");
    char p[256];
    size_t i, j;
    json_t *t, *r;

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
            if (prev)
                err(c, p, "\"%s\" is already the name or an alias of spec.modelTargets[%lld]", n,
                    (long long)json_integer_value(prev));
            else
                json_object_set_new(c->targets, n, json_integer((json_int_t)i));
        }
        const char *type = json_string_value(json_object_get(t, "type"));
        const char *example = endpoint_example(type);
        if (example && !at(json_object_get(t, "config"), "endpoint", NULL)) {
            path_of(p, sizeof p, "spec.modelTargets[%zu].config.endpoint", i);
            err(c, p, "required for type %s (%s)", type, example);
        }
    }
    name_set(c->routes, json_object_get(spec, "routes"));
    name_set(c->templates, at(spec, "transformation", "requestTemplates"));

    json_array_foreach(json_object_get(spec, "routes"), i, r)
    {
        const char *strategy = json_string_value(json_object_get(r, "strategy"));
        if (strategy && !strcmp(strategy, "HeaderBased") && !json_object_get(r, "headerBased")) {
            path_of(p, sizeof p, "spec.routes[%zu].headerBased", i);
            err(c, p, "required for strategy HeaderBased");
        }
        if (strategy && !strcmp(strategy, "Weighted")) {
            json_int_t total = 0;
            json_t *b;
            json_array_foreach(json_object_get(r, "backends"), j, b) total +=
                json_integer_value(json_object_get(b, "weight"));
            if (total <= 0 && json_array_size(json_object_get(r, "backends"))) {
                path_of(p, sizeof p, "spec.routes[%zu].backends", i);
                err(c, p, "strategy Weighted needs at least one backend with weight > 0");
            }
        }
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
    json_t *auth = json_object_get(spec, "authentication");
    const char *atype = json_string_value(json_object_get(auth, "type"));
    if (atype && !strcmp(atype, "APIKey") && !json_array_size(json_object_get(auth, "apiKeys")))
        err(c, "spec.authentication.apiKeys", "type APIKey needs at least one key");
    json_array_foreach(at(spec, "transformation", "responseParsers"), i, r)
    {
        const char *type = json_string_value(json_object_get(r, "type"));
        if (type && !strcmp(type, "Regex") && !json_object_get(r, "pattern")) {
            path_of(p, sizeof p, "spec.transformation.responseParsers[%zu].pattern", i);
            err(c, p, "required for type Regex");
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
    if (!target) {
        err(c, "spec.contextStrategy.summarize",
            "required for contextStrategy.type Summarize: name the model target that writes the "
            "summaries (summarize.target)");
        return;
    }
    const char *gw = json_string_value(at(sum, "gatewayRef", "name"));
    if (gw) {
        const cfg_doc *g = cfg_find_doc(c->docs, c->n, SCH_KIND_GATEWAY, c->doc->ns, gw);
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
    static const struct {
        const char *type, *field;
    } needs[] = {{"File", "path"}, {"Redis", "url"}, {"PostgreSQL", "dsn"}};
    char p[128];
    for (size_t i = 0; type && i < sizeof needs / sizeof needs[0]; i++) {
        if (strcmp(type, needs[i].type) || json_object_get(config, needs[i].field)) continue;
        path_of(p, sizeof p, "spec.storage.config.%s", needs[i].field);
        err(c, p, "required for storage.type %s", type);
    }
    json_t *enc = json_object_get(storage, "encryption");
    if (json_is_true(json_object_get(enc, "enabled")) && !json_object_get(enc, "keyRef"))
        err(c, "spec.storage.encryption.keyRef", "required when encryption is enabled");
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

void cfg_check_docs(cfg_doc *docs, size_t n, cfg_diags *d)
{
    chk c = {.docs = docs, .n = n, .d = d, .path = BUF_INIT};
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
