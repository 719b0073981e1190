/* The idevs parts of a certificate: the two custom extensions (agreement key, evidence), the urn:uuid
 * subjectAltName and the CN name; building and reading them. */
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/objects.h>
#include <openssl/x509v3.h>

#include "certs_internal.h"

/* OBJ_txt2obj with no_name=1 only parses the dotted form: no table lookup, no global state to initialise. */
static ASN1_OBJECT *oid_object(const char *oid)
{
    return OBJ_txt2obj(oid, 1);
}

X509 *certs_parse_der(const uint8_t *der, size_t len)
{
    if (der == NULL || len == 0 || len > IDEVS_CERT_MAX)
        return NULL;
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    if (cert != NULL && p != der + len) {
        X509_free(cert);
        cert = NULL;
    }
    return cert;
}

idevs_err certs_add_octets_ext(X509 *cert, const char *oid, const uint8_t *data, size_t len)
{
    idevs_err err = IDEVS_ERR_NOMEM;
    ASN1_OBJECT *obj = oid_object(oid);
    ASN1_OCTET_STRING *inner = ASN1_OCTET_STRING_new();
    ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    unsigned char *der = NULL;
    if (len > INT32_MAX)
        err = IDEVS_ERR_TOO_LARGE;
    else if (obj == NULL || inner == NULL || value == NULL)
        err = IDEVS_ERR_NOMEM;
    else if (ASN1_OCTET_STRING_set(inner, data, (int)len) != 1)
        err = IDEVS_ERR_NOMEM;
    else {
        int der_len = i2d_ASN1_OCTET_STRING(inner, &der);
        if (der_len <= 0 || ASN1_OCTET_STRING_set(value, der, der_len) != 1)
            err = IDEVS_ERR_CRYPTO;
        else if ((ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value)) == NULL)
            err = IDEVS_ERR_NOMEM;
        else if (X509_add_ext(cert, ext, -1) != 1)
            err = IDEVS_ERR_CRYPTO;
        else
            err = IDEVS_OK;
    }
    OPENSSL_free(der);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(value);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(obj);
    return err;
}

idevs_err certs_get_octets_ext(X509 *cert, const char *oid, const uint8_t **data, size_t *len)
{
    ASN1_OBJECT *obj = oid_object(oid);
    if (obj == NULL)
        return IDEVS_ERR_NOMEM;
    int pos = X509_get_ext_by_OBJ(cert, obj, -1);
    int again = pos >= 0 ? X509_get_ext_by_OBJ(cert, obj, pos) : -1;
    ASN1_OBJECT_free(obj);
    if (pos < 0)
        return IDEVS_ERR_EVIDENCE_MISSING;
    if (again >= 0)
        return IDEVS_ERR_MALFORMED;
    X509_EXTENSION *ext = X509_get_ext(cert, pos);
    ASN1_OCTET_STRING *value = ext != NULL ? X509_EXTENSION_get_data(ext) : NULL;
    if (value == NULL)
        return IDEVS_ERR_MALFORMED;
    /* The extension value holds the DER of an OCTET STRING: parse its header by hand so that the content can
     * be returned borrowed from cert, and require definite, minimal-enough framing with nothing after it. */
    const unsigned char *p = ASN1_STRING_get0_data(value);
    long content_len = 0;
    int tag = 0, cls = 0;
    long total = ASN1_STRING_length(value);
    const unsigned char *start = p;
    int ret = ASN1_get_object(&p, &content_len, &tag, &cls, total);
    if ((ret & 0x80) != 0 || ret != 0 || tag != V_ASN1_OCTET_STRING || cls != V_ASN1_UNIVERSAL ||
        content_len < 0 || (p - start) + content_len != total)
        return IDEVS_ERR_MALFORMED;
    *data = p;
    *len = (size_t)content_len;
    return IDEVS_OK;
}

