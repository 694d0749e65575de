/* Membership: etcd's members on top of raft's configuration.
 *
 * The member records (name, peer and client URLs, learner) are state
 * machine data (APPLY_MEMBER_*, kept in the store), so every member agrees
 * on them. raft's configuration follows them: the leader reconciles it one
 * change at a time (a new member is added as a spare, becomes a standby,
 * which replicates without voting, and a voter once it is not a learner;
 * a removed member is taken out, the leader itself after handing over
 * leadership). So MemberAdd answers as soon as the record is committed,
 * as etcd's does, but a new voter only counts towards the quorum once
 * libraft has caught it up. Members of the initial cluster that have not
 * published yet are known by --initial-cluster. */
#include <ctype.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/err.h"
#include "core/log.h"
#include "core/mem.h"
#include "repl/repl_int.h"
#include "server/server.h"
#include "server/startup.h"

#define N repl__n
#define MAX_MEMBERS 64
/* A failed raft configuration change is tried again after this. */
#define CHANGE_RETRY_MS 1000

struct rec {
    uint64_t id;
    int removed;
    int has_record;
    int is_learner;
    char name[128];
    char peer_urls[1024];
    char client_urls[1024];
};

static struct rec recs[MAX_MEMBERS];
static int n_recs;

static struct rec *rec_find(uint64_t id)
{
    for (int i = 0; i < n_recs; i++)
        if (recs[i].id == id)
            return &recs[i];
    return NULL;
}

static struct rec *rec_get(uint64_t id)
{
    struct rec *r = rec_find(id);
    if (r == NULL && n_recs < MAX_MEMBERS) {
        r = &recs[n_recs++];
        memset(r, 0, sizeof *r);
        r->id = id;
    }
    return r;
}

static void join_urls(char *out, size_t n, char **urls, size_t count)
{
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < count && o < n; i++)
        o += (size_t)snprintf(out + o, n - o, "%s%s", i ? "," : "", urls[i]);
}

static int load_one(void *ud, uint64_t id, const uint8_t *rec, size_t len,
                    int removed)
{
    (void)ud;
    struct rec *r = rec_get(id);
    if (r == NULL)
        return 0;
    if (removed) {
        r->removed = 1;
        return 0;
    }
    Etcdserverpb__Member *m = etcdserverpb__member__unpack(NULL, len, rec);
    if (m == NULL)
        return 0;
    r->has_record = 1;
    r->is_learner = m->islearner;
    snprintf(r->name, sizeof r->name, "%s", m->name ? m->name : "");
    join_urls(r->peer_urls, sizeof r->peer_urls, m->peerurls, m->n_peerurls);
    join_urls(r->client_urls, sizeof r->client_urls, m->clienturls,
              m->n_clienturls);
    etcdserverpb__member__free_unpacked(m, NULL);
    return 0;
}

/* --initial-cluster: name=url,... grouped by name. */
static void load_initial(void)
{
    char *ic = cairn_strdup(N.s->cfg.initial_cluster), *ents[128];
    int n = config_split(ic, ents, 128);
    char *names[MAX_MEMBERS];
    char *urls[MAX_MEMBERS][CONFIG_MAX_URLS];
    int nurls[MAX_MEMBERS], nm = 0;
    for (int i = 0; i < n; i++) {
        char *eq = strchr(ents[i], '=');
        if (eq == NULL)
            continue;
        *eq = 0;
        int j;
        for (j = 0; j < nm; j++)
            if (strcmp(names[j], ents[i]) == 0)
                break;
        if (j == nm) {
            if (nm == MAX_MEMBERS)
                continue;
            names[nm] = ents[i];
            nurls[nm++] = 0;
        }
        if (nurls[j] < CONFIG_MAX_URLS)
            urls[j][nurls[j]++] = eq + 1;
    }
    for (int j = 0; j < nm; j++) {
        uint64_t id = server_member_id(urls[j], nurls[j],
                                       N.s->cfg.initial_cluster_token);
        struct rec *r = rec_get(id);
        if (r == NULL || r->has_record || r->removed)
            continue;
        snprintf(r->name, sizeof r->name, "%s", names[j]);
        /* sorted, as etcd lists them */
        join_urls(r->peer_urls, sizeof r->peer_urls, urls[j], (size_t)nurls[j]);
    }
    cairn_free(ic);
}

