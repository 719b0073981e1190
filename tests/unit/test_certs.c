/* Certificates: issuing, every verification failure in its documented order, evidence encoding, key files. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "fixtures.h"
#include "harness.h"
#include "evidence.pb-c.h"
#include "idevs_cert.h"
#include "idevs_identity.h"

static fixture_pki pki;
static uint8_t M[32], D[32];

static int suite_init(void)
{
    fixture_pki_init(&pki);
    memset(M, 0x4d, sizeof M);
    memset(D, 0x44, sizeof D);
    return 0;
}

static int suite_clean(void)
{
    fixture_pki_free(&pki);
    return 0;
}

/* ---- helpers ---- */

static idevs_err verify_id(const idevs_cert_policy *policy, const idevs_identity *id, idevs_cert_info *info,
                           char *why, size_t why_len)
{
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    size_t n = fixture_chain(id, der, len);
    return idevs_cert_verify(policy, der, len, n, info, why, why_len);
}

/* Verifies [leaf] or [leaf, inter]. */
static idevs_err verify_x509(const idevs_cert_policy *policy, X509 *leaf, X509 *inter, char *why, size_t why_len)
{
    uint8_t *der[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    CU_ASSERT_FATAL(idevs_cert_to_der(leaf, &der[0], &len[0]) == IDEVS_OK);
    if (inter != NULL)
        CU_ASSERT_FATAL(idevs_cert_to_der(inter, &der[1], &len[1]) == IDEVS_OK);
    idevs_err err = idevs_cert_verify(policy, (const uint8_t *const *)der, len, inter != NULL ? 2 : 1, NULL, why,
                                      why_len);
    free(der[0]);
    free(der[1]);
    return err;
}

static X509 *leaf_of(const idevs_identity *id)
{
    size_t len = 0;
    const uint8_t *der = idevs_identity_chain_der(id, 0, &len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(der);
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    return x;
}

static void delete_ext(X509 *x, const char *oid)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(obj);
    int pos = X509_get_ext_by_OBJ(x, obj, -1);
    ASN1_OBJECT_free(obj);
    CU_ASSERT_FATAL(pos >= 0);
    X509_EXTENSION_free(X509_delete_ext(x, pos));
}

/* Adds a non-critical OCTET STRING extension, as the library does, with arbitrary content. */
static void add_octets_ext(X509 *x, const char *oid, const uint8_t *data, size_t len)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    ASN1_OCTET_STRING *inner = ASN1_OCTET_STRING_new(), *value = ASN1_OCTET_STRING_new();
    unsigned char *der = NULL;
    CU_ASSERT_FATAL(obj != NULL && inner != NULL && value != NULL);
    CU_ASSERT_FATAL(ASN1_OCTET_STRING_set(inner, data, (int)len) == 1);
    int der_len = i2d_ASN1_OCTET_STRING(inner, &der);
    CU_ASSERT_FATAL(der_len > 0);
    CU_ASSERT_FATAL(ASN1_OCTET_STRING_set(value, der, der_len) == 1);
    X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value);
    CU_ASSERT_FATAL(ext != NULL && X509_add_ext(x, ext, -1) == 1);
    X509_EXTENSION_free(ext);
    OPENSSL_free(der);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OCTET_STRING_free(value);
    ASN1_OBJECT_free(obj);
}

static void resign(X509 *x, const idevs_identity *signer)
{
    CU_ASSERT_FATAL(X509_sign(x, idevs_identity_sign_key(signer), NULL) > 0);
}

static idevs_evidence make_evidence(const idevs_identity *subject, idevs_backend backend)
{
    idevs_evidence ev;
    memset(&ev, 0, sizeof ev);
    ev.backend = backend;
    memcpy(ev.measurement, M, 32);
    ev.program_uuid = *idevs_identity_uuid(subject);
    memcpy(ev.descriptor_digest, D, 32);
    CU_ASSERT_FATAL(idevs_key_binding(idevs_identity_sign_public(subject), idevs_identity_kex_public(subject),
                                      ev.key_binding) == IDEVS_OK);
    ev.issued_at = (uint64_t)time(NULL);
    ev.nonce_len = 16;
    memset(ev.nonce, 0x6e, 16);
    return ev;
}

/* Packs an Evidence message from the given fields, bypassing the library's checks. */
static size_t pack_evidence(const idevs_evidence *ev, uint32_t version, uint8_t *out, size_t cap)
{
    Idevs__V1__Evidence msg = IDEVS__V1__EVIDENCE__INIT;
    msg.version = version;
    msg.backend = (Idevs__V1__Backend)ev->backend;
    msg.measurement = (ProtobufCBinaryData){32, (uint8_t *)ev->measurement};
    msg.program_uuid = (ProtobufCBinaryData){16, (uint8_t *)ev->program_uuid.b};
    msg.descriptor_digest = (ProtobufCBinaryData){32, (uint8_t *)ev->descriptor_digest};
    msg.key_binding = (ProtobufCBinaryData){32, (uint8_t *)ev->key_binding};
    msg.issued_at = ev->issued_at;
    msg.nonce = (ProtobufCBinaryData){ev->nonce_len, (uint8_t *)ev->nonce};
    msg.flags = ev->flags;
    size_t len = idevs__v1__evidence__get_packed_size(&msg);
    CU_ASSERT_FATAL(len <= cap);
    return idevs__v1__evidence__pack(&msg, out);
}

/* A compartment certificate whose evidence extension is replaced by the given bytes, re-signed. */
static idevs_err verify_with_evidence_bytes(const idevs_cert_policy *policy, const uint8_t *ev, size_t ev_len,
                                            char *why, size_t why_len)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "forged", &prog, M, D, 3600, 0);
    X509 *x = leaf_of(c);
    delete_ext(x, IDEVS_OID_EVIDENCE);
    add_octets_ext(x, IDEVS_OID_EVIDENCE, ev, ev_len);
    resign(x, pki.authority);
    idevs_err err = verify_x509(policy, x, pki.authority_cert, why, why_len);
    X509_free(x);
    idevs_identity_free(c);
    return err;
}

/* ---- round trips ---- */

static void test_service_round_trip(void)
{
    idevs_identity *svc = fixture_service(&pki, "store");
    idevs_cert_policy *p = fixture_service_policy(&pki);
    idevs_cert_info info;
    char why[256] = "x";
    uint8_t digest[32];
    CU_ASSERT_EQUAL(verify_id(p, svc, &info, why, sizeof why), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(why, "");
    CU_ASSERT_STRING_EQUAL(info.name, "store");
    CU_ASSERT(idevs_uuid_equal(&info.uuid, idevs_identity_uuid(svc)));
    CU_ASSERT(memcmp(info.sign_pub, idevs_identity_sign_public(svc), 32) == 0);
    CU_ASSERT(memcmp(info.kex_pub, idevs_identity_kex_public(svc), 32) == 0);
    CU_ASSERT_EQUAL(idevs_identity_cert_digest(svc, digest), IDEVS_OK);
    CU_ASSERT(memcmp(info.cert_digest, digest, 32) == 0);
    CU_ASSERT_FALSE(info.has_evidence);
    /* info may be NULL, why may be NULL */
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, NULL, 0), IDEVS_OK);
    idevs_cert_policy_free(p);
    idevs_identity_free(svc);
}

