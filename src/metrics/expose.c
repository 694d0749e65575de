/* The /metrics body: every family with etcd's name, help text, type and
 * label names, in name order as client_golang writes them. Values come from
 * the counters in metrics.c, from the store and the apply thread at scrape
 * time, and from /proc/self. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "metrics/metrics_int.h"
#include "repl/repl.h"
#include "rpc/rpc.h"
#include "server/server.h"


#define E (&metrics__etcd)

static void one(struct buf *b, const char *name, const char *help,
                const char *type, double v)
{
    metrics_write_header(b, name, help, type);
    metrics_write_sample(b, name, NULL, NULL, 0, v);
}

static void labelled(struct buf *b, const char *name, const char *help,
                     const char *label, const char *value, double v)
{
    struct metrics_label l = {label, value};
    metrics_write_header(b, name, help, "gauge");
    metrics_write_sample(b, name, NULL, &l, 1, v);
}

static double counter(struct metrics_counter *c)
{
    return (double)metrics_counter_get(c);
}

static double gauge(struct metrics_gauge *g)
{
    return (double)metrics_gauge_get(g);
}

/* ---- the store, read at scrape time ---- */

struct store_view {
    int ok;
    int64_t rev, compact_rev, keys, size, in_use;
};

static void read_store(struct store_view *sv)
{
    struct mvcc_txn t;

    memset(sv, 0, sizeof *sv);
    mvcc_size(srv->mvcc, &sv->size, &sv->in_use);
    if (mvcc_read_begin(srv->mvcc, &t) != 0)
        return;
    sv->rev = t.rev;
    sv->compact_rev = t.compact_rev;
    /* kept by the store's commits: a scrape costs no scan */
    sv->keys = mvcc_keys(srv->mvcc);
    sv->ok = 1;
    mvcc_read_end(&t);
}

/* ---- the process, from /proc/self (as client_golang's procfs) ---- */

struct proc_view {
    int ok;
    double cpu, start, vsize, rss;
    long open_fds, max_fds;
    double max_vm;
};

