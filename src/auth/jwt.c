/* JWT tokens as etcd's auth/jwt.go (golang-jwt): header {"alg","typ"},
 * claims {"exp","revision","username"} (Go's json sorts map keys), signed
 * with RS*, PS* (salt = hash length; any salt verifies), ES* (r || s) or
 * HS* through OpenSSL's EVP. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include "auth/auth.h"
#include "auth/auth_int.h"
#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "server/config.h"

enum jwt_fam { JWT_RS, JWT_PS, JWT_ES, JWT_HS };

struct auth_jwt {
    char alg[8];
    enum jwt_fam fam;
    const EVP_MD *md;
    int ec_bytes;          /* ES: bytes of r and of s */
    EVP_PKEY *priv, *pub;  /* pub: the verifying key (priv's when given) */
    uint8_t *secret;       /* HS */
    size_t secret_len;
    int64_t ttl_s;
    int verify_only;
};

#define MAX_PAIRS 8

struct pair {
    const char *k, *v;
    size_t kl, vl;
};

static int split_pairs(const char *s, struct pair *p, int *n, char *err,
                       size_t errlen)
{
    *n = 0;
    while (*s) {
        const char *comma = strchr(s, ','), *end = comma ? comma : s + strlen(s);
        const char *eq = memchr(s, '=', (size_t)(end - s));
        if (eq == NULL || memchr(eq + 1, '=', (size_t)(end - eq - 1)) ||
            *n == MAX_PAIRS)
            goto bad;
        struct pair q = {s, eq + 1, (size_t)(eq - s), (size_t)(end - eq - 1)};
        for (int i = 0; i < *n; i++)
            if (p[i].kl == q.kl && memcmp(p[i].k, q.k, q.kl) == 0)
                goto bad; /* etcd: a key given twice */
        p[(*n)++] = q;
        if (comma == NULL)
            break;
        s = comma + 1;
        if (*s == 0)
            goto bad; /* a trailing comma is an empty pair */
    }
    return 0;
bad:
    snprintf(err, errlen, "auth: invalid auth options");
    return -EINVAL;
}

int auth_jwt_check_pairs(const char *pairs, char *err, size_t errlen)
{
    struct pair p[MAX_PAIRS];
    int n;
    return split_pairs(pairs, p, &n, err, errlen);
}

static char *pair_get(const struct pair *p, int n, const char *k)
{
    for (int i = 0; i < n; i++)
        if (p[i].kl == strlen(k) && memcmp(p[i].k, k, p[i].kl) == 0) {
            char *v = cairn_malloc(p[i].vl + 1);
            memcpy(v, p[i].v, p[i].vl);
            v[p[i].vl] = 0;
            return v;
        }
    return NULL;
}

static int set_method(struct auth_jwt *j, const char *m)
{
    static const struct {
        const char *name;
        enum jwt_fam fam;
    } fams[] = {{"RS", JWT_RS}, {"PS", JWT_PS}, {"ES", JWT_ES}, {"HS", JWT_HS}};
    if (m == NULL || strlen(m) != 5)
        return -EINVAL;
    for (size_t i = 0; i < 4; i++) {
        if (memcmp(m, fams[i].name, 2) != 0)
            continue;
        j->fam = fams[i].fam;
        if (strcmp(m + 2, "256") == 0)
            j->md = EVP_sha256(), j->ec_bytes = 32;
        else if (strcmp(m + 2, "384") == 0)
            j->md = EVP_sha384(), j->ec_bytes = 48;
        else if (strcmp(m + 2, "512") == 0)
            j->md = EVP_sha512(), j->ec_bytes = 66; /* P-521 */
        else
            return -EINVAL;
        strcpy(j->alg, m);
        return 0;
    }
    return -EINVAL;
}

static EVP_PKEY *read_key(const char *path, int priv)
{
    FILE *f = fopen(path, "r");
    EVP_PKEY *k;
    if (f == NULL)
        return NULL;
    k = priv ? PEM_read_PrivateKey(f, NULL, NULL, NULL)
             : PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    return k;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return -errno;
    size_t cap = 4096, n = 0;
    uint8_t *b = cairn_malloc(cap);
    for (;;) {
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0)
            break;
        if (n == cap)
            b = cairn_realloc(b, cap *= 2);
    }
    fclose(f);
    *out = b;
    *len = n;
    return 0;
}

