/* Internal calls: a handler run by the server for itself, as etcd's
 * in-process v3client runs Lock and Election on top of KV, Lease and Watch.
 * The inner call goes through the same handler as a client's would
 * (validation, quota, auth, follower forwarding, read index) but not through
 * dispatch: no learner or hasleader check and no gRPC metrics, as etcd's
 * adapters bypass its interceptors. Results always arrive from the loop,
 * never from inside the icall_* call that started them. */
#ifndef RPC_ICALL_H
#define RPC_ICALL_H

#include "etcdserverpb/rpc.pb-c.h"
#include "rpc/rpc.h"

struct icall;

/* The inner call ended: @status is its gRPC code (0 = OK), @message its
 * text (NULL if none), @resp/@len the first response message's bytes
 * (NULL/0 if none). The handle is gone after this returns. */
typedef void (*icall_done_fn)(void *ud, int status, const char *message,
                              const uint8_t *resp, size_t len);
/* Runs @handler on @req with the token and client CN of @parent (NULL: no
 * token, like etcd's cleanups on client.Ctx()). Returns a handle for
 * icall_cancel. */
struct icall *icall_unary(struct grpc_call *parent, rpc_handler handler,
                          const ProtobufCMessage *req, icall_done_fn done,
                          void *ud);
/* Every WatchResponse of one watch (valid during the callback only);
 * @resp == NULL: the watch ended with @status/@message and the handle is
 * gone after this returns. */
typedef void (*icall_watch_fn)(void *ud, const Etcdserverpb__WatchResponse *resp,
                               int status, const char *message);
struct icall *icall_watch(struct grpc_call *parent,
                          const Etcdserverpb__WatchCreateRequest *req,
                          icall_watch_fn on_resp, void *ud);
/* No callback runs for @ic after this (it may be called from inside one of
 * its own callbacks). The inner call is abandoned: a write it already
 * submitted may still commit, as with etcd. */
void icall_cancel(struct icall *ic);
/* Flow control for a watch whose responses the caller forwards on @outer
 * (Observe): while @outer has more than @high bytes unsent, responses stay
 * in the inner call, so the watch hub sees a slow reader and stops sending
 * (its catch-up resumes later from the store) instead of memory growing.
 * The caller cancels @ic before @outer ends. */
void icall_watch_flow(struct icall *ic, struct grpc_call *outer, size_t high);
/* Called once with the server's loop before the first icall. */
void icall_init(uv_loop_t *loop);

#endif
