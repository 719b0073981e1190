/* The `tpm` backend: the process backend's sandboxed process (measure and launch are the process backend's,
 * which this one wraps), a sealing secret the TPM keeps under the boot PCRs (tpm_seal.c), and evidence from a
 * TPM 2.0: each certification of new keys is
 * extended into a register PCR and appended to the event log (tpm_log.c), then the AK quotes the boot PCRs 0-7
 * and the register with qualifying data = key binding || evidence nonce. The report (certs/tpm.proto,
 * TpmReport) goes into the evidence; docs/BACKENDS.md, "tpm", says what this adds and what it does not. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <tss2/tss2_mu.h>

#include "launcher_internal.h"
#include "tpm.pb-c.h"
#include "tpm_internal.h"

#define QUOTE_TRIES 3 /* a PCR that changed between read and quote: read and quote again */

typedef struct tpm_backend {
    idevs_backend_impl *process; /* measure, launch, release */
    int dirfd;                   /* <state dir>/tpm: the host's AK, its certificate, the event logs */
    int state_dirfd;             /* the process's state directory: sealing.tpm */
    char *tcti;
    unsigned pcr;
    uint8_t *ak_cert; /* DER */
    size_t ak_cert_len;
    uint8_t *report; /* the last evidence's hardware report, kept until the next or free */
    size_t report_len;
} tpm_backend;

static idevs_err tpm_measure(void *state, const char *host_path, const char *logic_path, const uint8_t *descriptor,
                             size_t descriptor_len, idevs_image *out, char *why, size_t why_len)
{
    tpm_backend *tb = state;
    return idevs_backend_measure(tb->process, host_path, logic_path, descriptor, descriptor_len, out, why, why_len);
}

static idevs_err tpm_launch(void *state, const idevs_image *image, idevs_child *out, char *why, size_t why_len)
{
    tpm_backend *tb = state;
    return idevs_backend_launch(tb->process, image, out, why, why_len);
}

/* The rule of every backend, from a secret the TPM unseals only on this boot configuration (tpm_seal.c). */
static idevs_err tpm_sealing_key(void *state, const idevs_image *image, uint8_t key[IDEVS_SEALING_KEY_LEN],
                                 char *why, size_t why_len)
{
    tpm_backend *tb = state;
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    idevs_err err = tpm_sealing_secret(tb->tcti, tb->state_dirfd, secret, why, why_len);
    if (err != IDEVS_OK)
        return err;
    err = launcher_sealing_key(secret, image->measurement, key);
    idevs_cleanse(secret, sizeof secret);
    if (err != IDEVS_OK) {
        idevs_cleanse(key, IDEVS_SEALING_KEY_LEN);
        snprintf(why, why_len, "deriving the sealing key failed");
    }
    return err;
}

static idevs_err tpm_state_secret(void *state, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why, size_t why_len)
{
    tpm_backend *tb = state;
    return tpm_sealing_secret(tb->tcti, tb->state_dirfd, secret, why, why_len);
}

static idevs_err tpm_rollback_counter(void *state, const idevs_uuid *program, uint64_t advance_to, uint64_t *value,
                                      bool *created, char *why, size_t why_len)
{
    tpm_backend *tb = state;
    return tpm_counter(tb->tcti, program, advance_to, value, created, why, why_len);
}

static void tpm_release_image(void *state, idevs_image *image)
{
    tpm_backend *tb = state;
    idevs_backend_release_image(tb->process, image);
}

static void tpm_free(void *state)
{
    tpm_backend *tb = state;
    if (tb == NULL)
        return;
    idevs_backend_free(tb->process);
    if (tb->dirfd >= 0)
        close(tb->dirfd);
    if (tb->state_dirfd >= 0)
        close(tb->state_dirfd);
    free(tb->tcti);
    free(tb->ak_cert);
    free(tb->report);
    free(tb);
}

/* The selection quoted: PCRs 0-7 and the register, SHA-256 bank. */
static void selection(unsigned reg, TPML_PCR_SELECTION *sel)
{
    memset(sel, 0, sizeof *sel);
    sel->count = 1;
    sel->pcrSelections[0].hash = TPM2_ALG_SHA256;
    sel->pcrSelections[0].sizeofSelect = 3;
    sel->pcrSelections[0].pcrSelect[0] = 0xff;
    sel->pcrSelections[0].pcrSelect[reg / 8] |= (uint8_t)(1u << (reg % 8));
}

