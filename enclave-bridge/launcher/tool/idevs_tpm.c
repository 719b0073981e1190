/* idevs-tpm: a host's side of the TPM backend's enrollment (docs/BACKENDS.md, "tpm").
 *
 *   idevs-tpm enroll-request  --tcti T --state-dir D --host NAME --out req.bin
 *   idevs-tpm enroll-activate --tcti T --state-dir D --challenge ch.bin --out resp.bin
 *   idevs-tpm enroll-install  --state-dir D --ak-cert ak.crt
 *
 * D is the broker's plugin_opt_state_dir; the TPM files go to D/tpm/. Exit status 0 on success, 1 on a failure
 * (one line on stderr naming it), 2 on a usage error. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idevs_file.h"
#include "idevs_tpm_host.h"

static int usage(void)
{
    fprintf(stderr, "usage: idevs-tpm enroll-request --tcti T --state-dir D --host NAME --out FILE\n"
                    "       idevs-tpm enroll-activate --tcti T --state-dir D --challenge FILE --out FILE\n"
                    "       idevs-tpm enroll-install --state-dir D --ak-cert FILE\n");
    return 2;
}

/* --name VALUE pairs after the command; unknown names are usage errors. */
static const char *opt(int argc, char **argv, const char *name, bool *bad)
{
    const char *v = NULL;
    for (int i = 2; i < argc; i += 2) {
        if (i + 1 >= argc || strncmp(argv[i], "--", 2) != 0) {
            *bad = true;
            return NULL;
        }
        if (strcmp(argv[i], name) == 0)
            v = argv[i + 1];
    }
    return v;
}

static bool only(int argc, char **argv, const char *const *names)
{
    for (int i = 2; i < argc; i += 2) {
        bool known = false;
        for (const char *const *n = names; *n != NULL; n++)
            known = known || strcmp(argv[i], *n) == 0;
        if (!known) {
            fprintf(stderr, "idevs-tpm %s: unknown option '%s'\n", argv[1], argv[i]);
            return false;
        }
    }
    return true;
}

static int write_out(const char *path, const uint8_t *data, size_t len)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || idevs_file_write_all(fd, data, len) != IDEVS_OK || close(fd) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static uint8_t *read_in(const char *path, size_t max, size_t *len)
{
    const idevs_file_rules rules = {NULL, 1, max, 0, 0};
    uint8_t *data = NULL;
    char why[512];
    if (idevs_file_read(AT_FDCWD, path, &rules, &data, len, why, sizeof why) != IDEVS_OK) {
        fprintf(stderr, "idevs-tpm: %s\n", why);
        return NULL;
    }
    return data;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc % 2 != 0)
        return usage();
    bool bad = false;
    const char *tcti = opt(argc, argv, "--tcti", &bad), *dir = opt(argc, argv, "--state-dir", &bad);
    const char *host = opt(argc, argv, "--host", &bad), *out = opt(argc, argv, "--out", &bad);
    const char *challenge = opt(argc, argv, "--challenge", &bad), *akcert = opt(argc, argv, "--ak-cert", &bad);
    if (bad)
        return usage();
    char why[1024] = "";
    uint8_t *msg = NULL, *in = NULL;
    size_t len = 0, inlen = 0;
    idevs_err err;
    const char *cmd = argv[1];
    if (strcmp(cmd, "enroll-request") == 0) {
        static const char *const names[] = {"--tcti", "--state-dir", "--host", "--out", NULL};
        if (!only(argc, argv, names) || tcti == NULL || dir == NULL || host == NULL || out == NULL)
            return usage();
        err = idevs_tpm_enroll_request(tcti, dir, host, &msg, &len, why, sizeof why);
    } else if (strcmp(cmd, "enroll-activate") == 0) {
        static const char *const names[] = {"--tcti", "--state-dir", "--challenge", "--out", NULL};
        if (!only(argc, argv, names) || tcti == NULL || dir == NULL || challenge == NULL || out == NULL)
            return usage();
        if ((in = read_in(challenge, IDEVS_TPM_MESSAGE_MAX, &inlen)) == NULL)
            return 1;
        err = idevs_tpm_enroll_activate(tcti, dir, in, inlen, &msg, &len, why, sizeof why);
    } else if (strcmp(cmd, "enroll-install") == 0) {
        static const char *const names[] = {"--state-dir", "--ak-cert", NULL};
        if (!only(argc, argv, names) || dir == NULL || akcert == NULL)
            return usage();
        if ((in = read_in(akcert, IDEVS_TPM_MESSAGE_MAX * 2, &inlen)) == NULL)
            return 1;
        err = idevs_tpm_enroll_install(dir, in, inlen, why, sizeof why);
    } else
        return usage();
    free(in);
    if (err != IDEVS_OK) {
        fprintf(stderr, "idevs-tpm %s: %s\n", cmd, why[0] != '\0' ? why : idevs_strerror(err));
        free(msg);
        return 1;
    }
    int rc = msg != NULL ? write_out(out, msg, len) : 0;
    free(msg);
    return rc;
}