static void test_compartment_round_trip(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "rewards", &prog, M, D, 3600, 0);
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    idevs_cert_policy_expect_program(p, &prog);
    idevs_cert_info info;
    char why[256];
    CU_ASSERT_EQUAL(idevs_identity_chain_count(c), 2);
    CU_ASSERT_EQUAL(verify_id(p, c, &info, why, sizeof why), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(info.name, "rewards");
    CU_ASSERT_TRUE(info.has_evidence);
    CU_ASSERT_EQUAL(info.evidence.backend, IDEVS_BACKEND_PROCESS);
    CU_ASSERT(memcmp(info.evidence.measurement, M, 32) == 0);
    CU_ASSERT(memcmp(info.evidence.descriptor_digest, D, 32) == 0);
    CU_ASSERT(idevs_uuid_equal(&info.evidence.program_uuid, &prog));
    CU_ASSERT_EQUAL(info.evidence.nonce_len, 16);
    CU_ASSERT_PTR_NULL(info.evidence.hardware_report);
    CU_ASSERT_EQUAL(info.evidence.hardware_report_len, 0);
    uint64_t now = (uint64_t)time(NULL);
    CU_ASSERT(info.evidence.issued_at <= now && info.evidence.issued_at + 60 >= now);
    /* a service policy (no evidence required) accepts it too, and reports the evidence */
    idevs_cert_policy *sp = fixture_service_policy(&pki);
    CU_ASSERT_EQUAL(verify_id(sp, c, &info, why, sizeof why), IDEVS_OK);
    CU_ASSERT_TRUE(info.has_evidence);
    idevs_cert_policy_free(sp);
    /* the expected nonce */
    uint8_t nonce[16];
    memcpy(nonce, info.evidence.nonce, 16);
    CU_ASSERT_EQUAL(idevs_cert_policy_expect_nonce(p, nonce, 16), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    nonce[0] ^= 1;
    CU_ASSERT_EQUAL(idevs_cert_policy_expect_nonce(p, nonce, 16), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_NONCE_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'rewards'"));
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
}

static void test_certificate_shape(void)
{
    idevs_identity *svc = fixture_service(&pki, "taxi");
    X509 *x = leaf_of(svc);
    time_t now = time(NULL);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(x);
    CU_ASSERT_EQUAL(ASN1_STRING_length(serial), 16);
    CU_ASSERT_EQUAL(ASN1_STRING_type(serial), V_ASN1_INTEGER); /* positive */
    int day = 0, sec = 0;
    CU_ASSERT_EQUAL(ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notBefore(x)), 1);
    CU_ASSERT(day == 0 && sec <= -55 && sec >= -70);
    CU_ASSERT_EQUAL(X509_get_version(x), X509_VERSION_3);
    CU_ASSERT_EQUAL(X509_check_ca(x), 0);
    CU_ASSERT_PTR_NOT_NULL(X509_get0_subject_key_id(x));
    CU_ASSERT_PTR_NOT_NULL(X509_get0_authority_key_id(x));
    CU_ASSERT(X509_get_key_usage(x) & KU_DIGITAL_SIGNATURE);
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    CU_ASSERT(bc != NULL && crit == 1 && !bc->ca);
    BASIC_CONSTRAINTS_free(bc);
    CU_ASSERT_EQUAL(X509_get_signature_nid(x), NID_ED25519);
    CU_ASSERT(now > 0);
    /* the agreement key extension holds the raw X25519 key */
    ASN1_OBJECT *obj = OBJ_txt2obj(IDEVS_OID_AGREEMENT_KEY, 1);
    int pos = X509_get_ext_by_OBJ(x, obj, -1);
    ASN1_OBJECT_free(obj);
    CU_ASSERT_FATAL(pos >= 0);
    X509_EXTENSION *ext = X509_get_ext(x, pos);
    CU_ASSERT_EQUAL(X509_EXTENSION_get_critical(ext), 0);
    const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);
    const unsigned char *p = ASN1_STRING_get0_data(v);
    ASN1_OCTET_STRING *inner = d2i_ASN1_OCTET_STRING(NULL, &p, ASN1_STRING_length(v));
    CU_ASSERT_FATAL(inner != NULL);
    CU_ASSERT_EQUAL(ASN1_STRING_length(inner), 32);
    CU_ASSERT(memcmp(ASN1_STRING_get0_data(inner), idevs_identity_kex_public(svc), 32) == 0);
    ASN1_OCTET_STRING_free(inner);
    /* the SAN URI */
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    CU_ASSERT_FATAL(names != NULL && sk_GENERAL_NAME_num(names) == 1);
    int type = 0;
    ASN1_STRING *uri = GENERAL_NAME_get0_value(sk_GENERAL_NAME_value(names, 0), &type);
    char want[64], u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(idevs_identity_uuid(svc), u);
    snprintf(want, sizeof want, "urn:uuid:%s", u);
    CU_ASSERT_EQUAL(type, GEN_URI);
    CU_ASSERT_EQUAL(ASN1_STRING_length(uri), (int)strlen(want));
    CU_ASSERT(memcmp(ASN1_STRING_get0_data(uri), want, strlen(want)) == 0);
    GENERAL_NAMES_free(names);
    X509_free(x);
    /* CA and authority */
    CU_ASSERT_NOT_EQUAL(X509_check_ca(pki.ca_cert), 0);
    bc = X509_get_ext_d2i(pki.authority_cert, NID_basic_constraints, &crit, NULL);
    CU_ASSERT(bc != NULL && crit == 1 && bc->ca && bc->pathlen != NULL && ASN1_INTEGER_get(bc->pathlen) == 0);
    BASIC_CONSTRAINTS_free(bc);
    CU_ASSERT(X509_get_key_usage(pki.authority_cert) & KU_KEY_CERT_SIGN);
    idevs_identity_free(svc);
}

static void test_evidence_read_and_binding(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "reader", &prog, M, D, 600, IDEVS_EVIDENCE_FLAG_DEBUG);
    X509 *x = leaf_of(c);
    idevs_evidence ev;
    CU_ASSERT_EQUAL(idevs_cert_read_evidence(x, &ev), IDEVS_OK);
    CU_ASSERT_EQUAL(ev.flags, IDEVS_EVIDENCE_FLAG_DEBUG);
    CU_ASSERT(memcmp(ev.measurement, M, 32) == 0);
    CU_ASSERT_PTR_NULL(ev.hardware_report);
    /* the binding is SHA-256 of the label and both keys */
    uint8_t buf[84], want[32];
    memcpy(buf, "idevs key binding v1", 20);
    memcpy(buf + 20, idevs_identity_sign_public(c), 32);
    memcpy(buf + 52, idevs_identity_kex_public(c), 32);
    CU_ASSERT_EQUAL(idevs_sha256(buf, sizeof buf, want), IDEVS_OK);
    CU_ASSERT(memcmp(ev.key_binding, want, 32) == 0);
    X509_free(x);
    idevs_identity_free(c);
}

static void test_evidence_missing_on_service(void)
{
    idevs_identity *svc = fixture_service(&pki, "plain");
    X509 *x = leaf_of(svc);
    idevs_evidence ev;
    CU_ASSERT_EQUAL(idevs_cert_read_evidence(x, &ev), IDEVS_ERR_EVIDENCE_MISSING);
    X509_free(x);
    idevs_identity_free(svc);
}

static void test_backend_names(void)
{
    idevs_backend b;
    for (int i = IDEVS_BACKEND_PROCESS; i <= IDEVS_BACKEND_TPM; i++) {
        const char *n = idevs_backend_name((idevs_backend)i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(n);
        CU_ASSERT_EQUAL(idevs_backend_parse(n, &b), IDEVS_OK);
        CU_ASSERT_EQUAL((int)b, i);
    }
    CU_ASSERT_STRING_EQUAL(idevs_backend_name(IDEVS_BACKEND_SEV_SNP), "sev-snp");
    CU_ASSERT_PTR_NULL(idevs_backend_name((idevs_backend)0));
    CU_ASSERT_PTR_NULL(idevs_backend_name((idevs_backend)8));
    CU_ASSERT_EQUAL(idevs_backend_parse("enclave", &b), IDEVS_ERR_INVALID_ARG);
    idevs_cert_policy *p = idevs_cert_policy_new();
    CU_ASSERT_EQUAL(idevs_cert_policy_allow_backend(p, IDEVS_BACKEND_PROCESS), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_policy_allow_backend(p, (idevs_backend)9), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_policy_allow_backend(p, IDEVS_BACKEND_SGX), IDEVS_OK);
    idevs_cert_policy_free(p);
}

/* ---- issuing refusals ---- */

static void test_issue_refusals(void)
{
    idevs_uuid u;
    idevs_uuid_generate(&u);
    idevs_identity *a = NULL, *b = NULL;
    X509 *x = NULL;
    CU_ASSERT_FATAL(idevs_identity_generate(&u, "a", &a) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_identity_generate(&u, "b", &b) == IDEVS_OK);
    idevs_evidence ev = make_evidence(a, IDEVS_BACKEND_PROCESS);
    /* evidence binding a's keys cannot certify b */
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, b, &ev, 60, &x),
                    IDEVS_ERR_KEY_BINDING_MISMATCH);
    CU_ASSERT_PTR_NULL(x);
    idevs_evidence bad = ev;
    bad.nonce_len = 8;
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    bad = ev;
    bad.flags = 0x2;
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    bad = ev;
    bad.backend = (idevs_backend)0;
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    bad = ev;
    bad.hardware_report_len = IDEVS_HARDWARE_REPORT_MAX + 1;
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    bad = ev;
    idevs_uuid_generate(&bad.program_uuid);
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_PROGRAM_MISMATCH);
    /* a hardware report so large the certificate would exceed IDEVS_CERT_MAX */
    static uint8_t report[IDEVS_HARDWARE_REPORT_MAX];
    bad = ev;
    bad.backend = IDEVS_BACKEND_SGX;
    bad.hardware_report = report;
    bad.hardware_report_len = sizeof report;
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &bad, 60, &x),
                    IDEVS_ERR_TOO_LARGE);
    /* the issuer certificate must match the issuer key and be a CA */
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.ca, pki.authority_cert, a, &ev, 60, &x), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_issue_service(pki.authority, pki.ca_cert, a, 1, &x), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, a, &ev, 0, &x),
                    IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_issue_service(pki.ca, pki.ca_cert, a, 0, &x), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_PTR_NULL(x);
    /* a service certificate cannot issue */
    idevs_identity *svc = fixture_service(&pki, "notca");
    X509 *svc_cert = leaf_of(svc);
    CU_ASSERT_EQUAL(idevs_cert_issue_service(svc, svc_cert, a, 1, &x), IDEVS_ERR_INVALID_ARG);
    X509_free(svc_cert);
    idevs_identity_free(svc);
    idevs_identity_free(a);
    idevs_identity_free(b);
}

