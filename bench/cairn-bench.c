/*
 * cairn-bench: a small load generator for etcd-v3-compatible servers.
 *
 * Speaks gRPC over cleartext HTTP/2 (h2c, prior knowledge) using nghttp2's
 * client API and a single-threaded epoll loop.  Each connection keeps up to
 * --streams unary requests in flight; every request is timed from submission
 * to stream close and only successful requests contribute latencies.
 *
 * The two protobufs we need (PutRequest, RangeRequest) are encoded by hand,
 * and the responses are checked just enough to catch broken servers:
 * HTTP :status, grpc-status trailer, gRPC message framing and, for Range,
 * that the returned key is the one asked for.
 *
 * Every run ends: the request budget is bounded by --total and/or
 * --duration, and a stall watchdog (--timeout) fails whatever is still in
 * flight when no response has completed for that long.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define OUT_FLUSH_BYTES (64 * 1024) /* batch frames into one send() */
#define READ_BUF_BYTES (64 * 1024)
#define MAX_RESP_BYTES (64u * 1024 * 1024)
#define STREAM_WINDOW ((1 << 24))        /* per-stream receive window */
#define CONN_WINDOW ((1 << 30))          /* connection receive window */
#define MAX_ERR_KINDS 32

enum op { OP_PUT, OP_RANGE };

/* ------------------------------------------------------------------ config */

static struct {
    const char *host;
    const char *port;
    char authority[300];
    enum op op;
    int conns;
    int streams;
    size_t key_size;
    size_t val_size;
    uint64_t keys;
    uint64_t total;      /* 0 = unbounded (then duration bounds the run) */
    double duration;     /* seconds; 0 = unbounded (then total bounds it) */
    double stall_secs;   /* watchdog: fail in-flight requests after this */
    bool sequential;
    bool prefill;
    bool serializable;
    bool quiet;
} cfg = {
    .host = "127.0.0.1",
    .port = "2379",
    .op = OP_PUT,
    .conns = 1,
    .streams = 1,
    .key_size = 16,
    .val_size = 256,
    .keys = 10000,
    .stall_secs = 10,
};

static uint8_t *g_value; /* the value written by every Put */

/* ------------------------------------------------------------- run state */

struct conn;

typedef struct slot {
    struct conn *c;
    int32_t stream_id; /* 0 while the slot is free */
    uint64_t t0;       /* submit time, ns */
    uint8_t *req;      /* gRPC-framed request message */
    size_t req_len, req_off;
    size_t key_off;    /* where the key sits inside req (for Range checks) */
    uint8_t *resp;     /* accumulated response DATA */
    size_t resp_len, resp_cap;
    bool resp_overflow;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_msg[160];
} slot_t;

typedef struct conn {
    int idx;
    int fd;
    nghttp2_session *s;
    slot_t *slots;
    int *freelist; /* indices of free slots (stack) */
    int nfree;
    int inflight;
    bool dead;
    bool ready;  /* server SETTINGS seen, so its stream limit is known */
    bool goaway; /* no new streams on this connection */
    bool epollout;
    uint8_t *out;
    size_t out_len, out_off, out_cap;
} conn_t;

/* Per-phase (prefill, then the measured run) accounting. */
static struct {
    enum op op;
    bool sequential;
    bool record;         /* collect latencies */
    bool miss_is_error;  /* Range after prefill: every key must exist */
    uint64_t total;
    uint64_t deadline;   /* ns, 0 = none */
    uint64_t issued, completed, ok, errors, misses;
    uint64_t seq_next;
    uint64_t t_start, t_end, last_progress;
    uint64_t *lat;       /* ns, successes only */
    size_t nlat, cap_lat;
} ph;

static conn_t *g_conns;
static int g_epfd;
static int g_inflight;   /* across all connections */
static int g_usable;     /* live connections that accept new streams */
static uint64_t g_conn_errors;
static volatile sig_atomic_t g_interrupted;
static uint64_t g_rng = 0x9e3779b97f4a7c15ull;

/* Distinct error kinds, so a flood of identical failures prints as one
 * line with a count instead of drowning the output. */
static struct {
    char what[200];
    uint64_t n;
} g_errs[MAX_ERR_KINDS];
static int g_nerrs;
static uint64_t g_errs_other;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cairn-bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n ? n : 1);
    if (!p)
        die("out of memory");
    return p;
}

static void note_error_va(uint64_t n, const char *fmt, va_list ap)
{
    char buf[200];
    vsnprintf(buf, sizeof buf, fmt, ap);
    for (int i = 0; i < g_nerrs; i++) {
        if (strcmp(g_errs[i].what, buf) == 0) {
            g_errs[i].n += n;
            return;
        }
    }
    if (g_nerrs < MAX_ERR_KINDS) {
        memcpy(g_errs[g_nerrs].what, buf, sizeof buf);
        g_errs[g_nerrs++].n = n;
    } else {
        g_errs_other += n;
    }
}

static void note_error_n(uint64_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note_error_va(n, fmt, ap);
    va_end(ap);
}

