/* Enrollment of this host's attestation key, host side (idevs-tpm; the operator's side is idevs-ca tpm-challenge
 * and tpm-issue): a new AK under the SRK and the EK certificate go to the operator (TpmEnrollRequest), the TPM
 * proves it holds both by recovering the operator's credential (TPM2_ActivateCredential, TpmEnrollResponse),
 * and the AK certificate the operator then issues is installed after checking it names this AK. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <tss2/tss2_mu.h>

#include "launcher_internal.h"
#include "tpm.pb-c.h"
#include "tpm_internal.h"

#define NV_CHUNK 512 /* below every TPM's TPM_PT_NV_BUFFER_MAX */
#define CREDENTIAL_LEN 32

/* Reads the EK certificate at index (DER, bounded by IDEVS_CERT_MAX). IDEVS_ERR_CONFIG when the index is absent. */
static idevs_err nv_read_cert(tpm_conn *t, uint32_t index, uint8_t **out, size_t *out_len, char *why, size_t why_len)
{
    ESYS_TR nv = ESYS_TR_NONE;
    TPM2B_NV_PUBLIC *pub = NULL;
    bool exists = false;
    idevs_err err = tpm_nv_exists(t, index, &exists, why, why_len);
    if (err != IDEVS_OK)
        return err;
    if (!exists)
        return idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "no EK certificate at NV index 0x%08x", index);
    TSS2_RC rc = Esys_TR_FromTPMPublic(t->esys, index, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &nv);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "opening the EK certificate's NV index", why, why_len);
    rc = Esys_NV_ReadPublic(t->esys, nv, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, &pub, NULL);
    if (rc != TSS2_RC_SUCCESS) {
        Esys_TR_Close(t->esys, &nv);
        return tpm_fail(rc, "reading the EK certificate's NV index (TPM2_NV_ReadPublic)", why, why_len);
    }
    size_t size = pub->nvPublic.dataSize;
    Esys_Free(pub);
    if (size == 0 || size > IDEVS_CERT_MAX) {
        Esys_TR_Close(t->esys, &nv);
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "the EK certificate at 0x%08x takes %zu bytes, not "
                          "1..%d", index, size, IDEVS_CERT_MAX);
    }
    uint8_t *buf = malloc(size);
    if (buf == NULL) {
        Esys_TR_Close(t->esys, &nv);
        return IDEVS_ERR_NOMEM;
    }
    for (size_t off = 0; off < size;) {
        UINT16 n = (UINT16)(size - off > NV_CHUNK ? NV_CHUNK : size - off);
        TPM2B_MAX_NV_BUFFER *data = NULL;
        rc = Esys_NV_Read(t->esys, nv, nv, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, n, (UINT16)off, &data);
        if (rc != TSS2_RC_SUCCESS || data->size != n) {
            Esys_Free(data);
            free(buf);
            Esys_TR_Close(t->esys, &nv);
            return rc != TSS2_RC_SUCCESS ? tpm_fail(rc, "reading the EK certificate (TPM2_NV_Read)", why, why_len)
                                         : idevs_fail(why, why_len, IDEVS_ERR_IO, "short read of the EK certificate");
        }
        memcpy(buf + off, data->buffer, n);
        Esys_Free(data);
        off += n;
    }
    Esys_TR_Close(t->esys, &nv);
    *out = buf;
    *out_len = size;
    return IDEVS_OK;
}

/* The EK certificate (RSA first, as most TPMs ship it, then ECC), and the EK it names, checked to be the one the
 * TPM derives from the default template: the operator encrypts the credential to the certificate's key. */
