/* The peer transport (see peer.h for the contract, peer_int.h for the wire
 * format).
 *
 * Connections are one-way, as in libraft's own backend: a member sends on
 * the connection it dialed and receives on the ones it accepted; the only
 * bytes going back on a dialed connection are the acceptor's hello (and
 * TLS records). Everything is refcounted on the loop: a connection is
 * freed once its handles are closed and no file system or thread-pool
 * request still points at it; the transport once its own handles are
 * closed and every connection is freed. */
#include "repl/peer.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "core/mem.h"
#include "net/tls.h"
#include "repl/peer_int.h"

#define READ_BUF (64u << 10)
#define CONNECT_TIMEOUT_MS 2000 /* TCP + TLS + hello back */
#define HELLO_TIMEOUT_MS 5000   /* an accepted connection must say who it is */
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define QUEUE_MAX_BYTES (4u << 20) /* held while a connect is pending */
#define QUEUE_MAX_MSGS 1024
/* Bytes handed to uv_write and not yet written: beyond this a peer that
 * does not read is treated as unreachable rather than buffered for. */
#define WRITE_MAX_BYTES (PEER_FRAME_MAX + (16u << 20))
#define IMG_INFLIGHT 4

struct conn;

/* One message to send: its frame header and fixed fields in @hdr, then the
 * borrowed data (entries, snapshot data) or, for app messages, nothing
 * (the whole frame is in @hdr). */
struct sreq {
    struct sreq *next;
    struct repl_peer *p;
    void (*cb)(void *ud, int status); /* NULL: an app message */
    void *ud;
    int status;   /* for the deferred list */
    int image;    /* an install snapshot with an image behind it */
    uint64_t index;
    size_t bytes;
    uint8_t *hdr;
    unsigned nbufs;
    uv_buf_t bufs[];
};

enum mstate { M_IDLE, M_CONNECTING, M_UP, M_BACKOFF };

struct member {
    struct member *next;
    struct repl_peer *p;
    uint64_t id;
    char **urls;
    int nurls;
    char *addr; /* the member's own URLs from its hello: server_address */
    uint64_t last_recv;
    int has_recv;
    enum mstate state;
    struct conn *out;
    int url_idx;
    struct sreq *q_head, **q_tail;
    size_t q_bytes;
    unsigned q_n;
    uv_timer_t timer; /* backoff */
    unsigned backoff_ms;
    int want; /* something was sent during the backoff */
};

enum cstate { C_CONNECTING, C_TLS, C_HELLO, C_UP };

struct chunk {
    struct conn *c;
    int busy;
    uint8_t hdr[PEER_FRAME_HDR];
    uint8_t *buf;
};

/* An image being streamed out behind an install snapshot. */
struct img_out {
    struct sreq *r;
    uv_work_t work;
    int open_rc;
    uv_file fd;
    int64_t off;
    int reading, eof;
    uv_fs_t fs;
    struct chunk *rd; /* the chunk being read into */
    struct chunk ch[IMG_INFLIGHT];
    uint8_t end[PEER_FRAME_HDR + 8];
};

/* An image being received before its install snapshot is delivered. */
struct img_in {
    struct raft_message msg;
    char path[PATH_MAX];
    uv_file fd;
    uint64_t bytes;
    uv_fs_t fs;
    uint8_t *wbuf;
    size_t wlen, wcap;
};

struct conn {
    struct conn *next, *prev;
    struct repl_peer *p;
    uv_tcp_t tcp;
    uv_timer_t timer; /* deadline until the hello exchange is done */
    uv_connect_t creq;
    int refs;
    int outbound, tls, closing, paused;
    enum cstate state;
    SSL *ssl;
    int tls_up;
    char host[256]; /* dialed host, for certificate checks */
    struct member *m; /* outbound: destination; inbound: sender */
    uint8_t *in;
    size_t in_len, in_off, in_cap;
    size_t wq; /* bytes in uv_write not yet done */
    char remote[INET6_ADDRSTRLEN + 8];
    struct img_out *iout;
    struct img_in *iin;
};

struct listener {
    uv_tcp_t tcp;
    struct repl_peer *p;
    int tls;
};

struct repl_peer {
    uv_loop_t *loop;
    struct repl_peer_opts o;
    char *image_dir, *self_addr;
    SSL_CTX *srv_ctx, *cli_ctx;
    char *allowed_cn;
    struct listener **ls;
    int nls;
    struct member *members;
    struct conn *conns;
    struct sreq *done_head, **done_tail;
    uv_timer_t flush;
    int refs, closing;
    void (*close_cb)(void *ud);
    void *close_ud;
    uint8_t rbuf[READ_BUF];
    uint8_t plain[READ_BUF];
};

static void conn_close(struct conn *c);
static void conn_process(struct conn *c);
static void try_url(struct member *m);
static void dispatch(struct conn *c, struct sreq *r);

/* ---- refcounts and deferred completions ---- */

static void finalize(struct repl_peer *p)
{
    void (*cb)(void *) = p->close_cb;
    void *ud = p->close_ud;
    /* Deferred completions (failed sends, cancelled queues) run before the
     * owner hears that everything is closed. */
    while (p->done_head != NULL) {
        struct sreq *r = p->done_head;
        p->done_head = r->next;
        if (r->cb != NULL)
            r->cb(r->ud, r->status);
        cairn_free(r->hdr);
        cairn_free(r);
    }
    for (struct member *m = p->members, *next; m != NULL; m = next) {
        next = m->next;
        for (int i = 0; i < m->nurls; i++)
            cairn_free(m->urls[i]);
        cairn_free(m->urls);
        cairn_free(m->addr);
        cairn_free(m);
    }
    for (int i = 0; i < p->nls; i++)
        cairn_free(p->ls[i]);
    cairn_free(p->ls);
    SSL_CTX_free(p->srv_ctx);
    SSL_CTX_free(p->cli_ctx);
    cairn_free(p->allowed_cn);
    cairn_free(p->image_dir);
    cairn_free(p->self_addr);
    cairn_free(p);
    if (cb != NULL)
        cb(ud);
}

static void p_unref(struct repl_peer *p)
{
    if (--p->refs == 0 && p->closing)
        finalize(p);
}

static void on_p_handle_closed(uv_handle_t *h)
{
    p_unref(h->data);
}

static void sreq_done(struct sreq *r, int status)
{
    if (r->cb != NULL)
        r->cb(r->ud, status);
    cairn_free(r->hdr);
    cairn_free(r);
}

static void on_flush(uv_timer_t *t)
{
    struct repl_peer *p = t->data;
    struct sreq *r = p->done_head;
    p->done_head = NULL;
    p->done_tail = &p->done_head;
    while (r != NULL) {
        struct sreq *next = r->next;
        sreq_done(r, r->status);
        r = next;
    }
}

/* Callbacks never run inside repl_peer_send_raft: libraft does not expect
 * its send callback before send returned. */
static void fail_later(struct repl_peer *p, struct sreq *r, int status)
{
    r->status = status;
    r->next = NULL;
    *p->done_tail = r;
    p->done_tail = &r->next;
    if (!p->closing)
        uv_timer_start(&p->flush, on_flush, 0, 0);
}

