/* One table of flags (as redis' standardConfig): name, kind, field,
 * default, help. */
#include "server/config.h"

#include <ctype.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"

enum kind {
    K_STR,
    K_INT,
    K_BOOL,
    K_DURATION,     /* Go duration ("10m", "1.5s", "100ms"), stored in ms */
    K_IGNORED,      /* accepted; ignoring it is harmless in one member */
    K_IGNORED_BOOL,
    K_UNSUPPORTED,  /* accepted by etcd, not built yet: refuse to start */
    K_UNSUPPORTED_BOOL,
};

struct flag {
    const char *name;
    enum kind kind;
    size_t off;
    const char *dflt;
    const char *help;
};

#define F(field) offsetof(struct config, field)
static const struct flag flags[] = {
    {"name", K_STR, F(name), "default", "Human-readable name for this member."},
    {"data-dir", K_STR, F(data_dir), NULL, "Path to the data directory (default ${name}.etcd)."},
    {"listen-client-urls", K_STR, F(listen_client_urls), "http://localhost:2379", "List of URLs to listen on for client traffic."},
    {"advertise-client-urls", K_STR, F(advertise_client_urls), "http://localhost:2379", "List of this member's client URLs to advertise."},
    {"listen-peer-urls", K_STR, F(listen_peer_urls), "http://localhost:2380", "List of URLs to listen on for peer traffic (not used by a single member)."},
    {"initial-advertise-peer-urls", K_STR, F(initial_advertise_peer_urls), "http://localhost:2380", "List of this member's peer URLs to advertise."},
    {"initial-cluster", K_STR, F(initial_cluster), NULL, "Initial cluster configuration (default ${name}=${initial-advertise-peer-urls})."},
    {"initial-cluster-token", K_STR, F(initial_cluster_token), "etcd-cluster", "Initial cluster token."},
    {"initial-cluster-state", K_STR, F(initial_cluster_state), "new", "Initial cluster state ('new' or 'existing')."},
    {"max-request-bytes", K_INT, F(max_request_bytes), "1572864", "Maximum client request size in bytes."},
    {"max-txn-ops", K_INT, F(max_txn_ops), "128", "Maximum number of operations permitted in a transaction."},
    {"quota-backend-bytes", K_INT, F(quota_backend_bytes), "0", "Raise alarms when backend size exceeds the given quota (0 = default 2 GiB; not enforced yet)."},
    {"snapshot-count", K_INT, F(snapshot_count), "100000", "Committed transactions to trigger a snapshot (accepted; cairn has no raft log yet)."},
    {"heartbeat-interval", K_INT, F(heartbeat_ms), "100", "Time (in milliseconds) of a heartbeat interval."},
    {"election-timeout", K_INT, F(election_ms), "1000", "Time (in milliseconds) for an election to timeout."},
    {"experimental-watch-progress-notify-interval", K_DURATION, F(progress_notify_ms), "10m", "Duration of periodic watch progress notifications."},
    {"watch-progress-notify-interval", K_DURATION, F(progress_notify_ms), NULL, "Same as --experimental-watch-progress-notify-interval (etcd 3.6 name)."},
    {"logger", K_STR, F(logger), "zap", "Logger: zap (structured JSON, as etcd)."},
    {"log-outputs", K_STR, F(log_outputs), "default", "Where logs go: default (stderr), stderr, stdout, or file paths, comma-separated."},
    {"listen-metrics-urls", K_STR, F(listen_metrics_urls), NULL, "List of additional URLs to serve /metrics and /health."},
    {"auto-compaction-mode", K_STR, F(auto_compaction_mode), "periodic", "Interpret 'auto-compaction-retention' as 'periodic' (duration) or 'revision'."},
    {"auto-compaction-retention", K_STR, F(auto_compaction_retention), "0", "Auto compaction retention (0 = off): hours or a duration for periodic, a count for revision."},
    {"log-level", K_STR, F(log_level), "info", "Log level: debug, info, warn, error, panic, or fatal."},
    {"version", K_BOOL, F(show_version), NULL, "Print the version and exit."},
    {"help", K_BOOL, F(show_help), NULL, "Show this help and exit."},
    /* harmless to ignore for one member without those features */
    {"enable-v2", K_IGNORED, 0, NULL, NULL},
    {"max-snapshots", K_IGNORED, 0, NULL, NULL},
    {"max-wals", K_IGNORED, 0, NULL, NULL},
    {"grpc-keepalive-min-time", K_IGNORED, 0, NULL, NULL},
    {"grpc-keepalive-interval", K_IGNORED, 0, NULL, NULL},
    {"grpc-keepalive-timeout", K_IGNORED, 0, NULL, NULL},
    {"strict-reconfig-check", K_IGNORED_BOOL, 0, NULL, NULL},
    {"enable-pprof", K_IGNORED_BOOL, 0, NULL, NULL},
    {"pre-vote", K_IGNORED_BOOL, 0, NULL, NULL},
    {"cors", K_IGNORED, 0, NULL, NULL},
    {"host-whitelist", K_IGNORED, 0, NULL, NULL},
    {"discovery-fallback", K_IGNORED, 0, NULL, NULL},
    /* not built yet: starting without them would silently differ */
    {"cert-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"key-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"trusted-ca-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"client-cert-auth", K_UNSUPPORTED_BOOL, 0, NULL, NULL},
    {"client-crl-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"auto-tls", K_UNSUPPORTED_BOOL, 0, NULL, NULL},
    {"peer-cert-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"peer-key-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"peer-trusted-ca-file", K_UNSUPPORTED, 0, NULL, NULL},
    {"peer-client-cert-auth", K_UNSUPPORTED_BOOL, 0, NULL, NULL},
    {"peer-auto-tls", K_UNSUPPORTED_BOOL, 0, NULL, NULL},
    {"discovery", K_UNSUPPORTED, 0, NULL, NULL},
    {"discovery-srv", K_UNSUPPORTED, 0, NULL, NULL},
    {"force-new-cluster", K_UNSUPPORTED_BOOL, 0, NULL, NULL},
    {"auth-token", K_UNSUPPORTED, 0, NULL, NULL},
};
#define NFLAGS (sizeof flags / sizeof flags[0])

void config_usage(FILE *out)
{
    fprintf(out, "Usage: cairn [flags]\n\n"
                 "cairn is a key-value store that speaks etcd's v3 API.\n\n"
                 "Flags (each may also be given as ETCD_<NAME> in the environment):\n");
    for (size_t i = 0; i < NFLAGS; i++) {
        if (flags[i].help == NULL)
            continue;
        fprintf(out, "  --%s%s\n      %s%s%s%s\n", flags[i].name,
                flags[i].kind == K_BOOL ? "" : " <value>", flags[i].help,
                flags[i].dflt ? " (default '" : "",
                flags[i].dflt ? flags[i].dflt : "", flags[i].dflt ? "')" : "");
    }
    fprintf(out, "\nAlso accepted and ignored (harmless for one member): ");
    for (size_t i = 0; i < NFLAGS; i++)
        if (flags[i].kind == K_IGNORED || flags[i].kind == K_IGNORED_BOOL)
            fprintf(out, "--%s ", flags[i].name);
    fprintf(out, "\n");
}

static const struct flag *find(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(flags[i].name) == len &&
            strncmp(flags[i].name, name, len) == 0)
            return &flags[i];
    return NULL;
}

static int parse_bool(const char *v, int *out)
{
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) {
        *out = 1;
        return 0;
    }
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) {
        *out = 0;
        return 0;
    }
    return -1;
}

