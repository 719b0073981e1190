/* The rides the rewards logic has asked for and not yet heard back about: request id -> the customer's first
 * name, phone number and the booking reference, kept between the sale and taxi's answer.
 *
 * Bounded: a ring of `capacity` slots in order of insertion. When it is full the oldest entry is dropped (and
 * counted); entries older than the time to live are dropped by pending_expire() (counted too). Every entry's
 * bytes are cleansed when it is removed, dropped or expired, and when the table is freed: no personal data stays
 * in memory longer than it is needed. Times are milliseconds of a monotonic clock the caller passes. */
#ifndef REWARDS_PENDING_H
#define REWARDS_PENDING_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_uuid.h"

#define PENDING_FIRST_NAME_MAX 64  /* bytes, without the NUL */
#define PENDING_PHONE_MAX 32
#define PENDING_REF_MAX 64

typedef struct pending_entry {
    bool used;
    idevs_msgid request_id;
    int64_t created_ms;
    char first_name[PENDING_FIRST_NAME_MAX + 1];
    char phone[PENDING_PHONE_MAX + 1];
    char booking_ref[PENDING_REF_MAX + 1];
} pending_entry;

typedef struct pending_table {
    pending_entry *slots;
    size_t capacity;
    size_t head;  /* the oldest slot of the ring */
    size_t span;  /* slots from head to the next free one, holes of taken entries included */
    size_t count; /* entries in use */
    uint64_t dropped_full; /* oldest entries dropped to make room */
    uint64_t expired;      /* entries dropped by pending_expire() */
} pending_table;

/* false when capacity is 0 or memory is short. */
bool pending_init(pending_table *t, size_t capacity);
/* Cleanses and frees every slot; the struct is zeroed. */
void pending_free(pending_table *t);

/* Remembers an entry. Strings longer than their maximum are refused (false), as is a zero request id. When the
 * table is full the oldest entry is dropped first. */
bool pending_put(pending_table *t, const idevs_msgid *request_id, const char *first_name, const char *phone,
                 const char *booking_ref, int64_t now_ms);

/* The entry of request_id, or NULL. The pointer is valid until the next call that changes the table. */
pending_entry *pending_find(pending_table *t, const idevs_msgid *request_id);

/* Removes an entry pending_find() returned: its slot is cleansed at once. */
void pending_remove(pending_table *t, pending_entry *e);

/* Drops every entry created more than ttl_ms before now_ms; returns how many it dropped. */
size_t pending_expire(pending_table *t, int64_t now_ms, int64_t ttl_ms);

/* Cleanses one entry (explicit_bzero: not optimised away). */
void pending_entry_cleanse(pending_entry *e);

#endif
