/* Isolation backends: what starts a compartment and vouches for it. The launcher drives every backend through
 * the same four operations (docs/BACKENDS.md maps SGX, TDX, SEV-SNP, Nitro and CHERI onto them):
 *
 *   measure      fix the code to run (host program, logic, deployment descriptor) so that it cannot change
 *                afterwards, and compute its measurement;
 *   launch       start exactly what was measured, connected to the launcher by a channel;
 *   evidence     state, for a set of public keys the compartment generated, which backend isolates it and
 *                which code it runs (the idevs_evidence of a compartment certificate, with the hardware's own
 *                report when there is hardware);
 *   sealing_key  a key only this measurement on this host obtains, under which the compartment keeps its
 *                private keys across restarts.
 *
 * `process` (backend_process.c): a sandboxed Linux process started from sealed memfds. Its evidence is signed by
 * the launcher, so the broker host is part of the trusted base. `tpm` (backend_tpm.c): the same process, with a
 * TPM 2.0 quote of the boot PCRs and of a register the launcher extends with each certification.
 *
 * measurement = SHA-256("idevs measurement v2" || SHA-256(host program) || SHA-256(logic)
 *                       || SHA-256(descriptor bytes))
 * the rule `idevs-ca attest --measure HOST --measure LOGIC --measure DESCRIPTOR` applies too. */
#ifndef IDEVS_BACKEND_H
#define IDEVS_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "idevs_cert.h"
#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_uuid.h"

#define IDEVS_MEASUREMENT_LABEL "idevs measurement v2"
#define IDEVS_SEALING_KEY_LABEL "idevs sealing key v1"
#define IDEVS_SEALING_KEY_LEN 32
#define IDEVS_EVIDENCE_NONCE_LEN 32          /* the nonce the launcher puts in each evidence */
#define IDEVS_IMAGE_FILE_MAX (64u * 1024u * 1024u) /* bytes of a host program or a logic */

/* What measure() fixed: the code as the backend will run it, and its digests. */
typedef struct idevs_image {
    int host_fd;  /* process backend: sealed memfd holding the host program; -1 otherwise */
    int logic_fd; /* process backend: sealed memfd holding the logic; -1 otherwise */
    uint8_t host_digest[IDEVS_SHA256_LEN];
    uint8_t logic_digest[IDEVS_SHA256_LEN];
    uint8_t descriptor_digest[IDEVS_SHA256_LEN];
    uint8_t measurement[IDEVS_SHA256_LEN];
} idevs_image;

/* A started compartment. The launcher signals only this pid (through pidfd when the kernel has it) and reaps
 * it itself. */
typedef struct idevs_child {
    pid_t pid;
    int pidfd;      /* readable once the child exited; -1 when the kernel lacks pidfd_open() */
    int channel_fd; /* the launcher's end of the channel (SOCK_CLOEXEC) */
} idevs_child;

typedef struct idevs_backend_impl idevs_backend_impl;

/* The operations a backend implements. state is the backend's own. Each failure writes a sentence to why. */
typedef struct idevs_backend_ops {
    idevs_backend kind; /* the value evidence carries */
    idevs_err (*measure)(void *state, const char *host_path, const char *logic_path, const uint8_t *descriptor,
                         size_t descriptor_len, idevs_image *out, char *why, size_t why_len);
    idevs_err (*launch)(void *state, const idevs_image *image, idevs_child *out, char *why, size_t why_len);
    /* Fills everything of *ev but the caller's choices: backend, measurement, descriptor digest, program,
     * key binding, issued_at, nonce (IDEVS_EVIDENCE_NONCE_LEN fresh bytes), flags, hardware report. */
    idevs_err (*evidence)(void *state, const idevs_image *image, const idevs_uuid *program,
                          const uint8_t key_binding[IDEVS_SHA256_LEN], idevs_evidence *ev, char *why, size_t why_len);
    idevs_err (*sealing_key)(void *state, const idevs_image *image, uint8_t key[IDEVS_SEALING_KEY_LEN], char *why,
                             size_t why_len);
    /* Optional: the secret the launcher's own state (the replay record's HMAC key) derives from. NULL: the
     * state directory's sealing.key, as the process backend's sealing key. */
    idevs_err (*state_secret)(void *state, uint8_t secret[32], char *why, size_t why_len);
    /* Optional: a counter outside the state directory that only goes up, for the replay record (tpm: an NV
     * counter per program). Reads it (*created: it did not exist and was made now) and, when advance_to is
     * above it, advances it to advance_to; *value is its value then. NULL: no rollback detection. */
    idevs_err (*rollback_counter)(void *state, const idevs_uuid *program, uint64_t advance_to, uint64_t *value,
                                  bool *created, char *why, size_t why_len);
    void (*release_image)(void *state, idevs_image *image);
    void (*free)(void *state);
} idevs_backend_ops;

