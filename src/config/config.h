/* config.h — the typed, immutable configuration snapshot a gateway serves from.
 *
 * Built off the event loops from validated manifests (see schema.h / load.h), with defaults
 * applied and Secret references resolved, then published with one atomic swap. Every string
 * and array lives in the snapshot's arena; a snapshot is reference-counted and freed when the
 * last request holding it finishes. Fields the gateway does not enforce yet are validated by
 * the schema but have no typed field here; `spec` keeps the whole validated document. */
#ifndef CTXGATE_CONFIG_CONFIG_H
#define CTXGATE_CONFIG_CONFIG_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"

typedef enum {
    TARGET_OPENAI,
    TARGET_AZURE_OPENAI,
    TARGET_ANTHROPIC,
    TARGET_GEMINI,
    TARGET_HUGGINGFACE,
    TARGET_OPENAI_COMPATIBLE,
    TARGET_CUSTOM_LOCAL,
    TARGET_MOCK,
} cfg_target_type;

/* The manifest's name of a target type ("OpenAI", "HuggingFaceEndpoint", ...). */
const char *cfg_target_type_name(cfg_target_type type);

typedef struct cfg_mock {
    const char *text; /* canned answer; NULL = echo the last user message */
    int latency_ms;   /* delay before the first byte */
    int chunks;       /* stream the answer in this many chunks (>= 1) */
} cfg_mock;

typedef struct cfg_target {
    const char *name;     /* logical model name clients send */
    const char **aliases; /* further names clients may send */
    size_t n_aliases;
    cfg_target_type type;
    const char *endpoint;      /* base URL, no trailing '/'; type default: OpenAI
                                * https://api.openai.com/v1; Anthropic https://api.anthropic.com;
                                * Gemini https://generativelanguage.googleapis.com; AzureOpenAI,
                                * HuggingFaceEndpoint, OpenAICompatible, CustomLocalModel: required
                                * (never NULL); Mock: NULL */
    const char *model_name;    /* provider's model id; defaults to name */
    const char *api_key;       /* resolved Secret value, NULL when none */
    const char *api_version;   /* AzureOpenAI api-version / Anthropic version header */
    const char *deployment;    /* AzureOpenAI */
    json_t *parameters;        /* object merged under the request; NULL when none (borrowed) */
    int connect_timeout_s;     /* default 5 */
    int first_token_timeout_s; /* default 30 */
    int total_timeout_s;       /* default 300 */
    size_t max_response_bytes; /* config.maxResponseBytes; default 16 MiB */
    bool has_pricing;
    double input_per_million;   /* USD */
    double output_per_million;  /* USD */
    int health_interval_s;      /* 0 = no active health check */
    int health_unhealthy_after; /* default 3 */
    int health_base_ejection_s; /* healthCheck.baseEjectionSeconds, default 10 */
    int health_max_ejection_s;  /* healthCheck.maxEjectionSeconds, default 300 */
    long max_concurrency;       /* 0 = no limit */
    cfg_mock mock;              /* type Mock only */
    /* config.tls (https:// endpoints only; check.c refuses it on http://) */
    const char *tls_ca_pem;      /* caSecretRef's PEM CAs, trusted instead of the system bundle;
                                  * NULL = the system bundle */
    const char *tls_cert_pem;    /* clientCertSecretRef tls.crt (mTLS); NULL = no client cert */
    const char *tls_key_pem;     /* its tls.key */
    const char *tls_server_name; /* SNI, verified name and Host; NULL = the endpoint's host */
    bool tls_insecure;           /* insecureSkipVerify: the certificate is not verified */
    size_t index;                /* position in cfg_gateway.targets (for per-target state) */
} cfg_target;

typedef enum {
    STRATEGY_ROUND_ROBIN,
    STRATEGY_WEIGHTED,
    STRATEGY_HEADER_BASED,
    STRATEGY_LEAST_CONNECTIONS,
    STRATEGY_LATENCY_BASED,
    STRATEGY_COST_BASED,
} cfg_strategy;

typedef struct cfg_backend {
    cfg_target *target;
    int weight; /* default 1; 0 = never chosen by Weighted */
} cfg_backend;

typedef struct cfg_header_match {
    const char *name; /* lower-cased */
    const char *value;
} cfg_header_match;

typedef struct cfg_header_value {
    const char *value;  /* header value */
    cfg_target *target; /* chosen when the header carries value */
} cfg_header_value;

/* retry_on bits: one per HTTP status class we retry, plus transport failures */
enum {
    RETRY_ON_429 = 1u << 0,
    RETRY_ON_500 = 1u << 1,
    RETRY_ON_502 = 1u << 2,
    RETRY_ON_503 = 1u << 3,
    RETRY_ON_504 = 1u << 4,
    RETRY_ON_CONNECT_FAILURE = 1u << 5,
    RETRY_ON_TIMEOUT = 1u << 6,
};

typedef struct cfg_route {
    const char *name;
    const char *path_prefix; /* default "/v1", no trailing '/' */
    size_t path_prefix_len;
    const char **match_models; /* empty = any model */
    size_t n_match_models;
    cfg_header_match *match_headers; /* all must match */
    size_t n_match_headers;
    cfg_backend *backends;
    size_t n_backends;
    int total_weight;
    cfg_strategy strategy;
    const char *header_name; /* HeaderBased: lower-cased header */
    cfg_header_value *header_values;
    size_t n_header_values;
    cfg_target **failover_targets; /* tried in order after the chosen backend fails */
    size_t n_failover_targets;
    unsigned retry_on;        /* RETRY_ON_* bits; default 429,500,502,503,504,connect,timeout */
    int max_attempts;         /* default 1 + n_failover_targets, at least 1 */
    int backoff_ms;           /* default 100 */
    const char *context_ref;  /* ModelContextProtocol name, NULL when none */
    struct cfg_mcp *context;  /* resolved */
    const char *template_ref; /* transformation.requestTemplates entry, NULL when none */
    size_t index;
} cfg_route;

