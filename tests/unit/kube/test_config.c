/* test_config.c — kubeconfig parsing (contexts, token, tokenFile, certificate data and files
 * relative to the kubeconfig, insecure-skip-tls-verify), the error messages that name the field,
 * and the in-cluster configuration through $CTXGATE_SERVICEACCOUNT_DIR. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kube/kube.h"

static char tmpdir[256];

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static char data[65536];
    size_t n = fread(data, 1, sizeof data - 1, f);
    fclose(f);
    data[n] = 0;
    return strdup(data);
}

static char *data_path(const char *name)
{
    const char *src = getenv("CTXGATE_SOURCE_DIR");
    static char p[1024];
    snprintf(p, sizeof p, "%s/tests/data/kube/%s", src ? src : ".", name);
    return p;
}

static char *b64(const char *s)
{
    size_t n = strlen(s);
    char *out = malloc(n * 2 + 8);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)n);
    return out;
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **state)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/kube-config-test-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state)
{
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_token_and_current_context(void **state)
{
    const char *text = "apiVersion: v1\n"
                       "kind: Config\n"
                       "current-context: dev\n"
                       "clusters:\n"
                       "- name: prod\n"
                       "  cluster: {server: https://prod.example:6443}\n"
                       "- name: local\n"
                       "  cluster:\n"
                       "    server: https://127.0.0.1:6443/\n"
                       "    insecure-skip-tls-verify: true\n"
                       "contexts:\n"
                       "- name: prod\n"
                       "  context: {cluster: prod, user: admin}\n"
                       "- name: dev\n"
                       "  context: {cluster: local, user: dev, namespace: team-a}\n"
                       "users:\n"
                       "- name: admin\n"
                       "  user: {token: admin-token}\n"
                       "- name: dev\n"
                       "  user: {token: dev-token}\n";
    kube_config c;
    char err[256] = "";
    assert_int_equal(kube_config_parse(text, "/x", NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://127.0.0.1:6443");
    assert_string_equal(c.token, "dev-token");
    assert_null(c.token_file);
    assert_true(c.insecure);
    assert_null(c.ca_pem);
    assert_string_equal(c.namespace, "team-a");
    kube_config_free(&c);

    assert_int_equal(kube_config_parse(text, "/x", "prod", &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://prod.example:6443");
    assert_string_equal(c.token, "admin-token");
    assert_false(c.insecure);
    assert_string_equal(c.namespace, "default");
    kube_config_free(&c);

    assert_int_equal(kube_config_parse(text, "/x", "nope", &c, err, sizeof err), -1);
    assert_string_equal(err, "kubeconfig: context: no context named \"nope\" in contexts");
}

static void test_cert_data_and_json(void **state)
{
    char *crt = slurp(data_path("client.crt")), *key = slurp(data_path("client.key"));
    char *crt64 = b64(crt), *key64 = b64(key);
    char text[16384];
    snprintf(text, sizeof text,
             "{\"current-context\":\"kind\",\"clusters\":[{\"name\":\"kind\",\"cluster\":{"
             "\"server\":\"https://[::1]:40000\",\"certificate-authority-data\":\"%s\"}}],"
             "\"contexts\":[{\"name\":\"kind\",\"context\":{\"cluster\":\"kind\",\"user\":"
             "\"kind\"}}],\"users\":[{\"name\":\"kind\",\"user\":{\"client-certificate-data\":"
             "\"%s\",\"client-key-data\":\"%s\"}}]}",
             crt64, crt64, key64);
    kube_config c;
    char err[256] = "";
    assert_int_equal(kube_config_parse(text, NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://[::1]:40000");
    assert_string_equal(c.ca_pem, crt);
    assert_string_equal(c.cert_pem, crt);
    assert_string_equal(c.key_pem, key);
    assert_null(c.token);
    kube_config_free(&c);
    free(crt);
    free(key);
    free(crt64);
    free(key64);
}

static void test_files_relative_to_kubeconfig(void **state)
{
    char *crt = slurp(data_path("client.crt")), *key = slurp(data_path("client.key"));
    char sub[300];
    snprintf(sub, sizeof sub, "%s/certs", tmpdir);
    assert_int_equal(mkdir(sub, 0700), 0);
    write_file(sub, "ca.crt", crt);
    write_file(sub, "me.crt", crt);
    write_file(sub, "me.key", key);
    write_file(tmpdir, "token", "file-token\n");
    write_file(tmpdir, "config",
               "current-context: c\n"
               "clusters: [{name: c, cluster: {server: 'https://k:443', certificate-authority: "
               "certs/ca.crt}}]\n"
               "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
               "users: [{name: u, user: {client-certificate: certs/me.crt, client-key: "
               "certs/me.key, tokenFile: token}}]\n");
    char path[300];
    snprintf(path, sizeof path, "%s/config", tmpdir);
    kube_config c;
    char err[512] = "";
    assert_int_equal(kube_config_load(path, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.ca_pem, crt);
    assert_string_equal(c.cert_pem, crt);
    assert_string_equal(c.key_pem, key);
    assert_string_equal(c.token, "file-token");
    char tf[300];
    snprintf(tf, sizeof tf, "%s/token", tmpdir);
    assert_string_equal(c.token_file, tf);
    assert_string_equal(c.source, path);
    kube_config_free(&c);

    /* $KUBECONFIG: the first file of the list */
    char list[700];
    snprintf(list, sizeof list, ":%s:/nonexistent", path);
    setenv("KUBECONFIG", list, 1);
    assert_int_equal(kube_config_load(NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.token, "file-token");
    kube_config_free(&c);
    unsetenv("KUBECONFIG");

    /* a missing key file: named with its field */
    write_file(tmpdir, "config2",
               "current-context: c\n"
               "clusters: [{name: c, cluster: {server: 'https://k:443'}}]\n"
               "contexts: [{name: c, context: {cluster: c, user: u}}]\n"
               "users: [{name: u, user: {client-certificate: certs/me.crt, client-key: /x}}]\n");
    snprintf(path, sizeof path, "%s/config2", tmpdir);
    assert_int_equal(kube_config_load(path, NULL, &c, err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want,
             "%s: users[0].user.client-key: cannot read /x: No such file or directory", path);
    assert_string_equal(err, want);
    free(crt);
    free(key);
}

static void expect_error(const char *text, const char *want)
{
    kube_config c;
    char err[512] = "";
    assert_int_equal(kube_config_parse(text, "/d", NULL, &c, err, sizeof err), -1);
    assert_string_equal(err, want);
    assert_null(c.server);
}

static void test_errors(void **state)
{
    expect_error("clusters: []\n", "kubeconfig: current-context: not set (and no context was "
                                   "chosen)");
    expect_error("current-context: a\ncontexts: [{name: a, context: {user: u}}]\n",
                 "kubeconfig: contexts[0].context.cluster: missing");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n",
                 "kubeconfig: contexts[0].context.cluster: no cluster named \"c\" in clusters");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                 "clusters: [{name: c, cluster: {insecure-skip-tls-verify: true}}]\n",
                 "kubeconfig: clusters[0].cluster.server: missing");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                 "clusters: [{name: c, cluster: {server: 'ftp://x'}}]\n",
                 "kubeconfig: clusters[0].cluster.server: \"ftp://x\" is not an http:// or "
                 "https:// URL");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n",
                 "kubeconfig: contexts[0].context.user: no user named \"u\" in users");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', "
                 "certificate-authority-data: '!!!'}}]\n",
                 "kubeconfig: clusters[0].cluster.certificate-authority-data: not valid base64 "
                 "text");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', "
                 "certificate-authority-data: aGVsbG8=}}]\n",
                 "kubeconfig: clusters[0].cluster.certificate-authority-data: does not decode "
                 "to PEM");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c, user: u}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x'}}]\n"
                 "users: [{name: u, user: {exec: {command: aws}}}]\n",
                 "kubeconfig: users[0].user.exec: not supported (use a token, tokenFile or a "
                 "client certificate)");
    expect_error("current-context: a\ncontexts: [{name: a, context: {cluster: c}}]\n"
                 "clusters: [{name: c, cluster: {server: 'https://x', "
                 "insecure-skip-tls-verify: maybe}}]\n",
                 "kubeconfig: clusters[0].cluster.insecure-skip-tls-verify: must be true or "
                 "false");
    expect_error("a: [\n", "kubeconfig: line 2: did not find expected node content");
}

