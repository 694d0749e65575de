/* The state machine glue: entries to apply_cmds, snapshots, restore. */
#include <errno.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypt/crypt.h"
#include "mvcc/mvcc.h"
#include "repl/fsm.h"
#include "repl/repl_int.h"

#define SNAP_MAGIC "cairnsnp"


int repl_entry_encode(struct raft_buffer *out, const struct crypt_ring *ring,
                      int op, uint64_t origin, uint64_t reqid, int64_t auth_rev,
                      const uint8_t *req, size_t len)
{
    const struct crypt_key *k = ring != NULL ? &ring->keys[0] : NULL;
    size_t body = k != NULL ? crypt_sealed_size(k, len) : len;
    uint8_t *b = raft_malloc(REPL_ENTRY_HDR + body + 1);
    if (b == NULL)
        return -ENOMEM;
    b[0] = k != NULL ? REPL_ENTRY_SEALED : REPL_ENTRY_VERSION;
    b[1] = (uint8_t)op;
    repl__put64(b + 2, origin);
    repl__put64(b + 10, reqid);
    repl__put64(b + 18, (uint64_t)auth_rev);
    if (k != NULL) {
        if (crypt_seal(k, b, REPL_ENTRY_HDR, req, len, b + REPL_ENTRY_HDR) != 0) {
            raft_free(b);
            return -EIO;
        }
    } else if (len) {
        memcpy(b + REPL_ENTRY_HDR, req, len);
    }
    out->base = b;
    out->len = REPL_ENTRY_HDR + body;
    return 0;
}

int repl_entry_decode(const uint8_t *b, size_t len, int *op, uint64_t *origin,
                      uint64_t *reqid, int64_t *auth_rev)
{
    if (len < REPL_ENTRY_HDR ||
        (b[0] != REPL_ENTRY_VERSION && b[0] != REPL_ENTRY_SEALED))
        return -EINVAL;
    *op = b[1];
    *origin = repl__get64(b + 2);
    *reqid = repl__get64(b + 10);
    *auth_rev = (int64_t)repl__get64(b + 18);
    return 0;
}

int repl_entry_request(const uint8_t *b, size_t len, const struct crypt_ring *ring,
                       uint8_t **req, size_t *req_len)
{
    if (len < REPL_ENTRY_HDR)
        return -EINVAL;
    const uint8_t *p = b + REPL_ENTRY_HDR;
    size_t n = len - REPL_ENTRY_HDR;
    if (b[0] == REPL_ENTRY_VERSION) {
        *req = cairn_malloc(n + 1);
        memcpy(*req, p, n);
        *req_len = n;
        return 0;
    }
    if (ring == NULL)
        return -ENOKEY;
    if (!crypt_is_sealed(p, n))
        return -EBADMSG;
    *req = cairn_malloc(crypt_plain_size(p, n) + 1);
    int rc = crypt_open(ring, b, REPL_ENTRY_HDR, p, n, *req, req_len);
    if (rc != 0) {
        cairn_free(*req);
        *req = NULL;
    }
    return rc;
}

static void remote_done(struct apply_cmd *cmd)
{
    apply_cmd_free(cmd);
}

static int fsm_apply(struct raft_fsm *fsm, const struct raft_buffer *buf,
                     void **result)
{
    struct repl_fsm *f = (struct repl_fsm *)fsm;
    /* libraft applies in log order and counts barrier and configuration
     * entries too: this entry is the one after the last applied. */
    uint64_t index = f->raft->last_applied + 1, origin, reqid;
    int64_t auth_rev;
    int op;
    *result = NULL;
    if (f->restoring) /* the store is about to be replaced */
        return 0;
    if (repl_entry_decode(buf->base, buf->len, &op, &origin, &reqid,
                          &auth_rev) != 0) {
        /* a newer format from a newer member: it must not stop raft */
        log_errorw("raft: an entry of unknown format is skipped",
                   LOG_UINT("index", index), LOG_UINT("size", buf->len));
        return 0;
    }
    struct apply_cmd *cmd = NULL;
    if (origin == f->self && f->take != NULL)
        cmd = f->take(f->ud, reqid);
    if (cmd == NULL && index <= apply_index(f->apply)) {
        f->need = index;
        return 0; /* replayed at start: the store holds it (it may be sealed
                     with a key the key file no longer has) */
    }
    if (cmd == NULL) {
        uint8_t *req;
        size_t len;
        int rc = repl_entry_request(buf->base, buf->len,
                                    f->mvcc ? mvcc_ring(f->mvcc) : NULL, &req,
                                    &len);
        if (rc != 0) {
            /* the state machine cannot go on without this entry: raft
             * stops here, as etcd stops on an entry it cannot apply */
            log_errorw("raft: cannot open a sealed entry (is the key that "
                       "sealed it in the key file?)",
                       LOG_UINT("index", index), LOG_STR("error", cairn_err_msg(rc)));
            return RAFT_CORRUPT;
        }
        cmd = cairn_calloc(1, sizeof *cmd);
        cmd->op = op;
        cmd->auth_rev = auth_rev;
        cmd->req = req;
        cmd->req_len = len;
        cmd->done = remote_done;
        cmd->no_resp = 1;
    }
    cmd->index = index;
    apply_submit(f->apply, cmd);
    f->need = index;
    if (origin != f->self && f->remote_applied != NULL)
        f->remote_applied(f->ud, index);
    return 0;
}

