/* The tpm backend's formats on the certificate side (certs/tpm.proto, docs/CERTIFICATES.md "tpm evidence"):
 * the event digest the launcher extends its register with, and the attestation key (AK) certificate the
 * operator issues at enrollment and verifiers require. */
#ifndef IDEVS_TPM_H
#define IDEVS_TPM_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "idevs_cert.h"

/* extendedKeyUsage purpose that marks an idevs TPM attestation key certificate; a verifier refuses a quote
 * whose AK certificate lacks it. */
#define IDEVS_OID_TPM_AK IDEVS_OID_ARC ".3"

#define IDEVS_TPM_REPORT_VERSION 1
#define IDEVS_TPM_EVENT_LABEL "idevs tpm event v1"
#define IDEVS_TPM_QUALIFYING_LEN (2 * IDEVS_SHA256_LEN) /* key_binding || nonce */
#define IDEVS_TPM_NONCE_LEN IDEVS_SHA256_LEN             /* the evidence nonce of tpm evidence */

/* digest = SHA-256("idevs tpm event v1" || measurement || program_uuid || descriptor_digest || key_binding). */
idevs_err idevs_tpm_event_digest(const uint8_t measurement[IDEVS_SHA256_LEN], const idevs_uuid *program,
                                 const uint8_t descriptor_digest[IDEVS_SHA256_LEN],
                                 const uint8_t key_binding[IDEVS_SHA256_LEN], uint8_t out[IDEVS_SHA256_LEN]);

/* A PCR extend in software: reg = SHA-256(reg || digest). */
idevs_err idevs_tpm_extend(uint8_t reg[IDEVS_SHA256_LEN], const uint8_t digest[IDEVS_SHA256_LEN]);

/* The AK certificate: issued by ca (the operator CA, or an AK CA: a CA certificate for ca's key, else
 * IDEVS_ERR_INVALID_ARG) for ak, an EC P-256 public key (else IDEVS_ERR_TPM_AK_ATTRIBUTES); subject CN host
 * (an identity name, else IDEVS_ERR_INVALID_ARG); CA:FALSE, keyUsage digitalSignature, extendedKeyUsage
 * IDEVS_OID_TPM_AK; valid from 60 s before now for days (1..36500). *out is the caller's to X509_free. */
idevs_err idevs_tpm_issue_ak_cert(const idevs_identity *ca, X509 *ca_cert, EVP_PKEY *ak, const char *host,
                                  unsigned days, X509 **out);

/* ---- enrollment, operator side (certs/tpm_enroll.c; docs/BACKENDS.md "Enrollment") ---- */

#define IDEVS_TPM_NAME_LEN 34       /* an object's name: nameAlg (SHA-256, 2 bytes) || SHA-256(TPMT_PUBLIC) */
#define IDEVS_TPM_CREDENTIAL_LEN 32 /* the secret the challenge protects */
#define IDEVS_TPM_ENROLL_MAX 8192   /* bytes of an enrollment request or response */

/* TPM vendor roots for EK certificates: path is a file (PEM certificates, or one DER certificate) or a directory
 * of such files (at most 64); every certificate found is trusted, intermediates included. */
idevs_err idevs_tpm_ek_roots_load(const char *path, X509_STORE **out, char *why, size_t why_len);

/* Checks a marshalled TPMT_PUBLIC as an AK: ECC NIST P-256, name algorithm SHA-256, fixedTPM, fixedParent,
 * sensitiveDataOrigin, restricted, sign and not decrypt, scheme ECDSA with SHA-256, no symmetric or KDF; the
 * bytes must be exactly what the TPM marshals. IDEVS_ERR_TPM_AK_ATTRIBUTES with the reason. On success *ak (if
 * ak is not NULL) is its public key, the caller's to free, and name (if not NULL) its TPM name. */
idevs_err idevs_tpm_ak_check(const uint8_t *tpmt_public, size_t len, EVP_PKEY **ak, uint8_t name[IDEVS_TPM_NAME_LEN],
                             char *why, size_t why_len);

/* Reads a TpmEnrollRequest (certs/tpm.proto): the host name, the AK (idevs_tpm_ak_check) and the EK certificate,
 * which must chain to ek_roots and hold an RSA-2048 key (an ECC EK is refused). Makes a random credential and
 * protects it for that EK and the AK's name as TPM2_MakeCredential does: *challenge a TpmEnrollChallenge for the
 * host, *pending the record idevs_tpm_enroll_issue needs (it holds the credential: keep it private, 0600).
 * Both malloc'd, the caller's to free (cleanse *pending first). Errors: IDEVS_ERR_MALFORMED, _VERSION,
 * _TPM_AK_ATTRIBUTES, _TPM_EK_UNTRUSTED, _CRYPTO, _NOMEM, each with a sentence in why. */
idevs_err idevs_tpm_enroll_challenge(X509_STORE *ek_roots, const uint8_t *request, size_t request_len,
                                     uint8_t **challenge, size_t *challenge_len, uint8_t **pending,
                                     size_t *pending_len, char *why, size_t why_len);

/* Reads the host's TpmEnrollResponse against the pending record: the credential must equal the one the challenge
 * protected (constant-time; else IDEVS_ERR_TPM_CREDENTIAL). Then issues the AK certificate for the request's host
 * and AK under ca (idevs_tpm_issue_ak_cert) into *ak_cert. IDEVS_ERR_MALFORMED for a damaged pending record or
 * response, _VERSION. */
idevs_err idevs_tpm_enroll_issue(const uint8_t *pending, size_t pending_len, const uint8_t *response,
                                 size_t response_len, const idevs_identity *ca, X509 *ca_cert, unsigned days,
                                 X509 **ak_cert, char *why, size_t why_len);

#endif
