/* arena.c — bump allocator over a chain of blocks. Large requests get a block of their own so
 * a single big body does not waste the rest of a normal block. */
#include "core/arena.h"

#include <assert.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct block {
    struct block *next;
    size_t size, used;
    _Alignas(16) unsigned char data[];
} block;

struct arena {
    block *head;
    block *first; /* the first block: arena_reset keeps it */
    size_t block_size, first_size, total;
};

static block *block_new(size_t size)
{
    block *b = malloc(sizeof(block) + size);
    if (!b) {
        fprintf(stderr, "ctxgate: out of memory allocating %zu bytes\n", size);
        abort();
    }
    b->next = NULL;
    b->size = size;
    b->used = 0;
    return b;
}

arena *arena_new(size_t first_block)
{
    arena *a = malloc(sizeof(*a));
    if (!a) return NULL;
    a->block_size = a->first_size = first_block < 256 ? 256 : first_block;
    a->head = a->first = block_new(a->block_size);
    a->total = 0;
    return a;
}

void arena_free(arena *a)
{
    if (!a) return;
    block *b = a->head;
    while (b) {
        block *n = b->next;
        free(b);
        b = n;
    }
    free(a);
}

void arena_reset(arena *a)
{
    for (block *b = a->head, *n; b; b = n) {
        n = b->next;
        if (b != a->first) free(b);
    }
    a->first->next = NULL;
    a->first->used = 0;
    a->head = a->first;
    a->block_size = a->first_size;
    a->total = 0;
}

void *arena_alloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0) n = 16;
    block *b = a->head;
    if (b->size - b->used < n) {
        if (n > a->block_size / 2) {
            /* big allocation: own block, linked after the head so the head keeps filling */
            block *big = block_new(n);
            big->used = n;
            big->next = b->next;
            b->next = big;
            a->total += n;
            return big->data;
        }
        if (a->block_size < 64 * 1024) a->block_size *= 2;
        block *nb = block_new(a->block_size);
        nb->next = b;
        a->head = nb;
        b = nb;
    }
    void *p = b->data + b->used;
    b->used += n;
    a->total += n;
    return p;
}

void *arena_calloc(arena *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size) abort();
    void *p = arena_alloc(a, n * size);
    memset(p, 0, n * size);
    return p;
}

void *arena_grow_full(arena *a, void *items, size_t n, size_t *cap, size_t size, size_t first)
{
    assert(n == *cap && first > 0);
    size_t want = *cap ? *cap * 2 : first;
    void *p = arena_alloc(a, want * size);
    if (n) memcpy(p, items, n * size);
    *cap = want;
    return p;
}

char *arena_strndup(arena *a, const char *s, size_t n)
{
    if (!s) return NULL;
    char *p = arena_alloc(a, n + 1);
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

char *arena_strdup(arena *a, const char *s)
{
    return s ? arena_strndup(a, s, strlen(s)) : NULL;
}

char *arena_printf(arena *a, const char *fmt, ...)
{
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *p = arena_alloc(a, (size_t)n + 1);
    vsnprintf(p, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return p;
}

char *arena_cat(arena *a, ...)
{
    va_list ap;
    size_t n = 0;
    va_start(ap, a);
    for (const char *s; (s = va_arg(ap, const char *));)
        n += strlen(s);
    va_end(ap);
    char *out = arena_alloc(a, n + 1), *p = out;
    va_start(ap, a);
    for (const char *s; (s = va_arg(ap, const char *));) {
        size_t k = strlen(s);
        memcpy(p, s, k);
        p += k;
    }
    va_end(ap);
    *p = 0;
    return out;
}

size_t arena_used(const arena *a)
{
    return a->total;
}
