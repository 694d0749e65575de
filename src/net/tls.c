/* TLS for client connections: contexts built from etcd's flags, rotation
 * when the files change, and the per-connection pump between libuv's
 * bytes and OpenSSL's memory BIOs. */
#include "net/tls.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "core/log.h"
#include "core/mem.h"
#include "net/net_int.h"

#define TLS_CHUNK 65536
#define ROTATE_CHECK_MS 1000

/* What identifies a file's content without reading it. */
struct file_id {
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime, ctime;
};

enum { F_CERT, F_KEY, F_CA, F_CRL, F_N };

static struct {
    char *files[F_N];       /* NULL = not configured */
    struct file_id ids[F_N];
    int client_cert_auth;
    char *ciphers;          /* OpenSSL's list; NULL = default */
    int min_version, max_version;
    SSL_CTX *ctx;           /* for new connections */
    uv_timer_t timer;
    int timer_on;
} tls;

static int crl_idx = -1; /* SSL_CTX ex_data: the X509_CRL of that context */
/* etcd's text for the last revoked certificate seen (loop thread: the
 * refusal is logged in the same read callback that verified). */
static char revoked_msg[128];

/* The first OpenSSL error as text (for logs), or @dflt. */
static const char *ossl_reason(const char *dflt)
{
    static char buf[256];
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (e == 0)
        return dflt;
    ERR_error_string_n(e, buf, sizeof buf);
    return buf;
}

/* Go's os.Open error text: "open PATH: no such file or directory". */
static int open_err(const char *path, char *err, size_t errlen)
{
    int e = errno;
    char m[128];
    snprintf(m, sizeof m, "%s", strerror(e));
    m[0] = (char)(m[0] >= 'A' && m[0] <= 'Z' ? m[0] - 'A' + 'a' : m[0]);
    snprintf(err, errlen, "open %s: %s", path, m);
    return -e;
}

static FILE *open_file(const char *path, char *err, size_t errlen, int *rc)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        *rc = open_err(path, err, errlen);
    return f;
}

static int load_cert_key(SSL_CTX *ctx, char *err, size_t errlen)
{
    int rc = 0;
    FILE *f = open_file(tls.files[F_CERT], err, errlen, &rc);
    if (f == NULL)
        return rc;
    X509 *leaf = PEM_read_X509(f, NULL, NULL, NULL);
    if (leaf == NULL) {
        snprintf(err, errlen, "tls: failed to find any PEM data in certificate input");
        rc = -EPROTO;
        goto out_close;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1) {
        snprintf(err, errlen, "tls: %s", ossl_reason("bad certificate"));
        rc = -EPROTO;
        goto out_free_leaf;
    }
    /* The rest of the file is the chain, sent along as Go does. */
    SSL_CTX_clear_chain_certs(ctx);
    for (X509 *x; (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL;)
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1)
            X509_free(x);
    ERR_clear_error(); /* the read that ended the loop */
    fclose(f);
    f = open_file(tls.files[F_KEY], err, errlen, &rc);
    if (f == NULL)
        goto out_free_leaf;
    EVP_PKEY *pk = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    if (pk == NULL) {
        snprintf(err, errlen, "tls: failed to find any PEM data in key input");
        rc = -EPROTO;
        goto out_close;
    }
    if (SSL_CTX_use_PrivateKey(ctx, pk) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls: private key does not match public key");
        rc = -EPROTO;
    }
    EVP_PKEY_free(pk);
out_close:
    fclose(f);
out_free_leaf:
    X509_free(leaf);
    return rc;
}

static int load_ca(SSL_CTX *ctx, char *err, size_t errlen)
{
    int rc = 0;
    const char *path = tls.files[F_CA];
    FILE *f = open_file(path, err, errlen, &rc);
    if (f == NULL)
        return rc;
    fclose(f);
    if (SSL_CTX_load_verify_locations(ctx, path, NULL) != 1) {
        ERR_clear_error();
        /* tlsutil.NewCertPool's words */
        snprintf(err, errlen, "error loading certificate");
        return -EPROTO;
    }
    /* Tells clients which issuers we take (Go sends its certificate
     * anyway; OpenSSL-based clients choose by this list). */
    STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(path);
    if (names != NULL)
        SSL_CTX_set_client_CA_list(ctx, names);
    ERR_clear_error();
    return 0;
}

