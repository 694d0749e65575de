/* Shared fixture and helpers for the MVCC unit tests (test_mvcc, test_txn,
 * test_compact). Header-only: every function is static, so each test binary
 * stays one translation unit as the Makefile expects.
 *
 * A fixture owns a fresh store in a temp dir (mkdtemp under /tmp) and one
 * arena for every request and response of the test; both go at teardown.
 * Responses returned by the do_*() helpers are deep copies (pack + unpack
 * into the arena), so they stay valid after the LMDB txn they came from has
 * ended: KeyValues produced by mvcc_* point into the map otherwise. */
#ifndef TESTS_UNIT_MVCC_FIXTURE_H
#define TESTS_UNIT_MVCC_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/arena.h"
#include "core/err.h"
#include "mvcc/mvcc.h"

#define FXF static __attribute__((unused))
#define MAP_SIZE ((size_t)1 << 30)

struct fx {
    char dir[64];
    struct mvcc *m;
    struct arena a;
};

FXF int rm_cb(const char *p, const struct stat *sb, int flag,
                 struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(p);
}

FXF int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    if (f == NULL)
        return -1;
    strcpy(f->dir, "/tmp/cairn-unit-XXXXXX");
    if (mkdtemp(f->dir) == NULL) {
        free(f);
        return -1;
    }
    if (mvcc_open(f->dir, MAP_SIZE, &f->m) != 0) {
        rmdir(f->dir);
        free(f);
        return -1;
    }
    arena_init(&f->a);
    *state = f;
    return 0;
}

FXF int fx_teardown(void **state)
{
    struct fx *f = *state;
    mvcc_close(f->m);
    arena_free(&f->a);
    nftw(f->dir, rm_cb, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

FXF void fx_reopen(struct fx *f)
{
    mvcc_close(f->m);
    f->m = NULL;
    assert_int_equal(mvcc_open(f->dir, MAP_SIZE, &f->m), 0);
}

/* ---- bytes ---- */

/* For string literals only: keeps embedded NULs ("\0" has length 1). */
#define B(lit) ((ProtobufCBinaryData){sizeof(lit) - 1, (uint8_t *)(lit)})
#define NOEND ((ProtobufCBinaryData){0, NULL})

FXF ProtobufCBinaryData bs(const char *s)
{
    ProtobufCBinaryData d = {s ? strlen(s) : 0, (uint8_t *)s};
    return d;
}

FXF int bin_eq(ProtobufCBinaryData a, ProtobufCBinaryData b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.data, b.data, a.len) == 0);
}

#define assert_bin_equal(x, y) assert_true(bin_eq((x), (y)))

