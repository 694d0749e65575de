/* cairn's raft_io (see io.h). Disk requests are jobs on a FIFO that one
 * writer thread drains a round at a time; finished rounds go to a done FIFO
 * that a uv_async brings back to the loop, where callbacks run in order. */
#include "metrics/metrics.h"
#include "repl/io.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "core/log.h"
#include "core/mem.h"

enum job_type { JOB_APPEND, JOB_TRUNCATE, JOB_SNAP_PUT, JOB_SNAP_GET };

struct job {
    enum job_type type;
    int status;
    struct job *next;
    union {
        struct {
            struct raft_io_append *req;
            raft_index index;
            struct raft_entry *entries; /* copy of the array; data borrowed */
            unsigned n;
        } append;
        raft_index truncate;
        struct {
            struct raft_io_snapshot_put *req;
            const struct raft_snapshot *snapshot; /* borrowed */
            unsigned trailing;
            uint64_t floor; /* keep_from, read on the loop thread */
        } put;
        struct {
            struct raft_io_snapshot_get *req;
            struct raft_snapshot *got;
        } get;
    };
};

struct rio {
    struct raft_io *io;
    uv_loop_t *loop;
    struct repl_log *log;
    struct repl_io_opts o;
    uv_timer_t tick;
    uv_async_t async;
    raft_io_tick_cb tick_cb;
    raft_io_recv_cb recv_cb;
    raft_io_close_cb close_cb;
    raft_index next_index; /* where the next append goes (loop side) */
    uint64_t rnd;
    unsigned jobs, sends, works; /* in flight; close waits for all three */
    int failed;                  /* a disk job failed: fail fast */
    int started, closing, finishing, handles;

    /* Shared with the writer thread, under mu. */
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct job *q_head, *q_tail;       /* submitted */
    struct job *d_head, *d_tail;       /* done */
    int stop;
    struct repl_io_stats stats;

    /* Writer thread only. */
    int w_err;        /* sticky error */
    uint64_t w_floor; /* the floor of the snapshot_put being run */
};

static void set_errmsg(struct rio *r, const char *msg)
{
    snprintf(r->io->errmsg, sizeof r->io->errmsg, "%s", msg);
}

/* ---- writer thread ----------------------------------------------------- */

static uint64_t writer_floor(void *ud)
{
    return ((struct rio *)ud)->w_floor;
}

static int run_job(struct rio *r, struct job *j, int *unsynced)
{
    switch (j->type) {
    case JOB_APPEND:
        *unsynced = 1;
        return repl_log_append(r->log, j->append.index, j->append.entries,
                               j->append.n);
    case JOB_TRUNCATE:
        return repl_log_truncate(r->log, j->truncate);
    case JOB_SNAP_PUT:
        r->w_floor = j->put.floor ? j->put.floor : UINT64_MAX;
        return repl_log_snapshot_put(r->log, j->put.trailing, j->put.snapshot);
    case JOB_SNAP_GET:
        return repl_log_snapshot_get(r->log, &j->get.got);
    }
    return RAFT_INVALID;
}

/* One round: the jobs in order, then one sync for every append in it. */
static void run_round(struct rio *r, struct job *jobs)
{
    int unsynced = 0;
    for (struct job *j = jobs; j != NULL; j = j->next) {
        if (r->w_err != 0 && j->type != JOB_SNAP_GET) {
            j->status = r->w_err;
            continue;
        }
        j->status = run_job(r, j, &unsynced);
        if (j->status != 0 && j->type != JOB_SNAP_GET) {
            r->w_err = j->status;
            log_errorw("repl: io: disk write failed, log stopped",
                       LOG_STR("error", repl_log_errmsg(r->log)));
        }
    }
    if (!unsynced || r->w_err != 0)
        return;
    int64_t t0 = metrics_now_ns();
    int rc = repl_log_sync(r->log);
    if (rc == 0) {
        metrics_wal_fsync_observe(t0);
        return;
    }
    r->w_err = rc;
    log_errorw("repl: io: sync failed, log stopped",
               LOG_STR("error", repl_log_errmsg(r->log)));
    for (struct job *j = jobs; j != NULL; j = j->next)
        if (j->type == JOB_APPEND && j->status == 0)
            j->status = rc;
}

