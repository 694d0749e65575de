/* HTTP/1.1 on the client port: /health, /version and friends (rpc_http)
 * and etcd's JSON gateway (gw_request). Keep-alive and pipelining as Go's
 * net/http: requests are taken one at a time in order; bodies by
 * Content-Length or chunked; answers whole or chunked, with output flow
 * control. Reading goes on while an answer streams, so body data and
 * EOF are seen (EOF or a reset aborts the exchange's work). */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/mem.h"
#include "net/net_int.h"

#define HTTP1_MAX_HEAD 16384
#define HTTP1_MAX_HEADERS 100
/* Pipelined bytes buffered behind an unfinished answer before reading
 * pauses. */
#define HTTP1_MAX_AHEAD (HTTP1_MAX_HEAD + 65536)

#define CORS                                                          \
    "Access-Control-Allow-Headers: accept, content-type, authorization\r\n" \
    "Access-Control-Allow-Methods: POST, GET, OPTIONS, PUT, DELETE\r\n" \
    "Access-Control-Allow-Origin: *\r\n"

enum body_state { B_NONE, B_LENGTH, CH_SIZE, CH_DATA, CH_DATA_CRLF, CH_TRAILER };

struct http_exchange {
    struct conn *conn;
    char *head;            /* the request head, NUL-split in place */
    const char *method, *target;
    const char *hname[HTTP1_MAX_HEADERS], *hval[HTTP1_MAX_HEADERS];
    int nhdr;
    int minor;             /* HTTP/1.<minor> */
    int keep_alive;
    enum body_state bs;
    uint64_t remaining;    /* Content-Length left, or of the current chunk */
    int body_done, body_end_told;
    const struct http_handler *h;
    void *ud;
    struct grpc_call *call;
    int resp_started, resp_chunked, resp_done, head_only, no_cors;
};

static const char *reason(int status)
{
    switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 412: return "Precondition Failed";
    case 413: return "Request Entity Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "Error";
    }
}

/* ---- the exchange API ---- */

void http_set_handler(struct http_exchange *x, const struct http_handler *h,
                      void *ud)
{
    x->h = h;
    x->ud = ud;
}

const char *http_method(const struct http_exchange *x)
{
    return x->method;
}

const char *http_target(const struct http_exchange *x)
{
    return x->target;
}

const char *http_header(const struct http_exchange *x, const char *name)
{
    for (int i = 0; i < x->nhdr; i++)
        if (strcasecmp(x->hname[i], name) == 0)
            return x->hval[i];
    return NULL;
}

int http_header_at(const struct http_exchange *x, int i, const char **name,
                   const char **value)
{
    if (i < 0 || i >= x->nhdr)
        return 0;
    *name = x->hname[i];
    *value = x->hval[i];
    return 1;
}

int http_is_tls(const struct http_exchange *x)
{
    return x->conn->ssl != NULL;
}

const char *http_peer_cn(const struct http_exchange *x)
{
    return x->conn->peer_cn;
}

void http_close_after(struct http_exchange *x)
{
    x->keep_alive = 0;
}

void http_omit_cors(struct http_exchange *x)
{
    x->no_cors = 1;
}

void http_set_call(struct http_exchange *x, struct grpc_call *c)
{
    x->call = c;
}

size_t http_unsent(const struct http_exchange *x)
{
    return x->conn->write_pending; /* batches are submitted at once */
}

static void process(struct conn *c);

