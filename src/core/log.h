/* log.h — process log to stderr: one line per event, text or JSON (chosen at start), safe to
 * call from any thread (each line is one write()). The request access log lives in obs/. */
#ifndef CTXGATE_CORE_LOG_H
#define CTXGATE_CORE_LOG_H

typedef enum { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR } log_level;

void log_set_level(log_level lvl);
log_level log_get_level(void);
void log_set_json(int json);
int log_level_parse(const char *name, log_level *out); /* 0 ok, -1 unknown name */
void log_msg(log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
