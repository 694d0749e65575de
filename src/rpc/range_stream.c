/* KV.RangeStream (etcd 3.7): a Range answered as a stream of chunks with
 * disjoint kvs; header, more and count come on the final chunk. A plain
 * range (no sort, no min/max filters) is read from one pinned snapshot a
 * chunk at a time, and a chunk is produced only while the stream has less
 * than RS_HIGH_WATER unsent, so listing a huge prefix costs a bounded
 * amount of memory however slowly the client reads (the point of the RPC:
 * kube-apiserver's large LISTs). Sorted or filtered ranges need every
 * match first; they are computed as Range does and sent in chunks. */
#include <stdint.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "rpc/rpc.h"

#define RS_CHUNK_KEYS 500
#define RS_CHUNK_BYTES (1u << 20) /* well below clients' 4 MiB receive limit */
#define RS_HIGH_WATER (4u << 20)
#define RS_TICK_MS 1
/* A plain Range whose kvs pass this is sent in pieces as the stream drains,
 * not built whole: ten clients listing 1 GiB must not cost 10 GiB. */
#define RANGE_LARGE_BYTES (4u << 20)

struct range_stream {
    struct grpc_call *call;
    struct mvcc_txn t;          /* the pinned snapshot */
    Etcdserverpb__RangeRequest req;
    uint8_t *key, *end;         /* owned copies; key moves on chunk by chunk */
    size_t klen, elen;
    uint8_t *start;             /* the original key, for the final count */
    size_t slen;
    int64_t rev;                /* resolved revision */
    int64_t sent;               /* kvs sent so far */
    int unary;                  /* a Range answer sent in pieces */
    int64_t count;              /* unary: the final fields */
    int more;
    struct range_stream *next, *prev;
};

static struct range_stream *active;
static uv_timer_t tick;
static int tick_init;

static void rs_free(struct range_stream *rs)
{
    if (rs->prev)
        rs->prev->next = rs->next;
    else
        active = rs->next;
    if (rs->next)
        rs->next->prev = rs->prev;
    mvcc_read_end(&rs->t);
    cairn_free(rs->key);
    cairn_free(rs->start);
    cairn_free(rs->end);
    cairn_free(rs);
    if (active == NULL)
        uv_timer_stop(&tick);
}

static void rs_cancel(struct grpc_call *c)
{
    struct range_stream *rs = c->ud;
    c->ud = NULL;
    if (rs != NULL)
        rs_free(rs);
}

