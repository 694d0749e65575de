/* v3lockpb.Lock as etcd 3.4's v3lock server: a Mutex of clientv3/
 * concurrency (E/clientv3/concurrency/mutex.go) on internal calls. Errors
 * of the inner calls end the call as Unknown with etcd's text. */
#include <string.h>

#include "core/mem.h"
#include "rpc/conc.h"
#include "v3lockpb/v3lock.pb-c.h"

#define RANGE ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE

struct lock_op {
    struct conc_op op; /* first */
    int waiting;       /* in waitDeletes: an early end deletes our key */
    int64_t lease;
    int64_t my_rev;
    ProtobufCBinaryData name;
};

static void lock_cancel(struct grpc_call *c)
{
    struct lock_op *l = c->ud;
    c->ud = NULL;
    if (l == NULL)
        return;
    if (l->waiting) {
        /* Mutex.Lock's m.Unlock(client.Ctx()): no token */
        Etcdserverpb__DeleteRangeRequest d =
            ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        d.key = l->op.key;
        conc_cleanup(rpc_kv_delete_range, &d.base);
    }
    conc_op_release(&l->op);
}

static void lock_answer(struct lock_op *l, Etcdserverpb__ResponseHeader *h)
{
    V3lockpb__LockResponse resp = V3LOCKPB__LOCK_RESPONSE__INIT;
    struct grpc_call *c = l->op.c;

    l->waiting = 0;
    resp.header = h;
    resp.key = l->op.key;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL); /* on_cancel releases @l */
}

static void waited(struct conc_op *o, int status, const char *msg)
{
    struct lock_op *l = (struct lock_op *)o;
    if (status != 0) {
        conc_fail(o, msg); /* still waiting: lock_cancel deletes our key */
        return;
    }
    lock_answer(l, &o->hdr);
}

static void txn_done(void *ud, int status, const char *message,
                     const uint8_t *resp, size_t len)
{
    struct lock_op *l = ud;
    struct grpc_call *c = l->op.c;
    Etcdserverpb__TxnResponse *r = conc_answer(
        &l->op, &etcdserverpb__txn_response__descriptor, status, message, resp,
        len);

    if (r == NULL)
        return;
    if (r->header == NULL || r->n_responses != 2 ||
        r->responses[1]->response_case != RANGE ||
        (!r->succeeded && r->responses[0]->response_case != RANGE)) {
        grpc_finish(c, GRPC_INTERNAL, "cairn: bad Txn answer");
        return;
    }
    l->my_rev = r->header->revision;
    if (!r->succeeded) {
        Etcdserverpb__RangeResponse *mine = r->responses[0]->response_range;
        if (mine->n_kvs == 0) { /* Go would panic: the compare saw the key */
            grpc_finish(c, GRPC_INTERNAL, "cairn: lock key vanished");
            return;
        }
        l->my_rev = mine->kvs[0]->create_revision;
    }
    Etcdserverpb__RangeResponse *owner = r->responses[1]->response_range;
    if (owner->n_kvs == 0 ||
        owner->kvs[0]->create_revision == l->my_rev) {
        lock_answer(l, r->header);
        return;
    }
    l->waiting = 1;
    conc_wait_deletes(&l->op, l->my_rev - 1, waited);
}

static void have_session(struct conc_op *o, int status, const char *msg,
                         int64_t lease)
{
    struct lock_op *l = (struct lock_op *)o;
    Etcdserverpb__Compare cmp, *cmps[1] = {&cmp};
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT, owner;
    Etcdserverpb__RequestOp ops[4], *then[2] = {&ops[0], &ops[1]},
                                    *els[2] = {&ops[2], &ops[3]};
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;
    Etcdserverpb__RequestOp z = ETCDSERVERPB__REQUEST_OP__INIT;

    if (status != 0) {
        conc_fail(o, msg);
        return;
    }
    l->lease = lease;
    conc_op_keys(o, l->name, lease);
    conc_cmp_create(&cmp, o->key, 0);
    put.key = o->key;
    put.lease = lease;
    get.key = o->key;
    conc_range_first(o, &owner);
    for (int i = 0; i < 4; i++)
        ops[i] = z;
    ops[0].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    ops[0].request_put = &put;
    ops[1].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ops[1].request_range = &owner;
    ops[2].request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    ops[2].request_range = &get;
    ops[3] = ops[1];
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 2;
    txn.success = then;
    txn.n_failure = 2;
    txn.failure = els;
    conc_unary(o, rpc_kv_txn, &txn.base, txn_done);
}

void rpc_lock_lock(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3lockpb__LockRequest *r =
        v3lockpb__lock_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct lock_op *l = cairn_calloc(1, sizeof *l);
    conc_op_init(&l->op, c, conc_free_plain);
    l->name = r->name;  /* in the call's arena, used before it ends */
    c->ud = l;
    c->on_cancel = lock_cancel;
    c->long_lived = 1;
    conc_session(&l->op, r->lease, have_session);
}

/* ---- Unlock: a DeleteRange of the key, nothing checked ---- */

static void unlock_done(void *ud, int status, const char *message,
                        const uint8_t *resp, size_t len)
{
    struct conc_op *o = ud;
    struct grpc_call *c = o->c;
    V3lockpb__UnlockResponse out = V3LOCKPB__UNLOCK_RESPONSE__INIT;
    Etcdserverpb__DeleteRangeResponse *r = conc_answer(
        o, &etcdserverpb__delete_range_response__descriptor, status, message,
        resp, len);

    if (r == NULL)
        return;
    out.header = r->header;
    grpc_send_pb(c, &out);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_lock_unlock(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3lockpb__UnlockRequest *r =
        v3lockpb__unlock_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct conc_op *o = conc_op_new(c);
    d.key = r->key;
    conc_unary(o, rpc_kv_delete_range, &d.base, unlock_done);
}
