/* The store <-> an etcd snapshot (bbolt with etcd's schema): see
 * snapshot.h. Both directions stream: export reads the LMDB databases
 * with cursors and the bbolt writer keeps a few pages per tree level;
 * import reads the bbolt file page by page and commits every
 * RESTORE_BATCH records. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "crypt/crypt.h"
#include "core/mem.h"
#include "mvcc/mvcc_int.h"
#include "mvcc/snapshot.h"
#include "mvcc/auth.h"
#include "snap/bbolt.h"

#define RESTORE_BATCH 20000
#define ETCD_REVLEN 17 /* main BE8, '_', sub BE8 */

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return 0;
    }
    return -EBADMSG;
}

/* etcd's revToBytes. */
static void etcd_rev(uint8_t *p, int64_t main, int64_t sub)
{
    mvcc__put_be64(p, (uint64_t)main);
    p[8] = '_';
    mvcc__put_be64(p + 9, (uint64_t)sub);
}

/* ---- export ---- */

static int put_be64(struct snap_bbolt_writer *w, const char *k, int64_t v)
{
    uint8_t b[8];
    mvcc__put_be64(b, (uint64_t)v);
    return snap_bbolt_put(w, k, strlen(k), b, 8);
}

static int empty_bucket(struct snap_bbolt_writer *w, const char *name)
{
    int rc = snap_bbolt_bucket_begin(w, name, strlen(name));
    return rc != 0 ? rc : snap_bbolt_bucket_end(w);
}

/* etcd's alarm bucket: each raised alarm's packed AlarmMember (memberID 1,
 * alarm 2) as the key, no value; keys in byte order. */
struct alarm_keys {
    uint8_t k[16][24];
    size_t n[16];
    int count;
};

static int collect_alarm(void *ud, uint64_t member, int type)
{
    struct alarm_keys *a = ud;
    if (a->count == 16)
        return 1;
    uint8_t *p = a->k[a->count];
    size_t n = 0;
    if (member != 0) {
        p[n++] = 0x08;
        n += put_varint(p + n, member);
    }
    if (type != 0) {
        p[n++] = 0x10;
        n += put_varint(p + n, (uint64_t)type);
    }
    a->n[a->count++] = n;
    return 0;
}

static int write_alarms(struct mvcc_txn *t, struct snap_bbolt_writer *w)
{
    struct alarm_keys a = {0};
    int rc = mvcc_alarms(t, collect_alarm, &a);
    if (rc != 0 || (rc = snap_bbolt_bucket_begin(w, "alarm", 5)) != 0)
        return rc;
    for (int i = 0; i < a.count; i++) /* insertion sort: a handful */
        for (int j = i; j > 0; j--) {
            size_t m = a.n[j] < a.n[j - 1] ? a.n[j] : a.n[j - 1];
            int c = memcmp(a.k[j], a.k[j - 1], m);
            if (c > 0 || (c == 0 && a.n[j] >= a.n[j - 1]))
                break;
            uint8_t tk[24];
            size_t tn = a.n[j];
            memcpy(tk, a.k[j], sizeof tk);
            memcpy(a.k[j], a.k[j - 1], sizeof tk);
            memcpy(a.k[j - 1], tk, sizeof tk);
            a.n[j] = a.n[j - 1];
            a.n[j - 1] = tn;
        }
    for (int i = 0; i < a.count; i++)
        if ((rc = snap_bbolt_put(w, a.k[i], a.n[i], "", 0)) != 0)
            return rc;
    return snap_bbolt_bucket_end(w);
}

