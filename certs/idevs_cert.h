/* X.509 certificates for idevs identities and attested compartments, and their verification.
 *
 * Every idevs certificate is ordinary X.509 (Ed25519 subject key, signed with Ed25519) with:
 *   - subjectAltName URI "urn:uuid:<uuid>" naming the identity;
 *   - extension IDEVS_OID_AGREEMENT_KEY (non-critical): OCTET STRING of the 32-byte X25519 public key;
 *   - for compartments, extension IDEVS_OID_EVIDENCE (non-critical): OCTET STRING of a protobuf
 *     idevs.v1.Evidence (proto/idevs.proto).
 * The arc 2.25.98677817249778228056933293760312102337 is idevs's own, minted from a UUID (ITU-T X.667).
 *
 * Chains: operator CA -> service certificate; operator CA -> attestation authority (CA, pathlen 0) ->
 * compartment certificate. `openssl verify -CAfile ca.crt [-untrusted aa.crt] leaf.crt` accepts both. */
#ifndef IDEVS_CERT_H
#define IDEVS_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/x509.h>

#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_identity.h"
#include "idevs_uuid.h"

#define IDEVS_OID_ARC "2.25.98677817249778228056933293760312102337"
#define IDEVS_OID_EVIDENCE IDEVS_OID_ARC ".1"
#define IDEVS_OID_AGREEMENT_KEY IDEVS_OID_ARC ".2"

typedef enum idevs_backend {
    IDEVS_BACKEND_PROCESS = 1, /* values equal idevs.v1.Backend */
    IDEVS_BACKEND_SGX = 2,
    IDEVS_BACKEND_TDX = 3,
    IDEVS_BACKEND_SEV_SNP = 4,
    IDEVS_BACKEND_NITRO = 5,
    IDEVS_BACKEND_CHERI = 6,
    IDEVS_BACKEND_TPM = 7,
} idevs_backend;

/* "process", "sgx", ...; NULL for an unknown value. */
const char *idevs_backend_name(idevs_backend backend);
/* Inverse of idevs_backend_name; IDEVS_ERR_INVALID_ARG for an unknown name. */
idevs_err idevs_backend_parse(const char *name, idevs_backend *out);

#define IDEVS_EVIDENCE_FLAG_DEBUG 0x1u
#define IDEVS_EVIDENCE_NONCE_MIN 16
#define IDEVS_EVIDENCE_NONCE_MAX 64
#define IDEVS_HARDWARE_REPORT_MAX 16384

typedef struct idevs_evidence {
    idevs_backend backend;
    uint8_t measurement[IDEVS_SHA256_LEN];
    idevs_uuid program_uuid;
    uint8_t descriptor_digest[IDEVS_SHA256_LEN];
    uint8_t key_binding[IDEVS_SHA256_LEN];
    uint64_t issued_at; /* seconds since 1970 */
    uint8_t nonce[IDEVS_EVIDENCE_NONCE_MAX];
    size_t nonce_len;
    uint32_t flags;
    /* For issuing: borrowed, NULL/0 for the process backend. In evidence returned by idevs_cert_verify() and
     * idevs_cert_read_evidence(), hardware_report is always NULL and only hardware_report_len is set. */
    const uint8_t *hardware_report;
    size_t hardware_report_len;
} idevs_evidence;

/* key_binding = SHA-256("idevs key binding v1" || Ed25519 public || X25519 public), see PROTOCOL.md. */
idevs_err idevs_key_binding(const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN], const uint8_t kex_pub[IDEVS_X25519_LEN],
                            uint8_t out[IDEVS_SHA256_LEN]);

/* ---- issuing ---- */

/* Certificates are valid from 60 s before now; days is 1..36500. A certificate whose DER would exceed
 * IDEVS_CERT_MAX is refused with IDEVS_ERR_TOO_LARGE. *out is the caller's to X509_free. */

/* Self-signed operator CA over the issuer identity's Ed25519 key (CA:TRUE, keyCertSign, cRLSign). */
idevs_err idevs_cert_issue_ca(const idevs_identity *ca, unsigned days, X509 **out);

/* Attestation authority: the key the launcher signs compartment certificates with (CA:TRUE, pathlen 0). */
idevs_err idevs_cert_issue_authority(const idevs_identity *ca, X509 *ca_cert, const idevs_identity *authority,
                                     unsigned days, X509 **out);

/* Service identity certificate (CA:FALSE, digitalSignature), UUID, name and agreement key of subject. */
idevs_err idevs_cert_issue_service(const idevs_identity *ca, X509 *ca_cert, const idevs_identity *subject,
                                   unsigned days, X509 **out);

