/* Publishing, answering and receiving sealed envelopes. Inputs are sealed to the compartment on the input's
 * topic; answers on the request's response topic with the request's id in their provenance. Received
 * envelopes are held until the compartment is verified, then opened (only the compartment may send),
 * deduplicated by message id and handed to on_message. Payloads are cleansed after use and never logged. */
#include <stdio.h>
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

/* The process's receipts to this service: not messages for on_message (kind 0). */
static bool is_receipt_topic(const idevs_service *svc, const char *topic)
{
    return strcmp(svc->deployment->services[svc->self_index].receipt_topic, topic) == 0;
}

/* What a topic is for this service: an output or a request addressed to it, its receipts, or nothing. */
static bool classify(const idevs_service *svc, const char *topic, idevs_service_kind *kind, const char **name,
                     const char **response_topic)
{
    const idevs_deployment *d = svc->deployment;
    if (is_receipt_topic(svc, topic)) {
        *kind = 0;
        *name = NULL;
        *response_topic = NULL;
        return true;
    }
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
        /* The process sent the same envelope again: its receipt was lost. The clear id is not authenticated
         * here, but a receipt only ever names an id this service did handle. */
        idevs_envelope_header h;
        if (kind != 0 && idevs_envelope_peek(data, len, &h) == IDEVS_OK && svc_seen_before(svc, &h.message_id))
            svc_receipt_note(svc, &h.message_id);
        return;
    }
    if (err != IDEVS_OK) {
        svc->stats.rejected++;
        if ((unsigned)err < IDEVS_ERR_COUNT)
            svc->stats.rejected_by_reason[err]++;
        return;
    }
    if (kind == 0) { /* a receipt: idempotent, never deduplicated nor handed to on_message */
        svc_outbox_receipt(svc, opened.payload, opened.payload_len);
        idevs_opened_clear(&opened);
        return;
    }
    if (svc_seen_before(svc, &opened.message_id)) {
        svc->stats.duplicates++;
        svc_receipt_note(svc, &opened.message_id); /* handled before: receipted again */
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
    /* Noted in memory before on_message runs: a message on_message publishes from (an answer) is not run twice
     * should a copy arrive meanwhile. Noted in the file (an answer's request with the answer) and receipted once
     * on_message returned: what it stored is stored. Noted in the file first, a service killed while on_message
     * ran would take the copy the process sends again for handled, and what on_message had not done yet (an
     * answer) would never be done. */
    svc_seen_remember(svc, &opened.message_id);
    if (svc->on_message != NULL)
        svc->on_message(svc, &m, svc->arg);
    svc_seen_note(svc, &opened.message_id);
    svc_receipt_note(svc, &m.message_id);
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

/* The MQTT 5 properties of a publication: its correlation data, and an input's partition in decimal. A partition
 * past a redeployment's smaller process.partitions is left out: the broker would read it as none anyway. */
static idevs_err publish_properties(const idevs_service *svc, const uint8_t *corr, size_t corr_len,
                                    int32_t partition, mosquitto_property **props)
{
    if (corr_len > 0 &&
        mosquitto_property_add_binary(props, MQTT_PROP_CORRELATION_DATA, corr, (uint16_t)corr_len) != MOSQ_ERR_SUCCESS)
        return IDEVS_ERR_NOMEM;
    if (partition >= 0 && (uint32_t)partition < svc->deployment->partitions) {
        char text[16];
        snprintf(text, sizeof text, "%d", (int)partition);
        if (mosquitto_property_add_string_pair(props, MQTT_PROP_USER_PROPERTY, IDEVS_PARTITION_PROPERTY, text) !=
            MOSQ_ERR_SUCCESS)
            return IDEVS_ERR_NOMEM;
    }
    return IDEVS_OK;
}

static idevs_err seal_and_publish(idevs_service *svc, const char *topic, int qos, uint32_t pad, const void *payload,
                                  size_t len, const idevs_msgid *provenance, size_t provenance_count,
                                  const uint8_t *corr, size_t corr_len, int32_t partition,
                                  const idevs_msgid *message_id)
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
        .message_id = message_id,
        .pad = pad,
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
    if (publish_properties(svc, corr, corr_len, partition, &props) != IDEVS_OK) {
        mosquitto_property_free_all(&props);
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

/* The declared input of this service named input; NULL when there is none. */
static const idevs_deployment_input *own_input(const idevs_service *svc, const char *input)
{
    const idevs_deployment *d = svc->deployment;
    for (size_t i = 0; i < d->input_count; i++)
        if (d->inputs[i].from == svc->self_index && strcmp(d->inputs[i].name, input) == 0)
            return &d->inputs[i];
    return NULL;
}

idevs_err svc_send_receipt(idevs_service *svc, const uint8_t *payload, size_t len)
{
    return seal_and_publish(svc, svc->deployment->services[svc->self_index].receipt_from_topic, 1, IDEVS_PAD_POW2,
                            payload, len, NULL, 0, NULL, 0, SVC_NO_PARTITION, NULL);
}

idevs_err svc_send_input(idevs_service *svc, const char *input, int32_t partition, const void *payload, size_t len,
                         const idevs_msgid *id)
{
    const idevs_deployment_input *in = own_input(svc, input);
    if (in == NULL)
        return IDEVS_ERR_UNKNOWN_INPUT; /* a redeployment took it away: it waits in the outbox */
    return seal_and_publish(svc, in->topic, SVC_INPUT_QOS, in->pad, payload, len, NULL, 0, NULL, 0, partition, id);
}

idevs_err svc_send_answer(idevs_service *svc, const char *response_topic, const idevs_msgid *request,
                          const uint8_t *corr, size_t corr_len, const void *payload, size_t len, const idevs_msgid *id)
{
    const idevs_deployment_request *r = idevs_deployment_request_by_response_topic(svc->deployment, response_topic);
    if (r == NULL || r->to != svc->self_index)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    /* The descriptor gives the exchange one QoS, the request's: the answer travels at it too. */
    return seal_and_publish(svc, r->response_topic, r->qos, r->pad, payload, len, request, 1, corr, corr_len,
                            SVC_NO_PARTITION, id);
}

#define SVC_KEY_MAX 256

idevs_err idevs_service_publish_with(idevs_service *svc, const char *input, const idevs_publish_options *opts,
                                     const void *payload, size_t len, idevs_msgid *message_id)
{
    static const idevs_publish_options none = {0};
    if (opts == NULL)
        opts = &none;
    const char *key = opts->key;
    if (svc == NULL || input == NULL || (payload == NULL && len > 0) ||
        (key != NULL && (key[0] == '\0' || strnlen(key, SVC_KEY_MAX + 1) > SVC_KEY_MAX)) ||
        (opts->partition_key == NULL && opts->partition_key_len > 0))
        return IDEVS_ERR_INVALID_ARG;
    if (!idevs_service_ready(svc))
        return IDEVS_ERR_NOT_NOW;
    if (own_input(svc, input) == NULL)
        return IDEVS_ERR_UNKNOWN_INPUT;
    if (len > svc->deployment->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    /* The key may be customer data: only its partition is kept and sent. */
    int32_t partition = opts->partition_key == NULL
                            ? SVC_NO_PARTITION
                            : (int32_t)idevs_deployment_partition(svc->deployment, opts->partition_key,
                                                                  opts->partition_key_len);
    return svc_outbox_add(svc, 0, input, key, partition, payload, len, NULL, NULL, 0, message_id);
}

idevs_err idevs_service_publish_keyed(idevs_service *svc, const char *input, const char *key, const void *payload,
                                      size_t len, idevs_msgid *message_id)
{
    const idevs_publish_options opts = {.key = key};
    return idevs_service_publish_with(svc, input, &opts, payload, len, message_id);
}

idevs_err idevs_service_publish(idevs_service *svc, const char *input, const void *payload, size_t len,
                                idevs_msgid *message_id)
{
    return idevs_service_publish_with(svc, input, NULL, payload, len, message_id);
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
    if (len > svc->deployment->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if (request->correlation_len > UINT16_MAX)
        return IDEVS_ERR_INVALID_ARG;
    return svc_outbox_add(svc, 1, r->response_topic, NULL, SVC_NO_PARTITION, payload, len, &request->message_id,
                          request->correlation, request->correlation_len, NULL);
}
