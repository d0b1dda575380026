/* test_owned.c — the desired objects of an LLMGateway / ModelContextProtocol: the Deployment
 * built from a gateway's spec, the Role's resourceNames, HPA and PDB only with autoscaling, the
 * provisioned Redis, labels and owner references on everything, and the subset comparison /
 * merge that updates objects without fighting the API server's defaults. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "controller/owned.h"

static json_t *spec_of(const char *text)
{
    json_error_t e;
    json_t *s = json_loads(text, 0, &e);
    assert_non_null(s);
    return s;
}

static owned_gateway gw(json_t *spec)
{
    static const char *mcps[] = {"chat-memory"};
    static const char *secrets[] = {"openai-key", "redis-pass"};
    return (owned_gateway){.name = "support",
                           .ns = "ai",
                           .uid = "uid-1",
                           .spec = spec,
                           .port = 8080,
                           .admin_port = 9090,
                           .image = "ctxgate:test",
                           .mcps = mcps,
                           .n_mcps = 1,
                           .secrets = secrets,
                           .n_secrets = 2};
}

/* a dotted path ("spec.ports.0.port"; a number indexes an array); keys holding dots are read
 * with json_object_get */
static json_t *at(const json_t *o, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof buf, "%s", path);
    json_t *cur = (json_t *)o;
    for (char *tok = strtok(buf, "."); tok && cur; tok = strtok(NULL, ".")) {
        if (tok[0] >= '0' && tok[0] <= '9')
            cur = json_array_get(cur, (size_t)atoi(tok));
        else
            cur = json_object_get(cur, tok);
    }
    return cur;
}

static const char *str_at(const json_t *o, const char *path)
{
    return json_string_value(at(o, path));
}

static void check_meta(const json_t *o, const char *name)
{
    assert_string_equal(str_at(o, "metadata.name"), name);
    assert_string_equal(str_at(o, "metadata.namespace"), "ai");
    const json_t *l = at(o, "metadata.labels");
    assert_string_equal(json_string_value(json_object_get(l, "app.kubernetes.io/name")), "ctxgate");
    assert_string_equal(json_string_value(json_object_get(l, "app.kubernetes.io/instance")),
                        "support");
    assert_string_equal(json_string_value(json_object_get(l, "app.kubernetes.io/component")),
                        "gateway");
    assert_string_equal(json_string_value(json_object_get(l, "app.kubernetes.io/managed-by")),
                        "ctxgate-controller");
    const json_t *ref = at(o, "metadata.ownerReferences.0");
    assert_string_equal(str_at(ref, "apiVersion"), "ctxgate.io/v1alpha1");
    assert_string_equal(str_at(ref, "kind"), "LLMGateway");
    assert_string_equal(str_at(ref, "name"), "support");
    assert_string_equal(str_at(ref, "uid"), "uid-1");
    assert_true(json_is_true(json_object_get(ref, "controller")));
    assert_true(json_is_true(json_object_get(ref, "blockOwnerDeletion")));
}

