/*
 * cairn-bench: a small load generator for etcd-v3-compatible servers.
 *
 * Speaks gRPC over cleartext HTTP/2 (h2c, prior knowledge) using nghttp2's
 * client API and a single-threaded epoll loop.  Each connection keeps up to
 * --streams unary requests in flight; every request is timed from submission
 * to stream close and only successful requests contribute latencies.
 *
 * The few protobufs we need (Put, Range, LeaseGrant, LeaseRevoke and
 * LeaseKeepAlive requests) are encoded by hand, and the responses are
 * checked just enough to catch broken servers: HTTP :status, grpc-status
 * trailer, gRPC message framing and, for Range, that the returned key is the
 * one asked for; for LeaseGrant, an ID and a positive TTL.
 *
 * Every run ends: the request budget is bounded by --total and/or
 * --duration, and a stall watchdog (--timeout) fails whatever is still in
 * flight when no response has completed for that long.
 *
 * --op watch measures watch fan-out instead: receiver connections open
 * bidirectional /etcdserverpb.Watch/Watch streams carrying many watchers on
 * one key (or prefix); once every watcher is created, writer connections put
 * to that key at a paced rate, the send time of each put is filed under the
 * revision its response reports, and every delivered event's latency is
 * (arrival - send time of its mod_revision).  See run_watch().
 *
 * Leases: --op lease-grant times unary LeaseGrant like put; --op
 * lease-keepalive grants --leases leases, then pipelines keep-alives on one
 * bidirectional LeaseKeepAlive stream per connection (run_keepalive());
 * --op lease-expire grants --leases short leases, each with one key, and
 * times how long the server takes to expire them all while a paced writer
 * keeps putting (run_expire()).
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
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/timerfd.h>
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

#define LAT_CAP_DEFAULT (1u << 22) /* watch: reservoir of latency samples */
#define WATCH_READS_PER_WAKE 4      /* watch: recv() calls per epoll wakeup */

/* Benchmark modes (--op) and, from OP_LEASE_REVOKE on, request kinds that
 * only occur inside a mode. */
enum op {
    OP_PUT, OP_RANGE, OP_WATCH, OP_LEASE_GRANT, OP_LEASE_KEEPALIVE,
    OP_LEASE_EXPIRE,
    OP_LEASE_REVOKE, /* --revoke: LeaseRevoke of every lease granted */
    OP_EXP_PUT,      /* lease-expire: put "exp/<n>" with lease n */
    OP_EXP_COUNT,    /* lease-expire: Range count_only over "exp/" */
    OP_N
};

static const char *const op_names[OP_N] = {
    "put", "range", "watch", "lease-grant", "lease-keepalive", "lease-expire",
    "lease-revoke", "put-with-lease", "count",
};

#define EXP_PREFIX "exp/" /* lease-expire keys; range end "exp0" */
#define EXP_POLL_NS 50000000ull /* lease-expire: count every 50 ms */

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
    unsigned range_prefix; /* range: drop this many trailing key digits and
                            * Range that prefix (10^N keys); 0 = one key */
    bool quiet;
    bool streams_set;
    /* Keys are key_prefix followed by key_digits decimal digits (the index,
     * zero-padded).  Plain put/range: no prefix, key_size digits. */
    const uint8_t *key_prefix;
    size_t key_prefix_len;
    size_t key_digits;
    size_t key_len;      /* key_prefix_len + key_digits */
    /* --op watch */
    int watchers;
    int watch_streams;
    int writer_conns;
    double rate;         /* puts/s */
    const char *watch_key;
    bool watch_prefix;
    double drain_secs;
    long server_pid;     /* sample this process's RSS around creation */
    size_t lat_cap;
    /* leases */
    int64_t ttl;         /* LeaseGrant TTL, seconds */
    bool ttl_set;
    uint64_t leases;     /* keepalive / expire: leases granted first */
    bool revoke;         /* grant / keepalive: revoke them all at the end */
    double expire_writer_rate; /* expire: puts/s during the expiry */
    double expire_timeout;     /* expire: give up this long after first due */
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
    .watchers = 1000,
    .watch_streams = 0, /* default: one per connection */
    .writer_conns = 1,
    .rate = 100,
    .watch_key = "cairn-bench/watch",
    .drain_secs = 10,
    .lat_cap = LAT_CAP_DEFAULT,
    .ttl = 600,
    .leases = 1000,
    .expire_writer_rate = 1000,
    .expire_timeout = 300,
};

static uint8_t *g_value; /* the value written by every Put */

/* ------------------------------------------------------------- run state */

struct conn;

typedef struct slot {
    struct conn *c;
    int32_t stream_id; /* 0 while the slot is free */
    enum op op;        /* what the request in flight is */
    uint64_t idx;      /* key index (put/range/grant) or lease index (revoke) */
    int64_t lease;     /* lease ID sent (put-with-lease, revoke) or granted */
    int64_t resp_ttl;  /* LeaseGrant: granted TTL */
    int64_t resp_count;/* count-only Range: count */
    uint64_t t0;       /* submit time, ns */
    uint8_t *req;      /* gRPC-framed request message */
    size_t req_len, req_off;
    size_t key_off;    /* where the key sits inside req (for Range checks) */
    size_t key_len;    /* its length (shorter with --range-prefix) */
    uint8_t *resp;     /* accumulated response DATA */
    size_t resp_len, resp_cap;
    bool resp_overflow;
    int http_status;
    int grpc_status; /* -1 until seen */
    char grpc_msg[160];
} slot_t;

struct wstream;
struct kastream;

enum conn_kind {
    CK_UNARY, /* request slots */
    CK_WATCH, /* watch receiver: wstreams */
    CK_KA,    /* one LeaseKeepAlive stream */
};

typedef struct conn {
    int idx;
    int fd;
    nghttp2_session *s;
    enum conn_kind kind;
    bool watch;  /* a watch receiver: carries wstreams, not request slots */
    struct kastream *ka; /* CK_KA: its stream */
    struct wstream **ws; /* watch: its streams */
    int nws;
    bool ws_opened;
    int nslots;  /* request slots (0 for watch receivers) */
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
    bool paced;          /* watch writer: issue at most cfg.rate per second */
    uint64_t total;
    uint64_t deadline;   /* ns, 0 = none */
    uint64_t issued, completed, ok, errors, misses;
    uint64_t range_kvs;  /* --range-prefix: kvs returned in all */
    uint64_t ok_op[OP_N], err_op[OP_N]; /* the same, by request kind */
    uint64_t seq_next;
    uint64_t t_start, t_end, last_progress, t_last_issue;
    uint64_t *lat;       /* ns, successes only */
    size_t nlat, cap_lat;
} ph;

static conn_t *g_conns;  /* request connections (the writers in watch mode) */
static int g_nconns;
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

/* Key = key_prefix, then the key index as zero-padded decimal filling
 * exactly key_digits bytes (plain put/range: no prefix, key_size digits). */
static void write_key(uint8_t *dst, uint64_t idx)
{
    memcpy(dst, cfg.key_prefix, cfg.key_prefix_len);
    dst += cfg.key_prefix_len;
    for (size_t i = cfg.key_digits; i > 0; i--) {
        dst[i - 1] = (uint8_t)('0' + idx % 10);
        idx /= 10;
    }
}

static size_t max_request_len(void)
{
    /* 5-byte gRPC prefix + key field + value field + serializable flag;
     * lease-expire keys ("exp/" + up to 20 digits) add a lease field (11),
     * and its count-only Range has a range_end (6) and count_only (2). */
    size_t klen = cfg.key_len > 24 ? cfg.key_len : 24;
    return 5 + 1 + varint_len(klen) + klen + 1 + varint_len(cfg.val_size) +
           cfg.val_size + 2 + 11 + 8 + cfg.key_len + 2;
}

static void put_bytes_field(uint8_t **pp, uint8_t tag, const void *d,
                            size_t n)
{
    uint8_t *p = *pp;
    *p++ = tag;
    p += pb_put_varint(p, n);
    memcpy(p, d, n);
    *pp = p + n;
}

/* The request for sl->op, gRPC-framed, into sl->req.  key_idx is the key
 * index for put/range, and n for put-with-lease ("exp/<n>"). */
static void build_request(slot_t *sl, uint64_t key_idx)
{
    uint8_t *p = sl->req + 5, *start = p;
    char ek[32];
    switch (sl->op) {
    case OP_LEASE_GRANT: /* LeaseGrantRequest{1: TTL}; ID 0: server picks */
        *p++ = 0x08;
        p += pb_put_varint(p, (uint64_t)cfg.ttl);
        break;
    case OP_LEASE_REVOKE: /* LeaseRevokeRequest{1: ID} */
        *p++ = 0x08;
        p += pb_put_varint(p, (uint64_t)sl->lease);
        break;
    case OP_EXP_PUT: /* PutRequest{1: key, 2: value, 3: lease} */
        put_bytes_field(&p, 0x0a, ek,
                        (size_t)snprintf(ek, sizeof ek, EXP_PREFIX "%" PRIu64,
                                         key_idx));
        put_bytes_field(&p, 0x12, g_value, cfg.val_size);
        *p++ = 0x18;
        p += pb_put_varint(p, (uint64_t)sl->lease);
        break;
    case OP_EXP_COUNT: /* RangeRequest{1: key, 2: range_end, 9: count_only} */
        put_bytes_field(&p, 0x0a, EXP_PREFIX, strlen(EXP_PREFIX));
        put_bytes_field(&p, 0x12, "exp0", 4);
        *p++ = 0x48;
        *p++ = 1;
        break;
    default: /* OP_PUT, OP_RANGE */
        *p++ = 0x0a; /* field 1 (key), wire type 2 */
        p += pb_put_varint(p, cfg.key_len);
        sl->key_off = (size_t)(p - sl->req);
        write_key(p, key_idx);
        p += cfg.key_len;
        sl->key_len = cfg.key_len;
        if (sl->op == OP_RANGE && cfg.range_prefix) {
            /* Range over the key's first key_len - N bytes as a prefix:
             * shorten the key field, then range_end = prefix with its last
             * byte + 1 (a digit, so no carry). */
            size_t plen = cfg.key_len - cfg.range_prefix;
            uint8_t *k = sl->req + sl->key_off;
            sl->req[sl->key_off - 1] = (uint8_t)plen; /* plen < 128 */
            sl->key_len = plen;
            p = k + plen;
            *p++ = 0x12; /* RangeRequest field 2 (range_end) */
            *p++ = (uint8_t)plen;
            memcpy(p, k, plen);
            p[plen - 1]++;
            p += plen;
        }
        if (sl->op == OP_PUT) {
            *p++ = 0x12; /* PutRequest field 2 (value) */
            p += pb_put_varint(p, cfg.val_size);
            memcpy(p, g_value, cfg.val_size);
            p += cfg.val_size;
        } else if (cfg.serializable) {
            *p++ = 0x38; /* RangeRequest field 7 (serializable), varint */
            *p++ = 1;
        }
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

/* LeaseGrantResponse: 1 header, 2 ID, 3 TTL, 4 error. */
static const char *check_grant(slot_t *sl, const uint8_t *p,
                               const uint8_t *end)
{
    static char why[200];
    sl->lease = 0;
    sl->resp_ttl = 0;
    while (p < end) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n)
            return "malformed LeaseGrantResponse";
        if (f == 2 && wt == 0)
            sl->lease = (int64_t)v;
        else if (f == 3 && wt == 0)
            sl->resp_ttl = (int64_t)v;
        else if (f == 4 && wt == 2 && dl > 0) {
            snprintf(why, sizeof why, "LeaseGrantResponse.error: %.*s",
                     (int)(dl > 120 ? 120 : dl), (const char *)d);
            return why;
        }
        p += n;
    }
    if (sl->lease == 0)
        return "LeaseGrantResponse without ID";
    if (sl->resp_ttl <= 0)
        return "LeaseGrantResponse with TTL <= 0";
    return NULL;
}