static int in_config(uint64_t id, int *role)
{
    const struct raft_configuration *c = &N.raft.configuration;
    if (!N.started)
        return 0;
    for (unsigned i = 0; i < c->n; i++)
        if (c->servers[i].id == id) {
            if (role)
                *role = c->servers[i].role;
            return 1;
        }
    return 0;
}

int repl__members_load(void)
{
    struct mvcc_txn t;
    int rc;
    n_recs = 0;
    if ((rc = mvcc_read_begin(N.s->mvcc, &t)) != 0)
        return rc;
    rc = mvcc_members(&t, load_one, NULL);
    mvcc_read_end(&t);
    if (rc != 0)
        return rc;
    load_initial();
    /* The table the rest of cairn sees: records and raft's configuration,
     * without removed members. */
    cairn_free(N.members);
    N.members = cairn_calloc(MAX_MEMBERS, sizeof *N.members);
    N.n_members = 0;
    for (int i = 0; i < n_recs; i++) {
        struct rec *r = &recs[i];
        int role = RAFT_VOTER;
        if (r->removed)
            continue;
        /* once raft runs, an initial member that is in neither the records
         * nor the configuration (e.g. a stale --initial-cluster) is not a
         * member */
        if (N.started && N.raft.configuration.n > 0 && !r->has_record &&
            !in_config(r->id, &role))
            continue;
        struct repl_member *m = &N.members[N.n_members++];
        m->id = r->id;
        snprintf(m->name, sizeof m->name, "%s", r->name);
        snprintf(m->peer_urls, sizeof m->peer_urls, "%s", r->peer_urls);
        snprintf(m->client_urls, sizeof m->client_urls, "%s", r->client_urls);
        m->is_learner = r->is_learner;
    }
    if (N.peer != NULL)
        for (int i = 0; i < N.n_members; i++)
            if (N.members[i].id != N.self && N.members[i].peer_urls[0])
                repl_peer_set_urls(N.peer, N.members[i].id,
                                   N.members[i].peer_urls);
    return 0;
}

void repl_members_changed(void)
{
    if (repl__members_load() != 0)
        log_error("raft: cannot reread the member records");
    struct rec *me = rec_find(N.self);
    if (me != NULL && me->removed && !N.stopping) {
        /* etcd stops a member that learns it was removed */
        log_warnw("the member has been permanently removed from the cluster",
                  LOG_UINT("local-member-id", N.self));
        server_stop("removed from the cluster");
    }
}

int repl_members(struct repl_member *out, int max)
{
    int n = N.n_members < max ? N.n_members : max;
    memcpy(out, N.members, (size_t)n * sizeof *out);
    return n;
}

int repl__member_removed(uint64_t id)
{
    struct rec *r = rec_find(id);
    return r != NULL && r->removed;
}

int repl__voters(void)
{
    const struct raft_configuration *c = &N.raft.configuration;
    int v = 0;
    for (unsigned i = 0; i < c->n; i++)
        v += c->servers[i].role == RAFT_VOTER;
    return v;
}

int repl_is_learner(void)
{
    int role = RAFT_VOTER;
    struct rec *r = rec_find(N.self);
    if (r != NULL && r->has_record)
        return r->is_learner;
    return in_config(N.self, &role) && role != RAFT_VOTER;
}

/* ---- proposals (any member) ---- */

struct member_req {
    repl_member_cb done;
    void *ud;
    uint64_t id;
};

static void member_done(struct apply_cmd *cmd)
{
    struct member_req *mr = cmd->ud;
    mr->done(mr->ud, cmd->rc, mr->id);
    cairn_free(mr);
    apply_cmd_free(cmd);
}

