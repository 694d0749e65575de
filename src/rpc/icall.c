/* Internal calls on a call transport of their own (see icall.h): the
 * handler writes framed answers into c->out as for a client; kick and
 * finished only queue the icall, and an idle handle hands the results over
 * once the loop is out of the handler (a callback may start, cancel or end
 * anything without re-entering the code that produced the answer). */
#include <stdlib.h>
#include <string.h>

#include "core/mem.h"
#include "net/frame.h"
#include "rpc/icall.h"

struct icall {
    struct grpc_call *call;
    icall_done_fn done;      /* unary */
    icall_watch_fn on_resp;  /* watch */
    void *ud;
    int queued, finished, canceled;
    struct icall *qnext;
    struct grpc_call *outer; /* icall_watch_flow */
    size_t high;
    int parked;
    struct icall *park_next, *park_prev;
};

static struct icall *q_head, **q_tail = &q_head;
static uv_idle_t idle;
/* Watches held back by icall_watch_flow, looked at again every
 * PARK_POLL_MS (handlers get no drain callback). */
#define PARK_POLL_MS 20
static struct icall *parked;
static uv_timer_t park_timer;

static void on_idle(uv_idle_t *h);

static void enqueue(struct icall *ic)
{
    if (ic->queued)
        return;
    ic->queued = 1;
    ic->qnext = NULL;
    *q_tail = ic;
    q_tail = &ic->qnext;
    uv_idle_start(&idle, on_idle);
}

static void tp_kick(struct grpc_call *c)
{
    struct icall *ic = c->tp_ud;
    if (ic->on_resp != NULL) /* unary answers wait for the status */
        enqueue(ic);
}

static void tp_finished(struct grpc_call *c)
{
    struct icall *ic = c->tp_ud;
    ic->finished = 1;
    enqueue(ic);
}

static size_t tp_unsent(const struct grpc_call *c)
{
    return c->out.len - c->out_off;
}

static const struct call_transport icall_tp = {tp_kick, tp_finished, tp_unsent};

/* The next whole message in c->out, or NULL. */
static const uint8_t *next_msg(struct grpc_call *c, size_t *len)
{
    uint32_t n = 0;
    if (grpc_frame_next(c->out.data + c->out_off, c->out.len - c->out_off,
                        SIZE_MAX, &n) != GRPC_FRAME_OK)
        return NULL;
    const uint8_t *p = c->out.data + c->out_off + GRPC_PREFIX_LEN;
    c->out_off += GRPC_PREFIX_LEN + (size_t)n;
    *len = n;
    return p;
}

static void on_park_timer(uv_timer_t *t);

static void park(struct icall *ic)
{
    if (ic->parked)
        return;
    ic->parked = 1;
    ic->park_prev = NULL;
    ic->park_next = parked;
    if (parked != NULL)
        parked->park_prev = ic;
    parked = ic;
    if (!uv_is_active((uv_handle_t *)&park_timer))
        uv_timer_start(&park_timer, on_park_timer, PARK_POLL_MS, 0);
}

static void unpark(struct icall *ic)
{
    if (!ic->parked)
        return;
    ic->parked = 0;
    if (ic->park_prev != NULL)
        ic->park_prev->park_next = ic->park_next;
    else
        parked = ic->park_next;
    if (ic->park_next != NULL)
        ic->park_next->park_prev = ic->park_prev;
    ic->park_next = ic->park_prev = NULL;
}

/* Parked watches go back to the queue; those still held back park again. */
static void on_park_timer(uv_timer_t *t)
{
    (void)t;
    while (parked != NULL) {
        struct icall *ic = parked;
        unpark(ic);
        enqueue(ic);
    }
}

static void end(struct icall *ic)
{
    unpark(ic);
    if (ic->call != NULL)
        grpc_call_release(ic->call); /* aborts it when not finished */
    cairn_free(ic);
}

