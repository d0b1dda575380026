/* context.c — the conversation-context stage. A request to a route with contextRef that carries
 * X-Conversation-Id gets, in order, the persona, the stored history trimmed by the MCP's
 * contextStrategy, and its own messages; after a successful answer its new non-system messages and
 * the assistant's full answer are appended before the client sees the end of the answer (the
 * whole body, or the stream's `data: [DONE]`), so an answer the client received is committed.
 * It works on the canonical (OpenAI) body, so every API surface and provider gets it.
 *
 * Summarize: once a commit leaves the history over summarize.triggerTokens, the oldest turns are
 * summarised in the background by the configured target and stored with ctx_store_set_summary;
 * requests meanwhile stay inside maxContextTokens by trimming (strategy.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context/record.h"
#include "context/strategy.h"
#include "core/clock.h"
#include "core/json.h"
#include "core/log.h"
#include "pipeline/call.h"

/* Conflicts and misses are answers, not failures of the store. */
void pl_context_observe(pl_worker *w, const cfg_mcp *mcp, ctx_store *s, const char *op,
                        uint64_t start_ns, int result)
{
    if (!mcp->metrics_enabled) return;
    bool ok = result == CTX_OK || result == CTX_ENOTFOUND || result == CTX_ECONFLICT ||
              result == CTX_EINVAL || result == CTX_EREADONLY;
    obs_ctx_op(w->obs, mcp->name, ctx_store_backend_name(s), op,
               (clock_mono_ns() - start_ns) / 1000u, ok);
}

static const tok_encoding *encoding_for(const pl_call *c, char *err, size_t errlen)
{
    const char *model = c->plan.attempts[0] ? c->plan.attempts[0]->model_name : c->model;
    return tok_load(tok_encoding_for_model(model), err, errlen);
}

static bool id_ok(str id)
{
    if (id.n == 0 || id.n > CTX_ID_MAX) return false;
    for (size_t i = 0; i < id.n; i++)
        if ((unsigned char)id.p[i] <= 0x20 || (unsigned char)id.p[i] >= 0x7f) return false;
    return true;
}

static const char *tenant_of(const pl_call *c)
{
    return c->key && c->key->tenant ? c->key->tenant : NULL;
}

void pl_context_fail(pl_call *c, int result, const char *msg)
{
    switch (result) {
    case CTX_ECONFLICT:
        pl_fail(c, 409, "invalid_request_error", "conversation_conflict", NULL,
                "Conversation '%s' was changed by another request at the same time; nothing was "
                "recorded. Retry the request.",
                c->ctx.conv_id);
        return;
    case CTX_EINVAL:
        pl_fail(c, 400, "invalid_request_error", "invalid_conversation", "X-Conversation-Id", "%s",
                msg);
        return;
    case CTX_ECORRUPT:
        /* the store's own words (paths, addresses, cipher errors) go to the log only */
        log_warn("request %s: conversation '%s' cannot be read: %s", c->request_id, c->ctx.conv_id,
                 msg);
        pl_fail(c, 500, "server_error", "context_record_unreadable", NULL,
                "Conversation '%s' cannot be read: its stored record is damaged.", c->ctx.conv_id);
        return;
    default:
        log_warn("request %s: the context store of ModelContextProtocol '%s' is unavailable: %s",
                 c->request_id, c->ctx.mcp->name, msg);
        pl_fail(c, 503, "server_error", "context_store_unavailable", NULL,
                "The context store of ModelContextProtocol '%s' is unavailable.", c->ctx.mcp->name);
        return;
    }
}

static void loaded(pl_call *c, ctx_req *req);

static void on_loaded(ctx_req *req)
{
    pl_call *c = req->data;
    pl_hold(c);
    loaded(c, req);
    pl_unhold(c);
}

