/* The store's SQLite database (docs/CASESTUDY.md, "The databases"): customers, items, sales and their items.
 * Money is decimal text with two decimals, computed in integer cents. WAL journal, prepared statements only. */
#ifndef STORE_DB_H
#define STORE_DB_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_uuid.h"
#include "store_seed.h"

/* Opens the database and creates its tables if needed; create: also the file (seed), else it must exist
 * (run). NULL on failure, with why filled. */
sqlite3 *store_db_open(const char *path, int create, char *why, size_t why_len);
void store_db_close(sqlite3 *db);

/* Writes the generated data set in one transaction. Refuses (-1, why) a database that already has customers. */
int store_db_seed(sqlite3 *db, const seed_data *d, char *why, size_t why_len);

/* One sale ready to publish: its payload (docs/CASESTUDY.md, malloc'd JSON), customer and total. */
typedef struct store_sale {
    char sale_id[32];
    char customer_id[32]; /* its partition key: one customer's sales stay in order on one instance */
    char total[32];
    char *payload;
    size_t payload_len;
} store_sale;

/* The next unpublished sales in order (sale_id), at most max (0: all). *out is malloc'd; free with
 * store_db_free_sales. Each sale is checked: money text well formed, total equal to the sum of its items. */
int store_db_unpublished(sqlite3 *db, size_t max, store_sale **out, size_t *count, char *why, size_t why_len);
void store_db_free_sales(store_sale *sales, size_t count);

/* Marks the sale published now (UTC), with the message id of its envelope (of the first process's, when it went
 * to several). */
int store_db_mark_published(sqlite3 *db, const char *sale_id, const char *message_id, char *why, size_t why_len);

/* 1 with its envelope's message id when the process already acknowledged the sale, 0 when not, -1 with why. */
int store_db_publication(sqlite3 *db, const char *sale_id, const char *process, char message_id[IDEVS_UUID_STR_LEN],
                         char *why, size_t why_len);

/* Records that the broker acknowledged the sale's envelope for the process (published_at: now, UTC). */
int store_db_record_publication(sqlite3 *db, const char *sale_id, const char *process, const char *message_id,
                                char *why, size_t why_len);

#endif
