/* test_review.c — AdmissionReview handling (webhook/review.h): parsing and its errors, which
 * reviews are checked, the verdict for a good object, a bad spec (field path in the message), a
 * missing reference (the validator's message) and an MCP's own error (a warning for a gateway),
 * and the response document. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "webhook/review.h"

static const char gateway_fmt[] =
    "{\"apiVersion\":\"ctxgate.io/v1alpha1\",\"kind\":\"LLMGateway\",\"metadata\":{\"name\":"
    "\"gw\"},\"spec\":{\"listener\":{\"port\":8080},\"modelTargets\":[{\"name\":\"m\",\"type\":"
    "\"Mock\"}],\"routes\":[{\"name\":\"r\",%s\"backends\":[{\"target\":\"%s\"}]}],"
    "\"authentication\":{\"type\":\"APIKey\",\"apiKeys\":[{\"name\":\"k\",\"secretRef\":"
    "{\"name\":\"keys\",\"key\":\"k\"}}]}}}";

static char *review_text(const char *op, const char *kind, const char *object, const char *old)
{
    char *t = NULL;
    int n = asprintf(&t,
                     "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\","
                     "\"request\":{\"uid\":\"u-1\",\"kind\":{\"group\":\"ctxgate.io\","
                     "\"version\":\"v1alpha1\",\"kind\":\"%s\"},\"namespace\":\"ai\","
                     "\"operation\":\"%s\",\"object\":%s,\"oldObject\":%s}}",
                     kind, op, object, old);
    assert_true(n > 0);
    return t;
}

static char *gateway(const char *extra, const char *target)
{
    char *t = NULL;
    assert_true(asprintf(&t, gateway_fmt, extra, target) > 0);
    return t;
}

static json_t *secret(const char *name)
{
    json_t *s = json_pack("{s:s, s:s, s:{s:s, s:s}, s:{s:s}}", "apiVersion", "v1", "kind", "Secret",
                          "metadata", "name", name, "namespace", "ai", "data", "k", "c2stdGVzdA==");
    assert_non_null(s);
    return s;
}

static void parse_ok(const char *text, wh_review *r)
{
    char err[256];
    int rc = wh_review_parse(text, strlen(text), r, err, sizeof err);
    if (rc) fprintf(stderr, "%s\n", err);
    assert_int_equal(rc, 0);
}

static void test_parse_errors(void **state)
{
    (void)state;
    static const struct {
        const char *body, *want;
    } cases[] = {
        {"not json", "not JSON"},
        {"[1]", "not a JSON object"},
        {"{\"apiVersion\":\"admission.k8s.io/v1beta1\",\"kind\":\"AdmissionReview\"}",
         "apiVersion"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"Pod\"}", "kind: expected"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\"}", "request:"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{}}",
         "request.uid"},
        {"{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":"
         "{\"uid\":\"x\",\"operation\":\"CREATE\"}}",
         "request.kind.kind"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        wh_review r;
        char err[256] = "";
        assert_int_equal(wh_review_parse(cases[i].body, strlen(cases[i].body), &r, err, sizeof err),
                         -1);
        if (!strstr(err, cases[i].want)) fprintf(stderr, "case %zu: %s\n", i, err);
        assert_non_null(strstr(err, cases[i].want));
        assert_null(r.doc);
    }
}

static void test_which_reviews_are_checked(void **state)
{
    (void)state;
    char *gw = gateway("", "m"), *gw2 = gateway("", "other");
    char *gw_del = NULL;
    assert_true(asprintf(&gw_del, "{\"kind\":\"LLMGateway\",\"metadata\":{\"name\":\"gw\","
                                  "\"deletionTimestamp\":\"2026-12-03T10:00:00Z\"}}") > 0);
    static const char *const ops[] = {"CREATE", "UPDATE", "DELETE", "UPDATE", "UPDATE"};
    const char *objs[] = {gw, gw, "null", gw, gw_del};
    const char *olds[] = {"null", gw2, gw, gw, gw};
    const bool want[] = {true, true, false, false, false};
    for (size_t i = 0; i < 5; i++) {
        char *t = review_text(ops[i], "LLMGateway", objs[i], olds[i]);
        wh_review r;
        parse_ok(t, &r);
        const char *why = NULL;
        assert_int_equal(wh_review_needs_check(&r, &why), want[i]);
        assert_true(want[i] ? why == NULL : why != NULL);
        wh_review_free(&r);
        free(t);
    }
    /* the namespace of the request fills the object's when absent */
    char *t = review_text("CREATE", "LLMGateway", gw, "null");
    wh_review r;
    parse_ok(t, &r);
    assert_string_equal(r.uid, "u-1");
    assert_string_equal(r.ns, "ai");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(r.object, "metadata"), "namespace")),
        "ai");
    wh_review_free(&r);
    free(t);
    /* another kind, and a status write, pass unchecked */
    t = review_text("CREATE", "ConfigMap", "{}", "null");
    parse_ok(t, &r);
    assert_false(wh_review_needs_check(&r, NULL));
    wh_review_free(&r);
    free(t);
    free(gw);
    free(gw2);
    free(gw_del);
}

