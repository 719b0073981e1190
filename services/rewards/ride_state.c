/* The state a ride request carries for its answer; see ride_state.h. */
#include "ride_state.h"

#include <string.h>

void ride_state_cleanse(ride_state *rs)
{
    explicit_bzero(rs, sizeof *rs);
}

void ride_state_make(ride_state *rs, const sale_record *sale, int64_t now_ms)
{
    memset(rs, 0, sizeof *rs);
    rs->asked_ms = now_ms;
    /* The sale's fields are bounded and NUL-terminated by sale_parse, within the same maxima. */
    memcpy(rs->first_name, sale->first_name, strnlen(sale->first_name, SALE_FIRST_NAME_MAX));
    memcpy(rs->phone, sale->phone, strnlen(sale->phone, SALE_PHONE_MAX));
    memcpy(rs->booking_ref, sale->sale_id, strnlen(sale->sale_id, SALE_REF_MAX));
}

static bool terminated(const char *field, size_t size)
{
    return memchr(field, '\0', size) != NULL;
}

bool ride_state_read(const uint8_t *bytes, size_t len, ride_state *out)
{
    memset(out, 0, sizeof *out);
    if (bytes == NULL || len != sizeof *out)
        return false;
    memcpy(out, bytes, sizeof *out);
    if (terminated(out->first_name, sizeof out->first_name) && terminated(out->phone, sizeof out->phone) &&
        terminated(out->booking_ref, sizeof out->booking_ref) && out->booking_ref[0] != '\0')
        return true;
    ride_state_cleanse(out);
    return false;
}

bool ride_state_alive(const ride_state *rs, int64_t now_ms, int64_t ttl_ms)
{
    /* A clock set back makes an answer look early, never late: it is still awaited. */
    return now_ms - rs->asked_ms <= ttl_ms;
}
