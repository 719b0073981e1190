/* The sale reader (services/sale/sale.c) and the rewards logic's payloads (services/rewards/payloads.c) against
 * a hostile sale: a string cut short by the escape \u0000, C1 control characters, and customer names with
 * quotes, backslashes and JSON of their own, which must come out in the ride request as text, never as fields.
 * Prints one "ok - ..." or "not ok - ..." line per check and "N passed, M failed" last. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "payloads.h"
#include "tap.h"

/* The case study's sale with sale_id and customer name as given (JSON text, already escaped). */
static idevs_err parse(const char *sale_id, const char *name, sale_record *out)
{
    char text[2048];
    snprintf(text, sizeof text,
             "{\"sale_id\": \"%s\", \"time\": \"2026-11-21T10:15:00Z\", \"customer\": {\"id\": \"C-0007\", "
             "\"name\": \"%s\", \"phone\": \"+44 7700 900123\", \"address\": \"12 Harbour Street, Leith\"}, "
             "\"items\": [{\"sku\": \"JKT-204\", \"name\": \"Rain jacket\", \"qty\": 1, \"price\": \"150.00\"}], "
             "\"total\": \"150.00\"}",
             sale_id, name);
    return sale_parse(text, strlen(text), out);
}

int main(void)
{
    sale_record s;
    tap_check(parse("S-000042", "Ana Lima", &s) == IDEVS_OK && strcmp(s.name, "Ana Lima") == 0, "the example sale parses");
    tap_check(parse("S-000042", "Ana\\u0000Lima", &s) == IDEVS_ERR_MALFORMED,
              "a name cut short by \\u0000 is refused, not read as 'Ana'");
    tap_check(parse("S-1\\u0000\\\"}junk", "Ana Lima", &s) == IDEVS_ERR_MALFORMED,
              "a sale_id cut short by \\u0000 is refused, not read as 'S-1'");
    tap_check(parse("S-000042", "Ana\\\\u0000 Lima", &s) == IDEVS_OK && strcmp(s.name, "Ana\\u0000 Lima") == 0,
              "an escaped backslash followed by the text u0000 is an ordinary name");
    tap_check(parse("S-000042", "Ana\\u009b31m Lima", &s) == IDEVS_ERR_MALFORMED,
              "a name with a C1 control character (U+009B, CSI) is refused");
    tap_check(parse("S-000042", "Ana\xc2\x85Lima", &s) == IDEVS_ERR_MALFORMED,
              "a name with U+0085 as raw UTF-8 is refused");
    tap_check(parse("S-000042", "Ana\\nLima", &s) == IDEVS_ERR_MALFORMED, "a name with a line break is refused");

    /* A name made to close the string and add fields of its own stays one string. */
    static const char *names[] = {
        "Ana\\\", \\\"pickup\\\": \\\"1 Attacker Road",
        "O\\\\\\\"Brien\\\\",
        "</script>{\\\"booking_ref\\\":\\\"X\\\"}",
        "Zoë \\u00e9\\u4e2d",
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char what[160], out[REWARDS_OUT_MAX];
        bool ok = parse("S-000042", names[i], &s) == IDEVS_OK;
        size_t n = ok ? rewards_write_ride_request(&s, out, sizeof out) : 0;
        cJSON *j = n > 0 ? cJSON_ParseWithLength(out, n) : NULL;
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
        const cJSON *pickup = cJSON_GetObjectItemCaseSensitive(j, "pickup");
        const cJSON *ref = cJSON_GetObjectItemCaseSensitive(j, "booking_ref");
        snprintf(what, sizeof what, "ride request for name %zu: valid JSON, exactly 4 fields, the name intact", i + 1);
        tap_check(j != NULL && cJSON_GetArraySize(j) == 4 && cJSON_IsString(name) &&
                      strcmp(name->valuestring, s.name) == 0 && cJSON_IsString(pickup) &&
                  strcmp(pickup->valuestring, "12 Harbour Street, Leith") == 0 && cJSON_IsString(ref) &&
                  strcmp(ref->valuestring, "S-000042") == 0,
              what);
        cJSON_Delete(j);
    }
    return tap_finish();
}
