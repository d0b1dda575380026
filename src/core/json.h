/* json.h — fast text <-> jansson document conversion for the request path. jansson stays the
 * document model; its own lexer and encoder are slow (about 11 µs to parse and 53 µs to encode a
 * 3 KB chat body here), so these use yajl's parser and generator (about 5x faster) to build and
 * write the same jansson documents. See docs/decisions/0003-request-json.md. */
#ifndef CTXGATE_CORE_JSON_H
#define CTXGATE_CORE_JSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

/* Parses one JSON value (any type; trailing white space only; strict UTF-8: overlong forms,
 * encoded surrogates and \u escapes of lone UTF-16 surrogates refused, as in jansson). Strings may
 * contain \u0000. Numbers keep their exact text: an integer that fits in 64 bits becomes an
 * integer, a number that a double writes back as the same text (0.5, 0.7, 1e+300) a real, and any
 * other number (an integer beyond 64 bits, 1e5, 1.50, 1e999) a raw number (json_raw_number) that
 * json_encode_fast writes back as it was. NULL on error, with a sentence in err (may be NULL). */
json_t *json_decode_fast(const char *text, size_t len, char *err, size_t errlen);

/* Compact encoding of v (any type), malloc'd and NUL-terminated; *len gets its length (len may
 * be NULL). Object keys keep their insertion order; raw numbers are written as their text, reals
 * with the fewest of 15..17 significant digits that read back as the same double. NULL on
 * out-of-memory. */
char *json_encode_fast(const json_t *v, size_t *len);

/* The offset of the first lone UTF-16 surrogate escape in the JSON text t[0..len) (a \uD800..
 * \uDBFF escape with no \uDC00..\uDFFF escape right after it, or a low one alone), or len:
 * json_decode_fast refuses such text, as must anything that copies JSON strings as they are. */
size_t json_lone_surrogate(const char *t, size_t len);

/* The decimal text of v into out (at least 21 bytes); its length. No printf. */
size_t json_int_text(long long v, char *out);

/* A yajl parser for one pass, its memory taken from a per-thread scratch arena instead of
 * malloc (a pass makes about five allocations; the arena is reset when the pass is freed).
 * One such pass per thread at a time: a pass started while another is open gets malloc. Free
 * it with json_sax_free, and use its error text (yajl_get_error) before that. NULL on
 * out-of-memory. */
struct yajl_handle_t;
struct yajl_handle_t *json_sax_new(const void *callbacks, void *ctx); /* yajl_callbacks */
void json_sax_free(struct yajl_handle_t *h);

/* A JSON writer: yajl's generator writing straight into a buf, for answers and upstream bodies
 * built from their parts with no document in between (a document costs an allocation per value
 * and a second walk to encode it). Calls must nest as JSON does (a key before each value inside
 * an object); a misuse or an unencodable value (a non-finite real) makes jw_finish fail rather
 * than write bad JSON. The buf is appended to; on failure its new bytes are garbage. */
typedef struct jw {
    void *gen; /* yajl_gen */
    buf *out;
    bool failed;
} jw;

void jw_init(jw *w, buf *out); /* aborts on out-of-memory, as buf does */
bool jw_finish(jw *w);         /* frees the generator; false when a call failed */
void jw_obj(jw *w);
void jw_obj_end(jw *w);
void jw_arr(jw *w);
void jw_arr_end(jw *w);
void jw_key(jw *w, const char *key); /* NUL-terminated */
void jw_str(jw *w, const char *s);   /* NUL-terminated */
void jw_strn(jw *w, const char *s, size_t n);
void jw_int(jw *w, long long v);
void jw_bool(jw *w, bool v);
void jw_null(jw *w);
void jw_value(jw *w, const json_t *v); /* a document value, as json_encode_fast writes it */

/* A raw number: a number kept as its JSON text, for the numbers jansson cannot hold exactly.
 * It is a two-element array [marker, "text"] to everything but this module: documents holding
 * one must go through json_encode_fast, or through json_plain before jansson's own encoder
 * (json_dumps) or json_deep_copy. */
json_t *json_raw_number(const char *text, size_t len);
/* True when v is a raw number; *text and *len (either may be NULL) get its text. */
bool json_raw_number_text(const json_t *v, const char **text, size_t *len);
/* v with every raw number replaced by the nearest double: a new reference to v itself when it
 * has none, else a converted copy. NULL when a number is beyond the double range (1e999). */
json_t *json_plain(json_t *v);

#endif
