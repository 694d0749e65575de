/* `cairn snapshot restore|status`: see cli.h. The texts are etcdctl
 * 3.4's (clientv3/snapshot/v3_snapshot.go, etcdctl/ctlv3/command). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"
#include "crypt/crypt.h"
#include "core/mem.h"
#include "mvcc/snapshot.h"
#include "snap/bbolt.h"
#include "snap/cli.h"

#define EXIT_ERR 1
#define EXIT_BADFEATURE 4
#define EXIT_BADARGS 128 /* etcdctl's ExitBadArgs */
#define SHA_LEN 32
#define RESTORE_MAP_SIZE ((size_t)64 << 30) /* as the server maps it */
#define MAX_URLS 16

static int fail(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("Error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    return code;
}

/* Go's text for an errno: glibc's, starting lower-case. */
static const char *go_strerror(int e)
{
    static char buf[128];
    snprintf(buf, sizeof buf, "%s", strerror(e));
    if (buf[0] >= 'A' && buf[0] <= 'Z')
        buf[0] = (char)(buf[0] + 32);
    return buf;
}

/* --name value or --name=value; returns the value and advances *@i, or
 * NULL when argv[*i] is not flag @name. */
static const char *flag_val(int argc, char **argv, int *i, const char *name,
                            int *missing)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (a[0] == '-' && a[1] == '-')
        a += 2;
    else if (a[0] == '-')
        a += 1;
    else
        return NULL;
    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=')
        return a + n + 1;
    if (a[n] != 0)
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

/* ---- status ---- */

static uint32_t crc32c_table[256];

static void crc32c_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        crc32c_table[i] = c;
    }
}

static uint32_t crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    crc = ~crc;
    while (n--)
        crc = crc32c_table[(crc ^ *p++) & 0xff] ^ (crc >> 8);
    return ~crc;
}

struct status {
    uint32_t hash;
    int64_t rev, keys;
    uint64_t size;
    int bad_rev;
};

/* etcd's Status: crc32c over every bucket name, key and value, in
 * order; the revision of the last key of "key". */
static int status_fn(void *ud, struct snap_bytes b, struct snap_bytes k,
                     struct snap_bytes v, int flags)
{
    struct status *s = ud;
    if (flags & SNAP_BBOLT_BEGIN) {
        s->hash = crc32c(s->hash, b.p, b.n);
        return 0;
    }
    s->hash = crc32c(s->hash, k.p, k.n);
    s->hash = crc32c(s->hash, v.p, v.n);
    if (b.n == 3 && memcmp(b.p, "key", 3) == 0) {
        if (k.n < 8)
            return -EBADMSG;
        s->rev = (int64_t)((uint64_t)k.p[0] << 56 | (uint64_t)k.p[1] << 48 |
                           (uint64_t)k.p[2] << 40 | (uint64_t)k.p[3] << 32 |
                           (uint64_t)k.p[4] << 24 | (uint64_t)k.p[5] << 16 |
                           (uint64_t)k.p[6] << 8 | (uint64_t)k.p[7]);
    }
    s->keys++;
    return 0;
}

/* go-humanize's Bytes: SI units, one decimal below 10. */
static void humanize(uint64_t n, char *out, size_t len)
{
    static const char *sizes[] = {"B", "kB", "MB", "GB", "TB", "PB", "EB"};
    if (n < 10) {
        snprintf(out, len, "%" PRIu64 " B", n);
        return;
    }
    /* floor(log1000(n)) without libm */
    int e = 0;
    double div = 1; /* 1000^e: exact in a double, one division as Go */
    for (uint64_t m = n; m >= 1000; m /= 1000) {
        e++;
        div *= 1000;
    }
    double val = (double)(uint64_t)((double)n / div * 10 + 0.5) / 10;
    snprintf(out, len, val < 10 ? "%.1f %s" : "%.0f %s", val, sizes[e]);
}

/* tablewriter as etcdctl sets it up: centred upper-case header, cells
 * aligned right. */
static void print_table(const char *hdr[4], char cells[4][64])
{
    size_t w[4];
    for (int i = 0; i < 4; i++) {
        size_t a = strlen(hdr[i]), b = strlen(cells[i]);
        w[i] = a > b ? a : b;
    }
    for (int row = 0; row < 5; row++) {
        if (row == 0 || row == 2 || row == 4) {
            for (int i = 0; i < 4; i++) {
                putchar('+');
                for (size_t j = 0; j < w[i] + 2; j++)
                    putchar('-');
            }
            puts("+");
            continue;
        }
        for (int i = 0; i < 4; i++) {
            if (row == 1) {
                size_t gap = w[i] - strlen(hdr[i]), left = gap / 2;
                printf("| %*s", (int)left, "");
                for (const char *c = hdr[i]; *c; c++)
                    putchar(*c >= 'a' && *c <= 'z' ? *c - 32 : *c);
                printf("%*s ", (int)(gap - left), "");
            } else {
                printf("| %*s ", (int)w[i], cells[i]);
            }
        }
        puts("|");
    }
}

