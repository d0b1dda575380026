/* snapshot.c — the typed, immutable cfg_snapshot built from validated documents, and its
 * reference counting and lookups. Defaults come from the schema tables (a field absent from
 * the document reads the schema's default), so no default is written twice. Client API keys
 * are hashed here and their text never enters the snapshot. */
#include <ctype.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "config/load_internal.h"

static _Atomic uint64_t cfg_generation;

static const struct {
    const char *name;
    cfg_target_type type;
    /* the provider's own API (API.md §1), only where the type names one provider. NULL: none
     * (Mock answers itself; the others must set config.endpoint, check.c refuses them without,
     * so a key is never sent to another provider's default) */
    const char *endpoint;
} target_types[] = {
    {"OpenAI", TARGET_OPENAI, "https://api.openai.com/v1"},
    {"AzureOpenAI", TARGET_AZURE_OPENAI, NULL},
    {"Anthropic", TARGET_ANTHROPIC, "https://api.anthropic.com"},
    {"Gemini", TARGET_GEMINI, "https://generativelanguage.googleapis.com"},
    {"HuggingFaceEndpoint", TARGET_HUGGINGFACE, NULL},
    {"OpenAICompatible", TARGET_OPENAI_COMPATIBLE, NULL},
    {"CustomLocalModel", TARGET_CUSTOM_LOCAL, NULL},
    {"Mock", TARGET_MOCK, NULL},
};

const char *cfg_target_type_name(cfg_target_type type)
{
    for (size_t i = 0; i < sizeof target_types / sizeof target_types[0]; i++)
        if (target_types[i].type == type) return target_types[i].name;
    return "?";
}

typedef struct build {
    cfg_snapshot *s;
    const cfg_doc *docs;
    size_t n;
    const cfg_doc *doc;
} build;

/* ---- field access with schema defaults ---- */

static json_t *schema_default(const sch_field *obj, const char *key)
{
    const sch_field *f = sch_field_find(obj, key);
    return f && f->def ? json_loads(f->def, JSON_DECODE_ANY, NULL) : NULL;
}

static long long get_int(json_t *o, const sch_field *of, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (v) return json_integer_value(v);
    json_t *d = schema_default(of, key);
    long long r = json_integer_value(d);
    json_decref(d);
    return r;
}

static bool get_bool(json_t *o, const sch_field *of, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (v) return json_is_true(v);
    json_t *d = schema_default(of, key);
    bool r = json_is_true(d);
    json_decref(d);
    return r;
}

static const char *get_str(build *b, json_t *o, const sch_field *of, const char *key)
{
    json_t *v = json_object_get(o, key);
    if (v) return arena_strdup(b->s->pool, json_string_value(v));
    json_t *d = schema_default(of, key);
    const char *r = arena_strdup(b->s->pool, json_string_value(d));
    json_decref(d);
    return r;
}

static const char *dup_lower(build *b, const char *s)
{
    char *r = arena_strdup(b->s->pool, s);
    for (char *p = r; p && *p; p++)
        *p = (char)tolower((unsigned char)*p);
    return r;
}

static const char *strip_slash(build *b, const char *s, size_t *len)
{
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == '/')
        n--;
    if (len) *len = n;
    return arena_strndup(b->s->pool, s, n);
}

static const char **str_array(build *b, json_t *arr, size_t *n)
{
    *n = json_array_size(arr);
    const char **v = arena_calloc(b->s->pool, *n ? *n : 1, sizeof *v);
    for (size_t i = 0; i < *n; i++)
        v[i] = arena_strdup(b->s->pool, json_string_value(json_array_get(arr, i)));
    return v;
}

static const json_t *secret(build *b, json_t *ref, const char *key)
{
    const char *name = json_string_value(json_object_get(ref, "name"));
    if (!key) key = json_string_value(json_object_get(ref, "key"));
    return name && key ? cfg_secret_value(b->docs, b->n, b->doc->ns, name, key) : NULL;
}

static const char *secret_text(build *b, json_t *ref, const char *key)
{
    const json_t *v = secret(b, ref, key);
    return v ? arena_strndup(b->s->pool, json_string_value(v), json_string_length(v)) : NULL;
}

static int lookup(const char *const *names, size_t n, const char *s)
{
    for (size_t i = 0; s && i < n; i++)
        if (!strcmp(names[i], s)) return (int)i;
    return 0;
}