static void put_head(struct http_exchange *x, int status, const char *ctype,
                     const char *extra, const char *framing)
{
    char line[160];
    struct conn *c = x->conn;
    int n = snprintf(line, sizeof line, "HTTP/1.%d %d %s\r\n",
                     x->minor ? 1 : 0, status, reason(status));
    net__out_append(c, (const uint8_t *)line, (size_t)n);
    if (!c->opts->metrics_only && !x->no_cors)
        net__out_append(c, (const uint8_t *)CORS, sizeof CORS - 1);
    if (ctype != NULL) {
        n = snprintf(line, sizeof line, "Content-Type: %s\r\n", ctype);
        net__out_append(c, (const uint8_t *)line, (size_t)n);
    }
    if (extra != NULL)
        net__out_append(c, (const uint8_t *)extra, strlen(extra));
    net__out_append(c, (const uint8_t *)framing, strlen(framing));
    if (!x->keep_alive && x->minor == 1)
        net__out_append(c, (const uint8_t *)"Connection: close\r\n", 19);
    else if (x->minor == 0)
        net__out_append(c, (const uint8_t *)"Connection: keep-alive\r\n", 24);
    net__out_append(c, (const uint8_t *)"\r\n", 2);
    x->resp_started = 1;
}

/* The answer is complete: the handler lets go; the loop moves on. */
static void answer_done(struct http_exchange *x)
{
    x->resp_done = 1;
    x->h = NULL;
    x->call = NULL;
    net__out_submit(x->conn);
    if (!x->conn->http_busy)
        process(x->conn);
}

void http_respond(struct http_exchange *x, int status, const char *ctype,
                  const char *extra, const void *body, size_t len)
{
    char framing[64];
    if (x->resp_started || x->conn->closing)
        return;
    snprintf(framing, sizeof framing, "Content-Length: %zu\r\n", len);
    put_head(x, status, ctype, extra, framing);
    if (!x->head_only)
        net__out_append(x->conn, body, len);
    answer_done(x);
}

void http_stream_start(struct http_exchange *x, int status, const char *ctype,
                       const char *extra)
{
    if (x->resp_started || x->conn->closing)
        return;
    /* HTTP/1.0 has no chunked framing: the body ends with the connection. */
    x->resp_chunked = x->minor > 0;
    if (!x->resp_chunked)
        x->keep_alive = 0;
    put_head(x, status, ctype, extra,
             x->resp_chunked ? "Transfer-Encoding: chunked\r\n" : "");
    net__out_submit(x->conn);
}

void http_stream_write(struct http_exchange *x, const void *p, size_t n)
{
    char size[24];
    if (!x->resp_started || x->resp_done || n == 0 || x->head_only)
        return;
    if (x->resp_chunked) {
        int k = snprintf(size, sizeof size, "%zx\r\n", n);
        net__out_append(x->conn, (const uint8_t *)size, (size_t)k);
    }
    net__out_append(x->conn, p, n);
    if (x->resp_chunked)
        net__out_append(x->conn, (const uint8_t *)"\r\n", 2);
    net__out_submit(x->conn);
}

void http_stream_end_trailers(struct http_exchange *x, const char *trailers)
{
    if (!x->resp_started || x->resp_done)
        return;
    if (x->resp_chunked && !x->head_only) {
        net__out_append(x->conn, (const uint8_t *)"0\r\n", 3);
        if (trailers != NULL)
            net__out_append(x->conn, (const uint8_t *)trailers, strlen(trailers));
        net__out_append(x->conn, (const uint8_t *)"\r\n", 2);
    }
    answer_done(x);
}

void http_stream_end(struct http_exchange *x)
{
    http_stream_end_trailers(x, NULL);
}

/* ---- connection side ---- */

static void free_exchange(struct conn *c)
{
    struct http_exchange *x = c->http;
    if (x == NULL)
        return;
    c->http = NULL;
    cairn_free(x->head);
    cairn_free(x);
}

/* The handler's work ends without an answer. */
static void abort_handler(struct http_exchange *x)
{
    const struct http_handler *h = x->h;
    x->h = NULL;
    x->call = NULL;
    if (h != NULL && h->abort != NULL && !x->resp_done)
        h->abort(x->ud);
}

