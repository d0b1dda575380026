/* call.h — the state of one API request as it moves through the pipeline stages (private to
 * src/pipeline/). Allocated when a request reaches a route; freed after its response is written
 * and its timer (if any) is closed. */
#ifndef CTXGATE_PIPELINE_CALL_H
#define CTXGATE_PIPELINE_CALL_H

#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "pipeline/bound.h"
#include "pipeline/pipeline.h"
#include "pipeline/chat_probe.h"
#include "providers/provider.h"

enum {
    PL_MAX_ATTEMPTS = 16,
    PL_MAX_TOOL_CALLS = 128,     /* tool-call indices of a streamed answer: 0..127 */
    PL_SSE_EVENT_MAX = 1 << 20,  /* one SSE event (or maxResponseBytes when smaller) */
    PL_WHOLE_BUFFER = 256 << 10, /* a non-stream answer without context is relayed beyond it */
    PL_USAGE_TAIL = 16 << 10,    /* kept of a relayed answer: its usage is at the end */
};

/* The caller's API family (its surface): what its requests, answers and errors look like. The
 * pipeline works on the canonical OpenAI form throughout; client.c encodes for the caller. */
typedef enum { PL_FAMILY_OPENAI, PL_FAMILY_ANTHROPIC } pl_family;

struct anthropic_stream;

/* The phases a request walks, in order (driver.c holds the table and walks it; docs/
 * architecture.md draws it). A slot without a function is skipped: the later issues' policies
 * (authorize, limit, cache, transform, guardrail) go there. ACCOUNT and LOG run from the single
 * finish, for every call however it ended. */
typedef enum {
    PL_PHASE_SURFACE,        /* surface.c: the endpoint and the caller's API family */
    PL_PHASE_AUTHENTICATE,   /* auth.c: the caller's key */
    PL_PHASE_AUTHORIZE,      /* slot: rules, OPA (issue 9) */
    PL_PHASE_DECODE,         /* surface.c: the body -> the canonical request, checked */
    PL_PHASE_GUARDRAIL,      /* slot: input validation and guardrails */
    PL_PHASE_LIMIT,          /* slot: rate limits, budget reservation (issue 9) */
    PL_PHASE_CACHE_LOOKUP,   /* slot: response cache (issue 10) */
    PL_PHASE_ROUTE,          /* chat.c: route, target, attempt plan */
    PL_PHASE_CONTEXT_LOAD,   /* context.c: the conversation's history into the request */
    PL_PHASE_TRANSFORM,      /* slot: prompt templates (issue 10) */
    PL_PHASE_UPSTREAM,       /* proxy.c: attempts, failover, translation, relay */
    PL_PHASE_CONTEXT_COMMIT, /* context.c: the turn recorded */
    PL_PHASE_CACHE_STORE,    /* slot: response cache (issue 10) */
    PL_PHASE_RESPOND,        /* call.c: the held answer, or the stream's end */
    PL_PHASE_ACCOUNT,        /* call.c: metrics, cost */
    PL_PHASE_LOG,            /* call.c: the access-log line */
    PL_N_PHASES
} pl_phase_id;

/* What a phase returns: go on with the next phase; wait (a callback calls pl_resume once the
 * phase is done, or finishes the call); or the call is finished (the phase answered). */
typedef enum { PL_CONTINUE, PL_SUSPEND, PL_FINISH } pl_step;

/* The endpoint the request is for (surface phase). */
typedef enum {
    PL_EP_CHAT,
    PL_EP_MESSAGES,
    PL_EP_COUNT_TOKENS,
    PL_EP_EMBEDDINGS,
    PL_EP_MODELS
} pl_endpoint;

/* The route phase's plan (chat.c): the chosen target, then the failover targets the key may
 * use, each once; attempt i (0-based) runs attempts[i % n_plan], n_attempts in all
 * (maxAttempts). */