static idevs_err ek_with_cert(tpm_conn *t, ESYS_TR *ek, uint8_t **cert, size_t *cert_len, char *why,
                              size_t why_len)
{
    bool rsa = true;
    idevs_err err = nv_read_cert(t, IDEVS_TPM_EK_CERT_RSA_NV, cert, cert_len, why, why_len);
    if (err == IDEVS_ERR_CONFIG) {
        rsa = false;
        err = nv_read_cert(t, IDEVS_TPM_EK_CERT_ECC_NV, cert, cert_len, why, why_len);
        if (err == IDEVS_ERR_CONFIG)
            return idevs_fail(why, why_len, err, "the TPM holds no EK certificate (NV 0x%08x or 0x%08x)",
                              IDEVS_TPM_EK_CERT_RSA_NV, IDEVS_TPM_EK_CERT_ECC_NV);
    }
    if (err != IDEVS_OK)
        return err;
    TPM2B_PUBLIC *pub = NULL;
    EVP_PKEY *mine = NULL;
    const uint8_t *p = *cert;
    X509 *x = d2i_X509(NULL, &p, (long)*cert_len);
    if (x == NULL || p != *cert + *cert_len)
        err = idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "the TPM's EK certificate is not DER X.509");
    else if ((err = tpm_ek(t, rsa, ek, &pub, why, why_len)) == IDEVS_OK &&
             (tpm_public_to_pkey(pub, &mine) != IDEVS_OK || EVP_PKEY_eq(mine, X509_get0_pubkey(x)) != 1))
        err = idevs_fail(why, why_len, IDEVS_ERR_CONFIG,
                         "the EK certificate names another key than the TPM's %s EK of the default template",
                         rsa ? "RSA" : "ECC");
    EVP_PKEY_free(mine);
    Esys_Free(pub);
    X509_free(x);
    if (err != IDEVS_OK) {
        tpm_flush(t, ek);
        free(*cert);
        *cert = NULL;
    }
    return err;
}

static bool host_ok(const char *host)
{
    size_t n = host != NULL ? strlen(host) : 0;
    if (n == 0 || n > IDEVS_TPM_HOST_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)host[i]) && host[i] != '.' && host[i] != '-' && host[i] != '_')
            return false;
    return true;
}

static idevs_err create_ak(tpm_conn *t, ESYS_TR srk, int dirfd, TPM2B_PUBLIC **pub, char *why, size_t why_len)
{
    const TPM2B_SENSITIVE_CREATE sens = {0};
    const TPM2B_DATA outside = {0};
    const TPML_PCR_SELECTION none = {0};
    TPM2B_PUBLIC tmpl;
    tpm_ak_template(&tmpl);
    TPM2B_PRIVATE *priv = NULL;
    TPM2B_CREATION_DATA *cd = NULL;
    TPM2B_DIGEST *ch = NULL;
    TPMT_TK_CREATION *tk = NULL;
    TSS2_RC rc = Esys_Create(t->esys, srk, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE, &sens, &tmpl, &outside,
                             &none, &priv, pub, &cd, &ch, &tk);
    Esys_Free(cd);
    Esys_Free(ch);
    Esys_Free(tk);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "creating the attestation key (TPM2_Create)", why, why_len);
    uint8_t pubb[sizeof(TPM2B_PUBLIC)], privb[sizeof(TPM2B_PRIVATE)];
    size_t publen = 0, privlen = 0;
    idevs_err err = IDEVS_OK;
    if (Tss2_MU_TPM2B_PUBLIC_Marshal(*pub, pubb, sizeof pubb, &publen) != TSS2_RC_SUCCESS ||
        Tss2_MU_TPM2B_PRIVATE_Marshal(priv, privb, sizeof privb, &privlen) != TSS2_RC_SUCCESS)
        err = idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "marshalling the attestation key failed");
    Esys_Free(priv);
    /* A new AK voids the old certificate: removed first, so no state pairs the new key with it. */
    if (err == IDEVS_OK && unlinkat(dirfd, TPM_AK_CERT, 0) != 0 && errno != ENOENT)
        err = idevs_fail(why, why_len, IDEVS_ERR_IO, "cannot remove the old '%s': %s", TPM_AK_CERT, strerror(errno));
    if (err == IDEVS_OK && (err = launcher_state_write(dirfd, TPM_AK_PRIV, privb, privlen, why, why_len)) == IDEVS_OK)
        err = launcher_state_write(dirfd, TPM_AK_PUB, pubb, publen, why, why_len);
    if (err != IDEVS_OK) {
        Esys_Free(*pub);
        *pub = NULL;
    }
    return err;
}