/* Reads every PCR of want (a TPM returns at most 8 a call) into values[index]. */
static idevs_err read_pcrs(tpm_conn *t, const TPML_PCR_SELECTION *want, uint8_t values[24][IDEVS_SHA256_LEN],
                           char *why, size_t why_len)
{
    TPML_PCR_SELECTION left = *want;
    for (int round = 0; round < 24; round++) {
        bool any = false;
        for (unsigned i = 0; i < 3; i++)
            any = any || left.pcrSelections[0].pcrSelect[i] != 0;
        if (!any)
            return IDEVS_OK;
        UINT32 counter;
        TPML_PCR_SELECTION *got = NULL;
        TPML_DIGEST *vals = NULL;
        TSS2_RC rc = Esys_PCR_Read(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &left, &counter, &got, &vals);
        if (rc != TSS2_RC_SUCCESS)
            return tpm_fail(rc, "reading PCRs (TPM2_PCR_Read)", why, why_len);
        size_t k = 0;
        bool progress = false;
        for (unsigned pcr = 0; pcr < 24 && got->count == 1; pcr++) {
            if ((got->pcrSelections[0].pcrSelect[pcr / 8] & (1u << (pcr % 8))) == 0)
                continue;
            if (k >= vals->count || vals->digests[k].size != IDEVS_SHA256_LEN)
                break;
            memcpy(values[pcr], vals->digests[k].buffer, IDEVS_SHA256_LEN);
            left.pcrSelections[0].pcrSelect[pcr / 8] &= (uint8_t) ~(1u << (pcr % 8));
            k++;
            progress = true;
        }
        Esys_Free(got);
        Esys_Free(vals);
        if (!progress)
            return idevs_fail(why, why_len, IDEVS_ERR_IO, "the TPM has no SHA-256 bank for the PCRs asked");
    }
    return idevs_fail(why, why_len, IDEVS_ERR_IO, "the TPM did not return the PCRs asked");
}

/* The register holds the log's events, the new one appended and extended unless the log has it already (a
 * restart that got its keys back, a renewal): those need no new event. */
static idevs_err record_event(tpm_backend *tb, tpm_conn *t, int logfd, tpm_log *log,
                              const uint8_t event[TPM_EVENT_LEN], char *why, size_t why_len)
{
    TPML_PCR_SELECTION sel = {0};
    sel.count = 1;
    sel.pcrSelections[0].hash = TPM2_ALG_SHA256;
    sel.pcrSelections[0].sizeofSelect = 3;
    sel.pcrSelections[0].pcrSelect[tb->pcr / 8] = (uint8_t)(1u << (tb->pcr % 8));
    uint8_t values[24][IDEVS_SHA256_LEN];
    idevs_err err = read_pcrs(t, &sel, values, why, why_len);
    if (err == IDEVS_OK)
        err = tpm_log_reconcile(logfd, log, values[tb->pcr], tb->pcr, why, why_len);
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; i < log->count; i++)
        if (memcmp(log->events[i], event, TPM_EVENT_LEN) == 0)
            return IDEVS_OK;
    TPML_DIGEST_VALUES d = {.count = 1, .digests[0].hashAlg = TPM2_ALG_SHA256};
    if ((err = tpm_event_digest(event, d.digests[0].digest.sha256)) != IDEVS_OK)
        return idevs_fail(why, why_len, err, "hashing the TPM event failed");
    if ((err = tpm_log_append(logfd, log, event, why, why_len)) != IDEVS_OK)
        return err;
    TSS2_RC rc = Esys_PCR_Extend(t->esys, ESYS_TR_PCR0 + tb->pcr, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &d);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "extending the register (TPM2_PCR_Extend)", why, why_len);
    return IDEVS_OK;
}

