/* Txn: request checks (etcd 3.4's v3rpc/key.go checkTxnRequest and
 * checkIntervals) and semantics (etcdserver/apply.go Txn, applyCompare,
 * applyTxn, checkRequests). */
#include "mvcc_fixture.h"

/* ---- request builders (everything in the fixture's arena) ---- */

#define CMPS(...) ((Etcdserverpb__Compare *[]){__VA_ARGS__, NULL})
#define OPS(...) ((Etcdserverpb__RequestOp *[]){__VA_ARGS__, NULL})

static Etcdserverpb__RequestOp *new_op(struct fx *f)
{
    Etcdserverpb__RequestOp *o = arena_alloc(&f->a, sizeof *o);
    etcdserverpb__request_op__init(o);
    return o;
}

static Etcdserverpb__RequestOp *op_put_req(struct fx *f,
                                           const Etcdserverpb__PutRequest *p)
{
    Etcdserverpb__RequestOp *o = new_op(f);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    o->request_put = arena_memdup(&f->a, p, sizeof *p);
    return o;
}

static Etcdserverpb__RequestOp *op_put(struct fx *f, ProtobufCBinaryData k,
                                       ProtobufCBinaryData v)
{
    Etcdserverpb__PutRequest p;
    etcdserverpb__put_request__init(&p);
    p.key = k;
    p.value = v;
    return op_put_req(f, &p);
}

static Etcdserverpb__RequestOp *op_del(struct fx *f, ProtobufCBinaryData k,
                                       ProtobufCBinaryData e, int prev_kv)
{
    Etcdserverpb__RequestOp *o = new_op(f);
    Etcdserverpb__DeleteRangeRequest *d = arena_alloc(&f->a, sizeof *d);
    etcdserverpb__delete_range_request__init(d);
    d->key = k;
    d->range_end = e;
    d->prev_kv = prev_kv;
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    o->request_delete_range = d;
    return o;
}

static Etcdserverpb__RequestOp *op_range(struct fx *f, ProtobufCBinaryData k,
                                         ProtobufCBinaryData e, int64_t rev)
{
    Etcdserverpb__RequestOp *o = new_op(f);
    Etcdserverpb__RangeRequest *r = arena_alloc(&f->a, sizeof *r);
    etcdserverpb__range_request__init(r);
    r->key = k;
    r->range_end = e;
    r->revision = rev;
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    o->request_range = r;
    return o;
}

static Etcdserverpb__RequestOp *op_txn(struct fx *f, Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__RequestOp *o = new_op(f);
    o->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN;
    o->request_txn = t;
    return o;
}

#define T_VALUE ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE
#define T_CREATE ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE
#define T_MOD ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD
#define T_VERSION ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION
#define T_LEASE ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE
#define R_EQUAL ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL
#define R_NOT_EQUAL ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL
#define R_GREATER ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER
#define R_LESS ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS

