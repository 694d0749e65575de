/* gRPC over HTTP/2 with nghttp2's server session: streams become calls,
 * DATA becomes length-prefixed messages, answers leave as DATA plus
 * trailers (or trailers-only HEADERS for early errors). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "net/frame.h"
#include "net/net_int.h"

#define STREAM_WINDOW (1 << 20)
#define CONN_WINDOW (32 << 20)

static struct grpc_call *deadlines; /* dispatched calls with a deadline */
static uv_timer_t deadline_timer;
/* Released transport calls wait here until the loop is out of the
 * callbacks that may still hold them (a handler that called grpc_finish, a
 * transport inside kick). */
static struct grpc_call *reaped;
static uv_idle_t reap_idle;

static void dl_remove(struct grpc_call *c)
{
    if (c->dl_prev == NULL && deadlines != c)
        return;
    if (c->dl_prev)
        c->dl_prev->dl_next = c->dl_next;
    else
        deadlines = c->dl_next;
    if (c->dl_next)
        c->dl_next->dl_prev = c->dl_prev;
    c->dl_next = c->dl_prev = NULL;
}

static void dl_add(struct grpc_call *c)
{
    c->dl_prev = NULL;
    c->dl_next = deadlines;
    if (deadlines)
        deadlines->dl_prev = c;
    deadlines = c;
}

static void cancel_call(struct grpc_call *c)
{
    grpc_cancel_fn fn = c->on_cancel;
    c->on_cancel = NULL;
    if (fn)
        fn(c);
}

static void on_deadline_tick(uv_timer_t *t)
{
    int64_t now = net_now_ms();
    struct grpc_call *c = deadlines, *next;
    (void)t;
    for (; c != NULL; c = next) {
        next = c->dl_next;
        if (c->deadline_ms > now)
            continue;
        dl_remove(c);
        cancel_call(c);
        grpc_finish(c, GRPC_DEADLINE_EXCEEDED, "context deadline exceeded");
    }
}

void net__deadlines_init(uv_loop_t *loop)
{
    uv_timer_init(loop, &deadline_timer);
    uv_timer_start(&deadline_timer, on_deadline_tick, 50, 50);
    uv_unref((uv_handle_t *)&deadline_timer);
    uv_idle_init(loop, &reap_idle);
}

static void call_free(struct grpc_call *c)
{
    if (!c->finished) /* the peer went away first: grpc-go's Canceled */
        metrics_grpc_handled(c->metrics_method, GRPC_CANCELLED);
    dl_remove(c);
    arena_free(&c->arena);
    buf_free(&c->in);
    buf_free(&c->out);
    cairn_free(c->message);
    cairn_free(c);
}

static void call_unlink(struct conn *conn, struct grpc_call *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        conn->calls = c->next;
    if (c->next)
        c->next->prev = c->prev;
}

void net__h2_free_calls(struct conn *conn)
{
    while (conn->calls) {
        struct grpc_call *c = conn->calls;
        call_unlink(conn, c);
        c->closed = 1;
        cancel_call(c);
        call_free(c);
    }
}

/* ---- output ---- */

static ssize_t read_out(nghttp2_session *s, int32_t sid, uint8_t *buf,
                        size_t len, uint32_t *flags, nghttp2_data_source *src,
                        void *ud)
{
    struct grpc_call *c = src->ptr;
    size_t avail = c->out.len - c->out_off - c->out_pend;
    (void)sid;
    (void)ud;
    if (avail > 0) {
        /* No copy here: the send_data callback writes the payload straight
         * from c->out into the connection's output batch. */
        size_t n = avail < len ? avail : len;
        c->out_pend += n;
        *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
        return (ssize_t)n;
    }
    if (!c->finished) {
        c->deferred = 1;
        return NGHTTP2_ERR_DEFERRED;
    }
    *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
    char code[16];
    snprintf(code, sizeof code, "%d", c->status);
    nghttp2_nv trailers[2] = {
        {(uint8_t *)"grpc-status", (uint8_t *)code, 11, strlen(code),
         NGHTTP2_NV_FLAG_NONE},
        {(uint8_t *)"grpc-message", (uint8_t *)(c->message ? c->message : ""),
         12, c->message ? strlen(c->message) : 0, NGHTTP2_NV_FLAG_NONE},
    };
    nghttp2_submit_trailer(s, c->stream_id, trailers, c->message ? 2 : 1);
    c->trailers_sent = 1;
    return 0;
}

