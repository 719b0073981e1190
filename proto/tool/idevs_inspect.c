/* Keyless inspection of idevs envelopes (idevs_inspect.h). Decodes the protobuf and the carried certificates;
 * verifies nothing and opens nothing. */
#include <inttypes.h>
#include <string.h>
#include <time.h>

#include <openssl/x509v3.h>

#include "idevs.pb-c.h"
#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_hex.h"
#include "idevs_inspect.h"

static void hex(FILE *f, const uint8_t *b, size_t n)
{
    char text[2 * 64 + 1];
    for (size_t i = 0; i < n; i += 64) {
        size_t k = n - i < 64 ? n - i : 64;
        idevs_hex_encode(b + i, k, text);
        fputs(text, f);
    }
}

static void print_uuid(FILE *f, const uint8_t *b, size_t n)
{
    if (n != IDEVS_UUID_LEN) {
        fprintf(f, "(invalid, %zu bytes)", n);
        return;
    }
    char text[IDEVS_UUID_STR_LEN];
    idevs_uuid_format((const idevs_uuid *)b, text);
    fputs(text, f);
}

static void print_time_ms(FILE *f, uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    char text[32];
    if (gmtime_r(&t, &tm) != NULL && strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S", &tm) > 0)
        fprintf(f, "%s.%03u UTC", text, (unsigned)(ms % 1000));
    else
        fprintf(f, "%" PRIu64 " ms", ms);
}

/* The urn:uuid subjectAltName of cert, printed; "(none)" when absent. */
static void print_san_uuid(FILE *f, X509 *cert)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    bool found = false;
    for (int i = 0; names != NULL && i < sk_GENERAL_NAME_num(names) && !found; i++) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        static const char prefix[] = "urn:uuid:";
        if (n == (int)(sizeof prefix - 1) + 36 && memcmp(s, prefix, sizeof prefix - 1) == 0) {
            /* The sender's bytes: printed only as the UUID they parse to, never as they are (a line break or a
             * terminal escape there would forge lines of this report). */
            char text[37];
            idevs_uuid u;
            memcpy(text, s + sizeof prefix - 1, 36);
            text[36] = '\0';
            if (idevs_uuid_parse(text, &u) == IDEVS_OK) {
                idevs_uuid_format(&u, text);
                fputs(text, f);
            } else {
                fputs("(not a UUID)", f);
            }
            found = true;
        }
    }
    GENERAL_NAMES_free(names);
    if (!found)
        fputs("(none)", f);
}

void idevs_inspect_print_text(FILE *f, const char *s, size_t max)
{
    size_t i = 0;
    for (; s != NULL && s[i] != '\0' && i < max; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c <= 0x7e && c != '\\')
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
    if (s != NULL && s[i] != '\0')
        fputs("...", f);
}

static void print_certificate(FILE *f, const char *pad, const uint8_t *der, size_t len, size_t index)
{
    const uint8_t *p = der;
    X509 *cert = len <= IDEVS_CERT_MAX ? d2i_X509(NULL, &p, (long)len) : NULL;
    fprintf(f, "%s  certificate %zu: %zu bytes", pad, index, len);
    if (cert == NULL || p != der + len) {
        fprintf(f, ", not parseable as X.509\n");
        X509_free(cert);
        return;
    }
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof subject);
    fprintf(f, ", subject %s\n%s    uuid        ", subject, pad);
    print_san_uuid(f, cert);
    fputc('\n', f);
    idevs_evidence ev;
    if (idevs_cert_read_evidence(cert, &ev) == IDEVS_OK) {
        const char *backend = idevs_backend_name(ev.backend);
        fprintf(f, "%s    evidence: backend %s%s, program ", pad, backend ? backend : "?",
                ev.backend == IDEVS_BACKEND_PROCESS ? " (no hardware isolation)" : "");
        print_uuid(f, ev.program_uuid.b, IDEVS_UUID_LEN);
        fprintf(f, "\n%s    measurement ", pad);
        hex(f, ev.measurement, sizeof ev.measurement);
        fprintf(f, "\n%s    descriptor  ", pad);
        hex(f, ev.descriptor_digest, sizeof ev.descriptor_digest);
        fprintf(f, "\n%s    flags 0x%x%s\n", pad, ev.flags, ev.flags & IDEVS_EVIDENCE_FLAG_DEBUG ? " (debug)" : "");
    }
    X509_free(cert);
}