/* The stored history becomes part of the body; the phase is done. */
static void loaded(pl_call *c, ctx_req *req)
{
    c->ctx.ctx_pending = false;
    pl_context_observe(c->w, c->ctx.mcp, c->ctx.ctx_store, "get", c->ctx.ctx_op_ns, req->result);
    if (c->aborted) {
        ctx_req_cleanup(req);
        pl_finish(c, 499, NULL, 0, NULL, 0);
        return;
    }
    if (req->result != CTX_OK && req->result != CTX_ENOTFOUND) {
        char msg[sizeof req->errmsg];
        memcpy(msg, req->errmsg, sizeof msg);
        int rc = req->result;
        ctx_req_cleanup(req);
        pl_context_fail(c, rc, msg);
        return;
    }
    ctx_record *rec = req->result == CTX_OK ? req->record : NULL;
    req->record = NULL;
    ctx_req_cleanup(req);
    if (rec) {
        c->ctx.conv_record = rec; /* kept: the commit appends to it without reading it again */
        c->ctx.conv_version = rec->version;
        c->ctx.conv_history = json_incref(rec->messages);
        c->ctx.conv_summary = arena_strdup(c->pool, rec->summary);
    }
    json_t *req_msgs = json_object_get(c->body, "messages");
    size_t n_request = json_array_size(req_msgs);
    ctx_conversation conv = {.persona = c->ctx.mcp->persona,
                             .summary = c->ctx.conv_summary,
                             .history = c->ctx.conv_history};
    char err[320];
    const tok_encoding *enc = NULL;
    if (c->ctx.mcp->strategy != CTX_LAST_N) enc = encoding_for(c, err, sizeof err);
    if (c->ctx.mcp->strategy != CTX_LAST_N && !enc) {
        const char *strategy =
            c->ctx.mcp->strategy == CTX_TOKEN_BUDGET ? "TokenBudget" : "Summarize";
        log_warn("request %s: contextStrategy %s needs the tokenizer: %s", c->request_id, strategy,
                 err); /* err names files on this server: the log only */
        pl_fail(c, 500, "server_error", "tokenizer_unavailable", NULL,
                "contextStrategy %s of ModelContextProtocol '%s' needs the tokenizer, which this "
                "gateway could not load.",
                strategy, c->ctx.mcp->name);
        return;
    }
    int rc = ctx_strategy_apply(c->ctx.mcp, enc, &conv, c->body, err, sizeof err);
    if (rc != 0) {
        pl_fail(c, 400, "invalid_request_error", "invalid_value", "messages", "%s", err);
        return;
    }
    size_t n_sent = json_array_size(json_object_get(c->body, "messages"));
    size_t fixed = n_request + (conv.persona && *conv.persona ? 1 : 0) +
                   (conv.summary && *conv.summary ? 1 : 0);
    c->ctx.context_turns = n_sent > fixed ? (int)(n_sent - fixed) : 0;
    c->body_modified = true;
    pl_resume(c);
}

/* Fails c for messages[i].field (field NULL: messages[i]): invalid_type or invalid_value, with
 * what was expected. false, for the caller to return. */
static bool bad_message(pl_call *c, size_t i, const char *field, bool type, const char *expected)
{
    char param[96];
    snprintf(param, sizeof param, "messages[%zu]%s%s", i, field ? "." : "", field ? field : "");
    pl_fail(c, 400, "invalid_request_error", type ? "invalid_type" : "invalid_value", param,
            "Invalid %s for '%s': expected %s.", type ? "type" : "value", param, expected);
    return false;
}

/* The request's messages are checked against what the store accepts (ctx_messages_validate)
 * before anything is read or sent upstream: a message the store would refuse at commit time
 * would otherwise cost a billed upstream call whose answer is then dropped. Fails c with the
 * field at fault as param; false when c failed. */
static bool request_messages_ok(pl_call *c, json_t *messages)
{
    static const char *const roles[] = {"system", "user",      "assistant",
                                        "tool",   "developer", "function"};
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        if (!json_is_object(m)) return bad_message(c, i, NULL, true, "an object");
        const char *role = json_string_value(json_object_get(m, "role"));
        bool known = false;
        for (size_t k = 0; role && k < sizeof roles / sizeof roles[0]; k++)
            known |= strcmp(role, roles[k]) == 0;
        if (!known)
            return bad_message(c, i, "role", false,
                               "one of system, user, assistant, tool, developer, function");
        json_t *content = json_object_get(m, "content");
        if (content && !json_is_string(content) && !json_is_array(content) &&
            !json_is_null(content))
            return bad_message(c, i, "content", true,
                               "a string, an array of content parts or null");
        char field[48];
        size_t j;
        json_t *part;
        json_array_foreach(json_is_array(content) ? content : NULL, j, part)
        {
            if (!json_is_object(part) || !json_is_string(json_object_get(part, "type"))) {
                snprintf(field, sizeof field, "content[%zu]", j);
                return bad_message(c, i, field, true,
                                   "a content part, an object with a string 'type'");
            }
        }
        json_t *tc = json_object_get(m, "tool_calls");
        if (tc && !json_is_array(tc)) return bad_message(c, i, "tool_calls", true, "an array");
        /* a recorded tool call is replayed with every later turn: it must be one the
         * provider takes (the same rule as for the answers recorded) */
        json_t *call;
        json_array_foreach(tc, j, call)
        {
            json_t *fn = json_object_get(call, "function");
            if (!json_is_object(call) || !json_is_string(json_object_get(call, "id")) ||
                !json_is_string(json_object_get(call, "type")) ||
                !json_is_string(json_object_get(fn, "name"))) {
                snprintf(field, sizeof field, "tool_calls[%zu]", j);
                return bad_message(c, i, field, true,
                                   "a tool call, an object with a string 'id', a string 'type' "
                                   "and a 'function' with a string 'name'");
            }
        }
        json_t *tcid = json_object_get(m, "tool_call_id");
        if (tcid && !json_is_string(tcid))
            return bad_message(c, i, "tool_call_id", true, "a string");
        json_t *ts = json_object_get(m, "ts");
        if (ts && !json_is_integer(ts))
            return bad_message(c, i, "ts", true, "an integer (Unix milliseconds)");
    }
    /* whatever else the store checks is refused here too, before the upstream call */
    char err[256];
    if (ctx_messages_validate(messages, err, sizeof err) != 0) {
        pl_fail(c, 400, "invalid_request_error", "invalid_value", "messages", "%s", err);
        return false;
    }
    return true;
}

