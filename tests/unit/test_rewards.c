/* The rewards integration logic (services/rewards/, docs/CASESTUDY.md).
 *
 * First its parts, directly: the decimal money module (every accepted and refused form, the boundary), the
 * state a ride request carries for its answer, the strict sale reader (services/sale) and the payload reader and writer. Then
 * the real librewards.so in a real compartment (logic_world.h) with fixture identities for store, taxi and
 * messaging: sales on both sides of 150.00, the ride request taxi opens, taxi's answer, the
 * confirmation messaging opens, and every refusal (malformed sale, unknown or mismatched response, expiry).
 *
 * The compartment and the logic come from the environment meson gives the unit tests (IDEVS_COMPARTMENT,
 * IDEVS_REWARDS_LOGIC). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fixtures.h"
#include "harness.h"
#include "idevs_channel.h"
#include "logic_world.h"
#include "money.h"
#include "payloads.h"
#include "ride_state.h"
#include "sale.h"
#include "sale_cases.h"

#define TOPIC_SALES "idevs/rewards/in/sales"
#define TOPIC_RIDE "idevs/rewards/req/ride"
#define TOPIC_RIDE_RESP "idevs/rewards/resp/ride"
#define TOPIC_CONFIRMATION "idevs/rewards/out/confirmation"

#define EXAMPLE_RIDE_REQUEST                                                                                     \
    "{\"booking_ref\":\"S-000042\",\"name\":\"Ana Lima\",\"pickup\":\"12 Harbour Street, Leith, Edinburgh EH6 "  \
    "6LA\",\"time\":\"2026-11-21T10:15:00Z\"}"
#define EXAMPLE_RIDE_RESPONSE                                                                                    \
    "{ \"booking_ref\": \"S-000042\", \"driver\": \"Sam Okafor\", \"vehicle\": \"Blue Skoda Octavia SK21 XYZ\",\n" \
    "  \"eta_minutes\": 7 }"
#define EXAMPLE_CONFIRMATION                                                                                     \
    "{\"phone\":\"+44 7700 900123\",\"text\":\"Hi Ana, thanks for shopping with us! Your free ride home (ref "    \
    "S-000042) is booked: Sam Okafor, Blue Skoda Octavia SK21 XYZ, arrives in 7 min.\"}"

/* ---- money ---- */

static void expect_money(const char *text, int64_t cents)
{
    int64_t got = -7;
    bool ok = money_parse_str(text, &got);
    CU_ASSERT_TRUE(ok);
    CU_ASSERT_EQUAL(got, cents);
    if (!ok || got != cents)
        fprintf(stderr, "\n    money_parse(\"%s\") gave %d, %lld\n", text, ok, (long long)got);
}

static void expect_no_money(const char *text)
{
    int64_t got = -7;
    bool ok = money_parse_str(text, &got);
    CU_ASSERT_FALSE(ok);
    CU_ASSERT_EQUAL(got, -7); /* untouched */
    if (ok)
        fprintf(stderr, "\n    money_parse(\"%s\") accepted it as %lld\n", text, (long long)got);
}

static void test_money_accepted(void)
{
    expect_money("149.99", 14999);
    expect_money("150.00", 15000);
    expect_money("150.01", 15001);
    expect_money("0.00", 0);
    expect_money("0.01", 1);
    expect_money("0.99", 99);
    expect_money("1.00", 100);
    expect_money("10.50", 1050);
    expect_money("129.00", 12900);
    expect_money("99999.99", 9999999);
    expect_money("92233720368547758.07", INT64_MAX);
    /* the boundary, compared in cents */
    int64_t threshold = 0, a = 0, b = 0, c = 0;
    CU_ASSERT_TRUE(money_parse_str("150.00", &threshold));
    CU_ASSERT_TRUE(money_parse_str("149.99", &a) && a < threshold);
    CU_ASSERT_TRUE(money_parse_str("150.00", &b) && b >= threshold);
    CU_ASSERT_TRUE(money_parse_str("150.01", &c) && c >= threshold);
    /* text with an explicit length: only len bytes count, no NUL needed */
    int64_t v = 0;
    CU_ASSERT_TRUE(money_parse("150.00xyz", 6, &v) && v == 15000);
    CU_ASSERT_FALSE(money_parse("150.00xyz", 7, &v));
}

