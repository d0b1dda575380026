/* owned.c — desired objects of owned.h: what an LLMGateway / ModelContextProtocol becomes in the
 * cluster, and the subset comparison / merge used to update them without fighting the API
 * server's defaults. */
#include <stdio.h>
#include <string.h>

#include "controller/owned.h"

void owned_list_free(owned_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        json_decref(l->v[i].obj);
    l->n = 0;
}

static void push(owned_list *l, const char *kind, json_t *obj)
{
    if (!obj) return;
    if (l->n == sizeof l->v / sizeof l->v[0]) {
        json_decref(obj);
        return;
    }
    l->v[l->n].kind = kind;
    l->v[l->n].obj = obj;
    l->n++;
}

json_t *owned_labels(const char *instance, const char *component)
{
    return json_pack("{s:s, s:s, s:s, s:s}", "app.kubernetes.io/name", "ctxgate",
                     "app.kubernetes.io/instance", instance, "app.kubernetes.io/component",
                     component, "app.kubernetes.io/managed-by", OWNED_MANAGED_BY);
}

static json_t *selector_labels(const char *instance, const char *component)
{
    return json_pack("{s:s, s:s, s:s}", "app.kubernetes.io/name", "ctxgate",
                     "app.kubernetes.io/instance", instance, "app.kubernetes.io/component",
                     component);
}

json_t *owned_owner_ref(const char *api_version, const char *kind, const char *name,
                        const char *uid)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:b, s:b}", "apiVersion", api_version, "kind", kind,
                     "name", name, "uid", uid ? uid : "", "controller", 1, "blockOwnerDeletion", 1);
}

static json_t *meta(const char *name, const char *ns, const char *instance, const char *component,
                    json_t *owner)
{
    return json_pack("{s:s, s:s, s:o, s:[o]}", "name", name, "namespace", ns, "labels",
                     owned_labels(instance, component), "ownerReferences", owner);
}

static json_t *gw_owner(const owned_gateway *g)
{
    return owned_owner_ref("ctxgate.io/v1alpha1", "LLMGateway", g->name, g->uid);
}

static json_t *gw_meta(const owned_gateway *g, const char *name)
{
    return meta(name, g->ns, g->name, "gateway", gw_owner(g));
}

static const json_t *deployment_spec(const owned_gateway *g)
{
    return g->spec ? json_object_get(g->spec, "deployment") : NULL;
}

bool owned_gateway_autoscaled(const owned_gateway *g)
{
    return json_is_object(json_object_get(deployment_spec(g), "autoscaling"));
}

static json_t *sa_name(const owned_gateway *g)
{
    char n[300];
    snprintf(n, sizeof n, "%s-gateway", g->name);
    return json_string(n);
}

static json_t *service_account(const owned_gateway *g)
{
    json_t *n = sa_name(g);
    json_t *o = json_pack("{s:s, s:s, s:o}", "apiVersion", "v1", "kind", "ServiceAccount",
                          "metadata", gw_meta(g, json_string_value(n)));
    json_decref(n);
    return o;
}

static json_t *names_array(const char **v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(v[i]));
    return a;
}

static json_t *rule(const char *group, const char *resource, json_t *names)
{
    return json_pack("{s:[s], s:[s], s:o, s:[s,s,s]}", "apiGroups", group, "resources", resource,
                     "resourceNames", names, "verbs", "get", "list", "watch");
}

json_t *owned_role(const owned_gateway *g)
{
    json_t *rules = json_array();
    json_array_append_new(rules, rule("ctxgate.io", "llmgateways", json_pack("[s]", g->name)));
    /* an empty resourceNames would grant every object: no rule at all then */
    if (g->n_mcps)
        json_array_append_new(
            rules, rule("ctxgate.io", "modelcontextprotocols", names_array(g->mcps, g->n_mcps)));
    if (g->n_secrets)
        json_array_append_new(rules, rule("", "secrets", names_array(g->secrets, g->n_secrets)));
    json_t *n = sa_name(g);
    json_t *o =
        json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "rbac.authorization.k8s.io/v1", "kind",
                  "Role", "metadata", gw_meta(g, json_string_value(n)), "rules", rules);
    json_decref(n);
    return o;
}

