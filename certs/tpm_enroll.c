/* Enrollment of a host's TPM, operator side: the EK certificate against the vendor roots, the AK's attributes, a
 * credential only that TPM can recover (TPM2_MakeCredential in software, TPM 2.0 Part 1 "Credential Protection"),
 * and the AK certificate once the host returns it. */
#include <dirent.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>
#include <tss2/tss2_mu.h>

#include "certs_internal.h"
#include "idevs_file.h"
#include "idevs_tpm.h"
#include "tpm.pb-c.h"

/* The pending record: magic || credential || SHA-256(request) || request. */
#define PENDING_MAGIC "idevs tpm pending v1"
#define PENDING_MAGIC_LEN (sizeof PENDING_MAGIC - 1)
#define PENDING_HEAD (PENDING_MAGIC_LEN + IDEVS_TPM_CREDENTIAL_LEN + IDEVS_SHA256_LEN)
#define EK_ROOT_FILES_MAX 64
#define EK_RSA_BITS 2048
#define AES128_LEN 16

/* ---- EK roots ---- */

/* One file of roots: PEM certificates, or one DER certificate. */
static idevs_err add_root_file(X509_STORE *store, const char *path, size_t *added, char *why, size_t why_len)
{
    idevs_file_rules rules = {"EK root file", 1, IDEVS_CHAIN_PEM_COUNT_MAX * IDEVS_CHAIN_PEM_EACH_MAX, 0, 0};
    uint8_t *data = NULL;
    size_t len = 0;
    idevs_err err = idevs_file_read(AT_FDCWD, path, &rules, &data, &len, why, why_len);
    if (err != IDEVS_OK)
        return err;
    if (len >= 10 && memcmp(data, "-----BEGIN", 10) == 0) {
        uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
        size_t der_len[IDEVS_CHAIN_PEM_COUNT_MAX], n = 0;
        char inner[192];
        err = idevs_cert_read_chain_pem((const char *)data, len, der, der_len, IDEVS_CHAIN_PEM_COUNT_MAX, &n, inner,
                                        sizeof inner);
        free(data);
        if (err != IDEVS_OK)
            return certs_fail(why, why_len, err, "%s: %s", path, inner);
        for (size_t i = 0; i < n && err == IDEVS_OK; i++) {
            X509 *x = certs_parse_der(der[i], der_len[i]);
            if (x == NULL || X509_STORE_add_cert(store, x) != 1)
                err = certs_fail(why, why_len, x == NULL ? IDEVS_ERR_CERT_MALFORMED : IDEVS_ERR_NOMEM,
                           "%s: cannot use certificate %zu", path, i + 1);
            X509_free(x);
        }
        idevs_cert_chain_free(der, n);
        *added += n;
        return err;
    }
    X509 *x = certs_parse_der(data, len);
    free(data);
    if (x == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "%s: neither PEM certificates nor one DER certificate",
                    path);
    err = X509_STORE_add_cert(store, x) == 1 ? IDEVS_OK : certs_fail(why, why_len, IDEVS_ERR_NOMEM, "%s: cannot add", path);
    X509_free(x);
    *added += 1;
    return err;
}

idevs_err idevs_tpm_ek_roots_load(const char *path, X509_STORE **out, char *why, size_t why_len)
{
    if (path == NULL || out == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "no EK roots given");
    *out = NULL;
    X509_STORE *store = X509_STORE_new();
    if (store == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
    idevs_err err = IDEVS_OK;
    size_t added = 0, files = 0;
    DIR *d = opendir(path);
    if (d == NULL) {
        err = add_root_file(store, path, &added, why, why_len);
    } else {
        struct dirent *e;
        while (err == IDEVS_OK && (e = readdir(d)) != NULL) {
            char file[4096];
            if (e->d_name[0] == '.')
                continue;
            if (++files > EK_ROOT_FILES_MAX) {
                err = certs_fail(why, why_len, IDEVS_ERR_TOO_LARGE, "%s holds more than %d files", path, EK_ROOT_FILES_MAX);
                break;
            }
            if (snprintf(file, sizeof file, "%s/%s", path, e->d_name) >= (int)sizeof file)
                err = certs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "%s/%s: path too long", path, e->d_name);
            else
                err = add_root_file(store, file, &added, why, why_len);
        }
        closedir(d);
    }
    if (err == IDEVS_OK && added == 0)
        err = certs_fail(why, why_len, IDEVS_ERR_CERT_MALFORMED, "%s holds no certificate", path);
    if (err != IDEVS_OK) {
        X509_STORE_free(store);
        return err;
    }
    *out = store;
    return IDEVS_OK;
}

