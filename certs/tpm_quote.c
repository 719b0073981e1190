/* Verification of the tpm backend's hardware report: a TPM 2.0 quote by an enrolled attestation key over the boot
 * PCRs and the launcher's register, and the event log that explains the register (docs/CERTIFICATES.md). */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <tss2/tss2_mu.h>

#include "certs_internal.h"
#include "idevs_hex.h"
#include "idevs_tpm.h"
#include "tpm.pb-c.h"

#define PCR_COUNT 24                 /* PCRs of a PC client TPM */
#define PCR_SELECTED (IDEVS_TPM_BOOT_PCRS + 1)
#define ATTEST_MAX 1024              /* a quote's TPMS_ATTEST is under 200 bytes for one bank */
#define SIGNATURE_MAX 256
#define ECC_P256_LEN 32

struct report {
    Idevs__V1__TpmReport *msg;
    X509 *ak;
    TPMS_ATTEST attest;
    const uint8_t *pcr[PCR_COUNT]; /* the listed values, by index; NULL when not listed */
};

static bool exact(const ProtobufCBinaryData *b, size_t len)
{
    return b->len == len && b->data != NULL;
}

/* Decoding: sizes, versions, unknown fields, the register's index and the listed PCRs; NULL or a reason. */
static const char *decode(const uint8_t *data, size_t len, struct report *r)
{
    if (data == NULL || len == 0)
        return "the tpm evidence carries no hardware report";
    Idevs__V1__TpmReport *m = r->msg = idevs__v1__tpm_report__unpack(NULL, len, data);
    if (m == NULL)
        return "the hardware report is not a valid idevs.v1.TpmReport message";
    if (m->base.n_unknown_fields != 0)
        return "the hardware report has an unknown field (a number idevs.v1.TpmReport does not declare)";
    if (m->version != IDEVS_TPM_REPORT_VERSION)
        return "the hardware report has an unknown version";
    if (m->attest.len == 0 || m->attest.len > ATTEST_MAX)
        return "the hardware report's quote (attest) is empty or larger than 1024 bytes";
    if (m->signature.len == 0 || m->signature.len > SIGNATURE_MAX)
        return "the hardware report's signature is empty or larger than 256 bytes";
    if (m->ak_certificate.len == 0 || m->ak_certificate.len > IDEVS_CERT_MAX)
        return "the hardware report's AK certificate is empty or larger than the certificate limit";
    if (m->register_pcr >= PCR_COUNT || m->register_pcr < IDEVS_TPM_BOOT_PCRS)
        return "the hardware report's register_pcr is not one of PCRs 8 to 22";
    if (m->register_pcr == 16 || m->register_pcr == 23)
        return "the hardware report's register_pcr is 16 or 23, which software may reset";
    if (m->n_events == 0)
        return "the hardware report's event log is empty";
    for (size_t i = 0; i < m->n_events; i++) {
        const Idevs__V1__TpmEvent *e = m->events[i];
        if (e->base.n_unknown_fields != 0)
            return "an event of the hardware report's log has an unknown field";
        if (!exact(&e->measurement, IDEVS_SHA256_LEN) || !exact(&e->program_uuid, IDEVS_UUID_LEN) ||
            !exact(&e->descriptor_digest, IDEVS_SHA256_LEN) || !exact(&e->key_binding, IDEVS_SHA256_LEN))
            return "an event of the hardware report's log has a field of the wrong size";
    }
    if (m->n_pcrs > PCR_COUNT)
        return "the hardware report lists more than 24 PCRs";
    for (size_t i = 0; i < m->n_pcrs; i++) {
        const Idevs__V1__TpmPcrValue *p = m->pcrs[i];
        if (p->base.n_unknown_fields != 0)
            return "a PCR value of the hardware report has an unknown field";
        if (p->index >= PCR_COUNT || !exact(&p->value, IDEVS_SHA256_LEN))
            return "a PCR value of the hardware report has an index above 23 or is not 32 bytes";
        if (i > 0 && p->index <= m->pcrs[i - 1]->index)
            return "the hardware report's PCR values are not in ascending index order";
        r->pcr[p->index] = p->value.data;
    }
    return NULL;
}