/* The context-load phase: with X-Conversation-Id on a route with a contextRef, the stored
 * history is read (the phase waits for it) and merged into the request by the strategy. */
pl_step pl_phase_context_load(pl_call *c)
{
    const cfg_mcp *mcp = c->route->context;
    if (!mcp || c->endpoint == PL_EP_EMBEDDINGS || c->endpoint == PL_EP_COUNT_TOKENS)
        return PL_CONTINUE; /* not a conversation */
    str id = http_request_header(c->r, "x-conversation-id");
    if (!id.p) return PL_CONTINUE; /* no header: no context */
    if (!id_ok(id)) {
        pl_fail(c, 400, "invalid_request_error", "invalid_conversation", "X-Conversation-Id",
                "X-Conversation-Id must be 1 to %d printable ASCII characters without spaces.",
                CTX_ID_MAX);
        return PL_FINISH;
    }
    if (c->deferred) { /* the history goes in through the canonical form, which cannot carry it */
        pl_refuse_deferred(c);
        return PL_FINISH;
    }
    c->ctx.mcp = mcp;
    c->ctx.conv_id = arena_strndup(c->pool, id.p, id.n);
    const char *why = NULL;
    c->ctx.ctx_store = pl_bound_store(c->bound, mcp, &why);
    if (!c->ctx.ctx_store) {
        pl_context_fail(c, CTX_EUNAVAIL, why ? why : "it could not be opened");
        return PL_FINISH;
    }
    json_t *body = pl_call_body(c);
    if (!body) {
        pl_fail(c, 400, "invalid_request_error", "invalid_json", NULL,
                "The request body could not be read as a JSON document.");
        return PL_FINISH;
    }
    if (!request_messages_ok(c, json_object_get(body, "messages"))) return PL_FINISH;
    /* what this request adds to the conversation: its own messages, without system ones. The
     * body keeps every number's text for the provider (core/json.h); the store keeps numbers as
     * jansson does, the nearest double, so a number beyond that range cannot be recorded. */
    c->ctx.conv_new = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(body, "messages"), i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || strcmp(role, "system") == 0 || strcmp(role, "developer") == 0) continue;
        json_t *stored = json_plain(m);
        if (!stored) {
            pl_fail(c, 400, "invalid_request_error", "invalid_value", "messages",
                    "Invalid 'messages[%zu]': it holds a number beyond the range of a double "
                    "(about 1.8e308), which conversation '%s' cannot record.",
                    i, c->ctx.conv_id);
            return PL_FINISH;
        }
        json_array_append_new(c->ctx.conv_new, stored);
    }
    memset(&c->ctx.creq, 0, sizeof c->ctx.creq);
    c->ctx.creq.data = c;
    c->ctx.ctx_op_ns = clock_mono_ns();
    int rc = ctx_store_get(c->ctx.ctx_store, &c->ctx.creq, tenant_of(c), c->ctx.conv_id, on_loaded);
    if (rc != 0) {
        pl_context_fail(c, rc, c->ctx.creq.errmsg);
        return PL_FINISH;
    }
    c->ctx.ctx_pending = true;
    return PL_SUSPEND;
}

size_t pl_context_headers(pl_call *c, http_header *h)
{
    if (!c->r) return 0;
    if (!c->ctx.ctx_store) {
        /* the stage did not run (another route, an error before it, an answer it never saw):
         * a valid id is still echoed, so every answer of the request carries it */
        str id = http_request_header(c->r, "x-conversation-id");
        if (!id.p || !id_ok(id)) return 0;
        h[0] = (http_header){STR_LIT("X-Conversation-Id"), id};
        return 1;
    }
    char *turns = arena_printf(c->r->pool, "%d", c->ctx.context_turns);
    h[0] = (http_header){STR_LIT("X-Conversation-Id"), str_c(c->ctx.conv_id)};
    h[1] = (http_header){STR_LIT("X-Context-Turns"), str_c(turns)};
    return 2;
}

/* ---- assembling the answer ---- */

static json_t *answer_get(pl_call *c)
{
    if (!c->ctx.answer) c->ctx.answer = json_pack("{s:s, s:s}", "role", "assistant", "content", "");
    return c->ctx.answer;
}

/* tool_calls arrive as deltas keyed by index: id, type and name once (in the first delta of
 * the call), arguments in pieces (kept in c->ctx.tc_args until the answer is finalized) */