/* Go's time.ParseDuration, to millisecond precision: a sequence of
 * decimal numbers with units ns, us, ms, s, m, h. */
static int parse_duration(const char *v, int64_t *out)
{
    static const struct {
        const char *unit;
        double ms;
    } units[] = {{"ns", 1e-6}, {"us", 1e-3}, {"µs", 1e-3}, {"ms", 1},
                 {"s", 1000},  {"m", 60000}, {"h", 3600000}};
    double total = 0;
    if (strcmp(v, "0") == 0) {
        *out = 0;
        return 0;
    }
    if (*v == 0)
        return -1;
    while (*v) {
        char *end;
        double n = strtod(v, &end);
        if (end == v || n < 0)
            return -1;
        v = end;
        size_t best = 0, blen = 0;
        for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
            size_t l = strlen(units[i].unit);
            if (strncmp(v, units[i].unit, l) == 0 && l > blen) {
                best = i;
                blen = l;
            }
        }
        if (blen == 0)
            return -1;
        total += n * units[best].ms;
        v += blen;
    }
    *out = (int64_t)total;
    return 0;
}

static int set(struct config *c, const struct flag *f, const char *v,
               const char *src)
{
    char *base = (char *)c;
    switch (f->kind) {
    case K_STR:
        *(const char **)(base + f->off) = v;
        return 0;
    case K_INT: {
        char *end;
        errno = 0;
        long long n = strtoll(v, &end, 10);
        if (errno || end == v || *end) {
            fprintf(stderr, "invalid value \"%s\" for flag -%s: parse error\n",
                    v, f->name);
            return 2;
        }
        *(int64_t *)(base + f->off) = n;
        return 0;
    }
    case K_BOOL: {
        int b;
        if (parse_bool(v, &b) != 0) {
            fprintf(stderr, "invalid boolean value \"%s\" for -%s\n", v, f->name);
            return 2;
        }
        *(int *)(base + f->off) = b;
        return 0;
    }
    case K_DURATION: {
        int64_t ms;
        if (parse_duration(v, &ms) != 0) {
            fprintf(stderr, "invalid value \"%s\" for flag -%s: parse error\n",
                    v, f->name);
            return 2;
        }
        *(int64_t *)(base + f->off) = ms;
        return 0;
    }
    case K_IGNORED:
    case K_IGNORED_BOOL:
        return 0;
    case K_UNSUPPORTED:
    case K_UNSUPPORTED_BOOL:
        if (f->kind == K_UNSUPPORTED_BOOL && strcmp(v, "false") == 0)
            return 0;
        fprintf(stderr,
                "cairn: %s%s is not supported yet (the feature is not built); "
                "refusing to start without it\n",
                src, f->name);
        return 2;
    }
    return 2;
}

