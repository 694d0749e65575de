/* Listeners and connections: accept, sniff the protocol, read, write with
 * bounded buffering, close. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/mem.h"
#include "net/net_int.h"
#include "net/tls.h"

#define READ_CHUNK 65536
#define WRITE_BATCH (256 * 1024)
/* Stop producing output for a connection while this much is unwritten
 * (beyond the kernel's socket buffer): a client that stops reading costs
 * at most this, whatever HTTP/2 windows it granted. */
#define WRITE_HIGH_WATER (1024 * 1024)

static const char H2_PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

struct listener {
    uv_tcp_t tcp;
    struct net_opts opts;
    char addr[280];            /* host:port as the URL names it */
    struct listener *next;
};

struct write_req {
    uv_write_t req;
    struct conn *conn;
    size_t len, cap;
    uint8_t data[];
};

static void write_batch(struct conn *c, struct write_req *w);

static struct listener *listeners;
static struct conn *conns;
static int nconns;
static struct conn *dirty_head;
static uv_check_t flush_check;
static int flush_check_started;
static int serving; /* net_serve() was called */
static int shutting_down;
static void (*shutdown_done)(void);
static uv_timer_t shutdown_timer;

int64_t net_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void flush_one(struct conn *c)
{
    c->dirty = 0;
    if (c->closing)
        return;
    if (c->mode == CONN_H2 && net__h2_flush(c) < 0)
        net__conn_close(c);
    else if (c->mode == CONN_HTTP1)
        net__http1_drain(c);
}

static void on_check(uv_check_t *h)
{
    (void)h;
    while (dirty_head != NULL) {
        struct conn *c = dirty_head;
        dirty_head = c->dirty_next;
        c->dirty_next = NULL;
        flush_one(c);
    }
}

void net__mark_dirty(struct conn *c)
{
    if (c->dirty || c->closing)
        return;
    c->dirty = 1;
    c->dirty_next = dirty_head;
    dirty_head = c;
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = (struct write_req *)req;
    struct conn *c = w->conn;
    c->write_pending -= w->len;
    cairn_free(w);
    if (status != 0) {
        net__conn_close(c);
        return;
    }
    if (c->mode == CONN_H2 || c->mode == CONN_HTTP1)
        net__mark_dirty(c); /* more may be waiting behind the high water */
}

void net__out_submit(struct conn *c)
{
    struct write_req *w = c->wb;
    c->wb = NULL;
    if (w == NULL)
        return;
    if (c->closing || w->len == 0) {
        cairn_free(w);
        return;
    }
    if (c->ssl != NULL) {
        /* The batch becomes TLS records (net__raw_write). */
        int rc = net__tls_write(c, w->data, w->len);
        cairn_free(w);
        if (rc != 0)
            net__conn_close(c);
        return;
    }
    write_batch(c, w);
}

void net__raw_write(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->closing || n == 0)
        return;
    struct write_req *w = cairn_malloc(sizeof *w + n);
    w->conn = c;
    w->len = w->cap = n;
    memcpy(w->data, p, n);
    write_batch(c, w);
}

static void on_end_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    cairn_free(req);
    net__conn_close(c);
}

void net__conn_end(struct conn *c)
{
    if (c->closing)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_shutdown_t *req = cairn_malloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_end_shutdown) != 0) {
        cairn_free(req);
        net__conn_close(c);
    }
}

static void write_batch(struct conn *c, struct write_req *w)
{
    uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)w->len);
    c->write_pending += w->len;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        c->write_pending -= w->len;
        cairn_free(w);
        net__conn_close(c);
    }
}

void net__out_append(struct conn *c, const uint8_t *p, size_t n)
{
    if (c->closing || n == 0)
        return;
    if (c->wb != NULL && c->wb->cap - c->wb->len < n)
        net__out_submit(c);
    if (c->wb == NULL) {
        size_t cap = n > WRITE_BATCH ? n : WRITE_BATCH;
        c->wb = cairn_malloc(sizeof *c->wb + cap);
        c->wb->conn = c;
        c->wb->len = 0;
        c->wb->cap = cap;
    }
    memcpy(c->wb->data + c->wb->len, p, n);
    c->wb->len += n;
}

