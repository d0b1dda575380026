/* config.c — where the Kubernetes client finds its API server and credentials: a kubeconfig
 * (YAML or JSON; current context, cluster, user; *-data fields base64, file fields relative to the
 * kubeconfig's directory) or the in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, the
 * token, ca.crt and namespace files). Errors name the file and the field at fault. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/evp.h>
#include <yaml.h>

#include "config/load_internal.h"
#include "core/buf.h"
#include "kube/kube_internal.h"

#define KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
#define KUBE_FILE_MAX (16u << 20)

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* the whole file (NUL-terminated) or NULL with errno set */
static char *read_file(const char *path, size_t *len_out)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    buf b = BUF_INIT;
    char chunk[8192];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + n > KUBE_FILE_MAX) {
            buf_free(&b);
            fclose(f);
            errno = EFBIG;
            return NULL;
        }
        buf_append(&b, chunk, n);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        buf_free(&b);
        errno = EIO;
        return NULL;
    }
    if (!b.data) {
        if (len_out) *len_out = 0;
        return kube_strdup("");
    }
    if (len_out) *len_out = b.len;
    return buf_steal(&b);
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
    size_t i = 0;
    while (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')
        i++;
    if (i) memmove(s, s + i, n - i + 1);
}

/* path relative to dir unless absolute (or dir is NULL); caller frees */
static char *resolve(const char *dir, const char *path)
{
    if (path[0] == '/' || !dir || !dir[0]) return kube_strdup(path);
    size_t n = strlen(dir) + strlen(path) + 2;
    char *p = malloc(n);
    if (!p) abort();
    snprintf(p, n, "%s/%s", dir, path);
    return p;
}

/* base64 (newlines and spaces allowed) to a NUL-terminated string; NULL when invalid or when it
 * decodes to something holding a NUL byte (PEM never does) */
static char *b64_decode_text(const char *in)
{
    size_t n = strlen(in);
    unsigned char *out = malloc(n / 4 * 3 + 4);
    if (!out) abort();
    EVP_ENCODE_CTX *ctx = EVP_ENCODE_CTX_new();
    if (!ctx) abort();
    EVP_DecodeInit(ctx);
    int len1 = 0, len2 = 0;
    int rc = EVP_DecodeUpdate(ctx, out, &len1, (const unsigned char *)in, (int)n);
    if (rc >= 0 && EVP_DecodeFinal(ctx, out + len1, &len2) == 1) {
        EVP_ENCODE_CTX_free(ctx);
        size_t total = (size_t)len1 + (size_t)len2;
        out[total] = 0;
        if (memchr(out, 0, total)) {
            free(out);
            return NULL;
        }
        return (char *)out;
    }
    EVP_ENCODE_CTX_free(ctx);
    free(out);
    return NULL;
}

typedef struct parse_ctx {
    const char *file; /* for messages */
    const char *dir;
    char *err;
    size_t errlen;
} parse_ctx;

/* a string field: NULL when absent or null; -1 when present with another type */
static int get_string(parse_ctx *p, const json_t *o, const char *key, const char *where,
                      const char **out)
{
    *out = NULL;
    const json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) {
        set_err(p->err, p->errlen, "%s: %s.%s: must be a string", p->file, where, key);
        return -1;
    }
    *out = json_string_value(v);
    if (!(*out)[0]) *out = NULL;
    return 0;
}

/* "PEM" from key-data (base64) or key (a file path); *out stays NULL when neither is set */
static int get_pem(parse_ctx *p, const json_t *o, const char *where, const char *data_key,
                   const char *file_key, char **out)
{
    const char *data, *file;
    if (get_string(p, o, data_key, where, &data) || get_string(p, o, file_key, where, &file))
        return -1;
    if (data) {
        *out = b64_decode_text(data);
        if (!*out) {
            set_err(p->err, p->errlen, "%s: %s.%s: not valid base64 text", p->file, where,
                    data_key);
            return -1;
        }
        if (!strstr(*out, "-----BEGIN")) {
            set_err(p->err, p->errlen, "%s: %s.%s: does not decode to PEM", p->file, where,
                    data_key);
            free(*out);
            *out = NULL;
            return -1;
        }
        return 0;
    }
    if (file) {
        char *path = resolve(p->dir, file);
        *out = read_file(path, NULL);
        if (!*out) {
            set_err(p->err, p->errlen, "%s: %s.%s: cannot read %s: %s", p->file, where, file_key,
                    path, strerror(errno));
            free(path);
            return -1;
        }
        free(path);
        if (!strstr(*out, "-----BEGIN")) {
            set_err(p->err, p->errlen, "%s: %s.%s: %s is not PEM", p->file, where, file_key, file);
            free(*out);
            *out = NULL;
            return -1;
        }
    }
    return 0;
}