static int lost_status(struct repl_peer *p)
{
    return p->closing ? RAFT_CANCELED : RAFT_NOCONNECTION;
}

/* ---- URLs ---- */

struct purl {
    int tls;
    char host[256];
    int port;
};

/* http(s)://host:port, host an IPv4 literal, [IPv6 literal], localhost or
 * empty. Errors: -EPROTONOSUPPORT (scheme), -EINVAL. */
static int parse_url(const char *u, size_t len, struct purl *out)
{
    char buf[512];
    if (len >= sizeof buf)
        return -EINVAL;
    memcpy(buf, u, len);
    buf[len] = 0;
    char *h;
    if (strncmp(buf, "http://", 7) == 0) {
        out->tls = 0;
        h = buf + 7;
    } else if (strncmp(buf, "https://", 8) == 0) {
        out->tls = 1;
        h = buf + 8;
    } else {
        return -EPROTONOSUPPORT;
    }
    char *slash = strchr(h, '/');
    if (slash != NULL && slash[1] == 0)
        *slash = 0; /* a trailing "/" as etcd allows */
    else if (slash != NULL)
        return -EINVAL;
    char *colon;
    if (h[0] == '[') {
        char *close = strchr(h, ']');
        if (close == NULL || close[1] != ':')
            return -EINVAL;
        *close = 0;
        h++;
        colon = close + 1;
    } else {
        colon = strrchr(h, ':');
        if (colon == NULL)
            return -EINVAL;
        *colon = 0;
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == 0 || *end != 0 || port < 0 || port > 65535)
        return -EINVAL;
    if (strlen(h) >= sizeof out->host)
        return -EINVAL;
    memcpy(out->host, h, strlen(h) + 1);
    out->port = (int)port;
    return 0;
}

/* Literals and localhost only: resolving names would block the loop. */
static int to_sockaddr(const struct purl *u, struct sockaddr_storage *ss)
{
    const char *h = u->host;
    if (!*h)
        h = "0.0.0.0";
    else if (strcmp(h, "localhost") == 0)
        h = "127.0.0.1";
    if (uv_ip4_addr(h, u->port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(h, u->port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
    return -EINVAL;
}

static int is_ip(const char *h)
{
    unsigned char b[16];
    return inet_pton(AF_INET, h, b) == 1 || inet_pton(AF_INET6, h, b) == 1;
}

/* ---- members ---- */

static struct member *member_find(struct repl_peer *p, uint64_t id)
{
    for (struct member *m = p->members; m != NULL; m = m->next)
        if (m->id == id)
            return m;
    return NULL;
}

static struct member *member_get(struct repl_peer *p, uint64_t id)
{
    struct member *m = member_find(p, id);
    if (m != NULL)
        return m;
    m = cairn_calloc(1, sizeof *m);
    m->p = p;
    m->id = id;
    m->q_tail = &m->q_head;
    m->backoff_ms = BACKOFF_MIN_MS;
    uv_timer_init(p->loop, &m->timer);
    m->timer.data = p;
    p->refs++;
    m->next = p->members;
    p->members = m;
    return m;
}

static void queue_fail(struct member *m, int status)
{
    struct sreq *r = m->q_head;
    m->q_head = NULL;
    m->q_tail = &m->q_head;
    m->q_bytes = 0;
    m->q_n = 0;
    while (r != NULL) {
        struct sreq *next = r->next;
        fail_later(m->p, r, status);
        r = next;
    }
}

static void on_backoff(uv_timer_t *t);

/* Every URL failed: what was queued fails now, and sends fail fast until
 * the backoff is over; the next attempt is made only if someone still
 * wants to send. */
static void connect_failed(struct member *m)
{
    m->state = M_BACKOFF;
    m->want = 0;
    queue_fail(m, RAFT_NOCONNECTION);
    /* the timer's data is the transport (for its close); the member is
     * found again by its address */
    uv_timer_start(&m->timer, on_backoff, m->backoff_ms, 0);
    m->backoff_ms = m->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                       : m->backoff_ms * 2;
}

static void start_connect(struct member *m)
{
    m->state = M_CONNECTING;
    m->url_idx = 0;
    try_url(m);
}

static void on_backoff(uv_timer_t *t)
{
    struct member *m = (struct member *)((char *)t - offsetof(struct member, timer));
    if (m->state != M_BACKOFF)
        return;
    if (m->want && m->nurls > 0)
        start_connect(m);
    else
        m->state = M_IDLE;
}

static void member_up(struct member *m)
{
    m->state = M_UP;
    m->backoff_ms = BACKOFF_MIN_MS;
    struct sreq *r = m->q_head;
    m->q_head = NULL;
    m->q_tail = &m->q_head;
    m->q_bytes = 0;
    m->q_n = 0;
    while (r != NULL) {
        struct sreq *next = r->next;
        if (m->out != NULL)
            dispatch(m->out, r);
        else
            fail_later(m->p, r, RAFT_NOCONNECTION);
        r = next;
    }
}

/* ---- connections: lifetime ---- */

static void img_in_discard(struct img_in *ii)
{
    if (ii->fd >= 0)
        close(ii->fd);
    if (ii->path[0])
        unlink(ii->path);
    peer__raft_free(&ii->msg);
    cairn_free(ii->wbuf);
    cairn_free(ii);
}

static void img_out_free(struct img_out *io)
{
    if (io->fd >= 0)
        close(io->fd);
    for (int i = 0; i < IMG_INFLIGHT; i++)
        cairn_free(io->ch[i].buf);
    cairn_free(io);
}

static void conn_unref(struct conn *c)
{
    if (--c->refs > 0)
        return;
    struct repl_peer *p = c->p;
    if (c->iout != NULL) {
        struct sreq *r = c->iout->r;
        img_out_free(c->iout);
        sreq_done(r, lost_status(p));
    }
    if (c->iin != NULL)
        img_in_discard(c->iin);
    SSL_free(c->ssl);
    cairn_free(c->in);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        p->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    cairn_free(c);
    p_unref(p);
}

static void on_conn_handle_closed(uv_handle_t *h)
{
    conn_unref(h->data);
}

static struct conn *conn_new(struct repl_peer *p, int outbound, int tls)
{
    struct conn *c = cairn_calloc(1, sizeof *c);
    c->p = p;
    c->outbound = outbound;
    c->tls = tls;
    uv_tcp_init(p->loop, &c->tcp);
    uv_timer_init(p->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->refs = 2; /* the two handles */
    c->next = p->conns;
    if (p->conns != NULL)
        p->conns->prev = c;
    p->conns = c;
    p->refs++;
    return c;
}

/* Closes @c; an outbound connection that was still being set up moves its
 * member on to the next URL, one that was up leaves its member idle (the
 * next send dials again). */
static void conn_close(struct conn *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->tcp, on_conn_handle_closed);
    uv_close((uv_handle_t *)&c->timer, on_conn_handle_closed);
    struct member *m = c->m;
    if (!c->outbound || m == NULL || m->out != c)
        return;
    m->out = NULL;
    if (c->p->closing)
        return;
    if (m->state == M_CONNECTING) {
        m->url_idx++;
        try_url(m);
    } else if (m->state == M_UP) {
        m->state = M_IDLE;
    }
}

static void set_remote(struct conn *c)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    char ip[INET6_ADDRSTRLEN] = "";
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) != 0)
        return;
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        uv_ip6_name(a, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "[%s]:%d", ip, ntohs(a->sin6_port));
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        uv_ip4_name(a, ip, sizeof ip);
        snprintf(c->remote, sizeof c->remote, "%s:%d", ip, ntohs(a->sin_port));
    }
}