static void verdict_for(const char *object, json_t *const *found, size_t n, wh_verdict *v)
{
    char *t = review_text("CREATE", "LLMGateway", object, "null");
    wh_review r;
    parse_ok(t, &r);
    assert_true(wh_review_needs_check(&r, NULL));
    wh_validate(&r, found, n, v);
    wh_review_free(&r);
    free(t);
}

static void test_verdicts(void **state)
{
    (void)state;
    json_t *keys = secret("keys");
    wh_verdict v;
    char *good = gateway("", "m");
    verdict_for(good, &keys, 1, &v);
    assert_true(v.allowed);
    assert_null(v.message);
    char *resp = wh_response_build("u-1", &v);
    json_t *doc = json_loads(resp, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(doc, "apiVersion")),
                        "admission.k8s.io/v1");
    assert_string_equal(json_string_value(json_object_get(doc, "kind")), "AdmissionReview");
    json_t *re = json_object_get(doc, "response");
    assert_string_equal(json_string_value(json_object_get(re, "uid")), "u-1");
    assert_true(json_is_true(json_object_get(re, "allowed")));
    assert_null(json_object_get(re, "status"));
    json_decref(doc);
    free(resp);
    wh_verdict_free(&v);

    /* a bad spec: the field path in the message */
    char *bad = gateway("", "nope");
    verdict_for(bad, &keys, 1, &v);
    assert_false(v.allowed);
    assert_int_equal(v.code, 422);
    assert_string_equal(v.reason, "Invalid");
    assert_non_null(strstr(v.message, "LLMGateway ai/gw: spec.routes[0].backends[0].target"));
    resp = wh_response_build("u-2", &v);
    doc = json_loads(resp, 0, NULL);
    json_t *st = json_object_get(json_object_get(doc, "response"), "status");
    assert_int_equal(json_integer_value(json_object_get(st, "code")), 422);
    assert_string_equal(json_string_value(json_object_get(st, "reason")), "Invalid");
    assert_false(json_is_true(json_object_get(json_object_get(doc, "response"), "allowed")));
    json_decref(doc);
    free(resp);
    wh_verdict_free(&v);

    /* the Secret is not among the found objects: denied naming the reference */
    verdict_for(good, NULL, 0, &v);
    assert_false(v.allowed);
    assert_non_null(strstr(v.message, "spec.authentication.apiKeys[0].secretRef"));
    assert_non_null(strstr(v.message, "keys"));
    wh_verdict_free(&v);

    /* an MCP whose own Secret is missing: the gateway is allowed, with a warning about it */
    char *with_ctx = gateway("\"contextRef\":{\"name\":\"hist\"},", "m");
    json_t *mcp = json_loads(
        "{\"apiVersion\":\"ctxgate.io/v1alpha1\",\"kind\":\"ModelContextProtocol\","
        "\"metadata\":{\"name\":\"hist\",\"namespace\":\"ai\"},\"spec\":{\"storage\":{\"type\":"
        "\"Redis\",\"config\":{\"url\":\"redis://r:6379\",\"passwordRef\":{\"name\":\"pw\","
        "\"key\":\"k\"}}}}}",
        0, NULL);
    assert_non_null(mcp);
    json_t *found[2] = {keys, mcp};
    verdict_for(with_ctx, found, 2, &v);
    if (!v.allowed) fprintf(stderr, "%s\n", v.message);
    assert_true(v.allowed);
    assert_non_null(v.warnings);
    bool seen = false;
    for (size_t i = 0; i < json_array_size(v.warnings); i++) {
        const char *w = json_string_value(json_array_get(v.warnings, i));
        assert_true(strlen(w) <= 256);
        if (strstr(w, "ModelContextProtocol ai/hist") && strstr(w, "pw")) seen = true;
    }
    assert_true(seen);
    resp = wh_response_build("u-3", &v);
    assert_non_null(strstr(resp, "\"warnings\":["));
    free(resp);
    wh_verdict_free(&v);

    wh_verdict_deny(&v, 500, "InternalError", "cannot check Secret ai/keys");
    resp = wh_response_build("u-4", &v);
    assert_non_null(strstr(resp, "\"code\":500"));
    assert_non_null(strstr(resp, "cannot check Secret ai/keys"));
    free(resp);
    wh_verdict_free(&v);

    json_decref(mcp);
    json_decref(keys);
    free(good);
    free(bad);
    free(with_ctx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_which_reviews_are_checked),
        cmocka_unit_test(test_verdicts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
