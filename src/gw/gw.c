/* etcd's JSON gateway on the client port, as etcd 3.4 mounts grpc-gateway
 * 1.6.4 (docs/plan-issue9.md sec. 2): POST /v3/<route> with one JSON value
 * (bidi routes: a stream of values) becomes a gRPC call through
 * rpc_dispatch on a call transport (net.h struct call_transport); its
 * framed answers become JSON. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/log.h"
#include "auth/auth.h"
#include "core/mem.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "gw/pbjson.h"
#include "net/frame.h"
#include "net/net.h"
#include "server/server.h"
#include "v3electionpb/v3election.pb-c.h"
#include "v3lockpb/v3lock.pb-c.h"

/* Complete messages are turned into JSON only while less than this is
 * waiting for the socket. */
#define GW_HIGH_WATER (1024 * 1024)
/* One JSON value of a request body is held whole up to this size. */
#define GW_MAX_VALUE (64u << 20)
#define JSON_CT "application/json"
#define GRPC_MD "Grpc-Metadata-Content-Type: application/grpc\r\n"

enum gw_kind { GW_UNARY, GW_SSTREAM, GW_BIDI };

struct gw_route {
    const char *path;   /* after /v3/ */
    const char *method; /* the gRPC path */
    const ProtobufCMessageDescriptor *in, *out;
    enum gw_kind kind;
};

