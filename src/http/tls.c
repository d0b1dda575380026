/* tls.c — OpenSSL glue for the HTTP listener: context from PEM text and memory-BIO sessions
 * (see tls.h). Errors are drained from OpenSSL's per-thread queue into the caller's message so
 * one failed handshake never leaks its reason into the next connection's diagnostics. */
#include "http/tls.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

struct http_tls_session {
    SSL *ssl;
    BIO *rbio; /* ciphertext from the peer, written by us, read by OpenSSL */
    BIO *wbio; /* ciphertext to the peer, written by OpenSSL, read by us */
    bool ready;
};

static void tls_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char reason[256] = "no detail from OpenSSL";
    if (e) ERR_error_string_n(e, reason, sizeof reason);
    ERR_clear_error();
    if (err && errlen) snprintf(err, errlen, "%s: %s", what, reason);
}

static int tls_alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                           const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char ours[] = "\x08http/1.1";
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ours, sizeof ours - 1, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK; /* e.g. an h2-only client: carry on without ALPN */
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

int http_tls_ctx_new(const char *cert_pem, const char *key_pem, SSL_CTX **out, char *err,
                     size_t errlen)
{
    *out = NULL;
    ERR_clear_error();
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx) {
        tls_err(err, errlen, "cannot create the TLS context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* idle keep-alive connections then hold no 16 KiB record buffers */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_select, NULL);

    BIO *cb = BIO_new_mem_buf(cert_pem, -1);
    X509 *leaf = cb ? PEM_read_bio_X509_AUX(cb, NULL, NULL, NULL) : NULL;
    if (!leaf || SSL_CTX_use_certificate(ctx, leaf) != 1) {
        tls_err(err, errlen,
                "the TLS certificate is not a PEM certificate (tls.crt must start with "
                "-----BEGIN CERTIFICATE-----)");
        X509_free(leaf);
        BIO_free(cb);
        SSL_CTX_free(ctx);
        return -1;
    }
    X509_free(leaf);
    X509 *extra;
    while ((extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            tls_err(err, errlen, "cannot add an intermediate certificate from tls.crt");
            BIO_free(cb);
            SSL_CTX_free(ctx);
            return -1;
        }
    }
    ERR_clear_error(); /* the loop above ends on a "no start line" error */
    BIO_free(cb);

    BIO *kb = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
    BIO_free(kb);
    if (!key || SSL_CTX_use_PrivateKey(ctx, key) != 1) {
        tls_err(err, errlen,
                "the TLS key is not an unencrypted PEM private key (tls.key must start with "
                "-----BEGIN PRIVATE KEY----- or similar)");
        EVP_PKEY_free(key);
        SSL_CTX_free(ctx);
        return -1;
    }
    EVP_PKEY_free(key);
    if (SSL_CTX_check_private_key(ctx) != 1) {
        tls_err(err, errlen, "the TLS key does not match the certificate");
        SSL_CTX_free(ctx);
        return -1;
    }
    *out = ctx;
    return 0;
}

void http_tls_ctx_free(SSL_CTX *ctx)
{
    SSL_CTX_free(ctx);
}

http_tls_session *http_tls_session_new(SSL_CTX *ctx)
{
    http_tls_session *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->ssl = SSL_new(ctx);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (!t->ssl || !t->rbio || !t->wbio) {
        SSL_free(t->ssl);
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    SSL_set_bio(t->ssl, t->rbio, t->wbio); /* the SSL owns both BIOs from here on */
    SSL_set_accept_state(t->ssl);
    return t;
}

void http_tls_session_free(http_tls_session *t)
{
    if (!t) return;
    SSL_free(t->ssl);
    free(t);
}

int http_tls_feed(http_tls_session *t, const char *data, size_t len, char *err, size_t errlen)
{
    if (len && BIO_write(t->rbio, data, (int)len) != (int)len) {
        tls_err(err, errlen, "cannot buffer TLS input");
        return -1;
    }
    if (t->ready) return 0;
    int rc = SSL_do_handshake(t->ssl);
    if (rc == 1) {
        t->ready = true;
        return 0;
    }
    int e = SSL_get_error(t->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    tls_err(err, errlen, "TLS handshake failed");
    return -1;
}

bool http_tls_ready(const http_tls_session *t)
{
    return t->ready;
}

int http_tls_read(http_tls_session *t, char *out, size_t cap)
{
    int n = SSL_read(t->ssl, out, (int)cap);
    if (n > 0) return n;
    int e = SSL_get_error(t->ssl, n);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) return 0;
    ERR_clear_error();
    return -1;
}

bool http_tls_write(http_tls_session *t, const void *data, size_t len)
{
    if (!len) return true;
    int n = SSL_write(t->ssl, data, (int)len);
    if (n == (int)len) return true;
    ERR_clear_error();
    return false;
}

size_t http_tls_output(http_tls_session *t, char *out, size_t cap)
{
    if (BIO_ctrl_pending(t->wbio) == 0) return 0;
    int n = BIO_read(t->wbio, out, (int)cap);
    return n > 0 ? (size_t)n : 0;
}

void http_tls_shutdown(http_tls_session *t)
{
    if (t->ready) {
        SSL_shutdown(t->ssl);
        ERR_clear_error();
    }
}
