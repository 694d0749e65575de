/* Encryption at rest for the store: which bytes are sealed, with which
 * associated data, how readers get plaintext, the key checks at start and
 * the background re-encryption pass. The cipher and the key file are
 * crypt/crypt.c's.
 *
 * What is sealed: a kv record's packed KeyValue (its 17-byte header, the
 * tombstone flag and the link to the key's previous revision, stays plain
 * so that compaction and history walks need no decryption; it is bound by
 * the AAD), and whole values of registered databases (lease, auth). A
 * sealed value starts with byte 0xC1; a plain KeyValue starts with 0x0a
 * (field 1, the key, is never empty), a plain lease value is 8 bytes. So
 * plain and sealed records coexist, and a store changes from one to the
 * other record by record.
 *
 * meta:
 *   seal_keys        "k1,k2": keys the store's records may be sealed with
 *   seal_active      the key new records are sealed with
 *   seal_check:NAME  a sealed constant: proves a key file's NAME is the
 *                    same key (GCM fails otherwise)
 *   seal_pos         while a pass runs: database name, NUL, next LMDB key
 *   seal_end         kv records above this revision were sealed with the
 *                    active key when written: the pass stops there
 *   seal_total, seal_visited   progress (pending = total - visited) */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "crypt/crypt.h"
#include "mvcc/mvcc_int.h"

#define SEAL_STEP_BYTES (4u << 20)
#define SEAL_LOG_EVERY 100000 /* records between progress lines */
#define KEYS_MAX (CRYPT_MAX_KEYS * 4 * (CRYPT_NAME_MAX + 1))

static const char CHECK_PLAIN[] = "cairn encryption key check v1";

/* ---- txn arenas ---- */

struct arena *mvcc__txn_arena(struct mvcc_txn *t)
{
    if (t->plain == NULL) {
        t->plain = cairn_malloc(sizeof *t->plain);
        arena_init(t->plain);
    }
    return t->plain;
}

struct arena *mvcc__txn_scratch(struct mvcc_txn *t)
{
    if (t->scratch == NULL) {
        t->scratch = cairn_malloc(sizeof *t->scratch);
        arena_init(t->scratch);
    }
    return t->scratch;
}

void mvcc__txn_release(struct mvcc_txn *t)
{
    if (t->plain != NULL) {
        arena_free(t->plain);
        cairn_free(t->plain);
        t->plain = NULL;
    }
    if (t->scratch != NULL) {
        arena_free(t->scratch);
        cairn_free(t->scratch);
        t->scratch = NULL;
    }
}

static struct crypt_ring *ring_of(struct mvcc *m)
{
    return atomic_load_explicit(&m->ring, memory_order_acquire);
}

const struct crypt_ring *mvcc_ring(struct mvcc *m)
{
    return ring_of(m);
}

int mvcc_sealed(struct mvcc *m)
{
    return ring_of(m) != NULL;
}

int64_t mvcc_seal_pending(struct mvcc *m)
{
    return atomic_load(&m->seal_pending);
}

/* ---- kv records ---- */

/* AAD of a kv record: where it lives (its revision) and its plain header
 * (flag, link), so that neither a record moved to another revision nor an
 * edited header opens. */
#define REC_AAD_LEN (3 + MVCC_REVLEN + MVCC_RECHDR)
static void rec_aad(uint8_t *aad, const uint8_t *rk, const uint8_t *hdr)
{
    memcpy(aad, "kv", 3);
    memcpy(aad + 3, rk, MVCC_REVLEN);
    memcpy(aad + 3 + MVCC_REVLEN, hdr, MVCC_RECHDR);
}

static void log_open_error(const char *db, const MDB_val *k, int rc,
                           const uint8_t *p, size_t n)
{
    const char *name = "";
    size_t len = 0;
    crypt_sealed_name(p, n, &name, &len);
    char kname[CRYPT_NAME_MAX + 1];
    snprintf(kname, sizeof kname, "%.*s", (int)len, name);
    if (k->mv_size == MVCC_REVLEN && strcmp(db, "kv") == 0)
        log_errorw("mvcc: cannot decrypt a record",
                   LOG_STR("db", db),
                   LOG_INT("main", mvcc__get_be64(k->mv_data)),
                   LOG_INT("sub", mvcc__get_be64((uint8_t *)k->mv_data + 8)),
                   LOG_STR("key-id", kname),
                   LOG_STR("error", rc == -ENOKEY
                                        ? "its key is not in the key file"
                                        : "authentication failed: wrong key "
                                          "or tampered record"));
    else
        log_errorw("mvcc: cannot decrypt a record", LOG_STR("db", db),
                   LOG_STR("key-id", kname),
                   LOG_STR("error", rc == -ENOKEY
                                        ? "its key is not in the key file"
                                        : "authentication failed: wrong key "
                                          "or tampered record"));
}

