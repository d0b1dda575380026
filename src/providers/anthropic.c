/* anthropic.c — the Anthropic adapter (type Anthropic, the Messages API): the canonical OpenAI
 * Chat Completions body -> POST {endpoint}/v1/messages; the Message answer, its SSE event stream
 * and its error bodies -> OpenAI's chat.completion, chat.completion.chunk events and error types.
 * The mapping, field by field, is in docs/providers.md ("Anthropic"). */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <yajl/yajl_parse.h>

#include "core/json.h"
#include "providers/adapters.h"

enum { ANTHROPIC_DEFAULT_MAX_TOKENS = 4096 };
static const char default_version[] = "2023-06-01";

/* ---------------------------------------------------------------- upstream request ---- */

typedef struct bctx {
    const cfg_target *t;
    arena *pool;
    provider_request *out;
    char *err;
    size_t errlen;
    jw *w;               /* the upstream body being written */
    const char *open_as; /* role of the message open in messages[], NULL when none */
    size_t n_blocks;     /* content blocks written for the current source message */
} bctx;

/* PROVIDER_EREQUEST naming param (a pool or static string) with a sentence */
static int refuse(bctx *b, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(bctx *b, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(b->err, b->errlen, fmt, ap);
    va_end(ap);
    b->out->err_param = param;
    return PROVIDER_EREQUEST;
}

/* a part's cache_control (an Anthropic prompt-caching marker a client put on it) goes along */
static void copy_cache_control(bctx *b, json_t *from)
{
    json_t *cc = json_object_get(from, "cache_control");
    if (!cc || json_is_null(cc)) return;
    jw_key(b->w, "cache_control");
    jw_value(b->w, cc);
}

/* {type: text, text[, cache_control]} */
static void text_block(bctx *b, json_t *text, json_t *part)
{
    jw_obj(b->w);
    jw_key(b->w, "type");
    jw_str(b->w, "text");
    jw_key(b->w, "text");
    jw_value(b->w, text);
    if (part) copy_cache_control(b, part);
    jw_obj_end(b->w);
    b->n_blocks++;
}

static bool is_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

/* "messages[i].content[j]" (built only for an error) */
static const char *part_path(bctx *b, size_t i, size_t j)
{
    return arena_printf(b->pool, "messages[%zu].content[%zu]", i, j);
}

/* An image_url part -> an image block: data: URLs (base64 only) as a base64 source, http(s)
 * URLs as a url source. */
static int image_block(bctx *b, json_t *part, size_t i, size_t j)
{
    json_t *iu = json_object_get(part, "image_url");
    json_t *url = json_is_object(iu) ? json_object_get(iu, "url") : iu;
#define URL_PATH arena_printf(b->pool, "%s.image_url.url", part_path(b, i, j))
    if (!json_is_string(url)) {
        const char *urlp = URL_PATH;
        return refuse(b, urlp, "%s must be a string", urlp);
    }
    const char *u = json_string_value(url);
    size_t ulen = json_string_length(url);
    const char *comma = NULL;
    const char *b64 = NULL;
    if (is_prefix(u, "data:")) {
        comma = memchr(u, ',', ulen);
        b64 = comma ? strstr(u, ";base64,") : NULL;
        if (!comma || !b64 || b64 + 7 != comma || b64 == u + 5) {
            const char *urlp = URL_PATH;
            return refuse(b, urlp,
                          "%s: a data: URL must read data:<media type>;base64,<data> (the "
                          "Anthropic API takes base64 images only)",
                          urlp);
        }
    } else if (!is_prefix(u, "https://") && !is_prefix(u, "http://")) {
        const char *urlp = URL_PATH;
        return refuse(b, urlp, "%s must be a data: URL or an http(s) URL", urlp);
    }
#undef URL_PATH
    jw *w = b->w;
    jw_obj(w);
    jw_key(w, "type");
    jw_str(w, "image");
    jw_key(w, "source");
    jw_obj(w);
    jw_key(w, "type");
    if (comma) {
        jw_str(w, "base64");
        jw_key(w, "media_type");
        jw_strn(w, u + 5, (size_t)(b64 - (u + 5)));
        jw_key(w, "data");
        jw_strn(w, comma + 1, ulen - (size_t)(comma + 1 - u));
    } else {
        jw_str(w, "url");
        jw_key(w, "url");
        jw_value(w, url);
    }
    jw_obj_end(w);
    copy_cache_control(b, part);
    jw_obj_end(w);
    b->n_blocks++;
    return 0;
}

/* A message's content (string, array of parts, or null) -> blocks written. images: whether
 * image parts are allowed (user messages). */
static int content_blocks(bctx *b, json_t *content, size_t i, bool images)
{
    if (!content || json_is_null(content)) return 0;
    if (json_is_string(content)) {
        if (json_string_length(content)) text_block(b, content, NULL);
        return 0;
    }
    if (!json_is_array(content))
        return refuse(b, arena_printf(b->pool, "messages[%zu].content", i),
                      "messages[%zu].content must be a string, an array of parts or null", i);
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part)
    {
        const char *type = json_string_value(json_object_get(part, "type"));
        if (!type) {
            const char *at = part_path(b, i, j);
            return refuse(b, arena_printf(b->pool, "%s.type", at), "%s.type must be a string", at);
        }
        if (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0) {
            json_t *text = json_object_get(part, type);
            if (!json_is_string(text)) {
                const char *at = part_path(b, i, j);
                return refuse(b, arena_printf(b->pool, "%s.%s", at, type), "%s.%s must be a string",
                              at, type);
            }
            if (!json_string_length(text)) continue; /* Anthropic refuses empty text blocks */
            text_block(b, text, part);
        } else if (strcmp(type, "image_url") == 0 && images) {
            int rc = image_block(b, part, i, j);
            if (rc) return rc;
        } else {
            const char *at = part_path(b, i, j);
            return refuse(b, arena_printf(b->pool, "%s.type", at),
                          "%s.type '%s' cannot be sent to an Anthropic target (text%s only)", at,
                          type, images ? " and image_url" : "");
        }
    }
    return 0;
}

/* Opens a message of role `as` in messages[], or goes on with the open one when it has the
 * same role (the Messages API wants user and assistant turns to alternate: a tool result after
 * a user message joins it). */
static void open_message(bctx *b, const char *as)
{
    if (b->open_as && strcmp(b->open_as, as) == 0) return;
    if (b->open_as) {
        jw_arr_end(b->w);
        jw_obj_end(b->w);
    }
    jw_obj(b->w);
    jw_key(b->w, "role");
    jw_str(b->w, as);
    jw_key(b->w, "content");
    jw_arr(b->w);
    b->open_as = as;
}

static int thinking_blocks(bctx *b, json_t *tb, size_t i)
{
    if (!tb || json_is_null(tb)) return 0;
    if (!json_is_array(tb))
        return refuse(b, arena_printf(b->pool, "messages[%zu].thinking_blocks", i),
                      "messages[%zu].thinking_blocks must be an array", i);
    size_t k;
    json_t *x;
    json_array_foreach(tb, k, x)
    {
        const char *type = json_string_value(json_object_get(x, "type"));
        bool thinking = type && strcmp(type, "thinking") == 0;
        json_t *th = json_object_get(x, "thinking");
        json_t *sig = json_object_get(x, "signature");
        json_t *data = json_object_get(x, "data");
        bool ok = thinking ? json_is_string(th) && json_is_string(sig)
                           : type && strcmp(type, "redacted_thinking") == 0 && json_is_string(data);
        if (!ok)
            return refuse(b, arena_printf(b->pool, "messages[%zu].thinking_blocks[%zu]", i, k),
                          "messages[%zu].thinking_blocks[%zu] must be {type:\"thinking\", "
                          "thinking, signature} or {type:\"redacted_thinking\", data}",
                          i, k);
        jw_obj(b->w);
        jw_key(b->w, "type");
        jw_str(b->w, type);
        if (thinking) {
            jw_key(b->w, "thinking");
            jw_value(b->w, th);
            jw_key(b->w, "signature");
            jw_value(b->w, sig);
        } else {
            jw_key(b->w, "data");
            jw_value(b->w, data);
        }
        jw_obj_end(b->w);
        b->n_blocks++;
    }
    return 0;
}

