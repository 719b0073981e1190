/* The rewards payloads of docs/CASESTUDY.md besides the sale (services/sale/sale.h): strict reading of taxi's
 * ride response, and writing of the ride request and the confirmation into the caller's buffer (json_out.h),
 * so that no copy of personal data is left in memory the caller cannot cleanse. Reading is as strict as the
 * sale's (json_in.h): exactly the format's keys, each once and of its type. */
#ifndef REWARDS_PAYLOADS_H
#define REWARDS_PAYLOADS_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"
#include "sale.h"

#define REWARDS_TEXT_MAX 128     /* driver, vehicle */
#define REWARDS_ETA_MAX 1440     /* minutes */
#define REWARDS_GREETING_MAX 200
/* Large enough for any ride request and confirmation within the bounds above, escaped. */
#define REWARDS_OUT_MAX 4096

typedef struct rewards_ride {
    char booking_ref[JSON_IN_REF_MAX + 1];
    char driver[REWARDS_TEXT_MAX + 1];
    char vehicle[REWARDS_TEXT_MAX + 1];
    int eta_minutes;
} rewards_ride;

/* text[0..len) with text[len] == '\0'. IDEVS_ERR_MALFORMED for anything the format does not allow; on failure
 * *out is cleansed. */
idevs_err rewards_parse_ride(const char *text, size_t len, rewards_ride *out);

/* {"booking_ref","name","pickup","time"}; returns the length, 0 if buf is too small. */
size_t rewards_write_ride_request(const sale_record *sale, char *buf, size_t buf_len);

/* {"phone","text"}, the text being "Hi FIRST, GREETING Your free ride home (ref REF) is booked: DRIVER,
 * VEHICLE, arrives in ETA min."; returns the length, 0 if buf is too small. */
size_t rewards_write_confirmation(const char *phone, const char *first_name, const char *greeting,
                                  const rewards_ride *ride, char *buf, size_t buf_len);

void rewards_ride_cleanse(rewards_ride *r);

#endif
