/* Path -> handler. Every method of etcd's API is listed; those not built
 * yet answer UNIMPLEMENTED, never a fake success. */
#include <stdio.h>
#include <string.h>

#include "repl/repl.h"
#include "rpc/rpc.h"

struct route {
    const char *path;
    rpc_handler fn; /* NULL: known, not built yet */
};

static const struct route routes[] = {
    {"/etcdserverpb.KV/Range", rpc_kv_range},
    {"/etcdserverpb.KV/Put", rpc_kv_put},
    {"/etcdserverpb.KV/DeleteRange", rpc_kv_delete_range},
    {"/etcdserverpb.KV/Txn", rpc_kv_txn},
    {"/etcdserverpb.KV/Compact", rpc_kv_compact},
    {"/etcdserverpb.KV/RangeStream", rpc_kv_range_stream},
    {"/etcdserverpb.Watch/Watch", rpc_watch},
    {"/etcdserverpb.Lease/LeaseGrant", rpc_lease_grant},
    {"/etcdserverpb.Lease/LeaseRevoke", rpc_lease_revoke},
    {"/etcdserverpb.Lease/LeaseKeepAlive", rpc_lease_keepalive},
    {"/etcdserverpb.Lease/LeaseTimeToLive", rpc_lease_ttl},
    {"/etcdserverpb.Lease/LeaseLeases", rpc_lease_leases},
    {"/etcdserverpb.Cluster/MemberAdd", rpc_cluster_member_add},
    {"/etcdserverpb.Cluster/MemberRemove", rpc_cluster_member_remove},
    {"/etcdserverpb.Cluster/MemberUpdate", rpc_cluster_member_update},
    {"/etcdserverpb.Cluster/MemberList", rpc_cluster_member_list},
    {"/etcdserverpb.Cluster/MemberPromote", rpc_cluster_member_promote},
    {"/etcdserverpb.Maintenance/Alarm", rpc_maint_alarm},
    {"/etcdserverpb.Maintenance/Status", rpc_maint_status},
    {"/etcdserverpb.Maintenance/Defragment", rpc_maint_defragment},
    {"/etcdserverpb.Maintenance/Hash", rpc_maint_hash},
    {"/etcdserverpb.Maintenance/HashKV", rpc_maint_hashkv},
    {"/etcdserverpb.Maintenance/Snapshot", rpc_maint_snapshot},
    {"/etcdserverpb.Maintenance/MoveLeader", rpc_maint_move_leader},
    {"/etcdserverpb.Maintenance/Downgrade", NULL},
    {"/etcdserverpb.Auth/AuthEnable", rpc_auth_enable},
    {"/etcdserverpb.Auth/AuthDisable", rpc_auth_disable},
    {"/etcdserverpb.Auth/AuthStatus", rpc_auth_status},
    {"/etcdserverpb.Auth/Authenticate", rpc_auth_authenticate},
    {"/etcdserverpb.Auth/UserAdd", rpc_auth_user_add},
    {"/etcdserverpb.Auth/UserGet", rpc_auth_user_get},
    {"/etcdserverpb.Auth/UserList", rpc_auth_user_list},
    {"/etcdserverpb.Auth/UserDelete", rpc_auth_user_delete},
    {"/etcdserverpb.Auth/UserChangePassword", rpc_auth_user_change_password},
    {"/etcdserverpb.Auth/UserGrantRole", rpc_auth_user_grant_role},
    {"/etcdserverpb.Auth/UserRevokeRole", rpc_auth_user_revoke_role},
    {"/etcdserverpb.Auth/RoleAdd", rpc_auth_role_add},
    {"/etcdserverpb.Auth/RoleGet", rpc_auth_role_get},
    {"/etcdserverpb.Auth/RoleList", rpc_auth_role_list},
    {"/etcdserverpb.Auth/RoleDelete", rpc_auth_role_delete},
    {"/etcdserverpb.Auth/RoleGrantPermission", rpc_auth_role_grant_permission},
    {"/etcdserverpb.Auth/RoleRevokePermission", rpc_auth_role_revoke_permission},
    {"/v3lockpb.Lock/Lock", rpc_lock_lock},
    {"/v3lockpb.Lock/Unlock", rpc_lock_unlock},
    {"/v3electionpb.Election/Campaign", rpc_election_campaign},
    {"/v3electionpb.Election/Proclaim", rpc_election_proclaim},
    {"/v3electionpb.Election/Leader", rpc_election_leader},
    {"/v3electionpb.Election/Observe", rpc_election_observe},
    {"/v3electionpb.Election/Resign", rpc_election_resign},
    {"/grpc.health.v1.Health/Check", rpc_health_check},
    {"/grpc.health.v1.Health/Watch", rpc_health_watch},
};

static int learner_ok(const char *path)
{
    return strcmp(path, "/etcdserverpb.Maintenance/Status") == 0 ||
           strcmp(path, "/etcdserverpb.KV/Range") == 0 ||
           strncmp(path, "/grpc.health.v1.Health/", 23) == 0;
}

void rpc_dispatch(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    char m[256];
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (strcmp(c->path, routes[i].path) != 0)
            continue;
        if (routes[i].fn == NULL) {
            snprintf(m, sizeof m, "cairn: %s is not implemented yet", c->path + 1);
            grpc_finish(c, GRPC_UNIMPLEMENTED, m);
            return;
        }
        /* etcd's interceptors: a learner serves Status and serializable
         * Ranges only (Range checks the latter); a client that asked for
         * a leader hears there is none */
        if (repl_is_learner() && !learner_ok(c->path)) {
            grpc_finish_err(c, CAIRN_ENOTLEARNERRPC);
            return;
        }
        if (c->has_leader_md && repl_leader() == 0) {
            grpc_finish_err(c, CAIRN_ENOLEADER);
            return;
        }
        routes[i].fn(c, msg, len);
        return;
    }
    /* grpc-go's texts for unknown services and methods. */
    const char *svc = c->path + 1, *slash = strchr(svc, '/');
    if (slash == NULL) {
        snprintf(m, sizeof m, "malformed method name: \"%s\"", c->path);
        grpc_finish(c, GRPC_UNIMPLEMENTED, m);
        return;
    }
    int known = 0;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strncmp(routes[i].path + 1, svc, (size_t)(slash - svc) + 1) == 0)
            known = 1;
    if (known)
        snprintf(m, sizeof m, "unknown method %s for service %.*s", slash + 1,
                 (int)(slash - svc), svc);
    else
        snprintf(m, sizeof m, "unknown service %.*s", (int)(slash - svc), svc);
    grpc_finish(c, GRPC_UNIMPLEMENTED, m);
}
