/* Applying the auth admin commands: etcd's authStore mutations (auth/
 * store.go) on the apply thread, inside the batch's write txn. Every
 * change that etcd commits with commitRevision bumps the auth revision
 * here too; AuthEnable does not (etcd's does not either). */
#include <string.h>

#include "apply/apply.h"
#include "auth/auth.h"
#include "core/err.h"
#include "mvcc/auth.h"

#define ROOT "root"

static uint64_t cur_rev(struct mvcc_txn *t)
{
    uint64_t r = mvcc_auth_revision(t);
    return r ? r : 1; /* etcd's NewAuthStore commits revision 1 */
}

static int bump_rev(struct mvcc_txn *t)
{
    return mvcc_auth_set_revision(t, cur_rev(t) + 1);
}

/* 0 and @out, 1 when absent, or an error. */
static int get_user(struct mvcc_txn *t, const char *name, struct arena *a,
                    Authpb__User **out)
{
    uint8_t *v;
    size_t n;
    int rc = mvcc_auth_get(t, MVCC_AUTH_USER, name, strlen(name), a, &v, &n);
    if (rc != 0)
        return rc;
    *out = authpb__user__unpack(&a->pb, n, v);
    return *out == NULL ? CAIRN_ESTORE : 0;
}

static int get_role(struct mvcc_txn *t, const char *name, struct arena *a,
                    Authpb__Role **out)
{
    uint8_t *v;
    size_t n;
    int rc = mvcc_auth_get(t, MVCC_AUTH_ROLE, name, strlen(name), a, &v, &n);
    if (rc != 0)
        return rc;
    *out = authpb__role__unpack(&a->pb, n, v);
    return *out == NULL ? CAIRN_ESTORE : 0;
}

static int put_msg(struct mvcc_txn *t, enum mvcc_auth_kind k,
                   ProtobufCBinaryData name, const ProtobufCMessage *m,
                   struct arena *a)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = arena_alloc(a, n + 1);
    protobuf_c_message_pack(m, b);
    return mvcc_auth_put(t, k, (const char *)name.data, name.len, b, n);
}

static int has_role(const Authpb__User *u, const char *role)
{
    for (size_t i = 0; i < u->n_roles; i++)
        if (strcmp(u->roles[i], role) == 0)
            return 1;
    return 0;
}

static ProtobufCBinaryData bin(const char *s)
{
    ProtobufCBinaryData b = {strlen(s), (uint8_t *)s};
    return b;
}

static int enable(struct mvcc_txn *t, struct arena *a)
{
    Authpb__User *u;
    int rc;
    if (mvcc_auth_enabled(t))
        return 0;
    if ((rc = get_user(t, ROOT, a, &u)) != 0)
        return rc == 1 ? CAIRN_EROOTUSERNOTEXIST : rc;
    if (!has_role(u, ROOT))
        return CAIRN_EROOTROLENOTEXIST;
    if ((rc = mvcc_auth_set_enabled(t, 1)) != 0)
        return rc;
    /* etcd keeps the revision; a fresh store gets its initial 1 written */
    return mvcc_auth_revision(t) ? 0 : mvcc_auth_set_revision(t, 1);
}

static int disable(struct mvcc_txn *t)
{
    int rc;
    if (!mvcc_auth_enabled(t))
        return 0;
    if ((rc = mvcc_auth_set_enabled(t, 0)) != 0)
        return rc;
    return bump_rev(t);
}

static int user_add(struct mvcc_txn *t, const Etcdserverpb__AuthUserAddRequest *r,
                    struct arena *a)
{
    Authpb__User u = AUTHPB__USER__INIT, *old;
    Authpb__UserAddOptions opts = AUTHPB__USER_ADD_OPTIONS__INIT;
    int rc;
    if (r->name[0] == 0)
        return CAIRN_EUSEREMPTY;
    if ((rc = get_user(t, r->name, a, &old)) != 1)
        return rc == 0 ? CAIRN_EUSEREXISTS : rc;
    u.name = bin(r->name);
    u.options = r->options != NULL ? r->options : &opts;
    if (!u.options->no_password)
        u.password = bin(r->hashedpassword);
    if ((rc = put_msg(t, MVCC_AUTH_USER, u.name, &u.base, a)) != 0)
        return rc;
    return bump_rev(t);
}

