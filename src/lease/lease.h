/* The lessor: which leases exist and when each expires, on the loop thread.
 * The store holds the leases and their keys (mvcc/lease.c); this keeps
 * their deadlines on a monotonic clock in a heap. Expired leases are revoked
 * through the write path like a client's LeaseRevoke, at most
 * LEASE_MAX_REVOKING at a time, so a mass expiry never floods it.
 *
 * After a restart every lease gets its full TTL again (as etcd renews
 * leases when a new leader takes over): nothing expires early because the
 * server was down. */
#ifndef LEASE_LEASE_H
#define LEASE_LEASE_H

#include <stdint.h>
#include <uv.h>

#include "apply/apply.h"
#include "mvcc/mvcc.h"

/* etcd's lease.MaxLeaseTTL (seconds). */
#define LEASE_MAX_TTL 9000000000LL

struct lease_opts {
    int64_t min_ttl;        /* seconds: ceil(1.5 election timeouts) */
    uint64_t member_id;     /* for server-chosen IDs */
};

/* Loads the leases in the store. Returns 0 or an error. */
int lease_init(uv_loop_t *loop, struct mvcc *m, struct apply *a,
               const struct lease_opts *o);
void lease_shutdown(void);

/* A new server-chosen lease ID (etcd's idutil generator: member prefix,
 * time, counter), positive. */
int64_t lease_next_id(void);
int64_t lease_min_ttl(void);

/* The write path granted or revoked a lease. */
void lease_granted(int64_t id, int64_t ttl);
void lease_revoked(int64_t id);

/* Leadership: only the leader expires leases. On becoming leader every
 * lease gets its full TTL plus @extend_ms (etcd's lessor.Promote), so none
 * expires early because leadership moved. */
void lease_promote(int64_t extend_ms);
void lease_demote(void);

/* Renews @id for its TTL. Returns 0 and its TTL, or CAIRN_ELEASENOTFOUND
 * (also for a lease that has expired and is being revoked). */
int lease_renew(int64_t id, int64_t *ttl);
/* Granted TTL and milliseconds left; CAIRN_ELEASENOTFOUND. */
int lease_lookup(int64_t id, int64_t *ttl, int64_t *remaining_ms);
/* All lease IDs, soonest expiry first; caller frees *ids. */
size_t lease_list(int64_t **ids);

#endif
