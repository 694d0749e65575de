/* The store -> etcd snapshot -> a new store: every revision, tombstones,
 * the compaction state (also one still in progress), leases and their
 * keys come back; exporting the restored store gives the same bytes. */
#include "mvcc_fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>

#include "mvcc/snapshot.h"
#include "snap/bbolt.h"

static int tmp_fd(void)
{
    char path[] = "/tmp/cairn-snap-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static int step(struct fx *f, int max_keys)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = mvcc_compact_step(&t, max_keys);
    assert_true(rc >= 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
    return rc;
}

static void grant(struct fx *f, int64_t id, int64_t ttl)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_lease_grant(&t, id, ttl), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
}

static void put_lease(struct fx *f, const char *k, const char *v, int64_t id)
{
    Etcdserverpb__PutRequest r;
    Etcdserverpb__PutResponse *resp = NULL;
    etcdserverpb__put_request__init(&r);
    r.key = bs(k);
    r.value = bs(v);
    r.lease = id;
    assert_int_equal(do_put(f, &r, &resp), 0);
}

static uint64_t export(struct fx *f, int fd)
{
    struct mvcc_txn t;
    uint64_t size = 0;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_snapshot_write(&t, fd, NULL, NULL, &size), 0);
    mvcc_read_end(&t);
    return size;
}

/* Leases and their keys as text. */
struct lease_dump {
    struct fx *f;
    struct mvcc_txn *t;
    char *out;
};

static int dump_lease(void *ud, int64_t id, int64_t ttl)
{
    struct lease_dump *d = ud;
    ProtobufCBinaryData *keys;
    size_t n;
    assert_int_equal(mvcc_lease_keys(d->t, id, &d->f->a, &keys, &n), 0);
    d->out = fx_printf(d->f, "%s[%lld ttl=%lld", d->out, (long long)id,
                       (long long)ttl);
    for (size_t i = 0; i < n; i++)
        d->out = fx_printf(d->f, "%s %.*s", d->out, (int)keys[i].len,
                           (char *)keys[i].data);
    d->out = fx_printf(d->f, "%s]", d->out);
    return 0;
}

static char *leases_of(struct fx *f)
{
    struct mvcc_txn t;
    struct lease_dump d = {f, &t, ""};
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_leases(&t, dump_lease, &d), 0);
    d.out = fx_printf(f, "%s compact_done=%lld index=%lld term=%lld", d.out,
                      (long long)mvcc_compact_done(&t),
                      (long long)mvcc_meta_get(&t, "index", 0),
                      (long long)mvcc_meta_get(&t, "term", 1));
    mvcc_read_end(&t);
    return d.out;
}

static void assert_same(struct fx *a, struct fx *b, int64_t from)
{
    int64_t cur = cur_rev_of(a);
    assert_int_equal(cur_rev_of(b), cur);
    assert_int_equal(compact_rev_of(b), compact_rev_of(a));
    assert_string_equal(leases_of(b), leases_of(a));
    for (int64_t rev = from; rev <= cur + 1; rev++)
        assert_string_equal(snapshot(b, rev), snapshot(a, rev));
}

/* Opens a restored copy of @f's store as a second fixture. */
static struct fx *restore_copy(struct fx *f, int fd, uint64_t size)
{
    struct fx *g = calloc(1, sizeof *g);
    struct mvcc_snap_meta meta;
    snprintf(g->dir, sizeof g->dir, "%.40s-r", f->dir);
    assert_int_equal(mvcc_snapshot_restore(fd, size, g->dir, MAP_SIZE, NULL, &meta), 0);
    assert_int_equal(meta.rev > 0, 1);
    assert_int_equal(mvcc_open(g->dir, MAP_SIZE, &g->m), 0);
    arena_init(&g->a);
    return g;
}

static void drop_copy(struct fx *g)
{
    void *st = g;
    fx_teardown(&st);
}

static void round_trip_keeps_history(void **state)
{
    struct fx *f = *state;
    PUT("a", "1");
    PUT("b", "1");
    PUT("a", "2");
    DEL("b", "");
    PUT("c", "1");
    PUT("b", "again");
    for (int i = 0; i < 300; i++)
        put_kv(f, bs(fx_printf(f, "many/%04d", i)), bs(fx_printf(f, "v%d", i)));
    DEL("many/0100", "many/0200");
    int64_t crev = PUT("a", "3");
    PUT("c", "2");
    fx_compact(f, crev, 0);
    /* Part of the history below crev is still there: an unfinished
     * compaction. */
    assert_int_equal(step(f, 2), 1);
    grant(f, 7, 100);
    grant(f, 8, 200);
    grant(f, 9, 300);
    put_lease(f, "l/x", "1", 7);
    put_lease(f, "l/y", "1", 7);
    put_lease(f, "l/z", "1", 8);
    put_lease(f, "l/z", "2", 9); /* moved to 9 */
    PUT("a", "4");

    int fd = tmp_fd();
    uint64_t size = export(f, fd);
    assert_int_equal(size % SNAP_BBOLT_PAGE, 0);
    struct fx *g = restore_copy(f, fd, size);
    assert_same(f, g, crev - 1);
    assert_string_equal(snapshot(g, crev - 1),
                        fx_printf(f, "ERR %d", CAIRN_ECOMPACTED));

    /* The same content gives the same file. */
    int fd2 = tmp_fd();
    assert_int_equal(export(g, fd2), size);
    uint8_t *x = malloc(size), *y = malloc(size);
    assert_int_equal(pread(fd, x, size, 0), (ssize_t)size);
    assert_int_equal(pread(fd2, y, size, 0), (ssize_t)size);
    assert_memory_equal(x, y, size);
    free(x);
    free(y);

    /* Both finish the compaction alike. */
    while (step(f, 1000) == 1)
        ;
    while (step(g, 1000) == 1)
        ;
    assert_same(f, g, crev);
    drop_copy(g);
    close(fd);
    close(fd2);
}

static void restore_refuses_existing_store(void **state)
{
    struct fx *f = *state;
    PUT("a", "1");
    int fd = tmp_fd();
    uint64_t size = export(f, fd);
    PUT("a", "2");
    /* f's own dir holds a store with data. */
    assert_int_equal(mvcc_snapshot_restore(fd, size, f->dir, MAP_SIZE, NULL, NULL),
                     -EEXIST);
    /* Not a snapshot. */
    assert_int_equal(mvcc_snapshot_restore(fd, 100, f->dir, MAP_SIZE, NULL, NULL),
                     -EBADMSG);
    close(fd);
}

static void export_stops_when_asked(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    atomic_int stop = 1;
    uint64_t size;
    PUT("a", "1");
    int fd = tmp_fd();
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_snapshot_write(&t, fd, NULL, &stop, &size),
                     -ECANCELED);
    mvcc_read_end(&t);
    close(fd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(round_trip_keeps_history, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(restore_refuses_existing_store,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(export_stops_when_asked, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