/* ---- connections: writing ---- */

struct wreq {
    uv_write_t req;
    struct conn *c;
    void (*cb)(void *arg, int status);
    void *arg;
    uint8_t *owned;
    size_t bytes;
};

static void on_written(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    struct conn *c = w->c;
    c->wq -= w->bytes;
    cairn_free(w->owned);
    if (status < 0 && !c->closing)
        conn_close(c);
    if (w->cb != NULL)
        w->cb(w->arg, status);
    cairn_free(w);
}

static int raw_write(struct conn *c, const uv_buf_t *bufs, unsigned n,
                     uint8_t *owned, void (*cb)(void *, int), void *arg)
{
    struct wreq *w = cairn_calloc(1, sizeof *w);
    w->c = c;
    w->cb = cb;
    w->arg = arg;
    w->owned = owned;
    for (unsigned i = 0; i < n; i++)
        w->bytes += bufs[i].len;
    int rc = uv_write(&w->req, (uv_stream_t *)&c->tcp, bufs, n, on_written);
    if (rc != 0) {
        cairn_free(owned);
        cairn_free(w);
        return rc;
    }
    c->wq += w->bytes;
    return 0;
}

/* Sends what OpenSSL produced as one write owning a copy of it. */
static int tls_flush(struct conn *c, void (*cb)(void *, int), void *arg)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    char *d;
    long len = BIO_get_mem_data(wb, &d);
    if (len <= 0)
        return cb == NULL ? 0 : -EAGAIN;
    uint8_t *copy = cairn_malloc((size_t)len);
    memcpy(copy, d, (size_t)len);
    (void)BIO_reset(wb);
    uv_buf_t b = uv_buf_init((char *)copy, (unsigned)len);
    return raw_write(c, &b, 1, copy, cb, arg);
}

/* Writes @bufs (borrowed until @cb; with TLS they are encrypted at once).
 * @cb runs from libuv, never from here. Errors: a negative errno, and the
 * caller still owns what @cb would have freed. */
static int conn_write(struct conn *c, const uv_buf_t *bufs, unsigned n,
                      void (*cb)(void *, int), void *arg)
{
    if (c->closing)
        return -ECANCELED;
    if (!c->tls)
        return raw_write(c, bufs, n, NULL, cb, arg);
    for (unsigned i = 0; i < n; i++) {
        size_t off = 0;
        while (off < bufs[i].len) {
            size_t left = bufs[i].len - off;
            int r = SSL_write(c->ssl, bufs[i].base + off,
                              left > INT_MAX ? INT_MAX : (int)left);
            if (r <= 0) {
                ERR_clear_error();
                return -EPROTO;
            }
            off += (size_t)r;
        }
    }
    return tls_flush(c, cb, arg);
}

/* ---- sending ---- */

static void on_sreq_written(void *arg, int status)
{
    struct sreq *r = arg;
    /* A failed or cancelled write: the member was unreachable (or we are
     * closing) rather than the message wrong. */
    sreq_done(r, status == 0 ? 0 : lost_status(r->p));
}

static void img_pump(struct conn *c);

static void on_chunk_written(void *arg, int status)
{
    struct chunk *ch = arg;
    ch->busy = 0;
    if (status == 0)
        img_pump(ch->c);
}

static void on_end_written(void *arg, int status)
{
    struct conn *c = arg;
    if (status != 0 || c->iout == NULL)
        return; /* the connection is closing: conn_unref completes */
    struct sreq *r = c->iout->r;
    img_out_free(c->iout);
    c->iout = NULL;
    sreq_done(r, 0);
}

static void on_img_read(uv_fs_t *fs)
{
    struct img_out *io = (struct img_out *)((char *)fs - offsetof(struct img_out, fs));
    struct chunk *ch = io->rd;
    struct conn *c = ch->c;
    ssize_t n = fs->result;
    uv_fs_req_cleanup(fs);
    io->reading = 0;
    io->rd = NULL;
    if (c->closing)
        goto out_unref;
    if (n < 0) {
        log_warnw("peer: cannot read the store image; dropping the connection",
                  LOG_UINT("to", c->m->id), LOG_STR("error", uv_strerror((int)n)));
        conn_close(c);
        goto out_unref;
    }
    if (n == 0) {
        io->eof = 1;
        peer__frame_header(io->end, 8, PEER_K_IMAGE_END, 0);
        uint64_t total = (uint64_t)io->off;
        for (int i = 0; i < 8; i++)
            io->end[PEER_FRAME_HDR + i] = (uint8_t)(total >> (8 * i));
        uv_buf_t b = uv_buf_init((char *)io->end, sizeof io->end);
        if (conn_write(c, &b, 1, on_end_written, c) != 0)
            conn_close(c);
        goto out_unref;
    }
    io->off += n;
    peer__frame_header(ch->hdr, (size_t)n, PEER_K_IMAGE_CHUNK, 0);
    uv_buf_t b[2] = {uv_buf_init((char *)ch->hdr, PEER_FRAME_HDR),
                     uv_buf_init((char *)ch->buf, (unsigned)n)};
    ch->busy = 1;
    if (conn_write(c, b, 2, on_chunk_written, ch) != 0) {
        ch->busy = 0;
        conn_close(c);
        goto out_unref;
    }
    img_pump(c);
out_unref:
    conn_unref(c);
}

/* Reads the next chunk while fewer than IMG_INFLIGHT are being written:
 * the socket's pace bounds what is in memory. */
static void img_pump(struct conn *c)
{
    struct img_out *io = c->iout;
    if (io == NULL || c->closing || io->reading || io->eof)
        return;
    struct chunk *ch = NULL;
    for (int i = 0; i < IMG_INFLIGHT && ch == NULL; i++)
        if (!io->ch[i].busy)
            ch = &io->ch[i];
    if (ch == NULL)
        return;
    if (ch->buf == NULL)
        ch->buf = cairn_malloc(PEER_CHUNK);
    ch->c = c;
    io->rd = ch;
    io->reading = 1;
    c->refs++;
    int rc = uv_fs_read(c->p->loop, &io->fs, io->fd,
                        &(uv_buf_t){(char *)ch->buf, PEER_CHUNK}, 1, io->off,
                        on_img_read);
    if (rc != 0) {
        io->reading = 0;
        io->rd = NULL;
        c->refs--;
        conn_close(c);
    }
}

static void img_open_work(uv_work_t *w)
{
    struct img_out *io = w->data;
    struct conn *c = io->ch[0].c;
    struct repl_peer *p = c->p;
    io->open_rc = p->o.image_open(p->o.ud, io->r->index);
}