static void test_in_cluster(void **state)
{
    char *crt = slurp(data_path("ca.crt"));
    char sa[300];
    snprintf(sa, sizeof sa, "%s/sa", tmpdir);
    assert_int_equal(mkdir(sa, 0700), 0);
    write_file(sa, "token", "sa-token\n");
    write_file(sa, "ca.crt", crt);
    write_file(sa, "namespace", "ctxgate-system");
    unsetenv("KUBECONFIG");
    setenv("CTXGATE_SERVICEACCOUNT_DIR", sa, 1);
    setenv("KUBERNETES_SERVICE_HOST", "fd00::1", 1);
    setenv("KUBERNETES_SERVICE_PORT", "443", 1);
    kube_config c;
    char err[512] = "";
    assert_int_equal(kube_config_load(NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://[fd00::1]:443");
    assert_string_equal(c.token, "sa-token");
    char tf[400];
    snprintf(tf, sizeof tf, "%s/token", sa);
    assert_string_equal(c.token_file, tf);
    assert_string_equal(c.ca_pem, crt);
    assert_string_equal(c.namespace, "ctxgate-system");
    assert_string_equal(c.source, "in-cluster");
    kube_config_free(&c);

    setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1", 1);
    char nsf[400];
    snprintf(nsf, sizeof nsf, "%s/namespace", sa);
    unlink(nsf);
    assert_int_equal(kube_config_load(NULL, NULL, &c, err, sizeof err), 0);
    assert_string_equal(c.server, "https://10.96.0.1:443");
    assert_string_equal(c.namespace, "default");
    kube_config_free(&c);

    unlink(tf);
    assert_int_equal(kube_config_load(NULL, NULL, &c, err, sizeof err), -1);
    char want[600];
    snprintf(want, sizeof want,
             "in-cluster: %s: cannot read the service-account token: No such file or directory",
             tf);
    assert_string_equal(err, want);
    unsetenv("KUBERNETES_SERVICE_HOST");
    unsetenv("KUBERNETES_SERVICE_PORT");
    unsetenv("CTXGATE_SERVICEACCOUNT_DIR");
    free(crt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_token_and_current_context),
        cmocka_unit_test(test_cert_data_and_json),
        cmocka_unit_test(test_files_relative_to_kubeconfig),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_in_cluster),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