/* Go's answer to a request it cannot parse; the connection ends. */
static void bad_request(struct conn *c, int status)
{
    char out[160];
    struct http_exchange *x = c->http;
    if (x != NULL) {
        abort_handler(x);
        if (x->resp_started) {
            net__conn_close(c);
            return;
        }
    }
    int n = snprintf(out, sizeof out,
                     "HTTP/1.1 %d %s\r\nContent-Type: text/plain; "
                     "charset=utf-8\r\nConnection: close\r\n\r\n%d %s",
                     status, reason(status), status, reason(status));
    net__out_append(c, (const uint8_t *)out, (size_t)n);
    net__out_submit(c);
    net__tls_close_notify(c);
    net__conn_end(c);
}

static int token_in(const char *list, const char *tok)
{
    size_t tl = strlen(tok);
    for (const char *p = list; *p;) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(p, tok, tl) == 0)
            return 1;
        p += n;
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t')
        s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        s[--n] = 0;
    return s;
}

/* Splits the head (NUL-terminated copy) into the request line and header
 * fields. Returns 0 or an HTTP status. */
static int parse_head(struct http_exchange *x)
{
    char *save = NULL, *line = strtok_r(x->head, "\n", &save);
    char *sp1, *sp2;
    if (line == NULL)
        return 400;
    line[strcspn(line, "\r")] = 0;
    sp1 = strchr(line, ' ');
    sp2 = sp1 ? strchr(sp1 + 1, ' ') : NULL;
    if (sp1 == NULL || sp2 == NULL || sp1 == line || sp2 == sp1 + 1)
        return 400;
    *sp1 = *sp2 = 0;
    x->method = line;
    x->target = sp1 + 1;
    if (strcmp(sp2 + 1, "HTTP/1.1") == 0)
        x->minor = 1;
    else if (strcmp(sp2 + 1, "HTTP/1.0") == 0)
        x->minor = 0;
    else
        return sp2[1] == 'H' && strncmp(sp2 + 1, "HTTP/", 5) == 0 ? 505 : 400;
    while ((line = strtok_r(NULL, "\n", &save)) != NULL) {
        line[strcspn(line, "\r")] = 0;
        if (*line == 0)
            break;
        char *colon = strchr(line, ':');
        if (colon == NULL || colon == line || line[0] == ' ' || line[0] == '\t')
            return 400;
        for (char *q = line; q < colon; q++)
            if (*q == ' ' || *q == '\t')
                return 400;
        if (x->nhdr == HTTP1_MAX_HEADERS)
            return 431;
        *colon = 0;
        x->hname[x->nhdr] = line;
        x->hval[x->nhdr++] = trim(colon + 1);
    }
    return 0;
}

/* Body framing and connection persistence from the headers. */
static int parse_framing(struct http_exchange *x)
{
    const char *te = NULL, *cl = NULL, *conn = NULL;
    for (int i = 0; i < x->nhdr; i++) {
        const char *n = x->hname[i], *v = x->hval[i];
        if (strcasecmp(n, "Transfer-Encoding") == 0) {
            if (te != NULL)
                return 400;
            te = v;
        } else if (strcasecmp(n, "Content-Length") == 0) {
            if (cl != NULL && strcmp(cl, v) != 0)
                return 400;
            cl = v;
        } else if (strcasecmp(n, "Connection") == 0) {
            conn = v;
        }
    }
    x->keep_alive = x->minor == 1;
    if (conn != NULL && token_in(conn, "close"))
        x->keep_alive = 0;
    else if (conn != NULL && x->minor == 0 && token_in(conn, "keep-alive"))
        x->keep_alive = 1;
    if (te != NULL && cl != NULL)
        return 400; /* Go: "http: Transfer-Encoding and Content-Length" */
    if (te != NULL) {
        if (x->minor == 0)
            return 400;
        if (strcasecmp(te, "chunked") != 0)
            return 501;
        x->bs = CH_SIZE;
        return 0;
    }
    if (cl != NULL) {
        char *end;
        if (!isdigit((unsigned char)cl[0]))
            return 400;
        unsigned long long v = strtoull(cl, &end, 10);
        if (*end != 0 || end - cl > 18)
            return 400;
        x->remaining = v;
        x->bs = v > 0 ? B_LENGTH : B_NONE;
    }
    x->body_done = x->bs == B_NONE;
    return 0;
}