static void note_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    note_error_va(1, fmt, ap);
    va_end(ap);
}

static uint64_t rng_next(void)
{
    /* xorshift64*: fast and good enough to spread keys uniformly. */
    g_rng ^= g_rng >> 12;
    g_rng ^= g_rng << 25;
    g_rng ^= g_rng >> 27;
    return g_rng * 0x2545f4914f6cdd1dull;
}

static const char *grpc_code_name(int code)
{
    static const char *names[] = {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
        "UNAUTHENTICATED",
    };
    if (code >= 0 && code < (int)(sizeof names / sizeof names[0]))
        return names[code];
    return "?";
}

/* --------------------------------------------------------------- protobuf */

static size_t pb_put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* Returns bytes consumed, 0 on truncation/overlong. */
static size_t pb_get_varint(const uint8_t *p, size_t len, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < len && i < 10; i++) {
        v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
        if (!(p[i] & 0x80)) {
            *out = v;
            return i + 1;
        }
    }
    return 0;
}

/* Iterate one field: returns bytes consumed (0 = malformed).  For wire
 * type 2 (*data,*dlen) is the payload; for varints *val is the value. */
static size_t pb_next_field(const uint8_t *p, size_t len, uint32_t *field,
                            uint32_t *wt, uint64_t *val, const uint8_t **data,
                            size_t *dlen)
{
    uint64_t tag, v;
    size_t n = pb_get_varint(p, len, &tag), m;
    if (!n)
        return 0;
    *field = (uint32_t)(tag >> 3);
    *wt = (uint32_t)(tag & 7);
    switch (*wt) {
    case 0:
        m = pb_get_varint(p + n, len - n, &v);
        if (!m)
            return 0;
        *val = v;
        return n + m;
    case 1:
        return len - n >= 8 ? n + 8 : 0;
    case 5:
        return len - n >= 4 ? n + 4 : 0;
    case 2:
        m = pb_get_varint(p + n, len - n, &v);
        if (!m || v > len - n - m)
            return 0;
        *data = p + n + m;
        *dlen = (size_t)v;
        return n + m + (size_t)v;
    default:
        return 0;
    }
}

/* Key = key index, zero-padded decimal filling exactly key_size bytes. */
static void write_key(uint8_t *dst, uint64_t idx)
{
    for (size_t i = cfg.key_size; i > 0; i--) {
        dst[i - 1] = (uint8_t)('0' + idx % 10);
        idx /= 10;
    }
}

static size_t max_request_len(void)
{
    /* 5-byte gRPC prefix + key field + value field + serializable flag */
    return 5 + 1 + varint_len(cfg.key_size) + cfg.key_size + 1 +
           varint_len(cfg.val_size) + cfg.val_size + 2;
}

static void build_request(slot_t *sl, enum op op, uint64_t key_idx)
{
    uint8_t *p = sl->req + 5, *start = p;
    *p++ = 0x0a; /* field 1 (key), wire type 2 */
    p += pb_put_varint(p, cfg.key_size);
    sl->key_off = (size_t)(p - sl->req);
    write_key(p, key_idx);
    p += cfg.key_size;
    if (op == OP_PUT) {
        *p++ = 0x12; /* PutRequest field 2 (value) */
        p += pb_put_varint(p, cfg.val_size);
        memcpy(p, g_value, cfg.val_size);
        p += cfg.val_size;
    } else if (cfg.serializable) {
        *p++ = 0x40; /* RangeRequest field 8 (serializable), varint */
        *p++ = 1;
    }
    uint32_t mlen = (uint32_t)(p - start);
    sl->req[0] = 0; /* not compressed */
    sl->req[1] = (uint8_t)(mlen >> 24);
    sl->req[2] = (uint8_t)(mlen >> 16);
    sl->req[3] = (uint8_t)(mlen >> 8);
    sl->req[4] = (uint8_t)mlen;
    sl->req_len = 5 + mlen;
    sl->req_off = 0;
}

/* Checks a unary gRPC response body.  Returns NULL if fine, otherwise a
 * short description.  *miss is set for a Range that found nothing. */
