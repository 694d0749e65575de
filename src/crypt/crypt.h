/* Encryption at rest: named AES-256-GCM keys (a key ring read from a key
 * file) and the sealed envelope every encrypted record is stored in. No
 * storage here: mvcc/seal.c decides what is sealed and with which AAD.
 *
 * Key file (--experimental-encryption-key-file): one key per line,
 *     name:base64key
 * name = 1..32 of [A-Za-z0-9._-], base64key = 32 bytes in standard base64
 * (`head -c 32 /dev/urandom | base64`). Blank lines and lines starting with
 * '#' are ignored. The FIRST key encrypts new writes; the others only
 * decrypt records written before a rotation. The file must not be
 * accessible to others (mode & 007 == 0) and must hold 1..16 keys with
 * distinct names.
 *
 * Sealed envelope (what a record's value becomes):
 *     0xC1 | u8 namelen | name | nonce[12] | ciphertext | tag[16]
 * GCM's associated data is the envelope's first 2 + namelen bytes followed
 * by the caller's AAD, so a record cannot be moved to another place (other
 * AAD) or relabelled with another key name without failing to open. A
 * fresh random nonce per seal (96 bits: stay well below 2^32 seals per key;
 * rotate before). */
#ifndef CRYPT_CRYPT_H
#define CRYPT_CRYPT_H

#include <stddef.h>
#include <stdint.h>

#define CRYPT_KEY_LEN 32
#define CRYPT_NAME_MAX 32
#define CRYPT_MAX_KEYS 16
#define CRYPT_MAGIC 0xC1
#define CRYPT_NONCE_LEN 12
#define CRYPT_TAG_LEN 16
/* Envelope bytes besides the name and the ciphertext. */
#define CRYPT_OVERHEAD (2 + CRYPT_NONCE_LEN + CRYPT_TAG_LEN)

struct crypt_key {
    char name[CRYPT_NAME_MAX + 1];
    size_t name_len;
    uint8_t key[CRYPT_KEY_LEN];
};

/* Immutable once loaded; keys[0] is the key for new writes. @prev links a
 * ring replaced at run time (kept so that a read that began before the
 * swap can still open what it sees); the owner frees the chain. */
struct crypt_ring {
    int n;
    struct crypt_key keys[CRYPT_MAX_KEYS];
    struct crypt_ring *prev;
};

/* Reads and checks the key file. On failure a message naming the file
 * and the problem (never key bytes) is in @err. Errors: -errno (open,
 * read), -EPERM (accessible to others), -EINVAL (format). */
int crypt_ring_load(const char *path, struct crypt_ring **out, char *err,
                    size_t errlen);
/* The same from text (for tests); @src names it in messages. */
int crypt_ring_parse(const char *text, size_t len, const char *src,
                     struct crypt_ring **out, char *err, size_t errlen);
/* Wipes and frees @r and every ring on its prev chain. */
void crypt_ring_free(struct crypt_ring *r);
/* The key named @name in @r or a ring on its prev chain; NULL if none. */
const struct crypt_key *crypt_ring_find(const struct crypt_ring *r,
                                        const char *name, size_t len);

/* Envelope size for @n plaintext bytes under @k. */
size_t crypt_sealed_size(const struct crypt_key *k, size_t n);
/* True when @p looks like an envelope (magic byte, plausible lengths).
 * Plain values that may share a database with envelopes must not begin
 * with 0xC1 (protobuf messages whose first field number is below 24 never
 * do). */
int crypt_is_sealed(const void *p, size_t n);
/* The key name an envelope names (pointing into @p). -EBADMSG if @p is
 * not an envelope. */
int crypt_sealed_name(const void *p, size_t n, const char **name,
                      size_t *len);
/* Plaintext size of the envelope @p (valid envelope assumed). */
size_t crypt_plain_size(const void *p, size_t n);

/* Seals @n bytes of @plain under @k with @aad into @out, which holds
 * crypt_sealed_size(k, n) bytes. Errors: -EIO (OpenSSL failed). */
int crypt_seal(const struct crypt_key *k, const void *aad, size_t aadlen,
               const void *plain, size_t n, uint8_t *out);
/* Opens envelope @p with the key of @ring it names into @out (room for
 * crypt_plain_size() bytes); sets *@outlen. Errors: -ENOKEY (no such key
 * in the ring), -EBADMSG (not an envelope, wrong key, tampered, or sealed
 * for other AAD). */
int crypt_open(const struct crypt_ring *ring, const void *aad, size_t aadlen,
               const void *p, size_t n, uint8_t *out, size_t *outlen);
/* The same with a given key (the name in @p must be @k's). */
int crypt_open_key(const struct crypt_key *k, const void *aad, size_t aadlen,
                   const void *p, size_t n, uint8_t *out, size_t *outlen);

#endif