static void env_name(const char *flag, char *out, size_t n)
{
    size_t i = 0;
    i += (size_t)snprintf(out, n, "ETCD_");
    for (; *flag && i + 1 < n; flag++)
        out[i++] = *flag == '-' ? '_' : (char)toupper((unsigned char)*flag);
    out[i] = 0;
}

int config_parse(struct config *c, int argc, char **argv)
{
    unsigned char seen[NFLAGS];
    int rc;

    memset(c, 0, sizeof *c);
    memset(seen, 0, sizeof seen);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            fprintf(stderr, "cairn: unexpected argument '%s'\n", a);
            return 2;
        }
        a += a[1] == '-' ? 2 : 1;
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const struct flag *f = find(a, len);
        if (f == NULL) {
            fprintf(stderr, "cairn: unknown flag: --%.*s\n", (int)len, a);
            fprintf(stderr, "Run 'cairn --help' for the flags.\n");
            return 2;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (f->kind == K_BOOL || f->kind == K_IGNORED_BOOL ||
                 f->kind == K_UNSUPPORTED_BOOL)
            v = "true";
        else if (i + 1 < argc)
            v = argv[++i];
        else {
            fprintf(stderr, "cairn: flag needs an argument: --%s\n", f->name);
            return 2;
        }
        seen[f - flags] = 1;
        if ((rc = set(c, f, v, "--")) != 0)
            return rc;
    }
    for (size_t i = 0; i < NFLAGS; i++) {
        char env[96];
        env_name(flags[i].name, env, sizeof env);
        const char *v = getenv(env);
        if (seen[i] || v == NULL)
            continue;
        if (flags[i].kind == K_UNSUPPORTED || flags[i].kind == K_UNSUPPORTED_BOOL) {
            if ((rc = set(c, &flags[i], v, "ETCD_ variable for --")) != 0)
                return rc;
            continue;
        }
        seen[i] = 1;
        if ((rc = set(c, &flags[i], v, "")) != 0)
            return rc;
    }
    for (size_t i = 0; i < NFLAGS; i++)
        if (!seen[i] && flags[i].dflt && flags[i].kind != K_IGNORED)
            if ((rc = set(c, &flags[i], flags[i].dflt, "")) != 0)
                return rc;
    if (c->show_help) {
        config_usage(stdout);
        return 1;
    }
    if (c->show_version)
        return 1;
    if (c->data_dir == NULL) {
        char *d = cairn_malloc(strlen(c->name) + 6);
        sprintf(d, "%s.etcd", c->name);
        c->data_dir = d;
    }
    if (c->initial_cluster == NULL) {
        char *ic = cairn_malloc(strlen(c->name) +
                                strlen(c->initial_advertise_peer_urls) + 2);
        sprintf(ic, "%s=%s", c->name, c->initial_advertise_peer_urls);
        c->initial_cluster = ic;
    }
    if (strcmp(c->initial_cluster_state, "new") != 0 &&
        strcmp(c->initial_cluster_state, "existing") != 0) {
        fprintf(stderr, "cairn: invalid value \"%s\" for flag "
                        "--initial-cluster-state: use 'new' or 'existing'\n",
                c->initial_cluster_state);
        return 2;
    }
    if (c->max_request_bytes <= 0 || c->max_txn_ops <= 0) {
        fprintf(stderr, "cairn: --max-request-bytes and --max-txn-ops must be positive\n");
        return 2;
    }
    return 0;
}

int config_split(char *list, char **out, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(list, ",", &save);
         tok != NULL && n < max; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        if (*tok)
            out[n++] = tok;
    }
    return n;
}

int config_duration_ms(const char *v, int64_t *ms)
{
    return parse_duration(v, ms);
}