static void member_submit(int op, const Etcdserverpb__Member *m,
                          repl_member_cb done, void *ud)
{
    struct apply_cmd *cmd = cairn_calloc(1, sizeof *cmd);
    struct member_req *mr = cairn_calloc(1, sizeof *mr);
    mr->done = done;
    mr->ud = ud;
    mr->id = m->id;
    cmd->op = op;
    cmd->req_len = etcdserverpb__member__get_packed_size(m);
    cmd->req = cairn_malloc(cmd->req_len + 1);
    etcdserverpb__member__pack(m, cmd->req);
    cmd->done = member_done;
    cmd->ud = mr;
    repl_submit(cmd);
}

/* More URLs, or longer, than a member record here holds: refused rather
 * than cut (etcd sets no limit; none is near it in practice). */
static int urls_fit(const char *csv)
{
    int commas = 0;
    for (const char *p = csv; *p; p++)
        commas += *p == ',';
    return strlen(csv) < sizeof ((struct repl_member *)0)->peer_urls &&
           commas < CONFIG_MAX_URLS;
}

/* etcd's URL checks for peer URLs: scheme http(s), host:port, no path. */
static int urls_valid(char **u, size_t n)
{
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = u[i], *hp;
        if (strncmp(s, "http://", 7) == 0)
            hp = s + 7;
        else if (strncmp(s, "https://", 8) == 0)
            hp = s + 8;
        else
            return 0;
        const char *colon = strrchr(hp, ':');
        if (colon == NULL || colon == hp || colon[1] == 0)
            return 0;
        for (const char *p = colon + 1; *p; p++)
            if (!isdigit((unsigned char)*p))
                return 0;
        if (strchr(hp, '/') != NULL)
            return 0;
    }
    return 1;
}

static int cmpstr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* etcd's NewMember ID: sha1 over the sorted peer URLs, the cluster token
 * and the time (seconds) for members added at run time. */
static uint64_t new_member_id(char **urls, size_t n)
{
    char now[32];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    qsort(urls, n, sizeof *urls, cmpstr);
    EVP_DigestInit_ex(ctx, EVP_sha1(), NULL);
    for (size_t i = 0; i < n; i++)
        EVP_DigestUpdate(ctx, urls[i], strlen(urls[i]));
    EVP_DigestUpdate(ctx, N.s->cfg.initial_cluster_token,
                     strlen(N.s->cfg.initial_cluster_token));
    snprintf(now, sizeof now, "%lld", (long long)time(NULL));
    EVP_DigestUpdate(ctx, now, strlen(now));
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    uint64_t id = 0;
    for (int i = 0; i < 8; i++)
        id = id << 8 | md[i];
    return id;
}

static int peer_url_taken(char **urls, size_t n, uint64_t except)
{
    for (int i = 0; i < N.n_members; i++) {
        if (N.members[i].id == except)
            continue;
        char *copy = cairn_strdup(N.members[i].peer_urls), *mine[CONFIG_MAX_URLS];
        int k = config_split(copy, mine, CONFIG_MAX_URLS), hit = 0;
        for (int a = 0; a < k && !hit; a++)
            for (size_t b = 0; b < n; b++)
                if (strcmp(mine[a], urls[b]) == 0)
                    hit = 1;
        cairn_free(copy);
        if (hit)
            return 1;
    }
    return 0;
}

static const struct repl_member *member_find(uint64_t id)
{
    for (int i = 0; i < N.n_members; i++)
        if (N.members[i].id == id)
            return &N.members[i];
    return NULL;
}

/* etcd's --strict-reconfig-check (IsReadyToAddVotingMember and
 * IsReadyToRemoveVotingMember): a change must leave enough started voters
 * for a quorum; started = published its attributes (a name and client
 * URLs), as etcd counts them. */
static int started_voters(uint64_t except)
{
    int n = 0;
    for (int i = 0; i < N.n_members; i++) {
        const struct repl_member *m = &N.members[i];
        if (m->is_learner || m->id == except)
            continue;
        if (m->id == N.self || m->client_urls[0] != 0)
            n++;
    }
    return n;
}

