/* json.c — jansson documents built from yajl's parse events, and written with yajl's generator.
 * A small stack of open containers follows the events; keys wait in `key` until their value. */
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_parse.h>

#include "core/arena.h"
#include "core/json.h"
#include "core/utf8.h"

enum { JSON_MAX_DEPTH = 512 };

typedef struct decoder {
    json_t *stack[JSON_MAX_DEPTH]; /* open containers */
    int depth;
    json_t *root;
    char *key; /* pending object key: key_inline, or malloc'd when longer; NULL inside arrays */
    size_t key_len;
    char key_inline[128];
    const char *fail; /* why a callback stopped the parse */
} decoder;

static void drop_key(decoder *d)
{
    if (d->key != d->key_inline) free(d->key);
    d->key = NULL;
}

/* Places v in the open container (or as the root); takes v's reference. */
static int put(decoder *d, json_t *v)
{
    if (!v) {
        d->fail = "out of memory";
        return 0;
    }
    if (d->depth == 0) {
        d->root = v;
        return 1;
    }
    json_t *top = d->stack[d->depth - 1];
    int rc;
    if (json_is_object(top)) {
        rc = json_object_setn_new_nocheck(top, d->key, d->key_len, v);
        drop_key(d);
    } else {
        rc = json_array_append_new(top, v);
    }
    if (rc != 0) d->fail = "out of memory";
    return rc == 0;
}

static int open_container(decoder *d, json_t *c)
{
    if (d->depth == JSON_MAX_DEPTH) {
        json_decref(c);
        d->fail = "nesting deeper than 512 levels";
        return 0;
    }
    json_incref(c); /* one reference for the stack, one for the parent */
    if (!put(d, c)) {
        json_decref(c);
        return 0;
    }
    d->stack[d->depth++] = c;
    return 1;
}

static int close_container(void *ctx)
{
    decoder *d = ctx;
    json_decref(d->stack[--d->depth]);
    return 1;
}

static int on_null(void *ctx)
{
    return put(ctx, json_null());
}

static int on_bool(void *ctx, int b)
{
    return put(ctx, json_boolean(b));
}

/* ---- numbers ----
 * jansson holds a number as a 64-bit integer or a double. A number that neither holds exactly
 * as written (an integer beyond 64 bits, a decimal beyond 17 digits, 1e5, 1.50, 1e999) becomes
 * a raw number: a two-element array whose first element is one process-wide marker object and
 * whose second is the number's text. The encoder writes its text back unchanged; json_plain
 * turns raw numbers into doubles for documents that leave for jansson's own encoder. */

static json_t *g_raw_marker;
static pthread_once_t g_raw_once = PTHREAD_ONCE_INIT;

static void raw_marker_init(void)
{
    g_raw_marker = json_object();
    if (!g_raw_marker) abort();
}

json_t *json_raw_number(const char *text, size_t len)
{
    pthread_once(&g_raw_once, raw_marker_init);
    json_t *a = json_array();
    if (!a || json_array_append(a, g_raw_marker) != 0 ||
        json_array_append_new(a, json_stringn_nocheck(text, len)) != 0) {
        json_decref(a);
        return NULL;
    }
    return a;
}

bool json_raw_number_text(const json_t *v, const char **text, size_t *len)
{
    if (!json_is_array(v) || json_array_size(v) != 2 || !g_raw_marker ||
        json_array_get(v, 0) != g_raw_marker)
        return false;
    json_t *t = json_array_get(v, 1);
    if (text) *text = json_string_value(t);
    if (len) *len = json_string_length(t);
    return true;
}

/* The shortest of 15, 16 or 17 significant digits that reads back as d, written so that a
 * reader typing numbers sees a real (2.0 stays "2.0"). d is finite. */
static int real_text(double d, char *out, size_t outlen)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(out, outlen, "%.*g", prec, d);
        if (strtod(out, NULL) == d) break;
    }
    if (!strpbrk(out, ".eE")) n += snprintf(out + n, outlen - (size_t)n, ".0");
    return n;
}