void net__conn_write(struct conn *c, const uint8_t *p, size_t n)
{
    net__out_append(c, p, n);
    net__out_submit(c);
}

/* Pulls frames out of nghttp2 into the output batch (DATA payloads come
 * through the send_data callback, straight from the calls' buffers). */
int net__h2_flush(struct conn *c)
{
    while (c->write_pending < WRITE_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0) {
            net__out_submit(c);
            return -1;
        }
        if (n == 0)
            break;
        net__out_append(c, data, (size_t)n);
        if (c->wb != NULL && c->wb->len >= WRITE_BATCH)
            net__out_submit(c);
    }
    net__out_submit(c);
    if (!nghttp2_session_want_read(c->h2) &&
        !nghttp2_session_want_write(c->h2) && c->write_pending == 0)
        return -1;
    return 0;
}

static void on_conn_closed(uv_handle_t *h)
{
    struct conn *c = h->data;
    cairn_free(c->wb);
    c->wb = NULL;
    if (c->mode == CONN_H2 && c->h2 != NULL) {
        net__h2_free_calls(c);
        nghttp2_session_del(c->h2);
    }
    if (c->mode == CONN_HTTP1)
        net__http1_free(c);
    buf_free(&c->rbuf);
    if (c->ssl != NULL)
        net__tls_free(c);
    cairn_free(c->peer_cn);
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    nconns--;
    cairn_free(c);
    if (shutting_down && nconns == 0 && shutdown_done) {
        void (*done)(void) = shutdown_done;
        shutdown_done = NULL;
        uv_timer_stop(&shutdown_timer);
        done();
    }
}

void net__conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b)
{
    static char chunk[READ_CHUNK]; /* one loop thread: one read at a time */
    (void)h;
    (void)hint;
    *b = uv_buf_init(chunk, sizeof chunk);
}

static void sniff(struct conn *c)
{
    size_t n = c->rbuf.len < 24 ? c->rbuf.len : 24;
    /* Metrics listeners serve HTTP/1.1 only (etcd serves no gRPC there):
     * an HTTP/2 preface is answered as a bad HTTP/1.1 request. */
    if (!c->opts->metrics_only && memcmp(c->rbuf.data, H2_PREFACE, n) == 0) {
        if (c->rbuf.len < 24)
            return; /* need more */
        c->mode = CONN_H2;
        if (net__h2_init(c) != 0) {
            net__conn_close(c);
            return;
        }
        struct buf b = c->rbuf;
        buf_init(&c->rbuf);
        if (net__h2_recv(c, b.data, b.len) != 0)
            net__conn_close(c);
        buf_free(&b);
        return;
    }
    c->mode = CONN_HTTP1;
    net__http1_recv(c);
}

void net__conn_input(struct conn *c, const uint8_t *p, size_t n)
{
    switch (c->mode) {
    case CONN_H2:
        if (net__h2_recv(c, p, n) != 0)
            net__conn_close(c);
        break;
    case CONN_SNIFF:
        buf_append(&c->rbuf, p, n);
        sniff(c);
        break;
    case CONN_HTTP1:
        buf_append(&c->rbuf, p, n);
        net__http1_recv(c);
        break;
    }
}