/* Count-only RangeResponse: 2 kvs (must be absent), 4 count. */
static const char *check_count(slot_t *sl, const uint8_t *p,
                               const uint8_t *end)
{
    sl->resp_count = 0;
    while (p < end) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n)
            return "malformed RangeResponse";
        if (f == 4 && wt == 0)
            sl->resp_count = (int64_t)v;
        else if (f == 2)
            return "count_only Range returned kvs";
        p += n;
    }
    return NULL;
}

/* Checks a unary gRPC response body.  Returns NULL if fine, otherwise a
 * short description.  *miss is set for a Range that found nothing. */
static const char *check_response(slot_t *sl, bool *miss)
{
    enum op op = sl->op;
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
    if (op == OP_LEASE_GRANT)
        return check_grant(sl, b + 5, b + 5 + mlen);
    if (op == OP_EXP_COUNT)
        return check_count(sl, b + 5, b + 5 + mlen);
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
        if (f == 2 && wt == 2 && cfg.range_prefix) {
            /* every KeyValue.key: a full key under the prefix asked for */
            const uint8_t *q = d, *qe = d + dl;
            bool ok = false;
            nkvs++;
            while (q < qe) {
                uint32_t kf, kwt;
                uint64_t kv;
                const uint8_t *kd = NULL;
                size_t kdl = 0, kn = pb_next_field(q, (size_t)(qe - q), &kf,
                                                   &kwt, &kv, &kd, &kdl);
                if (!kn)
                    return "malformed KeyValue";
                if (kf == 1 && kwt == 2)
                    ok = kdl == cfg.key_len &&
                         memcmp(kd, sl->req + sl->key_off, sl->key_len) == 0;
                q += kn;
            }
            if (!ok)
                return "Range returned a key outside the prefix";
        } else if (f == 2 && wt == 2 && nkvs++ == 0) {
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
                    key_ok = kdl == cfg.key_len &&
                             memcmp(kd, sl->req + sl->key_off, kdl) == 0;
                q += kn;
            }
        }
        p += n;
    }
    if (cfg.range_prefix) {
        if (count != nkvs)
            return "prefix Range: count differs from the kvs returned";
        if (ph.miss_is_error) {
            /* prefilled: every key of [base, base + 10^N) below --keys */
            uint64_t base = 0, span = 1;
            const uint8_t *k = sl->req + sl->key_off;
            for (size_t i = cfg.key_prefix_len; i < sl->key_len; i++)
                base = base * 10 + (uint64_t)(k[i] - '0');
            for (unsigned i = 0; i < cfg.range_prefix; i++)
                span *= 10;
            base *= span;
            uint64_t want = base + span <= cfg.keys ? span : cfg.keys - base;
            if (nkvs != want)
                return "prefix Range returned the wrong number of keys";
        }
        *miss = nkvs == 0;
        ph.range_kvs += nkvs;
        return NULL;
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

/* watch mode hooks, defined with the rest of watch mode below */
static const char *watch_put_done(slot_t *sl);
static void w_on_header(conn_t *c, int32_t stream_id, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen);
static void w_on_data(conn_t *c, int32_t stream_id, const uint8_t *data,
                      size_t len);
static void w_on_close(conn_t *c, int32_t stream_id, uint32_t error_code);
static void w_conn_closed(conn_t *c, const char *why);
/* lease mode hooks, defined with the lease modes below */
static void lease_granted(slot_t *sl, uint64_t t);
static void exp_poll_done(slot_t *sl, const char *bad, uint64_t t);
static void ka_on_header(conn_t *c, int32_t stream_id, const uint8_t *name,
                         size_t namelen, const uint8_t *value,
                         size_t valuelen);
static void ka_on_data(conn_t *c, int32_t stream_id, const uint8_t *data,
                       size_t len);
static void ka_on_close(conn_t *c, int32_t stream_id, uint32_t error_code);
static void ka_conn_closed(conn_t *c, const char *why);

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
    if (sl->op == OP_EXP_COUNT) { /* the expiry poller, not the load */
        exp_poll_done(sl, why, t);
        slot_release(sl);
        return;
    }
    ph.completed++;
    ph.errors++;
    ph.err_op[sl->op]++;
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
        bad = check_response(sl, &miss);
        if (!bad && miss && ph.miss_is_error)
            bad = "Range found no key (key space was prefilled)";
        if (!bad && cfg.op == OP_WATCH && sl->op == OP_PUT)
            bad = watch_put_done(sl);
    }

    if (sl->op == OP_EXP_COUNT) {
        exp_poll_done(sl, bad, t);
        slot_release(sl);
        return;
    }
    if (bad) {
        slot_fail(sl, bad);
        return;
    }
    ph.completed++;
    ph.ok++;
    ph.ok_op[sl->op]++;
    ph.misses += miss;
    ph.last_progress = t;
    if (sl->op == OP_LEASE_GRANT)
        lease_granted(sl, t);
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
    (void)flags;
    if (frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (((conn_t *)ud)->watch) {
        w_on_header(ud, frame->hd.stream_id, name, namelen, value, valuelen);
        return 0;
    }
    if (((conn_t *)ud)->kind == CK_KA) {
        ka_on_header(ud, frame->hd.stream_id, name, namelen, value, valuelen);
        return 0;
    }
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
    (void)flags;
    if (((conn_t *)ud)->watch) {
        w_on_data(ud, stream_id, data, len);
        return 0;
    }
    if (((conn_t *)ud)->kind == CK_KA) {
        ka_on_data(ud, stream_id, data, len);
        return 0;
    }
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
    if (((conn_t *)ud)->watch) {
        w_on_close(ud, stream_id, error_code);
        return 0;
    }
    if (((conn_t *)ud)->kind == CK_KA) {
        ka_on_close(ud, stream_id, error_code);
        return 0;
    }
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
            int want = c->watch ? c->nws
                       : c->kind == CK_KA ? 1 : c->nslots;
            if (lim < (uint32_t)want && c->idx == 0 && !cfg.quiet)
                fprintf(stderr, "cairn-bench: note: server allows %u "
                        "concurrent streams per connection, %s %d; the "
                        "excess waits client-side\n", lim,
                        c->kind != CK_UNARY ? "this connection needs"
                                            : "--streams is",
                        want);
        }
        c->ready = true;
    }
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        /* Streams above last_stream_id get closed by nghttp2 with
         * REFUSED_STREAM (counted as errors); we just stop opening new ones
         * here.  Any GOAWAY mid-run is a connection error for the report. */
        if (!c->goaway) {
            c->goaway = true;
            if (c->kind == CK_UNARY)
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
    if (c->watch) {
        note_error("watch stream not opened: %s", nghttp2_strerror(lib_error));
        w_on_close(c, frame->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }
    if (c->kind == CK_KA) {
        note_error("keep-alive stream not opened: %s",
                   nghttp2_strerror(lib_error));
        ka_on_close(c, frame->hd.stream_id, NGHTTP2_NO_ERROR);
        return 0;
    }
    for (int i = 0; i < c->nslots; i++) {
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
    for (int i = 0; i < c->nslots; i++)
        if (c->slots[i].stream_id != 0)
            slot_fail(&c->slots[i], buf);
    if (c->watch)
        w_conn_closed(c, why);
    if (c->kind == CK_KA)
        ka_conn_closed(c, why);
    nghttp2_session_del(c->s);
    c->s = NULL;
    close(c->fd); /* also drops it from the epoll set */
    c->fd = -1;
    c->dead = true;
    if (!c->goaway && c->kind == CK_UNARY)
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

static uint64_t g_recv_t; /* when the data being parsed was received */

static int conn_read(conn_t *c)
{
    static uint8_t buf[READ_BUF_BYTES];
    /* A watch receiver under heavy fan-out might never see EAGAIN; the
     * epoll set is level-triggered, so yield to the others (and to the
     * writer's timer) after a while. */
    for (unsigned reads = 0; !c->watch || reads < WATCH_READS_PER_WAKE;
         reads++) {
        ssize_t n = recv(c->fd, buf, sizeof buf, 0);
        if (n > 0) {
            if (c->kind != CK_UNARY)
                g_recv_t = now_ns();
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
    return 0;
}

static bool can_issue(uint64_t t)
{
    if (g_interrupted)
        return false;
    if (ph.total && ph.issued >= ph.total)
        return false;
    if (ph.deadline && t >= ph.deadline)
        return false;
    /* Paced: put number i (from 0) is due at t_start + i / rate. */
    if (ph.paced && t >= ph.t_start &&
        ph.issued >= (uint64_t)((double)(t - ph.t_start) * cfg.rate / 1e9) + 1)
        return false;
    return true;
}

static const char *request_path(enum op op)
{
    switch (op) {
    case OP_PUT: case OP_EXP_PUT: return "/etcdserverpb.KV/Put";
    case OP_RANGE: case OP_EXP_COUNT: return "/etcdserverpb.KV/Range";
    case OP_LEASE_GRANT: return "/etcdserverpb.Lease/LeaseGrant";
    case OP_LEASE_REVOKE: return "/etcdserverpb.Lease/LeaseRevoke";
    case OP_LEASE_KEEPALIVE: return "/etcdserverpb.Lease/LeaseKeepAlive";
    default: die("no request path for op %d", (int)op);
    }
    return NULL;
}

/* Request headers for a call to @path.  nghttp2 copies the array when the
 * request is submitted; the strings it points to are static. */
static const nghttp2_nv *request_headers(const char *path, size_t *n)
{
#define NV(name, value)                                                        \
    {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1,                 \
     sizeof(value) - 1, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
    static nghttp2_nv nv[] = {
        NV(":method", "POST"), NV(":scheme", "http"),
        NV(":path", ""), NV(":authority", ""),
        NV("content-type", "application/grpc"), NV("te", "trailers"),
    };
#undef NV
    nv[2].value = (uint8_t *)path;
    nv[2].valuelen = strlen(path);
    nv[3].value = (uint8_t *)cfg.authority;
    nv[3].valuelen = strlen(cfg.authority);
    *n = 6;
    return nv;
}

/* lease state, defined with the lease modes below */
static bool lease_chain_pending(void);
static bool lease_chain_peek(int64_t *lease, uint64_t *n);
static void lease_chain_take(void);
static int64_t lease_id_at(uint64_t i);

/* Submits one request of kind @op on a free slot of @c.  Returns the slot,
 * or NULL (and retires the connection) if nghttp2 refuses it. */
static slot_t *submit_one(conn_t *c, enum op op, uint64_t idx, int64_t lease)
{
    size_t nvlen;
    const nghttp2_nv *nv = request_headers(request_path(op), &nvlen);
    slot_t *sl = &c->slots[c->freelist[c->nfree - 1]];
    sl->op = op;
    sl->idx = idx;
    sl->lease = lease;
    build_request(sl, idx);
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
        return NULL;
    }
    c->nfree--;
    sl->stream_id = id;
    sl->t0 = now_ns();
    c->inflight++;
    g_inflight++;
    return sl;
}

/* Fill free stream slots with new requests while the budget allows.  The
 * puts that lease-expire chains to its granted leases go first; they are
 * not counted against the budget. */
static void conn_refill(conn_t *c)
{
    /* Until the server's SETTINGS arrive nghttp2 assumes no stream limit,
     * and a server with a low SETTINGS_MAX_CONCURRENT_STREAMS would refuse
     * the excess; so wait for them, like real gRPC clients do. */
    if (!c->ready)
        return;
    while (!c->goaway && c->nfree > 0) {
        int64_t lease;
        uint64_t n;
        if (lease_chain_peek(&lease, &n)) {
            if (!submit_one(c, OP_EXP_PUT, n, lease))
                break;
            lease_chain_take();
            continue;
        }
        if (!can_issue(now_ns()))
            break;
        uint64_t key = 0;
        lease = 0;
        if (ph.op == OP_LEASE_REVOKE)
            lease = lease_id_at(ph.seq_next++);
        else if (ph.op == OP_LEASE_GRANT)
            key = ph.seq_next++;
        else
            key = ph.sequential ? ph.seq_next++ % cfg.keys
                                : rng_next() % cfg.keys;
        slot_t *sl = submit_one(c, ph.op, key, lease);
        if (!sl)
            break;
        ph.t_last_issue = sl->t0;
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

static void conn_open(conn_t *c, int idx, int nslots, enum conn_kind kind)
{
    memset(c, 0, sizeof *c);
    c->idx = idx;
    c->nslots = nslots;
    c->kind = kind;
    c->watch = kind == CK_WATCH;
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

    c->slots = xmalloc((size_t)nslots * sizeof *c->slots);
    c->freelist = xmalloc((size_t)nslots * sizeof *c->freelist);
    size_t reqcap = max_request_len();
    for (int i = 0; i < nslots; i++) {
        memset(&c->slots[i], 0, sizeof c->slots[i]);
        c->slots[i].c = c;
        c->slots[i].req = xmalloc(reqcap);
        c->freelist[i] = nslots - 1 - i;
    }
    c->nfree = nslots;

    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl: %s", strerror(errno));
    if (kind == CK_UNARY)
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
        bool more = can_issue(t) || lease_chain_pending();
        if (more)
            for (int i = 0; i < g_nconns; i++)
                if (!g_conns[i].goaway) {
                    conn_refill(&g_conns[i]);
                    conn_flush(&g_conns[i]);
                }

        if (g_inflight == 0 && (!more || g_usable == 0))
            break;
        /* Watchdog: nothing completed (and no connection became ready)
         * for too long while there is work to do. */
        if ((g_inflight > 0 || can_issue(t)) &&
            t - ph.last_progress > stall_ns) {
            char why[80];
            snprintf(why, sizeof why, "timeout: no progress for %.1fs",
                     cfg.stall_secs);
            for (int i = 0; i < g_nconns; i++)
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

/* ------------------------------------------------- streamed gRPC replies */

/* Reassembles one stream's gRPC messages from DATA chunks.  Messages
 * straddle frames and frames carry several messages: whole ones are handed
 * over in place, only a partial one is copied and carried over. */
typedef struct grpc_rx {
    uint8_t *in;
    size_t in_len, in_cap;
    bool broken; /* bad framing: the rest of the stream is ignored */
} grpc_rx_t;

typedef void (*grpc_msg_fn)(void *arg, const uint8_t *m, size_t len);

static void rx_append(grpc_rx_t *rx, const uint8_t *d, size_t n)
{
    if (rx->in_len + n > rx->in_cap) {
        size_t cap = rx->in_cap ? rx->in_cap : 4096;
        while (cap < rx->in_len + n)
            cap *= 2;
        rx->in = xrealloc(rx->in, cap);
        rx->in_cap = cap;
    }
    memcpy(rx->in + rx->in_len, d, n);
    rx->in_len += n;
}

static uint32_t rx_msg_len(grpc_rx_t *rx, const uint8_t *h, const char *what)
{
    uint32_t mlen = ((uint32_t)h[1] << 24) | ((uint32_t)h[2] << 16) |
                    ((uint32_t)h[3] << 8) | h[4];
    if (h[0] != 0 || mlen > MAX_RESP_BYTES) {
        if (h[0])
            note_error("compressed gRPC message (not requested)");
        else
            note_error("%s larger than limit", what);
        rx->broken = true;
    }
    return mlen;
}

/* Feeds one DATA chunk; calls fn(arg, message, length) per whole message.
 * @what names the message type in errors. */
static void grpc_rx_feed(grpc_rx_t *rx, const uint8_t *data, size_t len,
                         const char *what, grpc_msg_fn fn, void *arg)
{
    if (rx->broken)
        return;
    if (rx->in_len) {
        if (rx->in_len < 5) {
            size_t take = 5 - rx->in_len < len ? 5 - rx->in_len : len;
            rx_append(rx, data, take);
            data += take;
            len -= take;
            if (rx->in_len < 5)
                return;
        }
        size_t mlen = rx_msg_len(rx, rx->in, what);
        if (rx->broken)
            return;
        size_t need = 5 + mlen - rx->in_len, take = need < len ? need : len;
        rx_append(rx, data, take);
        data += take;
        len -= take;
        if (rx->in_len < 5 + mlen)
            return;
        fn(arg, rx->in + 5, mlen);
        rx->in_len = 0;
    }
    while (len >= 5) {
        size_t mlen = rx_msg_len(rx, data, what);
        if (rx->broken)
            return;
        if (len < 5 + mlen)
            break;
        fn(arg, data + 5, mlen);
        data += 5 + mlen;
        len -= 5 + mlen;
    }
    if (len)
        rx_append(rx, data, len);
}

/* ----------------------------------------------------------- watch mode */

/* The n-th created=true response on a stream answers its n-th create
 * request, which tells us which of our watchers a server watch_id is. */
typedef struct widmap {
    int64_t id;  /* the server's watch_id */
    uint32_t w;  /* index into W.watchers */
} widmap_t;

typedef struct wstream {
    conn_t *c;
    int idx;
    int32_t stream_id;  /* 0 until submitted */
    bool open;          /* submitted and not closed */
    uint8_t *out;       /* the create requests, gRPC-framed */
    size_t out_len, out_off;
    grpc_rx_t rx;       /* WatchResponse reassembly */
    int nwatchers, ncreated;
    widmap_t *ids;      /* ncreated entries; sorted by id once all exist */
    bool sorted;
    int http_status, grpc_status;
    char grpc_msg[160];
} wstream_t;

typedef struct watcher {
    int64_t last_rev;
    uint64_t events;
} watcher_t;

/* An event that arrives before its put's response (so before we know the
 * send time of its revision) waits in that revision's chain. */
typedef struct pend {
    uint64_t t;
    uint32_t next; /* index + 1 into W.pend; 0 ends the chain */
} pend_t;

static struct {
    conn_t *conns;          /* receivers */
    wstream_t *streams;
    watcher_t *watchers;
    int created;            /* watchers acknowledged with created=true */
    int open_streams;
    int64_t base_rev;       /* store revision once all watchers exist */
    uint64_t nrev;          /* revisions base_rev+1 .. base_rev+nrev are ours */
    uint64_t *send_t;       /* [rev - base_rev - 1]: put send time, 0 unknown */
    uint32_t *pend_head;    /* same index: chain of early events */
    pend_t *pend;
    uint32_t npend, cap_pend, free_pend;
    uint64_t events, lat_seen, t_last_event;
    uint64_t loop_max_ns;   /* longest stretch the loop was busy, not waiting */
    bool loading;           /* the writer has started: events are expected */
    bool shutting_down;     /* stream/connection ends are no longer errors */
} W;

static void w_sample(uint64_t ns)
{
    /* Algorithm R: every event has the same chance to be in the sample. */
    W.lat_seen++;
    if (ph.nlat < cfg.lat_cap) {
        record_latency(ns);
    } else {
        uint64_t j = rng_next() % W.lat_seen;
        if (j < cfg.lat_cap)
            ph.lat[j] = ns;
    }
}

static void w_event(watcher_t *w, int64_t rev, uint64_t t)
{
    W.events++;
    w->events++;
    W.t_last_event = t;
    if (rev <= w->last_rev)
        note_error("watcher got revision %" PRId64 " after %" PRId64
                   " (duplicate or out of order)", rev, w->last_rev);
    else
        w->last_rev = rev;
    if (!W.loading || rev <= W.base_rev ||
        (uint64_t)(rev - W.base_rev) > W.nrev) {
        note_error("event for a revision this run did not write "
                   "(another writer on the watched key?)");
        return;
    }
    uint64_t i = (uint64_t)(rev - W.base_rev - 1);
    if (W.send_t[i]) {
        w_sample(t > W.send_t[i] ? t - W.send_t[i] : 0);
        return;
    }
    uint32_t k;
    if (W.free_pend) {
        k = W.free_pend;
        W.free_pend = W.pend[k - 1].next;
    } else {
        if (W.npend == W.cap_pend) {
            if (W.cap_pend >= UINT32_MAX / 2)
                die("too many events waiting for their put's response");
            W.cap_pend = W.cap_pend ? W.cap_pend * 2 : 4096;
            W.pend = xrealloc(W.pend, W.cap_pend * sizeof *W.pend);
        }
        k = ++W.npend;
    }
    W.pend[k - 1].t = t;
    W.pend[k - 1].next = W.pend_head[i];
    W.pend_head[i] = k;
}

/* A writer's Put succeeded: file its send time under its revision and
 * settle the events that beat the response here. */
static const char *watch_put_done(slot_t *sl)
{
    const uint8_t *p = sl->resp + 5, *end = sl->resp + sl->resp_len;
    int64_t rev = 0;
    while (p < end) { /* PutResponse.header(1).revision(3) */
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n)
            return "malformed PutResponse";
        if (f == 1 && wt == 2) {
            const uint8_t *q = d, *qe = d + dl;
            while (q < qe) {
                uint32_t hf, hwt;
                uint64_t hv = 0;
                const uint8_t *hd = NULL;
                size_t hdl = 0, hn = pb_next_field(q, (size_t)(qe - q), &hf,
                                                   &hwt, &hv, &hd, &hdl);
                if (!hn)
                    return "malformed ResponseHeader";
                if (hf == 3 && hwt == 0)
                    rev = (int64_t)hv;
                q += hn;
            }
        }
        p += n;
    }
    if (rev <= 0)
        return "PutResponse without header.revision";
    if (rev <= W.base_rev || (uint64_t)(rev - W.base_rev) > W.nrev)
        return "Put revision outside this run's range (another writer?)";
    uint64_t i = (uint64_t)(rev - W.base_rev - 1);
    if (W.send_t[i])
        return "two Puts reported the same revision";
    uint64_t t0 = sl->t0 ? sl->t0 : 1;
    W.send_t[i] = t0;
    for (uint32_t k = W.pend_head[i], next; k; k = next) {
        pend_t *e = &W.pend[k - 1];
        w_sample(e->t > t0 ? e->t - t0 : 0);
        next = e->next;
        e->next = W.free_pend;
        W.free_pend = k;
    }
    W.pend_head[i] = 0;
    return NULL;
}

static int cmp_widmap(const void *a, const void *b)
{
    int64_t x = ((const widmap_t *)a)->id, y = ((const widmap_t *)b)->id;
    return x < y ? -1 : x > y;
}

static watcher_t *w_lookup(wstream_t *ws, int64_t id)
{
    if (ws->sorted) {
        int lo = 0, hi = ws->ncreated - 1;
        while (lo <= hi) {
            int mid = lo + (hi - lo) / 2;
            if (ws->ids[mid].id == id)
                return &W.watchers[ws->ids[mid].w];
            if (ws->ids[mid].id < id)
                lo = mid + 1;
            else
                hi = mid - 1;
        }
        return NULL;
    }
    for (int i = 0; i < ws->ncreated; i++)
        if (ws->ids[i].id == id)
            return &W.watchers[ws->ids[i].w];
    return NULL;
}

/* One WatchResponse: 1 header (3 revision), 2 watch_id, 3 created,
 * 4 canceled, 5 compact_revision, 6 cancel_reason, 11 events
 * (Event: 1 type, 2 kv; KeyValue: 3 mod_revision). */
static void w_message(wstream_t *ws, const uint8_t *m, size_t len)
{
    const uint8_t *p = m, *end = m + len, *reason = NULL;
    size_t reason_len = 0;
    int64_t hdr_rev = 0, wid = 0, compact = 0;
    bool created = false, canceled = false, events = false;

    while (p < end) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n) {
            note_error("malformed WatchResponse");
            return;
        }
        if (f == 1 && wt == 2) {
            const uint8_t *q = d, *qe = d + dl;
            while (q < qe) {
                uint32_t hf, hwt;
                uint64_t hv = 0;
                const uint8_t *hd = NULL;
                size_t hdl = 0, hn = pb_next_field(q, (size_t)(qe - q), &hf,
                                                   &hwt, &hv, &hd, &hdl);
                if (!hn) {
                    note_error("malformed ResponseHeader in WatchResponse");
                    return;
                }
                if (hf == 3 && hwt == 0)
                    hdr_rev = (int64_t)hv;
                q += hn;
            }
        } else if (f == 2 && wt == 0) {
            wid = (int64_t)v;
        } else if (f == 3 && wt == 0) {
            created = v != 0;
        } else if (f == 4 && wt == 0) {
            canceled = v != 0;
        } else if (f == 5 && wt == 0) {
            compact = (int64_t)v;
        } else if (f == 6 && wt == 2) {
            reason = d;
            reason_len = dl;
        } else if (f == 11 && wt == 2) {
            events = true;
        }
        p += n;
    }

    if (created) {
        if (canceled) {
            note_error("watch create refused: %.*s",
                       (int)(reason_len > 120 ? 120 : reason_len),
                       reason ? (const char *)reason : "");
        } else if (ws->ncreated >= ws->nwatchers) {
            note_error("created response for a watcher never requested");
        } else {
            /* watchers of stream i: i, i + S, i + 2S, ... */
            ws->ids[ws->ncreated].id = wid;
            ws->ids[ws->ncreated].w =
                (uint32_t)(ws->idx + ws->ncreated * cfg.watch_streams);
            ws->ncreated++;
            W.created++;
            if (hdr_rev > W.base_rev)
                W.base_rev = hdr_rev;
            ph.last_progress = now_ns();
        }
    } else if (canceled) {
        note_error("watch canceled by the server: %.*s",
                   (int)(reason_len > 120 ? 120 : reason_len),
                   reason ? (const char *)reason : "");
    }
    if (compact)
        note_error("watch compacted (compact_revision set)");
    if (!events)
        return; /* created/canceled/progress notification */

    watcher_t *w = w_lookup(ws, wid);
    if (!w) {
        note_error("events for an unknown watch_id");
        return;
    }
    for (p = m; p < end;) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        p += n; /* n > 0: the first pass walked the same bytes */
        if (f != 11 || wt != 2)
            continue;
        int64_t rev = 0;
        uint64_t type = 0;
        for (const uint8_t *q = d, *qe = d + dl; q < qe;) {
            uint32_t ef, ewt;
            uint64_t ev = 0;
            const uint8_t *ed = NULL;
            size_t edl = 0, en = pb_next_field(q, (size_t)(qe - q), &ef, &ewt,
                                               &ev, &ed, &edl);
            if (!en) {
                note_error("malformed Event");
                return;
            }
            if (ef == 1 && ewt == 0)
                type = ev;
            else if (ef == 2 && ewt == 2)
                for (const uint8_t *k = ed, *ke = ed + edl; k < ke;) {
                    uint32_t kf, kwt;
                    uint64_t kv = 0;
                    const uint8_t *kd = NULL;
                    size_t kdl = 0, kn = pb_next_field(
                        k, (size_t)(ke - k), &kf, &kwt, &kv, &kd, &kdl);
                    if (!kn) {
                        note_error("malformed KeyValue in Event");
                        return;
                    }
                    if (kf == 3 && kwt == 0)
                        rev = (int64_t)kv;
                    k += kn;
                }
            q += en;
        }
        if (type != 0)
            note_error("non-PUT event (type %" PRIu64 ")", type);
        if (rev <= 0)
            note_error("event without kv.mod_revision");
        w_event(w, rev, g_recv_t);
    }
}

static wstream_t *w_stream_of(conn_t *c, int32_t stream_id)
{
    wstream_t *ws = nghttp2_session_get_stream_user_data(c->s, stream_id);
    return ws && ws->stream_id == stream_id ? ws : NULL;
}

static void w_message_cb(void *arg, const uint8_t *m, size_t len)
{
    w_message(arg, m, len);
}

static void w_on_data(conn_t *c, int32_t stream_id, const uint8_t *data,
                      size_t len)
{
    wstream_t *ws = w_stream_of(c, stream_id);
    if (ws)
        grpc_rx_feed(&ws->rx, data, len, "WatchResponse", w_message_cb, ws);
}

static void w_on_header(conn_t *c, int32_t stream_id, const uint8_t *name,
                        size_t namelen, const uint8_t *value, size_t valuelen)
{
    wstream_t *ws = w_stream_of(c, stream_id);
    if (!ws)
        return;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        ws->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        ws->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof ws->grpc_msg - 1 ? valuelen
                                                      : sizeof ws->grpc_msg - 1;
        memcpy(ws->grpc_msg, value, n);
        ws->grpc_msg[n] = 0;
    }
}

static void w_stream_ended(wstream_t *ws, const char *why)
{
    if (!ws->open)
        return;
    ws->open = false;
    W.open_streams--;
    if (W.shutting_down)
        return;
    if (ws->grpc_status >= 0)
        note_error("watch stream ended by the server (%s): HTTP %d, "
                   "grpc-status %d (%s): %s", why, ws->http_status,
                   ws->grpc_status, grpc_code_name(ws->grpc_status),
                   ws->grpc_msg);
    else
        note_error("watch stream ended (%s), HTTP :status %d", why,
                   ws->http_status);
}

static void w_on_close(conn_t *c, int32_t stream_id, uint32_t error_code)
{
    wstream_t *ws = w_stream_of(c, stream_id);
    if (ws)
        w_stream_ended(ws, error_code == NGHTTP2_NO_ERROR
                               ? "stream closed"
                               : nghttp2_http2_strerror(error_code));
}

static void w_conn_closed(conn_t *c, const char *why)
{
    for (int i = 0; i < c->nws; i++)
        w_stream_ended(c->ws[i], why);
}

static ssize_t w_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s; (void)stream_id; (void)flags; (void)ud;
    wstream_t *ws = src->ptr;
    size_t n = ws->out_len - ws->out_off;
    if (n == 0) /* keep our side open: ending it is not needed */
        return NGHTTP2_ERR_DEFERRED;
    if (n > length)
        n = length;
    memcpy(buf, ws->out + ws->out_off, n);
    ws->out_off += n;
    return (ssize_t)n;
}

static void w_open_streams(conn_t *c)
{
#define NV(name, value)                                                        \
    {(uint8_t *)(name), (uint8_t *)(value), sizeof(name) - 1,                 \
     sizeof(value) - 1, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE}
    static nghttp2_nv nv[] = {
        NV(":method", "POST"), NV(":scheme", "http"),
        NV(":path", "/etcdserverpb.Watch/Watch"), NV(":authority", ""),
        NV("content-type", "application/grpc"), NV("te", "trailers"),
    };
#undef NV
    nv[3].value = (uint8_t *)cfg.authority;
    nv[3].valuelen = strlen(cfg.authority);
    c->ws_opened = true;
    for (int i = 0; i < c->nws; i++) {
        wstream_t *ws = c->ws[i];
        nghttp2_data_provider prd = {.source.ptr = ws,
                                     .read_callback = w_read_cb};
        int32_t id = nghttp2_submit_request(c->s, NULL, nv, 6, &prd, ws);
        if (id < 0) {
            g_conn_errors++;
            note_error("conn %d: submit watch stream: %s", c->idx,
                       nghttp2_strerror(id));
            continue;
        }
        ws->stream_id = id;
        ws->open = true;
        W.open_streams++;
    }
}

/* WatchRequest{create_request(1){key(1), range_end(2)}}, gRPC-framed;
 * start_revision 0 (now) is the proto3 default and so left out. */
static size_t w_create_request(uint8_t *buf, const uint8_t *key, size_t klen,
                               const uint8_t *end, size_t elen)
{
    size_t inner = 1 + varint_len(klen) + klen;
    if (end)
        inner += 1 + varint_len(elen) + elen;
    size_t mlen = 1 + varint_len(inner) + inner;
    uint8_t *p = buf;
    *p++ = 0;
    *p++ = (uint8_t)(mlen >> 24);
    *p++ = (uint8_t)(mlen >> 16);
    *p++ = (uint8_t)(mlen >> 8);
    *p++ = (uint8_t)mlen;
    *p++ = 0x0a;
    p += pb_put_varint(p, inner);
    *p++ = 0x0a;
    p += pb_put_varint(p, klen);
    memcpy(p, key, klen);
    p += klen;
    if (end) {
        *p++ = 0x12;
        p += pb_put_varint(p, elen);
        memcpy(p, end, elen);
        p += elen;
    }
    return (size_t)(p - buf);
}

/* VmRSS and RssAnon of --server-pid, in kB (0 if unknown). */
static void read_rss(long pid, uint64_t *rss, uint64_t *anon)
{
    char path[64], line[256];
    *rss = *anon = 0;
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        note_error("cannot read %s: %s", path, strerror(errno));
        return;
    }
    while (fgets(line, sizeof line, f)) {
        unsigned long long v;
        if (sscanf(line, "VmRSS: %llu", &v) == 1)
            *rss = v;
        else if (sscanf(line, "RssAnon: %llu", &v) == 1)
            *anon = v;
    }
    fclose(f);
}

static double cpu_secs(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* One epoll round over receivers, writers and the pacing timer. */
static void w_poll(int tfd, int timeout_ms)
{
    struct epoll_event evs[64];
    int n = epoll_wait(g_epfd, evs, 64, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait: %s", strerror(errno));
    uint64_t t0 = now_ns();
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) { /* the pacing timer */
            uint64_t ticks;
            if (read(tfd, &ticks, sizeof ticks) < 0 && errno != EAGAIN)
                die("read timerfd: %s", strerror(errno));
            continue;
        }
        conn_t *c = evs[i].data.ptr;
        if (c->dead)
            continue;
        if (conn_read(c) < 0)
            continue;
        conn_flush(c);
    }
    /* Data that arrives while we are busy waits in the kernel, so a long
     * iteration means receive times (and latencies) include our own lag. */
    uint64_t busy = now_ns() - t0;
    if (W.loading && busy > W.loop_max_ns)
        W.loop_max_ns = busy;
}

static bool w_receivers_alive(void)
{
    for (int i = 0; i < cfg.conns; i++)
        if (!W.conns[i].dead)
            return true;
    return false;
}

static int run_watch(void)
{
    const int S = cfg.watch_streams;
    const uint64_t stall_ns = (uint64_t)(cfg.stall_secs * 1e9);
    uint64_t rss0 = 0, anon0 = 0, rss1 = 0, anon1 = 0;

    if (cfg.server_pid)
        read_rss(cfg.server_pid, &rss0, &anon0);

    /* The watched key, or the prefix and its range end. */
    const uint8_t *key = (const uint8_t *)cfg.watch_key;
    size_t klen = strlen(cfg.watch_key), elen = 0;
    uint8_t *rend = NULL;
    if (cfg.watch_prefix) {
        rend = xmalloc(klen + 1);
        memcpy(rend, key, klen);
        elen = klen;
        while (elen > 0 && rend[elen - 1] == 0xff)
            elen--;
        if (elen == 0) { /* all 0xff: everything from key on */
            rend[0] = 0;
            elen = 1;
        } else {
            rend[elen - 1]++;
        }
    }
    size_t create_max = 5 + 2 * (1 + 10) + 2 * (1 + 10 + klen + 1);

    W.conns = xmalloc((size_t)cfg.conns * sizeof *W.conns);
    W.streams = xmalloc((size_t)S * sizeof *W.streams);
    W.watchers = xmalloc((size_t)cfg.watchers * sizeof *W.watchers);
    memset(W.streams, 0, (size_t)S * sizeof *W.streams);
    memset(W.watchers, 0, (size_t)cfg.watchers * sizeof *W.watchers);
    for (int i = 0; i < cfg.conns; i++) {
        conn_open(&W.conns[i], i, 0, CK_WATCH);
        W.conns[i].ws = xmalloc(((size_t)S / (size_t)cfg.conns + 1) *
                                sizeof *W.conns[i].ws);
    }
    for (int i = 0; i < S; i++) {
        wstream_t *ws = &W.streams[i];
        conn_t *c = &W.conns[i % cfg.conns];
        ws->c = c;
        ws->idx = i;
        ws->grpc_status = -1;
        ws->nwatchers = cfg.watchers / S + (i < cfg.watchers % S);
        ws->ids = xmalloc((size_t)ws->nwatchers * sizeof *ws->ids);
        ws->out = xmalloc((size_t)ws->nwatchers * create_max);
        for (int k = 0; k < ws->nwatchers; k++)
            ws->out_len += w_create_request(ws->out + ws->out_len, key, klen,
                                            rend, elen);
        c->ws[c->nws++] = ws;
    }
    for (int i = 0; i < cfg.watchers; i++)
        W.watchers[i].last_rev = -1;

    g_nconns = cfg.writer_conns;
    g_conns = xmalloc((size_t)g_nconns * sizeof *g_conns);
    for (int i = 0; i < g_nconns; i++)
        conn_open(&g_conns[i], cfg.conns + i, cfg.streams, CK_UNARY);

    /* 1. Create every watcher; nothing is written meanwhile. */
    uint64_t t_c0 = now_ns();
    ph.last_progress = t_c0;
    while (W.created < cfg.watchers) {
        uint64_t t = now_ns();
        if (g_interrupted)
            break;
        if (!w_receivers_alive())
            break;
        if (t - ph.last_progress > stall_ns) {
            note_error("timeout: %d of %d watchers created, none more for "
                       "%.1fs", W.created, cfg.watchers, cfg.stall_secs);
            break;
        }
        for (int i = 0; i < cfg.conns; i++) {
            conn_t *c = &W.conns[i];
            if (c->dead)
                continue;
            if (c->ready && !c->ws_opened)
                w_open_streams(c);
            conn_flush(c);
        }
        for (int i = 0; i < g_nconns; i++)
            conn_flush(&g_conns[i]);
        w_poll(-1, 20);
    }
    double create_secs = (double)(now_ns() - t_c0) / 1e9;
    bool created_all = W.created == cfg.watchers;
    if (created_all && !cfg.quiet)
        fprintf(stderr, "cairn-bench: %d watchers on %d streams created in "
                "%.2fs (revision %" PRId64 ")\n", W.created, S, create_secs,
                W.base_rev);
    if (created_all && cfg.server_pid)
        read_rss(cfg.server_pid, &rss1, &anon1);
    for (int i = 0; i < S; i++) {
        wstream_t *ws = &W.streams[i];
        qsort(ws->ids, (size_t)ws->ncreated, sizeof *ws->ids, cmp_widmap);
        for (int k = 1; k < ws->ncreated; k++)
            if (ws->ids[k].id == ws->ids[k - 1].id)
                note_error("server gave two watchers on one stream the same "
                           "watch_id");
        ws->sorted = true;
    }

    /* 2. Paced puts; every event is timed against its revision's put. */
    uint64_t max_puts = cfg.total;
    if (cfg.duration > 0) {
        double d = cfg.duration * cfg.rate + 1;
        if (d > 1e9)
            die("--rate x --duration is more than 1e9 puts");
        if (!max_puts || (uint64_t)d < max_puts)
            max_puts = (uint64_t)d;
    }
    phase_reset(OP_PUT, max_puts, true, false);
    ph.paced = true;
    W.nrev = max_puts;
    W.send_t = xmalloc(W.nrev * sizeof *W.send_t);
    W.pend_head = xmalloc(W.nrev * sizeof *W.pend_head);
    memset(W.send_t, 0, W.nrev * sizeof *W.send_t);
    memset(W.pend_head, 0, W.nrev * sizeof *W.pend_head);

    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create: %s", strerror(errno));
    uint64_t period = (uint64_t)(1e9 / cfg.rate);
    if (period == 0)
        period = 1;
    struct itimerspec its = {
        .it_interval = {(time_t)(period / 1000000000u),
                        (long)(period % 1000000000u)},
        .it_value = {(time_t)(period / 1000000000u),
                     (long)(period % 1000000000u)},
    };
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, tfd, &tev) != 0)
        die("epoll_ctl: %s", strerror(errno));

    uint64_t t_puts_done = 0, expected = 0;
    double cpu0 = cpu_secs();
    ph.t_start = ph.last_progress = now_ns();
    if (cfg.duration > 0)
        ph.deadline = ph.t_start + (uint64_t)(cfg.duration * 1e9);
    W.loading = created_all;
    if (created_all && timerfd_settime(tfd, 0, &its, NULL) != 0)
        die("timerfd_settime: %s", strerror(errno));
    while (created_all) {
        uint64_t t = now_ns();
        if (can_issue(t))
            for (int i = 0; i < g_nconns; i++)
                if (!g_conns[i].goaway) {
                    conn_refill(&g_conns[i]);
                    conn_flush(&g_conns[i]);
                }
        bool issuing_over = g_interrupted || g_usable == 0 ||
                            (ph.total && ph.issued >= ph.total) ||
                            (ph.deadline && t >= ph.deadline);
        if (!t_puts_done && issuing_over && g_inflight == 0) {
            t_puts_done = t;
            struct itimerspec off = {0};
            timerfd_settime(tfd, 0, &off, NULL);
        }
        expected = ph.ok * (uint64_t)cfg.watchers;
        if (t_puts_done) {
            if (W.events >= expected || g_interrupted)
                break;
            if (t - t_puts_done > (uint64_t)(cfg.drain_secs * 1e9)) {
                note_error("drain: %" PRIu64 " of %" PRIu64 " events "
                           "delivered %.1fs after the last put", W.events,
                           expected, cfg.drain_secs);
                break;
            }
        }
        if (!w_receivers_alive())
            break;
        if (g_inflight > 0 && t - ph.last_progress > stall_ns) {
            char why[80];
            snprintf(why, sizeof why, "timeout: no put completed for %.1fs",
                     cfg.stall_secs);
            for (int i = 0; i < g_nconns; i++)
                if (!g_conns[i].dead)
                    conn_error(&g_conns[i], "%s", why);
        }
        w_poll(tfd, 20);
    }
    uint64_t t_end = now_ns();
    double cpu = cpu_secs() - cpu0;
    expected = ph.ok * (uint64_t)cfg.watchers;

    /* Shut down; streams and connections ending now are not errors. */
    W.shutting_down = true;
    for (int i = 0; i < cfg.conns + g_nconns; i++) {
        conn_t *c = i < cfg.conns ? &W.conns[i] : &g_conns[i - cfg.conns];
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
    close(tfd);

    /* Events whose put never reported its revision have no latency. */
    uint64_t unresolved = 0;
    for (uint64_t i = 0; i < W.nrev; i++)
        for (uint32_t k = W.pend_head[i]; k; k = W.pend[k - 1].next)
            unresolved++;
    if (unresolved)
        note_error_n(unresolved, "event for a put whose response never came");
    if (created_all) {
        uint64_t off = 0;
        for (int i = 0; i < cfg.watchers; i++)
            off += W.watchers[i].events != ph.ok;
        if (off)
            note_error_n(off, "watcher did not get exactly one event per put");
    }
    if (created_all && W.events > expected)
        note_error("%" PRIu64 " more events than puts x watchers",
                   W.events - expected);

    /* The writer could not keep the rate (e.g. --streams too low for the
     * server's put latency): latencies are still right, load is lower. */
    double put_secs = (double)(ph.t_last_issue - ph.t_start) / 1e9;
    double sched = ph.issued ? (double)(ph.issued - 1) / cfg.rate : 0;
    if (ph.issued > 1 && put_secs > sched * 1.1 + 0.2 && !cfg.quiet)
        fprintf(stderr, "cairn-bench: note: writer fell behind: %" PRIu64
                " puts took %.2fs, schedule was %.2fs\n", ph.issued,
                put_secs, sched);

    uint64_t t_last = W.t_last_event > ph.t_start ? W.t_last_event : t_end;
    double secs = (double)(t_last - ph.t_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    double wall = (double)(t_end - ph.t_start) / 1e9;
    uint64_t nerrors = g_errs_other;
    for (int i = 0; i < g_nerrs; i++)
        nerrors += g_errs[i].n;
    qsort(ph.lat, ph.nlat, sizeof *ph.lat, cmp_u64);
    print_errors(stderr);
    if (g_interrupted)
        fprintf(stderr, "cairn-bench: interrupted\n");

    printf("op=watch watchers=%d streams=%d conns=%d puts=%" PRIu64
           " events=%" PRIu64 " expected=%" PRIu64 " secs=%.3f"
           " events_per_s=%.0f p50_us=%.0f p99_us=%.0f p999_us=%.0f"
           " max_us=%.0f rate=%.0f put_errors=%" PRIu64 " errors=%" PRIu64
           " conn_errors=%" PRIu64 " create_secs=%.3f client_cpu=%.2f"
           " loop_max_ms=%.1f samples=%zu",
           cfg.watchers, S, cfg.conns, ph.ok, W.events, expected, secs,
           (double)W.events / secs, pct_us(500), pct_us(990), pct_us(999),
           ph.nlat ? (double)ph.lat[ph.nlat - 1] / 1000.0 : 0.0, cfg.rate,
           ph.errors, nerrors, g_conn_errors,
           create_secs, wall > 0 ? cpu / wall : 0.0,
           (double)W.loop_max_ns / 1e6, ph.nlat);
    if (cfg.server_pid)
        printf(" rss_before_kb=%" PRIu64 " rss_after_kb=%" PRIu64
               " anon_before_kb=%" PRIu64 " anon_after_kb=%" PRIu64,
               rss0, rss1, anon0, anon1);
    printf("\n");
    fflush(stdout);
    bool bad = !created_all || W.events < expected || g_nerrs > 0 ||
               g_errs_other > 0 || ph.errors || g_conn_errors ||
               g_interrupted;
    return bad ? 1 : 0;
}

/* ----------------------------------------------------------- lease modes */

/* Every lease this run granted, in grant order. */
static struct {
    int64_t *ids;
    uint64_t *kidx;       /* lease-expire: the key index n of each lease */
    uint64_t n, cap;
    bool chain;           /* lease-expire load: put a key on each lease */
    uint64_t chain_next;  /* first lease whose put is not yet sent */
    uint64_t first_due, last_due; /* ns: grant response + granted TTL */
    int64_t ttl_min, ttl_max;     /* as granted (servers raise small TTLs) */
} L;

static void lease_granted(slot_t *sl, uint64_t t)
{
    if (L.n == L.cap) {
        L.cap = L.cap ? L.cap * 2 : 4096;
        L.ids = xrealloc(L.ids, L.cap * sizeof *L.ids);
        L.kidx = xrealloc(L.kidx, L.cap * sizeof *L.kidx);
    }
    L.ids[L.n] = sl->lease;
    L.kidx[L.n] = sl->idx;
    L.n++;
    /* The server set the deadline before it answered, so this is at or
     * after it (by at most the grant's latency). */
    uint64_t due = t + (uint64_t)sl->resp_ttl * 1000000000ull;
    if (!L.first_due || due < L.first_due)
        L.first_due = due;
    if (due > L.last_due)
        L.last_due = due;
    if (!L.ttl_min || sl->resp_ttl < L.ttl_min)
        L.ttl_min = sl->resp_ttl;
    if (sl->resp_ttl > L.ttl_max)
        L.ttl_max = sl->resp_ttl;
}

static bool lease_chain_pending(void)
{
    return L.chain && L.chain_next < L.n;
}

/* The next lease that still needs its key put; taken once sent. */
static bool lease_chain_peek(int64_t *lease, uint64_t *n)
{
    if (!lease_chain_pending())
        return false;
    *lease = L.ids[L.chain_next];
    *n = L.kidx[L.chain_next];
    return true;
}

static void lease_chain_take(void)
{
    L.chain_next++;
}

static int64_t lease_id_at(uint64_t i)
{
    return L.ids[i];
}

/* An unmeasured phase of @total requests of kind @op over g_conns, which
 * a --duration must not cut short.  Returns true if all succeeded. */
static bool run_setup(enum op op, uint64_t total)
{
    double saved = cfg.duration;
    uint64_t conn_errors = g_conn_errors;
    cfg.duration = 0;
    phase_reset(op, total, true, false);
    run_phase();
    cfg.duration = saved;
    return ph.errors == 0 && ph.ok == ph.total + ph.ok_op[OP_EXP_PUT] &&
           g_conn_errors == conn_errors && !g_interrupted;
}

/* --revoke: LeaseRevoke every lease granted so far (unmeasured). */
static bool revoke_all(void)
{
    if (L.n == 0)
        return true;
    L.chain = false;
    bool ok = run_setup(OP_LEASE_REVOKE, L.n);
    if (!cfg.quiet)
        fprintf(stderr, "cairn-bench: revoked %" PRIu64 " of %" PRIu64
                " leases in %.2fs\n", ph.ok, L.n,
                (double)(ph.t_end - ph.t_start) / 1e9);
    return ok;
}

/* Polite shutdown of @n connections: tell the server we're done. */
static void conns_shutdown(conn_t *cs, int n)
{
    for (int i = 0; i < n; i++) {
        conn_t *c = &cs[i];
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
}

static void open_unary_conns(int n, int streams)
{
    g_nconns = n;
    g_conns = xmalloc((size_t)n * sizeof *g_conns);
    for (int i = 0; i < n; i++)
        conn_open(&g_conns[i], i, streams, CK_UNARY);
}

/* Grants --leases leases over g_conns (lease-keepalive); dies on failure. */
static void grant_leases(void)
{
    bool ok = run_setup(OP_LEASE_GRANT, cfg.leases);
    double secs = (double)(ph.t_end - ph.t_start) / 1e9;
    if (!ok || L.n != cfg.leases) {
        print_errors(stderr);
        die("granting %" PRIu64 " leases failed (%" PRIu64 " granted)",
            cfg.leases, L.n);
    }
    if (!cfg.quiet)
        fprintf(stderr, "cairn-bench: %" PRIu64 " leases granted (TTL %"
                PRId64 "s) in %.2fs\n", L.n, L.ttl_max, secs);
}

/* ------------------------------------------------- lease-keepalive */

/* One bidirectional LeaseKeepAlive stream.  The server answers requests in
 * order, so the requests in flight form a FIFO (a ring of --streams). */
typedef struct kastream {
    conn_t *c;
    int32_t stream_id; /* 0 until submitted */
    bool open;         /* submitted and not closed */
    bool deferred;     /* the data provider is waiting for requests */
    grpc_rx_t rx;
    uint8_t *out;      /* framed requests not yet taken by nghttp2 */
    size_t out_len, out_off, out_cap;
    int64_t *fid;      /* FIFO: lease ID and send time of each request */
    uint64_t *ft0;
    int fhead, fcount;
    int http_status, grpc_status;
    char grpc_msg[160];
} kastream_t;

static bool g_ka_shutting_down; /* stream ends are no longer errors */

static kastream_t *ka_stream_of(conn_t *c, int32_t stream_id)
{
    kastream_t *ks = c->ka;
    return ks && ks->stream_id == stream_id ? ks : NULL;
}

static void ka_on_header(conn_t *c, int32_t stream_id, const uint8_t *name,
                         size_t namelen, const uint8_t *value, size_t valuelen)
{
    kastream_t *ks = ka_stream_of(c, stream_id);
    if (!ks)
        return;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        ks->http_status = atoi((const char *)value);
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        ks->grpc_status = atoi((const char *)value);
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        size_t n = valuelen < sizeof ks->grpc_msg - 1 ? valuelen
                                                      : sizeof ks->grpc_msg - 1;
        memcpy(ks->grpc_msg, value, n);
        ks->grpc_msg[n] = 0;
    }
}

/* LeaseKeepAliveResponse: 1 header, 2 ID, 3 TTL.  It answers the oldest
 * request in flight on its stream. */
static void ka_message(void *arg, const uint8_t *m, size_t len)
{
    kastream_t *ks = arg;
    const uint8_t *p = m, *end = m + len;
    int64_t id = 0, ttl = 0;
    bool malformed = false;
    uint64_t t = g_recv_t;

    while (p < end) {
        uint32_t f, wt;
        uint64_t v = 0;
        const uint8_t *d = NULL;
        size_t dl = 0, n = pb_next_field(p, (size_t)(end - p), &f, &wt, &v,
                                         &d, &dl);
        if (!n) {
            malformed = true;
            break;
        }
        if (f == 2 && wt == 0)
            id = (int64_t)v;
        else if (f == 3 && wt == 0)
            ttl = (int64_t)v;
        p += n;
    }
    ph.last_progress = t;
    if (ks->fcount == 0) {
        note_error("keep-alive response with no request in flight");
        return;
    }
    int64_t want = ks->fid[ks->fhead];
    uint64_t t0 = ks->ft0[ks->fhead];
    ks->fhead = (ks->fhead + 1) % cfg.streams;
    ks->fcount--;
    ph.completed++;
    if (malformed) {
        ph.errors++;
        note_error("malformed LeaseKeepAliveResponse");
    } else if (id != want) {
        ph.errors++;
        note_error("keep-alive response for another lease than the oldest "
                   "request in flight");
    } else if (ttl <= 0) {
        ph.errors++;
        note_error("keep-alive answered TTL %" PRId64 " (lease not found "
                   "or expired)", ttl);
    } else {
        ph.ok++;
        record_latency(t > t0 ? t - t0 : 0);
    }
}

static void ka_on_data(conn_t *c, int32_t stream_id, const uint8_t *data,
                       size_t len)
{
    kastream_t *ks = ka_stream_of(c, stream_id);
    if (ks)
        grpc_rx_feed(&ks->rx, data, len, "LeaseKeepAliveResponse",
                     ka_message, ks);
}

static void ka_stream_ended(kastream_t *ks, const char *why)
{
    if (!ks->open)
        return;
    ks->open = false;
    if (ks->fcount) {
        ph.errors += (uint64_t)ks->fcount;
        ph.completed += (uint64_t)ks->fcount;
        note_error_n((uint64_t)ks->fcount, "keep-alive in flight when its "
                     "stream ended (%s)", why);
        ks->fcount = 0;
    }
    if (g_ka_shutting_down)
        return;
    if (ks->grpc_status >= 0)
        note_error("keep-alive stream ended by the server (%s): HTTP %d, "
                   "grpc-status %d (%s): %s", why, ks->http_status,
                   ks->grpc_status, grpc_code_name(ks->grpc_status),
                   ks->grpc_msg);
    else
        note_error("keep-alive stream ended (%s), HTTP :status %d", why,
                   ks->http_status);
}

static void ka_on_close(conn_t *c, int32_t stream_id, uint32_t error_code)
{
    kastream_t *ks = ka_stream_of(c, stream_id);
    if (ks)
        ka_stream_ended(ks, error_code == NGHTTP2_NO_ERROR
                                ? "stream closed"
                                : nghttp2_http2_strerror(error_code));
}

static void ka_conn_closed(conn_t *c, const char *why)
{
    if (c->ka)
        ka_stream_ended(c->ka, why);
}

static ssize_t ka_read_cb(nghttp2_session *s, int32_t stream_id, uint8_t *buf,
                          size_t length, uint32_t *flags,
                          nghttp2_data_source *src, void *ud)
{
    (void)s; (void)stream_id; (void)flags; (void)ud;
    kastream_t *ks = src->ptr;
    size_t n = ks->out_len - ks->out_off;
    if (n == 0) { /* our side stays open; ka_send resumes us */
        ks->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    if (n > length)
        n = length;
    memcpy(buf, ks->out + ks->out_off, n);
    ks->out_off += n;
    if (ks->out_off == ks->out_len)
        ks->out_off = ks->out_len = 0;
    return (ssize_t)n;
}

static void ka_open(conn_t *c)
{
    size_t nvlen;
    const nghttp2_nv *nv =
        request_headers(request_path(OP_LEASE_KEEPALIVE), &nvlen);
    kastream_t *ks = c->ka;
    nghttp2_data_provider prd = {.source.ptr = ks, .read_callback = ka_read_cb};
    int32_t id = nghttp2_submit_request(c->s, NULL, nv, nvlen, &prd, ks);
    if (id < 0) {
        g_conn_errors++;
        note_error("conn %d: submit keep-alive stream: %s", c->idx,
                   nghttp2_strerror(id));
        conn_close(c, "keep-alive stream not submitted");
        return;
    }
    ks->stream_id = id;
    ks->open = true;
}

/* Queues LeaseKeepAliveRequest{1: ID}, sent at the next flush. */
static void ka_send(kastream_t *ks, int64_t id, uint64_t t)
{
    if (ks->out_off && ks->out_off == ks->out_len)
        ks->out_off = ks->out_len = 0;
    if (ks->out_len + 16 > ks->out_cap) {
        ks->out_cap = ks->out_cap ? ks->out_cap * 2 : 4096;
        ks->out = xrealloc(ks->out, ks->out_cap);
    }
    uint8_t *p = ks->out + ks->out_len;
    uint32_t mlen = (uint32_t)(1 + varint_len((uint64_t)id));
    p[0] = 0;
    p[1] = (uint8_t)(mlen >> 24);
    p[2] = (uint8_t)(mlen >> 16);
    p[3] = (uint8_t)(mlen >> 8);
    p[4] = (uint8_t)mlen;
    p[5] = 0x08;
    pb_put_varint(p + 6, (uint64_t)id);
    ks->out_len += 5 + mlen;
    int k = (ks->fhead + ks->fcount) % cfg.streams;
    ks->fid[k] = id;
    ks->ft0[k] = t;
    ks->fcount++;
    if (ks->deferred) {
        ks->deferred = false;
        int rv = nghttp2_session_resume_data(ks->c->s, ks->stream_id);
        if (rv != 0)
            note_error("conn %d: resume keep-alive stream: %s", ks->c->idx,
                       nghttp2_strerror(rv));
    }
}

static int run_keepalive(void)
{
    const uint64_t stall_ns = (uint64_t)(cfg.stall_secs * 1e9);

    /* 1. The leases, granted over --conns x --streams (unmeasured). */
    open_unary_conns(cfg.conns, cfg.streams);
    grant_leases();

    /* 2. One keep-alive stream per connection, --streams in flight each,
     * cycling over the leases. */
    conn_t *kc = xmalloc((size_t)cfg.conns * sizeof *kc);
    kastream_t *kss = xmalloc((size_t)cfg.conns * sizeof *kss);
    memset(kss, 0, (size_t)cfg.conns * sizeof *kss);
    for (int i = 0; i < cfg.conns; i++) {
        conn_open(&kc[i], cfg.conns + i, 0, CK_KA);
        kc[i].ka = &kss[i];
        kss[i].c = &kc[i];
        kss[i].grpc_status = -1;
        kss[i].fid = xmalloc((size_t)cfg.streams * sizeof *kss[i].fid);
        kss[i].ft0 = xmalloc((size_t)cfg.streams * sizeof *kss[i].ft0);
    }
    phase_reset(OP_LEASE_KEEPALIVE, cfg.total, true, true);
    double cpu0 = cpu_secs();
    ph.t_start = ph.last_progress = now_ns();
    if (cfg.duration > 0)
        ph.deadline = ph.t_start + (uint64_t)(cfg.duration * 1e9);
    for (;;) {
        uint64_t t = now_ns();
        int inflight = 0, live = 0;
        for (int i = 0; i < cfg.conns; i++) {
            conn_t *c = &kc[i];
            kastream_t *ks = c->ka;
            if (c->dead)
                continue;
            if (c->ready && !ks->stream_id)
                ka_open(c);
            if (ks->open)
                while (ks->fcount < cfg.streams && can_issue(t)) {
                    ka_send(ks, lease_id_at(ph.seq_next++ % L.n), t);
                    ph.issued++;
                    ph.t_last_issue = t;
                }
            conn_flush(c);
            inflight += ks->fcount;
            live += !c->dead && (ks->open || !ks->stream_id);
        }
        for (int i = 0; i < g_nconns; i++) /* idle: SETTINGS/PING acks */
            if (!g_conns[i].dead)
                conn_flush(&g_conns[i]);
        if (inflight == 0 && (!can_issue(t) || live == 0))
            break;
        if (t - ph.last_progress > stall_ns) {
            for (int i = 0; i < cfg.conns; i++)
                if (!kc[i].dead)
                    conn_error(&kc[i], "timeout: no keep-alive response "
                               "for %.1fs", cfg.stall_secs);
            break;
        }
        w_poll(-1, 20);
    }
    ph.t_end = now_ns();
    double cpu = cpu_secs() - cpu0;
    g_ka_shutting_down = true;
    conns_shutdown(kc, cfg.conns);

    /* The line first: --revoke reuses ph. */
    qsort(ph.lat, ph.nlat, sizeof *ph.lat, cmp_u64);
    double secs = (double)(ph.t_end - ph.t_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    char line[512];
    snprintf(line, sizeof line,
             "op=lease-keepalive conns=%d streams=%d leases=%" PRIu64
             " ttl=%" PRId64 " total=%" PRIu64 " ok=%" PRIu64
             " errors=%" PRIu64 " conn_errors=%" PRIu64 " secs=%.3f rps=%.0f"
             " p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f"
             " client_cpu=%.2f",
             cfg.conns, cfg.streams, L.n, L.ttl_max, ph.completed, ph.ok,
             ph.errors, g_conn_errors, secs, (double)ph.ok / secs,
             pct_us(500), pct_us(900), pct_us(990), pct_us(999),
             ph.nlat ? (double)ph.lat[ph.nlat - 1] / 1000.0 : 0.0,
             cpu / secs);
    bool bad = ph.errors || g_conn_errors || g_nerrs || g_errs_other ||
               g_interrupted;
    if (cfg.revoke && !g_interrupted && !revoke_all())
        bad = true;
    conns_shutdown(g_conns, g_nconns);
    print_errors(stderr);
    if (g_interrupted)
        fprintf(stderr, "cairn-bench: interrupted\n");
    printf("%s\n", line);
    fflush(stdout);
    return bad || g_nerrs || g_errs_other ? 1 : 0;
}

/* ------------------------------------------------- lease-expire */

static struct {
    conn_t pc;            /* the poller's connection: one request at a time */
    bool inflight;
    uint64_t t_sent;      /* when the count in flight was sent */
    uint64_t polls, poll_errors;
    int64_t last_count;   /* -1 until a count arrived */
    uint64_t t_zero;      /* arrival of the first count of 0 */
    bool want_zero;       /* a count of 0 ends the expiry */
} E;

static void exp_poll_done(slot_t *sl, const char *bad, uint64_t t)
{
    E.inflight = false;
    E.polls++;
    if (bad) {
        E.poll_errors++;
        note_error("count of " EXP_PREFIX " keys: %s", bad);
        return;
    }
    E.last_count = sl->resp_count;
    if (E.want_zero && sl->resp_count == 0 && !E.t_zero)
        E.t_zero = t;
}

static bool exp_poll_submit(void)
{
    conn_t *c = &E.pc;
    if (E.inflight || c->goaway || !c->ready || c->nfree == 0)
        return false;
    slot_t *sl = submit_one(c, OP_EXP_COUNT, 0, 0);
    if (!sl)
        return false;
    E.inflight = true;
    E.t_sent = sl->t0;
    conn_flush(c);
    return true;
}

/* One count, synchronously (before the load).  Returns it, or -1. */
static int64_t exp_count_now(void)
{
    uint64_t t0 = now_ns(), stall_ns = (uint64_t)(cfg.stall_secs * 1e9);
    E.last_count = -1;
    while (!g_interrupted && !E.pc.dead && now_ns() - t0 < stall_ns) {
        if (!E.inflight && E.polls == 0)
            exp_poll_submit();
        if (E.polls)
            break;
        conn_flush(&E.pc); /* the preface and SETTINGS, at first */
        w_poll(-1, 20);
    }
    E.polls = 0;
    return E.last_count;
}

static int run_expire(void)
{
    const uint64_t stall_ns = (uint64_t)(cfg.stall_secs * 1e9);
    char line[1024];

    open_unary_conns(cfg.conns, cfg.streams);
    conn_open(&E.pc, cfg.conns, 1, CK_UNARY);

    /* Leftovers would keep the count above 0 for good. */
    int64_t before = exp_count_now();
    if (before != 0) {
        print_errors(stderr);
        if (before < 0)
            die("could not count the keys under \"" EXP_PREFIX "\"");
        die("%" PRId64 " keys under \"" EXP_PREFIX "\" already exist; "
            "they must go first (another run's leftovers?)", before);
    }

    /* 1. Load: grant each lease and, as soon as it is granted, put its key
     * "exp/<n>" (unmeasured, as fast as --conns x --streams allow). */
    L.chain = true;
    run_setup(OP_LEASE_GRANT, cfg.leases);
    L.chain = false;
    uint64_t t_load0 = ph.t_start, t_load1 = ph.t_end;
    uint64_t granted = ph.ok_op[OP_LEASE_GRANT], keys = ph.ok_op[OP_EXP_PUT];
    uint64_t grant_errors = cfg.leases - granted; /* failed or never sent */
    uint64_t put_errors = ph.err_op[OP_EXP_PUT] + (L.n - L.chain_next);
    if (L.n > L.chain_next)
        note_error_n(L.n - L.chain_next, "put for a granted lease not sent");
    double load_secs = (double)(t_load1 - t_load0) / 1e9;
    if (load_secs <= 0)
        load_secs = 1e-9;
    if (!cfg.quiet)
        fprintf(stderr, "cairn-bench: lease-expire: %" PRIu64 " leases "
                "(TTL %" PRId64 "s) and %" PRIu64 " keys in %.2fs\n", granted,
                L.ttl_max, keys, load_secs);
    if (keys == 0 || g_interrupted) {
        print_errors(stderr);
        die("no lease with a key to expire");
    }

    /* 2. Wait for the first lease to be due. */
    uint64_t t = now_ns();
    if (t > L.first_due && !cfg.quiet)
        fprintf(stderr, "cairn-bench: note: the first lease was due %.2fs "
                "before the load ended (--ttl below the load time)\n",
                (double)(t - L.first_due) / 1e9);
    while (!g_interrupted && (t = now_ns()) < L.first_due) {
        uint64_t ms = (L.first_due - t + 999999) / 1000000;
        w_poll(-1, ms > 20 ? 20 : (int)ms);
    }

    /* 3. From then on count the keys every 50 ms until none is left, while
     * the writer puts (no lease) at --expire-writer-rate on connection 0. */
    cfg.rate = cfg.expire_writer_rate;
    phase_reset(OP_PUT, 0, false, true);
    ph.paced = true;
    E.want_zero = true;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0)
        die("timerfd_create: %s", strerror(errno));
    uint64_t period = (uint64_t)(1e9 / cfg.rate);
    if (period == 0)
        period = 1;
    struct itimerspec its = {
        .it_interval = {(time_t)(period / 1000000000u),
                        (long)(period % 1000000000u)},
        .it_value = {(time_t)(period / 1000000000u),
                     (long)(period % 1000000000u)},
    }, off = {0};
    struct epoll_event tev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, tfd, &tev) != 0 ||
        timerfd_settime(tfd, 0, &its, NULL) != 0)
        die("timerfd: %s", strerror(errno));
    uint64_t t_meas = now_ns(), next_poll = t_meas, t_stop = 0;
    uint64_t timeout_ns = (uint64_t)(cfg.expire_timeout * 1e9);
    conn_t *wc = &g_conns[0];
    ph.t_start = ph.last_progress = t_meas;
    for (;;) {
        t = now_ns();
        if (!t_stop && (E.t_zero || g_interrupted || E.pc.dead || wc->dead ||
                        t - L.first_due > timeout_ns)) {
            t_stop = t;
            timerfd_settime(tfd, 0, &off, NULL);
            if (!E.t_zero && !g_interrupted)
                note_error("expiry not over: %" PRId64 " keys left %.1fs "
                           "after the first lease was due%s", E.last_count,
                           (double)(t - L.first_due) / 1e9,
                           E.pc.dead || wc->dead ? " (connection lost)"
                                                 : " (--expire-timeout)");
        }
        if (!t_stop) {
            if (!wc->goaway) {
                conn_refill(wc);
                conn_flush(wc);
            }
            if (!E.inflight && t >= next_poll && exp_poll_submit())
                next_poll = t + EXP_POLL_NS;
        }
        if (t_stop && g_inflight == 0)
            break;
        /* Watchdogs: the writer's puts and the count in flight (both
         * stamped after t was read, possibly). */
        t = now_ns();
        if (wc->inflight && t > ph.last_progress &&
            t - ph.last_progress > stall_ns)
            conn_error(wc, "timeout: no put completed for %.1fs",
                       cfg.stall_secs);
        if (E.inflight && t > E.t_sent && t - E.t_sent > stall_ns)
            conn_error(&E.pc, "timeout: count not answered for %.1fs",
                       cfg.stall_secs);
        int ms = 20;
        if (!t_stop && !E.inflight) {
            uint64_t left = next_poll > t ? next_poll - t : 0;
            ms = (int)((left + 999999) / 1000000);
            if (ms > 20)
                ms = 20;
        }
        w_poll(tfd, ms);
    }
    close(tfd);
    conns_shutdown(g_conns, g_nconns);
    conns_shutdown(&E.pc, 1);

    qsort(ph.lat, ph.nlat, sizeof *ph.lat, cmp_u64);
    uint64_t t_end = E.t_zero ? E.t_zero : t_stop;
    double expire_secs = (double)((int64_t)(t_end - L.first_due)) / 1e9;
    double lag_secs = ((double)t_end - (double)L.last_due) / 1e9;
    double wsecs = (double)(t_stop - t_meas) / 1e9;
    if (wsecs <= 0)
        wsecs = 1e-9;
    uint64_t nerrors = g_errs_other;
    for (int i = 0; i < g_nerrs; i++)
        nerrors += g_errs[i].n;
    snprintf(line, sizeof line,
             "op=lease-expire leases=%" PRIu64 " ttl=%" PRId64 " conns=%d"
             " streams=%d val_size=%zu granted=%" PRIu64 " keys=%" PRIu64
             " grant_errors=%" PRIu64 " put_errors=%" PRIu64
             " load_secs=%.3f grant_rps=%.0f due_spread_secs=%.3f"
             " expire_secs=%.3f lag_secs=%.3f expired=%s left=%" PRId64
             " polls=%" PRIu64 " writer_rate=%.0f writer_puts=%" PRIu64
             " writer_errors=%" PRIu64 " writer_rps=%.0f writer_p50_us=%.0f"
             " writer_p99_us=%.0f writer_max_us=%.0f errors=%" PRIu64
             " conn_errors=%" PRIu64,
             cfg.leases, L.ttl_max, cfg.conns, cfg.streams, cfg.val_size,
             granted, keys, grant_errors, put_errors, load_secs,
             (double)granted / load_secs,
             (double)(L.last_due - L.first_due) / 1e9, expire_secs, lag_secs,
             E.t_zero ? "yes" : "no", E.last_count, E.polls,
             cfg.expire_writer_rate, ph.ok, ph.errors,
             (double)ph.ok / wsecs, pct_us(500), pct_us(990),
             ph.nlat ? (double)ph.lat[ph.nlat - 1] / 1000.0 : 0.0, nerrors,
             g_conn_errors);
    print_errors(stderr);
    if (g_interrupted)
        fprintf(stderr, "cairn-bench: interrupted\n");
    printf("%s\n", line);
    fflush(stdout);
    bool bad = !E.t_zero || nerrors || grant_errors || put_errors ||
               ph.errors || g_conn_errors || g_interrupted;
    return bad ? 1 : 0;
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
        "  --op OP                put, range, watch, lease-grant,\n"
        "                         lease-keepalive or lease-expire (default put)\n"
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
        "  --range-prefix N       range: Range the key's first key-size - N\n"
        "                         bytes as a prefix (10^N keys) instead of\n"
        "                         the key; with --prefill the count is checked\n"
        "  --timeout SECS         fail in-flight requests after SECS without\n"
        "                         any response (default 10)\n"
        "  --seed N               random seed\n"
        "  --quiet                no progress notes on stderr\n"
        "watch fan-out (--op watch): --conns receiver connections carry\n"
        "--watch-streams Watch streams carrying --watchers watchers on one key;\n"
        "once all exist, a writer puts to that key at --rate and every event's\n"
        "latency (arrival - send time of its put) is recorded:\n"
        "  --watchers N           watchers in total (default 1000)\n"
        "  --watch-streams N      Watch streams in total (default: --conns)\n"
        "  --watch-key K          the watched key (default cairn-bench/watch)\n"
        "  --watch-prefix         watch K as a prefix; puts go to K + index\n"
        "                         over --keys keys (--key-size digits)\n"
        "  --rate N               puts per second, paced (default 100)\n"
        "  --writer-conns N       writer connections (default 1); --streams\n"
        "                         is their in-flight put limit (default 64)\n"
        "  --drain SECS           wait this long after the last put for the\n"
        "                         missing events (default 10)\n"
        "  --server-pid PID       report PID's VmRSS/RssAnon before and after\n"
        "                         creating the watchers\n"
        "  --lat-samples N        latency reservoir size (default 4194304)\n"
        "leases:\n"
        "  --ttl SECS             LeaseGrant TTL (default 600; lease-expire 2)\n"
        "  --revoke               lease-grant/-keepalive: revoke every lease\n"
        "                         granted once measured (unmeasured)\n"
        "  --leases N             lease-keepalive/-expire: leases granted\n"
        "                         first (default 1000)\n"
        "lease-grant: LeaseGrant requests, timed like put.\n"
        "lease-keepalive: after granting --leases, one LeaseKeepAlive stream per\n"
        "connection keeps --streams requests in flight, cycling over the leases.\n"
        "lease-expire: grants --leases leases with --ttl, each with one key\n"
        "\"exp/<n>\" (over --conns x --streams), then counts those keys every\n"
        "50 ms from the moment the first lease is due until none is left, while a\n"
        "writer puts at a paced rate:\n"
        "  --expire-writer-rate N puts/s during the expiry (default 1000)\n"
        "  --expire-timeout SECS  give up this long after the first lease is\n"
        "                         due (default 300)\n"
        "Prints one summary line on stdout; exits 1 if any request failed\n"
        "(watch: or fewer events than puts x watchers arrived).\n");
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
           O_SEED, O_QUIET, O_HELP, O_WATCHERS, O_WSTREAMS, O_WKEY, O_WPREFIX,
           O_RATE, O_WCONNS, O_DRAIN, O_SPID, O_LATCAP, O_TTL, O_LEASES,
           O_REVOKE, O_EWRATE, O_ETIMEOUT, O_RPREFIX };
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
        {"range-prefix", required_argument, 0, O_RPREFIX},
        {"sequential", no_argument, 0, O_SEQ},
        {"timeout", required_argument, 0, O_TIMEOUT},
        {"seed", required_argument, 0, O_SEED},
        {"quiet", no_argument, 0, O_QUIET},
        {"help", no_argument, 0, O_HELP},
        {"watchers", required_argument, 0, O_WATCHERS},
        {"watch-streams", required_argument, 0, O_WSTREAMS},
        {"watch-key", required_argument, 0, O_WKEY},
        {"watch-prefix", no_argument, 0, O_WPREFIX},
        {"rate", required_argument, 0, O_RATE},
        {"writer-conns", required_argument, 0, O_WCONNS},
        {"drain", required_argument, 0, O_DRAIN},
        {"server-pid", required_argument, 0, O_SPID},
        {"lat-samples", required_argument, 0, O_LATCAP},
        {"ttl", required_argument, 0, O_TTL},
        {"leases", required_argument, 0, O_LEASES},
        {"revoke", no_argument, 0, O_REVOKE},
        {"expire-writer-rate", required_argument, 0, O_EWRATE},
        {"expire-timeout", required_argument, 0, O_ETIMEOUT},
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
        case O_OP: {
            int k = 0;
            while (k <= OP_LEASE_EXPIRE && strcmp(optarg, op_names[k]) != 0)
                k++;
            if (k > OP_LEASE_EXPIRE)
                die("--op must be put, range, watch, lease-grant, "
                    "lease-keepalive or lease-expire");
            cfg.op = (enum op)k;
            break;
        }
        case O_CONNS: cfg.conns = (int)parse_u64("--conns", optarg); break;
        case O_STREAMS:
            cfg.streams = (int)parse_u64("--streams", optarg);
            cfg.streams_set = true;
            break;
        case O_KEYSIZE: cfg.key_size = parse_u64("--key-size", optarg); break;
        case O_VALSIZE: cfg.val_size = parse_u64("--val-size", optarg); break;
        case O_KEYS: cfg.keys = parse_u64("--keys", optarg); break;
        case O_TOTAL: cfg.total = parse_u64("--total", optarg); break;
        case O_DURATION: cfg.duration = parse_secs("--duration", optarg); break;
        case O_PREFILL: cfg.prefill = true; break;
        case O_RPREFIX:
            cfg.range_prefix = (unsigned)parse_u64("--range-prefix", optarg);
            break;
        case O_SERIAL: cfg.serializable = true; break;
        case O_SEQ: cfg.sequential = true; break;
        case O_TIMEOUT: cfg.stall_secs = parse_secs("--timeout", optarg); break;
        case O_SEED: g_rng = parse_u64("--seed", optarg) | 1; break;
        case O_QUIET: cfg.quiet = true; break;
        case O_WATCHERS:
            cfg.watchers = (int)parse_u64("--watchers", optarg);
            break;
        case O_WSTREAMS:
            cfg.watch_streams = (int)parse_u64("--watch-streams", optarg);
            break;
        case O_WKEY: cfg.watch_key = optarg; break;
        case O_WPREFIX: cfg.watch_prefix = true; break;
        case O_RATE: cfg.rate = parse_secs("--rate", optarg); break;
        case O_WCONNS:
            cfg.writer_conns = (int)parse_u64("--writer-conns", optarg);
            break;
        case O_DRAIN: cfg.drain_secs = parse_secs("--drain", optarg); break;
        case O_SPID: cfg.server_pid = (long)parse_u64("--server-pid", optarg); break;
        case O_LATCAP:
            cfg.lat_cap = (size_t)parse_u64("--lat-samples", optarg);
            break;
        case O_TTL:
            cfg.ttl = (int64_t)parse_u64("--ttl", optarg);
            cfg.ttl_set = true;
            break;
        case O_LEASES: cfg.leases = parse_u64("--leases", optarg); break;
        case O_REVOKE: cfg.revoke = true; break;
        case O_EWRATE:
            cfg.expire_writer_rate = parse_secs("--expire-writer-rate", optarg);
            break;
        case O_ETIMEOUT:
            cfg.expire_timeout = parse_secs("--expire-timeout", optarg);
            break;
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
    if (cfg.op == OP_WATCH) {
        if (cfg.watch_streams == 0)
            cfg.watch_streams = cfg.conns;
        if (cfg.watch_streams < 1 || cfg.watch_streams > 1000000)
            die("--watch-streams must be 1..1000000");
        if (cfg.watchers < cfg.watch_streams || cfg.watchers > 100000000)
            die("--watchers must be --watch-streams (%d)..100000000",
                cfg.watch_streams);
        if (cfg.writer_conns < 1 || cfg.writer_conns > 10000)
            die("--writer-conns must be 1..10000");
        if (cfg.watch_key[0] == 0)
            die("--watch-key must not be empty");
        if (cfg.lat_cap < 1)
            die("--lat-samples must be >= 1");
        if (cfg.prefill)
            die("--prefill does not apply to --op watch");
        if (!cfg.streams_set)
            cfg.streams = 64;
        cfg.key_prefix = (const uint8_t *)cfg.watch_key;
        cfg.key_prefix_len = strlen(cfg.watch_key);
        cfg.key_digits = cfg.watch_prefix ? cfg.key_size : 0;
    } else {
        cfg.key_prefix = (const uint8_t *)"";
        cfg.key_digits = cfg.key_size;
    }
    bool lease_op = cfg.op == OP_LEASE_GRANT || cfg.op == OP_LEASE_KEEPALIVE ||
                    cfg.op == OP_LEASE_EXPIRE;
    if (lease_op && cfg.prefill)
        die("--prefill does not apply to --op %s", op_names[cfg.op]);
    if (cfg.revoke && cfg.op != OP_LEASE_GRANT && cfg.op != OP_LEASE_KEEPALIVE)
        die("--revoke applies to --op lease-grant and lease-keepalive");
    if (cfg.op == OP_LEASE_EXPIRE && !cfg.ttl_set)
        cfg.ttl = 2;
    if (cfg.ttl < 1 || cfg.ttl > 9000000000LL) /* etcd's MaxLeaseTTL */
        die("--ttl must be 1..9000000000");
    if (cfg.leases < 1 || cfg.leases > 100000000)
        die("--leases must be 1..100000000");
    cfg.key_len = cfg.key_prefix_len + cfg.key_digits;
    /* Keys are the zero-padded index; it must fit or keys would collide. */
    uint64_t maxidx = cfg.keys - 1;
    size_t digits = 1;
    while (maxidx >= 10) {
        maxidx /= 10;
        digits++;
    }
    if (cfg.key_digits && digits > cfg.key_size)
        die("--key-size %zu too small for --keys %" PRIu64 " (needs %zu)",
            cfg.key_size, cfg.keys, digits);
    if (cfg.range_prefix &&
        (cfg.op != OP_RANGE || cfg.range_prefix >= cfg.key_digits ||
         cfg.range_prefix > 18 || cfg.key_len > 127))
        die("--range-prefix N needs --op range, N < --key-size, N <= 18 and "
            "--key-size <= 127");
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
    if (cfg.op == OP_WATCH)
        return run_watch();
    if (cfg.op == OP_LEASE_KEEPALIVE)
        return run_keepalive();
    if (cfg.op == OP_LEASE_EXPIRE)
        return run_expire();

    open_unary_conns(cfg.conns, cfg.streams);

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

    /* Polite shutdown: tell the server we're done, best effort (after
     * --revoke, which still needs the connections). */
    if (!cfg.revoke)
        conns_shutdown(g_conns, g_nconns);
    qsort(ph.lat, ph.nlat, sizeof *ph.lat, cmp_u64);
    double secs = (double)(ph.t_end - ph.t_start) / 1e9;
    if (secs <= 0)
        secs = 1e-9;
    char line[512];
    int n = 0;
    if (cfg.op == OP_LEASE_GRANT)
        n = snprintf(line, sizeof line, "op=lease-grant conns=%d streams=%d "
                     "ttl=%" PRId64, cfg.conns, cfg.streams,
                     L.ttl_max ? L.ttl_max : cfg.ttl);
    else
        n = snprintf(line, sizeof line, "op=%s conns=%d streams=%d "
                     "key_size=%zu val_size=%zu keys=%" PRIu64,
                     op_names[cfg.op], cfg.conns, cfg.streams, cfg.key_size,
                     cfg.val_size, cfg.keys);
    n += snprintf(line + n, sizeof line - (size_t)n, " total=%" PRIu64
                  " ok=%" PRIu64 " errors=%" PRIu64 " conn_errors=%" PRIu64,
                  ph.completed, ph.ok, ph.errors, g_conn_errors);
    if (cfg.op == OP_RANGE)
        n += snprintf(line + n, sizeof line - (size_t)n, " misses=%" PRIu64,
                      ph.misses);
    if (cfg.op == OP_RANGE && cfg.range_prefix)
        n += snprintf(line + n, sizeof line - (size_t)n,
                      " range_prefix=%u kvs_per_range=%.1f", cfg.range_prefix,
                      ph.ok ? (double)ph.range_kvs / (double)ph.ok : 0.0);
    snprintf(line + n, sizeof line - (size_t)n, " secs=%.3f rps=%.0f"
             " p50_us=%.0f p90_us=%.0f p99_us=%.0f p999_us=%.0f max_us=%.0f",
             secs, (double)ph.ok / secs, pct_us(500), pct_us(900),
             pct_us(990), pct_us(999),
             ph.nlat ? (double)ph.lat[ph.nlat - 1] / 1000.0 : 0.0);
    bool bad = ph.errors || g_conn_errors || g_interrupted;

    /* --revoke reuses ph, so only after the line is made. */
    if (cfg.revoke && !g_interrupted && !revoke_all())
        bad = true;

    conns_shutdown(g_conns, g_nconns);
    print_errors(stderr);
    if (g_interrupted)
        fprintf(stderr, "cairn-bench: interrupted\n");
    printf("%s\n", line);
    fflush(stdout);
    return bad || g_conn_errors ? 1 : 0;
}
