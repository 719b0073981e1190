/* Publishing, answering and receiving sealed envelopes. Inputs are sealed to the compartment on the input's
 * topic; answers on the request's response topic with the request's id in their provenance. Received
 * envelopes are held until the compartment is verified, then opened (only the compartment may send),
 * deduplicated by message id and handed to on_message. Payloads are cleansed after use and never logged. */
#include <stdlib.h>
#include <string.h>

#include <mqtt_protocol.h>

#include "service_internal.h"

/* ---- receiving ---- */

static void held_clear(svc_held *h)
{
    free(h->topic);
    free(h->data);
    free(h->correlation);
    memset(h, 0, sizeof *h);
}

void svc_held_free(idevs_service *svc)
{
    for (size_t i = 0; i < svc->held_count; i++)
        held_clear(&svc->held[i]);
    free(svc->held);
    svc->held = NULL;
    svc->held_count = svc->held_cap = svc->held_bytes = 0;
}

static void hold(idevs_service *svc, const char *topic, const uint8_t *data, size_t len, const uint8_t *corr,
                 size_t corr_len)
{
    /* Everything kept counts against the limit: correlation data (up to 64 KiB each, chosen by whoever
     * published) and the topic as much as the envelope. */
    size_t topic_len = strlen(topic) + 1;
    size_t room = SVC_HELD_BYTES_MAX - svc->held_bytes;
    if (svc->held_count == SVC_HELD_MAX || len > room || corr_len > room - len || topic_len > room - len - corr_len) {
        svc->stats.held_dropped++;
        return;
    }
    if (svc->held_count == svc->held_cap) { /* grows by doubling: a restarted service may hold its whole backlog */
        size_t cap = svc->held_cap == 0 ? 64 : svc->held_cap * 2;
        svc_held *grown = realloc(svc->held, (cap < SVC_HELD_MAX ? cap : SVC_HELD_MAX) * sizeof *grown);
        if (grown == NULL) {
            svc->stats.held_dropped++;
            return;
        }
        svc->held = grown;
        svc->held_cap = cap < SVC_HELD_MAX ? cap : SVC_HELD_MAX;
    }
    svc_held *h = &svc->held[svc->held_count];
    h->topic = strdup(topic);
    h->data = malloc(len > 0 ? len : 1);
    h->correlation = corr_len > 0 ? malloc(corr_len) : NULL;
    if (h->topic == NULL || h->data == NULL || (corr_len > 0 && h->correlation == NULL)) {
        held_clear(h);
        svc->stats.held_dropped++;
        return;
    }
    memcpy(h->data, data, len);
    h->len = len;
    if (corr_len > 0)
        memcpy(h->correlation, corr, corr_len);
    h->correlation_len = corr_len;
    svc->held_count++;
    svc->held_bytes += len + corr_len + topic_len;
}

/* What a topic is for this service: an output or a request addressed to it, or nothing. */
static bool classify(const idevs_service *svc, const char *topic, idevs_service_kind *kind, const char **name,
                     const char **response_topic)
{
    const idevs_deployment *d = svc->deployment;
    for (size_t i = 0; i < d->output_count; i++)
        if (d->outputs[i].to == svc->self_index && strcmp(d->outputs[i].topic, topic) == 0) {
            *kind = IDEVS_SERVICE_OUTPUT;
            *name = d->outputs[i].name;
            *response_topic = NULL;
            return true;
        }
    for (size_t i = 0; i < d->request_count; i++)
        if (d->requests[i].to == svc->self_index && strcmp(d->requests[i].topic, topic) == 0) {
            *kind = IDEVS_SERVICE_REQUEST;
            *name = d->requests[i].name;
            *response_topic = d->requests[i].response_topic;
            return true;
        }
    return false;
}

static void open_and_deliver(idevs_service *svc, const char *topic, const uint8_t *data, size_t len,
                             const uint8_t *corr, size_t corr_len)
{
    idevs_service_kind kind;
    const char *name, *response_topic;
    if (!classify(svc, topic, &kind, &name, &response_topic))
        return; /* not (or no longer) one of this service's topics */
    idevs_opened opened;
    idevs_err err = idevs_envelope_open(svc->ctx, topic, data, len, &opened);
    if (err == IDEVS_ERR_REPLAY) {
        svc->stats.duplicates++;
        svc->stats.rejected_by_reason[IDEVS_ERR_REPLAY]++;
        return;
    }
    if (err != IDEVS_OK) {
        svc->stats.rejected++;
        if ((unsigned)err < IDEVS_ERR_COUNT)
            svc->stats.rejected_by_reason[err]++;
        return;
    }
    if (idevs_service_dedupe_seen(svc->dedupe, &opened.message_id)) {
        svc->stats.duplicates++;
        idevs_opened_clear(&opened);
        return;
    }
    idevs_service_message m = {
        .kind = kind,
        .name = name,
        .topic = topic,
        .payload = opened.payload,
        .payload_len = opened.payload_len,
        .message_id = opened.message_id,
        .provenance = opened.provenance,
        .provenance_count = opened.provenance_count,
        .response_topic = response_topic,
        .correlation = kind == IDEVS_SERVICE_REQUEST && corr_len > 0 ? corr : NULL,
        .correlation_len = kind == IDEVS_SERVICE_REQUEST ? corr_len : 0,
    };
    svc->stats.delivered++;
    if (svc->on_message != NULL)
        svc->on_message(svc, &m, svc->arg);
    idevs_opened_clear(&opened);
}

