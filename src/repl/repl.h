/* Replication: the members of a cluster agree on one ordered log of write
 * commands with Raft (Debian's libraft decides; cairn gives it its own
 * raft_io: repl/io.c for the disk, repl/peer.c for the network), and every
 * member applies that log with the state machine in src/apply.
 *
 * A write is proposed on any member. On the leader it is appended with
 * raft_apply; a follower forwards it to the leader. The entry names the
 * member and request it came from, so that member answers its client once
 * its own state machine has applied the entry: the reply says what this
 * member's store holds, and a read on the same member after it sees the
 * write (as etcd). A proposal that is lost with a leader answers
 * "etcdserver: request timed out" (it may or may not have applied).
 *
 * Linearizable reads wait for a read index: the leader confirms it still
 * leads (one raft barrier serves every read that arrived while the previous
 * one was in flight), and the member waits until it has applied that far.
 * Serializable reads never wait.
 *
 * Membership is etcd's: member IDs from the peer URLs and cluster token,
 * learners as raft standbys, MemberAdd/Remove/Update/Promote and leader
 * transfer. Everything here runs on the loop thread. */
#ifndef REPL_REPL_H
#define REPL_REPL_H

#include <stdint.h>
#include <uv.h>

#include "apply/apply.h"

struct server;

/* Starts raft for this member: loads or bootstraps the log in
 * <data-dir>/member/raft, listens on the peer URLs. Errors are logged. */
int repl_start(uv_loop_t *loop, struct server *s);
/* Leaves raft (closes the log and the peer connections); @cb runs once
 * done. Proposals still waiting answer "etcdserver: server stopped". */
void repl_stop(void (*cb)(void));

/* Proposes @cmd (takes it): cmd->done() runs once this member applied it,
 * or with an error (CAIRN_ENOLEADER, CAIRN_ETIMEDOUT, CAIRN_ESTOPPED). */
void repl_submit(struct apply_cmd *cmd);
/* Packs @m into a new command @op and proposes it; @done must free it. */
void repl_submit_msg(enum apply_op op, const ProtobufCMessage *m,
                     void (*done)(struct apply_cmd *cmd), void *ud);

/* Linearizable-read barrier: @cb(ud, 0) once this member's store holds
 * every write committed before the call; or an error (no leader, timed
 * out). A single-voter cluster answers at once. */
void repl_read_index(void (*cb)(void *ud, int rc), void *ud);

/* The leader's lessor renews a lease (@renew) or tells its TTL: answered
 * here on the leader, asked of it elsewhere. @cb(ud, rc, ttl, remaining
 * ms); rc CAIRN_ELEASENOTFOUND for an unknown lease. */
typedef void (*repl_lease_cb)(void *ud, int rc, int64_t ttl, int64_t remaining_ms);
void repl_lease(int renew, int64_t id, repl_lease_cb cb, void *ud);

/* Where a store image received from the leader waits for the next start
 * to replace the store (main.c puts it in place before opening it). */
void repl_image_path(const char *data_dir, char *out, size_t n);

int repl_is_leader(void);
uint64_t repl_leader(void);           /* 0 when none is known */
uint64_t repl_leader_now(void);       /* raft's view now (Status) */
uint64_t repl_term_now(void);
uint64_t repl_commit_index(void);
int repl_is_learner(void);
/* Leader changes seen by this member (etcd_server_leader_changes_seen). */
uint64_t repl_leader_changes(void);

/* ---- membership (repl/member.c) ---- */

struct repl_member {
    uint64_t id;
    char name[128];
    char peer_urls[1024];   /* comma-separated */
    char client_urls[1024]; /* comma-separated; empty until it published */
    int is_learner;
};

/* The members, at most @max; returns the count. */
int repl_members(struct repl_member *out, int max);

/* The member records changed (an applied APPLY_MEMBER_*): reread them. */
void repl_members_changed(void);

/* Cluster RPCs; @done(ud, rc, id) on the loop thread. */
typedef void (*repl_member_cb)(void *ud, int rc, uint64_t id);
void repl_member_add(const char *peer_urls, int is_learner, repl_member_cb done,
                     void *ud);
void repl_member_remove(uint64_t id, repl_member_cb done, void *ud);
void repl_member_update(uint64_t id, const char *peer_urls,
                        repl_member_cb done, void *ud);
void repl_member_promote(uint64_t id, repl_member_cb done, void *ud);
/* Leader transfer (MoveLeader): only the leader; @target a voter. */
void repl_transfer(uint64_t target, repl_member_cb done, void *ud);

#endif