static void test_identity_names(void)
{
    idevs_uuid u;
    idevs_identity *id = NULL;
    idevs_uuid_generate(&u);
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, "", &id), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, "a b", &id), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, "x'y", &id), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, NULL, &id), IDEVS_ERR_INVALID_ARG);
    char longname[IDEVS_NAME_MAX + 2];
    memset(longname, 'n', sizeof longname - 1);
    longname[IDEVS_NAME_MAX + 1] = '\0';
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, longname, &id), IDEVS_ERR_INVALID_ARG);
    longname[IDEVS_NAME_MAX] = '\0';
    CU_ASSERT_EQUAL(idevs_identity_generate(&u, longname, &id), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_identity_chain_count(id), 0);
    uint8_t digest[32];
    CU_ASSERT_EQUAL(idevs_identity_cert_digest(id, digest), IDEVS_ERR_INVALID_ARG);
    idevs_identity_free(id);
    idevs_identity_free(NULL);
}

static void test_from_private(void)
{
    /* RFC 8032 test 1 and RFC 7748 Alice */
    uint8_t seed[32], kex[32], pub_want[32];
    CU_ASSERT_FATAL(harness_unhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", seed, 32) == 32);
    CU_ASSERT_FATAL(harness_unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", kex, 32) == 32);
    CU_ASSERT_FATAL(harness_unhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", pub_want, 32) ==
                    32);
    idevs_uuid u;
    idevs_uuid_generate(&u);
    idevs_identity *id = NULL;
    CU_ASSERT_EQUAL_FATAL(idevs_identity_from_private(&u, "vector", seed, kex, &id), IDEVS_OK);
    CU_ASSERT(memcmp(idevs_identity_sign_public(id), pub_want, 32) == 0);
    CU_ASSERT_FATAL(harness_unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", pub_want, 32) ==
                    32);
    CU_ASSERT(memcmp(idevs_identity_kex_public(id), pub_want, 32) == 0);
    CU_ASSERT_PTR_NOT_NULL(idevs_identity_sign_key(id));
    CU_ASSERT_PTR_NOT_NULL(idevs_identity_kex_key(id));
    idevs_identity_free(id);
}

static void test_set_chain_refusals(void)
{
    idevs_identity *svc = fixture_service(&pki, "chain");
    idevs_identity *other = fixture_service(&pki, "other");
    const uint8_t *der[IDEVS_CHAIN_MAX + 1];
    size_t len[IDEVS_CHAIN_MAX + 1];
    fixture_chain(other, der, len);
    CU_ASSERT_EQUAL(idevs_identity_set_chain(svc, der, len, 1), IDEVS_ERR_INVALID_ARG);
    fixture_chain(svc, der, len);
    for (int i = 1; i <= IDEVS_CHAIN_MAX; i++) {
        der[i] = der[0];
        len[i] = len[0];
    }
    CU_ASSERT_EQUAL(idevs_identity_set_chain(svc, der, len, IDEVS_CHAIN_MAX + 1), IDEVS_ERR_TOO_LARGE);
    size_t short_len = len[0] - 1;
    CU_ASSERT_EQUAL(idevs_identity_set_chain(svc, der, &short_len, 1), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_EQUAL(idevs_identity_chain_count(svc), 1); /* unchanged after refusals */
    idevs_identity_free(other);
    idevs_identity_free(svc);
}

/* ---- verification failures, in order ---- */

static void test_malformed_der(void)
{
    idevs_identity *svc = fixture_service(&pki, "store");
    idevs_cert_policy *p = fixture_service_policy(&pki);
    const uint8_t *der[IDEVS_CHAIN_MAX + 1];
    size_t len[IDEVS_CHAIN_MAX + 1];
    char why[256];
    fixture_chain(svc, der, len);
    size_t full = len[0];
    /* truncated */
    len[0] = full - 1;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    len[0] = 10;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* trailing garbage */
    uint8_t *longer = malloc(full + 1);
    CU_ASSERT_FATAL(longer != NULL);
    memcpy(longer, der[0], full);
    longer[full] = 0;
    const uint8_t *ld[1] = {longer};
    size_t ll[1] = {full + 1};
    CU_ASSERT_EQUAL(idevs_cert_verify(p, ld, ll, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* a flipped bit in the signature: parses, fails the chain */
    memcpy(longer, der[0], full);
    longer[full - 5] ^= 0x01;
    ll[0] = full;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, ld, ll, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    free(longer);
    /* garbage */
    uint8_t garbage[300];
    for (size_t i = 0; i < sizeof garbage; i++)
        garbage[i] = (uint8_t)(i * 37 + 11);
    garbage[0] = 0x30;
    garbage[1] = 0x82;
    const uint8_t *gd[1] = {garbage};
    size_t gl[1] = {sizeof garbage};
    CU_ASSERT_EQUAL(idevs_cert_verify(p, gd, gl, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    gl[0] = 0;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, gd, gl, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* a garbage intermediate */
    der[1] = garbage;
    len[1] = sizeof garbage;
    len[0] = full;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 2, NULL, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* oversize chain and certificate */
    for (int i = 1; i <= IDEVS_CHAIN_MAX; i++) {
        der[i] = der[0];
        len[i] = len[0];
    }
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, IDEVS_CHAIN_MAX + 1, NULL, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    len[0] = IDEVS_CERT_MAX + 1;
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 1, NULL, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 0, NULL, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_cert_verify(NULL, der, len, 1, NULL, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    idevs_cert_policy_free(p);
    idevs_identity_free(svc);
}

static void test_leaf_is_ca(void)
{
    idevs_cert_policy *p = fixture_service_policy(&pki);
    char why[256];
    CU_ASSERT_EQUAL(verify_x509(p, pki.authority_cert, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'fixture-authority'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "CA"));
    CU_ASSERT_EQUAL(verify_x509(p, pki.ca_cert, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    idevs_cert_policy_free(p);
}

static void test_not_idevs(void)
{
    idevs_identity *svc = fixture_service(&pki, "bare");
    idevs_cert_policy *p = fixture_service_policy(&pki);
    char why[256];
    /* without the agreement key */
    X509 *x = leaf_of(svc);
    delete_ext(x, IDEVS_OID_AGREEMENT_KEY);
    resign(x, pki.ca);
    CU_ASSERT_EQUAL(verify_x509(p, x, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'bare'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "agreement key"));
    /* with a 31-byte agreement key */
    add_octets_ext(x, IDEVS_OID_AGREEMENT_KEY, idevs_identity_kex_public(svc), 31);
    resign(x, pki.ca);
    CU_ASSERT_EQUAL(verify_x509(p, x, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    /* with two agreement keys */
    delete_ext(x, IDEVS_OID_AGREEMENT_KEY);
    add_octets_ext(x, IDEVS_OID_AGREEMENT_KEY, idevs_identity_kex_public(svc), 32);
    add_octets_ext(x, IDEVS_OID_AGREEMENT_KEY, idevs_identity_kex_public(svc), 32);
    resign(x, pki.ca);
    CU_ASSERT_EQUAL(verify_x509(p, x, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    X509_free(x);
    /* without the urn:uuid name */
    x = leaf_of(svc);
    int pos = X509_get_ext_by_NID(x, NID_subject_alt_name, -1);
    CU_ASSERT_FATAL(pos >= 0);
    X509_EXTENSION_free(X509_delete_ext(x, pos));
    resign(x, pki.ca);
    CU_ASSERT_EQUAL(verify_x509(p, x, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "urn:uuid"));
    X509_free(x);
    /* with an X25519 subject key instead of Ed25519 */
    x = leaf_of(svc);
    CU_ASSERT_FATAL(X509_set_pubkey(x, idevs_identity_kex_key(svc)) == 1);
    resign(x, pki.ca);
    CU_ASSERT_EQUAL(verify_x509(p, x, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "Ed25519"));
    X509_free(x);
    idevs_cert_policy_free(p);
    idevs_identity_free(svc);
}

static void test_wrong_ca(void)
{
    fixture_pki other;
    fixture_pki_init(&other);
    idevs_identity *svc = fixture_service(&pki, "store");
    idevs_cert_policy *p = fixture_service_policy(&other);
    char why[256];
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'store'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "urn:uuid:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "trusted operator CA"));
    idevs_cert_policy_free(p);
    /* a policy without any CA */
    p = idevs_cert_policy_new();
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    /* a leaf cannot be a trust anchor */
    X509 *x = leaf_of(svc);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca(p, x), IDEVS_ERR_INVALID_ARG);
    X509_free(x);
    idevs_cert_policy_free(p);
    /* a compartment without its authority in the chain */
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "alone", &prog, M, D, 600, 0);
    p = fixture_compartment_policy(&pki, M, D);
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    fixture_chain(c, der, len);
    CU_ASSERT_EQUAL(idevs_cert_verify(p, der, len, 1, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    /* a compartment signed by another authority under the same CA name */
    idevs_identity *c2 = fixture_compartment(&other, "alien", &prog, M, D, 600, 0);
    CU_ASSERT_EQUAL(verify_id(p, c2, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    idevs_identity_free(c2);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
    idevs_identity_free(svc);
    fixture_pki_free(&other);
}

static void test_expired_and_not_yet_valid(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "taxi", &prog, M, D, 3600, 0);
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    char why[256];
    idevs_cert_policy_set_time(p, time(NULL) + 7200);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_CERT_EXPIRED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "certificate 'taxi' (urn:uuid:"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "expired on 20"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "UTC"));
    idevs_cert_policy_set_time(p, time(NULL) - 3600);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_YET_VALID);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'taxi'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "not valid before"));
    /* the authority (30 days) expires after the leaf: at +40 days it is the issuer that is named */
    idevs_cert_policy_set_time(p, time(NULL) + 40L * 86400);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_CERT_EXPIRED);
    idevs_cert_policy_set_time(p, time(NULL) + 60);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_set_time(p, 0);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
}

static void test_evidence_missing(void)
{
    idevs_identity *svc = fixture_service(&pki, "store");
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    char why[256];
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_ERR_EVIDENCE_MISSING);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'store'"));
    idevs_cert_policy_free(p);
    /* a certificate below the attestation authority without evidence is refused even by a service policy */
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "stripped", &prog, M, D, 600, 0);
    X509 *x = leaf_of(c);
    delete_ext(x, IDEVS_OID_EVIDENCE);
    resign(x, pki.authority);
    p = fixture_service_policy(&pki);
    CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_EVIDENCE_MISSING);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "attestation authority"));
    X509_free(x);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
    idevs_identity_free(svc);
}

static void test_evidence_malformed(void)
{
    idevs_cert_policy *p = fixture_service_policy(&pki); /* decoding applies even when not required */
    char why[256];
    uint8_t garbage[40];
    memset(garbage, 0xff, sizeof garbage);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, garbage, sizeof garbage, why, sizeof why),
                    IDEVS_ERR_EVIDENCE_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'forged'"));
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, garbage, 0, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);

    idevs_identity *other = fixture_service(&pki, "other-keys");
    idevs_evidence ev = make_evidence(other, IDEVS_BACKEND_PROCESS);
    uint8_t buf[512];
    size_t n;
    /* truncated */
    n = pack_evidence(&ev, 1, buf, sizeof buf);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n - 3, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    /* version 2 */
    n = pack_evidence(&ev, 2, buf, sizeof buf);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "version"));
    /* reserved flags */
    idevs_evidence e2 = ev;
    e2.flags = 0x80;
    n = pack_evidence(&e2, 1, buf, sizeof buf);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    /* unknown backend */
    e2 = ev;
    e2.backend = (idevs_backend)8;
    n = pack_evidence(&e2, 1, buf, sizeof buf);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    /* short nonce */
    e2 = ev;
    e2.nonce_len = 15;
    n = pack_evidence(&e2, 1, buf, sizeof buf);
    CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    /* long nonce */
    uint8_t bignonce[IDEVS_EVIDENCE_NONCE_MAX + 1];
    memset(bignonce, 1, sizeof bignonce);
    {
        Idevs__V1__Evidence msg = IDEVS__V1__EVIDENCE__INIT;
        msg.version = 1;
        msg.backend = IDEVS__V1__BACKEND__BACKEND_PROCESS;
        msg.measurement = (ProtobufCBinaryData){32, ev.measurement};
        msg.program_uuid = (ProtobufCBinaryData){16, ev.program_uuid.b};
        msg.descriptor_digest = (ProtobufCBinaryData){32, ev.descriptor_digest};
        msg.key_binding = (ProtobufCBinaryData){32, ev.key_binding};
        msg.nonce = (ProtobufCBinaryData){sizeof bignonce, bignonce};
        n = idevs__v1__evidence__pack(&msg, buf);
        CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
        /* a 31-byte measurement */
        msg.nonce = (ProtobufCBinaryData){16, ev.nonce};
        msg.measurement.len = 31;
        n = idevs__v1__evidence__pack(&msg, buf);
        CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "measurement"));
        /* a missing key binding */
        msg.measurement.len = 32;
        msg.key_binding.len = 0;
        n = idevs__v1__evidence__pack(&msg, buf);
        CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
        /* a 15-byte program UUID */
        msg.key_binding.len = 32;
        msg.program_uuid.len = 15;
        n = idevs__v1__evidence__pack(&msg, buf);
        CU_ASSERT_EQUAL(verify_with_evidence_bytes(p, buf, n, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
    }
    /* the extension value not an OCTET STRING: a raw protobuf where the DER wrapper should be */
    {
        idevs_uuid prog;
        idevs_uuid_generate(&prog);
        idevs_identity *c = fixture_compartment(&pki, "unwrapped", &prog, M, D, 600, 0);
        X509 *x = leaf_of(c);
        delete_ext(x, IDEVS_OID_EVIDENCE);
        ASN1_OBJECT *obj = OBJ_txt2obj(IDEVS_OID_EVIDENCE, 1);
        ASN1_OCTET_STRING *value = ASN1_OCTET_STRING_new();
        n = pack_evidence(&ev, 1, buf, sizeof buf);
        CU_ASSERT_FATAL(ASN1_OCTET_STRING_set(value, buf, (int)n) == 1);
        X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, value);
        CU_ASSERT_FATAL(X509_add_ext(x, ext, -1) == 1);
        X509_EXTENSION_free(ext);
        ASN1_OCTET_STRING_free(value);
        ASN1_OBJECT_free(obj);
        resign(x, pki.authority);
        CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
        idevs_evidence out;
        CU_ASSERT_EQUAL(idevs_cert_read_evidence(x, &out), IDEVS_ERR_EVIDENCE_MALFORMED);
        X509_free(x);
        idevs_identity_free(c);
    }
    idevs_identity_free(other);
    idevs_cert_policy_free(p);
}

