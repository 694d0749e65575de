/* Maintenance views of the store: etcd's Hash and HashKV, the alarm list,
 * and the space the pages in use take (for the quota). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "core/crc32c.h"
#include "core/err.h"
#include "core/mem.h"
#include "mvcc/mvcc_int.h"

/* A record as etcd's key bucket holds it: key main BE8 '_' sub BE8 ['t'],
 * value the packed KeyValue (a tombstone's holds only the key). */
static uint32_t hash_record(struct mvcc_txn *t, uint32_t h, const MDB_val *k,
                            const MDB_val *v, struct arena *a, int *err)
{
    const uint8_t *kb = k->mv_data, *pl;
    uint8_t ek[18];
    struct mvcc_rev prev;
    Mvccpb__KeyValue kv;
    size_t pn;
    int tomb;

    /* The plaintext is hashed: encryption at rest leaves HashKV etcd's. */
    if (k->mv_size != MVCC_REVLEN ||
        mvcc__record_payload(t, k, v, a, &pl, &pn) != 0 ||
        mvcc__record_decode(t, k, v, NULL, &prev, &tomb, NULL) != 0 ||
        mvcc__kv_decode(pl, pn, &kv) != 0) {
        *err = CAIRN_ESTORE;
        return h;
    }
    memcpy(ek, kb, 8);
    ek[8] = '_';
    memcpy(ek + 9, kb + 8, 8);
    ek[17] = 't';
    h = crc32c(h, ek, tomb ? 18 : 17);
    if (!tomb)
        return crc32c(h, pl, pn);
    Mvccpb__KeyValue tk = MVCCPB__KEY_VALUE__INIT;
    tk.key = kv.key;
    size_t n = mvccpb__key_value__get_packed_size(&tk);
    uint8_t *b = arena_alloc(a, n);
    mvccpb__key_value__pack(&tk, b);
    return crc32c(h, b, n);
}

static int any_alive(void *ud, MDB_val *key, struct mvcc_rev rev)
{
    *(int *)ud = 1;
    return 1;
}

/* crc32c over the key bucket as etcd lays it out, up to revision @rev.
 * With @filter, of the revisions at or below the compaction only those
 * compaction keeps at @rev count (etcd's HashByRev). */
static int hash_keys(struct mvcc_txn *t, int64_t rev, int filter, uint32_t *out)
{
    MDB_cursor *c;
    MDB_val k, v;
    struct arena a;
    int rc, err = 0;
    uint32_t h;

    if ((rc = mdb_cursor_open(t->txn, t->m->kv, &c)) != 0)
        return mvcc__err(rc);
    arena_init(&a);
    h = crc32c(0, "key", 3);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && err == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != MVCC_REVLEN) {
            err = CAIRN_ESTORE;
            break;
        }
        int64_t main = (int64_t)mvcc__get_be64(k.mv_data);
        if (main > rev)
            break;
        if (main <= t->compact_rev && filter) {
            struct mvcc_rev prev, cur;
            Mvccpb__KeyValue kv;
            int tomb;
            if (mvcc__record_decode(t, &k, &v, &a, &prev, &tomb, &kv) != 0) {
                err = CAIRN_ESTORE;
                break;
            }
            int64_t sub = (int64_t)mvcc__get_be64((uint8_t *)k.mv_data + 8);
            if (tomb ||
                mvcc__index_get(t, kv.key.data, kv.key.len, rev, &cur) != 0 ||
                cur.main != main || cur.sub != sub || cur.tomb)
                continue;
        }
        h = hash_record(t, h, &k, &v, &a, &err);
        arena_reset(&a);
    }
    mdb_cursor_close(c);
    arena_free(&a);
    if (err != 0)
        return err;
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    *out = h;
    return 0;
}

/* etcd's kvstore HashByRev: revisions up to @rev; of those at or below the
 * compaction only the ones compaction keeps at @rev (each key's newest
 * revision at @rev unless a deletion) count, so members that compacted at
 * different moments agree. */
int mvcc_hash_kv(struct mvcc_txn *t, int64_t rev, uint32_t *hash,
                 int64_t *compact_rev)
{
    int rc, keep_any = 0;

    *compact_rev = t->compact_rev;
    if (rev > 0 && rev <= t->compact_rev)
        return CAIRN_ECOMPACTED;
    if (rev > 0 && rev > t->rev)
        return CAIRN_EFUTUREREV;
    if (rev == 0)
        rev = t->rev;
    rc = mvcc__index_visit(t, (const uint8_t *)"\0", 1, (const uint8_t *)"", 0,
                           1, rev, any_alive, &keep_any); /* every key */
    if (rc != 0)
        return rc;
    return hash_keys(t, rev, keep_any, hash);
}