/* ---- the process backend ---- */

typedef struct idevs_process_backend_options {
    const char *state_dir; /* holds sealing.key (32 random bytes, 0600, created on first use) */
    /* When the launcher runs as root, the compartment runs as this user and its primary group (NULL: "nobody").
     * Resolved once, here. Ignored for a launcher that is not root. */
    const char *run_as;
} idevs_process_backend_options;

idevs_err idevs_backend_process_new(const idevs_process_backend_options *opts, idevs_backend_impl **out, char *why,
                                    size_t why_len);

/* ---- the tpm backend (backend_tpm.c, docs/BACKENDS.md "tpm") ---- */

#define IDEVS_TPM_PCR_DEFAULT 15 /* the register: docs/BACKENDS.md says why this one */

typedef struct idevs_tpm_backend_options {
    const char *state_dir;     /* as the process backend's: sealing.key, sealed blobs */
    const char *tpm_state_dir; /* holds tpm/ (the AK, its certificate, the event log), shared by a broker's
                                * processes; NULL: state_dir */
    const char *run_as;        /* as the process backend's */
    const char *tcti;          /* "device:/dev/tpmrm0", "swtpm:path=/run/swtpm.sock", ... */
    unsigned pcr;              /* the register, one of 8-15 */
} idevs_tpm_backend_options;

/* Refuses without an AK certificate (enrollment not done) or when the TPM does not load the AK. */
idevs_err idevs_backend_tpm_new(const idevs_tpm_backend_options *opts, idevs_backend_impl **out, char *why,
                                size_t why_len);
/* The register rule: 8-15 (16 and 23 are resettable at locality 0, 0-7 are the boot PCRs). */
idevs_err idevs_tpm_pcr_check(unsigned pcr, char *why, size_t why_len);

/* ---- any backend ---- */

idevs_backend idevs_backend_kind(const idevs_backend_impl *b);

/* Reads the two files once into the form the backend runs and measures that form. *image is then the caller's,
 * to release with idevs_backend_release_image(). */
idevs_err idevs_backend_measure(idevs_backend_impl *b, const char *host_path, const char *logic_path,
                                const uint8_t *descriptor, size_t descriptor_len, idevs_image *image, char *why,
                                size_t why_len);
/* Starts what image holds. The child gets the channel as fd 3 and (process backend) the logic as fd 4. */
idevs_err idevs_backend_launch(idevs_backend_impl *b, const idevs_image *image, idevs_child *child, char *why,
                               size_t why_len);
idevs_err idevs_backend_evidence(idevs_backend_impl *b, const idevs_image *image, const idevs_uuid *program,
                                 const uint8_t key_binding[IDEVS_SHA256_LEN], idevs_evidence *ev, char *why,
                                 size_t why_len);
/* The key the compartment seals its private keys under; the caller cleanses it after use. */
idevs_err idevs_backend_sealing_key(idevs_backend_impl *b, const idevs_image *image,
                                    uint8_t key[IDEVS_SEALING_KEY_LEN], char *why, size_t why_len);
void idevs_backend_release_image(idevs_backend_impl *b, idevs_image *image);
void idevs_backend_free(idevs_backend_impl *b);

/* measurement = SHA-256(IDEVS_MEASUREMENT_LABEL || host || logic || descriptor), the three being SHA-256s. */
idevs_err idevs_measurement(const uint8_t host[IDEVS_SHA256_LEN], const uint8_t logic[IDEVS_SHA256_LEN],
                            const uint8_t descriptor[IDEVS_SHA256_LEN], uint8_t out[IDEVS_SHA256_LEN]);

#endif
