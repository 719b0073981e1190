/* The points service's SQLite database (docs/CASESTUDY.md, "The databases"): one award per sale, keyed by
 * sale_id, so that a sale delivered twice (a store that published it again, a compartment restarted in between)
 * is counted once; and a running total per customer, raised in the same transaction as the award is stored.
 * No name, phone number or address: the loyalty logic sends none. WAL journal, prepared statements only. */
#ifndef POINTS_DB_H
#define POINTS_DB_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_service_app.h"
#include "json_in.h"

typedef struct points_award {
    char sale_id[JSON_IN_REF_MAX + 1];
    char customer_id[JSON_IN_REF_MAX + 1];
    int64_t points;                         /* > 0 */
    char message_id[IDEVS_UUID_STR_LEN];    /* the award's envelope */
    char provenance[APP_PROVENANCE_LEN];    /* the sale's envelope, which caused it */
} points_award;

/* The awards and totals tables, for app_db_open. */
extern const char points_db_schema[];

/* Opens the database and creates its tables if needed. create: also the file, readable by this user only (the
 * service); else it must exist (the totals command). NULL on failure, with why. */
sqlite3 *points_db_open(const char *path, int create, char *why, size_t why_len);
void points_db_close(sqlite3 *db);

/* Stores the award (received_at: now, UTC) and adds its points to the customer's total, in one transaction.
 * 1 when stored, 0 when that sale was already awarded (nothing changed), -1 on error with why (nothing changed:
 * a total that would leave 64 bits included). */
int points_db_award(sqlite3 *db, const points_award *a, char *why, size_t why_len);

/* One customer's total: its points and how many awards (sales) they came from. */
typedef void (*points_db_total_fn)(void *arg, const char *customer_id, int64_t points, int64_t awards);

/* Calls fn for each customer's total in customer_id order, or only for customer_id when it is not NULL (not at
 * all when that customer has none). Returns how many, or -1 with why. */
long points_db_totals(sqlite3 *db, const char *customer_id, points_db_total_fn fn, void *arg, char *why,
                      size_t why_len);

#endif
