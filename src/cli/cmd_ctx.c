/* cmd_ctx.c — `ctxgate ctx list|show|export|delete`: a client of a running gateway's context
 * REST API (/v1/contexts, docs/context-api.md) over libcurl's blocking easy interface. list and
 * export follow nextCursor to the last page. Exit 0 ok, 1 when the server (or the connection)
 * refused, 2 on usage errors. */
#include <curl/curl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "core/buf.h"

#define CTX_CLI_DEFAULT_URL "http://127.0.0.1:8080"

typedef struct ctx_cli {
    const char *url, *mcp, *key, *tenant, *limit;
    CURL *curl;
} ctx_cli;

static void ctx_usage(FILE *f)
{
    fputs("usage: ctxgate ctx list|show ID|export|delete ID [options]\n"
          "\n"
          "Manages the stored conversations of a running gateway through its context API.\n"
          "  list        table of conversations (id, turns, last update), every page\n"
          "  show ID     one conversation's full record as pretty JSON\n"
          "  export      every conversation's full record as JSON Lines (one per line)\n"
          "  delete ID   deletes one conversation\n"
          "\n"
          "options:\n"
          "  --url URL      the gateway (default $CTXGATE_URL, else " CTX_CLI_DEFAULT_URL ")\n"
          "  --mcp NAME     the ModelContextProtocol (needed when the gateway has several)\n"
          "  --key KEY      API key (default $CTXGATE_API_KEY): security.apiKeyRef's key, or a\n"
          "                 gateway key when the ModelContextProtocol has none\n"
          "  --tenant T     the tenant whose conversations to manage (admin key only)\n"
          "  --limit N      page size for list/export, 1..1000 (default 100)\n"
          "\n"
          "Exit status: 0 ok, 1 the gateway refused or could not be reached, 2 usage error.\n",
          f);
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    buf_append(ud, p, size * n);
    return size * n;
}

/* "?mcp=..&tenant=..&limit=..&cursor=.." with what is set, each value escaped. */
static void add_param(ctx_cli *cli, buf *u, bool *first, const char *name, const char *value)
{
    if (!value) return;
    char *esc = curl_easy_escape(cli->curl, value, 0);
    buf_printf(u, "%c%s=%s", *first ? '?' : '&', name, esc ? esc : "");
    curl_free(esc);
    *first = false;
}

static char *build_url(ctx_cli *cli, const char *id, const char *suffix, bool paged,
                       const char *cursor)
{
    buf u = BUF_INIT;
    size_t n = strlen(cli->url);
    while (n && cli->url[n - 1] == '/')
        n--;
    buf_append(&u, cli->url, n);
    buf_puts(&u, "/v1/contexts");
    if (id) {
        char *esc = curl_easy_escape(cli->curl, id, 0);
        buf_printf(&u, "/%s", esc ? esc : "");
        curl_free(esc);
    }
    if (suffix) buf_puts(&u, suffix);
    bool first = true;
    add_param(cli, &u, &first, "mcp", cli->mcp);
    add_param(cli, &u, &first, "tenant", cli->tenant);
    if (paged) {
        add_param(cli, &u, &first, "limit", cli->limit);
        add_param(cli, &u, &first, "cursor", cursor);
    }
    return buf_steal(&u);
}

/* One request. Returns the HTTP status (0 when the gateway could not be reached, with the
 * reason printed); *doc is the parsed body (NULL when empty or not JSON). */
