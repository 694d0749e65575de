/* MVCC key-value store on LMDB: etcd's revision model.
 *
 * Every write command that changes something takes one new main revision;
 * its changes are numbered by sub revision. History is kept until
 * compaction. Readers see a consistent snapshot (an LMDB read txn) and never
 * block the single writer.
 *
 * Layout (LMDB databases in one environment):
 *   kv   be64(main) be64(sub) -> flag, be64(main) be64(sub) of the key's
 *        previous revision (0 = none), packed mvccpb.KeyValue
 *        (flag 1 = tombstone: a deletion, KeyValue holds only the key)
 *   cur  user key -> its newest revision: be64(main) be64(sub) flag
 *        be64(create_revision) be64(version) be64(lease)
 * A write appends to kv and updates one entry in cur, however long the
 * history: reads at older revisions follow the links back.
 *   meta name -> be64 value (rev, compact, compact_done, term)
 *   lease      be64(id) -> be64(ttl): granted leases
 *   lease_keys be64(id) key -> "": which keys each lease holds
 *
 * Ownership: KeyValue structs produced by reads point into LMDB's map and
 * are valid only until the txn they came from ends; pack or copy before.
 * With encryption at rest (mvcc_seal_install) record values are sealed;
 * reads decrypt into the request's arena where one is given (Range, Txn,
 * Put's prev_kv) and otherwise into an arena the txn owns (mvcc_events,
 * mvcc_get_at): either way valid at least as long as the txn, as map
 * pointers are. Without a key nothing is copied. */
#ifndef MVCC_MVCC_H
#define MVCC_MVCC_H

#include <stddef.h>
#include <stdint.h>

#include "core/arena.h"
#include "etcdserverpb/rpc.pb-c.h"

struct mvcc;

/* LMDB's key size limit (511) bounds etcd keys (etcd itself has none):
 * a leased key is stored after its 8-byte lease ID. */
#define MVCC_MAX_KEY 503

struct mvcc_txn {
    struct mvcc *m;
    void *txn;           /* MDB_txn */
    void *idx_cur;       /* MDB_cursor on cur, opened lazily */
    int64_t rev;         /* current revision of this view (beginRev) */
    int64_t compact_rev; /* compacted revision at begin; -1 when none */
    int64_t changes;     /* changes made by the current write command */
    int64_t keys_delta;  /* live keys created less deleted, this txn */
    int write;
    struct arena *plain, *scratch; /* decrypted records (encryption at rest) */
};

/* Opens (creating if needed) the store in directory @dir. @map_size is the
 * reserved address space. Errors: -errno, CAIRN_ESTORE. */
int mvcc_open(const char *dir, size_t map_size, struct mvcc **out);
/* Makes the last commit durable (its meta page; commits only sync their
 * data pages). Any thread; not inside a write txn. */
int mvcc_sync(struct mvcc *m);
void mvcc_close(struct mvcc *m);

/* Live keys (not deleted) as of the last commit: O(1), any thread. */
int64_t mvcc_keys(struct mvcc *m);

/* Bytes the store's file occupies on disk, and bytes of pages in use
 * (LMDB's freelist excluded: compaction frees, later writes reuse). */
void mvcc_size(struct mvcc *m, int64_t *db_size, int64_t *in_use);

/* Online defragment, one bounded step: returns the disk blocks of free
 * pages no snapshot can reach to the OS (hole punching; LMDB rewrites a
 * reused page whole, never reads it first), from page *@from on, for about
 * @budget_us. Only where no write txn can be open (the apply thread
 * between commits). Returns 1 when more remain (*@from set), 0 when done,
 * or an error (CAIRN_EUNIMPLEMENTED: the filesystem cannot). */
int mvcc_defrag_step(struct mvcc *m, uint64_t *from, int64_t budget_us,
                     int64_t *punched);

/* etcd's Maintenance.HashKV: crc32c over the revisions up to @rev (0 =
 * current) as etcd's key bucket holds them. CAIRN_ECOMPACTED when @rev is
 * at or below the compaction, CAIRN_EFUTUREREV above the current revision.
 * @compact_rev: the compacted revision (-1: none). */
int mvcc_hash_kv(struct mvcc_txn *t, int64_t rev, uint32_t *hash,
                 int64_t *compact_rev);
