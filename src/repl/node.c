/* The member's raft node: libraft with cairn's raft_io, the state machine
 * glue, proposals (local and forwarded), read indexes and leadership. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "lease/lease.h"
#include "metrics/metrics.h"
#include "net/net.h"
#include "repl/io.h"
#include "repl/repl_int.h"
#include "server/server.h"

/* How often leadership, timeouts and membership are looked at. */
#define TICK_MS 10
/* A proposal or read not answered within this is "request timed out"
 * (etcd: 5 s plus twice the election timeout). */
#define REQUEST_TIMEOUT_MS(n) (5000 + 2 * (uint64_t)(n)->s->cfg.election_ms)
#define PENDING_BUCKETS 4096

struct repl_node repl__n;
#define N repl__n

/* ---- small helpers ---- */

uint64_t repl__now_ms(void)
{
    return uv_hrtime() / 1000000;
}



static int raft_rc(int rv)
{
    switch (rv) {
    case RAFT_NOTLEADER:
        return CAIRN_ENOLEADER;
    case RAFT_LEADERSHIPLOST:
        return CAIRN_ELEADERCHANGED;
    case RAFT_SHUTDOWN:
    case RAFT_CANCELED:
        return CAIRN_ESTOPPED;
    case RAFT_NOMEM:
        return -ENOMEM;
    case RAFT_TOOBIG:
        return CAIRN_ETOOLARGE;
    default:
        return CAIRN_ETIMEOUT;
    }
}

/* ---- local proposals waiting for their entry ---- */

struct pending {
    uint64_t reqid;
    struct apply_cmd *cmd;
    uint64_t deadline;
    int sent;                       /* proposed or forwarded */
    struct pending *h_next;         /* bucket */
    struct pending *prev, *next;    /* age order */
};

static struct pending *buckets[PENDING_BUCKETS];
static struct pending *oldest, *newest;

static struct pending **bucket(uint64_t reqid)
{
    return &buckets[(reqid * 0x9E3779B97F4A7C15ULL) >> 52];
}

static struct pending *pending_add(struct apply_cmd *cmd)
{
    struct pending *p = cairn_calloc(1, sizeof *p), **b;
    p->reqid = ++N.next_req;
    p->cmd = cmd;
    p->deadline = repl__now_ms() + REQUEST_TIMEOUT_MS(&N);
    b = bucket(p->reqid);
    p->h_next = *b;
    *b = p;
    p->prev = newest;
    if (newest)
        newest->next = p;
    else
        oldest = p;
    newest = p;
    return p;
}

static struct apply_cmd *pending_take(uint64_t reqid)
{
    struct pending **pp = bucket(reqid), *p;
    while (*pp && (*pp)->reqid != reqid)
        pp = &(*pp)->h_next;
    if ((p = *pp) == NULL)
        return NULL;
    *pp = p->h_next;
    if (p->prev)
        p->prev->next = p->next;
    else
        oldest = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        newest = p->prev;
    struct apply_cmd *cmd = p->cmd;
    cairn_free(p);
    return cmd;
}

static void cmd_fail(struct apply_cmd *cmd, int rc)
{
    cmd->rc = rc;
    if (cmd->proposed)
        metrics_proposal_done(rc);
    cmd->done(cmd);
}

static void pending_fail(uint64_t reqid, int rc)
{
    struct apply_cmd *cmd = pending_take(reqid);
    if (cmd != NULL)
        cmd_fail(cmd, rc);
}

/* ---- proposing ---- */

struct prop {
    struct raft_apply req;
    uint64_t origin, reqid;
};

static void nack(uint64_t origin, uint64_t reqid, int rc)
{
    if (origin == N.self) {
        pending_fail(reqid, rc);
        return;
    }
    uint8_t b[16];
    repl__put64(b, reqid);
    repl__put64(b + 8, (uint64_t)(int64_t)rc);
    repl_peer_send_app(N.peer, origin, REPL_APP_NACK, b, sizeof b);
}

static void prop_done(struct raft_apply *req, int status, void *result)
{
    struct prop *p = req->data;
    (void)result;
    /* Success: the entry applied (fsm_apply) and its origin answers once
     * its own store holds it. Failure: it may still commit under the next
     * leader, so the origin's answer is "maybe". */
    if (status != 0 && !N.stopping)
        nack(p->origin, p->reqid, raft_rc(status));
    cairn_free(p);
}

/* Leader: appends an encoded entry (takes @buf). */
static void propose(struct raft_buffer *buf, uint64_t origin, uint64_t reqid)
{
    struct prop *p = cairn_calloc(1, sizeof *p);
    p->origin = origin;
    p->reqid = reqid;
    p->req.data = p;
    int rv = raft_apply(&N.raft, &p->req, buf, 1, prop_done);
    if (rv != 0) {
        raft_free(buf->base);
        cairn_free(p);
        nack(origin, reqid, raft_rc(rv));
    }
}

