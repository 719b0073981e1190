/* Test fixtures: a throw-away operator CA, attestation authority, service identities and attested
 * compartments, all in memory. Every function asserts (CU_ASSERT_FATAL) on failure inside a test; outside one
 * (in a suite initialisation function) it prints the failed condition and aborts. */
#ifndef IDEVS_TEST_FIXTURES_H
#define IDEVS_TEST_FIXTURES_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/x509.h>

#include "idevs_cert.h"
#include "idevs_identity.h"
#include "idevs_uuid.h"

typedef struct fixture_pki {
    idevs_identity *ca;         /* operator CA keys, name "fixture-ca" */
    X509 *ca_cert;              /* self-signed, 30 days */
    idevs_identity *authority;  /* attestation authority keys, name "fixture-authority" */
    X509 *authority_cert;       /* issued by the CA, CA:TRUE pathlen 0, 30 days */
} fixture_pki;

/* A fresh CA and attestation authority. */
void fixture_pki_init(fixture_pki *pki);
/* Frees everything fixture_pki_init made; the struct is zeroed. */
void fixture_pki_free(fixture_pki *pki);

/* A service identity with a random UUID, generated keys and a 30-day certificate issued by the CA;
 * its chain is [leaf]. Free with idevs_identity_free. */
idevs_identity *fixture_service(fixture_pki *pki, const char *name);

/* A service identity of the given UUID and private keys (instances of one identity share them), with its own
 * 30-day certificate issued by the CA: two calls with the same keys give two certificates of the same keys. */
idevs_identity *fixture_service_keys(fixture_pki *pki, const char *name, const idevs_uuid *uuid,
                                     const uint8_t sign_seed[32], const uint8_t kex_private[32]);

/* An attested compartment: generated keys, evidence (backend process, the given program, measurement,
 * descriptor digest and flags, a fresh 16-byte nonce, issued now), certificate valid validity_seconds,
 * signed by the authority; its chain is [leaf, authority]. The identity's UUID is *program (the SAN uuid of
 * a compartment certificate is its program UUID). Free with idevs_identity_free. */
idevs_identity *fixture_compartment(fixture_pki *pki, const char *name, const idevs_uuid *program,
                                    const uint8_t measurement[32], const uint8_t descriptor[32],
                                    unsigned validity_seconds, uint32_t flags);

/* Trusts the CA; no evidence required. Free with idevs_cert_policy_free. */
idevs_cert_policy *fixture_service_policy(fixture_pki *pki);

/* Trusts the CA, requires evidence, opts in to the process backend, expects that measurement and descriptor.
 * Free with idevs_cert_policy_free. */
idevs_cert_policy *fixture_compartment_policy(fixture_pki *pki, const uint8_t measurement[32],
                                              const uint8_t descriptor[32]);

/* Fills der[] and len[] (arrays of IDEVS_CHAIN_MAX) with the identity's chain, borrowed from it; returns the
 * count. */
size_t fixture_chain(const idevs_identity *id, const uint8_t **der, size_t *len);

#endif
