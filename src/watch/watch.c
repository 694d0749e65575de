/* The watch hub: streams, watchers, notification of new revisions,
 * catch-up of unsynced watchers, progress. Follows etcd 3.4's v3rpc/watch.go
 * and mvcc/watchable_store.go; progress requests follow 3.4.31+ (answered
 * only when every watcher of the stream is synced). */
#include <string.h>

#include "core/arena.h"
#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "watch/watch_int.h"

/* A stream whose unsent output passes HIGH stops receiving live events (its
 * watchers fall back to catching up from the store); it catches up again
 * once below LOW. */
#define STREAM_HIGH_WATER (1u << 20)
#define STREAM_LOW_WATER (256u << 10)
/* One catch-up round: at most this many watchers, revisions per response
 * (etcd's watchBatchMaxRevs) and events read. */
#define SYNC_MAX_WATCHERS 512
#define SYNC_MAX_REVS 1000
#define SYNC_MAX_EVENTS 20000
#define SYNC_RESP_BYTES (4u << 20) /* bounds one catch-up response */
#define SYNC_PERIOD_MS 10

struct watch_stream {
    struct grpc_call *call;
    struct watcher *watchers;
    int64_t next_id;
    struct watch_stream *next, *prev;
};

static struct {
    uv_loop_t *loop;
    struct mvcc *m;
    struct watch_opts o;
    int64_t rev;              /* events up to here went to synced watchers */
    struct widx ix;
    struct watcher *unsynced;
    int nunsynced;
    struct watch_stream *streams;
    uv_timer_t sync_timer, progress_timer;
    int sync_armed, stopped;
    uint64_t mark;
} hub;

static void schedule_sync(uint64_t delay_ms);

/* ---- encoding ---- */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

struct bytes {
    uint8_t *p;
    size_t n;
};

static struct bytes pack_header(struct arena *a, int64_t rev)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    struct bytes b;
    h.cluster_id = hub.o.cluster_id;
    h.member_id = hub.o.member_id;
    h.raft_term = hub.o.raft_term ? *hub.o.raft_term : 0;
    h.revision = rev;
    b.n = etcdserverpb__response_header__get_packed_size(&h);
    b.p = arena_alloc(a, b.n + 1);
    etcdserverpb__response_header__pack(&h, b.p);
    return b;
}

/* Control responses (created, canceled, progress): small, via protobuf-c. */
static void send_ctrl(struct watch_stream *ws, Etcdserverpb__WatchResponse *r,
                      int64_t rev)
{
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    h.cluster_id = hub.o.cluster_id;
    h.member_id = hub.o.member_id;
    h.raft_term = hub.o.raft_term ? *hub.o.raft_term : 0;
    h.revision = rev;
    r->header = &h;
    grpc_send_pb(ws->call, r);
}

/* One event, encoded once per notification; the prev_kv form on demand. */
struct ev {
    int is_delete;
    Mvccpb__KeyValue kv; /* points into the map */
    struct bytes plain, with_prev;
    int prev_done;
};

static struct bytes encode_event(struct arena *a, const struct ev *e,
                                 const Mvccpb__KeyValue *prev)
{
    Mvccpb__Event ev = MVCCPB__EVENT__INIT;
    struct bytes b;
    ev.type = e->is_delete ? MVCCPB__EVENT__EVENT_TYPE__DELETE
                           : MVCCPB__EVENT__EVENT_TYPE__PUT;
    ev.kv = (Mvccpb__KeyValue *)&e->kv;
    ev.prev_kv = (Mvccpb__KeyValue *)prev;
    b.n = mvccpb__event__get_packed_size(&ev);
    b.p = arena_alloc(a, b.n + 1);
    mvccpb__event__pack(&ev, b.p);
    return b;
}

/* etcd reads the previous version at mod_revision - 1, except for creates;
 * a compacted or missing one is left out. */
static struct bytes event_bytes(struct mvcc_txn *t, struct arena *a,
                                struct ev *e, int want_prev)
{
    if (!want_prev) {
        if (e->plain.p == NULL)
            e->plain = encode_event(a, e, NULL);
        return e->plain;
    }
    if (!e->prev_done) {
        Mvccpb__KeyValue prev;
        int is_create = !e->is_delete && e->kv.create_revision == e->kv.mod_revision;
        int found = !is_create && mvcc_get_at(t, e->kv.key.data, e->kv.key.len,
                                              e->kv.mod_revision - 1, &prev) == 0;
        e->with_prev = encode_event(a, e, found ? &prev : NULL);
        e->prev_done = 1;
    }
    return e->with_prev;
}

