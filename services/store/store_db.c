/* The store's SQLite database; see store_db.h. */
#include "store_db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "idevs_service_app.h"
#include "money.h"

static const char schema[] =
    "PRAGMA foreign_keys=ON;" /* a per-connection setting, so it goes with the schema on every open */
    "CREATE TABLE IF NOT EXISTS customers ("
    " id TEXT PRIMARY KEY, name TEXT NOT NULL, phone TEXT NOT NULL, address TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS items ("
    " sku TEXT PRIMARY KEY, name TEXT NOT NULL, price TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS sales ("
    " sale_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL REFERENCES customers(id), time TEXT NOT NULL,"
    " total TEXT NOT NULL, published_at TEXT, message_id TEXT);"
    "CREATE TABLE IF NOT EXISTS sale_items ("
    " sale_id TEXT NOT NULL REFERENCES sales(sale_id), sku TEXT NOT NULL REFERENCES items(sku),"
    " qty INTEGER NOT NULL CHECK (qty > 0), price TEXT NOT NULL, PRIMARY KEY (sale_id, sku));"
    /* one row per process that acknowledged a sale: a run that failed for one process publishes the sale
     * again to that one only */
    "CREATE TABLE IF NOT EXISTS publications ("
    " sale_id TEXT NOT NULL REFERENCES sales(sale_id), process TEXT NOT NULL, message_id TEXT NOT NULL,"
    " published_at TEXT NOT NULL, PRIMARY KEY (sale_id, process));";

sqlite3 *store_db_open(const char *path, int create, char *why, size_t why_len)
{
    return app_db_open(path, schema, create ? NULL : " (make it with: store seed --db FILE)", why, why_len);
}

void store_db_close(sqlite3 *db)
{
    sqlite3_close(db);
}

static int bind_text(sqlite3_stmt *st, int i, const char *s)
{
    return sqlite3_bind_text(st, i, s, -1, SQLITE_TRANSIENT);
}

/* Steps a prepared insert once and resets it for the next row. */
static int step_reset(sqlite3 *db, sqlite3_stmt *st, char *why, size_t why_len)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return rc == SQLITE_DONE ? 0 : app_fail(why, why_len, "%s", sqlite3_errmsg(db));
}

int store_db_seed(sqlite3 *db, const seed_data *d, char *why, size_t why_len)
{
    sqlite3_stmt *count = NULL;
    int existing = -1;
    if (sqlite3_prepare_v2(db, "SELECT count(*) FROM customers", -1, &count, NULL) == SQLITE_OK &&
        sqlite3_step(count) == SQLITE_ROW)
        existing = sqlite3_column_int(count, 0);
    sqlite3_finalize(count);
    if (existing != 0)
        return existing < 0 ? app_fail(why, why_len, "%s", sqlite3_errmsg(db))
                            : app_fail(why, why_len, "the database is already seeded (%d customers): use a new file",
                                       existing);
    if (app_db_exec(db, "BEGIN IMMEDIATE", why, why_len) != 0)
        return -1;
    sqlite3_stmt *ins_c = NULL, *ins_i = NULL, *ins_s = NULL, *ins_l = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db, "INSERT INTO customers (id, name, phone, address) VALUES (?, ?, ?, ?)", -1, &ins_c,
                           NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO items (sku, name, price) VALUES (?, ?, ?)", -1, &ins_i, NULL) !=
            SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO sales (sale_id, customer_id, time, total) VALUES (?, ?, ?, ?)", -1,
                           &ins_s, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "INSERT INTO sale_items (sale_id, sku, qty, price) VALUES (?, ?, ?, ?)", -1, &ins_l,
                           NULL) != SQLITE_OK) {
        app_fail(why, why_len, "%s", sqlite3_errmsg(db));
        goto out;
    }
    char money[MONEY_BUF];
    for (size_t i = 0; i < d->customer_count; i++) {
        const seed_customer *c = &d->customers[i];
        bind_text(ins_c, 1, c->id);
        bind_text(ins_c, 2, c->name);
        bind_text(ins_c, 3, c->phone);
        bind_text(ins_c, 4, c->address);
        if (step_reset(db, ins_c, why, why_len) != 0)
            goto out;
    }
    for (size_t i = 0; i < d->item_count; i++) {
        if (money_format(d->items[i].price_cents, money, sizeof money) == 0) {
            app_fail(why, why_len, "item %s: price out of range", d->items[i].sku);
            goto out;
        }
        bind_text(ins_i, 1, d->items[i].sku);
        bind_text(ins_i, 2, d->items[i].name);
        bind_text(ins_i, 3, money);
        if (step_reset(db, ins_i, why, why_len) != 0)
            goto out;
    }
    for (size_t i = 0; i < d->sale_count; i++) {
        const seed_sale *s = &d->sales[i];
        if (money_format(s->total_cents, money, sizeof money) == 0) {
            app_fail(why, why_len, "sale %s: total out of range", s->sale_id);
            goto out;
        }
        bind_text(ins_s, 1, s->sale_id);
        bind_text(ins_s, 2, d->customers[s->customer].id);
        bind_text(ins_s, 3, s->time);
        bind_text(ins_s, 4, money);
        if (step_reset(db, ins_s, why, why_len) != 0)
            goto out;
        for (size_t k = 0; k < s->line_count; k++) {
            const seed_item *it = &d->items[s->lines[k].item];
            money_format(it->price_cents, money, sizeof money);
            bind_text(ins_l, 1, s->sale_id);
            bind_text(ins_l, 2, it->sku);
            sqlite3_bind_int(ins_l, 3, s->lines[k].qty);
            bind_text(ins_l, 4, money);
            if (step_reset(db, ins_l, why, why_len) != 0)
                goto out;
        }
    }
    rc = app_db_exec(db, "COMMIT", why, why_len);
