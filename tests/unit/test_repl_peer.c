/* The peer transport: the wire codec on its own (every raft message type,
 * malformed and truncated input), then two or three repl_peer instances on
 * one loop over 127.0.0.1 (ports from bind(0), so only our own listeners
 * are ever dialed): round trips, app messages, dead and restarted members,
 * refused hellos, image streaming, TLS. Loops are bounded by deadline
 * timers; nothing asserts on timing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <raft.h>
#include <uv.h>

#include "core/log.h"
#include "repl/peer.h"
#include "repl/peer_int.h"

#define CLUSTER 0x1234abcdULL
#define MAXMSG 64

/* ---- helpers: messages ---- */

/* Frees a received message as libraft does (entryBatchesDestroy,
 * configuration close, snapshot data free), so ASan checks the ownership
 * the transport handed over. */
static void free_like_raft(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.entries != NULL) {
        void *batch = NULL;
        for (unsigned i = 0; i < m->append_entries.n_entries; i++) {
            assert_non_null(m->append_entries.entries[i].batch);
            if (m->append_entries.entries[i].batch != batch) {
                batch = m->append_entries.entries[i].batch;
                raft_free(batch);
            }
        }
        raft_free(m->append_entries.entries);
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
    }
}

static char e_data1[] = "hello entry one";
static char e_data3[] = "third entry, after an empty one";
static struct raft_entry sample_entries[3] = {
    {7, RAFT_COMMAND, {e_data1, sizeof e_data1}, NULL},
    {7, RAFT_BARRIER, {NULL, 0}, NULL},
    {8, RAFT_CHANGE, {e_data3, sizeof e_data3}, NULL},
};
static struct raft_server sample_servers[3] = {
    {1, "http://127.0.0.1:1", RAFT_VOTER},
    {2, "https://[::1]:2", RAFT_STANDBY},
    {0x1122334455667788ULL, "x", RAFT_SPARE},
};
static char snap_data[] = "raft snapshot record";

/* One message of each type with every field set to something distinct. */
static struct raft_message sample(int type)
{
    struct raft_message m;
    memset(&m, 0, sizeof m);
    m.type = (unsigned short)type;
    switch (type) {
    case RAFT_IO_REQUEST_VOTE:
        m.request_vote = (struct raft_request_vote){
            .term = 0x0102030405060708ULL, .candidate_id = 3,
            .last_log_index = 99, .last_log_term = 6,
            .disrupt_leader = true, .pre_vote = true};
        break;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        m.request_vote_result = (struct raft_request_vote_result){
            .term = 11, .vote_granted = true, .pre_vote = raft_tribool_false};
        break;
    case RAFT_IO_APPEND_ENTRIES:
        m.append_entries = (struct raft_append_entries){
            .term = 9, .prev_log_index = 100, .prev_log_term = 8,
            .leader_commit = 97, .entries = sample_entries, .n_entries = 3};
        break;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        m.append_entries_result = (struct raft_append_entries_result){
            .term = 12, .rejected = 44, .last_log_index = 43};
        break;
    case RAFT_IO_INSTALL_SNAPSHOT:
        m.install_snapshot.term = 13;
        m.install_snapshot.last_index = 5000;
        m.install_snapshot.last_term = 12;
        m.install_snapshot.conf.servers = sample_servers;
        m.install_snapshot.conf.n = 3;
        m.install_snapshot.conf_index = 4321;
        m.install_snapshot.data.base = snap_data;
        m.install_snapshot.data.len = sizeof snap_data;
        break;
    case RAFT_IO_TIMEOUT_NOW:
        m.timeout_now = (struct raft_timeout_now){
            .term = 14, .last_log_index = 77, .last_log_term = 13};
        break;
    }
    return m;
}

