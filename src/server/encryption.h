/* Encryption at rest for the server: --experimental-encryption-key-file
 * (crypt/crypt.h gives the file's format) checked against the store at
 * start, reread on SIGHUP or when the file changes (polled). */
#ifndef SERVER_ENCRYPTION_H
#define SERVER_ENCRYPTION_H

#include "server/server.h"

/* Before the apply thread starts: loads the key file (if configured) and
 * checks it against the store (mvcc_seal_install). A store with encrypted
 * records and no key file, a key missing from the file or a wrong key
 * refuse the start: logged, returns -1 (exit non-zero). */
int server_encryption_open(struct server *s);
/* After the apply thread starts: SIGHUP and changes of the file reread
 * it (apply_seal_reload). No-op without a key file. */
void server_encryption_watch(struct server *s);
/* Closes the handles (shutdown). */
void server_encryption_stop(void);

#endif