FXF char *fx_printf(struct fx *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = arena_alloc(&f->a, (size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return s;
}

/* "key=value:create/mod/version" for each kv, space separated. Bytes
 * outside printable ASCII are shown as \xHH. */
FXF void esc(char *out, size_t cap, size_t *o, ProtobufCBinaryData d)
{
    for (size_t i = 0; i < d.len && *o + 5 < cap; i++) {
        uint8_t c = d.data[i];
        if (c >= 0x20 && c < 0x7f)
            out[(*o)++] = (char)c;
        else
            *o += (size_t)snprintf(out + *o, cap - *o, "\\x%02x", c);
    }
    out[*o] = 0;
}

FXF char *dump_kvs(struct fx *f, Mvccpb__KeyValue **kvs, size_t n)
{
    size_t cap = 64;
    for (size_t i = 0; i < n; i++)
        cap += 4 * (kvs[i]->key.len + kvs[i]->value.len) + 80;
    char *s = arena_alloc(&f->a, cap);
    size_t o = 0;
    s[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[o++] = ' ';
        esc(s, cap, &o, kvs[i]->key);
        s[o++] = '=';
        esc(s, cap, &o, kvs[i]->value);
        o += (size_t)snprintf(s + o, cap - o, ":%lld/%lld/%lld",
                              (long long)kvs[i]->create_revision,
                              (long long)kvs[i]->mod_revision,
                              (long long)kvs[i]->version);
    }
    return s;
}

/* Just the keys, comma separated. */
FXF char *dump_keys(struct fx *f, Mvccpb__KeyValue **kvs, size_t n)
{
    size_t cap = 16;
    for (size_t i = 0; i < n; i++)
        cap += 4 * kvs[i]->key.len + 2;
    char *s = arena_alloc(&f->a, cap);
    size_t o = 0;
    s[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[o++] = ',';
        esc(s, cap, &o, kvs[i]->key);
    }
    return s;
}

/* ---- deep copies (pack, then unpack into the arena) ---- */

#define DEFINE_COPY(Type, prefix)                                           \
    FXF Type *copy_##prefix(struct fx *f, const Type *m)                 \
    {                                                                       \
        size_t n = prefix##__get_packed_size(m);                            \
        uint8_t *buf = arena_alloc(&f->a, n + 1);                           \
        prefix##__pack(m, buf);                                             \
        Type *c = prefix##__unpack(&f->a.pb, n, buf);                       \
        assert_non_null(c);                                                 \
        return c;                                                           \
    }
DEFINE_COPY(Etcdserverpb__RangeResponse, etcdserverpb__range_response)
DEFINE_COPY(Etcdserverpb__PutResponse, etcdserverpb__put_response)
DEFINE_COPY(Etcdserverpb__DeleteRangeResponse,
            etcdserverpb__delete_range_response)
DEFINE_COPY(Etcdserverpb__TxnResponse, etcdserverpb__txn_response)

/* ---- one request per LMDB txn ---- */

/* A range in its own read txn. Returns the mvcc rc; *out only on 0. */
FXF int do_range(struct fx *f, const Etcdserverpb__RangeRequest *r,
                    Etcdserverpb__RangeResponse **out)
{
    struct mvcc_txn t;
    Etcdserverpb__RangeResponse resp;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    int rc = mvcc_range(&t, r, &f->a, &resp);
    if (rc == 0) {
        assert_non_null(resp.header);
        *out = copy_etcdserverpb__range_response(f, &resp);
    }
    mvcc_read_end(&t);
    return rc;
}

/* A put as one write command, committed on success, aborted on error. */
FXF int do_put(struct fx *f, const Etcdserverpb__PutRequest *r,
                  Etcdserverpb__PutResponse **out)
{
    struct mvcc_txn t;
    Etcdserverpb__PutResponse resp;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = mvcc_put(&t, r, &f->a, &resp);
    if (rc != 0) {
        mvcc_write_abort(&t);
        return rc;
    }
    assert_non_null(resp.header);
    *out = copy_etcdserverpb__put_response(f, &resp);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    return 0;
}

FXF int do_delete(struct fx *f, const Etcdserverpb__DeleteRangeRequest *r,
                     Etcdserverpb__DeleteRangeResponse **out)
{
    struct mvcc_txn t;
    Etcdserverpb__DeleteRangeResponse resp;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = mvcc_delete_range(&t, r, &f->a, &resp);
    if (rc != 0) {
        mvcc_write_abort(&t);
        return rc;
    }
    assert_non_null(resp.header);
    *out = copy_etcdserverpb__delete_range_response(f, &resp);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    return 0;
}

/* A txn the way the server runs it: write txns in a write command, read-only
 * ones in a read txn. */
FXF int do_txn(struct fx *f, const Etcdserverpb__TxnRequest *r,
                  Etcdserverpb__TxnResponse **out)
{
    struct mvcc_txn t;
    Etcdserverpb__TxnResponse resp;
    int write = mvcc_txn_is_write(r);
    if (write)
        assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    else
        assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    int rc = mvcc_txn(&t, r, &f->a, &resp);
    if (rc == 0) {
        assert_non_null(resp.header);
        *out = copy_etcdserverpb__txn_response(f, &resp);
    }
    if (!write) {
        mvcc_read_end(&t);
    } else if (rc != 0) {
        mvcc_write_abort(&t);
    } else {
        mvcc_cmd_end(&t);
        assert_int_equal(mvcc_write_commit(&t), 0);
    }
    return rc;
}

/* ---- short forms ---- */

/* Puts k=v; returns the response's header revision. */
FXF int64_t put_kv(struct fx *f, ProtobufCBinaryData k, ProtobufCBinaryData v)
{
    Etcdserverpb__PutRequest r;
    Etcdserverpb__PutResponse *resp = NULL;
    etcdserverpb__put_request__init(&r);
    r.key = k;
    r.value = v;
    assert_int_equal(mvcc_check_put(&r), 0);
    assert_int_equal(do_put(f, &r, &resp), 0);
    return resp->header->revision;
}

/* Deletes [k, end) (end empty: just k); returns the number deleted. */
FXF int64_t del_kv(struct fx *f, ProtobufCBinaryData k, ProtobufCBinaryData e)
{
    Etcdserverpb__DeleteRangeRequest r;
    Etcdserverpb__DeleteRangeResponse *resp = NULL;
    etcdserverpb__delete_range_request__init(&r);
    r.key = k;
    r.range_end = e;
    assert_int_equal(do_delete(f, &r, &resp), 0);
    return resp->deleted;
}

FXF Etcdserverpb__RangeResponse *range_at(struct fx *f, ProtobufCBinaryData k,
                                             ProtobufCBinaryData e, int64_t rev)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp = NULL;
    etcdserverpb__range_request__init(&r);
    r.key = k;
    r.range_end = e;
    r.revision = rev;
    assert_int_equal(do_range(f, &r, &resp), 0);
    return resp;
}

/* Literal-only macros (they use sizeof); a local `f` must be in scope. */
#define PUT(k, v) put_kv(f, B(k), B(v))
#define DEL(k, end) del_kv(f, B(k), B(end))
#define RANGE(k, end) range_at(f, B(k), B(end), 0)
#define RANGE_AT(k, end, rev) range_at(f, B(k), B(end), rev)
#define KVS(resp) dump_kvs(f, (resp)->kvs, (resp)->n_kvs)
#define KEYS(resp) dump_keys(f, (resp)->kvs, (resp)->n_kvs)

/* Everything alive at @rev as dump_kvs text, or "ERR <rc>". */
FXF char *snapshot(struct fx *f, int64_t rev)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.revision = rev;
    int rc = do_range(f, &r, &resp);
    if (rc != 0)
        return fx_printf(f, "ERR %d", rc);
    return KVS(resp);
}

FXF int64_t cur_rev_of(struct fx *f)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    int64_t r = t.rev;
    mvcc_read_end(&t);
    return r;
}

FXF int64_t compact_rev_of(struct fx *f)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    int64_t r = t.compact_rev;
    mvcc_read_end(&t);
    return r;
}

/* Records a compaction at @rev (readers see it at once); with @physical,
 * also removes the history below it, step by step, as the apply thread
 * does. */
FXF void fx_compact(struct fx *f, int64_t rev, int physical)
{
    struct mvcc_txn t;
    Etcdserverpb__CompactionRequest r;
    Etcdserverpb__CompactionResponse resp;
    etcdserverpb__compaction_request__init(&r);
    r.revision = rev;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_compact(&t, &r, &resp, &f->a), 0);
    mvcc_cmd_end(&t);
    assert_int_equal(mvcc_write_commit(&t), 0);
    for (int n = 0; physical; n++) {
        assert_true(n < 1000000);
        assert_int_equal(mvcc_write_begin(f->m, &t), 0);
        int more = mvcc_compact_step(&t, 100);
        assert_true(more >= 0);
        assert_int_equal(mvcc_write_commit(&t), 0);
        physical = more;
    }
}

#endif