static void img_open_done(uv_work_t *w, int status)
{
    struct img_out *io = w->data;
    struct conn *c = io->ch[0].c;
    if (status == 0 && io->open_rc >= 0)
        io->fd = io->open_rc;
    if (c->closing)
        goto out_unref; /* conn_unref completes the send */
    if (status != 0 || io->open_rc < 0) {
        int e = status != 0 ? status : io->open_rc;
        log_warnw("peer: cannot open the store image for a snapshot",
                  LOG_UINT("to", c->m->id), LOG_UINT("index", io->r->index),
                  LOG_STR("error", strerror(-e)));
        struct sreq *r = io->r;
        img_out_free(io);
        c->iout = NULL;
        sreq_done(r, RAFT_IOERR);
        goto out_unref;
    }
    /* The header goes first; chunks follow as they are read (uv_write keeps
     * the order). The send completes with the IMAGE_END write. */
    if (conn_write(c, io->r->bufs, io->r->nbufs, NULL, NULL) != 0) {
        conn_close(c);
        goto out_unref;
    }
    img_pump(c);
out_unref:
    conn_unref(c);
}

static void start_image(struct conn *c, struct sreq *r)
{
    struct img_out *io = cairn_calloc(1, sizeof *io);
    io->r = r;
    io->fd = -1;
    io->work.data = io;
    io->ch[0].c = c;
    for (int i = 1; i < IMG_INFLIGHT; i++)
        io->ch[i].c = c;
    c->iout = io;
    c->refs++;
    uv_queue_work(c->p->loop, &io->work, img_open_work, img_open_done);
}

static void dispatch(struct conn *c, struct sreq *r)
{
    struct repl_peer *p = c->p;
    if (r->image) {
        /* One image per connection at a time; raft sends the snapshot
         * again later. */
        if (c->iout != NULL)
            fail_later(p, r, RAFT_NOCONNECTION);
        else
            start_image(c, r);
        return;
    }
    if (c->wq + r->bytes > WRITE_MAX_BYTES) {
        fail_later(p, r, RAFT_NOCONNECTION);
        return;
    }
    if (conn_write(c, r->bufs, r->nbufs, on_sreq_written, r) != 0) {
        conn_close(c);
        fail_later(p, r, lost_status(p));
    }
}

static void route(struct repl_peer *p, uint64_t to, struct sreq *r)
{
    struct member *m = member_find(p, to);
    r->p = p;
    if (m == NULL || m->nurls == 0) {
        fail_later(p, r, RAFT_NOCONNECTION);
        return;
    }
    switch (m->state) {
    case M_UP:
        dispatch(m->out, r);
        return;
    case M_BACKOFF:
        m->want = 1;
        fail_later(p, r, RAFT_NOCONNECTION);
        return;
    case M_IDLE:
        start_connect(m);
        if (m->state != M_CONNECTING) {
            fail_later(p, r, RAFT_NOCONNECTION);
            return;
        }
        break;
    case M_CONNECTING:
        break;
    }
    if (m->q_n >= QUEUE_MAX_MSGS || m->q_bytes + r->bytes > QUEUE_MAX_BYTES) {
        fail_later(p, r, RAFT_NOCONNECTION);
        return;
    }
    r->next = NULL;
    *m->q_tail = r;
    m->q_tail = &r->next;
    m->q_bytes += r->bytes;
    m->q_n++;
}

int repl_peer_send_raft(struct repl_peer *p, const struct raft_message *m,
                        void (*cb)(void *ud, int status), void *ud)
{
    uint8_t *hdr;
    size_t hdr_len, frame_len;
    if (p->closing)
        return -ESHUTDOWN;
    int rc = peer__encode_raft(m, 0, &hdr, &hdr_len, &frame_len);
    if (rc != 0)
        return rc;
    unsigned nd = peer__raft_bufs(m, NULL, NULL);
    struct sreq *r = cairn_calloc(1, sizeof *r + (nd + 1) * sizeof(uv_buf_t));
    const void **base = cairn_malloc((nd + 1) * sizeof *base);
    size_t *len = cairn_malloc((nd + 1) * sizeof *len);
    peer__raft_bufs(m, base, len);
    r->cb = cb;
    r->ud = ud;
    r->hdr = hdr;
    r->bytes = frame_len;
    r->nbufs = nd + 1;
    r->bufs[0] = uv_buf_init((char *)hdr, (unsigned)hdr_len);
    for (unsigned i = 0; i < nd; i++)
        r->bufs[i + 1] = uv_buf_init((char *)base[i], (unsigned)len[i]);
    cairn_free(base);
    cairn_free(len);
    if (m->type == RAFT_IO_INSTALL_SNAPSHOT && p->o.image_open != NULL) {
        r->image = 1;
        r->index = m->install_snapshot.last_index;
        hdr[5] = PEER_F_IMAGE;
    }
    route(p, m->server_id, r);
    return 0;
}

int repl_peer_send_app(struct repl_peer *p, uint64_t to, int type,
                       const uint8_t *data, size_t len)
{
    if (p->closing)
        return -ESHUTDOWN;
    if (len > PEER_DATA_MAX)
        return -EMSGSIZE;
    struct member *m = member_find(p, to);
    if (m == NULL || m->nurls == 0)
        return -ENOTCONN;
    if (m->state == M_BACKOFF) {
        m->want = 1;
        return -ENOTCONN;
    }
    struct sreq *r = cairn_calloc(1, sizeof *r + sizeof(uv_buf_t));
    size_t n = PEER_FRAME_HDR + 4 + len;
    r->hdr = cairn_malloc(n);
    peer__frame_header(r->hdr, 4 + len, PEER_K_APP, 0);
    for (int i = 0; i < 4; i++)
        r->hdr[PEER_FRAME_HDR + i] = (uint8_t)((uint32_t)type >> (8 * i));
    if (len > 0)
        memcpy(r->hdr + PEER_FRAME_HDR + 4, data, len);
    r->bytes = n;
    r->nbufs = 1;
    r->bufs[0] = uv_buf_init((char *)r->hdr, (unsigned)n);
    route(p, to, r);
    return 0;
}

/* ---- TLS ---- */

static void tls_drain(struct conn *c)
{
    if (tls_flush(c, NULL, NULL) != 0)
        conn_close(c);
}


static const char *tls_refusal(struct conn *c, char *buf, size_t len)
{
    long v = SSL_get_verify_result(c->ssl);
    unsigned long e = ERR_peek_last_error();
    if (v != X509_V_OK) {
        snprintf(buf, len, "x509: %s", X509_verify_cert_error_string(v));
        return buf;
    }
    if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return "tls: client didn't provide a certificate";
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
        return buf;
    }
    return "EOF";
}

static void log_rejected(struct conn *c, const char *why)
{
    /* etcd's words (embed/config_logging.go) */
    log_warnw("rejected connection", LOG_STR("remote-addr", c->remote),
              LOG_STR("server-name", c->outbound ? c->host : ""),
              LOG_STR("error", why));
    ERR_clear_error();
}

static void send_hello(struct conn *c, uint64_t to)
{
    struct repl_peer *p = c->p;
    /* Dialers send their URLs (the receiver's server_address for us);
     * the acceptor's answer needs none. */
    size_t alen = c->outbound ? strlen(p->self_addr) : 0;
    uint8_t *h = cairn_malloc(PEER_HELLO_LEN + alen);
    peer__hello_encode(h, p->o.cluster_id, p->o.self_id, to, alen);
    memcpy(h + PEER_HELLO_LEN, p->self_addr, alen);
    uv_buf_t b = uv_buf_init((char *)h, (unsigned)(PEER_HELLO_LEN + alen));
    int rc;
    if (c->tls) {
        rc = conn_write(c, &b, 1, NULL, NULL);
        cairn_free(h);
    } else {
        rc = raw_write(c, &b, 1, h, NULL, NULL);
    }
    if (rc != 0)
        conn_close(c);
}