static json_t *number_value(const char *s, size_t n)
{
    char tmp[64];
    if (n >= sizeof tmp) return json_raw_number(s, n);
    memcpy(tmp, s, n);
    tmp[n] = 0;
    if (!strpbrk(tmp, ".eE")) {
        errno = 0;
        char *end;
        long long v = strtoll(tmp, &end, 10);
        /* "-0" would come back as "0" */
        if (errno == 0 && *end == 0 && !(v == 0 && tmp[0] == '-'))
            return json_integer((json_int_t)v);
        return json_raw_number(s, n);
    }
    double d = strtod(tmp, NULL);
    if (isfinite(d)) {
        char back[40];
        real_text(d, back, sizeof back);
        if (strcmp(back, tmp) == 0) return json_real(d);
    }
    return json_raw_number(s, n);
}

static int on_number(void *ctx, const char *s, size_t n)
{
    return put(ctx, number_value(s, n));
}

/* The document with raw numbers made doubles; NULL when one is beyond the double range. */
static json_t *plain_copy(json_t *v)
{
    const char *text;
    size_t len;
    if (json_raw_number_text(v, &text, &len)) {
        char *tmp = strndup(text ? text : "", len);
        if (!tmp) return NULL;
        double d = strtod(tmp, NULL);
        free(tmp);
        return isfinite(d) ? json_real(d) : NULL;
    }
    if (json_is_object(v)) {
        json_t *o = json_object();
        const char *k;
        size_t kl;
        json_t *x;
        void *it;
        json_object_keylen_foreach_safe(v, it, k, kl, x)
        {
            json_t *c = plain_copy(x);
            if (!c || json_object_setn_new_nocheck(o, k, kl, c) != 0) {
                json_decref(o);
                return NULL;
            }
        }
        return o;
    }
    if (json_is_array(v)) {
        json_t *a = json_array();
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            json_t *c = plain_copy(x);
            if (!c || json_array_append_new(a, c) != 0) {
                json_decref(a);
                return NULL;
            }
        }
        return a;
    }
    return json_incref(v);
}

static bool has_raw(json_t *v)
{
    if (json_raw_number_text(v, NULL, NULL)) return true;
    if (json_is_object(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (has_raw(x)) return true;
        }
    } else if (json_is_array(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x)
        {
            if (has_raw(x)) return true;
        }
    }
    return false;
}

json_t *json_plain(json_t *v)
{
    if (!v) return NULL;
    return has_raw(v) ? plain_copy(v) : json_incref(v);
}

/* yajl's own UTF-8 check is off (it lets overlong forms, encoded surrogates and code points
 * above U+10FFFF through): decoded text is checked here, strictly, so jansson can encode every
 * string of the document. A lone low-surrogate escape decodes to an encoded surrogate and is
 * refused; a lone high one yajl turns into '?'. */
static int text_ok(decoder *d, const unsigned char *s, size_t n)
{
    if (utf8_valid((const char *)s, n)) return 1;
    d->fail = "a string is not valid UTF-8";
    return 0;
}

static int on_string(void *ctx, const unsigned char *s, size_t n)
{
    if (!text_ok(ctx, s, n)) return 0;
    return put(ctx, json_stringn_nocheck((const char *)s, n));
}

static int on_key(void *ctx, const unsigned char *s, size_t n)
{
    decoder *d = ctx;
    if (!text_ok(d, s, n)) return 0;
    drop_key(d);
    d->key = n < sizeof d->key_inline ? d->key_inline : malloc(n + 1);
    if (!d->key) {
        d->fail = "out of memory";
        return 0;
    }
    memcpy(d->key, s, n);
    d->key[n] = 0;
    d->key_len = n;
    return 1;
}

static int on_start_map(void *ctx)
{
    return open_container(ctx, json_object());
}

static int on_start_array(void *ctx)
{
    return open_container(ctx, json_array());
}

