/* The points service's SQLite database; see points_db.h. */
#include "points_db.h"

#include <stdio.h>

/* points > 0 per award; a total stays an integer (SQLite would turn an overflowing sum into a REAL). */
const char points_db_schema[] =
    "CREATE TABLE IF NOT EXISTS awards ("
    " sale_id TEXT PRIMARY KEY, customer_id TEXT NOT NULL, points INTEGER NOT NULL CHECK (points > 0),"
    " message_id TEXT NOT NULL, provenance TEXT NOT NULL, received_at TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS totals ("
    " customer_id TEXT PRIMARY KEY,"
    " points INTEGER NOT NULL CHECK (typeof(points) = 'integer' AND points >= 0),"
    " awards INTEGER NOT NULL, updated_at TEXT NOT NULL);";

sqlite3 *points_db_open(const char *path, int create, char *why, size_t why_len)
{
    return app_db_open(path, points_db_schema, create ? NULL : " (run the points service first: points run --db FILE)",
                       why, why_len);
}

void points_db_close(sqlite3 *db)
{
    sqlite3_close(db);
}

/* Runs one statement with the award's values bound by name (a name the statement does not use has index 0,
 * which SQLite refuses harmlessly); returns sqlite3_changes, or -1. */
static int step(sqlite3 *db, const char *sql, const points_award *a, const char *now, char *why, size_t why_len)
{
    sqlite3_stmt *st;
    if (app_db_prepare(db, sql, NULL, 0, &st, why, why_len) != 0)
        return -1;
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":sale"), a->sale_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":customer"), a->customer_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":points"), a->points);
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":message"), a->message_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":provenance"), a->provenance, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, sqlite3_bind_parameter_index(st, ":now"), now, -1, SQLITE_TRANSIENT);
    return app_db_finish(db, st, why, why_len);
}

int points_db_award(sqlite3 *db, const points_award *a, char *why, size_t why_len)
{
    if (a->points <= 0)
        return app_fail(why, why_len, "sale %s: %lld points: an award is at least 1", a->sale_id,
                        (long long)a->points);
    char now[32];
    app_db_now(now);
    if (app_db_exec(db, "BEGIN IMMEDIATE", why, why_len) != 0)
        return -1;
    int stored = step(db,
                      "INSERT INTO awards (sale_id, customer_id, points, message_id, provenance, received_at)"
                      " VALUES (:sale, :customer, :points, :message, :provenance, :now)"
                      " ON CONFLICT (sale_id) DO NOTHING",
                      a, now, why, why_len);
    if (stored > 0 &&
        step(db,
             "INSERT INTO totals (customer_id, points, awards, updated_at) VALUES (:customer, :points, 1, :now)"
             " ON CONFLICT (customer_id) DO UPDATE SET points = points + excluded.points, awards = awards + 1,"
             " updated_at = excluded.updated_at",
             a, now, why, why_len) < 0)
        stored = -1;
    if (stored >= 0 && app_db_exec(db, "COMMIT", why, why_len) == 0)
        return stored > 0 ? 1 : 0;
    char ignored[64];
    app_db_exec(db, "ROLLBACK", ignored, sizeof ignored);
    return -1;
}

long points_db_totals(sqlite3 *db, const char *customer_id, points_db_total_fn fn, void *arg, char *why,
                      size_t why_len)
{
    sqlite3_stmt *st;
    if (app_db_prepare(db,
                       "SELECT customer_id, points, awards FROM totals WHERE ?1 IS NULL OR customer_id = ?1"
                       " ORDER BY customer_id",
                       &customer_id, 1, &st, why, why_len) != 0)
        return -1;
    long n = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *c = sqlite3_column_text(st, 0);
        fn(arg, c != NULL ? (const char *)c : "", sqlite3_column_int64(st, 1), sqlite3_column_int64(st, 2));
        n++;
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? n : app_db_fail(db, why, why_len);
}
