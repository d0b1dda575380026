/* path.c — the resources ctxgate uses (group, version, plural, kind, scope) and their REST paths:
 * /api/v1/... for the core group, /apis/GROUP/VERSION/... otherwise, every piece percent-encoded.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/buf.h"
#include "kube/kube_internal.h"

const kube_gvr KUBE_LLMGATEWAYS = {"ctxgate.io", "v1alpha1", "llmgateways", "LLMGateway", true};
const kube_gvr KUBE_MCPS = {"ctxgate.io", "v1alpha1", "modelcontextprotocols",
                            "ModelContextProtocol", true};
const kube_gvr KUBE_SECRETS = {"", "v1", "secrets", "Secret", true};
const kube_gvr KUBE_SERVICEACCOUNTS = {"", "v1", "serviceaccounts", "ServiceAccount", true};
const kube_gvr KUBE_SERVICES = {"", "v1", "services", "Service", true};
const kube_gvr KUBE_PVCS = {"", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true};
const kube_gvr KUBE_PODS = {"", "v1", "pods", "Pod", true};
const kube_gvr KUBE_ENDPOINTS = {"", "v1", "endpoints", "Endpoints", true};
const kube_gvr KUBE_DEPLOYMENTS = {"apps", "v1", "deployments", "Deployment", true};
const kube_gvr KUBE_STATEFULSETS = {"apps", "v1", "statefulsets", "StatefulSet", true};
const kube_gvr KUBE_ROLES = {"rbac.authorization.k8s.io", "v1", "roles", "Role", true};
const kube_gvr KUBE_ROLEBINDINGS = {"rbac.authorization.k8s.io", "v1", "rolebindings",
                                    "RoleBinding", true};
const kube_gvr KUBE_HPAS = {"autoscaling", "v2", "horizontalpodautoscalers",
                            "HorizontalPodAutoscaler", true};
const kube_gvr KUBE_PDBS = {"policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true};
const kube_gvr KUBE_EVENTS = {"events.k8s.io", "v1", "events", "Event", true};
const kube_gvr KUBE_LEASES = {"coordination.k8s.io", "v1", "leases", "Lease", true};
const kube_gvr KUBE_CRDS = {"apiextensions.k8s.io", "v1", "customresourcedefinitions",
                            "CustomResourceDefinition", false};

char *kube_escape(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    buf b = BUF_INIT;
    buf_reserve(&b, strlen(s) + 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        unsigned char ch = *p;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            buf_append(&b, p, 1);
        } else {
            char e[3] = {'%', hex[ch >> 4], hex[ch & 15]};
            buf_append(&b, e, 3);
        }
    }
    if (!b.data) return kube_strdup("");
    return buf_steal(&b);
}

static void add_piece(buf *b, const char *piece)
{
    char *e = kube_escape(piece);
    buf_puts(b, "/");
    buf_puts(b, e);
    free(e);
}

char *kube_path(const kube_gvr *r, const char *ns, const char *name, const char *sub)
{
    buf b = BUF_INIT;
    if (!r->group || !r->group[0]) {
        buf_puts(&b, "/api");
    } else {
        buf_puts(&b, "/apis");
        add_piece(&b, r->group);
    }
    add_piece(&b, r->version);
    if (ns && r->namespaced) {
        buf_puts(&b, "/namespaces");
        add_piece(&b, ns);
    }
    add_piece(&b, r->resource);
    if (name) {
        add_piece(&b, name);
        if (sub) add_piece(&b, sub);
    }
    return buf_steal(&b);
}

/* apiVersion strings: a fixed table for the constants above, a small cache for other gvrs */
#define API_VERSION_SLOTS 64
static struct {
    const kube_gvr *r;
    char *v;
} api_versions[API_VERSION_SLOTS];
static pthread_mutex_t api_versions_lock = PTHREAD_MUTEX_INITIALIZER;

const char *kube_api_version(const kube_gvr *r)
{
    if (!r->group || !r->group[0]) return r->version;
    pthread_mutex_lock(&api_versions_lock);
    const char *out = NULL;
    for (size_t i = 0; i < API_VERSION_SLOTS && !out; i++) {
        if (api_versions[i].r == r) {
            out = api_versions[i].v;
        } else if (!api_versions[i].r) {
            size_t n = strlen(r->group) + strlen(r->version) + 2;
            char *v = malloc(n);
            if (!v) abort();
            snprintf(v, n, "%s/%s", r->group, r->version);
            api_versions[i].r = r;
            api_versions[i].v = v;
            out = v;
        } else if (!strcmp(api_versions[i].r->group, r->group) &&
                   !strcmp(api_versions[i].r->version, r->version)) {
            out = api_versions[i].v; /* same apiVersion, another gvr value */
        }
    }
    pthread_mutex_unlock(&api_versions_lock);
    /* more than 64 distinct apiVersions: not a case ctxgate has; fall back to the version */
    return out ? out : r->version;
}
