/* Reading PEM certificate chains (idevs_cert.h): the one reader for chain files (tools, launcher) and for chains
 * that arrive from the network (the retained certificate services fetch).
 *
 * Strict on purpose: the text is PEM "CERTIFICATE" blocks separated by white space and nothing else. A
 * non-certificate block, a block with encapsulated headers, text before, between or after the blocks, a NUL
 * byte, DER that is not exactly one X.509 certificate, a certificate above IDEVS_CERT_MAX bytes and more than
 * `max` certificates are all refused, never skipped or cut. The DER handed back is the bytes the PEM carried,
 * not a re-encoding. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "certs_internal.h"
#include "idevs_file.h"

void idevs_cert_chain_free(uint8_t **der, size_t count)
{
    for (size_t i = 0; der != NULL && i < count; i++) {
        free(der[i]);
        der[i] = NULL;
    }
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* First occurrence of needle in s[0..n), or NULL. */
static const char *find(const char *s, size_t n, const char *needle)
{
    size_t k = strlen(needle);
    for (size_t i = 0; k <= n && i <= n - k; i++)
        if (memcmp(s + i, needle, k) == 0)
            return s + i;
    return NULL;
}

/* A label for a sentence: at most 32 printable ASCII characters, others as '?'. */
static void printable(const char *s, size_t n, char out[33])
{
    size_t k = n < 32 ? n : 32;
    for (size_t i = 0; i < k; i++)
        out[i] = s[i] >= 0x20 && s[i] <= 0x7e && s[i] != '\'' ? s[i] : '?';
    out[k] = '\0';
}

/* Decodes the one PEM block text[0..n) (BEGIN line to END line) into a malloc'd DER certificate. */
static idevs_err decode_block(const char *text, size_t n, size_t index, uint8_t **der, size_t *der_len, char *why,
                              size_t why_len)
{
    BIO *bio = BIO_new_mem_buf(text, (int)n);
    if (bio == NULL)
        return idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
    char *name = NULL, *header = NULL;
    unsigned char *data = NULL;
    long len = 0;
    int ok = PEM_read_bio(bio, &name, &header, &data, &len);
    BIO_free(bio);
    ERR_clear_error();
    idevs_err err = IDEVS_OK;
    if (ok != 1)
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "PEM block %zu is not valid base64 PEM", index);
    else if (strcmp(name, "CERTIFICATE") != 0 && strcmp(name, "X509 CERTIFICATE") != 0) {
        char label[33];
        printable(name, strlen(name), label);
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "PEM block %zu is a '%s' block, not a CERTIFICATE", index,
                   label);
    } else if (header[0] != '\0')
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "certificate %zu has PEM headers", index);
    else if (len <= 0)
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "certificate %zu is empty", index);
    else if ((size_t)len > IDEVS_CERT_MAX)
        err = idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "certificate %zu is %ld bytes, more than the limit of %d",
                   index, len, IDEVS_CERT_MAX);
    if (err == IDEVS_OK) {
        X509 *x = certs_parse_der(data, (size_t)len);
        ERR_clear_error();
        if (x == NULL)
            err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "certificate %zu is not exactly one DER X.509 "
                                                               "certificate", index);
        X509_free(x);
    }
    if (err == IDEVS_OK) {
        *der = malloc((size_t)len);
        if (*der == NULL)
            err = idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
        else {
            memcpy(*der, data, (size_t)len);
            *der_len = (size_t)len;
        }
    }
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    return err;
}

