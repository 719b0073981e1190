/* What the case-study services (store, taxi, messaging, points) and the tools (idevs-pub, idevs-sub) share around
 * the service library, so that each program keeps only its own logic: stopping on a signal, whole-number options,
 * the defaults and options of a service, starting it with its "verified ..." line, the run loop, the program of a
 * service that receives (receiver.c), and opening a SQLite database the same way (docs/CASESTUDY.md, "The
 * databases"). */
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

/* A tool's own option at argv[*i] (idevs-pub, idevs-sub): 0 when taken (*i past its value, if any), 2 after a
 * bad value (the problem printed "PROG: ..." on stderr), APP_OPTION_UNKNOWN when it is not one of the tool's. */
#define APP_OPTION_UNKNOWN (-1)
typedef int (*app_tool_option_fn)(void *opts, int argc, char **argv, int *i);

/* Sets cfg to the library's defaults and reads a tool's command line: the connection options and --help here, every
 * other argument through own(opts, ...). -1 when the tool goes on; otherwise its exit status, with cfg already
 * released: 0 after --help (usage on stdout), 2 after a usage error (the problem, and for an unknown option usage
 * too, on stderr). */
int app_parse_tool_options(const char *prog, const char *usage, int argc, char **argv, idevs_service_config *cfg,
                           app_tool_option_fn own, void *opts);

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

/* Prints on stderr, when one of the counts of copies changed since *last (or force), the service's running counts:
 *   PROG[ to 'PROCESS']: copies: N sent again, N unreceipted at start, N duplicates, N receipted, N receipts sent,
 *   N reconnects
 * (idevs_service_stats: retransmitted, unreceipted_at_start, duplicates, receipted, receipts_sent, reconnects),
 * and keeps them in *last (zeroed by the caller first). A changed count is printed at once, so that a service
 * killed at any moment has already said what it sent again and what it dropped (tests/casestudy/test_chaos.sh adds
 * up these lines); a run without faults prints none but the last. process may be NULL. Likewise, when envelopes
 * could not be opened (idevs_service_stats.rejected), a line that names why (none in a healthy run):
 *   PROG[ to 'PROCESS']: refused: N envelopes could not be opened (REASON N, ...) */
void app_report_copies(const char *prog, const char *process, idevs_service *svc, idevs_service_stats *last,
                       int force);

/* A program with commands (store seed|run, points run|totals): argv[1] names one of commands[0..n); --help or
 * help prints usage and the connection options. The command's exit status, 0 after help, 2 for anything else
 * (usage on stderr). */
typedef struct app_command {
    const char *name;
    int (*run)(int argc, char **argv); /* given the whole command line */
} app_command;
int app_run_command(const char *usage, const app_command *commands, size_t n, int argc, char **argv);

/* What a service that receives (messaging, taxi, points) keeps while it runs; its on_message is given it as arg,
 * and only for the messages of its kind (handled already counted). */
typedef struct app_receiver_state {
    const struct app_receiver *receiver;
    sqlite3 *db;
    unsigned long long handled;  /* messages of its kind: what --count counts */
    unsigned long long done;     /* stored (or answered) the first time */
    unsigned long long repeated; /* already there: delivered again, nothing changed */
    unsigned long long refused;  /* not of the format */
} app_receiver_state;

/* Such a service: the one difference between them is what they do with a message. */
typedef struct app_receiver {
    const char *prog;                    /* its name, in its messages and as the default --name */
    const char *process;                 /* the process it receives from */
    const char *usage;                   /* its own usage text, before the connection options */
    const char *schema;                  /* its database's tables (app_db_open creates them if needed) */
    idevs_service_kind kind;             /* the messages it takes: their kind, */
    const char *name;                    /* their name in the descriptor, */
    const char *what;                    /* and what they are, e.g. "a confirmation" (others are ignored, said so) */
    idevs_service_on_message on_message; /* arg: the app_receiver_state */
    const char *doing;                   /* the end of its "verified ..." line, e.g. "receiving confirmations" */
    int answers;                         /* it responds: its last answers leave before it stops */
    /* Its last line: "PROG: H LABELS[0], D LABELS[1], R LABELS[2], F refused" (handled, done, repeated). */
    const char *labels[3];
} app_receiver;

/* The program: "--db FILE [--count N] [--timeout S] [connection options]" (argv[0] is the program or its
 * command), the database opened (created, readable by this user only), the service started and run (app_run),
 * then the last line. Its exit status. */
int app_receiver_main(const app_receiver *r, int argc, char **argv);

/* The message ids of msg's provenance (the inputs that caused it), comma separated, for a service to keep for
 * audit beside what it stored. */
#define APP_PROVENANCE_LEN (IDEVS_PROVENANCE_MAX * IDEVS_UUID_STR_LEN + 1)
void app_provenance(const idevs_service_message *msg, char out[APP_PROVENANCE_LEN]);

/* Formats why and returns -1, for one-line error returns. */
int app_fail(char *why, size_t why_len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* SQLite's message for db's last error into why; returns -1. */
int app_db_fail(sqlite3 *db, char *why, size_t why_len);

/* Prepares one statement of sql into *st and binds texts[k] to its parameter k + 1 (a NULL one is left unbound:
 * SQL NULL, or for the caller to bind). 0, or -1 with SQLite's message in why (and *st NULL). */
int app_db_prepare(sqlite3 *db, const char *sql, const char *const *texts, size_t n, sqlite3_stmt **st, char *why,
                   size_t why_len);

/* Steps st, a statement that returns no row, and finalizes it: the rows it changed, or -1 with SQLite's message. */
int app_db_finish(sqlite3 *db, sqlite3_stmt *st, char *why, size_t why_len);

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
