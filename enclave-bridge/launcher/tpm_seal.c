/* The tpm backend's sealing secret: 32 random bytes that only this TPM releases, and only while the boot PCRs
 * 0-7 hold the values they held when the secret was made (a keyedhash data object under the SRK whose only
 * authorization is PolicyPCR over them). The object's public and private parts, marshalled one after the other,
 * are the file sealing.tpm of the process's state directory; the secret itself is never written anywhere.
 * The sealing key follows from it by the rule of every backend (sealing.c). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <tss2/tss2_mu.h>

#include "launcher_internal.h"
#include "tpm_internal.h"

static void boot_selection(TPML_PCR_SELECTION *sel)
{
    memset(sel, 0, sizeof *sel);
    sel->count = 1;
    sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
    sel->pcrSelections[0].sizeofSelect = 3;
    sel->pcrSelections[0].pcrSelect[0] = 0xff; /* PCRs 0-7 */
}

/* A session of type (trial: to compute the policy; policy: to satisfy it) with PolicyPCR on the boot PCRs'
 * current values. */
static idevs_err pcr_session(tpm_conn *t, TPM2_SE type, ESYS_TR *session, char *why, size_t why_len)
{
    const TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
    TPML_PCR_SELECTION sel;
    boot_selection(&sel);
    const TPM2B_DIGEST current = {0}; /* empty: the TPM takes the PCRs' values now */
    TSS2_RC rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, NULL, type, &sym, TPM2_ALG_SHA256, session);
    if (rc != TSS2_RC_SUCCESS) {
        *session = ESYS_TR_NONE;
        return tpm_fail(rc, "starting a policy session (TPM2_StartAuthSession)", why, why_len);
    }
    rc = Esys_PolicyPCR(t->esys, *session, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &current, &sel);
    if (rc != TSS2_RC_SUCCESS) {
        tpm_flush(t, session);
        return tpm_fail(rc, "binding the policy to PCRs 0-7 (TPM2_PolicyPCR)", why, why_len);
    }
    return IDEVS_OK;
}

/* A fresh secret, sealed to the boot PCRs as they are, written as sealing.tpm. */
static idevs_err seal_new(tpm_conn *t, ESYS_TR srk, int dirfd, uint8_t secret[IDEVS_SEALING_SECRET_LEN],
                          char *why, size_t why_len)
{
    ESYS_TR trial = ESYS_TR_NONE;
    TPM2B_DIGEST *policy = NULL;
    idevs_err err = pcr_session(t, TPM2_SE_TRIAL, &trial, why, why_len);
    if (err != IDEVS_OK)
        return err;
    TSS2_RC rc = Esys_PolicyGetDigest(t->esys, trial, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &policy);
    tpm_flush(t, &trial);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "computing the sealing policy (TPM2_PolicyGetDigest)", why, why_len);
    TPM2B_PUBLIC tmpl = {.publicArea = {
        .type = TPM2_ALG_KEYEDHASH,
        .nameAlg = TPM2_ALG_SHA256,
        /* no userWithAuth: the policy is the only way in */
        .objectAttributes = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_NODA,
        .parameters.keyedHashDetail.scheme.scheme = TPM2_ALG_NULL,
    }};
    tmpl.publicArea.authPolicy = *policy;
    Esys_Free(policy);
    TPM2B_SENSITIVE_CREATE sens = {0};
    if ((err = idevs_random(secret, IDEVS_SEALING_SECRET_LEN)) != IDEVS_OK)
        return idevs_fail(why, why_len, err, "no randomness for the sealing secret");
    sens.sensitive.data.size = IDEVS_SEALING_SECRET_LEN;
    memcpy(sens.sensitive.data.buffer, secret, IDEVS_SEALING_SECRET_LEN);
    const TPM2B_DATA outside = {0};
    const TPML_PCR_SELECTION none = {0};
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_PUBLIC *pub = NULL;
    TPM2B_CREATION_DATA *cd = NULL;
    TPM2B_DIGEST *ch = NULL;
    TPMT_TK_CREATION *tk = NULL;
    rc = Esys_Create(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl, &outside, &none, &priv,
                     &pub, &cd, &ch, &tk);
    idevs_cleanse(&sens, sizeof sens);
    Esys_Free(cd);
    Esys_Free(ch);
    Esys_Free(tk);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "sealing the secret (TPM2_Create)", why, why_len);
    uint8_t blob[sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE)];
    size_t len = 0;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(pub, blob, sizeof blob, &len) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(priv, blob, sizeof blob, &len) != TSS2_RC_SUCCESS)
        err = idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "marshalling the sealed secret failed");
    Esys_Free(pub);
    Esys_Free(priv);
    if (err == IDEVS_OK)
        err = launcher_state_write(dirfd, TPM_SEALED_SECRET, blob, len, why, why_len);
    return err;
}