#define EP(s) &etcdserverpb__##s##__descriptor
#define R(p, m, i, o, k) {p, m, EP(i), EP(o), k}
#define KV "/etcdserverpb.KV/"
#define LS "/etcdserverpb.Lease/"
#define CL "/etcdserverpb.Cluster/"
#define MT "/etcdserverpb.Maintenance/"
#define AU "/etcdserverpb.Auth/"
#define ELR(p, m, i, o, k)                                                  \
    {p, "/v3electionpb.Election/" m, &v3electionpb__##i##__descriptor,      \
     &v3electionpb__##o##__descriptor, k}

static const struct gw_route routes[] = {
    R("kv/range", KV "Range", range_request, range_response, GW_UNARY),
    R("kv/put", KV "Put", put_request, put_response, GW_UNARY),
    R("kv/deleterange", KV "DeleteRange", delete_range_request, delete_range_response, GW_UNARY),
    R("kv/txn", KV "Txn", txn_request, txn_response, GW_UNARY),
    R("kv/compaction", KV "Compact", compaction_request, compaction_response, GW_UNARY),
    R("watch", "/etcdserverpb.Watch/Watch", watch_request, watch_response, GW_BIDI),
    R("lease/grant", LS "LeaseGrant", lease_grant_request, lease_grant_response, GW_UNARY),
    R("lease/revoke", LS "LeaseRevoke", lease_revoke_request, lease_revoke_response, GW_UNARY),
    R("kv/lease/revoke", LS "LeaseRevoke", lease_revoke_request, lease_revoke_response, GW_UNARY),
    R("lease/keepalive", LS "LeaseKeepAlive", lease_keep_alive_request, lease_keep_alive_response, GW_BIDI),
    R("lease/timetolive", LS "LeaseTimeToLive", lease_time_to_live_request, lease_time_to_live_response, GW_UNARY),
    R("kv/lease/timetolive", LS "LeaseTimeToLive", lease_time_to_live_request, lease_time_to_live_response, GW_UNARY),
    R("lease/leases", LS "LeaseLeases", lease_leases_request, lease_leases_response, GW_UNARY),
    R("kv/lease/leases", LS "LeaseLeases", lease_leases_request, lease_leases_response, GW_UNARY),
    R("cluster/member/add", CL "MemberAdd", member_add_request, member_add_response, GW_UNARY),
    R("cluster/member/remove", CL "MemberRemove", member_remove_request, member_remove_response, GW_UNARY),
    R("cluster/member/update", CL "MemberUpdate", member_update_request, member_update_response, GW_UNARY),
    R("cluster/member/list", CL "MemberList", member_list_request, member_list_response, GW_UNARY),
    R("cluster/member/promote", CL "MemberPromote", member_promote_request, member_promote_response, GW_UNARY),
    R("maintenance/alarm", MT "Alarm", alarm_request, alarm_response, GW_UNARY),
    R("maintenance/status", MT "Status", status_request, status_response, GW_UNARY),
    R("maintenance/defragment", MT "Defragment", defragment_request, defragment_response, GW_UNARY),
    R("maintenance/hash", MT "Hash", hash_request, hash_response, GW_UNARY),
    /* cairn extra, as etcd 3.5 (3.4 registers HashKV on .../hash, never
     * reached) */
    R("maintenance/hashkv", MT "HashKV", hash_kvrequest, hash_kvresponse, GW_UNARY),
    R("maintenance/snapshot", MT "Snapshot", snapshot_request, snapshot_response, GW_SSTREAM),
    R("maintenance/transfer-leadership", MT "MoveLeader", move_leader_request, move_leader_response, GW_UNARY),
    R("auth/enable", AU "AuthEnable", auth_enable_request, auth_enable_response, GW_UNARY),
    R("auth/disable", AU "AuthDisable", auth_disable_request, auth_disable_response, GW_UNARY),
    /* cairn extra, as etcd 3.5 */
    R("auth/status", AU "AuthStatus", auth_status_request, auth_status_response, GW_UNARY),
    R("auth/authenticate", AU "Authenticate", authenticate_request, authenticate_response, GW_UNARY),
    R("auth/user/add", AU "UserAdd", auth_user_add_request, auth_user_add_response, GW_UNARY),
    R("auth/user/get", AU "UserGet", auth_user_get_request, auth_user_get_response, GW_UNARY),
    R("auth/user/list", AU "UserList", auth_user_list_request, auth_user_list_response, GW_UNARY),
    R("auth/user/delete", AU "UserDelete", auth_user_delete_request, auth_user_delete_response, GW_UNARY),
    R("auth/user/changepw", AU "UserChangePassword", auth_user_change_password_request, auth_user_change_password_response, GW_UNARY),
    R("auth/user/grant", AU "UserGrantRole", auth_user_grant_role_request, auth_user_grant_role_response, GW_UNARY),
    R("auth/user/revoke", AU "UserRevokeRole", auth_user_revoke_role_request, auth_user_revoke_role_response, GW_UNARY),
    R("auth/role/add", AU "RoleAdd", auth_role_add_request, auth_role_add_response, GW_UNARY),
    R("auth/role/get", AU "RoleGet", auth_role_get_request, auth_role_get_response, GW_UNARY),
    R("auth/role/list", AU "RoleList", auth_role_list_request, auth_role_list_response, GW_UNARY),
    R("auth/role/delete", AU "RoleDelete", auth_role_delete_request, auth_role_delete_response, GW_UNARY),
    R("auth/role/grant", AU "RoleGrantPermission", auth_role_grant_permission_request, auth_role_grant_permission_response, GW_UNARY),
    R("auth/role/revoke", AU "RoleRevokePermission", auth_role_revoke_permission_request, auth_role_revoke_permission_response, GW_UNARY),
    {"lock/lock", "/v3lockpb.Lock/Lock", &v3lockpb__lock_request__descriptor,
     &v3lockpb__lock_response__descriptor, GW_UNARY},
    {"lock/unlock", "/v3lockpb.Lock/Unlock", &v3lockpb__unlock_request__descriptor,
     &v3lockpb__unlock_response__descriptor, GW_UNARY},
    ELR("election/campaign", "Campaign", campaign_request, campaign_response, GW_UNARY),
    ELR("election/proclaim", "Proclaim", proclaim_request, proclaim_response, GW_UNARY),
    ELR("election/leader", "Leader", leader_request, leader_response, GW_UNARY),
    ELR("election/observe", "Observe", leader_request, leader_response, GW_SSTREAM),
    ELR("election/resign", "Resign", resign_request, resign_response, GW_UNARY),
};

/* One gateway request. Lives until the HTTP answer is complete (or the
 * connection went away) and the call was let go. */
struct gw {
    struct http_exchange *x;    /* NULL once the answer is complete */
    struct grpc_call *c;        /* NULL once released or aborted */
    const struct gw_route *r;
    struct json_split split;
    struct buf body;            /* request bytes not yet cut into values */
    int nvalues;                /* values sent on the call */
    int body_closed;            /* no more values go to the call */
    struct buf re;              /* framed answer bytes taken from c->out */
    size_t re_off;
    struct buf unary;           /* unary: the converted answer */
    int nmsgs;                  /* answers converted */
    int no_md;                  /* no header metadata reached the gateway */
    int finished, status;       /* the call's end */
    char *message;
    int depth;                  /* inside one of our entry points */
    int pend;                   /* on the pending list */
    struct gw *pend_next;
};

/* ---- HTTP status and texts (grpc-gateway's HTTPStatusFromCode) ---- */

static int http_status_of(int code)
{
    static const int map[] = {200, 408, 500, 400, 504, 404, 409, 403,
                              429, 412, 409, 400, 501, 500, 503, 500, 401};
    return code >= 0 && code < (int)(sizeof map / sizeof map[0]) ? map[code] : 500;
}

static const char *status_text(int h)
{
    switch (h) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 429: return "Too Many Requests";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Internal Server Error";
    }
}