/* ---- ModelContextProtocol ---- */

static void build_mcp(build *b, cfg_mcp *m)
{
    static const char *const stores[] = {"Memory", "File", "Redis", "PostgreSQL"};
    static const char *const evictions[] = {"LRU", "FIFO", "LIFO"};
    static const char *const strategies[] = {"LastN", "TokenBudget", "Summarize"};
    const sch_field *root = &sch_mcp_doc;
    json_t *spec = json_object_get(b->doc->json, "spec");
    json_t *storage = json_object_get(spec, "storage"),
           *config = json_object_get(storage, "config");
    json_t *enc = json_object_get(storage, "encryption");
    json_t *life = json_object_get(spec, "contextLifecycle"),
           *strat = json_object_get(spec, "contextStrategy");
    json_t *sum = json_object_get(strat, "summarize"),
           *ip = json_object_get(spec, "interactionPatterns");
    json_t *sec = json_object_get(spec, "security"), *met = json_object_get(spec, "metrics");

    m->name = arena_strdup(b->s->pool, b->doc->name);
    m->namespace_ = arena_strdup(b->s->pool, b->doc->ns);
    m->source = arena_printf(b->s->pool, "%s:%d", b->doc->file, b->doc->line);
    m->store = (cfg_store_type)lookup(
        stores, 4, get_str(b, storage, sch_field_at(root, "spec.storage"), "type"));
    m->path = get_str(b, config, NULL, "path");
    m->url = get_str(b, config, NULL, "url");
    m->dsn = get_str(b, config, NULL, "dsn");
    m->password = secret_text(b, json_object_get(config, "passwordRef"), NULL);
    m->key_prefix = get_str(b, config, sch_field_at(root, "spec.storage.config"), "keyPrefix");
    const sch_field *encf = sch_field_at(root, "spec.storage.encryption");
    const json_t *key = secret(b, json_object_get(enc, "keyRef"), NULL);
    m->encrypt = get_bool(enc, encf, "enabled") && key && json_string_length(key) == 32;
    if (m->encrypt) memcpy(m->enc_key, json_string_value(key), 32);
    const sch_field *lf = sch_field_at(root, "spec.contextLifecycle");
    m->ttl_seconds = (int)get_int(life, lf, "ttlSeconds");
    m->max_entries = (long)get_int(life, lf, "maxEntries");
    m->max_turns = (int)get_int(life, lf, "maxTurnsPerConversation");
    m->eviction = (cfg_eviction)lookup(evictions, 3, get_str(b, life, lf, "evictionPolicy"));
    const sch_field *sf = sch_field_at(root, "spec.contextStrategy");
    m->strategy = (cfg_ctx_strategy)lookup(strategies, 3, get_str(b, strat, sf, "type"));
    m->last_n = (int)get_int(strat, sf, "lastN");
    m->max_context_tokens = (int)get_int(strat, sf, "maxContextTokens");
    m->summarize_target = get_str(b, sum, NULL, "target");
    m->summarize_gateway = get_str(b, json_object_get(sum, "gatewayRef"), NULL, "name");
    m->summarize_trigger_tokens =
        (int)get_int(sum, sch_field_at(root, "spec.contextStrategy.summarize"), "triggerTokens");
    m->persona = get_str(b, spec, NULL, "persona");
    m->tools = json_object_get(spec, "tools");
    const sch_field *ipf = sch_field_at(root, "spec.interactionPatterns");
    const char *fmt = get_str(b, ip, ipf, "format");
    m->format_json = !fmt || !strcmp(fmt, "JSON");
    m->schema_version =
        (int)get_int(json_object_get(ip, "versioning"),
                     sch_field_at(root, "spec.interactionPatterns.versioning"), "schemaVersion");
    const char *rw = get_str(b, ip, ipf, "readWriteMode");
    m->read_only = rw && !strcmp(rw, "ReadOnlyMany");
    const json_t *admin = secret(b, json_object_get(sec, "apiKeyRef"), NULL);
    if (admin) {
        unsigned int len = 0;
        m->has_api_key = EVP_Digest(json_string_value(admin), json_string_length(admin),
                                    m->api_key_sha256, &len, EVP_sha256(), NULL) == 1;
    }
    m->rbac = json_object_get(sec, "rbac");
    m->metrics_enabled = get_bool(met, sch_field_at(root, "spec.metrics"), "enabled");
    m->metrics_path = get_str(b, met, sch_field_at(root, "spec.metrics"), "endpoint");
    m->spec = spec;
}

