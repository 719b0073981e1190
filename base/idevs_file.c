/* The one bounded file reader (idevs_file.h). */
#include "idevs_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idevs_crypto.h"

/* "key file '/etc/a.key'", or the path alone when the rules name no kind of file. */
typedef struct {
    char text[PATH_MAX + 96];
} label;

static const char *label_of(label *l, const idevs_file_rules *r, const char *path)
{
    if (r->what != NULL)
        snprintf(l->text, sizeof l->text, "%s '%s'", r->what, path);
    else
        snprintf(l->text, sizeof l->text, "%s", path);
    return l->text;
}

static idevs_err refused(const idevs_file_rules *r, idevs_err fallback)
{
    return r->fail != IDEVS_OK ? r->fail : fallback;
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
           : S_ISCHR(mode) || S_ISBLK(mode) ? "a device" : S_ISLNK(mode) ? "a symbolic link" : "something else";
}

/* Why path could not be opened (e is open's errno): a symbolic link where none is allowed, a private file of
 * another user, or the system's reason. */
static idevs_err open_problem(int dirfd, const char *path, const idevs_file_rules *r, int e, char *why,
                              size_t why_len)
{
    label l;
    const char *name = label_of(&l, r, path);
    bool private = (r->flags & IDEVS_FILE_PRIVATE) != 0;
    struct stat st;
    if (e == ELOOP && (r->flags & IDEVS_FILE_NOFOLLOW) != 0 && fstatat(dirfd, path, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
        S_ISLNK(st.st_mode)) {
        char target[256];
        ssize_t n = readlinkat(dirfd, path, target, sizeof target - 1);
        target[n > 0 ? n : 0] = '\0';
        return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s is a symbolic link (to '%s'): name the %s itself%s",
                          name, n > 0 ? target : "?", r->what != NULL ? r->what : "file",
                          private ? ", a regular file of the user that reads it with mode 0600" : "");
    }
    if (e == EACCES && private && fstatat(dirfd, path, &st, 0) == 0 && st.st_uid != geteuid()) {
        char owner[96], reader[96];
        user_of(st.st_uid, owner, sizeof owner);
        user_of(geteuid(), reader, sizeof reader);
        return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO),
                          "%s cannot be read by %s, which loads it: it belongs to %s, mode %04o; a %s must belong to "
                          "the user that reads it, mode 0600 (chown, chmod 600)", name, reader, owner,
                          (unsigned)(st.st_mode & 07777), r->what != NULL ? r->what : "private file");
    }
    return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s: cannot open: %s", name, strerror(e));
}

/* The checks after open: a regular file, private when asked, of a size within the bounds. */
static idevs_err check(const char *path, const idevs_file_rules *r, const struct stat *st, char *why,
                       size_t why_len)
{
    label l;
    const char *name = label_of(&l, r, path);
    if (!S_ISREG(st->st_mode))
        return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s: not a regular file (%s)", name,
                          kind_of(st->st_mode));
    bool other_owner = (r->flags & IDEVS_FILE_OWNED) != 0 && st->st_uid != geteuid();
    if (((r->flags & IDEVS_FILE_PRIVATE) != 0 && (st->st_mode & 077) != 0) || other_owner) {
        char owner[256] = "", o[96], reader[96];
        if (st->st_uid != geteuid()) {
            user_of(st->st_uid, o, sizeof o);
            user_of(geteuid(), reader, sizeof reader);
            snprintf(owner, sizeof owner, " and belongs to %s, not to %s which reads it", o, reader);
        }
        if ((st->st_mode & 077) == 0)
            return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s has mode %04o%s; it must belong to the "
                              "user that reads it (chown)", name, (unsigned)(st->st_mode & 07777), owner);
        return idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO),
                          "%s has mode %04o%s: group or others may %s it; it must be private to the user that reads "
                          "it, mode 0600 (chmod 600%s)", name, (unsigned)(st->st_mode & 07777), owner,
                          (st->st_mode & 044) != 0 ? "read" : "access", st->st_uid != geteuid() ? ", and chown" : "");
    }
    if (st->st_size < 0 || (uintmax_t)st->st_size > r->max)
        return idevs_fail(why, why_len, refused(r, IDEVS_ERR_TOO_LARGE), "%s has %jd bytes, more than %zu", name,
                          (intmax_t)st->st_size, r->max);
    if ((uintmax_t)st->st_size < r->min)
        return st->st_size == 0
                   ? idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s is empty", name)
                   : idevs_fail(why, why_len, refused(r, IDEVS_ERR_IO), "%s has %jd bytes, fewer than %zu", name,
                                (intmax_t)st->st_size, r->min);
    return IDEVS_OK;
}