static void test_deployment(void **state)
{
    (void)state;
    json_t *spec = spec_of(
        "{\"deployment\": {\"replicas\": 3, \"resources\": {\"requests\": {\"cpu\": \"250m\"},"
        " \"limits\": {\"memory\": \"256Mi\"}}, \"nodeSelector\": {\"pool\": \"ai\"},"
        " \"tolerations\": [{\"key\": \"gpu\", \"operator\": \"Exists\"}],"
        " \"podAnnotations\": {\"prometheus.io/scrape\": \"true\"}}}");
    owned_gateway g = gw(spec);
    json_t *d = owned_deployment(&g);
    assert_non_null(d);
    check_meta(d, "support");
    assert_string_equal(str_at(d, "apiVersion"), "apps/v1");
    assert_int_equal(json_integer_value(at(d, "spec.replicas")), 3);
    const json_t *pod = at(d, "spec.template.spec");
    assert_string_equal(str_at(pod, "serviceAccountName"), "support-gateway");
    assert_string_equal(str_at(pod, "nodeSelector.pool"), "ai");
    assert_string_equal(str_at(pod, "tolerations.0.key"), "gpu");
    assert_true(json_is_true(at(pod, "securityContext.runAsNonRoot")));
    assert_string_equal(str_at(pod, "securityContext.seccompProfile.type"), "RuntimeDefault");
    const json_t *c = at(pod, "containers.0");
    assert_string_equal(str_at(c, "name"), "gateway");
    assert_string_equal(str_at(c, "image"), "ctxgate:test");
    const char *args[] = {"serve", "--kube", "--gateway", "support", "--namespace", "ai"};
    assert_int_equal(json_array_size(at(c, "args")), 6);
    for (int i = 0; i < 6; i++)
        assert_string_equal(json_string_value(json_array_get(at(c, "args"), (size_t)i)), args[i]);
    assert_string_equal(str_at(c, "ports.0.name"), "http");
    assert_int_equal(json_integer_value(at(c, "ports.0.containerPort")), 8080);
    assert_string_equal(str_at(c, "ports.1.name"), "admin");
    assert_int_equal(json_integer_value(at(c, "ports.1.containerPort")), 9090);
    assert_string_equal(str_at(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_string_equal(str_at(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_string_equal(str_at(c, "resources.requests.cpu"), "250m");
    assert_string_equal(str_at(c, "resources.limits.memory"), "256Mi");
    assert_true(json_is_true(at(c, "securityContext.readOnlyRootFilesystem")));
    assert_true(json_is_false(at(c, "securityContext.allowPrivilegeEscalation")));
    assert_string_equal(str_at(c, "securityContext.capabilities.drop.0"), "ALL");
    assert_int_equal(json_integer_value(at(c, "securityContext.runAsUser")), 65532);
    assert_string_equal(str_at(c, "volumeMounts.0.mountPath"), "/tmp");
    assert_non_null(at(pod, "volumes.0.emptyDir"));
    assert_string_equal(json_string_value(json_object_get(
                            at(d, "spec.template.metadata.annotations"), "prometheus.io/scrape")),
                        "true");
    /* the selector matches the pod labels */
    const json_t *sel = at(d, "spec.selector.matchLabels");
    const json_t *pl = at(d, "spec.template.metadata.labels");
    assert_true(owned_subset(sel, pl));
    json_decref(d);

    /* spec.deployment.image wins over the controller's flag; no spec.deployment: 1 replica */
    json_t *spec2 = spec_of("{\"deployment\": {\"image\": \"registry/ctxgate:2\"}}");
    g = gw(spec2);
    d = owned_deployment(&g);
    assert_string_equal(str_at(d, "spec.template.spec.containers.0.image"), "registry/ctxgate:2");
    assert_int_equal(json_integer_value(at(d, "spec.replicas")), 1);
    json_decref(d);
    json_decref(spec);
    json_decref(spec2);
}

static void test_pod_annotations(void **state)
{
    (void)state;
    json_t *spec = spec_of("{\"deployment\": {\"podAnnotations\": {\"a\": \"b\"}}}");
    owned_gateway g = gw(spec);
    json_t *d = owned_deployment(&g);
    const json_t *ann = at(d, "spec.template.metadata.annotations");
    assert_string_equal(json_string_value(json_object_get(ann, "a")), "b");
    json_decref(d);
    json_decref(spec);
}

static void test_role(void **state)
{
    (void)state;
    json_t *spec = spec_of("{}");
    owned_gateway g = gw(spec);
    json_t *r = owned_role(&g);
    check_meta(r, "support-gateway");
    const json_t *rules = json_object_get(r, "rules");
    assert_int_equal(json_array_size(rules), 3);
    assert_string_equal(str_at(rules, "0.resources.0"), "llmgateways");
    assert_string_equal(str_at(rules, "0.resourceNames.0"), "support");
    assert_int_equal(json_array_size(at(rules, "0.resourceNames")), 1);
    assert_string_equal(str_at(rules, "1.resources.0"), "modelcontextprotocols");
    assert_string_equal(str_at(rules, "1.resourceNames.0"), "chat-memory");
    assert_string_equal(str_at(rules, "2.apiGroups.0"), "");
    assert_string_equal(str_at(rules, "2.resources.0"), "secrets");
    assert_int_equal(json_array_size(at(rules, "2.resourceNames")), 2);
    assert_string_equal(str_at(rules, "2.resourceNames.1"), "redis-pass");
    assert_string_equal(str_at(rules, "2.verbs.0"), "get");
    assert_int_equal(json_array_size(at(rules, "2.verbs")), 3);
    json_decref(r);
    /* nothing referenced: no rule at all (an empty resourceNames would grant every object) */
    g.n_mcps = 0;
    g.n_secrets = 0;
    r = owned_role(&g);
    assert_int_equal(json_array_size(json_object_get(r, "rules")), 1);
    json_decref(r);
    json_decref(spec);
}

static bool has_kind(const owned_list *l, const char *kind)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i].kind, kind) == 0) return true;
    return false;
}

