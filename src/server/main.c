/* argv -> config -> store -> apply thread -> listeners -> loop. */
#include <errno.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "lease/lease.h"
#include "net/net.h"
#include "rpc/rpc.h"
#include "server/notify.h"
#include "server/server.h"
#include "watch/watch.h"

struct server *srv;

/* Reserved address space for the LMDB map; the file grows as needed. */
#define MAP_SIZE ((size_t)64 << 30)
#define SHUTDOWN_GRACE_MS 5000

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static uint64_t be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

uint64_t server_member_id(char **peer_urls, int n, const char *token)
{
    char *sorted[CONFIG_MAX_URLS];
    unsigned char md[EVP_MAX_MD_SIZE];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    memcpy(sorted, peer_urls, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    for (int i = 0; i < n; i++)
        EVP_DigestUpdate(ctx, sorted[i], strlen(sorted[i]));
    EVP_DigestUpdate(ctx, token, strlen(token));
    EVP_DigestFinal_ex(ctx, md, NULL);
    EVP_MD_CTX_free(ctx);
    return be64(md);
}

uint64_t server_cluster_id(const uint64_t *ids, int n)
{
    uint64_t sorted[64];
    unsigned char b[8 * 64], md[EVP_MAX_MD_SIZE];
    memcpy(sorted, ids, (size_t)n * sizeof *ids);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_u64);
    for (int i = 0; i < n; i++)
        for (int j = 0; j < 8; j++)
            b[8 * i + j] = (unsigned char)(sorted[i] >> (56 - 8 * j));
    EVP_Digest(b, (size_t)n * 8, md, NULL, EVP_sha1(), NULL);
    return be64(md);
}

/* Finds this member's peer URLs in --initial-cluster, computes every
 * member's ID, and refuses clusters of more than one member (replication is
 * not built yet). */
static int identity(struct server *s)
{
    char *ic = cairn_strdup(s->cfg.initial_cluster), *ents[64];
    int n = config_split(ic, ents, 64), mine = 0;
    char *names[64];
    uint64_t ids[64];
    int nm = 0;

    for (int i = 0; i < n; i++) {
        char *eq = strchr(ents[i], '=');
        if (eq == NULL) {
            log_errorw("--initial-cluster: an entry is not name=url",
                       LOG_STR("entry", ents[i]));
            return -1;
        }
        *eq = 0;
        int found = -1;
        for (int j = 0; j < nm; j++)
            if (strcmp(names[j], ents[i]) == 0)
                found = j;
        if (found < 0) {
            names[nm++] = ents[i];
        }
        if (strcmp(ents[i], s->cfg.name) == 0) {
            s->peer_urls[s->n_peer_urls++] = eq + 1;
            mine = 1;
        }
    }
    if (!mine) {
        char e[512];
        snprintf(e, sizeof e, "couldn't find local name \"%s\" in the "
                 "initial cluster configuration", s->cfg.name);
        log_errorw("discovery failed", LOG_STR("error", e)); /* etcd's words */
        return -1;
    }
    if (nm > 1) {
        log_errorw("--initial-cluster names more than one member; replication "
                   "is not built yet, so cairn runs one member only",
                   LOG_INT("members", nm));
        return -1;
    }
    s->member_id = server_member_id(s->peer_urls, s->n_peer_urls,
                                    s->cfg.initial_cluster_token);
    ids[0] = s->member_id;
    s->cluster_id = server_cluster_id(ids, 1);
    char *cu = cairn_strdup(s->cfg.advertise_client_urls);
    s->n_client_urls = config_split(cu, s->client_urls, CONFIG_MAX_URLS);
    return 0;
}

/* An etcd data dir (member/snap/db, member/wal) is not ours to write
 * into: refuse rather than start empty beside it. */
static int etcd_data_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/member/wal", dir);
    if (access(path, F_OK) != 0)
        return 0;
    log_error("server: %s holds an etcd data directory (member/wal); cairn "
              "does not read etcd's on-disk format. Use another --data-dir.",
              dir);
    return 1;
}

static uv_signal_t sig_term, sig_int;
static uv_timer_t trim_timer;

