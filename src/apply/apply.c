/* The apply thread: batch, apply in order, commit once, report. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply/apply.h"
#include "auth/auth.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypt/crypt.h"
#include "metrics/metrics.h"

/* Bounds on one group commit: enough to amortise the fsync, small enough
 * to keep latency and the LMDB txn's dirty pages in check. */
#define BATCH_MAX_CMDS 1024
#define BATCH_MAX_BYTES (32u << 20)
#define COMPACT_KEYS_PER_BATCH 1000
/* Re-encryption after a key change: records per group commit (and about
 * 4 MiB, mvcc_seal_step's own bound). */
#define SEAL_RECORDS_PER_BATCH 1000
/* Time one defragment step may punch holes for: with the freelist scan
 * before it, writes wait a few ms at most. */
#define DEFRAG_STEP_US 2000
/* How stale the in-use figure the quota checks may be. */
#define IN_USE_REFRESH_MS 10
#define MAX_ALARMS 64

struct defrag_waiter {
    void (*done)(void *ud, int rc, int64_t freed);
    void *ud;
    int rc;
    int64_t freed;
    struct defrag_waiter *next;
};

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
    int sealing;                  /* a re-encryption pass is pending */
    struct crypt_ring *seal_new;  /* a reread key file to install (mu) */
    _Atomic uint64_t index;        /* raft index the store holds */
    _Atomic uint64_t durable;      /* ... and holds durably (NOMETASYNC) */
    uint64_t synced_top;           /* apply thread: index of the last commit */
    int sync_req;                  /* under mu: apply_sync_to() waits */
    pthread_cond_t sync_cv;
    _Atomic uint64_t term;         /* for response headers */
    void (*on_effects)(struct apply_cmd *cmd);
    _Atomic unsigned alarms;       /* apply_alarms() */
    pthread_mutex_t alarm_mu;      /* alarm_list: apply thread writes */
    apply_alarm_t alarm_list[MAX_ALARMS];
    int n_alarms;
    _Atomic int64_t in_use;        /* apply_in_use() */
    uint64_t in_use_at;            /* apply thread: when in_use was read */
    struct defrag_waiter *defrag;  /* waiting for the running defragment */
    struct defrag_waiter *defrag_done; /* finished, for the loop */
    uint64_t defrag_from;          /* apply thread: next page to punch */
    int64_t defrag_freed;
    uint64_t defrag_start_us, defrag_max_step_us;
    int defrag_steps;
    int defrag_restart;            /* under mu: a new waiter joined */
    _Atomic int64_t committed_rev; /* store revision after the last commit */
    int64_t notified_rev;          /* loop thread: last passed to on_commit */
    void (*on_commit)(int64_t rev);
};

static void fill_header(struct apply *a, Etcdserverpb__ResponseHeader *h)
{
    h->cluster_id = a->hdr.cluster_id;
    h->member_id = a->hdr.member_id;
    h->raft_term = atomic_load(&a->term);
}

static void set_resp(struct apply_cmd *cmd, const ProtobufCMessage *m)
{
    if (cmd->no_resp)
        return;
    cmd->resp_len = protobuf_c_message_get_packed_size(m);
    cmd->resp = cairn_malloc(cmd->resp_len + 1);
    protobuf_c_message_pack(m, cmd->resp);
}

static int alarm_find(struct apply *a, uint64_t member, int type)
{
    for (int i = 0; i < a->n_alarms; i++)
        if (a->alarm_list[i].member == member && a->alarm_list[i].type == type)
            return i;
    return -1;
}

static void alarm_mask_update(struct apply *a)
{
    unsigned m = 0;
    for (int i = 0; i < a->n_alarms; i++)
        if (a->alarm_list[i].type >= 0 && a->alarm_list[i].type < 32)
            m |= 1u << a->alarm_list[i].type;
    atomic_store(&a->alarms, m);
}

static const char *alarm_name(int type)
{
    const ProtobufCEnumValue *v =
        protobuf_c_enum_descriptor_get_value(&etcdserverpb__alarm_type__descriptor, type);
    return v ? v->name : "UNKNOWN";
}

/* etcd's types.ID String(): lower-case hex without padding. */
static const char *member_hex(uint64_t id, char out[17])
{
    snprintf(out, 17, "%" PRIx64, id);
    return out;
}

/* etcd's applierV3backend.Alarm for ACTIVATE and DEACTIVATE: the response
 * names the alarm (already raised or not); deactivating one that is not
 * raised answers none. */
