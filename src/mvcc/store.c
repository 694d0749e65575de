/* The LMDB side of the MVCC store: environment, txns, the key index and
 * the revision records. The only files that include lmdb.h are in mvcc/. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypt/crypt.h"
#include "mvcc/mvcc_int.h"

void mvcc__put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t mvcc__get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

void mvcc__rev_encode(uint8_t out[MVCC_IDXLEN], struct mvcc_rev r)
{
    mvcc__put_be64(out, (uint64_t)r.main);
    mvcc__put_be64(out + 8, (uint64_t)r.sub);
    out[16] = r.tomb ? MVCC_TOMBSTONE : 0;
    mvcc__put_be64(out + 17, (uint64_t)r.create);
    mvcc__put_be64(out + 25, (uint64_t)r.version);
    mvcc__put_be64(out + 33, (uint64_t)r.lease);
}

struct mvcc_rev mvcc__rev_decode(const uint8_t *p)
{
    struct mvcc_rev r;
    r.main = (int64_t)mvcc__get_be64(p);
    r.sub = (int64_t)mvcc__get_be64(p + 8);
    r.tomb = p[16] == MVCC_TOMBSTONE;
    r.create = (int64_t)mvcc__get_be64(p + 17);
    r.version = (int64_t)mvcc__get_be64(p + 25);
    r.lease = (int64_t)mvcc__get_be64(p + 33);
    return r;
}

int mvcc__err(int rc)
{
    if (rc == 0)
        return 0;
    if (rc <= -1000 && rc > -2000)
        return rc; /* already a cairn code (e.g. a record that fails to
                    * decrypt, logged where it was found) */
    if (rc > 0 && rc < 1000)
        return -rc; /* errno */
    if (rc == MDB_MAP_FULL)
        return CAIRN_ENOSPACE;
    log_error("mvcc: lmdb error rc=%d msg=%s", rc, mdb_strerror(rc));
    return CAIRN_ESTORE;
}

static int count_live(struct mvcc *m, MDB_txn *txn);

/* The layout's version (mvcc_int.h), so that a store written by an older
 * cairn is refused rather than misread. */
static int check_format(struct mvcc *m, MDB_txn *txn)
{
    static const char name[] = "format";
    MDB_val k = {sizeof name - 1, (void *)name}, v;
    MDB_stat st;
    uint8_t b[8];
    int rc = mdb_get(txn, m->meta, &k, &v);
    if (rc == 0) {
        if (v.mv_size == 8 && (mvcc__get_be64(v.mv_data) == MVCC_FORMAT ||
                               mvcc__get_be64(v.mv_data) == MVCC_FORMAT_SEALED))
            return 0;
        log_error("mvcc: the store's format is not %d", MVCC_FORMAT);
        return MDB_INCOMPATIBLE;
    }
    if ((rc = mdb_stat(txn, m->kv, &st)) != 0)
        return rc;
    if (st.ms_entries > 0) {
        log_error("mvcc: this data dir was written by an older cairn (format "
                  "1); start with an empty --data-dir");
        return MDB_INCOMPATIBLE;
    }
    mvcc__put_be64(b, MVCC_FORMAT);
    v.mv_size = 8;
    v.mv_data = b;
    return mdb_put(txn, m->meta, &k, &v, 0);
}