int mvcc__record_payload(struct mvcc_txn *t, const MDB_val *k,
                         const MDB_val *v, struct arena *a,
                         const uint8_t **p, size_t *n)
{
    const uint8_t *rec = v->mv_data, *d = rec + MVCC_RECHDR;
    size_t dn = v->mv_size - MVCC_RECHDR;
    uint8_t aad[REC_AAD_LEN];

    if (v->mv_size < MVCC_RECHDR || k->mv_size != MVCC_REVLEN)
        return CAIRN_ESTORE;
    if (!crypt_is_sealed(d, dn)) {
        *p = d; /* plain: zero copy, as without encryption */
        *n = dn;
        return 0;
    }
    rec_aad(aad, k->mv_data, rec);
    uint8_t *out = arena_alloc(a ? a : mvcc__txn_arena(t),
                               crypt_plain_size(d, dn) + 1);
    int rc = crypt_open(ring_of(t->m), aad, sizeof aad, d, dn, out, n);
    if (rc != 0) {
        log_open_error("kv", k, rc, d, dn);
        return CAIRN_ESTORE;
    }
    *p = out;
    return 0;
}

static int seal_rec(const struct crypt_key *key, const uint8_t *rk,
                    const uint8_t *rec, const uint8_t *plain, size_t pn,
                    uint8_t *out)
{
    uint8_t aad[REC_AAD_LEN];
    memcpy(out, rec, MVCC_RECHDR);
    rec_aad(aad, rk, rec);
    return crypt_seal(key, aad, sizeof aad, plain, pn, out + MVCC_RECHDR);
}

int mvcc__record_seal(struct mvcc_txn *t, const uint8_t *rk, uint8_t *rec,
                      size_t n, struct arena *a, MDB_val *out)
{
    struct crypt_ring *r = ring_of(t->m);
    if (r == NULL) {
        out->mv_data = rec;
        out->mv_size = n;
        return 0;
    }
    size_t pn = n - MVCC_RECHDR;
    size_t sn = MVCC_RECHDR + crypt_sealed_size(&r->keys[0], pn);
    uint8_t *s = arena_alloc(a, sn);
    if (seal_rec(&r->keys[0], rk, rec, rec + MVCC_RECHDR, pn, s) != 0)
        return CAIRN_ESTORE;
    out->mv_data = s;
    out->mv_size = sn;
    return 0;
}

/* ---- sealed databases ---- */

void mvcc__seal_register(struct mvcc *m, MDB_dbi dbi, const char *name)
{
    if (m->n_sealed == (int)(sizeof m->sealed / sizeof m->sealed[0]) ||
        strlen(name) >= sizeof m->sealed[0].name) {
        log_error("mvcc: cannot register sealed database %s", name);
        return;
    }
    m->sealed[m->n_sealed].dbi = dbi;
    snprintf(m->sealed[m->n_sealed].name, sizeof m->sealed[0].name, "%s", name);
    m->n_sealed++;
}

static const char *sealed_name(struct mvcc *m, MDB_dbi dbi)
{
    for (int i = 0; i < m->n_sealed; i++)
        if (m->sealed[i].dbi == dbi)
            return m->sealed[i].name;
    return NULL;
}

/* AAD of a sealed database's value: its database's name, NUL, its key. */
static uint8_t *val_aad(const char *db, const MDB_val *k, uint8_t *buf,
                        size_t *len)
{
    size_t dl = strlen(db) + 1;
    memcpy(buf, db, dl);
    memcpy(buf + dl, k->mv_data, k->mv_size);
    *len = dl + k->mv_size;
    return buf;
}

