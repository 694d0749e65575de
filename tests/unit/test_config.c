/* Command line and ETCD_* environment parsing (config_parse): etcd's flag
 * names and defaults, flag > environment > default. config_parse prints its
 * errors (and --help) itself; that output is expected noise here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/config.h"

extern char **environ;

/* Every ETCD_* variable is removed before each test, so the caller's
 * environment cannot leak in. */
static int clear_env(void **state)
{
    (void)state;
    for (;;) {
        char name[256];
        int found = 0;
        for (char **e = environ; e && *e; e++) {
            if (strncmp(*e, "ETCD_", 5) != 0)
                continue;
            const char *eq = strchr(*e, '=');
            size_t n = eq ? (size_t)(eq - *e) : strlen(*e);
            if (n >= sizeof name)
                n = sizeof name - 1;
            memcpy(name, *e, n);
            name[n] = 0;
            found = 1;
            break;
        }
        if (!found)
            return 0;
        unsetenv(name); /* environ changes: look again from the start */
    }
}

#define MAXARGS 32

struct parsed {
    struct config c;
    int argc;
    char *argv[MAXARGS + 1];
    int rc;
};

/* Was @p given to config_parse (inside argv or the environment) rather than
 * allocated by it? */
static int borrowed(const struct parsed *p, const char *s, const char *env)
{
    for (int i = 0; i < p->argc; i++)
        if (s >= p->argv[i] && s <= p->argv[i] + strlen(p->argv[i]))
            return 1;
    return env && s == getenv(env);
}

/* Frees what config_parse allocated (the derived data dir and initial
 * cluster), and our argv copies. */
static void done(struct parsed *p)
{
    if (p->c.data_dir && !borrowed(p, p->c.data_dir, "ETCD_DATA_DIR"))
        free((void *)p->c.data_dir);
    if (p->c.initial_cluster &&
        !borrowed(p, p->c.initial_cluster, "ETCD_INITIAL_CLUSTER"))
        free((void *)p->c.initial_cluster);
    for (int i = 0; i < p->argc; i++)
        free(p->argv[i]);
    free(p);
}

/* Parses "cairn" followed by the NULL-terminated arguments. */
static struct parsed *parse(const char *first, ...)
{
    struct parsed *p = calloc(1, sizeof *p);
    va_list ap;
    assert_non_null(p);
    p->argv[p->argc++] = strdup("cairn");
    va_start(ap, first);
    for (const char *a = first; a != NULL; a = va_arg(ap, const char *)) {
        assert_true(p->argc < MAXARGS);
        p->argv[p->argc++] = strdup(a);
    }
    va_end(ap);
    /* config_parse may keep pointers into argv: keep them alive. Its
     * messages and --help go to /dev/null, to keep the test output
     * readable. */
    fflush(stdout);
    fflush(stderr);
    int out = dup(1), err = dup(2), null = open("/dev/null", O_WRONLY);
    assert_true(out >= 0 && err >= 0 && null >= 0);
    dup2(null, 1);
    dup2(null, 2);
    p->rc = config_parse(&p->c, p->argc, p->argv);
    fflush(stdout);
    fflush(stderr);
    dup2(out, 1);
    dup2(err, 2);
    close(out);
    close(err);
    close(null);
    return p;
}

#define PARSE(...) parse(__VA_ARGS__, (const char *)NULL)
#define PARSE0() parse(NULL)

/* rc of parsing these arguments, everything freed */
static int rc_of(struct parsed *p)
{
    int rc = p->rc;
    done(p);
    return rc;
}

#define RC(...) rc_of(PARSE(__VA_ARGS__))

