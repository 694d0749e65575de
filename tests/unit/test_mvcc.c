/* MVCC store: revisions, Range/Put/DeleteRange semantics (etcd 3.4's
 * etcdserver/apply.go and mvcc/kvstore_txn.go), persistence and write txns.
 * Compaction is in test_compact.c, Txn in test_txn.c. */
#include "mvcc_fixture.h"

/* ---- revisions ---- */

static void test_empty_store(void **state)
{
    struct fx *f = *state;
    assert_int_equal(cur_rev_of(f), 1);
    assert_int_equal(compact_rev_of(f), -1);
    Etcdserverpb__RangeResponse *r = RANGE("a", "");
    assert_int_equal(r->n_kvs, 0);
    assert_int_equal(r->count, 0);
    assert_false(r->more);
    assert_int_equal(r->header->revision, 1);
    r = RANGE("\0", "\0");
    assert_int_equal(r->count, 0);
}

static void test_put_overwrite_delete_recreate(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeResponse *r;

    assert_int_equal(PUT("a", "v1"), 2);
    r = RANGE("a", "");
    assert_string_equal(KVS(r), "a=v1:2/2/1");
    assert_int_equal(r->count, 1);
    assert_int_equal(r->header->revision, 2);

    assert_int_equal(PUT("a", "v2"), 3);
    assert_string_equal(KVS(RANGE("a", "")), "a=v2:2/3/2");

    assert_int_equal(PUT("b", "x"), 4);
    assert_int_equal(DEL("a", ""), 1);
    assert_int_equal(cur_rev_of(f), 5);
    r = RANGE("a", "");
    assert_int_equal(r->n_kvs, 0);
    assert_int_equal(r->count, 0);
    assert_int_equal(r->header->revision, 5);

    /* Recreated: a new generation, version restarts at 1. */
    assert_int_equal(PUT("a", "v3"), 6);
    assert_string_equal(KVS(RANGE("a", "")), "a=v3:6/6/1");
    assert_int_equal(PUT("a", "v4"), 7);
    assert_string_equal(KVS(RANGE("a", "")), "a=v4:6/7/2");

    /* History. Header revision is the current one, not the one read. */
    r = RANGE_AT("a", "", 2);
    assert_string_equal(KVS(r), "a=v1:2/2/1");
    assert_int_equal(r->header->revision, 7);
    assert_string_equal(KVS(RANGE_AT("a", "", 3)), "a=v2:2/3/2");
    assert_string_equal(KVS(RANGE_AT("a", "", 4)), "a=v2:2/3/2");
    assert_int_equal(RANGE_AT("a", "", 5)->n_kvs, 0);
    assert_string_equal(KVS(RANGE_AT("a", "", 6)), "a=v3:6/6/1");
    assert_int_equal(RANGE_AT("a", "", 1)->n_kvs, 0);
    assert_string_equal(snapshot(f, 1), "");
    assert_string_equal(snapshot(f, 4), "a=v2:2/3/2 b=x:4/4/1");
    assert_string_equal(snapshot(f, 5), "b=x:4/4/1");
    assert_string_equal(snapshot(f, 7), "a=v4:6/7/2 b=x:4/4/1");
}

static void test_range_revision_bounds(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;

    PUT("a", "1");
    PUT("a", "2");
    etcdserverpb__range_request__init(&r);
    r.key = B("a");
    r.revision = 4;
    assert_int_equal(do_range(f, &r, &resp), CAIRN_EFUTUREREV);
    r.revision = 3; /* the current revision */
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_string_equal(KVS(resp), "a=2:2/3/2");
    r.revision = -5; /* <= 0: the current revision, as etcd */
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_string_equal(KVS(resp), "a=2:2/3/2");
    r.revision = 0;
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_string_equal(KVS(resp), "a=2:2/3/2");
}

/* ---- range forms ---- */

static void put_many(struct fx *f)
{
    static const char *keys[] = {"a", "ab", "abc", "b", "c",
                                 "foo", "foo/1", "foo/2", "fop", "z"};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
        put_kv(f, bs(keys[i]), bs(keys[i]));
}

