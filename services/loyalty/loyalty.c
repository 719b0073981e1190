/* The loyalty integration logic of docs/CASESTUDY.md, run in the compartment (enclave-bridge/idevs_logic.h).
 *
 *   input "sales"     a sale from the store, read as strictly as rewards reads it (services/sale); a sale
 *                     worth at least one point yields output "points" to the points service with only the
 *                     customer id, the sale id and the points: one per whole unit of the total
 *
 * Configuration: the descriptor's process.config must be empty ({}); there is nothing to set, and a key
 * would be a setting the operator believes in but the logic ignores.
 *
 * A malformed sale ends the handler with an error, and so does a total worth more than LOYALTY_POINTS_MAX
 * points: nothing leaves, and the logic counts it. A sale under 1.00 earns nothing and emits nothing. Money is
 * integer cents, never floating point. */
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "award.h"
#include "idevs_logic.h"
#include "sale.h"

typedef struct loyalty {
    /* counters: what the logic awarded, passed over and refused */
    uint64_t sales, awards, pointless, malformed_sales, too_large;
} loyalty;

static idevs_err on_sale(idevs_logic *lg, const idevs_message *msg, void *state)
{
    loyalty *l = state;
    sale_record sale;
    l->sales++;
    if (sale_parse((const char *)msg->payload, msg->payload_len, &sale) != IDEVS_OK) {
        l->malformed_sales++;
        return IDEVS_ERR_MALFORMED;
    }
    int64_t points = loyalty_points(sale.total_cents);
    idevs_err err = IDEVS_OK;
    if (points < 0) {
        l->too_large++;
        err = IDEVS_ERR_TOO_LARGE;
    } else if (points == 0) {
        l->pointless++;
    } else {
        char out[LOYALTY_OUT_MAX];
        size_t n = loyalty_write_award(&sale, points, out, sizeof out);
        err = n > 0 ? idevs_emit(lg, "points", out, n) : IDEVS_ERR_TOO_LARGE;
        if (err == IDEVS_OK)
            l->awards++;
    }
    sale_cleanse(&sale);
    return err;
}

/* Only an empty object: see the comment at the top. */
static idevs_err configure(const char *config_json)
{
    cJSON *j = cJSON_Parse(config_json != NULL ? config_json : "{}");
    idevs_err err = cJSON_IsObject(j) && j->child == NULL ? IDEVS_OK : IDEVS_ERR_CONFIG;
    cJSON_Delete(j);
    return err;
}

static idevs_err setup(idevs_logic *lg, const char *config_json, void **state)
{
    loyalty *l = calloc(1, sizeof *l);
    if (l == NULL)
        return IDEVS_ERR_NOMEM;
    *state = l;
    idevs_err err = configure(config_json);
    if (err == IDEVS_OK)
        err = idevs_on_input(lg, "sales", on_sale);
    return err;
}

static void teardown(void *state)
{
    free(state);
}

__attribute__((visibility("default"))) const idevs_logic_module idevs_logic_entry = {IDEVS_LOGIC_ABI, "loyalty", setup, teardown};
