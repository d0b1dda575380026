/* strategy.c — the contextStrategy of a ModelContextProtocol (see strategy.h): which stored turns
 * go upstream with a request, when and how old turns are folded into a summary, and the MCP's
 * tools merged into the request. Turn boundaries are computed once per call; token counts come
 * from the exact tokenizer in src/tokens/. */
#include "context/strategy.h"

#include "core/buf.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool msg_role_is(json_t *msg, const char *role)
{
    const char *r = json_string_value(json_object_get(msg, "role"));
    return r && strcmp(r, role) == 0;
}

static bool has_text(const char *s)
{
    return s && *s;
}

/* Does the assistant message msg issue a tool call with this id? */
static bool msg_issues_call(json_t *msg, const char *id)
{
    size_t i;
    json_t *call;
    if (!msg_role_is(msg, "assistant")) return false;
    json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
    {
        const char *cid = json_string_value(json_object_get(call, "id"));
        if (cid && strcmp(cid, id) == 0) return true;
    }
    return false;
}

size_t ctx_turn_starts(json_t *history, size_t *starts, size_t cap)
{
    size_t n = json_array_size(history), count = 0;
    if (n == 0) return 0;
    /* blocked[i]: a cut before message i would separate a tool call from its result. */
    bool *blocked = calloc(n, sizeof *blocked);
    if (!blocked) abort();
    for (size_t j = 0; j < n; j++) {
        json_t *msg = json_array_get(history, j);
        const char *id = json_string_value(json_object_get(msg, "tool_call_id"));
        if (!msg_role_is(msg, "tool") || !id) continue;
        for (size_t k = j; k-- > 0;) {
            if (msg_issues_call(json_array_get(history, k), id)) {
                for (size_t i = k + 1; i <= j; i++)
                    blocked[i] = true;
                break;
            }
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!blocked[i] && msg_role_is(json_array_get(history, i), "user")) {
            if (count < cap) starts[count] = i;
            count++;
        }
    }
    free(blocked);
    return count;
}

/* A history message as sent upstream: the same fields minus what only the store uses. */
static json_t *msg_for_upstream(json_t *msg)
{
    if (!json_is_object(msg)) return json_incref(msg);
    json_t *copy = json_object();
    const char *key;
    json_t *value;
    json_object_foreach(msg, key, value)
    {
        if (strcmp(key, "ts") != 0) json_object_set(copy, key, value);
    }
    return copy;
}

static json_t *system_msg(const char *prefix, const char *text)
{
    size_t pl = strlen(prefix), tl = strlen(text);
    char *s = malloc(pl + tl + 1);
    if (!s) abort();
    memcpy(s, prefix, pl);
    memcpy(s + pl, text, tl + 1);
    json_t *m = json_pack("{s:s, s:s}", "role", "system", "content", s);
    free(s);
    return m;
}

/* The first history message to send under a token budget: the earliest turn start such that
 * fixed + the tokens of history[start..] fit the budget; n (nothing) when no turn fits. */
static size_t budget_window(const tok_encoding *enc, json_t *history, const size_t *starts,
                            size_t nstarts, size_t fixed, long budget)
{
    size_t n = json_array_size(history), first = n;
    if (budget < 0 || fixed > (size_t)budget) return n;
    size_t used = fixed, counted_from = n;
    for (size_t t = nstarts; t-- > 0;) {
        size_t add = 0;
        for (size_t i = starts[t]; i < counted_from; i++)
            add += tok_count_message(enc, json_array_get(history, i));
        if (used + add > (size_t)budget) break;
        used += add;
        counted_from = starts[t];
        first = starts[t];
    }
    return first;
}

