/* etcd's zap JSON lines (see log.h). The format follows zap's JSON encoder
 * as etcd configures it, so tools that parse etcd's logs parse ours. */
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/mem.h"

enum log_level log_threshold = LOG_INFO;

#define MAX_OUTPUTS 16

/* Output fds; those above 2 were opened here. Until log_set_outputs runs
 * everything goes to stderr (etcd's "default"). */
static int out_fd[MAX_OUTPUTS] = {2};
static int n_out = 1;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

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

static void close_owned(const int *fds, int n)
{
    for (int i = 0; i < n; i++)
        if (fds[i] > 2)
            close(fds[i]);
}

void log_reset_outputs(void)
{
    pthread_mutex_lock(&out_lock);
    close_owned(out_fd, n_out);
    out_fd[0] = 2;
    n_out = 1;
    pthread_mutex_unlock(&out_lock);
}

/* etcd (embed/config_logging.go): "default" maps to stderr and may not be
 * combined with anything; "systemd/journal" needs journald's native
 * protocol, which is not built. zap's MergeOutputPaths: duplicates count
 * once and "/dev/null" anywhere discards everything. */
int log_set_outputs(const char *list, char *err, size_t errlen)
{
    char *copy = cairn_strdup(list), *save = NULL, *names[MAX_OUTPUTS];
    int fds[MAX_OUTPUTS], n = 0, nf = 0, rc = 0, devnull = 0;

    for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*t == 0)
            continue;
        if (n == MAX_OUTPUTS) {
            snprintf(err, errlen, "too many log outputs (at most %d)", MAX_OUTPUTS);
            rc = -EINVAL;
            goto out_free;
        }
        names[n++] = t;
    }
    if (n == 0)
        names[n++] = "default";
    for (int i = 0; i < n && n > 1; i++) {
        if (strcmp(names[i], "default") == 0) {
            snprintf(err, errlen, "multi logoutput for \"default\" is not supported yet");
            rc = -EINVAL;
            goto out_free;
        }
    }
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i], "/dev/null") == 0)
            devnull = 1;
        if (strcmp(names[i], "systemd/journal") == 0) {
            snprintf(err, errlen, "--log-outputs=systemd/journal is not supported "
                                  "yet (use stderr: systemd sends it to the journal)");
            rc = -EINVAL;
            goto out_free;
        }
    }
    for (int i = 0; i < n && !devnull; i++) {
        int fd;
        if (strcmp(names[i], "default") == 0 || strcmp(names[i], "stderr") == 0)
            fd = 2;
        else if (strcmp(names[i], "stdout") == 0)
            fd = 1;
        else {
            int dup_name = 0;
            for (int j = 0; j < i; j++)
                dup_name |= strcmp(names[i], names[j]) == 0;
            if (dup_name)
                continue;
            /* zap's file sink: O_WRONLY|O_APPEND|O_CREATE, 0666 */
            fd = open(names[i], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
            if (fd < 0) {
                rc = -errno;
                snprintf(err, errlen, "couldn't open sink \"%s\": open %s: %s",
                         names[i], names[i], strerror(errno));
                close_owned(fds, nf);
                goto out_free;
            }
        }
        int seen = 0;
        for (int j = 0; j < nf; j++)
            seen |= fds[j] == fd;
        if (!seen)
            fds[nf++] = fd;
    }
    pthread_mutex_lock(&out_lock);
    close_owned(out_fd, n_out);
    memcpy(out_fd, fds, (size_t)nf * sizeof *fds);
    n_out = nf;
    pthread_mutex_unlock(&out_lock);
out_free:
    cairn_free(copy);
    return rc;
}

/* A bounded appender: counts what it could not store, as snprintf. */
struct w {
    char *p;
    size_t cap, len;
};

static void put(struct w *w, const char *s, size_t n)
{
    if (w->len < w->cap) {
        size_t room = w->cap - w->len;
        memcpy(w->p + w->len, s, n < room ? n : room);
    }
    w->len += n;
}

static void puts_(struct w *w, const char *s)
{
    put(w, s, strlen(s));
}

/* Length of the valid UTF-8 sequence at @s (at most @n bytes), or 0 when
 * it is invalid (as Go's utf8.DecodeRuneInString: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    uint32_t cp, min;
    if (s[0] < 0xc2 || s[0] > 0xf4)
        return 0;
    if (s[0] < 0xe0) {
        len = 2, cp = s[0] & 0x1f, min = 0x80;
    } else if (s[0] < 0xf0) {
        len = 3, cp = s[0] & 0x0f, min = 0x800;
    } else {
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* zap's JSON string escaping: '"' and '\\', \n \r \t, other control bytes
 * as \u00XX, invalid UTF-8 as \ufffd; everything else verbatim. */