/* An integer compare; the target union matches the target. */
static Etcdserverpb__Compare *cmp_int(struct fx *f, ProtobufCBinaryData k,
                                      ProtobufCBinaryData e, int target,
                                      int result, int64_t v)
{
    Etcdserverpb__Compare *c = arena_alloc(&f->a, sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = k;
    c->range_end = e;
    c->target = target;
    c->result = result;
    switch (target) {
    case T_CREATE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
        c->create_revision = v;
        break;
    case T_MOD:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
        c->mod_revision = v;
        break;
    case T_VERSION:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        c->version = v;
        break;
    case T_LEASE:
        c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
        c->lease = v;
        break;
    default:
        fail_msg("cmp_int on a value target");
    }
    return c;
}

static Etcdserverpb__Compare *cmp_val(struct fx *f, ProtobufCBinaryData k,
                                      ProtobufCBinaryData e, int result,
                                      ProtobufCBinaryData v)
{
    Etcdserverpb__Compare *c = arena_alloc(&f->a, sizeof *c);
    etcdserverpb__compare__init(c);
    c->key = k;
    c->range_end = e;
    c->target = T_VALUE;
    c->result = result;
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
    c->value = v;
    return c;
}

static size_t count_null(void **v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

static Etcdserverpb__TxnRequest *txn_new(struct fx *f, Etcdserverpb__Compare **c,
                                         Etcdserverpb__RequestOp **s,
                                         Etcdserverpb__RequestOp **fl)
{
    Etcdserverpb__TxnRequest *t = arena_alloc(&f->a, sizeof *t);
    etcdserverpb__txn_request__init(t);
    t->n_compare = count_null((void **)c);
    t->n_success = count_null((void **)s);
    t->n_failure = count_null((void **)fl);
    t->compare = arena_memdup(&f->a, c, t->n_compare * sizeof *c);
    t->success = arena_memdup(&f->a, s, t->n_success * sizeof *s);
    t->failure = arena_memdup(&f->a, fl, t->n_failure * sizeof *fl);
    return t;
}

/* Literal-only short forms; `f` in scope. */
#define PUTOP(k, v) op_put(f, B(k), B(v))
#define DELOP(k, e) op_del(f, B(k), B(e), 0)
#define RANGEOP(k, e) op_range(f, B(k), B(e), 0)
#define TXNOP(t) op_txn(f, t)
#define CMP(k, e, target, result, v) cmp_int(f, B(k), B(e), T_##target, R_##result, v)
#define CMPV(k, e, result, v) cmp_val(f, B(k), B(e), R_##result, B(v))
#define TXN(c, s, fl) txn_new(f, c, s, fl)

#define RESP_RANGE ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE
#define RESP_PUT ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT
#define RESP_DEL ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE
#define RESP_TXN ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN

static Etcdserverpb__TxnResponse *run(struct fx *f, Etcdserverpb__TxnRequest *t)
{
    Etcdserverpb__TxnResponse *resp = NULL;
    assert_int_equal(mvcc_check_txn(t, 128), 0);
    assert_int_equal(do_txn(f, t, &resp), 0);
    return resp;
}

/* Does a txn with just this compare succeed? */
static int cmp_holds(struct fx *f, Etcdserverpb__Compare *c)
{
    Etcdserverpb__TxnResponse *r = run(f, TXN(CMPS(c), NULL, NULL));
    assert_int_equal(r->n_responses, 0);
    return r->succeeded;
}

/* ---- mvcc_check_txn ---- */

static void test_check_counts(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mvcc_check_txn(TXN(NULL, NULL, NULL), 128), 0);
    Etcdserverpb__TxnRequest *t =
        TXN(NULL, OPS(PUTOP("a", ""), PUTOP("b", ""), PUTOP("c", "")), NULL);
    assert_int_equal(mvcc_check_txn(t, 3), 0);
    assert_int_equal(mvcc_check_txn(t, 2), CAIRN_ETOOMANYOPS);
    t = TXN(NULL, NULL, OPS(PUTOP("a", ""), PUTOP("b", ""), PUTOP("c", "")));
    assert_int_equal(mvcc_check_txn(t, 3), 0);
    assert_int_equal(mvcc_check_txn(t, 2), CAIRN_ETOOMANYOPS);
    t = TXN(CMPS(CMP("a", "", VERSION, EQUAL, 0), CMP("b", "", VERSION, EQUAL, 0),
                 CMP("c", "", VERSION, EQUAL, 0)),
            OPS(PUTOP("a", "")), OPS(PUTOP("a", "")));
    assert_int_equal(mvcc_check_txn(t, 3), 0);
    assert_int_equal(mvcc_check_txn(t, 2), CAIRN_ETOOMANYOPS);
    /* the largest of the three counts, not their sum */
    t = TXN(CMPS(CMP("a", "", VERSION, EQUAL, 0), CMP("b", "", VERSION, EQUAL, 0)),
            OPS(PUTOP("a", ""), PUTOP("b", "")), OPS(PUTOP("c", ""), PUTOP("d", "")));
    assert_int_equal(mvcc_check_txn(t, 2), 0);
    /* nested: what the outer level uses is taken from the inner's budget */
    Etcdserverpb__TxnRequest *inner =
        TXN(NULL, OPS(PUTOP("a", ""), PUTOP("b", "")), NULL);
    t = TXN(NULL, OPS(TXNOP(inner), PUTOP("c", "")), NULL);
    assert_int_equal(mvcc_check_txn(t, 4), 0);
    assert_int_equal(mvcc_check_txn(t, 3), CAIRN_ETOOMANYOPS);
    t = TXN(NULL, NULL, OPS(TXNOP(inner), PUTOP("c", "")));
    assert_int_equal(mvcc_check_txn(t, 3), CAIRN_ETOOMANYOPS);
    /* counts come before duplicate keys and empty keys */
    t = TXN(NULL, OPS(PUTOP("a", ""), PUTOP("a", ""), PUTOP("", "")), NULL);
    assert_int_equal(mvcc_check_txn(t, 2), CAIRN_ETOOMANYOPS);
    assert_int_equal(mvcc_check_txn(t, 3), CAIRN_EEMPTYKEY);
}

static void test_check_ops(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__PutRequest p;

    /* empty keys: compares, puts, ranges, deletes, in either branch */
    assert_int_equal(mvcc_check_txn(TXN(CMPS(CMP("", "", VERSION, EQUAL, 0)),
                                        NULL, NULL), 128),
                     CAIRN_EEMPTYKEY);
    assert_int_equal(mvcc_check_txn(TXN(CMPS(CMP("", "z", VERSION, EQUAL, 0)),
                                        NULL, NULL), 128),
                     CAIRN_EEMPTYKEY);
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(PUTOP("", "v")), NULL), 128),
                     CAIRN_EEMPTYKEY);
    assert_int_equal(mvcc_check_txn(TXN(NULL, NULL, OPS(RANGEOP("", "z"))), 128),
                     CAIRN_EEMPTYKEY);
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(DELOP("", "\0")), NULL), 128),
                     CAIRN_EEMPTYKEY);
    /* an empty RequestOp */
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(new_op(f)), NULL), 128),
                     CAIRN_EKEYNOTFOUND);
    assert_int_equal(
        mvcc_check_txn(TXN(NULL, OPS(RANGEOP("a", "")), OPS(new_op(f))), 128),
        CAIRN_EKEYNOTFOUND);
    assert_int_equal(
        mvcc_check_txn(TXN(NULL, OPS(TXNOP(TXN(NULL, OPS(new_op(f)), NULL))), NULL),
                       128),
        CAIRN_EKEYNOTFOUND);
    /* put checks */
    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.ignore_value = 1;
    p.value = B("v");
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(op_put_req(f, &p)), NULL), 128),
                     CAIRN_EVALUEPROVIDED);
    etcdserverpb__put_request__init(&p);
    p.key = B("k");
    p.ignore_lease = 1;
    p.lease = 3;
    assert_int_equal(mvcc_check_txn(TXN(NULL, NULL, OPS(op_put_req(f, &p))), 128),
                     CAIRN_ELEASEPROVIDED);
    /* a lease is not checked here (that is the apply's job) */
    p.ignore_lease = 0;
    assert_int_equal(mvcc_check_txn(TXN(NULL, NULL, OPS(op_put_req(f, &p))), 128),
                     0);
    /* range checks */
    Etcdserverpb__RequestOp *ro = RANGEOP("a", "");
    ro->request_range->sort_order = 7;
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(ro), NULL), 128),
                     CAIRN_EBADSORT);
    /* nested ops are checked too */
    Etcdserverpb__TxnRequest *bad = TXN(NULL, NULL, OPS(PUTOP("", "")));
    assert_int_equal(mvcc_check_txn(TXN(NULL, OPS(TXNOP(bad)), NULL), 128),
                     CAIRN_EEMPTYKEY);
    assert_int_equal(
        mvcc_check_txn(TXN(NULL, OPS(TXNOP(TXN(CMPS(CMP("", "", MOD, EQUAL, 0)),
                                               NULL, NULL))),
                           NULL),
                       128),
        CAIRN_EEMPTYKEY);
}

