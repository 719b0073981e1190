/* Routing: a client's message on a process's input or response topic goes to that process's launcher, which
 * gates and queues it; what a compartment publishes goes back to the broker. The MESSAGE callback never
 * consumes an input (the message also reaches ordinary subscribers, and the publisher gets a normal
 * acknowledgement) and waits for the compartment's outputs, so that they leave in the same loop iteration when
 * the compartment is quick: at most poll_budget_ms per process and loop iteration, and poll_budget_ms per loop
 * iteration for all processes together, so that a slow or hung process spends its own budget and never
 * another's, and many processes never add up to a long wait on the broker's thread. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mqtt_protocol.h>

#include "idevs_deployment.h"
#include "idevs_plugin.h"

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

bool idevs_routing_publish(idevs_process *proc, const char *topic, const void *payload, size_t len, int qos,
                           bool retain, mosquitto_property *properties)
{
    if (len > INT32_MAX) {
        mosquitto_property_free_all(&properties);
        proc->metrics.publish_failed++;
        return false;
    }
    void *copy = NULL;
    if (len > 0) {
        if ((copy = mosquitto_malloc(len)) == NULL) {
            mosquitto_property_free_all(&properties);
            proc->metrics.publish_failed++;
            return false;
        }
        memcpy(copy, payload, len);
    }
    /* The broker takes ownership of the payload and the properties on success only. */
    int rc = mosquitto_broker_publish(NULL, topic, (int)len, copy, qos, retain, properties);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_free(copy);
        mosquitto_property_free_all(&properties);
        proc->metrics.publish_failed++;
        mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "'%s': the broker refused a publication on '%s': %s",
                             idevs_process_name(proc), topic, mosquitto_strerror(rc));
        return false;
    }
    return true;
}

/* ---- the launcher's callbacks ---- */

typedef struct done_watch {
    idevs_process *proc;
    uint64_t wait_for; /* 0: none */
    bool done;
    uint64_t events;   /* callbacks so far: a pass without any found nothing more to collect */
} done_watch;

static void on_publish(void *arg, const idevs_launcher_publish *pub)
{
    idevs_process *proc = ((done_watch *)arg)->proc;
    ((done_watch *)arg)->events++;
    mosquitto_property *props = NULL;
    if (pub->response_topic != NULL) {
        if (pub->correlation_len > UINT16_MAX ||
            mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, pub->response_topic) != MOSQ_ERR_SUCCESS ||
            (pub->correlation != NULL &&
             mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, pub->correlation,
                                           (uint16_t)pub->correlation_len) != MOSQ_ERR_SUCCESS)) {
            mosquitto_property_free_all(&props);
            proc->metrics.publish_failed++;
            mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot build the properties of a request on '%s'",
                                 idevs_process_name(proc), pub->topic);
            return;
        }
    }
    if (idevs_routing_publish(proc, pub->topic, pub->envelope, pub->envelope_len, pub->qos, false, props)) {
        if (pub->receipt)
            proc->metrics.receipts++;
        else
            proc->metrics.emitted++;
    }
}

static void on_done(void *arg, uint64_t delivery_id, idevs_err status)
{
    done_watch *w = arg;
    w->events++;
    if (idevs_rejections_is_receipt(w->proc, delivery_id)) {
        if (status == IDEVS_OK)
            w->proc->metrics.receipts_in++; /* a failed one is counted by its reason below */
    } else if (status == IDEVS_OK) {
        w->proc->metrics.done_ok++;
    } else {
        w->proc->metrics.done_failed++;
    }
    idevs_rejections_done(w->proc, delivery_id, status);
    if (w->wait_for != 0 && delivery_id == w->wait_for)
        w->done = true;
}

static void on_refused(void *arg, uint64_t delivery_id, size_t index, const char *code)
{
    idevs_rejections_refusal(((done_watch *)arg)->proc, delivery_id, index, code);
}