static void assert_same(const struct raft_message *a, const struct raft_message *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case RAFT_IO_REQUEST_VOTE: {
        const struct raft_request_vote *x = &a->request_vote, *y = &b->request_vote;
        assert_true(x->term == y->term && x->candidate_id == y->candidate_id);
        assert_true(x->last_log_index == y->last_log_index);
        assert_true(x->last_log_term == y->last_log_term);
        assert_int_equal(x->disrupt_leader, y->disrupt_leader);
        assert_int_equal(x->pre_vote, y->pre_vote);
        break;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT:
        assert_true(a->request_vote_result.term == b->request_vote_result.term);
        assert_int_equal(a->request_vote_result.vote_granted,
                         b->request_vote_result.vote_granted);
        assert_int_equal(a->request_vote_result.pre_vote,
                         b->request_vote_result.pre_vote);
        break;
    case RAFT_IO_APPEND_ENTRIES: {
        const struct raft_append_entries *x = &a->append_entries,
                                         *y = &b->append_entries;
        assert_true(x->term == y->term && x->prev_log_index == y->prev_log_index);
        assert_true(x->prev_log_term == y->prev_log_term);
        assert_true(x->leader_commit == y->leader_commit);
        assert_int_equal(x->n_entries, y->n_entries);
        for (unsigned i = 0; i < x->n_entries; i++) {
            assert_true(x->entries[i].term == y->entries[i].term);
            assert_int_equal(x->entries[i].type, y->entries[i].type);
            assert_int_equal(x->entries[i].buf.len, y->entries[i].buf.len);
            if (x->entries[i].buf.len > 0)
                assert_memory_equal(x->entries[i].buf.base, y->entries[i].buf.base,
                                    x->entries[i].buf.len);
        }
        break;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        assert_true(a->append_entries_result.term == b->append_entries_result.term);
        assert_true(a->append_entries_result.rejected ==
                    b->append_entries_result.rejected);
        assert_true(a->append_entries_result.last_log_index ==
                    b->append_entries_result.last_log_index);
        break;
    case RAFT_IO_INSTALL_SNAPSHOT: {
        const struct raft_install_snapshot *x = &a->install_snapshot,
                                           *y = &b->install_snapshot;
        assert_true(x->term == y->term && x->last_index == y->last_index);
        assert_true(x->last_term == y->last_term && x->conf_index == y->conf_index);
        assert_int_equal(x->conf.n, y->conf.n);
        for (unsigned i = 0; i < x->conf.n; i++) {
            assert_true(x->conf.servers[i].id == y->conf.servers[i].id);
            assert_string_equal(x->conf.servers[i].address,
                                y->conf.servers[i].address);
            assert_int_equal(x->conf.servers[i].role, y->conf.servers[i].role);
        }
        assert_int_equal(x->data.len, y->data.len);
        assert_memory_equal(x->data.base, y->data.base, x->data.len);
        break;
    }
    case RAFT_IO_TIMEOUT_NOW:
        assert_true(a->timeout_now.term == b->timeout_now.term);
        assert_true(a->timeout_now.last_log_index == b->timeout_now.last_log_index);
        assert_true(a->timeout_now.last_log_term == b->timeout_now.last_log_term);
        break;
    default:
        fail();
    }
}

/* The whole encoded frame of @m (header, then the data pieces). */
static uint8_t *encode_frame(const struct raft_message *m, size_t *n)
{
    uint8_t *hdr;
    size_t hl, fl;
    assert_int_equal(peer__encode_raft(m, 0, &hdr, &hl, &fl), 0);
    uint8_t *f = malloc(fl);
    memcpy(f, hdr, hl);
    free(hdr);
    const void *base[8];
    size_t len[8];
    unsigned nb = peer__raft_bufs(m, base, len);
    size_t off = hl;
    for (unsigned i = 0; i < nb; i++) {
        memcpy(f + off, base[i], len[i]);
        off += len[i];
    }
    assert_int_equal(off, fl);
    *n = fl;
    return f;
}

/* ---- codec tests ---- */

static void codec_roundtrips_every_type(void **state)
{
    (void)state;
    for (int t = RAFT_IO_APPEND_ENTRIES; t <= RAFT_IO_TIMEOUT_NOW; t++) {
        struct raft_message m = sample(t), d;
        size_t n;
        uint8_t *f = encode_frame(&m, &n);
        assert_int_equal(f[4], t);
        size_t body = (size_t)f[0] | (size_t)f[1] << 8 | (size_t)f[2] << 16 |
                      (size_t)f[3] << 24;
        assert_int_equal(body + PEER_FRAME_HDR, n);
        assert_int_equal(peer__decode_raft(t, f + PEER_FRAME_HDR, body, &d), 0);
        assert_same(&m, &d);
        if (t == RAFT_IO_APPEND_ENTRIES) /* one batch for all the data */
            assert_ptr_equal(d.append_entries.entries[0].batch,
                             d.append_entries.entries[2].batch);
        free_like_raft(&d);
        free(f);
    }
    /* the other tribool values and flags */
    struct raft_message m = sample(RAFT_IO_REQUEST_VOTE_RESULT), d;
    for (int pv = raft_tribool_unknown; pv <= raft_tribool_false; pv++) {
        m.request_vote_result.pre_vote = (raft_tribool)pv;
        m.request_vote_result.vote_granted = pv == 1;
        size_t n;
        uint8_t *f = encode_frame(&m, &n);
        assert_int_equal(peer__decode_raft(m.type, f + 8, n - 8, &d), 0);
        assert_same(&m, &d);
        free(f);
    }
    m = sample(RAFT_IO_REQUEST_VOTE);
    m.request_vote.disrupt_leader = false;
    size_t n;
    uint8_t *f = encode_frame(&m, &n);
    assert_int_equal(peer__decode_raft(m.type, f + 8, n - 8, &d), 0);
    assert_same(&m, &d);
    free(f);
    /* an append entries without entries (a heartbeat) */
    m = sample(RAFT_IO_APPEND_ENTRIES);
    m.append_entries.n_entries = 0;
    m.append_entries.entries = NULL;
    f = encode_frame(&m, &n);
    assert_int_equal(peer__decode_raft(m.type, f + 8, n - 8, &d), 0);
    assert_same(&m, &d);
    assert_null(d.append_entries.entries);
    free(f);
}

static void codec_refuses_what_it_cannot_send(void **state)
{
    (void)state;
    uint8_t *hdr;
    size_t hl, fl;
    struct raft_message m = sample(RAFT_IO_APPEND_ENTRIES);
    /* never read: the size is refused first */
    struct raft_entry big = {1, RAFT_COMMAND, {e_data1, PEER_DATA_MAX + 1}, NULL};
    m.append_entries.entries = &big;
    m.append_entries.n_entries = 1;
    assert_int_equal(peer__encode_raft(&m, 0, &hdr, &hl, &fl), -EMSGSIZE);
    struct raft_entry bad = {1, 9, {NULL, 0}, NULL};
    m.append_entries.entries = &bad;
    assert_int_equal(peer__encode_raft(&m, 0, &hdr, &hl, &fl), -EINVAL);
    m.type = 99;
    assert_int_equal(peer__encode_raft(&m, 0, &hdr, &hl, &fl), -EINVAL);
}

static uint64_t rng = 88172645463325252ULL;
static uint64_t xorshift(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void decode_any(unsigned kind, const uint8_t *b, size_t n)
{
    struct raft_message d;
    /* A private copy of exactly @n bytes, so ASan sees any over-read. */
    uint8_t *copy = malloc(n ? n : 1);
    memcpy(copy, b, n);
    if (peer__decode_raft(kind, copy, n, &d) == 0)
        free_like_raft(&d);
    free(copy);
}

static void codec_survives_malformed_input(void **state)
{
    (void)state;
    for (int t = RAFT_IO_APPEND_ENTRIES; t <= RAFT_IO_TIMEOUT_NOW; t++) {
        struct raft_message m = sample(t), d;
        size_t n;
        uint8_t *f = encode_frame(&m, &n);
        uint8_t *body = f + PEER_FRAME_HDR;
        size_t bl = n - PEER_FRAME_HDR;
        /* every truncation is refused (lengths must match exactly) */
        for (size_t cut = 0; cut < bl; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, body, cut);
            assert_int_equal(peer__decode_raft(t, copy, cut, &d), -EPROTO);
            free(copy);
        }
        /* trailing garbage too */
        uint8_t *longer = malloc(bl + 1);
        memcpy(longer, body, bl);
        longer[bl] = 0;
        assert_int_equal(peer__decode_raft(t, longer, bl + 1, &d), -EPROTO);
        free(longer);
        /* random byte flips: any outcome but a crash or over-read */
        for (int i = 0; i < 2000; i++) {
            uint8_t *copy = malloc(bl);
            memcpy(copy, body, bl);
            for (int k = 0; k < 1 + (int)(xorshift() % 4); k++)
                copy[xorshift() % bl] = (uint8_t)xorshift();
            decode_any((unsigned)t, copy, bl);
            free(copy);
        }
        free(f);
    }
    /* random bodies of random kinds and sizes */
    for (int i = 0; i < 20000; i++) {
        uint8_t buf[300];
        size_t n = xorshift() % sizeof buf;
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)(xorshift() % 4 == 0 ? 0xff : xorshift() % 3);
        decode_any((unsigned)(xorshift() % 8), buf, n);
    }
    /* an entry count that would need more memory than the body has */
    uint8_t ae[4 * 8 + 4] = {0};
    ae[32] = ae[33] = ae[34] = ae[35] = 0xff;
    struct raft_message d;
    assert_int_equal(peer__decode_raft(RAFT_IO_APPEND_ENTRIES, ae, sizeof ae, &d),
                     -EPROTO);
    /* hellos: truncated ones need more, wrong magic or version is refused */
    uint8_t h[PEER_HELLO_LEN + 3];
    peer__hello_encode(h, 1, 2, 3, 3);
    memcpy(h + PEER_HELLO_LEN, "abc", 3);
    struct peer_hello ph;
    for (size_t cut = 0; cut < sizeof h; cut++)
        assert_int_equal(peer__hello_decode(h, cut, &ph), 0);
    assert_int_equal(peer__hello_decode(h, sizeof h, &ph), sizeof h);
    assert_true(ph.cluster_id == 1 && ph.from == 2 && ph.to == 3);
    assert_memory_equal(ph.addr, "abc", 3);
    h[4] = 9;
    assert_int_equal(peer__hello_decode(h, sizeof h, &ph), -EPROTO);
    assert_int_equal(peer__hello_decode((const uint8_t *)"GET / HTTP/1.1", 14, &ph),
                     -EPROTO);
    assert_int_equal(peer__hello_decode((const uint8_t *)"\x16\x03", 2, &ph), -EPROTO);
}

