/* The lessor: a hash of leases and a binary heap of their deadlines. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "lease/lease.h"
#include "repl/repl.h"
#include "metrics/metrics.h"
#include "net/net.h"

#define LEASE_TICK_MS 100
#define LEASE_MAX_REVOKING 1000

struct lease {
    int64_t id;
    int64_t ttl;          /* seconds */
    int64_t deadline;     /* monotonic ms */
    uint64_t seq;         /* orders deadlines set within one millisecond */
    size_t heap_idx;
    int revoking;
    struct lease *h_next; /* hash chain */
};

static struct {
    uv_loop_t *loop;
    struct mvcc *m;
    struct apply *apply;
    struct lease_opts o;
    struct lease **buckets;
    size_t nbuckets, n;
    struct lease **heap;
    size_t cap;
    uv_timer_t tick;
    int revoking, stopped;
    int leader;             /* only the leader expires leases */
    uint64_t seq;
    uint64_t id_prefix, id_suffix;
} ls;

/* ---- hash ---- */

static size_t slot(int64_t id, size_t n)
{
    uint64_t h = (uint64_t)id * 0x9E3779B97F4A7C15ULL;
    return (size_t)(h >> 17) % n;
}

static struct lease *find(int64_t id)
{
    for (struct lease *l = ls.buckets[slot(id, ls.nbuckets)]; l; l = l->h_next)
        if (l->id == id)
            return l;
    return NULL;
}

static void rehash(void)
{
    size_t n = ls.nbuckets * 2;
    struct lease **b = cairn_calloc(n, sizeof *b);
    for (size_t i = 0; i < ls.nbuckets; i++) {
        struct lease *l = ls.buckets[i], *next;
        for (; l != NULL; l = next) {
            next = l->h_next;
            size_t s = slot(l->id, n);
            l->h_next = b[s];
            b[s] = l;
        }
    }
    cairn_free(ls.buckets);
    ls.buckets = b;
    ls.nbuckets = n;
}

/* ---- heap ---- */

static void heap_swap(size_t i, size_t j)
{
    struct lease *t = ls.heap[i];
    ls.heap[i] = ls.heap[j];
    ls.heap[j] = t;
    ls.heap[i]->heap_idx = i;
    ls.heap[j]->heap_idx = j;
}

static int before(const struct lease *a, const struct lease *b)
{
    return a->deadline != b->deadline ? a->deadline < b->deadline
                                      : a->seq < b->seq;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(ls.heap[i], ls.heap[p]))
            break;
        heap_swap(i, p);
        i = p;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < ls.n && before(ls.heap[l], ls.heap[m]))
            m = l;
        if (r < ls.n && before(ls.heap[r], ls.heap[m]))
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

static void heap_fix(size_t i)
{
    heap_up(i);
    heap_down(i);
}

/* ---- leases ---- */

void lease_granted(int64_t id, int64_t ttl)
{
    struct lease *l = find(id);
    if (l == NULL) {
        if (ls.n + 1 > ls.nbuckets)
            rehash();
        if (ls.n == ls.cap) {
            ls.cap = ls.cap ? ls.cap * 2 : 64;
            ls.heap = cairn_realloc(ls.heap, ls.cap * sizeof *ls.heap);
        }
        l = cairn_calloc(1, sizeof *l);
        l->id = id;
        size_t s = slot(id, ls.nbuckets);
        l->h_next = ls.buckets[s];
        ls.buckets[s] = l;
        l->heap_idx = ls.n;
        ls.heap[ls.n++] = l;
    }
    l->ttl = ttl;
    l->deadline = net_now_ms() + ttl * 1000;
    l->seq = ++ls.seq;
    heap_fix(l->heap_idx);
}

void lease_revoked(int64_t id)
{
    struct lease *l = find(id), **pp;
    if (l == NULL)
        return;
    metrics_lease_revoked(); /* once per lease: client revoke or expiry */
    size_t i = l->heap_idx;
    ls.n--;
    if (i != ls.n) {
        ls.heap[i] = ls.heap[ls.n];
        ls.heap[i]->heap_idx = i;
        heap_fix(i);
    }
    pp = &ls.buckets[slot(id, ls.nbuckets)];
    while (*pp != l)
        pp = &(*pp)->h_next;
    *pp = l->h_next;
    cairn_free(l);
}

int lease_renew(int64_t id, int64_t *ttl)
{
    struct lease *l = find(id);
    if (l == NULL || l->revoking || l->deadline <= net_now_ms())
        return CAIRN_ELEASENOTFOUND;
    l->deadline = net_now_ms() + l->ttl * 1000;
    l->seq = ++ls.seq;
    heap_fix(l->heap_idx);
    *ttl = l->ttl;
    metrics_lease_renewed();
    return 0;
}

int lease_lookup(int64_t id, int64_t *ttl, int64_t *remaining_ms)
{
    struct lease *l = find(id);
    if (l == NULL)
        return CAIRN_ELEASENOTFOUND;
    *ttl = l->ttl;
    *remaining_ms = l->revoking ? 0 : l->deadline - net_now_ms();
    return 0;
}

static int by_deadline(const void *a, const void *b)
{
    const struct lease *x = *(struct lease *const *)a,
                       *y = *(struct lease *const *)b;
    return before(x, y) ? -1 : before(y, x);
}

