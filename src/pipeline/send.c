/* send.c — one chat request to a model target: its adapter builds it (from the canonical
 * document, or from the client's own bytes when they may go as they are) and the upstream client
 * sends it. The upstream stage uses it for every attempt and the Summarize strategy for its
 * background requests, so every provider, Mock included, is reached one way. */
#include <stdio.h>
#include <stdlib.h>

#include "pipeline/call.h"

int pl_send_chat(upstream_client *up, const pl_send *s, pl_sent *out, char *err, size_t errlen)
{
    provider_request pr = {0};
    int rc;
    *out = (pl_sent){0};
    if (s->embeddings) {
        json_t *body = json_copy(s->doc);
        if (!body) abort();
        rc = provider_build_embeddings(s->target, body, s->request_id, s->pool, &pr, err, errlen);
        json_decref(body);
    } else if (s->raw && s->count_tokens) {
        rc = provider_build_count_tokens(s->target, s->raw->body, s->raw->len, s->request_id,
                                         s->pool, &pr, err, errlen);
    } else if (s->raw && s->native) {
        rc = provider_build_messages_raw(s->target, s->raw, s->request_id, s->pool, &pr, err,
                                         errlen);
        if (rc == 0 && !pr.body) pr.body_len = s->raw->len;
    } else if (s->raw) {
        rc = provider_build_chat_raw(s->target, s->raw, s->request_id, s->pool, &pr, err, errlen);
        if (rc == 0 && !pr.body) pr.body_len = s->raw->len;
    } else {
        /* each send encodes a shallow copy: the adapter edits what it is given */
        json_t *body = json_copy(s->doc);
        if (!body) abort();
        rc = provider_build_chat(s->target, body, s->request_id, s->pool, &pr, err, errlen);
        json_decref(body);
    }
    out->err_param = pr.err_param;
    if (rc != 0) {
        free(pr.body);
        return rc;
    }
    if (s->beta && pr.n_headers < PROVIDER_MAX_HEADERS) /* the caller's opt-in to beta features */
        pr.headers[pr.n_headers++] = (upstream_header){"anthropic-beta", s->beta};
    out->body = pr.body;
    out->usage_added = pr.stream_usage_added;
    /* the adapter's body, the client's bytes, or none (a Mock answer is made already) */
    const char *body = pr.body ? pr.body : s->raw ? s->raw->body : "";
    upstream_opts o = provider_upstream_opts(s->target, &pr, body, pr.body_len);
    o.udata = s->udata;
    o.on_headers = s->on_headers;
    o.on_data = s->on_data;
    o.on_done = s->on_done;
    out->req = upstream_send(up, &o);
    if (!out->req) {
        free(out->body);
        out->body = NULL;
        snprintf(err, errlen, "could not start a request to model target '%s'", s->target->name);
        return PL_SEND_FAILED;
    }
    return 0;
}
