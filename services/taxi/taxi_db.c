/* taxi's SQLite database; see taxi_db.h. */
#include "taxi_db.h"

#include <stdio.h>

#include "idevs_service_app.h"

const char taxi_db_schema[] =
    "CREATE TABLE IF NOT EXISTS bookings ("
    " booking_ref TEXT PRIMARY KEY, name TEXT NOT NULL, pickup TEXT NOT NULL, time TEXT NOT NULL,"
    " driver TEXT NOT NULL, vehicle TEXT NOT NULL, eta_minutes INTEGER NOT NULL,"
    " request_message_id TEXT NOT NULL, received_at TEXT NOT NULL);";

static void copy_col(sqlite3_stmt *st, int i, char *dst, size_t len)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    snprintf(dst, len, "%s", t != NULL ? (const char *)t : "");
}

int taxi_db_find(sqlite3 *db, const char *booking_ref, taxi_booking *out, char *why, size_t why_len)
{
    static const char sql[] =
        "SELECT driver, vehicle, eta_minutes, request_message_id FROM bookings WHERE booking_ref = ?";
    sqlite3_stmt *st;
    if (app_db_prepare(db, sql, &booking_ref, 1, &st, why, why_len) != 0)
        return -1;
    int rc = sqlite3_step(st), found = 0;
    if (rc == SQLITE_ROW) {
        copy_col(st, 0, out->driver, sizeof out->driver);
        copy_col(st, 1, out->vehicle, sizeof out->vehicle);
        out->eta_minutes = sqlite3_column_int(st, 2);
        copy_col(st, 3, out->request_message_id, sizeof out->request_message_id);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = app_db_fail(db, why, why_len);
    }
    sqlite3_finalize(st);
    return found;
}

int taxi_db_insert(sqlite3 *db, const taxi_booking *b, char *why, size_t why_len)
{
    char now[32];
    app_db_now(now);
    /* eta_minutes, the one number, is bound below */
    const char *values[] = {b->booking_ref, b->name, b->pickup, b->time, b->driver, b->vehicle, NULL,
                            b->request_message_id, now};
    sqlite3_stmt *st;
    if (app_db_prepare(db,
                       "INSERT INTO bookings (booking_ref, name, pickup, time, driver, vehicle, eta_minutes,"
                       " request_message_id, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       values, 9, &st, why, why_len) != 0)
        return -1;
    sqlite3_bind_int(st, 7, b->eta_minutes);
    return app_db_finish(db, st, why, why_len) < 0 ? -1 : 0;
}
