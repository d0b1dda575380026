/* test_snapshot.c — the typed snapshot from valid manifests: the API.md examples
 * (tests/data/config/full/), defaults, schema-guided scalar types, Secret resolution, API key
 * hashing (the key text must not survive in the snapshot), lookups and reference counting. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <openssl/evp.h>

#include "config_test.h"

static cfg_snapshot *load_ok(const char *sub, const char *const *paths, size_t n, cfg_diags *d)
{
    cfgt_chdir(sub);
    cfg_snapshot *s = NULL;
    int rc = cfg_load_paths(paths, n, &s, d);
    if (rc != 0) cfg_diags_print(stderr, d);
    assert_int_equal(rc, 0);
    assert_non_null(s);
    assert_int_equal(atomic_load(&s->refs), 1);
    return s;
}

static void test_full_example(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"."};
    cfg_snapshot *s = load_ok("full", paths, 1, &d);
    assert_int_equal(d.n_errors, 0);
    assert_int_equal(s->n_gateways, 1);
    assert_int_equal(s->n_mcps, 2);
    assert_int_equal(json_array_size(s->docs), 3); /* Secrets are not kept */

    const cfg_gateway *g = cfg_find_gateway(s, NULL);
    assert_ptr_equal(g, cfg_find_gateway(s, "product-support"));
    assert_null(cfg_find_gateway(s, "other"));
    assert_string_equal(g->namespace_, "ai");
    assert_string_equal(g->source, "./gateway.yaml:4");
    assert_int_equal(g->listener.port, 8080);
    assert_string_equal(g->listener.tls_cert, "CERT");
    assert_string_equal(g->listener.tls_key, "KEY");

    assert_int_equal(g->n_targets, 4);
    const cfg_target *t = &g->targets[0];
    assert_string_equal(t->name, "gpt4o");
    assert_int_equal(t->type, TARGET_OPENAI);
    assert_string_equal(t->endpoint, "https://api.openai.com/v1"); /* trailing '/' stripped */
    assert_string_equal(t->model_name, "gpt-4o");
    assert_string_equal(t->api_key, "sk-test-openai"); /* stringData */
    assert_true(json_is_real(json_object_get(t->parameters, "temperature")));
    assert_int_equal(json_integer_value(json_object_get(t->parameters, "max_tokens")), 1024);
    assert_true(t->has_pricing);
    assert_true(t->input_per_million == 2.5 && t->output_per_million == 10.0);
    assert_int_equal(t->health_interval_s, 30);
    t = &g->targets[1];
    assert_int_equal(t->type, TARGET_ANTHROPIC);
    assert_string_equal(t->endpoint, "https://api.anthropic.com");
    assert_string_equal(t->api_key, "sk-ant-test"); /* data, base64-decoded */
    assert_string_equal(t->api_version, "2023-06-01");
    assert_int_equal(t->first_token_timeout_s, 30);
    assert_int_equal(t->health_interval_s, 0);
    assert_int_equal(t->health_unhealthy_after, 3);
    t = &g->targets[3];
    assert_int_equal(t->type, TARGET_MOCK);
    assert_null(t->endpoint);
    assert_null(t->api_key);
    assert_string_equal(t->mock.text, "hello from mock");
    assert_int_equal(t->mock.latency_ms, 10);
    assert_int_equal(t->mock.chunks, 4);
    assert_int_equal(t->index, 3);

    assert_ptr_equal(cfg_gateway_find_target(g, "gpt-4o", 6), &g->targets[0]);
    assert_ptr_equal(cfg_gateway_find_target(g, "gpt4o-extra", 5),
                     &g->targets[0]); /* length-counted */
    assert_null(cfg_gateway_find_target(g, "gpt4", 4));
    assert_null(cfg_gateway_find_target(g, "nope", 4));

    assert_int_equal(g->n_routes, 3);
    const cfg_route *r = &g->routes[0];
    assert_string_equal(r->path_prefix, "/v1/llm/support");
    assert_int_equal(r->path_prefix_len, strlen("/v1/llm/support"));
    assert_int_equal(r->n_match_models, 1);
    assert_string_equal(r->match_headers[0].name, "x-team");
    assert_string_equal(r->match_headers[0].value, "billing");
    assert_int_equal(r->n_backends, 2);
    assert_ptr_equal(r->backends[1].target, &g->targets[1]);
    assert_int_equal(r->backends[0].weight, 80);
    assert_int_equal(r->total_weight, 100);
    assert_int_equal(r->strategy, STRATEGY_WEIGHTED);
    assert_int_equal(r->n_failover_targets, 1);
    assert_ptr_equal(r->failover_targets[0], &g->targets[1]);
    assert_int_equal(r->retry_on, 0x7f);
    assert_int_equal(r->max_attempts, 3);
    assert_int_equal(r->backoff_ms, 100);
    assert_string_equal(r->context_ref, "customer-conversation-context-v1");
    assert_ptr_equal(r->context, cfg_find_mcp(s, "customer-conversation-context-v1"));
    assert_string_equal(r->template_ref, "support-persona");
    r = &g->routes[1];
    assert_int_equal(r->strategy, STRATEGY_HEADER_BASED);
    assert_string_equal(r->header_name, "x-model-tier");
    assert_int_equal(r->n_header_values, 2);
    r = &g->routes[2];
    assert_string_equal(r->path_prefix, "/v1");
    assert_int_equal(r->strategy, STRATEGY_ROUND_ROBIN);
    assert_int_equal(r->backends[0].weight, 1);
    assert_int_equal(r->max_attempts, 1);
    assert_int_equal(r->retry_on, RETRY_ON_429 | RETRY_ON_500 | RETRY_ON_502 | RETRY_ON_503 |
                                      RETRY_ON_504 | RETRY_ON_CONNECT_FAILURE | RETRY_ON_TIMEOUT);
    assert_null(r->context);
    /* defaults are written into the JSON the snapshot keeps, too */
    json_t *rj = json_array_get(json_object_get(g->spec, "routes"), 2);
    assert_string_equal(json_string_value(json_object_get(rj, "pathPrefix")), "/v1");
    assert_string_equal(json_string_value(json_object_get(rj, "strategy")), "RoundRobin");
    assert_int_equal(json_integer_value(json_object_get(
                         json_array_get(json_object_get(rj, "backends"), 0), "weight")),
                     1);

    assert_int_equal(g->auth_types, AUTH_APIKEY);
    assert_int_equal(g->n_api_keys, 1);
    unsigned char want[32];
    unsigned int len = 0;
    EVP_Digest("client-key-7f3a9c", strlen("client-key-7f3a9c"), want, &len, EVP_sha256(), NULL);
    assert_memory_equal(g->api_keys[0].sha256, want, 32);
    assert_string_equal(g->api_keys[0].tenant, "team-a");
    assert_int_equal(g->api_keys[0].n_models, 2);

    assert_string_equal(g->obs.logging_level, "debug");
    assert_true(g->obs.access_log);
    assert_false(g->obs.access_log_json);
    assert_true(g->obs.access_log_bodies);
    assert_string_equal(g->obs.metrics_path, "/metrics");
    assert_int_equal(g->max_body_bytes, 2097152);

    const cfg_mcp *m = cfg_find_mcp(s, "customer-conversation-context-v1");
    assert_int_equal(m->store, STORE_FILE);
    assert_string_equal(m->path, "/var/lib/ctxgate/ctx.db");
    assert_true(m->encrypt);
    assert_memory_equal(m->enc_key, "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk", 32);
    assert_int_equal(m->ttl_seconds, 7200);
    assert_int_equal(m->eviction, EVICT_FIFO);
    assert_int_equal(m->strategy, CTX_TOKEN_BUDGET);
    assert_string_equal(m->summarize_target, "gpt4o");
    assert_string_equal(m->summarize_gateway, "product-support");
    /* the admin key is kept as its SHA-256 only */
    unsigned char admin_digest[32];
    unsigned int wl = 0;
    EVP_Digest("ctx-admin-key", 13, admin_digest, &wl, EVP_sha256(), NULL);
    assert_true(m->has_api_key);
    assert_memory_equal(m->api_key_sha256, admin_digest, 32);
    assert_int_equal(json_array_size(m->tools), 1);
    assert_int_equal(json_array_size(m->rbac), 1);
    m = cfg_find_mcp(s, "shared-redis");
    assert_int_equal(m->store, STORE_REDIS);
    assert_string_equal(m->url, "redis://127.0.0.1:6379/0");
    assert_string_equal(m->password, "12345"); /* a quoted number stays a string */
    assert_string_equal(m->key_prefix, "ctx:");
    assert_null(cfg_find_mcp(s, "nope"));

    cfg_snapshot_ref(s);
    assert_int_equal(atomic_load(&s->refs), 2);
    cfg_snapshot_unref(s);
    cfg_snapshot_unref(s); /* frees; ASan reports any leak */
    cfg_snapshot_unref(NULL);
    cfg_diags_free(&d);
}