static void crl_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx,
                     long argl, void *argp)
{
    (void)parent, (void)ad, (void)idx, (void)argl, (void)argp;
    X509_CRL_free(ptr);
}

/* PEM or DER, as Go's x509.ParseCRL. */
static int load_crl(SSL_CTX *ctx, char *err, size_t errlen)
{
    int rc = 0;
    FILE *f = open_file(tls.files[F_CRL], err, errlen, &rc);
    if (f == NULL)
        return rc;
    X509_CRL *crl = PEM_read_X509_CRL(f, NULL, NULL, NULL);
    if (crl == NULL) {
        rewind(f);
        crl = d2i_X509_CRL_fp(f, NULL);
    }
    fclose(f);
    ERR_clear_error();
    if (crl == NULL) {
        snprintf(err, errlen, "x509: malformed crl");
        return -EPROTO;
    }
    SSL_CTX_set_ex_data(ctx, crl_idx, crl);
    return 0;
}

/* etcd checks every certificate the peer sent against the CRL's serials
 * (not its issuer); doing it while verifying refuses in the handshake. */
static int verify_cb(int ok, X509_STORE_CTX *x)
{
    if (!ok)
        return 0;
    SSL *ssl = X509_STORE_CTX_get_ex_data(x, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509_CRL *crl = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), crl_idx);
    X509 *cert = X509_STORE_CTX_get_current_cert(x);
    X509_REVOKED *rev;
    if (crl != NULL && cert != NULL &&
        X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(cert)) == 1) {
        const ASN1_INTEGER *s = X509_get0_serialNumber(cert);
        int o = snprintf(revoked_msg, sizeof revoked_msg,
                         "transport: certificate serial ");
        for (int i = 0; i < s->length && o < (int)sizeof revoked_msg - 12; i++)
            o += snprintf(revoked_msg + o, sizeof revoked_msg - (size_t)o,
                          "%02x", s->data[i]);
        snprintf(revoked_msg + o, sizeof revoked_msg - (size_t)o, " revoked");
        X509_STORE_CTX_set_error(x, X509_V_ERR_CERT_REVOKED);
        return 0;
    }
    return 1;
}

/* ALPN: h2 for gRPC, http/1.1 for the HTTP endpoints; metrics listeners
 * serve HTTP/1.1 only. http/1.1 wins when the client offers it: gRPC
 * clients never do (they cannot speak gRPC over it), while curl and
 * browsers offer both and our HTTP/2 side serves only gRPC. No common
 * protocol: no ALPN, and the preface decides (as without ALPN). */
static int alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned int inlen, void *arg)
{
    static const unsigned char both[] = "\x08http/1.1\x02h2";
    static const unsigned char h1[] = "\x08http/1.1";
    struct conn *c = SSL_get_app_data(ssl);
    int metrics = c != NULL && c->opts->metrics_only;
    (void)arg;
    if (SSL_select_next_proto((unsigned char **)out, outlen,
                              metrics ? h1 : both,
                              metrics ? sizeof h1 - 1 : sizeof both - 1, in,
                              inlen) != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_NOACK;
    return SSL_TLSEXT_ERR_OK;
}

/* A context from the current files. */
static int build_ctx(SSL_CTX **out, char *err, size_t errlen)
{
    int rc;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "%s", ossl_reason("SSL_CTX_new failed"));
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, tls.min_version ? tls.min_version
                                                       : TLS1_2_VERSION);
    if (tls.max_version)
        SSL_CTX_set_max_proto_version(ctx, tls.max_version);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (tls.ciphers != NULL && *tls.ciphers) {
        if (SSL_CTX_set_cipher_list(ctx, tls.ciphers) != 1) {
            snprintf(err, errlen, "no usable cipher suite among --cipher-suites");
            rc = -EINVAL;
            goto err_free_ctx;
        }
        SSL_CTX_set_options(ctx, SSL_OP_CIPHER_SERVER_PREFERENCE);
    }
    if ((rc = load_cert_key(ctx, err, errlen)) != 0)
        goto err_free_ctx;
    if (tls.files[F_CA] != NULL) {
        if ((rc = load_ca(ctx, err, errlen)) != 0)
            goto err_free_ctx;
    } else {
        SSL_CTX_set_default_verify_paths(ctx); /* Go: nil ClientCAs = system */
    }
    if (tls.files[F_CRL] != NULL && (rc = load_crl(ctx, err, errlen)) != 0)
        goto err_free_ctx;
    /* etcd 3.4 (TLSInfo.ServerConfig): a trusted CA alone already
     * requires and verifies client certificates. */
    if (tls.client_cert_auth || tls.files[F_CA] != NULL)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
                           verify_cb);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_cb, NULL);
    /* Resumed sessions must come from this server's contexts. */
    static const unsigned char sid[] = "cairn";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
    *out = ctx;
    return 0;
