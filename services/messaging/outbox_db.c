/* messaging's SQLite outbox; see outbox_db.h. */
#include "outbox_db.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "idevs_service.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " message_id TEXT PRIMARY KEY, phone TEXT NOT NULL, text TEXT NOT NULL, provenance TEXT NOT NULL,"
    " received_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued');";

static int fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

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

sqlite3 *outbox_db_open(const char *path, char *why, size_t why_len)
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

void outbox_db_close(sqlite3 *db)
{
    sqlite3_close(db);
}

int outbox_db_queue(sqlite3 *db, const char *message_id, const char *phone, const char *text,
                    const char *provenance, char *why, size_t why_len)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db,
                           "INSERT INTO outbox (message_id, phone, text, provenance, received_at, status)"
                           " VALUES (?, ?, ?, ?, ?, 'queued') ON CONFLICT (message_id) DO NOTHING",
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
    sqlite3_bind_text(st, 1, message_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, phone, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, provenance, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return fail(why, why_len, "%s", sqlite3_errmsg(db));
    return changed > 0 ? 1 : 0;
}