static void put_lit(struct buf *b, const char *s)
{
    buf_append(b, s, strlen(s));
}

static void text_answer(struct http_exchange *x, int status, const char *text)
{
    http_respond(x, status, "text/plain; charset=utf-8",
                 "X-Content-Type-Options: nosniff\r\n", text, strlen(text));
}

/* ---- lifetime ---- */

static void unschedule(struct gw *g);

static void gw_maybe_free(struct gw *g)
{
    if (g->depth > 0 || g->x != NULL || g->c != NULL)
        return;
    unschedule(g);
    buf_free(&g->body);
    buf_free(&g->re);
    buf_free(&g->unary);
    cairn_free(g->message);
    cairn_free(g);
}

/* ---- answers ---- */

/* A whole answer as Go's net/http sends one written at once: bodies of
 * 2048 bytes or more (its buffer before chunking) go chunked. */
static void respond_go(struct http_exchange *x, int status, const char *extra,
                       const void *body, size_t len)
{
    if (len < 2048) {
        http_respond(x, status, JSON_CT, extra, body, len);
        return;
    }
    http_stream_start(x, status, JSON_CT, extra);
    http_stream_write(x, body, len);
    http_stream_end(x);
}

/* A unary error, or an error before a call started. @trailer: the
 * call's trailers-only answer, whose content-type metadata grpc-go hands
 * over as trailer metadata (grpc-gateway then sends it as an HTTP
 * trailer, so the answer is chunked). */
static void answer_error_t(struct gw *g, int code, const char *msg, int trailer)
{
    struct buf b;
    char num[16];
    if (g->x == NULL)
        return;
    buf_init(&b);
    put_lit(&b, "{\"error\":");
    json_put_string(&b, msg, strlen(msg));
    put_lit(&b, ",\"message\":");
    json_put_string(&b, msg, strlen(msg));
    snprintf(num, sizeof num, ",\"code\":%d}", code);
    put_lit(&b, num);
    struct http_exchange *x = g->x;
    g->x = NULL;
    /* Over TLS etcd serves gRPC through Go's http.Handler transport, which
     * sends headers before trailers: the metadata is header metadata. */
    if (trailer && http_is_tls(x)) {
        respond_go(x, http_status_of(code), GRPC_MD, b.data, b.len);
    } else if (trailer) {
        http_stream_start(x, http_status_of(code), JSON_CT,
                          "Trailer: Grpc-Trailer-Content-Type\r\n");
        http_stream_write(x, b.data, b.len);
        http_stream_end_trailers(x, "Grpc-Trailer-Content-Type: application/grpc\r\n");
    } else {
        respond_go(x, http_status_of(code), NULL, b.data, b.len);
    }
    buf_free(&b);
}