static void test_money_refused(void)
{
    static const char *const refused[] = {
        "", "150", "150.0", "150.", ".50", "150.001", "150.000", "1e2", "1E2", "1.5e2", "-1.00", "-0.00",
        "+1.00", "+150.00", " 150.00", "150.00 ", "150 .00", "150. 00", "1 50.00", "\t1.00", "1.00\n", "1,00",
        "1,000.00", "150,00", "01.00", "00.00", "007.50", "0x1.00", "1.0a", "a.00", "1..00", "1.-1", "١.٠٠",
        "NaN", "inf", "Infinity", "150.00.00", "$150.00", "150.00$", "92233720368547758.08",
        "99999999999999999.99", "100000000000000000.00", "9223372036854775807.00", "123456789012345678901.00",
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        expect_no_money(refused[i]);
    int64_t v = 0;
    CU_ASSERT_FALSE(money_parse(NULL, 6, &v));
    CU_ASSERT_FALSE(money_parse("150.00", 6, NULL));
    CU_ASSERT_FALSE(money_parse_str(NULL, &v));
    /* a NUL inside the counted bytes is not a digit */
    CU_ASSERT_FALSE(money_parse("15\0.00", 6, &v));
}

static void test_money_format_and_arithmetic(void)
{
    char buf[MONEY_BUF];
    static const struct {
        int64_t cents;
        const char *text;
    } cases[] = {{0, "0.00"}, {1, "0.01"}, {99, "0.99"}, {100, "1.00"}, {14999, "149.99"}, {15000, "150.00"},
                 {15001, "150.01"}, {INT64_MAX, "92233720368547758.07"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n = money_format(cases[i].cents, buf, sizeof buf);
        CU_ASSERT_EQUAL(n, strlen(cases[i].text));
        CU_ASSERT_STRING_EQUAL(buf, cases[i].text);
        int64_t back = -1;
        CU_ASSERT_TRUE(money_parse(buf, n, &back) && back == cases[i].cents);
    }
    CU_ASSERT_EQUAL(money_format(-1, buf, sizeof buf), 0);
    CU_ASSERT_EQUAL(money_format(15000, buf, 6), 0); /* "150.00" needs 7 with the NUL */
    CU_ASSERT_EQUAL(money_format(15000, buf, 7), 6);
    int64_t r = 0;
    CU_ASSERT_TRUE(money_add(12900, 2100, &r) && r == 15000);
    CU_ASSERT_FALSE(money_add(INT64_MAX, 1, &r));
    CU_ASSERT_TRUE(money_times(1050, 2, &r) && r == 2100);
    CU_ASSERT_FALSE(money_times(INT64_MAX / 2 + 1, 2, &r));
    CU_ASSERT_FALSE(money_times(-1, 2, &r));
    CU_ASSERT_FALSE(money_times(1, -2, &r));
    /* every cent from 0.00 to 300.00 goes through text and back unchanged */
    for (int64_t c = 0; c <= 30000; c++) {
        size_t n = money_format(c, buf, sizeof buf);
        int64_t back = -1;
        if (n == 0 || !money_parse(buf, n, &back) || back != c) {
            CU_FAIL("format/parse round trip");
            break;
        }
    }
}

/* ---- the state a ride request carries ---- */

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != 0)
            return false;
    return true;
}

