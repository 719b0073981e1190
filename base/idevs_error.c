#include "idevs_error.h"

#include <stddef.h>
#include <stdio.h>

struct err_text {
    const char *name;
    const char *sentence;
};

/* Indexed by idevs_err; the static assertion below keeps it in step with the enum. */
static const struct err_text texts[] = {
    [IDEVS_OK] = {"ok", "success"},
    [IDEVS_ERR_NOMEM] = {"nomem", "out of memory"},
    [IDEVS_ERR_INVALID_ARG] = {"invalid_arg", "invalid argument"},
    [IDEVS_ERR_CRYPTO] = {"crypto", "a cryptographic operation failed inside OpenSSL"},
    [IDEVS_ERR_IO] = {"io", "reading or writing a file failed"},
    [IDEVS_ERR_KEY_FILE] = {"key_file", "the key file is unreadable, malformed, or not private to its owner (mode 0600)"},
    [IDEVS_ERR_TOO_LARGE] = {"too_large", "the input is larger than the configured limit"},
    [IDEVS_ERR_MALFORMED] = {"malformed", "the input is not a well-formed idevs message"},
    [IDEVS_ERR_VERSION] = {"version", "the message uses a protocol version this library does not speak"},
    [IDEVS_ERR_SUITE] = {"suite", "the message uses an unknown cipher suite"},
    [IDEVS_ERR_WRONG_RECIPIENT] = {"wrong_recipient", "the envelope is addressed to another identity"},
    [IDEVS_ERR_UNKNOWN_SENDER] = {"unknown_sender", "the sender's certificate is neither in the envelope nor known; fetch it and retry"},
    [IDEVS_ERR_UNKNOWN_RECIPIENT] = {"unknown_recipient", "no certificate is known for the recipient; add it as a peer first"},
    [IDEVS_ERR_SENDER_NOT_ALLOWED] = {"sender_not_allowed", "the sender is not among the identities allowed to send here"},
    [IDEVS_ERR_CERT_DIGEST_MISMATCH] = {"cert_digest_mismatch", "the envelope names a sender certificate other than the one known for that sender"},
    [IDEVS_ERR_EPOCH_SIGNATURE] = {"epoch_signature", "the key epoch offer is not signed by the sender's certified key"},
    [IDEVS_ERR_EPOCH_CONFLICT] = {"epoch_conflict", "two different key offers claim the same epoch of this sender"},
    [IDEVS_ERR_EPOCH_EXPIRED] = {"epoch_expired", "the key epoch was replaced and its grace period is over"},
    [IDEVS_ERR_EPOCH_STALE] = {"epoch_stale", "the key epoch is older than the receiver accepts"},
    [IDEVS_ERR_EPOCH_FUTURE] = {"epoch_future", "the key epoch lies in the future beyond the allowed clock skew"},
    [IDEVS_ERR_REPLAY] = {"replay", "duplicate: a message with this sequence number was already accepted"},
    [IDEVS_ERR_OUTSIDE_WINDOW] = {"outside_window", "the sequence number is too old for the replay window"},
    [IDEVS_ERR_DECRYPT] = {"decrypt", "authentication failed: the envelope was altered, or opened on a topic other than the one it was sealed for"},
    [IDEVS_ERR_PEER_LIMIT] = {"peer_limit", "too many peers are known; raise the limit or remove peers"},
    [IDEVS_ERR_SEQUENCE_EXHAUSTED] = {"sequence_exhausted", "the sequence numbers of the epoch are used up"},
    [IDEVS_ERR_CERT_MALFORMED] = {"cert_malformed", "the certificate cannot be parsed as DER X.509"},
    [IDEVS_ERR_CERT_NOT_IDEVS] = {"cert_not_idevs", "the certificate lacks an idevs identity (urn:uuid name, Ed25519 key, X25519 agreement key)"},
    [IDEVS_ERR_CERT_UNTRUSTED] = {"cert_untrusted", "the certificate does not chain to a trusted operator CA"},
    [IDEVS_ERR_CERT_EXPIRED] = {"cert_expired", "the certificate or one above it has expired"},
    [IDEVS_ERR_CERT_NOT_YET_VALID] = {"cert_not_yet_valid", "the certificate or one above it is not valid yet"},
    [IDEVS_ERR_EVIDENCE_MISSING] = {"evidence_missing", "the certificate carries no attestation evidence, and the policy requires it"},
    [IDEVS_ERR_EVIDENCE_MALFORMED] = {"evidence_malformed", "the attestation evidence cannot be decoded or has fields of the wrong size"},
    [IDEVS_ERR_KEY_BINDING_MISMATCH] = {"key_binding_mismatch", "the evidence is bound to other public keys than the certificate's"},
    [IDEVS_ERR_BACKEND_NOT_ALLOWED] = {"backend_not_allowed", "the compartment's isolation backend is not allowed by the policy"},
    [IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN] = {"process_backend_not_opted_in", "the compartment runs on the 'process' backend (no hardware isolation) and the policy did not opt in to accept it"},
    [IDEVS_ERR_DEBUG_NOT_ALLOWED] = {"debug_not_allowed", "the compartment runs in debug mode and the policy does not allow it"},
    [IDEVS_ERR_MEASUREMENT_MISMATCH] = {"measurement_mismatch", "the compartment runs code whose measurement the policy does not expect"},
    [IDEVS_ERR_DESCRIPTOR_MISMATCH] = {"descriptor_mismatch", "the compartment runs a deployment descriptor other than the expected one"},
    [IDEVS_ERR_PROGRAM_MISMATCH] = {"program_mismatch", "the compartment runs another integration process than the expected one"},
    [IDEVS_ERR_NONCE_MISMATCH] = {"nonce_mismatch", "the evidence does not answer the verifier's challenge nonce"},
    [IDEVS_ERR_CONFIG] = {"config", "the configuration or deployment descriptor is invalid"},
    [IDEVS_ERR_UNKNOWN_INPUT] = {"unknown_input", "no input of that name or topic is declared in the deployment"},
    [IDEVS_ERR_UNKNOWN_OUTPUT] = {"unknown_output", "no output of that name is declared in the deployment"},
    [IDEVS_ERR_UNKNOWN_REQUEST] = {"unknown_request", "no request of that name is declared in the deployment"},
    [IDEVS_ERR_NOT_NOW] = {"not_now", "the call is not allowed at this point (e.g. emitting outside a handler)"},
    [IDEVS_ERR_LOGIC] = {"logic", "the integration logic failed or refused the event"},
    [IDEVS_ERR_FRAME] = {"frame", "a malformed, oversized or unexpected frame on the compartment channel"},
    [IDEVS_ERR_CHANNEL_CLOSED] = {"channel_closed", "the other end of the compartment channel is gone"},
    [IDEVS_ERR_TIMEOUT] = {"timeout", "the other side did not answer in time"},
    [IDEVS_ERR_QUEUE_FULL] = {"queue_full", "the queue towards the compartment is full"},
    [IDEVS_ERR_SPAWN] = {"spawn", "the compartment could not be started"},
    [IDEVS_ERR_SANDBOX] = {"sandbox", "the sandbox could not be set up"},
    [IDEVS_ERR_UNSEAL] = {"unseal", "the sealed keys cannot be opened by this measurement"},
    [IDEVS_ERR_EMIT_LIMIT] = {"emit_limit", "the logic emitted more envelopes or bytes for one event than allowed"},
    [IDEVS_ERR_SANDBOX_VIOLATION] = {"sandbox_violation", "a system call outside the sandbox allowlist ended the compartment"},
    [IDEVS_ERR_DUPLICATE] = {"duplicate", "a copy of an envelope the same client delivered before (an MQTT retransmission), not processed twice"},
    [IDEVS_ERR_BROKER] = {"broker", "the MQTT broker refused or dropped the connection, or refused a request"},
    [IDEVS_ERR_ALREADY_DONE] = {"already_done", "the message was handled already: it is receipted again, not run again"},
    [IDEVS_ERR_EPOCH_FORGOTTEN] = {"epoch_forgotten", "the key epoch is older than those the replay record keeps for its sender's instance (possibly done already)"},
    [IDEVS_ERR_QUEUE_CLIENT_SHARE] = {"queue_client_share", "the publishing client already holds its share of the queue towards the compartment"},
    [IDEVS_ERR_QUEUE_SENDER_SHARE] = {"queue_sender_share", "envelopes naming this sender already hold their share of the queue towards the compartment"},
    [IDEVS_ERR_OLD_VERSION] = {"old_version", "the envelope is of format version 1, which is no longer accepted: its sender must be upgraded to version 2"},
    [IDEVS_ERR_PADDING] = {"padding", "the opened plaintext's framing or padding is invalid (provenance count, payload length or a non-zero padding byte)"},
    [IDEVS_ERR_NOT_OWNER] = {"not_owner", "the input's partition is owned by another broker serving this process"},
    [IDEVS_ERR_JOINING] = {"joining", "this host's compartment is joining the process and holds none of its keys yet: nothing is routed to it"},
    [IDEVS_ERR_TPM_AK_UNTRUSTED] = {"tpm_ak_untrusted", "the TPM attestation key certificate is not from a trusted AK CA, not valid now, or not marked as an idevs attestation key"},
    [IDEVS_ERR_TPM_SIGNATURE] = {"tpm_signature", "the TPM quote's signature does not verify with the attestation key"},
    [IDEVS_ERR_TPM_NOT_QUOTE] = {"tpm_not_quote", "the signed TPM structure is not a quote generated by a TPM"},
    [IDEVS_ERR_TPM_QUOTE_BINDING] = {"tpm_quote_binding", "the TPM quote names another key binding than the certificate's"},
    [IDEVS_ERR_TPM_QUOTE_NONCE] = {"tpm_quote_nonce", "the TPM quote names another nonce than the evidence (a stale or replayed quote)"},
    [IDEVS_ERR_TPM_PCR_SELECTION] = {"tpm_pcr_selection", "the TPM quote does not cover exactly the SHA-256 PCRs 0 to 7 and the register"},
    [IDEVS_ERR_TPM_PCR_DIGEST] = {"tpm_pcr_digest", "the listed PCR values do not match the TPM quote's PCR digest"},
    [IDEVS_ERR_TPM_LOG_REPLAY] = {"tpm_log_replay", "the event log does not replay to the quoted register (reset, extended outside the log, or a log entry forged or missing)"},
    [IDEVS_ERR_TPM_EVENT_MISSING] = {"tpm_event_missing", "the event log does not record this certificate's compartment (measurement, program, descriptor, key binding)"},
    [IDEVS_ERR_TPM_BOOT_PCRS] = {"tpm_boot_pcrs", "the host booted with PCR values none of the policy's expected sets has"},
    [IDEVS_ERR_TPM_EK_UNTRUSTED] = {"tpm_ek_untrusted", "the TPM endorsement key certificate does not chain to a configured TPM vendor root"},
    [IDEVS_ERR_TPM_AK_ATTRIBUTES] = {"tpm_ak_attributes", "the attestation key is not a restricted, fixed, TPM-generated ECDSA P-256 signing key"},
    [IDEVS_ERR_TPM_CREDENTIAL] = {"tpm_credential", "the credential returned by the host is not the one the enrollment challenge protected"},
};

_Static_assert(sizeof texts / sizeof texts[0] == IDEVS_ERR_COUNT, "every idevs_err needs a text");

const char *idevs_strerror(idevs_err err)
{
    if ((unsigned)err >= IDEVS_ERR_COUNT || texts[err].sentence == NULL)
        return "unknown idevs error";
    return texts[err].sentence;
}

const char *idevs_err_name(idevs_err err)
{
    if ((unsigned)err >= IDEVS_ERR_COUNT || texts[err].name == NULL)
        return "unknown";
    return texts[err].name;
}

idevs_err idevs_vfail(char *why, size_t why_len, idevs_err err, const char *fmt, va_list ap)
{
    if (why != NULL && why_len > 0)
        vsnprintf(why, why_len, fmt, ap);
    return err;
}

idevs_err idevs_fail(char *why, size_t why_len, idevs_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    idevs_vfail(why, why_len, err, fmt, ap);
    va_end(ap);
    return err;
}

void idevs_why_or_sink(char **why, size_t *why_len, char *sink, size_t sink_len)
{
    if (*why == NULL || *why_len == 0) {
        *why = sink;
        *why_len = sink_len;
    }
}
