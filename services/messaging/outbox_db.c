/* messaging's SQLite outbox; see outbox_db.h. */
#include "outbox_db.h"

#include <stdio.h>

#include "idevs_service_app.h"

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " message_id TEXT PRIMARY KEY, phone TEXT NOT NULL, text TEXT NOT NULL, provenance TEXT NOT NULL,"
    " received_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued');";

sqlite3 *outbox_db_open(const char *path, char *why, size_t why_len)
{
    return app_db_open(path, schema, NULL, why, why_len);
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
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    }
    char now[32];
    app_db_now(now);
    sqlite3_bind_text(st, 1, message_id, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 2, phone, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, text, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, provenance, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 5, now, -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    int changed = sqlite3_changes(db);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE)
        return app_fail(why, why_len, "%s", sqlite3_errmsg(db));
    return changed > 0 ? 1 : 0;
}
