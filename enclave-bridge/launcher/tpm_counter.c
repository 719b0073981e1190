/* The tpm backend's rollback counter: a TPM NV counter (TPM_NT_COUNTER, 8 bytes, only ever incremented) per
 * program, at index TPM_COUNTER_BASE + the first 16 bits of SHA-256("idevs replay counter v1" || program UUID):
 * derived from the program, not from anything in the state directory, so that removing or copying files cannot
 * point the launcher at another counter. Defined on first use in the owner hierarchy (empty owner authorization)
 * with an empty authorization of its own: whoever can reach the TPM can increment it, which only makes records
 * look older (denial of service, which root has anyway), never younger. Not orderly: an orderly counter jumps
 * ahead after a power loss, which would refuse the last good record. */
#include <stdio.h>
#include <string.h>

#include "launcher_internal.h"
#include "tpm_internal.h"

#define COUNTER_LABEL "idevs replay counter v1"
#define ADVANCE_MAX 16 /* increments in one call; the record is at most one ahead in normal use */

uint32_t tpm_counter_index(const idevs_uuid *program)
{
    uint8_t buf[sizeof COUNTER_LABEL - 1 + IDEVS_UUID_LEN], digest[IDEVS_SHA256_LEN];
    memcpy(buf, COUNTER_LABEL, sizeof COUNTER_LABEL - 1);
    memcpy(buf + sizeof COUNTER_LABEL - 1, program->b, IDEVS_UUID_LEN);
    if (idevs_sha256(buf, sizeof buf, digest) != IDEVS_OK)
        memset(digest, 0, sizeof digest);
    return TPM_COUNTER_BASE + ((uint32_t)digest[0] << 8 | digest[1]);
}

/* The counter's ESYS handle, defining the index when absent. */
static idevs_err counter_handle(tpm_conn *t, uint32_t index, ESYS_TR *nv, bool *created, char *why,
                                size_t why_len)
{
    *created = false;
    bool exists = false;
    idevs_err err = tpm_nv_exists(t, index, &exists, why, why_len);
    if (err != IDEVS_OK)
        return err;
    TSS2_RC rc = exists ? Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, nv)
                        : TPM2_RC_HANDLE;
    if (exists && rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "opening the replay counter's NV index", why, why_len);
    if (exists) {
        TPM2B_NV_PUBLIC *pub = NULL;
        rc = Esys_NV_ReadPublic(t->esys, *nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
        bool counter = rc == TSS2_RC_SUCCESS &&
                       ((pub->nvPublic.attributes & TPMA_NV_TPM2_NT_MASK) >> TPMA_NV_TPM2_NT_SHIFT) == TPM2_NT_COUNTER;
        Esys_Free(pub);
        if (rc != TSS2_RC_SUCCESS)
            return tpm_fail(rc, "reading the replay counter's NV index (TPM2_NV_ReadPublic)", why, why_len);
        if (!counter)
            return idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "NV index 0x%08x, where this program's replay counter "
                              "goes, is something else: remove it (tpm2_nvundefine 0x%08x) or free it", index, index);
        return IDEVS_OK;
    }
    const TPM2B_AUTH auth = {0};
    TPM2B_NV_PUBLIC pub = {.nvPublic = {
        .nvIndex = index,
        .nameAlg = TPM2_ALG_SHA256,
        .attributes = (TPM2_NT_COUNTER << TPMA_NV_TPM2_NT_SHIFT) | TPMA_NV_AUTHWRITE | TPMA_NV_AUTHREAD |
                      TPMA_NV_OWNERREAD | TPMA_NV_NO_DA,
        .dataSize = 8,
    }};
    rc = Esys_NV_DefineSpace(t->esys, ESYS_TR_RH_OWNER, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &auth, &pub,
                             nv);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "defining the replay counter (TPM2_NV_DefineSpace in the owner hierarchy)", why, why_len);
    *created = true;
    return IDEVS_OK;
}

static idevs_err increment(tpm_conn *t, ESYS_TR nv, char *why, size_t why_len)
{
    TSS2_RC rc = Esys_NV_Increment(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE);
    return rc == TSS2_RC_SUCCESS ? IDEVS_OK : tpm_fail(rc, "incrementing the replay counter (TPM2_NV_Increment)",
                                                      why, why_len);
}

/* The counter's value; a counter never incremented (just defined) is incremented once first. */
static idevs_err counter_value(tpm_conn *t, ESYS_TR nv, uint64_t *value, char *why, size_t why_len)
{
    for (int tries = 0; tries < 2; tries++) {
        TPM2B_MAX_NV_BUFFER *data = NULL;
        TSS2_RC rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, 8, 0, &data);
        if (rc == TSS2_RC_SUCCESS && data->size == 8) {
            uint64_t v = 0;
            for (int i = 0; i < 8; i++)
                v = v << 8 | data->buffer[i];
            Esys_Free(data);
            *value = v;
            return IDEVS_OK;
        }
        Esys_Free(data);
        if ((rc & 0xfff) != TPM2_RC_NV_UNINITIALIZED || tries > 0)
            return rc != TSS2_RC_SUCCESS ? tpm_fail(rc, "reading the replay counter (TPM2_NV_Read)", why, why_len)
                                         : idevs_fail(why, why_len, IDEVS_ERR_IO, "the replay counter is not 8 bytes");
        idevs_err err = increment(t, nv, why, why_len);
        if (err != IDEVS_OK)
            return err;
    }
    return IDEVS_ERR_IO;
}

idevs_err tpm_counter(const char *tcti, const idevs_uuid *program, uint64_t advance_to, uint64_t *value,
                      bool *created, char *why, size_t why_len)
{
    tpm_conn t;
    idevs_err err = tpm_open(tcti, &t, why, why_len);
    if (err != IDEVS_OK)
        return err;
    ESYS_TR nv = ESYS_TR_NONE;
    uint64_t v = 0;
    uint32_t index = tpm_counter_index(program);
    if ((err = counter_handle(&t, index, &nv, created, why, why_len)) == IDEVS_OK &&
        (err = counter_value(&t, nv, &v, why, why_len)) == IDEVS_OK && advance_to > v) {
        if (advance_to - v > ADVANCE_MAX)
            err = idevs_fail(why, why_len, IDEVS_ERR_IO, "the replay counter 0x%08x is at %llu, far below %llu",
                             index, (unsigned long long)v, (unsigned long long)advance_to);
        while (err == IDEVS_OK && v < advance_to && (err = increment(&t, nv, why, why_len)) == IDEVS_OK)
            err = counter_value(&t, nv, &v, why, why_len);
    }
    if (nv != ESYS_TR_NONE)
        Esys_TR_Close(t.esys, &nv);
    tpm_close(&t);
    if (err == IDEVS_OK)
        *value = v;
    return err;
}