idevs_err idevs_inspect_envelope(FILE *f, const uint8_t *data, size_t len, unsigned indent)
{
    if (f == NULL || (data == NULL && len > 0))
        return IDEVS_ERR_INVALID_ARG;
    char pad[17];
    indent = indent > 16 ? 16 : indent;
    memset(pad, ' ', indent);
    pad[indent] = '\0';
    Idevs__V1__Envelope *env = len > 0 ? idevs__v1__envelope__unpack(NULL, len, data) : NULL;
    if (env == NULL)
        return IDEVS_ERR_MALFORMED;
    fprintf(f, "%senvelope: %zu bytes, version %u, suite %u (%s)\n", pad, len, env->version, env->suite,
            env->suite == IDEVS_SUITE_X25519_AES256GCM         ? "X25519/HKDF-SHA256/AES-256-GCM/Ed25519"
            : env->suite == IDEVS_SUITE_X25519_CHACHA20POLY1305 ? "X25519/HKDF-SHA256/ChaCha20-Poly1305/Ed25519"
                                                               : "unknown");
    fprintf(f, "%s  sender     ", pad);
    print_uuid(f, env->sender.data, env->sender.len);
    fprintf(f, "\n%s  recipient  ", pad);
    print_uuid(f, env->recipient.data, env->recipient.len);
    fprintf(f, "\n%s  message id ", pad);
    hex(f, env->message_id.data, env->message_id.len);
    fprintf(f, "\n%s  epoch      %" PRIu64 " (", pad, env->epoch);
    print_time_ms(f, env->epoch);
    fprintf(f, ")\n%s  sequence   %" PRIu64 "\n", pad, env->sequence);
    fprintf(f, "%s  instance   %" PRIu32 "\n", pad, env->instance);
    fprintf(f, "%s  ephemeral  ", pad);
    hex(f, env->ephemeral_key.data, env->ephemeral_key.len);
    fputc('\n', f);
    if (env->n_sender_chain > 0) {
        fprintf(f, "%s  sender chain: %zu certificate(s)\n", pad, env->n_sender_chain);
        for (size_t i = 0; i < env->n_sender_chain; i++)
            print_certificate(f, pad, env->sender_chain[i].data, env->sender_chain[i].len, i);
    } else {
        fprintf(f, "%s  sender certificate digest ", pad);
        hex(f, env->sender_cert_digest.data, env->sender_cert_digest.len);
        fputc('\n', f);
    }
    /* Version 2 seals the provenance; only a version 1 envelope (refused by receivers) shows it in the clear. */
    if (env->n_provenance == 0)
        fprintf(f, "%s  provenance: sealed in the ciphertext\n", pad);
    else
        fprintf(f, "%s  provenance in the clear (version 1): %zu input(s)\n", pad, env->n_provenance);
    for (size_t i = 0; i < env->n_provenance; i++) {
        fprintf(f, "%s    ", pad);
        hex(f, env->provenance[i].data, env->provenance[i].len);
        fputc('\n', f);
    }
    fprintf(f, "%s  ciphertext: %zu bytes (provenance, payload and padding: %zu bytes + 16-byte tag), unreadable "
               "without the recipient's key\n",
            pad, env->ciphertext.len,
            env->ciphertext.len >= IDEVS_AEAD_TAG_LEN ? env->ciphertext.len - IDEVS_AEAD_TAG_LEN : 0);
    idevs__v1__envelope__free_unpacked(env, NULL);
    return IDEVS_OK;
}
