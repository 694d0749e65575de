/* Token providers (etcd's auth/simple_token.go, jwt.go, nop.go), bcrypt
 * through libxcrypt, and the brute-force limiter. Loop thread, except the
 * bcrypt functions. */
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"

enum tok_kind { TOK_SIMPLE, TOK_JWT, TOK_NOP };

#define SIMPLE_PREFIX_LEN 16 /* etcd's defaultSimpleTokenLength */
#define TOK_BUCKETS 4096
#define SWEEP_MS 1000        /* etcd's simpleTokenTTLResolution */

struct tok {
    char *token;
    size_t tlen;
    char *user;
    size_t ulen;
    int64_t expires_ms;
    struct tok *next;
};

static struct {
    enum tok_kind kind;
    int64_t ttl_ms;
    struct tok *b[TOK_BUCKETS];
    size_t count;
    int64_t swept_ms;
    struct auth_jwt *jwt;
} tk;

/* Monotonic ms (no dependency on the net layer: unit tests link this). */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t fnv(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 16777619u;
    return h;
}

static void tok_free(struct tok *t)
{
    cairn_free(t->token);
    cairn_free(t->user);
    cairn_free(t);
}

/* Drops tokens that match: expired ones (user NULL) or @user's. */
static void drop_where(const char *user, size_t ulen, int64_t now)
{
    for (size_t i = 0; i < TOK_BUCKETS; i++) {
        struct tok **pp = &tk.b[i];
        while (*pp != NULL) {
            struct tok *t = *pp;
            int drop = user != NULL ? (t->ulen == ulen &&
                                       memcmp(t->user, user, ulen) == 0)
                                    : t->expires_ms <= now;
            if (drop) {
                *pp = t->next;
                tok_free(t);
                tk.count--;
            } else {
                pp = &t->next;
            }
        }
    }
}

/* Expiry is checked at each lookup; the table itself is swept at most
 * once a second, from the calls that touch it (no timer to own). */
static void maybe_sweep(int64_t now)
{
    if (now - tk.swept_ms < SWEEP_MS || tk.count == 0)
        return;
    tk.swept_ms = now;
    drop_where(NULL, 0, now);
}

void auth__tokens_clear(void)
{
    for (size_t i = 0; i < TOK_BUCKETS; i++) {
        while (tk.b[i] != NULL) {
            struct tok *t = tk.b[i];
            tk.b[i] = t->next;
            tok_free(t);
        }
    }
    tk.count = 0;
}

void auth_tokens_invalidate_user(const char *user, size_t ulen)
{
    drop_where(user, ulen, 0);
}

int auth_simple_token_parse(const char *tok, size_t len, uint64_t *index)
{
    const char *dot = memchr(tok, '.', len);
    uint64_t v = 0;
    /* strings.Split(token, ".") must give exactly two parts, the second
     * strconv.Atoi's: an optional sign, then decimal digits */
    if (dot == NULL || memchr(dot + 1, '.', len - (size_t)(dot + 1 - tok)))
        return -EINVAL;
    const char *p = dot + 1, *end = tok + len;
    if (p < end && (*p == '+' || *p == '-'))
        p++;
    if (p == end)
        return -EINVAL;
    for (; p < end; p++) {
        if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
            return -EINVAL;
        v = v * 10 + (uint64_t)(*p - '0');
    }
    *index = dot[1] == '-' ? 0 : v;
    return 0;
}

static int simple_info(const char *tok, size_t len, struct arena *a,
                       struct auth_info *ai)
{
    uint64_t index;
    int64_t now = now_ms();
    if (auth_simple_token_parse(tok, len, &index) != 0)
        return CAIRN_EINVALIDAUTHTOKEN;
    maybe_sweep(now);
    for (struct tok *t = tk.b[fnv(tok, len) % TOK_BUCKETS]; t; t = t->next) {
        if (t->tlen != len || memcmp(t->token, tok, len) != 0)
            continue;
        if (t->expires_ms <= now)
            break;
        t->expires_ms = now + tk.ttl_ms; /* etcd's resetSimpleToken */
        ai->user = arena_memdup(a, t->user, t->ulen + 1);
        ai->len = t->ulen;
        return 0;
    }
    return CAIRN_EINVALIDAUTHTOKEN;
}