static void route(struct conn *c, struct http_exchange *x)
{
    struct http_reply r = {404, NULL, {NULL, 0, 0}, 0};
    const char *expect = http_header(x, "Expect");

    if (expect != NULL && strcasecmp(expect, "100-continue") == 0 &&
        !x->body_done && x->minor == 1)
        net__out_append(c, (const uint8_t *)"HTTP/1.1 100 Continue\r\n\r\n", 25);
    x->head_only = strcmp(x->method, "HEAD") == 0;
    /* The gateway first: its client certificate check comes before
     * etcd's CORS wrapper; it leaves OPTIONS alone otherwise. */
    if (!c->opts->metrics_only && gw_request(x))
        return;
    /* etcd's CORS wrapper answers OPTIONS on any client path. */
    if (!c->opts->metrics_only && strcmp(x->method, "OPTIONS") == 0) {
        http_respond(x, 200, NULL, NULL, NULL, 0);
        return;
    }
    r.metrics_listener = c->opts->metrics_only;
    rpc_http(x->method, x->target, &r);
    /* Go's http.Error marks its plain-text errors nosniff. */
    http_respond(x, r.status,
                 r.content_type ? r.content_type : "text/plain; charset=utf-8",
                 r.status >= 400 && (r.content_type == NULL ||
                                     strncmp(r.content_type, "text/plain", 10) == 0)
                     ? "X-Content-Type-Options: nosniff\r\n"
                     : NULL,
                 r.body.data, r.body.len);
    buf_free(&r.body);
}

/* Takes one request head off rbuf. Returns 1 when a request started, 0
 * when more bytes are needed, -1 when the connection ended. */
static int take_head(struct conn *c)
{
    uint8_t *end = NULL;
    size_t hl;
    int st;

    /* Go skips empty lines before a request line. */
    while (c->rbuf.len > 0 && (c->rbuf.data[0] == '\r' || c->rbuf.data[0] == '\n'))
        buf_consume(&c->rbuf, 1);
    if (c->rbuf.len > 3)
        end = memmem(c->rbuf.data, c->rbuf.len, "\r\n\r\n", 4);
    if (end == NULL || end - c->rbuf.data + 4 > HTTP1_MAX_HEAD) {
        if (c->rbuf.len > HTTP1_MAX_HEAD || (end != NULL)) {
            bad_request(c, 431);
            return -1;
        }
        return 0;
    }
    hl = (size_t)(end - c->rbuf.data) + 4;
    struct http_exchange *x = cairn_calloc(1, sizeof *x);
    x->conn = c;
    x->head = cairn_malloc(hl + 1);
    memcpy(x->head, c->rbuf.data, hl);
    x->head[hl] = 0;
    buf_consume(&c->rbuf, hl);
    c->http = x;
    x->minor = 1;
    if ((st = parse_head(x)) != 0 || (st = parse_framing(x)) != 0) {
        bad_request(c, st);
        return -1;
    }
    route(c, x);
    return 1;
}

static void deliver_body(struct http_exchange *x, const uint8_t *p, size_t n)
{
    if (n > 0 && x->h != NULL && x->h->body != NULL && !x->resp_done)
        x->h->body(x->ud, p, n);
}

