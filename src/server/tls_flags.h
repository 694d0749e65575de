/* etcd's client TLS flags at start-up: --auto-tls, the checks etcd makes
 * before it listens, and the first TLS context (net/tls.h). */
#ifndef SERVER_TLS_FLAGS_H
#define SERVER_TLS_FLAGS_H

#include "server/server.h"

/* Call before the first net_listen. Logs etcd's lines on failure and
 * returns -1 (the process exits 1, as etcd's fatal does). */
int server_tls_start(struct server *s);

#endif
