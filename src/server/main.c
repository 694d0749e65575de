/* argv -> config -> store -> apply thread -> listeners -> loop. */
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "lease/lease.h"
#include "net/net.h"
#include "net/tls.h"
#include "repl/repl.h"
#include "rpc/icall.h"
#include "rpc/rpc.h"
#include "server/compactor.h"
#include "server/encryption.h"
#include "server/notify.h"
#include "server/startup.h"
#include "server/server.h"
#include "server/tls_flags.h"
#include "snap/cli.h"
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

/* Finds this member's peer URLs in --initial-cluster and computes the
 * member and cluster IDs as etcd does (every member's ID from its peer URLs
 * and the cluster token; the cluster's from the sorted member IDs). */
static int identity(struct server *s)
{
    char *ic = cairn_strdup(s->cfg.initial_cluster), *ents[128];
    int n = config_split(ic, ents, 128), mine = 0;
    char *names[64];
    char *urls[64][CONFIG_MAX_URLS];
    int nurls[64];
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
            if (nm == 64) {
                log_error("--initial-cluster: more than 64 members");
                return -1;
            }
            found = nm;
            names[nm] = ents[i];
            nurls[nm++] = 0;
        }
        if (nurls[found] < CONFIG_MAX_URLS)
            urls[found][nurls[found]++] = eq + 1;
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
    s->member_id = server_member_id(s->peer_urls, s->n_peer_urls,
                                    s->cfg.initial_cluster_token);
    for (int j = 0; j < nm; j++)
        ids[j] = server_member_id(urls[j], nurls[j], s->cfg.initial_cluster_token);
    s->cluster_id = server_cluster_id(ids, nm);
    char *cu = cairn_strdup(s->cfg.advertise_client_urls);
    s->n_client_urls = config_split(cu, s->client_urls, CONFIG_MAX_URLS);
    return 0;
}

/* A member keeps the identity it started with: etcd ignores
 * --initial-cluster once the data dir holds a member (its ID is in the
 * WAL), and so does cairn: <data-dir>/member/identity holds the member and
 * cluster IDs (a file of this member's own, never part of a store image a
 * leader sends). Written atomically at the first start. */
int server_identity_save(struct server *s, uint64_t member_id,
                         uint64_t cluster_id)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/member/identity", s->cfg.data_dir);
    snprintf(tmp, sizeof tmp, "%s/member", s->cfg.data_dir);
    mkdir(s->cfg.data_dir, 0700);
    mkdir(tmp, 0700);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fprintf(f, "%016llx %016llx\n", (unsigned long long)member_id,
            (unsigned long long)cluster_id);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
        fclose(f);
        return -1;
    }
    fclose(f);
    if (rename(tmp, path) != 0)
        return -1;
    s->member_id = member_id;
    s->cluster_id = cluster_id;
    return 0;
}

static int stored_identity(struct server *s)
{
    char path[4096], line[128];
    unsigned long long mid, cid;
    snprintf(path, sizeof path, "%s/member/identity", s->cfg.data_dir);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        int ok = fgets(line, sizeof line, f) != NULL &&
                 sscanf(line, "%llx %llx", &mid, &cid) == 2;
        fclose(f);
        if (!ok) {
            log_error("server: %s is damaged", path);
            return -1;
        }
        if (mid != s->member_id)
            log_infow("the data dir holds a member: its ID is kept (as etcd, "
                      "--initial-cluster applies to a new member only)",
                      LOG_UINT("member-id", mid));
        s->member_id = mid;
        s->cluster_id = cid;
        return 0;
    }
    if (strcmp(s->cfg.initial_cluster_state, "existing") == 0) {
        /* Joining: the cluster names this member's IDs (etcd asks the
         * peers for them); the first member that dials it tells them
         * (repl: adopt), and they are kept then. */
        s->joining = 1;
        return 0;
    }
    return server_identity_save(s, s->member_id, s->cluster_id);
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

