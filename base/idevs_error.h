/* Error codes shared by every idevs module. Each failure a caller may need to tell apart has its own code;
 * idevs_strerror() gives a sentence a person understands. */
#ifndef IDEVS_ERROR_H
#define IDEVS_ERROR_H

#include <stdarg.h>
#include <stddef.h>

typedef enum idevs_err {
    IDEVS_OK = 0,
    /* general */
    IDEVS_ERR_NOMEM,
    IDEVS_ERR_INVALID_ARG,
    IDEVS_ERR_CRYPTO,
    IDEVS_ERR_IO,
    IDEVS_ERR_KEY_FILE,
    /* decoding */
    IDEVS_ERR_TOO_LARGE,
    IDEVS_ERR_MALFORMED,
    IDEVS_ERR_VERSION,
    IDEVS_ERR_SUITE,
    /* envelope */
    IDEVS_ERR_WRONG_RECIPIENT,
    IDEVS_ERR_UNKNOWN_SENDER,
    IDEVS_ERR_UNKNOWN_RECIPIENT,
    IDEVS_ERR_SENDER_NOT_ALLOWED,
    IDEVS_ERR_CERT_DIGEST_MISMATCH,
    IDEVS_ERR_EPOCH_SIGNATURE,
    IDEVS_ERR_EPOCH_CONFLICT,
    IDEVS_ERR_EPOCH_EXPIRED,
    IDEVS_ERR_EPOCH_STALE,
    IDEVS_ERR_EPOCH_FUTURE,
    IDEVS_ERR_REPLAY,
    IDEVS_ERR_OUTSIDE_WINDOW,
    IDEVS_ERR_DECRYPT,
    IDEVS_ERR_PEER_LIMIT,
    IDEVS_ERR_SEQUENCE_EXHAUSTED,
    /* certificates and attestation */
    IDEVS_ERR_CERT_MALFORMED,
    IDEVS_ERR_CERT_NOT_IDEVS,
    IDEVS_ERR_CERT_UNTRUSTED,
    IDEVS_ERR_CERT_EXPIRED,
    IDEVS_ERR_CERT_NOT_YET_VALID,
    IDEVS_ERR_EVIDENCE_MISSING,
    IDEVS_ERR_EVIDENCE_MALFORMED,
    IDEVS_ERR_KEY_BINDING_MISMATCH,
    IDEVS_ERR_BACKEND_NOT_ALLOWED,
    IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN,
    IDEVS_ERR_DEBUG_NOT_ALLOWED,
    IDEVS_ERR_MEASUREMENT_MISMATCH,
    IDEVS_ERR_DESCRIPTOR_MISMATCH,
    IDEVS_ERR_PROGRAM_MISMATCH,
    IDEVS_ERR_NONCE_MISMATCH,
    /* compartment, bridge and deployment */
    IDEVS_ERR_CONFIG,
    IDEVS_ERR_UNKNOWN_INPUT,
    IDEVS_ERR_UNKNOWN_OUTPUT,
    IDEVS_ERR_UNKNOWN_REQUEST,
    IDEVS_ERR_NOT_NOW,
    IDEVS_ERR_LOGIC,
    IDEVS_ERR_FRAME,
    IDEVS_ERR_CHANNEL_CLOSED,
    IDEVS_ERR_TIMEOUT,
    IDEVS_ERR_QUEUE_FULL,
    IDEVS_ERR_SPAWN,
    IDEVS_ERR_SANDBOX,
    IDEVS_ERR_UNSEAL,
    IDEVS_ERR_EMIT_LIMIT,
    IDEVS_ERR_SANDBOX_VIOLATION,
    IDEVS_ERR_DUPLICATE,
    /* services */
    IDEVS_ERR_BROKER,
    /* appended: codes travel in frames and are never renumbered */
    IDEVS_ERR_EPOCH_FORGOTTEN, /* the launcher's replay record: older than the epochs it keeps of the instance */
    IDEVS_ERR_ALREADY_DONE,    /* a message sent again that was handled already: receipted again, not run */
    IDEVS_ERR_QUEUE_CLIENT_SHARE, /* the launcher's queue: the publishing client holds its share already */
    IDEVS_ERR_QUEUE_SENDER_SHARE, /* the launcher's queue: envelopes naming this sender hold their share already */
    IDEVS_ERR_OLD_VERSION,        /* an envelope of format version 1: refused, never opened (no downgrade) */
    IDEVS_ERR_PADDING,            /* an opened plaintext whose framing or padding is wrong (a broken sender) */
    IDEVS_ERR_NOT_OWNER,          /* an input of a partition another broker owns (docs/SCALING.md): not routed here */
    IDEVS_ERR_JOINING,            /* the launcher's process is joining: no instance here holds its keys yet */
    /* the tpm backend's evidence (certs/tpm_quote.h) and its enrollment (certs/tpm_enroll.h) */
    IDEVS_ERR_TPM_AK_UNTRUSTED,   /* the AK certificate: not from an AK CA, not valid now, or not an idevs AK */
    IDEVS_ERR_TPM_SIGNATURE,      /* the quote's signature does not verify with the AK certificate's key */
    IDEVS_ERR_TPM_NOT_QUOTE,      /* the signed structure is not a TPM-generated quote */
    IDEVS_ERR_TPM_QUOTE_BINDING,  /* the quote's qualifying data names another key binding */
    IDEVS_ERR_TPM_QUOTE_NONCE,    /* the quote's qualifying data names another nonce than the evidence */
    IDEVS_ERR_TPM_PCR_SELECTION,  /* the quote covers other PCRs than 0-7 and the register, SHA-256 */
    IDEVS_ERR_TPM_PCR_DIGEST,     /* the listed PCR values do not hash to the quote's pcrDigest */
    IDEVS_ERR_TPM_LOG_REPLAY,     /* the event log does not replay to the quoted register */
    IDEVS_ERR_TPM_EVENT_MISSING,  /* the event log lacks this certificate's event */
    IDEVS_ERR_TPM_BOOT_PCRS,      /* the boot PCRs match none of the policy's expected sets */
    IDEVS_ERR_TPM_EK_UNTRUSTED,   /* enrollment: the EK certificate does not chain to a TPM vendor root */
    IDEVS_ERR_TPM_AK_ATTRIBUTES,  /* enrollment: the AK is not a restricted, fixed, TPM-made ECDSA P-256 key */
    IDEVS_ERR_TPM_CREDENTIAL,     /* enrollment: the host's credential is not the one the challenge hid */
    IDEVS_ERR_COUNT /* number of codes; not an error */
} idevs_err;

/* A static, human-readable sentence for err; never NULL, also for out-of-range values. */
const char *idevs_strerror(idevs_err err);

/* A short stable identifier ("replay", "decrypt", ...) for counters and metrics; never NULL. */
const char *idevs_err_name(idevs_err err);

/* The `why` sentence of a failure: formats fmt into why (when why is not NULL and why_len > 0; cut to fit,
 * always NUL-terminated) and returns err, so that a failure reads `return idevs_fail(why, why_len, err, ...)`. */
idevs_err idevs_fail(char *why, size_t why_len, idevs_err err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
idevs_err idevs_vfail(char *why, size_t why_len, idevs_err err, const char *fmt, va_list ap)
    __attribute__((format(printf, 4, 0)));

/* For a function whose caller may pass no why buffer (NULL or why_len 0): points *why and *why_len at the caller's
 * sink instead, so that the function can write its sentence unconditionally. */
void idevs_why_or_sink(char **why, size_t *why_len, char *sink, size_t sink_len);

#endif
