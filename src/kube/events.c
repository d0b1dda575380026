/* events.c — Events (events.k8s.io/v1) about API objects, fire and forget: the first occurrence
 * creates an Event, a repeat of the same (object, type, reason, note) within 10 minutes patches
 * that Event's series {count, lastObservedTime} (what client-go's events broadcaster does).
 * Failures are logged at debug level only. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/log.h"
#include "kube/kube_internal.h"

#define KUBE_NOTE_MAX 1024u
#define KUBE_SERIES_MS (10u * 60u * 1000u)

/* one Event we created: the series map's value */
typedef struct series {
    char *ns, *name; /* the Event; name NULL while its create is in flight */
    unsigned count;  /* occurrences so far */
    unsigned sent;   /* count the API server has (1 after the create) */
    bool busy;       /* a create or patch is in flight */
    uint64_t last_ms;
} series;

struct kube_events_state {
    char *controller, *instance;
    json_t *map; /* key -> json integer holding a series pointer (uintptr) */
};

static kube_events_state *state_of(kube_client *c)
{
    kube_events_state **sp = kube_client_events(c);
    if (!*sp) {
        kube_events_state *s = calloc(1, sizeof *s);
        if (!s) abort();
        char host[256] = "";
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "ctxgate");
        host[sizeof host - 1] = 0;
        s->controller = kube_strdup("ctxgate.io/controller");
        s->instance = kube_strdup(host);
        s->map = json_object();
        *sp = s;
    }
    return *sp;
}

static series *map_get(kube_events_state *s, const char *key)
{
    return (series *)(uintptr_t)json_integer_value(json_object_get(s->map, key));
}

static void series_free(series *e)
{
    if (!e) return;
    free(e->ns);
    free(e->name);
    free(e);
}

static void map_del(kube_events_state *s, const char *key)
{
    series_free(map_get(s, key));
    json_object_del(s->map, key);
}

void kube_events_state_free(kube_events_state *s)
{
    if (!s) return;
    const char *k;
    json_t *v;
    json_object_foreach(s->map, k, v)
    {
        series_free((series *)(uintptr_t)json_integer_value(v));
    }
    json_decref(s->map);
    free(s->controller);
    free(s->instance);
    free(s);
}

void kube_event_set_reporter(kube_client *c, const char *controller, const char *instance)
{
    kube_events_state *s = state_of(c);
    if (controller && controller[0]) {
        free(s->controller);
        s->controller = kube_strdup(controller);
    }
    if (instance && instance[0]) {
        free(s->instance);
        s->instance = kube_strdup(instance);
    }
}

/* forgets series not seen for 10 minutes (and not busy) */
static void prune(kube_events_state *s, uint64_t now)
{
    const char *k;
    json_t *v;
    void *tmp;
    json_object_foreach_safe(s->map, tmp, k, v)
    {
        series *e = (series *)(uintptr_t)json_integer_value(v);
        if (!e->busy && now - e->last_ms > KUBE_SERIES_MS) {
            series_free(e);
            json_object_del(s->map, k);
        }
    }
}

/* a call's udata: the client and the series key */
typedef struct ev_ctx {
    kube_client *c;
    char key[];
} ev_ctx;

static ev_ctx *ctx_new(kube_client *c, const char *key)
{
    size_t n = strlen(key) + 1;
    ev_ctx *x = malloc(sizeof *x + n);
    if (!x) abort();
    x->c = c;
    memcpy(x->key, key, n);
    return x;
}

static void send_patch(kube_client *c, const char *key, series *e);

static void patch_done(const kube_resp *r, void *udata)
{
    ev_ctx *x = udata;
    kube_events_state *s = *kube_client_events(x->c);
    series *e = s ? map_get(s, x->key) : NULL;
    if (e) {
        e->busy = false;
        if (r->status == 200) {
            if (e->count > e->sent && !kube_client_closing(x->c)) send_patch(x->c, x->key, e);
        } else {
            log_debug("kube: Event %s/%s series update failed: %s", e->ns, e->name,
                      r->error ? r->error : "unexpected answer");
            map_del(s, x->key); /* the next repeat creates a new Event */
        }
    }
    free(x);
}

static void send_patch(kube_client *c, const char *key, series *e)
{
    char now[32];
    kube_time_now(now, true);
    json_t *patch = json_pack("{s:{s:I,s:s}}", "series", "count", (json_int_t)e->count,
                              "lastObservedTime", now);
    ev_ctx *x = ctx_new(c, key);
    char *p = kube_path(&KUBE_EVENTS, e->ns, e->name, NULL);
    unsigned count = e->count;
    kube_call *k = kube_request_ex(c, "PATCH", p, "application/merge-patch+json", patch, 0, true,
                                   patch_done, x);
    free(p);
    json_decref(patch);
    if (!k) {
        free(x);
        return;
    }
    e->busy = true;
    e->sent = count;
}