static long request(ctx_cli *cli, const char *method, const char *url, json_t **doc)
{
    *doc = NULL;
    buf body = BUF_INIT;
    struct curl_slist *hdrs = NULL;
    if (cli->key && *cli->key) {
        buf h = BUF_INIT;
        buf_printf(&h, "Authorization: Bearer %s", cli->key);
        buf_append(&h, "", 1);
        hdrs = curl_slist_append(hdrs, h.data);
        buf_free(&h);
    }
    hdrs = curl_slist_append(hdrs, "Accept: application/json");
    CURL *c = cli->curl;
    curl_easy_reset(c);
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    char errbuf[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, errbuf);
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    long status = 0;
    if (rc != CURLE_OK) {
        fprintf(stderr, "ctxgate ctx: cannot reach %s: %s\n", cli->url,
                errbuf[0] ? errbuf : curl_easy_strerror(rc));
        buf_free(&body);
        return 0;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (body.len) *doc = json_loadb(body.data, body.len, 0, NULL);
    if (status >= 300) {
        const char *msg =
            json_string_value(json_object_get(json_object_get(*doc, "error"), "message"));
        if (msg)
            fprintf(stderr, "ctxgate ctx: %s (HTTP %ld)\n", msg, status);
        else
            fprintf(stderr, "ctxgate ctx: the gateway answered HTTP %ld: %.*s\n", status,
                    (int)(body.len > 300 ? 300 : body.len), body.data ? body.data : "");
    }
    buf_free(&body);
    return status;
}

static int cmd_show(ctx_cli *cli, const char *id)
{
    char *url = build_url(cli, id, NULL, false, NULL);
    json_t *doc;
    long st = request(cli, "GET", url, &doc);
    free(url);
    if (st != 200 || !doc) {
        if (st == 200) fprintf(stderr, "ctxgate ctx: the gateway's answer is not JSON\n");
        json_decref(doc);
        return 1;
    }
    char *text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    printf("%s\n", text);
    free(text);
    json_decref(doc);
    return 0;
}

static int cmd_delete(ctx_cli *cli, const char *id)
{
    char *url = build_url(cli, id, NULL, false, NULL);
    json_t *doc;
    long st = request(cli, "DELETE", url, &doc);
    free(url);
    json_decref(doc);
    if (st < 200 || st >= 300) return 1;
    printf("deleted conversation '%s'\n", id);
    return 0;
}

/* Walks every page; each(cli, item, ud) for every listed conversation (non-zero stops). */
static int walk_pages(ctx_cli *cli, int (*each)(ctx_cli *, json_t *, void *), void *ud)
{
    char *cursor = NULL;
    for (;;) {
        char *url = build_url(cli, NULL, NULL, true, cursor);
        json_t *doc;
        long st = request(cli, "GET", url, &doc);
        free(url);
        free(cursor);
        cursor = NULL;
        json_t *data = json_object_get(doc, "data");
        if (st != 200 || !json_is_array(data)) {
            if (st == 200)
                fprintf(stderr, "ctxgate ctx: the gateway's answer has no 'data' list\n");
            json_decref(doc);
            return 1;
        }
        size_t i;
        json_t *item;
        json_array_foreach(data, i, item)
        {
            int rc = each(cli, item, ud);
            if (rc) {
                json_decref(doc);
                return rc;
            }
        }
        const char *next = json_string_value(json_object_get(doc, "nextCursor"));
        cursor = next ? strdup(next) : NULL;
        json_decref(doc);
        if (!cursor) return 0;
    }
}

static int collect_item(ctx_cli *cli, json_t *item, void *ud)
{
    json_array_append(ud, item);
    return 0;
}

static int cmd_list(ctx_cli *cli)
{
    json_t *all = json_array();
    int rc = walk_pages(cli, collect_item, all);
    if (rc) {
        json_decref(all);
        return rc;
    }
    int w = 2;
    size_t i;
    json_t *it;
    json_array_foreach(all, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "id"));
        int n = id ? (int)strlen(id) : 0;
        if (n > w) w = n;
    }
    printf("%-*s  %6s  %s\n", w, "ID", "TURNS", "UPDATED");
    json_array_foreach(all, i, it)
    {
        const char *id = json_string_value(json_object_get(it, "id"));
        const char *updated = json_string_value(json_object_get(it, "updatedAt"));
        printf("%-*s  %6lld  %s\n", w, id ? id : "",
               (long long)json_integer_value(json_object_get(it, "turns")), updated ? updated : "");
    }
    json_decref(all);
    return 0;
}

/* export: the full record of every listed conversation, one JSON document per line. One that
 * disappeared between the listing and the read (deleted, expired) is skipped with a note. */