typedef struct pl_plan {
    const cfg_target *attempts[PL_MAX_ATTEMPTS];
    int n_plan, n_attempts, attempt;
    const cfg_target *target; /* the current attempt's */
    bool target_counted;      /* target's in_flight includes this call */
    /* per plan entry: not to be asked again before (clock_mono_ns), from its Retry-After */
    uint64_t not_before_ns[PL_MAX_ATTEMPTS];
} pl_plan;

/* The upstream phase's state (proxy.c): the attempt in flight and the answer's relay. Its
 * results (usage, usage_source, timings, resp) are read by the context-commit, respond,
 * account and log phases. */
typedef struct pl_upstream_state {
    provider_stream *xs; /* a target that does not speak OpenAI: its stream translation */
    buf up_raw;          /* xs: provider bytes not yet a complete event */
    size_t up_scan;      /* xs: where the blank-line scan of up_raw resumes */
    upstream_req *req;
    char *up_body; /* request body sent upstream (borrowed by the upstream request) */
    int up_status;
    buf resp;            /* non-stream: the upstream body; stream: a partial SSE event */
    bool stream_started; /* the client has received the status line */
    bool client_blocked; /* client write queue above the watermark: upstream paused */
    bool done_seen;      /* stream: data: [DONE] forwarded */
    bool finish_seen;    /* stream: an event carried a non-null finish_reason */
    bool up_error_event; /* context stream: the provider sent an error event (refused) */
    provider_usage usage;
    uint64_t up_start_ns, upstream_us, ttft_us;
    size_t scan_pos;     /* stream: where the blank-line scan of resp resumes */
    size_t resp_total;   /* bytes of the 2xx answer received (maxResponseBytes) */
    bool passthrough;    /* non-stream answer relayed as it arrives; resp keeps its tail */
    bool usage_injected; /* the upstream was asked for stream usage the client did not ask for */
    bool count_text;     /* stream without usage coming: its text is collected in text */
    buf relay_out;       /* stream: events rewritten for the client (usage removed) */
    buf text;            /* count_text: the answer's text, counted with the tokenizer */
    const char *usage_source; /* "upstream", "counted", "none" (access log) */
    /* the caller's family is the target's (an Anthropic caller, an Anthropic target): the
     * request went as the caller's bytes, the answer and the stream's events go back as the
     * provider wrote them; the translation still reads each event (usage, errors, the end),
     * its output is dropped */
    bool native;
    buf native_out; /* native stream: provider events read, not yet written to the caller */
} pl_upstream_state;

/* The context phases' state (context.c); active when ctx_store != NULL. */
typedef struct pl_context_state {
    const cfg_mcp *mcp;    /* the route's ModelContextProtocol */
    ctx_store *ctx_store;  /* this worker's handle on it */
    char *conv_id;         /* X-Conversation-Id (the call's pool) */
    uint64_t conv_version; /* version read; 0 = a new conversation */
    json_t *conv_history;  /* stored messages as read (for Summarize) */
    char *conv_summary;    /* stored summary as read (the call's pool) */
    json_t *conv_new;      /* the request's own non-system messages, appended on success */
    json_t *answer;        /* the assistant's message, assembled from the answer */
    buf ans_text;          /* stream: its content so far (one buffer: no quadratic appends) */
    bool ans_has_text;
    buf *tc_args;      /* stream: the tool calls' arguments so far, by index (PL_MAX_TOOL_CALLS; the
                          array in the call's pool, each buf's bytes on the heap) */
    int context_turns; /* stored messages sent upstream with this request */
    bool ctx_pending;  /* a store request is in flight (creq) */
    uint64_t ctx_op_ns; /* when the store request in flight was issued */
    ctx_req creq;
    /* the record read (NULL = a new conversation): the commit appends to it, not re-reading it */
    ctx_record *conv_record;
    int commit_rc;      /* the context-commit phase's result (CTX_OK when nothing was recorded) */
    bool commit_reread; /* the commit met a conflict and read the conversation again */
} pl_context_state;