/* Quotes sel; values[] holds the PCRs the quote covers (read before it, checked against its digest). */
static idevs_err quote(tpm_conn *t, ESYS_TR ak, const TPML_PCR_SELECTION *sel, const uint8_t *qualifying,
                       size_t qualifying_len, uint8_t values[24][IDEVS_SHA256_LEN], TPM2B_ATTEST **attest,
                       TPMT_SIGNATURE **sig, char *why, size_t why_len)
{
    TPM2B_DATA q = {.size = (UINT16)qualifying_len};
    memcpy(q.buffer, qualifying, qualifying_len);
    const TPMT_SIG_SCHEME scheme = {.scheme = TPM2_ALG_NULL}; /* the AK's own: ECDSA-SHA256 */
    for (int attempt = 0; attempt < QUOTE_TRIES; attempt++) {
        idevs_err err = read_pcrs(t, sel, values, why, why_len);
        if (err != IDEVS_OK)
            return err;
        TSS2_RC rc = Esys_Quote(t->esys, ak, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &q, &scheme, sel, attest,
                                sig);
        if (rc != TSS2_RC_SUCCESS)
            return tpm_fail(rc, "quoting (TPM2_Quote)", why, why_len);
        TPMS_ATTEST a;
        size_t off = 0;
        if (Tss2_MU_TPMS_ATTEST_Unmarshal((*attest)->attestationData, (*attest)->size, &off, &a) != TSS2_RC_SUCCESS ||
            a.type != TPM2_ST_ATTEST_QUOTE) {
            Esys_Free(*attest);
            Esys_Free(*sig);
            return idevs_fail(why, why_len, IDEVS_ERR_IO, "the TPM's quote does not parse");
        }
        EVP_MD_CTX *md = EVP_MD_CTX_new();
        uint8_t digest[IDEVS_SHA256_LEN];
        unsigned dlen = 0;
        bool ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
        for (unsigned pcr = 0; pcr < 24 && ok; pcr++)
            if (sel->pcrSelections[0].pcrSelect[pcr / 8] & (1u << (pcr % 8)))
                ok = EVP_DigestUpdate(md, values[pcr], IDEVS_SHA256_LEN) == 1;
        ok = ok && EVP_DigestFinal_ex(md, digest, &dlen) == 1;
        EVP_MD_CTX_free(md);
        if (!ok) {
            Esys_Free(*attest);
            Esys_Free(*sig);
            return idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "hashing the PCR values failed");
        }
        if (a.attested.quote.pcrDigest.size == IDEVS_SHA256_LEN &&
            memcmp(a.attested.quote.pcrDigest.buffer, digest, IDEVS_SHA256_LEN) == 0)
            return IDEVS_OK;
        Esys_Free(*attest); /* a PCR changed in between: again */
        Esys_Free(*sig);
    }
    return idevs_fail(why, why_len, IDEVS_ERR_IO, "the quoted PCRs kept changing (%d tries)", QUOTE_TRIES);
}

static idevs_err pack_report(tpm_backend *tb, const TPM2B_ATTEST *attest, const TPMT_SIGNATURE *sig,
                             const TPML_PCR_SELECTION *sel, uint8_t values[24][IDEVS_SHA256_LEN], const tpm_log *log,
                             char *why, size_t why_len)
{
    uint8_t sigbuf[sizeof(TPMT_SIGNATURE)];
    size_t siglen = 0;
    if (Tss2_MU_TPMT_SIGNATURE_Marshal(sig, sigbuf, sizeof sigbuf, &siglen) != TSS2_RC_SUCCESS)
        return idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "marshalling the quote's signature failed");
    Idevs__V1__TpmReport r = IDEVS__V1__TPM_REPORT__INIT;
    r.version = 1;
    r.attest.data = (uint8_t *)attest->attestationData;
    r.attest.len = attest->size;
    r.signature.data = sigbuf;
    r.signature.len = siglen;
    r.register_pcr = tb->pcr;
    r.ak_certificate.data = tb->ak_cert;
    r.ak_certificate.len = tb->ak_cert_len;
    Idevs__V1__TpmPcrValue pcrs[TPM_BOOT_PCRS + 1], *pcrp[TPM_BOOT_PCRS + 1];
    size_t n = 0;
    for (unsigned pcr = 0; pcr < 24; pcr++) {
        if ((sel->pcrSelections[0].pcrSelect[pcr / 8] & (1u << (pcr % 8))) == 0 || n >= TPM_BOOT_PCRS + 1)
            continue;
        idevs__v1__tpm_pcr_value__init(&pcrs[n]);
        pcrs[n].index = pcr;
        pcrs[n].value.data = values[pcr];
        pcrs[n].value.len = IDEVS_SHA256_LEN;
        pcrp[n] = &pcrs[n];
        n++;
    }
    r.n_pcrs = n;
    r.pcrs = pcrp;
    Idevs__V1__TpmEvent ev[TPM_EVENTS_MAX], *evp[TPM_EVENTS_MAX];
    for (size_t i = 0; i < log->count && i < TPM_EVENTS_MAX; i++) {
        idevs__v1__tpm_event__init(&ev[i]);
        uint8_t *e = log->events[i];
        ev[i].measurement = (ProtobufCBinaryData){IDEVS_SHA256_LEN, e};
        ev[i].program_uuid = (ProtobufCBinaryData){16, e + 32};
        ev[i].descriptor_digest = (ProtobufCBinaryData){IDEVS_SHA256_LEN, e + 48};
        ev[i].key_binding = (ProtobufCBinaryData){IDEVS_SHA256_LEN, e + 80};
        evp[i] = &ev[i];
    }
    r.n_events = log->count;
    r.events = evp;
    size_t len = idevs__v1__tpm_report__get_packed_size(&r);
    if (len > IDEVS_HARDWARE_REPORT_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "the TPM report would take %zu bytes, above %d", len,
                          IDEVS_HARDWARE_REPORT_MAX);
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return IDEVS_ERR_NOMEM;
    idevs__v1__tpm_report__pack(&r, buf);
    free(tb->report);
    tb->report = buf;
    tb->report_len = len;
    return IDEVS_OK;
}

