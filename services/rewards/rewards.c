/* The rewards integration logic of docs/CASESTUDY.md, run in the compartment (enclave-bridge/idevs_logic.h).
 *
 *   input "sales"        a sale; a total of at least the threshold asks taxi for a ride (request "ride") with
 *                        only the pickup fields; the first name, phone, booking ref and the time travel with the
 *                        request as its state (ride_state.h), sealed to the compartment, not to taxi
 *   response to "ride"   taxi's driver and ETA; with the request's state, output "confirmation" to messaging
 *                        with only the phone number and the text
 *
 * The logic keeps nothing between events: a ride requested before the compartment restarted is confirmed
 * after it, like any other.
 *
 * Configuration (the descriptor's process.config; every key optional, no other key allowed):
 *   "threshold"          money text, default "150.00": a sale qualifies when total >= threshold
 *   "greeting"           the words after "Hi NAME, ", default "thanks for shopping with us!"
 *   "request_timeout_s"  whole seconds 1..86400, default 600: an answer later than this after its request is
 *                        refused (unknown_ride)
 *
 * A malformed sale or response, an unknown request id and a response for another booking end the handler with
 * an error: nothing leaves (emissions are transactional), and the logic counts it. Each is refused with a code
 * the descriptor declares (make_descriptor: "refusals"), which the broker counts and logs without the payload:
 *   malformed_sale   not a sale of the store's format, or one out of its ranges (sale.h: quantities, sizes, a
 *                    total that is not the sum of its items)
 *   unknown_ride     an answer to no ride request of this logic (answered already, or too late)
 *   malformed_ride   taxi's answer is not of its format
 *   wrong_booking    taxi's answer names another booking than the request it answers
 * The compartment gives a request's id and state to its first response only (and, after a restart, to the first
 * the new run gets). Money is integer cents, never floating point. */
#include <string.h>
#include <stdlib.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "idevs_logic.h"
#include "money.h"
#include "payloads.h"
#include "ride_state.h"
#include "sale.h"

#define DEFAULT_THRESHOLD_CENTS 15000
#define DEFAULT_GREETING "thanks for shopping with us!"
#define DEFAULT_TIMEOUT_S 600
#define TIMEOUT_MAX_S 86400

typedef struct rewards {
    int64_t threshold_cents;
    char greeting[REWARDS_GREETING_MAX + 1];
    int64_t ttl_ms;
    /* counters: what the logic refused or dropped */
    uint64_t sales, qualified, malformed_sales, malformed_responses, unknown_responses, mismatched_responses,
        confirmations;
} rewards;

/* The wall clock: a ride's time to live runs across compartment restarts. */
static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Refuses the event with its code; under a descriptor that does not declare it, the event is refused all the
 * same, without the code. */
static idevs_err refuse(idevs_logic *lg, const char *code)
{
    idevs_err err = idevs_refuse(lg, code);
    return err == IDEVS_ERR_INVALID_ARG ? IDEVS_ERR_LOGIC : err;
}

static idevs_err on_sale(idevs_logic *lg, const idevs_message *msg, void *state)
{
    rewards *r = state;
    sale_record sale;
    r->sales++;
    if (sale_parse((const char *)msg->payload, msg->payload_len, &sale) != IDEVS_OK) {
        r->malformed_sales++;
        return refuse(lg, "malformed_sale");
    }
    if (sale.total_cents < r->threshold_cents) {
        sale_cleanse(&sale);
        return IDEVS_OK;
    }
    char out[REWARDS_OUT_MAX];
    idevs_err err = IDEVS_ERR_TOO_LARGE;
    size_t n = rewards_write_ride_request(&sale, out, sizeof out);
    ride_state rs;
    ride_state_make(&rs, &sale, now_ms());
    if (n > 0)
        err = idevs_request_with_state(lg, "ride", out, n, &rs, sizeof rs, NULL);
    if (err == IDEVS_OK)
        r->qualified++;
    explicit_bzero(out, sizeof out);
    ride_state_cleanse(&rs);
    sale_cleanse(&sale);
    return err;
}