static int cmd_status(int argc, char **argv)
{
    const char *file = NULL, *fmt = "simple";
    struct snap_bbolt_reader *r;
    struct status s = {0, 0, 0, 0, 0};
    struct stat st;
    int fd, rc, missing = 0;

    for (int i = 1; i < argc; i++) {
        const char *v;
        if ((v = flag_val(argc, argv, &i, "w", &missing)) != NULL ||
            (v = flag_val(argc, argv, &i, "write-out", &missing)) != NULL)
            fmt = v;
        else if (missing)
            return fail(EXIT_BADARGS, "flag needs an argument: %s", argv[i]);
        else if (argv[i][0] == '-')
            return fail(EXIT_BADARGS, "unknown flag: %s", argv[i]);
        else if (file == NULL)
            file = argv[i];
        else
            file = "";
    }
    if (file == NULL || file[0] == 0)
        return fail(EXIT_BADARGS, "snapshot status requires exactly one argument");
    if (strcmp(fmt, "simple") && strcmp(fmt, "table") && strcmp(fmt, "json") &&
        strcmp(fmt, "fields"))
        return fail(EXIT_BADFEATURE, "unsupported output format");
    if (stat(file, &st) != 0)
        return fail(EXIT_ERR, "stat %s: %s", file, go_strerror(errno));
    if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0)
        return fail(EXIT_ERR, "open %s: %s", file, go_strerror(errno));
    crc32c_init();
    /* bbolt opens the whole file; a sha256 trailer lies past its pages. */
    rc = snap_bbolt_reader_new(fd, (uint64_t)st.st_size, &r);
    if (rc == 0) {
        s.size = snap_bbolt_size(r);
        rc = snap_bbolt_walk(r, NULL, status_fn, &s);
        snap_bbolt_reader_free(r);
    }
    close(fd);
    if (rc == -EBADMSG)
        return fail(EXIT_ERR, "invalid database");
    if (rc != 0)
        return fail(EXIT_ERR, "%s", go_strerror(-rc));

    char cells[4][64];
    snprintf(cells[0], 64, "%" PRIx32, s.hash);
    snprintf(cells[1], 64, "%" PRId64, s.rev);
    snprintf(cells[2], 64, "%" PRId64, s.keys);
    humanize(s.size, cells[3], 64);
    if (strcmp(fmt, "json") == 0) {
        printf("{\"hash\":%" PRIu32 ",\"revision\":%" PRId64
               ",\"totalKey\":%" PRId64 ",\"totalSize\":%" PRIu64 "}\n",
               s.hash, s.rev, s.keys, s.size);
    } else if (strcmp(fmt, "fields") == 0) {
        printf("\"Hash\" : %" PRIu32 "\n\"Revision\" : %" PRId64
               "\n\"Keys\" : %" PRId64 "\n\"Size\" : %" PRIu64 "\n",
               s.hash, s.rev, s.keys, s.size);
    } else if (strcmp(fmt, "table") == 0) {
        const char *hdr[4] = {"hash", "revision", "total keys", "total size"};
        print_table(hdr, cells);
    } else {
        printf("%s, %s, %s, %s\n", cells[0], cells[1], cells[2], cells[3]);
    }
    return 0;
}

/* ---- restore ---- */

struct restore_opts {
    const char *file, *data_dir, *name, *cluster, *token, *peer_urls;
    int skip_hash;
    const char *key_file; /* cairn's encryption at rest for the new store */
};

/* Splits @s at commas into @out (pointers into a copy kept in *@buf). */
static int split(const char *s, char **buf, char **out, int max)
{
    int n = 0;
    *buf = cairn_strdup(s);
    for (char *save = NULL, *t = strtok_r(*buf, ",", &save); t && n < max;
         t = strtok_r(NULL, ",", &save))
        out[n++] = t;
    return n;
}

static int has_url(char **set, int n, const char *u)
{
    for (int i = 0; i < n; i++)
        if (strcmp(set[i], u) == 0)
            return 1;
    return 0;
}

/* etcd's ServerConfig.VerifyBootstrap, as far as one member goes: the
 * name is in --initial-cluster with exactly the advertised peer URLs. */
