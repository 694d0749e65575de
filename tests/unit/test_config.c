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

/* Frees what config_parse allocated, and our argv copies. */
static void done(struct parsed *p)
{
    config_free(&p->c);
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
    setenv("ETCD_EXPERIMENTAL_ENCRYPTION_KEY_FILE", "/env/keys", 1);
    p = PARSE0();
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.encryption_key_file, "/env/keys");
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
    assert_int_equal(RC("--discovery", "https://x"), 2);
    assert_int_equal(RC("--discovery-srv", "example.com"), 2);
    /* peer TLS and cluster flags are parsed into the configuration */
    struct parsed *pt =
        PARSE("--peer-cert-file", "/c.pem", "--peer-key-file=/k.pem",
              "--peer-trusted-ca-file", "/ca.pem", "--peer-client-cert-auth",
              "--peer-cert-allowed-cn", "member", "--force-new-cluster",
              "--strict-reconfig-check=false", "--enable-grpc-gateway=false");
    assert_int_equal(pt->rc, 0);
    assert_string_equal(pt->c.peer_cert_file, "/c.pem");
    assert_string_equal(pt->c.peer_key_file, "/k.pem");
    assert_string_equal(pt->c.peer_trusted_ca_file, "/ca.pem");
    assert_string_equal(pt->c.peer_cert_allowed_cn, "member");
    assert_int_equal(pt->c.peer_client_cert_auth, 1);
    assert_int_equal(pt->c.force_new_cluster, 1);
    assert_int_equal(pt->c.strict_reconfig_check, 0);
    assert_int_equal(pt->c.enable_grpc_gateway, 0);
    done(pt);
    pt = PARSE(NULL);
    assert_int_equal(pt->c.strict_reconfig_check, 1); /* etcd's default */
    assert_int_equal(pt->c.enable_grpc_gateway, 1);
    assert_int_equal(pt->c.peer_auto_tls, 0);
    done(pt);
    setenv("ETCD_PEER_AUTO_TLS", "true", 1);
    pt = PARSE(NULL);
    assert_int_equal(pt->c.peer_auto_tls, 1);
    done(pt);
    /* a flag wins over the environment */
    pt = PARSE("--peer-auto-tls=false");
    assert_int_equal(pt->c.peer_auto_tls, 0);
    done(pt);
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

static void test_client_tls_flags(void **state)
{
    (void)state;
    struct parsed *p = PARSE("--cert-file", "c.pem", "--key-file=k.pem",
                             "--trusted-ca-file", "ca.pem", "--client-cert-auth",
                             "--client-crl-file", "crl.pem", "--auto-tls=false",
                             "--cipher-suites",
                             "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,TLS_AES_128_GCM_SHA256",
                             "--tls-min-version", "TLS1.2", "--tls-max-version",
                             "TLS1.3");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.cert_file, "c.pem");
    assert_string_equal(p->c.key_file, "k.pem");
    assert_string_equal(p->c.trusted_ca_file, "ca.pem");
    assert_string_equal(p->c.client_crl_file, "crl.pem");
    assert_int_equal(p->c.client_cert_auth, 1);
    assert_int_equal(p->c.auto_tls, 0);
    done(p);
    setenv("ETCD_AUTO_TLS", "true", 1);
    p = PARSE0();
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->c.auto_tls, 1);
    done(p);
    clear_env(NULL);
    /* etcd 3.5's Config.Validate: "failed to verify flags" (rc 3) */
    p = PARSE("--tls-min-version", "TLS1.3", "--tls-max-version", "TLS1.2");
    assert_int_equal(p->rc, 3);
    assert_string_equal(p->c.error,
                        "min version (TLS1.3) is greater than max version (TLS1.2)");
    done(p);
    p = PARSE("--tls-max-version", "TLS1.0");
    assert_int_equal(p->rc, 3);
    assert_string_equal(p->c.error, "unexpected TLS version \"TLS1.0\" "
                                    "(must be one of: TLS1.2, TLS1.3)");
    done(p);
    /* cipher names are checked when listening, as etcd does */
    assert_int_equal(RC("--cipher-suites", "nope"), 0);
    p = PARSE("--tls-min-version", "TLS1.3", "--cipher-suites",
              "TLS_RSA_WITH_AES_128_GCM_SHA256");
    assert_int_equal(p->rc, 3);
    assert_string_equal(p->c.error, "cipher suites cannot be configured when "
                                    "only TLS1.3 is enabled");
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

