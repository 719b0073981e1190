/* Named policy settings, so that every tool and configuration file spells a policy the same way. */
#include <stdio.h>
#include <string.h>

#include "idevs_cert.h"
#include "idevs_hex.h"

enum arity { NO_VALUE, VALUE };

static const struct setting {
    const char *name;
    enum arity arity;
} settings[] = {
    {"ca", VALUE},
    {"require-evidence", NO_VALUE},
    {"allow-backend", VALUE},
    {"allow-process-backend-insecure", NO_VALUE},
    {"allow-debug-insecure", NO_VALUE},
    {"measurement", VALUE},
    {"descriptor-digest", VALUE},
    {"descriptor", VALUE},
    {"program", VALUE},
    {"nonce", VALUE},
    {"tpm-ak-ca", VALUE},
    {"tpm-pcrs", VALUE},
};

static const struct setting *find(const char *name)
{
    for (size_t i = 0; name != NULL && i < sizeof settings / sizeof settings[0]; i++)
        if (strcmp(settings[i].name, name) == 0)
            return &settings[i];
    return NULL;
}

bool idevs_cert_policy_is_setting(const char *name, bool *takes_value)
{
    const struct setting *s = find(name);
    if (s != NULL && takes_value != NULL)
        *takes_value = s->arity == VALUE;
    return s != NULL;
}

/* "I=HEX,I=HEX,...": each I a boot PCR 0..7 at most once, each HEX 64 digits. */
static bool parse_pcr_set(const char *value, uint8_t *mask, uint8_t values[IDEVS_TPM_BOOT_PCRS][IDEVS_SHA256_LEN],
                          char *why, size_t why_len)
{
    *mask = 0;
    const char *p = value;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char hex[2 * IDEVS_SHA256_LEN + 1];
        if (len != 2 + 2 * IDEVS_SHA256_LEN || p[0] < '0' || p[0] > '7' || p[1] != '=') {
            snprintf(why, why_len, "tpm-pcrs: expected I=HEX with I 0 to 7 and 64 hex digits, got '%.*s'",
                     (int)(len > 80 ? 80 : len), p);
            return false;
        }
        unsigned i = (unsigned)(p[0] - '0');
        memcpy(hex, p + 2, 2 * IDEVS_SHA256_LEN);
        hex[2 * IDEVS_SHA256_LEN] = '\0';
        if ((*mask & (1u << i)) != 0 || !idevs_hex_decode(hex, values[i], IDEVS_SHA256_LEN)) {
            snprintf(why, why_len, "tpm-pcrs: PCR %u given twice or not 64 hex digits", i);
            return false;
        }
        *mask |= (uint8_t)(1u << i);
        if (comma == NULL)
            return true;
        p = comma + 1;
    }
}

#define FAIL(code, ...)                                   \
    do {                                                  \
        if (why != NULL && why_len > 0)                   \
            snprintf(why, why_len, __VA_ARGS__);          \
        return (code);                                    \
    } while (0)

