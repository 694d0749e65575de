/* The client port: TCP listeners on one libuv loop, each connection either
 * gRPC over HTTP/2 (h2c with prior knowledge) or plain HTTP/1.1, told apart
 * by the first bytes. gRPC calls are handed to the rpc layer through
 * struct grpc_call; everything here runs on the loop thread.
 *
 * A call's life: headers arrive -> the message arrives (unary) or messages
 * arrive one by one (streaming) -> the handler answers with grpc_send() and
 * grpc_finish() at once or later (async) -> the stream closes -> the call is
 * freed. A handler that answers later must register a cancel hook so that a
 * call closed by the peer first is never touched again. */
#ifndef NET_NET_H
#define NET_NET_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "core/buf.h"
#include "core/err.h"

struct conn;
struct grpc_call;

/* Streaming handlers get every message; unary ones only the single one. */
typedef void (*grpc_msg_fn)(struct grpc_call *c, const uint8_t *msg,
                            size_t len);
/* Called once when the call ends before the handler let go of it: the
 * peer reset it, the connection closed, the deadline passed, or
 * grpc_finish() ran. The handler releases what it keeps in c->ud. */
typedef void (*grpc_cancel_fn)(struct grpc_call *c);

/* How a call's answer leaves. NULL in struct grpc_call is gRPC over HTTP/2
 * (h2.c); other transports carry calls that have no HTTP/2 stream: the JSON
 * gateway (gw/) and internal calls (rpc/icall.c, etcd's in-process
 * v3client). Handlers cannot tell the difference: they write framed
 * messages (5-byte prefix + protobuf) into c->out and finish as always. */
struct call_transport {
    /* New bytes in c->out. Called from inside grpc_send*(): the consumer
     * must not end or free the call here (defer that to the loop). */
    void (*kick)(struct grpc_call *c);
    /* grpc_finish() ran: c->status and c->message (raw text, NULL if none)
     * are set. Same rule: the call must not be freed here; the consumer
     * calls grpc_call_release() later. */
    void (*finished)(struct grpc_call *c);
    /* Bytes the consumer has not taken yet (producers pause above a high
     * water mark: watch, range streams, snapshots). */
    size_t (*unsent)(const struct grpc_call *c);
};

struct grpc_call {
    struct conn *conn;
    int32_t stream_id;
    char path[128];
    char grpc_encoding[32];
    int64_t deadline_ms;   /* monotonic ms; 0 = none */
    int has_leader_md;     /* client sent hasleader: true */
    char api_version[32];  /* client-api-version metadata, for metrics */
    int metrics_method;    /* metrics_grpc_started(); 0 = not counted */
    int long_lived;        /* a stream that ends only when told: ended with
                              UNAVAILABLE at shutdown */
    char *token;           /* "token" metadata (etcd's auth token), in the
                              arena; NULL when not sent */
    size_t token_len;
    int token_from_authz;  /* token came from "authorization" metadata */
    int64_t auth_rev;      /* set by the rpc auth check for the write path
                              (apply_cmd.auth_rev) */
    const struct call_transport *tp; /* NULL: HTTP/2 */
    void *tp_ud;           /* the transport's state */
    const char *tp_peer_cn; /* CN-as-user of a transport call (arena) */
    struct arena arena;    /* freed with the call */

    /* set by the handler */
    void *ud;
    grpc_cancel_fn on_cancel;
    grpc_msg_fn on_msg;    /* streaming: further messages */
    void (*on_half_close)(struct grpc_call *c); /* streaming: client done */

    /* internal */
    struct buf in;         /* undecoded request bytes */
    struct buf out;        /* framed response bytes not yet sent */
    size_t out_off;
    size_t out_pend;       /* promised to nghttp2, not yet written out */
    int headers_sent, finished, trailers_sent, closed, remote_closed;
    int dispatched, deferred;
    int status;
    char *message;
    struct grpc_call *next, *prev;         /* conn's call list */
    struct grpc_call *dl_next, *dl_prev;   /* deadline list */
};

/* Sends one message on @c (framed with the 5-byte prefix). */
void grpc_send(struct grpc_call *c, const uint8_t *msg, size_t len);
/* Sends one message of @len bytes that the caller writes at the returned
 * address before it next enters the loop; NULL if the call has ended. */
