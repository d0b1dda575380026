/* utf8.c — strict UTF-8 checks (see utf8.h). The ranges are those of RFC 3629's table:
 * E0 needs A0..BF next (no overlong), ED needs 80..9F (no surrogate), F0 needs 90..BF (no
 * overlong), F4 needs 80..8F (nothing above U+10FFFF); C0, C1 and F5..FF never appear. */
#include <stdint.h>
#include <string.h>

#include "core/utf8.h"

#define ELLIPSIS "\xE2\x80\xA6"

size_t utf8_seq_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (n < len || p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < len; i++)
        if ((p[i] & 0xC0) != 0x80) return 0;
    return len;
}

size_t utf8_check(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        /* ASCII runs eight bytes at a time */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        while (i < n && p[i] < 0x80)
            i++;
        if (i >= n) break;
        size_t len = utf8_seq_len(p + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}

void utf8_append_repaired(buf *out, const char *s, size_t n, size_t max)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t base = out->len, keep = base; /* keep: the last boundary leaving room for "…" */
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len(p + i, n - i);
        if (out->len - base + (sizeof ELLIPSIS - 1) <= max) keep = out->len;
        if (len == 0)
            buf_append(out, UTF8_REPLACEMENT, sizeof UTF8_REPLACEMENT - 1);
        else if (p[i] != 0)
            buf_append(out, s + i, len);
        i += len ? len : 1;
        if (out->len - base > max) {
            out->len = keep;
            buf_append(out, ELLIPSIS, sizeof ELLIPSIS - 1);
            return;
        }
    }
}

size_t utf8_prefix(const char *s, size_t n, size_t max)
{
    if (n <= max) return n;
    size_t end = max;
    while (end > 0 && ((unsigned char)s[end] & 0xC0) == 0x80)
        end--;
    return end;
}

static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

#define ONES 0x0101010101010101ull
#define HIGHS 0x8080808080808080ull

/* Skips, from i, the bytes that are ASCII and not a backslash, eight at a time: a byte of w is
 * flagged when its high bit is set, or when it is a backslash (the zero-byte test on w ^ '\\'s;
 * a false flag can only follow a true one), and the scan stops at the first flagged byte. */
static inline uint64_t plain_flags(const unsigned char *p)
{
    uint64_t w;
    memcpy(&w, p, 8);
    uint64_t bs = w ^ (ONES * '\\');
    return (w | ((bs - ONES) & ~bs)) & HIGHS;
}

static size_t skip_plain(const unsigned char *p, size_t i, size_t n)
{
    while (i + 8 <= n) {
        uint64_t flags = plain_flags(p + i);
        if (flags) {
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
            return i + (size_t)(__builtin_ctzll(flags) >> 3);
#else
            break;
#endif
        }
        i += 8;
    }
    while (i < n && p[i] < 0x80 && p[i] != '\\')
        i++;
    return i;
}

size_t utf8_check_json_string(const char *s, size_t n, bool *surrogate)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    *surrogate = false;
    while (i < n) {
        i = skip_plain(p, i, n);
        if (i >= n) break;
        unsigned char c = p[i];
        if (c == '\\') {
            if (i + 1 < n && p[i + 1] == 'u' && i + 6 <= n) {
                int cp = hex4(p + i + 2);
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    *surrogate = true;
                    return i;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    int lo =
                        i + 12 <= n && p[i + 6] == '\\' && p[i + 7] == 'u' ? hex4(p + i + 8) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF) {
                        *surrogate = true;
                        return i;
                    }
                    i += 12;
                    continue;
                }
                i += 6;
                continue;
            }
            i += 2; /* a one-character escape */
            continue;
        }
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len = utf8_seq_len(p + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}
