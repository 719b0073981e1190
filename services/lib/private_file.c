/* idevs_service_private_file (idevs_service.h): files of personal data are created readable by their owner
 * only. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idevs_service.h"

int idevs_service_private_file(const char *path, char *why, size_t why_len)
{
    if (path == NULL || path[0] == '\0') {
        if (why != NULL && why_len > 0)
            snprintf(why, why_len, "no file name");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
    if (fd >= 0)
        return close(fd) == 0 ? 1 : 0;
    if (errno == EEXIST)
        return 0; /* there already: its mode is the owner's choice */
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "%s: %s", path, strerror(errno));
    return -1;
}
