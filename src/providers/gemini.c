/* gemini.c — the Gemini adapter (type Gemini, Google AI's generateContent REST API): the
 * canonical OpenAI Chat Completions body becomes a GenerateContentRequest (contents/parts,
 * systemInstruction, functionDeclarations, generationConfig), and GenerateContentResponse
 * answers, whole or as alt=sse events, become chat.completion documents and chunks. Embeddings
 * go through batchEmbedContents. docs/providers.md ("Gemini") lists what maps to what and what
 * is refused; nothing here does I/O. */
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/json.h"
#include "providers/gemini.h"

/* ---- small helpers ---- */

static bool is_num(const json_t *v)
{
    return json_is_number(v) || json_raw_number_text(v, NULL, NULL);
}

/* FNV-1a: ids for answers that carry none, the same for the same answer */
static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

const char *gemini_model_id(const char *model_name)
{
    if (!model_name) return NULL;
    if (has_prefix(model_name, "models/")) model_name += 7;
    if (!*model_name) return NULL;
    for (const char *p = model_name; *p; p++) {
        char ch = *p;
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
                  (ch >= '0' && ch <= '9') || ch == '.' || ch == '-' || ch == '_';
        if (!ok) return NULL;
    }
    return model_name;
}

/* {endpoint}/v1beta, unless the endpoint already names an API version */
static const char *api_base(const cfg_target *t, arena *pool)
{
    size_t n = strlen(t->endpoint);
    if ((n >= 7 && !strcmp(t->endpoint + n - 7, "/v1beta")) ||
        (n >= 3 && !strcmp(t->endpoint + n - 3, "/v1")))
        return t->endpoint;
    return arena_printf(pool, "%s/v1beta", t->endpoint);
}

static void set_headers(const cfg_target *t, const char *request_id, provider_request *out)
{
    size_t n = 0;
    out->headers[n++] = (upstream_header){"Content-Type", "application/json"};
    if (t->api_key) out->headers[n++] = (upstream_header){"x-goog-api-key", t->api_key};
    if (request_id && *request_id)
        out->headers[n++] = (upstream_header){"X-Request-Id", request_id};
    out->n_headers = n;
}

static void merge_parameters(const cfg_target *t, json_t *body, const char *const *only)
{
    const char *k;
    json_t *v;
    json_object_foreach(t->parameters, k, v)
    {
        if (json_object_get(body, k)) continue; /* the request wins */
        bool take = !only;
        for (size_t i = 0; only && only[i]; i++)
            if (!strcmp(only[i], k)) take = true;
        if (take) json_object_set(body, k, v);
    }
}

/* ---- request translation ---- */

typedef struct req_ctx {
    arena *pool;
    provider_request *out;
    char *err;
    size_t errlen;
} req_ctx;

__attribute__((format(printf, 3, 4))) static int refuse(req_ctx *c, const char *param,
                                                        const char *fmt, ...)
{
    c->out->err_param = param;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, c->errlen, fmt, ap);
    va_end(ap);
    return PROVIDER_EREQUEST;
}

/* The text of a content that may only hold text (system, tool): a string or text parts. */
static int text_only(req_ctx *c, json_t *content, size_t i, buf *out)
{
    if (json_is_string(content)) {
        buf_append(out, json_string_value(content), json_string_length(content));
        return 0;
    }
    if (json_is_null(content) || !content) return 0;
    if (!json_is_array(content))
        return refuse(c, arena_printf(c->pool, "messages[%zu].content", i),
                      "messages[%zu].content must be a string or an array of text parts", i);
    size_t j;
    json_t *part;
    json_array_foreach(content, j, part)
    {
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(text))
            return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu]", i, j),
                          "messages[%zu].content[%zu] must be a text part here", i, j);
        buf_append(out, json_string_value(text), json_string_length(text));
    }
    return 0;
}

/* "data:<mime>;base64,<data>" -> inlineData; NULL when url is not such a URL */
static json_t *data_url_part(const char *url)
{
    if (!has_prefix(url, "data:")) return NULL;
    const char *mime = url + 5;
    const char *b64 = strstr(mime, ";base64,");
    if (!b64 || b64 == mime) return NULL;
    json_t *inl = json_object();
    json_object_set_new(inl, "mimeType", json_stringn(mime, (size_t)(b64 - mime)));
    json_object_set_new(inl, "data", json_string(b64 + 8));
    return json_pack("{s:o}", "inlineData", inl);
}

/* The image MIME type a URL's path ends in; NULL when it names none Gemini takes. */
static const char *image_mime_of(const char *url)
{
    static const struct {
        const char *ext, *mime;
    } known[] = {{".png", "image/png"},   {".jpg", "image/jpeg"}, {".jpeg", "image/jpeg"},
                 {".webp", "image/webp"}, {".gif", "image/gif"},  {".heic", "image/heic"},
                 {".heif", "image/heif"}};
    size_t n = strcspn(url, "?#");
    for (size_t k = 0; k < sizeof known / sizeof known[0]; k++) {
        size_t e = strlen(known[k].ext);
        if (n > e && strncasecmp(url + n - e, known[k].ext, e) == 0) return known[k].mime;
    }
    return NULL;
}