int mvcc__value_open(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     const MDB_val *v, struct arena *a, MDB_val *out)
{
    uint8_t aad[16 + 512];
    size_t al;
    const char *db = sealed_name(t->m, dbi);

    if (!crypt_is_sealed(v->mv_data, v->mv_size)) {
        *out = *v;
        return 0;
    }
    if (db == NULL || k->mv_size > 511)
        return CAIRN_ESTORE;
    val_aad(db, k, aad, &al);
    uint8_t *p = arena_alloc(a ? a : mvcc__txn_arena(t),
                             crypt_plain_size(v->mv_data, v->mv_size) + 1);
    int rc = crypt_open(ring_of(t->m), aad, al, v->mv_data, v->mv_size, p,
                        &out->mv_size);
    if (rc != 0) {
        log_open_error(db, k, rc, v->mv_data, v->mv_size);
        return CAIRN_ESTORE;
    }
    out->mv_data = p;
    return 0;
}

int mvcc__sealed_get(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     struct arena *a, MDB_val *out)
{
    MDB_val key = *k, v;
    int rc = mdb_get(t->txn, dbi, &key, &v);
    if (rc != 0)
        return rc;
    return mvcc__value_open(t, dbi, k, &v, a, out);
}

/* @plain sealed under @key for (@dbi, @k), in a cairn_malloc'd buffer. */
static int seal_val(struct mvcc *m, const struct crypt_key *key, MDB_dbi dbi,
                    const MDB_val *k, const void *plain, size_t n,
                    MDB_val *out)
{
    uint8_t aad[16 + 512];
    size_t al;
    const char *db = sealed_name(m, dbi);
    if (db == NULL || k->mv_size > 511) {
        log_error("mvcc: sealing into an unregistered database");
        return CAIRN_ESTORE;
    }
    val_aad(db, k, aad, &al);
    out->mv_size = crypt_sealed_size(key, n);
    out->mv_data = cairn_malloc(out->mv_size);
    if (crypt_seal(key, aad, al, plain, n, out->mv_data) != 0) {
        cairn_free(out->mv_data);
        return CAIRN_ESTORE;
    }
    return 0;
}

int mvcc__sealed_put(struct mvcc_txn *t, MDB_dbi dbi, const MDB_val *k,
                     const void *plain, size_t n, unsigned flags)
{
    struct crypt_ring *r = ring_of(t->m);
    MDB_val key = *k, v = {n, (void *)plain};
    int rc;
    if (r == NULL)
        return mdb_put(t->txn, dbi, &key, &v, flags);
    if ((rc = seal_val(t->m, &r->keys[0], dbi, k, plain, n, &v)) != 0)
        return rc;
    rc = mdb_put(t->txn, dbi, &key, &v, flags);
    cairn_free(v.mv_data);
    return rc;
}

/* ---- meta ---- */

static int meta_get(struct mvcc_txn *t, const char *name, MDB_val *v)
{
    MDB_val k = {strlen(name), (void *)name};
    return mdb_get(t->txn, t->m->meta, &k, v);
}

static int meta_put(struct mvcc_txn *t, const char *name, const void *p,
                    size_t n)
{
    MDB_val k = {strlen(name), (void *)name}, v = {n, (void *)p};
    return mdb_put(t->txn, t->m->meta, &k, &v, 0);
}