static int send_data(nghttp2_session *s, nghttp2_frame *f,
                     const uint8_t *framehd, size_t length,
                     nghttp2_data_source *src, void *ud)
{
    struct grpc_call *c = src->ptr;
    struct conn *conn = ud;
    size_t pad = f->data.padlen;
    (void)s;
    net__out_append(conn, framehd, 9);
    if (pad > 0) {
        uint8_t pl = (uint8_t)(pad - 1);
        net__out_append(conn, &pl, 1);
    }
    net__out_append(conn, c->out.data + c->out_off, length);
    if (pad > 1) {
        static const uint8_t zeros[256];
        net__out_append(conn, zeros, pad - 1);
    }
    c->out_off += length;
    c->out_pend -= length;
    if (c->out_off == c->out.len) {
        c->out.len = 0;
        c->out_off = 0;
        /* A burst (a large response, a stream that caught up) must not
         * pin its buffer for the life of the call. */
        if (c->out.cap > (256u << 10))
            buf_free(&c->out);
    } else if (c->out_off > (1u << 20)) {
        buf_consume(&c->out, c->out_off);
        c->out_off = 0;
    }
    return 0;
}

static void kick(struct grpc_call *c)
{
    if (c->tp != NULL) {
        c->tp->kick(c);
        return;
    }
    if (c->deferred) {
        c->deferred = 0;
        nghttp2_session_resume_data(c->conn->h2, c->stream_id);
    }
    net__mark_dirty(c->conn);
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, \
                  NGHTTP2_NV_FLAG_NONE}

static void send_headers(struct grpc_call *c)
{
    if (c->tp != NULL) { /* the transport writes its own head */
        c->headers_sent = 1;
        return;
    }
    nghttp2_nv hdrs[] = {NV(":status", "200"),
                         NV("content-type", "application/grpc")};
    nghttp2_data_provider dp;
    dp.source.ptr = c;
    dp.read_callback = read_out;
    c->headers_sent = 1;
    nghttp2_submit_response(c->conn->h2, c->stream_id, hdrs, 2, &dp);
}

void grpc_send(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_frame_prefix(prefix, len);
    if (c->finished || c->closed)
        return;
    metrics_grpc_msg_sent(c->metrics_method, len);
    if (!c->headers_sent)
        send_headers(c);
    buf_append(&c->out, prefix, 5);
    buf_append(&c->out, msg, len);
    kick(c);
}

void grpc_send_prefix(struct grpc_call *c, size_t len)
{
    uint8_t prefix[GRPC_PREFIX_LEN];
    if (c->finished || c->closed)
        return;
    metrics_grpc_msg_sent(c->metrics_method, len);
    if (!c->headers_sent)
        send_headers(c);
    grpc_frame_prefix(prefix, len);
    buf_append(&c->out, prefix, GRPC_PREFIX_LEN);
    kick(c);
}

void grpc_send_bytes(struct grpc_call *c, const uint8_t *p, size_t n)
{
    if (c->finished || c->closed)
        return;
    buf_append(&c->out, p, n);
    kick(c);
}

uint8_t *grpc_send_reserve(struct grpc_call *c, size_t len)
{
    uint8_t prefix[GRPC_PREFIX_LEN];
    if (c->finished || c->closed)
        return NULL;
    metrics_grpc_msg_sent(c->metrics_method, len);
    if (!c->headers_sent)
        send_headers(c);
    grpc_frame_prefix(prefix, len);
    buf_append(&c->out, prefix, GRPC_PREFIX_LEN);
    buf_reserve(&c->out, len);
    uint8_t *p = c->out.data + c->out.len;
    c->out.len += len;
    kick(c);
    return p;
}