err_free_ctx:
    SSL_CTX_free(ctx);
    return rc;
}

static void file_id_of(const char *path, struct file_id *id)
{
    struct stat st;
    memset(id, 0, sizeof *id);
    if (path == NULL || stat(path, &st) != 0)
        return;
    id->dev = st.st_dev;
    id->ino = st.st_ino;
    id->size = st.st_size;
    id->mtime = st.st_mtim;
    id->ctime = st.st_ctim;
}

static void snapshot_ids(struct file_id *ids)
{
    for (int i = 0; i < F_N; i++)
        file_id_of(tls.files[i], &ids[i]);
}

/* Rotation: a new context once any file changed. A failed build keeps the
 * old context; the new ids are remembered so the error is logged once per
 * change, and a half-written pair (cert replaced, key not yet) is retried
 * when the second file lands. */
static void on_rotate_timer(uv_timer_t *t)
{
    struct file_id now[F_N];
    char err[512];
    SSL_CTX *ctx;
    (void)t;
    snapshot_ids(now);
    if (memcmp(now, tls.ids, sizeof now) == 0)
        return;
    memcpy(tls.ids, now, sizeof now);
    if (build_ctx(&ctx, err, sizeof err) != 0) {
        log_errorw("failed to reload client TLS files; keeping the previous "
                   "ones", LOG_STR("cert-file", tls.files[F_CERT]),
                   LOG_STR("error", err));
        return;
    }
    SSL_CTX_free(tls.ctx); /* live connections hold their own reference */
    tls.ctx = ctx;
    log_infow("reloaded client TLS files", LOG_STR("cert-file", tls.files[F_CERT]),
              LOG_STR("key-file", tls.files[F_KEY]),
              LOG_STR("trusted-ca-file", tls.files[F_CA]),
              LOG_STR("client-crl-file", tls.files[F_CRL]));
}

static char *dup_opt(const char *s)
{
    return s != NULL && *s ? cairn_strdup(s) : NULL;
}

int net_tls_start(uv_loop_t *loop, const struct net_tls_opts *o, char *err,
                  size_t errlen)
{
    char list[2048];
    int rc;
    if (o->cert_file == NULL || !*o->cert_file || o->key_file == NULL ||
        !*o->key_file) {
        snprintf(err, errlen, "KeyFile and CertFile must both be present[key: %s, "
                 "cert: %s]", o->key_file ? o->key_file : "",
                 o->cert_file ? o->cert_file : "");
        return -EINVAL;
    }
    if ((rc = net_tls_check(o->cipher_suites, o->min_version, o->max_version,
                            err, errlen)) != 0)
        return rc;
    if ((rc = net__tls_ciphers(o->cipher_suites, list, sizeof list, err,
                               errlen)) != 0)
        return rc;
    if (crl_idx < 0)
        crl_idx = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, crl_free);
    tls.files[F_CERT] = dup_opt(o->cert_file);
    tls.files[F_KEY] = dup_opt(o->key_file);
    tls.files[F_CA] = dup_opt(o->trusted_ca_file);
    tls.files[F_CRL] = dup_opt(o->crl_file);
    tls.client_cert_auth = o->client_cert_auth;
    tls.ciphers = dup_opt(list);
    net__tls_version(o->min_version, &tls.min_version, err, errlen);
    net__tls_version(o->max_version, &tls.max_version, err, errlen);
    snapshot_ids(tls.ids);
    if ((rc = build_ctx(&tls.ctx, err, errlen)) != 0) {
        net_tls_stop();
        return rc;
    }
    uv_timer_init(loop, &tls.timer);
    uv_timer_start(&tls.timer, on_rotate_timer, ROTATE_CHECK_MS, ROTATE_CHECK_MS);
    uv_unref((uv_handle_t *)&tls.timer);
    tls.timer_on = 1;
    return 0;
}