/* Compartment certificate carrying evidence. subject holds only the compartment's public keys as far as
 * the certificate is concerned; evidence->key_binding must equal idevs_key_binding of those keys
 * (else IDEVS_ERR_KEY_BINDING_MISMATCH) and evidence->program_uuid the subject's UUID (else
 * IDEVS_ERR_PROGRAM_MISMATCH); evidence fields out of range give IDEVS_ERR_EVIDENCE_MALFORMED. The version
 * written is 1. authority_cert must be a CA certificate for authority's key (else IDEVS_ERR_INVALID_ARG). */
idevs_err idevs_cert_issue_compartment(const idevs_identity *authority, X509 *authority_cert,
                                       const idevs_identity *subject, const idevs_evidence *evidence,
                                       unsigned validity_seconds, X509 **out);

/* The same, renewing a certificate of the same keys: notBefore is not_before (the notBefore of the certificate
 * it renews; 0: now, as idevs_cert_issue_compartment), notAfter now + validity_seconds. The keys have been
 * certified since then: a verifier whose clock lags the issuer's never finds a renewal not yet valid.
 * not_before in the future is IDEVS_ERR_INVALID_ARG. */
idevs_err idevs_cert_renew_compartment(const idevs_identity *authority, X509 *authority_cert,
                                       const idevs_identity *subject, const idevs_evidence *evidence,
                                       unsigned validity_seconds, time_t not_before, X509 **out);

/* DER of cert into a malloc'd buffer. */
idevs_err idevs_cert_to_der(X509 *cert, uint8_t **der, size_t *len);

/* ---- reading PEM chains ---- */

/* Bytes of PEM text one certificate may take (base64 of IDEVS_CERT_MAX bytes, line breaks, BEGIN and END lines,
 * with room for CRLF), and the most certificates one call reads. */
#define IDEVS_CHAIN_PEM_EACH_MAX (2 * IDEVS_CERT_MAX + 256)
#define IDEVS_CHAIN_PEM_COUNT_MAX 64

/* Reads a certificate chain (leaf first) from PEM text pem[0..len) into der[0..*count) and der_len[], arrays of
 * max entries; each der[i] is malloc'd: free them with idevs_cert_chain_free(der, *count). The text must be
 * PEM "CERTIFICATE" blocks without headers, separated by white space, and nothing else; each block exactly one
 * DER X.509 certificate of at most IDEVS_CERT_MAX bytes, handed back byte for byte. Errors, with a sentence in
 * why (never more than 32 characters of the text, printable ones only): IDEVS_ERR_TOO_LARGE for more than max
 * certificates, a certificate above IDEVS_CERT_MAX or a text above max * IDEVS_CHAIN_PEM_EACH_MAX bytes;
 * IDEVS_ERR_CERT_MALFORMED for no certificate, a block of another kind (a key, a CRL), text before, between or
 * after the blocks, a NUL byte, bad base64 or DER; IDEVS_ERR_INVALID_ARG (max is 1..IDEVS_CHAIN_PEM_COUNT_MAX);
 * IDEVS_ERR_NOMEM. On failure nothing stays allocated and *count is 0. Verifies nothing: idevs_cert_verify
 * does. */
idevs_err idevs_cert_read_chain_pem(const char *pem, size_t len, uint8_t **der, size_t *der_len, size_t max,
                                    size_t *count, char *why, size_t why_len);

/* The same from a file, read by the one bounded file reader (base/idevs_file.h): a regular file of at most
 * max * IDEVS_CHAIN_PEM_EACH_MAX bytes (IDEVS_ERR_IO, with the reason, when it cannot be read or is not a
 * regular file; IDEVS_ERR_TOO_LARGE when larger or when it grows while read); why starts with the path. */
idevs_err idevs_cert_read_chain_file(const char *path, uint8_t **der, size_t *der_len, size_t max, size_t *count,
                                     char *why, size_t why_len);

/* The same, parsed: certs[0..*count) are X509 the caller frees with X509_free. max 1 where one certificate
 * is expected (an operator CA): a second one is then refused (IDEVS_ERR_TOO_LARGE). */
idevs_err idevs_cert_read_chain_file_x509(const char *path, X509 **certs, size_t max, size_t *count, char *why,
                                          size_t why_len);

/* Frees der[0..count) and sets them to NULL. */
void idevs_cert_chain_free(uint8_t **der, size_t count);

/* ---- verification ---- */

typedef struct idevs_cert_policy idevs_cert_policy;

idevs_cert_policy *idevs_cert_policy_new(void);
void idevs_cert_policy_free(idevs_cert_policy *policy);

