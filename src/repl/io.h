/* cairn's struct raft_io for libraft 0.15 (version 2, with async_work): the
 * durable log of repl/log.h behind one writer thread, messages through a
 * send function (repl_peer_send_raft in cairn, an in-memory network in
 * tests), ticks from a uv timer.
 *
 * Threads. Everything here runs on the loop thread except the disk work of
 * append, truncate, snapshot_put and snapshot_get, which goes to one
 * dedicated writer thread (never libuv's pool: cairn's long reads use it,
 * and a busy pool must not delay raft) and completes back on the loop
 * through a uv_async. Exceptions, because raft_io makes them synchronous:
 * load, bootstrap and recover (startup only) and set_term/set_vote (durable
 * before they return; they touch only the metadata files, never waiting
 * behind queued appends).
 *
 * Group commit: every append queued while the writer is busy is written in
 * the next round with one fdatasync for all, and their callbacks run in
 * submission order. Appends, truncates and snapshot puts are applied in
 * submission order. Sends never wait for the disk.
 *
 * Errors: a failed append, truncate or snapshot_put makes the disk side
 * fail every later request with the same code (as etcd stops on a WAL
 * write error): what is on disk stays a valid log, and a restart reloads it.
 *
 * close: waits for queued disk work, sends and async work to complete
 * (their callbacks run first), then calls the close callback. The send
 * function's callbacks must therefore all come: cairn closes the transport
 * (pending sends get RAFT_CANCELED) when it closes raft. */
#ifndef REPL_IO_H
#define REPL_IO_H

#include <raft.h>
#include <stdint.h>
#include <uv.h>

#include "repl/log.h"

struct repl_io_opts {
    const char *dir;  /* the log directory (created if missing) */
    size_t seg_max;   /* segment size, 0 = 8 MiB */
    /* The lowest index the owner still needs (see repl_log_opts); called on
     * the loop thread when raft stores a snapshot. NULL = no floor. */
    uint64_t (*keep_from)(void *ud);
    void *keep_ud;
    /* Sends @m to m->server_id. @m and every buffer it points to are
     * borrowed until @cb runs; @cb runs exactly once, from the loop and
     * never inside send, unless send returns nonzero (a raft code, or a
     * negative errno taken as RAFT_NOCONNECTION). Same shape as
     * repl_peer_send_raft. */
    int (*send)(void *send_ud, const struct raft_message *m,
                void (*cb)(void *cb_ud, int status), void *cb_ud);
    void *send_ud;
    uint64_t seed;    /* for io->random; 0 = from the time and the id */
    int bump_term;    /* load: a loaded term > 0 goes up by one (and the vote
                         is cleared), durably: a single voter's start is a
                         new term, as etcd's */
};

struct repl_io_stats {
    uint64_t rounds;          /* writer rounds (one sync at most each) */
    struct repl_log_stats log;
};

/* Opens the log (reading all of it) and fills every method of @io; io->data
 * is left to raft. After success io->close must be called once (raft_close
 * does it). Errors: raft codes (RAFT_CORRUPT, RAFT_IOERR, ...), with
 * io->errmsg set. */
int repl_io_init(struct raft_io *io, uv_loop_t *loop,
                 const struct repl_io_opts *o);

/* Hands a received message to raft's recv callback. Ownership as libraft
 * expects: the append_entries entries array and the one batch their data
 * lives in, and the install_snapshot data and configuration, pass to raft
 * (raft_malloc'd; entries[i].batch set). Dropped (and freed) before start
 * and once closing. */
void repl_io_deliver(struct raft_io *io, struct raft_message *msg);

/* Frees what a received message owns (for transports that drop one). */
void repl_io_free_message(struct raft_message *msg);

/* Counters of the disk side (loop thread). */
void repl_io_get_stats(struct raft_io *io, struct repl_io_stats *out);

#endif
