/* The service library's lifecycle: configuration, the MQTT 5 connection over libmosquitto, start (connect,
 * fetch, verify, subscribe), the run loop with reconnection and backoff, stop and free. Single-threaded: the
 * caller's thread runs mosquitto_loop inside idevs_service_start/run/flush, and every callback happens there. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <mqtt_protocol.h>
#include <openssl/pem.h>

#include "service_internal.h"

uint64_t svc_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void svc_set_why(idevs_service *svc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(svc->why, sizeof svc->why, fmt, ap);
    va_end(ap);
}

static void copy_why(char *why, size_t why_len, const char *text)
{
    if (why != NULL && why_len > 0)
        snprintf(why, why_len, "%s", text);
}

void idevs_service_config_default(idevs_service_config *cfg)
{
    if (cfg == NULL)
        return;
    memset(cfg, 0, sizeof *cfg);
    cfg->host = "127.0.0.1";
    cfg->port = 1883;
    cfg->keepalive_s = 30;
    cfg->start_timeout_ms = 10000;
    cfg->dedupe_window = 4096;
}

static bool valid_name(const char *s)
{
    size_t n = s == NULL ? 0 : strlen(s);
    if (n == 0 || n > IDEVS_NAME_MAX)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return false;
    }
    return true;
}

/* strdup that keeps NULL; *ok turns false when memory runs out. */
static char *dup_opt(const char *s, bool *ok)
{
    if (s == NULL)
        return NULL;
    char *d = strdup(s);
    if (d == NULL)
        *ok = false;
    return d;
}

static void free_string(char *s, bool secret)
{
    if (s != NULL && secret)
        idevs_cleanse(s, strlen(s));
    free(s);
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props);
static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props);
static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props);
static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props);
static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted,
                         const mosquitto_property *props);

/* The operator CA's DER digest, and a check that this service's own chain leads to it: a chain that does not
 * would be refused by the compartment, so say so now. */
static idevs_err check_own_chain(idevs_service *svc, const idevs_service_config *cfg, char *why, size_t why_len)
{
    /* One certificate, by the one chain reader's rule (PEM CERTIFICATE blocks and white space only). */
    uint8_t *der[1] = {NULL};
    size_t der_len[1] = {0}, n = 0;
    char read_why[384];
    idevs_err err = idevs_cert_read_chain_file(cfg->operator_ca, der, der_len, 1, &n, read_why, sizeof read_why);
    if (err != IDEVS_OK)
        return idevs_fail(why, why_len, err, "operator CA %s", read_why);
    err = idevs_sha256(der[0], der_len[0], svc->operator_ca_sha256);
    idevs_cert_chain_free(der, n);
    if (err != IDEVS_OK)
        return err;

    idevs_cert_policy *own = idevs_cert_policy_new();
    if (own == NULL)
        return IDEVS_ERR_NOMEM;
    char inner[512];
    err = idevs_cert_policy_add_ca_file(own, cfg->operator_ca);
    if (err != IDEVS_OK) {
        idevs_fail(why, why_len, err, "operator CA %s: %s", cfg->operator_ca, idevs_strerror(err));
    } else {
        size_t count = idevs_identity_chain_count(svc->self);
        const uint8_t *ders[IDEVS_CHAIN_MAX];
        size_t lens[IDEVS_CHAIN_MAX];
        for (size_t i = 0; i < count && i < IDEVS_CHAIN_MAX; i++)
            ders[i] = idevs_identity_chain_der(svc->self, i, &lens[i]);
        err = idevs_cert_verify(own, ders, lens, count < IDEVS_CHAIN_MAX ? count : IDEVS_CHAIN_MAX, NULL, inner,
                                sizeof inner);
        if (err != IDEVS_OK)
            idevs_fail(why, why_len, err, "this service's certificate %s does not verify against the operator CA %s (%s): %s",
                cfg->cert_file, cfg->operator_ca, idevs_err_name(err), inner);
    }
    idevs_cert_policy_free(own);
    return err;
}

