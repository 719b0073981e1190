/* Identities: key generation, the 0600 key file, certificate files and the chain. */
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/buffer.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "certs_internal.h"
#include "idevs_file.h"

#define KEY_FILE_MAX 4096                                   /* two PKCS#8 PEM keys take about 240 bytes */
#define CERT_FILE_MAX (IDEVS_CHAIN_MAX * IDEVS_CERT_MAX * 2) /* base64 of the largest chain, with headers */

bool idevs_name_valid(const char *name)
{
    if (name == NULL)
        return false;
    size_t len = strnlen(name, IDEVS_NAME_MAX + 1);
    if (len < 1 || len > IDEVS_NAME_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

void idevs_der_chain_clear(idevs_der_chain *chain)
{
    for (size_t i = 0; i < chain->count; i++) {
        free(chain->der[i]);
        chain->der[i] = NULL;
        chain->len[i] = 0;
    }
    chain->count = 0;
}

const uint8_t *idevs_der_chain_at(const idevs_der_chain *chain, size_t index, size_t *len)
{
    if (chain == NULL || index >= chain->count) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = chain->len[index];
    return chain->der[index];
}

void idevs_identity_free(idevs_identity *id)
{
    if (id == NULL)
        return;
    idevs_der_chain_clear(&id->chain);
    EVP_PKEY_free(id->sign);
    EVP_PKEY_free(id->kex);
    idevs_cleanse(id, sizeof *id);
    free(id);
}

/* A new identity without keys; args_ok false (a key argument missing) is IDEVS_ERR_INVALID_ARG like the rest. */
static idevs_err new_identity(const idevs_uuid *uuid, const char *name, bool args_ok, idevs_identity **out)
{
    if (!args_ok || uuid == NULL || out == NULL || !idevs_name_valid(name))
        return IDEVS_ERR_INVALID_ARG;
    idevs_identity *id = calloc(1, sizeof *id);
    if (id == NULL)
        return IDEVS_ERR_NOMEM;
    id->uuid = *uuid;
    memcpy(id->name, name, strlen(name) + 1);
    *out = id;
    return IDEVS_OK;
}

/* The end of every constructor: the identity goes to *out when err is IDEVS_OK, and is freed otherwise. */
static idevs_err hand_out(idevs_identity *id, idevs_err err, idevs_identity **out)
{
    if (err != IDEVS_OK) {
        idevs_identity_free(id);
        return err;
    }
    *out = id;
    return IDEVS_OK;
}

idevs_err idevs_identity_generate(const idevs_uuid *uuid, const char *name, idevs_identity **out)
{
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, true, &id);
    if (err != IDEVS_OK)
        return err;
    err = idevs_ed25519_generate(&id->sign, id->sign_pub);
    if (err == IDEVS_OK)
        err = idevs_x25519_generate(&id->kex, id->kex_pub);
    return hand_out(id, err, out);
}

idevs_err idevs_identity_from_private(const idevs_uuid *uuid, const char *name,
                                      const uint8_t sign_seed[IDEVS_ED25519_SEED_LEN],
                                      const uint8_t kex_private[IDEVS_X25519_LEN], idevs_identity **out)
{
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, sign_seed != NULL && kex_private != NULL, &id);
    if (err != IDEVS_OK)
        return err;
    err = idevs_ed25519_from_private(sign_seed, &id->sign, id->sign_pub);
    if (err == IDEVS_OK)
        err = idevs_x25519_from_private(kex_private, &id->kex, id->kex_pub);
    return hand_out(id, err, out);
}

idevs_err idevs_identity_from_public(const idevs_uuid *uuid, const char *name,
                                     const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN],
                                     const uint8_t kex_pub[IDEVS_X25519_LEN], idevs_identity **out)
{
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, sign_pub != NULL && kex_pub != NULL, &id);
    if (err != IDEVS_OK)
        return err;
    id->sign = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, sign_pub, IDEVS_ED25519_PUB_LEN);
    id->kex = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, kex_pub, IDEVS_X25519_LEN);
    if (id->sign == NULL || id->kex == NULL) {
        ERR_clear_error();
        err = IDEVS_ERR_CRYPTO;
    }
    memcpy(id->sign_pub, sign_pub, IDEVS_ED25519_PUB_LEN);
    memcpy(id->kex_pub, kex_pub, IDEVS_X25519_LEN);
    return hand_out(id, err, out);
}

/* Checks that leaf certifies id: Ed25519 key, urn:uuid and, when present, the agreement key. */
static idevs_err leaf_matches(const idevs_identity *id, X509 *leaf)
{
    uint8_t pub[32];
    idevs_uuid u;
    idevs_err err = certs_get_sign_key(leaf, pub);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_ct_equal(pub, id->sign_pub, sizeof pub))
        return IDEVS_ERR_KEY_BINDING_MISMATCH;
    err = certs_get_agreement_key(leaf, pub);
    if (err == IDEVS_OK && !idevs_ct_equal(pub, id->kex_pub, sizeof pub))
        return IDEVS_ERR_KEY_BINDING_MISMATCH;
    if (err != IDEVS_OK && err != IDEVS_ERR_EVIDENCE_MISSING)
        return err;
    err = certs_get_uuid_san(leaf, &u);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_uuid_equal(&u, &id->uuid))
        return IDEVS_ERR_INVALID_ARG;
    return IDEVS_OK;
}