static void test_ride_state(void)
{
    sale_record sale;
    CU_ASSERT_EQUAL_FATAL(sale_parse(SALE_CASES_EXAMPLE, strlen(SALE_CASES_EXAMPLE), &sale), IDEVS_OK);
    ride_state rs, back;
    ride_state_make(&rs, &sale, 1000);
    sale_cleanse(&sale);
    CU_ASSERT_TRUE_FATAL(ride_state_read((const uint8_t *)&rs, sizeof rs, &back));
    CU_ASSERT_STRING_EQUAL(back.first_name, rs.first_name);
    CU_ASSERT_STRING_EQUAL(back.phone, rs.phone);
    CU_ASSERT_STRING_EQUAL(back.booking_ref, rs.booking_ref);
    CU_ASSERT_EQUAL(back.asked_ms, 1000);
    /* the time to live, and a clock set back */
    CU_ASSERT_TRUE(ride_state_alive(&rs, 1000 + 600000, 600000));
    CU_ASSERT_FALSE(ride_state_alive(&rs, 1000 + 600001, 600000));
    CU_ASSERT_TRUE(ride_state_alive(&rs, 0, 600000));
    /* refused: another size, no state, a text that runs past its field, no booking reference; the copy is
     * cleansed */
    uint8_t bytes[sizeof rs + 1];
    memcpy(bytes, &rs, sizeof rs);
    CU_ASSERT_FALSE(ride_state_read(bytes, sizeof rs - 1, &back));
    CU_ASSERT_FALSE(ride_state_read(bytes, sizeof rs + 1, &back));
    CU_ASSERT_FALSE(ride_state_read(NULL, 0, &back));
    CU_ASSERT_TRUE(all_zero(&back, sizeof back));
    ride_state bad = rs;
    memset(bad.phone, '7', sizeof bad.phone);
    CU_ASSERT_FALSE(ride_state_read((const uint8_t *)&bad, sizeof bad, &back));
    CU_ASSERT_TRUE(all_zero(&back, sizeof back));
    bad = rs;
    bad.booking_ref[0] = '\0';
    CU_ASSERT_FALSE(ride_state_read((const uint8_t *)&bad, sizeof bad, &back));
    ride_state_cleanse(&rs);
    CU_ASSERT_TRUE(all_zero(&rs, sizeof rs));
}

/* ---- payloads ---- */

static void test_payload_example(void)
{
    sale_record s;
    CU_ASSERT_EQUAL_FATAL(sale_parse(SALE_CASES_EXAMPLE, strlen(SALE_CASES_EXAMPLE), &s), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(s.sale_id, "S-000042");
    CU_ASSERT_STRING_EQUAL(s.name, "Ana Lima");
    CU_ASSERT_STRING_EQUAL(s.first_name, "Ana");
    CU_ASSERT_STRING_EQUAL(s.phone, "+44 7700 900123");
    CU_ASSERT_EQUAL(s.total_cents, 15000);
    CU_ASSERT_EQUAL(s.item_count, 2);
    char out[REWARDS_OUT_MAX];
    size_t n = rewards_write_ride_request(&s, out, sizeof out);
    CU_ASSERT_EQUAL(n, strlen(EXAMPLE_RIDE_REQUEST));
    CU_ASSERT_STRING_EQUAL(out, EXAMPLE_RIDE_REQUEST);
    CU_ASSERT_EQUAL(rewards_write_ride_request(&s, out, n), 0); /* one byte short for the NUL */
    rewards_ride r;
    CU_ASSERT_EQUAL_FATAL(rewards_parse_ride(EXAMPLE_RIDE_RESPONSE, strlen(EXAMPLE_RIDE_RESPONSE), &r), IDEVS_OK);
    CU_ASSERT_EQUAL(r.eta_minutes, 7);
    n = rewards_write_confirmation(s.phone, s.first_name, "thanks for shopping with us!", &r, out, sizeof out);
    CU_ASSERT_EQUAL(n, strlen(EXAMPLE_CONFIRMATION));
    CU_ASSERT_STRING_EQUAL(out, EXAMPLE_CONFIRMATION);
    sale_cleanse(&s);
    CU_ASSERT_TRUE(all_zero(&s, sizeof s));
}

static void test_payload_escaping(void)
{
    static const char sale[] =
        "{\"sale_id\":\"S-1\",\"time\":\"2026-01-02T03:04:05Z\",\"customer\":{\"id\":\"C-1\","
        "\"name\":\"Zo\\u00eb \\\"Zed\\\" O\\\\Neil\",\"phone\":\"07700 900001\",\"address\":\"1 \\\"A\\\" St\"},"
        "\"items\":[{\"sku\":\"A\",\"name\":\"x\",\"qty\":3,\"price\":\"50.00\"}],\"total\":\"150.00\"}";
    sale_record s;
    CU_ASSERT_EQUAL_FATAL(sale_parse(sale, strlen(sale), &s), IDEVS_OK);
    CU_ASSERT_STRING_EQUAL(s.first_name, "Zo\xc3\xab");
    char out[REWARDS_OUT_MAX];
    CU_ASSERT_TRUE(rewards_write_ride_request(&s, out, sizeof out) > 0);
    /* what the logic writes is JSON that reads back to the same strings */
    cJSON *j = cJSON_Parse(out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(j);
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(j, "name")->valuestring, "Zo\xc3\xab \"Zed\" O\\Neil");
    CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItemCaseSensitive(j, "pickup")->valuestring, "1 \"A\" St");
    cJSON_Delete(j);
}