idevs_err idevs_service_new(const idevs_service_config *cfg, idevs_service_on_message on_msg, void *arg,
                            idevs_service **out, char *why, size_t why_len)
{
    copy_why(why, why_len, "");
    if (out == NULL || cfg == NULL) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_service_new: config and out are required");
    }
    *out = NULL;
    const char *missing = cfg->key_file == NULL ? "key_file (--key)"
                          : cfg->cert_file == NULL ? "cert_file (--cert)"
                          : cfg->operator_ca == NULL ? "operator_ca (--ca)"
                          : cfg->process == NULL ? "process (--process)"
                                                 : NULL;
    if (missing != NULL) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "%s is required", missing);
    }
    if (!valid_name(cfg->process)) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "process '%s' is not a name: 1 to 64 of A-Z a-z 0-9 . _ -", cfg->process);
    }
    if (cfg->port < 1 || cfg->port > 65535 || cfg->host == NULL || cfg->host[0] == '\0') {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "broker address %s:%d is not valid", cfg->host ? cfg->host : "(none)", cfg->port);
    }
    if (cfg->keepalive_s != 0 && (cfg->keepalive_s < 5 || cfg->keepalive_s > 65535)) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "keepalive %u s is out of range: 5 to 65535", cfg->keepalive_s);
    }
    size_t window = cfg->dedupe_window == 0 ? 4096 : cfg->dedupe_window;
    if (window > SVC_DEDUPE_MAX) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "dedupe window %zu is out of range: 1 to %u", window, SVC_DEDUPE_MAX);
    }
    if ((cfg->tls_certfile == NULL) != (cfg->tls_keyfile == NULL)) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "a TLS client certificate needs both tls_certfile and tls_keyfile");
    }
    if (cfg->tls_certfile != NULL && cfg->tls_cafile == NULL) {
        return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "a TLS client certificate needs tls_cafile too");
    }

    idevs_service *svc = calloc(1, sizeof *svc);
    if (svc == NULL)
        return IDEVS_ERR_NOMEM;
    mosquitto_lib_init();
    svc->on_message = on_msg;
    svc->arg = arg;
    svc->port = cfg->port;
    svc->keepalive_s = cfg->keepalive_s == 0 ? 30 : cfg->keepalive_s;
    svc->start_timeout_ms = cfg->start_timeout_ms == 0 ? 10000 : cfg->start_timeout_ms;
    svc->session_expiry_s = cfg->session_expiry_s;
    svc->backoff_ms = SVC_BACKOFF_MIN_MS;
    bool ok = true;
    svc->host = dup_opt(cfg->host, &ok);
    svc->process = dup_opt(cfg->process, &ok);
    svc->operator_ca = dup_opt(cfg->operator_ca, &ok);
    svc->tls_cafile = dup_opt(cfg->tls_cafile, &ok);
    svc->tls_certfile = dup_opt(cfg->tls_certfile, &ok);
    svc->tls_keyfile = dup_opt(cfg->tls_keyfile, &ok);
    svc->username = dup_opt(cfg->username, &ok);
    svc->password = dup_opt(cfg->password, &ok);
    svc->certificate_topic = idevs_deployment_certificate_topic(cfg->process);
    svc->descriptor_topic = idevs_deployment_descriptor_topic(cfg->process);
    svc->instances_filter = idevs_deployment_instance_certificate_filter(cfg->process);
    idevs_err err = IDEVS_OK;
    if (!ok || svc->certificate_topic == NULL || svc->descriptor_topic == NULL || svc->instances_filter == NULL)
        err = IDEVS_ERR_NOMEM;

    if (err == IDEVS_OK) {
        char reason[512] = "";
        err = idevs_identity_load_why(cfg->key_file, cfg->cert_file, &svc->self, reason, sizeof reason);
        if (err != IDEVS_OK)
            idevs_fail(why, why_len, err, "cannot load this service's identity from %s and %s (%s): %s", cfg->key_file,
                cfg->cert_file, idevs_err_name(err), reason[0] != '\0' ? reason : idevs_strerror(err));
    }
    if (err == IDEVS_OK)
        err = check_own_chain(svc, cfg, why, why_len);
    if (err == IDEVS_OK)
        err = svc_policy_setup(svc, cfg->policy, why, why_len);
    if (err == IDEVS_OK) {
        err = idevs_service_dedupe_new(window, &svc->dedupe);
        if (err != IDEVS_OK)
            idevs_fail(why, why_len, err, "cannot allocate the dedupe window of %zu ids", window);
    }
    if (err == IDEVS_OK)
        err = svc_outbox_open(svc, cfg->outbox, why, why_len);
    if (err == IDEVS_OK) {
        if (cfg->client_id != NULL) {
            svc->client_id = strdup(cfg->client_id);
        } else {
            char id[IDEVS_NAME_MAX + 32];
            snprintf(id, sizeof id, "%s-%ld", idevs_identity_name(svc->self), (long)getpid());
            svc->client_id = strdup(id);
        }
        if (svc->client_id == NULL)
            err = IDEVS_ERR_NOMEM;
    }
    if (err == IDEVS_OK) {
        /* A persistent session needs the broker to keep it: clean start only without a session expiry. */
        svc->mosq = mosquitto_new(svc->client_id, svc->session_expiry_s == 0, svc);
        if (svc->mosq == NULL) {
            err = idevs_fail(why, why_len, errno == ENOMEM ? IDEVS_ERR_NOMEM : IDEVS_ERR_INVALID_ARG, "cannot create the MQTT client: %s", strerror(errno));
        }
    }
    if (err == IDEVS_OK) {
        mosquitto_int_option(svc->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
        /* Small envelopes, answered one by one: Nagle's algorithm would hold them back for an ACK. */
        mosquitto_int_option(svc->mosq, MOSQ_OPT_TCP_NODELAY, 1);
        mosquitto_connect_v5_callback_set(svc->mosq, on_connect);
        mosquitto_disconnect_v5_callback_set(svc->mosq, on_disconnect);
        mosquitto_message_v5_callback_set(svc->mosq, on_message);
        mosquitto_publish_v5_callback_set(svc->mosq, on_publish);
        mosquitto_subscribe_v5_callback_set(svc->mosq, on_subscribe);
        if (svc->username != NULL &&
            mosquitto_username_pw_set(svc->mosq, svc->username, svc->password) != MOSQ_ERR_SUCCESS) {
            err = idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "cannot set the MQTT user name");
        }
    }
    if (err == IDEVS_OK && svc->tls_cafile != NULL) {
        int rc = mosquitto_tls_set(svc->mosq, svc->tls_cafile, NULL, svc->tls_certfile, svc->tls_keyfile, NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            err = idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "TLS settings (CA %s%s%s): %s", svc->tls_cafile,
                svc->tls_certfile ? ", certificate " : "", svc->tls_certfile ? svc->tls_certfile : "",
                mosquitto_strerror(rc));
        }
    }
    if (err != IDEVS_OK) {
        if (err == IDEVS_ERR_NOMEM && (why == NULL || why[0] == '\0'))
            idevs_fail(why, why_len, err, "out of memory");
        idevs_service_free(svc);
        return err;
    }
    *out = svc;
    return IDEVS_OK;
}

