/* Leases in the store: the granted leases and, per lease, its keys, kept
 * in the same write txns as the keys themselves, so attachments are exact
 * after any crash and need no rebuilding at start. */
#include <string.h>

#include "core/err.h"
#include "mvcc/mvcc_int.h"

static MDB_val lk_key(uint8_t *buf, int64_t id, const uint8_t *key, size_t klen)
{
    MDB_val v = {8 + klen, buf};
    mvcc__put_be64(buf, (uint64_t)id);
    if (klen)
        memcpy(buf + 8, key, klen);
    return v;
}

int mvcc__lease_move(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                     int64_t from, int64_t to)
{
    uint8_t buf[8 + MVCC_MAX_KEY];
    MDB_val k, empty = {0, NULL};
    int rc;
    if (from == to)
        return 0;
    if (from != 0) {
        k = lk_key(buf, from, key, klen);
        rc = mdb_del(t->txn, t->m->lease_keys, &k, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            return mvcc__err(rc);
    }
    if (to != 0) {
        k = lk_key(buf, to, key, klen);
        rc = mdb_put(t->txn, t->m->lease_keys, &k, &empty, 0);
        if (rc != 0)
            return mvcc__err(rc);
    }
    return 0;
}

int mvcc_lease_exists(struct mvcc_txn *t, int64_t id)
{
    uint8_t b[8];
    MDB_val k = {8, b}, v;
    mvcc__put_be64(b, (uint64_t)id);
    return mdb_get(t->txn, t->m->lease, &k, &v) == 0;
}

int mvcc_lease_grant(struct mvcc_txn *t, int64_t id, int64_t ttl)
{
    uint8_t kb[8], vb[8];
    MDB_val k = {8, kb}, v = {8, vb};
    mvcc__put_be64(kb, (uint64_t)id);
    mvcc__put_be64(vb, (uint64_t)ttl);
    int rc = mvcc__sealed_put(t, t->m->lease, &k, v.mv_data, v.mv_size,
                              MDB_NOOVERWRITE);
    if (rc == MDB_KEYEXIST)
        return CAIRN_ELEASEEXISTS;
    return mvcc__err(rc);
}

int mvcc_lease_keys(struct mvcc_txn *t, int64_t id, struct arena *a,
                    ProtobufCBinaryData **keys, size_t *n)
{
    uint8_t prefix[8];
    MDB_cursor *c;
    MDB_val k = {8, prefix}, v;
    size_t cap = 0;
    int rc;

    *keys = NULL;
    *n = 0;
    mvcc__put_be64(prefix, (uint64_t)id);
    if ((rc = mdb_cursor_open(t->txn, t->m->lease_keys, &c)) != 0)
        return mvcc__err(rc);
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && k.mv_size >= 8 && memcmp(k.mv_data, prefix, 8) == 0) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            ProtobufCBinaryData *nk = arena_alloc(a, cap * sizeof *nk);
            if (*n)
                memcpy(nk, *keys, *n * sizeof *nk);
            *keys = nk;
        }
        (*keys)[*n].len = k.mv_size - 8;
        (*keys)[*n].data = arena_memdup(a, (uint8_t *)k.mv_data + 8, k.mv_size - 8);
        (*n)++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

int mvcc_lease_revoke(struct mvcc_txn *t, int64_t id, struct arena *a)
{
    ProtobufCBinaryData *keys;
    size_t n;
    uint8_t kb[8];
    MDB_val k = {8, kb};
    int rc;

    if (!mvcc_lease_exists(t, id))
        return CAIRN_ELEASENOTFOUND;
    if ((rc = mvcc_lease_keys(t, id, a, &keys, &n)) != 0)
        return rc;
    /* One revision for all of them, in key order (etcd sorts them). */
    for (size_t i = 0; i < n; i++) {
        struct mvcc_rev r;
        rc = mvcc__index_get(t, keys[i].data, keys[i].len,
                             t->rev + (t->changes > 0), &r);
        if (rc == MDB_NOTFOUND || (rc == 0 && r.tomb))
            continue; /* cannot happen: attachments follow the keys */
        if (rc != 0)
            return mvcc__err(rc);
        if ((rc = mvcc__delete_key(t, keys[i], r, a)) != 0)
            return rc;
    }
    mvcc__put_be64(kb, (uint64_t)id);
    rc = mdb_del(t->txn, t->m->lease, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

int mvcc_leases(struct mvcc_txn *t, mvcc_lease_fn fn, void *ud)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->lease, &c)) != 0)
        return mvcc__err(rc);
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        MDB_val pv;
        /* A sealed TTL is opened into scratch: only the number is kept. */
        struct arena *s = mvcc__txn_scratch(t);
        arena_reset(s);
        if ((rc = mvcc__value_open(t, t->m->lease, &k, &v, s, &pv)) != 0) {
            mdb_cursor_close(c);
            return rc;
        }
        if (k.mv_size == 8 && pv.mv_size == 8) {
            int frc = fn(ud, (int64_t)mvcc__get_be64(k.mv_data),
                         (int64_t)mvcc__get_be64(pv.mv_data));
            if (frc != 0) {
                mdb_cursor_close(c);
                return frc < 0 ? frc : 0;
            }
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}
