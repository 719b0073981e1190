#include "vector_random.h"

#include <string.h>

idevs_err vector_from_queue(void *arg, uint8_t *buf, size_t len)
{
    vector_queue *q = arg;
    if (q->next >= q->n || q->len[q->next] != len)
        return IDEVS_ERR_INVALID_ARG;
    memcpy(buf, q->item[q->next++], len);
    return IDEVS_OK;
}

static uint64_t fixed_clock(void *arg)
{
    return *(const uint64_t *)arg;
}

void vector_options(idevs_envelope_options *o, uint32_t suite, uint64_t *clock_ms)
{
    idevs_envelope_options_default(o);
    o->suite = suite;
    o->clock_ms = fixed_clock;
    o->clock_arg = clock_ms;
}