static int meta_del(struct mvcc_txn *t, const char *name)
{
    MDB_val k = {strlen(name), (void *)name};
    int rc = mdb_del(t->txn, t->m->meta, &k, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* meta's string @name into @buf (empty when absent). CAIRN_ESTORE when
 * it does not fit (never silently empty: "no keys" would mean plain). */
static int meta_str(struct mvcc_txn *t, const char *name, char *buf,
                    size_t cap)
{
    MDB_val v;
    buf[0] = 0;
    if (meta_get(t, name, &v) != 0)
        return 0;
    if (v.mv_size >= cap)
        return CAIRN_ESTORE;
    memcpy(buf, v.mv_data, v.mv_size);
    buf[v.mv_size] = 0;
    return 0;
}

static void check_name(char *out, size_t cap, const char *key, size_t len)
{
    snprintf(out, cap, "seal_check:%.*s", (int)len, key);
}

static int check_aad(const struct crypt_key *k, uint8_t *aad)
{
    memcpy(aad, "check", 6);
    memcpy(aad + 6, k->name, k->name_len);
    return (int)(6 + k->name_len);
}

/* 0 when @k is the key the store knows by its name, -EKEYREJECTED when
 * not, 1 when the store has no check value for it. */
static int verify_key(struct mvcc_txn *t, const struct crypt_key *k)
{
    char name[64];
    uint8_t aad[6 + CRYPT_NAME_MAX], out[sizeof CHECK_PLAIN + 64];
    size_t n;
    MDB_val v;
    check_name(name, sizeof name, k->name, k->name_len);
    if (meta_get(t, name, &v) != 0)
        return 1;
    if (v.mv_size > sizeof out ||
        crypt_open_key(k, aad, (size_t)check_aad(k, aad), v.mv_data,
                       v.mv_size, out, &n) != 0 ||
        n != sizeof CHECK_PLAIN || memcmp(out, CHECK_PLAIN, n) != 0)
        return -EKEYREJECTED;
    return 0;
}

static int write_check(struct mvcc_txn *t, const struct crypt_key *k)
{
    char name[64];
    uint8_t aad[6 + CRYPT_NAME_MAX];
    uint8_t out[sizeof CHECK_PLAIN + CRYPT_OVERHEAD + CRYPT_NAME_MAX];
    check_name(name, sizeof name, k->name, k->name_len);
    if (crypt_seal(k, aad, (size_t)check_aad(k, aad), CHECK_PLAIN,
                   sizeof CHECK_PLAIN, out) != 0)
        return CAIRN_ESTORE;
    return meta_put(t, name, out, crypt_sealed_size(k, sizeof CHECK_PLAIN));
}

/* Is @name (len) in the comma-separated @list? */
static int in_list(const char *list, const char *name, size_t len)
{
    const char *p = list;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == len && memcmp(p, name, len) == 0)
            return 1;
        p = e ? e + 1 : p + n;
    }
    return 0;
}

static int64_t entries(struct mvcc_txn *t, MDB_dbi dbi)
{
    MDB_stat st;
    return mdb_stat(t->txn, dbi, &st) == 0 ? (int64_t)st.ms_entries : 0;
}

static void update_pending(struct mvcc_txn *t)
{
    MDB_val v;
    int64_t p = 0;
    if (meta_get(t, "seal_pos", &v) == 0) {
        p = mvcc_meta_get(t, "seal_total", 0) -
            mvcc_meta_get(t, "seal_visited", 0);
        if (p < 0)
            p = 0;
    }
    atomic_store(&t->m->seal_pending, p);
}

/* ---- install: the key checks and the start of a rotation ---- */

/* Every key the store's records may use must be in @ring, and be the same
 * key. */
static int check_ring(struct mvcc_txn *t, const struct crypt_ring *ring,
                      const char *keys, char *err, size_t errlen)
{
    const char *p = keys;
    while (*p) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        const struct crypt_key *k = NULL;
        for (int i = 0; ring != NULL && i < ring->n; i++)
            if (ring->keys[i].name_len == n &&
                memcmp(ring->keys[i].name, p, n) == 0)
                k = &ring->keys[i];
        if (ring == NULL) {
            snprintf(err, errlen, "the store is encrypted at rest (key id "
                     "\"%.*s\"); start with --experimental-encryption-key-"
                     "file holding that key", (int)n, p);
            return -ENOKEY;
        }
        if (k == NULL) {
            snprintf(err, errlen, "the store has records encrypted with key "
                     "id \"%.*s\", which the encryption key file does not "
                     "hold", (int)n, p);
            return -ENOKEY;
        }
        if (verify_key(t, k) < 0) {
            snprintf(err, errlen, "key id \"%.*s\" in the encryption key file "
                     "is not the key the store was encrypted with (wrong "
                     "key)", (int)n, p);
            return -EKEYREJECTED;
        }
        p = e ? e + 1 : p + n;
    }
    /* Keys the store has a check for but no record needs any more are
     * still checked: a same-named different key would be a mistake. */
    for (int i = 0; ring != NULL && i < ring->n; i++)
        if (verify_key(t, &ring->keys[i]) < 0) {
            snprintf(err, errlen, "key id \"%s\" in the encryption key file "
                     "is not the key the store knew by that name (wrong key)",
                     ring->keys[i].name);
            return -EKEYREJECTED;
        }
    return 0;
}

