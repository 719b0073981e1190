/* Verification of an idevs certificate chain under a policy, in the order idevs_cert.h gives. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "certs_internal.h"
#include "idevs_hex.h"

struct subject {
    char label[IDEVS_NAME_MAX + CERTS_URN_LEN + 32]; /* "certificate 'taxi' (urn:uuid:...)" */
};

idevs_err certs_fail(char *why, size_t why_len, idevs_err err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    idevs_vfail(why, why_len, err, fmt, ap);
    va_end(ap);
    ERR_clear_error();
    return err;
}

/* A printable name for any certificate: its idevs name, or its CN with unusual characters replaced. */
static void cert_name(X509 *cert, char *out, size_t out_len)
{
    char buf[IDEVS_NAME_MAX + 1];
    if (certs_get_name(cert, buf) == IDEVS_OK) {
        snprintf(out, out_len, "'%s'", buf);
        return;
    }
    int n = X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, buf, sizeof buf);
    if (n <= 0) {
        snprintf(out, out_len, "without a name");
        return;
    }
    for (int i = 0; i < n && buf[i] != '\0'; i++)
        if (buf[i] < 0x20 || buf[i] > 0x7e || buf[i] == '\'')
            buf[i] = '?';
    snprintf(out, out_len, "'%s'", buf);
}

static void describe(X509 *cert, struct subject *s)
{
    char name[IDEVS_NAME_MAX + 16], u[IDEVS_UUID_STR_LEN];
    idevs_uuid uuid;
    cert_name(cert, name, sizeof name);
    if (certs_get_uuid_san(cert, &uuid) == IDEVS_OK) {
        idevs_uuid_format(&uuid, u);
        snprintf(s->label, sizeof s->label, "certificate %s (" CERTS_URN_PREFIX "%s)", name, u);
    } else {
        snprintf(s->label, sizeof s->label, "certificate %s", name);
    }
    ERR_clear_error();
}

static void format_time(const ASN1_TIME *t, char *out, size_t out_len)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1 || strftime(out, out_len, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
        snprintf(out, out_len, "an unreadable date");
}

/* Builds and checks the chain to a trust anchor. *below_intermediate tells whether the leaf was issued by
 * an intermediate (an attestation authority) rather than directly by a trust anchor. */
static idevs_err check_chain(const idevs_cert_policy *policy, X509 *leaf, STACK_OF(X509) *untrusted,
                             const struct subject *s, bool *below_intermediate, char *why, size_t why_len)
{
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (ctx == NULL || X509_STORE_CTX_init(ctx, policy->store, leaf, untrusted) != 1) {
        X509_STORE_CTX_free(ctx);
        return certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory verifying %s", s->label);
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    /* CHECK_SS_SIGNATURE: a damaged or forged anchor must not end a chain just because the policy holds it. */
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_CHECK_SS_SIGNATURE);
    /* Level 2 (112 bits) refuses keys under RSA/DSA-2048 or EC-224 and SHA-1/MD5 signatures; level 3 would also
     * refuse RSA-2048 operator CAs, common and still sound. idevs issues Ed25519 (128 bits) only. */
    X509_VERIFY_PARAM_set_auth_level(param, CERTS_AUTH_LEVEL);
    X509_VERIFY_PARAM_set_depth(param, IDEVS_CHAIN_MAX);
    if (policy->at != 0)
        X509_VERIFY_PARAM_set_time(param, policy->at);

    int ok = X509_verify_cert(ctx);
    idevs_err err = IDEVS_OK;
    if (ok == 1) {
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
        *below_intermediate = chain != NULL && sk_X509_num(chain) > 2;
    } else {
        int code = X509_STORE_CTX_get_error(ctx);
        int depth = X509_STORE_CTX_get_error_depth(ctx);
        X509 *bad = X509_STORE_CTX_get_current_cert(ctx);
        char which[IDEVS_NAME_MAX + 64] = "", at[IDEVS_NAME_MAX + 64] = "", when[64];
        if (bad != NULL && depth > 0) {
            char name[IDEVS_NAME_MAX + 16];
            cert_name(bad, name, sizeof name);
            snprintf(which, sizeof which, ": %s above it", name);
            snprintf(at, sizeof at, " (at %s above it)", name);
        }
        if (code == X509_V_ERR_CERT_HAS_EXPIRED) {
            format_time(bad != NULL ? X509_get0_notAfter(bad) : NULL, when, sizeof when);
            err = certs_fail(why, why_len, IDEVS_ERR_CERT_EXPIRED, "%s%s expired on %s", s->label, which, when);
        } else if (code == X509_V_ERR_CERT_NOT_YET_VALID) {
            format_time(bad != NULL ? X509_get0_notBefore(bad) : NULL, when, sizeof when);
            err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_YET_VALID, "%s%s is not valid before %s", s->label, which,
                       when);
        } else {
            err = certs_fail(why, why_len, IDEVS_ERR_CERT_UNTRUSTED, "%s does not chain to a trusted operator CA%s: %s",
                       s->label, at, X509_verify_cert_error_string(code));
        }
    }
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return err;
}