void net_tls_stop(void)
{
    if (tls.timer_on) {
        uv_close((uv_handle_t *)&tls.timer, NULL);
        tls.timer_on = 0;
    }
    SSL_CTX_free(tls.ctx);
    tls.ctx = NULL;
    for (int i = 0; i < F_N; i++) {
        cairn_free(tls.files[i]);
        tls.files[i] = NULL;
    }
    cairn_free(tls.ciphers);
    tls.ciphers = NULL;
}

int net_tls_enabled(void)
{
    return tls.ctx != NULL;
}

/* ---- connections ---- */

int net__tls_accept(struct conn *c)
{
    if (tls.ctx == NULL)
        return -EPROTONOSUPPORT;
    SSL *ssl = SSL_new(tls.ctx);
    if (ssl == NULL)
        return -ENOMEM;
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    if (rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        SSL_free(ssl);
        return -ENOMEM;
    }
    /* An empty read BIO means "wait for more", not end of file. */
    BIO_set_mem_eof_return(rb, -1);
    SSL_set_bio(ssl, rb, wb);
    SSL_set_accept_state(ssl);
    SSL_set_app_data(ssl, c);
    c->ssl = ssl;
    return 0;
}

void net__tls_free(struct conn *c)
{
    SSL_free(c->ssl); /* drops its reference to the context too */
    c->ssl = NULL;
}

/* Sends what OpenSSL produced (handshake records, alerts, tickets, data). */
static void drain(struct conn *c)
{
    BIO *wb = SSL_get_wbio(c->ssl);
    char *p;
    long len = BIO_get_mem_data(wb, &p);
    if (len <= 0)
        return;
    net__raw_write(c, (const uint8_t *)p, (size_t)len);
    (void)BIO_reset(wb); /* a read-write memory BIO: clears it */
}

/* Go's words for the reasons clients are refused (etcd logs them). */
static const char *refusal(SSL *ssl, char *buf, size_t len)
{
    long v = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_last_error();
    if (v == X509_V_ERR_CERT_REVOKED)
        return revoked_msg;
    if (v == X509_V_ERR_CERT_HAS_EXPIRED || v == X509_V_ERR_CERT_NOT_YET_VALID)
        return "tls: failed to verify client certificate: x509: certificate "
               "has expired or is not yet valid";
    if (v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
        v == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT ||
        v == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT ||
        v == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
        v == X509_V_ERR_CERT_SIGNATURE_FAILURE)
        return "tls: failed to verify client certificate: x509: certificate "
               "signed by unknown authority";
    if (v != X509_V_OK) {
        snprintf(buf, len, "tls: failed to verify client certificate: %s",
                 X509_verify_cert_error_string(v));
        return buf;
    }
    if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
        return "tls: client didn't provide a certificate";
    if (ERR_GET_REASON(e) == SSL_R_UNSUPPORTED_PROTOCOL)
        return "tls: client offered only unsupported versions";
    if (e != 0) {
        ERR_error_string_n(e, buf, len);
        return buf;
    }
    return "EOF";
}

