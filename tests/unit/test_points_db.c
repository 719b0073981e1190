/* The points service's database (services/points/points_db.c, docs/CASESTUDY.md "The databases"): an award
 * per sale and a running total per customer, raised in the same transaction; a sale awarded twice counts
 * once; a total that would leave 64 bits changes nothing; the file is private; and no column could hold a
 * name, phone number or address. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "harness.h"
#include "points_db.h"

static char dir[64], path[128];

static void award_of(points_award *a, const char *sale_id, const char *customer_id, int64_t pts)
{
    memset(a, 0, sizeof *a);
    snprintf(a->sale_id, sizeof a->sale_id, "%s", sale_id);
    snprintf(a->customer_id, sizeof a->customer_id, "%s", customer_id);
    a->points = pts;
    snprintf(a->message_id, sizeof a->message_id, "0b6d2c1e-4f5a-4e3b-9c8d-7a6b5c4d3e2f");
    snprintf(a->provenance, sizeof a->provenance, "3f9c2a51-d0e8-4b7a-a1c6-e2f0b9d47e13");
}

#define MAX_TOTALS 8

typedef struct seen {
    char customer[MAX_TOTALS][JSON_IN_REF_MAX + 1];
    int64_t points[MAX_TOTALS], awards[MAX_TOTALS];
    size_t count;
} seen;

static void on_total(void *arg, const char *customer_id, int64_t pts, int64_t awards)
{
    seen *s = arg;
    CU_ASSERT_FATAL(s->count < MAX_TOTALS);
    snprintf(s->customer[s->count], sizeof s->customer[0], "%s", customer_id);
    s->points[s->count] = pts;
    s->awards[s->count++] = awards;
}

/* Stores a fresh award; returns what points_db_award did. */
static int award(sqlite3 *db, const char *sale_id, const char *customer_id, int64_t pts)
{
    points_award a;
    char why[256] = "";
    award_of(&a, sale_id, customer_id, pts);
    return points_db_award(db, &a, why, sizeof why);
}

static void expect_total(const seen *s, size_t i, const char *customer_id, int64_t pts, int64_t awards)
{
    CU_ASSERT_FATAL(i < s->count);
    CU_ASSERT_STRING_EQUAL(s->customer[i], customer_id);
    CU_ASSERT_EQUAL(s->points[i], pts);
    CU_ASSERT_EQUAL(s->awards[i], awards);
}

static long totals(sqlite3 *db, const char *customer, seen *s)
{
    char why[256] = "";
    memset(s, 0, sizeof *s);
    long n = points_db_totals(db, customer, on_total, s, why, sizeof why);
    if (n < 0)
        fprintf(stderr, "\n    points_db_totals: %s\n", why);
    return n;
}

static int64_t count_rows(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    CU_ASSERT_FATAL(sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK);
    CU_ASSERT_FATAL(sqlite3_step(st) == SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n;
}

static sqlite3 *open_new(void)
{
    char why[256] = "";
    unlink(path);
    sqlite3 *db = points_db_open(path, 1, why, sizeof why);
    if (db == NULL)
        fprintf(stderr, "\n    points_db_open: %s\n", why);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    return db;
}

static void test_award_and_totals(void)
{
    sqlite3 *db = open_new();
    char why[256] = "";
    CU_ASSERT_EQUAL(award(db, "S-000001", "C-0002", 74), 1);
    CU_ASSERT_EQUAL(award(db, "S-000002", "C-0001", 150), 1);
    CU_ASSERT_EQUAL(award(db, "S-000003", "C-0002", 1), 1);
    seen s;
    CU_ASSERT_EQUAL(totals(db, NULL, &s), 2);
    /* in customer order, with the number of sales */
    expect_total(&s, 0, "C-0001", 150, 1);
    expect_total(&s, 1, "C-0002", 75, 2);
    /* one customer, or one that has none */
    CU_ASSERT_EQUAL(totals(db, "C-0002", &s), 1);
    expect_total(&s, 0, "C-0002", 75, 2);
    CU_ASSERT_EQUAL(totals(db, "C-0099", &s), 0);
    CU_ASSERT_EQUAL(s.count, 0);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM awards WHERE provenance = '3f9c2a51-d0e8-4b7a-a1c6-e2f0b9d47e13'"
                                   " AND message_id = '0b6d2c1e-4f5a-4e3b-9c8d-7a6b5c4d3e2f'"),
                    3);
    points_db_close(db);
    /* it is all still there when opened again, as the totals command does */
    db = points_db_open(path, 0, why, sizeof why);
    CU_ASSERT_PTR_NOT_NULL_FATAL(db);
    CU_ASSERT_EQUAL(totals(db, NULL, &s), 2);
    expect_total(&s, 1, "C-0002", 75, 2);
    points_db_close(db);
}

