/* Auto-compaction as etcd's v3compactor: --auto-compaction-mode periodic
 * (keep a time window of history) or revision (keep a number of
 * revisions), --auto-compaction-retention. Compactions go through the
 * write path like a client's. */
#ifndef SERVER_COMPACTOR_H
#define SERVER_COMPACTOR_H

#include <uv.h>

#include "apply/apply.h"

/* Parses @mode and @retention as etcd does and starts the compactor when
 * the retention is not 0. Returns 0, or -1 after printing etcd's error. */
int server_compactor_start(uv_loop_t *loop, struct apply *a, const char *mode,
                           const char *retention);
void server_compactor_stop(void);

#endif