static bool merge_tool_call(pl_call *c, json_t *calls, json_t *delta, char *why, size_t whylen)
{
    json_t *jindex = json_object_get(delta, "index");
    json_int_t index = json_integer_value(jindex);
    if (!json_is_integer(jindex) || index < 0 || index >= PL_MAX_TOOL_CALLS) {
        /* json_encode_fast: the index as sent, also when it is a raw number (core/json.h) */
        char *shown = jindex ? json_encode_fast(jindex, NULL) : NULL;
        snprintf(why, whylen, "a tool-call delta has index %.40s; expected an integer from 0 to %d",
                 shown ? shown : "(none)", PL_MAX_TOOL_CALLS - 1);
        free(shown);
        return false;
    }
    json_t *tc = NULL;
    size_t i;
    json_t *x;
    json_array_foreach(calls, i, x)
    {
        if (json_integer_value(json_object_get(x, "_index")) == index) tc = x;
    }
    json_t *id = json_object_get(delta, "id"), *type = json_object_get(delta, "type");
    json_t *fn = json_object_get(delta, "function");
    json_t *name = json_object_get(fn, "name");
    if (!tc) {
        if (!json_is_string(id) || !json_is_string(type) || !json_is_string(name)) {
            snprintf(why, whylen,
                     "the first delta of tool call %d has no %s; a tool call starts with its id, "
                     "type and function.name",
                     (int)index,
                     !json_is_string(id)     ? "id"
                     : !json_is_string(type) ? "type"
                                             : "function.name");
            return false;
        }
        tc = json_pack("{s:I, s:{}}", "_index", index, "function");
        json_array_append_new(calls, tc);
    }
    if (json_is_string(id)) json_object_set(tc, "id", id);
    if (json_is_string(type)) json_object_set(tc, "type", type);
    json_t *tfn = json_object_get(tc, "function");
    if (json_is_object(fn)) {
        if (json_is_string(name)) json_object_set(tfn, "name", name);
        json_t *args = json_object_get(fn, "arguments");
        if (json_is_string(args)) {
            if (!c->ctx.tc_args) {
                c->ctx.tc_args = arena_calloc(c->pool, PL_MAX_TOOL_CALLS, sizeof *c->ctx.tc_args);
            }
            buf *b = &c->ctx.tc_args[index];
            buf_append(b, json_string_value(args), json_string_length(args));
            if (!b->data) buf_reserve(b, 1); /* "" still makes the arguments present */
        }
    }
    return true;
}

bool pl_context_stream_event(pl_call *c, const char *event, size_t len, char *why, size_t whylen)
{
    if (len < 6 || memcmp(event, "data:", 5) != 0) return true;
    const char *p = event + 5;
    size_t n = len - 5;
    while (n && *p == ' ')
        p++, n--;
    if (n >= 6 && memcmp(p, "[DONE]", 6) == 0) return true;
    /* what the client is shown must be what is recorded: an event that cannot be read is
     * refused rather than skipped */
    json_t *ev = json_decode_fast(p, n, NULL, 0);
    if (!json_is_object(ev)) {
        snprintf(why, whylen, "an event is not a JSON object (or not strict UTF-8)");
        json_decref(ev);
        return false;
    }
    if (json_is_object(json_object_get(ev, "error"))) {
        /* the provider gave up mid-stream: the answer so far is not an answer */
        char pmsg[200]; /* cut between characters, and it fits in why */
        provider_error_message(p, n, pmsg, sizeof pmsg);
        snprintf(why, whylen, "it sent an error event mid-stream (%s)",
                 pmsg[0] ? pmsg : "no message");
        c->upstream.up_error_event = true;
        json_decref(ev);
        return false;
    }
    bool ok = true;
    json_t *choices = json_object_get(ev, "choices");
    if (choices && !json_is_array(choices)) {
        snprintf(why, whylen, "an event's choices is not an array");
        json_decref(ev);
        return false;
    }
    /* the first choice only (a request with "n" streams the others interleaved) */
    json_t *choice = NULL, *ch;
    size_t ci;
    json_array_foreach(json_object_get(ev, "choices"), ci, ch)
    {
        json_t *ix = json_object_get(ch, "index");
        if (!ix || (json_is_integer(ix) && json_integer_value(ix) == 0)) {
            choice = ch;
            break;
        }
    }
    json_t *delta = json_object_get(choice, "delta");
    if (json_is_object(delta)) {
        json_t *a = answer_get(c);
        json_t *content = json_object_get(delta, "content");
        if (content && !json_is_string(content) && !json_is_null(content)) {
            snprintf(why, whylen, "a delta's content is not a string");
            json_decref(ev);
            return false;
        }
        if (json_is_string(content)) {
            buf_append(&c->ctx.ans_text, json_string_value(content), json_string_length(content));
            c->ctx.ans_has_text = true;
        }
        json_t *tcs = json_object_get(delta, "tool_calls");
        if (tcs && !json_is_array(tcs) && !json_is_null(tcs)) {
            snprintf(why, whylen, "a delta's tool_calls is not an array");
            ok = false;
        }
        if (json_is_array(tcs)) {
            json_t *calls = json_object_get(a, "tool_calls");
            if (!calls) {
                calls = json_array();
                json_object_set_new(a, "tool_calls", calls);
            }
            size_t i;
            json_t *d;
            json_array_foreach(tcs, i, d)
            {
                if (!ok) break;
                if (!json_is_object(d)) {
                    snprintf(why, whylen, "a tool-call delta is not an object");
                    ok = false;
                    break;
                }
                ok = merge_tool_call(c, calls, d, why, whylen);
            }
        }
    }
    json_decref(ev);
    return ok;
}