static const yajl_callbacks decode_callbacks = {
    .yajl_null = on_null,
    .yajl_boolean = on_bool,
    .yajl_number = on_number,
    .yajl_string = on_string,
    .yajl_start_map = on_start_map,
    .yajl_map_key = on_key,
    .yajl_end_map = close_container,
    .yajl_start_array = on_start_array,
    .yajl_end_array = close_container,
};

static int hex4(const char *p, const char *end)
{
    if (end - p < 4) return -1;
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        int x = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (x < 0) return -1;
        v = v * 16 + x;
    }
    return v;
}

/* yajl decodes a \uD800-\uDBFF escape that no \uDC00-\uDFFF escape follows as "?", and a lone
 * \uDC00-\uDFFF as the surrogate's 3-byte form, which is not UTF-8: the string would change or
 * be unencodable (jansson refuses it), so such escapes are refused before yajl sees them.
 * Returns the offset of the first lone surrogate escape, or len when there is none. A "\u"
 * after an odd number of backslashes is an escaped backslash followed by 'u', not an escape;
 * outside strings yajl reports the syntax error itself. */
size_t json_lone_surrogate(const char *t, size_t len)
{
    const char *p = t, *end = t + len;
    while ((p = memmem(p, (size_t)(end - p), "\\u", 2)) != NULL) {
        size_t bs = 1;
        for (const char *q = p; q > t && q[-1] == '\\'; q--)
            bs++;
        if (bs % 2 == 0) {
            p++;
            continue;
        }
        int v = hex4(p + 2, end);
        if (v >= 0xDC00 && v <= 0xDFFF) return (size_t)(p - t);
        if (v >= 0xD800 && v <= 0xDBFF) {
            int lo = end - p >= 8 && p[6] == '\\' && p[7] == 'u' ? hex4(p + 8, end) : -1;
            if (lo < 0xDC00 || lo > 0xDFFF) return (size_t)(p - t);
            p += 12;
            continue;
        }
        p += 2;
    }
    return len;
}

/* ---- SAX passes over a per-thread scratch arena ---- */

enum { SAX_SCRATCH_BLOCK = 8192, SAX_HDR = 16 }; /* SAX_HDR keeps arena_alloc's alignment */

static pthread_key_t g_scratch_key;
static pthread_once_t g_scratch_once = PTHREAD_ONCE_INIT;
static _Thread_local arena *tl_scratch;
static _Thread_local yajl_handle tl_scratch_user; /* the pass using it, or NULL */

static void scratch_destroy(void *a)
{
    arena_free(a);
}

static void scratch_key(void)
{
    if (pthread_key_create(&g_scratch_key, scratch_destroy) != 0) abort();
}

/* each block carries its size, for realloc */
static void *sax_malloc(void *ctx, size_t n)
{
    unsigned char *p = arena_alloc(ctx, n + SAX_HDR);
    memcpy(p, &n, sizeof n);
    return p + SAX_HDR;
}

static void *sax_realloc(void *ctx, void *old, size_t n)
{
    if (!old) return sax_malloc(ctx, n);
    size_t had;
    memcpy(&had, (unsigned char *)old - SAX_HDR, sizeof had);
    if (n <= had) return old;
    void *p = sax_malloc(ctx, n);
    memcpy(p, old, had);
    return p;
}

static void sax_free(void *ctx, void *p)
{
    (void)ctx; /* reclaimed when the pass ends (json_sax_free) */
    (void)p;
}

yajl_handle json_sax_new(const void *callbacks, void *ctx)
{
    if (tl_scratch_user) return yajl_alloc(callbacks, NULL, ctx);
    if (!tl_scratch) {
        pthread_once(&g_scratch_once, scratch_key);
        tl_scratch = arena_new(SAX_SCRATCH_BLOCK);
        if (!tl_scratch) return NULL;
        pthread_setspecific(g_scratch_key, tl_scratch); /* freed when the thread ends */
    }
    yajl_alloc_funcs fns = {sax_malloc, sax_realloc, sax_free, tl_scratch}; /* copied by yajl */
    yajl_handle h = yajl_alloc(callbacks, &fns, ctx);
    tl_scratch_user = h;
    return h;
}

