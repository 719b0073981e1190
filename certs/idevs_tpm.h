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

#endif
