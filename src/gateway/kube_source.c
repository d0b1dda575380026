/* kube_source.c — the LLMGateway, its MCPs and Secrets from the Kubernetes API (kube_source.h).
 * Everything runs on the main loop; informer callbacks only arm the debounce timer, so the
 * informer set changes (start / stop) outside the informers' own callbacks. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/refs.h"
#include "core/log.h"
#include "gateway/kube_source.h"
#include "kube/kube.h"

enum { KS_DEBOUNCE_MS = 100 };

typedef struct ks_watch {
    cfg_ref_kind kind;
    char *name;
    kube_informer *inf;
    bool wanted; /* scratch for follow_refs */
} ks_watch;

struct kube_source {
    void (*on_change)(kube_source *ks, void *udata);
    void *udata;
    char *gateway, *ns, *origin;
    kube_client *kc;
    kube_informer *gw_inf;
    ks_watch *w;
    size_t n, cap;
    uv_timer_t *debounce;
    char *fingerprint; /* the objects of the last load, to skip a rebuild of the same input */
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

static void on_debounce(uv_timer_t *t);

static void schedule(kube_source *ks)
{
    /* the window opens with the first event of a burst: a steady stream cannot starve it */
    if (!uv_is_active((uv_handle_t *)ks->debounce))
        uv_timer_start(ks->debounce, on_debounce, KS_DEBOUNCE_MS, 0);
}

static void on_event(kube_informer *inf, kube_event_type type, json_t *obj, void *udata)
{
    (void)inf;
    kube_source *ks = udata;
    if (log_get_level() <= LOG_DEBUG) {
        json_t *md = json_object_get(obj, "metadata");
        log_debug("kube: %s %s %s (resourceVersion %s)",
                  type == KUBE_ADDED      ? "added"
                  : type == KUBE_MODIFIED ? "modified"
                                          : "deleted",
                  json_string_value(json_object_get(obj, "kind")),
                  json_string_value(json_object_get(md, "name")),
                  json_string_value(json_object_get(md, "resourceVersion")));
    }
    schedule(ks);
}

static void on_synced(kube_informer *inf, void *udata)
{
    (void)inf;
    schedule(udata);
}

static kube_informer *start_informer(kube_source *ks, const kube_gvr *gvr, const char *name)
{
    size_t n = strlen(name) + sizeof "metadata.name=";
    char *fs = malloc(n);
    if (!fs) abort();
    snprintf(fs, n, "metadata.name=%s", name);
    kube_informer_opts io = {.gvr = gvr,
                             .ns = ks->ns,
                             .field_selector = fs,
                             .on_event = on_event,
                             .on_synced = on_synced,
                             .udata = ks};
    kube_informer *inf = kube_informer_start(ks->kc, &io);
    free(fs);
    return inf;
}

static ks_watch *find_watch(kube_source *ks, cfg_ref_kind kind, const char *name)
{
    for (size_t i = 0; i < ks->n; i++)
        if (ks->w[i].kind == kind && strcmp(ks->w[i].name, name) == 0) return &ks->w[i];
    return NULL;
}

static json_t *cached(kube_source *ks, const ks_watch *w)
{
    return w && w->inf ? kube_informer_get(w->inf, ks->ns, w->name) : NULL;
}

/* The references of gw, then those of the referenced MCPs already cached (their paths then say
 * which MCP: "spec.storage.config.passwordRef of ModelContextProtocol ns/name"). */
static void collect_refs(kube_source *ks, const json_t *gw, cfg_refs *refs)
{
    cfg_refs_collect(gw, refs);
    size_t n_gw = refs->n;
    for (size_t i = 0; i < n_gw; i++) {
        if (refs->v[i].kind != CFG_REF_MCP) continue;
        if (cfg_refs_find(refs, CFG_REF_MCP, refs->v[i].name) != &refs->v[i]) continue;
        json_t *mcp = cached(ks, find_watch(ks, CFG_REF_MCP, refs->v[i].name));
        if (!mcp) continue;
        size_t from = refs->n;
        cfg_refs_collect(mcp, refs);
        for (size_t j = from; j < refs->n; j++) {
            size_t len = strlen(refs->v[j].path) + strlen(ks->ns) + strlen(refs->v[i].name) +
                         sizeof " of ModelContextProtocol /";
            char *p = malloc(len);
            if (!p) abort();
            snprintf(p, len, "%s of ModelContextProtocol %s/%s", refs->v[j].path, ks->ns,
                     refs->v[i].name);
            free(refs->v[j].path);
            refs->v[j].path = p;
        }
    }
}

/* Makes the informer set match the references of the cached gateway: new names get an informer,
 * names no longer referenced lose theirs. Without a gateway the set stays as it is. */
static void follow_refs(kube_source *ks)
{
    json_t *gw = kube_informer_get(ks->gw_inf, ks->ns, ks->gateway);
    if (!gw) return;
    cfg_refs refs = {0};
    collect_refs(ks, gw, &refs);
    for (size_t i = 0; i < ks->n; i++)
        ks->w[i].wanted = false;
    for (size_t i = 0; i < refs.n; i++) {
        ks_watch *w = find_watch(ks, refs.v[i].kind, refs.v[i].name);
        if (w) {
            w->wanted = true;
            continue;
        }
        if (ks->n == ks->cap) {
            ks->cap = ks->cap ? ks->cap * 2 : 8;
            ks->w = realloc(ks->w, ks->cap * sizeof *ks->w);
            if (!ks->w) abort();
        }
        w = &ks->w[ks->n++];
        w->kind = refs.v[i].kind;
        w->name = xstrdup(refs.v[i].name);
        w->wanted = true;
        w->inf = start_informer(ks, w->kind == CFG_REF_MCP ? &KUBE_MCPS : &KUBE_SECRETS, w->name);
        log_info("kube: watching %s %s/%s (%s)", cfg_ref_kind_name(w->kind), ks->ns, w->name,
                 refs.v[i].path);
    }
    size_t keep = 0;
    for (size_t i = 0; i < ks->n; i++) {
        if (ks->w[i].wanted) {
            ks->w[keep++] = ks->w[i];
            continue;
        }
        log_info("kube: no longer watching %s %s/%s (not referenced any more)",
                 cfg_ref_kind_name(ks->w[i].kind), ks->ns, ks->w[i].name);
        if (ks->w[i].inf) kube_informer_stop(ks->w[i].inf);
        free(ks->w[i].name);
    }
    ks->n = keep;
    cfg_refs_free(&refs);
}

static void on_debounce(uv_timer_t *t)
{
    kube_source *ks = t->data;
    follow_refs(ks);
    ks->on_change(ks, ks->udata);
}

kube_source *kube_source_start(const kube_source_opts *o, char *err, size_t errlen)
{
    kube_config cfg = {0};
    if (kube_config_load(o->kubeconfig, NULL, &cfg, err, errlen) != 0) return NULL;
    kube_source *ks = calloc(1, sizeof *ks);
    if (!ks) abort();
    ks->on_change = o->on_change;
    ks->udata = o->udata;
    ks->gateway = xstrdup(o->gateway);
    ks->ns = xstrdup(o->ns ? o->ns : cfg.namespace ? cfg.namespace : "default");
    ks->origin = xstrdup(cfg.source ? cfg.source : "kubeconfig");
    ks->kc = kube_client_new(o->loop, &cfg);
    kube_config_free(&cfg);
    if (!ks->kc) abort();
    ks->debounce = malloc(sizeof *ks->debounce);
    if (!ks->debounce) abort();
    uv_timer_init(o->loop, ks->debounce);
    ks->debounce->data = ks;
    ks->gw_inf = start_informer(ks, &KUBE_LLMGATEWAYS, ks->gateway);
    if (!ks->gw_inf) {
        snprintf(err, errlen, "cannot start watching LLMGateway %s/%s", ks->ns, ks->gateway);
        kube_source_free(ks);
        return NULL;
    }
    return ks;
}

static void why_set(char *why, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void why_set(char *why, size_t n, const char *fmt, ...)
{
    if (!why || !n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
}

static void fp_add(char **fp, size_t *len, size_t *cap, const char *a, const char *b)
{
    size_t need = strlen(a) + strlen(b) + 3;
    if (*len + need > *cap) {
        *cap = (*len + need) * 2;
        *fp = realloc(*fp, *cap);
        if (!*fp) abort();
    }
    *len += (size_t)snprintf(*fp + *len, *cap - *len, "%s=%s;", a, b);
}

static const char *meta_str(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(json_object_get(obj, "metadata"), key));
    return s ? s : "";
}

ks_result kube_source_load(kube_source *ks, bool force, cfg_snapshot **out, cfg_diags *diags,
                           char *why, size_t whylen)
{
    if (!kube_informer_synced(ks->gw_inf)) {
        why_set(why, whylen,
                "LLMGateway %s/%s: not listed yet from the API server (%s): is it reachable, and "
                "may this service account get/list/watch it (RBAC)?",
                ks->ns, ks->gateway, ks->origin);
        return KS_WAITING;
    }
    json_t *gw = kube_informer_get(ks->gw_inf, ks->ns, ks->gateway);
    if (!gw) {
        why_set(why, whylen, "LLMGateway %s/%s not found", ks->ns, ks->gateway);
        return KS_GONE;
    }
    follow_refs(ks);
    cfg_refs refs = {0};
    collect_refs(ks, gw, &refs);
    size_t n_objs = 0;
    json_t **objs = calloc(refs.n + 1, sizeof *objs);
    if (!objs) abort();
    objs[n_objs++] = gw;
    char *fp = NULL;
    size_t fp_len = 0, fp_cap = 0;
    fp_add(&fp, &fp_len, &fp_cap, meta_str(gw, "uid"), meta_str(gw, "resourceVersion"));
    ks_result res = KS_LOADED;
    size_t missing = 0;
    for (size_t i = 0; i < refs.n && res != KS_WAITING; i++) {
        const cfg_ref *r = &refs.v[i];
        if (cfg_refs_find(&refs, r->kind, r->name) != r) continue; /* seen */
        ks_watch *w = find_watch(ks, r->kind, r->name);
        if (!w || !w->inf || !kube_informer_synced(w->inf)) {
            why_set(why, whylen,
                    "%s %s/%s (referenced by %s): not listed yet from the API server: may this "
                    "service account get/list/watch it (RBAC)?",
                    cfg_ref_kind_name(r->kind), ks->ns, r->name, r->path);
            res = KS_WAITING;
            break;
        }
        json_t *obj = cached(ks, w);
        if (obj) {
            objs[n_objs++] = obj;
            fp_add(&fp, &fp_len, &fp_cap, meta_str(obj, "uid"), meta_str(obj, "resourceVersion"));
        } else {
            fp_add(&fp, &fp_len, &fp_cap, "missing", r->name);
            if (!missing++)
                why_set(why, whylen, "%s %s/%s referenced by %s not found or not readable (RBAC?)",
                        cfg_ref_kind_name(r->kind), ks->ns, r->name, r->path);
        }
    }
    if (res == KS_WAITING) goto done;
    if (!force && ks->fingerprint && strcmp(ks->fingerprint, fp) == 0) {
        res = KS_UNCHANGED;
        goto done;
    }
    free(ks->fingerprint);
    ks->fingerprint = fp;
    fp = NULL;
    for (size_t i = 0; i < refs.n; i++) {
        const cfg_ref *r = &refs.v[i];
        if (!cached(ks, find_watch(ks, r->kind, r->name)))
            log_error("%s %s/%s referenced by %s not found or not readable (RBAC?)",
                      cfg_ref_kind_name(r->kind), ks->ns, r->name, r->path);
    }
    if (cfg_load_objects(objs, NULL, n_objs, out, diags) != 0) {
        res = KS_INVALID;
        if (!missing && diags->n) {
            const cfg_diag *d = &diags->items[0];
            for (size_t i = 0; i < diags->n; i++)
                if (!diags->items[i].warning) {
                    d = &diags->items[i];
                    break;
                }
            why_set(why, whylen, "%s: %s%s%s", d->file, d->path, d->path[0] ? ": " : "",
                    d->message);
        }
    }
done:
    free(fp);
    free(objs);
    cfg_refs_free(&refs);
    return res;
}

const char *kube_source_namespace(const kube_source *ks)
{
    return ks->ns;
}

const char *kube_source_origin(const kube_source *ks)
{
    return ks->origin;
}

static void free_handle(uv_handle_t *h)
{
    free(h);
}

void kube_source_free(kube_source *ks)
{
    if (!ks) return;
    for (size_t i = 0; i < ks->n; i++) {
        if (ks->w[i].inf) kube_informer_stop(ks->w[i].inf);
        free(ks->w[i].name);
    }
    free(ks->w);
    if (ks->gw_inf) kube_informer_stop(ks->gw_inf);
    kube_client_free(ks->kc);
    uv_close((uv_handle_t *)ks->debounce, free_handle);
    free(ks->fingerprint);
    free(ks->gateway);
    free(ks->ns);
    free(ks->origin);
    free(ks);
}
