/* systemd's readiness protocol (sd_notify(3)) without libsystemd: one
 * datagram to the unix socket named by $NOTIFY_SOCKET. */
#ifndef SERVER_NOTIFY_H
#define SERVER_NOTIFY_H

/* Sends @state ("READY=1", "STOPPING=1") when $NOTIFY_SOCKET is set: a
 * path, or an abstract name written with a leading '@'. Returns 1 when
 * sent, 0 when $NOTIFY_SOCKET is unset (nothing to do), or -errno
 * (-EAFNOSUPPORT for addresses other than unix sockets, e.g. vsock:). */
int server_sd_notify(const char *state);

#endif