/* ---- the AK ---- */

idevs_err idevs_tpm_ak_check(const uint8_t *tpmt_public, size_t len, EVP_PKEY **ak, uint8_t name[IDEVS_TPM_NAME_LEN],
                             char *why, size_t why_len)
{
    TPMT_PUBLIC pub;
    size_t off = 0;
    uint8_t again[sizeof(TPMT_PUBLIC)];
    size_t again_len = 0;
    memset(&pub, 0, sizeof pub);
    if (ak != NULL)
        *ak = NULL;
    if (tpmt_public == NULL || len == 0 || len > sizeof again ||
        Tss2_MU_TPMT_PUBLIC_Unmarshal(tpmt_public, len, &off, &pub) != 0 || off != len ||
        Tss2_MU_TPMT_PUBLIC_Marshal(&pub, again, sizeof again, &again_len) != 0 || again_len != len ||
        memcmp(again, tpmt_public, len) != 0)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_ATTRIBUTES, "the AK public area is not a marshalled TPMT_PUBLIC");
    const TPMA_OBJECT need = TPMA_OBJECT_FIXEDTPM | TPMA_OBJECT_FIXEDPARENT | TPMA_OBJECT_SENSITIVEDATAORIGIN |
                             TPMA_OBJECT_RESTRICTED | TPMA_OBJECT_SIGN_ENCRYPT;
    const TPMS_ECC_PARMS *ecc = &pub.parameters.eccDetail;
    if (pub.type != TPM2_ALG_ECC || pub.nameAlg != TPM2_ALG_SHA256)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_ATTRIBUTES, "the AK is not an ECC key with name algorithm SHA-256");
    if ((pub.objectAttributes & need) != need || (pub.objectAttributes & TPMA_OBJECT_DECRYPT) != 0)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_ATTRIBUTES,
                    "the AK's attributes 0x%08x lack fixedTPM, fixedParent, sensitiveDataOrigin, restricted or sign, "
                    "or have decrypt",
                    (unsigned)pub.objectAttributes);
    if (ecc->curveID != TPM2_ECC_NIST_P256 || ecc->scheme.scheme != TPM2_ALG_ECDSA ||
        ecc->scheme.details.ecdsa.hashAlg != TPM2_ALG_SHA256 || ecc->symmetric.algorithm != TPM2_ALG_NULL ||
        ecc->kdf.scheme != TPM2_ALG_NULL || pub.unique.ecc.x.size != 32 || pub.unique.ecc.y.size != 32)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_AK_ATTRIBUTES,
                    "the AK is not a NIST P-256 key with the ECDSA SHA-256 scheme");
    if (name != NULL) {
        name[0] = TPM2_ALG_SHA256 >> 8;
        name[1] = TPM2_ALG_SHA256 & 0xff;
        if (idevs_sha256(tpmt_public, len, name + 2) != IDEVS_OK)
            return certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "hashing the AK public area failed");
    }
    if (ak == NULL)
        return IDEVS_OK;
    uint8_t point[65];
    point[0] = 0x04;
    memcpy(point + 1, pub.unique.ecc.x.buffer, 32);
    memcpy(point + 33, pub.unique.ecc.y.buffer, 32);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)"prime256v1", 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, point, sizeof point),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    idevs_err err = IDEVS_OK;
    if (ctx == NULL || EVP_PKEY_fromdata_init(ctx) != 1 || EVP_PKEY_fromdata(ctx, ak, EVP_PKEY_PUBLIC_KEY, params) != 1)
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_AK_ATTRIBUTES, "the AK's public point is not on P-256");
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return err;
}

/* ---- MakeCredential ---- */

/* KDFa of TPM 2.0 Part 1 11.4.10.2: SP 800-108 counter mode with HMAC-SHA-256, label NUL-terminated (OpenSSL's
 * KBKDF adds the 0x00 separator), context = contextU || contextV, L in bits. */
