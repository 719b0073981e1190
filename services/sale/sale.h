/* The store's sale (docs/CASESTUDY.md, "sale"), read strictly: shared by every integration process that takes
 * the store's sales (rewards, loyalty), so that they all accept exactly the same sales.
 *
 * A sale is refused unless it is one JSON object with exactly sale_id, time, customer {id, name, phone,
 * address}, items [{sku, name, qty, price}] and total, each once and of its type (json_in.h), the names and
 * address within the bounds below, 1 to SALE_ITEMS_MAX items with qty 1 to SALE_QTY_MAX, and total equal to
 * the sum of qty x price in cents. */
#ifndef SALE_SALE_H
#define SALE_SALE_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"
#include "json_in.h"

#define SALE_REF_MAX JSON_IN_REF_MAX /* sale_id, customer id, sku */
#define SALE_TIME_LEN JSON_IN_TIME_LEN
#define SALE_NAME_MAX 128 /* customer and item names */
#define SALE_FIRST_NAME_MAX 64
#define SALE_PHONE_MAX 32
#define SALE_ADDRESS_MAX 256
#define SALE_ITEMS_MAX 100
#define SALE_QTY_MAX 1000

typedef struct sale_record {
    char sale_id[SALE_REF_MAX + 1];
    char time[SALE_TIME_LEN + 1];
    char customer_id[SALE_REF_MAX + 1];
    char name[SALE_NAME_MAX + 1];
    char first_name[SALE_FIRST_NAME_MAX + 1]; /* up to the first space, cut on a character boundary */
    char phone[SALE_PHONE_MAX + 1];
    char address[SALE_ADDRESS_MAX + 1];
    int64_t total_cents;
    size_t item_count;
} sale_record;

/* text[0..len) with text[len] == '\0' (the compartment hands payloads that way). IDEVS_ERR_MALFORMED for
 * anything the format does not allow; on failure *out is cleansed. */
idevs_err sale_parse(const char *text, size_t len, sale_record *out);

/* Overwrites the whole record: it holds a name, a phone number and an address. */
void sale_cleanse(sale_record *s);

#endif
