/* gRPC message framing (gRPC over HTTP/2 spec, "Length-Prefixed-Message"):
 * 1 byte compressed flag, 4 bytes big-endian length, the message. Pure
 * functions, so they can be tested without a connection. */
#ifndef NET_FRAME_H
#define NET_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define GRPC_PREFIX_LEN 5

enum grpc_frame_result {
    GRPC_FRAME_NEED_MORE = 0, /* not a whole message yet */
    GRPC_FRAME_OK = 1,        /* a whole message */
    GRPC_FRAME_TOO_LARGE = -1,
    GRPC_FRAME_COMPRESSED = -2,
};

/* Looks at the @n bytes at @p. On GRPC_FRAME_OK, *msg_len is the message's
 * length (it starts at p + GRPC_PREFIX_LEN). On TOO_LARGE, *msg_len is the
 * announced length, so the error can name it. */
enum grpc_frame_result grpc_frame_next(const uint8_t *p, size_t n,
                                       size_t max_len, uint32_t *msg_len);

/* Writes the 5-byte prefix for a message of @len bytes. */
void grpc_frame_prefix(uint8_t out[GRPC_PREFIX_LEN], size_t len);

#endif