/* ---- connection ---- */

/* Starts a connection attempt: TCP (and TLS) connect and CONNECT sent; CONNACK arrives in the loop. */
static idevs_err connect_once(idevs_service *svc, char *why, size_t why_len)
{
    mosquitto_property *props = NULL;
    if (svc->session_expiry_s > 0 &&
        mosquitto_property_add_int32(&props, MQTT_PROP_SESSION_EXPIRY_INTERVAL, svc->session_expiry_s) !=
            MOSQ_ERR_SUCCESS)
        return IDEVS_ERR_NOMEM;
    svc->connack_refused = false;
    int rc = mosquitto_connect_bind_v5(svc->mosq, svc->host, svc->port, (int)svc->keepalive_s, NULL, props);
    mosquitto_property_free_all(&props);
    if (rc != MOSQ_ERR_SUCCESS) {
        return idevs_fail(why, why_len, IDEVS_ERR_BROKER, "cannot connect to the broker at %s:%d: %s", svc->host, svc->port,
            rc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(rc));
    }
    svc->conn = SVC_CONNECTING;
    return IDEVS_OK;
}

void svc_topics_free(char **topics, size_t count)
{
    if (topics == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free(topics[i]);
    free(topics);
}

/* Whether topic was subscribed at QoS qos; at another QoS it is subscribed again, which MQTT makes a
 * replacement. */
static bool listed(char *const *topics, const int *topic_qos, size_t count, const char *topic, int qos)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(topics[i], topic) == 0 && topic_qos[i] == qos)
            return true;
    return false;
}

/* Nothing is subscribed twice on one connection: the broker would send the retained pair again, and Mosquitto
 * 2.0.11 keeps about 40 bytes per re-subscription. */