/* WatchResponse{header, watch_id, fragment, events...}, framed and queued
 * on the stream. */
static void send_events(struct watch_stream *ws, struct bytes hdr, int64_t id,
                        struct bytes *evs, size_t n, int fragment)
{
    size_t len = 1 + varint_len(hdr.n) + hdr.n;
    if (id != 0)
        len += 1 + varint_len((uint64_t)id);
    if (fragment)
        len += 2;
    for (size_t i = 0; i < n; i++)
        len += 1 + varint_len(evs[i].n) + evs[i].n;
    uint8_t *p = grpc_send_reserve(ws->call, len);
    if (p == NULL)
        return;
    *p++ = 0x0a;
    p = put_varint(p, hdr.n);
    memcpy(p, hdr.p, hdr.n);
    p += hdr.n;
    if (id != 0) {
        *p++ = 0x10;
        p = put_varint(p, (uint64_t)id);
    }
    if (fragment) {
        *p++ = 0x38;
        *p++ = 1;
    }
    for (size_t i = 0; i < n; i++) {
        *p++ = 0x5a;
        p = put_varint(p, evs[i].n);
        memcpy(p, evs[i].p, evs[i].n);
        p += evs[i].n;
    }
}

static size_t resp_size(struct bytes hdr, int64_t id, struct bytes *evs,
                        size_t n)
{
    size_t len = 1 + varint_len(hdr.n) + hdr.n;
    if (id != 0)
        len += 1 + varint_len((uint64_t)id);
    for (size_t i = 0; i < n; i++)
        len += 1 + varint_len(evs[i].n) + evs[i].n;
    return len;
}

/* etcd's sendFragments: a fragmenting watcher's response at or above the
 * limit goes out in pieces, all but the last flagged. */
static void deliver(struct watcher *w, struct bytes hdr, struct bytes *evs,
                    size_t n)
{
    size_t limit = hub.o.max_request_bytes;
    w->progress_idle = 0;
    if (!w->fragment || n < 2 || resp_size(hdr, w->id, evs, n) < limit) {
        send_events(w->ws, hdr, w->id, evs, n, 0);
        return;
    }
    size_t i = 0;
    while (i < n) {
        size_t j = i + 1;
        /* A piece is measured with its fragment flag (2 bytes), as etcd
         * measures cur.Size() with Fragment set. */
        while (j < n && resp_size(hdr, w->id, evs + i, j - i + 1) + 2 < limit)
            j++;
        send_events(w->ws, hdr, w->id, evs + i, j - i, j < n);
        i = j;
    }
}

static int passes_filters(const struct watcher *w, const struct ev *e)
{
    return e->is_delete ? !w->nodelete : !w->noput;
}

static size_t pending_out(const struct watch_stream *ws)
{
    const struct grpc_call *c = ws->call;
    return grpc_call_unsent(c);
}

/* ---- watcher lifecycle ---- */

static void make_unsynced(struct watcher *w)
{
    if (w->synced) {
        widx_remove(&hub.ix, w);
        w->synced = 0;
    }
    w->u_prev = NULL;
    w->u_next = hub.unsynced;
    if (hub.unsynced)
        hub.unsynced->u_prev = w;
    hub.unsynced = w;
    hub.nunsynced++;
    schedule_sync(0);
}

static void unlink_unsynced(struct watcher *w)
{
    if (w->u_prev)
        w->u_prev->u_next = w->u_next;
    else
        hub.unsynced = w->u_next;
    if (w->u_next)
        w->u_next->u_prev = w->u_prev;
    w->u_next = w->u_prev = NULL;
    hub.nunsynced--;
}

static void make_synced(struct watcher *w)
{
    unlink_unsynced(w);
    w->synced = 1;
    widx_add(&hub.ix, w);
}

static void watcher_free(struct watcher *w)
{
    struct watch_stream *ws = w->ws;
    if (w->synced)
        widx_remove(&hub.ix, w);
    else if (!w->dead)
        unlink_unsynced(w);
    if (w->s_prev)
        w->s_prev->s_next = w->s_next;
    else
        ws->watchers = w->s_next;
    if (w->s_next)
        w->s_next->s_prev = w->s_prev;
    cairn_free(w->key);
    cairn_free(w->end);
    cairn_free(w->evs);
    cairn_free(w);
    metrics_watchers(-1);
}