static int write_keys(struct mvcc_txn *t, struct snap_bbolt_writer *w,
                      const atomic_int *stop)
{
    struct arena a;
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    if ((rc = snap_bbolt_bucket_begin(w, "key", 3)) != 0)
        return rc;
    if ((rc = mdb_cursor_open(t->txn, t->m->kv, &c)) != 0)
        return mvcc__err(rc);
    /* etcd's format is plaintext (it is for etcd): sealed records are
     * decrypted, one at a time, into @a. */
    arena_init(&a);
    rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        Mvccpb__KeyValue kv;
        struct mvcc_rev prev;
        uint8_t key[ETCD_REVLEN + 1];
        const uint8_t *pl;
        size_t pn;
        int tomb;
        arena_reset(&a);
        if (stop != NULL && atomic_load_explicit(stop, memory_order_relaxed)) {
            rc = -ECANCELED;
            break;
        }
        if (k.mv_size != MVCC_REVLEN ||
            mvcc__record_payload(t, &k, &v, &a, &pl, &pn) != 0 ||
            mvcc__record_decode(t, &k, &v, NULL, &prev, &tomb, NULL) != 0 ||
            mvcc__kv_decode(pl, pn, &kv) != 0) {
            rc = CAIRN_ESTORE;
            break;
        }
        etcd_rev(key, (int64_t)mvcc__get_be64(k.mv_data),
                 (int64_t)mvcc__get_be64((uint8_t *)k.mv_data + 8));
        if (tomb) {
            /* etcd's tombstone value: KeyValue{Key} and nothing else. */
            uint8_t *tv = cairn_malloc(kv.key.len + 11);
            size_t n = 1 + put_varint(tv + 1, kv.key.len);
            tv[0] = 0x0a;
            memcpy(tv + n, kv.key.data, kv.key.len);
            key[ETCD_REVLEN] = 't';
            rc = snap_bbolt_put(w, key, ETCD_REVLEN + 1, tv, n + kv.key.len);
            cairn_free(tv);
        } else {
            /* The stored KeyValue is etcd's, field for field. */
            rc = snap_bbolt_put(w, key, ETCD_REVLEN, pl, pn);
        }
        if (rc != 0)
            break;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    mdb_cursor_close(c);
    arena_free(&a);
    if (rc == MDB_NOTFOUND)
        rc = 0;
    else if (rc > 0)
        rc = mvcc__err(rc);
    return rc != 0 ? rc : snap_bbolt_bucket_end(w);
}

static int write_lease(void *ud, int64_t id, int64_t ttl)
{
    uint8_t k[8], v[24];
    size_t n = 0;
    mvcc__put_be64(k, (uint64_t)id);
    /* leasepb.Lease{ID: 1, TTL: 2} */
    if (id != 0) {
        v[n++] = 0x08;
        n += put_varint(v + n, (uint64_t)id);
    }
    if (ttl != 0) {
        v[n++] = 0x10;
        n += put_varint(v + n, (uint64_t)ttl);
    }
    return snap_bbolt_put(ud, k, 8, v, n);
}

/* Appends @s as a JSON string. */
static void json_str(char **p, size_t *cap, size_t *len, const char *s)
{
    size_t need = *len + 2 * strlen(s) + 3;
    if (need > *cap) {
        *cap = need * 2;
        *p = cairn_realloc(*p, *cap);
    }
    char *o = *p + *len;
    *o++ = '"';
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            *o++ = '\\';
        *o++ = *s;
    }
    *o++ = '"';
    *len = (size_t)(o - *p);
}

static void json_raw(char **p, size_t *cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    if (*len + n + 1 > *cap) {
        *cap = (*len + n + 1) * 2;
        *p = cairn_realloc(*p, *cap);
    }
    memcpy(*p + *len, s, n);
    *len += n;
}

static void json_urls(char **p, size_t *cap, size_t *len, char *const *u,
                      int n)
{
    json_raw(p, cap, len, "[");
    for (int i = 0; i < n; i++) {
        if (i)
            json_raw(p, cap, len, ",");
        json_str(p, cap, len, u[i]);
    }
    json_raw(p, cap, len, "]");
}