void svc_receive(idevs_service *svc, const char *topic, const uint8_t *data, size_t len, const uint8_t *correlation,
                 size_t correlation_len)
{
    if (svc == NULL || topic == NULL || (data == NULL && len > 0))
        return;
    if (svc->deployment != NULL) {
        idevs_service_kind kind;
        const char *name, *rt;
        if (!classify(svc, topic, &kind, &name, &rt))
            return;
    }
    svc->stats.received++;
    /* Held until the compartment is verified, and until idevs_service_start() has returned: a persistent
     * session's queued requests arrive during the start, when an answer could not be sent yet. */
    if (!svc->ready || svc->ctx == NULL || !svc->started) {
        hold(svc, topic, data, len, correlation, correlation_len);
        return;
    }
    open_and_deliver(svc, topic, data, len, correlation, correlation_len);
}

void svc_release_held(idevs_service *svc)
{
    if (!svc->started || svc->held_count == 0)
        return; /* the first idevs_service_run() after the start releases them */
    /* on_message may publish, which cannot add to the held queue; take it over first all the same. */
    svc_held *held = svc->held;
    size_t count = svc->held_count;
    svc->held = NULL;
    svc->held_count = svc->held_cap = svc->held_bytes = 0;
    for (size_t i = 0; i < count; i++) {
        if (svc->ready && svc->ctx != NULL)
            open_and_deliver(svc, held[i].topic, held[i].data, held[i].len, held[i].correlation,
                             held[i].correlation_len);
        held_clear(&held[i]);
    }
    free(held);
}

/* ---- sending ---- */

static idevs_err seal_and_publish(idevs_service *svc, const char *topic, int qos, const void *payload, size_t len,
                                  const idevs_msgid *provenance, size_t provenance_count, const uint8_t *corr,
                                  size_t corr_len, idevs_msgid *message_id)
{
    if (len > svc->deployment->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if (corr_len > UINT16_MAX)
        return IDEVS_ERR_INVALID_ARG;
    idevs_seal_input in = {
        .recipient = &svc->deployment->program,
        .topic = topic,
        .payload = payload,
        .payload_len = len,
        .provenance = provenance,
        .provenance_count = provenance_count,
    };
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_msgid id;
    idevs_err err = idevs_envelope_seal(svc->ctx, &in, &env, &env_len, &id);
    if (err == IDEVS_ERR_CERT_EXPIRED)
        svc_set_why(svc, "the compartment's certificate for process '%s' is past its notAfter: nothing is sealed "
                    "to it until the plugin publishes a renewed one", svc->process);
    if (err != IDEVS_OK)
        return err;
    mosquitto_property *props = NULL;
    if (corr_len > 0 &&
        mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, corr, (uint16_t)corr_len) != MOSQ_ERR_SUCCESS) {
        free(env);
        return IDEVS_ERR_NOMEM;
    }
    int mid = 0;
    int rc = env_len > INT32_MAX ? MOSQ_ERR_PAYLOAD_SIZE
                                 : mosquitto_publish_v5(svc->mosq, &mid, topic, (int)env_len, env, qos, false, props);
    mosquitto_property_free_all(&props);
    free(env);
    switch (rc) {
    case MOSQ_ERR_SUCCESS:
        svc->stats.published++;
        /* libmosquitto reports QoS 0 as written, QoS 1 and 2 when the broker answers: both by the packet id. */
        if (svc_outstanding_add(svc, mid, &id) != IDEVS_OK)
            svc->stats.untracked++;
        if (message_id != NULL)
            *message_id = id;
        return IDEVS_OK;
    case MOSQ_ERR_NOMEM:
        return IDEVS_ERR_NOMEM;
    case MOSQ_ERR_PAYLOAD_SIZE:
    case MOSQ_ERR_OVERSIZE_PACKET:
        return IDEVS_ERR_TOO_LARGE;
    case MOSQ_ERR_NO_CONN:
        return IDEVS_ERR_NOT_NOW;
    default:
        return IDEVS_ERR_BROKER;
    }
}

idevs_err idevs_service_publish(idevs_service *svc, const char *input, const void *payload, size_t len,
                                idevs_msgid *message_id)
{
    if (svc == NULL || input == NULL || (payload == NULL && len > 0))
        return IDEVS_ERR_INVALID_ARG;
    if (!idevs_service_ready(svc))
        return IDEVS_ERR_NOT_NOW;
    const idevs_deployment *d = svc->deployment;
    for (size_t i = 0; i < d->input_count; i++)
        if (d->inputs[i].from == svc->self_index && strcmp(d->inputs[i].name, input) == 0)
            return seal_and_publish(svc, d->inputs[i].topic, SVC_INPUT_QOS, payload, len, NULL, 0, NULL, 0,
                                    message_id);
    return IDEVS_ERR_UNKNOWN_INPUT;
}

idevs_err idevs_service_respond(idevs_service *svc, const idevs_service_message *request, const void *payload,
                                size_t len)
{
    if (svc == NULL || request == NULL || request->response_topic == NULL || (payload == NULL && len > 0) ||
        (request->correlation == NULL && request->correlation_len > 0))
        return IDEVS_ERR_INVALID_ARG;
    if (!idevs_service_ready(svc))
        return IDEVS_ERR_NOT_NOW;
    const idevs_deployment_request *r =
        idevs_deployment_request_by_response_topic(svc->deployment, request->response_topic);
    if (r == NULL || r->to != svc->self_index)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    /* The answer names its request in the authenticated provenance: that, not the MQTT correlation data the
     * broker could swap, is how the compartment matches it to the request. */
    if (idevs_uuid_is_nil(&request->message_id))
        return IDEVS_ERR_INVALID_ARG;
    /* The descriptor gives the exchange one QoS, the request's: the answer travels at it too. */
    return seal_and_publish(svc, r->response_topic, r->qos, payload, len, &request->message_id, 1,
                            request->correlation, request->correlation_len, NULL);
}