static void test_range_forms(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeResponse *r;
    put_many(f);

    /* single key, present and missing (also a prefix of present keys) */
    assert_string_equal(KEYS(RANGE("b", "")), "b");
    assert_string_equal(KVS(RANGE("b", "")), "b=b:5/5/1");
    assert_int_equal(RANGE("bb", "")->n_kvs, 0);
    assert_int_equal(RANGE("fo", "")->n_kvs, 0);
    /* [a, c) is half open */
    r = RANGE("a", "c");
    assert_string_equal(KEYS(r), "a,ab,abc,b");
    assert_int_equal(r->count, 4);
    /* prefixes */
    assert_string_equal(KEYS(RANGE("foo", "fop")), "foo,foo/1,foo/2");
    assert_string_equal(KEYS(RANGE("foo/", "foo0")), "foo/1,foo/2");
    assert_string_equal(KEYS(RANGE("ab", "ac")), "ab,abc");
    /* range_end "\0": everything >= key */
    assert_string_equal(KEYS(RANGE("fop", "\0")), "fop,z");
    assert_string_equal(KEYS(RANGE("zz", "\0")), "");
    /* key "\0", end "\0": everything */
    r = RANGE("\0", "\0");
    assert_string_equal(KEYS(r), "a,ab,abc,b,c,foo,foo/1,foo/2,fop,z");
    assert_int_equal(r->count, 10);
    /* key "\0" alone is just that key */
    assert_int_equal(RANGE("\0", "")->n_kvs, 0);
    /* end before key, end == key: empty */
    assert_int_equal(RANGE("c", "a")->count, 0);
    assert_int_equal(RANGE("c", "c")->count, 0);
    /* end just after key */
    assert_string_equal(KEYS(RANGE("c", "c\0")), "c");
}

static void test_binary_keys_and_values(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeResponse *r;

    assert_int_equal(put_kv(f, B("a\0b"), B("x\0y")), 2);
    assert_int_equal(put_kv(f, B("a"), B("")), 3);
    assert_int_equal(put_kv(f, B("\xff\xfe"), B("hi")), 4);
    assert_int_equal(put_kv(f, B("\0"), B("nul")), 5);

    r = range_at(f, B("a\0b"), NOEND, 0);
    assert_int_equal(r->n_kvs, 1);
    assert_bin_equal(r->kvs[0]->key, B("a\0b"));
    assert_bin_equal(r->kvs[0]->value, B("x\0y"));
    /* empty value */
    r = RANGE("a", "");
    assert_int_equal(r->n_kvs, 1);
    assert_int_equal(r->kvs[0]->value.len, 0);
    /* "a" < "a\0b" < "a\x01" */
    assert_string_equal(KEYS(range_at(f, B("a"), B("a\x01"), 0)),
                        "a,a\\x00b");
    /* the key "\0" itself */
    r = RANGE("\0", "");
    assert_string_equal(KVS(r), "\\x00=nul:5/5/1");
    /* byte order is unsigned: 0xff sorts last */
    assert_string_equal(KEYS(RANGE("\0", "\0")), "\\x00,a,a\\x00b,\\xff\\xfe");
    assert_string_equal(KEYS(RANGE("\xff", "\0")), "\\xff\\xfe");
}

static void test_large_value(void **state)
{
    struct fx *f = *state;
    size_t n = 300 * 1024;
    char *v = arena_alloc(&f->a, n);
    for (size_t i = 0; i < n; i++)
        v[i] = (char)('a' + i % 26);
    ProtobufCBinaryData val = {n, (uint8_t *)v};
    put_kv(f, B("big"), val);
    put_kv(f, B("big2"), B("small"));
    Etcdserverpb__RangeResponse *r = RANGE("big", "");
    assert_int_equal(r->n_kvs, 1);
    assert_bin_equal(r->kvs[0]->value, val);
}

/* ---- limit, more, count ---- */

static Etcdserverpb__RangeResponse *range_limit(struct fx *f,
                                                ProtobufCBinaryData k,
                                                ProtobufCBinaryData e,
                                                int64_t limit)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = k;
    r.range_end = e;
    r.limit = limit;
    assert_int_equal(do_range(f, &r, &resp), 0);
    return resp;
}

static void test_range_limit_more_count(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeResponse *r;
    PUT("a", "1");
    PUT("b", "2");
    PUT("c", "3");
    PUT("d", "4");
    PUT("e", "5");

    r = range_limit(f, B("a"), B("\0"), 2);
    assert_string_equal(KEYS(r), "a,b");
    assert_true(r->more);
    assert_int_equal(r->count, 5);
    r = range_limit(f, B("a"), B("\0"), 4);
    assert_string_equal(KEYS(r), "a,b,c,d");
    assert_true(r->more);
    r = range_limit(f, B("a"), B("\0"), 5);
    assert_int_equal(r->n_kvs, 5);
    assert_false(r->more);
    assert_int_equal(r->count, 5);
    r = range_limit(f, B("a"), B("\0"), 6);
    assert_int_equal(r->n_kvs, 5);
    assert_false(r->more);
    r = range_limit(f, B("a"), B("\0"), 0); /* 0 = no limit */
    assert_int_equal(r->n_kvs, 5);
    assert_false(r->more);
    r = range_limit(f, B("b"), B("\0"), 1);
    assert_string_equal(KEYS(r), "b");
    assert_true(r->more);
    assert_int_equal(r->count, 4);
    r = range_limit(f, B("c"), NOEND, 1);
    assert_string_equal(KEYS(r), "c");
    assert_false(r->more);
    assert_int_equal(r->count, 1);
    /* deleted keys count for nothing */
    DEL("b", "");
    DEL("d", "");
    r = range_limit(f, B("a"), B("\0"), 2);
    assert_string_equal(KEYS(r), "a,c");
    assert_true(r->more);
    assert_int_equal(r->count, 3);
    r = range_limit(f, B("a"), B("\0"), 3);
    assert_false(r->more);
    /* limit on a historical read */
    Etcdserverpb__RangeRequest q;
    etcdserverpb__range_request__init(&q);
    q.key = B("a");
    q.range_end = B("\0");
    q.limit = 3;
    q.revision = 6;
    assert_int_equal(do_range(f, &q, &r), 0);
    assert_string_equal(KEYS(r), "a,b,c");
    assert_true(r->more);
    assert_int_equal(r->count, 5);
}

