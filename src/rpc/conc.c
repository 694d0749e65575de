/* clientv3/concurrency for the Lock and Election services (see conc.h).
 * etcd 3.4: E/clientv3/concurrency/{session,key,mutex,election}.go. */
#include <string.h>

#include "core/mem.h"
#include "rpc/conc.h"

static void later_cb(uv_timer_t *t);

void conc_op_init(struct conc_op *o, struct grpc_call *c, conc_fn free_fn)
{
    o->c = c;
    o->free_fn = free_fn;
    uv_timer_init(srv->loop, &o->later);
    uv_unref((uv_handle_t *)&o->later);
}

static void closed_cb(uv_handle_t *h)
{
    struct conc_op *o = (struct conc_op *)((char *)h -
                                           offsetof(struct conc_op, later));
    cairn_free(o->pfx.data); /* pfx, end and key share one block */
    cairn_free(o->w_key);
    cairn_free(o->w_err);
    o->free_fn(o);
}

static void op_unref(struct conc_op *o)
{
    if (--o->busy == 0 && o->dead)
        uv_close((uv_handle_t *)&o->later, closed_cb);
}

void conc_op_release(struct conc_op *o)
{
    if (o->dead)
        return;
    o->dead = 1;
    o->c = NULL;
    if (o->ic != NULL) {
        icall_cancel(o->ic);
        o->ic = NULL;
    }
    uv_timer_stop(&o->later);
    o->busy++;
    op_unref(o);
}

void conc_free_plain(struct conc_op *o)
{
    cairn_free(o);
}

void conc_cancel_hook(struct grpc_call *c)
{
    struct conc_op *o = c->ud;
    c->ud = NULL;
    if (o != NULL)
        conc_op_release(o);
}

struct conc_op *conc_op_new(struct grpc_call *c)
{
    struct conc_op *o = cairn_calloc(1, sizeof *o);
    conc_op_init(o, c, conc_free_plain);
    c->ud = o;
    c->on_cancel = conc_cancel_hook;
    return o;
}

static void go_hex(char *out, int64_t v)
{
    char tmp[24];
    int n = 0;
    uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[n++] = "0123456789abcdef"[u & 15];
        u >>= 4;
    } while (u != 0);
    if (v < 0)
        *out++ = '-';
    while (n > 0)
        *out++ = tmp[--n];
    *out = 0;
}

void conc_op_keys(struct conc_op *o, ProtobufCBinaryData name, int64_t lease)
{
    char hex[24];
    go_hex(hex, lease);
    size_t n = name.len, h = strlen(hex);
    /* one block: pfx (n + 1), end (<= n + 1), key (n + 1 + h) */
    uint8_t *p = cairn_malloc(3 * (n + 1) + h + 1);

    cairn_free(o->pfx.data);
    if (n > 0)
        memcpy(p, name.data, n);
    p[n] = '/';
    o->pfx = (ProtobufCBinaryData){n + 1, p};
    /* clientv3's getPrefix: the last byte below 0xff, plus one; the
     * prefix always ends in '/', so that is that byte */
    o->end.data = p + n + 1;
    memcpy(o->end.data, p, n + 1);
    o->end.data[n]++;
    o->end.len = n + 1;
    o->key.data = p + 2 * (n + 1);
    memcpy(o->key.data, p, n + 1);
    memcpy(o->key.data + n + 1, hex, h);
    o->key.len = n + 1 + h;
}

void conc_got(struct conc_op *o)
{
    o->ic = NULL;
}

/* Inner results never arrive from inside icall_unary/icall_watch (icall.h),
 * so the handle is always current when it is stored. */
static void keep(struct conc_op *o, struct icall *ic)
{
    if (o->dead) /* ended meanwhile: nobody may answer into it */
        icall_cancel(ic);
    else
        o->ic = ic;
}

void conc_unary(struct conc_op *o, rpc_handler h, const ProtobufCMessage *req,
                icall_done_fn done)
{
    keep(o, icall_unary(o->c, h, req, done, o));
}

