/* ranks.h — one BPE vocabulary: token bytes <-> rank, read from a tiktoken-format file
 * ("<base64 of the token bytes> <rank>" per line, ranks 0..n-1 in order). Internal to
 * src/tokens/; read-only after tok_ranks_load, so any number of threads may look up at once. */
#ifndef CTXGATE_TOKENS_RANKS_H
#define CTXGATE_TOKENS_RANKS_H

#include <stddef.h>
#include <stdint.h>

#define TOK_NO_RANK UINT32_MAX

typedef struct tok_ranks {
    uint8_t *bytes;  /* every token's bytes, back to back, in rank order */
    uint32_t *off;   /* n+1 offsets into bytes: token r is bytes[off[r] .. off[r+1]) */
    uint32_t n;      /* number of ranks */
    uint32_t *slots; /* open-addressing table of rank+1 (0 = empty), sized a power of two */
    uint32_t mask;   /* slots - 1 */
} tok_ranks;

/* Reads path, checks its SHA-256 against sha256_hex (lowercase hex; NULL skips the check) and
 * builds the table. 0 on success; -1 with a message in err (r is left empty). A missing file
 * is -2 so the caller can try the next place. */
int tok_ranks_load(tok_ranks *r, const char *path, const char *sha256_hex, char *err,
                   size_t errlen);
uint32_t tok_ranks_find(const tok_ranks *r, const uint8_t *p, size_t n); /* TOK_NO_RANK if none */
void tok_ranks_free(tok_ranks *r);

#endif