static int tool_use_blocks(bctx *b, json_t *calls, size_t i)
{
    if (!calls || json_is_null(calls)) return 0;
    if (!json_is_array(calls))
        return refuse(b, arena_printf(b->pool, "messages[%zu].tool_calls", i),
                      "messages[%zu].tool_calls must be an array", i);
    size_t j;
    json_t *c;
    json_array_foreach(calls, j, c)
    {
        json_t *id = json_object_get(c, "id");
        json_t *fn = json_object_get(c, "function");
        json_t *name = json_object_get(fn, "name");
        json_t *args = json_object_get(fn, "arguments");
        const char *type = json_string_value(json_object_get(c, "type"));
        if (type && strcmp(type, "function") != 0)
            return refuse(b, arena_printf(b->pool, "messages[%zu].tool_calls[%zu].type", i, j),
                          "messages[%zu].tool_calls[%zu].type '%s' cannot be sent to an "
                          "Anthropic target (function only)",
                          i, j, type);
        if (!json_is_string(id))
            return refuse(b, arena_printf(b->pool, "messages[%zu].tool_calls[%zu].id", i, j),
                          "messages[%zu].tool_calls[%zu].id must be a string", i, j);
        if (!json_is_string(name))
            return refuse(
                b, arena_printf(b->pool, "messages[%zu].tool_calls[%zu].function.name", i, j),
                "messages[%zu].tool_calls[%zu].function.name must be a string", i, j);
        json_t *input = json_is_string(args) ? json_decode_fast(json_string_value(args),
                                                                json_string_length(args), NULL, 0)
                                             : NULL;
        if (!json_is_object(input)) {
            json_decref(input);
            const char *p =
                arena_printf(b->pool, "messages[%zu].tool_calls[%zu].function.arguments", i, j);
            return refuse(b, p,
                          "%s must be a string holding a JSON object (the Anthropic API takes a "
                          "tool call's input as an object)",
                          p);
        }
        jw_obj(b->w);
        jw_key(b->w, "type");
        jw_str(b->w, "tool_use");
        jw_key(b->w, "id");
        jw_value(b->w, id);
        jw_key(b->w, "name");
        jw_value(b->w, name);
        jw_key(b->w, "input");
        jw_value(b->w, input);
        jw_obj_end(b->w);
        json_decref(input);
        b->n_blocks++;
    }
    return 0;
}

/* a tool message -> one tool_result block */
static int tool_result_block(bctx *b, json_t *m, size_t i)
{
    json_t *id = json_object_get(m, "tool_call_id");
    if (!json_is_string(id))
        return refuse(b, arena_printf(b->pool, "messages[%zu].tool_call_id", i),
                      "messages[%zu].tool_call_id must be a string", i);
    json_t *content = json_object_get(m, "content");
    if (content && !json_is_null(content) && !json_is_string(content) && !json_is_array(content))
        return refuse(b, arena_printf(b->pool, "messages[%zu].content", i),
                      "messages[%zu].content must be a string or an array of text parts", i);
    jw_obj(b->w);
    jw_key(b->w, "type");
    jw_str(b->w, "tool_result");
    jw_key(b->w, "tool_use_id");
    jw_value(b->w, id);
    if (json_is_string(content)) {
        jw_key(b->w, "content");
        jw_value(b->w, content);
    } else if (json_is_array(content)) {
        size_t outer = b->n_blocks;
        jw_key(b->w, "content");
        jw_arr(b->w);
        int rc = content_blocks(b, content, i, false);
        if (rc) return rc;
        jw_arr_end(b->w);
        b->n_blocks = outer; /* the parts are the tool_result's, counted as one block below */
    }
    jw_obj_end(b->w);
    b->n_blocks++;
    return 0;
}

static bool is_system(const char *role)
{
    return strcmp(role, "system") == 0 || strcmp(role, "developer") == 0;
}

/* The system text when the system messages hold exactly one text block with no cache_control
 * (written as the plain string Anthropic also takes), else NULL: no system text, several
 * blocks, or anything content_blocks must check and write as blocks. */
static json_t *plain_system(json_t *messages, bool *any)
{
    json_t *only = NULL;
    size_t n = 0;
    bool blocks = false;
    size_t i;
    json_t *m;
    *any = false;
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || !is_system(role)) continue;
        *any = true;
        json_t *c = json_object_get(m, "content");
        if (json_is_string(c)) {
            if (json_string_length(c)) {
                only = c;
                n++;
            }
            continue;
        }
        blocks = true; /* parts, null or a wrong type: content_blocks decides */
    }
    return n == 1 && !blocks ? only : NULL;
}

/* "system": the system and developer messages' text, in order */
static int write_system(bctx *b, json_t *messages)
{
    bool any;
    json_t *plain = plain_system(messages, &any);
    if (!any) return 0;
    if (plain) {
        jw_key(b->w, "system");
        jw_value(b->w, plain);
        return 0;
    }
    /* blocks: written into the body only when there is at least one (an empty system array
     * would be refused upstream), so they go to a scratch writer first */
    buf sys = BUF_INIT;
    jw sw;
    jw_init(&sw, &sys);
    bctx sb = *b; /* the same request and error slots, writing to the scratch writer */
    sb.w = &sw;
    sb.n_blocks = 0;
    jw_arr(&sw);
    int rc = 0;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role || !is_system(role)) continue;
        if ((rc = content_blocks(&sb, json_object_get(m, "content"), i, false))) break;
    }
    jw_arr_end(&sw);
    bool ok = jw_finish(&sw);
    if (!rc && sb.n_blocks) {
        json_t *doc = ok ? json_decode_fast(sys.data, sys.len, NULL, 0) : NULL;
        if (!doc) {
            b->w->failed = true;
        } else {
            jw_key(b->w, "system");
            jw_value(b->w, doc);
            json_decref(doc);
        }
    }
    buf_free(&sys);
    return rc;
}

/* "messages": the user, assistant and tool messages as Anthropic messages */
static int write_messages(bctx *b, json_t *messages)
{
    jw_key(b->w, "messages");
    jw_arr(b->w);
    b->open_as = NULL;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role)
            return refuse(b, arena_printf(b->pool, "messages[%zu].role", i),
                          "messages[%zu].role must be a string", i);
        if (is_system(role)) continue; /* written by write_system */
        json_t *content = json_object_get(m, "content");
        int rc = 0;
        b->n_blocks = 0;
        if (strcmp(role, "user") == 0) {
            open_message(b, "user");
            rc = content_blocks(b, content, i, true);
        } else if (strcmp(role, "assistant") == 0) {
            open_message(b, "assistant");
            rc = thinking_blocks(b, json_object_get(m, "thinking_blocks"), i);
            if (!rc) rc = content_blocks(b, content, i, false);
            if (!rc) rc = tool_use_blocks(b, json_object_get(m, "tool_calls"), i);
        } else if (strcmp(role, "tool") == 0) {
            open_message(b, "user");
            rc = tool_result_block(b, m, i);
        } else {
            rc = refuse(b, arena_printf(b->pool, "messages[%zu].role", i),
                        "messages[%zu].role '%s' cannot be sent to an Anthropic target (system, "
                        "developer, user, assistant or tool)",
                        i, role);
        }
        if (!rc && b->n_blocks == 0)
            rc = refuse(b, arena_printf(b->pool, "messages[%zu].content", i),
                        "messages[%zu] has no content (the Anthropic API refuses empty messages)",
                        i);
        if (rc) return rc;
    }
    if (!b->open_as) return refuse(b, "messages", "messages holds no user or assistant message");
    jw_arr_end(b->w);
    jw_obj_end(b->w);
    jw_arr_end(b->w);
    return 0;
}

static int convert_tools(bctx *b, json_t *tools, json_t *doc)
{
    if (!tools || json_is_null(tools)) return 0;
    if (!json_is_array(tools)) return refuse(b, "tools", "tools must be an array");
    json_t *out = json_array();
    json_object_set_new(doc, "tools", out);
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        const char *type = json_string_value(json_object_get(tool, "type"));
        if (!type || strcmp(type, "function") != 0)
            return refuse(b, arena_printf(b->pool, "tools[%zu].type", i),
                          "tools[%zu].type must be \"function\" for an Anthropic target", i);
        json_t *fn = json_object_get(tool, "function");
        json_t *name = json_object_get(fn, "name");
        if (!json_is_string(name))
            return refuse(b, arena_printf(b->pool, "tools[%zu].function.name", i),
                          "tools[%zu].function.name must be a string", i);
        json_t *desc = json_object_get(fn, "description");
        if (desc && !json_is_null(desc) && !json_is_string(desc))
            return refuse(b, arena_printf(b->pool, "tools[%zu].function.description", i),
                          "tools[%zu].function.description must be a string", i);
        json_t *params = json_object_get(fn, "parameters");
        if (params && !json_is_null(params) && !json_is_object(params))
            return refuse(b, arena_printf(b->pool, "tools[%zu].function.parameters", i),
                          "tools[%zu].function.parameters must be a JSON Schema object", i);
        json_t *t = json_object();
        json_object_set(t, "name", name);
        if (json_is_string(desc)) json_object_set(t, "description", desc);
        if (json_is_object(params))
            json_object_set(t, "input_schema", params);
        else
            json_object_set_new(t, "input_schema", json_pack("{s:s}", "type", "object"));
        json_t *cc = json_object_get(tool, "cache_control");
        if (cc && !json_is_null(cc)) json_object_set(t, "cache_control", cc);
        json_array_append_new(out, t);
    }
    return 0;
}

