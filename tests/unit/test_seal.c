/* Encryption at rest: the key file, envelopes (tamper, wrong key, wrong
 * place), sealed records in the store, key checks at open, the
 * re-encryption pass and HashKV over plaintext. */
#include "mvcc_fixture.h"

#include <errno.h>
#include <fcntl.h>

#include "crypt/crypt.h"
#include "mvcc/mvcc_int.h"

/* 32 bytes each, base64. */
#define K1 "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
#define K1_OTHER "k1:HwAeAR0CHAMbBBoFGQYYBxcIFgkVChQLEwwSDREOEA8=\n"
#define K2 "k2:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n"

static struct crypt_ring *ring_of_text(const char *text)
{
    struct crypt_ring *r = NULL;
    char err[256];
    int rc = crypt_ring_parse(text, strlen(text), "test", &r, err, sizeof err);
    if (rc != 0)
        fail_msg("parse: %s", err);
    return r;
}

static int install(struct fx *f, const char *text)
{
    struct crypt_ring *r = text ? ring_of_text(text) : NULL;
    char err[256];
    int rotated;
    int rc = mvcc_seal_install(f->m, r, &rotated, err, sizeof err);
    if (rc != 0)
        crypt_ring_free(r);
    return rc;
}

/* ---- key file ---- */

static void keyfile_formats(void **state)
{
    struct crypt_ring *r = NULL;
    char err[256];
    (void)state;
    const char *ok = "# comment\n\n" K2 "  " K1;
    assert_int_equal(crypt_ring_parse(ok, strlen(ok), "f", &r, err, sizeof err), 0);
    assert_int_equal(r->n, 2);
    assert_string_equal(r->keys[0].name, "k2");
    assert_int_equal(r->keys[1].key[31], 31);
    assert_non_null(crypt_ring_find(r, "k1", 2));
    assert_null(crypt_ring_find(r, "k3", 2));
    crypt_ring_free(r);
    const char *bad[] = {
        "", "# only a comment\n", "k1\n", "k1:AAEC\n", /* short key */
        "bad name:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n",
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=AAAA\n", /* long */
        "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh*=\n",     /* char */
        K1 K1, /* twice */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = NULL;
        assert_int_equal(crypt_ring_parse(bad[i], strlen(bad[i]), "f", &r, err,
                                          sizeof err),
                         -EINVAL);
        assert_null(r);
        /* Messages never carry key bytes. */
        assert_null(strstr(err, "AAECAwQF"));
    }
}

static void keyfile_mode(void **state)
{
    char path[] = "/tmp/cairn-keys-XXXXXX", err[256];
    struct crypt_ring *r = NULL;
    (void)state;
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, K1, strlen(K1)), (ssize_t)strlen(K1));
    close(fd);
    assert_int_equal(chmod(path, 0600), 0);
    assert_int_equal(crypt_ring_load(path, &r, err, sizeof err), 0);
    crypt_ring_free(r);
    r = NULL;
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(crypt_ring_load(path, &r, err, sizeof err), -EPERM);
    assert_non_null(strstr(err, "chmod 600"));
    assert_null(r);
    unlink(path);
    assert_int_equal(crypt_ring_load(path, &r, err, sizeof err), -ENOENT);
}

/* ---- envelopes ---- */

static void seal_open_and_tamper(void **state)
{
    struct crypt_ring *r = ring_of_text(K1 K2), *other = ring_of_text(K1_OTHER);
    const char plain[] = "a distinctive value";
    uint8_t env[256], out[256];
    size_t n = crypt_sealed_size(&r->keys[0], sizeof plain), on;
    (void)state;

    assert_int_equal(crypt_seal(&r->keys[0], "aad", 3, plain, sizeof plain, env), 0);
    assert_true(crypt_is_sealed(env, n));
    assert_null(memmem(env, n, plain, sizeof plain - 1));
    assert_int_equal(crypt_open(r, "aad", 3, env, n, out, &on), 0);
    assert_int_equal(on, sizeof plain);
    assert_memory_equal(out, plain, on);
    /* Two seals of the same bytes differ (fresh nonce). */
    uint8_t env2[256];
    assert_int_equal(crypt_seal(&r->keys[0], "aad", 3, plain, sizeof plain, env2), 0);
    assert_memory_not_equal(env, env2, n);
    /* Every flipped byte after the magic is caught (name, nonce,
     * ciphertext, tag). */
    for (size_t i = 1; i < n; i++) {
        env[i] ^= 0x01;
        int rc = crypt_open(r, "aad", 3, env, n, out, &on);
        assert_true(rc == -EBADMSG || rc == -ENOKEY);
        env[i] ^= 0x01;
    }
    /* Other AAD (another place), a same-named other key, no key. */
    assert_int_equal(crypt_open(r, "aae", 3, env, n, out, &on), -EBADMSG);
    assert_int_equal(crypt_open(other, "aad", 3, env, n, out, &on), -EBADMSG);
    uint8_t env3[256];
    assert_int_equal(crypt_seal(&r->keys[1], "aad", 3, plain, sizeof plain, env3), 0);
    assert_int_equal(crypt_open(other, "aad", 3, env3,
                                crypt_sealed_size(&r->keys[1], sizeof plain),
                                out, &on),
                     -ENOKEY);
    assert_int_equal(crypt_open(NULL, "aad", 3, env, n, out, &on), -ENOKEY);
    crypt_ring_free(r);
    crypt_ring_free(other);
}