uint8_t *grpc_send_reserve(struct grpc_call *c, size_t len);
/* A message sent in pieces: the prefix for @len bytes, then exactly @len
 * bytes over any number of grpc_send_bytes() calls (for answers too large
 * to hold whole: the pieces are produced as the stream drains). */
void grpc_send_prefix(struct grpc_call *c, size_t len);
void grpc_send_bytes(struct grpc_call *c, const uint8_t *p, size_t n);
/* Packs a protobuf-c message and sends it. */
void grpc_send_pb(struct grpc_call *c, const void *pbmsg);
/* Ends the call with a status; @msg may be NULL. Further sends are dropped. */
void grpc_finish(struct grpc_call *c, int code, const char *msg);
/* Ends the call with the gRPC status of cairn error @rc. */
void grpc_finish_err(struct grpc_call *c, int rc);
/* The Common Name of the client certificate the call's connection
 * presented and TLS verified (etcd's CN-as-user); NULL without one. */
const char *grpc_call_peer_cn(const struct grpc_call *c);

/* Calls on another transport (see struct call_transport). The owner creates
 * the call, sets metadata (token, deadline_ms, has_leader_md), starts it
 * with the first message, feeds further messages of a stream, and ends its
 * part with grpc_call_abort() (gone before the end: the handler's cancel
 * hook runs) or grpc_call_release() (after tp->finished). Both free the
 * call once the loop is out of every callback that may still hold it. */
struct grpc_call *grpc_call_new(const char *path, const struct call_transport *tp,
                                void *tp_ud);
void grpc_call_set_token(struct grpc_call *c, const char *tok, size_t len);
void grpc_call_set_peer_cn(struct grpc_call *c, const char *cn);
/* Dispatches the first message as h2 does (deadline armed; gRPC metrics
 * counted when @count_metrics: gateway calls are gRPC calls to etcd,
 * internal ones are not). */
void grpc_call_start(struct grpc_call *c, const uint8_t *msg, size_t len,
                     int count_metrics);
void grpc_call_msg(struct grpc_call *c, const uint8_t *msg, size_t len);
void grpc_call_half_close(struct grpc_call *c);
void grpc_call_abort(struct grpc_call *c);
void grpc_call_release(struct grpc_call *c);
/* Bytes of the answer not yet taken by the transport. */
size_t grpc_call_unsent(const struct grpc_call *c);
/* Monotonic milliseconds. */
int64_t net_now_ms(void);

/* The gRPC entry point the rpc layer provides: find the handler for
 * c->path and hand it the first message. */
void rpc_dispatch(struct grpc_call *c, const uint8_t *msg, size_t len);
/* HTTP/1.1 requests on the client port: fills status, content type and
 * body. */
struct http_reply {
    int status;
    const char *content_type;
    struct buf body;
    int metrics_listener; /* asked on a --listen-metrics-urls listener */
};
void rpc_http(const char *method, const char *path, struct http_reply *r);

struct net_opts {
    size_t max_recv_bytes; /* gRPC receive limit: max-request-bytes + 512 KiB */
    uint32_t max_streams;  /* SETTINGS_MAX_CONCURRENT_STREAMS */
    int metrics_only;      /* --listen-metrics-urls: HTTP/1.1, no gRPC */
    int plain, tls;        /* set by net_listen from the URL schemes */
};

/* Parses @url ("http://host:port" or "https://host:port", host may be a
 * name, IPv4 or [IPv6]) and starts listening. A second URL naming the same
 * host:port adds its scheme to that listener (TLS ClientHellos and
 * plaintext told apart by the first byte). Errors: -errno, -EINVAL for a
 * bad URL, -EPROTONOSUPPORT for https before net_tls_start (net/tls.h)
 * and for unixs. */
int net_listen(uv_loop_t *loop, const char *url, const struct net_opts *o);
/* Graceful shutdown: GOAWAY to every h2 connection, stop accepting; calls
 * @done once every connection has closed or after @grace_ms. */
/* Starts serving: connections accepted before wait unread until then
 * (etcd serves clients once the member is ready). */
void net_serve(void);
/* Ends the streams whose client asked for a leader (hasleader metadata)
 * with etcd's "etcdserver: no leader": called after three election
 * timeouts without one, as etcd's monitorLeader. */
void net_end_hasleader_streams(void);
void net_shutdown(uv_loop_t *loop, int grace_ms, void (*done)(void));

#endif