/* The marked AK certificate, chained to an AK CA (or the operator CAs) and valid at the policy's time. */
static idevs_err check_ak(const idevs_cert_policy *policy, struct report *r, const char *label, char *why,
                          size_t why_len)
{
    r->ak = certs_parse_der(r->msg->ak_certificate.data, r->msg->ak_certificate.len);
    if (r->ak == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MALFORMED, "%s: the AK certificate is not valid DER X.509",
                    label);
    uint32_t xflags = X509_get_extension_flags(r->ak);
    uint32_t usage = (xflags & EXFLAG_KUSAGE) != 0 ? X509_get_key_usage(r->ak) : 0;
    bool marked = false;
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(r->ak, NID_ext_key_usage, NULL, NULL);
    ASN1_OBJECT *mark = OBJ_txt2obj(IDEVS_OID_TPM_AK, 1);
    for (int i = 0; eku != NULL && mark != NULL && i < sk_ASN1_OBJECT_num(eku); i++)
        marked |= OBJ_cmp(sk_ASN1_OBJECT_value(eku, i), mark) == 0;
    ASN1_OBJECT_free(mark);
    EXTENDED_KEY_USAGE_free(eku);
    if (!marked || (xflags & EXFLAG_CA) != 0 || (usage & KU_DIGITAL_SIGNATURE) == 0)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_UNTRUSTED,
                    "%s: the AK certificate is not an idevs attestation key certificate (extendedKeyUsage "
                    IDEVS_OID_TPM_AK ", keyUsage digitalSignature, not a CA)",
                    label);
    char group[32];
    size_t group_len = 0;
    EVP_PKEY *key = X509_get0_pubkey(r->ak);
    if (key == NULL || !EVP_PKEY_is_a(key, "EC") ||
        EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof group, &group_len) != 1 ||
        strcmp(group, "prime256v1") != 0)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_UNTRUSTED, "%s: the AK certificate's key is not EC P-256", label);

    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE *store = policy->tpm_ak_store != NULL ? policy->tpm_ak_store : policy->store;
    if (ctx == NULL || X509_STORE_CTX_init(ctx, store, r->ak, NULL) != 1) {
        X509_STORE_CTX_free(ctx);
        return certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory verifying the AK certificate of %s", label);
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_X509_STRICT | X509_V_FLAG_CHECK_SS_SIGNATURE);
    X509_VERIFY_PARAM_set_auth_level(param, CERTS_AUTH_LEVEL);
    X509_VERIFY_PARAM_set_depth(param, IDEVS_CHAIN_MAX);
    if (policy->at != 0)
        X509_VERIFY_PARAM_set_time(param, policy->at);
    idevs_err err = IDEVS_OK;
    if (X509_verify_cert(ctx) != 1)
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_AK_UNTRUSTED, "%s: the AK certificate is not valid under the %s: %s",
                   label, policy->tpm_ak_store != NULL ? "policy's AK CAs" : "operator CAs",
                   X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    ERR_clear_error();
    return err;
}

/* The TPMT_SIGNATURE (ECDSA, SHA-256) over the attest bytes, by the AK certificate's key. */
static idevs_err check_signature(struct report *r, const char *label, char *why, size_t why_len)
{
    TPMT_SIGNATURE sig;
    size_t off = 0;
    memset(&sig, 0, sizeof sig);
    if (Tss2_MU_TPMT_SIGNATURE_Unmarshal(r->msg->signature.data, r->msg->signature.len, &off, &sig) != 0 ||
        off != r->msg->signature.len)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_SIGNATURE, "%s: the quote's signature is not a TPMT_SIGNATURE",
                    label);
    const TPMS_SIGNATURE_ECDSA *e = &sig.signature.ecdsa;
    if (sig.sigAlg != TPM2_ALG_ECDSA || e->hash != TPM2_ALG_SHA256 || e->signatureR.size == 0 ||
        e->signatureR.size > ECC_P256_LEN || e->signatureS.size == 0 || e->signatureS.size > ECC_P256_LEN)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_SIGNATURE,
                    "%s: the quote's signature is not ECDSA P-256 with SHA-256", label);

    idevs_err err = IDEVS_ERR_NOMEM;
    unsigned char *der = NULL;
    int der_len = 0;
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *rr = BN_bin2bn(e->signatureR.buffer, e->signatureR.size, NULL);
    BIGNUM *ss = BN_bin2bn(e->signatureS.buffer, e->signatureS.size, NULL);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (es == NULL || rr == NULL || ss == NULL || md == NULL || ECDSA_SIG_set0(es, rr, ss) != 1)
        goto done;
    rr = ss = NULL; /* owned by es */
    if ((der_len = i2d_ECDSA_SIG(es, &der)) <= 0)
        goto done;
    if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, X509_get0_pubkey(r->ak)) != 1 ||
        EVP_DigestVerify(md, der, (size_t)der_len, r->msg->attest.data, r->msg->attest.len) != 1) {
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_SIGNATURE,
                   "%s: the quote's signature does not verify with the AK certificate's key", label);
        goto done;
    }
    err = IDEVS_OK;