/* A stored tool call must be replayable: an object with an id, a type and function.name. */
static bool tool_calls_ok(json_t *tcs, char *why, size_t whylen)
{
    if (!tcs || json_is_null(tcs)) return true;
    if (!json_is_array(tcs)) {
        snprintf(why, whylen, "choices[0].message.tool_calls is not an array");
        return false;
    }
    size_t i;
    json_t *tc;
    json_array_foreach(tcs, i, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        const char *missing = !json_is_string(json_object_get(tc, "id"))     ? "id"
                              : !json_is_string(json_object_get(tc, "type")) ? "type"
                              : !json_is_string(json_object_get(fn, "name")) ? "function.name"
                                                                             : NULL;
        if (missing) {
            snprintf(why, whylen, "choices[0].message.tool_calls[%zu] has no %s", i, missing);
            return false;
        }
    }
    return true;
}

bool pl_context_whole_answer(pl_call *c, const char *body, size_t len, char *why, size_t whylen)
{
    json_t *doc = json_decode_fast(body, len, NULL, 0);
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "the answer is not a JSON object");
        json_decref(doc);
        return false;
    }
    json_t *msg = json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "message");
    if (!json_is_object(msg)) {
        snprintf(why, whylen, "the answer has no choices[0].message");
        json_decref(doc);
        return false;
    }
    json_t *tcs = json_object_get(msg, "tool_calls");
    /* recorded as the client gets it: a string, null, or content parts (objects with a type) */
    json_t *mc = json_object_get(msg, "content");
    bool mc_ok = !mc || json_is_string(mc) || json_is_null(mc) || json_is_array(mc);
    size_t k;
    json_t *part;
    json_array_foreach(json_is_array(mc) ? mc : NULL, k, part)
    {
        mc_ok &= json_is_object(part) && json_is_string(json_object_get(part, "type"));
    }
    if (!mc_ok) {
        snprintf(why, whylen,
                 "choices[0].message.content is not a string, null or an array of content parts");
        json_decref(doc);
        return false;
    }
    if (!tool_calls_ok(tcs, why, whylen)) {
        json_decref(doc);
        return false;
    }
    json_t *a = json_object();
    json_object_set_new(a, "role", json_string("assistant"));
    json_t *content = json_object_get(msg, "content");
    json_object_set(a, "content",
                    json_is_string(content) || json_is_array(content) ? content : json_null());
    if (json_is_array(tcs) && json_array_size(tcs)) json_object_set(a, "tool_calls", tcs);
    json_decref(doc);
    /* numbers as the store keeps them (see pl_phase_context_load): the provider's fault, said now,
     * not a store error at commit time */
    json_t *stored = json_plain(a);
    json_decref(a);
    if (!stored) {
        snprintf(why, whylen,
                 "choices[0].message holds a number beyond the range of a double, which the "
                 "conversation store cannot record");
        return false;
    }
    json_decref(c->ctx.answer);
    c->ctx.answer = stored;
    return true;
}

/* A streamed answer's pieces become its content and arguments; the tool calls lose their
 * bookkeeping index before they are stored. Idempotent. */
static void answer_finalize(pl_call *c)
{
    json_t *a = c->ctx.answer;
    if (!a) return;
    if (c->ctx.ans_has_text) {
        json_object_set_new(
            a, "content",
            json_stringn(c->ctx.ans_text.data ? c->ctx.ans_text.data : "", c->ctx.ans_text.len));
        c->ctx.ans_has_text = false;
        buf_free(&c->ctx.ans_text);
    }
    json_t *calls = json_object_get(a, "tool_calls");
    size_t i;
    json_t *tc;
    json_array_foreach(calls, i, tc)
    {
        json_t *ix = json_object_get(tc, "_index");
        if (!ix) continue;
        json_int_t index = json_integer_value(ix);
        buf *b = c->ctx.tc_args && index >= 0 && index < PL_MAX_TOOL_CALLS ? &c->ctx.tc_args[index]
                                                                           : NULL;
        if (b && b->data)
            json_object_set_new(json_object_get(tc, "function"), "arguments",
                                json_stringn(b->data, b->len));
        json_object_del(tc, "_index");
    }
    json_t *content = json_object_get(a, "content");
    if (calls && json_array_size(calls) && json_is_string(content) &&
        json_string_length(content) == 0)
        json_object_set_new(a, "content", json_null());
}

void pl_context_answer_text(pl_call *c, buf *out)
{
    answer_finalize(c);
    pl_message_text(c->ctx.answer, out);
}

/* ---- summarising in the background ---- */

typedef struct summarize_job {
    pl_worker *w;
    pl_bound *bound; /* reference held */
    ctx_store *store;
    const cfg_mcp *mcp;
    char *tenant, *id;
    size_t replaces;
    uint64_t version; /* the conversation's version the summary applies to */
    char *body;       /* upstream request body */
    const cfg_target *target;
    buf resp;
    ctx_req creq;
    uint64_t op_ns;
    upstream_req *up;                  /* the summary request while it runs */
    struct summarize_job *prev, *next; /* the worker's running summary requests */
} summarize_job;