static void test_key_binding_mismatch(void)
{
    /* A certificate for keys B whose evidence binds keys A, signed by the real authority: the issue function
     * refuses this, so the evidence is copied from A's genuine certificate into a hand-made one. */
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *a = fixture_compartment(&pki, "genuine", &prog, M, D, 600, 0);
    idevs_identity *b = NULL;
    CU_ASSERT_FATAL(idevs_identity_generate(&prog, "genuine", &b) == IDEVS_OK);
    X509 *x = leaf_of(a);
    CU_ASSERT_FATAL(X509_set_pubkey(x, idevs_identity_sign_key(b)) == 1);
    delete_ext(x, IDEVS_OID_AGREEMENT_KEY);
    add_octets_ext(x, IDEVS_OID_AGREEMENT_KEY, idevs_identity_kex_public(b), 32);
    resign(x, pki.authority);
    char why[256];
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_KEY_BINDING_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'genuine'"));
    idevs_cert_policy_free(p);
    /* also when the policy does not require evidence */
    p = fixture_service_policy(&pki);
    CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_KEY_BINDING_MISMATCH);
    idevs_cert_policy_free(p);
    /* only the agreement key swapped */
    X509_free(x);
    x = leaf_of(a);
    delete_ext(x, IDEVS_OID_AGREEMENT_KEY);
    add_octets_ext(x, IDEVS_OID_AGREEMENT_KEY, idevs_identity_kex_public(b), 32);
    resign(x, pki.authority);
    p = fixture_compartment_policy(&pki, M, D);
    CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_KEY_BINDING_MISMATCH);
    idevs_cert_policy_free(p);
    X509_free(x);
    idevs_identity_free(b);
    idevs_identity_free(a);
}

/* Issues a compartment certificate for backend with the given flags. */
static idevs_identity *compartment_on(idevs_backend backend, uint32_t flags)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = NULL;
    X509 *x = NULL;
    CU_ASSERT_FATAL(idevs_identity_generate(&prog, "hw", &c) == IDEVS_OK);
    idevs_evidence ev = make_evidence(c, backend);
    ev.flags = flags;
    static const uint8_t report[100] = {1, 2, 3};
    if (backend != IDEVS_BACKEND_PROCESS) {
        ev.hardware_report = report;
        ev.hardware_report_len = sizeof report;
    }
    CU_ASSERT_FATAL(idevs_cert_issue_compartment(pki.authority, pki.authority_cert, c, &ev, 600, &x) == IDEVS_OK);
    uint8_t *der[2] = {NULL, NULL};
    size_t len[2];
    CU_ASSERT_FATAL(idevs_cert_to_der(x, &der[0], &len[0]) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_to_der(pki.authority_cert, &der[1], &len[1]) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_identity_set_chain(c, (const uint8_t *const *)der, len, 2) == IDEVS_OK);
    free(der[0]);
    free(der[1]);
    X509_free(x);
    return c;
}