/* the entry of list `key` whose "name" is name: its index, or -1 */
static int find_named(const json_t *root, const char *key, const char *name)
{
    const json_t *a = json_object_get(root, key);
    size_t i;
    const json_t *e;
    json_array_foreach(a, i, e)
    {
        const char *n = json_string_value(json_object_get(e, "name"));
        if (n && !strcmp(n, name)) return (int)i;
    }
    return -1;
}

static int parse_root(parse_ctx *p, const json_t *root, const char *want_context, kube_config *out)
{
    const char *file = p->file;
    if (!json_is_object(root)) {
        set_err(p->err, p->errlen, "%s: not a kubeconfig (expected a mapping at the top)", file);
        return -1;
    }
    for (const char *const *k = (const char *const[]){"contexts", "clusters", "users", NULL}; *k;
         k++) {
        const json_t *v = json_object_get(root, *k);
        if (v && !json_is_null(v) && !json_is_array(v)) {
            set_err(p->err, p->errlen, "%s: %s: must be a list", file, *k);
            return -1;
        }
    }
    const char *ctx_name = want_context;
    if (!ctx_name || !ctx_name[0]) {
        if (get_string(p, root, "current-context", "(top)", &ctx_name)) return -1;
        if (!ctx_name) {
            set_err(p->err, p->errlen, "%s: current-context: not set (and no context was chosen)",
                    file);
            return -1;
        }
    }
    int ci = find_named(root, "contexts", ctx_name);
    if (ci < 0) {
        set_err(p->err, p->errlen, "%s: %s: no context named \"%s\" in contexts", file,
                want_context && want_context[0] ? "context" : "current-context", ctx_name);
        return -1;
    }
    char where[96];
    snprintf(where, sizeof where, "contexts[%d].context", ci);
    const json_t *ctx =
        json_object_get(json_array_get(json_object_get(root, "contexts"), ci), "context");
    if (!json_is_object(ctx)) {
        set_err(p->err, p->errlen, "%s: %s: missing", file, where);
        return -1;
    }
    const char *cluster_name, *user_name, *ns;
    if (get_string(p, ctx, "cluster", where, &cluster_name) ||
        get_string(p, ctx, "user", where, &user_name) ||
        get_string(p, ctx, "namespace", where, &ns))
        return -1;
    if (!cluster_name) {
        set_err(p->err, p->errlen, "%s: %s.cluster: missing", file, where);
        return -1;
    }
    int li = find_named(root, "clusters", cluster_name);
    if (li < 0) {
        set_err(p->err, p->errlen, "%s: %s.cluster: no cluster named \"%s\" in clusters", file,
                where, cluster_name);
        return -1;
    }
    snprintf(where, sizeof where, "clusters[%d].cluster", li);
    const json_t *cl =
        json_object_get(json_array_get(json_object_get(root, "clusters"), li), "cluster");
    if (!json_is_object(cl)) {
        set_err(p->err, p->errlen, "%s: %s: missing", file, where);
        return -1;
    }
    const char *server;
    if (get_string(p, cl, "server", where, &server)) return -1;
    if (!server) {
        set_err(p->err, p->errlen, "%s: %s.server: missing", file, where);
        return -1;
    }
    if (strncmp(server, "https://", 8) && strncmp(server, "http://", 7)) {
        set_err(p->err, p->errlen, "%s: %s.server: \"%s\" is not an http:// or https:// URL", file,
                where, server);
        return -1;
    }
    const json_t *insecure = json_object_get(cl, "insecure-skip-tls-verify");
    if (insecure && !json_is_null(insecure) && !json_is_boolean(insecure)) {
        set_err(p->err, p->errlen, "%s: %s.insecure-skip-tls-verify: must be true or false", file,
                where);
        return -1;
    }
    out->insecure = json_is_true(insecure);
    if (get_pem(p, cl, where, "certificate-authority-data", "certificate-authority", &out->ca_pem))
        return -1;
    out->server = kube_strdup(server);
    size_t sl = strlen(out->server);
    while (sl && out->server[sl - 1] == '/')
        out->server[--sl] = 0;

    if (user_name) {
        int ui = find_named(root, "users", user_name);
        if (ui < 0) {
            set_err(p->err, p->errlen,
                    "%s: contexts[%d].context.user: no user named \"%s\" in users", file, ci,
                    user_name);
            return -1;
        }
        snprintf(where, sizeof where, "users[%d].user", ui);
        const json_t *u =
            json_object_get(json_array_get(json_object_get(root, "users"), ui), "user");
        if (u && !json_is_null(u) && !json_is_object(u)) {
            set_err(p->err, p->errlen, "%s: %s: must be a mapping", file, where);
            return -1;
        }
        const char *token, *token_file;
        if (get_string(p, u, "token", where, &token) ||
            get_string(p, u, "tokenFile", where, &token_file))
            return -1;
        if (get_pem(p, u, where, "client-certificate-data", "client-certificate", &out->cert_pem) ||
            get_pem(p, u, where, "client-key-data", "client-key", &out->key_pem))
            return -1;
        if (!out->cert_pem != !out->key_pem) {
            set_err(p->err, p->errlen, "%s: %s.%s: missing (the client certificate needs its key)",
                    file, where, out->cert_pem ? "client-key-data" : "client-certificate-data");
            return -1;
        }
        if (token) {
            out->token = kube_strdup(token);
        } else if (token_file) {
            out->token_file = resolve(p->dir, token_file);
            out->token = read_file(out->token_file, NULL);
            if (!out->token) {
                set_err(p->err, p->errlen, "%s: %s.tokenFile: cannot read %s: %s", file, where,
                        out->token_file, strerror(errno));
                return -1;
            }
            trim(out->token);
        }
        if (!out->token && !out->cert_pem) {
            const char *unsupported = json_object_get(u, "exec")            ? "exec"
                                      : json_object_get(u, "auth-provider") ? "auth-provider"
                                      : json_object_get(u, "username")      ? "username"
                                                                            : NULL;
            if (unsupported) {
                set_err(p->err, p->errlen,
                        "%s: %s.%s: not supported (use a token, tokenFile or a client "
                        "certificate)",
                        file, where, unsupported);
                return -1;
            }
        }
    }
    out->namespace = kube_strdup(ns ? ns : "default");
    return 0;
}

