/* etcd's KV semantics over the MVCC store: Range, Put, DeleteRange, Txn and
 * Compact, following etcd 3.4's etcdserver/apply.go and mvcc/kvstore_txn.go
 * (the differential test against real etcd holds us to it). */
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "mvcc/mvcc_int.h"

/* The revision a read inside the current command sees: its own changes
 * become visible once it has made any (storeTxnWrite.Range). */
static int64_t cur_rev(const struct mvcc_txn *t)
{
    return t->rev + (t->changes > 0 ? 1 : 0);
}

static Etcdserverpb__ResponseHeader *new_header(struct arena *a, int64_t rev)
{
    Etcdserverpb__ResponseHeader *h = arena_alloc(a, sizeof *h);
    etcdserverpb__response_header__init(h);
    h->revision = rev;
    return h;
}

/* etcd's mkGteRange: a range_end of "\0" means "no upper bound". Returns
 * whether an end was given at all (no end = a single key). */
static int range_end(ProtobufCBinaryData e, const uint8_t **end, size_t *elen)
{
    *end = e.data;
    *elen = e.len;
    if (e.len == 1 && e.data[0] == 0)
        *elen = 0;
    return e.len > 0;
}

/* ---- Range ---- */

struct range_ctx {
    struct mvcc_txn *t;
    struct arena *a;
    Mvccpb__KeyValue **kvs;
    size_t n, cap;
    int64_t fetch; /* 0 = all */
    int64_t count;
    int count_only;
    int rc;
};

static int range_visit(void *ud, MDB_val *key, struct mvcc_rev rev)
{
    struct range_ctx *c = ud;
    (void)key;
    c->count++;
    if (c->count_only || (c->fetch > 0 && (int64_t)c->n >= c->fetch))
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Mvccpb__KeyValue **kvs = arena_alloc(c->a, cap * sizeof *kvs);
        if (c->n)
            memcpy(kvs, c->kvs, c->n * sizeof *kvs);
        c->kvs = kvs;
        c->cap = cap;
    }
    Mvccpb__KeyValue *kv = arena_alloc(c->a, sizeof *kv);
    int rc = mvcc__record_get(c->t, rev, c->a, kv);
    if (rc != 0)
        return rc;
    c->kvs[c->n++] = kv;
    return 0;
}

/* Finds the KeyValues alive in the range at @rev (etcd's rangeKeys). */
static int range_keys(struct mvcc_txn *t, ProtobufCBinaryData key,
                      ProtobufCBinaryData end, int64_t rev, int64_t fetch,
                      int count_only, struct arena *a, struct range_ctx *c)
{
    const uint8_t *e;
    size_t elen;
    int given = range_end(end, &e, &elen);
    memset(c, 0, sizeof *c);
    c->t = t;
    c->a = a;
    c->fetch = fetch;
    c->count_only = count_only;
    return mvcc__index_visit(t, key.data, key.len, e, elen, given, rev,
                             range_visit, c);
}