/* The evidence checks after decoding, in the documented order. */
static idevs_err check_evidence(const idevs_cert_policy *policy, const idevs_evidence *ev, const idevs_uuid *san,
                                const struct subject *s, char *why, size_t why_len)
{
    char a[17], b[17];
    if (policy->require_evidence) {
        if (ev->backend == IDEVS_BACKEND_PROCESS) {
            if (!policy->allow_process)
                return certs_fail(why, why_len, IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN,
                            "%s runs on the 'process' backend (no hardware isolation; the broker host's launcher "
                            "signs its evidence) and the policy did not opt in to accept it",
                            s->label);
        } else if ((policy->allowed_backends & (1u << (unsigned)ev->backend)) == 0) {
            return certs_fail(why, why_len, IDEVS_ERR_BACKEND_NOT_ALLOWED,
                        "%s runs on the '%s' backend, which the policy does not allow", s->label,
                        idevs_backend_name(ev->backend));
        }
        if ((ev->flags & IDEVS_EVIDENCE_FLAG_DEBUG) != 0 && !policy->allow_debug)
            return certs_fail(why, why_len, IDEVS_ERR_DEBUG_NOT_ALLOWED,
                        "%s runs in debug mode (it can be inspected) and the policy does not allow debug compartments",
                        s->label);
        if (policy->measurement_count > 0) {
            bool match = false;
            for (size_t i = 0; i < policy->measurement_count; i++)
                match |= idevs_ct_equal(policy->measurements[i], ev->measurement, IDEVS_SHA256_LEN);
            if (!match) {
                idevs_hex_encode(ev->measurement, 8, a); /* the first 8 bytes name it in a message */
                return certs_fail(why, why_len, IDEVS_ERR_MEASUREMENT_MISMATCH,
                            "%s runs code with measurement %s..., which is not among the %zu the policy expects",
                            s->label, a, policy->measurement_count);
            }
        }
        if (policy->has_descriptor && !idevs_ct_equal(policy->descriptor, ev->descriptor_digest, IDEVS_SHA256_LEN)) {
            idevs_hex_encode(ev->descriptor_digest, 8, a);
            idevs_hex_encode(policy->descriptor, 8, b);
            return certs_fail(why, why_len, IDEVS_ERR_DESCRIPTOR_MISMATCH,
                        "%s runs deployment descriptor %s..., the policy expects %s...", s->label, a, b);
        }
    }
    if (!idevs_uuid_equal(&ev->program_uuid, san)) {
        char u[IDEVS_UUID_STR_LEN];
        idevs_uuid_format(&ev->program_uuid, u);
        return certs_fail(why, why_len, IDEVS_ERR_PROGRAM_MISMATCH,
                    "%s carries evidence for another program (%s) than the one it names", s->label, u);
    }
    if (policy->require_evidence) {
        if (policy->has_program && !idevs_uuid_equal(&policy->program, &ev->program_uuid)) {
            char u[IDEVS_UUID_STR_LEN];
            idevs_uuid_format(&policy->program, u);
            return certs_fail(why, why_len, IDEVS_ERR_PROGRAM_MISMATCH,
                        "%s is not the integration process the policy expects (" CERTS_URN_PREFIX "%s)", s->label,
                        u);
        }
        if (policy->nonce_len > 0 &&
            (ev->nonce_len != policy->nonce_len || !idevs_ct_equal(ev->nonce, policy->nonce, policy->nonce_len)))
            return certs_fail(why, why_len, IDEVS_ERR_NONCE_MISMATCH,
                        "%s carries evidence that does not answer the verifier's challenge nonce", s->label);
    }
    return IDEVS_OK;
}