static int apply_alarm(struct apply *a, struct mvcc_txn *t,
                       const Etcdserverpb__AlarmRequest *r,
                       Etcdserverpb__AlarmResponse *resp,
                       Etcdserverpb__AlarmMember *m)
{
    int i = alarm_find(a, r->memberid, r->alarm), rc = 0;
    char hex[17];
    m->memberid = r->memberid;
    m->alarm = r->alarm;
    if (r->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        if (i < 0) {
            if (a->n_alarms == MAX_ALARMS)
                return CAIRN_ETOOMANYREQUESTS;
            if ((rc = mvcc_alarm_put(t, r->memberid, r->alarm)) != 0)
                return rc;
            pthread_mutex_lock(&a->alarm_mu);
            a->alarm_list[a->n_alarms].member = r->memberid;
            a->alarm_list[a->n_alarms].type = r->alarm;
            a->n_alarms++;
            pthread_mutex_unlock(&a->alarm_mu);
            alarm_mask_update(a);
            log_warnw("alarm raised", LOG_STR("alarm", alarm_name(r->alarm)),
                      LOG_STR("from", member_hex(r->memberid, hex)));
        }
        resp->n_alarms = 1;
        return 0;
    }
    if (r->action != ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE ||
        i < 0)
        return 0;
    if ((rc = mvcc_alarm_del(t, r->memberid, r->alarm)) < 0)
        return rc;
    pthread_mutex_lock(&a->alarm_mu);
    a->alarm_list[i] = a->alarm_list[--a->n_alarms];
    pthread_mutex_unlock(&a->alarm_mu);
    alarm_mask_update(a);
    log_warnw("alarm disarmed", LOG_STR("alarm", alarm_name(r->alarm)),
              LOG_STR("from", member_hex(r->memberid, hex)));
    resp->n_alarms = 1;
    return 0;
}

/* etcd's quota cost of a Txn: are there Puts among its top-level ops? */
/* Membership: etcd's checks, deterministic on every member. */
static int apply_member(struct mvcc_txn *t, struct apply_cmd *cmd,
                        struct arena *ar)
{
    Etcdserverpb__Member *r =
        etcdserverpb__member__unpack(&ar->pb, cmd->req_len, cmd->req);
    Etcdserverpb__Member *cur = NULL;
    const uint8_t *rec;
    size_t len;
    int rc;
    if (r == NULL || r->id == 0)
        return CAIRN_EBADMSG;
    rc = mvcc_member_get(t, r->id, &rec, &len);
    if (rc < 0)
        return rc;
    if (rc == 0 && (cur = etcdserverpb__member__unpack(&ar->pb, len, rec)) == NULL)
        return CAIRN_ESTORE;
    if (rc == 2) /* etcd: ErrIDRemoved; the member was removed for good */
        return cmd->op == APPLY_MEMBER_ADD ? CAIRN_EMEMBEREXIST
                                           : CAIRN_EMEMBERNOTFOUND;
    switch (cmd->op) {
    case APPLY_MEMBER_ADD:
        if (cur != NULL)
            return CAIRN_EMEMBEREXIST;
        cur = r;
        break;
    case APPLY_MEMBER_REMOVE:
        /* members of the initial cluster that never published have no
         * record; the proposer checked the ID is a member */
        return mvcc_member_remove(t, r->id);
    case APPLY_MEMBER_UPDATE:
        if (cur == NULL) {
            cur = r;
            break;
        }
        cur->n_peerurls = r->n_peerurls;
        cur->peerurls = r->peerurls;
        break;
    case APPLY_MEMBER_PROMOTE:
        if (cur == NULL)
            return CAIRN_EMEMBERNOTFOUND;
        if (!cur->islearner)
            return CAIRN_EMEMBERNOTLEARNER;
        cur->islearner = 0;
        break;
    case APPLY_MEMBER_PUBLISH:
        if (cur == NULL) {
            cur = r;
        } else {
            cur->name = r->name;
            cur->n_clienturls = r->n_clienturls;
            cur->clienturls = r->clienturls;
        }
        break;
    default:
        return CAIRN_EBADMSG;
    }
    len = etcdserverpb__member__get_packed_size(cur);
    uint8_t *b = arena_alloc(ar, len + 1);
    etcdserverpb__member__pack(cur, b);
    return mvcc_member_put(t, r->id, b, len);
}