static void send_pending(struct pending *p)
{
    struct apply_cmd *cmd = p->cmd;
    struct raft_buffer buf;
    if (repl_entry_encode(&buf, mvcc_ring(N.s->mvcc), cmd->op, N.self, p->reqid,
                          cmd->auth_rev, cmd->req, cmd->req_len) != 0) {
        pending_fail(p->reqid, -ENOMEM);
        return;
    }
    p->sent = 1;
    if (N.raft.state == RAFT_LEADER) {
        int rc = repl__check_proposal(cmd->op, buf.base, buf.len);
        if (rc != 0) {
            raft_free(buf.base);
            pending_fail(p->reqid, rc);
            return;
        }
        propose(&buf, N.self, p->reqid);
        return;
    }
    /* Not sent at all (no connection to the leader yet, or it failed a
     * moment ago): tried again on the next tick. A message the transport
     * took but lost is not resent (it may have been proposed): the
     * proposal then times out, as etcd's lost proposals do. */
    if (repl_peer_send_app(N.peer, N.leader, REPL_APP_FORWARD, buf.base,
                           buf.len) < 0)
        p->sent = 0;
    raft_free(buf.base);
}

void repl_submit(struct apply_cmd *cmd)
{
    cmd->rc = 0;
    cmd->next = NULL;
    if (N.stopping || !N.started) {
        cmd_fail(cmd, CAIRN_ESTOPPED);
        return;
    }
    metrics_proposal_submitted();
    cmd->proposed = 1;
    struct pending *p = pending_add(cmd);
    /* Without a leader the proposal waits (bounded by its deadline) for
     * one to be elected, as etcd's do. */
    if (N.leader != 0)
        send_pending(p);
}

void repl_submit_msg(enum apply_op op, const ProtobufCMessage *m,
                     void (*done)(struct apply_cmd *cmd), void *ud)
{
    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    cmd->op = op;
    cmd->req_len = protobuf_c_message_get_packed_size(m);
    cmd->req = cairn_malloc(cmd->req_len + 1);
    protobuf_c_message_pack(m, cmd->req);
    cmd->done = done;
    cmd->ud = ud;
    repl_submit(cmd);
}

/* ---- store images (a follower too far behind for the log) ---- */

/* Thread pool: the leader's store, copied whole, to stream behind an
 * InstallSnapshot. */
static int image_open(void *ud, uint64_t index)
{
    (void)ud;
    (void)index;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/member/snap", N.s->cfg.data_dir);
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = mvcc_image_write(N.s->mvcc, fd);
    if (rc != 0 || lseek(fd, 0, SEEK_SET) != 0) {
        close(fd);
        return rc != 0 ? rc : -EIO;
    }
    return fd;
}

void repl_image_path(const char *data_dir, char *out, size_t n)
{
    snprintf(out, n, "%s/member/snap/image.mdb", data_dir);
}

/* The image is complete (and synced) at @path: it becomes the one the
 * next start puts in place of the store. */
static void image_received(void *ud, uint64_t index, const char *path)
{
    char dst[4096], dir[4096];
    (void)ud;
    repl_image_path(N.s->cfg.data_dir, dst, sizeof dst);
    if (rename(path, dst) != 0) {
        log_errorw("raft: cannot keep the received store image",
                   LOG_STR("path", path), LOG_STR("error", strerror(errno)));
        return;
    }
    snprintf(dir, sizeof dir, "%s/member/snap", N.s->cfg.data_dir);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    log_infow("raft: received a store image from the leader",
              LOG_UINT("snapshot-index", index));
}

/* The snapshot to restore is ahead of the store: from a leader's
 * InstallSnapshot, whose store image arrived first and whose record is
 * durable now. The image replaces the store at the next start, so this
 * member restarts itself; until then nothing is applied (the entries after
 * the snapshot are in the log and apply after the restart). */
static uv_timer_t restart_timer;

static void restart_now(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
    server_restart();
}

static int store_behind(void *ud, uint64_t held, uint64_t idx)
{
    char image[4096];
    (void)ud;
    repl_image_path(N.s->cfg.data_dir, image, sizeof image);
    if (access(image, F_OK) == 0) {
        log_infow("raft: restarting to load the store image from the leader",
                  LOG_UINT("store-index", held), LOG_UINT("snapshot-index", idx));
        /* a moment first, for libraft's answer to the InstallSnapshot to
         * reach the leader (else the leader waits for its install
         * timeout before it sends this member anything again) */
        uv_timer_init(N.loop, &restart_timer);
        uv_timer_start(&restart_timer, restart_now, 250, 0);
        return 0;
    }
    log_errorw("raft: the store is behind the snapshot to restore and no "
               "store image arrived with it",
               LOG_UINT("store-index", held), LOG_UINT("snapshot-index", idx));
    return RAFT_CORRUPT;
}

static struct apply_cmd *take_pending(void *ud, uint64_t reqid)
{
    (void)ud;
    return pending_take(reqid);
}

static void reads_check_applied(void);

