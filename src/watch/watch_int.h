/* Internal to watch/: watchers and the index of their key ranges. */
#ifndef WATCH_WATCH_INT_H
#define WATCH_WATCH_INT_H

#include "watch/watch.h"

enum wrange_kind {
    WR_KEY,   /* one key */
    WR_RANGE, /* [key, end) */
    WR_FROM,  /* [key, +inf): range_end "\0" */
};

struct widx_group;

struct watcher {
    int64_t id;
    int64_t min_rev;         /* next revision this watcher needs */
    enum wrange_kind kind;
    uint8_t *key, *end;      /* owned */
    size_t klen, elen;
    unsigned prev_kv : 1, fragment : 1, noput : 1, nodelete : 1;
    unsigned progress : 1;      /* progress_notify requested */
    unsigned progress_idle : 1; /* no events since the last progress tick */
    unsigned synced : 1;
    unsigned dead : 1;          /* cancelled by compaction; its id stays taken */
    struct watch_stream *ws;
    struct watcher *s_next, *s_prev;     /* stream's watchers */
    struct widx_group *grp;              /* synced: its index group */
    struct watcher *g_next, *g_prev;     /* group's watchers */
    struct watcher *u_next, *u_prev;     /* hub's unsynced list */
    /* scratch for one notification */
    uint64_t mark;
    size_t *evs;
    size_t nevs, cap_evs;
    struct watcher *m_next;
};

struct widx_group {
    enum wrange_kind kind;
    uint8_t *key, *end;
    size_t klen, elen;
    struct watcher *head;
    struct widx_group *h_next;
};

struct widx {
    struct widx_group **buckets;
    size_t nbuckets, ngroups;
    struct widx_group **ranges; /* WR_RANGE/WR_FROM groups sorted by start */
    size_t nranges, cap_ranges;
    struct widx_group **submax; /* per implicit-tree node: max end below */
    int dirty;
};

void widx_init(struct widx *ix);
void widx_free(struct widx *ix);
void widx_add(struct widx *ix, struct watcher *w);
void widx_remove(struct widx *ix, struct watcher *w);
/* Calls @fn for each group whose range contains @key. */
void widx_stab(struct widx *ix, const uint8_t *key, size_t klen,
               void (*fn)(void *ud, struct widx_group *g), void *ud);
/* Does @w's range contain @key? */
int watcher_contains(const struct watcher *w, const uint8_t *key, size_t klen);

#endif