static void *writer_main(void *arg)
{
    struct rio *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (r->q_head == NULL && !r->stop)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->q_head == NULL)
            break;
        /* Everything queued so far is this round: the group commit. */
        struct job *jobs = r->q_head, *last = r->q_tail;
        r->q_head = r->q_tail = NULL;
        pthread_mutex_unlock(&r->mu);

        run_round(r, jobs);

        pthread_mutex_lock(&r->mu);
        if (r->d_tail != NULL)
            r->d_tail->next = jobs;
        else
            r->d_head = jobs;
        r->d_tail = last;
        r->stats.rounds++;
        repl_log_get_stats(r->log, &r->stats.log);
        pthread_mutex_unlock(&r->mu);
        uv_async_send(&r->async);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

static int writer_start(struct rio *r)
{
    if (r->thread_started)
        return 0;
    int rc = pthread_create(&r->thread, NULL, writer_main, r);
    if (rc != 0) {
        set_errmsg(r, "cannot start the raft writer thread");
        return RAFT_NOMEM;
    }
    r->thread_started = 1;
    return 0;
}

/* ---- loop side: jobs --------------------------------------------------- */

static void submit(struct rio *r, struct job *j)
{
    /* The async handle keeps the loop alive only while work is out. */
    if (r->jobs++ == 0)
        uv_ref((uv_handle_t *)&r->async);
    pthread_mutex_lock(&r->mu);
    if (r->q_tail != NULL)
        r->q_tail->next = j;
    else
        r->q_head = j;
    r->q_tail = j;
    pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void maybe_finish_close(struct rio *r);

static void complete(struct rio *r, struct job *j)
{
    if (j->status != 0 && j->type != JOB_SNAP_GET && !r->failed) {
        r->failed = j->status;
        snprintf(r->io->errmsg, sizeof r->io->errmsg, "raft log: %s",
                 raft_strerror(j->status));
    }
    switch (j->type) {
    case JOB_APPEND:
        cairn_free(j->append.entries);
        j->append.req->cb(j->append.req, j->status);
        break;
    case JOB_TRUNCATE:
        break;
    case JOB_SNAP_PUT:
        j->put.req->cb(j->put.req, j->status);
        break;
    case JOB_SNAP_GET:
        j->get.req->cb(j->get.req, j->get.got, j->status);
        break;
    }
    cairn_free(j);
}

static void async_cb(uv_async_t *h)
{
    struct rio *r = h->data;
    pthread_mutex_lock(&r->mu);
    struct job *j = r->d_head;
    r->d_head = r->d_tail = NULL;
    pthread_mutex_unlock(&r->mu);
    while (j != NULL) {
        struct job *next = j->next;
        r->jobs--;
        complete(r, j); /* may submit more, or start close */
        j = next;
    }
    if (r->jobs == 0 && !r->finishing)
        uv_unref((uv_handle_t *)&r->async);
    maybe_finish_close(r);
}

static struct job *job_new(struct rio *r, enum job_type type)
{
    struct job *j = cairn_calloc(1, sizeof *j);
    j->type = type;
    return j;
}

static int io_append(struct raft_io *io, struct raft_io_append *req,
                     const struct raft_entry entries[], unsigned n,
                     raft_io_append_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    if (r->failed)
        return r->failed;
    struct job *j = job_new(r, JOB_APPEND);
    req->cb = cb;
    j->append.req = req;
    j->append.index = r->next_index;
    j->append.n = n;
    /* raft keeps the entries' data until cb, but copying the array costs
     * little and does not depend on it keeping the array too. */
    j->append.entries = cairn_malloc((n ? n : 1) * sizeof *entries);
    memcpy(j->append.entries, entries, n * sizeof *entries);
    r->next_index += n;
    submit(r, j);
    return 0;
}

static int io_truncate(struct raft_io *io, raft_index index)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    if (r->failed)
        return r->failed;
    struct job *j = job_new(r, JOB_TRUNCATE);
    j->truncate = index;
    if (index < r->next_index)
        r->next_index = index;
    submit(r, j);
    return 0;
}