static int verify_bootstrap(const struct restore_opts *o)
{
    char *cbuf, *pbuf, *members[MAX_URLS], *mine[MAX_URLS], *adv[MAX_URLS];
    int nm = split(o->cluster, &cbuf, members, MAX_URLS), nmine = 0;
    int nadv = split(o->peer_urls, &pbuf, adv, MAX_URLS), rc = 0;
    size_t nl = strlen(o->name);

    for (int i = 0; i < nm; i++)
        if (strncmp(members[i], o->name, nl) == 0 && members[i][nl] == '=')
            mine[nmine++] = members[i] + nl + 1;
    if (nm == 0) {
        rc = fail(EXIT_ERR, "initial cluster unset and no discovery URL found");
    } else if (nmine == 0) {
        rc = fail(EXIT_ERR, "couldn't find local name \"%s\" in the initial "
                            "cluster configuration", o->name);
    } else {
        for (int i = 0; i < nmine && rc == 0; i++)
            if (!has_url(adv, nadv, mine[i]))
                rc = fail(EXIT_ERR, "--initial-cluster has %s=%s but missing "
                          "from --initial-advertise-peer-urls=%s",
                          o->name, mine[i], o->peer_urls);
        for (int i = 0; i < nadv && rc == 0; i++)
            if (!has_url(mine, nmine, adv[i]))
                rc = fail(EXIT_ERR, "--initial-advertise-peer-urls has %s but "
                          "missing from --initial-cluster=%s=%s",
                          adv[i], o->name, o->peer_urls);
    }
    cairn_free(cbuf);
    cairn_free(pbuf);
    return rc;
}

/* Go's %v of a []byte. */
static void print_bytes(FILE *f, const uint8_t *p, size_t n)
{
    fputc('[', f);
    for (size_t i = 0; i < n; i++)
        fprintf(f, i ? " %u" : "%u", p[i]);
    fputc(']', f);
}

/* etcd's saveDB check: a file of 512*k + 32 bytes ends with the sha256
 * of what precedes it. Sets *@len to the db's length. */
static int check_hash(int fd, uint64_t size, int skip, uint64_t *len)
{
    uint8_t want[SHA_LEN], got[EVP_MAX_MD_SIZE];
    unsigned int glen = 0;
    int has = size % 512 == SHA_LEN;

    *len = has ? size - SHA_LEN : size;
    if (!has && !skip)
        return fail(EXIT_ERR, "snapshot missing hash but --skip-hash-check=false");
    if (!has || skip)
        return 0;
    if (pread(fd, want, SHA_LEN, (off_t)*len) != SHA_LEN)
        return fail(EXIT_ERR, "read: %s", go_strerror(errno));
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = cairn_malloc(1 << 20);
    uint64_t off = 0;
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? 0 : -ENOMEM;
    while (rc == 0 && off < *len) {
        size_t n = *len - off < (1 << 20) ? (size_t)(*len - off) : (1 << 20);
        ssize_t k = pread(fd, buf, n, (off_t)off);
        if (k <= 0)
            rc = k < 0 ? -errno : -EIO;
        else {
            EVP_DigestUpdate(ctx, buf, (size_t)k);
            off += (uint64_t)k;
        }
    }
    if (rc == 0)
        EVP_DigestFinal_ex(ctx, got, &glen);
    EVP_MD_CTX_free(ctx);
    cairn_free(buf);
    if (rc != 0)
        return fail(EXIT_ERR, "read: %s", go_strerror(-rc));
    if (glen != SHA_LEN || memcmp(want, got, SHA_LEN) != 0) {
        fputs("Error: expected sha256 ", stderr);
        print_bytes(stderr, want, SHA_LEN);
        fputs(", got ", stderr);
        print_bytes(stderr, got, glen);
        fputc('\n', stderr);
        return EXIT_ERR;
    }
    return 0;
}

static int mkdir_parents(const char *dir)
{
    char *p = cairn_strdup(dir);
    int rc = 0;
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            rc = -errno;
        *s = '/';
    }
    cairn_free(p);
    return rc;
}