idevs_err svc_subscribe(idevs_service *svc, char *const *already, const int *already_qos, size_t already_count)
{
    if (svc->conn != SVC_CONNECTED)
        return IDEVS_OK;
    bool fresh = already == NULL;
    char **topics = calloc(svc->subscription_count + 3, sizeof *topics);
    size_t n = 0, first[SVC_QOS_COUNT + 1] = {0};
    bool ok = topics != NULL;
    /* Grouped by QoS, so that an output or request declared at QoS 2 is not received at QoS 1. */
    for (int q = 0; ok && q < SVC_QOS_COUNT; q++) {
        first[q] = n;
        if (fresh && q == SVC_RETAINED_QOS) {
            ok &= (topics[n++] = strdup(svc->certificate_topic)) != NULL;
            ok &= (topics[n++] = strdup(svc->descriptor_topic)) != NULL;
            ok &= (topics[n++] = strdup(svc->instances_filter)) != NULL; /* after them: verified by then */
        }
        for (size_t i = 0; ok && i < svc->subscription_count; i++)
            if (svc->subscription_qos[i] == q &&
                (fresh || !listed(already, already_qos, already_count, svc->subscriptions[i], q)))
                ok &= (topics[n++] = strdup(svc->subscriptions[i])) != NULL;
    }
    first[SVC_QOS_COUNT] = n;
    if (!ok) {
        svc_topics_free(topics, n);
        svc->failure = IDEVS_ERR_NOMEM;
        svc_set_why(svc, "cannot subscribe to the topics of process '%s': out of memory", svc->process);
        return svc->failure;
    }
    svc_topics_free(svc->sent_topics, svc->sent_count);
    svc->sent_topics = topics;
    svc->sent_count = n;
    memcpy(svc->sent_first, first, sizeof svc->sent_first);
    if (n == 0)
        return IDEVS_OK; /* a redeployment that adds no topic of this service */
    svc->subscribed = false;
    svc->subscribe_pending = 0;
    for (int q = 0; q < SVC_QOS_COUNT; q++) {
        svc->subscribe_mid[q] = 0; /* a SUBACK still due for an earlier SUBSCRIBE no longer counts */
        size_t count = first[q + 1] - first[q];
        if (count == 0)
            continue;
        int rc = mosquitto_subscribe_multiple(svc->mosq, &svc->subscribe_mid[q], (int)count, topics + first[q], q, 0,
                                              NULL);
        if (rc != MOSQ_ERR_SUCCESS) {
            svc->failure = rc == MOSQ_ERR_NOMEM ? IDEVS_ERR_NOMEM : IDEVS_ERR_BROKER;
            svc_set_why(svc, "cannot subscribe to the topics of process '%s': %s", svc->process,
                        mosquitto_strerror(rc));
            return svc->failure;
        }
        svc->subscribe_pending++;
    }
    return IDEVS_OK;
}

static void on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *props)
{
    (void)mosq, (void)flags, (void)props;
    idevs_service *svc = obj;
    if (rc != 0) {
        svc->connack_refused = true;
        svc->connack_reason = rc;
        svc->conn = SVC_DISCONNECTED;
        return;
    }
    svc->conn = SVC_CONNECTED;
    svc->connected_ms = svc_now_ms();
    /* The retained certificate and descriptor come again with the subscription: until they are verified,
     * nothing is sealed, and envelopes that arrive are held. */
    svc->ready = false;
    svc->have_cert = svc->have_descriptor = false;
    svc_subscribe(svc, NULL, NULL, 0);
}

static void on_disconnect(struct mosquitto *mosq, void *obj, int rc, const mosquitto_property *props)
{
    (void)mosq, (void)rc, (void)props;
    idevs_service *svc = obj;
    svc->conn = SVC_DISCONNECTED;
    svc->ready = false;
}

static void on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)mosq;
    idevs_service *svc = obj;
    if (msg == NULL || msg->topic == NULL || msg->payloadlen < 0)
        return;
    const uint8_t *data = msg->payload;
    size_t len = (size_t)msg->payloadlen;
    if (strcmp(msg->topic, svc->certificate_topic) == 0) {
        svc_on_retained(svc, true, data, len);
        return;
    }
    if (strcmp(msg->topic, svc->descriptor_topic) == 0) {
        svc_on_retained(svc, false, data, len);
        return;
    }
    bool instance = false;
    if (mosquitto_topic_matches_sub(svc->instances_filter, msg->topic, &instance) == MOSQ_ERR_SUCCESS && instance) {
        svc_on_instance_certificate(svc, data, len);
        return;
    }
    void *corr = NULL;
    uint16_t corr_len = 0;
    mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    svc_receive(svc, msg->topic, data, len, corr, corr_len);
    free(corr);
}

