/* mvcc maintenance: online defragment keeps every byte of data, alarms
 * persist, HashKV's revision errors, Hash tracks content, crc32c. */
#include "mvcc_fixture.h"
#include "core/crc32c.h"

static int64_t disk_bytes(struct fx *f)
{
    char p[128];
    struct stat st;
    snprintf(p, sizeof p, "%s/data.mdb", f->dir);
    assert_int_equal(stat(p, &st), 0);
    return (int64_t)st.st_blocks * 512;
}

static ProtobufCBinaryData bigval(struct fx *f, int i)
{
    uint8_t *b = arena_alloc(&f->a, 5000);
    memset(b, 'a' + i % 26, 5000);
    return (ProtobufCBinaryData){5000, b};
}

/* Defragment between writes: blocks go back to the OS, reads see the same
 * data before and after, and the punched pages are reused safely. */
static void test_defrag_keeps_data(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 2000; i++)
        put_kv(f, bs(fx_printf(f, "k%02d", i % 40)), bigval(f, i));
    int64_t rev = cur_rev_of(f);
    fx_compact(f, rev, 1);
    put_kv(f, B("tick"), B("1")); /* the compaction is not the newest txn */
    put_kv(f, B("tick"), B("2"));
    char *before = snapshot(f, 0);
    int64_t disk0 = disk_bytes(f), punched = 0;
    uint64_t from = 0;
    int rc, steps = 0;
    while ((rc = mvcc_defrag_step(f->m, &from, 2000, &punched)) == 1)
        assert_true(++steps < 100000);
    assert_int_equal(rc, 0);
    assert_true(punched > 0);
    assert_true(disk_bytes(f) < disk0);
    assert_string_equal(snapshot(f, 0), before);
    /* reuse the pages: write, reopen, read everything back */
    for (int i = 0; i < 500; i++)
        put_kv(f, bs(fx_printf(f, "n%03d", i)), bigval(f, i));
    char *after = snapshot(f, 0);
    fx_reopen(f);
    assert_string_equal(snapshot(f, 0), after);
    assert_non_null(strstr(after, "n499"));
    /* a second pass right away finds nothing new to do but works */
    from = 0;
    punched = 0;
    while ((rc = mvcc_defrag_step(f->m, &from, 2000, &punched)) == 1)
        ;
    assert_int_equal(rc, 0);
    assert_string_equal(snapshot(f, 0), after);
}

/* A reader holding an old snapshot pins the pages it can see: defragment
 * must leave them, and the reader still reads its data. */
static void test_defrag_respects_readers(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 300; i++)
        put_kv(f, bs(fx_printf(f, "k%02d", i % 10)), bigval(f, i));
    int64_t old = cur_rev_of(f);
    char *at_old = snapshot(f, old - 5);
    struct mvcc_txn reader;
    assert_int_equal(mvcc_read_begin(f->m, &reader), 0);
    fx_compact(f, old, 1);
    for (int i = 0; i < 300; i++) /* overwrite everything again */
        put_kv(f, bs(fx_printf(f, "k%02d", i % 10)), bigval(f, i + 7));
    uint64_t from = 0;
    int64_t punched = 0;
    while (mvcc_defrag_step(f->m, &from, 2000, &punched) == 1)
        ;
    /* the reader's view is intact (its snapshot predates the compaction) */
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse resp;
    etcdserverpb__range_request__init(&r);
    r.key = B("\0");
    r.range_end = B("\0");
    r.revision = old - 5;
    assert_int_equal(mvcc_range(&reader, &r, &f->a, &resp), 0);
    char *seen = dump_kvs(f, resp.kvs, resp.n_kvs);
    mvcc_read_end(&reader);
    assert_string_equal(seen, at_old);
}

static int collect_alarm(void *ud, uint64_t member, int type)
{
    char *s = ud;
    sprintf(s + strlen(s), "%llx:%d ", (unsigned long long)member, type);
    return 0;
}