static int io_snapshot_put(struct raft_io *io, unsigned trailing,
                           struct raft_io_snapshot_put *req,
                           const struct raft_snapshot *snapshot,
                           raft_io_snapshot_put_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    if (r->failed)
        return r->failed;
    struct job *j = job_new(r, JOB_SNAP_PUT);
    req->cb = cb;
    j->put.req = req;
    j->put.snapshot = snapshot;
    j->put.trailing = trailing;
    j->put.floor = r->o.keep_from ? r->o.keep_from(r->o.keep_ud) : 0;
    if (j->put.floor == 0 && r->o.keep_from != NULL)
        j->put.floor = 1; /* "keep everything": nothing is below 1 */
    if (trailing == 0)
        r->next_index = snapshot->index + 1;
    submit(r, j);
    return 0;
}

static int io_snapshot_get(struct raft_io *io, struct raft_io_snapshot_get *req,
                           raft_io_snapshot_get_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    struct job *j = job_new(r, JOB_SNAP_GET);
    req->cb = cb;
    j->get.req = req;
    submit(r, j);
    return 0;
}

/* ---- loop side: synchronous methods ------------------------------------ */

static int io_init(struct raft_io *io, raft_id id, const char *address)
{
    struct rio *r = io->impl;
    if (r->o.seed == 0)
        r->rnd = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull ^ id;
    r->rnd |= 1; /* xorshift must not start at 0 */
    return 0;
}

static int io_load(struct raft_io *io, raft_term *term, raft_id *voted_for,
                   struct raft_snapshot **snapshot, raft_index *start_index,
                   struct raft_entry *entries[], size_t *n_entries)
{
    struct rio *r = io->impl;
    int rc = repl_log_load(r->log, term, voted_for, snapshot, start_index,
                           entries, n_entries);
    if (rc != 0) {
        set_errmsg(r, repl_log_errmsg(r->log));
        return rc;
    }
    /* A new term at start when asked (a single voter elects itself without
     * an election, and etcd's campaigns: every start is a new term). A
     * higher term with no vote is always safe in raft. */
    if (r->o.bump_term && *term > 0) {
        if ((rc = repl_log_set_term(r->log, *term + 1)) != 0) {
            set_errmsg(r, repl_log_meta_errmsg(r->log));
            return rc;
        }
        *term += 1;
        *voted_for = 0;
    }
    return 0;
}

static void tick_cb(uv_timer_t *t)
{
    struct rio *r = t->data;
    if (r->tick_cb != NULL && !r->closing)
        r->tick_cb(r->io);
}

static int io_start(struct raft_io *io, unsigned msecs, raft_io_tick_cb tick,
                    raft_io_recv_cb recv)
{
    struct rio *r = io->impl;
    if (r->started || r->closing)
        return RAFT_BUSY;
    int rc = writer_start(r);
    if (rc != 0)
        return rc;
    r->tick_cb = tick;
    r->recv_cb = recv;
    r->started = 1;
    uv_timer_start(&r->tick, tick_cb, msecs, msecs);
    return 0;
}

static int io_bootstrap(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rio *r = io->impl;
    if (r->thread_started)
        return RAFT_BUSY; /* the log belongs to the writer now */
    int rc = repl_log_bootstrap(r->log, conf);
    if (rc != 0)
        set_errmsg(r, repl_log_errmsg(r->log));
    r->next_index = repl_log_next_index(r->log);
    return rc;
}