out:
    sqlite3_finalize(ins_c);
    sqlite3_finalize(ins_i);
    sqlite3_finalize(ins_s);
    sqlite3_finalize(ins_l);
    if (rc != 0) {
        char ignored[64];
        app_db_exec(db, "ROLLBACK", ignored, sizeof ignored);
    }
    return rc;
}

void store_db_free_sales(store_sale *sales, size_t count)
{
    for (size_t i = 0; sales != NULL && i < count; i++)
        free(sales[i].payload);
    free(sales);
}

static const char *col(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t != NULL ? (const char *)t : "";
}

/* The items of one sale as the payload's array; adds their qty x price to *sum. */
static int add_items(sqlite3 *db, sqlite3_stmt *items, const char *sale_id, cJSON *array, int64_t *sum, char *why,
                     size_t why_len)
{
    bind_text(items, 1, sale_id);
    int rc, n = 0;
    while ((rc = sqlite3_step(items)) == SQLITE_ROW) {
        int64_t price = 0, line = 0;
        int qty = sqlite3_column_int(items, 2);
        if (!money_parse_str(col(items, 3), &price) || qty < 1 || !money_times(price, qty, &line) ||
            !money_add(*sum, line, sum)) {
            sqlite3_reset(items);
            return app_fail(why, why_len, "sale %s: an item has a malformed price or quantity", sale_id);
        }
        cJSON *it = cJSON_CreateObject();
        if (it == NULL || !cJSON_AddItemToArray(array, it) || cJSON_AddStringToObject(it, "sku", col(items, 0)) == NULL ||
            cJSON_AddStringToObject(it, "name", col(items, 1)) == NULL ||
            cJSON_AddNumberToObject(it, "qty", qty) == NULL ||
            cJSON_AddStringToObject(it, "price", col(items, 3)) == NULL) {
            sqlite3_reset(items);
            return app_fail(why, why_len, "out of memory");
        }
        n++;
    }
    sqlite3_reset(items);
    if (rc != SQLITE_DONE)
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    return n > 0 ? 0 : app_fail(why, why_len, "sale %s has no items", sale_id);
}