static idevs_err on_ride(idevs_logic *lg, const idevs_message *msg, void *state)
{
    rewards *r = state;
    ride_state e;
    if (!ride_state_read(msg->request_state, msg->request_state_len, &e) || !ride_state_alive(&e, now_ms(), r->ttl_ms)) {
        ride_state_cleanse(&e);
        r->unknown_responses++;
        return refuse(lg, "unknown_ride");
    }
    /* The compartment hands a request's state to its first response only: whatever happens below, it is used
     * now, and its personal data goes when the handler ends. */
    rewards_ride ride;
    idevs_err err = rewards_parse_ride((const char *)msg->payload, msg->payload_len, &ride);
    if (err != IDEVS_OK) {
        r->malformed_responses++;
        err = refuse(lg, "malformed_ride");
    } else if (strcmp(ride.booking_ref, e.booking_ref) != 0) {
        r->mismatched_responses++;
        err = refuse(lg, "wrong_booking");
    } else {
        char out[REWARDS_OUT_MAX];
        size_t n = rewards_write_confirmation(e.phone, e.first_name, r->greeting, &ride, out, sizeof out);
        err = n > 0 ? idevs_emit(lg, "confirmation", out, n) : IDEVS_ERR_TOO_LARGE;
        if (err == IDEVS_OK)
            r->confirmations++;
        explicit_bzero(out, sizeof out);
    }
    ride_state_cleanse(&e);
    rewards_ride_cleanse(&ride);
    return err;
}

/* Reads the configuration strictly: known keys, each at most once, of the right type and range. */
static idevs_err configure(rewards *r, const char *config_json)
{
    r->threshold_cents = DEFAULT_THRESHOLD_CENTS;
    memcpy(r->greeting, DEFAULT_GREETING, sizeof DEFAULT_GREETING);
    r->ttl_ms = (int64_t)DEFAULT_TIMEOUT_S * 1000;
    cJSON *j = cJSON_Parse(config_json != NULL ? config_json : "{}");
    idevs_err err = IDEVS_OK;
    if (!cJSON_IsObject(j))
        err = IDEVS_ERR_CONFIG;
    int seen[3] = {0};
    for (const cJSON *c = j != NULL ? j->child : NULL; c != NULL && err == IDEVS_OK; c = c->next) {
        if (strcmp(c->string, "threshold") == 0 && seen[0]++ == 0) {
            if (!cJSON_IsString(c) || !money_parse_str(c->valuestring, &r->threshold_cents))
                err = IDEVS_ERR_CONFIG;
        } else if (strcmp(c->string, "greeting") == 0 && seen[1]++ == 0) {
            size_t len = cJSON_IsString(c) ? strnlen(c->valuestring, REWARDS_GREETING_MAX + 1) : SIZE_MAX;
            if (len > REWARDS_GREETING_MAX || !json_in_text_ok(c->valuestring, len))
                err = IDEVS_ERR_CONFIG;
            else
                memcpy(r->greeting, c->valuestring, len + 1);
        } else if (strcmp(c->string, "request_timeout_s") == 0 && seen[2]++ == 0) {
            if (!cJSON_IsNumber(c) || !(c->valuedouble >= 1 && c->valuedouble <= TIMEOUT_MAX_S) ||
                c->valuedouble != (double)c->valueint)
                err = IDEVS_ERR_CONFIG;
            else
                r->ttl_ms = (int64_t)c->valueint * 1000;
        } else {
            err = IDEVS_ERR_CONFIG; /* unknown, or given twice */
        }
    }
    cJSON_Delete(j);
    return err;
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    rewards *r = calloc(1, sizeof *r);
    if (r == NULL)
        return IDEVS_ERR_NOMEM;
    *state = r;
    idevs_err err = configure(r, config_json);
    if (err != IDEVS_OK)
        return err;
    err = idevs_on_input(lg, "sales", on_sale);
    if (err == IDEVS_OK)
        err = idevs_on_response(lg, "ride", on_ride);
    return err;
}

static void teardown(void *state)
{
    rewards *r = state;
    if (r == NULL)
        return;
    explicit_bzero(r, sizeof *r);
    free(r);
}

__attribute__((visibility("default"))) const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "rewards", setup, teardown};