/* ---- the network fixture ---- */

struct node {
    struct fixture *f;
    struct repl_peer *p;
    uint64_t id;
    int port;
    char url[64];
    int closed;
    struct raft_message msgs[MAXMSG];
    char *addrs[MAXMSG];
    int nmsg, total;
    int app_type, napp;
    uint64_t app_from;
    uint8_t app_data[64];
    size_t app_len;
    char image_path[512]; /* sent by image_open */
    char got_image[512];  /* received */
    uint64_t got_index;
    int nimage;
};

struct fixture {
    uv_loop_t loop;
    char dir[64];
    struct node n[3];
};

static void on_recv_raft(void *ud, struct raft_message *m)
{
    struct node *n = ud;
    n->total++;
    if (n->nmsg == MAXMSG) { /* counted only */
        free_like_raft(m);
        return;
    }
    n->addrs[n->nmsg] = strdup(m->server_address);
    n->msgs[n->nmsg++] = *m;
}

static void on_recv_app(void *ud, uint64_t from, int type, const uint8_t *d,
                        size_t len)
{
    struct node *n = ud;
    n->napp++;
    n->app_from = from;
    n->app_type = type;
    n->app_len = len < sizeof n->app_data ? len : sizeof n->app_data;
    memcpy(n->app_data, d, n->app_len);
}

