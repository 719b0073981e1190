/* Thin wrappers over OpenSSL 3 EVP for the primitives idevs uses: SHA-256, HKDF-SHA256, X25519, Ed25519.
 * Nothing here is home-made cryptography; the wrappers only fix key sizes and map failures to idevs_err.
 * AEAD lives with the envelope, which keeps one cipher context per key epoch. */
#ifndef IDEVS_CRYPTO_H
#define IDEVS_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "idevs_error.h"

#define IDEVS_SHA256_LEN 32
#define IDEVS_X25519_LEN 32
#define IDEVS_ED25519_PUB_LEN 32
#define IDEVS_ED25519_SEED_LEN 32
#define IDEVS_ED25519_SIG_LEN 64

idevs_err idevs_random(uint8_t *buf, size_t len);

idevs_err idevs_sha256(const void *data, size_t len, uint8_t out[IDEVS_SHA256_LEN]);

/* SHA-256 of the n parts one after the other, as if concatenated (a part of length 0 may be NULL). */
idevs_err idevs_sha256_parts(const void *const *parts, const size_t *lens, size_t n, uint8_t out[IDEVS_SHA256_LEN]);

/* SHA-256 of a file's contents, streamed; IDEVS_ERR_IO when it cannot be read or is not a regular file
 * (opened as idevs_file_open does: a FIFO is refused without waiting). */
idevs_err idevs_sha256_file(const char *path, uint8_t out[IDEVS_SHA256_LEN]);

/* Constant-time comparison; true when the len bytes are equal. */
bool idevs_ct_equal(const void *a, const void *b, size_t len);

/* Zeroes memory in a way the compiler cannot remove. */
void idevs_cleanse(void *p, size_t len);

/* HKDF-SHA256 (RFC 5869), extract then expand. salt and info may be NULL when their length is 0. */
idevs_err idevs_hkdf_sha256(const uint8_t *salt, size_t salt_len, const uint8_t *ikm, size_t ikm_len,
                            const uint8_t *info, size_t info_len, uint8_t *out, size_t out_len);

/* Key pairs. *key receives an EVP_PKEY the caller frees with EVP_PKEY_free (which cleanses it). */
idevs_err idevs_x25519_generate(EVP_PKEY **key, uint8_t pub[IDEVS_X25519_LEN]);
idevs_err idevs_x25519_from_private(const uint8_t priv[IDEVS_X25519_LEN], EVP_PKEY **key,
                                    uint8_t pub[IDEVS_X25519_LEN]);
idevs_err idevs_ed25519_generate(EVP_PKEY **key, uint8_t pub[IDEVS_ED25519_PUB_LEN]);
idevs_err idevs_ed25519_from_private(const uint8_t seed[IDEVS_ED25519_SEED_LEN], EVP_PKEY **key,
                                     uint8_t pub[IDEVS_ED25519_PUB_LEN]);

/* Raw public key of an X25519 or Ed25519 EVP_PKEY. */
idevs_err idevs_raw_public(const EVP_PKEY *key, uint8_t pub[32]);

/* X25519(own, peer_pub). Fails with IDEVS_ERR_CRYPTO on an all-zero result (a low-order peer key). */
idevs_err idevs_x25519(EVP_PKEY *own, const uint8_t peer_pub[IDEVS_X25519_LEN], uint8_t shared[IDEVS_X25519_LEN]);

idevs_err idevs_ed25519_sign(EVP_PKEY *key, const uint8_t *msg, size_t len, uint8_t sig[IDEVS_ED25519_SIG_LEN]);

/* IDEVS_OK when sig is a valid signature of msg by pub; IDEVS_ERR_CRYPTO otherwise. */
idevs_err idevs_ed25519_verify(const uint8_t pub[IDEVS_ED25519_PUB_LEN], const uint8_t *msg, size_t len,
                               const uint8_t sig[IDEVS_ED25519_SIG_LEN]);

#endif
