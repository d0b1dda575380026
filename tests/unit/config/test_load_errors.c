/* test_load_errors.c — one fixture per error class (tests/data/config/errors/), each asserting
 * the exact diagnostics `ctxgate validate` prints: file:line, field path and message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_test.h"
#include "tokens/tokens.h"

/* what every refused security policy says (the schema's SCH_REFUSED_MSG, spelled out so a
 * changed text is noticed) */
#define REFUSED                                                                                    \
    "not supported yet; remove it or upgrade (this version of ctxgate does not enforce it, so "    \
    "requests would pass unchecked)"

typedef struct error_case {
    const char *file;
    const char *errors; /* every error line, in order */
} error_case;

static const error_case cases[] = {
    {"enum_type.yaml", "enum_type.yaml:7: spec.modelTargets[0].type: \"OpenAl\" is not one of "
                       "OpenAI, AzureOpenAI, Anthropic, Gemini, "
                       "HuggingFaceEndpoint, OpenAICompatible, CustomLocalModel, Mock\n"},
    {"unknown_field.yaml", "unknown_field.yaml:5: spec.listener.prot: unknown field \"prot\"; "
                           "allowed: port, maxConnections, tlsSecretRef\n"},
    {"quoted_int.yaml", "quoted_int.yaml:6: spec.listener.port: expected an integer, got the "
                        "quoted string \"8080\" (remove the quotes)\n"},
    {"wrong_type.yaml", "wrong_type.yaml:6: spec.modelTargets: expected a list, got a mapping\n"},
    {"missing_required.yaml",
     "missing_required.yaml:6: spec.modelTargets[0].type: missing required field \"type\"\n"},
    {"int_overflow.yaml",
     "int_overflow.yaml:7: spec.modelTargets[0].config.timeouts.total: 4294967297 is out of "
     "range: integers here are at most 2147483647\n"
     "int_overflow.yaml:11: spec.routes[0].failover.maxAttempts: 4294967298 is above the "
     "maximum 16\n"
     "int_overflow.yaml:11: spec.routes[0].failover.backoffMs: 9223372036854775807 is out of "
     "range: integers here are at most 2147483647\n"},
    {"out_of_range.yaml",
     "out_of_range.yaml:5: spec.listener.port: 70000 is above the maximum 65535\n"
     "out_of_range.yaml:6: spec.modelTargets[0].config.mock.chunks: 0 is below the minimum 1\n"},
    {"duplicate_names.yaml",
     "duplicate_names.yaml:7: spec.modelTargets[1].name: duplicate name \"a\" (also used by item "
     "[0])\n"
     "duplicate_names.yaml:10: spec.routes[1].name: duplicate name \"r\" (also used by item [0])\n"
     "duplicate_names.yaml:14: spec.authentication.apiKeys[1].name: duplicate name \"k\" (also "
     "used by item [0])\n"
     "duplicate_names.yaml:16: spec.transformation.requestTemplates[1].name: duplicate name \"t\" "
     "(also used by item [0])\n"
     "duplicate_names.yaml:19: spec.transformation.promptAPIs[1].name: duplicate name \"p\" (also "
     "used by item [0])\n"},
    {"duplicate_alias.yaml", "duplicate_alias.yaml:7: spec.modelTargets[1].aliases[0]: \"a\" is "
                             "already the name or an alias of "
                             "spec.modelTargets[0]\n"},
    {"duplicate_key.yaml",
     "duplicate_key.yaml:8: spec.modelTargets[0].name: duplicate key \"name\"\n"},
    {"unknown_kind.yaml", "unknown_kind.yaml:2: kind: \"Gateway\" is not one of LLMGateway, "
                          "ModelContextProtocol, Secret\n"},
    {"bad_apiversion.yaml", "bad_apiversion.yaml:1: apiVersion: \"ctxgate.io/v1\" is not a valid "
                            "apiVersion for kind LLMGateway (use "
                            "ctxgate.io/v1alpha1)\n"},
    {"no_name.yaml", "no_name.yaml:4: metadata.name: missing required field \"name\"\n"},
    {"syntax.yaml",
     "syntax.yaml:8: YAML syntax error: did not find expected key while parsing a block mapping\n"},
    {"refs_targets.yaml", "refs_targets.yaml:8: spec.routes[0].backends[1].target: \"b1\" is not a "
                          "modelTargets name or alias (known: a, "
                          "alias-a)\n"
                          "refs_targets.yaml:10: spec.routes[0].headerBased.values.gold: \"b3\" is "
                          "not a modelTargets name or alias "
                          "(known: a, alias-a)\n"
                          "refs_targets.yaml:9: spec.routes[0].failover.targets[0]: \"b2\" is not "
                          "a modelTargets name or alias (known: a, "
                          "alias-a)\n"
                          "refs_targets.yaml:11: spec.routes[0].templateRef: \"nope\" is not a "
                          "transformation.requestTemplates name "
                          "(known: none)\n"
                          "refs_targets.yaml:13: spec.authentication.apiKeys[0].models[0]: \"b4\" "
                          "is not a modelTargets name or alias "
                          "(known: a, alias-a)\n"
                          "refs_targets.yaml:15: spec.transformation.promptAPIs[0].target: \"b6\" "
                          "is not a modelTargets name or alias "
                          "(known: a, alias-a)\n"},
    {"refs_mcp.yaml", "refs_mcp.yaml:7: spec.routes[0].contextRef: ModelContextProtocol "
                      "\"missing\" not found in namespace "
                      "\"default\"\n"
                      "refs_mcp.yaml:8: spec.caching.cacheStoreRef: ModelContextProtocol \"mem\" "
                      "has storage.type Memory; a shared "
                      "store must be type Redis\n"
                      "refs_mcp.yaml:15: spec.caching.cacheStoreRef: ModelContextProtocol "
                      "\"other-ns\" not found in namespace "
                      "\"default\"\n"},
    {"refs_secrets.yaml", "refs_secrets.yaml:35: data.apiKey: the value of key \"apiKey\" is not "
                          "valid base64 (use stringData for plain "
                          "text)\n"
                          "refs_secrets.yaml:5: spec.listener.tlsSecretRef: Secret \"tls\" has no "
                          "key \"tls.key\" (its keys: tls.crt)\n"
                          "refs_secrets.yaml:7: spec.modelTargets[0].config.apiKeyRef: Secret "
                          "\"nosuch\" not found in namespace "
                          "\"default\" (add a kind: Secret document)\n"
                          "refs_secrets.yaml:8: spec.modelTargets[1].config.apiKeyRef: Secret "
                          "\"keys\" has no key \"missing\" (its keys: "
                          "apiKey, other)\n"
                          "refs_secrets.yaml:25: spec.storage.encryption.keyRef: Secret "
                          "\"short-key\" key \"key\" holds 16 bytes; an "
                          "AES-256 key must be exactly 32 bytes (data: base64 of 32 random bytes, "
                          "e.g. `openssl rand -base64 32`)\n"},
    {"regex.yaml", "regex.yaml:8: spec.transformation.inputValidation.denyPatterns: " REFUSED "\n"
                   "regex.yaml:8: spec.transformation.inputValidation.denyPatterns[1]: "
                   "\"(?i)ignore (previous\" does not compile: "
                   "missing closing parenthesis at offset 20\n"
                   "regex.yaml:9: spec.transformation.responseParsers[0].pattern: \"a{2,1}\" does "
                   "not compile: numbers out of order "
                   "in {} quantifier at offset 5\n"},
    {"routes_schema.yaml",
     "routes_schema.yaml:7: spec.routes[0].backends: needs at least 1 item\n"
     "routes_schema.yaml:11: spec.routes[1].failover.maxAttempts: 0 is below the minimum 1\n"
     "routes_schema.yaml:11: spec.routes[1].failover.retryOn[1]: 418 is not one of 429, 500, 502, "
     "503, 504, "
     "connect-failure, timeout\n"
     "routes_schema.yaml:11: spec.routes[1].failover.retryOn[3]: \"reset\" is not one of 429, 500, "
     "502, 503, 504, "
     "connect-failure, timeout\n"
     "routes_schema.yaml:12: spec.routes[2].pathPrefix: \"v1\" must start with '/'\n"
     "routes_schema.yaml:12: spec.routes[2].backends: missing required field \"backends\"\n"
     "routes_schema.yaml:16: spec.routes[3].failover.maxAttempts: 17 is above the maximum 16\n"
     "routes_schema.yaml:16: spec.routes[3].failover.targets: takes at most 15 items\n"},
    {"routes.yaml",
     "routes.yaml:9: spec.routes[2].pathPrefix: route \"second\" is unreachable: route \"first\" "
     "has the same "
     "pathPrefix \"/v1\" and neither has match filters (add match.models or match.headers, or "
     "change the "
     "pathPrefix)\n"
     "routes.yaml:10: spec.routes[3].backends: strategy Weighted needs at least one backend with "
     "weight > 0\n"
     "routes.yaml:11: spec.routes[4].headerBased: required for strategy HeaderBased\n"},
    {"azure.yaml",
     "azure.yaml:6: spec.modelTargets[0].config.endpoint: required for type AzureOpenAI "
     "(https://{resource}.openai.azure.com)\n"
     "azure.yaml:7: spec.authentication.apiKeys: type APIKey needs at least one key\n"},
    {"url_segments.yaml",
     "url_segments.yaml:6: spec.modelTargets[0].config.modelName: \"gemini-2.0-flash?alt=x\" "
     "cannot be the Gemini model id in the upstream URL: use letters, digits, '.', '-' and '_' "
     "only (e.g. gemini-2.0-flash)\n"
     "url_segments.yaml:8: spec.modelTargets[2].name: \"tuned/x\" cannot be the Gemini model id "
     "in the upstream URL: use letters, digits, '.', '-' and '_' only (e.g. gemini-2.0-flash)\n"
     "url_segments.yaml:9: spec.modelTargets[3].config.deployment: \"../x\" cannot be the "
     "deployment in the upstream URL: use letters, digits, '.', '-' and '_' only\n"
     "url_segments.yaml:10: spec.modelTargets[4].config.modelName: \"a b\" cannot be the "
     "deployment in the upstream URL: use letters, digits, '.', '-' and '_' only (or set "
     "config.deployment)\n"},
    {"endpoints.yaml",
     "endpoints.yaml:10: spec.modelTargets[2].config.endpoint: required for type "
     "HuggingFaceEndpoint (the Inference Endpoint's URL with /v1, e.g. "
     "https://{name}.{region}.aws.endpoints.huggingface.cloud/v1)\n"
     "endpoints.yaml:11: spec.modelTargets[3].config.endpoint: required for type OpenAICompatible "
     "(the server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 for vLLM, "
     "http://127.0.0.1:11434/v1 for Ollama)\n"
     "endpoints.yaml:12: spec.modelTargets[4].config.endpoint: required for type CustomLocalModel "
     "(the model server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8080/v1)\n"},
    {"policies.yaml",
     "policies.yaml:9: spec.authentication.type: \"JWT\" is " REFUSED "\n"
     "policies.yaml:10: spec.authentication.types[1]: \"OAuth2\" is " REFUSED "\n"
     "policies.yaml:14: spec.authentication.apiKeys[0].rateLimiting: " REFUSED "\n"
     "policies.yaml:15: spec.authentication.jwt: " REFUSED "\n"
     "policies.yaml:16: spec.authentication.oauth2: " REFUSED "\n"
     "policies.yaml:17: spec.authorization: " REFUSED "\n"
     "policies.yaml:20: spec.rateLimiting: " REFUSED "\n"
     "policies.yaml:21: spec.budgets: " REFUSED "\n"
     "policies.yaml:25: spec.transformation.inputValidation.maxMessages: " REFUSED "\n"
     "policies.yaml:26: spec.transformation.inputValidation.maxPromptTokens: " REFUSED "\n"
     "policies.yaml:27: spec.transformation.inputValidation.jsonSchema: " REFUSED "\n"
     "policies.yaml:28: spec.transformation.inputValidation.denyPatterns: " REFUSED "\n"
     "policies.yaml:29: spec.transformation.inputValidation.redactPII: " REFUSED "\n"},
    {"mcp_rules.yaml",
     "mcp_rules.yaml:5: spec.storage.config.url: rediss:// (TLS) is not supported: this build's "
     "Redis client (Debian bookworm's hiredis 0.14) has no TLS; use redis:// on a trusted network "
     "or a TLS tunnel\n"
     "mcp_rules.yaml:6: spec.interactionPatterns.versioning.schemaVersion: 2 is not supported: "
     "this version of ctxgate writes schemaVersion 1 (older stored records are read and "
     "upgraded)\n"
     "mcp_rules.yaml:12: spec.contextStrategy.summarize: required for contextStrategy.type "
     "Summarize: name the model target that writes the summaries (summarize.target)\n"
     "mcp_rules.yaml:18: spec.contextStrategy.summarize.target: \"gpt-nano\" is not a model target "
     "(name or alias) of LLMGateway \"gw\", whose routes use this store; add it there or set "
     "summarize.gatewayRef\n"
     "mcp_rules.yaml:24: spec.contextStrategy.summarize.gatewayRef.name: no LLMGateway "
     "\"nowhere\" in namespace \"default\"\n"},
    {"tls.yaml",
     "tls.yaml:9: spec.modelTargets[0].config.tls: the endpoint http://127.0.0.1:8000/v1 is plain "
     "http://, so there is no TLS to configure; use an https:// endpoint or remove tls\n"
     "tls.yaml:12: spec.modelTargets[3].config.tls.caSecretRef: Secret \"ca-bad\" key \"ca.crt\" "
     "is not a PEM certificate bundle (no PEM block found); put the CA certificate(s) there as "
     "-----BEGIN CERTIFICATE----- blocks\n"
     "tls.yaml:13: spec.modelTargets[4].config.tls.caSecretRef: Secret \"ca-bad\" key "
     "\"truncated\" is not a PEM certificate bundle (ASN1 lib); put the CA certificate(s) there "
     "as -----BEGIN CERTIFICATE----- blocks\n"
     "tls.yaml:14: spec.modelTargets[5].config.tls.clientCertSecretRef: Secret \"mismatch\": "
     "tls.key is not the private key of the certificate in tls.crt (key values mismatch)\n"
     "tls.yaml:15: spec.modelTargets[6].config.tls.clientCertSecretRef: Secret \"badkey\" key "
     "\"tls.key\" is not an unencrypted PEM private key (unsupported)\n"
     "tls.yaml:16: spec.modelTargets[7].config.tls.serverName: \"upstream.test:443\" is not a "
     "host name (letters, digits, '-' and '.', no port)\n"
     "tls.yaml:17: spec.modelTargets[8].config.tls: type Mock makes no upstream connection; "
     "remove tls\n"
     "tls.yaml:10: spec.modelTargets[1].config.tls.caSecretRef: Secret \"nosuch\" not found in "
     "namespace \"default\" (add a kind: Secret document)\n"
     "tls.yaml:11: spec.modelTargets[2].config.tls.caSecretRef: Secret \"ca-wrongkey\" has no "
     "key \"ca.crt\" (its keys: bundle)\n"},
};