static void log_rejected(struct conn *c)
{
    char addr[INET6_ADDRSTRLEN + 8] = "", why[256];
    struct sockaddr_storage ss;
    int sl = sizeof ss;
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sl) == 0) {
        char ip[INET6_ADDRSTRLEN];
        if (ss.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
            uv_ip6_name(a, ip, sizeof ip);
            snprintf(addr, sizeof addr, "[%s]:%d", ip, ntohs(a->sin6_port));
        } else {
            struct sockaddr_in *a = (struct sockaddr_in *)&ss;
            uv_ip4_name(a, ip, sizeof ip);
            snprintf(addr, sizeof addr, "%s:%d", ip, ntohs(a->sin_port));
        }
    }
    const char *sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
    /* etcd's embed/config_logging.go line */
    log_warnw("rejected connection", LOG_STR("remote-addr", addr),
              LOG_STR("server-name", sni ? sni : ""),
              LOG_STR("error", refusal(c->ssl, why, sizeof why)));
    ERR_clear_error();
}

/* The verified client certificate's CN, for etcd's CN-as-user. */
static void set_peer_cn(struct conn *c)
{
    char cn[1024];
    if (SSL_get_verify_result(c->ssl) != X509_V_OK ||
        net_tls_peer_cn(c->ssl, cn, sizeof cn) < 0)
        return;
    c->peer_cn = cairn_strdup(cn);
}

int net__tls_recv(struct conn *c, const uint8_t *p, size_t n)
{
    static uint8_t plain[TLS_CHUNK]; /* one loop thread */
    int r;
    if (BIO_write(SSL_get_rbio(c->ssl), p, (int)n) != (int)n)
        return -1;
    if (!c->tls_up) {
        r = SSL_do_handshake(c->ssl);
        drain(c); /* the server's flight, or the alert */
        if (r != 1) {
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ)
                return 0;
            log_rejected(c);
            return 1; /* close once the alert is out */
        }
        c->tls_up = 1;
        set_peer_cn(c);
        const unsigned char *alpn = NULL;
        unsigned alen = 0;
        SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
        char proto[16] = "";
        snprintf(proto, sizeof proto, "%.*s", (int)alen, alpn ? (const char *)alpn : "");
        log_debugw("tls: handshake done", LOG_STR("version", SSL_get_version(c->ssl)),
                   LOG_STR("alpn", proto), LOG_STR("peer-cn", c->peer_cn));
    }
    while (!c->closing && c->ssl != NULL) {
        r = SSL_read(c->ssl, plain, sizeof plain);
        if (r <= 0) {
            int e = SSL_get_error(c->ssl, r);
            drain(c);
            if (e == SSL_ERROR_WANT_READ)
                return 0;
            if (e == SSL_ERROR_SSL) {
                ERR_clear_error();
                return 1; /* a fatal alert is queued: send it, then close */
            }
            ERR_clear_error();
            return -1; /* close_notify or a broken stream */
        }
        net__conn_input(c, plain, (size_t)r);
    }
    if (c->ssl != NULL)
        drain(c);
    return 0;
}