static void test_payload_refusals(void)
{
    char buf[2048];
    sale_record s;
    for (size_t i = 0; i < sale_cases_bad_count; i++) {
        sale_cases_with(buf, sizeof buf, sale_cases_bad[i].from, sale_cases_bad[i].to);
        idevs_err err = sale_parse(buf, strlen(buf), &s);
        CU_ASSERT_EQUAL(err, IDEVS_ERR_MALFORMED);
        if (err != IDEVS_ERR_MALFORMED)
            fprintf(stderr, "\n    accepted a sale with %s\n", sale_cases_bad[i].why);
        CU_ASSERT_TRUE(all_zero(&s, sizeof s));
    }
    static const char *const junk[] = {"", "not json", "{}", "null", "\"S-1\"", "{\"sale_id\":"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++)
        CU_ASSERT_EQUAL(sale_parse(junk[i], strlen(junk[i]), &s), IDEVS_ERR_MALFORMED);
    /* trailing text, a NUL inside, a length that is not the text's */
    snprintf(buf, sizeof buf, "%s {}", SALE_CASES_EXAMPLE);
    CU_ASSERT_EQUAL(sale_parse(buf, strlen(buf), &s), IDEVS_ERR_MALFORMED);
    snprintf(buf, sizeof buf, "%s  \n", SALE_CASES_EXAMPLE);
    CU_ASSERT_EQUAL(sale_parse(buf, strlen(buf), &s), IDEVS_OK); /* white space is fine */
    size_t n = strlen(SALE_CASES_EXAMPLE);
    memcpy(buf, SALE_CASES_EXAMPLE, n + 1);
    buf[n - 1] = '\0';
    CU_ASSERT_EQUAL(sale_parse(buf, n, &s), IDEVS_ERR_MALFORMED);
    memcpy(buf, SALE_CASES_EXAMPLE, n + 1);
    CU_ASSERT_EQUAL(sale_parse(buf, n - 5, &s), IDEVS_ERR_MALFORMED);
    /* invalid UTF-8 in a name */
    sale_cases_with(buf, sizeof buf, "Ana Lima", "Ana \xc3\x28ima");
    CU_ASSERT_EQUAL(sale_parse(buf, strlen(buf), &s), IDEVS_ERR_MALFORMED);

    rewards_ride r;
    static const char *const bad_rides[] = {
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\"}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":\"7\"}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7.5}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":-1}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":100000}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
        "{\"booking_ref\":\"S 1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7,\"tip\":1}",
        "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
        "[]", "7", "",
    };
    for (size_t i = 0; i < sizeof bad_rides / sizeof bad_rides[0]; i++) {
        idevs_err err = rewards_parse_ride(bad_rides[i], strlen(bad_rides[i]), &r);
        CU_ASSERT_EQUAL(err, IDEVS_ERR_MALFORMED);
        if (err != IDEVS_ERR_MALFORMED)
            fprintf(stderr, "\n    accepted the ride %s\n", bad_rides[i]);
    }
    static const char good_ride[] = "{\"booking_ref\":\"S-1\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":0}";
    CU_ASSERT_EQUAL(rewards_parse_ride(good_ride, strlen(good_ride), &r), IDEVS_OK);
}

/* ---- the logic in a compartment ---- */

static lw_suite suite;
enum { STORE, TAXI, MESSAGING }; /* the parties, in the order of the descriptor's services */
static const char *const service_names[] = {"store", "taxi", "messaging", NULL};

