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

typedef struct taxi {
    sqlite3 *db;
    unsigned long long handled, booked, repeated, refused;
} taxi;

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 0xcbf29ce484222325u;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 0x100000001b3u;
    }
    return h;
}

static int ref_ok(const char *s)
{
    size_t n = strnlen(s, TAXI_REF_MAX + 1);
    if (n == 0 || n > TAXI_REF_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '.' || s[i] == '_' || s[i] == '-'))
            return 0;
    return 1;
}

/* Copies the non-empty string member key (at most max bytes) into dst. */
static int member(const cJSON *j, const char *key, char *dst, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!cJSON_IsString(v) || v->valuestring == NULL)
        return 0;
    size_t n = strnlen(v->valuestring, max + 1);
    if (n == 0 || n > max)
        return 0;
    memcpy(dst, v->valuestring, n);
    dst[n] = '\0';
    return 1;
}

/* {booking_ref, name, pickup, time}: exactly these keys, each once, each a non-empty string. */
static int parse_request(const uint8_t *payload, size_t len, taxi_booking *b)
{
    if (memchr(payload, '\0', len) != NULL)
        return 0;
    cJSON *j = cJSON_ParseWithLengthOpts((const char *)payload, len + 1, NULL, 1);
    int keys = 0, ok = cJSON_IsObject(j);
    for (const cJSON *c = ok ? j->child : NULL; c != NULL && ok; c = c->next, keys++)
        ok = strcmp(c->string, "booking_ref") == 0 || strcmp(c->string, "name") == 0 ||
             strcmp(c->string, "pickup") == 0 || strcmp(c->string, "time") == 0;
    ok = ok && keys == 4 && member(j, "booking_ref", b->booking_ref, TAXI_REF_MAX) && ref_ok(b->booking_ref) &&
         member(j, "name", b->name, TAXI_TEXT_MAX) && member(j, "pickup", b->pickup, TAXI_TEXT_MAX) &&
         member(j, "time", b->time, TAXI_REF_MAX);
    cJSON_Delete(j);
    return ok;
}

static void on_message(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    taxi *t = arg;
    char id[IDEVS_UUID_STR_LEN], why[512] = "";
    idevs_uuid_format(&msg->message_id, id);
    if (msg->kind != IDEVS_SERVICE_REQUEST || strcmp(msg->name, "ride") != 0) {
        fprintf(stderr, "taxi: ignored message %s on '%s': not a ride request\n", id, msg->topic);
        return;
    }
    t->handled++;
    taxi_booking b;
    memset(&b, 0, sizeof b);
    if (!parse_request(msg->payload, msg->payload_len, &b)) {
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
        t->booked++;
    printf("%s %s driver %s eta %d min\n", found ? "repeat" : "booked", b.booking_ref, b.driver, b.eta_minutes);
    fflush(stdout);
    explicit_bzero(&b, sizeof b);
}

int main(int argc, char **argv)
{
    idevs_service_config cfg;
    app_receive_options opt;
    app_config_default(&cfg, "taxi");
    int rc = app_parse_receive_options("taxi", usage, argc, argv, &cfg, &opt);
    if (rc >= 0)
        return rc;
    app_install_signals();

    rc = 1;
    taxi t;
    memset(&t, 0, sizeof t);
    idevs_service *svc = NULL;
    char why[1024] = "";
    t.db = taxi_db_open(opt.db_path, why, sizeof why);
    if (t.db == NULL) {
        fprintf(stderr, "taxi: %s\n", why);
        goto out;
    }
    if (app_start_service("taxi", &cfg, on_message, &t, 4, &svc, "answering ride requests") != IDEVS_OK)
        goto out;
    app_run("taxi", svc, &t.handled, opt.count, opt.timeout_s);
    idevs_service_flush(svc, 5000);
    printf("taxi: %llu requests, %llu booked, %llu answered again, %llu refused\n", t.handled, t.booked, t.repeated,
           t.refused);
    rc = 0;
out:
    idevs_service_free(svc);
    taxi_db_close(t.db);
    idevs_service_cli_free(&cfg);
    return rc;
}