int net__tls_write(struct conn *c, const uint8_t *p, size_t n)
{
    while (n > 0) {
        int chunk = n > INT_MAX ? INT_MAX : (int)n;
        int r = SSL_write(c->ssl, p, chunk);
        if (r <= 0) {
            ERR_clear_error();
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    drain(c);
    return 0;
}

void net__tls_close_notify(struct conn *c)
{
    if (c->ssl == NULL || !c->tls_up)
        return;
    SSL_shutdown(c->ssl);
    ERR_clear_error();
    drain(c);
}

/* ---- --auto-tls ---- */

/* Host of each URL, as Go's net.SplitHostPort(u.Host). */
static int add_sans(X509 *x, const char *urls)
{
    char *list = cairn_strdup(urls), *save = NULL, names[4096] = "";
    size_t used = 0;
    for (char *u = strtok_r(list, ",", &save); u != NULL;
         u = strtok_r(NULL, ",", &save)) {
        char host[256], *h = strstr(u, "://");
        h = h ? h + 3 : u;
        char *end = h[0] == '[' ? strchr(h, ']') : strrchr(h, ':');
        if (h[0] == '[')
            h++;
        size_t hl = end ? (size_t)(end - h) : strlen(h);
        if (hl == 0 || hl >= sizeof host)
            continue;
        memcpy(host, h, hl);
        host[hl] = 0;
        unsigned char bin[16];
        int ip = inet_pton(AF_INET, host, bin) == 1 || inet_pton(AF_INET6, host, bin) == 1;
        int w = snprintf(names + used, sizeof names - used, "%s%s:%s",
                         used ? "," : "", ip ? "IP" : "DNS", host);
        if (w > 0 && (size_t)w < sizeof names - used)
            used += (size_t)w;
    }
    cairn_free(list);
    if (used == 0)
        return 0;
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, names);
    if (ext == NULL)
        return -EPROTO;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return 0;
}

static int add_ext(X509 *x, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -EPROTO;
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return 0;
}

static int make_cert(EVP_PKEY *pk, const char *urls, X509 **out)
{
    unsigned char rnd[16];
    X509 *x = X509_new();
    BIGNUM *bn = NULL;
    if (x == NULL || RAND_bytes(rnd, sizeof rnd) != 1)
        goto err_free_x;
    rnd[0] &= 0x7f; /* Go: rand.Int below 2^128, a positive serial */
    bn = BN_bin2bn(rnd, sizeof rnd, NULL);
    if (bn == NULL || BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) == NULL)
        goto err_free_x;
    X509_set_version(x, 2);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "O", MBSTRING_ASC, (const unsigned char *)"etcd",
                               -1, -1, 0);
    X509_set_issuer_name(x, nm);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 365L * 24 * 3600);
    X509_set_pubkey(x, pk);
    if (add_ext(x, NID_key_usage, "critical,digitalSignature,keyEncipherment") != 0 ||
        add_ext(x, NID_ext_key_usage, "serverAuth") != 0 ||
        add_ext(x, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_sans(x, urls) != 0)
        goto err_free_x;
    if (X509_sign(x, pk, EVP_sha512()) <= 0)
        goto err_free_x;
    BN_free(bn);
    *out = x;
    return 0;
err_free_x:
    BN_free(bn);
    X509_free(x);
    return -EPROTO;
}

static int mkdirs(const char *dir)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", dir);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, 0700) != 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, 0700) != 0 && errno != EEXIST)
        return -errno;
    return 0;
}

int net_tls_self_cert(const char *dir, const char *urls, char *cert, char *key,
                      char *err, size_t errlen)
{
    struct stat st;
    int rc;
    X509 *x = NULL;
    snprintf(cert, PATH_MAX, "%s/cert.pem", dir);
    snprintf(key, PATH_MAX, "%s/key.pem", dir);
    if ((rc = mkdirs(dir)) != 0) {
        snprintf(err, errlen, "mkdir %s: %s", dir, strerror(-rc));
        return rc;
    }
    if (stat(cert, &st) == 0 && stat(key, &st) == 0)
        return 0; /* etcd keeps what an earlier start generated */
    EVP_PKEY *pk = EVP_EC_gen("P-521");
    if (pk == NULL || make_cert(pk, urls, &x) != 0) {
        snprintf(err, errlen, "cannot generate x509 certificate: %s",
                 ossl_reason("unknown error"));
        rc = -EPROTO;
        goto out_free_key;
    }
    FILE *f = fopen(cert, "w");
    if (f == NULL) {
        rc = open_err(cert, err, errlen);
        goto out_free_cert;
    }
    PEM_write_X509(f, x);
    fclose(f);
    log_infow("created cert file", LOG_STR("path", cert));
    int fd = open(key, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || (f = fdopen(fd, "w")) == NULL) {
        rc = open_err(key, err, errlen);
        if (fd >= 0)
            close(fd);
        goto out_free_cert;
    }
    /* "EC PRIVATE KEY", as Go's x509.MarshalECPrivateKey */
    BIO *b = BIO_new_fp(f, BIO_NOCLOSE);
    int ok = b != NULL &&
             PEM_write_bio_PrivateKey_traditional(b, pk, NULL, NULL, 0, NULL, NULL) == 1;
    BIO_free(b);
    fclose(f);
    if (!ok) {
        snprintf(err, errlen, "cannot write %s: %s", key, ossl_reason("unknown error"));
        rc = -EPROTO;
        goto out_free_cert;
    }
    log_infow("created key file", LOG_STR("path", key));
out_free_cert:
    X509_free(x);
out_free_key:
    EVP_PKEY_free(pk);
    return rc;
}
