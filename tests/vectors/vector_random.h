/* What makes sealing deterministic for the envelope test vectors (envelope-v1.json), shared by their generator
 * (make_vectors.c) and their test (tests/unit/test_vectors.c): a random source that hands out queued byte
 * strings in order, and a fixed clock. */
#ifndef IDEVS_TEST_VECTOR_RANDOM_H
#define IDEVS_TEST_VECTOR_RANDOM_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_envelope.h"

typedef struct vector_queue {
    const uint8_t *item[8];
    size_t len[8];
    size_t n, next;
} vector_queue;

/* For idevs_envelope_testing_set_random, arg a vector_queue: the next item, which must be len bytes long. */
idevs_err vector_from_queue(void *arg, uint8_t *buf, size_t len);

/* The default options with this suite and a clock that always says *clock_ms. */
void vector_options(idevs_envelope_options *o, uint32_t suite, uint64_t *clock_ms);

#endif