/* ---- LLMGateway ---- */

static cfg_target *find_target(cfg_gateway *g, const char *name)
{
    return name ? (cfg_target *)cfg_gateway_find_target(g, name, strlen(name)) : NULL;
}

static void build_target(build *b, cfg_target *t, json_t *j)
{
    const sch_field *root = &sch_llmgateway_doc;
    json_t *config = json_object_get(j, "config");
    t->name = get_str(b, j, NULL, "name");
    t->aliases = str_array(b, json_object_get(j, "aliases"), &t->n_aliases);
    const char *type = json_string_value(json_object_get(j, "type"));
    const char *def_endpoint = NULL;
    for (size_t i = 0; i < sizeof target_types / sizeof target_types[0]; i++)
        if (type && !strcmp(type, target_types[i].name)) {
            t->type = target_types[i].type;
            def_endpoint = target_types[i].endpoint;
        }
    const char *ep = json_string_value(json_object_get(config, "endpoint"));
    if (!ep) ep = def_endpoint;
    t->endpoint = ep ? strip_slash(b, ep, NULL) : NULL;
    t->model_name = get_str(b, config, NULL, "modelName");
    if (!t->model_name) t->model_name = t->name;
    t->api_key = secret_text(b, json_object_get(config, "apiKeyRef"), NULL);
    t->api_version = get_str(b, config, NULL, "apiVersion");
    t->deployment = get_str(b, config, NULL, "deployment");
    t->parameters = json_object_get(config, "parameters");
    json_t *to = json_object_get(config, "timeouts");
    const sch_field *tof = sch_field_at(root, "spec.modelTargets[].config.timeouts");
    t->connect_timeout_s = (int)get_int(to, tof, "connect");
    t->first_token_timeout_s = (int)get_int(to, tof, "firstToken");
    t->total_timeout_s = (int)get_int(to, tof, "total");
    t->max_response_bytes = (size_t)get_int(
        config, sch_field_at(root, "spec.modelTargets[].config"), "maxResponseBytes");
    json_t *pr = json_object_get(j, "pricing");
    t->has_pricing = pr != NULL;
    t->input_per_million = json_number_value(json_object_get(pr, "inputPerMillion"));
    t->output_per_million = json_number_value(json_object_get(pr, "outputPerMillion"));
    json_t *hc = json_object_get(j, "healthCheck");
    const sch_field *hcf = sch_field_at(root, "spec.modelTargets[].healthCheck");
    t->health_interval_s = hc ? (int)get_int(hc, hcf, "intervalSeconds") : 0;
    t->health_unhealthy_after = (int)get_int(hc, hcf, "unhealthyAfter");
    t->health_base_ejection_s = (int)get_int(hc, hcf, "baseEjectionSeconds");
    t->health_max_ejection_s = (int)get_int(hc, hcf, "maxEjectionSeconds");
    if (t->health_max_ejection_s < t->health_base_ejection_s)
        t->health_max_ejection_s = t->health_base_ejection_s;
    t->max_concurrency =
        (long)get_int(j, sch_field_at(root, "spec.modelTargets[]"), "maxConcurrency");
    json_t *mock = json_object_get(config, "mock");
    const sch_field *mf = sch_field_at(root, "spec.modelTargets[].config.mock");
    t->mock.text = get_str(b, mock, mf, "text");
    t->mock.latency_ms = (int)get_int(mock, mf, "latencyMs");
    t->mock.chunks = (int)get_int(mock, mf, "chunks");
    json_t *tls = json_object_get(config, "tls");
    const sch_field *tf = sch_field_at(root, "spec.modelTargets[].config.tls");
    json_t *ca = json_object_get(tls, "caSecretRef");
    t->tls_ca_pem =
        ca ? secret_text(b, ca, get_str(b, ca, sch_field_at(tf, "caSecretRef"), "key")) : NULL;
    json_t *cc = json_object_get(tls, "clientCertSecretRef");
    t->tls_cert_pem = cc ? secret_text(b, cc, "tls.crt") : NULL;
    t->tls_key_pem = cc ? secret_text(b, cc, "tls.key") : NULL;
    t->tls_server_name = get_str(b, tls, NULL, "serverName");
    t->tls_insecure = get_bool(tls, tf, "insecureSkipVerify");
}