static int txn_puts(const Etcdserverpb__TxnRequest *r)
{
    for (size_t i = 0; i < r->n_success; i++)
        if (r->success[i]->request_case ==
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            return 1;
    for (size_t i = 0; i < r->n_failure; i++)
        if (r->failure[i]->request_case ==
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            return 1;
    return 0;
}

/* Applies one command inside the shared write txn. On error nothing of it
 * was written (requests are validated before any write). */
static int apply_one(struct apply *a, struct mvcc_txn *t, struct apply_cmd *cmd,
                     struct arena *ar, int *physical)
{
    int rc = CAIRN_EBADMSG;
    unsigned alarms = atomic_load(&a->alarms);
    *physical = 0;
    /* etcd's corrupt applier refuses every write; its capped applier
     * (NOSPACE) refuses what would grow the store. */
    if ((alarms & (1u << ETCDSERVERPB__ALARM_TYPE__CORRUPT)) &&
        cmd->op != APPLY_ALARM &&
        !(cmd->op >= APPLY_MEMBER_ADD && cmd->op <= APPLY_MEMBER_PUBLISH))
        return CAIRN_ECORRUPT;
    if ((alarms & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE)) &&
        (cmd->op == APPLY_PUT || cmd->op == APPLY_LEASE_GRANT))
        return CAIRN_ECAPPED;
    /* Permissions were decided on the loop at cmd->auth_rev; etcd decides
     * at apply, so a change to the auth state in between fails the write. */
    if (cmd->auth_rev != 0 && (rc = auth_apply_check(t, cmd->auth_rev)) != 0)
        return rc;
    rc = CAIRN_EBADMSG;
    if (cmd->op >= APPLY_MEMBER_ADD && cmd->op <= APPLY_MEMBER_PUBLISH)
        return apply_member(t, cmd, ar);
    if (cmd->op >= APPLY_AUTH_ENABLE) {
        Etcdserverpb__AuthEnableResponse resp =
            ETCDSERVERPB__AUTH_ENABLE_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        rc = auth_apply(t, (int)cmd->op, cmd->req, cmd->req_len, ar);
        if (rc == 0) {
            /* every auth response is just a header (field 1) */
            fill_header(a, &h);
            h.revision = t->rev;
            resp.header = &h;
            set_resp(cmd, &resp.base);
        }
        return rc;
    }
    switch (cmd->op) {
    case APPLY_ALARM: {
        Etcdserverpb__AlarmRequest *r = etcdserverpb__alarm_request__unpack(
            &ar->pb, cmd->req_len, cmd->req);
        Etcdserverpb__AlarmResponse resp = ETCDSERVERPB__ALARM_RESPONSE__INIT;
        Etcdserverpb__AlarmMember m = ETCDSERVERPB__ALARM_MEMBER__INIT, *mp = &m;
        if (r == NULL)
            break;
        resp.alarms = &mp;
        rc = apply_alarm(a, t, r, &resp, &m);
        if (rc == 0) /* etcd 3.4 answers alarms without a header */
            set_resp(cmd, &resp.base);
        break;
    }
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
        if ((alarms & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE)) && txn_puts(r)) {
            rc = CAIRN_ECAPPED;
            break;
        }
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
    default: /* auth commands: above */
        break;
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

static uint64_t now_us(void)
{
    return uv_hrtime() / 1000;
}

static void refresh_in_use(struct apply *a, int force)
{
    uint64_t now = now_us();
    int64_t size, in_use;
    if (!force && now - a->in_use_at < IN_USE_REFRESH_MS * 1000)
        return;
    mvcc_size(a->m, &size, &in_use);
    atomic_store(&a->in_use, in_use);
    a->in_use_at = now;
}

/* One defragment step between commits; when the pass is over, everyone
 * waiting hears the result. */
/* mdb_env_sync: everything committed is durable. */
static void sync_now(struct apply *a)
{
    if (mvcc_sync(a->m) == 0)
        atomic_store(&a->durable, a->synced_top);
    pthread_mutex_lock(&a->mu);
    a->sync_req = 0;
    pthread_cond_broadcast(&a->sync_cv);
    pthread_mutex_unlock(&a->mu);
}

static void defrag_step(struct apply *a)
{
    uint64_t t0 = now_us();
    /* Punch only pages the durable meta page no longer reaches: a machine
     * crash falls back to it, never to an older one. */
    if (atomic_load(&a->durable) != a->synced_top)
        sync_now(a);
    if (a->defrag_steps == 0)
        a->defrag_start_us = t0;
    int rc = mvcc_defrag_step(a->m, &a->defrag_from, DEFRAG_STEP_US,
                              &a->defrag_freed);
    uint64_t took = now_us() - t0;
    if (took > a->defrag_max_step_us)
        a->defrag_max_step_us = took;
    a->defrag_steps++;
    if (rc == 1)
        return;
    if (rc == 0)
        log_infow("finished defragment", LOG_INT("freed-bytes", a->defrag_freed),
                  LOG_INT("steps", a->defrag_steps),
                  LOG_UINT("took-us", now_us() - a->defrag_start_us),
                  LOG_UINT("longest-step-us", a->defrag_max_step_us));
    else
        log_warnw("failed to defragment", LOG_STR("error", cairn_err_msg(rc)));
    pthread_mutex_lock(&a->mu);
    struct defrag_waiter *w = a->defrag, *last = NULL;
    for (; w != NULL; w = w->next) {
        w->rc = rc;
        w->freed = a->defrag_freed;
        last = w;
    }
    if (last != NULL) {
        last->next = a->defrag_done;
        a->defrag_done = a->defrag;
    }
    a->defrag = NULL;
    pthread_mutex_unlock(&a->mu);
    a->defrag_from = 0;
    a->defrag_freed = 0;
    a->defrag_steps = 0;
    a->defrag_max_step_us = 0;
    refresh_in_use(a, 1);
    uv_async_send(&a->async);
}

static void scrub_done(void *ud, int rc, int64_t freed)
{
    (void)ud;
    if (rc == 0)
        log_infow("apply: old copies of re-encrypted records scrubbed from "
                  "the file (defragment)", LOG_INT("freed-bytes", freed));
    else
        log_warnw("apply: cannot scrub old copies of re-encrypted records; "
                  "run a defragment", LOG_STR("error", cairn_err_msg(rc)));
}

/* One group commit over the commands in @batch (may be empty when only
 * compaction work is pending). */
static void run_batch(struct apply *a, struct apply_cmd *batch)
{
    struct mvcc_txn t;
    struct arena ar;
    struct apply_cmd *tail = NULL, *phys_head = NULL, *phys_tail = NULL;
    struct apply_cmd *done_head = NULL;
    uint64_t n = 0, held = atomic_load(&a->index), top = held;
    int rc, fatal = 0, scrub = 0;

    arena_init(&ar);
    rc = mvcc_write_begin(a->m, &t);
    if (rc == 0) {
        struct apply_cmd *c = batch, *next;
        for (; c != NULL; c = next) {
            int physical = 0;
            int64_t t0 = metrics_now_ns();
            next = c->next;
            c->next = NULL;
            if (c->op == APPLY_FENCE || (c->index != 0 && c->index <= held)) {
                /* A fence, or an entry the store already holds (replayed
                 * after a restart, or covered by a store image): its
                 * effect is in, its reply is not known here. */
                if (c->op != APPLY_FENCE)
                    c->rc = CAIRN_ETIMEOUT;
                if (tail)
                    tail->next = c;
                else
                    done_head = c;
                tail = c;
                continue;
            }
            if (c->index > top)
                top = c->index;
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
        if (rc == 0 && top > held)
            rc = mvcc_meta_put(&t, "raft_index", (int64_t)top);
        if (rc == 0 && a->compacting) {
            int more = mvcc_compact_step(&t, COMPACT_KEYS_PER_BATCH);
            if (more < 0) {
                log_error("apply: compaction step failed rc=%d", more);
                rc = more; /* it may have deleted part of a key's history */
            }
            a->compacting = more > 0;
        }
        if (rc == 0 && a->sealing) {
            int more = mvcc_seal_step(&t, SEAL_RECORDS_PER_BATCH);
            if (more < 0) {
                /* Re-sealed records are whole and the position did not
                 * move: what is written stays valid. The pass stops until
                 * the key file is reread or the server restarts. */
                log_errorw("apply: re-encryption step failed; the pass stops",
                           LOG_STR("error", cairn_err_msg(more)));
            }
            a->sealing = more == 1;
            /* The old copies of re-sealed records (plaintext, or under the
             * old key) are in free pages now: punch them out of the file
             * once this commit has freed them. */
            scrub = more == 2;
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
        atomic_store(&a->index, top);
        /* this commit's data sync made the previous commit's meta page
         * durable */
        atomic_store(&a->durable, a->synced_top);
        a->synced_top = top;
        atomic_store(&a->committed_rev, t.rev);
        refresh_in_use(a, 0);
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
    if (scrub && rc == 0)
        apply_defrag(a, scrub_done, NULL);
}

/* A reread key file, between batches (no write txn open): new writes use
 * its first key from the next batch on. */
static void seal_install(struct apply *a, struct crypt_ring *ring)
{
    char err[256];
    int rotated;
    int rc = mvcc_seal_install(a->m, ring, &rotated, err, sizeof err);
    if (rc != 0) {
        log_errorw("apply: encryption key file rejected; the keys in use stay",
                   LOG_STR("error", err));
        crypt_ring_free(ring);
        return;
    }
    log_infow("apply: encryption key file reloaded",
              LOG_STR("key-id", ring->keys[0].name), LOG_INT("keys", ring->n),
              LOG_BOOL("rotation", rotated));
    if (rotated)
        metrics_encryption_rotated();
    a->sealing = 1;
}

static void *apply_main(void *arg)
{
    struct apply *a = arg;
    for (;;) {
        struct apply_cmd *batch = NULL, *btail = NULL;
        size_t ncmd = 0, bytes = 0;
        pthread_mutex_lock(&a->mu);
        while (a->q_head == NULL && !a->stopping && !a->compacting &&
               a->defrag == NULL && !a->sealing && a->seal_new == NULL &&
               !a->sync_req)
            pthread_cond_wait(&a->cv, &a->mu);
        int want_sync = a->sync_req;
        struct crypt_ring *ring = a->stopping ? NULL : a->seal_new;
        if (ring != NULL)
            a->seal_new = NULL;
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
        int defrag = a->defrag != NULL && !a->stopping;
        if (a->defrag_restart) {
            a->defrag_from = 0;
            a->defrag_restart = 0;
        }
        pthread_mutex_unlock(&a->mu);
        if (stop)
            break;
        if (ring != NULL)
            seal_install(a, ring);
        if (batch != NULL || a->compacting || a->sealing)
            run_batch(a, batch);
        if (want_sync)
            sync_now(a);
        if (defrag)
            defrag_step(a);
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
    struct defrag_waiter *w = a->defrag_done;
    a->done_head = a->done_tail = NULL;
    a->defrag_done = NULL;
    pthread_mutex_unlock(&a->mu);
    while (w != NULL) {
        struct defrag_waiter *next = w->next;
        w->done(w->ud, w->rc, w->freed);
        cairn_free(w);
        w = next;
    }
    while (c != NULL) {
        struct apply_cmd *next = c->next;
        c->next = NULL;
        if (c->op != APPLY_FENCE) {
            if (c->proposed)
                metrics_proposal_done(c->rc);
            if (a->on_effects)
                a->on_effects(c);
        }
        c->done(c);
        c = next;
    }
}

static int restore_alarm(void *ud, uint64_t member, int type)
{
    struct apply *a = ud;
    if (a->n_alarms == MAX_ALARMS || alarm_find(a, member, type) >= 0)
        return 0;
    a->alarm_list[a->n_alarms].member = member;
    a->alarm_list[a->n_alarms].type = type;
    a->n_alarms++;
    return 0;
}

int apply_start(uv_loop_t *loop, struct mvcc *m, const struct apply_header *h,
                struct apply **out)
{
    struct apply *a = cairn_calloc(1, sizeof *a);
    struct mvcc_txn t;
    a->loop = loop;
    a->m = m;
    a->hdr = *h;
    atomic_store(&a->term, h->raft_term);
    pthread_mutex_init(&a->mu, NULL);
    pthread_mutex_init(&a->alarm_mu, NULL);
    pthread_cond_init(&a->cv, NULL);
    pthread_cond_init(&a->sync_cv, NULL);
    uv_async_init(loop, &a->async, on_async);
    a->async.data = a;
    /* Resume a compaction a restart interrupted. */
    if (mvcc_read_begin(m, &t) == 0) {
        a->compacting = t.compact_rev > mvcc_compact_done(&t);
        /* Resume a re-encryption pass (the first step finds out whether
         * one is pending). */
        a->sealing = mvcc_sealed(m);
        a->notified_rev = t.rev;
        atomic_store(&a->committed_rev, t.rev);
        atomic_store(&a->index, (uint64_t)mvcc_meta_get(&t, "raft_index", 0));
        /* what a reopened store holds is durable */
        atomic_store(&a->durable, atomic_load(&a->index));
        a->synced_top = atomic_load(&a->index);
        mvcc_alarms(&t, restore_alarm, a);
        mvcc_read_end(&t);
    }
    alarm_mask_update(a);
    refresh_in_use(a, 1);
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

void apply_on_effects(struct apply *a, void (*fn)(struct apply_cmd *cmd))
{
    a->on_effects = fn;
}

void apply_set_term(struct apply *a, uint64_t term)
{
    atomic_store(&a->term, term);
}

struct fence {
    struct apply_cmd cmd; /* first: done() gets &fence->cmd */
    void (*done)(void *ud);
};

static void fence_done(struct apply_cmd *cmd)
{
    struct fence *f = (struct fence *)cmd;
    f->done(cmd->ud);
    cairn_free(f);
}

void apply_fence(struct apply *a, void (*done)(void *ud), void *ud)
{
    struct fence *f = cairn_calloc(1, sizeof *f);
    f->cmd.op = APPLY_FENCE;
    f->cmd.done = fence_done;
    f->cmd.ud = ud;
    f->done = done;
    apply_submit(a, &f->cmd);
}

void apply_submit(struct apply *a, struct apply_cmd *cmd)
{
    cmd->next = NULL;
    cmd->rc = 0;
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
    a->sealing = 0;    /* likewise */
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    crypt_ring_free(a->seal_new);
    a->seal_new = NULL;
    /* A defragment in progress is abandoned; its waiters hear so. */
    for (struct defrag_waiter *w = a->defrag; w != NULL; w = w->next)
        w->rc = CAIRN_ESTOPPED;
    if (a->defrag != NULL) {
        struct defrag_waiter *last = a->defrag;
        while (last->next)
            last = last->next;
        last->next = a->defrag_done;
        a->defrag_done = a->defrag;
        a->defrag = NULL;
    }
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
    pthread_mutex_destroy(&a->alarm_mu);
    pthread_cond_destroy(&a->cv);
    pthread_cond_destroy(&a->sync_cv);
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

int apply_alarm_list(struct apply *a, apply_alarm_t *out, int max)
{
    pthread_mutex_lock(&a->alarm_mu);
    int n = a->n_alarms < max ? a->n_alarms : max;
    memcpy(out, a->alarm_list, (size_t)n * sizeof *out);
    pthread_mutex_unlock(&a->alarm_mu);
    return n;
}

int64_t apply_in_use(struct apply *a)
{
    return atomic_load(&a->in_use);
}

void apply_seal_reload(struct apply *a, struct crypt_ring *ring)
{
    pthread_mutex_lock(&a->mu);
    if (a->seal_new != NULL) /* superseded before it was installed */
        crypt_ring_free(a->seal_new);
    a->seal_new = ring;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

void apply_defrag(struct apply *a, void (*done)(void *ud, int rc, int64_t freed),
                  void *ud)
{
    struct defrag_waiter *w = cairn_calloc(1, sizeof *w);
    w->done = done;
    w->ud = ud;
    pthread_mutex_lock(&a->mu);
    w->next = a->defrag;
    a->defrag = w;
    /* pages freed since a running pass began are behind its cursor */
    a->defrag_restart = 1;
    pthread_cond_signal(&a->cv);
    pthread_mutex_unlock(&a->mu);
}

int64_t apply_rev(struct apply *a)
{
    return atomic_load(&a->committed_rev);
}

uint64_t apply_durable_index(struct apply *a)
{
    return atomic_load(&a->durable);
}

int apply_sync_to(struct apply *a, uint64_t index)
{
    /* bounded: a stuck disk fails the snapshot rather than a thread */
    for (int i = 0; i < 300 && atomic_load(&a->durable) < index; i++) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&a->mu);
        if (a->stopping) {
            pthread_mutex_unlock(&a->mu);
            return CAIRN_ESTOPPED;
        }
        if (atomic_load(&a->index) >= index) {
            a->sync_req = 1;
            pthread_cond_signal(&a->cv);
        }
        pthread_cond_timedwait(&a->sync_cv, &a->mu, &ts);
        pthread_mutex_unlock(&a->mu);
    }
    return atomic_load(&a->durable) >= index ? 0 : CAIRN_ETIMEOUT;
}