static void on_subscribe(struct mosquitto *mosq, void *obj, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    (void)mosq, (void)props;
    idevs_service *svc = obj;
    int q = 0;
    while (q < SVC_QOS_COUNT && (svc->subscribe_mid[q] == 0 || svc->subscribe_mid[q] != mid))
        q++;
    if (q == SVC_QOS_COUNT)
        return;
    svc->subscribe_mid[q] = 0;
    char *const *topics = svc->sent_topics + svc->sent_first[q];
    size_t n = svc->sent_first[q + 1] - svc->sent_first[q];
    for (int i = 0; i < count && (size_t)i < n; i++)
        if (granted[i] >= 0x80) {
            svc->failure = IDEVS_ERR_BROKER;
            svc->ready = false;
            svc_set_why(svc, "the broker refused this service's subscription to %s: %s", topics[i],
                        mosquitto_reason_string(granted[i]));
            return;
        }
    if (--svc->subscribe_pending <= 0)
        svc->subscribed = true;
}

static void on_publish(struct mosquitto *mosq, void *obj, int mid, int reason, const mosquitto_property *props)
{
    (void)mosq, (void)props;
    svc_on_publish_ack(obj, mid, reason);
}

static int clamp_ms(int64_t ms)
{
    return ms < 0 ? 0 : ms > INT_MAX ? INT_MAX : (int)ms;
}

