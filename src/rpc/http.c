/* HTTP/1.1 endpoints on the client port and on --listen-metrics-urls:
 * /health as etcd 3.5 (JSON, alarms, ?exclude=, ?serializable=true),
 * /livez and /readyz as etcd 3.6 (named checks, ?verbose, ?exclude=, one
 * path per check), /metrics (Prometheus text) and, on client ports only,
 * /version. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "core/mem.h"
#include "metrics/metrics.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

#define TEXT "text/plain; charset=utf-8"
#define MAX_QUERY_VALUES 16

static void body(struct http_reply *r, const char *s)
{
    buf_append(&r->body, s, strlen(s));
}

static void reply_text(struct http_reply *r, int status, const char *s)
{
    r->status = status;
    r->content_type = TEXT;
    body(r, s);
}

/* ---- query strings, decoded as Go's url.ParseQuery ---- */

struct query {
    char buf[1024];
    const char *exclude[MAX_QUERY_VALUES];
    int nexclude;
    int serializable; /* serializable=true (the first value, as Get) */
    int verbose;      /* "verbose" present, whatever its value */
};

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes in place; returns -1 on a bad escape (Go drops such pairs). */
static int unescape(char *s)
{
    char *o = s;
    for (; *s; s++) {
        if (*s == '+') {
            *o++ = ' ';
        } else if (*s == '%') {
            int h = hexval(s[1]), l = h < 0 ? -1 : hexval(s[2]);
            if (l < 0)
                return -1;
            *o++ = (char)(h << 4 | l);
            s += 2;
        } else {
            *o++ = *s;
        }
    }
    *o = 0;
    return 0;
}

static void parse_query(const char *path, struct query *q)
{
    const char *qs = strchr(path, '?');
    int seen_serializable = 0;
    memset(q, 0, sizeof *q);
    if (qs == NULL)
        return;
    snprintf(q->buf, sizeof q->buf, "%s", qs + 1);
    for (char *save = NULL, *kv = strtok_r(q->buf, "&;", &save); kv != NULL;
         kv = strtok_r(NULL, "&;", &save)) {
        char *v = strchr(kv, '=');
        if (v != NULL)
            *v++ = 0;
        else
            v = kv + strlen(kv); /* "" */
        if (unescape(kv) != 0 || unescape(v) != 0)
            continue;
        if (strcmp(kv, "exclude") == 0 && *v && q->nexclude < MAX_QUERY_VALUES)
            q->exclude[q->nexclude++] = v;
        else if (strcmp(kv, "serializable") == 0 && !seen_serializable++)
            q->serializable = strcmp(v, "true") == 0;
        else if (strcmp(kv, "verbose") == 0)
            q->verbose = 1;
    }
}

static int excluded(const struct query *q, const char *name)
{
    for (int i = 0; i < q->nexclude; i++)
        if (strcmp(q->exclude[i], name) == 0)
            return 1;
    return 0;
}

/* ---- checks ---- */

/* etcd's Range{keys_only, limit 1}. A single member has applied every
 * committed write, so the serializable and the linearizable read are the
 * same local read. Returns 0, or fills @err. */
static int read_check(char *err, size_t n)
{
    static const uint8_t zero = 0;
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    Etcdserverpb__RangeResponse resp;
    struct mvcc_txn t;
    struct arena a;
    int rc;

    req.key.data = (uint8_t *)&zero;
    req.key.len = 1;
    req.range_end.data = (uint8_t *)&zero;
    req.range_end.len = 1;
    req.keys_only = 1;
    req.limit = 1;
    if ((rc = mvcc_read_begin(srv->mvcc, &t)) != 0)
        goto err;
    arena_init(&a);
    rc = mvcc_range(&t, &req, &a, &resp);
    arena_free(&a);
    mvcc_read_end(&t);
    if (rc == 0)
        return 0;
err:
    snprintf(err, n, "%s", cairn_err_msg(rc));
    return -1;
}