/* ---- --config-file: etcd's YAML keys (embed.Config's json tags). The
 * expected error texts are etcd 3.4.23's own, taken from running it on the
 * same files. */

static char cf_path[64];

/* Writes @yaml to a fresh temporary file; cf_path names it. */
static const char *cf(const char *yaml)
{
    snprintf(cf_path, sizeof cf_path, "/tmp/cairn-test-cf-XXXXXX");
    int fd = mkstemp(cf_path);
    assert_true(fd >= 0);
    size_t n = strlen(yaml);
    assert_int_equal(write(fd, yaml, n), (ssize_t)n);
    close(fd);
    return cf_path;
}

static char cf_flag[96];
static const char *cf_arg(const char *yaml)
{
    snprintf(cf_flag, sizeof cf_flag, "--config-file=%s", cf(yaml));
    return cf_flag;
}

static void test_config_file_keys(void **state)
{
    (void)state;
    struct parsed *p = PARSE(cf_arg(
        "# etcd's sample layout\n"
        "name: 'node-1'\n"
        "data-dir: /var/lib/cairn\n"
        "listen-client-urls: http://127.0.0.1:2379,http://10.0.0.1:2379\n"
        "advertise-client-urls: http://10.0.0.1:2379\n"
        "listen-peer-urls: http://10.0.0.1:2380\n"
        "initial-advertise-peer-urls: http://10.0.0.1:2380\n"
        "initial-cluster-token: tok\n"
        "initial-cluster-state: existing\n"
        "quota-backend-bytes: 8589934592\n"
        "auto-compaction-mode: revision\n"
        "auto-compaction-retention: \"1000\"\n"
        "max-request-bytes: 10485760\n"
        "max-txn-ops: 0x100\n"
        "heartbeat-interval: 50\n"
        "election-timeout: 500\n"
        "snapshot-count: 10000\n"
        "log-level: warn\n"
        "logger: zap\n"
        "log-outputs: [stderr, /tmp/x.log]\n"
        "listen-metrics-urls: http://127.0.0.1:2381\n"
        "experimental-watch-progress-notify-interval: 5000000000\n"
        "enable-v2: false\n"
        "max-wals: 5\n"
        "strict-reconfig-check: true\n"
        "enable-grpc-gateway: false\n"
        "client-transport-security:\n"
        "  cert-file:\n"
        "  client-cert-auth: false\n"
        "no-such-key: [1, 2]\n"));
    unlink(cf_path);
    if (p->rc != 0)
        print_error("config_parse: %s\n", p->c.error);
    assert_int_equal(p->rc, 0);
    struct config *c = &p->c;
    assert_true(c->from_file);
    assert_int_equal(c->enable_grpc_gateway, 0);
    assert_string_equal(c->name, "node-1");
    assert_string_equal(c->data_dir, "/var/lib/cairn");
    assert_string_equal(c->listen_client_urls, "http://127.0.0.1:2379,http://10.0.0.1:2379");
    assert_string_equal(c->advertise_client_urls, "http://10.0.0.1:2379");
    assert_string_equal(c->listen_peer_urls, "http://10.0.0.1:2380");
    assert_string_equal(c->initial_advertise_peer_urls, "http://10.0.0.1:2380");
    assert_string_equal(c->initial_cluster, "node-1=http://10.0.0.1:2380");
    assert_string_equal(c->initial_cluster_token, "tok");
    assert_string_equal(c->initial_cluster_state, "existing");
    assert_int_equal(c->quota_backend_bytes, 8589934592LL);
    assert_string_equal(c->auto_compaction_mode, "revision");
    assert_string_equal(c->auto_compaction_retention, "1000");
    assert_int_equal(c->max_request_bytes, 10485760);
    assert_int_equal(c->max_txn_ops, 256);
    assert_int_equal(c->heartbeat_ms, 50);
    assert_int_equal(c->election_ms, 500);
    assert_int_equal(c->snapshot_count, 10000);
    assert_string_equal(c->log_level, "warn");
    assert_string_equal(c->logger, "zap");
    assert_string_equal(c->log_outputs, "stderr,/tmp/x.log");
    assert_string_equal(c->listen_metrics_urls, "http://127.0.0.1:2381");
    assert_int_equal(c->progress_notify_ms, 5000);
    done(p);

    /* keys not in the file keep etcd's defaults; null keeps them too */
    p = PARSE(cf_arg("name: nn\nmax-txn-ops: ~\nlog-level: null\ndata-dir:\n"));
    unlink(cf_path);
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "nn");
    assert_string_equal(p->c.data_dir, "nn.etcd");
    assert_string_equal(p->c.initial_cluster, "nn=http://localhost:2380");
    assert_int_equal(p->c.max_txn_ops, 128);
    assert_string_equal(p->c.log_level, "info");
    assert_string_equal(p->c.log_outputs, "default");
    assert_string_equal(p->c.listen_client_urls, "http://localhost:2379");
    assert_int_equal(p->c.progress_notify_ms, 600000);
    done(p);

    /* an empty file (or only comments): all defaults */
    p = PARSE(cf_arg("# nothing\n"));
    unlink(cf_path);
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "default");
    done(p);

    /* quoted scalars are strings whatever they look like; YAML 1.1 */
    p = PARSE(cf_arg("name: \"yes\"\ninitial-cluster-token: '12'\n"));
    unlink(cf_path);
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "yes");
    assert_string_equal(p->c.initial_cluster_token, "12");
    done(p);
}

