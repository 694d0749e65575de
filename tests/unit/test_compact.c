/* Compaction: mvcc_compact records it (effective at once for readers);
 * mvcc_compact_step removes the history below it, a few keys at a time,
 * resumable across restarts. Semantics as etcd 3.4's mvcc (kvstore.go
 * Compact, key_index.go compact): ranges below the compacted revision fail
 * with ErrCompacted, at or above it they are unchanged; physically each key
 * keeps only its newest revision at or below it, and not even that when it
 * is a tombstone.
 *
 * Physical state is checked through mvcc_int.h: the kv database holds every
 * revision kept. A small model of the history predicts it. */
#include "mvcc_fixture.h"

#include "mvcc/mvcc_int.h"

/* ---- model of the history ---- */

#define MK 16
#define MR 1024

struct mkey {
    char name[16];
    int n;
    int64_t rev[MR];
    int tomb[MR];
};

static struct model {
    struct mkey k[MK];
    int nk;
    int64_t rev;
} M;

static void model_reset(void)
{
    memset(&M, 0, sizeof M);
    M.rev = 1;
}

static struct mkey *mkey(const char *name)
{
    for (int i = 0; i < M.nk; i++)
        if (strcmp(M.k[i].name, name) == 0)
            return &M.k[i];
    assert_true(M.nk < MK);
    struct mkey *k = &M.k[M.nk++];
    snprintf(k->name, sizeof k->name, "%s", name);
    return k;
}

static int alive(const struct mkey *k)
{
    return k->n > 0 && !k->tomb[k->n - 1];
}

/* put as its own write command, checked against the model */
static void mput(struct fx *f, const char *name)
{
    struct mkey *k = mkey(name);
    assert_true(k->n < MR);
    char *v = fx_printf(f, "%s@%lld", name, (long long)(M.rev + 1));
    assert_int_equal(put_kv(f, bs(name), bs(v)), M.rev + 1);
    M.rev++;
    k->rev[k->n] = M.rev;
    k->tomb[k->n++] = 0;
}

static void mput_n(struct fx *f, const char *name, int n)
{
    for (int i = 0; i < n; i++)
        mput(f, name);
}

static void mdel(struct fx *f, const char *name)
{
    struct mkey *k = mkey(name);
    if (!alive(k)) {
        assert_int_equal(del_kv(f, bs(name), NOEND), 0);
        return;
    }
    assert_int_equal(del_kv(f, bs(name), NOEND), 1);
    M.rev++;
    k->rev[k->n] = M.rev;
    k->tomb[k->n++] = 1;
}

/* What compaction at @crev must leave (key_index.go compact). */
static void model_compact(int64_t crev)
{
    for (int i = 0; i < M.nk; i++) {
        struct mkey *k = &M.k[i];
        int last = -1; /* newest at or below crev */
        for (int j = 0; j < k->n && k->rev[j] <= crev; j++)
            last = j;
        if (last < 0)
            continue;
        int from = k->tomb[last] ? last + 1 : last;
        memmove(k->rev, k->rev + from, (size_t)(k->n - from) * sizeof k->rev[0]);
        memmove(k->tomb, k->tomb + from,
                (size_t)(k->n - from) * sizeof k->tomb[0]);
        k->n -= from;
    }
}

static int name_cmp(const void *a, const void *b)
{
    const struct mkey *x = *(struct mkey *const *)a, *y = *(struct mkey *const *)b;
    return strcmp(x->name, y->name);
}

/* "a:3 b:4,5t" for keys with any revision, in key order */
static char *model_dump(struct fx *f)
{
    struct mkey *ks[MK];
    size_t cap = 64;
    for (int i = 0; i < M.nk; i++) {
        ks[i] = &M.k[i];
        cap += 24 + (size_t)M.k[i].n * 24;
    }
    qsort(ks, (size_t)M.nk, sizeof ks[0], name_cmp);
    char *s = arena_alloc(&f->a, cap);
    size_t o = 0;
    s[0] = 0;
    for (int i = 0; i < M.nk; i++) {
        if (ks[i]->n == 0)
            continue;
        o += (size_t)snprintf(s + o, cap - o, "%s%s:", o ? " " : "", ks[i]->name);
        for (int j = 0; j < ks[i]->n; j++)
            o += (size_t)snprintf(s + o, cap - o, "%s%lld%s", j ? "," : "",
                                  (long long)ks[i]->rev[j],
                                  ks[i]->tomb[j] ? "t" : "");
    }
    return s;
}

