/* src/auth: the permission cache (merged ranges, prefixes, open ends),
 * token parsing (simple and JWT), bcrypt, the limiter, and applying auth
 * commands to a store (etcd's root rules and revision bumps). */
#include "mvcc_fixture.h"

#include <time.h>

#include "apply/apply.h"
#include "auth/auth.h"
#include "mvcc/auth.h"

#define K(s) (const uint8_t *)(s), strlen(s)
#define S(s) (s), strlen(s)
#define NOKEYEND NULL, 0
#define FROMKEY (const uint8_t *)"", 1 /* range_end "\0" */

#define READ AUTHPB__PERMISSION__TYPE__READ
#define WRITE AUTHPB__PERMISSION__TYPE__WRITE
#define READWRITE AUTHPB__PERMISSION__TYPE__READWRITE

static void perms_prefix_and_points(void **state)
{
    (void)state;
    struct auth_perms *p = auth_perms_new();
    auth_perms_add(p, READ, K("/a/"), K("/a0"));     /* prefix /a/ */
    auth_perms_add(p, READWRITE, K("/k"), NOKEYEND);    /* the single key /k */
    auth_perms_done(p);
    assert_true(auth_perms_allows(p, K("/a/x"), NOKEYEND, AUTH_READ));
    assert_true(auth_perms_allows(p, K("/a/"), K("/a0"), AUTH_READ));
    assert_true(auth_perms_allows(p, K("/a/b"), K("/a/c"), AUTH_READ));
    assert_false(auth_perms_allows(p, K("/a/"), K("/b"), AUTH_READ));
    assert_false(auth_perms_allows(p, K("/a"), NOKEYEND, AUTH_READ));
    assert_false(auth_perms_allows(p, K("/a/x"), NOKEYEND, AUTH_WRITE));
    assert_true(auth_perms_allows(p, K("/k"), NOKEYEND, AUTH_WRITE));
    assert_false(auth_perms_allows(p, K("/k0"), NOKEYEND, AUTH_READ));
    /* [/k, /k\0) is exactly the key */
    assert_true(auth_perms_allows(p, K("/k"), (const uint8_t *)"/k\0", 3, AUTH_READ));
    assert_false(auth_perms_allows(p, K("/k"), K("/l"), AUTH_READ));
    assert_false(auth_perms_allows(p, K("/a/"), FROMKEY, AUTH_READ));
    auth_perms_free(p);
}

static void perms_merge_adjacent_and_open(void **state)
{
    (void)state;
    struct auth_perms *p = auth_perms_new();
    auth_perms_add(p, WRITE, K("b"), K("d"));
    auth_perms_add(p, WRITE, K("a"), K("b")); /* touches [b, d) */
    auth_perms_add(p, WRITE, K("x"), FROMKEY); /* x to the end */
    auth_perms_add(p, WRITE, K("c"), K("e")); /* overlaps */
    auth_perms_done(p);
    assert_true(auth_perms_allows(p, K("a"), K("e"), AUTH_WRITE));
    assert_false(auth_perms_allows(p, K("a"), K("e\x01"), AUTH_WRITE));
    assert_false(auth_perms_allows(p, K("e"), NOKEYEND, AUTH_WRITE));
    assert_true(auth_perms_allows(p, K("x"), FROMKEY, AUTH_WRITE));
    assert_true(auth_perms_allows(p, K("zzz"), NOKEYEND, AUTH_WRITE));
    assert_true(auth_perms_allows(p, K("y"), K("z"), AUTH_WRITE));
    assert_false(auth_perms_allows(p, K("w"), FROMKEY, AUTH_WRITE));
    assert_false(auth_perms_allows(p, K("a"), NOKEYEND, AUTH_READ));
    auth_perms_free(p);
}

static void perms_empty(void **state)
{
    (void)state;
    struct auth_perms *p = auth_perms_new();
    auth_perms_done(p);
    assert_false(auth_perms_allows(p, K("a"), NOKEYEND, AUTH_READ));
    assert_false(auth_perms_allows(p, K("a"), FROMKEY, AUTH_WRITE));
    auth_perms_free(p);
}

