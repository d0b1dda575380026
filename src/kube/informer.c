/* informer.c — list + watch + cache of one resource, the way client-go's reflector does it: a
 * paged list (limit/continue; a 410 on a continue restarts the list), the cache diffed against
 * the previous one, then a watch from the list's resourceVersion with bookmarks, streamed as
 * newline-delimited JSON. A watch that ends resumes from the last resourceVersion; 410 or an ERROR
 * event re-lists; transport failures reconnect after a jittered exponential backoff. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "kube/kube_internal.h"

#define KUBE_LINE_MAX (16u << 20)
#define KUBE_BACKOFF_BASE_MS 500u
#define KUBE_BACKOFF_CAP_MS 30000u
#define KUBE_WATCH_MIN_S 300u
#define KUBE_WATCH_MAX_S 600u
#define KUBE_WATCH_HEALTHY_MS 1000u

/* ---- the line splitter ---- */

void kube_lines_init(kube_lines *l, size_t max_line)
{
    l->pending = (buf)BUF_INIT;
    l->max_line = max_line;
}

void kube_lines_reset(kube_lines *l)
{
    buf_free(&l->pending);
}

static bool emit_line(const char *p, size_t n,
                      bool (*on_line)(const char *line, size_t len, void *udata), void *udata,
                      int *count)
{
    if (n && p[n - 1] == '\r') n--;
    if (!n) return true;
    (*count)++;
    return on_line(p, n, udata);
}

int kube_lines_feed(kube_lines *l, const char *data, size_t len,
                    bool (*on_line)(const char *line, size_t len, void *udata), void *udata)
{
    int count = 0;
    while (len) {
        const char *nl = memchr(data, '\n', len);
        if (!nl) {
            if (l->pending.len + len > l->max_line) return -1;
            buf_append(&l->pending, data, len);
            return count;
        }
        size_t n = (size_t)(nl - data);
        if (l->pending.len + n > l->max_line) return -1;
        bool go;
        if (l->pending.len) {
            buf_append(&l->pending, data, n);
            go = emit_line(l->pending.data, l->pending.len, on_line, udata, &count);
            buf_reset(&l->pending);
        } else {
            go = emit_line(data, n, on_line, udata, &count);
        }
        if (!go) return count;
        data = nl + 1;
        len -= n + 1;
    }
    return count;
}

/* ---- decoding ---- */

kube_watch_type kube_watch_decode(const char *line, size_t len, json_t **obj, int *code)
{
    *obj = NULL;
    *code = 0;
    json_t *ev = json_loadb(line, len, 0, NULL);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *o = json_object_get(ev, "object");
    if (!type || !json_is_object(o)) {
        json_decref(ev);
        return KUBE_WATCH_INVALID;
    }
    kube_watch_type t = KUBE_WATCH_INVALID;
    if (!strcmp(type, "ADDED"))
        t = KUBE_WATCH_ADDED;
    else if (!strcmp(type, "MODIFIED"))
        t = KUBE_WATCH_MODIFIED;
    else if (!strcmp(type, "DELETED"))
        t = KUBE_WATCH_DELETED;
    else if (!strcmp(type, "BOOKMARK"))
        t = KUBE_WATCH_BOOKMARK;
    else if (!strcmp(type, "ERROR"))
        t = KUBE_WATCH_ERROR;
    if (t == KUBE_WATCH_ERROR) {
        json_int_t c = json_integer_value(json_object_get(o, "code"));
        *code = (int)c;
    }
    if (t != KUBE_WATCH_INVALID) *obj = json_incref(o);
    json_decref(ev);
    return t;
}

void kube_object_fill_type(json_t *obj, const kube_gvr *r)
{
    if (!json_is_object(obj)) return;
    if (!json_string_value(json_object_get(obj, "kind")))
        json_object_set_new(obj, "kind", json_string(r->kind));
    if (!json_string_value(json_object_get(obj, "apiVersion")))
        json_object_set_new(obj, "apiVersion", json_string(kube_api_version(r)));
}

size_t kube_cache_diff(const json_t *old_cache, const json_t *new_cache,
                       bool (*emit)(kube_event_type t, json_t *obj, void *udata), void *udata)
{
    size_t n = 0;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)old_cache, key, v)
    {
        if (json_object_get(new_cache, key)) continue;
        n++;
        if (!emit(KUBE_DELETED, v, udata)) return n;
    }
    json_object_foreach((json_t *)new_cache, key, v)
    {
        json_t *old = json_object_get(old_cache, key);
        if (!old) {
            n++;
            if (!emit(KUBE_ADDED, v, udata)) return n;
            continue;
        }
        const char *a = kube_object_rv(old), *b = kube_object_rv(v);
        if (a && b && !strcmp(a, b)) continue;
        n++;
        if (!emit(KUBE_MODIFIED, v, udata)) return n;
    }
    return n;
}

