/* auth.c — API-key authentication. Keys are held only as SHA-256 digests; the presented key is
 * hashed and compared against every configured digest with CRYPTO_memcmp, so the time taken does
 * not depend on how much of a key matched. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/auth.h"
#include "pipeline/call.h"

str auth_presented_key(const http_request *r)
{
    str v = http_request_header(r, "authorization");
    if (v.p) {
        if (v.n > 7 && strncasecmp(v.p, "Bearer ", 7) == 0) {
            str k = {v.p + 7, v.n - 7};
            while (k.n && k.p[0] == ' ')
                k.p++, k.n--;
            return k;
        }
        return STR_NULL;
    }
    v = http_request_header(r, "x-api-key");
    if (v.p) return v;
    return http_request_header(r, "api-key");
}

const char *auth_duplicated_header(const http_request *r)
{
    static const char *const names[] = {"authorization", "x-api-key", "api-key"};
    for (size_t n = 0; n < sizeof names / sizeof names[0]; n++) {
        size_t len = strlen(names[n]), seen = 0;
        for (size_t i = 0; i < r->n_headers; i++) /* names are lower-cased by the server */
            if (r->headers[i].name.n == len && memcmp(r->headers[i].name.p, names[n], len) == 0 &&
                ++seen > 1)
                return names[n];
    }
    return NULL;
}

static EVP_MD *g_sha256;
static pthread_once_t g_sha256_once = PTHREAD_ONCE_INIT;

/* one digest context per thread, reused (EVP_Digest makes and frees one per call) */
static pthread_key_t g_ctx_key;
static _Thread_local EVP_MD_CTX *tl_ctx;

static void ctx_destroy(void *ctx)
{
    EVP_MD_CTX_free(ctx);
}

static void sha256_fetch(void)
{
    g_sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (pthread_key_create(&g_ctx_key, ctx_destroy) != 0) abort();
}

bool auth_key_digest(str key, unsigned char out[32])
{
    pthread_once(&g_sha256_once, sha256_fetch);
    if (!g_sha256) return false;
    if (!tl_ctx) {
        tl_ctx = EVP_MD_CTX_new();
        if (!tl_ctx) return false;
        pthread_setspecific(g_ctx_key, tl_ctx); /* freed when the thread ends */
    }
    unsigned int len = 0;
    return EVP_DigestInit_ex2(tl_ctx, g_sha256, NULL) == 1 &&
           EVP_DigestUpdate(tl_ctx, key.p, key.n) == 1 &&
           EVP_DigestFinal_ex(tl_ctx, out, &len) == 1 && len == 32;
}

auth_result auth_check(const cfg_gateway *gw, const http_request *r, const cfg_api_key **key)
{
    *key = NULL;
    if (!(gw->auth_types & AUTH_APIKEY)) return AUTH_OK;
    if (auth_duplicated_header(r)) return AUTH_AMBIGUOUS;
    str k = auth_presented_key(r);
    if (!k.p || k.n == 0) return AUTH_MISSING;
    unsigned char digest[32];
    if (!auth_key_digest(k, digest)) return AUTH_INVALID;
    const cfg_api_key *found = NULL;
    for (size_t i = 0; i < gw->n_api_keys; i++) {
        if (CRYPTO_memcmp(digest, gw->api_keys[i].sha256, 32) == 0 && !found)
            found = &gw->api_keys[i];
    }
    if (!found) return AUTH_INVALID;
    *key = found;
    return AUTH_OK;
}

/* The authenticate phase. */
pl_step pl_phase_authenticate(pl_call *c)
{
    http_request *r = c->r;
    switch (auth_check(c->rt->gw, r, &c->key)) {
    case AUTH_OK:
        return PL_CONTINUE;
    case AUTH_MISSING:
        pl_fail(c, 401, "invalid_request_error", "missing_api_key", NULL,
                "Missing API key: send it as 'Authorization: Bearer <key>', 'x-api-key: <key>' "
                "or 'api-key: <key>'.");
        return PL_FINISH;
    case AUTH_INVALID:
        pl_fail(c, 401, "invalid_request_error", "invalid_api_key", NULL,
                "Incorrect API key provided.");
        return PL_FINISH;
    case AUTH_AMBIGUOUS: {
        const char *h = auth_duplicated_header(r);
        pl_fail(c, 400, "invalid_request_error", "duplicate_header", h,
                "The '%s' header is sent more than once; send one key, once.", h);
        return PL_FINISH;
    }
    }
    return PL_FINISH;
}