int store_db_unpublished(sqlite3 *db, size_t max, store_sale **out, size_t *count, char *why, size_t why_len)
{
    *out = NULL;
    *count = 0;
    sqlite3_stmt *sales = NULL, *items = NULL;
    int rc = -1;
    if (sqlite3_prepare_v2(db,
                           "SELECT s.sale_id, s.time, s.total, c.id, c.name, c.phone, c.address FROM sales s"
                           " JOIN customers c ON c.id = s.customer_id WHERE s.published_at IS NULL"
                           " ORDER BY s.sale_id LIMIT ?",
                           -1, &sales, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db,
                           "SELECT si.sku, i.name, si.qty, si.price FROM sale_items si JOIN items i ON i.sku = si.sku"
                           " WHERE si.sale_id = ? ORDER BY si.rowid",
                           -1, &items, NULL) != SQLITE_OK) {
        app_fail(why, why_len, "%s", sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_int64(sales, 1, max == 0 ? -1 : (sqlite3_int64)max);
    size_t cap = 0;
    int step;
    while ((step = sqlite3_step(sales)) == SQLITE_ROW) {
        if (*count == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            store_sale *grown = realloc(*out, ncap * sizeof **out);
            if (grown == NULL) {
                app_fail(why, why_len, "out of memory");
                goto out;
            }
            *out = grown;
            cap = ncap;
        }
        store_sale *s = &(*out)[*count];
        memset(s, 0, sizeof *s);
        snprintf(s->sale_id, sizeof s->sale_id, "%s", col(sales, 0));
        snprintf(s->customer_id, sizeof s->customer_id, "%s", col(sales, 3));
        snprintf(s->total, sizeof s->total, "%s", col(sales, 2));
        (*count)++;
        int64_t total = 0, sum = 0;
        if (!money_parse_str(s->total, &total)) {
            app_fail(why, why_len, "sale %s: malformed total", s->sale_id);
            goto out;
        }
        cJSON *j = cJSON_CreateObject(), *customer = cJSON_CreateObject(), *array = cJSON_CreateArray();
        int built = j != NULL && customer != NULL && array != NULL &&
                    cJSON_AddStringToObject(j, "sale_id", s->sale_id) != NULL &&
                    cJSON_AddStringToObject(j, "time", col(sales, 1)) != NULL &&
                    cJSON_AddStringToObject(customer, "id", col(sales, 3)) != NULL &&
                    cJSON_AddStringToObject(customer, "name", col(sales, 4)) != NULL &&
                    cJSON_AddStringToObject(customer, "phone", col(sales, 5)) != NULL &&
                    cJSON_AddStringToObject(customer, "address", col(sales, 6)) != NULL;
        if (built) {
            cJSON_AddItemToObject(j, "customer", customer);
            customer = NULL;
            cJSON_AddItemToObject(j, "items", array);
            built = add_items(db, items, s->sale_id, array, &sum, why, why_len) == 0;
            array = NULL;
            if (built && sum != total) {
                app_fail(why, why_len, "sale %s: total %s is not the sum of its items", s->sale_id, s->total);
                built = 0;
            }
            built = built && cJSON_AddStringToObject(j, "total", s->total) != NULL;
        } else {
            app_fail(why, why_len, "out of memory");
        }
        s->payload = built ? cJSON_PrintUnformatted(j) : NULL;
        cJSON_Delete(j);
        cJSON_Delete(customer);
        cJSON_Delete(array);
        if (s->payload == NULL) {
            if (built)
                app_fail(why, why_len, "out of memory");
            goto out;
        }
        s->payload_len = strlen(s->payload);
    }
    if (step != SQLITE_DONE) {
        app_fail(why, why_len, "%s", sqlite3_errmsg(db));
        goto out;
    }
    rc = 0;
out:
    sqlite3_finalize(sales);
    sqlite3_finalize(items);
    if (rc != 0) {
        store_db_free_sales(*out, *count);
        *out = NULL;
        *count = 0;
    }
    return rc;
}

/* Runs one statement with its parameters bound to the texts in order. */
static int run_with(sqlite3 *db, const char *sql, const char *const *texts, int n, char *why, size_t why_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    for (int i = 0; i < n; i++)
        bind_text(st, i + 1, texts[i]);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : app_fail(why, why_len, "%s", sqlite3_errmsg(db));
}

int store_db_mark_published(sqlite3 *db, const char *sale_id, const char *message_id, char *why, size_t why_len)
{
    char now[32];
    app_db_now(now);
    const char *const texts[] = {now, message_id, sale_id};
    return run_with(db, "UPDATE sales SET published_at = ?, message_id = ? WHERE sale_id = ?", texts, 3, why,
                    why_len);
}

int store_db_publication(sqlite3 *db, const char *sale_id, const char *process, char message_id[IDEVS_UUID_STR_LEN],
                         char *why, size_t why_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, "SELECT message_id FROM publications WHERE sale_id = ? AND process = ?", -1, &st,
                           NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    bind_text(st, 1, sale_id);
    bind_text(st, 2, process);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        snprintf(message_id, IDEVS_UUID_STR_LEN, "%s", col(st, 0));
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return found;
}

int store_db_record_publication(sqlite3 *db, const char *sale_id, const char *process, const char *message_id,
                                char *why, size_t why_len)
{
    char now[32];
    app_db_now(now);
    const char *const texts[] = {sale_id, process, message_id, now};
    return run_with(db, "INSERT INTO publications (sale_id, process, message_id, published_at) VALUES (?, ?, ?, ?)",
                    texts, 4, why, why_len);
}
