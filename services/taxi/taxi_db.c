/* taxi's SQLite database; see taxi_db.h. */
#include "taxi_db.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "idevs_service.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS bookings ("
    " booking_ref TEXT PRIMARY KEY, name TEXT NOT NULL, pickup TEXT NOT NULL, time TEXT NOT NULL,"
    " driver TEXT NOT NULL, vehicle TEXT NOT NULL, eta_minutes INTEGER NOT NULL,"
    " request_message_id TEXT NOT NULL, received_at TEXT NOT NULL);";

static int fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

/* One constant statement, no parameters; the first column of its first row (if any) into first. */
static int run1(sqlite3 *db, const char *sql, char *first, size_t first_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && first != NULL) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        snprintf(first, first_len, "%s", t != NULL ? (const char *)t : "");
    }
    while (rc == SQLITE_ROW)
        rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -1;
}

sqlite3 *taxi_db_open(const char *path, char *why, size_t why_len)
{
    sqlite3 *db = NULL;
    char mode[16] = "";
    if (idevs_service_private_file(path, why, why_len) < 0)
        return NULL; /* personal data: a new database is readable by this user only */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) != SQLITE_OK) {
        fail(why, why_len, "%s: %s", path, db != NULL ? sqlite3_errmsg(db) : "cannot open");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    if (run1(db, "PRAGMA journal_mode=WAL", mode, sizeof mode) != 0 || strcmp(mode, "wal") != 0 ||
        run1(db, "PRAGMA synchronous=NORMAL", NULL, 0) != 0 || run1(db, schema, NULL, 0) != 0) {
        fail(why, why_len, "%s: %s", path, strcmp(mode, "wal") != 0 ? "cannot use the WAL journal" : sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    return db;
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
        return fail(why, why_len, "%s", sqlite3_errmsg(db));
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
        found = fail(why, why_len, "%s", sqlite3_errmsg(db));
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
        return fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    struct timespec ts;
    struct tm tm;
    char base[24], now[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(now, sizeof now, "%.19s.%03uZ", base, (unsigned)(ts.tv_nsec / 1000000) % 1000u);
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
    return rc == SQLITE_DONE ? 0 : fail(why, why_len, "%s", sqlite3_errmsg(db));
}
