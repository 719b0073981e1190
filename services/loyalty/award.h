/* The loyalty award (docs/CASESTUDY.md, "points"): what the loyalty logic tells the points service about a
 * sale, and nothing else: {"customer_id":"C-0007","sale_id":"S-000042","points":150}. No name, phone number,
 * address, item or amount: the points service learns who earned how many points for which sale. */
#ifndef LOYALTY_AWARD_H
#define LOYALTY_AWARD_H

#include <stddef.h>
#include <stdint.h>

#include "sale.h"

/* The largest award: 2^53 - 1, the largest whole number every JSON reader keeps exactly (json_in.h). */
#define LOYALTY_POINTS_MAX JSON_IN_WHOLE_MAX
/* Large enough for any award: two references and a number. */
#define LOYALTY_OUT_MAX 256

/* One point per whole unit of the total: floor(total_cents / 100). 0 for a total under 1.00; -1 for a total
 * whose points exceed LOYALTY_POINTS_MAX, or a negative one. */
int64_t loyalty_points(int64_t total_cents);

/* {"customer_id","sale_id","points"}; returns the length, 0 if buf is too small. */
size_t loyalty_write_award(const sale_record *sale, int64_t points, char *buf, size_t buf_len);

#endif