static const char *check_response(slot_t *sl, enum op op, bool *miss)
{
    *miss = false;
    if (sl->resp_overflow)
        return "response larger than limit";
    if (sl->resp_len < 5)
        return "short gRPC message";
    const uint8_t *b = sl->resp;
    if (b[0] != 0)
        return "compressed gRPC message (not requested)";
    uint32_t mlen = ((uint32_t)b[1] << 24) | ((uint32_t)b[2] << 16) |
                    ((uint32_t)b[3] << 8) | b[4];
    if ((size_t)mlen + 5 != sl->resp_len)
        return "gRPC length prefix does not match body";
    if (op != OP_RANGE)
        return NULL;

    /* RangeResponse: 1 header, 2 repeated kvs, 3 more, 4 count.
     * KeyValue: 1 key. */
    const uint8_t *p = b + 5, *end = p + mlen;
    uint64_t count = 0, nkvs = 0;
    bool key_ok = true;
    while (p < end) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n)
            return "malformed RangeResponse";
        if (f == 4 && wt == 0)
            count = v;
        if (f == 2 && wt == 2 && nkvs++ == 0) {
            /* find the KeyValue.key and compare with what we asked for */
            const uint8_t *q = d, *qe = d + dl;
            key_ok = false;
            while (q < qe) {
                uint32_t kf, kwt;
                uint64_t kv;
                const uint8_t *kd = NULL;
                size_t kdl = 0, kn = pb_next_field(q, (size_t)(qe - q), &kf,
                                                   &kwt, &kv, &kd, &kdl);
                if (!kn)
                    return "malformed KeyValue";
                if (kf == 1 && kwt == 2)
                    key_ok = kdl == cfg.key_size &&
                             memcmp(kd, sl->req + sl->key_off, kdl) == 0;
                q += kn;
            }
        }
        p += n;
    }
    if (nkvs > 1)
        return "Range returned more than one key";
    if (nkvs == 1 && !key_ok)
        return "Range returned a different key";
    if (nkvs == 0 && count != 0)
        return "Range count>0 but no kvs";
    *miss = nkvs == 0;
    return NULL;
}

/* ------------------------------------------------------------ accounting */

static void record_latency(uint64_t ns)
{
    if (ph.nlat == ph.cap_lat) {
        ph.cap_lat = ph.cap_lat ? ph.cap_lat * 2 : 65536;
        ph.lat = xrealloc(ph.lat, ph.cap_lat * sizeof *ph.lat);
    }
    ph.lat[ph.nlat++] = ns;
}

static void slot_release(slot_t *sl)
{
    conn_t *c = sl->c;
    sl->stream_id = 0;
    c->freelist[c->nfree++] = (int)(sl - c->slots);
    c->inflight--;
    g_inflight--;
}

/* One request is over: count it as a success or as an error. */
static void slot_fail(slot_t *sl, const char *why)
{
    uint64_t t = now_ns();
    ph.completed++;
    ph.errors++;
    ph.last_progress = t; /* fast failures are not a stall */
    note_error("%s", why);
    slot_release(sl);
}

static void slot_finish(slot_t *sl, uint32_t h2_error)
{
    uint64_t t = now_ns();
    char why[200];
    const char *bad = NULL;
    bool miss = false;

    if (h2_error != NGHTTP2_NO_ERROR) {
        snprintf(why, sizeof why, "stream reset: %s",
                 nghttp2_http2_strerror(h2_error));
        bad = why;
    } else if (sl->http_status != 200) {
        snprintf(why, sizeof why, "HTTP :status %d", sl->http_status);
        bad = why;
    } else if (sl->grpc_status < 0) {
        bad = "missing grpc-status trailer";
    } else if (sl->grpc_status != 0) {
        snprintf(why, sizeof why, "grpc-status %d (%s): %s", sl->grpc_status,
                 grpc_code_name(sl->grpc_status), sl->grpc_msg);
        bad = why;
    } else {
        bad = check_response(sl, ph.op, &miss);
        if (!bad && miss && ph.miss_is_error)
            bad = "Range found no key (key space was prefilled)";
    }

    if (bad) {
        slot_fail(sl, bad);
        return;
    }
    ph.completed++;
    ph.ok++;
    ph.misses += miss;
    ph.last_progress = t;
    if (ph.record)
        record_latency(t - sl->t0);
    slot_release(sl);
}

/* --------------------------------------------------- nghttp2 callbacks */

static slot_t *slot_of(nghttp2_session *s, int32_t stream_id)
{
    slot_t *sl = nghttp2_session_get_stream_user_data(s, stream_id);
    /* A stale pointer to a reused slot carries a different stream id. */
    return sl && sl->stream_id == stream_id ? sl : NULL;
}

static ssize_t read_body_cb(nghttp2_session *s, int32_t stream_id,
                            uint8_t *buf, size_t length, uint32_t *flags,
                            nghttp2_data_source *src, void *ud)
{
    (void)s; (void)stream_id; (void)ud;
    slot_t *sl = src->ptr;
    size_t n = sl->req_len - sl->req_off;
    if (n > length)
        n = length;
    memcpy(buf, sl->req + sl->req_off, n);
    sl->req_off += n;
    if (sl->req_off == sl->req_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *frame,
                        const uint8_t *name, size_t namelen,
                        const uint8_t *value, size_t valuelen, uint8_t flags,
                        void *ud)
{
    (void)flags; (void)ud;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    slot_t *sl = slot_of(s, frame->hd.stream_id);
    if (!sl)
        return 0;
    /* grpc-status arrives in trailers, or in the only HEADERS frame of a
     * "trailers-only" error response; handling both the same way is fine. */
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        sl->http_status = atoi((const char *)value); /* NUL-terminated */
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        sl->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof sl->grpc_msg - 1 ? valuelen
                                                      : sizeof sl->grpc_msg - 1;
        memcpy(sl->grpc_msg, value, n);
        sl->grpc_msg[n] = 0;
    }
    return 0;
}