/* Maintenance.Hash: the whole store (records and leases) in etcd's
 * encodings; equal stores hash equal (not etcd's number: etcd hashes its
 * own file layout). */
int mvcc_hash(struct mvcc_txn *t, uint32_t *hash);

/* Alarms raised on members (etcdserverpb AlarmType), kept across restarts.
 * Del returns 1 when there was no such alarm. */
int mvcc_alarm_put(struct mvcc_txn *t, uint64_t member, int type);
int mvcc_alarm_del(struct mvcc_txn *t, uint64_t member, int type);
typedef int (*mvcc_alarm_fn)(void *ud, uint64_t member, int type);
int mvcc_alarms(struct mvcc_txn *t, mvcc_alarm_fn fn, void *ud);

/* Cluster members (mvcc/members.c): @rec is a packed etcdserverpb.Member.
 * Remove leaves a mark: get returns 2 for a removed ID, 1 for an unknown
 * one. The iteration visits records (removed = 0, @rec the record) and
 * marks (removed = 1, empty). */
int mvcc_member_put(struct mvcc_txn *t, uint64_t id, const uint8_t *rec,
                    size_t len);
int mvcc_member_remove(struct mvcc_txn *t, uint64_t id);
int mvcc_member_get(struct mvcc_txn *t, uint64_t id, const uint8_t **rec,
                    size_t *len);
typedef int (*mvcc_member_fn)(void *ud, uint64_t id, const uint8_t *rec,
                              size_t len, int removed);
int mvcc_members(struct mvcc_txn *t, mvcc_member_fn fn, void *ud);
/* Writes a consistent compacted copy of the store to @fd (a file to
 * replace data.mdb with). Any thread. */
int mvcc_image_write(struct mvcc *m, int fd);

int mvcc_read_begin(struct mvcc *m, struct mvcc_txn *t);
void mvcc_read_end(struct mvcc_txn *t);

/* One LMDB write txn may carry many write commands (group commit). Between
 * commands call mvcc_cmd_end(), which closes the command's revision. */
int mvcc_write_begin(struct mvcc *m, struct mvcc_txn *t);
void mvcc_cmd_end(struct mvcc_txn *t);
/* Durable on return (LMDB's default sync). */
int mvcc_write_commit(struct mvcc_txn *t);
void mvcc_write_abort(struct mvcc_txn *t);

/* Small persistent counters in meta (e.g. "term"). */
int64_t mvcc_meta_get(struct mvcc_txn *t, const char *name, int64_t dflt);
int mvcc_meta_put(struct mvcc_txn *t, const char *name, int64_t v);

/* etcd's KV operations. Responses and everything they point to live in @a
 * or in the txn's map; header->revision is set, other header fields are the
 * caller's. Requests are assumed checked by mvcc_check_*(). */
int mvcc_range(struct mvcc_txn *t, const Etcdserverpb__RangeRequest *r,
               struct arena *a, Etcdserverpb__RangeResponse *resp);
int mvcc_put(struct mvcc_txn *t, const Etcdserverpb__PutRequest *r,
             struct arena *a, Etcdserverpb__PutResponse *resp);
int mvcc_delete_range(struct mvcc_txn *t,
                      const Etcdserverpb__DeleteRangeRequest *r,
                      struct arena *a, Etcdserverpb__DeleteRangeResponse *resp);
int mvcc_txn(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
             struct arena *a, Etcdserverpb__TxnResponse *resp);
/* Records the compaction (effective at once for readers); the history is
 * removed afterwards by mvcc_compact_step(). */
int mvcc_compact(struct mvcc_txn *t, const Etcdserverpb__CompactionRequest *r,
                 Etcdserverpb__CompactionResponse *resp, struct arena *a);

/* Removes history below the recorded compaction for at most @max_keys keys
 * after the position kept in meta. Returns 1 when more work remains, 0 when
 * the compaction is complete, or an error. */
int mvcc_compact_step(struct mvcc_txn *t, int max_keys);
/* Revision whose physical compaction has completed. */
int64_t mvcc_compact_done(struct mvcc_txn *t);

/* The history, for watchers: calls @fn for every change with main
 * revision in [@from, @to], in revision order. @kv points into the map; for
 * a deletion it holds the key and the deleting revision only. @fn returns 0
 * to go on, 1 to stop, or an error. */