idevs_err idevs_identity_set_chain(idevs_identity *id, const uint8_t *const *der, const size_t *der_len, size_t count)
{
    if (id == NULL || (count > 0 && (der == NULL || der_len == NULL)))
        return IDEVS_ERR_INVALID_ARG;
    if (count > IDEVS_CHAIN_MAX)
        return IDEVS_ERR_TOO_LARGE;
    for (size_t i = 0; i < count; i++) {
        if (der_len[i] > IDEVS_CERT_MAX)
            return IDEVS_ERR_TOO_LARGE;
        X509 *cert = certs_parse_der(der[i], der_len[i]);
        if (cert == NULL)
            return IDEVS_ERR_CERT_MALFORMED;
        idevs_err err = i == 0 ? leaf_matches(id, cert) : IDEVS_OK;
        X509_free(cert);
        if (err == IDEVS_ERR_KEY_BINDING_MISMATCH)
            err = IDEVS_ERR_INVALID_ARG;
        if (err != IDEVS_OK)
            return err;
    }
    uint8_t *copies[IDEVS_CHAIN_MAX] = {NULL};
    for (size_t i = 0; i < count; i++) {
        copies[i] = malloc(der_len[i]);
        if (copies[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(copies[j]);
            return IDEVS_ERR_NOMEM;
        }
        memcpy(copies[i], der[i], der_len[i]);
    }
    idevs_der_chain_clear(&id->chain);
    for (size_t i = 0; i < count; i++) {
        id->chain.der[i] = copies[i];
        id->chain.len[i] = der_len[i];
    }
    id->chain.count = count;
    return IDEVS_OK;
}

/* Parses a key file: an Ed25519 then an X25519 PKCS#8 PEM private key and nothing else. */
static idevs_err parse_key_file(const char *text, size_t len, EVP_PKEY **sign, EVP_PKEY **kex)
{
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (bio == NULL)
        return IDEVS_ERR_NOMEM;
    EVP_PKEY *s = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    EVP_PKEY *k = s != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    EVP_PKEY *extra = k != NULL ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    ERR_clear_error();
    if (s == NULL || k == NULL || extra != NULL || EVP_PKEY_get_id(s) != EVP_PKEY_ED25519 ||
        EVP_PKEY_get_id(k) != EVP_PKEY_X25519) {
        EVP_PKEY_free(s);
        EVP_PKEY_free(k);
        EVP_PKEY_free(extra);
        return IDEVS_ERR_KEY_FILE;
    }
    *sign = s;
    *kex = k;
    return IDEVS_OK;
}

idevs_err idevs_identity_load(const char *key_path, const char *cert_path, idevs_identity **out)
{
    return idevs_identity_load_why(key_path, cert_path, out, NULL, 0);
}

idevs_err idevs_identity_load_why(const char *key_path, const char *cert_path, idevs_identity **out, char *why,
                                  size_t why_len)
{
    idevs_fail(why, why_len, IDEVS_OK, "%s", "");
    if (key_path == NULL || cert_path == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    char *key_text = NULL, *cert_text = NULL;
    size_t key_len = 0, cert_len = 0, count = 0;
    uint8_t *der[IDEVS_CHAIN_MAX] = {NULL};
    size_t der_len[IDEVS_CHAIN_MAX] = {0};
    idevs_identity *id = NULL;
    X509 *leaf = NULL;
    idevs_uuid u;
    char name[IDEVS_NAME_MAX + 1];

    /* The key file: private to the reader (mode 0600, no symbolic link); every failure is IDEVS_ERR_KEY_FILE. */
    static const idevs_file_rules key_rules = {"key file", 0, KEY_FILE_MAX,
                                               IDEVS_FILE_NOFOLLOW | IDEVS_FILE_PRIVATE | IDEVS_FILE_SECRET,
                                               IDEVS_ERR_KEY_FILE};
    static const idevs_file_rules cert_rules = {"certificate file", 0, CERT_FILE_MAX, IDEVS_FILE_NOFOLLOW, IDEVS_OK};
    idevs_err err = idevs_file_read(AT_FDCWD, key_path, &key_rules, (uint8_t **)&key_text, &key_len, why, why_len);
    if (err != IDEVS_OK)
        goto done;
    err = idevs_file_read(AT_FDCWD, cert_path, &cert_rules, (uint8_t **)&cert_text, &cert_len, why, why_len);
    if (err != IDEVS_OK)
        goto done;
    /* The key file's problems are said where they are found; any other is the certificate file's (at done). */
    char inner[192];
    err = idevs_cert_read_chain_pem(cert_text, cert_len, der, der_len, IDEVS_CHAIN_MAX, &count, inner, sizeof inner);
    if (err != IDEVS_OK) {
        idevs_fail(why, why_len, err, "certificate file '%s': %s", cert_path, inner);
        goto done;
    }
    leaf = certs_parse_der(der[0], der_len[0]);
    if (leaf == NULL) {
        err = IDEVS_ERR_CERT_MALFORMED;
        goto done;
    }
    if ((err = certs_get_uuid_san(leaf, &u)) != IDEVS_OK || (err = certs_get_name(leaf, name)) != IDEVS_OK)
        goto done;
    if ((err = new_identity(&u, name, true, &id)) != IDEVS_OK)
        goto done;
    if ((err = parse_key_file(key_text, key_len, &id->sign, &id->kex)) != IDEVS_OK) {
        idevs_fail(why, why_len, err, "key file '%s' holds no Ed25519 and X25519 private key pair (two PKCS#8 PEM "
                   "keys, as idevs-ca writes them)", key_path);
        goto done;
    }
    if (idevs_raw_public(id->sign, id->sign_pub) != IDEVS_OK || idevs_raw_public(id->kex, id->kex_pub) != IDEVS_OK) {
        err = idevs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "key file '%s': its keys are not usable", key_path);
        goto done;
    }
    err = leaf_matches(id, leaf);
    if (err == IDEVS_ERR_KEY_BINDING_MISMATCH) { /* the certificate is for other keys than the key file's */
        err = idevs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "key file '%s' does not hold the keys of the certificate "
                         "'%s'", key_path, cert_path);
        goto done;
    }
    if (err != IDEVS_OK)
        goto done;
    err = idevs_identity_set_chain(id, (const uint8_t *const *)der, der_len, count);

done:
    if (err != IDEVS_OK && why != NULL && why_len > 0 && why[0] == '\0')
        idevs_fail(why, why_len, err, "certificate file '%s': %s", cert_path, idevs_strerror(err));
    X509_free(leaf);
    for (size_t i = 0; i < count; i++)
        free(der[i]);
    if (key_text != NULL) {
        idevs_cleanse(key_text, key_len);
        free(key_text);
    }
    free(cert_text);
    return hand_out(id, err, out);
}