/* ---- the physical state ---- */

/* Every record kept, in the model_dump format (per key, its revisions in
 * order, "t" for tombstones). Also checks that each key's entry in cur
 * names its newest record. */
struct rec {
    ProtobufCBinaryData key;
    int64_t main;
    int tomb;
};

static int rec_cmp(const void *a, const void *b)
{
    const struct rec *x = a, *y = b;
    size_t n = x->key.len < y->key.len ? x->key.len : y->key.len;
    int c = n ? memcmp(x->key.data, y->key.data, n) : 0;
    if (c != 0)
        return c;
    if (x->key.len != y->key.len)
        return x->key.len < y->key.len ? -1 : 1;
    return x->main < y->main ? -1 : x->main > y->main;
}

static char *idx_dump(struct fx *f)
{
    struct mvcc_txn t;
    MDB_cursor *c;
    MDB_val k, v;
    size_t cap = 4096, o = 0, n = 0, rcap = 64;
    char *s = malloc(cap);
    struct rec *recs = malloc(rcap * sizeof *recs);

    assert_non_null(s);
    s[0] = 0;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mdb_cursor_open(t.txn, f->m->kv, &c), 0);
    int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    while (rc == 0) {
        struct mvcc_rev prev;
        int tomb;
        Mvccpb__KeyValue kv;
        assert_int_equal(mvcc__record_decode(&t, &k, &v, &f->a, &prev, &tomb, &kv), 0);
        if (n == rcap) {
            rcap *= 2;
            recs = realloc(recs, rcap * sizeof *recs);
        }
        recs[n].key.len = kv.key.len;
        recs[n].key.data = arena_memdup(&f->a, kv.key.data, kv.key.len);
        recs[n].main = (int64_t)mvcc__get_be64(k.mv_data);
        recs[n].tomb = tomb;
        assert_int_equal(kv.mod_revision, recs[n].main);
        n++;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    assert_int_equal(rc, MDB_NOTFOUND);
    mdb_cursor_close(c);
    qsort(recs, n, sizeof *recs, rec_cmp);
    for (size_t i = 0; i < n; i++) {
        if (o + recs[i].key.len + 64 > cap) {
            cap = cap * 2 + recs[i].key.len;
            s = realloc(s, cap);
            assert_non_null(s);
        }
        if (i == 0 || !bin_eq(recs[i].key, recs[i - 1].key))
            o += (size_t)snprintf(s + o, cap - o, "%s%.*s:", o ? " " : "",
                                  (int)recs[i].key.len,
                                  (const char *)recs[i].key.data);
        else
            s[o++] = ',';
        o += (size_t)snprintf(s + o, cap - o, "%lld%s",
                              (long long)recs[i].main, recs[i].tomb ? "t" : "");
        /* the newest record of a key is its entry in cur */
        if (i + 1 == n || !bin_eq(recs[i].key, recs[i + 1].key)) {
            MDB_val ck = {recs[i].key.len, recs[i].key.data}, cv;
            assert_int_equal(mdb_get(t.txn, f->m->cur, &ck, &cv), 0);
            assert_int_equal(mvcc__rev_decode(cv.mv_data).main, recs[i].main);
        }
    }
    /* and no key has an entry without records */
    size_t keys = 0;
    for (size_t i = 0; i < n; i++)
        keys += i == 0 || !bin_eq(recs[i].key, recs[i - 1].key);
    MDB_stat st;
    assert_int_equal(mdb_stat(t.txn, f->m->cur, &st), 0);
    assert_int_equal(st.ms_entries, keys);
    mvcc_read_end(&t);
    char *out = arena_memdup(&f->a, s, o + 1);
    out[o] = 0;
    free(s);
    free(recs);
    return out;
}

/* ---- compaction driving ---- */

static int compact(struct fx *f, int64_t rev)
{
    struct mvcc_txn t;
    Etcdserverpb__CompactionRequest r;
    Etcdserverpb__CompactionResponse resp;
    etcdserverpb__compaction_request__init(&r);
    r.revision = rev;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = mvcc_compact(&t, &r, &resp, &f->a);
    if (rc != 0) {
        mvcc_write_abort(&t);
        return rc;
    }
    assert_non_null(resp.header);
    assert_int_equal(resp.header->revision, t.rev);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    return 0;
}

/* One step in its own write txn; returns what mvcc_compact_step did. */
static int step(struct fx *f, int max_keys)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = mvcc_compact_step(&t, max_keys);
    assert_true(rc >= 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
    return rc;
}

