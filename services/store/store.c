/* store: the case study's shop (docs/CASESTUDY.md). Seeds its own SQLite database with a generated data set,
 * and publishes its sales, sealed to the compartment of each process it names (rewards by default), through the
 * service library.
 *
 *   store seed --db FILE [--customers N] [--sales N] [--seed S]
 *   store run --db FILE [--count N] [--rate PER_SECOND] [connection options]
 *             [--process NAME [connection options]]...
 *
 * It prints sale ids, totals and message ids: never a name, phone number or address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_service.h"
#include "idevs_service_app.h"
#include "money.h"
#include "store_db.h"
#include "store_seed.h"
#include "targets.h"

#define BATCH 100             /* sales published between two waits for their receipts */
#define FLUSH_TIMEOUT_MS 30000
#define RECEIPT_TIMEOUT_MS 60000 /* for the receipts of a batch: meanwhile the outbox sends again what is lost */

static const char usage[] =
    "usage: store seed --db FILE [--customers N] [--sales N] [--seed S]\n"
    "       store run --db FILE [--count N] [--rate PER_SECOND] [connection options]\n"
    "                 [--process NAME [connection options]]...\n"
    "\n"
    "seed  writes a generated data set into a new database: N customers (default 40, at most 1000) with names,\n"
    "      UK-style phone numbers and addresses, a catalogue of items, and N sales (default 60) of 1 to 4\n"
    "      items whose totals fall on both sides of 150.00, including 149.99, 150.00 and 150.01 exactly.\n"
    "      The same seed (default 1) gives the same data.\n"
    "run   publishes the sales not yet published, in order, to the input 'sales' of the process (default\n"
    "      'rewards'; --process again for each further process), and marks each published once every process\n"
    "      receipted it (it handled the sale; what is not receipted goes again, from the outbox kept beside\n"
    "      the database, DB.PROCESS.outbox). Connection options before the first --process apply to every\n"
    "      process, those after one to that process only (its --policy, or even its broker). --count N publishes\n"
    "      at most N; --rate R publishes R per second (default 0: all at once). Prints one line per sale: id,\n"
    "      total, message id (with several processes: each process and its message id). Each sale's customer id\n"
    "      is its partition key: one customer's sales reach one instance of the process, in order.\n"
    "\n";

static int bad_usage(const char *fmt, const char *arg)
{
    fprintf(stderr, "store: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n\n%s%s", usage, idevs_service_cli_usage);
    return 2;
}

static int cmd_seed(int argc, char **argv)
{
    const char *db_path = NULL;
    unsigned long long customers = 40, sales = 60, seed = 1;
    for (int i = 2; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--db") == 0 && v != NULL)
            db_path = v;
        else if (strcmp(a, "--customers") == 0 && v != NULL) {
            if (!app_parse_whole(v, SEED_CUSTOMERS_MAX, &customers) || customers == 0)
                return bad_usage("--customers: '%s' is not a number from 1 to 1000", v);
        } else if (strcmp(a, "--sales") == 0 && v != NULL) {
            if (!app_parse_whole(v, SEED_SALES_MAX, &sales) || sales == 0)
                return bad_usage("--sales: '%s' is not a number from 1 to 1000000", v);
        } else if (strcmp(a, "--seed") == 0 && v != NULL) {
            if (!app_parse_whole(v, UINT64_MAX, &seed))
                return bad_usage("--seed: '%s' is not a whole number", v);
        } else
            return bad_usage("unknown option or missing value: %s", a);
    }
    if (db_path == NULL)
        return bad_usage("%s needs --db FILE", "seed");
    seed_data d;
    if (store_seed_generate((size_t)customers, (size_t)sales, seed, &d) != 0) {
        fprintf(stderr, "store: cannot generate the data set (out of memory)\n");
        return 1;
    }
    char why[512] = "";
    sqlite3 *db = store_db_open(db_path, 1, why, sizeof why);
    int rc = db != NULL ? store_db_seed(db, &d, why, sizeof why) : -1;
    store_db_close(db);
    if (rc != 0) {
        fprintf(stderr, "store: %s\n", why);
        store_seed_free(&d);
        return 1;
    }
    size_t above = 0;
    for (size_t i = 0; i < d.sale_count; i++)
        above += d.sales[i].total_cents >= 15000;
    printf("seeded %s: %zu customers, %zu items, %zu sales (%zu of them 150.00 or more), seed %llu\n", db_path,
           d.customer_count, d.item_count, d.sale_count, above, seed);
    store_seed_free(&d);
    return 0;
}

