/* The numbered message ids a receiver handled; see idevs_handled.h. */
#include "idevs_handled.h"

#include "idevs_receipt.h"

static const idevs_handled_stream *find(const idevs_handled *h, uint64_t stream)
{
    if (h->latest.used && h->latest.stream == stream)
        return &h->latest;
    if (h->previous.used && h->previous.stream == stream)
        return &h->previous;
    return NULL;
}

idevs_err idevs_handled_check(const idevs_handled *h, const idevs_msgid *id)
{
    uint64_t number = idevs_msgid_number(id);
    const idevs_handled_stream *s = number != 0 ? find(h, idevs_msgid_stream(id)) : NULL;
    return s != NULL ? idevs_replay_check(&s->window, number) : IDEVS_OK;
}

void idevs_handled_note(idevs_handled *h, const idevs_msgid *id)
{
    uint64_t stream = idevs_msgid_stream(id), number = idevs_msgid_number(id);
    if (number == 0)
        return; /* not numbered: its sender never sends it again */
    idevs_handled_stream *s = (idevs_handled_stream *)find(h, stream);
    if (s == NULL) {
        if (h->latest.used)
            h->previous = h->latest;
        h->latest.used = true;
        h->latest.stream = stream;
        idevs_replay_init(&h->latest.window);
        s = &h->latest;
    }
    (void)idevs_replay_accept(&s->window, number);
}

bool idevs_handled_valid(const idevs_handled *h)
{
    return !h->previous.used || (h->latest.used && h->previous.stream != h->latest.stream);
}