int mvcc_open(const char *dir, size_t map_size, struct mvcc **out)
{
    struct mvcc *m = cairn_calloc(1, sizeof *m);
    MDB_txn *txn;
    int rc;

    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        rc = -errno;
        goto err_free;
    }
    m->path = cairn_strdup(dir);
    rc = mdb_env_create(&m->env);
    if (rc != 0)
        goto err_lmdb;
    mdb_env_set_maxdbs(m->env, 8);
    mdb_env_set_mapsize(m->env, map_size);
    mdb_env_set_maxreaders(m->env, 512);
    /* NOTLS: read txns are not tied to threads. NOMETASYNC: a commit
     * fsyncs its data pages, and the meta page written with them becomes
     * durable with the next commit (or mvcc_sync). A crash of the machine
     * can so lose the last commit, never more and never half of one; the
     * raft log (src/repl) holds it and replays it. One fsync per group
     * commit instead of two. */
    rc = mdb_env_open(m->env, dir, MDB_NOTLS | MDB_NORDAHEAD | MDB_NOMETASYNC,
                      0600);
    if (rc != 0)
        goto err_env;
    rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc != 0)
        goto err_env;
    if ((rc = mdb_dbi_open(txn, "kv", MDB_CREATE, &m->kv)) != 0 ||
        (rc = mdb_dbi_open(txn, "cur", MDB_CREATE, &m->cur)) != 0 ||
        (rc = mdb_dbi_open(txn, "meta", MDB_CREATE, &m->meta)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease", MDB_CREATE, &m->lease)) != 0 ||
        (rc = mdb_dbi_open(txn, "lease_keys", MDB_CREATE, &m->lease_keys)) != 0 ||
        (rc = mdb_dbi_open(txn, "auth", MDB_CREATE, &m->auth)) != 0) {
        mdb_txn_abort(txn);
        goto err_env;
    }
    mvcc__seal_register(m, m->lease, "lease");
    mvcc__seal_register(m, m->auth, "auth");
    if ((rc = check_format(m, txn)) != 0 || (rc = count_live(m, txn)) != 0) {
        mdb_txn_abort(txn);
        goto err_env;
    }
    rc = mdb_txn_commit(txn);
    if (rc != 0)
        goto err_env;
    /* Clear reader slots left by a killed process. */
    int dead = 0;
    mdb_reader_check(m->env, &dead);
    *out = m;
    return 0;

err_env:
    mdb_env_close(m->env);
err_lmdb:
    rc = rc > 0 && rc < 1000 ? -rc : mvcc__err(rc);
    cairn_free(m->path);
err_free:
    cairn_free(m);
    return rc;
}

int mvcc_sync(struct mvcc *m)
{
    return mvcc__err(mdb_env_sync(m->env, 1));
}

void mvcc_close(struct mvcc *m)
{
    if (m == NULL)
        return;
    mdb_env_sync(m->env, 1); /* the last commit's meta page */
    mdb_env_close(m->env);
    crypt_ring_free(atomic_load(&m->ring));
    cairn_free(m->path);
    cairn_free(m);
}

/* The file's size as the disk holds it: blocks a defragment punched out
 * of it are not counted (etcd reports what is physically allocated). */
int64_t mvcc__file_size(struct mvcc *m)
{
    char path[4096];
    struct stat st;

    snprintf(path, sizeof path, "%s/data.mdb", m->path);
    if (stat(path, &st) != 0)
        return 0;
    int64_t alloc = (int64_t)st.st_blocks * 512;
    return alloc < (int64_t)st.st_size ? alloc : (int64_t)st.st_size;
}

static int load_revs(struct mvcc_txn *t)
{
    t->rev = mvcc_meta_get(t, "rev", 1);
    t->compact_rev = mvcc_meta_get(t, "compact", -1);
    return 0;
}

int mvcc_read_begin(struct mvcc *m, struct mvcc_txn *t)
{
    MDB_txn *txn;
    memset(t, 0, sizeof *t);
    int rc = mdb_txn_begin(m->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0)
        return mvcc__err(rc);
    t->m = m;
    t->txn = txn;
    return load_revs(t);
}

void mvcc_read_end(struct mvcc_txn *t)
{
    if (t->idx_cur != NULL)
        mdb_cursor_close(t->idx_cur);
    mdb_txn_abort(t->txn);
    t->txn = NULL;
    t->idx_cur = NULL;
    mvcc__txn_release(t);
}

int mvcc_write_begin(struct mvcc *m, struct mvcc_txn *t)
{
    MDB_txn *txn;
    memset(t, 0, sizeof *t);
    int rc = mdb_txn_begin(m->env, NULL, 0, &txn);
    if (rc != 0)
        return mvcc__err(rc);
    t->m = m;
    t->txn = txn;
    t->write = 1;
    return load_revs(t);
}

void mvcc_cmd_end(struct mvcc_txn *t)
{
    if (t->changes > 0)
        t->rev++;
    t->changes = 0;
}

