/* The state machine libraft drives: committed entries become apply_cmds for
 * src/apply, in log order, each with its raft index. The store is the
 * snapshot (raft's record only says which store index it needs: that of the
 * last command entry at or below the snapshot's), so snapshots
 * are cheap, and they are stored only once the store durably holds their
 * index. Loop thread, except snapshot_async (thread pool). */
#ifndef REPL_FSM_H
#define REPL_FSM_H

#include <raft.h>
#include <stdint.h>

#include "apply/apply.h"

/* A raft entry: version, op, origin member, request id, auth revision,
 * then the packed request; version 2 when the request is sealed (with
 * --experimental-encryption-key-file the log holds no plaintext either:
 * AES-256-GCM under the key ring's first key, the header as AAD). */
#define REPL_ENTRY_HDR 26
#define REPL_ENTRY_VERSION 1
#define REPL_ENTRY_SEALED 2

struct repl_fsm {
    struct raft_fsm fsm;  /* handed to raft_init; first */
    struct raft *raft;    /* whose entries these are */
    struct apply *apply;
    struct mvcc *mvcc;    /* its key ring opens sealed entries */
    uint64_t self;        /* this member */
    void *ud;
    /* The local proposal waiting for its entry (origin self, @reqid), taken
     * out of the waiting set; NULL when there is none. */
    struct apply_cmd *(*take)(void *ud, uint64_t reqid);
    /* The snapshot to restore is ahead of the store (held < index): 0 when
     * a store image will replace the store (then nothing more is applied
     * here), or a raft error. */
    int (*behind)(void *ud, uint64_t held, uint64_t index);
    /* An entry another member proposed was applied here (@index). */
    void (*remote_applied)(void *ud, uint64_t index);
    int restoring;        /* set once behind() returned 0 */
    /* The store index a snapshot taken now requires: the last command
     * entry handed to the store (or held by it), at most last_applied. */
    uint64_t need;
};

void repl_fsm_init(struct repl_fsm *f);

struct crypt_ring;
/* Encodes an entry into a raft_malloc'd buffer, sealed under @ring's first
 * key unless @ring is NULL. 0, -ENOMEM or -EIO. */
int repl_entry_encode(struct raft_buffer *out, const struct crypt_ring *ring,
                      int op, uint64_t origin, uint64_t reqid, int64_t auth_rev,
                      const uint8_t *req, size_t len);
/* Decodes an entry's header: 0, or -EINVAL for another format. */
int repl_entry_decode(const uint8_t *b, size_t len, int *op, uint64_t *origin,
                      uint64_t *reqid, int64_t *auth_rev);
/* The packed request of entry @b (a cairn_malloc'd copy, opened with
 * @ring when sealed). 0, -ENOKEY/-EBADMSG (sealed: no such key, or
 * tampered), -EINVAL. */
int repl_entry_request(const uint8_t *b, size_t len, const struct crypt_ring *ring,
                       uint8_t **req, size_t *req_len);

#endif
