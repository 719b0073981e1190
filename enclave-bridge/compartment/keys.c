/* The compartment's identity across restarts, sealed as TEEs seal: under a key only the same measurement gets.
 *
 *   blob = u8(1) || nonce (12, random) || AES-256-GCM(sealing_key, nonce, aad, Ed25519 seed || X25519 private)
 *          || tag (16)
 *   aad  = "idevs sealed keys v1" || program UUID (16) || measurement (32)
 *
 * The launcher derives sealing_key from its sealing secret and the measurement and keeps the blob; it cannot
 * open it without the sealing key, and a compartment with another measurement gets another sealing key (and
 * another aad), so the blob does not open there: that compartment starts with fresh keys. */
#include <string.h>

#include <openssl/evp.h>

#include "compartment.h"

#define NONCE_LEN KEYS_GCM_NONCE_LEN
#define TAG_LEN KEYS_GCM_TAG_LEN
#define SECRET_LEN (IDEVS_ED25519_SEED_LEN + IDEVS_X25519_LEN)
#define AAD_LABEL "idevs sealed keys v1"
#define AAD_LABEL_LEN (sizeof AAD_LABEL - 1)
#define AAD_LEN (AAD_LABEL_LEN + IDEVS_UUID_LEN + IDEVS_SHA256_LEN)

static void build_aad(uint8_t aad[AAD_LEN], const idevs_uuid *program, const uint8_t measurement[IDEVS_SHA256_LEN])
{
    memcpy(aad, AAD_LABEL, AAD_LABEL_LEN);
    memcpy(aad + AAD_LABEL_LEN, program->b, IDEVS_UUID_LEN);
    memcpy(aad + AAD_LABEL_LEN + IDEVS_UUID_LEN, measurement, IDEVS_SHA256_LEN);
}

/* One AES-256-GCM operation: encrypt (tag written) or decrypt (tag checked). */
idevs_err keys_gcm(bool encrypt, const uint8_t key[32], const uint8_t nonce[KEYS_GCM_NONCE_LEN], const uint8_t *aad,
                   size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[KEYS_GCM_TAG_LEN])
{
    EVP_CIPHER *cipher = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    EVP_CIPHER_CTX *ctx = cipher != NULL ? EVP_CIPHER_CTX_new() : NULL;
    int n = 0, fin = 0;
    int ok = ctx != NULL && EVP_CipherInit_ex2(ctx, cipher, key, nonce, encrypt ? 1 : 0, NULL) == 1 &&
             EVP_CipherUpdate(ctx, NULL, &n, aad, (int)aad_len) == 1 &&
             EVP_CipherUpdate(ctx, out, &n, in, (int)len) == 1 && (size_t)n == len;
    if (ok && !encrypt)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, TAG_LEN, tag) == 1;
    if (ok)
        ok = EVP_CipherFinal_ex(ctx, out + n, &fin) == 1 && fin == 0;
    if (ok && encrypt)
        ok = EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, TAG_LEN, tag) == 1;
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(cipher);
    if (!ok)
        idevs_cleanse(out, len);
    return ok ? IDEVS_OK : (encrypt ? IDEVS_ERR_CRYPTO : IDEVS_ERR_UNSEAL);
}

static idevs_err unseal(const uint8_t sealing_key[32], const idevs_uuid *program,
                        const uint8_t measurement[IDEVS_SHA256_LEN], const uint8_t *blob, size_t blob_len,
                        uint8_t secret[SECRET_LEN])
{
    if (blob == NULL || blob_len != KEYS_SEALED_LEN || blob[0] != KEYS_SEALED_VERSION)
        return IDEVS_ERR_UNSEAL;
    uint8_t aad[AAD_LEN], tag[TAG_LEN];
    build_aad(aad, program, measurement);
    memcpy(tag, blob + 1 + NONCE_LEN + SECRET_LEN, TAG_LEN);
    return keys_gcm(false, sealing_key, blob + 1, aad, sizeof aad, blob + 1 + NONCE_LEN, SECRET_LEN, secret, tag);
}

idevs_err keys_restore_or_generate(const uint8_t sealing_key[32], const idevs_uuid *program, const char *name,
                                   const uint8_t measurement[IDEVS_SHA256_LEN], const uint8_t *blob, size_t blob_len,
                                   idevs_identity **out, bool *restored)
{
    uint8_t secret[SECRET_LEN];
    *restored = false;
    if (blob_len > 0 && unseal(sealing_key, program, measurement, blob, blob_len, secret) == IDEVS_OK) {
        idevs_err err = idevs_identity_from_private(program, name, secret, secret + IDEVS_ED25519_SEED_LEN, out);
        idevs_cleanse(secret, sizeof secret);
        if (err == IDEVS_OK) {
            *restored = true;
            return IDEVS_OK;
        }
    }
    /* No blob, another measurement or sealing key, or a damaged blob: fresh keys. */
    return idevs_identity_generate(program, name, out);
}