static void answer_error(struct gw *g, int code, const char *msg)
{
    answer_error_t(g, code, msg, 0);
}

static void stream_head(struct gw *g, int status)
{
    if (g->nmsgs == 0 && g->x != NULL)
        http_stream_start(g->x, status, JSON_CT,
                          !g->no_md && (status == 200 || http_is_tls(g->x))
                              ? GRPC_MD
                              : NULL);
}

/* Converts whole messages from g->re while the socket keeps up. */
static void convert(struct gw *g)
{
    struct buf js;
    buf_init(&js);
    for (int guard = 0; guard < 100000 && g->x != NULL; guard++) {
        if (g->re.len == g->re_off)
            break;
        const uint8_t *p = g->re.data + g->re_off;
        uint32_t len = 0;
        if (grpc_frame_next(p, g->re.len - g->re_off, SIZE_MAX, &len) !=
            GRPC_FRAME_OK)
            break;
        if (g->r->kind != GW_UNARY && http_unsent(g->x) >= GW_HIGH_WATER)
            break;
        js.len = 0;
        if (g->r->kind == GW_UNARY) {
            if (g->nmsgs == 0 &&
                pbjson_encode(g->r->out, p + GRPC_PREFIX_LEN, len, &g->unary) != 0)
                log_warn("gw: cannot encode answer path=%s", g->r->method);
        } else {
            put_lit(&js, "{\"result\":");
            if (pbjson_encode(g->r->out, p + GRPC_PREFIX_LEN, len, &js) != 0)
                log_warn("gw: cannot encode answer path=%s", g->r->method);
            put_lit(&js, "}\n");
            stream_head(g, 200);
            http_stream_write(g->x, js.data, js.len);
        }
        g->nmsgs++;
        g->re_off += GRPC_PREFIX_LEN + len;
    }
    buf_free(&js);
    if (g->re_off == g->re.len) {
        g->re.len = g->re_off = 0;
        if (g->re.cap > (256u << 10))
            buf_free(&g->re);
    } else if (g->re_off > (1u << 20)) {
        buf_consume(&g->re, g->re_off);
        g->re_off = 0;
    }
}

/* The call ended and everything was converted: the answer's end. */
static void finish_answer(struct gw *g)
{
    /* g->c is let go only once its last bytes were taken (gw_run). */
    if (g->x == NULL || !g->finished || g->c != NULL || g->re.len > g->re_off)
        return;
    const char *msg = g->message ? g->message : "";
    if (g->r->kind == GW_UNARY) {
        if (g->status != 0 || g->nmsgs == 0) {
            /* A deadline is the gateway's own context: no trailers. */
            answer_error_t(g, g->status ? g->status : 2,
                           g->status ? msg : "unexpected EOF",
                           g->status != GRPC_DEADLINE_EXCEEDED);
            return;
        }
        struct http_exchange *x = g->x;
        g->x = NULL;
        respond_go(x, 200, GRPC_MD, g->unary.data, g->unary.len);
        return;
    }
    if (g->status != 0) {
        struct buf b;
        char tmp[96];
        int h = http_status_of(g->status);
        buf_init(&b);
        snprintf(tmp, sizeof tmp, "{\"error\":{\"grpc_code\":%d,\"http_code\":%d,\"message\":",
                 g->status, h);
        put_lit(&b, tmp);
        json_put_string(&b, msg, strlen(msg));
        put_lit(&b, ",\"http_status\":");
        json_put_string(&b, status_text(h), strlen(status_text(h)));
        put_lit(&b, "}}");
        stream_head(g, h);
        http_stream_write(g->x, b.data, b.len);
        buf_free(&b);
    } else {
        stream_head(g, 200);
    }
    struct http_exchange *x = g->x;
    g->x = NULL;
    http_stream_end(x);
}