/* Steps until done; returns the number of steps that reported more work. */
static int finish(struct fx *f, int max_keys)
{
    int n = 0;
    while (step(f, max_keys) == 1) {
        n++;
        assert_true(n < 100000);
    }
    return n;
}

static int64_t compact_done_of(struct fx *f)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    int64_t r = mvcc_compact_done(&t);
    mvcc_read_end(&t);
    return r;
}

static int range_rc(struct fx *f, int64_t rev)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.revision = rev;
    return do_range(f, &r, &resp);
}

/* Snapshots of revisions [from, to] taken now, to compare later. */
static char **snapshots(struct fx *f, int64_t from, int64_t to)
{
    char **s = arena_alloc(&f->a, (size_t)(to - from + 1) * sizeof *s);
    for (int64_t r = from; r <= to; r++)
        s[r - from] = snapshot(f, r);
    return s;
}

static void assert_snapshots(struct fx *f, char **s, int64_t from, int64_t to)
{
    for (int64_t r = from; r <= to; r++)
        assert_string_equal(snapshot(f, r), s[r - from]);
}

/* ---- tests ---- */

static void test_no_compaction(void **state)
{
    struct fx *f = *state;
    assert_int_equal(compact_done_of(f), -1);
    assert_int_equal(step(f, 10), 0); /* nothing to do */
    PUT("a", "1");
    assert_int_equal(step(f, 10), 0);
    assert_int_equal(compact_rev_of(f), -1);
    assert_int_equal(range_rc(f, 1), 0);
}

static void test_compact_basic(void **state)
{
    struct fx *f = *state;
    model_reset();
    mput(f, "a");   /* 2 */
    mput(f, "a");   /* 3 */
    mput(f, "b");   /* 4 */
    mdel(f, "b");   /* 5 */
    mput(f, "c");   /* 6 */
    assert_string_equal(idx_dump(f), "a:2,3 b:4,5t c:6");
    char **snap = snapshots(f, 4, 6);
    assert_string_equal(snap[0], "a=a@3:2/3/2 b=b@4:4/4/1");

    assert_int_equal(compact(f, 4), 0);
    assert_int_equal(compact_rev_of(f), 4);
    assert_int_equal(cur_rev_of(f), 6); /* compaction takes no revision */
    /* logically at once, before any physical work */
    assert_int_equal(range_rc(f, 3), CAIRN_ECOMPACTED);
    assert_int_equal(range_rc(f, 1), CAIRN_ECOMPACTED);
    assert_int_equal(range_rc(f, 7), CAIRN_EFUTUREREV);
    assert_snapshots(f, snap, 4, 6);
    assert_int_equal(compact_done_of(f), -1);
    assert_string_equal(idx_dump(f), "a:2,3 b:4,5t c:6");

    finish(f, 100);
    assert_int_equal(compact_done_of(f), 4);
    model_compact(4);
    assert_string_equal(model_dump(f), "a:3 b:4,5t c:6");
    assert_string_equal(idx_dump(f), model_dump(f));
    /* reads at and above the compacted revision unchanged */
    assert_snapshots(f, snap, 4, 6);
    assert_int_equal(range_rc(f, 3), CAIRN_ECOMPACTED);
    assert_int_equal(range_rc(f, 0), 0);
    /* and so is the store's future */
    mput(f, "a");
    assert_string_equal(KVS(RANGE("a", "")), "a=a@7:2/7/3");
    assert_int_equal(step(f, 100), 0);
    assert_string_equal(idx_dump(f), model_dump(f));
}

static void test_compact_tombstones_removed(void **state)
{
    struct fx *f = *state;
    model_reset();
    mput(f, "a");   /* 2 */
    mdel(f, "a");   /* 3 */
    mput(f, "b");   /* 4 */
    mput(f, "b");   /* 5 */
    mput(f, "c");   /* 6 */
    mdel(f, "c");   /* 7 */
    mput(f, "c");   /* 8 */
    mput(f, "d");   /* 9 */
    mdel(f, "d");   /* 10 */
    mput(f, "e");   /* 11 */
    mput(f, "e");   /* 12 */
    char **snap = snapshots(f, 10, 12);
    assert_int_equal(compact(f, 10), 0);
    finish(f, 1);
    model_compact(10);
    /* a and d, deleted at or below 10, are gone entirely */
    assert_string_equal(model_dump(f), "b:5 c:8 e:11,12");
    assert_string_equal(idx_dump(f), model_dump(f));
    assert_snapshots(f, snap, 10, 12);
    assert_string_equal(snapshot(f, 10), "b=b@5:4/5/2 c=c@8:8/8/1");
    /* a recreated key after compaction starts a fresh generation */
    mput(f, "a"); /* 13 */
    assert_string_equal(KVS(RANGE("a", "")), "a=a@13:13/13/1");
    mput(f, "d"); /* 14 */
    assert_string_equal(KVS(RANGE("d", "")), "d=d@14:14/14/1");
}