json_t *ctx_strategy_messages(const cfg_mcp *mcp, const tok_encoding *enc,
                              const ctx_conversation *conv, json_t *request_messages)
{
    bool counts_tokens = mcp->strategy != CTX_LAST_N;
    if (counts_tokens && !enc) return NULL;
    json_t *out = json_array();
    if (has_text(conv->persona)) json_array_append_new(out, system_msg("", conv->persona));
    if (has_text(conv->summary))
        json_array_append_new(out, system_msg(CTX_SUMMARY_PREFIX, conv->summary));

    json_t *history = conv->history;
    size_t n = json_array_size(history), first = n;
    size_t *starts = n ? malloc(n * sizeof *starts) : NULL;
    if (n && !starts) abort();
    size_t nstarts = ctx_turn_starts(history, starts, n);
    if (nstarts > 0) {
        if (!counts_tokens) {
            if (mcp->last_n > 0)
                first = starts[nstarts > (size_t)mcp->last_n ? nstarts - (size_t)mcp->last_n : 0];
        } else {
            /* The fixed part is what is sent whatever the history: persona, summary, request. */
            size_t fixed = tok_count_chat(enc, out) + tok_count_chat(enc, request_messages) - 3;
            first = budget_window(enc, history, starts, nstarts, fixed, mcp->max_context_tokens);
        }
    }
    free(starts);

    for (size_t i = first; i < n; i++)
        json_array_append_new(out, msg_for_upstream(json_array_get(history, i)));
    size_t i;
    json_t *msg;
    json_array_foreach(request_messages, i, msg)
    {
        json_array_append(out, msg);
    }
    return out;
}

static const char *tool_name(json_t *tool)
{
    return json_string_value(json_object_get(json_object_get(tool, "function"), "name"));
}