idevs_err idevs_tpm_enroll_request(const char *tcti, const char *state_dir, const char *host, uint8_t **out,
                                   size_t *out_len, char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    *out = NULL;
    *out_len = 0;
    if (!host_ok(host))
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG,
                          "host name must be 1 to %d letters, digits, '.', '-' or '_'", IDEVS_TPM_HOST_MAX);
    int dirfd = -1;
    idevs_err err = tpm_dir_open(state_dir, true, &dirfd, why, why_len);
    if (err != IDEVS_OK)
        return err;
    tpm_conn t;
    if ((err = tpm_open(tcti, &t, why, why_len)) != IDEVS_OK) {
        close(dirfd);
        return err;
    }
    ESYS_TR ek = ESYS_TR_NONE, srk = ESYS_TR_NONE;
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    TPM2B_PUBLIC *akpub = NULL;
    if ((err = ek_with_cert(&t, &ek, &cert, &cert_len, why, why_len)) == IDEVS_OK &&
        (err = tpm_srk(&t, &srk, why, why_len)) == IDEVS_OK &&
        (err = create_ak(&t, srk, dirfd, &akpub, why, why_len)) == IDEVS_OK) {
        uint8_t tpmt[sizeof(TPMT_PUBLIC)];
        size_t tlen = 0;
        if (Tss2_MU_TPMT_PUBLIC_Marshal(&akpub->publicArea, tpmt, sizeof tpmt, &tlen) != TSS2_RC_SUCCESS)
            err = idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "marshalling the AK's public area failed");
        Idevs__V1__TpmEnrollRequest req = IDEVS__V1__TPM_ENROLL_REQUEST__INIT;
        req.version = 1;
        req.host = (char *)host;
        req.ek_certificate = (ProtobufCBinaryData){cert_len, cert};
        req.ak_public = (ProtobufCBinaryData){tlen, tpmt};
        size_t len = idevs__v1__tpm_enroll_request__get_packed_size(&req);
        if (err == IDEVS_OK && (*out = malloc(len)) == NULL)
            err = IDEVS_ERR_NOMEM;
        if (err == IDEVS_OK)
            *out_len = idevs__v1__tpm_enroll_request__pack(&req, *out);
    }
    Esys_Free(akpub);
    free(cert);
    tpm_flush(&t, &srk);
    tpm_flush(&t, &ek);
    tpm_close(&t);
    close(dirfd);
    return err;
}

/* TPM2_ActivateCredential: the AK by its (empty) password, the EK through a policy session satisfying its
 * PolicySecret(TPM_RH_ENDORSEMENT). */
static idevs_err activate(tpm_conn *t, ESYS_TR ak, ESYS_TR ek, const TPM2B_ID_OBJECT *blob,
                          const TPM2B_ENCRYPTED_SECRET *secret, TPM2B_DIGEST **cred, char *why, size_t why_len)
{
    const TPMT_SYM_DEF sym = {.algorithm = TPM2_ALG_NULL};
    ESYS_TR session = ESYS_TR_NONE;
    TSS2_RC rc = Esys_StartAuthSession(t->esys, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE, ESYS_TR_NONE,
                                       ESYS_TR_NONE, NULL, TPM2_SE_POLICY, &sym, TPM2_ALG_SHA256, &session);
    if (rc != TSS2_RC_SUCCESS)
        return tpm_fail(rc, "starting the EK's policy session (TPM2_StartAuthSession)", why, why_len);
    rc = Esys_PolicySecret(t->esys, ESYS_TR_RH_ENDORSEMENT, session, ESYS_TR_PASSWORD, ESYS_TR_NONE, ESYS_TR_NONE,
                           NULL, NULL, NULL, 0, NULL, NULL);
    idevs_err err = IDEVS_OK;
    if (rc != TSS2_RC_SUCCESS)
        err = tpm_fail(rc, "satisfying the EK's policy (TPM2_PolicySecret, endorsement hierarchy)", why, why_len);
    else if ((rc = Esys_ActivateCredential(t->esys, ak, ek, ESYS_TR_PASSWORD, session, ESYS_TR_NONE, blob, secret,
                                           cred)) != TSS2_RC_SUCCESS)
        err = tpm_fail(rc, "recovering the operator's credential (TPM2_ActivateCredential: a challenge made for "
                           "another TPM or another AK?)", why, why_len);
    tpm_flush(t, &session);
    return err;
}

