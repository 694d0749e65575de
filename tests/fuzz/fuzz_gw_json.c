/* libFuzzer target: a gateway request body. The first byte picks a request
 * type; the rest is the JSON a client sends. pbjson_decode must never crash
 * or read out of bounds; what it accepts must encode back to JSON that
 * decodes to the same wire bytes; the body splitter fed one byte at a time
 * must agree with itself fed the whole body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gw/pbjson.h"
#include "rpc.pb-c.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

static const ProtobufCMessageDescriptor *const types[] = {
    &etcdserverpb__range_request__descriptor,
    &etcdserverpb__put_request__descriptor,
    &etcdserverpb__txn_request__descriptor,
    &etcdserverpb__watch_request__descriptor,
    &etcdserverpb__lease_grant_request__descriptor,
    &etcdserverpb__lease_keep_alive_request__descriptor,
    &etcdserverpb__member_add_request__descriptor,
    &etcdserverpb__alarm_request__descriptor,
    &etcdserverpb__auth_role_grant_permission_request__descriptor,
    &v3lockpb__lock_request__descriptor,
    &v3electionpb__proclaim_request__descriptor,
    &etcdserverpb__status_response__descriptor,
};

static void check_split(const uint8_t *p, size_t n)
{
    struct json_split whole, bytes;
    size_t end_w = 0, end_b = 0;
    int rw, rb = 0;

    json_split_init(&whole);
    rw = json_split_next(&whole, p, n, &end_w);
    json_split_init(&bytes);
    for (size_t i = 1; i <= n; i++) {
        rb = json_split_next(&bytes, p, i, &end_b);
        if (rb != 0)
            break;
    }
    if (rw != rb || (rw == 1 && end_w != end_b))
        abort();
    if (rw == 1 && end_w > n)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    struct buf wire, js, again;
    char err[256];

    if (n == 0)
        return 0;
    const ProtobufCMessageDescriptor *t =
        types[d[0] % (sizeof types / sizeof types[0])];
    d++, n--;
    check_split(d, n);
    buf_init(&wire);
    buf_init(&js);
    buf_init(&again);
    if (pbjson_decode(t, d, n, &wire, err, sizeof err) == 0) {
        if (pbjson_encode(t, wire.data, wire.len, &js) != 0)
            abort(); /* what we encoded must unpack */
        if (pbjson_decode(t, js.data, js.len, &again, err, sizeof err) != 0)
            abort(); /* our own JSON must be accepted */
        if (again.len != wire.len ||
            (wire.len > 0 && memcmp(again.data, wire.data, wire.len) != 0))
            abort();
    } else if (err[0] == 0) {
        abort(); /* every refusal names its reason */
    }
    buf_free(&wire);
    buf_free(&js);
    buf_free(&again);
    return 0;
}
