/* FOR TESTS AND TEST VECTORS ONLY: makes sealing deterministic.
 *
 * Sealing draws random bytes for two things: the 32-byte private key of each new ephemeral X25519 key pair
 * (one per sending epoch) and the 16-byte message id of each envelope. A test-vector generator and the test
 * that checks the committed vectors replace that source with their own, so that identical inputs give
 * identical envelopes (Ed25519 signatures are deterministic already, and the clock is an option of the
 * context). Production code must never call this: fixed "random" bytes reuse ephemeral keys and message ids,
 * which breaks forward secrecy and deduplication. */
#ifndef IDEVS_ENVELOPE_TESTING_H
#define IDEVS_ENVELOPE_TESTING_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_envelope.h"
#include "idevs_error.h"

/* Fills buf with len bytes; what is the caller's business (see above). Returning anything but IDEVS_OK makes
 * the seal fail with that error. The requests come in this order for each seal: 32 bytes of ephemeral private
 * key when an epoch starts, then 16 bytes of message id. */
typedef idevs_err (*idevs_envelope_testing_random_fn)(void *arg, uint8_t *buf, size_t len);

/* Replaces the random source of ctx (NULL restores the system's). Tests and vectors only. */
void idevs_envelope_testing_set_random(idevs_envelope_ctx *ctx, idevs_envelope_testing_random_fn fn, void *arg);

#endif