static json_t *role_binding(const owned_gateway *g)
{
    json_t *n = sa_name(g);
    const char *name = json_string_value(n);
    json_t *o = json_pack("{s:s, s:s, s:o, s:{s:s, s:s, s:s}, s:[{s:s, s:s, s:s}]}", "apiVersion",
                          "rbac.authorization.k8s.io/v1", "kind", "RoleBinding", "metadata",
                          gw_meta(g, name), "roleRef", "apiGroup", "rbac.authorization.k8s.io",
                          "kind", "Role", "name", name, "subjects", "kind", "ServiceAccount",
                          "name", name, "namespace", g->ns);
    json_decref(n);
    return o;
}

static json_t *container_security(void)
{
    return json_pack("{s:b, s:b, s:b, s:i, s:{s:[s]}}", "allowPrivilegeEscalation", 0,
                     "readOnlyRootFilesystem", 1, "runAsNonRoot", 1, "runAsUser", 65532,
                     "capabilities", "drop", "ALL");
}

static json_t *pod_security(int uid)
{
    return json_pack("{s:b, s:i, s:i, s:i, s:{s:s}}", "runAsNonRoot", 1, "runAsUser", uid,
                     "runAsGroup", uid, "fsGroup", uid, "seccompProfile", "type", "RuntimeDefault");
}

static json_t *http_probe(const char *path, int period, int failures)
{
    return json_pack("{s:{s:s, s:s}, s:i, s:i}", "httpGet", "path", path, "port", "http",
                     "periodSeconds", period, "failureThreshold", failures);
}

json_t *owned_deployment(const owned_gateway *g)
{
    const json_t *d = deployment_spec(g);
    const char *image = json_string_value(json_object_get(d, "image"));
    if (!image) image = g->image;
    json_t *ports =
        json_pack("[{s:s, s:i, s:s}]", "name", "http", "containerPort", g->port, "protocol", "TCP");
    if (g->admin_port && g->admin_port != g->port)
        json_array_append_new(ports, json_pack("{s:s, s:i, s:s}", "name", "admin", "containerPort",
                                               g->admin_port, "protocol", "TCP"));
    json_t *c = json_pack("{s:s, s:s, s:[s,s,s,s,s,s], s:o, s:o, s:o, s:o, s:[{s:s, s:s}]}", "name",
                          "gateway", "image", image, "args", "serve", "--kube", "--gateway",
                          g->name, "--namespace", g->ns, "ports", ports,
                          /* both on the listener port: the admin listener answers /healthz only and
                           * binds 127.0.0.1 by default, where the kubelet cannot reach it */
                          "readinessProbe", http_probe("/readyz", 5, 3), "livenessProbe",
                          http_probe("/healthz", 10, 3), "securityContext", container_security(),
                          "volumeMounts", "name", "tmp", "mountPath", "/tmp");
    const char *pull = json_string_value(json_object_get(d, "imagePullPolicy"));
    if (pull) json_object_set_new(c, "imagePullPolicy", json_string(pull));
    const json_t *res = json_object_get(d, "resources");
    json_object_set_new(c, "resources", json_is_object(res) ? json_deep_copy(res) : json_object());

    json_t *sa = sa_name(g);
    json_t *pod =
        json_pack("{s:o, s:b, s:o, s:[o], s:[{s:s, s:{}}]}", "serviceAccountName", sa,
                  "automountServiceAccountToken", 1, "securityContext", pod_security(65532),
                  "containers", c, "volumes", "name", "tmp", "emptyDir");
    const json_t *ns = json_object_get(d, "nodeSelector");
    if (json_is_object(ns) && json_object_size(ns))
        json_object_set_new(pod, "nodeSelector", json_deep_copy(ns));
    const json_t *tol = json_object_get(d, "tolerations");
    if (json_is_array(tol) && json_array_size(tol))
        json_object_set_new(pod, "tolerations", json_deep_copy(tol));

    json_t *tmeta = json_pack("{s:o}", "labels", owned_labels(g->name, "gateway"));
    const json_t *ann = json_object_get(d, "podAnnotations");
    if (json_is_object(ann) && json_object_size(ann))
        json_object_set_new(tmeta, "annotations", json_deep_copy(ann));

    json_t *spec =
        json_pack("{s:{s:o}, s:{s:o, s:o}}", "selector", "matchLabels",
                  selector_labels(g->name, "gateway"), "template", "metadata", tmeta, "spec", pod);
    if (!owned_gateway_autoscaled(g)) {
        const json_t *r = json_object_get(d, "replicas");
        json_object_set_new(spec, "replicas",
                            json_integer(json_is_integer(r) ? json_integer_value(r) : 1));
    }
    return json_pack("{s:s, s:s, s:o, s:o}", "apiVersion", "apps/v1", "kind", "Deployment",
                     "metadata", gw_meta(g, g->name), "spec", spec);
}