static void tls_input(struct conn *c, const uint8_t *p, size_t n)
{
    int rc = net__tls_recv(c, p, n);
    if (rc > 0)
        net__conn_end(c);
    else if (rc < 0)
        net__conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct conn *c = s->data;
    const uint8_t *p = (const uint8_t *)b->base;
    if (n < 0) {
        net__conn_close(c);
        return;
    }
    if (n == 0 || c->closing)
        return;
    if (c->ssl != NULL) {
        tls_input(c, p, (size_t)n);
        return;
    }
    /* The first byte tells a TLS ClientHello (a handshake record, 0x16)
     * from plaintext, so one port can serve http and https URLs as etcd
     * does; the wrong kind for the listener is refused at once. */
    if (c->mode == CONN_SNIFF && c->rbuf.len == 0) {
        int hello = p[0] == 0x16;
        if (hello && c->opts->tls) {
            if (net__tls_accept(c) != 0)
                net__conn_close(c);
            else
                tls_input(c, p, (size_t)n);
            return;
        }
        if (hello || !c->opts->plain) {
            net__conn_close(c);
            return;
        }
    }
    net__conn_input(c, p, (size_t)n);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    if (status != 0)
        return;
    struct conn *c = cairn_calloc(1, sizeof *c);
    uv_tcp_init(server->loop, &c->tcp);
    c->tcp.data = c;
    /* A copy: listeners are freed at shutdown while connections live on
     * through the grace period. */
    c->opts_copy = l->opts;
    c->opts = &c->opts_copy;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, (uv_close_cb)cairn_free);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    nconns++;
    if (shutting_down) {
        net__conn_close(c);
        return;
    }
    /* Until the member is ready (etcd's ReadyNotify: it has published
     * itself through raft), client connections wait unread, as etcd's
     * listeners accept and serve only once ready; metrics listeners serve
     * at once (a member without quorum can still be looked at). */
    if (serving || c->opts->metrics_only) {
        c->reading = 1;
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

void net__conn_pause(struct conn *c, int pause)
{
    if (c->closing || !c->reading || c->paused == pause)
        return;
    c->paused = pause;
    if (pause)
        uv_read_stop((uv_stream_t *)&c->tcp);
    else
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

void net_serve(void)
{
    serving = 1;
    for (struct conn *c = conns; c != NULL; c = c->next)
        if (!c->reading && !c->closing) {
            c->reading = 1;
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
        }
}

/* http(s)://host:port with host a name, IPv4 or [IPv6]. */
static int parse_url(const char *url, char *host, size_t hlen, int *port,
                     int *secure)
{
    const char *p;
    *secure = strncmp(url, "https://", 8) == 0;
    if (strncmp(url, "http://", 7) == 0)
        p = url + 7;
    else if (*secure)
        p = url + 8;
    else if (strncmp(url, "unixs://", 8) == 0)
        return -EPROTONOSUPPORT;
    else
        return -EINVAL;
    const char *hs = p, *he;
    if (*p == '[') {
        hs = p + 1;
        he = strchr(hs, ']');
        if (he == NULL || he[1] != ':')
            return -EINVAL;
        p = he + 2;
    } else {
        he = strrchr(p, ':');
        if (he == NULL)
            return -EINVAL;
        p = he + 1;
    }
    if ((size_t)(he - hs) >= hlen)
        return -EINVAL;
    memcpy(host, hs, (size_t)(he - hs));
    host[he - hs] = 0;
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p || (*end != 0 && *end != '/') || v < 0 || v > 65535)
        return -EINVAL;
    *port = (int)v;
    return 0;
}

int net_listen(uv_loop_t *loop, const char *url, const struct net_opts *o)
{
    char host[256], addr[280];
    int port, rc, secure, merged = 0;
    struct addrinfo hints, *res, *ai;

    if ((rc = parse_url(url, host, sizeof host, &port, &secure)) != 0)
        return rc;
    if (secure && !net_tls_enabled())
        return -EPROTONOSUPPORT;
    /* http and https URLs naming one address share its listener, as
     * etcd's serveCtx does (secure || insecure). */
    snprintf(addr, sizeof addr, "%s:%d", host, port);
    for (struct listener *l = listeners; l != NULL; l = l->next)
        if (l->opts.metrics_only == o->metrics_only && strcmp(l->addr, addr) == 0) {
            *(secure ? &l->opts.tls : &l->opts.plain) = 1;
            merged = 1;
        }
    if (merged)
        return 0;
    if (!flush_check_started) {
        uv_check_init(loop, &flush_check);
        uv_check_start(&flush_check, on_check);
        uv_unref((uv_handle_t *)&flush_check);
        net__deadlines_init(loop);
        flush_check_started = 1;
    }
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE;
    char ports[16];
    snprintf(ports, sizeof ports, "%d", port);
    if (getaddrinfo(host[0] ? host : NULL, ports, &hints, &res) != 0)
        return -EADDRNOTAVAIL;
    int bound = 0;
    rc = -EADDRNOTAVAIL;
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        struct listener *l = cairn_calloc(1, sizeof *l);
        l->opts = *o;
        l->opts.tls = secure;
        l->opts.plain = !secure;
        snprintf(l->addr, sizeof l->addr, "%s", addr);
        uv_tcp_init(loop, &l->tcp);
        l->tcp.data = l;
        rc = uv_tcp_bind(&l->tcp, ai->ai_addr,
                         ai->ai_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0);
        if (rc == 0)
            rc = uv_listen((uv_stream_t *)&l->tcp, 1024, on_connection);
        if (rc != 0) {
            uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)cairn_free);
            if (bound)
                rc = 0; /* e.g. localhost's ::1 without IPv6 */
            continue;
        }
        bound++;
        l->next = listeners;
        listeners = l;
        log_info("net: listening url=%s family=%s", url,
                 ai->ai_family == AF_INET6 ? "ipv6" : "ipv4");
    }
    freeaddrinfo(res);
    return bound ? 0 : rc;
}