static int voters_listed(void)
{
    int n = 0;
    for (int i = 0; i < N.n_members; i++)
        n += !N.members[i].is_learner;
    return n;
}

void repl_member_add(const char *peer_urls, int is_learner, repl_member_cb done,
                     void *ud)
{
    char *copy = cairn_strdup(peer_urls), *urls[CONFIG_MAX_URLS];
    int n = config_split(copy, urls, CONFIG_MAX_URLS);
    int rc = 0;
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    if (!urls_fit(peer_urls) || !urls_valid(urls, (size_t)n)) {
        rc = CAIRN_EMEMBERBADURLS;
        goto out;
    }
    if (peer_url_taken(urls, (size_t)n, 0)) {
        rc = CAIRN_EPEERURLEXIST;
        goto out;
    }
    if (is_learner) {
        int learners = 0;
        for (int i = 0; i < N.n_members; i++)
            learners += N.members[i].is_learner;
        if (learners >= 1) { /* etcd's maxLearners */
            rc = CAIRN_ETOOMANYLEARNERS;
            goto out;
        }
    } else if (N.s->cfg.strict_reconfig_check &&
               started_voters(0) < (voters_listed() + 1) / 2 + 1) {
        rc = CAIRN_EMEMBERNOTENOUGHSTARTED;
        goto out;
    }
    m.id = new_member_id(urls, (size_t)n);
    if (member_find(m.id) != NULL) {
        rc = CAIRN_EMEMBEREXIST;
        goto out;
    }
    m.peerurls = urls;
    m.n_peerurls = (size_t)n;
    m.islearner = is_learner;
    member_submit(APPLY_MEMBER_ADD, &m, done, ud);
    cairn_free(copy);
    return;
out:
    cairn_free(copy);
    done(ud, rc, 0);
}

void repl_member_remove(uint64_t id, repl_member_cb done, void *ud)
{
    const struct repl_member *mm = member_find(id);
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    if (mm == NULL) {
        done(ud, CAIRN_EMEMBERNOTFOUND, id);
        return;
    }
    if (!mm->is_learner && N.s->cfg.strict_reconfig_check &&
        started_voters(id) < (voters_listed() - 1) / 2 + 1) {
        done(ud, CAIRN_EMEMBERNOTENOUGHSTARTED, id);
        return;
    }
    m.id = id;
    member_submit(APPLY_MEMBER_REMOVE, &m, done, ud);
}

void repl_member_update(uint64_t id, const char *peer_urls,
                        repl_member_cb done, void *ud)
{
    char *copy = cairn_strdup(peer_urls), *urls[CONFIG_MAX_URLS];
    int n = config_split(copy, urls, CONFIG_MAX_URLS);
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    int rc = 0;
    if (!urls_fit(peer_urls) || !urls_valid(urls, (size_t)n))
        rc = CAIRN_EMEMBERBADURLS;
    else if (member_find(id) == NULL)
        rc = CAIRN_EMEMBERNOTFOUND;
    else if (peer_url_taken(urls, (size_t)n, id))
        rc = CAIRN_EPEERURLEXIST;
    if (rc != 0) {
        cairn_free(copy);
        done(ud, rc, id);
        return;
    }
    m.id = id;
    m.peerurls = urls;
    m.n_peerurls = (size_t)n;
    member_submit(APPLY_MEMBER_UPDATE, &m, done, ud);
    cairn_free(copy);
}

void repl_member_promote(uint64_t id, repl_member_cb done, void *ud)
{
    const struct repl_member *mm = member_find(id);
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    if (mm == NULL) {
        done(ud, CAIRN_EMEMBERNOTFOUND, id);
        return;
    }
    if (!mm->is_learner) {
        done(ud, CAIRN_EMEMBERNOTLEARNER, id);
        return;
    }
    m.id = id;
    member_submit(APPLY_MEMBER_PROMOTE, &m, done, ud);
}

