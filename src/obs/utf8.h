/* utf8.h — UTF-8 validation shared by the metrics and access-log writers (internal to obs/):
 * both outputs must be valid UTF-8 whatever bytes a label or a request field holds, so invalid
 * sequences are replaced by U+FFFD instead of being copied through. */
#ifndef CTXGATE_OBS_UTF8_H
#define CTXGATE_OBS_UTF8_H

#include <stddef.h>

#define OBS_UTF8_REPLACEMENT "\xEF\xBF\xBD"

/* Length (1..4) of the well-formed UTF-8 sequence at p (n bytes available), or 0 when the bytes
 * there are not one (overlong forms, surrogates and code points above U+10FFFF included). */
static inline size_t obs_utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0; /* overlong */
        if (c == 0xED) hi = 0x9F; /* UTF-16 surrogates */
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90; /* overlong */
        if (c == 0xF4) hi = 0x8F; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len) return 0;
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

#endif