int mvcc_write_commit(struct mvcc_txn *t)
{
    int rc = mvcc_meta_put(t, "rev", t->rev);
    if (t->idx_cur != NULL)
        mdb_cursor_close(t->idx_cur);
    t->idx_cur = NULL;
    if (rc != 0) {
        mdb_txn_abort(t->txn);
        t->txn = NULL;
        mvcc__txn_release(t);
        return rc;
    }
    rc = mdb_txn_commit(t->txn);
    t->txn = NULL;
    mvcc__txn_release(t);
    if (rc == 0)
        atomic_fetch_add(&t->m->live_keys, t->keys_delta);
    return mvcc__err(rc);
}

int64_t mvcc_keys(struct mvcc *m)
{
    return atomic_load(&m->live_keys);
}

/* The live keys, counted once at open; commits keep the count after. */
static int count_live(struct mvcc *m, MDB_txn *txn)
{
    MDB_cursor *c;
    MDB_val k, v;
    int64_t n = 0;
    int rc = mdb_cursor_open(txn, m->cur, &c);
    if (rc != 0)
        return rc;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) == 0)
        if (v.mv_size == MVCC_IDXLEN && !mvcc__rev_decode(v.mv_data).tomb)
            n++;
    mdb_cursor_close(c);
    atomic_store(&m->live_keys, n);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

void mvcc_write_abort(struct mvcc_txn *t)
{
    if (t->idx_cur != NULL)
        mdb_cursor_close(t->idx_cur);
    t->idx_cur = NULL;
    if (t->txn != NULL)
        mdb_txn_abort(t->txn);
    t->txn = NULL;
    mvcc__txn_release(t);
}

int64_t mvcc_meta_get(struct mvcc_txn *t, const char *name, int64_t dflt)
{
    MDB_val k = {strlen(name), (void *)name}, v;
    if (mdb_get(t->txn, t->m->meta, &k, &v) != 0 || v.mv_size != 8)
        return dflt;
    return (int64_t)mvcc__get_be64(v.mv_data);
}

int mvcc_meta_put(struct mvcc_txn *t, const char *name, int64_t val)
{
    uint8_t b[8];
    mvcc__put_be64(b, (uint64_t)val);
    MDB_val k = {strlen(name), (void *)name}, v = {8, b};
    return mvcc__err(mdb_put(t->txn, t->m->meta, &k, &v, 0));
}

static MDB_cursor *cur_cursor(struct mvcc_txn *t)
{
    if (t->idx_cur == NULL) {
        MDB_cursor *c;
        if (mdb_cursor_open(t->txn, t->m->cur, &c) != 0)
            return NULL;
        t->idx_cur = c;
    }
    return t->idx_cur;
}

int mvcc__record_decode(struct mvcc_txn *t, const MDB_val *k, const MDB_val *v,
                        struct arena *a, struct mvcc_rev *prev, int *tomb,
                        Mvccpb__KeyValue *kv)
{
    const uint8_t *p = v->mv_data, *kvp;
    size_t n;
    int rc;
    if (v->mv_size < MVCC_RECHDR)
        return CAIRN_ESTORE;
    *tomb = p[0] == MVCC_TOMBSTONE;
    memset(prev, 0, sizeof *prev);
    prev->main = (int64_t)mvcc__get_be64(p + 1);
    prev->sub = (int64_t)mvcc__get_be64(p + 9);
    if (kv == NULL)
        return 0;
    if ((rc = mvcc__record_payload(t, k, v, a, &kvp, &n)) != 0)
        return rc;
    return mvcc__kv_decode(kvp, n, kv);
}

/* The record of revision @r: its KeyValue, its flag and the revision of the
 * key before it. MDB_NOTFOUND when compaction removed it. */
int mvcc__record_decode_at(struct mvcc_txn *t, struct mvcc_rev r,
                           struct arena *a, Mvccpb__KeyValue *kv,
                           struct mvcc_rev *prev, int *tomb)
{
    uint8_t kb[MVCC_IDXLEN];
    MDB_val k = {MVCC_REVLEN, kb}, v;
    mvcc__rev_encode(kb, r);
    int rc = mdb_get(t->txn, t->m->kv, &k, &v);
    if (rc != 0)
        return rc;
    return mvcc__record_decode(t, &k, &v, a, prev, tomb, kv);
}

