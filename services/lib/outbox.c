/* The outbox: what this service sent the process and the process has not receipted yet (docs/PROTOCOL.md
 * section 9). Inputs and answers enter it before they are sealed; each is numbered in the outbox's stream, sent,
 * and sent again (sealed anew, with the same id) until the process's receipt names it.
 *
 * One SQLite file (or memory): the table idevs_outbox holds a row per message, its payload until the receipt, and
 * an input's partition (never its partition key, which may be customer data);
 * idevs_outbox_meta the stream. WAL with synchronous=NORMAL: a message is in the file before publish() returns,
 * which a crash of the service does not undo (a crash of the machine may undo the last ones). In memory: the
 * rows sent and not receipted, at most IDEVS_REPLAY_WINDOW (9.1's bound: never a number that far above the
 * lowest unreceipted one), each with when it goes again. */
#include <stdlib.h>
#include <string.h>

#include "idevs_receipt.h"
#include "idevs_replay.h"
#include "service_internal.h"

#define OUTBOX_LOAD_BATCH 256

static const char schema[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS idevs_outbox_meta (name TEXT PRIMARY KEY, value BLOB NOT NULL);"
    /* kind 0: an input (target: its name); 1: an answer (target: its request's name, with the request's id and
     * correlation data). number AUTOINCREMENT: a number is never used twice, even after its row is gone. The
     * column partition_number comes after (add_partition_column). */
    "CREATE TABLE IF NOT EXISTS idevs_outbox (number INTEGER PRIMARY KEY AUTOINCREMENT, kind INTEGER NOT NULL,"
    " target TEXT NOT NULL, key TEXT UNIQUE, payload BLOB, request_id BLOB, correlation BLOB,"
    " receipted INTEGER NOT NULL DEFAULT 0);"
    /* The ids of outputs and requests handled, the last SVC_SEEN_KEEP of them: a copy the process sends again
     * after this service restarted is receipted again, not handled again. */
    "CREATE TABLE IF NOT EXISTS idevs_seen (id BLOB PRIMARY KEY) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS idevs_seen_order (n INTEGER PRIMARY KEY AUTOINCREMENT, id BLOB NOT NULL);";

/* The column of an input's partition (NULL: none), added by ALTER TABLE so that a file made before it had one
 * gets it too: one definition for new and old files. */
static bool has_partition_column(sqlite3 *db)
{
    sqlite3_stmt *st = NULL;
    bool has = sqlite3_prepare_v2(db, "SELECT partition_number FROM idevs_outbox LIMIT 0", -1, &st, NULL) == SQLITE_OK;
    sqlite3_finalize(st);
    return has;
}

static int add_partition_column(sqlite3 *db)
{
    if (has_partition_column(db))
        return SQLITE_OK;
    return sqlite3_exec(db, "ALTER TABLE idevs_outbox ADD COLUMN partition_number INTEGER", NULL, NULL, NULL);
}

static idevs_err db_fail(idevs_service *svc, char *why, size_t why_len, const char *what)
{
    return idevs_fail(why, why_len, IDEVS_ERR_IO, "outbox '%s': %s: %s", svc->outbox_path, what,
                      svc->outbox_db != NULL ? sqlite3_errmsg(svc->outbox_db) : "cannot open");
}

idevs_err svc_outbox_open(idevs_service *svc, const char *path, char *why, size_t why_len)
{
    svc->outbox_path = strdup(path != NULL ? path : ":memory:");
    if (svc->outbox_path == NULL)
        return IDEVS_ERR_NOMEM;
    if (path != NULL && idevs_service_private_file(path, why, why_len) < 0)
        return IDEVS_ERR_IO;
    if (sqlite3_open_v2(svc->outbox_path, &svc->outbox_db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
            SQLITE_OK ||
        sqlite3_exec(svc->outbox_db, schema, NULL, NULL, NULL) != SQLITE_OK ||
        add_partition_column(svc->outbox_db) != SQLITE_OK)
        return db_fail(svc, why, why_len, "cannot set it up");
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->outbox_db, "SELECT value FROM idevs_outbox_meta WHERE name = 'stream'", -1, &st,
                           NULL) != SQLITE_OK)
        return db_fail(svc, why, why_len, "cannot read its stream");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_bytes(st, 0) == IDEVS_MSGID_STREAM_LEN)
        memcpy(svc->outbox_stream, sqlite3_column_blob(st, 0), IDEVS_MSGID_STREAM_LEN);
    sqlite3_finalize(st);
    if (rc == SQLITE_ROW) {
        svc->stats.unreceipted_at_start = svc_outbox_unreceipted(svc);
        return IDEVS_OK;
    }
    /* A new outbox: a new stream, so that a receiver never takes its numbers for an older outbox's. */
    if (idevs_random(svc->outbox_stream, IDEVS_MSGID_STREAM_LEN) != IDEVS_OK)
        return idevs_fail(why, why_len, IDEVS_ERR_CRYPTO, "outbox '%s': no random stream", svc->outbox_path);
    if (sqlite3_prepare_v2(svc->outbox_db, "INSERT INTO idevs_outbox_meta (name, value) VALUES ('stream', ?)", -1,
                           &st, NULL) != SQLITE_OK)
        return db_fail(svc, why, why_len, "cannot write its stream");
    sqlite3_bind_blob(st, 1, svc->outbox_stream, IDEVS_MSGID_STREAM_LEN, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? IDEVS_OK : db_fail(svc, why, why_len, "cannot write its stream");
}