static int user_part(req_ctx *c, json_t *part, size_t i, size_t j, json_t *parts)
{
    const char *type = json_string_value(json_object_get(part, "type"));
    if (!type)
        return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu].type", i, j),
                      "messages[%zu].content[%zu].type is missing", i, j);
    if (!strcmp(type, "text")) {
        json_t *text = json_object_get(part, "text");
        if (!json_is_string(text))
            return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu].text", i, j),
                          "messages[%zu].content[%zu].text must be a string", i, j);
        json_array_append_new(parts, json_pack("{s:O}", "text", text));
        return 0;
    }
    if (!strcmp(type, "image_url")) {
        json_t *iu = json_object_get(part, "image_url");
        const char *url = json_string_value(json_is_object(iu) ? json_object_get(iu, "url") : iu);
        const char *param = arena_printf(c->pool, "messages[%zu].content[%zu].image_url.url", i, j);
        if (!url) return refuse(c, param, "%s must be a string", param);
        json_t *p = data_url_part(url);
        if (p) {
            json_array_append_new(parts, p);
            return 0;
        }
        if (has_prefix(url, "data:"))
            return refuse(c, param, "%s: a data: URL must be data:<mime type>;base64,<data>",
                          param);
        const char *mime = image_mime_of(url);
        if (!mime)
            return refuse(c, param,
                          "%s: Gemini needs the image's MIME type; send the image as a data: "
                          "URL, or use a URL whose path ends in .png, .jpg, .jpeg, .webp, .gif, "
                          ".heic or .heif",
                          param);
        json_array_append_new(
            parts, json_pack("{s:{s:s,s:s}}", "fileData", "mimeType", mime, "fileUri", url));
        return 0;
    }
    if (!strcmp(type, "input_audio")) {
        json_t *a = json_object_get(part, "input_audio");
        const char *data = json_string_value(json_object_get(a, "data"));
        const char *format = json_string_value(json_object_get(a, "format"));
        const char *param = arena_printf(c->pool, "messages[%zu].content[%zu].input_audio", i, j);
        const char *mime = !format                  ? NULL
                           : !strcmp(format, "wav") ? "audio/wav"
                           : !strcmp(format, "mp3") ? "audio/mp3"
                                                    : NULL;
        if (!data || !mime)
            return refuse(c, param, "%s needs data (base64) and format \"wav\" or \"mp3\"", param);
        json_array_append_new(
            parts, json_pack("{s:{s:s,s:s}}", "inlineData", "mimeType", mime, "data", data));
        return 0;
    }
    if (!strcmp(type, "file")) {
        json_t *f = json_object_get(part, "file");
        const char *fd = json_string_value(json_object_get(f, "file_data"));
        json_t *p = fd ? data_url_part(fd) : NULL;
        if (!p)
            return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu].file", i, j),
                          "messages[%zu].content[%zu].file: Gemini targets take a file only as "
                          "file_data, a data:<mime type>;base64,<data> URL (file_id names an "
                          "OpenAI upload)",
                          i, j);
        json_array_append_new(parts, p);
        return 0;
    }
    return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu].type", i, j),
                  "messages[%zu].content[%zu].type \"%s\" has no Gemini equivalent", i, j, type);
}

/* Appends a content of role, merged into the last one when it has the same role (Gemini wants
 * turns to alternate). Takes parts. */
static void add_content(json_t *contents, const char *role, json_t *parts)
{
    if (!json_array_size(parts)) {
        json_decref(parts);
        return;
    }
    json_t *last = json_array_get(contents, json_array_size(contents) - 1);
    const char *lr = json_string_value(json_object_get(last, "role"));
    if (lr && !strcmp(lr, role)) {
        json_array_extend(json_object_get(last, "parts"), parts);
        json_decref(parts);
        return;
    }
    json_array_append_new(contents, json_pack("{s:s,s:o}", "role", role, "parts", parts));
}

static int assistant_parts(req_ctx *c, json_t *m, size_t i, json_t *names, json_t *parts)
{
    json_t *content = json_object_get(m, "content");
    if (json_is_string(content)) {
        if (json_string_length(content))
            json_array_append_new(parts, json_pack("{s:O}", "text", content));
    } else if (json_is_array(content)) {
        size_t j;
        json_t *part;
        json_array_foreach(content, j, part)
        {
            json_t *text = json_object_get(part, "text");
            if (!json_is_string(text)) text = json_object_get(part, "refusal");
            if (!json_is_string(text))
                return refuse(c, arena_printf(c->pool, "messages[%zu].content[%zu]", i, j),
                              "messages[%zu].content[%zu]: an assistant message holds text or "
                              "refusal parts only",
                              i, j);
            json_array_append_new(parts, json_pack("{s:O}", "text", text));
        }
    } else if (content && !json_is_null(content)) {
        return refuse(c, arena_printf(c->pool, "messages[%zu].content", i),
                      "messages[%zu].content must be a string, an array or null", i);
    }
    size_t j;
    json_t *tc;
    json_array_foreach(json_object_get(m, "tool_calls"), j, tc)
    {
        json_t *fn = json_object_get(tc, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!name)
            return refuse(
                c, arena_printf(c->pool, "messages[%zu].tool_calls[%zu].function.name", i, j),
                "messages[%zu].tool_calls[%zu].function.name must be a string", i, j);
        const char *param =
            arena_printf(c->pool, "messages[%zu].tool_calls[%zu].function.arguments", i, j);
        json_t *a = json_object_get(fn, "arguments");
        json_t *args = NULL;
        if (json_is_string(a)) {
            const char *s = json_string_value(a);
            size_t n = json_string_length(a);
            args = n ? json_decode_fast(s, n, NULL, 0) : json_object();
        }
        if (!json_is_object(args)) {
            json_decref(args);
            return refuse(c, param,
                          "%s must be a JSON object in a string (Gemini takes function-call "
                          "arguments as an object)",
                          param);
        }
        json_array_append_new(
            parts, json_pack("{s:{s:s,s:o}}", "functionCall", "name", name, "args", args));
        const char *id = json_string_value(json_object_get(tc, "id"));
        if (id) json_object_set_new(names, id, json_string(name));
    }
    return 0;
}

static int tool_part(req_ctx *c, json_t *m, size_t i, const char *name, json_t *parts)
{
    buf text = BUF_INIT;
    int rc = text_only(c, json_object_get(m, "content"), i, &text);
    if (rc) {
        buf_free(&text);
        return rc;
    }
    json_t *response = text.data ? json_decode_fast(text.data, text.len, NULL, 0) : NULL;
    if (!json_is_object(response)) {
        json_decref(response);
        response = json_object();
        json_object_set_new(response, "result", json_stringn(text.data ? text.data : "", text.len));
    }
    buf_free(&text);
    json_array_append_new(
        parts, json_pack("{s:{s:s,s:o}}", "functionResponse", "name", name, "response", response));
    return 0;
}