static void cleanup_done(void *ud, int status, const char *message,
                         const uint8_t *resp, size_t len)
{
    (void)ud, (void)status, (void)message, (void)resp, (void)len;
}

void conc_cleanup(rpc_handler h, const ProtobufCMessage *req)
{
    icall_unary(NULL, h, req, cleanup_done, NULL);
}

#define CONC_HIGH_WATER (1u << 20)

void conc_watch(struct conc_op *o, const Etcdserverpb__WatchCreateRequest *w,
                icall_watch_fn fn)
{
    struct icall *ic = icall_watch(o->c, w, fn, o);
    /* Observe forwards events: a reader that does not read holds the watch
     * back instead of growing the answer without bound. */
    icall_watch_flow(ic, o->c, CONC_HIGH_WATER);
    keep(o, ic); /* still running: conc_later cancels it */
}

void conc_later(struct conc_op *o, conc_fn fn)
{
    if (o->dead)
        return;
    o->later_fn = fn;
    uv_timer_start(&o->later, later_cb, 0, 0);
}

static void later_cb(uv_timer_t *t)
{
    struct conc_op *o = (struct conc_op *)((char *)t -
                                           offsetof(struct conc_op, later));
    if (o->dead)
        return;
    o->busy++;
    if (o->ic != NULL) {
        icall_cancel(o->ic);
        o->ic = NULL;
    }
    o->later_fn(o);
    op_unref(o);
}

void conc_fail(struct conc_op *o, const char *msg)
{
    struct grpc_call *c = o->c;
    if (c != NULL)
        grpc_finish(c, GRPC_UNKNOWN, msg); /* on_cancel releases @o */
}

void *conc_answer(struct conc_op *o, const ProtobufCMessageDescriptor *d,
                  int status, const char *message, const uint8_t *resp,
                  size_t len)
{
    ProtobufCMessage *m;

    conc_got(o);
    if (status != 0) {
        conc_fail(o, message);
        return NULL;
    }
    m = protobuf_c_message_unpack(d, &o->c->arena.pb, len, resp);
    if (m == NULL)
        grpc_finish(o->c, GRPC_INTERNAL, "cairn: bad answer of an inner call");
    return m;
}

void conc_hdr_copy(Etcdserverpb__ResponseHeader *dst,
                   const Etcdserverpb__ResponseHeader *h)
{
    Etcdserverpb__ResponseHeader z = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    *dst = z;
    if (h != NULL) {
        dst->cluster_id = h->cluster_id;
        dst->member_id = h->member_id;
        dst->revision = h->revision;
        dst->raft_term = h->raft_term;
    }
}

/* ---- session ---- */

static void granted(void *ud, int status, const char *message,
                    const uint8_t *resp, size_t len)
{
    struct conc_op *o = ud;
    Etcdserverpb__LeaseGrantResponse *r;

    conc_got(o);
    if (status != 0) {
        o->s_done(o, status, message, 0);
        return;
    }
    r = etcdserverpb__lease_grant_response__unpack(NULL, len, resp);
    int64_t id = r != NULL ? r->id : 0;
    if (r != NULL)
        etcdserverpb__lease_grant_response__free_unpacked(r, NULL);
    if (id == 0)
        o->s_done(o, GRPC_INTERNAL, "cairn: bad LeaseGrant answer", 0);
    else
        o->s_done(o, 0, NULL, id);
}

void conc_session(struct conc_op *o, int64_t lease, conc_session_fn done)
{
    Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;

    if (lease != 0) {
        done(o, 0, NULL, lease);
        return;
    }
    o->s_done = done;
    g.ttl = 60; /* concurrency's defaultSessionTTL */
    conc_unary(o, rpc_lease_grant, &g.base, granted);
}

/* ---- ranges and compares ---- */

void conc_range_first(struct conc_op *o, Etcdserverpb__RangeRequest *r)
{
    Etcdserverpb__RangeRequest z = ETCDSERVERPB__RANGE_REQUEST__INIT;
    *r = z;
    r->key = o->pfx;
    r->range_end = o->end;
    r->sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__CREATE;
    r->sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__ASCEND;
    r->limit = 1;
}

