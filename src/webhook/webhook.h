/* webhook.h — `ctxgate webhook`: the validating admission webhook. One loop serves HTTPS
 * (POST /validate with an admission.k8s.io/v1 AdmissionReview, GET /healthz) and runs the kube
 * client that fetches the Secrets and ModelContextProtocols a reviewed object references, so the
 * cross-object checks CEL cannot express (a Secret or MCP that does not exist) run before the
 * object is stored. The certificate files are re-read when they change (cert-manager rotates
 * them): a listener with the new certificate joins the port, the old one drains. */
#ifndef CTXGATE_WEBHOOK_WEBHOOK_H
#define CTXGATE_WEBHOOK_WEBHOOK_H

typedef struct webhook_opts {
    const char *tls_cert_file, *tls_key_file; /* PEM files, required */
    const char *address;                      /* default 0.0.0.0 */
    int port;                                 /* default 9443 */
    const char *kubeconfig;                   /* NULL = $KUBECONFIG, in-cluster, ~/.kube/config */
} webhook_opts;

/* Runs until SIGTERM/SIGINT; returns the exit status (1 when it cannot start). */
int webhook_run(const webhook_opts *o);

#endif