static int on_image_open(void *ud, uint64_t index)
{
    struct node *n = ud;
    assert_int_equal(index, 5000);
    int fd = open(n->image_path, O_RDONLY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static void on_image_received(void *ud, uint64_t index, const char *path)
{
    struct node *n = ud;
    n->nimage++;
    n->got_index = index;
    snprintf(n->got_image, sizeof n->got_image, "%s", path);
}

static int start_tls(struct fixture *f, int i, uint64_t id, uint64_t cluster,
                     int port, const struct repl_peer_tls *tls)
{
    struct node *n = &f->n[i];
    char err[256] = "", listen[80], imgdir[128];
    n->f = f;
    n->id = id;
    n->closed = 0;
    snprintf(listen, sizeof listen, "%s://127.0.0.1:%d", tls ? "https" : "http",
             port);
    snprintf(imgdir, sizeof imgdir, "%s/img%d", f->dir, i);
    mkdir(imgdir, 0700);
    struct repl_peer_opts o = {
        .cluster_id = cluster, .self_id = id, .listen_urls = listen, .tls = tls,
        .image_dir = imgdir, .ud = n, .recv_raft = on_recv_raft,
        .recv_app = on_recv_app, .image_open = on_image_open,
        .image_received = on_image_received};
    int rc = repl_peer_start(&f->loop, &o, &n->p, err, sizeof err);
    if (rc != 0)
        return rc;
    n->port = repl_peer_port(n->p, 0);
    assert_true(n->port > 0);
    snprintf(n->url, sizeof n->url, "%s://127.0.0.1:%d", tls ? "https" : "http",
             n->port);
    return 0;
}

static void start(struct fixture *f, int i, uint64_t id, uint64_t cluster)
{
    assert_int_equal(start_tls(f, i, id, cluster, 0, NULL), 0);
}

static int expired;
static void on_deadline(uv_timer_t *t)
{
    (void)t;
    expired = 1;
}

/* Runs the loop until @cond(@arg) or @ms pass; returns cond. */
static int run_until(struct fixture *f, int (*cond)(void *), void *arg, int ms)
{
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    expired = 0;
    uv_timer_start(&t, on_deadline, (uint64_t)ms, 0);
    while (!cond(arg) && !expired)
        uv_run(&f->loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return cond(arg);
}

static int is_set(void *arg)
{
    return *(int *)arg != 0;
}

static void on_closed(void *ud)
{
    *(int *)ud = 1;
}

static void stop(struct fixture *f, int i)
{
    struct node *n = &f->n[i];
    if (n->p == NULL)
        return;
    repl_peer_close(n->p, on_closed, &n->closed);
    assert_true(run_until(f, is_set, &n->closed, 10000));
    n->p = NULL;
    for (int k = 0; k < n->nmsg; k++) {
        free_like_raft(&n->msgs[k]);
        free(n->addrs[k]);
    }
    n->nmsg = 0;
}

struct sent {
    int done, status, calls;
};

static void on_sent(void *ud, int status)
{
    struct sent *s = ud;
    s->calls++;
    s->done = 1;
    s->status = status;
}

static int sent_done(void *arg)
{
    return ((struct sent *)arg)->done;
}

static int send_to(struct fixture *f, int from, int to_i, struct raft_message m,
                   struct sent *s)
{
    memset(s, 0, sizeof *s);
    m.server_id = f->n[to_i].id;
    int rc = repl_peer_send_raft(f->n[from].p, &m, on_sent, s);
    if (rc == 0)
        assert_int_equal(s->calls, 0); /* never inside send */
    return rc;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    snprintf(f->dir, sizeof f->dir, "/tmp/cairn-peer-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    log_threshold = LOG_ERROR; /* refusals are expected here */
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 3; i++)
        stop(f, i);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

struct count_arg {
    struct node *n;
    int want;
};

static int has_msgs(void *arg)
{
    struct count_arg *a = arg;
    return a->n->nmsg >= a->want;
}

/* ---- network tests ---- */

static void every_type_round_trips(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    f->n[0].image_path[0] = 0;
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s[RAFT_IO_TIMEOUT_NOW + 1];
    for (int t = RAFT_IO_APPEND_ENTRIES; t <= RAFT_IO_TIMEOUT_NOW; t++) {
        if (t == RAFT_IO_INSTALL_SNAPSHOT)
            continue; /* with an image: its own test */
        assert_int_equal(send_to(f, 0, 1, sample(t), &s[t]), 0);
    }
    struct count_arg a = {&f->n[1], 5};
    assert_true(run_until(f, has_msgs, &a, 5000));
    for (int t = RAFT_IO_APPEND_ENTRIES, k = 0; t <= RAFT_IO_TIMEOUT_NOW; t++) {
        if (t == RAFT_IO_INSTALL_SNAPSHOT)
            continue;
        assert_true(run_until(f, sent_done, &s[t], 5000));
        assert_int_equal(s[t].status, 0);
        assert_int_equal(s[t].calls, 1);
        struct raft_message *got = &f->n[1].msgs[k];
        struct raft_message want = sample(t);
        assert_same(&want, got);
        assert_true(got->server_id == 1);
        assert_string_equal(f->n[1].addrs[k], "http://127.0.0.1:0");
        k++;
    }
    assert_true(repl_peer_active(f->n[1].p, 1, 60000));
    assert_false(repl_peer_active(f->n[0].p, 2, 60000)); /* nothing back yet */
    assert_false(repl_peer_active(f->n[1].p, 3, 60000));
}

static void install_snapshot_without_image_source(void **state)
{
    struct fixture *f = *state;
    /* No image_open: the snapshot message alone, data included. */
    char err[256];
    struct repl_peer_opts o = {.cluster_id = CLUSTER, .self_id = 1,
                               .listen_urls = "http://127.0.0.1:0",
                               .ud = &f->n[0], .recv_raft = on_recv_raft};
    f->n[0].id = 1;
    assert_int_equal(repl_peer_start(&f->loop, &o, &f->n[0].p, err, sizeof err), 0);
    start(f, 1, 2, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_INSTALL_SNAPSHOT), &s), 0);
    struct count_arg a = {&f->n[1], 1};
    assert_true(run_until(f, has_msgs, &a, 5000));
    struct raft_message want = sample(RAFT_IO_INSTALL_SNAPSHOT);
    assert_same(&want, &f->n[1].msgs[0]);
    assert_int_equal(f->n[1].nimage, 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, 0);
}

static int app_arrived(void *arg)
{
    return ((struct node *)arg)->napp > 0;
}

static void app_messages_both_ways(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    repl_peer_set_urls(f->n[1].p, 1, f->n[0].url);
    assert_int_equal(repl_peer_send_app(f->n[0].p, 2, 7, (const uint8_t *)"ping", 4), 0);
    assert_true(run_until(f, app_arrived, &f->n[1], 5000));
    assert_int_equal(f->n[1].app_type, 7);
    assert_true(f->n[1].app_from == 1);
    assert_int_equal(f->n[1].app_len, 4);
    assert_memory_equal(f->n[1].app_data, "ping", 4);
    assert_int_equal(repl_peer_send_app(f->n[1].p, 1, -3, NULL, 0), 0);
    assert_true(run_until(f, app_arrived, &f->n[0], 5000));
    assert_int_equal(f->n[0].app_type, -3);
    assert_int_equal(f->n[0].app_len, 0);
    assert_true(repl_peer_active(f->n[0].p, 2, 60000));
    assert_int_equal(repl_peer_send_app(f->n[0].p, 9, 1, NULL, 0), -ENOTCONN);
}

static void dead_member_fails_fast(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    /* A port that was ours a moment ago and is closed now. */
    start(f, 1, 2, CLUSTER);
    char dead[64];
    snprintf(dead, sizeof dead, "%s", f->n[1].url);
    stop(f, 1);
    struct sent s;
    /* unknown member */
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s), 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, RAFT_NOCONNECTION);
    repl_peer_set_urls(f->n[0].p, 2, dead);
    for (int i = 0; i < 3; i++) { /* the connect, then the backoff */
        assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_APPEND_ENTRIES), &s), 0);
        assert_true(run_until(f, sent_done, &s, 5000));
        assert_int_equal(s.status, RAFT_NOCONNECTION);
        assert_int_equal(s.calls, 1);
    }
    assert_int_equal(repl_peer_send_app(f->n[0].p, 2, 1, NULL, 0), -ENOTCONN);
    /* too big: refused before anything is queued */
    struct raft_message m = sample(RAFT_IO_APPEND_ENTRIES);
    struct raft_entry big = {1, RAFT_COMMAND, {e_data1, PEER_DATA_MAX + 1}, NULL};
    m.append_entries.entries = &big;
    m.append_entries.n_entries = 1;
    assert_int_equal(send_to(f, 0, 1, m, &s), -EMSGSIZE);
}

static void second_url_used_when_first_fails(void **state)
{
    struct fixture *f = *state;
    start(f, 2, 3, CLUSTER);
    char dead[64];
    snprintf(dead, sizeof dead, "%s", f->n[2].url);
    stop(f, 2);
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    char urls[160];
    snprintf(urls, sizeof urls, "%s,%s", dead, f->n[1].url);
    repl_peer_set_urls(f->n[0].p, 2, urls);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s), 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, 0);
    struct count_arg a = {&f->n[1], 1};
    assert_true(run_until(f, has_msgs, &a, 5000));
}

struct resend {
    struct fixture *f;
    struct sent s;
    int sends;
};