void svc_outbox_close(idevs_service *svc)
{
    if (svc->outbox_db != NULL)
        sqlite3_close(svc->outbox_db);
    svc->outbox_db = NULL;
    free(svc->outbox_path);
    svc->outbox_path = NULL;
    svc->outbox_count = 0;
}

static idevs_msgid id_of(const idevs_service *svc, uint64_t number)
{
    return idevs_msgid_numbered(svc->outbox_stream, number);
}

/* The lowest number that may not be receipted, when `next` is the next unreceipted row to load: the first in
 * flight, or with none in flight `next` itself (every row below it is receipted). Not outbox_loaded + 1: after a
 * restart that is 1, and a stream past its 1024th message would never send again. */
static uint64_t lowest_open(const idevs_service *svc, uint64_t next)
{
    return svc->outbox_count > 0 ? svc->outbox[0].number : next;
}

/* Loads into the in-flight set the next unreceipted rows, as far as 9.1's bound allows. */
static void load_more(idevs_service *svc)
{
    while (svc->outbox_count < SVC_OUTBOX_INFLIGHT) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(svc->outbox_db,
                               "SELECT number FROM idevs_outbox WHERE receipted = 0 AND number > ? ORDER BY number "
                               "LIMIT ?",
                               -1, &st, NULL) != SQLITE_OK)
            return;
        sqlite3_bind_int64(st, 1, (sqlite3_int64)svc->outbox_loaded);
        sqlite3_bind_int(st, 2, OUTBOX_LOAD_BATCH);
        size_t got = 0;
        bool full = false;
        while (!full && sqlite3_step(st) == SQLITE_ROW) {
            uint64_t number = (uint64_t)sqlite3_column_int64(st, 0);
            if (number >= lowest_open(svc, number) + IDEVS_REPLAY_WINDOW || svc->outbox_count == SVC_OUTBOX_INFLIGHT) {
                full = true;
                break;
            }
            svc_outbox_entry *e = &svc->outbox[svc->outbox_count++];
            e->number = number;
            e->attempts = 0;
            e->next_ms = 0;
            svc->outbox_loaded = number;
            got++;
        }
        sqlite3_finalize(st);
        if (full || got < OUTBOX_LOAD_BATCH)
            return;
    }
}