/* ---- the call transport ---- */

/* Handlers may fill a message after grpc_send_reserve() returns (before
 * they go back to the loop), so c->out is taken on the next loop turn. */
static struct gw *pending;
static uv_idle_t pending_idle;
static int pending_init;

static void gw_run(struct gw *g)
{
    struct grpc_call *c = g->c;
    if (c != NULL) {
        size_t n = c->out.len - c->out_off;
        /* Partial messages move too: a producer waiting for unsent < N
         * would otherwise never finish a message larger than N. */
        if (n > 0)
            buf_append(&g->re, c->out.data + c->out_off, n);
        c->out.len = c->out_off = 0;
        if (c->out.cap > (256u << 10))
            buf_free(&c->out);
        if (g->finished) {
            g->c = NULL;
            if (g->x != NULL)
                http_set_call(g->x, NULL);
            grpc_call_release(c);
        }
    }
    g->depth++;
    convert(g);
    finish_answer(g);
    g->depth--;
    gw_maybe_free(g);
}

static void on_pending(uv_idle_t *h)
{
    uv_idle_stop(h);
    for (int guard = 0; guard < 1000000 && pending != NULL; guard++) {
        struct gw *g = pending;
        pending = g->pend_next;
        g->pend_next = NULL;
        g->pend = 0;
        gw_run(g);
    }
}

static void schedule(struct gw *g)
{
    if (g->pend)
        return;
    if (!pending_init) {
        uv_idle_init(srv->loop, &pending_idle);
        pending_init = 1;
    }
    g->pend = 1;
    g->pend_next = pending;
    pending = g;
    uv_idle_start(&pending_idle, on_pending);
}

static void unschedule(struct gw *g)
{
    if (!g->pend)
        return;
    for (struct gw **pp = &pending; *pp != NULL; pp = &(*pp)->pend_next)
        if (*pp == g) {
            *pp = g->pend_next;
            break;
        }
    g->pend = 0;
}

static void tp_kick(struct grpc_call *c)
{
    schedule(c->tp_ud);
}

static void tp_finished(struct grpc_call *c)
{
    struct gw *g = c->tp_ud;
    g->finished = 1;
    g->status = c->status;
    g->message = c->message ? cairn_strdup(c->message) : NULL;
    schedule(g);
}

/* Bytes the producer should count as not yet sent: the socket's backlog,
 * what is still in c->out and the whole messages not yet converted. */
static size_t tp_unsent(const struct grpc_call *c)
{
    const struct gw *g = c->tp_ud;
    size_t n = g->x != NULL ? http_unsent(g->x) : 0;
    size_t off = g->re_off;
    uint32_t len = 0;
    while (off < g->re.len &&
           grpc_frame_next(g->re.data + off, g->re.len - off, SIZE_MAX,
                           &len) == GRPC_FRAME_OK)
        off += GRPC_PREFIX_LEN + (size_t)len;
    return n + (off - g->re_off) + (c->out.len - c->out_off);
}

static const struct call_transport gw_tp = {tp_kick, tp_finished, tp_unsent};

/* ---- requests ---- */

/* gRPC's syntax: at most 8 digits and one unit. */
static int64_t parse_timeout(const char *v)
{
    size_t n = strlen(v);
    if (n < 2 || n > 9 || strspn(v, "0123456789") != n - 1)
        return -1;
    return grpc_timeout_ms(v);
}

/* Metadata from headers as grpc-gateway forwards it. Returns 0, or -1
 * after answering. */