static bool has(const char *s, const char *needle)
{
    return s && strstr(s, needle);
}

/* The client key's text must appear nowhere: not in the JSON, not in any snapshot string. */
static void test_api_key_text_not_kept(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"."};
    cfg_snapshot *s = load_ok("full", paths, 1, &d);
    const char *key = "client-key-7f3a9c";
    char *dump = json_dumps(s->docs, JSON_COMPACT);
    assert_false(has(dump, key));
    assert_false(has(dump, "ctx-admin-key")); /* the context API's admin key neither */
    assert_true(has(dump, "gw-keys"));        /* the reference itself is kept */
    free(dump);
    for (size_t i = 0; i < s->n_mcps; i++) {
        assert_false(has(s->mcps[i].persona, "ctx-admin-key"));
        assert_null(memmem(s->mcps[i].api_key_sha256, 32, "ctx-admin-key", 8));
    }
    for (size_t i = 0; i < s->n_gateways; i++) {
        const cfg_gateway *g = &s->gateways[i];
        for (size_t k = 0; k < g->n_api_keys; k++) {
            const cfg_api_key *a = &g->api_keys[k];
            assert_false(has(a->name, key) || has(a->user, key) || has(a->app, key) ||
                         has(a->tenant, key));
            assert_null(memmem(a->sha256, 32, key, 8));
        }
        for (size_t k = 0; k < g->n_targets; k++)
            assert_false(has(g->targets[k].api_key, key));
    }
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
}