static unsigned retry_bits(json_t *arr)
{
    static const char *const names[] = {"429",    "500", "502", "503", "504", "connect-failure",
                                        "timeout"};
    unsigned bits = 0;
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        char num[32];
        const char *s = json_string_value(v);
        if (json_is_integer(v)) {
            snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            s = num;
        }
        for (unsigned k = 0; s && k < 7; k++)
            if (!strcmp(s, names[k])) bits |= 1u << k;
    }
    return bits;
}

static void build_route(build *b, cfg_gateway *g, cfg_route *r, json_t *j)
{
    static const char *const strategies[] = {"RoundRobin",       "Weighted",     "HeaderBased",
                                             "LeastConnections", "LatencyBased", "CostBased"};
    const sch_field *rf = sch_field_at(&sch_llmgateway_doc, "spec.routes[]");
    arena *a = b->s->pool;
    r->name = get_str(b, j, NULL, "name");
    r->path_prefix = strip_slash(b, get_str(b, j, rf, "pathPrefix"), &r->path_prefix_len);
    json_t *match = json_object_get(j, "match");
    r->match_models = str_array(b, json_object_get(match, "models"), &r->n_match_models);
    json_t *hdrs = json_object_get(match, "headers");
    r->n_match_headers = json_array_size(hdrs);
    r->match_headers = arena_calloc(a, r->n_match_headers + 1, sizeof *r->match_headers);
    for (size_t i = 0; i < r->n_match_headers; i++) {
        json_t *h = json_array_get(hdrs, i);
        r->match_headers[i].name = dup_lower(b, json_string_value(json_object_get(h, "name")));
        r->match_headers[i].value = get_str(b, h, NULL, "value");
    }
    json_t *backends = json_object_get(j, "backends");
    r->n_backends = json_array_size(backends);
    r->backends = arena_calloc(a, r->n_backends + 1, sizeof *r->backends);
    const sch_field *bf = sch_field_at(rf, "backends[]");
    for (size_t i = 0; i < r->n_backends; i++) {
        json_t *be = json_array_get(backends, i);
        r->backends[i].target = find_target(g, json_string_value(json_object_get(be, "target")));
        r->backends[i].weight = (int)get_int(be, bf, "weight");
        r->total_weight += r->backends[i].weight;
    }
    r->strategy = (cfg_strategy)lookup(strategies, 6, get_str(b, j, rf, "strategy"));
    json_t *hb = json_object_get(j, "headerBased");
    r->header_name = hb ? dup_lower(b, json_string_value(json_object_get(hb, "header"))) : NULL;
    json_t *values = json_object_get(hb, "values");
    r->header_values = arena_calloc(a, json_object_size(values) + 1, sizeof *r->header_values);
    const char *k;
    json_t *v;
    json_object_foreach(values, k, v)
    {
        r->header_values[r->n_header_values].value = arena_strdup(a, k);
        r->header_values[r->n_header_values++].target = find_target(g, json_string_value(v));
    }
    json_t *fo = json_object_get(j, "failover");
    const sch_field *ff = sch_field_at(rf, "failover");
    json_t *ft = json_object_get(fo, "targets");
    r->n_failover_targets = json_array_size(ft);
    r->failover_targets = arena_calloc(a, r->n_failover_targets + 1, sizeof *r->failover_targets);
    for (size_t i = 0; i < r->n_failover_targets; i++)
        r->failover_targets[i] = find_target(g, json_string_value(json_array_get(ft, i)));
    json_t *retry = json_object_get(fo, "retryOn");
    json_t *retry_def = retry ? NULL : schema_default(ff, "retryOn");
    r->retry_on = retry_bits(retry ? retry : retry_def);
    json_decref(retry_def);
    json_t *ma = json_object_get(fo, "maxAttempts");
    r->max_attempts = ma ? (int)json_integer_value(ma) : 1 + (int)r->n_failover_targets;
    r->backoff_ms = (int)get_int(fo, ff, "backoffMs");
    r->context_ref = get_str(b, json_object_get(j, "contextRef"), NULL, "name");
    if (r->context_ref)
        for (size_t i = 0; i < b->s->n_mcps; i++)
            if (!strcmp(b->s->mcps[i].name, r->context_ref) &&
                !strcmp(b->s->mcps[i].namespace_, g->namespace_))
                r->context = &b->s->mcps[i];
    r->template_ref = get_str(b, j, NULL, "templateRef");
}

