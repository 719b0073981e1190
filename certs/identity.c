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

#define KEY_FILE_MAX 4096                                   /* two PKCS#8 PEM keys take about 240 bytes */
#define CERT_FILE_MAX (IDEVS_CHAIN_MAX * IDEVS_CERT_MAX * 2) /* base64 of the largest chain, with headers */

bool certs_name_valid(const char *name)
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

static void clear_chain(idevs_identity *id)
{
    for (size_t i = 0; i < id->chain_count; i++) {
        free(id->chain[i]);
        id->chain[i] = NULL;
        id->chain_len[i] = 0;
    }
    id->chain_count = 0;
}

void idevs_identity_free(idevs_identity *id)
{
    if (id == NULL)
        return;
    clear_chain(id);
    EVP_PKEY_free(id->sign);
    EVP_PKEY_free(id->kex);
    idevs_cleanse(id, sizeof *id);
    free(id);
}

static idevs_err new_identity(const idevs_uuid *uuid, const char *name, idevs_identity **out)
{
    if (uuid == NULL || out == NULL || !certs_name_valid(name))
        return IDEVS_ERR_INVALID_ARG;
    idevs_identity *id = calloc(1, sizeof *id);
    if (id == NULL)
        return IDEVS_ERR_NOMEM;
    id->uuid = *uuid;
    memcpy(id->name, name, strlen(name) + 1);
    *out = id;
    return IDEVS_OK;
}

idevs_err idevs_identity_generate(const idevs_uuid *uuid, const char *name, idevs_identity **out)
{
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, &id);
    if (err != IDEVS_OK)
        return err;
    err = idevs_ed25519_generate(&id->sign, id->sign_pub);
    if (err == IDEVS_OK)
        err = idevs_x25519_generate(&id->kex, id->kex_pub);
    if (err != IDEVS_OK) {
        idevs_identity_free(id);
        return err;
    }
    *out = id;
    return IDEVS_OK;
}

idevs_err idevs_identity_from_private(const idevs_uuid *uuid, const char *name,
                                      const uint8_t sign_seed[IDEVS_ED25519_SEED_LEN],
                                      const uint8_t kex_private[IDEVS_X25519_LEN], idevs_identity **out)
{
    if (sign_seed == NULL || kex_private == NULL)
        return IDEVS_ERR_INVALID_ARG;
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, &id);
    if (err != IDEVS_OK)
        return err;
    err = idevs_ed25519_from_private(sign_seed, &id->sign, id->sign_pub);
    if (err == IDEVS_OK)
        err = idevs_x25519_from_private(kex_private, &id->kex, id->kex_pub);
    if (err != IDEVS_OK) {
        idevs_identity_free(id);
        return err;
    }
    *out = id;
    return IDEVS_OK;
}

idevs_err idevs_identity_from_public(const idevs_uuid *uuid, const char *name,
                                     const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN],
                                     const uint8_t kex_pub[IDEVS_X25519_LEN], idevs_identity **out)
{
    if (sign_pub == NULL || kex_pub == NULL)
        return IDEVS_ERR_INVALID_ARG;
    idevs_identity *id = NULL;
    idevs_err err = new_identity(uuid, name, &id);
    if (err != IDEVS_OK)
        return err;
    id->sign = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, sign_pub, IDEVS_ED25519_PUB_LEN);
    id->kex = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, kex_pub, IDEVS_X25519_LEN);
    if (id->sign == NULL || id->kex == NULL) {
        ERR_clear_error();
        idevs_identity_free(id);
        return IDEVS_ERR_CRYPTO;
    }
    memcpy(id->sign_pub, sign_pub, IDEVS_ED25519_PUB_LEN);
    memcpy(id->kex_pub, kex_pub, IDEVS_X25519_LEN);
    *out = id;
    return IDEVS_OK;
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
    clear_chain(id);
    for (size_t i = 0; i < count; i++) {
        id->chain[i] = copies[i];
        id->chain_len[i] = der_len[i];
    }
    id->chain_count = count;
    return IDEVS_OK;
}

/* "alice (uid 1000)", or "uid 1000" for a uid without a name. */
static void user_of(uid_t uid, char *out, size_t out_len)
{
    struct passwd pw, *found = NULL;
    char buf[1024];
    if (getpwuid_r(uid, &pw, buf, sizeof buf, &found) == 0 && found != NULL)
        snprintf(out, out_len, "%s (uid %u)", found->pw_name, (unsigned)uid);
    else
        snprintf(out, out_len, "uid %u", (unsigned)uid);
}

static const char *kind_of(mode_t mode)
{
    return S_ISDIR(mode) ? "a directory" : S_ISFIFO(mode) ? "a FIFO" : S_ISSOCK(mode) ? "a socket"
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : "not a regular file";
}

/* Why a key file could not be opened (err is open's errno): a symbolic link, another user's file, or the
 * system's reason. Returns IDEVS_ERR_KEY_FILE. */