idevs_err certs_add_uuid_san(X509 *cert, const idevs_uuid *uuid)
{
    char text[CERTS_URN_LEN + 1], u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(uuid, u);
    memcpy(text, CERTS_URN_PREFIX, sizeof CERTS_URN_PREFIX - 1);
    memcpy(text + sizeof CERTS_URN_PREFIX - 1, u, IDEVS_UUID_STR_LEN);

    idevs_err err = IDEVS_ERR_NOMEM;
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *name = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    if (names != NULL && name != NULL && ia5 != NULL && ASN1_STRING_set(ia5, text, (int)CERTS_URN_LEN) == 1) {
        GENERAL_NAME_set0_value(name, GEN_URI, ia5);
        ia5 = NULL;
        if (sk_GENERAL_NAME_push(names, name) > 0) {
            name = NULL;
            err = X509_add1_ext_i2d(cert, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1 ? IDEVS_OK
                                                                                                  : IDEVS_ERR_CRYPTO;
        }
    }
    ASN1_IA5STRING_free(ia5);
    GENERAL_NAME_free(name);
    GENERAL_NAMES_free(names);
    return err;
}

idevs_err certs_get_uuid_san(X509 *cert, idevs_uuid *out)
{
    int crit = 0;
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, &crit, NULL);
    if (names == NULL)
        return IDEVS_ERR_CERT_NOT_IDEVS; /* absent, repeated (crit -2) or undecodable */
    int found = 0;
    idevs_uuid u;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); i++) {
        GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        int type = 0;
        ASN1_STRING *s = GENERAL_NAME_get0_value(gn, &type);
        if (type != GEN_URI || s == NULL)
            continue;
        int slen = ASN1_STRING_length(s);
        const char *d = (const char *)ASN1_STRING_get0_data(s);
        if (slen < (int)sizeof CERTS_URN_PREFIX - 1 ||
            OPENSSL_strncasecmp(d, CERTS_URN_PREFIX, sizeof CERTS_URN_PREFIX - 1) != 0)
            continue;
        char text[IDEVS_UUID_STR_LEN];
        found++;
        if (slen != (int)CERTS_URN_LEN) {
            found = -1;
            break;
        }
        memcpy(text, d + sizeof CERTS_URN_PREFIX - 1, IDEVS_UUID_STR_LEN - 1);
        text[IDEVS_UUID_STR_LEN - 1] = '\0';
        if (idevs_uuid_parse(text, &u) != IDEVS_OK) {
            found = -1;
            break;
        }
    }
    GENERAL_NAMES_free(names);
    if (found != 1)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    *out = u;
    return IDEVS_OK;
}

idevs_err certs_get_name(X509 *cert, char out[IDEVS_NAME_MAX + 1])
{
    X509_NAME *subject = X509_get_subject_name(cert);
    if (subject == NULL || X509_NAME_entry_count(subject) != 1)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    int pos = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (pos < 0)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    ASN1_STRING *s = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, pos));
    int len = s != NULL ? ASN1_STRING_length(s) : -1;
    if (len < 1 || len > IDEVS_NAME_MAX)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    char buf[IDEVS_NAME_MAX + 1];
    memcpy(buf, ASN1_STRING_get0_data(s), (size_t)len);
    buf[len] = '\0';
    if (strlen(buf) != (size_t)len || !idevs_name_valid(buf))
        return IDEVS_ERR_CERT_NOT_IDEVS;
    memcpy(out, buf, (size_t)len + 1);
    return IDEVS_OK;
}

idevs_err certs_get_agreement_key(X509 *cert, uint8_t out[IDEVS_X25519_LEN])
{
    const uint8_t *data = NULL;
    size_t len = 0;
    idevs_err err = certs_get_octets_ext(cert, IDEVS_OID_AGREEMENT_KEY, &data, &len);
    if (err == IDEVS_ERR_EVIDENCE_MISSING)
        return err;
    if (err != IDEVS_OK || len != IDEVS_X25519_LEN)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    memcpy(out, data, IDEVS_X25519_LEN);
    return IDEVS_OK;
}

idevs_err certs_get_sign_key(X509 *cert, uint8_t out[IDEVS_ED25519_PUB_LEN])
{
    EVP_PKEY *key = X509_get0_pubkey(cert);
    if (key == NULL || EVP_PKEY_get_id(key) != EVP_PKEY_ED25519)
        return IDEVS_ERR_CERT_NOT_IDEVS;
    return idevs_raw_public(key, out) == IDEVS_OK ? IDEVS_OK : IDEVS_ERR_CERT_NOT_IDEVS;
}
