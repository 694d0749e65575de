/* The zap JSON line format (log_format) and --log-outputs (log_set_outputs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static char line[4096];

/* Formats and checks the fixed prefix; returns what follows "msg":. */
static const char *fmt(enum log_level lvl, const char *msg,
                       const struct log_field *f, int n)
{
    size_t len = log_format(line, sizeof line, lvl, "src/server/main.c", 42, msg, f, n);
    assert_int_equal(len, strlen(line));
    regex_t re;
    /* etcd: "ts":"2006-01-02T15:04:05.000000Z0700" */
    assert_int_equal(regcomp(&re,
                             "^\\{\"level\":\"[a-z]+\",\"ts\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T"
                             "[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}(Z|[-+][0-9]{4})\","
                             "\"caller\":\"server/main\\.c:42\",\"msg\":",
                             REG_EXTENDED),
                     0);
    regmatch_t m;
    int rc = regexec(&re, line, 1, &m, 0);
    regfree(&re);
    if (rc != 0)
        fail_msg("bad prefix: %s", line);
    return line + m.rm_eo;
}

static void test_format(void **state)
{
    (void)state;
    assert_string_equal(fmt(LOG_INFO, "ready to serve client requests", NULL, 0),
                        "\"ready to serve client requests\"}");
    assert_memory_equal(line, "{\"level\":\"info\",", 16);
    fmt(LOG_WARN, "x", NULL, 0);
    assert_memory_equal(line, "{\"level\":\"warn\",", 16);
    fmt(LOG_ERROR, "x", NULL, 0);
    assert_memory_equal(line, "{\"level\":\"error\",", 17);
    fmt(LOG_DEBUG, "x", NULL, 0);
    assert_memory_equal(line, "{\"level\":\"debug\",", 17);

    const char *args[] = {"cairn", "--name", "a \"b\""};
    struct log_field f[] = {
        LOG_STR("address", "127.0.0.1:2379"), LOG_INT("n", -5),
        LOG_UINT("u", UINT64_MAX),           LOG_BOOL("b", 7),
        LOG_STRS("args", args, 3),           LOG_STRS("none", NULL, 0),
        LOG_STR("null", NULL),
    };
    assert_string_equal(fmt(LOG_INFO, "m", f, 7),
                        "\"m\",\"address\":\"127.0.0.1:2379\",\"n\":-5,"
                        "\"u\":18446744073709551615,\"b\":true,"
                        "\"args\":[\"cairn\",\"--name\",\"a \\\"b\\\"\"],\"none\":[],"
                        "\"null\":\"\"}");
}

static void test_escaping(void **state)
{
    (void)state;
    /* zap: quote, backslash, \n \r \t, other controls as \u00xx, invalid
     * UTF-8 as \ufffd, valid UTF-8 and DEL verbatim */
    assert_string_equal(fmt(LOG_INFO, "a\"b\\c\nd\re\tf\x01g\x1f\x7f", NULL, 0),
                        "\"a\\\"b\\\\c\\nd\\re\\tf\\u0001g\\u001f\x7f\"}");
    assert_string_equal(fmt(LOG_INFO, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", NULL, 0),
                        "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}");
    /* lone continuation, truncated sequence, overlong, surrogate */
    assert_string_equal(fmt(LOG_INFO, "\x80|\xc3|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80", NULL, 0),
                        "\"\\ufffd|\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
                        "\\ufffd\\ufffd\\ufffd\\ufffd\"}");
    struct log_field f[] = {LOG_STR("k\"ey", "v\nal")};
    assert_string_equal(fmt(LOG_INFO, "m", f, 1), "\"m\",\"k\\\"ey\":\"v\\nal\"}");
}

static void test_truncation(void **state)
{
    (void)state;
    char small[40], big[4096];
    size_t full = log_format(big, sizeof big, LOG_INFO, "a/b.c", 1, "hello world", NULL, 0);
    size_t n = log_format(small, sizeof small, LOG_INFO, "a/b.c", 1, "hello world", NULL, 0);
    assert_int_equal(n, full);
    assert_int_equal(strlen(small), sizeof small - 1);
    assert_memory_equal(small, big, sizeof small - 1);
    /* caller without directories */
    log_format(big, sizeof big, LOG_INFO, "b.c", 9, "m", NULL, 0);
    assert_non_null(strstr(big, "\"caller\":\"b.c:9\""));
}

static void test_levels(void **state)
{
    (void)state;
    assert_int_equal(log_set_level("debug"), 0);
    assert_int_equal(log_threshold, LOG_DEBUG);
    assert_int_equal(log_set_level("fatal"), 0);
    assert_int_equal(log_threshold, LOG_ERROR);
    assert_int_equal(log_set_level("verbose"), -1);
    assert_int_equal(log_threshold, LOG_ERROR);
    assert_int_equal(log_set_level("info"), 0);
}

static char *slurp(const char *path)
{
    static char buf[8192];
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    assert_true(n >= 0);
    buf[n] = 0;
    return buf;
}

static void test_outputs(void **state)
{
    (void)state;
    char err[256], a[] = "/tmp/cairn-test-log-XXXXXX", b[] = "/tmp/cairn-test-log-XXXXXX";
    close(mkstemp(a));
    close(mkstemp(b));
    char list[128];
    /* two files (one named twice): each line once in each */
    snprintf(list, sizeof list, "%s,%s,%s", a, b, a);
    assert_int_equal(log_set_outputs(list, err, sizeof err), 0);
    log_infow("to files", LOG_INT("n", 1));
    log_debug("not at info");
    log_reset_outputs();
    char *s = slurp(a);
    assert_non_null(strstr(s, "\"msg\":\"to files\",\"n\":1}\n"));
    assert_null(strstr(strstr(s, "to files") + 1, "to files"));
    assert_null(strstr(s, "not at info"));
    assert_non_null(strstr(slurp(b), "\"msg\":\"to files\""));

    /* "/dev/null" anywhere discards everything */
    snprintf(list, sizeof list, "%s,/dev/null", a);
    assert_int_equal(log_set_outputs(list, err, sizeof err), 0);
    log_info("discarded");
    log_reset_outputs();
    assert_null(strstr(slurp(a), "discarded"));

    /* etcd's errors; outputs unchanged on error */
    assert_int_equal(log_set_outputs("default,stderr", err, sizeof err), -EINVAL);
    assert_string_equal(err, "multi logoutput for \"default\" is not supported yet");
    assert_int_equal(log_set_outputs("/nonexistent/dir/x.log", err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "/nonexistent/dir/x.log"));
    assert_int_equal(log_set_outputs("systemd/journal", err, sizeof err), -EINVAL);
    /* accepted */
    assert_int_equal(log_set_outputs("default", err, sizeof err), 0);
    assert_int_equal(log_set_outputs("stderr,stdout", err, sizeof err), 0);
    assert_int_equal(log_set_outputs("", err, sizeof err), 0);
    log_reset_outputs();
    unlink(a);
    unlink(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),     cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_truncation), cmocka_unit_test(test_levels),
        cmocka_unit_test(test_outputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
