/* idevs_broker_peer: a service's side of the plugin tests and benchmark, over MQTT 5 with libmosquitto.
 *
 *   idevs_broker_peer send    COMMON --to CHAIN --topic T (--payload P | --count N [--prefix S] | --size B)
 *                             [--interval-ms M]
 *   idevs_broker_peer raw     COMMON --file F --topic T --count N
 *   idevs_broker_peer junk    COMMON --to CHAIN --topic T --size B --count N
 *   idevs_broker_peer collect COMMON --from CHAIN --topic T --count N [--timeout-s S] [--linger-ms M] [--print size]
 *   idevs_broker_peer respond COMMON --topic T --count N [--timeout-s S]
 *   idevs_broker_peer latency COMMON --to CHAIN --topic T --out-topic T2 --recv-key K --recv-cert C --count N
 *                             [--interval-ms M]
 *   COMMON: --port P --key K --cert C [--id CLIENT_ID] POLICY... (idevs_cert_policy settings: --ca, --descriptor, ...)
 *
 * send seals each payload in one context (one key epoch) and publishes it at QoS 1, waiting for every
 * PUBACK; with --size, one payload of B bytes ("0123456789" repeated). raw publishes a file's bytes as they are.
 * junk seals one payload of B bytes and publishes N copies of its envelope, each with other bytes at its end:
 * a real clear header (the keyless gate passes them) on a body that does not open. collect --print size prints
 * "size B" for each opened payload instead of the payload. collect prints each opened payload on its own line on stdout
 * (a line "ready" comes first, once subscribed; "rejected REASON" for an envelope that does not open) and ends
 * after N payloads, or on timeout with status 1. respond answers each request with "re:<payload>", sealed to the
 * requester on the MQTT 5 response topic with the request's correlation data. latency sends one envelope at a
 * time and waits for its output: it prints percentiles of the round trip. --from registers the compartment's
 * chain (from its retained topic) before anything arrives: outputs after the first of a key epoch carry only its
 * digest. Payloads never go to stderr. */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>
#include <openssl/pem.h>

#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"

#define PAYLOAD_MAX 4096
#define COUNT_MAX 100000

typedef struct peer {
    const char *mode, *key, *cert, *id, *to, *from, *topic, *out_topic, *payload, *prefix, *file, *recv_key, *recv_cert;
    int port;
    long count, interval_ms, timeout_s, linger_ms, size;
    const char *print;
    idevs_cert_policy *policy;
    idevs_identity *self, *recv_self;
    idevs_envelope_ctx *ctx, *recv_ctx;
    idevs_uuid to_uuid;
    struct mosquitto *mosq;
    bool connected, subscribed, failed;
    long acked, ack_failures, received, rejected;
    uint64_t *sent_at; /* latency: send time of each message, by index */
    double *rtt_us;
} peer;

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int usage(const char *why)
{
    fprintf(stderr, "idevs_broker_peer: %s\n", why);
    return 2;
}

static bool parse_long(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* Loads a PEM chain (leaf first) and registers it as a peer under the policy. */
static idevs_err add_peer_file(idevs_envelope_ctx *ctx, const char *path, idevs_uuid *uuid)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return IDEVS_ERR_IO;
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX], count = 0;
    X509 *x;
    while (count < IDEVS_CHAIN_MAX && (x = PEM_read_X509(f, NULL, NULL, NULL)) != NULL) {
        der[count] = NULL;
        int n = i2d_X509(x, &der[count]);
        X509_free(x);
        if (n <= 0)
            break;
        len[count++] = (size_t)n;
    }
    fclose(f);
    idevs_cert_info info;
    idevs_err err = count == 0 ? IDEVS_ERR_CERT_MALFORMED
                               : idevs_envelope_add_peer(ctx, (const uint8_t *const *)der, len, count, &info);
    for (size_t i = 0; i < count; i++)
        OPENSSL_free(der[i]);
    if (err == IDEVS_OK && uuid != NULL)
        *uuid = info.uuid;
    return err;
}

/* ---- MQTT callbacks ---- */

