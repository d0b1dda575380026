/* test_crds.c — the generated CRDs parse back with libyaml into the expected structure, and
 * every schema field appears in the openAPIV3Schema with its type, enum and default. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config/load_internal.h"
#include "config_test.h"

static json_t *parse_crds(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_int_equal(cfg_crds_write(f), 0);
    fclose(f);
    yaml_parser_t p;
    yaml_parser_initialize(&p);
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    json_t *docs = json_array();
    for (;;) {
        yaml_document_t doc;
        assert_true(yaml_parser_load(&p, &doc));
        yaml_node_t *root = yaml_document_get_root_node(&doc);
        if (!root) {
            yaml_document_delete(&doc);
            break;
        }
        json_t *j = cfg_yaml_node_to_json(&doc, root);
        assert_non_null(j);
        json_array_append_new(docs, j);
        yaml_document_delete(&doc);
    }
    yaml_parser_delete(&p);
    free(text);
    return docs;
}

static json_t *at(json_t *v, const char *path)
{
    char tmp[512];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *save = NULL;
    for (char *tok = strtok_r(tmp, "/", &save); tok && v; tok = strtok_r(NULL, "/", &save)) {
        char *end = NULL;
        long i = strtol(tok, &end, 10);
        json_t *next = *end ? json_object_get(v, tok) : json_array_get(v, (size_t)i);
        v = next;
    }
    return v;
}

static const char *str_at(json_t *v, const char *path)
{
    return json_string_value(at(v, path));
}

/* every field of the schema has a property of the right type, default and enum */
static void compare(const sch_field *f, json_t *s, const char *where)
{
    if (!s) fail_msg("%s: missing from the CRD", where);
    if (f->desc) assert_string_equal(str_at(s, "description"), f->desc);
    static const char *const types[] = {"object",  "array",  "string", "integer", "number",
                                        "boolean", "object", "object", NULL};
    if (f->kind == SCH_INT_OR_STRING)
        assert_true(json_is_true(at(s, "x-kubernetes-int-or-string")));
    else
        assert_string_equal(str_at(s, "type"), types[f->kind]);
    if (f->kind == SCH_FREE)
        assert_true(json_is_true(at(s, "x-kubernetes-preserve-unknown-fields")));
    if (f->def) {
        json_t *want = json_loads(f->def, JSON_DECODE_ANY, NULL);
        json_t *got = at(s, "default");
        if (!json_equal(want, got)) fail_msg("%s: default %s differs", where, f->def);
        json_decref(want);
    }
    if (f->enums) {
        size_t i = 0;
        for (const sch_enum *e = f->enums; e->value; e++, i++) {
            json_t *v = json_array_get(at(s, "enum"), i);
            char num[32];
            if (json_is_integer(v))
                snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
            assert_string_equal(json_is_integer(v) ? num : json_string_value(v), e->value);
        }
    }
    if (f->kind == SCH_OBJECT) {
        size_t n = 0;
        for (const sch_field *c = f->fields; c->name; c++)
            n++;
        assert_int_equal(json_object_size(at(s, "properties")), n);
        for (const sch_field *c = f->fields; c->name; c++) {
            char sub[512];
            snprintf(sub, sizeof sub, "%s.%s", where, c->name);
            compare(c, json_object_get(at(s, "properties"), c->name), sub);
        }
    }
    if (f->kind == SCH_ARRAY) compare(f->items, at(s, "items"), where);
    /* the rules, in order, with their message, fieldPath and reason */
    size_t nr = 0;
    for (const sch_rule *r = f->rules; r && r->cel; r++, nr++) {
        json_t *got = json_array_get(at(s, "x-kubernetes-validations"), nr);
        if (!got) fail_msg("%s: rule %zu missing from the CRD", where, nr);
        assert_string_equal(str_at(got, "rule"), r->cel);
        assert_string_equal(str_at(got, "message"), r->message);
        if (r->field_path) assert_string_equal(str_at(got, "fieldPath"), r->field_path);
        if (r->reason) assert_string_equal(str_at(got, "reason"), r->reason);
    }
    assert_int_equal(json_array_size(at(s, "x-kubernetes-validations")), nr);
    if (f->max_len && f->kind == SCH_STRING)
        assert_int_equal(json_integer_value(at(s, "maxLength")), f->max_len);
    if (f->kind == SCH_STRMAP && f->max_props)
        assert_int_equal(json_integer_value(at(s, "maxProperties")), f->max_props);
}

/* A structural schema (apiextensions.k8s.io/v1): every node has a type, except
 * int-or-string nodes which must not; preserve-unknown-fields only with type object and no
 * properties; a default validates against its node's type; array items and map values are
 * schemas too. Rules reach only bounded lists, maps and strings (the cost estimate is
 * computed from maxItems / maxProperties / maxLength). */