/* A follower answers a write it forwarded once it applied the entry, and
 * it learns the entry is committed from the leader's next AppendEntries.
 * libraft sends that with the next entries or the next heartbeat: an idle
 * cluster would hold the answer for up to a heartbeat. So when the leader
 * applies an entry another member proposed and nothing newer is on its
 * way, it appends a barrier, whose AppendEntries carry the new commit index
 * at once (etcd's leader likewise sends the commit index right away). */
static struct raft_barrier nudge;
static int nudge_busy;

static void nudge_done(struct raft_barrier *req, int status)
{
    (void)req;
    (void)status;
    nudge_busy = 0;
}

static void remote_applied(void *ud, uint64_t index)
{
    (void)ud;
    if (N.raft.state != RAFT_LEADER || nudge_busy ||
        raft_last_index(&N.raft) > index)
        return;
    nudge_busy = 1;
    if (raft_barrier(&N.raft, &nudge, nudge_done) != 0)
        nudge_busy = 0;
}

/* ---- reads ---- */

struct read {
    void (*cb)(void *ud, int rc);
    void *ud;
    uint64_t origin, reqid; /* a follower's request (origin != self) */
    uint64_t index;         /* wait until applied */
    uint64_t deadline;
    uint64_t asked_at;      /* follower: when the leader was last asked */
    struct read *next;
};

static struct read *reads_next;      /* leader: for the next barrier */
static struct read *reads_inflight;  /* leader: behind the barrier */
static struct read *reads_applying;  /* waiting for apply to reach index */
static struct read *reads_remote;    /* follower: asked the leader */
static struct read *reads_unsent;    /* no leader known yet */
static struct raft_barrier barrier;
static int barrier_busy;

static void read_fenced(void *ud)
{
    struct read *r = ud;
    r->cb(r->ud, 0);
    cairn_free(r);
}

static void read_finish(struct read *r, int rc)
{
    if (r->origin != N.self) {
        uint8_t b[24];
        repl__put64(b, r->reqid);
        repl__put64(b + 8, (uint64_t)(int64_t)rc);
        repl__put64(b + 16, r->index);
        repl_peer_send_app(N.peer, r->origin, REPL_APP_READ_INDEX_RESP, b,
                           sizeof b);
        cairn_free(r);
        return;
    }
    if (rc != 0) {
        r->cb(r->ud, rc);
        cairn_free(r);
        return;
    }
    if (N.raft.last_applied >= r->index) {
        /* everything up to the index went to the apply thread: wait until
         * it is in the store */
        apply_fence(N.s->apply, read_fenced, r);
        return;
    }
    r->next = reads_applying;
    reads_applying = r;
}

static void reads_check_applied(void)
{
    struct read **pp = &reads_applying;
    while (*pp) {
        struct read *r = *pp;
        if (N.raft.last_applied >= r->index) {
            *pp = r->next;
            apply_fence(N.s->apply, read_fenced, r);
        } else {
            pp = &r->next;
        }
    }
}

static void kick_barrier(void);

static void barrier_done(struct raft_barrier *req, int status)
{
    struct read *r = reads_inflight, *next;
    uint64_t index = req->index;
    reads_inflight = NULL;
    barrier_busy = 0;
    for (; r != NULL; r = next) {
        next = r->next;
        r->index = index;
        read_finish(r, status == 0 ? 0 : raft_rc(status));
    }
    if (!N.stopping)
        kick_barrier();
}

/* One barrier confirms leadership for every read queued while the last
 * one was in flight. */
static void kick_barrier(void)
{
    if (barrier_busy || reads_next == NULL)
        return;
    if (N.raft.state != RAFT_LEADER) {
        struct read *r = reads_next, *next;
        reads_next = NULL;
        for (; r != NULL; r = next) {
            next = r->next;
            read_finish(r, CAIRN_ELEADERCHANGED);
        }
        return;
    }
    reads_inflight = reads_next;
    reads_next = NULL;
    barrier_busy = 1;
    barrier.data = NULL;
    int rv = raft_barrier(&N.raft, &barrier, barrier_done);
    if (rv != 0) {
        barrier_busy = 0;
        struct read *r = reads_inflight, *next;
        reads_inflight = NULL;
        for (; r != NULL; r = next) {
            next = r->next;
            read_finish(r, raft_rc(rv));
        }
    }
}

static void read_ask_leader(struct read *r)
{
    uint8_t b[8];
    repl__put64(b, r->reqid);
    if (repl_peer_send_app(N.peer, N.leader, REPL_APP_READ_INDEX, b,
                           sizeof b) < 0) {
        /* not sent: asked again on the next tick */
        r->next = reads_unsent;
        reads_unsent = r;
        return;
    }
    r->asked_at = repl__now_ms();
    r->next = reads_remote;
    reads_remote = r;
}

/* Asking for a read index is idempotent: a question or answer the
 * transport lost (a connection that dropped meanwhile) is asked again
 * after a few heartbeats, of whoever leads now. */
