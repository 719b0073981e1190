/* Routing: envelopes from clients on declared input and response topics go to the compartment; what it
 * publishes goes back to the broker. The MESSAGE callback never consumes (the message also reaches ordinary
 * subscribers, and the publisher gets a normal acknowledgement) and waits at most poll_budget_ms for the
 * compartment's outputs, so that they leave in the same loop iteration when the compartment is quick. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mqtt_protocol.h>
#include <openssl/pem.h>

#include "idevs_envelope.h"
#include "idevs_hex.h"
#include "idevs_plugin.h"

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

bool idevs_routing_publish(idevs_plugin *p, const char *topic, const void *payload, size_t len, int qos,
                           bool retain, mosquitto_property *properties)
{
    if (len > INT32_MAX) {
        mosquitto_property_free_all(&properties);
        p->metrics.publish_failed++;
        return false;
    }
    void *copy = NULL;
    if (len > 0) {
        if ((copy = mosquitto_malloc(len)) == NULL) {
            mosquitto_property_free_all(&properties);
            p->metrics.publish_failed++;
            return false;
        }
        memcpy(copy, payload, len);
    }
    /* The broker takes ownership of the payload and the properties on success only. */
    int rc = mosquitto_broker_publish(NULL, topic, (int)len, copy, qos, retain, properties);
    if (rc != MOSQ_ERR_SUCCESS) {
        mosquitto_free(copy);
        mosquitto_property_free_all(&properties);
        p->metrics.publish_failed++;
        mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "'%s': the broker refused a publication on '%s': %s",
                             idevs_launcher_name(p->launcher), topic, mosquitto_strerror(rc));
        return false;
    }
    return true;
}

/* ---- the retained certificate and descriptor ---- */

static char *chain_pem(const idevs_launcher *l, size_t *out_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return NULL;
    size_t count = idevs_launcher_chain_count(l);
    bool ok = count > 0;
    for (size_t i = 0; ok && i < count; i++) {
        size_t len = 0;
        const uint8_t *der = idevs_launcher_chain_der(l, i, &len);
        const unsigned char *q = der;
        X509 *x = der != NULL && len <= LONG_MAX ? d2i_X509(NULL, &q, (long)len) : NULL;
        ok = x != NULL && PEM_write_bio_X509(bio, x) == 1;
        X509_free(x);
    }
    char *data = NULL;
    long n = ok ? BIO_get_mem_data(bio, &data) : 0;
    char *copy = n > 0 ? malloc((size_t)n) : NULL;
    if (copy != NULL) {
        memcpy(copy, data, (size_t)n);
        *out_len = (size_t)n;
    }
    BIO_free(bio);
    return copy;
}

static void publish_certificate(idevs_plugin *p)
{
    size_t len = 0;
    char *pem = chain_pem(p->launcher, &len);
    if (pem == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot encode the compartment's certificate chain",
                             idevs_launcher_name(p->launcher));
        return; /* stays stale: tried again after the next poll */
    }
    if (idevs_routing_publish(p, p->certificate_topic, pem, len, 1, true, NULL))
        p->certificate_stale = false;
    free(pem);
}

/* ---- the launcher's callbacks ---- */

static void on_event(void *arg, idevs_launcher_event event, const char *message)
{
    idevs_plugin *p = arg;
    int level = MOSQ_LOG_NOTICE;
    switch (event) {
    case IDEVS_LAUNCHER_EVENT_CERTIFIED:
        p->certificate_stale = true;
        if (p->certifications++ > 0)
            p->metrics.restarts++;
        level = MOSQ_LOG_INFO;
        break;
    case IDEVS_LAUNCHER_EVENT_EXITED:
    case IDEVS_LAUNCHER_EVENT_KILLED:
    case IDEVS_LAUNCHER_EVENT_START_FAILED:
    case IDEVS_LAUNCHER_EVENT_GIVEN_UP:
    case IDEVS_LAUNCHER_EVENT_WARNING:
        level = MOSQ_LOG_WARNING;
        break;
    default:
        break;
    }
    mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "%s", message);
}

typedef struct done_watch {
    idevs_plugin *p;
    uint64_t wait_for; /* 0: none */
    bool done;
    uint64_t events;   /* callbacks so far: a pass without any found nothing more to collect */
} done_watch;