static void test_autoscaling(void **state)
{
    (void)state;
    json_t *plain = spec_of("{\"deployment\": {\"replicas\": 2}}");
    owned_gateway g = gw(plain);
    owned_list l;
    owned_gateway_objects(&g, &l);
    assert_int_equal(l.n, 5);
    assert_true(has_kind(&l, "ServiceAccount") && has_kind(&l, "Role") &&
                has_kind(&l, "RoleBinding") && has_kind(&l, "Deployment") &&
                has_kind(&l, "Service"));
    assert_false(has_kind(&l, "HorizontalPodAutoscaler") || has_kind(&l, "PodDisruptionBudget"));
    for (size_t i = 0; i < l.n; i++)
        check_meta(l.v[i].obj,
                   strstr(l.v[i].kind, "Role") || strcmp(l.v[i].kind, "ServiceAccount") == 0
                       ? "support-gateway"
                       : "support");
    owned_list_free(&l);

    json_t *auto_ = spec_of("{\"deployment\": {\"replicas\": 2, \"autoscaling\": "
                            "{\"minReplicas\": 2, \"maxReplicas\": 6, "
                            "\"targetCPUUtilizationPercentage\": 70}}}");
    g = gw(auto_);
    owned_gateway_objects(&g, &l);
    assert_int_equal(l.n, 7);
    for (size_t i = 0; i < l.n; i++) {
        const json_t *o = l.v[i].obj;
        if (strcmp(l.v[i].kind, "HorizontalPodAutoscaler") == 0) {
            assert_string_equal(str_at(o, "apiVersion"), "autoscaling/v2");
            assert_string_equal(str_at(o, "spec.scaleTargetRef.kind"), "Deployment");
            assert_string_equal(str_at(o, "spec.scaleTargetRef.name"), "support");
            assert_int_equal(json_integer_value(at(o, "spec.minReplicas")), 2);
            assert_int_equal(json_integer_value(at(o, "spec.maxReplicas")), 6);
            assert_int_equal(
                json_integer_value(at(o, "spec.metrics.0.resource.target.averageUtilization")), 70);
        } else if (strcmp(l.v[i].kind, "PodDisruptionBudget") == 0) {
            assert_string_equal(str_at(o, "apiVersion"), "policy/v1");
            assert_int_equal(json_integer_value(at(o, "spec.minAvailable")), 1);
        } else if (strcmp(l.v[i].kind, "Deployment") == 0) {
            /* the autoscaler owns the replica count */
            assert_null(at(o, "spec.replicas"));
        }
    }
    owned_list_free(&l);
    json_decref(plain);
    json_decref(auto_);
}

static void test_service(void **state)
{
    (void)state;
    json_t *spec = spec_of("{}");
    owned_gateway g = gw(spec);
    g.admin_port = 0;
    owned_list l;
    owned_gateway_objects(&g, &l);
    for (size_t i = 0; i < l.n; i++) {
        if (strcmp(l.v[i].kind, "Service") != 0) continue;
        const json_t *s = l.v[i].obj;
        assert_int_equal(json_array_size(at(s, "spec.ports")), 1);
        assert_int_equal(json_integer_value(at(s, "spec.ports.0.port")), 8080);
        assert_string_equal(json_string_value(json_object_get(at(s, "spec.selector"),
                                                              "app.kubernetes.io/instance")),
                            "support");
    }
    owned_list_free(&l);
    json_decref(spec);
}

