/* The TPM 2.0 backend's host side that the operator drives by hand: enrollment of this host's attestation key
 * (idevs-tpm, docs/BACKENDS.md "tpm"). The launcher's backend itself is idevs_backend_tpm_new() in
 * idevs_backend.h. Formats: certs/tpm.proto (TpmEnrollRequest, TpmEnrollChallenge, TpmEnrollResponse).
 *
 * The host's TPM files live in <state dir>/tpm/ (made 0700 when absent), shared by every process of a broker:
 *   ak.pub   the attestation key's TPM2B_PUBLIC, marshalled (ECC P-256, restricted signing key, under the SRK)
 *   ak.priv  its TPM2B_PRIVATE, marshalled: wrapped by the TPM, usable only inside it
 *   ak.der   the AK certificate the operator issued (DER), installed by idevs_tpm_enroll_install()
 *   events.pcr<N>  the launcher's event log of register PCR N since boot (tpm_log.c) */
#ifndef IDEVS_TPM_HOST_H
#define IDEVS_TPM_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"

#define IDEVS_TPM_DIR "tpm"
#define IDEVS_TPM_EK_CERT_RSA_NV 0x01c00002u
#define IDEVS_TPM_EK_CERT_ECC_NV 0x01c0000au
#define IDEVS_TPM_HOST_MAX 64 /* characters of a host name in a request */
#define IDEVS_TPM_MESSAGE_MAX 8192 /* bytes of one enrollment message */

/* Creates a new AK under the SRK (replacing ak.pub, ak.priv and removing ak.der), reads the EK certificate
 * from NV (RSA, else ECC) and checks that it names the EK the TPM derives from the standard template, and
 * returns a packed TpmEnrollRequest (*out malloc'd). */
idevs_err idevs_tpm_enroll_request(const char *tcti, const char *state_dir, const char *host, uint8_t **out,
                                   size_t *out_len, char *why, size_t why_len);
/* TPM2_ActivateCredential of a packed TpmEnrollChallenge with the EK (endorsement policy) and the AK; returns a
 * packed TpmEnrollResponse. */
idevs_err idevs_tpm_enroll_activate(const char *tcti, const char *state_dir, const uint8_t *challenge,
                                    size_t challenge_len, uint8_t **out, size_t *out_len, char *why, size_t why_len);
/* Stores the AK certificate (PEM or DER) as ak.der after checking that its public key is this AK's. */
idevs_err idevs_tpm_enroll_install(const char *state_dir, const uint8_t *cert, size_t cert_len, char *why,
                                   size_t why_len);

#endif
