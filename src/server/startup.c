/* etcd's start-up log lines, with etcd's messages and field names (tools
 * wait for "ready to serve client requests"), the logger set-up, and
 * systemd's READY=1. Loop thread only. */
#include "server/startup.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/mem.h"
#include "net/net.h"
#include "server/notify.h"

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

int64_t startup_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* etcd's setupLogging (embed/config_logging.go) and zap's level names:
 * the errors etcd reports as "failed to verify flags". */
int startup_logging(const struct config *c, char *err, size_t n)
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

void startup_log_starting(const struct server *s, int initialized)
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

void startup_log_serving(const struct server *s)
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

void startup_log_opened(const struct server *s, int initialized, int64_t took_ns)
{
    char took[32], db[4096], id[17], cid[17];
    go_duration(took_ns, took, sizeof took);
    snprintf(db, sizeof db, "%s/data.mdb", s->cfg.data_dir);
    snprintf(id, sizeof id, "%016llx", (unsigned long long)s->member_id);
    snprintf(cid, sizeof cid, "%016llx", (unsigned long long)s->cluster_id);
    log_infow("opened backend db", LOG_STR("path", db), LOG_STR("took", took));
    log_infow(initialized ? "restarting local member" : "starting local member",
              LOG_STR("local-member-id", id), LOG_STR("cluster-id", cid));
    log_infow("starting etcd server", LOG_STR("local-member-id", id),
              LOG_STR("local-server-version", CAIRN_ETCD_VERSION),
              LOG_STR("cluster-version", "to_be_decided"));
}

static int member_initialized, ready_done;

/* This member's attributes are in the cluster's records (repl's publish,
 * as etcd's publish): now is when etcd says it serves (the listeners
 * accept already). Tools wait for "ready to serve client requests";
 * systemd for READY=1. */
void startup_published(void)
{
    const struct config *c = &srv->cfg;
    char id[17], cid[17], attrs[4096], path[64], timeout[32];
    size_t n = 0;

    if (ready_done++)
        return;
    net_serve();
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

void startup_ready_soon(uv_loop_t *loop, int initialized)
{
    (void)loop;
    member_initialized = initialized;
}