static void test_defaults_and_types(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"minimal.yaml"};
    cfg_snapshot *s = load_ok("misc", paths, 1, &d);
    const cfg_gateway *g = cfg_find_gateway(s, "tiny");
    assert_string_equal(g->namespace_, "default");
    assert_int_equal(g->listener.port, 8080);
    assert_null(g->listener.tls_cert);
    assert_int_equal(g->auth_types, AUTH_NONE);
    assert_string_equal(g->obs.logging_level, "info");
    assert_true(g->obs.access_log && g->obs.access_log_json && !g->obs.access_log_bodies);
    assert_string_equal(g->obs.metrics_path, "/metrics");
    assert_int_equal(g->max_body_bytes, 1048576);
    const cfg_target *t = &g->targets[0];
    assert_string_equal(t->model_name, "echo");
    assert_null(t->mock.text);
    assert_int_equal(t->mock.latency_ms, 0);
    assert_int_equal(t->mock.chunks, 4);
    assert_int_equal(t->connect_timeout_s, 5);
    assert_int_equal(t->first_token_timeout_s, 30);
    assert_int_equal(t->total_timeout_s, 300);
    assert_false(t->has_pricing);
    t = &g->targets[1];
    assert_string_equal(t->endpoint, "http://127.0.0.1:11434/v1");
    assert_string_equal(t->api_version, "2024-10-21"); /* plain, but the schema says string */
    json_t *p = t->parameters;
    assert_true(json_is_real(json_object_get(p, "temperature")));
    assert_true(json_is_integer(json_object_get(p, "seed")));
    assert_true(json_is_true(json_object_get(p, "stream")));
    assert_string_equal(json_string_value(json_object_get(p, "quoted")), "true");
    assert_string_equal(json_string_value(json_object_get(p, "yaml11")),
                        "yes"); /* YAML 1.2 core schema */
    assert_true(json_is_null(json_object_get(p, "nothing")));
    assert_true(json_is_string(json_array_get(json_object_get(p, "list"), 1)));
    assert_true(json_is_real(json_array_get(json_object_get(p, "list"), 2)));
    assert_string_equal(json_string_value(json_object_get(p, "when")), "2024-10-21");

    /* no routes: one "default" route at /v1 over every target */
    assert_int_equal(g->n_routes, 1);
    assert_string_equal(g->routes[0].name, "default");
    assert_string_equal(g->routes[0].path_prefix, "/v1");
    assert_int_equal(g->routes[0].n_backends, 2);
    assert_int_equal(g->routes[0].total_weight, 2);
    assert_int_equal(g->routes[0].max_attempts, 1);

    const cfg_mcp *m = cfg_find_mcp(s, "ctx");
    assert_int_equal(m->store, STORE_MEMORY);
    assert_string_equal(m->key_prefix, "ctx:");
    assert_false(m->encrypt);
    assert_int_equal(m->ttl_seconds, 3600);
    assert_int_equal(m->max_entries, 100000);
    assert_int_equal(m->max_turns, 500);
    assert_int_equal(m->eviction, EVICT_LRU);
    assert_int_equal(m->strategy, CTX_LAST_N);
    assert_int_equal(m->last_n, 20);
    assert_int_equal(m->max_context_tokens, 6000);
    assert_int_equal(m->summarize_trigger_tokens, 8000);
    assert_true(m->format_json);
    assert_int_equal(m->schema_version, 1);
    assert_false(m->read_only);
    assert_false(m->has_api_key);
    assert_true(m->metrics_enabled);
    assert_true(json_is_object(m->spec)); /* spec defaults to {} */
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
}