static void reads_ask_again(void)
{
    uint64_t now = repl__now_ms(), after = 4 * (uint64_t)N.s->cfg.heartbeat_ms;
    if (after < 200)
        after = 200;
    if (N.leader == 0 || N.raft.state == RAFT_LEADER)
        return;
    for (struct read *r = reads_remote; r != NULL; r = r->next) {
        if (now - r->asked_at < after)
            continue;
        uint8_t b[8];
        repl__put64(b, r->reqid);
        if (repl_peer_send_app(N.peer, N.leader, REPL_APP_READ_INDEX, b,
                               sizeof b) == 0)
            r->asked_at = now;
    }
}

void repl_read_index(void (*cb)(void *ud, int rc), void *ud)
{
    if (N.stopping || !N.started) {
        cb(ud, CAIRN_ESTOPPED);
        return;
    }
    /* A single voter that leads cannot be deposed by anyone else: what it
     * has applied is everything acknowledged. */
    if (N.raft.state == RAFT_LEADER && repl__voters() == 1) {
        cb(ud, 0);
        return;
    }
    struct read *r = cairn_calloc(1, sizeof *r);
    r->cb = cb;
    r->ud = ud;
    r->origin = N.self;
    r->reqid = ++N.next_req;
    r->deadline = repl__now_ms() + REQUEST_TIMEOUT_MS(&N);
    if (N.raft.state == RAFT_LEADER) {
        r->next = reads_next;
        reads_next = r;
        kick_barrier();
    } else if (N.leader != 0) {
        read_ask_leader(r);
    } else {
        r->next = reads_unsent;
        reads_unsent = r;
    }
}

/* ---- lease queries answered by the leader's lessor ---- */

struct lq {
    repl_lease_cb cb;
    void *ud;
    uint64_t reqid, deadline;
    struct lq *next;
};

static struct lq *lqs;

static int lease_local(int renew, int64_t id, int64_t *ttl, int64_t *remaining)
{
    int rc;
    if (renew) {
        rc = lease_renew(id, ttl);
        *remaining = *ttl * 1000;
    } else {
        rc = lease_lookup(id, ttl, remaining);
    }
    return rc;
}

void repl_lease(int renew, int64_t id, repl_lease_cb cb, void *ud)
{
    int64_t ttl = 0, remaining = 0;
    if (N.stopping || !N.started) {
        cb(ud, CAIRN_ESTOPPED, 0, 0);
        return;
    }
    if (N.raft.state == RAFT_LEADER) {
        int rc = lease_local(renew, id, &ttl, &remaining);
        cb(ud, rc, ttl, remaining);
        return;
    }
    if (N.leader == 0) {
        cb(ud, CAIRN_ENOLEADER, 0, 0);
        return;
    }
    struct lq *q = cairn_calloc(1, sizeof *q);
    q->cb = cb;
    q->ud = ud;
    q->reqid = ++N.next_req;
    q->deadline = repl__now_ms() + REQUEST_TIMEOUT_MS(&N);
    q->next = lqs;
    lqs = q;
    uint8_t b[17];
    repl__put64(b, q->reqid);
    repl__put64(b + 8, (uint64_t)id);
    b[16] = (uint8_t)renew;
    repl_peer_send_app(N.peer, N.leader, REPL_APP_LEASE, b, sizeof b);
}

static void lq_finish(uint64_t reqid, int rc, int64_t ttl, int64_t remaining)
{
    struct lq **pp = &lqs;
    while (*pp && (*pp)->reqid != reqid)
        pp = &(*pp)->next;
    if (*pp == NULL)
        return;
    struct lq *q = *pp;
    *pp = q->next;
    q->cb(q->ud, rc, ttl, remaining);
    cairn_free(q);
}

static void lq_expire(int all)
{
    uint64_t now = repl__now_ms();
    struct lq **pp = &lqs;
    while (*pp) {
        struct lq *q = *pp;
        if (all || q->deadline <= now) {
            *pp = q->next;
            q->cb(q->ud, all ? CAIRN_ESTOPPED : CAIRN_ETIMEOUT, 0, 0);
            cairn_free(q);
        } else {
            pp = &q->next;
        }
    }
}

/* ---- messages from other members ---- */

