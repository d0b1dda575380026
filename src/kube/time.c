/* time.c — Kubernetes time stamps (RFC 3339 Time and MicroTime), jittered exponential backoff,
 * and the small helpers the other files of src/kube/ share (random numbers, copies, cache keys). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kube/kube_internal.h"

void kube_time_now(char out[32], bool micro)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    if (micro)
        snprintf(out + n, 32 - n, ".%06ldZ", (long)(ts.tv_nsec / 1000));
    else
        snprintf(out + n, 32 - n, "Z");
}

uint64_t kube_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* xorshift64*: not for secrets, only for jitter and watch timeouts */
static _Thread_local uint64_t rand_state;

uint32_t kube_rand_below(uint32_t n)
{
    if (!rand_state) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        rand_state = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)ts.tv_sec ^
                     ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)&rand_state;
        if (!rand_state) rand_state = 0x9e3779b97f4a7c15ull;
    }
    rand_state ^= rand_state >> 12;
    rand_state ^= rand_state << 25;
    rand_state ^= rand_state >> 27;
    uint64_t r = rand_state * 0x2545f4914f6cdd1dull;
    return n ? (uint32_t)((r >> 32) % n) : 0;
}

unsigned kube_backoff_ms(unsigned attempt, unsigned base_ms, unsigned cap_ms)
{
    uint64_t d = base_ms;
    for (unsigned i = 0; i < attempt && d < cap_ms; i++)
        d *= 2;
    if (d > cap_ms) d = cap_ms;
    if (d == 0) return 0;
    /* d * [0.5, 1.0): half fixed, half random */
    uint64_t half = d / 2;
    uint64_t span = d - half; /* >= 1 */
    return (unsigned)(half + kube_rand_below((uint32_t)(span > UINT32_MAX ? UINT32_MAX : span)));
}

char *kube_strdup(const char *s)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) abort();
    return d;
}

char *kube_cache_key(const char *ns, const char *name)
{
    size_t a = ns ? strlen(ns) : 0, b = strlen(name);
    char *k = malloc(a + b + 2);
    if (!k) abort();
    if (a) {
        memcpy(k, ns, a);
        k[a++] = '/';
    }
    memcpy(k + a, name, b + 1);
    return k;
}

char *kube_object_key(const json_t *obj)
{
    const json_t *md = json_object_get(obj, "metadata");
    const char *name = json_string_value(json_object_get(md, "name"));
    if (!name || !name[0]) return NULL;
    return kube_cache_key(json_string_value(json_object_get(md, "namespace")), name);
}

const char *kube_object_rv(const json_t *obj)
{
    return json_string_value(json_object_get(json_object_get(obj, "metadata"), "resourceVersion"));
}
