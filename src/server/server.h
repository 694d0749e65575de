/* The running member: configuration, identity and the subsystems the rpc
 * layer reaches. One per process. */
#ifndef SERVER_SERVER_H
#define SERVER_SERVER_H

#include <stdint.h>
#include <uv.h>

#include "apply/apply.h"
#include "mvcc/mvcc.h"
#include "server/config.h"

struct server {
    struct config cfg;
    uv_loop_t *loop;
    struct mvcc *mvcc;
    struct apply *apply;
    uint64_t cluster_id, member_id, raft_term;
    char *peer_urls[CONFIG_MAX_URLS];
    int n_peer_urls;
    char *client_urls[CONFIG_MAX_URLS];
    int n_client_urls;
    /* peer TLS: the configured files, or --peer-auto-tls's generated ones */
    const char *peer_cert_file, *peer_key_file;
    int stopping;
    int joining;   /* --initial-cluster-state existing, IDs not known yet */
};

extern struct server *srv;

/* Keeps the member's IDs in <data-dir>/member/identity (a member's
 * identity outlives --initial-cluster, as etcd's). 0 or -1. */
int server_identity_save(struct server *s, uint64_t member_id,
                         uint64_t cluster_id);

/* Shuts down as SIGTERM does (exit 0), logging @why. */
void server_stop(const char *why);

/* Shuts down as SIGTERM does, then starts again in place (execv, same
 * PID and arguments): a follower loads a store image this way. */
void server_restart(void);

/* etcd's member and cluster IDs: sha1 over the member's sorted peer URLs
 * and the cluster token; the cluster ID over the sorted member IDs. */
uint64_t server_member_id(char **peer_urls, int n, const char *token);
uint64_t server_cluster_id(const uint64_t *ids, int n);

#endif
