/* sax_tape.h — the tokens of one yajl pass over a JSON text, recorded so that a second reader of
 * the same bytes replays them instead of lexing the text again (the chat probe records; the
 * Anthropic splice replays: docs/decisions/0004-anthropic-splice.md). A replay calls the same
 * yajl_callbacks with the same arguments, in the same order, as a yajl pass over the text
 * would, and tells the reader where each token ended (what yajl_get_bytes_consumed says). */
#ifndef CTXGATE_CORE_SAX_TAPE_H
#define CTXGATE_CORE_SAX_TAPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <yajl/yajl_parse.h>

#include "core/arena.h"

typedef enum {
    SAX_NULL,
    SAX_BOOLEAN,
    SAX_NUMBER,
    SAX_STRING,
    SAX_KEY,
    SAX_START_MAP,
    SAX_END_MAP,
    SAX_START_ARRAY,
    SAX_END_ARRAY
} sax_kind;

typedef struct sax_token {
    const char *v; /* string, key: the decoded bytes; number: its text (else NULL) */
    uint32_t n;    /* their length */
    uint32_t end;  /* offset just past the token in the text */
    uint8_t kind;  /* sax_kind */
    uint8_t truth; /* SAX_BOOLEAN */
} sax_token;

typedef struct sax_tape {
    const char *text; /* the text the tokens are of */
    size_t len;
    arena *pool; /* tokens, and decoded strings that are not the text's own bytes */
    sax_token *tok;
    size_t n, cap;
    bool complete; /* the recording pass read the whole text */
} sax_tape;

/* An empty tape for text, its tokens in pool. Texts longer than UINT32_MAX bytes are never
 * complete (sax_tape_replay declines them). */
void sax_tape_init(sax_tape *t, const char *text, size_t len, arena *pool);
/* Records one token that ended at end; v/n as yajl passed them (NULL/0 for containers, null
 * and booleans). v is kept as it is when it points into the text, else copied. */
void sax_tape_push(sax_tape *t, sax_kind kind, const void *v, size_t n, int truth, size_t end);
/* Calls cb's functions for t's tokens, in order, *pos set to each token's end before its call.
 * true when t is complete and every callback returned non-zero; false at the first that
 * returned 0 (or at once for an incomplete tape, or one of a text over UINT32_MAX bytes). */
bool sax_tape_replay(const sax_tape *t, const yajl_callbacks *cb, void *ctx, size_t *pos);

#endif
