/* HTTP/1.1 endpoints on the client port: etcd's /health and /version. */
#include <stdio.h>
#include <string.h>

#include "rpc/rpc.h"

static void body(struct http_reply *r, const char *s)
{
    buf_append(&r->body, s, strlen(s));
}

void rpc_http(const char *method, const char *path, struct http_reply *r)
{
    char tmp[256];
    size_t plen = strcspn(path, "?");

    r->content_type = "application/json";
    if (plen == 8 && strncmp(path, "/version", 8) == 0) {
        r->status = 200;
        snprintf(tmp, sizeof tmp,
                 "{\"etcdserver\":\"%s\",\"etcdcluster\":\"%s\","
                 "\"storage\":\"%s\"}",
                 CAIRN_ETCD_VERSION, CAIRN_ETCD_CLUSTER_VERSION,
                 CAIRN_ETCD_CLUSTER_VERSION);
        body(r, tmp);
        return;
    }
    if (plen == 7 && strncmp(path, "/health", 7) == 0) {
        if (strcmp(method, "GET") != 0) {
            r->status = 405;
            r->content_type = "text/plain; charset=utf-8";
            body(r, "Method Not Allowed\n");
            return;
        }
        /* A member is healthy when it can serve a read (etcd's check):
         * the store must answer. */
        int64_t rev = rpc_current_rev();
        r->status = rev > 0 ? 200 : 503;
        body(r, rev > 0 ? "{\"health\":\"true\",\"reason\":\"\"}"
                        : "{\"health\":\"false\",\"reason\":\"RANGE ERROR\"}");
        return;
    }
    r->status = 404;
    r->content_type = "text/plain; charset=utf-8";
    body(r, "404 page not found\n");
}
