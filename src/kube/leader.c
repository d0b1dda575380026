/* leader.c — Lease leader election (coordination.k8s.io/v1) with client-go's leaderelection
 * semantics: every retry period get the Lease; absent → create it holding it; held by another
 * holder whose record we have not seen change for leaseDurationSeconds (our clock), free, or ours
 * → PUT it guarded by resourceVersion (409: someone else won). A leader that could not renew
 * within the renew deadline, or sees another holder, stops leading. Stop releases the Lease. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "kube/kube_internal.h"

struct kube_leader {
    kube_client *c;
    kube_link link;
    char *ns, *name, *identity;
    unsigned lease_s, renew_s, retry_s;
    void (*on_started)(void *udata);
    void (*on_stopped)(void *udata);
    void *udata;

    uv_timer_t timer;
    kube_call *call;
    json_t *lease;          /* the last Lease we read or wrote */
    json_t *observed;       /* its spec when we last saw it change */
    uint64_t observed_ms;   /* when that was */
    uint64_t last_renew_ms; /* our last successful write while leader */
    uint64_t call_started_ms;
    bool leader;
    bool stopped;
};

#define LEADER_OF(l) ((kube_leader *)((char *)(l)-offsetof(kube_leader, link)))

bool kube_lease_expired(uint64_t observed_ms, unsigned lease_s, uint64_t now_ms)
{
    return now_ms >= observed_ms + (uint64_t)lease_s * 1000u;
}

static void tick(uv_timer_t *t);

static void lose(kube_leader *l, const char *why)
{
    if (!l->leader) return;
    l->leader = false;
    log_warn("kube: leader election %s/%s: %s lost the lease: %s", l->ns, l->name, l->identity,
             why);
    if (l->on_stopped) l->on_stopped(l->udata);
}

static void win(kube_leader *l)
{
    l->last_renew_ms = kube_mono_ms();
    if (l->leader) return;
    l->leader = true;
    log_info("kube: leader election %s/%s: %s is the leader", l->ns, l->name, l->identity);
    if (l->on_started) l->on_started(l->udata);
}

/* remember the record and when it changed */
static void observe(kube_leader *l, const json_t *lease)
{
    json_t *spec = json_object_get(lease, "spec");
    if (!l->observed || !json_equal(l->observed, spec)) {
        json_decref(l->observed);
        l->observed = spec ? json_deep_copy(spec) : json_object();
        l->observed_ms = kube_mono_ms();
    }
    json_decref(l->lease);
    l->lease = json_deep_copy(lease);
}

static void write_done(const kube_resp *r, void *udata)
{
    kube_leader *l = udata;
    l->call = NULL;
    if ((r->status == 200 || r->status == 201) && json_is_object(r->body)) {
        observe(l, r->body);
        win(l);
        return;
    }
    if (r->status == 409)
        log_debug("kube: leader election %s/%s: conflict, another candidate won", l->ns, l->name);
    else
        log_warn("kube: leader election %s/%s: writing the Lease failed: %s", l->ns, l->name,
                 r->error ? r->error : "unexpected answer");
    /* no step-down here: the renew deadline decides (checked on every tick) */
}

static json_t *new_spec(kube_leader *l, const json_t *old_spec, bool ours)
{
    char now[32];
    kube_time_now(now, true);
    json_int_t transitions = json_integer_value(json_object_get(old_spec, "leaseTransitions"));
    const char *acquire = json_string_value(json_object_get(old_spec, "acquireTime"));
    json_t *spec =
        json_pack("{s:s,s:I,s:s,s:s,s:I}", "holderIdentity", l->identity, "leaseDurationSeconds",
                  (json_int_t)l->lease_s, "acquireTime", ours && acquire ? acquire : now,
                  "renewTime", now, "leaseTransitions", ours ? transitions : transitions + 1);
    return spec;
}

static unsigned req_timeout_ms(const kube_leader *l)
{
    return l->renew_s * 1000u;
}

