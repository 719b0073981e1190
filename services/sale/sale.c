/* Strict reading of the store's sale; see sale.h. */
#include "sale.h"

#include <string.h>

#include "money.h"

void sale_cleanse(sale_record *s)
{
    explicit_bzero(s, sizeof *s);
}

static void first_name_of(const char *name, char *out)
{
    size_t n = 0;
    while (name[n] != '\0' && name[n] != ' ')
        n++;
    if (n > SALE_FIRST_NAME_MAX) {
        n = SALE_FIRST_NAME_MAX;
        while (n > 0 && ((unsigned char)name[n] & 0xc0) == 0x80)
            n--; /* not in the middle of a character */
    }
    memcpy(out, name, n);
    out[n] = '\0';
}

static int parse_items(const cJSON *items, int64_t *sum, size_t *count)
{
    static const char *const item_keys[] = {"sku", "name", "qty", "price"};
    int n = cJSON_GetArraySize(items);
    if (!cJSON_IsArray(items) || n < 1 || n > SALE_ITEMS_MAX)
        return 0;
    *sum = 0;
    for (const cJSON *it = items->child; it != NULL; it = it->next) {
        int64_t qty = 0, price = 0, line = 0;
        if (!json_in_keys_exactly(it, item_keys, 4) || !json_in_string(it, "sku", JSON_IN_REF, NULL, SALE_REF_MAX) ||
            !json_in_string(it, "name", JSON_IN_TEXT, NULL, SALE_NAME_MAX) ||
            !json_in_whole(it, "qty", 1, SALE_QTY_MAX, &qty) || !json_in_money(it, "price", &price) ||
            !money_times(price, qty, &line) || !money_add(*sum, line, sum))
            return 0;
    }
    *count = (size_t)n;
    return 1;
}

idevs_err sale_parse(const char *text, size_t len, sale_record *out)
{
    static const char *const sale_keys[] = {"sale_id", "time", "customer", "items", "total"};
    static const char *const customer_keys[] = {"id", "name", "phone", "address"};
    sale_cleanse(out);
    cJSON *j = json_in_parse_object(text, len);
    if (j == NULL)
        return IDEVS_ERR_MALFORMED;
    const cJSON *customer = cJSON_GetObjectItemCaseSensitive(j, "customer");
    int64_t sum = 0;
    int ok = json_in_keys_exactly(j, sale_keys, 5) &&
             json_in_string(j, "sale_id", JSON_IN_REF, out->sale_id, SALE_REF_MAX) &&
             json_in_string(j, "time", JSON_IN_TIME, out->time, SALE_TIME_LEN) &&
             json_in_keys_exactly(customer, customer_keys, 4) &&
             json_in_string(customer, "id", JSON_IN_REF, out->customer_id, SALE_REF_MAX) &&
             json_in_string(customer, "name", JSON_IN_TEXT, out->name, SALE_NAME_MAX) &&
             json_in_string(customer, "phone", JSON_IN_PHONE, out->phone, SALE_PHONE_MAX) &&
             json_in_string(customer, "address", JSON_IN_TEXT, out->address, SALE_ADDRESS_MAX) &&
             parse_items(cJSON_GetObjectItemCaseSensitive(j, "items"), &sum, &out->item_count) &&
             json_in_money(j, "total", &out->total_cents) && sum == out->total_cents && out->name[0] != ' ';
    json_in_delete(j);
    if (!ok) {
        sale_cleanse(out);
        return IDEVS_ERR_MALFORMED;
    }
    first_name_of(out->name, out->first_name);
    return IDEVS_OK;
}
