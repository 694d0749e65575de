/* AES-256-GCM envelopes with OpenSSL's EVP interface and the key file. */
#include "crypt/crypt.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/mem.h"

#define KEYFILE_MAX (64 * 1024)

static int fail(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (err != NULL && errlen > 0)
        vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

static int b64val(int c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

/* Standard base64 with optional padding; exactly @want bytes or -1. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t want)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    while (n > 0 && s[n - 1] == '=')
        n--;
    for (size_t i = 0; i < n; i++) {
        int v = b64val((unsigned char)s[i]);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == want)
                return -1;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    return o == want && (acc & ((1u << bits) - 1)) == 0 ? 0 : -1;
}

static int name_ok(const char *s, size_t n)
{
    if (n == 0 || n > CRYPT_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

static size_t trim(const char **s, size_t n)
{
    while (n > 0 && (**s == ' ' || **s == '\t')) {
        (*s)++;
        n--;
    }
    while (n > 0 && ((*s)[n - 1] == ' ' || (*s)[n - 1] == '\t' ||
                     (*s)[n - 1] == '\r'))
        n--;
    return n;
}

/* One "name:base64key" line into @k. */
static int parse_line(const char *l, size_t n, struct crypt_key *k)
{
    const char *colon = memchr(l, ':', n);
    if (colon == NULL)
        return -1;
    const char *name = l, *val = colon + 1;
    size_t nl = trim(&name, (size_t)(colon - l));
    size_t vl = trim(&val, n - (size_t)(val - l));
    if (!name_ok(name, nl) || b64_decode(val, vl, k->key, CRYPT_KEY_LEN) != 0)
        return -1;
    memcpy(k->name, name, nl);
    k->name[nl] = 0;
    k->name_len = nl;
    return 0;
}

int crypt_ring_parse(const char *text, size_t len, const char *src,
                     struct crypt_ring **out, char *err, size_t errlen)
{
    struct crypt_ring *r = cairn_calloc(1, sizeof *r);
    const char *p = text, *end = text + len;
    int line = 0, rc;

    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end, *l = p;
        size_t n = trim(&l, (size_t)(le - p));
        p = nl ? nl + 1 : end;
        line++;
        if (n == 0 || l[0] == '#')
            continue;
        if (r->n == CRYPT_MAX_KEYS) {
            rc = fail(err, errlen, -EINVAL, "%s: more than %d keys", src,
                      CRYPT_MAX_KEYS);
            goto err_free_ring;
        }
        if (parse_line(l, n, &r->keys[r->n]) != 0) {
            rc = fail(err, errlen, -EINVAL,
                      "%s: line %d is not name:base64key (name: 1-%d of "
                      "A-Z a-z 0-9 . _ -; key: 32 bytes in base64)",
                      src, line, CRYPT_NAME_MAX);
            goto err_free_ring;
        }
        for (int i = 0; i < r->n; i++)
            if (strcmp(r->keys[i].name, r->keys[r->n].name) == 0) {
                rc = fail(err, errlen, -EINVAL, "%s: line %d: key name \"%s\" "
                          "appears twice", src, line, r->keys[i].name);
                goto err_free_ring;
            }
        r->n++;
    }
    if (r->n == 0) {
        rc = fail(err, errlen, -EINVAL, "%s: holds no key", src);
        goto err_free_ring;
    }
    *out = r;
    return 0;

err_free_ring:
    crypt_ring_free(r);
    return rc;
}

int crypt_ring_load(const char *path, struct crypt_ring **out, char *err,
                    size_t errlen)
{
    struct stat st;
    char *buf;
    ssize_t n;
    int fd, rc;

    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, -errno, "cannot open encryption key file %s: "
                    "%s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        rc = fail(err, errlen, -errno, "cannot stat %s: %s", path,
                  strerror(errno));
        goto err_close;
    }
    /* Keys that others can read are no secret: refuse rather than use. */
    if (st.st_mode & S_IRWXO) {
        rc = fail(err, errlen, -EPERM, "encryption key file %s is accessible "
                  "to other users (mode %04o); chmod 600 it", path,
                  (unsigned)(st.st_mode & 07777));
        goto err_close;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > KEYFILE_MAX) {
        rc = fail(err, errlen, -EINVAL, "encryption key file %s is not a "
                  "regular file of at most %d bytes", path, KEYFILE_MAX);
        goto err_close;
    }
    buf = cairn_malloc((size_t)st.st_size + 1);
    n = read(fd, buf, (size_t)st.st_size);
    if (n < 0) {
        rc = fail(err, errlen, -errno, "cannot read %s: %s", path,
                  strerror(errno));
        goto err_free_buf;
    }
    rc = crypt_ring_parse(buf, (size_t)n, path, out, err, errlen);