/* etcd's isLearnerReady: the learner's match index is at least 90% of the
 * leader's. */
static int learner_ready(uint64_t id)
{
    const struct raft_configuration *c = &N.raft.configuration;
    if (N.raft.state != RAFT_LEADER)
        return 0;
    for (unsigned i = 0; i < c->n; i++) {
        if (c->servers[i].id != id)
            continue;
        if (c->servers[i].role == RAFT_SPARE)
            return 0;
        raft_index match = N.raft.leader_state.progress[i].match_index;
        raft_index mine = raft_last_index(&N.raft);
        return (double)match >= (double)mine * 0.9;
    }
    return 0;
}

int repl__check_proposal(int op, const uint8_t *entry, size_t entry_len)
{
    uint8_t *req;
    size_t len;
    if (op != APPLY_MEMBER_PROMOTE)
        return 0;
    if (repl_entry_request(entry, entry_len, mvcc_ring(N.s->mvcc), &req, &len) != 0)
        return CAIRN_EBADMSG;
    Etcdserverpb__Member *m = etcdserverpb__member__unpack(NULL, len, req);
    cairn_free(req);
    if (m == NULL)
        return CAIRN_EBADMSG;
    int ready = learner_ready(m->id);
    etcdserverpb__member__free_unpacked(m, NULL);
    return ready ? 0 : CAIRN_ELEARNERNOTREADY;
}

/* ---- publishing ourselves (etcd's publish) ---- */

static void publish_done(void *ud, int rc, uint64_t id)
{
    (void)ud;
    (void)id;
    if (rc == 0) {
        N.published = 2;
        startup_published();
    } else {
        N.published = 0; /* tried again on a later tick */
    }
}

void repl__members_publish(void)
{
    if (N.published)
        return;
    struct rec *r = rec_find(N.self);
    char cu[1024];
    join_urls(cu, sizeof cu, N.s->client_urls, (size_t)N.s->n_client_urls);
    if (r != NULL && r->has_record && strcmp(r->name, N.s->cfg.name) == 0 &&
        strcmp(r->client_urls, cu) == 0) {
        N.published = 2;
        startup_published();
        return;
    }
    if (r != NULL && r->removed)
        return;
    Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
    m.id = N.self;
    m.name = (char *)N.s->cfg.name;
    m.clienturls = N.s->client_urls;
    m.n_clienturls = (size_t)N.s->n_client_urls;
    m.peerurls = N.s->peer_urls;
    m.n_peerurls = (size_t)N.s->n_peer_urls;
    N.published = 1;
    member_submit(APPLY_MEMBER_PUBLISH, &m, publish_done, NULL);
}

/* ---- the leader keeps raft's configuration in line with the records ---- */

static void change_done(struct raft_change *req, int status)
{
    (void)req;
    N.change_inflight = 0;
    if (status != 0) {
        log_warnw("raft: configuration change failed; trying again",
                  LOG_STR("error", raft_strerror(status)));
        N.change_retry_at = repl__now_ms() + CHANGE_RETRY_MS;
    }
    repl__members_load();
}

static void transfer_done(struct raft_transfer *req)
{
    (void)req;
    N.change_inflight = 0;
    N.change_retry_at = repl__now_ms() + CHANGE_RETRY_MS;
}

static int start_change(int rv, const char *what, uint64_t id)
{
    if (rv != 0) {
        log_warnw("raft: cannot change the configuration",
                  LOG_STR("change", what), LOG_UINT("member", id),
                  LOG_STR("error", raft_strerror(rv)));
        N.change_retry_at = repl__now_ms() + CHANGE_RETRY_MS;
        return 1;
    }
    log_infow("raft: changing the configuration", LOG_STR("change", what),
              LOG_UINT("member", id));
    N.change_inflight = 1;
    return 1;
}