/* ---- sort ---- */

static Etcdserverpb__RangeResponse *
range_sorted(struct fx *f, Etcdserverpb__RangeRequest__SortTarget target,
             Etcdserverpb__RangeRequest__SortOrder order, int64_t limit)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.sort_target = target;
    r.sort_order = order;
    r.limit = limit;
    assert_int_equal(mvcc_check_range(&r), 0);
    assert_int_equal(do_range(f, &r, &resp), 0);
    return resp;
}

#define T_KEY ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY
#define T_VER ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION
#define T_CREATE ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE
#define T_MOD ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD
#define T_VALUE ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE
#define O_NONE ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE
#define O_ASC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND
#define O_DESC ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND

static void test_range_sort(void **state)
{
    struct fx *f = *state;
    /* created in order c, a, d, b; then b, d, b rewritten:
     *   key value create mod version
     *   a   3     3      3   1
     *   b   1     5      8   3
     *   c   2     2      2   1
     *   d   1     4      7   2        */
    PUT("c", "2");
    PUT("a", "3");
    PUT("d", "0");
    PUT("b", "0");
    PUT("b", "0");
    PUT("d", "1");
    PUT("b", "1");
    assert_string_equal(KVS(RANGE("\0", "\0")),
                        "a=3:3/3/1 b=1:5/8/3 c=2:2/2/1 d=1:4/7/2");

    assert_string_equal(KEYS(range_sorted(f, T_KEY, O_NONE, 0)), "a,b,c,d");
    assert_string_equal(KEYS(range_sorted(f, T_KEY, O_ASC, 0)), "a,b,c,d");
    assert_string_equal(KEYS(range_sorted(f, T_KEY, O_DESC, 0)), "d,c,b,a");
    /* a target other than KEY with order NONE sorts ascending */
    assert_string_equal(KEYS(range_sorted(f, T_CREATE, O_NONE, 0)), "c,a,d,b");
    assert_string_equal(KEYS(range_sorted(f, T_CREATE, O_ASC, 0)), "c,a,d,b");
    assert_string_equal(KEYS(range_sorted(f, T_CREATE, O_DESC, 0)), "b,d,a,c");
    assert_string_equal(KEYS(range_sorted(f, T_MOD, O_NONE, 0)), "c,a,d,b");
    assert_string_equal(KEYS(range_sorted(f, T_MOD, O_DESC, 0)), "b,d,a,c");
    /* ties (equal version / value) keep key order, both directions */
    assert_string_equal(KEYS(range_sorted(f, T_VER, O_ASC, 0)), "a,c,d,b");
    assert_string_equal(KEYS(range_sorted(f, T_VER, O_DESC, 0)), "b,d,a,c");
    assert_string_equal(KEYS(range_sorted(f, T_VALUE, O_NONE, 0)), "b,d,c,a");
    assert_string_equal(KEYS(range_sorted(f, T_VALUE, O_ASC, 0)), "b,d,c,a");
    assert_string_equal(KEYS(range_sorted(f, T_VALUE, O_DESC, 0)), "a,c,b,d");

    /* sort first, then limit; count is the whole range */
    Etcdserverpb__RangeResponse *r = range_sorted(f, T_KEY, O_DESC, 2);
    assert_string_equal(KEYS(r), "d,c");
    assert_true(r->more);
    assert_int_equal(r->count, 4);
    r = range_sorted(f, T_VALUE, O_DESC, 1);
    assert_string_equal(KEYS(r), "a");
    assert_true(r->more);
    r = range_sorted(f, T_MOD, O_ASC, 4);
    assert_string_equal(KEYS(r), "c,a,d,b");
    assert_false(r->more);
}