static int load_keys(struct auth_jwt *j, const char *pubf, const char *privf,
                     char *err, size_t errlen)
{
    int want = j->fam == JWT_ES ? EVP_PKEY_EC : EVP_PKEY_RSA;
    if (j->fam == JWT_HS) {
        if (privf == NULL || read_file(privf, &j->secret, &j->secret_len) != 0 ||
            j->secret_len == 0) {
            snprintf(err, errlen, "auth: missing key data");
            return -EINVAL;
        }
        return 0;
    }
    if (privf != NULL && (j->priv = read_key(privf, 1)) == NULL)
        goto bad_key;
    if (pubf != NULL && (j->pub = read_key(pubf, 0)) == NULL)
        goto bad_key;
    if (j->priv == NULL && j->pub == NULL) {
        snprintf(err, errlen, "auth: missing key data");
        return -EINVAL;
    }
    if ((j->priv && EVP_PKEY_base_id(j->priv) != want) ||
        (j->pub && EVP_PKEY_base_id(j->pub) != want))
        goto bad_key;
    if (j->priv && j->pub && EVP_PKEY_eq(j->priv, j->pub) != 1) {
        snprintf(err, errlen, "auth: public and private keys don't match");
        return -EINVAL;
    }
    if (j->priv) {
        EVP_PKEY_free(j->pub);
        j->pub = j->priv;
        EVP_PKEY_up_ref(j->pub);
    } else {
        j->verify_only = 1;
    }
    if (j->fam == JWT_ES && (EVP_PKEY_bits(j->pub) + 7) / 8 != j->ec_bytes) {
        snprintf(err, errlen, "key is invalid"); /* jwt-go's ErrInvalidKey */
        return -EINVAL;
    }
    return 0;
bad_key:
    snprintf(err, errlen, "auth: cannot read the %s key for %s", want == EVP_PKEY_EC ? "EC" : "RSA", j->alg);
    return -EINVAL;
}

int auth_jwt_new(const char *opts, struct auth_jwt **out, char *err,
                 size_t errlen)
{
    struct pair p[MAX_PAIRS];
    int n, rc;
    struct auth_jwt *j;
    char *ttl, *method, *pubf, *privf;

    if ((rc = split_pairs(opts, p, &n, err, errlen)) != 0)
        return rc;
    j = cairn_calloc(1, sizeof *j);
    ttl = pair_get(p, n, "ttl");
    method = pair_get(p, n, "sign-method");
    pubf = pair_get(p, n, "pub-key");
    privf = pair_get(p, n, "priv-key");
    for (int i = 0; i < n; i++)
        if (!(p[i].kl == 3 && memcmp(p[i].k, "ttl", 3) == 0) &&
            !(p[i].kl == 11 && memcmp(p[i].k, "sign-method", 11) == 0) &&
            !(p[i].kl == 7 && memcmp(p[i].k, "pub-key", 7) == 0) &&
            !(p[i].kl == 8 && memcmp(p[i].k, "priv-key", 8) == 0))
            log_warn("auth: unknown JWT options option=%.*s", (int)p[i].kl, p[i].k);
    j->ttl_s = 300; /* etcd's DefaultTTL, 5m */
    int64_t ms;
    rc = -EINVAL;
    if (ttl != NULL && ttl[0] != 0) {
        if (config_duration_ms(ttl, &ms) != 0) {
            snprintf(err, errlen, "auth: invalid auth options");
            goto out;
        }
        j->ttl_s = ms / 1000;
    }
    if (set_method(j, method) != 0) {
        snprintf(err, errlen, "auth: invalid auth options");
        goto out;
    }
    rc = load_keys(j, pubf, privf, err, errlen);
out:
    cairn_free(ttl);
    cairn_free(method);
    cairn_free(pubf);
    cairn_free(privf);
    if (rc != 0) {
        auth_jwt_free(j);
        return rc;
    }
    *out = j;
    return 0;
}

void auth_jwt_free(struct auth_jwt *j)
{
    if (j == NULL)
        return;
    EVP_PKEY_free(j->priv);
    EVP_PKEY_free(j->pub);
    cairn_free(j->secret);
    cairn_free(j);
}

/* ---- base64url without padding ---- */

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static size_t b64_enc(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i;
    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
        out[o++] = b64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64[v >> 18];
        out[o++] = b64[(v >> 12) & 63];
        out[o++] = b64[(v >> 6) & 63];
    }
    return o;
}

