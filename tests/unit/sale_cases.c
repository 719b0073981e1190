/* Sales for the tests of the logics; see sale_cases.h. */
#include "sale_cases.h"

#include <stdio.h>
#include <string.h>

#include "harness.h"

const sale_case sale_cases_bad[] = {
    {"\"total\": \"150.00\"", "\"total\": 150.00", "total as a JSON number"},
    {"\"total\": \"150.00\"", "\"total\": \"150\"", "total without decimals"},
    {"\"total\": \"150.00\"", "\"total\": \"150.0\"", "total with one decimal"},
    {"\"total\": \"150.00\"", "\"total\": \"1.5e2\"", "total in exponent form"},
    {"\"total\": \"150.00\"", "\"total\": \"150.01\"", "total not the sum of the items"},
    {"\"total\": \"150.00\"", "\"total\": \"-150.00\"", "negative total"},
    {"\"total\": \"150.00\"", "\"total\": \"150.00\", \"total\": \"150.00\"", "a key twice"},
    {"\"total\": \"150.00\"", "\"total\": \"150.00\", \"coupon\": \"x\"", "an unknown key"},
    {",\n  \"total\": \"150.00\"", "", "total missing"},
    {"\"sale_id\": \"S-000042\"", "\"sale_id\": \"\"", "empty sale id"},
    {"\"sale_id\": \"S-000042\"", "\"sale_id\": \"S 42\"", "sale id with a space"},
    {"\"sale_id\": \"S-000042\"", "\"sale_id\": 42", "sale id as a number"},
    {"\"time\": \"2026-11-21T10:15:00Z\"", "\"time\": \"21/11/2026 10:15\"", "time in another format"},
    {"\"time\": \"2026-11-21T10:15:00Z\"", "\"time\": \"2026-13-21T10:15:00Z\"", "month 13"},
    {"\"phone\": \"+44 7700 900123\"", "\"phone\": \"call me\"", "phone with letters"},
    {"\"phone\": \"+44 7700 900123\"", "\"phone\": \"+44 7700 900123 +44 7700 900123 +44\"", "phone too long"},
    {"\"name\": \"Ana Lima\"", "\"name\": \"Ana\\nLima\"", "a control character in the name"},
    {"\"name\": \"Ana Lima\"", "\"name\": \" Ana\"", "a name without a first name"},
    {"\"name\": \"Ana Lima\"", "\"name\": \"\"", "empty name"},
    {"\"address\": \"12 Harbour Street, Leith, Edinburgh EH6 6LA\"", "\"address\": null", "null address"},
    {"\"id\": \"C-0007\", ", "", "customer id missing"},
    {"\"qty\": 1", "\"qty\": 0", "qty 0"},
    {"\"qty\": 1", "\"qty\": 1.5", "fractional qty"},
    {"\"qty\": 1", "\"qty\": \"1\"", "qty as a string"},
    {"\"qty\": 1", "\"qty\": 1e9", "qty too large"},
    {"\"price\": \"129.00\"", "\"price\": \"129\"", "price without decimals"},
    {"\"price\": \"129.00\"", "\"price\": \"129.00\", \"colour\": \"red\"", "an unknown item key"},
    {"\"items\": [ { \"sku\": \"JKT-204\", \"name\": \"Rain jacket\", \"qty\": 1, \"price\": \"129.00\" },\n"
     "             { \"sku\": \"SCK-011\", \"name\": \"Wool socks\", \"qty\": 2, \"price\": \"10.50\" } ],\n"
     "  \"total\": \"150.00\"",
     "\"items\": [], \"total\": \"0.00\"", "no items"},
    {"{ \"sale_id\"", "[{ \"sale_id\"", "an array around the sale"},
};
const size_t sale_cases_bad_count = sizeof sale_cases_bad / sizeof sale_cases_bad[0];

void sale_cases_with(char *buf, size_t len, const char *from, const char *to)
{
    const char *base = SALE_CASES_EXAMPLE;
    const char *at = strstr(base, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    int n = snprintf(buf, len, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    CU_ASSERT_FATAL(n > 0 && (size_t)n < len);
}

void sale_cases_make(char *buf, size_t len, const char *sale_id, const char *customer_id, const char *price1,
                     const char *price2, const char *total)
{
    int n = snprintf(buf, len,
                     "{\"sale_id\":\"%s\",\"time\":\"2026-11-21T10:15:00Z\",\"customer\":{\"id\":\"%s\","
                     "\"name\":\"Ana Lima\",\"phone\":\"+44 7700 900123\","
                     "\"address\":\"12 Harbour Street, Leith, Edinburgh EH6 6LA\"},"
                     "\"items\":[{\"sku\":\"JKT-204\",\"name\":\"Rain jacket\",\"qty\":1,\"price\":\"%s\"},"
                     "{\"sku\":\"SCK-011\",\"name\":\"Wool socks\",\"qty\":1,\"price\":\"%s\"}],\"total\":\"%s\"}",
                     sale_id, customer_id, price1, price2, total);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < len);
}