static int convert_tool_choice(bctx *b, json_t *tc, json_t *ptc, json_t *doc)
{
    json_t *out = NULL;
    if (json_is_string(tc)) {
        const char *s = json_string_value(tc);
        const char *type = strcmp(s, "auto") == 0       ? "auto"
                           : strcmp(s, "required") == 0 ? "any"
                           : strcmp(s, "none") == 0     ? "none"
                                                        : NULL;
        if (!type)
            return refuse(b, "tool_choice", "tool_choice '%s' is not one of auto, required, none",
                          s);
        out = json_pack("{s:s}", "type", type);
    } else if (json_is_object(tc)) {
        const char *type = json_string_value(json_object_get(tc, "type"));
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (!type || strcmp(type, "function") != 0 || !json_is_string(name))
            return refuse(b, "tool_choice",
                          "tool_choice must be auto, required, none or {type:\"function\", "
                          "function:{name}}");
        out = json_pack("{s:s,s:O}", "type", "tool", "name", name);
    } else if (tc && !json_is_null(tc)) {
        return refuse(b, "tool_choice", "tool_choice must be a string or an object");
    }
    if (ptc && !json_is_null(ptc) && !json_is_boolean(ptc)) {
        json_decref(out);
        return refuse(b, "parallel_tool_calls", "parallel_tool_calls must be a boolean");
    }
    if (json_is_false(ptc)) {
        if (!out) out = json_pack("{s:s}", "type", "auto");
        /* tool_choice none takes no options: with no tool calls there is nothing to serialize */
        if (strcmp(json_string_value(json_object_get(out, "type")), "none") != 0)
            json_object_set_new(out, "disable_parallel_tool_use", json_true());
    }
    if (out) json_object_set_new(doc, "tool_choice", out);
    return 0;
}

/* the request's max_tokens, then max_completion_tokens, then the target's parameters, else the
 * documented default; *v gets it, 0 or PROVIDER_EREQUEST */
static int max_tokens(bctx *b, json_t *body, json_int_t *v)
{
    static const char *const keys[] = {"max_tokens", "max_completion_tokens"};
    json_t *from[] = {body, b->t->parameters};
    for (size_t f = 0; f < 2; f++) {
        for (size_t k = 0; k < 2; k++) {
            json_t *x = from[f] ? json_object_get(from[f], keys[k]) : NULL;
            if (!x || json_is_null(x)) continue;
            if (!json_is_integer(x) || json_integer_value(x) < 1) {
                if (f == 0) return refuse(b, keys[k], "%s must be a positive integer", keys[k]);
                snprintf(b->err, b->errlen,
                         "model target '%s': config.parameters.%s must be a positive integer",
                         b->t->name, keys[k]);
                b->out->err_param = keys[k];
                return PROVIDER_EREQUEST;
            }
            *v = json_integer_value(x);
            return 0;
        }
    }
    *v = ANTHROPIC_DEFAULT_MAX_TOKENS;
    return 0;
}

/* canonical keys the Messages API has no room for but that change nothing the client relies
 * on: dropped (docs/providers.md) */
static const char *const dropped_keys[] = {
    "frequency_penalty", "presence_penalty", "seed", "stream_options", "logit_bias", "store",
    "metadata",
};
/* keys translated below */
static const char *const mapped_keys[] = {
    "model",     "messages", "max_tokens", "max_completion_tokens", "temperature",         "top_p",
    "stop",      "stream",   "tools",      "tool_choice",           "parallel_tool_calls", "user",
    "anthropic", "n",        "logprobs",   "top_logprobs",          "response_format",
};

static bool in_list(const char *k, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(k, list[i]) == 0) return true;
    return false;
}
#define IN_LIST(k, l) in_list(k, l, sizeof l / sizeof l[0])

/* parameters the Messages API cannot express: refused with the field named */
static int check_inexpressible(bctx *b, json_t *body)
{
    json_t *n = json_object_get(body, "n");
    if (n && !json_is_null(n) && !(json_is_integer(n) && json_integer_value(n) == 1))
        return refuse(b, "n",
                      "n must be 1 for an Anthropic target (the Messages API answers "
                      "with one choice)");
    json_t *lp = json_object_get(body, "logprobs");
    if (lp && !json_is_null(lp) && !json_is_false(lp))
        return refuse(b, "logprobs",
                      "logprobs cannot be sent to an Anthropic target (the "
                      "Messages API has no log probabilities)");
    json_t *tlp = json_object_get(body, "top_logprobs");
    if (tlp && !json_is_null(tlp))
        return refuse(b, "top_logprobs",
                      "top_logprobs cannot be sent to an Anthropic target "
                      "(the Messages API has no log probabilities)");
    json_t *rf = json_object_get(body, "response_format");
    const char *rft = json_string_value(json_object_get(rf, "type"));
    if (rf && !json_is_null(rf) && !(rft && strcmp(rft, "text") == 0))
        return refuse(b, "response_format",
                      "response_format %s%s%scannot be sent to an Anthropic target (the "
                      "Messages API has no structured-output mode; describe the format in the "
                      "prompt or use a tool)",
                      rft ? "'" : "", rft ? rft : "", rft ? "' " : "");
    const char *k;
    json_t *v;
    json_object_foreach(body, k, v)
    {
        if (IN_LIST(k, mapped_keys) || IN_LIST(k, dropped_keys)) continue;
        return refuse(b, arena_strdup(b->pool, k),
                      "%s has no equivalent in the Anthropic Messages API (Anthropic-only "
                      "parameters go in the \"anthropic\" object)",
                      k);
    }
    return 0;
}

/* URL ({endpoint}{path}) and headers of a request to the Messages API */
static void build_headers(const cfg_target *t, const char *path, const char *request_id,
                          arena *pool, provider_request *out)
{
    out->url = arena_cat(pool, t->endpoint, path, (char *)NULL);
    size_t n = 0;
    out->headers[n++] = (upstream_header){"content-type", "application/json"};
    out->headers[n++] = (upstream_header){
        "anthropic-version", t->api_version && *t->api_version ? t->api_version : default_version};
    if (t->api_key) out->headers[n++] = (upstream_header){"x-api-key", t->api_key};
    if (request_id && *request_id)
        out->headers[n++] = (upstream_header){"X-Request-Id", request_id};
    assert(n <= PROVIDER_MAX_HEADERS);
    out->n_headers = n;
}

/* Writes the upstream body's own parts (model, max_tokens, system, messages) and puts the rest
 * (sampling, stop, stream, tools, metadata, the anthropic object's keys, which may replace them)
 * into doc, written after them. */