/* Sends a heartbeat whenever the last one completed, until one arrives. */
static int resend_until_received(void *arg)
{
    struct resend *r = arg;
    if (r->f->n[1].nmsg > 0)
        return 1;
    if (r->sends == 0 || r->s.done) {
        r->sends++;
        assert_int_equal(send_to(r->f, 0, 1, sample(RAFT_IO_APPEND_ENTRIES_RESULT),
                                 &r->s), 0);
    }
    return 0;
}

static void sends_resume_after_peer_restart(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    int port = f->n[1].port;
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct resend r = {.f = f};
    assert_true(run_until(f, resend_until_received, &r, 5000));
    stop(f, 1);
    /* while it is down, sends fail */
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s), 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, RAFT_NOCONNECTION);
    /* back on the same port: sends resume (after the backoff) */
    assert_int_equal(start_tls(f, 1, 2, CLUSTER, port, NULL), 0);
    memset(&r, 0, sizeof r);
    r.f = f;
    assert_true(run_until(f, resend_until_received, &r, 10000));
    assert_int_equal(f->n[1].msgs[0].type, RAFT_IO_APPEND_ENTRIES_RESULT);
}

static void wrong_cluster_or_member_refused(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER + 1);
    char logpath[128], err[128];
    snprintf(logpath, sizeof logpath, "%s/log", f->dir);
    assert_int_equal(log_set_outputs(logpath, err, sizeof err), 0);
    log_threshold = LOG_WARN;
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s), 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, RAFT_NOCONNECTION);
    assert_int_equal(f->n[1].nmsg, 0);
    /* the right cluster, but the hello names another member */
    start(f, 2, 3, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 5, f->n[2].url);
    struct raft_message m = sample(RAFT_IO_TIMEOUT_NOW);
    m.server_id = 5;
    memset(&s, 0, sizeof s);
    assert_int_equal(repl_peer_send_raft(f->n[0].p, &m, on_sent, &s), 0);
    assert_true(run_until(f, sent_done, &s, 5000));
    assert_int_equal(s.status, RAFT_NOCONNECTION);
    assert_int_equal(f->n[2].nmsg, 0);
    log_reset_outputs();
    log_threshold = LOG_ERROR;
    char buf[8192] = "";
    FILE *lf = fopen(logpath, "r");
    assert_non_null(lf);
    size_t got = fread(buf, 1, sizeof buf - 1, lf);
    buf[got] = 0;
    fclose(lf);
    assert_non_null(strstr(buf, "cluster ID mismatch"));
    assert_non_null(strstr(buf, "hello for another member"));
}

static int total_1024(void *arg)
{
    return ((struct node *)arg)->total == 1024;
}

static void connect_queue_is_bounded(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    enum { N = 1100 };
    struct sent *s = calloc(N, sizeof *s);
    /* all sent before the loop runs: the connect is pending for each */
    for (int i = 0; i < N; i++)
        assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s[i]), 0);
    assert_true(run_until(f, sent_done, &s[N - 1], 5000));
    struct count_arg a = {&f->n[1], 1};
    assert_true(run_until(f, has_msgs, &a, 5000));
    int ok = 0, refused = 0;
    for (int i = 0; i < N; i++) {
        assert_true(run_until(f, sent_done, &s[i], 5000));
        assert_int_equal(s[i].calls, 1);
        ok += s[i].status == 0;
        refused += s[i].status == RAFT_NOCONNECTION;
    }
    assert_int_equal(ok, 1024);
    assert_int_equal(refused, N - 1024);
    assert_true(run_until(f, total_1024, &f->n[1], 5000));
    free(s);
}

/* A raw client that writes bytes to a listener and waits for it to hang
 * up. */
struct raw {
    uv_tcp_t tcp;
    uv_connect_t creq;
    uv_write_t wreq;
    uint8_t *bytes;
    size_t len;
    int eof, closed;
    char rbuf[4096];
};

static void raw_alloc(uv_handle_t *h, size_t n, uv_buf_t *b)
{
    (void)n;
    struct raw *r = h->data;
    *b = uv_buf_init(r->rbuf, sizeof r->rbuf);
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    (void)b;
    struct raw *r = s->data;
    if (n < 0)
        r->eof = 1; /* refused: the listener closed it */
}

static void raw_written(uv_write_t *w, int status)
{
    (void)w;
    (void)status;
}

static void raw_connected(uv_connect_t *c, int status)
{
    struct raw *r = c->data;
    if (status < 0) {
        r->eof = 1;
        return;
    }
    uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
    uv_buf_t b = uv_buf_init((char *)r->bytes, (unsigned)r->len);
    uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
}

static void raw_closed(uv_handle_t *h)
{
    ((struct raw *)h->data)->closed = 1;
}

/* Sends @len bytes to @port; 1 when the listener hung up, 0 when it kept
 * the connection open until @ms passed. */
static int raw_send(struct fixture *f, int port, const uint8_t *bytes, size_t len,
                    int ms)
{
    struct raw r;
    memset(&r, 0, sizeof r);
    struct sockaddr_in sa;
    uv_ip4_addr("127.0.0.1", port, &sa);
    r.bytes = malloc(len ? len : 1);
    memcpy(r.bytes, bytes, len);
    r.len = len;
    uv_tcp_init(&f->loop, &r.tcp);
    r.tcp.data = &r;
    r.creq.data = &r;
    assert_int_equal(uv_tcp_connect(&r.creq, &r.tcp, (struct sockaddr *)&sa,
                                    raw_connected), 0);
    int hung_up = run_until(f, is_set, &r.eof, ms);
    uv_close((uv_handle_t *)&r.tcp, raw_closed);
    assert_true(run_until(f, is_set, &r.closed, 5000));
    free(r.bytes);
    return hung_up;
}

/* A hello from member 1 to member 2 of CLUSTER, then @frame. */
static size_t with_hello(uint8_t *out, const uint8_t *frame, size_t len)
{
    peer__hello_encode(out, CLUSTER, 1, 2, 1);
    out[PEER_HELLO_LEN] = 'x';
    memcpy(out + PEER_HELLO_LEN + 1, frame, len);
    return PEER_HELLO_LEN + 1 + len;
}