/* etcdmain/config.go: with a config file, "other configuration command
 * line flags and environment variables will be ignored". */
static void test_config_file_precedence(void **state)
{
    (void)state;
    setenv("ETCD_NAME", "envname", 1);
    setenv("ETCD_MAX_TXN_OPS", "7", 1);
    setenv("ETCD_LOG_LEVEL", "debug", 1);
    cf("name: filename\nheartbeat-interval: 20\n");
    char path[64];
    snprintf(path, sizeof path, "%s", cf_path);

    struct parsed *p = PARSE("--config-file", path, "--name", "flagname",
                             "--max-txn-ops", "9", "--election-timeout=3000");
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.config_file, path);
    assert_string_equal(p->c.name, "filename");   /* file over flag and env */
    assert_int_equal(p->c.heartbeat_ms, 20);
    assert_int_equal(p->c.max_txn_ops, 128);      /* flag and env ignored */
    assert_int_equal(p->c.election_ms, 1000);     /* flag ignored */
    assert_string_equal(p->c.log_level, "info");  /* env ignored */
    done(p);

    /* flags before or after --config-file: the same */
    p = PARSE("--name", "flagname", "--config-file", path);
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "filename");
    done(p);

    /* ETCD_CONFIG_FILE when no flag names a file: env and flags ignored */
    setenv("ETCD_CONFIG_FILE", path, 1);
    p = PARSE("--name", "flagname");
    assert_int_equal(p->rc, 0);
    assert_true(p->c.from_file);
    assert_string_equal(p->c.name, "filename");
    assert_int_equal(p->c.max_txn_ops, 128);
    done(p);
    /* --config-file wins over ETCD_CONFIG_FILE */
    char other[64];
    cf("name: other\n");
    snprintf(other, sizeof other, "%s", cf_path);
    p = PARSE("--config-file", other);
    assert_int_equal(p->rc, 0);
    assert_string_equal(p->c.name, "other");
    done(p);
    unlink(other);
    /* an empty ETCD_CONFIG_FILE is no file */
    setenv("ETCD_CONFIG_FILE", "", 1);
    p = PARSE0();
    assert_int_equal(p->rc, 0);
    assert_false(p->c.from_file);
    assert_string_equal(p->c.name, "envname");
    done(p);
    unsetenv("ETCD_CONFIG_FILE");

    /* flags are still parsed first: unknown flags and bad values are
     * usage errors, --help and --version win */
    assert_int_equal(RC("--config-file", path, "--bogus"), 2);
    assert_int_equal(RC("--config-file", path, "--max-txn-ops", "x"), 2);
    assert_int_equal(RC("--config-file", path, "--help"), 1);
    assert_int_equal(RC("--config-file", path, "--version"), 1);
    /* an unsupported flag beside a file: the flag is ignored like the rest
     * only once parsed; etcd's flag parsing accepts it, so does cairn */
    assert_int_equal(RC("--config-file", path, "--auto-tls=false"), 0);
    unlink(path);
    clear_env(NULL);
}

