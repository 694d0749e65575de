/* The loop thread's copy of the auth state: enabled, revision and every
 * user with its roles, password hash and merged permissions, rebuilt from
 * the store after each auth command (etcd's refreshRangePermCache). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "mvcc/auth.h"

struct user {
    char *name;
    size_t len;
    char *hash;       /* bcrypt hash ("" for none) */
    int no_password;
    int root;         /* has the root role */
    char **roles;
    size_t n_roles;
    struct auth_perms *perms;
};

static struct {
    int enabled;
    uint64_t rev;
    struct user *users; /* sorted by name */
    size_t n;
    int bcrypt_cost;
    int client_cert_auth;
} st;

static void users_free(struct user *u, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        cairn_free(u[i].name);
        cairn_free(u[i].hash);
        for (size_t j = 0; j < u[i].n_roles; j++)
            cairn_free(u[i].roles[j]);
        cairn_free(u[i].roles);
        auth_perms_free(u[i].perms);
    }
    cairn_free(u);
}

struct load {
    struct mvcc_txn *t;
    struct arena a;
    struct user *u;
    size_t n, cap;
};

static int add_role_perms(struct load *l, struct user *u, const char *role)
{
    uint8_t *v;
    size_t n;
    int rc = mvcc_auth_get(l->t, MVCC_AUTH_ROLE, role, strlen(role), &l->a, &v, &n);
    if (rc == 1)
        return 0; /* etcd skips a granted role that is gone */
    if (rc != 0)
        return rc;
    Authpb__Role *r = authpb__role__unpack(&l->a.pb, n, v);
    if (r == NULL)
        return CAIRN_ESTORE;
    for (size_t i = 0; i < r->n_keypermission; i++) {
        Authpb__Permission *p = r->keypermission[i];
        auth_perms_add(u->perms, p->permtype, p->key.data, p->key.len,
                       p->range_end.data, p->range_end.len);
    }
    return 0;
}

static int load_user(void *ud, const uint8_t *name, size_t nlen,
                     const uint8_t *val, size_t vlen)
{
    struct load *l = ud;
    Authpb__User *pu = authpb__user__unpack(&l->a.pb, vlen, val);
    int rc;
    if (pu == NULL)
        return CAIRN_ESTORE;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->u = cairn_realloc(l->u, l->cap * sizeof *l->u);
    }
    struct user *u = &l->u[l->n++];
    memset(u, 0, sizeof *u);
    u->name = cairn_malloc(nlen + 1);
    memcpy(u->name, name, nlen);
    u->name[nlen] = 0;
    u->len = nlen;
    u->hash = cairn_malloc(pu->password.len + 1);
    if (pu->password.len)
        memcpy(u->hash, pu->password.data, pu->password.len);
    u->hash[pu->password.len] = 0;
    u->no_password = pu->options != NULL && pu->options->no_password;
    u->roles = cairn_calloc(pu->n_roles + 1, sizeof *u->roles);
    u->perms = auth_perms_new();
    for (size_t i = 0; i < pu->n_roles; i++) {
        u->roles[u->n_roles++] = cairn_strdup(pu->roles[i]);
        if (strcmp(pu->roles[i], "root") == 0)
            u->root = 1;
        if ((rc = add_role_perms(l, u, pu->roles[i])) != 0)
            return rc;
    }
    auth_perms_done(u->perms);
    arena_reset(&l->a);
    return 0;
}

int auth_reload(struct mvcc *m)
{
    struct load l;
    struct mvcc_txn t;
    int rc;

    memset(&l, 0, sizeof l);
    if ((rc = mvcc_read_begin(m, &t)) != 0)
        return rc;
    l.t = &t;
    arena_init(&l.a);
    rc = mvcc_auth_each(&t, MVCC_AUTH_USER, load_user, &l);
    if (rc == 0) {
        int was = st.enabled;
        uint64_t r = mvcc_auth_revision(&t);
        st.enabled = mvcc_auth_enabled(&t);
        st.rev = r ? r : 1;
        users_free(st.users, st.n);
        st.users = l.u;
        st.n = l.n;
        if (was && !st.enabled)
            auth__tokens_clear(); /* etcd's tokenProvider.disable() */
    } else {
        users_free(l.u, l.n);
        log_error("auth: reloading users failed rc=%d", rc);
    }
    arena_free(&l.a);
    mvcc_read_end(&t);
    return rc;
}

int auth_enabled(void)
{
    return st.enabled;
}

uint64_t auth_revision(void)
{
    return st.rev;
}

