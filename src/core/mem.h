/* Allocation that never returns NULL: on exhaustion the process aborts
 * (as redis' zmalloc does). Sizes from clients are checked against
 * --max-request-bytes before they reach an allocator. */
#ifndef CORE_MEM_H
#define CORE_MEM_H
#include <stddef.h>

void *cairn_malloc(size_t n);
void *cairn_calloc(size_t nmemb, size_t n);
void *cairn_realloc(void *p, size_t n);
char *cairn_strdup(const char *s);
void cairn_free(void *p);

#define CAIRN_ASSERT(c)                                                     \
    do {                                                                    \
        if (!(c))                                                           \
            cairn_assert_fail(#c, __FILE__, __LINE__);                      \
    } while (0)
_Noreturn void cairn_assert_fail(const char *what, const char *file, int line);

#endif
