/* What the case-study services (store, taxi, messaging) and the tools (idevs-pub, idevs-sub) share around the
 * service library, so that each program keeps only its own logic: stopping on a signal, whole-number options,
 * the defaults and options of a service, starting it with its "verified ..." line, the run loop, and opening a
 * SQLite database the same way (docs/CASESTUDY.md, "The databases"). */
#ifndef IDEVS_SERVICE_APP_H
#define IDEVS_SERVICE_APP_H

#include <signal.h>
#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_envelope.h"
#include "idevs_service.h"

/* Set to 1 by SIGINT or SIGTERM once app_install_signals() has run. */
extern volatile sig_atomic_t app_stopping;

/* SIGINT and SIGTERM set app_stopping; SIGPIPE is ignored, so that a closed socket is an error, not an exit. */
void app_install_signals(void);

/* A number in decimal digits only (no sign, no space), at most max, into *out: 1, or 0 with *out untouched. */
int app_parse_whole(const char *text, unsigned long long max, unsigned long long *out);

/* Milliseconds on the monotonic clock. */
int64_t app_now_ms(void);

/* The library's defaults, the process 'rewards' and --name NAME; the command line may override each. */
void app_config_default(idevs_service_config *cfg, const char *name);

/* What a service that receives takes besides the connection options. */
typedef struct app_receive_options {
    const char *db_path;          /* --db FILE, required */
    unsigned long long count;     /* --count N, at most 2^32-1 (0: no limit) */
    unsigned long long timeout_s; /* --timeout S, at most a year (0: none) */
} app_receive_options;

/* Parses "--db FILE [--count N] [--timeout S] [connection options]" and --help for the program prog (usage: its
 * own usage text). -1 when the program goes on; otherwise its exit status, with cfg already released: 0 after
 * --help (usage on stdout), 2 after a usage error (the problem and usage on stderr). */
int app_parse_receive_options(const char *prog, const char *usage, int argc, char **argv,
                              idevs_service_config *cfg, app_receive_options *out);

/* Creates and starts the service, then prints on stdout
 *   verified the compartment of 'PROCESS' (backend B, measurement HEX...); WHAT
 * where HEX is the first measurement_bytes bytes of the measurement and WHAT is what_fmt formatted. On failure it
 * prints "PROG: WHY (ERROR)" on stderr and returns the error; *svc, if not NULL, is still the caller's to free. */
idevs_err app_start_service(const char *prog, const idevs_service_config *cfg, idevs_service_on_message on_message,
                            void *arg, size_t measurement_bytes, idevs_service **svc, const char *what_fmt, ...)
    __attribute__((format(printf, 7, 8)));

/* Runs the service until app_stopping, *handled reaching count (0: no limit), timeout_s seconds (0: none), or
 * IDEVS_ERR_NOT_NOW (the service cannot go on). Other errors are printed "PROG: ..." on stderr and it goes on. */
void app_run(const char *prog, idevs_service *svc, const unsigned long long *handled, unsigned long long count,
             unsigned long long timeout_s);

/* The message ids of msg's provenance (the inputs that caused it), comma separated, for a service to keep for
 * audit beside what it stored. */
#define APP_PROVENANCE_LEN (IDEVS_PROVENANCE_MAX * IDEVS_UUID_STR_LEN + 1)
void app_provenance(const idevs_service_message *msg, char out[APP_PROVENANCE_LEN]);

/* Formats why and returns -1, for one-line error returns. */
int app_fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Runs each statement of a constant SQL text (no parameters) in turn. 0, or -1 with SQLite's message in why. */
int app_db_exec(sqlite3 *db, const char *sql, char *why, size_t why_len);

/* The current UTC time with milliseconds, 2026-11-21T10:15:00.123Z. */
void app_db_now(char out[32]);

/* Opens a database in the WAL journal (so that sqlite3 -readonly can watch it while the service writes), with a
 * 5 s busy timeout and synchronous=NORMAL, then runs schema_sql (CREATE TABLE IF NOT EXISTS ...). must_exist_hint
 * NULL: the file is created if needed, readable by this user only (it holds personal data); otherwise the file
 * must exist and a failure to open it ends with this hint. NULL on failure, why starting with the path. */
sqlite3 *app_db_open(const char *path, const char *schema_sql, const char *must_exist_hint, char *why,
                     size_t why_len);

#endif
