/* The tpm backend's hardware report (certs/tpm_quote.c): every verifier of a tpm certificate decodes it and checks
 * the quote, the AK certificate and the event log in it before trusting anything it says. Input: the TpmReport
 * bytes, checked against the fixed evidence of fuzz_tpm_world.h under a policy trusting the world's CA.
 *
 * For every input: the result is one of the codes idevs_cert_verify documents for tpm evidence; a refusal has a
 * sentence in why of printable characters only; checking again gives the same answer. */
#include <string.h>

#include "certs_internal.h"
#include "fuzz.h"
#include "fuzz_tpm_world.h"

static fuzz_world world;
static idevs_cert_policy *policy;
static idevs_evidence evidence;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_world_init(&world);
    policy = fuzz_tpm_policy(&world);
    fuzz_tpm_evidence(&evidence);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char why[512] = "unset";
    idevs_err err = certs_tpm_verify(policy, &evidence, data, size, "certificate 'fuzz'", why, sizeof why);
    FUZZ_CHECK(err == IDEVS_OK || err == IDEVS_ERR_EVIDENCE_MALFORMED || err == IDEVS_ERR_TPM_AK_UNTRUSTED ||
               err == IDEVS_ERR_TPM_SIGNATURE || err == IDEVS_ERR_TPM_NOT_QUOTE ||
               err == IDEVS_ERR_TPM_QUOTE_BINDING || err == IDEVS_ERR_TPM_QUOTE_NONCE ||
               err == IDEVS_ERR_TPM_PCR_SELECTION || err == IDEVS_ERR_TPM_PCR_DIGEST ||
               err == IDEVS_ERR_TPM_LOG_REPLAY || err == IDEVS_ERR_TPM_EVENT_MISSING ||
               err == IDEVS_ERR_TPM_BOOT_PCRS || err == IDEVS_ERR_NOMEM);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(why[0] != '\0' && strcmp(why, "unset") != 0);
        for (const char *c = why; *c != '\0'; c++)
            FUZZ_CHECK(*c >= 0x20 && *c <= 0x7e);
    }
    FUZZ_CHECK(certs_tpm_verify(policy, &evidence, data, size, "certificate 'fuzz'", NULL, 0) == err);
    return 0;
}
