/* A fixed world for the fuzz targets that need keys, built from the committed test vectors
 * (tests/vectors/envelope-v1.json): their operator CA, sender and recipient, with their private keys and
 * certificates valid for a century, at the vectors' fixed time. The seed writer (make_seeds.c) and the targets
 * build the same world, so that a sealed seed opens in the target, on any day. */
#ifndef IDEVS_FUZZ_WORLD_H
#define IDEVS_FUZZ_WORLD_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"

#define FUZZ_SEEDS_MAX 16

typedef struct fuzz_world {
    idevs_identity *ca, *sender, *recipient; /* sender and recipient carry their one-certificate chains */
    uint8_t *ca_der;
    size_t ca_der_len;
    idevs_cert_policy *policy; /* trusts the CA, at the vectors' time */
    char topic[128];           /* the vectors' topic */
    uint64_t clock_ms;         /* the vectors' epoch: every context's clock */
    /* the measurement and descriptor digest a compartment's evidence carries and its policy expects */
    uint8_t measurement[32], descriptor[32];
} fuzz_world;

/* Builds the world or exits with a message. */
void fuzz_world_init(fuzz_world *w);
void fuzz_world_free(fuzz_world *w);

/* Options of every context of the world: suite, and the world's fixed clock. */
void fuzz_world_options(fuzz_world *w, uint32_t suite, idevs_envelope_options *o);

/* One envelope the sender sealed to the recipient on the world's topic, and what it carries. */
typedef struct fuzz_sealed {
    uint8_t *bytes;
    size_t len;
    idevs_msgid message_id;
    uint8_t payload[4096];
    size_t payload_len;
} fuzz_sealed;

/* Seals the same envelopes at every call (a deterministic random source): for each suite, an epoch's first
 * message (with the sender's chain) and later ones (with its digest), with and without provenance, empty and
 * 4 KiB payloads. Returns how many (at most FUZZ_SEEDS_MAX); exits on failure. */
size_t fuzz_world_seal(fuzz_world *w, fuzz_sealed out[FUZZ_SEEDS_MAX]);
void fuzz_sealed_free(fuzz_sealed *s, size_t count);

#endif
