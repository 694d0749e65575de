/* Internal to metrics/: the etcd metric instances that metrics.c updates
 * and expose.c writes out. */
#ifndef METRICS_METRICS_INT_H
#define METRICS_METRICS_INT_H

#include "metrics/metrics.h"

#define METRICS_NCODES 17 /* gRPC codes 0..16 */

struct metrics_grpc_method {
    const char *path;
    const char *service, *method, *type; /* go-grpc-prometheus' labels */
    struct metrics_counter started, received, sent;
    struct metrics_counter handled[METRICS_NCODES];
};

/* etcd_server_client_requests_total{client_api_version,type}: the first
 * METRICS_MAX_VERSIONS versions clients send get their own series, later
 * ones are counted under "other" so a client cannot grow the table. */
#define METRICS_MAX_VERSIONS 16
struct metrics_client_requests {
    char version[METRICS_MAX_VERSIONS][32];
    struct metrics_counter n[METRICS_MAX_VERSIONS];
    int used;
    struct metrics_counter other;
};

struct metrics_etcd {
    struct metrics_counter grpc_received_bytes, grpc_sent_bytes;
    struct metrics_client_requests requests[2]; /* unary, stream */
    struct metrics_counter range, put, del, txn;
    struct metrics_gauge proposals_pending;
    struct metrics_counter proposals_failed, slow_apply;
    struct metrics_histogram backend_commit, wal_fsync;
    struct metrics_gauge watch_streams, watchers;
    struct metrics_counter lease_granted, lease_revoked, lease_renewed;
    struct metrics_counter health_success, health_failures;
    struct metrics_counter encryption_rotations;
};

extern struct metrics_etcd metrics__etcd;
extern struct metrics_grpc_method metrics__methods[];
extern const int metrics__nmethods;
extern const char *const metrics__code_names[METRICS_NCODES];

/* Sets up the histograms once (idempotent; loop thread, before use). */
void metrics__init(void);

#endif
