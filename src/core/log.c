/* log.c — process log. Level and format are process-wide settings changed only at start or on
 * reload; they are read with relaxed atomics on every call. */
#include "core/log.h"

#include "core/utf8.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static _Atomic int g_level = LOG_INFO;
static _Atomic int g_json = 0;
static const char *const names[] = {"debug", "info", "warn", "error"};

void log_set_level(log_level lvl)
{
    atomic_store_explicit(&g_level, (int)lvl, memory_order_relaxed);
}

log_level log_get_level(void)
{
    return (log_level)atomic_load_explicit(&g_level, memory_order_relaxed);
}

void log_set_json(int json)
{
    atomic_store_explicit(&g_json, json, memory_order_relaxed);
}

int log_level_parse(const char *name, log_level *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, names[i]) == 0) {
            *out = (log_level)i;
            return 0;
        }
    }
    return -1;
}

void log_msg(log_level lvl, const char *fmt, ...)
{
    if ((int)lvl < atomic_load_explicit(&g_level, memory_order_relaxed)) return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);

    char line[2300];
    int n;
    if (atomic_load_explicit(&g_json, memory_order_relaxed)) {
        /* jansson encodes only UTF-8: other bytes (and a character cut by the buffer above)
         * become U+FFFD rather than losing the line */
        buf fixed = BUF_INIT;
        size_t mlen = strlen(msg);
        if (!utf8_valid(msg, mlen)) utf8_append_repaired(&fixed, msg, mlen, 3 * sizeof msg);
        json_t *o = json_pack("{s:s, s:s, s:s}", "ts", when, "level", names[lvl], "msg",
                              fixed.data ? fixed.data : msg);
        buf_free(&fixed);
        char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
        n = snprintf(line, sizeof line, "%s\n", s ? s : "{}");
        free(s);
        json_decref(o);
    } else {
        n = snprintf(line, sizeof line, "%s %-5s %s\n", when, names[lvl], msg);
    }
    if (n > (int)sizeof line) n = (int)sizeof line;
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}
