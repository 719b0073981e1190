/* Verification policy: trust anchors and the attestation expectations. */
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "certs_internal.h"

#define CA_FILE_CERTS_MAX 16

idevs_cert_policy *idevs_cert_policy_new(void)
{
    idevs_cert_policy *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->store = X509_STORE_new();
    if (p->store == NULL) {
        free(p);
        return NULL;
    }
    return p;
}

void idevs_cert_policy_free(idevs_cert_policy *policy)
{
    if (policy == NULL)
        return;
    X509_STORE_free(policy->store);
    X509_STORE_free(policy->tpm_ak_store);
    idevs_cleanse(policy, sizeof *policy);
    free(policy);
}

idevs_err idevs_cert_policy_add_ca(idevs_cert_policy *policy, X509 *ca)
{
    if (policy == NULL || ca == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (X509_check_ca(ca) == 0) {
        ERR_clear_error();
        return IDEVS_ERR_INVALID_ARG;
    }
    if (X509_STORE_add_cert(policy->store, ca) != 1) {
        ERR_clear_error();
        return IDEVS_ERR_NOMEM;
    }
    policy->ca_count++;
    return IDEVS_OK;
}

/* All or nothing: a file with one bad certificate adds none. */
static idevs_err add_ca_file(idevs_cert_policy *policy, const char *pem_path,
                             idevs_err (*add)(idevs_cert_policy *, X509 *))
{
    if (policy == NULL || pem_path == NULL)
        return IDEVS_ERR_INVALID_ARG;
    X509 *certs[CA_FILE_CERTS_MAX];
    size_t n = 0;
    idevs_err err = idevs_cert_read_chain_file_x509(pem_path, certs, CA_FILE_CERTS_MAX, &n, NULL, 0);
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; i < n && err == IDEVS_OK; i++)
        if (X509_check_ca(certs[i]) == 0)
            err = IDEVS_ERR_INVALID_ARG;
    for (size_t i = 0; i < n && err == IDEVS_OK; i++)
        err = add(policy, certs[i]);
    for (size_t i = 0; i < n; i++)
        X509_free(certs[i]);
    ERR_clear_error();
    return err;
}

idevs_err idevs_cert_policy_add_ca_file(idevs_cert_policy *policy, const char *pem_path)
{
    return add_ca_file(policy, pem_path, idevs_cert_policy_add_ca);
}

void idevs_cert_policy_require_evidence(idevs_cert_policy *policy, bool required)
{
    if (policy != NULL)
        policy->require_evidence = required;
}

idevs_err idevs_cert_policy_allow_backend(idevs_cert_policy *policy, idevs_backend backend)
{
    if (policy == NULL || backend == IDEVS_BACKEND_PROCESS || idevs_backend_name(backend) == NULL)
        return IDEVS_ERR_INVALID_ARG;
    policy->allowed_backends |= 1u << (unsigned)backend;
    return IDEVS_OK;
}

void idevs_cert_policy_allow_process_backend_insecure(idevs_cert_policy *policy)
{
    if (policy != NULL)
        policy->allow_process = true;
}

void idevs_cert_policy_allow_debug_insecure(idevs_cert_policy *policy)
{
    if (policy != NULL)
        policy->allow_debug = true;
}

idevs_err idevs_cert_policy_add_measurement(idevs_cert_policy *policy, const uint8_t measurement[IDEVS_SHA256_LEN])
{
    if (policy == NULL || measurement == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (policy->measurement_count == IDEVS_POLICY_MEASUREMENTS_MAX)
        return IDEVS_ERR_TOO_LARGE;
    memcpy(policy->measurements[policy->measurement_count++], measurement, IDEVS_SHA256_LEN);
    return IDEVS_OK;
}

void idevs_cert_policy_expect_descriptor(idevs_cert_policy *policy, const uint8_t digest[IDEVS_SHA256_LEN])
{
    if (policy == NULL)
        return;
    policy->has_descriptor = digest != NULL;
    if (digest != NULL)
        memcpy(policy->descriptor, digest, IDEVS_SHA256_LEN);
}

void idevs_cert_policy_expect_program(idevs_cert_policy *policy, const idevs_uuid *program)
{
    if (policy == NULL)
        return;
    policy->has_program = program != NULL;
    if (program != NULL)
        policy->program = *program;
}

idevs_err idevs_cert_policy_expect_nonce(idevs_cert_policy *policy, const uint8_t *nonce, size_t len)
{
    if (policy == NULL || (len > 0 && nonce == NULL))
        return IDEVS_ERR_INVALID_ARG;
    if (len == 0) {
        policy->nonce_len = 0;
        return IDEVS_OK;
    }
    if (len < IDEVS_EVIDENCE_NONCE_MIN || len > IDEVS_EVIDENCE_NONCE_MAX)
        return IDEVS_ERR_INVALID_ARG;
    memcpy(policy->nonce, nonce, len);
    policy->nonce_len = len;
    return IDEVS_OK;
}

void idevs_cert_policy_set_time(idevs_cert_policy *policy, time_t at)
{
    if (policy != NULL)
        policy->at = at;
}

idevs_err idevs_cert_policy_add_tpm_ak_ca(idevs_cert_policy *policy, X509 *ca)
{
    if (policy == NULL || ca == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (X509_check_ca(ca) == 0) {
        ERR_clear_error();
        return IDEVS_ERR_INVALID_ARG;
    }
    if (policy->tpm_ak_store == NULL && (policy->tpm_ak_store = X509_STORE_new()) == NULL)
        return IDEVS_ERR_NOMEM;
    if (X509_STORE_add_cert(policy->tpm_ak_store, ca) != 1) {
        ERR_clear_error();
        return IDEVS_ERR_NOMEM;
    }
    return IDEVS_OK;
}

idevs_err idevs_cert_policy_add_tpm_ak_ca_file(idevs_cert_policy *policy, const char *pem_path)
{
    return add_ca_file(policy, pem_path, idevs_cert_policy_add_tpm_ak_ca);
}

idevs_err idevs_cert_policy_add_tpm_pcrs(idevs_cert_policy *policy, uint8_t mask,
                                         const uint8_t values[IDEVS_TPM_BOOT_PCRS][IDEVS_SHA256_LEN])
{
    if (policy == NULL || values == NULL || mask == 0)
        return IDEVS_ERR_INVALID_ARG;
    if (policy->tpm_pcr_set_count == IDEVS_POLICY_TPM_PCR_SETS_MAX)
        return IDEVS_ERR_TOO_LARGE;
    struct certs_tpm_pcr_set *set = &policy->tpm_pcr_sets[policy->tpm_pcr_set_count++];
    set->mask = mask;
    memcpy(set->values, values, sizeof set->values);
    return IDEVS_OK;
}