void grpc_send_pb(struct grpc_call *c, const void *pbmsg)
{
    const ProtobufCMessage *m = pbmsg;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t prefix[GRPC_PREFIX_LEN];
    grpc_frame_prefix(prefix, n);
    if (c->finished || c->closed)
        return;
    metrics_grpc_msg_sent(c->metrics_method, n);
    if (!c->headers_sent)
        send_headers(c);
    buf_append(&c->out, prefix, 5);
    buf_reserve(&c->out, n);
    protobuf_c_message_pack(m, c->out.data + c->out.len);
    c->out.len += n;
    kick(c);
}

/* grpc-message is percent-encoded (gRPC HTTP/2 spec). */
static char *pct_encode(const char *m)
{
    size_t n = strlen(m);
    char *o = cairn_malloc(n * 3 + 1), *p = o;
    for (const unsigned char *s = (const unsigned char *)m; *s; s++) {
        if (*s >= 0x20 && *s <= 0x7e && *s != '%') {
            *p++ = (char)*s;
        } else {
            sprintf(p, "%%%02X", *s);
            p += 3;
        }
    }
    *p = 0;
    return o;
}

void grpc_finish(struct grpc_call *c, int code, const char *msg)
{
    if (c->finished || c->closed)
        return;
    c->finished = 1;
    metrics_grpc_handled(c->metrics_method, code);
    cancel_call(c); /* the owner releases its state exactly once */
    dl_remove(c);
    c->status = code;
    if (c->tp != NULL) {
        c->message = msg && *msg ? cairn_strdup(msg) : NULL;
        c->tp->finished(c);
        return;
    }
    c->message = msg && *msg ? pct_encode(msg) : NULL;
    if (!c->headers_sent) {
        /* Trailers-only response. */
        char scode[16];
        snprintf(scode, sizeof scode, "%d", code);
        nghttp2_nv hdrs[4] = {
            NV(":status", "200"),
            NV("content-type", "application/grpc"),
            {(uint8_t *)"grpc-status", (uint8_t *)scode, 11, strlen(scode),
             NGHTTP2_NV_FLAG_NONE},
            {(uint8_t *)"grpc-message",
             (uint8_t *)(c->message ? c->message : ""), 12,
             c->message ? strlen(c->message) : 0, NGHTTP2_NV_FLAG_NONE},
        };
        c->headers_sent = 1;
        c->trailers_sent = 1;
        nghttp2_submit_response(c->conn->h2, c->stream_id, hdrs,
                                c->message ? 4 : 3, NULL);
    }
    kick(c);
}

void grpc_finish_err(struct grpc_call *c, int rc)
{
    grpc_finish(c, cairn_err_code(rc), cairn_err_msg(rc));
}

/* ---- input ---- */