typedef enum {
    AUTH_NONE = 0,
    AUTH_APIKEY = 1u << 0,
    AUTH_JWT = 1u << 1,
    AUTH_OAUTH2 = 1u << 2
} cfg_auth_type;

typedef struct cfg_api_key {
    const char *name;
    unsigned char sha256[32]; /* the key itself is never kept */
    const char *user, *app, *tenant;
    const char **models; /* target names this key may use; empty = all */
    size_t n_models;
} cfg_api_key;

typedef struct cfg_listener {
    int port;             /* default 8080 */
    long max_connections; /* spec.listener.maxConnections, per process; default 10000 */
    const char *tls_cert; /* PEM from the tlsSecretRef Secret's tls.crt; NULL = plain HTTP */
    const char *tls_key;  /* PEM tls.key */
} cfg_listener;

/* spec.admin: the admin listener (/metrics and the admin API); port 0 = not set */
typedef struct cfg_admin {
    int port;
    const char *address;      /* default 127.0.0.1 */
    bool has_api_key;         /* apiKeyRef set: the admin API needs it */
    unsigned char sha256[32]; /* its SHA-256; the key itself is never kept */
} cfg_admin;

typedef struct cfg_observability {
    const char *logging_level; /* debug | info | warn | error; default info */
    bool access_log;           /* accessLog present (default on) */
    bool access_log_json;      /* format JSON (default) or Text */
    bool access_log_bodies;
    const char *metrics_path; /* default /metrics */
} cfg_observability;

typedef struct cfg_gateway {
    const char *name, *namespace_;
    const char *source; /* "file.yaml:LINE" of the document, for messages */
    cfg_listener listener;
    cfg_admin admin;
    cfg_target *targets;
    size_t n_targets;
    cfg_route *routes; /* no routes in the spec: one route "default" at /v1 over every target */
    size_t n_routes;
    unsigned auth_types; /* cfg_auth_type bits; 0 = None */
    cfg_api_key *api_keys;
    size_t n_api_keys;
    cfg_observability obs;
    size_t max_body_bytes; /* transformation.inputValidation.maxBodyBytes; default 1 MiB */
    json_t *spec;          /* the validated spec with defaults (borrowed from the snapshot) */
} cfg_gateway;

typedef enum { STORE_MEMORY, STORE_FILE, STORE_REDIS, STORE_POSTGRESQL } cfg_store_type;
typedef enum { EVICT_LRU, EVICT_FIFO, EVICT_LIFO } cfg_eviction;
typedef enum { CTX_LAST_N, CTX_TOKEN_BUDGET, CTX_SUMMARIZE } cfg_ctx_strategy;

typedef struct cfg_mcp {
    const char *name, *namespace_;
    const char *source;
    cfg_store_type store;
    const char *path;       /* File */
    const char *url;        /* Redis */
    const char *dsn;        /* PostgreSQL */
    const char *password;   /* resolved passwordRef */
    const char *key_prefix; /* default "ctx:" (Redis key prefix / PostgreSQL table prefix) */
    bool encrypt;
    unsigned char enc_key[32]; /* valid when encrypt */
    int ttl_seconds;           /* 0 = no expiry; default 3600 */
    long max_entries;          /* default 100000 */
    int max_turns;             /* default 500 */
    cfg_eviction eviction;     /* default LRU */
    cfg_ctx_strategy strategy; /* default LastN */
    int last_n;                /* default 20 */
    int max_context_tokens;    /* default 6000 */
    const char *summarize_target;
    const char *summarize_gateway;
    int summarize_trigger_tokens;
    const char *persona;
    json_t *tools;                    /* array or NULL (borrowed) */
    bool format_json;                 /* JSON (default) or Text */
    int schema_version;               /* default 1 */
    bool read_only;                   /* ReadOnlyMany */
    bool has_api_key;                 /* security.apiKeyRef set: the context API needs it */
    unsigned char api_key_sha256[32]; /* its SHA-256; the key itself is never kept */
    json_t *rbac;                     /* array or NULL (borrowed) */
    bool metrics_enabled;     /* metrics.enabled (default true): export this store's metrics */
    const char *metrics_path; /* metrics.endpoint (default /metrics): served as well */
    json_t *spec;
} cfg_mcp;

/* One loaded set of manifests. Gateways and MCPs are in document order. */
typedef struct cfg_snapshot {
    _Atomic long refs;
    arena *pool;  /* owns every string and array above */
    json_t *docs; /* array of the validated documents; owns the json_t the structs borrow */
    cfg_gateway *gateways;
    size_t n_gateways;
    cfg_mcp *mcps;
    size_t n_mcps;
    uint64_t generation; /* increases with every successful load in this process */
} cfg_snapshot;

void cfg_snapshot_ref(cfg_snapshot *s);
void cfg_snapshot_unref(cfg_snapshot *s); /* frees at zero; NULL ok */
const cfg_gateway *cfg_find_gateway(const cfg_snapshot *s, const char *name); /* NULL = first */
const cfg_mcp *cfg_find_mcp(const cfg_snapshot *s, const char *name);
const cfg_target *cfg_gateway_find_target(const cfg_gateway *g, const char *model, size_t n);

#endif