size_t lease_list(int64_t **ids)
{
    struct lease **tmp = cairn_malloc((ls.n + 1) * sizeof *tmp);
    if (ls.n > 0)
        memcpy(tmp, ls.heap, ls.n * sizeof *tmp);
    qsort(tmp, ls.n, sizeof *tmp, by_deadline);
    *ids = cairn_malloc((ls.n + 1) * sizeof **ids);
    for (size_t i = 0; i < ls.n; i++)
        (*ids)[i] = tmp[i]->id;
    cairn_free(tmp);
    return ls.n;
}

int64_t lease_min_ttl(void)
{
    return ls.o.min_ttl;
}

int64_t lease_next_id(void)
{
    /* etcd's idutil.Generator: 2 bytes of member ID, then 5 bytes of
     * milliseconds at start and a 1-byte counter, the low 6 bytes counting
     * up together. */
    uint64_t id = ls.id_prefix | ((++ls.id_suffix) & 0xffffffffffffULL);
    return (int64_t)(id & 0x7fffffffffffffffULL);
}

/* ---- expiry ---- */

static void submit_expired(void);

static void revoke_done(struct apply_cmd *cmd)
{
    Etcdserverpb__LeaseRevokeRequest *r =
        etcdserverpb__lease_revoke_request__unpack(NULL, cmd->req_len, cmd->req);
    ls.revoking--;
    if (r != NULL) {
        struct lease *l = find(r->id);
        /* a revoke that applied was taken out by rpc_apply_effects */
        if (cmd->rc != 0 && cmd->rc != CAIRN_ELEASENOTFOUND && l != NULL) { /* a store error: try again at the next tick */
            l->revoking = 0;
            l->deadline = net_now_ms();
            heap_up(l->heap_idx);
        }
        etcdserverpb__lease_revoke_request__free_unpacked(r, NULL);
    }
    apply_cmd_free(cmd);
    /* A mass expiry goes on as fast as the write path takes it, not one
     * tick's worth at a time. */
    submit_expired();
}

static void submit_revoke(struct lease *l)
{
    Etcdserverpb__LeaseRevokeRequest r = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    r.id = l->id;
    cmd->op = APPLY_LEASE_REVOKE;
    cmd->req_len = etcdserverpb__lease_revoke_request__get_packed_size(&r);
    cmd->req = cairn_malloc(cmd->req_len + 1);
    etcdserverpb__lease_revoke_request__pack(&r, cmd->req);
    cmd->done = revoke_done;
    l->revoking = 1;
    /* Out of the way at the bottom of the heap until the revoke lands. */
    l->deadline = INT64_MAX;
    heap_down(l->heap_idx);
    ls.revoking++;
    repl_submit(cmd);
}

static void submit_expired(void)
{
    int64_t now = net_now_ms();
    if (ls.stopped || !ls.leader)
        return;
    while (ls.n > 0 && ls.heap[0]->deadline <= now &&
           ls.revoking < LEASE_MAX_REVOKING)
        submit_revoke(ls.heap[0]);
}

void lease_promote(int64_t extend_ms)
{
    int64_t now = net_now_ms();
    ls.leader = 1;
    for (size_t i = 0; i < ls.n; i++) {
        struct lease *l = ls.heap[i];
        if (!l->revoking)
            l->deadline = now + l->ttl * 1000 + extend_ms;
    }
    for (size_t i = ls.n / 2 + 1; i-- > 0;)
        if (i < ls.n)
            heap_down(i);
}

void lease_demote(void)
{
    ls.leader = 0;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    submit_expired();
}

static int load_one(void *ud, int64_t id, int64_t ttl)
{
    (void)ud;
    if (ttl < ls.o.min_ttl)
        ttl = ls.o.min_ttl;
    lease_granted(id, ttl);
    return 0;
}

int lease_init(uv_loop_t *loop, struct mvcc *m, struct apply *a,
               const struct lease_opts *o)
{
    struct mvcc_txn t;
    struct timespec ts;
    int rc;

    memset(&ls, 0, sizeof ls);
    ls.loop = loop;
    ls.m = m;
    ls.apply = a;
    ls.o = *o;
    ls.nbuckets = 64;
    ls.buckets = cairn_calloc(ls.nbuckets, sizeof *ls.buckets);
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    ls.id_prefix = (o->member_id & 0xffff) << 48;
    ls.id_suffix = (ms & 0xffffffffffULL) << 8;
    if ((rc = mvcc_read_begin(m, &t)) != 0)
        return rc;
    rc = mvcc_leases(&t, load_one, NULL);
    mvcc_read_end(&t);
    if (rc != 0)
        return rc;
    if (ls.n > 0)
        log_info("lease: loaded %zu leases, each renewed for its TTL", ls.n);
    uv_timer_init(loop, &ls.tick);
    uv_timer_start(&ls.tick, on_tick, LEASE_TICK_MS, LEASE_TICK_MS);
    uv_unref((uv_handle_t *)&ls.tick);
    return 0;
}

void lease_shutdown(void)
{
    ls.stopped = 1;
    uv_timer_stop(&ls.tick);
    uv_close((uv_handle_t *)&ls.tick, NULL);
}
