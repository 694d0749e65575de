/* The apply thread: batch, apply in order, commit once, report. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "apply/apply.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"

/* Bounds on one group commit: enough to amortise the fsync, small enough
 * to keep latency and the LMDB txn's dirty pages in check. */
#define BATCH_MAX_CMDS 1024
#define BATCH_MAX_BYTES (32u << 20)
#define COMPACT_KEYS_PER_BATCH 1000

struct apply {
    uv_loop_t *loop;
    struct mvcc *m;
    struct apply_header hdr;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct apply_cmd *q_head, *q_tail;    /* submitted */
    struct apply_cmd *done_head, *done_tail; /* results for the loop */
    struct apply_cmd *physical;           /* compactions waiting for disk */
    uv_async_t async;
    int stopping;
    int compacting;
    _Atomic uint64_t index;
    _Atomic unsigned alarms;       /* apply_alarms() */
    _Atomic int64_t committed_rev; /* store revision after the last commit */
    int64_t notified_rev;          /* loop thread: last passed to on_commit */
    void (*on_commit)(int64_t rev);
};

static void fill_header(struct apply *a, Etcdserverpb__ResponseHeader *h)
{
    h->cluster_id = a->hdr.cluster_id;
    h->member_id = a->hdr.member_id;
    h->raft_term = a->hdr.raft_term;
}

static void set_resp(struct apply_cmd *cmd, const ProtobufCMessage *m)
{
    cmd->resp_len = protobuf_c_message_get_packed_size(m);
    cmd->resp = cairn_malloc(cmd->resp_len + 1);
    protobuf_c_message_pack(m, cmd->resp);
}

/* Applies one command inside the shared write txn. On error nothing of it
 * was written (requests are validated before any write). */
static int apply_one(struct apply *a, struct mvcc_txn *t, struct apply_cmd *cmd,
                     struct arena *ar, int *physical)
{
    int rc = CAIRN_EBADMSG;
    *physical = 0;
    switch (cmd->op) {
    case APPLY_PUT: {
        Etcdserverpb__PutRequest *r = etcdserverpb__put_request__unpack(
            &ar->pb, cmd->req_len, cmd->req);
        Etcdserverpb__PutResponse resp;
        if (r == NULL)
            break;
        rc = mvcc_put(t, r, ar, &resp);
        if (rc == 0) {
            fill_header(a, resp.header);
            set_resp(cmd, &resp.base);
        }
        break;
    }
    case APPLY_DELETE_RANGE: {
        Etcdserverpb__DeleteRangeRequest *r =
            etcdserverpb__delete_range_request__unpack(&ar->pb, cmd->req_len,
                                                       cmd->req);
        Etcdserverpb__DeleteRangeResponse resp;
        if (r == NULL)
            break;
        rc = mvcc_delete_range(t, r, ar, &resp);
        if (rc == 0) {
            fill_header(a, resp.header);
            set_resp(cmd, &resp.base);
        }
        break;
    }
    case APPLY_TXN: {
        Etcdserverpb__TxnRequest *r = etcdserverpb__txn_request__unpack(
            &ar->pb, cmd->req_len, cmd->req);
        Etcdserverpb__TxnResponse resp;
        if (r == NULL)
            break;
        rc = mvcc_txn(t, r, ar, &resp);
        if (rc == 0) {
            fill_header(a, resp.header);
            set_resp(cmd, &resp.base);
        }
        break;
    }
    case APPLY_LEASE_GRANT: {
        Etcdserverpb__LeaseGrantRequest *r =
            etcdserverpb__lease_grant_request__unpack(&ar->pb, cmd->req_len,
                                                      cmd->req);
        Etcdserverpb__LeaseGrantResponse resp =
            ETCDSERVERPB__LEASE_GRANT_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        if (r == NULL)
            break;
        rc = mvcc_lease_grant(t, r->id, r->ttl);
        if (rc == 0) {
            fill_header(a, &h);
            h.revision = t->rev;
            resp.header = &h;
            resp.id = r->id;
            resp.ttl = r->ttl;
            set_resp(cmd, &resp.base);
        }
        break;
    }
    case APPLY_LEASE_REVOKE: {
        Etcdserverpb__LeaseRevokeRequest *r =
            etcdserverpb__lease_revoke_request__unpack(&ar->pb, cmd->req_len,
                                                       cmd->req);
        Etcdserverpb__LeaseRevokeResponse resp =
            ETCDSERVERPB__LEASE_REVOKE_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        if (r == NULL)
            break;
        rc = mvcc_lease_revoke(t, r->id, ar);
        if (rc == 0) {
            fill_header(a, &h);
            h.revision = t->rev + (t->changes > 0);
            resp.header = &h;
            set_resp(cmd, &resp.base);
        }
        break;
    }
    case APPLY_COMPACT: {
        Etcdserverpb__CompactionRequest *r =
            etcdserverpb__compaction_request__unpack(&ar->pb, cmd->req_len,
                                                     cmd->req);
        Etcdserverpb__CompactionResponse resp;
        if (r == NULL)
            break;
        rc = mvcc_compact(t, r, &resp, ar);
        if (rc == 0) {
            fill_header(a, resp.header);
            set_resp(cmd, &resp.base);
            a->compacting = 1;
            *physical = r->physical;
        }
        break;
    }
    }
    return rc;
}

