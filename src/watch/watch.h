/* Watch: etcd's watchers, on the loop thread.
 *
 * A watch stream (one gRPC Watch call) holds watchers. A watcher is synced
 * when it has seen every event up to the hub's revision; synced watchers are
 * found for each new event through an index of their key ranges (exact keys
 * in a hash, ranges in an interval tree), so a write costs one lookup per
 * event, not one per watcher. Each event is encoded once per notification
 * and copied into the streams that want it.
 *
 * A watcher that starts in the past, or whose stream stops reading (its
 * output passes a high-water mark), becomes unsynced: it is taken out of
 * the index and catches up from the store in bounded rounds, as etcd's
 * unsynced watchers do, so a slow reader never holds up writers, other
 * streams, or memory. A watcher whose next revision was compacted away is
 * cancelled with compact_revision, as etcd does. */
#ifndef WATCH_WATCH_H
#define WATCH_WATCH_H

#include <stdint.h>
#include <uv.h>

#include "mvcc/mvcc.h"
#include "net/net.h"

struct watch_opts {
    uint64_t cluster_id, member_id;
    const uint64_t *raft_term;  /* the current term, read at each header */
    size_t max_request_bytes;      /* fragment threshold */
    int64_t progress_interval_ms;  /* progress_notify period */
};

struct watch_stream;

/* @rev: the store's revision at start (nothing to deliver below it). */
void watch_init(uv_loop_t *loop, struct mvcc *m, int64_t rev,
                const struct watch_opts *o);
/* The store's revision rose to @rev: deliver the new events. */
void watch_notify(int64_t rev);
/* Ends every watch stream (server shutdown). */
void watch_shutdown(void);

/* NULL once the hub has shut down. */
struct watch_stream *watch_stream_new(struct grpc_call *c);
/* The call is gone: drop the stream's watchers. */
void watch_stream_free(struct watch_stream *ws);
void watch_create(struct watch_stream *ws,
                  const Etcdserverpb__WatchCreateRequest *r);
void watch_cancel(struct watch_stream *ws, int64_t id);
/* Answers a create that may not proceed (auth): created and canceled with
 * @reason, watch ID -1. */
void watch_create_refused(struct watch_stream *ws, const char *reason);
void watch_progress(struct watch_stream *ws);


#endif