static void test_range_sort_many_ties(void **state)
{
    struct fx *f = *state;
    char k[16];
    /* 40 keys, all version 1 and value "v": the order must stay by key */
    for (int i = 39; i >= 0; i--) {
        snprintf(k, sizeof k, "k%02d", i);
        put_kv(f, bs(k), B("v"));
    }
    Etcdserverpb__RangeResponse *r = range_sorted(f, T_VALUE, O_DESC, 0);
    assert_int_equal(r->n_kvs, 40);
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%02d", i);
        assert_bin_equal(r->kvs[i]->key, bs(k));
    }
    r = range_sorted(f, T_VER, O_ASC, 0);
    for (int i = 0; i < 40; i++) {
        snprintf(k, sizeof k, "k%02d", i);
        assert_bin_equal(r->kvs[i]->key, bs(k));
    }
    /* by create: reverse key order (created k39 first) */
    r = range_sorted(f, T_CREATE, O_ASC, 3);
    assert_string_equal(KEYS(r), "k39,k38,k37");
}

/* ---- keys_only, count_only ---- */

static void test_keys_only_count_only(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    PUT("a", "va");
    PUT("b", "vb");
    PUT("a", "va2");
    PUT("c", "vc");

    etcdserverpb__range_request__init(&r);
    r.key = B("a");
    r.range_end = B("c");
    r.keys_only = 1;
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_string_equal(KVS(resp), "a=:2/4/2 b=:3/3/1");
    assert_int_equal(resp->count, 2);
    /* the store is unchanged by it */
    assert_string_equal(KVS(RANGE("a", "")), "a=va2:2/4/2");

    etcdserverpb__range_request__init(&r);
    r.key = B("a");
    r.range_end = B("\0");
    r.count_only = 1;
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_int_equal(resp->n_kvs, 0);
    assert_int_equal(resp->count, 3);
    assert_false(resp->more);
    assert_int_equal(resp->header->revision, 5);
    r.limit = 1; /* count_only wins over limit */
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_int_equal(resp->n_kvs, 0);
    assert_int_equal(resp->count, 3);
    r.revision = 3;
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_int_equal(resp->count, 2);
    /* keys_only with a sort by value: sorted on the values, then dropped */
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.keys_only = 1;
    r.sort_target = T_VALUE;
    r.sort_order = O_DESC;
    assert_int_equal(do_range(f, &r, &resp), 0);
    assert_string_equal(KEYS(resp), "c,b,a");
    for (size_t i = 0; i < resp->n_kvs; i++)
        assert_int_equal(resp->kvs[i]->value.len, 0);
}

/* ---- min/max filters ---- */

static Etcdserverpb__RangeResponse *range_filter(struct fx *f, int64_t min_mod,
                                                 int64_t max_mod,
                                                 int64_t min_create,
                                                 int64_t max_create,
                                                 int64_t limit)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.min_mod_revision = min_mod;
    r.max_mod_revision = max_mod;
    r.min_create_revision = min_create;
    r.max_create_revision = max_create;
    r.limit = limit;
    assert_int_equal(do_range(f, &r, &resp), 0);
    return resp;
}

static void test_range_filters(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__RangeResponse *r;
    /* a 2/5, b 3/3, c 4/6, d 7/7 (create/mod) */
    PUT("a", "1");
    PUT("b", "1");
    PUT("c", "1");
    PUT("a", "2");
    PUT("c", "2");
    PUT("d", "1");
    assert_string_equal(KVS(RANGE("\0", "\0")),
                        "a=2:2/5/2 b=1:3/3/1 c=2:4/6/2 d=1:7/7/1");

    r = range_filter(f, 5, 0, 0, 0, 0);
    assert_string_equal(KEYS(r), "a,c,d");
    /* count is before filtering, as etcd's */
    assert_int_equal(r->count, 4);
    assert_string_equal(KEYS(range_filter(f, 0, 5, 0, 0, 0)), "a,b");
    assert_string_equal(KEYS(range_filter(f, 4, 6, 0, 0, 0)), "a,c");
    assert_string_equal(KEYS(range_filter(f, 0, 0, 3, 0, 0)), "b,c,d");
    assert_string_equal(KEYS(range_filter(f, 0, 0, 0, 3, 0)), "a,b");
    assert_string_equal(KEYS(range_filter(f, 0, 0, 3, 4, 0)), "b,c");
    assert_string_equal(KEYS(range_filter(f, 6, 0, 0, 4, 0)), "c");
    assert_string_equal(KEYS(range_filter(f, 8, 0, 0, 0, 0)), "");
    assert_string_equal(KEYS(range_filter(f, 0, 0, 0, 1, 0)), "");
    /* the limit applies after the filter */
    r = range_filter(f, 5, 0, 0, 0, 2);
    assert_string_equal(KEYS(r), "a,c");
    assert_true(r->more);
    assert_int_equal(r->count, 4);
    r = range_filter(f, 5, 0, 0, 0, 3);
    assert_string_equal(KEYS(r), "a,c,d");
    assert_false(r->more);
    r = range_filter(f, 0, 0, 3, 0, 1);
    assert_string_equal(KEYS(r), "b");
    assert_true(r->more);
}