/* ---- the store ---- */

/* Counts kv (or lease) values holding @needle, raw from LMDB. */
static int raw_count(struct fx *f, MDB_dbi dbi, const char *needle)
{
    struct mvcc_txn t;
    MDB_cursor *c;
    MDB_val k, v;
    int n = 0;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mdb_cursor_open(t.txn, dbi, &c), 0);
    for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
        if (memmem(v.mv_data, v.mv_size, needle, strlen(needle)) != NULL)
            n++;
    mdb_cursor_close(c);
    mvcc_read_end(&t);
    return n;
}

/* Records (kv and lease) not sealed with key @name. */
static int not_under(struct fx *f, const char *name)
{
    struct mvcc_txn t;
    MDB_cursor *c;
    MDB_val k, v;
    int n = 0;
    MDB_dbi dbs[2] = {f->m->kv, f->m->lease};
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    for (int d = 0; d < 2; d++) {
        size_t off = d == 0 ? MVCC_RECHDR : 0;
        assert_int_equal(mdb_cursor_open(t.txn, dbs[d], &c), 0);
        for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0;
             rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
            const char *nm;
            size_t len;
            if (crypt_sealed_name((uint8_t *)v.mv_data + off, v.mv_size - off,
                                  &nm, &len) != 0 ||
                len != strlen(name) || memcmp(nm, name, len) != 0)
                n++;
        }
        mdb_cursor_close(c);
    }
    mvcc_read_end(&t);
    return n;
}

static void grant(struct fx *f, int64_t id, int64_t ttl)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc_lease_grant(&t, id, ttl), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
}

static int lease_sum(void *ud, int64_t id, int64_t ttl)
{
    *(int64_t *)ud += id * 1000 + ttl;
    return 0;
}

static int64_t leases(struct fx *f)
{
    struct mvcc_txn t;
    int64_t sum = 0;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_leases(&t, lease_sum, &sum), 0);
    mvcc_read_end(&t);
    return sum;
}

/* Runs the pass to its end (bounded). */
static void run_pass(struct fx *f, int per_step)
{
    int more = 1, steps = 0;
    while (more == 1 && steps++ < 100000) {
        struct mvcc_txn t;
        assert_int_equal(mvcc_write_begin(f->m, &t), 0);
        more = mvcc_seal_step(&t, per_step);
        assert_true(more >= 0);
        assert_int_equal(mvcc_write_commit(&t), 0);
    }
    assert_int_equal(more, 2);
    assert_int_equal(mvcc_seal_pending(f->m), 0);
}

static void sealed_records_read_plain(void **state)
{
    struct fx *f = *state;
    assert_int_equal(install(f, K1), 0);
    PUT("a", "SECRET-ALPHA");
    PUT("b", "SECRET-BETA");
    PUT("a", "SECRET-GAMMA");
    DEL("b", "");
    grant(f, 7, 60);
    assert_int_equal(raw_count(f, f->m->kv, "SECRET"), 0);
    assert_int_equal(not_under(f, "k1"), 0);
    assert_string_equal(KVS(RANGE("a", "\0")), "a=SECRET-GAMMA:2/4/2");
    assert_string_equal(KVS(RANGE_AT("\0", "\0", 3)),
                        "a=SECRET-ALPHA:2/2/1 b=SECRET-BETA:3/3/1");
    assert_int_equal(leases(f), 7060);
    /* Restart with the key: the same. */
    fx_reopen(f);
    assert_int_equal(install(f, K1), 0);
    assert_string_equal(KVS(RANGE_AT("\0", "\0", 3)),
                        "a=SECRET-ALPHA:2/2/1 b=SECRET-BETA:3/3/1");
    assert_int_equal(leases(f), 7060);
}