static void test_check_duplicates(void **state)
{
    struct fx *f = *state;
#define DUP(s, fl) mvcc_check_txn(TXN(NULL, s, fl), 128)
    /* same level */
    assert_int_equal(DUP(OPS(PUTOP("a", "1"), PUTOP("a", "2")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(NULL, OPS(PUTOP("a", "1"), PUTOP("a", "2"))), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(PUTOP("a", "1"), PUTOP("b", "2")), NULL), 0);
    assert_int_equal(DUP(OPS(PUTOP("a", "1"), DELOP("a", "")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(DELOP("a", ""), PUTOP("a", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(DELOP("a", "c"), PUTOP("b", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(DELOP("a", "c"), PUTOP("a", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(DELOP("a", "c"), PUTOP("c", "1")), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("b", "c"), PUTOP("a", "1")), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("a", ""), PUTOP("a\0", "1")), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("a", ""), PUTOP("ab", "1")), NULL), 0);
    /* the branches are checked on their own */
    assert_int_equal(DUP(OPS(PUTOP("a", "1")), OPS(PUTOP("a", "2"))), 0);
    assert_int_equal(DUP(OPS(DELOP("a", "")), OPS(PUTOP("a", "2"))), 0);
    /* deletes and ranges may overlap anything but puts */
    assert_int_equal(DUP(OPS(DELOP("a", ""), DELOP("a", "")), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("a", "c"), DELOP("b", "d")), NULL), 0);
    assert_int_equal(DUP(OPS(RANGEOP("a", ""), PUTOP("a", "1")), NULL), 0);
    assert_int_equal(DUP(OPS(PUTOP("a", "1"), RANGEOP("a", "\0"), DELOP("b", "\0")),
                         NULL),
                     0);

    /* nested */
    Etcdserverpb__TxnRequest *put_a = TXN(NULL, OPS(PUTOP("a", "n")), NULL);
    Etcdserverpb__TxnRequest *put_b = TXN(NULL, OPS(PUTOP("b", "n")), NULL);
    Etcdserverpb__TxnRequest *del_ac = TXN(NULL, OPS(DELOP("a", "c")), NULL);
    assert_int_equal(DUP(OPS(PUTOP("a", "1"), TXNOP(put_a)), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(put_a), PUTOP("a", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(put_a), TXNOP(put_a)), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(put_a), TXNOP(put_b)), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("a", "c"), TXNOP(put_b)), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(put_a), DELOP("a", "")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(del_ac), PUTOP("b", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(del_ac), TXNOP(put_b)), NULL), CAIRN_EDUPKEY);
    /* etcd quirk: a nested delete after a nested put is not checked */
    assert_int_equal(DUP(OPS(TXNOP(put_b), TXNOP(del_ac)), NULL), 0);
    /* then and else of one nested txn exclude each other */
    Etcdserverpb__TxnRequest *both =
        TXN(NULL, OPS(PUTOP("a", "t")), OPS(PUTOP("a", "e")));
    assert_int_equal(DUP(OPS(TXNOP(both)), NULL), 0);
    assert_int_equal(DUP(OPS(TXNOP(both), PUTOP("a", "1")), NULL), CAIRN_EDUPKEY);
    Etcdserverpb__TxnRequest *then_del =
        TXN(NULL, OPS(PUTOP("a", "t")), OPS(DELOP("a", "")));
    assert_int_equal(DUP(OPS(TXNOP(then_del)), NULL), 0);
    /* but an else put collides with an earlier nested txn's put */
    Etcdserverpb__TxnRequest *else_b =
        TXN(NULL, OPS(PUTOP("a", "t")), OPS(PUTOP("b", "e")));
    assert_int_equal(DUP(OPS(TXNOP(else_b), TXNOP(put_b)), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(put_b), TXNOP(else_b)), NULL), CAIRN_EDUPKEY);
    /* deeper */
    Etcdserverpb__TxnRequest *deep = TXN(NULL, OPS(TXNOP(put_a)), NULL);
    assert_int_equal(DUP(OPS(TXNOP(deep), PUTOP("a", "1")), NULL), CAIRN_EDUPKEY);
    assert_int_equal(DUP(OPS(TXNOP(deep), PUTOP("b", "1")), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("\0", "z"), TXNOP(deep)), NULL), CAIRN_EDUPKEY);
    /* etcd quirk: checkIntervals takes range_end as given, so "\0" (which
     * means "to the end" everywhere else) makes an empty interval here */
    assert_int_equal(DUP(OPS(DELOP("\0", "\0"), TXNOP(deep)), NULL), 0);
    assert_int_equal(DUP(OPS(DELOP("a", "\0"), PUTOP("b", "1")), NULL), 0);
    /* an empty range_end is a single key, but the affine "" end of an
     * interval would be +inf: a put after the key does not collide */
    assert_int_equal(DUP(OPS(DELOP("a", ""), PUTOP("b", "1")), NULL), 0);
#undef DUP
}

