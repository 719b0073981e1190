/* Reading PEM certificate chains (certs/chain.c): certificate files and the operator CA everywhere, and the
 * chains a service is given. Input: one byte choosing max (1 + its value modulo IDEVS_CHAIN_PEM_COUNT_MAX),
 * then the text. For every input:
 *   - a refusal is one of the documented codes, leaves nothing (count 0) and has a sentence in why of printable
 *     characters only (it may quote the text, which may hold anything);
 *   - an accepted chain is 1..max certificates, each 1..IDEVS_CERT_MAX bytes of DER that OpenSSL parses to the
 *     last byte; written back as PEM (64-character lines) it reads again to the same bytes. */
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "fuzz.h"
#include "idevs_cert.h"

static char *as_pem(uint8_t *const *der, const size_t *len, size_t count, size_t *out_len)
{
    size_t cap = 1;
    for (size_t i = 0; i < count; i++)
        cap += 64 + len[i] * 2 + len[i] / 48 + 8;
    char *pem = malloc(cap), *p = pem;
    if (pem == NULL)
        return NULL;
    for (size_t i = 0; i < count; i++) {
        p += sprintf(p, "-----BEGIN CERTIFICATE-----\n");
        for (size_t at = 0; at < len[i]; at += 48) {
            size_t n = len[i] - at < 48 ? len[i] - at : 48;
            p += EVP_EncodeBlock((unsigned char *)p, der[i] + at, (int)n);
            *p++ = '\n';
        }
        p += sprintf(p, "-----END CERTIFICATE-----\n");
    }
    *out_len = (size_t)(p - pem);
    return pem;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t max = 1 + data[0] % IDEVS_CHAIN_PEM_COUNT_MAX;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
    size_t der_len[IDEVS_CHAIN_PEM_COUNT_MAX], count = 99;
    char why[512] = "unset";
    idevs_err err = idevs_cert_read_chain_pem(text, len, der, der_len, max, &count, why, sizeof why);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_TOO_LARGE || err == IDEVS_ERR_CERT_MALFORMED || err == IDEVS_ERR_NOMEM);
        FUZZ_CHECK(count == 0 && why[0] != '\0' && strcmp(why, "unset") != 0);
        for (const char *c = why; *c != '\0'; c++)
            FUZZ_CHECK(*c >= 0x20 && *c <= 0x7e);
        return 0;
    }
    FUZZ_CHECK(count >= 1 && count <= max);
    for (size_t i = 0; i < count; i++) {
        FUZZ_CHECK(der_len[i] >= 1 && der_len[i] <= IDEVS_CERT_MAX);
        const unsigned char *p = der[i];
        X509 *x = d2i_X509(NULL, &p, (long)der_len[i]);
        FUZZ_CHECK(x != NULL && p == der[i] + der_len[i]);
        X509_free(x);
    }
    size_t pem_len;
    char *pem = as_pem(der, der_len, count, &pem_len);
    if (pem != NULL) {
        uint8_t *again[IDEVS_CHAIN_PEM_COUNT_MAX];
        size_t again_len[IDEVS_CHAIN_PEM_COUNT_MAX], again_count;
        FUZZ_CHECK(idevs_cert_read_chain_pem(pem, pem_len, again, again_len, max, &again_count, why, sizeof why) ==
                   IDEVS_OK);
        FUZZ_CHECK(again_count == count);
        for (size_t i = 0; i < count; i++)
            FUZZ_CHECK(again_len[i] == der_len[i] && memcmp(again[i], der[i], der_len[i]) == 0);
        idevs_cert_chain_free(again, again_count);
        free(pem);
    }
    idevs_cert_chain_free(der, count);
    return 0;
}