static int64_t parse_timeout(const char *v)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (end == v || n < 0)
        return -1;
    switch (*end) {
    case 'H': return n * 3600000;
    case 'M': return n * 60000;
    case 'S': return n * 1000;
    case 'm': return n;
    case 'u': return (n + 999) / 1000;
    case 'n': return (n + 999999) / 1000000;
    default: return -1;
    }
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                            void *ud)
{
    struct conn *conn = ud;
    if (f->hd.type != NGHTTP2_HEADERS ||
        f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct grpc_call *c = cairn_calloc(1, sizeof *c);
    c->conn = conn;
    c->stream_id = f->hd.stream_id;
    arena_init(&c->arena);
    buf_init(&c->in);
    buf_init(&c->out);
    c->next = conn->calls;
    if (conn->calls)
        conn->calls->prev = c;
    conn->calls = c;
    nghttp2_session_set_stream_user_data(s, f->hd.stream_id, c);
    return 0;
}

struct req_flags {
    int bad_method, bad_ctype;
};

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     const uint8_t *name, size_t nlen, const uint8_t *value,
                     size_t vlen, uint8_t flags, void *ud)
{
    struct grpc_call *c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    (void)flags;
    (void)ud;
    if (c == NULL || f->hd.type != NGHTTP2_HEADERS ||
        f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
#define IS(lit) (nlen == sizeof(lit) - 1 && memcmp(name, lit, nlen) == 0)
    if (IS(":path")) {
        size_t n = vlen < sizeof c->path - 1 ? vlen : sizeof c->path - 1;
        memcpy(c->path, value, n);
        c->path[n] = 0;
    } else if (IS(":method")) {
        if (!(vlen == 4 && memcmp(value, "POST", 4) == 0))
            c->status = -1; /* marks a bad request; checked at END_HEADERS */
    } else if (IS("content-type")) {
        if (vlen < 16 || memcmp(value, "application/grpc", 16) != 0)
            c->status = -2;
    } else if (IS("grpc-timeout")) {
        char tmp[32];
        size_t n = vlen < sizeof tmp - 1 ? vlen : sizeof tmp - 1;
        memcpy(tmp, value, n);
        tmp[n] = 0;
        int64_t ms = parse_timeout(tmp);
        if (ms >= 0)
            c->deadline_ms = net_now_ms() + ms;
    } else if (IS("grpc-encoding")) {
        size_t n = vlen < sizeof c->grpc_encoding - 1 ? vlen
                                                      : sizeof c->grpc_encoding - 1;
        memcpy(c->grpc_encoding, value, n);
        c->grpc_encoding[n] = 0;
    } else if (IS("client-api-version")) {
        /* A metrics label: never a truncated (untrue) version. */
        if (vlen < sizeof c->api_version) {
            memcpy(c->api_version, value, vlen);
            c->api_version[vlen] = 0;
        } else {
            strcpy(c->api_version, "other");
        }
    } else if (IS("token") || IS("authorization")) {
        /* etcd's auth token: md["token"][0], else md["authorization"][0]
         * (rpctypes.TokenFieldNameSwagger, what its gateway forwards) */
        int is_token = name[0] == 't';
        if (c->token == NULL || (is_token && c->token_from_authz)) {
            c->token = arena_alloc(&c->arena, vlen + 1);
            memcpy(c->token, value, vlen);
            c->token[vlen] = 0;
            c->token_len = vlen;
            c->token_from_authz = !is_token;
        }
    } else if (IS("hasleader")) {
        c->has_leader_md = vlen == 4 && memcmp(value, "true", 4) == 0;
    }
#undef IS
    return 0;
}

static void deliver(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    if (!c->dispatched) {
        c->dispatched = 1;
        if (c->deadline_ms)
            dl_add(c);
        c->metrics_method = metrics_grpc_started(c->path, c->api_version);
        metrics_grpc_msg_received(c->metrics_method, len);
        rpc_dispatch(c, msg, len);
    } else if (c->on_msg) {
        metrics_grpc_msg_received(c->metrics_method, len);
        c->on_msg(c, msg, len);
    }
}

/* Splits c->in into messages. */
static void process_input(struct grpc_call *c)
{
    size_t off = 0;
    while (!c->finished && !c->closed) {
        uint32_t len = 0;
        const uint8_t *p = c->in.data + off;
        enum grpc_frame_result fr = grpc_frame_next(
            p, c->in.len - off, c->conn->opts->max_recv_bytes, &len);
        if (fr == GRPC_FRAME_NEED_MORE)
            break;
        if (fr == GRPC_FRAME_TOO_LARGE) {
            char m[128];
            snprintf(m, sizeof m,
                     "grpc: received message larger than max (%u vs. %zu)", len,
                     c->conn->opts->max_recv_bytes);
            grpc_finish(c, GRPC_RESOURCE_EXHAUSTED, m);
            break;
        }
        if (fr == GRPC_FRAME_COMPRESSED) {
            if (c->grpc_encoding[0] == 0 ||
                strcmp(c->grpc_encoding, "identity") == 0) {
                grpc_finish(c, GRPC_INTERNAL,
                            "grpc: compressed flag set with identity or empty "
                            "encoding");
            } else {
                char m[96];
                snprintf(m, sizeof m,
                         "grpc: Decompressor is not installed for "
                         "grpc-encoding \"%s\"",
                         c->grpc_encoding);
                grpc_finish(c, GRPC_UNIMPLEMENTED, m);
            }
            break;
        }
        off += GRPC_PREFIX_LEN + len;
        deliver(c, p + GRPC_PREFIX_LEN, len);
    }
    if (c->finished || c->closed)
        c->in.len = 0;
    else if (off)
        buf_consume(&c->in, off);
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *ud)
{
    struct grpc_call *c = nghttp2_session_get_stream_user_data(s, sid);
    (void)flags;
    (void)ud;
    if (c == NULL || c->finished)
        return 0; /* discarded (flow control is still credited) */
    buf_append(&c->in, data, len);
    process_input(c);
    return 0;
}

static void end_of_request(struct grpc_call *c)
{
    c->remote_closed = 1;
    if (c->finished)
        return;
    if (!c->dispatched) {
        /* The stream ended before a whole message: grpc-go reports the
         * reader's io error as Unknown. */
        grpc_finish(c, GRPC_UNKNOWN, c->in.len ? "unexpected EOF" : "EOF");
        return;
    }
    if (c->in.len > 0) {
        grpc_finish(c, GRPC_UNKNOWN, "unexpected EOF");
        return;
    }
    if (c->on_half_close)
        c->on_half_close(c);
}

static void start_call(struct grpc_call *c)
{
    if (c->status == -1) {
        c->status = 0;
        grpc_finish(c, GRPC_UNIMPLEMENTED, "grpc: method must be POST");
    } else if (c->status == -2) {
        c->status = 0;
        grpc_finish(c, GRPC_UNIMPLEMENTED, "grpc: invalid content-type");
    } else if (c->path[0] != '/') {
        grpc_finish(c, GRPC_UNIMPLEMENTED, "malformed method name");
    }
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct grpc_call *c;
    (void)ud;
    switch (f->hd.type) {
    case NGHTTP2_HEADERS:
        c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (c == NULL)
            return 0;
        if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
            start_call(c);
        if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
            end_of_request(c);
        break;
    case NGHTTP2_DATA:
        c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
        if (c != NULL && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
            end_of_request(c);
        break;
    default:
        break;
    }
    return 0;
}

/* Once our END_STREAM is out, a client still sending (e.g. an oversized
 * message) is told to stop, as grpc-go does. Not earlier: RST_STREAM would
 * overtake the queued DATA and trailers. */
static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    struct grpc_call *c;
    (void)ud;
    if (f->hd.type != NGHTTP2_HEADERS || !(f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    c = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (c != NULL && !c->remote_closed)
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                  NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t err,
                           void *ud)
{
    struct conn *conn = ud;
    struct grpc_call *c = nghttp2_session_get_stream_user_data(s, sid);
    (void)err;
    if (c == NULL)
        return 0;
    nghttp2_session_set_stream_user_data(s, sid, NULL);
    call_unlink(conn, c);
    c->closed = 1;
    cancel_call(c);
    call_free(c);
    return 0;
}

int net__h2_init(struct conn *conn)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    int rc;

    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
    nghttp2_option_new(&opt);
    /* etcd client 3.5.0 sends ":authority #initially=[...]"; nghttp2's HTTP
     * checks would reset those streams, so we validate requests ourselves. */
    nghttp2_option_set_no_http_messaging(opt, 1);
    /* nghttp2 keeps closed streams for the priority tree, up to the stream
     * limit (ours is huge): memory without use for gRPC. */
    nghttp2_option_set_no_closed_streams(opt, 1);
    rc = nghttp2_session_server_new2(&conn->h2, cb, conn, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, conn->opts->max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(conn->h2, NGHTTP2_FLAG_NONE, iv, 3);
    /* The connection window stays 65535 whatever SETTINGS say. */
    nghttp2_session_set_local_window_size(conn->h2, NGHTTP2_FLAG_NONE, 0,
                                          CONN_WINDOW);
    net__mark_dirty(conn);
    return 0;
}

int net__h2_recv(struct conn *conn, const uint8_t *p, size_t n)
{
    conn->in_recv = 1;
    ssize_t rc = nghttp2_session_mem_recv(conn->h2, p, n);
    conn->in_recv = 0;
    if (rc < 0) {
        log_debug("net: h2 recv error: %s", nghttp2_strerror((int)rc));
        return -1;
    }
    net__mark_dirty(conn);
    return 0;
}

const char *grpc_call_peer_cn(const struct grpc_call *c)
{
    if (c->tp != NULL)
        return c->tp_peer_cn;
    return c->conn != NULL ? c->conn->peer_cn : NULL;
}

/* ---- calls on other transports ---- */

struct grpc_call *grpc_call_new(const char *path, const struct call_transport *tp,
                                void *tp_ud)
{
    struct grpc_call *c = cairn_calloc(1, sizeof *c);
    snprintf(c->path, sizeof c->path, "%s", path);
    c->tp = tp;
    c->tp_ud = tp_ud;
    arena_init(&c->arena);
    buf_init(&c->in);
    buf_init(&c->out);
    return c;
}

void grpc_call_set_token(struct grpc_call *c, const char *tok, size_t len)
{
    c->token = arena_alloc(&c->arena, len + 1);
    memcpy(c->token, tok, len);
    c->token[len] = 0;
    c->token_len = len;
}

void grpc_call_set_peer_cn(struct grpc_call *c, const char *cn)
{
    char *p = NULL;
    if (cn != NULL) {
        size_t n = strlen(cn);
        p = arena_alloc(&c->arena, n + 1);
        memcpy(p, cn, n + 1);
    }
    c->tp_peer_cn = p;
}

void grpc_call_start(struct grpc_call *c, const uint8_t *msg, size_t len,
                     int count_metrics)
{
    c->dispatched = 1;
    if (c->deadline_ms)
        dl_add(c);
    if (count_metrics) {
        c->metrics_method = metrics_grpc_started(c->path, c->api_version);
        metrics_grpc_msg_received(c->metrics_method, len);
    }
    rpc_dispatch(c, msg, len);
}

void grpc_call_msg(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    if (c->finished || c->closed || c->on_msg == NULL)
        return;
    metrics_grpc_msg_received(c->metrics_method, len);
    c->on_msg(c, msg, len);
}

void grpc_call_half_close(struct grpc_call *c)
{
    if (c->finished || c->closed || c->remote_closed)
        return;
    c->remote_closed = 1;
    if (c->on_half_close)
        c->on_half_close(c);
}

static void on_reap(uv_idle_t *h)
{
    uv_idle_stop(h);
    while (reaped != NULL) {
        struct grpc_call *c = reaped;
        reaped = c->next;
        call_free(c);
    }
}

/* Both ends: before the handler finished (the consumer went away; a
 * gateway client that disconnects counts as Canceled, as grpc-go's) or
 * after. */
static void end_tp_call(struct grpc_call *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    cancel_call(c);
    dl_remove(c);
    c->next = reaped;
    reaped = c;
    uv_idle_start(&reap_idle, on_reap);
}

void grpc_call_abort(struct grpc_call *c)
{
    end_tp_call(c);
}

void grpc_call_release(struct grpc_call *c)
{
    end_tp_call(c);
}

size_t grpc_call_unsent(const struct grpc_call *c)
{
    if (c->tp != NULL && c->tp->unsent != NULL)
        return c->tp->unsent(c);
    return c->out.len - c->out_off;
}