static void test_duplicate_sale_counted_once(void)
{
    sqlite3 *db = open_new();
    char why[256] = "";
    points_award a;
    award_of(&a, "S-000042", "C-0007", 150);
    CU_ASSERT_EQUAL(points_db_award(db, &a, why, sizeof why), 1);
    CU_ASSERT_EQUAL(points_db_award(db, &a, why, sizeof why), 0);
    /* the same sale again under another message id, even with other values: the first award stands */
    snprintf(a.message_id, sizeof a.message_id, "9a1b2c3d-4e5f-4a6b-8c7d-6e5f4a3b2c1d");
    a.points = 999;
    CU_ASSERT_EQUAL(points_db_award(db, &a, why, sizeof why), 0);
    CU_ASSERT_EQUAL(award(db, "S-000042", "C-0008", 150), 0);
    seen s;
    CU_ASSERT_EQUAL(totals(db, NULL, &s), 1);
    expect_total(&s, 0, "C-0007", 150, 1);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM awards"), 1);
    points_db_close(db);
}

static void test_refusals_change_nothing(void)
{
    sqlite3 *db = open_new();
    /* an award is at least one point */
    CU_ASSERT_EQUAL(award(db, "S-000001", "C-0001", 0), -1);
    CU_ASSERT_EQUAL(award(db, "S-000001", "C-0001", -5), -1);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM awards"), 0);
    /* a total that would leave 64 bits: neither the award nor the total changes (SQLite would make it a REAL) */
    CU_ASSERT_EQUAL(award(db, "S-000002", "C-0001", INT64_MAX), 1);
    points_award a;
    char why[256] = "";
    award_of(&a, "S-000003", "C-0001", 1);
    CU_ASSERT_EQUAL(points_db_award(db, &a, why, sizeof why), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "CHECK"));
    seen s;
    CU_ASSERT_EQUAL(totals(db, NULL, &s), 1);
    expect_total(&s, 0, "C-0001", INT64_MAX, 1);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM awards"), 1);
    /* and the database goes on: another customer's award */
    CU_ASSERT_EQUAL(award(db, "S-000004", "C-0002", 3), 1);
    points_db_close(db);
}

static void test_file_private_and_no_personal_columns(void)
{
    sqlite3 *db = open_new();
    struct stat st;
    CU_ASSERT_FATAL(stat(path, &st) == 0);
    CU_ASSERT_EQUAL(st.st_mode & 0777, 0600);
    /* the columns, all of them: ids, points, times, provenance */
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM pragma_table_info('awards') WHERE name NOT IN"
                                   " ('sale_id', 'customer_id', 'points', 'message_id', 'provenance', 'received_at')"),
                    0);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM pragma_table_info('totals') WHERE name NOT IN"
                                   " ('customer_id', 'points', 'awards', 'updated_at')"),
                    0);
    CU_ASSERT_EQUAL(count_rows(db, "SELECT count(*) FROM sqlite_schema WHERE type = 'table'"), 2);
    points_db_close(db);
    /* the totals command does not make a database that is not there */
    char why[256] = "", missing[160];
    snprintf(missing, sizeof missing, "%s/missing.sqlite", dir);
    CU_ASSERT_PTR_NULL(points_db_open(missing, 0, why, sizeof why));
    CU_ASSERT_PTR_NOT_NULL(strstr(why, "points run"));
    CU_ASSERT_NOT_EQUAL(access(missing, F_OK), 0);
}

static int suite_init(void)
{
    snprintf(dir, sizeof dir, "/tmp/idevs-points-db-XXXXXX");
    if (mkdtemp(dir) == NULL)
        return 1;
    snprintf(path, sizeof path, "%s/points.sqlite", dir);
    return 0;
}

static int suite_clean(void)
{
    return harness_remove_tree(dir);
}

static CU_TestInfo tests[] = {
    {"awards raise each customer's total; totals in customer order, or one customer's", test_award_and_totals},
    {"a sale awarded twice counts once: the first award stands", test_duplicate_sale_counted_once},
    {"no award under 1 point; a total that would leave 64 bits changes nothing", test_refusals_change_nothing},
    {"the file is private; no column for a name, phone number or address", test_file_private_and_no_personal_columns},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("points database", suite_init, suite_clean, tests);
}
