/* Request validation before the write path, as etcd's v3rpc/key.go
 * (checkRangeRequest, checkPutRequest, checkTxnRequest, checkIntervals). */
#include <string.h>

#include "core/arena.h"
#include "core/err.h"
#include "mvcc/mvcc.h"

int mvcc_check_range(const Etcdserverpb__RangeRequest *r)
{
    if (r->key.len == 0)
        return CAIRN_EEMPTYKEY;
    /* etcd 3.5+: enum values outside the protocol are refused. */
    if (r->sort_order < 0 || r->sort_order > 2 || r->sort_target < 0 ||
        r->sort_target > 4)
        return CAIRN_EBADSORT;
    return 0;
}

int mvcc_check_put(const Etcdserverpb__PutRequest *r)
{
    if (r->key.len == 0)
        return CAIRN_EEMPTYKEY;
    if (r->key.len > MVCC_MAX_KEY)
        return CAIRN_ETOOLARGE;
    if (r->ignore_value && r->value.len != 0)
        return CAIRN_EVALUEPROVIDED;
    if (r->ignore_lease && r->lease != 0)
        return CAIRN_ELEASEPROVIDED;
    return 0;
}

int mvcc_check_delete(const Etcdserverpb__DeleteRangeRequest *r)
{
    return r->key.len == 0 ? CAIRN_EEMPTYKEY : 0;
}

static int check_txn_ops(const Etcdserverpb__TxnRequest *r, int max_ops);

static int check_op(const Etcdserverpb__RequestOp *u, int max_ops)
{
    switch (u->request_case) {
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
        return u->request_range ? mvcc_check_range(u->request_range)
                                : CAIRN_EEMPTYKEY;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
        return u->request_put ? mvcc_check_put(u->request_put)
                              : CAIRN_EEMPTYKEY;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
        return u->request_delete_range
                   ? mvcc_check_delete(u->request_delete_range)
                   : CAIRN_EEMPTYKEY;
    case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
        return u->request_txn ? check_txn_ops(u->request_txn, max_ops) : 0;
    default:
        return CAIRN_EKEYNOTFOUND; /* empty op */
    }
}

/* ---- duplicate-key intervals (checkIntervals) ---- */

/* etcd compares interval ends as "affine" strings: "" is above all. */
static int affine_cmp(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    if (a.len == 0)
        return b.len == 0 ? 0 : 1;
    if (b.len == 0)
        return -1;
    size_t n = a.len < b.len ? a.len : b.len;
    int c = memcmp(a.data, b.data, n);
    if (c != 0)
        return c < 0 ? -1 : 1;
    return a.len < b.len ? -1 : a.len > b.len;
}

struct ival {
    ProtobufCBinaryData b, e;
};

struct ivset {
    struct ival *v;
    size_t n, cap;
};

struct keyset {
    ProtobufCBinaryData *v;
    size_t n, cap;
};

static void grow(struct arena *a, void **v, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap)
        return;
    size_t c = *cap ? *cap * 2 : 8;
    void *nv = arena_alloc(a, c * sz);
    if (n)
        memcpy(nv, *v, n * sz);
    *v = nv;
    *cap = c;
}

static void iv_add(struct arena *a, struct ivset *s, struct ival iv)
{
    grow(a, (void **)&s->v, &s->cap, s->n, sizeof *s->v);
    s->v[s->n++] = iv;
}

static int ks_has(const struct keyset *s, ProtobufCBinaryData k);

/* A set, as etcd's map: adding a present key changes nothing. */
static void ks_add(struct arena *a, struct keyset *s, ProtobufCBinaryData k)
{
    if (ks_has(s, k))
        return;
    grow(a, (void **)&s->v, &s->cap, s->n, sizeof *s->v);
    s->v[s->n++] = k;
}

static int ks_has(const struct keyset *s, ProtobufCBinaryData k)
{
    for (size_t i = 0; i < s->n; i++)
        if (s->v[i].len == k.len &&
            (k.len == 0 || memcmp(s->v[i].data, k.data, k.len) == 0))
            return 1;
    return 0;
}

/* Does the point interval [k, k+"\0") overlap any deletion (Interval.Compare
 * returns 0)? */