static void test_alarms_persist(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    char s[256] = "";
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_alarm_put(&t, 0x8e9e05c52164694dULL, 1), 0);
    assert_int_equal(mvcc_alarm_put(&t, 7, 2), 0);
    assert_int_equal(mvcc_alarm_put(&t, 7, 2), 0); /* idempotent */
    assert_int_equal(mvcc_alarm_del(&t, 9, 1), 1); /* not there */
    assert_int_equal(mvcc_write_commit(&t), 0);
    fx_reopen(f);
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_alarms(&t, collect_alarm, s), 0);
    mvcc_read_end(&t);
    assert_string_equal(s, "7:2 8e9e05c52164694d:1 ");
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_alarm_del(&t, 7, 2), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
    s[0] = 0;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_alarms(&t, collect_alarm, s), 0);
    /* other meta entries are not alarms */
    assert_true(mvcc_meta_get(&t, "format", 0) > 0);
    mvcc_read_end(&t);
    assert_string_equal(s, "8e9e05c52164694d:1 ");
}

static void test_hashkv_errors_and_changes(void **state)
{
    struct fx *f = *state;
    struct mvcc_txn t;
    uint32_t h1, h2, h3;
    int64_t crev;
    PUT("a", "1");
    PUT("b", "2");
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_hash_kv(&t, 0, &h1, &crev), 0);
    assert_int_equal(crev, -1);
    assert_int_equal(mvcc_hash_kv(&t, 3, &h2, &crev), 0);
    assert_int_equal(h1, h2); /* 0 = current = 3 */
    assert_int_equal(mvcc_hash_kv(&t, 4, &h2, &crev), CAIRN_EFUTUREREV);
    assert_int_equal(mvcc_hash_kv(&t, 2, &h2, &crev), 0);
    assert_int_not_equal(h1, h2);
    assert_int_equal(mvcc_hash(&t, &h3), 0);
    mvcc_read_end(&t);
    fx_compact(f, 2, 1);
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_hash_kv(&t, 2, &h2, &crev), CAIRN_ECOMPACTED);
    assert_int_equal(crev, 2);
    assert_int_equal(mvcc_hash_kv(&t, 3, &h2, &crev), 0);
    assert_int_equal(h1, h2); /* nothing compaction removed counted at 3 */
    mvcc_read_end(&t);
    PUT("a", "3");
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_hash(&t, &h2), 0);
    mvcc_read_end(&t);
    assert_int_not_equal(h2, h3);
}

/* The live-key count follows puts and deletes and is recounted at open. */
static void test_live_keys(void **state)
{
    struct fx *f = *state;
    assert_int_equal(mvcc_keys(f->m), 0);
    PUT("a", "1");
    PUT("b", "1");
    PUT("a", "2"); /* overwrite: no new key */
    assert_int_equal(mvcc_keys(f->m), 2);
    DEL("a", "");
    assert_int_equal(mvcc_keys(f->m), 1);
    PUT("a", "3"); /* re-created */
    PUT("c", "1");
    assert_int_equal(mvcc_keys(f->m), 3);
    DEL("a", "z");
    assert_int_equal(mvcc_keys(f->m), 0);
    PUT("d", "1");
    fx_compact(f, cur_rev_of(f), 1);
    assert_int_equal(mvcc_keys(f->m), 1);
    fx_reopen(f);
    assert_int_equal(mvcc_keys(f->m), 1);
}

static void test_crc32c(void **state)
{
    (void)state;
    /* RFC 3720's check value, and Go's incremental Write */
    assert_int_equal(crc32c(0, "123456789", 9), 0xe3069283u);
    assert_int_equal(crc32c(crc32c(0, "1234", 4), "56789", 5),
                     0xe3069283u);
    assert_int_equal(crc32c(0, "", 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defrag_keeps_data, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_defrag_respects_readers, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_alarms_persist, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_hashkv_errors_and_changes, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_live_keys, fx_setup, fx_teardown),
        cmocka_unit_test(test_crc32c),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