static idevs_err key_open_problem(const char *path, int err, char *why, size_t why_len)
{
    struct stat st;
    if (err == ELOOP && lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
        char target[256];
        ssize_t n = readlink(path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        return certs_fail(why, why_len, IDEVS_ERR_KEY_FILE,
                          "key file '%s' is a symbolic link (to '%s'): name the key file itself, a regular file of "
                          "the user that reads it with mode 0600", path, n > 0 ? target : "?");
    }
    if (err == EACCES && stat(path, &st) == 0 && st.st_uid != geteuid()) {
        char owner[96], reader[96];
        user_of(st.st_uid, owner, sizeof owner);
        user_of(geteuid(), reader, sizeof reader);
        return certs_fail(why, why_len, IDEVS_ERR_KEY_FILE,
                          "key file '%s' cannot be read by %s, which loads it: it belongs to %s, mode %04o; a key "
                          "file must belong to the user that reads it, mode 0600 (chown, chmod 600)", path, reader,
                          owner, (unsigned)(st.st_mode & 07777));
    }
    return certs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "key file '%s': %s", path, strerror(err));
}

/* A key file that group or others may access: its mode, and its owner when that is not the reader. */
static idevs_err key_mode_problem(const char *path, const struct stat *st, char *why, size_t why_len)
{
    char owner[256] = "";
    if (st->st_uid != geteuid()) {
        char o[96], reader[96];
        user_of(st->st_uid, o, sizeof o);
        user_of(geteuid(), reader, sizeof reader);
        snprintf(owner, sizeof owner, " and belongs to %s, not to %s which reads it", o, reader);
    }
    return certs_fail(why, why_len, IDEVS_ERR_KEY_FILE,
                      "key file '%s' has mode %04o%s: group or others may %s it; it must be private to the user "
                      "that reads it, mode 0600 (chmod 600%s)", path, (unsigned)(st->st_mode & 07777), owner,
                      (st->st_mode & 044) != 0 ? "read" : "access", st->st_uid != geteuid() ? ", and chown" : "");
}

/* Reads a whole file of at most max bytes into a malloc'd buffer (NUL-terminated). For a key file, the file
 * must be a regular file without group or other permissions and every failure is IDEVS_ERR_KEY_FILE. A FIFO
 * is refused without waiting for a writer. why (may be NULL) gets the reason. */
static idevs_err read_file(const char *path, size_t max, bool key_file, char **out, size_t *out_len, char *why,
                           size_t why_len)
{
    idevs_err fail = key_file ? IDEVS_ERR_KEY_FILE : IDEVS_ERR_IO;
    idevs_err too_large = key_file ? IDEVS_ERR_KEY_FILE : IDEVS_ERR_TOO_LARGE;
    const char *what = key_file ? "key file" : "certificate file";
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
    if (fd < 0)
        return key_file ? key_open_problem(path, errno, why, why_len)
                        : certs_fail(why, why_len, fail, "%s '%s': %s", what, path, strerror(errno));
    struct stat st = {0};
    idevs_err err = IDEVS_OK;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode))
        err = certs_fail(why, why_len, fail, "%s '%s' is %s", what, path, kind_of(st.st_mode));
    else if (key_file && (st.st_mode & 077) != 0)
        err = key_mode_problem(path, &st, why, why_len);
    else if (st.st_size < 0 || (size_t)st.st_size > max)
        err = certs_fail(why, why_len, too_large, "%s '%s' has %jd bytes, more than %zu", what, path,
                         (intmax_t)st.st_size, max);
    if (err != IDEVS_OK) {
        close(fd);
        return err;
    }
    size_t cap = (size_t)st.st_size + 1, len = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        close(fd);
        return certs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
    }
    for (;;) {
        if (len == cap - 1) { /* the file grew since fstat: refuse rather than truncate */
            char extra;
            ssize_t n = read(fd, &extra, 1);
            if (n == 0)
                break;
            if (n < 0 && errno == EINTR)
                continue;
            err = n < 0 ? certs_fail(why, why_len, fail, "%s '%s': %s", what, path, strerror(errno))
                        : certs_fail(why, why_len, too_large, "%s '%s' grew while it was read", what, path);
            break;
        }
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = certs_fail(why, why_len, fail, "%s '%s': %s", what, path, strerror(errno));
            break;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (err != IDEVS_OK) {
        idevs_cleanse(buf, cap);
        free(buf);
        return err;
    }
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
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

/* Parses a PEM certificate file into DER copies (leaf first). */
static idevs_err parse_cert_file(const char *text, size_t len, uint8_t **der, size_t *der_len, size_t *count)
{
    idevs_err err = IDEVS_OK;
    size_t n = 0;
    BIO *bio = BIO_new_mem_buf(text, (int)len);
    if (bio == NULL)
        return IDEVS_ERR_NOMEM;
    for (;;) {
        X509 *cert = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (cert == NULL) {
            unsigned long e = ERR_peek_last_error();
            if (n == 0 || !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE))
                err = IDEVS_ERR_CERT_MALFORMED;
            ERR_clear_error();
            break;
        }
        if (n == IDEVS_CHAIN_MAX) {
            X509_free(cert);
            err = IDEVS_ERR_TOO_LARGE;
            break;
        }
        unsigned char *d = NULL;
        int l = i2d_X509(cert, &d);
        X509_free(cert);
        if (l <= 0) {
            err = IDEVS_ERR_CERT_MALFORMED;
            break;
        }
        if ((size_t)l > IDEVS_CERT_MAX) {
            OPENSSL_free(d);
            err = IDEVS_ERR_TOO_LARGE;
            break;
        }
        der[n] = malloc((size_t)l);
        if (der[n] == NULL) {
            OPENSSL_free(d);
            err = IDEVS_ERR_NOMEM;
            break;
        }
        memcpy(der[n], d, (size_t)l);
        OPENSSL_free(d);
        der_len[n++] = (size_t)l;
    }
    BIO_free(bio);
    if (err != IDEVS_OK) {
        for (size_t i = 0; i < n; i++)
            free(der[i]);
        return err;
    }
    *count = n;
    return IDEVS_OK;
}