/* ---- live notification ---- */

struct notify_ctx {
    struct mvcc_txn *t;
    struct arena *a;
    struct ev *evs;
    size_t n, cap;
    int64_t cur;          /* revision of the group being collected */
    struct watcher *matched;
};

static void add_ev(struct watcher *w, size_t i, uint64_t mark,
                   struct notify_ctx *nc)
{
    if (w->mark != mark) {
        w->mark = mark;
        w->nevs = 0;
        w->m_next = nc->matched;
        nc->matched = w;
    }
    if (w->nevs == w->cap_evs) {
        w->cap_evs = w->cap_evs ? w->cap_evs * 2 : 4;
        w->evs = cairn_realloc(w->evs, w->cap_evs * sizeof *w->evs);
    }
    w->evs[w->nevs++] = i;
}

struct stab_ctx {
    struct notify_ctx *nc;
    size_t i;
    int64_t rev;
};

static void on_group(void *ud, struct widx_group *g)
{
    struct stab_ctx *sc = ud;
    struct ev *e = &sc->nc->evs[sc->i];
    for (struct watcher *w = g->head; w != NULL; w = w->g_next)
        if (w->min_rev <= sc->rev && passes_filters(w, e))
            add_ev(w, sc->i, hub.mark, sc->nc);
}

/* All events of one revision: one response per watcher, with that
 * revision in the header (etcd's notify). */
static void flush_revision(struct notify_ctx *nc, size_t from, size_t to,
                           int64_t rev)
{
    struct bytes hdr = {NULL, 0};
    struct watcher *w, *next;
    hub.mark++;
    nc->matched = NULL;
    for (size_t i = from; i < to; i++) {
        struct stab_ctx sc = {nc, i, rev};
        widx_stab(&hub.ix, nc->evs[i].kv.key.data, nc->evs[i].kv.key.len,
                  on_group, &sc);
    }
    for (w = nc->matched; w != NULL; w = next) {
        next = w->m_next;
        if (!w->synced)
            continue;
        if (pending_out(w->ws) > STREAM_HIGH_WATER) {
            /* A stream that does not read: this watcher catches up from
             * the store later, starting with this revision. */
            w->min_rev = rev;
            make_unsynced(w);
            continue;
        }
        if (hdr.p == NULL)
            hdr = pack_header(nc->a, rev);
        struct bytes *eb = arena_alloc(nc->a, w->nevs * sizeof *eb + 1);
        for (size_t k = 0; k < w->nevs; k++)
            eb[k] = event_bytes(nc->t, nc->a, &nc->evs[w->evs[k]], w->prev_kv);
        deliver(w, hdr, eb, w->nevs);
        w->min_rev = rev + 1;
    }
}

static int collect_event(void *ud, int is_delete, const Mvccpb__KeyValue *kv)
{
    struct notify_ctx *nc = ud;
    if (nc->n == nc->cap) {
        nc->cap = nc->cap ? nc->cap * 2 : 64;
        nc->evs = cairn_realloc(nc->evs, nc->cap * sizeof *nc->evs);
    }
    struct ev *e = &nc->evs[nc->n++];
    memset(e, 0, sizeof *e);
    e->is_delete = is_delete;
    e->kv = *kv;
    return 0;
}

void watch_notify(int64_t rev)
{
    struct mvcc_txn t;
    struct arena a;
    struct notify_ctx nc;

    if (rev <= hub.rev || hub.stopped)
        return;
    if (hub.ix.ngroups == 0) { /* nobody synced: nothing to read */
        hub.rev = rev;
        return;
    }
    if (mvcc_read_begin(hub.m, &t) != 0)
        return; /* retried at the next commit */
    if (t.rev < rev)
        rev = t.rev;
    arena_init(&a);
    memset(&nc, 0, sizeof nc);
    nc.t = &t;
    nc.a = &a;
    if (mvcc_events(&t, hub.rev + 1, rev, collect_event, &nc) == 0) {
        size_t start = 0;
        for (size_t i = 1; i <= nc.n; i++) {
            if (i == nc.n ||
                nc.evs[i].kv.mod_revision != nc.evs[start].kv.mod_revision) {
                flush_revision(&nc, start, i, nc.evs[start].kv.mod_revision);
                start = i;
            }
        }
        hub.rev = rev;
    }
    cairn_free(nc.evs);
    arena_free(&a);
    mvcc_read_end(&t);
}