static idevs_err kdfa(const uint8_t *key, size_t key_len, const char *label, const uint8_t *context,
                      size_t context_len, uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "KBKDF", NULL);
    EVP_KDF_CTX *ctx = kdf != NULL ? EVP_KDF_CTX_new(kdf) : NULL;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MODE, (char *)"counter", 0),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_MAC, (char *)"HMAC", 0),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)key, key_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)label, strlen(label)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)context, context_len),
        OSSL_PARAM_construct_end(),
    };
    idevs_err err = ctx != NULL && EVP_KDF_derive(ctx, out, out_len, params) == 1 ? IDEVS_OK : IDEVS_ERR_CRYPTO;
    EVP_KDF_CTX_free(ctx);
    EVP_KDF_free(kdf);
    ERR_clear_error();
    return err;
}

/* OAEP (SHA-256, label "IDENTITY\0") of the seed to the RSA EK. */
static idevs_err wrap_seed(EVP_PKEY *ek, const uint8_t *seed, size_t seed_len, TPM2B_ENCRYPTED_SECRET *out)
{
    static const char label[] = "IDENTITY"; /* with its NUL: 9 bytes */
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_pkey(NULL, ek, NULL);
    void *l = OPENSSL_memdup(label, sizeof label);
    size_t len = sizeof out->secret;
    idevs_err err = IDEVS_ERR_CRYPTO;
    if (ctx != NULL && l != NULL && EVP_PKEY_encrypt_init(ctx) == 1 &&
        EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) == 1 &&
        EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) == 1 && EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) == 1 &&
        EVP_PKEY_CTX_set0_rsa_oaep_label(ctx, l, (int)sizeof label) == 1) {
        l = NULL; /* the context's now */
        if (EVP_PKEY_encrypt(ctx, out->secret, &len, seed, seed_len) == 1) {
            out->size = (UINT16)len;
            err = IDEVS_OK;
        }
    }
    OPENSSL_free(l);
    EVP_PKEY_CTX_free(ctx);
    ERR_clear_error();
    return err;
}

/* credential protected for the TPM holding ek and the object called name: TPM2B_ID_OBJECT and
 * TPM2B_ENCRYPTED_SECRET as the TPM marshals them. */