/* ---- delete ---- */

static void test_delete_range(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__DeleteRangeResponse *dr;

    put_many(f); /* revs 2..11 */
    PUT("ab", "ab2"); /* 12 */
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("a");
    d.range_end = B("b");
    d.prev_kv = 1;
    assert_int_equal(mvcc_check_delete(&d), 0);
    assert_int_equal(do_delete(f, &d, &dr), 0);
    assert_int_equal(dr->deleted, 3);
    assert_int_equal(dr->header->revision, 13);
    assert_string_equal(dump_kvs(f, dr->prev_kvs, dr->n_prev_kvs),
                        "a=a:2/2/1 ab=ab2:3/12/2 abc=abc:4/4/1");
    /* one revision for the whole delete */
    assert_int_equal(cur_rev_of(f), 13);
    assert_string_equal(KEYS(RANGE_AT("a", "b", 12)), "a,ab,abc");
    assert_string_equal(KEYS(RANGE_AT("a", "b", 13)), "");
    assert_string_equal(KEYS(RANGE("\0", "\0")), "b,c,foo,foo/1,foo/2,fop,z");

    /* without prev_kv: none returned */
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("foo");
    d.range_end = B("fop");
    assert_int_equal(do_delete(f, &d, &dr), 0);
    assert_int_equal(dr->deleted, 3);
    assert_int_equal(dr->n_prev_kvs, 0);
    assert_int_equal(dr->header->revision, 14);

    /* range_end "\0": everything from key on */
    assert_int_equal(DEL("c", "\0"), 3); /* c, fop, z */
    assert_int_equal(cur_rev_of(f), 15);
    assert_string_equal(KEYS(RANGE("\0", "\0")), "b");
    /* everything */
    assert_int_equal(DEL("\0", "\0"), 1);
    assert_int_equal(cur_rev_of(f), 16);
    assert_int_equal(RANGE("\0", "\0")->count, 0);
}

static void test_delete_noop_keeps_revision(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__DeleteRangeResponse *dr;

    PUT("a", "1"); /* 2 */
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("zz");
    d.prev_kv = 1;
    assert_int_equal(do_delete(f, &d, &dr), 0);
    assert_int_equal(dr->deleted, 0);
    assert_int_equal(dr->n_prev_kvs, 0);
    assert_int_equal(dr->header->revision, 2);
    assert_int_equal(cur_rev_of(f), 2);
    /* a range holding only deleted keys is a no-op too */
    PUT("b", "1");            /* 3 */
    assert_int_equal(DEL("b", ""), 1); /* 4 */
    assert_int_equal(DEL("b", ""), 0);
    assert_int_equal(DEL("b", "c"), 0);
    assert_int_equal(cur_rev_of(f), 4);
    /* the next change takes the next revision */
    assert_int_equal(PUT("c", "1"), 5);
    assert_string_equal(KVS(RANGE("\0", "\0")), "a=1:2/2/1 c=1:5/5/1");
}

/* ---- put options ---- */

static void test_put_prev_kv(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse *pr;

    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.value = B("one");
    p.prev_kv = 1;
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_null(pr->prev_kv);
    assert_int_equal(pr->header->revision, 2);
    p.value = B("two");
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_non_null(pr->prev_kv);
    assert_string_equal(dump_kvs(f, &pr->prev_kv, 1), "k=one:2/2/1");
    assert_int_equal(pr->header->revision, 3);
    /* without prev_kv: none */
    p.prev_kv = 0;
    p.value = B("three");
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_null(pr->prev_kv);
    /* after a delete there is no previous kv */
    DEL("k", "");
    p.prev_kv = 1;
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_null(pr->prev_kv);
    assert_string_equal(KVS(RANGE("k", "")), "k=three:6/6/1");
}

