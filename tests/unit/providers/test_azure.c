/* test_azure.c — AzureOpenAI targets through the OpenAI-family adapter: the deployment URL with
 * api-version, the api-key header, the raw path, embeddings, and OpenAI-like error mapping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"
#include "providers/provider.h"

static const char *header(const provider_request *r, const char *name)
{
    for (size_t i = 0; i < r->n_headers; i++)
        if (!strcmp(r->headers[i].name, name)) return r->headers[i].value;
    return NULL;
}

static cfg_target azure(void)
{
    return (cfg_target){.name = "az",
                        .type = TARGET_AZURE_OPENAI,
                        .endpoint = "https://acme.openai.azure.com",
                        .model_name = "gpt-4o",
                        .api_key = "az-key",
                        .deployment = "prod-4o",
                        .api_version = "2025-01-01-preview"};
}

static void chat_url_and_key(void **state)
{
    (void)state;
    cfg_target t = azure();
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256] = "";
    json_t *b = json_pack("{s:s,s:[{s:s,s:s}]}", "model", "az", "messages", "role", "user",
                          "content", "hi");
    assert_int_equal(provider_build_chat(&t, b, "rid", pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://acme.openai.azure.com/openai/deployments/prod-4o/"
                               "chat/completions?api-version=2025-01-01-preview");
    assert_string_equal(header(&r, "api-key"), "az-key");
    assert_null(header(&r, "Authorization"));
    assert_string_equal(header(&r, "X-Request-Id"), "rid");
    json_t *sent = json_decode_fast(r.body, r.body_len, NULL, 0);
    assert_string_equal(json_string_value(json_object_get(sent, "model")), "gpt-4o");
    json_decref(sent);
    free(r.body);
    json_decref(b);

    /* no deployment: modelName; no apiVersion: the GA default */
    t.deployment = NULL;
    t.api_version = NULL;
    provider_raw_body raw = {.body = "{\"model\":\"gpt-4o\"}",
                             .len = 18,
                             .model = "gpt-4o",
                             .model_start = 9,
                             .model_end = 17,
                             .object_end = 17};
    assert_int_equal(provider_build_chat_raw(&t, &raw, NULL, pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://acme.openai.azure.com/openai/deployments/gpt-4o/"
                               "chat/completions?api-version=2024-10-21");
    assert_null(r.body); /* the client's bytes as they are */
    assert_true(provider_speaks_openai(&t));
    arena_free(pool);
}

static void embeddings(void **state)
{
    (void)state;
    cfg_target t = azure();
    json_t *params = json_pack("{s:f,s:i}", "temperature", 0.2, "dimensions", 256);
    t.parameters = params;
    arena *pool = arena_new(4096);
    provider_request r;
    char err[256] = "";
    json_t *b = json_pack("{s:s,s:s}", "model", "az", "input", "hello");
    assert_int_equal(provider_build_embeddings(&t, b, NULL, pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://acme.openai.azure.com/openai/deployments/prod-4o/"
                               "embeddings?api-version=2025-01-01-preview");
    json_t *sent = json_decode_fast(r.body, r.body_len, NULL, 0);
    assert_string_equal(json_string_value(json_object_get(sent, "model")), "gpt-4o");
    assert_int_equal(json_integer_value(json_object_get(sent, "dimensions")), 256);
    assert_null(json_object_get(sent, "temperature")); /* a chat default, not sent */
    json_decref(sent);
    free(r.body);

    cfg_target o = {.name = "o",
                    .type = TARGET_OPENAI,
                    .endpoint = "https://api.openai.com/v1",
                    .model_name = "text-embedding-3-small",
                    .api_key = "sk"};
    assert_int_equal(provider_build_embeddings(&o, b, NULL, pool, &r, err, sizeof err), 0);
    assert_string_equal(r.url, "https://api.openai.com/v1/embeddings");
    assert_string_equal(header(&r, "Authorization"), "Bearer sk");
    free(r.body);
    json_decref(b);
    json_decref(params);
    arena_free(pool);
}

static void errors(void **state)
{
    (void)state;
    cfg_target t = azure();
    provider_error e;
    const char *limited = "{\"error\":{\"code\":\"429\",\"message\":\"Requests to the "
                          "ChatCompletions_Create Operation have exceeded the call rate limit.\"}}";
    provider_map_error(&t, 429, limited, strlen(limited), &e);
    assert_int_equal(e.status, 429);
    assert_string_equal(e.type, "requests");
    const char *filtered = "{\"error\":{\"code\":\"content_filter\",\"message\":\"filtered\","
                           "\"status\":400}}";
    provider_map_error(&t, 400, filtered, strlen(filtered), &e);
    assert_int_equal(e.status, 400);
    assert_string_equal(e.type, "invalid_request_error");
    provider_map_error(&t, 500, "oops", 4, &e);
    assert_string_equal(e.type, "server_error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(chat_url_and_key),
        cmocka_unit_test(embeddings),
        cmocka_unit_test(errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