static void garbage_from_the_network_is_refused(void **state)
{
    struct fixture *f = *state;
    start(f, 1, 2, CLUSTER);
    int port = f->n[1].port;
    uint8_t buf[2048], fr[1024];
    /* not a hello */
    assert_true(raw_send(f, port, (const uint8_t *)"GET / HTTP/1.1\r\n\r\n", 18,
                         5000));
    /* a frame larger than allowed */
    peer__frame_header(fr, PEER_FRAME_MAX + 1, RAFT_IO_TIMEOUT_NOW, 0);
    assert_true(raw_send(f, port, buf, with_hello(buf, fr, 8), 5000));
    /* image chunks without an install snapshot */
    peer__frame_header(fr, 3, PEER_K_IMAGE_CHUNK, 0);
    assert_true(raw_send(f, port, buf, with_hello(buf, fr, 11), 5000));
    /* an unknown kind */
    peer__frame_header(fr, 0, 99, 0);
    assert_true(raw_send(f, port, buf, with_hello(buf, fr, 8), 5000));
    /* every message type, each truncated by one byte */
    for (int t = RAFT_IO_APPEND_ENTRIES; t <= RAFT_IO_TIMEOUT_NOW; t++) {
        struct raft_message m = sample(t);
        size_t n;
        uint8_t *e = encode_frame(&m, &n);
        assert_true(n < sizeof fr);
        memcpy(fr, e, n);
        free(e);
        peer__frame_header(fr, n - PEER_FRAME_HDR - 1, (unsigned)t, 0);
        assert_true(raw_send(f, port, buf, with_hello(buf, fr, n - 1), 5000));
    }
    /* random frames after a good hello: refused or ignored, never a crash */
    for (int i = 0; i < 200; i++) {
        size_t n = 8 + xorshift() % 200;
        for (size_t k = 0; k < n; k++)
            fr[k] = (uint8_t)xorshift();
        size_t body = xorshift() % 300;
        peer__frame_header(fr, body, 1 + (unsigned)(xorshift() % 18),
                           (unsigned)(xorshift() % 2));
        raw_send(f, port, buf, with_hello(buf, fr, n), 30);
    }
    /* a connection cut in the middle of a frame */
    struct raft_message m = sample(RAFT_IO_APPEND_ENTRIES);
    size_t n;
    uint8_t *e = encode_frame(&m, &n);
    raw_send(f, port, buf, with_hello(buf, e, n / 2), 30);
    free(e);
    assert_int_equal(f->n[1].nmsg, 0);
    /* and the member still works */
    start(f, 0, 1, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_REQUEST_VOTE), &s), 0);
    struct count_arg a = {&f->n[1], 1};
    assert_true(run_until(f, has_msgs, &a, 5000));
    assert_int_equal(f->n[1].msgs[0].type, RAFT_IO_REQUEST_VOTE);
}

/* ---- image streaming ---- */

#define IMAGE_MB 64

static void make_image(const char *path)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    uint64_t *buf = malloc(1 << 20);
    for (int mb = 0; mb < IMAGE_MB; mb++) {
        for (size_t i = 0; i < (1 << 20) / 8; i++)
            buf[i] = xorshift();
        assert_int_equal(write(fd, buf, 1 << 20), 1 << 20);
    }
    /* an odd tail, so the last chunk is short */
    assert_int_equal(write(fd, buf, 12345), 12345);
    free(buf);
    close(fd);
}

static void sha256_file(const char *path, unsigned char out[32])
{
    int fd = open(path, O_RDONLY);
    assert_true(fd >= 0);
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    EVP_DigestInit_ex(x, EVP_sha256(), NULL);
    unsigned char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        EVP_DigestUpdate(x, buf, (size_t)n);
    EVP_DigestFinal_ex(x, out, NULL);
    EVP_MD_CTX_free(x);
    close(fd);
}

static long rss_kb(void)
{
    long pages = 0, rss = 0;
    FILE *fp = fopen("/proc/self/statm", "r");
    if (fp == NULL)
        return 0;
    if (fscanf(fp, "%ld %ld", &pages, &rss) != 2)
        rss = 0;
    fclose(fp);
    return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static long rss_max;
static void on_sample(uv_timer_t *t)
{
    (void)t;
    long r = rss_kb();
    if (r > rss_max)
        rss_max = r;
}

static int count_files(const char *dir)
{
    DIR *d = opendir(dir);
    int n = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;)
        n += e->d_name[0] != '.' || strncmp(e->d_name, ".peer-image", 11) == 0;
    if (d != NULL)
        closedir(d);
    return n;
}

static void image_streams_in_chunks(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    snprintf(f->n[0].image_path, sizeof f->n[0].image_path, "%s/image", f->dir);
    make_image(f->n[0].image_path);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    long base = rss_kb();
    rss_max = base;
    uv_timer_t sampler;
    uv_timer_init(&f->loop, &sampler);
    uv_timer_start(&sampler, on_sample, 1, 1);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_INSTALL_SNAPSHOT), &s), 0);
    /* heartbeats go on while the image streams */
    struct sent hb;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_APPEND_ENTRIES), &hb), 0);
    struct count_arg a = {&f->n[1], 2};
    assert_true(run_until(f, has_msgs, &a, 60000));
    assert_true(run_until(f, sent_done, &s, 10000));
    uv_close((uv_handle_t *)&sampler, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* it lives on this stack */
    assert_int_equal(s.status, 0);
    assert_int_equal(f->n[1].nimage, 1);
    assert_int_equal(f->n[1].got_index, 5000);
    /* the message comes after the image, with its fields intact */
    struct raft_message *got = NULL;
    for (int i = 0; i < f->n[1].nmsg; i++)
        if (f->n[1].msgs[i].type == RAFT_IO_INSTALL_SNAPSHOT)
            got = &f->n[1].msgs[i];
    assert_non_null(got);
    struct raft_message want = sample(RAFT_IO_INSTALL_SNAPSHOT);
    assert_same(&want, got);
    unsigned char h1[32], h2[32];
    sha256_file(f->n[0].image_path, h1);
    sha256_file(f->n[1].got_image, h2);
    assert_memory_equal(h1, h2, 32);
    struct stat st1, st2;
    assert_int_equal(stat(f->n[0].image_path, &st1), 0);
    assert_int_equal(stat(f->n[1].got_image, &st2), 0);
    assert_int_equal(st1.st_size, st2.st_size);
    /* Neither side held the image whole. ASan's quarantine keeps freed
     * buffers resident, so the bound is only meaningful without it. */
#if !defined(__SANITIZE_ADDRESS__)
    print_message("rss grew by %ld KiB while streaming %d MiB\n", rss_max - base,
                  IMAGE_MB);
    assert_true(rss_max - base < 24 * 1024);
#endif
    unlink(f->n[1].got_image);
}

