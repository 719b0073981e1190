/* What the rewards logic needs when taxi answers a ride request: the customer's first name and phone number, the
 * booking reference, and when it asked. It travels with the request (idevs_request_with_state), sealed by the
 * compartment to itself, and comes back with the answer: nothing of it stays in the logic's memory between the
 * sale and the answer, and an answer that reaches a restarted compartment still finds it.
 *
 * The bytes are this struct's (zeroed first, so no padding byte carries anything); the compartment authenticates
 * them, so only this logic wrote them, and ride_state_read checks them again all the same: the exact size, and
 * each text NUL-terminated within its field. */
#ifndef REWARDS_RIDE_STATE_H
#define REWARDS_RIDE_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_logic.h"
#include "sale.h"

typedef struct ride_state {
    int64_t asked_ms; /* CLOCK_REALTIME, in milliseconds: the time to live holds across restarts */
    char first_name[SALE_FIRST_NAME_MAX + 1];
    char phone[SALE_PHONE_MAX + 1];
    char booking_ref[SALE_REF_MAX + 1];
} ride_state;

_Static_assert(sizeof(ride_state) <= IDEVS_REQUEST_STATE_MAX, "a ride's state fits a request");

/* The state of a ride for sale, asked at now_ms. */
void ride_state_make(ride_state *rs, const sale_record *sale, int64_t now_ms);
/* Reads the bytes a response brought back; false (and *out cleansed) unless they are a ride_state. */
bool ride_state_read(const uint8_t *bytes, size_t len, ride_state *out);
/* Whether a ride asked at rs->asked_ms is still awaited at now_ms, given the time to live. */
bool ride_state_alive(const ride_state *rs, int64_t now_ms, int64_t ttl_ms);
void ride_state_cleanse(ride_state *rs);

#endif