static void test_compact_errors(void **state)
{
    struct fx *f = *state;
    PUT("a", "1"); /* 2 */
    PUT("a", "2"); /* 3 */
    PUT("a", "3"); /* 4 */
    PUT("b", "1"); /* 5 */
    assert_int_equal(compact(f, 6), CAIRN_EFUTUREREV);
    assert_int_equal(compact(f, 100), CAIRN_EFUTUREREV);
    assert_int_equal(compact_rev_of(f), -1);
    assert_int_equal(compact(f, 3), 0);
    assert_int_equal(compact(f, 3), CAIRN_ECOMPACTED);
    assert_int_equal(compact(f, 2), CAIRN_ECOMPACTED);
    assert_int_equal(compact_rev_of(f), 3);
    assert_int_equal(compact(f, 5), 0); /* the current revision */
    assert_int_equal(compact(f, 5), CAIRN_ECOMPACTED);
    assert_int_equal(compact(f, 4), CAIRN_ECOMPACTED);
    assert_int_equal(compact(f, 6), CAIRN_EFUTUREREV);
    assert_int_equal(compact_rev_of(f), 5);
    /* only the current revision is readable; the count is intact */
    assert_int_equal(range_rc(f, 4), CAIRN_ECOMPACTED);
    assert_int_equal(range_rc(f, 5), 0);
    assert_string_equal(snapshot(f, 5), "a=3:2/4/3 b=1:5/5/1");
    finish(f, 1);
    assert_string_equal(snapshot(f, 5), "a=3:2/4/3 b=1:5/5/1");
    assert_int_equal(compact_done_of(f), 5);
    /* persisted */
    fx_reopen(f);
    assert_int_equal(compact_rev_of(f), 5);
    assert_int_equal(compact_done_of(f), 5);
    assert_int_equal(compact(f, 5), CAIRN_ECOMPACTED);
    assert_int_equal(range_rc(f, 4), CAIRN_ECOMPACTED);
    assert_string_equal(snapshot(f, 0), "a=3:2/4/3 b=1:5/5/1");
}

