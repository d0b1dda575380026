/* record.h — the stored-record codec shared by every context backend: JSON or Text encoding,
 * AES-256-GCM sealing bound to (tenant, id), schema upgrade of older records, and validation
 * of the messages a caller appends. The decoder accepts arbitrary bytes (fuzz target). */
#ifndef CTXGATE_CONTEXT_RECORD_H
#define CTXGATE_CONTEXT_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "context/store.h"
#include "core/buf.h"

typedef struct ctx_codec {
    bool text;    /* write the Text encoding (reading accepts both) */
    bool encrypt; /* seal records with key */
    unsigned char key[32];
} ctx_codec;

/* What the backend's index knows about a record; fills fields a v0 record lacks. */
typedef struct ctx_record_meta {
    uint64_t version;
    int64_t created_at;
    int64_t updated_at;
} ctx_record_meta;

#define CTX_SEAL_VERSION 1 /* first byte of a sealed record */

/* Encodes r (schemaVersion CTX_SCHEMA_VERSION) into out (appended). 0 or CTX_E* + err. */
int ctx_record_encode(const ctx_codec *c, const char *tenant, const char *id, const ctx_record *r,
                      buf *out, char *err, size_t errlen);

/* Decodes data (any bytes) stored under (tenant, id). meta may be NULL. 0 and *out, or
 * CTX_ECORRUPT with a message. */
int ctx_record_decode(const ctx_codec *c, const char *tenant, const char *id, const void *data,
                      size_t len, const ctx_record_meta *meta, ctx_record **out, char *err,
                      size_t errlen);

/* The Text encoding alone (no sealing), for tests and the CLI. */
int ctx_record_to_text(const ctx_record *r, buf *out, char *err, size_t errlen);
int ctx_record_from_text(const char *p, size_t n, ctx_record **out, char *err, size_t errlen);

/* Checks a caller's messages (array of OpenAI-format message objects). */
int ctx_messages_validate(const json_t *messages, char *err, size_t errlen);
/* What an append checks: ctx_messages_validate, and that what is recorded can be replayed with
 * later turns (content parts objects with a type; tool calls with id, type, function.name).
 * Records already stored are read with ctx_messages_validate alone. */
int ctx_messages_validate_append(const json_t *messages, char *err, size_t errlen);

/* ids and tenants: 1..CTX_ID_MAX printable ASCII bytes; tenants also without ':'. */
int ctx_id_validate(const char *what, const char *s, bool tenant, char *err, size_t errlen);

ctx_record *ctx_record_new(const char *id);
/* A copy of r that owns its strings and its messages array but shares the message objects and
 * metadata with r (references, not copies): cheap, and safe while nobody modifies them. */
ctx_record *ctx_record_share(const ctx_record *r);
bool ctx_record_equal(const ctx_record *a, const ctx_record *b);

#endif
