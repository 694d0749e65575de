/* The peer wire format (see peer_int.h). Decoding never trusts a length:
 * each read goes through a cursor that knows how much of the body is left,
 * so a malformed or truncated body from the network ends as -EPROTO and
 * never as an over-read. */
#include "repl/peer_int.h"

#include <errno.h>
#include <string.h>

#include "core/mem.h"

/* ---- little-endian writers and a bounded reader ---- */

static uint8_t *put8(uint8_t *p, uint8_t v)
{
    *p = v;
    return p + 1;
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

struct cur {
    const uint8_t *p;
    size_t left;
    int bad; /* a read went past the end: every later read yields 0 */
};

static const uint8_t *take(struct cur *c, size_t n)
{
    if (c->bad || c->left < n) {
        c->bad = 1;
        return NULL;
    }
    const uint8_t *r = c->p;
    c->p += n;
    c->left -= n;
    return r;
}

static uint64_t get(struct cur *c, size_t n)
{
    const uint8_t *p = take(c, n);
    uint64_t v = 0;
    for (size_t i = 0; p != NULL && i < n; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

#define get8(c) ((uint8_t)get((c), 1))
#define get16(c) ((uint16_t)get((c), 2))
#define get32(c) ((uint32_t)get((c), 4))
#define get64(c) get((c), 8)

/* ---- hello and frame header ---- */

void peer__hello_encode(uint8_t *out, uint64_t cluster_id, uint64_t from,
                        uint64_t to, size_t addr_len)
{
    memcpy(out, PEER_MAGIC, 4);
    uint8_t *p = put16(out + 4, PEER_VERSION);
    p = put16(p, (uint16_t)addr_len);
    p = put64(p, cluster_id);
    p = put64(p, from);
    put64(p, to);
}

long peer__hello_decode(const uint8_t *p, size_t n, struct peer_hello *h)
{
    /* The magic is checked as soon as it is there, so a stray client is
     * refused on its first bytes. */
    if (memcmp(p, PEER_MAGIC, n < 4 ? n : 4) != 0)
        return -EPROTO;
    if (n < PEER_HELLO_LEN)
        return 0;
    struct cur c = {p + 4, n - 4, 0};
    uint16_t version = get16(&c);
    size_t alen = get16(&c);
    if (version != PEER_VERSION || alen > PEER_ADDR_MAX)
        return -EPROTO;
    h->cluster_id = get64(&c);
    h->from = get64(&c);
    h->to = get64(&c);
    if (n < PEER_HELLO_LEN + alen)
        return 0;
    h->addr = (const char *)p + PEER_HELLO_LEN;
    h->addr_len = alen;
    if (memchr(h->addr, 0, alen) != NULL)
        return -EPROTO;
    return (long)(PEER_HELLO_LEN + alen);
}

void peer__frame_header(uint8_t *out, size_t body_len, unsigned kind,
                        unsigned flags)
{
    uint8_t *p = put32(out, (uint32_t)body_len);
    p = put8(p, (uint8_t)kind);
    p = put8(p, (uint8_t)flags);
    put16(p, 0);
}

/* ---- encoding ---- */

#define RV_LEN (4 * 8 + 1)
#define RVR_LEN (8 + 2)
#define AE_FIXED (4 * 8 + 4)
#define AE_ENTRY (8 + 1 + 4)
#define AER_LEN (3 * 8)
#define IS_FIXED (4 * 8 + 4)
#define IS_SERVER (8 + 1 + 2)
#define TN_LEN (3 * 8)

/* Bytes of the header part (fixed fields, entry headers, configuration)
 * and of the data that follows it, or a negative errno. */
static int sizes(const struct raft_message *m, size_t *fixed, uint64_t *data)
{
    *data = 0;
    switch (m->type) {
    case RAFT_IO_REQUEST_VOTE:
        *fixed = RV_LEN;
        return 0;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        *fixed = RVR_LEN;
        return 0;
    case RAFT_IO_APPEND_ENTRIES: {
        const struct raft_append_entries *a = &m->append_entries;
        if (a->n_entries > PEER_FRAME_MAX / AE_ENTRY)
            return -EMSGSIZE;
        for (unsigned i = 0; i < a->n_entries; i++) {
            unsigned short t = a->entries[i].type;
            if (t != RAFT_COMMAND && t != RAFT_BARRIER && t != RAFT_CHANGE)
                return -EINVAL;
            if (a->entries[i].buf.len > PEER_DATA_MAX)
                return -EMSGSIZE;
            *data += a->entries[i].buf.len;
        }
        *fixed = AE_FIXED + (size_t)a->n_entries * AE_ENTRY;
        return 0;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        *fixed = AER_LEN;
        return 0;
    case RAFT_IO_INSTALL_SNAPSHOT: {
        const struct raft_install_snapshot *s = &m->install_snapshot;
        size_t n = IS_FIXED + 8;
        if (s->conf.n > PEER_FRAME_MAX / IS_SERVER)
            return -EMSGSIZE;
        for (unsigned i = 0; i < s->conf.n; i++) {
            const struct raft_server *sv = &s->conf.servers[i];
            size_t al = sv->address ? strlen(sv->address) : 0;
            if (al > PEER_ADDR_MAX || sv->role < 0 || sv->role > 2)
                return -EINVAL;
            n += IS_SERVER + al;
        }
        *fixed = n;
        *data = s->data.len;
        return 0;
    }
    case RAFT_IO_TIMEOUT_NOW:
        *fixed = TN_LEN;
        return 0;
    }
    return -EINVAL;
}

static uint8_t *enc_install(uint8_t *p, const struct raft_install_snapshot *s)
{
    p = put64(p, s->term);
    p = put64(p, s->last_index);
    p = put64(p, s->last_term);
    p = put64(p, s->conf_index);
    p = put32(p, s->conf.n);
    for (unsigned i = 0; i < s->conf.n; i++) {
        const struct raft_server *sv = &s->conf.servers[i];
        size_t al = sv->address ? strlen(sv->address) : 0;
        p = put64(p, sv->id);
        p = put8(p, (uint8_t)sv->role);
        p = put16(p, (uint16_t)al);
        if (al > 0)
            memcpy(p, sv->address, al);
        p += al;
    }
    return put64(p, s->data.len);
}

static void enc_body(uint8_t *p, const struct raft_message *m)
{
    switch (m->type) {
    case RAFT_IO_REQUEST_VOTE: {
        const struct raft_request_vote *v = &m->request_vote;
        p = put64(p, v->term);
        p = put64(p, v->candidate_id);
        p = put64(p, v->last_log_index);
        p = put64(p, v->last_log_term);
        put8(p, (uint8_t)((v->disrupt_leader ? 1 : 0) | (v->pre_vote ? 2 : 0)));
        break;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT: {
        const struct raft_request_vote_result *r = &m->request_vote_result;
        p = put64(p, r->term);
        p = put8(p, r->vote_granted ? 1 : 0);
        put8(p, (uint8_t)r->pre_vote);
        break;
    }
    case RAFT_IO_APPEND_ENTRIES: {
        const struct raft_append_entries *a = &m->append_entries;
        p = put64(p, a->term);
        p = put64(p, a->prev_log_index);
        p = put64(p, a->prev_log_term);
        p = put64(p, a->leader_commit);
        p = put32(p, a->n_entries);
        for (unsigned i = 0; i < a->n_entries; i++) {
            p = put64(p, a->entries[i].term);
            p = put8(p, (uint8_t)a->entries[i].type);
            p = put32(p, (uint32_t)a->entries[i].buf.len);
        }
        break;
    }
    case RAFT_IO_APPEND_ENTRIES_RESULT: {
        const struct raft_append_entries_result *r = &m->append_entries_result;
        p = put64(p, r->term);
        p = put64(p, r->rejected);
        put64(p, r->last_log_index);
        break;
    }
    case RAFT_IO_INSTALL_SNAPSHOT:
        enc_install(p, &m->install_snapshot);
        break;
    case RAFT_IO_TIMEOUT_NOW: {
        const struct raft_timeout_now *t = &m->timeout_now;
        p = put64(p, t->term);
        p = put64(p, t->last_log_index);
        put64(p, t->last_log_term);
        break;
    }
    }
}

int peer__encode_raft(const struct raft_message *m, unsigned flags,
                      uint8_t **hdr, size_t *hdr_len, size_t *frame_len)
{
    size_t fixed;
    uint64_t data;
    int rc = sizes(m, &fixed, &data);
    if (rc != 0)
        return rc;
    if (data > PEER_DATA_MAX || fixed + data > PEER_FRAME_MAX)
        return -EMSGSIZE;
    uint8_t *h = cairn_malloc(PEER_FRAME_HDR + fixed);
    peer__frame_header(h, fixed + (size_t)data, m->type, flags);
    enc_body(h + PEER_FRAME_HDR, m);
    *hdr = h;
    *hdr_len = PEER_FRAME_HDR + fixed;
    *frame_len = PEER_FRAME_HDR + fixed + (size_t)data;
    return 0;
}

unsigned peer__raft_bufs(const struct raft_message *m, const void **base,
                         size_t *len)
{
    unsigned n = 0;
    if (m->type == RAFT_IO_APPEND_ENTRIES) {
        for (unsigned i = 0; i < m->append_entries.n_entries; i++) {
            const struct raft_buffer *b = &m->append_entries.entries[i].buf;
            if (b->len == 0)
                continue;
            if (base != NULL) {
                base[n] = b->base;
                len[n] = b->len;
            }
            n++;
        }
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT &&
               m->install_snapshot.data.len > 0) {
        if (base != NULL) {
            base[0] = m->install_snapshot.data.base;
            len[0] = m->install_snapshot.data.len;
        }
        n = 1;
    }
    return n;
}

/* ---- decoding ---- */

static int dec_append(struct cur *c, struct raft_append_entries *a)
{
    a->term = get64(c);
    a->prev_log_index = get64(c);
    a->prev_log_term = get64(c);
    a->leader_commit = get64(c);
    uint32_t n = get32(c);
    /* Every entry header must fit in what is left before anything is
     * allocated for them. */
    if (c->bad || n > c->left / AE_ENTRY)
        return -EPROTO;
    a->n_entries = n;
    a->entries = NULL;
    if (n == 0)
        return c->left == 0 ? 0 : -EPROTO;
    struct cur hdrs = *c;
    uint64_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        get64(&hdrs);
        uint8_t t = get8(&hdrs);
        total += get32(&hdrs);
        if (t != RAFT_COMMAND && t != RAFT_BARRIER && t != RAFT_CHANGE)
            return -EPROTO;
    }
    if (total != hdrs.left)
        return -EPROTO;
    struct raft_entry *e = raft_malloc(n * sizeof *e);
    /* One batch for all the data, as libraft's own backend receives it;
     * never empty, since libraft frees entry.batch of every entry. */
    uint8_t *batch = raft_malloc(total > 0 ? (size_t)total : 1);
    if (e == NULL || batch == NULL) {
        raft_free(e);
        raft_free(batch);
        return -ENOMEM;
    }
    const uint8_t *data = take(&hdrs, (size_t)total);
    if (total > 0)
        memcpy(batch, data, (size_t)total);
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        e[i].term = get64(c);
        e[i].type = get8(c);
        e[i].buf.len = get32(c);
        e[i].buf.base = e[i].buf.len > 0 ? batch + off : NULL;
        e[i].batch = batch;
        off += e[i].buf.len;
    }
    a->entries = e;
    return 0;
}

static int dec_install(struct cur *c, struct raft_install_snapshot *s)
{
    char addr[PEER_ADDR_MAX + 1];
    s->term = get64(c);
    s->last_index = get64(c);
    s->last_term = get64(c);
    s->conf_index = get64(c);
    uint32_t n = get32(c);
    raft_configuration_init(&s->conf);
    s->data.base = NULL;
    s->data.len = 0;
    if (c->bad || n > c->left / IS_SERVER)
        return -EPROTO;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t id = get64(c);
        uint8_t role = get8(c);
        uint16_t al = get16(c);
        const uint8_t *a = al <= PEER_ADDR_MAX ? take(c, al) : NULL;
        if (a == NULL || role > 2 || memchr(a, 0, al) != NULL)
            goto err_close_conf;
        memcpy(addr, a, al);
        addr[al] = 0;
        /* Refuses id 0 and duplicates, as a corrupt configuration. */
        if (raft_configuration_add(&s->conf, id, addr, role) != 0)
            goto err_close_conf;
    }
    uint64_t dl = get64(c);
    if (c->bad || dl != c->left)
        goto err_close_conf;
    s->data.len = (size_t)dl;
    s->data.base = raft_malloc(dl > 0 ? (size_t)dl : 1);
    if (s->data.base == NULL) {
        raft_configuration_close(&s->conf);
        return -ENOMEM;
    }
    if (dl > 0)
        memcpy(s->data.base, take(c, (size_t)dl), (size_t)dl);
    return 0;
err_close_conf:
    raft_configuration_close(&s->conf);
    return -EPROTO;
}

static int fixed_len(unsigned kind)
{
    switch (kind) {
    case RAFT_IO_REQUEST_VOTE:
        return RV_LEN;
    case RAFT_IO_REQUEST_VOTE_RESULT:
        return RVR_LEN;
    case RAFT_IO_APPEND_ENTRIES_RESULT:
        return AER_LEN;
    case RAFT_IO_TIMEOUT_NOW:
        return TN_LEN;
    }
    return -1;
}

int peer__decode_raft(unsigned kind, const uint8_t *body, size_t len,
                      struct raft_message *m)
{
    struct cur c = {body, len, 0};
    int fl = fixed_len(kind);
    memset(m, 0, sizeof *m);
    m->type = (unsigned short)kind;
    if (fl >= 0 && len != (size_t)fl)
        return -EPROTO;
    switch (kind) {
    case RAFT_IO_REQUEST_VOTE: {
        struct raft_request_vote *v = &m->request_vote;
        v->term = get64(&c);
        v->candidate_id = get64(&c);
        v->last_log_index = get64(&c);
        v->last_log_term = get64(&c);
        uint8_t bits = get8(&c);
        if (bits & ~3u)
            return -EPROTO;
        v->disrupt_leader = bits & 1;
        v->pre_vote = (bits & 2) != 0;
        return 0;
    }
    case RAFT_IO_REQUEST_VOTE_RESULT: {
        struct raft_request_vote_result *r = &m->request_vote_result;
        r->term = get64(&c);
        uint8_t g = get8(&c), pv = get8(&c);
        if (g > 1 || pv > raft_tribool_false)
            return -EPROTO;
        r->vote_granted = g;
        r->pre_vote = (raft_tribool)pv;
        return 0;
    }
    case RAFT_IO_APPEND_ENTRIES:
        return dec_append(&c, &m->append_entries);
    case RAFT_IO_APPEND_ENTRIES_RESULT: {
        struct raft_append_entries_result *r = &m->append_entries_result;
        r->term = get64(&c);
        r->rejected = get64(&c);
        r->last_log_index = get64(&c);
        return 0;
    }
    case RAFT_IO_INSTALL_SNAPSHOT:
        return dec_install(&c, &m->install_snapshot);
    case RAFT_IO_TIMEOUT_NOW: {
        struct raft_timeout_now *t = &m->timeout_now;
        t->term = get64(&c);
        t->last_log_index = get64(&c);
        t->last_log_term = get64(&c);
        return 0;
    }
    }
    return -EPROTO;
}

void peer__raft_free(struct raft_message *m)
{
    if (m->type == RAFT_IO_APPEND_ENTRIES && m->append_entries.entries != NULL) {
        raft_free(m->append_entries.entries[0].batch);
        raft_free(m->append_entries.entries);
        m->append_entries.entries = NULL;
        m->append_entries.n_entries = 0;
    } else if (m->type == RAFT_IO_INSTALL_SNAPSHOT) {
        raft_configuration_close(&m->install_snapshot.conf);
        raft_free(m->install_snapshot.data.base);
        m->install_snapshot.data.base = NULL;
    }
}