static unsigned auth_bit(const char *s)
{
    if (!s) return 0;
    if (!strcmp(s, "APIKey")) return AUTH_APIKEY;
    if (!strcmp(s, "JWT")) return AUTH_JWT;
    if (!strcmp(s, "OAuth2")) return AUTH_OAUTH2;
    return AUTH_NONE;
}

static void build_gateway(build *b, cfg_gateway *g)
{
    const sch_field *root = &sch_llmgateway_doc;
    arena *a = b->s->pool;
    json_t *spec = json_object_get(b->doc->json, "spec");
    g->name = arena_strdup(a, b->doc->name);
    g->namespace_ = arena_strdup(a, b->doc->ns);
    g->source = arena_printf(a, "%s:%d", b->doc->file, b->doc->line);
    g->spec = spec;

    json_t *lis = json_object_get(spec, "listener");
    g->listener.port = (int)get_int(lis, sch_field_at(root, "spec.listener"), "port");
    g->listener.max_connections =
        (long)get_int(lis, sch_field_at(root, "spec.listener"), "maxConnections");
    json_t *tls = json_object_get(lis, "tlsSecretRef");
    g->listener.tls_cert = tls ? secret_text(b, tls, "tls.crt") : NULL;
    g->listener.tls_key = tls ? secret_text(b, tls, "tls.key") : NULL;

    json_t *adm = json_object_get(spec, "admin");
    if (adm) {
        const sch_field *af = sch_field_at(root, "spec.admin");
        g->admin.port = (int)get_int(adm, af, "port");
        g->admin.address = get_str(b, adm, af, "address");
        const json_t *akey = secret(b, json_object_get(adm, "apiKeyRef"), NULL);
        if (akey) {
            unsigned int len = 0;
            g->admin.has_api_key = EVP_Digest(json_string_value(akey), json_string_length(akey),
                                              g->admin.sha256, &len, EVP_sha256(), NULL) == 1;
        }
    }

    json_t *targets = json_object_get(spec, "modelTargets");
    g->n_targets = json_array_size(targets);
    g->targets = arena_calloc(a, g->n_targets + 1, sizeof *g->targets);
    for (size_t i = 0; i < g->n_targets; i++) {
        build_target(b, &g->targets[i], json_array_get(targets, i));
        g->targets[i].index = i;
    }

    json_t *routes = json_object_get(spec, "routes");
    if (json_array_size(routes)) {
        g->n_routes = json_array_size(routes);
        g->routes = arena_calloc(a, g->n_routes, sizeof *g->routes);
        for (size_t i = 0; i < g->n_routes; i++) {
            build_route(b, g, &g->routes[i], json_array_get(routes, i));
            g->routes[i].index = i;
        }
    } else {
        /* no routes: one route "default" at the default prefix over every target */
        json_t *r = json_pack("{s:s, s:[]}", "name", "default", "backends");
        for (size_t i = 0; i < g->n_targets; i++)
            json_array_append_new(json_object_get(r, "backends"),
                                  json_pack("{s:s}", "target", g->targets[i].name));
        g->n_routes = 1;
        g->routes = arena_calloc(a, 1, sizeof *g->routes);
        build_route(b, g, &g->routes[0], r);
        json_decref(r);
    }

    json_t *auth = json_object_get(spec, "authentication");
    g->auth_types = auth_bit(get_str(b, auth, sch_field_at(root, "spec.authentication"), "type"));
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(auth, "types"), i, v)
    {
        g->auth_types |= auth_bit(json_string_value(v));
    }
    json_t *keys = json_object_get(auth, "apiKeys");
    g->n_api_keys = json_array_size(keys);
    g->api_keys = arena_calloc(a, g->n_api_keys + 1, sizeof *g->api_keys);
    for (i = 0; i < g->n_api_keys; i++) {
        json_t *k = json_array_get(keys, i);
        cfg_api_key *ak = &g->api_keys[i];
        ak->name = get_str(b, k, NULL, "name");
        const json_t *sv = secret(b, json_object_get(k, "secretRef"), NULL);
        unsigned int len = 0;
        if (sv)
            EVP_Digest(json_string_value(sv), json_string_length(sv), ak->sha256, &len,
                       EVP_sha256(), NULL);
        ak->user = get_str(b, k, NULL, "user");
        ak->app = get_str(b, k, NULL, "app");
        ak->tenant = get_str(b, k, NULL, "tenant");
        ak->models = str_array(b, json_object_get(k, "models"), &ak->n_models);
    }

    json_t *obs = json_object_get(spec, "observability"), *al = json_object_get(obs, "accessLog");
    const sch_field *of = sch_field_at(root, "spec.observability"),
                    *alf = sch_field_at(of, "accessLog");
    g->obs.logging_level = get_str(b, obs, of, "loggingLevel");
    g->obs.access_log = get_bool(al, alf, "enabled");
    const char *fmt = get_str(b, al, alf, "format");
    g->obs.access_log_json = !fmt || !strcmp(fmt, "JSON");
    g->obs.access_log_bodies = get_bool(al, alf, "includeBodies");
    g->obs.metrics_path = get_str(b, obs, of, "metricsEndpoint");
    json_t *iv = json_object_get(json_object_get(spec, "transformation"), "inputValidation");
    g->max_body_bytes = (size_t)get_int(
        iv, sch_field_at(root, "spec.transformation.inputValidation"), "maxBodyBytes");
}