/* Bursts (a watch fan-out, a large range) leave freed memory in malloc's
 * arenas; give it back to the system now and then. */
static void on_trim(uv_timer_t *t)
{
    (void)t;
    malloc_trim(0);
}

static void on_net_closed(void)
{
    /* Every connection is gone: finish the write path and stop. */
    apply_stop(srv->apply);
    srv->apply = NULL;
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&trim_timer, NULL);
    uv_stop(srv->loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    if (srv->stopping)
        return;
    srv->stopping = 1;
    log_infow("received signal; shutting down",
              LOG_STR("signal", signum == SIGTERM ? "terminated" : "interrupt"));
    int rc = server_sd_notify("STOPPING=1");
    if (rc < 0)
        log_warnw("failed to notify systemd of stopping",
                  LOG_STR("error", strerror(-rc)));
    watch_shutdown(); /* watch streams would hold connections open */
    lease_shutdown();
    net_shutdown(srv->loop, SHUTDOWN_GRACE_MS, on_net_closed);
}

/* Go's time.Duration.String() for the durations etcd logs ("401.415µs",
 * "2.181616ms", "7s", "1m30s"). */
static void go_duration(int64_t ns, char *out, size_t n)
{
    static const struct {
        int64_t unit;
        const char *name;
    } small[] = {{1000000, "ms"}, {1000, "µs"}};
    if (ns == 0) {
        snprintf(out, n, "0s");
        return;
    }
    if (ns < 1000) {
        snprintf(out, n, "%lldns", (long long)ns);
        return;
    }
    char frac[32];
    int64_t unit = 1000000000, whole, part;
    const char *name = "s";
    int digits = 9;
    for (int i = 0; i < 2 && ns < 1000000000; i++) {
        if (ns >= small[i].unit) {
            unit = small[i].unit, name = small[i].name;
            digits = i == 0 ? 6 : 3;
            break;
        }
    }
    whole = ns / unit, part = ns % unit;
    frac[0] = 0;
    if (part) {
        snprintf(frac, sizeof frac, ".%0*lld", digits, (long long)part);
        for (size_t l = strlen(frac); frac[l - 1] == '0'; l--)
            frac[l - 1] = 0;
    }
    if (unit == 1000000000 && whole >= 60) {
        int64_t h = whole / 3600, m = whole % 3600 / 60, sec = whole % 60;
        if (h)
            snprintf(out, n, "%lldh%lldm%lld%ss", (long long)h, (long long)m,
                     (long long)sec, frac);
        else
            snprintf(out, n, "%lldm%lld%ss", (long long)m, (long long)sec, frac);
        return;
    }
    snprintf(out, n, "%lld%s%s", (long long)whole, frac, name);
}

static int64_t mono_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* etcd's setupLogging (embed/config_logging.go) and zap's level names:
 * the errors etcd reports as "failed to verify flags". */
static int setup_logging(const struct config *c, char *err, size_t n)
{
    if (strcmp(c->logger, "capnslog") == 0) {
        snprintf(err, n, "--logger=capnslog is removed in v3.5");
        return -1;
    }
    if (strcmp(c->logger, "zap") != 0) {
        snprintf(err, n, "unknown logger option \"%s\"", c->logger);
        return -1;
    }
    if (log_set_level(c->log_level) != 0) {
        snprintf(err, n, "unrecognized level: \"%s\"", c->log_level);
        return -1;
    }
    return log_set_outputs(c->log_outputs, err, n) == 0 ? 0 : -1;
}

/* The URL lists the start-up lines show, split once. Static, so the
 * copies stay reachable for the process (no leak reports). */
struct urls {
    char *copy;
    char *v[CONFIG_MAX_URLS];
    int n;
};
static struct {
    struct urls iapu, lpu, acu, lcu, lmu;
} start_urls;

static void urls_split(struct urls *u, const char *list)
{
    if (list == NULL)
        return;
    u->copy = cairn_strdup(list);
    u->n = config_split(u->copy, u->v, CONFIG_MAX_URLS);
}