void idevs_routing_poll(idevs_process *proc, uint64_t wait_for)
{
    done_watch w = { proc, wait_for, false, 0 };
    const idevs_launcher_callbacks cb = { .on_publish = on_publish, .on_done = on_done, .arg = &w,
                                          .on_refused = on_refused };
    /* Whatever is ready, without waiting: passes while they bring something (at most 8; a pass that brings
     * nothing costs a read that finds nothing, on the broker's thread, for every message). */
    for (int i = 0; i < 8; i++) {
        uint64_t before = w.events;
        if (idevs_launcher_poll(proc->launcher, 0, &cb) != IDEVS_OK || (i > 0 && w.events == before))
            break;
    }
    idevs_plugin *p = proc->plugin;
    int64_t budget = proc->budget_left_us < p->loop_budget_left_us ? proc->budget_left_us : p->loop_budget_left_us;
    /* A large envelope moves only while the launcher is polled: while one is in transit, the budget keeps it
     * moving (on TICK as well), instead of a socket buffer's worth per loop iteration. */
    bool moving = wait_for == 0 && idevs_launcher_transferring(proc->launcher);
    if ((wait_for != 0 || moving) && budget > 0) {
        int64_t start = now_us(), deadline = start + budget;
        for (int64_t t = start; !w.done && t < deadline; t = now_us()) {
            if (wait_for == 0 && !idevs_launcher_transferring(proc->launcher))
                break;
            int ms = (int)((deadline - t + 999) / 1000);
            if (idevs_launcher_poll(proc->launcher, ms, &cb) != IDEVS_OK)
                break;
        }
        int64_t spent = now_us() - start;
        proc->budget_left_us = spent < proc->budget_left_us ? proc->budget_left_us - spent : 0;
        p->loop_budget_left_us = spent < p->loop_budget_left_us ? p->loop_budget_left_us - spent : 0;
    }
    if (proc->certificate_stale)
        idevs_process_publish_certificate(proc);
}

/* ---- MOSQ_EVT_MESSAGE ---- */

/* The value of the message's idevs-partition user property (docs/PROTOCOL.md, "Partitions"), the first one;
 * NULL when none. The broker's allocator's: mosquitto_free() it. */
static char *partition_of(const mosquitto_property *props)
{
    char *name = NULL, *value = NULL;
    const mosquitto_property *at = mosquitto_property_read_string_pair(props, MQTT_PROP_USER_PROPERTY, &name, &value,
                                                                       false);
    while (at != NULL) {
        bool found = strcmp(name, IDEVS_PARTITION_PROPERTY) == 0;
        mosquitto_free(name);
        if (found)
            return value;
        mosquitto_free(value);
        name = value = NULL;
        at = mosquitto_property_read_string_pair(at, MQTT_PROP_USER_PROPERTY, &name, &value, true);
    }
    return NULL;
}

int idevs_routing_on_message(int event, void *event_data, void *userdata)
{
    (void)event;
    idevs_plugin *p = userdata;
    struct mosquitto_evt_message *msg = event_data;
    if (msg->topic == NULL)
        return MOSQ_ERR_SUCCESS;
    idevs_topic_kind kind;
    const char *topic = NULL; /* the launcher's copy outlives the message: the log may name it later */
    idevs_process *proc = idevs_processes_find(p, msg->topic, &kind, &topic);
    if (proc == NULL)
        return MOSQ_ERR_SUCCESS;
    const char *client = msg->client != NULL ? mosquitto_client_id(msg->client) : NULL;
    bool protected = kind == IDEVS_TOPIC_PROTECTED || kind == IDEVS_TOPIC_JOIN;
    if (protected && idevs_guard_peer_may_publish(proc, msg->topic, msg->client)) {
        proc->metrics.from_peers++;
        /* Another broker's plugin asking for or granting the keys: the compartments check it (docs/SCALING.md). */
        if (kind == IDEVS_TOPIC_JOIN)
            (void)idevs_launcher_join_message(proc->launcher, msg->topic, msg->payload, msg->payloadlen);
        return MOSQ_ERR_SUCCESS;
    }
    if (protected) /* a grant's topic names a joiner: the launcher keeps no copy of it, and the log outlives msg */
        return idevs_guard_refuse_message(proc, topic != NULL ? topic : IDEVS_JOIN_GRANT_LOG, client, msg->payloadlen);
    bool receipt = kind == IDEVS_TOPIC_RECEIPT; /* counted apart: receipts_in */
    if (!receipt)
        proc->metrics.received++;
    void *corr = NULL;
    uint16_t corr_len = 0;
    (void)mosquitto_property_read_binary(msg->properties, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    char *partition = partition_of(msg->properties);
    uint64_t id = 0;
    idevs_err err = proc->retiring ? IDEVS_ERR_NOT_NOW
                                   : idevs_launcher_deliver_partitioned(proc->launcher, client, topic, msg->payload,
                                                                        msg->payloadlen, corr, corr_len, partition,
                                                                        &id);
    mosquitto_free(corr); /* allocated by the broker's allocator */
    mosquitto_free(partition);
    if (err != IDEVS_OK) {
        idevs_rejections_refused(proc, err, topic, client, msg->payloadlen);
        return MOSQ_ERR_SUCCESS; /* never consume: the publisher gets its normal acknowledgement */
    }
    if (!receipt)
        proc->metrics.routed++;
    idevs_rejections_note(proc, id, topic, client, msg->payloadlen);
    if (receipt)
        idevs_rejections_note_receipt(proc, id);
    idevs_routing_poll(proc, id);
    return MOSQ_ERR_SUCCESS;
}