idevs_err idevs_identity_save_key(const idevs_identity *id, const char *path)
{
    if (id == NULL || path == NULL || id->sign == NULL || id->kex == NULL)
        return IDEVS_ERR_INVALID_ARG;
    /* A secure-memory BIO clears its buffer when it grows and when it is freed. */
    BIO *bio = BIO_new(BIO_s_secmem());
    if (bio == NULL)
        return IDEVS_ERR_NOMEM;
    BUF_MEM *mem = NULL;
    if (PEM_write_bio_PKCS8PrivateKey(bio, id->sign, NULL, NULL, 0, NULL, NULL) != 1 ||
        PEM_write_bio_PKCS8PrivateKey(bio, id->kex, NULL, NULL, 0, NULL, NULL) != 1 ||
        BIO_get_mem_ptr(bio, &mem) != 1 || mem == NULL) {
        BIO_free(bio);
        return IDEVS_ERR_CRYPTO;
    }
    int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) {
        BIO_free(bio);
        return IDEVS_ERR_IO;
    }
    idevs_err err = idevs_file_write_all(fd, mem->data, mem->length);
    if (err == IDEVS_OK && fsync(fd) != 0)
        err = IDEVS_ERR_IO;
    if (close(fd) != 0 && err == IDEVS_OK)
        err = IDEVS_ERR_IO;
    if (err != IDEVS_OK)
        unlink(path);
    BIO_free(bio);
    return err;
}

const idevs_uuid *idevs_identity_uuid(const idevs_identity *id)
{
    return id != NULL ? &id->uuid : NULL;
}

const char *idevs_identity_name(const idevs_identity *id)
{
    return id != NULL ? id->name : NULL;
}

const uint8_t *idevs_identity_sign_public(const idevs_identity *id)
{
    return id != NULL ? id->sign_pub : NULL;
}

const uint8_t *idevs_identity_kex_public(const idevs_identity *id)
{
    return id != NULL ? id->kex_pub : NULL;
}

EVP_PKEY *idevs_identity_sign_key(const idevs_identity *id)
{
    return id != NULL ? id->sign : NULL;
}

EVP_PKEY *idevs_identity_kex_key(const idevs_identity *id)
{
    return id != NULL ? id->kex : NULL;
}

size_t idevs_identity_chain_count(const idevs_identity *id)
{
    return id != NULL ? id->chain.count : 0;
}

const uint8_t *idevs_identity_chain_der(const idevs_identity *id, size_t index, size_t *len)
{
    return idevs_der_chain_at(id != NULL ? &id->chain : NULL, index, len);
}

idevs_err idevs_identity_cert_digest(const idevs_identity *id, uint8_t out[IDEVS_SHA256_LEN])
{
    if (id == NULL || out == NULL || id->chain.count == 0)
        return IDEVS_ERR_INVALID_ARG;
    return idevs_sha256(id->chain.der[0], id->chain.len[0], out);
}