/* insecureSkipVerify is accepted with a warning naming the field; the valid target with a CA,
 * a client certificate and a server name adds nothing else */
static void test_tls_insecure_warns(void **state)
{
    (void)state;
    cfgt_chdir("errors");
    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    const char *paths[] = {"tls.yaml"};
    assert_int_equal(cfg_load_paths(paths, 1, &s, &d), -1);
    char *warnings = cfgt_render(&d, 1);
    const char *why = "the endpoint's certificate is not verified: anyone on the network path can "
                      "read and change this target's traffic, its API key included; use "
                      "caSecretRef (and serverName) for a private CA instead\n";
    char want[1024];
    snprintf(want, sizeof want,
             "tls.yaml:17: warning: spec.modelTargets[8].config.tls.insecureSkipVerify: %s"
             "tls.yaml:26: warning: spec.modelTargets[9].config.tls.insecureSkipVerify: %s",
             why, why);
    assert_string_equal(warnings, want);
    free(warnings);
    cfg_diags_free(&d);
}

static void test_error_cases(void **state)
{
    (void)state;
    cfgt_chdir("errors");
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cfg_diags d = {0};
        cfg_snapshot *s = NULL;
        const char *paths[] = {cases[i].file};
        int rc = cfg_load_paths(paths, 1, &s, &d);
        char *errors = cfgt_render(&d, 0);
        if (strcmp(errors, cases[i].errors) != 0)
            fprintf(stderr, "case %s\n--- want\n%s--- got\n%s", cases[i].file, cases[i].errors,
                    errors);
        assert_int_equal(rc, -1);
        assert_null(s);
        assert_string_equal(errors, cases[i].errors);
        free(errors);
        cfg_diags_free(&d);
    }
}