/* Summary requests in flight are listed on their worker, so a shutdown can cancel them before
 * the upstream client goes (its cancellation runs no callback that would free them). */
static void job_link(summarize_job *j)
{
    j->prev = NULL;
    j->next = j->w->summaries;
    if (j->next) j->next->prev = j;
    j->w->summaries = j;
}

static void job_unlink(summarize_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else if (j->w->summaries == j)
        j->w->summaries = j->next;
    if (j->next) j->next->prev = j->prev;
    j->prev = j->next = NULL;
    j->up = NULL;
}

static void job_free(summarize_job *j)
{
    if (j->up) job_unlink(j);
    pl_bound_unref(j->bound);
    free(j->tenant);
    free(j->id);
    free(j->body);
    buf_free(&j->resp);
    free(j);
}

static void on_summary_stored(ctx_req *req)
{
    summarize_job *j = req->data;
    pl_context_observe(j->w, j->mcp, j->store, "set_summary", j->op_ns, req->result);
    if (req->result == CTX_OK)
        log_debug("conversation %s: %zu messages folded into the summary (version %llu)", j->id,
                  j->replaces, (unsigned long long)req->version);
    else if (req->result == CTX_ECONFLICT)
        log_debug("conversation %s changed while it was summarised; the next turn retries", j->id);
    else
        log_warn("conversation %s: storing the summary failed: %s", j->id, req->errmsg);
    ctx_req_cleanup(req);
    job_free(j);
}

static void job_store(summarize_job *j, const char *summary)
{
    memset(&j->creq, 0, sizeof j->creq);
    j->creq.data = j;
    j->op_ns = clock_mono_ns();
    if (ctx_store_set_summary(j->store, &j->creq, j->tenant, j->id, summary, j->replaces,
                              j->version, on_summary_stored) != 0) {
        log_warn("conversation %s: storing the summary failed: %s", j->id, j->creq.errmsg);
        job_free(j);
    }
}

static bool job_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    summarize_job *j = udata;
    size_t cap = j->target->max_response_bytes;
    if (len > cap - j->resp.len) {
        /* bounded like every answer: a summary is never held beyond maxResponseBytes */
        log_warn("conversation %s: the summary from target '%s' is larger than its "
                 "maxResponseBytes (%zu bytes); the next turn retries",
                 j->id, j->target->name, cap);
        upstream_cancel(u);
        job_free(j);
        return true;
    }
    buf_append(&j->resp, data, len);
    return true;
}

static void job_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                     void *udata)
{
    summarize_job *j = udata;
    job_unlink(j);
    bool ok = res == UPSTREAM_OK && status == 200;
    if (ok && !provider_speaks_openai(j->target)) { /* another family's answer -> canonical */
        char why[256];
        size_t n = 0;
        char *a = provider_chat_answer(j->target, j->resp.data ? j->resp.data : "", j->resp.len,
                                       j->target->name, &n, NULL, why, sizeof why);
        buf_reset(&j->resp);
        if (a) buf_append(&j->resp, a, n);
        free(a);
    }
    json_t *doc = ok ? json_loadb(j->resp.data ? j->resp.data : "", j->resp.len, 0, NULL) : NULL;
    json_t *msg = json_object_get(json_array_get(json_object_get(doc, "choices"), 0), "message");
    const char *text = json_string_value(json_object_get(msg, "content"));
    if (!text || !*text) {
        log_warn("conversation %s: summarising with target '%s' failed (%s, HTTP %d); the next "
                 "turn retries",
                 j->id, j->target->name, res == UPSTREAM_OK ? "no summary text" : errmsg, status);
        json_decref(doc);
        job_free(j);
        return;
    }
    job_store(j, text);
    json_decref(doc);
}

static const cfg_target *summarize_target(const pl_call *c)
{
    const cfg_gateway *gw = c->ctx.mcp->summarize_gateway
                                ? cfg_find_gateway(c->rt->snap, c->ctx.mcp->summarize_gateway)
                                : c->rt->gw;
    if (!gw || !c->ctx.mcp->summarize_target) return NULL;
    return cfg_gateway_find_target(gw, c->ctx.mcp->summarize_target,
                                   strlen(c->ctx.mcp->summarize_target));
}