int auth__token_info(const char *tok, size_t len, struct arena *a,
                     struct auth_info *ai)
{
    switch (tk.kind) {
    case TOK_SIMPLE:
        return simple_info(tok, len, a, ai);
    case TOK_JWT: {
        char *user;
        size_t ulen;
        uint64_t rev;
        int rc = auth_jwt_verify(tk.jwt, tok, len, (int64_t)time(NULL) /* JWT exp: Unix time */, a,
                                 &user, &ulen, &rev);
        if (rc != 0)
            return rc;
        ai->user = user;
        ai->len = ulen;
        ai->rev = rev;
        return 0;
    }
    case TOK_NOP:
        break;
    }
    return CAIRN_EINVALIDAUTHTOKEN;
}

static void random_letters(char *out, size_t n)
{
    static const char letters[] =
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    size_t i = 0;
    while (i < n) {
        uint8_t b[32];
        if (RAND_bytes(b, sizeof b) != 1)
            abort(); /* no randomness: tokens would be guessable */
        for (size_t j = 0; j < sizeof b && i < n; j++)
            if (b[j] < 4 * 52) /* rejection keeps the letters uniform */
                out[i++] = letters[b[j] % 52];
    }
}

int auth_token_assign(const char *user, size_t ulen, uint64_t index,
                      char **token)
{
    if (tk.kind == TOK_NOP)
        return CAIRN_EAUTHFAILED;
    if (tk.kind == TOK_JWT)
        return auth_jwt_sign(tk.jwt, user, ulen, auth_revision(),
                             (int64_t)time(NULL) /* JWT exp: Unix time */, token);
    int64_t now = now_ms();
    char buf[SIMPLE_PREFIX_LEN + 32];
    random_letters(buf, SIMPLE_PREFIX_LEN);
    int n = snprintf(buf + SIMPLE_PREFIX_LEN, sizeof buf - SIMPLE_PREFIX_LEN,
                     ".%llu", (unsigned long long)index);
    struct tok *t = cairn_calloc(1, sizeof *t);
    t->tlen = SIMPLE_PREFIX_LEN + (size_t)n;
    t->token = cairn_malloc(t->tlen + 1);
    memcpy(t->token, buf, t->tlen + 1);
    t->user = cairn_malloc(ulen + 1);
    memcpy(t->user, user, ulen);
    t->user[ulen] = 0;
    t->ulen = ulen;
    t->expires_ms = now + tk.ttl_ms;
    uint32_t h = fnv(t->token, t->tlen) % TOK_BUCKETS;
    t->next = tk.b[h];
    tk.b[h] = t;
    tk.count++;
    maybe_sweep(now);
    *token = cairn_strdup(t->token);
    return 0;
}

/* etcd's decomposeOpts: "type,k=v,...", each pair exactly one "=", no key
 * twice. The pairs are handed on for the JWT provider. */
int auth__tokens_init(const struct auth_opts *o, char *err, size_t errlen)
{
    const char *s = o->token_opts ? o->token_opts : "simple";
    const char *comma = strchr(s, ',');
    size_t tlen = comma ? (size_t)(comma - s) : strlen(s);

    memset(&tk, 0, sizeof tk);
    tk.ttl_ms = (o->token_ttl_s > 0 ? o->token_ttl_s : 300) * 1000;
    if (tlen == 6 && memcmp(s, "simple", 6) == 0) {
        tk.kind = TOK_SIMPLE;
        /* etcd ignores options after "simple" but still checks them */
        return comma ? auth_jwt_check_pairs(comma + 1, err, errlen) : 0;
    }
    if (tlen == 3 && memcmp(s, "jwt", 3) == 0) {
        tk.kind = TOK_JWT;
        return auth_jwt_new(comma ? comma + 1 : "", &tk.jwt, err, errlen);
    }
    if (tlen == 0) {
        tk.kind = TOK_NOP;
        return comma ? auth_jwt_check_pairs(comma + 1, err, errlen) : 0;
    }
    snprintf(err, errlen, "auth: invalid auth options");
    return -EINVAL;
}