static int translate_messages(req_ctx *c, json_t *messages, json_t *req)
{
    if (!json_is_array(messages) || !json_array_size(messages))
        return refuse(c, "messages", "messages must be a non-empty array");
    json_t *contents = json_array();
    json_t *system = json_array();
    json_t *names = json_object(); /* tool_call_id -> function name, as the calls came */
    json_object_set_new(req, "contents", contents);
    int rc = 0;
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        const char *role = json_string_value(json_object_get(m, "role"));
        if (!role) {
            rc = refuse(c, arena_printf(c->pool, "messages[%zu].role", i),
                        "messages[%zu].role must be a string", i);
            break;
        }
        json_t *parts = json_array();
        const char *grole = "user";
        if (!strcmp(role, "system") || !strcmp(role, "developer")) {
            buf text = BUF_INIT;
            rc = text_only(c, json_object_get(m, "content"), i, &text);
            if (!rc)
                json_array_append_new(
                    system, json_pack("{s:s%}", "text", text.data ? text.data : "", text.len));
            buf_free(&text);
            json_decref(parts);
            if (rc) break;
            continue;
        } else if (!strcmp(role, "user")) {
            json_t *content = json_object_get(m, "content");
            if (json_is_string(content)) {
                json_array_append_new(parts, json_pack("{s:O}", "text", content));
            } else if (json_is_array(content)) {
                size_t j;
                json_t *part;
                json_array_foreach(content, j, part)
                {
                    if ((rc = user_part(c, part, i, j, parts))) break;
                }
            } else {
                rc = refuse(c, arena_printf(c->pool, "messages[%zu].content", i),
                            "messages[%zu].content must be a string or an array of parts", i);
            }
        } else if (!strcmp(role, "assistant")) {
            grole = "model";
            rc = assistant_parts(c, m, i, names, parts);
        } else if (!strcmp(role, "tool")) {
            const char *id = json_string_value(json_object_get(m, "tool_call_id"));
            const char *name = id ? json_string_value(json_object_get(names, id)) : NULL;
            if (!name)
                rc = refuse(c, arena_printf(c->pool, "messages[%zu].tool_call_id", i),
                            "messages[%zu].tool_call_id does not name a tool call of an earlier "
                            "assistant message (Gemini needs the function's name)",
                            i);
            else
                rc = tool_part(c, m, i, name, parts);
        } else if (!strcmp(role, "function")) {
            const char *name = json_string_value(json_object_get(m, "name"));
            if (!name)
                rc = refuse(c, arena_printf(c->pool, "messages[%zu].name", i),
                            "messages[%zu].name must be a string", i);
            else
                rc = tool_part(c, m, i, name, parts);
        } else {
            rc = refuse(c, arena_printf(c->pool, "messages[%zu].role", i),
                        "messages[%zu].role \"%s\" has no Gemini equivalent", i, role);
        }
        if (rc) {
            json_decref(parts);
            break;
        }
        add_content(contents, grole, parts);
    }
    json_decref(names);
    if (!rc && json_array_size(system))
        json_object_set_new(req, "systemInstruction", json_pack("{s:O}", "parts", system));
    json_decref(system);
    if (!rc && !json_array_size(contents))
        rc = refuse(c, "messages", "messages holds no user or assistant turn to send");
    return rc;
}

static int translate_tools(req_ctx *c, json_t *body, json_t *req)
{
    json_t *tools = json_object_get(body, "tools");
    if (tools && !json_is_array(tools)) return refuse(c, "tools", "tools must be an array");
    json_t *decls = json_array();
    size_t i;
    json_t *tool;
    json_array_foreach(tools, i, tool)
    {
        const char *type = json_string_value(json_object_get(tool, "type"));
        json_t *fn = json_object_get(tool, "function");
        const char *name = json_string_value(json_object_get(fn, "name"));
        if (!type || strcmp(type, "function") != 0) {
            json_decref(decls);
            return refuse(c, arena_printf(c->pool, "tools[%zu].type", i),
                          "tools[%zu].type: Gemini targets take function tools only", i);
        }
        if (!name) {
            json_decref(decls);
            return refuse(c, arena_printf(c->pool, "tools[%zu].function.name", i),
                          "tools[%zu].function.name must be a string", i);
        }
        json_t *d = json_pack("{s:s}", "name", name);
        json_t *desc = json_object_get(fn, "description");
        if (json_is_string(desc)) json_object_set(d, "description", desc);
        json_t *params = json_object_get(fn, "parameters");
        /* parametersJsonSchema takes JSON Schema as OpenAI clients write it (additionalProperties,
         * $schema); `parameters` takes only Google's OpenAPI subset and refuses those */
        if (json_is_object(params)) json_object_set(d, "parametersJsonSchema", params);
        json_array_append_new(decls, d);
    }
    if (json_array_size(decls))
        json_object_set_new(req, "tools", json_pack("[{s:o}]", "functionDeclarations", decls));
    else
        json_decref(decls);

    json_t *choice = json_object_get(body, "tool_choice");
    if (!choice) return 0;
    const char *mode = NULL;
    const char *only = NULL;
    if (json_is_string(choice)) {
        const char *s = json_string_value(choice);
        mode = !strcmp(s, "auto")       ? "AUTO"
               : !strcmp(s, "none")     ? "NONE"
               : !strcmp(s, "required") ? "ANY"
                                        : NULL;
    } else if (json_is_object(choice)) {
        only = json_string_value(json_object_get(json_object_get(choice, "function"), "name"));
        if (only) mode = "ANY";
    }
    if (!mode)
        return refuse(c, "tool_choice",
                      "tool_choice must be \"auto\", \"none\", \"required\" or "
                      "{\"type\":\"function\",\"function\":{\"name\":...}}");
    json_t *fcc = json_pack("{s:s}", "mode", mode);
    if (only) json_object_set_new(fcc, "allowedFunctionNames", json_pack("[s]", only));
    json_object_set_new(req, "toolConfig", json_pack("{s:o}", "functionCallingConfig", fcc));
    return 0;
}