/* From the key's entry @e, back along its history to the newest revision at
 * or below @rev. A link to a record compaction removed ends the history:
 * compaction only removes revisions no reader at or above the compacted
 * revision can reach, and tombstones (which mean "absent"). */
static int walk_back(struct mvcc_txn *t, struct mvcc_rev e, int64_t rev,
                     struct mvcc_rev *out)
{
    struct mvcc_rev link;
    int have_link = 0;
    while (e.main > rev) {
        Mvccpb__KeyValue kv;
        struct mvcc_rev next;
        int tomb, rc;
        if (!have_link &&
            (rc = mvcc__record_decode_at(t, e, NULL, NULL, &link, &tomb)) != 0)
            return rc;
        if (link.main == 0)
            return MDB_NOTFOUND; /* the key did not exist yet */
        /* Only the numbers are kept: a sealed record's plaintext can go
         * to scratch. */
        struct arena *s = t->m->ring != NULL ? mvcc__txn_scratch(t) : NULL;
        if (s != NULL)
            arena_reset(s);
        if ((rc = mvcc__record_decode_at(t, link, s, &kv, &next, &tomb)) != 0)
            return rc;
        e.main = link.main;
        e.sub = link.sub;
        e.tomb = tomb;
        e.create = kv.create_revision;
        e.version = kv.version;
        e.lease = kv.lease;
        link = next;
        have_link = 1;
    }
    *out = e;
    return 0;
}

int mvcc__index_get(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                    int64_t rev, struct mvcc_rev *out)
{
    MDB_val k = {klen, (void *)key}, v;
    if (klen == 0 || klen > MVCC_MAX_KEY)
        return MDB_NOTFOUND;
    int rc = mdb_get(t->txn, t->m->cur, &k, &v);
    if (rc != 0)
        return rc;
    return walk_back(t, mvcc__rev_decode(v.mv_data), rev, out);
}

static int key_cmp(const MDB_val *k, const uint8_t *b, size_t blen)
{
    size_t n = k->mv_size < blen ? k->mv_size : blen;
    int c = memcmp(k->mv_data, b, n);
    if (c != 0)
        return c;
    return k->mv_size < blen ? -1 : k->mv_size > blen;
}

int mvcc__index_visit(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                      const uint8_t *end, size_t elen, int end_given,
                      int64_t rev, mvcc_visit_fn fn, void *ud)
{
    MDB_cursor *c = cur_cursor(t);
    MDB_val k, v;
    struct mvcc_rev r;
    int rc;

    if (c == NULL)
        return CAIRN_ESTORE;
    if (!end_given) {
        rc = mvcc__index_get(t, key, klen, rev, &r);
        if (rc == MDB_NOTFOUND || (rc == 0 && r.tomb))
            return 0;
        if (rc != 0)
            return mvcc__err(rc);
        k.mv_size = klen;
        k.mv_data = (void *)key;
        rc = fn(ud, &k, r);
        return rc < 0 ? rc : 0;
    }
    k.mv_size = klen;
    k.mv_data = (void *)key;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        if (elen > 0 && key_cmp(&k, end, elen) >= 0)
            break;
        rc = walk_back(t, mvcc__rev_decode(v.mv_data), rev, &r);
        if (rc == 0 && !r.tomb) {
            int frc = fn(ud, &k, r);
            if (frc != 0)
                return frc < 0 ? frc : 0;
        } else if (rc != 0 && rc != MDB_NOTFOUND) {
            return mvcc__err(rc);
        }
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    return rc == MDB_NOTFOUND || rc == 0 ? 0 : mvcc__err(rc);
}

int mvcc__record_get(struct mvcc_txn *t, struct mvcc_rev rev,
                     struct arena *a, Mvccpb__KeyValue *kv)
{
    struct mvcc_rev prev;
    int tomb;
    int rc = mvcc__record_decode_at(t, rev, a, kv, &prev, &tomb);
    if (rc == MDB_NOTFOUND) {
        log_error("mvcc: missing record main=%lld sub=%lld",
                  (long long)rev.main, (long long)rev.sub);
        return CAIRN_ESTORE;
    }
    if (rc != 0)
        return mvcc__err(rc);
    return 0;
}