static void on_repl_stopped(void)
{
    /* raft is closed: nothing feeds the write path any more */
    apply_stop(srv->apply);
    srv->apply = NULL;
    uv_close((uv_handle_t *)&sig_term, NULL);
    uv_close((uv_handle_t *)&sig_int, NULL);
    uv_close((uv_handle_t *)&trim_timer, NULL);
    server_encryption_stop();
    uv_stop(srv->loop);
}

static void on_net_closed(void)
{
    /* Every connection is gone: leave raft, then finish the write path. */
    repl_stop(on_repl_stopped);
}

static void stop_serving(void)
{
    watch_shutdown(); /* watch streams would hold connections open */
    lease_shutdown();
    server_compactor_stop();
    net_shutdown(srv->loop, SHUTDOWN_GRACE_MS, on_net_closed);
}

static int restart_after;
static char **saved_argv;

void server_stop(const char *why)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    log_warnw("server: stopping", LOG_STR("reason", why));
    stop_serving();
}

void server_restart(void)
{
    if (srv->stopping)
        return;
    srv->stopping = 1;
    restart_after = 1;
    stop_serving();
}

/* A store image from the leader (repl) replaces the store before it is
 * opened: atomically, by rename. */
static int put_image_in_place(const char *dir)
{
    char image[4096], data[4096];
    repl_image_path(dir, image, sizeof image);
    if (access(image, F_OK) != 0)
        return 0;
    snprintf(data, sizeof data, "%s/data.mdb", dir);
    if (rename(image, data) != 0) {
        log_error("server: cannot put the store image %s in place: %s", image,
                  strerror(errno));
        return -1;
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    log_infow("server: the store image from the leader is in place",
              LOG_STR("path", data));
    return 0;
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
    stop_serving();
}


/* Thread-pool jobs (lists, hashes, snapshot exports) hold read txns: the
 * store may close only once their completions have run. Their calls are
 * gone, so each just frees itself. Bounded: a stuck job cannot hold the
 * exit for more than 10 s. */
static void drain_pool(uv_loop_t *loop)
{
    for (int i = 0; loop->active_reqs.count > 0 && i < 10000; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
        if (loop->active_reqs.count > 0)
            uv_sleep(1);
    }
}

int main(int argc, char **argv)
{
    static struct server server;
    struct net_opts nopts = {0};
    char *urls[CONFIG_MAX_URLS];
    int rc, n;

    if (argc > 1 && strcmp(argv[1], "snapshot") == 0)
        return snap_cli(argc - 1, argv + 1);
    srv = &server;
    saved_argv = argv;
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
    if (rc == 0 && startup_logging(&server.cfg, lerr, sizeof lerr) != 0)
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
    int member_initialized = access(server.cfg.data_dir, F_OK) == 0;
    if (stored_identity(&server) != 0) {
        log_error("server: cannot keep the member's identity in %s",
                  server.cfg.data_dir);
        return 1;
    }
    startup_log_starting(&server, member_initialized);
    int64_t t0 = startup_now_ns();
    if (put_image_in_place(server.cfg.data_dir) != 0)
        return 1;
    rc = mvcc_open(server.cfg.data_dir, MAP_SIZE, &server.mvcc);
    if (rc != 0) {
        log_error("server: cannot open data dir %s: %s", server.cfg.data_dir,
                  cairn_err_msg(rc));
        return 1;
    }
    if (server_encryption_open(&server) != 0)
        return 1;
    startup_log_opened(&server, member_initialized, startup_now_ns() - t0);
    struct apply_header hdr = {server.cluster_id, server.member_id,
                               server.raft_term};
    if (apply_start(server.loop, server.mvcc, &hdr, &server.apply) != 0) {
        log_error("server: cannot start the apply thread");
        return 1;
    }
    if (server_compactor_start(server.loop, server.apply,
                               server.cfg.auto_compaction_mode,
                               server.cfg.auto_compaction_retention) != 0)
        return 2;
    struct watch_opts wo = {server.cluster_id, server.member_id,
                            &server.raft_term,
                            /* etcd: MaxRequestBytes + grpcOverheadBytes */
                            (size_t)server.cfg.max_request_bytes + 512 * 1024,
                            server.cfg.progress_notify_ms};
    /* etcd's floor for the progress interval is 100 ms. */
    if (wo.progress_interval_ms < 100)
        wo.progress_interval_ms = 100;
    watch_init(server.loop, server.mvcc, rpc_current_rev(), &wo);
    icall_init(server.loop);
    apply_on_commit(server.apply, watch_notify);
    apply_on_effects(server.apply, rpc_apply_effects);
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
    /* with --client-cert-auth a verified certificate's CN is the user
     * (grpc_call_peer_cn), as etcd */
    struct auth_opts ao = {server.cfg.auth_token, server.cfg.auth_token_ttl,
                           (int)server.cfg.bcrypt_cost,
                           server.cfg.client_cert_auth};
    char aerr[256];
    if (auth_init(server.loop, server.mvcc, &ao, aerr, sizeof aerr) != 0) {
        log_error("server: %s", aerr);
        return 1;
    }
    server.peer_cert_file = server.cfg.peer_cert_file;
    server.peer_key_file = server.cfg.peer_key_file;
    if (server.cfg.peer_auto_tls &&
        (server.peer_cert_file == NULL || server.peer_key_file == NULL)) {
        /* etcd's --peer-auto-tls: a self-signed certificate in
         * <data-dir>/fixtures/peer */
        static char pc[4096], pk[4096];
        char dir[4096], perr[256];
        snprintf(dir, sizeof dir, "%s/fixtures/peer", server.cfg.data_dir);
        if (net_tls_self_cert(dir, server.cfg.listen_peer_urls, pc, pk, perr,
                              sizeof perr) != 0) {
            log_errorw("failed to create peer self-signed certificate",
                       LOG_STR("error", perr));
            return 1;
        }
        server.peer_cert_file = pc;
        server.peer_key_file = pk;
    }
    /* last: raft may apply entries as soon as it starts, and the lessor,
     * watchers and auth cache follow what is applied */
    if (repl_start(server.loop, &server) != 0)
        return 1;
    /* gRPC's receive limit is the request limit plus 512 KiB of headroom
     * (etcd's v3rpc/grpc.go). */
    nopts.max_recv_bytes = (size_t)server.cfg.max_request_bytes + 512 * 1024;
    nopts.max_streams = 1u << 20;
    if (server_tls_start(&server) != 0)
        return 1;
    char *lcu = cairn_strdup(server.cfg.listen_client_urls);
    /* A joining member serves clients once the cluster has named it (it
     * starts again then): until then it would answer under IDs that are
     * not its own. */
    n = server.joining ? 0 : config_split(lcu, urls, CONFIG_MAX_URLS);
    if (server.joining)
        log_info("joining: waiting for the cluster to name this member "
                 "(the leader dials it once it is added)");
    for (int i = 0; i < n; i++) {
        rc = net_listen(server.loop, urls[i], &nopts);
        if (rc == -EPROTONOSUPPORT) {
            log_error("server: %s: unsupported URL scheme (http and https only)", urls[i]);
            return 1;
        }
        if (rc != 0) {
            log_error("server: cannot listen on %s: %s", urls[i],
                      rc == -EINVAL ? "invalid URL" : uv_strerror(rc));
            return 1;
        }
    }
    cairn_free(lcu);
    if (!server.joining && rpc_listen_metrics() != 0)
        return 1;
    uv_timer_init(server.loop, &trim_timer);
    uv_timer_start(&trim_timer, on_trim, 10000, 10000);
    uv_unref((uv_handle_t *)&trim_timer);
    uv_signal_init(server.loop, &sig_term);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_init(server.loop, &sig_int);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    server_encryption_watch(&server);
    startup_log_serving(&server);
    startup_ready_soon(server.loop, member_initialized);
    uv_run(server.loop, UV_RUN_DEFAULT);
    drain_pool(server.loop);
    auth_close();
    mvcc_close(server.mvcc);
    log_info("server: stopped");
    if (restart_after) {
        log_info("server: starting again");
        execv("/proc/self/exe", saved_argv);
        log_error("server: cannot start again: %s", strerror(errno));
        return 1;
    }
    return 0;
}
