/* The TPM connection and the objects the tpm backend and the enrollment share: the SRK, the EK and the AK.
 * Every operation opens its own connection and closes it: a swtpm serves one client at a time, and with the
 * kernel's resource manager (/dev/tpmrm0) a connection's transient objects vanish with it anyway. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_rc.h>
#include <tss2/tss2_tctildr.h>

#include "launcher_internal.h"
#include "tpm_internal.h"

/* TCG EK Credential Profile 2.0, the default EK templates' policy: PolicySecret(TPM_RH_ENDORSEMENT). */
static const uint8_t EK_POLICY[32] = {0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xB3, 0xF8, 0x1A, 0x90, 0xCC,
                                      0x8D, 0x46, 0xA5, 0xD7, 0x24, 0xFD, 0x52, 0xD7, 0x6E, 0x06, 0x52,
                                      0x0B, 0x64, 0xF2, 0xA1, 0xDA, 0x1B, 0x33, 0x14, 0x69, 0xAA};

idevs_err tpm_fail(TSS2_RC rc, const char *what, char *why, size_t why_len)
{
    snprintf(why, why_len, "%s failed: %s", what, Tss2_RC_Decode(rc));
    return IDEVS_ERR_IO;
}

idevs_err tpm_open(const char *tcti, tpm_conn *t, char *why, size_t why_len)
{
    t->tcti = NULL;
    t->esys = NULL;
    if (tcti == NULL || tcti[0] == '\0') {
        snprintf(why, why_len, "no TPM TCTI configured");
        return IDEVS_ERR_CONFIG;
    }
    TSS2_RC rc = Tss2_TctiLdr_Initialize(tcti, &t->tcti);
    if (rc != TSS2_RC_SUCCESS) {
        snprintf(why, why_len, "cannot open the TPM through TCTI '%s': %s", tcti, Tss2_RC_Decode(rc));
        t->tcti = NULL;
        return IDEVS_ERR_IO;
    }
    rc = Esys_Initialize(&t->esys, t->tcti, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        snprintf(why, why_len, "cannot talk to the TPM through TCTI '%s': %s", tcti, Tss2_RC_Decode(rc));
        t->esys = NULL;
        tpm_close(t);
        return IDEVS_ERR_IO;
    }
    return IDEVS_OK;
}

void tpm_close(tpm_conn *t)
{
    if (t->esys != NULL)
        Esys_Finalize(&t->esys);
    if (t->tcti != NULL)
        Tss2_TctiLdr_Finalize(&t->tcti);
    t->esys = NULL;
    t->tcti = NULL;
}

void tpm_flush(tpm_conn *t, ESYS_TR *handle)
{
    if (*handle != ESYS_TR_NONE)
        (void)Esys_FlushContext(t->esys, *handle);
    *handle = ESYS_TR_NONE;
}

idevs_err tpm_nv_exists(tpm_conn *t, uint32_t index, bool *exists, char *why, size_t why_len)
{
    TPMI_YES_NO more = TPM2_NO;
    TPMS_CAPABILITY_DATA *cap = NULL;
    TSS2_RC rc = Esys_GetCapability(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, TPM2_CAP_HANDLES, index, 1,
                                    &more, &cap);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "listing NV indices (TPM2_GetCapability)", why, why_len);
    *exists = cap->data.handles.count >= 1 && cap->data.handles.handle[0] == index;
    Esys_Free(cap);
    return IDEVS_OK;
}