static void tls_established(struct conn *c)
{
    char cn[256], why[320];
    struct repl_peer *p = c->p;
    net_tls_peer_cn(c->ssl, cn, sizeof cn);
    /* As etcd: the CN is checked on the certificates of members that
     * dial us; a dialer checks the server's certificate chain and host. */
    if (!c->outbound && p->allowed_cn != NULL && strcmp(cn, p->allowed_cn) != 0) {
        snprintf(why, sizeof why, "peer certificate CN %s is not allowed (want %s)",
                 cn[0] ? cn : "(none)", p->allowed_cn);
        log_rejected(c, why);
        conn_close(c);
        return;
    }
    c->state = C_HELLO;
    if (c->outbound)
        send_hello(c, c->m->id);
}

static void tls_input(struct conn *c, const uint8_t *d, size_t n)
{
    struct repl_peer *p = c->p;
    char why[256];
    if (BIO_write(SSL_get_rbio(c->ssl), d, (int)n) != (int)n) {
        conn_close(c);
        return;
    }
    if (!c->tls_up) {
        int r = SSL_do_handshake(c->ssl);
        tls_drain(c); /* our flight, or the alert */
        if (r != 1) {
            if (SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_READ)
                return;
            log_rejected(c, tls_refusal(c, why, sizeof why));
            conn_close(c);
            return;
        }
        c->tls_up = 1;
        tls_established(c);
    }
    while (!c->closing) {
        int r = SSL_read(c->ssl, p->plain, sizeof p->plain);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            if (!c->closing)
                tls_drain(c);
            if (e == SSL_ERROR_WANT_READ)
                return;
            /* With TLS 1.3 a server's refusal of our certificate arrives
             * as an alert after our side considered the handshake done. */
            if (e == SSL_ERROR_SSL)
                log_rejected(c, tls_refusal(c, why, sizeof why));
            ERR_clear_error();
            conn_close(c);
            return;
        }
        /* conn_input */
        if (c->in_len + (size_t)r > c->in_cap) {
            c->in_cap = (c->in_len + (size_t)r) * 2;
            c->in = cairn_realloc(c->in, c->in_cap);
        }
        memcpy(c->in + c->in_len, p->plain, (size_t)r);
        c->in_len += (size_t)r;
        conn_process(c);
    }
}

static int tls_begin(struct conn *c)
{
    struct repl_peer *p = c->p;
    c->ssl = SSL_new(c->outbound ? p->cli_ctx : p->srv_ctx);
    if (c->ssl == NULL)
        return -ENOMEM;
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        return -ENOMEM;
    }
    BIO_set_mem_eof_return(rb, -1); /* empty = wait for more */
    SSL_set_bio(c->ssl, rb, wb);
    c->state = C_TLS;
    if (!c->outbound) {
        SSL_set_accept_state(c->ssl);
        return 0;
    }
    /* The server must present a certificate for the host we dialed. */
    if (is_ip(c->host))
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl), c->host);
    else {
        SSL_set1_host(c->ssl, c->host);
        SSL_set_tlsext_host_name(c->ssl, c->host);
    }
    SSL_set_connect_state(c->ssl);
    SSL_do_handshake(c->ssl);
    ERR_clear_error();
    tls_drain(c);
    return 0;
}

/* ---- receiving ---- */

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;
    (void)suggested;
    /* One loop thread: reads are never concurrent. */
    *buf = uv_buf_init((char *)c->p->rbuf, sizeof c->p->rbuf);
}

static void refuse(struct conn *c, const char *why, uint64_t cluster,
                   uint64_t from, uint64_t to)
{
    struct repl_peer *p = c->p;
    log_warnw("peer: refused connection", LOG_STR("remote-addr", c->remote),
              LOG_STR("reason", why), LOG_UINT("remote-cluster-id", cluster),
              LOG_UINT("local-cluster-id", p->o.cluster_id),
              LOG_UINT("from", from), LOG_UINT("to", to),
              LOG_UINT("local-member-id", p->o.self_id));
    conn_close(c);
}

