/* buf.h — growable byte buffer (heap-owned), always NUL-terminated for convenience. */
#ifndef CTXGATE_CORE_BUF_H
#define CTXGATE_CORE_BUF_H

#include <stddef.h>
#include <string.h>

typedef struct buf {
    char *data; /* NULL until first append; data[len] == 0 afterwards */
    size_t len; /* bytes in use */
    size_t cap; /* bytes allocated */
} buf;

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

/* room for need bytes (the NUL included): the slow path of buf_reserve; aborts on OOM */
void buf_grow(buf *b, size_t need);
/* The appends are inline: on the request path most are a few bytes into room already there. */
static inline void buf_reserve(buf *b, size_t extra)
{
    size_t need = b->len + extra + 1;
    if (need > b->cap) buf_grow(b, need);
}
static inline void buf_append(buf *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}
static inline void buf_puts(buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}
void buf_printf(buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_put_u64(buf *b, unsigned long long v); /* decimal, no printf on the hot path */
void buf_put_i64(buf *b, long long v);
void buf_put_frac3(buf *b, unsigned long long milli); /* milli/1000 as "N.mmm" */
void buf_consume(buf *b, size_t n);                   /* drop the first n bytes */
void buf_reset(buf *b);                               /* len = 0, keeps capacity */
void buf_free(buf *b);
char *buf_steal(buf *b); /* hands data to the caller (free()), leaves b empty */

#endif