idevs_err idevs_cert_policy_apply(idevs_cert_policy *policy, const char *name, const char *value, char *why,
                                  size_t why_len)
{
    const struct setting *s = find(name);
    if (policy == NULL || s == NULL)
        FAIL(IDEVS_ERR_INVALID_ARG, "unknown policy setting '%s'", name ? name : "(null)");
    if ((s->arity == VALUE) != (value != NULL))
        FAIL(IDEVS_ERR_INVALID_ARG, "policy setting '%s' %s", name, s->arity == VALUE ? "needs a value" : "takes no value");

    uint8_t digest[IDEVS_SHA256_LEN];
    idevs_err err;
    if (strcmp(name, "ca") == 0) {
        if ((err = idevs_cert_policy_add_ca_file(policy, value)) != IDEVS_OK)
            FAIL(err, "ca: cannot use '%s' as operator CA: %s", value, idevs_strerror(err));
    } else if (strcmp(name, "require-evidence") == 0) {
        idevs_cert_policy_require_evidence(policy, true);
    } else if (strcmp(name, "allow-backend") == 0) {
        idevs_backend backend;
        if (idevs_backend_parse(value, &backend) != IDEVS_OK)
            FAIL(IDEVS_ERR_INVALID_ARG, "allow-backend: unknown backend '%s' (sgx, tdx, sev-snp, nitro, cheri, tpm)",
                 value);
        if (idevs_cert_policy_allow_backend(policy, backend) != IDEVS_OK)
            FAIL(IDEVS_ERR_INVALID_ARG,
                 "allow-backend: '%s' cannot be allowed this way; use allow-process-backend-insecure", value);
    } else if (strcmp(name, "allow-process-backend-insecure") == 0) {
        idevs_cert_policy_allow_process_backend_insecure(policy);
    } else if (strcmp(name, "allow-debug-insecure") == 0) {
        idevs_cert_policy_allow_debug_insecure(policy);
    } else if (strcmp(name, "measurement") == 0) {
        if (!idevs_hex_decode(value, digest, sizeof digest))
            FAIL(IDEVS_ERR_INVALID_ARG, "measurement: expected 64 hex digits, got '%.80s'", value);
        if ((err = idevs_cert_policy_add_measurement(policy, digest)) != IDEVS_OK)
            FAIL(err, "measurement: %s", idevs_strerror(err));
    } else if (strcmp(name, "descriptor-digest") == 0) {
        if (!idevs_hex_decode(value, digest, sizeof digest))
            FAIL(IDEVS_ERR_INVALID_ARG, "descriptor-digest: expected 64 hex digits, got '%.80s'", value);
        idevs_cert_policy_expect_descriptor(policy, digest);
    } else if (strcmp(name, "descriptor") == 0) {
        if (idevs_sha256_file(value, digest) != IDEVS_OK)
            FAIL(IDEVS_ERR_IO, "descriptor: cannot read '%s'", value);
        idevs_cert_policy_expect_descriptor(policy, digest);
    } else if (strcmp(name, "program") == 0) {
        idevs_uuid program;
        if (idevs_uuid_parse(value, &program) != IDEVS_OK)
            FAIL(IDEVS_ERR_INVALID_ARG, "program: '%.80s' is not a UUID", value);
        idevs_cert_policy_expect_program(policy, &program);
    } else if (strcmp(name, "tpm-ak-ca") == 0) {
        if ((err = idevs_cert_policy_add_tpm_ak_ca_file(policy, value)) != IDEVS_OK)
            FAIL(err, "tpm-ak-ca: cannot use '%s' as AK CA: %s", value, idevs_strerror(err));
    } else if (strcmp(name, "tpm-pcrs") == 0) {
        uint8_t mask, values[IDEVS_TPM_BOOT_PCRS][IDEVS_SHA256_LEN];
        char sink[160];
        if (!parse_pcr_set(value, &mask, values, why != NULL ? why : sink, why != NULL ? why_len : sizeof sink))
            return IDEVS_ERR_INVALID_ARG;
        if ((err = idevs_cert_policy_add_tpm_pcrs(policy, mask, values)) != IDEVS_OK)
            FAIL(err, "tpm-pcrs: %s", idevs_strerror(err));
    } else { /* nonce */
        uint8_t nonce[IDEVS_EVIDENCE_NONCE_MAX];
        size_t len = strlen(value) / 2;
        if (len < IDEVS_EVIDENCE_NONCE_MIN || len > IDEVS_EVIDENCE_NONCE_MAX || !idevs_hex_decode(value, nonce, len))
            FAIL(IDEVS_ERR_INVALID_ARG, "nonce: expected %d to %d bytes in hex", IDEVS_EVIDENCE_NONCE_MIN,
                 IDEVS_EVIDENCE_NONCE_MAX);
        if ((err = idevs_cert_policy_expect_nonce(policy, nonce, len)) != IDEVS_OK)
            FAIL(err, "nonce: %s", idevs_strerror(err));
    }
    return IDEVS_OK;
}
