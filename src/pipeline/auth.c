/* auth.c — API-key authentication. Keys are held only as SHA-256 digests; the presented key is
 * hashed and compared against every configured digest with CRYPTO_memcmp, so the time taken does
 * not depend on how much of a key matched. */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <string.h>

#include "pipeline/auth.h"

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

auth_result auth_check(const cfg_gateway *gw, const http_request *r, const cfg_api_key **key)
{
    *key = NULL;
    if (!(gw->auth_types & AUTH_APIKEY)) return AUTH_OK;
    str k = auth_presented_key(r);
    if (!k.p || k.n == 0) return AUTH_MISSING;
    unsigned char digest[32];
    unsigned int dlen = 0;
    if (!EVP_Digest(k.p, k.n, digest, &dlen, EVP_sha256(), NULL)) return AUTH_INVALID;
    const cfg_api_key *found = NULL;
    for (size_t i = 0; i < gw->n_api_keys; i++) {
        if (CRYPTO_memcmp(digest, gw->api_keys[i].sha256, 32) == 0 && !found)
            found = &gw->api_keys[i];
    }
    if (!found) return AUTH_INVALID;
    *key = found;
    return AUTH_OK;
}