static int has_partial_image(void *arg)
{
    struct fixture *f = arg;
    char dir[128];
    snprintf(dir, sizeof dir, "%s/img1", f->dir);
    DIR *d = opendir(dir);
    int found = 0;
    for (struct dirent *e; d != NULL && (e = readdir(d)) != NULL;) {
        char p[400];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (strncmp(e->d_name, ".peer-image", 11) == 0 && stat(p, &st) == 0 &&
            st.st_size > 0)
            found = 1;
    }
    if (d != NULL)
        closedir(d);
    return found;
}

static int no_files(void *arg)
{
    return count_files(arg) == 0;
}

static void image_cut_short_is_discarded(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    snprintf(f->n[0].image_path, sizeof f->n[0].image_path, "%s/image", f->dir);
    make_image(f->n[0].image_path);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_INSTALL_SNAPSHOT), &s), 0);
    assert_true(run_until(f, has_partial_image, f, 30000));
    /* the sender goes away mid-stream */
    stop(f, 0);
    assert_true(s.done);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.status, RAFT_CANCELED);
    char dir[128];
    snprintf(dir, sizeof dir, "%s/img1", f->dir);
    /* the receiver notices the cut and deletes the partial file */
    assert_true(run_until(f, no_files, dir, 10000));
    assert_int_equal(f->n[1].nmsg, 0);
    assert_int_equal(f->n[1].nimage, 0);
}

static void close_cancels_queued_sends(void **state)
{
    struct fixture *f = *state;
    start(f, 0, 1, CLUSTER);
    start(f, 1, 2, CLUSTER);
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s[10];
    for (int i = 0; i < 10; i++)
        assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_APPEND_ENTRIES), &s[i]), 0);
    /* closing before the connect finished: every callback once, cancelled */
    stop(f, 0);
    for (int i = 0; i < 10; i++) {
        assert_int_equal(s[i].calls, 1);
        assert_int_equal(s[i].status, RAFT_CANCELED);
    }
}

static void bad_urls_refused(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct repl_peer *p = NULL;
    struct repl_peer_opts o = {.cluster_id = 1, .self_id = 1,
                               .recv_raft = on_recv_raft};
    const char *bad[] = {"unix:///tmp/x", "http://example.com:1", "http://127.0.0.1",
                         "https://127.0.0.1:0"};
    int want[] = {-EPROTONOSUPPORT, -EINVAL, -EINVAL, -EINVAL};
    for (int i = 0; i < 4; i++) {
        o.listen_urls = bad[i];
        assert_int_equal(repl_peer_start(&f->loop, &o, &p, err, sizeof err), want[i]);
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    /* IPv6 and localhost listen */
    o.listen_urls = "http://[::1]:0,http://localhost:0";
    int rc = repl_peer_start(&f->loop, &o, &p, err, sizeof err);
    if (rc == 0) {
        assert_true(repl_peer_port(p, 0) > 0 && repl_peer_port(p, 1) > 0);
        int closed = 0;
        repl_peer_close(p, on_closed, &closed);
        assert_true(run_until(f, is_set, &closed, 5000));
    } else {
        assert_int_equal(rc, -EADDRNOTAVAIL); /* no IPv6 on this host */
        uv_run(&f->loop, UV_RUN_NOWAIT);
    }
}

static void ipv6_round_trip(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct repl_peer_opts o = {.cluster_id = CLUSTER, .self_id = 2,
                               .listen_urls = "http://[::1]:0", .ud = &f->n[1],
                               .recv_raft = on_recv_raft};
    f->n[1].id = 2;
    if (repl_peer_start(&f->loop, &o, &f->n[1].p, err, sizeof err) != 0) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        skip(); /* no IPv6 loopback here */
    }
    start(f, 0, 1, CLUSTER);
    char url[64];
    snprintf(url, sizeof url, "http://[::1]:%d", repl_peer_port(f->n[1].p, 0));
    repl_peer_set_urls(f->n[0].p, 2, url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_REQUEST_VOTE), &s), 0);
    struct count_arg a = {&f->n[1], 1};
    assert_true(run_until(f, has_msgs, &a, 5000));
}

/* ---- TLS ---- */

static char certdir[64];

static int make_certs(void)
{
    snprintf(certdir, sizeof certdir, "/tmp/cairn-peer-certs-XXXXXX");
    if (mkdtemp(certdir) == NULL)
        return -1;
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "set -e; cd %s\n"
             "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout $1.key -out $1.pem -days 2 -subj /CN=$1 2>/dev/null; }\n"
             "leaf() { openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 "
             "-nodes -keyout $1.key -out $1.csr -subj /CN=$2 2>/dev/null\n"
             "  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n"
             "extendedKeyUsage=serverAuth,clientAuth\\n' > $1.ext\n"
             "  openssl x509 -req -in $1.csr -CA $3.pem -CAkey $3.key -CAcreateserial "
             "-days 2 -out $1.pem -extfile $1.ext 2>/dev/null; }\n"
             "ca ca1; ca ca2\n"
             "leaf member member ca1; leaf intruder intruder ca1; leaf foreign member ca2\n",
             certdir);
    return system(cmd) == 0 ? 0 : -1;
}

static struct repl_peer_tls tls_of(const char *leaf, const char *ca, char *buf)
{
    /* buf: 3 x 128 bytes for the paths */
    snprintf(buf, 128, "%s/%s.pem", certdir, leaf ? leaf : "");
    snprintf(buf + 128, 128, "%s/%s.key", certdir, leaf ? leaf : "");
    snprintf(buf + 256, 128, "%s/%s.pem", certdir, ca);
    return (struct repl_peer_tls){.cert_file = leaf ? buf : NULL,
                                  .key_file = leaf ? buf + 128 : NULL,
                                  .trusted_ca_file = buf + 256,
                                  .client_cert_auth = 1,
                                  .allowed_cn = "member"};
}

static int certs_setup(void **state)
{
    (void)state;
    return make_certs();
}

static int certs_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", certdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Node 1 (server: member cert, CA1, client-cert-auth, CN "member") and a
 * dialer with @tls; returns the send status. */