/* Makes @k the active key: records it, its check value, and (re)starts
 * the pass from the first record. */
static int start_rotation(struct mvcc_txn *t, const struct crypt_key *k,
                          const char *keys)
{
    char list[KEYS_MAX + CRYPT_NAME_MAX + 2];
    uint8_t pos[3] = {'k', 'v', 0};
    int64_t total = entries(t, t->m->kv);
    int rc;

    for (int i = 0; i < t->m->n_sealed; i++)
        total += entries(t, t->m->sealed[i].dbi);
    if (in_list(keys, k->name, k->name_len))
        snprintf(list, sizeof list, "%s", keys);
    else
        snprintf(list, sizeof list, "%s%s%s", keys, *keys ? "," : "", k->name);
    if ((rc = write_check(t, k)) != 0 ||
        (rc = meta_put(t, "seal_keys", list, strlen(list))) != 0 ||
        (rc = meta_put(t, "seal_active", k->name, k->name_len)) != 0 ||
        (rc = meta_put(t, "seal_pos", pos, sizeof pos)) != 0 ||
        (rc = mvcc_meta_put(t, "seal_end", t->rev)) != 0 ||
        (rc = mvcc_meta_put(t, "seal_total", total)) != 0 ||
        (rc = mvcc_meta_put(t, "seal_visited", 0)) != 0 ||
        (rc = mvcc_meta_put(t, "format", MVCC_FORMAT_SEALED)) != 0)
        return rc;
    log_infow("mvcc: encryption key rotation started: records are re-"
              "encrypted in the background",
              LOG_STR("key-id", k->name), LOG_INT("records", total));
    return 0;
}

int mvcc_seal_install(struct mvcc *m, struct crypt_ring *ring, int *rotated,
                      char *err, size_t errlen)
{
    char keys[KEYS_MAX], active[CRYPT_NAME_MAX + 1];
    struct mvcc_txn t;
    int rc;

    *rotated = 0;
    if ((rc = mvcc_write_begin(m, &t)) != 0) {
        snprintf(err, errlen, "cannot begin a write: %s", cairn_err_msg(rc));
        return rc;
    }
    if ((rc = meta_str(&t, "seal_keys", keys, sizeof keys)) != 0 ||
        (rc = meta_str(&t, "seal_active", active, sizeof active)) != 0) {
        snprintf(err, errlen, "the store's key list is unreadable");
        goto err_abort;
    }
    if ((rc = check_ring(&t, ring, keys, err, errlen)) != 0)
        goto err_abort;
    if (ring != NULL && strcmp(active, ring->keys[0].name) != 0) {
        if ((rc = start_rotation(&t, &ring->keys[0], keys)) != 0) {
            snprintf(err, errlen, "cannot record the key: %s",
                     cairn_err_msg(mvcc__err(rc)));
            goto err_abort;
        }
        *rotated = 1;
    }
    update_pending(&t);
    if ((rc = mvcc_write_commit(&t)) != 0) {
        snprintf(err, errlen, "cannot commit: %s", cairn_err_msg(rc));
        return rc;
    }
    if (ring != NULL) {
        /* Readers that loaded the old ring keep using it; it stays on the
         * chain until close. */
        ring->prev = ring_of(m);
        atomic_store_explicit(&m->ring, ring, memory_order_release);
    }
    return 0;

err_abort:
    mvcc_write_abort(&t);
    return rc < 0 && rc > -1000 ? rc : mvcc__err(rc);
}

/* ---- the re-encryption pass ---- */

/* Re-seals the record at @c (key @k, value @v) under @key, in place. */
static int reseal_kv(struct mvcc_txn *t, MDB_cursor *c, const MDB_val *k,
                     const MDB_val *v, const struct crypt_key *key,
                     struct arena *a)
{
    const uint8_t *pl;
    size_t pn;
    uint8_t kb[MVCC_REVLEN];
    int rc = mvcc__record_payload(t, k, v, a, &pl, &pn);
    if (rc != 0)
        return rc;
    size_t sn = MVCC_RECHDR + crypt_sealed_size(key, pn);
    uint8_t *s = arena_alloc(a, sn);
    /* Copies: the put rewrites the page k and v point into. */
    memcpy(kb, k->mv_data, MVCC_REVLEN);
    uint8_t hdr[MVCC_RECHDR];
    memcpy(hdr, v->mv_data, MVCC_RECHDR);
    if (seal_rec(key, kb, hdr, pl, pn, s) != 0)
        return CAIRN_ESTORE;
    MDB_val nk = {MVCC_REVLEN, kb}, nv = {sn, s};
    return mdb_cursor_put(c, &nk, &nv, MDB_CURRENT);
}