static json_t *service(const owned_gateway *g)
{
    json_t *ports = json_pack("[{s:s, s:i, s:s, s:s}]", "name", "http", "port", g->port,
                              "targetPort", "http", "protocol", "TCP");
    if (g->admin_port && g->admin_port != g->port)
        json_array_append_new(ports,
                              json_pack("{s:s, s:i, s:s, s:s}", "name", "admin", "port",
                                        g->admin_port, "targetPort", "admin", "protocol", "TCP"));
    return json_pack("{s:s, s:s, s:o, s:{s:s, s:o, s:o}}", "apiVersion", "v1", "kind", "Service",
                     "metadata", gw_meta(g, g->name), "spec", "type", "ClusterIP", "selector",
                     selector_labels(g->name, "gateway"), "ports", ports);
}

static json_int_t int_or(const json_t *o, const char *key, json_int_t def)
{
    const json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? json_integer_value(v) : def;
}

static json_t *hpa(const owned_gateway *g)
{
    const json_t *a = json_object_get(deployment_spec(g), "autoscaling");
    json_int_t min = int_or(a, "minReplicas", 1);
    json_int_t max = int_or(a, "maxReplicas", min);
    json_int_t cpu = int_or(a, "targetCPUUtilizationPercentage", 80);
    return json_pack("{s:s, s:s, s:o, s:{s:{s:s, s:s, s:s}, s:I, s:I, s:[{s:s, "
                     "s:{s:s, s:{s:s, s:I}}}]}}",
                     "apiVersion", "autoscaling/v2", "kind", "HorizontalPodAutoscaler", "metadata",
                     gw_meta(g, g->name), "spec", "scaleTargetRef", "apiVersion", "apps/v1", "kind",
                     "Deployment", "name", g->name, "minReplicas", min, "maxReplicas", max,
                     "metrics", "type", "Resource", "resource", "name", "cpu", "target", "type",
                     "Utilization", "averageUtilization", cpu);
}

static json_t *pdb(const owned_gateway *g)
{
    return json_pack("{s:s, s:s, s:o, s:{s:i, s:{s:o}}}", "apiVersion", "policy/v1", "kind",
                     "PodDisruptionBudget", "metadata", gw_meta(g, g->name), "spec", "minAvailable",
                     1, "selector", "matchLabels", selector_labels(g->name, "gateway"));
}

