/* The index of synced watchers' key ranges. Watchers with the same range
 * share a group; single-key groups are found by hash, ranges by an implicit
 * interval tree over the range groups sorted by start (each node keeps the
 * largest end below it), rebuilt lazily after a change. Stabbing a key
 * costs O(log n + matches). */
#include <string.h>

#include "core/mem.h"
#include "watch/watch_int.h"

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    if (c != 0)
        return c;
    return al < bl ? -1 : al > bl;
}

/* Ends compare with "no upper bound" above every key. */
static int end_cmp(const struct widx_group *a, const struct widx_group *b)
{
    if (a->kind == WR_FROM)
        return b->kind == WR_FROM ? 0 : 1;
    if (b->kind == WR_FROM)
        return -1;
    return bcmp_(a->end, a->elen, b->end, b->elen);
}

/* Is @key below @g's end? */
static int below_end(const struct widx_group *g, const uint8_t *key, size_t klen)
{
    return g->kind == WR_FROM || bcmp_(key, klen, g->end, g->elen) < 0;
}

int watcher_contains(const struct watcher *w, const uint8_t *key, size_t klen)
{
    int c = bcmp_(key, klen, w->key, w->klen);
    switch (w->kind) {
    case WR_KEY:
        return c == 0;
    case WR_FROM:
        return c >= 0;
    case WR_RANGE:
        return c >= 0 && bcmp_(key, klen, w->end, w->elen) < 0;
    }
    return 0;
}

static uint64_t hash(enum wrange_kind kind, const uint8_t *k, size_t kl,
                     const uint8_t *e, size_t el)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)kind;
    for (size_t i = 0; i < kl; i++)
        h = (h ^ k[i]) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
    for (size_t i = 0; i < el; i++)
        h = (h ^ e[i]) * 1099511628211ULL;
    return h;
}

static int same(const struct widx_group *g, enum wrange_kind kind,
                const uint8_t *k, size_t kl, const uint8_t *e, size_t el)
{
    return g->kind == kind && g->klen == kl && g->elen == el &&
           (kl == 0 || memcmp(g->key, k, kl) == 0) &&
           (el == 0 || memcmp(g->end, e, el) == 0);
}

void widx_init(struct widx *ix)
{
    memset(ix, 0, sizeof *ix);
    ix->nbuckets = 64;
    ix->buckets = cairn_calloc(ix->nbuckets, sizeof *ix->buckets);
}

void widx_free(struct widx *ix)
{
    for (size_t i = 0; i < ix->nbuckets; i++) {
        struct widx_group *g = ix->buckets[i], *next;
        for (; g != NULL; g = next) {
            next = g->h_next;
            cairn_free(g->key);
            cairn_free(g->end);
            cairn_free(g);
        }
    }
    cairn_free(ix->buckets);
    cairn_free(ix->ranges);
    cairn_free(ix->submax);
    memset(ix, 0, sizeof *ix);
}

static void rehash(struct widx *ix)
{
    size_t n = ix->nbuckets * 2;
    struct widx_group **b = cairn_calloc(n, sizeof *b);
    for (size_t i = 0; i < ix->nbuckets; i++) {
        struct widx_group *g = ix->buckets[i], *next;
        for (; g != NULL; g = next) {
            next = g->h_next;
            uint64_t h = hash(g->kind, g->key, g->klen, g->end, g->elen) % n;
            g->h_next = b[h];
            b[h] = g;
        }
    }
    cairn_free(ix->buckets);
    ix->buckets = b;
    ix->nbuckets = n;
}

static struct widx_group *find(struct widx *ix, enum wrange_kind kind,
                               const uint8_t *k, size_t kl, const uint8_t *e,
                               size_t el)
{
    uint64_t h = hash(kind, k, kl, e, el) % ix->nbuckets;
    for (struct widx_group *g = ix->buckets[h]; g != NULL; g = g->h_next)
        if (same(g, kind, k, kl, e, el))
            return g;
    return NULL;
}

static int range_less(const struct widx_group *a, const struct widx_group *b)
{
    int c = bcmp_(a->key, a->klen, b->key, b->klen);
    return c != 0 ? c < 0 : end_cmp(a, b) < 0;
}

