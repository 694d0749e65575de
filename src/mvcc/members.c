/* Cluster members live in meta, as etcd keeps them in its members bucket:
 * "member" be64(id) -> a packed etcdserverpb.Member; a removed member
 * leaves "memberx" be64(id) behind, because etcd never lets a removed ID
 * back in (and the leader uses the mark to take it out of raft's
 * configuration). Replicated: only the apply thread writes them. */
#include <string.h>

#include "mvcc/mvcc_int.h"

#define MEMBER_PFX "member"
#define REMOVED_PFX "memberx"

static size_t member_key(uint8_t *b, const char *pfx, uint64_t id)
{
    size_t n = strlen(pfx);
    memcpy(b, pfx, n);
    mvcc__put_be64(b + n, id);
    return n + 8;
}

int mvcc_member_put(struct mvcc_txn *t, uint64_t id, const uint8_t *rec,
                    size_t len)
{
    uint8_t b[16];
    MDB_val k = {member_key(b, MEMBER_PFX, id), b}, v = {len, (void *)rec};
    return mvcc__err(mdb_put(t->txn, t->m->meta, &k, &v, 0));
}

int mvcc_member_remove(struct mvcc_txn *t, uint64_t id)
{
    uint8_t b[16];
    MDB_val k = {member_key(b, MEMBER_PFX, id), b}, v = {0, b};
    int rc = mdb_del(t->txn, t->m->meta, &k, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    k.mv_size = member_key(b, REMOVED_PFX, id);
    return mvcc__err(mdb_put(t->txn, t->m->meta, &k, &v, 0));
}

int mvcc_member_get(struct mvcc_txn *t, uint64_t id, const uint8_t **rec,
                    size_t *len)
{
    uint8_t b[16];
    MDB_val k = {member_key(b, MEMBER_PFX, id), b}, v;
    int rc = mdb_get(t->txn, t->m->meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        k.mv_size = member_key(b, REMOVED_PFX, id);
        return mdb_get(t->txn, t->m->meta, &k, &v) == 0 ? 2 : 1;
    }
    if (rc != 0)
        return mvcc__err(rc);
    *rec = v.mv_data;
    *len = v.mv_size;
    return 0;
}

int mvcc_members(struct mvcc_txn *t, mvcc_member_fn fn, void *ud)
{
    MDB_cursor *c;
    MDB_val k = {sizeof MEMBER_PFX - 1, (void *)MEMBER_PFX}, v;
    int rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->meta, &c)) != 0)
        return mvcc__err(rc);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        size_t pl = sizeof MEMBER_PFX - 1;
        if (k.mv_size < pl || memcmp(p, MEMBER_PFX, pl) != 0)
            break;
        int removed = 0;
        if (k.mv_size == pl + 9 && p[pl] == 'x')
            removed = 1;
        else if (k.mv_size != pl + 8)
            continue;
        uint64_t id = mvcc__get_be64(p + k.mv_size - 8);
        int frc = fn(ud, id, v.mv_data, v.mv_size, removed);
        if (frc != 0) {
            mdb_cursor_close(c);
            return frc < 0 ? frc : 0;
        }
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

/* A consistent, compacted copy of the whole store (one LMDB read txn) for
 * a follower that is too far behind for the log: raft's InstallSnapshot
 * carries it beside (src/repl). Runs on any thread. */
int mvcc_image_write(struct mvcc *m, int fd)
{
    return mvcc__err(mdb_env_copyfd2(m->env, fd, MDB_CP_COMPACT));
}
