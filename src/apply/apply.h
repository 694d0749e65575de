/* The write path: one ordered stream of commands applied by a deterministic
 * state machine on a dedicated thread, so that disk I/O and fsync never
 * block the event loop. Commands queued together share one LMDB commit and
 * so one fsync (group commit). A command's result is only reported after
 * its commit is durable.
 *
 * A command is the packed protobuf request, exactly as the replicated log
 * carries it; the result is the packed response. Committed raft entries
 * feed apply_submit() in log order (src/repl); each carries its raft index,
 * stored with the batch that applied it, so an entry the store already
 * holds (a replay after a restart, or one a store image covered) is
 * skipped. */
#ifndef APPLY_APPLY_H
#define APPLY_APPLY_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "mvcc/mvcc.h"

enum apply_op {
    APPLY_PUT = 1,
    APPLY_DELETE_RANGE,
    APPLY_TXN,
    APPLY_COMPACT,
    APPLY_LEASE_GRANT,  /* LeaseGrantRequest with its ID and TTL decided */
    APPLY_LEASE_REVOKE, /* a client's LeaseRevoke or an expiry */
    APPLY_ALARM,        /* AlarmRequest ACTIVATE or DEACTIVATE */
    /* Auth admin commands carry etcd's request; UserAdd and
     * UserChangePassword carry the bcrypt hash in hashedPassword (etcd 3.5)
     * and no password, so applying them is deterministic (src/auth). */
    APPLY_AUTH_ENABLE,
    APPLY_AUTH_DISABLE,
    APPLY_AUTH_USER_ADD,
    APPLY_AUTH_USER_DELETE,
    APPLY_AUTH_USER_CHANGE_PASSWORD,
    APPLY_AUTH_USER_GRANT_ROLE,
    APPLY_AUTH_USER_REVOKE_ROLE,
    APPLY_AUTH_ROLE_ADD,
    APPLY_AUTH_ROLE_DELETE,
    APPLY_AUTH_ROLE_GRANT_PERMISSION,
    APPLY_AUTH_ROLE_REVOKE_PERMISSION,
    /* Membership (etcdserverpb.Member records in the store; src/repl
     * changes raft's configuration to follow them). ADD carries the whole
     * record; REMOVE, PROMOTE the ID; UPDATE the ID and peerURLs; PUBLISH
     * (a member announcing itself, as etcd's publish) the ID, name and
     * clientURLs, and peerURLs for a record not yet there. No response. */
    APPLY_MEMBER_ADD = 50,
    APPLY_MEMBER_REMOVE,
    APPLY_MEMBER_UPDATE,
    APPLY_MEMBER_PROMOTE,
    APPLY_MEMBER_PUBLISH,
    /* No store effect: done() runs once every command submitted before it
     * is durable (linearizable reads wait on one). Never in the log. */
    APPLY_FENCE = 100,
};

struct apply_cmd {
    enum apply_op op;
    uint8_t *req;        /* packed request; owned by the command */
    size_t req_len;
    /* The auth revision the rpc layer checked the request's permissions
     * at, AUTH_REV_OFF (-1) when auth was off then, 0 for internal
     * commands (expiry, alarms): applying fails with etcd's "revision of
     * auth store is old" when the auth state changed in between. */
    int64_t auth_rev;
    uint64_t index;      /* raft log index; 0: not from the log */
    int proposed;        /* proposed on this member (etcd_server_proposals_*
                            count it from repl_submit to done()) */
    int no_resp;         /* nobody answers from it (another member proposed
                            it): the response is not packed */
    /* results, valid in done() */
    int rc;              /* 0 or a cairn error */
    uint8_t *resp;       /* packed response (malloc'd; owned by the command) */
    size_t resp_len;
    /* called on the loop thread once the result is durable */
    void (*done)(struct apply_cmd *cmd);
    void *ud;
    struct apply_cmd *next;
};

/* The constant part of every response header. */
struct apply_header {
    uint64_t cluster_id, member_id, raft_term;
};

struct apply;

int apply_start(uv_loop_t *loop, struct mvcc *m, const struct apply_header *h,
                struct apply **out);
/* @fn runs on the loop thread whenever commits have raised the store's
 * revision, with the new revision, before the commands' done() callbacks
 * (watchers hear of a write no later than its writer). */
void apply_on_commit(struct apply *a, void (*fn)(int64_t rev));
/* @fn runs on the loop thread for every applied command (whoever proposed
 * it), before its done(): the in-memory state other subsystems keep beside
 * the store (the lessor, the auth cache) follows the log this way on every
 * member. */
void apply_on_effects(struct apply *a, void (*fn)(struct apply_cmd *cmd));
/* Takes ownership of @cmd (and cmd->req). */
void apply_submit(struct apply *a, struct apply_cmd *cmd);
/* @done(@ud) once every command submitted before is durable. */
void apply_fence(struct apply *a, void (*done)(void *ud), void *ud);
/* The raft term response headers carry from now on. Any thread. */
void apply_set_term(struct apply *a, uint64_t term);
/* Finishes queued commands, stops the thread. Their done() still runs. */
void apply_stop(struct apply *a);
void apply_cmd_free(struct apply_cmd *cmd);
/* Active alarms as a bit mask: bit (1u << t) for each etcdserverpb
 * AlarmType t raised on any member (NOSPACE = 1, CORRUPT = 2). While
 * NOSPACE is raised, Put, Txn with a Put and LeaseGrant fail with
 * CAIRN_ENOSPACE; while CORRUPT is, every write fails with CAIRN_ECORRUPT
 * (etcd's capped and corrupt appliers). Any thread. */
unsigned apply_alarms(struct apply *a);
/* The raised alarms (member, type), at most @max; returns the count. */
typedef struct {
    uint64_t member;
    int type;
} apply_alarm_t;
int apply_alarm_list(struct apply *a, apply_alarm_t *out, int max);

/* Bytes of store pages in use, as of the last commit (the quota's
 * measure). Any thread. */
int64_t apply_in_use(struct apply *a);

/* Online defragment: runs in bounded steps between group commits (writes
 * wait at most one step), then calls @done on the loop with 0 or an error
 * and the bytes returned to the OS. */
void apply_defrag(struct apply *a, void (*done)(void *ud, int rc, int64_t freed),
                  void *ud);
/* Encryption at rest: a reread key file. The apply thread checks it
 * against the store between batches (mvcc_seal_install) and makes it
 * current, starting a re-encryption pass when its first key is new; a
 * rejected file is logged and freed, the keys in use stay. Takes @ring.
 * Loop thread. */
struct crypt_ring;
void apply_seal_reload(struct apply *a, struct crypt_ring *ring);

/* The store's revision after the last commit. Any thread. */
int64_t apply_rev(struct apply *a);
/* The raft index of the last entry the store holds (committed; readers
 * see it). Any thread. */
uint64_t apply_index(struct apply *a);
/* ... and holds durably: a machine crash keeps it. The raft log must keep
 * every entry above it. Any thread. */
uint64_t apply_durable_index(struct apply *a);
/* Blocks until the store durably holds @index (asking the apply thread
 * for a sync when it holds it but not durably); at most ~30 s. 0,
 * CAIRN_ETIMEOUT or CAIRN_ESTOPPED. Not on the loop thread. */
int apply_sync_to(struct apply *a, uint64_t index);

#endif
