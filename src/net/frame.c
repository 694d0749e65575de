#include "net/frame.h"

enum grpc_frame_result grpc_frame_next(const uint8_t *p, size_t n,
                                       size_t max_len, uint32_t *msg_len)
{
    if (n < GRPC_PREFIX_LEN)
        return GRPC_FRAME_NEED_MORE;
    uint32_t len = (uint32_t)p[1] << 24 | (uint32_t)p[2] << 16 |
                   (uint32_t)p[3] << 8 | p[4];
    *msg_len = len;
    /* The size is checked first: grpc-go refuses an oversized message
     * before it looks at compression. */
    if (len > max_len)
        return GRPC_FRAME_TOO_LARGE;
    if (p[0] != 0)
        return GRPC_FRAME_COMPRESSED;
    if (n - GRPC_PREFIX_LEN < len)
        return GRPC_FRAME_NEED_MORE;
    return GRPC_FRAME_OK;
}

void grpc_frame_prefix(uint8_t out[GRPC_PREFIX_LEN], size_t len)
{
    out[0] = 0;
    out[1] = (uint8_t)(len >> 24);
    out[2] = (uint8_t)(len >> 16);
    out[3] = (uint8_t)(len >> 8);
    out[4] = (uint8_t)len;
}
