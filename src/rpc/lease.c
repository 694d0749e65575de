/* etcdserverpb.Lease. Grant and Revoke are writes (the store holds leases
 * and their keys); KeepAlive, TimeToLive and Leases are answered by the
 * lessor on the loop thread, as etcd's leader answers them locally. */
#include <string.h>

#include "core/mem.h"
#include "lease/lease.h"
#include "rpc/rpc.h"

void rpc_lease_grant(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseGrantRequest *r =
        etcdserverpb__lease_grant_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    int rc = rpc_quota_check(rpc_cost_lease());
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (r->ttl > LEASE_MAX_TTL) {
        grpc_finish_err(c, CAIRN_ELEASETTLTOOLARGE);
        return;
    }
    /* The command carries the ID and TTL decided here, so that applying
     * it is deterministic (as etcd picks the ID before proposing). */
    if ((rc = rpc_auth_token(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    while (r->id == 0)
        r->id = lease_next_id();
    if (r->ttl < lease_min_ttl())
        r->ttl = lease_min_ttl();
    size_t n = etcdserverpb__lease_grant_request__get_packed_size(r);
    uint8_t *buf = arena_alloc(&c->arena, n + 1);
    etcdserverpb__lease_grant_request__pack(r, buf);
    rpc_submit(c, APPLY_LEASE_GRANT, buf, n, rpc_write_done);
}

void rpc_lease_revoke(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseRevokeRequest *r =
        etcdserverpb__lease_revoke_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    int rc = rpc_auth_lease_revoke(c, r->id);
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_submit(c, APPLY_LEASE_REVOKE, msg, len, rpc_write_done);
}

/* KeepAlive: one answer per request; an unknown or expired lease answers
 * TTL 0. The client closing its side ends the call with OK (etcd). */
static void keepalive_msg(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    struct arena a;
    Etcdserverpb__LeaseKeepAliveRequest *r;
    Etcdserverpb__LeaseKeepAliveResponse resp =
        ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    int64_t ttl = 0;

    arena_init(&a);
    r = etcdserverpb__lease_keep_alive_request__unpack(&a.pb, len, msg);
    if (r == NULL) {
        arena_free(&a);
        grpc_finish(c, GRPC_INTERNAL,
                    "grpc: failed to unmarshal the received message");
        return;
    }
    if (lease_renew(r->id, &ttl) != 0)
        ttl = 0;
    rpc_header(&h, rpc_current_rev());
    resp.header = &h;
    resp.id = r->id;
    resp.ttl = ttl;
    grpc_send_pb(c, &resp);
    arena_free(&a);
}

static void keepalive_half_close(struct grpc_call *c)
{
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_lease_keepalive(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    c->on_msg = keepalive_msg;
    c->on_half_close = keepalive_half_close;
    c->long_lived = 1;
    keepalive_msg(c, msg, len);
}

void rpc_lease_ttl(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseTimeToLiveRequest *r =
        etcdserverpb__lease_time_to_live_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__LeaseTimeToLiveResponse resp =
        ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    int64_t ttl, remaining_ms;
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
    rpc_header(&h, t.rev);
    resp.header = &h;
    resp.id = r->id;
    if (lease_lookup(r->id, &ttl, &remaining_ms) != 0) {
        resp.ttl = -1; /* etcd: unknown lease, not an error */
    } else {
        /* etcd truncates Remaining() to whole seconds. */
        resp.ttl = remaining_ms > 0 ? remaining_ms / 1000 : 0;
        resp.grantedttl = ttl;
        if (r->keys)
            rc = mvcc_lease_keys(&t, r->id, &c->arena, &resp.keys, &resp.n_keys);
    }
    if (rc == 0)
        grpc_send_pb(c, &resp);
    mvcc_read_end(&t);
    rpc_finish(c, rc);
}

void rpc_lease_leases(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseLeasesRequest *r =
        etcdserverpb__lease_leases_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__LeaseLeasesResponse resp =
        ETCDSERVERPB__LEASE_LEASES_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    int64_t *ids;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    size_t n = lease_list(&ids);
    Etcdserverpb__LeaseStatus *st = arena_alloc(&c->arena, (n + 1) * sizeof *st);
    resp.leases = arena_alloc(&c->arena, (n + 1) * sizeof *resp.leases);
    for (size_t i = 0; i < n; i++) {
        etcdserverpb__lease_status__init(&st[i]);
        st[i].id = ids[i];
        resp.leases[i] = &st[i];
    }
    resp.n_leases = n;
    cairn_free(ids);
    rpc_header(&h, rpc_current_rev());
    resp.header = &h;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}
