/* Maintenance (Status, Alarm and the quota, Hash, HashKV, Defragment,
 * MoveLeader), Cluster.MemberList and grpc.health.v1. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "core/log.h"
#include "core/mem.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

#define DEFAULT_QUOTA ((int64_t)2 << 30)

int64_t rpc_quota_bytes(void)
{
    int64_t q = srv->cfg.quota_backend_bytes;
    return q == 0 ? DEFAULT_QUOTA : q < 0 ? 0 : q;
}

/* etcd's quota costs (etcdserver/quota.go): a Put is its key and value
 * plus 256 bytes of metadata, a Txn its larger branch, a lease 64. */
#define KV_OVERHEAD 256
#define LEASE_OVERHEAD 64

int64_t rpc_cost_put(const Etcdserverpb__PutRequest *r)
{
    return KV_OVERHEAD + (int64_t)r->key.len + (int64_t)r->value.len;
}

int64_t rpc_cost_txn(const Etcdserverpb__TxnRequest *r)
{
    int64_t s = 0, f = 0;
    for (size_t i = 0; i < r->n_success; i++)
        if (r->success[i]->request_case ==
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            s += rpc_cost_put(r->success[i]->request_put);
    for (size_t i = 0; i < r->n_failure; i++)
        if (r->failure[i]->request_case ==
            ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT)
            f += rpc_cost_put(r->failure[i]->request_put);
    return s > f ? s : f;
}

int64_t rpc_cost_lease(void)
{
    return LEASE_OVERHEAD;
}

/* The call fails once the alarm is raised (etcd's quotaAlarmer waits for
 * the alarm's proposal before it answers). */
static void alarm_raised(struct apply_cmd *cmd)
{
    struct grpc_call *c = rpc_wait_take(cmd->ud);
    if (c != NULL)
        grpc_finish_err(c, CAIRN_ECAPPED);
    apply_cmd_free(cmd);
}

/* etcd's quota check before a write is proposed: when the write would not
 * fit, NOSPACE is raised for this member and the write refused. The store's
 * pages in use are the measure (etcd uses the file size), so space that
 * compaction frees counts at once, without a defragment. */
int rpc_quota_check(struct grpc_call *c, int64_t cost)
{
    int64_t q = rpc_quota_bytes();
    if (q == 0 || cost == 0 || apply_in_use(srv->apply) + cost < q)
        return 0;
    if (!(apply_alarms(srv->apply) & (1u << ETCDSERVERPB__ALARM_TYPE__NOSPACE))) {
        Etcdserverpb__AlarmRequest r = ETCDSERVERPB__ALARM_REQUEST__INIT;
        r.action = ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE;
        r.memberid = srv->member_id;
        r.alarm = ETCDSERVERPB__ALARM_TYPE__NOSPACE;
        repl_submit_msg(APPLY_ALARM, &r.base, alarm_raised, rpc_wait_new(c));
        return 1;
    }
    return CAIRN_ECAPPED;
}

/* gogoproto's String() of an AlarmMember, which etcd puts in
 * Status.errors. */
static char *alarm_string(struct arena *a, uint64_t member, int type)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &etcdserverpb__alarm_type__descriptor, type);
    char *s = arena_alloc(a, 96);
    snprintf(s, 96, "memberID:%" PRIu64 " alarm:%s ", member, v ? v->name : "?");
    return s;
}

