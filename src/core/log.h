/* Levelled logging in etcd's zap JSON format: one object per line,
 *
 *   {"level":"info","ts":"2024-05-01T10:00:00.123456Z","caller":"server/main.c:42",
 *    "msg":"...", <fields>}
 *
 * (etcd 3.5+'s logutil.DefaultZapLoggerConfig: lowercase level, local time
 * with microseconds and a Z0700 zone, short caller "dir/file:line"). The
 * level is checked before any formatting, so debug lines on hot paths cost
 * one comparison when disabled. Lines are written whole (one write(2) per
 * output) under a lock: any thread may log. */
#ifndef CORE_LOG_H
#define CORE_LOG_H

#include <stddef.h>
#include <stdint.h>

enum log_level { LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR };

extern enum log_level log_threshold;

/* Parses etcd's --log-level names (debug, info, warn, error, dpanic,
 * panic, fatal). Returns 0 or -1 for an unknown name. */
int log_set_level(const char *name);

/* Sets where lines go from etcd's --log-outputs list (comma-separated):
 * "default" and "stderr" = standard error, "stdout", "/dev/null" (discards
 * everything), or file paths (created, appended to). Duplicates count once,
 * as zap merges them. Until this is called lines go to stderr. On error
 * the outputs are unchanged and @err (if not NULL) holds etcd's message.
 * Errors: -EINVAL (bad list), -errno (a file cannot be opened). */
int log_set_outputs(const char *list, char *err, size_t errlen);

/* Closes the files opened by log_set_outputs; lines go to stderr again. */
void log_reset_outputs(void);

/* Typed fields of a structured line. Values are borrowed for the call. */
enum log_field_type { LOG_F_STR, LOG_F_INT, LOG_F_UINT, LOG_F_BOOL, LOG_F_STRS };
struct log_field {
    const char *key;
    enum log_field_type type;
    union {
        const char *s;  /* NULL is written as "" */
        int64_t i;
        uint64_t u;
        int b;
        struct {
            const char *const *v;
            int n;
        } strs;
    } v;
};
#define LOG_STR(k, x) ((struct log_field){(k), LOG_F_STR, {.s = (x)}})
#define LOG_INT(k, x) ((struct log_field){(k), LOG_F_INT, {.i = (int64_t)(x)}})
#define LOG_UINT(k, x) ((struct log_field){(k), LOG_F_UINT, {.u = (uint64_t)(x)}})
#define LOG_BOOL(k, x) ((struct log_field){(k), LOG_F_BOOL, {.b = !!(x)}})
#define LOG_STRS(k, arr, cnt)                                                \
    ((struct log_field){(k), LOG_F_STRS,                                     \
                        {.strs = {(const char *const *)(arr), (cnt)}}})

/* printf-style message, no fields. */
void log_write(enum log_level lvl, const char *file, int line, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));
/* A fixed message and @n fields. */
void log_emit(enum log_level lvl, const char *file, int line, const char *msg,
              const struct log_field *f, int n);
/* The line log_emit would write (no newline), into @out; returns its
 * length, possibly more than @cap - 1 (then truncated, as snprintf). For
 * tests. */
size_t log_format(char *out, size_t cap, enum log_level lvl, const char *file,
                  int line, const char *msg, const struct log_field *f, int n);

#define log_at(lvl, ...)                                                    \
    do {                                                                    \
        if ((lvl) >= log_threshold)                                         \
            log_write((lvl), __FILE__, __LINE__, __VA_ARGS__);              \
    } while (0)
#define log_debug(...) log_at(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_at(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_at(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_at(LOG_ERROR, __VA_ARGS__)

/* Structured: log_infow("opened backend db", LOG_STR("path", p),
 * LOG_STR("took", t)); at least one field. The fields are built on the
 * stack only when the level is enabled. */
#define log_atw(lvl, msg, ...)                                              \
    do {                                                                    \
        if ((lvl) >= log_threshold) {                                       \
            const struct log_field log_f_[] = {__VA_ARGS__};                \
            log_emit((lvl), __FILE__, __LINE__, (msg), log_f_,              \
                     (int)(sizeof log_f_ / sizeof log_f_[0]));              \
        }                                                                   \
    } while (0)
#define log_debugw(msg, ...) log_atw(LOG_DEBUG, msg, __VA_ARGS__)
#define log_infow(msg, ...) log_atw(LOG_INFO, msg, __VA_ARGS__)
#define log_warnw(msg, ...) log_atw(LOG_WARN, msg, __VA_ARGS__)
#define log_errorw(msg, ...) log_atw(LOG_ERROR, msg, __VA_ARGS__)

#endif