idevs_err idevs_file_open(int dirfd, const char *path, const idevs_file_rules *rules, int *fd, size_t *size,
                          char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (fd != NULL)
        *fd = -1;
    if (path == NULL || rules == NULL || fd == NULL || rules->min > rules->max)
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_file_open: bad arguments");
    int flags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
    if ((rules->flags & IDEVS_FILE_NOFOLLOW) != 0)
        flags |= O_NOFOLLOW;
    int f = openat(dirfd, path, flags);
    if (f < 0) {
        int e = errno;
        if (e == ENOENT && (rules->flags & IDEVS_FILE_MISSING_OK) != 0)
            return IDEVS_OK;
        return open_problem(dirfd, path, rules, e, why, why_len);
    }
    struct stat st;
    if (fstat(f, &st) != 0) {
        int e = errno;
        close(f);
        label l;
        return idevs_fail(why, why_len, refused(rules, IDEVS_ERR_IO), "%s: cannot stat: %s",
                          label_of(&l, rules, path), strerror(e));
    }
    idevs_err err = check(path, rules, &st, why, why_len);
    if (err != IDEVS_OK) {
        close(f);
        return err;
    }
    *fd = f;
    if (size != NULL)
        *size = (size_t)st.st_size;
    return IDEVS_OK;
}

idevs_err idevs_file_read(int dirfd, const char *path, const idevs_file_rules *rules, uint8_t **data, size_t *len,
                          char *why, size_t why_len)
{
    if (data != NULL)
        *data = NULL;
    if (len != NULL)
        *len = 0;
    if (data == NULL || len == NULL)
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_file_read: bad arguments");
    int fd = -1;
    size_t size = 0;
    idevs_err err = idevs_file_open(dirfd, path, rules, &fd, &size, why, why_len);
    if (err != IDEVS_OK || fd < 0)
        return err;
    uint8_t *buf = malloc(size + 1);
    if (buf == NULL) {
        close(fd);
        return idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
    }
    /* Read what fstat said, then ask for one byte more: a file that grew since is refused, never cut. */
    size_t got = 0;
    label l;
    for (;;) {
        uint8_t extra;
        bool past = got == size;
        ssize_t n = read(fd, past ? &extra : buf + got, past ? 1 : size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err = idevs_fail(why, why_len, IDEVS_ERR_IO, "%s: cannot read: %s", label_of(&l, rules, path),
                             strerror(errno));
            break;
        }
        if (n == 0)
            break;
        if (past) {
            err = idevs_fail(why, why_len, refused(rules, IDEVS_ERR_TOO_LARGE),
                             "%s grew while it was read (beyond %zu bytes)", label_of(&l, rules, path), size);
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    if (err == IDEVS_OK && got < rules->min)
        err = idevs_fail(why, why_len, refused(rules, IDEVS_ERR_IO), "%s shrank to %zu bytes while it was read, "
                         "fewer than %zu", label_of(&l, rules, path), got, rules->min);
    if (err != IDEVS_OK) {
        if ((rules->flags & IDEVS_FILE_SECRET) != 0)
            idevs_cleanse(buf, size + 1);
        free(buf);
        return err;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return IDEVS_OK;
}

idevs_err idevs_file_write_all(int fd, const void *data, size_t len)
{
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 0)
            errno = ENOSPC; /* a regular file that takes nothing more */
        if (n <= 0)
            return IDEVS_ERR_IO;
        p += n;
        len -= (size_t)n;
    }
    return IDEVS_OK;
}
