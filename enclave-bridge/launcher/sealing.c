/* The launcher's state directory: the sealing secret and the compartments' sealed key blobs.
 *
 * sealing.key    32 random bytes, created 0600 on first use; refused when not a regular file of ours, when
 *                group or others have any access, or when its size is not 32.
 * <uuid>.sealed  the blob the compartment of program <uuid> asked to keep: its private keys, sealed under
 *                sealing key = HKDF-SHA256(ikm = secret, salt = "", info = "idevs sealing key v1" || measurement).
 *                Replaced atomically (temporary file 0600, fsync, rename, fsync of the directory).
 * <uuid>.replay  the replay record of program <uuid>: written in place, in two slots (replay_record.c); read here.
 * The directory itself must be ours and not writable by group or others. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idevs_file.h"
#include "idevs_hex.h"
#include "launcher_internal.h"

#define SECRET_FILE "sealing.key"

idevs_err launcher_state_dir_open(const char *path, int *dirfd, char *why, size_t why_len)
{
    *dirfd = -1;
    if (path == NULL || path[0] == '\0') {
        snprintf(why, why_len, "no state directory configured");
        return IDEVS_ERR_CONFIG;
    }
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_len, "state directory '%s': %s", path, strerror(errno));
        return IDEVS_ERR_CONFIG;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || st.st_uid != geteuid() || (st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
        snprintf(why, why_len, "state directory '%s' must be owned by uid %u and not writable by group or others",
                 path, (unsigned)geteuid());
        close(fd);
        return IDEVS_ERR_CONFIG;
    }
    *dirfd = fd;
    return IDEVS_OK;
}

/* Writes data to a fresh temporary file and renames it to name (or, with exclusive, links it there only if
 * name does not exist yet). On IDEVS_ERR_IO, errno is that of the first call that failed (EROFS, EACCES,
 * ENOSPC, EDQUOT, ...), for the caller's message; the cleanup after it does not change it. */
static idevs_err replace_file(int dirfd, const char *name, const uint8_t *data, size_t len, bool exclusive)
{
    char tmp[128];
    uint8_t r[8];
    if (idevs_random(r, sizeof r) != IDEVS_OK)
        return IDEVS_ERR_CRYPTO;
    char suffix[2 * sizeof r + 1];
    idevs_hex_encode(r, sizeof r, suffix);
    snprintf(tmp, sizeof tmp, ".%s.%s.tmp", name, suffix);
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return IDEVS_ERR_IO;
    int failed = 0; /* the errno of the first failure */
    idevs_err err = idevs_file_write_all(fd, data, len);
    if (err != IDEVS_OK)
        failed = errno;
    if (err == IDEVS_OK && fsync(fd) != 0) {
        err = IDEVS_ERR_IO;
        failed = errno;
    }
    if (close(fd) != 0 && err == IDEVS_OK) {
        err = IDEVS_ERR_IO;
        failed = errno;
    }
    if (err == IDEVS_OK) {
        if (exclusive) {
            if (linkat(dirfd, tmp, dirfd, name, 0) != 0 && errno != EEXIST) {
                err = IDEVS_ERR_IO; /* EEXIST: another launcher created it first; that one is used */
                failed = errno;
            }
            unlinkat(dirfd, tmp, 0);
        } else if (renameat(dirfd, tmp, dirfd, name) != 0) {
            err = IDEVS_ERR_IO;
            failed = errno;
        }
    }
    if (err != IDEVS_OK) {
        unlinkat(dirfd, tmp, 0);
    } else if (fsync(dirfd) != 0) {
        err = IDEVS_ERR_IO;
        failed = errno;
    }
    if (err == IDEVS_ERR_IO)
        errno = failed != 0 ? failed : EIO;
    return err;
}

/* A state file: a regular file of ours, private (no group/other bits), no symbolic link, of a size within
 * [min, max]; a missing one is no error (*data NULL). Read by the one bounded file reader (idevs_file.h). */
static idevs_err read_private(int dirfd, const char *name, size_t min, size_t max, uint8_t **data, size_t *len,
                              char *why, size_t why_len)
{
    const idevs_file_rules rules = {"state file", min, max,
                                    IDEVS_FILE_NOFOLLOW | IDEVS_FILE_PRIVATE | IDEVS_FILE_OWNED |
                                        IDEVS_FILE_MISSING_OK | IDEVS_FILE_SECRET,
                                    IDEVS_ERR_KEY_FILE};
    return idevs_file_read(dirfd, name, &rules, data, len, why, why_len);
}