static void test_put_ignore_value_lease(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse *pr;

    PUT("k", "orig"); /* 2 */
    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.ignore_value = 1;
    p.prev_kv = 1;
    assert_int_equal(mvcc_check_put(&p), 0);
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_int_equal(pr->header->revision, 3);
    assert_string_equal(dump_kvs(f, &pr->prev_kv, 1), "k=orig:2/2/1");
    assert_string_equal(KVS(RANGE("k", "")), "k=orig:2/3/2");

    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.value = B("new");
    p.ignore_lease = 1;
    assert_int_equal(mvcc_check_put(&p), 0);
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_string_equal(KVS(RANGE("k", "")), "k=new:2/4/3");
    assert_int_equal(RANGE("k", "")->kvs[0]->lease, 0);

    /* both at once */
    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.ignore_value = 1;
    p.ignore_lease = 1;
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_string_equal(KVS(RANGE("k", "")), "k=new:2/5/4");

    /* on a missing key: key not found, nothing written */
    etcdserverpb__put_request__init(&p);
    p.key = B("missing");
    p.ignore_value = 1;
    assert_int_equal(do_put(f, &p, &pr), CAIRN_EKEYNOTFOUND);
    p.ignore_value = 0;
    p.ignore_lease = 1;
    p.value = B("x");
    assert_int_equal(do_put(f, &p, &pr), CAIRN_EKEYNOTFOUND);
    /* a deleted key is missing too */
    PUT("gone", "1"); /* 6 */
    DEL("gone", "");  /* 7 */
    p.key = B("gone");
    assert_int_equal(do_put(f, &p, &pr), CAIRN_EKEYNOTFOUND);
    assert_int_equal(cur_rev_of(f), 7);
    assert_int_equal(PUT("next", "1"), 8);
}

static void test_put_lease_not_found(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse *pr;

    PUT("k", "v");
    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.value = B("w");
    int64_t leases[] = {1, 7, -1, INT64_MAX};
    for (size_t i = 0; i < sizeof leases / sizeof leases[0]; i++) {
        p.lease = leases[i];
        assert_int_equal(mvcc_check_put(&p), 0);
        assert_int_equal(do_put(f, &p, &pr), CAIRN_ELEASENOTFOUND);
    }
    p.key = B("new");
    p.lease = 42;
    assert_int_equal(do_put(f, &p, &pr), CAIRN_ELEASENOTFOUND);
    /* nothing written, no revision taken */
    assert_int_equal(cur_rev_of(f), 2);
    assert_string_equal(KVS(RANGE("\0", "\0")), "k=v:2/2/1");
    /* lease 0 means none */
    p.lease = 0;
    assert_int_equal(do_put(f, &p, &pr), 0);
    assert_int_equal(pr->header->revision, 3);
}

/* ---- request checks ---- */

static void test_check_requests(void **state)
{
    (void)state;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__DeleteRangeRequest d;

    etcdserverpb__range_request__init(&r);
    assert_int_equal(mvcc_check_range(&r), CAIRN_EEMPTYKEY);
    r.range_end = B("\0"); /* an end does not make up for the key */
    assert_int_equal(mvcc_check_range(&r), CAIRN_EEMPTYKEY);
    r.key = B("a");
    assert_int_equal(mvcc_check_range(&r), 0);
    r.sort_order = 3;
    assert_int_equal(mvcc_check_range(&r), CAIRN_EBADSORT);
    r.sort_order = -1;
    assert_int_equal(mvcc_check_range(&r), CAIRN_EBADSORT);
    r.sort_order = O_DESC;
    r.sort_target = 5;
    assert_int_equal(mvcc_check_range(&r), CAIRN_EBADSORT);
    r.sort_target = T_VALUE;
    assert_int_equal(mvcc_check_range(&r), 0);

    etcdserverpb__put_request__init(&p);
    assert_int_equal(mvcc_check_put(&p), CAIRN_EEMPTYKEY);
    p.key = B("k");
    assert_int_equal(mvcc_check_put(&p), 0); /* empty value is fine */
    p.ignore_value = 1;
    p.value = B("v");
    assert_int_equal(mvcc_check_put(&p), CAIRN_EVALUEPROVIDED);
    p.value = NOEND;
    assert_int_equal(mvcc_check_put(&p), 0);
    p.ignore_lease = 1;
    p.lease = 5;
    assert_int_equal(mvcc_check_put(&p), CAIRN_ELEASEPROVIDED);
    p.lease = 0;
    assert_int_equal(mvcc_check_put(&p), 0);

    etcdserverpb__delete_range_request__init(&d);
    assert_int_equal(mvcc_check_delete(&d), CAIRN_EEMPTYKEY);
    d.range_end = B("z");
    assert_int_equal(mvcc_check_delete(&d), CAIRN_EEMPTYKEY);
    d.key = B("a");
    assert_int_equal(mvcc_check_delete(&d), 0);
}

/* ---- persistence ---- */