static void get_done(const kube_resp *r, void *udata)
{
    kube_leader *l = udata;
    l->call = NULL;
    if (r->status == 404) {
        char now[32];
        kube_time_now(now, true);
        json_t *lease =
            json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:I,s:s,s:s,s:I}}", "apiVersion",
                      kube_api_version(&KUBE_LEASES), "kind", "Lease", "metadata", "name", l->name,
                      "namespace", l->ns, "spec", "holderIdentity", l->identity,
                      "leaseDurationSeconds", (json_int_t)l->lease_s, "acquireTime", now,
                      "renewTime", now, "leaseTransitions", (json_int_t)0);
        char *p = kube_path(&KUBE_LEASES, l->ns, NULL, NULL);
        l->call_started_ms = kube_mono_ms();
        l->call =
            kube_request_ex(l->c, "POST", p, NULL, lease, req_timeout_ms(l), false, write_done, l);
        free(p);
        json_decref(lease);
        return;
    }
    if (r->status != 200 || !json_is_object(r->body)) {
        log_warn("kube: leader election %s/%s: reading the Lease failed: %s", l->ns, l->name,
                 r->error ? r->error : "unexpected answer");
        return;
    }
    observe(l, r->body);
    const json_t *spec = json_object_get(r->body, "spec");
    const char *holder = json_string_value(json_object_get(spec, "holderIdentity"));
    json_int_t dur = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
    bool ours = holder && !strcmp(holder, l->identity);
    bool free_ = !holder || !holder[0];
    if (!ours && !free_ &&
        !kube_lease_expired(l->observed_ms, dur > 0 ? (unsigned)dur : l->lease_s, kube_mono_ms())) {
        lose(l, "another holder has it");
        return; /* held by someone else and not expired: try again next period */
    }
    if (l->stopped) return;
    json_t *lease = json_deep_copy(r->body);
    json_object_set_new(lease, "spec", new_spec(l, spec, ours));
    char *p = kube_path(&KUBE_LEASES, l->ns, l->name, NULL);
    l->call_started_ms = kube_mono_ms();
    l->call = kube_request_ex(l->c, "PUT", p, NULL, lease, req_timeout_ms(l), false, write_done, l);
    free(p);
    json_decref(lease);
}

static void tick(uv_timer_t *t)
{
    kube_leader *l = t->data;
    if (l->stopped) return;
    uint64_t now = kube_mono_ms();
    if (l->leader && now - l->last_renew_ms > (uint64_t)l->renew_s * 1000u) {
        kube_call_cancel(l->call);
        l->call = NULL;
        lose(l, "not renewed within the renew deadline");
        if (l->stopped) return;
    }
    if (l->call) return; /* the previous attempt is still in flight (it has its own timeout) */
    char *p = kube_path(&KUBE_LEASES, l->ns, l->name, NULL);
    l->call_started_ms = now;
    l->call = kube_request_ex(l->c, "GET", p, NULL, NULL, req_timeout_ms(l), false, get_done, l);
    free(p);
}

kube_leader *kube_leader_start(kube_client *c, const kube_leader_opts *o)
{
    if (!c || !o || !o->ns || !o->name || !o->identity || !o->identity[0] || kube_client_closing(c))
        return NULL;
    kube_leader *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->c = c;
    l->ns = kube_strdup(o->ns);
    l->name = kube_strdup(o->name);
    l->identity = kube_strdup(o->identity);
    l->lease_s = o->lease_s ? o->lease_s : 15;
    l->renew_s = o->renew_s ? o->renew_s : 10;
    l->retry_s = o->retry_s ? o->retry_s : 2;
    l->on_started = o->on_started;
    l->on_stopped = o->on_stopped;
    l->udata = o->udata;
    uv_timer_init(kube_client_loop(c), &l->timer);
    l->timer.data = l;
    kube_link_add(kube_client_leaders(c), &l->link);
    uv_timer_start(&l->timer, tick, 0, (uint64_t)l->retry_s * 1000u);
    return l;
}

bool kube_leader_is_leader(const kube_leader *l)
{
    return l && l->leader;
}

static void release_done(const kube_resp *r, void *udata)
{
    char *what = udata;
    if (r->status != 200)
        log_debug("kube: releasing the Lease %s failed: %s", what,
                  r->error ? r->error : "unexpected answer");
    free(what);
}

static void leader_closed(uv_handle_t *h)
{
    kube_leader *l = h->data;
    json_decref(l->lease);
    json_decref(l->observed);
    free(l->ns);
    free(l->name);
    free(l->identity);
    free(l);
}

void kube_leader_stop(kube_leader *l)
{
    if (!l || l->stopped) return;
    l->stopped = true;
    kube_call_cancel(l->call);
    l->call = NULL;
    if (l->leader && l->lease) {
        /* release: holderIdentity cleared, 1 s lease, so another candidate takes it at once */
        json_t *lease = json_deep_copy(l->lease);
        json_t *spec = json_object_get(lease, "spec");
        if (!json_is_object(spec)) {
            spec = json_object();
            json_object_set_new(lease, "spec", spec);
        }
        char now[32];
        kube_time_now(now, true);
        json_object_set_new(spec, "holderIdentity", json_string(""));
        json_object_set_new(spec, "leaseDurationSeconds", json_integer(1));
        json_object_set_new(spec, "renewTime", json_string(now));
        json_object_set_new(spec, "acquireTime", json_string(now));
        char *p = kube_path(&KUBE_LEASES, l->ns, l->name, NULL);
        char *what = kube_cache_key(l->ns, l->name);
        if (!kube_request_ex(l->c, "PUT", p, NULL, lease, 2000, true, release_done, what))
            free(what);
        free(p);
        json_decref(lease);
    }
    l->leader = false;
    kube_link_del(&l->link);
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, leader_closed);
}

void kube_leader_stop_all(kube_client *c)
{
    kube_link *head = kube_client_leaders(c);
    while (head->next && head->next != head)
        kube_leader_stop(LEADER_OF(head->next));
}
