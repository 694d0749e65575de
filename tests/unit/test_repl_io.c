/* repl/io: group commit and ordering on the bare raft_io, then real libraft
 * 0.15 clusters (3 and 5 instances on one uv loop, each with its own
 * repl_io and data dir) over an in-memory network that delivers through
 * repl_io_deliver from a uv timer and can cut a node off: election,
 * replication, restart from disk, a partitioned leader whose entries are
 * truncated after the heal, snapshots with InstallSnapshot and log
 * compaction. Every wait is bounded by iterations and wall time; nothing
 * asserts on timing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "repl/io.h"
#include "repl/log.h"

#define MAXN 5
#define WAIT_MS 20000

/* ---- helpers ----------------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            rm_rf(p);
    }
    closedir(d);
    rmdir(dir);
}

/* Runs @loop until @pred holds, at most WAIT_MS and a bounded number of
 * iterations. Returns whether it holds. */
static int run_until(uv_loop_t *loop, int (*pred)(void *), void *arg)
{
    uint64_t deadline = now_ms() + WAIT_MS;
    for (long i = 0; i < 50000000L; i++) {
        if (pred(arg))
            return 1;
        if (now_ms() > deadline)
            return 0;
        uv_run(loop, UV_RUN_ONCE);
    }
    return pred(arg);
}

/* ---- the bare io: group commit, ordering, close ------------------------ */

struct bare {
    uv_loop_t loop;
    struct raft_io io;
    char dir[64];
    int order[64];
    int n_done;
    int closed;
    int done_before_close;
    int want;
};

struct bare_req {
    struct raft_io_append req;
    struct bare *b;
    int seq;
};

static void bare_append_cb(struct raft_io_append *req, int status)
{
    struct bare_req *r = req->data;
    assert_int_equal(status, 0);
    r->b->order[r->b->n_done++] = r->seq;
}

static void bare_close_cb(struct raft_io *io)
{
    struct bare *b = io->data;
    b->closed = 1;
    b->done_before_close = b->n_done;
}

static int no_send(void *ud, const struct raft_message *m,
                   void (*cb)(void *, int), void *cb_ud)
{
    return RAFT_NOCONNECTION;
}

static void noop_tick(struct raft_io *io)
{
}

static void noop_recv(struct raft_io *io, struct raft_message *m)
{
    repl_io_free_message(m);
}

static int n_done_is(void *arg)
{
    struct bare *b = arg;
    return b->n_done == b->want;
}

static int closed_p(void *arg)
{
    return ((struct bare *)arg)->closed;
}

static void bare_append(struct bare *b, struct bare_req *r, int seq,
                        raft_term term, char *data)
{
    struct raft_entry e = {.term = term, .type = RAFT_COMMAND,
                           .buf = {data, strlen(data)}};
    r->req.data = r;
    r->b = b;
    r->seq = seq;
    assert_int_equal(b->io.append(&b->io, &r->req, &e, 1, bare_append_cb), 0);
}