static int parse_text(const char *text, size_t len, const char *label, const char *dir,
                      const char *context, kube_config *out, char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    yaml_parser_t parser;
    yaml_document_t doc;
    if (!yaml_parser_initialize(&parser)) abort();
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    if (!yaml_parser_load(&parser, &doc)) {
        set_err(err, errlen, "%s: line %zu: %s", label, parser.problem_mark.line + 1,
                parser.problem ? parser.problem : "invalid YAML");
        yaml_parser_delete(&parser);
        return -1;
    }
    yaml_node_t *rootn = yaml_document_get_root_node(&doc);
    json_t *root = rootn ? cfg_yaml_node_to_json(&doc, rootn) : NULL;
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    if (!root) {
        set_err(err, errlen, "%s: empty or not a kubeconfig", label);
        return -1;
    }
    parse_ctx p = {label, dir, err, errlen};
    int rc = parse_root(&p, root, context, out);
    json_decref(root);
    if (rc) {
        kube_config_free(out);
        return -1;
    }
    out->source = kube_strdup(label);
    return 0;
}

int kube_config_parse(const char *text, const char *dir, const char *context, kube_config *out,
                      char *err, size_t errlen)
{
    return parse_text(text, strlen(text), "kubeconfig", dir, context, out, err, errlen);
}

