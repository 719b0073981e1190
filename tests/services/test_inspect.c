/* Keyless inspection of hostile envelopes (proto/tool/idevs_inspect.c, as idevs-sub --inspect and
 * idevs-envelope inspect print them): text the sender chose — a certificate's urn:uuid name, a topic — must
 * not reach the report as line breaks or terminal escapes, which would let a sender forge lines of the report
 * (a hardware backend that is not there). Prints one "ok - ..." or "not ok - ..." line per check and
 * "N passed, M failed" last. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "idevs.pb-c.h"
#include "idevs_inspect.h"
#include "tap.h"

/* A self-signed Ed25519 certificate whose subjectAltName URI is uri (len bytes, any bytes). */
static int hostile_cert(const char *uri, size_t len, uint8_t **der)
{
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    X509 *x = X509_new();
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *s = ASN1_IA5STRING_new();
    int n = -1;
    if (key != NULL && x != NULL && names != NULL && gn != NULL && s != NULL && ASN1_STRING_set(s, uri, (int)len) &&
        X509_set_version(x, 2) && ASN1_INTEGER_set(X509_get_serialNumber(x), 1) &&
        X509_gmtime_adj(X509_getm_notBefore(x), 0) && X509_gmtime_adj(X509_getm_notAfter(x), 3600) &&
        X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN", MBSTRING_ASC, (const unsigned char *)"evil\n  x",
                                   -1, -1, 0) &&
        X509_set_issuer_name(x, X509_get_subject_name(x)) && X509_set_pubkey(x, key)) {
        GENERAL_NAME_set0_value(gn, GEN_URI, s);
        s = NULL;
        if (sk_GENERAL_NAME_push(names, gn) > 0) {
            gn = NULL;
            if (X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0) == 1 && X509_sign(x, key, NULL) > 0)
                n = i2d_X509(x, der);
        }
    }
    ASN1_IA5STRING_free(s);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    X509_free(x);
    EVP_PKEY_free(key);
    return n;
}

/* Everything printed for an envelope whose sender chain is [der]. */
static char *inspect(const uint8_t *der, size_t der_len)
{
    uint8_t id[16] = {1}, key[32] = {2}, sig[64] = {3}, ct[32] = {4};
    ProtobufCBinaryData chain = {der_len, (uint8_t *)der};
    Idevs__V1__Envelope env = IDEVS__V1__ENVELOPE__INIT;
    env.version = 1;
    env.suite = 1;
    env.sender = (ProtobufCBinaryData){16, id};
    env.recipient = (ProtobufCBinaryData){16, id};
    env.message_id = (ProtobufCBinaryData){16, id};
    env.epoch = 1;
    env.sequence = 1;
    env.ephemeral_key = (ProtobufCBinaryData){32, key};
    env.epoch_signature = (ProtobufCBinaryData){64, sig};
    env.n_sender_chain = 1;
    env.sender_chain = &chain;
    env.ciphertext = (ProtobufCBinaryData){sizeof ct, ct};
    size_t len = idevs__v1__envelope__get_packed_size(&env);
    uint8_t *buf = malloc(len);
    if (buf == NULL)
        return NULL;
    idevs__v1__envelope__pack(&env, buf);
    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    if (f != NULL) {
        idevs_inspect_envelope(f, buf, len, 2);
        fclose(f);
    }
    free(buf);
    return text;
}

static bool has_control(const char *s)
{
    for (; *s != '\0'; s++)
        if (((unsigned char)*s < 0x20 && *s != '\n') || *s == 0x7f)
            return true;
    return false;
}

int main(void)
{
    /* 36 bytes after "urn:uuid:", as a UUID would be: a line break and a forged evidence line instead */
    static const char forged[] = "urn:uuid:\n    evidence: backend sgx \x1b[2J\x1b]0;x";
    uint8_t *der = NULL;
    int n = hostile_cert(forged, sizeof forged - 1, &der);
    tap_check(n > 0 && sizeof forged - 1 == 9 + 36, "a certificate with a 36-byte urn:uuid name holding a forged line");
    char *out = n > 0 ? inspect(der, (size_t)n) : NULL;
    tap_check(out != NULL && strstr(out, "certificate 0:") != NULL, "it is inspected");
    if (out != NULL) {
        printf("# %s", out);
        tap_check(strstr(out, "evidence: backend sgx") == NULL, "... and the report holds no forged evidence line");
        tap_check(!has_control(out), "... and no control character or terminal escape");
        tap_check(strstr(out, "uuid        (not a UUID)") != NULL, "... the name is reported as not a UUID");
    }
    free(out);
    OPENSSL_free(der);

    char *text = NULL;
    size_t text_len = 0;
    FILE *f = open_memstream(&text, &text_len);
    idevs_inspect_print_text(f, "idevs/a\n\x1b[31mb\\c", 1024);
    fputc('|', f);
    idevs_inspect_print_text(f, "abcdef", 3);
    fclose(f);
    tap_check(text != NULL && strcmp(text, "idevs/a\\x0a\\x1b[31mb\\x5cc|abc...") == 0,
              "a topic is printed with control characters and backslashes as \\xHH, cut at its limit");
    free(text);
    return tap_finish();
}