static void group_commit_and_submission_order(void **state)
{
    struct bare *b = calloc(1, sizeof *b);
    struct bare_req reqs[32];
    char data[32][16];
    struct repl_io_stats st;
    struct repl_io_opts o = {.send = no_send};
    raft_term term;
    raft_id vote;
    struct raft_snapshot *snap;
    raft_index start;
    struct raft_entry *e;
    size_t n;

    strcpy(b->dir, "/tmp/cairn-rio-XXXXXX");
    assert_non_null(mkdtemp(b->dir));
    o.dir = b->dir;
    uv_loop_init(&b->loop);
    assert_int_equal(repl_io_init(&b->io, &b->loop, &o), 0);
    b->io.data = b;
    assert_int_equal(b->io.init(&b->io, 1, "one"), 0);
    assert_int_equal(b->io.load(&b->io, &term, &vote, &snap, &start, &e, &n), 0);
    assert_int_equal(n, 0);

    /* Twenty appends queued before the writer runs: one round, one sync,
     * callbacks in submission order. */
    for (int i = 0; i < 20; i++) {
        snprintf(data[i], sizeof data[i], "e%d", i + 1);
        bare_append(b, &reqs[i], i, 1, data[i]);
    }
    assert_int_equal(b->io.start(&b->io, 1000, noop_tick, noop_recv), 0);
    b->want = 20;
    assert_true(run_until(&b->loop, n_done_is, b));
    repl_io_get_stats(&b->io, &st);
    assert_int_equal(st.rounds, 1);
    assert_int_equal(st.log.syncs, 1);
    assert_int_equal(st.log.appends, 20);

    /* Then a truncate into them and appends after it, in one go. */
    assert_int_equal(b->io.truncate(&b->io, 18), 0);
    for (int i = 20; i < 23; i++) {
        snprintf(data[i], sizeof data[i], "f%d", i - 2);
        bare_append(b, &reqs[i], i, 2, data[i]);
    }
    b->want = 23;
    assert_true(run_until(&b->loop, n_done_is, b));
    for (int i = 0; i < 23; i++)
        assert_int_equal(b->order[i], i);
    repl_io_get_stats(&b->io, &st);
    assert_int_equal(st.log.appends, 23);
    assert_int_equal(st.log.truncates, 1);

    /* Close right after more appends: their callbacks come first. */
    for (int i = 23; i < 28; i++) {
        snprintf(data[i], sizeof data[i], "g%d", i - 2);
        bare_append(b, &reqs[i], i, 2, data[i]);
    }
    b->io.close(&b->io, bare_close_cb);
    assert_true(run_until(&b->loop, closed_p, b));
    assert_int_equal(b->done_before_close, 28);
    assert_int_equal(uv_loop_close(&b->loop), 0);

    /* On disk: 1..17 from the first batch, 18..25 after the truncate. */
    struct repl_log *l;
    struct repl_log_opts lo = {.dir = b->dir};
    assert_int_equal(repl_log_open(&lo, &l, NULL), 0);
    assert_int_equal(repl_log_load(l, &term, &vote, &snap, &start, &e, &n), 0);
    assert_int_equal(start, 1);
    assert_int_equal(n, 25);
    assert_memory_equal(e[16].buf.base, "e17", 3);
    assert_memory_equal(e[17].buf.base, "f18", 3);
    assert_int_equal(e[17].term, 2);
    assert_memory_equal(e[24].buf.base, "g25", 3);
    raft_free(e[0].batch);
    raft_free(e);
    repl_log_close(l);
    rm_rf(b->dir);
    free(b);
}

/* ---- a cluster on an in-memory network --------------------------------- */

struct cluster;

struct node {
    struct cluster *c;
    raft_id id;
    char address[16];
    char dir[96];
    struct raft_io io;
    struct raft raft;
    struct raft_fsm fsm;
    uint64_t count, sum; /* the FSM: entries applied and their sum */
    int running, closed;
};

struct item {
    struct item *next;
    raft_id from, to;
    struct raft_message m;
    void (*cb)(void *, int);
    void *cb_ud;
};

struct cluster {
    uv_loop_t loop;
    uv_timer_t net;
    struct item *head, *tail;
    struct node nodes[MAXN];
    int n;
    int cut[MAXN + 1]; /* by id: drop everything to and from it */
    char base[64];
    unsigned threshold, trailing;
    size_t seg_max;
    uint64_t expect_count, expect_sum;
};

static void copy_message(struct raft_message *dst, const struct raft_message *src)
{
    *dst = *src;
    if (src->type == RAFT_IO_APPEND_ENTRIES) {
        const struct raft_append_entries *a = &src->append_entries;
        size_t total = 0, off = 0;
        dst->append_entries.entries = NULL;
        if (a->n_entries == 0)
            return;
        for (unsigned i = 0; i < a->n_entries; i++)
            total += a->entries[i].buf.len;
        /* As a transport must: one batch for all the data, raft_malloc'd. */
        uint8_t *batch = raft_malloc(total ? total : 1);
        struct raft_entry *e = raft_malloc(a->n_entries * sizeof *e);
        for (unsigned i = 0; i < a->n_entries; i++) {
            e[i] = a->entries[i];
            e[i].buf.base = batch + off;
            if (a->entries[i].buf.len > 0)
                memcpy(batch + off, a->entries[i].buf.base, a->entries[i].buf.len);
            e[i].batch = batch;
            off += a->entries[i].buf.len;
        }
        dst->append_entries.entries = e;
    } else if (src->type == RAFT_IO_INSTALL_SNAPSHOT) {
        const struct raft_install_snapshot *s = &src->install_snapshot;
        raft_configuration_init(&dst->install_snapshot.conf);
        for (unsigned i = 0; i < s->conf.n; i++)
            assert_int_equal(raft_configuration_add(
                                 &dst->install_snapshot.conf, s->conf.servers[i].id,
                                 s->conf.servers[i].address, s->conf.servers[i].role),
                             0);
        dst->install_snapshot.data.base = raft_malloc(s->data.len ? s->data.len : 1);
        memcpy(dst->install_snapshot.data.base, s->data.base, s->data.len);
    }
}