static void urls_init(const struct config *c)
{
    urls_split(&start_urls.iapu, c->initial_advertise_peer_urls);
    urls_split(&start_urls.lpu, c->listen_peer_urls);
    urls_split(&start_urls.acu, c->advertise_client_urls);
    urls_split(&start_urls.lcu, c->listen_client_urls);
    urls_split(&start_urls.lmu, c->listen_metrics_urls);
}

#define LOG_URLS(k, u) LOG_STRS(k, (u).v, (u).n)

static void log_starting(const struct server *s, int initialized)
{
    const struct config *c = &s->cfg;
    char hb[32], el[32], member[4096];

    urls_init(c);

    go_duration(c->heartbeat_ms * 1000000, hb, sizeof hb);
    go_duration(c->election_ms * 1000000, el, sizeof el);
    snprintf(member, sizeof member, "%s/member", c->data_dir);
    log_infow("configuring client listeners", LOG_URLS("listen-client-urls", start_urls.lcu));
    /* etcd's keys only (a subset): tools that read these lines find
     * what they know. */
    log_infow("starting an etcd server", LOG_STR("etcd-version", CAIRN_ETCD_VERSION),
              LOG_BOOL("member-initialized", initialized), LOG_STR("name", c->name),
              LOG_STR("data-dir", c->data_dir), LOG_STR("member-dir", member),
              LOG_BOOL("force-new-cluster", 0), LOG_STR("heartbeat-interval", hb),
              LOG_STR("election-timeout", el), LOG_INT("snapshot-count", c->snapshot_count),
              LOG_URLS("initial-advertise-peer-urls", start_urls.iapu),
              LOG_URLS("listen-peer-urls", start_urls.lpu),
              LOG_URLS("advertise-client-urls", start_urls.acu),
              LOG_URLS("listen-client-urls", start_urls.lcu),
              LOG_URLS("listen-metrics-urls", start_urls.lmu),
              LOG_STR("initial-cluster", initialized ? "" : c->initial_cluster),
              LOG_STR("initial-cluster-state", c->initial_cluster_state),
              LOG_STR("initial-cluster-token", initialized ? "" : c->initial_cluster_token),
              LOG_INT("quota-backend-bytes", c->quota_backend_bytes
                                                 ? c->quota_backend_bytes
                                                 : (int64_t)2 << 30),
              LOG_INT("max-request-bytes", c->max_request_bytes),
              LOG_STR("auto-compaction-mode", c->auto_compaction_mode),
              LOG_STR("auto-compaction-retention", c->auto_compaction_retention));
}

static void log_now_serving(const struct server *s)
{
        char id[17];
        snprintf(id, sizeof id, "%016llx", (unsigned long long)s->member_id);
        log_infow("now serving peer/client/metrics", LOG_STR("local-member-id", id),
                  LOG_URLS("initial-advertise-peer-urls", start_urls.iapu),
                  LOG_URLS("listen-peer-urls", start_urls.lpu),
                  LOG_URLS("advertise-client-urls", start_urls.acu),
                  LOG_URLS("listen-client-urls", start_urls.lcu),
                  LOG_URLS("listen-metrics-urls", start_urls.lmu));
}

static uv_timer_t ready_timer;
static int member_initialized;

/* The first loop iteration: the listeners accept (listen(2) ran before the
 * loop started), so now is when etcd would say it serves. Tools wait for
 * "ready to serve client requests"; systemd for READY=1. */