typedef struct pl_call {
    arena *pool;     /* the call's memory: the call itself and what lives as long (freed last) */
    http_request *r; /* NULL once the response is finished */
    pl_worker *w;
    pl_phase_id phase; /* the phase running or waiting */
    pl_endpoint endpoint;
    bool finished;   /* the response is written (exactly once: asserted) */
    int holds;       /* entries on the stack (callbacks, the driver): freed when 0 and done */
    pl_bound *bound; /* reference held: the configuration and stores this call uses */
    pl_runtime *rt;  /* bound->rt */
    const cfg_route *route;
    size_t prefix_len;      /* of the matched pathPrefix */
    const cfg_api_key *key; /* NULL when authentication is None */
    chat_probe probe;       /* the body checked in one streaming pass (no document) */
    bool probed;            /* /messages: probe holds the Anthropic body's offsets (it passed) */
    /* /messages: valid Anthropic the canonical form cannot carry (no body document): refused
     * unless the call goes to an Anthropic target as the same family (pl_refuse_deferred) */
    const struct anthropic_refusal *deferred;
    sax_tape tape;     /* that pass's tokens, when a target replays them (any_splice) */
    json_t *body;      /* the body as a document, built on demand: pl_call_body() */
    const char *model; /* as the client sent it (in the request's arena) */
    pl_family family;  /* the caller's API family */
    struct anthropic_stream *client_stream; /* Anthropic caller, stream: the event encoder */
    buf client_out;                         /* events encoded for the caller, before a write */
    bool stream, include_usage;

    bool body_modified; /* the body differs from the client's bytes: never pass through */
    bool aborted;       /* the client went away */
    bool timer_init;
    uv_timer_t timer; /* Mock latency and failover backoff */

    pl_plan plan;               /* the route phase's */
    pl_upstream_state upstream; /* the upstream phase's */
    pl_context_state ctx;       /* the context phases' */

    int status;  /* what the client got */
    char *error; /* message sent to the client on failure (pool) */
    char request_id[40];
    uint64_t start_ns;
} pl_call;

/* driver.c — runs c's phases from c->phase until one waits or the call is finished. */
void pl_run(pl_call *c);
/* The waiting phase is done: the driver goes on with the next one. */
void pl_resume(pl_call *c);
/* Around every entry into a call from the loop (a callback, a timer): the call is freed only
 * once the outermost entry left, so code after a finish never touches freed memory. */
void pl_hold(pl_call *c);
void pl_unhold(pl_call *c);
/* The finishing phases (account, log) for a call whose response was just written. */
void pl_run_finish_phases(pl_call *c);

/* The phases (each in the file named in pl_phase_id). */
pl_step pl_phase_surface(pl_call *c);
pl_step pl_phase_authenticate(pl_call *c);
pl_step pl_phase_decode(pl_call *c);
pl_step pl_phase_route(pl_call *c);
pl_step pl_phase_context_load(pl_call *c);
pl_step pl_phase_upstream(pl_call *c);
pl_step pl_phase_context_commit(pl_call *c);
pl_step pl_phase_respond(pl_call *c);
pl_step pl_phase_account(pl_call *c);
pl_step pl_phase_log(pl_call *c);

/* Content-Type: application/json, for every JSON answer. */
extern const http_header pl_json_ct;

/* Sends the status line and headers of a streamed (SSE) answer once: text/event-stream plus
 * the context headers when the call has a conversation. */
void pl_stream_begin(pl_call *c);

/* call.c — OpenAI-format error answers, ending the call. The message is formatted whole, then
 * made valid UTF-8 (ill-formed bytes become U+FFFD) and bounded to PL_ERROR_MESSAGE_MAX bytes at
 * a character boundary, so any request or provider text may be quoted in it. */
