/* auth.h — caller authentication (issue 2: None and APIKey). */
#ifndef CTXGATE_PIPELINE_AUTH_H
#define CTXGATE_PIPELINE_AUTH_H

#include <stdbool.h>

#include "config/config.h"
#include "http/server.h"

/* AUTH_AMBIGUOUS: a credentials header (Authorization, x-api-key, api-key) sent more than once:
 * a proxy in front may have checked the other copy, so neither is taken (400). */
typedef enum { AUTH_OK, AUTH_MISSING, AUTH_INVALID, AUTH_AMBIGUOUS } auth_result;

/* The key the caller presents: `Authorization: Bearer K` (OpenAI SDK), `x-api-key: K` (Anthropic
 * SDK) or `api-key: K` (Azure SDK), in that order; STR_NULL when none. */
str auth_presented_key(const http_request *r);

/* The credentials header sent more than once ("authorization", "x-api-key", "api-key"), or NULL
 * when each is sent at most once. */
const char *auth_duplicated_header(const http_request *r);

/* SHA-256 of a presented key (the form every configured key is kept in); false on an OpenSSL
 * failure. The digest algorithm is fetched once per process, not per request. */
bool auth_key_digest(str key, unsigned char out[32]);

/* Finds the caller's key in `Authorization: Bearer`, `x-api-key` or `api-key`. On AUTH_OK,
 * *key is the matching key (NULL when the gateway's authentication is None). */
auth_result auth_check(const cfg_gateway *gw, const http_request *r, const cfg_api_key **key);

#endif