static int translate(bctx *b, json_t *body, json_t *doc)
{
    json_int_t mt;
    int rc = max_tokens(b, body, &mt);
    if (rc) return rc;
    /* the target's parameters under the request, as for every type */
    const char *k;
    json_t *v;
    json_object_foreach(b->t->parameters, k, v)
    {
        if (!json_object_get(body, k)) json_object_set(body, k, v);
    }
    json_object_set_new(body, "model", json_string(b->t->model_name));
    if ((rc = check_inexpressible(b, body))) return rc;

    json_t *messages = json_object_get(body, "messages");
    if (!json_is_array(messages))
        return refuse(b, "messages", "messages must be an array of messages");
    jw_key(b->w, "model");
    jw_str(b->w, b->t->model_name);
    jw_key(b->w, "max_tokens");
    jw_int(b->w, (long long)mt);
    if ((rc = write_system(b, messages))) return rc;
    if ((rc = write_messages(b, messages))) return rc;

    static const char *const numbers[] = {"temperature", "top_p"};
    for (size_t i = 0; i < 2; i++) {
        json_t *x = json_object_get(body, numbers[i]);
        if (!x || json_is_null(x)) continue;
        if (!json_is_number(x) && !json_raw_number_text(x, NULL, NULL))
            return refuse(b, numbers[i], "%s must be a number", numbers[i]);
        json_object_set(doc, numbers[i], x);
    }
    json_t *stop = json_object_get(body, "stop");
    if (json_is_string(stop)) {
        json_object_set_new(doc, "stop_sequences", json_pack("[O]", stop));
    } else if (json_is_array(stop)) {
        size_t i;
        json_t *s;
        json_array_foreach(stop, i, s)
        {
            if (!json_is_string(s))
                return refuse(b, arena_printf(b->pool, "stop[%zu]", i),
                              "stop[%zu] must be a string", i);
        }
        if (json_array_size(stop)) json_object_set(doc, "stop_sequences", stop);
    } else if (stop && !json_is_null(stop)) {
        return refuse(b, "stop", "stop must be a string or an array of strings");
    }
    json_t *stream = json_object_get(body, "stream");
    if (json_is_boolean(stream))
        json_object_set(doc, "stream", stream);
    else if (stream && !json_is_null(stream))
        return refuse(b, "stream", "stream must be a boolean");
    if ((rc = convert_tools(b, json_object_get(body, "tools"), doc))) return rc;
    if ((rc = convert_tool_choice(b, json_object_get(body, "tool_choice"),
                                  json_object_get(body, "parallel_tool_calls"), doc)))
        return rc;
    json_t *user = json_object_get(body, "user");
    if (json_is_string(user))
        json_object_set_new(doc, "metadata", json_pack("{s:O}", "user_id", user));
    else if (user && !json_is_null(user))
        return refuse(b, "user", "user must be a string");

    json_t *an = json_object_get(body, "anthropic");
    if (an && !json_is_null(an) && !json_is_object(an))
        return refuse(b, "anthropic", "anthropic must be an object of Messages API parameters");
    json_object_foreach(an, k, v)
    {
        static const char *const own[] = {"model", "messages", "system", "max_tokens", "stream"};
        if (IN_LIST(k, own))
            return refuse(b, arena_printf(b->pool, "anthropic.%s", k),
                          "anthropic.%s is set from the request itself, not the anthropic object",
                          k);
        json_object_set(doc, k, v);
    }
    return 0;
}

int anthropic_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                         provider_request *out, char *err, size_t errlen)
{
    assert(t->type == TARGET_ANTHROPIC && t->endpoint);
    memset(out, 0, sizeof *out);
    build_headers(t, "/v1/messages", request_id, pool, out);
    if (!body) return 0;
    bctx b = {t, pool, out, err, errlen, NULL, NULL, 0};
    if (!json_is_object(body)) return refuse(&b, "", "the request body must be a JSON object");
    buf text = BUF_INIT;
    jw w;
    jw_init(&w, &text);
    b.w = &w;
    jw_obj(&w);
    json_t *rest = json_object();
    int rc = translate(&b, body, rest);
    if (!rc) {
        const char *k;
        json_t *v;
        json_object_foreach(rest, k, v)
        {
            jw_key(&w, k);
            jw_value(&w, v);
        }
        jw_obj_end(&w);
    }
    json_decref(rest);
    bool ok = jw_finish(&w);
    if (!rc && !ok) {
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        rc = -1;
    }
    if (rc) {
        buf_free(&text);
        return rc;
    }
    out->body_len = text.len;
    out->body = buf_steal(&text);
    return 0;
}

int anthropic_build_chat_raw(const cfg_target *t, const provider_raw_body *b,
                             const char *request_id, arena *pool, provider_request *out)
{
    assert(t->type == TARGET_ANTHROPIC && t->endpoint);
    memset(out, 0, sizeof *out);
    buf text = BUF_INIT;
    if (!anthropic_splice_request(t, b->body, b->len, b->tape, pool, &text)) {
        buf_free(&text);
        return PROVIDER_EDECLINED;
    }
    build_headers(t, "/v1/messages", request_id, pool, out);
    out->body_len = text.len;
    out->body = buf_steal(&text);
    return 0;
}

int anthropic_build_native(const cfg_target *t, const provider_raw_body *b, const char *request_id,
                           arena *pool, provider_request *out, char *err, size_t errlen)
{
    assert(t->type == TARGET_ANTHROPIC && t->endpoint);
    memset(out, 0, sizeof *out);
    build_headers(t, "/v1/messages", request_id, pool, out);
    /* no max_tokens default here: an Anthropic caller must send it (the surface checks it; a
     * request it could not check goes to the provider, which refuses it without) */
    return provider_splice_raw(t, b, NULL, out, err, errlen) == 0 ? 0 : PROVIDER_EREQUEST;
}

int anthropic_build_count_tokens(const cfg_target *t, const char *body, size_t len,
                                 const char *request_id, arena *pool, provider_request *out,
                                 char *err, size_t errlen)
{
    assert(t->type == TARGET_ANTHROPIC && t->endpoint);
    memset(out, 0, sizeof *out);
    json_t *doc = json_decode_fast(body, len, NULL, 0);
    if (!json_is_object(doc)) { /* the surface checked it: cannot happen */
        json_decref(doc);
        snprintf(err, errlen, "the count_tokens request is not a JSON object");
        return PROVIDER_EREQUEST;
    }
    /* the caller's request as it is, with the provider's model id: the count is the provider's */
    json_object_set_new(doc, "model", json_string(t->model_name));
    out->body = json_encode_fast(doc, &out->body_len);
    json_decref(doc);
    if (!out->body) abort();
    build_headers(t, "/v1/messages/count_tokens", request_id, pool, out);
    return 0;
}

/* ------------------------------------------------------------------- shared answers ---- */

static void set_why(char *why, size_t whylen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_why(char *why, size_t whylen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, whylen, fmt, ap);
    va_end(ap);
}

/* Anthropic stop_reason -> OpenAI finish_reason; an unknown reason (one added after this
 * adapter) is "stop", as docs/providers.md says */
const char *anthropic_finish_reason(const char *stop)
{
    if (strcmp(stop, "max_tokens") == 0 || strcmp(stop, "model_context_window_exceeded") == 0)
        return "length";
    if (strcmp(stop, "tool_use") == 0) return "tool_calls";
    if (strcmp(stop, "refusal") == 0) return "content_filter";
    return "stop"; /* end_turn, stop_sequence, pause_turn */
}

typedef struct counts {
    uint64_t input, cache_read, cache_creation, output;
} counts;

/* usage fields of an Anthropic usage object into c (a field absent or null leaves it); false
 * when one is present but not a non-negative integer (named in *bad) */
static bool read_counts(json_t *usage, counts *c, const char **bad)
{
    static const char *const keys[] = {"input_tokens", "cache_read_input_tokens",
                                       "cache_creation_input_tokens", "output_tokens"};
    uint64_t *dst[] = {&c->input, &c->cache_read, &c->cache_creation, &c->output};
    for (size_t i = 0; i < 4; i++) {
        json_t *x = json_object_get(usage, keys[i]);
        if (!x || json_is_null(x)) continue;
        if (!json_is_integer(x) || json_integer_value(x) < 0) {
            *bad = keys[i];
            return false;
        }
        *dst[i] = (uint64_t)json_integer_value(x);
    }
    return true;
}

/* The usage of a Message read in one SAX pass (the answer is relayed, not translated): the
 * top-level "usage" object's four counts, as read_counts takes them from a document. */
typedef struct usage_scan {
    int depth;
    bool top_object, usage_next, in_usage, have_usage, bad;
    int key; /* in usage: the count's index, -1 another key */
    counts c;
} usage_scan;

static int us_scalar(usage_scan *u, bool is_null)
{
    if (u->depth == 0) return 0;                       /* the top level is not an object */
    if (u->depth == 1 && u->usage_next) u->bad = true; /* "usage" not an object */
    if (u->depth == 1) u->usage_next = false;
    if (u->in_usage && u->depth == 2 && u->key >= 0 && !is_null) u->bad = true;
    return 1;
}

static int us_null(void *ctx)
{
    return us_scalar(ctx, true);
}

static int us_boolean(void *ctx, int b)
{
    (void)b;
    return us_scalar(ctx, false);
}

static int us_string(void *ctx, const unsigned char *v, size_t n)
{
    (void)v;
    (void)n;
    return us_scalar(ctx, false);
}