idevs_err idevs_cert_verify(const idevs_cert_policy *policy, const uint8_t *const *der, const size_t *der_len,
                            size_t count, idevs_cert_info *info, char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (info != NULL)
        memset(info, 0, sizeof *info);
    if (policy == NULL || der == NULL || der_len == NULL || count == 0)
        return certs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "no certificate to verify");
    if (count > IDEVS_CHAIN_MAX)
        return certs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "the chain has %zu certificates, more than the limit of %d",
                    count, IDEVS_CHAIN_MAX);
    for (size_t i = 0; i < count; i++) {
        if (der[i] == NULL || der_len[i] == 0)
            return certs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "certificate %zu of the chain is empty", i + 1);
        if (der_len[i] > IDEVS_CERT_MAX)
            return certs_fail(why, why_len, IDEVS_ERR_TOO_LARGE,
                        "certificate %zu of the chain is %zu bytes, more than the limit of %d", i + 1, der_len[i],
                        IDEVS_CERT_MAX);
    }

    idevs_err err = IDEVS_OK;
    X509 *leaf = NULL;
    uint8_t *report = NULL; /* the hardware report, for the backends whose report is verified here */
    STACK_OF(X509) *untrusted = sk_X509_new_null();
    if (untrusted == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");

    /* 1. parse */
    leaf = certs_parse_der(der[0], der_len[0]);
    if (leaf == NULL) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "the leaf certificate is not valid DER X.509");
        goto done;
    }
    for (size_t i = 1; i < count; i++) {
        X509 *c = certs_parse_der(der[i], der_len[i]);
        if (c == NULL || sk_X509_push(untrusted, c) <= 0) {
            X509_free(c);
            err = certs_fail(why, why_len, c == NULL ? IDEVS_ERR_CERT_MALFORMED : IDEVS_ERR_NOMEM,
                       "certificate %zu of the chain is not valid DER X.509", i + 1);
            goto done;
        }
    }

    /* 2. idevs identity fields */
    struct subject s;
    describe(leaf, &s);
    idevs_uuid san;
    char name[IDEVS_NAME_MAX + 1];
    uint8_t sign_pub[IDEVS_ED25519_PUB_LEN], kex_pub[IDEVS_X25519_LEN];
    /* An identity signs envelopes and nothing else: cA TRUE at all, or an issuer's key usage, makes it a CA
     * (X509_check_ca alone passes cA TRUE with a keyUsage lacking keyCertSign). */
    uint32_t xflags = X509_get_extension_flags(leaf);
    uint32_t usage = (xflags & EXFLAG_KUSAGE) != 0 ? X509_get_key_usage(leaf) : 0;
    if ((xflags & EXFLAG_CA) != 0 || X509_check_ca(leaf) != 0) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS, "%s is a CA certificate, not an identity", s.label);
        goto done;
    }
    if ((usage & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) != 0) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS,
                   "%s has keyUsage keyCertSign or cRLSign, which only a CA has, not an identity", s.label);
        goto done;
    }
    if ((usage & KU_DIGITAL_SIGNATURE) == 0) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS, "%s lacks a keyUsage with digitalSignature", s.label);
        goto done;
    }
    if (certs_get_sign_key(leaf, sign_pub) != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS, "%s does not certify an Ed25519 key", s.label);
        goto done;
    }
    if (certs_get_uuid_san(leaf, &san) != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS, "%s lacks a single urn:uuid subject alternative name",
                   s.label);
        goto done;
    }
    if (certs_get_name(leaf, name) != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS,
                   "%s lacks a subject of exactly one CN of 1 to %d characters [A-Za-z0-9._-]", s.label,
                   IDEVS_NAME_MAX);
        goto done;
    }
    if (certs_get_agreement_key(leaf, kex_pub) != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_NOT_IDEVS, "%s lacks a valid X25519 agreement key extension",
                   s.label);
        goto done;
    }

    /* 3. chain and validity */
    bool below_intermediate = false;
    err = check_chain(policy, leaf, untrusted, &s, &below_intermediate, why, why_len);
    if (err != IDEVS_OK)
        goto done;

    /* 4. evidence presence and decoding */
    const uint8_t *ev_der = NULL;
    size_t ev_len = 0;
    idevs_evidence ev;
    const char *reason = NULL;
    memset(&ev, 0, sizeof ev);
    err = certs_get_octets_ext(leaf, IDEVS_OID_EVIDENCE, &ev_der, &ev_len);
    bool has_evidence = err == IDEVS_OK;
    if (err == IDEVS_ERR_EVIDENCE_MISSING) {
        if (policy->require_evidence) {
            err = certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MISSING,
                       "%s carries no attestation evidence and the policy requires an attested compartment", s.label);
            goto done;
        }
        if (below_intermediate) {
            err = certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MISSING,
                       "%s is issued by an attestation authority but carries no attestation evidence", s.label);
            goto done;
        }
        err = IDEVS_OK;
    } else if (err != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MALFORMED, "%s has a repeated or malformed evidence extension",
                   s.label);
        goto done;
    } else if ((err = certs_evidence_decode_report(ev_der, ev_len, &ev, &report, &reason)) != IDEVS_OK) {
        err = certs_fail(why, why_len, err, "%s: %s", s.label, reason);
        goto done;
    }

    if (has_evidence) {
        /* 5. key binding */
        uint8_t binding[IDEVS_SHA256_LEN];
        if ((err = idevs_key_binding(sign_pub, kex_pub, binding)) != IDEVS_OK) {
            err = certs_fail(why, why_len, err, "computing the key binding of %s failed", s.label);
            goto done;
        }
        if (!idevs_ct_equal(binding, ev.key_binding, sizeof binding)) {
            err = certs_fail(why, why_len, IDEVS_ERR_KEY_BINDING_MISMATCH,
                       "%s carries evidence bound to other public keys than the ones it certifies", s.label);
            goto done;
        }
        /* 6..12. backend, opt-in, debug, measurement, descriptor, program, nonce */
        if ((err = check_evidence(policy, &ev, &san, &s, why, why_len)) != IDEVS_OK)
            goto done;
        /* 13. the tpm backend's quote and event log: checked whether or not the policy requires evidence, so
         * that a tpm certificate is never accepted on its authority's word alone */
        if (ev.backend == IDEVS_BACKEND_TPM &&
            (err = certs_tpm_verify(policy, &ev, report, ev.hardware_report_len, s.label, why, why_len)) != IDEVS_OK)
            goto done;
    }

    if (info != NULL) {
        info->uuid = san;
        memcpy(info->name, name, sizeof info->name);
        memcpy(info->sign_pub, sign_pub, sizeof sign_pub);
        memcpy(info->kex_pub, kex_pub, sizeof kex_pub);
        if ((err = idevs_sha256(der[0], der_len[0], info->cert_digest)) != IDEVS_OK) {
            memset(info, 0, sizeof *info);
            err = certs_fail(why, why_len, err, "hashing %s failed", s.label);
            goto done;
        }
        info->has_evidence = has_evidence;
        if (has_evidence)
            info->evidence = ev;
    }
    err = IDEVS_OK;

done:
    free(report);
    X509_free(leaf);
    sk_X509_pop_free(untrusted, X509_free);
    ERR_clear_error();
    return err;
}