static int tls_case(struct fixture *f, const struct repl_peer_tls *dialer,
                    int dialer_listens_tls)
{
    char sb[384];
    struct repl_peer_tls srv = tls_of("member", "ca1", sb);
    assert_int_equal(start_tls(f, 1, 2, CLUSTER, 0, &srv), 0);
    if (dialer_listens_tls) {
        assert_int_equal(start_tls(f, 0, 1, CLUSTER, 0, dialer), 0);
    } else {
        /* plaintext listener; dials https with @dialer (may be NULL) */
        char err[256];
        struct repl_peer_opts o = {.cluster_id = CLUSTER, .self_id = 1,
                                   .listen_urls = "http://127.0.0.1:0",
                                   .tls = dialer, .ud = &f->n[0],
                                   .recv_raft = on_recv_raft};
        f->n[0].id = 1;
        assert_int_equal(repl_peer_start(&f->loop, &o, &f->n[0].p, err, sizeof err), 0);
    }
    repl_peer_set_urls(f->n[0].p, 2, f->n[1].url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_APPEND_ENTRIES), &s), 0);
    assert_true(run_until(f, sent_done, &s, 10000));
    if (s.status == 0) {
        struct count_arg a = {&f->n[1], 1};
        assert_true(run_until(f, has_msgs, &a, 5000));
        struct raft_message want = sample(RAFT_IO_APPEND_ENTRIES);
        assert_same(&want, &f->n[1].msgs[0]);
    } else {
        assert_int_equal(f->n[1].nmsg, 0);
    }
    return s.status;
}

static void tls_to_tls(void **state)
{
    char b[384];
    struct repl_peer_tls t = tls_of("member", "ca1", b);
    assert_int_equal(tls_case(*state, &t, 1), 0);
}

static void tls_wrong_ca_refused(void **state)
{
    char b[384];
    /* presents a CA2 certificate and trusts only CA2 */
    struct repl_peer_tls t = tls_of("foreign", "ca2", b);
    assert_int_equal(tls_case(*state, &t, 1), RAFT_NOCONNECTION);
}

static void tls_server_cert_from_unknown_ca_refused(void **state)
{
    char b[384];
    /* a good client certificate, but it trusts CA2 and the server has CA1 */
    struct repl_peer_tls t = tls_of("member", "ca2", b);
    assert_int_equal(tls_case(*state, &t, 1), RAFT_NOCONNECTION);
}

static void tls_wrong_cn_refused(void **state)
{
    struct fixture *f = *state;
    char b[384], logpath[128], err[128];
    snprintf(logpath, sizeof logpath, "%s/log", f->dir);
    assert_int_equal(log_set_outputs(logpath, err, sizeof err), 0);
    log_threshold = LOG_WARN;
    struct repl_peer_tls t = tls_of("intruder", "ca1", b);
    t.allowed_cn = NULL; /* the dialer itself would accept any CN */
    int rc = tls_case(f, &t, 1);
    log_reset_outputs();
    log_threshold = LOG_ERROR;
    assert_int_equal(rc, RAFT_NOCONNECTION);
    char buf[8192] = "";
    FILE *lf = fopen(logpath, "r");
    assert_non_null(lf);
    size_t got = fread(buf, 1, sizeof buf - 1, lf);
    buf[got] = 0;
    fclose(lf);
    assert_non_null(strstr(buf, "rejected connection"));
    assert_non_null(strstr(buf, "intruder"));
}

static void tls_missing_client_cert_refused(void **state)
{
    char b[384];
    struct repl_peer_tls t = tls_of(NULL, "ca1", b);
    assert_int_equal(tls_case(*state, &t, 0), RAFT_NOCONNECTION);
}

static void plaintext_to_tls_refused(void **state)
{
    struct fixture *f = *state;
    /* no TLS set up: an https URL cannot be dialed at all */
    assert_int_equal(tls_case(f, NULL, 0), RAFT_NOCONNECTION);
    /* a plaintext hello sent to the TLS port is refused there */
    char url[64];
    snprintf(url, sizeof url, "http://127.0.0.1:%d", f->n[1].port);
    repl_peer_set_urls(f->n[0].p, 2, url);
    struct sent s;
    assert_int_equal(send_to(f, 0, 1, sample(RAFT_IO_TIMEOUT_NOW), &s), 0);
    assert_true(run_until(f, sent_done, &s, 10000));
    assert_int_equal(s.status, RAFT_NOCONNECTION);
    assert_int_equal(f->n[1].nmsg, 0);
}

static void tls_files_that_do_not_load(void **state)
{
    struct fixture *f = *state;
    char err[256];
    struct repl_peer *p;
    struct repl_peer_tls t = {.cert_file = "/nonexistent.pem",
                              .key_file = "/nonexistent.key"};
    struct repl_peer_opts o = {.cluster_id = 1, .self_id = 1,
                               .listen_urls = "https://127.0.0.1:0", .tls = &t,
                               .recv_raft = on_recv_raft};
    assert_int_equal(repl_peer_start(&f->loop, &o, &p, err, sizeof err), -EPROTO);
    assert_non_null(strstr(err, "/nonexistent.pem"));
    uv_run(&f->loop, UV_RUN_NOWAIT);
}

int main(void)
{
    /* One group: tests/run-unit.sh counts a binary's last summary line. */
#define T(x) cmocka_unit_test_setup_teardown(x, setup, teardown)
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(codec_roundtrips_every_type),
        cmocka_unit_test(codec_refuses_what_it_cannot_send),
        cmocka_unit_test(codec_survives_malformed_input),
        T(every_type_round_trips),
        T(install_snapshot_without_image_source),
        T(app_messages_both_ways),
        T(dead_member_fails_fast),
        T(second_url_used_when_first_fails),
        T(sends_resume_after_peer_restart),
        T(wrong_cluster_or_member_refused),
        T(connect_queue_is_bounded),
        T(garbage_from_the_network_is_refused),
        T(image_streams_in_chunks),
        T(image_cut_short_is_discarded),
        T(close_cancels_queued_sends),
        T(bad_urls_refused),
        T(ipv6_round_trip),
        T(tls_to_tls),
        T(tls_wrong_ca_refused),
        T(tls_server_cert_from_unknown_ca_refused),
        T(tls_wrong_cn_refused),
        T(tls_missing_client_cert_refused),
        T(plaintext_to_tls_refused),
        T(tls_files_that_do_not_load),
    };
    /* the certificates are made once, with the openssl CLI */
    return cmocka_run_group_tests_name("repl peer", tests, certs_setup,
                                       certs_teardown);
}
