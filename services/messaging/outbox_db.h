/* messaging's SQLite outbox (docs/CASESTUDY.md, "The databases"): the messages a real SMS or WhatsApp gateway
 * would drain, keyed by the confirmation's message id, with its provenance for audit. WAL journal, prepared
 * statements only. */
#ifndef OUTBOX_DB_H
#define OUTBOX_DB_H

#include <sqlite3.h>
#include <stddef.h>

/* The outbox table, for app_db_open. */
extern const char outbox_db_schema[];

/* Queues a message (status 'queued', received_at now, UTC). 1 when stored, 0 when that message id is already
 * there (nothing changed), -1 on error with why. provenance: the ids of the inputs that caused it, comma
 * separated. */
int outbox_db_queue(sqlite3 *db, const char *message_id, const char *phone, const char *text,
                    const char *provenance, char *why, size_t why_len);

#endif
