#include "fixtures.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <CUnit/CUnit.h>
#include <CUnit/TestRun.h>

#include "idevs_crypto.h"

#define FIXTURE_DAYS 30

/* CU_ASSERT_FATAL inside a test; outside one (a suite's init function), a message and abort(). */
#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (CU_get_current_test() != NULL) {                                                 \
            CU_ASSERT_FATAL(cond);                                                           \
        } else if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: fixture setup failed: %s\n", __FILE__, __LINE__, #cond); \
            abort();                                                                         \
        }                                                                                    \
    } while (0)

/* Sets the identity's chain to cert followed by the optional intermediate. */
static void set_chain(idevs_identity *id, X509 *cert, X509 *intermediate)
{
    uint8_t *der[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    size_t count = intermediate != NULL ? 2 : 1;
    CHECK(idevs_cert_to_der(cert, &der[0], &len[0]) == IDEVS_OK);
    if (intermediate != NULL)
        CHECK(idevs_cert_to_der(intermediate, &der[1], &len[1]) == IDEVS_OK);
    idevs_err err = idevs_identity_set_chain(id, (const uint8_t *const *)der, len, count);
    free(der[0]);
    free(der[1]);
    CHECK(err == IDEVS_OK);
}

void fixture_pki_init(fixture_pki *pki)
{
    idevs_uuid u;
    memset(pki, 0, sizeof *pki);
    idevs_uuid_generate(&u);
    CHECK(idevs_identity_generate(&u, "fixture-ca", &pki->ca) == IDEVS_OK);
    CHECK(idevs_cert_issue_ca(pki->ca, FIXTURE_DAYS, &pki->ca_cert) == IDEVS_OK);
    set_chain(pki->ca, pki->ca_cert, NULL);
    idevs_uuid_generate(&u);
    CHECK(idevs_identity_generate(&u, "fixture-authority", &pki->authority) == IDEVS_OK);
    CHECK(idevs_cert_issue_authority(pki->ca, pki->ca_cert, pki->authority, FIXTURE_DAYS,
                                               &pki->authority_cert) == IDEVS_OK);
    set_chain(pki->authority, pki->authority_cert, NULL);
}

void fixture_pki_free(fixture_pki *pki)
{
    if (pki == NULL)
        return;
    idevs_identity_free(pki->ca);
    X509_free(pki->ca_cert);
    idevs_identity_free(pki->authority);
    X509_free(pki->authority_cert);
    memset(pki, 0, sizeof *pki);
}

static idevs_identity *certified_service(fixture_pki *pki, idevs_identity *id)
{
    X509 *cert = NULL;
    CHECK(idevs_cert_issue_service(pki->ca, pki->ca_cert, id, FIXTURE_DAYS, &cert) == IDEVS_OK);
    set_chain(id, cert, NULL);
    X509_free(cert);
    return id;
}

idevs_identity *fixture_service(fixture_pki *pki, const char *name)
{
    idevs_uuid u;
    idevs_identity *id = NULL;
    idevs_uuid_generate(&u);
    CHECK(idevs_identity_generate(&u, name, &id) == IDEVS_OK);
    return certified_service(pki, id);
}

idevs_identity *fixture_service_keys(fixture_pki *pki, const char *name, const idevs_uuid *uuid,
                                     const uint8_t sign_seed[32], const uint8_t kex_private[32])
{
    idevs_identity *id = NULL;
    CHECK(idevs_identity_from_private(uuid, name, sign_seed, kex_private, &id) == IDEVS_OK);
    return certified_service(pki, id);
}

idevs_identity *fixture_compartment(fixture_pki *pki, const char *name, const idevs_uuid *program,
                                    const uint8_t measurement[32], const uint8_t descriptor[32],
                                    unsigned validity_seconds, uint32_t flags)
{
    idevs_identity *id = NULL;
    X509 *cert = NULL;
    idevs_evidence ev;
    memset(&ev, 0, sizeof ev);
    CHECK(idevs_identity_generate(program, name, &id) == IDEVS_OK);
    ev.backend = IDEVS_BACKEND_PROCESS;
    memcpy(ev.measurement, measurement, IDEVS_SHA256_LEN);
    ev.program_uuid = *program;
    memcpy(ev.descriptor_digest, descriptor, IDEVS_SHA256_LEN);
    CHECK(idevs_key_binding(idevs_identity_sign_public(id), idevs_identity_kex_public(id),
                                      ev.key_binding) == IDEVS_OK);
    ev.issued_at = (uint64_t)time(NULL);
    ev.nonce_len = 16;
    CHECK(idevs_random(ev.nonce, ev.nonce_len) == IDEVS_OK);
    ev.flags = flags;
    CHECK(idevs_cert_issue_compartment(pki->authority, pki->authority_cert, id, &ev, validity_seconds,
                                                 &cert) == IDEVS_OK);
    set_chain(id, cert, pki->authority_cert);
    X509_free(cert);
    return id;
}

idevs_cert_policy *fixture_service_policy(fixture_pki *pki)
{
    idevs_cert_policy *p = idevs_cert_policy_new();
    CHECK(p != NULL);
    CHECK(idevs_cert_policy_add_ca(p, pki->ca_cert) == IDEVS_OK);
    return p;
}

idevs_cert_policy *fixture_compartment_policy(fixture_pki *pki, const uint8_t measurement[32],
                                              const uint8_t descriptor[32])
{
    idevs_cert_policy *p = fixture_service_policy(pki);
    idevs_cert_policy_require_evidence(p, true);
    idevs_cert_policy_allow_process_backend_insecure(p);
    CHECK(idevs_cert_policy_add_measurement(p, measurement) == IDEVS_OK);
    idevs_cert_policy_expect_descriptor(p, descriptor);
    return p;
}

size_t fixture_chain(const idevs_identity *id, const uint8_t **der, size_t *len)
{
    size_t n = idevs_identity_chain_count(id);
    CHECK(n <= IDEVS_CHAIN_MAX);
    for (size_t i = 0; i < n; i++)
        der[i] = idevs_identity_chain_der(id, i, &len[i]);
    return n;
}