static int translate_generation(req_ctx *c, json_t *body, json_t *req)
{
    static const struct {
        const char *from, *to;
        bool integer;
    } plain[] = {
        {"temperature", "temperature", false},
        {"top_p", "topP", false},
        {"top_k", "topK", true},
        {"max_tokens", "maxOutputTokens", true},
        {"max_completion_tokens", "maxOutputTokens", true}, /* after max_tokens: it wins */
        {"n", "candidateCount", true},
        {"seed", "seed", true},
        {"presence_penalty", "presencePenalty", false},
        {"frequency_penalty", "frequencyPenalty", false},
    };
    json_t *gc = json_object();
    for (size_t k = 0; k < sizeof plain / sizeof plain[0]; k++) {
        json_t *v = json_object_get(body, plain[k].from);
        if (!v || json_is_null(v)) continue;
        if (plain[k].integer ? !json_is_integer(v) : !is_num(v)) {
            json_decref(gc);
            return refuse(c, plain[k].from, "%s must be %s", plain[k].from,
                          plain[k].integer ? "an integer" : "a number");
        }
        json_object_set(gc, plain[k].to, v);
    }
    json_t *stop = json_object_get(body, "stop");
    if (json_is_string(stop)) {
        json_object_set_new(gc, "stopSequences", json_pack("[O]", stop));
    } else if (json_is_array(stop)) {
        size_t i;
        json_t *s;
        json_array_foreach(stop, i, s) if (!json_is_string(s))
        {
            json_decref(gc);
            return refuse(c, "stop", "stop must be a string or an array of strings");
        }
        if (json_array_size(stop)) json_object_set(gc, "stopSequences", stop);
    } else if (stop && !json_is_null(stop)) {
        json_decref(gc);
        return refuse(c, "stop", "stop must be a string or an array of strings");
    }
    json_t *rf = json_object_get(body, "response_format");
    if (rf && !json_is_null(rf)) {
        const char *type = json_string_value(json_object_get(rf, "type"));
        json_t *schema = json_object_get(json_object_get(rf, "json_schema"), "schema");
        if (type && !strcmp(type, "json_object")) {
            json_object_set_new(gc, "responseMimeType", json_string("application/json"));
        } else if (type && !strcmp(type, "json_schema") && json_is_object(schema)) {
            json_object_set_new(gc, "responseMimeType", json_string("application/json"));
            json_object_set(gc, "responseJsonSchema", schema);
        } else if (!type || strcmp(type, "text") != 0) {
            json_decref(gc);
            return refuse(c, "response_format",
                          "response_format must be {\"type\":\"text\"}, {\"type\":\"json_object\"} "
                          "or {\"type\":\"json_schema\",\"json_schema\":{\"schema\":{...}}}");
        }
    }
    if (json_object_size(gc))
        json_object_set_new(req, "generationConfig", gc);
    else
        json_decref(gc);
    return 0;
}

/* Canonical fields whose meaning Gemini has no way to honour: refused rather than dropped. */
static int refuse_untranslatable(req_ctx *c, json_t *body)
{
    static const char *const fields[] = {"logit_bias", "top_logprobs", "audio",
                                         "prediction", "functions",    "function_call"};
    for (size_t k = 0; k < sizeof fields / sizeof fields[0]; k++) {
        json_t *v = json_object_get(body, fields[k]);
        if (v && !json_is_null(v))
            return refuse(c, fields[k], "%s is not supported for Gemini targets", fields[k]);
    }
    if (json_is_true(json_object_get(body, "logprobs")))
        return refuse(c, "logprobs", "logprobs is not supported for Gemini targets");
    json_t *mod = json_object_get(body, "modalities");
    size_t i;
    json_t *v;
    json_array_foreach(mod, i, v)
    {
        if (!json_is_string(v) || strcmp(json_string_value(v), "text") != 0)
            return refuse(c, "modalities", "Gemini targets answer with text only");
    }
    return 0;
}

/* t's modelName as a Gemini model id, or NULL with the reason in err */
static const char *model_id_of(const cfg_target *t, char *err, size_t errlen)
{
    const char *model = gemini_model_id(t->model_name);
    if (!model)
        snprintf(err, errlen,
                 "model target '%s': modelName '%s' is not a Gemini model id (letters, digits, "
                 "'.', '-', '_')",
                 t->name, t->model_name);
    return model;
}

int gemini_build_chat(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                      provider_request *out, char *err, size_t errlen)
{
    assert(t->type == TARGET_GEMINI && body);
    memset(out, 0, sizeof *out);
    const char *model = model_id_of(t, err, errlen);
    if (!model) return PROVIDER_EUNSUPPORTED;
    merge_parameters(t, body, NULL);
    req_ctx c = {pool, out, err, errlen};
    json_t *req = json_object();
    int rc = refuse_untranslatable(&c, body);
    if (!rc) rc = translate_messages(&c, json_object_get(body, "messages"), req);
    if (!rc) rc = translate_tools(&c, body, req);
    if (!rc) rc = translate_generation(&c, body, req);
    if (rc) {
        json_decref(req);
        return rc;
    }
    bool stream = json_is_true(json_object_get(body, "stream"));
    /* Gemini reports usage on every stream: the client gets it only when it asked */
    out->stream_usage_added =
        stream &&
        !json_is_true(json_object_get(json_object_get(body, "stream_options"), "include_usage"));
    out->url = arena_printf(pool, "%s/models/%s:%s", api_base(t, pool), model,
                            stream ? "streamGenerateContent?alt=sse" : "generateContent");
    set_headers(t, request_id, out);
    out->body = json_encode_fast(req, &out->body_len);
    json_decref(req);
    if (!out->body) {
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        return PROVIDER_EUNSUPPORTED;
    }
    return 0;
}

/* ---- answer translation ---- */