/* The AK the TPM loaded must be the one the certificate names: a host enrolled again since the start (a new AK)
 * would otherwise sign quotes no verifier accepts. */
static idevs_err ak_matches_cert(const tpm_backend *tb, const TPM2B_PUBLIC *pub, char *why, size_t why_len)
{
    const uint8_t *p = tb->ak_cert;
    X509 *x = d2i_X509(NULL, &p, (long)tb->ak_cert_len);
    EVP_PKEY *ak = NULL;
    bool same = x != NULL && p == tb->ak_cert + tb->ak_cert_len && tpm_public_to_pkey(pub, &ak) == IDEVS_OK &&
                EVP_PKEY_eq(ak, X509_get0_pubkey(x)) == 1;
    EVP_PKEY_free(ak);
    X509_free(x);
    return same ? IDEVS_OK
                : idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                             "the AK certificate '%s/%s' does not name the attestation key in '%s' (enrolled again "
                             "since the broker started, or the files were mixed): finish the enrollment "
                             "(idevs-tpm enroll-install) and restart the broker", IDEVS_TPM_DIR, TPM_AK_CERT,
                             TPM_AK_PUB);
}

static idevs_err tpm_evidence(void *state, const idevs_image *image, const idevs_uuid *program,
                              const uint8_t key_binding[IDEVS_SHA256_LEN], idevs_evidence *ev, char *why,
                              size_t why_len)
{
    tpm_backend *tb = state;
    idevs_err err = idevs_backend_evidence(tb->process, image, program, key_binding, ev, why, why_len);
    if (err != IDEVS_OK)
        return err;
    ev->backend = IDEVS_BACKEND_TPM;
    uint8_t event[TPM_EVENT_LEN];
    memcpy(event, image->measurement, 32);
    memcpy(event + 32, program->b, 16);
    memcpy(event + 48, image->descriptor_digest, 32);
    memcpy(event + 80, key_binding, 32);
    uint8_t qualifying[IDEVS_SHA256_LEN + IDEVS_EVIDENCE_NONCE_LEN];
    memcpy(qualifying, key_binding, IDEVS_SHA256_LEN);
    memcpy(qualifying + IDEVS_SHA256_LEN, ev->nonce, IDEVS_EVIDENCE_NONCE_LEN);

    tpm_conn t;
    tpm_log log = {0};
    int logfd = -1;
    ESYS_TR srk = ESYS_TR_NONE, ak = ESYS_TR_NONE;
    TPM2B_ATTEST *attest = NULL;
    TPMT_SIGNATURE *sig = NULL;
    TPML_PCR_SELECTION sel;
    TPM2B_PUBLIC akpub;
    uint8_t values[24][IDEVS_SHA256_LEN];
    selection(tb->pcr, &sel);
    if ((err = tpm_open(tb->tcti, &t, why, why_len)) != IDEVS_OK)
        return err;
    if ((err = tpm_log_open(tb->dirfd, tb->pcr, &logfd, &log, why, why_len)) == IDEVS_OK &&
        (err = record_event(tb, &t, logfd, &log, event, why, why_len)) == IDEVS_OK &&
        (err = tpm_srk(&t, &srk, why, why_len)) == IDEVS_OK &&
        (err = tpm_ak_load(&t, tb->dirfd, srk, &ak, &akpub, why, why_len)) == IDEVS_OK &&
        (err = ak_matches_cert(tb, &akpub, why, why_len)) == IDEVS_OK &&
        (err = quote(&t, ak, &sel, qualifying, sizeof qualifying, values, &attest, &sig, why, why_len)) == IDEVS_OK) {
        err = pack_report(tb, attest, sig, &sel, values, &log, why, why_len);
        Esys_Free(attest);
        Esys_Free(sig);
    }
    tpm_log_close(logfd, &log);
    tpm_flush(&t, &ak);
    tpm_flush(&t, &srk);
    tpm_close(&t);
    if (err != IDEVS_OK)
        return err;
    ev->hardware_report = tb->report;
    ev->hardware_report_len = tb->report_len;
    return IDEVS_OK;
}

