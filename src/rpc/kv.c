/* etcdserverpb.KV: reads run on the loop thread against an LMDB snapshot;
 * writes go through the apply thread and answer once durable. */
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

void rpc_header(Etcdserverpb__ResponseHeader *h, int64_t rev)
{
    h->cluster_id = srv->cluster_id;
    h->member_id = srv->member_id;
    h->raft_term = srv->raft_term;
    if (rev)
        h->revision = rev;
}

int64_t rpc_current_rev(void)
{
    struct mvcc_txn t;
    if (mvcc_read_begin(srv->mvcc, &t) != 0)
        return 0;
    int64_t rev = t.rev;
    mvcc_read_end(&t);
    return rev;
}

void rpc_finish(struct grpc_call *c, int rc)
{
    if (rc != 0)
        grpc_finish_err(c, rc);
    else
        grpc_finish(c, GRPC_OK, NULL);
}

void rpc_bad_message(struct grpc_call *c)
{
    grpc_finish(c, GRPC_INTERNAL,
                "grpc: error unmarshalling request: proto: invalid wire data");
}

/* ---- writes ---- */

void rpc_write_done(struct apply_cmd *cmd)
{
    struct grpc_call *c = cmd->ud;
    if (cmd->rc == 0)
        metrics_write_applied((int)cmd->op, cmd->resp, cmd->resp_len);
    if (c != NULL) {
        c->ud = NULL;
        if (cmd->rc != 0) {
            grpc_finish_err(c, cmd->rc);
        } else {
            grpc_send(c, cmd->resp, cmd->resp_len);
            grpc_finish(c, GRPC_OK, NULL);
        }
    }
    apply_cmd_free(cmd);
}

/* The call went away first (peer reset, deadline): the write still
 * applies, nobody is told. */
static void write_cancel(struct grpc_call *c)
{
    struct apply_cmd *cmd = c->ud;
    if (cmd != NULL)
        cmd->ud = NULL;
    c->ud = NULL;
}

void rpc_submit(struct grpc_call *c, enum apply_op op, const uint8_t *msg,
                size_t len, void (*done)(struct apply_cmd *cmd))
{
    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    cmd->op = op;
    cmd->req = cairn_malloc(len + 1);
    if (len)
        memcpy(cmd->req, msg, len);
    cmd->req_len = len;
    cmd->auth_rev = c->auth_rev;
    cmd->done = done;
    cmd->ud = c;
    c->ud = cmd;
    c->on_cancel = write_cancel;
    if (repl_is_learner()) {
        cmd->rc = CAIRN_ENOTLEARNERRPC;
        done(cmd);
        return;
    }
    repl_submit(cmd);
}