/* ---- catch-up of unsynced watchers ---- */

struct sync_ctx {
    struct mvcc_txn *t;
    struct arena *a;
    struct watcher **ws;
    size_t nw;
    struct ev *evs;
    size_t n, cap;
    int64_t last_rev;  /* last revision fully read */
    int full;
};

static int sync_collect(void *ud, int is_delete, const Mvccpb__KeyValue *kv)
{
    struct sync_ctx *sc = ud;
    /* Stop only between revisions, so none is split across rounds. */
    if (sc->full && kv->mod_revision != sc->last_rev)
        return 1;
    int wanted = 0;
    for (size_t i = 0; i < sc->nw && !wanted; i++)
        wanted = sc->ws[i]->min_rev <= kv->mod_revision &&
                 watcher_contains(sc->ws[i], kv->key.data, kv->key.len);
    sc->last_rev = kv->mod_revision;
    if (!wanted)
        return 0;
    if (sc->n == sc->cap) {
        sc->cap = sc->cap ? sc->cap * 2 : 64;
        sc->evs = cairn_realloc(sc->evs, sc->cap * sizeof *sc->evs);
    }
    struct ev *e = &sc->evs[sc->n++];
    memset(e, 0, sizeof *e);
    e->is_delete = is_delete;
    e->kv = *kv;
    if (sc->n >= SYNC_MAX_EVENTS)
        sc->full = 1;
    return 0;
}

static void send_compacted(struct watcher *w, int64_t compact_rev)
{
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.watch_id = w->id;
    r.compact_revision = compact_rev;
    r.canceled = 1;
    /* etcd's compaction response carries revision 0 in its header. */
    send_ctrl(w->ws, &r, 0);
    /* etcd keeps the cancelled watcher in its stream: the id stays taken
     * and a cancel for it is still answered. It gets no more events. */
    unlink_unsynced(w);
    w->dead = 1;
}

/* One watcher's share of a catch-up round: its events, in responses of at
 * most SYNC_MAX_REVS revisions or SYNC_RESP_BYTES, header = the hub's
 * revision (etcd: curRev). It stops at a revision boundary when its stream
 * passes the high-water mark, and goes on from there next round. @eb is
 * scratch for sc->n entries. */
static void sync_deliver(struct sync_ctx *sc, struct watcher *w, int64_t upto,
                         struct bytes hdr, struct bytes *eb)
{
    size_t n = 0, bytes = 0;
    int64_t revs = 0, prev_rev = 0;
    for (size_t i = 0; i < sc->n; i++) {
        struct ev *e = &sc->evs[i];
        if (e->kv.mod_revision < w->min_rev || e->kv.mod_revision > upto ||
            !passes_filters(w, e) ||
            !watcher_contains(w, e->kv.key.data, e->kv.key.len))
            continue;
        if (e->kv.mod_revision != prev_rev) {
            if (revs == SYNC_MAX_REVS || bytes >= SYNC_RESP_BYTES) {
                deliver(w, hdr, eb, n);
                n = bytes = 0;
                revs = 0;
            }
            if (n == 0 && pending_out(w->ws) > STREAM_HIGH_WATER) {
                w->min_rev = e->kv.mod_revision;
                return;
            }
            revs++;
            prev_rev = e->kv.mod_revision;
        }
        eb[n] = event_bytes(sc->t, sc->a, e, w->prev_kv);
        bytes += eb[n++].n;
    }
    if (n > 0)
        deliver(w, hdr, eb, n);
    w->min_rev = upto + 1;
}