int mvcc__record_put(struct mvcc_txn *t, const Mvccpb__KeyValue *kv,
                     int tomb, struct arena *a)
{
    struct mvcc_rev r = {kv->mod_revision, t->changes, tomb,
                         kv->create_revision, kv->version, kv->lease};
    uint8_t ib[MVCC_IDXLEN];
    size_t n = mvccpb__key_value__get_packed_size(kv);
    uint8_t *rec = arena_alloc(a, n + MVCC_RECHDR);
    MDB_val k, v;
    int rc;

    if (kv->key.len == 0 || kv->key.len > MVCC_MAX_KEY)
        return CAIRN_ETOOLARGE;
    /* Link to the key's previous revision, which its entry names. */
    memset(rec, 0, MVCC_RECHDR);
    k.mv_size = kv->key.len;
    k.mv_data = kv->key.data;
    rc = mdb_get(t->txn, t->m->cur, &k, &v);
    int was_live = rc == 0 && !mvcc__rev_decode(v.mv_data).tomb;
    if (rc == 0)
        memcpy(rec + 1, v.mv_data, MVCC_REVLEN);
    else if (rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    t->keys_delta += (tomb ? 0 : 1) - was_live;
    rec[0] = tomb ? MVCC_TOMBSTONE : 0;
    mvccpb__key_value__pack(kv, rec + MVCC_RECHDR);
    mvcc__rev_encode(ib, r);
    k.mv_size = MVCC_REVLEN;
    k.mv_data = ib;
    if ((rc = mvcc__record_seal(t, ib, rec, n + MVCC_RECHDR, a, &v)) != 0)
        return rc;
    /* Revisions only grow, so records append at the end of the B-tree. */
    rc = mdb_put(t->txn, t->m->kv, &k, &v, MDB_APPEND);
    if (rc != 0)
        return mvcc__err(rc);
    k.mv_size = kv->key.len;
    k.mv_data = kv->key.data;
    v.mv_size = MVCC_IDXLEN;
    v.mv_data = ib;
    rc = mdb_put(t->txn, t->m->cur, &k, &v, 0);
    if (rc != 0)
        return mvcc__err(rc);
    t->changes++;
    return 0;
}

int mvcc_events(struct mvcc_txn *t, int64_t from, int64_t to, mvcc_event_fn fn,
                void *ud)
{
    MDB_cursor *c;
    uint8_t kb[MVCC_IDXLEN];
    struct mvcc_rev start = {from, 0, 0, 0, 0, 0};
    MDB_val k, v;
    int rc;

    if (from > to)
        return 0;
    if ((rc = mdb_cursor_open(t->txn, t->m->kv, &c)) != 0)
        return mvcc__err(rc);
    mvcc__rev_encode(kb, start);
    k.mv_size = MVCC_REVLEN;
    k.mv_data = kb;
    rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0) {
        Mvccpb__KeyValue kv;
        int64_t main = (int64_t)mvcc__get_be64(k.mv_data);
        if (main > to)
            break;
        struct mvcc_rev prev;
        int tomb;
        if ((rc = mvcc__record_decode(t, &k, &v, NULL, &prev, &tomb, &kv)) != 0)
            break;
        rc = fn(ud, tomb, &kv);
        if (rc != 0)
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND || rc == 1)
        rc = 0;
    return rc > 0 ? mvcc__err(rc) : rc;
}

int mvcc_get_at(struct mvcc_txn *t, const uint8_t *key, size_t klen,
                int64_t rev, Mvccpb__KeyValue *kv)
{
    struct mvcc_rev r;
    if (rev < t->compact_rev || rev <= 0)
        return 1;
    int rc = mvcc__index_get(t, key, klen, rev, &r);
    if (rc == MDB_NOTFOUND || (rc == 0 && r.tomb))
        return 1;
    if (rc != 0)
        return mvcc__err(rc);
    return mvcc__record_get(t, r, NULL, kv);
}
