/* libFuzzer target: what a client controls in authentication -- an
 * AuthenticateRequest body, the "token" metadata as a simple token and as
 * a JWT (header and claims JSON, base64url, signature) -- must never crash
 * or read out of bounds. The first byte picks the parser. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "core/arena.h"
#include "rpc.pb-c.h"

static struct auth_jwt *jwt;

static void init(void)
{
    char err[128];
    const char *path = "/tmp/cairn-fuzz-jwt-secret";
    FILE *f = fopen(path, "w");
    if (f == NULL)
        abort();
    fputs("fuzz-secret", f);
    fclose(f);
    if (auth_jwt_new("sign-method=HS256,priv-key=/tmp/cairn-fuzz-jwt-secret",
                     &jwt, err, sizeof err) != 0)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)
{
    struct arena a;
    char *user, *tok;
    size_t ulen;
    uint64_t v;

    if (jwt == NULL)
        init();
    if (n == 0)
        return 0;
    arena_init(&a);
    tok = malloc(n);
    memcpy(tok, d + 1, n - 1);
    switch (d[0] % 3) {
    case 0: {
        Etcdserverpb__AuthenticateRequest *r =
            etcdserverpb__authenticate_request__unpack(&a.pb, n - 1, d + 1);
        if (r != NULL) {
            auth_limit_check(r->name, strlen(r->name), 0);
            auth_simple_token_parse(r->password, strlen(r->password), &v);
        }
        break;
    }
    case 1:
        auth_simple_token_parse(tok, n - 1, &v);
        break;
    case 2:
        if (auth_jwt_verify(jwt, tok, n - 1, 1000, &a, &user, &ulen, &v) == 0 &&
            memchr(user, 0, ulen + 1) == NULL)
            abort(); /* the user name must be terminated */
        break;
    }
    free(tok);
    arena_free(&a);
    return 0;
}