/* The routes of the rewards descriptor of docs/DEPLOYMENT.md. */
#define ROUTES \
    "\"inputs\": [{\"name\": \"sales\", \"topic\": \"" TOPIC_SALES "\", \"from\": \"store\"}],\n" \
    " \"outputs\": [{\"name\": \"confirmation\", \"topic\": \"" TOPIC_CONFIRMATION \
    "\", \"to\": \"messaging\", \"qos\": 1}],\n" \
    " \"requests\": [{\"name\": \"ride\", \"topic\": \"" TOPIC_RIDE "\", \"response_topic\": \"" \
    TOPIC_RIDE_RESP "\", \"to\": \"taxi\", \"qos\": 1}],\n" \
    " \"refusals\": [\"malformed_sale\", \"unknown_ride\", \"malformed_ride\", \"wrong_booking\"]"

static void make_sale(char *buf, size_t len, const char *sale_id, const char *price2, const char *total)
{
    sale_cases_make(buf, len, sale_id, "C-0007", "129.00", price2, total);
}

/* The sale from the store, done: the logic asks the taxi service for a ride, one more publication, which the taxi
 * opens. Returns the request's message id. */
static idevs_msgid ride_requested(lw_world *w, const char *sale)
{
    size_t before = w->r.pub_count;
    uint64_t d = lw_deliver(w, &w->party[STORE], TOPIC_SALES, sale, NULL, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w->r.pub_count, before + 1);
    idevs_opened o;
    free(lw_open_pub(w, &w->party[TAXI], before, &o));
    idevs_msgid id = o.message_id;
    idevs_opened_clear(&o);
    return id;
}