static void on_publish(void *arg, const idevs_launcher_publish *pub)
{
    idevs_plugin *p = ((done_watch *)arg)->p;
    ((done_watch *)arg)->events++;
    mosquitto_property *props = NULL;
    if (pub->response_topic != NULL) {
        if (pub->correlation_len > UINT16_MAX ||
            mosquitto_property_add_string(&props, MQTT_PROP_RESPONSE_TOPIC, pub->response_topic) != MOSQ_ERR_SUCCESS ||
            (pub->correlation != NULL &&
             mosquitto_property_add_binary(&props, MQTT_PROP_CORRELATION_DATA, pub->correlation,
                                           (uint16_t)pub->correlation_len) != MOSQ_ERR_SUCCESS)) {
            mosquitto_property_free_all(&props);
            p->metrics.publish_failed++;
            mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot build the properties of a request on '%s'",
                                 idevs_launcher_name(p->launcher), pub->topic);
            return;
        }
    }
    if (idevs_routing_publish(p, pub->topic, pub->envelope, pub->envelope_len, pub->qos, false, props))
        p->metrics.emitted++;
}

static void on_done(void *arg, uint64_t delivery_id, idevs_err status)
{
    done_watch *w = arg;
    w->events++;
    if (status == IDEVS_OK)
        w->p->metrics.done_ok++;
    else
        w->p->metrics.done_failed++;
    idevs_rejections_done(w->p, delivery_id, status);
    if (w->wait_for != 0 && delivery_id == w->wait_for)
        w->done = true;
}

/* Does the launcher's pending work without waiting, then, until delivery wait_for (0: none) is done, waits for
 * it for at most budget_ms in all. */
void idevs_routing_poll(idevs_plugin *p, unsigned budget_ms, uint64_t wait_for)
{
    if (p->launcher == NULL)
        return;
    done_watch w = { p, wait_for, false, 0 };
    const idevs_launcher_callbacks cb = { .on_publish = on_publish, .on_done = on_done, .arg = &w };
    /* Whatever is ready, without waiting: passes while they bring something (at most 8; a pass that brings
     * nothing costs a read that finds nothing, on the broker's thread, for every message). */
    for (int i = 0; i < 8; i++) {
        uint64_t before = w.events;
        if (idevs_launcher_poll(p->launcher, 0, &cb) != IDEVS_OK || (i > 0 && w.events == before))
            break;
    }
    if (wait_for != 0 && budget_ms > 0) {
        uint64_t deadline = now_us() + (uint64_t)budget_ms * 1000u;
        for (uint64_t t = now_us(); !w.done && t < deadline; t = now_us()) {
            int ms = (int)((deadline - t + 999u) / 1000u);
            if (idevs_launcher_poll(p->launcher, ms, &cb) != IDEVS_OK)
                break;
        }
    }
    if (p->certificate_stale)
        publish_certificate(p);
}

/* ---- MOSQ_EVT_MESSAGE ---- */

/* The keyless checks of an envelope on a declared topic: size, structure (idevs_envelope_peek), addressed to
 * this compartment, from the service the descriptor accepts there. What they refuse never costs the
 * compartment anything; what they pass may still be forged, which only the compartment can tell. */
static idevs_err check_envelope(const idevs_plugin *p, const idevs_uuid *sender, const uint8_t *data, size_t len)
{
    if (len > p->max_envelope)
        return IDEVS_ERR_TOO_LARGE;
    idevs_envelope_header h;
    idevs_err err = idevs_envelope_peek(data, len, &h);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_uuid_equal(&h.recipient, idevs_launcher_program(p->launcher)))
        return IDEVS_ERR_WRONG_RECIPIENT;
    if (!idevs_uuid_equal(&h.sender, sender))
        return IDEVS_ERR_SENDER_NOT_ALLOWED;
    return IDEVS_OK;
}

