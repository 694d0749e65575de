/* etcd's start-up lines and readiness (main.c calls these in order). */
#ifndef SERVER_STARTUP_H
#define SERVER_STARTUP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "server/server.h"

/* etcd's setupLogging: --logger, --log-level, --log-outputs. Returns 0, or
 * -1 with etcd's error text in @err (logged as "failed to verify flags"). */
int startup_logging(const struct config *c, char *err, size_t n);
/* "configuring client listeners", "starting an etcd server". */
void startup_log_starting(const struct server *s, int initialized);
/* "opened backend db" (@took_ns), "starting/restarting local member",
 * "starting etcd server". */
void startup_log_opened(const struct server *s, int initialized, int64_t took_ns);
/* "now serving peer/client/metrics": after the listeners are bound. */
void startup_log_serving(const struct server *s);
/* Records whether the member had data; the ready lines wait for the
 * publish (startup_published). */
void startup_ready_soon(uv_loop_t *loop, int initialized);
/* Once this member's attributes are published through raft: "published
 * local member ...", "ready to serve client requests", "enabled
 * capabilities for version", "serving client traffic insecurely ...",
 * then READY=1 to $NOTIFY_SOCKET. Once per run. */
void startup_published(void);
/* Monotonic nanoseconds (for "took"). */
int64_t startup_now_ns(void);

#endif