void json_sax_free(yajl_handle h)
{
    if (!h) return;
    bool scratch = h == tl_scratch_user;
    yajl_free(h);
    if (scratch) {
        tl_scratch_user = NULL;
        arena_reset(tl_scratch);
    }
}

json_t *json_decode_fast(const char *text, size_t len, char *err, size_t errlen)
{
    size_t lone = memchr(text, '\\', len) ? json_lone_surrogate(text, len) : len;
    if (lone < len) {
        if (err)
            snprintf(err, errlen,
                     "lone UTF-16 surrogate escape \\%.5s at byte %zu (a high surrogate needs a "
                     "low one right after it)",
                     text + lone + 1, lone);
        return NULL;
    }
    decoder d = {.depth = 0};
    yajl_handle h = json_sax_new(&decode_callbacks, &d);
    if (!h) {
        if (err) snprintf(err, errlen, "out of memory");
        return NULL;
    }
    yajl_config(h, yajl_dont_validate_strings, 1); /* text_ok checks, strictly */
    yajl_status st = yajl_parse(h, (const unsigned char *)text, len);
    if (st == yajl_status_ok) st = yajl_complete_parse(h);
    if (st != yajl_status_ok || !d.root) {
        if (err) {
            if (d.fail) {
                snprintf(err, errlen, "%s", d.fail);
            } else {
                unsigned char *e = yajl_get_error(h, 0, NULL, 0);
                const char *what = e ? (const char *)e : "syntax error";
                if (!strncmp(what, "parse error: ", 13)) what += 13;
                int n = (int)strlen(what);
                while (n > 0 && (what[n - 1] == ' ' || what[n - 1] == '\n'))
                    n--;
                snprintf(err, errlen, "%.*s at byte %zu", n, what, yajl_get_bytes_consumed(h));
                if (e) yajl_free_error(h, e);
            }
        }
        while (d.depth > 0)
            json_decref(d.stack[--d.depth]);
        json_decref(d.root);
        drop_key(&d);
        json_sax_free(h);
        return NULL;
    }
    drop_key(&d);
    json_sax_free(h);
    return d.root;
}

size_t json_int_text(long long v, char *out)
{
    char tmp[24];
    size_t n = 0;
    unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;
    do {
        tmp[n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    size_t len = 0;
    if (v < 0) out[len++] = '-';
    while (n)
        out[len++] = tmp[--n];
    return len;
}

static int encode(yajl_gen g, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (yajl_gen_map_open(g) != yajl_gen_status_ok) return -1;
        const char *k;
        size_t kl;
        json_t *x;
        void *it;
        json_object_keylen_foreach_safe((json_t *)v, it, k, kl, x)
        {
            if (yajl_gen_string(g, (const unsigned char *)k, kl) != yajl_gen_status_ok ||
                encode(g, x) != 0)
                return -1;
        }
        return yajl_gen_map_close(g) == yajl_gen_status_ok ? 0 : -1;
    }
    case JSON_ARRAY: {
        const char *text;
        size_t len;
        if (json_raw_number_text(v, &text, &len))
            return text && yajl_gen_number(g, text, len) == yajl_gen_status_ok ? 0 : -1;
        if (yajl_gen_array_open(g) != yajl_gen_status_ok) return -1;
        size_t i;
        json_t *x;
        json_array_foreach((json_t *)v, i, x)
        {
            if (encode(g, x) != 0) return -1;
        }
        return yajl_gen_array_close(g) == yajl_gen_status_ok ? 0 : -1;
    }
    case JSON_STRING:
        return yajl_gen_string(g, (const unsigned char *)json_string_value(v),
                               json_string_length(v)) == yajl_gen_status_ok
                   ? 0
                   : -1;
    case JSON_INTEGER: {
        char tmp[24];
        size_t n = json_int_text((long long)json_integer_value(v), tmp);
        return yajl_gen_number(g, tmp, n) == yajl_gen_status_ok ? 0 : -1;
    }
    case JSON_REAL: {
        double d = json_real_value(v);
        if (!isfinite(d)) return -1;
        char tmp[40];
        int n = real_text(d, tmp, sizeof tmp);
        return yajl_gen_number(g, tmp, (size_t)n) == yajl_gen_status_ok ? 0 : -1;
    }
    case JSON_TRUE:
        return yajl_gen_bool(g, 1) == yajl_gen_status_ok ? 0 : -1;
    case JSON_FALSE:
        return yajl_gen_bool(g, 0) == yajl_gen_status_ok ? 0 : -1;
    case JSON_NULL:
        return yajl_gen_null(g) == yajl_gen_status_ok ? 0 : -1;
    }
    return -1;
}

