/* store: the case study's shop (docs/CASESTUDY.md). Seeds its own SQLite database with a generated data set,
 * and publishes its sales, sealed to the rewards compartment, through the service library.
 *
 *   store seed --db FILE [--customers N] [--sales N] [--seed S]
 *   store run --db FILE [--count N] [--rate PER_SECOND] [connection options]
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

#define BATCH 100             /* sales published between two waits for the broker's acknowledgements */
#define FLUSH_TIMEOUT_MS 30000

static const char usage[] =
    "usage: store seed --db FILE [--customers N] [--sales N] [--seed S]\n"
    "       store run --db FILE [--count N] [--rate PER_SECOND] [connection options]\n"
    "\n"
    "seed  writes a generated data set into a new database: N customers (default 40, at most 1000) with names,\n"
    "      UK-style phone numbers and addresses, a catalogue of items, and N sales (default 60) of 1 to 4\n"
    "      items whose totals fall on both sides of 150.00, including 149.99, 150.00 and 150.01 exactly.\n"
    "      The same seed (default 1) gives the same data.\n"
    "run   publishes the sales not yet published, in order, to the input 'sales' of the process, and marks\n"
    "      each published once the broker acknowledged it. --count N publishes at most N; --rate R publishes R\n"
    "      per second (default 0: all at once). Prints one line per sale: id, total, message id.\n"
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
    for (int i = 2; i < argc; i++) {
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
        i++;
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

/* Publishes one sale, waiting (and running the network) while the service is not ready. */
static idevs_err publish_sale(idevs_service *svc, const store_sale *s, idevs_msgid *id)
{
    int64_t deadline = app_now_ms() + FLUSH_TIMEOUT_MS;
    for (;;) {
        idevs_err err = idevs_service_publish(svc, "sales", s->payload, s->payload_len, id);
        if (err != IDEVS_ERR_NOT_NOW || app_stopping || app_now_ms() > deadline)
            return err;
        err = idevs_service_run(svc, 100);
        if (err != IDEVS_OK && err != IDEVS_ERR_NOT_NOW)
            fprintf(stderr, "store: %s\n", idevs_service_last_error(svc));
    }
}

/* Waits for the broker's acknowledgements of everything published, then marks and prints the batch. */
static int settle(idevs_service *svc, sqlite3 *db, store_sale *sales, idevs_msgid *ids, size_t from, size_t to,
                  size_t *done)
{
    if (from == to)
        return 0;
    idevs_err err = idevs_service_flush(svc, FLUSH_TIMEOUT_MS);
    if (err != IDEVS_OK) {
        fprintf(stderr, "store: the broker did not acknowledge sales %s to %s: %s\n", sales[from].sale_id,
                sales[to - 1].sale_id, idevs_strerror(err));
        return -1;
    }
    for (size_t i = from; i < to; i++) {
        char id[IDEVS_UUID_STR_LEN], why[256] = "";
        idevs_uuid_format(&ids[i], id);
        if (store_db_mark_published(db, sales[i].sale_id, id, why, sizeof why) != 0) {
            fprintf(stderr, "store: %s: published but not marked: %s\n", sales[i].sale_id, why);
            return -1;
        }
        printf("published %s total %s message %s\n", sales[i].sale_id, sales[i].total, id);
        (*done)++;
    }
    fflush(stdout);
    return 0;
}

static int cmd_run(int argc, char **argv)
{
    const char *db_path = NULL;
    unsigned long long count = 0, rate = 0;
    idevs_service_config cfg;
    app_config_default(&cfg, "store");
    char why[1024] = "";
    int rc = 1;
    for (int i = 2; i < argc; i++) {
        int r = idevs_service_cli_option(&cfg, argc, argv, &i, why, sizeof why);
        if (r < 0) {
            idevs_service_cli_free(&cfg);
            return bad_usage("%s", why);
        }
        if (r > 0)
            continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = 1;
        if (strcmp(a, "--db") == 0 && v != NULL)
            db_path = v;
        else if (strcmp(a, "--count") == 0 && v != NULL)
            ok = app_parse_whole(v, SEED_SALES_MAX, &count);
        else if (strcmp(a, "--rate") == 0 && v != NULL)
            ok = app_parse_whole(v, 100000, &rate);
        else if (strcmp(a, "--help") == 0) {
            printf("%s%s", usage, idevs_service_cli_usage);
            idevs_service_cli_free(&cfg);
            return 0;
        } else {
            idevs_service_cli_free(&cfg);
            return bad_usage("unknown option or missing value: %s", a);
        }
        if (!ok) {
            idevs_service_cli_free(&cfg);
            return bad_usage("%s: not a whole number in range", a);
        }
        i++;
    }
    if (db_path == NULL) {
        idevs_service_cli_free(&cfg);
        return bad_usage("%s needs --db FILE", "run");
    }
    sqlite3 *db = store_db_open(db_path, 0, why, sizeof why);
    store_sale *sales = NULL;
    size_t n = 0, done = 0;
    idevs_msgid *ids = NULL;
    idevs_service *svc = NULL;
    if (db == NULL || store_db_unpublished(db, (size_t)count, &sales, &n, why, sizeof why) != 0) {
        fprintf(stderr, "store: %s\n", why);
        goto out;
    }
    if (n == 0) {
        printf("no unpublished sales in %s\n", db_path);
        rc = 0;
        goto out;
    }
    ids = calloc(n, sizeof *ids);
    if (ids == NULL) {
        fprintf(stderr, "store: out of memory\n");
        goto out;
    }
    idevs_err err = app_start_service("store", &cfg, NULL, NULL, 8, &svc, "publishing %zu sales%s", n,
                                      rate == 0 ? " at once" : "");
    if (err != IDEVS_OK)
        goto out;

    int64_t start = app_now_ms();
    size_t settled = 0, i = 0;
    for (; i < n && !app_stopping; i++) {
        if (rate > 0) {
            /* sale i goes out at start + i / rate seconds */
            int64_t due = start + (int64_t)((i * 1000) / rate);
            while (!app_stopping && app_now_ms() < due) {
                int64_t left = due - app_now_ms();
                idevs_service_run(svc, left > 100 ? 100 : (int)(left > 0 ? left : 0));
            }
            if (app_stopping)
                break;
        }
        err = publish_sale(svc, &sales[i], &ids[i]);
        if (err != IDEVS_OK) {
            fprintf(stderr, "store: %s not published: %s\n", sales[i].sale_id, idevs_strerror(err));
            break;
        }
        idevs_service_run(svc, 0);
        if (rate > 0 || i + 1 - settled >= BATCH) {
            if (settle(svc, db, sales, ids, settled, i + 1, &done) != 0)
                break;
            settled = i + 1;
        }
    }
    if (settled < i && settle(svc, db, sales, ids, settled, i, &done) == 0)
        settled = i;
    rc = done == n ? 0 : 1;
    if (app_stopping)
        fprintf(stderr, "store: interrupted after %zu of %zu sales\n", done, n);
out:
    idevs_service_free(svc);
    free(ids);
    store_db_free_sales(sales, n);
    store_db_close(db);
    idevs_service_cli_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    app_install_signals();
    if (argc >= 2 && strcmp(argv[1], "seed") == 0)
        return cmd_seed(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "run") == 0)
        return cmd_run(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        printf("%s%s", usage, idevs_service_cli_usage);
        return 0;
    }
    fprintf(stderr, "%s%s", usage, idevs_service_cli_usage);
    return 2;
}