static int cmp_bytes(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    size_t n = a.len < b.len ? a.len : b.len;
    int c = n ? memcmp(a.data, b.data, n) : 0;
    if (c != 0)
        return c;
    return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_i64(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

struct sort_item {
    Mvccpb__KeyValue *kv;
    size_t pos;
};
/* qsort has no context argument; each thread sorts with its own. */
static __thread int tl_sort_target, tl_sort_desc;

static int sort_cmp(const void *pa, const void *pb)
{
    const struct sort_item *x = pa, *y = pb;
    int c = 0;
    switch (tl_sort_target) {
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY:
        c = cmp_bytes(x->kv->key, y->kv->key);
        break;
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VERSION:
        c = cmp_i64(x->kv->version, y->kv->version);
        break;
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE:
        c = cmp_i64(x->kv->create_revision, y->kv->create_revision);
        break;
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD:
        c = cmp_i64(x->kv->mod_revision, y->kv->mod_revision);
        break;
    case ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__VALUE:
        c = cmp_bytes(x->kv->value, y->kv->value);
        break;
    }
    if (tl_sort_desc)
        c = -c;
    /* Ties keep key order: the sort is stable. */
    return c != 0 ? c : cmp_i64((int64_t)x->pos, (int64_t)y->pos);
}

static void sort_kvs(Mvccpb__KeyValue **kvs, size_t n, int target, int desc,
                     struct arena *a)
{
    struct sort_item *items = arena_alloc(a, n * sizeof *items + 1);
    for (size_t i = 0; i < n; i++) {
        items[i].kv = kvs[i];
        items[i].pos = i;
    }
    tl_sort_target = target;
    tl_sort_desc = desc;
    qsort(items, n, sizeof *items, sort_cmp);
    for (size_t i = 0; i < n; i++)
        kvs[i] = items[i].kv;
}

static int check_rev(const struct mvcc_txn *t, int64_t *rev)
{
    int64_t cur = cur_rev(t);
    if (*rev > cur)
        return CAIRN_EFUTUREREV;
    if (*rev <= 0)
        *rev = cur;
    if (*rev < t->compact_rev)
        return CAIRN_ECOMPACTED;
    return 0;
}

int mvcc_range(struct mvcc_txn *t, const Etcdserverpb__RangeRequest *r,
               struct arena *a, Etcdserverpb__RangeResponse *resp)
{
    struct range_ctx c;
    int64_t rev = r->revision, fetch = r->limit;
    int order = r->sort_order;
    int rc;

    etcdserverpb__range_response__init(resp);
    if ((rc = check_rev(t, &rev)) != 0)
        return rc;
    if (order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE ||
        r->min_mod_revision || r->max_mod_revision ||
        r->min_create_revision || r->max_create_revision)
        fetch = 0; /* fetch everything; filter and sort afterwards */
    if (fetch > 0)
        fetch++; /* one extra for 'more' */
    rc = range_keys(t, r->key, r->range_end, rev, fetch, r->count_only, a, &c);
    if (rc != 0)
        return rc;

    size_t j = 0;
    for (size_t i = 0; i < c.n; i++) {
        Mvccpb__KeyValue *kv = c.kvs[i];
        if ((r->max_mod_revision && kv->mod_revision > r->max_mod_revision) ||
            (r->min_mod_revision && kv->mod_revision < r->min_mod_revision) ||
            (r->max_create_revision &&
             kv->create_revision > r->max_create_revision) ||
            (r->min_create_revision &&
             kv->create_revision < r->min_create_revision))
            continue;
        c.kvs[j++] = kv;
    }
    c.n = j;

    if (r->sort_target != ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
        order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE)
        order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    if (order != ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE && c.n > 1)
        sort_kvs(c.kvs, c.n, r->sort_target,
                 order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND, a);
    if (r->limit > 0 && (int64_t)c.n > r->limit) {
        c.n = (size_t)r->limit;
        resp->more = 1;
    }
    if (r->keys_only) {
        for (size_t i = 0; i < c.n; i++) {
            Mvccpb__KeyValue *kv = arena_alloc(a, sizeof *kv);
            *kv = *c.kvs[i];
            kv->value.data = NULL;
            kv->value.len = 0;
            c.kvs[i] = kv;
        }
    }
    resp->header = new_header(a, cur_rev(t));
    resp->count = c.count;
    resp->kvs = c.kvs;
    resp->n_kvs = c.n;
    return 0;
}

/* ---- Put ---- */

static int get_latest(struct mvcc_txn *t, ProtobufCBinaryData key,
                      struct arena *a, Mvccpb__KeyValue **out)
{
    struct mvcc_rev r;
    *out = NULL;
    int rc = mvcc__index_get(t, key.data, key.len, cur_rev(t), &r);
    if (rc == MDB_NOTFOUND || (rc == 0 && r.tomb))
        return 0;
    if (rc != 0)
        return mvcc__err(rc);
    Mvccpb__KeyValue *kv = arena_alloc(a, sizeof *kv);
    rc = mvcc__record_get(t, r, a, kv);
    if (rc != 0)
        return rc;
    *out = kv;
    return 0;
}

static int put_apply(struct mvcc_txn *t, const Etcdserverpb__PutRequest *r,
                     struct arena *a, Etcdserverpb__PutResponse *resp)
{
    Mvccpb__KeyValue *prev = NULL, kv;
    struct mvcc_rev pr;
    int rc, exists;

    etcdserverpb__put_response__init(resp);
    /* The index entry has the version, create revision and lease: the old
     * record is read only when its value is needed. */
    rc = mvcc__index_get(t, r->key.data, r->key.len, cur_rev(t), &pr);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    exists = rc == 0 && !pr.tomb;
    if ((r->ignore_value || r->ignore_lease) && !exists)
        return CAIRN_EKEYNOTFOUND;
    if (exists && (r->prev_kv || r->ignore_value)) {
        prev = arena_alloc(a, sizeof *prev);
        if ((rc = mvcc__record_get(t, pr, a, prev)) != 0)
            return rc;
    }
    mvccpb__key_value__init(&kv);
    kv.key = r->key;
    kv.value = r->ignore_value ? prev->value : r->value;
    kv.lease = r->ignore_lease ? pr.lease : r->lease;
    kv.mod_revision = t->rev + 1;
    kv.create_revision = exists ? pr.create : kv.mod_revision;
    kv.version = exists ? pr.version + 1 : 1;
    if (r->prev_kv && prev != NULL) {
        /* The record may move once we write: keep a copy. */
        Mvccpb__KeyValue *p = arena_memdup(a, prev, sizeof *prev);
        p->key.data = arena_memdup(a, prev->key.data, prev->key.len);
        p->value.data = arena_memdup(a, prev->value.data, prev->value.len);
        resp->prev_kv = p;
    }
    if (r->ignore_value) /* the old value moves too */
        kv.value.data = arena_memdup(a, kv.value.data, kv.value.len);
    rc = mvcc__record_put(t, &kv, 0, a);
    if (rc == 0)
        rc = mvcc__lease_move(t, kv.key.data, kv.key.len, exists ? pr.lease : 0,
                              kv.lease);
    if (rc != 0)
        return rc;
    resp->header = new_header(a, t->rev + 1);
    return 0;
}

int mvcc_put(struct mvcc_txn *t, const Etcdserverpb__PutRequest *r,
             struct arena *a, Etcdserverpb__PutResponse *resp)
{
    if (r->lease != 0 && !mvcc_lease_exists(t, r->lease))
        return CAIRN_ELEASENOTFOUND;
    return put_apply(t, r, a, resp);
}

/* ---- DeleteRange ---- */

struct key_list {
    struct arena *a;
    ProtobufCBinaryData *keys;
    struct mvcc_rev *revs;
    size_t n, cap;
};

static int collect_key(void *ud, MDB_val *key, struct mvcc_rev rev)
{
    struct key_list *l = ud;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        ProtobufCBinaryData *k = arena_alloc(l->a, cap * sizeof *k);
        struct mvcc_rev *r = arena_alloc(l->a, cap * sizeof *r);
        if (l->n) {
            memcpy(k, l->keys, l->n * sizeof *k);
            memcpy(r, l->revs, l->n * sizeof *r);
        }
        l->keys = k;
        l->revs = r;
        l->cap = cap;
    }
    l->keys[l->n].len = key->mv_size;
    l->keys[l->n].data = arena_memdup(l->a, key->mv_data, key->mv_size);
    l->revs[l->n] = rev;
    l->n++;
    return 0;
}

int mvcc__delete_key(struct mvcc_txn *t, ProtobufCBinaryData key,
                     struct mvcc_rev r, struct arena *a)
{
    Mvccpb__KeyValue kv;
    mvccpb__key_value__init(&kv);
    kv.key = key;
    kv.mod_revision = t->rev + 1;
    int rc = mvcc__record_put(t, &kv, 1, a);
    if (rc == 0)
        rc = mvcc__lease_move(t, key.data, key.len, r.lease, 0);
    return rc;
}

int mvcc_delete_range(struct mvcc_txn *t,
                      const Etcdserverpb__DeleteRangeRequest *r,
                      struct arena *a, Etcdserverpb__DeleteRangeResponse *resp)
{
    struct key_list l = {a, NULL, NULL, 0, 0};
    const uint8_t *e;
    size_t elen;
    int given = range_end(r->range_end, &e, &elen);
    int rc;

    etcdserverpb__delete_range_response__init(resp);
    rc = mvcc__index_visit(t, r->key.data, r->key.len, e, elen, given,
                           cur_rev(t), collect_key, &l);
    if (rc != 0)
        return rc;
    if (r->prev_kv) {
        resp->prev_kvs = arena_alloc(a, (l.n + 1) * sizeof *resp->prev_kvs);
        for (size_t i = 0; i < l.n; i++) {
            Mvccpb__KeyValue *kv;
            if ((rc = get_latest(t, l.keys[i], a, &kv)) != 0)
                return rc;
            Mvccpb__KeyValue *p = arena_memdup(a, kv, sizeof *kv);
            p->key = l.keys[i];
            p->value.data = arena_memdup(a, kv->value.data, kv->value.len);
            resp->prev_kvs[i] = p;
        }
        resp->n_prev_kvs = l.n;
    }
    for (size_t i = 0; i < l.n; i++)
        if ((rc = mvcc__delete_key(t, l.keys[i], l.revs[i], a)) != 0)
            return rc;
    resp->deleted = (int64_t)l.n;
    resp->header = new_header(a, t->changes > 0 ? t->rev + 1 : t->rev);
    return 0;
}

/* ---- Txn ---- */

static int compare_kv(const Etcdserverpb__Compare *c, const Mvccpb__KeyValue *kv)
{
    int res = 0;
    int64_t v = 0;
    static const ProtobufCBinaryData empty = {0, NULL};

    switch (c->target) {
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE:
        res = cmp_bytes(kv->value,
                        c->target_union_case ==
                                ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE
                            ? c->value
                            : empty);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE:
        if (c->target_union_case ==
            ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION)
            v = c->create_revision;
        res = cmp_i64(kv->create_revision, v);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD:
        if (c->target_union_case ==
            ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION)
            v = c->mod_revision;
        res = cmp_i64(kv->mod_revision, v);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION:
        if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION)
            v = c->version;
        res = cmp_i64(kv->version, v);
        break;
    case ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE:
        if (c->target_union_case == ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE)
            v = c->lease;
        res = cmp_i64(kv->lease, v);
        break;
    default:
        break;
    }
    switch (c->result) {
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL:
        return res == 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL:
        return res != 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER:
        return res > 0;
    case ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS:
        return res < 0;
    default:
        return 1;
    }
    return 1;
}