static void net_cb(uv_timer_t *t)
{
    struct cluster *c = t->data;
    struct item *it = c->head;
    c->head = c->tail = NULL;
    while (it != NULL) {
        struct item *next = it->next;
        struct node *to = &c->nodes[it->to - 1];
        it->cb(it->cb_ud, 0);
        if (!c->cut[it->from] && !c->cut[it->to] && to->running)
            repl_io_deliver(&to->io, &it->m);
        else
            repl_io_free_message(&it->m);
        free(it);
        it = next;
    }
}

/* The send function: copies now, completes and delivers from a timer. */
static int net_send(void *ud, const struct raft_message *m,
                    void (*cb)(void *, int), void *cb_ud)
{
    struct node *from = ud;
    struct cluster *c = from->c;
    if (m->server_id < 1 || m->server_id > (raft_id)c->n)
        return RAFT_NOCONNECTION;
    struct item *it = calloc(1, sizeof *it);
    it->from = from->id;
    it->to = m->server_id;
    copy_message(&it->m, m);
    it->m.server_id = from->id;
    it->m.server_address = from->address;
    it->cb = cb;
    it->cb_ud = cb_ud;
    if (c->tail != NULL)
        c->tail->next = it;
    else
        c->head = it;
    c->tail = it;
    if (!uv_is_active((uv_handle_t *)&c->net))
        uv_timer_start(&c->net, net_cb, 1, 0);
    return 0;
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct node *n = fsm->data;
    uint64_t v;
    assert_int_equal(buf->len, 8);
    memcpy(&v, buf->base, 8);
    n->count++;
    n->sum += v;
    *result = NULL;
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct node *n = fsm->data;
    *bufs = raft_malloc(sizeof **bufs);
    (*bufs)[0].base = raft_malloc(16);
    (*bufs)[0].len = 16;
    memcpy((*bufs)[0].base, &n->count, 8);
    memcpy((uint8_t *)(*bufs)[0].base + 8, &n->sum, 8);
    *n_bufs = 1;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct node *n = fsm->data;
    assert_int_equal(buf->len, 16);
    memcpy(&n->count, buf->base, 8);
    memcpy(&n->sum, (uint8_t *)buf->base + 8, 8);
    raft_free(buf->base);
    return 0;
}

static struct cluster *cluster_new(int n, unsigned threshold, unsigned trailing,
                                   size_t seg_max)
{
    struct cluster *c = calloc(1, sizeof *c);
    c->n = n;
    c->threshold = threshold;
    c->trailing = trailing;
    c->seg_max = seg_max;
    strcpy(c->base, "/tmp/cairn-rio-XXXXXX");
    assert_non_null(mkdtemp(c->base));
    uv_loop_init(&c->loop);
    uv_timer_init(&c->loop, &c->net);
    c->net.data = c;
    for (int i = 0; i < n; i++) {
        struct node *nd = &c->nodes[i];
        nd->c = c;
        nd->id = (raft_id)i + 1;
        snprintf(nd->address, sizeof nd->address, "n%d", i + 1);
        snprintf(nd->dir, sizeof nd->dir, "%s/n%d/member/raft", c->base, i + 1);
    }
    return c;
}

static void node_start(struct cluster *c, int i, int bootstrap)
{
    struct node *nd = &c->nodes[i];
    struct repl_io_opts o = {.dir = nd->dir, .seg_max = c->seg_max,
                             .send = net_send, .send_ud = nd,
                             .seed = 7919 * nd->id};
    assert_int_equal(repl_io_init(&nd->io, &c->loop, &o), 0);
    memset(&nd->fsm, 0, sizeof nd->fsm);
    nd->fsm.version = 1;
    nd->fsm.data = nd;
    nd->fsm.apply = fsm_apply;
    nd->fsm.snapshot = fsm_snapshot;
    nd->fsm.restore = fsm_restore;
    nd->count = nd->sum = 0;
    assert_int_equal(raft_init(&nd->raft, &nd->io, &nd->fsm, nd->id, nd->address), 0);
    nd->raft.data = nd;
    raft_set_election_timeout(&nd->raft, 150);
    raft_set_heartbeat_timeout(&nd->raft, 25);
    raft_set_pre_vote(&nd->raft, true);
    if (c->threshold) {
        raft_set_snapshot_threshold(&nd->raft, c->threshold);
        raft_set_snapshot_trailing(&nd->raft, c->trailing);
    }
    if (bootstrap) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (int k = 0; k < c->n; k++)
            assert_int_equal(raft_configuration_add(&conf, c->nodes[k].id,
                                                    c->nodes[k].address,
                                                    RAFT_VOTER), 0);
        assert_int_equal(raft_bootstrap(&nd->raft, &conf), 0);
        raft_configuration_close(&conf);
    }
    assert_int_equal(raft_start(&nd->raft), 0);
    nd->running = 1;
    nd->closed = 0;
}

