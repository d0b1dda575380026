/* health.c — the per-target health state machine (passive outlier detection), its reports
 * (/metrics series, figures for /admin/targets) and the active probes run on worker 0's loop.
 * health.h describes the states and the rules. */
#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/clock.h"
#include "core/log.h"
#include "pipeline/bound.h"
#include "pipeline/health.h"
#include "pipeline/pipeline.h"

enum {
    HEALTH_DEFAULT_UNHEALTHY_AFTER = 3,
    HEALTH_DEFAULT_BASE_S = 10,
    HEALTH_DEFAULT_MAX_S = 300,
    HEALTH_LEVEL_CAP = 1 << 16, /* the multiplier stops growing here (the cap applies first) */
    PROBE_TICK_MS = 250,        /* how often worker 0 looks for a due probe */
    PROBE_TIMEOUT_CAP_S = 10,   /* a probe's total timeout: min(intervalSeconds, this) */
};

health_target *health_new(size_t n)
{
    health_target *h = calloc(n ? n : 1, sizeof *h);
    if (!h) abort();
    for (size_t i = 0; i < n; i++) {
        pthread_mutex_init(&h[i].mu, NULL);
        h[i].last_state = HEALTH_HEALTHY;
    }
    return h;
}

void health_free(health_target *h, size_t n)
{
    if (!h) return;
    for (size_t i = 0; i < n; i++)
        pthread_mutex_destroy(&h[i].mu);
    free(h);
}

void health_inherit(health_target *h, const cfg_gateway *gw, health_target *prev,
                    const cfg_gateway *prev_gw)
{
    if (!h || !gw || !prev || !prev_gw) return;
    for (size_t i = 0; i < gw->n_targets; i++) {
        for (size_t j = 0; j < prev_gw->n_targets; j++) {
            if (strcmp(gw->targets[i].name, prev_gw->targets[j].name) != 0) continue;
            health_target *d = &h[i], *s = &prev[j];
            pthread_mutex_lock(&s->mu);
            atomic_store(&d->ejected_until_ms, atomic_load(&s->ejected_until_ms));
            atomic_store(&d->consecutive, atomic_load(&s->consecutive));
            atomic_store(&d->probation, atomic_load(&s->probation));
            atomic_store(&d->ejections, atomic_load(&s->ejections));
            d->level = s->level;
            d->healthy_since_ms = s->healthy_since_ms;
            d->ejected_until_wall_ms = s->ejected_until_wall_ms;
            d->last_state = s->last_state;
            d->last_transition_wall_ms = s->last_transition_wall_ms;
            memcpy(d->message, s->message, sizeof d->message);
            pthread_mutex_unlock(&s->mu);
            break;
        }
    }
}

health_state health_current(const health_target *h, int64_t now_ms)
{
    if (health_ejected(h, now_ms)) return HEALTH_UNHEALTHY;
    if (atomic_load_explicit(&h->probation, memory_order_relaxed) ||
        atomic_load_explicit(&h->consecutive, memory_order_relaxed) > 0)
        return HEALTH_DEGRADED;
    return HEALTH_HEALTHY;
}

const char *health_state_name(health_state s)
{
    switch (s) {
    case HEALTH_HEALTHY:
        return "Healthy";
    case HEALTH_DEGRADED:
        return "Degraded";
    case HEALTH_UNHEALTHY:
        return "Unhealthy";
    }
    return "Healthy";
}

static int unhealthy_after(const cfg_target *t)
{
    return t->health_unhealthy_after > 0 ? t->health_unhealthy_after
                                         : HEALTH_DEFAULT_UNHEALTHY_AFTER;
}

static int64_t base_ms(const cfg_target *t)
{
    return (int64_t)(t->health_base_ejection_s > 0 ? t->health_base_ejection_s
                                                   : HEALTH_DEFAULT_BASE_S) *
           1000;
}