static int start_call(struct gw *g, const uint8_t *msg, size_t len)
{
    struct http_exchange *x = g->x;
    const char *tok = http_header(x, "Grpc-Metadata-Token");
    const char *auth = http_header(x, "Authorization");
    const char *hl = http_header(x, "Grpc-Metadata-Hasleader");
    const char *to = http_header(x, "Grpc-Timeout");
    int64_t ms = -1;

    if (to != NULL && (ms = parse_timeout(to)) < 0) {
        char m[160];
        snprintf(m, sizeof m, "invalid grpc-timeout: %.100s", to);
        answer_error(g, GRPC_INVALID_ARGUMENT, m);
        return -1;
    }
    struct grpc_call *c = grpc_call_new(g->r->method, &gw_tp, g);
    g->c = c;
    /* etcd reads the "token" metadata first, then "authorization". */
    if (tok == NULL)
        tok = auth;
    if (tok == NULL)
        tok = http_header(x, "Grpc-Metadata-Authorization");
    if (tok != NULL)
        grpc_call_set_token(c, tok, strlen(tok));
    c->has_leader_md = hl != NULL && strcmp(hl, "true") == 0;
    if (ms >= 0)
        c->deadline_ms = net_now_ms() + ms;
    http_set_call(x, c);
    grpc_call_start(c, msg, len, 1);
    return 0;
}

/* One JSON value of the body (or the body's rest at its end). */
static void take_value(struct gw *g, const uint8_t *p, size_t n)
{
    struct buf wire;
    char err[256];
    size_t max = (size_t)srv->cfg.max_request_bytes + 512 * 1024;

    static const uint8_t empty[1];
    buf_init(&wire);
    if (pbjson_decode(g->r->in, p, n, &wire, err, sizeof err) != 0) {
        if (g->nvalues == 0) {
            /* grpc-gateway returns a bidi route's first decode error
             * raw: Unknown. */
            g->body_closed = 1;
            answer_error(g, g->r->kind == GW_BIDI ? GRPC_UNKNOWN
                                                  : GRPC_INVALID_ARGUMENT,
                         err);
        } else if (!g->body_closed) {
            g->body_closed = 1;
            if (g->c != NULL)
                grpc_call_half_close(g->c);
        }
        buf_free(&wire);
        return;
    }
    if (g->nvalues++ == 0) {
        if (g->r->kind != GW_BIDI)
            g->body_closed = 1;
        if (wire.len > max) {
            char m[128];
            snprintf(m, sizeof m,
                     "grpc: received message larger than max (%zu vs. %zu)",
                     wire.len, max);
            g->body_closed = 1;
            answer_error_t(g, GRPC_RESOURCE_EXHAUSTED, m, 1);
        } else {
            /* never NULL: handlers may memcpy an empty message */
            start_call(g, wire.data ? wire.data : empty, wire.len);
        }
    } else if (g->c != NULL && !g->body_closed) {
        grpc_call_msg(g->c, wire.data ? wire.data : empty, wire.len);
    }
    buf_free(&wire);
}

static int only_space(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i] != ' ' && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
            return 0;
    return 1;
}

/* A bidi route with an empty body: grpc-gateway opens the stream and
 * half-closes it at once, sending nothing. etcd's LeaseKeepAlive then
 * ends OK (an empty answer); its Watch stays open, silent, until the
 * client goes away. */
static void empty_bidi(struct gw *g)
{
    g->no_md = 1;
    if (strcmp(g->r->method, "/etcdserverpb.Watch/Watch") == 0)
        return;
    stream_head(g, 200);
    struct http_exchange *x = g->x;
    g->x = NULL;
    http_stream_end(x);
}

