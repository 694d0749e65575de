/* Plain HTTP/1.1 on the client port, for /health, /version and friends.
 * One request per connection: the answer carries Connection: close. */
#include <stdio.h>
#include <string.h>

#include "core/mem.h"
#include "net/net_int.h"

#define HTTP1_MAX_HEAD 16384

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;
    (void)status;
    cairn_free(req);
    net__conn_close(c);
}

static void reply(struct conn *c, struct http_reply *r)
{
    char head[256];
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: "
                     "%zu\r\nConnection: close\r\n\r\n",
                     r->status, reason(r->status),
                     r->content_type ? r->content_type : "text/plain; charset=utf-8",
                     r->body.len);
    net__conn_write(c, (uint8_t *)head, (size_t)n);
    net__conn_write(c, r->body.data, r->body.len);
    buf_free(&r->body);
    /* Close once the queued writes are out (after TLS's close_notify). */
    net__tls_close_notify(c);
    uv_read_stop((uv_stream_t *)&c->tcp);
    uv_shutdown_t *req = cairn_malloc(sizeof *req);
    req->data = c;
    if (uv_shutdown(req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        cairn_free(req);
        net__conn_close(c);
    }
}

void net__http1_recv(struct conn *c)
{
    struct http_reply r = {400, NULL, {NULL, 0, 0}, 0};
    char method[16], target[1024];
    uint8_t *end = NULL;

    if (c->rbuf.len > 3)
        end = memmem(c->rbuf.data, c->rbuf.len, "\r\n\r\n", 4);
    if (end == NULL) {
        if (c->rbuf.len > HTTP1_MAX_HEAD)
            reply(c, &r);
        return;
    }
    *end = 0;
    if (sscanf((char *)c->rbuf.data, "%15s %1023s HTTP/1.", method, target) != 2) {
        buf_append(&r.body, "bad request\n", 12);
        reply(c, &r);
        return;
    }
    r.metrics_listener = c->opts->metrics_only;
    rpc_http(method, target, &r);
    reply(c, &r);
}
