/* Inside src/repl: the node (node.c) and the membership code (member.c)
 * share this state. Loop thread only. */
#ifndef REPL_REPL_INT_H
#define REPL_REPL_INT_H

#include <raft.h>
#include <stdint.h>
#include <uv.h>

#include "repl/fsm.h"
#include "repl/peer.h"
#include "repl/repl.h"

/* cairn's own member-to-member messages (repl_peer_send_app). */
enum repl_app {
    REPL_APP_FORWARD = 1,   /* follower -> leader: an encoded entry */
    REPL_APP_NACK,          /* leader -> origin: reqid, rc */
    REPL_APP_READ_INDEX,    /* follower -> leader: reqid */
    REPL_APP_READ_INDEX_RESP, /* leader -> follower: reqid, rc, index */
    REPL_APP_LEASE,         /* follower -> leader: reqid, lease id, renew */
    REPL_APP_LEASE_RESP,    /* reqid, rc, ttl, remaining ms */
    REPL_APP_REMOVED,       /* to a removed member that still talks */
};


struct repl_node {
    uv_loop_t *loop;
    struct server *s;
    struct raft raft;
    struct raft_io io;
    struct repl_fsm fsm;
    struct repl_peer *peer;
    uint64_t self;
    uint64_t next_req;      /* request ids: unique across restarts */
    uint64_t leader, term, leader_changes;
    int was_leader;
    uint64_t no_leader_since;  /* ms; 0 while a leader is known */
    uint64_t conf_index, conf_uncommitted; /* configuration seen */
    int started, stopping;
    int restoring;
    int force_pending;
    int adopted;            /* joining: our IDs came; restarting */      /* --force-new-cluster: remove the others */          /* a store image replaces the store at restart */
    uv_timer_t tick;
    /* membership (member.c) */
    struct repl_member *members;
    int n_members;
    int change_inflight;    /* a raft_add/assign/remove/transfer */
    uint64_t change_retry_at;
    int published;
    struct raft_change change;
    struct raft_transfer transfer;
    char raft_dir[4096];
};

extern struct repl_node repl__n;

/* Little-endian integers in entries and app messages. */
static inline void repl__put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static inline uint64_t repl__get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

uint64_t repl__now_ms(void);

/* member.c */
int repl__members_load(void);
void repl__members_reconcile(void);   /* leader, on the tick */
void repl__members_publish(void);     /* once a leader is known */
void repl__members_force_alone(void); /* --force-new-cluster, leading */
int repl__voters(void);               /* voters in raft's configuration */
int repl__member_removed(uint64_t id); /* a removed member's ID */
/* Leader, before proposing: checks only the leader can make (a learner
 * to promote must have caught up). 0 or an error. */
int repl__check_proposal(int op, const uint8_t *entry, size_t entry_len);

#endif