/* A failed restore leaves no half-built store behind. */
static void remove_store(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

static int parse_restore(int argc, char **argv, struct restore_opts *o)
{
    static const char *names[] = {"data-dir", "name", "initial-cluster",
                                  "initial-cluster-token",
                                  "initial-advertise-peer-urls",
                                  "experimental-encryption-key-file"};
    const char **dst[] = {&o->data_dir, &o->name, &o->cluster, &o->token,
                          &o->peer_urls, &o->key_file};
    for (int i = 1; i < argc; i++) {
        int missing = 0, hit = 0;
        for (size_t f = 0; f < sizeof names / sizeof names[0] && !hit; f++) {
            const char *v = flag_val(argc, argv, &i, names[f], &missing);
            if (v != NULL) {
                *dst[f] = v;
                hit = 1;
            }
        }
        if (hit)
            continue;
        if (missing)
            return fail(EXIT_BADARGS, "flag needs an argument: %s", argv[i]);
        if (strcmp(argv[i], "--skip-hash-check") == 0 ||
            strcmp(argv[i], "--skip-hash-check=true") == 0)
            o->skip_hash = 1;
        else if (strcmp(argv[i], "--skip-hash-check=false") == 0)
            o->skip_hash = 0;
        else if (argv[i][0] == '-')
            return fail(EXIT_BADARGS, "unknown flag: %s", argv[i]);
        else if (o->file == NULL)
            o->file = argv[i];
        else
            o->file = "";
    }
    if (o->file == NULL || o->file[0] == 0)
        return fail(EXIT_BADARGS, "snapshot restore requires exactly one argument");
    return 0;
}

static int cmd_restore(int argc, char **argv)
{
    struct restore_opts o = {NULL, NULL, "default",
                             "default=http://localhost:2380", "etcd-cluster",
                             "http://localhost:2380", 0, NULL};
    struct mvcc_snap_meta meta;
    char defdir[4096];
    struct stat st;
    uint64_t len;
    int fd, rc;

    if ((rc = parse_restore(argc, argv, &o)) != 0)
        return rc;
    if (o.data_dir == NULL || o.data_dir[0] == 0) {
        snprintf(defdir, sizeof defdir, "%s.etcd", o.name);
        o.data_dir = defdir;
    }
    if ((rc = verify_bootstrap(&o)) != 0)
        return rc;
    if (stat(o.data_dir, &st) == 0)
        return fail(EXIT_ERR, "data-dir \"%s\" exists", o.data_dir);
    if ((fd = open(o.file, O_RDONLY | O_CLOEXEC)) < 0)
        return fail(EXIT_ERR, "open %s: %s", o.file, go_strerror(errno));
    if (fstat(fd, &st) != 0 || st.st_size < SHA_LEN) {
        close(fd);
        return fail(EXIT_ERR, "seek %s: invalid argument", o.file);
    }
    if ((rc = check_hash(fd, (uint64_t)st.st_size, o.skip_hash, &len)) != 0) {
        close(fd);
        return rc;
    }
    struct crypt_ring *ring = NULL;
    if (o.key_file != NULL) {
        char err[512];
        if (crypt_ring_load(o.key_file, &ring, err, sizeof err) != 0) {
            close(fd);
            return fail(EXIT_ERR, "%s", err);
        }
    }
    fprintf(stderr, "snapshot: restoring path=%s data-dir=%s%s\n", o.file,
            o.data_dir, ring != NULL ? " (encrypted at rest)" : "");
    if ((rc = mkdir_parents(o.data_dir)) == 0)
        rc = mvcc_snapshot_restore(fd, len, o.data_dir, RESTORE_MAP_SIZE, ring,
                                   &meta);
    else
        crypt_ring_free(ring);
    close(fd);
    if (rc != 0) {
        remove_store(o.data_dir);
        if (rc == -EBADMSG)
            return fail(EXIT_ERR, "invalid database");
        if (rc == CAIRN_ETOOLARGE)
            return fail(EXIT_ERR, "a key is longer than cairn's limit of %d "
                        "bytes", MVCC_MAX_KEY);
        return fail(EXIT_ERR, "%s", rc <= -1000 ? cairn_err_msg(rc)
                                                : go_strerror(-rc));
    }
    if (meta.auth_enabled || meta.auth_users > 0)
        fprintf(stderr, "snapshot: restored auth enabled=%d users-and-roles=%"
                PRId64 "\n", meta.auth_enabled, meta.auth_users);
    fprintf(stderr, "snapshot: restored path=%s data-dir=%s revision=%" PRId64
            " records=%" PRId64 " leases=%" PRId64 " compacted=%" PRId64 "\n",
            o.file, o.data_dir, meta.rev, meta.keys, meta.leases,
            meta.finished_compact > meta.scheduled_compact
                ? meta.finished_compact : meta.scheduled_compact);
    return 0;
}

int snap_cli(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "restore") == 0)
        return cmd_restore(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "status") == 0)
        return cmd_status(argc - 1, argv + 1);
    fprintf(stderr, "Usage:\n"
            "  cairn snapshot restore <filename> [--data-dir DIR] [--name N]\n"
            "      [--initial-cluster C] [--initial-cluster-token T]\n"
            "      [--initial-advertise-peer-urls U] [--skip-hash-check]\n"
            "      [--experimental-encryption-key-file F]\n"
            "  cairn snapshot status <filename> [-w simple|table|json]\n");
    return EXIT_BADARGS;
}