static void on_body(void *ud, const uint8_t *p, size_t n)
{
    struct gw *g = ud;
    if (g->body_closed)
        return;
    g->depth++;
    buf_append(&g->body, p, n);
    if (g->body.len > GW_MAX_VALUE && g->x != NULL) {
        struct http_exchange *x = g->x;
        g->body_closed = 1;
        buf_free(&g->body);
        if (g->c == NULL) {
            g->x = NULL;
            http_close_after(x);
            text_answer(x, 413, "Request Entity Too Large\n");
        } else if (g->c != NULL) {
            grpc_call_half_close(g->c);
        }
        g->depth--;
        gw_maybe_free(g);
        return;
    }
    for (int guard = 0; guard < 100000 && !g->body_closed && g->body.len > 0;
         guard++) {
        size_t end = 0;
        int rc = json_split_next(&g->split, g->body.data, g->body.len, &end);
        if (rc == 0)
            break;
        if (rc < 0) {
            take_value(g, g->body.data, g->body.len);
            g->body_closed = 1;
            break;
        }
        take_value(g, g->body.data, end);
        buf_consume(&g->body, end);
        json_split_init(&g->split);
    }
    if (g->body_closed)
        buf_free(&g->body);
    g->depth--;
    gw_maybe_free(g);
}

static void on_body_end(void *ud)
{
    struct gw *g = ud;
    g->depth++;
    if (!g->body_closed) {
        if (!only_space(g->body.data, g->body.len))
            take_value(g, g->body.data, g->body.len);
        else if (g->nvalues == 0 && g->r->kind != GW_BIDI)
            take_value(g, NULL, 0); /* io.EOF: an empty request */
        else if (g->nvalues == 0)
            empty_bidi(g);
        buf_free(&g->body);
        if (!g->body_closed && g->c != NULL) {
            g->body_closed = 1;
            grpc_call_half_close(g->c);
        }
        g->body_closed = 1;
    }
    g->depth--;
    gw_maybe_free(g);
}

static void on_drain(void *ud)
{
    struct gw *g = ud;
    g->depth++;
    convert(g);
    finish_answer(g);
    g->depth--;
    gw_maybe_free(g);
}

static void on_abort(void *ud)
{
    struct gw *g = ud;
    struct grpc_call *c = g->c;
    g->x = NULL;
    g->c = NULL;
    if (c != NULL)
        grpc_call_abort(c); /* the handler's cancel hook runs */
    gw_maybe_free(g);
}

static const struct http_handler gw_handler = {on_body, on_body_end, on_drain,
                                               on_abort};

int gw_request(struct http_exchange *x)
{
    const char *t = http_target(x);
    size_t plen = strcspn(t, "?");
    const char *p;

    if (!srv->cfg.enable_grpc_gateway)
        return 0;
    if (strncmp(t, "/v3/", 4) == 0)
        p = t + 4;
    else if (strncmp(t, "/v3beta/", 8) == 0)
        p = t + 8;
    else
        return 0;
    plen -= (size_t)(p - t);
    /* etcd's accessController: with client certificate auth and auth on, a
     * verified certificate with a CN is refused on the gateway (its CN
     * would not be used as the user). */
    const char *cn = http_peer_cn(x);
    if (cn != NULL && *cn && srv->cfg.client_cert_auth && auth_enabled()) {
        http_omit_cors(x);
        text_answer(x, 400, "CommonName of client sending a request against "
                            "gateway will be ignored and not used as expected\n");
        return 1;
    }
    if (strcmp(http_method(x), "OPTIONS") == 0)
        return 0;
    const struct gw_route *r = NULL;
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        if (strlen(routes[i].path) == plen && memcmp(routes[i].path, p, plen) == 0)
            r = &routes[i];
    if (r == NULL) {
        text_answer(x, 404, "Not Found\n");
        return 1;
    }
    if (strcmp(http_method(x), "POST") != 0) {
        text_answer(x, 405, "Method Not Allowed\n");
        return 1;
    }
    struct gw *g = cairn_calloc(1, sizeof *g);
    g->x = x;
    g->r = r;
    buf_init(&g->body);
    buf_init(&g->re);
    buf_init(&g->unary);
    json_split_init(&g->split);
    http_set_handler(x, &gw_handler, g);
    return 1;
}
