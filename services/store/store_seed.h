/* The store's generated data set: customers with names, UK-style phone numbers and addresses, a catalogue of
 * items with prices, and sales of 1 to 4 items. Deterministic: the same counts and seed give the same data,
 * byte for byte, on every machine (a private xorshift generator, no libc rand()).
 *
 * Totals are integer cents, the sum of qty x price over the sale's items. Totals fall on both sides of
 * $150.00, and when there are at least 3 sales, three of them total exactly 149.99, 150.00 and 150.01 (at a
 * quarter, half and three quarters of the way through the sales). Phone numbers are in the range Ofcom keeps
 * for drama (+44 7700 900000 to 900999): no real person's number. No floating point. */
#ifndef STORE_SEED_H
#define STORE_SEED_H

#include <stddef.h>
#include <stdint.h>

#define SEED_CUSTOMERS_MAX 1000 /* one drama-range phone number each */
#define SEED_SALES_MAX 1000000
#define SEED_LINES_MAX 4

typedef struct seed_customer {
    char id[16];       /* C-0001 */
    char name[64];
    char phone[24];    /* +44 7700 900123 */
    char address[160]; /* 12 Harbour Street, Leith, Edinburgh EH6 6LA */
} seed_customer;

typedef struct seed_item {
    const char *sku;
    const char *name;
    int64_t price_cents;
} seed_item;

typedef struct seed_line {
    size_t item; /* index into the catalogue */
    int qty;     /* 1..3 */
} seed_line;

typedef struct seed_sale {
    char sale_id[16]; /* S-000001 */
    size_t customer;  /* index into customers */
    char time[21];    /* 2026-11-21T09:00:00Z, increasing */
    seed_line lines[SEED_LINES_MAX];
    size_t line_count; /* 1..4, distinct items */
    int64_t total_cents;
} seed_sale;

typedef struct seed_data {
    seed_customer *customers;
    size_t customer_count;
    const seed_item *items; /* the catalogue, static */
    size_t item_count;
    seed_sale *sales;
    size_t sale_count;
} seed_data;

/* Generates the data set; 0 on success, -1 for counts out of range (customers 1..SEED_CUSTOMERS_MAX, sales
 * 1..SEED_SALES_MAX) or no memory. */
int store_seed_generate(size_t customers, size_t sales, uint64_t seed, seed_data *out);
void store_seed_free(seed_data *d);

/* The catalogue, for the items table. */
const seed_item *store_seed_catalogue(size_t *count);

#endif