static idevs_err unseal(tpm_conn *t, ESYS_TR srk, const uint8_t *blob, size_t len,
                        uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why, size_t why_len)
{
    TPM2B_PUBLIC pub = {0};
    TPM2B_PRIVATE priv = {0};
    size_t off = 0;
    if (Tss2_MU_TPM2B_PUBLIC_Unmarshal(blob, len, &off, &pub) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Unmarshal(blob, len, &off, &priv) != TSS2_RC_SUCCESS || off != len)
        return idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "'%s' is not a sealed object (TPM2B_PUBLIC, "
                          "TPM2B_PRIVATE)", TPM_SEALED_SECRET);
    ESYS_TR obj = ESYS_TR_NONE, session = ESYS_TR_NONE;
    TSS2_RC rc = Esys_Load(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &priv, &pub, &obj);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "loading the sealed secret (TPM2_Load; sealed by another TPM?)", why, why_len);
    TPM2B_SENSITIVE_DATA *out = NULL;
    idevs_err err = pcr_session(t, TPM2_SE_POLICY, &session, why, why_len);
    if (err == IDEVS_OK) {
        rc = Esys_Unseal(t->esys, obj, session, ESYS_TR_NONE, ESYS_TR_NONE, &out);
        if ((rc & (TPM2_RC_FMT1 | 0x3f)) == TPM2_RC_POLICY_FAIL)
            err = idevs_fail(why, why_len, IDEVS_ERR_UNSEAL,
                             "the TPM does not unseal the sealing secret: PCRs 0-7 changed since it was sealed "
                             "(another firmware, boot loader or Secure Boot policy booted); the compartment's keys "
                             "stay sealed. To start over with fresh keys on this boot, remove '%s' from the state "
                             "directory (docs/BACKENDS.md, \"tpm\")", TPM_SEALED_SECRET);
        else if (rc != TSS2_RC_SUCCESS)
            err = tpm_fail(rc, "unsealing the sealing secret (TPM2_Unseal)", why, why_len);
        else if (out->size != IDEVS_SEALING_SECRET_LEN)
            err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the sealed secret holds %u bytes, not %d",
                             (unsigned)out->size, IDEVS_SEALING_SECRET_LEN);
        else
            memcpy(secret, out->buffer, IDEVS_SEALING_SECRET_LEN);
        if (out != NULL)
            idevs_cleanse(out, sizeof *out);
        Esys_Free(out);
    }
    tpm_flush(t, &session);
    tpm_flush(t, &obj);
    return err;
}

idevs_err tpm_sealing_secret(const char *tcti, int dirfd, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                             size_t why_len)
{
    uint8_t *blob = NULL;
    size_t len = 0;
    idevs_err err = launcher_state_read(dirfd, TPM_SEALED_SECRET, 1, sizeof(TPM2B_PUBLIC) + sizeof(TPM2B_PRIVATE),
                                        &blob, &len, why, why_len);
    if (err != IDEVS_OK)
        return err;
    tpm_conn t;
    ESYS_TR srk = ESYS_TR_NONE;
    if ((err = tpm_open(tcti, &t, why, why_len)) == IDEVS_OK) {
        if ((err = tpm_srk(&t, &srk, why, why_len)) == IDEVS_OK)
            err = blob == NULL ? seal_new(&t, srk, dirfd, secret, why, why_len)
                               : unseal(&t, srk, blob, len, secret, why, why_len);
        tpm_flush(&t, &srk);
        tpm_close(&t);
    }
    free(blob);
    if (err != IDEVS_OK)
        idevs_cleanse(secret, IDEVS_SEALING_SECRET_LEN);
    return err;
}
