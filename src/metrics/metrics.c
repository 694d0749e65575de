/* Metric primitives, the text exposition format, and etcd's counters as the
 * rest of cairn updates them. Nothing here takes a lock on a hot path:
 * updates are relaxed atomic adds, and a scrape reads whatever values are
 * current (Prometheus asks no more). */
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "apply/apply.h"
#include "core/err.h"
#include "metrics/metrics_int.h"

/* ---- primitives ---- */

int metrics_histogram_init_exp(struct metrics_histogram *h, double start,
                               double factor, int count, double scale)
{
    if (count < 1 || count > METRICS_MAX_BUCKETS || start <= 0 ||
        factor <= 1 || scale <= 0)
        return -EINVAL;
    memset(h, 0, sizeof *h);
    h->nb = count;
    h->scale = scale;
    /* Multiplied step by step as client_golang does, so each bound is the
     * very double etcd prints. */
    for (int i = 0; i < count; i++) {
        h->bounds[i] = start;
        h->raw_bounds[i] = (uint64_t)(start * scale + 0.5);
        start *= factor;
    }
    return 0;
}

void metrics_histogram_observe(struct metrics_histogram *h, uint64_t raw)
{
    int i = 0;
    while (i < h->nb && raw > h->raw_bounds[i]) /* le: upper bound inclusive */
        i++;
    atomic_fetch_add_explicit(&h->counts[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum, raw, memory_order_relaxed);
}

int64_t metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ---- exposition ---- */

void metrics_format_double(char *out, double v)
{
    char tmp[40];
    int p;

    if (isnan(v)) {
        strcpy(out, "NaN");
        return;
    }
    if (isinf(v)) {
        strcpy(out, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        strcpy(out, signbit(v) ? "-0" : "0");
        return;
    }
    /* The fewest significant digits that read back as v. */
    for (p = 1; p < 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v)
            break;
    }
    snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
    int exp = atoi(strchr(tmp, 'e') + 1);
    if (exp < -4 || exp >= 6) {
        /* Go writes at least two exponent digits, as C does. At most 24
         * characters ("-1.2345678901234567e+308"). */
        size_t n = strlen(tmp);
        memcpy(out, tmp, n < 31 ? n : 31);
        out[n < 31 ? n : 31] = 0;
        return;
    }
    int frac = p - 1 - exp;
    snprintf(out, 32, "%.*f", frac > 0 ? frac : 0, v);
}

static void puts_buf(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

/* Escapes @s for a HELP line (@quote = 0) or a label value (@quote = 1). */
static void put_escaped(struct buf *b, const char *s, int quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            puts_buf(b, "\\\\");
        else if (*s == '\n')
            puts_buf(b, "\\n");
        else if (quote && *s == '"')
            puts_buf(b, "\\\"");
        else
            buf_append(b, s, 1);
    }
}

void metrics_write_header(struct buf *b, const char *name, const char *help,
                          const char *type)
{
    puts_buf(b, "# HELP ");
    puts_buf(b, name);
    puts_buf(b, " ");
    put_escaped(b, help, 0);
    puts_buf(b, "\n# TYPE ");
    puts_buf(b, name);
    puts_buf(b, " ");
    puts_buf(b, type);
    puts_buf(b, "\n");
}

void metrics_write_sample(struct buf *b, const char *name, const char *suffix,
                          const struct metrics_label *labels, int nlabels,
                          double v)
{
    char num[32];
    puts_buf(b, name);
    if (suffix)
        puts_buf(b, suffix);
    if (nlabels > 0) {
        puts_buf(b, "{");
        for (int i = 0; i < nlabels; i++) {
            if (i > 0)
                puts_buf(b, ",");
            puts_buf(b, labels[i].name);
            puts_buf(b, "=\"");
            put_escaped(b, labels[i].value, 1);
            puts_buf(b, "\"");
        }
        puts_buf(b, "}");
    }
    metrics_format_double(num, v);
    puts_buf(b, " ");
    puts_buf(b, num);
    puts_buf(b, "\n");
}

void metrics_write_histogram(struct buf *b, const char *name, const char *help,
                             struct metrics_histogram *h)
{
    char le[32];
    uint64_t cum = 0;
    struct metrics_label l = {"le", le};

    metrics_write_header(b, name, help, "histogram");
    for (int i = 0; i <= h->nb; i++) {
        cum += atomic_load_explicit(&h->counts[i], memory_order_relaxed);
        if (i < h->nb)
            metrics_format_double(le, h->bounds[i]);
        else
            strcpy(le, "+Inf");
        metrics_write_sample(b, name, "_bucket", &l, 1, (double)cum);
    }
    /* The count is the +Inf bucket, so the family is self-consistent even
     * while observations land during the scrape. */
    metrics_write_sample(b, name, "_sum", NULL, 0,
                         (double)atomic_load_explicit(&h->sum,
                                                      memory_order_relaxed) /
                             h->scale);
    metrics_write_sample(b, name, "_count", NULL, 0, (double)cum);
}

/* ---- etcd's metrics ---- */

struct metrics_etcd metrics__etcd;

const char *const metrics__code_names[METRICS_NCODES] = {
    "OK",           "Canceled",          "Unknown",
    "InvalidArgument", "DeadlineExceeded", "NotFound",
    "AlreadyExists", "PermissionDenied",  "ResourceExhausted",
    "FailedPrecondition", "Aborted",     "OutOfRange",
    "Unimplemented", "Internal",          "Unavailable",
    "DataLoss",     "Unauthenticated",
};

#define M(svc, m, kind) {.path = "/" svc "/" m, .service = svc, .method = m, .type = kind}
#define U "unary"
#define SS "server_stream"
#define BIDI "bidi_stream"
/* Every method cairn serves (src/rpc/dispatch.c's table), with its stream
 * kind as grpc-go reports it. Like go-grpc-prometheus' InitializeMetrics,
 * all of them are exposed from the start with zeros. */
struct metrics_grpc_method metrics__methods[] = {
    M("etcdserverpb.KV", "Range", U),
    M("etcdserverpb.KV", "Put", U),
    M("etcdserverpb.KV", "DeleteRange", U),
    M("etcdserverpb.KV", "Txn", U),
    M("etcdserverpb.KV", "Compact", U),
    M("etcdserverpb.KV", "RangeStream", SS),
    M("etcdserverpb.Watch", "Watch", BIDI),
    M("etcdserverpb.Lease", "LeaseGrant", U),
    M("etcdserverpb.Lease", "LeaseRevoke", U),
    M("etcdserverpb.Lease", "LeaseKeepAlive", BIDI),
    M("etcdserverpb.Lease", "LeaseTimeToLive", U),
    M("etcdserverpb.Lease", "LeaseLeases", U),
    M("etcdserverpb.Cluster", "MemberAdd", U),
    M("etcdserverpb.Cluster", "MemberRemove", U),
    M("etcdserverpb.Cluster", "MemberUpdate", U),
    M("etcdserverpb.Cluster", "MemberList", U),
    M("etcdserverpb.Cluster", "MemberPromote", U),
    M("etcdserverpb.Maintenance", "Alarm", U),
    M("etcdserverpb.Maintenance", "Status", U),
    M("etcdserverpb.Maintenance", "Defragment", U),
    M("etcdserverpb.Maintenance", "Hash", U),
    M("etcdserverpb.Maintenance", "HashKV", U),
    M("etcdserverpb.Maintenance", "Snapshot", SS),
    M("etcdserverpb.Maintenance", "MoveLeader", U),
    M("etcdserverpb.Maintenance", "Downgrade", U),
    M("etcdserverpb.Auth", "AuthEnable", U),
    M("etcdserverpb.Auth", "AuthDisable", U),
    M("etcdserverpb.Auth", "AuthStatus", U),
    M("etcdserverpb.Auth", "Authenticate", U),
    M("etcdserverpb.Auth", "UserAdd", U),
    M("etcdserverpb.Auth", "UserGet", U),
    M("etcdserverpb.Auth", "UserList", U),
    M("etcdserverpb.Auth", "UserDelete", U),
    M("etcdserverpb.Auth", "UserChangePassword", U),
    M("etcdserverpb.Auth", "UserGrantRole", U),
    M("etcdserverpb.Auth", "UserRevokeRole", U),
    M("etcdserverpb.Auth", "RoleAdd", U),
    M("etcdserverpb.Auth", "RoleGet", U),
    M("etcdserverpb.Auth", "RoleList", U),
    M("etcdserverpb.Auth", "RoleDelete", U),
    M("etcdserverpb.Auth", "RoleGrantPermission", U),
    M("etcdserverpb.Auth", "RoleRevokePermission", U),
    M("v3lockpb.Lock", "Lock", U),
    M("v3lockpb.Lock", "Unlock", U),
    M("v3electionpb.Election", "Campaign", U),
    M("v3electionpb.Election", "Proclaim", U),
    M("v3electionpb.Election", "Leader", U),
    M("v3electionpb.Election", "Observe", SS),
    M("v3electionpb.Election", "Resign", U),
    M("grpc.health.v1.Health", "Check", U),
    M("grpc.health.v1.Health", "Watch", SS),
};
#undef M
const int metrics__nmethods =
    (int)(sizeof metrics__methods / sizeof metrics__methods[0]);

/* Path -> method index + 1, open addressing; built once. */
#define METHOD_SLOTS 256
static uint8_t method_slots[METHOD_SLOTS];
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void init_once_fn(void)
{
    /* etcd's disk histograms: ExponentialBuckets(0.001, 2, 14) seconds. */
    metrics_histogram_init_exp(&metrics__etcd.backend_commit, 0.001, 2, 14, 1e9);
    metrics_histogram_init_exp(&metrics__etcd.wal_fsync, 0.001, 2, 14, 1e9);
    for (int i = 0; i < metrics__nmethods; i++) {
        uint32_t s = hash_str(metrics__methods[i].path) % METHOD_SLOTS;
        while (method_slots[s] != 0)
            s = (s + 1) % METHOD_SLOTS;
        method_slots[s] = (uint8_t)(i + 1);
    }
}

void metrics__init(void)
{
    pthread_once(&init_once, init_once_fn);
}

static struct metrics_grpc_method *method_of(int m)
{
    return m > 0 && m <= metrics__nmethods ? &metrics__methods[m - 1] : NULL;
}

static void count_client_request(struct metrics_client_requests *cr,
                                 const char *ver)
{
    int i;
    for (i = 0; i < cr->used; i++)
        if (strcmp(cr->version[i], ver) == 0)
            break;
    if (i == cr->used) {
        if (cr->used == METRICS_MAX_VERSIONS ||
            strlen(ver) >= sizeof cr->version[0]) {
            metrics_counter_add(&cr->other, 1);
            return;
        }
        strcpy(cr->version[i], ver);
        cr->used++;
    }
    metrics_counter_add(&cr->n[i], 1);
}

int metrics_grpc_started(const char *path, const char *api_version)
{
    metrics__init();
    uint32_t s = hash_str(path) % METHOD_SLOTS;
    int m = 0;
    for (; method_slots[s] != 0; s = (s + 1) % METHOD_SLOTS) {
        if (strcmp(metrics__methods[method_slots[s] - 1].path, path) == 0) {
            m = method_slots[s];
            break;
        }
    }
    struct metrics_grpc_method *gm = method_of(m);
    if (gm == NULL)
        return 0; /* grpc-go answers unknown methods before interceptors */
    metrics_counter_add(&gm->started, 1);
    /* etcd's interceptors: "unknown" when the client sent no version. */
    count_client_request(&metrics__etcd.requests[strcmp(gm->type, U) != 0],
                         api_version && *api_version ? api_version : "unknown");
    return m;
}

void metrics_grpc_msg_received(int method, size_t len)
{
    struct metrics_grpc_method *gm = method_of(method);
    metrics_counter_add(&metrics__etcd.grpc_received_bytes, len);
    if (gm)
        metrics_counter_add(&gm->received, 1);
}

void metrics_grpc_msg_sent(int method, size_t len)
{
    struct metrics_grpc_method *gm = method_of(method);
    metrics_counter_add(&metrics__etcd.grpc_sent_bytes, len);
    if (gm)
        metrics_counter_add(&gm->sent, 1);
}

void metrics_grpc_handled(int method, int code)
{
    struct metrics_grpc_method *gm = method_of(method);
    if (gm == NULL)
        return;
    if (code < 0 || code >= METRICS_NCODES)
        code = GRPC_UNKNOWN;
    metrics_counter_add(&gm->handled[code], 1);
}

void metrics_mvcc_range(void)
{
    metrics_counter_add(&metrics__etcd.range, 1);
}

/* ---- Txn responses: which operations ran ---- */

struct op_counts {
    uint64_t range, put, del;
};

static int read_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = *(*p)++;
        x |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -EINVAL;
}