int idevs_routing_on_message(int event, void *event_data, void *userdata)
{
    (void)event;
    idevs_plugin *p = userdata;
    struct mosquitto_evt_message *msg = event_data;
    if (p->launcher == NULL || msg->topic == NULL)
        return MOSQ_ERR_SUCCESS;
    const idevs_deployment *d = p->deployment;
    const idevs_deployment_input *in = idevs_deployment_input_by_topic(d, msg->topic);
    const idevs_deployment_request *rq = in == NULL ? idevs_deployment_request_by_response_topic(d, msg->topic) : NULL;
    if (in == NULL && rq == NULL)
        return MOSQ_ERR_SUCCESS;
    p->metrics.received++;
    /* The descriptor's copy of the topic outlives the message: the log may name it later. */
    const char *topic = in != NULL ? in->topic : rq->response_topic;
    const idevs_uuid *sender = &d->services[in != NULL ? in->from : rq->to].uuid;
    const char *client = msg->client != NULL ? mosquitto_client_id(msg->client) : NULL;

    idevs_err err = check_envelope(p, sender, msg->payload, msg->payloadlen);
    if (err != IDEVS_OK) {
        idevs_rejections_refused(p, err, topic, client, msg->payloadlen);
        return MOSQ_ERR_SUCCESS; /* never consume: the publisher gets its normal acknowledgement */
    }
    void *corr = NULL;
    uint16_t corr_len = 0;
    (void)mosquitto_property_read_binary(msg->properties, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    uint64_t id = 0;
    err = idevs_launcher_deliver(p->launcher, topic, msg->payload, msg->payloadlen, corr, corr_len, &id);
    mosquitto_free(corr); /* allocated by the broker's allocator */
    if (err != IDEVS_OK) {
        idevs_rejections_refused(p, err, topic, client, msg->payloadlen);
        return MOSQ_ERR_SUCCESS;
    }
    p->metrics.routed++;
    idevs_rejections_note(p, id, topic, client, msg->payloadlen);
    idevs_routing_poll(p, p->cfg.poll_budget_ms, id);
    return MOSQ_ERR_SUCCESS;
}

/* ---- MOSQ_EVT_RELOAD ---- */

#define DESCRIPTOR_READ_MAX (256u * 1024u) /* the descriptor's own limit (docs/DEPLOYMENT.md) */

/* Reads at most DESCRIPTOR_READ_MAX + 1 bytes of path: enough to tell it changed. Only a regular file: a FIFO
 * put in its place must not block the broker's thread. */
static uint8_t *read_descriptor(const char *path, size_t *len, int *error)
{
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        *error = fd < 0 ? errno : EINVAL;
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    FILE *f = fdopen(fd, "rb");
    if (f == NULL) {
        *error = errno;
        close(fd);
        return NULL;
    }
    uint8_t *buf = malloc(DESCRIPTOR_READ_MAX + 1);
    size_t n = buf != NULL ? fread(buf, 1, DESCRIPTOR_READ_MAX + 1, f) : 0;
    *error = buf == NULL ? ENOMEM : ferror(f) ? EIO : 0;
    fclose(f);
    if (*error != 0) {
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* Mosquitto 2.0.11 stops calling RELOAD callbacks, and skips reloading its own password and ACL files, at the
 * first that does not answer MOSQ_ERR_PLUGIN_DEFER: so this one always defers. */
int idevs_routing_on_reload(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data;
    idevs_plugin *p = userdata;
    if (p->launcher == NULL)
        return MOSQ_ERR_PLUGIN_DEFER;
    const char *name = p->deployment->name;
    int error = 0;
    size_t len = 0;
    uint8_t *bytes = read_descriptor(p->cfg.descriptor, &len, &error);
    uint8_t digest[IDEVS_SHA256_LEN];
    if (bytes == NULL) {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: cannot read the descriptor '%s': %s; the running "
                             "compartment keeps the descriptor it was started with",
                             name, p->cfg.descriptor, strerror(error));
    } else if (idevs_sha256(bytes, len, digest) != IDEVS_OK ||
               memcmp(digest, idevs_launcher_descriptor_digest(p->launcher), sizeof digest) != 0) {
        char now_hex[2 * IDEVS_SHA256_LEN + 1], run_hex[2 * IDEVS_SHA256_LEN + 1];
        idevs_hex_encode(digest, sizeof digest, now_hex);
        idevs_hex_encode(idevs_launcher_descriptor_digest(p->launcher), IDEVS_SHA256_LEN, run_hex);
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: the descriptor '%s' changed (SHA-256 %s, running "
                             "%s); the running compartment keeps the descriptor it was started with: restart the "
                             "broker to deploy the new one (its measurement, and so its certificate, change)",
                             name, p->cfg.descriptor, now_hex, run_hex);
    } else {
        mosquitto_log_printf(MOSQ_LOG_INFO, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: the descriptor is unchanged", name);
    }
    free(bytes);
    /* The retained copies must describe what runs: the bytes the running compartment was measured with. */
    (void)idevs_routing_publish(p, p->descriptor_topic, p->descriptor_bytes, p->descriptor_len, 1, true, NULL);
    p->certificate_stale = true;
    publish_certificate(p);
    mosquitto_log_printf(MOSQ_LOG_INFO, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: certificate and descriptor republished on "
                         "'%s' and '%s'; plugin_opt_* changes need a broker restart",
                         name, p->certificate_topic, p->descriptor_topic);
    return MOSQ_ERR_PLUGIN_DEFER;
}

/* ---- start and stop ---- */

static char *topic_for(const char *process, const char *what)
{
    size_t n = strlen("idevs/") + strlen(process) + 1 + strlen(what) + 1;
    char *t = malloc(n);
    if (t != NULL)
        snprintf(t, n, "idevs/%s/%s", process, what);
    return t;
}

static const char *topic_in_descriptor(const idevs_deployment *d, const char *topic)
{
    for (size_t i = 0; i < d->input_count; i++)
        if (strcmp(d->inputs[i].topic, topic) == 0)
            return "an input topic";
    for (size_t i = 0; i < d->output_count; i++)
        if (strcmp(d->outputs[i].topic, topic) == 0)
            return "an output topic";
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].topic, topic) == 0 || strcmp(d->requests[i].response_topic, topic) == 0)
            return "a request or response topic";
    return NULL;
}

