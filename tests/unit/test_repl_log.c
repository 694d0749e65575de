/* repl/log: the durable raft log on its own (no libraft instance): round
 * trips across segments and restarts, torn tails cut at every byte of the
 * last record, corruption in the middle refused, truncation across segment
 * boundaries, snapshots with trailing entries and the owner's floor, the
 * replacing snapshot, and the alternating metadata files. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "repl/log.h"

#define MAXI 512

struct fx {
    char dir[64];
    struct repl_log *l;
    uint64_t floor;          /* keep_from's answer; 0 = no floor */
    raft_term term[MAXI];    /* expected term of each index */
};

static uint64_t keep_from(void *ud)
{
    struct fx *f = ud;
    return f->floor ? f->floor : UINT64_MAX;
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/cairn-rlog-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    *state = f;
    return 0;
}

static void rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[512];
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

static int teardown(void **state)
{
    struct fx *f = *state;
    repl_log_close(f->l);
    rm_rf(f->dir);
    free(f);
    return 0;
}

static int open_log(struct fx *f, size_t seg_max)
{
    struct repl_log_opts o = {.dir = f->dir, .seg_max = seg_max,
                              .keep_from = keep_from, .keep_ud = f};
    char err[RAFT_ERRMSG_BUF_SIZE];
    repl_log_close(f->l);
    f->l = NULL;
    return repl_log_open(&o, &f->l, err);
}

/* Entry data: its index and term in text, then index % 11 filler bytes, so
 * records have every padding. */
static size_t gen(char *buf, raft_index i, raft_term t)
{
    int n = snprintf(buf, 64, "i=%llu t=%llu", i, t);
    memset(buf + n, 'x', i % 11);
    return (size_t)n + i % 11;
}

static void append(struct fx *f, raft_index from, unsigned n, raft_term t)
{
    struct raft_entry e[64];
    char data[64][64];
    assert_true(n <= 64);
    for (unsigned k = 0; k < n; k++) {
        e[k].term = t;
        e[k].type = RAFT_COMMAND;
        e[k].buf.base = data[k];
        e[k].buf.len = gen(data[k], from + k, t);
        e[k].batch = NULL;
        f->term[from + k] = t;
    }
    assert_int_equal(repl_log_append(f->l, from, e, n), 0);
}

static void free_entries(struct raft_entry *e, size_t n)
{
    void *batch = NULL;
    for (size_t i = 0; i < n; i++) {
        if (e[i].batch != batch) {
            raft_free(batch);
            batch = e[i].batch;
        }
    }
    raft_free(batch);
    raft_free(e);
}

/* Loads and checks every entry against f->term; returns start and count. */
static void load_check(struct fx *f, raft_index *start, size_t *n,
                       struct raft_snapshot **snap)
{
    raft_term term;
    raft_id vote;
    struct raft_snapshot *s;
    struct raft_entry *e;
    char want[64];

    assert_int_equal(repl_log_load(f->l, &term, &vote, &s, start, &e, n), 0);
    for (size_t i = 0; i < *n; i++) {
        raft_index idx = *start + i;
        size_t len = gen(want, idx, f->term[idx]);
        assert_int_equal(e[i].term, f->term[idx]);
        assert_int_equal(e[i].type, RAFT_COMMAND);
        assert_int_equal(e[i].buf.len, len);
        assert_memory_equal(e[i].buf.base, want, len);
    }
    free_entries(e, *n);
    if (snap != NULL)
        *snap = s;
    else
        repl_log_snapshot_free(s);
}

static int count_segs(struct fx *f)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, "seg-", 4) == 0;
    closedir(d);
    return n;
}

static int count_prefix(struct fx *f, const char *prefix)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL)
        n += strncmp(e->d_name, prefix, strlen(prefix)) == 0;
    closedir(d);
    return n;
}

/* The first indexes of the segments, ascending. */
static int seg_firsts(struct fx *f, raft_index *out, int max)
{
    DIR *d = opendir(f->dir);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d)) != NULL && n < max)
        if (strncmp(e->d_name, "seg-", 4) == 0)
            out[n++] = strtoull(e->d_name + 4, NULL, 10);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && out[j - 1] > out[j]; j--) {
            raft_index t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void seg_path(struct fx *f, raft_index first, char *out, size_t n)
{
    snprintf(out, n, "%s/seg-%020llu", f->dir, first);
}

static size_t file_size(const char *p)
{
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    return (size_t)st.st_size;
}

static void flip_byte(const char *p, off_t off)
{
    int fd = open(p, O_RDWR);
    uint8_t b;
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, &b, 1, off), 1);
    b ^= 0x40;
    assert_int_equal(pwrite(fd, &b, 1, off), 1);
    close(fd);
}