void rpc_kv_put(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__PutRequest *r =
        etcdserverpb__put_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    /* etcd checks the quota before validating */
    if ((rc = rpc_quota_check(c, rpc_cost_put(r))) == 1)
        return;
    if (rc != 0 || (rc = mvcc_check_put(r)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (len > (size_t)srv->cfg.max_request_bytes) {
        grpc_finish_err(c, CAIRN_ETOOLARGE);
        return;
    }
    if ((rc = rpc_auth_put(c, r)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_submit(c, APPLY_PUT, msg, len, rpc_write_done);
}

void rpc_kv_delete_range(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__DeleteRangeRequest *r =
        etcdserverpb__delete_range_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = mvcc_check_delete(r)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (len > (size_t)srv->cfg.max_request_bytes) {
        grpc_finish_err(c, CAIRN_ETOOLARGE);
        return;
    }
    if ((rc = rpc_auth_delete(c, r)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_submit(c, APPLY_DELETE_RANGE, msg, len, rpc_write_done);
}

void rpc_kv_compact(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__CompactionRequest *r =
        etcdserverpb__compaction_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_token(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_submit(c, APPLY_COMPACT, msg, len, rpc_write_done);
}

/* ---- waiting on something asynchronous for a call ---- */

static void wait_cancel(struct grpc_call *c)
{
    struct rpc_wait *w = c->ud;
    if (w != NULL)
        w->c = NULL;
    c->ud = NULL;
}

struct rpc_wait *rpc_wait_new(struct grpc_call *c)
{
    struct rpc_wait *w = cairn_calloc(1, sizeof *w);
    w->c = c;
    c->ud = w;
    c->on_cancel = wait_cancel;
    return w;
}

struct grpc_call *rpc_wait_take(struct rpc_wait *w)
{
    struct grpc_call *c = w->c;
    if (c != NULL) {
        c->ud = NULL;
        c->on_cancel = NULL;
    }
    cairn_free(w);
    return c;
}

/* ---- reads ---- */

/* A linearizable read first waits for the read index (src/repl): the
 * leader confirmed it leads and this member applied everything committed
 * before the read arrived. */
static void lin_done(void *ud, int rc)
{
    struct rpc_wait *w = ud;
    void (*cont)(struct grpc_call *c, void *r) = w->cont;
    void *r = w->r;
    struct grpc_call *c = rpc_wait_take(w);
    if (c == NULL)
        return; /* the call has gone */
    if (rc != 0)
        grpc_finish_err(c, rc);
    else
        cont(c, r);
}

void rpc_linearize(struct grpc_call *c, void (*cont)(struct grpc_call *c, void *r),
                   void *r)
{
    if (repl_is_learner()) {
        grpc_finish_err(c, CAIRN_ENOTLEARNERRPC);
        return;
    }
    struct rpc_wait *w = rpc_wait_new(c);
    w->cont = cont;
    w->r = r;
    repl_read_index(lin_done, w);
}

static void range_on_loop(struct grpc_call *c, const Etcdserverpb__RangeRequest *r);

/* Multi-key Ranges (lists) run on libuv's thread pool: LMDB readers do not
 * block each other, so lists use every core while the loop keeps serving.
 * The worker answers with the packed response, or asks the loop to send a
 * very large one in pieces. */
#define RANGE_WHOLE_MAX (16u << 20)

struct range_job {
    uv_work_t work;
    struct grpc_call *c;   /* NULL once the call has gone */
    uint8_t *req;
    size_t req_len;
    int rc, large;
    uint8_t *resp;
    size_t resp_len;
};

static void range_job_cancel(struct grpc_call *c)
{
    struct range_job *j = c->ud;
    if (j != NULL)
        j->c = NULL;
    c->ud = NULL;
}

static void range_work(uv_work_t *w)
{
    struct range_job *j = (struct range_job *)w;
    struct arena a;
    struct mvcc_txn t;
    Etcdserverpb__RangeRequest *r;
    Etcdserverpb__RangeResponse resp;

    arena_init(&a);
    r = etcdserverpb__range_request__unpack(&a.pb, j->req_len, j->req);
    if (r == NULL) {
        j->rc = CAIRN_EBADMSG;
        goto out_arena;
    }
    if ((j->rc = mvcc_read_begin(srv->mvcc, &t)) != 0)
        goto out_arena;
    j->rc = mvcc_range(&t, r, &a, &resp);
    if (j->rc == 0) {
        rpc_header(resp.header, 0);
        size_t n = etcdserverpb__range_response__get_packed_size(&resp);
        if (n > RANGE_WHOLE_MAX && rpc_range_is_plain(r)) {
            j->large = 1; /* the loop sends it in pieces */
        } else {
            j->resp = cairn_malloc(n + 1);
            j->resp_len = etcdserverpb__range_response__pack(&resp, j->resp);
        }
    }
    mvcc_read_end(&t);
out_arena:
    arena_free(&a);
}

static void range_after(uv_work_t *w, int status)
{
    struct range_job *j = (struct range_job *)w;
    struct grpc_call *c = j->c;
    (void)status;
    if (c != NULL) {
        c->ud = NULL;
        c->on_cancel = NULL;
        if (j->rc != 0) {
            grpc_finish_err(c, j->rc);
        } else if (j->large) {
            Etcdserverpb__RangeRequest *r = etcdserverpb__range_request__unpack(
                &c->arena.pb, j->req_len, j->req);
            if (r == NULL || !rpc_range_large(c, r))
                range_on_loop(c, r);
        } else {
            grpc_send(c, j->resp, j->resp_len);
            grpc_finish(c, GRPC_OK, NULL);
        }
    }
    cairn_free(j->req);
    cairn_free(j->resp);
    cairn_free(j);
}

/* The Range on the loop thread, built whole. */
static void range_on_loop(struct grpc_call *c, const Etcdserverpb__RangeRequest *r)
{
    Etcdserverpb__RangeResponse resp;
    struct mvcc_txn t;
    int rc;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = mvcc_read_begin(srv->mvcc, &t)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rc = mvcc_range(&t, r, &c->arena, &resp);
    if (rc == 0) {
        rpc_header(resp.header, 0);
        grpc_send_pb(c, &resp); /* packs while the snapshot is open */
    }
    mvcc_read_end(&t);
    rpc_finish(c, rc);
}

static void range_read(struct grpc_call *c, void *rp);

void rpc_kv_range(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__RangeRequest *r =
        etcdserverpb__range_request__unpack(&c->arena.pb, len, msg);
    int rc;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = mvcc_check_range(r)) != 0 ||
        (rc = rpc_auth_range(c, r->key, r->range_end, AUTH_READ)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    metrics_mvcc_range();
    if (r->serializable)
        range_read(c, r);
    else
        rpc_linearize(c, range_read, r);
}

static void range_read(struct grpc_call *c, void *rp)
{
    Etcdserverpb__RangeRequest *r = rp;
    /* A single key is quicker here than a trip to another thread. */
    if (r->range_end.len == 0) {
        range_on_loop(c, r);
        return;
    }
    struct range_job *j = cairn_calloc(1, sizeof *j);
    size_t len = etcdserverpb__range_request__get_packed_size(r);
    j->c = c;
    j->req = cairn_malloc(len + 1);
    etcdserverpb__range_request__pack(r, j->req);
    j->req_len = len;
    c->ud = j;
    c->on_cancel = range_job_cancel;
    if (uv_queue_work(srv->loop, &j->work, range_work, range_after) != 0) {
        c->ud = NULL;
        c->on_cancel = NULL;
        cairn_free(j->req);
        cairn_free(j);
        range_on_loop(c, r);
    }
}

static void txn_read(struct grpc_call *c, void *rp);

void rpc_kv_txn(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__TxnRequest *r =
        etcdserverpb__txn_request__unpack(&c->arena.pb, len, msg);
    int rc;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_quota_check(c, rpc_cost_txn(r))) == 1)
        return;
    if (rc != 0 ||
        (rc = mvcc_check_txn(r, (int)srv->cfg.max_txn_ops)) != 0 ||
        (rc = rpc_auth_txn(c, r)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (mvcc_txn_is_write(r)) {
        if (len > (size_t)srv->cfg.max_request_bytes) {
            grpc_finish_err(c, CAIRN_ETOOLARGE);
            return;
        }
        rpc_submit(c, APPLY_TXN, msg, len, rpc_write_done);
        return;
    }
    /* Read-only: no revision, no trip through the write path; a
     * linearizable read (etcd serves read-only txns so). */
    rpc_linearize(c, txn_read, r);
}

static void txn_read(struct grpc_call *c, void *rp)
{
    Etcdserverpb__TxnRequest *r = rp;
    Etcdserverpb__TxnResponse resp;
    struct mvcc_txn t;
    int rc;

    if ((rc = mvcc_read_begin(srv->mvcc, &t)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rc = mvcc_txn(&t, r, &c->arena, &resp);
    if (rc == 0) {
        metrics_txn_read(&resp);
        rpc_header(resp.header, 0);
        grpc_send_pb(c, &resp);
    }
    mvcc_read_end(&t);
    rpc_finish(c, rc);
}
