/* taxi's SQLite database; see taxi_db.h. */
#include "taxi_db.h"

#include <stdio.h>

#include "idevs_service_app.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS bookings ("
    " booking_ref TEXT PRIMARY KEY, name TEXT NOT NULL, pickup TEXT NOT NULL, time TEXT NOT NULL,"
    " driver TEXT NOT NULL, vehicle TEXT NOT NULL, eta_minutes INTEGER NOT NULL,"
    " request_message_id TEXT NOT NULL, received_at TEXT NOT NULL);";

sqlite3 *taxi_db_open(const char *path, char *why, size_t why_len)
{
    return app_db_open(path, schema, NULL, why, why_len);
}

void taxi_db_close(sqlite3 *db)
{
    sqlite3_close(db);
}

static void copy_col(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", t != NULL ? (const char *)t : "");
}

int taxi_db_find(sqlite3 *db, const char *booking_ref, taxi_booking *out, char *why, size_t why_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "SELECT driver, vehicle, eta_minutes, request_message_id FROM bookings WHERE booking_ref = ?",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    sqlite3_bind_text(st, 1, booking_ref, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->driver, sizeof out->driver);
        copy_col(st, 1, out->vehicle, sizeof out->vehicle);
        out->eta_minutes = sqlite3_column_int(st, 2);
        copy_col(st, 3, out->request_message_id, sizeof out->request_message_id);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    sqlite3_finalize(st);
    return found;
}

int taxi_db_insert(sqlite3 *db, const taxi_booking *b, char *why, size_t why_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO bookings (booking_ref, name, pickup, time, driver, vehicle, eta_minutes,"
                           " request_message_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        sqlite3_finalize(st);
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    char now[32];
    app_db_now(now);
    sqlite3_bind_text(st, 1, b->booking_ref, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, b->name, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, b->pickup, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, b->time, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, b->driver, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 6, b->vehicle, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 7, b->eta_minutes);
    sqlite3_bind_text(st, 8, b->request_message_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 9, now, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : app_fail(why, why_len, "%s", sqlite3_errmsg(db));
}