static void test_defaults(void **state)
{
    (void)state;
    struct parsed *p = PARSE0();
    assert_int_equal(p->rc, 0);
    struct config *c = &p->c;
    assert_string_equal(c->name, "default");
    assert_string_equal(c->data_dir, "default.etcd");
    assert_string_equal(c->listen_client_urls, "http://localhost:2379");
    assert_string_equal(c->advertise_client_urls, "http://localhost:2379");
    assert_string_equal(c->listen_peer_urls, "http://localhost:2380");
    assert_string_equal(c->initial_advertise_peer_urls, "http://localhost:2380");
    assert_string_equal(c->initial_cluster, "default=http://localhost:2380");
    assert_string_equal(c->initial_cluster_token, "etcd-cluster");
    assert_string_equal(c->initial_cluster_state, "new");
    assert_string_equal(c->log_level, "info");
    assert_int_equal(c->max_request_bytes, 1572864);
    assert_int_equal(c->max_txn_ops, 128);
    assert_int_equal(c->quota_backend_bytes, 0);
    assert_int_equal(c->snapshot_count, 100000);
    assert_int_equal(c->heartbeat_ms, 100);
    assert_int_equal(c->election_ms, 1000);
    assert_false(c->show_version);
    assert_false(c->show_help);
    done(p);
}

static void test_flag_forms(void **state)
{
    (void)state;
    static const char *forms[][3] = {
        {"--name", "node1", NULL},
        {"--name=node1", NULL, NULL},
        {"-name", "node1", NULL},
        {"-name=node1", NULL, NULL},
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        struct parsed *p = parse(forms[i][0], forms[i][1], forms[i][2]);
        assert_int_equal(p->rc, 0);
        assert_string_equal(p->c.name, "node1");
        /* the derived defaults follow the name */
        assert_string_equal(p->c.data_dir, "node1.etcd");
        assert_string_equal(p->c.initial_cluster, "node1=http://localhost:2380");
        done(p);
    }

    struct parsed *p = PARSE("--data-dir", "/var/lib/x", "--max-txn-ops=5",
                             "-max-request-bytes", "100",
                             "--listen-client-urls=http://127.0.0.1:1,http://127.0.0.1:2",
                             "--advertise-client-urls", "http://127.0.0.1:1",
                             "--initial-advertise-peer-urls", "http://10.0.0.1:2380",
                             "--initial-cluster-state", "existing",
                             "--initial-cluster-token=tok", "--log-level", "warn",
                             "--quota-backend-bytes", "8589934592",
                             "--heartbeat-interval", "50", "--election-timeout=500",
                             "--snapshot-count", "10");
    assert_int_equal(p->rc, 0);
    struct config *c = &p->c;
    assert_string_equal(c->data_dir, "/var/lib/x");
    assert_int_equal(c->max_txn_ops, 5);
    assert_int_equal(c->max_request_bytes, 100);
    assert_string_equal(c->listen_client_urls, "http://127.0.0.1:1,http://127.0.0.1:2");
    assert_string_equal(c->advertise_client_urls, "http://127.0.0.1:1");
    assert_string_equal(c->initial_cluster, "default=http://10.0.0.1:2380");
    assert_string_equal(c->initial_cluster_state, "existing");
    assert_string_equal(c->initial_cluster_token, "tok");
    assert_string_equal(c->log_level, "warn");
    assert_int_equal(c->quota_backend_bytes, 8589934592LL);
    assert_int_equal(c->heartbeat_ms, 50);
    assert_int_equal(c->election_ms, 500);
    assert_int_equal(c->snapshot_count, 10);
    done(p);

    /* a value may itself start with '-' or contain '=' */
    p = PARSE("--name", "-x", "--initial-cluster", "a=http://h:1,b=http://h:2");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "-x");
    assert_string_equal(p->c.initial_cluster, "a=http://h:1,b=http://h:2");
    done(p);
    /* "--flag=" sets an empty value */
    p = PARSE("--log-level=");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.log_level, "");
    done(p);
    /* the last occurrence wins */
    p = PARSE("--name", "a", "--name=b", "--max-txn-ops", "1", "--max-txn-ops", "2");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "b");
    assert_int_equal(p->c.max_txn_ops, 2);
    done(p);
}

