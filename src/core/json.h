/* json.h — fast text <-> jansson document conversion for the request path. jansson stays the
 * document model; its own lexer and encoder are slow (about 11 µs to parse and 53 µs to encode a
 * 3 KB chat body here), so these use yajl's parser and generator (about 5x faster) to build and
 * write the same jansson documents. See docs/decisions/0003-request-json.md. */
#ifndef CTXGATE_CORE_JSON_H
#define CTXGATE_CORE_JSON_H

#include <jansson.h>
#include <stddef.h>

/* Parses one JSON value (any type; trailing white space only; strict UTF-8, so a \u escape of a
 * lone UTF-16 surrogate is an error, as in jansson). Integers that fit in 64 bits become
 * integers, other numbers reals. Strings may contain \u0000. NULL on error, with a sentence in
 * err (may be NULL). */
json_t *json_decode_fast(const char *text, size_t len, char *err, size_t errlen);

/* Compact encoding of v (any type), malloc'd and NUL-terminated; *len gets its length (len may
 * be NULL). Object keys keep their insertion order; reals use 17 significant digits, as jansson
 * does. NULL on out-of-memory. */
char *json_encode_fast(const json_t *v, size_t *len);

#endif