static int export_item(ctx_cli *cli, json_t *item, void *ud)
{
    const char *id = json_string_value(json_object_get(item, "id"));
    if (!id) return 0;
    char *url = build_url(cli, id, NULL, false, NULL);
    json_t *doc;
    long st = request(cli, "GET", url, &doc);
    free(url);
    if (st == 404) {
        fprintf(stderr, "ctxgate ctx: conversation '%s' is gone since it was listed; skipped\n",
                id);
        json_decref(doc);
        return 0;
    }
    if (st != 200 || !doc) {
        json_decref(doc);
        return 1;
    }
    char *line = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    printf("%s\n", line);
    free(line);
    json_decref(doc);
    return 0;
}

static int cmd_export(ctx_cli *cli)
{
    int rc = walk_pages(cli, export_item, NULL);
    fflush(stdout);
    return rc;
}

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...)
{
    fputs("ctxgate ctx: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    ctx_usage(stderr);
    return 2;
}

int cmd_ctx(int argc, char **argv)
{
    ctx_cli cli = {.url = getenv("CTXGATE_URL"), .key = getenv("CTXGATE_API_KEY")};
    if (!cli.url || !*cli.url) cli.url = CTX_CLI_DEFAULT_URL;
    const char *pos[3];
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            ctx_usage(stdout);
            return 0;
        }
        static const char *const opts[] = {"--url", "--mcp", "--key", "--tenant", "--limit"};
        const char **slots[] = {&cli.url, &cli.mcp, &cli.key, &cli.tenant, &cli.limit};
        bool matched = false;
        for (size_t k = 0; k < sizeof opts / sizeof opts[0] && !matched; k++) {
            size_t n = strlen(opts[k]);
            if (strncmp(a, opts[k], n) != 0) continue;
            if (a[n] == '=') {
                *slots[k] = a + n + 1;
                matched = true;
            } else if (a[n] == 0) {
                if (i + 1 >= argc) return usage_error("option %s needs a value", opts[k]);
                *slots[k] = argv[++i];
                matched = true;
            }
        }
        if (matched) continue;
        if (a[0] == '-' && a[1]) return usage_error("unknown option '%s'", a);
        if (n_pos == 3) return usage_error("unexpected argument '%s'", a);
        pos[n_pos++] = a;
    }
    if (n_pos == 0) return usage_error("%s", "missing subcommand (list, show, export or delete)");
    const char *sub = pos[0];
    bool takes_id = !strcmp(sub, "show") || !strcmp(sub, "delete");
    if (!takes_id && strcmp(sub, "list") != 0 && strcmp(sub, "export") != 0)
        return usage_error("unknown subcommand '%s'", sub);
    if (takes_id && n_pos != 2) return usage_error("'%s' needs exactly one conversation ID", sub);
    if (!takes_id && n_pos != 1) return usage_error("'%s' takes no arguments", sub);
    if (takes_id && !*pos[1]) return usage_error("%s", "the conversation ID must not be empty");
    if (cli.limit) {
        char *end = NULL;
        long v = strtol(cli.limit, &end, 10);
        if (!*cli.limit || *end || v < 1 || v > 1000)
            return usage_error("--limit must be an integer from 1 to 1000, not '%s'", cli.limit);
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(stderr, "ctxgate ctx: cannot initialise libcurl\n");
        return 1;
    }
    cli.curl = curl_easy_init();
    if (!cli.curl) {
        fprintf(stderr, "ctxgate ctx: cannot initialise libcurl\n");
        curl_global_cleanup();
        return 1;
    }
    int rc;
    if (!strcmp(sub, "list"))
        rc = cmd_list(&cli);
    else if (!strcmp(sub, "export"))
        rc = cmd_export(&cli);
    else if (!strcmp(sub, "show"))
        rc = cmd_show(&cli, pos[1]);
    else
        rc = cmd_delete(&cli, pos[1]);
    curl_easy_cleanup(cli.curl);
    curl_global_cleanup();
    return rc;
}
