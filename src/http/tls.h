/* tls.h — TLS for the HTTP listener (internal to src/http/): an SSL_CTX per server built from PEM
 * text, and per-connection sessions that run OpenSSL over memory BIOs so the handshake and record
 * layer ride on the worker's libuv loop with no extra threads or blocking sockets. */
#ifndef CTXGATE_HTTP_TLS_H
#define CTXGATE_HTTP_TLS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/ssl.h>

typedef struct http_tls_session http_tls_session;

/* TLS 1.2+, ALPN "http/1.1", certificate chain and key from PEM text. 0 or -1 with a sentence
 * in err. */
int http_tls_ctx_new(const char *cert_pem, const char *key_pem, SSL_CTX **out, char *err,
                     size_t errlen);
void http_tls_ctx_free(SSL_CTX *ctx);

http_tls_session *http_tls_session_new(SSL_CTX *ctx); /* NULL on out-of-memory */
void http_tls_session_free(http_tls_session *t);      /* NULL ok */

/* Hands ciphertext from the socket to OpenSSL and advances the handshake. Returns 0, or -1 when
 * the handshake failed (reason in err). Output it produced is collected with http_tls_output. */
int http_tls_feed(http_tls_session *t, const char *data, size_t len, char *err, size_t errlen);
bool http_tls_ready(const http_tls_session *t); /* handshake complete */
/* Decrypted application bytes: > 0 bytes read, 0 needs more ciphertext, -1 peer sent
 * close_notify or the record layer failed. */
int http_tls_read(http_tls_session *t, char *out, size_t cap);
/* Encrypts application bytes (all of them: memory BIOs never block). false on a TLS error. */
bool http_tls_write(http_tls_session *t, const void *data, size_t len);
/* Moves up to cap bytes of pending ciphertext to out; returns how many (0 when none). */
size_t http_tls_output(http_tls_session *t, char *out, size_t cap);
void http_tls_shutdown(http_tls_session *t); /* queues close_notify when the handshake is done */

#endif