bool idevs_routing_is_output_topic(const idevs_plugin *p, const char *topic)
{
    const idevs_deployment *d = p->deployment;
    if (d == NULL)
        return false;
    if (strcmp(topic, p->certificate_topic) == 0 || strcmp(topic, p->descriptor_topic) == 0)
        return true;
    for (size_t i = 0; i < d->output_count; i++)
        if (strcmp(d->outputs[i].topic, topic) == 0)
            return true;
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].topic, topic) == 0)
            return true;
    return false;
}

bool idevs_routing_start(idevs_plugin *p)
{
    char why[1024] = "";
    idevs_err err = idevs_deployment_load(p->cfg.descriptor, &p->deployment, &p->descriptor_bytes,
                                          &p->descriptor_len, why, sizeof why);
    if (err != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_descriptor: %s",
                             why[0] != '\0' ? why : idevs_strerror(err));
        return false;
    }
    p->certificate_topic = topic_for(p->deployment->name, "certificate");
    p->descriptor_topic = topic_for(p->deployment->name, "descriptor");
    if (p->certificate_topic == NULL || p->descriptor_topic == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
        return false;
    }
    idevs_envelope_options eopts;
    idevs_envelope_options_default(&eopts);
    eopts.max_payload = p->deployment->max_payload;
    p->max_envelope = idevs_envelope_max_size(&eopts);
    if (!idevs_rejections_init(p))
        return false;
    const char *clash;
    if ((clash = topic_in_descriptor(p->deployment, p->certificate_topic)) != NULL ||
        (clash = topic_in_descriptor(p->deployment, p->descriptor_topic)) != NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR,
                             IDEVS_PLUGIN_LOG_PREFIX "%s: %s is '%s' or '%s', where the plugin publishes the "
                             "certificate and the descriptor",
                             p->cfg.descriptor, clash, p->certificate_topic, p->descriptor_topic);
        return false;
    }

    idevs_launcher_config lc;
    idevs_launcher_config_default(&lc);
    lc.descriptor = p->cfg.descriptor;
    lc.host_program = p->cfg.compartment;
    lc.state_dir = p->cfg.state_dir;
    lc.operator_ca = p->operator_ca;
    lc.authority = p->authority;
    lc.authority_cert = p->authority_cert;
    lc.start_timeout_ms = p->cfg.start_timeout_ms;
    lc.on_event = on_event;
    lc.event_arg = p;
    why[0] = '\0';
    if ((err = idevs_launcher_new(&lc, &p->launcher, why, sizeof why)) != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "cannot prepare the compartment: %s",
                             why[0] != '\0' ? why : idevs_strerror(err));
        return false;
    }
    /* The launcher read the file again: what it measured must be what the plugin publishes. */
    uint8_t digest[IDEVS_SHA256_LEN];
    if (idevs_sha256(p->descriptor_bytes, p->descriptor_len, digest) != IDEVS_OK ||
        memcmp(digest, idevs_launcher_descriptor_digest(p->launcher), sizeof digest) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "%s: changed while the plugin was reading it",
                             p->cfg.descriptor);
        return false;
    }
    why[0] = '\0';
    if ((err = idevs_launcher_start(p->launcher, why, sizeof why)) != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "cannot start the compartment: %s",
                             why[0] != '\0' ? why : idevs_strerror(err));
        return false;
    }
    if (!idevs_routing_publish(p, p->descriptor_topic, p->descriptor_bytes, p->descriptor_len, 1, true, NULL))
        return false;
    publish_certificate(p);
    if (p->certificate_stale) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot publish the certificate",
                             p->deployment->name);
        return false;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         IDEVS_PLUGIN_LOG_PREFIX "'%s': compartment certified; certificate on '%s', descriptor on '%s'",
                         p->deployment->name, p->certificate_topic, p->descriptor_topic);
    return true;
}

void idevs_routing_stop(idevs_plugin *p)
{
    if (p->launcher != NULL)
        idevs_launcher_stop(p->launcher, 1000);
    idevs_launcher_free(p->launcher);
    p->launcher = NULL;
    idevs_deployment_free(p->deployment);
    p->deployment = NULL;
    free(p->descriptor_bytes);
    p->descriptor_bytes = NULL;
    free(p->certificate_topic);
    p->certificate_topic = NULL;
    free(p->descriptor_topic);
    p->descriptor_topic = NULL;
    idevs_rejections_free(p);
}
