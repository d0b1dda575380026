/* fuzz_record.c — the context record decoder (src/context/record.c) on arbitrary bytes.
 *
 * The first input byte picks the mode, the rest is the record:
 *   bit 0  re-encode as Text (else JSON) for the round trip
 *   bit 1  the codec has an encryption key
 *   bit 2  (with bit 1) seal the rest with that key first, as a store would, so the bytes reach
 *          the plaintext decoders through the unseal path; without it they are decoded as given
 *          (sealed records from the fuzzer itself: truncation, a bad tag, a foreign key)
 * A record that decodes must encode again and decode to an equal record (ctx_record_equal);
 * anything else aborts, so a lossy codec is a finding as much as a crash is. */
#include <openssl/evp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/record.h"
#include "core/log.h"

#define TENANT "tenant-1"
#define ID "conv-1"

static const unsigned char KEY[32] = "0123456789abcdef0123456789abcde";

/* The sealed format of record.c: 0x01, 12-byte nonce, AES-256-GCM ciphertext, 16-byte tag, with
 * "ctxgate-record\0<tenant>\0<id>" as associated data. A fixed nonce: this is a test. */
static unsigned char *seal(const uint8_t *p, size_t n, size_t *out_len)
{
    static const char aad[] = "ctxgate-record\0" TENANT "\0" ID;
    unsigned char nonce[12] = "fuzz-nonce!";
    unsigned char *o = malloc(1 + 12 + n + 16 + 16);
    if (!o) abort();
    o[0] = CTX_SEAL_VERSION;
    memcpy(o + 1, nonce, 12);
    int len = 0, fin = 0;
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int ok = x && EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, KEY, nonce) == 1 &&
             EVP_EncryptUpdate(x, NULL, &len, (const unsigned char *)aad, sizeof aad - 1) == 1 &&
             EVP_EncryptUpdate(x, o + 13, &len, p, (int)n) == 1 &&
             EVP_EncryptFinal_ex(x, o + 13 + len, &fin) == 1 &&
             EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, o + 13 + len + fin) == 1;
    EVP_CIPHER_CTX_free(x);
    if (!ok) abort();
    *out_len = 13 + (size_t)len + (size_t)fin + 16;
    return o;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    log_set_level(LOG_ERROR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 256 * 1024) return -1;
    uint8_t mode = data[0];
    const uint8_t *p = data + 1;
    size_t n = size - 1;

    ctx_codec codec = {.text = mode & 1, .encrypt = (mode & 2) != 0};
    if (codec.encrypt) memcpy(codec.key, KEY, sizeof KEY);

    unsigned char *sealed = NULL;
    if (codec.encrypt && (mode & 4)) {
        sealed = seal(p, n, &n);
        p = sealed;
    }
    ctx_record_meta meta = {.version = 7, .created_at = 1700000000, .updated_at = 1700000001};
    char err[512];
    ctx_record *r = NULL;
    int rc =
        ctx_record_decode(&codec, TENANT, ID, p, n, (mode & 8) ? &meta : NULL, &r, err, sizeof err);
    if (rc == 0) {
        if (!r) abort();
        buf enc = BUF_INIT;
        char err2[512];
        if (ctx_record_encode(&codec, TENANT, ID, r, &enc, err2, sizeof err2) == 0) {
            ctx_record *back = NULL;
            if (ctx_record_decode(&codec, TENANT, ID, enc.data, enc.len, NULL, &back, err2,
                                  sizeof err2) != 0) {
                fprintf(stderr, "re-encoded record does not decode: %s\n", err2);
                abort();
            }
            if (!ctx_record_equal(r, back)) {
                fprintf(stderr, "record changed in an encode/decode round trip; encoded:\n%.*s\n",
                        (int)enc.len, enc.data);
                abort();
            }
            ctx_record_free(back);
        }
        buf_free(&enc);
        ctx_record_free(r);
    } else if (r) {
        abort(); /* an error leaves *out NULL */
    } else if (!memchr(err, 0, sizeof err) || !err[0]) {
        abort(); /* an error always says why */
    }
    free(sealed);
    return 0;
}