static void simple_token_syntax(void **state)
{
    uint64_t ix;
    (void)state;
    assert_int_equal(auth_simple_token_parse(S("abcdefghijklmnop.12"), &ix), 0);
    assert_int_equal(ix, 12);
    assert_int_equal(auth_simple_token_parse(S(".7"), &ix), 0);
    assert_int_equal(auth_simple_token_parse(S("abc.+7"), &ix), 0);
    assert_int_not_equal(auth_simple_token_parse(S("abc"), &ix), 0);
    assert_int_not_equal(auth_simple_token_parse(S("abc."), &ix), 0);
    assert_int_not_equal(auth_simple_token_parse(S("a.b.1"), &ix), 0);
    assert_int_not_equal(auth_simple_token_parse(S("a.1x"), &ix), 0);
    assert_int_not_equal(auth_simple_token_parse(S("a.99999999999999999999999"), &ix), 0);
}

static void bcrypt_round_trip(void **state)
{
    char h[128];
    (void)state;
    assert_int_equal(auth_bcrypt_hash(S("secret"), 4, h), 0);
    assert_memory_equal(h, "$2b$04$", 7);
    assert_true(auth_bcrypt_check(S("secret"), h));
    assert_false(auth_bcrypt_check(S("secreT"), h));
    /* Go's bcrypt (etcd) writes $2a$: the same hash under that prefix
     * verifies (etcd's own hashes: test_auth.py's snapshot round trip) */
    h[2] = 'a';
    assert_true(auth_bcrypt_check(S("secret"), h));
    assert_false(auth_bcrypt_check(S("pw"), "plain"));
    assert_false(auth_bcrypt_check(S("pw"), ""));
}

static void limiter(void **state)
{
    (void)state;
    const char *u = "mallory";
    for (int i = 0; i < 5; i++) {
        assert_int_equal(auth_limit_check(u, 7, 1000), 0);
        auth_limit_result(u, 7, 0, 1000);
    }
    assert_int_equal(auth_limit_check(u, 7, 1000), 0);
    auth_limit_result(u, 7, 0, 1000); /* 6th failure: 250 ms */
    assert_int_equal(auth_limit_check(u, 7, 1100), CAIRN_EAUTHFAILED);
    assert_int_equal(auth_limit_check(u, 7, 1300), 0);
    auth_limit_result(u, 7, 0, 1300); /* 500 ms */
    assert_int_equal(auth_limit_check(u, 7, 1700), CAIRN_EAUTHFAILED);
    assert_int_equal(auth_limit_check("alice", 5, 1700), 0);
    auth_limit_result(u, 7, 1, 1900);
    assert_int_equal(auth_limit_check(u, 7, 1900), 0);
}

static void write_file(const char *path, const char *s)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(s, f);
    fclose(f);
}