static int user_delete(struct mvcc_txn *t, const char *name)
{
    int rc;
    if (mvcc_auth_enabled(t) && strcmp(name, ROOT) == 0)
        return CAIRN_EINVALIDAUTHMGMT;
    if ((rc = mvcc_auth_del(t, MVCC_AUTH_USER, name, strlen(name))) != 0)
        return rc == 1 ? CAIRN_EUSERNOTFOUND : rc;
    return bump_rev(t);
}

static int user_passwd(struct mvcc_txn *t,
                       const Etcdserverpb__AuthUserChangePasswordRequest *r,
                       struct arena *a)
{
    Authpb__User *u;
    int rc;
    if ((rc = get_user(t, r->name, a, &u)) != 0)
        return rc == 1 ? CAIRN_EUSERNOTFOUND : rc;
    u->password = bin(r->hashedpassword); /* options kept, as etcd */
    if ((rc = put_msg(t, MVCC_AUTH_USER, u->name, &u->base, a)) != 0)
        return rc;
    return bump_rev(t);
}

static int user_grant(struct mvcc_txn *t,
                      const Etcdserverpb__AuthUserGrantRoleRequest *r,
                      struct arena *a)
{
    Authpb__User *u;
    Authpb__Role *role;
    size_t i;
    int rc;
    if ((rc = get_user(t, r->user, a, &u)) != 0)
        return rc == 1 ? CAIRN_EUSERNOTFOUND : rc;
    if (strcmp(r->role, ROOT) != 0 && (rc = get_role(t, r->role, a, &role)) != 0)
        return rc == 1 ? CAIRN_EROLENOTFOUND : rc;
    if (has_role(u, r->role))
        return 0; /* etcd ignores it, without a new revision */
    char **roles = arena_alloc(a, (u->n_roles + 1) * sizeof *roles);
    for (i = 0; i < u->n_roles && strcmp(u->roles[i], r->role) < 0; i++)
        roles[i] = u->roles[i];
    roles[i] = r->role;
    for (; i < u->n_roles; i++)
        roles[i + 1] = u->roles[i];
    u->roles = roles;
    u->n_roles++;
    if ((rc = put_msg(t, MVCC_AUTH_USER, u->name, &u->base, a)) != 0)
        return rc;
    return bump_rev(t);
}

/* Drops @role from @u; returns 1 when it was there. */
static int drop_role(Authpb__User *u, const char *role)
{
    size_t j = 0;
    for (size_t i = 0; i < u->n_roles; i++)
        if (strcmp(u->roles[i], role) != 0)
            u->roles[j++] = u->roles[i];
    int dropped = j != u->n_roles;
    u->n_roles = j;
    return dropped;
}

static int user_revoke(struct mvcc_txn *t,
                       const Etcdserverpb__AuthUserRevokeRoleRequest *r,
                       struct arena *a)
{
    Authpb__User *u;
    int rc;
    if (mvcc_auth_enabled(t) && strcmp(r->name, ROOT) == 0 &&
        strcmp(r->role, ROOT) == 0)
        return CAIRN_EINVALIDAUTHMGMT;
    if ((rc = get_user(t, r->name, a, &u)) != 0)
        return rc == 1 ? CAIRN_EUSERNOTFOUND : rc;
    if (!drop_role(u, r->role))
        return CAIRN_EROLENOTGRANTED;
    if ((rc = put_msg(t, MVCC_AUTH_USER, u->name, &u->base, a)) != 0)
        return rc;
    return bump_rev(t);
}

static int role_add(struct mvcc_txn *t, const char *name, struct arena *a)
{
    Authpb__Role role = AUTHPB__ROLE__INIT, *old;
    int rc;
    if (name[0] == 0)
        return CAIRN_EROLEEMPTY;
    if ((rc = get_role(t, name, a, &old)) != 1)
        return rc == 0 ? CAIRN_EROLEEXISTS : rc;
    role.name = bin(name);
    if ((rc = put_msg(t, MVCC_AUTH_ROLE, role.name, &role.base, a)) != 0)
        return rc;
    return bump_rev(t);
}