/* ---- the writer ---- */

/* yajl prints a string as several pieces (separator, quote, text, quote): the common case,
 * room already there, is a copy without a call */
static void jw_print(void *ctx, const char *s, size_t n)
{
    buf *b = ctx;
    if (b->data && b->cap - b->len > n) {
        memcpy(b->data + b->len, s, n);
        b->len += n;
        b->data[b->len] = 0;
        return;
    }
    buf_append(b, s, n);
}

void jw_init(jw *w, buf *out)
{
    yajl_gen g = yajl_gen_alloc(NULL);
    if (!g) abort(); /* as buf does on out-of-memory */
    yajl_gen_config(g, yajl_gen_print_callback, jw_print, out);
    buf_reserve(out, 1024); /* a chat body or answer, without growing step by step */
    w->gen = g;
    w->out = out;
    w->failed = false;
}

bool jw_finish(jw *w)
{
    yajl_gen_free(w->gen);
    w->gen = NULL;
    return !w->failed;
}

static void jw_check(jw *w, yajl_gen_status st)
{
    if (st != yajl_gen_status_ok) w->failed = true;
    /* a misuse (a value where a key belongs, a close with nothing open) is a bug in the caller */
    assert(st != yajl_gen_keys_must_be_strings && st != yajl_gen_generation_complete);
}

void jw_obj(jw *w)
{
    jw_check(w, yajl_gen_map_open(w->gen));
}

void jw_obj_end(jw *w)
{
    jw_check(w, yajl_gen_map_close(w->gen));
}

void jw_arr(jw *w)
{
    jw_check(w, yajl_gen_array_open(w->gen));
}

void jw_arr_end(jw *w)
{
    jw_check(w, yajl_gen_array_close(w->gen));
}

void jw_strn(jw *w, const char *s, size_t n)
{
    jw_check(w, yajl_gen_string(w->gen, (const unsigned char *)s, n));
}

void jw_key(jw *w, const char *key)
{
    jw_strn(w, key, strlen(key));
}

void jw_str(jw *w, const char *s)
{
    jw_strn(w, s, strlen(s));
}

void jw_int(jw *w, long long v)
{
    char tmp[24];
    size_t n = json_int_text(v, tmp);
    jw_check(w, yajl_gen_number(w->gen, tmp, n));
}

void jw_bool(jw *w, bool v)
{
    jw_check(w, yajl_gen_bool(w->gen, v));
}

void jw_null(jw *w)
{
    jw_check(w, yajl_gen_null(w->gen));
}

void jw_value(jw *w, const json_t *v)
{
    if (encode(w->gen, v) != 0) w->failed = true;
}

char *json_encode_fast(const json_t *v, size_t *len)
{
    buf out = BUF_INIT;
    jw w;
    jw_init(&w, &out);
    jw_value(&w, v);
    if (!jw_finish(&w)) {
        buf_free(&out);
        return NULL;
    }
    assert(out.len > 0); /* every value writes something */
    if (len) *len = out.len;
    return buf_steal(&out);
}
