/* etcd's JSON gateway mapping (grpc-gateway 1.6.4 with golang/protobuf
 * jsonpb 1.3.5, OrigName=true), generic over protobuf-c descriptors: no
 * code per message. See docs/plan-issue9.md sec. 2.3 and 2.4. */
#ifndef GW_PBJSON_H
#define GW_PBJSON_H
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "core/buf.h"

/* JSON nesting limit (objects and arrays) for decoding and splitting. */
#define JSON_MAX_DEPTH 64

/* One JSON value (jsonpb Unmarshaler with AllowUnknownFields) -> protobuf wire
 * bytes of message type @d appended to @wire. An empty/whitespace-only input is
 * an empty message. Returns 0, or -1 with @err (NUL-terminated, at most errlen)
 * set to the Go error text the gateway reports as InvalidArgument. Bytes after
 * the first value are ignored (Go's json.Decoder.Decode). On error @wire may
 * hold a partial encoding: the caller drops it. */
int pbjson_decode(const ProtobufCMessageDescriptor *d, const uint8_t *json,
                  size_t len, struct buf *wire, char *err, size_t errlen);

/* Protobuf wire bytes of type @d -> jsonpb JSON (OrigName, zero values
 * omitted, int64/uint64 quoted, enums by name, bytes base64) appended to
 * @out, no trailing newline. Returns 0, -1 if the bytes do not unpack. */
int pbjson_encode(const ProtobufCMessageDescriptor *d, const uint8_t *wire,
                  size_t len, struct buf *out);

/* Appends @s as a JSON string literal with Go's json.Marshal escaping
 * (Go 1.19: HTML characters, U+2028/2029, invalid UTF-8 as \ufffd). */
void json_put_string(struct buf *out, const char *s, size_t n);

/* Go's encoding/json scanner state; one byte at a time, no allocation. */
struct json_scan {
    uint64_t objs;   /* bit d: nesting level d+1 is an object */
    uint8_t depth;   /* open objects and arrays */
    uint8_t state;
    uint8_t objkey;  /* the innermost object waits for a key */
    uint8_t endtop;  /* the top-level value is complete */
    uint8_t errc;    /* the offending byte, once state is the error state */
    const char *errctx;
};

/* Cuts concatenated top-level JSON values out of a request body that arrives
 * in pieces (bidi gateway routes: Watch, LeaseKeepAlive). The caller keeps the
 * unconsumed bytes in one buffer p[0..n) and calls again when more arrive.
 * Returns 1 and sets *end when p[0..*end) holds one complete value (leading
 * whitespace included), 0 when more bytes are needed, -1 when the bytes can
 * never form a value (the caller then passes p[0..n) to pbjson_decode to get
 * Go's error text). After a 1 the caller drops p[0..*end) and re-inits.
 * A top-level number, string or literal ends at the byte after it, so a body
 * that ends right after one gives 0: the caller passes what is left at body
 * end to pbjson_decode. */
struct json_split {
    struct json_scan sc;
    size_t off;      /* bytes of p already scanned */
};
void json_split_init(struct json_split *s);
int json_split_next(struct json_split *s, const uint8_t *p, size_t n, size_t *end);

#endif
