#include "core/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

enum log_level log_threshold = LOG_INFO;

int log_set_level(const char *name)
{
    static const struct {
        const char *name;
        enum log_level lvl;
    } names[] = {{"debug", LOG_DEBUG}, {"info", LOG_INFO},
                 {"warn", LOG_WARN},   {"error", LOG_ERROR},
                 {"dpanic", LOG_ERROR}, {"panic", LOG_ERROR},
                 {"fatal", LOG_ERROR}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i].name) == 0) {
            log_threshold = names[i].lvl;
            return 0;
        }
    }
    return -1;
}

void log_write(enum log_level lvl, const char *fmt, ...)
{
    static const char *tag[] = {"debug", "info", "warn", "error"};
    char ts[32];
    struct timespec now;
    struct tm tm;
    va_list ap;

    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    flockfile(stderr);
    fprintf(stderr, "%s.%03ldZ %s ", ts, now.tv_nsec / 1000000, tag[lvl]);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    funlockfile(stderr);
}