idevs_err launcher_sealing_secret(int dirfd, bool create, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                                 size_t why_len)
{
    uint8_t *data = NULL;
    size_t len = 0;
    idevs_err err = read_private(dirfd, SECRET_FILE, IDEVS_SEALING_SECRET_LEN, IDEVS_SEALING_SECRET_LEN, &data, &len,
                                 why, why_len);
    if (err != IDEVS_OK)
        return err == IDEVS_ERR_NOMEM ? err : IDEVS_ERR_KEY_FILE;
    if (data == NULL && !create)
        return idevs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "there is no sealing secret '%s'", SECRET_FILE);
    if (data == NULL) {
        uint8_t fresh[IDEVS_SEALING_SECRET_LEN];
        err = idevs_random(fresh, sizeof fresh);
        if (err == IDEVS_OK)
            err = replace_file(dirfd, SECRET_FILE, fresh, sizeof fresh, true);
        idevs_cleanse(fresh, sizeof fresh);
        if (err != IDEVS_OK) {
            snprintf(why, why_len, "cannot create the sealing secret '%s' in the state directory: %s", SECRET_FILE,
                     err == IDEVS_ERR_IO ? strerror(errno) : idevs_strerror(err));
            return err == IDEVS_ERR_CRYPTO ? err : IDEVS_ERR_KEY_FILE;
        }
        err = read_private(dirfd, SECRET_FILE, IDEVS_SEALING_SECRET_LEN, IDEVS_SEALING_SECRET_LEN, &data, &len, why,
                           why_len);
        if (err != IDEVS_OK)
            return err == IDEVS_ERR_NOMEM ? err : IDEVS_ERR_KEY_FILE;
        if (data == NULL)
            return idevs_fail(why, why_len, IDEVS_ERR_KEY_FILE, "the sealing secret '%s' vanished after it was created",
                              SECRET_FILE);
    }
    memcpy(secret, data, IDEVS_SEALING_SECRET_LEN);
    idevs_cleanse(data, len);
    free(data);
    return IDEVS_OK;
}

idevs_err launcher_sealing_key(const uint8_t secret[IDEVS_SEALING_SECRET_LEN],
                               const uint8_t measurement[IDEVS_SHA256_LEN], uint8_t key[IDEVS_SEALING_KEY_LEN])
{
    const size_t label = sizeof IDEVS_SEALING_KEY_LABEL - 1;
    uint8_t info[sizeof IDEVS_SEALING_KEY_LABEL - 1 + IDEVS_SHA256_LEN];
    memcpy(info, IDEVS_SEALING_KEY_LABEL, label);
    memcpy(info + label, measurement, IDEVS_SHA256_LEN);
    /* An empty salt (RFC 5869: equivalent to HashLen zero bytes); passed as a valid pointer with length 0,
     * as OpenSSL's parameter construction does not take NULL. */
    static const uint8_t no_salt[1] = {0};
    return idevs_hkdf_sha256(no_salt, 0, secret, IDEVS_SEALING_SECRET_LEN, info, sizeof info, key,
                             IDEVS_SEALING_KEY_LEN);
}

static void blob_name(const idevs_uuid *program, char name[IDEVS_UUID_STR_LEN + 8])
{
    char u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(program, u);
    snprintf(name, IDEVS_UUID_STR_LEN + 8, "%s.sealed", u);
}

idevs_err launcher_state_read(int dirfd, const char *name, size_t min, size_t max, uint8_t **data, size_t *len,
                              char *why, size_t why_len)
{
    return read_private(dirfd, name, min, max, data, len, why, why_len);
}

idevs_err launcher_blob_read(int dirfd, const idevs_uuid *program, uint8_t **blob, size_t *len, char *why,
                             size_t why_len)
{
    char name[IDEVS_UUID_STR_LEN + 8];
    blob_name(program, name);
    idevs_err err = launcher_state_read(dirfd, name, 1, IDEVS_SEALED_BLOB_MAX, blob, len, why, why_len);
    if (err == IDEVS_ERR_IO)
        snprintf(why, why_len, "cannot read the sealed keys '%s'", name);
    return err;
}

idevs_err launcher_blob_write(int dirfd, const idevs_uuid *program, const uint8_t *blob, size_t len, char *why,
                              size_t why_len)
{
    char name[IDEVS_UUID_STR_LEN + 8];
    blob_name(program, name);
    if (len == 0 || len > IDEVS_SEALED_BLOB_MAX) {
        snprintf(why, why_len, "sealed keys of %zu bytes, not 1..%u", len, IDEVS_SEALED_BLOB_MAX);
        return IDEVS_ERR_FRAME;
    }
    idevs_err err = replace_file(dirfd, name, blob, len, false);
    if (err != IDEVS_OK)
        snprintf(why, why_len, "cannot persist the sealed keys '%s' in the state directory: %s", name,
                 err == IDEVS_ERR_IO ? strerror(errno) : idevs_strerror(err));
    return err;
}

idevs_err launcher_state_write(int dirfd, const char *name, const uint8_t *data, size_t len, char *why,
                               size_t why_len)
{
    idevs_err err = replace_file(dirfd, name, data, len, false);
    if (err != IDEVS_OK)
        snprintf(why, why_len, "cannot write '%s' in the state directory: %s", name,
                 err == IDEVS_ERR_IO ? strerror(errno) : idevs_strerror(err));
    return err;
}