static int fsm_snapshot(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                        unsigned *n_bufs)
{
    struct repl_fsm *f = (struct repl_fsm *)fsm;
    /* the store is about to be replaced and applies nothing until then:
     * a snapshot now would wait for an index it never reaches */
    if (f->restoring)
        return RAFT_BUSY;
    struct raft_buffer *b = raft_malloc(sizeof *b);
    if (b == NULL)
        return RAFT_NOMEM;
    b->base = raft_malloc(16);
    if (b->base == NULL) {
        raft_free(b);
        return RAFT_NOMEM;
    }
    /* Not last_applied: barriers and configuration changes never reach
     * the store, which would then never hold a snapshot taken at one. */
    memcpy(b->base, SNAP_MAGIC, 8);
    repl__put64((uint8_t *)b->base + 8, f->need);
    b->len = 16;
    *bufs = b;
    *n_bufs = 1;
    return 0;
}

static uint64_t snap_index(const struct raft_buffer *b)
{
    if (b->len < 16 || memcmp(b->base, SNAP_MAGIC, 8) != 0)
        return UINT64_MAX; /* not ours: never "held" */
    return repl__get64((const uint8_t *)b->base + 8);
}

/* Thread pool (libraft's async snapshot): stored only once the store
 * durably holds the index, so a restart never finds a snapshot the store
 * is behind (the log keeps what the store may still lose). */
static int fsm_snapshot_async(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                              unsigned *n_bufs)
{
    struct repl_fsm *f = (struct repl_fsm *)fsm;
    if (*n_bufs < 1)
        return RAFT_INVALID;
    uint64_t idx = snap_index(&(*bufs)[0]);
    if (idx == UINT64_MAX)
        return RAFT_INVALID;
    return apply_sync_to(f->apply, idx) == 0 ? 0 : RAFT_IOERR;
}

static int fsm_snapshot_finalize(struct raft_fsm *fsm, struct raft_buffer *bufs[],
                                 unsigned *n_bufs)
{
    (void)fsm;
    for (unsigned i = 0; i < *n_bufs; i++)
        raft_free((*bufs)[i].base);
    raft_free(*bufs);
    *bufs = NULL;
    *n_bufs = 0;
    return 0;
}

static int fsm_restore(struct raft_fsm *fsm, struct raft_buffer *buf)
{
    struct repl_fsm *f = (struct repl_fsm *)fsm;
    /* At start the store holds at least the snapshot's index. From a
     * leader's InstallSnapshot a store image came with it (repl_peer). */
    uint64_t idx = snap_index(buf);
    uint64_t held = apply_index(f->apply);
    if (held < idx) {
        int rv = f->behind ? f->behind(f->ud, held, idx) : RAFT_CORRUPT;
        if (rv != 0)
            return rv; /* the buffer stays libraft's: it frees it */
        f->restoring = 1;
    }
    if (idx > f->need)
        f->need = idx;
    raft_free(buf->base); /* ours once restored */
    return 0;
}

void repl_fsm_init(struct repl_fsm *f)
{
    f->need = 0;
    f->restoring = 0;
    f->fsm.version = 3;
    f->fsm.data = f;
    f->fsm.apply = fsm_apply;
    f->fsm.snapshot = fsm_snapshot;
    f->fsm.snapshot_async = fsm_snapshot_async;
    f->fsm.snapshot_finalize = fsm_snapshot_finalize;
    f->fsm.restore = fsm_restore;
}
