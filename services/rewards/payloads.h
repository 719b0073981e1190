/* The rewards payloads of docs/CASESTUDY.md: strict reading of a sale and of taxi's ride response, and
 * writing of the ride request and the confirmation. JSON is read with cJSON; it is written here, by hand,
 * into the caller's buffer, so that no copy of personal data is left in memory the caller cannot cleanse.
 *
 * Strict means: the payload is one JSON object and nothing else, without NUL bytes (nor the escape \u0000,
 * which would cut a string short); every field the format
 * names is present with its type; no other key and no key twice; strings are valid UTF-8 without control
 * characters and within the bounds below; references are 1 to 64 of A-Z a-z 0-9 . _ -; a time is
 * YYYY-MM-DDTHH:MM:SSZ; money is a decimal string (money.h); counts are whole numbers in range; and a sale's
 * total equals the sum of its items' qty x price, in cents. */
#ifndef REWARDS_PAYLOADS_H
#define REWARDS_PAYLOADS_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"

#define REWARDS_REF_MAX 64       /* sale_id, booking_ref, customer id, sku */
#define REWARDS_TIME_LEN 20      /* 2026-11-21T10:15:00Z */
#define REWARDS_NAME_MAX 128     /* customer and item names, driver, vehicle */
#define REWARDS_FIRST_NAME_MAX 64
#define REWARDS_PHONE_MAX 32
#define REWARDS_ADDRESS_MAX 256
#define REWARDS_ITEMS_MAX 100
#define REWARDS_QTY_MAX 1000
#define REWARDS_ETA_MAX 1440     /* minutes */
#define REWARDS_GREETING_MAX 200
/* Large enough for any ride request and confirmation within the bounds above, escaped. */
#define REWARDS_OUT_MAX 4096

typedef struct rewards_sale {
    char sale_id[REWARDS_REF_MAX + 1];
    char time[REWARDS_TIME_LEN + 1];
    char name[REWARDS_NAME_MAX + 1];
    char first_name[REWARDS_FIRST_NAME_MAX + 1]; /* up to the first space, cut on a character boundary */
    char phone[REWARDS_PHONE_MAX + 1];
    char address[REWARDS_ADDRESS_MAX + 1];
    int64_t total_cents;
    size_t item_count;
} rewards_sale;

typedef struct rewards_ride {
    char booking_ref[REWARDS_REF_MAX + 1];
    char driver[REWARDS_NAME_MAX + 1];
    char vehicle[REWARDS_NAME_MAX + 1];
    int eta_minutes;
} rewards_ride;

/* text[0..len) with text[len] == '\0' (the compartment hands payloads that way). IDEVS_ERR_MALFORMED for
 * anything the format does not allow; on failure *out is cleansed. */
idevs_err rewards_parse_sale(const char *text, size_t len, rewards_sale *out);
idevs_err rewards_parse_ride(const char *text, size_t len, rewards_ride *out);

/* {"booking_ref","name","pickup","time"}; returns the length, 0 if buf is too small. */
size_t rewards_write_ride_request(const rewards_sale *sale, char *buf, size_t buf_len);

/* {"phone","text"}, the text being "Hi FIRST, GREETING Your free ride home (ref REF) is booked: DRIVER,
 * VEHICLE, arrives in ETA min."; returns the length, 0 if buf is too small. */
size_t rewards_write_confirmation(const char *phone, const char *first_name, const char *greeting,
                                  const rewards_ride *ride, char *buf, size_t buf_len);

/* True when s[0..len) is valid UTF-8 without control characters (U+0000..U+001F, U+007F, U+0080..U+009F). */
int rewards_text_ok(const char *s, size_t len);

void rewards_sale_cleanse(rewards_sale *s);
void rewards_ride_cleanse(rewards_ride *r);

#endif