static const char *finish_reason(const char *r, bool tool_calls)
{
    if (!r) return NULL;
    if (!strcmp(r, "STOP")) return tool_calls ? "tool_calls" : "stop";
    if (!strcmp(r, "MAX_TOKENS")) return "length";
    static const char *const filtered[] = {"SAFETY",
                                           "RECITATION",
                                           "BLOCKLIST",
                                           "PROHIBITED_CONTENT",
                                           "SPII",
                                           "IMAGE_SAFETY",
                                           "IMAGE_PROHIBITED_CONTENT",
                                           "IMAGE_RECITATION"};
    for (size_t k = 0; k < sizeof filtered / sizeof filtered[0]; k++)
        if (!strcmp(r, filtered[k])) return "content_filter";
    /* OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL, FINISH_REASON_UNSPECIFIED, future values: the
     * answer ended for a reason OpenAI has no name for */
    return tool_calls ? "tool_calls" : "stop";
}

static uint64_t count(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* usageMetadata -> OpenAI usage; NULL when the answer has none */
static json_t *usage_of(json_t *um)
{
    if (!json_is_object(um)) return NULL;
    uint64_t prompt = count(um, "promptTokenCount") + count(um, "toolUsePromptTokenCount");
    uint64_t thoughts = count(um, "thoughtsTokenCount");
    uint64_t completion = count(um, "candidatesTokenCount") + thoughts;
    uint64_t total = count(um, "totalTokenCount");
    if (!total) total = prompt + completion;
    json_t *u = json_pack("{s:I,s:I,s:I}", "prompt_tokens", (json_int_t)prompt, "completion_tokens",
                          (json_int_t)completion, "total_tokens", (json_int_t)total);
    if (json_object_get(um, "cachedContentTokenCount"))
        json_object_set_new(
            u, "prompt_tokens_details",
            json_pack("{s:I}", "cached_tokens", (json_int_t)count(um, "cachedContentTokenCount")));
    if (thoughts)
        json_object_set_new(u, "completion_tokens_details",
                            json_pack("{s:I}", "reasoning_tokens", (json_int_t)thoughts));
    return u;
}

/* One functionCall part -> an OpenAI tool call (no index); NULL when it is not one. Gemini
 * gives calls no id unless it does: then it is kept; else call_<answer hash>_<choice>_<n>, unique
 * in a conversation and the same for the same answer. */
static json_t *tool_call_of(json_t *fc, uint64_t hash, size_t choice, size_t n)
{
    const char *name = json_string_value(json_object_get(fc, "name"));
    if (!name) return NULL;
    json_t *args = json_object_get(fc, "args");
    char *a = json_is_object(args) ? json_encode_fast(args, NULL) : strdup("{}");
    if (!a) return NULL;
    const char *gid = json_string_value(json_object_get(fc, "id"));
    char id[64];
    snprintf(id, sizeof id, "call_%016llx_%zu_%zu", (unsigned long long)hash, choice, n);
    json_t *tc = json_pack("{s:s,s:s,s:{s:s,s:s}}", "id", gid && *gid ? gid : id, "type",
                           "function", "function", "name", name, "arguments", a);
    free(a);
    return tc;
}

static const char *answer_id(json_t *doc, uint64_t hash, char *tmp, size_t n)
{
    const char *rid = json_string_value(json_object_get(doc, "responseId"));
    if (rid && *rid) return rid;
    snprintf(tmp, n, "chatcmpl-gemini-%016llx", (unsigned long long)hash);
    return tmp;
}

static char *encode_or_why(json_t *doc, size_t *out_len, char *why, size_t whylen)
{
    char *s = json_encode_fast(doc, out_len);
    json_decref(doc);
    if (!s) snprintf(why, whylen, "the translated answer could not be encoded");
    return s;
}

static json_t *decode_answer(const char *body, size_t len, char *why, size_t whylen)
{
    char jerr[160];
    json_t *doc = json_decode_fast(body ? body : "", len, jerr, sizeof jerr);
    if (!doc) {
        snprintf(why, whylen, "the Gemini answer is not JSON: %s", jerr);
        return NULL;
    }
    if (!json_is_object(doc)) {
        snprintf(why, whylen, "the Gemini answer is not a JSON object");
        json_decref(doc);
        return NULL;
    }
    return doc;
}

char *gemini_chat_answer(const char *body, size_t len, const char *model, size_t *out_len,
                         char *why, size_t whylen)
{
    json_t *doc = decode_answer(body, len, why, whylen);
    if (!doc) return NULL;
    json_t *cands = json_object_get(doc, "candidates");
    json_t *pf = json_object_get(doc, "promptFeedback");
    if ((cands && !json_is_array(cands)) ||
        (!json_array_size(cands) && !json_object_get(pf, "blockReason"))) {
        snprintf(why, whylen,
                 "the Gemini answer has no candidates and no promptFeedback."
                 "blockReason");
        json_decref(doc);
        return NULL;
    }
    uint64_t hash = fnv1a(body, len);
    char idbuf[64];
    json_t *choices = json_array();
    size_t k;
    json_t *cand;
    json_array_foreach(cands, k, cand)
    {
        json_t *ix = json_object_get(cand, "index");
        size_t index =
            json_is_integer(ix) && json_integer_value(ix) >= 0 ? (size_t)json_integer_value(ix) : k;
        buf text = BUF_INIT, thought = BUF_INIT;
        json_t *calls = json_array();
        size_t j;
        json_t *part;
        json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), j, part)
        {
            json_t *t = json_object_get(part, "text");
            json_t *fc = json_object_get(part, "functionCall");
            if (json_is_string(t)) {
                buf *b = json_is_true(json_object_get(part, "thought")) ? &thought : &text;
                buf_append(b, json_string_value(t), json_string_length(t));
            } else if (json_is_object(fc)) {
                json_t *tc = tool_call_of(fc, hash, index, json_array_size(calls));
                if (!tc) {
                    snprintf(why, whylen,
                             "candidates[%zu].content.parts[%zu].functionCall has no name", k, j);
                    buf_free(&text);
                    buf_free(&thought);
                    json_decref(calls);
                    json_decref(choices);
                    json_decref(doc);
                    return NULL;
                }
                json_array_append_new(calls, tc);
            }
        }
        json_t *msg = json_pack("{s:s}", "role", "assistant");
        /* null when nothing was written: only calls, or a candidate blocked before any text */
        bool written = text.len || (!json_array_size(calls) && json_object_get(cand, "content"));
        json_object_set_new(msg, "content",
                            written ? json_stringn(text.data ? text.data : "", text.len)
                                    : json_null());
        if (thought.len)
            json_object_set_new(msg, "reasoning_content", json_stringn(thought.data, thought.len));
        if (json_array_size(calls)) json_object_set(msg, "tool_calls", calls);
        json_object_set_new(msg, "refusal", json_null());
        const char *fr = finish_reason(json_string_value(json_object_get(cand, "finishReason")),
                                       json_array_size(calls) > 0);
        json_array_append_new(choices, json_pack("{s:I,s:o,s:o,s:n}", "index", (json_int_t)index,
                                                 "message", msg, "finish_reason",
                                                 fr ? json_string(fr) : json_null(), "logprobs"));
        buf_free(&text);
        buf_free(&thought);
        json_decref(calls);
    }
    if (!json_array_size(choices)) /* the prompt was blocked: no candidate at all */
        json_array_append_new(choices,
                              json_pack("{s:i,s:{s:s,s:n,s:n},s:s,s:n}", "index", 0, "message",
                                        "role", "assistant", "content", "refusal", "finish_reason",
                                        "content_filter", "logprobs"));
    json_t *out =
        json_pack("{s:s,s:s,s:I,s:s,s:o}", "id", answer_id(doc, hash, idbuf, sizeof idbuf),
                  "object", "chat.completion", "created", (json_int_t)time(NULL), "model",
                  model ? model : "", "choices", choices);
    json_t *u = usage_of(json_object_get(doc, "usageMetadata"));
    if (u) json_object_set_new(out, "usage", u);
    json_decref(doc);
    return encode_or_why(out, out_len, why, whylen);
}

