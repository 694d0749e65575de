/* TLS on the client port (OpenSSL 3 through memory BIOs: libuv owns the
 * socket, OpenSSL only sees bytes). One SSL_CTX serves new connections;
 * when the certificate, key, CA or CRL files change on disk it is rebuilt
 * (checked every second) and connections made before keep the one they
 * started with. Everything here runs on the loop thread. */
#ifndef NET_TLS_H
#define NET_TLS_H

#include <stddef.h>
#include <uv.h>

/* etcd's client TLS flags. Strings are borrowed for the call (copied). */
struct net_tls_opts {
    const char *cert_file, *key_file;
    const char *trusted_ca_file; /* also turns client verification on, as
                                    etcd 3.4's TLSInfo.ServerConfig does */
    const char *crl_file;        /* serials refused, as etcd's checkCRL */
    int client_cert_auth;        /* require a verified client certificate */
    const char *cipher_suites;   /* Go's names, comma-separated; NULL = all */
    const char *min_version;     /* "TLS1.2", "TLS1.3"; NULL/"" = TLS1.2 */
    const char *max_version;     /* NULL/"" = the highest (TLS1.3) */
};

/* Checks --tls-min/max-version (and cipher suites with TLS 1.3 only) as
 * etcd 3.5's Config.Validate does; @err gets etcd's message. Cipher names
 * are checked by net_tls_start (etcd checks them when it listens).
 * Errors: -EINVAL. */
int net_tls_check(const char *cipher_suites, const char *min_version,
                  const char *max_version, char *err, size_t errlen);

/* Internal to net/ (tls_names.c): "TLS1.2"/"TLS1.3"/empty -> OpenSSL's
 * version (0 = default); Go's suite names -> an OpenSSL cipher list. */
int net__tls_version(const char *s, int *v, char *err, size_t errlen);
int net__tls_ciphers(const char *list, char *out, size_t outlen, char *err,
                     size_t errlen);

/* etcd's --auto-tls (transport.SelfCert): a self-signed ECDSA P-521
 * certificate for the hosts of @urls (comma-separated listen URLs), valid
 * one year, written to @dir/cert.pem and @dir/key.pem unless both exist.
 * @cert and @key (PATH_MAX) get the paths. Errors: -errno, -EPROTO. */
int net_tls_self_cert(const char *dir, const char *urls, char *cert,
                      char *key, char *err, size_t errlen);

/* Loads the files and makes the first context; starts the rotation timer
 * on @loop. Until it succeeded https listeners are refused. @err gets the
 * Go-style reason ("open x: no such file or directory", "tls: private key
 * does not match public key"). Errors: -errno, -EPROTO. */
int net_tls_start(uv_loop_t *loop, const struct net_tls_opts *o, char *err,
                  size_t errlen);
/* The Common Name of @ssl's peer certificate (the last one, as Go's
 * pkix.Name keeps it) into @out; its length, or -1 without a certificate
 * or CN (@out is then ""). Verification is the caller's to check. */
struct ssl_st;
int net_tls_peer_cn(struct ssl_st *ssl, char *out, size_t len);

/* Stops the timer and frees the context (connections keep theirs). */
void net_tls_stop(void);
/* 1 once net_tls_start succeeded. */
int net_tls_enabled(void);

#endif