/* Go's base64.RawURLEncoding (jwt-go strips padding and tolerates it). */
static int b64_dec(const char *in, size_t n, uint8_t *out, size_t *outlen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        const char *p = memchr(b64, in[i], 64);
        if (p == NULL || in[i] == 0)
            return -EINVAL;
        acc = acc << 6 | (uint32_t)(p - b64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *outlen = o;
    return 0;
}

/* ---- signing ---- */

static int do_sign(struct auth_jwt *j, const uint8_t *msg, size_t n,
                   uint8_t *sig, size_t *slen)
{
    if (j->fam == JWT_HS) {
        unsigned int l = 0;
        if (HMAC(j->md, j->secret, (int)j->secret_len, msg, n, sig, &l) == NULL)
            return -EIO;
        *slen = l;
        return 0;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t der[256];
    size_t dl = sizeof der;
    int rc = -EIO;
    if (ctx == NULL || EVP_DigestSignInit(ctx, &pctx, j->md, NULL, j->priv) != 1)
        goto out;
    if (j->fam == JWT_PS &&
        (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) != 1))
        goto out;
    if (j->fam != JWT_ES) {
        if (EVP_DigestSign(ctx, sig, slen, msg, n) == 1)
            rc = 0;
        goto out;
    }
    if (EVP_DigestSign(ctx, der, &dl, msg, n) != 1)
        goto out;
    const uint8_t *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)dl);
    if (es == NULL)
        goto out;
    const BIGNUM *r, *s;
    ECDSA_SIG_get0(es, &r, &s);
    if (BN_bn2binpad(r, sig, j->ec_bytes) == j->ec_bytes &&
        BN_bn2binpad(s, sig + j->ec_bytes, j->ec_bytes) == j->ec_bytes) {
        *slen = (size_t)(2 * j->ec_bytes);
        rc = 0;
    }
    ECDSA_SIG_free(es);
out:
    EVP_MD_CTX_free(ctx);
    return rc;
}

static size_t json_str(char *out, const char *s, size_t n)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            /* Go's encoding/json escapes these (HTML-safe) */
            o += (size_t)sprintf(out + o, "\\u%04x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    out[o++] = '"';
    return o;
}

int auth_jwt_sign(struct auth_jwt *j, const char *user, size_t ulen,
                  uint64_t rev, int64_t now_s, char **token)
{
    char hdr[64], *claims, *tok;
    uint8_t sig[1024];
    size_t hl, cl, sl = sizeof sig, n;
    if (j->verify_only)
        return CAIRN_EAUTHFAILED; /* etcd: ErrVerifyOnly, sent as UNKNOWN */
    hl = (size_t)snprintf(hdr, sizeof hdr, "{\"alg\":\"%s\",\"typ\":\"JWT\"}", j->alg);
    claims = cairn_malloc(ulen * 6 + 96);
    cl = (size_t)sprintf(claims, "{\"exp\":%lld,\"revision\":%llu,\"username\":",
                         (long long)(now_s + j->ttl_s), (unsigned long long)rev);
    cl += json_str(claims + cl, user, ulen);
    claims[cl++] = '}';
    tok = cairn_malloc((hl + cl) * 4 / 3 + sizeof sig * 4 / 3 + 16);
    n = b64_enc((const uint8_t *)hdr, hl, tok);
    tok[n++] = '.';
    n += b64_enc((const uint8_t *)claims, cl, tok + n);
    cairn_free(claims);
    if (do_sign(j, (const uint8_t *)tok, n, sig, &sl) != 0) {
        cairn_free(tok);
        return CAIRN_EAUTHFAILED;
    }
    tok[n++] = '.';
    n += b64_enc(sig, sl, tok + n);
    tok[n] = 0;
    *token = tok;
    return 0;
}

/* ---- verifying ---- */

