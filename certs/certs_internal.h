/* Shared inside the certs module only: the identity structure and the helpers the files of the module share. */
#ifndef IDEVS_CERTS_INTERNAL_H
#define IDEVS_CERTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "idevs_cert.h"
#include "idevs_identity.h"

struct idevs_identity {
    idevs_uuid uuid;
    char name[IDEVS_NAME_MAX + 1];
    EVP_PKEY *sign; /* Ed25519, private */
    EVP_PKEY *kex;  /* X25519, private */
    uint8_t sign_pub[IDEVS_ED25519_PUB_LEN];
    uint8_t kex_pub[IDEVS_X25519_LEN];
    idevs_der_chain chain;
};

#define CERTS_URN_PREFIX "urn:uuid:"
#define CERTS_URN_LEN (sizeof CERTS_URN_PREFIX - 1 + IDEVS_UUID_STR_LEN - 1)

/* The largest encoded Evidence accepted: the fixed fields with generous framing, plus the hardware report. */
#define CERTS_EVIDENCE_ENCODED_MAX (IDEVS_HARDWARE_REPORT_MAX + 512)

/* OpenSSL security level of every chain verified: 112-bit keys and signature digests at least (verify.c). */
#define CERTS_AUTH_LEVEL 2

struct idevs_cert_policy {
    X509_STORE *store;        /* the trust anchors */
    size_t ca_count;
    bool require_evidence;
    unsigned allowed_backends; /* bit b set: hardware backend b allowed */
    bool allow_process;
    bool allow_debug;
    uint8_t measurements[IDEVS_POLICY_MEASUREMENTS_MAX][IDEVS_SHA256_LEN];
    size_t measurement_count;
    bool has_descriptor;
    uint8_t descriptor[IDEVS_SHA256_LEN];
    bool has_program;
    idevs_uuid program;
    uint8_t nonce[IDEVS_EVIDENCE_NONCE_MAX];
    size_t nonce_len; /* 0: not checked */
    time_t at;        /* 0: now */
    X509_STORE *tpm_ak_store; /* AK CAs of the tpm backend; NULL: the operator CAs (store) */
    struct certs_tpm_pcr_set {
        uint8_t mask;                                   /* bit i: PCR i is expected */
        uint8_t values[IDEVS_TPM_BOOT_PCRS][IDEVS_SHA256_LEN];
    } tpm_pcr_sets[IDEVS_POLICY_TPM_PCR_SETS_MAX];
    size_t tpm_pcr_set_count;   /* 0: boot PCRs not checked */
};

/* extensions.c */
/* Adds a non-critical extension oid whose value is an OCTET STRING holding data. */
idevs_err certs_add_octets_ext(X509 *cert, const char *oid, const uint8_t *data, size_t len);
/* Finds the extension oid. IDEVS_OK with *data and *len pointing into cert (borrowed) when present exactly once;
 * IDEVS_ERR_EVIDENCE_MISSING when absent; IDEVS_ERR_MALFORMED when repeated or not an OCTET STRING. */
idevs_err certs_get_octets_ext(X509 *cert, const char *oid, const uint8_t **data, size_t *len);
idevs_err certs_add_uuid_san(X509 *cert, const idevs_uuid *uuid);
/* The single urn:uuid URI of the subjectAltName; IDEVS_ERR_CERT_NOT_IDEVS when absent, repeated or invalid. */
idevs_err certs_get_uuid_san(X509 *cert, idevs_uuid *out);
/* The subject CN if it is a valid identity name; IDEVS_ERR_CERT_NOT_IDEVS otherwise. */
idevs_err certs_get_name(X509 *cert, char out[IDEVS_NAME_MAX + 1]);
/* The 32-byte agreement key; IDEVS_ERR_EVIDENCE_MISSING when absent, IDEVS_ERR_CERT_NOT_IDEVS when invalid. */
idevs_err certs_get_agreement_key(X509 *cert, uint8_t out[IDEVS_X25519_LEN]);
/* The raw Ed25519 subject key; IDEVS_ERR_CERT_NOT_IDEVS when the key is not Ed25519. */
idevs_err certs_get_sign_key(X509 *cert, uint8_t out[IDEVS_ED25519_PUB_LEN]);

/* evidence.c */
/* Checks field sizes and values of evidence (as issued); IDEVS_ERR_EVIDENCE_MALFORMED with the reason. */
idevs_err certs_evidence_check(const idevs_evidence *ev, const char **reason);
/* Encodes evidence (after certs_evidence_check) into a malloc'd buffer. */
idevs_err certs_evidence_encode(const idevs_evidence *ev, uint8_t **out, size_t *out_len);
/* Decodes and validates; out->hardware_report is NULL, out->hardware_report_len the report's size.
 * IDEVS_ERR_EVIDENCE_MALFORMED with *reason set on any defect. */
idevs_err certs_evidence_decode(const uint8_t *data, size_t len, idevs_evidence *out, const char **reason);
/* The same, and *report a malloc'd copy of the hardware report (NULL when empty), the caller's to free. */
idevs_err certs_evidence_decode_report(const uint8_t *data, size_t len, idevs_evidence *out, uint8_t **report,
                                       const char **reason);

/* issue.c */
/* A random positive 16-byte serial number. */
idevs_err certs_set_serial(X509 *cert);
/* idevs_fail, and OpenSSL's error queue emptied: a failure of certs/ leaves nothing for the next caller. */
idevs_err certs_fail(char *why, size_t why_len, idevs_err err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* IDEVS_OK when issuer_cert is a CA certificate for the issuer identity's key, else IDEVS_ERR_INVALID_ARG. */
idevs_err certs_check_issuer(const idevs_identity *issuer, X509 *issuer_cert);

/* tpm_quote.c */
/* The tpm backend's hardware report (certs/tpm.proto TpmReport, report[0..report_len)) checked against the
 * decoded evidence ev under policy, in the order docs/CERTIFICATES.md gives; label names the certificate in why.
 * IDEVS_ERR_EVIDENCE_MALFORMED, _TPM_AK_UNTRUSTED, _TPM_SIGNATURE, _TPM_NOT_QUOTE, _TPM_QUOTE_BINDING,
 * _TPM_QUOTE_NONCE, _TPM_PCR_SELECTION, _TPM_PCR_DIGEST, _TPM_LOG_REPLAY, _TPM_EVENT_MISSING, _TPM_BOOT_PCRS. */
idevs_err certs_tpm_verify(const idevs_cert_policy *policy, const idevs_evidence *ev, const uint8_t *report,
                           size_t report_len, const char *label, char *why, size_t why_len);

/* A DER certificate of exactly len bytes (no trailing data); NULL when malformed. */
X509 *certs_parse_der(const uint8_t *der, size_t len);

#endif