void conc_cmp_create(Etcdserverpb__Compare *cmp, ProtobufCBinaryData key,
                     int64_t rev)
{
    Etcdserverpb__Compare z = ETCDSERVERPB__COMPARE__INIT;
    *cmp = z;
    cmp->key = key;
    cmp->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp->result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp->create_revision = rev;
}

/* ---- waitDeletes (E/clientv3/concurrency/key.go) ---- */

static void wait_range(struct conc_op *o);

static void wait_failed(struct conc_op *o, const char *msg)
{
    cairn_free(o->w_err);
    o->w_err = cairn_strdup(msg);
    o->w_seen = -1;
}

/* clientv3's WatchResponse.Err() and waitDelete's end */
static void wait_watch_resp(void *ud, const Etcdserverpb__WatchResponse *resp,
                            int status, const char *message)
{
    struct conc_op *o = ud;

    if (resp == NULL) {
        conc_got(o); /* over: nothing to cancel */
        if (o->w_seen == 0)
            wait_failed(o, status != 0 && message != NULL
                               ? message
                               : "lost watcher waiting for delete");
        conc_later(o, wait_range);
        return;
    }
    if (o->w_seen != 0)
        return;
    if (resp->compact_revision != 0) {
        wait_failed(o, "etcdserver: mvcc: required revision has been compacted");
    } else if (resp->canceled) {
        wait_failed(o, resp->cancel_reason != NULL && *resp->cancel_reason
                           ? resp->cancel_reason
                           : "etcdserver: mvcc: required revision is a future "
                             "revision");
    } else {
        for (size_t i = 0; i < resp->n_events; i++)
            if (resp->events[i]->type == MVCCPB__EVENT__EVENT_TYPE__DELETE)
                o->w_seen = 1;
        if (o->w_seen == 0)
            return;
    }
    conc_later(o, wait_range);
}

static void wait_range_done(void *ud, int status, const char *message,
                            const uint8_t *resp, size_t len)
{
    struct conc_op *o = ud;
    Etcdserverpb__RangeResponse *r;
    Etcdserverpb__WatchCreateRequest w = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;

    conc_got(o);
    if (status != 0) {
        o->w_done(o, status, message);
        return;
    }
    r = etcdserverpb__range_response__unpack(NULL, len, resp);
    if (r == NULL) {
        o->w_done(o, GRPC_INTERNAL, "cairn: bad Range answer");
        return;
    }
    conc_hdr_copy(&o->hdr, r->header);
    if (r->n_kvs == 0) {
        etcdserverpb__range_response__free_unpacked(r, NULL);
        o->w_done(o, 0, NULL);
        return;
    }
    cairn_free(o->w_key);
    o->w_key_len = r->kvs[0]->key.len;
    o->w_key = cairn_malloc(o->w_key_len + 1);
    if (o->w_key_len > 0)
        memcpy(o->w_key, r->kvs[0]->key.data, o->w_key_len);
    etcdserverpb__range_response__free_unpacked(r, NULL);
    w.key = (ProtobufCBinaryData){o->w_key_len, o->w_key};
    w.start_revision = o->hdr.revision;
    o->w_seen = 0;
    conc_watch(o, &w, wait_watch_resp);
}

static void wait_range(struct conc_op *o)
{
    Etcdserverpb__RangeRequest r;

    if (o->w_seen < 0) {
        o->w_done(o, GRPC_UNKNOWN, o->w_err);
        return;
    }
    conc_range_first(o, &r); /* WithLastCreate + WithMaxCreateRev */
    r.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    r.max_create_revision = o->w_max;
    conc_unary(o, rpc_kv_range, &r.base, wait_range_done);
}

void conc_wait_deletes(struct conc_op *o, int64_t max_rev, conc_wait_fn done)
{
    o->w_max = max_rev;
    o->w_done = done;
    o->w_seen = 0;
    wait_range(o);
}
