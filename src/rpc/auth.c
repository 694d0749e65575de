/* etcdserverpb.Auth, and the permission checks every other handler makes
 * at its top (rpc_auth_*: one call, deciding through src/auth). Which RPC
 * needs what follows etcd 3.4 (v3_server.go, apply_auth.go, v3rpc
 * maintenance.go), with etcd's later security fixes (nested txns, prev_kv
 * and leases inside txns, the whole watched range). */
#include <stdio.h>
#include <string.h>

#include "auth/auth.h"
#include "core/log.h"
#include "core/mem.h"
#include "rpc/rpc.h"

/* ---- checks ---- */

int rpc_auth_info(struct grpc_call *c, struct auth_info *ai)
{
    return auth_identify(c->token, c->token_len, grpc_call_peer_cn(c),
                         &c->arena, ai);
}

/* What the write path re-checks at apply (apply_cmd.auth_rev). */
static void mark_checked(struct grpc_call *c, const struct auth_info *ai)
{
    c->auth_rev = auth_enabled() ? (int64_t)ai->rev : AUTH_REV_OFF;
}

int rpc_auth_token(struct grpc_call *c)
{
    struct auth_info ai;
    return rpc_auth_info(c, &ai);
}

int rpc_auth_range(struct grpc_call *c, ProtobufCBinaryData key,
                   ProtobufCBinaryData end, enum auth_perm p)
{
    struct auth_info ai;
    int rc = rpc_auth_info(c, &ai);
    if (rc == 0)
        rc = auth_check_range(&ai, key.data, key.len, end.data, end.len, p);
    if (rc == 0)
        mark_checked(c, &ai);
    return rc;
}

int rpc_auth_admin(struct grpc_call *c)
{
    struct auth_info ai;
    int rc = rpc_auth_info(c, &ai);
    if (rc == 0)
        rc = auth_check_admin(&ai);
    if (rc == 0)
        mark_checked(c, &ai);
    return rc;
}

/* etcd's checkLeasePuts: every key the lease holds must be writable, as
 * the user could otherwise delete them by revoking it. */
static int lease_keys_writable(const struct auth_info *ai, int64_t id,
                               struct arena *a)
{
    struct mvcc_txn t;
    ProtobufCBinaryData *keys;
    size_t n = 0;
    int rc;
    if (!auth_enabled() || id == 0)
        return 0;
    if ((rc = mvcc_read_begin(srv->mvcc, &t)) != 0)
        return rc;
    if (mvcc_lease_keys(&t, id, a, &keys, &n) != 0)
        n = 0; /* no such lease: nothing it could delete */
    mvcc_read_end(&t);
    for (size_t i = 0; i < n; i++)
        if ((rc = auth_check_range(ai, keys[i].data, keys[i].len, NULL, 0,
                                   AUTH_WRITE)) != 0)
            return rc;
    return 0;
}

static int check_put(const struct auth_info *ai,
                     const Etcdserverpb__PutRequest *r, struct arena *a)
{
    int rc = auth_check_range(ai, r->key.data, r->key.len, NULL, 0, AUTH_WRITE);
    if (rc == 0)
        rc = lease_keys_writable(ai, r->lease, a);
    if (rc == 0 && r->prev_kv)
        rc = auth_check_range(ai, r->key.data, r->key.len, NULL, 0, AUTH_READ);
    return rc;
}

static int check_delete(const struct auth_info *ai,
                        const Etcdserverpb__DeleteRangeRequest *r)
{
    int rc = auth_check_range(ai, r->key.data, r->key.len, r->range_end.data,
                              r->range_end.len, AUTH_WRITE);
    if (rc == 0 && r->prev_kv)
        rc = auth_check_range(ai, r->key.data, r->key.len, r->range_end.data,
                              r->range_end.len, AUTH_READ);
    return rc;
}

static int check_txn(const struct auth_info *ai,
                     const Etcdserverpb__TxnRequest *r, struct arena *a,
                     int depth);