enum { PL_ERROR_MESSAGE_MAX = 2048, PL_ERROR_PARAM_MAX = 256 };
/* The body sent when even the error document cannot be encoded (out of memory). */
#define PL_ERROR_FALLBACK                                                                          \
    "{\"error\":{\"message\":\"The gateway could not encode its error message.\",\"type\":"        \
    "\"server_error\",\"param\":null,\"code\":null}}"
void pl_failv(pl_call *c, int status, const http_header *extra, size_t n_extra, const char *type,
              const char *code, const char *param, const char *fmt, va_list ap)
    __attribute__((format(printf, 8, 0)));
/* The OpenAI error JSON for msg (any bytes), malloc'd, never NULL; *len gets its length. */
char *pl_error_body(const char *type, const char *code, const char *param, const char *msg,
                    size_t *len);
void pl_fail(pl_call *c, int status, const char *type, const char *code, const char *param,
             const char *fmt, ...) __attribute__((format(printf, 6, 7)));
void pl_fail_headers(pl_call *c, int status, const http_header *extra, size_t n_extra,
                     const char *type, const char *code, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 8, 9)));
/* Responds (whole body), then logs and frees the call. */
void pl_finish(pl_call *c, int status, const http_header *hdrs, size_t n, const char *body,
               size_t len);
/* Ends a streamed answer, then logs and frees the call. */
void pl_finish_stream(pl_call *c);
/* Breaks off a streamed answer (no end: the client sees an incomplete body), logs, frees. */
void pl_abort_stream(pl_call *c);

/* client.c — the caller's family. Writes canonical SSE events (whole events only) to a started
 * stream, encoded for the caller; false when the client's write queue is above its watermark. */
bool pl_client_write(pl_call *c, const char *d, size_t n);
/* A whole answer or error body in the canonical form -> the caller's (malloc'd into *out, NULL
 * when it goes as it is). */
void pl_client_encode_whole(pl_call *c, int status, const char *body, size_t len, char **out,
                            size_t *out_len);
/* The decode phase of POST {prefix}/messages, and {prefix}/messages/count_tokens (answered). */
pl_step pl_messages_decode(pl_call *c);
pl_step pl_count_tokens(pl_call *c);
/* 400 with c->deferred's refusal: the call cannot go to an Anthropic target as it is. */
void pl_refuse_deferred(pl_call *c);

/* send.c — one chat request to a target through its adapter (the upstream stage's attempts and
 * the Summarize strategy's requests). */
typedef struct pl_send {
    const cfg_target *target;
    json_t *doc;                  /* the canonical document (a copy is edited), or NULL with raw */
    const provider_raw_body *raw; /* the client's bytes, when they may go as they are */
    bool native;       /* raw is an Anthropic Messages body for an Anthropic target (same family) */
    bool count_tokens; /* raw is a /messages/count_tokens body, for the target's own count */
    const char *beta;  /* native: the caller's anthropic-beta header, passed on (or NULL) */
    bool embeddings;   /* POST /embeddings (doc), else a chat request */
    const char *request_id; /* X-Request-Id upstream; NULL for none */
    arena *pool;            /* URL and headers (copied by the upstream client) */
    void *udata;
    void (*on_headers)(upstream_req *u, int status, void *udata);
    bool (*on_data)(upstream_req *u, const char *data, size_t len, void *udata);
    void (*on_done)(upstream_req *u, upstream_result res, int status, const char *errmsg,
                    void *udata);
} pl_send;
typedef struct pl_sent {
    upstream_req *req;
    char *body;       /* the body sent (malloc'd; NULL = the client's bytes): free after done */
    bool usage_added; /* provider_request.stream_usage_added */
    const char *err_param; /* PROVIDER_EREQUEST: the field at fault */
} pl_sent;
enum { PL_SEND_FAILED = -3 }; /* upstream_send could not start it (err says so) */
/* 0 (out->req is running), PROVIDER_EUNSUPPORTED / PROVIDER_EREQUEST / PL_SEND_FAILED with a
 * sentence in err. */