static void summarize_start(pl_call *c, uint64_t version)
{
    char err[320];
    const tok_encoding *enc = encoding_for(c, err, sizeof err);
    if (!enc) return;
    json_t *history = json_array();
    if (c->ctx.conv_history) json_array_extend(history, c->ctx.conv_history);
    json_array_extend(history, c->ctx.conv_new);
    if (c->ctx.answer) json_array_append(history, c->ctx.answer);
    ctx_summarize_plan plan = ctx_summarize_decide(c->ctx.mcp, enc, history);
    if (plan.n_summarize == 0) {
        json_decref(history);
        return;
    }
    const cfg_target *t = summarize_target(c);
    if (!t) {
        log_warn("ModelContextProtocol %s: summarize.target '%s' is not a model target of gateway "
                 "'%s'; history is trimmed instead",
                 c->ctx.mcp->name, c->ctx.mcp->summarize_target ? c->ctx.mcp->summarize_target : "",
                 c->ctx.mcp->summarize_gateway ? c->ctx.mcp->summarize_gateway : c->rt->gw->name);
        json_decref(history);
        return;
    }
    json_t *messages = ctx_summarize_request(c->ctx.conv_summary, history, plan.n_summarize);
    json_decref(history);
    if (!messages) return;
    summarize_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    j->w = c->w;
    j->bound = c->bound;
    pl_bound_ref(j->bound);
    j->store = c->ctx.ctx_store;
    j->mcp = c->ctx.mcp;
    j->tenant = tenant_of(c) ? strdup(tenant_of(c)) : NULL;
    j->id = strdup(c->ctx.conv_id);
    j->replaces = plan.n_summarize;
    j->version = version;
    j->target = t;
    json_t *body = json_pack("{s:s, s:o}", "model", t->model_name, "messages", messages);
    arena *pool = arena_new(1024);
    if (!body || !pool) abort();
    pl_send s = {.target = t,
                 .doc = body,
                 .pool = pool,
                 .udata = j,
                 .on_data = job_data,
                 .on_done = job_done};
    pl_sent sent;
    int rc = pl_send_chat(c->w->up, &s, &sent, err, sizeof err);
    json_decref(body);
    if (rc != 0) {
        log_warn("conversation %s: cannot summarise with target '%s': %s", j->id, t->name, err);
        arena_free(pool);
        job_free(j);
        return;
    }
    j->body = sent.body;
    j->up = sent.req;
    job_link(j);
    arena_free(pool); /* upstream_send copied URL and headers */
}

/* ---- committing ---- */

static void on_committed(ctx_req *req);

/* the request's messages and the answer, as the commit appends them */
static json_t *commit_messages(pl_call *c)
{
    json_t *msgs = json_array();
    json_array_extend(msgs, c->ctx.conv_new);
    if (c->ctx.answer) json_array_append(msgs, c->ctx.answer);
    return msgs;
}

/* ctx_store_append_to on c->ctx.conv_record; 0 when under way (on_committed follows) */
static int start_append(pl_call *c, json_t *msgs)
{
    memset(&c->ctx.creq, 0, sizeof c->ctx.creq);
    c->ctx.creq.data = c;
    c->ctx.ctx_op_ns = clock_mono_ns();
    int rc = ctx_store_append_to(c->ctx.ctx_store, &c->ctx.creq, tenant_of(c), c->ctx.conv_id,
                                 c->ctx.conv_record, msgs, on_committed);
    if (rc != 0) {
        c->error = arena_strdup(c->pool, c->ctx.creq.errmsg);
    } else {
        c->ctx.ctx_pending = true;
    }
    return rc;
}

/* True when fresh is base with only a summary written over it: the Summarize strategy's own
 * background write (which drops the turns it folds), not another request's turn. */
static bool summary_only_change(const ctx_record *base, const ctx_record *fresh)
{
    if (!base || !fresh || fresh->version <= base->version || !fresh->summary) return false;
    if (base->summary && strcmp(base->summary, fresh->summary) == 0) return false;
    size_t nb = json_array_size(base->messages), nf = json_array_size(fresh->messages);
    if (nf > nb) return false;
    for (size_t i = 0; i < nf; i++)
        if (!json_equal(json_array_get(fresh->messages, i),
                        json_array_get(base->messages, nb - nf + i)))
            return false;
    return true;
}

static void commit_done(pl_call *c, int rc, uint64_t version, const char *msg)
{
    if (rc == CTX_OK) {
        c->ctx.conv_version = version;
        if (c->ctx.mcp->strategy == CTX_SUMMARIZE) summarize_start(c, version);
    } else {
        c->error = arena_strdup(c->pool, msg);
    }
    c->ctx.commit_rc = rc;
    pl_resume(c);
}

/* after a conflict on a Summarize route: the conversation read again; when only the summary
 * changed, the turn is appended to the summarised record */
static void on_reread(ctx_req *req)
{
    pl_call *c = req->data;
    pl_hold(c);
    c->ctx.ctx_pending = false;
    pl_context_observe(c->w, c->ctx.mcp, c->ctx.ctx_store, "get", c->ctx.ctx_op_ns, req->result);
    ctx_record *fresh = req->result == CTX_OK ? req->record : NULL;
    req->record = NULL;
    ctx_req_cleanup(req);
    if (!summary_only_change(c->ctx.conv_record, fresh)) {
        ctx_record_free(fresh);
        commit_done(c, CTX_ECONFLICT, 0, ctx_strerror(CTX_ECONFLICT));
        pl_unhold(c);
        return;
    }
    ctx_record_free(c->ctx.conv_record);
    c->ctx.conv_record = fresh;
    json_t *msgs = commit_messages(c);
    int rc = start_append(c, msgs);
    json_decref(msgs);
    if (rc != 0) commit_done(c, rc, 0, c->error ? c->error : ctx_strerror(rc));
    pl_unhold(c);
}

