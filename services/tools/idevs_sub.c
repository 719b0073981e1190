/* idevs-sub: receive what an integration process sends to this service, in the style of mosquitto_sub; or,
 * with --inspect, look at the envelopes on any topic without keys.
 *
 *   idevs-sub --pki pki --name taxi --process rewards --policy allow-process-backend-insecure -v
 *   idevs-sub --inspect -t 'idevs/rewards/#' -C 5
 *
 * Normal mode verifies the compartment (idevs_service_start), subscribes to the outputs and requests the
 * verified descriptor addresses to this service, and prints each opened payload on its own line (-v: prefixed
 * with the output's or request's name and the message id). --respond TEXT answers each request with TEXT.
 * Inspect mode needs no identity: it prints each envelope's clear headers (idevs_inspect_envelope) and never
 * a payload. Exit status: 0 success (COUNT messages when -C is given); 1 a failure; 2 a usage error; 27 -W
 * passed before COUNT messages arrived (as mosquitto_sub). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "idevs_hex.h"
#include "idevs_inspect.h"
#include "idevs_service.h"
#include "idevs_service_app.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2, EXIT_TIMEOUT = 27 };

#define NAMES_MAX 64

static const char usage[] =
    "usage: idevs-sub [OPTIONS] [-t NAME]... [-C COUNT] [-W SECONDS] [-v] [--respond TEXT]\n"
    "       idevs-sub --inspect -t TOPIC... [-h HOST] [-p PORT] [-C COUNT] [-W SECONDS]\n"
    "Prints the payloads the integration process sends to this service, one per line.\n"
    "  -t, --topic NAME         only this output or request (repeatable; default: all addressed to this service);\n"
    "                           with --inspect: an MQTT topic filter, wildcards allowed (repeatable)\n"
    "  -C, --count COUNT        exit after COUNT messages\n"
    "  -W, --timeout SECONDS    exit after SECONDS (status 27 if COUNT was not reached)\n"
    "  -v, --verbose            prefix each payload with \"NAME MESSAGE_ID \"; report verification and\n"
    "                           reconnection on stderr\n"
    "  --respond TEXT           answer each request with TEXT\n"
    "  --inspect                print the clear headers of every envelope on the -t topics, without keys\n"
    "  --help                   this text\n";

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

typedef struct sub_state {
    const char *names[NAMES_MAX];
    size_t name_count;
    unsigned long count;   /* 0: unlimited */
    unsigned long printed;
    bool verbose;
    const char *respond;
    idevs_err respond_error;
} sub_state;

static bool wanted(const sub_state *st, const char *name)
{
    if (st->name_count == 0)
        return true;
    for (size_t i = 0; i < st->name_count; i++)
        if (strcmp(st->names[i], name) == 0)
            return true;
    return false;
}

