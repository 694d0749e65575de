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