/* etcd's membership.Member as encoding/json writes it. */
static int write_member(struct snap_bbolt_writer *w,
                        const struct mvcc_snap_member *m)
{
    char key[24], num[32], *js = NULL;
    size_t cap = 0, len = 0;
    snprintf(key, sizeof key, "%" PRIx64, m->id);
    snprintf(num, sizeof num, "{\"id\":%" PRIu64 ",\"peerURLs\":", m->id);
    json_raw(&js, &cap, &len, num);
    json_urls(&js, &cap, &len, m->peer_urls, m->n_peer_urls);
    if (m->name != NULL && m->name[0]) {
        json_raw(&js, &cap, &len, ",\"name\":");
        json_str(&js, &cap, &len, m->name);
    }
    if (m->n_client_urls > 0) {
        json_raw(&js, &cap, &len, ",\"clientURLs\":");
        json_urls(&js, &cap, &len, m->client_urls, m->n_client_urls);
    }
    json_raw(&js, &cap, &len, "}");
    int rc = snap_bbolt_put(w, key, strlen(key), js, len);
    cairn_free(js);
    return rc;
}

static int write_meta(struct mvcc_txn *t, struct snap_bbolt_writer *w)
{
    int64_t compact = mvcc_meta_get(t, "compact", -1);
    int64_t done = mvcc_meta_get(t, "compact_done", -1);
    uint8_t r[ETCD_REVLEN];
    int rc;

    if ((rc = snap_bbolt_bucket_begin(w, "meta", 4)) != 0)
        return rc;
    rc = put_be64(w, "consistent_index", mvcc_meta_get(t, "index", 0));
    /* etcd records a compaction as scheduled, then as finished once the
     * history below it is gone; a restore resumes an unfinished one. */
    if (rc == 0 && done > 0) {
        etcd_rev(r, done, 0);
        rc = snap_bbolt_put(w, "finishedCompactRev", 18, r, ETCD_REVLEN);
    }
    if (rc == 0 && compact > 0) {
        etcd_rev(r, compact, 0);
        rc = snap_bbolt_put(w, "scheduledCompactRev", 19, r, ETCD_REVLEN);
    }
    if (rc == 0)
        rc = put_be64(w, "term", mvcc_meta_get(t, "term", 1));
    return rc != 0 ? rc : snap_bbolt_bucket_end(w);
}

int mvcc_snapshot_write(struct mvcc_txn *t, int fd,
                        const struct mvcc_snap_member *m,
                        const atomic_int *stop, uint64_t *size)
{
    struct snap_bbolt_writer *w;
    int rc;

    if ((rc = snap_bbolt_writer_new(fd, &w)) != 0)
        return rc;
    /* Buckets in byte order, as bbolt keeps them. */
    if ((rc = write_alarms(t, w)) != 0)
        goto out;
    if ((rc = mvcc_auth_snapshot_write(t, w)) != 0)
        goto out;
    if ((rc = snap_bbolt_bucket_begin(w, "cluster", 7)) != 0 ||
        (rc = snap_bbolt_put(w, "clusterVersion", 14, "3.4.0", 5)) != 0 ||
        (rc = snap_bbolt_bucket_end(w)) != 0)
        goto out;
    if ((rc = write_keys(t, w, stop)) != 0)
        goto out;
    if ((rc = snap_bbolt_bucket_begin(w, "lease", 5)) != 0 ||
        (rc = mvcc_leases(t, write_lease, w)) != 0 ||
        (rc = snap_bbolt_bucket_end(w)) != 0)
        goto out;
    if ((rc = snap_bbolt_bucket_begin(w, "members", 7)) != 0)
        goto out;
    if (m != NULL && (rc = write_member(w, m)) != 0)
        goto out;
    if ((rc = snap_bbolt_bucket_end(w)) != 0 ||
        (rc = empty_bucket(w, "members_removed")) != 0)
        goto out;
    if ((rc = write_meta(t, w)) != 0)
        goto out;
    rc = snap_bbolt_writer_finish(w, size);
out:
    snap_bbolt_writer_free(w);
    return rc;
}

/* ---- import ---- */

struct restore {
    struct mvcc *m;
    struct mvcc_txn t;
    struct arena a;
    struct mvcc_snap_meta meta;
    int64_t batch;
};

static int64_t etcd_rev_main(struct snap_bytes v)
{
    if (v.n < 8)
        return -1;
    return (int64_t)mvcc__get_be64(v.p);
}