static void on_committed(ctx_req *req)
{
    pl_call *c = req->data;
    pl_hold(c);
    c->ctx.ctx_pending = false;
    pl_context_observe(c->w, c->ctx.mcp, c->ctx.ctx_store, "append", c->ctx.ctx_op_ns, req->result);
    int rc = req->result;
    uint64_t version = req->version;
    char msg[sizeof req->errmsg];
    memcpy(msg, req->errmsg, sizeof msg);
    ctx_req_cleanup(req);
    /* the strategy's own background summary may have landed between this request's read and
     * its append: that is not another writer, so the turn goes on top of it (once) */
    if (rc == CTX_ECONFLICT && c->ctx.mcp->strategy == CTX_SUMMARIZE && !c->ctx.commit_reread &&
        c->ctx.conv_record) {
        c->ctx.commit_reread = true;
        memset(&c->ctx.creq, 0, sizeof c->ctx.creq);
        c->ctx.creq.data = c;
        c->ctx.ctx_op_ns = clock_mono_ns();
        if (ctx_store_get(c->ctx.ctx_store, &c->ctx.creq, tenant_of(c), c->ctx.conv_id,
                          on_reread) == 0) {
            c->ctx.ctx_pending = true;
            pl_unhold(c);
            return;
        }
    }
    commit_done(c, rc, version, msg);
    pl_unhold(c);
}

/* The context-commit phase: the request's messages and the answer appended to the
 * conversation (one compare-and-set on the version read); c->ctx.commit_rc says how it went, for
 * the respond phase. Nothing to record (no context, ReadOnlyMany, nothing new): CTX_OK. */
pl_step pl_phase_context_commit(pl_call *c)
{
    c->ctx.commit_rc = CTX_OK;
    if (!c->ctx.ctx_store || c->ctx.mcp->read_only) return PL_CONTINUE;
    /* plain numbers already: a whole answer is made so (pl_context_whole_answer refuses one the
     * store cannot record), a streamed one holds only strings and indices */
    if (c->ctx.answer) answer_finalize(c);
    json_t *msgs = commit_messages(c);
    if (json_array_size(msgs) == 0) {
        json_decref(msgs);
        return PL_CONTINUE;
    }
    int rc = start_append(c, msgs);
    json_decref(msgs);
    if (rc != 0) {
        c->ctx.commit_rc = rc;
        return PL_CONTINUE;
    }
    return PL_SUSPEND;
}

void pl_context_cancel_summaries(pl_worker *w)
{
    while (w->summaries) {
        summarize_job *j = w->summaries;
        upstream_cancel(j->up);
        log_info("conversation %s: summary request cancelled by shutdown", j->id);
        job_free(j);
    }
}

void pl_context_free(pl_call *c)
{
    ctx_record_free(c->ctx.conv_record);
    json_decref(c->ctx.conv_history);
    json_decref(c->ctx.conv_new);
    json_decref(c->ctx.answer);
    buf_free(&c->ctx.ans_text);
    if (c->ctx.tc_args)
        for (int i = 0; i < PL_MAX_TOOL_CALLS; i++)
            buf_free(&c->ctx.tc_args[i]);
}

void pl_context_finish_stream(pl_call *c, int result)
{
    if (result == CTX_OK) {
        static const char done[] = "data: [DONE]\n\n";
        pl_client_write(c, done, sizeof done - 1);
        c->status = 200;
        pl_finish_stream(c);
        return;
    }
    /* the answer streamed but could not be recorded: say so instead of [DONE] */
    char msg[512];
    if (result == CTX_ECONFLICT)
        snprintf(msg, sizeof msg,
                 "Conversation '%s' was changed by another request at the same time; this answer "
                 "was not recorded. Retry the request.",
                 c->ctx.conv_id);
    else
        snprintf(msg, sizeof msg, "This answer was not recorded in conversation '%s': %s",
                 c->ctx.conv_id, c->error ? c->error : ctx_strerror(result));
    /* the status to log is set first: pl_stream_fail finishes (and frees) the call */
    c->status = result == CTX_ECONFLICT ? 409 : 503;
    pl_stream_fail(c, result == CTX_ECONFLICT ? "invalid_request_error" : "server_error",
                   result == CTX_ECONFLICT ? "conversation_conflict" : "context_store_unavailable",
                   msg);
}

void pl_context_finish_whole(pl_call *c, int result)
{
    if (result != CTX_OK) {
        pl_context_fail(c, result, c->error ? c->error : ctx_strerror(result));
        return;
    }
    http_header h[3] = {pl_json_ct};
    size_t n = 1 + pl_context_headers(c, h + 1);
    pl_finish(c, 200, h, n, c->upstream.resp.data ? c->upstream.resp.data : "",
              c->upstream.resp.len);
}