static int apply_compare(struct mvcc_txn *t, const Etcdserverpb__Compare *c,
                         struct arena *a, int *ok)
{
    struct range_ctx rc_;
    int rc = range_keys(t, c->key, c->range_end, cur_rev(t), 0, 0, a, &rc_);
    if (rc != 0)
        return rc;
    if (rc_.n == 0) {
        Mvccpb__KeyValue zero;
        mvccpb__key_value__init(&zero);
        /* A value compare on a missing key always fails. */
        *ok = c->target != ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE &&
              compare_kv(c, &zero);
        return 0;
    }
    for (size_t i = 0; i < rc_.n; i++) {
        if (!compare_kv(c, rc_.kvs[i])) {
            *ok = 0;
            return 0;
        }
    }
    *ok = 1;
    return 0;
}

static int txn_succeeds(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
                        struct arena *a, int *ok)
{
    *ok = 1;
    for (size_t i = 0; i < r->n_compare && *ok; i++) {
        int rc = apply_compare(t, r->compare[i], a, ok);
        if (rc != 0)
            return rc;
    }
    return 0;
}

/* Compares are all evaluated against the state before the txn (etcd's
 * compareToPath), so the path is fixed first: @path receives one flag per
 * txn on the chosen path, in pre-order. */
struct txn_path {
    int *v;
    size_t n, cap;
};

