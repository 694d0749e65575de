/* The watch index: stabbing a key finds exactly the groups whose range
 * contains it, through adds and removes (checked against brute force). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "core/mem.h"
#include "watch/watch_int.h"

#define NW 300

static struct watcher *mk(enum wrange_kind kind, const char *k, const char *e)
{
    struct watcher *w = cairn_calloc(1, sizeof *w);
    w->kind = kind;
    w->klen = strlen(k);
    w->key = cairn_malloc(w->klen + 1);
    memcpy(w->key, k, w->klen);
    if (kind == WR_RANGE) {
        w->elen = strlen(e);
        w->end = cairn_malloc(w->elen + 1);
        memcpy(w->end, e, w->elen);
    }
    return w;
}

static void wfree(struct watcher *w)
{
    cairn_free(w->key);
    cairn_free(w->end);
    cairn_free(w);
}

struct hits {
    struct watcher *found[NW];
    int n;
};

static void on_group(void *ud, struct widx_group *g)
{
    struct hits *h = ud;
    for (struct watcher *w = g->head; w != NULL; w = w->g_next)
        h->found[h->n++] = w;
}

static int has(struct hits *h, struct watcher *w)
{
    for (int i = 0; i < h->n; i++)
        if (h->found[i] == w)
            return 1;
    return 0;
}

static void check_key(struct widx *ix, struct watcher **ws, int n,
                      const char *key)
{
    struct hits h = {{0}, 0};
    int expect = 0;
    widx_stab(ix, (const uint8_t *)key, strlen(key), on_group, &h);
    for (int i = 0; i < n; i++) {
        if (ws[i] == NULL)
            continue;
        int in = watcher_contains(ws[i], (const uint8_t *)key, strlen(key));
        expect += in;
        assert_int_equal(has(&h, ws[i]), in);
    }
    assert_int_equal(h.n, expect); /* and nothing twice */
}

static void contains_matches_etcd_ranges(void **state)
{
    (void)state;
    struct watcher *k = mk(WR_KEY, "a", NULL), *r = mk(WR_RANGE, "a", "c"),
                   *f = mk(WR_FROM, "b", NULL);
    const uint8_t *a = (const uint8_t *)"a", *b = (const uint8_t *)"b",
                  *c = (const uint8_t *)"c", *ab = (const uint8_t *)"ab";
    assert_true(watcher_contains(k, a, 1));
    assert_false(watcher_contains(k, ab, 2));
    assert_true(watcher_contains(r, a, 1));
    assert_true(watcher_contains(r, b, 1));
    assert_false(watcher_contains(r, c, 1)); /* half-open */
    assert_false(watcher_contains(f, a, 1));
    assert_true(watcher_contains(f, c, 1));
    wfree(k);
    wfree(r);
    wfree(f);
}

static void random_stabs_match_brute_force(void **state)
{
    static const char *keys[] = {"", "a", "a/", "a/1", "a/2", "a0", "ab",
                                 "b", "b/x", "c", "\x7f", "z"};
    const int nk = (int)(sizeof keys / sizeof keys[0]);
    struct watcher *ws[NW] = {0};
    struct widx ix;
    (void)state;
    srand(42);
    widx_init(&ix);
    for (int round = 0; round < 2000; round++) {
        int i = rand() % NW;
        if (ws[i] != NULL) { /* remove */
            widx_remove(&ix, ws[i]);
            wfree(ws[i]);
            ws[i] = NULL;
        } else {
            int kind = rand() % 3;
            const char *k = keys[1 + rand() % (nk - 1)];
            const char *e = keys[1 + rand() % (nk - 1)];
            if (kind == WR_RANGE && strcmp(k, e) >= 0)
                kind = WR_KEY; /* empty ranges are refused before the index */
            ws[i] = mk((enum wrange_kind)kind, k, e);
            widx_add(&ix, ws[i]);
        }
        if (round % 10 == 0)
            for (int j = 0; j < nk; j++)
                check_key(&ix, ws, NW, keys[j]);
    }
    for (int i = 0; i < NW; i++) {
        if (ws[i] != NULL) {
            widx_remove(&ix, ws[i]);
            wfree(ws[i]);
        }
    }
    assert_int_equal(ix.ngroups, 0);
    assert_int_equal(ix.nranges, 0);
    widx_free(&ix);
}

static void shared_range_is_one_group(void **state)
{
    struct widx ix;
    struct watcher *a = mk(WR_RANGE, "p/", "p0"), *b = mk(WR_RANGE, "p/", "p0");
    (void)state;
    widx_init(&ix);
    widx_add(&ix, a);
    widx_add(&ix, b);
    assert_int_equal(ix.ngroups, 1);
    assert_ptr_equal(a->grp, b->grp);
    widx_remove(&ix, a);
    assert_int_equal(ix.ngroups, 1);
    widx_remove(&ix, b);
    assert_int_equal(ix.ngroups, 0);
    widx_free(&ix);
    wfree(a);
    wfree(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(contains_matches_etcd_ranges),
        cmocka_unit_test(random_stabs_match_brute_force),
        cmocka_unit_test(shared_range_is_one_group),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