static int iv_hits(const struct ivset *s, ProtobufCBinaryData k,
                   struct arena *a)
{
    ProtobufCBinaryData ke;
    ke.len = k.len + 1;
    ke.data = arena_alloc(a, ke.len);
    memcpy(ke.data, k.data, k.len);
    ke.data[k.len] = 0;
    for (size_t i = 0; i < s->n; i++) {
        const struct ival *d = &s->v[i];
        /* An empty or inverted range (end <= begin, e.g. "\0" as the end
         * of a non-empty key) overlaps nothing in etcd's interval tree. */
        if (affine_cmp(d->e, d->b) <= 0)
            continue;
        int left = affine_cmp(d->b, k) < 0 && affine_cmp(d->e, k) <= 0;
        int right = affine_cmp(d->b, ke) >= 0;
        if (!left && !right)
            return 1;
    }
    return 0;
}

static int check_intervals(Etcdserverpb__RequestOp **reqs, size_t n,
                           struct arena *a, struct keyset *puts,
                           struct ivset *dels)
{
    memset(puts, 0, sizeof *puts);
    memset(dels, 0, sizeof *dels);
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__DeleteRangeRequest *d = reqs[i]->request_delete_range;
        if (reqs[i]->request_case !=
                ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE ||
            d == NULL)
            continue;
        struct ival iv = {d->key, d->range_end};
        if (d->range_end.len == 0) {
            iv.e.len = d->key.len + 1;
            iv.e.data = arena_alloc(a, iv.e.len);
            memcpy(iv.e.data, d->key.data, d->key.len);
            iv.e.data[d->key.len] = 0;
        }
        iv_add(a, dels, iv);
    }
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__TxnRequest *t = reqs[i]->request_txn;
        if (reqs[i]->request_case !=
                ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN ||
            t == NULL)
            continue;
        struct keyset pthen, pelse;
        struct ivset dthen, delse;
        int rc = check_intervals(t->success, t->n_success, a, &pthen, &dthen);
        if (rc == 0)
            rc = check_intervals(t->failure, t->n_failure, a, &pelse, &delse);
        if (rc != 0)
            return rc;
        for (size_t j = 0; j < pthen.n; j++) {
            if (ks_has(puts, pthen.v[j]) || iv_hits(dels, pthen.v[j], a))
                return CAIRN_EDUPKEY;
            ks_add(a, puts, pthen.v[j]);
        }
        for (size_t j = 0; j < pelse.n; j++) {
            /* then/else are exclusive: a key put in both is fine */
            if (ks_has(puts, pelse.v[j]) && !ks_has(&pthen, pelse.v[j]))
                return CAIRN_EDUPKEY;
            if (iv_hits(dels, pelse.v[j], a))
                return CAIRN_EDUPKEY;
            ks_add(a, puts, pelse.v[j]);
        }
        for (size_t j = 0; j < dthen.n; j++)
            iv_add(a, dels, dthen.v[j]);
        for (size_t j = 0; j < delse.n; j++)
            iv_add(a, dels, delse.v[j]);
    }
    for (size_t i = 0; i < n; i++) {
        const Etcdserverpb__PutRequest *p = reqs[i]->request_put;
        if (reqs[i]->request_case !=
                ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT ||
            p == NULL)
            continue;
        if (ks_has(puts, p->key) || iv_hits(dels, p->key, a))
            return CAIRN_EDUPKEY;
        ks_add(a, puts, p->key);
    }
    return 0;
}

static int check_txn_ops(const Etcdserverpb__TxnRequest *r, int max_ops)
{
    size_t opc = r->n_compare;
    if (opc < r->n_success)
        opc = r->n_success;
    if (opc < r->n_failure)
        opc = r->n_failure;
    if ((long)opc > max_ops)
        return CAIRN_ETOOMANYOPS;
    for (size_t i = 0; i < r->n_compare; i++)
        if (r->compare[i]->key.len == 0)
            return CAIRN_EEMPTYKEY;
    for (size_t i = 0; i < r->n_success; i++) {
        int rc = check_op(r->success[i], max_ops - (int)opc);
        if (rc != 0)
            return rc;
    }
    for (size_t i = 0; i < r->n_failure; i++) {
        int rc = check_op(r->failure[i], max_ops - (int)opc);
        if (rc != 0)
            return rc;
    }
    return 0;
}

int mvcc_check_txn(const Etcdserverpb__TxnRequest *r, int max_txn_ops)
{
    struct arena a;
    struct keyset puts;
    struct ivset dels;
    int rc = check_txn_ops(r, max_txn_ops);
    if (rc != 0)
        return rc;
    /* Overlaps are checked after the op counts, so that the quadratic part
     * only sees bounded requests (as etcd). */
    arena_init(&a);
    rc = check_intervals(r->success, r->n_success, &a, &puts, &dels);
    if (rc == 0)
        rc = check_intervals(r->failure, r->n_failure, &a, &puts, &dels);
    arena_free(&a);
    return rc;
}