void repl__members_reconcile(void)
{
    const struct raft_configuration *c = &N.raft.configuration;
    if (N.change_inflight || repl__now_ms() < N.change_retry_at)
        return;
    /* only on a committed configuration (libraft allows one change) */
    if (N.raft.configuration_uncommitted_index != 0)
        return;
    for (unsigned i = 0; i < c->n; i++) {
        const struct raft_server *sv = &c->servers[i];
        struct rec *r = rec_find(sv->id);
        if (r == NULL || !r->removed)
            continue;
        N.change.data = NULL;
        if (sv->id == N.self) {
            /* hand leadership over first; the next leader removes us */
            start_change(raft_transfer(&N.raft, &N.transfer, 0, transfer_done),
                         "transfer-before-remove", sv->id);
            return;
        }
        start_change(raft_remove(&N.raft, &N.change, sv->id, change_done),
                     "remove", sv->id);
        return;
    }
    for (unsigned i = 0; i < c->n; i++) {
        const struct raft_server *sv = &c->servers[i];
        struct rec *r = rec_find(sv->id);
        if (sv->role == RAFT_SPARE) {
            start_change(raft_assign(&N.raft, &N.change, sv->id, RAFT_STANDBY,
                                     change_done),
                         "learner", sv->id);
            return;
        }
        if (sv->role == RAFT_STANDBY && r != NULL && r->has_record &&
            !r->is_learner) {
            start_change(raft_assign(&N.raft, &N.change, sv->id, RAFT_VOTER,
                                     change_done),
                         "voter", sv->id);
            return;
        }
    }
    for (int i = 0; i < n_recs; i++) {
        struct rec *r = &recs[i];
        if (r->removed || !r->has_record || in_config(r->id, NULL))
            continue;
        char addr[32];
        snprintf(addr, sizeof addr, "%016" PRIx64, r->id);
        start_change(raft_add(&N.raft, &N.change, r->id, addr, change_done),
                     "add", r->id);
        return;
    }
}

/* ---- leader transfer (MoveLeader) ---- */

struct xfer {
    struct raft_transfer req;
    repl_member_cb done;
    void *ud;
    uint64_t target;
};

static void xfer_done(struct raft_transfer *req)
{
    struct xfer *x = req->data;
    raft_id lid = 0;
    const char *addr = NULL;
    raft_leader(&N.raft, &lid, &addr);
    x->done(x->ud, lid == x->target ? 0 : CAIRN_ETIMEOUT, x->target);
    cairn_free(x);
}

void repl_transfer(uint64_t target, repl_member_cb done, void *ud)
{
    int role = -1;
    if (N.raft.state != RAFT_LEADER) {
        done(ud, CAIRN_ENOTLEADER, target);
        return;
    }
    if (target == N.self) {
        done(ud, 0, target);
        return;
    }
    if (!in_config(target, &role) || role != RAFT_VOTER) {
        done(ud, CAIRN_EBADTRANSFEREE, target);
        return;
    }
    struct xfer *x = cairn_calloc(1, sizeof *x);
    x->req.data = x;
    x->done = done;
    x->ud = ud;
    x->target = target;
    int rv = raft_transfer(&N.raft, &x->req, target, xfer_done);
    if (rv != 0) {
        cairn_free(x);
        done(ud, rv == RAFT_NOTLEADER ? CAIRN_ENOTLEADER : CAIRN_EBADTRANSFEREE,
             target);
    }
}

/* ---- --force-new-cluster ---- */

static void forced_done(void *ud, int rc, uint64_t id)
{
    (void)ud;
    if (rc != 0 && rc != CAIRN_EMEMBERNOTFOUND)
        N.force_pending = 1; /* tried again on a later tick */
    else
        log_infow("removed member (--force-new-cluster)", LOG_UINT("member", id));
}

void repl__members_force_alone(void)
{
    N.force_pending = 0;
    for (int i = 0; i < N.n_members; i++) {
        if (N.members[i].id == N.self)
            continue;
        Etcdserverpb__Member m = ETCDSERVERPB__MEMBER__INIT;
        m.id = N.members[i].id;
        member_submit(APPLY_MEMBER_REMOVE, &m, forced_done, NULL);
    }
}
