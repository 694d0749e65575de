/* bbolt's file format: see bbolt.h. Layouts (little-endian, as bbolt
 * writes them on every platform etcd supports):
 *   page header   id u64, flags u16, count u16, overflow u32   (16 bytes)
 *   leaf element  flags u32, pos u32, ksize u32, vsize u32     (16 bytes)
 *   branch elem.  pos u32, ksize u32, pgid u64                 (16 bytes)
 * pos is the distance from the element to its key; the value follows the
 * key. Elements come first in a page, then the keys and values. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "core/mem.h"
#include "snap/bbolt.h"

#define PAGE SNAP_BBOLT_PAGE
#define HDR 16
#define ELEM 16
#define F_BRANCH 0x01
#define F_LEAF 0x02
#define F_META 0x04
#define F_FREELIST 0x10
#define BUCKET_LEAF 0x01
#define MAGIC 0xED0CDAEDu
#define VERSION 2
#define NO_FREELIST UINT64_MAX
#define META_SUM_LEN 56 /* bytes of meta before its checksum */
/* Keys this small keep at least three per branch page, so the tree's
 * height stays logarithmic (bbolt allows 32 KiB; etcd's schema needs 18
 * bytes, cairn's keys are at most 503 bytes). */
#define MAX_KEY 1024
#define MAX_LEVELS 32
#define MAX_DEPTH 64
#define OUTBUF (256u << 10)

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static uint64_t fnv1a64(const uint8_t *p, size_t n)
{
    uint64_t h = 14695981039346656037ull;
    for (size_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

static int cmp_bytes(const uint8_t *a, size_t alen, const uint8_t *b,
                     size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen;
}

/* ---- writer ---- */

/* One node being filled at one level of a tree: its element headers
 * (pos is set when the page is assembled) and its keys and values. */
struct level {
    uint8_t *el;
    size_t n, el_cap;
    uint8_t *data;
    size_t dlen, dcap;
    uint64_t flushed; /* pages written at this level */
};

struct tree {
    struct level lv[MAX_LEVELS];
    int nlv; /* levels in use */
    uint8_t *last;  /* last key added, for the order check */
    size_t last_len, last_cap;
    int has_last;
};

struct snap_bbolt_writer {
    int fd;
    uint64_t next_pgid; /* the next page to write; 0 and 1 are the metas */
    uint8_t *out;       /* pages not yet written, at page next_out */
    size_t out_len;
    uint64_t out_off;   /* file offset of out[0] */
    uint8_t *page;      /* scratch page image */
    size_t page_cap;
    struct tree root;   /* the root bucket: names -> bucket headers */
    struct tree b;      /* the open bucket */
    int in_bucket;
    uint8_t *name;      /* the open bucket's name */
    size_t name_len;
};

static void grow(uint8_t **p, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    *p = cairn_realloc(*p, c);
    *cap = c;
}

static int write_all(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pwrite(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

static int out_flush(struct snap_bbolt_writer *w)
{
    int rc = write_all(w->fd, w->out, w->out_len, w->out_off);
    w->out_off += w->out_len;
    w->out_len = 0;
    return rc;
}

/* Appends @npages pages (the image is @n bytes, zero-padded) as the next
 * page ids. Big nodes bypass the buffer. */
static int emit(struct snap_bbolt_writer *w, const uint8_t *img, size_t n,
                uint64_t npages)
{
    static const uint8_t zero[PAGE];
    size_t total = (size_t)npages * PAGE;
    int rc;
    if (w->out_len + total > OUTBUF && (rc = out_flush(w)) != 0)
        return rc;
    w->next_pgid += npages;
    if (total <= OUTBUF) {
        memcpy(w->out + w->out_len, img, n);
        memset(w->out + w->out_len + n, 0, total - n);
        w->out_len += total;
        return 0;
    }
    /* A node bigger than the buffer (a large value) goes straight out;
     * the padding is less than a page. */
    if ((rc = write_all(w->fd, img, n, w->out_off)) != 0)
        return rc;
    rc = write_all(w->fd, zero, total - n, w->out_off + n);
    w->out_off += total;
    return rc;
}

static size_t level_size(const struct level *l)
{
    return HDR + l->n * ELEM + l->dlen;
}

/* The page image of level @l into w->page, as page id @id. */
static size_t assemble(struct snap_bbolt_writer *w, struct level *l, int leaf,
                       uint64_t id, uint32_t overflow)
{
    size_t n = level_size(l);
    grow(&w->page, &w->page_cap, n);
    uint8_t *p = w->page;
    put64(p, id);
    put16(p + 8, leaf ? F_LEAF : F_BRANCH);
    put16(p + 10, (uint16_t)l->n);
    put32(p + 12, overflow);
    size_t data_at = HDR + l->n * ELEM, off = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint8_t *e = p + HDR + i * ELEM;
        memcpy(e, l->el + i * ELEM, ELEM);
        uint32_t pos = (uint32_t)(data_at + off - (HDR + i * ELEM));
        if (leaf) {
            put32(e + 4, pos);
            off += get32(e + 8) + get32(e + 12);
        } else {
            put32(e, pos);
            off += get32(e + 4);
        }
    }
    if (l->dlen > 0)
        memcpy(p + data_at, l->data, l->dlen);
    return n;
}

static int add_elem(struct snap_bbolt_writer *w, struct tree *t, int i,
                    const uint8_t *k, size_t klen, const uint8_t *v,
                    size_t vlen, uint32_t flags, uint64_t child);

/* Writes level @i's node as a page and hands its first key and page id
 * to the level above. */
static int flush_level(struct snap_bbolt_writer *w, struct tree *t, int i,
                       int push, uint64_t *pgid)
{
    struct level *l = &t->lv[i];
    size_t n = level_size(l);
    uint64_t npages = (n + PAGE - 1) / PAGE, id = w->next_pgid;
    uint8_t first[MAX_KEY];
    size_t flen = 0;
    int rc;

    if (n > (size_t)PAGE * UINT32_MAX)
        return -EINVAL;
    assemble(w, l, i == 0, id, (uint32_t)(npages - 1));
    if (l->n > 0) {
        /* The first key: in both element kinds ksize is the third u32
         * for leaves and the second for branches; keys start the data. */
        flen = i == 0 ? get32(l->el + 8) : get32(l->el + 4);
        memcpy(first, l->data, flen);
    }
    if ((rc = emit(w, w->page, n, npages)) != 0)
        return rc;
    l->n = 0;
    l->dlen = 0;
    l->flushed++;
    if (pgid != NULL)
        *pgid = id;
    if (!push)
        return 0;
    if (i + 1 >= MAX_LEVELS)
        return -EINVAL;
    if (t->nlv < i + 2)
        t->nlv = i + 2;
    return add_elem(w, t, i + 1, first, flen, NULL, 0, 0, id);
}

/* Adds a key (and value, on leaves; child page, on branches) to level @i,
 * writing the node out first when the key would not fit. */
static int add_elem(struct snap_bbolt_writer *w, struct tree *t, int i,
                    const uint8_t *k, size_t klen, const uint8_t *v,
                    size_t vlen, uint32_t flags, uint64_t child)
{
    struct level *l = &t->lv[i];
    size_t need = ELEM + klen + vlen;
    int rc;

    if (l->n > 0 && (level_size(l) + need > PAGE || l->n == UINT16_MAX)) {
        if ((rc = flush_level(w, t, i, 1, NULL)) != 0)
            return rc;
    }
    grow(&l->el, &l->el_cap, (l->n + 1) * ELEM);
    uint8_t *e = l->el + l->n * ELEM;
    if (i == 0) {
        put32(e, flags);
        put32(e + 4, 0);
        put32(e + 8, (uint32_t)klen);
        put32(e + 12, (uint32_t)vlen);
    } else {
        put32(e, 0);
        put32(e + 4, (uint32_t)klen);
        put64(e + 8, child);
    }
    grow(&l->data, &l->dcap, l->dlen + klen + vlen);
    memcpy(l->data + l->dlen, k, klen);
    if (vlen)
        memcpy(l->data + l->dlen + klen, v, vlen);
    l->dlen += klen + vlen;
    l->n++;
    return 0;
}

static int tree_add(struct snap_bbolt_writer *w, struct tree *t,
                    const uint8_t *k, size_t klen, const uint8_t *v,
                    size_t vlen, uint32_t flags)
{
    if (klen == 0 || klen > MAX_KEY || vlen > UINT32_MAX - PAGE)
        return -EINVAL;
    if (t->has_last && cmp_bytes(t->last, t->last_len, k, klen) >= 0)
        return -EINVAL;
    grow(&t->last, &t->last_cap, klen);
    memcpy(t->last, k, klen);
    t->last_len = klen;
    t->has_last = 1;
    if (t->nlv == 0)
        t->nlv = 1;
    return add_elem(w, t, 0, k, klen, v, vlen, flags, 0);
}

/* Closes the tree: the page id of its root, or (when @inl is not NULL
 * and the tree is one small leaf) the inline bucket value in w->page. */
static int tree_finish(struct snap_bbolt_writer *w, struct tree *t,
                       uint64_t *root, size_t *inl)
{
    struct level *l0 = &t->lv[0];
    int rc;

    if (inl != NULL && l0->flushed == 0 && level_size(l0) <= PAGE / 4) {
        /* bbolt's inlineable(): one leaf no bigger than a quarter page. */
        size_t n = assemble(w, l0, 1, 0, 0);
        grow(&w->page, &w->page_cap, n + 16);
        memmove(w->page + 16, w->page, n);
        memset(w->page, 0, 16); /* root 0 = inline, sequence 0 */
        *inl = n + 16;
        return 0;
    }
    if (t->nlv == 0)
        t->nlv = 1;
    for (int i = 0; i < t->nlv; i++) {
        struct level *l = &t->lv[i];
        int top = i == t->nlv - 1 && l->flushed == 0;
        if (top && i > 0 && l->n == 1) {
            *root = get64(l->el + 8); /* one child: it is the root */
            return 0;
        }
        if (top)
            return flush_level(w, t, i, 0, root);
        if (l->n > 0 && (rc = flush_level(w, t, i, 1, NULL)) != 0)
            return rc;
    }
    return -EINVAL; /* not reached: the last level is always the top */
}

static void tree_reset(struct tree *t)
{
    for (int i = 0; i < MAX_LEVELS; i++) {
        t->lv[i].n = 0;
        t->lv[i].dlen = 0;
        t->lv[i].flushed = 0;
    }
    t->nlv = 0;
    t->has_last = 0;
}

static void tree_free(struct tree *t)
{
    for (int i = 0; i < MAX_LEVELS; i++) {
        cairn_free(t->lv[i].el);
        cairn_free(t->lv[i].data);
    }
    cairn_free(t->last);
}

int snap_bbolt_writer_new(int fd, struct snap_bbolt_writer **out)
{
    struct snap_bbolt_writer *w = cairn_calloc(1, sizeof *w);
    w->fd = fd;
    w->next_pgid = 2;
    w->out_off = 2 * PAGE;
    w->out = cairn_malloc(OUTBUF);
    *out = w;
    return 0;
}

void snap_bbolt_writer_free(struct snap_bbolt_writer *w)
{
    if (w == NULL)
        return;
    tree_free(&w->root);
    tree_free(&w->b);
    cairn_free(w->out);
    cairn_free(w->page);
    cairn_free(w->name);
    cairn_free(w);
}

int snap_bbolt_bucket_begin(struct snap_bbolt_writer *w, const void *name,
                            size_t len)
{
    if (w->in_bucket || len == 0 || len > MAX_KEY)
        return -EINVAL;
    if (w->root.has_last &&
        cmp_bytes(w->root.last, w->root.last_len, name, len) >= 0)
        return -EINVAL;
    tree_reset(&w->b);
    cairn_free(w->name);
    w->name = cairn_malloc(len);
    memcpy(w->name, name, len);
    w->name_len = len;
    w->in_bucket = 1;
    return 0;
}

int snap_bbolt_put(struct snap_bbolt_writer *w, const void *k, size_t klen,
                   const void *v, size_t vlen)
{
    if (!w->in_bucket)
        return -EINVAL;
    return tree_add(w, &w->b, k, klen, v, vlen, 0);
}

int snap_bbolt_bucket_end(struct snap_bbolt_writer *w)
{
    uint64_t root = 0;
    size_t inl = 0;
    uint8_t hdr[16];
    int rc;

    if (!w->in_bucket)
        return -EINVAL;
    w->in_bucket = 0;
    if ((rc = tree_finish(w, &w->b, &root, &inl)) != 0)
        return rc;
    if (inl > 0) {
        /* w->page is scratch that the root's own flush may reuse: copy. */
        uint8_t *v = cairn_malloc(inl);
        memcpy(v, w->page, inl);
        rc = tree_add(w, &w->root, w->name, w->name_len, v, inl, BUCKET_LEAF);
        cairn_free(v);
        return rc;
    }
    put64(hdr, root);
    put64(hdr + 8, 0);
    return tree_add(w, &w->root, w->name, w->name_len, hdr, 16, BUCKET_LEAF);
}

static void meta_page(uint8_t *p, uint64_t id, uint64_t root,
                      uint64_t freelist, uint64_t pgid, uint64_t txid)
{
    memset(p, 0, PAGE);
    put64(p, id);
    put16(p + 8, F_META);
    uint8_t *m = p + HDR;
    put32(m, MAGIC);
    put32(m + 4, VERSION);
    put32(m + 8, PAGE);
    put32(m + 12, 0);
    put64(m + 16, root);
    put64(m + 24, 0);
    put64(m + 32, freelist);
    put64(m + 40, pgid);
    put64(m + 48, txid);
    put64(m + 56, fnv1a64(m, META_SUM_LEN));
}

int snap_bbolt_writer_finish(struct snap_bbolt_writer *w, uint64_t *size)
{
    uint64_t root, freelist;
    uint8_t *p;
    int rc;

    if (w->in_bucket)
        return -EINVAL;
    /* The root bucket always has a page of its own, even when empty. */
    if ((rc = tree_finish(w, &w->root, &root, NULL)) != 0)
        return rc;
    /* An empty freelist: every page is in use. */
    freelist = w->next_pgid;
    p = cairn_calloc(1, 2 * PAGE);
    put64(p, freelist);
    put16(p + 8, F_FREELIST);
    rc = emit(w, p, HDR, 1);
    if (rc == 0)
        rc = out_flush(w);
    /* Both metas describe the same tree; as bbolt's init, meta i has
     * txid i, so the next writer overwrites page 0 (txid 2 % 2). */
    for (uint64_t i = 0; i < 2 && rc == 0; i++) {
        meta_page(p, i, root, freelist, w->next_pgid, i);
        rc = write_all(w->fd, p, PAGE, i * PAGE);
    }
    cairn_free(p);
    if (rc == 0)
        *size = w->next_pgid * PAGE;
    return rc;
}

/* ---- reader ---- */

struct snap_bbolt_reader {
    int fd;
    uint64_t len;
    uint32_t psize;
    uint64_t root, pgid, txid;
    uint8_t *seen; /* pages visited by the current walk */
    struct {
        uint8_t *p;
        size_t n, cap;
        int has;
    } prev[2]; /* last key seen: [0] bucket names, [1] keys in a bucket */
};

static int read_all(int fd, uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t k = pread(fd, p, n, (off_t)off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (k == 0)
            return -EBADMSG; /* truncated */
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

struct meta {
    uint32_t psize;
    uint64_t root, freelist, pgid, txid;
};

/* bbolt's meta.validate(), plus what reading needs to trust. */
static int meta_parse(const uint8_t *p, uint64_t id, uint64_t len,
                      struct meta *m)
{
    const uint8_t *b = p + HDR;
    uint64_t sum = get64(b + 56);
    if (get32(b) != MAGIC || get32(b + 4) != VERSION)
        return -EBADMSG;
    if (sum != 0 && sum != fnv1a64(b, META_SUM_LEN))
        return -EBADMSG;
    if (get64(p) != id || !(get16(p + 8) & F_META))
        return -EBADMSG;
    m->psize = get32(b + 8);
    m->root = get64(b + 16);
    m->freelist = get64(b + 32);
    m->pgid = get64(b + 40);
    m->txid = get64(b + 48);
    if (m->psize < 512 || m->psize > 65536 || (m->psize & (m->psize - 1)))
        return -EBADMSG;
    if (m->pgid < 3 || m->pgid > len / m->psize || m->root < 2 ||
        m->root >= m->pgid)
        return -EBADMSG;
    if (m->freelist != NO_FREELIST && (m->freelist < 2 || m->freelist >= m->pgid))
        return -EBADMSG;
    return 0;
}

int snap_bbolt_reader_new(int fd, uint64_t len, struct snap_bbolt_reader **out)
{
    uint8_t p[HDR + 64];
    struct meta m[2];
    int ok[2] = {0, 0}, rc;
    uint32_t off1 = PAGE;

    if (len < 1024)
        return -EBADMSG;
    if ((rc = read_all(fd, p, sizeof p, 0)) != 0)
        return rc;
    ok[0] = meta_parse(p, 0, len, &m[0]) == 0;
    if (ok[0])
        off1 = m[0].psize;
    if ((uint64_t)off1 + sizeof p <= len) {
        if ((rc = read_all(fd, p, sizeof p, off1)) != 0)
            return rc;
        ok[1] = meta_parse(p, 1, len, &m[1]) == 0 && m[1].psize == off1;
    }
    if (!ok[0] && !ok[1])
        return -EBADMSG;
    int pick = !ok[0] || (ok[1] && m[1].txid > m[0].txid);
    struct snap_bbolt_reader *r = cairn_calloc(1, sizeof *r);
    r->fd = fd;
    r->len = len;
    r->psize = m[pick].psize;
    r->root = m[pick].root;
    r->pgid = m[pick].pgid;
    r->txid = m[pick].txid;
    r->seen = cairn_calloc(1, r->pgid / 8 + 1);
    *out = r;
    return 0;
}

void snap_bbolt_reader_free(struct snap_bbolt_reader *r)
{
    if (r == NULL)
        return;
    for (int i = 0; i < 2; i++)
        cairn_free(r->prev[i].p);
    cairn_free(r->seen);
    cairn_free(r);
}

uint64_t snap_bbolt_size(const struct snap_bbolt_reader *r)
{
    return r->pgid * r->psize;
}

uint64_t snap_bbolt_txid(const struct snap_bbolt_reader *r)
{
    return r->txid;
}

/* Reads node page @id (with its overflow) into a new buffer. */
static int read_page(struct snap_bbolt_reader *r, uint64_t id, uint8_t **out,
                     size_t *len)
{
    uint8_t h[HDR];
    int rc;

    if (id < 2 || id >= r->pgid)
        return -EBADMSG;
    if ((rc = read_all(r->fd, h, HDR, id * r->psize)) != 0)
        return rc;
    uint64_t ov = get32(h + 12);
    if (get64(h) != id || ov >= r->pgid - id ||
        (id + ov + 1) * r->psize > r->len)
        return -EBADMSG;
    for (uint64_t i = id; i <= id + ov; i++) {
        if (r->seen[i / 8] & (1u << (i % 8)))
            return -EBADMSG; /* a page reached twice: a loop or a DAG */
        r->seen[i / 8] |= (uint8_t)(1u << (i % 8));
    }
    size_t n = (size_t)(ov + 1) * r->psize;
    uint8_t *p = cairn_malloc(n);
    if ((rc = read_all(r->fd, p, n, id * r->psize)) != 0) {
        cairn_free(p);
        return rc;
    }
    *out = p;
    *len = n;
    return 0;
}

struct walk {
    struct snap_bbolt_reader *r;
    const char *only;
    snap_bbolt_fn fn;
    void *ud;
    struct snap_bytes bucket;
};

static int order_check(struct snap_bbolt_reader *r, int which,
                       const uint8_t *k, size_t n)
{
    if (r->prev[which].has &&
        cmp_bytes(r->prev[which].p, r->prev[which].n, k, n) >= 0)
        return -EBADMSG;
    grow(&r->prev[which].p, &r->prev[which].cap, n ? n : 1);
    memcpy(r->prev[which].p, k, n);
    r->prev[which].n = n;
    r->prev[which].has = 1;
    return 0;
}

static int walk_node(struct walk *w, const uint8_t *p, size_t len, int top,
                     int depth);

static int walk_page(struct walk *w, uint64_t id, int top, int depth)
{
    uint8_t *p;
    size_t n;
    int rc;
    if (depth > MAX_DEPTH)
        return -EBADMSG;
    if ((rc = read_page(w->r, id, &p, &n)) != 0)
        return rc;
    rc = walk_node(w, p, n, top, depth);
    cairn_free(p);
    return rc;
}

/* A top-level entry: bucket @k with header @v. */
static int walk_bucket(struct walk *w, const uint8_t *k, size_t klen,
                       const uint8_t *v, size_t vlen, int depth)
{
    struct snap_bytes none = {NULL, 0};
    int rc;
    if (vlen < 16)
        return -EBADMSG;
    if (w->only != NULL && cmp_bytes(k, klen, (const uint8_t *)w->only,
                                     strlen(w->only)) != 0)
        return 0;
    w->bucket.p = k;
    w->bucket.n = klen;
    w->r->prev[1].has = 0;
    if ((rc = w->fn(w->ud, w->bucket, none, none, SNAP_BBOLT_BEGIN)) != 0)
        return rc;
    uint64_t root = get64(v);
    if (root != 0)
        return walk_page(w, root, 0, depth + 1);
    /* Inline: a leaf page image follows the header. */
    if (vlen - 16 < HDR || !(get16(v + 16 + 8) & F_LEAF))
        return -EBADMSG;
    return walk_node(w, v + 16, vlen - 16, 0, depth + 1);
}

static int walk_node(struct walk *w, const uint8_t *p, size_t len, int top,
                     int depth)
{
    uint16_t flags = get16(p + 8), count = get16(p + 10);
    int rc;

    if (depth > MAX_DEPTH || HDR + (uint64_t)count * ELEM > len)
        return -EBADMSG;
    for (uint32_t i = 0; i < count; i++) {
        const uint8_t *e = p + HDR + (size_t)i * ELEM;
        uint64_t at = HDR + (uint64_t)i * ELEM;
        if (flags & F_BRANCH) {
            uint64_t ks = at + get32(e), kn = get32(e + 4);
            if (ks + kn > len)
                return -EBADMSG;
            if ((rc = walk_page(w, get64(e + 8), top, depth + 1)) != 0)
                return rc;
        } else if (flags & F_LEAF) {
            uint32_t ef = get32(e);
            uint64_t ks = at + get32(e + 4), kn = get32(e + 8),
                     vn = get32(e + 12);
            if (ks + kn + vn > len)
                return -EBADMSG;
            const uint8_t *k = p + ks, *v = k + kn;
            if ((rc = order_check(w->r, !top, k, kn)) != 0)
                return rc;
            if (top) {
                if (!(ef & BUCKET_LEAF))
                    return -EBADMSG; /* etcd: "cannot get hash of bucket" */
                rc = walk_bucket(w, k, kn, v, vn, depth);
            } else {
                struct snap_bytes kb = {k, kn}, vb = {v, vn}, none = {NULL, 0};
                if (ef & BUCKET_LEAF)
                    rc = w->fn(w->ud, w->bucket, kb, none, SNAP_BBOLT_NESTED);
                else
                    rc = w->fn(w->ud, w->bucket, kb, vb, 0);
            }
            if (rc != 0)
                return rc;
        } else {
            return -EBADMSG;
        }
    }
    return 0;
}

int snap_bbolt_walk(struct snap_bbolt_reader *r, const char *only,
                    snap_bbolt_fn fn, void *ud)
{
    struct walk w = {r, only, fn, ud, {NULL, 0}};
    memset(r->seen, 0, r->pgid / 8 + 1);
    r->prev[0].has = 0;
    r->prev[1].has = 0;
    return walk_page(&w, r->root, 1, 0);
}
