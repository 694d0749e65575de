/* Prometheus metrics: counters, gauges and histograms updated from any
 * thread (loop, apply thread, uv thread pool) with relaxed atomics and no
 * locks, and the text exposition format 0.0.4 built into one buffer.
 *
 * The second half is etcd's metric set: the call sites the rest of cairn
 * uses (one line each) and metrics_expose(), which writes every family with
 * etcd's names, types, label names and bucket layouts. Gauges that the store
 * can answer (size, keys, revisions) are computed at scrape time.
 *
 * How etcd's names map onto a single member without Raft, where the mapping
 * is not one to one:
 *   - proposals: a write proposed on this member (src/repl); committed =
 *     raft's commit index, applied = the raft index the store holds;
 *     pending = proposed, not yet answered; failed = answered with an
 *     error (no leader, timed out, store error).
 *   - etcd_disk_backend_commit_duration_seconds: one LMDB commit (one group
 *     commit of a batch: page writes plus one fsync).
 *   - etcd_disk_wal_fsync_duration_seconds: one raft log sync (one group
 *     commit of appended entries, src/repl/io.c).
 *   - etcd_server_slow_apply_total: commands whose apply (before commit)
 *     took over 100 ms, etcd's warnApplyDuration.
 *   - has_leader = is_leader = 1 and leader_changes_seen_total = 1: the one
 *     member leads from start, as a single etcd member elects itself. */
#ifndef METRICS_METRICS_H
#define METRICS_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

/* ---- primitives ---- */

struct metrics_counter {
    _Atomic uint64_t v;
};

struct metrics_gauge {
    _Atomic int64_t v;
};

#define METRICS_MAX_BUCKETS 32

/* Observations are integers in a base unit (e.g. nanoseconds) and are
 * exposed divided by @scale (e.g. 1e9 for seconds). */
struct metrics_histogram {
    int nb;                                 /* finite buckets */
    double scale;
    double bounds[METRICS_MAX_BUCKETS];     /* upper bounds, exposed unit */
    uint64_t raw_bounds[METRICS_MAX_BUCKETS]; /* the same in base units */
    _Atomic uint64_t counts[METRICS_MAX_BUCKETS + 1]; /* per bucket, +Inf last */
    _Atomic uint64_t sum;                   /* base units */
};

static inline void metrics_counter_add(struct metrics_counter *c, uint64_t n)
{
    atomic_fetch_add_explicit(&c->v, n, memory_order_relaxed);
}

static inline uint64_t metrics_counter_get(struct metrics_counter *c)
{
    return atomic_load_explicit(&c->v, memory_order_relaxed);
}

static inline void metrics_gauge_add(struct metrics_gauge *g, int64_t n)
{
    atomic_fetch_add_explicit(&g->v, n, memory_order_relaxed);
}

static inline int64_t metrics_gauge_get(struct metrics_gauge *g)
{
    return atomic_load_explicit(&g->v, memory_order_relaxed);
}

/* Prometheus' ExponentialBuckets(@start, @factor, @count), computed the
 * same way so the bounds print identically. Returns 0 or -EINVAL. */
int metrics_histogram_init_exp(struct metrics_histogram *h, double start,
                               double factor, int count, double scale);
void metrics_histogram_observe(struct metrics_histogram *h, uint64_t raw);

/* Monotonic nanoseconds, for timing observations. */
int64_t metrics_now_ns(void);

/* ---- exposition (text format 0.0.4) ---- */

struct metrics_label {
    const char *name;
    const char *value;
};

/* Go's strconv.FormatFloat(v, 'g', -1, 64), as client_golang prints
 * values: the shortest digits that read back as @v, exponent form below
 * 1e-4 and from 1e6 up (2.147483648e+09); +Inf, -Inf, NaN. @out holds 32
 * bytes. */
void metrics_format_double(char *out, double v);
/* "# HELP name help" (help escaped) and "# TYPE name type". */
void metrics_write_header(struct buf *b, const char *name, const char *help,
                          const char *type);
/* name{labels} value, labels in the given order with values escaped
 * (backslash, double quote, newline). @suffix (may be NULL) is appended to
 * the name (_bucket, _sum, _count). */
void metrics_write_sample(struct buf *b, const char *name, const char *suffix,
                          const struct metrics_label *labels, int nlabels,
                          double v);
/* A whole histogram family without labels. */
void metrics_write_histogram(struct buf *b, const char *name, const char *help,
                             struct metrics_histogram *h);

/* ---- etcd's metrics: call sites ---- */

/* gRPC (go-grpc-prometheus): the method of @path (0: not a method cairn
 * serves, not counted); counts grpc_server_started_total and
 * etcd_server_client_requests_total{client_api_version=@api_version}. Loop
 * thread. */
int metrics_grpc_started(const char *path, const char *api_version);
/* grpc_server_msg_received_total and the received bytes (message bodies,
 * as etcd's codec counts them). */
void metrics_grpc_msg_received(int method, size_t len);
void metrics_grpc_msg_sent(int method, size_t len);
/* grpc_server_handled_total{grpc_code=@code}. */
void metrics_grpc_handled(int method, int code);

/* KV operations the store executed (etcd_mvcc_*_total). */
void metrics_mvcc_range(void);
/* A write reported back by the apply thread (op: enum apply_op; @resp is
 * the packed response): counts puts, deletes, txns and their ops, leases
 * granted. */
void metrics_write_applied(int op, const uint8_t *resp, size_t resp_len);
/* A read-only Txn answered on the loop (@resp: Etcdserverpb__TxnResponse). */
void metrics_txn_read(const void *resp);

/* The write path. */
void metrics_proposal_submitted(void);
void metrics_proposal_done(int rc);
/* After one command's apply, timed from @start_ns. */
void metrics_apply_observe(int64_t start_ns);
/* After one LMDB commit, timed from @start_ns. */
void metrics_commit_observe(int64_t start_ns);
void metrics_wal_fsync_observe(int64_t start_ns); /* any thread */

/* Watch and lease. */
void metrics_watch_streams(int delta);
void metrics_watchers(int delta);
void metrics_lease_revoked(void);
void metrics_lease_renewed(void);

/* Encryption at rest: a key rotation started (the key file's first key
 * became the store's active key). Any thread. The records a pass has
 * still to re-encrypt are read from the store at scrape time
 * (cairn_encryption_records_pending). */
void metrics_encryption_rotated(void);

/* /health outcomes (etcd_server_health_success / _failures). */
void metrics_health_result(int ok);

/* Writes every metric family into @out (the /metrics body). Loop thread. */
void metrics_expose(struct buf *out);

#endif