void rpc_maint_status(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__StatusRequest *r =
        etcdserverpb__status_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__StatusResponse resp = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__DowngradeInfo dg = ETCDSERVERPB__DOWNGRADE_INFO__INIT;
    apply_alarm_t al[16];
    int64_t size, in_use;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    rpc_header(&h, rpc_current_rev());
    mvcc_size(srv->mvcc, &size, &in_use);
    resp.header = &h;
    resp.version = CAIRN_ETCD_VERSION;
    resp.dbsize = size;
    resp.dbsizeinuse = in_use;
    resp.leader = repl_leader_now();
    resp.raftterm = repl_term_now();
    resp.raftindex = repl_commit_index();
    resp.raftappliedindex = apply_index(srv->apply);
    resp.islearner = repl_is_learner();
    resp.dbsizequota = rpc_quota_bytes();
    resp.storageversion = CAIRN_ETCD_CLUSTER_VERSION;
    resp.downgradeinfo = &dg; /* etcd 3.6 always sends it; none running */
    resp.n_errors = (size_t)apply_alarm_list(srv->apply, al, 16);
    resp.errors = arena_alloc(&c->arena, (resp.n_errors + 2) * sizeof(char *));
    for (size_t i = 0; i < resp.n_errors; i++)
        resp.errors[i] = alarm_string(&c->arena, al[i].member, al[i].type);
    if (resp.leader == 0) /* etcd 3.4's Status says so too */
        resp.errors[resp.n_errors++] = (char *)"etcdserver: no leader";
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

/* GET answers from the raised alarms (all, or those of one type);
 * ACTIVATE and DEACTIVATE go through the write path, as in etcd. */
void rpc_maint_alarm(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AlarmRequest *r =
        etcdserverpb__alarm_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__AlarmResponse resp = ETCDSERVERPB__ALARM_RESPONSE__INIT;
    apply_alarm_t al[64];

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    /* etcd: a raft request, so only the token is checked */
    int rc = rpc_auth_token(c);
    if (rc != 0) {
        rpc_auth_finish_maint(c, rc); /* maintenance: etcd's raw error */
        return;
    }
    if (r->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE ||
        r->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE) {
        rpc_submit(c, APPLY_ALARM, msg, len, rpc_write_done);
        return;
    }
    int n = apply_alarm_list(srv->apply, al, 64);
    resp.alarms = arena_alloc(&c->arena, (size_t)(n + 1) * sizeof *resp.alarms);
    for (int i = 0; i < n; i++) {
        if (r->alarm != ETCDSERVERPB__ALARM_TYPE__NONE && al[i].type != (int)r->alarm)
            continue;
        Etcdserverpb__AlarmMember *m = arena_alloc(&c->arena, sizeof *m);
        etcdserverpb__alarm_member__init(m);
        m->memberid = al[i].member;
        m->alarm = al[i].type;
        resp.alarms[resp.n_alarms++] = m;
    }
    /* etcd 3.4 answers alarms without a header */
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

/* Hash and HashKV read the whole store: on the thread pool. */
struct hash_job {
    uv_work_t work;
    struct grpc_call *c; /* NULL once the call has gone */
    int kv;              /* HashKV */
    int64_t rev, compact_rev, cur_rev;
    uint32_t hash;
    int rc;
};

static void hash_job_cancel(struct grpc_call *c)
{
    struct hash_job *j = c->ud;
    if (j != NULL)
        j->c = NULL;
    c->ud = NULL;
}

static void hash_work(uv_work_t *w)
{
    struct hash_job *j = (struct hash_job *)w;
    struct mvcc_txn t;
    if ((j->rc = mvcc_read_begin(srv->mvcc, &t)) != 0)
        return;
    j->cur_rev = t.rev;
    j->rc = j->kv ? mvcc_hash_kv(&t, j->rev, &j->hash, &j->compact_rev)
                  : mvcc_hash(&t, &j->hash);
    mvcc_read_end(&t);
}

static void hash_after(uv_work_t *w, int status)
{
    struct hash_job *j = (struct hash_job *)w;
    struct grpc_call *c = j->c;
    (void)status;
    if (c != NULL) {
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        c->ud = NULL;
        c->on_cancel = NULL;
        rpc_header(&h, j->cur_rev);
        if (j->rc != 0) {
            grpc_finish_err(c, j->rc);
        } else if (j->kv) {
            Etcdserverpb__HashKVResponse resp = ETCDSERVERPB__HASH_KVRESPONSE__INIT;
            resp.header = &h;
            resp.hash = j->hash;
            resp.compact_revision = j->compact_rev;
            grpc_send_pb(c, &resp);
            grpc_finish(c, GRPC_OK, NULL);
        } else {
            Etcdserverpb__HashResponse resp = ETCDSERVERPB__HASH_RESPONSE__INIT;
            resp.header = &h;
            resp.hash = j->hash;
            grpc_send_pb(c, &resp);
            grpc_finish(c, GRPC_OK, NULL);
        }
    }
    cairn_free(j);
}

static void hash_start(struct grpc_call *c, int kv, int64_t rev)
{
    struct hash_job *j = cairn_calloc(1, sizeof *j);
    j->c = c;
    j->kv = kv;
    j->rev = rev;
    c->ud = j;
    c->on_cancel = hash_job_cancel;
    if (uv_queue_work(srv->loop, &j->work, hash_work, hash_after) != 0) {
        c->ud = NULL;
        c->on_cancel = NULL;
        cairn_free(j);
        grpc_finish_err(c, CAIRN_ESTORE);
    }
}

void rpc_maint_hash(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__HashRequest *r =
        etcdserverpb__hash_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    int rc = rpc_auth_admin(c);
    if (rc != 0) {
        rpc_auth_finish_maint(c, rc);
        return;
    }
    hash_start(c, 0, 0);
}

void rpc_maint_hashkv(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__HashKVRequest *r =
        etcdserverpb__hash_kvrequest__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    int rc = rpc_auth_admin(c);
    if (rc != 0) {
        rpc_auth_finish_maint(c, rc);
        return;
    }
    hash_start(c, 1, r->revision);
}

struct defrag_req {
    struct grpc_call *c; /* NULL once the call has gone */
};

static void defrag_cancel(struct grpc_call *c)
{
    struct defrag_req *d = c->ud;
    if (d != NULL)
        d->c = NULL;
    c->ud = NULL;
}

static void defrag_done(void *ud, int rc, int64_t freed)
{
    struct defrag_req *d = ud;
    struct grpc_call *c = d->c;
    (void)freed;
    if (c != NULL) {
        c->ud = NULL;
        c->on_cancel = NULL;
        if (rc != 0) {
            grpc_finish_err(c, rc);
        } else {
            Etcdserverpb__DefragmentResponse resp =
                ETCDSERVERPB__DEFRAGMENT_RESPONSE__INIT;
            Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
            rpc_header(&h, rpc_current_rev());
            resp.header = &h;
            grpc_send_pb(c, &resp);
            grpc_finish(c, GRPC_OK, NULL);
        }
    }
    cairn_free(d);
}

/* Online: free pages go back to the OS in short steps between commits;
 * writes go on (etcd's Defragment rewrites the file and blocks them). */
void rpc_maint_defragment(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__DefragmentRequest *r =
        etcdserverpb__defragment_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        rpc_auth_finish_maint(c, rc);
        return;
    }
    struct defrag_req *d = cairn_calloc(1, sizeof *d);
    d->c = c;
    c->ud = d;
    c->on_cancel = defrag_cancel;
    log_infow("starting defragment", LOG_STR("mode", "online"));
    apply_defrag(srv->apply, defrag_done, d);
}

/* MoveLeader: raft's leadership transfer, on the leader only (etcd 3.4
 * answers "etcdserver: not leader" elsewhere). */
static void move_done(void *ud, int rc, uint64_t id)
{
    struct grpc_call *c = rpc_wait_take(ud);
    Etcdserverpb__MoveLeaderResponse resp = ETCDSERVERPB__MOVE_LEADER_RESPONSE__INIT;
    (void)id;
    if (c == NULL) /* the call went away */
        return;
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    /* etcd 3.4 answers an empty MoveLeaderResponse: no header at all */
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_maint_move_leader(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__MoveLeaderRequest *r =
        etcdserverpb__move_leader_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    repl_transfer(r->targetid, move_done, rpc_wait_new(c));
}

static int health_service_known(const Grpc__Health__V1__HealthCheckRequest *r)
{
    return r->service == NULL || r->service[0] == 0;
}

void rpc_health_check(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Grpc__Health__V1__HealthCheckRequest *r =
        grpc__health__v1__health_check_request__unpack(&c->arena.pb, len, msg);
    Grpc__Health__V1__HealthCheckResponse resp =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if (!health_service_known(r)) {
        grpc_finish(c, GRPC_NOT_FOUND, "unknown service");
        return;
    }
    resp.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

/* Watch: the status now, then the stream stays open (the status of a
 * running member does not change until it stops). */
void rpc_health_watch(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Grpc__Health__V1__HealthCheckRequest *r =
        grpc__health__v1__health_check_request__unpack(&c->arena.pb, len, msg);
    Grpc__Health__V1__HealthCheckResponse resp =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    resp.status =
        health_service_known(r)
            ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    c->long_lived = 1;
    grpc_send_pb(c, &resp);
}
