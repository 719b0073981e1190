/* The Evidence message (proto/idevs.proto): encoding, decoding with size checks, the key binding, and the
 * names of the backends. */
#include <stdlib.h>
#include <string.h>

#include "certs_internal.h"
#include "evidence.pb-c.h"

#define KEY_BINDING_LABEL "idevs key binding v1"

_Static_assert(sizeof KEY_BINDING_LABEL - 1 == 20, "the key binding label is 20 bytes");
_Static_assert((int)IDEVS_BACKEND_PROCESS == (int)IDEVS__V1__BACKEND__BACKEND_PROCESS &&
                   (int)IDEVS_BACKEND_TPM == (int)IDEVS__V1__BACKEND__BACKEND_TPM,
               "idevs_backend values equal idevs.v1.Backend");

static const char *const backend_names[] = {
    [IDEVS_BACKEND_PROCESS] = "process", [IDEVS_BACKEND_SGX] = "sgx",     [IDEVS_BACKEND_TDX] = "tdx",
    [IDEVS_BACKEND_SEV_SNP] = "sev-snp", [IDEVS_BACKEND_NITRO] = "nitro", [IDEVS_BACKEND_CHERI] = "cheri",
    [IDEVS_BACKEND_TPM] = "tpm",
};

#define BACKEND_MIN IDEVS_BACKEND_PROCESS
#define BACKEND_MAX IDEVS_BACKEND_TPM

const char *idevs_backend_name(idevs_backend backend)
{
    if ((int)backend < BACKEND_MIN || (int)backend > BACKEND_MAX)
        return NULL;
    return backend_names[backend];
}

