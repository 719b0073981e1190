/* Sliding replay window over 64-bit sequence numbers (docs/PROTOCOL.md, section 5, step 9), in the manner of
 * WireGuard's counter: a ring of IDEVS_REPLAY_WINDOW bits in 64-bit words, indexed by sequence number modulo
 * the window, and the highest sequence number accepted so far.
 *
 * A sequence number s is acceptable when it is higher than the highest accepted one (`top`), or when
 * top - s <= IDEVS_REPLAY_WINDOW - 1 and s was not accepted before. Sequence number 0 is never acceptable.
 *
 * Checking and accepting are separate on purpose: a receiver checks before authenticating a message and
 * accepts only after the AEAD succeeded, so a forgery never moves the window. */
#ifndef IDEVS_REPLAY_H
#define IDEVS_REPLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "idevs_error.h"

#define IDEVS_REPLAY_WINDOW 1024u /* W: a power of two, a multiple of 64 */
#define IDEVS_REPLAY_WORDS (IDEVS_REPLAY_WINDOW / 64u)

typedef struct idevs_replay {
    uint64_t top;                       /* highest accepted sequence number; 0 before the first */
    uint64_t bits[IDEVS_REPLAY_WORDS];  /* bit (s mod W) is set when s in [top - W + 1, top] was accepted */
} idevs_replay;

/* An empty window: every sequence number from 1 up is acceptable. */
void idevs_replay_init(idevs_replay *w);

/* IDEVS_OK when seq may be accepted; IDEVS_ERR_REPLAY when it already was; IDEVS_ERR_OUTSIDE_WINDOW when it is
 * 0 or W or more below the highest accepted one. Changes nothing. */
idevs_err idevs_replay_check(const idevs_replay *w, uint64_t seq);

/* Checks seq as above and, only when acceptable, marks it (sliding the window forward for a new highest
 * number, which forgets numbers that fall out of it). Returns the check's result. */
idevs_err idevs_replay_accept(idevs_replay *w, uint64_t seq);

/* A receiver keeps windows per (sender, instance), at most IDEVS_INSTANCES_MAX instances per sender (docs/PROTOCOL.md
 * section 5a): for one more, the instance whose current epoch is the oldest is forgotten, and the sender's
 * instance floor raised to that epoch. The envelope library (proto/envelope_peers.c) and the launcher's replay
 * record (enclave-bridge/launcher/replay_record.c) both keep instances by this rule. */
#define IDEVS_INSTANCES_MAX 64

/* Whether the instance (epoch, instance) is forgotten before (than_epoch, than_instance): the lower current
 * epoch, among equals the lower instance number. */
bool idevs_instance_older(uint64_t epoch, uint32_t instance, uint64_t than_epoch, uint32_t than_instance);

#endif