/* Offset of record @index in a segment starting at @first (32-byte header,
 * 32-byte record headers, data padded to 8). */
static size_t rec_off(raft_index first, raft_index index)
{
    char buf[64];
    size_t off = 32;
    for (raft_index i = first; i < index; i++)
        off += 32 + ((gen(buf, i, 1) + 7) & ~(size_t)7);
    return off;
}

static void log_round_trips_across_segments_and_restarts(void **state)
{
    struct fx *f = *state;
    raft_index start;
    size_t n;

    assert_int_equal(open_log(f, 512), 0);
    assert_true(repl_log_empty(f->l));
    append(f, 1, 1, 1);
    append(f, 2, 5, 1);
    append(f, 7, 34, 2);
    assert_int_equal(repl_log_sync(f->l), 0);
    assert_true(count_segs(f) > 3);
    assert_int_equal(open_log(f, 512), 0);
    assert_int_equal(repl_log_next_index(f->l), 41);
    load_check(f, &start, &n, NULL);
    assert_int_equal(start, 1);
    assert_int_equal(n, 40);
    /* Appends continue in the last segment after a restart. */
    append(f, 41, 5, 3);
    assert_int_equal(repl_log_sync(f->l), 0);
    assert_int_equal(open_log(f, 512), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 45);
    /* Written after open and loaded without a reopen: the changed last
     * segment and the new ones are read again. */
    repl_log_close(f->l);
    f->l = NULL;
    assert_int_equal(open_log(f, 512), 0);
    append(f, 46, 20, 4);
    assert_int_equal(repl_log_truncate(f->l, 60), 0);
    append(f, 60, 2, 5);
    assert_int_equal(repl_log_sync(f->l), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 61);
    /* A wrong index is refused and changes nothing. */
    struct raft_entry e = {.term = 3, .type = RAFT_COMMAND};
    assert_int_equal(repl_log_append(f->l, 63, &e, 1), RAFT_IOERR);
    assert_int_equal(repl_log_next_index(f->l), 62);
}

static void metadata_alternates_and_survives_a_torn_write(void **state)
{
    struct fx *f = *state;
    char p[128];
    raft_index start;
    raft_term term;
    raft_id vote;
    struct raft_snapshot *s;
    struct raft_entry *e;
    size_t n;

    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_set_term(f->l, 5), 0);   /* seq 1: metadata1 */
    assert_int_equal(repl_log_set_vote(f->l, 2), 0);   /* seq 2: metadata2 */
    assert_int_equal(repl_log_set_term(f->l, 6), 0);   /* seq 3: metadata1 */
    assert_int_equal(count_prefix(f, "metadata"), 2);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_load(f->l, &term, &vote, &s, &start, &e, &n), 0);
    assert_int_equal(term, 6);
    assert_int_equal(vote, 0);
    assert_int_equal(start, 1);
    assert_null(s);
    assert_null(e);
    assert_int_equal(repl_log_set_vote(f->l, 3), 0);   /* seq 4: metadata2 */
    /* The newest write torn: the one before it is still there. */
    snprintf(p, sizeof p, "%s/metadata2", f->dir);
    flip_byte(p, 20);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_load(f->l, &term, &vote, &s, &start, &e, &n), 0);
    assert_int_equal(term, 6);
    assert_int_equal(vote, 0);
    /* And the next write goes to the file that was not the newest. */
    assert_int_equal(repl_log_set_vote(f->l, 4), 0);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_load(f->l, &term, &vote, &s, &start, &e, &n), 0);
    assert_int_equal(term, 6);
    assert_int_equal(vote, 4);
    /* Both bad is damage. */
    snprintf(p, sizeof p, "%s/metadata1", f->dir);
    flip_byte(p, 20);
    snprintf(p, sizeof p, "%s/metadata2", f->dir);
    flip_byte(p, 20);
    assert_int_equal(open_log(f, 0), RAFT_CORRUPT);
}

static void write_prefix(const char *p, const uint8_t *data, size_t n)
{
    int fd = open(p, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, n), (ssize_t)n);
    close(fd);
}

