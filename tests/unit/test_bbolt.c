/* bbolt writer and reader: round trips (inline and empty buckets, values
 * spanning overflow pages, enough keys for several branch levels) and
 * corrupt files (flipped bytes, truncation, garbage) rejected cleanly. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/mem.h"
#include "snap/bbolt.h"

static int tmpfile_fd(void)
{
    char path[] = "/tmp/cairn-bbolt-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

/* Deterministic value of key @i in bucket @b, of length @n. */
static void fill(uint8_t *p, size_t n, int b, long i)
{
    uint32_t x = (uint32_t)(b * 7919 + i * 104729 + 1);
    for (size_t j = 0; j < n; j++) {
        x = x * 1103515245u + 12345u;
        p[j] = (uint8_t)(x >> 16);
    }
}

struct spec {
    const char *name;
    long nkeys;
    size_t vlen; /* 0: the key's length varies with i */
};

static size_t vlen_of(const struct spec *s, long i)
{
    return s->vlen ? s->vlen : (size_t)(i % 97);
}

static void key_of(char *k, long i)
{
    snprintf(k, 32, "k%09ld", i);
}

static uint64_t write_db(int fd, const struct spec *specs, int n)
{
    struct snap_bbolt_writer *w;
    uint64_t size;
    uint8_t *v = cairn_malloc(5 << 20);
    assert_int_equal(snap_bbolt_writer_new(fd, &w), 0);
    for (int b = 0; b < n; b++) {
        assert_int_equal(snap_bbolt_bucket_begin(w, specs[b].name,
                                                 strlen(specs[b].name)), 0);
        for (long i = 0; i < specs[b].nkeys; i++) {
            char k[32];
            key_of(k, i);
            size_t vl = vlen_of(&specs[b], i);
            fill(v, vl, b, i);
            assert_int_equal(snap_bbolt_put(w, k, strlen(k), v, vl), 0);
        }
        assert_int_equal(snap_bbolt_bucket_end(w), 0);
    }
    assert_int_equal(snap_bbolt_writer_finish(w, &size), 0);
    snap_bbolt_writer_free(w);
    cairn_free(v);
    return size;
}

struct check {
    const struct spec *specs;
    int n, b;
    long i;
    uint8_t *v;
    int base; /* index of specs[0] in the file */
};

static int check_fn(void *ud, struct snap_bytes bucket, struct snap_bytes k,
                    struct snap_bytes v, int flags)
{
    struct check *c = ud;
    if (flags & SNAP_BBOLT_BEGIN) {
        if (c->b >= 0)
            assert_int_equal(c->i, c->specs[c->b].nkeys);
        c->b++;
        c->i = 0;
        assert_true(c->b < c->n);
        assert_int_equal(bucket.n, strlen(c->specs[c->b].name));
        assert_memory_equal(bucket.p, c->specs[c->b].name, bucket.n);
        return 0;
    }
    char kk[32];
    key_of(kk, c->i);
    assert_int_equal(flags, 0);
    assert_int_equal(k.n, strlen(kk));
    assert_memory_equal(k.p, kk, k.n);
    size_t vl = vlen_of(&c->specs[c->b], c->i);
    assert_int_equal(v.n, vl);
    fill(c->v, vl, c->b + c->base, c->i);
    if (vl)
        assert_memory_equal(v.p, c->v, vl);
    c->i++;
    return 0;
}

static void round_trip(const struct spec *specs, int n)
{
    int fd = tmpfile_fd();
    uint64_t size = write_db(fd, specs, n);
    struct stat st;
    assert_int_equal(fstat(fd, &st), 0);
    assert_int_equal((uint64_t)st.st_size, size);
    struct snap_bbolt_reader *r;
    assert_int_equal(snap_bbolt_reader_new(fd, size, &r), 0);
    assert_int_equal(snap_bbolt_size(r), size);
    struct check c = {specs, n, -1, 0, cairn_malloc(5 << 20), 0};
    assert_int_equal(snap_bbolt_walk(r, NULL, check_fn, &c), 0);
    assert_int_equal(c.b, n - 1);
    assert_int_equal(c.i, specs[n - 1].nkeys);
    /* One bucket only. */
    if (n > 1) {
        c.b = 0;
        c.i = 0;
        struct check c1 = {specs + 1, 1, -1, 0, c.v, 1};
        assert_int_equal(snap_bbolt_walk(r, specs[1].name, check_fn, &c1), 0);
        assert_int_equal(c1.i, specs[1].nkeys);
    }
    cairn_free(c.v);
    snap_bbolt_reader_free(r);
    close(fd);
}

static void small_and_empty_buckets(void **state)
{
    (void)state;
    /* "a" and "c" fit inline, "b" is empty, "d" needs pages. */
    static const struct spec s[] = {
        {"a", 3, 10}, {"b", 0, 0}, {"c", 1, 0}, {"d", 200, 30}};
    round_trip(s, 4);
}

static void overflow_values(void **state)
{
    (void)state;
    /* Values of 5000 bytes and 3 MiB span overflow pages; the 3 MiB one
     * is larger than the writer's output buffer. */
    static const struct spec s[] = {{"big", 20, 5000}, {"huge", 2, 3 << 20}};
    round_trip(s, 2);
}