cfg_snapshot *cfg_snapshot_build(const cfg_doc *docs, size_t n)
{
    cfg_snapshot *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->pool = arena_new(16 * 1024);
    s->docs = json_array();
    if (!s->pool || !s->docs) {
        arena_free(s->pool);
        json_decref(s->docs);
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind->id == SCH_KIND_GATEWAY) s->n_gateways++;
        if (docs[i].kind->id == SCH_KIND_MCP) s->n_mcps++;
    }
    s->gateways = arena_calloc(s->pool, s->n_gateways + 1, sizeof *s->gateways);
    s->mcps = arena_calloc(s->pool, s->n_mcps + 1, sizeof *s->mcps);
    build b = {.s = s, .docs = docs, .n = n};
    size_t ng = 0, nm = 0;
    /* MCPs first: routes point at them. Secrets stay out of docs: they hold client keys. */
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind->id != SCH_KIND_MCP) continue;
        b.doc = &docs[i];
        json_array_append(s->docs, docs[i].json);
        build_mcp(&b, &s->mcps[nm++]);
    }
    for (size_t i = 0; i < n; i++) {
        if (docs[i].kind->id != SCH_KIND_GATEWAY) continue;
        b.doc = &docs[i];
        json_array_append(s->docs, docs[i].json);
        build_gateway(&b, &s->gateways[ng++]);
    }
    s->generation = atomic_fetch_add(&cfg_generation, 1) + 1;
    return s;
}

void cfg_snapshot_ref(cfg_snapshot *s)
{
    atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void cfg_snapshot_unref(cfg_snapshot *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    json_decref(s->docs);
    arena_free(s->pool);
    free(s);
}

const cfg_gateway *cfg_find_gateway(const cfg_snapshot *s, const char *name)
{
    if (!s || !s->n_gateways) return NULL;
    if (!name) return &s->gateways[0];
    for (size_t i = 0; i < s->n_gateways; i++)
        if (!strcmp(s->gateways[i].name, name)) return &s->gateways[i];
    return NULL;
}

const cfg_mcp *cfg_find_mcp(const cfg_snapshot *s, const char *name)
{
    for (size_t i = 0; s && name && i < s->n_mcps; i++)
        if (!strcmp(s->mcps[i].name, name)) return &s->mcps[i];
    return NULL;
}

static bool counted_eq(const char *a, const char *model, size_t n)
{
    return a && strlen(a) == n && memcmp(a, model, n) == 0;
}

const cfg_target *cfg_gateway_find_target(const cfg_gateway *g, const char *model, size_t n)
{
    for (size_t i = 0; g && model && i < g->n_targets; i++) {
        const cfg_target *t = &g->targets[i];
        if (counted_eq(t->name, model, n)) return t;
        for (size_t k = 0; k < t->n_aliases; k++)
            if (counted_eq(t->aliases[k], model, n)) return t;
    }
    return NULL;
}
