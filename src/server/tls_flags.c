/* etcd's order (embed.configureClientListeners, serveClients,
 * serveMetrics): self-signed certificates first, then the per-URL checks,
 * then the TLS configuration when a listener serves https. */
#include "server/tls_flags.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/log.h"
#include "net/tls.h"

static int set(const char *s)
{
    return s != NULL && *s != 0;
}

/* The first https URL of a comma-separated list, copied into @out. */
static int first_https(const char *list, char *out, size_t len)
{
    for (const char *p = list; p != NULL && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n > 8 && strncmp(p, "https://", 8) == 0) {
            snprintf(out, len, "%.*s", (int)n, p);
            return 1;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

/* Host:port of an URL (Go's url.Host) for etcd's metrics message. */
static const char *url_host(const char *url)
{
    const char *h = strstr(url, "://");
    return h ? h + 3 : url;
}

/* etcd's warnings for http:// client URLs when TLS flags are set. */
static void warn_http_urls(const char *list, int certs, int cert_auth)
{
    char url[512];
    for (const char *p = list; p != NULL && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(url, sizeof url, "%.*s", (int)n, p);
        if (strncmp(url, "http://", 7) == 0) {
            if (certs)
                log_warnw("scheme is HTTP while key and cert files are present; "
                          "ignoring key and cert files", LOG_STR("client-url", url));
            if (cert_auth)
                log_warnw("scheme is HTTP while --client-cert-auth is enabled; "
                          "ignoring client cert auth for this URL",
                          LOG_STR("client-url", url));
        }
        p = e ? e + 1 : NULL;
    }
}

static int fail_start(const char *err)
{
    log_warnw("failed to start etcd", LOG_STR("error", err));
    log_errorw("discovery failed", LOG_STR("error", err));
    return -1;
}

int server_tls_start(struct server *s)
{
    struct config *c = &s->cfg;
    char cert[PATH_MAX], key[PATH_MAX], dir[PATH_MAX], err[1024], url[512];
    struct net_tls_opts o = {c->cert_file, c->key_file, c->trusted_ca_file,
                             c->client_crl_file, c->client_cert_auth,
                             c->cipher_suites, c->tls_min_version,
                             c->tls_max_version};
    int empty = !set(c->cert_file) && !set(c->key_file);

    /* etcd's updateCipherSuites runs first, https or not */
    if (net__tls_ciphers(c->cipher_suites, url, sizeof url, err, sizeof err) != 0)
        return fail_start(err);

    if (c->auto_tls && !empty) {
        log_warn("ignoring client auto TLS since certs given");
    } else if (c->auto_tls) {
        snprintf(dir, sizeof dir, "%s/fixtures/client", c->data_dir);
        if (net_tls_self_cert(dir, c->listen_client_urls, cert, key, err,
                              sizeof err) != 0) {
            log_errorw("failed to get client self-signed certs", LOG_STR("error", err));
            return -1;
        }
        /* etcd replaces the whole client TLSInfo with SelfCert's: no CA,
         * no client-cert-auth, no CRL. */
        memset(&o, 0, sizeof o);
        o.cert_file = cert;
        o.key_file = key;
        o.cipher_suites = c->cipher_suites;
        o.min_version = c->tls_min_version;
        o.max_version = c->tls_max_version;
        empty = 0;
    }
    warn_http_urls(c->listen_client_urls, !empty, o.client_cert_auth);
    if (empty && first_https(c->listen_client_urls, url, sizeof url)) {
        snprintf(err, sizeof err, "TLS key/cert (--cert-file, --key-file) must be "
                 "provided for client url %s with HTTPS scheme", url);
        return fail_start(err);
    }
    int https = first_https(c->listen_client_urls, url, sizeof url) ||
                first_https(c->listen_metrics_urls, url, sizeof url);
    if (empty && https) {
        snprintf(err, sizeof err, "cannot listen on TLS for %s: KeyFile and "
                 "CertFile are not presented", url_host(url));
        return fail_start(err);
    }
    if (!https)
        return 0;
    if (net_tls_start(s->loop, &o, err, sizeof err) != 0) {
        log_errorw("listener failed", LOG_STR("error", err));
        return -1;
    }
    log_infow("starting with client TLS", LOG_STR("cert-file", o.cert_file),
              LOG_STR("key-file", o.key_file),
              LOG_STR("trusted-ca-file", o.trusted_ca_file),
              LOG_BOOL("client-cert-auth", o.client_cert_auth),
              LOG_STR("crl-file", o.crl_file),
              LOG_STR("cipher-suites", o.cipher_suites));
    return 0;
}