/* Where a sale stands with one process; RECEIPTED once the process receipted it (or did in an earlier run);
 * MARKED once every process receipted it and it is marked published. REFUSED: the broker's PUBACK refused it
 * (reason >= 0x80): reported, not waited for; it stays unpublished, and in the outbox. */
enum { NOT_SENT, SENT, RECEIPTED, MARKED, REFUSED };

/* What one run publishes: the sales, and for each sale and process the envelope's message id and where the
 * sale stands (RECEIPTED from the start when the process receipted it in an earlier run). */
typedef struct run run;

/* What a target's on_receipt needs: the run and which target it is. */
typedef struct receipt_arg {
    run *r;
    size_t target;
} receipt_arg;

struct run {
    sqlite3 *db;
    store_sale *sales;
    size_t n, done;
    store_targets targets;
    char (*ids)[IDEVS_UUID_STR_LEN]; /* [sale * targets.count + target] */
    unsigned char *state;            /* likewise */
    receipt_arg receipt_args[STORE_TARGETS_MAX];
    char outbox[STORE_TARGETS_MAX][4096]; /* each process's outbox file, beside the database */
    int failed;                      /* a receipt could not be recorded */
    size_t refused;                  /* publications the broker refused in this run */
    idevs_service_stats copies[STORE_TARGETS_MAX]; /* each process's counts of copies last printed */
};

/* Runs every process's network for up to timeout_ms. */
static void run_all(run *r, int timeout_ms)
{
    for (size_t k = 0; k < r->targets.count; k++) {
        idevs_service_run(r->targets.t[k].svc, k == 0 ? timeout_ms : 0);
        app_report_copies("store", r->targets.t[k].process, r->targets.t[k].svc, &r->copies[k], 0);
    }
}

/* A process receipted a sale (the key is its sale id): recorded as published to that process, for good. */
static void on_receipt(idevs_service *svc, const idevs_msgid *id, const char *key, void *arg)
{
    (void)svc;
    receipt_arg *a = arg;
    run *r = a->r;
    if (key == NULL)
        return;
    for (size_t i = 0; i < r->n; i++) {
        size_t slot = i * r->targets.count + a->target;
        if (strcmp(r->sales[i].sale_id, key) != 0 || r->state[slot] != SENT)
            continue;
        char why[256] = "";
        idevs_uuid_format(id, r->ids[slot]);
        if (store_db_record_publication(r->db, key, r->targets.t[a->target].process, r->ids[slot], why,
                                        sizeof why) != 0) {
            fprintf(stderr, "store: %s: receipted by '%s' but not recorded: %s\n", key,
                    r->targets.t[a->target].process, why);
            r->failed = 1;
            return;
        }
        r->state[slot] = RECEIPTED;
        return;
    }
}

