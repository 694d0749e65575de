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
    MDB_dbi auth;       /* "authUsers/" name -> User, "authRoles/" name ->
                           Role (packed authpb; sealed with encryption on) */
    char *path;
    _Atomic int64_t live_keys; /* mvcc_keys(): as of the last commit */
    /* Encryption at rest (seal.c): the key ring, NULL when records are
     * written plain; replaced only by mvcc_seal_install() (older rings stay
     * on its prev chain until close). Databases whose values are sealed
     * whole (lease, auth) and the re-encryption pass's progress. */
    struct crypt_ring *_Atomic ring;
    struct mvcc_sealed_db {
        MDB_dbi dbi;
        char name[16];
    } sealed[8];
    int n_sealed;
    _Atomic int64_t seal_pending;
    _Atomic uint64_t seal_rotations;
};

#define MVCC_REVLEN 16   /* be64 main, be64 sub */
/* A key's entry in cur: its newest revision, flag, create revision, version
 * and lease, so that writes and counts need not read the record itself. */
#define MVCC_IDXLEN 41
/* A record: flag, the key's previous revision (0 = none), KeyValue. */
#define MVCC_RECHDR 17
#define MVCC_TOMBSTONE 1
/* meta "format": 2 = plain records only, 3 = records may be sealed (an
 * older cairn refuses such a store instead of misreading it). */
#define MVCC_FORMAT 2
#define MVCC_FORMAT_SEALED 3

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

/* Splits kv record (@k, @v) into the link to the key's previous revision,
 * the tombstone flag and the KeyValue. A plain record's KeyValue points
 * into @v (zero copy); a sealed one's is decrypted into @a (NULL: the
 * txn's arena, freed when the txn ends). @kv may be NULL: only the header
 * (link, flag) is wanted and nothing is decrypted. */
int mvcc__record_decode(struct mvcc_txn *t, const MDB_val *k, const MDB_val *v,
                        struct arena *a, struct mvcc_rev *prev, int *tomb,
                        Mvccpb__KeyValue *kv);
/* The record of @r: KeyValue (as mvcc__record_decode, into @a), the link
 * to the previous revision, flag. MDB_NOTFOUND when compaction removed it. */
int mvcc__record_decode_at(struct mvcc_txn *t, struct mvcc_rev r,
                           struct arena *a, Mvccpb__KeyValue *kv,
                           struct mvcc_rev *prev, int *tomb);
/* Reads the record of @rev and decodes it into @kv (pointing into the map,
 * or into @a when sealed; NULL: the txn's arena). */
int mvcc__record_get(struct mvcc_txn *t, struct mvcc_rev rev,
                     struct arena *a, Mvccpb__KeyValue *kv);
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

/* ---- encryption at rest (seal.c) ---- */

/* The packed KeyValue of kv record (@k, @v): into the map when plain, else
 * decrypted into @a (NULL: the txn's arena). Errors: CAIRN_ESTORE (the key
 * is missing or the record fails authentication: logged). */
int mvcc__record_payload(struct mvcc_txn *t, const MDB_val *k,
                         const MDB_val *v, struct arena *a,
                         const uint8_t **p, size_t *n);
/* Record @rec (header + packed KeyValue, @n bytes) to be stored under
 * revision key @rk: itself when no key is configured, else a sealed copy
 * in @a. */
int mvcc__record_seal(struct mvcc_txn *t, const uint8_t *rk, uint8_t *rec,
                      size_t n, struct arena *a, MDB_val *out);
/* Arenas a txn owns for decrypted records: the first lives until the txn
 * ends, the second is scratch any function may reset (never hold its
 * pointers across a call into mvcc). Freed by mvcc__txn_release(). */
struct arena *mvcc__txn_arena(struct mvcc_txn *t);
struct arena *mvcc__txn_scratch(struct mvcc_txn *t);
void mvcc__txn_release(struct mvcc_txn *t);

/* Sealed databases: every value is sealed whole, bound to its database
 * (@name) and its LMDB key. The lease database is one; the auth records
 * are meant to be others:
 *
 *   at open:   mvcc__seal_register(m, m->users, "users");
 *   write:     mvcc__sealed_put(t, m->users, &k, packed, n, 0);
 *   read:      rc = mvcc__sealed_get(t, m->users, &k, a, &plain);
 *   cursor:    mvcc__value_open(t, m->users, &k, &v, a, &plain);
 *
 * Without a key file values are stored as given (so a plain value must not
 * begin with byte 0xC1; packed protobuf messages whose first field number
 * is below 24 never do). The background re-encryption pass covers every
 * registered database. @name: at most 15 bytes, at most 8 databases. */
void mvcc__seal_register(struct mvcc *m, MDB_dbi dbi, const char *name);
/* mdb_put of @plain (@flags: mdb_put's) sealed when a key is configured.
 * Returns an LMDB code (MDB_KEYEXIST, ...) or CAIRN_ESTORE. */
int mvcc__sealed_put(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     const void *plain, size_t n, unsigned flags);
/* mdb_get, opened: *@out is the plaintext (in the map when stored plain,
 * else in @a; NULL: the txn's arena). MDB_NOTFOUND, or CAIRN_ESTORE when
 * the value cannot be opened (missing key, tampered: logged). */
int mvcc__sealed_get(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     struct arena *a, MDB_val *out);
/* Opens value @v read at key @k of @dbi (a cursor's), as mvcc__sealed_get. */
int mvcc__value_open(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     const MDB_val *v, struct arena *a, MDB_val *out);

#endif