/* ---- stream translation ---- */

enum { GEMINI_MAX_CHOICES = 8 };

struct gemini_stream {
    char *model;
    char *id;      /* chunk id: the first event's responseId, else a hash of it */
    uint64_t hash; /* for tool-call ids */
    long long created;
    json_t *usage; /* the latest usageMetadata, translated (Gemini's counts are cumulative) */
    bool started[GEMINI_MAX_CHOICES]; /* the role chunk of that choice went out */
    bool finished[GEMINI_MAX_CHOICES];
    bool had_calls[GEMINI_MAX_CHOICES];
    size_t n_calls[GEMINI_MAX_CHOICES];
    bool done;   /* [DONE] appended */
    bool failed; /* an error event was relayed: nothing more */
};

gemini_stream *gemini_stream_new(const char *model)
{
    gemini_stream *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->model = strdup(model ? model : "");
    if (!s->model) {
        free(s);
        return NULL;
    }
    s->created = (long long)time(NULL);
    return s;
}

void gemini_stream_free(gemini_stream *s)
{
    if (!s) return;
    json_decref(s->usage);
    free(s->model);
    free(s->id);
    free(s);
}

bool gemini_stream_done(const gemini_stream *s)
{
    return s->done;
}

/* data: {id, object, created, model, choices:[choice]} + usage when given */
static void emit_chunk(gemini_stream *s, buf *out, json_t *choice, json_t *usage)
{
    json_t *ch = json_pack("{s:s,s:s,s:I,s:s}", "id", s->id, "object", "chat.completion.chunk",
                           "created", (json_int_t)s->created, "model", s->model);
    json_object_set_new(ch, "choices", choice ? json_pack("[o]", choice) : json_array());
    if (usage) json_object_set(ch, "usage", usage);
    size_t n = 0;
    char *txt = json_encode_fast(ch, &n);
    json_decref(ch);
    if (!txt) return; /* out of memory: jansson's own allocation failed before us */
    buf_append(out, "data: ", 6);
    buf_append(out, txt, n);
    buf_append(out, "\n\n", 2);
    free(txt);
}

static json_t *delta_choice(size_t index, json_t *delta, const char *finish)
{
    return json_pack("{s:I,s:o,s:o,s:n}", "index", (json_int_t)index, "delta", delta,
                     "finish_reason", finish ? json_string(finish) : json_null(), "logprobs");
}

static void map_error_object(json_t *e, int status, provider_error *out);

static void emit_error(gemini_stream *s, buf *out, json_t *err)
{
    provider_error pe;
    map_error_object(err, 0, &pe);
    const char *msg = json_string_value(json_object_get(err, "message"));
    json_t *e = json_pack("{s:{s:s,s:s,s:o}}", "error", "message",
                          msg ? msg : "the Gemini stream reported an error", "type", pe.type,
                          "code", pe.code ? json_string(pe.code) : json_null());
    char *txt = json_encode_fast(e, NULL);
    json_decref(e);
    if (txt) {
        buf_puts(out, "data: ");
        buf_puts(out, txt);
        buf_puts(out, "\n\n");
        free(txt);
    }
    s->failed = true;
}

/* The event's data lines joined with '\n' (SSE); *has false when it has none. */
static void event_data(const char *ev, size_t len, buf *data, bool *has)
{
    *has = false;
    size_t pos = 0;
    while (pos < len) {
        const char *nl = memchr(ev + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - ev) : len;
        size_t line_end = end > pos && ev[end - 1] == '\r' ? end - 1 : end;
        const char *line = ev + pos;
        size_t n = line_end - pos;
        if (n >= 5 && !memcmp(line, "data:", 5)) {
            size_t skip = n > 5 && line[5] == ' ' ? 6 : 5;
            if (*has) buf_append(data, "\n", 1);
            buf_append(data, line + skip, n - skip);
            *has = true;
        }
        pos = end + 1;
    }
}

