/* A zero-copy decoder for mvccpb.KeyValue: the hot read path decodes records
 * straight from LMDB's map without protobuf-c's allocations. */
#include <string.h>

#include "core/err.h"
#include "mvcc/mvcc_int.h"

static int varint(const uint8_t **p, const uint8_t *end, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end)
            return -1;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -1;
}

int mvcc__kv_decode(const uint8_t *p, size_t n, Mvccpb__KeyValue *kv)
{
    const uint8_t *end = p + n;
    mvccpb__key_value__init(kv);
    while (p < end) {
        uint64_t tag, v;
        if (varint(&p, end, &tag) != 0)
            return CAIRN_ESTORE;
        switch (tag & 7) {
        case 0:
            if (varint(&p, end, &v) != 0)
                return CAIRN_ESTORE;
            switch (tag >> 3) {
            case 2: kv->create_revision = (int64_t)v; break;
            case 3: kv->mod_revision = (int64_t)v; break;
            case 4: kv->version = (int64_t)v; break;
            case 6: kv->lease = (int64_t)v; break;
            }
            break;
        case 2:
            if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p))
                return CAIRN_ESTORE;
            if ((tag >> 3) == 1) {
                kv->key.data = (uint8_t *)p;
                kv->key.len = v;
            } else if ((tag >> 3) == 5) {
                kv->value.data = (uint8_t *)p;
                kv->value.len = v;
            }
            p += v;
            break;
        default:
            return CAIRN_ESTORE;
        }
    }
    return 0;
}
