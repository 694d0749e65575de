/* etcdserverpb.Watch/Watch: a bidirectional stream of WatchRequests
 * (create, cancel, progress) answered by the watch hub. The stream lives
 * until the client cancels it or the connection closes; a client that
 * half-closes keeps receiving, as with etcd. */
#include "rpc/rpc.h"
#include "watch/watch.h"

static void on_cancel(struct grpc_call *c)
{
    struct watch_stream *ws = c->ud;
    c->ud = NULL;
    if (ws != NULL)
        watch_stream_free(ws);
}

/* etcd's isWatchPermitted, on the whole range asked for (etcd 3.4 checked
 * only the first key of a "from key" watch: GHSA-xg4h-6gfc-h4m8). A
 * refused create answers created + canceled with the reason, as etcd. */
static int watch_allowed(struct grpc_call *c, struct watch_stream *ws,
                         const Etcdserverpb__WatchCreateRequest *r)
{
    static uint8_t zero = 0;
    ProtobufCBinaryData key = r->key;
    int rc;
    if (key.len == 0) {
        key.data = &zero; /* etcd watches "\0" for an empty key */
        key.len = 1;
    }
    if ((rc = rpc_auth_range(c, key, r->range_end, AUTH_READ)) == 0)
        return 1;
    if (rc != CAIRN_EINVALIDAUTHTOKEN && rc != CAIRN_EAUTHOLDREV &&
        rc != CAIRN_EUSEREMPTY)
        rc = CAIRN_EPERMDENIED;
    watch_create_refused(ws, rpc_auth_status_text(c, rc));
    return 0;
}

static void on_msg(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    struct watch_stream *ws = c->ud;
    struct arena a;
    Etcdserverpb__WatchRequest *r;

    if (ws == NULL)
        return;
    arena_init(&a);
    r = etcdserverpb__watch_request__unpack(&a.pb, len, msg);
    if (r == NULL) {
        arena_free(&a);
        c->ud = NULL;
        watch_stream_free(ws);
        grpc_finish(c, GRPC_INTERNAL,
                    "grpc: failed to unmarshal the received message");
        return;
    }
    switch (r->request_union_case) {
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST:
        if (watch_allowed(c, ws, r->create_request))
            watch_create(ws, r->create_request);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CANCEL_REQUEST:
        watch_cancel(ws, r->cancel_request->watch_id);
        break;
    case ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST:
        watch_progress(ws);
        break;
    default:
        break;
    }
    arena_free(&a);
}

void rpc_watch(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    /* A member without a leader refuses hasleader watches ("etcdserver: no
     * leader"); a single member always leads. */
    c->ud = watch_stream_new(c);
    if (c->ud == NULL) {
        grpc_finish(c, GRPC_UNAVAILABLE, "etcdserver: server stopped");
        return;
    }
    c->on_cancel = on_cancel;
    c->on_msg = on_msg;
    on_msg(c, msg, len);
}
