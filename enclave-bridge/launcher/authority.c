/* The attestation authority and the operator CA, read from PEM files once per broker and lent to every
 * launcher. Whether they belong together (the CA pinned by each descriptor, the authority issued by it) is
 * checked per launcher, in idevs_launcher_new(). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "idevs_identity.h"
#include "launcher_internal.h"

/* Exactly the first certificate of a PEM file. */
static X509 *read_cert(const char *path, char *why, size_t why_len)
{
    /* O_NONBLOCK: a FIFO there is refused at once instead of holding the broker's start. */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        if (fd < 0)
            snprintf(why, why_len, "cannot open '%s': %s", path, strerror(errno));
        else
            snprintf(why, why_len, "'%s' is not a regular file", path);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "r");
    if (f == NULL) {
        snprintf(why, why_len, "cannot read '%s': %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    ERR_clear_error();
    if (x == NULL)
        snprintf(why, why_len, "'%s' holds no PEM certificate", path);
    return x;
}

idevs_err idevs_launcher_authority_load(const char *key_path, const char *cert_path, const char *operator_ca_path,
                                        idevs_launcher_authority *out, int *failed, char *why, size_t why_len)
{
    char sink[8];
    if (why == NULL || why_len == 0) {
        why = sink;
        why_len = sizeof sink;
    }
    int which = 0;
    if (failed == NULL)
        failed = &which;
    if (out == NULL || key_path == NULL || cert_path == NULL || operator_ca_path == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if ((out->operator_ca = read_cert(operator_ca_path, why, why_len)) == NULL) {
        *failed = 2;
        return IDEVS_ERR_CONFIG;
    }
    if ((out->cert = read_cert(cert_path, why, why_len)) == NULL) {
        *failed = 1;
        idevs_launcher_authority_clear(out);
        return IDEVS_ERR_CONFIG;
    }
    char reason[512] = "";
    idevs_err err = idevs_identity_load_why(key_path, cert_path, &out->identity, reason, sizeof reason);
    if (err != IDEVS_OK) {
        *failed = 0;
        snprintf(why, why_len, "cannot load '%s' with certificate '%s': %s", key_path, cert_path,
                 reason[0] != '\0' ? reason : idevs_strerror(err));
        idevs_launcher_authority_clear(out);
        return err;
    }
    return IDEVS_OK;
}

void idevs_launcher_authority_clear(idevs_launcher_authority *a)
{
    if (a == NULL)
        return;
    idevs_identity_free(a->identity);
    X509_free(a->cert);
    X509_free(a->operator_ca);
    memset(a, 0, sizeof *a);
}