static void on_hello(struct conn *c, const struct peer_hello *h)
{
    struct repl_peer *p = c->p;
    /* A member joining an existing cluster learns its IDs from the first
     * member that dials it (the leader, once MemberAdd is in raft's
     * configuration): the hello names the cluster and the member it is
     * for. */
    if (!c->outbound && p->o.adopt != NULL && h->from != 0 && h->to != 0 &&
        h->cluster_id != 0 &&
        (h->cluster_id != p->o.cluster_id || h->to != p->o.self_id)) {
        p->o.adopt(p->o.ud, h->cluster_id, h->to);
        conn_close(c);
        return;
    }
    if (h->cluster_id != p->o.cluster_id) {
        refuse(c, "cluster ID mismatch", h->cluster_id, h->from, h->to);
        return;
    }
    if (h->to != p->o.self_id) {
        refuse(c, "hello for another member", h->cluster_id, h->from, h->to);
        return;
    }
    if (c->outbound) {
        if (h->from != c->m->id) {
            refuse(c, "answered by another member", h->cluster_id, h->from, h->to);
            return;
        }
        c->state = C_UP;
        uv_timer_stop(&c->timer);
        member_up(c->m);
        return;
    }
    if (h->from == 0 || h->from == p->o.self_id) {
        refuse(c, "bad sender member ID", h->cluster_id, h->from, h->to);
        return;
    }
    struct member *m = member_get(p, h->from);
    if (m->addr == NULL || strlen(m->addr) != h->addr_len ||
        memcmp(m->addr, h->addr, h->addr_len) != 0) {
        cairn_free(m->addr);
        m->addr = cairn_malloc(h->addr_len + 1);
        memcpy(m->addr, h->addr, h->addr_len);
        m->addr[h->addr_len] = 0;
    }
    c->m = m;
    c->state = C_UP;
    uv_timer_stop(&c->timer);
    send_hello(c, h->from);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void pause_input(struct conn *c)
{
    c->paused = 1;
    c->refs++; /* the file request points at us */
    uv_read_stop((uv_stream_t *)&c->tcp);
}

/* After a file system step: input flows again (what is buffered first). */
static void resume_input(struct conn *c)
{
    c->paused = 0;
    if (!c->closing) {
        conn_process(c);
        if (!c->closing && !c->paused)
            uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    }
}

static void deliver(struct conn *c, struct raft_message *msg)
{
    struct repl_peer *p = c->p;
    msg->server_id = c->m->id;
    msg->server_address = c->m->addr != NULL ? c->m->addr : "";
    p->o.recv_raft(p->o.ud, msg);
}

static void on_img_synced(uv_fs_t *fs)
{
    struct img_in *ii = (struct img_in *)((char *)fs - offsetof(struct img_in, fs));
    struct conn *c = (struct conn *)fs->data;
    ssize_t rc = fs->result;
    uv_fs_req_cleanup(fs);
    if (c->closing)
        goto out_unref; /* conn_unref deletes the file */
    if (rc < 0) {
        log_errorw("peer: cannot sync a received store image",
                   LOG_STR("path", ii->path), LOG_STR("error", uv_strerror((int)rc)));
        conn_close(c);
        goto out_unref;
    }
    close(ii->fd);
    ii->fd = -1;
    c->iin = NULL;
    struct repl_peer *p = c->p;
    if (p->o.image_received != NULL)
        p->o.image_received(p->o.ud, ii->msg.install_snapshot.last_index, ii->path);
    ii->path[0] = 0; /* the owner's now */
    struct raft_message msg = ii->msg;
    memset(&ii->msg, 0, sizeof ii->msg);
    img_in_discard(ii);
    if (!c->closing)
        deliver(c, &msg);
    else
        peer__raft_free(&msg);
    resume_input(c);
out_unref:
    conn_unref(c);
}

static void on_img_written(uv_fs_t *fs)
{
    struct img_in *ii = (struct img_in *)((char *)fs - offsetof(struct img_in, fs));
    struct conn *c = (struct conn *)fs->data;
    ssize_t rc = fs->result;
    size_t want = ii->wlen;
    uv_fs_req_cleanup(fs);
    if (c->closing)
        goto out_unref;
    if (rc < 0 || (size_t)rc != want) {
        log_errorw("peer: cannot write a received store image",
                   LOG_STR("path", ii->path),
                   LOG_STR("error", rc < 0 ? uv_strerror((int)rc) : "short write"));
        conn_close(c);
        goto out_unref;
    }
    ii->bytes += (uint64_t)rc;
    resume_input(c);
out_unref:
    conn_unref(c);
}

static int image_begin(struct conn *c, struct raft_message *msg)
{
    struct repl_peer *p = c->p;
    if (p->image_dir == NULL) {
        log_errorw("peer: a store image arrived but there is no image directory",
                   LOG_UINT("from", c->m->id));
        return -EINVAL;
    }
    if (c->iin != NULL) {
        /* A new snapshot replaces one that never finished. */
        img_in_discard(c->iin);
        c->iin = NULL;
    }
    struct img_in *ii = cairn_calloc(1, sizeof *ii);
    snprintf(ii->path, sizeof ii->path, "%s/.peer-image-%llx-%llu-XXXXXX",
             p->image_dir, (unsigned long long)c->m->id,
             (unsigned long long)msg->install_snapshot.last_index);
    ii->fd = mkostemp(ii->path, O_CLOEXEC);
    if (ii->fd < 0) {
        int e = errno;
        log_errorw("peer: cannot create a file for a store image",
                   LOG_STR("path", ii->path), LOG_STR("error", strerror(e)));
        cairn_free(ii);
        return -e;
    }
    ii->msg = *msg;
    c->iin = ii;
    return 0;
}

static void image_chunk(struct conn *c, const uint8_t *b, size_t len)
{
    struct img_in *ii = c->iin;
    /* One buffer per stream, as big as the largest chunk: the bytes stay
     * until the write returned, while the input buffer moves on. */
    if (ii->wcap < len) {
        ii->wbuf = cairn_realloc(ii->wbuf, len);
        ii->wcap = len;
    }
    ii->wlen = len;
    memcpy(ii->wbuf, b, len);
    ii->fs.data = c;
    pause_input(c);
    uv_buf_t buf = uv_buf_init((char *)ii->wbuf, (unsigned)len);
    int rc = uv_fs_write(c->p->loop, &ii->fs, ii->fd, &buf, 1, (int64_t)ii->bytes,
                         on_img_written);
    if (rc != 0) {
        conn_close(c);
        conn_unref(c);
    }
}

static void image_end(struct conn *c)
{
    struct img_in *ii = c->iin;
    ii->fs.data = c;
    pause_input(c);
    if (uv_fs_fsync(c->p->loop, &ii->fs, ii->fd, on_img_synced) != 0) {
        conn_close(c);
        conn_unref(c);
    }
}

static int on_frame(struct conn *c, unsigned kind, unsigned flags,
                    const uint8_t *b, size_t len)
{
    struct repl_peer *p = c->p;
    struct raft_message msg;
    if (kind >= RAFT_IO_APPEND_ENTRIES && kind <= RAFT_IO_TIMEOUT_NOW) {
        if (peer__decode_raft(kind, b, len, &msg) != 0)
            return -EPROTO;
        if (kind == RAFT_IO_INSTALL_SNAPSHOT && (flags & PEER_F_IMAGE)) {
            if (image_begin(c, &msg) != 0) {
                peer__raft_free(&msg);
                return -EIO;
            }
            return 0;
        }
        deliver(c, &msg);
        return 0;
    }
    switch (kind) {
    case PEER_K_APP:
        if (len < 4)
            return -EPROTO;
        if (p->o.recv_app != NULL)
            p->o.recv_app(p->o.ud, c->m->id,
                          (int)(uint32_t)(b[0] | b[1] << 8 | b[2] << 16 |
                                          (uint32_t)b[3] << 24),
                          b + 4, len - 4);
        return 0;
    case PEER_K_IMAGE_CHUNK:
        if (c->iin == NULL || len == 0)
            return -EPROTO;
        image_chunk(c, b, len);
        return 0;
    case PEER_K_IMAGE_END: {
        if (c->iin == NULL || len != 8)
            return -EPROTO;
        uint64_t total = 0;
        for (int i = 0; i < 8; i++)
            total |= (uint64_t)b[i] << (8 * i);
        if (total != c->iin->bytes)
            return -EPROTO;
        image_end(c);
        return 0;
    }
    }
    return -EPROTO;
}

static void protocol_error(struct conn *c, const char *why)
{
    log_warnw("peer: closing a connection that broke the protocol",
              LOG_STR("remote-addr", c->remote),
              LOG_UINT("from", c->m != NULL ? c->m->id : 0), LOG_STR("reason", why));
    conn_close(c);
}

/* Consumes whole hellos and frames from the input buffer. */
static void conn_process(struct conn *c)
{
    while (!c->closing && !c->paused && c->in_off < c->in_len) {
        const uint8_t *d = c->in + c->in_off;
        size_t n = c->in_len - c->in_off;
        if (c->state != C_HELLO && c->state != C_UP)
            break;
        if (c->state == C_HELLO) {
            struct peer_hello h;
            long hl = peer__hello_decode(d, n, &h);
            if (hl < 0) {
                refuse(c, "not a cairn peer hello", 0, 0, 0);
                return;
            }
            if (hl == 0)
                break;
            c->in_off += (size_t)hl;
            on_hello(c, &h);
            continue;
        }
        if (c->outbound) {
            protocol_error(c, "data after the hello on a dialed connection");
            return;
        }
        if (n < PEER_FRAME_HDR)
            break;
        size_t len = (size_t)d[0] | (size_t)d[1] << 8 | (size_t)d[2] << 16 |
                     (size_t)d[3] << 24;
        if (len > PEER_FRAME_MAX) {
            protocol_error(c, "frame too large");
            return;
        }
        if (n < PEER_FRAME_HDR + len)
            break;
        c->in_off += PEER_FRAME_HDR + len;
        c->m->last_recv = uv_now(c->p->loop);
        c->m->has_recv = 1;
        if (on_frame(c, d[4], d[5], d + PEER_FRAME_HDR, len) != 0) {
            protocol_error(c, "malformed frame");
            return;
        }
    }
    if (c->closing)
        return;
    /* Keep only what is not consumed; drop a big buffer once empty. */
    if (c->in_off == c->in_len) {
        c->in_off = c->in_len = 0;
        if (c->in_cap > 4 * READ_BUF) {
            cairn_free(c->in);
            c->in = NULL;
            c->in_cap = 0;
        }
    } else if (c->in_off > 0 && !c->paused) {
        memmove(c->in, c->in + c->in_off, c->in_len - c->in_off);
        c->in_len -= c->in_off;
        c->in_off = 0;
    }
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = s->data;
    if (nread == 0 || c->closing)
        return;
    if (nread < 0) {
        if (c->state != C_UP && !c->outbound && nread == UV_EOF && c->tls &&
            !c->tls_up)
            log_rejected(c, "EOF");
        conn_close(c);
        return;
    }
    if (c->tls) {
        tls_input(c, (const uint8_t *)buf->base, (size_t)nread);
        return;
    }
    if (c->in_len + (size_t)nread > c->in_cap) {
        c->in_cap = (c->in_len + (size_t)nread) * 2;
        c->in = cairn_realloc(c->in, c->in_cap);
    }
    memcpy(c->in + c->in_len, buf->base, (size_t)nread);
    c->in_len += (size_t)nread;
    conn_process(c);
}

static void on_conn_timeout(uv_timer_t *t)
{
    struct conn *c = t->data;
    log_warnw("peer: connection setup timed out", LOG_STR("remote-addr", c->remote),
              LOG_BOOL("outbound", c->outbound));
    conn_close(c);
}

/* ---- dialing and accepting ---- */

static void on_connect(uv_connect_t *req, int status)
{
    struct conn *c = req->data;
    if (c->closing)
        return;
    if (status < 0) {
        log_debugw("peer: connect failed", LOG_UINT("to", c->m->id),
                   LOG_STR("url", c->m->urls[c->m->url_idx]),
                   LOG_STR("error", uv_strerror(status)));
        conn_close(c);
        return;
    }
    set_remote(c);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 10); /* a peer that vanished without a FIN */
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    if (c->tls) {
        if (tls_begin(c) != 0)
            conn_close(c);
        return;
    }
    c->state = C_HELLO;
    send_hello(c, c->m->id);
}