static void expect_error(const char *yaml, const char *msg)
{
    struct parsed *p = PARSE(cf_arg(yaml));
    unlink(cf_path);
    assert_int_equal(p->rc, 3);
    assert_string_equal(p->c.error, msg);
    done(p);
}

#define JSONERR "error unmarshaling JSON: while decoding JSON: json: cannot unmarshal "

static void test_config_file_types(void **state)
{
    (void)state;
    expect_error("name: x\nmax-txn-ops: \"abc\"\n",
                 JSONERR "string into Go struct field configYAML.max-txn-ops of type uint");
    expect_error("max-txn-ops: -1\n",
                 JSONERR "number -1 into Go struct field configYAML.max-txn-ops of type uint");
    expect_error("heartbeat-interval: 1.5\n",
                 JSONERR "number 1.5 into Go struct field configYAML.heartbeat-interval of type uint");
    expect_error("snapshot-count: 99999999999999999999999\n",
                 JSONERR "number 1e+23 into Go struct field configYAML.snapshot-count of type uint64");
    expect_error("name: yes\n",
                 JSONERR "bool into Go struct field configYAML.name of type string");
    /* YAML 1.1 (yaml.v2): y and n are booleans too */
    expect_error("name: n\n",
                 JSONERR "bool into Go struct field configYAML.name of type string");
    expect_error("name: 12\n",
                 JSONERR "number into Go struct field configYAML.name of type string");
    expect_error("log-outputs: stderr\n",
                 JSONERR "string into Go struct field configYAML.log-outputs of type []string");
    expect_error("log-outputs: [1]\n",
                 JSONERR "number into Go struct field configYAML.log-outputs of type string");
    expect_error("log-outputs: [a, {b: 1}]\n",
                 JSONERR "object into Go struct field configYAML.log-outputs of type string");
    expect_error("listen-client-urls: [a, b]\n",
                 JSONERR "array into Go struct field configYAML.listen-client-urls of type string");
    expect_error("experimental-watch-progress-notify-interval: 5s\n",
                 JSONERR "string into Go struct field configYAML.experimental-watch-progress-notify-interval of type time.Duration");
    expect_error("enable-v2: \"true\"\n",
                 JSONERR "string into Go struct field configYAML.enable-v2 of type bool");
    expect_error("client-transport-security: 5\n",
                 JSONERR "number into Go struct field configYAML.client-transport-security of type embed.securityConfig");
    expect_error("- a\n- b\n", JSONERR "array into Go value of type embed.configYAML");
    /* what etcd accepts: 1e3 is the JSON number 1000 */
    struct parsed *p = PARSE(cf_arg("max-txn-ops: 1e3\nquota-backend-bytes: -1\n"));
    unlink(cf_path);
    assert_int_equal(p->rc, 0);
    assert_int_equal(p->c.max_txn_ops, 1000);
    assert_int_equal(p->c.quota_backend_bytes, -1);
    done(p);
    /* peer TLS in the file: the same keys as client TLS */
    struct parsed *q = PARSE(cf_arg("peer-transport-security:\n  cert-file: /x.pem\n"
                                    "  key-file: /k.pem\n  client-cert-auth: true\n"));
    unlink(cf_path);
    assert_int_equal(q->rc, 0);
    assert_string_equal(q->c.peer_cert_file, "/x.pem");
    assert_string_equal(q->c.peer_key_file, "/k.pem");
    assert_int_equal(q->c.peer_client_cert_auth, 1);
    assert_null(q->c.cert_file);
    done(q);
    /* client TLS in the file: etcd 3.4's securityConfig keys */
    q = PARSE(cf_arg("client-transport-security:\n  cert-file: /x.pem\n"
                     "  key-file: /k.pem\n  trusted-ca-file: /ca.pem\n"
                     "  client-cert-auth: true\n  auto-tls: false\n"
                     "  crl-file: ignored\n"
                     "cipher-suites: [TLS_RSA_WITH_AES_128_GCM_SHA256]\n"
                     "tls-min-version: TLS1.2\n"));
    unlink(cf_path);
    assert_int_equal(q->rc, 0);
    assert_string_equal(q->c.cert_file, "/x.pem");
    assert_string_equal(q->c.key_file, "/k.pem");
    assert_string_equal(q->c.trusted_ca_file, "/ca.pem");
    assert_int_equal(q->c.client_cert_auth, 1);
    assert_string_equal(q->c.cipher_suites, "TLS_RSA_WITH_AES_128_GCM_SHA256");
    assert_string_equal(q->c.tls_min_version, "TLS1.2");
    done(q);
    q = PARSE(cf_arg("client-transport-security:\n  client-cert-auth: 1\n"));
    unlink(cf_path);
    assert_int_equal(q->rc, 3);
    assert_string_equal(q->c.error, JSONERR "number into Go struct field "
                        "securityConfig.client-transport-security.client-cert-auth of type bool");
    done(q);
    q = PARSE(cf_arg("force-new-cluster: true\n"));
    unlink(cf_path);
    assert_int_equal(q->rc, 0);
    assert_int_equal(q->c.force_new_cluster, 1);
    done(q);
    /* flags that are not file keys are unknown keys there: ignored */
    q = PARSE(cf_arg("version: true\nhelp: true\nconfig-file: /nonexistent\n"));
    unlink(cf_path);
    assert_int_equal(q->rc, 0);
    done(q);
}