/* Errors from the store itself (not from the request): the write txn is
 * no longer trustworthy. */
static int is_store_error(int rc)
{
    return rc == CAIRN_ESTORE || rc == CAIRN_ENOSPACE || (rc < 0 && rc > -1000);
}

static void push_done(struct apply *a, struct apply_cmd *head,
                      struct apply_cmd *tail)
{
    if (head == NULL)
        return;
    pthread_mutex_lock(&a->mu);
    if (a->done_tail)
        a->done_tail->next = head;
    else
        a->done_head = head;
    a->done_tail = tail;
    pthread_mutex_unlock(&a->mu);
    uv_async_send(&a->async);
}

static void fail_all(struct apply_cmd *head, int rc)
{
    for (struct apply_cmd *c = head; c != NULL; c = c->next) {
        cairn_free(c->resp);
        c->resp = NULL;
        c->resp_len = 0;
        c->rc = rc;
    }
}

/* One group commit over the commands in @batch (may be empty when only
 * compaction work is pending). */
static void run_batch(struct apply *a, struct apply_cmd *batch)
{
    struct mvcc_txn t;
    struct arena ar;
    struct apply_cmd *tail = NULL, *phys_head = NULL, *phys_tail = NULL;
    struct apply_cmd *done_head = NULL;
    uint64_t n = 0;
    int rc, fatal = 0;

    arena_init(&ar);
    rc = mvcc_write_begin(a->m, &t);
    if (rc == 0) {
        struct apply_cmd *c = batch, *next;
        for (; c != NULL; c = next) {
            int physical = 0;
            int64_t t0 = metrics_now_ns();
            next = c->next;
            c->next = NULL;
            c->rc = fatal ? fatal : apply_one(a, &t, c, &ar, &physical);
            metrics_apply_observe(t0);
            if (is_store_error(c->rc))
                fatal = c->rc;
            mvcc_cmd_end(&t);
            n++;
            if (physical) {
                if (phys_tail)
                    phys_tail->next = c;
                else
                    phys_head = c;
                phys_tail = c;
                continue;
            }
            if (tail)
                tail->next = c;
            else
                done_head = c;
            tail = c;
        }
        batch = NULL;
        if (fatal != 0) {
            /* A store error mid-command may have left part of it written:
             * nothing of this batch may commit. */
            mvcc_write_abort(&t);
            rc = fatal;
        }
        if (rc == 0 && n > 0)
            rc = mvcc_meta_put(&t, "index", (int64_t)(atomic_load(&a->index) + n));
        if (rc == 0 && a->compacting) {
            int more = mvcc_compact_step(&t, COMPACT_KEYS_PER_BATCH);
            if (more < 0) {
                log_error("apply: compaction step failed rc=%d", more);
                rc = more; /* it may have deleted part of a key's history */
            }
            a->compacting = more > 0;
        }
        if (rc == 0) {
            int64_t t0 = metrics_now_ns();
            rc = mvcc_write_commit(&t); /* page writes + fsync: the batch's */
            metrics_commit_observe(t0);
        } else if (fatal == 0)
            mvcc_write_abort(&t);
    }
    if (rc != 0) {
        /* Nothing of the batch is on disk. */
        log_error("apply: commit failed rc=%d (%s)", rc, cairn_err_msg(rc));
        if (batch != NULL) { /* begin failed */
            done_head = batch;
            for (tail = batch; tail->next; tail = tail->next)
                ;
        }
        if (phys_head != NULL) {
            if (tail)
                tail->next = phys_head;
            else
                done_head = phys_head;
            tail = phys_tail;
            phys_head = phys_tail = NULL;
        }
        fail_all(done_head, rc == CAIRN_ENOSPACE ? rc : CAIRN_ESTORE);
        a->compacting = 0;
    } else {
        atomic_fetch_add(&a->index, n);
        atomic_store(&a->committed_rev, t.rev);
    }
    if (phys_head != NULL) {
        phys_tail->next = a->physical;
        a->physical = phys_head;
    }
    if (!a->compacting && a->physical != NULL) {
        struct apply_cmd *p = a->physical, *pt = p;
        while (pt->next)
            pt = pt->next;
        a->physical = NULL;
        if (tail)
            tail->next = p;
        else
            done_head = p;
        tail = pt;
    }
    push_done(a, done_head, tail);
    arena_free(&ar);
}