static void test_persistence(void **state)
{
    struct fx *f = *state;
    PUT("a", "1");
    PUT("b", "2");
    PUT("a", "3");
    DEL("b", "");
    assert_int_equal(cur_rev_of(f), 5);
    char *before = snapshot(f, 3);

    fx_reopen(f);
    assert_int_equal(cur_rev_of(f), 5);
    assert_string_equal(KVS(RANGE("\0", "\0")), "a=3:2/4/2");
    assert_string_equal(snapshot(f, 3), before);
    assert_int_equal(PUT("b", "4"), 6);
    assert_string_equal(KVS(RANGE("b", "")), "b=4:6/6/1");

    /* a no-op after reopen still takes no revision */
    fx_reopen(f);
    assert_int_equal(DEL("nothing", ""), 0);
    assert_int_equal(cur_rev_of(f), 6);
    fx_reopen(f);
    assert_int_equal(cur_rev_of(f), 6);
    assert_string_equal(KVS(RANGE("\0", "\0")), "a=3:2/4/2 b=4:6/6/1");
}

/* ---- write txns carrying several commands ---- */

static void test_group_commit_revisions(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse pr;
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__DeleteRangeResponse dr;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse rr;

    PUT("x", "0"); /* 2 */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(t.rev, 2);

    etcdserverpb__put_request__init(&p);
    p.key = B("a");
    p.value = B("1");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    assert_int_equal(pr.header->revision, 3);
    /* the command sees its own write */
    etcdserverpb__range_request__init(&r);
    r.key = B("a");
    assert_int_equal(mvcc_range(&t, &r, &f->a, &rr), 0);
    assert_int_equal(rr.n_kvs, 1);
    assert_int_equal(rr.header->revision, 3);
    mvcc_cmd_end(&t);
    assert_int_equal(t.rev, 3);

    p.key = B("b");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    assert_int_equal(pr.header->revision, 4);
    mvcc_cmd_end(&t);

    /* a command changing nothing takes no revision */
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("nope");
    assert_int_equal(mvcc_delete_range(&t, &d, &f->a, &dr), 0);
    assert_int_equal(dr.deleted, 0);
    assert_int_equal(dr.header->revision, 4);
    mvcc_cmd_end(&t);
    assert_int_equal(t.rev, 4);
    /* nor does a read-only command or a failed one */
    assert_int_equal(mvcc_range(&t, &r, &f->a, &rr), 0);
    mvcc_cmd_end(&t);
    p.lease = 9;
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), CAIRN_ELEASENOTFOUND);
    mvcc_cmd_end(&t);
    assert_int_equal(t.rev, 4);
    p.lease = 0;

    p.key = B("a");
    p.value = B("2");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    assert_int_equal(pr.header->revision, 5);
    mvcc_cmd_end(&t);

    d.key = B("x");
    assert_int_equal(mvcc_delete_range(&t, &d, &f->a, &dr), 0);
    assert_int_equal(dr.deleted, 1);
    assert_int_equal(dr.header->revision, 6);
    mvcc_cmd_end(&t);

    /* a reader outside does not see the uncommitted txn */
    assert_int_equal(cur_rev_of(f), 2);
    assert_string_equal(snapshot(f, 0), "x=0:2/2/1");
    assert_int_equal(mvcc_write_commit(&t), 0);

    assert_int_equal(cur_rev_of(f), 6);
    assert_string_equal(snapshot(f, 3), "a=1:3/3/1 x=0:2/2/1");
    assert_string_equal(snapshot(f, 4), "a=1:3/3/1 b=1:4/4/1 x=0:2/2/1");
    assert_string_equal(snapshot(f, 5), "a=2:3/5/2 b=1:4/4/1 x=0:2/2/1");
    assert_string_equal(snapshot(f, 6), "a=2:3/5/2 b=1:4/4/1");
    assert_int_equal(PUT("c", "1"), 7);
}

static void test_one_command_many_changes(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse pr;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse rr;

    /* Several changes in one command (as a Txn does) share a revision; a
     * later change of the same key in it updates version and value. */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    etcdserverpb__put_request__init(&p);
    p.key = B("a");
    p.value = B("1");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    p.key = B("b");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    assert_int_equal(pr.header->revision, 2);
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    assert_int_equal(mvcc_range(&t, &r, &f->a, &rr), 0);
    assert_string_equal(dump_kvs(f, rr.kvs, rr.n_kvs), "a=1:2/2/1 b=1:2/2/1");
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    assert_int_equal(cur_rev_of(f), 2);
    assert_string_equal(snapshot(f, 2), "a=1:2/2/1 b=1:2/2/1");
}