static void on_app(void *ud, uint64_t from, int type, const uint8_t *data,
                   size_t len)
{
    (void)ud;
    if (N.stopping)
        return;
    switch (type) {
    case REPL_APP_FORWARD: {
        int op;
        uint64_t origin, reqid;
        int64_t auth_rev;
        if (repl_entry_decode(data, len, &op, &origin, &reqid, &auth_rev) != 0)
            return;
        if (N.raft.state != RAFT_LEADER) {
            nack(origin, reqid, N.leader ? CAIRN_ELEADERCHANGED : CAIRN_ENOLEADER);
            return;
        }
        int rc = repl__check_proposal(op, data, len);
        if (rc != 0) {
            nack(origin, reqid, rc);
            return;
        }
        struct raft_buffer buf = {raft_malloc(len + 1), len};
        if (buf.base == NULL)
            return;
        memcpy(buf.base, data, len);
        propose(&buf, origin, reqid);
        break;
    }
    case REPL_APP_NACK:
        if (len >= 16)
            pending_fail(repl__get64(data), (int)(int64_t)repl__get64(data + 8));
        break;
    case REPL_APP_READ_INDEX: {
        if (len < 8)
            return;
        struct read *r = cairn_calloc(1, sizeof *r);
        r->origin = from;
        r->reqid = repl__get64(data);
        if (N.raft.state != RAFT_LEADER) {
            read_finish(r, CAIRN_ELEADERCHANGED);
            return;
        }
        r->next = reads_next;
        reads_next = r;
        kick_barrier();
        break;
    }
    case REPL_APP_READ_INDEX_RESP: {
        if (len < 24)
            return;
        uint64_t reqid = repl__get64(data);
        struct read **pp = &reads_remote;
        while (*pp && (*pp)->reqid != reqid)
            pp = &(*pp)->next;
        if (*pp == NULL)
            return;
        struct read *r = *pp;
        *pp = r->next;
        r->index = repl__get64(data + 16);
        read_finish(r, (int)(int64_t)repl__get64(data + 8));
        break;
    }
    case REPL_APP_LEASE: {
        if (len < 17)
            return;
        int64_t ttl = 0, remaining = 0;
        int rc = N.raft.state == RAFT_LEADER
                     ? lease_local(data[16], (int64_t)repl__get64(data + 8), &ttl,
                                   &remaining)
                     : CAIRN_ELEADERCHANGED;
        uint8_t b[32];
        repl__put64(b, repl__get64(data));
        repl__put64(b + 8, (uint64_t)(int64_t)rc);
        repl__put64(b + 16, (uint64_t)ttl);
        repl__put64(b + 24, (uint64_t)remaining);
        repl_peer_send_app(N.peer, from, REPL_APP_LEASE_RESP, b, sizeof b);
        break;
    }
    case REPL_APP_REMOVED:
        /* a current member says this one was removed */
        if (!repl__member_removed(from) && !N.stopping) {
            log_warnw("the member has been permanently removed from the cluster",
                      LOG_UINT("local-member-id", N.self), LOG_UINT("told-by", from));
            server_stop("removed from the cluster");
        }
        break;
    case REPL_APP_LEASE_RESP:
        if (len >= 32)
            lq_finish(repl__get64(data), (int)(int64_t)repl__get64(data + 8),
                      (int64_t)repl__get64(data + 16), (int64_t)repl__get64(data + 24));
        break;
    default:
        break;
    }
}

/* ---- leadership, timeouts ---- */

static void expire(void)
{
    uint64_t now = repl__now_ms();
    while (oldest != NULL && oldest->deadline <= now)
        pending_fail(oldest->reqid, oldest->sent ? CAIRN_ETIMEOUT : CAIRN_ENOLEADER);
    struct read **lists[] = {&reads_remote, &reads_unsent, &reads_applying};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        struct read **pp = lists[i];
        while (*pp) {
            struct read *r = *pp;
            if (r->deadline != 0 && r->deadline <= now) {
                static const char *const where[] = {"asked the leader",
                                                    "no leader to ask",
                                                    "applying"};
                *pp = r->next;
                log_warnw("raft: a linearizable read timed out",
                          LOG_STR("waiting", where[i]), LOG_UINT("read-index", r->index),
                          LOG_UINT("applied", N.raft.last_applied),
                          LOG_UINT("commit", N.raft.commit_index),
                          LOG_UINT("leader", N.leader),
                          LOG_BOOL("barrier-busy", barrier_busy));
                r->cb(r->ud, i == 1 ? CAIRN_ENOLEADER : CAIRN_ETIMEOUT);
                cairn_free(r);
            } else {
                pp = &r->next;
            }
        }
    }
}

/* A barrier that never answers would stall every linearizable read: say
 * so (once per stall) with the state needed to see why. */
static uint64_t barrier_since;

static void barrier_watch(void)
{
    static int told;
    if (!barrier_busy) {
        barrier_since = 0;
        told = 0;
        return;
    }
    uint64_t now = repl__now_ms();
    if (barrier_since == 0)
        barrier_since = now;
    if (!told && now - barrier_since > REQUEST_TIMEOUT_MS(&N)) {
        told = 1;
        log_errorw("raft: the read-index barrier has not answered",
                   LOG_UINT("barrier-index", barrier.index),
                   LOG_UINT("applied", N.raft.last_applied),
                   LOG_UINT("commit", N.raft.commit_index),
                   LOG_UINT("last-index", raft_last_index(&N.raft)),
                   LOG_INT("state", N.raft.state));
    }
}

static void on_leader_known(void)
{
    struct pending *pn;
    for (struct pending *p = oldest; p != NULL; p = pn) {
        pn = p->next; /* send_pending may fail (and free) p */
        if (!p->sent)
            send_pending(p);
    }
    struct read *r = reads_unsent, *next;
    reads_unsent = NULL;
    for (; r != NULL; r = next) {
        next = r->next;
        if (N.raft.state == RAFT_LEADER) {
            r->next = reads_next;
            reads_next = r;
        } else {
            read_ask_leader(r);
        }
    }
    kick_barrier();
}