idevs_err tpm_dir_open(const char *state_dir, bool create, int *dirfd, char *why, size_t why_len)
{
    int top = -1;
    idevs_err err = launcher_state_dir_open(state_dir, &top, why, why_len);
    if (err != IDEVS_OK)
        return err;
    if (create && mkdirat(top, IDEVS_TPM_DIR, 0700) != 0 && errno != EEXIST) {
        snprintf(why, why_len, "cannot make '%s/%s': %s", state_dir, IDEVS_TPM_DIR, strerror(errno));
        close(top);
        return IDEVS_ERR_IO;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", state_dir, IDEVS_TPM_DIR);
    close(top);
    err = launcher_state_dir_open(path, dirfd, why, why_len);
    if (err != IDEVS_OK && !create)
        snprintf(why, why_len, "no TPM state in '%s' (%s): enroll this host first (idevs-tpm enroll-request, "
                 "docs/BACKENDS.md \"tpm\")", path, strerror(errno));
    return err;
}

static idevs_err create_primary(tpm_conn *t, ESYS_TR hierarchy, const TPM2B_PUBLIC *tmpl, ESYS_TR *out,
                                TPM2B_PUBLIC **pub, const char *what, char *why, size_t why_len)
{
    const TPM2B_SENSITIVE_CREATE sens = {0};
    const TPM2B_DATA outside = {0};
    const TPML_PCR_SELECTION none = {0};
    TPM2B_CREATION_DATA *cd = NULL;
    TPM2B_DIGEST *ch = NULL;
    TPMT_TK_CREATION *tk = NULL;
    TSS2_RC rc = Esys_CreatePrimary(t->esys, hierarchy, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, tmpl,
                                    &outside, &none, out, pub, &cd, &ch, &tk);
    Esys_Free(cd);
    Esys_Free(ch);
    Esys_Free(tk);
    if (rc != TSS2_RC_SUCCESS) {
        *out = ESYS_TR_NONE;
        return tpm_fail(rc, what, why, why_len);
    }
    return IDEVS_OK;
}

idevs_err tpm_srk(tpm_conn *t, ESYS_TR *srk, char *why, size_t why_len)
{
    TPM2B_PUBLIC tmpl = {.publicArea = {
        .type = TPM2_ALG_ECC,
        .nameAlg = TPM2_ALG_SHA256,
        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                            TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_NODA | TPMA_OBJECT_RESTRICTED |
                            TPMA_OBJECT_DECRYPT,
        .parameters.eccDetail = {.symmetric = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128,
                                               .mode.aes = TPM2_ALG_CFB},
                                 .scheme.scheme = TPM2_ALG_NULL, .curveID = TPM2_ECC_NIST_P256,
                                 .kdf.scheme = TPM2_ALG_NULL},
        .unique.ecc = {.x.size = 32, .y.size = 32},
    }};
    return create_primary(t, ESYS_TR_RH_OWNER, &tmpl, srk, NULL, "creating the storage root key (TPM2_CreatePrimary)",
                          why, why_len);
}

idevs_err tpm_ek(tpm_conn *t, bool rsa, ESYS_TR *ek, TPM2B_PUBLIC **pub, char *why, size_t why_len)
{
    const TPMA_OBJECT attrs = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                              TPMA_OBJECT_ADMINWITHPOLICY | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_DECRYPT;
    const TPMT_SYM_DEF_OBJECT aes = {.algorithm = TPM2_ALG_AES, .keyBits.aes = 128, .mode.aes = TPM2_ALG_CFB};
    TPM2B_PUBLIC tmpl = {.publicArea = {.nameAlg = TPM2_ALG_SHA256, .objectAttributes = attrs}};
    tmpl.publicArea.authPolicy.size = sizeof EK_POLICY;
    memcpy(tmpl.publicArea.authPolicy.buffer, EK_POLICY, sizeof EK_POLICY);
    if (rsa) {
        tmpl.publicArea.type = TPM2_ALG_RSA;
        tmpl.publicArea.parameters.rsaDetail = (TPMS_RSA_PARMS){
            .symmetric = aes, .scheme.scheme = TPM2_ALG_NULL, .keyBits = 2048, .exponent = 0};
        tmpl.publicArea.unique.rsa.size = 256;
    } else {
        tmpl.publicArea.type = TPM2_ALG_ECC;
        tmpl.publicArea.parameters.eccDetail = (TPMS_ECC_PARMS){
            .symmetric = aes, .scheme.scheme = TPM2_ALG_NULL, .curveID = TPM2_ECC_NIST_P256,
            .kdf.scheme = TPM2_ALG_NULL};
        tmpl.publicArea.unique.ecc.x.size = 32;
        tmpl.publicArea.unique.ecc.y.size = 32;
    }
    return create_primary(t, ESYS_TR_RH_ENDORSEMENT, &tmpl, ek, pub,
                          "creating the endorsement key (TPM2_CreatePrimary)", why, why_len);
}

void tpm_ak_template(TPM2B_PUBLIC *out)
{
    *out = (TPM2B_PUBLIC){.publicArea = {
        .type = TPM2_ALG_ECC,
        .nameAlg = TPM2_ALG_SHA256,
        /* noDA: its authorization is empty, so dictionary-attack protection guards nothing, and a TPM locked out
         * (after unclean shutdowns) would stop quoting. */
        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                            TPMA_OBJECT_USERWITHAUTH | TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT |
                            TPMA_OBJECT_NODA,
        .parameters.eccDetail = {.symmetric.algorithm = TPM2_ALG_NULL,
                                 .scheme = {.scheme = TPM2_ALG_ECDSA, .details.ecdsa.hashAlg = TPM2_ALG_SHA256},
                                 .curveID = TPM2_ECC_NIST_P256, .kdf.scheme = TPM2_ALG_NULL},
    }};
}