static int reseal_val(struct mvcc_txn *t, MDB_cursor *c, MDB_dbi dbi,
                      const MDB_val *k, const MDB_val *v,
                      const struct crypt_key *key, struct arena *a)
{
    MDB_val pv, nv;
    int rc = mvcc__value_open(t, dbi, k, v, a, &pv);
    if (rc != 0)
        return rc;
    uint8_t *kb = arena_memdup(a, k->mv_data, k->mv_size);
    MDB_val nk = {k->mv_size, kb};
    if ((rc = seal_val(t->m, key, dbi, &nk, pv.mv_data, pv.mv_size, &nv)) != 0)
        return rc;
    rc = mdb_cursor_put(c, &nk, &nv, MDB_CURRENT);
    cairn_free(nv.mv_data);
    return rc;
}

static int under_key(const MDB_val *v, size_t off, const struct crypt_key *k)
{
    const char *name;
    size_t len;
    if (v->mv_size < off ||
        crypt_sealed_name((uint8_t *)v->mv_data + off, v->mv_size - off,
                          &name, &len) != 0)
        return 0;
    return len == k->name_len && memcmp(name, k->name, len) == 0;
}

/* The pass is over: only the active key is needed from now on. */
static int finish_pass(struct mvcc_txn *t, const struct crypt_key *k)
{
    char keys[KEYS_MAX], name[64];
    int64_t visited = mvcc_meta_get(t, "seal_visited", 0);
    int rc;
    if ((rc = meta_str(t, "seal_keys", keys, sizeof keys)) != 0)
        return rc;
    for (char *p = keys, *e; *p; p = e ? e + 1 : p + strlen(p)) {
        e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n == k->name_len && memcmp(p, k->name, n) == 0)
            continue;
        check_name(name, sizeof name, p, n);
        if ((rc = meta_del(t, name)) != 0)
            return rc;
    }
    if ((rc = meta_put(t, "seal_keys", k->name, k->name_len)) != 0 ||
        (rc = meta_del(t, "seal_pos")) != 0 ||
        (rc = meta_del(t, "seal_end")) != 0 ||
        (rc = meta_del(t, "seal_total")) != 0 ||
        (rc = meta_del(t, "seal_visited")) != 0)
        return rc;
    log_infow("mvcc: encryption key rotation done: every record is "
              "encrypted with the active key; older keys may be removed "
              "from the key file",
              LOG_STR("key-id", k->name), LOG_INT("records", visited));
    return 0;
}

/* The database the pass visits after @db ("" when none). */
static const char *next_db(struct mvcc *m, const char *db)
{
    if (strcmp(db, "kv") == 0)
        return m->n_sealed > 0 ? m->sealed[0].name : "";
    for (int i = 0; i + 1 < m->n_sealed; i++)
        if (strcmp(m->sealed[i].name, db) == 0)
            return m->sealed[i + 1].name;
    return "";
}

static MDB_dbi dbi_of(struct mvcc *m, const char *db)
{
    if (strcmp(db, "kv") == 0)
        return m->kv;
    for (int i = 0; i < m->n_sealed; i++)
        if (strcmp(m->sealed[i].name, db) == 0)
            return m->sealed[i].dbi;
    return (MDB_dbi)-1;
}

/* Visits records of @db from @from (NULL: the first) within the budgets;
 * leaves in @next the key to resume at, or sets *@done. */
static int pass_db(struct mvcc_txn *t, const char *db, const MDB_val *from,
                   const struct crypt_key *key, int *budget, size_t *bytes,
                   struct arena *a, MDB_val *next, int *done)
{
    struct mvcc *m = t->m;
    MDB_dbi dbi = dbi_of(m, db);
    int is_kv = dbi == m->kv;
    int64_t end = mvcc_meta_get(t, "seal_end", INT64_MAX);
    int64_t visited = 0;
    MDB_cursor *c;
    MDB_val k, v;
    int rc;