static void torn_tail_is_cut_at_every_byte_of_the_last_record(void **state)
{
    struct fx *f = *state;
    char p[128];
    raft_index start;
    size_t n;

    assert_int_equal(open_log(f, 1 << 20), 0);
    append(f, 1, 10, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    repl_log_close(f->l);
    f->l = NULL;
    seg_path(f, 1, p, sizeof p);
    size_t size = file_size(p), last = rec_off(1, 10);
    assert_int_equal(rec_off(1, 11), size);
    uint8_t *orig = malloc(size + 4096);
    int fd = open(p, O_RDONLY);
    assert_int_equal(read(fd, orig, size), (ssize_t)size);
    close(fd);

    for (size_t cut = last; cut < size; cut++) {
        write_prefix(p, orig, cut);
        assert_int_equal(open_log(f, 1 << 20), 0);
        assert_int_equal(repl_log_next_index(f->l), 10);
        assert_int_equal(file_size(p), last); /* cut durably */
        load_check(f, &start, &n, NULL);
        assert_int_equal(n, 9);
        if (cut % 7 == 0) {
            /* The log takes the lost entry again after the cut. */
            append(f, 10, 1, 2);
            assert_int_equal(repl_log_sync(f->l), 0);
            assert_int_equal(open_log(f, 1 << 20), 0);
            load_check(f, &start, &n, NULL);
            assert_int_equal(n, 10);
            f->term[10] = 1;
        }
    }
    /* Power loss after the size grew but before the data: zeros. */
    memset(orig + size, 0, 4096);
    write_prefix(p, orig, size + 4096);
    assert_int_equal(open_log(f, 1 << 20), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 10);
    memset(orig + last + 32, 0, size - last - 32);
    write_prefix(p, orig, size);
    assert_int_equal(open_log(f, 1 << 20), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 9);
    free(orig);
}

static void torn_tail_in_the_last_of_several_segments(void **state)
{
    struct fx *f = *state;
    raft_index firsts[64], start;
    char p[128];
    size_t n;

    assert_int_equal(open_log(f, 256), 0);
    append(f, 1, 30, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    int ns = seg_firsts(f, firsts, 64);
    assert_true(ns > 2);
    seg_path(f, firsts[ns - 1], p, sizeof p);
    assert_int_equal(truncate(p, (off_t)file_size(p) - 3), 0);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 29);
    /* A new segment whose header itself is torn goes away. */
    append(f, 30, 1, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    repl_log_close(f->l);
    f->l = NULL;
    seg_path(f, 31, p, sizeof p);
    int fd = open(p, O_CREAT | O_WRONLY, 0600);
    assert_int_equal(write(fd, "CRNSEG", 6), 6);
    close(fd);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, 30);
    assert_int_equal(access(p, F_OK), -1);
}

static void corruption_in_the_middle_is_refused(void **state)
{
    struct fx *f = *state;
    raft_index firsts[64];
    char p[128];

    /* One segment: a bad record with valid ones after it. */
    assert_int_equal(open_log(f, 1 << 20), 0);
    append(f, 1, 10, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    seg_path(f, 1, p, sizeof p);
    flip_byte(p, (off_t)rec_off(1, 5) + 33);
    assert_int_equal(open_log(f, 1 << 20), RAFT_CORRUPT);
    flip_byte(p, (off_t)rec_off(1, 5) + 33);
    assert_int_equal(open_log(f, 1 << 20), 0);

    /* The last record of a segment that is not the last one. */
    repl_log_close(f->l);
    f->l = NULL;
    rm_rf(f->dir);
    assert_int_equal(open_log(f, 256), 0);
    append(f, 1, 30, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    int ns = seg_firsts(f, firsts, 64);
    assert_true(ns > 2);
    seg_path(f, firsts[0], p, sizeof p);
    flip_byte(p, (off_t)file_size(p) - 9);
    assert_int_equal(open_log(f, 256), RAFT_CORRUPT);
    flip_byte(p, (off_t)file_size(p) - 9);
    assert_int_equal(open_log(f, 256), 0);

    /* A missing segment in the middle is a hole. */
    repl_log_close(f->l);
    f->l = NULL;
    seg_path(f, firsts[1], p, sizeof p);
    assert_int_equal(unlink(p), 0);
    assert_int_equal(open_log(f, 256), RAFT_CORRUPT);
}

static void truncate_across_segments_then_append(void **state)
{
    struct fx *f = *state;
    raft_index firsts[64], start;
    size_t n;

    assert_int_equal(open_log(f, 256), 0);
    append(f, 1, 60, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    int ns = seg_firsts(f, firsts, 64);
    assert_true(ns > 4);

    /* Into the middle of an earlier segment: later ones go. */
    raft_index mid = firsts[2] + 1;
    assert_int_equal(repl_log_truncate(f->l, mid), 0);
    assert_int_equal(repl_log_next_index(f->l), mid);
    assert_int_equal(count_segs(f), 3);
    append(f, mid, 16, 2);
    assert_int_equal(repl_log_sync(f->l), 0);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, mid + 15);

    /* Exactly at a segment's first index. */
    ns = seg_firsts(f, firsts, 64);
    raft_index at = firsts[ns - 2];
    assert_int_equal(repl_log_truncate(f->l, at), 0);
    append(f, at, 3, 3);
    /* Appends not yet synced, then a truncate into them (the writer thread
     * queues these in submission order). */
    append(f, at + 3, 10, 3);
    assert_int_equal(repl_log_truncate(f->l, at + 5), 0);
    append(f, at + 5, 2, 4);
    assert_int_equal(repl_log_sync(f->l), 0);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(n, at + 6);

    /* Everything. */
    assert_int_equal(repl_log_truncate(f->l, 1), 0);
    assert_int_equal(count_segs(f), 0);
    append(f, 1, 4, 5);
    assert_int_equal(repl_log_sync(f->l), 0);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, NULL);
    assert_int_equal(start, 1);
    assert_int_equal(n, 4);
    struct repl_log_stats st;
    repl_log_get_stats(f->l, &st);
    assert_int_equal(st.truncates, 0); /* per open */
}

static void put_snapshot(struct fx *f, raft_index index, unsigned trailing,
                         size_t size)
{
    struct raft_snapshot s = {.index = index, .term = f->term[index] ? f->term[index] : 1,
                              .configuration_index = 1};
    struct raft_buffer bufs[2];
    uint8_t *data = malloc(size);
    for (size_t i = 0; i < size; i++)
        data[i] = (uint8_t)(index + i);
    raft_configuration_init(&s.configuration);
    assert_int_equal(raft_configuration_add(&s.configuration, 1, "one:1", RAFT_VOTER), 0);
    assert_int_equal(raft_configuration_add(&s.configuration, 2, "two:2", RAFT_STANDBY), 0);
    bufs[0] = (struct raft_buffer){data, size / 3};
    bufs[1] = (struct raft_buffer){data + size / 3, size - size / 3};
    s.bufs = bufs;
    s.n_bufs = 2;
    assert_int_equal(repl_log_snapshot_put(f->l, trailing, &s), 0);
    raft_configuration_close(&s.configuration);
    free(data);
}

static void check_snapshot(const struct raft_snapshot *s, raft_index index,
                           size_t size)
{
    assert_non_null(s);
    assert_int_equal(s->index, index);
    assert_int_equal(s->configuration_index, 1);
    assert_int_equal(s->configuration.n, 2);
    assert_int_equal(s->configuration.servers[1].id, 2);
    assert_string_equal(s->configuration.servers[1].address, "two:2");
    assert_int_equal(s->configuration.servers[1].role, RAFT_STANDBY);
    assert_int_equal(s->n_bufs, 1);
    assert_int_equal(s->bufs[0].len, size);
    for (size_t i = 0; i < size; i++)
        assert_int_equal(((uint8_t *)s->bufs[0].base)[i], (uint8_t)(index + i));
}

static void snapshot_trailing_respects_the_floor(void **state)
{
    struct fx *f = *state;
    struct raft_snapshot *s;
    raft_index start;
    size_t n;

    assert_int_equal(open_log(f, 256), 0);
    for (raft_index i = 1; i <= 100; i += 50)
        append(f, i, 50, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    int before = count_segs(f);

    /* trailing says up to 70 may go; the owner still needs 40 on. */
    f->floor = 40;
    put_snapshot(f, 80, 10, 300);
    assert_true(count_segs(f) < before);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, &s);
    check_snapshot(s, 80, 300);
    repl_log_snapshot_free(s);
    assert_true(start > 1 && start <= 40);
    assert_int_equal(start + n - 1, 100);

    /* Floor lifted: trailing decides (up to 80 may go). */
    f->floor = 0;
    put_snapshot(f, 90, 10, 5000);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, &s);
    check_snapshot(s, 90, 5000);
    repl_log_snapshot_free(s);
    assert_true(start > 40 && start <= 81);
    assert_int_equal(start + n - 1, 100);

    /* Only the last two snapshots stay; get returns the newest. */
    put_snapshot(f, 95, 10, 0);
    assert_int_equal(count_prefix(f, "snap-"), 2);
    assert_int_equal(repl_log_snapshot_get(f->l, &s), 0);
    assert_int_equal(s->index, 95);
    assert_int_equal(s->bufs[0].len, 0);
    repl_log_snapshot_free(s);
    /* The newest damaged: the previous one is used (the log still joins). */
    char p[128];
    snprintf(p, sizeof p, "%s/snap-%020llu", f->dir, 95ULL);
    flip_byte(p, 70);
    assert_int_equal(open_log(f, 256), 0);
    load_check(f, &start, &n, &s);
    check_snapshot(s, 90, 5000);
    repl_log_snapshot_free(s);
}

static void replacing_snapshot_resets_the_log(void **state)
{
    struct fx *f = *state;
    struct raft_snapshot *s;
    raft_index start, firsts[64];
    char p[128];
    size_t n;

    assert_int_equal(open_log(f, 256), 0);
    append(f, 1, 30, 1);
    assert_int_equal(repl_log_sync(f->l), 0);
    /* Keep a copy of a segment: it comes back below as a leftover of a
     * replacement cut short by a crash. */
    assert_true(seg_firsts(f, firsts, 64) > 1);
    seg_path(f, firsts[1], p, sizeof p);
    size_t size = file_size(p);
    uint8_t *copy = malloc(size);
    int fd = open(p, O_RDONLY);
    assert_int_equal(read(fd, copy, size), (ssize_t)size);
    close(fd);

    put_snapshot(f, 50, 0, 100);
    assert_int_equal(count_segs(f), 0);
    assert_int_equal(repl_log_next_index(f->l), 51);
    append(f, 51, 5, 2);
    assert_int_equal(repl_log_sync(f->l), 0);
    fd = open(p, O_CREAT | O_WRONLY, 0600);
    assert_int_equal(write(fd, copy, size), (ssize_t)size);
    close(fd);
    free(copy);

    assert_int_equal(open_log(f, 256), 0);
    assert_int_equal(access(p, F_OK), -1); /* stale epoch: removed */
    load_check(f, &start, &n, &s);
    check_snapshot(s, 50, 100);
    repl_log_snapshot_free(s);
    assert_int_equal(start, 51);
    assert_int_equal(n, 5);
}

static void bootstrap_and_recover(void **state)
{
    struct fx *f = *state;
    struct raft_configuration c;
    raft_term term;
    raft_id vote;
    struct raft_snapshot *s;
    struct raft_entry *e;
    raft_index start;
    size_t n;

    raft_configuration_init(&c);
    assert_int_equal(raft_configuration_add(&c, 1, "a", RAFT_VOTER), 0);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_bootstrap(f->l, &c), 0);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_bootstrap(f->l, &c), RAFT_CANTBOOTSTRAP);
    assert_int_equal(repl_log_recover(f->l, &c), 0);
    assert_int_equal(open_log(f, 0), 0);
    assert_int_equal(repl_log_load(f->l, &term, &vote, &s, &start, &e, &n), 0);
    assert_int_equal(term, 1);
    assert_int_equal(start, 1);
    assert_int_equal(n, 2);
    assert_int_equal(e[0].type, RAFT_CHANGE);
    assert_int_equal(e[1].type, RAFT_CHANGE);
    assert_int_equal(e[1].term, 1);
    free_entries(e, n);
    raft_configuration_close(&c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(
            log_round_trips_across_segments_and_restarts, setup, teardown),
        cmocka_unit_test_setup_teardown(
            metadata_alternates_and_survives_a_torn_write, setup, teardown),
        cmocka_unit_test_setup_teardown(
            torn_tail_is_cut_at_every_byte_of_the_last_record, setup, teardown),
        cmocka_unit_test_setup_teardown(
            torn_tail_in_the_last_of_several_segments, setup, teardown),
        cmocka_unit_test_setup_teardown(corruption_in_the_middle_is_refused,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(truncate_across_segments_then_append,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(snapshot_trailing_respects_the_floor,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(replacing_snapshot_resets_the_log,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(bootstrap_and_recover, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