/* The whole store in etcd's encodings (every record of the key bucket, then
 * the leases), for comparing members: equal stores hash equal. etcd hashes
 * its bbolt file's buckets, so the number differs from etcd's own. */
int mvcc_hash(struct mvcc_txn *t, uint32_t *hash)
{
    MDB_cursor *c;
    MDB_val k, v;
    struct arena a;
    int rc, err = 0;
    uint32_t h;

    if ((rc = hash_keys(t, INT64_MAX, 0, &h)) != 0)
        return rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->lease, &c)) != 0)
        return mvcc__err(rc);
    h = crc32c(h, "lease", 5);
    arena_init(&a);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        MDB_val pv;
        if ((err = mvcc__value_open(t, t->m->lease, &k, &v, &a, &pv)) != 0)
            break;
        h = crc32c(h, k.mv_data, k.mv_size);
        h = crc32c(h, pv.mv_data, pv.mv_size);
        arena_reset(&a);
    }
    mdb_cursor_close(c);
    arena_free(&a);
    if (err != 0)
        return err;
    if (rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    *hash = h;
    return 0;
}

/* Alarms live in meta under "alarm" be64(member) be32(type), so that they
 * survive restarts as etcd's alarm bucket does. */
#define ALARM_PFX "alarm"
#define ALARM_KEYLEN (sizeof ALARM_PFX - 1 + 12)

static void alarm_key(uint8_t *b, uint64_t member, int type)
{
    memcpy(b, ALARM_PFX, sizeof ALARM_PFX - 1);
    mvcc__put_be64(b + 5, member);
    b[13] = (uint8_t)((uint32_t)type >> 24);
    b[14] = (uint8_t)((uint32_t)type >> 16);
    b[15] = (uint8_t)((uint32_t)type >> 8);
    b[16] = (uint8_t)type;
}

int mvcc_alarm_put(struct mvcc_txn *t, uint64_t member, int type)
{
    uint8_t b[ALARM_KEYLEN];
    alarm_key(b, member, type);
    MDB_val k = {sizeof b, b}, v = {0, b};
    return mvcc__err(mdb_put(t->txn, t->m->meta, &k, &v, 0));
}

int mvcc_alarm_del(struct mvcc_txn *t, uint64_t member, int type)
{
    uint8_t b[ALARM_KEYLEN];
    alarm_key(b, member, type);
    MDB_val k = {sizeof b, b};
    int rc = mdb_del(t->txn, t->m->meta, &k, NULL);
    return rc == MDB_NOTFOUND ? 1 : mvcc__err(rc);
}

int mvcc_alarms(struct mvcc_txn *t, mvcc_alarm_fn fn, void *ud)
{
    MDB_cursor *c;
    MDB_val k = {sizeof ALARM_PFX - 1, (void *)ALARM_PFX}, v;
    int rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->meta, &c)) != 0)
        return mvcc__err(rc);
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        if (k.mv_size < 5 || memcmp(p, ALARM_PFX, 5) != 0)
            break;
        if (k.mv_size != ALARM_KEYLEN)
            continue;
        int type = (int)((uint32_t)p[13] << 24 | (uint32_t)p[14] << 16 |
                         (uint32_t)p[15] << 8 | p[16]);
        int frc = fn(ud, mvcc__get_be64(p + 5), type);
        if (frc != 0) {
            mdb_cursor_close(c);
            return frc < 0 ? frc : 0;
        }
    }
    mdb_cursor_close(c);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

/* Pages LMDB keeps on its freelist: freed by compaction and overwrites,
 * reused by later writes (so space is reclaimed without a defragment).
 * Records in the free DB: key txnid, value an IDL whose first slot holds
 * the page count. */
static int free_pages(MDB_txn *txn, int64_t *n)
{
    MDB_cursor *c;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, 0, &c);
    *n = 0;
    if (rc != 0)
        return mvcc__err(rc);
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size >= sizeof(size_t)) {
            size_t cnt;
            memcpy(&cnt, v.mv_data, sizeof cnt);
            *n += (int64_t)cnt;
        }
    mdb_cursor_close(c);
    return rc == MDB_NOTFOUND ? 0 : mvcc__err(rc);
}

