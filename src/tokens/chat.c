/* chat.c — prompt-token count of an OpenAI chat messages array, following the OpenAI cookbook
 * "How to count tokens with tiktoken" (num_tokens_from_messages). Its constants are the same for
 * the o200k and cl100k models; each message is framed as <|start|>{role/name}\n{content}<|end|>\n
 * and the reply is primed with <|start|>assistant<|message|>. */
#include "tokens/tokens.h"

#include <string.h>

#define TOK_PER_MESSAGE 3
#define TOK_PER_NAME 1
#define TOK_REPLY_PRIMING 3

static size_t chat_count_string(const tok_encoding *enc, const json_t *s)
{
    return tok_count(enc, json_string_value(s), json_string_length(s));
}

/* Content given as parts: only text parts have a defined token count. */
static size_t chat_count_parts(const tok_encoding *enc, const json_t *parts)
{
    size_t n = 0, i;
    const json_t *part;
    json_array_foreach(parts, i, part)
    {
        const json_t *text = json_object_get(part, "text");
        if (json_is_string(text)) n += chat_count_string(enc, text);
    }
    return n;
}

static size_t chat_count_tool_calls(const tok_encoding *enc, const json_t *calls)
{
    size_t n = 0, i;
    const json_t *call;
    json_array_foreach(calls, i, call)
    {
        const json_t *fn = json_object_get(call, "function");
        const json_t *name = json_object_get(fn, "name");
        const json_t *args = json_object_get(fn, "arguments");
        if (json_is_string(name)) n += chat_count_string(enc, name);
        if (json_is_string(args)) n += chat_count_string(enc, args);
    }
    return n;
}

size_t tok_count_message(const tok_encoding *enc, json_t *message)
{
    size_t n = TOK_PER_MESSAGE;
    const char *key;
    json_t *value;
    json_object_foreach(message, key, value)
    {
        if (json_is_string(value))
            n += chat_count_string(enc, value);
        else if (strcmp(key, "content") == 0 && json_is_array(value))
            n += chat_count_parts(enc, value);
        else if (strcmp(key, "tool_calls") == 0 && json_is_array(value))
            n += chat_count_tool_calls(enc, value);
        if (strcmp(key, "name") == 0) n += TOK_PER_NAME;
    }
    return n;
}

size_t tok_count_chat(const tok_encoding *enc, json_t *messages)
{
    size_t n = TOK_REPLY_PRIMING, i;
    json_t *msg;
    json_array_foreach(messages, i, msg) /* no iterations for NULL or a non-array */
    {
        n += tok_count_message(enc, msg);
    }
    return n;
}