static void test_logic_boundary_and_round_trip(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{}"), IDEVS_OK);
    static const char *const ride_keys[] = {"booking_ref", "name", "pickup", "time"};
    static const char *const confirmation_keys[] = {"phone", "text"};
    char sale[1024];

    /* 149.99: nothing leaves */
    make_sale(sale, sizeof sale, "S-014999", "20.99", "149.99");
    uint64_t d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, sale, NULL, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL(w.r.pub_count, 0);

    /* 150.00 and 150.01: a ride request each, with only the pickup fields */
    static const struct {
        const char *id, *price2, *total;
    } qualifying[] = {{"S-015000", "21.00", "150.00"}, {"S-015001", "21.01", "150.01"}};
    idevs_msgid sale_ids[2], request_ids[2];
    for (size_t k = 0; k < 2; k++) {
        make_sale(sale, sizeof sale, qualifying[k].id, qualifying[k].price2, qualifying[k].total);
        size_t before = w.r.pub_count;
        d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, sale, NULL, &sale_ids[k]);
        CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
        CU_ASSERT_EQUAL_FATAL(w.r.pub_count, before + 1);
        CU_ASSERT_STRING_EQUAL(w.r.pub_topic[before], TOPIC_RIDE);
        CU_ASSERT_STRING_EQUAL(w.r.pub_response_topic[before], TOPIC_RIDE_RESP);
        CU_ASSERT_EQUAL(w.r.pub_correlation_len[before], IDEVS_REQUEST_CORRELATION_LEN); /* its id, sealed state */
        /* only taxi can open it */
        idevs_opened o;
        memset(&o, 0, sizeof o);
        CU_ASSERT_NOT_EQUAL(idevs_envelope_open(w.party[MESSAGING].ctx, w.r.pub_topic[before], w.r.pub_env[before],
                                                w.r.pub_len[before], &o),
                            IDEVS_OK);
        char *req = lw_open_pub(&w, &w.party[TAXI], before, &o);
        request_ids[k] = o.message_id;
        CU_ASSERT_EQUAL(o.provenance_count, 1);
        CU_ASSERT_EQUAL(memcmp(o.provenance[0].b, sale_ids[k].b, 16), 0);
        CU_ASSERT_EQUAL(memcmp(w.r.pub_correlation[before], o.message_id.b, 16), 0);
        CU_ASSERT_TRUE(lw_json_keys_are(req, ride_keys, 4));
        cJSON *j = cJSON_Parse(req);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        CU_ASSERT_STRING_EQUAL(lw_json_str(j, "booking_ref"), qualifying[k].id);
        CU_ASSERT_STRING_EQUAL(lw_json_str(j, "name"), "Ana Lima");
        CU_ASSERT_STRING_EQUAL(lw_json_str(j, "pickup"), "12 Harbour Street, Leith, Edinburgh EH6 6LA");
        CU_ASSERT_STRING_EQUAL(lw_json_str(j, "time"), "2026-11-21T10:15:00Z");
        /* what taxi must not get */
        CU_ASSERT_PTR_NULL(cJSON_GetObjectItemCaseSensitive(j, "phone"));
        CU_ASSERT_PTR_NULL(cJSON_GetObjectItemCaseSensitive(j, "total"));
        CU_ASSERT_PTR_NULL(cJSON_GetObjectItemCaseSensitive(j, "items"));
        CU_ASSERT_PTR_NULL(strstr(req, "7700"));
        CU_ASSERT_PTR_NULL(strstr(req, qualifying[k].total));
        CU_ASSERT_PTR_NULL(strstr(req, "Rain jacket"));
        cJSON_Delete(j);
        free(req);
        idevs_opened_clear(&o);
    }

    /* taxi answers the second, then the first: each yields its confirmation, with only phone and text */
    for (int k = 1; k >= 0; k--) {
        char resp[256];
        snprintf(resp, sizeof resp,
                 "{\"booking_ref\":\"%s\",\"driver\":\"Sam Okafor\",\"vehicle\":\"Blue Skoda Octavia SK21 XYZ\","
                 "\"eta_minutes\":%d}",
                 qualifying[k].id, 7 + k);
        size_t before = w.r.pub_count;
        idevs_msgid resp_id;
        d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, resp, &request_ids[k], &resp_id);
        CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
        CU_ASSERT_EQUAL_FATAL(w.r.pub_count, before + 1);
        CU_ASSERT_STRING_EQUAL(w.r.pub_topic[before], TOPIC_CONFIRMATION);
        idevs_opened o;
        char *conf = lw_open_pub(&w, &w.party[MESSAGING], before, &o);
        char want[512];
        snprintf(want, sizeof want,
                 "{\"phone\":\"+44 7700 900123\",\"text\":\"Hi Ana, thanks for shopping with us! Your free ride home "
                 "(ref %s) is booked: Sam Okafor, Blue Skoda Octavia SK21 XYZ, arrives in %d min.\"}",
                 qualifying[k].id, 7 + k);
        CU_ASSERT_STRING_EQUAL(conf, want);
        CU_ASSERT_TRUE(lw_json_keys_are(conf, confirmation_keys, 2));
        CU_ASSERT_PTR_NULL(strstr(conf, "Harbour"));
        CU_ASSERT_PTR_NULL(strstr(conf, "Lima"));
        /* provenance: taxi's response, then the sale */
        CU_ASSERT_EQUAL(o.provenance_count, 2);
        CU_ASSERT_EQUAL(memcmp(o.provenance[0].b, resp_id.b, 16), 0);
        CU_ASSERT_EQUAL(memcmp(o.provenance[1].b, sale_ids[k].b, 16), 0);
        free(conf);
        idevs_opened_clear(&o);
    }

    /* the same request answered again: the entry was used and forgotten */
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &request_ids[0], NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(w.r.pub_count, 4);
    lw_free(&w);
}