void owned_gateway_objects(const owned_gateway *g, owned_list *out)
{
    out->n = 0;
    push(out, "ServiceAccount", service_account(g));
    push(out, "Role", owned_role(g));
    push(out, "RoleBinding", role_binding(g));
    push(out, "Deployment", owned_deployment(g));
    push(out, "Service", service(g));
    if (owned_gateway_autoscaled(g)) {
        push(out, "HorizontalPodAutoscaler", hpa(g));
        push(out, "PodDisruptionBudget", pdb(g));
    }
}

/* ---- the provisioned Redis of a ModelContextProtocol ---- */

#define REDIS_UID 999 /* the redis user of the official image */

void owned_store_objects(const owned_store *s, owned_list *out)
{
    out->n = 0;
    char name[300];
    snprintf(name, sizeof name, "%s-redis", s->name);
    json_t *owner = owned_owner_ref("ctxgate.io/v1alpha1", "ModelContextProtocol", s->name, s->uid);
    json_t *args =
        json_pack("[s,s,s,s,s]", "redis-server", "--appendonly", "yes", "--dir", "/data");
    json_t *c = json_pack(
        "{s:s, s:s, s:o, s:[{s:s, s:i, s:s}], s:{s:{s:s}, s:i}, s:o, s:[{s:s, s:s}]}", "name",
        "redis", "image", s->image ? s->image : "redis:7-alpine", "args", args, "ports", "name",
        "redis", "containerPort", 6379, "protocol", "TCP", "readinessProbe", "tcpSocket", "port",
        "redis", "periodSeconds", 5, "securityContext",
        json_pack("{s:b, s:b, s:b, s:i, s:{s:[s]}}", "allowPrivilegeEscalation", 0,
                  "readOnlyRootFilesystem", 1, "runAsNonRoot", 1, "runAsUser", REDIS_UID,
                  "capabilities", "drop", "ALL"),
        "volumeMounts", "name", "data", "mountPath", "/data");
    const char *pw_name = json_string_value(json_object_get(s->password_ref, "name"));
    const char *pw_key = json_string_value(json_object_get(s->password_ref, "key"));
    if (pw_name && pw_key) {
        /* the store's passwordRef becomes requirepass; $(VAR) is expanded by the kubelet */
        json_array_append_new(args, json_string("--requirepass"));
        json_array_append_new(args, json_string("$(REDIS_PASSWORD)"));
        json_object_set_new(c, "env",
                            json_pack("[{s:s, s:{s:{s:s, s:s}}}]", "name", "REDIS_PASSWORD",
                                      "valueFrom", "secretKeyRef", "name", pw_name, "key", pw_key));
    }
    json_t *sts = json_pack(
        "{s:s, s:s, s:o, s:{s:s, s:i, s:{s:o}, s:{s:{s:o}, s:{s:o, s:[o]}}, "
        "s:[{s:{s:s}, s:{s:[s], s:{s:{s:s}}}}]}}",
        "apiVersion", "apps/v1", "kind", "StatefulSet", "metadata",
        meta(name, s->ns, s->name, "redis", json_incref(owner)), "spec", "serviceName", name,
        "replicas", 1, "selector", "matchLabels", selector_labels(s->name, "redis"), "template",
        "metadata", "labels", owned_labels(s->name, "redis"), "spec", "securityContext",
        pod_security(REDIS_UID), "containers", c, "volumeClaimTemplates", "metadata", "name",
        "data", "spec", "accessModes", "ReadWriteOnce", "resources", "requests", "storage", "1Gi");
    push(out, "StatefulSet", sts);
    json_t *svc =
        json_pack("{s:s, s:s, s:o, s:{s:s, s:o, s:[{s:s, s:i, s:s, s:s}]}}", "apiVersion", "v1",
                  "kind", "Service", "metadata", meta(name, s->ns, s->name, "redis", owner), "spec",
                  "clusterIP", "None", "selector", selector_labels(s->name, "redis"), "ports",
                  "name", "redis", "port", 6379, "targetPort", "redis", "protocol", "TCP");
    push(out, "Service", svc);
}

/* ---- comparison and merge ---- */