static int stream_candidate(gemini_stream *s, json_t *cand, size_t k, buf *out, char *why,
                            size_t whylen)
{
    json_t *ix = json_object_get(cand, "index");
    size_t index = json_is_integer(ix) ? (size_t)json_integer_value(ix) : k;
    if (json_is_integer(ix) && json_integer_value(ix) < 0) index = GEMINI_MAX_CHOICES;
    if (index >= GEMINI_MAX_CHOICES) {
        snprintf(why, whylen, "the Gemini stream has candidate index %zu (at most %d)", index,
                 GEMINI_MAX_CHOICES - 1);
        return -1;
    }
    if (s->finished[index]) {
        snprintf(why, whylen, "the Gemini stream continued candidate %zu after its finishReason",
                 index);
        return -1;
    }
    if (!s->started[index]) {
        emit_chunk(
            s, out,
            delta_choice(index, json_pack("{s:s,s:s}", "role", "assistant", "content", ""), NULL),
            NULL);
        s->started[index] = true;
    }
    size_t j;
    json_t *part;
    json_array_foreach(json_object_get(json_object_get(cand, "content"), "parts"), j, part)
    {
        json_t *t = json_object_get(part, "text");
        json_t *fc = json_object_get(part, "functionCall");
        if (json_is_string(t)) {
            if (!json_string_length(t)) continue;
            const char *key =
                json_is_true(json_object_get(part, "thought")) ? "reasoning_content" : "content";
            emit_chunk(s, out, delta_choice(index, json_pack("{s:O}", key, t), NULL), NULL);
        } else if (json_is_object(fc)) {
            json_t *tc = tool_call_of(fc, s->hash, index, s->n_calls[index]);
            if (!tc) {
                snprintf(why, whylen, "a Gemini stream functionCall has no name");
                return -1;
            }
            /* Gemini sends a call whole: one chunk with its id, name and all its arguments */
            json_object_set_new(tc, "index", json_integer((json_int_t)s->n_calls[index]++));
            s->had_calls[index] = true;
            emit_chunk(s, out, delta_choice(index, json_pack("{s:[o]}", "tool_calls", tc), NULL),
                       NULL);
        }
    }
    const char *fr = json_string_value(json_object_get(cand, "finishReason"));
    if (fr) {
        emit_chunk(s, out,
                   delta_choice(index, json_object(), finish_reason(fr, s->had_calls[index])),
                   NULL);
        s->finished[index] = true;
    }
    return 0;
}

static void stream_end(gemini_stream *s, buf *out)
{
    json_t *u = s->usage ? json_incref(s->usage)
                         : json_pack("{s:i,s:i,s:i}", "prompt_tokens", 0, "completion_tokens", 0,
                                     "total_tokens", 0);
    emit_chunk(s, out, NULL, u);
    json_decref(u);
    buf_puts(out, "data: [DONE]\n\n");
    s->done = true;
}

int gemini_stream_event(gemini_stream *s, const char *ev, size_t len, buf *out, char *why,
                        size_t whylen)
{
    assert(s);
    if (s->done || s->failed) return 0;
    buf data = BUF_INIT;
    bool has;
    event_data(ev, len, &data, &has);
    if (!has) { /* comments, keep-alives, other fields */
        buf_free(&data);
        return 0;
    }
    char jerr[160];
    json_t *doc = json_decode_fast(data.data, data.len, jerr, sizeof jerr);
    if (!doc || !json_is_object(doc)) {
        snprintf(why, whylen, "a Gemini stream event is not a JSON object%s%s", doc ? "" : ": ",
                 doc ? "" : jerr);
        json_decref(doc);
        buf_free(&data);
        return -1;
    }
    json_t *err = json_object_get(doc, "error");
    if (json_is_object(err)) {
        emit_error(s, out, err);
        json_decref(doc);
        buf_free(&data);
        return 0;
    }
    if (!s->id) {
        s->hash = fnv1a(data.data, data.len);
        char tmp[64];
        s->id = strdup(answer_id(doc, s->hash, tmp, sizeof tmp));
        if (!s->id) {
            snprintf(why, whylen, "out of memory");
            json_decref(doc);
            buf_free(&data);
            return -1;
        }
    }
    buf_free(&data);
    json_t *u = usage_of(json_object_get(doc, "usageMetadata"));
    if (u) {
        json_decref(s->usage);
        s->usage = u;
    }
    json_t *cands = json_object_get(doc, "candidates");
    int rc = 0;
    size_t k;
    json_t *cand;
    json_array_foreach(cands, k, cand)
    {
        if ((rc = stream_candidate(s, cand, k, out, why, whylen))) break;
    }
    if (!rc && !json_array_size(cands) &&
        json_object_get(json_object_get(doc, "promptFeedback"), "blockReason")) {
        /* the prompt was blocked: an empty answer that says so */
        if (!s->started[0])
            emit_chunk(
                s, out,
                delta_choice(0, json_pack("{s:s,s:n}", "role", "assistant", "content"), NULL),
                NULL);
        s->started[0] = true;
        emit_chunk(s, out, delta_choice(0, json_object(), "content_filter"), NULL);
        s->finished[0] = true;
    }
    if (!rc) {
        bool any = false, all = true;
        for (size_t i = 0; i < GEMINI_MAX_CHOICES; i++)
            if (s->started[i]) {
                any = true;
                all = all && s->finished[i];
            }
        if (any && all) stream_end(s, out);
    }
    json_decref(doc);
    return rc;
}

/* ---- errors ---- */

