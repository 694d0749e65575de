/* Internal to mvcc/: LMDB handles, record encodings and the index. */
#ifndef MVCC_MVCC_INT_H
#define MVCC_MVCC_INT_H

#include <lmdb.h>
#include <stdatomic.h>

#include "mvcc/mvcc.h"

struct mvcc {
    MDB_env *env;
    MDB_dbi kv, cur, meta;
    MDB_dbi lease;      /* be64(id) -> be64(ttl) */
    MDB_dbi lease_keys; /* be64(id) key -> "" : the keys attached to a lease */
    char *path;
    _Atomic int64_t live_keys; /* mvcc_keys(): as of the last commit */
};

#define MVCC_REVLEN 16   /* be64 main, be64 sub */
/* A key's entry in cur: its newest revision, flag, create revision, version
 * and lease, so that writes and counts need not read the record itself. */
#define MVCC_IDXLEN 41
/* A record: flag, the key's previous revision (0 = none), KeyValue. */
#define MVCC_RECHDR 17
#define MVCC_TOMBSTONE 1

struct mvcc_rev {
    int64_t main, sub;
    int tomb;
    int64_t create, version, lease;
};

void mvcc__put_be64(uint8_t *p, uint64_t v);
uint64_t mvcc__get_be64(const uint8_t *p);
void mvcc__rev_encode(uint8_t out[MVCC_IDXLEN], struct mvcc_rev r);
struct mvcc_rev mvcc__rev_decode(const uint8_t *p);

/* data.mdb's size on disk (allocated blocks, at most its length). */
int64_t mvcc__file_size(struct mvcc *m);

/* Translates an LMDB return code to a cairn code. */
int mvcc__err(int rc);

/* The newest revision of @key at or below @rev. Returns 0 and fills @out,
 * or MDB_NOTFOUND. */
int mvcc__index_get(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                    int64_t rev, struct mvcc_rev *out);

/* Calls @fn for each key in [key, end) (end semantics as etcd: NULL = just
 * key, empty = no upper bound) alive at @rev, in key order, with its newest
 * revision. @fn returns 0 to go on, 1 to stop, or an error. */
typedef int (*mvcc_visit_fn)(void *ud, MDB_val *key, struct mvcc_rev rev);
int mvcc__index_visit(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                      const uint8_t *end, size_t elen, int end_given,
                      int64_t rev, mvcc_visit_fn fn, void *ud);

/* Splits a kv value into the link to the key's previous revision, the
 * tombstone flag and the KeyValue (pointing into @v). */
int mvcc__record_decode(const MDB_val *v, struct mvcc_rev *prev, int *tomb,
                        Mvccpb__KeyValue *kv);
/* The record of @r: KeyValue, the link to the previous revision, flag.
 * MDB_NOTFOUND when compaction removed it. */
int mvcc__record_decode_at(struct mvcc_txn *t, struct mvcc_rev r,
                           Mvccpb__KeyValue *kv, struct mvcc_rev *prev,
                           int *tomb);
/* Reads the record of @rev and decodes it into @kv (pointing into the map). */
int mvcc__record_get(struct mvcc_txn *t, struct mvcc_rev rev,
                     Mvccpb__KeyValue *kv);
/* Appends a record and its index entry. */
int mvcc__record_put(struct mvcc_txn *t, const Mvccpb__KeyValue *kv,
                     int tomb, struct arena *a);

/* Moves @key's attachment from lease @from to lease @to (0 = none). */
int mvcc__lease_move(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                     int64_t from, int64_t to);
/* Writes a tombstone for @key, live at the current revision with index
 * entry @r, and drops its lease attachment. */
int mvcc__delete_key(struct mvcc_txn *t, ProtobufCBinaryData key,
                     struct mvcc_rev r, struct arena *a);

/* Decodes a packed KeyValue without copying: bytes point into @p. */
int mvcc__kv_decode(const uint8_t *p, size_t n, Mvccpb__KeyValue *kv);

#endif
