/* Key file at start and on change. Messages name the file and key ids,
 * never key bytes. */
#include "server/encryption.h"

#include <signal.h>
#include <string.h>

#include "apply/apply.h"
#include "core/log.h"
#include "crypt/crypt.h"
#include "metrics/metrics.h"

/* How often the key file is checked for changes (besides SIGHUP). */
#define KEYFILE_POLL_MS 2000

static uv_signal_t sig_hup;
static uv_fs_poll_t poll_h;
static int watching;

int server_encryption_open(struct server *s)
{
    const char *path = s->cfg.encryption_key_file;
    struct crypt_ring *ring = NULL;
    char err[512];
    int rotated, rc;

    if (path != NULL && *path != 0 &&
        crypt_ring_load(path, &ring, err, sizeof err) != 0) {
        log_errorw("server: cannot use the encryption key file",
                   LOG_STR("error", err));
        return -1;
    }
    rc = mvcc_seal_install(s->mvcc, ring, &rotated, err, sizeof err);
    if (rc != 0) {
        log_errorw("server: refusing to start: encryption keys do not match "
                   "the store", LOG_STR("data-dir", s->cfg.data_dir),
                   LOG_STR("error", err));
        crypt_ring_free(ring);
        return -1;
    }
    if (ring == NULL)
        return 0;
    if (rotated)
        metrics_encryption_rotated();
    log_infow("server: encryption at rest enabled",
              LOG_STR("key-file", path), LOG_STR("key-id", ring->keys[0].name),
              LOG_INT("keys", ring->n),
              LOG_INT("records-pending", mvcc_seal_pending(s->mvcc)));
    return 0;
}

static void reload(const char *why)
{
    struct crypt_ring *ring;
    char err[512];
    if (srv->stopping || srv->apply == NULL)
        return;
    if (crypt_ring_load(srv->cfg.encryption_key_file, &ring, err,
                        sizeof err) != 0) {
        log_errorw("server: encryption key file not reloaded; the keys in "
                   "use stay", LOG_STR("reason", why), LOG_STR("error", err));
        return;
    }
    log_infow("server: rereading the encryption key file",
              LOG_STR("reason", why));
    apply_seal_reload(srv->apply, ring);
}

static void on_hup(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    reload("SIGHUP");
}

static void on_poll(uv_fs_poll_t *h, int status, const uv_stat_t *prev,
                    const uv_stat_t *cur)
{
    (void)h;
    (void)prev;
    (void)cur;
    /* A file being replaced may be missing for a moment: the next change
     * rereads it. */
    if (status == 0)
        reload("key file changed");
}

void server_encryption_watch(struct server *s)
{
    const char *path = s->cfg.encryption_key_file;
    if (path == NULL || *path == 0)
        return;
    uv_signal_init(s->loop, &sig_hup);
    uv_signal_start(&sig_hup, on_hup, SIGHUP);
    uv_fs_poll_init(s->loop, &poll_h);
    uv_fs_poll_start(&poll_h, on_poll, path, KEYFILE_POLL_MS);
    watching = 1;
}

void server_encryption_stop(void)
{
    if (!watching)
        return;
    watching = 0;
    uv_close((uv_handle_t *)&sig_hup, NULL);
    uv_close((uv_handle_t *)&poll_h, NULL);
}
