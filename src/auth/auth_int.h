/* Internal to auth/: the token provider behind auth_identify(). */
#ifndef AUTH_AUTH_INT_H
#define AUTH_AUTH_INT_H

#include "auth/auth.h"

int auth__tokens_init(const struct auth_opts *o, char *err, size_t errlen);
void auth__tokens_close(void);
/* Drops every simple token (auth disabled). */
void auth__tokens_clear(void);
/* The user (and, for JWT, revision) of @token. */
int auth__token_info(const char *tok, size_t len, struct arena *a,
                     struct auth_info *ai);

/* Checks "k=v,k=v" (etcd's decomposeOpts): 0 or -EINVAL with @err. */
int auth_jwt_check_pairs(const char *pairs, char *err, size_t errlen);

#endif