static void send_chunk(struct grpc_call *c, Etcdserverpb__RangeResponse *rr)
{
    Etcdserverpb__RangeStreamResponse m = ETCDSERVERPB__RANGE_STREAM_RESPONSE__INIT;
    m.range_response = rr;
    grpc_send_pb(c, &m);
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

static size_t put_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* RangeResponse field 2 (kvs) entries, as protobuf-c would pack them. */
static size_t entries_size(const Etcdserverpb__RangeResponse *r)
{
    size_t total = 0;
    for (size_t i = 0; i < r->n_kvs; i++) {
        size_t n = mvccpb__key_value__get_packed_size(r->kvs[i]);
        total += 1 + varint_len(n) + n;
    }
    return total;
}

static void send_entries(struct grpc_call *c, const Etcdserverpb__RangeResponse *r)
{
    for (size_t i = 0; i < r->n_kvs; i++) {
        size_t n = mvccpb__key_value__get_packed_size(r->kvs[i]);
        uint8_t tag[11], *buf = cairn_malloc(n + 1);
        tag[0] = 0x12;
        size_t tl = 1 + put_varint(tag + 1, n);
        mvccpb__key_value__pack(r->kvs[i], buf);
        grpc_send_bytes(c, tag, tl);
        grpc_send_bytes(c, buf, n);
        cairn_free(buf);
    }
}

/* The final chunk: header, more and count over the whole range. */
static void finish_stream(struct range_stream *rs)
{
    struct grpc_call *c = rs->call;
    if (rs->unary) { /* the Range answer's last fields */
        uint8_t tail[16];
        size_t n = 0;
        if (rs->more) {
            tail[n++] = 0x18;
            tail[n++] = 1;
        }
        if (rs->count) {
            tail[n++] = 0x20;
            n += put_varint(tail + n, (uint64_t)rs->count);
        }
        grpc_send_bytes(c, tail, n);
        c->ud = NULL;
        rs_free(rs);
        rpc_finish(c, 0);
        return;
    }
    Etcdserverpb__RangeRequest cr = rs->req;
    Etcdserverpb__RangeResponse resp;
    struct arena a;
    int rc;

    arena_init(&a);
    cr.key.data = rs->start;
    cr.key.len = rs->slen;
    cr.range_end.data = rs->end;
    cr.range_end.len = rs->elen;
    cr.revision = rs->rev;
    cr.limit = 0;
    cr.count_only = 1;
    rc = mvcc_range(&rs->t, &cr, &a, &resp);
    if (rc == 0) {
        rpc_header(resp.header, 0);
        resp.more = rs->req.limit > 0 && resp.count > rs->req.limit;
        send_chunk(c, &resp);
    }
    arena_free(&a);
    c->ud = NULL;
    rs_free(rs);
    rpc_finish(c, rc);
}

/* One chunk from where the last one ended. Returns 1 when the range is
 * done. */
static int produce(struct range_stream *rs)
{
    Etcdserverpb__RangeRequest cr = rs->req;
    Etcdserverpb__RangeResponse resp;
    struct arena a;
    int64_t want = RS_CHUNK_KEYS;
    int rc, done;

    if (rs->req.limit > 0 && rs->req.limit - rs->sent < want)
        want = rs->req.limit - rs->sent;
    if (want <= 0)
        return 1;
    arena_init(&a);
    cr.key.data = rs->key;
    cr.key.len = rs->klen;
    cr.range_end.data = rs->end;
    cr.range_end.len = rs->elen;
    cr.revision = rs->rev;
    cr.limit = want;
    cr.count_only = 0;
    rc = mvcc_range(&rs->t, &cr, &a, &resp);
    if (rc != 0) {
        arena_free(&a);
        struct grpc_call *c = rs->call;
        c->ud = NULL;
        rs_free(rs);
        grpc_finish_err(c, rc);
        return -1;
    }
    done = !resp.more;
    /* Keep a chunk near RS_CHUNK_BYTES (at least one kv): the rest of this
     * read comes again in the next chunk. */
    size_t bytes = 0, n = 0;
    while (n < resp.n_kvs && (n == 0 || bytes < RS_CHUNK_BYTES)) {
        bytes += resp.kvs[n]->key.len + resp.kvs[n]->value.len + 32;
        n++;
    }
    if (n < resp.n_kvs) {
        resp.n_kvs = n;
        done = 0;
    }
    if (resp.n_kvs > 0) {
        /* Next chunk starts just after the last key (key + "\0"), as
         * kube-apiserver's continue tokens do. */
        ProtobufCBinaryData last = resp.kvs[resp.n_kvs - 1]->key;
        uint8_t *next = cairn_malloc(last.len + 1);
        memcpy(next, last.data, last.len);
        next[last.len] = 0;
        resp.header = NULL;
        resp.count = 0;
        resp.more = 0;
        if (rs->unary)
            send_entries(rs->call, &resp);
        else
            send_chunk(rs->call, &resp); /* packs while the snapshot is open */
        cairn_free(rs->key);
        rs->key = next;
        rs->klen = last.len + 1;
        rs->sent += (int64_t)resp.n_kvs;
    }
    arena_free(&a);
    if (rs->req.limit > 0 && rs->sent >= rs->req.limit)
        done = 1;
    return done;
}

static size_t unsent(const struct grpc_call *c)
{
    return grpc_call_unsent(c);
}

static void on_tick(uv_timer_t *h)
{
    (void)h;
    for (struct range_stream *rs = active, *next; rs != NULL; rs = next) {
        next = rs->next;
        while (unsent(rs->call) < RS_HIGH_WATER) {
            /* The range continues from a key after the original start:
             * a single-key request is answered in one step. */
            int done = produce(rs);
            if (done < 0)
                break;
            if (done) {
                finish_stream(rs);
                break;
            }
        }
    }
}

static void activate(struct grpc_call *c, struct range_stream *rs)
{
    c->ud = rs;
    c->on_cancel = rs_cancel;
    rs->next = active;
    if (active)
        active->prev = rs;
    active = rs;
    if (!tick_init) {
        uv_timer_init(srv->loop, &tick);
        uv_unref((uv_handle_t *)&tick);
        tick_init = 1;
    }
    if (!uv_is_active((uv_handle_t *)&tick))
        uv_timer_start(&tick, on_tick, 0, RS_TICK_MS);
}

int rpc_range_is_plain(const Etcdserverpb__RangeRequest *r)
{
    return r->sort_order == ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__NONE &&
           r->sort_target == ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__KEY &&
           !r->min_mod_revision && !r->max_mod_revision &&
           !r->min_create_revision && !r->max_create_revision &&
           !r->count_only && r->range_end.len > 0;
}

/* Sorted, filtered, single-key or count-only: computed whole, then sent
 * in chunks. */
static void whole(struct grpc_call *c, const Etcdserverpb__RangeRequest *r)
{
    Etcdserverpb__RangeResponse resp;
    struct mvcc_txn t;
    int rc = mvcc_read_begin(srv->mvcc, &t);
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rc = mvcc_range(&t, r, &c->arena, &resp);
    if (rc == 0) {
        size_t n = resp.n_kvs, i = 0;
        Mvccpb__KeyValue **kvs = resp.kvs;
        Etcdserverpb__RangeResponse chunk;
        for (;;) {
            size_t j = i, bytes = 0;
            while (j < n && j - i < RS_CHUNK_KEYS && bytes < RS_CHUNK_BYTES) {
                bytes += kvs[j]->key.len + kvs[j]->value.len + 32;
                j++;
            }
            if (j == n)
                break; /* the rest goes with the final chunk */
            etcdserverpb__range_response__init(&chunk);
            chunk.kvs = kvs + i;
            chunk.n_kvs = j - i;
            send_chunk(c, &chunk);
            i = j;
        }
        rpc_header(resp.header, 0);
        resp.kvs = kvs + i;
        resp.n_kvs = n - i;
        send_chunk(c, &resp);
    }
    mvcc_read_end(&t);
    rpc_finish(c, rc);
}

void rpc_kv_range_stream(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__RangeRequest *r =
        etcdserverpb__range_request__unpack(&c->arena.pb, len, msg);
    struct range_stream *rs;
    int rc;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = mvcc_check_range(r)) != 0 ||
        (rc = rpc_auth_range(c, r->key, r->range_end, AUTH_READ)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (!rpc_range_is_plain(r)) {
        whole(c, r);
        return;
    }
    rs = cairn_calloc(1, sizeof *rs);
    if ((rc = mvcc_read_begin(srv->mvcc, &rs->t)) != 0) {
        cairn_free(rs);
        grpc_finish_err(c, rc);
        return;
    }
    /* Resolve the revision once: every chunk reads the same snapshot at
     * the same revision (the errors are Range's). */
    rs->rev = r->revision;
    if (rs->rev > rs->t.rev)
        rc = CAIRN_EFUTUREREV;
    else if (rs->rev <= 0)
        rs->rev = rs->t.rev;
    if (rc == 0 && rs->rev < rs->t.compact_rev)
        rc = CAIRN_ECOMPACTED;
    if (rc != 0) {
        mvcc_read_end(&rs->t);
        cairn_free(rs);
        grpc_finish_err(c, rc);
        return;
    }
    rs->call = c;
    rs->req = *r;
    rs->klen = r->key.len;
    rs->key = cairn_malloc(rs->klen + 1);
    memcpy(rs->key, r->key.data, rs->klen);
    rs->slen = rs->klen;
    rs->start = cairn_malloc(rs->slen + 1);
    memcpy(rs->start, r->key.data, rs->slen);
    rs->elen = r->range_end.len;
    rs->end = cairn_malloc(rs->elen + 1);
    memcpy(rs->end, r->range_end.data, rs->elen);
    /* the copies own the bytes now */
    rs->req.key.data = NULL;
    rs->req.range_end.data = NULL;
    activate(c, rs);
}

/* Sizes a plain Range from the snapshot a chunk at a time; returns the
 * bytes of its kvs entries, stopping early once past @stop. */
static int size_range(struct mvcc_txn *t, const Etcdserverpb__RangeRequest *r,
                      int64_t rev, size_t stop, size_t *total)
{
    Etcdserverpb__RangeRequest cr = *r;
    uint8_t *key = cairn_malloc(r->key.len + 1);
    int64_t sent = 0;
    int rc = 0;
    memcpy(key, r->key.data, r->key.len);
    cr.key.data = key;
    cr.revision = rev;
    *total = 0;
    for (;;) {
        Etcdserverpb__RangeResponse resp;
        struct arena a;
        int64_t want = RS_CHUNK_KEYS;
        if (r->limit > 0 && r->limit - sent < want)
            want = r->limit - sent;
        if (want <= 0 || *total > stop)
            break;
        cr.limit = want;
        arena_init(&a);
        rc = mvcc_range(t, &cr, &a, &resp);
        if (rc == 0) {
            *total += entries_size(&resp);
            sent += (int64_t)resp.n_kvs;
        }
        if (rc != 0 || !resp.more || resp.n_kvs == 0) {
            arena_free(&a);
            break;
        }
        ProtobufCBinaryData last = resp.kvs[resp.n_kvs - 1]->key;
        uint8_t *next = cairn_malloc(last.len + 1);
        memcpy(next, last.data, last.len);
        next[last.len] = 0;
        cairn_free(key);
        key = next;
        cr.key.data = key;
        cr.key.len = last.len + 1;
        arena_free(&a);
    }
    cairn_free(key);
    return rc;
}

int rpc_range_large(struct grpc_call *c, const Etcdserverpb__RangeRequest *r)
{
    struct range_stream *rs;
    size_t kv_bytes;
    int64_t rev;

    if (!rpc_range_is_plain(r))
        return 0;
    rs = cairn_calloc(1, sizeof *rs);
    if (mvcc_read_begin(srv->mvcc, &rs->t) != 0)
        goto small;
    rev = r->revision <= 0 ? rs->t.rev : r->revision;
    if (rev > rs->t.rev || rev < rs->t.compact_rev)
        goto small_txn; /* Range reports the error */
    if (size_range(&rs->t, r, rev, RANGE_LARGE_BYTES, &kv_bytes) != 0 ||
        kv_bytes <= RANGE_LARGE_BYTES)
        goto small_txn;
    /* Large: the exact size first (the same snapshot gives the same bytes
     * again when the pieces are produced), then the count. */
    if (size_range(&rs->t, r, rev, SIZE_MAX, &kv_bytes) != 0)
        goto small_txn;
    {
        Etcdserverpb__RangeRequest cr = *r;
        Etcdserverpb__RangeResponse cresp;
        struct arena a;
        arena_init(&a);
        cr.revision = rev;
        cr.limit = 0;
        cr.count_only = 1;
        int rc = mvcc_range(&rs->t, &cr, &a, &cresp);
        rs->count = cresp.count;
        arena_free(&a);
        if (rc != 0)
            goto small_txn;
    }
    rs->more = r->limit > 0 && rs->count > r->limit;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    rpc_header(&h, rs->t.rev);
    size_t hl = etcdserverpb__response_header__get_packed_size(&h);
    uint8_t *hb = cairn_malloc(hl + 11);
    hb[0] = 0x0a;
    size_t hp = 1 + put_varint(hb + 1, hl);
    etcdserverpb__response_header__pack(&h, hb + hp);
    size_t total = hp + hl + kv_bytes + (rs->more ? 2 : 0) +
                   (rs->count ? 1 + varint_len((uint64_t)rs->count) : 0);
    grpc_send_prefix(c, total);
    grpc_send_bytes(c, hb, hp + hl);
    cairn_free(hb);

    rs->unary = 1;
    rs->rev = rev;
    rs->call = c;
    rs->req = *r;
    rs->klen = rs->slen = r->key.len;
    rs->key = cairn_malloc(rs->klen + 1);
    memcpy(rs->key, r->key.data, rs->klen);
    rs->start = cairn_malloc(rs->slen + 1);
    memcpy(rs->start, r->key.data, rs->slen);
    rs->elen = r->range_end.len;
    rs->end = cairn_malloc(rs->elen + 1);
    memcpy(rs->end, r->range_end.data, rs->elen);
    rs->req.key.data = NULL;
    rs->req.range_end.data = NULL;
    activate(c, rs);
    return 1;

small_txn:
    mvcc_read_end(&rs->t);
small:
    cairn_free(rs);
    return 0;
}
