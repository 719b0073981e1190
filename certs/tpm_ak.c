/* The tpm backend's attestation key certificate (issued at enrollment) and the event digest of its register. */
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "certs_internal.h"
#include "idevs_tpm.h"

#define AK_NOT_BEFORE_SLACK 60 /* seconds, as every certificate issue.c makes */
#define AK_DAYS_MAX 36500u

idevs_err idevs_tpm_event_digest(const uint8_t measurement[IDEVS_SHA256_LEN], const idevs_uuid *program,
                                 const uint8_t descriptor_digest[IDEVS_SHA256_LEN],
                                 const uint8_t key_binding[IDEVS_SHA256_LEN], uint8_t out[IDEVS_SHA256_LEN])
{
    if (measurement == NULL || program == NULL || descriptor_digest == NULL || key_binding == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    const void *parts[] = {IDEVS_TPM_EVENT_LABEL, measurement, program->b, descriptor_digest, key_binding};
    const size_t lens[] = {sizeof IDEVS_TPM_EVENT_LABEL - 1, IDEVS_SHA256_LEN, IDEVS_UUID_LEN, IDEVS_SHA256_LEN,
                           IDEVS_SHA256_LEN};
    return idevs_sha256_parts(parts, lens, 5, out);
}

idevs_err idevs_tpm_extend(uint8_t reg[IDEVS_SHA256_LEN], const uint8_t digest[IDEVS_SHA256_LEN])
{
    if (reg == NULL || digest == NULL)
        return IDEVS_ERR_INVALID_ARG;
    uint8_t copy[IDEVS_SHA256_LEN];
    memcpy(copy, reg, sizeof copy);
    const void *parts[] = {copy, digest};
    const size_t lens[] = {IDEVS_SHA256_LEN, IDEVS_SHA256_LEN};
    return idevs_sha256_parts(parts, lens, 2, reg);
}

/* An EC key on P-256: the only AK the quote format admits. */
static bool is_p256(EVP_PKEY *key)
{
    char group[32];
    size_t len = 0;
    bool ok = key != NULL && EVP_PKEY_is_a(key, "EC") &&
              EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &len) == 1 &&
              strcmp(group, "prime256v1") == 0;
    ERR_clear_error();
    return ok;
}

static idevs_err add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

idevs_err idevs_tpm_issue_ak_cert(const idevs_identity *ca, X509 *ca_cert, EVP_PKEY *ak, const char *host,
                                  unsigned days, X509 **out)
{
    if (ak == NULL || host == NULL || !idevs_name_valid(host) || out == NULL || days == 0 || days > AK_DAYS_MAX)
        return IDEVS_ERR_INVALID_ARG;
    idevs_err err = certs_check_issuer(ca, ca_cert);
    if (err != IDEVS_OK)
        return err;
    if (!is_p256(ak))
        return IDEVS_ERR_TPM_AK_ATTRIBUTES;

    err = IDEVS_ERR_CRYPTO;
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    time_t now = time(NULL);
    if (cert == NULL || name == NULL ||
        X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)host, -1, -1, 0) != 1 ||
        X509_set_version(cert, X509_VERSION_3) != 1 || X509_set_subject_name(cert, name) != 1 ||
        X509_set_issuer_name(cert, X509_get_subject_name(ca_cert)) != 1 || X509_set_pubkey(cert, ak) != 1 ||
        ASN1_TIME_adj(X509_getm_notBefore(cert), now, 0, -AK_NOT_BEFORE_SLACK) == NULL ||
        ASN1_TIME_adj(X509_getm_notAfter(cert), now, (int)days, 0) == NULL)
        goto done;
    if ((err = certs_set_serial(cert)) != IDEVS_OK)
        goto done;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, ca_cert, cert, NULL, NULL, 0);
    /* The extendedKeyUsage purpose is the mark: an operator CA's other certificates never carry it. */
    if ((err = add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE")) != IDEVS_OK ||
        (err = add_ext(cert, &ctx, NID_key_usage, "critical,digitalSignature")) != IDEVS_OK ||
        (err = add_ext(cert, &ctx, NID_ext_key_usage, "critical," IDEVS_OID_TPM_AK)) != IDEVS_OK ||
        (err = add_ext(cert, &ctx, NID_subject_key_identifier, "hash")) != IDEVS_OK ||
        (err = add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always")) != IDEVS_OK)
        goto done;
    if (X509_sign(cert, ca->sign, NULL) <= 0) {
        err = IDEVS_ERR_CRYPTO;
        goto done;
    }
    *out = cert;
    cert = NULL;
    err = IDEVS_OK;
done:
    ERR_clear_error();
    X509_NAME_free(name);
    X509_free(cert);
    return err;
}