/* Proposals and reads that could not be sent to the leader yet. */
static void resend_unsent(void)
{
    int any = reads_unsent != NULL;
    for (struct pending *p = oldest; p != NULL && !any; p = p->next)
        any = !p->sent;
    if (any)
        on_leader_known();
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
    if (N.stopping)
        return;
    raft_id lid = 0;
    const char *laddr = NULL;
    raft_leader(&N.raft, &lid, &laddr);
    if (N.raft.current_term != N.term) {
        N.term = N.raft.current_term;
        N.s->raft_term = N.term;
        apply_set_term(N.s->apply, N.term);
    }
    int leading = N.raft.state == RAFT_LEADER;
    if (lid != N.leader) {
        if (lid != 0) {
            N.leader_changes++;
            log_infow("raft: leader elected", LOG_UINT("leader", lid),
                      LOG_UINT("term", N.term));
        } else {
            log_infow("raft: no leader", LOG_UINT("term", N.term));
        }
        N.leader = lid;
        if (lid != 0) {
            N.no_leader_since = 0;
            on_leader_known();
        } else {
            N.no_leader_since = repl__now_ms();
        }
    }
    if (N.leader == 0 && N.no_leader_since != 0 &&
        repl__now_ms() - N.no_leader_since >= 3 * (uint64_t)N.s->cfg.election_ms) {
        N.no_leader_since = repl__now_ms(); /* and again after three more */
        net_end_hasleader_streams();
    }
    if (leading && !N.was_leader && reads_remote != NULL) {
        /* reads this member asked a former leader about: its own now */
        struct read *r = reads_remote, *next;
        reads_remote = NULL;
        for (; r != NULL; r = next) {
            next = r->next;
            r->next = reads_next;
            reads_next = r;
        }
        kick_barrier();
    }
    if (leading && !N.was_leader) {
        /* etcd's lessor.Promote: nothing expires early because leadership
         * moved */
        lease_promote(N.s->cfg.election_ms);
    }
    if (!leading && N.was_leader)
        lease_demote();
    N.was_leader = leading;
    if (N.raft.configuration_index != N.conf_index ||
        N.raft.configuration_uncommitted_index != N.conf_uncommitted) {
        N.conf_index = N.raft.configuration_index;
        N.conf_uncommitted = N.raft.configuration_uncommitted_index;
        repl__members_load();
    }
    reads_check_applied();
    reads_ask_again();
    barrier_watch();
    expire();
    lq_expire(0);
    if (N.leader != 0) {
        resend_unsent();
        repl__members_publish();
    }
    if (leading && N.force_pending)
        repl__members_force_alone();
    if (leading)
        repl__members_reconcile();
}

/* ---- start and stop ---- */

static uint64_t keep_from(void *ud)
{
    (void)ud;
    /* the log is the store's write-ahead log: never cut what it does not
     * hold durably */
    return apply_durable_index(N.s->apply) + 1;
}

static int send_raft(void *ud, const struct raft_message *m,
                     void (*cb)(void *cb_ud, int status), void *cb_ud)
{
    (void)ud;
    int rc = repl_peer_send_raft(N.peer, m, cb, cb_ud);
    if (rc == -EMSGSIZE)
        return RAFT_TOOBIG;
    if (rc == -ESHUTDOWN)
        return RAFT_CANCELED;
    return rc < 0 ? RAFT_NOCONNECTION : rc;
}

static void on_raft_msg(void *ud, struct raft_message *msg)
{
    (void)ud;
    if (repl__member_removed(msg->server_id)) {
        /* etcd ignores a removed member's messages and tells it so (its
         * peer handler answers 410 "the member has been permanently
         * removed"): here an app message, at most once a second */
        static uint64_t told_at;
        uint64_t now = repl__now_ms();
        if (now - told_at >= 1000) {
            told_at = now;
            repl_peer_send_app(N.peer, msg->server_id, REPL_APP_REMOVED, NULL, 0);
        }
        repl_io_free_message(msg);
        return;
    }
    repl_io_deliver(&N.io, msg);
}

/* Joining an existing cluster: the leader dialed us with our IDs. They
 * are kept, and the member starts again under them (everything that
 * derives from the member ID is set up at start). */
static void adopt(void *ud, uint64_t cluster_id, uint64_t member_id)
{
    (void)ud;
    if (N.adopted || N.stopping)
        return;
    N.adopted = 1;
    log_infow("joining: the cluster names this member",
              LOG_UINT("member-id", member_id), LOG_UINT("cluster-id", cluster_id));
    if (server_identity_save(N.s, member_id, cluster_id) != 0) {
        log_error("joining: cannot keep the member's identity");
        N.adopted = 0;
        return;
    }
    server_restart();
}

static int dir_has_files(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (d == NULL)
        return 0;
    while ((e = readdir(d)) != NULL)
        n += e->d_name[0] != '.';
    closedir(d);
    return n > 0;
}