static void raft_closed(struct raft *r)
{
    ((struct node *)r->data)->closed = 1;
}

static int all_closed(void *arg)
{
    struct cluster *c = arg;
    for (int i = 0; i < c->n; i++)
        if (!c->nodes[i].closed)
            return 0;
    return 1;
}

static void cluster_stop(struct cluster *c)
{
    for (int i = 0; i < c->n; i++) {
        c->nodes[i].running = 0;
        raft_close(&c->nodes[i].raft, raft_closed);
    }
    assert_true(run_until(&c->loop, all_closed, c));
}

static void cluster_start(struct cluster *c, int bootstrap)
{
    for (int i = 0; i < c->n; i++)
        node_start(c, i, bootstrap);
}

static void cluster_free(struct cluster *c)
{
    uv_close((uv_handle_t *)&c->net, NULL);
    uv_run(&c->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    rm_rf(c->base);
    free(c);
}

/* The one leader among the nodes not cut off, with the highest term. */
static int leader_of(struct cluster *c)
{
    int found = -1;
    raft_term best = 0;
    for (int i = 0; i < c->n; i++) {
        struct node *nd = &c->nodes[i];
        if (!nd->running || c->cut[nd->id] || raft_state(&nd->raft) != RAFT_LEADER)
            continue;
        if (nd->raft.current_term > best) {
            best = nd->raft.current_term;
            found = i;
        }
    }
    return found;
}

static int has_leader(void *arg)
{
    return leader_of(arg) >= 0;
}

static int wait_leader(struct cluster *c)
{
    assert_true(run_until(&c->loop, has_leader, c));
    return leader_of(c);
}

struct apply_req {
    struct raft_apply req;
    int done, status;
};

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct apply_req *a = req->data;
    a->done = 1;
    a->status = status;
}

static int submit_apply(struct cluster *c, int i, struct apply_req *a,
                        uint64_t v)
{
    struct raft_buffer buf = {raft_malloc(8), 8};
    memcpy(buf.base, &v, 8);
    memset(a, 0, sizeof *a);
    a->req.data = a;
    int rc = raft_apply(&c->nodes[i].raft, &a->req, &buf, 1, apply_cb);
    if (rc != 0)
        raft_free(buf.base);
    return rc;
}

struct batch {
    struct apply_req *a;
    int n;
};

static int batch_done(void *arg)
{
    struct batch *b = arg;
    for (int i = 0; i < b->n; i++)
        if (!b->a[i].done)
            return 0;
    return 1;
}

/* Applies values until @n succeeded (through whichever node leads),
 * sixteen in flight at a time. */
static void apply_n(struct cluster *c, int n)
{
    struct apply_req a[16];
    int ok = 0;
    for (int round = 0; ok < n && round < 1000; round++) {
        int l = wait_leader(c), k = 0;
        uint64_t v0 = c->expect_count + 1;
        for (; k < 16 && ok + k < n; k++)
            if (submit_apply(c, l, &a[k], v0 + (uint64_t)k) != 0)
                break;
        struct batch b = {a, k};
        assert_true(run_until(&c->loop, batch_done, &b));
        /* Values are the expected count at their position, so a failed one
         * in the middle is retried with the same value only if nothing
         * after it succeeded: stop counting at the first failure. */
        for (int i = 0; i < k; i++) {
            if (a[i].status != 0)
                break;
            ok++;
            c->expect_count++;
            c->expect_sum += v0 + (uint64_t)i;
        }
    }
    assert_int_equal(ok, n);
}

static int converged(void *arg)
{
    struct cluster *c = arg;
    for (int i = 0; i < c->n; i++) {
        struct node *nd = &c->nodes[i];
        if (nd->running &&
            (nd->count != c->expect_count || nd->sum != c->expect_sum))
            return 0;
    }
    return 1;
}

static void wait_converged(struct cluster *c)
{
    if (!run_until(&c->loop, converged, c)) {
        for (int i = 0; i < c->n; i++)
            fprintf(stderr, "node %d: count=%llu sum=%llu (want %llu %llu)\n",
                    i + 1, (unsigned long long)c->nodes[i].count,
                    (unsigned long long)c->nodes[i].sum,
                    (unsigned long long)c->expect_count,
                    (unsigned long long)c->expect_sum);
        fail_msg("the cluster did not converge");
    }
}