static void on_shutdown_timeout(uv_timer_t *t)
{
    (void)t;
    for (struct conn *c = conns; c != NULL; c = c->next)
        net__conn_close(c);
}

void net_end_hasleader_streams(void)
{
    for (struct conn *c = conns; c != NULL; c = c->next) {
        if (c->mode == CONN_HTTP1) {
            struct grpc_call *k = net__http1_call(c);
            if (k != NULL && (k->long_lived || k->on_msg != NULL) &&
                k->has_leader_md && !k->finished)
                grpc_finish(k, GRPC_UNAVAILABLE, "etcdserver: no leader");
            continue;
        }
        if (c->mode != CONN_H2)
            continue;
        for (struct grpc_call *k = c->calls, *kn; k != NULL; k = kn) {
            kn = k->next;
            if ((k->long_lived || k->on_msg != NULL) && k->has_leader_md &&
                !k->finished)
                grpc_finish(k, GRPC_UNAVAILABLE, "etcdserver: no leader");
        }
        net__mark_dirty(c);
    }
}

void net_shutdown(uv_loop_t *loop, int grace_ms, void (*done)(void))
{
    shutting_down = 1;
    shutdown_done = done;
    net_tls_stop(); /* connections keep their contexts */
    for (struct listener *l = listeners; l != NULL; l = l->next)
        uv_close((uv_handle_t *)&l->tcp, (uv_close_cb)cairn_free);
    listeners = NULL;
    for (struct conn *c = conns; c != NULL; c = c->next) {
        struct grpc_call *gc = c->mode == CONN_HTTP1 ? net__http1_call(c) : NULL;
        if (gc != NULL) {
            /* A gateway call: long-lived ones end now, others finish;
             * the connection closes after the answer. */
            net__http1_no_keepalive(c);
            if (gc->long_lived)
                grpc_finish(gc, GRPC_UNAVAILABLE, "etcdserver: server stopped");
            continue;
        }
        if (c->mode != CONN_H2) {
            net__conn_close(c);
            continue;
        }
        /* Streams that would never end by themselves end now; the ones
         * in flight finish; no new ones start. */
        for (struct grpc_call *k = c->calls, *kn; k != NULL; k = kn) {
            kn = k->next;
            if (k->long_lived)
                grpc_finish(k, GRPC_UNAVAILABLE, "etcdserver: server stopped");
        }
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(c->h2),
                              NGHTTP2_NO_ERROR, NULL, 0);
        c->goaway_sent = 1;
        net__mark_dirty(c);
    }
    if (nconns == 0) {
        shutdown_done = NULL;
        done();
        return;
    }
    uv_timer_init(loop, &shutdown_timer);
    uv_timer_start(&shutdown_timer, on_shutdown_timeout, (uint64_t)grace_ms, 0);
}