idevs_err idevs_tpm_enroll_activate(const char *tcti, const char *state_dir, const uint8_t *challenge,
                                    size_t challenge_len, uint8_t **out, size_t *out_len, char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    *out = NULL;
    *out_len = 0;
    if (challenge == NULL || challenge_len == 0 || challenge_len > IDEVS_TPM_MESSAGE_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "a challenge of %zu bytes, not 1..%d", challenge_len,
                          IDEVS_TPM_MESSAGE_MAX);
    Idevs__V1__TpmEnrollChallenge *ch = idevs__v1__tpm_enroll_challenge__unpack(NULL, challenge_len, challenge);
    if (ch == NULL)
        return idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the challenge is not a TpmEnrollChallenge");
    TPM2B_ID_OBJECT blob = {0};
    TPM2B_ENCRYPTED_SECRET secret = {0};
    size_t o1 = 0, o2 = 0;
    idevs_err err = IDEVS_OK;
    if (ch->version != 1)
        err = idevs_fail(why, why_len, IDEVS_ERR_VERSION, "challenge version %u, not 1", ch->version);
    else if (Tss2_MU_TPM2B_ID_OBJECT_Unmarshal(ch->credential_blob.data, ch->credential_blob.len, &o1, &blob) !=
                 TSS2_RC_SUCCESS || o1 != ch->credential_blob.len)
        err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the challenge's credential_blob is not a TPM2B_ID_OBJECT");
    else if (Tss2_MU_TPM2B_ENCRYPTED_SECRET_Unmarshal(ch->encrypted_secret.data, ch->encrypted_secret.len, &o2,
                                                      &secret) != TSS2_RC_SUCCESS || o2 != ch->encrypted_secret.len)
        err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED,
                         "the challenge's encrypted_secret is not a TPM2B_ENCRYPTED_SECRET");
    idevs__v1__tpm_enroll_challenge__free_unpacked(ch, NULL);
    if (err != IDEVS_OK)
        return err;
    int dirfd = -1;
    if ((err = tpm_dir_open(state_dir, false, &dirfd, why, why_len)) != IDEVS_OK)
        return err;
    tpm_conn t;
    if ((err = tpm_open(tcti, &t, why, why_len)) != IDEVS_OK) {
        close(dirfd);
        return err;
    }
    ESYS_TR ek = ESYS_TR_NONE, srk = ESYS_TR_NONE, ak = ESYS_TR_NONE;
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    TPM2B_DIGEST *cred = NULL;
    if ((err = tpm_srk(&t, &srk, why, why_len)) == IDEVS_OK &&
        (err = tpm_ak_load(&t, dirfd, srk, &ak, NULL, why, why_len)) == IDEVS_OK) {
        tpm_flush(&t, &srk); /* room for the EK among the TPM's few transient slots */
        if ((err = ek_with_cert(&t, &ek, &cert, &cert_len, why, why_len)) == IDEVS_OK &&
            (err = activate(&t, ak, ek, &blob, &secret, &cred, why, why_len)) == IDEVS_OK) {
            if (cred->size != CREDENTIAL_LEN)
                err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the credential holds %u bytes, not %d",
                                 (unsigned)cred->size, CREDENTIAL_LEN);
            Idevs__V1__TpmEnrollResponse resp = IDEVS__V1__TPM_ENROLL_RESPONSE__INIT;
            resp.version = 1;
            resp.credential = (ProtobufCBinaryData){cred->size, cred->buffer};
            size_t len = idevs__v1__tpm_enroll_response__get_packed_size(&resp);
            if (err == IDEVS_OK && (*out = malloc(len)) == NULL)
                err = IDEVS_ERR_NOMEM;
            if (err == IDEVS_OK)
                *out_len = idevs__v1__tpm_enroll_response__pack(&resp, *out);
            idevs_cleanse(cred->buffer, sizeof cred->buffer);
        }
    }
    Esys_Free(cred);
    free(cert);
    tpm_flush(&t, &ek);
    tpm_flush(&t, &ak);
    tpm_flush(&t, &srk);
    tpm_close(&t);
    close(dirfd);
    idevs_cleanse(&blob, sizeof blob);
    idevs_cleanse(&secret, sizeof secret);
    return err;
}