err_free_buf:
    OPENSSL_cleanse(buf, (size_t)st.st_size + 1);
    cairn_free(buf);
err_close:
    close(fd);
    return rc;
}

void crypt_ring_free(struct crypt_ring *r)
{
    while (r != NULL) {
        struct crypt_ring *prev = r->prev;
        OPENSSL_cleanse(r, sizeof *r);
        cairn_free(r);
        r = prev;
    }
}

const struct crypt_key *crypt_ring_find(const struct crypt_ring *r,
                                        const char *name, size_t len)
{
    for (; r != NULL; r = r->prev)
        for (int i = 0; i < r->n; i++)
            if (r->keys[i].name_len == len &&
                memcmp(r->keys[i].name, name, len) == 0)
                return &r->keys[i];
    return NULL;
}

size_t crypt_sealed_size(const struct crypt_key *k, size_t n)
{
    return CRYPT_OVERHEAD + k->name_len + n;
}

int crypt_is_sealed(const void *p, size_t n)
{
    const uint8_t *b = p;
    return n >= CRYPT_OVERHEAD + 1 && b[0] == CRYPT_MAGIC && b[1] >= 1 &&
           b[1] <= CRYPT_NAME_MAX && n >= CRYPT_OVERHEAD + (size_t)b[1];
}

int crypt_sealed_name(const void *p, size_t n, const char **name, size_t *len)
{
    if (!crypt_is_sealed(p, n))
        return -EBADMSG;
    *name = (const char *)p + 2;
    *len = ((const uint8_t *)p)[1];
    return 0;
}

size_t crypt_plain_size(const void *p, size_t n)
{
    return n - CRYPT_OVERHEAD - ((const uint8_t *)p)[1];
}

/* Setting a cipher up (OpenSSL 3's fetch, the AES key schedule) costs far
 * more than sealing a small record: each thread keeps one context per
 * direction with the last key's schedule, and only the nonce changes per
 * record. The key bytes are compared, not the pointer: a freed ring's key
 * may be reallocated at the same address. Freed at thread exit. */
struct gcm_cache {
    EVP_CIPHER_CTX *ctx[2];
    uint8_t key[2][CRYPT_KEY_LEN];
    int have[2];
};

static pthread_key_t cache_key;
static pthread_once_t cache_once = PTHREAD_ONCE_INIT;

static void cache_free(void *p)
{
    struct gcm_cache *c = p;
    for (int i = 0; i < 2; i++)
        EVP_CIPHER_CTX_free(c->ctx[i]);
    OPENSSL_cleanse(c, sizeof *c);
    cairn_free(c);
}

static void cache_init(void)
{
    pthread_key_create(&cache_key, cache_free);
}