static idevs_err make_credential(EVP_PKEY *ek, const uint8_t name[IDEVS_TPM_NAME_LEN],
                                 const uint8_t credential[IDEVS_TPM_CREDENTIAL_LEN], uint8_t *blob, size_t blob_cap,
                                 size_t *blob_len, uint8_t *secret, size_t secret_cap, size_t *secret_len)
{
    uint8_t seed[IDEVS_SHA256_LEN], sym[AES128_LEN], hmac_key[IDEVS_SHA256_LEN];
    uint8_t plain[2 + IDEVS_TPM_CREDENTIAL_LEN], enc[sizeof plain], mac[IDEVS_SHA256_LEN];
    TPM2B_ENCRYPTED_SECRET wrapped;
    TPM2B_ID_OBJECT id;
    idevs_err err = IDEVS_ERR_CRYPTO;
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    EVP_MAC *hm = EVP_MAC_fetch(NULL, "HMAC", NULL);
    EVP_MAC_CTX *mc = hm != NULL ? EVP_MAC_CTX_new(hm) : NULL;
    OSSL_PARAM mp[] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                       OSSL_PARAM_construct_end()};
    int n1 = 0, n2 = 0;
    size_t mac_len = 0;
    memset(&wrapped, 0, sizeof wrapped);
    memset(&id, 0, sizeof id);
    if (c == NULL || mc == NULL || idevs_random(seed, sizeof seed) != IDEVS_OK)
        goto done;
    if ((err = wrap_seed(ek, seed, sizeof seed, &wrapped)) != IDEVS_OK ||
        (err = kdfa(seed, sizeof seed, "STORAGE", name, IDEVS_TPM_NAME_LEN, sym, sizeof sym)) != IDEVS_OK ||
        (err = kdfa(seed, sizeof seed, "INTEGRITY", NULL, 0, hmac_key, sizeof hmac_key)) != IDEVS_OK)
        goto done;
    err = IDEVS_ERR_CRYPTO;
    /* encIdentity: the credential as a TPM2B_DIGEST, AES-128-CFB with a zero IV. */
    plain[0] = 0;
    plain[1] = IDEVS_TPM_CREDENTIAL_LEN;
    memcpy(plain + 2, credential, IDEVS_TPM_CREDENTIAL_LEN);
    static const uint8_t iv[AES128_LEN] = {0};
    if (EVP_EncryptInit_ex(c, EVP_aes_128_cfb128(), NULL, sym, iv) != 1 ||
        EVP_EncryptUpdate(c, enc, &n1, plain, (int)sizeof plain) != 1 || EVP_EncryptFinal_ex(c, enc + n1, &n2) != 1 ||
        (size_t)(n1 + n2) != sizeof enc)
        goto done;
    /* outerHMAC over encIdentity || name. */
    if (EVP_MAC_init(mc, hmac_key, sizeof hmac_key, mp) != 1 || EVP_MAC_update(mc, enc, sizeof enc) != 1 ||
        EVP_MAC_update(mc, name, IDEVS_TPM_NAME_LEN) != 1 || EVP_MAC_final(mc, mac, &mac_len, sizeof mac) != 1 ||
        mac_len != sizeof mac)
        goto done;
    /* TPMS_ID_OBJECT: integrityHMAC as a TPM2B_DIGEST, then encIdentity without a size of its own. */
    id.size = (UINT16)(2 + sizeof mac + sizeof enc);
    id.credential[0] = 0;
    id.credential[1] = (uint8_t)sizeof mac;
    memcpy(id.credential + 2, mac, sizeof mac);
    memcpy(id.credential + 2 + sizeof mac, enc, sizeof enc);
    *blob_len = *secret_len = 0;
    if (Tss2_MU_TPM2B_ID_OBJECT_Marshal(&id, blob, blob_cap, blob_len) != 0 ||
        Tss2_MU_TPM2B_ENCRYPTED_SECRET_Marshal(&wrapped, secret, secret_cap, secret_len) != 0)
        goto done;
    err = IDEVS_OK;
done:
    idevs_cleanse(seed, sizeof seed);
    idevs_cleanse(sym, sizeof sym);
    idevs_cleanse(hmac_key, sizeof hmac_key);
    idevs_cleanse(plain, sizeof plain);
    idevs_cleanse(&id, sizeof id);
    EVP_CIPHER_CTX_free(c);
    EVP_MAC_CTX_free(mc);
    EVP_MAC_free(hm);
    ERR_clear_error();
    return err;
}

/* ---- the request ---- */

/* The request decoded and its AK checked; *req the caller's to free_unpacked. */
static idevs_err read_request(const uint8_t *data, size_t len, Idevs__V1__TpmEnrollRequest **req, EVP_PKEY **ak,
                              uint8_t name[IDEVS_TPM_NAME_LEN], char *why, size_t why_len)
{
    if (data == NULL || len == 0 || len > IDEVS_TPM_ENROLL_MAX)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the enrollment request is empty or larger than %d bytes",
                    IDEVS_TPM_ENROLL_MAX);
    Idevs__V1__TpmEnrollRequest *r = *req = idevs__v1__tpm_enroll_request__unpack(NULL, len, data);
    if (r == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the enrollment request is not an idevs.v1.TpmEnrollRequest");
    if (r->base.n_unknown_fields != 0)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the enrollment request has an unknown field");
    if (r->version != 1)
        return certs_fail(why, why_len, IDEVS_ERR_VERSION, "the enrollment request has version %u, not 1", r->version);
    if (r->host == NULL || !idevs_name_valid(r->host))
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED,
                    "the enrollment request's host is not a name of 1 to %d characters [A-Za-z0-9._-]",
                    IDEVS_NAME_MAX);
    if (r->ek_certificate.len == 0 || r->ek_certificate.len > IDEVS_CERT_MAX || r->ak_public.len == 0)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED,
                    "the enrollment request lacks the EK certificate or the AK, or its EK certificate is too large");
    return idevs_tpm_ak_check(r->ak_public.data, r->ak_public.len, ak, name, why, why_len);
}