idevs_err keys_seal(const uint8_t sealing_key[32], const idevs_uuid *program,
                    const uint8_t measurement[IDEVS_SHA256_LEN], const idevs_identity *id,
                    uint8_t blob[KEYS_SEALED_LEN])
{
    uint8_t secret[SECRET_LEN], aad[AAD_LEN];
    size_t sign_len = IDEVS_ED25519_SEED_LEN, kex_len = IDEVS_X25519_LEN;
    idevs_err err = IDEVS_ERR_CRYPTO;
    if (EVP_PKEY_get_raw_private_key(idevs_identity_sign_key(id), secret, &sign_len) == 1 &&
        sign_len == IDEVS_ED25519_SEED_LEN &&
        EVP_PKEY_get_raw_private_key(idevs_identity_kex_key(id), secret + IDEVS_ED25519_SEED_LEN, &kex_len) == 1 &&
        kex_len == IDEVS_X25519_LEN)
        err = IDEVS_OK;
    blob[0] = KEYS_SEALED_VERSION;
    if (err == IDEVS_OK)
        err = idevs_random(blob + 1, NONCE_LEN);
    if (err == IDEVS_OK) {
        build_aad(aad, program, measurement);
        err = keys_gcm(true, sealing_key, blob + 1, aad, sizeof aad, secret, SECRET_LEN, blob + 1 + NONCE_LEN,
                  blob + 1 + NONCE_LEN + SECRET_LEN);
    }
    idevs_cleanse(secret, sizeof secret);
    if (err != IDEVS_OK)
        idevs_cleanse(blob, KEYS_SEALED_LEN);
    return err;
}

idevs_err keys_output_id(const uint8_t key[32], const idevs_uuid *sender, const idevs_msgid *cause, uint32_t index,
                         idevs_msgid *out)
{
    uint8_t info[2 * IDEVS_UUID_LEN + 4];
    memcpy(info, sender->b, IDEVS_UUID_LEN);
    memcpy(info + IDEVS_UUID_LEN, cause->b, IDEVS_UUID_LEN);
    info[2 * IDEVS_UUID_LEN] = (uint8_t)(index >> 24);
    info[2 * IDEVS_UUID_LEN + 1] = (uint8_t)(index >> 16);
    info[2 * IDEVS_UUID_LEN + 2] = (uint8_t)(index >> 8);
    info[2 * IDEVS_UUID_LEN + 3] = (uint8_t)index;
    static const uint8_t no_salt[1] = {0};
    return idevs_hkdf_sha256(no_salt, 0, key, 32, info, sizeof info, out->b, IDEVS_UUID_LEN);
}

idevs_err keys_derive(const idevs_identity *self, const char *label, const idevs_uuid *program, uint8_t out[32])
{
    size_t label_len = strlen(label);
    uint8_t info[64 + IDEVS_UUID_LEN], secret[SECRET_LEN];
    size_t sign_len = IDEVS_ED25519_SEED_LEN, kex_len = IDEVS_X25519_LEN;
    if (label_len > 64 || self == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memcpy(info, label, label_len);
    memcpy(info + label_len, program->b, IDEVS_UUID_LEN);
    /* The process's private keys, not the host's sealing key: every instance on every host that holds them
     * derives the same key (docs/SCALING.md, "Several brokers"). */
    idevs_err err = IDEVS_ERR_CRYPTO;
    if (EVP_PKEY_get_raw_private_key(idevs_identity_sign_key(self), secret, &sign_len) == 1 &&
        sign_len == IDEVS_ED25519_SEED_LEN &&
        EVP_PKEY_get_raw_private_key(idevs_identity_kex_key(self), secret + IDEVS_ED25519_SEED_LEN, &kex_len) == 1 &&
        kex_len == IDEVS_X25519_LEN) {
        static const uint8_t no_salt[1] = {0};
        err = idevs_hkdf_sha256(no_salt, 0, secret, sizeof secret, info, label_len + IDEVS_UUID_LEN, out, 32);
    }
    idevs_cleanse(secret, sizeof secret);
    return err;
}

void keys_derive_own(compartment *c)
{
    kept_init(c);
    request_state_init(c);
    if (keys_derive(c->self, "idevs output id v1", &c->dep->program, c->output_id_key) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "cannot derive the key of output ids");
}