static void sleep_ms(int ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* A connection ended, was refused or could not be made: the next attempt waits the backoff, which doubles
 * (up to SVC_BACKOFF_MAX_MS) at every such end, unless the connection had lasted SVC_STABLE_MS. A broker that
 * accepts and drops at once, or refuses every CONNECT, is so asked at most every few seconds, never in a loop. */
static void schedule_retry(idevs_service *svc)
{
    uint64_t now = svc_now_ms();
    if (svc->connected_ms != 0 && now - svc->connected_ms >= SVC_STABLE_MS)
        svc->backoff_ms = SVC_BACKOFF_MIN_MS;
    svc->connected_ms = 0;
    svc->next_attempt_ms = now + svc->backoff_ms;
    svc->backoff_ms = svc->backoff_ms * 2 > SVC_BACKOFF_MAX_MS ? SVC_BACKOFF_MAX_MS : svc->backoff_ms * 2;
}

/* The loop for up to timeout_ms; false when it ended the connection. */
static bool loop_once(idevs_service *svc, int timeout_ms)
{
    int rc = mosquitto_loop(svc->mosq, timeout_ms, 1);
    if (rc != MOSQ_ERR_SUCCESS && svc->conn != SVC_DISCONNECTED) {
        /* The loop lost the socket without a DISCONNECT callback (e.g. the broker vanished). */
        svc->conn = SVC_DISCONNECTED;
        svc->ready = false;
    }
    if (svc->conn != SVC_DISCONNECTED)
        return true;
    if (rc != MOSQ_ERR_SUCCESS && rc != MOSQ_ERR_CONN_LOST && rc != MOSQ_ERR_NO_CONN)
        sleep_ms(timeout_ms); /* an error that returns at once must not spin */
    return false;
}

/* One step of the network for up to timeout_ms: the loop when connected, a reconnection attempt when due. */
static void step(idevs_service *svc, int timeout_ms)
{
    if (svc->conn != SVC_DISCONNECTED) {
        if (!loop_once(svc, timeout_ms) && !svc->stopped)
            schedule_retry(svc);
        return;
    }
    uint64_t now = svc_now_ms();
    if (now < svc->next_attempt_ms) {
        uint64_t wait = svc->next_attempt_ms - now;
        sleep_ms(wait < (uint64_t)timeout_ms ? (int)wait : timeout_ms);
        return;
    }
    char why[SVC_WHY_MAX];
    if (connect_once(svc, why, sizeof why) == IDEVS_OK) {
        svc->stats.reconnects++;
        if (!loop_once(svc, timeout_ms) && !svc->stopped)
            schedule_retry(svc); /* refused or dropped at once */
    } else {
        schedule_retry(svc);
    }
}

static const char *waiting_for(const idevs_service *svc)
{
    if (svc->conn == SVC_CONNECTING)
        return "no CONNACK from the broker";
    if (svc->ready && !svc->subscribed)
        return "no SUBACK for this service's topics";
    if (!svc->have_cert && !svc->have_descriptor)
        return "neither the retained certificate nor the retained descriptor arrived (is mosquitto_idevs running "
               "for this process on this broker?)";
    if (!svc->have_cert)
        return "the retained certificate did not arrive";
    if (!svc->have_descriptor)
        return "the retained descriptor did not arrive";
    return "the compartment was not verified";
}

idevs_err idevs_service_start(idevs_service *svc, char *why, size_t why_len)
{
    copy_why(why, why_len, "");
    if (svc == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (svc->started || svc->stopped) {
        return idevs_fail(why, why_len, IDEVS_ERR_NOT_NOW, "the service was already started");
    }
    idevs_err err = connect_once(svc, why, why_len);
    if (err != IDEVS_OK)
        return err;
    uint64_t deadline = svc_now_ms() + svc->start_timeout_ms;
    svc->failure = IDEVS_OK;
    while (!svc->ready || !svc->subscribed) {
        if (svc->failure != IDEVS_OK) {
            err = svc->failure;
            svc->failure = IDEVS_OK;
            copy_why(why, why_len, svc->why);
            idevs_service_stop(svc);
            return err;
        }
        if (svc->connack_refused) {
            idevs_fail(why, why_len, IDEVS_ERR_BROKER, "the broker at %s:%d refused the connection: %s", svc->host, svc->port,
                mosquitto_reason_string(svc->connack_reason));
            idevs_service_stop(svc);
            return IDEVS_ERR_BROKER;
        }
        if (svc->conn == SVC_DISCONNECTED) {
            idevs_fail(why, why_len, IDEVS_ERR_BROKER, "lost the connection to the broker at %s:%d while starting", svc->host, svc->port);
            idevs_service_stop(svc);
            return IDEVS_ERR_BROKER;
        }
        uint64_t now = svc_now_ms();
        if (now >= deadline) {
            idevs_fail(why, why_len, IDEVS_ERR_TIMEOUT, "process '%s' on %s:%d: %s within %u ms", svc->process, svc->host, svc->port,
                waiting_for(svc), svc->start_timeout_ms);
            idevs_service_stop(svc);
            return IDEVS_ERR_TIMEOUT;
        }
        int wait = clamp_ms((int64_t)(deadline - now));
        int rc = mosquitto_loop(svc->mosq, wait < 100 ? wait : 100, 1);
        if (rc != MOSQ_ERR_SUCCESS && svc->conn != SVC_DISCONNECTED)
            svc->conn = SVC_DISCONNECTED;
    }
    svc->started = true;
    return IDEVS_OK;
}

idevs_err idevs_service_run(idevs_service *svc, int timeout_ms)
{
    if (svc == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (!svc->started || svc->stopped)
        return IDEVS_ERR_NOT_NOW;
    if (timeout_ms < 0)
        timeout_ms = 0;
    /* What arrived during the start (a persistent session's queued requests, typically) is handed over now
     * that the caller has its service and can answer, before anything newer. */
    if (svc->ready && svc->ctx != NULL)
        svc_release_held(svc);
    if (svc->failure == IDEVS_OK)
        step(svc, timeout_ms);
    svc_outbox_pump(svc);
    svc_receipts_flush(svc);
    if (svc->failure != IDEVS_OK) {
        idevs_err err = svc->failure;
        svc->failure = IDEVS_OK;
        return err;
    }
    return IDEVS_OK;
}

void idevs_service_set_on_receipt(idevs_service *svc, idevs_service_on_receipt on_receipt, void *arg)
{
    if (svc == NULL)
        return;
    svc->on_receipt = on_receipt;
    svc->on_receipt_arg = arg;
}

size_t idevs_service_unreceipted(const idevs_service *svc)
{
    return svc != NULL ? svc_outbox_unreceipted(svc) : 0;
}

bool idevs_service_ready(const idevs_service *svc)
{
    return svc != NULL && svc->started && !svc->stopped && svc->ready;
}

int idevs_service_socket(const idevs_service *svc)
{
    return svc == NULL || svc->mosq == NULL ? -1 : mosquitto_socket(svc->mosq);
}

bool idevs_service_want_write(const idevs_service *svc)
{
    return svc != NULL && svc->mosq != NULL && mosquitto_want_write(svc->mosq);
}

const char *idevs_service_last_error(const idevs_service *svc)
{
    return svc == NULL ? "" : svc->why;
}

idevs_err idevs_service_flush(idevs_service *svc, int timeout_ms)
{
    if (svc == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (!svc->started || svc->stopped)
        return IDEVS_ERR_NOT_NOW;
    uint64_t deadline = svc_now_ms() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms);
    svc_receipts_flush(svc); /* the receipts owed go with the rest */
    for (;;) {
        if (svc->stats.acknowledged + svc->stats.refused >= svc->stats.published) {
            if (svc->refused_unreported == 0)
                return IDEVS_OK;
            svc_set_why(svc, "%llu publication(s) not delivered; the last: %s",
                        (unsigned long long)svc->refused_unreported, svc->last_refusal);
            svc->refused_unreported = 0;
            return IDEVS_ERR_BROKER;
        }
        uint64_t now = svc_now_ms();
        if (now >= deadline)
            return IDEVS_ERR_TIMEOUT;
        int wait = clamp_ms((int64_t)(deadline - now));
        idevs_err err = idevs_service_run(svc, wait < 100 ? wait : 100);
        if (err != IDEVS_OK)
            return err;
    }
}

void idevs_service_stop(idevs_service *svc)
{
    if (svc == NULL || svc->stopped)
        return;
    /* The receipts owed, and those sent but still in the socket's queue, leave first (a second at most): else the
     * process sends their messages again, and this service, when it comes back, receipts them then. */
    if ((svc->receipt_count > 0 || svc->stats.published > svc->stats.acknowledged + svc->stats.refused) &&
        idevs_service_ready(svc))
        (void)idevs_service_flush(svc, 1000);
    svc->stopped = true;
    svc->ready = false;
    if (svc->mosq != NULL && svc->conn != SVC_DISCONNECTED) {
        mosquitto_disconnect_v5(svc->mosq, MQTT_RC_NORMAL_DISCONNECTION, NULL);
        mosquitto_loop(svc->mosq, 0, 1);
    }
    svc->conn = SVC_DISCONNECTED;
}

void idevs_service_free(idevs_service *svc)
{
    if (svc == NULL)
        return;
    idevs_service_stop(svc);
    if (svc->mosq != NULL)
        mosquitto_destroy(svc->mosq);
    svc_held_free(svc);
    svc_outstanding_free(svc);
    svc_verified_free(svc);
    free(svc->pending_cert);
    free(svc->pending_descriptor);
    idevs_service_dedupe_free(svc->dedupe);
    svc_outbox_close(svc);
    idevs_cert_policy_free(svc->policy);
    idevs_identity_free(svc->self);
    free(svc->host);
    free(svc->client_id);
    free(svc->process);
    free(svc->operator_ca);
    free(svc->tls_cafile);
    free(svc->tls_certfile);
    free(svc->tls_keyfile);
    free(svc->username);
    free_string(svc->password, true);
    free(svc->certificate_topic);
    free(svc->descriptor_topic);
    free(svc->instances_filter);
    idevs_cleanse(svc, sizeof *svc);
    free(svc);
    mosquitto_lib_cleanup();
}

void idevs_service_peer(const idevs_service *svc, idevs_service_peer_info *out)
{
    if (out == NULL)
        return;
    memset(out, 0, sizeof *out);
    if (svc == NULL || svc->deployment == NULL)
        return;
    out->compartment = svc->peer.uuid;
    out->program = svc->peer.evidence.program_uuid;
    memcpy(out->measurement, svc->peer.evidence.measurement, sizeof out->measurement);
    memcpy(out->descriptor_digest, svc->peer.evidence.descriptor_digest, sizeof out->descriptor_digest);
    out->backend = idevs_backend_name(svc->peer.evidence.backend);
    out->certificates_verified = svc->certificates_verified;
}

void idevs_service_get_stats(const idevs_service *svc, idevs_service_stats *out)
{
    if (out == NULL)
        return;
    if (svc == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = svc->stats;
    idevs_envelope_stats es;
    idevs_envelope_get_stats(svc->ctx, &es);
    out->epochs_started = es.sending_epochs;
    out->epochs_accepted = es.receiving_epochs;
}