static int check_ops(const struct auth_info *ai, Etcdserverpb__RequestOp **ops,
                     size_t n, struct arena *a, int depth)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        const Etcdserverpb__RequestOp *op = ops[i];
        switch (op->request_case) {
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE:
            rc = auth_check_range(ai, op->request_range->key.data,
                                  op->request_range->key.len,
                                  op->request_range->range_end.data,
                                  op->request_range->range_end.len, AUTH_READ);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT:
            rc = check_put(ai, op->request_put, a);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE:
            rc = check_delete(ai, op->request_delete_range);
            break;
        case ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_TXN:
            /* etcd 3.4 skipped nested txns (CVE-2026-33343) */
            rc = check_txn(ai, op->request_txn, a, depth + 1);
            break;
        default:
            break;
        }
    }
    return rc;
}

static int check_txn(const struct auth_info *ai,
                     const Etcdserverpb__TxnRequest *r, struct arena *a,
                     int depth)
{
    int rc = 0;
    if (!auth_enabled())
        return 0;
    if (depth > 64)
        return CAIRN_EPERMDENIED; /* deeper than any validated txn */
    for (size_t i = 0; i < r->n_compare && rc == 0; i++)
        rc = auth_check_range(ai, r->compare[i]->key.data, r->compare[i]->key.len,
                              r->compare[i]->range_end.data,
                              r->compare[i]->range_end.len, AUTH_READ);
    if (rc == 0)
        rc = check_ops(ai, r->success, r->n_success, a, depth);
    if (rc == 0)
        rc = check_ops(ai, r->failure, r->n_failure, a, depth);
    return rc;
}

#define CHECKED(c, expr)                                                       \
    do {                                                                       \
        struct auth_info ai_;                                                  \
        int rc_ = rpc_auth_info((c), &ai_);                                    \
        if (rc_ == 0) {                                                        \
            const struct auth_info *ai = &ai_;                                 \
            rc_ = (expr);                                                      \
        }                                                                      \
        if (rc_ == 0)                                                          \
            mark_checked((c), &ai_);                                           \
        return rc_;                                                            \
    } while (0)

int rpc_auth_put(struct grpc_call *c, const Etcdserverpb__PutRequest *r)
{
    CHECKED(c, check_put(ai, r, &c->arena));
}

int rpc_auth_delete(struct grpc_call *c, const Etcdserverpb__DeleteRangeRequest *r)
{
    CHECKED(c, check_delete(ai, r));
}

int rpc_auth_txn(struct grpc_call *c, const Etcdserverpb__TxnRequest *r)
{
    CHECKED(c, check_txn(ai, r, &c->arena, 0));
}

int rpc_auth_lease_revoke(struct grpc_call *c, int64_t id)
{
    CHECKED(c, lease_keys_writable(ai, id, &c->arena));
}

void rpc_auth_finish_maint(struct grpc_call *c, int rc)
{
    /* auth/store.go's texts, as status.Error(codes.Unknown, err) */
    const char *m = rc == CAIRN_EUSEREMPTY          ? "auth: user name is empty"
                    : rc == CAIRN_EUSERNOTFOUND     ? "auth: user not found"
                    : rc == CAIRN_EPERMDENIED       ? "auth: permission denied"
                    : rc == CAIRN_EINVALIDAUTHTOKEN ? "auth: invalid auth token"
                                                    : NULL;
    if (m != NULL)
        grpc_finish(c, GRPC_UNKNOWN, m);
    else
        grpc_finish_err(c, rc);
}

const char *rpc_auth_status_text(struct grpc_call *c, int rc)
{
    /* grpc-go's status.Error string: "rpc error: code = <Code> desc = .." */
    static const char *names[] = {
        "OK", "Canceled", "Unknown", "InvalidArgument", "DeadlineExceeded",
        "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
        "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented",
        "Internal", "Unavailable", "DataLoss", "Unauthenticated"};
    /* loop thread only; the caller sends it at once (a stream's arena
     * would grow with every refused create) */
    static char s[256];
    enum grpc_code code = cairn_err_code(rc);
    (void)c;
    snprintf(s, sizeof s, "rpc error: code = %s desc = %s",
             (unsigned)code < 17 ? names[code] : "Unknown", cairn_err_msg(rc));
    return s;
}

