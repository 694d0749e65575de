/* gRPC Length-Prefixed-Message framing: grpc_frame_next/grpc_frame_prefix. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <string.h>

#include "net/frame.h"

#define MAX (4u * 1024 * 1024)

/* A frame of @len bytes of body (bytes i & 0xff) with flag @flag. */
static uint8_t *frame(uint8_t flag, uint32_t len, size_t *n)
{
    uint8_t *p = test_malloc(GRPC_PREFIX_LEN + len + 1);
    grpc_frame_prefix(p, len);
    p[0] = flag;
    for (uint32_t i = 0; i < len; i++)
        p[GRPC_PREFIX_LEN + i] = (uint8_t)i;
    *n = GRPC_PREFIX_LEN + len;
    return p;
}

static void test_prefix_encoding(void **state)
{
    (void)state;
    uint8_t out[GRPC_PREFIX_LEN];
    memset(out, 0xaa, sizeof out);
    grpc_frame_prefix(out, 0);
    assert_memory_equal(out, "\0\0\0\0\0", 5);
    grpc_frame_prefix(out, 0x01020304);
    assert_memory_equal(out, "\x00\x01\x02\x03\x04", 5);
    grpc_frame_prefix(out, 300);
    assert_memory_equal(out, "\x00\x00\x00\x01\x2c", 5);
    grpc_frame_prefix(out, 0xffffffffu);
    assert_memory_equal(out, "\x00\xff\xff\xff\xff", 5);
}

static void test_need_more_prefix(void **state)
{
    (void)state;
    uint8_t p[GRPC_PREFIX_LEN] = {0, 0, 0, 0, 3};
    for (size_t n = 0; n < GRPC_PREFIX_LEN; n++) {
        uint32_t len = 12345;
        assert_int_equal(grpc_frame_next(p, n, MAX, &len), GRPC_FRAME_NEED_MORE);
    }
    /* even when the partial prefix would announce a too large or a
     * compressed message: nothing can be said before 5 bytes */
    uint8_t big[GRPC_PREFIX_LEN] = {1, 0xff, 0xff, 0xff, 0xff};
    for (size_t n = 0; n < GRPC_PREFIX_LEN; n++) {
        uint32_t len;
        assert_int_equal(grpc_frame_next(big, n, 10, &len), GRPC_FRAME_NEED_MORE);
    }
    uint32_t len;
    assert_int_equal(grpc_frame_next(NULL, 0, MAX, &len), GRPC_FRAME_NEED_MORE);
}