/* Skips one field of wire type @wt; on length-delimited fields sets
 * *body and *blen. */
static int skip_field(const uint8_t **p, const uint8_t *end, int wt,
                      const uint8_t **body, size_t *blen)
{
    uint64_t v;
    switch (wt) {
    case 0:
        return read_varint(p, end, &v);
    case 1:
        if (end - *p < 8)
            return -EINVAL;
        *p += 8;
        return 0;
    case 5:
        if (end - *p < 4)
            return -EINVAL;
        *p += 4;
        return 0;
    case 2:
        if (read_varint(p, end, &v) != 0 || v > (uint64_t)(end - *p))
            return -EINVAL;
        *body = *p;
        *blen = (size_t)v;
        *p += v;
        return 0;
    default:
        return -EINVAL;
    }
}

/* Walks a packed TxnResponse: field 3 holds the ResponseOps of the branch
 * that ran (1 range, 2 put, 3 delete_range, 4 a nested txn). The packed
 * form is walked rather than unpacked: ranges in it may be large. */
static int count_txn_packed(const uint8_t *p, size_t n, struct op_counts *oc,
                            int depth)
{
    const uint8_t *end = p + n;
    while (p < end) {
        uint64_t tag;
        const uint8_t *body = NULL;
        size_t blen = 0;
        if (read_varint(&p, end, &tag) != 0 ||
            skip_field(&p, end, (int)(tag & 7), &body, &blen) != 0)
            return -EINVAL;
        if (tag >> 3 != 3 || body == NULL)
            continue;
        const uint8_t *q = body, *qend = body + blen;
        while (q < qend) {
            uint64_t t2;
            const uint8_t *b2 = NULL;
            size_t l2 = 0;
            if (read_varint(&q, qend, &t2) != 0 ||
                skip_field(&q, qend, (int)(t2 & 7), &b2, &l2) != 0)
                return -EINVAL;
            switch (t2 >> 3) {
            case 1: oc->range++; break;
            case 2: oc->put++; break;
            case 3: oc->del++; break;
            case 4:
                if (b2 != NULL && depth < 64 &&
                    count_txn_packed(b2, l2, oc, depth + 1) != 0)
                    return -EINVAL;
                break;
            default: break;
            }
        }
    }
    return 0;
}

