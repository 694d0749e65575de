/* Maintenance.Snapshot: the store as etcd's bbolt db, streamed as etcd's
 * maintenance.go streams it: 32 KiB blobs with the bytes remaining after
 * each, then one message whose blob is the sha256 of everything sent
 * (etcdctl checks size % 512 == 32 and restore checks the digest).
 *
 * remaining_bytes needs the total up front, so the db is first written
 * whole from one read txn (one point in time; writers go on meanwhile)
 * into an unlinked temp file in the data dir, on libuv's thread pool. It
 * is then read back a slice at a time, also on the pool, and a slice is
 * read only while the stream has less than SNAP_HIGH_WATER unsent: memory
 * stays bounded whatever the db's size or the client's speed. A client
 * that goes away cancels the call; the job is freed once no work of its
 * is in flight, which closes (and so deletes) the temp file. */
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"
#include "core/mem.h"
#include "mvcc/snapshot.h"
#include "rpc/rpc.h"

#define SNAP_CHUNK (32u << 10) /* etcd's snapshotSendBufferSize */
#define SNAP_SLICE (1u << 20)  /* read per trip to the pool */
#define SNAP_HIGH_WATER (4u << 20)
#define SNAP_WAIT_MS 1

struct snap_job {
    uv_work_t work;
    uv_timer_t timer;
    struct grpc_call *call; /* NULL once the call has ended */
    int fd;
    int rc;
    int busy;               /* work queued or running */
    atomic_int stop;        /* the call has ended: the export gives up */
    uint64_t size, off;
    int64_t rev;
    uint8_t *buf;
    size_t buf_len;
    EVP_MD_CTX *sha;
};

static void pump(struct snap_job *j);

static void job_closed(uv_handle_t *h)
{
    struct snap_job *j = h->data;
    cairn_free(j->buf);
    cairn_free(j);
}

static void job_free(struct snap_job *j)
{
    if (j->fd >= 0)
        close(j->fd); /* the file was never linked: this deletes it */
    EVP_MD_CTX_free(j->sha);
    uv_close((uv_handle_t *)&j->timer, job_closed);
}

/* Ends the call (if still there) and frees the job. */
static void job_end(struct snap_job *j, int rc)
{
    struct grpc_call *c = j->call;
    if (c != NULL) {
        c->ud = NULL;
        c->on_cancel = NULL;
        j->call = NULL;
        rpc_finish(c, rc);
    }
    job_free(j);
}

static void snap_cancel(struct grpc_call *c)
{
    struct snap_job *j = c->ud;
    c->ud = NULL;
    if (j == NULL)
        return;
    j->call = NULL;
    atomic_store(&j->stop, 1);
    if (!j->busy)
        job_free(j); /* else the work's completion frees it */
}

/* An unlinked file in the data dir: on the store's disk, gone with the
 * process whatever happens. */
