/* CRC-32C (Castagnoli), as Go's crc32.MakeTable(crc32.Castagnoli): etcd's
 * HashKV and the raft log's record checks. */
#ifndef CORE_CRC32C_H
#define CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Running crc (Go's hash.Hash32 Write): @crc is the finished value so far
 * (0 to start). Any thread. */
uint32_t crc32c(uint32_t crc, const void *data, size_t n);

#endif