int pl_send_chat(upstream_client *up, const pl_send *s, pl_sent *out, char *err, size_t errlen);

/* chat.c: the decode phase of POST {prefix}/chat/completions (c->model, c->stream,
 * c->include_usage from the body) */
pl_step pl_chat_decode(pl_call *c);
/* The route and target for c->model (c->route set); NULL when there is none: c was answered. */
const cfg_target *pl_chat_resolve(pl_call *c);
/* The decode phase of POST {prefix}/embeddings (OpenAI's embeddings API; chat.c). */
pl_step pl_embeddings_decode(pl_call *c);
/* The request body as a document (parsed on first use, owned by c); NULL when it cannot be
 * parsed as one (the probe accepted it, so only for bodies jansson refuses). */
json_t *pl_call_body(pl_call *c);
void pl_start_attempt(pl_call *c); /* runs attempts[attempt % n_plan] */
/* The current attempt is over: in-flight count down, latency figure folded in when ok. */
void pl_attempt_end(pl_call *c, bool ok, uint64_t ttfb_us);
/* proxy.c */
void pl_proxy_start(pl_call *c);
/* Ends a started stream with an error event (no [DONE]) and finishes the call; it is logged
 * with c->status when the caller set an error status (>= 400) first, else as 502. */
void pl_stream_fail(pl_call *c, const char *type, const char *code, const char *msg);
/* The text of a message or stream delta that is counted as completion tokens: its content,
 * then each tool call's function name and arguments (msg may be NULL). */
void pl_message_text(const json_t *msg, buf *out);
/* context.c */
/* Response headers into h (room for 2); how many: X-Conversation-Id and X-Context-Turns when
 * the stage runs, else X-Conversation-Id alone when the request carries a valid one. */
size_t pl_context_headers(pl_call *c, http_header *h);
/* Stream: fold one SSE event's delta into the assembled answer. false: the event cannot be
 * part of a storable answer (a tool-call delta with a bad index, a new tool call without
 * id/type/function.name); why says so and the answer must be refused. */
bool pl_context_stream_event(pl_call *c, const char *event, size_t len, char *why, size_t n);
/* Non-stream: take the assistant message from a complete chat.completion body. false: it is
 * not one (not JSON, no choices[0].message, a malformed tool call); why says so. */
bool pl_context_whole_answer(pl_call *c, const char *body, size_t len, char *why, size_t n);
/* The assembled answer's text (content, tool-call names and arguments), for counting. */
void pl_context_answer_text(pl_call *c, buf *out);
/* The respond phase of a call with a context: a non-streamed answer with c->upstream.resp and the
 * context headers, or a stream's end (`data: [DONE]`, or an error event when the commit
 * failed); result is c->ctx.commit_rc. */
void pl_context_finish_whole(pl_call *c, int result);
void pl_context_finish_stream(pl_call *c, int result);
/* Fails c with the error matching a store result (non-streamed calls). */
void pl_context_fail(pl_call *c, int result, const char *msg);
/* Records one store operation in ctxgate_context_store_* (unless the MCP's metrics are off). */
void pl_context_observe(pl_worker *w, const cfg_mcp *mcp, ctx_store *s, const char *op,
                        uint64_t start_ns, int result);
/* Cancels the worker's background summary requests (shutdown). */
void pl_context_cancel_summaries(pl_worker *w);
/* Called when the call is freed: releases what the stage holds. */
void pl_context_free(pl_call *c);

/* contexts_api.c: the context REST API (/v1/contexts[/{id}[/messages]]). true when the path is
 * one of its own (the call is then answered, now or from a store callback). */
bool pl_contexts_handle(pl_call *c);

/* both: schedule fn on the call's timer */
void pl_call_timer(pl_call *c, uint64_t ms, void (*fn)(uv_timer_t *));

#endif
