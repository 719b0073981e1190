#include "idevs_crypto.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "idevs_file.h"

idevs_err idevs_random(uint8_t *buf, size_t len)
{
    if (len > INT32_MAX)
        return IDEVS_ERR_INVALID_ARG;
    return RAND_bytes(buf, (int)len) == 1 ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

idevs_err idevs_sha256(const void *data, size_t len, uint8_t out[IDEVS_SHA256_LEN])
{
    unsigned int out_len = 0;
    if (EVP_Digest(data, len, out, &out_len, EVP_sha256(), NULL) != 1 || out_len != IDEVS_SHA256_LEN)
        return IDEVS_ERR_CRYPTO;
    return IDEVS_OK;
}

idevs_err idevs_sha256_parts(const void *const *parts, const size_t *lens, size_t n, uint8_t out[IDEVS_SHA256_LEN])
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    for (size_t i = 0; ok && i < n; i++)
        ok = lens[i] == 0 || (parts[i] != NULL && EVP_DigestUpdate(md, parts[i], lens[i]) == 1);
    unsigned int out_len = 0;
    ok = ok && EVP_DigestFinal_ex(md, out, &out_len) == 1 && out_len == IDEVS_SHA256_LEN;
    EVP_MD_CTX_free(md);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

idevs_err idevs_sha256_file(const char *path, uint8_t out[IDEVS_SHA256_LEN])
{
    /* Opened by the one bounded file reader's rule (idevs_file.h): a regular file, a FIFO refused at once. */
    static const idevs_file_rules rules = {NULL, 0, SIZE_MAX, 0, IDEVS_OK};
    int fd = -1;
    errno = EINVAL; /* what errno says of a file that opens but is refused (not a regular file) */
    if (idevs_file_open(AT_FDCWD, path, &rules, &fd, NULL, NULL, 0) != IDEVS_OK)
        return IDEVS_ERR_IO;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int ok = md != NULL && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    uint8_t buf[16384];
    for (;;) {
        ssize_t n = ok ? read(fd, buf, sizeof buf) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            ok = ok && n == 0;
            break;
        }
        ok = EVP_DigestUpdate(md, buf, (size_t)n) == 1;
    }
    ok = ok && EVP_DigestFinal_ex(md, out, NULL) == 1;
    EVP_MD_CTX_free(md);
    close(fd);
    return ok ? IDEVS_OK : IDEVS_ERR_IO;
}

bool idevs_ct_equal(const void *a, const void *b, size_t len)
{
    return CRYPTO_memcmp(a, b, len) == 0;
}

void idevs_cleanse(void *p, size_t len)
{
    if (p != NULL)
        OPENSSL_cleanse(p, len);
}

idevs_err idevs_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                            const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, OSSL_KDF_NAME_HKDF, NULL);
    EVP_KDF_CTX *ctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    if (ctx == NULL)
        return IDEVS_ERR_CRYPTO;

    /* OpenSSL refuses NULL octet strings, also of length 0: an absent salt or info is the empty string. */
    static const uint8_t empty[1];
    salt = salt != NULL ? salt : empty;
    info = info != NULL ? info : empty;
    /* OpenSSL's params take non-const pointers but only read through them. */
    OSSL_PARAM params[5], *p = params;
    *p++ = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)"SHA256", 0);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)ikm, ikm_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    *p++ = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    *p = OSSL_PARAM_construct_end();
    int ok = EVP_KDF_derive(ctx, out, out_len, params);
    EVP_KDF_CTX_free(ctx);
    return ok == 1 ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

static idevs_err generate(int type, EVP_PKEY **key, uint8_t pub[32])
{
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(type, NULL);
    EVP_PKEY *k = NULL;
    int ok = ctx != NULL && EVP_PKEY_keygen_init(ctx) == 1 && EVP_PKEY_keygen(ctx, &k) == 1;
    EVP_PKEY_CTX_free(ctx);
    if (!ok || idevs_raw_public(k, pub) != IDEVS_OK) {
        EVP_PKEY_free(k);
        return IDEVS_ERR_CRYPTO;
    }
    *key = k;
    return IDEVS_OK;
}