/* The EK certificate chains to a vendor root and holds an RSA-2048 key; *ek its key (the caller's). */
static idevs_err check_ek(X509_STORE *roots, const ProtobufCBinaryData *der, EVP_PKEY **ek, char *why,
                          size_t why_len)
{
    X509 *x = certs_parse_der(der->data, der->len);
    if (x == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_TPM_EK_UNTRUSTED, "the EK certificate is not valid DER X.509");
    idevs_err err = IDEVS_OK;
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    /* Vendors' EK certificates carry a critical subjectAltName with an empty subject (TCG EK profile): OpenSSL
     * handles it; no X509_STRICT, which some vendors' encodings fail. */
    if (ctx == NULL || X509_STORE_CTX_init(ctx, roots, x, NULL) != 1)
        err = certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory verifying the EK certificate");
    else if (X509_verify_cert(ctx) != 1)
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_EK_UNTRUSTED,
                   "the EK certificate does not chain to a configured TPM vendor root: %s",
                   X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    EVP_PKEY *key = err == IDEVS_OK ? X509_get0_pubkey(x) : NULL;
    if (err == IDEVS_OK && (key == NULL || !EVP_PKEY_is_a(key, "RSA") || EVP_PKEY_get_bits(key) != EK_RSA_BITS))
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_EK_UNTRUSTED,
                   "the EK certificate's key is not RSA-2048 (this version makes credentials for RSA-2048 EKs only; "
                   "an ECC EK is refused)");
    if (err == IDEVS_OK) {
        EVP_PKEY_up_ref(key);
        *ek = key;
    }
    X509_free(x);
    ERR_clear_error();
    return err;
}

idevs_err idevs_tpm_enroll_challenge(X509_STORE *ek_roots, const uint8_t *request, size_t request_len,
                                     uint8_t **challenge, size_t *challenge_len, uint8_t **pending,
                                     size_t *pending_len, char *why, size_t why_len)
{
    if (ek_roots == NULL || challenge == NULL || challenge_len == NULL || pending == NULL || pending_len == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "missing argument");
    *challenge = *pending = NULL;
    *challenge_len = *pending_len = 0;
    Idevs__V1__TpmEnrollRequest *req = NULL;
    EVP_PKEY *ek = NULL;
    uint8_t name[IDEVS_TPM_NAME_LEN], credential[IDEVS_TPM_CREDENTIAL_LEN];
    uint8_t blob[sizeof(TPM2B_ID_OBJECT)], secret[sizeof(TPM2B_ENCRYPTED_SECRET)];
    size_t blob_len = 0, secret_len = 0;
    uint8_t *ch = NULL, *pd = NULL;
    idevs_err err = read_request(request, request_len, &req, NULL, name, why, why_len);
    if (err == IDEVS_OK)
        err = check_ek(ek_roots, &req->ek_certificate, &ek, why, why_len);
    if (err == IDEVS_OK && idevs_random(credential, sizeof credential) != IDEVS_OK)
        err = certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "no random bytes for the credential");
    if (err == IDEVS_OK && make_credential(ek, name, credential, blob, sizeof blob, &blob_len, secret, sizeof secret,
                                           &secret_len) != IDEVS_OK)
        err = certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "making the credential failed");
    if (err == IDEVS_OK) {
        Idevs__V1__TpmEnrollChallenge c = IDEVS__V1__TPM_ENROLL_CHALLENGE__INIT;
        c.version = 1;
        c.credential_blob = (ProtobufCBinaryData){blob_len, blob};
        c.encrypted_secret = (ProtobufCBinaryData){secret_len, secret};
        size_t n = idevs__v1__tpm_enroll_challenge__get_packed_size(&c);
        ch = malloc(n);
        pd = malloc(PENDING_HEAD + request_len);
        if (ch == NULL || pd == NULL || idevs__v1__tpm_enroll_challenge__pack(&c, ch) != n) {
            err = certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
        } else {
            *challenge_len = n;
            memcpy(pd, PENDING_MAGIC, PENDING_MAGIC_LEN);
            memcpy(pd + PENDING_MAGIC_LEN, credential, sizeof credential);
            if (idevs_sha256(request, request_len, pd + PENDING_MAGIC_LEN + sizeof credential) != IDEVS_OK)
                err = certs_fail(why, why_len, IDEVS_ERR_CRYPTO, "hashing the request failed");
            memcpy(pd + PENDING_HEAD, request, request_len);
        }
    }
    if (err == IDEVS_OK) {
        *challenge = ch;
        *pending = pd;
        *pending_len = PENDING_HEAD + request_len;
    } else {
        free(ch);
        if (pd != NULL)
            idevs_cleanse(pd, PENDING_HEAD);
        free(pd);
    }
    idevs_cleanse(credential, sizeof credential);
    EVP_PKEY_free(ek);
    if (req != NULL)
        idevs__v1__tpm_enroll_request__free_unpacked(req, NULL);
    return err;
}

