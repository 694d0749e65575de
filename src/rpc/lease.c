/* etcdserverpb.Lease. Grant and Revoke are writes (the store holds leases
 * and their keys); KeepAlive, TimeToLive and Leases are answered by the
 * lessor on the loop thread, as etcd's leader answers them locally. */
#include <string.h>

#include "core/err.h"
#include "core/mem.h"
#include "lease/lease.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

void rpc_lease_grant(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseGrantRequest *r =
        etcdserverpb__lease_grant_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    int rc = rpc_quota_check(c, rpc_cost_lease());
    if (rc == 1)
        return;
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
 * TTL 0. The client closing its side ends the call with OK (etcd). The
 * leader's lessor renews (src/repl asks it from a follower), so answers may
 * come later than the request: the stream's state outlives the call until
 * the last one is in. */
struct ka {
    struct grpc_call *c; /* NULL once the call has gone */
    int waiting;         /* renewals asked of the leader */
    int half_closed;     /* the client is done: end once all are answered */
};

struct ka_req {
    struct ka *ka;
    int64_t id;
};

static void ka_release(struct ka *ka)
{
    if (ka->c == NULL && ka->waiting == 0)
        cairn_free(ka);
}

static void ka_cancel(struct grpc_call *c)
{
    struct ka *ka = c->ud;
    c->ud = NULL;
    if (ka != NULL) {
        ka->c = NULL;
        ka_release(ka);
    }
}

static void ka_renewed(void *ud, int rc, int64_t ttl, int64_t remaining_ms)
{
    struct ka_req *q = ud;
    struct ka *ka = q->ka;
    (void)remaining_ms;
    ka->waiting--;
    if (ka->c != NULL) {
        Etcdserverpb__LeaseKeepAliveResponse resp =
            ETCDSERVERPB__LEASE_KEEP_ALIVE_RESPONSE__INIT;
        Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
        if (rc == 0 || rc == CAIRN_ELEASENOTFOUND) {
            rpc_header(&h, rpc_current_rev());
            resp.header = &h;
            resp.id = q->id;
            resp.ttl = rc == 0 ? ttl : 0;
            grpc_send_pb(ka->c, &resp);
            if (ka->half_closed && ka->waiting == 0) {
                struct grpc_call *c = ka->c;
                c->ud = NULL;
                c->on_cancel = NULL;
                ka->c = NULL;
                grpc_finish(c, GRPC_OK, NULL);
            }
        } else {
            /* no leader to renew with: etcd ends the stream so */
            struct grpc_call *c = ka->c;
            c->ud = NULL;
            c->on_cancel = NULL;
            ka->c = NULL;
            grpc_finish_err(c, rc);
        }
    }
    cairn_free(q);
    ka_release(ka);
}

static void keepalive_msg(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    struct arena a;
    Etcdserverpb__LeaseKeepAliveRequest *r;
    struct ka *ka = c->ud;

    arena_init(&a);
    r = etcdserverpb__lease_keep_alive_request__unpack(&a.pb, len, msg);
    if (r == NULL) {
        arena_free(&a);
        grpc_finish(c, GRPC_INTERNAL,
                    "grpc: failed to unmarshal the received message");
        return;
    }
    struct ka_req *q = cairn_calloc(1, sizeof *q);
    q->ka = ka;
    q->id = r->id;
    ka->waiting++;
    arena_free(&a);
    repl_lease(1, q->id, ka_renewed, q);
}

static void keepalive_half_close(struct grpc_call *c)
{
    struct ka *ka = c->ud;
    if (ka != NULL && ka->waiting > 0) {
        /* answers still to come from the leader: they go out first */
        ka->half_closed = 1;
        return;
    }
    c->ud = NULL;
    c->on_cancel = NULL;
    if (ka != NULL) {
        ka->c = NULL;
        ka_release(ka);
    }
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_lease_keepalive(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    struct ka *ka = cairn_calloc(1, sizeof *ka);
    ka->c = c;
    c->ud = ka;
    c->on_cancel = ka_cancel;
    c->on_msg = keepalive_msg;
    c->on_half_close = keepalive_half_close;
    c->long_lived = 1;
    keepalive_msg(c, msg, len);
}

static void ttl_answer(void *ud, int qrc, int64_t ttl, int64_t remaining_ms)
{
    Etcdserverpb__LeaseTimeToLiveRequest *r = ((struct rpc_wait *)ud)->r;
    struct grpc_call *c = rpc_wait_take(ud);
    Etcdserverpb__LeaseTimeToLiveResponse resp =
        ETCDSERVERPB__LEASE_TIME_TO_LIVE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    struct mvcc_txn t;
    int rc;

    if (c == NULL)
        return;
    if (qrc != 0 && qrc != CAIRN_ELEASENOTFOUND) {
        grpc_finish_err(c, qrc);
        return;
    }
    if ((rc = mvcc_read_begin(srv->mvcc, &t)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_header(&h, t.rev);
    resp.header = &h;
    resp.id = r->id;
    if (qrc != 0) {
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

void rpc_lease_ttl(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__LeaseTimeToLiveRequest *r =
        etcdserverpb__lease_time_to_live_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    struct rpc_wait *w = rpc_wait_new(c);
    w->r = r;
    repl_lease(0, r->id, ttl_answer, w);
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
