/* An identity: a UUID, an Ed25519 signing key, an X25519 agreement key and, once certified, a certificate
 * chain (leaf first). Services get theirs from the operator tool; a compartment generates its own keys inside
 * and has them certified by the launcher. Private keys never leave the structure except through
 * idevs_identity_save_key(), which writes them 0600. */
#ifndef IDEVS_IDENTITY_H
#define IDEVS_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_uuid.h"

#define IDEVS_NAME_MAX 64    /* identity names, without the NUL */
#define IDEVS_CHAIN_MAX 4    /* certificates in a chain: leaf, attestation authority, ... */
#define IDEVS_CERT_MAX 8192  /* bytes of one DER certificate */

typedef struct idevs_identity idevs_identity;

/* A certificate chain as DER, leaf first, each certificate malloc'd and owned by the chain: the one shape of the
 * chains an identity, a launcher and its services hold. */
typedef struct idevs_der_chain {
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    size_t count;
} idevs_der_chain;

/* Frees every certificate; the chain is empty after. */
void idevs_der_chain_clear(idevs_der_chain *chain);
/* Certificate index (0: the leaf) and its length in *len (len may be NULL); NULL and *len 0 past the end or for a
 * NULL chain. */
const uint8_t *idevs_der_chain_at(const idevs_der_chain *chain, size_t index, size_t *len);

/* The one rule for names, of identities and of what a deployment descriptor names: [A-Za-z0-9._-],
 * 1..IDEVS_NAME_MAX bytes. False for NULL. */
bool idevs_name_valid(const char *name);

/* Fresh keys for uuid. name is a label for certificates and logs: [A-Za-z0-9._-], 1..IDEVS_NAME_MAX. */
idevs_err idevs_identity_generate(const idevs_uuid *uuid, const char *name, idevs_identity **out);

/* Keys from raw private bytes: for test vectors and for unsealing a compartment's persisted keys. */
idevs_err idevs_identity_from_private(const idevs_uuid *uuid, const char *name,
                                      const uint8_t sign_seed[IDEVS_ED25519_SEED_LEN],
                                      const uint8_t kex_private[IDEVS_X25519_LEN], idevs_identity **out);

/* Public keys only: the subject of a certificate issued for keys held elsewhere (a compartment's). Signing,
 * key agreement and idevs_identity_save_key() fail on such an identity. */
idevs_err idevs_identity_from_public(const idevs_uuid *uuid, const char *name,
                                     const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN],
                                     const uint8_t kex_pub[IDEVS_X25519_LEN], idevs_identity **out);

/* Loads a key file written by idevs_identity_save_key() and a PEM certificate file (leaf first, then any
 * intermediates). The key file must be a regular file not readable or writable by group or others; the
 * certificate's keys must match the key file's. UUID and name come from the certificate. */
idevs_err idevs_identity_load(const char *key_path, const char *cert_path, idevs_identity **out);

/* The same, and on failure a sentence in why (NULL allowed) saying which file and what is wrong with it, for
 * a key file each of: a symbolic link (and to what), a file this user cannot open because another user owns
 * it (whose, and which mode), a mode that lets group or others in (which, and whose file it is), not a
 * regular file (a FIFO is refused at once), too large, no key pair in it, not the certificate's key. */
idevs_err idevs_identity_load_why(const char *key_path, const char *cert_path, idevs_identity **out, char *why,
                                  size_t why_len);

/* Writes both private keys as PKCS#8 PEM (Ed25519 first, then X25519) to a new file created 0600;
 * fails with IDEVS_ERR_IO if the file exists. */
idevs_err idevs_identity_save_key(const idevs_identity *id, const char *path);

/* Replaces the certificate chain (DER, leaf first). The leaf must certify this identity's keys and UUID. */
idevs_err idevs_identity_set_chain(idevs_identity *id, const uint8_t *const *der, const size_t *der_len, size_t count);

const idevs_uuid *idevs_identity_uuid(const idevs_identity *id);
const char *idevs_identity_name(const idevs_identity *id);
const uint8_t *idevs_identity_sign_public(const idevs_identity *id); /* 32 bytes */
const uint8_t *idevs_identity_kex_public(const idevs_identity *id);  /* 32 bytes */
EVP_PKEY *idevs_identity_sign_key(const idevs_identity *id);         /* borrowed */
EVP_PKEY *idevs_identity_kex_key(const idevs_identity *id);          /* borrowed */

/* The chain (count 0 before certification); pointers stay valid until the chain changes or the identity is freed. */
size_t idevs_identity_chain_count(const idevs_identity *id);
const uint8_t *idevs_identity_chain_der(const idevs_identity *id, size_t index, size_t *len);
/* SHA-256 of the leaf DER; IDEVS_ERR_INVALID_ARG before certification. */
idevs_err idevs_identity_cert_digest(const idevs_identity *id, uint8_t out[IDEVS_SHA256_LEN]);

/* Frees and cleanses the keys. NULL is fine. */
void idevs_identity_free(idevs_identity *id);

#endif