static int read_meta(void *ud, struct snap_bytes b, struct snap_bytes k,
                     struct snap_bytes v, int flags)
{
    struct mvcc_snap_meta *m = ud;
    (void)b;
    if (flags != 0)
        return 0;
#define IS(s) (k.n == sizeof s - 1 && memcmp(k.p, s, k.n) == 0)
    if (IS("consistent_index") && v.n == 8)
        m->consistent_index = (int64_t)mvcc__get_be64(v.p);
    else if (IS("term") && v.n == 8)
        m->term = (int64_t)mvcc__get_be64(v.p);
    else if (IS("finishedCompactRev"))
        m->finished_compact = etcd_rev_main(v);
    else if (IS("scheduledCompactRev"))
        m->scheduled_compact = etcd_rev_main(v);
#undef IS
    return 0;
}

/* Auth state is counted for the report, then restored (restore_auth). */
static int read_auth(void *ud, struct snap_bytes b, struct snap_bytes k,
                     struct snap_bytes v, int flags)
{
    struct mvcc_snap_meta *m = ud;
    if (flags & SNAP_BBOLT_BEGIN)
        return 0;
    if (b.n == 4 && k.n == 11 && memcmp(k.p, "authEnabled", 11) == 0)
        m->auth_enabled = v.n == 1 && v.p[0] == 1;
    else if (b.n != 4)
        m->auth_users++;
    return 0;
}

/* A message of varint fields only: field i's value in f[i] (1 <= i < n;
 * 0 when absent, higher fields skipped). */
static int varint_fields(struct snap_bytes m, uint64_t *f, int n)
{
    const uint8_t *p = m.p, *end = m.p + m.n;
    memset(f, 0, (size_t)n * sizeof *f);
    while (p < end) {
        uint64_t tag, x;
        if (get_varint(&p, end, &tag) != 0 || (tag & 7) != 0 ||
            get_varint(&p, end, &x) != 0)
            return -1;
        if ((tag >> 3) < (uint64_t)n)
            f[tag >> 3] = x;
    }
    return 0;
}

static int read_lease(void *ud, struct snap_bytes b, struct snap_bytes k,
                      struct snap_bytes v, int flags)
{
    struct restore *r = ud;
    uint64_t f[3];
    (void)b;
    if (flags != 0)
        return 0;
    /* leasepb.Lease: ID 1, TTL 2, RemainingTTL 3 (varints). */
    if (varint_fields(v, f, 3) != 0)
        return -EBADMSG;
    int64_t id = (int64_t)f[1], ttl = (int64_t)f[2];
    if (k.n != 8 || id == 0 || (int64_t)mvcc__get_be64(k.p) != id)
        return -EBADMSG;
    r->meta.leases++;
    int rc = mvcc_lease_grant(&r->t, id, ttl);
    return rc == CAIRN_ELEASEEXISTS ? -EBADMSG : rc;
}

/* A raised alarm (etcd keeps them in the restored db). */
static int restore_auth(void *ud, struct snap_bytes b, struct snap_bytes k,
                        struct snap_bytes v, int flags)
{
    struct restore *r = ud;
    if (flags != 0)
        return 0;
    return mvcc_auth_snapshot_record(&r->t, b.p, b.n, k.p, k.n, v.p, v.n);
}

static int read_alarm(void *ud, struct snap_bytes b, struct snap_bytes k,
                      struct snap_bytes v, int flags)
{
    struct restore *r = ud;
    uint64_t f[3];
    (void)b;
    (void)v;
    if (flags != 0)
        return 0;
    /* AlarmMember: memberID 1, alarm 2 (varints). */
    if (varint_fields(k, f, 3) != 0 || f[2] > 2)
        return -EBADMSG;
    return mvcc_alarm_put(&r->t, f[1], (int)f[2]);
}

/* Commits what is pending and opens the next write txn. */
static int restore_commit(struct restore *r, int reopen)
{
    int rc = mvcc_write_commit(&r->t);
    arena_free(&r->a);
    arena_init(&r->a);
    r->batch = 0;
    if (rc != 0 || !reopen)
        return rc;
    int64_t rev = r->t.rev;
    rc = mvcc_write_begin(r->m, &r->t);
    r->t.rev = rev;
    return rc;
}

