/* Users and roles in the auth DB (sealed like every value when encryption
 * at rest is on: they hold password hashes); the auth flags in meta. */
#include "mvcc/auth.h"

#include <errno.h>
#include <string.h>

#include "snap/bbolt.h"

#include "core/err.h"
#include "mvcc/mvcc_int.h"

#define USER_PFX "authUsers/"
#define ROLE_PFX "authRoles/"
#define PFX_LEN 10 /* both prefixes */
#define ENABLED_KEY "authEnabled"
#define REVISION_KEY "authRevision"

static const char *pfx(enum mvcc_auth_kind k)
{
    return k == MVCC_AUTH_USER ? USER_PFX : ROLE_PFX;
}

static int make_key(enum mvcc_auth_kind k, const char *name, size_t len,
                    uint8_t *buf, MDB_val *key)
{
    if (len > MVCC_AUTH_MAX_NAME)
        return CAIRN_ETOOLARGE;
    memcpy(buf, pfx(k), PFX_LEN);
    if (len)
        memcpy(buf + PFX_LEN, name, len);
    key->mv_size = PFX_LEN + len;
    key->mv_data = buf;
    return 0;
}

int mvcc_auth_get(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len, struct arena *a, uint8_t **val, size_t *vlen)
{
    uint8_t buf[PFX_LEN + MVCC_AUTH_MAX_NAME];
    MDB_val key, v;
    int rc = make_key(k, name, len, buf, &key);
    if (rc != 0)
        return rc == CAIRN_ETOOLARGE ? 1 : rc; /* cannot have been stored */
    rc = mvcc__sealed_get(t, t->m->auth, &key, a, &v);
    if (rc == MDB_NOTFOUND)
        return 1;
    if (rc != 0)
        return mvcc__err(rc);
    /* a NUL after the bytes, never read past the value (it may end the
     * map's last page) */
    *val = arena_alloc(a, v.mv_size + 1);
    memcpy(*val, v.mv_data, v.mv_size);
    (*val)[v.mv_size] = 0;
    *vlen = v.mv_size;
    return 0;
}

int mvcc_auth_put(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len, const uint8_t *val, size_t vlen)
{
    uint8_t buf[PFX_LEN + MVCC_AUTH_MAX_NAME];
    MDB_val key;
    int rc = make_key(k, name, len, buf, &key);
    if (rc != 0)
        return rc;
    return mvcc__err(mvcc__sealed_put(t, t->m->auth, &key, val, vlen, 0));
}

int mvcc_auth_del(struct mvcc_txn *t, enum mvcc_auth_kind k, const char *name,
                  size_t len)
{
    uint8_t buf[PFX_LEN + MVCC_AUTH_MAX_NAME];
    MDB_val key;
    int rc = make_key(k, name, len, buf, &key);
    if (rc != 0)
        return 1;
    rc = mdb_del(t->txn, t->m->auth, &key, NULL);
    return rc == MDB_NOTFOUND ? 1 : mvcc__err(rc);
}

