/* Authentication and authorisation, as etcd's auth store: who a call is
 * (a token or the client certificate's CN), whether it may touch a key
 * range or administer, tokens (simple and JWT), the brute-force limiter,
 * and applying the auth commands to the store.
 *
 * The permission cache and the token table belong to the loop thread; they
 * are rebuilt from the store (auth_reload) after every auth command commits.
 * auth_apply() runs on the apply thread and touches only its txn. */
#ifndef AUTH_AUTH_H
#define AUTH_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/arena.h"
#include "mvcc/mvcc.h"

/* An identity resolved from a call. user == NULL: none given. */
struct auth_info {
    const char *user;
    size_t len;
    uint64_t rev; /* the auth revision it was resolved at (etcd's AuthInfo) */
};

enum auth_perm { AUTH_READ = 0, AUTH_WRITE = 1 };

#define AUTH_BCRYPT_DEFAULT_COST 10
#define AUTH_BCRYPT_MIN_COST 4
#define AUTH_BCRYPT_MAX_COST 31

struct auth_opts {
    const char *token_opts;  /* --auth-token: "simple" or "jwt,..." */
    int64_t token_ttl_s;     /* --auth-token-ttl: simple tokens */
    int bcrypt_cost;         /* --bcrypt-cost */
    int client_cert_auth;    /* --client-cert-auth: CN is the user */
};

/* Parses the token options (etcd's decomposeOpts/NewTokenProvider), loads
 * JWT keys, loads the store's auth state and starts the token sweeper.
 * Errors: -EINVAL with @err set (etcd's text). */
int auth_init(uv_loop_t *loop, struct mvcc *m, const struct auth_opts *o,
              char *err, size_t errlen);
void auth_close(void);
/* Rebuilds the cache from the store (after auth commands commit). */
int auth_reload(struct mvcc *m);

int auth_enabled(void);
uint64_t auth_revision(void);
int auth_bcrypt_cost(void);
int auth_client_cert_auth(void);

/* etcd's AuthInfoFromCtx: @token (NULL: no token metadata) else, with
 * --client-cert-auth, @cn. ai->user stays NULL when neither is given.
 * Refreshes a simple token's TTL; the user name may be copied into @a.
 * Errors: CAIRN_EINVALIDAUTHTOKEN. */
int auth_identify(const char *token, size_t tlen, const char *cn,
                  struct arena *a, struct auth_info *ai);

/* etcd's isOpPermitted: 0 when auth is off, else CAIRN_EUSEREMPTY,
 * CAIRN_EAUTHOLDREV, CAIRN_EPERMDENIED. @end/@elen as a RangeRequest's
 * range_end (elen 0: the single key; "\0": to the end of the keyspace). */
int auth_check_range(const struct auth_info *ai, const uint8_t *key,
                     size_t klen, const uint8_t *end, size_t elen,
                     enum auth_perm p);
/* etcd's IsAdminPermitted: 0 when auth is off, else CAIRN_EUSEREMPTY,
 * CAIRN_EUSERNOTFOUND, CAIRN_EPERMDENIED. */
int auth_check_admin(const struct auth_info *ai);
/* The user has @role (etcd's HasRole, for RoleGet by a non-admin). */
int auth_has_role(const char *user, size_t ulen, const char *role,
                  size_t rlen);

int auth_user_exists(const char *user, size_t ulen);
/* Drops the simple tokens of @user (deleted, new password). */
void auth_tokens_invalidate_user(const char *user, size_t ulen);
/* A user's bcrypt hash for Authenticate's check, copied into @a: 0,
 * CAIRN_EAUTHFAILED (no such user), CAIRN_ENOPASSWORDUSER or
 * CAIRN_EAUTHNOTENABLED. */
int auth_password_hash(const char *user, size_t ulen, struct arena *a,
                       char **hash);
/* Issues a token for @user at the current auth revision (simple: etcd's
 * "<16 letters>.<index>" with @index; JWT: signed claims). Returns 0 and
 * a malloc'd string, or an error. */
int auth_token_assign(const char *user, size_t ulen, uint64_t index,
                      char **token);

/* ---- bcrypt (any thread; slow: call from the thread pool) ---- */
/* Hashes @pw with @cost into @out ($2b$...). 0 or -EINVAL. */
int auth_bcrypt_hash(const char *pw, size_t len, int cost, char out[128]);
/* 1 when @pw matches @hash ($2a$/$2b$/$2y$), else 0. */
int auth_bcrypt_check(const char *pw, size_t len, const char *hash);

/* ---- brute-force limiter (loop thread) ---- */
/* 0 when @user may try a password now, else CAIRN_EAUTHFAILED. */
int auth_limit_check(const char *user, size_t ulen, int64_t now_ms);
void auth_limit_result(const char *user, size_t ulen, int ok, int64_t now_ms);

/* ---- tokens (exposed for tests and the fuzzer) ---- */
/* etcd's simple token syntax "<prefix>.<decimal index>": 0 or -EINVAL. */
int auth_simple_token_parse(const char *tok, size_t len, uint64_t *index);
struct auth_jwt;
/* "jwt,pub-key=...,priv-key=...,sign-method=...,ttl=..." option pairs
 * (without the leading "jwt"). Errors: -EINVAL with etcd's reason. */
int auth_jwt_new(const char *opts, struct auth_jwt **out, char *err,
                 size_t errlen);
void auth_jwt_free(struct auth_jwt *j);
int auth_jwt_sign(struct auth_jwt *j, const char *user, size_t ulen,
                  uint64_t rev, int64_t now_s, char **token);
/* Verifies signature, algorithm and exp; copies the username into @a.
 * 0 or CAIRN_EINVALIDAUTHTOKEN. */
int auth_jwt_verify(struct auth_jwt *j, const char *tok, size_t len,
                    int64_t now_s, struct arena *a, char **user,
                    size_t *ulen, uint64_t *rev);

/* ---- the permission cache (exposed for unit tests) ---- */
struct auth_perms;
/* Builds the merged read/write ranges of one user from its roles'
 * packed authpb.Permission lists. */
struct auth_perms *auth_perms_new(void);
void auth_perms_add(struct auth_perms *p, int perm_type, const uint8_t *key,
                    size_t klen, const uint8_t *end, size_t elen);
void auth_perms_done(struct auth_perms *p); /* sorts and merges */
int auth_perms_allows(const struct auth_perms *p, const uint8_t *key,
                      size_t klen, const uint8_t *end, size_t elen,
                      enum auth_perm perm);
void auth_perms_free(struct auth_perms *p);

/* ---- applying auth commands (apply thread) ---- */
/* Applies one auth admin command (op: an APPLY_AUTH_* value, @req its
 * packed etcd request) in @t: etcd's authStore semantics, including the
 * root rules and the revision bump. Returns 0 or a CAIRN_E* code; on error
 * nothing was written. */
int auth_apply(struct mvcc_txn *t, int op, const uint8_t *req, size_t len,
               struct arena *a);
/* etcd's auth revision check at apply time for a request whose
 * permissions the rpc layer checked at @checked_rev (AUTH_REV_OFF: checked
 * with auth off): 0, CAIRN_EUSEREMPTY or CAIRN_EAUTHOLDREV. */
#define AUTH_REV_OFF (-1)
int auth_apply_check(struct mvcc_txn *t, int64_t checked_rev);

#endif