idevs_err idevs_tpm_enroll_install(const char *state_dir, const uint8_t *cert, size_t cert_len, char *why,
                                   size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    why[0] = '\0';
    if (cert == NULL || cert_len == 0 || cert_len > 2 * IDEVS_CERT_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "an AK certificate of %zu bytes", cert_len);
    X509 *x = NULL;
    BIO *bio = BIO_new_mem_buf(cert, (int)cert_len);
    if (bio != NULL)
        x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (x == NULL) {
        const uint8_t *p = cert;
        x = d2i_X509(NULL, &p, (long)cert_len);
        if (x != NULL && p != cert + cert_len) {
            X509_free(x);
            x = NULL;
        }
    }
    if (x == NULL)
        return idevs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "the AK certificate is neither PEM nor DER X.509");
    int dirfd = -1;
    uint8_t *pubb = NULL, *der = NULL;
    size_t publen = 0;
    EVP_PKEY *ak = NULL;
    TPM2B_PUBLIC pub = {0};
    size_t off = 0;
    int derlen = i2d_X509(x, &der);
    idevs_err err = tpm_dir_open(state_dir, false, &dirfd, why, why_len);
    if (err == IDEVS_OK)
        err = launcher_state_read(dirfd, TPM_AK_PUB, 1, sizeof pub, &pubb, &publen, why, why_len);
    if (err == IDEVS_OK && pubb == NULL)
        err = idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "no attestation key here: run idevs-tpm enroll-request first");
    if (err == IDEVS_OK && (Tss2_MU_TPM2B_PUBLIC_Unmarshal(pubb, publen, &off, &pub) != TSS2_RC_SUCCESS ||
                            off != publen || tpm_public_to_pkey(&pub, &ak) != IDEVS_OK))
        err = idevs_fail(why, why_len, IDEVS_ERR_MALFORMED, "'%s' is not an ECC P-256 TPM2B_PUBLIC", TPM_AK_PUB);
    if (err == IDEVS_OK && EVP_PKEY_eq(ak, X509_get0_pubkey(x)) != 1)
        err = idevs_fail(why, why_len, IDEVS_ERR_KEY_BINDING_MISMATCH,
                         "the certificate names another key than this host's attestation key (an old request's?)");
    if (err == IDEVS_OK && (derlen <= 0 || derlen > IDEVS_CERT_MAX))
        err = idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "the AK certificate takes %d bytes, above %d", derlen,
                         IDEVS_CERT_MAX);
    if (err == IDEVS_OK)
        err = launcher_state_write(dirfd, TPM_AK_CERT, der, (size_t)derlen, why, why_len);
    OPENSSL_free(der);
    EVP_PKEY_free(ak);
    free(pubb);
    X509_free(x);
    if (dirfd >= 0)
        close(dirfd);
    return err;
}