/* ---- the informer ---- */

typedef enum { INF_IDLE, INF_LISTING, INF_WATCHING, INF_WAITING } inf_state;

struct kube_informer {
    kube_client *c;
    kube_link link;
    kube_gvr gvr;
    char *ns, *label_selector, *field_selector;
    unsigned page_limit;
    void (*on_event)(kube_informer *inf, kube_event_type type, json_t *obj, void *udata);
    void (*on_synced)(kube_informer *inf, void *udata);
    void *udata;

    json_t *cache; /* "ns/name" -> object */
    json_t *next;  /* the list being read */
    char *rv;      /* last resourceVersion seen */
    kube_call *call;
    kube_lines lines;
    uv_timer_t timer;
    inf_state state;
    bool relist_next; /* after the wait: list (true) or watch (false) */
    bool synced;
    bool stopped;
    bool watch_got_event;
    uint64_t watch_started_ms;
    unsigned attempt;
    unsigned long lists, watches;
};

#define INF_OF(l) ((kube_informer *)((char *)(l)-offsetof(kube_informer, link)))

static void inf_list(kube_informer *inf, const char *cont);
static void inf_watch(kube_informer *inf);

static void set_rv(kube_informer *inf, const char *rv)
{
    if (!rv || !rv[0]) return;
    free(inf->rv);
    inf->rv = kube_strdup(rv);
}

static void wait_fire(uv_timer_t *t)
{
    kube_informer *inf = t->data;
    if (inf->stopped) return;
    inf->state = INF_IDLE;
    if (inf->relist_next)
        inf_list(inf, NULL);
    else
        inf_watch(inf);
}

/* retry after a backoff (or at once when immediate) */
static void inf_retry(kube_informer *inf, bool relist, bool immediate)
{
    if (inf->stopped) return;
    inf->state = INF_WAITING;
    inf->relist_next = relist || !inf->rv;
    unsigned ms = 0;
    if (!immediate) ms = kube_backoff_ms(inf->attempt++, KUBE_BACKOFF_BASE_MS, KUBE_BACKOFF_CAP_MS);
    uv_timer_start(&inf->timer, wait_fire, ms, 0);
}

/* append key=escaped(value) to the query */
static void add_query(buf *b, const char *key, const char *value)
{
    if (!value || !value[0]) return;
    char *e = kube_escape(value);
    buf_printf(b, "&%s=%s", key, e);
    free(e);
}

static char *inf_path(kube_informer *inf)
{
    char *p = kube_path(&inf->gvr, inf->ns, NULL, NULL);
    buf b = BUF_INIT;
    buf_puts(&b, p);
    free(p);
    return buf_steal(&b);
}

static bool emit_event(kube_event_type t, json_t *obj, void *udata)
{
    kube_informer *inf = udata;
    if (inf->on_event) inf->on_event(inf, t, obj, inf->udata);
    return !inf->stopped;
}

static void list_done(const kube_resp *r, void *udata)
{
    kube_informer *inf = udata;
    inf->call = NULL;
    if (r->status == 410 && json_object_size(inf->next)) {
        /* the continue token expired: a fresh list */
        log_debug("kube: list of %s: continue token expired, listing again", inf->gvr.resource);
        json_object_clear(inf->next);
        inf_list(inf, NULL);
        return;
    }
    if (r->status != 200 || !json_is_object(r->body)) {
        log_warn("kube: list of %s failed: %s", inf->gvr.resource,
                 r->error ? r->error : "unexpected answer");
        json_object_clear(inf->next);
        inf_retry(inf, true, false);
        return;
    }
    json_t *items = json_object_get(r->body, "items");
    size_t i;
    json_t *it;
    json_array_foreach(items, i, it)
    {
        char *key = kube_object_key(it);
        if (!key) continue;
        json_t *copy = json_deep_copy(it);
        kube_object_fill_type(copy, &inf->gvr);
        json_object_set_new(inf->next, key, copy);
        free(key);
    }
    const json_t *md = json_object_get(r->body, "metadata");
    const char *cont = json_string_value(json_object_get(md, "continue"));
    if (cont && cont[0]) {
        inf_list(inf, cont);
        return;
    }
    set_rv(inf, json_string_value(json_object_get(md, "resourceVersion")));
    /* the new cache replaces the old one before the events, so kube_informer_get agrees */
    json_t *old = inf->cache;
    inf->cache = inf->next;
    inf->next = json_object();
    inf->lists++;
    inf->synced = true;
    inf->state = INF_IDLE;
    kube_cache_diff(old, inf->cache, emit_event, inf);
    json_decref(old);
    if (inf->stopped) return;
    if (inf->on_synced) inf->on_synced(inf, inf->udata);
    if (inf->stopped) return;
    inf_watch(inf);
}