    *done = 0;
    if (dbi == (MDB_dbi)-1) { /* not registered in this build: skip it */
        *done = 1;
        return 0;
    }
    if ((rc = mdb_cursor_open(t->txn, dbi, &c)) != 0)
        return rc;
    if (from != NULL && from->mv_size > 0) {
        k = *from;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(c, &k, &v, MDB_FIRST);
    }
    for (; rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (*budget <= 0 || *bytes >= SEAL_STEP_BYTES) {
            next->mv_data = arena_memdup(a, k.mv_data, k.mv_size);
            next->mv_size = k.mv_size;
            break;
        }
        /* Newer kv records were sealed with the active key when written. */
        if (is_kv && (k.mv_size != MVCC_REVLEN ||
                      (int64_t)mvcc__get_be64(k.mv_data) > end)) {
            rc = MDB_NOTFOUND;
            break;
        }
        (*budget)--;
        visited++;
        if (under_key(&v, is_kv ? MVCC_RECHDR : 0, key))
            continue;
        *bytes += v.mv_size;
        rc = is_kv ? reseal_kv(t, c, &k, &v, key, a)
                   : reseal_val(t, c, dbi, &k, &v, key, a);
        if (rc != 0)
            break;
    }
    mdb_cursor_close(c);
    if (visited > 0) {
        int64_t before = mvcc_meta_get(t, "seal_visited", 0);
        int64_t vis = before + visited;
        int wrc = mvcc_meta_put(t, "seal_visited", vis);
        if (wrc != 0)
            return wrc;
        if (vis / SEAL_LOG_EVERY != before / SEAL_LOG_EVERY)
            log_infow("mvcc: re-encrypting records", LOG_STR("key-id", key->name),
                      LOG_INT("visited", vis),
                      LOG_INT("total", mvcc_meta_get(t, "seal_total", 0)));
    }
    if (rc == MDB_NOTFOUND) {
        *done = 1;
        return 0;
    }
    return rc;
}

int mvcc_seal_step(struct mvcc_txn *t, int max_records)
{
    struct crypt_ring *r = ring_of(t->m);
    int budget = max_records, done = 0, rc = 0;
    size_t bytes = 0;
    char db[16];
    struct arena a;
    MDB_val pos, from, next = {0, NULL};

    if (r == NULL || meta_get(t, "seal_pos", &pos) != 0)
        return 0;
    arena_init(&a);
    /* "db\0key": copy it, the puts below may move it. */
    uint8_t *p = arena_memdup(&a, pos.mv_data, pos.mv_size);
    size_t dl = strnlen((char *)p, pos.mv_size);
    if (dl >= sizeof db || dl == pos.mv_size) {
        rc = CAIRN_ESTORE;
        goto out;
    }
    memcpy(db, p, dl + 1);
    from.mv_data = p + dl + 1;
    from.mv_size = pos.mv_size - dl - 1;
    while (db[0] != 0 && budget > 0 && bytes < SEAL_STEP_BYTES) {
        rc = pass_db(t, db, &from, &r->keys[0], &budget, &bytes, &a, &next,
                     &done);
        if (rc != 0)
            goto out;
        if (!done)
            break;
        snprintf(db, sizeof db, "%s", next_db(t->m, db));
        from.mv_size = 0;
        next.mv_size = 0;
    }
    if (db[0] == 0) {
        if ((rc = finish_pass(t, &r->keys[0])) == 0)
            rc = 2;
        atomic_store(&t->m->seal_pending, 0);
        goto out;
    }
    /* Where the next step starts. */
    size_t nl = strlen(db) + 1;
    uint8_t *np = arena_alloc(&a, nl + next.mv_size + 1);
    memcpy(np, db, nl);
    if (next.mv_size)
        memcpy(np + nl, next.mv_data, next.mv_size);
    if ((rc = meta_put(t, "seal_pos", np, nl + next.mv_size)) == 0) {
        update_pending(t);
        rc = 1;
    }
out:
    arena_free(&a);
    if (rc < 0 || rc == 1 || rc == 2)
        return rc;
    return rc == 0 ? 0 : mvcc__err(rc);
}