static void on_connect(struct mosquitto *m, void *arg, int rc, int flags, const mosquitto_property *props)
{
    (void)m, (void)flags, (void)props;
    peer *p = arg;
    if (rc == 0)
        p->connected = true;
    else {
        fprintf(stderr, "idevs_broker_peer: connection refused: %s\n", mosquitto_reason_string(rc));
        p->failed = true;
    }
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int count, const int *granted,
                         const mosquitto_property *props)
{
    (void)m, (void)mid, (void)props;
    peer *p = arg;
    if (count < 1 || granted[0] > 2) {
        fprintf(stderr, "idevs_broker_peer: subscription refused\n");
        p->failed = true;
        return;
    }
    p->subscribed = true;
}

static void on_publish(struct mosquitto *m, void *arg, int mid, int reason, const mosquitto_property *props)
{
    (void)m, (void)mid, (void)props;
    peer *p = arg;
    if (reason == 0 || reason == MQTT_RC_NO_MATCHING_SUBSCRIBERS)
        p->acked++;
    else {
        p->ack_failures++;
        fprintf(stderr, "idevs_broker_peer: publication refused with reason code %d\n", reason);
    }
}

static void print_payload(const uint8_t *data, size_t len)
{
    fwrite(data, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* respond: answers a request with "re:<payload>" on its response topic, with its correlation data. */
static void answer(peer *p, const idevs_opened *req, const mosquitto_property *props)
{
    char *response_topic = NULL;
    void *corr = NULL;
    uint16_t corr_len = 0;
    if (mosquitto_property_read_string(props, MQTT_PROP_RESPONSE_TOPIC, &response_topic, false) == NULL) {
        fprintf(stderr, "idevs_broker_peer: a request without a response topic\n");
        p->failed = true;
        return;
    }
    (void)mosquitto_property_read_binary(props, MQTT_PROP_CORRELATION_DATA, &corr, &corr_len, false);
    uint8_t text[PAYLOAD_MAX + 3];
    size_t n = req->payload_len < PAYLOAD_MAX ? req->payload_len : PAYLOAD_MAX;
    memcpy(text, "re:", 3);
    memcpy(text + 3, req->payload, n);
    idevs_seal_input in = {.recipient = &req->sender, .topic = response_topic, .payload = text, .payload_len = n + 3,
                           .provenance = &req->message_id, .provenance_count = 1};
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_err err = idevs_envelope_seal(p->ctx, &in, &env, &env_len, NULL);
    mosquitto_property *out_props = NULL;
    if (err == IDEVS_OK && corr != NULL &&
        mosquitto_property_add_binary(&out_props, MQTT_PROP_CORRELATION_DATA, corr, corr_len) != MOSQ_ERR_SUCCESS)
        err = IDEVS_ERR_NOMEM;
    if (err == IDEVS_OK && mosquitto_publish_v5(p->mosq, NULL, response_topic, (int)env_len, env, 1, false,
                                                out_props) != MOSQ_ERR_SUCCESS)
        err = IDEVS_ERR_IO;
    if (err != IDEVS_OK) {
        fprintf(stderr, "idevs_broker_peer: cannot answer: %s\n", idevs_err_name(err));
        p->failed = true;
    }
    mosquitto_property_free_all(&out_props);
    free(env);
    free(corr);
    free(response_topic);
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)m;
    peer *p = arg;
    idevs_envelope_ctx *ctx = p->recv_ctx != NULL ? p->recv_ctx : p->ctx;
    idevs_opened o;
    idevs_err err = idevs_envelope_open(ctx, msg->topic, msg->payload, (size_t)msg->payloadlen, &o);
    if (err != IDEVS_OK) {
        p->rejected++;
        if (strcmp(p->mode, "collect") == 0) {
            printf("rejected %s\n", idevs_err_name(err));
            fflush(stdout);
        } else
            fprintf(stderr, "idevs_broker_peer: an envelope on %s does not open: %s\n", msg->topic,
                    idevs_err_name(err));
        return;
    }
    if (strcmp(p->mode, "collect") == 0 && p->print != NULL && strcmp(p->print, "size") == 0) {
        printf("size %zu\n", o.payload_len);
        fflush(stdout);
    } else if (strcmp(p->mode, "collect") == 0)
        print_payload(o.payload, o.payload_len);
    else if (strcmp(p->mode, "respond") == 0)
        answer(p, &o, props);
    else if (strcmp(p->mode, "latency") == 0) {
        /* payload "<index>" */
        long i = 0;
        char text[24];
        size_t n = o.payload_len < sizeof text - 1 ? o.payload_len : sizeof text - 1;
        memcpy(text, o.payload, n);
        text[n] = '\0';
        if (parse_long(text, 0, p->count - 1, &i) && p->rtt_us[i] < 0)
            p->rtt_us[i] = (double)(now_us() - p->sent_at[i]);
    }
    p->received++;
    idevs_opened_clear(&o);
}

/* Runs the network loop until *flag (or failure), at most timeout_ms. */
static bool loop_until(peer *p, const bool *flag, long timeout_ms)
{
    uint64_t deadline = now_us() + (uint64_t)timeout_ms * 1000u;
    while (!*flag && !p->failed && now_us() < deadline)
        if (mosquitto_loop(p->mosq, 50, 1) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "idevs_broker_peer: connection lost\n");
            return false;
        }
    return *flag && !p->failed;
}

