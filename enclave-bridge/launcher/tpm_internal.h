/* Inside the launcher: the TPM connection and objects the tpm backend and the enrollment share (tpm.c), and
 * the event log (tpm_log.c). */
#ifndef IDEVS_TPM_INTERNAL_H
#define IDEVS_TPM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <tss2/tss2_esys.h>

#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_tpm_host.h"
#include "idevs_uuid.h"
#include "launcher_internal.h"

#define TPM_AK_PUB "ak.pub"
#define TPM_AK_PRIV "ak.priv"
#define TPM_AK_CERT "ak.der"
#define TPM_EVENTS "events.pcr%u" /* one log per register */
#define TPM_BOOT_PCRS 8 /* PCRs 0-7: firmware, boot loader, Secure Boot policy */

typedef struct tpm_conn {
    TSS2_TCTI_CONTEXT *tcti;
    ESYS_CONTEXT *esys;
} tpm_conn;

/* tcti: a TCTI configuration string ("device:/dev/tpmrm0", "swtpm:path=/run/swtpm.sock"). */
idevs_err tpm_open(const char *tcti, tpm_conn *t, char *why, size_t why_len);
void tpm_close(tpm_conn *t);
/* "TPM2_Quote failed: <what the TSS says>" */
idevs_err tpm_fail(TSS2_RC rc, const char *what, char *why, size_t why_len);

/* <state_dir>/tpm, made 0700 when create and absent; checked as the launcher's state directories are. */
idevs_err tpm_dir_open(const char *state_dir, bool create, int *dirfd, char *why, size_t why_len);

/* The storage root key: the TCG's ECC P-256 SRK template under the owner hierarchy (empty owner auth). */
idevs_err tpm_srk(tpm_conn *t, ESYS_TR *srk, char *why, size_t why_len);
/* The EK from the TCG's default template (L-1 RSA 2048 or L-2 ECC P-256), its public part in *pub (Esys_Free). */
idevs_err tpm_ek(tpm_conn *t, bool rsa, ESYS_TR *ek, TPM2B_PUBLIC **pub, char *why, size_t why_len);
/* The AK template: ECC P-256, ECDSA-SHA256, fixedTPM|fixedParent|sensitiveDataOrigin|userWithAuth|restricted|sign
 * and noDA. */
void tpm_ak_template(TPM2B_PUBLIC *out);
/* Loads ak.pub and ak.priv of dirfd under srk. *pub (may be NULL) gets the public part. Without the files:
 * IDEVS_ERR_CONFIG naming the enrollment. */
idevs_err tpm_ak_load(tpm_conn *t, int dirfd, ESYS_TR srk, ESYS_TR *ak, TPM2B_PUBLIC *pub, char *why,
                      size_t why_len);
/* An ECC P-256 or RSA TPM public key as OpenSSL sees it (to compare with a certificate); *out: EVP_PKEY_free. */
struct evp_pkey_st;
idevs_err tpm_public_to_pkey(const TPM2B_PUBLIC *pub, struct evp_pkey_st **out);
void tpm_flush(tpm_conn *t, ESYS_TR *handle);
/* Whether NV index is defined (asked with TPM2_GetCapability, so that an absent one is no TSS error log). */
idevs_err tpm_nv_exists(tpm_conn *t, uint32_t index, bool *exists, char *why, size_t why_len);

/* ---- the sealing secret (tpm_seal.c) ---- */
#define TPM_SEALED_SECRET "sealing.tpm"
/* Unseals dirfd's sealing.tpm (the boot PCRs 0-7 must be as when it was sealed: else IDEVS_ERR_UNSEAL, saying so),
 * or, when there is none, makes a fresh secret and seals it to the PCRs as they are. */
idevs_err tpm_sealing_secret(const char *tcti, int dirfd, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                             size_t why_len);

/* ---- the rollback counter (tpm_counter.c) ---- */
#define TPM_COUNTER_BASE 0x01100000u /* in the owner's range of NV indices (0x01000000-0x013fffff) */
/* This program's NV index: TPM_COUNTER_BASE + 16 bits of SHA-256("idevs replay counter v1" || program). */
uint32_t tpm_counter_index(const idevs_uuid *program);
/* Reads the program's counter (defining it when absent) and, when advance_to is above it, increments it up to
 * advance_to (at most 16 steps); *value is the counter's value then, *created whether it was defined now. */
idevs_err tpm_counter(const char *tcti, const idevs_uuid *program, uint64_t advance_to, uint64_t *value,
                      bool *created, char *why, size_t why_len);

/* ---- the event log (tpm_log.c): fixed records of TPM_EVENT_LEN bytes, oldest first ---- */
#define TPM_EVENT_LEN (IDEVS_SHA256_LEN + 16 + IDEVS_SHA256_LEN + IDEVS_SHA256_LEN)
#define TPM_EVENT_LABEL "idevs tpm event v1"
/* Certifications of distinct keys per boot: the report (and the compartment certificate holding it) grows by
 * 122 bytes with each; docs/BACKENDS.md, "tpm". */
#define TPM_EVENTS_MAX 32

typedef struct tpm_log {
    uint8_t (*events)[TPM_EVENT_LEN];
    size_t count;
} tpm_log;

/* digest = SHA-256(TPM_EVENT_LABEL || event) */
idevs_err tpm_event_digest(const uint8_t event[TPM_EVENT_LEN], uint8_t digest[IDEVS_SHA256_LEN]);
/* The register after the first n events, from zero. */
idevs_err tpm_log_replay(const tpm_log *log, size_t n, uint8_t pcr[IDEVS_SHA256_LEN]);
/* Opens (creating) and locks the log of register pcr in dirfd and reads it; *fd stays open and locked until
 * tpm_log_close. */
idevs_err tpm_log_open(int dirfd, unsigned pcr, int *fd, tpm_log *log, char *why, size_t why_len);
/* Keeps the longest prefix of the log that replays to pcr (a log of an earlier boot against a zero register:
 * none; an event appended whose extend was lost: all but it); none replays: IDEVS_ERR_IO. */
idevs_err tpm_log_reconcile(int fd, tpm_log *log, const uint8_t pcr[IDEVS_SHA256_LEN], unsigned pcr_index,
                            char *why, size_t why_len);
/* Appends one event and syncs it to disk (before the register is extended). */
idevs_err tpm_log_append(int fd, tpm_log *log, const uint8_t event[TPM_EVENT_LEN], char *why, size_t why_len);
void tpm_log_close(int fd, tpm_log *log);

#endif
