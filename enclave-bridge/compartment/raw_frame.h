/* Protobuf bytes written by hand, for a frame that must be built without an allocator: the SIGSYS reporter's
 * Fatal frame (sandbox.c, in a signal handler), and the tests' hostile logics that forge frames. */
#ifndef IDEVS_COMPARTMENT_RAW_FRAME_H
#define IDEVS_COMPARTMENT_RAW_FRAME_H

#include <stddef.h>
#include <stdint.h>

/* Writes v as a protobuf varint (at most 10 bytes) at p; returns its length. Async-signal-safe. */
static inline size_t raw_frame_varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

#endif
