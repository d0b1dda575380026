/* fuzz_json.c — the request path's JSON document codec (src/core/json.c: yajl parser building
 * jansson documents, yajl generator writing them) on arbitrary text.
 *
 * Checks beyond "no crash": a document that decodes encodes, and the encoding decodes to an
 * equal document (compared key by key, \\u0000 in keys included); its encoding is also what jansson
 * itself reads back equal (numbers kept as their text compared as jansson reads them). An error
 * always comes with a sentence. */
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json.h"

/* json_equal compares object keys as C strings, and keys may hold \u0000: compare by length.
 * by_value: numbers compare by value whatever their kind (jansson reads -0 as the integer 0,
 * a number kept as text reads back as the real -0.0). */
static bool same_as(const json_t *a, const json_t *b, bool by_value)
{
    if (by_value && json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_typeof(a) != json_typeof(b)) return false;
    if (json_is_object(a)) {
        if (json_object_size(a) != json_object_size(b)) return false;
        const char *k;
        size_t klen;
        json_t *v;
        json_object_keylen_foreach((json_t *)a, k, klen, v)
        {
            json_t *w = json_object_getn(b, k, klen);
            if (!w || !same_as(v, w, by_value)) return false;
        }
        return true;
    }
    if (json_is_array(a)) {
        if (json_array_size(a) != json_array_size(b)) return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!same_as(json_array_get(a, i), json_array_get(b, i), by_value)) return false;
        return true;
    }
    return json_equal(a, b);
}

static bool same(const json_t *a, const json_t *b)
{
    return same_as(a, b, false);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 1024 * 1024) return -1;
    char err[256];
    err[0] = 0;
    json_t *v = json_decode_fast((const char *)data, size, err, sizeof err);
    if (!v) {
        if (!err[0]) abort();
        return 0;
    }
    size_t len = 0;
    char *text = json_encode_fast(v, &len);
    if (!text || strlen(text) != len) abort(); /* \u0000 is written escaped */
    char err2[256];
    json_t *back = json_decode_fast(text, len, err2, sizeof err2);
    if (!back) {
        fprintf(stderr, "encoding does not decode: %s\n%.*s\n", err2, (int)len, text);
        abort();
    }
    if (!same(v, back)) {
        fprintf(stderr, "round trip changed the document:\n%.*s\n", (int)len, text);
        abort();
    }
    /* numbers kept as their text (1.50, 1e5, 1e999: raw numbers) are compared as jansson reads
     * them (json_plain; NULL when one is beyond a double, which jansson refuses too) */
    json_t *j = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    json_t *plain = json_plain(v);
    if (j && (!plain || !same_as(plain, j, true))) {
        fprintf(stderr, "jansson reads the encoding differently:\n%.*s\n", (int)len, text);
        abort();
    }
    json_decref(plain);
    json_decref(j);
    json_decref(back);
    json_decref(v);
    free(text);
    return 0;
}