/* Dials the member's URLs from url_idx on; none left: connect_failed. */
static void try_url(struct member *m)
{
    struct repl_peer *p = m->p;
    for (; m->url_idx < m->nurls; m->url_idx++) {
        struct purl u;
        struct sockaddr_storage ss;
        const char *s = m->urls[m->url_idx];
        if (parse_url(s, strlen(s), &u) != 0 || to_sockaddr(&u, &ss) != 0 ||
            (u.tls && p->cli_ctx == NULL)) {
            log_warnw("peer: cannot dial this peer URL", LOG_UINT("to", m->id),
                      LOG_STR("url", s));
            continue;
        }
        struct conn *c = conn_new(p, 1, u.tls);
        c->m = m;
        c->state = C_CONNECTING;
        snprintf(c->host, sizeof c->host, "%s", u.host);
        snprintf(c->remote, sizeof c->remote, "%s", s);
        c->creq.data = c;
        m->out = c;
        uv_timer_start(&c->timer, on_conn_timeout, CONNECT_TIMEOUT_MS, 0);
        if (uv_tcp_connect(&c->creq, &c->tcp, (struct sockaddr *)&ss, on_connect) == 0)
            return;
        /* conn_close moves on to the next URL itself */
        conn_close(c);
        return;
    }
    connect_failed(m);
}

static void on_connection(uv_stream_t *server, int status)
{
    struct listener *l = server->data;
    struct repl_peer *p = l->p;
    if (status < 0 || p->closing)
        return;
    struct conn *c = conn_new(p, 0, l->tls);
    c->state = C_HELLO;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    set_remote(c);
    uv_tcp_nodelay(&c->tcp, 1);
    uv_tcp_keepalive(&c->tcp, 1, 10);
    uv_timer_start(&c->timer, on_conn_timeout, HELLO_TIMEOUT_MS, 0);
    if ((l->tls && tls_begin(c) != 0) ||
        uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0)
        conn_close(c);
}

/* ---- setup ---- */

/* @with_cert: present the member's certificate (every server context,
 * and client contexts when one is configured). */
