/* Command line, ETCD_* environment and --config-file: etcd's flag names,
 * YAML keys, defaults and precedence. Without a config file: flag, then
 * environment, then default. With one (--config-file, else
 * $ETCD_CONFIG_FILE): the file and the defaults only; other flags and
 * ETCD_* variables are ignored, as etcd ignores them. Immutable after
 * start. */
#ifndef SERVER_CONFIG_H
#define SERVER_CONFIG_H

#include <stdint.h>
#include <stdio.h>

#define CAIRN_VERSION "0.1.0"
/* What Status.version and /version report: an etcd 3.6-compatible semver,
 * so that kube-apiserver's feature gates (RequestWatchProgress needs
 * >= 3.4.31 outside [3.5.0, 3.5.13)) see a current etcd. */
#define CAIRN_ETCD_VERSION "3.6.0"
#define CAIRN_ETCD_CLUSTER_VERSION "3.6.0"

#define CONFIG_MAX_URLS 16

struct config {
    const char *name;
    const char *data_dir;
    const char *listen_client_urls;
    const char *advertise_client_urls;
    const char *listen_peer_urls;
    const char *initial_advertise_peer_urls;
    const char *initial_cluster;
    const char *initial_cluster_token;
    const char *initial_cluster_state;
    const char *log_level;
    const char *logger;                    /* --logger: zap */
    const char *log_outputs;               /* --log-outputs */
    const char *listen_metrics_urls;       /* --listen-metrics-urls; NULL = none */
    const char *auto_compaction_mode;      /* "periodic" or "revision" */
    const char *auto_compaction_retention; /* etcd's syntax; "0" = off */
    const char *config_file;               /* --config-file */
    const char *encryption_key_file;       /* NULL = records stored plain */
    const char *cert_file, *key_file;      /* client TLS (net/tls.h) */
    const char *trusted_ca_file, *client_crl_file;
    const char *cipher_suites;             /* Go's names, comma-separated */
    const char *tls_min_version, *tls_max_version;
    int client_cert_auth, auto_tls;
    int strict_reconfig_check;             /* --strict-reconfig-check */
    int enable_grpc_gateway;               /* --enable-grpc-gateway */
    const char *peer_cert_file, *peer_key_file, *peer_trusted_ca_file;
    const char *peer_cert_allowed_cn;
    int peer_client_cert_auth, peer_auto_tls;
    int force_new_cluster;                 /* --force-new-cluster */
    int64_t max_request_bytes;
    int64_t max_txn_ops;
    int64_t quota_backend_bytes;
    int64_t snapshot_count;
    int64_t snapshot_catchup_entries;      /* raft entries kept after a snapshot */
    int64_t heartbeat_ms;
    int64_t election_ms;
    int64_t progress_notify_ms;
    const char *auth_token;                /* --auth-token */
    int64_t auth_token_ttl;                /* --auth-token-ttl, seconds */
    int64_t bcrypt_cost;                   /* --bcrypt-cost */
    int show_version, show_help;
    int from_file;                         /* settings came from config_file */
    void *owned;                           /* strings config_parse allocated */
    char error[512];                       /* why config_parse returned 3 */
};

/* Parses argv, then the config file or the environment. Returns 0, 1 when
 * the process should exit 0 (help, version), 2 on a usage error (message
 * printed, as Go's flag package) or 3 when the configuration is invalid
 * (etcd's message in c->error; etcd logs it as "failed to verify flags"
 * and exits 1). Strings may point into argv and the environment. */
int config_parse(struct config *c, int argc, char **argv);
/* Frees what config_parse allocated (after any return). */
void config_free(struct config *c);
void config_usage(FILE *out);

/* Go's time.ParseDuration to millisecond precision. 0 or -1. */
int config_duration_ms(const char *v, int64_t *ms);

/* Splits a comma-separated list in place into @out; returns the count. */
int config_split(char *list, char **out, int max);

#endif