static void *apply_main(void *arg)
{
    struct apply *a = arg;
    for (;;) {
        struct apply_cmd *batch = NULL, *btail = NULL;
        size_t ncmd = 0, bytes = 0;
        pthread_mutex_lock(&a->mu);
        while (a->q_head == NULL && !a->stopping && !a->compacting)
            pthread_cond_wait(&a->cv, &a->mu);
        while (a->q_head != NULL && ncmd < BATCH_MAX_CMDS &&
               bytes < BATCH_MAX_BYTES) {
            struct apply_cmd *c = a->q_head;
            a->q_head = c->next;
            if (a->q_head == NULL)
                a->q_tail = NULL;
            c->next = NULL;
            if (btail)
                btail->next = c;
            else
                batch = c;
            btail = c;
            ncmd++;
            bytes += c->req_len;
        }
        int stop = a->stopping && a->q_head == NULL && batch == NULL;
        pthread_mutex_unlock(&a->mu);
        if (stop)
            break;
        run_batch(a, batch);
    }
    return NULL;
}

static void on_async(uv_async_t *h)
{
    struct apply *a = h->data;
    int64_t rev = atomic_load(&a->committed_rev);
    if (rev > a->notified_rev) {
        a->notified_rev = rev;
        if (a->on_commit)
            a->on_commit(rev);
    }
    pthread_mutex_lock(&a->mu);
    struct apply_cmd *c = a->done_head;
    a->done_head = a->done_tail = NULL;
    pthread_mutex_unlock(&a->mu);
    while (c != NULL) {
        struct apply_cmd *next = c->next;
        c->next = NULL;
        metrics_proposal_done(c->rc);
        c->done(c);
        c = next;
    }
}

int apply_start(uv_loop_t *loop, struct mvcc *m, const struct apply_header *h,
                struct apply **out)
{
    struct apply *a = cairn_calloc(1, sizeof *a);
    struct mvcc_txn t;
    a->loop = loop;
    a->m = m;
    a->hdr = *h;
    pthread_mutex_init(&a->mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    uv_async_init(loop, &a->async, on_async);
    a->async.data = a;
    /* Resume a compaction a restart interrupted. */
    if (mvcc_read_begin(m, &t) == 0) {
        a->compacting = t.compact_rev > mvcc_compact_done(&t);
        a->notified_rev = t.rev;
        atomic_store(&a->committed_rev, t.rev);
        atomic_store(&a->index, (uint64_t)mvcc_meta_get(&t, "index", 0));
        mvcc_read_end(&t);
    }
    if (pthread_create(&a->thread, NULL, apply_main, a) != 0) {
        uv_close((uv_handle_t *)&a->async, NULL);
        cairn_free(a);
        return -1;
    }
    *out = a;
    return 0;
}

void apply_on_commit(struct apply *a, void (*fn)(int64_t rev))
{
    a->on_commit = fn;
}

void apply_submit(struct apply *a, struct apply_cmd *cmd)
{
    cmd->next = NULL;
    cmd->rc = 0;
    metrics_proposal_submitted();
    pthread_mutex_lock(&a->mu);
    if (a->q_tail)
        a->q_tail->next = cmd;
    else
        a->q_head = cmd;
    a->q_tail = cmd;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

static void on_async_closed(uv_handle_t *h)
{
    cairn_free(h->data);
}

void apply_stop(struct apply *a)
{
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    a->compacting = 0; /* resumed at the next start */
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    /* Physical compactions still waiting: report what they wait for has
     * been interrupted; the compaction itself is recorded and resumes. */
    if (a->physical) {
        struct apply_cmd *p = a->physical, *pt = p;
        while (pt->next)
            pt = pt->next;
        a->physical = NULL;
        push_done(a, p, pt);
    }
    on_async(&a->async);
    uv_close((uv_handle_t *)&a->async, on_async_closed);
    pthread_mutex_destroy(&a->mu);
    pthread_cond_destroy(&a->cv);
}

void apply_cmd_free(struct apply_cmd *cmd)
{
    if (cmd == NULL)
        return;
    cairn_free(cmd->req);
    cairn_free(cmd->resp);
    cairn_free(cmd);
}

uint64_t apply_index(struct apply *a)
{
    return atomic_load(&a->index);
}

unsigned apply_alarms(struct apply *a)
{
    return a->alarms;
}