static void replicate_and_restart(int n)
{
    struct cluster *c = cluster_new(n, 0, 0, 0);
    cluster_start(c, 1);
    apply_n(c, 50);
    wait_converged(c);
    cluster_stop(c);

    /* From the same directories: state reloaded, entries applied again once
     * a new leader commits one of its own. */
    cluster_start(c, 0);
    for (int i = 0; i < c->n; i++)
        assert_true(raft_last_index(&c->nodes[i].raft) >= 51);
    apply_n(c, 1);
    wait_converged(c);
    assert_int_equal(c->nodes[0].count, 51);
    cluster_stop(c);
    cluster_free(c);
}

static void three_nodes_replicate_and_restart(void **state)
{
    replicate_and_restart(3);
}

static void five_nodes_replicate_and_restart(void **state)
{
    replicate_and_restart(5);
}

struct other_leader {
    struct cluster *c;
    int old;
};

static int other_leader(void *arg)
{
    struct other_leader *o = arg;
    int l = leader_of(o->c);
    return l >= 0 && l != o->old;
}

static int same_last_index(void *arg)
{
    struct cluster *c = arg;
    if (!converged(c))
        return 0;
    raft_index li = raft_last_index(&c->nodes[0].raft);
    for (int i = 1; i < c->n; i++)
        if (raft_last_index(&c->nodes[i].raft) != li)
            return 0;
    return 1;
}

static void partitioned_leader_is_truncated(int n)
{
    struct cluster *c = cluster_new(n, 0, 0, 512);
    struct apply_req lost[5];
    struct repl_io_stats st;
    int accepted = 0;

    cluster_start(c, 1);
    apply_n(c, 20);
    wait_converged(c);

    /* The leader is cut off and takes entries no one else will see. */
    int old = wait_leader(c);
    c->cut[c->nodes[old].id] = 1;
    for (int i = 0; i < 5; i++)
        accepted += submit_apply(c, old, &lost[i], 1000000) == 0;
    assert_true(accepted > 0);
    struct other_leader ol = {c, old};
    assert_true(run_until(&c->loop, other_leader, &ol));
    apply_n(c, 10);

    /* Healed: the old leader's conflicting entries are truncated and it
     * converges with the others. */
    c->cut[c->nodes[old].id] = 0;
    assert_true(run_until(&c->loop, same_last_index, c));
    wait_converged(c);
    struct batch b = {lost, accepted};
    assert_true(run_until(&c->loop, batch_done, &b));
    for (int i = 0; i < accepted; i++)
        assert_int_not_equal(lost[i].status, 0);
    repl_io_get_stats(&c->nodes[old].io, &st);
    assert_true(st.log.truncates >= 1);

    cluster_stop(c);
    /* And the truncated log is what comes back after a restart. */
    cluster_start(c, 0);
    apply_n(c, 1);
    wait_converged(c);
    cluster_stop(c);
    cluster_free(c);
}

static void three_nodes_partitioned_leader_is_truncated(void **state)
{
    partitioned_leader_is_truncated(3);
}

static void five_nodes_partitioned_leader_is_truncated(void **state)
{
    partitioned_leader_is_truncated(5);
}

static void snapshots_install_and_compact(void **state)
{
    struct cluster *c = cluster_new(3, 8, 4, 512);
    struct repl_io_stats st;

    cluster_start(c, 1);
    int l = wait_leader(c);
    int f = (l + 1) % c->n;
    c->cut[c->nodes[f].id] = 1;
    apply_n(c, 60);
    l = wait_leader(c);
    repl_io_get_stats(&c->nodes[l].io, &st);
    assert_true(st.log.snapshot_puts >= 1);
    assert_true(st.log.segs_deleted >= 1);

    /* The follower is too far behind: InstallSnapshot replaces its log. */
    c->cut[c->nodes[f].id] = 0;
    wait_converged(c);
    repl_io_get_stats(&c->nodes[f].io, &st);
    assert_true(st.log.log_resets >= 1);
    apply_n(c, 5);
    wait_converged(c);

    /* Restart: snapshot + remaining entries reload everywhere. */
    cluster_stop(c);
    cluster_start(c, 0);
    apply_n(c, 1);
    wait_converged(c);
    assert_int_equal(c->nodes[f].count, 66);
    cluster_stop(c);
    cluster_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(group_commit_and_submission_order),
        cmocka_unit_test(three_nodes_replicate_and_restart),
        cmocka_unit_test(five_nodes_replicate_and_restart),
        cmocka_unit_test(three_nodes_partitioned_leader_is_truncated),
        cmocka_unit_test(five_nodes_partitioned_leader_is_truncated),
        cmocka_unit_test(snapshots_install_and_compact),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
