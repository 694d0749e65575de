/* Internal to repl/: the peer wire format (peer_codec.c), shared by the
 * transport (peer.c) and its tests.
 *
 * Everything is little-endian. A connection starts with a hello from the
 * dialing member and the same hello back from the accepting one (so the
 * dialer knows it was accepted, and by whom):
 *
 *   hello  = magic "CRNP" | u16 version (1) | u16 addr_len
 *            | u64 cluster_id | u64 sender_id | u64 receiver_id
 *            | addr_len bytes: the sender's peer URLs (no NUL)
 *
 * then frames, dialer -> acceptor only:
 *
 *   frame  = u32 body_len | u8 kind | u8 flags | u16 zero | body
 *
 *   kind 1..6 (RAFT_IO_*), bodies:
 *     REQUEST_VOTE         term, candidate_id, last_log_index, last_log_term
 *                          (u64 each) | u8 bits (1 disrupt_leader, 2 pre_vote)
 *     REQUEST_VOTE_RESULT  u64 term | u8 vote_granted | u8 pre_vote (tribool)
 *     APPEND_ENTRIES       term, prev_log_index, prev_log_term, leader_commit
 *                          | u32 n | n x (u64 term, u8 type, u32 len) | data
 *     APPEND_ENTRIES_RESULT term, rejected, last_log_index
 *     INSTALL_SNAPSHOT     term, last_index, last_term, conf_index | u32 n
 *                          | n x (u64 id, u8 role, u16 addr_len, addr)
 *                          | u64 data_len | data
 *                          flag PEER_F_IMAGE: an image stream follows
 *     TIMEOUT_NOW          term, last_log_index, last_log_term
 *   PEER_K_APP          i32 type | bytes
 *   PEER_K_IMAGE_CHUNK  bytes of the image (after an INSTALL_SNAPSHOT with
 *                       PEER_F_IMAGE; other frames may come in between)
 *   PEER_K_IMAGE_END    u64 total image bytes
 *
 * Fixed-size bodies must have exactly their size; every length inside a
 * body is checked against what is left of it. */
#ifndef REPL_PEER_INT_H
#define REPL_PEER_INT_H

#include <raft.h>
#include <stddef.h>
#include <stdint.h>

#define PEER_MAGIC "CRNP"
#define PEER_VERSION 1
#define PEER_HELLO_LEN 32
#define PEER_ADDR_MAX 1024
#define PEER_FRAME_HDR 8
/* Entries up to 64 MiB plus room for the headers of many of them. */
#define PEER_DATA_MAX (64u << 20)
#define PEER_FRAME_MAX (PEER_DATA_MAX + (1u << 20))
#define PEER_CHUNK (256u << 10)

enum {
    PEER_K_APP = 16,
    PEER_K_IMAGE_CHUNK = 17,
    PEER_K_IMAGE_END = 18,
};
#define PEER_F_IMAGE 1

struct peer_hello {
    uint64_t cluster_id, from, to;
    const char *addr; /* points into the decoded bytes, not terminated */
    size_t addr_len;
};

/* Writes the fixed PEER_HELLO_LEN bytes of a hello; @addr_len bytes of
 * address follow them on the wire. */
void peer__hello_encode(uint8_t *out, uint64_t cluster_id, uint64_t from,
                        uint64_t to, size_t addr_len);
/* Decodes a hello from the @n bytes at @p. Returns its total length when
 * complete, 0 when more bytes are needed, -EPROTO for a bad magic,
 * version or address length. */
long peer__hello_decode(const uint8_t *p, size_t n, struct peer_hello *h);

void peer__frame_header(uint8_t *out, size_t body_len, unsigned kind,
                        unsigned flags);

/* The encoding of @m: *@hdr (cairn_malloc'd, owned by the caller) holds
 * the frame header and every fixed field; the entries' data (append
 * entries) or the snapshot data (install snapshot) follow it on the wire
 * and are not copied: peer__raft_bufs lists them. Errors: -EINVAL
 * (unknown type, entry type, role or over-long address), -EMSGSIZE (more
 * than PEER_DATA_MAX bytes of data or PEER_FRAME_MAX in all). */
int peer__encode_raft(const struct raft_message *m, unsigned flags,
                      uint8_t **hdr, size_t *hdr_len, size_t *frame_len);
/* The number of data pieces following the header of @m (the entries with
 * data, or the snapshot data when not empty); fills @base/@len when not
 * NULL (arrays of that many). */
unsigned peer__raft_bufs(const struct raft_message *m, const void **base,
                         size_t *len);

/* Decodes a frame body of kind 1..6 into @m (type set, server_id and
 * server_address not). On success @m owns raft_malloc'd memory as libraft
 * expects of received messages: entries array + one batch for all entry
 * data (every entry.batch points at it), conf through
 * raft_configuration_add, snapshot data. Errors: -EPROTO (malformed; @m
 * then owns nothing), -ENOMEM. */
int peer__decode_raft(unsigned kind, const uint8_t *body, size_t len,
                      struct raft_message *m);
/* Frees what peer__decode_raft allocated (when the message is never
 * delivered). */
void peer__raft_free(struct raft_message *m);

#endif
