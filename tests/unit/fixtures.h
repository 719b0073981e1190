/* Test fixtures: a throw-away operator CA, attestation authority, service identities and attested
 * compartments, all in memory. */
#ifndef IDEVS_TEST_FIXTURES_H
#define IDEVS_TEST_FIXTURES_H
#endif
