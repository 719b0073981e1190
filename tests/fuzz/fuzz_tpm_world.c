/* fuzz_tpm_world.h: reports quoted in software, marshalled with libtss2-mu as a TPM would. */
#include "fuzz_tpm_world.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <tss2/tss2_mu.h>

#include "fuzz.h"
#include "idevs_tpm.h"
#include "tpm.pb-c.h"

#define EVENTS_MAX 32

void fuzz_tpm_evidence(idevs_evidence *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->backend = IDEVS_BACKEND_TPM;
    memset(ev->measurement, 0x4d, 32);
    memset(ev->program_uuid.b, 0x50, 16);
    memset(ev->descriptor_digest, 0x44, 32);
    memset(ev->key_binding, 0x4b, 32);
    ev->issued_at = 1;
    ev->nonce_len = 32;
    memset(ev->nonce, 0x4e, 32);
}

idevs_cert_policy *fuzz_tpm_policy(const fuzz_world *w)
{
    const unsigned char *p = w->ca_der;
    X509 *ca = d2i_X509(NULL, &p, (long)w->ca_der_len);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    FUZZ_SETUP(ca != NULL && policy != NULL && idevs_cert_policy_add_ca(policy, ca) == IDEVS_OK);
    X509_free(ca);
    return policy;
}

/* The quote's signature by ak over attest, as a marshalled TPMT_SIGNATURE. */
static void sign(EVP_PKEY *ak, const uint8_t *attest, size_t attest_len, uint8_t *sig, size_t *sig_len)
{
    uint8_t der[80];
    size_t der_len = sizeof der;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    FUZZ_SETUP(md != NULL && EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, ak) == 1 &&
               EVP_DigestSign(md, der, &der_len, attest, attest_len) == 1);
    EVP_MD_CTX_free(md);
    const unsigned char *p = der;
    ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &p, (long)der_len);
    FUZZ_SETUP(es != NULL);
    TPMT_SIGNATURE s;
    memset(&s, 0, sizeof s);
    s.sigAlg = TPM2_ALG_ECDSA;
    s.signature.ecdsa.hash = TPM2_ALG_SHA256;
    s.signature.ecdsa.signatureR.size = 32;
    s.signature.ecdsa.signatureS.size = 32;
    FUZZ_SETUP(BN_bn2binpad(ECDSA_SIG_get0_r(es), s.signature.ecdsa.signatureR.buffer, 32) == 32 &&
               BN_bn2binpad(ECDSA_SIG_get0_s(es), s.signature.ecdsa.signatureS.buffer, 32) == 32);
    ECDSA_SIG_free(es);
    *sig_len = 0;
    FUZZ_SETUP(Tss2_MU_TPMT_SIGNATURE_Marshal(&s, sig, 256, sig_len) == 0);
}

