#include "idevs_uuid.h"

#include <string.h>
#include <uuid/uuid.h>

_Static_assert(sizeof(uuid_t) == IDEVS_UUID_LEN, "libuuid's uuid_t is 16 bytes");

void idevs_uuid_generate(idevs_uuid *out)
{
    uuid_generate_random(out->b);
}

idevs_err idevs_uuid_parse(const char *text, idevs_uuid *out)
{
    if (text == NULL || out == NULL || strlen(text) != IDEVS_UUID_STR_LEN - 1)
        return IDEVS_ERR_INVALID_ARG;
    return uuid_parse(text, out->b) == 0 ? IDEVS_OK : IDEVS_ERR_INVALID_ARG;
}

void idevs_uuid_format(const idevs_uuid *uuid, char out[IDEVS_UUID_STR_LEN])
{
    uuid_unparse_lower(uuid->b, out);
}

bool idevs_uuid_equal(const idevs_uuid *a, const idevs_uuid *b)
{
    return memcmp(a->b, b->b, IDEVS_UUID_LEN) == 0;
}

bool idevs_uuid_is_nil(const idevs_uuid *uuid)
{
    return uuid_is_null(uuid->b) != 0;
}