static void on_ready(uv_timer_t *t)
{
    const struct config *c = &srv->cfg;
    char id[17], cid[17], attrs[4096], path[64], timeout[32];
    size_t n = 0;

    uv_close((uv_handle_t *)t, NULL);
    snprintf(id, sizeof id, "%016llx", (unsigned long long)srv->member_id);
    snprintf(cid, sizeof cid, "%016llx", (unsigned long long)srv->cluster_id);
    /* Go's %+v of the member's attributes */
    n += (size_t)snprintf(attrs, sizeof attrs, "{Name:%s ClientURLs:[", c->name);
    for (int i = 0; i < srv->n_client_urls && n < sizeof attrs; i++)
        n += (size_t)snprintf(attrs + n, sizeof attrs - n, "%s%s", i ? " " : "",
                              srv->client_urls[i]);
    if (n < sizeof attrs)
        snprintf(attrs + n, sizeof attrs - n, "]}");
    snprintf(path, sizeof path, "/0/members/%s/attributes", id);
    /* etcd's ReqTimeout: 5s + 2 election timeouts */
    go_duration((5000 + 2 * c->election_ms) * 1000000, timeout, sizeof timeout);
    log_infow("published local member to cluster through raft",
              LOG_STR("local-member-id", id), LOG_STR("local-member-attributes", attrs),
              LOG_STR("request-path", path), LOG_STR("cluster-id", cid),
              LOG_STR("publish-timeout", timeout));
    log_info("ready to serve client requests");
    if (!member_initialized)
        log_infow("set initial cluster version", LOG_STR("cluster-id", cid),
                  LOG_STR("local-member-id", id), LOG_STR("cluster-version", "3.6"));
    log_infow("enabled capabilities for version", LOG_STR("cluster-version", "3.6"));
    for (int i = 0; i < start_urls.lcu.n; i++) {
        const char *addr = strstr(start_urls.lcu.v[i], "://");
        addr = addr ? addr + 3 : start_urls.lcu.v[i];
        log_infow("serving client traffic insecurely; this is strongly discouraged!",
                  LOG_STR("address", addr));
    }
    log_info("notifying init daemon");
    int rc = server_sd_notify("READY=1");
    if (rc < 0)
        log_errorw("failed to notify systemd for readiness",
                   LOG_STR("error", strerror(-rc)));
    else
        log_info("successfully notified init daemon");
}

/* Each start is a new term, as a single etcd member campaigns again. */
static int load_term(struct server *s)
{
    struct mvcc_txn t;
    int rc = mvcc_write_begin(s->mvcc, &t);
    if (rc != 0)
        return rc;
    s->raft_term = (uint64_t)mvcc_meta_get(&t, "term", 1) + 1;
    rc = mvcc_meta_put(&t, "term", (int64_t)s->raft_term);
    if (rc == 0)
        rc = mvcc_write_commit(&t);
    else
        mvcc_write_abort(&t);
    return rc;
}