static int load_file(const char *path, const char *context, kube_config *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    size_t len = 0;
    char *text = read_file(path, &len);
    if (!text) {
        set_err(err, errlen, "%s: cannot read the kubeconfig: %s", path, strerror(errno));
        return -1;
    }
    char *dir = kube_strdup(path);
    char *slash = strrchr(dir, '/');
    if (slash == dir)
        dir[1] = 0;
    else if (slash)
        *slash = 0;
    else
        strcpy(dir, ".");
    int rc = parse_text(text, len, path, dir, context, out, err, errlen);
    free(dir);
    free(text);
    return rc;
}

static int load_in_cluster(const char *host, const char *port, kube_config *out, char *err,
                           size_t errlen)
{
    memset(out, 0, sizeof *out);
    const char *dir = getenv("CTXGATE_SERVICEACCOUNT_DIR");
    if (!dir || !dir[0]) dir = KUBE_SA_DIR;
    bool v6 = strchr(host, ':') && host[0] != '[';
    size_t n = strlen(host) + strlen(port) + 16;
    out->server = malloc(n);
    if (!out->server) abort();
    snprintf(out->server, n, v6 ? "https://[%s]:%s" : "https://%s:%s", host, port);
    out->token_file = resolve(dir, "token");
    out->token = read_file(out->token_file, NULL);
    if (!out->token) {
        set_err(err, errlen, "in-cluster: %s: cannot read the service-account token: %s",
                out->token_file, strerror(errno));
        kube_config_free(out);
        return -1;
    }
    trim(out->token);
    if (!out->token[0]) {
        set_err(err, errlen, "in-cluster: %s: the service-account token is empty", out->token_file);
        kube_config_free(out);
        return -1;
    }
    char *ca = resolve(dir, "ca.crt");
    out->ca_pem = read_file(ca, NULL);
    if (!out->ca_pem || !strstr(out->ca_pem, "-----BEGIN")) {
        set_err(err, errlen, "in-cluster: %s: %s", ca,
                out->ca_pem ? "not a PEM certificate" : strerror(errno));
        free(ca);
        kube_config_free(out);
        return -1;
    }
    free(ca);
    char *nsf = resolve(dir, "namespace");
    out->namespace = read_file(nsf, NULL);
    free(nsf);
    if (out->namespace) trim(out->namespace);
    if (!out->namespace || !out->namespace[0]) {
        free(out->namespace);
        out->namespace = kube_strdup("default");
    }
    out->source = kube_strdup("in-cluster");
    return 0;
}

int kube_config_load(const char *path, const char *context, kube_config *out, char *err,
                     size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (path && path[0]) return load_file(path, context, out, err, errlen);
    const char *kc = getenv("KUBECONFIG");
    if (kc && kc[0]) {
        /* the first non-empty entry of the list */
        const char *s = kc;
        while (*s == ':')
            s++;
        size_t n = strcspn(s, ":");
        if (n) {
            char *first = malloc(n + 1);
            if (!first) abort();
            memcpy(first, s, n);
            first[n] = 0;
            int rc = load_file(first, context, out, err, errlen);
            free(first);
            return rc;
        }
    }
    const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
    if (host && host[0] && port && port[0]) return load_in_cluster(host, port, out, err, errlen);
    const char *home = getenv("HOME");
    if (!home || !home[0]) {
        set_err(err, errlen,
                "no Kubernetes configuration: no --kubeconfig, no $KUBECONFIG, not in a cluster "
                "(KUBERNETES_SERVICE_HOST unset) and no $HOME for ~/.kube/config");
        return -1;
    }
    char def[PATH_MAX];
    snprintf(def, sizeof def, "%s/.kube/config", home);
    return load_file(def, context, out, err, errlen);
}

void kube_config_free(kube_config *c)
{
    if (!c) return;
    free(c->server);
    if (c->token) OPENSSL_cleanse(c->token, strlen(c->token));
    free(c->token);
    free(c->token_file);
    free(c->ca_pem);
    free(c->cert_pem);
    if (c->key_pem) OPENSSL_cleanse(c->key_pem, strlen(c->key_pem));
    free(c->key_pem);
    free(c->namespace);
    free(c->source);
    memset(c, 0, sizeof *c);
}