static int us_number(void *ctx, const char *v, size_t n)
{
    usage_scan *u = ctx;
    if (!(u->in_usage && u->depth == 2 && u->key >= 0)) return us_scalar(u, false);
    uint64_t x = 0;
    if (n == 0 || n > 18) u->bad = true;
    for (size_t i = 0; i < n && !u->bad; i++) {
        if (v[i] < '0' || v[i] > '9') u->bad = true; /* negative, fraction, exponent */
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    uint64_t *dst[] = {&u->c.input, &u->c.cache_read, &u->c.cache_creation, &u->c.output};
    if (!u->bad) *dst[u->key] = x;
    return 1;
}

static int us_key(void *ctx, const unsigned char *k, size_t n)
{
    usage_scan *u = ctx;
    if (u->depth == 1) u->usage_next = n == 5 && memcmp(k, "usage", 5) == 0;
    if (u->in_usage && u->depth == 2) {
        static const char *const keys[] = {"input_tokens", "cache_read_input_tokens",
                                           "cache_creation_input_tokens", "output_tokens"};
        u->key = -1;
        for (int i = 0; i < 4; i++)
            if (strlen(keys[i]) == n && memcmp(k, keys[i], n) == 0) u->key = i;
    }
    return 1;
}

static int us_start(void *ctx, bool map)
{
    usage_scan *u = ctx;
    if (u->depth == 0) {
        if (!map) return 0;
        u->top_object = true;
    }
    if (u->depth == 1 && u->usage_next) {
        if (map) {
            u->in_usage = true; /* a later "usage" replaces an earlier one, as in a document */
            u->c = (counts){0};
            u->bad = false;
        } else {
            u->bad = true;
        }
        u->usage_next = false;
    }
    if (u->in_usage && u->depth == 2 && u->key >= 0) u->bad = true; /* a count not a number */
    u->depth++;
    return 1;
}

static int us_start_map(void *ctx)
{
    return us_start(ctx, true);
}

static int us_start_array(void *ctx)
{
    return us_start(ctx, false);
}

static int us_end(void *ctx)
{
    usage_scan *u = ctx;
    u->depth--;
    if (u->in_usage && u->depth == 1) {
        u->in_usage = false;
        u->have_usage = true;
    }
    return 1;
}

static const yajl_callbacks usage_callbacks = {
    .yajl_null = us_null,
    .yajl_boolean = us_boolean,
    .yajl_number = us_number,
    .yajl_string = us_string,
    .yajl_start_map = us_start_map,
    .yajl_map_key = us_key,
    .yajl_end_map = us_end,
    .yajl_start_array = us_start_array,
    .yajl_end_array = us_end,
};

bool anthropic_answer_usage(const char *body, size_t len, provider_usage *usage)
{
    usage_scan u = {.key = -1};
    yajl_handle h = json_sax_new(&usage_callbacks, &u);
    if (!h) return false;
    yajl_status st = yajl_parse(h, (const unsigned char *)(body ? body : ""), body ? len : 0);
    if (st == yajl_status_ok) st = yajl_complete_parse(h);
    json_sax_free(h);
    if (st != yajl_status_ok || !u.top_object || !u.have_usage || u.bad) return false;
    *usage = (provider_usage){true, u.c.input + u.c.cache_read + u.c.cache_creation, u.c.output};
    return true;
}

/* "usage": OpenAI usage, where prompt_tokens counts every input token, cached or not */
static void write_usage(jw *w, const counts *c)
{
    uint64_t prompt = c->input + c->cache_read + c->cache_creation;
    jw_key(w, "usage");
    jw_obj(w);
    jw_key(w, "prompt_tokens");
    jw_int(w, (long long)prompt);
    jw_key(w, "completion_tokens");
    jw_int(w, (long long)c->output);
    jw_key(w, "total_tokens");
    jw_int(w, (long long)(prompt + c->output));
    jw_key(w, "prompt_tokens_details");
    jw_obj(w);
    jw_key(w, "cached_tokens");
    jw_int(w, (long long)c->cache_read);
    jw_obj_end(w);
    jw_key(w, "cache_creation_input_tokens");
    jw_int(w, (long long)c->cache_creation);
    jw_obj_end(w);
}

/* the head every chat.completion and chunk starts with: id, object, created, model */
static void write_head(jw *w, const char *id, size_t id_len, const char *object, long long created,
                       const char *model)
{
    jw_key(w, "id");
    jw_strn(w, id, id_len);
    jw_key(w, "object");
    jw_str(w, object);
    jw_key(w, "created");
    jw_int(w, created);
    jw_key(w, "model");
    jw_str(w, model);
}

/* ------------------------------------------------------------------- whole answers ---- */

static json_t *tool_call_json(json_t *id, json_t *name, const char *args, size_t args_len,
                              json_int_t index, bool with_index)
{
    json_t *fn = json_object();
    json_object_set(fn, "name", name);
    json_object_set_new(fn, "arguments", json_stringn(args, args_len));
    json_t *tc = json_object();
    if (with_index) json_object_set_new(tc, "index", json_integer(index));
    json_object_set(tc, "id", id);
    json_object_set_new(tc, "type", json_string("function"));
    json_object_set_new(tc, "function", fn);
    return tc;
}

/* The Message's content blocks checked, their text and thinking joined; *fail names the first
 * bad block's kind (at *at) */
typedef struct answer_parts {
    buf text, thinking;
    bool has_text, has_thinking;
    size_t n_calls, n_blocks; /* tool_use; thinking and redacted_thinking */
} answer_parts;

static bool read_blocks(json_t *content, answer_parts *p, const char **fail, size_t *at)
{
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk)
    {
        *at = i;
        const char *bt = json_string_value(json_object_get(blk, "type"));
        if (!bt) {
            *fail = "type";
            return false;
        }
        if (strcmp(bt, "text") == 0) {
            json_t *t = json_object_get(blk, "text");
            if (!json_is_string(t)) {
                *fail = "text";
                return false;
            }
            buf_append(&p->text, json_string_value(t), json_string_length(t));
            p->has_text = true;
        } else if (strcmp(bt, "tool_use") == 0) {
            if (!json_is_string(json_object_get(blk, "id")) ||
                !json_is_string(json_object_get(blk, "name")) ||
                !json_is_object(json_object_get(blk, "input"))) {
                *fail = "tool_use (id, name, input object)";
                return false;
            }
            p->n_calls++;
        } else if (strcmp(bt, "thinking") == 0) {
            json_t *th = json_object_get(blk, "thinking");
            if (!json_is_string(th) || !json_is_string(json_object_get(blk, "signature"))) {
                *fail = "thinking (thinking, signature)";
                return false;
            }
            buf_append(&p->thinking, json_string_value(th), json_string_length(th));
            p->has_thinking = true;
            p->n_blocks++;
        } else if (strcmp(bt, "redacted_thinking") == 0) {
            if (!json_is_string(json_object_get(blk, "data"))) {
                *fail = "redacted_thinking (data)";
                return false;
            }
            p->n_blocks++;
        }
        /* other block types (server tool results, ...) have no Chat Completions form */
    }
    return true;
}

/* message.thinking_blocks: the thinking and redacted_thinking blocks, as they came */
static void write_thinking_blocks(jw *w, json_t *content)
{
    jw_key(w, "thinking_blocks");
    jw_arr(w);
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk)
    {
        const char *bt = json_string_value(json_object_get(blk, "type"));
        bool thinking = strcmp(bt, "thinking") == 0;
        if (!thinking && strcmp(bt, "redacted_thinking") != 0) continue;
        jw_obj(w);
        jw_key(w, "type");
        jw_str(w, bt);
        if (thinking) {
            jw_key(w, "thinking");
            jw_value(w, json_object_get(blk, "thinking"));
            jw_key(w, "signature");
            jw_value(w, json_object_get(blk, "signature"));
        } else {
            jw_key(w, "data");
            jw_value(w, json_object_get(blk, "data"));
        }
        jw_obj_end(w);
    }
    jw_arr_end(w);
}

