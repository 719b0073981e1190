/* Measuring without a swap window: each file is copied once into a sealed memfd (no more writes, growth or
 * shrinking, and the seals themselves sealed), the memfd's contents are hashed, and the compartment is started
 * from those same memfds. Whatever happens to the files on disk afterwards, the launcher runs what it hashed. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "launcher_internal.h"

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3: the memfd may be executed (asked for explicitly where it matters) */
#endif

#define COPY_CHUNK 16384

static int create_memfd(const char *name, bool executable)
{
    unsigned flags = MFD_CLOEXEC | MFD_ALLOW_SEALING;
    int fd = memfd_create(name, flags | (executable ? MFD_EXEC : 0));
    if (fd < 0 && errno == EINVAL && executable)
        fd = memfd_create(name, flags); /* kernels before 6.3 know no MFD_EXEC; their memfds are executable */
    return fd;
}

/* Hashes the whole of fd from offset 0 with pread, so that the digest is of what the memfd holds. */
static idevs_err hash_fd(int fd, size_t size, uint8_t out[IDEVS_SHA256_LEN])
{
    uint8_t buf[COPY_CHUNK];
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (md == NULL)
        return IDEVS_ERR_NOMEM;
    idevs_err err = IDEVS_ERR_CRYPTO;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1)
        goto done;
    size_t off = 0;
    while (off < size) {
        size_t want = size - off < sizeof buf ? size - off : sizeof buf;
        ssize_t n = pread(fd, buf, want, (off_t)off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            err = IDEVS_ERR_IO;
            goto done;
        }
        if (EVP_DigestUpdate(md, buf, (size_t)n) != 1)
            goto done;
        off += (size_t)n;
    }
    unsigned len = 0;
    if (EVP_DigestFinal_ex(md, out, &len) == 1 && len == IDEVS_SHA256_LEN)
        err = IDEVS_OK;
done:
    EVP_MD_CTX_free(md);
    return err;
}

idevs_err launcher_seal_file(const char *path, const char *label, bool executable, int *fd_out,
                             uint8_t digest[IDEVS_SHA256_LEN], char *why, size_t why_len)
{
    uint8_t buf[COPY_CHUNK];
    *fd_out = -1;
    /* O_NONBLOCK: a FIFO in the file's place must not hold the broker's start until a writer comes; it is
     * refused below like anything else that is not a regular file (on which O_NONBLOCK changes nothing). */
    int src = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    if (src < 0) {
        snprintf(why, why_len, "%s '%s': cannot open: %s", label, path, strerror(errno));
        return IDEVS_ERR_IO;
    }
    struct stat st = {0};
    if (fstat(src, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(why, why_len, "%s '%s': not a regular file%s", label, path,
                 S_ISFIFO(st.st_mode) ? " (a FIFO)" : S_ISDIR(st.st_mode) ? " (a directory)"
                 : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? " (a device)" : S_ISSOCK(st.st_mode) ? " (a socket)" : "");
        close(src);
        return IDEVS_ERR_IO;
    }
    if (st.st_size <= 0 || (uintmax_t)st.st_size > IDEVS_IMAGE_FILE_MAX) {
        snprintf(why, why_len, "%s '%s': size %jd is not within 1..%u bytes", label, path, (intmax_t)st.st_size,
                 IDEVS_IMAGE_FILE_MAX);
        close(src);
        return IDEVS_ERR_TOO_LARGE;
    }
    int mfd = create_memfd(label, executable);
    if (mfd < 0) {
        snprintf(why, why_len, "%s: memfd_create: %s", label, strerror(errno));
        close(src);
        return IDEVS_ERR_IO;
    }
    /* Copy until end of file (the file may change while it is read: what ends up in the memfd is what gets
     * hashed and run, whatever its size is by then, within the limit). */
    size_t total = 0;
    idevs_err err = IDEVS_OK;
    for (;;) {
        ssize_t n = read(src, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(why, why_len, "%s '%s': read: %s", label, path, strerror(errno));
            err = IDEVS_ERR_IO;
            break;
        }
        if (n == 0)
            break;
        if ((size_t)n > IDEVS_IMAGE_FILE_MAX - total) {
            snprintf(why, why_len, "%s '%s': grew beyond %u bytes while being read", label, path,
                     IDEVS_IMAGE_FILE_MAX);
            err = IDEVS_ERR_TOO_LARGE;
            break;
        }
        for (ssize_t off = 0; off < n;) {
            ssize_t w = write(mfd, buf + off, (size_t)(n - off));
            if (w < 0 && errno == EINTR)
                continue;
            if (w <= 0) {
                snprintf(why, why_len, "%s: writing the memfd: %s", label, strerror(errno));
                err = IDEVS_ERR_IO;
                break;
            }
            off += w;
        }
        if (err != IDEVS_OK)
            break;
        total += (size_t)n;
    }
    close(src);
    if (err == IDEVS_OK && total == 0) {
        snprintf(why, why_len, "%s '%s': empty", label, path);
        err = IDEVS_ERR_IO;
    }
    if (err == IDEVS_OK &&
        fcntl(mfd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) != 0) {
        snprintf(why, why_len, "%s: sealing the memfd: %s", label, strerror(errno));
        err = IDEVS_ERR_IO;
    }
    if (err == IDEVS_OK) {
        /* Hash what the sealed memfd holds, at its sealed size. */
        if (fstat(mfd, &st) != 0 || st.st_size < 0 || (uintmax_t)st.st_size != total) {
            snprintf(why, why_len, "%s: the sealed memfd has an unexpected size", label);
            err = IDEVS_ERR_IO;
        } else if ((err = hash_fd(mfd, total, digest)) != IDEVS_OK) {
            snprintf(why, why_len, "%s: hashing the sealed memfd failed", label);
        }
    }
    if (err == IDEVS_OK && lseek(mfd, 0, SEEK_SET) != 0) { /* the child reads it from the start */
        snprintf(why, why_len, "%s: lseek on the memfd: %s", label, strerror(errno));
        err = IDEVS_ERR_IO;
    }
    if (err != IDEVS_OK) {
        close(mfd);
        return err;
    }
    *fd_out = mfd;
    return IDEVS_OK;
}

idevs_err idevs_measurement(const uint8_t host[IDEVS_SHA256_LEN], const uint8_t logic[IDEVS_SHA256_LEN],
                            const uint8_t descriptor[IDEVS_SHA256_LEN], uint8_t out[IDEVS_SHA256_LEN])
{
    if (host == NULL || logic == NULL || descriptor == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    const size_t label = sizeof IDEVS_MEASUREMENT_LABEL - 1;
    uint8_t in[sizeof IDEVS_MEASUREMENT_LABEL - 1 + 3 * IDEVS_SHA256_LEN];
    memcpy(in, IDEVS_MEASUREMENT_LABEL, label);
    memcpy(in + label, host, IDEVS_SHA256_LEN);
    memcpy(in + label + IDEVS_SHA256_LEN, logic, IDEVS_SHA256_LEN);
    memcpy(in + label + 2 * IDEVS_SHA256_LEN, descriptor, IDEVS_SHA256_LEN);
    return idevs_sha256(in, sizeof in, out);
}