idevs_err idevs_backend_parse(const char *name, idevs_backend *out)
{
    if (name == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    for (int b = BACKEND_MIN; b <= BACKEND_MAX; b++) {
        if (strcmp(name, backend_names[b]) == 0) {
            *out = (idevs_backend)b;
            return IDEVS_OK;
        }
    }
    return IDEVS_ERR_INVALID_ARG;
}

idevs_err idevs_key_binding(const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN], const uint8_t kex_pub[IDEVS_X25519_LEN],
                            uint8_t out[IDEVS_SHA256_LEN])
{
    uint8_t buf[sizeof KEY_BINDING_LABEL - 1 + IDEVS_ED25519_PUB_LEN + IDEVS_X25519_LEN];
    if (sign_pub == NULL || kex_pub == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memcpy(buf, KEY_BINDING_LABEL, sizeof KEY_BINDING_LABEL - 1);
    memcpy(buf + sizeof KEY_BINDING_LABEL - 1, sign_pub, IDEVS_ED25519_PUB_LEN);
    memcpy(buf + sizeof KEY_BINDING_LABEL - 1 + IDEVS_ED25519_PUB_LEN, kex_pub, IDEVS_X25519_LEN);
    return idevs_sha256(buf, sizeof buf, out);
}

idevs_err certs_evidence_check(const idevs_evidence *ev, const char **reason)
{
    const char *r = NULL;
    if (idevs_backend_name(ev->backend) == NULL)
        r = "unknown isolation backend";
    else if (ev->nonce_len < IDEVS_EVIDENCE_NONCE_MIN || ev->nonce_len > IDEVS_EVIDENCE_NONCE_MAX)
        r = "nonce is not 16 to 64 bytes";
    else if (ev->hardware_report_len > IDEVS_HARDWARE_REPORT_MAX)
        r = "hardware report is larger than the limit";
    else if (ev->hardware_report_len > 0 && ev->hardware_report == NULL)
        r = "hardware report length without data";
    else if ((ev->flags & ~IDEVS_EVIDENCE_FLAG_DEBUG) != 0)
        r = "reserved flag bits are set";
    if (reason != NULL)
        *reason = r;
    return r == NULL ? IDEVS_OK : IDEVS_ERR_EVIDENCE_MALFORMED;
}

idevs_err certs_evidence_encode(const idevs_evidence *ev, uint8_t **out, size_t *out_len)
{
    Idevs__V1__Evidence msg = IDEVS__V1__EVIDENCE__INIT;
    idevs_err err = certs_evidence_check(ev, NULL);
    if (err != IDEVS_OK)
        return err;
    /* protobuf-c takes non-const data pointers but only reads them when packing. */
    msg.version = 1;
    msg.backend = (Idevs__V1__Backend)ev->backend;
    msg.measurement.data = (uint8_t *)ev->measurement;
    msg.measurement.len = IDEVS_SHA256_LEN;
    msg.program_uuid.data = (uint8_t *)ev->program_uuid.b;
    msg.program_uuid.len = IDEVS_UUID_LEN;
    msg.descriptor_digest.data = (uint8_t *)ev->descriptor_digest;
    msg.descriptor_digest.len = IDEVS_SHA256_LEN;
    msg.key_binding.data = (uint8_t *)ev->key_binding;
    msg.key_binding.len = IDEVS_SHA256_LEN;
    msg.issued_at = ev->issued_at;
    msg.nonce.data = (uint8_t *)ev->nonce;
    msg.nonce.len = ev->nonce_len;
    msg.flags = ev->flags;
    msg.hardware_report.data = (uint8_t *)ev->hardware_report;
    msg.hardware_report.len = ev->hardware_report_len;

    size_t len = idevs__v1__evidence__get_packed_size(&msg);
    if (len == 0 || len > CERTS_EVIDENCE_ENCODED_MAX)
        return IDEVS_ERR_TOO_LARGE;
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return IDEVS_ERR_NOMEM;
    if (idevs__v1__evidence__pack(&msg, buf) != len) {
        free(buf);
        return IDEVS_ERR_CRYPTO;
    }
    *out = buf;
    *out_len = len;
    return IDEVS_OK;
}

static bool exact(const ProtobufCBinaryData *b, size_t len)
{
    return b->len == len && (len == 0 || b->data != NULL);
}

idevs_err certs_evidence_decode(const uint8_t *data, size_t len, idevs_evidence *out, const char **reason)
{
    return certs_evidence_decode_report(data, len, out, NULL, reason);
}

idevs_err certs_evidence_decode_report(const uint8_t *data, size_t len, idevs_evidence *out, uint8_t **report,
                                       const char **reason)
{
    const char *r = NULL;
    memset(out, 0, sizeof *out);
    if (report != NULL)
        *report = NULL;
    if (len == 0) {
        *reason = "the evidence extension is empty";
        return IDEVS_ERR_EVIDENCE_MALFORMED;
    }
    if (len > CERTS_EVIDENCE_ENCODED_MAX) {
        *reason = "the evidence extension is larger than the limit";
        return IDEVS_ERR_EVIDENCE_MALFORMED;
    }
    Idevs__V1__Evidence *msg = idevs__v1__evidence__unpack(NULL, len, data);
    if (msg == NULL) {
        *reason = "the evidence is not a valid idevs.v1.Evidence message";
        return IDEVS_ERR_EVIDENCE_MALFORMED;
    }
    /* A field this version does not know could claim something no check here looks at: refused, as in an
     * Envelope. */
    if (msg->base.n_unknown_fields != 0)
        r = "the evidence has an unknown field (a number idevs.v1.Evidence does not declare)";
    else if (msg->version != 1)
        r = "the evidence has an unknown version";
    else if ((int)msg->backend < BACKEND_MIN || (int)msg->backend > BACKEND_MAX)
        r = "the evidence names an unknown isolation backend";
    else if (!exact(&msg->measurement, IDEVS_SHA256_LEN))
        r = "the evidence measurement is not 32 bytes";
    else if (!exact(&msg->program_uuid, IDEVS_UUID_LEN))
        r = "the evidence program UUID is not 16 bytes";
    else if (!exact(&msg->descriptor_digest, IDEVS_SHA256_LEN))
        r = "the evidence descriptor digest is not 32 bytes";
    else if (!exact(&msg->key_binding, IDEVS_SHA256_LEN))
        r = "the evidence key binding is not 32 bytes";
    else if (msg->nonce.len < IDEVS_EVIDENCE_NONCE_MIN || msg->nonce.len > IDEVS_EVIDENCE_NONCE_MAX)
        r = "the evidence nonce is not 16 to 64 bytes";
    else if (msg->hardware_report.len > IDEVS_HARDWARE_REPORT_MAX)
        r = "the evidence hardware report is larger than the limit";
    else if ((msg->flags & ~IDEVS_EVIDENCE_FLAG_DEBUG) != 0)
        r = "the evidence sets reserved flag bits";
    if (r == NULL) {
        out->backend = (idevs_backend)msg->backend;
        memcpy(out->measurement, msg->measurement.data, IDEVS_SHA256_LEN);
        memcpy(out->program_uuid.b, msg->program_uuid.data, IDEVS_UUID_LEN);
        memcpy(out->descriptor_digest, msg->descriptor_digest.data, IDEVS_SHA256_LEN);
        memcpy(out->key_binding, msg->key_binding.data, IDEVS_SHA256_LEN);
        out->issued_at = msg->issued_at;
        memcpy(out->nonce, msg->nonce.data, msg->nonce.len);
        out->nonce_len = msg->nonce.len;
        out->flags = msg->flags;
        out->hardware_report = NULL;
        out->hardware_report_len = msg->hardware_report.len;
        if (report != NULL && msg->hardware_report.len > 0) {
            *report = malloc(msg->hardware_report.len);
            if (*report == NULL) {
                idevs__v1__evidence__free_unpacked(msg, NULL);
                memset(out, 0, sizeof *out);
                *reason = "out of memory copying the hardware report";
                return IDEVS_ERR_NOMEM;
            }
            memcpy(*report, msg->hardware_report.data, msg->hardware_report.len);
        }
    }
    idevs__v1__evidence__free_unpacked(msg, NULL);
    if (r != NULL) {
        memset(out, 0, sizeof *out);
        *reason = r;
        return IDEVS_ERR_EVIDENCE_MALFORMED;
    }
    return IDEVS_OK;
}

idevs_err idevs_cert_read_evidence(X509 *cert, idevs_evidence *out)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    const char *reason = NULL;
    if (cert == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    idevs_err err = certs_get_octets_ext(cert, IDEVS_OID_EVIDENCE, &data, &len);
    if (err == IDEVS_ERR_MALFORMED)
        return IDEVS_ERR_EVIDENCE_MALFORMED;
    if (err != IDEVS_OK)
        return err;
    return certs_evidence_decode(data, len, out, &reason);
}