static void count_txn_struct(const Etcdserverpb__TxnResponse *r,
                             struct op_counts *oc)
{
    for (size_t i = 0; i < r->n_responses; i++) {
        const Etcdserverpb__ResponseOp *op = r->responses[i];
        switch (op->response_case) {
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE: oc->range++; break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_PUT: oc->put++; break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_DELETE_RANGE: oc->del++; break;
        case ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_TXN:
            count_txn_struct(op->response_txn, oc);
            break;
        default: break;
        }
    }
}

/* etcd counts the operations an mvcc txn executed, and the txn itself
 * only when it executed more than one (mvcc/metrics_txn.go). */
static void add_txn(const struct op_counts *oc)
{
    metrics_counter_add(&metrics__etcd.range, oc->range);
    metrics_counter_add(&metrics__etcd.put, oc->put);
    metrics_counter_add(&metrics__etcd.del, oc->del);
    if (oc->range + oc->put + oc->del > 1)
        metrics_counter_add(&metrics__etcd.txn, 1);
}

void metrics_write_applied(int op, const uint8_t *resp, size_t resp_len)
{
    struct op_counts oc = {0, 0, 0};
    switch (op) {
    case APPLY_PUT:
        metrics_counter_add(&metrics__etcd.put, 1);
        break;
    case APPLY_DELETE_RANGE:
        metrics_counter_add(&metrics__etcd.del, 1);
        break;
    case APPLY_TXN:
        if (resp != NULL && count_txn_packed(resp, resp_len, &oc, 0) == 0)
            add_txn(&oc);
        break;
    case APPLY_LEASE_GRANT:
        metrics_counter_add(&metrics__etcd.lease_granted, 1);
        break;
    default:
        break;
    }
}