/* Trust anchors: the operator CA(s). Each must be a CA certificate (else IDEVS_ERR_INVALID_ARG); a file
 * holds 1 to 16 PEM certificates, read by idevs_cert_read_chain_file (IDEVS_ERR_IO when unreadable,
 * IDEVS_ERR_CERT_MALFORMED when it holds none, garbage or anything but certificates, IDEVS_ERR_TOO_LARGE). */
idevs_err idevs_cert_policy_add_ca(idevs_cert_policy *policy, X509 *ca);
idevs_err idevs_cert_policy_add_ca_file(idevs_cert_policy *policy, const char *pem_path);

/* Peers must be attested compartments (true for a service's policy towards an integration process).
 * The backend, opt-in, debug, measurement, descriptor, program and nonce checks apply only when evidence is
 * required. Whatever this setting, evidence present in a certificate must decode, its key binding must match
 * the certificate's keys and its program UUID the certificate's urn:uuid; and a leaf issued below an
 * intermediate (an attestation authority) rather than directly by a trust anchor must carry evidence. */
void idevs_cert_policy_require_evidence(idevs_cert_policy *policy, bool required);

/* Hardware backends the verifier accepts. PROCESS is refused here: see the next function. Allowing TPM accepts
 * tpm certificates whose quote verifies (idevs_cert_verify), never on the authority's word alone. */
idevs_err idevs_cert_policy_allow_backend(idevs_cert_policy *policy, idevs_backend backend);

/* Accept the `process` backend, where the broker host's launcher signs the evidence and no hardware isolates
 * the compartment: the broker host is then trusted. Named loudly on purpose, as RA-TLS's *_INSECURE settings. */
void idevs_cert_policy_allow_process_backend_insecure(idevs_cert_policy *policy);

/* Accept compartments whose evidence has the debug flag. */
void idevs_cert_policy_allow_debug_insecure(idevs_cert_policy *policy);

/* Expected measurements (any one matches), at most IDEVS_POLICY_MEASUREMENTS_MAX (then IDEVS_ERR_TOO_LARGE).
 * With none added, any measurement is accepted. */
#define IDEVS_POLICY_MEASUREMENTS_MAX 64
idevs_err idevs_cert_policy_add_measurement(idevs_cert_policy *policy, const uint8_t measurement[IDEVS_SHA256_LEN]);

/* Optional expectations; unset means not checked. NULL (or a nonce of length 0) clears an expectation;
 * a nonce must otherwise be 16..64 bytes (else IDEVS_ERR_INVALID_ARG). */
void idevs_cert_policy_expect_descriptor(idevs_cert_policy *policy, const uint8_t digest[IDEVS_SHA256_LEN]);
void idevs_cert_policy_expect_program(idevs_cert_policy *policy, const idevs_uuid *program);
idevs_err idevs_cert_policy_expect_nonce(idevs_cert_policy *policy, const uint8_t *nonce, size_t len);

/* The tpm backend (docs/CERTIFICATES.md, "tpm evidence"). Its certificates are refused unless the quote in the
 * evidence verifies: see idevs_cert_verify. AK CAs issue the attestation key certificates; with none added, the
 * operator CAs (idevs_cert_policy_add_ca) do. Same rules and errors as idevs_cert_policy_add_ca(_file). */
idevs_err idevs_cert_policy_add_tpm_ak_ca(idevs_cert_policy *policy, X509 *ca);
idevs_err idevs_cert_policy_add_tpm_ak_ca_file(idevs_cert_policy *policy, const char *pem_path);

/* An expected set of boot PCRs (SHA-256 bank, PCRs 0 to 7): bit i of mask (not 0) says PCR i must equal
 * values[i]; PCRs outside the mask are not compared. A quote passes when it matches any one set; with none added
 * the boot PCRs are not compared. At most IDEVS_POLICY_TPM_PCR_SETS_MAX sets (then IDEVS_ERR_TOO_LARGE). */
#define IDEVS_TPM_BOOT_PCRS 8
#define IDEVS_POLICY_TPM_PCR_SETS_MAX 16
idevs_err idevs_cert_policy_add_tpm_pcrs(idevs_cert_policy *policy, uint8_t mask,
                                         const uint8_t values[IDEVS_TPM_BOOT_PCRS][IDEVS_SHA256_LEN]);

/* Verification time (seconds since 1970); 0, the default, means the current time. For tests and audits. */
void idevs_cert_policy_set_time(idevs_cert_policy *policy, time_t at);