static int corruption_check(char *err, size_t n)
{
    if (apply_alarms(srv->apply) & (1u << ETCDSERVERPB__ALARM_TYPE__CORRUPT)) {
        snprintf(err, n, "alarm activated: CORRUPT");
        return -1;
    }
    return 0;
}

static int learner_check(char *err, size_t n)
{
    if (repl_is_learner()) {
        snprintf(err, n, "this member is a learner");
        return -1;
    }
    return 0;
}

/* A read that cannot be linearized without a leader fails (etcd's
 * linearizable_read check waits for a read index). */
static int leader_read_check(char *err, size_t n)
{
    if (repl_leader() == 0) {
        snprintf(err, n, "%s", cairn_err_msg(CAIRN_ENOLEADER));
        return -1;
    }
    return read_check(err, n);
}

struct check {
    const char *name;
    int (*fn)(char *err, size_t n);
};

static const struct check livez_checks[] = {
    {"serializable_read", read_check},
};

static const struct check readyz_checks[] = {
    {"data_corruption", corruption_check},
    {"serializable_read", read_check},
    {"linearizable_read", leader_read_check},
    {"non_learner", learner_check},
};

/* etcd 3.6's CheckRegistry: "[+]name ok" / "[-]name failed: err" lines;
 * a failure answers 503 with them all, success "ok" after them when
 * verbose. Checks run in registration order (etcd's order is Go map
 * order, i.e. unspecified). */
static void run_checks(const struct check *cs, size_t n, const char *only,
                       const struct query *q, struct http_reply *r)
{
    struct buf out = {NULL, 0, 0};
    char line[512], err[384];
    int failed = 0;

    for (size_t i = 0; i < n; i++) {
        if (only != NULL ? strcmp(cs[i].name, only) != 0
                         : excluded(q, cs[i].name))
            continue;
        if (cs[i].fn(err, sizeof err) != 0) {
            snprintf(line, sizeof line, "[-]%s failed: %s\n", cs[i].name, err);
            failed = 1;
        } else {
            snprintf(line, sizeof line, "[+]%s ok\n", cs[i].name);
        }
        buf_append(&out, line, strlen(line));
    }
    r->content_type = TEXT;
    if (failed) {
        r->status = 503;
        buf_append(&r->body, out.data, out.len);
        body(r, "\n"); /* http.Error ends the text with a newline */
    } else {
        r->status = 200;
        if (q->verbose)
            buf_append(&r->body, out.data, out.len);
        body(r, "ok\n");
    }
    buf_free(&out);
}

struct registry {
    const struct check *cs;
    size_t n;
    const char *only; /* a single check's path: that check alone */
};

/* /livez, /readyz and /<root>/<check>; 0 if @path is not one of them. */
static int find_checks(const char *path, size_t plen, struct registry *reg)
{
    static const struct {
        const char *root;
        const struct check *cs;
        size_t n;
    } regs[] = {
        {"/livez", livez_checks, sizeof livez_checks / sizeof livez_checks[0]},
        {"/readyz", readyz_checks,
         sizeof readyz_checks / sizeof readyz_checks[0]},
    };
    for (size_t i = 0; i < sizeof regs / sizeof regs[0]; i++) {
        size_t rl = strlen(regs[i].root);
        if (plen < rl || strncmp(path, regs[i].root, rl) != 0)
            continue;
        reg->cs = regs[i].cs;
        reg->n = regs[i].n;
        reg->only = NULL;
        if (plen == rl)
            return 1;
        if (path[rl] != '/')
            continue;
        for (size_t j = 0; j < regs[i].n; j++) {
            const char *name = regs[i].cs[j].name;
            if (plen - rl - 1 == strlen(name) &&
                strncmp(path + rl + 1, name, plen - rl - 1) == 0) {
                reg->only = name;
                return 1;
            }
        }
    }
    return 0;
}