void mvcc_size(struct mvcc *m, int64_t *db_size, int64_t *in_use)
{
    MDB_txn *txn;
    MDB_envinfo info;
    MDB_stat ms;
    int64_t nfree = 0;

    *db_size = mvcc__file_size(m);
    mdb_env_info(m->env, &info);
    mdb_env_stat(m->env, &ms);
    if (mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn) == 0) {
        if (free_pages(txn, &nfree) != 0)
            nfree = 0;
        mdb_txn_abort(txn);
    }
    *in_use = ((int64_t)info.me_last_pgno + 1 - nfree) * ms.ms_psize;
    if (*in_use > (int64_t)(info.me_last_pgno + 1) * ms.ms_psize)
        *in_use = (int64_t)(info.me_last_pgno + 1) * ms.ms_psize;
}

/* mdb_reader_list() prints one line per reader slot: pid, thread, txnid
 * (or "-" when idle). */
static int oldest_reader(const char *msg, void *ud)
{
    uint64_t *oldest = ud;
    int pid;
    size_t tid;
    char txn[32];
    if (sscanf(msg, "%d %zx %31s", &pid, &tid, txn) == 3 && txn[0] >= '0' &&
        txn[0] <= '9') {
        uint64_t id = strtoull(txn, NULL, 10);
        if (id < *oldest)
            *oldest = id;
    }
    return 0;
}

#define DEFRAG_CHUNK_PAGES 256 /* 1 MiB of 4 KiB pages */

static int cmp_pgno(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

int mvcc_defrag_step(struct mvcc *m, uint64_t *from, int64_t budget_us,
                     int64_t *punched)
{
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    MDB_stat ms;
    uint64_t oldest;
    size_t *pg = NULL, n = 0, cap = 0;
    int fd, rc, more = 0;

    if ((rc = mdb_env_get_fd(m->env, &fd)) != 0)
        return mvcc__err(rc);
    mdb_env_stat(m->env, &ms);
    if ((rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn)) != 0)
        return mvcc__err(rc);
    /* Pages freed by txn T are unreachable by every snapshot from T on;
     * the newest committed txn's predecessor may still be needed for
     * recovery, so only T below both it and the oldest reader count (the
     * same rule LMDB applies before reusing a page). */
    oldest = mdb_txn_id(txn);
    mdb_reader_list(m->env, oldest_reader, &oldest);
    if ((rc = mdb_cursor_open(txn, 0, &c)) != 0) {
        mdb_txn_abort(txn);
        return mvcc__err(rc);
    }
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0) {
        size_t id, cnt;
        if (k.mv_size != sizeof id || v.mv_size < sizeof cnt)
            continue;
        memcpy(&id, k.mv_data, sizeof id);
        if (id >= oldest) {
            rc = MDB_NOTFOUND; /* the rest is newer */
            break;
        }
        memcpy(&cnt, v.mv_data, sizeof cnt);
        if ((cnt + 1) * sizeof(size_t) > v.mv_size)
            cnt = v.mv_size / sizeof(size_t) - 1;
        for (size_t i = 1; i <= cnt; i++) {
            size_t p;
            memcpy(&p, (const uint8_t *)v.mv_data + i * sizeof p, sizeof p);
            if (p < *from)
                continue;
            if (n == cap) {
                cap = cap ? cap * 2 : 1024;
                pg = cairn_realloc(pg, cap * sizeof *pg);
            }
            pg[n++] = p;
        }
    }
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    if (rc != MDB_NOTFOUND) {
        cairn_free(pg);
        return mvcc__err(rc);
    }
    if (n > 0)
        qsort(pg, n, sizeof *pg, cmp_pgno);
    /* Freeing extents costs time in the filesystem: punch at most
     * DEFRAG_CHUNK_PAGES at a time and stop once the budget is spent. */
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && pg[j] == pg[j - 1] + 1 && j - i < DEFRAG_CHUNK_PAGES)
            j++;
        if ((int64_t)(uv_hrtime() - t0) / 1000 >= budget_us) {
            more = 1;
            *from = pg[i];
            break;
        }
        off_t off = (off_t)pg[i] * ms.ms_psize;
        off_t len = (off_t)(j - i) * ms.ms_psize;
        if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) != 0) {
            rc = errno == EOPNOTSUPP ? CAIRN_EUNIMPLEMENTED : -errno;
            cairn_free(pg);
            return rc;
        }
        *punched += len;
        i = j;
    }
    cairn_free(pg);
    return more;
}