static int on_data_chunk_cb(nghttp2_session *s, uint8_t flags,
                            int32_t stream_id, const uint8_t *data, size_t len,
                            void *ud)
{
    (void)flags; (void)ud;
    slot_t *sl = slot_of(s, stream_id);
    if (!sl || sl->resp_overflow)
        return 0;
    if (sl->resp_len + len > MAX_RESP_BYTES) {
        sl->resp_overflow = true;
        return 0;
    }
    if (sl->resp_len + len > sl->resp_cap) {
        size_t cap = sl->resp_cap ? sl->resp_cap : 256;
        while (cap < sl->resp_len + len)
            cap *= 2;
        sl->resp = xrealloc(sl->resp, cap);
        sl->resp_cap = cap;
    }
    memcpy(sl->resp + sl->resp_len, data, len);
    sl->resp_len += len;
    return 0;
}

static int on_stream_close_cb(nghttp2_session *s, int32_t stream_id,
                              uint32_t error_code, void *ud)
{
    (void)ud;
    slot_t *sl = slot_of(s, stream_id);
    if (sl)
        slot_finish(sl, error_code);
    return 0;
}

static int on_frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame,
                            void *ud)
{
    conn_t *c = ud;
    if (frame->hd.type == NGHTTP2_SETTINGS &&
        !(frame->hd.flags & NGHTTP2_FLAG_ACK)) {
        uint32_t lim = nghttp2_session_get_remote_settings(
            s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
        if (!c->ready) {
            ph.last_progress = now_ns();
            /* nghttp2 queues streams beyond the server's limit, so the
             * requested concurrency is not what the server sees. */
            if (lim < (uint32_t)cfg.streams && c->idx == 0 && !cfg.quiet)
                fprintf(stderr, "cairn-bench: note: server allows %u "
                        "concurrent streams per connection, --streams is "
                        "%d; the excess waits client-side\n", lim,
                        cfg.streams);
        }
        c->ready = true;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* Streams above last_stream_id get closed by nghttp2 with
         * REFUSED_STREAM (counted as errors); we just stop opening new ones
         * here.  Any GOAWAY mid-run is a connection error for the report. */
        if (!c->goaway) {
            c->goaway = true;
            g_usable--;
        }
        g_conn_errors++;
        note_error("conn %d: GOAWAY received (%s, last_stream_id=%d)%s%.*s",
                   c->idx, nghttp2_http2_strerror(frame->goaway.error_code),
                   frame->goaway.last_stream_id,
                   frame->goaway.opaque_data_len ? ": " : "",
                   (int)(frame->goaway.opaque_data_len > 80
                             ? 80 : frame->goaway.opaque_data_len),
                   (const char *)frame->goaway.opaque_data);
    }
    return 0;
}

static int on_frame_not_send_cb(nghttp2_session *s, const nghttp2_frame *frame,
                                int lib_error, void *ud)
{
    (void)s;
    conn_t *c = ud;
    /* A request HEADERS that never went out (e.g. after GOAWAY) never opens
     * a stream, so on_stream_close won't fire: fail the request here. */
    if (frame->hd.type != NGHTTP2_HEADERS ||
        frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    for (int i = 0; i < cfg.streams; i++) {
        slot_t *sl = &c->slots[i];
        if (sl->stream_id == frame->hd.stream_id) {
            char why[200];
            snprintf(why, sizeof why, "request not sent: %s",
                     nghttp2_strerror(lib_error));
            slot_fail(sl, why);
            break;
        }
    }
    return 0;
}

/* --------------------------------------------------------- connections */

static void epoll_update(conn_t *c, bool want_out)
{
    if (c->epollout == want_out)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (want_out ? EPOLLOUT : 0),
                             .data.ptr = c};
    if (epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    c->epollout = want_out;
}

/* Tear a connection down; whatever was in flight on it is an error.
 * Never called from inside an nghttp2 callback. */
static void conn_close(conn_t *c, const char *why)
{
    if (c->dead)
        return;
    char buf[200];
    snprintf(buf, sizeof buf, "in flight when connection closed: %s", why);
    for (int i = 0; i < cfg.streams; i++)
        if (c->slots[i].stream_id != 0)
            slot_fail(&c->slots[i], buf);
    nghttp2_session_del(c->s);
    c->s = NULL;
    close(c->fd); /* also drops it from the epoll set */
    c->fd = -1;
    c->dead = true;
    if (!c->goaway)
        g_usable--;
    c->goaway = true;
}

static void conn_error(conn_t *c, const char *fmt, ...)
{
    char buf[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    g_conn_errors++;
    note_error("conn %d: %s", c->idx, buf);
    conn_close(c, buf);
}

/* Serialize pending frames into the output buffer and write as much as the
 * socket takes.  Returns -1 if the connection died. */
static int conn_flush(conn_t *c)
{
    if (c->dead)
        return -1;
    for (;;) {
        if (c->out_off == c->out_len) {
            c->out_off = c->out_len = 0;
            while (c->out_len < OUT_FLUSH_BYTES) {
                const uint8_t *d;
                ssize_t n = nghttp2_session_mem_send(c->s, &d);
                if (n < 0) {
                    conn_error(c, "nghttp2 send: %s",
                               nghttp2_strerror((int)n));
                    return -1;
                }
                if (n == 0)
                    break;
                if (c->out_len + (size_t)n > c->out_cap) {
                    c->out_cap = c->out_len + (size_t)n + OUT_FLUSH_BYTES;
                    c->out = xrealloc(c->out, c->out_cap);
                }
                memcpy(c->out + c->out_len, d, (size_t)n);
                c->out_len += (size_t)n;
            }
            if (c->out_len == 0)
                break;
        }
        ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
                         MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_error(c, "send: %s", strerror(errno));
            return -1;
        }
        c->out_off += (size_t)w;
    }
    bool pending = c->out_off < c->out_len;
    if (!pending && !nghttp2_session_want_read(c->s) &&
        !nghttp2_session_want_write(c->s)) {
        /* Session is finished (GOAWAY exchanged, no streams left). */
        conn_close(c, "session finished");
        return -1;
    }
    epoll_update(c, pending);
    return 0;
}

static int conn_read(conn_t *c)
{
    static uint8_t buf[READ_BUF_BYTES];
    for (;;) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            ssize_t rv = nghttp2_session_mem_recv(c->s, buf, (size_t)n);
            if (rv < 0) {
                conn_error(c, "nghttp2 recv: %s", nghttp2_strerror((int)rv));
                return -1;
            }
            continue;
        }
        if (n == 0) {
            conn_error(c, "connection closed by peer");
            return -1;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        conn_error(c, "recv: %s", strerror(errno));
        return -1;
    }
}

static bool can_issue(uint64_t t)
{
    if (g_interrupted)
        return false;
    if (ph.total && ph.issued >= ph.total)
        return false;
    if (ph.deadline && t >= ph.deadline)
        return false;
    return true;
}

static const nghttp2_nv *request_headers(enum op op, size_t *n)
{
#define NV(name, value)                                                        \
    {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1,                 \
     sizeof(value) - 1, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
    static nghttp2_nv put[] = {
        NV(":method", "POST"), NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.KV/Put"), NV(":authority", ""),
        NV("content-type", "application/grpc"), NV("te", "trailers"),
    };
    static nghttp2_nv range[] = {
        NV(":method", "POST"), NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.KV/Range"), NV(":authority", ""),
        NV("content-type", "application/grpc"), NV("te", "trailers"),
    };
#undef NV
    nghttp2_nv *nv = op == OP_PUT ? put : range;
    nv[3].value = (uint8_t *)cfg.authority;
    nv[3].valuelen = strlen(cfg.authority);
    *n = 6;
    return nv;
}

/* Fill free stream slots with new requests while the budget allows. */
static void conn_refill(conn_t *c)
{
    size_t nvlen;
    const nghttp2_nv *nv = request_headers(ph.op, &nvlen);
    /* Until the server's SETTINGS arrive nghttp2 assumes no stream limit,
     * and a server with a low SETTINGS_MAX_CONCURRENT_STREAMS would refuse
     * the excess; so wait for them, like real gRPC clients do. */
    if (!c->ready)
        return;
    while (!c->goaway && c->nfree > 0 && can_issue(now_ns())) {
        slot_t *sl = &c->slots[c->freelist[c->nfree - 1]];
        uint64_t key = ph.sequential ? ph.seq_next++ % cfg.keys
                                     : rng_next() % cfg.keys;
        build_request(sl, ph.op, key);
        sl->resp_len = 0;
        sl->resp_overflow = false;
        sl->http_status = 0;
        sl->grpc_status = -1;
        sl->grpc_msg[0] = 0;
        nghttp2_data_provider prd = {.source.ptr = sl,
                                     .read_callback = read_body_cb};
        int32_t id = nghttp2_submit_request(c->s, NULL, nv, nvlen, &prd, sl);
        if (id < 0) {
            /* e.g. stream ids exhausted: retire this connection gracefully */
            note_error("conn %d: submit_request: %s", c->idx,
                       nghttp2_strerror(id));
            g_conn_errors++;
            c->goaway = true;
            g_usable--;
            break;
        }
        c->nfree--;
        sl->stream_id = id;
        sl->t0 = now_ns();
        c->inflight++;
        g_inflight++;
        ph.issued++;
    }
}

static int tcp_connect(void)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM}, *res, *ai;
    int rv = getaddrinfo(cfg.host, cfg.port, &hints, &res);
    if (rv != 0)
        die("resolve %s:%s: %s", cfg.host, cfg.port, gai_strerror(rv));
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        /* Bound the (blocking) connect: Linux honours SO_SNDTIMEO here. */
        struct timeval tv = {.tv_sec = 5};
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        die("connect %s:%s: %s", cfg.host, cfg.port, strerror(err));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0)
        die("fcntl: %s", strerror(errno));
    return fd;
}