static void test_need_more_body(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = frame(0, 100, &n);
    for (size_t have = GRPC_PREFIX_LEN; have < n; have++) {
        uint32_t len = 0;
        assert_int_equal(grpc_frame_next(p, have, MAX, &len),
                         GRPC_FRAME_NEED_MORE);
    }
    uint32_t len = 0;
    assert_int_equal(grpc_frame_next(p, n, MAX, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 100);
    test_free(p);
}

static void test_ok_and_trailing_bytes(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = frame(0, 7, &n);
    uint32_t len = 0;
    assert_int_equal(grpc_frame_next(p, n, MAX, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 7);
    test_free(p);

    /* two messages back to back: the first is reported, then the second */
    uint8_t two[GRPC_PREFIX_LEN * 2 + 3 + 2];
    grpc_frame_prefix(two, 3);
    memcpy(two + 5, "abc", 3);
    grpc_frame_prefix(two + 8, 2);
    memcpy(two + 13, "de", 2);
    assert_int_equal(grpc_frame_next(two, sizeof two, MAX, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(two + GRPC_PREFIX_LEN, "abc", 3);
    size_t off = GRPC_PREFIX_LEN + len;
    assert_int_equal(grpc_frame_next(two + off, sizeof two - off, MAX, &len),
                     GRPC_FRAME_OK);
    assert_int_equal(len, 2);
    assert_memory_equal(two + off + GRPC_PREFIX_LEN, "de", 2);
    /* the second one cut short */
    assert_int_equal(grpc_frame_next(two + off, sizeof two - off - 1, MAX, &len),
                     GRPC_FRAME_NEED_MORE);
}

static void test_zero_length(void **state)
{
    (void)state;
    uint8_t p[GRPC_PREFIX_LEN + 1] = {0, 0, 0, 0, 0, 0x55};
    uint32_t len = 99;
    assert_int_equal(grpc_frame_next(p, GRPC_PREFIX_LEN, MAX, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 0);
    len = 99;
    assert_int_equal(grpc_frame_next(p, sizeof p, MAX, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 0);
    /* even with no room at all */
    len = 99;
    assert_int_equal(grpc_frame_next(p, GRPC_PREFIX_LEN, 0, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 0);
}

static void test_too_large(void **state)
{
    (void)state;
    uint8_t p[GRPC_PREFIX_LEN];
    uint32_t len = 0;
    grpc_frame_prefix(p, 1000);
    assert_int_equal(grpc_frame_next(p, sizeof p, 999, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, 1000); /* the announced length, for the error */
    grpc_frame_prefix(p, 0xffffffffu);
    assert_int_equal(grpc_frame_next(p, sizeof p, MAX, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, 0xffffffffu);
    /* known as soon as the prefix is in: no need to wait for the body */
    grpc_frame_prefix(p, MAX + 1);
    assert_int_equal(grpc_frame_next(p, sizeof p, MAX, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, MAX + 1);
    /* size is checked before compression (as grpc-go) */
    p[0] = 1;
    assert_int_equal(grpc_frame_next(p, sizeof p, MAX, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, MAX + 1);
    grpc_frame_prefix(p, 1);
    assert_int_equal(grpc_frame_next(p, sizeof p, 0, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, 1);
}

static void test_max_boundary(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = frame(0, 1024, &n);
    uint32_t len = 0;
    assert_int_equal(grpc_frame_next(p, n, 1024, &len), GRPC_FRAME_OK);
    assert_int_equal(len, 1024);
    assert_int_equal(grpc_frame_next(p, n - 1, 1024, &len), GRPC_FRAME_NEED_MORE);
    assert_int_equal(grpc_frame_next(p, n, 1023, &len), GRPC_FRAME_TOO_LARGE);
    assert_int_equal(len, 1024);
    assert_int_equal(grpc_frame_next(p, n, 1025, &len), GRPC_FRAME_OK);
    test_free(p);
    /* a max above 32 bits */
    uint8_t q[GRPC_PREFIX_LEN];
    grpc_frame_prefix(q, 0xffffffffu);
    assert_int_equal(grpc_frame_next(q, sizeof q, (size_t)0xffffffffu, &len),
                     GRPC_FRAME_NEED_MORE);
    assert_int_equal(grpc_frame_next(q, sizeof q, SIZE_MAX, &len),
                     GRPC_FRAME_NEED_MORE);
    assert_int_equal(grpc_frame_next(q, sizeof q, (size_t)0xfffffffeu, &len),
                     GRPC_FRAME_TOO_LARGE);
}

static void test_compressed(void **state)
{
    (void)state;
    size_t n;
    uint8_t *p = frame(1, 10, &n);
    uint32_t len = 0;
    assert_int_equal(grpc_frame_next(p, n, MAX, &len), GRPC_FRAME_COMPRESSED);
    /* refused as soon as the prefix is in */
    assert_int_equal(grpc_frame_next(p, GRPC_PREFIX_LEN, MAX, &len),
                     GRPC_FRAME_COMPRESSED);
    assert_int_equal(grpc_frame_next(p, GRPC_PREFIX_LEN - 1, MAX, &len),
                     GRPC_FRAME_NEED_MORE);
    test_free(p);
    /* an empty compressed message is still compressed */
    uint8_t e[GRPC_PREFIX_LEN] = {1, 0, 0, 0, 0};
    assert_int_equal(grpc_frame_next(e, sizeof e, MAX, &len), GRPC_FRAME_COMPRESSED);
    /* any nonzero flag byte */
    e[0] = 0x80;
    assert_int_equal(grpc_frame_next(e, sizeof e, MAX, &len), GRPC_FRAME_COMPRESSED);
}

static void test_roundtrip(void **state)
{
    (void)state;
    static const uint32_t lens[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        size_t n;
        uint8_t *p = frame(0, lens[i], &n);
        uint32_t len = 0xdead;
        assert_int_equal(grpc_frame_next(p, n, MAX, &len), GRPC_FRAME_OK);
        assert_int_equal(len, lens[i]);
        if (lens[i] > 0) {
            assert_int_equal(grpc_frame_next(p, n - 1, MAX, &len),
                             GRPC_FRAME_NEED_MORE);
        }
        test_free(p);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix_encoding),
        cmocka_unit_test(test_need_more_prefix),
        cmocka_unit_test(test_need_more_body),
        cmocka_unit_test(test_ok_and_trailing_bytes),
        cmocka_unit_test(test_zero_length),
        cmocka_unit_test(test_too_large),
        cmocka_unit_test(test_max_boundary),
        cmocka_unit_test(test_compressed),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