/* One record of etcd's key bucket, appended with its link to the key's
 * previous revision, its index entry, and its lease attachment. */
static int read_key(void *ud, struct snap_bytes b, struct snap_bytes k,
                    struct snap_bytes v, int flags)
{
    struct restore *r = ud;
    struct mvcc *m = r->m;
    Mvccpb__KeyValue kv;
    struct mvcc_rev nr = {0, 0, 0, 0, 0, 0}, old;
    uint8_t *rec, ib[MVCC_IDXLEN];
    size_t n;
    MDB_val mk, mv;
    int rc, have_old = 0;
    (void)b;

    if (flags != 0)
        return flags & SNAP_BBOLT_NESTED ? -EBADMSG : 0;
    if (!((k.n == ETCD_REVLEN && k.p[8] == '_') ||
          (k.n == ETCD_REVLEN + 1 && k.p[8] == '_' && k.p[17] == 't')))
        return -EBADMSG;
    nr.main = (int64_t)mvcc__get_be64(k.p);
    nr.sub = (int64_t)mvcc__get_be64(k.p + 9);
    nr.tomb = k.n == ETCD_REVLEN + 1;
    if (nr.main <= 0 || nr.sub < 0 ||
        mvcc__kv_decode(v.p, v.n, &kv) != 0 || kv.key.len == 0)
        return -EBADMSG;
    if (kv.key.len > MVCC_MAX_KEY)
        return CAIRN_ETOOLARGE;
    if (nr.tomb) {
        /* cairn's deletion record also names the deleting revision. */
        ProtobufCBinaryData key = kv.key;
        mvccpb__key_value__init(&kv);
        kv.key = key;
        kv.mod_revision = nr.main;
    } else {
        if (kv.mod_revision != nr.main)
            return -EBADMSG;
        nr.create = kv.create_revision;
        nr.version = kv.version;
        nr.lease = kv.lease;
    }
    n = nr.tomb ? mvccpb__key_value__get_packed_size(&kv) : v.n;
    rec = arena_alloc(&r->a, n + MVCC_RECHDR);
    memset(rec, 0, MVCC_RECHDR);
    rec[0] = nr.tomb ? MVCC_TOMBSTONE : 0;
    mk.mv_size = kv.key.len;
    mk.mv_data = kv.key.data;
    rc = mdb_get(r->t.txn, m->cur, &mk, &mv);
    if (rc == 0) {
        old = mvcc__rev_decode(mv.mv_data);
        memcpy(rec + 1, mv.mv_data, MVCC_REVLEN);
        have_old = 1;
    } else if (rc != MDB_NOTFOUND) {
        return mvcc__err(rc);
    }
    if (nr.tomb)
        mvccpb__key_value__pack(&kv, rec + MVCC_RECHDR);
    else
        memcpy(rec + MVCC_RECHDR, v.p, v.n);
    mvcc__rev_encode(ib, nr);
    mk.mv_size = MVCC_REVLEN;
    mk.mv_data = ib;
    /* sealed when the new store has a key (else as is) */
    if ((rc = mvcc__record_seal(&r->t, ib, rec, n + MVCC_RECHDR, &r->a, &mv)) != 0)
        return rc;
    /* bbolt's order is revision order: records append. */
    rc = mdb_put(r->t.txn, m->kv, &mk, &mv, MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        return -EBADMSG;
    if (rc != 0)
        return mvcc__err(rc);
    mk.mv_size = kv.key.len;
    mk.mv_data = kv.key.data;
    mv.mv_size = MVCC_IDXLEN;
    mv.mv_data = ib;
    if ((rc = mdb_put(r->t.txn, m->cur, &mk, &mv, 0)) != 0)
        return mvcc__err(rc);
    /* Attachments follow the key's newest revision, and exist only for
     * granted leases (etcd's restore ignores the others too). */
    int64_t from = have_old && !old.tomb ? old.lease : 0;
    int64_t to = nr.lease != 0 && mvcc_lease_exists(&r->t, nr.lease) ? nr.lease : 0;
    if ((rc = mvcc__lease_move(&r->t, kv.key.data, kv.key.len, from, to)) != 0)
        return rc;
    r->t.rev = nr.main;
    r->meta.rev = nr.main;
    r->meta.keys++;
    if (++r->batch >= RESTORE_BATCH)
        return restore_commit(r, 1);
    return 0;
}

static int restore_meta(struct restore *r)
{
    struct mvcc_snap_meta *s = &r->meta;
    int64_t compact = s->finished_compact;
    int rc = 0;
    if (s->scheduled_compact > compact)
        compact = s->scheduled_compact;
    /* etcd: history compacted away can leave the compacted revision
     * above every record; the current revision is never below it. */
    if (r->t.rev < compact)
        r->t.rev = compact;
    if (compact > 0) {
        rc = mvcc_meta_put(&r->t, "compact", compact);
        /* An unfinished compaction is resumed by the apply thread. */
        if (rc == 0 && s->finished_compact > 0)
            rc = mvcc_meta_put(&r->t, "compact_done", s->finished_compact);
    }
    if (rc == 0 && s->consistent_index > 0)
        rc = mvcc_meta_put(&r->t, "index", s->consistent_index);
    if (rc == 0 && s->term > 0)
        rc = mvcc_meta_put(&r->t, "term", s->term);
    return rc;
}

int mvcc_snapshot_restore(int fd, uint64_t len, const char *dir,
                          size_t map_size, struct crypt_ring *ring,
                          struct mvcc_snap_meta *out)
{
    struct snap_bbolt_reader *br;
    struct restore r;
    int rc;