idevs_err tpm_ak_load(tpm_conn *t, int dirfd, ESYS_TR srk, ESYS_TR *ak, TPM2B_PUBLIC *pub_out, char *why,
                      size_t why_len)
{
    uint8_t *pubb = NULL, *privb = NULL;
    size_t publen = 0, privlen = 0;
    TPM2B_PUBLIC pub = {0};
    TPM2B_PRIVATE priv = {0};
    *ak = ESYS_TR_NONE;
    idevs_err err = launcher_state_read(dirfd, TPM_AK_PUB, 1, sizeof pub, &pubb, &publen, why, why_len);
    if (err == IDEVS_OK)
        err = launcher_state_read(dirfd, TPM_AK_PRIV, 1, sizeof priv, &privb, &privlen, why, why_len);
    if (err == IDEVS_OK && (pubb == NULL || privb == NULL))
        err = idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                         "no attestation key in the TPM state directory: enroll this host first "
                         "(idevs-tpm enroll-request, docs/BACKENDS.md \"tpm\")");
    size_t off = 0;
    if (err == IDEVS_OK && (Tss2_MU_TPM2B_PUBLIC_Unmarshal(pubb, publen, &off, &pub) != TSS2_RC_SUCCESS ||
                            off != publen))
        err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "'%s' is not a marshalled TPM2B_PUBLIC", TPM_AK_PUB);
    off = 0;
    if (err == IDEVS_OK && (Tss2_MU_TPM2B_PRIVATE_Unmarshal(privb, privlen, &off, &priv) != TSS2_RC_SUCCESS ||
                            off != privlen))
        err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "'%s' is not a marshalled TPM2B_PRIVATE", TPM_AK_PRIV);
    free(pubb);
    free(privb);
    if (err != IDEVS_OK)
        return err;
    TSS2_RC rc = Esys_Load(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv, &pub, ak);
    if (rc != TSS2_RC_SUCCESS) {
        *ak = ESYS_TR_NONE;
        return tpm_fail(rc, "loading the attestation key (TPM2_Load; was it created by this TPM?)", why, why_len);
    }
    if (pub_out != NULL)
        *pub_out = pub;
    return IDEVS_OK;
}

idevs_err tpm_public_to_pkey(const TPM2B_PUBLIC *pub, EVP_PKEY **out)
{
    *out = NULL;
    const TPMT_PUBLIC *p = &pub->publicArea;
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    BIGNUM *n = NULL, *e = NULL;
    const char *type = NULL;
    uint8_t point[65]; /* the builder keeps a pointer to it until OSSL_PARAM_BLD_to_param */
    bool ok = bld != NULL;
    if (ok && p->type == TPM2_ALG_ECC && p->parameters.eccDetail.curveID == TPM2_ECC_NIST_P256 &&
        p->unique.ecc.x.size == 32 && p->unique.ecc.y.size == 32) {
        point[0] = 0x04; /* uncompressed */
        memcpy(point + 1, p->unique.ecc.x.buffer, 32);
        memcpy(point + 33, p->unique.ecc.y.buffer, 32);
        type = "EC";
        ok = OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0) == 1 &&
             OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point) == 1;
    } else if (ok && p->type == TPM2_ALG_RSA && p->unique.rsa.size > 0) {
        type = "RSA";
        UINT32 exp = p->parameters.rsaDetail.exponent != 0 ? p->parameters.rsaDetail.exponent : 65537;
        ok = (n = BN_bin2bn(p->unique.rsa.buffer, p->unique.rsa.size, NULL)) != NULL &&
             (e = BN_new()) != NULL && BN_set_word(e, exp) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) == 1 &&
             OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e) == 1;
    } else
        ok = false;
    ok = ok && (params = OSSL_PARAM_BLD_to_param(bld)) != NULL &&
         (ctx = EVP_PKEY_CTX_new_from_name(NULL, type, NULL)) != NULL && EVP_PKEY_fromdata_init(ctx) == 1 &&
         EVP_PKEY_fromdata(ctx, out, EVP_PKEY_PUBLIC_KEY, params) == 1;
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_free(n);
    BN_free(e);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}
