/* The store's generated data set (services/store/store_seed.c): deterministic for a seed, realistic in form,
 * totals in integer cents equal to the sum of their items, and the boundary totals 149.99, 150.00 and 150.01
 * always present. */
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#include "money.h"
#include "../../services/store/store_seed.h"

static bool same_data(const seed_data *a, const seed_data *b)
{
    return a->customer_count == b->customer_count && a->sale_count == b->sale_count &&
           memcmp(a->customers, b->customers, a->customer_count * sizeof *a->customers) == 0 &&
           memcmp(a->sales, b->sales, a->sale_count * sizeof *a->sales) == 0;
}

static void test_deterministic(void)
{
    seed_data a, b, c;
    CU_ASSERT_EQUAL_FATAL(store_seed_generate(40, 60, 1, &a), 0);
    CU_ASSERT_EQUAL_FATAL(store_seed_generate(40, 60, 1, &b), 0);
    CU_ASSERT_EQUAL_FATAL(store_seed_generate(40, 60, 2, &c), 0);
    CU_ASSERT_TRUE(same_data(&a, &b));
    CU_ASSERT_FALSE(same_data(&a, &c));
    /* a fixed point, so that a change of the generator is seen: seed 1's first sale and customer */
    CU_ASSERT_STRING_EQUAL(a.sales[0].sale_id, "S-000001");
    CU_ASSERT_STRING_EQUAL(a.customers[0].id, "C-0001");
    CU_ASSERT_STRING_EQUAL(a.customers[0].name, "Declan Smith");
    CU_ASSERT_STRING_EQUAL(a.customers[0].phone, "+44 7700 900302");
    CU_ASSERT_EQUAL(a.sales[0].total_cents, 7450);
    store_seed_free(&a);
    store_seed_free(&b);
    store_seed_free(&c);
    CU_ASSERT_PTR_NULL(a.sales);
}

static void test_refused_counts(void)
{
    seed_data d;
    CU_ASSERT_EQUAL(store_seed_generate(0, 60, 1, &d), -1);
    CU_ASSERT_EQUAL(store_seed_generate(40, 0, 1, &d), -1);
    CU_ASSERT_EQUAL(store_seed_generate(SEED_CUSTOMERS_MAX + 1, 60, 1, &d), -1);
    CU_ASSERT_EQUAL(store_seed_generate(40, SEED_SALES_MAX + 1, 1, &d), -1);
    CU_ASSERT_EQUAL(store_seed_generate(SEED_CUSTOMERS_MAX, 1, 1, &d), 0);
    store_seed_free(&d);
}