/* message.tool_calls: each tool_use block, its input as the arguments string */
static bool write_tool_calls(jw *w, json_t *content)
{
    jw_key(w, "tool_calls");
    jw_arr(w);
    size_t i;
    json_t *blk;
    json_array_foreach(content, i, blk)
    {
        if (strcmp(json_string_value(json_object_get(blk, "type")), "tool_use") != 0) continue;
        size_t n;
        char *args = json_encode_fast(json_object_get(blk, "input"), &n);
        if (!args) return false;
        jw_obj(w);
        jw_key(w, "id");
        jw_value(w, json_object_get(blk, "id"));
        jw_key(w, "type");
        jw_str(w, "function");
        jw_key(w, "function");
        jw_obj(w);
        jw_key(w, "name");
        jw_value(w, json_object_get(blk, "name"));
        jw_key(w, "arguments");
        jw_strn(w, args, n);
        jw_obj_end(w);
        jw_obj_end(w);
        free(args);
    }
    jw_arr_end(w);
    return true;
}

/* The Message a -> a chat.completion written into out; false with why set */
static bool translate_answer(json_t *a, const char *model, buf *out, provider_usage *counted,
                             char *why, size_t whylen)
{
    if (!json_is_object(a)) {
        set_why(why, whylen, "the Anthropic answer is not a JSON object");
        return false;
    }
    const char *type = json_string_value(json_object_get(a, "type"));
    json_t *id = json_object_get(a, "id");
    json_t *content = json_object_get(a, "content");
    const char *stop = json_string_value(json_object_get(a, "stop_reason"));
    json_t *usage = json_object_get(a, "usage");
    if (!type || strcmp(type, "message") != 0 || !json_is_string(id) || !json_is_array(content) ||
        !stop || !json_is_object(usage)) {
        set_why(why, whylen,
                "the Anthropic answer is not a Message (type \"message\", id, content array, "
                "stop_reason and usage)");
        return false;
    }
    counts c = {0};
    const char *bad = NULL;
    if (!read_counts(usage, &c, &bad)) {
        set_why(why, whylen, "the Anthropic answer's usage.%s is not a token count", bad);
        return false;
    }
    answer_parts p = {.text = BUF_INIT, .thinking = BUF_INIT};
    const char *fail = NULL;
    size_t at = 0;
    bool ok = read_blocks(content, &p, &fail, &at);
    if (!ok) {
        set_why(why, whylen, "the Anthropic answer's content[%zu] is not a valid %s block", at,
                fail);
    } else {
        jw w;
        jw_init(&w, out);
        jw_obj(&w);
        write_head(&w, json_string_value(id), json_string_length(id), "chat.completion",
                   (long long)time(NULL), model);
        jw_key(&w, "choices");
        jw_arr(&w);
        jw_obj(&w);
        jw_key(&w, "index");
        jw_int(&w, 0);
        jw_key(&w, "message");
        jw_obj(&w);
        jw_key(&w, "role");
        jw_str(&w, "assistant");
        jw_key(&w, "content");
        if (p.has_text)
            jw_strn(&w, p.text.data ? p.text.data : "", p.text.len);
        else
            jw_null(&w);
        if (p.has_thinking) {
            jw_key(&w, "reasoning_content");
            jw_strn(&w, p.thinking.data, p.thinking.len);
        }
        if (p.n_blocks) write_thinking_blocks(&w, content);
        bool args_ok = !p.n_calls || write_tool_calls(&w, content);
        jw_obj_end(&w);
        jw_key(&w, "logprobs");
        jw_null(&w);
        jw_key(&w, "finish_reason");
        jw_str(&w, anthropic_finish_reason(stop));
        jw_obj_end(&w);
        jw_arr_end(&w);
        write_usage(&w, &c);
        jw_obj_end(&w);
        ok = jw_finish(&w) && args_ok;
        if (!ok) set_why(why, whylen, "could not encode the translated answer (out of memory)");
        if (ok && counted)
            *counted = (provider_usage){true, c.input + c.cache_read + c.cache_creation, c.output};
    }
    buf_free(&p.text);
    buf_free(&p.thinking);
    return ok;
}

char *anthropic_chat_answer_doc(const char *body, size_t len, const char *model, size_t *out_len,
                                provider_usage *usage, char *why, size_t whylen)
{
    char jerr[160];
    json_t *a = json_decode_fast(body, len, jerr, sizeof jerr);
    if (!a) {
        set_why(why, whylen, "the Anthropic answer is not JSON: %s", jerr);
        return NULL;
    }
    buf out = BUF_INIT;
    bool ok = translate_answer(a, model, &out, usage, why, whylen);
    json_decref(a);
    if (!ok) {
        buf_free(&out);
        return NULL;
    }
    *out_len = out.len;
    return buf_steal(&out);
}

char *anthropic_chat_answer(const char *body, size_t len, const char *model, size_t *out_len,
                            provider_usage *usage, char *why, size_t whylen)
{
    buf out = BUF_INIT;
    if (anthropic_splice_answer(body, len, model, &out,
                                usage)) { /* one text block: the common case */
        *out_len = out.len;
        return buf_steal(&out);
    }
    buf_free(&out);
    return anthropic_chat_answer_doc(body, len, model, out_len, usage, why, whylen);
}

/* -------------------------------------------------------------------------- errors ---- */

typedef struct err_map {
    const char *anthropic; /* error.type */
    int status;            /* 0: as sent */
    const char *type;
    const char *code;
} err_map;

static const err_map err_maps[] = {
    {"invalid_request_error", 0, "invalid_request_error", NULL},
    {"authentication_error", 0, "authentication_error", "invalid_api_key"},
    {"permission_error", 0, "permission_error", NULL},
    {"not_found_error", 0, "invalid_request_error", "not_found"},
    {"request_too_large", 0, "invalid_request_error", "request_too_large"},
    {"rate_limit_error", 0, "requests", "rate_limit_exceeded"},
    {"api_error", 0, "server_error", "upstream_error"},
    {"timeout_error", 0, "server_error", "upstream_timeout"},
    {"overloaded_error", 503, "server_error", "upstream_overloaded"},
};

static const err_map *map_type(const char *type)
{
    for (size_t i = 0; type && i < sizeof err_maps / sizeof err_maps[0]; i++)
        if (strcmp(type, err_maps[i].anthropic) == 0) return &err_maps[i];
    return NULL;
}

void anthropic_map_error(int status, const char *body, size_t len, provider_error *out)
{
    json_t *doc = body && len ? json_loadb(body, len, 0, NULL) : NULL;
    const err_map *m =
        map_type(json_string_value(json_object_get(json_object_get(doc, "error"), "type")));
    json_decref(doc);
    if (status == 529) m = map_type("overloaded_error");
    if (m) {
        *out = (provider_error){m->status ? m->status : status, m->type, m->code};
        return;
    }
    /* no Anthropic error type we know: by status */
    if (status == 429)
        *out = (provider_error){429, "requests", "rate_limit_exceeded"};
    else if (status >= 500)
        *out = (provider_error){status, "server_error", "upstream_error"};
    else
        *out = (provider_error){status, "invalid_request_error", "upstream_rejected"};
}

/* -------------------------------------------------------------------------- streams ---- */

enum { MAX_BLOCKS = 4096 };

typedef enum { BLK_NONE, BLK_TEXT, BLK_TOOL, BLK_THINKING, BLK_REDACTED, BLK_OTHER } blk_kind;

typedef struct blk_state {
    unsigned char kind; /* blk_kind */
    bool open;
    bool has_args; /* tool_use: argument bytes went out */
    int tool;      /* tool_use: its OpenAI tool_calls index */
} blk_state;

typedef struct anthropic_stream {
    provider_stream base; /* type TARGET_ANTHROPIC */
    char *model;
    char *id;
    json_int_t created;
    bool started, finished, done, failed;
    counts usage;
    blk_state *blocks;
    size_t n_blocks; /* allocated entries */
    int n_tools;
} anthropic_stream;

provider_stream *anthropic_decoder_new(const char *model)
{
    anthropic_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->base.type = TARGET_ANTHROPIC;
    s->model = strdup(model ? model : "");
    if (!s->model) {
        free(s);
        return NULL;
    }
    s->created = (json_int_t)time(NULL);
    return &s->base;
}

void anthropic_decoder_free(provider_stream *ps)
{
    if (!ps) return;
    assert(ps->type == TARGET_ANTHROPIC);
    anthropic_stream *s = (anthropic_stream *)ps;
    free(s->model);
    free(s->id);
    free(s->blocks);
    free(s);
}

bool anthropic_decoder_done(const provider_stream *ps)
{
    assert(ps->type == TARGET_ANTHROPIC);
    return ((const anthropic_stream *)ps)->done;
}

/* "data: " and a chunk's opening: {id, object, created, model; the caller writes the rest and
 * ends it with end_chunk */