json_t *ctx_tools_merge(json_t *request_tools, json_t *mcp_tools)
{
    json_t *out = json_array();
    size_t i, k;
    json_t *tool, *own;
    json_array_foreach(request_tools, i, tool)
    {
        json_array_append(out, tool);
    }
    json_array_foreach(mcp_tools, i, tool)
    {
        const char *name = tool_name(tool);
        bool taken = false;
        json_array_foreach(request_tools, k, own)
        {
            const char *own_name = tool_name(own);
            if (name && own_name && strcmp(name, own_name) == 0) {
                taken = true;
                break;
            }
        }
        if (!taken) json_array_append(out, tool);
    }
    if (json_array_size(out) == 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

int ctx_strategy_apply(const cfg_mcp *mcp, const tok_encoding *enc, const ctx_conversation *conv,
                       json_t *body, char *err, size_t errlen)
{
    json_t *messages = json_object_get(body, "messages");
    if (!json_is_array(messages)) {
        snprintf(err, errlen, "request body: \"messages\" must be an array of chat messages");
        return -1;
    }
    if (mcp->strategy != CTX_LAST_N && !enc) {
        const char *model = json_string_value(json_object_get(body, "model"));
        char why[1024];
        enc = tok_load(tok_encoding_for_model(model), why, sizeof why);
        if (!enc) {
            snprintf(err, errlen, "context strategy of %s needs the tokenizer: %s",
                     mcp->name ? mcp->name : "ModelContextProtocol", why);
            return -1;
        }
    }
    json_t *sent = ctx_strategy_messages(mcp, enc, conv, messages);
    json_object_set_new(body, "messages", sent);
    json_t *tools = ctx_tools_merge(json_object_get(body, "tools"), mcp->tools);
    if (tools) json_object_set_new(body, "tools", tools);
    return 0;
}

/* ---- Summarize ---------------------------------------------------------------------------- */

ctx_summarize_plan ctx_summarize_decide(const cfg_mcp *mcp, const tok_encoding *enc,
                                        json_t *history)
{
    ctx_summarize_plan plan = {0, 0, 0};
    size_t n = json_array_size(history);
    size_t *count = n ? malloc(n * sizeof *count) : NULL;
    size_t *starts = n ? malloc(n * sizeof *starts) : NULL;
    if (n && (!count || !starts)) abort();
    for (size_t i = 0; i < n; i++) {
        count[i] = tok_count_message(enc, json_array_get(history, i));
        plan.history_tokens += count[i];
    }
    long trigger =
        mcp->summarize_trigger_tokens > 0 ? mcp->summarize_trigger_tokens : mcp->max_context_tokens;
    plan.trigger_tokens = trigger > 0 ? (size_t)trigger : 0;
    if (trigger > 0 && plan.history_tokens > (size_t)trigger) {
        size_t nstarts = ctx_turn_starts(history, starts, n);
        size_t keep_budget = mcp->max_context_tokens > 0 ? (size_t)mcp->max_context_tokens / 2 : 0;
        size_t kept = 0, kept_turns = 0, first = n, counted_from = n;
        for (size_t t = nstarts; t-- > 0;) {
            if (mcp->last_n > 0 && kept_turns == (size_t)mcp->last_n) break;
            size_t add = 0;
            for (size_t i = starts[t]; i < counted_from; i++)
                add += count[i];
            if (kept + add > keep_budget) break;
            kept += add;
            kept_turns++;
            counted_from = first = starts[t];
        }
        plan.n_summarize = first;
    }
    free(count);
    free(starts);
    return plan;
}

static void transcript_content(buf *b, json_t *content)
{
    size_t i;
    json_t *part;
    if (json_is_string(content)) {
        buf_puts(b, json_string_value(content));
        return;
    }
    json_array_foreach(content, i, part)
    {
        const char *text = json_string_value(json_object_get(part, "text"));
        if (text) {
            if (i > 0) buf_puts(b, " ");
            buf_puts(b, text);
        } else {
            buf_puts(b, i > 0 ? " [non-text content]" : "[non-text content]");
        }
    }
}

/* The function name a tool result answers, looked up among the earlier tool calls. */
static const char *result_tool_name(json_t *history, size_t j, const char *id)
{
    for (size_t k = j; id && k-- > 0;) {
        size_t i;
        json_t *call;
        json_array_foreach(json_object_get(json_array_get(history, k), "tool_calls"), i, call)
        {
            const char *cid = json_string_value(json_object_get(call, "id"));
            if (cid && strcmp(cid, id) == 0) return tool_name(call);
        }
    }
    return NULL;
}

#define CTX_SUMMARIZE_INSTRUCTION                                                                  \
    "You summarise conversations between a user and an assistant. Write a concise summary of "     \
    "the conversation below that lets the assistant continue it without the original messages: "   \
    "keep facts, names, numbers, decisions, the user's preferences and goals, open questions and " \
    "what tool calls returned. If a previous summary is given, fold it into the new one. Reply "   \
    "with the summary only."

json_t *ctx_summarize_request(const char *previous_summary, json_t *history, size_t n)
{
    if (n == 0 || n > json_array_size(history)) return NULL;
    buf b = BUF_INIT;
    if (has_text(previous_summary)) {
        buf_puts(&b, "Previous summary: ");
        buf_puts(&b, previous_summary);
        buf_puts(&b, "\n\n");
    }
    buf_puts(&b, "Conversation:\n");
    for (size_t j = 0; j < n; j++) {
        json_t *msg = json_array_get(history, j);
        const char *role = json_string_value(json_object_get(msg, "role"));
        json_t *content = json_object_get(msg, "content");
        if (!role) role = "unknown";
        if (strcmp(role, "tool") == 0) {
            const char *id = json_string_value(json_object_get(msg, "tool_call_id"));
            const char *name = result_tool_name(history, j, id);
            buf_printf(&b, "tool result (%s): ", name ? name : id ? id : "unknown call");
            transcript_content(&b, content);
            buf_puts(&b, "\n");
            continue;
        }
        if (json_is_string(content) || json_array_size(content) > 0) {
            buf_printf(&b, "%s: ", role);
            transcript_content(&b, content);
            buf_puts(&b, "\n");
        }
        size_t i;
        json_t *call;
        json_array_foreach(json_object_get(msg, "tool_calls"), i, call)
        {
            json_t *fn = json_object_get(call, "function");
            const char *name = json_string_value(json_object_get(fn, "name"));
            const char *args = json_string_value(json_object_get(fn, "arguments"));
            buf_printf(&b, "%s called %s(%s)\n", role, name ? name : "?", args ? args : "");
        }
    }
    json_t *req = json_pack("[{s:s, s:s}, {s:s, s:s}]", "role", "system", "content",
                            CTX_SUMMARIZE_INSTRUCTION, "role", "user", "content", b.data);
    buf_free(&b);
    return req;
}

json_t *ctx_summarize_apply(json_t *history, size_t n)
{
    size_t size = json_array_size(history);
    if (n > size) return NULL;
    if (n < size && n > 0) {
        size_t *starts = malloc(size * sizeof *starts);
        if (!starts) abort();
        size_t nstarts = ctx_turn_starts(history, starts, size);
        bool is_start = false;
        for (size_t t = 0; t < nstarts && !is_start; t++)
            is_start = starts[t] == n;
        free(starts);
        if (!is_start) return NULL;
    }
    json_t *rest = json_array();
    for (size_t i = n; i < size; i++)
        json_array_append(rest, json_array_get(history, i));
    return rest;
}
