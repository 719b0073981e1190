/* Sales for the tests of the logics that read them (test_rewards, test_loyalty): the example of
 * docs/CASESTUDY.md to the byte, a sale built from its parts, and the malformed sales every reader must refuse
 * (services/sale/sale.h). */
#ifndef IDEVS_TEST_SALE_CASES_H
#define IDEVS_TEST_SALE_CASES_H

#include <stddef.h>

/* The example of docs/CASESTUDY.md, to the byte. */
#define SALE_CASES_EXAMPLE                                                                                       \
    "{ \"sale_id\": \"S-000042\", \"time\": \"2026-11-21T10:15:00Z\",\n"                                         \
    "  \"customer\": { \"id\": \"C-0007\", \"name\": \"Ana Lima\", \"phone\": \"+44 7700 900123\",\n"            \
    "                \"address\": \"12 Harbour Street, Leith, Edinburgh EH6 6LA\" },\n"                          \
    "  \"items\": [ { \"sku\": \"JKT-204\", \"name\": \"Rain jacket\", \"qty\": 1, \"price\": \"129.00\" },\n"    \
    "             { \"sku\": \"SCK-011\", \"name\": \"Wool socks\", \"qty\": 2, \"price\": \"10.50\" } ],\n"      \
    "  \"total\": \"150.00\" }"

/* A change to the example that makes it malformed: the first occurrence of from replaced by to. */
typedef struct sale_case {
    const char *from, *to, *why;
} sale_case;

extern const sale_case sale_cases_bad[];
extern const size_t sale_cases_bad_count;

/* The example with the first occurrence of from replaced by to, into buf (asserts that it fits). */
void sale_cases_with(char *buf, size_t len, const char *from, const char *to);

/* A compact sale of Ana Lima's (phone +44 7700 900123, 12 Harbour Street...) as customer customer_id: a rain
 * jacket at price1 and wool socks at price2, one each, and total as given (money text, not checked here). */
void sale_cases_make(char *buf, size_t len, const char *sale_id, const char *customer_id, const char *price1,
                     const char *price2, const char *total);

#endif