typedef int (*mvcc_event_fn)(void *ud, int is_delete, const Mvccpb__KeyValue *kv);
int mvcc_events(struct mvcc_txn *t, int64_t from, int64_t to, mvcc_event_fn fn,
                void *ud);
/* @key's KeyValue as of revision @rev (etcd's Range at that revision).
 * Returns 0 and fills @kv (pointing into the map), 1 when the key did not
 * exist then or @rev is compacted, or an error. */
int mvcc_get_at(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                int64_t rev, Mvccpb__KeyValue *kv);

/* Leases in the store. Grant: CAIRN_ELEASEEXISTS. Revoke deletes every
 * attached key in one revision, in key order, then the lease:
 * CAIRN_ELEASENOTFOUND. */
int mvcc_lease_grant(struct mvcc_txn *t, int64_t id, int64_t ttl);
int mvcc_lease_revoke(struct mvcc_txn *t, int64_t id, struct arena *a);
int mvcc_lease_exists(struct mvcc_txn *t, int64_t id);
/* The keys attached to lease @id, in key order, copied into @a. */
int mvcc_lease_keys(struct mvcc_txn *t, int64_t id, struct arena *a,
                    ProtobufCBinaryData **keys, size_t *n);
/* Every granted lease. */
typedef int (*mvcc_lease_fn)(void *ud, int64_t id, int64_t ttl);
int mvcc_leases(struct mvcc_txn *t, mvcc_lease_fn fn, void *ud);

/* ---- encryption at rest (mvcc/seal.c, keys: crypt/crypt.h) ----
 *
 * With a key ring every kv record's KeyValue (the key bytes stay plain in
 * the index), every lease record and every record of a database registered
 * with mvcc__seal_register (auth) is stored AES-256-GCM sealed with the
 * ring's first key, bound to where it lives (kv: the revision and the
 * record's header; others: database and LMDB key). meta keeps which keys
 * the store's records may use, one sealed check value per key, and the
 * re-encryption pass's position.
 *
 * Checks @ring (NULL: no key file) against the store and makes it current:
 * refuses (-ENOKEY) a store that has records sealed with a key @ring lacks
 * (or any, when @ring is NULL), and (-EKEYREJECTED) a key whose name
 * matches but whose bytes differ; @err then says which key. When @ring's
 * first key is not the store's active key, it becomes so and a
 * re-encryption pass starts (*@rotated = 1): new writes use it at once,
 * mvcc_seal_step() rewrites older records. Takes @ring on success (freed
 * at mvcc_close), leaves it to the caller on error. Only where no other
 * write txn can be open (before the apply thread starts, or on it). */
struct crypt_ring;
/* The key ring in use (NULL: records are stored plain). Rings stay valid
 * until mvcc_close. Any thread. */
const struct crypt_ring *mvcc_ring(struct mvcc *m);
int mvcc_seal_install(struct mvcc *m, struct crypt_ring *ring, int *rotated,
                      char *err, size_t errlen);
/* One bounded step of the re-encryption pass inside write txn @t: visits
 * at most @max_records records (and about 4 MiB) from the position kept in
 * meta, re-sealing those not under the active key. Returns 1 when more
 * remain, 2 when this step finished the pass, 0 when no pass is pending,
 * or an error. The records' old copies stay in LMDB's free pages until
 * reused: a defragment (hole punching) after the pass scrubs them. */
int mvcc_seal_step(struct mvcc_txn *t, int max_records);
/* Records the pass has still to visit (an upper bound; 0 when none is
 * running). Any thread. */
int64_t mvcc_seal_pending(struct mvcc *m);
/* True when records are written sealed. Any thread. */
int mvcc_sealed(struct mvcc *m);

/* Request validation done before a request reaches the write path, as
 * etcd's v3rpc/key.go. */
int mvcc_check_range(const Etcdserverpb__RangeRequest *r);
int mvcc_check_put(const Etcdserverpb__PutRequest *r);
int mvcc_check_delete(const Etcdserverpb__DeleteRangeRequest *r);
int mvcc_check_txn(const Etcdserverpb__TxnRequest *r, int max_txn_ops);

/* True when the txn request may change the store. */
int mvcc_txn_is_write(const Etcdserverpb__TxnRequest *r);

#endif
