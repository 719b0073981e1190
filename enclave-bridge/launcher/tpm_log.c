/* The tpm backend's event log: every certification the launcher extended into its register since boot, as
 * fixed records of measurement (32) || program UUID (16) || descriptor digest (32) || key binding (32), oldest
 * first, in <state dir>/tpm/events.pcr<N> (one log per register). A verifier replays it from a zero register (certs/tpm.proto, TpmEvent).
 *
 * An event is written and synced before its extend, so a crash between the two leaves one event too many,
 * never one too few. At each use the log is reconciled with the register: the longest prefix that replays to
 * the register's value is kept. After a reboot the register is zero and the empty prefix is kept: that is how a
 * reboot is detected. When no prefix replays, something else extended the register (or the log was lost): the
 * launcher refuses to certify rather than issue evidence no verifier accepts. The file is locked (flock) while
 * in use, for the processes of one broker, which share it. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "launcher_internal.h"
#include "tpm_internal.h"

idevs_err tpm_event_digest(const uint8_t event[TPM_EVENT_LEN], uint8_t digest[IDEVS_SHA256_LEN])
{
    uint8_t buf[sizeof TPM_EVENT_LABEL - 1 + TPM_EVENT_LEN];
    memcpy(buf, TPM_EVENT_LABEL, sizeof TPM_EVENT_LABEL - 1);
    memcpy(buf + sizeof TPM_EVENT_LABEL - 1, event, TPM_EVENT_LEN);
    return idevs_sha256(buf, sizeof buf, digest);
}

idevs_err tpm_log_replay(const tpm_log *log, size_t n, uint8_t pcr[IDEVS_SHA256_LEN])
{
    uint8_t buf[2 * IDEVS_SHA256_LEN];
    memset(pcr, 0, IDEVS_SHA256_LEN);
    for (size_t i = 0; i < n && i < log->count; i++) {
        memcpy(buf, pcr, IDEVS_SHA256_LEN);
        idevs_err err = tpm_event_digest(log->events[i], buf + IDEVS_SHA256_LEN);
        if (err == IDEVS_OK)
            err = idevs_sha256(buf, sizeof buf, pcr);
        if (err != IDEVS_OK)
            return err;
    }
    return IDEVS_OK;
}

idevs_err tpm_log_open(int dirfd, unsigned pcr, int *fd_out, tpm_log *log, char *why, size_t why_len)
{
    log->events = NULL;
    log->count = 0;
    *fd_out = -1;
    char name[32];
    snprintf(name, sizeof name, TPM_EVENTS, pcr);
    int fd = openat(dirfd, name, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return idevs_fail(why, why_len, IDEVS_ERR_IO, "cannot open the TPM event log '%s': %s", name,
                          strerror(errno));
    struct stat st;
    if (flock(fd, LOCK_EX) != 0 || fstat(fd, &st) != 0) {
        idevs_err err = idevs_fail(why, why_len, IDEVS_ERR_IO, "TPM event log '%s': %s", name, strerror(errno));
        close(fd);
        return err;
    }
    if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0 ||
        st.st_size % TPM_EVENT_LEN != 0 || (size_t)st.st_size > (TPM_EVENTS_MAX + 1) * (size_t)TPM_EVENT_LEN) {
        close(fd);
        return idevs_fail(why, why_len, IDEVS_ERR_MALFORMED,
                          "the TPM event log '%s' is not a private file of ours of whole events (%lld bytes)",
                          name, (long long)st.st_size);
    }
    size_t n = (size_t)st.st_size / TPM_EVENT_LEN;
    log->events = calloc(n + 1, TPM_EVENT_LEN);
    if (log->events == NULL) {
        close(fd);
        return IDEVS_ERR_NOMEM;
    }
    if (n > 0 && pread(fd, log->events, n * TPM_EVENT_LEN, 0) != (ssize_t)(n * TPM_EVENT_LEN)) {
        free(log->events);
        log->events = NULL;
        close(fd);
        return idevs_fail(why, why_len, IDEVS_ERR_IO, "cannot read the TPM event log '%s'", name);
    }
    log->count = n;
    *fd_out = fd;
    return IDEVS_OK;
}

idevs_err tpm_log_reconcile(int fd, tpm_log *log, const uint8_t pcr[IDEVS_SHA256_LEN], unsigned pcr_index,
                            char *why, size_t why_len)
{
    uint8_t value[IDEVS_SHA256_LEN];
    for (size_t n = log->count + 1; n-- > 0;) {
        idevs_err err = tpm_log_replay(log, n, value);
        if (err != IDEVS_OK)
            return idevs_fail(why, why_len, err, "replaying the TPM event log failed");
        if (CRYPTO_memcmp(value, pcr, IDEVS_SHA256_LEN) != 0)
            continue;
        if (n != log->count) {
            if (ftruncate(fd, (off_t)(n * TPM_EVENT_LEN)) != 0 || fdatasync(fd) != 0)
                return idevs_fail(why, why_len, IDEVS_ERR_IO, "cannot shorten the TPM event log of PCR %u: %s",
                                  pcr_index, strerror(errno));
            log->count = n;
        }
        return IDEVS_OK;
    }
    return idevs_fail(why, why_len, IDEVS_ERR_IO,
                      "PCR %u holds a value the TPM event log does not replay to: another program extends it, or "
                      "the log '" TPM_EVENTS "' was lost; choose another register (plugin_opt_tpm_pcr) or reboot",
                      pcr_index, pcr_index);
}

idevs_err tpm_log_append(int fd, tpm_log *log, const uint8_t event[TPM_EVENT_LEN], char *why, size_t why_len)
{
    if (log->count >= TPM_EVENTS_MAX)
        return idevs_fail(why, why_len, IDEVS_ERR_TOO_LARGE,
                          "the TPM event log holds %d certifications of distinct keys since boot, the most one "
                          "report carries: no more until the host reboots (docs/BACKENDS.md, \"tpm\")",
                          TPM_EVENTS_MAX);
    if (pwrite(fd, event, TPM_EVENT_LEN, (off_t)(log->count * TPM_EVENT_LEN)) != TPM_EVENT_LEN || fdatasync(fd) != 0)
        return idevs_fail(why, why_len, IDEVS_ERR_IO, "cannot append to the TPM event log: %s", strerror(errno));
    memcpy(log->events[log->count], event, TPM_EVENT_LEN);
    log->count++;
    return IDEVS_OK;
}

void tpm_log_close(int fd, tpm_log *log)
{
    if (fd >= 0)
        close(fd); /* releases the lock */
    free(log->events);
    log->events = NULL;
    log->count = 0;
}