static int64_t max_ms(const cfg_target *t)
{
    int64_t m =
        (int64_t)(t->health_max_ejection_s > 0 ? t->health_max_ejection_s : HEALTH_DEFAULT_MAX_S) *
        1000;
    int64_t b = base_ms(t);
    return m < b ? b : m;
}

/* Under h->mu: records a change of state (the message is updated either way). */
static void transition(health_target *h, health_state s, int64_t wall_ms, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void transition(health_target *h, health_state s, int64_t wall_ms, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->message, sizeof h->message, fmt, ap);
    va_end(ap);
    if (h->last_state != s || h->last_transition_wall_ms == 0) {
        h->last_state = s;
        h->last_transition_wall_ms = wall_ms;
    }
}

void health_success(health_target *h, const cfg_target *t, bool active, int64_t now_ms,
                    int64_t wall_ms)
{
    /* the hot path: a healthy target answering again costs three relaxed loads */
    if (atomic_load_explicit(&h->consecutive, memory_order_relaxed) == 0 &&
        !atomic_load_explicit(&h->probation, memory_order_relaxed) &&
        atomic_load_explicit(&h->ejected_until_ms, memory_order_relaxed) == 0)
        return;
    pthread_mutex_lock(&h->mu);
    int64_t until = atomic_load(&h->ejected_until_ms);
    bool ejected = until > now_ms;
    if (ejected && !active) {
        pthread_mutex_unlock(&h->mu);
        return;
    }
    bool was_probation = atomic_load(&h->probation);
    atomic_store(&h->consecutive, 0);
    atomic_store(&h->probation, false);
    atomic_store(&h->ejected_until_ms, 0);
    h->ejected_until_wall_ms = 0;
    if (was_probation || until != 0) h->healthy_since_ms = now_ms;
    if (ejected)
        transition(h, HEALTH_HEALTHY, wall_ms, "readmitted early by a successful probe");
    else if (was_probation)
        transition(h, HEALTH_HEALTHY, wall_ms, "%s after its ejection",
                   active ? "a probe succeeded" : "answered successfully");
    else
        transition(h, HEALTH_HEALTHY, wall_ms, "%s", active ? "a probe succeeded" : "answered");
    (void)t;
    pthread_mutex_unlock(&h->mu);
}

bool health_failure(health_target *h, const cfg_target *t, const char *why, int64_t now_ms,
                    int64_t wall_ms)
{
    pthread_mutex_lock(&h->mu);
    if (atomic_load(&h->ejected_until_ms) > now_ms) {
        pthread_mutex_unlock(&h->mu);
        return false;
    }
    int n = atomic_load(&h->consecutive) + 1;
    bool probation = atomic_load(&h->probation);
    if (!probation && n < unhealthy_after(t)) {
        atomic_store(&h->consecutive, n);
        transition(h, HEALTH_DEGRADED, wall_ms, "%d consecutive failure%s (last: %s)", n,
                   n == 1 ? "" : "s", why);
        pthread_mutex_unlock(&h->mu);
        return false;
    }
    /* ejected: the n-th time in a row lasts n times the base, up to the maximum; the count
     * starts over when the target stayed Healthy for the maximum since its last return */
    int64_t cap = max_ms(t);
    if (!probation && h->level > 0 && now_ms - h->healthy_since_ms >= cap) h->level = 0;
    if (h->level < HEALTH_LEVEL_CAP) h->level++;
    int64_t dur = base_ms(t) * h->level;
    if (dur > cap) dur = cap;
    assert(dur > 0);
    atomic_store(&h->ejected_until_ms, now_ms + dur);
    h->ejected_until_wall_ms = wall_ms + dur;
    atomic_store(&h->consecutive, 0);
    atomic_store(&h->probation, true);
    atomic_fetch_add(&h->ejections, 1);
    if (probation)
        transition(h, HEALTH_UNHEALTHY, wall_ms,
                   "ejected for %" PRId64 " s: failed again after readmission (%s)", dur / 1000,
                   why);
    else
        transition(h, HEALTH_UNHEALTHY, wall_ms,
                   "ejected for %" PRId64 " s after %d consecutive failures (last: %s)", dur / 1000,
                   n, why);
    char msg[HEALTH_MESSAGE_MAX];
    memcpy(msg, h->message, sizeof msg);
    pthread_mutex_unlock(&h->mu);
    log_warn("model target '%s' is Unhealthy: %s", t->name, msg);
    return true;
}

