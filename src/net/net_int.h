/* Internal to net/: connections. */
#ifndef NET_NET_INT_H
#define NET_NET_INT_H

#include <nghttp2/nghttp2.h>

#include "net/net.h"

enum conn_mode { CONN_SNIFF, CONN_H2, CONN_HTTP1 };

struct write_req;

struct conn {
    uv_tcp_t tcp;
    enum conn_mode mode;
    nghttp2_session *h2;
    const struct net_opts *opts;    /* = &opts_copy */
    struct net_opts opts_copy;
    struct buf rbuf;           /* sniffing and HTTP/1.1 request bytes */
    struct grpc_call *calls;   /* open streams */
    size_t write_pending;      /* bytes handed to uv_write, not yet done */
    int in_recv;               /* inside nghttp2_session_mem_recv */
    struct write_req *wb;      /* output being gathered for one uv_write */
    int dirty, closing, goaway_sent;
    int reading;               /* uv_read_start done (net_serve) */
    int paused;                /* reading stopped for backpressure */
    struct http_exchange *http; /* HTTP/1.1: the request being served */
    int http_busy;             /* inside http1.c's request loop */
    char *peer_cn;             /* verified client certificate's CN (TLS) */
    struct ssl_st *ssl;        /* TLS: NULL on plaintext connections */
    int tls_up;                /* handshake done */
    struct conn *next, *prev;        /* all connections */
    struct conn *dirty_next;         /* flush list */
};

/* Queues @c to be flushed after this loop iteration's callbacks. */
void net__mark_dirty(struct conn *c);
/* Sets up the nghttp2 server session of a connection. */
int net__h2_init(struct conn *c);
/* Feeds bytes to the session. */
int net__h2_recv(struct conn *c, const uint8_t *p, size_t n);
/* Writes what the session wants to send. Returns -1 if the connection
 * should close. */
int net__h2_flush(struct conn *c);
/* Frees calls of a closing connection (nghttp2_session_del does not call
 * on_stream_close). */
void net__h2_free_calls(struct conn *c);
/* Output goes into the connection's current batch; net__out_submit hands
 * the batch to the socket (net__out_append does when it is full). */
void net__out_append(struct conn *c, const uint8_t *p, size_t n);
void net__out_submit(struct conn *c);
void net__conn_write(struct conn *c, const uint8_t *p, size_t n);
void net__conn_close(struct conn *c);
void net__http1_recv(struct conn *c);
/* Writes drained: the active HTTP/1.1 exchange may produce more. */
void net__http1_drain(struct conn *c);
/* The connection closes: aborts and frees the active exchange. */
void net__http1_free(struct conn *c);
/* The gateway call the active exchange serves, or NULL. */
struct grpc_call *net__http1_call(struct conn *c);
/* The connection ends after the current answer. */
void net__http1_no_keepalive(struct conn *c);
/* Stops (1) or resumes (0) reading from the socket. */
void net__conn_pause(struct conn *c, int pause);
void net__deadlines_init(uv_loop_t *loop);
/* Plaintext bytes of a connection (after TLS, if any). */
void net__conn_input(struct conn *c, const uint8_t *p, size_t n);
/* Hands bytes to the socket as they are (TLS records). */
void net__raw_write(struct conn *c, const uint8_t *p, size_t n);
/* Stops reading and closes once the queued writes are out. */
void net__conn_end(struct conn *c);

/* tls.c: the per-connection side. */
int net__tls_accept(struct conn *c);
/* Feeds received bytes; plaintext goes to net__conn_input. Returns 0, 1
 * when the connection should end once its output is out (a refused
 * handshake: the alert), -1 when it should close now. */
int net__tls_recv(struct conn *c, const uint8_t *p, size_t n);
/* Encrypts @p and queues the records. */
int net__tls_write(struct conn *c, const uint8_t *p, size_t n);
/* Queues a close_notify alert (HTTP/1.1 answers before closing). */
void net__tls_close_notify(struct conn *c);
void net__tls_free(struct conn *c);

#endif