done:
    if (err == IDEVS_ERR_NOMEM)
        certs_fail(why, why_len, err, "out of memory checking the quote of %s", label);
    OPENSSL_free(der);
    BN_free(rr);
    BN_free(ss);
    ECDSA_SIG_free(es);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return err;
}

/* TPM_GENERATED, a quote, and its qualifying data: key_binding || nonce of this evidence. */
static idevs_err check_quote(const idevs_evidence *ev, struct report *r, const char *label, char *why,
                             size_t why_len)
{
    size_t off = 0;
    memset(&r->attest, 0, sizeof r->attest);
    if (Tss2_MU_TPMS_ATTEST_Unmarshal(r->msg->attest.data, r->msg->attest.len, &off, &r->attest) != 0 ||
        off != r->msg->attest.len)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_NOT_QUOTE, "%s: the signed structure is not a TPMS_ATTEST", label);
    if (r->attest.magic != TPM2_GENERATED_VALUE)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_NOT_QUOTE,
                    "%s: the signed structure was not generated by a TPM (magic is not TPM_GENERATED_VALUE)", label);
    if (r->attest.type != TPM2_ST_ATTEST_QUOTE)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_NOT_QUOTE, "%s: the signed structure is not a quote (type 0x%04x)",
                    label, r->attest.type);
    const TPM2B_DATA *q = &r->attest.extraData;
    if (q->size != IDEVS_TPM_QUALIFYING_LEN)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_QUOTE_BINDING,
                    "%s: the quote's qualifying data is %u bytes, not key binding and nonce (64)", label, q->size);
    if (!idevs_ct_equal(q->buffer, ev->key_binding, IDEVS_SHA256_LEN))
        return certs_fail(why, why_len, IDEVS_ERR_TPM_QUOTE_BINDING,
                    "%s: the quote was made for another key binding than the certificate's", label);
    if (ev->nonce_len != IDEVS_TPM_NONCE_LEN ||
        !idevs_ct_equal(q->buffer + IDEVS_SHA256_LEN, ev->nonce, IDEVS_TPM_NONCE_LEN))
        return certs_fail(why, why_len, IDEVS_ERR_TPM_QUOTE_NONCE,
                    "%s: the quote answers another nonce than the evidence's (a stale or replayed quote)", label);
    return IDEVS_OK;
}

/* Exactly PCRs 0-7 and the register, SHA-256, all listed; their values hash to pcrDigest. */
static idevs_err check_pcrs(struct report *r, const char *label, char *why, size_t why_len)
{
    const TPML_PCR_SELECTION *sel = &r->attest.attested.quote.pcrSelect;
    uint32_t want = 0xffu | (1u << r->msg->register_pcr), got = 0;
    if (sel->count != 1 || sel->pcrSelections[0].hash != TPM2_ALG_SHA256)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_PCR_SELECTION, "%s: the quote does not select the SHA-256 bank alone",
                    label);
    const TPMS_PCR_SELECTION *s = &sel->pcrSelections[0];
    for (unsigned i = 0; i < s->sizeofSelect && i < sizeof s->pcrSelect; i++)
        got |= (uint32_t)s->pcrSelect[i] << (8 * i);
    if (s->sizeofSelect > sizeof s->pcrSelect || got != want)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_PCR_SELECTION,
                    "%s: the quote covers PCRs 0x%06x, not PCRs 0-7 and the register %u (0x%06x)", label, got,
                    r->msg->register_pcr, want);
    if (r->msg->n_pcrs != PCR_SELECTED)
        return certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MALFORMED,
                    "%s: the hardware report lists %zu PCR values, not the 9 the quote covers", label, r->msg->n_pcrs);
    const void *parts[PCR_SELECTED];
    size_t lens[PCR_SELECTED], n = 0;
    for (unsigned i = 0; i < PCR_COUNT; i++) {
        if ((want & (1u << i)) == 0)
            continue;
        if (r->pcr[i] == NULL)
            return certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MALFORMED,
                        "%s: the hardware report does not list the value of quoted PCR %u", label, i);
        parts[n] = r->pcr[i];
        lens[n++] = IDEVS_SHA256_LEN;
    }
    uint8_t digest[IDEVS_SHA256_LEN];
    const TPM2B_DIGEST *quoted = &r->attest.attested.quote.pcrDigest;
    if (idevs_sha256_parts(parts, lens, n, digest) != IDEVS_OK)
        return certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "hashing the PCR values of %s failed", label);
    if (quoted->size != IDEVS_SHA256_LEN || !idevs_ct_equal(quoted->buffer, digest, IDEVS_SHA256_LEN))
        return certs_fail(why, why_len, IDEVS_ERR_TPM_PCR_DIGEST,
                    "%s: the listed PCR values do not hash to the quote's PCR digest", label);
    return IDEVS_OK;
}

