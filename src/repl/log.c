/* The durable raft log (see log.h for the format and the contract).
 *
 * Integers on disk are little-endian. Every record and header carries a
 * crc32c; a record is [crc len index term type 0 0 0 0 0 0 0] (32 bytes)
 * then its data padded to 8 bytes, the crc covering bytes 4..31 of the
 * header and the data. */
#include "core/crc32c.h"
#include "repl/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "core/log.h"
#include "core/mem.h"

#define SEG_MAGIC "CRNSEG01"
#define SEG_HDR 32
#define REC_HDR 32
#define SNAP_MAGIC "CRNSNAP1"
#define SNAP_HDR 64
#define META_MAGIC "CRNMETA1"
#define META_SIZE 64
#define SNAP_REPLACES_LOG 1u
#define DEFAULT_SEG_MAX (8u << 20)
#define SNAPS_KEPT 2
#define IOV_CHUNK 256 /* iovecs per pwritev (3 per record at most) */
#define PAD8(n) (((n) + 7) & ~(size_t)7)

struct seg {
    raft_index first, last; /* last == first - 1: no entries */
    uint64_t epoch;
    uint64_t end;           /* bytes in use (header included) */
    void *batch;            /* the file as read by open, until load;
                               dropped when the segment changes */
};

struct repl_log {
    char *dir;
    int dirfd;
    size_t seg_max;
    uint64_t (*keep_from)(void *ud);
    void *keep_ud;

    /* The metadata half (set_term/set_vote). */
    int meta_fd[2];
    uint64_t meta_seq;
    raft_term term;
    raft_id vote;
    char meta_errmsg[RAFT_ERRMSG_BUF_SIZE];

    /* The entries half. */
    struct seg *segs;
    unsigned n_segs, cap_segs;
    int cur_fd;       /* segs[n_segs - 1] open for writing, or -1 */
    int cur_dirty;    /* written since its last fdatasync */
    int dir_dirty;    /* a segment was created since the last dir fsync */
    raft_index next_index;
    raft_term last_term; /* of the last entry when opened (for recover) */
    uint64_t epoch;
    raft_index *snaps;   /* snapshot files present, ascending */
    unsigned n_snaps;
    struct raft_snapshot *loaded; /* newest snapshot, until load */
    int load_done;
    struct repl_log_stats stats;
    char errmsg[RAFT_ERRMSG_BUF_SIZE];
};

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
           (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

/* Formats the error into @buf, logs it and returns @rc. */
__attribute__((format(printf, 4, 5))) static int fail(struct repl_log *l,
                                                      char *buf, int rc,
                                                      const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, RAFT_ERRMSG_BUF_SIZE, fmt, ap);
    va_end(ap);
    log_error("repl: log: %s dir=%s", buf, l->dir);
    return rc;
}

static int errno_code(int e)
{
    if (e == ENOSPC || e == EDQUOT)
        return RAFT_NOSPACE;
    if (e == ENOMEM)
        return RAFT_NOMEM;
    return RAFT_IOERR;
}

#define SYSFAIL(l, buf, what, name)                                         \
    fail((l), (buf), errno_code(errno), "%s %s: %s", (what), (name),        \
         strerror(errno))

static void seg_name(char *out, size_t n, raft_index first)
{
    snprintf(out, n, "seg-%020llu", first);
}

static void snap_name(char *out, size_t n, raft_index index)
{
    snprintf(out, n, "snap-%020llu", index);
}

