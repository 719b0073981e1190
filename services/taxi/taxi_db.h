/* taxi's SQLite database (docs/CASESTUDY.md, "The databases"): one row per booking, keyed by booking_ref, so
 * that a ride asked twice is booked once. WAL journal, prepared statements only. */
#ifndef TAXI_DB_H
#define TAXI_DB_H

#include <sqlite3.h>
#include <stddef.h>

#define TAXI_REF_MAX 64
#define TAXI_TEXT_MAX 256

typedef struct taxi_booking {
    char booking_ref[TAXI_REF_MAX + 1];
    char name[TAXI_TEXT_MAX + 1];
    char pickup[TAXI_TEXT_MAX + 1];
    char time[TAXI_REF_MAX + 1];
    char driver[TAXI_REF_MAX + 1];
    char vehicle[TAXI_REF_MAX + 1];
    int eta_minutes;
    char request_message_id[40];
} taxi_booking;

/* The bookings table, for app_db_open. */
extern const char taxi_db_schema[];

/* 1 and *out filled (driver, vehicle, eta, request id) when booking_ref is booked, 0 when not, -1 on error. */
int taxi_db_find(sqlite3 *db, const char *booking_ref, taxi_booking *out, char *why, size_t why_len);

/* Stores a new booking (received_at: now, UTC). 0, or -1 with why (a booking_ref already there included). */
int taxi_db_insert(sqlite3 *db, const taxi_booking *b, char *why, size_t why_len);

#endif