static int open_temp(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0 || (errno != EOPNOTSUPP && errno != EISDIR && errno != ENOENT))
        return fd >= 0 ? fd : -errno;
    char path[4096];
    snprintf(path, sizeof path, "%s/.snapshot-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static void produce_work(uv_work_t *w)
{
    struct snap_job *j = w->data;
    struct mvcc_txn t;
    struct mvcc_snap_member m = {
        srv->member_id,     srv->cfg.name,       srv->peer_urls,
        srv->n_peer_urls,   srv->client_urls,    srv->n_client_urls,
    };
    if ((j->rc = mvcc_read_begin(srv->mvcc, &t)) != 0)
        return;
    j->rev = t.rev;
    j->rc = mvcc_snapshot_write(&t, j->fd, &m, &j->stop, &j->size);
    mvcc_read_end(&t);
}

static void read_work(uv_work_t *w)
{
    struct snap_job *j = w->data;
    size_t n = j->size - j->off < SNAP_SLICE ? (size_t)(j->size - j->off)
                                             : SNAP_SLICE;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(j->fd, j->buf + got, n - got, (off_t)(j->off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            j->rc = k < 0 ? -errno : -EIO;
            return;
        }
        got += (size_t)k;
    }
    j->buf_len = n;
}

static void send_blob(struct grpc_call *c, const uint8_t *p, size_t n,
                      uint64_t remaining)
{
    Etcdserverpb__SnapshotResponse r = ETCDSERVERPB__SNAPSHOT_RESPONSE__INIT;
    r.remaining_bytes = remaining;
    r.blob.data = (uint8_t *)p;
    r.blob.len = n;
    grpc_send_pb(c, &r);
}

static void read_done(uv_work_t *w, int status)
{
    struct snap_job *j = w->data;
    j->busy = 0;
    if (j->call == NULL) {
        job_free(j);
        return;
    }
    if (status != 0 || j->rc != 0) {
        job_end(j, status != 0 ? status : j->rc);
        return;
    }
    EVP_DigestUpdate(j->sha, j->buf, j->buf_len);
    for (size_t at = 0; at < j->buf_len; at += SNAP_CHUNK) {
        size_t n = j->buf_len - at < SNAP_CHUNK ? j->buf_len - at : SNAP_CHUNK;
        j->off += n;
        send_blob(j->call, j->buf + at, n, j->size - j->off);
    }
    pump(j);
}

static void on_wait(uv_timer_t *h)
{
    pump(h->data);
}

static size_t unsent(const struct grpc_call *c)
{
    return grpc_call_unsent(c);
}

/* Sends what the stream has room for: the next slice, or the digest. */
static void pump(struct snap_job *j)
{
    struct grpc_call *c = j->call;
    uv_timer_stop(&j->timer);
    if (c == NULL || j->busy)
        return;
    if (unsent(c) >= SNAP_HIGH_WATER) {
        uv_timer_start(&j->timer, on_wait, SNAP_WAIT_MS, 0);
        return;
    }
    if (j->off == j->size) {
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned int mdlen = 0;
        EVP_DigestFinal_ex(j->sha, md, &mdlen);
        send_blob(c, md, mdlen, 0);
        log_info("snapshot: sent rev=%lld bytes=%llu", (long long)j->rev,
                 (unsigned long long)j->size);
        job_end(j, 0);
        return;
    }
    j->busy = 1;
    int rc = uv_queue_work(srv->loop, &j->work, read_work, read_done);
    if (rc != 0) {
        j->busy = 0;
        job_end(j, rc);
    }
}

static void produce_done(uv_work_t *w, int status)
{
    struct snap_job *j = w->data;
    j->busy = 0;
    if (j->call == NULL) {
        job_free(j);
        return;
    }
    if (status != 0 || j->rc != 0) {
        log_error("snapshot: failed rc=%d", status != 0 ? status : j->rc);
        job_end(j, status != 0 ? status : j->rc);
        return;
    }
    j->buf = cairn_malloc(SNAP_SLICE);
    pump(j);
}

void rpc_maint_snapshot(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__SnapshotRequest *r =
        etcdserverpb__snapshot_request__unpack(&c->arena.pb, len, msg);
    struct snap_job *j;
    int fd, rc;

    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        rpc_auth_finish_maint(c, rc);
        return;
    }
    if ((fd = open_temp(srv->cfg.data_dir)) < 0) {
        log_error("snapshot: temp file in %s: %s", srv->cfg.data_dir,
                  strerror(-fd));
        grpc_finish_err(c, fd);
        return;
    }
    j = cairn_calloc(1, sizeof *j);
    j->fd = fd;
    j->call = c;
    j->work.data = j;
    j->sha = EVP_MD_CTX_new();
    CAIRN_ASSERT(j->sha != NULL && EVP_DigestInit_ex(j->sha, EVP_sha256(), NULL) == 1);
    uv_timer_init(srv->loop, &j->timer);
    j->timer.data = j;
    c->ud = j;
    c->on_cancel = snap_cancel;
    j->busy = 1;
    if ((rc = uv_queue_work(srv->loop, &j->work, produce_work, produce_done)) != 0) {
        j->busy = 0;
        job_end(j, rc);
    }
}
