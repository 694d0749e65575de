/* Auth state in the store: users, roles, the enabled flag and the auth
 * revision, kept in the meta DB so that they commit in the same LMDB txns
 * as everything else (etcd keeps them in its auth, authUsers and authRoles
 * buckets). Values are etcd's: authpb.User / authpb.Role packed, the
 * revision a big-endian uint64. */
#ifndef MVCC_AUTH_H
#define MVCC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "mvcc/mvcc.h"

enum mvcc_auth_kind { MVCC_AUTH_USER, MVCC_AUTH_ROLE };

/* The packed record of user or role @name, copied into @a. Returns 0,
 * 1 when there is none, or an error. */
int mvcc_auth_get(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len, struct arena *a, uint8_t **val, size_t *vlen);
int mvcc_auth_put(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len, const uint8_t *val, size_t vlen);
/* Returns 0, or 1 when there was none. */
int mvcc_auth_del(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len);
/* Calls @fn for each user or role in name order with its packed record
 * (valid during the call); @fn returns 0 to go on or an error. */
typedef int (*mvcc_auth_fn)(void *ud, const uint8_t *name, size_t nlen,
                            const uint8_t *val, size_t vlen);
int mvcc_auth_each(struct mvcc_txn *t, enum mvcc_auth_kind k, mvcc_auth_fn fn,
                   void *ud);

/* etcd's authEnabled and authRevision (0 when never set). */
int mvcc_auth_enabled(struct mvcc_txn *t);
int mvcc_auth_set_enabled(struct mvcc_txn *t, int on);
uint64_t mvcc_auth_revision(struct mvcc_txn *t);
int mvcc_auth_set_revision(struct mvcc_txn *t, uint64_t rev);

/* Snapshots (etcd's bbolt schema): writes the auth, authRoles and
 * authUsers buckets (etcd's keys and values); restores one record of them
 * (@bucket its name). Errors: -EBADMSG, CAIRN_ETOOLARGE, CAIRN_ESTORE. */
struct snap_bbolt_writer;
int mvcc_auth_snapshot_write(struct mvcc_txn *t, struct snap_bbolt_writer *w);
int mvcc_auth_snapshot_record(struct mvcc_txn *t, const uint8_t *bucket,
                              size_t blen, const uint8_t *k, size_t klen,
                              const uint8_t *v, size_t vlen);

/* Longest user or role name the store takes (LMDB's key limit less the
 * prefix); etcd has none. */
#define MVCC_AUTH_MAX_NAME 500

#endif