/* Seals and publishes row `number` with its numbered id. */
static idevs_err send_row(idevs_service *svc, uint64_t number)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->outbox_db,
                           "SELECT kind, target, payload, request_id, correlation, partition_number FROM idevs_outbox "
                           "WHERE number = ?",
                           -1, &st, NULL) != SQLITE_OK)
        return IDEVS_ERR_IO;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)number);
    idevs_err err = IDEVS_ERR_IO;
    if (sqlite3_step(st) == SQLITE_ROW) {
        int kind = sqlite3_column_int(st, 0);
        const char *target = (const char *)sqlite3_column_text(st, 1);
        const void *payload = sqlite3_column_blob(st, 2);
        size_t len = (size_t)sqlite3_column_bytes(st, 2);
        idevs_msgid id = id_of(svc, number);
        if (kind == 0) {
            int32_t partition = sqlite3_column_type(st, 5) == SQLITE_NULL ? SVC_NO_PARTITION : sqlite3_column_int(st, 5);
            err = svc_send_input(svc, target, partition, payload, len, &id);
        } else {
            idevs_msgid request;
            const void *rid = sqlite3_column_blob(st, 3);
            if (rid == NULL || sqlite3_column_bytes(st, 3) != IDEVS_UUID_LEN) {
                err = IDEVS_ERR_IO;
            } else {
                memcpy(request.b, rid, IDEVS_UUID_LEN);
                err = svc_send_answer(svc, target, &request, sqlite3_column_blob(st, 4),
                                      (size_t)sqlite3_column_bytes(st, 4), payload, len, &id);
            }
        }
    }
    sqlite3_finalize(st);
    return err;
}

static void seen_write(idevs_service *svc, const idevs_msgid *id);

void svc_outbox_pump(idevs_service *svc)
{
    if (svc->outbox_db == NULL || !idevs_service_ready(svc))
        return;
    load_more(svc);
    uint64_t now = svc_now_ms();
    for (size_t i = 0; i < svc->outbox_count; i++) {
        svc_outbox_entry *e = &svc->outbox[i];
        if (e->next_ms > now)
            continue;
        idevs_err err = send_row(svc, e->number);
        if (err == IDEVS_ERR_NOT_NOW)
            return; /* the connection went: all of it goes again once verified anew */
        e->attempts++;
        if (e->attempts > 1)
            svc->stats.retransmitted++;
        e->next_ms = now + idevs_resend_delay_ms(e->attempts);
    }
}

void svc_outbox_resend_all(idevs_service *svc)
{
    for (size_t i = 0; i < svc->outbox_count; i++)
        svc->outbox[i].next_ms = 0;
}

