/* strategy.h — what a conversation's stored context becomes in the request sent upstream: the
 * ModelContextProtocol contextStrategy (LastN | TokenBudget | Summarize) and tools injection.
 * Pure functions over OpenAI-format message arrays (jansson); no I/O, no store access, so the
 * pipeline can call them on its loop and the tests can drive them with tables.
 *
 * Terms: a *turn* starts at a user message and runs to the next turn start, so an assistant's
 * tool_calls and the tool results answering them are always in one turn. A user message that
 * sits between a tool call and one of its results does not start a turn (the window would
 * otherwise orphan the result). Messages before the first turn start are never sent. */
#ifndef CTXGATE_CONTEXT_STRATEGY_H
#define CTXGATE_CONTEXT_STRATEGY_H

#include "config/config.h"
#include "tokens/tokens.h"

#include <jansson.h>
#include <stddef.h>

/* The stored side of a conversation (all borrowed). */
typedef struct ctx_conversation {
    const char *persona; /* pinned system prompt; NULL or "" = none */
    const char *summary; /* summary of turns already folded away; NULL or "" = none */
    json_t *history;     /* stored messages, oldest first; NULL = none */
} ctx_conversation;

#define CTX_SUMMARY_PREFIX "Summary of the earlier conversation: "

/* Indices where turns start (ascending) into starts[0..cap); returns how many there are. */
size_t ctx_turn_starts(json_t *history, size_t *starts, size_t cap);

/* The messages to send, a new array: persona (system), summary (system, CTX_SUMMARY_PREFIX +
 * summary), the history window the MCP's strategy picks, then the request's own messages in
 * their order. History messages are copied without store-only fields ("ts").
 *   LastN       the last mcp->last_n turns.
 *   TokenBudget the most recent turns that fit mcp->max_context_tokens (tok_count_chat of the
 *               whole result, reply priming included); persona, summary and the request count
 *               first, and when they alone exceed the budget no history is sent (the request
 *               itself is never trimmed).
 *   Summarize   like TokenBudget after the stored summary: folding old turns into the summary
 *               happens between requests (ctx_summarize_*), this only keeps the request inside
 *               the budget until it has.
 * enc is needed for TokenBudget and Summarize (NULL there returns NULL). */
json_t *ctx_strategy_messages(const cfg_mcp *mcp, const tok_encoding *enc,
                              const ctx_conversation *conv, json_t *request_messages);

/* Tools to send: the request's tools, then each MCP tool whose function name the request does
 * not already define (the request's own wins). A new array, or NULL when there are none. */
json_t *ctx_tools_merge(json_t *request_tools, json_t *mcp_tools);

/* The whole step on an OpenAI chat-completions body: body.messages becomes
 * ctx_strategy_messages(...) and body.tools the merge with mcp->tools. When enc is NULL and the
 * strategy counts tokens, the encoding of body.model is loaded (tok_encoding_for_model).
 * 0, or -1 with a message in err (messages missing or not an array, tokenizer not loadable). */
int ctx_strategy_apply(const cfg_mcp *mcp, const tok_encoding *enc, const ctx_conversation *conv,
                       json_t *body, char *err, size_t errlen);

/* ---- Summarize ---------------------------------------------------------------------------- */

typedef struct ctx_summarize_plan {
    size_t history_tokens; /* tok_count_message summed over the history */
    size_t trigger_tokens; /* the threshold used: summarize.triggerTokens, else maxContextTokens */
    size_t n_summarize;    /* oldest messages to fold into the summary; 0 = nothing to do */
} ctx_summarize_plan;

/* Decides whether the history must be summarised: only when history_tokens exceeds the trigger.
 * Then the most recent turns are kept, at most mcp->last_n of them (when > 0) and at most
 * max_context_tokens / 2 tokens together, and every message before them is to be summarised
 * (always a whole number of turns; everything when not even the last turn fits). */
ctx_summarize_plan ctx_summarize_decide(const cfg_mcp *mcp, const tok_encoding *enc,
                                        json_t *history);

/* The messages of the summarisation request the gateway sends to summarize.target: a system
 * instruction and one user message holding the previous summary (if any) and a transcript of
 * history[0..n). A new array; NULL when n is 0 or past the end. */
json_t *ctx_summarize_request(const char *previous_summary, json_t *history, size_t n);

/* The history that remains once history[0..n) is replaced by the new summary: a new array of
 * history[n..]. NULL when n is past the end or history[n] does not start a turn (the prefix
 * must be whole turns, as ctx_summarize_decide gives). The store keeps the summary itself
 * (ctx_store_set_summary with replaces = n). */
json_t *ctx_summarize_apply(json_t *history, size_t n);

#endif