idevs_err idevs_identity_load(const char *key_path, const char *cert_path, idevs_identity **out)
{
    return idevs_identity_load_why(key_path, cert_path, out, NULL, 0);
}

idevs_err idevs_identity_load_why(const char *key_path, const char *cert_path, idevs_identity **out, char *why,
                                  size_t why_len)
{
    certs_fail(why, why_len, IDEVS_OK, "%s", "");
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

    idevs_err err = read_file(key_path, KEY_FILE_MAX, true, &key_text, &key_len, why, why_len);
    if (err != IDEVS_OK)
        goto done;
    err = read_file(cert_path, CERT_FILE_MAX, false, &cert_text, &cert_len, why, why_len);
    if (err != IDEVS_OK)
        goto done;
    /* The key file's problems are said where they are found; any other is the certificate file's (at done). */
    err = parse_cert_file(cert_text, cert_len, der, der_len, &count);
    if (err != IDEVS_OK)
        goto done;
    leaf = certs_parse_der(der[0], der_len[0]);
    if (leaf == NULL) {
        err = IDEVS_ERR_CERT_MALFORMED;
        goto done;
    }
    if ((err = certs_get_uuid_san(leaf, &u)) != IDEVS_OK || (err = certs_get_name(leaf, name)) != IDEVS_OK)
        goto done;
    if ((err = new_identity(&u, name, &id)) != IDEVS_OK)
        goto done;
    if ((err = parse_key_file(key_text, key_len, &id->sign, &id->kex)) != IDEVS_OK) {
        certs_fail(why, why_len, err, "key file '%s' holds no Ed25519 and X25519 private key pair (two PKCS#8 PEM "
                   "keys, as idevs-ca writes them)", key_path);
        goto done;
    }
    if (idevs_raw_public(id->sign, id->sign_pub) != IDEVS_OK || idevs_raw_public(id->kex, id->kex_pub) != IDEVS_OK) {
        err = certs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "key file '%s': its keys are not usable", key_path);
        goto done;
    }
    err = leaf_matches(id, leaf);
    if (err == IDEVS_ERR_KEY_BINDING_MISMATCH) { /* the certificate is for other keys than the key file's */
        err = certs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "key file '%s' does not hold the keys of the certificate "
                         "'%s'", key_path, cert_path);
        goto done;
    }
    if (err != IDEVS_OK)
        goto done;
    err = idevs_identity_set_chain(id, (const uint8_t *const *)der, der_len, count);

done:
    if (err != IDEVS_OK && why != NULL && why_len > 0 && why[0] == '\0')
        certs_fail(why, why_len, err, "certificate file '%s': %s", cert_path, idevs_strerror(err));
    X509_free(leaf);
    for (size_t i = 0; i < count; i++)
        free(der[i]);
    if (key_text != NULL) {
        idevs_cleanse(key_text, key_len);
        free(key_text);
    }
    free(cert_text);
    if (err != IDEVS_OK) {
        idevs_identity_free(id);
        return err;
    }
    *out = id;
    return IDEVS_OK;
}

static idevs_err write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return IDEVS_ERR_IO;
        data += n;
        len -= (size_t)n;
    }
    return IDEVS_OK;
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
    idevs_err err = write_all(fd, mem->data, mem->length);
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
    return id != NULL ? id->chain_count : 0;
}

const uint8_t *idevs_identity_chain_der(const idevs_identity *id, size_t index, size_t *len)
{
    if (id == NULL || index >= id->chain_count) {
        if (len != NULL)
            *len = 0;
        return NULL;
    }
    if (len != NULL)
        *len = id->chain_len[index];
    return id->chain[index];
}

idevs_err idevs_identity_cert_digest(const idevs_identity *id, uint8_t out[IDEVS_SHA256_LEN])
{
    if (id == NULL || out == NULL || id->chain_count == 0)
        return IDEVS_ERR_INVALID_ARG;
    return idevs_sha256(id->chain[0], id->chain_len[0], out);
}