/* the field names the rules in force here select (".routes", "r.backends" -> routes, backends) */
static bool named_by_rules(json_t *rules, const char *field)
{
    size_t i, n = strlen(field);
    json_t *r;
    json_array_foreach(rules, i, r)
    {
        const char *t = str_at(r, "rule");
        for (const char *p = t ? strchr(t, '.') : NULL; p; p = strchr(p + 1, '.'))
            if (!strncmp(p + 1, field, n) &&
                !(p[1 + n] == '_' || (p[1 + n] >= 'a' && p[1 + n] <= 'z') ||
                  (p[1 + n] >= 'A' && p[1 + n] <= 'Z')))
                return true;
    }
    return false;
}

static void structural_at(json_t *s, const char *where, const char *field, json_t *rules);

static void structural(json_t *s, const char *where, json_t *rules)
{
    structural_at(s, where, NULL, rules);
}

static void structural_at(json_t *s, const char *where, const char *field, json_t *rules)
{
    const char *type = str_at(s, "type");
    if (json_is_true(at(s, "x-kubernetes-int-or-string"))) {
        if (type) fail_msg("%s: int-or-string with a type", where);
        return;
    }
    if (!type) fail_msg("%s: no type", where);
    json_t *own = at(s, "x-kubernetes-validations");
    json_t *in_force = json_array();
    if (rules) json_array_extend(in_force, rules);
    if (own) json_array_extend(in_force, own);
    bool reached = field && named_by_rules(in_force, field);
    json_t *d = at(s, "default");
    if (d) {
        bool ok = (!strcmp(type, "string") && json_is_string(d)) ||
                  (!strcmp(type, "integer") && json_is_integer(d)) ||
                  (!strcmp(type, "number") && json_is_number(d)) ||
                  (!strcmp(type, "boolean") && json_is_boolean(d)) ||
                  (!strcmp(type, "array") && json_is_array(d)) ||
                  (!strcmp(type, "object") && json_is_object(d));
        if (!ok) fail_msg("%s: default does not match type %s", where, type);
        json_t *en = at(s, "enum");
        if (en && json_is_string(d)) {
            bool found = false;
            size_t i;
            json_t *e;
            json_array_foreach(en, i, e)
            {
                found = found || json_equal(e, d);
            }
            if (!found) fail_msg("%s: default is not one of the enum", where);
        }
    }
    if (json_is_true(at(s, "x-kubernetes-preserve-unknown-fields")) &&
        (strcmp(type, "object") || at(s, "properties")))
        fail_msg("%s: preserve-unknown-fields on a non-free node", where);
    char sub[1024];
    const char *k;
    json_t *v;
    json_object_foreach(at(s, "properties"), k, v)
    {
        snprintf(sub, sizeof sub, "%s.%s", where, k);
        structural_at(v, sub, k, in_force);
    }
    if (!strcmp(type, "array")) {
        snprintf(sub, sizeof sub, "%s[]", where);
        if (reached && !at(s, "maxItems")) fail_msg("%s: reached by a rule, no maxItems", where);
        if (reached && !strcmp(str_at(at(s, "items"), "type"), "string") &&
            !at(s, "items/maxLength"))
            fail_msg("%s: strings reached by a rule, no maxLength", where);
        structural(at(s, "items"), sub, in_force);
    }
    json_t *ap = at(s, "additionalProperties");
    if (ap) {
        snprintf(sub, sizeof sub, "%s{}", where);
        if (reached && (!at(s, "maxProperties") || !at(ap, "maxLength")))
            fail_msg("%s: reached by a rule, no maxProperties / maxLength", where);
        structural(ap, sub, in_force);
    }
    json_decref(in_force);
}

