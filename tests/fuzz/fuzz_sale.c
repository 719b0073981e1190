/* The store's sale as the integration logics read it (services/sale/sale.c, json_in.c, money.c): an input
 * from a service, read inside the compartment. The payload arrives NUL-terminated, as the compartment hands it.
 * For every input: a refusal is IDEVS_ERR_MALFORMED and leaves the record cleansed (it may have held a name,
 * a phone number, an address); an accepted sale has every field NUL-terminated, valid UTF-8 and within its
 * bound, a first name that begins the name, 1..SALE_ITEMS_MAX items and a total that is not negative. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_utf8.h"
#include "sale.h"

static void field_ok(const char *s, size_t max)
{
    size_t len = strnlen(s, max + 1);
    FUZZ_CHECK(len <= max);
    FUZZ_CHECK(idevs_utf8_valid((const uint8_t *)s, len));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_strndup(data, size);
    if (text == NULL)
        return 0;
    sale_record rec;
    memset(&rec, 0xa5, sizeof rec); /* so that a field left unwritten shows */
    idevs_err err = sale_parse(text, size, &rec);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_MALFORMED);
        FUZZ_CHECK(fuzz_all_zero(&rec, sizeof rec));
    } else {
        field_ok(rec.sale_id, SALE_REF_MAX);
        field_ok(rec.time, SALE_TIME_LEN);
        field_ok(rec.customer_id, SALE_REF_MAX);
        field_ok(rec.name, SALE_NAME_MAX);
        field_ok(rec.first_name, SALE_FIRST_NAME_MAX);
        field_ok(rec.phone, SALE_PHONE_MAX);
        field_ok(rec.address, SALE_ADDRESS_MAX);
        FUZZ_CHECK(strncmp(rec.name, rec.first_name, strlen(rec.first_name)) == 0);
        FUZZ_CHECK(rec.item_count >= 1 && rec.item_count <= SALE_ITEMS_MAX);
        FUZZ_CHECK(rec.total_cents >= 0);
        sale_cleanse(&rec);
        FUZZ_CHECK(fuzz_all_zero(&rec, sizeof rec));
    }
    free(text);
    return 0;
}