static int io_recover(struct raft_io *io, const struct raft_configuration *conf)
{
    struct rio *r = io->impl;
    if (r->thread_started)
        return RAFT_BUSY;
    int rc = repl_log_recover(r->log, conf);
    if (rc != 0)
        set_errmsg(r, repl_log_errmsg(r->log));
    r->next_index = repl_log_next_index(r->log);
    return rc;
}

static int io_set_term(struct raft_io *io, raft_term term)
{
    struct rio *r = io->impl;
    int rc = repl_log_set_term(r->log, term);
    if (rc != 0)
        set_errmsg(r, repl_log_meta_errmsg(r->log));
    return rc;
}

static int io_set_vote(struct raft_io *io, raft_id server_id)
{
    struct rio *r = io->impl;
    int rc = repl_log_set_vote(r->log, server_id);
    if (rc != 0)
        set_errmsg(r, repl_log_meta_errmsg(r->log));
    return rc;
}

static raft_time io_time(struct raft_io *io)
{
    struct rio *r = io->impl;
    return uv_now(r->loop);
}

static int io_random(struct raft_io *io, int min, int max)
{
    struct rio *r = io->impl;
    r->rnd ^= r->rnd >> 12;
    r->rnd ^= r->rnd << 25;
    r->rnd ^= r->rnd >> 27;
    uint64_t x = r->rnd * 0x2545f4914f6cdd1dull;
    if (max <= min)
        return min;
    return min + (int)(x % (uint64_t)(max - min));
}

/* ---- sends and async work ---------------------------------------------- */

struct send_ctx {
    struct rio *r;
    struct raft_io_send *req;
    raft_io_send_cb cb;
};

/* libraft sends TimeoutNow (leadership transfer) with a NULL callback, and
 * its request lives in the raft_transfer, which may be gone by the time the
 * write completes: without a callback, req is not touched at all. */
static void send_done(void *ud, int status)
{
    struct send_ctx *c = ud;
    struct rio *r = c->r;
    struct raft_io_send *req = c->req;
    raft_io_send_cb cb = c->cb;
    cairn_free(c);
    r->sends--;
    if (cb != NULL)
        cb(req, status);
    maybe_finish_close(r);
}

static int io_send(struct raft_io *io, struct raft_io_send *req,
                   const struct raft_message *message, raft_io_send_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    struct send_ctx *c = cairn_malloc(sizeof *c);
    c->r = r;
    c->req = req;
    c->cb = cb;
    req->cb = cb;
    r->sends++;
    int rc = r->o.send(r->o.send_ud, message, send_done, c);
    if (rc != 0) {
        r->sends--;
        cairn_free(c);
        return rc < 0 ? RAFT_NOCONNECTION : rc;
    }
    return 0;
}

struct work_ctx {
    uv_work_t w;
    struct rio *r;
    struct raft_io_async_work *req;
    int status;
};

static void work_run(uv_work_t *w)
{
    struct work_ctx *c = w->data;
    c->status = c->req->work(c->req);
}

static void work_after(uv_work_t *w, int status)
{
    struct work_ctx *c = w->data;
    struct rio *r = c->r;
    struct raft_io_async_work *req = c->req;
    int st = status == UV_ECANCELED ? RAFT_CANCELED : c->status;
    cairn_free(c);
    r->works--;
    req->cb(req, st);
    maybe_finish_close(r);
}

static int io_async_work(struct raft_io *io, struct raft_io_async_work *req,
                         raft_io_async_work_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return RAFT_CANCELED;
    struct work_ctx *c = cairn_calloc(1, sizeof *c);
    c->w.data = c;
    c->r = r;
    c->req = req;
    req->cb = cb;
    int rc = uv_queue_work(r->loop, &c->w, work_run, work_after);
    if (rc != 0) {
        cairn_free(c);
        return RAFT_IOERR;
    }
    r->works++;
    return 0;
}

