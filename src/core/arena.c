#include "core/arena.h"

#include <string.h>

#include "core/mem.h"

struct arena_block {
    struct arena_block *next;
    size_t cap;
    max_align_t data[];
};

#define ARENA_MIN_BLOCK 4096

static void *pb_alloc(void *ud, size_t n)
{
    return arena_alloc(ud, n);
}

static void pb_free(void *ud, void *p)
{
    (void)ud; /* freed with the arena */
    (void)p;
}

void arena_init(struct arena *a)
{
    a->head = NULL;
    a->used = a->cap = 0;
    a->pb.alloc = pb_alloc;
    a->pb.free = pb_free;
    a->pb.allocator_data = a;
}

void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        cairn_free(b);
        b = next;
    }
    a->head = NULL;
    a->used = a->cap = 0;
}

void arena_reset(struct arena *a)
{
    struct arena_block *last = NULL, *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        if (next == NULL)
            last = b;
        else
            cairn_free(b);
        b = next;
    }
    a->head = last;
    if (last != NULL) {
        last->next = NULL;
        a->cap = last->cap;
    } else {
        a->cap = 0;
    }
    a->used = 0;
}

void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    if (a->head == NULL || a->cap - a->used < n) {
        size_t cap = a->cap * 2 > ARENA_MIN_BLOCK ? a->cap * 2 : ARENA_MIN_BLOCK;
        if (cap < n)
            cap = n;
        struct arena_block *b = cairn_malloc(sizeof *b + cap);
        b->next = a->head;
        b->cap = cap;
        a->head = b;
        a->cap = cap;
        a->used = 0;
    }
    void *p = (char *)a->head->data + a->used;
    a->used += n;
    return p;
}

void *arena_calloc(struct arena *a, size_t n)
{
    void *p = arena_alloc(a, n);
    memset(p, 0, n);
    return p;
}

void *arena_memdup(struct arena *a, const void *p, size_t n)
{
    void *q = arena_alloc(a, n);
    if (n)
        memcpy(q, p, n);
    return q;
}