/* ---- Auth service: reads ---- */

static void header_now(Etcdserverpb__ResponseHeader *h)
{
    rpc_header(h, rpc_current_rev());
}

void rpc_auth_status(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AuthStatusResponse resp = ETCDSERVERPB__AUTH_STATUS_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    int rc;
    if (etcdserverpb__auth_status_request__unpack(&c->arena.pb, len, msg) == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) { /* etcd 3.5: an admin request */
        grpc_finish_err(c, rc);
        return;
    }
    header_now(&h);
    resp.header = &h;
    resp.enabled = auth_enabled();
    resp.authrevision = auth_revision();
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

struct names {
    struct arena *a;
    char **v;
    size_t n, cap;
};

static int add_name(void *ud, const uint8_t *name, size_t nlen,
                    const uint8_t *val, size_t vlen)
{
    struct names *s = ud;
    (void)val;
    (void)vlen;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 16;
        char **v = arena_alloc(s->a, cap * sizeof *v);
        if (s->n)
            memcpy(v, s->v, s->n * sizeof *v);
        s->v = v;
        s->cap = cap;
    }
    char *z = arena_alloc(s->a, nlen + 1);
    memcpy(z, name, nlen);
    z[nlen] = 0;
    s->v[s->n++] = z;
    return 0;
}