static const idevs_backend_ops tpm_ops = {
    .kind = IDEVS_BACKEND_TPM,
    .measure = tpm_measure,
    .launch = tpm_launch,
    .evidence = tpm_evidence,
    .sealing_key = tpm_sealing_key,
    .state_secret = tpm_state_secret,
    .rollback_counter = tpm_rollback_counter,
    .release_image = tpm_release_image,
    .free = tpm_free,
};

idevs_err idevs_tpm_pcr_check(unsigned pcr, char *why, size_t why_len)
{
    if (pcr == 16 || pcr == 23)
        return idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                          "PCR %u can be reset by anyone at locality 0: choose one of 8-15 (docs/BACKENDS.md)", pcr);
    if (pcr < 8 || pcr > 15)
        return idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                          "PCR %u is not one of 8-15 (0-7 hold the boot measurements, 16-23 are debug, resettable "
                          "or for dynamic launch): choose one of 8-15 (docs/BACKENDS.md)", pcr);
    return IDEVS_OK;
}

/* The AK certificate enrollment installed; its absence is the operator's next step, said so. */
static idevs_err read_ak_cert(tpm_backend *tb, const char *tpm_state_dir, char *why, size_t why_len)
{
    idevs_err err = launcher_state_read(tb->dirfd, TPM_AK_CERT, 1, IDEVS_CERT_MAX, &tb->ak_cert, &tb->ak_cert_len,
                                        why, why_len);
    if (err == IDEVS_OK && tb->ak_cert == NULL)
        err = idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                         "no AK certificate in '%s/%s/%s': this host is not enrolled; run idevs-tpm enroll-request, "
                         "have the operator answer it (idevs-ca tpm-challenge, tpm-issue), then idevs-tpm "
                         "enroll-activate and enroll-install (docs/BACKENDS.md, \"tpm\")",
                         tpm_state_dir, IDEVS_TPM_DIR, TPM_AK_CERT);
    return err;
}

idevs_err idevs_backend_tpm_new(const idevs_tpm_backend_options *opts, idevs_backend_impl **out, char *why,
                                size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    if (opts == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    idevs_err err = idevs_tpm_pcr_check(opts->pcr, why, why_len);
    if (err != IDEVS_OK)
        return err;
    tpm_backend *tb = calloc(1, sizeof *tb);
    if (tb == NULL)
        return IDEVS_ERR_NOMEM;
    tb->dirfd = tb->state_dirfd = -1;
    tb->pcr = opts->pcr;
    const char *tpm_state = opts->tpm_state_dir != NULL ? opts->tpm_state_dir : opts->state_dir;
    idevs_process_backend_options popts = {.state_dir = opts->state_dir, .run_as = opts->run_as};
    if (opts->tcti == NULL || opts->tcti[0] == '\0')
        err = idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "no TPM TCTI configured (plugin_opt_tpm_tcti)");
    else if ((tb->tcti = strdup(opts->tcti)) == NULL)
        err = IDEVS_ERR_NOMEM;
    if (err == IDEVS_OK)
        err = idevs_backend_process_new(&popts, &tb->process, why, why_len);
    if (err == IDEVS_OK)
        err = launcher_state_dir_open(opts->state_dir, &tb->state_dirfd, why, why_len);
    if (err == IDEVS_OK)
        err = tpm_dir_open(tpm_state, false, &tb->dirfd, why, why_len);
    if (err == IDEVS_OK)
        err = read_ak_cert(tb, tpm_state, why, why_len);
    if (err == IDEVS_OK) {
        /* The TPM answers and holds the AK: a start fails here, not at the first certification. */
        tpm_conn t;
        ESYS_TR srk = ESYS_TR_NONE, ak = ESYS_TR_NONE;
        TPM2B_PUBLIC akpub;
        if ((err = tpm_open(tb->tcti, &t, why, why_len)) == IDEVS_OK) {
            if ((err = tpm_srk(&t, &srk, why, why_len)) == IDEVS_OK &&
                (err = tpm_ak_load(&t, tb->dirfd, srk, &ak, &akpub, why, why_len)) == IDEVS_OK)
                err = ak_matches_cert(tb, &akpub, why, why_len);
            tpm_flush(&t, &ak);
            tpm_flush(&t, &srk);
            tpm_close(&t);
        }
    }
    if (err == IDEVS_OK && (*out = launcher_backend_wrap(&tpm_ops, tb)) == NULL)
        err = IDEVS_ERR_NOMEM;
    if (err != IDEVS_OK)
        tpm_free(tb);
    return err;
}