void health_observe(health_target *h, const cfg_target *t, upstream_result res, int status)
{
    if (t->type == TARGET_MOCK) return;
    if (res == UPSTREAM_OK && status < 500) {
        health_success(h, t, false, (int64_t)(clock_mono_ns() / 1000000u), clock_wall_ms());
        return;
    }
    char why[48];
    if (res == UPSTREAM_OK)
        snprintf(why, sizeof why, "HTTP %d", status);
    else
        snprintf(why, sizeof why, "%s",
                 res == UPSTREAM_CONNECT_FAILED ? "connect failure"
                 : res == UPSTREAM_TIMEOUT      ? "timeout"
                                                : "broken connection");
    health_failure(h, t, why, (int64_t)(clock_mono_ns() / 1000000u), clock_wall_ms());
}

void health_read(health_target *h, int64_t now_ms, health_snapshot *out)
{
    pthread_mutex_lock(&h->mu);
    out->state = health_current(h, now_ms);
    out->consecutive = atomic_load(&h->consecutive);
    out->ejections = atomic_load(&h->ejections);
    out->ejected_until_wall_ms = out->state == HEALTH_UNHEALTHY ? h->ejected_until_wall_ms : 0;
    out->last_transition_wall_ms = h->last_transition_wall_ms;
    memcpy(out->message, h->message, sizeof out->message);
    if (h->last_state == HEALTH_UNHEALTHY && out->state != HEALTH_UNHEALTHY) {
        /* the ejection ran out: readmitted then, no success since */
        out->last_transition_wall_ms = h->ejected_until_wall_ms;
        snprintf(out->message, sizeof out->message,
                 "readmitted after its ejection; Healthy again after a success");
    }
    pthread_mutex_unlock(&h->mu);
}

void health_format_time(int64_t wall_ms, char *out, size_t n)
{
    time_t s = (time_t)(wall_ms / 1000);
    struct tm tm;
    gmtime_r(&s, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, n, "%s.%03dZ", base, (int)(wall_ms % 1000));
}

/* A Prometheus label value: \ " and newline escaped (the text format's only escapes). */
static void label_value(buf *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '\\' || *s == '"') {
            buf_append(out, "\\", 1);
            buf_append(out, s, 1);
        } else if (*s == '\n') {
            buf_puts(out, "\\n");
        } else {
            buf_append(out, s, 1);
        }
    }
}

void health_render_metrics(health_target *h, const cfg_gateway *gw, buf *out)
{
    if (!h || !gw || gw->n_targets == 0) return;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    static const health_state states[] = {HEALTH_HEALTHY, HEALTH_DEGRADED, HEALTH_UNHEALTHY};
    buf_puts(out, "# HELP ctxgate_target_health Health of each model target: 1 for its current "
                  "state (Healthy, Degraded, Unhealthy), 0 for the others.\n"
                  "# TYPE ctxgate_target_health gauge\n");
    for (size_t i = 0; i < gw->n_targets; i++) {
        health_state cur = health_current(&h[i], now);
        for (size_t k = 0; k < 3; k++) {
            buf_puts(out, "ctxgate_target_health{target=\"");
            label_value(out, gw->targets[i].name);
            buf_printf(out, "\",state=\"%s\"} %d\n", health_state_name(states[k]),
                       cur == states[k] ? 1 : 0);
        }
    }
    buf_puts(out, "# HELP ctxgate_target_ejections_total Times each model target was ejected by "
                  "outlier detection.\n"
                  "# TYPE ctxgate_target_ejections_total counter\n");
    for (size_t i = 0; i < gw->n_targets; i++) {
        buf_puts(out, "ctxgate_target_ejections_total{target=\"");
        label_value(out, gw->targets[i].name);
        buf_printf(out, "\"} %" PRIu64 "\n", atomic_load(&h[i].ejections));
    }
}

