/* The state machine glue (src/repl/fsm.c) driven by libraft's deterministic
 * raft_fixture (in-memory io, simulated time and network): three servers,
 * each with its REAL apply thread and LMDB store in its own temp dir.
 *
 * The fixture is synchronous and single threaded; cairn's apply runs on its
 * own thread and reports on a uv loop. Every wait here is a fence on the
 * apply thread plus a bounded uv_run(UV_RUN_NOWAIT) loop: outcomes are
 * deterministic, no assertion depends on timing.
 *
 * libraft 0.15's fixture io implements async_work but leaves io.version at
 * 0, and raft_init refuses an fsm of version 3 with snapshot_async on an io
 * below version 2. So each server is grown with snapshot_async unset, then
 * its fixture io is marked version 2 and snapshot_async put back: libraft
 * then takes snapshots asynchronously through the fixture's async_work
 * (run synchronously on the test thread when its simulated time comes). */
#include "mvcc_fixture.h"

#include <errno.h>
#include <stddef.h>
#include <time.h>

#include <raft.h>
#include <raft/fixture.h>
#include <uv.h>

#include "apply/apply.h"
#include "core/mem.h"
#include "crypt/crypt.h"
#include "repl/fsm.h"

#define NSRV 3
#define MEMBER(i) (0xA000u + (uint64_t)(i)) /* cairn member id of server i */
#define NOBODY 0xBEEFu                      /* an origin no server is */
#define MAX_PROPS 256
#define STEP_MS 20000 /* simulated time bound for the fixture's step_until */

#define K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
#define K1_OTHER "k1:HwAeAR0CHAMbBBoFGQYYBxcIFgkVChQLEwwSDREOEA8=\n"
#define K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"

struct cl;

struct srv {
    struct repl_fsm fsm; /* first: the raft_fsm libraft hands back */
    struct cl *c;
    int i;
    struct fx *fx;       /* store dir, store, arena */
    struct apply *a;
    /* what the glue did on this server */
    int n_take, n_remote;
    uint64_t last_remote;
    int n_snapshot, n_async, n_async_ok, n_finalize;
    int n_async_not_durable; /* snapshot_async said 0 before durable >= idx */
    int n_async_unreachable; /* a record the drained store can never reach */
    uint64_t max_snap;
    int n_behind;
    uint64_t behind_held, behind_idx;
    int behind_rc;
};

struct cl {
    uv_loop_t loop;
    struct raft_fixture rf;
    int rf_live;
    struct srv s[NSRV];
    const char *ring_text; /* key ring every store gets (NULL: plain) */
    struct raft_apply reqs[MAX_PROPS];
    int status[MAX_PROPS]; /* raft_apply's callback status; 1: not yet */
    int n_reqs;
    /* the local proposal waiting for its entry (take path) */
    struct apply_cmd *pending;
    uint64_t pending_reqid;
    int take_done, take_rc;
    int64_t take_rev;
};

/* ---- fsm instrumentation: wrappers around the real callbacks ---- */

static int (*real_snapshot)(struct raft_fsm *, struct raft_buffer **, unsigned *);
static int (*real_async)(struct raft_fsm *, struct raft_buffer **, unsigned *);
static int (*real_finalize)(struct raft_fsm *, struct raft_buffer **, unsigned *);

static struct srv *srv_of(struct raft_fsm *fsm)
{
    return (struct srv *)(void *)((char *)fsm - offsetof(struct srv, fsm));
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* The index a snapshot record names ("cairnsnp" + le64). */
static uint64_t rec_index(const struct raft_buffer *b)
{
    assert_true(b->len >= 16);
    assert_memory_equal(b->base, "cairnsnp", 8);
    return le64((const uint8_t *)b->base + 8);
}

/* A snapshot record as the fsm writes it, naming @idx. */
static struct raft_buffer *rec_make(uint64_t idx)
{
    struct raft_buffer *b = raft_malloc(sizeof *b);
    assert_non_null(b);
    b->base = raft_malloc(16);
    assert_non_null(b->base);
    memcpy(b->base, "cairnsnp", 8);
    for (int i = 0; i < 8; i++)
        ((uint8_t *)b->base)[8 + i] = (uint8_t)(idx >> (8 * i));
    b->len = 16;
    return b;
}

static int w_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                      unsigned *n)
{
    struct srv *s = srv_of(fsm);
    int rv = real_snapshot(fsm, bufs, n);
    if (rv == 0) {
        s->n_snapshot++;
        /* the record names the store index the snapshot needs: the last
         * command entry the store was handed, at most libraft's index */
        assert_int_equal(*n, 1);
        assert_int_equal(rec_index(&(*bufs)[0]), s->fsm.need);
        assert_true(s->fsm.need <= s->fsm.raft->last_applied);
    }
    return rv;
}

static void wait_store(struct cl *c, int i);

/* Runs where libraft runs the fixture's async work: on the test thread. */
static int w_async(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                   unsigned *n)
{
    struct srv *s = srv_of(fsm);
    uint64_t idx = rec_index(&(*bufs)[0]);
    /* Every entry up to the snapshot was handed to the apply thread before
     * libraft took it: once that drained, a record above apply_index()
     * names an index the store never reaches (a barrier or configuration
     * entry, which the fsm never sees), and the real snapshot_async would
     * wait its 30 s out and fail. Counted and refused here, at once. */
    wait_store(s->c, s->i);
    if (idx > apply_index(s->a)) {
        s->n_async++;
        s->n_async_unreachable++;
        return RAFT_IOERR;
    }
    int rv = real_async(fsm, bufs, n);
    s->n_async++;
    if (rv == 0) {
        s->n_async_ok++;
        if (apply_durable_index(s->a) < idx)
            s->n_async_not_durable++;
        if (idx > s->max_snap)
            s->max_snap = idx;
    }
    return rv;
}

static int w_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                      unsigned *n)
{
    srv_of(fsm)->n_finalize++;
    return real_finalize(fsm, bufs, n);
}