    memset(&r, 0, sizeof r);
    r.meta.consistent_index = r.meta.finished_compact = -1;
    r.meta.scheduled_compact = r.meta.term = -1;
    if ((rc = snap_bbolt_reader_new(fd, len, &br)) != 0)
        return rc;
    if ((rc = snap_bbolt_walk(br, "meta", read_meta, &r.meta)) != 0 ||
        (rc = snap_bbolt_walk(br, "auth", read_auth, &r.meta)) != 0 ||
        (rc = snap_bbolt_walk(br, "authUsers", read_auth, &r.meta)) != 0 ||
        (rc = snap_bbolt_walk(br, "authRoles", read_auth, &r.meta)) != 0)
        goto out_reader;
    if ((rc = mvcc_open(dir, map_size, &r.m)) != 0)
        goto out_reader;
    arena_init(&r.a);
    if (ring != NULL) {
        char err[256];
        int rotated = 0;
        if ((rc = mvcc_seal_install(r.m, ring, &rotated, err, sizeof err)) != 0) {
            crypt_ring_free(ring); /* not taken by the store */
            goto out_store;
        }
    }
    if ((rc = mvcc_write_begin(r.m, &r.t)) != 0)
        goto out_store;
    if (r.t.rev != 1 || mvcc_meta_get(&r.t, "compact", -1) != -1) {
        rc = -EEXIST; /* a store is there already */
        goto err_txn;
    }
    /* Leases first, so that keys can be attached as they come. */
    if ((rc = snap_bbolt_walk(br, "alarm", read_alarm, &r)) != 0 ||
        (rc = snap_bbolt_walk(br, "lease", read_lease, &r)) != 0 ||
        (rc = snap_bbolt_walk(br, "key", read_key, &r)) != 0 ||
        (rc = snap_bbolt_walk(br, "auth", restore_auth, &r)) != 0 ||
        (rc = snap_bbolt_walk(br, "authUsers", restore_auth, &r)) != 0 ||
        (rc = snap_bbolt_walk(br, "authRoles", restore_auth, &r)) != 0 ||
        (rc = restore_meta(&r)) != 0)
        goto err_txn;
    rc = restore_commit(&r, 0);
    if (rc == 0 && out != NULL)
        *out = r.meta;
    goto out_store;

err_txn:
    mvcc_write_abort(&r.t);
out_store:
    arena_free(&r.a);
    mvcc_close(r.m);
out_reader:
    snap_bbolt_reader_free(br);
    return rc;
}