bool owned_subset(const json_t *desired, const json_t *actual)
{
    if (!actual) return false;
    if (json_is_object(desired)) {
        if (!json_is_object(actual)) return false;
        const char *k;
        const json_t *v;
        json_object_foreach((json_t *)desired, k, v)
        {
            if (!owned_subset(v, json_object_get(actual, k))) return false;
        }
        return true;
    }
    if (json_is_array(desired)) {
        if (!json_is_array(actual) || json_array_size(actual) != json_array_size(desired))
            return false;
        for (size_t i = 0; i < json_array_size(desired); i++)
            if (!owned_subset(json_array_get(desired, i), json_array_get(actual, i))) return false;
        return true;
    }
    if (json_is_number(desired) && json_is_number(actual))
        return json_number_value(desired) == json_number_value(actual);
    return json_equal(desired, actual);
}

/* The top-level fields of an object that we own besides metadata. */
static const char *const owned_fields[] = {"spec", "rules", "roleRef", "subjects", NULL};

bool owned_needs_update(const json_t *desired, const json_t *actual)
{
    const json_t *dm = json_object_get(desired, "metadata");
    const json_t *am = json_object_get(actual, "metadata");
    if (!owned_subset(json_object_get(dm, "labels"), json_object_get(am, "labels"))) return true;
    if (!owned_subset(json_object_get(dm, "ownerReferences"),
                      json_object_get(am, "ownerReferences")))
        return true;
    for (size_t i = 0; owned_fields[i]; i++) {
        const json_t *d = json_object_get(desired, owned_fields[i]);
        if (d && !owned_subset(d, json_object_get(actual, owned_fields[i]))) return true;
    }
    return false;
}

static void deep_merge(json_t *dst, const json_t *src)
{
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)src, k, v)
    {
        json_t *cur = json_object_get(dst, k);
        if (json_is_object(v) && json_is_object(cur))
            deep_merge(cur, v);
        else
            json_object_set_new(dst, k, json_deep_copy(v));
    }
}

json_t *owned_merge_for_update(const json_t *desired, const json_t *actual)
{
    json_t *o = json_deep_copy(actual);
    json_object_del(o, "status");
    json_t *m = json_object_get(o, "metadata");
    if (!json_is_object(m)) {
        m = json_object();
        json_object_set_new(o, "metadata", m);
    }
    json_object_del(m, "managedFields");
    const json_t *dm = json_object_get(desired, "metadata");
    json_t *labels = json_object_get(m, "labels");
    if (!json_is_object(labels)) {
        labels = json_object();
        json_object_set_new(m, "labels", labels);
    }
    json_object_update(labels, json_object_get(dm, "labels"));
    json_object_set_new(m, "ownerReferences",
                        json_deep_copy(json_object_get(dm, "ownerReferences")));
    for (size_t i = 0; owned_fields[i]; i++) {
        const json_t *d = json_object_get(desired, owned_fields[i]);
        if (!d) continue;
        json_t *cur = json_object_get(o, owned_fields[i]);
        if (json_is_object(d) && json_is_object(cur))
            deep_merge(cur, d);
        else
            json_object_set_new(o, owned_fields[i], json_deep_copy(d));
    }
    /* immutable after creation: a StatefulSet's claim templates, selector and serviceName (the
     * API server's copies carry defaults ours lack; sending ours back would be refused) */
    const char *kind = json_string_value(json_object_get(desired, "kind"));
    if (kind && strcmp(kind, "StatefulSet") == 0) {
        const json_t *as = json_object_get(actual, "spec");
        json_t *os = json_object_get(o, "spec");
        static const char *const keep[] = {"volumeClaimTemplates", "selector", "serviceName"};
        for (size_t i = 0; i < 3; i++) {
            const json_t *v = json_object_get(as, keep[i]);
            if (v && json_is_object(os)) json_object_set_new(os, keep[i], json_deep_copy(v));
        }
    }
    return o;
}