struct role_del {
    struct mvcc_txn *t;
    struct arena *a;
    const char *role;
    /* users to rewrite: collected first, the cursor must not see puts */
    Authpb__User **users;
    size_t n, cap;
};

static int collect_user(void *ud, const uint8_t *name, size_t nlen,
                        const uint8_t *val, size_t vlen)
{
    struct role_del *d = ud;
    Authpb__User *u = authpb__user__unpack(&d->a->pb, vlen, val);
    (void)name;
    (void)nlen;
    if (u == NULL)
        return CAIRN_ESTORE;
    if (!drop_role(u, d->role))
        return 0;
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        Authpb__User **nu = arena_alloc(d->a, cap * sizeof *nu);
        if (d->n)
            memcpy(nu, d->users, d->n * sizeof *nu);
        d->users = nu;
        d->cap = cap;
    }
    d->users[d->n++] = u;
    return 0;
}

static int role_delete(struct mvcc_txn *t, const char *name, struct arena *a)
{
    struct role_del d = {t, a, name, NULL, 0, 0};
    int rc;
    if (mvcc_auth_enabled(t) && strcmp(name, ROOT) == 0)
        return CAIRN_EINVALIDAUTHMGMT;
    if ((rc = mvcc_auth_del(t, MVCC_AUTH_ROLE, name, strlen(name))) != 0)
        return rc == 1 ? CAIRN_EROLENOTFOUND : rc;
    if ((rc = mvcc_auth_each(t, MVCC_AUTH_USER, collect_user, &d)) != 0)
        return rc;
    for (size_t i = 0; i < d.n; i++)
        if ((rc = put_msg(t, MVCC_AUTH_USER, d.users[i]->name,
                          &d.users[i]->base, a)) != 0)
            return rc;
    return bump_rev(t);
}

static int bin_cmp(ProtobufCBinaryData x, ProtobufCBinaryData y)
{
    size_t n = x.len < y.len ? x.len : y.len;
    int c = n ? memcmp(x.data, y.data, n) : 0;
    return c != 0 ? c : (x.len > y.len) - (x.len < y.len);
}

static int role_grant(struct mvcc_txn *t,
                      const Etcdserverpb__AuthRoleGrantPermissionRequest *r,
                      struct arena *a)
{
    Authpb__Role *role;
    Authpb__Permission empty = AUTHPB__PERMISSION__INIT;
    const Authpb__Permission *p = r->perm != NULL ? r->perm : &empty;
    size_t i;
    int rc;
    if ((rc = get_role(t, r->name, a, &role)) != 0)
        return rc == 1 ? CAIRN_EROLENOTFOUND : rc;
    /* etcd: the first permission whose key is >= the new one's; same key
     * and range_end updates its type, else the new one is inserted in key
     * order */
    for (i = 0; i < role->n_keypermission &&
                bin_cmp(role->keypermission[i]->key, p->key) < 0;
         i++)
        ;
    if (i < role->n_keypermission &&
        bin_cmp(role->keypermission[i]->key, p->key) == 0 &&
        bin_cmp(role->keypermission[i]->range_end, p->range_end) == 0) {
        role->keypermission[i]->permtype = p->permtype;
    } else {
        size_t n = role->n_keypermission;
        Authpb__Permission **v = arena_alloc(a, (n + 1) * sizeof *v);
        Authpb__Permission *np = arena_alloc(a, sizeof *np);
        *np = empty;
        np->permtype = p->permtype;
        np->key = p->key;
        np->range_end = p->range_end;
        if (i)
            memcpy(v, role->keypermission, i * sizeof *v);
        v[i] = np;
        if (n > i)
            memcpy(v + i + 1, role->keypermission + i, (n - i) * sizeof *v);
        role->keypermission = v;
        role->n_keypermission = n + 1;
    }
    if ((rc = put_msg(t, MVCC_AUTH_ROLE, role->name, &role->base, a)) != 0)
        return rc;
    return bump_rev(t);
}