/* Rewrites the raw value of kv record @rev (sub 0). */
static void raw_kv_put(struct fx *f, int64_t rev, const MDB_val *v)
{
    struct mvcc_txn t;
    uint8_t kb[MVCC_IDXLEN];
    struct mvcc_rev r = {rev, 0, 0, 0, 0, 0};
    mvcc__rev_encode(kb, r);
    MDB_val k = {MVCC_REVLEN, kb}, val = *v;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mdb_put(t.txn, f->m->kv, &k, &val, 0), 0);
    assert_int_equal(mvcc_write_commit(&t), 0);
}

static void raw_kv_get(struct fx *f, int64_t rev, MDB_val *out)
{
    struct mvcc_txn t;
    uint8_t kb[MVCC_IDXLEN];
    struct mvcc_rev r = {rev, 0, 0, 0, 0, 0};
    mvcc__rev_encode(kb, r);
    MDB_val k = {MVCC_REVLEN, kb}, v;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mdb_get(t.txn, f->m->kv, &k, &v), 0);
    out->mv_size = v.mv_size;
    out->mv_data = arena_memdup(&f->a, v.mv_data, v.mv_size);
    mvcc_read_end(&t);
}

static int range_rc(struct fx *f, const char *key, int64_t rev)
{
    Etcdserverpb__RangeRequest r;
    Etcdserverpb__RangeResponse *resp;
    etcdserverpb__range_request__init(&r);
    r.key = bs(key);
    r.revision = rev;
    return do_range(f, &r, &resp);
}

static void tampered_records_rejected(void **state)
{
    struct fx *f = *state;
    MDB_val v2, v3, v;
    assert_int_equal(install(f, K1), 0);
    PUT("x", "VALUE-TWO");   /* rev 2 */
    PUT("y", "VALUE-THREE"); /* rev 3 */
    raw_kv_get(f, 2, &v2);
    raw_kv_get(f, 3, &v3);
    /* Swapped between revisions: each is bound to its own. */
    raw_kv_put(f, 2, &v3);
    raw_kv_put(f, 3, &v2);
    assert_int_equal(range_rc(f, "x", 0), CAIRN_ESTORE);
    assert_int_equal(range_rc(f, "y", 0), CAIRN_ESTORE);
    raw_kv_put(f, 2, &v2);
    raw_kv_put(f, 3, &v3);
    assert_int_equal(range_rc(f, "x", 0), 0);
    /* One flipped byte in the ciphertext, then in the plain header (the
     * link is bound too). */
    v.mv_size = v3.mv_size;
    v.mv_data = arena_memdup(&f->a, v3.mv_data, v3.mv_size);
    ((uint8_t *)v.mv_data)[v.mv_size - 20] ^= 0x40;
    raw_kv_put(f, 3, &v);
    assert_int_equal(range_rc(f, "y", 0), CAIRN_ESTORE);
    v.mv_data = arena_memdup(&f->a, v3.mv_data, v3.mv_size);
    ((uint8_t *)v.mv_data)[0] ^= MVCC_TOMBSTONE;
    raw_kv_put(f, 3, &v);
    assert_int_equal(range_rc(f, "y", 0), CAIRN_ESTORE);
    raw_kv_put(f, 3, &v3);
    assert_int_equal(range_rc(f, "y", 0), 0);
    /* Sealed databases (leases, auth): values swapped between keys. */
    grant(f, 1, 10);
    grant(f, 2, 20);
    assert_int_equal(leases(f), 1010 + 2020);
    struct mvcc_txn t;
    uint8_t k1[8], k2[8];
    mvcc__put_be64(k1, 1);
    mvcc__put_be64(k2, 2);
    MDB_val a = {8, k1}, b = {8, k2}, va, vb, plain;
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    assert_int_equal(mvcc__sealed_get(&t, f->m->lease, &a, NULL, &plain), 0);
    assert_int_equal(mvcc__get_be64(plain.mv_data), 10);
    assert_int_equal(mdb_get(t.txn, f->m->lease, &a, &va), 0);
    assert_int_equal(mdb_get(t.txn, f->m->lease, &b, &vb), 0);
    va.mv_data = arena_memdup(&f->a, va.mv_data, va.mv_size);
    vb.mv_data = arena_memdup(&f->a, vb.mv_data, vb.mv_size);
    assert_int_equal(mdb_put(t.txn, f->m->lease, &a, &vb, 0), 0);
    assert_int_equal(mdb_put(t.txn, f->m->lease, &b, &va, 0), 0);
    assert_int_equal(mvcc__sealed_get(&t, f->m->lease, &a, NULL, &plain),
                     CAIRN_ESTORE);
    assert_int_equal(mvcc_leases(&t, lease_sum, &(int64_t){0}), CAIRN_ESTORE);
    mvcc_write_abort(&t);
}

