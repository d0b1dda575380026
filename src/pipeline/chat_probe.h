/* chat_probe.h — a Chat Completions request body checked and measured in one streaming (SAX)
 * pass with yajl, without building a document: the fields the gateway routes and validates on,
 * and the byte offsets that let the body be forwarded as the client's own bytes with the model
 * replaced and parameters added. A document (jansson) is built only when the body must really
 * change (context injection, Mock). See docs/decisions/0003-request-json.md. */
#ifndef CTXGATE_PIPELINE_CHAT_PROBE_H
#define CTXGATE_PIPELINE_CHAT_PROBE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/arena.h"
#include "core/sax_tape.h"
#include "core/str.h"

typedef enum {
    PROBE_OK = 0,
    PROBE_BAD_JSON,      /* syntax error or invalid UTF-8: message says where */
    PROBE_NOT_OBJECT,    /* the top level is not an object */
    PROBE_DUPLICATE_KEY, /* a top-level key appears twice (param names it) */
    PROBE_BAD_FIELD,     /* a field has the wrong type or shape (param names it) */
    PROBE_BAD_ENCODING,  /* a string or key is not strict UTF-8, or has an unpaired surrogate
                            escape (param: the top-level field it is in, if any) */
    PROBE_TOO_MANY_KEYS, /* more than CHAT_PROBE_MAX_TOP_KEYS top-level keys */
} chat_probe_status;

/* The most top-level keys a body may have (OpenAI's Chat Completions has about 40 parameters). */
enum { CHAT_PROBE_MAX_TOP_KEYS = 256 };

typedef struct chat_probe {
    chat_probe_status status;
    char message[512]; /* for status != PROBE_OK: a sentence for the client */
    const char *param; /* the field at fault, or NULL */

    bool has_model;       /* "model" present ... */
    bool model_is_string; /* ... and a string */
    const char *model;    /* decoded, NUL-terminated (arena) */
    size_t model_start;   /* raw bytes of the model value: [model_start, model_end) */
    size_t model_end;

    bool has_messages; /* "messages" present */
    size_t n_messages; /* elements, when it is an array */

    bool stream;        /* "stream": true */
    bool include_usage; /* "stream_options": {"include_usage": true} */

    str *top_keys; /* every top-level key, decoded (arena) */
    size_t n_top_keys;
    size_t object_end; /* offset of the closing '}' of the top-level object */
} chat_probe;

/* Checks body: JSON syntax, strict UTF-8 text (overlong forms, encoded surrogates, truncated
 * sequences, code points above U+10FFFF and unpaired surrogate escapes refused), top-level
 * object of at most CHAT_PROBE_MAX_TOP_KEYS keys without duplicates, model a string,
 * messages an array of objects each with a string role, stream a boolean or null,
 * stream_options an object or null. Missing model or messages are left to the caller (has_*)
 * so it can word the error. Returns p->status. With tape (else NULL), every token of the pass
 * is recorded there too (complete when the result is PROBE_OK), for a later reader to replay. */
chat_probe_status chat_probe_parse(const char *body, size_t len, arena *pool, chat_probe *p,
                                   sax_tape *tape);

/* True when the top-level object has key. */
bool chat_probe_has_key(const chat_probe *p, const char *key);

#endif