/* Images a crash cut short (repl_peer writes .peer-image-* files). */
static void remove_partial_images(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".peer-image-", 12) != 0)
            continue;
        char p[4096 + 256 + 2];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static int mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = 0;
        if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
            return -errno;
        *p = '/';
    }
    if (mkdir(tmp, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int repl_start(uv_loop_t *loop, struct server *s)
{
    char err[256] = "";
    int rv;

    memset(&N, 0, sizeof N);
    N.loop = loop;
    N.s = s;
    N.self = s->member_id;
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        /* request ids of an earlier run must never match this run's */
        N.next_req = ((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000)
                     << 20;
    }
    snprintf(N.raft_dir, sizeof N.raft_dir, "%s/member/raft", s->cfg.data_dir);
    if ((rv = mkdirs(N.raft_dir)) != 0) {
        log_errorw("raft: cannot create the log directory",
                   LOG_STR("path", N.raft_dir), LOG_STR("error", strerror(-rv)));
        return -1;
    }
    char image_dir[4096];
    snprintf(image_dir, sizeof image_dir, "%s/member/snap", s->cfg.data_dir);
    if ((rv = mkdirs(image_dir)) != 0)
        return -1;
    remove_partial_images(image_dir);

    char adv[2048];
    size_t o = 0;
    adv[0] = 0;
    for (int i = 0; i < s->n_peer_urls && o < sizeof adv; i++)
        o += (size_t)snprintf(adv + o, sizeof adv - o, "%s%s", i ? "," : "",
                              s->peer_urls[i]);
    struct repl_peer_tls tls = {0};
    tls.cert_file = s->peer_cert_file;
    tls.key_file = s->peer_key_file;
    tls.trusted_ca_file = s->cfg.peer_trusted_ca_file;
    tls.client_cert_auth = s->cfg.peer_client_cert_auth;
    tls.self_cert = s->cfg.peer_auto_tls &&
                    (s->cfg.peer_cert_file == NULL || s->cfg.peer_key_file == NULL);
    tls.allowed_cn = s->cfg.peer_cert_allowed_cn;
    struct repl_peer_opts po = {0};
    po.advertise_urls = adv;
    if (tls.cert_file != NULL || tls.trusted_ca_file != NULL)
        po.tls = &tls;
    po.cluster_id = s->cluster_id;
    po.self_id = N.self;
    po.listen_urls = s->cfg.listen_peer_urls;
    po.image_dir = image_dir;
    po.recv_raft = on_raft_msg;
    po.recv_app = on_app;
    po.image_open = image_open;
    po.image_received = image_received;
    if (s->joining)
        po.adopt = adopt;
    if (repl__members_load() != 0)
        return -1;
    if ((rv = repl_peer_start(loop, &po, &N.peer, err, sizeof err)) != 0) {
        log_errorw("raft: cannot listen for peers", LOG_STR("error", err));
        return -1;
    }
    for (int i = 0; i < N.n_members; i++)
        if (N.members[i].id != N.self)
            repl_peer_set_urls(N.peer, N.members[i].id, N.members[i].peer_urls);

    int log_has_state = dir_has_files(N.raft_dir);
    struct repl_io_opts io = {0};
    io.dir = N.raft_dir;
    io.send = send_raft;
    io.keep_from = keep_from;
    io.bump_term = N.n_members == 1 && N.members[0].id == N.self;
    if ((rv = repl_io_init(&N.io, loop, &io)) != 0) {
        log_errorw("raft: cannot open the log", LOG_STR("path", N.raft_dir),
                   LOG_INT("rc", rv));
        return -1;
    }
    repl_fsm_init(&N.fsm);
    N.fsm.raft = &N.raft;
    N.fsm.apply = s->apply;
    N.fsm.mvcc = s->mvcc;
    N.fsm.self = N.self;
    N.fsm.take = take_pending;
    N.fsm.behind = store_behind;
    N.fsm.remote_applied = remote_applied;
    char addr[32];
    snprintf(addr, sizeof addr, "%016" PRIx64, N.self);
    if ((rv = raft_init(&N.raft, &N.io, &N.fsm.fsm, N.self, addr)) != 0) {
        log_errorw("raft: init failed", LOG_STR("error", raft_strerror(rv)));
        return -1;
    }
    raft_set_heartbeat_timeout(&N.raft, (unsigned)s->cfg.heartbeat_ms);
    raft_set_election_timeout(&N.raft, (unsigned)s->cfg.election_ms);
    /* pre-vote from the first election timeout on: at start a single
     * voter elects itself at once, and with pre-vote libraft would keep
     * the term (etcd's single member starts each run with a new term) */
    raft_set_pre_vote(&N.raft, false);
    /* libraft's default is 30 s: an InstallSnapshot whose answer was lost
     * (the member restarts to load the store image) is tried again
     * sooner */
    raft_set_install_snapshot_timeout(&N.raft,
                                      (unsigned)(2 * s->cfg.election_ms > 5000
                                                     ? 2 * s->cfg.election_ms
                                                     : 5000));
    raft_set_snapshot_threshold(&N.raft, (unsigned)(s->cfg.snapshot_count > 0
                                                        ? s->cfg.snapshot_count
                                                        : 100000));
    /* etcd keeps 5000 entries behind a snapshot for slow followers; a
     * follower further behind gets a store image */
    raft_set_snapshot_trailing(&N.raft, (unsigned)(s->cfg.snapshot_catchup_entries > 0
                                                       ? s->cfg.snapshot_catchup_entries
                                                       : 5000));

    if (strcmp(s->cfg.initial_cluster_state, "new") == 0) {
        struct raft_configuration conf;
        raft_configuration_init(&conf);
        for (int i = 0; i < N.n_members; i++) {
            char a[32];
            snprintf(a, sizeof a, "%016" PRIx64, N.members[i].id);
            raft_configuration_add(&conf, N.members[i].id, a, RAFT_VOTER);
        }
        /* every member of a new cluster bootstraps the same configuration
         * as entry 1; a member that has state already keeps it */
        rv = log_has_state ? RAFT_CANTBOOTSTRAP : raft_bootstrap(&N.raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0 && rv != RAFT_CANTBOOTSTRAP) {
            log_errorw("raft: bootstrap failed", LOG_STR("error", raft_strerror(rv)));
            return -1;
        }
    }
    if (s->cfg.force_new_cluster) {
        /* etcd's --force-new-cluster: this member alone, keeping its data;
         * the other members' records are removed once it leads */
        struct raft_configuration conf;
        char a[32];
        raft_configuration_init(&conf);
        snprintf(a, sizeof a, "%016" PRIx64, N.self);
        raft_configuration_add(&conf, N.self, a, RAFT_VOTER);
        rv = raft_recover(&N.raft, &conf);
        raft_configuration_close(&conf);
        if (rv != 0) {
            log_errorw("raft: --force-new-cluster failed",
                       LOG_STR("error", raft_strerror(rv)));
            return -1;
        }
        N.force_pending = 1;
        log_warnw("forcing restart member as a new one-member cluster",
                  LOG_STR("advertise-peer-urls", adv));
    }
    if ((rv = raft_start(&N.raft)) != 0) {
        log_errorw("raft: start failed", LOG_STR("error", raft_strerror(rv)),
                   LOG_STR("detail", raft_errmsg(&N.raft)));
        return -1;
    }
    raft_set_pre_vote(&N.raft, true);
    N.started = 1;
    N.no_leader_since = repl__now_ms();
    uv_timer_init(loop, &N.tick);
    uv_timer_start(&N.tick, on_tick, TICK_MS, TICK_MS);
    uv_unref((uv_handle_t *)&N.tick);
    return 0;
}

static void (*stop_cb)(void);

static void on_peer_closed(void *ud)
{
    (void)ud;
    cairn_free(N.members);
    N.members = NULL;
    if (stop_cb)
        stop_cb();
}

static void on_raft_closed(struct raft *r)
{
    (void)r;
    repl_peer_close(N.peer, on_peer_closed, NULL);
}

void repl_stop(void (*cb)(void))
{
    stop_cb = cb;
    if (!N.started) {
        if (cb)
            cb();
        return;
    }
    N.stopping = 1;
    uv_timer_stop(&N.tick);
    uv_close((uv_handle_t *)&N.tick, NULL);
    while (oldest != NULL)
        pending_fail(oldest->reqid, CAIRN_ESTOPPED);
    lq_expire(1);
    struct read **lists[] = {&reads_next, &reads_remote, &reads_unsent,
                             &reads_applying};
    for (size_t i = 0; i < sizeof lists / sizeof *lists; i++) {
        struct read *r = *lists[i], *next;
        *lists[i] = NULL;
        for (; r != NULL; r = next) {
            next = r->next;
            if (r->origin == N.self)
                r->cb(r->ud, CAIRN_ESTOPPED);
            cairn_free(r);
        }
    }
    raft_close(&N.raft, on_raft_closed);
}

/* ---- state ---- */

int repl_is_leader(void)
{
    return N.started && N.raft.state == RAFT_LEADER;
}

uint64_t repl_leader(void)
{
    return N.leader;
}


/* Read from raft itself, not from what on_tick last noted (Status): right
 * after a MoveLeader answered (on localhost an election takes a few ms),
 * Status on the old leader must already name the new one, as etcd's does.
 * The metrics keep on_tick's view, so that etcd_server_has_leader and
 * etcd_server_leader_changes_seen_total agree. */
uint64_t repl_leader_now(void)
{
    if (!N.started || N.stopping)
        return N.leader;
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&N.raft, &lid, &addr);
    return lid;
}

uint64_t repl_term_now(void)
{
    return N.started && !N.stopping ? N.raft.current_term : N.term;
}

uint64_t repl_commit_index(void)
{
    return N.started ? N.raft.commit_index : 0;
}


uint64_t repl_leader_changes(void)
{
    return N.leader_changes;
}
