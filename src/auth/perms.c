/* A user's merged permissions: the union of its roles' key ranges, one
 * sorted list of disjoint intervals per permission type, so that "may
 * read [a, b)" is one scan (etcd's unifiedRangePermissions, an interval
 * tree answering Contains/Intersects over the union). */
#include <stdlib.h>
#include <string.h>

#include "auth/auth.h"
#include "core/mem.h"

struct ivl {
    uint8_t *b, *e; /* [b, e); e unused when inf */
    size_t bl, el;
    int inf;        /* open-ended: to the end of the keyspace */
};

struct auth_perms {
    struct ivl *v[2];
    size_t n[2], cap[2];
};

static int bcmp_(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    size_t n = al < bl ? al : bl;
    int c = n ? memcmp(a, b, n) : 0;
    return c != 0 ? c : (al > bl) - (al < bl);
}

struct auth_perms *auth_perms_new(void)
{
    return cairn_calloc(1, sizeof(struct auth_perms));
}

static void push(struct auth_perms *p, int k, const uint8_t *key, size_t klen,
                 const uint8_t *end, size_t elen, int inf)
{
    if (p->n[k] == p->cap[k]) {
        p->cap[k] = p->cap[k] ? p->cap[k] * 2 : 4;
        p->v[k] = cairn_realloc(p->v[k], p->cap[k] * sizeof *p->v[k]);
    }
    struct ivl *i = &p->v[k][p->n[k]++];
    i->b = cairn_malloc(klen + 1);
    if (klen)
        memcpy(i->b, key, klen);
    i->bl = klen;
    i->inf = inf;
    i->e = cairn_malloc(elen + 1);
    if (elen)
        memcpy(i->e, end, elen);
    i->el = elen;
}

void auth_perms_add(struct auth_perms *p, int perm_type, const uint8_t *key,
                    size_t klen, const uint8_t *end, size_t elen)
{
    uint8_t *pt = NULL;
    int inf = 0;
    if (elen == 1 && end[0] == 0) {
        inf = 1; /* etcd: range_end "\0" is "from key" */
    } else if (elen == 0) {
        /* a single key is the interval [key, key "\0") */
        pt = cairn_malloc(klen + 1);
        if (klen)
            memcpy(pt, key, klen);
        pt[klen] = 0;
        end = pt;
        elen = klen + 1;
    }
    /* authpb: READ = 0, WRITE = 1, READWRITE = 2 */
    if (perm_type == 0 || perm_type == 2)
        push(p, AUTH_READ, key, klen, end, elen, inf);
    if (perm_type == 1 || perm_type == 2)
        push(p, AUTH_WRITE, key, klen, end, elen, inf);
    cairn_free(pt);
}

static int ivl_cmp(const void *x, const void *y)
{
    const struct ivl *a = x, *b = y;
    return bcmp_(a->b, a->bl, b->b, b->bl);
}

/* a's end is before b's: -1; same 0; after 1 */
static int end_cmp(const struct ivl *a, const struct ivl *b)
{
    if (a->inf || b->inf)
        return a->inf - b->inf;
    return bcmp_(a->e, a->el, b->e, b->el);
}

void auth_perms_done(struct auth_perms *p)
{
    for (int k = 0; k < 2; k++) {
        size_t j = 0;
        if (p->n[k] == 0)
            continue;
        qsort(p->v[k], p->n[k], sizeof *p->v[k], ivl_cmp);
        for (size_t i = 1; i < p->n[k]; i++) {
            struct ivl *cur = &p->v[k][j], *nx = &p->v[k][i];
            /* overlapping or touching intervals cover their union */
            if (cur->inf || bcmp_(nx->b, nx->bl, cur->e, cur->el) <= 0) {
                if (end_cmp(nx, cur) > 0) {
                    cairn_free(cur->e);
                    cur->e = nx->e;
                    cur->el = nx->el;
                    cur->inf = nx->inf;
                    nx->e = NULL;
                }
                cairn_free(nx->b);
                cairn_free(nx->e);
                continue;
            }
            p->v[k][++j] = *nx;
        }
        p->n[k] = j + 1;
    }
}

int auth_perms_allows(const struct auth_perms *p, const uint8_t *key,
                      size_t klen, const uint8_t *end, size_t elen,
                      enum auth_perm perm)
{
    int qinf = elen == 1 && end[0] == 0;
    for (size_t i = 0; i < p->n[perm]; i++) {
        const struct ivl *v = &p->v[perm][i];
        if (bcmp_(v->b, v->bl, key, klen) > 0)
            break; /* sorted: no later interval starts at or before key */
        if (elen == 0) { /* a point */
            if (v->inf || bcmp_(key, klen, v->e, v->el) < 0)
                return 1;
        } else if (qinf) {
            if (v->inf)
                return 1;
        } else if (v->inf || bcmp_(end, elen, v->e, v->el) <= 0) {
            return 1;
        }
    }
    return 0;
}

void auth_perms_free(struct auth_perms *p)
{
    if (p == NULL)
        return;
    for (int k = 0; k < 2; k++) {
        for (size_t i = 0; i < p->n[k]; i++) {
            cairn_free(p->v[k][i].b);
            cairn_free(p->v[k][i].e);
        }
        cairn_free(p->v[k]);
    }
    cairn_free(p);
}
