/* Issuing: the operator CA, the attestation authority, service and compartment certificates. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "certs_internal.h"

#define DAYS_MAX 36500u                    /* a hundred years */
#define NOT_BEFORE_SLACK 60                /* seconds, for clocks slightly behind the issuer's */
#define SERIAL_LEN 16

enum kind { KIND_CA, KIND_AUTHORITY, KIND_SERVICE, KIND_COMPARTMENT };

idevs_err certs_set_serial(X509 *cert)
{
    uint8_t b[SERIAL_LEN];
    if (idevs_random(b, sizeof b) != IDEVS_OK)
        return IDEVS_ERR_CRYPTO;
    b[0] = (uint8_t)((b[0] & 0x7f) | 0x40); /* positive, and 16 bytes long in DER */
    BIGNUM *bn = BN_bin2bn(b, sizeof b, NULL);
    ASN1_INTEGER *serial = bn != NULL ? BN_to_ASN1_INTEGER(bn, NULL) : NULL;
    int ok = serial != NULL && X509_set_serialNumber(cert, serial) == 1;
    ASN1_INTEGER_free(serial);
    BN_free(bn);
    return ok ? IDEVS_OK : IDEVS_ERR_NOMEM;
}

static idevs_err add_conf_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, ctx, nid, value);
    int ok = ext != NULL && X509_add_ext(cert, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

/* Builds and signs a certificate for subject. issuer_cert NULL means self-signed (the CA). */
/* not_before 0: now, less NOT_BEFORE_SLACK. */
static idevs_err build(enum kind kind, const idevs_identity *issuer, X509 *issuer_cert, const idevs_identity *subject,
                       long validity_seconds, time_t not_before, const uint8_t *evidence, size_t evidence_len,
                       X509 **out)
{
    idevs_err err = IDEVS_ERR_NOMEM;
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    time_t now = time(NULL);
    if (cert == NULL || name == NULL)
        goto done;
    if (X509_NAME_add_entry_by_NID(name, NID_commonName, MBSTRING_UTF8, (const unsigned char *)subject->name, -1,
                                   -1, 0) != 1)
        goto done;
    err = IDEVS_ERR_CRYPTO;
    if (X509_set_version(cert, X509_VERSION_3) != 1 || X509_set_subject_name(cert, name) != 1 ||
        X509_set_issuer_name(cert, issuer_cert != NULL ? X509_get_subject_name(issuer_cert) : name) != 1 ||
        X509_set_pubkey(cert, subject->sign) != 1)
        goto done;
    if ((not_before != 0 ? ASN1_TIME_set(X509_getm_notBefore(cert), not_before)
                         : ASN1_TIME_adj(X509_getm_notBefore(cert), now, 0, -NOT_BEFORE_SLACK)) == NULL ||
        ASN1_TIME_adj(X509_getm_notAfter(cert), now, 0, validity_seconds) == NULL)
        goto done;
    if ((err = certs_set_serial(cert)) != IDEVS_OK)
        goto done;

    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer_cert != NULL ? issuer_cert : cert, cert, NULL, NULL, 0);
    const char *bc = kind == KIND_CA ? "critical,CA:TRUE"
                     : kind == KIND_AUTHORITY ? "critical,CA:TRUE,pathlen:0"
                                              : "critical,CA:FALSE";
    const char *ku = (kind == KIND_CA || kind == KIND_AUTHORITY) ? "critical,keyCertSign,cRLSign"
                                                                  : "critical,digitalSignature";
    if ((err = add_conf_ext(cert, &ctx, NID_basic_constraints, bc)) != IDEVS_OK ||
        (err = add_conf_ext(cert, &ctx, NID_key_usage, ku)) != IDEVS_OK ||
        (err = add_conf_ext(cert, &ctx, NID_subject_key_identifier, "hash")) != IDEVS_OK ||
        (err = add_conf_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always")) != IDEVS_OK)
        goto done;
    if ((err = certs_add_uuid_san(cert, &subject->uuid)) != IDEVS_OK)
        goto done;
    if (kind == KIND_SERVICE || kind == KIND_COMPARTMENT) {
        err = certs_add_octets_ext(cert, IDEVS_OID_AGREEMENT_KEY, subject->kex_pub, IDEVS_X25519_LEN);
        if (err != IDEVS_OK)
            goto done;
    }
    if (evidence != NULL && (err = certs_add_octets_ext(cert, IDEVS_OID_EVIDENCE, evidence, evidence_len)) != IDEVS_OK)
        goto done;
    if (X509_sign(cert, issuer->sign, NULL) <= 0) {
        err = IDEVS_ERR_CRYPTO;
        goto done;
    }
    int der_len = i2d_X509(cert, NULL);
    if (der_len <= 0) {
        err = IDEVS_ERR_CRYPTO;
        goto done;
    }
    if ((size_t)der_len > IDEVS_CERT_MAX) {
        err = IDEVS_ERR_TOO_LARGE; /* never issue what no verifier would accept */
        goto done;
    }
    *out = cert;
    cert = NULL;
    err = IDEVS_OK;
done:
    if (err != IDEVS_OK)
        ERR_clear_error();
    X509_NAME_free(name);
    X509_free(cert);
    return err;
}

static bool usable(const idevs_identity *id)
{
    return id != NULL && id->sign != NULL && id->kex != NULL;
}

idevs_err certs_check_issuer(const idevs_identity *issuer, X509 *issuer_cert)
{
    if (!usable(issuer) || issuer_cert == NULL)
        return IDEVS_ERR_INVALID_ARG;
    EVP_PKEY *key = X509_get0_pubkey(issuer_cert);
    if (key == NULL || EVP_PKEY_eq(key, issuer->sign) != 1 || X509_check_ca(issuer_cert) == 0) {
        ERR_clear_error();
        return IDEVS_ERR_INVALID_ARG;
    }
    return IDEVS_OK;
}

static idevs_err days_to_seconds(unsigned days, long *out)
{
    if (days == 0 || days > DAYS_MAX)
        return IDEVS_ERR_INVALID_ARG;
    *out = (long)days * 86400L;
    return IDEVS_OK;
}

idevs_err idevs_cert_issue_ca(const idevs_identity *ca, unsigned days, X509 **out)
{
    long secs = 0;
    if (!usable(ca) || out == NULL || days_to_seconds(days, &secs) != IDEVS_OK)
        return IDEVS_ERR_INVALID_ARG;
    return build(KIND_CA, ca, NULL, ca, secs, 0, NULL, 0, out);
}

/* An authority's or a service's certificate: both are issued by the operator CA, for a number of days. */
static idevs_err issue_under_ca(enum kind kind, const idevs_identity *ca, X509 *ca_cert, const idevs_identity *subject,
                                unsigned days, X509 **out)
{
    long secs = 0;
    if (!usable(subject) || out == NULL || days_to_seconds(days, &secs) != IDEVS_OK)
        return IDEVS_ERR_INVALID_ARG;
    idevs_err err = certs_check_issuer(ca, ca_cert);
    if (err != IDEVS_OK)
        return err;
    return build(kind, ca, ca_cert, subject, secs, 0, NULL, 0, out);
}

idevs_err idevs_cert_issue_authority(const idevs_identity *ca, X509 *ca_cert, const idevs_identity *authority,
                                     unsigned days, X509 **out)
{
    return issue_under_ca(KIND_AUTHORITY, ca, ca_cert, authority, days, out);
}

idevs_err idevs_cert_issue_service(const idevs_identity *ca, X509 *ca_cert, const idevs_identity *subject,
                                   unsigned days, X509 **out)
{
    return issue_under_ca(KIND_SERVICE, ca, ca_cert, subject, days, out);
}

idevs_err idevs_cert_issue_compartment(const idevs_identity *authority, X509 *authority_cert,
                                       const idevs_identity *subject, const idevs_evidence *evidence,
                                       unsigned validity_seconds, X509 **out)
{
    return idevs_cert_renew_compartment(authority, authority_cert, subject, evidence, validity_seconds, 0, out);
}

idevs_err idevs_cert_renew_compartment(const idevs_identity *authority, X509 *authority_cert,
                                       const idevs_identity *subject, const idevs_evidence *evidence,
                                       unsigned validity_seconds, time_t not_before, X509 **out)
{
    if (subject == NULL || evidence == NULL || out == NULL || validity_seconds == 0 ||
        validity_seconds > DAYS_MAX * 86400u || not_before < 0 || not_before > time(NULL))
        return IDEVS_ERR_INVALID_ARG;
    idevs_err err = certs_check_issuer(authority, authority_cert);
    if (err != IDEVS_OK)
        return err;
    if ((err = certs_evidence_check(evidence, NULL)) != IDEVS_OK)
        return err;
    uint8_t binding[IDEVS_SHA256_LEN];
    if ((err = idevs_key_binding(subject->sign_pub, subject->kex_pub, binding)) != IDEVS_OK)
        return err;
    if (!idevs_ct_equal(binding, evidence->key_binding, sizeof binding))
        return IDEVS_ERR_KEY_BINDING_MISMATCH;
    if (!idevs_uuid_equal(&evidence->program_uuid, &subject->uuid))
        return IDEVS_ERR_PROGRAM_MISMATCH;
    uint8_t *enc = NULL;
    size_t enc_len = 0;
    if ((err = certs_evidence_encode(evidence, &enc, &enc_len)) != IDEVS_OK)
        return err;
    err = build(KIND_COMPARTMENT, authority, authority_cert, subject, (long)validity_seconds, not_before, enc, enc_len,
                out);
    free(enc);
    return err;
}

idevs_err idevs_cert_to_der(X509 *cert, uint8_t **der, size_t *len)
{
    if (cert == NULL || der == NULL || len == NULL)
        return IDEVS_ERR_INVALID_ARG;
    unsigned char *d = NULL;
    int l = i2d_X509(cert, &d);
    if (l <= 0)
        return IDEVS_ERR_CRYPTO;
    uint8_t *copy = malloc((size_t)l);
    if (copy == NULL) {
        OPENSSL_free(d);
        return IDEVS_ERR_NOMEM;
    }
    memcpy(copy, d, (size_t)l);
    OPENSSL_free(d);
    *der = copy;
    *len = (size_t)l;
    return IDEVS_OK;
}
