/* test_refs.c — the reference walk (config/refs.h): every Secret and ModelContextProtocol an
 * object names, with the field path, found from the schema tables; a reference field added to the
 * schema is followed without code changes (checked by building a document that sets every
 * reference field the schema has). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "config/refs.h"
#include "config/schema.h"

static json_t *parse(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    if (!j) fprintf(stderr, "bad test JSON: %s\n", e.text);
    assert_non_null(j);
    return j;
}

static void expect(const cfg_refs *r, size_t i, cfg_ref_kind kind, const char *name,
                   const char *path)
{
    assert_true(i < r->n);
    assert_int_equal(r->v[i].kind, kind);
    assert_string_equal(r->v[i].name, name);
    assert_string_equal(r->v[i].path, path);
}

static void test_gateway_refs(void **state)
{
    (void)state;
    json_t *gw = parse(
        "{\"apiVersion\":\"ctxgate.io/v1alpha1\",\"kind\":\"LLMGateway\","
        "\"metadata\":{\"name\":\"gw\",\"namespace\":\"ai\"},"
        "\"spec\":{\"listener\":{\"port\":8443,\"tlsSecretRef\":{\"name\":\"tls\"}},"
        "\"admin\":{\"port\":9000,\"apiKeyRef\":{\"name\":\"adm\",\"key\":\"k\"}},"
        "\"modelTargets\":[{\"name\":\"a\",\"type\":\"OpenAI\",\"config\":{\"apiKeyRef\":"
        "{\"name\":\"openai\",\"key\":\"k\"}}},{\"name\":\"b\",\"type\":\"Mock\"},"
        "{\"name\":\"c\",\"type\":\"OpenAICompatible\",\"config\":{\"tls\":{\"caSecretRef\":"
        "{\"name\":\"ca\",\"key\":\"ca.crt\"},\"clientCertSecretRef\":{\"name\":\"client\"}}}}],"
        "\"routes\":[{\"name\":\"r\",\"backends\":[{\"target\":\"a\"}]},{\"name\":\"s\","
        "\"contextRef\":{\"name\":\"history\"},\"backends\":[{\"target\":\"b\"}]}],"
        "\"authentication\":{\"type\":\"APIKey\",\"apiKeys\":[{\"name\":\"k1\",\"secretRef\":"
        "{\"name\":\"keys\",\"key\":\"one\"}},{\"name\":\"k2\",\"secretRef\":{\"name\":\"keys\","
        "\"key\":\"two\"}},{\"name\":\"k3\",\"secretRef\":{\"key\":\"no-name\"}}]}},"
        "\"status\":{}}");
    cfg_refs r = {0};
    assert_int_equal(cfg_refs_collect(gw, &r), 8);
    expect(&r, 0, CFG_REF_SECRET, "tls", "spec.listener.tlsSecretRef");
    expect(&r, 1, CFG_REF_SECRET, "adm", "spec.admin.apiKeyRef");
    expect(&r, 2, CFG_REF_SECRET, "openai", "spec.modelTargets[0].config.apiKeyRef");
    expect(&r, 3, CFG_REF_SECRET, "ca", "spec.modelTargets[2].config.tls.caSecretRef");
    expect(&r, 4, CFG_REF_SECRET, "client", "spec.modelTargets[2].config.tls.clientCertSecretRef");
    expect(&r, 5, CFG_REF_MCP, "history", "spec.routes[1].contextRef");
    expect(&r, 6, CFG_REF_SECRET, "keys", "spec.authentication.apiKeys[0].secretRef");
    expect(&r, 7, CFG_REF_SECRET, "keys", "spec.authentication.apiKeys[1].secretRef");
    const cfg_ref *f = cfg_refs_find(&r, CFG_REF_SECRET, "keys");
    assert_non_null(f);
    assert_string_equal(f->path, "spec.authentication.apiKeys[0].secretRef");
    assert_null(cfg_refs_find(&r, CFG_REF_MCP, "keys"));
    assert_null(cfg_refs_find(&r, CFG_REF_SECRET, "history"));
    cfg_refs_free(&r);
    assert_int_equal(r.n, 0);
    json_decref(gw);
}

static void test_mcp_refs_and_other_kinds(void **state)
{
    (void)state;
    json_t *mcp =
        parse("{\"apiVersion\":\"ctxgate.io/v1alpha1\",\"kind\":\"ModelContextProtocol\","
              "\"metadata\":{\"name\":\"history\"},\"spec\":{\"storage\":{\"type\":\"Redis\","
              "\"config\":{\"url\":\"redis://"
              "r:6379\",\"passwordRef\":{\"name\":\"redis\",\"key\":\"pw\"}},"
              "\"encryption\":{\"enabled\":true,\"keyRef\":{\"name\":\"aes\",\"key\":\"k\"}}},"
              "\"security\":{\"apiKeyRef\":{\"name\":\"ctx-api\",\"key\":\"k\"}},"
              "\"contextStrategy\":{\"type\":\"Summarize\",\"summarize\":{\"target\":\"a\","
              "\"gatewayRef\":{\"name\":\"gw\"}}}}}");
    cfg_refs r = {0};
    assert_int_equal(cfg_refs_collect(mcp, &r), 3);
    expect(&r, 0, CFG_REF_SECRET, "redis", "spec.storage.config.passwordRef");
    expect(&r, 1, CFG_REF_SECRET, "aes", "spec.storage.encryption.keyRef");
    expect(&r, 2, CFG_REF_SECRET, "ctx-api", "spec.security.apiKeyRef");
    json_decref(mcp);

    /* a Secret, an unknown kind, a non-object and a gateway without refs add nothing */
    json_t *others[] = {
        parse("{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":"
              "\"x\"},\"data\":{\"name\":\"eA==\"}}"),
        parse("{\"kind\":\"ConfigMap\",\"spec\":{\"contextRef\":{\"name\":\"x\"}}}"),
        parse("[1,2]"),
        parse("{\"kind\":\"LLMGateway\",\"spec\":{\"routes\":{\"contextRef\":"
              "{\"name\":\"not-an-array\"}}}}")};
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        assert_int_equal(cfg_refs_collect(others[i], &r), 0);
        json_decref(others[i]);
    }
    assert_int_equal(r.n, 3);
    cfg_refs_free(&r);
}

