/* The rewards logic's payloads (services/rewards/payloads.c, docs/CASESTUDY.md): taxi's ride response, read
 * inside the compartment, and the ride request and confirmation the logic writes from what it read. The input
 * is one payload, NUL-terminated as the compartment hands it, read both as a ride response and as a sale (the
 * ride request is written from a sale). For every input:
 *   - a refused ride is IDEVS_ERR_MALFORMED and leaves the record cleansed;
 *   - an accepted ride has a booking reference of 1..JSON_IN_REF_MAX of [A-Za-z0-9._-], a driver and a vehicle
 *     of 1..REWARDS_TEXT_MAX bytes of UTF-8 without control characters, NUL-terminated, and an ETA in
 *     0..REWARDS_ETA_MAX;
 *   - what the writers make of accepted fields fits REWARDS_OUT_MAX (payloads.h), is one JSON object with
 *     exactly the format's keys, and reads back as the same fields: the ride request's booking_ref, name,
 *     pickup and time are the sale's; the confirmation's phone is the one given and its text is the sentence
 *     of payloads.h with the fields as they are;
 *   - a writer given a buffer one byte short returns 0 and leaves the buffer wiped (json_out.h). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_utf8.h"
#include "json_in.h"
#include "payloads.h"

static char out[REWARDS_OUT_MAX], expect_text[REWARDS_OUT_MAX];

static void text_ok(const char *s, size_t max)
{
    size_t len = strnlen(s, max + 1);
    FUZZ_CHECK(len >= 1 && len <= max);
    FUZZ_CHECK(idevs_utf8_valid((const uint8_t *)s, len) && json_in_text_ok(s, len));
}

static void ref_ok(const char *s)
{
    size_t len = strnlen(s, JSON_IN_REF_MAX + 1);
    FUZZ_CHECK(len >= 1 && len <= JSON_IN_REF_MAX);
    FUZZ_CHECK(strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == len);
}

/* The string member key of j, or NULL. */
static const char *member(const cJSON *j, const char *key)
{
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(m) ? m->valuestring : NULL;
}

static bool same(const char *a, const char *b)
{
    return a != NULL && b != NULL && strcmp(a, b) == 0;
}

/* A writer's output n bytes long again into a buffer one byte short: 0, and the buffer wiped. */
static void one_short(size_t n, size_t (*write)(const void *, char *, size_t), const void *arg)
{
    char *small = malloc(n);
    if (small == NULL)
        return;
    memset(small, 'x', n);
    FUZZ_CHECK(write(arg, small, n) == 0);
    FUZZ_CHECK(fuzz_all_zero(small, n));
    free(small);
}

typedef struct confirmation {
    const char *phone, *first_name, *greeting;
    const rewards_ride *ride;
} confirmation;

static size_t write_confirmation(const void *arg, char *buf, size_t len)
{
    const confirmation *c = arg;
    return rewards_write_confirmation(c->phone, c->first_name, c->greeting, c->ride, buf, len);
}

static size_t write_request(const void *arg, char *buf, size_t len)
{
    return rewards_write_ride_request(arg, buf, len);
}

static void check_confirmation(const confirmation *c)
{
    size_t n = write_confirmation(c, out, sizeof out);
    FUZZ_CHECK(n > 0 && n == strlen(out));
    cJSON *j = json_in_parse_object(out, n);
    static const char *const keys[] = {"phone", "text"};
    FUZZ_CHECK(j != NULL && json_in_keys_exactly(j, keys, 2));
    snprintf(expect_text, sizeof expect_text,
             "Hi %s, %s%sYour free ride home (ref %s) is booked: %s, %s, arrives in %d min.", c->first_name,
             c->greeting, c->greeting[0] != '\0' ? " " : "", c->ride->booking_ref, c->ride->driver, c->ride->vehicle,
             c->ride->eta_minutes);
    FUZZ_CHECK(same(member(j, "phone"), c->phone));
    FUZZ_CHECK(same(member(j, "text"), expect_text));
    json_in_delete(j);
    one_short(n, write_confirmation, c);
}

/* Greetings as rewards.c accepts them (REWARDS_GREETING_MAX bytes of text): none, the default, and the longest,
 * of the characters that escaping doubles. */
static char greeting_long[REWARDS_GREETING_MAX + 1];
static const char *greetings[3] = {"", "thanks for shopping with us!", greeting_long};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    for (size_t i = 0; i < REWARDS_GREETING_MAX; i++)
        greeting_long[i] = i % 2 ? '"' : '\\';
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    if (text == NULL)
        return 0;
    rewards_ride ride;
    memset(&ride, 0xa5, sizeof ride);
    idevs_err err = rewards_parse_ride(text, size, &ride);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_MALFORMED);
        FUZZ_CHECK(fuzz_all_zero(&ride, sizeof ride));
    } else {
        ref_ok(ride.booking_ref);
        text_ok(ride.driver, REWARDS_TEXT_MAX);
        text_ok(ride.vehicle, REWARDS_TEXT_MAX);
        FUZZ_CHECK(ride.eta_minutes >= 0 && ride.eta_minutes <= REWARDS_ETA_MAX);
        /* the longest phone and first name a sale has, of characters escaping doubles in the name */
        char first[SALE_FIRST_NAME_MAX + 1];
        memset(first, '"', SALE_FIRST_NAME_MAX);
        first[SALE_FIRST_NAME_MAX] = '\0';
        for (size_t g = 0; g < 3; g++) {
            confirmation c = {"+44 (0) 7700 900123-4567 890 123", first, greetings[g], &ride};
            check_confirmation(&c);
        }
        rewards_ride_cleanse(&ride);
        FUZZ_CHECK(fuzz_all_zero(&ride, sizeof ride));
    }

    sale_record sale;
    if (sale_parse(text, size, &sale) == IDEVS_OK) {
        size_t n = rewards_write_ride_request(&sale, out, sizeof out);
        FUZZ_CHECK(n > 0 && n == strlen(out));
        cJSON *j = json_in_parse_object(out, n);
        static const char *const keys[] = {"booking_ref", "name", "pickup", "time"};
        FUZZ_CHECK(j != NULL && json_in_keys_exactly(j, keys, 4));
        FUZZ_CHECK(same(member(j, "booking_ref"), sale.sale_id) && same(member(j, "name"), sale.name) &&
                   same(member(j, "pickup"), sale.address) && same(member(j, "time"), sale.time));
        json_in_delete(j);
        one_short(n, write_request, &sale);
        /* the confirmation of that sale's customer, with the longest ride */
        rewards_ride longest;
        memset(&longest, 0, sizeof longest);
        memset(longest.booking_ref, 'R', JSON_IN_REF_MAX);
        memset(longest.driver, '\\', REWARDS_TEXT_MAX);
        memset(longest.vehicle, '"', REWARDS_TEXT_MAX);
        longest.eta_minutes = REWARDS_ETA_MAX;
        for (size_t g = 0; g < 3; g++) {
            confirmation c = {sale.phone, sale.first_name, greetings[g], &longest};
            check_confirmation(&c);
        }
        sale_cleanse(&sale);
    }
    free(text);
    return 0;
}