static void test_backends(void)
{
    char why[256];
    idevs_cert_info info;
    idevs_identity *tdx = compartment_on(IDEVS_BACKEND_TDX, 0);
    idevs_identity *proc = compartment_on(IDEVS_BACKEND_PROCESS, 0);
    idevs_cert_policy *p = fixture_service_policy(&pki);
    idevs_cert_policy_require_evidence(p, true);
    CU_ASSERT_EQUAL(idevs_cert_policy_allow_backend(p, IDEVS_BACKEND_SGX), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, tdx, NULL, why, sizeof why), IDEVS_ERR_BACKEND_NOT_ALLOWED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'tdx'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'hw'"));
    CU_ASSERT_EQUAL(verify_id(p, proc, NULL, why, sizeof why), IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "process"));
    CU_ASSERT_EQUAL(idevs_cert_policy_allow_backend(p, IDEVS_BACKEND_TDX), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, tdx, &info, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(info.evidence.backend, IDEVS_BACKEND_TDX);
    CU_ASSERT_EQUAL(info.evidence.hardware_report_len, 100);
    CU_ASSERT_PTR_NULL(info.evidence.hardware_report);
    CU_ASSERT_EQUAL(verify_id(p, proc, NULL, why, sizeof why), IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN);
    idevs_cert_policy_allow_process_backend_insecure(p);
    CU_ASSERT_EQUAL(verify_id(p, proc, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);
    /* a policy that requires evidence and allows nothing */
    p = fixture_service_policy(&pki);
    idevs_cert_policy_require_evidence(p, true);
    CU_ASSERT_EQUAL(verify_id(p, proc, NULL, why, sizeof why), IDEVS_ERR_PROCESS_BACKEND_NOT_OPTED_IN);
    CU_ASSERT_EQUAL(verify_id(p, tdx, NULL, why, sizeof why), IDEVS_ERR_BACKEND_NOT_ALLOWED);
    idevs_cert_policy_free(p);
    idevs_identity_free(tdx);
    idevs_identity_free(proc);
}

static void test_debug_flag(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "debuggable", &prog, M, D, 600, IDEVS_EVIDENCE_FLAG_DEBUG);
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    char why[256];
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_DEBUG_NOT_ALLOWED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'debuggable'"));
    idevs_cert_policy_allow_debug_insecure(p);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
}

static void test_measurement_descriptor_program(void)
{
    idevs_uuid prog, other;
    idevs_uuid_generate(&prog);
    idevs_uuid_generate(&other);
    idevs_identity *c = fixture_compartment(&pki, "logic", &prog, M, D, 600, 0);
    uint8_t wrong[32];
    memset(wrong, 0x57, sizeof wrong);
    char why[256];

    idevs_cert_policy *p = fixture_compartment_policy(&pki, wrong, D);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_MEASUREMENT_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'logic'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "4d4d4d4d"));
    /* any one of several matches */
    CU_ASSERT_EQUAL(idevs_cert_policy_add_measurement(p, M), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);

    p = fixture_compartment_policy(&pki, M, wrong);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_DESCRIPTOR_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'logic'"));
    idevs_cert_policy_free(p);

    p = fixture_compartment_policy(&pki, M, D);
    idevs_cert_policy_expect_program(p, &other);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_PROGRAM_MISMATCH);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'logic'"));
    idevs_cert_policy_expect_program(p, &prog);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    /* the order: a wrong measurement is reported before a wrong descriptor and program */
    idevs_cert_policy_free(p);
    p = fixture_compartment_policy(&pki, wrong, wrong);
    idevs_cert_policy_expect_program(p, &other);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_MEASUREMENT_MISMATCH);
    idevs_cert_policy_free(p);
    /* without expectations, any measurement is accepted */
    p = fixture_service_policy(&pki);
    idevs_cert_policy_require_evidence(p, true);
    idevs_cert_policy_allow_process_backend_insecure(p);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    for (int i = 0; i < IDEVS_POLICY_MEASUREMENTS_MAX; i++)
        CU_ASSERT_EQUAL(idevs_cert_policy_add_measurement(p, wrong), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_measurement(p, M), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(idevs_cert_policy_expect_nonce(p, M, 8), IDEVS_ERR_INVALID_ARG);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);

    /* evidence for another program than the certificate's own urn:uuid, even without required evidence */
    idevs_identity *x = NULL;
    CU_ASSERT_FATAL(idevs_identity_generate(&prog, "renamed", &x) == IDEVS_OK);
    idevs_identity *src = fixture_compartment(&pki, "renamed", &other, M, D, 600, 0);
    X509 *forged = leaf_of(src);
    int pos = X509_get_ext_by_NID(forged, NID_subject_alt_name, -1);
    X509_EXTENSION_free(X509_delete_ext(forged, pos));
    GENERAL_NAMES *names = GENERAL_NAMES_new();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_IA5STRING *ia5 = ASN1_IA5STRING_new();
    char uri[64], u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(&prog, u);
    snprintf(uri, sizeof uri, "urn:uuid:%s", u);
    CU_ASSERT_FATAL(ASN1_STRING_set(ia5, uri, -1) == 1);
    GENERAL_NAME_set0_value(gn, GEN_URI, ia5);
    sk_GENERAL_NAME_push(names, gn);
    CU_ASSERT_FATAL(X509_add1_ext_i2d(forged, NID_subject_alt_name, names, 0, X509V3_ADD_DEFAULT) == 1);
    GENERAL_NAMES_free(names);
    resign(forged, pki.authority);
    p = fixture_service_policy(&pki);
    CU_ASSERT_EQUAL(verify_x509(p, forged, pki.authority_cert, why, sizeof why), IDEVS_ERR_PROGRAM_MISMATCH);
    idevs_cert_policy_free(p);
    X509_free(forged);
    idevs_identity_free(src);
    idevs_identity_free(x);
}

/* ---- key files ---- */

static char tmpdir[64];

static int files_init(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/idevs-test-certs-XXXXXX");
    if (mkdtemp(tmpdir) == NULL)
        return 1;
    return suite_init();
}

static int files_clean(void)
{
    if (harness_remove_tree(tmpdir) != 0)
        return 1;
    return suite_clean();
}

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tmpdir, name);
}

/* Writes the identity's chain as PEM. */
static void write_chain(const idevs_identity *id, const char *path)
{
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    for (size_t i = 0; i < idevs_identity_chain_count(id); i++) {
        size_t len = 0;
        const unsigned char *p = idevs_identity_chain_der(id, i, &len);
        X509 *x = d2i_X509(NULL, &p, (long)len);
        CU_ASSERT_FATAL(x != NULL && PEM_write_X509(f, x) == 1);
        X509_free(x);
    }
    fclose(f);
}