static void test_is_write(void **state)
{
    struct fx *f = *state;
    assert_false(mvcc_txn_is_write(TXN(NULL, NULL, NULL)));
    assert_false(mvcc_txn_is_write(
        TXN(CMPS(CMP("a", "", VERSION, EQUAL, 0)), OPS(RANGEOP("a", "")),
            OPS(RANGEOP("b", ""), RANGEOP("c", "")))));
    assert_true(mvcc_txn_is_write(TXN(NULL, OPS(RANGEOP("a", "")),
                                      OPS(PUTOP("b", "")))));
    assert_true(mvcc_txn_is_write(TXN(NULL, OPS(DELOP("a", "")), NULL)));
    /* a nested txn counts as a write, whatever it holds (isTxnReadonly) */
    assert_true(mvcc_txn_is_write(
        TXN(NULL, OPS(TXNOP(TXN(NULL, OPS(RANGEOP("a", "")), NULL))), NULL)));
}

/* ---- compares ---- */

static void test_compare_targets(void **state)
{
    struct fx *f = *state;
    PUT("a", "1"); /* 2 */
    PUT("x", "1"); /* 3 */
    PUT("a", "2"); /* 4: a create 2, mod 4, version 2, value "2", lease 0 */

    assert_true(cmp_holds(f, CMPV("a", "", EQUAL, "2")));
    assert_false(cmp_holds(f, CMPV("a", "", EQUAL, "1")));
    assert_true(cmp_holds(f, CMPV("a", "", NOT_EQUAL, "1")));
    assert_false(cmp_holds(f, CMPV("a", "", NOT_EQUAL, "2")));
    assert_true(cmp_holds(f, CMPV("a", "", GREATER, "1")));
    assert_true(cmp_holds(f, CMPV("a", "", GREATER, "10"))); /* bytewise */
    assert_false(cmp_holds(f, CMPV("a", "", GREATER, "2")));
    assert_true(cmp_holds(f, CMPV("a", "", LESS, "3")));
    assert_true(cmp_holds(f, CMPV("a", "", LESS, "2\0")));
    assert_false(cmp_holds(f, CMPV("a", "", LESS, "2")));
    assert_false(cmp_holds(f, CMPV("a", "", EQUAL, "")));
    assert_true(cmp_holds(f, CMPV("a", "", GREATER, "")));

    assert_true(cmp_holds(f, CMP("a", "", CREATE, EQUAL, 2)));
    assert_false(cmp_holds(f, CMP("a", "", CREATE, NOT_EQUAL, 2)));
    assert_true(cmp_holds(f, CMP("a", "", CREATE, GREATER, 1)));
    assert_false(cmp_holds(f, CMP("a", "", CREATE, GREATER, 2)));
    assert_true(cmp_holds(f, CMP("a", "", CREATE, LESS, 3)));

    assert_true(cmp_holds(f, CMP("a", "", MOD, EQUAL, 4)));
    assert_false(cmp_holds(f, CMP("a", "", MOD, EQUAL, 2)));
    assert_true(cmp_holds(f, CMP("a", "", MOD, GREATER, 3)));
    assert_false(cmp_holds(f, CMP("a", "", MOD, LESS, 4)));
    assert_true(cmp_holds(f, CMP("a", "", MOD, LESS, 5)));

    assert_true(cmp_holds(f, CMP("a", "", VERSION, EQUAL, 2)));
    assert_true(cmp_holds(f, CMP("a", "", VERSION, NOT_EQUAL, 0)));
    assert_true(cmp_holds(f, CMP("a", "", VERSION, GREATER, 1)));
    assert_false(cmp_holds(f, CMP("a", "", VERSION, GREATER, 2)));
    assert_true(cmp_holds(f, CMP("a", "", VERSION, LESS, 3)));

    assert_true(cmp_holds(f, CMP("a", "", LEASE, EQUAL, 0)));
    assert_false(cmp_holds(f, CMP("a", "", LEASE, GREATER, 0)));
    assert_true(cmp_holds(f, CMP("a", "", LEASE, LESS, 1)));
    assert_true(cmp_holds(f, CMP("a", "", LEASE, NOT_EQUAL, 5)));

    /* a union not matching the target compares against 0 / "" */
    Etcdserverpb__Compare *c = CMP("a", "", VERSION, GREATER, 0);
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
    c->mod_revision = 100;
    assert_true(cmp_holds(f, c));
    c = CMPV("a", "", GREATER, "9");
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION__NOT_SET;
    assert_true(cmp_holds(f, c));
    c = CMP("a", "", MOD, EQUAL, 0);
    c->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION__NOT_SET;
    c->mod_revision = 4;
    assert_false(cmp_holds(f, c));
}