/* a file with errors leaves *out untouched and later files are still checked */
static void test_errors_across_files(void **state)
{
    (void)state;
    cfgt_chdir("misc");
    cfg_diags d = {0};
    cfg_snapshot *s = (cfg_snapshot *)0x1;
    const char *paths[] = {"bad.json", "gw.json", "/nonexistent/ctxgate"};
    assert_int_equal(cfg_load_paths(paths, 3, &s, &d), -1);
    assert_ptr_equal(s, (cfg_snapshot *)0x1);
    char *errors = cfgt_render(&d, 0);
    /* paths are expanded before any file is read */
    assert_string_equal(
        errors,
        "/nonexistent/ctxgate: cannot read: No such file or directory\n"
        "bad.json:8: spec.modelTargets[0].config.mock.latencyMs: expected an integer, got the "
        "quoted string \"10\" (remove the quotes)\n");
    free(errors);
    cfg_diags_free(&d);
}

static void test_empty_directory_and_no_paths(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/ctxgate-cfg-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    const char *paths[] = {tmpl};
    assert_int_equal(cfg_load_paths(paths, 1, &s, &d), -1);
    assert_int_equal(d.n_errors, 1);
    assert_string_equal(d.items[0].message, "no *.yaml, *.yml or *.json files in this directory");
    cfg_diags_free(&d);
    rmdir(tmpl);
    assert_int_equal(cfg_load_paths(NULL, 0, &s, &d), -1);
    assert_int_equal(d.n_errors, 1);
    cfg_diags_free(&d);
}