static void test_json_file_and_generation(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"gw.json"};
    cfg_snapshot *a = load_ok("misc", paths, 1, &d);
    cfg_snapshot *b = load_ok("misc", paths, 1, &d);
    assert_true(b->generation > a->generation);
    const cfg_gateway *g = cfg_find_gateway(a, NULL);
    assert_string_equal(g->name, "from-json");
    assert_int_equal(g->listener.port, 9090);
    assert_string_equal(g->targets[0].mock.text, "hi");
    assert_int_equal(g->targets[0].mock.chunks, 2);
    assert_int_equal(d.n, 0);
    cfg_snapshot_unref(a);
    cfg_snapshot_unref(b);
    cfg_diags_free(&d);
}

/* Only a type that names one provider defaults its endpoint, to that provider's own API. */
static void test_endpoint_defaults(void **state)
{
    (void)state;
    char path[] = "/tmp/ctxgate-endpoints-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("apiVersion: ctxgate.io/v1alpha1\nkind: LLMGateway\nmetadata: {name: gw}\nspec:\n"
          "  modelTargets:\n"
          "  - {name: o, type: OpenAI}\n"
          "  - {name: a, type: Anthropic}\n"
          "  - {name: g, type: Gemini}\n"
          "  - {name: hf, type: HuggingFaceEndpoint, config: {endpoint: "
          "\"https://x.hf.cloud/v1/\"}}\n"
          "  - {name: m, type: Mock}\n",
          f);
    fclose(f);
    cfg_diags d = {0};
    const char *paths[] = {path};
    cfg_snapshot *s = load_ok("misc", paths, 1, &d);
    const cfg_gateway *g = cfg_find_gateway(s, NULL);
    assert_string_equal(g->targets[0].endpoint, "https://api.openai.com/v1");
    assert_string_equal(g->targets[1].endpoint, "https://api.anthropic.com");
    assert_string_equal(g->targets[2].endpoint, "https://generativelanguage.googleapis.com");
    assert_string_equal(g->targets[3].endpoint, "https://x.hf.cloud/v1");
    assert_null(g->targets[4].endpoint);
    /* every type has its adapter: no "not yet enforced" */
    char *w = cfgt_render(&d, 1);
    assert_null(strstr(w, "HuggingFaceEndpoint"));
    assert_null(strstr(w, "not yet enforced"));
    free(w);
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
    unlink(path);
}