static int do_verify(struct auth_jwt *j, const uint8_t *msg, size_t n,
                     const uint8_t *sig, size_t sl)
{
    if (j->fam == JWT_HS) {
        uint8_t mac[EVP_MAX_MD_SIZE];
        unsigned int l = 0;
        if (HMAC(j->md, j->secret, (int)j->secret_len, msg, n, mac, &l) == NULL)
            return 0;
        return l == sl && CRYPTO_memcmp(mac, sig, l) == 0;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    uint8_t *der = NULL;
    int ok = 0, dl;
    if (ctx == NULL || EVP_DigestVerifyInit(ctx, &pctx, j->md, NULL, j->pub) != 1)
        goto out;
    if (j->fam == JWT_PS &&
        (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) != 1 ||
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) != 1))
        goto out;
    if (j->fam != JWT_ES) {
        ok = EVP_DigestVerify(ctx, sig, sl, msg, n) == 1;
        goto out;
    }
    if (sl != (size_t)(2 * j->ec_bytes))
        goto out;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, j->ec_bytes, NULL);
    BIGNUM *s = BN_bin2bn(sig + j->ec_bytes, j->ec_bytes, NULL);
    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        ECDSA_SIG_free(es);
        goto out;
    }
    dl = i2d_ECDSA_SIG(es, &der);
    if (dl > 0)
        ok = EVP_DigestVerify(ctx, der, (size_t)dl, msg, n) == 1;
    OPENSSL_free(der);
    ECDSA_SIG_free(es);
out:
    EVP_MD_CTX_free(ctx);
    return ok;
}

/* A flat JSON object's members, enough for JWT headers and etcd's claims:
 * strings (unescaped into @a), numbers, booleans and null; nested values
 * make the token invalid (etcd's tokens have none). */
struct jclaims {
    char *alg, *username;
    size_t ulen;
    int has_exp, has_rev, has_nbf, has_iat;
    double exp, rev, nbf, iat;
};