static struct apply_cmd *t_take(void *ud, uint64_t reqid)
{
    struct srv *s = ud;
    struct cl *c = s->c;
    s->n_take++;
    if (c->pending == NULL || c->pending_reqid != reqid)
        return NULL;
    struct apply_cmd *cmd = c->pending;
    c->pending = NULL;
    return cmd;
}

static void t_remote_applied(void *ud, uint64_t index)
{
    struct srv *s = ud;
    s->n_remote++;
    s->last_remote = index;
}

static int t_behind(void *ud, uint64_t held, uint64_t index)
{
    struct srv *s = ud;
    s->n_behind++;
    s->behind_held = held;
    s->behind_idx = index;
    return s->behind_rc;
}

/* ---- bounded waits on the apply threads ---- */

static void flag_cb(void *ud)
{
    *(int *)ud = 1;
}

static void loop_until(struct cl *c, int *flag)
{
    for (int n = 0; !*flag && n < 20000; n++) {
        uv_run(&c->loop, UV_RUN_NOWAIT);
        if (!*flag) {
            struct timespec ts = {0, 500 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    assert_true(*flag);
}

/* Everything submitted to server @i's apply thread is durable and its
 * done() callbacks have run. */
static void wait_store(struct cl *c, int i)
{
    int done = 0;
    apply_fence(c->s[i].a, flag_cb, &done);
    loop_until(c, &done);
}

static void wait_stores(struct cl *c)
{
    for (int i = 0; i < NSRV; i++)
        wait_store(c, i);
}

/* ---- stores ---- */

static struct crypt_ring *ring_of(const char *text)
{
    struct crypt_ring *r = NULL;
    char err[256];
    if (crypt_ring_parse(text, strlen(text), "test", &r, err, sizeof err) != 0)
        fail_msg("ring: %s", err);
    return r;
}

static void apply_up(struct cl *c, int i)
{
    struct srv *s = &c->s[i];
    struct apply_header h = {0x1234, MEMBER(i), 1};
    assert_int_equal(apply_start(&c->loop, s->fx->m, &h, &s->a), 0);
}

static void apply_down(struct cl *c, int i)
{
    apply_stop(c->s[i].a);
    c->s[i].a = NULL;
    for (int n = 0; n < 10; n++) /* the async handle's close frees it */
        uv_run(&c->loop, UV_RUN_NOWAIT);
}

static void stores_open(struct cl *c)
{
    for (int i = 0; i < NSRV; i++) {
        struct srv *s = &c->s[i];
        void *st = NULL;
        s->c = c;
        s->i = i;
        assert_int_equal(fx_setup(&st), 0);
        s->fx = st;
        if (c->ring_text != NULL) {
            struct crypt_ring *r = ring_of(c->ring_text);
            char err[256];
            int rotated;
            if (mvcc_seal_install(s->fx->m, r, &rotated, err, sizeof err) != 0)
                fail_msg("seal install: %s", err);
        }
        apply_up(c, i);
    }
}

/* A restart of every store: the apply thread stops, the store closes and
 * reopens, a new apply thread starts from what the store holds. */
static void stores_restart(struct cl *c)
{
    for (int i = 0; i < NSRV; i++) {
        apply_down(c, i);
        fx_reopen(c->s[i].fx);
        if (c->ring_text != NULL) {
            struct crypt_ring *r = ring_of(c->ring_text);
            char err[256];
            int rotated;
            if (mvcc_seal_install(c->s[i].fx->m, r, &rotated, err, sizeof err))
                fail_msg("seal install: %s", err);
        }
        apply_up(c, i);
    }
}

/* ---- the raft fixture ---- */

static void raft_up(struct cl *c)
{
    struct raft_configuration conf;
    memset(&c->rf, 0, sizeof c->rf);
    assert_int_equal(raft_fixture_initialize(&c->rf), 0);
    for (int i = 0; i < NSRV; i++) {
        struct srv *s = &c->s[i];
        memset(&s->fsm, 0, sizeof s->fsm);
        repl_fsm_init(&s->fsm);
        if (real_snapshot == NULL) {
            real_snapshot = s->fsm.fsm.snapshot;
            real_async = s->fsm.fsm.snapshot_async;
            real_finalize = s->fsm.fsm.snapshot_finalize;
        }
        s->fsm.fsm.snapshot = w_snapshot;
        s->fsm.fsm.snapshot_finalize = w_finalize;
        s->fsm.fsm.snapshot_async = NULL; /* see the top of the file */
        s->fsm.apply = s->a;
        s->fsm.mvcc = s->fx->m;
        s->fsm.self = MEMBER(i);
        s->fsm.ud = s;
        s->fsm.take = t_take;
        s->fsm.behind = t_behind;
        s->fsm.remote_applied = t_remote_applied;
        assert_int_equal(raft_fixture_grow(&c->rf, &s->fsm.fsm), 0);
        s->fsm.raft = raft_fixture_get(&c->rf, (unsigned)i);
        assert_non_null(c->rf.servers[i].io.async_work);
        c->rf.servers[i].io.version = 2;
        s->fsm.fsm.snapshot_async = w_async;
    }
    assert_int_equal(raft_fixture_configuration(&c->rf, NSRV, &conf), 0);
    assert_int_equal(raft_fixture_bootstrap(&c->rf, &conf), 0);
    raft_configuration_close(&conf);
    assert_int_equal(raft_fixture_start(&c->rf), 0);
    c->rf_live = 1;
}

static void raft_down(struct cl *c)
{
    if (!c->rf_live)
        return;
    raft_fixture_close(&c->rf);
    c->rf_live = 0;
    for (int i = 0; i < NSRV; i++)
        c->s[i].fsm.raft = NULL;
}

static struct cl *cl_new(const char *ring_text)
{
    struct cl *c = calloc(1, sizeof *c);
    assert_non_null(c);
    assert_int_equal(uv_loop_init(&c->loop), 0);
    c->ring_text = ring_text;
    stores_open(c);
    raft_up(c);
    raft_fixture_elect(&c->rf, 0);
    assert_int_equal(raft_fixture_leader_index(&c->rf), 0);
    return c;
}

static void cl_free(struct cl *c)
{
    raft_down(c);
    for (int i = 0; i < NSRV; i++) {
        wait_store(c, i);
        apply_down(c, i);
        void *st = c->s[i].fx;
        fx_teardown(&st);
    }
    assert_null(c->pending);
    for (int n = 0; n < 10; n++)
        uv_run(&c->loop, UV_RUN_NOWAIT);
    assert_int_equal(uv_loop_close(&c->loop), 0);
    free(c);
}

/* ---- proposing ---- */

static void apply_cb(struct raft_apply *req, int status, void *result)
{
    struct cl *c = req->data;
    (void)result;
    c->status[req - c->reqs] = status;
}

/* Server @i (the leader) appends an entry; returns its raft index. */
static uint64_t propose_ring(struct cl *c, unsigned i, const struct crypt_ring *ring,
                             int op, uint64_t origin, uint64_t reqid,
                             const uint8_t *req, size_t len)
{
    struct raft_buffer buf;
    assert_true(c->n_reqs < MAX_PROPS);
    int k = c->n_reqs++;
    assert_int_equal(repl_entry_encode(&buf, ring, op, origin, reqid, 0, req, len), 0);
    c->reqs[k].data = c;
    c->status[k] = 1;
    assert_int_equal(raft_apply(raft_fixture_get(&c->rf, i), &c->reqs[k], &buf, 1,
                                apply_cb), 0);
    assert_true(c->reqs[k].index > 0);
    return c->reqs[k].index;
}

static uint64_t propose(struct cl *c, unsigned i, int op, uint64_t origin,
                        uint64_t reqid, const uint8_t *req, size_t len)
{
    return propose_ring(c, i, NULL, op, origin, reqid, req, len);
}

#define PACK(prefix, msg, lenp)                                             \
    ({                                                                      \
        *(lenp) = prefix##__get_packed_size(msg);                           \
        uint8_t *b_ = cairn_malloc(*(lenp) + 1);                            \
        prefix##__pack(msg, b_);                                            \
        b_;                                                                 \
    })

static uint8_t *put_req(const char *k, const char *v, int64_t lease, size_t *len)
{
    Etcdserverpb__PutRequest r = ETCDSERVERPB__PUT_REQUEST__INIT;
    r.key = bs(k);
    r.value = bs(v);
    r.lease = lease;
    return PACK(etcdserverpb__put_request, &r, len);
}

static uint64_t put(struct cl *c, unsigned leader, uint64_t origin, uint64_t reqid,
                    const char *k, const char *v)
{
    size_t len;
    uint8_t *b = put_req(k, v, 0, &len);
    uint64_t idx = propose(c, leader, APPLY_PUT, origin, reqid, b, len);
    cairn_free(b);
    return idx;
}

static void step_applied(struct cl *c, unsigned i, uint64_t index)
{
    assert_true(raft_fixture_step_until_applied(&c->rf, i, index, STEP_MS));
}

/* ---- reading the stores ---- */

static const char *dump(struct cl *c, int i)
{
    return snapshot(c->s[i].fx, 0);
}

static uint32_t hash_of(struct cl *c, int i)
{
    struct mvcc_txn t;
    uint32_t h = 0;
    assert_int_equal(mvcc_read_begin(c->s[i].fx->m, &t), 0);
    assert_int_equal(mvcc_hash(&t, &h), 0);
    mvcc_read_end(&t);
    return h;
}

static int has_key(struct cl *c, int i, const char *k)
{
    struct mvcc_txn t;
    Mvccpb__KeyValue kv;
    assert_int_equal(mvcc_read_begin(c->s[i].fx->m, &t), 0);
    int rc = mvcc_get_at(&t, (const uint8_t *)k, strlen(k), t.rev, &kv);
    mvcc_read_end(&t);
    assert_true(rc == 0 || rc == 1);
    return rc == 0;
}

/* Every store holds the same: revision, keys and values (with their
 * revisions), whole-store hash, raft index. */
static void assert_converged(struct cl *c)
{
    wait_stores(c);
    const char *d0 = dump(c, 0);
    for (int i = 1; i < NSRV; i++) {
        assert_int_equal(cur_rev_of(c->s[i].fx), cur_rev_of(c->s[0].fx));
        assert_string_equal(dump(c, i), d0);
        assert_int_equal(hash_of(c, i), hash_of(c, 0));
        assert_int_equal(apply_index(c->s[i].a), apply_index(c->s[0].a));
        assert_int_equal(apply_rev(c->s[i].a), apply_rev(c->s[0].a));
    }
}

/* ---- tests ---- */

/* Puts, a Txn, a DeleteRange, a LeaseGrant and a leased put replicate to
 * every store alike. */
static void replicate_converge(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    size_t len;
    uint8_t *b;
    uint64_t last = 0, reqid = 1;

    for (int j = 0; j < 4; j++) {
        char k[32], v[16];
        snprintf(k, sizeof k, "k/%d", j);
        snprintf(v, sizeof v, "v%d", j);
        last = put(c, 0, MEMBER(1), reqid++, k, v);
    }
    { /* Txn: k/1 exists -> success branch */
        Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
        cmp.key = bs("k/1");
        cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
        cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER;
        cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
        cmp.version = 0;
        Etcdserverpb__PutRequest ok = ETCDSERVERPB__PUT_REQUEST__INIT;
        ok.key = bs("txn/ok");
        ok.value = bs("yes");
        Etcdserverpb__PutRequest no = ETCDSERVERPB__PUT_REQUEST__INIT;
        no.key = bs("txn/fail");
        no.value = bs("yes");
        Etcdserverpb__RequestOp op_ok = ETCDSERVERPB__REQUEST_OP__INIT;
        op_ok.request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
        op_ok.request_put = &ok;
        Etcdserverpb__RequestOp op_no = op_ok;
        op_no.request_put = &no;
        Etcdserverpb__Compare *cmps[] = {&cmp};
        Etcdserverpb__RequestOp *succ[] = {&op_ok}, *fail[] = {&op_no};
        Etcdserverpb__TxnRequest t = ETCDSERVERPB__TXN_REQUEST__INIT;
        t.n_compare = 1;
        t.compare = cmps;
        t.n_success = 1;
        t.success = succ;
        t.n_failure = 1;
        t.failure = fail;
        b = PACK(etcdserverpb__txn_request, &t, &len);
        last = propose(c, 0, APPLY_TXN, MEMBER(2), reqid++, b, len);
        cairn_free(b);
    }
    { /* DeleteRange k/2 */
        Etcdserverpb__DeleteRangeRequest d = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
        d.key = bs("k/2");
        b = PACK(etcdserverpb__delete_range_request, &d, &len);
        last = propose(c, 0, APPLY_DELETE_RANGE, MEMBER(1), reqid++, b, len);
        cairn_free(b);
    }
    { /* LeaseGrant, then a put on the lease */
        Etcdserverpb__LeaseGrantRequest g = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
        g.id = 0x77;
        g.ttl = 60;
        b = PACK(etcdserverpb__lease_grant_request, &g, &len);
        last = propose(c, 0, APPLY_LEASE_GRANT, MEMBER(2), reqid++, b, len);
        cairn_free(b);
        b = put_req("leased", "L", 0x77, &len);
        last = propose(c, 0, APPLY_PUT, MEMBER(1), reqid++, b, len);
        cairn_free(b);
    }
    step_applied(c, NSRV, last);
    assert_converged(c);

    for (int k = 0; k < c->n_reqs; k++)
        assert_int_equal(c->status[k], 0);
    /* 4 puts + txn + delete + lease put: 7 revisions after the first (1);
     * a LeaseGrant takes none */
    assert_int_equal(cur_rev_of(c->s[0].fx), 1 + 7);
    assert_int_equal(apply_index(c->s[0].a), last);
    assert_string_equal(dump(c, 0), "k/0=v0:2/2/1 k/1=v1:3/3/1 k/3=v3:5/5/1 "
                                    "leased=L:8/8/1 txn/ok=yes:6/6/1");
    for (int i = 0; i < NSRV; i++) {
        struct mvcc_txn t;
        assert_int_equal(mvcc_read_begin(c->s[i].fx->m, &t), 0);
        assert_int_equal(mvcc_lease_exists(&t, 0x77), 1);
        mvcc_read_end(&t);
        /* no entry had origin == server 0's member: the leader had every
         * entry applied for someone else; followers 1 and 2 too, except
         * their own */
        assert_int_equal(c->s[i].n_take, i == 0 ? 0 : (i == 1 ? 6 : 2));
    }
    /* remote_applied on every server for every entry it did not propose */
    assert_int_equal(c->s[0].n_remote, 8);
    assert_int_equal(c->s[1].n_remote, 2);
    assert_int_equal(c->s[2].n_remote, 6);
    assert_int_equal(c->s[0].last_remote, last);
    cl_free(c);
}

static void take_done(struct apply_cmd *cmd)
{
    struct cl *c = cmd->ud;
    c->take_done++;
    c->take_rc = cmd->rc;
    c->take_rev = -1;
    if (cmd->rc == 0 && cmd->resp != NULL) {
        Etcdserverpb__PutResponse *r =
            etcdserverpb__put_response__unpack(NULL, cmd->resp_len, cmd->resp);
        assert_non_null(r);
        assert_non_null(r->header);
        c->take_rev = r->header->revision;
        etcdserverpb__put_response__free_unpacked(r, NULL);
    }
    apply_cmd_free(cmd);
}

/* origin == self: the pending command take() hands back gets the result;
 * without one the entry still applies from the log. */
static void take_path(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    size_t len;
    uint64_t i1 = put(c, 0, MEMBER(2), 1, "a", "1");
    step_applied(c, NSRV, i1);

    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    cmd->op = APPLY_PUT;
    cmd->req = put_req("mine", "M", 0, &len);
    cmd->req_len = len;
    cmd->done = take_done;
    cmd->ud = c;
    c->pending = cmd;
    c->pending_reqid = 42;
    uint64_t i2 = put(c, 0, MEMBER(0), 42, "mine", "M");
    /* origin self, nothing pending (the proposer gave up): from the log */
    uint64_t i3 = put(c, 0, MEMBER(0), 43, "orphan", "O");
    step_applied(c, NSRV, i3);
    wait_stores(c);

    assert_null(c->pending);
    assert_int_equal(c->take_done, 1);
    assert_int_equal(c->take_rc, 0);
    assert_int_equal(c->take_rev, 3);
    assert_int_equal(c->s[0].n_take, 2); /* reqids 42 and 43 */
    assert_int_equal(c->s[1].n_take, 0);
    assert_int_equal(c->s[2].n_take, 1); /* its own entry i1 */
    assert_true(i2 < i3);
    assert_int_equal(apply_index(c->s[0].a), i3);
    assert_converged(c);
    assert_string_equal(dump(c, 1), "a=1:2/2/1 mine=M:3/3/1 orphan=O:4/4/1");
    cl_free(c);
}

/* Entries the store holds are skipped on replay, entries above apply: the
 * stores restart (apply_start reads the raft index back) and a new cluster
 * over them replays a log from index 1. */
static void replay_skip(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    uint64_t last = 0;
    for (int j = 0; j < 5; j++) {
        char k[32];
        snprintf(k, sizeof k, "a/%d", j);
        last = put(c, 0, NOBODY, (uint64_t)j + 1, k, "1");
    }
    step_applied(c, NSRV, last);
    assert_converged(c);
    uint64_t held = apply_index(c->s[0].a);
    int64_t rev = cur_rev_of(c->s[0].fx);
    const char *before = dump(c, 0);
    assert_int_equal(held, last);

    raft_down(c);
    wait_stores(c);
    stores_restart(c);
    for (int i = 0; i < NSRV; i++) {
        assert_int_equal(apply_index(c->s[i].a), held);
        /* what a reopened store holds is durable */
        assert_int_equal(apply_durable_index(c->s[i].a), held);
    }

    raft_up(c);
    raft_fixture_elect(&c->rf, 1);
    struct raft *lr = raft_fixture_get(&c->rf, 1);
    uint64_t idx[16];
    int n = 0, above = 0;
    /* first only entries the stores hold (the fixture applies whatever is
     * committed in one go): nothing changes */
    while (raft_last_index(lr) + 1 <= held) {
        char k[32];
        assert_true(n < 16);
        snprintf(k, sizeof k, "b/%d", n);
        idx[n] = put(c, 1, NOBODY, 100 + (uint64_t)n, k, "2");
        n++;
    }
    assert_true(n >= 2);
    step_applied(c, NSRV, idx[n - 1]);
    wait_stores(c);
    for (int i = 0; i < NSRV; i++) {
        assert_int_equal(cur_rev_of(c->s[i].fx), rev);
        assert_string_equal(dump(c, i), before);
        assert_int_equal(apply_index(c->s[i].a), held);
    }
    /* then entries above: they apply */
    for (int j = 0; j < 3; j++) {
        char k[32];
        snprintf(k, sizeof k, "b/%d", n);
        idx[n] = put(c, 1, NOBODY, 100 + (uint64_t)n, k, "2");
        assert_true(idx[n] > held);
        n++;
    }
    step_applied(c, NSRV, idx[n - 1]);
    assert_converged(c);
    for (int j = 0; j < n; j++) {
        char k[32];
        snprintf(k, sizeof k, "b/%d", j);
        for (int i = 0; i < NSRV; i++)
            assert_int_equal(has_key(c, i, k), idx[j] > held);
        above += idx[j] > held;
    }
    assert_int_equal(cur_rev_of(c->s[0].fx), rev + above);
    assert_int_equal(apply_index(c->s[0].a), idx[n - 1]);
    cl_free(c);
}

/* A second state machine over a live store: whatever libraft says the
 * index is, an entry at or below apply_index() is not submitted. */
static void replay_skip_direct(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    uint64_t last = put(c, 0, NOBODY, 1, "x", "1");
    step_applied(c, NSRV, last);
    wait_stores(c);
    struct srv *s = &c->s[2];
    uint64_t held = apply_index(s->a);
    int64_t rev = cur_rev_of(s->fx);

    struct raft fake;
    struct repl_fsm g;
    memset(&fake, 0, sizeof fake);
    memset(&g, 0, sizeof g);
    repl_fsm_init(&g);
    g.raft = &fake;
    g.apply = s->a;
    g.mvcc = s->fx->m;
    g.self = 0x999;
    struct raft_buffer buf;
    size_t len;
    uint8_t *req = put_req("replayed", "R", 0, &len);
    assert_int_equal(repl_entry_encode(&buf, NULL, APPLY_PUT, NOBODY, 7, 0, req, len), 0);
    void *result = (void *)1;
    for (uint64_t at = 1; at <= held; at++) {
        fake.last_applied = at - 1; /* the entry is at index `at` */
        assert_int_equal(g.fsm.apply(&g.fsm, &buf, &result), 0);
        assert_null(result);
    }
    wait_store(c, 2);
    assert_int_equal(cur_rev_of(s->fx), rev);
    assert_int_equal(apply_index(s->a), held);
    assert_false(has_key(c, 2, "replayed"));

    fake.last_applied = held; /* index held + 1 */
    assert_int_equal(g.fsm.apply(&g.fsm, &buf, &result), 0);
    wait_store(c, 2);
    assert_int_equal(cur_rev_of(s->fx), rev + 1);
    assert_int_equal(apply_index(s->a), held + 1);
    assert_true(has_key(c, 2, "replayed"));

    /* an entry of unknown format is skipped, never stops raft */
    uint8_t junk[40] = {9};
    struct raft_buffer jb = {junk, sizeof junk};
    fake.last_applied = held + 1;
    assert_int_equal(g.fsm.apply(&g.fsm, &jb, &result), 0);
    struct raft_buffer sb = {junk, 3};
    assert_int_equal(g.fsm.apply(&g.fsm, &sb, &result), 0);
    wait_store(c, 2);
    assert_int_equal(apply_index(s->a), held + 1);

    /* take path on a replayed entry: the command is submitted and the
     * apply thread skips it (CAIRN_ETIMEOUT: effect in, reply unknown) */
    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    cmd->op = APPLY_PUT;
    cmd->req = req;
    cmd->req_len = len;
    cmd->done = take_done;
    cmd->ud = c;
    c->pending = cmd;
    c->pending_reqid = 7;
    g.self = NOBODY;
    g.take = t_take;
    g.ud = s;
    fake.last_applied = 0;
    assert_int_equal(g.fsm.apply(&g.fsm, &buf, &result), 0);
    assert_null(c->pending);
    wait_store(c, 2);
    assert_int_equal(c->take_done, 1);
    assert_int_equal(c->take_rc, CAIRN_ETIMEOUT);
    assert_int_equal(cur_rev_of(s->fx), rev + 1);
    raft_free(buf.base);
    cl_free(c);
}

static bool new_leader(struct raft_fixture *f, void *arg)
{
    (void)arg;
    return raft_state(raft_fixture_get(f, 1)) == RAFT_LEADER ||
           raft_state(raft_fixture_get(f, 2)) == RAFT_LEADER;
}

/* The leader is cut off; its new entries never commit and never reach its
 * store; a new leader commits; after the heal every store converges. */
static void partition_leader(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    uint64_t last = put(c, 0, MEMBER(0), 1, "before", "1");
    step_applied(c, NSRV, last);
    assert_converged(c);

    for (unsigned j = 1; j < NSRV; j++) {
        raft_fixture_disconnect(&c->rf, 0, j);
        raft_fixture_disconnect(&c->rf, j, 0);
    }
    int lost0 = c->n_reqs;
    for (int j = 0; j < 3; j++) {
        char k[32];
        snprintf(k, sizeof k, "lost/%d", j);
        put(c, 0, MEMBER(0), 10 + (uint64_t)j, k, "X");
    }
    assert_true(raft_fixture_step_until(&c->rf, new_leader, NULL, STEP_MS));
    unsigned nl = raft_state(raft_fixture_get(&c->rf, 1)) == RAFT_LEADER ? 1 : 2;
    uint64_t li = 0;
    for (int j = 0; j < 4; j++) {
        char k[32];
        snprintf(k, sizeof k, "new/%d", j);
        li = put(c, nl, MEMBER(nl), 20 + (uint64_t)j, k, "N");
    }
    step_applied(c, 1, li);
    step_applied(c, 2, li);
    wait_stores(c);
    /* the old leader's store: nothing of the lost entries, nothing new */
    for (int j = 0; j < 3; j++) {
        char k[32];
        snprintf(k, sizeof k, "lost/%d", j);
        for (int i = 0; i < NSRV; i++)
            assert_false(has_key(c, i, k));
    }
    assert_false(has_key(c, 0, "new/0"));
    assert_true(has_key(c, 1, "new/3"));
    assert_string_equal(dump(c, 1), dump(c, 2));

    for (unsigned j = 1; j < NSRV; j++) {
        raft_fixture_reconnect(&c->rf, 0, j);
        raft_fixture_reconnect(&c->rf, j, 0);
    }
    li = put(c, nl, MEMBER(nl), 30, "after", "1");
    step_applied(c, NSRV, li);
    assert_converged(c);
    assert_string_equal(dump(c, 0), "after=1:7/7/1 before=1:2/2/1 new/0=N:3/3/1 "
                                    "new/1=N:4/4/1 new/2=N:5/5/1 new/3=N:6/6/1");
    for (int k = lost0; k < lost0 + 3; k++)
        assert_true(c->status[k] != 0); /* failed, never applied */
    assert_int_equal(apply_index(c->s[0].a), li);
    cl_free(c);
}

/* Snapshots (threshold 5, trailing 2): libraft takes them through
 * snapshot, snapshot_async (fixture async_work) and snapshot_finalize;
 * each is stored only once its store durably holds the index. */
static void snapshots(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    for (unsigned i = 0; i < NSRV; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&c->rf, i), 5);
        raft_set_snapshot_trailing(raft_fixture_get(&c->rf, i), 2);
    }
    uint64_t last = 0;
    for (int round = 0; round < 4; round++) {
        for (int j = 0; j < 6; j++) {
            char k[32];
            snprintf(k, sizeof k, "s/%d", round * 6 + j);
            last = put(c, 0, NOBODY, (uint64_t)(round * 6 + j + 1), k, "v");
        }
        step_applied(c, NSRV, last);
        raft_fixture_step_until_elapsed(&c->rf, 200); /* async work, put */
    }
    raft_fixture_step_until_elapsed(&c->rf, 2000); /* the last async work */
    assert_converged(c);
    for (int i = 0; i < NSRV; i++) {
        struct srv *s = &c->s[i];
        struct raft *r = raft_fixture_get(&c->rf, (unsigned)i);
        print_message("server %d: snapshot %d async %d ok %d finalize %d "
                      "max %llu raft %llu durable %llu\n", i, s->n_snapshot,
                      s->n_async, s->n_async_ok, s->n_finalize,
                      (unsigned long long)s->max_snap,
                      (unsigned long long)r->log.snapshot.last_index,
                      (unsigned long long)apply_durable_index(s->a));
        assert_true(s->n_snapshot >= 2);
        assert_int_equal(s->n_async, s->n_snapshot);
        assert_int_equal(s->n_async_ok, s->n_async);
        assert_int_equal(s->n_async_not_durable, 0);
        assert_int_equal(s->n_async_unreachable, 0);
        /* every record libraft took went back through finalize */
        assert_int_equal(s->n_finalize, s->n_snapshot);
        /* libraft's snapshot is one the store durably holds */
        assert_true(r->log.snapshot.last_index > 0);
        assert_true(r->log.snapshot.last_index <= s->max_snap);
        assert_true(apply_durable_index(s->a) >= r->log.snapshot.last_index);
    }
    cl_free(c);
}

static void barrier_cb(struct raft_barrier *req, int status)
{
    *(int *)req->data = status == 0 ? 1 : -1;
}

/* The snapshot threshold is crossed by a barrier (cairn's leader appends
 * one for linearizable reads and to nudge the commit index out), or by a
 * configuration change: entries the fsm never sees. The snapshot must not
 * wait for the store to reach an index no command has. */
static void snapshot_at_barrier(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    struct raft *lr = raft_fixture_get(&c->rf, 0);
    for (unsigned i = 0; i < NSRV; i++)
        raft_set_snapshot_threshold(raft_fixture_get(&c->rf, i), 5);
    uint64_t last = 0;
    while (raft_last_index(lr) + 2 <= 5) {
        char k[32];
        snprintf(k, sizeof k, "c/%llu", (unsigned long long)raft_last_index(lr));
        last = put(c, 0, NOBODY, raft_last_index(lr), k, "v");
    }
    struct raft_barrier b;
    int bdone = 0;
    b.data = &bdone;
    assert_int_equal(raft_barrier(lr, &b, barrier_cb), 0);
    assert_int_equal(raft_last_index(lr), 5); /* the barrier crosses it */
    step_applied(c, NSRV, 5);
    raft_fixture_step_until_elapsed(&c->rf, 1000);
    assert_int_equal(bdone, 1);
    assert_converged(c);
    for (int i = 0; i < NSRV; i++) {
        struct srv *s = &c->s[i];
        struct raft *r = raft_fixture_get(&c->rf, (unsigned)i);
        assert_int_equal(apply_index(s->a), last);
        assert_int_equal(s->n_snapshot, 1);
        assert_int_equal(s->n_async_unreachable, 0);
        assert_int_equal(s->n_async_ok, 1);
        assert_int_equal(s->n_finalize, 1);
        assert_int_equal(r->log.snapshot.last_index, 5);
        assert_int_equal(s->max_snap, last); /* the store index it needs */
        assert_true(apply_durable_index(s->a) >= s->max_snap);
    }
    cl_free(c);
}

/* A follower too far behind gets an InstallSnapshot: the record is ahead
 * of its store, so behind() is asked (held, index); once it said a store
 * image will replace the store, nothing more is applied. */
static void install_snapshot_behind(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    for (unsigned i = 0; i < NSRV; i++) {
        raft_set_snapshot_threshold(raft_fixture_get(&c->rf, i), 4);
        raft_set_snapshot_trailing(raft_fixture_get(&c->rf, i), 1);
    }
    uint64_t last = put(c, 0, NOBODY, 1, "first", "1");
    step_applied(c, NSRV, last);
    wait_stores(c);
    uint64_t held2 = apply_index(c->s[2].a);
    int64_t rev2 = cur_rev_of(c->s[2].fx);

    raft_fixture_saturate(&c->rf, 0, 2);
    raft_fixture_saturate(&c->rf, 2, 0);
    for (int j = 0; j < 10; j++) {
        char k[32];
        snprintf(k, sizeof k, "p/%d", j);
        last = put(c, 0, NOBODY, 10 + (uint64_t)j, k, "v");
    }
    step_applied(c, 1, last);
    raft_fixture_step_until_elapsed(&c->rf, 300);
    assert_true(c->s[0].n_snapshot >= 1);

    c->s[2].behind_rc = 0; /* "an image will replace the store" */
    raft_fixture_desaturate(&c->rf, 0, 2);
    raft_fixture_desaturate(&c->rf, 2, 0);
    step_applied(c, 2, last);
    wait_stores(c);
    assert_int_equal(c->s[2].n_behind, 1);
    assert_int_equal(c->s[2].behind_held, held2);
    assert_true(c->s[2].behind_idx > held2);
    assert_true(c->s[2].fsm.restoring);
    /* nothing applied on server 2 since */
    assert_int_equal(apply_index(c->s[2].a), held2);
    assert_int_equal(cur_rev_of(c->s[2].fx), rev2);
    assert_string_equal(dump(c, 0), dump(c, 1));
    cl_free(c);
}

/* The fsm's snapshot callbacks called directly (as libraft would): the
 * record names last_applied; snapshot_async returns once the store holds
 * the index durably (asking the apply thread for a sync); records that
 * are not ours are refused; finalize frees. */
static void snapshot_direct(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    uint64_t last = 0;
    for (int j = 0; j < 3; j++)
        last = put(c, 0, NOBODY, (uint64_t)j + 1, j == 0 ? "a" : j == 1 ? "b" : "c", "v");
    step_applied(c, NSRV, last);
    wait_stores(c);
    struct srv *s = &c->s[1];
    struct raft_fsm *fsm = &s->fsm.fsm;
    assert_int_equal(fsm->version, 3);
    assert_int_equal(s->fsm.need, last);

    struct raft_buffer *bufs = NULL;
    unsigned n = 0;
    assert_int_equal(real_snapshot(fsm, &bufs, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rec_index(&bufs[0]), last);
    assert_int_equal(real_async(fsm, &bufs, &n), 0);
    assert_true(apply_durable_index(s->a) >= last);
    assert_int_equal(real_finalize(fsm, &bufs, &n), 0);
    assert_null(bufs);
    assert_int_equal(n, 0);

    /* not our record / no buffer: refused at once */
    struct raft_buffer other = {(void *)"notcairn12345678", 16};
    struct raft_buffer *ob = &other;
    unsigned on = 1;
    assert_int_equal(real_async(fsm, &ob, &on), RAFT_INVALID);
    on = 0;
    assert_int_equal(real_async(fsm, &ob, &on), RAFT_INVALID);

    /* restore of a record the store holds: 0, the data is the fsm's */
    bufs = rec_make(last);
    assert_int_equal(fsm->restore(fsm, &bufs[0]), 0);
    raft_free(bufs); /* libraft frees the array, not the data */
    assert_int_equal(s->fsm.restoring, 0);
    assert_int_equal(s->n_behind, 0);
    cl_free(c);
}

/* libraft's contract (0.15 start.c and installSnapshotCb): restore owns
 * the buffer only when it returns 0; on an error libraft frees it. */
static void restore_error_keeps_buffer(void **state)
{
    (void)state;
    struct cl *c = cl_new(NULL);
    struct srv *s = &c->s[0];
    struct repl_fsm g;
    memset(&g, 0, sizeof g);
    repl_fsm_init(&g);
    g.apply = s->a;
    g.mvcc = s->fx->m;
    uint64_t ahead = apply_index(s->a) + 100;
    /* no behind(): the store cannot catch up */
    struct raft_buffer *b = rec_make(ahead);
    assert_int_equal(g.fsm.restore(&g.fsm, b), RAFT_CORRUPT);
    assert_int_equal(g.restoring, 0);
    raft_free(b->base); /* as libraft does on the error */
    raft_free(b);

    /* behind() refusing: same */
    g.ud = s;
    g.behind = t_behind;
    s->behind_rc = RAFT_IOERR;
    b = rec_make(ahead);
    assert_int_equal(g.fsm.restore(&g.fsm, b), RAFT_IOERR);
    assert_int_equal(s->n_behind, 1);
    assert_int_equal(s->behind_idx, ahead);
    assert_int_equal(g.restoring, 0);
    raft_free(b->base);
    raft_free(b);

    /* a record that is not ours is never "held" */
    b = rec_make(1);
    memcpy(b->base, "otherfsm", 8);
    assert_int_equal(g.fsm.restore(&g.fsm, b), RAFT_IOERR);
    raft_free(b->base);
    raft_free(b);

    /* behind() accepting (a store image will replace the store): 0, the
     * data is the fsm's, and nothing more is applied */
    s->behind_rc = 0;
    b = rec_make(ahead);
    assert_int_equal(g.fsm.restore(&g.fsm, b), 0);
    raft_free(b);
    assert_int_equal(g.restoring, 1);
    assert_int_equal(g.need, ahead);
    cl_free(c);
}

/* Sealed entries (a key ring in every store): entries encoded with the
 * ring apply everywhere; a tampered entry or a missing key is refused. */
static void sealed_entries(void **state)
{
    (void)state;
    struct cl *c = cl_new(K1);
    const struct crypt_ring *ring = mvcc_ring(c->s[0].fx->m);
    assert_non_null(ring);
    size_t len;
    uint8_t *req = put_req("secret", "s3cr3t-value", 0, &len);
    uint64_t last = 0;
    for (int j = 0; j < 3; j++)
        last = propose_ring(c, 0, ring, APPLY_PUT, MEMBER(1), (uint64_t)j + 1, req,
                            len);
    step_applied(c, NSRV, last);
    assert_converged(c);
    assert_string_equal(dump(c, 2), "secret=s3cr3t-value:2/4/3");

    struct raft_buffer e;
    assert_int_equal(repl_entry_encode(&e, ring, APPLY_PUT, 5, 6, 7, req, len), 0);
    uint8_t *b = e.base;
    assert_int_equal(b[0], REPL_ENTRY_SEALED);
    assert_null(memmem(b, e.len, "s3cr3t-value", 12)); /* no plaintext */
    int op;
    uint64_t origin, reqid;
    int64_t auth_rev;
    assert_int_equal(repl_entry_decode(b, e.len, &op, &origin, &reqid, &auth_rev), 0);
    assert_int_equal(op, APPLY_PUT);
    assert_int_equal(origin, 5);
    assert_int_equal(reqid, 6);
    assert_int_equal(auth_rev, 7);

    uint8_t *out = NULL;
    size_t out_len = 0;
    assert_int_equal(repl_entry_request(b, e.len, ring, &out, &out_len), 0);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, req, len);
    cairn_free(out);

    /* missing key: no ring, or a ring without k1 */
    out = NULL;
    assert_int_equal(repl_entry_request(b, e.len, NULL, &out, &out_len), -ENOKEY);
    struct crypt_ring *k2 = ring_of(K2);
    assert_int_equal(repl_entry_request(b, e.len, k2, &out, &out_len), -ENOKEY);
    assert_null(out);
    crypt_ring_free(k2);
    /* k1 by name, other bytes */
    struct crypt_ring *k1o = ring_of(K1_OTHER);
    assert_int_equal(repl_entry_request(b, e.len, k1o, &out, &out_len), -EBADMSG);
    assert_null(out);
    crypt_ring_free(k1o);

    /* tampered: the ciphertext, the tag, the header (AAD), the magic */
    size_t spots[] = {e.len / 2 + REPL_ENTRY_HDR / 2, e.len - 1, 12, 20};
    for (size_t k = 0; k < sizeof spots / sizeof *spots; k++) {
        b[spots[k]] ^= 0x40;
        out = NULL;
        assert_int_equal(repl_entry_request(b, e.len, ring, &out, &out_len),
                         -EBADMSG);
        assert_null(out);
        b[spots[k]] ^= 0x40;
    }
    b[REPL_ENTRY_HDR] ^= 0xff; /* no envelope at all */
    assert_int_equal(repl_entry_request(b, e.len, ring, &out, &out_len), -EBADMSG);
    b[REPL_ENTRY_HDR] ^= 0xff;
    /* truncated */
    assert_int_equal(repl_entry_request(b, e.len - 1, ring, &out, &out_len),
                     -EBADMSG);
    assert_int_equal(repl_entry_request(b, REPL_ENTRY_HDR - 1, ring, &out, &out_len),
                     -EINVAL);

    /* through the fsm: a store without the key refuses a new sealed entry
     * (RAFT_CORRUPT, nothing submitted) but skips a replayed one unopened */
    struct cl *p = cl_new(NULL);
    uint64_t pl = put(p, 0, NOBODY, 1, "plain", "1");
    step_applied(p, NSRV, pl);
    wait_stores(p);
    struct srv *s = &p->s[0];
    uint64_t held = apply_index(s->a);
    int64_t rev = cur_rev_of(s->fx);
    struct raft fake;
    struct repl_fsm g;
    memset(&fake, 0, sizeof fake);
    memset(&g, 0, sizeof g);
    repl_fsm_init(&g);
    g.raft = &fake;
    g.apply = s->a;
    g.mvcc = s->fx->m;
    void *result;
    fake.last_applied = held - 1;
    assert_int_equal(g.fsm.apply(&g.fsm, &e, &result), 0);
    fake.last_applied = held;
    assert_int_equal(g.fsm.apply(&g.fsm, &e, &result), RAFT_CORRUPT);
    wait_store(p, 0);
    assert_int_equal(cur_rev_of(s->fx), rev);
    assert_int_equal(apply_index(s->a), held);
    /* the same store with the ring: the entry applies */
    g.mvcc = c->s[0].fx->m; /* only its ring is used */
    assert_int_equal(g.fsm.apply(&g.fsm, &e, &result), 0);
    wait_store(p, 0);
    assert_int_equal(cur_rev_of(s->fx), rev + 1);
    assert_int_equal(apply_index(s->a), held + 1);
    cl_free(p);

    raft_free(e.base);
    cairn_free(req);
    cl_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replicate_converge),
        cmocka_unit_test(take_path),
        cmocka_unit_test(replay_skip),
        cmocka_unit_test(replay_skip_direct),
        cmocka_unit_test(partition_leader),
        cmocka_unit_test(snapshots),
        cmocka_unit_test(snapshot_at_barrier),
        cmocka_unit_test(install_snapshot_behind),
        cmocka_unit_test(snapshot_direct),
        cmocka_unit_test(restore_error_keeps_buffer),
        cmocka_unit_test(sealed_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