/* the gateway's own errors come first; references from a broken document are not checked */
static void test_duplicate_documents(void **state)
{
    (void)state;
    char path[] = "/tmp/ctxgate-dup-XXXXXX.yaml";
    int fd = mkstemps(path, 5);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs("apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n---\n"
          "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: c}\n",
          f);
    fclose(f);
    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    const char *paths[] = {path};
    assert_int_equal(cfg_load_paths(paths, 1, &s, &d), -1);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(d.items[0].line, 8);
    assert_string_equal(d.items[0].path, "metadata.name");
    char want[512];
    snprintf(want, sizeof want,
             "duplicate Secret \"s\" in namespace \"default\" (first defined at %s:1)", path);
    assert_string_equal(d.items[0].message, want);
    cfg_diags_free(&d);
    unlink(path);
}

/* TokenBudget needs the rank files when the configuration loads, not at the first request: a
 * damaged (or missing) file is an error naming the route, the encoding and the file. */
static void test_tokenizer_data_checked_at_load(void **state)
{
    (void)state;
    cfgt_chdir("misc");
    char dir[] = "/tmp/ctxgate-tokdir-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char file[256];
    snprintf(file, sizeof file, "%s/o200k_base.tiktoken", dir);
    FILE *f = fopen(file, "w");
    assert_non_null(f);
    fputs("IQ== 0\n", f);
    fclose(f);
    const char *saved = getenv("CTXGATE_TOKENIZER_DIR");
    char *keep = saved ? strdup(saved) : NULL;
    setenv("CTXGATE_TOKENIZER_DIR", dir, 1);
    tok_shutdown(); /* an encoding loaded earlier in this process would hide the damage */

    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    const char *paths[] = {"tokenbudget.yaml"};
    assert_int_equal(cfg_load_paths(paths, 1, &s, &d), -1);
    assert_null(s);
    assert_int_equal(d.n_errors, 1);
    assert_int_equal(d.items[0].line, 17);
    assert_string_equal(d.items[0].path, "spec.routes[0].contextRef");
    assert_non_null(strstr(d.items[0].message, "ModelContextProtocol \"conv\" has "
                                               "contextStrategy.type TokenBudget, which counts "
                                               "tokens in o200k_base, and that cannot be loaded"));
    assert_non_null(strstr(d.items[0].message, file));
    cfg_diags_free(&d);

    unlink(file);
    rmdir(dir);
    if (keep)
        setenv("CTXGATE_TOKENIZER_DIR", keep, 1);
    else
        unsetenv("CTXGATE_TOKENIZER_DIR");
    free(keep);
    /* with the data back (the checkout's node_modules) the same files load */
    assert_int_equal(cfg_load_paths(paths, 1, &s, &d), 0);
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_error_cases),
        cmocka_unit_test(test_errors_across_files),
        cmocka_unit_test(test_empty_directory_and_no_paths),
        cmocka_unit_test(test_duplicate_documents),
        cmocka_unit_test(test_tokenizer_data_checked_at_load),
        cmocka_unit_test(test_tls_insecure_warns),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