static void put_json_str(struct w *w, const char *str)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)(str ? str : "");
    size_t n = strlen((const char *)s);
    put(w, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && s[run] >= 0x20 && s[run] < 0x80 && s[run] != '"' &&
               s[run] != '\\')
            run++;
        put(w, (const char *)s + i, run - i);
        if ((i = run) == n)
            break;
        unsigned char c = s[i];
        if (c >= 0x80) {
            size_t l = utf8_len(s + i, n - i);
            if (l == 0) {
                puts_(w, "\\ufffd");
                i++;
            } else {
                put(w, (const char *)s + i, l);
                i += l;
            }
            continue;
        }
        char esc[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
        switch (c) {
        case '"': puts_(w, "\\\""); break;
        case '\\': puts_(w, "\\\\"); break;
        case '\n': puts_(w, "\\n"); break;
        case '\r': puts_(w, "\\r"); break;
        case '\t': puts_(w, "\\t"); break;
        default: puts_(w, esc);
        }
        i++;
    }
    put(w, "\"", 1);
}

/* Go's "2006-01-02T15:04:05.000000Z0700" in local time, etcd's ts. */
static void put_ts(struct w *w)
{
    struct timespec now;
    struct tm tm;
    char b[48];
    clock_gettime(CLOCK_REALTIME, &now);
    localtime_r(&now.tv_sec, &tm);
    size_t l = strftime(b, sizeof b, "%Y-%m-%dT%H:%M:%S", &tm);
    long off = tm.tm_gmtoff;
    if (off == 0)
        snprintf(b + l, sizeof b - l, ".%06ldZ", now.tv_nsec / 1000);
    else
        snprintf(b + l, sizeof b - l, ".%06ld%c%02ld%02ld", now.tv_nsec / 1000,
                 off < 0 ? '-' : '+', labs(off) / 3600, labs(off) % 3600 / 60);
    put(w, "\"", 1);
    puts_(w, b);
    put(w, "\"", 1);
}

/* zap's ShortCallerEncoder: the last directory and the file. */
static const char *short_caller(const char *file)
{
    const char *last = strrchr(file, '/');
    if (last == NULL)
        return file;
    const char *p = last;
    while (p > file && p[-1] != '/')
        p--;
    return p;
}

size_t log_format(char *out, size_t cap, enum log_level lvl, const char *file,
                  int line, const char *msg, const struct log_field *f, int n)
{
    static const char *tag[] = {"debug", "info", "warn", "error"};
    struct w w = {out, cap ? cap - 1 : 0, 0};
    char num[32];

    puts_(&w, "{\"level\":\"");
    puts_(&w, tag[lvl]);
    puts_(&w, "\",\"ts\":");
    put_ts(&w);
    snprintf(num, sizeof num, ":%d", line);
    puts_(&w, ",\"caller\":\"");
    puts_(&w, short_caller(file)); /* our own paths: nothing to escape */
    puts_(&w, num);
    puts_(&w, "\",\"msg\":");
    put_json_str(&w, msg);
    for (int i = 0; i < n; i++) {
        put(&w, ",", 1);
        put_json_str(&w, f[i].key);
        put(&w, ":", 1);
        switch (f[i].type) {
        case LOG_F_STR:
            put_json_str(&w, f[i].v.s);
            break;
        case LOG_F_INT:
            snprintf(num, sizeof num, "%" PRId64, f[i].v.i);
            puts_(&w, num);
            break;
        case LOG_F_UINT:
            snprintf(num, sizeof num, "%" PRIu64, f[i].v.u);
            puts_(&w, num);
            break;
        case LOG_F_BOOL:
            puts_(&w, f[i].v.b ? "true" : "false");
            break;
        case LOG_F_STRS:
            put(&w, "[", 1);
            for (int j = 0; j < f[i].v.strs.n; j++) {
                if (j)
                    put(&w, ",", 1);
                put_json_str(&w, f[i].v.strs.v[j]);
            }
            put(&w, "]", 1);
            break;
        }
    }
    puts_(&w, "}");
    if (cap)
        out[w.len < cap ? w.len : cap - 1] = 0;
    return w.len;
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t r = write(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return; /* nowhere to report a failing log output */
        p += r;
        n -= (size_t)r;
    }
}

void log_emit(enum log_level lvl, const char *file, int line, const char *msg,
              const struct log_field *f, int n)
{
    char stack[2048], *buf = stack;
    size_t len = log_format(stack, sizeof stack - 1, lvl, file, line, msg, f, n);
    if (len + 2 > sizeof stack) {
        buf = cairn_malloc(len + 2);
        log_format(buf, len + 1, lvl, file, line, msg, f, n);
    }
    buf[len] = '\n';
    pthread_mutex_lock(&out_lock);
    for (int i = 0; i < n_out; i++)
        write_all(out_fd[i], buf, len + 1);
    pthread_mutex_unlock(&out_lock);
    if (buf != stack)
        cairn_free(buf);
}

void log_write(enum log_level lvl, const char *file, int line, const char *fmt, ...)
{
    char stack[1024], *msg = stack;
    va_list ap;
    va_start(ap, fmt);
    int len = vsnprintf(stack, sizeof stack, fmt, ap);
    va_end(ap);
    if (len < 0)
        len = 0, stack[0] = 0;
    if ((size_t)len >= sizeof stack) {
        msg = cairn_malloc((size_t)len + 1);
        va_start(ap, fmt);
        vsnprintf(msg, (size_t)len + 1, fmt, ap);
        va_end(ap);
    }
    log_emit(lvl, file, line, msg, NULL, 0);
    if (msg != stack)
        cairn_free(msg);
}