static void test_compare_missing_key(void **state)
{
    struct fx *f = *state;
    PUT("gone", "1");
    DEL("gone", "");
    static const char *keys[] = {"missing", "gone"};
    for (int i = 0; i < 2; i++) {
        ProtobufCBinaryData k = bs(keys[i]);
        ProtobufCBinaryData none = NOEND;
        /* a missing key compares as a zero KeyValue ... */
        assert_true(cmp_holds(f, cmp_int(f, k, none, T_VERSION, R_EQUAL, 0)));
        assert_true(cmp_holds(f, cmp_int(f, k, none, T_CREATE, R_EQUAL, 0)));
        assert_true(cmp_holds(f, cmp_int(f, k, none, T_MOD, R_EQUAL, 0)));
        assert_true(cmp_holds(f, cmp_int(f, k, none, T_MOD, R_LESS, 1)));
        assert_true(cmp_holds(f, cmp_int(f, k, none, T_LEASE, R_EQUAL, 0)));
        assert_false(cmp_holds(f, cmp_int(f, k, none, T_VERSION, R_GREATER, 0)));
        assert_false(cmp_holds(f, cmp_int(f, k, none, T_CREATE, R_NOT_EQUAL, 0)));
        /* ... but any value compare on it fails */
        assert_false(cmp_holds(f, cmp_val(f, k, none, R_EQUAL, B(""))));
        assert_false(cmp_holds(f, cmp_val(f, k, none, R_NOT_EQUAL, B("x"))));
        assert_false(cmp_holds(f, cmp_val(f, k, none, R_LESS, B("x"))));
        assert_false(cmp_holds(f, cmp_val(f, k, none, R_GREATER, B(""))));
    }
}

static void test_compare_ranges(void **state)
{
    struct fx *f = *state;
    PUT("r1", "x"); /* 2 */
    PUT("r2", "x"); /* 3 */
    PUT("r2", "y"); /* 4 */
    PUT("r3", "x"); /* 5 */
    PUT("s", "x");  /* 6 */

    /* every key in [r1, r4) must satisfy it */
    assert_true(cmp_holds(f, CMP("r1", "r4", VERSION, GREATER, 0)));
    assert_false(cmp_holds(f, CMP("r1", "r4", VERSION, EQUAL, 1)));
    assert_true(cmp_holds(f, CMP("r1", "r4", VERSION, LESS, 3)));
    assert_true(cmp_holds(f, CMP("r1", "r2", VERSION, EQUAL, 1))); /* just r1 */
    assert_true(cmp_holds(f, CMP("r3", "r4", VERSION, EQUAL, 1)));
    assert_false(cmp_holds(f, CMPV("r1", "r4", EQUAL, "x")));
    assert_true(cmp_holds(f, CMPV("r1", "r4", LESS, "z")));
    assert_true(cmp_holds(f, CMP("r1", "r4", MOD, LESS, 6)));
    assert_false(cmp_holds(f, CMP("r1", "r4", MOD, LESS, 5)));
    assert_true(cmp_holds(f, CMP("r1", "r4", CREATE, LESS, 6)));
    /* range_end "\0": from the key on */
    assert_true(cmp_holds(f, CMP("r3", "\0", VERSION, EQUAL, 1)));
    assert_false(cmp_holds(f, CMP("r2", "\0", VERSION, EQUAL, 1)));
    assert_true(cmp_holds(f, CMP("r2", "\0", CREATE, GREATER, 2)));
    assert_false(cmp_holds(f, CMP("\0", "\0", CREATE, GREATER, 2)));
    /* an empty range compares as one missing key */
    assert_true(cmp_holds(f, CMP("t", "u", VERSION, EQUAL, 0)));
    assert_true(cmp_holds(f, CMP("t", "\0", CREATE, EQUAL, 0)));
    assert_false(cmp_holds(f, CMPV("t", "u", EQUAL, "")));
    assert_false(cmp_holds(f, CMP("t", "u", VERSION, GREATER, 0)));
    /* deleted keys are not in the range */
    DEL("r2", "");
    assert_true(cmp_holds(f, CMP("r1", "r4", VERSION, EQUAL, 1)));
    assert_true(cmp_holds(f, CMPV("r1", "r4", EQUAL, "x")));
}

static void test_compare_conjunction(void **state)
{
    struct fx *f = *state;
    PUT("a", "1");
    PUT("b", "2");
    Etcdserverpb__Compare *ta = CMPV("a", "", EQUAL, "1");
    Etcdserverpb__Compare *tb = CMPV("b", "", EQUAL, "2");
    Etcdserverpb__Compare *fb = CMPV("b", "", EQUAL, "1");
    assert_true(run(f, TXN(CMPS(ta, tb), NULL, NULL))->succeeded);
    assert_false(run(f, TXN(CMPS(ta, fb), NULL, NULL))->succeeded);
    assert_false(run(f, TXN(CMPS(fb, ta), NULL, NULL))->succeeded);
    assert_true(run(f, TXN(CMPS(ta, ta, tb), NULL, NULL))->succeeded);
    /* no compares: success */
    assert_true(run(f, TXN(NULL, NULL, NULL))->succeeded);
}

/* ---- apply ---- */

static void test_txn_branches(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r;
    PUT("a", "1"); /* 2 */

    r = run(f, TXN(CMPS(CMPV("a", "", EQUAL, "1")), OPS(PUTOP("s", "1")),
                   OPS(PUTOP("f", "1"), PUTOP("g", "1"))));
    assert_true(r->succeeded);
    assert_int_equal(r->n_responses, 1);
    assert_int_equal(r->responses[0]->response_case, RESP_PUT);
    assert_int_equal(r->responses[0]->response_put->header->revision, 3);
    assert_int_equal(r->header->revision, 3);

    r = run(f, TXN(CMPS(CMPV("a", "", EQUAL, "2")), OPS(PUTOP("s", "2")),
                   OPS(PUTOP("f", "1"), PUTOP("g", "1"))));
    assert_false(r->succeeded);
    assert_int_equal(r->n_responses, 2);
    assert_int_equal(r->header->revision, 4);
    assert_string_equal(snapshot(f, 0),
                        "a=1:2/2/1 f=1:4/4/1 g=1:4/4/1 s=1:3/3/1");

    /* a failing compare with an empty failure branch changes nothing */
    r = run(f, TXN(CMPS(CMPV("a", "", EQUAL, "2")), OPS(PUTOP("s", "3")), NULL));
    assert_false(r->succeeded);
    assert_int_equal(r->n_responses, 0);
    assert_int_equal(r->header->revision, 4);
    assert_int_equal(cur_rev_of(f), 4);
}

