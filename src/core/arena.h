/* A bump allocator for the life of one request: protobuf unpacking, response
 * building and scratch space all come from it and are freed at once when
 * the request ends. Large requests simply add blocks. */
#ifndef CORE_ARENA_H
#define CORE_ARENA_H
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head;
    size_t used;          /* bytes used in head */
    size_t cap;           /* capacity of head */
    ProtobufCAllocator pb; /* allocator view for protobuf-c */
};

void arena_init(struct arena *a);
/* Frees every block; @a may be reused after arena_init(). */
void arena_free(struct arena *a);
/* Frees all but keeps the first block for reuse. */
void arena_reset(struct arena *a);
void *arena_alloc(struct arena *a, size_t n);
void *arena_calloc(struct arena *a, size_t n);
void *arena_memdup(struct arena *a, const void *p, size_t n);

#endif