static int txn_path(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
                    struct arena *a, struct txn_path *p)
{
    int ok, rc = txn_succeeds(t, r, a, &ok);
    if (rc != 0)
        return rc;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 8;
        int *v = arena_alloc(a, cap * sizeof *v);
        if (p->n)
            memcpy(v, p->v, p->n * sizeof *v);
        p->v = v;
        p->cap = cap;
    }
    p->v[p->n++] = ok;
    size_t nops = ok ? r->n_success : r->n_failure;
    Etcdserverpb__RequestOp **ops = ok ? r->success : r->failure;
    for (size_t i = 0; i < nops; i++) {
        if (ops[i]->request_case ==
                ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN &&
            ops[i]->request_txn != NULL) {
            rc = txn_path(t, ops[i]->request_txn, a, p);
            if (rc != 0)
                return rc;
        }
    }
    return 0;
}

/* etcd's checkRequests with checkRequestPut then checkRequestRange: errors
 * a write txn would hit, found before anything is written. */
static int txn_check(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
                     const int *path, size_t *pi, int puts, struct arena *a)
{
    int ok = path[(*pi)++];
    size_t nops = ok ? r->n_success : r->n_failure;
    Etcdserverpb__RequestOp **ops = ok ? r->success : r->failure;
    for (size_t i = 0; i < nops; i++) {
        Etcdserverpb__RequestOp *op = ops[i];
        int rc = 0;
        switch (op->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
            if (op->request_txn)
                rc = txn_check(t, op->request_txn, path, pi, puts, a);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            if (puts && op->request_put) {
                const Etcdserverpb__PutRequest *p = op->request_put;
                if (p->ignore_value || p->ignore_lease) {
                    Mvccpb__KeyValue *prev;
                    rc = get_latest(t, p->key, a, &prev);
                    if (rc == 0 && prev == NULL)
                        rc = CAIRN_EKEYNOTFOUND;
                }
                if (rc == 0 && p->lease != 0 && !mvcc_lease_exists(t, p->lease))
                    rc = CAIRN_ELEASENOTFOUND;
            }
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            if (!puts && op->request_range) {
                int64_t rev = op->request_range->revision;
                if (rev > t->rev)
                    rc = CAIRN_EFUTUREREV;
                else if (rev != 0 && rev < t->compact_rev)
                    rc = CAIRN_ECOMPACTED;
            }
            break;
        default:
            break;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int txn_apply(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
                     const int *path, size_t *pi, struct arena *a,
                     Etcdserverpb__TxnResponse *resp)
{
    int ok = path[(*pi)++];
    size_t nops = ok ? r->n_success : r->n_failure;
    Etcdserverpb__RequestOp **ops = ok ? r->success : r->failure;
    int rc = 0;

    etcdserverpb__txn_response__init(resp);
    resp->header = new_header(a, 0);
    resp->succeeded = ok;
    resp->n_responses = nops;
    resp->responses = arena_alloc(a, (nops + 1) * sizeof *resp->responses);
    for (size_t i = 0; i < nops; i++) {
        Etcdserverpb__RequestOp *op = ops[i];
        Etcdserverpb__ResponseOp *ro = arena_alloc(a, sizeof *ro);
        etcdserverpb__response_op__init(ro);
        resp->responses[i] = ro;
        switch (op->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE;
            ro->response_range = arena_alloc(a, sizeof *ro->response_range);
            rc = mvcc_range(t, op->request_range, a, ro->response_range);
            /* Inner headers carry only the revision, as etcd's. */
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT;
            ro->response_put = arena_alloc(a, sizeof *ro->response_put);
            rc = put_apply(t, op->request_put, a, ro->response_put);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            ro->response_case =
                ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE;
            ro->response_delete_range =
                arena_alloc(a, sizeof *ro->response_delete_range);
            rc = mvcc_delete_range(t, op->request_delete_range, a,
                                   ro->response_delete_range);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
            ro->response_case = ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN;
            ro->response_txn = arena_alloc(a, sizeof *ro->response_txn);
            rc = txn_apply(t, op->request_txn, path, pi, a, ro->response_txn);
            break;
        default:
            break;
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

int mvcc_txn_is_write(const Etcdserverpb__TxnRequest *r)
{
    for (size_t i = 0; i < r->n_success; i++)
        if (r->success[i]->request_case !=
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE)
            return 1;
    for (size_t i = 0; i < r->n_failure; i++)
        if (r->failure[i]->request_case !=
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE)
            return 1;
    return 0;
}

int mvcc_txn(struct mvcc_txn *t, const Etcdserverpb__TxnRequest *r,
             struct arena *a, Etcdserverpb__TxnResponse *resp)
{
    struct txn_path p = {NULL, 0, 0};
    size_t pi;
    int rc = txn_path(t, r, a, &p);
    if (rc != 0)
        return rc;
    if (mvcc_txn_is_write(r)) {
        pi = 0;
        if ((rc = txn_check(t, r, p.v, &pi, 1, a)) != 0)
            return rc;
    }
    pi = 0;
    if ((rc = txn_check(t, r, p.v, &pi, 0, a)) != 0)
        return rc;
    pi = 0;
    rc = txn_apply(t, r, p.v, &pi, a, resp);
    if (rc != 0)
        return rc;
    resp->header->revision = cur_rev(t);
    return 0;
}

/* ---- Compact ---- */

static const char COMPACT_POS[] = "compact_pos";

int mvcc_compact(struct mvcc_txn *t, const Etcdserverpb__CompactionRequest *r,
                 Etcdserverpb__CompactionResponse *resp, struct arena *a)
{
    etcdserverpb__compaction_response__init(resp);
    if (r->revision <= t->compact_rev)
        return CAIRN_ECOMPACTED;
    if (r->revision > t->rev)
        return CAIRN_EFUTUREREV;
    int rc = mvcc_meta_put(t, "compact", r->revision);
    if (rc != 0)
        return rc;
    /* A compaction still being stepped restarts from the first key: the
     * newer revision covers everything the older one would remove. */
    MDB_val pk = {sizeof COMPACT_POS - 1, (void *)COMPACT_POS};
    rc = mdb_del(t->txn, t->m->meta, &pk, NULL);
    if (rc != 0 && rc != MDB_NOTFOUND)
        return mvcc__err(rc);
    t->compact_rev = r->revision;
    resp->header = new_header(a, t->rev);
    return 0;
}

int64_t mvcc_compact_done(struct mvcc_txn *t)
{
    return mvcc_meta_get(t, "compact_done", -1);
}

/* One key's share of a compaction: from its entry @e, back to K, its newest
 * revision at or below @crev; every revision older than K goes, and K too
 * when it is a tombstone (etcd's keyIndex.compact), then the key's entry if
 * K was its newest. At most @budget records are removed; returns 1 when the
 * key has more to remove (the oldest go first, so what remains stays
 * linked). */
static int compact_key(struct mvcc_txn *t, MDB_val *key, struct mvcc_rev e,
                       int64_t crev, int *budget)
{
    struct mvcc *m = t->m;
    struct mvcc_rev *chain = NULL, r = e, link;
    size_t n = 0, cap = 0;
    int rc = 0, tomb = e.tomb, is_newest = 1;

    /* Down to K. */
    while (r.main > crev) {
        if ((rc = mvcc__record_decode_at(t, r, NULL, NULL, &link, &tomb)) != 0)
            goto out;
        if (link.main == 0)
            goto out; /* the key was born after crev: nothing to do */
        r = link;
        is_newest = 0;
        rc = mvcc__record_decode_at(t, r, NULL, NULL, &link, &tomb);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            goto out; /* already compacted below */
        }
        if (rc != 0)
            goto out;
        r.tomb = tomb;
    }
    /* r is K; collect what lies below it, newest first. */
    struct mvcc_rev below = r;
    if ((rc = mvcc__record_decode_at(t, below, NULL, NULL, &link, &tomb)) != 0)
        goto out;
    while (link.main != 0) {
        struct mvcc_rev next;
        int t2;
        rc = mvcc__record_decode_at(t, link, NULL, NULL, &next, &t2);
        if (rc == MDB_NOTFOUND) {
            rc = 0;
            break;
        }
        if (rc != 0)
            goto out;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            chain = realloc(chain, cap * sizeof *chain);
        }
        chain[n++] = link;
        link = next;
    }
    /* Oldest first, so that an interrupted key stays consistent. */
    while (n > 0 && *budget > 0) {
        uint8_t kb[MVCC_IDXLEN];
        mvcc__rev_encode(kb, chain[--n]);
        MDB_val rk = {MVCC_REVLEN, kb};
        rc = mdb_del(t->txn, m->kv, &rk, NULL);
        if (rc != 0 && rc != MDB_NOTFOUND)
            goto out;
        rc = 0;
        (*budget)--;
    }
    if (n > 0) {
        rc = 1;
        goto out;
    }
    if (r.tomb) {
        uint8_t kb[MVCC_IDXLEN];
        mvcc__rev_encode(kb, r);
        MDB_val rk = {MVCC_REVLEN, kb};
        rc = mdb_del(t->txn, m->kv, &rk, NULL);
        if (rc == 0 && is_newest)
            rc = mdb_del(t->txn, m->cur, key, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        (*budget)--;
    }
out:
    free(chain);
    return rc;
}

int mvcc_compact_step(struct mvcc_txn *t, int max_keys)
{
    struct mvcc *m = t->m;
    int64_t crev = t->compact_rev;
    MDB_val pk = {sizeof COMPACT_POS - 1, (void *)COMPACT_POS}, pos, k, v;
    MDB_cursor *c;
    uint8_t *key = NULL;
    size_t klen = 0;
    int rc, done = 0, budget = max_keys * 4;

    if (crev <= mvcc_compact_done(t))
        return 0;
    if (mdb_get(t->txn, m->meta, &pk, &pos) == 0 && pos.mv_size > 0) {
        key = malloc(pos.mv_size);
        memcpy(key, pos.mv_data, pos.mv_size);
        klen = pos.mv_size;
    }
    if ((rc = mdb_cursor_open(t->txn, m->cur, &c)) != 0)
        goto out;
    k.mv_size = klen;
    k.mv_data = key;
    rc = key ? mdb_cursor_get(c, &k, &v, MDB_SET_RANGE)
             : mdb_cursor_get(c, &k, &v, MDB_FIRST);
    for (int n = 0; n < max_keys && budget > 0 && rc == 0; n++) {
        /* Copies: the deletes below may move what k and v point at. */
        size_t clen = k.mv_size;
        uint8_t *cur = malloc(clen ? clen : 1);
        memcpy(cur, k.mv_data, clen);
        struct mvcc_rev e = mvcc__rev_decode(v.mv_data);
        MDB_val ck = {clen, cur};
        int more = compact_key(t, &ck, e, crev, &budget);
        if (more < 0) {
            free(cur);
            rc = more;
            break;
        }
        /* Reposition: the key may be gone now. */
        k.mv_size = clen;
        k.mv_data = cur;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (!more && rc == 0 && k.mv_size == clen &&
            memcmp(k.mv_data, cur, clen) == 0)
            rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
        free(cur);
    }
    if (rc == MDB_NOTFOUND) {
        done = 1;
        rc = mdb_del(t->txn, m->meta, &pk, NULL);
        if (rc == MDB_NOTFOUND)
            rc = 0;
        if (rc == 0)
            rc = mvcc_meta_put(t, "compact_done", crev);
    } else if (rc == 0) {
        /* Copy first: k points into a page the put may touch. */
        void *copy = malloc(k.mv_size);
        memcpy(copy, k.mv_data, k.mv_size);
        MDB_val nv = {k.mv_size, copy};
        rc = mdb_put(t->txn, m->meta, &pk, &nv, 0);
        free(copy);
    }
    mdb_cursor_close(c);
out:
    free(key);
    if (rc != 0) /* a cairn code passes; LMDB's are translated */
        return rc <= -1000 && rc > -2000 ? rc : mvcc__err(rc);
    return done ? 0 : 1;
}