static void test_not_enforced_warnings(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"gateway.yaml", "mcp.yaml", "secrets.yaml"};
    cfg_snapshot *s = load_ok("full", paths, 3, &d);
    char *w = cfgt_render(&d, 1);
    /* every target type has an adapter: none warns */
    assert_null(strstr(w, "spec.modelTargets[1].type"));
    /* every routing strategy and pricing are enforced: no warning */
    assert_null(strstr(w, "spec.routes[1].strategy"));
    assert_null(strstr(w, "spec.routes[1].headerBased"));
    assert_null(strstr(w, "spec.modelTargets[0].pricing"));
    assert_null(strstr(w, "spec.modelTargets[0].healthCheck")); /* outlier detection, probes */
    /* the context layer enforces every ModelContextProtocol field but the cluster-only one */
    assert_non_null(
        strstr(w, "mcp.yaml:12: warning: spec.storage.provision: accepted, not yet enforced\n"));
    assert_null(strstr(w, "mcp.yaml:7: warning: spec.storage: accepted"));
    assert_null(strstr(w, "spec.contextStrategy"));
    assert_null(strstr(w, "spec.routes[0].contextRef"));
    /* enforced fields never warn, and a non-enforced object warns once, not per child */
    assert_null(strstr(w, "spec.listener"));
    assert_null(strstr(w, "spec.modelTargets[0].type"));
    assert_null(strstr(w, "spec.routes[0].strategy"));
    assert_null(strstr(w, "spec.storage.type"));
    assert_null(strstr(w, "spec.caching.ttlSeconds"));
    assert_null(strstr(w, "status"));
    /* AzureOpenAI, its deployment and apiVersion are enforced (the Azure adapter uses them) */
    assert_null(strstr(w, "spec.modelTargets[2].type"));
    assert_null(strstr(w, "spec.modelTargets[2].config.deployment"));
    assert_null(strstr(w, "config.apiVersion"));
    assert_int_equal(d.n - d.n_errors, 8);
    free(w);
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
}

/* config.tls: Secrets resolved to PEM text, the CA through its default key */
static void test_target_tls(void **state)
{
    (void)state;
    cfg_diags d = {0};
    const char *paths[] = {"tls_ok.yaml"};
    cfg_snapshot *s = load_ok("misc", paths, 1, &d);
    assert_int_equal(d.n, 0);
    const cfg_gateway *g = cfg_find_gateway(s, NULL);
    const cfg_target *t = &g->targets[0];
    assert_non_null(strstr(t->tls_ca_pem, "-----BEGIN CERTIFICATE-----"));
    assert_string_equal(t->tls_cert_pem, t->tls_ca_pem); /* the fixture's self-signed pair */
    assert_non_null(strstr(t->tls_key_pem, "-----BEGIN PRIVATE KEY-----"));
    assert_string_equal(t->tls_server_name, "upstream.test");
    assert_false(t->tls_insecure);
    t = &g->targets[1];
    assert_null(t->tls_ca_pem);
    assert_null(t->tls_cert_pem);
    assert_null(t->tls_key_pem);
    assert_null(t->tls_server_name);
    assert_false(t->tls_insecure);
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_example),       cmocka_unit_test(test_api_key_text_not_kept),
        cmocka_unit_test(test_defaults_and_types), cmocka_unit_test(test_json_file_and_generation),
        cmocka_unit_test(test_endpoint_defaults),  cmocka_unit_test(test_not_enforced_warnings),
        cmocka_unit_test(test_target_tls),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