static void test_config_file_bad(void **state)
{
    (void)state;
    struct parsed *p = PARSE("--config-file", "/nonexistent/cairn.yaml");
    assert_int_equal(p->rc, 3);
    assert_string_equal(p->c.error,
                        "open /nonexistent/cairn.yaml: no such file or directory");
    done(p);
    expect_error("name: [x\n", "error converting YAML to JSON: yaml: line 1: "
                               "did not find expected ',' or ']'");
    expect_error("name: x\n\tbad\n", "error converting YAML to JSON: yaml: line 2: "
                                     "found a tab character that violates indentation");
    expect_error("name: null\nx: [\n", "error converting YAML to JSON: yaml: line 2: "
                                       "did not find expected node content");
    expect_error(": x\n", "error converting YAML to JSON: yaml: did not find expected key");
    /* values checked after loading, as for flags */
    expect_error("initial-cluster-state: sideways\n",
                 "invalid value \"sideways\" for initial-cluster-state: use 'new' or 'existing'");
    expect_error("max-txn-ops: 0\n", "max-request-bytes and max-txn-ops must be positive");
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
        T(test_client_tls_flags),
        T(test_split),
        T(test_config_file_keys),
        T(test_config_file_precedence),
        T(test_config_file_types),
        T(test_config_file_bad),
#undef T
    };
    return cmocka_run_group_tests(tests, clear_env, NULL);
}
