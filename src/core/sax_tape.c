/* sax_tape.c — see sax_tape.h. */
#include <assert.h>
#include <string.h>

#include "core/sax_tape.h"

void sax_tape_init(sax_tape *t, const char *text, size_t len, arena *pool)
{
    *t = (sax_tape){.text = text, .len = len, .pool = pool};
}

void sax_tape_push(sax_tape *t, sax_kind kind, const void *v, size_t n, int truth, size_t end)
{
    assert(end <= t->len);
    if (t->len > UINT32_MAX) return; /* never replayed (sax_tape_replay): not kept */
    const char *p = v;
    /* yajl hands a string without escapes, and a number, as a pointer into the text; a string
     * with escapes is decoded into its own buffer, reused for the next one: copied */
    if (p && !(p >= t->text && p + n <= t->text + t->len)) p = arena_strndup(t->pool, p, n);
    t->tok = arena_grow(t->pool, t->tok, t->n, &t->cap, sizeof *t->tok, 64);
    t->tok[t->n++] = (sax_token){.v = p,
                                 .n = (uint32_t)n,
                                 .end = (uint32_t)end,
                                 .kind = (uint8_t)kind,
                                 .truth = (uint8_t)(truth != 0)};
}

bool sax_tape_replay(const sax_tape *t, const yajl_callbacks *cb, void *ctx, size_t *pos)
{
    if (!t->complete || t->len > UINT32_MAX) return false; /* offsets would not fit: not kept */
    for (size_t i = 0; i < t->n; i++) {
        const sax_token *k = &t->tok[i];
        const unsigned char *v = (const unsigned char *)k->v;
        *pos = k->end;
        int ok = 1;
        switch ((sax_kind)k->kind) {
        case SAX_NULL:
            ok = cb->yajl_null ? cb->yajl_null(ctx) : 1;
            break;
        case SAX_BOOLEAN:
            ok = cb->yajl_boolean ? cb->yajl_boolean(ctx, k->truth) : 1;
            break;
        case SAX_NUMBER:
            ok = cb->yajl_number ? cb->yajl_number(ctx, k->v, k->n) : 1;
            break;
        case SAX_STRING:
            ok = cb->yajl_string ? cb->yajl_string(ctx, v, k->n) : 1;
            break;
        case SAX_KEY:
            ok = cb->yajl_map_key ? cb->yajl_map_key(ctx, v, k->n) : 1;
            break;
        case SAX_START_MAP:
            ok = cb->yajl_start_map ? cb->yajl_start_map(ctx) : 1;
            break;
        case SAX_END_MAP:
            ok = cb->yajl_end_map ? cb->yajl_end_map(ctx) : 1;
            break;
        case SAX_START_ARRAY:
            ok = cb->yajl_start_array ? cb->yajl_start_array(ctx) : 1;
            break;
        case SAX_END_ARRAY:
            ok = cb->yajl_end_array ? cb->yajl_end_array(ctx) : 1;
            break;
        }
        if (!ok) return false;
    }
    return true;
}