static EVP_CIPHER_CTX *gcm_ctx(int enc, const struct crypt_key *k)
{
    struct gcm_cache *c;
    pthread_once(&cache_once, cache_init);
    if ((c = pthread_getspecific(cache_key)) == NULL) {
        c = cairn_calloc(1, sizeof *c);
        pthread_setspecific(cache_key, c);
    }
    if (c->ctx[enc] == NULL) {
        c->ctx[enc] = EVP_CIPHER_CTX_new();
        if (c->ctx[enc] == NULL ||
            !EVP_CipherInit_ex(c->ctx[enc], EVP_aes_256_gcm(), NULL, NULL,
                               NULL, enc) ||
            !EVP_CIPHER_CTX_ctrl(c->ctx[enc], EVP_CTRL_GCM_SET_IVLEN,
                                 CRYPT_NONCE_LEN, NULL)) {
            EVP_CIPHER_CTX_free(c->ctx[enc]);
            c->ctx[enc] = NULL;
            return NULL;
        }
        c->have[enc] = 0;
    }
    if (!c->have[enc] || memcmp(c->key[enc], k->key, CRYPT_KEY_LEN) != 0) {
        if (!EVP_CipherInit_ex(c->ctx[enc], NULL, NULL, k->key, NULL, enc))
            return NULL;
        memcpy(c->key[enc], k->key, CRYPT_KEY_LEN);
        c->have[enc] = 1;
    }
    return c->ctx[enc];
}

/* GCM's AAD: the envelope's head (magic, name length, name), then the
 * caller's: the key name is bound as tightly as where the record lives. */
static int gcm(int enc, const struct crypt_key *k, const uint8_t *head,
               size_t headlen, const void *aad, size_t aadlen,
               const uint8_t *nonce, const uint8_t *in, size_t n,
               uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *ctx = gcm_ctx(enc, k);
    int len, ok;
    if (ctx == NULL)
        return -EIO;
    ok = EVP_CipherInit_ex(ctx, NULL, NULL, NULL, nonce, enc) &&
         EVP_CipherUpdate(ctx, NULL, &len, head, (int)headlen) &&
         (aadlen == 0 ||
          EVP_CipherUpdate(ctx, NULL, &len, aad, (int)aadlen)) &&
         (n == 0 || EVP_CipherUpdate(ctx, out, &len, in, (int)n));
    if (ok && !enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, CRYPT_TAG_LEN,
                                 tag);
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + n, &len) > 0;
    if (ok && enc)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, CRYPT_TAG_LEN,
                                 tag);
    return ok ? 0 : enc ? -EIO : -EBADMSG;
}

int crypt_seal(const struct crypt_key *k, const void *aad, size_t aadlen,
               const void *plain, size_t n, uint8_t *out)
{
    size_t head = 2 + k->name_len;
    uint8_t *nonce = out + head, *ct = nonce + CRYPT_NONCE_LEN;
    out[0] = CRYPT_MAGIC;
    out[1] = (uint8_t)k->name_len;
    memcpy(out + 2, k->name, k->name_len);
    if (RAND_bytes(nonce, CRYPT_NONCE_LEN) != 1)
        return -EIO;
    return gcm(1, k, out, head, aad, aadlen, nonce, plain, n, ct, ct + n);
}

int crypt_open_key(const struct crypt_key *k, const void *aad, size_t aadlen,
                   const void *p, size_t n, uint8_t *out, size_t *outlen)
{
    const uint8_t *b = p;
    if (!crypt_is_sealed(p, n) || b[1] != k->name_len ||
        memcmp(b + 2, k->name, k->name_len) != 0)
        return -EBADMSG;
    size_t head = 2 + k->name_len, pn = crypt_plain_size(p, n);
    const uint8_t *nonce = b + head, *ct = nonce + CRYPT_NONCE_LEN;
    int rc = gcm(0, k, b, head, aad, aadlen, nonce, ct, pn, out,
                 (uint8_t *)(uintptr_t)(ct + pn));
    if (rc != 0) {
        OPENSSL_cleanse(out, pn); /* no unauthenticated plaintext escapes */
        return rc;
    }
    *outlen = pn;
    return 0;
}

int crypt_open(const struct crypt_ring *ring, const void *aad, size_t aadlen,
               const void *p, size_t n, uint8_t *out, size_t *outlen)
{
    const char *name;
    size_t len;
    if (crypt_sealed_name(p, n, &name, &len) != 0)
        return -EBADMSG;
    const struct crypt_key *k = crypt_ring_find(ring, name, len);
    if (k == NULL)
        return -ENOKEY;
    return crypt_open_key(k, aad, aadlen, p, n, out, outlen);
}