static void conn_open(conn_t *c, int idx)
{
    memset(c, 0, sizeof *c);
    c->idx = idx;
    c->fd = tcp_connect();

    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        die("nghttp2_session_callbacks_new failed");
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
                                                              on_data_chunk_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb,
                                                           on_stream_close_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(
        cb, on_frame_not_send_cb);
    if (nghttp2_session_client_new(&c->s, cb, c) != 0)
        die("nghttp2_session_client_new failed");
    nghttp2_session_callbacks_del(cb);

    /* Big windows so neither large responses nor many concurrent streams
     * wait for WINDOW_UPDATE round trips. */
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 2) != 0 ||
        nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0,
                                              CONN_WINDOW) != 0)
        die("nghttp2 settings failed");

    c->slots = xmalloc((size_t)cfg.streams * sizeof *c->slots);
    c->freelist = xmalloc((size_t)cfg.streams * sizeof *c->freelist);
    size_t reqcap = max_request_len();
    for (int i = 0; i < cfg.streams; i++) {
        memset(&c->slots[i], 0, sizeof c->slots[i]);
        c->slots[i].c = c;
        c->slots[i].req = xmalloc(reqcap);
        c->freelist[i] = cfg.streams - 1 - i;
    }
    c->nfree = cfg.streams;

    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    g_usable++;
}