/* Every property the data set promises, for one generation. */
static void check_data(const seed_data *d, size_t customers, size_t sales)
{
    CU_ASSERT_EQUAL_FATAL(d->customer_count, customers);
    CU_ASSERT_EQUAL_FATAL(d->sale_count, sales);
    regex_t phone_re, address_re, time_re;
    CU_ASSERT_FATAL(regcomp(&phone_re, "^\\+44 7700 900[0-9]{3}$", REG_EXTENDED | REG_NOSUB) == 0);
    /* number street, area, city OUTWARD DIGIT LETTER LETTER */
    CU_ASSERT_FATAL(regcomp(&address_re, "^[1-9][0-9]* [A-Za-z' ]+, [A-Za-z ]+, [A-Za-z ]+ [A-Z]{1,2}[0-9]{1,2} [0-9][A-Z]{2}$",
                            REG_EXTENDED | REG_NOSUB) == 0);
    CU_ASSERT_FATAL(regcomp(&time_re, "^2026-11-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$|^20[2-9][0-9]-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$",
                            REG_EXTENDED | REG_NOSUB) == 0);
    for (size_t i = 0; i < customers; i++) {
        const seed_customer *c = &d->customers[i];
        char id[32];
        snprintf(id, sizeof id, "C-%04zu", i + 1);
        CU_ASSERT_STRING_EQUAL(c->id, id);
        CU_ASSERT(strchr(c->name, ' ') != NULL && c->name[0] != ' ');
        CU_ASSERT_EQUAL(regexec(&phone_re, c->phone, 0, NULL, 0), 0);
        CU_ASSERT_EQUAL(regexec(&address_re, c->address, 0, NULL, 0), 0);
        bool unique = true;
        for (size_t k = 0; k < i; k++)
            unique = unique && strcmp(c->phone, d->customers[k].phone) != 0;
        CU_ASSERT_TRUE(unique);
    }
    for (size_t i = 0; i < d->item_count; i++) {
        char text[MONEY_BUF];
        int64_t back = -1;
        CU_ASSERT(d->items[i].price_cents > 0);
        CU_ASSERT(money_format(d->items[i].price_cents, text, sizeof text) > 0 && money_parse_str(text, &back) &&
                  back == d->items[i].price_cents);
        bool unique = true;
        for (size_t k = 0; k < i; k++)
            unique = unique && strcmp(d->items[i].sku, d->items[k].sku) != 0;
        CU_ASSERT_TRUE(unique);
    }
    size_t below = 0, above = 0;
    bool b149 = false, b150 = false, b15001 = false;
    for (size_t i = 0; i < sales; i++) {
        const seed_sale *s = &d->sales[i];
        char id[32];
        snprintf(id, sizeof id, "S-%06zu", i + 1);
        CU_ASSERT_STRING_EQUAL(s->sale_id, id);
        CU_ASSERT(s->customer < customers);
        CU_ASSERT_EQUAL(regexec(&time_re, s->time, 0, NULL, 0), 0);
        if (i > 0)
            CU_ASSERT(strcmp(d->sales[i - 1].time, s->time) < 0); /* in order */
        CU_ASSERT(s->line_count >= 1 && s->line_count <= SEED_LINES_MAX);
        int64_t sum = 0;
        for (size_t k = 0; k < s->line_count; k++) {
            CU_ASSERT(s->lines[k].item < d->item_count);
            CU_ASSERT(s->lines[k].qty >= 1 && s->lines[k].qty <= 3);
            for (size_t m = 0; m < k; m++)
                CU_ASSERT(s->lines[k].item != s->lines[m].item);
            sum += d->items[s->lines[k].item].price_cents * s->lines[k].qty;
        }
        CU_ASSERT_EQUAL(s->total_cents, sum);
        below += s->total_cents < 15000;
        above += s->total_cents > 15001;
        b149 |= s->total_cents == 14999;
        b150 |= s->total_cents == 15000;
        b15001 |= s->total_cents == 15001;
    }
    if (sales >= 3)
        CU_ASSERT_TRUE(b149 && b150 && b15001);
    if (sales >= 40) {
        CU_ASSERT(below >= sales / 5);
        CU_ASSERT(above >= sales / 10);
    }
    regfree(&phone_re);
    regfree(&address_re);
    regfree(&time_re);
}

static void test_properties_default(void)
{
    seed_data d;
    CU_ASSERT_EQUAL_FATAL(store_seed_generate(40, 60, 1, &d), 0);
    check_data(&d, 40, 60);
    /* 40 customers get 40 different names */
    for (size_t i = 0; i < d.customer_count; i++) {
        bool unique = true;
        for (size_t k = 0; k < i; k++)
            unique = unique && strcmp(d.customers[i].name, d.customers[k].name) != 0;
        CU_ASSERT_TRUE(unique);
    }
    /* the 150.00 sale is the case study's: a rain jacket and two pairs of wool socks */
    for (size_t i = 0; i < d.sale_count; i++)
        if (d.sales[i].total_cents == 15000 && d.sales[i].line_count == 2) {
            CU_ASSERT_STRING_EQUAL(d.items[d.sales[i].lines[0].item].sku, "JKT-204");
            CU_ASSERT_STRING_EQUAL(d.items[d.sales[i].lines[1].item].sku, "SCK-011");
            CU_ASSERT_EQUAL(d.sales[i].lines[1].qty, 2);
        }
    store_seed_free(&d);
}

static void test_properties_many_seeds_and_sizes(void)
{
    static const size_t sizes[][2] = {{1, 1}, {1, 3}, {2, 4}, {5, 5}, {40, 60}, {100, 250}, {1000, 2000}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (uint64_t seed = 0; seed < 6; seed++) {
            seed_data d;
            CU_ASSERT_EQUAL_FATAL(store_seed_generate(sizes[s][0], sizes[s][1], seed * 7919 + 1, &d), 0);
            check_data(&d, sizes[s][0], sizes[s][1]);
            store_seed_free(&d);
        }
}

static CU_TestInfo tests[] = {
    {"the same seed gives the same data, another seed other data", test_deterministic},
    {"counts out of range are refused", test_refused_counts},
    {"defaults: realistic fields, totals are item sums, 149.99 / 150.00 / 150.01 present",
     test_properties_default},
    {"the same properties for many seeds and sizes", test_properties_many_seeds_and_sizes},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("store data set", NULL, NULL, tests);
}