static size_t begin_chunk(const anthropic_stream *s, buf *out, jw *w)
{
    assert(s->id); /* chunks follow message_start */
    size_t mark = out->len;
    buf_append(out, "data: ", 6);
    jw_init(w, out);
    jw_obj(w);
    write_head(w, s->id, strlen(s->id), "chat.completion.chunk", (long long)s->created, s->model);
    return mark;
}

/* closes the chunk and adds the blank line; on failure drops what the chunk wrote */
static bool end_chunk(buf *out, jw *w, size_t mark)
{
    jw_obj_end(w);
    if (!jw_finish(w)) {
        out->len = mark;
        if (out->data) out->data[mark] = 0;
        return false;
    }
    buf_append(out, "\n\n", 2);
    return true;
}

/* one chunk with choices[0].delta = delta (stolen), finish_reason finish or null */
static bool emit_delta(const anthropic_stream *s, buf *out, json_t *delta, const char *finish)
{
    jw w;
    size_t mark = begin_chunk(s, out, &w);
    jw_key(&w, "choices");
    jw_arr(&w);
    jw_obj(&w);
    jw_key(&w, "index");
    jw_int(&w, 0);
    jw_key(&w, "delta");
    jw_value(&w, delta);
    jw_key(&w, "logprobs");
    jw_null(&w);
    jw_key(&w, "finish_reason");
    if (finish)
        jw_str(&w, finish);
    else
        jw_null(&w);
    jw_obj_end(&w);
    jw_arr_end(&w);
    json_decref(delta);
    return end_chunk(out, &w, mark);
}

static bool emit_text(const anthropic_stream *s, buf *out, const char *key, json_t *text)
{
    if (!json_string_length(text)) return true;
    return emit_delta(s, out, json_pack("{s:O}", key, text), NULL);
}

static bool emit_args(const anthropic_stream *s, buf *out, int tool, const char *args, size_t n)
{
    json_t *tc = json_object();
    json_object_set_new(tc, "index", json_integer(tool));
    json_object_set_new(tc, "function", json_pack("{s:s%}", "arguments", args, n));
    return emit_delta(s, out, json_pack("{s:[o]}", "tool_calls", tc), NULL);
}

static bool emit_thinking_block(const anthropic_stream *s, buf *out, json_t *blk)
{
    return emit_delta(s, out, json_pack("{s:[o]}", "thinking_blocks", blk), NULL);
}

/* The event's name and its data lines joined with "\n" (SSE: one optional space after the
 * colon is dropped; lines end in \n or \r\n; ':' lines are comments; other fields ignored). */
static void sse_split(const char *ev, size_t len, char *name, size_t namelen, bool *name_long,
                      buf *data, bool *has_data)
{
    name[0] = 0;
    *name_long = false;
    *has_data = false;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(ev + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - ev) : len;
        size_t next = nl ? end + 1 : len;
        size_t lend = end;
        if (lend > pos && ev[lend - 1] == '\r') lend--;
        const char *line = ev + pos;
        size_t ll = lend - pos;
        pos = next;
        if (ll == 0) break; /* the blank line that ends the event */
        if (line[0] == ':') continue;
        const char *colon = memchr(line, ':', ll);
        size_t fl = colon ? (size_t)(colon - line) : ll;
        const char *val = colon ? colon + 1 : line + ll;
        size_t vl = ll - (size_t)(val - line);
        if (vl && val[0] == ' ') {
            val++;
            vl--;
        }
        if (fl == 5 && memcmp(line, "event", 5) == 0) {
            if (vl >= namelen) {
                *name_long = true;
                vl = namelen - 1;
            } else {
                *name_long = false;
            }
            memcpy(name, val, vl);
            name[vl] = 0;
        } else if (fl == 4 && memcmp(line, "data", 4) == 0) {
            if (*has_data) buf_append(data, "\n", 1);
            buf_append(data, val, vl);
            *has_data = true;
        }
    }
}

/* the block for an event's index, NULL (why set) when it is not a started, open block */
static blk_state *open_block(anthropic_stream *s, json_t *d, const char *ev, char *why,
                             size_t whylen)
{
    json_t *ix = json_object_get(d, "index");
    if (!json_is_integer(ix)) {
        set_why(why, whylen, "Anthropic %s without an integer index", ev);
        return NULL;
    }
    json_int_t i = json_integer_value(ix);
    if (i < 0 || (size_t)i >= s->n_blocks || s->blocks[i].kind == BLK_NONE) {
        set_why(why, whylen, "Anthropic %s for content block %lld, which was not started", ev,
                (long long)i);
        return NULL;
    }
    if (!s->blocks[i].open) {
        set_why(why, whylen, "Anthropic %s for content block %lld after its content_block_stop", ev,
                (long long)i);
        return NULL;
    }
    return &s->blocks[i];
}

static int on_message_start(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    if (s->started) {
        set_why(why, whylen, "a second Anthropic message_start in one stream");
        return -1;
    }
    json_t *m = json_object_get(d, "message");
    json_t *id = json_object_get(m, "id");
    if (!json_is_string(id)) {
        set_why(why, whylen, "Anthropic message_start without message.id");
        return -1;
    }
    const char *bad = NULL;
    if (!read_counts(json_object_get(m, "usage"), &s->usage, &bad)) {
        set_why(why, whylen, "Anthropic message_start's usage.%s is not a token count", bad);
        return -1;
    }
    s->id = strdup(json_string_value(id));
    if (!s->id) {
        set_why(why, whylen, "out of memory");
        return -1;
    }
    s->started = true;
    return emit_delta(s, out, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL)
               ? 0
               : -1;
}

static int on_block_start(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    json_t *ix = json_object_get(d, "index");
    json_t *cb = json_object_get(d, "content_block");
    const char *type = json_string_value(json_object_get(cb, "type"));
    if (!json_is_integer(ix) || json_integer_value(ix) < 0 ||
        json_integer_value(ix) >= MAX_BLOCKS || !type) {
        set_why(why, whylen,
                "Anthropic content_block_start needs an index (0..%d) and content_block.type",
                MAX_BLOCKS - 1);
        return -1;
    }
    size_t i = (size_t)json_integer_value(ix);
    if (i >= s->n_blocks) {
        size_t n = s->n_blocks ? s->n_blocks : 8;
        while (n <= i)
            n *= 2;
        blk_state *nb = realloc(s->blocks, n * sizeof *nb);
        if (!nb) {
            set_why(why, whylen, "out of memory");
            return -1;
        }
        memset(nb + s->n_blocks, 0, (n - s->n_blocks) * sizeof *nb);
        s->blocks = nb;
        s->n_blocks = n;
    }
    blk_state *b = &s->blocks[i];
    if (b->kind != BLK_NONE) {
        set_why(why, whylen, "Anthropic content_block_start for block %zu, already started", i);
        return -1;
    }
    bool ok = true;
    if (strcmp(type, "text") == 0) {
        b->kind = BLK_TEXT;
        json_t *t = json_object_get(cb, "text");
        if (json_is_string(t)) ok = emit_text(s, out, "content", t);
    } else if (strcmp(type, "tool_use") == 0) {
        json_t *id = json_object_get(cb, "id");
        json_t *name = json_object_get(cb, "name");
        json_t *input = json_object_get(cb, "input");
        if (!json_is_string(id) || !json_is_string(name)) {
            set_why(why, whylen, "Anthropic tool_use content_block_start without id and name");
            return -1;
        }
        b->kind = BLK_TOOL;
        b->tool = s->n_tools++;
        ok = emit_delta(
            s, out,
            json_pack("{s:[o]}", "tool_calls", tool_call_json(id, name, "", 0, b->tool, true)),
            NULL);
        if (ok && json_is_object(input) && json_object_size(input)) {
            size_t n;
            char *args = json_encode_fast(input, &n);
            ok = args && emit_args(s, out, b->tool, args, n);
            free(args);
            b->has_args = true;
        }
    } else if (strcmp(type, "thinking") == 0) {
        b->kind = BLK_THINKING;
        json_t *t = json_object_get(cb, "thinking");
        if (json_is_string(t)) ok = emit_text(s, out, "reasoning_content", t);
        json_t *sig = json_object_get(cb, "signature");
        if (ok && json_string_length(sig))
            ok = emit_thinking_block(s, out,
                                     json_pack("{s:s,s:O}", "type", "thinking", "signature", sig));
    } else if (strcmp(type, "redacted_thinking") == 0) {
        json_t *data = json_object_get(cb, "data");
        if (!json_is_string(data)) {
            set_why(why, whylen, "Anthropic redacted_thinking content_block_start without data");
            return -1;
        }
        b->kind = BLK_REDACTED;
        ok = emit_thinking_block(s, out,
                                 json_pack("{s:s,s:O}", "type", "redacted_thinking", "data", data));
    } else {
        b->kind = BLK_OTHER; /* a block with no Chat Completions form: its deltas are dropped */
    }
    b->open = true;
    if (!ok) set_why(why, whylen, "out of memory");
    return ok ? 0 : -1;
}