/* --------------------------------------------------------------- phases */

/* Runs one load phase over the already-open connections until the budget
 * is spent and every in-flight request has finished (or the watchdog
 * fires).  Always terminates. */
static void run_phase(void)
{
    const uint64_t stall_ns = (uint64_t)(cfg.stall_secs * 1e9);
    struct epoll_event evs[64];

    ph.t_start = ph.last_progress = now_ns();
    if (cfg.duration > 0)
        ph.deadline = ph.t_start + (uint64_t)(cfg.duration * 1e9);

    for (;;) {
        uint64_t t = now_ns();
        /* Top up every usable connection; cheap when nothing is free. */
        if (can_issue(t))
            for (int i = 0; i < cfg.conns; i++)
                if (!g_conns[i].goaway) {
                    conn_refill(&g_conns[i]);
                    conn_flush(&g_conns[i]);
                }

        if (g_inflight == 0 && (!can_issue(t) || g_usable == 0))
            break;
        /* Watchdog: nothing completed (and no connection became ready)
         * for too long while there is work to do. */
        if ((g_inflight > 0 || can_issue(t)) &&
            t - ph.last_progress > stall_ns) {
            char why[80];
            snprintf(why, sizeof why, "timeout: no progress for %.1fs",
                     cfg.stall_secs);
            for (int i = 0; i < cfg.conns; i++)
                if (!g_conns[i].dead)
                    conn_error(&g_conns[i], "%s", why);
            break;
        }

        int n = epoll_wait(g_epfd, evs, 64, 20);
        if (n < 0 && errno != EINTR)
            die("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            conn_t *c = evs[i].data.ptr;
            if (c->dead)
                continue;
            if (conn_read(c) < 0)
                continue;
            conn_flush(c); /* WINDOW_UPDATEs, SETTINGS ACKs, queued data */
        }
    }

    /* A --total run whose connections all died before issuing everything:
     * the requests never sent are failures too. */
    if (ph.total && ph.issued < ph.total && g_usable == 0 && !g_interrupted &&
        !(ph.deadline && now_ns() >= ph.deadline)) {
        uint64_t n = ph.total - ph.issued;
        ph.errors += n;
        ph.completed += n;
        note_error_n(n, "not sent: no usable connection left");
    }
    ph.t_end = now_ns();
}