static void test_crd_structure(void **state)
{
    (void)state;
    json_t *docs = parse_crds();
    assert_int_equal(json_array_size(docs), 2);
    json_t *gw = json_array_get(docs, 0), *mcp = json_array_get(docs, 1);
    assert_string_equal(str_at(gw, "apiVersion"), "apiextensions.k8s.io/v1");
    assert_string_equal(str_at(gw, "kind"), "CustomResourceDefinition");
    assert_string_equal(str_at(gw, "metadata/name"), "llmgateways.ctxgate.io");
    assert_string_equal(str_at(gw, "spec/group"), "ctxgate.io");
    assert_string_equal(str_at(gw, "spec/scope"), "Namespaced");
    assert_string_equal(str_at(gw, "spec/names/plural"), "llmgateways");
    assert_string_equal(str_at(gw, "spec/names/shortNames/0"), "llmgw");
    assert_string_equal(str_at(mcp, "metadata/name"), "modelcontextprotocols.ctxgate.io");
    assert_string_equal(str_at(mcp, "spec/names/shortNames/0"), "mcp");
    assert_string_equal(str_at(mcp, "spec/names/kind"), "ModelContextProtocol");
    json_t *v = at(gw, "spec/versions/0");
    assert_string_equal(str_at(v, "name"), "v1alpha1");
    assert_true(json_is_true(at(v, "served")) && json_is_true(at(v, "storage")));
    assert_true(json_is_object(at(v, "subresources/status")));
    assert_int_equal(json_object_size(at(v, "subresources/status")), 0);
    assert_string_equal(str_at(v, "additionalPrinterColumns/0/name"), "Ready");
    assert_string_equal(str_at(v, "additionalPrinterColumns/1/name"), "Endpoint");
    assert_string_equal(str_at(v, "additionalPrinterColumns/1/jsonPath"),
                        ".status.gatewayEndpoint");
    assert_string_equal(str_at(v, "additionalPrinterColumns/2/jsonPath"),
                        ".spec.modelTargets[*].name");
    assert_string_equal(str_at(v, "additionalPrinterColumns/3/jsonPath"), ".status.activeRoutes");
    assert_string_equal(str_at(v, "additionalPrinterColumns/4/type"), "date");
    assert_string_equal(str_at(mcp, "spec/versions/0/additionalPrinterColumns/0/name"), "Ready");
    assert_string_equal(str_at(mcp, "spec/versions/0/additionalPrinterColumns/1/jsonPath"),
                        ".spec.storage.type");
    assert_string_equal(str_at(mcp, "spec/versions/0/additionalPrinterColumns/2/type"), "integer");
    assert_string_equal(str_at(mcp, "spec/versions/0/additionalPrinterColumns/3/type"), "date");
    assert_string_equal(str_at(gw, "spec/names/categories/0"), "ctxgate");

    json_t *s = at(v, "schema/openAPIV3Schema");
    assert_string_equal(str_at(s, "type"), "object");
    assert_string_equal(str_at(s, "required/0"), "spec");
    json_t *spec = at(s, "properties/spec/properties");
    assert_int_equal(json_integer_value(at(spec, "listener/properties/port/default")), 8080);
    assert_int_equal(json_integer_value(at(spec, "listener/properties/port/maximum")), 65535);
    assert_string_equal(str_at(spec, "modelTargets/items/properties/type/enum/7"), "Mock");
    assert_string_equal(str_at(spec, "modelTargets/items/required/0"), "name");
    assert_true(json_is_true(at(spec, "modelTargets/items/properties/config/properties/parameters/"
                                      "x-kubernetes-preserve-unknown-fields")));
    assert_int_equal(json_integer_value(
                         at(spec, "routes/items/properties/failover/properties/retryOn/default/0")),
                     429);
    assert_string_equal(str_at(spec, "routes/items/properties/pathPrefix/default"), "/v1");
    json_t *status = at(s, "properties/status/properties");
    assert_string_equal(str_at(status, "conditions/items/required/1"), "status");
    assert_string_equal(str_at(status, "conditions/items/properties/lastTransitionTime/format"),
                        "date-time");
    assert_string_equal(str_at(status, "modelHealth/items/properties/state/enum/2"), "Unhealthy");
    json_t *ms = at(mcp, "spec/versions/0/schema/openAPIV3Schema/properties");
    assert_string_equal(
        str_at(ms, "spec/properties/storage/properties/config/properties/keyPrefix/default"),
        "ctx:");
    assert_string_equal(str_at(ms, "status/properties/currentActiveSessions/type"), "integer");
    assert_string_equal(str_at(ms, "status/properties/storageProvisioned/type"), "boolean");

    structural(s, "LLMGateway", NULL);
    structural(at(mcp, "spec/versions/0/schema/openAPIV3Schema"), "ModelContextProtocol", NULL);
    assert_string_equal(str_at(spec, "modelTargets/x-kubernetes-list-type"), "map");
    assert_string_equal(str_at(spec, "modelTargets/x-kubernetes-list-map-keys/0"), "name");
    assert_int_equal(json_integer_value(at(spec, "modelTargets/maxItems")), 64);
    assert_string_equal(
        str_at(spec, "modelTargets/items/properties/aliases/x-kubernetes-list-type"), "set");
    assert_string_equal(str_at(status, "conditions/x-kubernetes-list-map-keys/0"), "type");
    assert_string_equal(str_at(spec, "deployment/properties/imagePullPolicy/enum/2"), "Never");
    assert_int_equal(json_integer_value(at(spec, "deployment/properties/autoscaling/properties/"
                                                 "targetCPUUtilizationPercentage/default")),
                     80);
    assert_string_equal(str_at(s, "properties/metadata/type"), "object");
    assert_null(at(s, "properties/metadata/properties"));
    compare(sch_field_find(&sch_llmgateway_doc, "spec"), at(s, "properties/spec"),
            "LLMGateway.spec");
    compare(sch_field_find(&sch_llmgateway_doc, "status"), at(s, "properties/status"),
            "LLMGateway.status");
    compare(sch_field_find(&sch_mcp_doc, "spec"), at(ms, "spec"), "ModelContextProtocol.spec");
    compare(sch_field_find(&sch_mcp_doc, "status"), at(ms, "status"),
            "ModelContextProtocol.status");
    json_decref(docs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_crd_structure)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
