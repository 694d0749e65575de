/* Levelled logging to stderr. The level is checked before any formatting,
 * so debug lines on hot paths cost one comparison when disabled. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_threshold;

/* Parses etcd's --log-level names (debug, info, warn, error, panic, fatal).
 * Returns 0 or -1 for an unknown name. */
int log_set_level(const char *name);
void log_write(enum log_level lvl, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_at(lvl, ...)                                                    \
    do {                                                                    \
        if ((lvl) >= log_threshold)                                         \
            log_write((lvl), __VA_ARGS__);                                  \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

#endif
