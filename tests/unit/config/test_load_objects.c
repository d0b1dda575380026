/* test_load_objects.c — configuration from objects as the Kubernetes API returns them
 * (cfg_load_objects): the fields the API server adds are ignored, references resolve among the
 * objects given, and diagnostics name the object and the field path without meaningless lines. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "config_test.h"

static const char gateway_json[] =
    "{\"apiVersion\":\"ctxgate.io/v1alpha1\",\"kind\":\"LLMGateway\","
    "\"metadata\":{\"name\":\"gw\",\"namespace\":\"ai\",\"uid\":\"u-1\",\"resourceVersion\":\"42\","
    "\"generation\":3,\"creationTimestamp\":\"2026-12-03T10:00:00Z\",\"selfLink\":\"/x\","
    "\"deletionGracePeriodSeconds\":0,\"managedFields\":[{\"manager\":\"kubectl\"}],"
    "\"ownerReferences\":[{\"kind\":\"X\"}],\"finalizers\":[\"a/b\"]},"
    "\"spec\":{\"listener\":{\"port\":8080},"
    "\"modelTargets\":[{\"name\":\"m\",\"type\":\"Mock\"}],"
    "\"routes\":[{\"name\":\"r\",\"backends\":[{\"target\":\"m\"}]}],"
    "\"authentication\":{\"type\":\"APIKey\",\"apiKeys\":[{\"name\":\"k\","
    "\"secretRef\":{\"name\":\"keys\",\"key\":\"%s\"}}]}},"
    "\"status\":{\"somethingNew\":true,\"observedGeneration\":2}}";

static const char secret_json[] =
    "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"type\":\"Opaque\","
    "\"metadata\":{\"name\":\"keys\",\"namespace\":\"ai\",\"resourceVersion\":\"7\","
    "\"managedFields\":[]},\"data\":{\"key\":\"c2stdGVzdA==\"}}";

static json_t *parse(const char *fmt, const char *arg)
{
    char text[4096];
    snprintf(text, sizeof text, fmt, arg);
    json_error_t e;
    json_t *j = json_loads(text, 0, &e);
    assert_non_null(j);
    return j;
}

static void test_api_objects_load(void **state)
{
    (void)state;
    json_t *objs[2] = {parse(gateway_json, "key"), parse(secret_json, "")};
    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    int rc = cfg_load_objects(objs, NULL, 2, &s, &d);
    if (rc != 0) cfg_diags_print(stderr, &d);
    assert_int_equal(rc, 0);
    assert_int_equal(d.n_errors, 0);
    const cfg_gateway *gw = cfg_find_gateway(s, "gw");
    assert_non_null(gw);
    assert_string_equal(gw->namespace_, "ai");
    assert_int_equal(gw->n_targets, 1);
    cfg_snapshot_unref(s);
    cfg_diags_free(&d);
    json_decref(objs[0]);
    json_decref(objs[1]);
}

static void test_missing_reference_names_object_and_path(void **state)
{
    (void)state;
    json_t *objs[2] = {parse(gateway_json, "nope"), parse(secret_json, "")};
    cfg_diags d = {0};
    cfg_snapshot *s = NULL;
    assert_int_equal(cfg_load_objects(objs, NULL, 2, &s, &d), -1);
    assert_null(s);
    char *text = cfgt_render(&d, 0);
    /* no line number: the object's label, then the field path */
    assert_non_null(strstr(text, "LLMGateway ai/gw: spec.authentication.apiKeys[0].secretRef"));
    assert_non_null(strstr(text, "nope"));
    free(text);
    cfg_diags_free(&d);

    /* a Secret that is not there: objects from the API get no hint about files */
    cfg_diags d1 = {0};
    assert_int_equal(cfg_load_objects(objs, NULL, 1, &s, &d1), -1);
    text = cfgt_render(&d1, 0);
    assert_non_null(strstr(text, "Secret \"keys\" not found in namespace \"ai\"\n"));
    assert_null(strstr(text, "kind: Secret document"));
    free(text);
    cfg_diags_free(&d1);

    /* a label given by the caller is used as is; a non-object is an error, not a crash */
    json_t *bad[2] = {objs[0], json_string("x")};
    const char *labels[2] = {"the gateway", "item 2"};
    cfg_diags d2 = {0};
    assert_int_equal(cfg_load_objects(bad, labels, 2, &s, &d2), -1);
    text = cfgt_render(&d2, 0);
    assert_non_null(strstr(text, "item 2: not a JSON object"));
    assert_non_null(strstr(text, "the gateway: spec.authentication"));
    free(text);
    cfg_diags_free(&d2);
    json_decref(bad[1]);
    json_decref(objs[0]);
    json_decref(objs[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_api_objects_load),
        cmocka_unit_test(test_missing_reference_names_object_and_path),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