static void on_message(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    sub_state *st = arg;
    if (!wanted(st, msg->name) || (st->count > 0 && st->printed >= st->count))
        return;
    if (msg->kind == IDEVS_SERVICE_REQUEST && st->respond != NULL) {
        idevs_err err = idevs_service_respond(svc, msg, st->respond, strlen(st->respond));
        if (err != IDEVS_OK)
            st->respond_error = err;
    }
    if (st->verbose) {
        char id[2 * IDEVS_UUID_LEN + 1];
        idevs_hex_encode(msg->message_id.b, sizeof msg->message_id.b, id);
        printf("%s %s ", msg->name, id);
    }
    fwrite(msg->payload, 1, msg->payload_len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    st->printed++;
}

static void report_peer(const idevs_service *svc, const char *process)
{
    idevs_service_peer_info peer;
    idevs_service_peer(svc, &peer);
    char uuid[IDEVS_UUID_STR_LEN], m[17], d[17];
    idevs_uuid_format(&peer.compartment, uuid);
    idevs_hex_encode(peer.measurement, 8, m);
    idevs_hex_encode(peer.descriptor_digest, 8, d);
    fprintf(stderr,
            "idevs-sub: compartment of '%s' verified: urn:uuid:%s, backend %s, measurement %s..., descriptor %s... "
            "(certificate %llu)\n",
            process, uuid, peer.backend ? peer.backend : "?", m, d, (unsigned long long)peer.certificates_verified);
}

static int run_service(idevs_service_config *cfg, sub_state *st, unsigned long timeout_s)
{
    char why[1024];
    idevs_service *svc = NULL;
    idevs_err err = idevs_service_new(cfg, on_message, st, &svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(svc, why, sizeof why);
    if (err != IDEVS_OK) {
        fprintf(stderr, "idevs-sub: %s (%s)\n", why, idevs_err_name(err));
        idevs_service_free(svc);
        return EXIT_FAILED;
    }
    if (st->verbose)
        report_peer(svc, cfg->process);
    uint64_t deadline = timeout_s > 0 ? now_ms() + timeout_s * 1000u : 0;
    uint64_t verified = 1, reconnects = 0;
    int rc = EXIT_OK;
    while (!app_stopping && (st->count == 0 || st->printed < st->count)) {
        if (deadline != 0 && now_ms() >= deadline) {
            rc = EXIT_TIMEOUT;
            break;
        }
        err = idevs_service_run(svc, 100);
        if (err != IDEVS_OK) {
            fprintf(stderr, "idevs-sub: %s (%s)\n", idevs_service_last_error(svc), idevs_err_name(err));
            rc = EXIT_FAILED;
            break;
        }
        if (st->respond_error != IDEVS_OK) {
            fprintf(stderr, "idevs-sub: cannot answer a request: %s\n", idevs_strerror(st->respond_error));
            st->respond_error = IDEVS_OK;
        }
        idevs_service_stats stats;
        idevs_service_get_stats(svc, &stats);
        idevs_service_peer_info peer;
        idevs_service_peer(svc, &peer);
        if (st->verbose && stats.reconnects != reconnects)
            fprintf(stderr, "idevs-sub: reconnecting to %s:%d (attempt %llu)\n", cfg->host, cfg->port,
                    (unsigned long long)stats.reconnects);
        if (st->verbose && peer.certificates_verified != verified && idevs_service_ready(svc))
            report_peer(svc, cfg->process);
        reconnects = stats.reconnects;
        if (idevs_service_ready(svc))
            verified = peer.certificates_verified;
    }
    if (st->respond != NULL)
        idevs_service_flush(svc, 5000);
    if (st->verbose) {
        idevs_service_stats stats;
        idevs_service_get_stats(svc, &stats);
        idevs_service_peer_info peer;
        idevs_service_peer(svc, &peer);
        fprintf(stderr, "idevs-sub: received %llu, delivered %llu, duplicates %llu, rejected %llu, certificates "
                "verified %llu, key epochs accepted %llu\n",
                (unsigned long long)stats.received, (unsigned long long)stats.delivered,
                (unsigned long long)stats.duplicates, (unsigned long long)stats.rejected,
                (unsigned long long)peer.certificates_verified, (unsigned long long)stats.epochs_accepted);
    }
    idevs_service_free(svc);
    return rc;
}

/* ---- --inspect: plain MQTT, no identity ---- */

typedef struct inspect_state {
    unsigned long count, printed;
    bool connected, refused;
    int reason;
    char **topics;
    size_t topic_count;
} inspect_state;

static void inspect_on_connect(struct mosquitto *mosq, void *obj, int rc, int flags, const mosquitto_property *p)
{
    (void)flags, (void)p;
    inspect_state *st = obj;
    if (rc != 0) {
        st->refused = true;
        st->reason = rc;
        return;
    }
    st->connected = true;
    mosquitto_subscribe_multiple(mosq, NULL, (int)st->topic_count, st->topics, 1, 0, NULL);
}

static void inspect_on_message(struct mosquitto *mosq, void *obj, const struct mosquitto_message *msg,
                               const mosquitto_property *p)
{
    (void)mosq, (void)p;
    inspect_state *st = obj;
    if (msg->payloadlen < 0 || (st->count > 0 && st->printed >= st->count))
        return;
    fputs("topic ", stdout);
    idevs_inspect_print_text(stdout, msg->topic, 1024);
    printf("%s\n", msg->retain ? " (retained)" : "");
    if (idevs_inspect_envelope(stdout, msg->payload, (size_t)msg->payloadlen, 2) != IDEVS_OK)
        printf("  not an idevs envelope: %d bytes\n", msg->payloadlen);
    fflush(stdout);
    st->printed++;
}

static int run_inspect(const idevs_service_config *cfg, inspect_state *st, unsigned long timeout_s)
{
    mosquitto_lib_init();
    struct mosquitto *mosq = mosquitto_new(cfg->client_id, true, st);
    int rc = EXIT_OK;
    if (mosq == NULL) {
        fprintf(stderr, "idevs-sub: cannot create the MQTT client\n");
        mosquitto_lib_cleanup();
        return EXIT_FAILED;
    }
    mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_connect_v5_callback_set(mosq, inspect_on_connect);
    mosquitto_message_v5_callback_set(mosq, inspect_on_message);
    int mrc = MOSQ_ERR_SUCCESS;
    if (cfg->username != NULL)
        mrc = mosquitto_username_pw_set(mosq, cfg->username, cfg->password);
    if (mrc == MOSQ_ERR_SUCCESS && cfg->tls_cafile != NULL)
        mrc = mosquitto_tls_set(mosq, cfg->tls_cafile, NULL, cfg->tls_certfile, cfg->tls_keyfile, NULL);
    if (mrc == MOSQ_ERR_SUCCESS)
        mrc = mosquitto_connect_bind_v5(mosq, cfg->host, cfg->port, (int)cfg->keepalive_s, NULL, NULL);
    if (mrc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "idevs-sub: cannot connect to %s:%d: %s\n", cfg->host, cfg->port,
                mrc == MOSQ_ERR_ERRNO ? strerror(errno) : mosquitto_strerror(mrc));
        rc = EXIT_FAILED;
    }
    uint64_t deadline = timeout_s > 0 ? now_ms() + timeout_s * 1000u : 0;
    while (rc == EXIT_OK && !app_stopping && (st->count == 0 || st->printed < st->count)) {
        if (st->refused) {
            fprintf(stderr, "idevs-sub: the broker refused the connection: %s\n", mosquitto_reason_string(st->reason));
            rc = EXIT_FAILED;
            break;
        }
        if (deadline != 0 && now_ms() >= deadline) {
            rc = EXIT_TIMEOUT;
            break;
        }
        mrc = mosquitto_loop(mosq, 100, 1);
        if (mrc != MOSQ_ERR_SUCCESS) {
            fprintf(stderr, "idevs-sub: lost the connection to %s:%d: %s\n", cfg->host, cfg->port,
                    mosquitto_strerror(mrc));
            rc = EXIT_FAILED;
        }
    }
    if (st->connected) {
        mosquitto_disconnect(mosq);
        mosquitto_loop(mosq, 0, 1);
    }
    mosquitto_destroy(mosq);
    mosquitto_lib_cleanup();
    return rc;
}

/* idevs-sub's own options: what the service's state takes, and two of the tool's. */
typedef struct sub_options {
    sub_state *st;
    bool inspect;
    unsigned long timeout_s; /* 0: none */
} sub_options;

static int sub_option(void *opts, int argc, char **argv, int *i)
{
    sub_options *o = opts;
    sub_state *st = o->st;
    const char *a = argv[*i];
    char *end;
    if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
        st->verbose = true;
    } else if (strcmp(a, "--inspect") == 0) {
        o->inspect = true;
    } else if (*i + 1 < argc && (strcmp(a, "-t") == 0 || strcmp(a, "--topic") == 0)) {
        if (st->name_count == NAMES_MAX) {
            fprintf(stderr, "idevs-sub: at most %d -t options\n", NAMES_MAX);
            return EXIT_USAGE;
        }
        st->names[st->name_count++] = argv[++*i];
    } else if (*i + 1 < argc && (strcmp(a, "-C") == 0 || strcmp(a, "--count") == 0)) {
        errno = 0;
        st->count = strtoul(argv[++*i], &end, 10);
        if (errno != 0 || *end != '\0' || st->count == 0 || argv[*i][0] == '-') {
            fprintf(stderr, "idevs-sub: -C: '%s' is not a positive whole number\n", argv[*i]);
            return EXIT_USAGE;
        }
    } else if (*i + 1 < argc && (strcmp(a, "-W") == 0 || strcmp(a, "--timeout") == 0)) {
        errno = 0;
        o->timeout_s = strtoul(argv[++*i], &end, 10);
        if (errno != 0 || *end != '\0' || o->timeout_s == 0 || o->timeout_s > 86400 || argv[*i][0] == '-') {
            fprintf(stderr, "idevs-sub: -W: '%s' is not a whole number of seconds from 1 to 86400\n", argv[*i]);
            return EXIT_USAGE;
        }
    } else if (*i + 1 < argc && strcmp(a, "--respond") == 0) {
        st->respond = argv[++*i];
    } else {
        return APP_OPTION_UNKNOWN;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    idevs_service_config cfg;
    sub_state st;
    memset(&st, 0, sizeof st);
    sub_options o = {.st = &st};
    int rc = app_parse_tool_options("idevs-sub", usage, argc, argv, &cfg, sub_option, &o);
    if (rc >= 0)
        return rc;
    if (o.inspect && (st.name_count == 0 || st.respond != NULL)) {
        fprintf(stderr, "idevs-sub: --inspect needs -t TOPIC and takes no --respond\n");
        idevs_service_cli_free(&cfg);
        return EXIT_USAGE;
    }
    app_install_signals();
    if (o.inspect) {
        inspect_state is;
        memset(&is, 0, sizeof is);
        is.count = st.count;
        is.topics = (char **)st.names;
        is.topic_count = st.name_count;
        rc = run_inspect(&cfg, &is, o.timeout_s);
    } else {
        rc = run_service(&cfg, &st, o.timeout_s);
    }
    idevs_service_cli_free(&cfg);
    return rc;
}