int mvcc_auth_each(struct mvcc_txn *t, enum mvcc_auth_kind k, mvcc_auth_fn fn,
                   void *ud)
{
    MDB_cursor *c;
    MDB_val key = {PFX_LEN, (void *)pfx(k)}, v;
    int rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->auth, &c)) != 0)
        return mvcc__err(rc);
    for (rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &key, &v, MDB_NEXT)) {
        MDB_val plain;
        if (key.mv_size < PFX_LEN || memcmp(key.mv_data, pfx(k), PFX_LEN) != 0)
            break;
        if ((rc = mvcc__value_open(t, t->m->auth, &key, &v, NULL, &plain)) != 0) {
            mdb_cursor_close(c);
            return mvcc__err(rc);
        }
        int frc = fn(ud, (const uint8_t *)key.mv_data + PFX_LEN,
                     key.mv_size - PFX_LEN, plain.mv_data, plain.mv_size);
        if (frc != 0) {
            mdb_cursor_close(c);
            return frc;
        }
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

int mvcc_auth_enabled(struct mvcc_txn *t)
{
    MDB_val key = {sizeof ENABLED_KEY - 1, (void *)ENABLED_KEY}, v;
    if (mdb_get(t->txn, t->m->meta, &key, &v) != 0)
        return 0;
    return v.mv_size == 1 && ((const uint8_t *)v.mv_data)[0] == 1;
}

int mvcc_auth_set_enabled(struct mvcc_txn *t, int on)
{
    uint8_t b = on ? 1 : 0;
    MDB_val key = {sizeof ENABLED_KEY - 1, (void *)ENABLED_KEY}, v = {1, &b};
    return mvcc__err(mdb_put(t->txn, t->m->meta, &key, &v, 0));
}

uint64_t mvcc_auth_revision(struct mvcc_txn *t)
{
    MDB_val key = {sizeof REVISION_KEY - 1, (void *)REVISION_KEY}, v;
    if (mdb_get(t->txn, t->m->meta, &key, &v) != 0 || v.mv_size != 8)
        return 0;
    return mvcc__get_be64(v.mv_data);
}

int mvcc_auth_set_revision(struct mvcc_txn *t, uint64_t rev)
{
    uint8_t b[8];
    mvcc__put_be64(b, rev);
    MDB_val key = {sizeof REVISION_KEY - 1, (void *)REVISION_KEY}, v = {8, b};
    return mvcc__err(mdb_put(t->txn, t->m->meta, &key, &v, 0));
}

/* ---- etcd snapshots: the auth, authRoles and authUsers buckets ---- */

static int snap_put_record(void *ud, const uint8_t *name, size_t nlen,
                           const uint8_t *val, size_t vlen)
{
    return snap_bbolt_put(ud, name, nlen, val, vlen);
}

int mvcc_auth_snapshot_write(struct mvcc_txn *t, struct snap_bbolt_writer *w)
{
    MDB_val key = {sizeof ENABLED_KEY - 1, (void *)ENABLED_KEY}, v;
    uint8_t rev[8];
    uint64_t r = mvcc_auth_revision(t);
    int rc;

    mvcc__put_be64(rev, r ? r : 1); /* etcd's initial revision is 1 */
    if ((rc = snap_bbolt_bucket_begin(w, "auth", 4)) != 0)
        return rc;
    /* authEnabled exists once auth was ever enabled, as in etcd */
    if (mdb_get(t->txn, t->m->meta, &key, &v) == 0 &&
        (rc = snap_bbolt_put(w, ENABLED_KEY, sizeof ENABLED_KEY - 1,
                             v.mv_data, v.mv_size)) != 0)
        return rc;
    if ((rc = snap_bbolt_put(w, REVISION_KEY, sizeof REVISION_KEY - 1, rev, 8)) != 0 ||
        (rc = snap_bbolt_bucket_end(w)) != 0)
        return rc;
    if ((rc = snap_bbolt_bucket_begin(w, "authRoles", 9)) != 0 ||
        (rc = mvcc_auth_each(t, MVCC_AUTH_ROLE, snap_put_record, w)) != 0 ||
        (rc = snap_bbolt_bucket_end(w)) != 0)
        return rc;
    if ((rc = snap_bbolt_bucket_begin(w, "authUsers", 9)) != 0 ||
        (rc = mvcc_auth_each(t, MVCC_AUTH_USER, snap_put_record, w)) != 0)
        return rc;
    return snap_bbolt_bucket_end(w);
}

int mvcc_auth_snapshot_record(struct mvcc_txn *t, const uint8_t *bucket,
                              size_t blen, const uint8_t *k, size_t klen,
                              const uint8_t *v, size_t vlen)
{
    if (blen == 4 && memcmp(bucket, "auth", 4) == 0) {
        if (klen == sizeof ENABLED_KEY - 1 && memcmp(k, ENABLED_KEY, klen) == 0)
            return mvcc_auth_set_enabled(t, vlen == 1 && v[0] == 1);
        if (klen == sizeof REVISION_KEY - 1 && memcmp(k, REVISION_KEY, klen) == 0) {
            if (vlen != 8)
                return -EBADMSG;
            return mvcc_auth_set_revision(t, mvcc__get_be64(v));
        }
        return 0; /* keys etcd may add later */
    }
    enum mvcc_auth_kind kind = blen == 9 && memcmp(bucket, "authUsers", 9) == 0
                                   ? MVCC_AUTH_USER
                                   : MVCC_AUTH_ROLE;
    /* the record must be what etcd would read back */
    ProtobufCMessage *m = protobuf_c_message_unpack(
        kind == MVCC_AUTH_USER ? &authpb__user__descriptor
                               : &authpb__role__descriptor,
        NULL, vlen, v);
    if (m == NULL)
        return -EBADMSG;
    protobuf_c_message_free_unpacked(m, NULL);
    return mvcc_auth_put(t, kind, (const char *)k, klen, v, vlen);
}