static int load_ctx(SSL_CTX *ctx, const struct repl_peer_tls *t, int with_cert,
                    char *err, size_t errlen)
{
    if (with_cert &&
        (SSL_CTX_use_certificate_chain_file(ctx, t->cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(ctx, t->key_file, SSL_FILETYPE_PEM) != 1 ||
         SSL_CTX_check_private_key(ctx) != 1)) {
        char e[256];
        ERR_error_string_n(ERR_peek_last_error(), e, sizeof e);
        ERR_clear_error();
        snprintf(err, errlen, "peer TLS: cannot load %s / %s: %s", t->cert_file,
                 t->key_file, e);
        return -EPROTO;
    }
    if (t->trusted_ca_file != NULL && *t->trusted_ca_file) {
        if (SSL_CTX_load_verify_locations(ctx, t->trusted_ca_file, NULL) != 1) {
            ERR_clear_error();
            snprintf(err, errlen, "peer TLS: cannot load trusted CA %s",
                     t->trusted_ca_file);
            return -EPROTO;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    return 0;
}

static int tls_setup(struct repl_peer *p, const struct repl_peer_tls *t,
                     char *err, size_t errlen)
{
    int rc;
    int has_cert = t->cert_file != NULL && *t->cert_file;
    int has_key = t->key_file != NULL && *t->key_file;
    int cn = t->allowed_cn != NULL && *t->allowed_cn;
    if (has_cert != has_key) {
        snprintf(err, errlen, "peer TLS needs both --peer-cert-file and "
                 "--peer-key-file");
        return -EINVAL;
    }
    /* Without a certificate the member can dial https peers (presenting
     * none) but cannot listen on https. */
    p->cli_ctx = SSL_CTX_new(TLS_client_method());
    if (p->cli_ctx == NULL)
        return -ENOMEM;
    if ((rc = load_ctx(p->cli_ctx, t, has_cert, err, errlen)) != 0)
        return rc;
    /* etcd's self-signed peer certificates (--peer-auto-tls) are not
     * verified by the members that dial them */
    SSL_CTX_set_verify(p->cli_ctx, t->self_cert ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       NULL);
    if (has_cert) {
        p->srv_ctx = SSL_CTX_new(TLS_server_method());
        if (p->srv_ctx == NULL)
            return -ENOMEM;
        if ((rc = load_ctx(p->srv_ctx, t, 1, err, errlen)) != 0)
            return rc;
        /* A CN can only be checked on a certificate that was asked for. */
        if (t->client_cert_auth || cn)
            SSL_CTX_set_verify(p->srv_ctx, SSL_VERIFY_PEER |
                               SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    }
    if (cn)
        p->allowed_cn = cairn_strdup(t->allowed_cn);
    return 0;
}

static int listen_one(struct repl_peer *p, const char *u, size_t len, char *err,
                      size_t errlen)
{
    struct purl pu;
    struct sockaddr_storage ss;
    int rc = parse_url(u, len, &pu);
    if (rc == 0 && (rc = to_sockaddr(&pu, &ss)) != 0)
        snprintf(err, errlen, "peer URL %.*s: host must be an IP address or "
                 "localhost", (int)len, u);
    else if (rc != 0)
        snprintf(err, errlen, "peer URL %.*s: %s", (int)len, u,
                 rc == -EPROTONOSUPPORT ? "scheme must be http or https"
                                        : "expected http(s)://host:port");
    if (rc != 0)
        return rc;
    if (pu.tls && p->srv_ctx == NULL) {
        snprintf(err, errlen, "peer URL %.*s is https but peer TLS is not set up",
                 (int)len, u);
        return -EINVAL;
    }
    struct listener *l = cairn_calloc(1, sizeof *l);
    l->p = p;
    l->tls = pu.tls;
    uv_tcp_init(p->loop, &l->tcp);
    l->tcp.data = l;
    p->ls = cairn_realloc(p->ls, (size_t)(p->nls + 1) * sizeof *p->ls);
    p->ls[p->nls++] = l;
    p->refs++;
    if ((rc = uv_tcp_bind(&l->tcp, (struct sockaddr *)&ss, 0)) != 0 ||
        (rc = uv_listen((uv_stream_t *)&l->tcp, 128, on_connection)) != 0) {
        snprintf(err, errlen, "listen tcp %.*s: %s", (int)len, u, uv_strerror(rc));
        return rc;
    }
    return 0;
}

static void close_handles(struct repl_peer *p)
{
    for (int i = 0; i < p->nls; i++) {
        p->ls[i]->tcp.data = p;
        uv_close((uv_handle_t *)&p->ls[i]->tcp, on_p_handle_closed);
    }
    for (struct member *m = p->members; m != NULL; m = m->next)
        uv_close((uv_handle_t *)&m->timer, on_p_handle_closed);
    uv_close((uv_handle_t *)&p->flush, on_p_handle_closed);
}

int repl_peer_start(uv_loop_t *loop, const struct repl_peer_opts *o,
                    struct repl_peer **out, char *err, size_t errlen)
{
    int rc;
    struct repl_peer *p = cairn_calloc(1, sizeof *p);
    p->loop = loop;
    p->o = *o;
    p->done_tail = &p->done_head;
    p->image_dir = o->image_dir != NULL ? cairn_strdup(o->image_dir) : NULL;
    p->o.image_dir = p->image_dir;
    const char *adv = o->advertise_urls != NULL ? o->advertise_urls : o->listen_urls;
    p->self_addr = cairn_strdup(adv != NULL ? adv : "");
    if (strlen(p->self_addr) > PEER_ADDR_MAX)
        p->self_addr[PEER_ADDR_MAX] = 0;
    p->o.listen_urls = p->o.advertise_urls = NULL; /* borrowed: not kept */
    p->o.tls = NULL;
    uv_timer_init(loop, &p->flush);
    p->flush.data = p;
    p->refs = 2; /* the owner's, and the flush timer's */
    if (o->tls != NULL && (rc = tls_setup(p, o->tls, err, errlen)) != 0)
        goto err_close;
    const char *s = o->listen_urls != NULL ? o->listen_urls : "";
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len > 0 && (rc = listen_one(p, s, len, err, errlen)) != 0)
            goto err_close;
        s += len;
        if (*s == ',')
            s++;
    }
    if (p->nls == 0) {
        snprintf(err, errlen, "no peer URL to listen on");
        rc = -EINVAL;
        goto err_close;
    }
    *out = p;
    return 0;
err_close:
    /* Handles are closed through the loop like any close; the owner runs
     * the loop anyway. */
    p->closing = 1;
    close_handles(p);
    p_unref(p);
    return rc;
}

int repl_peer_port(struct repl_peer *p, int i)
{
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (i < 0 || i >= p->nls ||
        uv_tcp_getsockname(&p->ls[i]->tcp, (struct sockaddr *)&ss, &sl) != 0)
        return -EINVAL;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static int same_urls(const struct member *m, const char *urls)
{
    const char *s = urls != NULL ? urls : "";
    int i = 0;
    while (*s) {
        size_t len = strcspn(s, ",");
        if (len > 0 && (i >= m->nurls || strlen(m->urls[i]) != len ||
                        memcmp(m->urls[i], s, len) != 0))
            return 0;
        i += len > 0;
        s += len + (s[len] == ',');
    }
    return i == m->nurls;
}

void repl_peer_set_urls(struct repl_peer *p, uint64_t id, const char *urls)
{
    if (p->closing)
        return;
    struct member *m = member_get(p, id);
    if (same_urls(m, urls))
        return; /* the glue may repeat itself on every configuration */
    for (int i = 0; i < m->nurls; i++)
        cairn_free(m->urls[i]);
    cairn_free(m->urls);
    m->urls = NULL;
    m->nurls = 0;
    for (const char *s = urls != NULL ? urls : ""; *s;) {
        size_t len = strcspn(s, ",");
        if (len > 0) {
            m->urls = cairn_realloc(m->urls, (size_t)(m->nurls + 1) * sizeof *m->urls);
            char *u = cairn_malloc(len + 1);
            memcpy(u, s, len);
            u[len] = 0;
            m->urls[m->nurls++] = u;
        }
        s += len;
        if (*s == ',')
            s++;
    }
    m->url_idx = 0;
    /* A live connection stays (etcd's streams do too: a member whose URLs
     * were updated keeps working until it restarts on the new ones); the
     * next dial uses the new URLs. */
    if (m->state == M_UP && m->out != NULL && urls != NULL && *urls)
        return;
    /* A connection made to an URL that may be gone is redialed lazily. */
    if (m->out != NULL) {
        struct conn *c = m->out;
        m->out = NULL;
        conn_close(c);
    }
    if (m->state == M_CONNECTING || m->state == M_UP)
        queue_fail(m, RAFT_NOCONNECTION);
    uv_timer_stop(&m->timer);
    m->state = M_IDLE;
    m->backoff_ms = BACKOFF_MIN_MS;
}

void repl_peer_forget(struct repl_peer *p, uint64_t id)
{
    struct member *m = member_find(p, id);
    if (m == NULL)
        return;
    repl_peer_set_urls(p, id, NULL);
    m->has_recv = 0;
}

int repl_peer_active(struct repl_peer *p, uint64_t id, uint64_t ms)
{
    struct member *m = member_find(p, id);
    return m != NULL && m->has_recv && uv_now(p->loop) - m->last_recv <= ms;
}

void repl_peer_close(struct repl_peer *p, void (*cb)(void *ud), void *ud)
{
    if (p->closing)
        return;
    p->closing = 1;
    p->close_cb = cb;
    p->close_ud = ud;
    for (struct member *m = p->members; m != NULL; m = m->next) {
        queue_fail(m, RAFT_CANCELED);
        m->out = NULL;
    }
    for (struct conn *c = p->conns; c != NULL; c = c->next)
        conn_close(c);
    close_handles(p);
    p_unref(p); /* the reference repl_peer_start returned */
}