static void phase_reset(enum op op, uint64_t total, bool sequential,
                        bool record)
{
    free(ph.lat);
    memset(&ph, 0, sizeof ph);
    ph.op = op;
    ph.total = total;
    ph.sequential = sequential;
    ph.record = record;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile (permille: 500 = p50, 999 = p99.9) over the
 * sorted latencies, in microseconds.  Integer math avoids float rounding
 * picking the neighbouring rank. */
static double pct_us(uint64_t permille)
{
    if (ph.nlat == 0)
        return 0;
    size_t rank = (size_t)((permille * ph.nlat + 999) / 1000);
    if (rank < 1)
        rank = 1;
    return (double)ph.lat[rank - 1] / 1000.0;
}

static void print_errors(FILE *f)
{
    for (int i = 0; i < g_nerrs; i++)
        fprintf(f, "cairn-bench: error x%" PRIu64 ": %s\n", g_errs[i].n,
                g_errs[i].what);
    if (g_errs_other)
        fprintf(f, "cairn-bench: error x%" PRIu64 ": (other kinds)\n",
                g_errs_other);
}

/* ------------------------------------------------------------------ main */

static void on_sigint(int sig)
{
    (void)sig;
    g_interrupted = 1;
}

static void usage(FILE *f)
{
    fprintf(f,
        "usage: cairn-bench [options]\n"
        "  --endpoint HOST:PORT   server (default 127.0.0.1:2379)\n"
        "  --op put|range         request type (default put)\n"
        "  --conns N              HTTP/2 connections (default 1)\n"
        "  --streams N            in-flight requests per connection (default 1)\n"
        "  --key-size N           key bytes (default 16)\n"
        "  --val-size N           value bytes for put (default 256)\n"
        "  --keys N               key space size (default 10000)\n"
        "  --sequential           walk keys in order instead of randomly\n"
        "  --total N              stop after N requests\n"
        "  --duration SECS        stop issuing after SECS (default 10 if no --total)\n"
        "  --prefill              put every key first (not measured); with\n"
        "                         --op range a missing key is then an error\n"
        "  --serializable         Range with serializable=true\n"
        "  --timeout SECS         fail in-flight requests after SECS without\n"
        "                         any response (default 10)\n"
        "  --seed N               random seed\n"
        "  --quiet                no progress notes on stderr\n"
        "Prints one summary line on stdout; exits 1 if any request failed.\n");
}

static uint64_t parse_u64(const char *opt, const char *s)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || *end || end == s || s[0] == '-')
        die("bad value for %s: %s", opt, s);
    return v;
}

static double parse_secs(const char *opt, const char *s)
{
    char *end;
    double v = strtod(s, &end);
    if (*end || end == s || !(v > 0) || v > 1e6)
        die("bad value for %s: %s", opt, s);
    return v;
}

