/* The loyalty integration logic (services/loyalty/, docs/CASESTUDY.md).
 *
 * First its parts, directly: points from a total in cents (whole units, rounded down, bounded), and the award
 * written to the byte. Then the real libloyalty.so in a real compartment (logic_world.h) with fixture
 * identities for store and points: totals that earn nothing and totals that earn points, the award only the
 * points service can open, with only the customer id, the sale id and the points, and every refusal
 * (malformed sales, a total too large for exact JSON, configuration).
 *
 * The compartment and the logic come from the environment meson gives the unit tests (IDEVS_COMPARTMENT,
 * IDEVS_LOYALTY_LOGIC). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "award.h"
#include "fixtures.h"
#include "harness.h"
#include "logic_world.h"
#include "sale.h"
#include "sale_cases.h"

#define TOPIC_SALES "idevs/loyalty/in/sales"
#define TOPIC_POINTS "idevs/loyalty/out/points"
#define EXAMPLE_AWARD "{\"customer_id\":\"C-0007\",\"sale_id\":\"S-000042\",\"points\":150}"

/* ---- parts ---- */

static void test_points_of_totals(void)
{
    static const struct {
        int64_t cents, points;
    } cases[] = {
        {0, 0}, {1, 0}, {99, 0}, {100, 1}, {101, 1}, {14999, 149}, {15000, 150}, {15099, 150}, {15100, 151},
        {LOYALTY_POINTS_MAX * 100 + 99, LOYALTY_POINTS_MAX}, /* the largest award */
        {(LOYALTY_POINTS_MAX + 1) * 100, -1}, {INT64_MAX, -1}, {-1, -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int64_t got = loyalty_points(cases[i].cents);
        CU_ASSERT_EQUAL(got, cases[i].points);
        if (got != cases[i].points)
            fprintf(stderr, "\n    loyalty_points(%lld) gave %lld\n", (long long)cases[i].cents, (long long)got);
    }
}

static void test_award_written(void)
{
    sale_record s;
    CU_ASSERT_EQUAL_FATAL(sale_parse(SALE_CASES_EXAMPLE, strlen(SALE_CASES_EXAMPLE), &s), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(s.customer_id, "C-0007");
    char out[LOYALTY_OUT_MAX];
    size_t n = loyalty_write_award(&s, loyalty_points(s.total_cents), out, sizeof out);
    CU_ASSERT_EQUAL(n, strlen(EXAMPLE_AWARD));
    CU_ASSERT_STRING_EQUAL(out, EXAMPLE_AWARD);
    /* one byte short for the NUL: nothing, and nothing left in the buffer */
    CU_ASSERT_EQUAL(loyalty_write_award(&s, 150, out, n), 0);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_EQUAL_FATAL(out[i], 0);
    /* the largest award, and the longest references, fit */
    memset(s.customer_id, 'C', SALE_REF_MAX);
    memset(s.sale_id, 'S', SALE_REF_MAX);
    n = loyalty_write_award(&s, LOYALTY_POINTS_MAX, out, sizeof out);
    CU_ASSERT(n > 0 && strstr(out, "\"points\":9007199254740991}") != NULL);
    sale_cleanse(&s);
}

/* ---- the logic in a compartment ---- */

static lw_suite suite;
enum { STORE, POINTS }; /* the parties, in the order of the descriptor's services */
static const char *const service_names[] = {"store", "points", NULL};

/* The routes of the loyalty descriptor of docs/CASESTUDY.md. */
#define ROUTES \
    "\"inputs\": [{\"name\": \"sales\", \"topic\": \"" TOPIC_SALES "\", \"from\": \"store\"}],\n" \
    " \"outputs\": [{\"name\": \"points\", \"topic\": \"" TOPIC_POINTS "\", \"to\": \"points\", \"qos\": 1}]"

/* Delivers a sale from the store; returns the delivery's status, and the sale envelope's id in *id. */
static idevs_err sell(lw_world *w, const char *sale, idevs_msgid *id)
{
    return lw_wait_done(w, lw_deliver(w, &w->party[STORE], TOPIC_SALES, sale, NULL, id));
}

/* Opens the last publication as points and checks it is exactly {customer_id, sale_id, points} with these
 * values, nothing of the sale besides, caused by the sale with that id. */
static void expect_award(lw_world *w, const char *customer_id, const char *sale_id, int64_t points,
                         const idevs_msgid *sale_msg)
{
    static const char *const keys[] = {"customer_id", "sale_id", "points"};
    CU_ASSERT_FATAL(w->r.pub_count > 0);
    size_t i = w->r.pub_count - 1;
    CU_ASSERT_STRING_EQUAL(w->r.pub_topic[i], TOPIC_POINTS);
    /* sealed to points: the store cannot open it */
    idevs_opened o;
    memset(&o, 0, sizeof o);
    CU_ASSERT_NOT_EQUAL(idevs_envelope_open(w->party[STORE].ctx, w->r.pub_topic[i], w->r.pub_env[i], w->r.pub_len[i], &o),
                        IDEVS_OK);
    char *text = lw_open_pub(w, &w->party[POINTS], i, &o);
    char want[256];
    snprintf(want, sizeof want, "{\"customer_id\":\"%s\",\"sale_id\":\"%s\",\"points\":%lld}", customer_id, sale_id,
             (long long)points);
    CU_ASSERT_STRING_EQUAL(text, want);
    CU_ASSERT_TRUE(lw_json_keys_are(text, keys, 3));
    /* what the points service must not learn */
    static const char *const secrets[] = {"Ana", "Lima", "7700", "Harbour", "Rain jacket", "JKT-204", "2026-11-21"};
    for (size_t k = 0; k < sizeof secrets / sizeof secrets[0]; k++)
        CU_ASSERT_PTR_NULL(strstr(text, secrets[k]));
    CU_ASSERT_EQUAL(o.provenance_count, 1);
    CU_ASSERT_EQUAL(memcmp(o.provenance[0].b, sale_msg->b, 16), 0);
    free(text);
    idevs_opened_clear(&o);
}

static void test_logic_points_per_sale(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{}"), IDEVS_OK);
    char sale[1024];
    idevs_msgid id;

    /* under 1.00: no point, nothing leaves */
    sale_cases_make(sale, sizeof sale, "S-000001", "C-0001", "0.50", "0.49", "0.99");
    CU_ASSERT_EQUAL(sell(&w, sale, &id), IDEVS_OK);
    CU_ASSERT_EQUAL(w.r.pub_count, 0);

    /* whole units, the cents rounded down, per customer */
    static const struct {
        const char *sale_id, *customer, *price1, *price2, *total;
        int64_t points;
    } earning[] = {
        {"S-000002", "C-0001", "0.50", "0.50", "1.00", 1},
        {"S-000003", "C-0002", "129.00", "21.99", "150.99", 150},
        {"S-000004", "C-0002", "129.00", "22.00", "151.00", 151},
        {"S-000005", "C-0003", "9007199254740990.00", "1.99", "9007199254740991.99", LOYALTY_POINTS_MAX},
    };
    for (size_t k = 0; k < sizeof earning / sizeof earning[0]; k++) {
        sale_cases_make(sale, sizeof sale, earning[k].sale_id, earning[k].customer, earning[k].price1,
                        earning[k].price2, earning[k].total);
        size_t before = w.r.pub_count;
        CU_ASSERT_EQUAL(sell(&w, sale, &id), IDEVS_OK);
        CU_ASSERT_EQUAL_FATAL(w.r.pub_count, before + 1);
        expect_award(&w, earning[k].customer, earning[k].sale_id, earning[k].points, &id);
    }

    /* the case study's example, to the byte */
    CU_ASSERT_EQUAL(sell(&w, SALE_CASES_EXAMPLE, &id), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 5);
    expect_award(&w, "C-0007", "S-000042", 150, &id);
    lw_free(&w);
}

static void test_logic_refusals(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{}"), IDEVS_OK);
    /* malformed sales, refused exactly as rewards refuses them: an error, and nothing leaves */
    static const char *const junk[] = {"not json", "{}", "{\"sale_id\":\"S-1\"}", "[]"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        CU_ASSERT_EQUAL(sell(&w, junk[i], NULL), IDEVS_ERR_LOGIC);
    char buf[2048];
    for (size_t i = 0; i < sale_cases_bad_count; i++) {
        sale_cases_with(buf, sizeof buf, sale_cases_bad[i].from, sale_cases_bad[i].to);
        idevs_err st = sell(&w, buf, NULL);
        CU_ASSERT_EQUAL(st, IDEVS_ERR_LOGIC);
        if (st != IDEVS_ERR_LOGIC)
            fprintf(stderr, "\n    the logic accepted a sale with %s\n", sale_cases_bad[i].why);
    }
    /* a total worth more points than JSON keeps exactly */
    sale_cases_make(buf, sizeof buf, "S-000006", "C-0003", "9007199254740992.00", "0.00", "9007199254740992.00");
    CU_ASSERT_EQUAL(sell(&w, buf, NULL), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(w.r.pub_count, 0);
    /* and the logic goes on */
    idevs_msgid id;
    CU_ASSERT_EQUAL(sell(&w, SALE_CASES_EXAMPLE, &id), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 1);
    expect_award(&w, "C-0007", "S-000042", 150, &id);
    lw_free(&w);
}

static void test_logic_config(void)
{
    /* nothing to configure: any setting stops the start (the descriptor's reader refuses a config that is
     * not an object) */
    static const char *const bad[] = {"{\"threshold\": \"1.00\"}", "{\"cents_per_point\": 100}", "{\"\": null}"};
    lw_expect_refused(&suite.spec, bad, sizeof bad / sizeof bad[0]);
}

/* ---- suite ---- */

static int suite_init(void)
{
    return lw_suite_init(&suite, "IDEVS_LOYALTY_LOGIC", "loyalty", service_names, ROUTES);
}

static int suite_clean(void)
{
    return lw_suite_clean(&suite);
}

static CU_TestInfo parts[] = {
    {"points: whole units of the total, rounded down, bounded", test_points_of_totals},
    {"award: the case study's example, to the byte; too small a buffer is wiped", test_award_written},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo logic[] = {
    {"under 1.00 nothing leaves; otherwise only customer id, sale id and points, to points", test_logic_points_per_sale},
    {"malformed sales and a total too large: an error, nothing leaves", test_logic_refusals},
    {"configuration: any setting stops the start", test_logic_config},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    CU_SuiteInfo suites[] = {{"loyalty parts", NULL, NULL, NULL, NULL, parts},
                             {"loyalty logic in a compartment", suite_init, suite_clean, NULL, NULL, logic},
                             CU_SUITE_INFO_NULL};
    return harness_run(suites);
}