static void test_save_load_round_trip(void)
{
    char key[128], crt[128];
    path_of(key, sizeof key, "rt.key");
    path_of(crt, sizeof crt, "rt.crt");
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "roundtrip", &prog, M, D, 600, 0);
    CU_ASSERT_EQUAL_FATAL(idevs_identity_save_key(c, key), IDEVS_OK);
    write_chain(c, crt);
    struct stat st;
    CU_ASSERT_FATAL(stat(key, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* two PKCS#8 PEM blocks */
    FILE *f = fopen(key, "r");
    char line[128];
    int blocks = 0;
    while (fgets(line, sizeof line, f) != NULL)
        blocks += strcmp(line, "-----BEGIN PRIVATE KEY-----\n") == 0;
    fclose(f);
    CU_ASSERT_EQUAL(blocks, 2);

    idevs_identity *l = NULL;
    CU_ASSERT_EQUAL_FATAL(idevs_identity_load(key, crt, &l), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(idevs_identity_name(l), "roundtrip");
    CU_ASSERT(idevs_uuid_equal(idevs_identity_uuid(l), &prog));
    CU_ASSERT(memcmp(idevs_identity_sign_public(l), idevs_identity_sign_public(c), 32) == 0);
    CU_ASSERT(memcmp(idevs_identity_kex_public(l), idevs_identity_kex_public(c), 32) == 0);
    CU_ASSERT_EQUAL(idevs_identity_chain_count(l), 2);
    uint8_t d1[32], d2[32];
    CU_ASSERT_EQUAL(idevs_identity_cert_digest(l, d1), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_identity_cert_digest(c, d2), IDEVS_OK);
    CU_ASSERT(memcmp(d1, d2, 32) == 0);
    /* the loaded private keys work: sign with the loaded key, verify with the original public key */
    uint8_t sig[64];
    CU_ASSERT_EQUAL(idevs_ed25519_sign(idevs_identity_sign_key(l), (const uint8_t *)"m", 1, sig), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_ed25519_verify(idevs_identity_sign_public(c), (const uint8_t *)"m", 1, sig), IDEVS_OK);
    uint8_t s1[32], s2[32];
    CU_ASSERT_EQUAL(idevs_x25519(idevs_identity_kex_key(l), idevs_identity_kex_public(pki.ca), s1), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_x25519(idevs_identity_kex_key(pki.ca), idevs_identity_kex_public(c), s2), IDEVS_OK);
    CU_ASSERT(memcmp(s1, s2, 32) == 0);
    idevs_identity_free(l);
    /* never overwrite */
    CU_ASSERT_EQUAL(idevs_identity_save_key(c, key), IDEVS_ERR_IO);
    /* the CA: no agreement key in its certificate, still loads */
    char cakey[128], cacrt[128];
    path_of(cakey, sizeof cakey, "ca.key");
    path_of(cacrt, sizeof cacrt, "ca.crt");
    CU_ASSERT_EQUAL(idevs_identity_save_key(pki.ca, cakey), IDEVS_OK);
    write_chain(pki.ca, cacrt);
    CU_ASSERT_EQUAL(idevs_identity_load(cakey, cacrt, &l), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(idevs_identity_name(l), "fixture-ca");
    idevs_identity_free(l);
    idevs_identity_free(c);
}

static void test_key_file_refusals(void)
{
    char key[128], crt[128], link[128], other_crt[128], junk[128];
    path_of(key, sizeof key, "p.key");
    path_of(crt, sizeof crt, "p.crt");
    path_of(link, sizeof link, "link.key");
    path_of(other_crt, sizeof other_crt, "other.crt");
    path_of(junk, sizeof junk, "junk.key");
    idevs_identity *svc = fixture_service(&pki, "perm");
    idevs_identity *other = fixture_service(&pki, "other");
    idevs_identity *l = NULL;
    CU_ASSERT_EQUAL_FATAL(idevs_identity_save_key(svc, key), IDEVS_OK);
    write_chain(svc, crt);
    write_chain(other, other_crt);
    CU_ASSERT_EQUAL(idevs_identity_load(key, crt, &l), IDEVS_OK);
    idevs_identity_free(l);
    l = NULL;
    /* group or other permission bits */
    CU_ASSERT_FATAL(chmod(key, 0644) == 0);
    CU_ASSERT_EQUAL(idevs_identity_load(key, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_FATAL(chmod(key, 0640) == 0);
    CU_ASSERT_EQUAL(idevs_identity_load(key, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_FATAL(chmod(key, 0602) == 0);
    CU_ASSERT_EQUAL(idevs_identity_load(key, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_FATAL(chmod(key, 0400) == 0);
    CU_ASSERT_EQUAL(idevs_identity_load(key, crt, &l), IDEVS_OK);
    idevs_identity_free(l);
    l = NULL;
    CU_ASSERT_FATAL(chmod(key, 0600) == 0);
    /* a symbolic link, a directory, a missing file */
    CU_ASSERT_FATAL(symlink(key, link) == 0);
    CU_ASSERT_EQUAL(idevs_identity_load(link, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_EQUAL(idevs_identity_load(tmpdir, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_EQUAL(idevs_identity_load("/nonexistent/x.key", crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_EQUAL(idevs_identity_save_key(svc, link), IDEVS_ERR_IO);
    /* a certificate for other keys */
    CU_ASSERT_EQUAL(idevs_identity_load(key, other_crt, &l), IDEVS_ERR_KEY_FILE);
    /* a missing or garbage certificate file */
    CU_ASSERT_EQUAL(idevs_identity_load(key, "/nonexistent/x.crt", &l), IDEVS_ERR_IO);
    int fd = open(junk, O_CREAT | O_EXCL | O_WRONLY, 0600);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT(write(fd, "not a key\n", 10) == 10);
    close(fd);
    CU_ASSERT_EQUAL(idevs_identity_load(key, junk, &l), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_EQUAL(idevs_identity_load(junk, crt, &l), IDEVS_ERR_KEY_FILE);
    /* keys in the wrong order */
    char swapped[128];
    path_of(swapped, sizeof swapped, "swapped.key");
    {
        FILE *f = fopen(swapped, "w");
        CU_ASSERT_FATAL(f != NULL && fchmod(fileno(f), 0600) == 0);
        CU_ASSERT(PEM_write_PKCS8PrivateKey(f, idevs_identity_kex_key(svc), NULL, NULL, 0, NULL, NULL) == 1);
        CU_ASSERT(PEM_write_PKCS8PrivateKey(f, idevs_identity_sign_key(svc), NULL, NULL, 0, NULL, NULL) == 1);
        fclose(f);
    }
    CU_ASSERT_EQUAL(idevs_identity_load(swapped, crt, &l), IDEVS_ERR_KEY_FILE);
    CU_ASSERT_PTR_NULL(l);
    idevs_identity_free(other);
    idevs_identity_free(svc);
}

static void test_ca_file(void)
{
    char crt[128], leaf[128];
    path_of(crt, sizeof crt, "anchors.crt");
    path_of(leaf, sizeof leaf, "leaf-anchor.crt");
    FILE *f = fopen(crt, "w");
    CU_ASSERT_FATAL(f != NULL && PEM_write_X509(f, pki.ca_cert) == 1);
    fclose(f);
    idevs_identity *svc = fixture_service(&pki, "viafile");
    write_chain(svc, leaf);
    idevs_cert_policy *p = idevs_cert_policy_new();
    char why[256];
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca_file(p, crt), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca_file(p, "/nonexistent/ca.crt"), IDEVS_ERR_IO);
    CU_ASSERT_EQUAL(idevs_cert_policy_add_ca_file(p, leaf), IDEVS_ERR_INVALID_ARG);
    idevs_cert_policy_free(p);
    idevs_identity_free(svc);
}

/* ---- reading PEM chains (certs/chain.c) ---- */

/* Appends a PEM block of label over data to buf (NUL-terminated, at most cap bytes). */
static void pem_append(char *buf, size_t cap, const char *label, const char *header, const uint8_t *data,
                       size_t len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    CU_ASSERT_FATAL(bio != NULL && PEM_write_bio(bio, label, header, data, (long)len) > 0);
    char *text = NULL;
    long n = BIO_get_mem_data(bio, &text);
    size_t used = strlen(buf);
    CU_ASSERT_FATAL(n > 0 && used + (size_t)n < cap);
    memcpy(buf + used, text, (size_t)n);
    buf[used + (size_t)n] = '\0';
    BIO_free(bio);
}

/* Appends the PEM of the identity's chain certificate i. */
static void pem_cert(char *buf, size_t cap, const idevs_identity *id, size_t i)
{
    size_t len = 0;
    const uint8_t *der = idevs_identity_chain_der(id, i, &len);
    CU_ASSERT_FATAL(der != NULL);
    pem_append(buf, cap, "CERTIFICATE", "", der, len);
}

static idevs_err read_text(const char *text, size_t max, size_t *count, char *why, size_t why_len)
{
    uint8_t *der[IDEVS_CHAIN_PEM_COUNT_MAX];
    size_t len[IDEVS_CHAIN_PEM_COUNT_MAX];
    idevs_err err = idevs_cert_read_chain_pem(text, strlen(text), der, len, max, count, why, why_len);
    if (err == IDEVS_OK)
        idevs_cert_chain_free(der, *count);
    return err;
}

static bool printable_ascii(const char *s)
{
    for (; *s != '\0'; s++)
        if (*s < 0x20 || *s > 0x7e)
            return false;
    return true;
}

static void test_chain_pem_round_trip(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "chainpem", &prog, M, D, 600, 0);
    static char text[4 * IDEVS_CHAIN_PEM_EACH_MAX];
    text[0] = '\0';
    pem_cert(text, sizeof text, c, 0);
    pem_cert(text, sizeof text, c, 1);
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX], count = 99;
    char why[256];
    CU_ASSERT_EQUAL_FATAL(idevs_cert_read_chain_pem(text, strlen(text), der, len, IDEVS_CHAIN_MAX, &count, why,
                                                    sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(count, 2);
    for (size_t i = 0; i < 2; i++) {
        size_t want_len = 0;
        const uint8_t *want = idevs_identity_chain_der(c, i, &want_len);
        CU_ASSERT(len[i] == want_len && memcmp(der[i], want, want_len) == 0);
    }
    /* what it read verifies as the chain it is */
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    CU_ASSERT_EQUAL(idevs_cert_verify(p, (const uint8_t *const *)der, len, count, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);
    idevs_cert_chain_free(der, count);
    CU_ASSERT_PTR_NULL(der[0]);

    /* CRLF line ends, white space around and between, no final line end */
    static char crlf[sizeof text * 2];
    size_t k = 0;
    crlf[k++] = '\n';
    for (const char *q = text; *q != '\0'; q++) {
        if (*q == '\n')
            crlf[k++] = '\r';
        crlf[k++] = *q;
    }
    while (k > 0 && (crlf[k - 1] == '\n' || crlf[k - 1] == '\r'))
        k--;
    crlf[k] = '\0';
    CU_ASSERT_EQUAL(read_text(crlf, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(count, 2);
    idevs_identity_free(c);
}

static void test_chain_pem_count_limit(void)
{
    idevs_identity *svc = fixture_service(&pki, "counted");
    static char text[8 * IDEVS_CHAIN_PEM_EACH_MAX];
    size_t count = 99;
    char why[256];
    text[0] = '\0';
    for (int i = 0; i < IDEVS_CHAIN_MAX; i++)
        pem_cert(text, sizeof text, svc, 0);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(count, IDEVS_CHAIN_MAX);
    /* one more than max is an error, not a chain cut at max */
    pem_cert(text, sizeof text, svc, 0);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(count, 0);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "more than 4"));
    CU_ASSERT_EQUAL(read_text(text, 5, &count, why, sizeof why), IDEVS_OK);
    text[0] = '\0';
    pem_cert(text, sizeof text, svc, 0);
    pem_cert(text, sizeof text, svc, 0);
    CU_ASSERT_EQUAL(read_text(text, 1, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(read_text(text, 0, &count, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_PEM_COUNT_MAX + 1, &count, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    idevs_identity_free(svc);
}

static void test_chain_pem_refusals(void)
{
    idevs_identity *svc = fixture_service(&pki, "refused");
    static char one[IDEVS_CHAIN_PEM_EACH_MAX], text[4 * IDEVS_CHAIN_PEM_EACH_MAX];
    one[0] = '\0';
    pem_cert(one, sizeof one, svc, 0);
    size_t count = 99;
    char why[256];
    struct {
        const char *before, *after;
        const char *what;
    } around[] = {
        {"", "garbage\n", "text after certificate 1"},
        {"", "-----END CERTIFICATE-----\n", "text after certificate 1"},
        {"Certificate:\n    Data: ...\n", "", "text before the first PEM block"},
        {"", "-----BEGIN CERTIFICATE-----\nMIIB\n", "no END line"},
        {"", "-----BEGIN CERTIFICATE\n-----END CERTIFICATE-----\n", "no complete BEGIN line"},
    };
    for (size_t i = 0; i < sizeof around / sizeof around[0]; i++) {
        snprintf(text, sizeof text, "%s%s%s", around[i].before, one, around[i].after);
        CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
        CU_ASSERT_EQUAL(count, 0);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, around[i].what));
    }
    /* text between two certificates */
    snprintf(text, sizeof text, "%s# the authority\n%s", one, one);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* "-----END CERTIFICATE-----" directly followed by text */
    snprintf(text, sizeof text, "%s", one);
    text[strlen(text) - 1] = 'x';
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);

    /* a block that is not a certificate, after and before one */
    static const uint8_t junk[48] = {1, 2, 3};
    snprintf(text, sizeof text, "%s", one);
    pem_append(text, sizeof text, "PRIVATE KEY", "", junk, sizeof junk);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'PRIVATE KEY' block"));
    text[0] = '\0';
    pem_append(text, sizeof text, "X509 CRL", "", junk, sizeof junk);
    strcat(text, one);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* a label with control characters and escapes is not repeated as such */
    text[0] = '\0';
    pem_append(text, sizeof text, "EVIL\x1b[2J\x07 LABEL", "", junk, sizeof junk);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT(printable_ascii(why));
    /* a CERTIFICATE block that is not DER X.509, or one with bytes after the certificate */
    text[0] = '\0';
    pem_append(text, sizeof text, "CERTIFICATE", "", junk, sizeof junk);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    size_t dlen = 0;
    const uint8_t *d = idevs_identity_chain_der(svc, 0, &dlen);
    uint8_t longer[IDEVS_CERT_MAX + 64];
    memcpy(longer, d, dlen);
    longer[dlen] = 0x05, longer[dlen + 1] = 0x00; /* a DER NULL after the certificate */
    text[0] = '\0';
    pem_append(text, sizeof text, "CERTIFICATE", "", longer, dlen + 2);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* encapsulated headers */
    text[0] = '\0';
    pem_append(text, sizeof text, "CERTIFICATE", "Proc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00000000000000000000000000000000\n", d, dlen);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* bad base64 */
    snprintf(text, sizeof text, "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n");
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    /* nothing, white space only */
    CU_ASSERT_EQUAL(read_text("", IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_EQUAL(read_text(" \n\t\r\n", IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "no PEM certificate"));
    /* a NUL byte, even after a complete certificate */
    size_t n = strlen(one);
    memcpy(text, one, n + 1);
    memcpy(text + n, "\0\n", 2);
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    CU_ASSERT_EQUAL(idevs_cert_read_chain_pem(text, n + 2, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_CERT_MALFORMED);
    /* a certificate above IDEVS_CERT_MAX */
    static uint8_t big[IDEVS_CERT_MAX + 1];
    memset(big, 0x30, sizeof big);
    text[0] = '\0';
    pem_append(text, sizeof text, "CERTIFICATE", "", big, sizeof big);
    CU_ASSERT_EQUAL(read_text(text, IDEVS_CHAIN_MAX, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    /* text larger than max certificates take */
    static char huge[2 * IDEVS_CHAIN_PEM_EACH_MAX + 2];
    memset(huge, ' ', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    CU_ASSERT_EQUAL(read_text(huge, 2, &count, why, sizeof why), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_pem(NULL, 1, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_INVALID_ARG);
    idevs_identity_free(svc);
}

static void test_chain_file(void)
{
    char crt[128], five[128], dir[128], fifo[128];
    path_of(crt, sizeof crt, "chain-file.crt");
    path_of(five, sizeof five, "chain-five.crt");
    path_of(fifo, sizeof fifo, "chain.fifo");
    path_of(dir, sizeof dir, "");
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "chainfile", &prog, M, D, 600, 0);
    write_chain(c, crt);
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX], count = 0;
    char why[512];
    CU_ASSERT_EQUAL_FATAL(idevs_cert_read_chain_file(crt, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                          IDEVS_OK);
    CU_ASSERT_EQUAL(count, 2);
    idevs_cert_chain_free(der, count);
    /* five certificates in a file: an error naming the file, not the first four */
    FILE *f = fopen(five, "w");
    CU_ASSERT_FATAL(f != NULL);
    for (int i = 0; i < 5; i++) {
        size_t l = 0;
        const unsigned char *p = idevs_identity_chain_der(c, (size_t)(i % 2), &l);
        X509 *x = d2i_X509(NULL, &p, (long)l);
        CU_ASSERT_FATAL(x != NULL && PEM_write_X509(f, x) == 1);
        X509_free(x);
    }
    fclose(f);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(five, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(count, 0);
    CU_ASSERT(strncmp(why, five, strlen(five)) == 0);
    /* trailing garbage in a file */
    f = fopen(crt, "a");
    CU_ASSERT_FATAL(f != NULL);
    fputs("trailing\n", f);
    fclose(f);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(crt, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_CERT_MALFORMED);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file("/nonexistent/chain.crt", der, len, IDEVS_CHAIN_MAX, &count, why,
                                               sizeof why), IDEVS_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "No such file"));
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(dir, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_IO);
    CU_ASSERT_FATAL(mkfifo(fifo, 0600) == 0);
    CU_ASSERT_EQUAL(idevs_cert_read_chain_file(fifo, der, len, IDEVS_CHAIN_MAX, &count, why, sizeof why),
                    IDEVS_ERR_IO);
    idevs_identity_free(c);
}

/* ---- path rules: leaf usage, algorithm strength, the anchor's self-signature, unknown evidence fields ---- */

/* Replaces (or, with value NULL, removes) a standard extension of x, in OpenSSL's configuration syntax; issuer
 * (optional) is what "keyid" refers to. */
static void set_issued_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    int pos = X509_get_ext_by_NID(x, nid, -1);
    if (pos >= 0)
        X509_EXTENSION_free(X509_delete_ext(x, pos));
    if (value == NULL)
        return;
    X509V3_CTX ctx;
    X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    CU_ASSERT_FATAL(ext != NULL && X509_add_ext(x, ext, -1) == 1);
    X509_EXTENSION_free(ext);
}

static void set_std_ext(X509 *x, int nid, const char *value)
{
    set_issued_ext(x, NULL, nid, value);
}

/* A service leaf of the fixture CA with its basicConstraints and keyUsage replaced (NULL: absent). */
static idevs_err verify_service_with(const idevs_identity *svc, const char *bc, const char *ku, char *why,
                                     size_t why_len)
{
    idevs_cert_policy *p = fixture_service_policy(&pki);
    X509 *x = leaf_of(svc);
    set_std_ext(x, NID_basic_constraints, bc);
    set_std_ext(x, NID_key_usage, ku);
    resign(x, pki.ca);
    idevs_err err = verify_x509(p, x, NULL, why, why_len);
    X509_free(x);
    idevs_cert_policy_free(p);
    return err;
}

static void test_leaf_usage(void)
{
    idevs_identity *svc = fixture_service(&pki, "usage");
    char why[256];
    /* what idevs issues, and the same without basicConstraints */
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:FALSE", "critical,digitalSignature", why, sizeof why),
                    IDEVS_OK);
    CU_ASSERT_EQUAL(verify_service_with(svc, NULL, "critical,digitalSignature", why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_service_with(svc, "CA:FALSE", "digitalSignature,keyAgreement", why, sizeof why), IDEVS_OK);
    /* cA TRUE whatever the keyUsage (X509_check_ca alone lets this one pass) */
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:TRUE", "critical,digitalSignature", why, sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'usage'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "CA"));
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:TRUE,pathlen:0", "critical,digitalSignature", why,
                                        sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    /* a signing usage of a CA, with cA FALSE or without basicConstraints */
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:FALSE", "critical,digitalSignature,cRLSign", why,
                                        sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "cRLSign"));
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:FALSE", "critical,digitalSignature,keyCertSign", why,
                                        sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_EQUAL(verify_service_with(svc, NULL, "critical,digitalSignature,cRLSign", why, sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    /* keyUsage absent, or without digitalSignature */
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:FALSE", NULL, why, sizeof why), IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "digitalSignature"));
    CU_ASSERT_EQUAL(verify_service_with(svc, "critical,CA:FALSE", "critical,keyAgreement", why, sizeof why),
                    IDEVS_ERR_CERT_NOT_IDEVS);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "digitalSignature"));
    idevs_identity_free(svc);
}

/* A self-signed operator CA with an RSA key of the given size, signing with md. */
static X509 *rsa_ca(EVP_PKEY **key, int bits, const EVP_MD *md)
{
    *key = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
    CU_ASSERT_PTR_NOT_NULL_FATAL(*key);
    X509 *ca = X509_new();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ca);
    X509_NAME *name = X509_get_subject_name(ca);
    CU_ASSERT_FATAL(X509_set_version(ca, 2) == 1 &&
                    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"rsa-ca", -1, -1,
                                               0) == 1 &&
                    X509_set_issuer_name(ca, name) == 1 && X509_set_pubkey(ca, *key) == 1 &&
                    ASN1_INTEGER_set(X509_get_serialNumber(ca), 1) == 1 &&
                    X509_gmtime_adj(X509_getm_notBefore(ca), -60) != NULL &&
                    X509_gmtime_adj(X509_getm_notAfter(ca), 86400) != NULL);
    set_std_ext(ca, NID_basic_constraints, "critical,CA:TRUE");
    set_std_ext(ca, NID_key_usage, "critical,keyCertSign,cRLSign");
    set_std_ext(ca, NID_subject_key_identifier, "hash");
    CU_ASSERT_FATAL(X509_sign(ca, *key, md) > 0);
    return ca;
}

/* A service leaf re-issued by an RSA CA of the given size (self-signed with ca_md), signed with md, verified
 * against that CA alone. */
static idevs_err verify_under_rsa(const idevs_identity *svc, int bits, const EVP_MD *ca_md, const EVP_MD *md,
                                  char *why, size_t why_len)
{
    EVP_PKEY *key = NULL;
    X509 *ca = rsa_ca(&key, bits, ca_md);
    X509 *x = leaf_of(svc);
    CU_ASSERT_FATAL(X509_set_issuer_name(x, X509_get_subject_name(ca)) == 1);
    set_issued_ext(x, ca, NID_authority_key_identifier, "keyid:always"); /* strict mode requires it */
    CU_ASSERT_FATAL(X509_sign(x, key, md) > 0);
    idevs_cert_policy *p = idevs_cert_policy_new();
    CU_ASSERT_FATAL(p != NULL && idevs_cert_policy_add_ca(p, ca) == IDEVS_OK);
    idevs_err err = verify_x509(p, x, NULL, why, why_len);
    idevs_cert_policy_free(p);
    X509_free(x);
    X509_free(ca);
    EVP_PKEY_free(key);
    return err;
}

static void test_weak_algorithms(void)
{
    idevs_identity *svc = fixture_service(&pki, "legacy");
    char why[256];
    /* RSA-1024 signing with SHA-1: both too weak */
    CU_ASSERT_EQUAL(verify_under_rsa(svc, 1024, EVP_sha1(), EVP_sha1(), why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'legacy'"));
    /* a SHA-1 signature by a strong key */
    CU_ASSERT_EQUAL(verify_under_rsa(svc, 2048, EVP_sha256(), EVP_sha1(), why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "digest"));
    /* an RSA-1024 key signing with SHA-256 */
    CU_ASSERT_EQUAL(verify_under_rsa(svc, 1024, EVP_sha256(), EVP_sha256(), why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "key"));
    /* level 2 (112 bits) accepts RSA-2048 with SHA-256, which level 3 would refuse */
    CU_ASSERT_EQUAL(verify_under_rsa(svc, 2048, EVP_sha256(), EVP_sha256(), why, sizeof why), IDEVS_OK);
    /* the anchor's own self-signature digest is not held to the level (OpenSSL's rule), only its key */
    CU_ASSERT_EQUAL(verify_under_rsa(svc, 2048, EVP_sha1(), EVP_sha256(), why, sizeof why), IDEVS_OK);
    idevs_identity_free(svc);
}

static void test_anchor_self_signature(void)
{
    idevs_identity *svc = fixture_service(&pki, "anchored");
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "anchored-c", &prog, M, D, 600, 0);
    char why[256];
    /* the fixture CA with one bit of its self-signature flipped: the signature is the DER's last bytes */
    uint8_t *der = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_cert_to_der(pki.ca_cert, &der, &len) == IDEVS_OK && len > 0);
    der[len - 1] ^= 0x01;
    const unsigned char *q = der;
    X509 *bad = d2i_X509(NULL, &q, (long)len);
    free(der);
    CU_ASSERT_PTR_NOT_NULL_FATAL(bad);
    idevs_cert_policy *p = idevs_cert_policy_new();
    CU_ASSERT_FATAL(p != NULL && idevs_cert_policy_add_ca(p, bad) == IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "'anchored'"));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "signature"));
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_ERR_CERT_UNTRUSTED);
    idevs_cert_policy_free(p);
    /* the intact anchor still verifies both */
    p = fixture_service_policy(&pki);
    CU_ASSERT_EQUAL(verify_id(p, svc, NULL, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(verify_id(p, c, NULL, why, sizeof why), IDEVS_OK);
    idevs_cert_policy_free(p);
    X509_free(bad);
    idevs_identity_free(c);
    idevs_identity_free(svc);
}

/* Evidence that verifies but for a field of a number idevs.v1.Evidence does not declare. */
static void test_evidence_unknown_field(void)
{
    idevs_uuid prog;
    idevs_uuid_generate(&prog);
    idevs_identity *c = fixture_compartment(&pki, "extended", &prog, M, D, 600, 0);
    idevs_cert_policy *p = fixture_compartment_policy(&pki, M, D);
    idevs_evidence ev = make_evidence(c, IDEVS_BACKEND_PROCESS);
    uint8_t buf[512];
    size_t n = pack_evidence(&ev, 1, buf, sizeof buf - 8);
    char why[256];
    static const struct {
        uint8_t bytes[4];
        size_t len;
    } extra[] = {
        {{0x58, 0x01}, 2},             /* field 11, varint 1 */
        {{0xa2, 0x06, 0x01, 0x00}, 4}, /* field 100, 1 byte */
        {{0x78, 0x00}, 2},             /* field 15, varint 0: present although zero */
    };
    for (size_t i = 0; i < sizeof extra / sizeof extra[0]; i++) {
        X509 *x = leaf_of(c);
        delete_ext(x, IDEVS_OID_EVIDENCE);
        uint8_t with[sizeof buf];
        memcpy(with, buf, n);
        memcpy(with + n, extra[i].bytes, extra[i].len);
        add_octets_ext(x, IDEVS_OID_EVIDENCE, with, n + extra[i].len);
        resign(x, pki.authority);
        CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_ERR_EVIDENCE_MALFORMED);
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "'extended'"));
        CU_ASSERT_PTR_NOT_NULL(strstr(why, "unknown field"));
        idevs_evidence out;
        CU_ASSERT_EQUAL(idevs_cert_read_evidence(x, &out), IDEVS_ERR_EVIDENCE_MALFORMED);
        X509_free(x);
    }
    /* the same evidence without the extra field verifies */
    X509 *x = leaf_of(c);
    delete_ext(x, IDEVS_OID_EVIDENCE);
    add_octets_ext(x, IDEVS_OID_EVIDENCE, buf, n);
    resign(x, pki.authority);
    CU_ASSERT_EQUAL(verify_x509(p, x, pki.authority_cert, why, sizeof why), IDEVS_OK);
    X509_free(x);
    idevs_cert_policy_free(p);
    idevs_identity_free(c);
}

static CU_TestInfo issue_tests[] = {
    {"service round trip", test_service_round_trip},
    {"compartment round trip, nonce", test_compartment_round_trip},
    {"certificate shape", test_certificate_shape},
    {"evidence read and key binding", test_evidence_read_and_binding},
    {"evidence missing on a service", test_evidence_missing_on_service},
    {"backend names", test_backend_names},
    {"issue refusals", test_issue_refusals},
    {"identity names", test_identity_names},
    {"identity from private bytes", test_from_private},
    {"set_chain refusals", test_set_chain_refusals},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo verify_tests[] = {
    {"malformed, truncated, garbage, oversize", test_malformed_der},
    {"leaf that is a CA", test_leaf_is_ca},
    {"not an idevs certificate", test_not_idevs},
    {"wrong CA, missing intermediate", test_wrong_ca},
    {"expired, not yet valid", test_expired_and_not_yet_valid},
    {"evidence missing", test_evidence_missing},
    {"evidence malformed", test_evidence_malformed},
    {"key binding mismatch", test_key_binding_mismatch},
    {"backends and process opt-in", test_backends},
    {"debug flag", test_debug_flag},
    {"measurement, descriptor, program", test_measurement_descriptor_program},
    {"leaf: no cA TRUE, no keyCertSign or cRLSign, keyUsage digitalSignature required", test_leaf_usage},
    {"RSA-1024 and SHA-1 refused (security level 2), RSA-2048/SHA-256 accepted", test_weak_algorithms},
    {"the trust anchor's self-signature is checked", test_anchor_self_signature},
    {"evidence with a field of unknown number is malformed", test_evidence_unknown_field},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo chain_tests[] = {
    {"PEM chain round trip, CRLF, white space", test_chain_pem_round_trip},
    {"PEM chain: more than max certificates is an error", test_chain_pem_count_limit},
    {"PEM chain: garbage, other blocks, bad DER, headers, NUL, oversize", test_chain_pem_refusals},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo file_tests[] = {
    {"save and load round trip", test_save_load_round_trip},
    {"key file refusals", test_key_file_refusals},
    {"CA file", test_ca_file},
    {"PEM chain file: read, count limit, garbage, not a file", test_chain_file},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    CU_SuiteInfo suites[] = {
        {"certs-issue", suite_init, suite_clean, NULL, NULL, issue_tests},
        {"certs-verify", suite_init, suite_clean, NULL, NULL, verify_tests},
        {"certs-chain-pem", suite_init, suite_clean, NULL, NULL, chain_tests},
        {"certs-files", files_init, files_clean, NULL, NULL, file_tests},
        CU_SUITE_INFO_NULL,
    };
    return harness_run(suites);
}
