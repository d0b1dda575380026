/* utf8.h — strict UTF-8 (RFC 3629): validation, repair and truncation at character boundaries.
 * Strict means: no overlong forms, no UTF-16 surrogates (U+D800..U+DFFF) encoded as UTF-8, no
 * code point above U+10FFFF, no truncated sequence. Used wherever text from a request, a
 * provider or the system ends up in a JSON document the gateway writes, so those are always
 * valid UTF-8 (jansson refuses to encode anything else). */
#ifndef CTXGATE_CORE_UTF8_H
#define CTXGATE_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

#define UTF8_REPLACEMENT "\xEF\xBF\xBD" /* U+FFFD */

/* Length (1..4) of the well-formed sequence at p (n > 0 bytes available), 0 when there is none. */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* Offset of the first byte of s[0..n) that does not start a well-formed sequence, or n when all
 * of it is valid. Linear, with a word-at-a-time path over ASCII. */
size_t utf8_check(const char *s, size_t n);

static inline bool utf8_valid(const char *s, size_t n)
{
    return utf8_check(s, n) == n;
}

/* Appends s[0..n) to out with each byte that does not start a well-formed sequence replaced by
 * U+FFFD and NUL bytes dropped, writing at most max bytes (max >= 3): a longer text is cut at a
 * character boundary and ends with an ellipsis (U+2026). */
void utf8_append_repaired(buf *out, const char *s, size_t n, size_t max);

/* The longest prefix of the valid UTF-8 text s[0..n) that fits in max bytes and ends on a
 * character boundary. */
size_t utf8_prefix(const char *s, size_t n, size_t max);

/* Checks the raw text of a JSON string between its quotes (escape syntax already checked by the
 * parser): its bytes must be strict UTF-8, and every \uD800..\uDBFF escape must be followed by a
 * \uDC00..\uDFFF escape (together one code point), no low-surrogate escape standing alone.
 * Returns the offset of the first fault, or n; *surrogate is set when the fault is an escape. */
size_t utf8_check_json_string(const char *s, size_t n, bool *surrogate);

#endif
