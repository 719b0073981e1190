/* Certificate chain verification (certs/verify.c, evidence.c, extensions.c): every service runs it on the
 * compartment's chain from a retained topic, and every receiver on the chain an envelope carries. Input: one
 * byte choosing the policy (bit 0: a compartment's, which requires process-backend evidence with the world's
 * measurement and descriptor digest; else a service's), then up to IDEVS_CHAIN_MAX + 1 certificates, each
 * a 2-byte big-endian length and that many DER bytes. The world trusts the test vectors' operator CA.
 *
 * For every input: the result is a known code; a refusal has a sentence in why and leaves info zeroed; an
 * accepted chain gives info for the leaf (its digest is SHA-256 of the leaf's DER, its name valid) and, under
 * the compartment policy, the evidence the policy asked for; verifying again gives the same answer. */
#include <string.h>

#include "fuzz.h"
#include "fuzz_world.h"
#include "idevs_crypto.h"

static fuzz_world world;
static idevs_cert_policy *service_policy, *compartment_policy;

/* Trusts the world's CA, at the time of the run: the seeds' compartment chain is issued when they are written
 * (make_seeds.c), valid for a century from then. */
static idevs_cert_policy *policy_new(void)
{
    const unsigned char *p = world.ca_der;
    X509 *ca = d2i_X509(NULL, &p, (long)world.ca_der_len);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    FUZZ_SETUP(ca != NULL && policy != NULL && idevs_cert_policy_add_ca(policy, ca) == IDEVS_OK);
    X509_free(ca);
    return policy;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_world_init(&world);
    service_policy = policy_new();
    compartment_policy = policy_new();
    FUZZ_SETUP(idevs_cert_policy_add_measurement(compartment_policy, world.measurement) == IDEVS_OK);
    idevs_cert_policy_require_evidence(compartment_policy, true);
    idevs_cert_policy_allow_process_backend_insecure(compartment_policy);
    idevs_cert_policy_expect_descriptor(compartment_policy, world.descriptor);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int compartment = data[0] & 1;
    const idevs_cert_policy *policy = compartment ? compartment_policy : service_policy;
    const uint8_t *der[IDEVS_CHAIN_MAX + 1];
    size_t der_len[IDEVS_CHAIN_MAX + 1], count = 0, at = 1;
    while (count < IDEVS_CHAIN_MAX + 1 && size - at >= 2) {
        size_t len = (size_t)data[at] << 8 | data[at + 1];
        at += 2;
        if (len > size - at)
            len = size - at;
        der[count] = data + at;
        der_len[count++] = len;
        at += len;
    }
    if (count == 0)
        return 0;

    idevs_cert_info info;
    char why[512] = "unset";
    idevs_err err = idevs_cert_verify(policy, der, der_len, count, &info, why, sizeof why);
    FUZZ_CHECK(err >= IDEVS_OK && err < IDEVS_ERR_COUNT);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(why[0] != '\0' && strcmp(why, "unset") != 0);
        FUZZ_CHECK(fuzz_all_zero(&info, sizeof info));
    } else {
        FUZZ_CHECK(why[0] == '\0');
        uint8_t digest[IDEVS_SHA256_LEN];
        FUZZ_CHECK(idevs_sha256(der[0], der_len[0], digest) == IDEVS_OK);
        FUZZ_CHECK(memcmp(digest, info.cert_digest, sizeof digest) == 0);
        FUZZ_CHECK(idevs_name_valid(info.name));
        if (compartment) {
            FUZZ_CHECK(info.has_evidence && info.evidence.backend == IDEVS_BACKEND_PROCESS);
            FUZZ_CHECK(memcmp(info.evidence.measurement, world.measurement, 32) == 0);
            FUZZ_CHECK(memcmp(info.evidence.descriptor_digest, world.descriptor, 32) == 0);
            FUZZ_CHECK(idevs_uuid_equal(&info.evidence.program_uuid, &info.uuid));
        }
    }
    idevs_cert_info again;
    FUZZ_CHECK(idevs_cert_verify(policy, der, der_len, count, &again, NULL, 0) == err);
    return 0;
}