static void list(struct grpc_call *c, enum mvcc_auth_kind k)
{
    struct names s = {&c->arena, NULL, 0, 0};
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    struct mvcc_txn t;
    int rc;
    if ((rc = rpc_auth_admin(c)) != 0 ||
        (rc = mvcc_read_begin(srv->mvcc, &t)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rc = mvcc_auth_each(&t, k, add_name, &s);
    rpc_header(&h, t.rev);
    mvcc_read_end(&t);
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (k == MVCC_AUTH_USER) {
        Etcdserverpb__AuthUserListResponse r = ETCDSERVERPB__AUTH_USER_LIST_RESPONSE__INIT;
        r.header = &h;
        r.users = s.v;
        r.n_users = s.n;
        grpc_send_pb(c, &r);
    } else {
        Etcdserverpb__AuthRoleListResponse r = ETCDSERVERPB__AUTH_ROLE_LIST_RESPONSE__INIT;
        r.header = &h;
        r.roles = s.v;
        r.n_roles = s.n;
        grpc_send_pb(c, &r);
    }
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_auth_user_list(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    if (etcdserverpb__auth_user_list_request__unpack(&c->arena.pb, len, msg) == NULL) {
        rpc_bad_message(c);
        return;
    }
    list(c, MVCC_AUTH_USER);
}

void rpc_auth_role_list(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    if (etcdserverpb__auth_role_list_request__unpack(&c->arena.pb, len, msg) == NULL) {
        rpc_bad_message(c);
        return;
    }
    list(c, MVCC_AUTH_ROLE);
}

/* Reads one user or role record from the store into the call's arena:
 * 0, 1 when absent, or an error; @rev gets the store's revision. */
static int read_record(struct grpc_call *c, enum mvcc_auth_kind k,
                       const char *name, uint8_t **v, size_t *n, int64_t *rev)
{
    struct mvcc_txn t;
    int rc = mvcc_read_begin(srv->mvcc, &t);
    if (rc != 0)
        return rc;
    rc = mvcc_auth_get(&t, k, name, strlen(name), &c->arena, v, n);
    *rev = t.rev;
    mvcc_read_end(&t);
    return rc;
}

void rpc_auth_user_get(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AuthUserGetRequest *r =
        etcdserverpb__auth_user_get_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__AuthUserGetResponse resp = ETCDSERVERPB__AUTH_USER_GET_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    struct auth_info ai;
    uint8_t *v;
    size_t n;
    int64_t rev;
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    /* etcd: admins, and any user asking about itself */
    if ((rc = rpc_auth_info(c, &ai)) == 0 && (rc = auth_check_admin(&ai)) != 0 &&
        ai.user != NULL && strlen(r->name) == ai.len &&
        memcmp(r->name, ai.user, ai.len) == 0)
        rc = 0;
    if (rc == 0 && (rc = read_record(c, MVCC_AUTH_USER, r->name, &v, &n, &rev)) == 1)
        rc = CAIRN_EUSERNOTFOUND;
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    Authpb__User *u = authpb__user__unpack(&c->arena.pb, n, v);
    if (u == NULL) {
        grpc_finish_err(c, CAIRN_ESTORE);
        return;
    }
    rpc_header(&h, rev);
    resp.header = &h;
    resp.roles = u->roles;
    resp.n_roles = u->n_roles;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_auth_role_get(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AuthRoleGetRequest *r =
        etcdserverpb__auth_role_get_request__unpack(&c->arena.pb, len, msg);
    Etcdserverpb__AuthRoleGetResponse resp = ETCDSERVERPB__AUTH_ROLE_GET_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    struct auth_info ai;
    uint8_t *v;
    size_t n;
    int64_t rev;
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    /* etcd: admins, and users holding the role */
    if ((rc = rpc_auth_info(c, &ai)) == 0 && (rc = auth_check_admin(&ai)) != 0 &&
        auth_has_role(ai.user, ai.len, r->role, strlen(r->role)))
        rc = 0;
    if (rc == 0 && (rc = read_record(c, MVCC_AUTH_ROLE, r->role, &v, &n, &rev)) == 1)
        rc = CAIRN_EROLENOTFOUND;
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    Authpb__Role *role = authpb__role__unpack(&c->arena.pb, n, v);
    if (role == NULL) {
        grpc_finish_err(c, CAIRN_ESTORE);
        return;
    }
    rpc_header(&h, rev);
    resp.header = &h;
    resp.perm = role->keypermission;
    resp.n_perm = role->n_keypermission;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

/* ---- Auth service: writes ---- */


static void submit_admin(struct grpc_call *c, enum apply_op op,
                         const ProtobufCMessageDescriptor *d, const uint8_t *msg,
                         size_t len)
{
    int rc;
    if (protobuf_c_message_unpack(d, &c->arena.pb, len, msg) == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_submit(c, op, msg, len, rpc_write_done);
}

#define ADMIN_WRITE(fn, op, desc)                                              \
    void fn(struct grpc_call *c, const uint8_t *msg, size_t len)              \
    {                                                                          \
        submit_admin(c, op, &desc, msg, len);                                  \
    }

ADMIN_WRITE(rpc_auth_enable, APPLY_AUTH_ENABLE,
            etcdserverpb__auth_enable_request__descriptor)
ADMIN_WRITE(rpc_auth_disable, APPLY_AUTH_DISABLE,
            etcdserverpb__auth_disable_request__descriptor)
ADMIN_WRITE(rpc_auth_user_delete, APPLY_AUTH_USER_DELETE,
            etcdserverpb__auth_user_delete_request__descriptor)
ADMIN_WRITE(rpc_auth_user_grant_role, APPLY_AUTH_USER_GRANT_ROLE,
            etcdserverpb__auth_user_grant_role_request__descriptor)
ADMIN_WRITE(rpc_auth_user_revoke_role, APPLY_AUTH_USER_REVOKE_ROLE,
            etcdserverpb__auth_user_revoke_role_request__descriptor)
ADMIN_WRITE(rpc_auth_role_add, APPLY_AUTH_ROLE_ADD,
            etcdserverpb__auth_role_add_request__descriptor)
ADMIN_WRITE(rpc_auth_role_delete, APPLY_AUTH_ROLE_DELETE,
            etcdserverpb__auth_role_delete_request__descriptor)
ADMIN_WRITE(rpc_auth_role_grant_permission, APPLY_AUTH_ROLE_GRANT_PERMISSION,
            etcdserverpb__auth_role_grant_permission_request__descriptor)
ADMIN_WRITE(rpc_auth_role_revoke_permission, APPLY_AUTH_ROLE_REVOKE_PERMISSION,
            etcdserverpb__auth_role_revoke_permission_request__descriptor)

/* bcrypt on libuv's thread pool: hashing a new password (UserAdd,
 * UserChangePassword) or checking one (Authenticate). */
struct bcrypt_job {
    uv_work_t work;
    struct grpc_call *c; /* NULL once the call has gone */
    enum apply_op op;    /* 0: Authenticate's check */
    char *name;
    char *pw;
    size_t pwlen;
    char *hash;          /* check: the stored hash */
    int cost, ok, tries;
    uint64_t auth_rev;   /* check: the auth revision the hash was read at */
    char out[128];
    uint8_t *req;        /* hash: the request to submit */
    size_t req_len;
};

static void job_free(struct bcrypt_job *j)
{
    if (j->pw != NULL) {
        memset(j->pw, 0, j->pwlen);
        cairn_free(j->pw);
    }
    cairn_free(j->name);
    cairn_free(j->hash);
    cairn_free(j->req);
    cairn_free(j);
}

static void job_cancel(struct grpc_call *c)
{
    struct bcrypt_job *j = c->ud;
    if (j != NULL)
        j->c = NULL;
    c->ud = NULL;
}

static void bcrypt_work(uv_work_t *w)
{
    struct bcrypt_job *j = (struct bcrypt_job *)w;
    if (j->op == 0)
        j->ok = auth_bcrypt_check(j->pw, j->pwlen, j->hash);
    else
        j->ok = auth_bcrypt_hash(j->pw, j->pwlen, j->cost, j->out) == 0;
}

static void queue_job(struct grpc_call *c, struct bcrypt_job *j,
                      uv_after_work_cb after)
{
    j->c = c;
    c->ud = j;
    c->on_cancel = job_cancel;
    if (uv_queue_work(srv->loop, &j->work, bcrypt_work, after) != 0) {
        c->ud = NULL;
        c->on_cancel = NULL;
        job_free(j);
        grpc_finish_err(c, CAIRN_ESTOPPED);
    }
}

static char *dup_str(const char *s, size_t n)
{
    char *d = cairn_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = 0;
    return d;
}

static void hashed_after(uv_work_t *w, int status)
{
    struct bcrypt_job *j = (struct bcrypt_job *)w;
    struct grpc_call *c = j->c;
    (void)status;
    if (c == NULL)
        goto out; /* nobody to answer: etcd drops a cancelled proposal too */
    c->ud = NULL;
    c->on_cancel = NULL;
    if (!j->ok) {
        grpc_finish_err(c, CAIRN_EBADMSG);
        goto out;
    }
    /* The command carries the hash, never the password (etcd 3.5's
     * hashedPassword): applying is deterministic and the log holds no
     * secret. */
    ProtobufCMessage *m;
    if (j->op == APPLY_AUTH_USER_ADD) {
        Etcdserverpb__AuthUserAddRequest *r =
            etcdserverpb__auth_user_add_request__unpack(&c->arena.pb, j->req_len, j->req);
        r->password = "";
        r->hashedpassword = j->out;
        m = &r->base;
    } else {
        Etcdserverpb__AuthUserChangePasswordRequest *r =
            etcdserverpb__auth_user_change_password_request__unpack(
                &c->arena.pb, j->req_len, j->req);
        r->password = "";
        r->hashedpassword = j->out;
        m = &r->base;
    }
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = arena_alloc(&c->arena, n + 1);
    protobuf_c_message_pack(m, b);
    rpc_submit(c, j->op, b, n, rpc_write_done);
out:
    job_free(j);
}

static void submit_hashed(struct grpc_call *c, enum apply_op op,
                          const char *pw, const uint8_t *msg, size_t len)
{
    struct bcrypt_job *j = cairn_calloc(1, sizeof *j);
    j->op = op;
    j->pwlen = strlen(pw);
    j->pw = dup_str(pw, j->pwlen);
    j->cost = auth_bcrypt_cost();
    j->req = cairn_malloc(len + 1);
    memcpy(j->req, msg, len);
    j->req_len = len;
    queue_job(c, j, hashed_after);
}

void rpc_auth_user_add(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AuthUserAddRequest *r =
        etcdserverpb__auth_user_add_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    if (r->options != NULL && r->options->no_password) {
        r->password = "";
        r->hashedpassword = "";
        size_t n = etcdserverpb__auth_user_add_request__get_packed_size(r);
        uint8_t *b = arena_alloc(&c->arena, n + 1);
        etcdserverpb__auth_user_add_request__pack(r, b);
        rpc_submit(c, APPLY_AUTH_USER_ADD, b, n, rpc_write_done);
        return;
    }
    submit_hashed(c, APPLY_AUTH_USER_ADD, r->password, msg, len);
}

void rpc_auth_user_change_password(struct grpc_call *c, const uint8_t *msg,
                                   size_t len)
{
    Etcdserverpb__AuthUserChangePasswordRequest *r =
        etcdserverpb__auth_user_change_password_request__unpack(&c->arena.pb,
                                                                len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    submit_hashed(c, APPLY_AUTH_USER_CHANGE_PASSWORD, r->password, msg, len);
}

/* ---- Authenticate ---- */

static void authenticate_step(struct grpc_call *c, struct bcrypt_job *j);

static void checked_after(uv_work_t *w, int status)
{
    struct bcrypt_job *j = (struct bcrypt_job *)w;
    struct grpc_call *c = j->c;
    size_t nlen = strlen(j->name);
    int64_t now = net_now_ms();
    (void)status;
    auth_limit_result(j->name, nlen, j->ok, now);
    if (c == NULL) {
        job_free(j);
        return;
    }
    c->ud = NULL;
    c->on_cancel = NULL;
    if (!j->ok) {
        log_info("auth: invalid password user-name=%s", j->name);
        grpc_finish_err(c, CAIRN_EAUTHFAILED);
        job_free(j);
        return;
    }
    /* etcd retries when the auth store changed during the check */
    if (j->auth_rev != auth_revision() && j->tries < 3) {
        authenticate_step(c, j);
        return;
    }
    Etcdserverpb__AuthenticateResponse resp = ETCDSERVERPB__AUTHENTICATE_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    char *token = NULL;
    int rc = rpc_auth_token(c); /* etcd's raft request checks the caller's token */
    if (rc == 0 && !auth_user_exists(j->name, nlen))
        rc = CAIRN_EAUTHFAILED;
    if (rc == 0)
        rc = auth_token_assign(j->name, nlen, apply_index(srv->apply), &token);
    if (rc != 0) {
        grpc_finish_err(c, rc);
        job_free(j);
        return;
    }
    header_now(&h);
    resp.header = &h;
    resp.token = token;
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
    cairn_free(token);
    job_free(j);
}

/* One password check: etcd's CheckPassword, the bcrypt part on the pool. */
static void authenticate_step(struct grpc_call *c, struct bcrypt_job *j)
{
    char *hash;
    int rc = auth_password_hash(j->name, strlen(j->name), &c->arena, &hash);
    if (rc != 0) {
        if (rc == CAIRN_EAUTHFAILED)
            auth_limit_result(j->name, strlen(j->name), 0, net_now_ms());
        job_free(j);
        grpc_finish_err(c, rc);
        return;
    }
    cairn_free(j->hash);
    j->hash = cairn_strdup(hash);
    j->auth_rev = auth_revision();
    j->tries++;
    queue_job(c, j, checked_after);
}

void rpc_auth_authenticate(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__AuthenticateRequest *r =
        etcdserverpb__authenticate_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if (!auth_enabled()) {
        grpc_finish_err(c, CAIRN_EAUTHNOTENABLED);
        return;
    }
    /* Locked out after repeated failures: etcd's own answer, no bcrypt. */
    if (auth_limit_check(r->name, strlen(r->name), net_now_ms()) != 0) {
        log_warn("auth: too many failed attempts, refused user-name=%s", r->name);
        grpc_finish_err(c, CAIRN_EAUTHFAILED);
        return;
    }
    struct bcrypt_job *j = cairn_calloc(1, sizeof *j);
    j->name = cairn_strdup(r->name);
    j->pwlen = strlen(r->password);
    j->pw = dup_str(r->password, j->pwlen);
    authenticate_step(c, j);
}
