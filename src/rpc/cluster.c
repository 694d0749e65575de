/* etcdserverpb.Cluster: the members (src/repl/member.c). Changes are
 * proposed through the log and answered once applied here; every answer
 * lists the members as this member knows them then. */
#include <inttypes.h>
#include <string.h>

#include "core/mem.h"
#include "repl/repl.h"
#include "rpc/rpc.h"

#define MAX_LIST 64

/* The members as etcd's Member messages, in the call's arena. */
static Etcdserverpb__Member **list(struct grpc_call *c, size_t *n)
{
    struct repl_member *ms = arena_alloc(&c->arena, MAX_LIST * sizeof *ms);
    int k = repl_members(ms, MAX_LIST);
    Etcdserverpb__Member **out = arena_alloc(&c->arena, (size_t)(k + 1) * sizeof *out);
    for (int i = 0; i < k; i++) {
        Etcdserverpb__Member *m = arena_alloc(&c->arena, sizeof *m);
        etcdserverpb__member__init(m);
        m->id = ms[i].id;
        m->name = ms[i].name;
        m->islearner = ms[i].is_learner;
        char *urls[2][16];
        const char *src[2] = {ms[i].peer_urls, ms[i].client_urls};
        for (int j = 0; j < 2; j++) {
            char *copy = arena_alloc(&c->arena, strlen(src[j]) + 1);
            strcpy(copy, src[j]);
            size_t nu = copy[0] ? (size_t)config_split(copy, urls[j], 16) : 0;
            char **arr = arena_alloc(&c->arena, (nu + 1) * sizeof *arr);
            memcpy(arr, urls[j], nu * sizeof *arr);
            if (j == 0) {
                m->peerurls = arr;
                m->n_peerurls = nu;
            } else {
                m->clienturls = arr;
                m->n_clienturls = nu;
            }
        }
        out[i] = m;
    }
    *n = (size_t)k;
    return out;
}

static Etcdserverpb__Member *find(Etcdserverpb__Member **ms, size_t n,
                                  uint64_t id)
{
    for (size_t i = 0; i < n; i++)
        if (ms[i]->id == id)
            return ms[i];
    return NULL;
}

/* Add, Remove, Update and Promote answer the same shape: a header and the
 * members (Add also the new member). */
static void change_done(void *ud, int rc, uint64_t id)
{
    Etcdserverpb__MemberAddRequest *r = ((struct rpc_wait *)ud)->r;
    struct grpc_call *c = rpc_wait_take(ud);
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    if (c == NULL)
        return;
    if (rc != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    rpc_header(&h, 0); /* etcd's cluster server leaves the revision out */
    size_t n;
    Etcdserverpb__Member **ms = list(c, &n);
    if (strcmp(c->path, "/etcdserverpb.Cluster/MemberAdd") == 0) {
        Etcdserverpb__MemberAddResponse resp = ETCDSERVERPB__MEMBER_ADD_RESPONSE__INIT;
        Etcdserverpb__Member self = ETCDSERVERPB__MEMBER__INIT;
        Etcdserverpb__Member *m = find(ms, n, id);
        if (m == NULL) { /* applied, not yet in the table: as requested */
            self.id = id;
            self.peerurls = r->peerurls;
            self.n_peerurls = r->n_peerurls;
            self.islearner = r->islearner;
            m = &self;
        }
        resp.header = &h;
        resp.member = m;
        resp.members = ms;
        resp.n_members = n;
        grpc_send_pb(c, &resp);
    } else {
        /* MemberRemove/Update/Promote responses: header (1), members (2) */
        Etcdserverpb__MemberListResponse resp = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
        resp.header = &h;
        resp.members = ms;
        resp.n_members = n;
        grpc_send_pb(c, &resp);
    }
    grpc_finish(c, GRPC_OK, NULL);
}

/* peerURLs as one comma-separated string (repl's form), in the arena. */
static char *join_urls(struct grpc_call *c, char **urls, size_t n)
{
    size_t total = 1;
    for (size_t i = 0; i < n; i++)
        total += strlen(urls[i]) + 1;
    char *out = arena_alloc(&c->arena, total);
    out[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(out, ",");
        strcat(out, urls[i]);
    }
    return out;
}

void rpc_cluster_member_add(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__MemberAddRequest *r =
        etcdserverpb__member_add_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    char *urls = join_urls(c, r->peerurls, r->n_peerurls);
    struct rpc_wait *w = rpc_wait_new(c);
    w->r = r;
    repl_member_add(urls, r->islearner, change_done, w);
}

void rpc_cluster_member_remove(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__MemberRemoveRequest *r =
        etcdserverpb__member_remove_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    repl_member_remove(r->id, change_done, rpc_wait_new(c));
}

void rpc_cluster_member_update(struct grpc_call *c, const uint8_t *msg, size_t len)
{
    Etcdserverpb__MemberUpdateRequest *r =
        etcdserverpb__member_update_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    char *urls = join_urls(c, r->peerurls, r->n_peerurls);
    repl_member_update(r->id, urls, change_done, rpc_wait_new(c));
}

void rpc_cluster_member_promote(struct grpc_call *c, const uint8_t *msg,
                                size_t len)
{
    Etcdserverpb__MemberPromoteRequest *r =
        etcdserverpb__member_promote_request__unpack(&c->arena.pb, len, msg);
    int rc;
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    if ((rc = rpc_auth_admin(c)) != 0) {
        grpc_finish_err(c, rc);
        return;
    }
    repl_member_promote(r->id, change_done, rpc_wait_new(c));
}

static void list_send(struct grpc_call *c, void *rp)
{
    Etcdserverpb__MemberListResponse resp = ETCDSERVERPB__MEMBER_LIST_RESPONSE__INIT;
    Etcdserverpb__ResponseHeader h = ETCDSERVERPB__RESPONSE_HEADER__INIT;
    (void)rp;
    rpc_header(&h, 0); /* etcd leaves the revision out here */
    resp.header = &h;
    resp.members = list(c, &resp.n_members);
    grpc_send_pb(c, &resp);
    grpc_finish(c, GRPC_OK, NULL);
}

void rpc_cluster_member_list(struct grpc_call *c, const uint8_t *msg,
                             size_t len)
{
    Etcdserverpb__MemberListRequest *r =
        etcdserverpb__member_list_request__unpack(&c->arena.pb, len, msg);
    if (r == NULL) {
        rpc_bad_message(c);
        return;
    }
    /* 3.5's linearizable option: the list as of a read index */
    if (r->linearizable && !repl_is_learner())
        rpc_linearize(c, list_send, r);
    else
        list_send(c, r);
}
