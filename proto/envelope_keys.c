/* Key schedule (docs/PROTOCOL.md section 3) and the AEAD of both suites through OpenSSL EVP. A cipher context
 * is keyed once per epoch and direction; each message only sets its nonce. */
#include <string.h>

#include <openssl/core_names.h>

#include "envelope_internal.h"

idevs_err idevs_env_derive(const uint8_t dh_e[IDEVS_X25519_LEN], const uint8_t dh_s[IDEVS_X25519_LEN],
                           const uint8_t offer[IDEVS_OFFER_LEN], uint8_t key[IDEVS_KEY_LEN],
                           uint8_t base_nonce[IDEVS_NONCE_LEN])
{
    uint8_t ikm[2 * IDEVS_X25519_LEN], okm[IDEVS_OKM_LEN];
    uint8_t info[IDEVS_KDF_LABEL_LEN + IDEVS_OFFER_LEN];
    memcpy(ikm, dh_e, IDEVS_X25519_LEN);
    memcpy(ikm + IDEVS_X25519_LEN, dh_s, IDEVS_X25519_LEN);
    memcpy(info, IDEVS_KDF_LABEL, IDEVS_KDF_LABEL_LEN);
    memcpy(info + IDEVS_KDF_LABEL_LEN, offer, IDEVS_OFFER_LEN);
    /* salt = "" (the same as HashLen zero bytes, RFC 5869); OpenSSL wants a non-NULL pointer even for 0 bytes */
    static const uint8_t empty_salt[1] = {0};
    idevs_err err = idevs_hkdf_sha256(empty_salt, 0, ikm, sizeof ikm, info, sizeof info, okm, sizeof okm);
    if (err == IDEVS_OK) {
        memcpy(key, okm, IDEVS_KEY_LEN);
        memcpy(base_nonce, okm + IDEVS_KEY_LEN, IDEVS_NONCE_LEN);
    }
    idevs_cleanse(ikm, sizeof ikm);
    idevs_cleanse(okm, sizeof okm);
    return err;
}

void idevs_env_nonce(const uint8_t base_nonce[IDEVS_NONCE_LEN], uint64_t sequence, uint8_t nonce[IDEVS_NONCE_LEN])
{
    memcpy(nonce, base_nonce, IDEVS_NONCE_LEN);
    for (int i = 0; i < 8; i++)
        nonce[IDEVS_NONCE_LEN - 1 - i] ^= (uint8_t)(sequence >> (8 * i));
}

bool idevs_env_suite_valid(uint32_t suite)
{
    return suite == IDEVS_SUITE_X25519_AES256GCM || suite == IDEVS_SUITE_X25519_CHACHA20POLY1305;
}

idevs_err idevs_aead_init(idevs_aead *a, uint32_t suite, bool encrypt, const uint8_t key[IDEVS_KEY_LEN],
                          const uint8_t base_nonce[IDEVS_NONCE_LEN])
{
    memset(a, 0, sizeof *a);
    const char *name = suite == IDEVS_SUITE_X25519_AES256GCM          ? "AES-256-GCM"
                       : suite == IDEVS_SUITE_X25519_CHACHA20POLY1305 ? "ChaCha20-Poly1305"
                                                                      : NULL;
    if (name == NULL)
        return IDEVS_ERR_SUITE;
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, name, NULL);
    EVP_CIPHER_CTX *ctx = cipher ? EVP_CIPHER_CTX_new() : NULL;
    /* Both ciphers default to a 12-byte IV and a 32-byte key; check rather than assume. */
    int ok = ctx != NULL && EVP_CIPHER_get_key_length(cipher) == IDEVS_KEY_LEN &&
             EVP_CIPHER_get_iv_length(cipher) == IDEVS_NONCE_LEN &&
             EVP_CipherInit_ex2(ctx, cipher, key, NULL, encrypt ? 1 : 0, NULL) == 1;
    EVP_CIPHER_free(cipher);
    if (!ok) {
        EVP_CIPHER_CTX_free(ctx);
        return IDEVS_ERR_CRYPTO;
    }
    a->ctx = ctx;
    memcpy(a->base_nonce, base_nonce, IDEVS_NONCE_LEN);
    a->suite = suite;
    a->encrypt = encrypt;
    return IDEVS_OK;
}

void idevs_aead_free(idevs_aead *a)
{
    EVP_CIPHER_CTX_free(a->ctx); /* cleanses the key schedule */
    idevs_cleanse(a, sizeof *a);
}

idevs_err idevs_aead_seal(idevs_aead *a, uint64_t sequence, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                          size_t len, uint8_t *out)
{
    uint8_t nonce[IDEVS_NONCE_LEN];
    int n = 0, fin = 0;
    if (a->ctx == NULL || !a->encrypt || len > INT32_MAX - IDEVS_AEAD_TAG_LEN || aad_len > INT32_MAX)
        return IDEVS_ERR_INVALID_ARG;
    idevs_env_nonce(a->base_nonce, sequence, nonce);
    int ok = EVP_CipherInit_ex2(a->ctx, NULL, NULL, nonce, 1, NULL) == 1 &&
             EVP_CipherUpdate(a->ctx, NULL, &n, aad, (int)aad_len) == 1 &&
             (len == 0 || EVP_CipherUpdate(a->ctx, out, &n, in, (int)len) == 1) &&
             EVP_CipherFinal_ex(a->ctx, out + (len == 0 ? 0 : n), &fin) == 1 &&
             (size_t)(len == 0 ? 0 : n) + (size_t)fin == len &&
             EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_GET_TAG, IDEVS_AEAD_TAG_LEN, out + len) == 1;
    if (!ok) {
        idevs_cleanse(out, len + IDEVS_AEAD_TAG_LEN);
        return IDEVS_ERR_CRYPTO;
    }
    return IDEVS_OK;
}

idevs_err idevs_aead_open(idevs_aead *a, uint64_t sequence, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                          size_t ct_len, uint8_t *out)
{
    uint8_t nonce[IDEVS_NONCE_LEN], tag[IDEVS_AEAD_TAG_LEN];
    int n = 0, fin = 0;
    if (a->ctx == NULL || a->encrypt || ct_len < IDEVS_AEAD_TAG_LEN || ct_len > INT32_MAX || aad_len > INT32_MAX)
        return IDEVS_ERR_INVALID_ARG;
    size_t len = ct_len - IDEVS_AEAD_TAG_LEN;
    memcpy(tag, in + len, IDEVS_AEAD_TAG_LEN);
    idevs_env_nonce(a->base_nonce, sequence, nonce);
    if (EVP_CipherInit_ex2(a->ctx, NULL, NULL, nonce, 0, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(a->ctx, EVP_CTRL_AEAD_SET_TAG, IDEVS_AEAD_TAG_LEN, tag) != 1 ||
        EVP_CipherUpdate(a->ctx, NULL, &n, aad, (int)aad_len) != 1 ||
        (len > 0 && EVP_CipherUpdate(a->ctx, out, &n, in, (int)len) != 1))
        goto fail;
    if (EVP_CipherFinal_ex(a->ctx, out + (len == 0 ? 0 : n), &fin) != 1 || (size_t)(len == 0 ? 0 : n) + (size_t)fin != len) {
        idevs_cleanse(out, len);
        return IDEVS_ERR_DECRYPT;
    }
    return IDEVS_OK;
fail:
    idevs_cleanse(out, len);
    return IDEVS_ERR_CRYPTO;
}
