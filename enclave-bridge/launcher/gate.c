/* The keyless gate: everything about an envelope that can be checked without a key, in one place, with one
 * decoding of its clear header, before it costs the compartment anything. The plugin makes none of these
 * decisions; it only reports the status (counted and logged by reason). */
#include <string.h>

#include "idevs_envelope.h"
#include "launcher_internal.h"

/* The service that may write on topic: the input's sender, or the service a request was sent to. */
static bool declared_sender(const idevs_deployment *d, const char *topic, size_t *sender)
{
    const idevs_deployment_input *in = idevs_deployment_input_by_topic(d, topic);
    if (in != NULL) {
        *sender = in->from;
        return true;
    }
    const idevs_deployment_request *rq = idevs_deployment_request_by_response_topic(d, topic);
    if (rq != NULL) {
        *sender = rq->to;
        return true;
    }
    return false;
}

idevs_err gate_check(const idevs_launcher *l, const char *topic, const uint8_t *envelope, size_t len, delivery *d)
{
    size_t sender = 0;
    if (!declared_sender(l->deployment, topic, &sender))
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
    d->epoch = h.epoch;
    d->sequence = h.sequence;
    return replay_record_check(l, d);
}