idevs_err idevs_tpm_enroll_issue(const uint8_t *pending, size_t pending_len, const uint8_t *response,
                                 size_t response_len, const idevs_identity *ca, X509 *ca_cert, unsigned days,
                                 X509 **ak_cert, char *why, size_t why_len)
{
    if (pending == NULL || response == NULL || ak_cert == NULL)
        return certs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "missing argument");
    *ak_cert = NULL;
    uint8_t digest[IDEVS_SHA256_LEN];
    if (pending_len <= PENDING_HEAD || pending_len > PENDING_HEAD + IDEVS_TPM_ENROLL_MAX ||
        memcmp(pending, PENDING_MAGIC, PENDING_MAGIC_LEN) != 0)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the pending file is not an idevs tpm pending record");
    const uint8_t *credential = pending + PENDING_MAGIC_LEN;
    const uint8_t *request = pending + PENDING_HEAD;
    size_t request_len = pending_len - PENDING_HEAD;
    if (idevs_sha256(request, request_len, digest) != IDEVS_OK ||
        !idevs_ct_equal(digest, pending + PENDING_MAGIC_LEN + IDEVS_TPM_CREDENTIAL_LEN, sizeof digest))
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the pending file's request does not match its digest");
    if (response_len == 0 || response_len > IDEVS_TPM_ENROLL_MAX)
        return certs_fail(why, why_len, IDEVS_ERR_MALFORMED, "the enrollment response is empty or too large");
    Idevs__V1__TpmEnrollResponse *resp = idevs__v1__tpm_enroll_response__unpack(NULL, response_len, response);
    idevs_err err = IDEVS_OK;
    if (resp == NULL || resp->base.n_unknown_fields != 0)
        err = certs_fail(why, why_len, IDEVS_ERR_MALFORMED,
                   "the enrollment response is not an idevs.v1.TpmEnrollResponse or has an unknown field");
    else if (resp->version != 1)
        err = certs_fail(why, why_len, IDEVS_ERR_VERSION, "the enrollment response has version %u, not 1", resp->version);
    else if (resp->credential.len != IDEVS_TPM_CREDENTIAL_LEN ||
             !idevs_ct_equal(resp->credential.data, credential, IDEVS_TPM_CREDENTIAL_LEN))
        err = certs_fail(why, why_len, IDEVS_ERR_TPM_CREDENTIAL,
                   "the host's credential is not the one the challenge protected: its AK is not in the TPM of the "
                   "EK certificate, or the response belongs to another enrollment");
    if (resp != NULL) {
        if (resp->credential.data != NULL)
            idevs_cleanse(resp->credential.data, resp->credential.len);
        idevs__v1__tpm_enroll_response__free_unpacked(resp, NULL);
    }
    if (err != IDEVS_OK)
        return err;
    Idevs__V1__TpmEnrollRequest *req = NULL;
    EVP_PKEY *ak = NULL;
    err = read_request(request, request_len, &req, &ak, NULL, why, why_len);
    if (err == IDEVS_OK && (err = idevs_tpm_issue_ak_cert(ca, ca_cert, ak, req->host, days, ak_cert)) != IDEVS_OK)
        certs_fail(why, why_len, err, "issuing the AK certificate for '%s' failed: %s", req->host, idevs_strerror(err));
    EVP_PKEY_free(ak);
    if (req != NULL)
        idevs__v1__tpm_enroll_request__free_unpacked(req, NULL);
    return err;
}