static int on_block_delta(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    blk_state *b = open_block(s, d, "content_block_delta", why, whylen);
    if (!b) return -1;
    json_t *delta = json_object_get(d, "delta");
    const char *type = json_string_value(json_object_get(delta, "type"));
    if (!type) {
        set_why(why, whylen, "Anthropic content_block_delta without delta.type");
        return -1;
    }
    static const struct {
        const char *type, *field;
        blk_kind kind;
    } kinds[] = {
        {"text_delta", "text", BLK_TEXT},
        {"input_json_delta", "partial_json", BLK_TOOL},
        {"thinking_delta", "thinking", BLK_THINKING},
        {"signature_delta", "signature", BLK_THINKING},
    };
    size_t k = 0;
    while (k < sizeof kinds / sizeof kinds[0] && strcmp(type, kinds[k].type) != 0)
        k++;
    if (k == sizeof kinds / sizeof kinds[0] || b->kind == BLK_OTHER)
        return 0; /* a delta this adapter does not translate (citations, server tools) */
    json_t *v = json_object_get(delta, kinds[k].field);
    if (b->kind != kinds[k].kind || !json_is_string(v)) {
        set_why(why, whylen, "Anthropic %s %s", type,
                b->kind != kinds[k].kind ? "for a block of another type"
                                         : "without its string field");
        return -1;
    }
    bool ok = true;
    switch (kinds[k].kind) {
    case BLK_TEXT:
        ok = emit_text(s, out, "content", v);
        break;
    case BLK_TOOL:
        if (json_string_length(v)) {
            ok = emit_args(s, out, b->tool, json_string_value(v), json_string_length(v));
            b->has_args = true;
        }
        break;
    default:
        if (k == 2)
            ok = emit_text(s, out, "reasoning_content", v);
        else
            ok = emit_thinking_block(s, out,
                                     json_pack("{s:s,s:O}", "type", "thinking", "signature", v));
        break;
    }
    if (!ok) set_why(why, whylen, "out of memory");
    return ok ? 0 : -1;
}

static int on_block_stop(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    blk_state *b = open_block(s, d, "content_block_stop", why, whylen);
    if (!b) return -1;
    b->open = false;
    /* a call without arguments still gets a JSON object, as OpenAI streams it */
    if (b->kind == BLK_TOOL && !b->has_args && !emit_args(s, out, b->tool, "{}", 2)) {
        set_why(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static int on_message_delta(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    json_t *delta = json_object_get(d, "delta");
    json_t *stop = json_object_get(delta, "stop_reason");
    const char *bad = NULL;
    if (!json_is_object(delta) || (stop && !json_is_null(stop) && !json_is_string(stop))) {
        set_why(why, whylen, "Anthropic message_delta without a delta object (stop_reason)");
        return -1;
    }
    if (!read_counts(json_object_get(d, "usage"), &s->usage, &bad)) {
        set_why(why, whylen, "Anthropic message_delta's usage.%s is not a token count", bad);
        return -1;
    }
    if (!json_is_string(stop) || s->finished) return 0;
    s->finished = true;
    if (!emit_delta(s, out, json_object(), anthropic_finish_reason(json_string_value(stop)))) {
        set_why(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

static int on_message_stop(anthropic_stream *s, buf *out, char *why, size_t whylen)
{
    if (!s->finished) {
        set_why(why, whylen, "Anthropic message_stop before a message_delta with a stop_reason");
        return -1;
    }
    jw w;
    size_t mark = begin_chunk(s, out, &w);
    jw_key(&w, "choices");
    jw_arr(&w);
    jw_arr_end(&w);
    write_usage(&w, &s->usage);
    if (!end_chunk(out, &w, mark)) {
        set_why(why, whylen, "out of memory");
        return -1;
    }
    buf_puts(out, "data: [DONE]\n\n");
    s->done = true;
    return 0;
}

static int on_error(anthropic_stream *s, json_t *d, buf *out, char *why, size_t whylen)
{
    json_t *e = json_object_get(d, "error");
    const char *type = json_string_value(json_object_get(e, "type"));
    json_t *msg = json_object_get(e, "message");
    if (!type || !json_is_string(msg)) {
        set_why(why, whylen, "Anthropic error event without error.type and error.message");
        return -1;
    }
    const err_map *m = map_type(type);
    json_t *oe = json_object();
    json_object_set(oe, "message", msg);
    json_object_set_new(oe, "type", json_string(m ? m->type : "server_error"));
    json_object_set_new(oe, "code", json_string(m && m->code ? m->code : "upstream_error"));
    s->failed = true;
    json_t *err = json_pack("{s:o}", "error", oe);
    size_t n;
    char *text = json_encode_fast(err, &n);
    json_decref(err);
    if (text) {
        buf_append(out, "data: ", 6);
        buf_append(out, text, n);
        buf_append(out, "\n\n", 2);
        free(text);
    }
    if (!text) {
        set_why(why, whylen, "out of memory");
        return -1;
    }
    return 0;
}

int anthropic_decoder_event(provider_stream *ps, const char *ev, size_t len, buf *out, char *why,
                            size_t whylen)
{
    assert(ps && ps->type == TARGET_ANTHROPIC);
    anthropic_stream *s = (anthropic_stream *)ps;
    if (s->done || s->failed) return 0; /* the answer is over: nothing more goes out */
    char name[64];
    bool name_long, has_data;
    buf data = BUF_INIT;
    sse_split(ev, len, name, sizeof name, &name_long, &data, &has_data);
    if (!has_data) {
        buf_free(&data);
        if (name[0] && !name_long && strcmp(name, "ping") != 0 &&
            (is_prefix(name, "message_") || is_prefix(name, "content_block_") ||
             strcmp(name, "error") == 0)) {
            set_why(why, whylen, "Anthropic %s event without data", name);
            return -1;
        }
        return 0; /* a comment, a keep-alive, or an event of no interest */
    }
    char jerr[160];
    json_t *d = json_decode_fast(data.data, data.len, jerr, sizeof jerr);
    buf_free(&data);
    const char *type = json_string_value(json_object_get(d, "type"));
    if (!d || !type) {
        set_why(why, whylen, "Anthropic %s event whose data is not %s", name[0] ? name : "stream",
                d ? "an object with a type" : "JSON");
        json_decref(d);
        return -1;
    }
    if (name[0] && (name_long || strcmp(name, type) != 0)) {
        set_why(why, whylen, "Anthropic event '%s%s' carries data of type '%s'", name,
                name_long ? "..." : "", type);
        json_decref(d);
        return -1;
    }
    int rc = 0;
    bool needs_start = strcmp(type, "ping") != 0 && strcmp(type, "error") != 0 &&
                       strcmp(type, "message_start") != 0;
    if (needs_start && !s->started &&
        (is_prefix(type, "message_") || is_prefix(type, "content_block_"))) {
        set_why(why, whylen, "Anthropic %s before message_start", type);
        rc = -1;
    } else if (strcmp(type, "message_start") == 0) {
        rc = on_message_start(s, d, out, why, whylen);
    } else if (strcmp(type, "content_block_start") == 0) {
        rc = on_block_start(s, d, out, why, whylen);
    } else if (strcmp(type, "content_block_delta") == 0) {
        rc = on_block_delta(s, d, out, why, whylen);
    } else if (strcmp(type, "content_block_stop") == 0) {
        rc = on_block_stop(s, d, out, why, whylen);
    } else if (strcmp(type, "message_delta") == 0) {
        rc = on_message_delta(s, d, out, why, whylen);
    } else if (strcmp(type, "message_stop") == 0) {
        rc = on_message_stop(s, out, why, whylen);
    } else if (strcmp(type, "error") == 0) {
        rc = on_error(s, d, out, why, whylen);
    }
    /* ping and event types added after this adapter: nothing */
    json_decref(d);
    return rc;
}