static void inf_list(kube_informer *inf, const char *cont)
{
    if (inf->stopped) return;
    if (!cont) json_object_clear(inf->next);
    char *p = inf_path(inf);
    buf b = BUF_INIT;
    buf_printf(&b, "%s?limit=%u", p, inf->page_limit);
    free(p);
    add_query(&b, "continue", cont);
    add_query(&b, "labelSelector", inf->label_selector);
    add_query(&b, "fieldSelector", inf->field_selector);
    inf->state = INF_LISTING;
    inf->call = kube_request(inf->c, "GET", b.data, NULL, NULL, list_done, inf);
    buf_free(&b);
    if (!inf->call) inf_retry(inf, true, false);
}

/* one watch event */
static bool on_watch_line(const char *line, size_t len, void *udata)
{
    kube_informer *inf = udata;
    json_t *obj;
    int code;
    kube_watch_type t = kube_watch_decode(line, len, &obj, &code);
    if (t == KUBE_WATCH_INVALID) {
        log_warn("kube: watch of %s: an event that is not JSON or has no type/object; "
                 "listing again",
                 inf->gvr.resource);
        kube_call_cancel(inf->call);
        inf->call = NULL;
        inf_retry(inf, true, false);
        return false;
    }
    if (t == KUBE_WATCH_ERROR) {
        const char *m = json_string_value(json_object_get(obj, "message"));
        log_info("kube: watch of %s: ERROR %d (%s); listing again", inf->gvr.resource, code,
                 m ? m : "no message");
        json_decref(obj);
        kube_call_cancel(inf->call);
        inf->call = NULL;
        inf_retry(inf, true, code == 410);
        return false;
    }
    inf->watch_got_event = true;
    inf->attempt = 0; /* the watch is healthy */
    set_rv(inf, kube_object_rv(obj));
    if (t == KUBE_WATCH_BOOKMARK) {
        json_decref(obj);
        return true;
    }
    char *key = kube_object_key(obj);
    if (!key) {
        json_decref(obj);
        return true;
    }
    kube_object_fill_type(obj, &inf->gvr);
    json_t *old = json_object_get(inf->cache, key);
    if (t == KUBE_WATCH_DELETED) {
        if (old) {
            json_incref(old);
            json_object_del(inf->cache, key);
            json_decref(old);
        }
        emit_event(KUBE_DELETED, obj, inf);
    } else {
        const char *a = old ? kube_object_rv(old) : NULL, *b = kube_object_rv(obj);
        bool same = a && b && !strcmp(a, b);
        json_object_set(inf->cache, key, obj);
        if (!same) emit_event(old ? KUBE_MODIFIED : KUBE_ADDED, obj, inf);
    }
    free(key);
    json_decref(obj);
    return !inf->stopped;
}

static void watch_status(int status, void *udata)
{
    (void)status;
    (void)udata;
}

static void watch_chunk(const char *data, size_t len, void *udata)
{
    kube_informer *inf = udata;
    kube_call *call = inf->call;
    int rc = kube_lines_feed(&inf->lines, data, len, on_watch_line, inf);
    if (inf->stopped || inf->call != call) return; /* stopped, or the line handler moved on */
    if (rc < 0) {
        log_warn("kube: watch of %s: an event over %u MiB; listing again", inf->gvr.resource,
                 KUBE_LINE_MAX >> 20);
        kube_call_cancel(inf->call);
        inf->call = NULL;
        inf_retry(inf, true, false);
    }
}

static void watch_done(const kube_resp *r, void *udata)
{
    kube_informer *inf = udata;
    inf->call = NULL;
    kube_lines_reset(&inf->lines);
    if (r->status == 410) {
        inf_retry(inf, true, true);
        return;
    }
    if (r->status == 200 && !r->error) {
        /* the server ended the watch (timeoutSeconds): resume from the last resourceVersion;
         * one that ended at once without a single event counts as a failure */
        bool healthy =
            inf->watch_got_event || kube_mono_ms() - inf->watch_started_ms >= KUBE_WATCH_HEALTHY_MS;
        if (healthy) inf->attempt = 0;
        inf_retry(inf, false, healthy);
        return;
    }
    log_warn("kube: watch of %s failed: %s", inf->gvr.resource,
             r->error ? r->error : "unexpected answer");
    inf_retry(inf, false, false);
}