static long boot_time(void)
{
    char line[256];
    long bt = 0;
    FILE *f = fopen("/proc/stat", "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "btime %ld", &bt) == 1)
            break;
    fclose(f);
    return bt;
}

static long count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    long n = 0;
    if (d == NULL)
        return -1;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

static void read_proc(struct proc_view *pv)
{
    char buf[1024];
    unsigned long utime, stime, vsize;
    unsigned long long starttime;
    long rss;
    double tck = (double)sysconf(_SC_CLK_TCK);
    struct rlimit rl;

    memset(pv, 0, sizeof *pv);
    FILE *f = fopen("/proc/self/stat", "r");
    if (f == NULL)
        return;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    /* The command name may hold spaces and parentheses: fields start
     * after the last ')'. Fields 14, 15, 22, 23, 24 of proc(5). */
    char *p = strrchr(buf, ')');
    if (p == NULL ||
        sscanf(p + 2,
               "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu %*d %*d "
               "%*d %*d %*d %*d %llu %lu %ld",
               &utime, &stime, &starttime, &vsize, &rss) != 5)
        return;
    pv->cpu = (double)(utime + stime) / tck;
    pv->start = (double)boot_time() + (double)starttime / tck;
    pv->vsize = (double)vsize;
    pv->rss = (double)rss * (double)sysconf(_SC_PAGESIZE);
    pv->open_fds = count_fds();
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        pv->max_fds = (long)rl.rlim_cur;
    pv->max_vm = getrlimit(RLIMIT_AS, &rl) == 0 ? (double)rl.rlim_cur : 0;
    pv->ok = 1;
}

/* ---- families ---- */

static void expose_client_requests(struct buf *b)
{
    static const char *const types[2] = {"unary", "stream"};
    const char *name = "etcd_server_client_requests_total";
    metrics_write_header(b, name,
                         "The total number of client requests per client "
                         "version.",
                         "counter");
    for (int t = 0; t < 2; t++) {
        struct metrics_client_requests *cr = &E->requests[t];
        struct metrics_label l[2] = {{"client_api_version", NULL},
                                     {"type", types[t]}};
        for (int i = 0; i < cr->used; i++) {
            l[0].value = cr->version[i];
            metrics_write_sample(b, name, NULL, l, 2, counter(&cr->n[i]));
        }
        if (metrics_counter_get(&cr->other) > 0) {
            l[0].value = "other";
            metrics_write_sample(b, name, NULL, l, 2, counter(&cr->other));
        }
    }
}

/* go-grpc-prometheus' families; labels in the order client_golang sorts
 * them. */
static void expose_grpc(struct buf *b)
{
    struct metrics_label l[4];
    const char *name = "grpc_server_handled_total";

    metrics_write_header(b, name,
                         "Total number of RPCs completed on the server, "
                         "regardless of success or failure.",
                         "counter");
    for (int i = 0; i < metrics__nmethods; i++) {
        struct metrics_grpc_method *m = &metrics__methods[i];
        for (int c = 0; c < METRICS_NCODES; c++) {
            l[0] = (struct metrics_label){"grpc_code", metrics__code_names[c]};
            l[1] = (struct metrics_label){"grpc_method", m->method};
            l[2] = (struct metrics_label){"grpc_service", m->service};
            l[3] = (struct metrics_label){"grpc_type", m->type};
            metrics_write_sample(b, name, NULL, l, 4, counter(&m->handled[c]));
        }
    }
    static const struct {
        const char *name, *help;
        size_t off;
    } fams[] = {
        {"grpc_server_msg_received_total",
         "Total number of RPC stream messages received on the server.",
         offsetof(struct metrics_grpc_method, received)},
        {"grpc_server_msg_sent_total",
         "Total number of gRPC stream messages sent by the server.",
         offsetof(struct metrics_grpc_method, sent)},
        {"grpc_server_started_total",
         "Total number of RPCs started on the server.",
         offsetof(struct metrics_grpc_method, started)},
    };
    for (size_t f = 0; f < sizeof fams / sizeof fams[0]; f++) {
        metrics_write_header(b, fams[f].name, fams[f].help, "counter");
        for (int i = 0; i < metrics__nmethods; i++) {
            struct metrics_grpc_method *m = &metrics__methods[i];
            l[0] = (struct metrics_label){"grpc_method", m->method};
            l[1] = (struct metrics_label){"grpc_service", m->service};
            l[2] = (struct metrics_label){"grpc_type", m->type};
            metrics_write_sample(
                b, fams[f].name, NULL, l, 3,
                counter((struct metrics_counter *)((char *)m + fams[f].off)));
        }
    }
}

static void expose_store(struct buf *b, const struct store_view *sv)
{
    one(b, "etcd_debugging_mvcc_compact_revision",
        "The revision of the last compaction in store.", "gauge",
        (double)sv->compact_rev);
    one(b, "etcd_debugging_mvcc_current_revision",
        "The current revision of store.", "gauge", (double)sv->rev);
    /* A store that cannot be read exposes no key count rather than 0. */
    if (sv->ok)
        one(b, "etcd_debugging_mvcc_keys_total", "Total number of keys.",
            "gauge", (double)sv->keys);
    one(b, "etcd_debugging_mvcc_watch_stream_total",
        "Total number of watch streams.", "gauge", gauge(&E->watch_streams));
    one(b, "etcd_debugging_mvcc_watcher_total", "Total number of watchers.",
        "gauge", gauge(&E->watchers));
}

static void expose_server(struct buf *b)
{
    char id[32], ver[32];
    double applied = (double)apply_index(srv->apply);
    double committed = (double)repl_commit_index();
    /* etcd sets the gauge to the flag, then to the default when 0 */
    int64_t quota = srv->cfg.quota_backend_bytes < 0 ? srv->cfg.quota_backend_bytes
                                                     : rpc_quota_bytes();

    expose_client_requests(b);
    one(b, "etcd_server_has_leader",
        "Whether or not a leader exists. 1 is existence, 0 is not.", "gauge",
        repl_leader() != 0);
    one(b, "etcd_server_health_failures",
        "The total number of failed health checks", "counter",
        counter(&E->health_failures));
    one(b, "etcd_server_health_success",
        "The total number of successful health checks", "counter",
        counter(&E->health_success));
    /* etcd prints the ID with strconv.FormatUint(id, 16): no padding. */
    snprintf(id, sizeof id, "%llx", (unsigned long long)srv->member_id);
    labelled(b, "etcd_server_id",
             "Server or member ID in hexadecimal format. 1 for 'server_id' "
             "label with current ID.",
             "server_id", id, 1);
    one(b, "etcd_server_is_leader",
        "Whether or not this member is a leader. 1 if is, 0 otherwise.",
        "gauge", repl_is_leader());
    one(b, "etcd_server_is_learner",
        "Whether or not this member is a learner. 1 if is, 0 otherwise.",
        "gauge", repl_is_learner());
    one(b, "etcd_server_leader_changes_seen_total",
        "The number of leader changes seen.", "counter",
        (double)repl_leader_changes());
    one(b, "etcd_server_proposals_applied_total",
        "The total number of consensus proposals applied.", "gauge", applied);
    one(b, "etcd_server_proposals_committed_total",
        "The total number of consensus proposals committed.", "gauge", committed);
    one(b, "etcd_server_proposals_failed_total",
        "The total number of failed proposals seen.", "counter",
        counter(&E->proposals_failed));
    one(b, "etcd_server_proposals_pending",
        "The current number of pending proposals to commit.", "gauge",
        gauge(&E->proposals_pending));
    one(b, "etcd_server_quota_backend_bytes",
        "Current backend storage quota size in bytes.", "gauge",
        (double)quota);
    one(b, "etcd_server_slow_apply_total",
        "The total number of slow apply requests (likely overloaded from "
        "slow disk).",
        "counter", counter(&E->slow_apply));
    snprintf(ver, sizeof ver, "%s", CAIRN_ETCD_VERSION);
    labelled(b, "etcd_server_version",
             "Which version is running. 1 for 'server_version' label with "
             "current version.",
             "server_version", ver, 1);
}

static void expose_process(struct buf *b)
{
    struct proc_view pv;
    read_proc(&pv);
    if (!pv.ok)
        return; /* no /proc: nothing true to say */
    one(b, "os_fd_limit", "The file descriptor limit.", "gauge",
        (double)pv.max_fds);
    one(b, "os_fd_used", "The number of used file descriptors.", "gauge",
        (double)pv.open_fds);
    one(b, "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.", "counter", pv.cpu);
    one(b, "process_max_fds", "Maximum number of open file descriptors.",
        "gauge", (double)pv.max_fds);
    one(b, "process_open_fds", "Number of open file descriptors.", "gauge",
        (double)pv.open_fds);
    one(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
        "gauge", pv.rss);
    one(b, "process_start_time_seconds",
        "Start time of the process since unix epoch in seconds.", "gauge",
        pv.start);
    one(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.",
        "gauge", pv.vsize);
    one(b, "process_virtual_memory_max_bytes",
        "Maximum amount of virtual memory available in bytes.", "gauge",
        pv.max_vm);
}

void metrics_expose(struct buf *b)
{
    struct store_view sv;
    char cv[16];

    metrics__init();
    read_store(&sv);
    /* etcd's cluster version label is major.minor ("3.4"). */
    snprintf(cv, sizeof cv, "%s", CAIRN_ETCD_CLUSTER_VERSION);
    char *dot = strchr(cv, '.');
    if (dot != NULL && (dot = strchr(dot + 1, '.')) != NULL)
        *dot = 0;
    /* cairn's own: encryption at rest (--experimental-encryption-key-file). */
    one(b, "cairn_encryption_key_rotations_total",
        "Encryption key rotations started (the key file's first key became "
        "the active key).",
        "counter", counter(&E->encryption_rotations));
    one(b, "cairn_encryption_records_pending",
        "Records the re-encryption pass has still to visit (0 when none "
        "runs).",
        "gauge", (double)mvcc_seal_pending(srv->mvcc));
    labelled(b, "etcd_cluster_version",
             "Which version is running. 1 for 'cluster_version' label with "
             "current cluster version",
             "cluster_version", cv, 1);
    one(b, "etcd_debugging_lease_granted_total",
        "The total number of granted leases.", "counter",
        counter(&E->lease_granted));
    one(b, "etcd_debugging_lease_renewed_total",
        "The number of renewed leases seen by the leader.", "counter",
        counter(&E->lease_renewed));
    one(b, "etcd_debugging_lease_revoked_total",
        "The total number of revoked leases.", "counter",
        counter(&E->lease_revoked));
    expose_store(b, &sv);
    metrics_write_histogram(b, "etcd_disk_backend_commit_duration_seconds",
                            "The latency distributions of commit called by "
                            "backend.",
                            &E->backend_commit);
    metrics_write_histogram(b, "etcd_disk_wal_fsync_duration_seconds",
                            "The latency distributions of fsync called by WAL.",
                            &E->wal_fsync);
    one(b, "etcd_mvcc_db_total_size_in_bytes",
        "Total size of the underlying database physically allocated in bytes.",
        "gauge", (double)sv.size);
    one(b, "etcd_mvcc_db_total_size_in_use_in_bytes",
        "Total size of the underlying database logically in use in bytes.",
        "gauge", (double)sv.in_use);
    one(b, "etcd_mvcc_delete_total",
        "Total number of deletes seen by this member.", "counter",
        counter(&E->del));
    one(b, "etcd_mvcc_put_total", "Total number of puts seen by this member.",
        "counter", counter(&E->put));
    one(b, "etcd_mvcc_range_total",
        "Total number of ranges seen by this member.", "counter",
        counter(&E->range));
    one(b, "etcd_mvcc_txn_total", "Total number of txns seen by this member.",
        "counter", counter(&E->txn));
    one(b, "etcd_network_client_grpc_received_bytes_total",
        "The total number of bytes received from grpc clients.", "counter",
        counter(&E->grpc_received_bytes));
    one(b, "etcd_network_client_grpc_sent_bytes_total",
        "The total number of bytes sent to grpc clients.", "counter",
        counter(&E->grpc_sent_bytes));
    expose_server(b);
    expose_grpc(b);
    expose_process(b);
}
