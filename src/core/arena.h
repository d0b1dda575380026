/* arena.h — per-request / per-snapshot memory pools (nginx-style): many small allocations,
 * one free. Not thread-safe: an arena belongs to one owner (a request on one loop, or one
 * configuration snapshot built off-loop and then only read). */
#ifndef CTXGATE_CORE_ARENA_H
#define CTXGATE_CORE_ARENA_H

#include <stddef.h>

typedef struct arena arena;

arena *arena_new(size_t first_block);  /* NULL on out-of-memory */
void arena_free(arena *a);             /* frees every allocation at once; NULL ok */
void arena_reset(arena *a);            /* frees every allocation, keeps the first block for reuse */
void *arena_alloc(arena *a, size_t n); /* 16-byte aligned; aborts on OOM */
void *arena_calloc(arena *a, size_t n, size_t size);
char *arena_strdup(arena *a, const char *s); /* NULL in, NULL out */
/* A growing array in the arena: items holds n elements of size bytes in room for *cap; when it
 * is full, a copy with room for twice as many (first when there was none) is returned and *cap
 * updated, else items itself. The old room is reclaimed with the arena. */
void *arena_grow_full(arena *a, void *items, size_t n, size_t *cap, size_t size, size_t first);
static inline void *arena_grow(arena *a, void *items, size_t n, size_t *cap, size_t size,
                               size_t first)
{
    return n < *cap ? items : arena_grow_full(a, items, n, cap, size, first);
}
char *arena_strndup(arena *a, const char *s, size_t n);
char *arena_printf(arena *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The NUL-terminated strings up to the NULL, joined (no printf: for the request path). */
char *arena_cat(arena *a, ...) __attribute__((sentinel));
size_t arena_used(const arena *a); /* bytes handed out, for metrics and tests */

#endif
