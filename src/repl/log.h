/* The durable raft log: entries, term/vote and snapshots in one directory
 * (cairn uses <data-dir>/member/raft).
 *
 * On disk:
 *   metadata1, metadata2  term and vote, written alternately (sequence number
 *                         and crc32c; the valid one with the higher sequence
 *                         wins, so a torn write never loses the previous value)
 *   seg-<first index>     append-only segments: a header (magic, first index,
 *                         epoch, crc) then records [crc32c len index term type
 *                         data pad8]; a new segment is started past seg_max
 *   snap-<index>          snapshots: header (index, term, conf index, epoch,
 *                         flags, crc32c over the whole file), configuration,
 *                         data; written to snap.tmp, synced, renamed
 *
 * A torn tail (kill -9 or power loss in the middle of a write) can only be in
 * the last segment: a segment is synced before the next one is started. On
 * open, a bad record there with no valid record after it is cut off; a bad
 * record anywhere else, or a valid one after it, is RAFT_CORRUPT.
 *
 * The epoch: a snapshot that replaces the whole log (InstallSnapshot,
 * trailing 0) records epoch+1 before any segment is deleted; segments of an
 * older epoch found on open are leftovers of an interrupted replacement and
 * are deleted, never loaded.
 *
 * Threads: none of its own. repl_log_open, _load, _bootstrap and _recover
 * come first, on one thread; afterwards the metadata calls (set_term,
 * set_vote) may run on one thread while the entry/snapshot calls run on
 * another (cairn: the loop thread and the raft I/O writer thread): the two
 * halves share no state.
 *
 * Errors are raft codes (RAFT_IOERR, RAFT_NOSPACE, RAFT_CORRUPT, RAFT_NOMEM,
 * RAFT_CANTBOOTSTRAP, RAFT_INVALID); the detail is logged and kept in the
 * errmsg of the half that failed (repl_log_errmsg, repl_log_meta_errmsg). */
#ifndef REPL_LOG_H
#define REPL_LOG_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

struct repl_log;

struct repl_log_opts {
    const char *dir;   /* created (with parents) if missing */
    size_t seg_max;    /* start a new segment past this many bytes; 0 = 8 MiB */
    /* The lowest index the owner still needs (its state machine applies
     * asynchronously and uses the log as its write-ahead log): entries >= it
     * are never deleted by repl_log_snapshot_put with trailing > 0. NULL = no
     * floor. Called on the thread that calls repl_log_snapshot_put. */
    uint64_t (*keep_from)(void *ud);
    void *keep_ud;
};

struct repl_log_stats {
    uint64_t appends;       /* repl_log_append calls */
    uint64_t entries;       /* entries written */
    uint64_t syncs;         /* fdatasync of a segment by repl_log_sync */
    uint64_t truncates;     /* repl_log_truncate calls that removed entries */
    uint64_t snapshot_puts; /* snapshots stored */
    uint64_t log_resets;    /* snapshot_put with trailing 0 */
    uint64_t segs_deleted;  /* segments removed (truncate, snapshot, reset) */
};

/* Opens (creating if needed) the log in o->dir and reads all of it: cuts a
 * torn tail, deletes stale segments and temporary files. @errmsg (if not
 * NULL, RAFT_ERRMSG_BUF_SIZE bytes) says why it failed. */
int repl_log_open(const struct repl_log_opts *o, struct repl_log **out,
                  char *errmsg);
/* Closes files and frees what load did not hand over. */
void repl_log_close(struct repl_log *l);

/* raft_io.load's contract, at most once, before any append/truncate/
 * snapshot call: term, vote, the newest snapshot (NULL if none), the index
 * of entries[0] (1 with neither snapshot nor entries, snapshot index + 1
 * with a snapshot and no entries; never above snapshot index + 1), and every
 * entry. Ownership passes to the caller: *snapshot, its bufs (one buffer)
 * and configuration, the entries array and the batches their data points
 * into (one raft_malloc'd batch per segment, entry.batch set), all from
 * raft_malloc. The entries array is NULL when there are none. */
int repl_log_load(struct repl_log *l, raft_term *term, raft_id *vote,
                  struct raft_snapshot **snapshot, raft_index *start_index,
                  struct raft_entry **entries, size_t *n_entries);

/* The index the next append must start at. */
raft_index repl_log_next_index(const struct repl_log *l);
/* 1 when there is no term, vote, entry or snapshot. */
int repl_log_empty(const struct repl_log *l);

/* Durable (written and fdatasync'd) when they return 0. set_term resets
 * the vote. */
int repl_log_set_term(struct repl_log *l, raft_term term);
int repl_log_set_vote(struct repl_log *l, raft_id vote);

/* Writes @n entries starting at @index, which must be
 * repl_log_next_index(); nothing is durable before repl_log_sync. The
 * entries' memory is only read during the call. On error the log is left
 * as before the call, as far as the file system allows (the caller should
 * stop writing). */
int repl_log_append(struct repl_log *l, raft_index index,
                    const struct raft_entry *entries, unsigned n);
/* Makes every repl_log_append so far durable (one fdatasync per written
 * segment, plus the directory when a segment was created). */
int repl_log_sync(struct repl_log *l);

/* Deletes the entries >= @index, durably on return (segments after it are
 * unlinked last first with a directory sync after each, so a crash leaves a
 * prefix, then the segment holding @index is cut and synced). Appends
 * written but not yet synced before it are covered too. */
int repl_log_truncate(struct repl_log *l, raft_index index);

/* Stores @s durably (tmp file, fdatasync, rename, directory sync) and keeps
 * it and the previous one. @trailing > 0: then deletes the segments whose
 * entries are all <= s->index - trailing and below the keep_from floor.
 * @trailing == 0: @s replaces the whole log (every entry is deleted, the
 * floor does not apply: the state machine is being replaced by @s), and the
 * next append starts at s->index + 1. @s is only read during the call. */
int repl_log_snapshot_put(struct repl_log *l, unsigned trailing,
                          const struct raft_snapshot *s);
/* The newest snapshot (*out NULL if none), allocated as repl_log_load's. */
int repl_log_snapshot_get(struct repl_log *l, struct raft_snapshot **out);

/* Writes entry 1 (RAFT_CHANGE, term 1, @conf in raft's encoding) and term 1.
 * RAFT_CANTBOOTSTRAP if the log is not empty. */
int repl_log_bootstrap(struct repl_log *l, const struct raft_configuration *conf);
/* Appends @conf as a RAFT_CHANGE entry at the next index, with the current
 * term (at least the last entry's, at least 1), durably. */
int repl_log_recover(struct repl_log *l, const struct raft_configuration *conf);

void repl_log_get_stats(const struct repl_log *l, struct repl_log_stats *out);
const char *repl_log_errmsg(const struct repl_log *l);
const char *repl_log_meta_errmsg(const struct repl_log *l);

/* Frees a snapshot allocated as repl_log_load's. */
void repl_log_snapshot_free(struct raft_snapshot *s);

#endif
