/* etcd's TLS names (Go's cipher suite names and TLS versions) and the
 * certificate CN both TLS layers read. Apart from
 * tls.c so that the flag checks link without the network. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "net/tls.h"

/* Go's cipher suite names (crypto/tls, as etcd's tlsutil accepts them)
 * and OpenSSL's. TLS 1.3 suites are accepted and, as in Go, not
 * configurable: NULL here. */
static const struct {
    const char *go, *ossl;
} suites[] = {
    {"TLS_RSA_WITH_RC4_128_SHA", "RC4-SHA"},
    {"TLS_RSA_WITH_3DES_EDE_CBC_SHA", "DES-CBC3-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"},
    {"TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"},
    {"TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"},
    {"TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"},
    {"TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_RC4_128_SHA", "ECDHE-ECDSA-RC4-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA", "ECDHE-ECDSA-AES128-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA", "ECDHE-ECDSA-AES256-SHA"},
    {"TLS_ECDHE_RSA_WITH_RC4_128_SHA", "ECDHE-RSA-RC4-SHA"},
    {"TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA", "ECDHE-RSA-DES-CBC3-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"},
    {"TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256", "ECDHE-ECDSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256", "ECDHE-RSA-AES128-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "ECDHE-ECDSA-AES128-GCM-SHA256"},
    {"TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "ECDHE-RSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "ECDHE-ECDSA-AES256-GCM-SHA384"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305", "ECDHE-RSA-CHACHA20-POLY1305"},
    {"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305", "ECDHE-ECDSA-CHACHA20-POLY1305"},
    {"TLS_AES_128_GCM_SHA256", NULL},
    {"TLS_AES_256_GCM_SHA384", NULL},
    {"TLS_CHACHA20_POLY1305_SHA256", NULL},
};

int net__tls_version(const char *s, int *v, char *err, size_t errlen)
{
    if (s == NULL || *s == 0)
        *v = 0;
    else if (strcmp(s, "TLS1.2") == 0)
        *v = TLS1_2_VERSION;
    else if (strcmp(s, "TLS1.3") == 0)
        *v = TLS1_3_VERSION;
    else {
        snprintf(err, errlen, "unexpected TLS version \"%s\" (must be one of: "
                 "TLS1.2, TLS1.3)", s);
        return -EINVAL;
    }
    return 0;
}

/* Translates Go's names into an OpenSSL list in @out (may be empty when
 * only TLS 1.3 names were given). */
int net__tls_ciphers(const char *list, char *out, size_t outlen, char *err,
                       size_t errlen)
{
    char name[128];
    size_t used = 0;
    out[0] = 0;
    for (const char *p = list; p != NULL && *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        size_t i;
        if (n >= sizeof name)
            n = sizeof name - 1;
        memcpy(name, p, n);
        name[n] = 0;
        for (i = 0; i < sizeof suites / sizeof suites[0]; i++)
            if (strcmp(suites[i].go, name) == 0)
                break;
        if (i == sizeof suites / sizeof suites[0]) {
            snprintf(err, errlen, "unexpected TLS cipher suite \"%s\"", name);
            return -EINVAL;
        }
        if (suites[i].ossl != NULL) {
            int w = snprintf(out + used, outlen - used, "%s%s",
                             used ? ":" : "", suites[i].ossl);
            if (w < 0 || (size_t)w >= outlen - used)
                return -EINVAL;
            used += (size_t)w;
        }
        p = e ? e + 1 : NULL;
    }
    return 0;
}

int net_tls_check(const char *cipher_suites, const char *min_version,
                  const char *max_version, char *err, size_t errlen)
{
    int min, max, rc;
    if ((rc = net__tls_version(min_version, &min, err, errlen)) != 0 ||
        (rc = net__tls_version(max_version, &max, err, errlen)) != 0)
        return rc;
    if (max != 0 && min > max) {
        snprintf(err, errlen, "min version (%s) is greater than max version (%s)",
                 min_version, max_version);
        return -EINVAL;
    }
    if (min == TLS1_3_VERSION && cipher_suites != NULL && *cipher_suites) {
        snprintf(err, errlen, "cipher suites cannot be configured when only "
                 "TLS1.3 is enabled");
        return -EINVAL;
    }
    return 0;
}

int net_tls_peer_cn(struct ssl_st *ssl, char *out, size_t len)
{
    out[0] = 0;
    X509 *x = SSL_get0_peer_certificate(ssl);
    if (x == NULL)
        return -1;
    X509_NAME *nm = X509_get_subject_name(x);
    int i = -1, last = -1;
    while ((i = X509_NAME_get_index_by_NID(nm, NID_commonName, i)) >= 0)
        last = i;
    if (last < 0)
        return -1;
    unsigned char *utf8 = NULL;
    int n = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(
                                           X509_NAME_get_entry(nm, last)));
    if (n >= 0)
        snprintf(out, len, "%.*s", n, (const char *)utf8);
    OPENSSL_free(utf8);
    return n;
}