static void test_logic_refusals(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{}"), IDEVS_OK);
    /* malformed sales: an error, and nothing leaves */
    static const char *const junk[] = {"not json", "{}", "{\"sale_id\":\"S-1\"}"};
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        uint64_t d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, junk[i], NULL, NULL);
        CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
        CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "malformed_sale");
    }
    char buf[2048];
    for (size_t i = 0; i < sale_cases_bad_count; i++) {
        sale_cases_with(buf, sizeof buf, sale_cases_bad[i].from, sale_cases_bad[i].to);
        uint64_t d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, buf, NULL, NULL);
        idevs_err st = lw_wait_done(&w, d);
        CU_ASSERT_EQUAL(st, IDEVS_ERR_LOGIC);
        CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "malformed_sale");
        if (st != IDEVS_ERR_LOGIC)
            fprintf(stderr, "\n    the logic accepted a sale with %s\n", sale_cases_bad[i].why);
    }
    CU_ASSERT_EQUAL(w.r.pub_count, 0);

    /* a response to a request the logic never made (the compartment restarted in between) */
    idevs_msgid unknown;
    CU_ASSERT_FATAL(idevs_random(unknown.b, 16) == IDEVS_OK);
    uint64_t d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &unknown, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "unknown_ride");
    CU_ASSERT_EQUAL(w.r.pub_count, 0);

    /* real requests; a response uses up its request whatever it says: a malformed one, or one for another
     * booking, is refused, and the right answer after it finds nothing */
    idevs_msgid request_ids[3];
    char sale[1024];
    for (int k = 0; k < 3; k++) {
        char ref[16];
        snprintf(ref, sizeof ref, "S-00004%d", k);
        make_sale(sale, sizeof sale, ref, "21.00", "150.00");
        request_ids[k] = ride_requested(&w, sale);
    }
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, "{\"booking_ref\":\"S-000040\",\"driver\":\"Sam\"}", &request_ids[0],
                NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "malformed_ride");
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP,
                "{\"booking_ref\":\"S-000040\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
                &request_ids[0], NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "unknown_ride");
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP,
                "{\"booking_ref\":\"S-000040\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
                &request_ids[1], NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "wrong_booking");
    CU_ASSERT_EQUAL(w.r.pub_count, 3);
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP,
                "{\"booking_ref\":\"S-000042\",\"driver\":\"Sam\",\"vehicle\":\"Car\",\"eta_minutes\":7}",
                &request_ids[2], NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 4);
    idevs_opened o;
    char *conf = lw_open_pub(&w, &w.party[MESSAGING], 3, &o);
    CU_ASSERT_STRING_EQUAL(conf, "{\"phone\":\"+44 7700 900123\",\"text\":\"Hi Ana, thanks for shopping with us! Your "
                                 "free ride home (ref S-000042) is booked: Sam, Car, arrives in 7 min.\"}");
    free(conf);
    idevs_opened_clear(&o);

    /* the case study's example, to the byte, through the compartment */
    d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, SALE_CASES_EXAMPLE, NULL, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 5);
    char *req = lw_open_pub(&w, &w.party[TAXI], 4, &o);
    CU_ASSERT_STRING_EQUAL(req, EXAMPLE_RIDE_REQUEST);
    free(req);
    idevs_msgid request_id = o.message_id;
    idevs_opened_clear(&o);
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &request_id, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 6);
    conf = lw_open_pub(&w, &w.party[MESSAGING], 5, &o);
    CU_ASSERT_STRING_EQUAL(conf, EXAMPLE_CONFIRMATION);
    free(conf);
    idevs_opened_clear(&o);
    lw_free(&w);
}

static void test_logic_config(void)
{
    lw_world w;
    /* another threshold and greeting */
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{\"threshold\": \"200.00\", \"greeting\": \"enjoy!\"}"), IDEVS_OK);
    uint64_t d = lw_deliver(&w, &w.party[STORE], TOPIC_SALES, SALE_CASES_EXAMPLE, NULL, NULL); /* 150.00 < 200.00 */
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL(w.r.pub_count, 0);
    char sale[1024];
    make_sale(sale, sizeof sale, "S-000200", "71.00", "200.00");
    idevs_msgid request_id = ride_requested(&w, sale);
    idevs_opened o;
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP,
                "{\"booking_ref\":\"S-000200\",\"driver\":\"Sam Okafor\",\"vehicle\":\"Car\",\"eta_minutes\":3}",
                &request_id, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 2);
    char *conf = lw_open_pub(&w, &w.party[MESSAGING], 1, &o);
    CU_ASSERT_STRING_EQUAL(conf, "{\"phone\":\"+44 7700 900123\",\"text\":\"Hi Ana, enjoy! Your free ride home (ref "
                                 "S-000200) is booked: Sam Okafor, Car, arrives in 3 min.\"}");
    free(conf);
    idevs_opened_clear(&o);
    lw_free(&w);

    /* configurations the logic refuses: the compartment does not start */
    static const char *const bad[] = {"{\"threshold\": \"150\"}", "{\"threshold\": 150}",
                                      "{\"threshold_cents\": 15000}", "{\"greeting\": 7}",
                                      "{\"request_timeout_s\": 0}", "{\"threshold\": \"1.00\", \"threshold\": \"2.00\"}"};
    lw_expect_refused(&suite.spec, bad, sizeof bad / sizeof bad[0]);
}

