/* One table of flags (as redis' standardConfig): name, kind, field,
 * default, help. */
#include "server/config.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <yaml.h>

#include "core/mem.h"
#include "net/tls.h"

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

/* The Go type of each key in etcd's config file (embed.Config's fields):
 * the YAML value must convert to it, with encoding/json's errors. */
enum ytype {
    Y_AUTO,     /* from the kind: string, int64, bool or time.Duration */
    Y_NONE,     /* a flag only, not a config file key */
    Y_UINT,
    Y_UINT64,
    Y_STRINGS,  /* []string: a YAML list; kept comma-joined */
    Y_BOOL,
    Y_DURATION, /* time.Duration: an integer of nanoseconds in the file */
    Y_SECURITY, /* client/peer-transport-security: a mapping; not a flag */
};

struct flag {
    const char *name;
    enum kind kind;
    size_t off;
    const char *dflt;
    const char *help;
    enum ytype y;
};

#define F(field) offsetof(struct config, field)
static const struct flag flags[] = {
    {"name", K_STR, F(name), "default", "Human-readable name for this member.", Y_AUTO},
    {"data-dir", K_STR, F(data_dir), NULL, "Path to the data directory (default ${name}.etcd).", Y_AUTO},
    {"listen-client-urls", K_STR, F(listen_client_urls), "http://localhost:2379", "List of URLs to listen on for client traffic.", Y_AUTO},
    {"advertise-client-urls", K_STR, F(advertise_client_urls), "http://localhost:2379", "List of this member's client URLs to advertise.", Y_AUTO},
    {"listen-peer-urls", K_STR, F(listen_peer_urls), "http://localhost:2380", "List of URLs to listen on for peer traffic.", Y_AUTO},
    {"initial-advertise-peer-urls", K_STR, F(initial_advertise_peer_urls), "http://localhost:2380", "List of this member's peer URLs to advertise.", Y_AUTO},
    {"initial-cluster", K_STR, F(initial_cluster), NULL, "Initial cluster configuration (default ${name}=${initial-advertise-peer-urls}).", Y_AUTO},
    {"initial-cluster-token", K_STR, F(initial_cluster_token), "etcd-cluster", "Initial cluster token.", Y_AUTO},
    {"initial-cluster-state", K_STR, F(initial_cluster_state), "new", "Initial cluster state ('new' or 'existing').", Y_AUTO},
    {"max-request-bytes", K_INT, F(max_request_bytes), "1572864", "Maximum client request size in bytes.", Y_UINT},
    {"max-txn-ops", K_INT, F(max_txn_ops), "128", "Maximum number of operations permitted in a transaction.", Y_UINT},
    {"quota-backend-bytes", K_INT, F(quota_backend_bytes), "0", "Raise alarms when backend size exceeds the given quota (0 = default 2 GiB; not enforced yet).", Y_AUTO},
    {"snapshot-count", K_INT, F(snapshot_count), "100000", "Committed transactions to trigger a snapshot (accepted; cairn has no raft log yet).", Y_UINT64},
    {"heartbeat-interval", K_INT, F(heartbeat_ms), "100", "Time (in milliseconds) of a heartbeat interval.", Y_UINT},
    {"election-timeout", K_INT, F(election_ms), "1000", "Time (in milliseconds) for an election to timeout.", Y_UINT},
    {"experimental-snapshot-catchup-entries", K_INT, F(snapshot_catchup_entries), "5000", "Number of entries for a slow follower to catch up after compacting the raft log.", Y_AUTO},
    {"snapshot-catchup-entries", K_INT, F(snapshot_catchup_entries), NULL, "Same as --experimental-snapshot-catchup-entries (etcd 3.6 name).", Y_AUTO},
    {"experimental-watch-progress-notify-interval", K_DURATION, F(progress_notify_ms), "10m", "Duration of periodic watch progress notifications.", Y_AUTO},
    {"watch-progress-notify-interval", K_DURATION, F(progress_notify_ms), NULL, "Same as --experimental-watch-progress-notify-interval (etcd 3.6 name).", Y_AUTO},
    {"logger", K_STR, F(logger), "zap", "Logger: zap (structured JSON, as etcd).", Y_AUTO},
    {"log-outputs", K_STR, F(log_outputs), "default", "Where logs go: default (stderr), stderr, stdout, or file paths, comma-separated.", Y_STRINGS},
    {"listen-metrics-urls", K_STR, F(listen_metrics_urls), NULL, "List of additional URLs to serve /metrics and /health.", Y_AUTO},
    {"auto-compaction-mode", K_STR, F(auto_compaction_mode), "periodic", "Interpret 'auto-compaction-retention' as 'periodic' (duration) or 'revision'.", Y_AUTO},
    {"auto-compaction-retention", K_STR, F(auto_compaction_retention), "0", "Auto compaction retention (0 = off): hours or a duration for periodic, a count for revision.", Y_AUTO},
    {"experimental-encryption-key-file", K_STR, F(encryption_key_file), NULL, "File of named 256-bit keys (name:base64key per line, the first for new writes; mode 600): encrypts values, leases and auth records at rest (cairn only; SIGHUP rereads it).", Y_AUTO},
    {"log-level", K_STR, F(log_level), "info", "Log level: debug, info, warn, error, panic, or fatal.", Y_AUTO},
    {"version", K_BOOL, F(show_version), NULL, "Print the version and exit.", Y_NONE},
    {"help", K_BOOL, F(show_help), NULL, "Show this help and exit.", Y_NONE},
    {"auth-token", K_STR, F(auth_token), "simple", "Specify auth token specific options: simple, or jwt,pub-key=<path>,priv-key=<path>,sign-method=<alg>[,ttl=<duration>].", Y_AUTO},
    {"auth-token-ttl", K_INT, F(auth_token_ttl), "300", "The lifetime in seconds of the auth token.", Y_UINT},
    {"bcrypt-cost", K_INT, F(bcrypt_cost), "10", "Specify bcrypt algorithm cost factor for auth password hashing.", Y_UINT},
    /* harmless to ignore for one member without those features */
    {"enable-v2", K_IGNORED, 0, NULL, NULL, Y_BOOL},
    {"max-snapshots", K_IGNORED, 0, NULL, NULL, Y_UINT},
    {"max-wals", K_IGNORED, 0, NULL, NULL, Y_UINT},
    {"grpc-keepalive-min-time", K_IGNORED, 0, NULL, NULL, Y_DURATION},
    {"grpc-keepalive-interval", K_IGNORED, 0, NULL, NULL, Y_DURATION},
    {"grpc-keepalive-timeout", K_IGNORED, 0, NULL, NULL, Y_DURATION},
    {"strict-reconfig-check", K_BOOL, F(strict_reconfig_check), "true", "Reject reconfiguration requests that would cause quorum loss.", Y_AUTO},
    {"enable-grpc-gateway", K_BOOL, F(enable_grpc_gateway), "true", "Enable GRPC gateway.", Y_AUTO},
    {"enable-pprof", K_IGNORED_BOOL, 0, NULL, NULL, Y_AUTO},
    {"pre-vote", K_IGNORED_BOOL, 0, NULL, NULL, Y_AUTO},
    {"cors", K_IGNORED, 0, NULL, NULL, Y_AUTO},
    {"host-whitelist", K_IGNORED, 0, NULL, NULL, Y_AUTO},
    {"discovery-fallback", K_IGNORED, 0, NULL, NULL, Y_NONE},
    /* client TLS (net/tls.h); in a config file these live under
     * client-transport-security */
    {"cert-file", K_STR, F(cert_file), NULL, "Path to the client server TLS cert file.", Y_NONE},
    {"key-file", K_STR, F(key_file), NULL, "Path to the client server TLS key file.", Y_NONE},
    {"trusted-ca-file", K_STR, F(trusted_ca_file), NULL, "Path to the client server TLS trusted CA cert file (client certificates are then required).", Y_NONE},
    {"client-cert-auth", K_BOOL, F(client_cert_auth), NULL, "Enable client cert authentication.", Y_NONE},
    {"client-crl-file", K_STR, F(client_crl_file), NULL, "Path to the client certificate revocation list file.", Y_NONE},
    {"auto-tls", K_BOOL, F(auto_tls), NULL, "Client TLS using generated certificates.", Y_NONE},
    {"cipher-suites", K_STR, F(cipher_suites), NULL, "Comma-separated list of supported TLS cipher suites (Go's names; empty = OpenSSL's defaults).", Y_STRINGS},
    {"tls-min-version", K_STR, F(tls_min_version), NULL, "Minimum TLS version: TLS1.2 or TLS1.3 (default TLS1.2).", Y_AUTO},
    {"tls-max-version", K_STR, F(tls_max_version), NULL, "Maximum TLS version: TLS1.2 or TLS1.3 (default: the highest).", Y_AUTO},
    /* peer-transport-security */
    {"peer-cert-file", K_STR, F(peer_cert_file), NULL, "Path to the peer server TLS cert file.", Y_NONE},
    {"peer-key-file", K_STR, F(peer_key_file), NULL, "Path to the peer server TLS key file.", Y_NONE},
    {"peer-trusted-ca-file", K_STR, F(peer_trusted_ca_file), NULL, "Path to the peer server TLS trusted CA file.", Y_NONE},
    {"peer-client-cert-auth", K_BOOL, F(peer_client_cert_auth), NULL, "Enable peer client cert authentication.", Y_NONE},
    {"peer-auto-tls", K_BOOL, F(peer_auto_tls), NULL, "Peer TLS using self-generated certificates if --peer-key-file and --peer-cert-file are not provided.", Y_NONE},
    {"peer-cert-allowed-cn", K_STR, F(peer_cert_allowed_cn), NULL, "Allowed CN for inter peer authentication.", Y_AUTO},
    {"force-new-cluster", K_BOOL, F(force_new_cluster), NULL, "Force to create a new one member cluster.", Y_AUTO},
    {"discovery", K_UNSUPPORTED, 0, NULL, NULL, Y_AUTO},
    {"discovery-srv", K_UNSUPPORTED, 0, NULL, NULL, Y_AUTO},
    {"config-file", K_STR, F(config_file), NULL, "Path to the server configuration file (etcd's YAML keys). Other flags and ETCD_* variables are then ignored.", Y_NONE},
    /* config file only: TLS settings live in these mappings there */
    {"client-transport-security", K_UNSUPPORTED, 0, NULL, NULL, Y_SECURITY},
    {"peer-transport-security", K_IGNORED, 0, NULL, NULL, Y_SECURITY},
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
        if (flags[i].y != Y_SECURITY && strlen(flags[i].name) == len &&
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

/* Strings config_parse allocates hang off c->owned, for config_free.
 * @s NULL: @n zeroed bytes to fill. */
struct owned {
    struct owned *next;
    char s[];
};

static char *own(struct config *c, const char *s, size_t n)
{
    struct owned *o = cairn_malloc(sizeof *o + n + 1);
    if (s)
        memcpy(o->s, s, n);
    else
        memset(o->s, 0, n); /* room to fill */
    o->s[n] = 0;
    o->next = c->owned;
    c->owned = o;
    return o->s;
}

void config_free(struct config *c)
{
    struct owned *o = c->owned;
    while (o) {
        struct owned *next = o->next;
        cairn_free(o);
        o = next;
    }
    c->owned = NULL;
}

static int verr(struct config *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int verr(struct config *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->error, sizeof c->error, fmt, ap);
    va_end(ap);
    return 3;
}

/* ---- the config file: etcd reads it with sigs.k8s.io/yaml, which turns
 * YAML 1.1 (yaml.v2, a port of libyaml) into JSON and decodes that with
 * encoding/json into embed.Config. So: libyaml parses, scalars resolve as
 * yaml.v2 resolves them, and type mismatches fail with encoding/json's
 * message. Unknown keys are ignored, as etcd ignores them. */

enum jt { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
static const char *const jt_name[] = {"null", "bool", "number", "string",
                                      "array", "object"};

static int in_list(const char *s, const char *const *list)
{
    for (; *list; list++)
        if (strcmp(s, *list) == 0)
            return 1;
    return 0;
}

/* json.Marshal's float64: shortest digits that read back exactly, 'e'
 * form below 1e-6 and from 1e21, with "e-07" cleaned to "e-7". */
static void json_float(double f, char *out, size_t cap)
{
    int p;
    char e[40];
    for (p = 1; p < 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    snprintf(e, sizeof e, "%.*e", p - 1, f);
    double a = f < 0 ? -f : f;
    if (a != 0 && (a < 1e-6 || a >= 1e21)) {
        char *x = strchr(e, 'e');
        if (x && x[2] == '0' && x[3] != 0)
            memmove(x + 2, x + 3, strlen(x + 3) + 1);
        snprintf(out, cap, "%s", e);
        return;
    }
    int exp = atoi(strchr(e, 'e') + 1), dec = p - 1 - exp;
    snprintf(out, cap, "%.*f", dec > 0 ? dec : 0, f);
}

/* yaml.v2's float syntax (plus its ParseFloat). */
static int yaml_float_syntax(const char *s)
{
    if (*s == '+' || *s == '-')
        s++;
    int digits = 0;
    while (isdigit((unsigned char)*s))
        s++, digits++;
    if (*s == '.') {
        s++;
        int frac = 0;
        while (isdigit((unsigned char)*s))
            s++, frac++;
        if (!digits && !frac)
            return 0;
    } else if (!digits)
        return 0;
    if (*s == 'e' || *s == 'E') {
        s++;
        if (*s == '+' || *s == '-')
            s++;
        if (!isdigit((unsigned char)*s))
            return 0;
        while (isdigit((unsigned char)*s))
            s++;
    }
    return *s == 0;
}

/* What JSON value a YAML node becomes. For numbers @num gets the JSON
 * literal; for bools @b the value. Quoted scalars are strings. */
static enum jt resolve(const yaml_node_t *n, char *num, size_t cap, int *b)
{
    static const char *const nulls[] = {"", "~", "null", "Null", "NULL", NULL};
    static const char *const yes[] = {"y", "Y", "yes", "Yes", "YES", "true",
                                      "True", "TRUE", "on", "On", "ON", NULL};
    static const char *const no[] = {"n", "N", "no", "No", "NO", "false",
                                     "False", "FALSE", "off", "Off", "OFF", NULL};
    if (n->type == YAML_SEQUENCE_NODE)
        return J_ARR;
    if (n->type == YAML_MAPPING_NODE)
        return J_OBJ;
    const char *s = (const char *)n->data.scalar.value;
    if (n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return J_STR;
    if (in_list(s, nulls))
        return J_NULL;
    if (in_list(s, yes) || in_list(s, no)) {
        *b = in_list(s, yes);
        return J_BOOL;
    }
    /* integers: Go's ParseInt(s, 0, 64), then ParseUint */
    char clean[64], *end;
    size_t l = 0;
    for (const char *p = s; *p && l + 1 < sizeof clean; p++)
        if (*p != '_')
            clean[l++] = *p;
    clean[l] = 0;
    if (l > 0 && (isdigit((unsigned char)clean[0]) ||
                  ((clean[0] == '-' || clean[0] == '+') &&
                   isdigit((unsigned char)clean[1])))) {
        errno = 0;
        long long v = strtoll(clean, &end, 0);
        if (*end == 0 && errno == 0) {
            snprintf(num, cap, "%lld", v);
            return J_NUM;
        }
        errno = 0;
        unsigned long long u = strtoull(clean, &end, 0);
        if (*end == 0 && errno == 0 && clean[0] != '-') {
            snprintf(num, cap, "%llu", u);
            return J_NUM;
        }
    }
    if (yaml_float_syntax(clean)) {
        json_float(strtod(clean, NULL), num, cap);
        return J_NUM;
    }
    return J_STR;
}

static int type_err(struct config *c, const char *what, const char *key,
                    const char *gotype)
{
    return verr(c, "error unmarshaling JSON: while decoding JSON: json: "
                   "cannot unmarshal %s into Go struct field configYAML.%s of "
                   "type %s",
                what, key, gotype);
}

static enum ytype ytype_of(const struct flag *f)
{
    if (f->y != Y_AUTO)
        return f->y;
    switch (f->kind) {
    case K_BOOL:
    case K_IGNORED_BOOL:
    case K_UNSUPPORTED_BOOL:
        return Y_BOOL;
    case K_DURATION:
        return Y_DURATION;
    default:
        return Y_AUTO;
    }
}

static const char *gotype(const struct flag *f)
{
    switch (ytype_of(f)) {
    case Y_UINT: return "uint";
    case Y_UINT64: return "uint64";
    case Y_STRINGS: return "[]string";
    case Y_BOOL: return "bool";
    case Y_DURATION: return "time.Duration";
    case Y_SECURITY: return "embed.securityConfig";
    default: return f->kind == K_INT ? "int64" : "string";
    }
}

/* etcd 3.4's securityConfig keys, stored through the client TLS flags
 * (or the peer ones, "peer-" + key). */
static int client_security(struct config *c, yaml_document_t *d, yaml_node_t *m,
                           int peer)
{
    static const char *const keys[] = {"cert-file", "key-file", "trusted-ca-file",
                                       "client-cert-auth", "auto-tls"};
    const char *section = peer ? "peer-transport-security" : "client-transport-security";
    for (yaml_node_pair_t *p = m->data.mapping.pairs.start;
         p < m->data.mapping.pairs.top; p++) {
        yaml_node_t *k = yaml_document_get_node(d, p->key);
        yaml_node_t *v = yaml_document_get_node(d, p->value);
        char num[64], field[96];
        int b = 0, i;
        if (k == NULL || k->type != YAML_SCALAR_NODE)
            continue;
        for (i = 0; i < 5; i++)
            if (strcmp((const char *)k->data.scalar.value, keys[i]) == 0)
                break;
        if (i == 5)
            continue; /* unknown keys are ignored, as encoding/json does */
        char fname[64];
        snprintf(fname, sizeof fname, "%s%s", peer ? "peer-" : "", keys[i]);
        const struct flag *f = find(fname, strlen(fname));
        enum jt t = resolve(v, num, sizeof num, &b);
        snprintf(field, sizeof field, "%s.%s", section, keys[i]);
        if (t == J_NULL)
            continue;
        if (t != (f->kind == K_BOOL ? J_BOOL : J_STR))
            return verr(c, "error unmarshaling JSON: while decoding JSON: json: "
                           "cannot unmarshal %s into Go struct field "
                           "securityConfig.%s of type %s", jt_name[t], field,
                        f->kind == K_BOOL ? "bool" : "string");
        const char *val = f->kind == K_BOOL
                              ? (b ? "true" : "false")
                              : own(c, (const char *)v->data.scalar.value,
                                    v->data.scalar.length);
        if (set(c, f, val, "") != 0)
            return verr(c, "%s: invalid value %s", field, val);
    }
    return 0;
}

/* One key of the file: check the type as encoding/json would, then store
 * through the flag table. */
static int yaml_key(struct config *c, const struct flag *f, yaml_document_t *d,
                    yaml_node_t *v)
{
    char num[64], text[96];
    int b = 0;
    enum jt t = resolve(v, num, sizeof num, &b);
    enum ytype y = ytype_of(f);
    const char *val = NULL;

    if (t == J_NULL && y != Y_STRINGS)
        return 0; /* encoding/json leaves the field as it was */
    switch (y) {
    case Y_SECURITY:
        if (t != J_OBJ)
            return type_err(c, jt_name[t], f->name, gotype(f));
        return client_security(c, d, v,
                               strcmp(f->name, "peer-transport-security") == 0);
    case Y_STRINGS: {
        if (t != J_ARR && t != J_NULL)
            return type_err(c, jt_name[t], f->name, gotype(f));
        size_t len = 0;
        char joined[4096];
        joined[0] = 0;
        for (yaml_node_item_t *it = t == J_ARR ? v->data.sequence.items.start : NULL;
             it && it < v->data.sequence.items.top; it++) {
            yaml_node_t *e = yaml_document_get_node(d, *it);
            enum jt et = resolve(e, num, sizeof num, &b);
            if (et != J_STR && et != J_NULL)
                return type_err(c, jt_name[et], f->name, "string");
            const char *s = et == J_STR ? (const char *)e->data.scalar.value : "";
            len += (size_t)snprintf(joined + len, len < sizeof joined ? sizeof joined - len : 0,
                                    "%s%s", len ? "," : "", s);
        }
        if (len >= sizeof joined)
            return verr(c, "%s: list too long", f->name);
        val = own(c, joined, strlen(joined));
        break;
    }
    case Y_BOOL:
        if (t != J_BOOL)
            return type_err(c, jt_name[t], f->name, gotype(f));
        val = b ? "true" : "false";
        break;
    case Y_UINT:
    case Y_UINT64:
    case Y_DURATION:
    case Y_AUTO:
        if (y == Y_AUTO && f->kind != K_INT) { /* a Go string */
            if (t != J_STR)
                return type_err(c, jt_name[t], f->name, gotype(f));
            val = own(c, (const char *)v->data.scalar.value, v->data.scalar.length);
            break;
        }
        if (t != J_NUM)
            return type_err(c, jt_name[t], f->name, gotype(f));
        {
            /* encoding/json: ParseUint / ParseInt of the literal, base 10 */
            char *end;
            int neg = num[0] == '-', bad = !isdigit((unsigned char)num[neg]);
            errno = 0;
            if (y == Y_UINT || y == Y_UINT64) {
                bad |= neg;
                (void)strtoull(num, &end, 10);
            } else
                (void)strtoll(num, &end, 10);
            if (bad || *end || errno)
                return type_err(c, (snprintf(text, sizeof text, "number %s", num), text),
                                f->name, gotype(f));
        }
        if (y == Y_DURATION) {
            snprintf(text, sizeof text, "%sns", num); /* nanoseconds */
            val = own(c, text, strlen(text));
        } else
            val = own(c, num, strlen(num));
        break;
    case Y_NONE:
        return 0;
    }
    if (f->kind == K_UNSUPPORTED || f->kind == K_UNSUPPORTED_BOOL) {
        if (strcmp(val, "false") == 0 || *val == 0)
            return 0;
        return verr(c, "%s is not supported yet (the feature is not built); "
                       "cairn refuses to start without it", f->name);
    }
    if (f->kind == K_DURATION && val[0] == '-')
        return verr(c, "%s: negative duration", f->name);
    return set(c, f, val, "") == 0 ? 0 : verr(c, "%s: invalid value %s", f->name, val);
}

/* yaml.v2's parser.fail(): its line numbers, its prefix. */
static int yaml_fail(struct config *c, const yaml_parser_t *p)
{
    size_t line = 0;
    char where[32] = "";
    if (p->problem_mark.line != 0) {
        line = p->problem_mark.line;
        if (p->error == YAML_SCANNER_ERROR)
            line++;
    } else if (p->context_mark.line != 0) {
        line = p->context_mark.line;
    }
    if (line)
        snprintf(where, sizeof where, "line %zu: ", line);
    return verr(c, "error converting YAML to JSON: yaml: %s%s", where,
                p->problem ? p->problem : "unknown problem parsing YAML content");
}

static int load_file(struct config *c, const char *path, unsigned char *seen)
{
    yaml_parser_t parser;
    yaml_document_t doc;
    int rc = 0;
    FILE *fp = fopen(path, "rb");

    if (fp == NULL) {
        /* Go's *PathError: its errno texts are glibc's, lowercased */
        char e[128];
        snprintf(e, sizeof e, "%s", strerror(errno));
        e[0] = (char)tolower((unsigned char)e[0]);
        return verr(c, "open %s: %s", path, e);
    }
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, fp);
    if (!yaml_parser_load(&parser, &doc)) {
        rc = yaml_fail(c, &parser);
        goto out_parser;
    }
    yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root == NULL)
        goto out_doc; /* an empty file: the defaults */
    if (root->type != YAML_MAPPING_NODE) {
        char num[64];
        int b;
        enum jt t = resolve(root, num, sizeof num, &b);
        if (t != J_NULL)
            rc = verr(c, "error unmarshaling JSON: while decoding JSON: json: "
                         "cannot unmarshal %s into Go value of type embed.configYAML",
                      jt_name[t]);
        goto out_doc;
    }
    for (yaml_node_pair_t *p = root->data.mapping.pairs.start;
         p < root->data.mapping.pairs.top && rc == 0; p++) {
        yaml_node_t *k = yaml_document_get_node(&doc, p->key);
        if (k->type != YAML_SCALAR_NODE) {
            rc = verr(c, "error converting YAML to JSON: yaml: invalid map key");
            break;
        }
        const char *key = (const char *)k->data.scalar.value;
        const struct flag *f = NULL;
        for (size_t i = 0; i < NFLAGS && f == NULL; i++)
            if (strcmp(flags[i].name, key) == 0 && flags[i].y != Y_NONE)
                f = &flags[i];
        if (f == NULL)
            continue; /* etcd ignores unknown keys */
        yaml_node_t *v = yaml_document_get_node(&doc, p->value);
        char num[64];
        int b;
        /* null leaves the field as it was: the default still applies */
        if (resolve(v, num, sizeof num, &b) == J_NULL && ytype_of(f) != Y_STRINGS)
            continue;
        rc = yaml_key(c, f, &doc, v);
        seen[f - flags] = 1;
    }
out_doc:
    yaml_document_delete(&doc);
out_parser:
    yaml_parser_delete(&parser);
    fclose(fp);
    return rc;
}

/* Fills what no flag, variable or key set, then derives and checks. */
static int finish(struct config *c, const unsigned char *seen)
{
    int rc;
    for (size_t i = 0; i < NFLAGS; i++)
        if (!seen[i] && flags[i].dflt && flags[i].kind != K_IGNORED)
            if ((rc = set(c, &flags[i], flags[i].dflt, "")) != 0)
                return rc;
    if (c->data_dir == NULL) {
        char d[4096];
        snprintf(d, sizeof d, "%s.etcd", c->name);
        c->data_dir = own(c, d, strlen(d));
    }
    if (c->initial_cluster == NULL) {
        size_t n = strlen(c->name) + strlen(c->initial_advertise_peer_urls) + 2;
        char *ic = own(c, NULL, n);
        snprintf(ic, n, "%s=%s", c->name, c->initial_advertise_peer_urls);
        c->initial_cluster = ic;
    }
    if (strcmp(c->initial_cluster_state, "new") != 0 &&
        strcmp(c->initial_cluster_state, "existing") != 0) {
        if (c->from_file)
            return verr(c, "invalid value \"%s\" for initial-cluster-state: "
                           "use 'new' or 'existing'", c->initial_cluster_state);
        fprintf(stderr, "cairn: invalid value \"%s\" for flag "
                        "--initial-cluster-state: use 'new' or 'existing'\n",
                c->initial_cluster_state);
        return 2;
    }
    /* etcd 3.5's Config.Validate: "failed to verify flags" */
    char terr[256];
    if (net_tls_check(c->cipher_suites, c->tls_min_version, c->tls_max_version,
                      terr, sizeof terr) != 0)
        return verr(c, "%s", terr);
    if (c->max_request_bytes <= 0 || c->max_txn_ops <= 0) {
        if (c->from_file)
            return verr(c, "max-request-bytes and max-txn-ops must be positive");
        fprintf(stderr, "cairn: --max-request-bytes and --max-txn-ops must be positive\n");
        return 2;
    }
    return 0;
}

/* ETCD_* variables for what no flag set (the path without a file). */
static int from_env(struct config *c, unsigned char *seen)
{
    int rc;
    for (size_t i = 0; i < NFLAGS; i++) {
        char env[96];
        if (flags[i].y == Y_SECURITY || flags[i].off == F(config_file))
            continue;
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
    return 0;
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
    /* etcd's flag parsing handles --help and --version before it looks at
     * the environment or a config file. */
    if (c->show_help) {
        config_usage(stdout);
        return 1;
    }
    if (c->show_version)
        return 1;
    /* etcdmain/config.go: ETCD_CONFIG_FILE is read on its own first; with
     * a file, the flags and the environment are ignored entirely. */
    const char *file = c->config_file;
    if (file == NULL || *file == 0)
        file = getenv("ETCD_CONFIG_FILE");
    if (file != NULL && *file != 0) {
        memset(c, 0, sizeof *c);
        memset(seen, 0, sizeof seen);
        c->config_file = file;
        c->from_file = 1;
        if ((rc = load_file(c, file, seen)) != 0)
            return rc;
    } else {
        if ((rc = from_env(c, seen)) != 0)
            return rc;
        if (c->show_help) {
            config_usage(stdout);
            return 1;
        }
        if (c->show_version)
            return 1;
    }
    return finish(c, seen);
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