int main(int argc, char **argv)
{
    static struct server server;
    struct net_opts nopts;
    char *urls[CONFIG_MAX_URLS];
    int rc, n;

    srv = &server;
    signal(SIGPIPE, SIG_IGN);
    rc = config_parse(&server.cfg, argc, argv);
    if (rc == 1) {
        if (server.cfg.show_version)
            printf("cairn Version: %s\netcd API Version: %s\n", CAIRN_VERSION,
                   CAIRN_ETCD_VERSION);
        return 0;
    }
    if (rc == 2)
        return 2;
    /* etcdmain: errors found after flag parsing (the config file, the
     * logger) are logged as "failed to verify flags", exit 1. */
    char lerr[512];
    if (rc == 0 && setup_logging(&server.cfg, lerr, sizeof lerr) != 0)
        rc = 3;
    else if (rc == 3)
        snprintf(lerr, sizeof lerr, "%s", server.cfg.error);
    if (rc == 0 && server.cfg.from_file)
        log_infow("loaded server configuration, other configuration command "
                  "line flags and environment variables will be ignored if provided",
                  LOG_STR("path", server.cfg.config_file));
    log_infow("Running: ", LOG_STRS("args", argv, argc));
    if (rc != 0) {
        log_warnw("failed to verify flags", LOG_STR("error", lerr));
        return 1;
    }
    if (identity(&server) != 0)
        return 2;
    server.loop = uv_default_loop();
    if (etcd_data_dir(server.cfg.data_dir))
        return 1;
    member_initialized = access(server.cfg.data_dir, F_OK) == 0;
    log_starting(&server, member_initialized);
    int64_t t0 = mono_ns();
    rc = mvcc_open(server.cfg.data_dir, MAP_SIZE, &server.mvcc);
    if (rc != 0) {
        log_error("server: cannot open data dir %s: %s", server.cfg.data_dir,
                  cairn_err_msg(rc));
        return 1;
    }
    if ((rc = load_term(&server)) != 0) {
        log_error("server: cannot write to data dir: %s", cairn_err_msg(rc));
        return 1;
    }
    {
        char took[32], db[4096], id[17], cid[17];
        go_duration(mono_ns() - t0, took, sizeof took);
        snprintf(db, sizeof db, "%s/data.mdb", server.cfg.data_dir);
        snprintf(id, sizeof id, "%016llx", (unsigned long long)server.member_id);
        snprintf(cid, sizeof cid, "%016llx", (unsigned long long)server.cluster_id);
        log_infow("opened backend db", LOG_STR("path", db), LOG_STR("took", took));
        log_infow(member_initialized ? "restarting local member" : "starting local member",
                  LOG_STR("local-member-id", id), LOG_STR("cluster-id", cid));
        log_infow("starting etcd server", LOG_STR("local-member-id", id),
                  LOG_STR("local-server-version", CAIRN_ETCD_VERSION),
                  LOG_STR("cluster-version", "to_be_decided"));
    }
    struct apply_header hdr = {server.cluster_id, server.member_id,
                               server.raft_term};
    if (apply_start(server.loop, server.mvcc, &hdr, &server.apply) != 0) {
        log_error("server: cannot start the apply thread");
        return 1;
    }
    struct watch_opts wo = {server.cluster_id, server.member_id,
                            server.raft_term,
                            /* etcd: MaxRequestBytes + grpcOverheadBytes */
                            (size_t)server.cfg.max_request_bytes + 512 * 1024,
                            server.cfg.progress_notify_ms};
    /* etcd's floor for the progress interval is 100 ms. */
    if (wo.progress_interval_ms < 100)
        wo.progress_interval_ms = 100;
    watch_init(server.loop, server.mvcc, rpc_current_rev(), &wo);
    apply_on_commit(server.apply, watch_notify);
    /* etcd: minTTL = ceil(((3 * electionTicks) / 2) * heartbeat). */
    int64_t ticks = server.cfg.heartbeat_ms > 0
                        ? server.cfg.election_ms / server.cfg.heartbeat_ms
                        : 10;
    int64_t min_ttl_ms = (3 * ticks) / 2 * server.cfg.heartbeat_ms;
    struct lease_opts lo = {(min_ttl_ms + 999) / 1000, server.member_id};
    if (lease_init(server.loop, server.mvcc, server.apply, &lo) != 0) {
        log_error("server: cannot load leases");
        return 1;
    }
    /* gRPC's receive limit is the request limit plus 512 KiB of headroom
     * (etcd's v3rpc/grpc.go). */
    nopts.max_recv_bytes = (size_t)server.cfg.max_request_bytes + 512 * 1024;
    nopts.max_streams = 1u << 20;
    char *lcu = cairn_strdup(server.cfg.listen_client_urls);
    n = config_split(lcu, urls, CONFIG_MAX_URLS);
    for (int i = 0; i < n; i++) {
        rc = net_listen(server.loop, urls[i], &nopts);
        if (rc == -EPROTONOSUPPORT) {
            log_error("server: %s: TLS listeners are not supported yet", urls[i]);
            return 1;
        }
        if (rc != 0) {
            log_error("server: cannot listen on %s: %s", urls[i],
                      rc == -EINVAL ? "invalid URL" : uv_strerror(rc));
            return 1;
        }
    }
    cairn_free(lcu);
    uv_timer_init(server.loop, &trim_timer);
    uv_timer_start(&trim_timer, on_trim, 10000, 10000);
    uv_unref((uv_handle_t *)&trim_timer);
    uv_signal_init(server.loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_init(server.loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    log_now_serving(&server);
    uv_timer_init(server.loop, &ready_timer);
    uv_timer_start(&ready_timer, on_ready, 0, 0);
    uv_run(server.loop, UV_RUN_DEFAULT);
    mvcc_close(server.mvcc);
    log_info("server: stopped");
    return 0;
}