static void create_done(const kube_resp *r, void *udata)
{
    ev_ctx *x = udata;
    kube_events_state *s = *kube_client_events(x->c);
    series *e = s ? map_get(s, x->key) : NULL;
    if (e) {
        e->busy = false;
        if (r->status == 201 || r->status == 200) {
            e->sent = 1;
            if (e->count > 1 && !kube_client_closing(x->c)) send_patch(x->c, x->key, e);
        } else {
            log_debug("kube: creating Event %s/%s failed: %s", e->ns, e->name,
                      r->error ? r->error : "unexpected answer");
            map_del(s, x->key);
        }
    }
    free(x);
}

/* note cut at max bytes on a UTF-8 character boundary */
static char *cut_note(const char *note)
{
    size_t n = strlen(note);
    if (n <= KUBE_NOTE_MAX) return kube_strdup(note);
    n = KUBE_NOTE_MAX;
    while (n && ((unsigned char)note[n] & 0xC0) == 0x80)
        n--;
    char *s = malloc(n + 1);
    if (!s) abort();
    memcpy(s, note, n);
    s[n] = 0;
    return s;
}

void kube_event_record(kube_client *c, const json_t *obj, const char *type, const char *reason,
                       const char *action, const char *note)
{
    if (!c || kube_client_closing(c) || !json_is_object(obj)) return;
    kube_events_state *s = state_of(c);
    const json_t *md = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    if (!name || !name[0]) return;
    const char *ns = json_string_value(json_object_get(md, "namespace"));
    const char *uid = json_string_value(json_object_get(md, "uid"));
    if (!type || !type[0]) type = "Normal";
    if (!reason || !reason[0]) reason = "Unknown";
    if (!action || !action[0]) action = reason;
    char *cut = cut_note(note ? note : "");
    uint64_t now = kube_mono_ms();
    prune(s, now);

    buf key = BUF_INIT;
    buf_printf(&key, "%s\x1f%s\x1f%s\x1f%s\x1f%s\x1f%s", uid ? uid : "", ns ? ns : "", name, type,
               reason, cut);
    series *e = map_get(s, key.data);
    if (e) {
        e->count++;
        e->last_ms = now;
        if (!e->busy && e->name) send_patch(c, key.data, e);
        buf_free(&key);
        free(cut);
        return;
    }

    char micro[32];
    kube_time_now(micro, true);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char ev_name[320];
    /* client-go: regarding name + "." + the time in hex nanoseconds */
    snprintf(ev_name, sizeof ev_name, "%.200s.%llx", name,
             (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec);
    const char *ev_ns = ns && ns[0] ? ns : "default";
    json_t *regarding = json_object();
    static const char *const md_fields[] = {"name", "namespace", "uid", "resourceVersion"};
    for (size_t i = 0; i < sizeof md_fields / sizeof md_fields[0]; i++) {
        const json_t *v = json_object_get(md, md_fields[i]);
        if (json_is_string(v)) json_object_set(regarding, md_fields[i], (json_t *)v);
    }
    const json_t *kind = json_object_get(obj, "kind"), *av = json_object_get(obj, "apiVersion");
    if (json_is_string(kind)) json_object_set(regarding, "kind", (json_t *)kind);
    if (json_is_string(av)) json_object_set(regarding, "apiVersion", (json_t *)av);
    json_t *ev = json_pack("{s:s,s:s,s:{s:s,s:s},s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "apiVersion",
                           "events.k8s.io/v1", "kind", "Event", "metadata", "name", ev_name,
                           "namespace", ev_ns, "eventTime", micro, "reportingController",
                           s->controller, "reportingInstance", s->instance, "action", action,
                           "reason", reason, "note", cut, "type", type, "regarding", regarding);
    free(cut);
    if (!ev) {
        buf_free(&key);
        return;
    }
    e = calloc(1, sizeof *e);
    if (!e) abort();
    e->ns = kube_strdup(ev_ns);
    e->name = kube_strdup(ev_name);
    e->count = 1;
    e->last_ms = now;
    e->busy = true;
    json_object_set_new(s->map, key.data, json_integer((json_int_t)(uintptr_t)e));
    ev_ctx *x = ctx_new(c, key.data);
    char *p = kube_path(&KUBE_EVENTS, ev_ns, NULL, NULL);
    kube_call *k = kube_request_ex(c, "POST", p, NULL, ev, 0, true, create_done, x);
    free(p);
    json_decref(ev);
    if (!k) {
        free(x);
        map_del(s, key.data);
    }
    buf_free(&key);
}