static void test_txn_one_revision(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r;
    Etcdserverpb__RangeResponse *rr;
    Etcdserverpb__RequestOp *pp;
    Etcdserverpb__PutRequest p;

    PUT("a", "1"); /* 2 */
    PUT("d", "1"); /* 3 */
    etcdserverpb__put_request__init(&p);
    p.key = B("a");
    p.value = B("2");
    p.prev_kv = 1;
    pp = op_put_req(f, &p);
    r = run(f, TXN(NULL,
                   OPS(RANGEOP("a", "\0"), pp, PUTOP("b", "1"),
                       op_del(f, B("d"), NOEND, 1), RANGEOP("a", "\0"),
                       DELOP("zz", "")),
                   NULL));
    assert_true(r->succeeded);
    assert_int_equal(r->header->revision, 4);
    assert_int_equal(r->n_responses, 6);
    /* a read before the txn's first change sees the revision before it */
    assert_int_equal(r->responses[0]->response_case, RESP_RANGE);
    rr = r->responses[0]->response_range;
    assert_string_equal(KVS(rr), "a=1:2/2/1 d=1:3/3/1");
    assert_int_equal(rr->header->revision, 3);
    assert_int_equal(r->responses[1]->response_case, RESP_PUT);
    assert_int_equal(r->responses[1]->response_put->header->revision, 4);
    assert_string_equal(dump_kvs(f, &r->responses[1]->response_put->prev_kv, 1),
                        "a=1:2/2/1");
    assert_int_equal(r->responses[2]->response_put->header->revision, 4);
    assert_int_equal(r->responses[3]->response_case, RESP_DEL);
    Etcdserverpb__DeleteRangeResponse *dr = r->responses[3]->response_delete_range;
    assert_int_equal(dr->deleted, 1);
    assert_int_equal(dr->header->revision, 4);
    assert_string_equal(dump_kvs(f, dr->prev_kvs, dr->n_prev_kvs), "d=1:3/3/1");
    /* a read after them sees the txn's own changes */
    rr = r->responses[4]->response_range;
    assert_string_equal(KVS(rr), "a=2:2/4/2 b=1:4/4/1");
    assert_int_equal(rr->header->revision, 4);
    assert_int_equal(rr->count, 2);
    /* a no-op delete after changes reports the txn's revision */
    dr = r->responses[5]->response_delete_range;
    assert_int_equal(dr->deleted, 0);
    assert_int_equal(dr->header->revision, 4);

    assert_int_equal(cur_rev_of(f), 4);
    assert_string_equal(snapshot(f, 3), "a=1:2/2/1 d=1:3/3/1");
    assert_string_equal(snapshot(f, 4), "a=2:2/4/2 b=1:4/4/1");
    assert_int_equal(PUT("c", "1"), 5);
}

static void test_txn_no_change(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r;
    PUT("a", "1"); /* 2 */
    /* read-only */
    r = run(f, TXN(NULL, OPS(RANGEOP("a", ""), RANGEOP("zz", "")), NULL));
    assert_int_equal(r->header->revision, 2);
    assert_int_equal(r->responses[0]->response_range->header->revision, 2);
    assert_int_equal(r->responses[0]->response_range->count, 1);
    assert_int_equal(r->responses[1]->response_range->count, 0);
    /* a write txn changing nothing takes no revision */
    r = run(f, TXN(NULL, OPS(DELOP("zz", "")), NULL));
    assert_int_equal(r->header->revision, 2);
    assert_int_equal(r->responses[0]->response_delete_range->header->revision, 2);
    r = run(f, TXN(NULL, NULL, NULL));
    assert_true(r->succeeded);
    assert_int_equal(r->header->revision, 2);
    assert_int_equal(cur_rev_of(f), 2);
    assert_int_equal(PUT("b", "1"), 3);
}

static void test_txn_range_options(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r;
    PUT("a", "1"); /* 2 */
    PUT("b", "2"); /* 3 */
    PUT("c", "3"); /* 4 */
    Etcdserverpb__RequestOp *lim = RANGEOP("a", "\0");
    lim->request_range->limit = 1;
    lim->request_range->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    Etcdserverpb__RequestOp *hist = op_range(f, B("a"), B("\0"), 3);
    Etcdserverpb__RequestOp *cnt = RANGEOP("a", "\0");
    cnt->request_range->count_only = 1;
    r = run(f, TXN(NULL, OPS(lim, hist, cnt, PUTOP("d", "4"), RANGEOP("a", "\0")),
                   NULL));
    Etcdserverpb__RangeResponse *rr = r->responses[0]->response_range;
    assert_string_equal(KEYS(rr), "c");
    assert_true(rr->more);
    assert_int_equal(rr->count, 3);
    rr = r->responses[1]->response_range;
    assert_string_equal(KEYS(rr), "a,b");
    assert_int_equal(rr->header->revision, 4);
    rr = r->responses[2]->response_range;
    assert_int_equal(rr->n_kvs, 0);
    assert_int_equal(rr->count, 3);
    rr = r->responses[4]->response_range;
    assert_int_equal(rr->count, 4);
    assert_int_equal(rr->header->revision, 5);
}

