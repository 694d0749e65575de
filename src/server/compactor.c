/* etcd's periodic and revision compactors (etcdserver/api/v3compactor). */
#include "server/compactor.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "repl/repl.h"
#include "server/config.h"

#define HOUR_MS (3600 * 1000LL)
#define REV_INTERVAL_MS (5 * 60 * 1000LL) /* etcd's revInterval */
#define RETRY_DIVISOR 10

static struct compactor {
    uv_timer_t timer;
    struct apply *apply;
    int periodic;
    int64_t period_ms;   /* periodic: the retention window */
    int64_t retention;   /* revision: revisions kept */
    /* periodic: the revision seen every retry interval, oldest first */
    int64_t *revs;
    int nrevs, max_revs;
    uint64_t last_success, base_ms;
    int64_t prev;        /* revision: last compacted */
    int running, inflight;
} cp;

static uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static void compact_done(struct apply_cmd *cmd)
{
    int64_t rev = (int64_t)(intptr_t)cmd->ud;
    cp.inflight = 0;
    if (cmd->rc == 0 || cmd->rc == CAIRN_ECOMPACTED) {
        log_infow(cp.periodic ? "completed auto periodic compaction"
                              : "completed auto revision compaction",
                  LOG_INT("revision", rev));
        if (cp.periodic) {
            cp.last_success = now_ms();
        } else {
            cp.prev = rev;
        }
    } else {
        log_warnw(cp.periodic ? "failed auto periodic compaction"
                              : "failed auto revision compaction",
                  LOG_INT("revision", rev), LOG_STR("error", cairn_err_msg(cmd->rc)));
    }
    apply_cmd_free(cmd);
}

static void compact(int64_t rev)
{
    Etcdserverpb__CompactionRequest r = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    r.revision = rev;
    cp.inflight = 1;
    log_infow(cp.periodic ? "starting auto periodic compaction"
                          : "starting auto revision compaction",
              LOG_INT("revision", rev));
    repl_submit_msg(APPLY_COMPACT, &r.base, compact_done,
                     (void *)(intptr_t)rev);
}

static void sample(void)
{
    if (cp.nrevs == cp.max_revs) {
        memmove(cp.revs, cp.revs + 1, (size_t)(cp.nrevs - 1) * sizeof *cp.revs);
        cp.nrevs--;
    }
    cp.revs[cp.nrevs++] = apply_rev(cp.apply);
}

/* Every tenth of the window the current revision is recorded; once a
 * window has passed since the last success, the revision recorded a window
 * ago is compacted (then every hour at most, as etcd). */
static void on_periodic(uv_timer_t *t)
{
    /* etcd's compactor runs on the leader only */
    if (cp.inflight || !repl_is_leader())
        return;
    if (now_ms() - cp.last_success >= cp.base_ms) {
        int64_t per = cp.period_ms > HOUR_MS ? HOUR_MS : cp.period_ms;
        cp.base_ms = (uint64_t)per;
        if (cp.revs[0] > 0)
            compact(cp.revs[0]);
    }
    sample();
}

static void on_revision(uv_timer_t *t)
{
    int64_t rev = apply_rev(cp.apply) - cp.retention;
    if (cp.inflight || rev <= 0 || rev == cp.prev || !repl_is_leader())
        return;
    compact(rev);
}

/* etcd's parseCompactionRetention: a non-negative integer is hours
 * (periodic) or revisions; otherwise a Go duration. */
static int parse_retention(const char *mode, const char *v, int *periodic,
                           int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    *periodic = strcmp(mode, "periodic") == 0 || mode[0] == 0;
    if (!*periodic && strcmp(mode, "revision") != 0) {
        fprintf(stderr, "cairn: unknown auto-compaction-mode \"%s\"\n", mode);
        return -1;
    }
    if (*v != 0 && *end == 0 && errno == 0 && n >= 0) {
        *out = *periodic ? n * HOUR_MS : n;
        return 0;
    }
    int64_t ms;
    if (config_duration_ms(v, &ms) != 0) {
        fprintf(stderr, "cairn: error parsing CompactionRetention: time: invalid "
                        "duration \"%s\"\n", v);
        return -1;
    }
    /* a duration in revision mode counts nanoseconds as revisions */
    *out = *periodic ? ms : ms * 1000000;
    return 0;
}

int server_compactor_start(uv_loop_t *loop, struct apply *a, const char *mode,
                           const char *retention)
{
    int periodic;
    int64_t v;
    if (parse_retention(mode, retention, &periodic, &v) != 0)
        return -1;
    if (v <= 0)
        return 0;
    memset(&cp, 0, sizeof cp);
    cp.apply = a;
    cp.periodic = periodic;
    uv_timer_init(loop, &cp.timer);
    uv_unref((uv_handle_t *)&cp.timer);
    cp.running = 1;
    if (!periodic) {
        cp.retention = v;
        uv_timer_start(&cp.timer, on_revision, REV_INTERVAL_MS, REV_INTERVAL_MS);
        log_infow("auto compaction enabled", LOG_STR("mode", "revision"),
                  LOG_INT("retention", v));
        return 0;
    }
    cp.period_ms = v;
    int64_t interval = (v > HOUR_MS ? HOUR_MS : v) / RETRY_DIVISOR;
    if (interval < 1)
        interval = 1;
    cp.max_revs = (int)(v / interval) + 1;
    cp.revs = cairn_calloc((size_t)cp.max_revs, sizeof *cp.revs);
    cp.last_success = now_ms();
    cp.base_ms = (uint64_t)v;
    sample();
    uv_timer_start(&cp.timer, on_periodic, (uint64_t)interval, (uint64_t)interval);
    log_infow("auto compaction enabled", LOG_STR("mode", "periodic"),
              LOG_INT("retention-ms", v));
    return 0;
}

void server_compactor_stop(void)
{
    if (!cp.running)
        return;
    uv_timer_stop(&cp.timer);
    uv_close((uv_handle_t *)&cp.timer, NULL);
    cairn_free(cp.revs);
    cp.revs = NULL;
    cp.running = 0;
}
