/* messaging's SQLite outbox; see outbox_db.h. */
#include "outbox_db.h"

#include <stdio.h>

#include "idevs_service_app.h"

const char outbox_db_schema[] =
    "CREATE TABLE IF NOT EXISTS outbox ("
    " message_id TEXT PRIMARY KEY, phone TEXT NOT NULL, text TEXT NOT NULL, provenance TEXT NOT NULL,"
    " received_at TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'queued');";

int outbox_db_queue(sqlite3 *db, const char *message_id, const char *phone, const char *text,
                    const char *provenance, char *why, size_t why_len)
{
    char now[32];
    app_db_now(now);
    const char *values[] = {message_id, phone, text, provenance, now};
    sqlite3_stmt *st;
    int changed = app_db_prepare(db,
                                 "INSERT INTO outbox (message_id, phone, text, provenance, received_at, status)"
                                 " VALUES (?, ?, ?, ?, ?, 'queued') ON CONFLICT (message_id) DO NOTHING",
                                 values, 5, &st, why, why_len) == 0
                      ? app_db_finish(db, st, why, why_len)
                      : -1;
    return changed < 0 ? -1 : changed > 0;
}