static void test_store(void **state)
{
    (void)state;
    json_t *pw = spec_of("{\"name\": \"redis-pass\", \"key\": \"password\"}");
    owned_store s = {
        .name = "mem", .ns = "ai", .uid = "u2", .image = "redis:7-alpine", .password_ref = pw};
    owned_list l;
    owned_store_objects(&s, &l);
    assert_int_equal(l.n, 2);
    const json_t *sts = l.v[0].obj;
    assert_string_equal(l.v[0].kind, "StatefulSet");
    assert_string_equal(str_at(sts, "metadata.name"), "mem-redis");
    assert_string_equal(str_at(sts, "metadata.ownerReferences.0.kind"), "ModelContextProtocol");
    assert_int_equal(json_integer_value(at(sts, "spec.replicas")), 1);
    assert_string_equal(str_at(sts, "spec.serviceName"), "mem-redis");
    assert_string_equal(str_at(sts, "spec.volumeClaimTemplates.0.metadata.name"), "data");
    assert_string_equal(str_at(sts, "spec.volumeClaimTemplates.0.spec.resources.requests.storage"),
                        "1Gi");
    assert_true(json_is_true(at(sts, "spec.template.spec.securityContext.runAsNonRoot")));
    assert_string_equal(
        str_at(sts, "spec.template.spec.containers.0.env.0.valueFrom.secretKeyRef.name"),
        "redis-pass");
    const json_t *svc = l.v[1].obj;
    assert_string_equal(str_at(svc, "spec.clusterIP"), "None");
    assert_string_equal(str_at(svc, "metadata.name"), "mem-redis");
    owned_list_free(&l);
    json_decref(pw);
}

static void test_compare_and_merge(void **state)
{
    (void)state;
    json_t *spec = spec_of("{\"deployment\": {\"replicas\": 2}}");
    owned_gateway g = gw(spec);
    json_t *want = owned_deployment(&g);
    /* what the API server returns: our fields plus defaults, status, metadata */
    json_t *actual = json_deep_copy(want);
    json_object_set_new(json_object_get(actual, "metadata"), "resourceVersion", json_string("42"));
    json_object_set_new(json_object_get(actual, "spec"), "revisionHistoryLimit", json_integer(10));
    json_t *c0 = json_array_get(at(actual, "spec.template.spec.containers"), 0);
    json_object_set_new(c0, "terminationMessagePath", json_string("/dev/termination-log"));
    json_object_set_new(actual, "status", json_pack("{s:i}", "availableReplicas", 2));
    assert_false(owned_needs_update(want, actual));

    /* a spec change (replicas 2 -> 4) is seen and merged, defaults and resourceVersion kept */
    json_t *spec4 = spec_of("{\"deployment\": {\"replicas\": 4}}");
    g = gw(spec4);
    json_t *want4 = owned_deployment(&g);
    assert_true(owned_needs_update(want4, actual));
    json_t *put = owned_merge_for_update(want4, actual);
    assert_int_equal(json_integer_value(at(put, "spec.replicas")), 4);
    assert_int_equal(json_integer_value(at(put, "spec.revisionHistoryLimit")), 10);
    assert_string_equal(str_at(put, "metadata.resourceVersion"), "42");
    assert_null(json_object_get(put, "status"));
    assert_false(owned_needs_update(want4, put));

    /* a label someone removed is put back */
    json_object_del(at(actual, "metadata.labels"), "app.kubernetes.io/managed-by");
    assert_true(owned_needs_update(want, actual));

    /* arrays compare by length too */
    json_t *a = spec_of("[1,2]"), *b = spec_of("[1,2,3]");
    assert_false(owned_subset(a, b));
    assert_true(owned_subset(a, a));
    json_decref(a);
    json_decref(b);
    json_decref(put);
    json_decref(want4);
    json_decref(spec4);
    json_decref(want);
    json_decref(actual);
    json_decref(spec);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_deployment),
        cmocka_unit_test(test_pod_annotations),
        cmocka_unit_test(test_role),
        cmocka_unit_test(test_autoscaling),
        cmocka_unit_test(test_service),
        cmocka_unit_test(test_store),
        cmocka_unit_test(test_compare_and_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