static int role_revoke(struct mvcc_txn *t,
                       const Etcdserverpb__AuthRoleRevokePermissionRequest *r,
                       struct arena *a)
{
    Authpb__Role *role;
    size_t j = 0;
    int rc;
    if ((rc = get_role(t, r->role, a, &role)) != 0)
        return rc == 1 ? CAIRN_EROLENOTFOUND : rc;
    for (size_t i = 0; i < role->n_keypermission; i++) {
        Authpb__Permission *p = role->keypermission[i];
        if (bin_cmp(p->key, r->key) != 0 || bin_cmp(p->range_end, r->range_end) != 0)
            role->keypermission[j++] = p;
    }
    if (j == role->n_keypermission)
        return CAIRN_EPERMNOTGRANTED;
    role->n_keypermission = j;
    if ((rc = put_msg(t, MVCC_AUTH_ROLE, role->name, &role->base, a)) != 0)
        return rc;
    return bump_rev(t);
}

#define UNPACK(type, fn)                                                       \
    type *r = fn(&a->pb, len, req);                                            \
    if (r == NULL)                                                             \
        return CAIRN_EBADMSG

int auth_apply(struct mvcc_txn *t, int op, const uint8_t *req, size_t len,
               struct arena *a)
{
    switch (op) {
    case APPLY_AUTH_ENABLE:
        return enable(t, a);
    case APPLY_AUTH_DISABLE:
        return disable(t);
    case APPLY_AUTH_USER_ADD: {
        UNPACK(Etcdserverpb__AuthUserAddRequest,
               etcdserverpb__auth_user_add_request__unpack);
        return user_add(t, r, a);
    }
    case APPLY_AUTH_USER_DELETE: {
        UNPACK(Etcdserverpb__AuthUserDeleteRequest,
               etcdserverpb__auth_user_delete_request__unpack);
        return user_delete(t, r->name);
    }
    case APPLY_AUTH_USER_CHANGE_PASSWORD: {
        UNPACK(Etcdserverpb__AuthUserChangePasswordRequest,
               etcdserverpb__auth_user_change_password_request__unpack);
        return user_passwd(t, r, a);
    }
    case APPLY_AUTH_USER_GRANT_ROLE: {
        UNPACK(Etcdserverpb__AuthUserGrantRoleRequest,
               etcdserverpb__auth_user_grant_role_request__unpack);
        return user_grant(t, r, a);
    }
    case APPLY_AUTH_USER_REVOKE_ROLE: {
        UNPACK(Etcdserverpb__AuthUserRevokeRoleRequest,
               etcdserverpb__auth_user_revoke_role_request__unpack);
        return user_revoke(t, r, a);
    }
    case APPLY_AUTH_ROLE_ADD: {
        UNPACK(Etcdserverpb__AuthRoleAddRequest,
               etcdserverpb__auth_role_add_request__unpack);
        return role_add(t, r->name, a);
    }
    case APPLY_AUTH_ROLE_DELETE: {
        UNPACK(Etcdserverpb__AuthRoleDeleteRequest,
               etcdserverpb__auth_role_delete_request__unpack);
        return role_delete(t, r->role, a);
    }
    case APPLY_AUTH_ROLE_GRANT_PERMISSION: {
        UNPACK(Etcdserverpb__AuthRoleGrantPermissionRequest,
               etcdserverpb__auth_role_grant_permission_request__unpack);
        return role_grant(t, r, a);
    }
    case APPLY_AUTH_ROLE_REVOKE_PERMISSION: {
        UNPACK(Etcdserverpb__AuthRoleRevokePermissionRequest,
               etcdserverpb__auth_role_revoke_permission_request__unpack);
        return role_revoke(t, r, a);
    }
    }
    return CAIRN_EBADMSG;
}

int auth_apply_check(struct mvcc_txn *t, int64_t checked_rev)
{
    if (!mvcc_auth_enabled(t))
        return 0;
    if (checked_rev == AUTH_REV_OFF)
        return CAIRN_EUSEREMPTY;
    return (uint64_t)checked_rev < cur_rev(t) ? CAIRN_EAUTHOLDREV : 0;
}