uint8_t *fuzz_tpm_report(const fuzz_world *w, size_t events, unsigned register_pcr, size_t *len)
{
    FUZZ_SETUP(events >= 1 && events <= EVENTS_MAX);
    idevs_evidence ev;
    fuzz_tpm_evidence(&ev);
    /* The AK and its certificate from the world's CA. */
    EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *ak = NULL;
    X509 *ca = NULL, *ak_cert = NULL;
    const unsigned char *p = w->ca_der;
    uint8_t *ak_der = NULL;
    size_t ak_der_len = 0;
    FUZZ_SETUP(kc != NULL && EVP_PKEY_keygen_init(kc) == 1 && EVP_PKEY_CTX_set_group_name(kc, "prime256v1") == 1 &&
               EVP_PKEY_keygen(kc, &ak) == 1);
    FUZZ_SETUP((ca = d2i_X509(NULL, &p, (long)w->ca_der_len)) != NULL);
    FUZZ_SETUP(idevs_tpm_issue_ak_cert(w->ca, ca, ak, "fuzz-host", 30, &ak_cert) == IDEVS_OK &&
               idevs_cert_to_der(ak_cert, &ak_der, &ak_der_len) == IDEVS_OK);

    /* The log: other compartments, then the evidence's. */
    static uint8_t f[EVENTS_MAX][4][32];
    Idevs__V1__TpmEvent e[EVENTS_MAX], *pe[EVENTS_MAX];
    uint8_t reg[32] = {0}, digest[32];
    for (size_t i = 0; i < events; i++) {
        memset(f[i], (int)(0x10 + i), sizeof f[i]);
        if (i + 1 == events) {
            memcpy(f[i][0], ev.measurement, 32);
            memcpy(f[i][1], ev.program_uuid.b, 16);
            memcpy(f[i][2], ev.descriptor_digest, 32);
            memcpy(f[i][3], ev.key_binding, 32);
        }
        idevs_uuid u;
        memcpy(u.b, f[i][1], 16);
        FUZZ_SETUP(idevs_tpm_event_digest(f[i][0], &u, f[i][2], f[i][3], digest) == IDEVS_OK &&
                   idevs_tpm_extend(reg, digest) == IDEVS_OK);
        idevs__v1__tpm_event__init(&e[i]);
        e[i].measurement = (ProtobufCBinaryData){32, f[i][0]};
        e[i].program_uuid = (ProtobufCBinaryData){16, f[i][1]};
        e[i].descriptor_digest = (ProtobufCBinaryData){32, f[i][2]};
        e[i].key_binding = (ProtobufCBinaryData){32, f[i][3]};
        pe[i] = &e[i];
    }

    /* The quote. */
    TPMS_ATTEST a;
    memset(&a, 0, sizeof a);
    a.magic = TPM2_GENERATED_VALUE;
    a.type = TPM2_ST_ATTEST_QUOTE;
    a.qualifiedSigner.size = IDEVS_TPM_NAME_LEN;
    a.extraData.size = 64;
    memcpy(a.extraData.buffer, ev.key_binding, 32);
    memcpy(a.extraData.buffer + 32, ev.nonce, 32);
    TPMS_PCR_SELECTION *sel = &a.attested.quote.pcrSelect.pcrSelections[0];
    a.attested.quote.pcrSelect.count = 1;
    sel->hash = TPM2_ALG_SHA256;
    sel->sizeofSelect = 3;
    sel->pcrSelect[0] = 0xff;
    sel->pcrSelect[FUZZ_TPM_REGISTER / 8] |= (uint8_t)(1u << (FUZZ_TPM_REGISTER % 8));
    uint8_t values[9][32], zero[32] = {0};
    memset(values, 0, sizeof values);
    memcpy(values[8], reg, 32);
    a.attested.quote.pcrDigest.size = 32;
    FUZZ_SETUP(idevs_sha256(values, sizeof values, a.attested.quote.pcrDigest.buffer) == IDEVS_OK);
    uint8_t attest[1024], sig[256];
    size_t attest_len = 0, sig_len = 0;
    FUZZ_SETUP(Tss2_MU_TPMS_ATTEST_Marshal(&a, attest, sizeof attest, &attest_len) == 0);
    sign(ak, attest, attest_len, sig, &sig_len);

    Idevs__V1__TpmReport r = IDEVS__V1__TPM_REPORT__INIT;
    Idevs__V1__TpmPcrValue pv[9], *ppv[9];
    r.version = 1;
    r.attest = (ProtobufCBinaryData){attest_len, attest};
    r.signature = (ProtobufCBinaryData){sig_len, sig};
    r.register_pcr = register_pcr;
    for (unsigned i = 0; i < 9; i++) {
        idevs__v1__tpm_pcr_value__init(&pv[i]);
        pv[i].index = i < 8 ? i : FUZZ_TPM_REGISTER;
        pv[i].value = (ProtobufCBinaryData){32, i < 8 ? zero : reg};
        ppv[i] = &pv[i];
    }
    r.n_pcrs = 9;
    r.pcrs = ppv;
    r.ak_certificate = (ProtobufCBinaryData){ak_der_len, ak_der};
    r.n_events = events;
    r.events = pe;
    *len = idevs__v1__tpm_report__get_packed_size(&r);
    uint8_t *out = malloc(*len);
    FUZZ_SETUP(out != NULL && idevs__v1__tpm_report__pack(&r, out) == *len);
    free(ak_der);
    X509_free(ak_cert);
    X509_free(ca);
    EVP_PKEY_free(ak);
    EVP_PKEY_CTX_free(kc);
    return out;
}