static void test_txn_nested(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r, *in;
    PUT("a", "old"); /* 2 */

    /* The inner compare is evaluated before the outer put: it sees "old". */
    Etcdserverpb__TxnRequest *inner =
        TXN(CMPS(CMPV("a", "", EQUAL, "old")), OPS(RANGEOP("a", "")),
            OPS(PUTOP("wrong", "1")));
    r = run(f, TXN(CMPS(CMPV("a", "", EQUAL, "old")),
                   OPS(PUTOP("a", "new"), TXNOP(inner), RANGEOP("a", "")), NULL));
    assert_true(r->succeeded);
    assert_int_equal(r->header->revision, 3);
    assert_int_equal(r->n_responses, 3);
    assert_int_equal(r->responses[1]->response_case, RESP_TXN);
    in = r->responses[1]->response_txn;
    assert_true(in->succeeded);
    /* inner txn headers carry no revision */
    assert_non_null(in->header);
    assert_int_equal(in->header->revision, 0);
    assert_int_equal(in->n_responses, 1);
    /* but an inner range reports the revision it saw */
    assert_string_equal(KVS(in->responses[0]->response_range), "a=new:2/3/2");
    assert_int_equal(in->responses[0]->response_range->header->revision, 3);
    assert_string_equal(KVS(r->responses[2]->response_range), "a=new:2/3/2");
    assert_int_equal(RANGE("wrong", "")->count, 0);

    /* Several nested txns, several levels: each takes its own branch. */
    Etcdserverpb__TxnRequest *t2 =
        TXN(CMPS(CMP("a", "", VERSION, EQUAL, 2)), OPS(PUTOP("p2", "s")),
            OPS(PUTOP("p2", "f")));
    Etcdserverpb__TxnRequest *t1 =
        TXN(CMPS(CMP("a", "", VERSION, EQUAL, 7)), OPS(PUTOP("p1", "s")),
            OPS(PUTOP("p1", "f"), TXNOP(t2)));
    Etcdserverpb__TxnRequest *t3 =
        TXN(CMPS(CMP("zz", "", VERSION, EQUAL, 0)), OPS(PUTOP("p3", "s")),
            OPS(PUTOP("p3", "f")));
    Etcdserverpb__TxnRequest *t4 =
        TXN(CMPS(CMP("zz", "", VERSION, EQUAL, 1)), OPS(PUTOP("p4", "s")),
            OPS(TXNOP(TXN(NULL, OPS(PUTOP("p5", "s")), NULL))));
    r = run(f, TXN(CMPS(CMP("a", "", MOD, EQUAL, 3)),
                   OPS(TXNOP(t1), TXNOP(t3), TXNOP(t4)), OPS(PUTOP("x", "f"))));
    assert_true(r->succeeded);
    assert_int_equal(r->header->revision, 4);
    assert_int_equal(r->n_responses, 3);
    in = r->responses[0]->response_txn;
    assert_false(in->succeeded);
    assert_int_equal(in->n_responses, 2);
    assert_int_equal(in->responses[0]->response_case, RESP_PUT);
    assert_int_equal(in->responses[0]->response_put->header->revision, 4);
    assert_int_equal(in->responses[1]->response_case, RESP_TXN);
    assert_true(in->responses[1]->response_txn->succeeded);
    assert_int_equal(in->responses[1]->response_txn->header->revision, 0);
    in = r->responses[1]->response_txn;
    assert_true(in->succeeded);
    in = r->responses[2]->response_txn;
    assert_false(in->succeeded);
    assert_int_equal(in->n_responses, 1);
    assert_true(in->responses[0]->response_txn->succeeded);
    assert_int_equal(in->responses[0]->response_txn->n_responses, 1);
    assert_string_equal(KVS(RANGE("p", "q")),
                        "p1=f:4/4/1 p2=s:4/4/1 p3=s:4/4/1 p5=s:4/4/1");
    assert_int_equal(RANGE("x", "")->count, 0);
}

static void test_txn_nested_sees_outer_changes(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r;
    /* ops of a nested txn run in order with the outer ones */
    Etcdserverpb__TxnRequest *inner =
        TXN(NULL, OPS(RANGEOP("k", ""), PUTOP("j", "1")), NULL);
    r = run(f, TXN(NULL, OPS(PUTOP("k", "1"), TXNOP(inner), RANGEOP("j", "")), NULL));
    Etcdserverpb__TxnResponse *in = r->responses[1]->response_txn;
    assert_string_equal(KVS(in->responses[0]->response_range), "k=1:2/2/1");
    assert_int_equal(in->responses[1]->response_put->header->revision, 2);
    assert_string_equal(KVS(r->responses[2]->response_range), "j=1:2/2/1");
    assert_int_equal(r->header->revision, 2);
    assert_int_equal(cur_rev_of(f), 2);
}