static void jwt_hs256_sign_verify(void **state)
{
    struct auth_jwt *j;
    struct arena a;
    char err[128], opts[256], *tok, *user;
    size_t ulen;
    uint64_t rev;
    (void)state;
    write_file("/tmp/cairn-unit-jwt-secret", "0123456789abcdef");
    assert_int_not_equal(auth_jwt_new("sign-method=HS256", &j, err, sizeof err), 0);
    assert_string_equal(err, "auth: missing key data");
    assert_int_not_equal(auth_jwt_new("sign-method=XX256,priv-key=/tmp/cairn-unit-jwt-secret",
                                      &j, err, sizeof err), 0);
    assert_int_not_equal(auth_jwt_new("ttl=1s,ttl=2s", &j, err, sizeof err), 0);
    assert_string_equal(err, "auth: invalid auth options");
    snprintf(opts, sizeof opts, "sign-method=HS256,priv-key=%s,ttl=10s",
             "/tmp/cairn-unit-jwt-secret");
    assert_int_equal(auth_jwt_new(opts, &j, err, sizeof err), 0);
    arena_init(&a);
    assert_int_equal(auth_jwt_sign(j, S("al<i>ce\""), 7, 1000, &tok), 0);
    assert_int_equal(auth_jwt_verify(j, tok, strlen(tok), 1005, &a, &user, &ulen, &rev), 0);
    assert_int_equal(ulen, 8);
    assert_memory_equal(user, "al<i>ce\"", 8);
    assert_int_equal(rev, 7);
    /* exp = 1010: valid through 1010, not after */
    assert_int_equal(auth_jwt_verify(j, tok, strlen(tok), 1010, &a, &user, &ulen, &rev), 0);
    assert_int_equal(auth_jwt_verify(j, tok, strlen(tok), 1011, &a, &user, &ulen, &rev),
                     CAIRN_EINVALIDAUTHTOKEN);
    tok[strlen(tok) - 2] ^= 1; /* signature */
    assert_int_equal(auth_jwt_verify(j, tok, strlen(tok), 1005, &a, &user, &ulen, &rev),
                     CAIRN_EINVALIDAUTHTOKEN);
    assert_int_equal(auth_jwt_verify(j, S("a.b"), 1005, &a, &user, &ulen, &rev),
                     CAIRN_EINVALIDAUTHTOKEN);
    free(tok);
    arena_free(&a);
    auth_jwt_free(j);
    remove("/tmp/cairn-unit-jwt-secret");
}

/* ---- applying auth commands ---- */

static int apply_msg(struct fx *f, int op, const ProtobufCMessage *m)
{
    struct mvcc_txn t;
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = arena_alloc(&f->a, n + 1);
    protobuf_c_message_pack(m, b);
    assert_int_equal(mvcc_write_begin(f->m, &t), 0);
    int rc = auth_apply(&t, op, b, n, &f->a);
    mvcc_cmd_end(&t);
    if (rc == 0)
        assert_int_equal(mvcc_write_commit(&t), 0);
    else
        mvcc_write_abort(&t);
    return rc;
}

static uint64_t revision(struct fx *f, int *enabled)
{
    struct mvcc_txn t;
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    uint64_t r = mvcc_auth_revision(&t);
    *enabled = mvcc_auth_enabled(&t);
    mvcc_read_end(&t);
    return r;
}

static void apply_root_rules(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__AuthEnableRequest en = ETCDSERVERPB__AUTH_ENABLE_REQUEST__INIT;
    Etcdserverpb__AuthUserAddRequest ua = ETCDSERVERPB__AUTH_USER_ADD_REQUEST__INIT;
    Etcdserverpb__AuthUserGrantRoleRequest gr = ETCDSERVERPB__AUTH_USER_GRANT_ROLE_REQUEST__INIT;
    Etcdserverpb__AuthUserRevokeRoleRequest rr = ETCDSERVERPB__AUTH_USER_REVOKE_ROLE_REQUEST__INIT;
    Etcdserverpb__AuthUserDeleteRequest ud = ETCDSERVERPB__AUTH_USER_DELETE_REQUEST__INIT;
    Etcdserverpb__AuthRoleDeleteRequest rd = ETCDSERVERPB__AUTH_ROLE_DELETE_REQUEST__INIT;
    Etcdserverpb__AuthDisableRequest dis = ETCDSERVERPB__AUTH_DISABLE_REQUEST__INIT;
    int enabled;

    assert_int_equal(apply_msg(f, APPLY_AUTH_ENABLE, &en.base), CAIRN_EROOTUSERNOTEXIST);
    ua.name = "root";
    ua.hashedpassword = "$2b$04$xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_ADD, &ua.base), 0);
    assert_int_equal(revision(f, &enabled), 2); /* 1 is the initial one */
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_ADD, &ua.base), CAIRN_EUSEREXISTS);
    assert_int_equal(apply_msg(f, APPLY_AUTH_ENABLE, &en.base), CAIRN_EROOTROLENOTEXIST);
    gr.user = "root";
    gr.role = "root"; /* root needs no RoleAdd */
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_GRANT_ROLE, &gr.base), 0);
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_GRANT_ROLE, &gr.base), 0);
    assert_int_equal(revision(f, &enabled), 3); /* the repeat changes nothing */
    assert_int_equal(apply_msg(f, APPLY_AUTH_ENABLE, &en.base), 0);
    assert_int_equal(revision(f, &enabled), 3); /* enable keeps the revision */
    assert_true(enabled);
    rr.name = "root";
    rr.role = "root";
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_REVOKE_ROLE, &rr.base), CAIRN_EINVALIDAUTHMGMT);
    ud.name = "root";
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_DELETE, &ud.base), CAIRN_EINVALIDAUTHMGMT);
    rd.role = "root";
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_DELETE, &rd.base), CAIRN_EINVALIDAUTHMGMT);
    assert_int_equal(apply_msg(f, APPLY_AUTH_DISABLE, &dis.base), 0);
    assert_int_equal(revision(f, &enabled), 4);
    assert_false(enabled);
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_REVOKE_ROLE, &rr.base), 0);
    assert_int_equal(apply_msg(f, APPLY_AUTH_USER_REVOKE_ROLE, &rr.base), CAIRN_EROLENOTGRANTED);
}

