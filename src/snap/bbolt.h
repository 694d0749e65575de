/* bbolt's file format (go.etcd.io/bbolt 1.3, the backend of etcd 3.4+),
 * written and read without Go: what `etcdctl snapshot save` receives and
 * `etcdctl snapshot restore` and `snapshot status` open.
 *
 * File: page 0 and 1 are meta pages (magic, version, page size, the root
 * bucket's page, the freelist's page, the high-water page id, txid and an
 * FNV-1a 64 checksum); every other page is a B+tree node (branch or leaf),
 * the freelist, or the continuation of a node that overflows (a node of
 * N+1 pages has overflow N). The root bucket maps bucket names to bucket
 * headers (root page, sequence); a small bucket is stored inline in its
 * header's value (root page 0, then a leaf page image).
 *
 * Writer: top-level buckets in name order, keys in order within each; the
 * tree is built bottom-up as the keys arrive and pages are written out as
 * soon as they are full, so memory stays at a few pages per tree level
 * (plus one value when a value is larger than a page). Not thread-safe.
 *
 * Reader: validates the meta pages (the valid one with the highest txid
 * wins) and walks buckets with every offset, size and page id checked
 * against the file: a corrupt or truncated file gives -EBADMSG, never a
 * crash, and every page is visited at most once (no loops). */
#ifndef SNAP_BBOLT_H
#define SNAP_BBOLT_H

#include <stddef.h>
#include <stdint.h>

#define SNAP_BBOLT_PAGE 4096

struct snap_bbolt_writer;

/* Starts a file on @fd at offset 0 (the caller owns @fd and closes it).
 * Errors: -errno. */
int snap_bbolt_writer_new(int fd, struct snap_bbolt_writer **out);
/* A top-level bucket; names must come in strictly increasing byte order.
 * Errors: -EINVAL (order, a bucket already open, empty name). */
int snap_bbolt_bucket_begin(struct snap_bbolt_writer *w, const void *name,
                            size_t len);
/* Keys must be strictly increasing within the bucket, 1..32768 bytes.
 * Copies what it keeps. Errors: -EINVAL, -errno from write. */
int snap_bbolt_put(struct snap_bbolt_writer *w, const void *k, size_t klen,
                   const void *v, size_t vlen);
int snap_bbolt_bucket_end(struct snap_bbolt_writer *w);
/* Writes the root bucket, the freelist and both meta pages, and reports
 * the file's size. The writer stays to be freed. Errors: -errno, -EINVAL. */
int snap_bbolt_writer_finish(struct snap_bbolt_writer *w, uint64_t *size);
void snap_bbolt_writer_free(struct snap_bbolt_writer *w);

struct snap_bbolt_reader;

/* Opens the first @len bytes of @fd (the rest, e.g. a sha256 trailer, is
 * ignored). Keeps @fd, which the caller closes after freeing the reader.
 * Errors: -EBADMSG (not a valid bbolt file), -errno. */
int snap_bbolt_reader_new(int fd, uint64_t len, struct snap_bbolt_reader **out);
void snap_bbolt_reader_free(struct snap_bbolt_reader *r);
/* What bbolt's tx.Size() reports: the high-water page id x page size. */
uint64_t snap_bbolt_size(const struct snap_bbolt_reader *r);
uint64_t snap_bbolt_txid(const struct snap_bbolt_reader *r);

/* For each top-level bucket (name order), or only bucket @only when not
 * NULL: @fn(ud, name, NULL, NULL, SNAP_BBOLT_BEGIN) once, then @fn for each
 * key in order with its value; a nested bucket's key comes with
 * SNAP_BBOLT_NESTED and an empty value (it is not descended into). The
 * pointers are valid during the call. @fn returns 0 to go on or an error,
 * which is returned. Errors: -EBADMSG, -errno, @fn's. A missing @only
 * bucket is not an error (nothing is called). */
#define SNAP_BBOLT_BEGIN 1
#define SNAP_BBOLT_NESTED 2
struct snap_bytes {
    const uint8_t *p;
    size_t n;
};
typedef int (*snap_bbolt_fn)(void *ud, struct snap_bytes bucket,
                             struct snap_bytes key, struct snap_bytes val,
                             int flags);
int snap_bbolt_walk(struct snap_bbolt_reader *r, const char *only,
                    snap_bbolt_fn fn, void *ud);

#endif
