/* The peer transport: raft messages and cairn's own member-to-member
 * messages between the members of one cluster, over TCP on
 * --listen-peer-urls, with TLS (--peer-cert-file, --peer-key-file,
 * --peer-trusted-ca-file, --peer-client-cert-auth, --peer-cert-allowed-cn)
 * when the peer URLs are https.
 *
 * Every member keeps one outbound connection to each peer it sends to and
 * accepts inbound connections from all; a connection opens with a hello
 * that names the cluster and both member IDs, so a member of another
 * cluster (or a stray client) is refused before any message is read.
 * Messages are best effort: raft resends what is lost, and a send to a peer
 * that is down fails fast (its callback gets RAFT_NOCONNECTION) instead of
 * queueing without bound.
 *
 * An InstallSnapshot carries only raft's small snapshot record; the store
 * image behind it is streamed after it in bounded chunks from a file the
 * owner opens (image_open), and the receiver writes it to a file in
 * @image_dir before it delivers the message, so a multi-GiB store is never
 * held in memory or sent as one message.
 *
 * Everything runs on the loop thread, except image_open, which runs on the
 * thread pool. */
#ifndef REPL_PEER_H
#define REPL_PEER_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

struct repl_peer;

struct repl_peer_tls {
    const char *cert_file, *key_file, *trusted_ca_file;
    int client_cert_auth;       /* --peer-client-cert-auth */
    int self_cert;              /* --peer-auto-tls generated the certificate:
                                   dialers do not verify the server (etcd's
                                   selfCert: InsecureSkipVerify) */
    const char *allowed_cn;     /* --peer-cert-allowed-cn, NULL = any:
                                   the CN of members that dial us (their
                                   certificate is then required) */
    /* cert_file/key_file NULL: dial https peers presenting no certificate,
     * no https listener. Dialers verify the server against the trusted CA
     * (system CAs when NULL) and the dialed host (IP SAN or DNS name). */
};

struct repl_peer_opts {
    uint64_t cluster_id;
    uint64_t self_id;
    const char *listen_urls;    /* --listen-peer-urls, comma-separated;
                                   hosts: IP literals or localhost */
    const struct repl_peer_tls *tls; /* NULL: plain TCP (http:// URLs) */
    const char *image_dir;      /* where received store images are written,
                                   as .peer-image-* files (a crash can
                                   leave partial ones: the owner may
                                   delete them at start) */
    void *ud;
    /* A raft message for this member. Ownership as libraft expects for
     * received messages: entries array and their data come from
     * raft_malloc (one batch, entry.batch set), install_snapshot data from
     * raft_malloc, conf filled with raft_configuration_add. */
    void (*recv_raft)(void *ud, struct raft_message *msg);
    /* One of cairn's own messages (REPL_APP_*); @data is valid for the
     * call only. */
    void (*recv_app)(void *ud, uint64_t from, int type, const uint8_t *data,
                     size_t len);
    /* Thread pool: opens the store image to stream behind an
     * InstallSnapshot for snapshot @index. Returns an fd to read from
     * offset 0 to EOF (the transport closes it) or a negative errno. */
    int (*image_open)(void *ud, uint64_t index);
    /* The received image for @index is complete (and fsynced) at @path, a
     * file in @image_dir that now belongs to the owner (rename or delete
     * it); called just before the InstallSnapshot message is delivered.
     * A stream cut short is deleted and its message never delivered. */
    void (*image_received)(void *ud, uint64_t index, const char *path);
    /* Sent in the hello as this member's address: receivers give it to
     * libraft as server_address. NULL = listen_urls. (Added after the
     * first contract; zero-initialised callers get listen_urls.) */
    const char *advertise_urls;
    /* Joining an existing cluster (--initial-cluster-state existing, no
     * member yet in the data dir): an inbound hello for another cluster or
     * member ID is not refused but handed here (the IDs the cluster gave
     * this member), and the connection closed. NULL: refused. */
    void (*adopt)(void *ud, uint64_t cluster_id, uint64_t member_id);
};

/* Listens on the peer URLs. Errors: negative errno (e.g. -EADDRINUSE),
 * -EPROTONOSUPPORT for a scheme other than http/https, -EPROTO for TLS
 * files that do not load, -EINVAL for a malformed URL, a host name other
 * than localhost, or https without @tls; @err says why. On error the
 * handles already made are closing: run the loop to release them. */
int repl_peer_start(uv_loop_t *loop, const struct repl_peer_opts *o,
                    struct repl_peer **out, char *err, size_t errlen);

/* Where member @id listens (its peer URLs, comma-separated); replaces what
 * was known. Members without URLs cannot be sent to. */
void repl_peer_set_urls(struct repl_peer *p, uint64_t id, const char *urls);
void repl_peer_forget(struct repl_peer *p, uint64_t id);

/* Sends @m to m->server_id. The message and its buffers are only borrowed
 * until @cb runs (status 0, or RAFT_NOCONNECTION / RAFT_CANCELED, or
 * RAFT_IOERR when image_open failed). @cb never runs inside this call.
 * RAFT_NOCONNECTION also means "not now": the member is unknown, its
 * connect failed (sends fail fast during the reconnect backoff), more than
 * 4 MiB / 1024 messages wait for a pending connect, the socket has more
 * than ~80 MiB unwritten, or an image is already streaming to it.
 * Errors (and @cb is not called): -EMSGSIZE (more than 64 MiB of data),
 * -EINVAL (unknown message or entry type), -ESHUTDOWN (closing). */
int repl_peer_send_raft(struct repl_peer *p, const struct raft_message *m,
                        void (*cb)(void *ud, int status), void *ud);

/* Sends one of cairn's own messages (@data copied). Best effort: 0 means
 * sent or queued, not delivered. Errors: -ENOTCONN (no URLs, or the last
 * connect failed), -EMSGSIZE, -ESHUTDOWN. */
int repl_peer_send_app(struct repl_peer *p, uint64_t to, int type,
                       const uint8_t *data, size_t len);

/* 1 when a message from @id arrived within the last @ms milliseconds (the
 * loop's clock, uv_now). */
int repl_peer_active(struct repl_peer *p, uint64_t id, uint64_t ms);

/* The port the @i-th listen URL is bound to (tests listen on port 0), or
 * -EINVAL. */
int repl_peer_port(struct repl_peer *p, int i);

/* Closes listeners and connections; pending sends get RAFT_CANCELED
 * (sends that had already failed keep RAFT_NOCONNECTION), each callback
 * exactly once and before @cb. @cb runs once every handle is closed and
 * every thread-pool or file request has returned; then @p is freed. */
void repl_peer_close(struct repl_peer *p, void (*cb)(void *ud), void *ud);

#endif
