/* v3electionpb.Election as etcd 3.4's v3election server: an Election of
 * clientv3/concurrency (E/clientv3/concurrency/election.go) on internal
 * calls. Errors of the inner calls end the call as Unknown with etcd's
 * text; Observe ends with OK whenever its inner calls fail. */
#include <string.h>

#include "core/mem.h"
#include "rpc/conc.h"
#include "v3electionpb/v3election.pb-c.h"

#define RANGE ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE
#define ENOLEADERKEY "\"leader\" field must be provided"
#define ENOTLEADER "election: not leader"
#define ENOLEADER "election: no leader"

/* Txn If(create_revision(@key) == @rev) Then(@then) [Else(@els)]. */
static void txn1(struct conc_op *o, ProtobufCBinaryData key, int64_t rev,
                 Etcdserverpb__RequestOp *then, Etcdserverpb__RequestOp *els,
                 icall_done_fn done)
{
    Etcdserverpb__Compare cmp, *cmps[1] = {&cmp};
    Etcdserverpb__TxnRequest txn = ETCDSERVERPB__TXN_REQUEST__INIT;

    conc_cmp_create(&cmp, key, rev);
    txn.n_compare = 1;
    txn.compare = cmps;
    txn.n_success = 1;
    txn.success = &then;
    if (els != NULL) {
        txn.n_failure = 1;
        txn.failure = &els;
    }
    if (o == NULL)
        conc_cleanup(rpc_kv_txn, &txn.base);
    else
        conc_unary(o, rpc_kv_txn, &txn.base, done);
}

static void op_put(Etcdserverpb__RequestOp *op, Etcdserverpb__PutRequest *put,
                   ProtobufCBinaryData key, ProtobufCBinaryData value,
                   int64_t lease)
{
    Etcdserverpb__RequestOp z = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__PutRequest zp = ETCDSERVERPB__PUT_REQUEST__INIT;
    *op = z;
    *put = zp;
    put->key = key;
    put->value = value;
    put->lease = lease;
    op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
    op->request_put = put;
}

/* Resign's Txn: delete @key if it is still the one created at @rev; with
 * @o NULL a cleanup without token. */
static void resign_txn(struct conc_op *o, ProtobufCBinaryData key, int64_t rev,
                       icall_done_fn done)
{
    Etcdserverpb__RequestOp op = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    d.key = key;
    op.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
    op.request_delete_range = &d;
    txn1(o, key, rev, &op, NULL, done);
}

/* conc_answer for a TxnResponse; its header is used */
static Etcdserverpb__TxnResponse *txn_resp(struct conc_op *o, int status,
                                           const char *message,
                                           const uint8_t *resp, size_t len)
{
    Etcdserverpb__TxnResponse *r = conc_answer(
        o, &etcdserverpb__txn_response__descriptor, status, message, resp, len);
    if (r != NULL && r->header == NULL) {
        grpc_finish(o->c, GRPC_INTERNAL, "cairn: Txn answer without header");
        return NULL;
    }
    return r;
}

/* ---- Campaign ---- */

struct camp_op {
    struct conc_op op; /* first */
    int waiting;       /* in waitDeletes: an early end resigns */
    int64_t lease, rev;
    ProtobufCBinaryData name, value;
    Etcdserverpb__ResponseHeader hdr; /* the first Txn's */
    char *err;         /* a Proclaim error, answered after the Resign */
};

static void camp_free(struct conc_op *o)
{
    cairn_free(((struct camp_op *)o)->err);
    cairn_free(o);
}

static void camp_cancel(struct grpc_call *c)
{
    struct camp_op *k = c->ud;
    c->ud = NULL;
    if (k == NULL)
        return;
    if (k->waiting) /* Resign(client.Ctx()): no token */
        resign_txn(NULL, k->op.key, k->rev, NULL);
    conc_op_release(&k->op);
}

