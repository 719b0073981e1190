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

#include "idevs_file.h"
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
    /* The one bounded file reader's open (idevs_file.h): a regular file (a FIFO is refused without waiting for
     * a writer) of 1..IDEVS_IMAGE_FILE_MAX bytes. */
    const idevs_file_rules rules = {label, 1, IDEVS_IMAGE_FILE_MAX, 0, IDEVS_OK};
    int src = -1;
    size_t size = 0;
    idevs_err opened = idevs_file_open(AT_FDCWD, path, &rules, &src, &size, why, why_len);
    if (opened != IDEVS_OK)
        return opened;
    struct stat st = {0};
    int mfd = create_memfd(label, executable);
    if (mfd < 0) {
        snprintf(why, why_len, "%s: memfd_create: %s", label, strerror(errno));
        close(src);
        return IDEVS_ERR_IO;
    }
    /* Copy until end of file; what ends up in the memfd is what gets hashed and run. A file that grows past
     * the size fstat gave is refused, never cut (the reader's rule). */
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
        if ((size_t)n > size - total) {
            snprintf(why, why_len, "%s '%s' grew while it was read (beyond %zu bytes)", label, path, size);
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