/* Moves body bytes from rbuf to the handler. Returns -1 on bad framing. */
static int take_body(struct conn *c, struct http_exchange *x)
{
    for (int guard = 0; guard < 100000 && !x->body_done && c->http == x &&
                        !c->closing;
         guard++) {
        uint8_t *p = c->rbuf.data;
        size_t avail = c->rbuf.len, n;
        uint8_t *nl;
        switch (x->bs) {
        case B_LENGTH:
        case CH_DATA:
            if (avail == 0)
                return 0;
            n = avail < x->remaining ? avail : (size_t)x->remaining;
            x->remaining -= n;
            deliver_body(x, p, n);
            if (c->http != x || c->closing)
                return 0;
            buf_consume(&c->rbuf, n);
            if (x->remaining == 0) {
                if (x->bs == B_LENGTH)
                    x->body_done = 1;
                else
                    x->bs = CH_DATA_CRLF;
            }
            break;
        case CH_DATA_CRLF:
            if (avail < 2)
                return 0;
            if (p[0] != '\r' || p[1] != '\n')
                return -1;
            buf_consume(&c->rbuf, 2);
            x->bs = CH_SIZE;
            break;
        case CH_SIZE:
        case CH_TRAILER:
            nl = memchr(p, '\n', avail);
            if (nl == NULL)
                return avail > 4096 ? -1 : 0;
            n = (size_t)(nl - p) + 1;
            if (n < 2 || nl[-1] != '\r')
                return -1;
            if (x->bs == CH_TRAILER) {
                if (n == 2)
                    x->body_done = 1;
            } else {
                uint64_t v = 0;
                size_t i = 0;
                for (; i < n - 2 && isxdigit(p[i]); i++) {
                    if (v >> 59)
                        return -1;
                    v = v * 16 + (uint64_t)(isdigit(p[i]) ? p[i] - '0'
                                                          : (p[i] | 0x20) - 'a' + 10);
                }
                if (i == 0 || (i < n - 2 && p[i] != ';' && p[i] != ' '))
                    return -1;
                x->remaining = v;
                x->bs = v == 0 ? CH_TRAILER : CH_DATA;
            }
            buf_consume(&c->rbuf, n);
            break;
        default:
            x->body_done = 1;
            break;
        }
    }
    return 0;
}

static void process_requests(struct conn *c);

static void process(struct conn *c)
{
    if (c->http_busy)
        return;
    c->http_busy = 1;
    process_requests(c);
    c->http_busy = 0;
}

static void process_requests(struct conn *c)
{
    /* Bounded: each round either finishes a request or waits. */
    for (int round = 0; round < 1000 && !c->closing; round++) {
        struct http_exchange *x = c->http;
        if (x == NULL) {
            if (take_head(c) <= 0)
                return;
            continue;
        }
        if (!x->body_done) {
            int rc = take_body(c, x);
            if (rc < 0) {
                bad_request(c, 400);
                return;
            }
            if (c->closing || c->http != x)
                return;
        }
        if (x->body_done && !x->body_end_told) {
            x->body_end_told = 1;
            if (x->h != NULL && x->h->body_end != NULL && !x->resp_done)
                x->h->body_end(x->ud);
            if (c->closing || c->http != x)
                return;
        }
        if (x->resp_done && !x->keep_alive) {
            /* The answer is out and the connection ends: an unread body
             * does not hold it (shutdown, Connection: close). */
            free_exchange(c);
            net__tls_close_notify(c);
            net__conn_end(c);
            return;
        }
        if (!x->body_done || !x->resp_done) {
            /* Pipelined requests wait; too many bytes ahead pause reading. */
            if (x->body_done && c->rbuf.len > HTTP1_MAX_AHEAD)
                net__conn_pause(c, 1);
            return;
        }
        int keep = x->keep_alive;
        free_exchange(c);
        if (!keep) {
            net__tls_close_notify(c);
            net__conn_end(c);
            return;
        }
        net__conn_pause(c, 0);
    }
}

void net__http1_recv(struct conn *c)
{
    process(c);
}

void net__http1_drain(struct conn *c)
{
    struct http_exchange *x = c->http;
    if (x != NULL && x->h != NULL && x->h->drain != NULL && !x->resp_done)
        x->h->drain(x->ud);
}

void net__http1_free(struct conn *c)
{
    if (c->http != NULL)
        abort_handler(c->http);
    free_exchange(c);
}

struct grpc_call *net__http1_call(struct conn *c)
{
    return c->http != NULL && !c->http->resp_done ? c->http->call : NULL;
}

void net__http1_no_keepalive(struct conn *c)
{
    if (c->http != NULL)
        c->http->keep_alive = 0;
}