/* Sets every Secret / MCP reference field below f in v (arrays get one element), naming the
 * referenced object after the count so far; returns how many it set. */
static size_t fill_refs(const sch_field *f, json_t *v, size_t *count)
{
    size_t set = 0;
    if (f->ref >= REF_SECRET && f->ref <= REF_MCP_REDIS) {
        char name[32];
        snprintf(name, sizeof name, "ref-%zu", (*count)++);
        json_object_set_new(v, "name", json_string(name));
        return 1;
    }
    if (f->kind != SCH_OBJECT || !f->fields) return 0;
    for (const sch_field *m = f->fields; m->name; m++) {
        if (m->kind == SCH_OBJECT) {
            json_t *child = json_object();
            size_t k = fill_refs(m, child, count);
            if (k) json_object_set(v, m->name, child);
            json_decref(child);
            set += k;
        } else if (m->kind == SCH_ARRAY && m->items && m->items->kind == SCH_OBJECT) {
            json_t *item = json_object();
            size_t k = fill_refs(m->items, item, count);
            if (k) json_object_set_new(v, m->name, json_pack("[O]", item));
            json_decref(item);
            set += k;
        }
    }
    return set;
}

static void test_every_schema_ref_field_is_followed(void **state)
{
    (void)state;
    for (int kind = SCH_KIND_GATEWAY; kind <= SCH_KIND_MCP; kind++) {
        const sch_kind_def *def = &sch_kinds[kind];
        json_t *doc = json_object();
        size_t count = 0;
        size_t set = fill_refs(def->root, doc, &count);
        json_object_set_new(doc, "kind", json_string(def->kind));
        assert_true(set > (kind == SCH_KIND_GATEWAY ? 6 : 2)); /* the schema has that many */
        cfg_refs r = {0};
        assert_int_equal(cfg_refs_collect(doc, &r), set);
        for (size_t i = 0; i < r.n; i++) {
            char want[32];
            snprintf(want, sizeof want, "ref-%zu", i);
            assert_string_equal(r.v[i].name, want);
            assert_true(strncmp(r.v[i].path, "spec.", 5) == 0 ||
                        strncmp(r.v[i].path, "status.", 7) == 0);
        }
        cfg_refs_free(&r);
        json_decref(doc);
    }
    assert_string_equal(cfg_ref_kind_name(CFG_REF_SECRET), "Secret");
    assert_string_equal(cfg_ref_kind_name(CFG_REF_MCP), "ModelContextProtocol");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gateway_refs),
        cmocka_unit_test(test_mcp_refs_and_other_kinds),
        cmocka_unit_test(test_every_schema_ref_field_is_followed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