/* ---- receiving --------------------------------------------------------- */

void repl_io_free_message(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES) {
        struct raft_entry *e = m->append_entries.entries;
        void *batch = NULL;
        for (unsigned i = 0; i < m->append_entries.n_entries; i++)
            if (e[i].batch != batch) {
                raft_free(batch);
                batch = e[i].batch;
            }
        raft_free(batch);
        raft_free(e);
        m->append_entries.entries = NULL;
        m->append_entries.n_entries = 0;
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        m->install_snapshot.data.base = NULL;
    }
}

void repl_io_deliver(struct raft_io *io, struct raft_message *msg)
{
    struct rio *r = io->impl;
    if (r == NULL || !r->started || r->closing || r->recv_cb == NULL) {
        repl_io_free_message(msg);
        return;
    }
    r->recv_cb(io, msg);
}

/* ---- close ------------------------------------------------------------- */

static void handle_closed(uv_handle_t *h)
{
    struct rio *r = h->data;
    if (--r->handles > 0)
        return;
    struct raft_io *io = r->io;
    raft_io_close_cb cb = r->close_cb;
    repl_log_close(r->log);
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    io->impl = NULL;
    cairn_free(r);
    if (cb != NULL)
        cb(io);
}

static void maybe_finish_close(struct rio *r)
{
    if (!r->closing || r->finishing || r->jobs || r->sends || r->works)
        return;
    r->finishing = 1;
    if (r->thread_started) {
        /* Idle now: the join does not wait for the disk. */
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    r->handles = 2;
    uv_close((uv_handle_t *)&r->tick, handle_closed);
    uv_close((uv_handle_t *)&r->async, handle_closed);
}

static void io_close(struct raft_io *io, raft_io_close_cb cb)
{
    struct rio *r = io->impl;
    if (r->closing)
        return;
    r->closing = 1;
    r->close_cb = cb;
    uv_timer_stop(&r->tick);
    /* Work queued before start still has to drain for close to finish. */
    if (r->jobs > 0 && writer_start(r) != 0)
        log_error("repl: io: cannot drain the queue at close");
    maybe_finish_close(r);
}

void repl_io_get_stats(struct raft_io *io, struct repl_io_stats *out)
{
    struct rio *r = io->impl;
    pthread_mutex_lock(&r->mu);
    *out = r->stats;
    pthread_mutex_unlock(&r->mu);
}

int repl_io_init(struct raft_io *io, uv_loop_t *loop,
                 const struct repl_io_opts *o)
{
    struct rio *r = cairn_calloc(1, sizeof *r);
    struct repl_log_opts lo = {.dir = o->dir, .seg_max = o->seg_max,
                               .keep_from = writer_floor, .keep_ud = r};
    int rc;

    memset(io, 0, sizeof *io);
    r->io = io;
    r->loop = loop;
    r->o = *o;
    r->rnd = o->seed;
    rc = repl_log_open(&lo, &r->log, io->errmsg);
    if (rc != 0)
        goto err_free_rio;
    r->next_index = repl_log_next_index(r->log);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    uv_timer_init(loop, &r->tick);
    r->tick.data = r;
    uv_async_init(loop, &r->async, async_cb);
    r->async.data = r;
    uv_unref((uv_handle_t *)&r->async);

    io->version = 2;
    io->impl = r;
    io->init = io_init;
    io->close = io_close;
    io->load = io_load;
    io->start = io_start;
    io->bootstrap = io_bootstrap;
    io->recover = io_recover;
    io->set_term = io_set_term;
    io->set_vote = io_set_vote;
    io->send = io_send;
    io->append = io_append;
    io->truncate = io_truncate;
    io->snapshot_put = io_snapshot_put;
    io->snapshot_get = io_snapshot_get;
    io->time = io_time;
    io->random = io_random;
    io->async_work = io_async_work;
    return 0;
err_free_rio:
    cairn_free(r);
    return rc;
}
