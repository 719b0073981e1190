/* The keyless gate: everything about an envelope that can be checked without a key, in one place, with one
 * decoding of its clear header, before it costs the compartment anything. The plugin makes none of these
 * decisions; it only reports the status (counted and logged by reason). */
#include <string.h>

#include "idevs_envelope.h"
#include "launcher_internal.h"

idevs_err gate_check(const idevs_launcher *l, const char *topic, const uint8_t *envelope, size_t len, delivery *d)
{
    size_t sender = 0;
    const char *own_copy = NULL;
    if (topics_incoming(l->deployment, topic, &own_copy, &sender) == IDEVS_TOPIC_OTHER)
        return IDEVS_ERR_UNKNOWN_INPUT;
    if (len > l->max_envelope)
        return IDEVS_ERR_TOO_LARGE;
    idevs_envelope_header h;
    idevs_err err = idevs_envelope_peek(envelope, len, &h);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_uuid_equal(&h.recipient, &l->program))
        return IDEVS_ERR_WRONG_RECIPIENT;
    if (!idevs_uuid_equal(&h.sender, &l->deployment->services[sender].uuid))
        return IDEVS_ERR_SENDER_NOT_ALLOWED;
    d->tracked = true;
    d->sender = sender;
    d->instance = h.instance;
    d->epoch = h.epoch;
    d->sequence = h.sequence;
    d->message_id = h.message_id;
    return replay_record_check(l, d);
}