int auth_bcrypt_cost(void)
{
    return st.bcrypt_cost;
}

int auth_client_cert_auth(void)
{
    return st.client_cert_auth;
}

static const struct user *find(const char *name, size_t len)
{
    size_t lo = 0, hi = st.n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const struct user *u = &st.users[mid];
        size_t n = u->len < len ? u->len : len;
        int c = n ? memcmp(u->name, name, n) : 0;
        if (c == 0)
            c = (u->len > len) - (u->len < len);
        if (c == 0)
            return u;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int auth_identify(const char *token, size_t tlen, const char *cn,
                  struct arena *a, struct auth_info *ai)
{
    ai->user = NULL;
    ai->len = 0;
    ai->rev = 0;
    if (token != NULL) {
        int rc = auth__token_info(token, tlen, a, ai);
        if (rc == 0 && ai->rev == 0)
            ai->rev = st.rev; /* simple tokens: the current revision */
        return rc;
    }
    if (cn != NULL && st.client_cert_auth) {
        ai->user = cn;
        ai->len = strlen(cn);
        ai->rev = st.rev;
    }
    return 0;
}

int auth_check_range(const struct auth_info *ai, const uint8_t *key,
                     size_t klen, const uint8_t *end, size_t elen,
                     enum auth_perm p)
{
    if (!st.enabled)
        return 0;
    if (ai == NULL || ai->user == NULL || ai->rev == 0)
        return CAIRN_EUSEREMPTY;
    if (ai->rev < st.rev)
        return CAIRN_EAUTHOLDREV;
    const struct user *u = find(ai->user, ai->len);
    if (u == NULL)
        return CAIRN_EPERMDENIED;
    if (u->root)
        return 0;
    return auth_perms_allows(u->perms, key, klen, end, elen, p)
               ? 0
               : CAIRN_EPERMDENIED;
}

int auth_check_admin(const struct auth_info *ai)
{
    if (!st.enabled)
        return 0;
    if (ai == NULL || ai->user == NULL || ai->len == 0)
        return CAIRN_EUSEREMPTY;
    const struct user *u = find(ai->user, ai->len);
    if (u == NULL)
        return CAIRN_EUSERNOTFOUND;
    return u->root ? 0 : CAIRN_EPERMDENIED;
}

int auth_has_role(const char *user, size_t ulen, const char *role, size_t rlen)
{
    const struct user *u = user != NULL ? find(user, ulen) : NULL;
    if (u == NULL)
        return 0;
    for (size_t i = 0; i < u->n_roles; i++)
        if (strlen(u->roles[i]) == rlen && memcmp(u->roles[i], role, rlen) == 0)
            return 1;
    return 0;
}

int auth_user_exists(const char *user, size_t ulen)
{
    return find(user, ulen) != NULL;
}

int auth_password_hash(const char *user, size_t ulen, struct arena *a,
                       char **hash)
{
    if (!st.enabled)
        return CAIRN_EAUTHNOTENABLED;
    const struct user *u = find(user, ulen);
    if (u == NULL)
        return CAIRN_EAUTHFAILED;
    if (u->no_password)
        return CAIRN_ENOPASSWORDUSER;
    *hash = arena_memdup(a, u->hash, strlen(u->hash) + 1);
    return 0;
}

int auth_init(uv_loop_t *loop, struct mvcc *m, const struct auth_opts *o,
              char *err, size_t errlen)
{
    int rc;
    (void)loop;
    st.bcrypt_cost = o->bcrypt_cost;
    if (st.bcrypt_cost < AUTH_BCRYPT_MIN_COST ||
        st.bcrypt_cost > AUTH_BCRYPT_MAX_COST) {
        /* etcd warns and uses the default */
        log_warn("auth: use default bcrypt cost instead of the invalid given "
                 "cost bcrypt-cost=%d default=%d",
                 st.bcrypt_cost, AUTH_BCRYPT_DEFAULT_COST);
        st.bcrypt_cost = AUTH_BCRYPT_DEFAULT_COST;
    }
    st.client_cert_auth = o->client_cert_auth;
    if ((rc = auth__tokens_init(o, err, errlen)) != 0)
        return rc;
    if ((rc = auth_reload(m)) != 0) {
        snprintf(err, errlen, "auth: cannot load users and roles (%s)",
                 cairn_err_msg(rc));
        auth__tokens_close();
        return rc;
    }
    return 0;
}

void auth_close(void)
{
    auth__tokens_close();
    users_free(st.users, st.n);
    st.users = NULL;
    st.n = 0;
}