static int write_all(int fd, struct iovec *iov, int cnt, uint64_t off)
{
    while (cnt > 0) {
        ssize_t w = pwritev(fd, iov, cnt, (off_t)off);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        off += (uint64_t)w;
        while (cnt > 0 && (size_t)w >= iov->iov_len) {
            w -= (ssize_t)iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + w;
            iov->iov_len -= (size_t)w;
        }
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t n, uint64_t off)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, (off_t)(off + got));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return -1;
        if (r == 0) {
            errno = EIO; /* shorter than its header said */
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

/* Syncs the directory: names created, renamed or removed become durable. */
static int sync_dir(struct repl_log *l)
{
    if (fsync(l->dirfd) != 0)
        return SYSFAIL(l, l->errmsg, "fsync", l->dir);
    l->dir_dirty = 0;
    return 0;
}

static int mkdir_p(const char *path)
{
    char *p = cairn_strdup(path);
    int rc = 0;
    for (char *s = p + 1;; s++) {
        if (*s != '/' && *s != '\0')
            continue;
        char c = *s;
        *s = '\0';
        if (mkdir(p, 0700) != 0 && errno != EEXIST) {
            rc = -1;
            break;
        }
        *s = c;
        if (c == '\0')
            break;
    }
    cairn_free(p);
    return rc;
}

/* ---- metadata ---------------------------------------------------------- */

static const char *const meta_names[2] = {"metadata1", "metadata2"};

/* 1 and the values if file @i holds a valid record, 0 if it is missing or
 * invalid (*present says whether it exists with content), <0 on error. */
static int meta_read(struct repl_log *l, int i, uint64_t *seq, raft_term *term,
                     raft_id *vote, int *present)
{
    uint8_t b[META_SIZE];
    ssize_t r;
    int fd = openat(l->dirfd, meta_names[i], O_RDONLY | O_CLOEXEC);
    *present = 0;
    if (fd < 0 && errno == ENOENT)
        return 0;
    if (fd < 0)
        return SYSFAIL(l, l->errmsg, "open", meta_names[i]);
    r = pread(fd, b, sizeof b, 0);
    close(fd);
    if (r < 0)
        return SYSFAIL(l, l->errmsg, "read", meta_names[i]);
    *present = r > 0;
    if (r != META_SIZE || memcmp(b, META_MAGIC, 8) != 0 ||
        get32(b + 32) != crc32c(0, b, 32))
        return 0;
    *seq = get64(b + 8);
    *term = get64(b + 16);
    *vote = get64(b + 24);
    return 1;
}

static int meta_load(struct repl_log *l)
{
    uint64_t seq[2] = {0, 0};
    raft_term term[2] = {0, 0};
    raft_id vote[2] = {0, 0};
    int ok[2], present[2];
    for (int i = 0; i < 2; i++) {
        ok[i] = meta_read(l, i, &seq[i], &term[i], &vote[i], &present[i]);
        if (ok[i] < 0)
            return ok[i];
    }
    /* Writes alternate, so a torn write spoils at most one file: both bad
     * is damage, not a crash. */
    if (!ok[0] && !ok[1] && present[0] && present[1])
        return fail(l, l->errmsg, RAFT_CORRUPT,
                    "metadata1 and metadata2 are both invalid");
    int w = ok[0] && (!ok[1] || seq[0] > seq[1]) ? 0 : 1;
    if (ok[w]) {
        l->meta_seq = seq[w];
        l->term = term[w];
        l->vote = vote[w];
    }
    return 0;
}

static int meta_write(struct repl_log *l, raft_term term, raft_id vote)
{
    uint8_t b[META_SIZE] = {0};
    uint64_t seq = l->meta_seq + 1;
    int i = (int)(seq & 1) ^ 1; /* odd sequence numbers go to metadata1 */
    int created = 0;

    memcpy(b, META_MAGIC, 8);
    put64(b + 8, seq);
    put64(b + 16, term);
    put64(b + 24, vote);
    put32(b + 32, crc32c(0, b, 32));
    if (l->meta_fd[i] < 0) {
        l->meta_fd[i] = openat(l->dirfd, meta_names[i],
                               O_RDWR | O_CLOEXEC | O_CREAT | O_EXCL, 0600);
        created = l->meta_fd[i] >= 0;
        if (l->meta_fd[i] < 0 && errno == EEXIST)
            l->meta_fd[i] = openat(l->dirfd, meta_names[i], O_RDWR | O_CLOEXEC);
        if (l->meta_fd[i] < 0)
            return SYSFAIL(l, l->meta_errmsg, "open", meta_names[i]);
    }
    struct iovec iov = {b, sizeof b};
    if (write_all(l->meta_fd[i], &iov, 1, 0) != 0)
        return SYSFAIL(l, l->meta_errmsg, "write", meta_names[i]);
    if (fdatasync(l->meta_fd[i]) != 0)
        return SYSFAIL(l, l->meta_errmsg, "fdatasync", meta_names[i]);
    /* A new file's name must be durable too; not l->dir_dirty, which
     * belongs to the other half. */
    if (created && fsync(l->dirfd) != 0)
        return SYSFAIL(l, l->meta_errmsg, "fsync", l->dir);
    l->meta_seq = seq;
    l->term = term;
    l->vote = vote;
    return 0;
}

int repl_log_set_term(struct repl_log *l, raft_term term)
{
    return meta_write(l, term, 0);
}

int repl_log_set_vote(struct repl_log *l, raft_id vote)
{
    return meta_write(l, l->term, vote);
}

/* ---- configuration encoding (snapshot files) -------------------------- */

static size_t conf_size(const struct raft_configuration *c)
{
    size_t n = 8;
    for (unsigned i = 0; i < c->n; i++)
        n += 16 + PAD8(strlen(c->servers[i].address));
    return n;
}

static void conf_encode(const struct raft_configuration *c, uint8_t *p)
{
    put32(p, c->n);
    put32(p + 4, 0);
    p += 8;
    for (unsigned i = 0; i < c->n; i++) {
        size_t len = strlen(c->servers[i].address);
        put64(p, c->servers[i].id);
        put32(p + 8, (uint32_t)c->servers[i].role);
        put32(p + 12, (uint32_t)len);
        memset(p + 16, 0, PAD8(len));
        memcpy(p + 16, c->servers[i].address, len);
        p += 16 + PAD8(len);
    }
}

static int conf_decode(const uint8_t *p, size_t len,
                       struct raft_configuration *c)
{
    raft_configuration_init(c);
    if (len < 8)
        return RAFT_CORRUPT;
    uint32_t n = get32(p);
    size_t off = 8;
    for (uint32_t i = 0; i < n; i++) {
        if (len - off < 16)
            goto err_close_conf;
        uint32_t alen = get32(p + off + 12);
        if (len - off - 16 < PAD8((size_t)alen))
            goto err_close_conf;
        char *addr = cairn_malloc((size_t)alen + 1);
        memcpy(addr, p + off + 16, alen);
        addr[alen] = '\0';
        int rc = raft_configuration_add(c, get64(p + off),
                                        addr, (int)get32(p + off + 8));
        cairn_free(addr);
        if (rc != 0)
            goto err_close_conf;
        off += 16 + PAD8((size_t)alen);
    }
    return 0;
err_close_conf:
    raft_configuration_close(c);
    return RAFT_CORRUPT;
}

/* ---- snapshots --------------------------------------------------------- */

void repl_log_snapshot_free(struct raft_snapshot *s)
{
    if (s == NULL)
        return;
    raft_configuration_close(&s->configuration);
    for (unsigned i = 0; i < s->n_bufs; i++)
        raft_free(s->bufs[i].base);
    raft_free(s->bufs);
    raft_free(s);
}

/* Reads snapshot file @index: 0 and *out, RAFT_CORRUPT if it does not
 * check, or another error. *epoch and *flags from its header. */
static int snap_read(struct repl_log *l, raft_index index,
                     struct raft_snapshot **out, uint64_t *epoch,
                     unsigned *flags)
{
    char name[64];
    uint8_t h[SNAP_HDR];
    struct stat st;
    uint8_t *conf = NULL;
    void *data = NULL;
    struct raft_snapshot *s;
    int rc, fd;

    snap_name(name, sizeof name, index);
    fd = openat(l->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return SYSFAIL(l, l->errmsg, "open", name);
    if (fstat(fd, &st) != 0) {
        rc = SYSFAIL(l, l->errmsg, "stat", name);
        goto err_close_fd;
    }
    rc = RAFT_CORRUPT; /* until everything checks */
    if ((uint64_t)st.st_size < SNAP_HDR || read_all(fd, h, SNAP_HDR, 0) != 0 ||
        memcmp(h, SNAP_MAGIC, 8) != 0 || get64(h + 16) != index)
        goto err_close_fd;
    uint64_t conf_len = get64(h + 48), data_len = get64(h + 56);
    if (conf_len > (uint64_t)st.st_size || data_len > (uint64_t)st.st_size ||
        SNAP_HDR + conf_len + data_len != (uint64_t)st.st_size)
        goto err_close_fd;
    conf = cairn_malloc(conf_len ? conf_len : 1);
    /* One byte at least: a restoring FSM gets a non-NULL buffer. */
    data = raft_malloc(data_len ? data_len : 1);
    if (data == NULL) {
        rc = RAFT_NOMEM;
        goto err_free_bufs;
    }
    if (read_all(fd, conf, conf_len, SNAP_HDR) != 0 ||
        read_all(fd, data, data_len, SNAP_HDR + conf_len) != 0) {
        rc = SYSFAIL(l, l->errmsg, "read", name);
        goto err_free_bufs;
    }
    uint32_t crc = crc32c(0, h + 12, SNAP_HDR - 12);
    crc = crc32c(crc, conf, conf_len);
    crc = crc32c(crc, data, data_len);
    if (crc != get32(h + 8))
        goto err_free_bufs;
    s = raft_calloc(1, sizeof *s);
    if (s == NULL || (s->bufs = raft_malloc(sizeof *s->bufs)) == NULL) {
        raft_free(s);
        rc = RAFT_NOMEM;
        goto err_free_bufs;
    }
    if (conf_decode(conf, conf_len, &s->configuration) != 0) {
        raft_free(s->bufs);
        raft_free(s);
        goto err_free_bufs;
    }
    s->index = index;
    s->term = get64(h + 24);
    s->configuration_index = get64(h + 32);
    s->bufs[0].base = data;
    s->bufs[0].len = data_len;
    s->n_bufs = 1;
    *epoch = get64(h + 40);
    *flags = get32(h + 12);
    cairn_free(conf);
    close(fd);
    *out = s;
    return 0;
err_free_bufs:
    raft_free(data);
    cairn_free(conf);
err_close_fd:
    close(fd);
    if (rc == RAFT_CORRUPT)
        fail(l, l->errmsg, rc, "snapshot %s does not check", name);
    return rc;
}

int repl_log_snapshot_get(struct repl_log *l, struct raft_snapshot **out)
{
    uint64_t epoch;
    unsigned flags;
    *out = NULL;
    if (l->n_snaps == 0)
        return 0;
    return snap_read(l, l->snaps[l->n_snaps - 1], out, &epoch, &flags);
}

/* ---- segments: open ---------------------------------------------------- */

static void seg_push(struct repl_log *l, struct seg s)
{
    if (l->n_segs == l->cap_segs) {
        l->cap_segs = l->cap_segs ? 2 * l->cap_segs : 16;
        l->segs = cairn_realloc(l->segs, l->cap_segs * sizeof *l->segs);
    }
    l->segs[l->n_segs++] = s;
}

static void seg_remove_at(struct repl_log *l, unsigned i)
{
    if (l->segs[i].batch != NULL)
        raft_free(l->segs[i].batch);
    memmove(&l->segs[i], &l->segs[i + 1],
            (l->n_segs - i - 1) * sizeof *l->segs);
    l->n_segs--;
}

/* Unlinks segment @i and forgets it; @sync: sync the directory after it. */
static int seg_delete(struct repl_log *l, unsigned i, int sync)
{
    char name[64];
    if (i == l->n_segs - 1 && l->cur_fd >= 0) {
        close(l->cur_fd);
        l->cur_fd = -1;
        l->cur_dirty = 0;
    }
    seg_name(name, sizeof name, l->segs[i].first);
    if (unlinkat(l->dirfd, name, 0) != 0 && errno != ENOENT)
        return SYSFAIL(l, l->errmsg, "unlink", name);
    seg_remove_at(l, i);
    l->stats.segs_deleted++;
    return sync ? sync_dir(l) : 0;
}

/* 1 if a valid record starts at @off of @p (@size bytes): its crc matches,
 * it fits, and its index is @want (or, with @want 0, plausible: between
 * @min and @min + 2^32). *next: the offset after it. */
static int rec_valid(const uint8_t *p, size_t size, size_t off, raft_index want,
                     raft_index min, size_t *next)
{
    if (size - off < REC_HDR)
        return 0;
    size_t len = get32(p + off + 4);
    raft_index idx = get64(p + off + 8);
    if (want ? idx != want : idx < min || idx - min > UINT32_MAX)
        return 0;
    if (size - off - REC_HDR < PAD8(len))
        return 0;
    uint32_t crc = crc32c(0, p + off + 4, REC_HDR - 4);
    if (crc32c(crc, p + off + REC_HDR, len) != get32(p + off))
        return 0;
    *next = off + REC_HDR + PAD8(len);
    return 1;
}

/* A bad record at @off in the last segment is a torn tail only if nothing
 * valid follows it: a write that was cut short, or whose pages were lost,
 * was never acknowledged, and nothing after it can have been either. A
 * valid record after it means a record in the middle went bad. */
static int valid_after(const uint8_t *p, size_t size, size_t off,
                       raft_index min)
{
    size_t next;
    for (size_t o = off + 8; o + REC_HDR <= size; o += 8)
        if (rec_valid(p, size, o, 0, min, &next))
            return 1;
    return 0;
}

/* Reads segment file @name whole; fills @s from its header. *bad: the
 * header does not check (a torn new segment, or damage). */
static int seg_read(struct repl_log *l, const char *name, struct seg *s,
                    size_t *size, int *bad)
{
    struct stat st;
    int rc = 0;
    int fd = openat(l->dirfd, name, O_RDONLY | O_CLOEXEC);
    *bad = 0;
    *size = 0;
    if (fd < 0)
        return SYSFAIL(l, l->errmsg, "open", name);
    if (fstat(fd, &st) != 0) {
        rc = SYSFAIL(l, l->errmsg, "stat", name);
        goto out_close;
    }
    *size = (size_t)st.st_size;
    s->batch = raft_malloc(*size ? *size : 1);
    if (s->batch == NULL) {
        rc = RAFT_NOMEM;
        goto out_close;
    }
    if (read_all(fd, s->batch, *size, 0) != 0) {
        rc = SYSFAIL(l, l->errmsg, "read", name);
        goto out_close;
    }
    const uint8_t *h = s->batch;
    *bad = *size < SEG_HDR || memcmp(h, SEG_MAGIC, 8) != 0 ||
           get32(h + 24) != crc32c(0, h, 24) || get64(h + 8) != s->first;
    if (!*bad)
        s->epoch = get64(h + 16);
out_close:
    close(fd);
    return rc;
}

/* Cuts segment @name at @off durably (a torn tail found on open). */
static int seg_cut(struct repl_log *l, const char *name, uint64_t off)
{
    int fd = openat(l->dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return SYSFAIL(l, l->errmsg, "open", name);
    int rc = 0;
    if (ftruncate(fd, (off_t)off) != 0 || fdatasync(fd) != 0)
        rc = SYSFAIL(l, l->errmsg, "truncate", name);
    close(fd);
    return rc;
}

/* Walks the records of segment @i (read by seg_read) and sets its last
 * index and end, cutting a torn tail when it is the last segment. */
static int seg_parse(struct repl_log *l, unsigned i, size_t size)
{
    struct seg *s = &l->segs[i];
    const uint8_t *p = s->batch;
    int last = i == l->n_segs - 1;
    raft_index idx = s->first;
    size_t off = SEG_HDR, next;
    char name[64];

    seg_name(name, sizeof name, s->first);
    while (off < size) {
        if (rec_valid(p, size, off, idx, 0, &next)) {
            l->last_term = get64(p + off + 16);
            off = next;
            idx++;
            continue;
        }
        if (!last || valid_after(p, size, off, idx))
            return fail(l, l->errmsg, RAFT_CORRUPT,
                        "segment %s: bad record at offset %zu (index %llu)",
                        name, off, idx);
        log_warn("repl: log: torn tail cut segment=%s offset=%zu bytes=%zu "
                 "last_index=%llu", name, off, size - off, idx - 1);
        int rc = seg_cut(l, name, off);
        if (rc != 0)
            return rc;
        break;
    }
    s->last = idx - 1;
    s->end = off;
    return 0;
}

static int cmp_seg(const void *a, const void *b)
{
    raft_index x = ((const struct seg *)a)->first;
    raft_index y = ((const struct seg *)b)->first;
    return x < y ? -1 : x > y;
}

static int cmp_index(const void *a, const void *b)
{
    raft_index x = *(const raft_index *)a, y = *(const raft_index *)b;
    return x < y ? -1 : x > y;
}

/* Lists seg-* and snap-* files; removes temporary files. */
static int scan_dir(struct repl_log *l)
{
    int fd = openat(l->dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return SYSFAIL(l, l->errmsg, "open", l->dir);
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        close(fd);
        return SYSFAIL(l, l->errmsg, "opendir", l->dir);
    }
    struct dirent *e;
    unsigned cap_snaps = 0;
    while ((e = readdir(d)) != NULL) {
        unsigned long long v;
        char tail;
        if (sscanf(e->d_name, "seg-%20llu%c", &v, &tail) == 1 && v > 0) {
            seg_push(l, (struct seg){.first = v});
        } else if (sscanf(e->d_name, "snap-%20llu%c", &v, &tail) == 1) {
            if (l->n_snaps == cap_snaps) {
                cap_snaps = cap_snaps ? 2 * cap_snaps : 4;
                l->snaps = cairn_realloc(l->snaps, cap_snaps * sizeof *l->snaps);
            }
            l->snaps[l->n_snaps++] = v;
        } else if (strcmp(e->d_name, "snap.tmp") == 0) {
            /* An interrupted snapshot_put: never renamed, never used. */
            unlinkat(l->dirfd, e->d_name, 0);
        }
    }
    closedir(d);
    if (l->n_segs > 1) /* qsort's base must not be NULL, even for 0 */
        qsort(l->segs, l->n_segs, sizeof *l->segs, cmp_seg);
    if (l->n_snaps > 1)
        qsort(l->snaps, l->n_snaps, sizeof *l->snaps, cmp_index);
    return 0;
}

/* The newest snapshot that checks; an older one is used (with a warning)
 * only if the newest is damaged, and load_segs then checks that the log
 * still joins it. */
static int load_snapshot(struct repl_log *l, uint64_t *min_epoch)
{
    for (unsigned i = l->n_snaps; i-- > 0;) {
        uint64_t epoch;
        unsigned flags;
        int rc = snap_read(l, l->snaps[i], &l->loaded, &epoch, &flags);
        if (rc == 0) {
            *min_epoch = epoch;
            if (i != l->n_snaps - 1)
                log_warn("repl: log: newest snapshot unusable, using "
                         "index=%llu", l->snaps[i]);
            return 0;
        }
        if (rc != RAFT_CORRUPT)
            return rc;
    }
    if (l->n_snaps > 0)
        return fail(l, l->errmsg, RAFT_CORRUPT, "no snapshot file checks");
    return 0;
}

static int load_segs(struct repl_log *l, uint64_t min_epoch)
{
    char name[64];
    size_t size = 0;
    int rc, bad = 0;

    /* Headers first: stale segments (older epoch) go before anything is
     * judged "last". */
    for (unsigned i = 0; i < l->n_segs;) {
        struct seg *s = &l->segs[i];
        seg_name(name, sizeof name, s->first);
        if ((rc = seg_read(l, name, s, &size, &bad)) != 0)
            return rc;
        if (bad) {
            int torn = i == l->n_segs - 1 &&
                       !valid_after(s->batch, size, SEG_HDR - 8, s->first);
            if (!torn)
                return fail(l, l->errmsg, RAFT_CORRUPT,
                            "segment %s: bad header", name);
            log_warn("repl: log: torn new segment removed segment=%s", name);
        } else if (s->epoch >= min_epoch) {
            s->end = size; /* parsed below */
            i++;
            continue;
        } else {
            log_info("repl: log: stale segment removed segment=%s epoch=%"
                     PRIu64, name, s->epoch);
        }
        if ((rc = seg_delete(l, i, 1)) != 0)
            return rc;
    }
    for (unsigned i = 0; i < l->n_segs; i++) {
        if ((rc = seg_parse(l, i, l->segs[i].end)) != 0)
            return rc;
        if (i > 0 && l->segs[i].first != l->segs[i - 1].last + 1)
            return fail(l, l->errmsg, RAFT_CORRUPT,
                        "gap in the log: segment %llu after index %llu",
                        l->segs[i].first, l->segs[i - 1].last);
        if (l->segs[i].epoch > l->epoch)
            l->epoch = l->segs[i].epoch;
    }
    /* A last segment with no record was created just before a crash. */
    if (l->n_segs > 0 &&
        l->segs[l->n_segs - 1].last < l->segs[l->n_segs - 1].first &&
        (rc = seg_delete(l, l->n_segs - 1, 1)) != 0)
        return rc;
    return 0;
}

/* How the entries join the snapshot; sets next_index. */
static int join_snapshot(struct repl_log *l)
{
    struct raft_snapshot *s = l->loaded;
    raft_index first = l->n_segs ? l->segs[0].first : 0;
    raft_index last = l->n_segs ? l->segs[l->n_segs - 1].last : 0;
    int rc;

    if (s != NULL && l->n_segs > 0 && last < s->index) {
        /* Every entry is covered by the snapshot (a replacement that was
         * interrupted): appends continue at snapshot index + 1. */
        while (l->n_segs > 0)
            if ((rc = seg_delete(l, l->n_segs - 1, 1)) != 0)
                return rc;
    } else if (s != NULL && l->n_segs > 0 && first > s->index + 1) {
        return fail(l, l->errmsg, RAFT_CORRUPT,
                    "log starts at %llu, after snapshot %llu + 1", first,
                    s->index);
    } else if (s == NULL && l->n_segs > 0 && first != 1) {
        return fail(l, l->errmsg, RAFT_CORRUPT,
                    "log starts at %llu with no snapshot", first);
    }
    if (l->n_segs > 0)
        l->next_index = l->segs[l->n_segs - 1].last + 1;
    else
        l->next_index = s != NULL ? s->index + 1 : 1;
    return 0;
}

int repl_log_open(const struct repl_log_opts *o, struct repl_log **out,
                  char *errmsg)
{
    struct repl_log *l = cairn_calloc(1, sizeof *l);
    uint64_t min_epoch = 0;
    int rc;

    l->dir = cairn_strdup(o->dir);
    l->seg_max = o->seg_max ? o->seg_max : DEFAULT_SEG_MAX;
    l->keep_from = o->keep_from;
    l->keep_ud = o->keep_ud;
    l->meta_fd[0] = l->meta_fd[1] = l->cur_fd = -1;
    if (mkdir_p(o->dir) != 0) {
        rc = SYSFAIL(l, l->errmsg, "mkdir", o->dir);
        goto err_close_log;
    }
    l->dirfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (l->dirfd < 0) {
        rc = SYSFAIL(l, l->errmsg, "open", o->dir);
        goto err_close_log;
    }
    if ((rc = meta_load(l)) != 0 || (rc = scan_dir(l)) != 0 ||
        (rc = load_snapshot(l, &min_epoch)) != 0)
        goto err_close_log;
    l->epoch = min_epoch;
    if ((rc = load_segs(l, min_epoch)) != 0 || (rc = join_snapshot(l)) != 0)
        goto err_close_log;
    *out = l;
    return 0;
err_close_log:
    if (errmsg != NULL)
        snprintf(errmsg, RAFT_ERRMSG_BUF_SIZE, "%s", l->errmsg);
    repl_log_close(l);
    return rc;
}

void repl_log_close(struct repl_log *l)
{
    if (l == NULL)
        return;
    for (unsigned i = 0; i < l->n_segs; i++)
        raft_free(l->segs[i].batch);
    for (int i = 0; i < 2; i++)
        if (l->meta_fd[i] >= 0)
            close(l->meta_fd[i]);
    if (l->cur_fd >= 0)
        close(l->cur_fd);
    if (l->dirfd > 0)
        close(l->dirfd);
    repl_log_snapshot_free(l->loaded);
    cairn_free(l->segs);
    cairn_free(l->snaps);
    cairn_free(l->dir);
    cairn_free(l);
}

/* Reads a segment written since open (its records were checked when they
 * were written, and crc'd again here). */
static int seg_reread(struct repl_log *l, struct seg *s)
{
    char name[64];
    size_t next, off = SEG_HDR;
    int rc = 0, fd;

    seg_name(name, sizeof name, s->first);
    if ((s->batch = raft_malloc(s->end)) == NULL)
        return RAFT_NOMEM;
    fd = openat(l->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || read_all(fd, s->batch, s->end, 0) != 0)
        rc = SYSFAIL(l, l->errmsg, "read", name);
    if (fd >= 0)
        close(fd);
    for (raft_index i = s->first; rc == 0 && i <= s->last; i++, off = next)
        if (!rec_valid(s->batch, s->end, off, i, 0, &next))
            rc = fail(l, l->errmsg, RAFT_CORRUPT,
                      "segment %s: record %llu changed since written", name, i);
    if (rc != 0) {
        raft_free(s->batch);
        s->batch = NULL;
    }
    return rc;
}

/* Frees the first @k loaded entries' batches and the array. */
static void free_loaded(struct raft_entry *e, size_t k)
{
    void *batch = NULL;
    for (size_t i = 0; i < k; i++)
        if (e[i].batch != batch)
            raft_free(batch = e[i].batch);
    raft_free(e);
}

int repl_log_load(struct repl_log *l, raft_term *term, raft_id *vote,
                  struct raft_snapshot **snapshot, raft_index *start_index,
                  struct raft_entry **entries, size_t *n_entries)
{
    size_t n = 0, k = 0;
    struct raft_entry *e = NULL;

    if (l->load_done)
        return fail(l, l->errmsg, RAFT_INVALID, "log loaded twice");
    for (unsigned i = 0; i < l->n_segs; i++)
        n += l->segs[i].last - l->segs[i].first + 1;
    if (n > 0 && (e = raft_malloc(n * sizeof *e)) == NULL)
        return RAFT_NOMEM;
    /* Each segment's file image is the batch its entries point into. */
    for (unsigned i = 0; i < l->n_segs; i++) {
        struct seg *s = &l->segs[i];
        int rc = s->batch == NULL ? seg_reread(l, s) : 0;
        if (rc != 0) {
            free_loaded(e, k);
            return rc;
        }
        uint8_t *p = s->batch;
        size_t off = SEG_HDR;
        for (raft_index idx = s->first; idx <= s->last; idx++, k++) {
            size_t len = get32(p + off + 4);
            e[k].term = get64(p + off + 16);
            e[k].type = (unsigned short)get32(p + off + 24);
            e[k].buf.base = p + off + REC_HDR;
            e[k].buf.len = len;
            e[k].batch = p;
            off += REC_HDR + PAD8(len);
        }
        if (s->last < s->first)
            raft_free(s->batch);
        s->batch = NULL;
    }
    *term = l->term;
    *vote = l->vote;
    *snapshot = l->loaded;
    l->loaded = NULL;
    if (l->n_segs > 0)
        *start_index = l->segs[0].first;
    else
        *start_index = *snapshot != NULL ? (*snapshot)->index + 1 : 1;
    *entries = e;
    *n_entries = n;
    l->load_done = 1;
    return 0;
}

raft_index repl_log_next_index(const struct repl_log *l)
{
    return l->next_index;
}

int repl_log_empty(const struct repl_log *l)
{
    return l->term == 0 && l->vote == 0 && l->n_segs == 0 && l->n_snaps == 0;
}

/* ---- segments: writing ------------------------------------------------- */

/* Writes make the image open read stale; load reads the file again. */
static void seg_drop_image(struct repl_log *l)
{
    if (l->n_segs > 0 && l->segs[l->n_segs - 1].batch != NULL) {
        raft_free(l->segs[l->n_segs - 1].batch);
        l->segs[l->n_segs - 1].batch = NULL;
    }
}

/* Makes segs[n_segs - 1] writable with room, starting a new one past
 * seg_max. The previous segment is synced (and the directory, if it was
 * new) before the next one exists, so only the last segment can have a
 * torn tail. */
static int seg_ready(struct repl_log *l)
{
    char name[64];
    struct seg *s = l->n_segs ? &l->segs[l->n_segs - 1] : NULL;
    int rc;

    if (s != NULL && s->end < l->seg_max) {
        if (l->cur_fd >= 0)
            return 0;
        seg_name(name, sizeof name, s->first);
        l->cur_fd = openat(l->dirfd, name, O_WRONLY | O_CLOEXEC);
        return l->cur_fd < 0 ? SYSFAIL(l, l->errmsg, "open", name) : 0;
    }
    if (l->cur_fd >= 0) {
        if (l->cur_dirty && fdatasync(l->cur_fd) != 0)
            return SYSFAIL(l, l->errmsg, "fdatasync", "segment");
        close(l->cur_fd);
        l->cur_fd = -1;
        l->cur_dirty = 0;
    }
    if (l->dir_dirty && (rc = sync_dir(l)) != 0)
        return rc;

    uint8_t h[SEG_HDR] = {0};
    memcpy(h, SEG_MAGIC, 8);
    put64(h + 8, l->next_index);
    put64(h + 16, l->epoch);
    put32(h + 24, crc32c(0, h, 24));
    seg_name(name, sizeof name, l->next_index);
    l->cur_fd = openat(l->dirfd, name, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                       0600);
    if (l->cur_fd < 0)
        return SYSFAIL(l, l->errmsg, "create", name);
    struct iovec iov = {h, sizeof h};
    if (write_all(l->cur_fd, &iov, 1, 0) != 0) {
        rc = SYSFAIL(l, l->errmsg, "write", name);
        close(l->cur_fd);
        l->cur_fd = -1;
        unlinkat(l->dirfd, name, 0);
        return rc;
    }
    seg_push(l, (struct seg){.first = l->next_index,
                             .last = l->next_index - 1,
                             .epoch = l->epoch,
                             .end = SEG_HDR});
    l->cur_dirty = l->dir_dirty = 1;
    return 0;
}

static void rec_header(uint8_t *h, raft_index index, const struct raft_entry *e)
{
    put32(h + 4, (uint32_t)e->buf.len);
    put64(h + 8, index);
    put64(h + 16, e->term);
    put32(h + 24, e->type);
    put32(h + 28, 0);
    uint32_t crc = crc32c(0, h + 4, REC_HDR - 4);
    put32(h, crc32c(crc, e->buf.base, e->buf.len));
}

int repl_log_append(struct repl_log *l, raft_index index,
                    const struct raft_entry *entries, unsigned n)
{
    static const uint8_t zeros[8];
    struct iovec iov[IOV_CHUNK];
    uint8_t (*hdr)[REC_HDR];
    unsigned i = 0;
    int rc = 0;

    if (index != l->next_index)
        return fail(l, l->errmsg, RAFT_IOERR,
                    "append at %llu, expected %llu", index, l->next_index);
    hdr = cairn_malloc((n ? n : 1) * sizeof *hdr);
    seg_drop_image(l);
    while (i < n) {
        if ((rc = seg_ready(l)) != 0)
            break;
        struct seg *s = &l->segs[l->n_segs - 1];
        unsigned k = 0, from = i;
        uint64_t bytes = 0;
        /* One pwritev per chunk; a segment takes at least one record. */
        while (i < n && k + 3 <= IOV_CHUNK) {
            size_t len = entries[i].buf.len;
            if (len > UINT32_MAX) {
                rc = fail(l, l->errmsg, RAFT_TOOBIG, "entry of %zu bytes", len);
                goto out_free_hdr;
            }
            if (bytes > 0 && s->end + bytes + REC_HDR + len > l->seg_max)
                break;
            rec_header(hdr[i], l->next_index + (i - from), &entries[i]);
            iov[k++] = (struct iovec){hdr[i], REC_HDR};
            if (len > 0)
                iov[k++] = (struct iovec){entries[i].buf.base, len};
            if (PAD8(len) != len)
                iov[k++] = (struct iovec){(void *)zeros, PAD8(len) - len};
            bytes += REC_HDR + PAD8(len);
            i++;
        }
        if (write_all(l->cur_fd, iov, (int)k, s->end) != 0) {
            rc = SYSFAIL(l, l->errmsg, "write", "segment");
            /* Best effort: leave no partial record behind. */
            if (ftruncate(l->cur_fd, (off_t)s->end) != 0)
                log_warn("repl: log: cannot cut a failed write: %s",
                         strerror(errno));
            break;
        }
        s->end += bytes;
        s->last += i - from;
        l->next_index += i - from;
        l->last_term = entries[i - 1].term;
        l->cur_dirty = 1;
        l->stats.entries += i - from;
    }
    l->stats.appends++;
out_free_hdr:
    cairn_free(hdr);
    return rc;
}

int repl_log_sync(struct repl_log *l)
{
    if (l->cur_fd >= 0 && l->cur_dirty) {
        if (fdatasync(l->cur_fd) != 0)
            return SYSFAIL(l, l->errmsg, "fdatasync", "segment");
        l->cur_dirty = 0;
        l->stats.syncs++;
    }
    return l->dir_dirty ? sync_dir(l) : 0;
}

/* The offset of record @index in segment @s (it holds @index). */
static int seg_offset(struct repl_log *l, const struct seg *s, raft_index index,
                      uint64_t *off)
{
    char name[64];
    uint8_t *p = cairn_malloc(s->end);
    int rc = 0, fd;

    seg_name(name, sizeof name, s->first);
    fd = openat(l->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = SYSFAIL(l, l->errmsg, "open", name);
        goto out_free;
    }
    if (read_all(fd, p, s->end, 0) != 0) {
        rc = SYSFAIL(l, l->errmsg, "read", name);
        goto out_close;
    }
    *off = SEG_HDR;
    for (raft_index i = s->first; i < index; i++)
        *off += REC_HDR + PAD8((size_t)get32(p + *off + 4));
out_close:
    close(fd);
out_free:
    cairn_free(p);
    return rc;
}

int repl_log_truncate(struct repl_log *l, raft_index index)
{
    uint64_t off = 0;
    int rc;

    if (index >= l->next_index)
        return 0;
    /* Whole segments first, the last one first, each unlink synced: a crash
     * leaves a shorter log, never one with a hole. */
    while (l->n_segs > 0 && l->segs[l->n_segs - 1].first >= index)
        if ((rc = seg_delete(l, l->n_segs - 1, 1)) != 0)
            return rc;
    if (l->n_segs > 0 && l->segs[l->n_segs - 1].last >= index) {
        struct seg *s = &l->segs[l->n_segs - 1];
        seg_drop_image(l);
        if ((rc = seg_offset(l, s, index, &off)) != 0)
            return rc;
        if (l->cur_fd < 0) {
            /* Not seg_ready: a full segment would make it start a new one. */
            char name[64];
            seg_name(name, sizeof name, s->first);
            l->cur_fd = openat(l->dirfd, name, O_WRONLY | O_CLOEXEC);
            if (l->cur_fd < 0)
                return SYSFAIL(l, l->errmsg, "open", name);
        }
        if (ftruncate(l->cur_fd, (off_t)off) != 0 || fdatasync(l->cur_fd) != 0)
            return SYSFAIL(l, l->errmsg, "truncate", "segment");
        s->end = off;
        s->last = index - 1;
        l->cur_dirty = 0;
    }
    l->next_index = index;
    l->stats.truncates++;
    return 0;
}

/* ---- snapshots: writing ------------------------------------------------ */

static int snap_write(struct repl_log *l, const struct raft_snapshot *s,
                      uint64_t epoch, unsigned flags)
{
    char name[64];
    uint8_t h[SNAP_HDR] = {0};
    size_t clen = conf_size(&s->configuration);
    uint8_t *conf = cairn_malloc(clen);
    struct iovec *iov = cairn_malloc((2 + s->n_bufs) * sizeof *iov);
    uint64_t dlen = 0;
    int rc = 0, fd;

    conf_encode(&s->configuration, conf);
    for (unsigned i = 0; i < s->n_bufs; i++)
        dlen += s->bufs[i].len;
    memcpy(h, SNAP_MAGIC, 8);
    put32(h + 12, flags);
    put64(h + 16, s->index);
    put64(h + 24, s->term);
    put64(h + 32, s->configuration_index);
    put64(h + 40, epoch);
    put64(h + 48, clen);
    put64(h + 56, dlen);
    uint32_t crc = crc32c(crc32c(0, h + 12, SNAP_HDR - 12), conf, clen);
    iov[0] = (struct iovec){h, SNAP_HDR};
    iov[1] = (struct iovec){conf, clen};
    for (unsigned i = 0; i < s->n_bufs; i++) {
        crc = crc32c(crc, s->bufs[i].base, s->bufs[i].len);
        iov[2 + i] = (struct iovec){s->bufs[i].base, s->bufs[i].len};
    }
    put32(h + 8, crc);

    fd = openat(l->dirfd, "snap.tmp", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                0600);
    if (fd < 0) {
        rc = SYSFAIL(l, l->errmsg, "create", "snap.tmp");
        goto out_free;
    }
    /* pwritev takes at most IOV_MAX buffers. */
    uint64_t off = 0;
    for (unsigned i = 0; i < 2 + s->n_bufs && rc == 0; i += IOV_MAX) {
        unsigned cnt = 2 + s->n_bufs - i;
        cnt = cnt > IOV_MAX ? IOV_MAX : cnt;
        uint64_t chunk = 0;
        for (unsigned j = 0; j < cnt; j++)
            chunk += iov[i + j].iov_len;
        if (write_all(fd, iov + i, (int)cnt, off) != 0)
            rc = SYSFAIL(l, l->errmsg, "write", "snap.tmp");
        off += chunk;
    }
    if (rc == 0 && fdatasync(fd) != 0)
        rc = SYSFAIL(l, l->errmsg, "fdatasync", "snap.tmp");
    close(fd);
    snap_name(name, sizeof name, s->index);
    if (rc == 0 && renameat(l->dirfd, "snap.tmp", l->dirfd, name) != 0)
        rc = SYSFAIL(l, l->errmsg, "rename", name);
    if (rc != 0)
        unlinkat(l->dirfd, "snap.tmp", 0);
    else
        rc = sync_dir(l);
out_free:
    cairn_free(iov);
    cairn_free(conf);
    return rc;
}

/* Records snapshot @index in the list and removes the oldest files beyond
 * SNAPS_KEPT. */
static int snaps_prune(struct repl_log *l, raft_index index)
{
    char name[64];
    int removed = 0;

    if (l->n_snaps == 0 || l->snaps[l->n_snaps - 1] != index) {
        l->snaps = cairn_realloc(l->snaps, (l->n_snaps + 1) * sizeof *l->snaps);
        l->snaps[l->n_snaps++] = index;
        qsort(l->snaps, l->n_snaps, sizeof *l->snaps, cmp_index);
    }
    while (l->n_snaps > SNAPS_KEPT) {
        snap_name(name, sizeof name, l->snaps[0]);
        if (unlinkat(l->dirfd, name, 0) != 0 && errno != ENOENT)
            return SYSFAIL(l, l->errmsg, "unlink", name);
        memmove(l->snaps, l->snaps + 1, --l->n_snaps * sizeof *l->snaps);
        removed = 1;
    }
    return removed ? sync_dir(l) : 0;
}

int repl_log_snapshot_put(struct repl_log *l, unsigned trailing,
                          const struct raft_snapshot *s)
{
    int replace = trailing == 0;
    uint64_t epoch = l->epoch + (replace ? 1 : 0);
    int rc;

    /* The new epoch is durable in the snapshot before any segment goes:
     * segments left by a crash in the middle are recognised as stale. */
    if ((rc = snap_write(l, s, epoch, replace ? SNAP_REPLACES_LOG : 0)) != 0)
        return rc;
    l->epoch = epoch;
    l->stats.snapshot_puts++;
    if (replace) {
        while (l->n_segs > 0)
            if ((rc = seg_delete(l, l->n_segs - 1, 0)) != 0)
                return rc;
        if ((rc = sync_dir(l)) != 0)
            return rc;
        l->next_index = s->index + 1;
        l->stats.log_resets++;
    } else {
        raft_index limit = s->index > trailing ? s->index - trailing : 0;
        if (l->keep_from != NULL) {
            uint64_t floor = l->keep_from(l->keep_ud);
            if (floor <= limit)
                limit = floor > 0 ? floor - 1 : 0;
        }
        /* Oldest first, each unlink synced: the log stays contiguous.
         * The last segment is the one being written: never removed here. */
        while (l->n_segs > 1 && l->segs[0].last <= limit)
            if ((rc = seg_delete(l, 0, 1)) != 0)
                return rc;
    }
    return snaps_prune(l, s->index);
}

/* ---- bootstrap, recover, stats ----------------------------------------- */

static int append_conf(struct repl_log *l, raft_term term,
                       const struct raft_configuration *conf)
{
    struct raft_entry e = {.term = term, .type = RAFT_CHANGE};
    int rc = raft_configuration_encode(conf, &e.buf);
    if (rc != 0)
        return fail(l, l->errmsg, rc, "cannot encode the configuration");
    rc = repl_log_append(l, l->next_index, &e, 1);
    if (rc == 0)
        rc = repl_log_sync(l);
    raft_free(e.buf.base);
    return rc;
}

int repl_log_bootstrap(struct repl_log *l, const struct raft_configuration *conf)
{
    if (!repl_log_empty(l))
        return fail(l, l->errmsg, RAFT_CANTBOOTSTRAP,
                    "bootstrap: the log already has state");
    int rc = append_conf(l, 1, conf);
    return rc != 0 ? rc : repl_log_set_term(l, 1);
}

int repl_log_recover(struct repl_log *l, const struct raft_configuration *conf)
{
    raft_term term = l->term > l->last_term ? l->term : l->last_term;
    return append_conf(l, term > 0 ? term : 1, conf);
}

void repl_log_get_stats(const struct repl_log *l, struct repl_log_stats *out)
{
    *out = l->stats;
}

const char *repl_log_errmsg(const struct repl_log *l)
{
    return l->errmsg;
}

const char *repl_log_meta_errmsg(const struct repl_log *l)
{
    return l->meta_errmsg;
}