/* ---- active probes ---- */

typedef struct probe_job {
    struct health_prober *p;
    pl_runtime *rt; /* one reference: the configuration the probe was started for */
    size_t idx;
    upstream_req *u;
    char *url;
    char *values[2]; /* header values (malloc'd) */
    int status;
    struct probe_job *prev, *next;
} probe_job;

typedef struct health_prober {
    pl_worker *w;
    uv_timer_t timer;
    probe_job *jobs;
} health_prober;

static void job_free(probe_job *j)
{
    if (j->prev)
        j->prev->next = j->next;
    else
        j->p->jobs = j->next;
    if (j->next) j->next->prev = j->prev;
    j->rt->health[j->idx].probe_in_flight = false;
    pl_runtime_unref(j->rt);
    free(j->url);
    free(j->values[0]);
    free(j->values[1]);
    free(j);
}

static void probe_headers(upstream_req *u, int status, void *udata)
{
    probe_job *j = udata;
    j->status = status;
}

static bool probe_data(upstream_req *u, const char *data, size_t len, void *udata)
{
    return true; /* the model list itself is not needed */
}

static void probe_done(upstream_req *u, upstream_result res, int status, const char *errmsg,
                       void *udata)
{
    probe_job *j = udata;
    const cfg_target *t = &j->rt->gw->targets[j->idx];
    health_target *h = &j->rt->health[j->idx];
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    if (res == UPSTREAM_OK && status >= 200 && status < 300) {
        health_success(h, t, true, now, clock_wall_ms());
    } else {
        char why[160];
        if (res == UPSTREAM_OK)
            snprintf(why, sizeof why, "probe: HTTP %d", status);
        else
            snprintf(why, sizeof why, "probe: %s",
                     res == UPSTREAM_CONNECT_FAILED ? "connect failure"
                     : res == UPSTREAM_TIMEOUT      ? "timeout"
                                                    : "broken connection");
        log_info("health probe of model target '%s' failed: %s%s%s", t->name, why,
                 errmsg && *errmsg ? ": " : "", errmsg ? errmsg : "");
        health_failure(h, t, why, now, clock_wall_ms());
    }
    job_free(j);
}

/* The probe URL and its key headers for t; false for types that are not probed (Mock). */
static bool probe_request(const cfg_target *t, probe_job *j, upstream_header *hdr, size_t *n)
{
    char tmp[1024];
    *n = 0;
    switch (t->type) {
    case TARGET_MOCK:
        return false;
    case TARGET_ANTHROPIC:
        snprintf(tmp, sizeof tmp, "%s/v1/models", t->endpoint);
        if (t->api_key) {
            j->values[0] = strdup(t->api_key);
            hdr[(*n)++] = (upstream_header){"x-api-key", j->values[0]};
        }
        j->values[1] = strdup(t->api_version ? t->api_version : "2023-06-01");
        hdr[(*n)++] = (upstream_header){"anthropic-version", j->values[1]};
        break;
    case TARGET_GEMINI:
        snprintf(tmp, sizeof tmp, "%s/v1beta/models", t->endpoint);
        if (t->api_key) {
            j->values[0] = strdup(t->api_key);
            hdr[(*n)++] = (upstream_header){"x-goog-api-key", j->values[0]};
        }
        break;
    case TARGET_AZURE_OPENAI:
        snprintf(tmp, sizeof tmp, "%s/openai/models?api-version=%s", t->endpoint,
                 t->api_version ? t->api_version : "2024-10-21");
        if (t->api_key) {
            j->values[0] = strdup(t->api_key);
            hdr[(*n)++] = (upstream_header){"api-key", j->values[0]};
        }
        break;
    case TARGET_OPENAI:
    case TARGET_HUGGINGFACE:
    case TARGET_OPENAI_COMPATIBLE:
    case TARGET_CUSTOM_LOCAL:
        snprintf(tmp, sizeof tmp, "%s/models", t->endpoint);
        if (t->api_key) {
            size_t len = strlen(t->api_key) + 8;
            j->values[0] = malloc(len);
            if (!j->values[0]) abort();
            snprintf(j->values[0], len, "Bearer %s", t->api_key);
            hdr[(*n)++] = (upstream_header){"Authorization", j->values[0]};
        }
        break;
    }
    j->url = strdup(tmp);
    if (!j->url || (t->api_key && !j->values[0])) abort();
    return true;
}

