/* The gRPC services: one handler per RPC, found by path in dispatch.c.
 * Handlers unpack into the call's arena, validate, and either answer at
 * once (reads) or submit to the apply thread (writes) and answer when the
 * write is durable. */
#ifndef RPC_RPC_H
#define RPC_RPC_H

#include "auth/auth.h"
#include "mvcc/auth.h"
#include "net/net.h"
#include "server/server.h"

typedef void (*rpc_handler)(struct grpc_call *c, const uint8_t *msg,
                            size_t len);

void rpc_kv_range(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_kv_put(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_kv_delete_range(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_kv_txn(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_kv_compact(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_kv_range_stream(struct grpc_call *c, const uint8_t *msg, size_t len);
/* Answers a plain Range larger than a few MiB in pieces from a pinned
 * snapshot (bounded memory); returns 0 when the caller should answer it. */
int rpc_range_large(struct grpc_call *c, const Etcdserverpb__RangeRequest *r);
/* No sort, no min/max filters, not count-only, a range of keys: what can
 * be answered in key order a chunk at a time. */
int rpc_range_is_plain(const Etcdserverpb__RangeRequest *r);

void rpc_watch(struct grpc_call *c, const uint8_t *msg, size_t len);

void rpc_maint_status(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_maint_alarm(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_maint_hash(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_maint_hashkv(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_maint_defragment(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_maint_move_leader(struct grpc_call *c, const uint8_t *msg, size_t len);

/* The backend quota (--quota-backend-bytes; 0 when disabled) and etcd's
 * cost of a request against it. rpc_quota_check() returns 0 when the
 * write fits, CAIRN_ECAPPED when NOSPACE is raised already, or 1 when it
 * raises it: the call is then answered (with CAIRN_ECAPPED) once the alarm
 * is applied. */
int64_t rpc_quota_bytes(void);
int64_t rpc_cost_put(const Etcdserverpb__PutRequest *r);
int64_t rpc_cost_txn(const Etcdserverpb__TxnRequest *r);
int64_t rpc_cost_lease(void);
int rpc_quota_check(struct grpc_call *c, int64_t cost);
/* Streams the store as an etcd bbolt db (rpc/snapshot.c). */
void rpc_maint_snapshot(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_cluster_member_add(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_cluster_member_remove(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_cluster_member_update(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_cluster_member_promote(struct grpc_call *c, const uint8_t *msg,
                                size_t len);
void rpc_cluster_member_list(struct grpc_call *c, const uint8_t *msg,
                             size_t len);
void rpc_health_check(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_health_watch(struct grpc_call *c, const uint8_t *msg, size_t len);

/* Queues a write (@msg: its packed request) for the apply thread; @done
 * runs on the loop once it is durable (rpc_write_done answers the call if
 * it is still there). */
void rpc_submit(struct grpc_call *c, enum apply_op op, const uint8_t *msg,
                size_t len, void (*done)(struct apply_cmd *cmd));
void rpc_write_done(struct apply_cmd *cmd);
/* A call waiting for a callback: the call may go away (client reset,
 * deadline) before it comes. rpc_wait_new uses c->ud and c->on_cancel;
 * rpc_wait_take frees @w and returns the call, or NULL when it has gone. */
struct rpc_wait {
    struct grpc_call *c;
    void *r;             /* the request, in the call's arena */
    void (*cont)(struct grpc_call *c, void *r); /* rpc_linearize's */
};
struct rpc_wait *rpc_wait_new(struct grpc_call *c);
struct grpc_call *rpc_wait_take(struct rpc_wait *w);

/* Runs @cont(c, r) once a linearizable read may be served (the read
 * index); finishes the call with the error otherwise. Uses c->ud. */
void rpc_linearize(struct grpc_call *c, void (*cont)(struct grpc_call *c, void *r),
                   void *r);
/* apply_on_effects hook: the lessor and auth cache follow applied
 * commands (rpc/effects.c). */
void rpc_apply_effects(struct apply_cmd *cmd);

/* Auth (rpc/auth.c): the service's handlers ... */
void rpc_auth_enable(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_disable(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_status(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_authenticate(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_add(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_get(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_list(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_delete(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_change_password(struct grpc_call *c, const uint8_t *msg,
                                   size_t len);
void rpc_auth_user_grant_role(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_user_revoke_role(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_role_add(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_role_get(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_role_list(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_role_delete(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_auth_role_grant_permission(struct grpc_call *c, const uint8_t *msg,
                                    size_t len);
void rpc_auth_role_revoke_permission(struct grpc_call *c, const uint8_t *msg,
                                     size_t len);
/* ... and the checks each other handler makes at its top, after validating
 * and before answering or submitting: 0, or the error to finish the call
 * with (etcd's auth errors). Those for writes record in c->auth_rev the
 * auth revision they decided at, which the apply thread re-checks. */
int rpc_auth_token(struct grpc_call *c); /* a valid token if one is sent */
int rpc_auth_admin(struct grpc_call *c); /* root */
int rpc_auth_range(struct grpc_call *c, ProtobufCBinaryData key,
                   ProtobufCBinaryData end, enum auth_perm p);
int rpc_auth_put(struct grpc_call *c, const Etcdserverpb__PutRequest *r);
int rpc_auth_delete(struct grpc_call *c,
                    const Etcdserverpb__DeleteRangeRequest *r);
int rpc_auth_txn(struct grpc_call *c, const Etcdserverpb__TxnRequest *r);
int rpc_auth_lease_revoke(struct grpc_call *c, int64_t id);
int rpc_auth_info(struct grpc_call *c, struct auth_info *ai);
/* Ends @c with an auth error the way etcd's maintenance service sends it
 * (the auth package's error, untranslated: UNKNOWN, "auth: ..."). */
void rpc_auth_finish_maint(struct grpc_call *c, int rc);
/* etcd's text for an auth error inside a response (a watch's
 * cancel_reason): the gRPC status error's string, in a static buffer
 * valid until the next call. */
const char *rpc_auth_status_text(struct grpc_call *c, int rc);

/* Listens on --listen-metrics-urls: HTTP/1.1 /metrics, /health, /livez and
 * /readyz, no gRPC. Logs and returns -1 when a URL cannot be served. */
int rpc_listen_metrics(void);

void rpc_lease_grant(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_lease_revoke(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_lease_keepalive(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_lease_ttl(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_lease_leases(struct grpc_call *c, const uint8_t *msg, size_t len);

/* v3lockpb.Lock and v3electionpb.Election (rpc/lock.c, rpc/election.c):
 * etcd 3.4's servers over clientv3/concurrency, on internal calls. */
void rpc_lock_lock(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_lock_unlock(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_election_campaign(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_election_proclaim(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_election_leader(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_election_observe(struct grpc_call *c, const uint8_t *msg, size_t len);
void rpc_election_resign(struct grpc_call *c, const uint8_t *msg, size_t len);

/* A response header with this member's identity and @rev. */
void rpc_header(Etcdserverpb__ResponseHeader *h, int64_t rev);
/* The current revision (a fresh read view). */
int64_t rpc_current_rev(void);
/* Ends @c with OK, or with the status of cairn error @rc. */
void rpc_finish(struct grpc_call *c, int rc);
/* Answers a malformed request body the way grpc-go does. */
void rpc_bad_message(struct grpc_call *c);

#endif
