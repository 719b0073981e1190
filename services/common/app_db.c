/* The SQLite side shared by the services' databases; see idevs_service_app.h. */
#include "idevs_service_app.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

int app_fail(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
    return -1;
}

int app_db_fail(sqlite3 *db, char *why, size_t why_len)
{
    return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
}

int app_db_prepare(sqlite3 *db, const char *sql, const char *const *texts, size_t n, sqlite3_stmt **st, char *why,
                   size_t why_len)
{
    *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, st, NULL) != SQLITE_OK) {
        sqlite3_finalize(*st);
        *st = NULL;
        return app_db_fail(db, why, why_len);
    }
    for (size_t k = 0; k < n; k++)
        if (texts[k] != NULL)
            sqlite3_bind_text(*st, (int)k + 1, texts[k], -1, SQLITE_TRANSIENT);
    return 0;
}

int app_db_finish(sqlite3 *db, sqlite3_stmt *st, char *why, size_t why_len)
{
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? changed : app_db_fail(db, why, why_len);
}

int app_db_exec(sqlite3 *db, const char *sql, char *why, size_t why_len)
{
    char *message = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &message) == SQLITE_OK)
        return 0;
    int rc = app_fail(why, why_len, "%s", message != NULL ? message : sqlite3_errmsg(db));
    sqlite3_free(message);
    return rc;
}

void app_db_now(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, 32, "%.19s.%03uZ", base, (unsigned)(ts.tv_nsec / 1000000) % 1000u);
}

sqlite3 *app_db_open(const char *path, const char *schema_sql, const char *must_exist_hint, char *why,
                     size_t why_len)
{
    int create = must_exist_hint == NULL;
    sqlite3 *db = NULL;
    if (create && idevs_service_private_file(path, why, why_len) < 0)
        return NULL; /* personal data: a new database is readable by this user only */
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0), NULL) != SQLITE_OK) {
        app_fail(why, why_len, "%s: %s%s", path, db != NULL ? sqlite3_errmsg(db) : "cannot open",
                 create ? "" : must_exist_hint);
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 5000);
    /* journal_mode answers with the mode in force: anything but "wal" means it was refused */
    sqlite3_stmt *st = NULL;
    int wal = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA journal_mode=WAL", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        const unsigned char *mode = sqlite3_column_text(st, 0);
        wal = mode != NULL && strcmp((const char *)mode, "wal") == 0;
    }
    sqlite3_finalize(st);
    char inner[512] = "";
    if (!wal || app_db_exec(db, "PRAGMA synchronous=NORMAL", inner, sizeof inner) != 0 ||
        app_db_exec(db, schema_sql, inner, sizeof inner) != 0) {
        app_fail(why, why_len, "%s: %s", path, wal ? inner : "cannot use the WAL journal");
        sqlite3_close(db);
        return NULL;
    }
    return db;
}