static void ws(const char **p, const char *e)
{
    while (*p < e && (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r'))
        (*p)++;
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int jstring(const char **p, const char *e, struct arena *a, char **out,
                   size_t *olen)
{
    const char *s = *p + 1;
    char *b = arena_alloc(a, (size_t)(e - s) * 3 + 1);
    size_t o = 0;
    while (s < e && *s != '"') {
        unsigned char c = (unsigned char)*s++;
        if (c < 0x20)
            return -1;
        if (c != '\\') {
            b[o++] = (char)c;
            continue;
        }
        if (s >= e)
            return -1;
        c = (unsigned char)*s++;
        switch (c) {
        case '"': case '\\': case '/': b[o++] = (char)c; break;
        case 'b': b[o++] = '\b'; break;
        case 'f': b[o++] = '\f'; break;
        case 'n': b[o++] = '\n'; break;
        case 'r': b[o++] = '\r'; break;
        case 't': b[o++] = '\t'; break;
        case 'u': {
            int v = 0;
            if (e - s < 4)
                return -1;
            for (int i = 0; i < 4; i++) {
                int h = hexv(s[i]);
                if (h < 0)
                    return -1;
                v = v << 4 | h;
            }
            s += 4;
            if (v >= 0xd800 && v < 0xe000)
                v = 0xfffd; /* surrogates: Go decodes pairs; rare in names */
            if (v < 0x80) {
                b[o++] = (char)v;
            } else if (v < 0x800) {
                b[o++] = (char)(0xc0 | v >> 6);
                b[o++] = (char)(0x80 | (v & 0x3f));
            } else {
                b[o++] = (char)(0xe0 | v >> 12);
                b[o++] = (char)(0x80 | ((v >> 6) & 0x3f));
                b[o++] = (char)(0x80 | (v & 0x3f));
            }
            break;
        }
        default:
            return -1;
        }
    }
    if (s >= e)
        return -1;
    b[o] = 0;
    *out = b;
    *olen = o;
    *p = s + 1;
    return 0;
}

static int jnumber(const char **p, const char *e, double *v)
{
    char buf[64];
    size_t n = 0;
    while (*p + n < e && n < sizeof buf - 1 && strchr("+-0123456789.eE", (*p)[n]))
        n++;
    if (n == 0 || n == sizeof buf - 1)
        return -1;
    memcpy(buf, *p, n);
    buf[n] = 0;
    char *end;
    *v = strtod(buf, &end);
    if (*end != 0)
        return -1;
    *p += n;
    return 0;
}

int auth__jwt_json(const char *s, size_t n, struct arena *a, struct jclaims *c);
int auth__jwt_json(const char *s, size_t n, struct arena *a, struct jclaims *c)
{
    const char *p = s, *e = s + n;
    memset(c, 0, sizeof *c);
    ws(&p, e);
    if (p >= e || *p++ != '{')
        return -1;
    ws(&p, e);
    if (p < e && *p == '}')
        goto end;
    for (;;) {
        char *k, *sv = NULL;
        size_t kl, sl = 0;
        double num = 0;
        int is_num = 0;
        ws(&p, e);
        if (p >= e || *p != '"' || jstring(&p, e, a, &k, &kl) != 0)
            return -1;
        ws(&p, e);
        if (p >= e || *p++ != ':')
            return -1;
        ws(&p, e);
        if (p >= e)
            return -1;
        if (*p == '"') {
            if (jstring(&p, e, a, &sv, &sl) != 0)
                return -1;
        } else if (e - p >= 4 && (memcmp(p, "true", 4) == 0 || memcmp(p, "null", 4) == 0)) {
            p += 4;
        } else if (e - p >= 5 && memcmp(p, "false", 5) == 0) {
            p += 5;
        } else if (jnumber(&p, e, &num) == 0) {
            is_num = 1;
        } else {
            return -1;
        }
        if (strcmp(k, "alg") == 0 && sv)
            c->alg = sv;
        else if (strcmp(k, "username") == 0 && sv)
            c->username = sv, c->ulen = sl;
        else if (strcmp(k, "exp") == 0 && is_num)
            c->has_exp = 1, c->exp = num;
        else if (strcmp(k, "revision") == 0 && is_num)
            c->has_rev = 1, c->rev = num;
        else if (strcmp(k, "nbf") == 0 && is_num)
            c->has_nbf = 1, c->nbf = num;
        else if (strcmp(k, "iat") == 0 && is_num)
            c->has_iat = 1, c->iat = num;
        ws(&p, e);
        if (p < e && *p == ',') {
            p++;
            continue;
        }
        break;
    }
    if (p >= e || *p != '}')
        return -1;
end:
    p++;
    ws(&p, e);
    return p == e ? 0 : -1;
}

int auth_jwt_verify(struct auth_jwt *j, const char *tok, size_t len,
                    int64_t now_s, struct arena *a, char **user, size_t *ulen,
                    uint64_t *rev)
{
    const char *d1 = memchr(tok, '.', len), *d2;
    struct jclaims h, c;
    uint8_t *buf, sig[1024];
    size_t n, sl;

    if (j == NULL || d1 == NULL)
        return CAIRN_EINVALIDAUTHTOKEN;
    d2 = memchr(d1 + 1, '.', len - (size_t)(d1 + 1 - tok));
    if (d2 == NULL || memchr(d2 + 1, '.', len - (size_t)(d2 + 1 - tok)))
        return CAIRN_EINVALIDAUTHTOKEN;
    buf = arena_alloc(a, len + 1);
    if (b64_dec(tok, (size_t)(d1 - tok), buf, &n) != 0 ||
        auth__jwt_json((char *)buf, n, a, &h) != 0 || h.alg == NULL ||
        strcmp(h.alg, j->alg) != 0)
        return CAIRN_EINVALIDAUTHTOKEN;
    if (b64_dec(d1 + 1, (size_t)(d2 - d1 - 1), buf, &n) != 0 ||
        auth__jwt_json((char *)buf, n, a, &c) != 0)
        return CAIRN_EINVALIDAUTHTOKEN;
    /* golang-jwt: exp (now <= exp), iat (now >= iat), nbf (now >= nbf) */
    if ((c.has_exp && c.exp != 0 && (double)now_s > c.exp) ||
        (c.has_iat && c.iat != 0 && (double)now_s < c.iat) ||
        (c.has_nbf && c.nbf != 0 && (double)now_s < c.nbf))
        return CAIRN_EINVALIDAUTHTOKEN;
    size_t slen = len - (size_t)(d2 + 1 - tok);
    if (slen > sizeof sig * 4 / 3 || b64_dec(d2 + 1, slen, sig, &sl) != 0 ||
        !do_verify(j, (const uint8_t *)tok, (size_t)(d2 - tok), sig, sl))
        return CAIRN_EINVALIDAUTHTOKEN;
    /* etcd reads both claims unchecked (and would panic without them) */
    if (c.username == NULL || !c.has_rev || c.rev < 0 || c.rev > 1.8e19)
        return CAIRN_EINVALIDAUTHTOKEN;
    *user = c.username;
    *ulen = c.ulen;
    *rev = (uint64_t)c.rev;
    return 0;
}