void metrics_txn_read(const void *resp)
{
    struct op_counts oc = {0, 0, 0};
    count_txn_struct(resp, &oc);
    add_txn(&oc);
}

/* ---- the write path ---- */

void metrics_proposal_submitted(void)
{
    metrics_gauge_add(&metrics__etcd.proposals_pending, 1);
}

void metrics_proposal_done(int rc)
{
    metrics_gauge_add(&metrics__etcd.proposals_pending, -1);
    /* Request errors (lease not found...) were committed; a failed
     * proposal is one the store (a batch that could not commit) or raft
     * (no leader, lost with a leader, timed out) failed */
    if (rc == CAIRN_ESTORE || rc == CAIRN_ENOSPACE || rc == CAIRN_ETIMEOUT ||
        rc == CAIRN_ENOLEADER || rc == CAIRN_ELEADERCHANGED ||
        rc == CAIRN_ETIMEOUTLEADERFAIL)
        metrics_counter_add(&metrics__etcd.proposals_failed, 1);
}

/* etcd's warnApplyDuration. */
#define SLOW_APPLY_NS (100 * 1000000LL)

void metrics_apply_observe(int64_t start_ns)
{
    if (metrics_now_ns() - start_ns > SLOW_APPLY_NS)
        metrics_counter_add(&metrics__etcd.slow_apply, 1);
}