void auth__tokens_close(void)
{
    auth__tokens_clear();
    auth_jwt_free(tk.jwt);
    tk.jwt = NULL;
}

/* ---- bcrypt ---- */

int auth_bcrypt_hash(const char *pw, size_t len, int cost, char out[128])
{
    char salt[CRYPT_GENSALT_OUTPUT_SIZE], rnd[16], *pwz;
    struct crypt_data *cd;
    int rc = -EINVAL;

    if (RAND_bytes((unsigned char *)rnd, sizeof rnd) != 1)
        return -EIO;
    if (crypt_gensalt_rn("$2b$", (unsigned long)cost, rnd, sizeof rnd, salt,
                         sizeof salt) == NULL)
        return -EINVAL;
    pwz = cairn_malloc(len + 1);
    memcpy(pwz, pw, len);
    pwz[len] = 0;
    cd = cairn_calloc(1, sizeof *cd);
    const char *h = crypt_r(pwz, salt, cd);
    if (h != NULL && h[0] == '$' && strlen(h) < 128) {
        strcpy(out, h);
        rc = 0;
    }
    OPENSSL_cleanse(pwz, len);
    cairn_free(pwz);
    OPENSSL_cleanse(cd, sizeof *cd);
    cairn_free(cd);
    return rc;
}

int auth_bcrypt_check(const char *pw, size_t len, const char *hash)
{
    struct crypt_data *cd;
    char *pwz;
    int ok = 0;
    size_t hl = strlen(hash);

    if (hl < 7 || hash[0] != '$' || hash[1] != '2')
        return 0;
    pwz = cairn_malloc(len + 1);
    memcpy(pwz, pw, len);
    pwz[len] = 0;
    cd = cairn_calloc(1, sizeof *cd);
    const char *h = crypt_r(pwz, hash, cd);
    if (h != NULL && strlen(h) == hl)
        ok = CRYPTO_memcmp(h, hash, hl) == 0;
    OPENSSL_cleanse(pwz, len);
    cairn_free(pwz);
    cairn_free(cd);
    return ok;
}

/* ---- brute force ----
 * Per user name (hashed into a fixed table, so memory stays bounded
 * whatever names an attacker tries): the first LIMIT_FREE failures in a
 * row cost nothing; after that each failure locks the name for
 * LIMIT_BASE_MS doubled per further failure, up to LIMIT_MAX_MS. While
 * locked, Authenticate answers etcd's "authentication failed" at once,
 * without running bcrypt. A success clears the name. */
#define LIMIT_SLOTS 4096
#define LIMIT_FREE 5
#define LIMIT_BASE_MS 250
#define LIMIT_MAX_MS 30000

static struct limit {
    uint32_t h;
    uint32_t failures;
    int64_t until_ms;
} limits[LIMIT_SLOTS];

int auth_limit_check(const char *user, size_t ulen, int64_t now_ms)
{
    uint32_t h = fnv(user, ulen);
    struct limit *l = &limits[h % LIMIT_SLOTS];
    if (l->h == h && l->until_ms > now_ms)
        return CAIRN_EAUTHFAILED;
    return 0;
}

void auth_limit_result(const char *user, size_t ulen, int ok, int64_t now_ms)
{
    uint32_t h = fnv(user, ulen);
    struct limit *l = &limits[h % LIMIT_SLOTS];
    if (l->h != h) {
        if (ok)
            return;
        l->h = h;
        l->failures = 0;
        l->until_ms = 0;
    }
    if (ok) {
        l->failures = 0;
        l->until_ms = 0;
        return;
    }
    if (++l->failures <= LIMIT_FREE)
        return;
    uint32_t shift = l->failures - LIMIT_FREE - 1;
    int64_t d = shift >= 7 ? LIMIT_MAX_MS : (int64_t)LIMIT_BASE_MS << shift;
    l->until_ms = now_ms + (d < LIMIT_MAX_MS ? d : LIMIT_MAX_MS);
}