idevs_err svc_outbox_add(idevs_service *svc, int kind, const char *target, const char *key, int32_t partition,
                         const void *payload, size_t len, const idevs_msgid *request, const uint8_t *corr,
                         size_t corr_len, idevs_msgid *id)
{
    if (!svc->deployment->services[svc->self_index].receipts) {
        /* No receipts with this service's descriptor entry: sent once, kept nowhere (the old at-most-once). */
        idevs_msgid fresh;
        idevs_err err = idevs_random(fresh.b, sizeof fresh.b);
        if (err == IDEVS_OK)
            err = kind == 0 ? svc_send_input(svc, target, partition, payload, len, &fresh)
                            : svc_send_answer(svc, target, request, corr, corr_len, payload, len, &fresh);
        if (err == IDEVS_OK && id != NULL)
            *id = fresh;
        return err;
    }
    if (key != NULL) {
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(svc->outbox_db, "SELECT number, receipted FROM idevs_outbox WHERE key = ?", -1, &st,
                               NULL) != SQLITE_OK)
            return IDEVS_ERR_IO;
        sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
        int rc = sqlite3_step(st);
        uint64_t number = rc == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        bool receipted = rc == SQLITE_ROW && sqlite3_column_int(st, 1) != 0;
        sqlite3_finalize(st);
        if (rc == SQLITE_ROW) {
            /* Published before: nothing new. Receipted already: the application hears it (again) now. */
            idevs_msgid known = id_of(svc, number);
            if (id != NULL)
                *id = known;
            if (receipted && svc->on_receipt != NULL)
                svc->on_receipt(svc, &known, key, svc->on_receipt_arg);
            return IDEVS_OK;
        }
    }
    /* An answer and its request's id as handled enter the file together: a service killed before has not
     * handled the request (its copy is handled again: answered, from what on_message stored), one killed after
     * has its answer to send (a copy is receipted again, not answered twice). */
    bool answer = kind == 1 && request != NULL;
    if (answer && sqlite3_exec(svc->outbox_db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
        return IDEVS_ERR_IO;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->outbox_db,
                           "INSERT INTO idevs_outbox (kind, target, key, payload, request_id, correlation, "
                           "partition_number) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           -1, &st, NULL) != SQLITE_OK) {
        if (answer)
            sqlite3_exec(svc->outbox_db, "ROLLBACK", NULL, NULL, NULL);
        return IDEVS_ERR_IO;
    }
    sqlite3_bind_int(st, 1, kind);
    sqlite3_bind_text(st, 2, target, -1, SQLITE_STATIC);
    if (key != NULL)
        sqlite3_bind_text(st, 3, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, len > 0 ? payload : "", (int)len, SQLITE_STATIC);
    if (request != NULL)
        sqlite3_bind_blob(st, 5, request->b, IDEVS_UUID_LEN, SQLITE_STATIC);
    if (corr_len > 0)
        sqlite3_bind_blob(st, 6, corr, (int)corr_len, SQLITE_STATIC);
    if (partition != SVC_NO_PARTITION)
        sqlite3_bind_int(st, 7, partition);
    int rc = sqlite3_step(st);
    sqlite3_finalize(st);
    uint64_t number = (uint64_t)sqlite3_last_insert_rowid(svc->outbox_db);
    if (answer) {
        if (rc == SQLITE_DONE)
            seen_write(svc, request);
        if (rc != SQLITE_DONE || sqlite3_exec(svc->outbox_db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
            sqlite3_exec(svc->outbox_db, "ROLLBACK", NULL, NULL, NULL);
            return IDEVS_ERR_IO;
        }
    }
    if (rc != SQLITE_DONE)
        return IDEVS_ERR_IO;
    if (id != NULL)
        *id = id_of(svc, number);
    svc_outbox_pump(svc);
    return IDEVS_OK;
}

/* One id of a receipt: its row receipted (payload gone; unkeyed rows gone altogether), the application told. */
static void receipted(idevs_service *svc, const idevs_msgid *id)
{
    if (memcmp(id->b, svc->outbox_stream, IDEVS_MSGID_STREAM_LEN) != 0)
        return; /* another outbox's (one this service had before it lost its file) */
    uint64_t number = idevs_msgid_number(id);
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(svc->outbox_db, "SELECT key FROM idevs_outbox WHERE number = ? AND receipted = 0", -1,
                           &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_int64(st, 1, (sqlite3_int64)number);
    char *key = NULL;
    bool open = sqlite3_step(st) == SQLITE_ROW;
    if (open && sqlite3_column_type(st, 0) != SQLITE_NULL)
        key = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    if (!open)
        return; /* receipted before: a receipt sent again */
    const char *sql = key != NULL ? "UPDATE idevs_outbox SET receipted = 1, payload = NULL, correlation = NULL "
                                    "WHERE number = ?"
                                  : "DELETE FROM idevs_outbox WHERE number = ?";
    if (sqlite3_prepare_v2(svc->outbox_db, sql, -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, (sqlite3_int64)number);
        open = sqlite3_step(st) == SQLITE_DONE;
        sqlite3_finalize(st);
    }
    for (size_t i = 0; i < svc->outbox_count; i++)
        if (svc->outbox[i].number == number) {
            memmove(&svc->outbox[i], &svc->outbox[i + 1], (svc->outbox_count - i - 1) * sizeof svc->outbox[0]);
            svc->outbox_count--;
            break;
        }
    svc->stats.receipted++;
    if (svc->on_receipt != NULL)
        svc->on_receipt(svc, id, key, svc->on_receipt_arg);
    free(key);
}

void svc_outbox_receipt(idevs_service *svc, const uint8_t *payload, size_t len)
{
    static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    size_t n = 0;
    if (idevs_receipt_decode(payload, len, ids, &n) != IDEVS_OK) {
        svc->stats.rejected++;
        svc->stats.rejected_by_reason[IDEVS_ERR_MALFORMED]++;
        return;
    }
    for (size_t i = 0; i < n; i++)
        receipted(svc, &ids[i]);
    svc_outbox_pump(svc); /* room in the window: what waited goes now */
}

size_t svc_outbox_unreceipted(const idevs_service *svc)
{
    if (svc->outbox_db == NULL)
        return 0;
    sqlite3_stmt *st = NULL;
    size_t n = 0;
    if (sqlite3_prepare_v2(svc->outbox_db, "SELECT count(*) FROM idevs_outbox WHERE receipted = 0", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW)
            n = (size_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    return n;
}

/* ---- what this service handled, and its receipts to the process ---- */

/* Without receipts nothing is sent again on purpose: the window in memory is enough, as it always was. */
static bool seen_kept(const idevs_service *svc)
{
    return svc->deployment->services[svc->self_index].receipts;
}

bool svc_seen_before(idevs_service *svc, const idevs_msgid *id)
{
    if (idevs_service_dedupe_contains(svc->dedupe, id))
        return true;
    if (!seen_kept(svc))
        return false;
    sqlite3_stmt *st = NULL;
    bool seen = false;
    if (sqlite3_prepare_v2(svc->outbox_db, "SELECT 1 FROM idevs_seen WHERE id = ?", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, id->b, IDEVS_UUID_LEN, SQLITE_STATIC);
        seen = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    return seen;
}

static void exec_id(sqlite3 *db, const char *sql, const idevs_msgid *id)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return;
    if (id != NULL)
        sqlite3_bind_blob(st, 1, id->b, IDEVS_UUID_LEN, SQLITE_STATIC);
    (void)sqlite3_step(st);
    sqlite3_finalize(st);
}

void svc_seen_remember(idevs_service *svc, const idevs_msgid *id)
{
    (void)idevs_service_dedupe_seen(svc->dedupe, id);
}

/* Keeps id in the file, once (a second note of the same id changes nothing). */
static void seen_write(idevs_service *svc, const idevs_msgid *id)
{
    exec_id(svc->outbox_db, "INSERT OR IGNORE INTO idevs_seen (id) VALUES (?)", id);
    if (sqlite3_changes(svc->outbox_db) == 0)
        return; /* kept already: with its answer, or by an earlier note */
    exec_id(svc->outbox_db, "INSERT INTO idevs_seen_order (id) VALUES (?)", id);
    if (++svc->seen_since_prune >= 1024) {
        svc->seen_since_prune = 0;
        exec_id(svc->outbox_db,
                "DELETE FROM idevs_seen WHERE id IN (SELECT id FROM idevs_seen_order WHERE n <= "
                "(SELECT max(n) FROM idevs_seen_order) - " SVC_SEEN_KEEP_TEXT ")", NULL);
        exec_id(svc->outbox_db,
                "DELETE FROM idevs_seen_order WHERE n <= (SELECT max(n) FROM idevs_seen_order) - " SVC_SEEN_KEEP_TEXT,
                NULL);
    }
}

void svc_seen_note(idevs_service *svc, const idevs_msgid *id)
{
    svc_seen_remember(svc, id);
    if (seen_kept(svc))
        seen_write(svc, id);
}

void svc_receipt_note(idevs_service *svc, const idevs_msgid *id)
{
    if (!svc->deployment->services[svc->self_index].receipts)
        return; /* its descriptor entry does not take part in receipts */
    if (svc->receipt_count == IDEVS_RECEIPT_IDS_MAX)
        svc_receipts_flush(svc);
    svc->receipt_ids[svc->receipt_count++] = *id;
}

void svc_receipts_flush(idevs_service *svc)
{
    if (svc->receipt_count == 0 || !idevs_service_ready(svc))
        return;
    uint8_t *payload = NULL;
    size_t len = 0;
    idevs_err err = idevs_receipt_encode(svc->receipt_ids, svc->receipt_count, &payload, &len);
    if (err == IDEVS_OK)
        err = svc_send_receipt(svc, payload, len);
    free(payload);
    /* Sent, or not: a receipt that is lost makes the process send again, and that copy is receipted then. */
    svc->receipt_count = 0;
    if (err == IDEVS_OK)
        svc->stats.receipts_sent++;
}