static void sync_round(void)
{
    struct mvcc_txn t;
    struct arena a;
    struct sync_ctx sc;
    struct watcher *chosen[SYNC_MAX_WATCHERS], *w, *next;
    size_t nw = 0;
    int64_t min_rev = INT64_MAX;

    if (hub.unsynced == NULL || mvcc_read_begin(hub.m, &t) != 0)
        return;
    for (w = hub.unsynced; w != NULL && nw < SYNC_MAX_WATCHERS; w = next) {
        next = w->u_next;
        if (pending_out(w->ws) > STREAM_LOW_WATER)
            continue; /* its stream is still draining */
        if (w->min_rev < t.compact_rev) {
            send_compacted(w, t.compact_rev);
            continue;
        }
        if (w->min_rev > hub.rev) { /* nothing to catch up */
            make_synced(w);
            continue;
        }
        chosen[nw++] = w;
        if (w->min_rev < min_rev)
            min_rev = w->min_rev;
    }
    if (nw == 0) {
        mvcc_read_end(&t);
        return;
    }
    arena_init(&a);
    memset(&sc, 0, sizeof sc);
    sc.t = &t;
    sc.a = &a;
    sc.ws = chosen;
    sc.nw = nw;
    sc.last_rev = min_rev - 1;
    int rc = mvcc_events(&t, min_rev, hub.rev, sync_collect, &sc);
    if (rc == 0) {
        /* A full round stopped at a revision boundary: last_rev is whole. */
        int64_t upto = sc.full ? sc.last_rev : hub.rev;
        struct bytes hdr = pack_header(&a, hub.rev);
        struct bytes *eb = cairn_malloc((sc.n + 1) * sizeof *eb);
        for (size_t i = 0; i < nw; i++) {
            w = chosen[i];
            if (upto < w->min_rev)
                continue;
            sync_deliver(&sc, w, upto, hdr, eb);
            if (w->min_rev > hub.rev)
                make_synced(w);
        }
        cairn_free(eb);
    }
    cairn_free(sc.evs);
    arena_free(&a);
    mvcc_read_end(&t);
}

static void on_sync_timer(uv_timer_t *h)
{
    (void)h;
    hub.sync_armed = 0;
    sync_round();
    /* Watchers left wait for their streams to drain, or for the next
     * round of a long catch-up: pace the rounds. */
    if (hub.unsynced != NULL)
        schedule_sync(SYNC_PERIOD_MS);
}

static void schedule_sync(uint64_t delay_ms)
{
    if (hub.sync_armed)
        return;
    hub.sync_armed = 1;
    uv_timer_start(&hub.sync_timer, on_sync_timer, delay_ms, 0);
}

/* ---- progress ---- */

static void on_progress_timer(uv_timer_t *h)
{
    (void)h;
    for (struct watch_stream *ws = hub.streams; ws != NULL; ws = ws->next) {
        for (struct watcher *w = ws->watchers; w != NULL; w = w->s_next) {
            if (!w->progress)
                continue;
            if (w->progress_idle && w->synced) {
                Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
                r.watch_id = w->id;
                send_ctrl(ws, &r, hub.rev);
            }
            w->progress_idle = 1;
        }
    }
}

void watch_progress(struct watch_stream *ws)
{
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    if (ws->watchers == NULL)
        return;
    for (struct watcher *w = ws->watchers; w != NULL; w = w->s_next)
        if (!w->synced)
            return; /* the client asks again */
    r.watch_id = -1;
    send_ctrl(ws, &r, hub.rev);
}

/* ---- streams and requests ---- */

struct watch_stream *watch_stream_new(struct grpc_call *c)
{
    if (hub.stopped)
        return NULL;
    struct watch_stream *ws = cairn_calloc(1, sizeof *ws);
    ws->call = c;
    ws->next = hub.streams;
    if (hub.streams)
        hub.streams->prev = ws;
    hub.streams = ws;
    metrics_watch_streams(1);
    return ws;
}

void watch_stream_free(struct watch_stream *ws)
{
    while (ws->watchers)
        watcher_free(ws->watchers);
    if (ws->prev)
        ws->prev->next = ws->next;
    else
        hub.streams = ws->next;
    if (ws->next)
        ws->next->prev = ws->prev;
    metrics_watch_streams(-1);
    cairn_free(ws);
}

static struct watcher *find_watcher(struct watch_stream *ws, int64_t id)
{
    for (struct watcher *w = ws->watchers; w != NULL; w = w->s_next)
        if (w->id == id)
            return w;
    return NULL;
}

static void create_failed(struct watch_stream *ws, const char *reason)
{
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.watch_id = -1;
    r.created = 1;
    r.canceled = 1;
    r.cancel_reason = (char *)reason;
    send_ctrl(ws, &r, hub.rev);
}

void watch_create_refused(struct watch_stream *ws, const char *reason)
{
    create_failed(ws, reason);
}

static int key_cmp(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al < bl ? -1 : al > bl);
}

