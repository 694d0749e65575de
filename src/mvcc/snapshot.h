/* The store as an etcd snapshot: a bbolt file with etcd's backend schema
 * (what `etcdctl snapshot save` receives from etcd and `snapshot restore`
 * opens), and back.
 *
 * Buckets written (etcd 3.4/3.5 names and encodings):
 *   key     main BE8 '_' sub BE8 [+ 't' for a deletion] -> mvccpb.KeyValue
 *           (a deletion holds only the key, as etcd writes it); every
 *           revision the store still has, so history survives
 *   meta    consistent_index BE8, finishedCompactRev and scheduledCompactRev
 *           (revision encoding, sub 0), term BE8 (as 3.5)
 *   lease   ID BE8 -> leasepb.Lease{ID, TTL}
 *   members hex ID -> member JSON, cluster clusterVersion -> "3.4.0"
 *   auth    authEnabled (once ever enabled), authRevision BE8
 *   authUsers, authRoles  name -> authpb.User / authpb.Role (mvcc/authdb.c)
 *   alarm   raised alarms; members_removed empty. */
#ifndef MVCC_SNAPSHOT_H
#define MVCC_SNAPSHOT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "mvcc/mvcc.h"

/* The member written to the members bucket; etcd's restore rewrites
 * membership from its flags, so this is informational. */
struct mvcc_snap_member {
    uint64_t id;
    const char *name;
    char *const *peer_urls;
    int n_peer_urls;
    char *const *client_urls;
    int n_client_urls;
};

/* Writes the state seen by read txn @t to @fd (from offset 0) as an etcd
 * bbolt db; @m may be NULL (no member). Sets *@size to the file's size.
 * @stop (may be NULL), checked at every record, abandons the work: a
 * snapshot nobody waits for must not hold the store open.
 * Errors: -errno, CAIRN_ESTORE, -ECANCELED. */
int mvcc_snapshot_write(struct mvcc_txn *t, int fd,
                        const struct mvcc_snap_member *m,
                        const atomic_int *stop, uint64_t *size);

/* What a snapshot's meta bucket says. -1 when absent. */
struct mvcc_snap_meta {
    int64_t consistent_index, finished_compact, scheduled_compact, term;
    int64_t rev;   /* the newest revision in its key bucket */
    int64_t keys;  /* records in its key bucket */
    int64_t leases;
    int auth_enabled;   /* the snapshot has auth on (restored) */
    int64_t auth_users; /* users and roles in the snapshot (restored) */
};

/* Builds a new store in @dir (which must not hold one) from the first
 * @len bytes of @fd, an etcd bbolt db written by etcd or by cairn: every
 * revision, tombstones, compaction state, leases and their keys, the
 * current revision, the consistent index and the term. @out may be NULL.
 * Errors: -EBADMSG (not a valid snapshot), CAIRN_ETOOLARGE (a key longer
 * than cairn's limit), -errno, CAIRN_ESTORE. */
struct crypt_ring;
/* @ring (may be NULL): encryption at rest for the new store: every record
 * is written sealed under its first key, so no plaintext copy ever reaches
 * the new file. The ring is taken in every case. */
int mvcc_snapshot_restore(int fd, uint64_t len, const char *dir,
                          size_t map_size, struct crypt_ring *ring,
                          struct mvcc_snap_meta *out);

#endif