static void test_abort_leaves_nothing(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse pr;
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__DeleteRangeResponse dr;

    PUT("keep", "1"); /* 2 */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    etcdserverpb__put_request__init(&p);
    p.key = B("a");
    p.value = B("1");
    assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
    mvcc_cmd_end(&t);
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("keep");
    assert_int_equal(mvcc_delete_range(&t, &d, &f->a, &dr), 0);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_meta_put(&t, "term", 9), 0);
    assert_int_equal(t.rev, 4);
    mvcc_write_abort(&t);

    assert_int_equal(cur_rev_of(f), 2);
    assert_string_equal(snapshot(f, 0), "keep=1:2/2/1");
    struct mvcc_txn rt;
    assert_int_equal(mvcc_read_begin(f->m, &rt), 0);
    assert_int_equal(mvcc_meta_get(&rt, "term", -7), -7);
    mvcc_read_end(&rt);
    /* the aborted revisions are taken again */
    assert_int_equal(PUT("b", "1"), 3);
    fx_reopen(f);
    assert_int_equal(cur_rev_of(f), 3);
    assert_string_equal(snapshot(f, 0), "b=1:3/3/1 keep=1:2/2/1");
}

static void test_read_snapshot_isolation(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn rt;
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse rr;

    PUT("a", "1");
    assert_int_equal(mvcc_read_begin(f->m, &rt), 0);
    PUT("a", "2");
    PUT("b", "1");
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    assert_int_equal(mvcc_range(&rt, &r, &f->a, &rr), 0);
    assert_string_equal(dump_kvs(f, rr.kvs, rr.n_kvs), "a=1:2/2/1");
    assert_int_equal(rr.header->revision, 2);
    /* the old view cannot read its future */
    r.revision = 3;
    assert_int_equal(mvcc_range(&rt, &r, &f->a, &rr), CAIRN_EFUTUREREV);
    mvcc_read_end(&rt);
    assert_string_equal(snapshot(f, 0), "a=2:2/3/2 b=1:4/4/1");
}

static void test_meta_counters(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_meta_get(&t, "term", 0), 0);
    assert_int_equal(mvcc_meta_put(&t, "term", 12345678901LL), 0);
    assert_int_equal(mvcc_meta_get(&t, "term", 0), 12345678901LL);
    assert_int_equal(mvcc_write_commit(&t), 0);
    fx_reopen(f);
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_meta_get(&t, "term", 0), 12345678901LL);
    assert_int_equal(mvcc_meta_get(&t, "other", 5), 5);
    mvcc_read_end(&t);
    /* a commit with no command leaves the revision alone */
    assert_int_equal(cur_rev_of(f), 1);
}

static void test_many_keys_and_revisions(void **state)
{
    struct fx *f = *state;
    char k[16], v[16];
    struct mvcc_txn t;
    Etcdserverpb__PutRequest p;
    Etcdserverpb__PutResponse pr;

    /* 500 commands in one write txn, then reads at every 50th revision */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    for (int i = 0; i < 500; i++) {
        snprintf(k, sizeof k, "key%03d", i % 100);
        snprintf(v, sizeof v, "v%d", i);
        etcdserverpb__put_request__init(&p);
        p.key = bs(k);
        p.value = bs(v);
        assert_int_equal(mvcc_put(&t, &p, &f->a, &pr), 0);
        assert_int_equal(pr.header->revision, i + 2);
        mvcc_cmd_end(&t);
    }
    assert_int_equal(mvcc_write_commit(&t), 0);
    assert_int_equal(cur_rev_of(f), 501);
    Etcdserverpb__RangeResponse *r = RANGE("key", "kez");
    assert_int_equal(r->count, 100);
    assert_int_equal(r->n_kvs, 100);
    /* key007 was written at i = 7, 107, ..., 407 */
    r = RANGE("key007", "");
    assert_string_equal(KVS(r), "key007=v407:9/409/5");
    r = RANGE_AT("key007", "", 208);
    assert_string_equal(KVS(r), "key007=v107:9/109/2");
    r = RANGE_AT("key", "kez", 51);
    assert_int_equal(r->count, 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
        T(test_empty_store),
        T(test_put_overwrite_delete_recreate),
        T(test_range_revision_bounds),
        T(test_range_forms),
        T(test_binary_keys_and_values),
        T(test_large_value),
        T(test_range_limit_more_count),
        T(test_range_sort),
        T(test_range_sort_many_ties),
        T(test_keys_only_count_only),
        T(test_range_filters),
        T(test_delete_range),
        T(test_delete_noop_keeps_revision),
        T(test_put_prev_kv),
        T(test_put_ignore_value_lease),
        T(test_put_lease_not_found),
        cmocka_unit_test(test_check_requests),
        T(test_persistence),
        T(test_group_commit_revisions),
        T(test_one_command_many_changes),
        T(test_abort_leaves_nothing),
        T(test_read_snapshot_isolation),
        T(test_meta_counters),
        T(test_many_keys_and_revisions),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