static void test_logic_expiry(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{\"request_timeout_s\": 1}"), IDEVS_OK);
    idevs_msgid request_id = ride_requested(&w, SALE_CASES_EXAMPLE);
    lw_poll_for(&w, 1600); /* an answer after the time to live (1 s) is too late */
    uint64_t d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &request_id, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "unknown_ride");
    CU_ASSERT_EQUAL(w.r.pub_count, 1);
    lw_free(&w);
}

/* The compartment killed (-9) between a ride request and taxi's answer: the restarted compartment matches the
 * answer with the state the request carried, and the customer gets the confirmation; a second answer to the same
 * request in the new run finds nothing. */
static void test_logic_answer_after_restart(void)
{
    lw_world w;
    CU_ASSERT_EQUAL_FATAL(lw_start(&w, &suite.spec, "{}"), IDEVS_OK);
    idevs_msgid request_id = ride_requested(&w, SALE_CASES_EXAMPLE);
    idevs_launcher_stats st;
    idevs_launcher_get_stats(w.l, &st);
    pid_t first = st.pid;
    CU_ASSERT_FATAL(first > 0 && kill(first, SIGKILL) == 0);
    for (int i = 0; i < 100 && (st.pid == first || st.pid <= 0 || st.state != IDEVS_LAUNCHER_READY); i++) {
        lw_poll_for(&w, 50);
        idevs_launcher_get_stats(w.l, &st);
    }
    CU_ASSERT_FATAL(st.pid != first && st.restarts == 1);
    uint64_t d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &request_id, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(w.r.pub_count, 2);
    idevs_opened o;
    char *conf = lw_open_pub(&w, &w.party[MESSAGING], 1, &o);
    CU_ASSERT_STRING_EQUAL(conf, EXAMPLE_CONFIRMATION);
    /* provenance as without the restart: the answer, then the sale that caused the request */
    CU_ASSERT_EQUAL(o.provenance_count, 2);
    free(conf);
    idevs_opened_clear(&o);
    d = lw_deliver(&w, &w.party[TAXI], TOPIC_RIDE_RESP, EXAMPLE_RIDE_RESPONSE, &request_id, NULL);
    CU_ASSERT_EQUAL(lw_wait_done(&w, d), IDEVS_ERR_LOGIC);
    CU_ASSERT_STRING_EQUAL(lw_done_refusal(&w, d), "unknown_ride");
    CU_ASSERT_EQUAL(w.r.pub_count, 2);
    lw_free(&w);
}

/* ---- suite ---- */

static int suite_init(void)
{
    return lw_suite_init(&suite, "IDEVS_REWARDS_LOGIC", "rewards", service_names, ROUTES);
}

static int suite_clean(void)
{
    return lw_suite_clean(&suite);
}

static CU_TestInfo parts[] = {
    {"money: every accepted form, and the boundary in cents", test_money_accepted},
    {"money: every refused form", test_money_refused},
    {"money: formatting and checked arithmetic", test_money_format_and_arithmetic},
    {"ride state: read back, refused unless whole and terminated, cleansed; its time to live", test_ride_state},
    {"payloads: the case study's example, to the byte", test_payload_example},
    {"payloads: quotes and backslashes survive as JSON", test_payload_escaping},
    {"payloads: every malformed sale and response is refused", test_payload_refusals},
    CU_TEST_INFO_NULL,
};

static CU_TestInfo logic[] = {
    {"149.99 yields nothing; 150.00 and 150.01 a ride and a confirmation", test_logic_boundary_and_round_trip},
    {"malformed sales and unknown or wrong responses: an error, nothing leaves", test_logic_refusals},
    {"configuration: threshold and greeting; bad settings stop the start", test_logic_config},
    {"a request not answered within its time to live is forgotten", test_logic_expiry},
    {"a ride asked before the compartment was killed is confirmed after it, once", test_logic_answer_after_restart},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    CU_SuiteInfo suites[] = {{"rewards parts", NULL, NULL, NULL, NULL, parts},
                             {"rewards logic in a compartment", suite_init, suite_clean, NULL, NULL, logic},
                             CU_SUITE_INFO_NULL};
    return harness_run(suites);
}