/* The broker's answer to one publication to a process (idevs_service_on_published): a refusal is reported. */
static void on_published(idevs_service *svc, const idevs_msgid *message_id, idevs_err result, const char *why,
                         void *arg)
{
    (void)svc;
    receipt_arg *a = arg;
    run *r = a->r;
    if (result == IDEVS_OK)
        return;
    char id[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(message_id, id);
    for (size_t i = 0; i < r->n; i++) {
        size_t slot = i * r->targets.count + a->target;
        if (r->state[slot] != SENT || strcmp(r->ids[slot], id) != 0)
            continue;
        r->state[slot] = REFUSED;
        r->refused++;
        fprintf(stderr, "store: %s not published to '%s': %s\n", r->sales[i].sale_id,
                r->targets.t[a->target].process, why);
        return;
    }
}

/* Publishes one sale to one process under its sale id, waiting (and running the network) while its service is
 * not ready. The outbox sends it again until the process receipts it, in this run or a later one. The customer
 * id is its partition key: a customer's sales reach one instance of the process, in order. */
static idevs_err publish_sale(idevs_service *svc, const store_sale *s, char id[IDEVS_UUID_STR_LEN])
{
    int64_t deadline = app_now_ms() + FLUSH_TIMEOUT_MS;
    const idevs_publish_options opts = {s->sale_id, s->customer_id, strlen(s->customer_id)};
    for (;;) {
        idevs_msgid mid;
        idevs_err err = idevs_service_publish_with(svc, "sales", &opts, s->payload, s->payload_len, &mid);
        if (err == IDEVS_OK)
            idevs_uuid_format(&mid, id);
        if (err != IDEVS_ERR_NOT_NOW || app_stopping || app_now_ms() > deadline)
            return err;
        err = idevs_service_run(svc, 100);
        if (err != IDEVS_OK && err != IDEVS_ERR_NOT_NOW)
            fprintf(stderr, "store: %s\n", idevs_service_last_error(svc));
    }
}

/* Publishes sale i to every process that has not receipted it in an earlier run. */
static int publish_to_all(run *r, size_t i)
{
    char why[256] = "";
    for (size_t k = 0; k < r->targets.count; k++) {
        store_target *t = &r->targets.t[k];
        size_t slot = i * r->targets.count + k;
        int before = store_db_publication(r->db, r->sales[i].sale_id, t->process, r->ids[slot], why, sizeof why);
        if (before < 0) {
            fprintf(stderr, "store: %s: %s\n", r->sales[i].sale_id, why);
            return -1;
        }
        if (before > 0) {
            r->state[slot] = RECEIPTED;
            continue;
        }
        r->state[slot] = SENT; /* before: a key receipted in an earlier run is told at once */
        idevs_err err = publish_sale(t->svc, &r->sales[i], r->ids[slot]);
        if (err != IDEVS_OK) {
            r->state[slot] = NOT_SENT;
            fprintf(stderr, "store: %s not published to '%s': %s\n", r->sales[i].sale_id, t->process,
                    idevs_strerror(err));
            return -1;
        }
    }
    return 0;
}

/* Whether every sale of [from, to) that this run sent has its receipt. */
static bool all_receipted(const run *r, size_t from, size_t to)
{
    for (size_t s = from * r->targets.count; s < to * r->targets.count; s++)
        if (r->state[s] == SENT)
            return false;
    return true;
}

/* Waits for the receipts of what this run sent of [from, to) (the outbox sends again meanwhile what is lost);
 * then marks and prints the sales of the batch that every process receipted. */
static int settle(run *r, size_t from, size_t to)
{
    size_t count = r->targets.count;
    int failed = 0;
    char why[256] = "";
    int64_t deadline = app_now_ms() + RECEIPT_TIMEOUT_MS;
    while (!all_receipted(r, from, to) && !r->failed && app_now_ms() < deadline)
        run_all(r, 50);
    if (r->failed)
        return -1;
    for (size_t k = 0; k < count && !all_receipted(r, from, to); k++)
        fprintf(stderr, "store: no receipt within %d s from '%s' for some of sales %s to %s: they stay in the "
                "outbox, and go again at the next run\n", RECEIPT_TIMEOUT_MS / 1000, r->targets.t[k].process,
                r->sales[from].sale_id, r->sales[to - 1].sale_id);
    for (size_t i = from; i < to; i++) {
        size_t receipted = 0;
        for (size_t k = 0; k < count; k++)
            receipted += r->state[i * count + k] == RECEIPTED;
        if (r->state[i * count] == MARKED)
            continue; /* by an earlier call for this batch */
        if (receipted < count) {
            bool refused = false; /* reported already; the run goes on with the other sales */
            for (size_t k = 0; k < count; k++)
                refused |= r->state[i * count + k] == REFUSED;
            failed |= !refused;
            continue;
        }
        if (store_db_mark_published(r->db, r->sales[i].sale_id, r->ids[i * count], why, sizeof why) != 0) {
            fprintf(stderr, "store: %s: published but not marked: %s\n", r->sales[i].sale_id, why);
            return -1;
        }
        printf("published %s total %s", r->sales[i].sale_id, r->sales[i].total);
        if (count == 1)
            printf(" message %s", r->ids[i]);
        for (size_t k = 0; count > 1 && k < count; k++)
            printf(" %s %s", r->targets.t[k].process, r->ids[i * count + k]);
        putchar('\n');
        memset(&r->state[i * count], MARKED, count);
        r->done++;
    }
    fflush(stdout);
    return failed ? -1 : 0;
}

/* Parses the options of run: its own, --process and the connection options (targets.h). */
static int run_options(int argc, char **argv, run *r, const char **db_path, unsigned long long *count,
                       unsigned long long *rate)
{
    char why[1024] = "";
    for (int i = 2; i < argc; i++) {
        int t = store_targets_option(&r->targets, &i, why, sizeof why);
        if (t < 0)
            return bad_usage("%s", why);
        if (t > 0)
            continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (strcmp(a, "--db") == 0 && v != NULL)
            *db_path = v;
        else if (strcmp(a, "--count") == 0 && v != NULL)
            ok = app_parse_whole(v, SEED_SALES_MAX, count);
        else if (strcmp(a, "--rate") == 0 && v != NULL)
            ok = app_parse_whole(v, 100000, rate);
        else if (strcmp(a, "--help") == 0) {
            printf("%s%s", usage, idevs_service_cli_usage);
            return 0;
        } else
            return bad_usage("unknown option or missing value: %s", a);
        if (!ok)
            return bad_usage("%s: not a whole number in range", a);
        i++;
    }
    if (*db_path == NULL)
        return bad_usage("%s needs --db FILE", "run");
    if (store_targets_configure(&r->targets, why, sizeof why) != 0) {
        fprintf(stderr, "store: %s\n", why);
        return 1;
    }
    return -1;
}

static int cmd_run(int argc, char **argv)
{
    const char *db_path = NULL;
    unsigned long long count = 0, rate = 0;
    run r;
    memset(&r, 0, sizeof r);
    char why[1024] = "";
    int rc = 1;
    if (store_targets_init(&r.targets, argc, argv) != 0) {
        fprintf(stderr, "store: out of memory\n");
        return 1;
    }
    rc = run_options(argc, argv, &r, &db_path, &count, &rate);
    if (rc >= 0)
        goto out;
    rc = 1;
    r.db = store_db_open(db_path, 0, why, sizeof why);
    if (r.db == NULL || store_db_unpublished(r.db, (size_t)count, &r.sales, &r.n, why, sizeof why) != 0) {
        fprintf(stderr, "store: %s\n", why);
        goto out;
    }
    if (r.n == 0) {
        printf("no unpublished sales in %s\n", db_path);
        rc = 0;
        goto out;
    }
    r.ids = calloc(r.n * r.targets.count, sizeof *r.ids);
    r.state = calloc(r.n * r.targets.count, 1);
    if (r.ids == NULL || r.state == NULL) {
        fprintf(stderr, "store: out of memory\n");
        goto out;
    }
    for (size_t k = 0; k < r.targets.count; k++) {
        /* The outbox beside the database, one per process: what was sent and not receipted survives the store. */
        snprintf(r.outbox[k], sizeof r.outbox[k], "%s.%s.outbox", db_path, r.targets.t[k].process);
        r.targets.t[k].cfg.outbox = r.outbox[k];
        if (app_start_service("store", &r.targets.t[k].cfg, NULL, NULL, 8, &r.targets.t[k].svc,
                              "publishing %zu sales%s", r.n, rate == 0 ? " at once" : "") != IDEVS_OK)
            goto out;
        r.receipt_args[k] = (receipt_arg){&r, k};
        idevs_service_set_on_receipt(r.targets.t[k].svc, on_receipt, &r.receipt_args[k]);
        idevs_service_set_on_published(r.targets.t[k].svc, on_published, &r.receipt_args[k]);
    }

    int64_t start = app_now_ms();
    size_t settled = 0, i = 0;
    for (; i < r.n && !app_stopping; i++) {
        if (rate > 0) {
            /* sale i goes out at start + i / rate seconds */
            int64_t due = start + (int64_t)((i * 1000) / rate);
            while (!app_stopping && app_now_ms() < due) {
                int64_t left = due - app_now_ms();
                run_all(&r, left > 100 ? 100 : (int)(left > 0 ? left : 0));
            }
            if (app_stopping)
                break;
        }
        if (publish_to_all(&r, i) != 0) {
            i++; /* settle what went out of this sale too: it may have reached some processes */
            break;
        }
        run_all(&r, 0);
        if (rate > 0 || i + 1 - settled >= BATCH) {
            if (settle(&r, settled, i + 1) != 0)
                break;
            settled = i + 1;
        }
    }
    if (settled < i && settle(&r, settled, i) == 0)
        settled = i;
    rc = r.done == r.n ? 0 : 1;
    for (size_t k = 0; k < r.targets.count; k++)
        app_report_copies("store", r.targets.t[k].process, r.targets.t[k].svc, &r.copies[k], 1);
    if (r.refused > 0)
        fprintf(stderr, "store: the broker refused %zu publication(s): %zu of %zu sales not marked published; the "
                        "next run publishes them again\n", r.refused, r.n - r.done, r.n);
    if (app_stopping)
        fprintf(stderr, "store: interrupted after %zu of %zu sales\n", r.done, r.n);
out:
    store_targets_free(&r.targets);
    free(r.ids);
    free(r.state);
    store_db_free_sales(r.sales, r.n);
    store_db_close(r.db);
    return rc;
}

int main(int argc, char **argv)
{
    static const app_command commands[] = {{"seed", cmd_seed}, {"run", cmd_run}};
    app_install_signals();
    return app_run_command(usage, commands, 2, argc, argv);
}