/* Applies one named setting, as command-line tools and configuration files spell them:
 *   ca FILE                  trust the operator CA certificate(s) in a PEM file
 *   require-evidence         peers must be attested compartments
 *   allow-backend NAME       accept a hardware backend (sgx, tdx, sev-snp, nitro, cheri, tpm)
 *   tpm-ak-ca FILE           trust the AK CA certificate(s) in a PEM file for tpm quotes (default: the ca)
 *   tpm-pcrs I=HEX,...       an expected set of boot PCRs, e.g. 0=64 hex digits,7=64 hex digits (repeatable)
 *   allow-process-backend-insecure, allow-debug-insecure   (see above)
 *   measurement HEX          expect this measurement (64 hex digits; repeatable)
 *   descriptor-digest HEX    expect this deployment descriptor digest (64 hex digits)
 *   descriptor FILE          expect the digest of this deployment descriptor file
 *   program UUID             expect this program UUID
 *   nonce HEX                expect this challenge nonce
 * value is NULL for the settings without one. On failure, why (if not NULL) names the setting and the problem. */
idevs_err idevs_cert_policy_apply(idevs_cert_policy *policy, const char *name, const char *value, char *why,
                                  size_t why_len);

/* True when name is a setting idevs_cert_policy_apply() knows; *takes_value (may be NULL) tells whether it
 * needs a value. For option parsers. */
bool idevs_cert_policy_is_setting(const char *name, bool *takes_value);

typedef struct idevs_cert_info {
    idevs_uuid uuid;
    char name[IDEVS_NAME_MAX + 1];
    uint8_t sign_pub[IDEVS_ED25519_PUB_LEN];
    uint8_t kex_pub[IDEVS_X25519_LEN];
    uint8_t cert_digest[IDEVS_SHA256_LEN]; /* SHA-256 of the leaf DER */
    bool has_evidence;
    idevs_evidence evidence; /* hardware_report is NULL here: it points into nothing after return */
} idevs_cert_info;

/* Verifies a DER chain (leaf first, then intermediates) under policy, in this order: parse, idevs identity
 * fields, chain to a trusted CA with validity, evidence presence and decoding, key binding, backend,
 * process opt-in, debug flag, measurement, descriptor digest, program UUID, nonce. Returns the first failure
 * and, when why is not NULL, a sentence naming the certificate and what was wrong (never key material);
 * on success why is "". count is 1..IDEVS_CHAIN_MAX (IDEVS_ERR_TOO_LARGE above), each DER at most
 * IDEVS_CERT_MAX bytes (IDEVS_ERR_TOO_LARGE). Errors: IDEVS_ERR_CERT_MALFORMED, _CERT_NOT_IDEVS (leaf has cA
 * TRUE or keyCertSign/cRLSign, lacks keyUsage digitalSignature, is not Ed25519, lacks the urn:uuid name, CN or
 * agreement key), _CERT_UNTRUSTED (also: a key or digest under OpenSSL security level 2, an anchor whose
 * self-signature fails), _CERT_EXPIRED,
 * _CERT_NOT_YET_VALID, _EVIDENCE_MISSING, _EVIDENCE_MALFORMED, _KEY_BINDING_MISMATCH, _BACKEND_NOT_ALLOWED,
 * _PROCESS_BACKEND_NOT_OPTED_IN, _DEBUG_NOT_ALLOWED, _MEASUREMENT_MISMATCH, _DESCRIPTOR_MISMATCH,
 * _PROGRAM_MISMATCH, _NONCE_MISMATCH. Then, for tpm evidence (whether or not evidence is required), the quote
 * and event log of its hardware report (docs/CERTIFICATES.md, "tpm evidence"): _EVIDENCE_MALFORMED,
 * _TPM_AK_UNTRUSTED, _TPM_SIGNATURE, _TPM_NOT_QUOTE, _TPM_QUOTE_BINDING, _TPM_QUOTE_NONCE, _TPM_PCR_SELECTION,
 * _TPM_PCR_DIGEST, _TPM_LOG_REPLAY, _TPM_EVENT_MISSING, _TPM_BOOT_PCRS. info may be NULL; it is zeroed first
 * and filled only on success. The hardware report of the other hardware backends is size-checked but not
 * verified by this version. */
idevs_err idevs_cert_verify(const idevs_cert_policy *policy, const uint8_t *const *der, const size_t *der_len,
                            size_t count, idevs_cert_info *info, char *why, size_t why_len);

/* Decodes the evidence extension of cert without verifying anything (for inspection tools).
 * IDEVS_ERR_EVIDENCE_MISSING when absent, IDEVS_ERR_EVIDENCE_MALFORMED when it does not decode.
 * out->hardware_report is NULL; out->hardware_report_len gives the report's size. */
idevs_err idevs_cert_read_evidence(X509 *cert, idevs_evidence *out);

#endif