void widx_add(struct widx *ix, struct watcher *w)
{
    struct widx_group *g = find(ix, w->kind, w->key, w->klen, w->end, w->elen);
    if (g == NULL) {
        g = cairn_calloc(1, sizeof *g);
        g->kind = w->kind;
        g->klen = w->klen;
        g->elen = w->elen;
        g->key = cairn_malloc(w->klen + 1);
        memcpy(g->key, w->key, w->klen);
        g->end = cairn_malloc(w->elen + 1);
        if (w->elen)
            memcpy(g->end, w->end, w->elen);
        if (ix->ngroups + 1 > ix->nbuckets)
            rehash(ix);
        uint64_t h = hash(g->kind, g->key, g->klen, g->end, g->elen) % ix->nbuckets;
        g->h_next = ix->buckets[h];
        ix->buckets[h] = g;
        ix->ngroups++;
        if (g->kind != WR_KEY) {
            if (ix->nranges == ix->cap_ranges) {
                ix->cap_ranges = ix->cap_ranges ? ix->cap_ranges * 2 : 16;
                ix->ranges = cairn_realloc(ix->ranges,
                                           ix->cap_ranges * sizeof *ix->ranges);
            }
            size_t i = ix->nranges;
            while (i > 0 && range_less(g, ix->ranges[i - 1])) {
                ix->ranges[i] = ix->ranges[i - 1];
                i--;
            }
            ix->ranges[i] = g;
            ix->nranges++;
            ix->dirty = 1;
        }
    }
    w->grp = g;
    w->g_prev = NULL;
    w->g_next = g->head;
    if (g->head)
        g->head->g_prev = w;
    g->head = w;
}

void widx_remove(struct widx *ix, struct watcher *w)
{
    struct widx_group *g = w->grp;
    if (g == NULL)
        return;
    if (w->g_prev)
        w->g_prev->g_next = w->g_next;
    else
        g->head = w->g_next;
    if (w->g_next)
        w->g_next->g_prev = w->g_prev;
    w->grp = NULL;
    w->g_next = w->g_prev = NULL;
    if (g->head != NULL)
        return;
    /* Last watcher of the group: drop the group. */
    uint64_t h = hash(g->kind, g->key, g->klen, g->end, g->elen) % ix->nbuckets;
    struct widx_group **pp = &ix->buckets[h];
    while (*pp != g)
        pp = &(*pp)->h_next;
    *pp = g->h_next;
    ix->ngroups--;
    if (g->kind != WR_KEY) {
        size_t i = 0;
        while (ix->ranges[i] != g)
            i++;
        memmove(&ix->ranges[i], &ix->ranges[i + 1],
                (ix->nranges - i - 1) * sizeof *ix->ranges);
        ix->nranges--;
        ix->dirty = 1;
    }
    cairn_free(g->key);
    cairn_free(g->end);
    cairn_free(g);
}

static struct widx_group *build(struct widx *ix, size_t lo, size_t hi)
{
    if (lo >= hi)
        return NULL;
    size_t mid = lo + (hi - lo) / 2;
    struct widx_group *m = ix->ranges[mid];
    struct widx_group *l = build(ix, lo, mid), *r = build(ix, mid + 1, hi);
    if (l && end_cmp(l, m) > 0)
        m = l;
    if (r && end_cmp(r, m) > 0)
        m = r;
    ix->submax[mid] = m;
    return m;
}

static void stab(struct widx *ix, size_t lo, size_t hi, const uint8_t *key,
                 size_t klen, void (*fn)(void *, struct widx_group *), void *ud)
{
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        /* Nothing below this node reaches past the key. */
        if (!below_end(ix->submax[mid], key, klen))
            return;
        stab(ix, lo, mid, key, klen, fn, ud);
        struct widx_group *g = ix->ranges[mid];
        if (bcmp_(g->key, g->klen, key, klen) > 0)
            return; /* this start and all to the right are above the key */
        if (below_end(g, key, klen))
            fn(ud, g);
        lo = mid + 1;
    }
}

void widx_stab(struct widx *ix, const uint8_t *key, size_t klen,
               void (*fn)(void *ud, struct widx_group *g), void *ud)
{
    struct widx_group *g = find(ix, WR_KEY, key, klen, NULL, 0);
    if (g != NULL)
        fn(ud, g);
    if (ix->nranges == 0)
        return;
    if (ix->dirty) {
        cairn_free(ix->submax);
        ix->submax = cairn_malloc(ix->nranges * sizeof *ix->submax);
        build(ix, 0, ix->nranges);
        ix->dirty = 0;
    }
    stab(ix, 0, ix->nranges, key, klen, fn, ud);
}