static void test_compact_inside_write_txn(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    Etcdserverpb__CompactionRequest cr;
    Etcdserverpb__CompactionResponse cresp;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse pr;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse rr;

    PUT("a", "1"); /* 2 */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    etcdserverpb__put_request__init(&p);
    p.key = B("a");
    p.value = B("2");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    mvcc_cmd_end(&t); /* 3 */
    /* a revision the txn made itself can be compacted in it */
    etcdserverpb__compaction_request__init(&cr);
    cr.revision = 3;
    assert_int_equal(mvcc_compact(&t, &cr, &cresp, &f->a), 0);
    assert_int_equal(cresp.header->revision, 3);
    mvcc_cmd_end(&t);
    /* and takes effect for the following commands */
    etcdserverpb__range_request__init(&r);
    r.key = B("a");
    r.revision = 2;
    assert_int_equal(mvcc_range(&t, &r, &f->a, &rr), CAIRN_ECOMPACTED);
    r.revision = 3;
    assert_int_equal(mvcc_range(&t, &r, &f->a, &rr), 0);
    assert_int_equal(rr.n_kvs, 1);
    assert_int_equal(mvcc_compact_step(&t, 10), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
    assert_int_equal(compact_done_of(f), 3);
    assert_string_equal(snapshot(f, 3), "a=2:2/3/2");
    assert_int_equal(range_rc(f, 2), CAIRN_ECOMPACTED);
}

/* A key with far more revisions than one batch of mvcc_compact_step
 * handles (64), in several shapes around that boundary. */
static void many_revisions(struct fx *f, int max_keys)
{
    model_reset();
    mput_n(f, "j", 70);
    mdel(f, "j");        /* all below crev, ends in a tombstone */
    mput_n(f, "k", 100); /* more after crev */
    mput_n(f, "l", 64);  /* exactly 64 below, one after */
    mput_n(f, "m", 65);  /* 65 below, none after */
    mput_n(f, "o", 64);  /* exactly 64 below, none after */
    mput_n(f, "p", 63);
    mput_n(f, "q", 129);
    mdel(f, "q");
    mput(f, "q");        /* tombstone mid-way, then one more below crev */
    int64_t crev = M.rev;
    mput_n(f, "k", 50);
    mput_n(f, "n", 3);
    mput(f, "l");
    mdel(f, "p");
    int64_t cur = M.rev;
    char **snap = snapshots(f, crev, cur);

    assert_int_equal(compact(f, crev), 0);
    int steps = finish(f, max_keys);
    if (max_keys == 1)
        assert_true(steps >= 7); /* one key per step */
    model_compact(crev);
    assert_string_equal(idx_dump(f), model_dump(f));
    assert_snapshots(f, snap, crev, cur);
    assert_int_equal(range_rc(f, crev - 1), CAIRN_ECOMPACTED);
    assert_int_equal(compact_done_of(f), crev);
    /* spot checks of the model itself */
    assert_int_equal(M.k[0].n, 0);   /* j gone */
    assert_int_equal(M.k[1].n, 51);  /* k: 1 + 50 */
    assert_int_equal(M.k[2].n, 2);   /* l */
    assert_int_equal(M.k[3].n, 1);   /* m */
}

static void test_compact_many_revisions_1(void **state)
{
    many_revisions(*state, 1);
}

static void test_compact_many_revisions_2(void **state)
{
    many_revisions(*state, 2);
}

static void test_compact_many_revisions_all(void **state)
{
    many_revisions(*state, 1000);
}

static void test_compact_interrupted_resumes(void **state)
{
    struct fx *f = *state;
    char name[16];
    model_reset();
    /* 12 keys with 3 revisions each below the compaction, some with more
     * above it */
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < 12; i++) {
            snprintf(name, sizeof name, "k%02d", i);
            mput(f, name);
        }
    int64_t crev = M.rev;
    for (int i = 0; i < 12; i += 3) {
        snprintf(name, sizeof name, "k%02d", i);
        mput(f, name);
    }
    snprintf(name, sizeof name, "k%02d", 5);
    mdel(f, name);
    int64_t cur = M.rev;
    char **snap = snapshots(f, crev, cur);
    char *before = idx_dump(f);

    assert_int_equal(compact(f, crev), 0);
    assert_int_equal(step(f, 2), 1);
    char *partial = idx_dump(f);
    assert_string_not_equal(partial, before);
    /* mid-compaction the reads are already as after it */
    assert_snapshots(f, snap, crev, cur);
    assert_int_equal(range_rc(f, crev - 1), CAIRN_ECOMPACTED);

    /* "crash" (close without finishing) and restart */
    fx_reopen(f);
    assert_int_equal(compact_rev_of(f), crev);
    assert_int_equal(compact_done_of(f), -1);
    assert_string_equal(idx_dump(f), partial);
    assert_int_equal(step(f, 3), 1);
    fx_reopen(f);
    /* new writes in between do not disturb it */
    mput(f, "k00");
    mput(f, "zz");
    cur = M.rev;
    finish(f, 2);
    assert_int_equal(compact_done_of(f), crev);
    model_compact(crev);
    assert_string_equal(idx_dump(f), model_dump(f));
    assert_snapshots(f, snap, crev, cur - 2);
    assert_string_equal(KVS(RANGE("zz", "")),
                        fx_printf(f, "zz=zz@%lld:%lld/%lld/1", (long long)cur,
                                  (long long)cur, (long long)cur));
}

/* Random puts and deletes over a few keys, with compactions at random
 * revisions driven by small random steps and restarts in between. Checks
 * what readers can see: every revision at or above the compacted one reads
 * as it did before; those below are refused. */
static uint64_t rnd_state;
static uint32_t rnd(void)
{
    rnd_state = rnd_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rnd_state >> 33);
}