static idevs_err from_private(int type, const uint8_t priv[32], EVP_PKEY **key, uint8_t pub[32])
{
    EVP_PKEY *k = EVP_PKEY_new_raw_private_key(type, NULL, priv, 32);
    if (k == NULL || idevs_raw_public(k, pub) != IDEVS_OK) {
        EVP_PKEY_free(k);
        return IDEVS_ERR_CRYPTO;
    }
    *key = k;
    return IDEVS_OK;
}

idevs_err idevs_x25519_generate(EVP_PKEY **key, uint8_t pub[IDEVS_X25519_LEN])
{
    return generate(EVP_PKEY_X25519, key, pub);
}

idevs_err idevs_x25519_from_private(const uint8_t priv[IDEVS_X25519_LEN], EVP_PKEY **key,
                                    uint8_t pub[IDEVS_X25519_LEN])
{
    return from_private(EVP_PKEY_X25519, priv, key, pub);
}

idevs_err idevs_ed25519_generate(EVP_PKEY **key, uint8_t pub[IDEVS_ED25519_PUB_LEN])
{
    return generate(EVP_PKEY_ED25519, key, pub);
}

idevs_err idevs_ed25519_from_private(const uint8_t seed[IDEVS_ED25519_SEED_LEN], EVP_PKEY **key,
                                     uint8_t pub[IDEVS_ED25519_PUB_LEN])
{
    return from_private(EVP_PKEY_ED25519, seed, key, pub);
}

idevs_err idevs_raw_public(const EVP_PKEY *key, uint8_t pub[32])
{
    size_t len = 32;
    if (key == NULL || EVP_PKEY_get_raw_public_key(key, pub, &len) != 1 || len != 32)
        return IDEVS_ERR_CRYPTO;
    return IDEVS_OK;
}

idevs_err idevs_x25519(EVP_PKEY *own, const uint8_t peer_pub[IDEVS_X25519_LEN], uint8_t shared[IDEVS_X25519_LEN])
{
    static const uint8_t zero[IDEVS_X25519_LEN];
    EVP_PKEY *peer = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, peer_pub, IDEVS_X25519_LEN);
    EVP_PKEY_CTX *ctx = peer ? EVP_PKEY_CTX_new(own, NULL) : NULL;
    size_t len = IDEVS_X25519_LEN;
    int ok = ctx != NULL && EVP_PKEY_derive_init(ctx) == 1 && EVP_PKEY_derive_set_peer(ctx, peer) == 1 &&
             EVP_PKEY_derive(ctx, shared, &len) == 1 && len == IDEVS_X25519_LEN;
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    /* OpenSSL already refuses an all-zero X25519 output; check again so the property does not hang on it. */
    if (!ok || idevs_ct_equal(shared, zero, IDEVS_X25519_LEN)) {
        idevs_cleanse(shared, IDEVS_X25519_LEN);
        return IDEVS_ERR_CRYPTO;
    }
    return IDEVS_OK;
}

idevs_err idevs_ed25519_sign(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t sig[IDEVS_ED25519_SIG_LEN])
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    size_t sig_len = IDEVS_ED25519_SIG_LEN;
    int ok = ctx != NULL && EVP_DigestSignInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestSign(ctx, sig, &sig_len, msg, len) == 1 && sig_len == IDEVS_ED25519_SIG_LEN;
    EVP_MD_CTX_free(ctx);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}

idevs_err idevs_ed25519_verify(const uint8_t pub[IDEVS_ED25519_PUB_LEN], const uint8_t *msg, size_t len,
                               const uint8_t sig[IDEVS_ED25519_SIG_LEN])
{
    EVP_PKEY *key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, pub, IDEVS_ED25519_PUB_LEN);
    EVP_MD_CTX *ctx = key ? EVP_MD_CTX_new() : NULL;
    int ok = ctx != NULL && EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, key) == 1 &&
             EVP_DigestVerify(ctx, sig, IDEVS_ED25519_SIG_LEN, msg, len) == 1;
    EVP_MD_CTX_free(ctx);
    EVP_PKEY_free(key);
    return ok ? IDEVS_OK : IDEVS_ERR_CRYPTO;
}