static void inf_watch(kube_informer *inf)
{
    if (inf->stopped) return;
    if (!inf->rv) {
        inf_list(inf, NULL);
        return;
    }
    char *p = inf_path(inf);
    unsigned timeout_s =
        KUBE_WATCH_MIN_S + kube_rand_below(KUBE_WATCH_MAX_S - KUBE_WATCH_MIN_S + 1);
    buf b = BUF_INIT;
    buf_printf(&b, "%s?watch=1&allowWatchBookmarks=true", p);
    free(p);
    add_query(&b, "resourceVersion", inf->rv);
    buf_printf(&b, "&timeoutSeconds=%u", timeout_s);
    add_query(&b, "labelSelector", inf->label_selector);
    add_query(&b, "fieldSelector", inf->field_selector);
    static const kube_stream_fns fns = {watch_status, watch_chunk, watch_done};
    kube_lines_init(&inf->lines, KUBE_LINE_MAX);
    inf->watch_got_event = false;
    inf->watch_started_ms = kube_mono_ms();
    inf->state = INF_WATCHING;
    inf->call = kube_stream(inf->c, b.data, (timeout_s + 60) * 1000u, &fns, inf);
    buf_free(&b);
    if (!inf->call) {
        inf_retry(inf, false, false);
        return;
    }
    inf->watches++;
}

kube_informer *kube_informer_start(kube_client *c, const kube_informer_opts *o)
{
    if (!c || !o || !o->gvr || kube_client_closing(c)) return NULL;
    kube_informer *inf = calloc(1, sizeof *inf);
    if (!inf) return NULL;
    inf->c = c;
    inf->gvr = *o->gvr;
    inf->ns = o->ns && o->ns[0] ? kube_strdup(o->ns) : NULL;
    inf->label_selector = kube_strdup(o->label_selector);
    inf->field_selector = kube_strdup(o->field_selector);
    inf->page_limit = o->page_limit ? o->page_limit : 500;
    inf->on_event = o->on_event;
    inf->on_synced = o->on_synced;
    inf->udata = o->udata;
    inf->cache = json_object();
    inf->next = json_object();
    kube_lines_init(&inf->lines, KUBE_LINE_MAX);
    uv_timer_init(kube_client_loop(c), &inf->timer);
    inf->timer.data = inf;
    kube_link_add(kube_client_informers(c), &inf->link);
    /* the first list starts on the loop's next turn: no callback from inside this call */
    inf->state = INF_WAITING;
    inf->relist_next = true;
    uv_timer_start(&inf->timer, wait_fire, 0, 0);
    return inf;
}

static void inf_closed(uv_handle_t *h)
{
    kube_informer *inf = h->data;
    json_decref(inf->cache);
    json_decref(inf->next);
    kube_lines_reset(&inf->lines);
    free(inf->rv);
    free(inf->ns);
    free(inf->label_selector);
    free(inf->field_selector);
    free(inf);
}

void kube_informer_stop(kube_informer *inf)
{
    if (!inf || inf->stopped) return;
    inf->stopped = true;
    kube_call_cancel(inf->call);
    inf->call = NULL;
    kube_link_del(&inf->link);
    uv_timer_stop(&inf->timer);
    /* freed once the timer is closed: a callback of inf that is running now returns first */
    uv_close((uv_handle_t *)&inf->timer, inf_closed);
}

void kube_informer_stop_all(kube_client *c)
{
    kube_link *head = kube_client_informers(c);
    while (head->next && head->next != head)
        kube_informer_stop(INF_OF(head->next));
}

bool kube_informer_synced(const kube_informer *inf)
{
    return inf && inf->synced;
}

json_t *kube_informer_get(const kube_informer *inf, const char *ns, const char *name)
{
    if (!inf || !name) return NULL;
    char *key = kube_cache_key(inf->gvr.namespaced ? ns : NULL, name);
    json_t *v = json_object_get(inf->cache, key);
    free(key);
    return v;
}

const json_t *kube_informer_cache(const kube_informer *inf)
{
    return inf ? inf->cache : NULL;
}

unsigned long kube_informer_lists(const kube_informer *inf)
{
    return inf ? inf->lists : 0;
}

unsigned long kube_informer_watches(const kube_informer *inf)
{
    return inf ? inf->watches : 0;
}