static void wrong_or_missing_key_refused(void **state)
{
    struct fx *f = *state;
    char err[256];
    int rotated;
    assert_int_equal(install(f, K1), 0);
    PUT("a", "1");
    fx_reopen(f);
    assert_int_equal(mvcc_seal_install(f->m, NULL, &rotated, err, sizeof err),
                     -ENOKEY);
    assert_non_null(strstr(err, "\"k1\""));
    assert_int_equal(install(f, K2), -ENOKEY);
    assert_int_equal(install(f, K1_OTHER), -EKEYREJECTED);
    assert_int_equal(install(f, K2 K1_OTHER), -EKEYREJECTED);
    /* Without a ring nothing opens: no garbage either. */
    assert_int_equal(range_rc(f, "a", 0), CAIRN_ESTORE);
    assert_int_equal(install(f, K1), 0);
    assert_int_equal(range_rc(f, "a", 0), 0);
}

static void plain_store_gets_encrypted(void **state)
{
    struct fx *f = *state;
    char name[16];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "key%02d", i);
        put_kv(f, bs(name), B("PLAINVALUE"));
    }
    grant(f, 9, 30);
    DEL("key00", "");
    assert_int_equal(raw_count(f, f->m->kv, "PLAINVALUE"), 50);
    char *before = snapshot(f, 0);
    /* Key given: old records still read, new ones sealed. */
    assert_int_equal(install(f, K1), 0);
    assert_true(mvcc_seal_pending(f->m) > 0);
    PUT("new", "NEWVALUE");
    assert_int_equal(raw_count(f, f->m->kv, "NEWVALUE"), 0);
    assert_string_equal(KVS(RANGE("key07", "")), "key07=PLAINVALUE:9/9/1");
    run_pass(f, 7);
    assert_int_equal(raw_count(f, f->m->kv, "PLAINVALUE"), 0);
    assert_int_equal(not_under(f, "k1"), 0);
    assert_int_equal(leases(f), 9030);
    DEL("new", "");
    assert_string_equal(snapshot(f, 0), before);
}

static void rotation_then_old_key_removed(void **state)
{
    struct fx *f = *state;
    char name[16];
    assert_int_equal(install(f, K1), 0);
    for (int i = 0; i < 40; i++) {
        snprintf(name, sizeof name, "r%02d", i);
        put_kv(f, bs(name), B("ROTATE-ME"));
    }
    grant(f, 3, 10);
    char *before = snapshot(f, 0);
    assert_int_equal(install(f, K2 K1), 0);
    PUT("during", "x");
    /* A key still needed cannot go. */
    fx_reopen(f);
    assert_int_equal(install(f, K2), -ENOKEY);
    assert_int_equal(install(f, K2 K1), 0);
    assert_true(mvcc_seal_pending(f->m) > 0);
    run_pass(f, 5);
    assert_int_equal(not_under(f, "k2"), 0);
    fx_reopen(f);
    assert_int_equal(install(f, K2), 0);
    DEL("during", "");
    assert_string_equal(snapshot(f, 0), before);
    assert_int_equal(leases(f), 3010);
    /* Once gone from the store, k1 is no longer accepted alone. */
    fx_reopen(f);
    assert_int_equal(install(f, K1), -ENOKEY);
}

static uint32_t hash_kv(struct fx *f)
{
    struct mvcc_txn t;
    uint32_t h;
    int64_t crev;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_hash_kv(&t, 0, &h, &crev), 0);
    mvcc_read_end(&t);
    return h;
}

static uint32_t hash_all(struct fx *f)
{
    struct mvcc_txn t;
    uint32_t h;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_hash(&t, &h), 0);
    mvcc_read_end(&t);
    return h;
}

static void hashes_over_plaintext(void **state)
{
    struct fx *f = *state;
    uint32_t hkv[2], hall[2];
    for (int enc = 0; enc < 2; enc++) {
        if (enc) {
            fx_teardown(state);
            assert_int_equal(fx_setup(state), 0);
            f = *state;
            assert_int_equal(install(f, K1), 0);
        }
        PUT("a", "1");
        PUT("b", "2");
        PUT("a", "3");
        DEL("b", "");
        grant(f, 5, 50);
        fx_compact(f, 3, 1);
        hkv[enc] = hash_kv(f);
        hall[enc] = hash_all(f);
    }
    assert_int_equal(hkv[0], hkv[1]);
    assert_int_equal(hall[0], hall[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keyfile_formats),
        cmocka_unit_test(keyfile_mode),
        cmocka_unit_test(seal_open_and_tamper),
        cmocka_unit_test_setup_teardown(sealed_records_read_plain, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(tampered_records_rejected, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(wrong_or_missing_key_refused, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(plain_store_gets_encrypted, fx_setup,
                                        fx_teardown),
        cmocka_unit_test_setup_teardown(rotation_then_old_key_removed,
                                        fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(hashes_over_plaintext, fx_setup,
                                        fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
