/* taxi: answers the rewards process's ride requests (docs/CASESTUDY.md) and keeps its bookings in its own
 * SQLite database.
 *
 *   taxi --db FILE [--count N] [--timeout S] [connection options]
 *
 * Each request {booking_ref, name, pickup, time} is booked once: a booking_ref already booked is answered with
 * the stored driver and ETA. The driver, vehicle and ETA are chosen from the booking_ref (FNV-1a), so the same
 * ride always gets the same answer. Runs until SIGINT or SIGTERM, N requests answered, or S seconds. Prints
 * booking references, drivers and ETAs: never a customer's name or address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "idevs_service.h"
#include "idevs_service_app.h"
#include "json_in.h"
#include "taxi_db.h"

static const char usage[] =
    "usage: taxi --db FILE [--count N] [--timeout S] [connection options]\n"
    "Answers the ride requests of the process (default 'rewards') with a driver, a vehicle and an ETA, and\n"
    "stores each booking in FILE (SQLite). Runs until interrupted, or N requests, or S seconds.\n"
    "\n";

/* The fleet: each driver has a car. */
static const struct {
    const char *driver, *vehicle;
} fleet[] = {
    {"Sam Okafor", "Blue Skoda Octavia SK21 XYZ"},    {"Moira Grant", "Silver Toyota Prius SN70 KLM"},
    {"Imran Siddiqui", "Black Kia Niro SG22 RTP"},    {"Jo Fletcher", "White Hyundai Ioniq SY19 BDX"},
    {"Callum Ross", "Grey Ford Galaxy SF68 WNA"},     {"Agnieszka Wolska", "Red Skoda Superb SP23 HJU"},
    {"Dev Menon", "Green Nissan Leaf SA71 FRE"},      {"Bridget Kelly", "Black Mercedes E-Class SJ20 CVO"},
    {"Tunde Bakare", "Blue Volkswagen Passat SV69 LQS"}, {"Ruth Anderson", "White Tesla Model 3 SK73 ZEV"},
};
#define FLEET (sizeof fleet / sizeof fleet[0])
#define ETA_MIN 3
#define ETA_SPAN 13 /* 3 to 15 minutes */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3u;
    }
    return h;
}

/* {booking_ref, name, pickup, time}: exactly these keys, each once, a reference and three texts, read as strictly
 * as every payload of the case study (json_in.h). */
static int parse_request(const idevs_service_message *msg, taxi_booking *b)
{
    static const char *const keys[] = {"booking_ref", "name", "pickup", "time"};
    cJSON *j = json_in_parse_object((const char *)msg->payload, msg->payload_len);
    int ok = json_in_keys_exactly(j, keys, 4) &&
             json_in_string(j, "booking_ref", JSON_IN_REF, b->booking_ref, TAXI_REF_MAX) &&
             json_in_string(j, "name", JSON_IN_TEXT, b->name, TAXI_TEXT_MAX) &&
             json_in_string(j, "pickup", JSON_IN_TEXT, b->pickup, TAXI_TEXT_MAX) &&
             json_in_string(j, "time", JSON_IN_TEXT, b->time, TAXI_REF_MAX);
    json_in_delete(j);
    return ok;
}

static void on_message(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    app_receiver_state *t = arg;
    char id[IDEVS_UUID_STR_LEN], why[512] = "";
    idevs_uuid_format(&msg->message_id, id);
    taxi_booking b;
    memset(&b, 0, sizeof b);
    if (!parse_request(msg, &b)) {
        t->refused++;
        fprintf(stderr, "taxi: refused request %s: not a ride request {booking_ref, name, pickup, time}\n", id);
        return;
    }
    int found = taxi_db_find(t->db, b.booking_ref, &b, why, sizeof why);
    if (found < 0) {
        fprintf(stderr, "taxi: %s: %s\n", b.booking_ref, why);
        return;
    }
    if (!found) {
        uint64_t h = fnv1a(b.booking_ref);
        snprintf(b.driver, sizeof b.driver, "%s", fleet[h % FLEET].driver);
        snprintf(b.vehicle, sizeof b.vehicle, "%s", fleet[h % FLEET].vehicle);
        b.eta_minutes = ETA_MIN + (int)((h >> 32) % ETA_SPAN);
        snprintf(b.request_message_id, sizeof b.request_message_id, "%s", id);
        if (taxi_db_insert(t->db, &b, why, sizeof why) != 0) {
            fprintf(stderr, "taxi: %s: not booked: %s\n", b.booking_ref, why);
            return;
        }
    }
    cJSON *resp = cJSON_CreateObject();
    char *text = NULL;
    if (resp != NULL && cJSON_AddStringToObject(resp, "booking_ref", b.booking_ref) != NULL &&
        cJSON_AddStringToObject(resp, "driver", b.driver) != NULL &&
        cJSON_AddStringToObject(resp, "vehicle", b.vehicle) != NULL &&
        cJSON_AddNumberToObject(resp, "eta_minutes", b.eta_minutes) != NULL)
        text = cJSON_PrintUnformatted(resp);
    cJSON_Delete(resp);
    idevs_err err = text != NULL ? idevs_service_respond(svc, msg, text, strlen(text)) : IDEVS_ERR_NOMEM;
    free(text);
    if (err != IDEVS_OK) {
        fprintf(stderr, "taxi: %s: booked, but the answer was not sent: %s\n", b.booking_ref, idevs_strerror(err));
        return;
    }
    if (found)
        t->repeated++;
    else
        t->done++;
    printf("%s %s driver %s eta %d min\n", found ? "repeat" : "booked", b.booking_ref, b.driver, b.eta_minutes);
    fflush(stdout);
    explicit_bzero(&b, sizeof b);
}

int main(int argc, char **argv)
{
    static const app_receiver taxi = {.prog = "taxi", .process = "rewards", .usage = usage,
        .schema = taxi_db_schema, .kind = IDEVS_SERVICE_REQUEST, .name = "ride", .what = "a ride request",
        .on_message = on_message, .doing = "answering ride requests", .answers = 1,
        .labels = {"requests", "booked", "answered again"}};
    return app_receiver_main(&taxi, argc, argv);
}