/* The log replays from zero to the quoted register, and records this certificate's compartment. */
static idevs_err check_log(const idevs_evidence *ev, struct report *r, const char *label, char *why,
                           size_t why_len)
{
    uint8_t reg[IDEVS_SHA256_LEN] = {0}, digest[IDEVS_SHA256_LEN];
    bool found = false;
    for (size_t i = 0; i < r->msg->n_events; i++) {
        const Idevs__V1__TpmEvent *e = r->msg->events[i];
        idevs_uuid program;
        memcpy(program.b, e->program_uuid.data, IDEVS_UUID_LEN);
        if (idevs_tpm_event_digest(e->measurement.data, &program, e->descriptor_digest.data, e->key_binding.data,
                                   digest) != IDEVS_OK ||
            idevs_tpm_extend(reg, digest) != IDEVS_OK)
            return certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "replaying the event log of %s failed", label);
        found |= memcmp(e->measurement.data, ev->measurement, IDEVS_SHA256_LEN) == 0 &&
                 idevs_uuid_equal(&program, &ev->program_uuid) &&
                 memcmp(e->descriptor_digest.data, ev->descriptor_digest, IDEVS_SHA256_LEN) == 0 &&
                 memcmp(e->key_binding.data, ev->key_binding, IDEVS_SHA256_LEN) == 0;
    }
    if (!idevs_ct_equal(reg, r->pcr[r->msg->register_pcr], IDEVS_SHA256_LEN))
        return certs_fail(why, why_len, IDEVS_ERR_TPM_LOG_REPLAY,
                    "%s: the event log (%zu events) does not replay to the quoted PCR %u (the register was reset or "
                    "extended outside the log, or the log was altered)",
                    label, r->msg->n_events, r->msg->register_pcr);
    if (!found)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_EVENT_MISSING,
                    "%s: the event log does not record this compartment (its measurement, program, descriptor and "
                    "key binding)",
                    label);
    return IDEVS_OK;
}

static idevs_err check_boot(const idevs_cert_policy *policy, struct report *r, const char *label, char *why,
                            size_t why_len)
{
    if (policy->tpm_pcr_set_count == 0)
        return IDEVS_OK;
    int first_diff = -1;
    for (size_t s = 0; s < policy->tpm_pcr_set_count; s++) {
        const struct certs_tpm_pcr_set *set = &policy->tpm_pcr_sets[s];
        int diff = -1;
        for (int i = 0; i < IDEVS_TPM_BOOT_PCRS && diff < 0; i++)
            if ((set->mask & (1u << i)) != 0 && memcmp(set->values[i], r->pcr[i], IDEVS_SHA256_LEN) != 0)
                diff = i;
        if (diff < 0)
            return IDEVS_OK;
        if (first_diff < 0)
            first_diff = diff;
    }
    char hex[17];
    idevs_hex_encode(r->pcr[first_diff], 8, hex);
    return certs_fail(why, why_len, IDEVS_ERR_TPM_BOOT_PCRS,
                "%s: the host's boot PCRs match none of the policy's %zu expected sets (PCR %d is %s...)", label,
                policy->tpm_pcr_set_count, first_diff, hex);
}

idevs_err certs_tpm_verify(const idevs_cert_policy *policy, const idevs_evidence *ev, const uint8_t *report,
                           size_t report_len, const char *label, char *why, size_t why_len)
{
    struct report r;
    memset(&r, 0, sizeof r);
    idevs_err err;
    const char *reason = decode(report, report_len, &r);
    if (reason != NULL)
        err = certs_fail(why, why_len, IDEVS_ERR_EVIDENCE_MALFORMED, "%s: %s", label, reason);
    else if ((err = check_ak(policy, &r, label, why, why_len)) == IDEVS_OK &&
             (err = check_signature(&r, label, why, why_len)) == IDEVS_OK &&
             (err = check_quote(ev, &r, label, why, why_len)) == IDEVS_OK &&
             (err = check_pcrs(&r, label, why, why_len)) == IDEVS_OK &&
             (err = check_log(ev, &r, label, why, why_len)) == IDEVS_OK)
        err = check_boot(policy, &r, label, why, why_len);
    X509_free(r.ak);
    if (r.msg != NULL)
        idevs__v1__tpm_report__free_unpacked(r.msg, NULL);
    ERR_clear_error();
    return err;
}