/* etcd 3.5's /health: alarms (unless excluded), a leader, then a read. */
static void serve_health(const struct query *q, struct http_reply *r)
{
    static const struct {
        int type;
        const char *name, *reason;
    } alarms[] = {
        {ETCDSERVERPB__ALARM_TYPE__NOSPACE, "NOSPACE", "ALARM NOSPACE"},
        {ETCDSERVERPB__ALARM_TYPE__CORRUPT, "CORRUPT", "ALARM CORRUPT"},
    };
    char reason[512] = "", err[384];
    unsigned mask = apply_alarms(srv->apply);

    for (size_t i = 0; i < sizeof alarms / sizeof alarms[0] && !*reason; i++)
        if ((mask & (1u << alarms[i].type)) && !excluded(q, alarms[i].name))
            snprintf(reason, sizeof reason, "%s", alarms[i].reason);
    if (!*reason && !repl_is_learner() && repl_leader() == 0)
        snprintf(reason, sizeof reason, "RAFT NO LEADER");
    if (!*reason && read_check(err, sizeof err) != 0)
        snprintf(reason, sizeof reason, "RANGE ERROR:%s", err);
    metrics_health_result(!*reason);
    r->content_type = TEXT; /* what Go's sniffing gives etcd's reply */
    if (!*reason) {
        r->status = 200;
        body(r, "{\"health\":\"true\",\"reason\":\"\"}");
        return;
    }
    r->status = 503;
    body(r, "{\"health\":\"false\",\"reason\":\"");
    body(r, reason); /* fixed texts and error messages: no JSON escapes */
    body(r, "\"}\n");
}

void rpc_http(const char *method, const char *path, struct http_reply *r)
{
    char tmp[256];
    size_t plen = strcspn(path, "?");
    struct registry reg;
    struct query q;

#define IS(p) (plen == sizeof(p) - 1 && strncmp(path, p, plen) == 0)
    r->content_type = "application/json";
    /* etcd serves /version on client URLs only, not on metrics URLs. */
    if (IS("/version") && !r->metrics_listener) {
        r->status = 200;
        snprintf(tmp, sizeof tmp,
                 "{\"etcdserver\":\"%s\",\"etcdcluster\":\"%s\","
                 "\"storage\":\"%s\"}",
                 CAIRN_ETCD_VERSION, CAIRN_ETCD_CLUSTER_VERSION,
                 CAIRN_ETCD_CLUSTER_VERSION);
        body(r, tmp);
        return;
    }
    if (IS("/metrics")) {
        r->status = 200;
        r->content_type = "text/plain; version=0.0.4; charset=utf-8";
        metrics_expose(&r->body);
        return;
    }
    int health = IS("/health");
#undef IS
    if (!health && !find_checks(path, plen, &reg)) {
        reply_text(r, 404, "404 page not found\n");
        return;
    }
    if (strcmp(method, "GET") != 0) {
        reply_text(r, 405, "Method Not Allowed\n");
        return;
    }
    parse_query(path, &q);
    if (health)
        serve_health(&q, r);
    else
        run_checks(reg.cs, reg.n, reg.only, &q, r);
}

int rpc_listen_metrics(void)
{
    struct net_opts o = {.metrics_only = 1}; /* no gRPC: no limits needed */
    char *urls[CONFIG_MAX_URLS], *list;
    int n, rc = 0;

    if (srv->cfg.listen_metrics_urls == NULL || !*srv->cfg.listen_metrics_urls)
        return 0;
    list = cairn_strdup(srv->cfg.listen_metrics_urls);
    n = config_split(list, urls, CONFIG_MAX_URLS);
    for (int i = 0; i < n && rc == 0; i++) {
        rc = net_listen(srv->loop, urls[i], &o);
        if (rc == -EPROTONOSUPPORT)
            log_error("server: %s: unsupported URL scheme (http and https only)",
                      urls[i]);
        else if (rc != 0)
            log_error("server: cannot listen on metrics URL %s: %s", urls[i],
                      rc == -EINVAL ? "invalid URL" : uv_strerror(rc));
    }
    cairn_free(list);
    return rc == 0 ? 0 : -1;
}
