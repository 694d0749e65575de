/* etcd's clientv3/concurrency as its v3lock and v3election servers use it
 * in-process: sessions, key names and waitDeletes, run as internal calls
 * (rpc/icall.h) with the outer call's token. Everything runs on the loop
 * thread.
 *
 * An outer call's state begins with a struct conc_op. At most one inner
 * call is in flight per op (o->ic). Unary answers continue the state
 * machine from their callback; watch responses only record what they saw
 * and continue from a zero timer (conc_later), so a watch is never
 * cancelled from inside its own callback. */
#ifndef RPC_CONC_H
#define RPC_CONC_H

#include <uv.h>

#include "rpc/icall.h"
#include "rpc/rpc.h"

struct conc_op;
typedef void (*conc_fn)(struct conc_op *o);
/* waitDeletes' end: @status 0 (o->hdr is the last Range's header) or an
 * inner error (its gRPC code and etcd's text, valid during the call). */
typedef void (*conc_wait_fn)(struct conc_op *o, int status, const char *msg);

struct conc_op {
    struct grpc_call *c;  /* the outer call; NULL once it has ended */
    struct icall *ic;     /* the inner call in flight */
    int busy, dead;       /* freeing is deferred while busy */
    uv_timer_t later;
    conc_fn later_fn;
    conc_fn free_fn;      /* frees the whole state (after the timer closed) */
    /* name + "/", its prefix end, and name + "/" + %x of the lease */
    ProtobufCBinaryData pfx, end, key;
    Etcdserverpb__ResponseHeader hdr; /* waitDeletes' last Range header */
    /* waitDeletes */
    int64_t w_max;
    conc_wait_fn w_done;
    uint8_t *w_key;       /* the key waited on, malloc'd */
    size_t w_key_len;
    int w_seen;           /* 1: DELETE seen, -1: watch failed */
    char *w_err;          /* its error text, malloc'd */
    void (*s_done)(struct conc_op *o, int status, const char *msg,
                   int64_t lease);
};

/* Sets up @o for the outer call @c (c->ud and c->on_cancel are the
 * caller's). @free_fn releases the state containing @o. */
void conc_op_init(struct conc_op *o, struct grpc_call *c, conc_fn free_fn);
/* The outer call has ended (or is about to): cancels the inner call in
 * flight and frees the state once no callback of @o is on the stack. */
void conc_op_release(struct conc_op *o);
/* A bare op for a unary outer call: c->ud and c->on_cancel are set to
 * release it when the call ends. */
struct conc_op *conc_op_new(struct grpc_call *c);
/* on_cancel hook that releases the conc_op in c->ud; free_fn that frees a
 * state with nothing else to free. */
void conc_cancel_hook(struct grpc_call *c);
void conc_free_plain(struct conc_op *o);
/* Sets o->pfx, o->end and o->key (Go's "%s/%x" of @name and @lease). */
void conc_op_keys(struct conc_op *o, ProtobufCBinaryData name, int64_t lease);

/* Runs @h on @req with the outer call's token. @done gets @o as ud and
 * must call conc_got(o) first. Must be the caller's last use of @o. */
void conc_unary(struct conc_op *o, rpc_handler h, const ProtobufCMessage *req,
                icall_done_fn done);
void conc_got(struct conc_op *o);
/* Fire-and-forget with no token (etcd's client.Ctx() cleanups). Also at a
 * graceful stop, where etcd's cleanup races its client's context: cairn's
 * runs (the write is applied before the store closes). */
void conc_cleanup(rpc_handler h, const ProtobufCMessage *req);
/* Starts a watch; its callback gets @o as ud. */
void conc_watch(struct conc_op *o, const Etcdserverpb__WatchCreateRequest *w,
                icall_watch_fn fn);
/* Runs @fn from the loop soon (after cancelling the watch in flight). */
void conc_later(struct conc_op *o, conc_fn fn);

/* A lease for a session: @lease itself unless it is 0, else a new 60 s
 * lease (granted with the caller's token, never kept alive). */
typedef void (*conc_session_fn)(struct conc_op *o, int status, const char *msg,
                                int64_t lease);
void conc_session(struct conc_op *o, int64_t lease, conc_session_fn done);

/* clientv3's WithFirstCreate/WithLastCreate range over o->pfx. */
void conc_range_first(struct conc_op *o, Etcdserverpb__RangeRequest *r);
/* A compare create_revision(@key) == @rev. */
void conc_cmp_create(Etcdserverpb__Compare *cmp, ProtobufCBinaryData key,
                     int64_t rev);

/* waitDeletes(o->pfx, @max_rev): waits until no key of the prefix with a
 * create revision <= @max_rev is left. */
void conc_wait_deletes(struct conc_op *o, int64_t max_rev, conc_wait_fn done);

/* The start of a unary @done: conc_got, then the inner answer unpacked
 * as @d in the outer call's arena; NULL when the outer call has been ended
 * instead (with the inner error, or INTERNAL for an answer that does not
 * unpack). */
void *conc_answer(struct conc_op *o, const ProtobufCMessageDescriptor *d,
                  int status, const char *message, const uint8_t *resp,
                  size_t len);
/* Ends the outer call with an inner error the way etcd's EtcdError
 * conversion does: Unknown with the inner text. */
void conc_fail(struct conc_op *o, const char *msg);
/* Copies @h by value into @dst (scalars only). */
void conc_hdr_copy(Etcdserverpb__ResponseHeader *dst,
                   const Etcdserverpb__ResponseHeader *h);

#endif