static void test_compact_random_reads(void **state)
{
    struct fx *f = *state;
    static const char *names[] = {"a", "b", "c", "d", "e", "f"};
    char **snap = calloc(1024, sizeof *snap);
    int64_t crev = 0;
    int compacting = 0;

    assert_non_null(snap);
    rnd_state = 42;
    model_reset();
    snap[1] = snapshot(f, 1);
    for (int op = 0; op < 400; op++) {
        const char *k = names[rnd() % 6];
        uint32_t what = rnd() % 100;
        if (what < 65)
            mput(f, k);
        else if (what < 85)
            mdel(f, k);
        else if (what < 92 && M.rev > crev + 1) {
            int64_t c = crev + 1 + (int64_t)(rnd() % (uint32_t)(M.rev - crev));
            if (!compacting) { /* one compaction at a time, as etcd */
                assert_int_equal(compact(f, c), 0);
                crev = c;
                compacting = 1;
            }
        } else if (what < 98) {
            if (compacting)
                compacting = step(f, 1 + (int)(rnd() % 3));
        } else {
            fx_reopen(f);
        }
        assert_true(M.rev < 1024);
        if (snap[M.rev] == NULL)
            snap[M.rev] = snapshot(f, M.rev);
        if (op % 25 == 0) {
            for (int64_t r = 1; r <= M.rev; r++) {
                if (r < crev)
                    assert_int_equal(range_rc(f, r), CAIRN_ECOMPACTED);
                else
                    assert_string_equal(snapshot(f, r), snap[r]);
            }
        }
    }
    if (compacting)
        finish(f, 2);
    for (int64_t r = crev; r <= M.rev; r++)
        assert_string_equal(snapshot(f, r), snap[r]);
    free(snap);
}

/* ---- regressions: bugs these tests found ---- */

/* Regression (mvcc_compact_step): a key whose only revision at or below the
 * compacted revision is kept, with no newer revision, left MDB_NOTFOUND from
 * MDB_NEXT_DUP, which was taken for "walked past the last key": the
 * compaction was marked done and every later key kept its history ("b"
 * kept revision 3). */
static void test_compact_continues_past_single_revision_key(void **state)
{
    struct fx *f = *state;
    model_reset();
    mput(f, "a"); /* 2: a's only revision */
    mput(f, "b"); /* 3 */
    mput(f, "b"); /* 4 */
    assert_int_equal(compact(f, 4), 0);
    finish(f, 100);
    model_compact(4);
    assert_string_equal(model_dump(f), "a:2 b:4");
    assert_string_equal(idx_dump(f), model_dump(f));
}

/* The same bug as it shows in practice: the second compaction of a store
 * stops at the first key the first one left with a single revision. */
static void test_second_compaction_complete(void **state)
{
    struct fx *f = *state;
    model_reset();
    mput_n(f, "a", 2);
    mput_n(f, "b", 2);
    mput_n(f, "c", 2);
    assert_int_equal(compact(f, M.rev), 0);
    finish(f, 100);
    model_compact(M.rev);
    assert_string_equal(idx_dump(f), "a:3 b:5 c:7");
    mput_n(f, "b", 2);
    mput_n(f, "c", 2);
    assert_int_equal(compact(f, M.rev), 0);
    finish(f, 100);
    model_compact(M.rev);
    assert_string_equal(model_dump(f), "a:3 b:9 c:11");
    assert_string_equal(idx_dump(f), model_dump(f));
}

/* Regression (mvcc_compact): a compaction recorded while an earlier one is
 * still being stepped through (a Compact may arrive in any batch) continued
 * from the earlier one's saved position, so the keys before it were never
 * compacted at the newer revision although compact_done reported it. */
static void test_overlapping_compactions_restart(void **state)
{
    struct fx *f = *state;
    model_reset();
    mput_n(f, "a", 2); /* 2, 3 */
    mput_n(f, "b", 2); /* 4, 5 */
    mput_n(f, "c", 2); /* 6, 7 */
    mput(f, "a");      /* 8 */
    mput(f, "b");      /* 9 */
    mput(f, "c");      /* 10 */
    assert_int_equal(compact(f, 7), 0);
    assert_int_equal(step(f, 1), 1); /* "a" done, position at "b" */
    assert_int_equal(compact(f, 10), 0);
    finish(f, 100);
    assert_int_equal(compact_done_of(f), 10);
    model_compact(10);
    assert_string_equal(model_dump(f), "a:8 b:9 c:10");
    assert_string_equal(idx_dump(f), model_dump(f));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
        T(test_no_compaction),
        T(test_compact_basic),
        T(test_compact_tombstones_removed),
        T(test_compact_errors),
        T(test_compact_inside_write_txn),
        T(test_compact_many_revisions_1),
        T(test_compact_many_revisions_2),
        T(test_compact_many_revisions_all),
        T(test_compact_interrupted_resumes),
        T(test_compact_random_reads),
        T(test_compact_continues_past_single_revision_key),
        T(test_second_compaction_complete),
        T(test_overlapping_compactions_restart),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
