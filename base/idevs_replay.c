#include "idevs_replay.h"

#include <string.h>

_Static_assert(IDEVS_REPLAY_WINDOW % 64u == 0 && (IDEVS_REPLAY_WINDOW & (IDEVS_REPLAY_WINDOW - 1u)) == 0,
               "the window must be a power of two and a multiple of 64");

#define BIT_MASK ((uint64_t)IDEVS_REPLAY_WINDOW - 1u)

void idevs_replay_init(idevs_replay *w)
{
    memset(w, 0, sizeof *w);
}

static inline int is_set(const idevs_replay *w, uint64_t seq)
{
    uint64_t pos = seq & BIT_MASK;
    return (int)((w->bits[pos >> 6] >> (pos & 63u)) & 1u);
}

idevs_err idevs_replay_check(const idevs_replay *w, uint64_t seq)
{
    if (seq == 0)
        return IDEVS_ERR_OUTSIDE_WINDOW;
    if (seq > w->top)
        return IDEVS_OK;
    if (w->top - seq >= IDEVS_REPLAY_WINDOW)
        return IDEVS_ERR_OUTSIDE_WINDOW;
    return is_set(w, seq) ? IDEVS_ERR_REPLAY : IDEVS_OK;
}

/* Clears the bits of the count sequence numbers following w->top (count < W): they belonged to numbers W
 * lower, which leave the window as the top moves up. At most W/64 + 1 words are touched. */
static void clear_after_top(idevs_replay *w, uint64_t count)
{
    uint64_t pos = (w->top + 1u) & BIT_MASK;
    while (count > 0) {
        uint64_t off = pos & 63u;
        uint64_t n = 64u - off;
        if (n > count)
            n = count;
        uint64_t mask = n == 64u ? ~(uint64_t)0 : (((uint64_t)1 << n) - 1u) << off;
        w->bits[pos >> 6] &= ~mask;
        pos = (pos + n) & BIT_MASK;
        count -= n;
    }
}

idevs_err idevs_replay_accept(idevs_replay *w, uint64_t seq)
{
    idevs_err err = idevs_replay_check(w, seq);
    if (err != IDEVS_OK)
        return err;
    if (seq > w->top) {
        uint64_t diff = seq - w->top;
        if (diff >= IDEVS_REPLAY_WINDOW)
            memset(w->bits, 0, sizeof w->bits);
        else
            clear_after_top(w, diff);
        w->top = seq;
    }
    uint64_t pos = seq & BIT_MASK;
    w->bits[pos >> 6] |= (uint64_t)1 << (pos & 63u);
    return IDEVS_OK;
}

bool idevs_instance_older(uint64_t epoch, uint32_t instance, uint64_t than_epoch, uint32_t than_instance)
{
    return epoch < than_epoch || (epoch == than_epoch && instance < than_instance);
}