static void many_keys_multilevel(void **state)
{
    (void)state;
    /* 300,000 keys of ~65 bytes: ~5,000 leaves, so branch pages of about
     * 170 children need three levels. */
    static const struct spec s[] = {
        {"alarm", 0, 0}, {"key", 300000, 0}, {"meta", 3, 8}};
    round_trip(s, 3);
}

static void writer_refuses_bad_order(void **state)
{
    (void)state;
    struct snap_bbolt_writer *w;
    int fd = tmpfile_fd();
    assert_int_equal(snap_bbolt_writer_new(fd, &w), 0);
    assert_int_equal(snap_bbolt_bucket_begin(w, "m", 1), 0);
    assert_int_equal(snap_bbolt_put(w, "b", 1, "", 0), 0);
    assert_int_equal(snap_bbolt_put(w, "a", 1, "", 0), -EINVAL);
    assert_int_equal(snap_bbolt_put(w, "b", 1, "", 0), -EINVAL);
    assert_int_equal(snap_bbolt_put(w, "", 0, "", 0), -EINVAL);
    assert_int_equal(snap_bbolt_bucket_end(w), 0);
    assert_int_equal(snap_bbolt_bucket_begin(w, "a", 1), -EINVAL);
    snap_bbolt_writer_free(w);
    close(fd);
}

static int count_fn(void *ud, struct snap_bytes bucket, struct snap_bytes k,
                    struct snap_bytes v, int flags)
{
    (void)bucket;
    (void)flags;
    /* Touch every byte: the sanitizer catches a read out of bounds. */
    uint64_t *sum = ud;
    for (size_t i = 0; i < k.n; i++)
        *sum += k.p[i];
    for (size_t i = 0; i < v.n; i++)
        *sum += v.p[i];
    return 0;
}

/* Opens and walks @p: 0 when it reads, or the error. */
static int try_read(const uint8_t *p, size_t n)
{
    int fd = tmpfile_fd();
    struct snap_bbolt_reader *r;
    uint64_t sum = 0;
    assert_int_equal(pwrite(fd, p, n, 0), (ssize_t)n);
    int rc = snap_bbolt_reader_new(fd, n, &r);
    if (rc == 0) {
        rc = snap_bbolt_walk(r, NULL, count_fn, &sum);
        snap_bbolt_reader_free(r);
    }
    close(fd);
    return rc;
}

static void corrupt_files_rejected(void **state)
{
    (void)state;
    static const struct spec s[] = {
        {"a", 3, 10}, {"key", 3000, 0}, {"v", 3, 9000}};
    int fd = tmpfile_fd();
    uint64_t size = write_db(fd, s, 3);
    uint8_t *good = cairn_malloc(size), *bad = cairn_malloc(size);
    assert_int_equal(pread(fd, good, size, 0), (ssize_t)size);
    close(fd);
    assert_int_equal(try_read(good, size), 0);

    /* Bad magic / checksum in both metas: not a bbolt file. */
    memcpy(bad, good, size);
    bad[16] ^= 1;
    bad[SNAP_BBOLT_PAGE + 16] ^= 1;
    assert_int_equal(try_read(bad, size), -EBADMSG);
    memcpy(bad, good, size);
    bad[16 + 20] ^= 1;                   /* root, under the checksum */
    bad[SNAP_BBOLT_PAGE + 16 + 20] ^= 1;
    assert_int_equal(try_read(bad, size), -EBADMSG);
    /* One meta broken: the other one is used. */
    memcpy(bad, good, size);
    bad[16 + 20] ^= 1;
    assert_int_equal(try_read(bad, size), 0);
    /* Truncated: pages past the end. */
    assert_int_equal(try_read(good, size / 2), -EBADMSG);
    assert_int_equal(try_read(good, 100), -EBADMSG);

    /* Random damage to the tree pages: never a crash (the sanitizer build
     * runs this too), and an error whenever structure is hit. */
    uint32_t x = 12345;
    int errors = 0;
    for (int round = 0; round < 3000; round++) {
        memcpy(bad, good, size);
        int flips = 1 + round % 8;
        for (int f = 0; f < flips; f++) {
            x = x * 1103515245u + 12345u;
            size_t at = 2 * SNAP_BBOLT_PAGE + (x >> 4) % (size - 2 * SNAP_BBOLT_PAGE);
            x = x * 1103515245u + 12345u;
            /* Headers and element tables are where structure lives. */
            if (round % 2 == 0)
                at = at - at % SNAP_BBOLT_PAGE + (x >> 8) % 64;
            bad[at] ^= (uint8_t)(1 + (x >> 24) % 255);
        }
        if (try_read(bad, size) != 0)
            errors++;
    }
    assert_true(errors > 100);
    /* Garbage of every small length. */
    for (size_t n = 0; n < 3 * SNAP_BBOLT_PAGE; n += 509) {
        for (size_t i = 0; i < n; i++) {
            x = x * 1103515245u + 12345u;
            bad[i] = (uint8_t)(x >> 16);
        }
        assert_int_equal(try_read(bad, n), -EBADMSG);
    }
    cairn_free(good);
    cairn_free(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(small_and_empty_buckets),
        cmocka_unit_test(overflow_values),
        cmocka_unit_test(many_keys_multilevel),
        cmocka_unit_test(writer_refuses_bad_order),
        cmocka_unit_test(corrupt_files_rejected),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
