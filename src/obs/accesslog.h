/* accesslog.h — one line per finished request on stdout (JSON or text), written with a single
 * write() so lines from several workers never interleave. */
#ifndef CTXGATE_OBS_ACCESSLOG_H
#define CTXGATE_OBS_ACCESSLOG_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"

typedef struct accesslog_entry {
    const char *request_id;
    const char *remote_addr;
    const char *method;
    const char *path;
    int status;
    uint64_t duration_us;
    uint64_t upstream_us;                         /* 0 = none */
    uint64_t ttft_us;                             /* 0 = none */
    const char *gateway, *route, *model, *target; /* may be NULL */
    const char *user, *app, *tenant;              /* may be NULL */
    uint64_t prompt_tokens, completion_tokens;
    /* where the token counts come from: "upstream" (the provider's usage), "counted" (the
     * gateway's tokenizer) or "none" (no usage arrived); NULL (left out) without an answer */
    const char *usage_source;
    int attempts; /* upstream attempts (retries/failover) */
    bool stream;
    const char *error;    /* error message sent to the client, NULL on success */
    const char *req_body; /* only when includeBodies; may be NULL */
    const char *resp_body;
} accesslog_entry;

void accesslog_write(const accesslog_entry *e, bool json);

/* Appends the line accesslog_write would write (with its trailing newline). JSON lines are valid
 * JSON for any bytes in the strings: control characters are escaped and invalid UTF-8 is replaced
 * by U+FFFD. NULL strings and zero upstream_us / ttft_us are left out. Text lines are logfmt
 * (key=value, values quoted when they need it). */
void accesslog_format(buf *out, const accesslog_entry *e, bool json);

/* Where lines go (default 1, stdout); for tests and for a log file opened by the caller. */
void accesslog_set_fd(int fd);

#endif