static void deliver_watch(struct icall *ic)
{
    struct grpc_call *c = ic->call;
    const uint8_t *m;
    size_t len;
    for (;;) {
        if (ic->canceled)
            break;
        if (ic->outer != NULL && grpc_call_unsent(ic->outer) > ic->high) {
            park(ic);
            break;
        }
        if ((m = next_msg(c, &len)) == NULL)
            break;
        struct arena a;
        arena_init(&a);
        Etcdserverpb__WatchResponse *r =
            etcdserverpb__watch_response__unpack(&a.pb, len, m);
        if (r != NULL)
            ic->on_resp(ic->ud, r, 0, NULL);
        arena_free(&a);
    }
    if (c->out_off == c->out.len) {
        c->out.len = 0;
        c->out_off = 0;
    } else if (c->out_off > (256u << 10)) {
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    if (ic->parked)
        return;
    if (!ic->canceled && ic->finished) {
        ic->on_resp(ic->ud, NULL, c->status, c->message);
        ic->canceled = 1; /* the handle is gone */
    }
}

static void process(struct icall *ic)
{
    if (!ic->canceled) {
        if (ic->on_resp != NULL) {
            deliver_watch(ic);
        } else if (ic->finished) {
            size_t len = 0;
            const uint8_t *m = next_msg(ic->call, &len);
            ic->done(ic->ud, ic->call->status, ic->call->message, m, len);
            ic->canceled = 1;
        }
    }
    if (ic->canceled)
        end(ic);
}

static void on_idle(uv_idle_t *h)
{
    /* Callbacks may queue more: this runs until the queue is empty. */
    while (q_head != NULL) {
        struct icall *ic = q_head;
        q_head = ic->qnext;
        if (q_head == NULL)
            q_tail = &q_head;
        ic->queued = 0;
        process(ic);
    }
    uv_idle_stop(h);
}

void icall_cancel(struct icall *ic)
{
    if (ic == NULL || ic->canceled)
        return;
    ic->canceled = 1;
    enqueue(ic); /* ended from the loop, not from inside a callback */
}

static struct icall *start(struct grpc_call *parent, const char *path,
                           rpc_handler handler, const ProtobufCMessage *req,
                           icall_done_fn done, icall_watch_fn on_resp, void *ud)
{
    struct icall *ic = cairn_calloc(1, sizeof *ic);
    struct grpc_call *c = grpc_call_new(path, &icall_tp, ic);
    ic->call = c;
    ic->done = done;
    ic->on_resp = on_resp;
    ic->ud = ud;
    if (parent != NULL) {
        if (parent->token != NULL)
            grpc_call_set_token(c, parent->token, parent->token_len);
        grpc_call_set_peer_cn(c, grpc_call_peer_cn(parent));
    }
    size_t n = protobuf_c_message_get_packed_size(req);
    uint8_t *msg = cairn_malloc(n ? n : 1);
    protobuf_c_message_pack(req, msg);
    c->dispatched = 1;
    handler(c, msg, n); /* handlers copy what they keep of the request */
    cairn_free(msg);
    return ic;
}

struct icall *icall_unary(struct grpc_call *parent, rpc_handler handler,
                          const ProtobufCMessage *req, icall_done_fn done,
                          void *ud)
{
    return start(parent, "/cairn.internal/Unary", handler, req, done, NULL, ud);
}

struct icall *icall_watch(struct grpc_call *parent,
                          const Etcdserverpb__WatchCreateRequest *req,
                          icall_watch_fn on_resp, void *ud)
{
    Etcdserverpb__WatchRequest w = ETCDSERVERPB__WATCH_REQUEST__INIT;
    w.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    w.create_request = (Etcdserverpb__WatchCreateRequest *)req;
    return start(parent, "/etcdserverpb.Watch/Watch", rpc_watch, &w.base, NULL,
                 on_resp, ud);
}

void icall_watch_flow(struct icall *ic, struct grpc_call *outer, size_t high)
{
    ic->outer = outer;
    ic->high = high;
}

void icall_init(uv_loop_t *loop)
{
    uv_idle_init(loop, &idle);
    uv_timer_init(loop, &park_timer);
    uv_unref((uv_handle_t *)&park_timer);
}