static void test_txn_errors(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__TxnResponse *r = NULL;
    Etcdserverpb__PutRequest p;

    PUT("a", "1"); /* 2 */
    PUT("a", "2"); /* 3 */
    PUT("a", "3"); /* 4 */

    /* a lease on the path taken: nothing happens */
    etcdserverpb__put_request__init(&p);
    p.key = B("l");
    p.value = B("v");
    p.lease = 99;
    Etcdserverpb__RequestOp *leased = op_put_req(f, &p);
    assert_int_equal(do_txn(f, TXN(NULL, OPS(PUTOP("b", "1"), leased), NULL), &r),
                     CAIRN_ELEASENOTFOUND);
    assert_int_equal(cur_rev_of(f), 4);
    assert_int_equal(RANGE("b", "")->count, 0);
    /* nested, on the path */
    assert_int_equal(
        do_txn(f, TXN(NULL, OPS(PUTOP("b", "1"), TXNOP(TXN(NULL, OPS(leased), NULL))),
                      NULL),
               &r),
        CAIRN_ELEASENOTFOUND);
    /* off the path: fine */
    r = run(f, TXN(NULL, OPS(PUTOP("b", "1")), OPS(leased)));
    assert_true(r->succeeded);
    assert_int_equal(cur_rev_of(f), 5);
    r = run(f, TXN(NULL,
                   OPS(TXNOP(TXN(CMPS(CMP("a", "", VERSION, EQUAL, 3)),
                                 OPS(PUTOP("c", "1")), OPS(leased)))),
                   NULL));
    assert_int_equal(cur_rev_of(f), 6);

    /* ignore_value / ignore_lease on a missing key */
    etcdserverpb__put_request__init(&p);
    p.key = B("missing");
    p.ignore_value = 1;
    assert_int_equal(do_txn(f, TXN(NULL, OPS(PUTOP("d", "1"), op_put_req(f, &p)),
                                   NULL),
                            &r),
                     CAIRN_EKEYNOTFOUND);
    p.ignore_value = 0;
    p.ignore_lease = 1;
    assert_int_equal(do_txn(f, TXN(NULL, NULL, OPS(op_put_req(f, &p))), &r), 0);
    assert_int_equal(do_txn(f, TXN(CMPS(CMP("a", "", VERSION, EQUAL, 0)), NULL,
                                   OPS(op_put_req(f, &p))),
                            &r),
                     CAIRN_EKEYNOTFOUND);
    /* ... on an existing one it keeps value / lease */
    p.key = B("a");
    p.ignore_lease = 0;
    p.ignore_value = 1;
    r = run(f, TXN(NULL, OPS(op_put_req(f, &p)), NULL));
    assert_string_equal(KVS(RANGE("a", "")), "a=3:2/7/4");
    assert_int_equal(cur_rev_of(f), 7);

    /* range revisions: future, current, past */
    assert_int_equal(do_txn(f, TXN(NULL, OPS(op_range(f, B("a"), NOEND, 8)), NULL), &r),
                     CAIRN_EFUTUREREV);
    /* the txn's own new revision is still a future one (checked before) */
    assert_int_equal(do_txn(f, TXN(NULL, OPS(PUTOP("e", "1"),
                                             op_range(f, B("e"), NOEND, 8)),
                                   NULL),
                            &r),
                     CAIRN_EFUTUREREV);
    assert_int_equal(cur_rev_of(f), 7);
    r = run(f, TXN(NULL, OPS(op_range(f, B("a"), NOEND, 7)), NULL));
    assert_string_equal(KVS(r->responses[0]->response_range), "a=3:2/7/4");
    r = run(f, TXN(NULL, OPS(op_range(f, B("a"), NOEND, 2)), NULL));
    assert_string_equal(KVS(r->responses[0]->response_range), "a=1:2/2/1");
    assert_int_equal(r->responses[0]->response_range->header->revision, 7);

    /* compacted */
    struct mvcc_txn t;
    Etcdserverpb__CompactionRequest cr;
    Etcdserverpb__CompactionResponse cresp;
    etcdserverpb__compaction_request__init(&cr);
    cr.revision = 4;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_compact(&t, &cr, &cresp, &f->a), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
    assert_int_equal(do_txn(f, TXN(NULL, OPS(op_range(f, B("a"), NOEND, 3)), NULL), &r),
                     CAIRN_ECOMPACTED);
    assert_int_equal(do_txn(f, TXN(NULL, OPS(PUTOP("e", "1"),
                                             op_range(f, B("a"), NOEND, 3)),
                                   NULL),
                            &r),
                     CAIRN_ECOMPACTED);
    r = run(f, TXN(NULL, OPS(op_range(f, B("a"), NOEND, 4)), NULL));
    assert_string_equal(KVS(r->responses[0]->response_range), "a=3:2/4/3");
    /* off the path: not checked */
    r = run(f, TXN(NULL, OPS(PUTOP("e", "1")), OPS(op_range(f, B("a"), NOEND, 3))));
    assert_int_equal(r->header->revision, 8);
    assert_int_equal(cur_rev_of(f), 8);
}

static void test_txn_compare_after_delete_in_same_batch(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    Etcdserverpb__TxnResponse resp;
    Etcdserverpb__DeleteRangeRequest d;
    Etcdserverpb__DeleteRangeResponse dr;

    /* In a group commit, a txn's compares see the commands before it. */
    PUT("a", "1"); /* 2 */
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    etcdserverpb__delete_range_request__init(&d);
    d.key = B("a");
    assert_int_equal(mvcc_delete_range(&t, &d, &f->a, &dr), 0);
    mvcc_cmd_end(&t); /* 3 */
    Etcdserverpb__TxnRequest *tx =
        TXN(CMPS(CMP("a", "", VERSION, EQUAL, 0)), OPS(PUTOP("a", "2")),
            OPS(PUTOP("x", "1")));
    assert_int_equal(mvcc_txn(&t, tx, &f->a, &resp), 0);
    assert_true(resp.succeeded);
    assert_int_equal(resp.header->revision, 4);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    assert_string_equal(snapshot(f, 0), "a=2:4/4/1");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, fx_setup, fx_teardown)
        T(test_check_counts),
        T(test_check_ops),
        T(test_check_duplicates),
        T(test_is_write),
        T(test_compare_targets),
        T(test_compare_missing_key),
        T(test_compare_ranges),
        T(test_compare_conjunction),
        T(test_txn_branches),
        T(test_txn_one_revision),
        T(test_txn_no_change),
        T(test_txn_range_options),
        T(test_txn_nested),
        T(test_txn_nested_sees_outer_changes),
        T(test_txn_errors),
        T(test_txn_compare_after_delete_in_same_batch),
#undef T
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