static void parse_args(int argc, char **argv)
{
    enum { O_ENDPOINT = 256, O_OP, O_CONNS, O_STREAMS, O_KEYSIZE, O_VALSIZE,
           O_KEYS, O_TOTAL, O_DURATION, O_PREFILL, O_SERIAL, O_SEQ, O_TIMEOUT,
           O_SEED, O_QUIET, O_HELP };
    static const struct option opts[] = {
        {"endpoint", required_argument, 0, O_ENDPOINT},
        {"op", required_argument, 0, O_OP},
        {"conns", required_argument, 0, O_CONNS},
        {"streams", required_argument, 0, O_STREAMS},
        {"key-size", required_argument, 0, O_KEYSIZE},
        {"val-size", required_argument, 0, O_VALSIZE},
        {"keys", required_argument, 0, O_KEYS},
        {"total", required_argument, 0, O_TOTAL},
        {"duration", required_argument, 0, O_DURATION},
        {"prefill", no_argument, 0, O_PREFILL},
        {"serializable", no_argument, 0, O_SERIAL},
        {"sequential", no_argument, 0, O_SEQ},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"seed", required_argument, 0, O_SEED},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0},
    };
    static char hostbuf[256], portbuf[16];
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (o) {
        case O_ENDPOINT: {
            const char *a = optarg, *colon;
            size_t hl;
            if (a[0] == '[') { /* [v6addr]:port */
                const char *rb = strchr(a, ']');
                if (!rb)
                    die("bad --endpoint %s", a);
                hl = (size_t)(rb - a - 1);
                if (hl >= sizeof hostbuf)
                    die("bad --endpoint %s", a);
                memcpy(hostbuf, a + 1, hl);
                colon = rb[1] == ':' ? rb + 1 : NULL;
            } else {
                colon = strrchr(a, ':');
                hl = colon ? (size_t)(colon - a) : strlen(a);
                if (hl >= sizeof hostbuf)
                    die("bad --endpoint %s", a);
                memcpy(hostbuf, a, hl);
            }
            hostbuf[hl] = 0;
            if (colon) {
                if (strlen(colon + 1) >= sizeof portbuf)
                    die("bad --endpoint %s", a);
                strcpy(portbuf, colon + 1);
            } else {
                strcpy(portbuf, "2379");
            }
            cfg.host = hostbuf[0] ? hostbuf : "127.0.0.1";
            cfg.port = portbuf;
            break;
        }
        case O_OP:
            if (strcmp(optarg, "put") == 0)
                cfg.op = OP_PUT;
            else if (strcmp(optarg, "range") == 0)
                cfg.op = OP_RANGE;
            else
                die("--op must be put or range");
            break;
        case O_CONNS: cfg.conns = (int)parse_u64("--conns", optarg); break;
        case O_STREAMS: cfg.streams = (int)parse_u64("--streams", optarg); break;
        case O_KEYSIZE: cfg.key_size = parse_u64("--key-size", optarg); break;
        case O_VALSIZE: cfg.val_size = parse_u64("--val-size", optarg); break;
        case O_KEYS: cfg.keys = parse_u64("--keys", optarg); break;
        case O_TOTAL: cfg.total = parse_u64("--total", optarg); break;
        case O_DURATION: cfg.duration = parse_secs("--duration", optarg); break;
        case O_PREFILL: cfg.prefill = true; break;
        case O_SERIAL: cfg.serializable = true; break;
        case O_SEQ: cfg.sequential = true; break;
        case O_TIMEOUT: cfg.stall_secs = parse_secs("--timeout", optarg); break;
        case O_SEED: g_rng = parse_u64("--seed", optarg) | 1; break;
        case O_QUIET: cfg.quiet = true; break;
        case 'h': case O_HELP: usage(stdout); exit(0);
        default: usage(stderr); exit(2);
        }
    }
    if (optind != argc) {
        usage(stderr);
        exit(2);
    }
    if (cfg.conns < 1 || cfg.conns > 10000)
        die("--conns must be 1..10000");
    if (cfg.streams < 1 || cfg.streams > 100000)
        die("--streams must be 1..100000");
    if (cfg.keys < 1)
        die("--keys must be >= 1");
    if (cfg.key_size < 1 || cfg.key_size > 1024 * 1024)
        die("--key-size must be 1..1048576");
    if (cfg.val_size > 64 * 1024 * 1024)
        die("--val-size must be <= 64MiB");
    /* Keys are the zero-padded index; it must fit or keys would collide. */
    uint64_t maxidx = cfg.keys - 1;
    size_t digits = 1;
    while (maxidx >= 10) {
        maxidx /= 10;
        digits++;
    }
    if (digits > cfg.key_size)
        die("--key-size %zu too small for --keys %" PRIu64 " (needs %zu)",
            cfg.key_size, cfg.keys, digits);
    if (cfg.total == 0 && cfg.duration == 0)
        cfg.duration = 10;
    if (strchr(cfg.host, ':'))
        snprintf(cfg.authority, sizeof cfg.authority, "[%s]:%s", cfg.host,
                 cfg.port);
    else
        snprintf(cfg.authority, sizeof cfg.authority, "%s:%s", cfg.host,
                 cfg.port);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);

    struct sigaction sa = {.sa_handler = on_sigint};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g_value = xmalloc(cfg.val_size);
    for (size_t i = 0; i < cfg.val_size; i++)
        g_value[i] = (uint8_t)('a' + rng_next() % 26);

    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0)
        die("epoll_create1: %s", strerror(errno));
    g_conns = xmalloc((size_t)cfg.conns * sizeof *g_conns);
    for (int i = 0; i < cfg.conns; i++)
        conn_open(&g_conns[i], i);

    if (cfg.prefill) {
        /* Not measured, and a --duration must not cut it short. */
        double saved = cfg.duration;
        cfg.duration = 0;
        phase_reset(OP_PUT, cfg.keys, true, false);
        run_phase();
        cfg.duration = saved;
        if (!cfg.quiet)
            fprintf(stderr, "cairn-bench: prefill: %" PRIu64 " keys in %.2fs\n",
                    ph.ok, (double)(ph.t_end - ph.t_start) / 1e9);
        if (ph.errors || g_conn_errors || g_interrupted) {
            print_errors(stderr);
            die("prefill failed (%" PRIu64 " errors)", ph.errors);
        }
    }

    phase_reset(cfg.op, cfg.total, cfg.sequential, true);
    ph.miss_is_error = cfg.op == OP_RANGE && cfg.prefill;
    run_phase();

    /* Polite shutdown: tell the server we're done, best effort. */
    for (int i = 0; i < cfg.conns; i++) {
        conn_t *c = &g_conns[i];
        if (c->dead)
            continue;
        if (!c->ready) {
            g_conn_errors++;
            note_error("conn %d: never received server SETTINGS", c->idx);
        }
        nghttp2_session_terminate_session(c->s, NGHTTP2_NO_ERROR);
        conn_flush(c);
        conn_close(c, "shutdown");
    }

    qsort(ph.lat, ph.nlat, sizeof *ph.lat, cmp_u64);
    double secs = (double)(ph.t_end - ph.t_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    print_errors(stderr);
    if (g_interrupted)
        fprintf(stderr, "cairn-bench: interrupted\n");

    printf("op=%s conns=%d streams=%d key_size=%zu val_size=%zu keys=%" PRIu64
           " total=%" PRIu64 " ok=%" PRIu64 " errors=%" PRIu64
           " conn_errors=%" PRIu64,
           cfg.op == OP_PUT ? "put" : "range", cfg.conns, cfg.streams,
           cfg.key_size, cfg.val_size, cfg.keys, ph.completed, ph.ok,
           ph.errors, g_conn_errors);
    if (cfg.op == OP_RANGE)
        printf(" misses=%" PRIu64, ph.misses);
    printf(" secs=%.3f rps=%.0f p50_us=%.0f p90_us=%.0f p99_us=%.0f"
           " p999_us=%.0f max_us=%.0f\n",
           secs, (double)ph.ok / secs, pct_us(500), pct_us(900), pct_us(990),
           pct_us(999), ph.nlat ? (double)ph.lat[ph.nlat - 1] / 1000.0 : 0.0);
    fflush(stdout);
    return (ph.errors || g_conn_errors || g_interrupted) ? 1 : 0;
}
