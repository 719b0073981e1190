/* The one way idevs reads a file whole (keys, certificates, descriptors, state files, images, configuration).
 *
 * The rule, for every file:
 *   - opened O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY: a FIFO in the file's place never blocks the reader
 *     (it is refused, below), a terminal never becomes the controlling one;
 *   - with IDEVS_FILE_NOFOLLOW (where a private file is expected: keys, state files) a final symbolic link is
 *     refused (O_NOFOLLOW), and the sentence says where it points;
 *   - a regular file only: a FIFO, a directory, a device or a socket is refused, and the sentence says which;
 *   - its size is checked with fstat against [min, max], and again while reading: a file that grows past the
 *     size fstat gave is refused, never cut; one that shrinks below min is refused too;
 *   - with IDEVS_FILE_PRIVATE no group or other permission bit may be set, with IDEVS_FILE_OWNED the file must
 *     belong to the effective uid (both for key and state files);
 *   - every failure writes one sentence into why that names the file ("key file '/etc/x.key' has mode 0644: ...",
 *     or "PATH: ..." when the rules name no kind of file) and the problem.
 * Error codes: the rules' `fail` code for a refused file (0: IDEVS_ERR_IO, and IDEVS_ERR_TOO_LARGE for the
 * size), IDEVS_ERR_IO when read(2) fails, IDEVS_ERR_NOMEM, IDEVS_ERR_INVALID_ARG. */
#ifndef IDEVS_FILE_H
#define IDEVS_FILE_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"

#define IDEVS_FILE_NOFOLLOW 0x1u   /* refuse a final symbolic link */
#define IDEVS_FILE_PRIVATE 0x2u    /* refuse any group or other permission bit (mode 0600 or stricter) */
#define IDEVS_FILE_OWNED 0x4u      /* refuse a file that does not belong to the effective uid */
#define IDEVS_FILE_MISSING_OK 0x8u /* a missing file is IDEVS_OK with *fd -1 (open) or *data NULL (read) */
#define IDEVS_FILE_SECRET 0x10u    /* key material: the buffer is cleansed before it is freed on failure */

typedef struct idevs_file_rules {
    const char *what; /* the kind of file, for why: "key file", "descriptor"; NULL: the path alone */
    size_t min, max;  /* inclusive size bounds in bytes */
    unsigned flags;   /* IDEVS_FILE_* */
    idevs_err fail;   /* the code of a refused file; 0: IDEVS_ERR_IO (IDEVS_ERR_TOO_LARGE for the size) */
} idevs_file_rules;

/* Opens path (relative to dirfd unless absolute; AT_FDCWD for the working directory) and applies the rules up
 * to the size: *fd is an open regular file of *size bytes (size may be NULL), positioned at its start, which
 * the caller closes. For readers that keep their own shape (a copy into a memfd, a line-by-line parser);
 * they refuse growth themselves. */
idevs_err idevs_file_open(int dirfd, const char *path, const idevs_file_rules *rules, int *fd, size_t *size,
                          char *why, size_t why_len);

/* Reads the whole file under the rules into a malloc'd buffer of *len bytes, followed by a NUL byte that *len
 * does not count (text can be parsed in place). The caller frees it (cleansing it first when it is secret). */
idevs_err idevs_file_read(int dirfd, const char *path, const idevs_file_rules *rules, uint8_t **data, size_t *len,
                          char *why, size_t why_len);

/* Writes all of data[0..len) to fd, going on after short writes and EINTR: the one write loop for the files idevs
 * writes (keys, sealed state). IDEVS_ERR_IO with errno set by write(2), or ENOSPC when it took nothing more. */
idevs_err idevs_file_write_all(int fd, const void *data, size_t len);

#endif