static void test_bool_flags(void **state)
{
    (void)state;
    struct parsed *p = PARSE("--version");
    assert_int_equal(p->rc, 1);
    assert_true(p->c.show_version);
    done(p);
    p = PARSE("-version=true");
    assert_int_equal(p->rc, 1);
    done(p);
    p = PARSE("--version=1");
    assert_int_equal(p->rc, 1);
    done(p);
    p = PARSE("--version=false");
    assert_int_equal(p->rc, 0);
    assert_false(p->c.show_version);
    done(p);
    p = PARSE("--version=0", "--name", "n");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "n");
    done(p);
    assert_int_equal(RC("--version=maybe"), 2);
    /* a bool flag takes no separate value: "true" is a stray argument */
    assert_int_equal(RC("--version", "true"), 2);

    p = PARSE("--help");
    assert_int_equal(p->rc, 1);
    assert_true(p->c.show_help);
    done(p);
    assert_int_equal(RC("-help"), 1);
    assert_int_equal(RC("--name", "x", "--help"), 1);
    assert_int_equal(RC("--help=false"), 0);
    assert_int_equal(RC("--help=yes"), 2);
    /* help and version win over later validation errors */
    assert_int_equal(RC("--help", "--initial-cluster-state", "bogus"), 1);
    assert_int_equal(RC("--version", "--max-txn-ops", "0"), 1);
}

static void test_env(void **state)
{
    (void)state;
    struct parsed *p;

    setenv("ETCD_NAME", "envname", 1);
    setenv("ETCD_MAX_TXN_OPS", "7", 1);
    setenv("ETCD_INITIAL_CLUSTER_TOKEN", "envtok", 1);
    setenv("ETCD_LISTEN_CLIENT_URLS", "http://127.0.0.1:12379", 1);
    p = PARSE0();
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "envname");
    assert_string_equal(p->c.data_dir, "envname.etcd");
    assert_string_equal(p->c.initial_cluster, "envname=http://localhost:2380");
    assert_int_equal(p->c.max_txn_ops, 7);
    assert_string_equal(p->c.initial_cluster_token, "envtok");
    assert_string_equal(p->c.listen_client_urls, "http://127.0.0.1:12379");
    done(p);

    /* a flag wins over the environment, in every form */
    p = PARSE("--name", "flagname", "-max-txn-ops=9");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "flagname");
    assert_string_equal(p->c.data_dir, "flagname.etcd");
    assert_int_equal(p->c.max_txn_ops, 9);
    assert_string_equal(p->c.initial_cluster_token, "envtok"); /* not given */
    done(p);

    setenv("ETCD_DATA_DIR", "/env/dir", 1);
    setenv("ETCD_INITIAL_CLUSTER", "x=http://h:1", 1);
    p = PARSE0();
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.data_dir, "/env/dir");
    assert_string_equal(p->c.initial_cluster, "x=http://h:1");
    done(p);
    p = PARSE("--data-dir=/flag/dir");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.data_dir, "/flag/dir");
    assert_string_equal(p->c.initial_cluster, "x=http://h:1");
    done(p);

    /* invalid values from the environment are usage errors too */
    setenv("ETCD_MAX_TXN_OPS", "many", 1);
    assert_int_equal(RC(NULL), 2);
    /* ... unless a flag overrides them */
    assert_int_equal(RC("--max-txn-ops", "3"), 0);
    unsetenv("ETCD_MAX_TXN_OPS");
    setenv("ETCD_INITIAL_CLUSTER_STATE", "sideways", 1);
    assert_int_equal(RC(NULL), 2);
    unsetenv("ETCD_INITIAL_CLUSTER_STATE");

    /* bools from the environment */
    setenv("ETCD_VERSION", "true", 1);
    assert_int_equal(RC(NULL), 1);
    setenv("ETCD_VERSION", "false", 1);
    assert_int_equal(RC(NULL), 0);
    unsetenv("ETCD_VERSION");
    /* ignored ones are ignored there too */
    setenv("ETCD_ENABLE_PPROF", "true", 1);
    setenv("ETCD_LOGGER", "zap", 1);
    assert_int_equal(RC(NULL), 0);
    clear_env(NULL);
}