void watch_create(struct watch_stream *ws,
                  const Etcdserverpb__WatchCreateRequest *r)
{
    static const uint8_t zero = 0;
    const uint8_t *key = r->key.data;
    size_t klen = r->key.len;
    enum wrange_kind kind = WR_RANGE;
    int64_t id = r->watch_id, start = r->start_revision;

    if (klen == 0) { /* etcd watches "\0" for an empty key */
        key = &zero;
        klen = 1;
    }
    if (r->range_end.len == 0)
        kind = WR_KEY;
    else if (r->range_end.len == 1 && r->range_end.data[0] == 0)
        kind = WR_FROM;
    if (kind == WR_RANGE &&
        key_cmp(key, klen, r->range_end.data, r->range_end.len) >= 0) {
        create_failed(ws, "mvcc: watcher range is empty");
        return;
    }
    if (start < 0) { /* etcd 3.6 rejects negative start revisions */
        create_failed(ws, "etcdserver: mvcc: required revision has been compacted");
        return;
    }
    if (id == 0) {
        while (find_watcher(ws, ws->next_id) != NULL)
            ws->next_id++;
        id = ws->next_id++;
    } else if (find_watcher(ws, id) != NULL) {
        create_failed(ws, "mvcc: duplicate watch ID provided on the WatchStream");
        return;
    }

    struct watcher *w = cairn_calloc(1, sizeof *w);
    w->id = id;
    w->kind = kind;
    w->klen = klen;
    w->key = cairn_malloc(klen);
    memcpy(w->key, key, klen);
    if (kind == WR_RANGE) {
        w->elen = r->range_end.len;
        w->end = cairn_malloc(w->elen);
        memcpy(w->end, r->range_end.data, w->elen);
    }
    w->prev_kv = r->prev_kv;
    w->fragment = r->fragment;
    w->progress = r->progress_notify;
    w->progress_idle = 1;
    for (size_t i = 0; i < r->n_filters; i++) {
        if (r->filters[i] == ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NOPUT)
            w->noput = 1;
        else if (r->filters[i] ==
                 ETCDSERVERPB__WATCH_CREATE_REQUEST__FILTER_TYPE__NODELETE)
            w->nodelete = 1;
    }
    w->ws = ws;
    w->s_next = ws->watchers;
    if (ws->watchers)
        ws->watchers->s_prev = w;
    ws->watchers = w;
    metrics_watchers(1);

    /* The created response goes first: every event for this watcher is
     * queued after it. */
    Etcdserverpb__WatchResponse cr = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    cr.watch_id = id;
    cr.created = 1;
    send_ctrl(ws, &cr, hub.rev);

    if (start == 0 || start > hub.rev) {
        w->min_rev = start > hub.rev + 1 ? start : hub.rev + 1;
        w->synced = 1;
        widx_add(&hub.ix, w);
    } else {
        w->min_rev = start;
        make_unsynced(w);
    }
}

void watch_cancel(struct watch_stream *ws, int64_t id)
{
    struct watcher *w = find_watcher(ws, id);
    if (w == NULL)
        return; /* etcd answers nothing for an unknown id */
    watcher_free(w);
    Etcdserverpb__WatchResponse r = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    r.watch_id = id;
    r.canceled = 1;
    send_ctrl(ws, &r, hub.rev);
}

void watch_init(uv_loop_t *loop, struct mvcc *m, int64_t rev,
                const struct watch_opts *o)
{
    memset(&hub, 0, sizeof hub);
    hub.loop = loop;
    hub.m = m;
    hub.o = *o;
    hub.rev = rev;
    widx_init(&hub.ix);
    uv_timer_init(loop, &hub.sync_timer);
    uv_timer_init(loop, &hub.progress_timer);
    uv_timer_start(&hub.progress_timer, on_progress_timer,
                   (uint64_t)o->progress_interval_ms,
                   (uint64_t)o->progress_interval_ms);
    uv_unref((uv_handle_t *)&hub.progress_timer);
    uv_unref((uv_handle_t *)&hub.sync_timer);
}

void watch_shutdown(void)
{
    hub.stopped = 1;
    while (hub.streams != NULL) {
        struct watch_stream *ws = hub.streams;
        struct grpc_call *c = ws->call;
        c->ud = NULL;
        watch_stream_free(ws);
        grpc_finish(c, GRPC_UNAVAILABLE, "etcdserver: server stopped");
    }
    uv_timer_stop(&hub.sync_timer);
    uv_timer_stop(&hub.progress_timer);
    uv_close((uv_handle_t *)&hub.sync_timer, NULL);
    uv_close((uv_handle_t *)&hub.progress_timer, NULL);
    widx_free(&hub.ix);
}
