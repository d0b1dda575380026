/* str.h — counted strings for the hot path (nginx's ngx_str_t): a view, never owning. */
#ifndef CTXGATE_CORE_STR_H
#define CTXGATE_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

typedef struct str {
    const char *p;
    size_t n;
} str;

#define STR_LIT(s) ((str){(s), sizeof(s) - 1})
#define STR_NULL ((str){NULL, 0})

static inline str str_c(const char *s)
{
    return (str){s, s ? strlen(s) : 0};
}
static inline bool str_eq(str a, str b)
{
    return a.n == b.n && (a.n == 0 || memcmp(a.p, b.p, a.n) == 0);
}
static inline bool str_eq_c(str a, const char *b)
{
    return str_eq(a, str_c(b));
}
static inline bool str_case_eq_c(str a, const char *b)
{
    size_t n = strlen(b);
    return a.n == n && strncasecmp(a.p, b, n) == 0;
}
static inline bool str_starts_with(str a, str prefix)
{
    return a.n >= prefix.n && memcmp(a.p, prefix.p, prefix.n) == 0;
}
/* s into dst (cap > 0 bytes), cut to fit, NUL-terminated; returns dst */
static inline char *str_copy_c(char *dst, size_t cap, str s)
{
    size_t n = s.n < cap - 1 ? s.n : cap - 1;
    if (n) memcpy(dst, s.p, n);
    dst[n] = 0;
    return dst;
}

#endif