static void map_error_object(json_t *e, int status, provider_error *out)
{
    static const struct {
        const char *status;
        int http;
        const char *type, *code;
    } map[] = {
        {"INVALID_ARGUMENT", 400, "invalid_request_error", NULL},
        {"FAILED_PRECONDITION", 400, "invalid_request_error", NULL},
        {"OUT_OF_RANGE", 400, "invalid_request_error", NULL},
        {"UNAUTHENTICATED", 401, "invalid_request_error", "invalid_api_key"},
        {"PERMISSION_DENIED", 403, "invalid_request_error", "permission_denied"},
        {"NOT_FOUND", 404, "invalid_request_error", "model_not_found"},
        {"RESOURCE_EXHAUSTED", 429, "requests", "rate_limit_exceeded"},
        {"CANCELLED", 499, "invalid_request_error", NULL},
        {"INTERNAL", 500, "server_error", NULL},
        {"UNKNOWN", 500, "server_error", NULL},
        {"UNAVAILABLE", 503, "server_error", "upstream_overloaded"},
        {"DEADLINE_EXCEEDED", 504, "server_error", "upstream_timeout"},
    };
    const char *gs = json_string_value(json_object_get(e, "status"));
    json_t *code = json_object_get(e, "code");
    if (!status && json_is_integer(code)) status = (int)json_integer_value(code);
    *out = (provider_error){status, status >= 500 ? "server_error" : "invalid_request_error", NULL};
    if (status == 429) *out = (provider_error){429, "requests", "rate_limit_exceeded"};
    for (size_t k = 0; gs && k < sizeof map / sizeof map[0]; k++)
        if (!strcmp(gs, map[k].status))
            *out = (provider_error){map[k].http, map[k].type, map[k].code};
    /* a wrong key is 400 INVALID_ARGUMENT with reason API_KEY_INVALID: say it is the key */
    size_t i;
    json_t *d;
    json_array_foreach(json_object_get(e, "details"), i, d)
    {
        const char *reason = json_string_value(json_object_get(d, "reason"));
        if (reason && !strcmp(reason, "API_KEY_INVALID"))
            *out = (provider_error){401, "invalid_request_error", "invalid_api_key"};
    }
    if (out->status < 400 || out->status > 599) out->status = 502;
}

void gemini_map_error(int status, const char *body, size_t len, provider_error *out)
{
    json_t *doc = body && len ? json_decode_fast(body, len, NULL, 0) : NULL;
    map_error_object(json_object_get(doc, "error"), status, out);
    json_decref(doc);
}

/* ---- embeddings ---- */

int gemini_build_embeddings(const cfg_target *t, json_t *body, const char *request_id, arena *pool,
                            provider_request *out, char *err, size_t errlen)
{
    assert(t->type == TARGET_GEMINI && body);
    memset(out, 0, sizeof *out);
    const char *model = model_id_of(t, err, errlen);
    if (!model) return PROVIDER_EUNSUPPORTED;
    static const char *const keys[] = {"dimensions", "encoding_format", NULL};
    merge_parameters(t, body, keys);
    req_ctx c = {pool, out, err, errlen};
    json_t *input = json_object_get(body, "input");
    json_t *dims = json_object_get(body, "dimensions");
    const char *fmt = json_string_value(json_object_get(body, "encoding_format"));
    if (fmt && strcmp(fmt, "float") != 0)
        return refuse(&c, "encoding_format",
                      "encoding_format: Gemini targets answer with floats only (\"float\")");
    if (dims && !json_is_null(dims) && (!json_is_integer(dims) || json_integer_value(dims) < 1))
        return refuse(&c, "dimensions", "dimensions must be a positive integer");
    json_t *texts = json_is_string(input) ? json_pack("[O]", input) : json_incref(input);
    if (!json_is_array(texts) || !json_array_size(texts)) {
        json_decref(texts);
        return refuse(&c, "input", "input must be a string or a non-empty array of strings");
    }
    const char *mref = arena_printf(pool, "models/%s", model);
    json_t *reqs = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(texts, i, s)
    {
        if (!json_is_string(s)) {
            json_decref(reqs);
            json_decref(texts);
            return refuse(&c, arena_printf(pool, "input[%zu]", i),
                          "input[%zu] must be a string (Gemini targets take text, not token "
                          "arrays)",
                          i);
        }
        json_t *r = json_pack("{s:s,s:{s:[{s:O}]}}", "model", mref, "content", "parts", "text", s);
        if (json_is_integer(dims)) json_object_set(r, "outputDimensionality", dims);
        json_array_append_new(reqs, r);
    }
    json_decref(texts);
    json_t *req = json_pack("{s:o}", "requests", reqs);
    out->url = arena_printf(pool, "%s/models/%s:batchEmbedContents", api_base(t, pool), model);
    set_headers(t, request_id, out);
    out->body = json_encode_fast(req, &out->body_len);
    json_decref(req);
    if (!out->body) {
        snprintf(err, errlen, "could not encode the request body for target '%s'", t->name);
        return PROVIDER_EUNSUPPORTED;
    }
    return 0;
}

char *gemini_embeddings_answer(const char *body, size_t len, const char *model, size_t *out_len,
                               char *why, size_t whylen)
{
    json_t *doc = decode_answer(body, len, why, whylen);
    if (!doc) return NULL;
    json_t *embs = json_object_get(doc, "embeddings");
    if (!json_is_array(embs)) {
        snprintf(why, whylen, "the Gemini answer has no embeddings array");
        json_decref(doc);
        return NULL;
    }
    json_t *data = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(embs, i, e)
    {
        json_t *values = json_object_get(e, "values");
        size_t j;
        json_t *v;
        bool ok = json_is_array(values);
        json_array_foreach(values, j, v) ok = ok && is_num(v);
        if (!ok) {
            snprintf(why, whylen, "embeddings[%zu].values is not an array of numbers", i);
            json_decref(data);
            json_decref(doc);
            return NULL;
        }
        json_array_append_new(data, json_pack("{s:s,s:I,s:O}", "object", "embedding", "index",
                                              (json_int_t)i, "embedding", values));
    }
    /* batchEmbedContents reports no token counts: usage says 0 rather than a guess */
    json_t *out = json_pack("{s:s,s:o,s:s,s:{s:i,s:i}}", "object", "list", "data", data, "model",
                            model ? model : "", "usage", "prompt_tokens", 0, "total_tokens", 0);
    json_decref(doc);
    return encode_or_why(out, out_len, why, whylen);
}
