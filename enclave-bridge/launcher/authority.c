/* The attestation authority and the operator CA, read from PEM files once per broker and lent to every
 * launcher. Whether they belong together (the CA pinned by each descriptor, the authority issued by it) is
 * checked per launcher, in idevs_launcher_new(). */
#include <stdio.h>
#include <string.h>

#include "idevs_cert.h"
#include "idevs_identity.h"
#include "launcher_internal.h"

/* The first certificate of a PEM file of at most max certificates (the one chain reader's rule). */
static X509 *read_cert(const char *path, size_t max, char *why, size_t why_len)
{
    X509 *certs[IDEVS_CHAIN_MAX];
    size_t n = 0;
    if (idevs_cert_read_chain_file_x509(path, certs, max, &n, why, why_len) != IDEVS_OK)
        return NULL;
    for (size_t i = 1; i < n; i++)
        X509_free(certs[i]);
    return certs[0];
}

idevs_err idevs_launcher_authority_load(const char *key_path, const char *cert_path, const char *operator_ca_path,
                                        idevs_launcher_authority *out, int *failed, char *why, size_t why_len)
{
    char sink[8];
    idevs_why_or_sink(&why, &why_len, sink, sizeof sink);
    int which = 0;
    if (failed == NULL)
        failed = &which;
    if (out == NULL || key_path == NULL || cert_path == NULL || operator_ca_path == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if ((out->operator_ca = read_cert(operator_ca_path, 1, why, why_len)) == NULL) {
        *failed = 2;
        return IDEVS_ERR_CONFIG;
    }
    if ((out->cert = read_cert(cert_path, IDEVS_CHAIN_MAX, why, why_len)) == NULL) {
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
