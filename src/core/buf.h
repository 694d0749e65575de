/* A growable byte buffer. */
#ifndef CORE_BUF_H
#define CORE_BUF_H
#include <stddef.h>
#include <stdint.h>

struct buf {
    uint8_t *data;
    size_t len;
    size_t cap;
};

void buf_init(struct buf *b);
void buf_free(struct buf *b);
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
/* Drops the first @n bytes. */
void buf_consume(struct buf *b, size_t n);

#endif
