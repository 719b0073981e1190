/* The loyalty award; see award.h. */
#include "award.h"

#include "json_out.h"

int64_t loyalty_points(int64_t total_cents)
{
    if (total_cents < 0)
        return -1;
    int64_t points = total_cents / 100; /* integer division: the cents never round up to a point */
    return points <= LOYALTY_POINTS_MAX ? points : -1;
}

size_t loyalty_write_award(const sale_record *sale, int64_t points, char *buf, size_t buf_len)
{
    json_out w;
    json_out_init(&w, buf, buf_len);
    json_out_string_member(&w, "customer_id", sale->customer_id, 1);
    json_out_string_member(&w, "sale_id", sale->sale_id, 0);
    json_out_whole_member(&w, "points", points, 0);
    return json_out_finish(&w);
}