static void apply_role_permissions(void **state)
{
    struct fx *f = *state;
    Etcdserverpb__AuthRoleAddRequest ra = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
    Etcdserverpb__AuthRoleGrantPermissionRequest gp =
        ETCDSERVERPB__AUTH_ROLE_GRANT_PERMISSION_REQUEST__INIT;
    Etcdserverpb__AuthRoleRevokePermissionRequest rp =
        ETCDSERVERPB__AUTH_ROLE_REVOKE_PERMISSION_REQUEST__INIT;
    Authpb__Permission p = AUTHPB__PERMISSION__INIT;
    struct mvcc_txn t;
    uint8_t *v;
    size_t n;

    ra.name = "";
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_ADD, &ra.base), CAIRN_EROLEEMPTY);
    ra.name = "r";
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_ADD, &ra.base), 0);
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_ADD, &ra.base), CAIRN_EROLEEXISTS);
    gp.name = "r";
    gp.perm = &p;
    p.key.data = (uint8_t *)"b";
    p.key.len = 1;
    p.permtype = READ;
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_GRANT_PERMISSION, &gp.base), 0);
    p.key.data = (uint8_t *)"a";
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_GRANT_PERMISSION, &gp.base), 0);
    p.permtype = WRITE; /* same key and end: the type is updated */
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_GRANT_PERMISSION, &gp.base), 0);
    assert_int_equal(mvcc_read_begin(f->m, &t), 0);
    assert_int_equal(mvcc_auth_get(&t, MVCC_AUTH_ROLE, "r", 1, &f->a, &v, &n), 0);
    mvcc_read_end(&t);
    Authpb__Role *role = authpb__role__unpack(&f->a.pb, n, v);
    assert_non_null(role);
    assert_int_equal(role->n_keypermission, 2);
    assert_memory_equal(role->keypermission[0]->key.data, "a", 1); /* key order */
    assert_int_equal(role->keypermission[0]->permtype, WRITE);
    rp.role = "r";
    rp.key = p.key;
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_REVOKE_PERMISSION, &rp.base), 0);
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_REVOKE_PERMISSION, &rp.base),
                     CAIRN_EPERMNOTGRANTED);
    rp.role = "nope";
    assert_int_equal(apply_msg(f, APPLY_AUTH_ROLE_REVOKE_PERMISSION, &rp.base),
                     CAIRN_EROLENOTFOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(perms_prefix_and_points),
        cmocka_unit_test(perms_merge_adjacent_and_open),
        cmocka_unit_test(perms_empty),
        cmocka_unit_test(simple_token_syntax),
        cmocka_unit_test(bcrypt_round_trip),
        cmocka_unit_test(limiter),
        cmocka_unit_test(jwt_hs256_sign_verify),
        cmocka_unit_test_setup_teardown(apply_root_rules, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(apply_role_permissions, fx_setup, fx_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
