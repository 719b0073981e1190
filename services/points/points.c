/* points: the loyalty process's points service (docs/CASESTUDY.md). Receives each award the loyalty logic
 * sends it and keeps, in its own SQLite database, the awards and a running total per customer.
 *
 *   points run --db FILE [--count N] [--timeout S] [connection options]
 *   points totals --db FILE [--customer ID]
 *
 * An award {customer_id, sale_id, points} is stored once per sale_id. run goes on until SIGINT or SIGTERM, N
 * awards, or S seconds. It prints sale and customer ids and points: the only things it is ever told. */
#include <stdio.h>
#include <string.h>

#include "idevs_service.h"
#include "idevs_service_app.h"
#include "json_in.h"
#include "points_db.h"

static const char usage[] =
    "usage: points run --db FILE [--count N] [--timeout S] [connection options]\n"
    "       points totals --db FILE [--customer ID]\n"
    "\n"
    "run     receives the awards of the process (default 'loyalty') and stores each in FILE (SQLite), once per\n"
    "        sale, adding its points to the customer's total. Runs until interrupted, or N awards, or S seconds.\n"
    "totals  prints a table of each customer's points and the number of sales they came from (with --customer,\n"
    "        only that customer's), then the sum over the customers printed.\n"
    "\n";

/* {customer_id, sale_id, points}: exactly these keys, each once, two references and a whole number from 1. */
static int parse_award(const idevs_service_message *msg, points_award *a)
{
    static const char *const keys[] = {"customer_id", "sale_id", "points"};
    cJSON *j = json_in_parse_object((const char *)msg->payload, msg->payload_len);
    int ok = json_in_keys_exactly(j, keys, 3) &&
             json_in_string(j, "customer_id", JSON_IN_REF, a->customer_id, JSON_IN_REF_MAX) &&
             json_in_string(j, "sale_id", JSON_IN_REF, a->sale_id, JSON_IN_REF_MAX) &&
             json_in_whole(j, "points", 1, JSON_IN_WHOLE_MAX, &a->points);
    json_in_delete(j);
    return ok;
}

static void on_message(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    (void)svc;
    app_receiver_state *p = arg;
    points_award a;
    char why[512] = "";
    memset(&a, 0, sizeof a);
    idevs_uuid_format(&msg->message_id, a.message_id);
    if (!parse_award(msg, &a)) {
        p->refused++;
        fprintf(stderr, "points: refused message %s: not an award {customer_id, sale_id, points}\n", a.message_id);
        return;
    }
    app_provenance(msg, a.provenance);
    int stored = points_db_award(p->db, &a, why, sizeof why);
    if (stored < 0) {
        fprintf(stderr, "points: message %s (sale %s) not stored: %s\n", a.message_id, a.sale_id, why);
        return;
    }
    if (stored > 0) {
        p->done++;
        printf("awarded %s %lld points to %s message %s\n", a.sale_id, (long long)a.points, a.customer_id,
               a.message_id);
    } else {
        p->repeated++;
        printf("already awarded %s message %s\n", a.sale_id, a.message_id);
    }
    fflush(stdout);
}

static int cmd_run(int argc, char **argv)
{
    static const app_receiver points = {.prog = "points", .process = "loyalty", .usage = usage,
        .schema = points_db_schema, .kind = IDEVS_SERVICE_OUTPUT, .name = "points", .what = "an award",
        .on_message = on_message, .doing = "receiving awards",
        .labels = {"messages", "awarded", "already awarded"}};
    return app_receiver_main(&points, argc - 1, argv + 1);
}

typedef struct sum {
    int64_t points, awards;
    int overflow; /* each total fits in 64 bits (points_db.c), their sum need not */
} sum;

#define ROW "%-24s %19s %9s\n"
#define ROW_NUMBERS "%-24s %19lld %9lld\n"

static void print_total(void *arg, const char *customer_id, int64_t pts, int64_t awards)
{
    sum *s = arg;
    if (__builtin_add_overflow(s->points, pts, &s->points) || __builtin_add_overflow(s->awards, awards, &s->awards))
        s->overflow = 1;
    printf(ROW_NUMBERS, customer_id, (long long)pts, (long long)awards);
}

static int cmd_totals(int argc, char **argv)
{
    const char *db_path = NULL, *customer = NULL;
    for (int i = 2; i < argc; i += 2) { /* every option takes a value */
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--db") == 0 && v != NULL)
            db_path = v;
        else if (strcmp(a, "--customer") == 0 && v != NULL)
            customer = v;
        else {
            fprintf(stderr, "points: unknown option or missing value: %s\n\n%s", a, usage);
            return 2;
        }
    }
    if (db_path == NULL) {
        fprintf(stderr, "points: totals needs --db FILE\n\n%s", usage);
        return 2;
    }
    char why[1024] = "";
    sqlite3 *db = points_db_open(db_path, 0, why, sizeof why);
    sum s = {0, 0, 0};
    if (db != NULL)
        printf(ROW, "customer", "points", "sales");
    long n = db != NULL ? points_db_totals(db, customer, print_total, &s, why, sizeof why) : -1;
    points_db_close(db);
    if (n < 0) {
        fprintf(stderr, "points: %s\n", why);
        return 1;
    }
    if (customer != NULL && n == 0)
        printf(ROW_NUMBERS, customer, 0LL, 0LL);
    char label[64];
    snprintf(label, sizeof label, "total (customers: %ld)", n);
    if (s.overflow)
        printf(ROW, label, "(over 64 bits)", "");
    else
        printf(ROW_NUMBERS, label, (long long)s.points, (long long)s.awards);
    return 0;
}

int main(int argc, char **argv)
{
    static const app_command commands[] = {{"run", cmd_run}, {"totals", cmd_totals}};
    app_install_signals();
    return app_run_command(usage, commands, 2, argc, argv);
}