static bool loop_until_count(peer *p, const long *counter, long want, long timeout_ms)
{
    uint64_t deadline = now_us() + (uint64_t)timeout_ms * 1000u;
    while (*counter < want && !p->failed && now_us() < deadline)
        if (mosquitto_loop(p->mosq, 50, 1) != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "idevs_broker_peer: connection lost\n");
            return false;
        }
    return *counter >= want && !p->failed;
}

static bool connect_broker(peer *p)
{
    p->mosq = mosquitto_new(p->id, true, p);
    if (p->mosq == NULL)
        return false;
    mosquitto_int_option(p->mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    /* Small packets must not wait for the peer's delayed ACK (Nagle): that would be measured, not the plugin. */
    mosquitto_int_option(p->mosq, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_connect_v5_callback_set(p->mosq, on_connect);
    mosquitto_subscribe_v5_callback_set(p->mosq, on_subscribe);
    mosquitto_publish_v5_callback_set(p->mosq, on_publish);
    mosquitto_message_v5_callback_set(p->mosq, on_message);
    if (mosquitto_connect(p->mosq, "127.0.0.1", p->port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "idevs_broker_peer: cannot connect to 127.0.0.1:%d\n", p->port);
        return false;
    }
    return loop_until(p, &p->connected, 5000);
}

static bool subscribe(peer *p, const char *topic)
{
    if (mosquitto_subscribe_v5(p->mosq, NULL, topic, 1, 0, NULL) != MOSQ_ERR_SUCCESS)
        return false;
    return loop_until(p, &p->subscribed, 5000);
}

static bool seal_publish(peer *p, const char *topic, const uint8_t *payload, size_t len)
{
    idevs_seal_input in = {.recipient = &p->to_uuid, .topic = topic, .payload = payload, .payload_len = len};
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_err err = idevs_envelope_seal(p->ctx, &in, &env, &env_len, NULL);
    if (err != IDEVS_OK) {
        fprintf(stderr, "idevs_broker_peer: cannot seal: %s\n", idevs_err_name(err));
        return false;
    }
    int rc = env_len <= INT32_MAX ? mosquitto_publish_v5(p->mosq, NULL, topic, (int)env_len, env, 1, false, NULL)
                                  : MOSQ_ERR_PAYLOAD_SIZE;
    free(env);
    return rc == MOSQ_ERR_SUCCESS;
}

/* ---- modes ---- */

/* A payload of size bytes, "0123456789" repeated (malloc'd). */
static uint8_t *sized_payload(long size)
{
    uint8_t *buf = malloc((size_t)size);
    for (long i = 0; buf != NULL && i < size; i++)
        buf[i] = (uint8_t)('0' + i % 10);
    return buf;
}

static int run_send_sized(peer *p)
{
    uint8_t *buf = sized_payload(p->size);
    bool ok = buf != NULL && seal_publish(p, p->topic, buf, (size_t)p->size);
    free(buf);
    ok = ok && loop_until_count(p, &p->acked, 1, 60000);
    fprintf(stderr, "idevs_broker_peer: sent 1 of %ld bytes, acknowledged %ld\n", p->size, p->acked);
    return ok && p->ack_failures == 0 ? 0 : 1;
}

static int run_junk(peer *p)
{
    if (p->to == NULL || p->topic == NULL || p->size <= 0 || p->count <= 0)
        return usage("junk needs --to, --topic, --size and --count");
    uint8_t *buf = sized_payload(p->size);
    idevs_seal_input in = {.recipient = &p->to_uuid, .topic = p->topic, .payload = buf, .payload_len = (size_t)p->size};
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_err err = buf != NULL ? idevs_envelope_seal(p->ctx, &in, &env, &env_len, NULL) : IDEVS_ERR_NOMEM;
    free(buf);
    if (err != IDEVS_OK || env_len < 64) {
        fprintf(stderr, "idevs_broker_peer: cannot seal: %s\n", idevs_err_name(err));
        return 1;
    }
    long published = 0;
    for (long i = 0; i < p->count; i++) {
        memcpy(env + env_len - sizeof i, &i, sizeof i); /* another body each time, the same clear header */
        if (mosquitto_publish_v5(p->mosq, NULL, p->topic, (int)env_len, env, 1, false, NULL) != MOSQ_ERR_SUCCESS)
            break;
        published++;
        /* One at a time on the wire: the broker reads each before the next is queued here. */
        while (mosquitto_want_write(p->mosq))
            if (mosquitto_loop(p->mosq, 10, 1) != MOSQ_ERR_SUCCESS)
                break;
    }
    free(env);
    bool ok = loop_until_count(p, &p->acked, published, 60000);
    fprintf(stderr, "idevs_broker_peer: junk published %ld, acknowledged %ld\n", published, p->acked);
    return ok && published == p->count ? 0 : 1;
}

static int run_send(peer *p)
{
    if (p->to != NULL && p->topic != NULL && p->size > 0)
        return run_send_sized(p);
    if (p->to == NULL || p->topic == NULL || (p->payload == NULL && p->count <= 0))
        return usage("send needs --to, --topic and --payload or --count");
    long count = p->payload != NULL ? 1 : p->count;
    for (long i = 1; i <= count; i++) {
        char text[PAYLOAD_MAX];
        int n = p->payload != NULL ? snprintf(text, sizeof text, "%s", p->payload)
                                   : snprintf(text, sizeof text, "%s%ld", p->prefix, i);
        if (n < 0 || (size_t)n >= sizeof text || !seal_publish(p, p->topic, (const uint8_t *)text, (size_t)n))
            return 1;
        /* Keep the stream paced: the loop also sends and acknowledges while it waits. */
        uint64_t until = now_us() + (uint64_t)p->interval_ms * 1000u;
        do
            mosquitto_loop(p->mosq, p->interval_ms > 0 ? 5 : 0, 1);
        while (now_us() < until);
    }
    bool ok = loop_until_count(p, &p->acked, count, 20000);
    fprintf(stderr, "idevs_broker_peer: sent %ld, acknowledged %ld, refused %ld\n", count, p->acked, p->ack_failures);
    return ok && p->ack_failures == 0 ? 0 : 1;
}

static int run_raw(peer *p)
{
    if (p->file == NULL || p->topic == NULL || p->count <= 0)
        return usage("raw needs --file, --topic and --count");
    FILE *f = fopen(p->file, "rb");
    if (f == NULL)
        return usage("cannot open --file");
    static uint8_t buf[1u << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (long i = 0; i < p->count; i++)
        if (mosquitto_publish_v5(p->mosq, NULL, p->topic, (int)n, buf, 1, false, NULL) != MOSQ_ERR_SUCCESS)
            return 1;
    bool ok = loop_until_count(p, &p->acked, p->count, 20000);
    fprintf(stderr, "idevs_broker_peer: published %ld, acknowledged %ld\n", p->count, p->acked);
    return ok && p->ack_failures == 0 ? 0 : 1;
}

static int run_collect(peer *p)
{
    if (p->topic == NULL || p->count <= 0)
        return usage("collect needs --topic and --count");
    if (!subscribe(p, p->topic))
        return 1;
    printf("ready\n");
    fflush(stdout);
    bool ok = loop_until_count(p, &p->received, p->count, p->timeout_s * 1000);
    if (ok && p->linger_ms > 0) { /* anything more is unexpected: print it too */
        bool never = false;
        (void)loop_until(p, &never, p->linger_ms);
    }
    fprintf(stderr, "idevs_broker_peer: %ld opened, %ld rejected\n", p->received, p->rejected);
    return ok ? 0 : 1;
}

static int run_respond(peer *p)
{
    if (p->topic == NULL || p->count <= 0)
        return usage("respond needs --topic and --count");
    if (!subscribe(p, p->topic))
        return 1;
    printf("ready\n");
    fflush(stdout);
    bool ok = loop_until_count(p, &p->received, p->count, p->timeout_s * 1000);
    ok = ok && loop_until_count(p, &p->acked, p->count, 5000);
    fprintf(stderr, "idevs_broker_peer: %ld answered\n", p->acked);
    return ok ? 0 : 1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_latency(peer *p)
{
    if (p->to == NULL || p->topic == NULL || p->out_topic == NULL || p->recv_key == NULL || p->recv_cert == NULL ||
        p->count <= 0)
        return usage("latency needs --to, --topic, --out-topic, --recv-key, --recv-cert and --count");
    idevs_err err = idevs_identity_load(p->recv_key, p->recv_cert, &p->recv_self);
    if (err == IDEVS_OK)
        err = idevs_envelope_ctx_new(p->recv_self, p->policy, NULL, &p->recv_ctx);
    if (err == IDEVS_OK)
        err = add_peer_file(p->recv_ctx, p->to, NULL);
    if (err != IDEVS_OK)
        return usage("cannot load the receiving identity");
    p->sent_at = calloc((size_t)p->count, sizeof *p->sent_at);
    p->rtt_us = malloc((size_t)p->count * sizeof *p->rtt_us);
    if (p->sent_at == NULL || p->rtt_us == NULL || !subscribe(p, p->out_topic))
        return 1;
    for (long i = 0; i < p->count; i++)
        p->rtt_us[i] = -1;
    long lost = 0;
    for (long i = 0; i < p->count; i++) {
        char text[24];
        int n = snprintf(text, sizeof text, "%ld", i);
        long before = p->received;
        p->sent_at[i] = now_us();
        if (!seal_publish(p, p->topic, (const uint8_t *)text, (size_t)n))
            return 1;
        if (!loop_until_count(p, &p->received, before + 1, 2000))
            lost++;
        if (p->interval_ms > 0) {
            bool never = false;
            (void)loop_until(p, &never, p->interval_ms);
        }
    }
    size_t got = 0;
    for (long i = 0; i < p->count; i++)
        if (p->rtt_us[i] >= 0)
            p->rtt_us[got++] = p->rtt_us[i];
    if (got == 0) {
        fprintf(stderr, "idevs_broker_peer: no output arrived\n");
        return 1;
    }
    qsort(p->rtt_us, got, sizeof *p->rtt_us, cmp_double);
    double sum = 0;
    for (size_t i = 0; i < got; i++)
        sum += p->rtt_us[i];
    printf("round trips %zu (lost %ld): mean %.3f ms, p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, max %.3f ms\n", got,
           lost, sum / (double)got / 1000, p->rtt_us[got / 2] / 1000, p->rtt_us[got * 9 / 10] / 1000,
           p->rtt_us[got * 99 / 100] / 1000, p->rtt_us[got - 1] / 1000);
    return lost == 0 ? 0 : 1;
}

static int parse(int argc, char **argv, peer *p)
{
    p->mode = argv[1];
    p->prefix = "";
    p->timeout_s = 20;
    p->policy = idevs_cert_policy_new();
    if (p->policy == NULL)
        return usage("out of memory");
    for (int i = 2; i < argc; i++) {
        if (strncmp(argv[i], "--", 2) != 0)
            return usage("options start with --");
        const char *name = argv[i] + 2;
        bool takes_value = true;
        bool policy_setting = idevs_cert_policy_is_setting(name, &takes_value);
        const char *v = NULL;
        if (takes_value) {
            if (i + 1 >= argc)
                return usage("an option lacks its value");
            v = argv[++i];
        }
        if (policy_setting) {
            char why[256];
            if (idevs_cert_policy_apply(p->policy, name, v, why, sizeof why) != IDEVS_OK)
                return usage(why);
            continue;
        }
        long port = 0;
        if (strcmp(name, "port") == 0 && parse_long(v, 1, 65535, &port))
            p->port = (int)port;
        else if (strcmp(name, "key") == 0)
            p->key = v;
        else if (strcmp(name, "cert") == 0)
            p->cert = v;
        else if (strcmp(name, "id") == 0)
            p->id = v;
        else if (strcmp(name, "to") == 0)
            p->to = v;
        else if (strcmp(name, "from") == 0)
            p->from = v;
        else if (strcmp(name, "topic") == 0)
            p->topic = v;
        else if (strcmp(name, "out-topic") == 0)
            p->out_topic = v;
        else if (strcmp(name, "payload") == 0)
            p->payload = v;
        else if (strcmp(name, "prefix") == 0)
            p->prefix = v;
        else if (strcmp(name, "file") == 0)
            p->file = v;
        else if (strcmp(name, "recv-key") == 0)
            p->recv_key = v;
        else if (strcmp(name, "recv-cert") == 0)
            p->recv_cert = v;
        else if (strcmp(name, "print") == 0)
            p->print = v;
        else if (strcmp(name, "count") == 0 ? !parse_long(v, 1, COUNT_MAX, &p->count)
                 : strcmp(name, "interval-ms") == 0 ? !parse_long(v, 0, 60000, &p->interval_ms)
                 : strcmp(name, "timeout-s") == 0 ? !parse_long(v, 1, 600, &p->timeout_s)
                 : strcmp(name, "linger-ms") == 0 ? !parse_long(v, 0, 60000, &p->linger_ms)
                 : strcmp(name, "size") == 0 ? !parse_long(v, 1, 256L * 1024 * 1024, &p->size)
                                                  : true)
            return usage("unknown option or bad value");
    }
    if (p->port == 0 || p->key == NULL || p->cert == NULL)
        return usage("--port, --key and --cert are required");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        return usage("usage: idevs_broker_peer send|raw|junk|collect|respond|latency OPTIONS (see the source's header)");
    peer p;
    memset(&p, 0, sizeof p);
    int rc = parse(argc, argv, &p);
    if (rc == 0) {
        idevs_err err = idevs_identity_load(p.key, p.cert, &p.self);
        idevs_envelope_options eopts; /* payloads up to the largest a descriptor may allow */
        idevs_envelope_options_default(&eopts);
        eopts.max_payload = IDEVS_PAYLOAD_MAX_LIMIT;
        if (err == IDEVS_OK)
            err = idevs_envelope_ctx_new(p.self, p.policy, &eopts, &p.ctx);
        if (err == IDEVS_OK && p.to != NULL)
            err = add_peer_file(p.ctx, p.to, &p.to_uuid);
        if (err == IDEVS_OK && p.from != NULL)
            err = add_peer_file(p.ctx, p.from, NULL);
        if (err != IDEVS_OK) {
            fprintf(stderr, "idevs_broker_peer: setting up the identity or the peer: %s\n", idevs_strerror(err));
            rc = 1;
        }
    }
    mosquitto_lib_init();
    if (rc == 0 && !connect_broker(&p))
        rc = 1;
    if (rc == 0) {
        if (strcmp(p.mode, "send") == 0)
            rc = run_send(&p);
        else if (strcmp(p.mode, "raw") == 0)
            rc = run_raw(&p);
        else if (strcmp(p.mode, "junk") == 0)
            rc = run_junk(&p);
        else if (strcmp(p.mode, "collect") == 0)
            rc = run_collect(&p);
        else if (strcmp(p.mode, "respond") == 0)
            rc = run_respond(&p);
        else if (strcmp(p.mode, "latency") == 0)
            rc = run_latency(&p);
        else
            rc = usage("unknown mode");
        mosquitto_disconnect_v5(p.mosq, 0, NULL);
        (void)mosquitto_loop(p.mosq, 100, 1);
    }
    if (p.mosq != NULL)
        mosquitto_destroy(p.mosq);
    mosquitto_lib_cleanup();
    idevs_envelope_ctx_free(p.ctx);
    idevs_envelope_ctx_free(p.recv_ctx);
    idevs_identity_free(p.self);
    idevs_identity_free(p.recv_self);
    idevs_cert_policy_free(p.policy);
    free(p.sent_at);
    free(p.rtt_us);
    return rc;
}