idevs_err idevs_cert_read_chain_pem(const char *pem, size_t len, uint8_t **der, size_t *der_len, size_t max,
                                    size_t *count, char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (count != NULL)
        *count = 0;
    if ((pem == NULL && len > 0) || der == NULL || der_len == NULL || count == NULL || max == 0 ||
        max > IDEVS_CHAIN_PEM_COUNT_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_cert_read_chain_pem: bad arguments");
    if (len > max * IDEVS_CHAIN_PEM_EACH_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "%zu bytes of PEM, more than %zu certificate(s) take", len,
                    max);
    if (len > 0 && memchr(pem, '\0', len) != NULL)
        return idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "the PEM text holds a NUL byte");
    static const char begin[] = "-----BEGIN ", dashes[] = "-----", end[] = "-----END ";
    size_t n = 0, at = 0;
    idevs_err err = IDEVS_OK;
    for (;;) {
        while (at < len && is_space(pem[at]))
            at++;
        if (at == len)
            break;
        const char *b = pem + at;
        size_t left = len - at;
        if (left < sizeof begin - 1 || memcmp(b, begin, sizeof begin - 1) != 0) {
            err = n == 0 ? idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "text before the first PEM block")
                         : idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "text after certificate %zu", n);
            break;
        }
        /* The label runs to the dashes that close the BEGIN line; the END line must repeat it. */
        const char *label = b + sizeof begin - 1;
        const char *close = find(label, left - (sizeof begin - 1), dashes);
        const char *eol = memchr(label, '\n', left - (sizeof begin - 1));
        if (close == NULL || (eol != NULL && eol < close)) {
            err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "PEM block %zu has no complete BEGIN line", n + 1);
            break;
        }
        size_t label_len = (size_t)(close - label);
        char end_line[sizeof end + 64 + sizeof dashes];
        if (label_len > 64) {
            err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "PEM block %zu has an over-long label", n + 1);
            break;
        }
        snprintf(end_line, sizeof end_line, "%s%.*s%s", end, (int)label_len, label, dashes);
        const char *stop = find(close, (size_t)(pem + len - close), end_line);
        if (stop == NULL) {
            err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "PEM block %zu has no END line", n + 1);
            break;
        }
        size_t block_len = (size_t)(stop - b) + strlen(end_line);
        if (n == max) {
            err = idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "more than %zu certificate(s)", max);
            break;
        }
        err = decode_block(b, block_len, n + 1, &der[n], &der_len[n], why, why_len);
        if (err != IDEVS_OK)
            break;
        n++;
        at += block_len;
    }
    if (err == IDEVS_OK && n == 0)
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "no PEM certificate");
    if (err != IDEVS_OK) {
        idevs_cert_chain_free(der, n);
        return err;
    }
    *count = n;
    return IDEVS_OK;
}

idevs_err idevs_cert_read_chain_file(const char *path, uint8_t **der, size_t *der_len, size_t max, size_t *count,
                                     char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (count != NULL)
        *count = 0;
    if (path == NULL || max == 0 || max > IDEVS_CHAIN_PEM_COUNT_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_cert_read_chain_file: bad arguments");
    /* The one bounded file reader: a regular file (a FIFO is refused without waiting), at most what max
     * certificates take, refused rather than cut if it grows while read. */
    const idevs_file_rules rules = {NULL, 0, max * IDEVS_CHAIN_PEM_EACH_MAX, 0, IDEVS_OK};
    uint8_t *text = NULL;
    size_t n = 0;
    idevs_err err = idevs_file_read(AT_FDCWD, path, &rules, &text, &n, why, why_len);
    if (err != IDEVS_OK)
        return err;
    char inner[192];
    err = idevs_cert_read_chain_pem((const char *)text, n, der, der_len, max, count, inner, sizeof inner);
    if (err != IDEVS_OK)
        idevs_fail(why, why_len, err, "%s: %s", path, inner);
    free(text);
    return err;
}

idevs_err idevs_cert_read_chain_file_x509(const char *path, X509 **certs, size_t max, size_t *count, char *why,
                                          size_t why_len)
{
    if (count != NULL)
        *count = 0;
    if (certs == NULL || count == NULL || max == 0 || max > IDEVS_CHAIN_PEM_COUNT_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_cert_read_chain_file_x509: bad arguments");
    uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
    size_t der_len[IDEVS_CHAIN_PEM_COUNT_MAX], n = 0;
    idevs_err err = idevs_cert_read_chain_file(path, der, der_len, max, &n, why, why_len);
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        certs[i] = certs_parse_der(der[i], der_len[i]); /* checked by the reader: only memory may fail */
        if (certs[i] == NULL) {
            err = idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "%s: out of memory", path);
            for (size_t j = 0; j < i; j++)
                X509_free(certs[j]);
            break;
        }
    }
    ERR_clear_error();
    idevs_cert_chain_free(der, n);
    if (err == IDEVS_OK)
        *count = n;
    return err;
}
