/* Strict reading and careful writing of the rewards payloads; see payloads.h and docs/CASESTUDY.md. */
#include "payloads.h"

#include <stdio.h>
#include <string.h>

#include "json_out.h"

void rewards_ride_cleanse(rewards_ride *r)
{
    explicit_bzero(r, sizeof *r);
}

idevs_err rewards_parse_ride(const char *text, size_t len, rewards_ride *out)
{
    static const char *const ride_keys[] = {"booking_ref", "driver", "vehicle", "eta_minutes"};
    rewards_ride_cleanse(out);
    cJSON *j = json_in_parse_object(text, len);
    if (j == NULL)
        return IDEVS_ERR_MALFORMED;
    int64_t eta = 0;
    int ok = json_in_keys_exactly(j, ride_keys, 4) &&
             json_in_string(j, "booking_ref", JSON_IN_REF, out->booking_ref, JSON_IN_REF_MAX) &&
             json_in_string(j, "driver", JSON_IN_TEXT, out->driver, REWARDS_TEXT_MAX) &&
             json_in_string(j, "vehicle", JSON_IN_TEXT, out->vehicle, REWARDS_TEXT_MAX) &&
             json_in_whole(j, "eta_minutes", 0, REWARDS_ETA_MAX, &eta);
    json_in_delete(j);
    if (!ok) {
        rewards_ride_cleanse(out);
        return IDEVS_ERR_MALFORMED;
    }
    out->eta_minutes = (int)eta;
    return IDEVS_OK;
}

size_t rewards_write_ride_request(const sale_record *sale, char *buf, size_t buf_len)
{
    json_out w;
    json_out_init(&w, buf, buf_len);
    json_out_string_member(&w, "booking_ref", sale->sale_id, 1);
    json_out_string_member(&w, "name", sale->name, 0);
    json_out_string_member(&w, "pickup", sale->address, 0);
    json_out_string_member(&w, "time", sale->time, 0);
    return json_out_finish(&w);
}

size_t rewards_write_confirmation(const char *phone, const char *first_name, const char *greeting,
                                  const rewards_ride *ride, char *buf, size_t buf_len)
{
    char eta[16];
    snprintf(eta, sizeof eta, "%d", ride->eta_minutes);
    json_out w;
    json_out_init(&w, buf, buf_len);
    json_out_string_member(&w, "phone", phone, 1);
    json_out_raw(&w, ",\"text\":\"Hi ");
    json_out_escaped(&w, first_name);
    json_out_raw(&w, ", ");
    json_out_escaped(&w, greeting);
    json_out_raw(&w, greeting[0] != '\0' ? " Your free ride home (ref " : "Your free ride home (ref ");
    json_out_escaped(&w, ride->booking_ref);
    json_out_raw(&w, ") is booked: ");
    json_out_escaped(&w, ride->driver);
    json_out_raw(&w, ", ");
    json_out_escaped(&w, ride->vehicle);
    json_out_raw(&w, ", arrives in ");
    json_out_raw(&w, eta);
    json_out_raw(&w, " min.\"");
    return json_out_finish(&w);
}