static void test_usage_errors(void **state)
{
    (void)state;
    assert_int_equal(RC("--bogus"), 2);
    assert_int_equal(RC("--bogus=1"), 2);
    assert_int_equal(RC("-bogus", "x"), 2);
    assert_int_equal(RC("--name", "x", "--no-such-flag"), 2);
    /* names match whole */
    assert_int_equal(RC("--nam", "x"), 2);
    assert_int_equal(RC("--names", "x"), 2);
    /* positional arguments */
    assert_int_equal(RC("serve"), 2);
    assert_int_equal(RC("--name", "x", "extra"), 2);
    /* a missing value */
    assert_int_equal(RC("--name"), 2);
    assert_int_equal(RC("--max-txn-ops"), 2);
    /* bad integers */
    assert_int_equal(RC("--max-txn-ops", "abc"), 2);
    assert_int_equal(RC("--max-txn-ops", "12x"), 2);
    assert_int_equal(RC("--max-txn-ops", ""), 2);
    assert_int_equal(RC("--max-txn-ops", "99999999999999999999999"), 2);
    assert_int_equal(RC("--max-txn-ops", "0"), 2);
    assert_int_equal(RC("--max-txn-ops=-1"), 2);
    assert_int_equal(RC("--max-request-bytes", "0"), 2);
    assert_int_equal(RC("--max-request-bytes", "-5"), 2);
    assert_int_equal(RC("--max-request-bytes", "1"), 0);
    /* bad enums */
    assert_int_equal(RC("--initial-cluster-state", "old"), 2);
    assert_int_equal(RC("--initial-cluster-state=existing"), 0);
}

static void test_unsupported_and_ignored(void **state)
{
    (void)state;
    /* features not built: refuse to start rather than differ silently */
    assert_int_equal(RC("--cert-file", "x"), 2);
    assert_int_equal(RC("--cert-file=x"), 2);
    assert_int_equal(RC("--key-file", "k", "--name", "n"), 2);
    assert_int_equal(RC("--discovery", "https://x"), 2);
    assert_int_equal(RC("--auto-tls"), 2);
    assert_int_equal(RC("--client-cert-auth=true"), 2);
    assert_int_equal(RC("--force-new-cluster"), 2);
    /* a bool feature turned off is fine */
    assert_int_equal(RC("--auto-tls=false"), 0);
    assert_int_equal(RC("--client-cert-auth=false", "--peer-auto-tls=false"), 0);
    setenv("ETCD_CERT_FILE", "/x.pem", 1);
    assert_int_equal(RC(NULL), 2);
    unsetenv("ETCD_CERT_FILE");
    setenv("ETCD_AUTO_TLS", "true", 1);
    assert_int_equal(RC(NULL), 2);
    setenv("ETCD_AUTO_TLS", "false", 1);
    assert_int_equal(RC(NULL), 0);
    /* a flag turning it off wins over the environment */
    setenv("ETCD_AUTO_TLS", "true", 1);
    assert_int_equal(RC("--auto-tls=false"), 0);
    clear_env(NULL);

    /* harmless for one member: accepted and ignored */
    struct parsed *p =
        PARSE("--logger", "zap", "--log-outputs", "stderr", "--enable-v2", "false",
              "--max-wals", "5", "--max-snapshots=5", "--strict-reconfig-check",
              "--enable-pprof=true", "--pre-vote", "--cors", "*",
              "--grpc-keepalive-min-time", "5s", "--name", "kept");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "kept");
    done(p);
}

static void test_split(void **state)
{
    (void)state;
    char *out[4];
    char a[] = "http://a:1,http://b:2, http://c:3,,";
    assert_int_equal(config_split(a, out, 4), 3);
    assert_string_equal(out[0], "http://a:1");
    assert_string_equal(out[1], "http://b:2");
    assert_string_equal(out[2], "http://c:3");
    char b[] = "x,y,z,w,v";
    assert_int_equal(config_split(b, out, 4), 4);
    assert_string_equal(out[3], "w");
    char c[] = "";
    assert_int_equal(config_split(c, out, 4), 0);
    char d[] = " , ,";
    assert_int_equal(config_split(d, out, 4), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, clear_env, clear_env)
        T(test_defaults),
        T(test_flag_forms),
        T(test_bool_flags),
        T(test_env),
        T(test_usage_errors),
        T(test_unsupported_and_ignored),
        T(test_split),
#undef T
    };
    return cmocka_run_group_tests(tests, clear_env, NULL);
}