static void camp_waited(struct conc_op *o, int status, const char *msg)
{
    struct camp_op *k = (struct camp_op *)o;
    V3electionpb__CampaignResponse resp = V3ELECTIONPB__CAMPAIGN_RESPONSE__INIT;
    V3electionpb__LeaderKey lk = V3ELECTIONPB__LEADER_KEY__INIT;
    struct grpc_call *c = o->c;

    k->waiting = 0; /* an error not caused by our end: no cleanup */
    if (status != 0) {
        conc_fail(o, msg);
        return;
    }
    lk.name = k->name;
    lk.key = o->key;
    lk.rev = k->rev;
    lk.lease = k->lease;
    resp.header = &k->hdr;
    resp.leader = &lk;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

static void camp_wait(struct camp_op *k)
{
    k->waiting = 1;
    conc_wait_deletes(&k->op, k->rev - 1, camp_waited);
}

static void camp_resigned(void *ud, int status, const char *message,
                          const uint8_t *resp, size_t len)
{
    struct camp_op *k = ud;
    (void)status, (void)message, (void)resp, (void)len;
    conc_got(&k->op);
    conc_fail(&k->op, k->err);
}

static void camp_proclaimed(void *ud, int status, const char *message,
                            const uint8_t *resp, size_t len)
{
    struct camp_op *k = ud;
    Etcdserverpb__TxnResponse *r;

    if (status != 0) { /* e.Resign(ctx), then the error */
        conc_got(&k->op);
        k->err = cairn_strdup(message != NULL ? message : "");
        resign_txn(&k->op, k->op.key, k->rev, camp_resigned);
        return;
    }
    if ((r = txn_resp(&k->op, status, message, resp, len)) == NULL)
        return;
    if (!r->succeeded) {
        /* Proclaim cleared the leader key: the Resign that follows fails
         * on the empty key and changes nothing */
        conc_fail(&k->op, ENOTLEADER);
        return;
    }
    camp_wait(k);
}

static void camp_txn_done(void *ud, int status, const char *message,
                          const uint8_t *resp, size_t len)
{
    struct camp_op *k = ud;
    Etcdserverpb__TxnResponse *r;

    if ((r = txn_resp(&k->op, status, message, resp, len)) == NULL)
        return;
    conc_hdr_copy(&k->hdr, r->header);
    k->rev = r->header->revision;
    if (r->succeeded) {
        camp_wait(k);
        return;
    }
    if (r->n_responses != 1 || r->responses[0]->response_case != RANGE ||
        r->responses[0]->response_range->n_kvs == 0) {
        grpc_finish(k->op.c, GRPC_INTERNAL, "cairn: campaign key vanished");
        return;
    }
    Mvccpb__KeyValue *kv = r->responses[0]->response_range->kvs[0];
    k->rev = kv->create_revision;
    if (kv->value.len == k->value.len &&
        (kv->value.len == 0 ||
         memcmp(kv->value.data, k->value.data, kv->value.len) == 0)) {
        camp_wait(k);
        return;
    }
    Etcdserverpb__RequestOp op;
    Etcdserverpb__PutRequest put;
    op_put(&op, &put, k->op.key, k->value, k->lease);
    txn1(&k->op, k->op.key, k->rev, &op, NULL, camp_proclaimed);
}

static void camp_session(struct conc_op *o, int status, const char *msg,
                         int64_t lease)
{
    struct camp_op *k = (struct camp_op *)o;
    Etcdserverpb__RequestOp then, els = ETCDSERVERPB__REQUEST_OP__INIT;
    Etcdserverpb__PutRequest put;
    Etcdserverpb__RangeRequest get = ETCDSERVERPB__RANGE_REQUEST__INIT;

    if (status != 0) {
        conc_fail(o, msg);
        return;
    }
    k->lease = lease;
    conc_op_keys(o, k->name, lease);
    op_put(&then, &put, o->key, k->value, lease);
    get.key = o->key;
    els.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
    els.request_range = &get;
    txn1(o, o->key, 0, &then, &els, camp_txn_done);
}

void rpc_election_campaign(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3electionpb__CampaignRequest *r =
        v3electionpb__campaign_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct camp_op *k = cairn_calloc(1, sizeof *k);
    conc_op_init(&k->op, c, camp_free);
    k->name = r->name; /* in the call's arena, used while it lasts */
    k->value = r->value;
    c->ud = k;
    c->on_cancel = camp_cancel;
    c->long_lived = 1;
    conc_session(&k->op, r->lease, camp_session);
}

/* ---- Proclaim and Resign: one Txn on the given leader key ---- */

struct lk_op {
    struct conc_op op; /* first */
    const V3electionpb__LeaderKey *leader; /* in the call's arena */
    ProtobufCBinaryData value;
    int resign;
};

static void lk_done(void *ud, int status, const char *message,
                    const uint8_t *resp, size_t len)
{
    struct lk_op *p = ud;
    struct grpc_call *c = p->op.c;
    Etcdserverpb__TxnResponse *r;

    if ((r = txn_resp(&p->op, status, message, resp, len)) == NULL)
        return;
    if (p->resign) {
        /* a failed compare is no error */
        V3electionpb__ResignResponse out = V3ELECTIONPB__RESIGN_RESPONSE__INIT;
        out.header = r->header;
        grpc_send_pb(c, &out);
    } else {
        V3electionpb__ProclaimResponse out = V3ELECTIONPB__PROCLAIM_RESPONSE__INIT;
        if (!r->succeeded) {
            conc_fail(&p->op, ENOTLEADER);
            return;
        }
        out.header = r->header;
        grpc_send_pb(c, &out);
    }
    grpc_finish(c, GRPC_OK, NULL);
}

static void lk_session(struct conc_op *o, int status, const char *msg,
                       int64_t lease)
{
    struct lk_op *p = (struct lk_op *)o;
    Etcdserverpb__RequestOp op;
    Etcdserverpb__PutRequest put;

    if (status != 0) {
        conc_fail(o, msg);
        return;
    }
    if (p->resign) {
        resign_txn(o, p->leader->key, p->leader->rev, lk_done);
        return;
    }
    op_put(&op, &put, p->leader->key, p->value, lease);
    txn1(o, p->leader->key, p->leader->rev, &op, NULL, lk_done);
}

static void lk_start(struct grpc_call *c, const V3electionpb__LeaderKey *leader,
                     ProtobufCBinaryData value, int resign)
{
    if (leader == NULL) {
        grpc_finish(c, GRPC_UNKNOWN, ENOLEADERKEY);
        return;
    }
    struct lk_op *p = cairn_calloc(1, sizeof *p);
    conc_op_init(&p->op, c, conc_free_plain);
    p->leader = leader;
    p->value = value;
    p->resign = resign;
    c->ud = p;
    c->on_cancel = conc_cancel_hook;
    /* the session of the given lease: 0 grants a new one, used for the put */
    conc_session(&p->op, leader->lease, lk_session);
}

void rpc_election_proclaim(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3electionpb__ProclaimRequest *r =
        v3electionpb__proclaim_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    lk_start(c, r->leader, r->value, 0);
}

void rpc_election_resign(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3electionpb__ResignRequest *r =
        v3electionpb__resign_request__unpack(&c->arena.pb, len, msg);
    ProtobufCBinaryData none = {0, NULL};
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    lk_start(c, r->leader, none, 1);
}

/* ---- Leader ---- */

static void leader_done(void *ud, int status, const char *message,
                        const uint8_t *resp, size_t len)
{
    struct conc_op *o = ud;
    struct grpc_call *c = o->c;
    V3electionpb__LeaderResponse out = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    Etcdserverpb__RangeResponse *r = conc_answer(
        o, &etcdserverpb__range_response__descriptor, status, message, resp,
        len);

    if (r == NULL)
        return;
    if (r->n_kvs == 0) {
        conc_fail(o, ENOLEADER);
        return;
    }
    out.header = r->header;
    out.kv = r->kvs[0];
    grpc_send_pb(c, &out);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_election_leader(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3electionpb__LeaderRequest *r =
        v3electionpb__leader_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__RangeRequest rr;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct conc_op *o = conc_op_new(c);
    conc_op_keys(o, r->name, -1); /* session(-1): no lease granted */
    conc_range_first(o, &rr);
    conc_unary(o, rpc_kv_range, &rr.base, leader_done);
}

/* ---- Observe (E/clientv3/concurrency/election.go observe()) ---- */

enum { OBS_FIRST_PUT, OBS_KEY, OBS_IGNORE };
enum { OBS_END, OBS_RANGE, OBS_KEYWATCH };

struct obs_op {
    struct conc_op op; /* first */
    int mode;          /* what the watch in flight is for */
    int step;          /* what conc_later runs next */
    uint8_t *key;      /* the leader key watched, malloc'd */
    size_t key_len;
    int64_t rev;       /* the revision it was last sent at */
};

static void obs_free(struct conc_op *o)
{
    cairn_free(((struct obs_op *)o)->key);
    cairn_free(o);
}

static void obs_send(struct obs_op *b, Etcdserverpb__ResponseHeader *h,
                     Mvccpb__KeyValue *kv)
{
    V3electionpb__LeaderResponse out = V3ELECTIONPB__LEADER_RESPONSE__INIT;
    out.header = h;
    out.kv = kv;
    grpc_send_pb(b->op.c, &out);
}

static void obs_keep_key(struct obs_op *b, const Mvccpb__KeyValue *kv)
{
    cairn_free(b->key);
    b->key_len = kv->key.len;
    b->key = cairn_malloc(b->key_len + 1);
    if (b->key_len > 0)
        memcpy(b->key, kv->key.data, b->key_len);
}

static void obs_next(struct conc_op *o);

static void obs_schedule(struct obs_op *b, int step)
{
    b->mode = OBS_IGNORE;
    b->step = step;
    conc_later(&b->op, obs_next);
}

static void obs_watch_resp(void *ud, const Etcdserverpb__WatchResponse *resp,
                           int status, const char *message)
{
    struct obs_op *b = ud;
    Etcdserverpb__ResponseHeader h;
    (void)status, (void)message;

    if (resp == NULL) { /* the channel closed: Observe returns */
        conc_got(&b->op);
        if (b->mode != OBS_IGNORE)
            obs_schedule(b, OBS_END);
        return;
    }
    if (b->mode == OBS_IGNORE)
        return;
    if (resp->canceled || resp->compact_revision != 0) {
        obs_schedule(b, OBS_END);
        return;
    }
    for (size_t i = 0; i < resp->n_events; i++) {
        Mvccpb__Event *ev = resp->events[i];
        if (b->mode == OBS_FIRST_PUT) {
            /* only PUTs: the first one is the leader */
            if (ev->type != MVCCPB__EVENT__EVENT_TYPE__PUT || ev->kv == NULL)
                continue;
            conc_hdr_copy(&h, resp->header);
            h.revision = ev->kv->mod_revision;
            obs_send(b, &h, ev->kv);
            obs_keep_key(b, ev->kv);
            b->rev = h.revision;
            obs_schedule(b, OBS_KEYWATCH);
            return;
        }
        if (ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE) {
            obs_schedule(b, OBS_RANGE);
            return;
        }
        obs_send(b, resp->header, ev->kv);
    }
}

static void obs_key_watch(struct obs_op *b)
{
    Etcdserverpb__WatchCreateRequest w = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    w.key = (ProtobufCBinaryData){b->key_len, b->key};
    w.start_revision = b->rev + 1;
    b->mode = OBS_KEY;
    conc_watch(&b->op, &w, obs_watch_resp);
}

static void obs_range_done(void *ud, int status, const char *message,
                           const uint8_t *resp, size_t len)
{
    struct obs_op *b = ud;
    Etcdserverpb__RangeResponse *r;
    Etcdserverpb__WatchCreateRequest w = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    (void)message;

    conc_got(&b->op);
    r = status == 0 ? etcdserverpb__range_response__unpack(NULL, len, resp)
                    : NULL;
    if (r == NULL) { /* the channel closes: the stream ends with OK */
        grpc_finish(b->op.c, GRPC_OK, NULL);
        return;
    }
    if (r->n_kvs > 0) {
        obs_send(b, r->header, r->kvs[0]);
        obs_keep_key(b, r->kvs[0]);
        b->rev = r->header != NULL ? r->header->revision : 0;
        etcdserverpb__range_response__free_unpacked(r, NULL);
        obs_key_watch(b);
        return;
    }
    w.key = b->op.pfx;
    w.range_end = b->op.end;
    w.start_revision = r->header != NULL ? r->header->revision : 0;
    etcdserverpb__range_response__free_unpacked(r, NULL);
    b->mode = OBS_FIRST_PUT;
    conc_watch(&b->op, &w, obs_watch_resp);
}

static void obs_range(struct obs_op *b)
{
    Etcdserverpb__RangeRequest rr;
    conc_range_first(&b->op, &rr);
    conc_unary(&b->op, rpc_kv_range, &rr.base, obs_range_done);
}

static void obs_next(struct conc_op *o)
{
    struct obs_op *b = (struct obs_op *)o;
    switch (b->step) {
    case OBS_RANGE:
        obs_range(b);
        break;
    case OBS_KEYWATCH:
        obs_key_watch(b);
        break;
    default:
        grpc_finish(o->c, GRPC_OK, NULL);
    }
}

void rpc_election_observe(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    V3electionpb__LeaderRequest *r =
        v3electionpb__leader_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct obs_op *b = cairn_calloc(1, sizeof *b);
    conc_op_init(&b->op, c, obs_free);
    conc_op_keys(&b->op, r->name, -1);
    c->ud = b;
    c->on_cancel = conc_cancel_hook;
    c->long_lived = 1;
    obs_range(b);
}
