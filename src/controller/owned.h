/* owned.h — the desired state of the objects `ctxgate controller` owns, built from a resource
 * (pure functions: JSON in, JSON out, no I/O), and the comparison that decides whether an object
 * in the cluster needs an update. Names and labels follow docs/kubernetes.md:
 *   LLMGateway NAME: ServiceAccount + Role + RoleBinding NAME-gateway, Deployment NAME,
 *                    Service NAME, with spec.deployment.autoscaling HPA NAME + PDB NAME;
 *   ModelContextProtocol NAME with storage.provision: StatefulSet + headless Service NAME-redis.
 * Every object carries the four app.kubernetes.io labels and a controller ownerReference. */
#ifndef CTXGATE_CONTROLLER_OWNED_H
#define CTXGATE_CONTROLLER_OWNED_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define OWNED_MANAGED_BY "ctxgate-controller"
#define OWNED_SELECTOR "app.kubernetes.io/managed-by=ctxgate-controller"

/* What the gateway objects are built from. */
typedef struct owned_gateway {
    const char *name, *ns, *uid;
    const json_t *spec; /* the LLMGateway spec (defaults applied or not: both are read) */
    int port;           /* spec.listener.port (8080 when absent) */
    int admin_port;     /* spec.admin.port, 0 = none */
    const char *image;  /* the controller's --gateway-image; spec.deployment.image wins */
    const char **mcps;  /* ModelContextProtocols it references (unique) */
    size_t n_mcps;
    const char **secrets; /* Secrets it and those MCPs reference (unique) */
    size_t n_secrets;
} owned_gateway;

/* One object to create or update, with the resource it lives in (a kube_gvr kind name). */
typedef struct owned_obj {
    const char *kind; /* "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
                       * "HorizontalPodAutoscaler", "PodDisruptionBudget", "StatefulSet" */
    json_t *obj;      /* owned by the list */
} owned_obj;

typedef struct owned_list {
    owned_obj v[8];
    size_t n;
} owned_list;

void owned_list_free(owned_list *l);

/* The labels of an owned object: name ctxgate, instance, component, managed-by. */
json_t *owned_labels(const char *instance, const char *component);
/* {apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true} */
json_t *owned_owner_ref(const char *api_version, const char *kind, const char *name,
                        const char *uid);

/* Every object of a gateway, in creation order (ServiceAccount, Role, RoleBinding, Deployment,
 * Service, then HPA and PDB when spec.deployment.autoscaling is set). */
void owned_gateway_objects(const owned_gateway *g, owned_list *out);
/* Single builders (also used by the tests). */
json_t *owned_role(const owned_gateway *g);
json_t *owned_deployment(const owned_gateway *g);
bool owned_gateway_autoscaled(const owned_gateway *g);

typedef struct owned_store {
    const char *name, *ns, *uid;
    const char *image;          /* --redis-image */
    const json_t *password_ref; /* spec.storage.config.passwordRef {name, key} or NULL */
} owned_store;

/* StatefulSet NAME-redis (1 replica, PVC template "data" of 1Gi) and its headless Service. */
void owned_store_objects(const owned_store *s, owned_list *out);

/* True when every field of desired is in actual with the same value (objects compared key by
 * key recursively, arrays element by element with the same length): what the API server adds
 * (defaults, status, metadata it manages) is ignored, what we set is enforced. */
bool owned_subset(const json_t *desired, const json_t *actual);
/* Does actual need an update to match desired? Compares labels, ownerReferences and the
 * kind's owned content (spec; rules; roleRef + subjects). */
bool owned_needs_update(const json_t *desired, const json_t *actual);
/* The object to PUT: actual with desired's labels merged in, ownerReferences and the owned
 * content deep-merged over it (objects merged, arrays and scalars replaced), resourceVersion
 * kept. Caller frees. */
json_t *owned_merge_for_update(const json_t *desired, const json_t *actual);

#endif