static void probe_start(health_prober *p, pl_runtime *rt, size_t idx)
{
    const cfg_target *t = &rt->gw->targets[idx];
    probe_job *j = calloc(1, sizeof *j);
    if (!j) abort();
    upstream_header hdr[2];
    size_t n = 0;
    if (!probe_request(t, j, hdr, &n)) {
        free(j);
        return;
    }
    j->p = p;
    j->rt = rt;
    pl_runtime_ref(rt);
    j->idx = idx;
    j->next = p->jobs;
    if (p->jobs) p->jobs->prev = j;
    p->jobs = j;
    rt->health[idx].probe_in_flight = true;
    unsigned total_s = (unsigned)(t->health_interval_s < PROBE_TIMEOUT_CAP_S ? t->health_interval_s
                                                                             : PROBE_TIMEOUT_CAP_S);
    upstream_opts o = {
        .method = "GET",
        .url = j->url,
        .headers = hdr,
        .n_headers = n,
        .connect_timeout_ms = (unsigned)t->connect_timeout_s * 1000u,
        .first_byte_timeout_ms = total_s * 1000u,
        .total_timeout_ms = total_s * 1000u,
        .udata = j,
        .on_headers = probe_headers,
        .on_data = probe_data,
        .on_done = probe_done,
    };
    j->u = upstream_send(p->w->up, &o);
    if (!j->u) job_free(j); /* no callback will run; tried again at the next interval */
}

static void on_probe_tick(uv_timer_t *tm)
{
    health_prober *p = tm->data;
    pl_worker *w = p->w;
    if (!w->bound || !w->up) return;
    pl_runtime *rt = w->bound->rt;
    int64_t now = (int64_t)(clock_mono_ns() / 1000000u);
    for (size_t i = 0; i < rt->gw->n_targets; i++) {
        const cfg_target *t = &rt->gw->targets[i];
        health_target *h = &rt->health[i];
        if (t->health_interval_s <= 0 || t->type == TARGET_MOCK || h->probe_in_flight) continue;
        if (now < h->next_probe_ms) continue;
        h->next_probe_ms = now + (int64_t)t->health_interval_s * 1000;
        probe_start(p, rt, i);
    }
}

void health_probes_start(pl_worker *w)
{
    if (w->id != 0 || w->prober) return;
    health_prober *p = calloc(1, sizeof *p);
    if (!p) abort();
    p->w = w;
    uv_timer_init(w->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_probe_tick, PROBE_TICK_MS, PROBE_TICK_MS);
    w->prober = p;
}

static void on_prober_closed(uv_handle_t *hd)
{
    free(hd->data);
}

void health_probes_stop(pl_worker *w)
{
    health_prober *p = w->prober;
    if (!p) return;
    w->prober = NULL;
    while (p->jobs) {
        probe_job *j = p->jobs;
        upstream_cancel(j->u);
        job_free(j);
    }
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_prober_closed);
}
