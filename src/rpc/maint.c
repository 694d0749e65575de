/* Maintenance.Status/Alarm, Cluster.MemberList and grpc.health.v1: enough
 * for etcdctl's endpoint and member commands and kube-apiserver's checks. */
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

#define DEFAULT_QUOTA ((int64_t)2 << 30)

void rpc_maint_status(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__StatusRequest *r =
        etcdserverpb__status_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__StatusResponse resp = ETCDSERVERPB__STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
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
    resp.leader = srv->member_id;
    resp.raftterm = srv->raft_term;
    resp.raftindex = apply_index(srv->apply);
    resp.raftappliedindex = resp.raftindex;
    resp.dbsizequota = srv->cfg.quota_backend_bytes > 0
                           ? srv->cfg.quota_backend_bytes
                           : DEFAULT_QUOTA;
    resp.storageversion = CAIRN_ETCD_CLUSTER_VERSION;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

/* No alarm can be raised yet (the quota is not enforced), so GET and
 * DEACTIVATE answer the empty list; ACTIVATE is not built. */
void rpc_maint_alarm(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AlarmRequest *r =
        etcdserverpb__alarm_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__AlarmResponse resp = ETCDSERVERPB__ALARM_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if (r->action == ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE) {
        grpc_finish(c, GRPC_UNIMPLEMENTED,
                    "cairn: raising alarms is not implemented yet");
        return;
    }
    rpc_header(&h, rpc_current_rev());
    resp.header = &h;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_cluster_member_list(struct grpc_call *c, const uint8_t *msg,
                             size_t len)
{
    Etcdserverpb__MemberListRequest *r =
        etcdserverpb__member_list_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__MemberListResponse resp =
        ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT, *mp = &m;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    rpc_header(&h, 0); /* etcd leaves the revision out here */
    m.id = srv->member_id;
    m.name = (char *)srv->cfg.name;
    m.n_peerurls = (size_t)srv->n_peer_urls;
    m.peerurls = srv->peer_urls;
    m.n_clienturls = (size_t)srv->n_client_urls;
    m.clienturls = srv->client_urls;
    resp.header = &h;
    resp.n_members = 1;
    resp.members = &mp;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
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