void metrics_commit_observe(int64_t start_ns)
{
    int64_t d = metrics_now_ns() - start_ns;
    metrics__init();
    if (d < 0)
        d = 0;
    metrics_histogram_observe(&metrics__etcd.backend_commit, (uint64_t)d);
}

void metrics_wal_fsync_observe(int64_t start_ns)
{
    int64_t d = metrics_now_ns() - start_ns;
    metrics__init();
    if (d < 0)
        d = 0;
    metrics_histogram_observe(&metrics__etcd.wal_fsync, (uint64_t)d);
}

/* ---- watch, lease, health ---- */

void metrics_watch_streams(int delta)
{
    metrics_gauge_add(&metrics__etcd.watch_streams, delta);
}

void metrics_watchers(int delta)
{
    metrics_gauge_add(&metrics__etcd.watchers, delta);
}

void metrics_lease_revoked(void)
{
    metrics_counter_add(&metrics__etcd.lease_revoked, 1);
}

void metrics_encryption_rotated(void)
{
    metrics_counter_add(&metrics__etcd.encryption_rotations, 1);
}

void metrics_lease_renewed(void)
{
    metrics_counter_add(&metrics__etcd.lease_renewed, 1);
}

void metrics_health_result(int ok)
{
    metrics_counter_add(ok ? &metrics__etcd.health_success
                           : &metrics__etcd.health_failures,
                        1);
}
