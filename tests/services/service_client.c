/* A service written with the library, for tests/services/test_services.sh. Prints "ok - ..." or "not ok - ..."
 * lines; exit status 0 when every check passed.
 *
 *   service_client start EXPECTED_ERROR [OPTIONS]
 *       idevs_service_new + idevs_service_start must return EXPECTED_ERROR (an idevs_err_name, "ok" for
 *       success) and, for an error, a sentence that names the problem.
 *   service_client duplicate ENVELOPE_FILE TOPIC [OPTIONS]
 *       starts (verified), then hands the envelope captured on TOPIC to the receive path three times: once
 *       delivered, then dropped by the envelope's replay window, then, after the replay windows are lost (a
 *       fresh envelope context, as after the compartment's peer is re-added), dropped by the message id
 *       window. on_message must run exactly once.
 *   service_client reconnect [OPTIONS]
 *       starts (verified), then points the service at a listener that accepts every connection and closes it
 *       at once (a broken or hostile broker) and runs it for 3 s: it must try again with a growing backoff,
 *       a handful of times, never in a loop.
 *   service_client held
 *       no broker: envelopes with 64 KiB of correlation data each, arriving before the compartment is
 *       verified, are held within the 32 MiB limit, correlation data and topics counted.
 *   service_client outbox-send N [--partition-key KEY] [OPTIONS with --outbox FILE]
 *       publishes N messages under the keys k1..kN (with the partition key KEY, if given) and stops at once, as a
 *       crashed service would, before any receipt could be read: the outbox holds the N (whether they reached the
 *       broker or not).
 *   service_client outbox-resume N [OPTIONS with the same --outbox FILE]
 *       starts on that outbox: the N go again, and each is receipted once (on_receipt with its key); publishing
 *       k1 again adds nothing and tells its receipt at once.
 *   service_client answer-crash FILE [OPTIONS with --outbox FILE2]
 *       starts (verified) and, at the first request, appends "effect" to FILE (what a service stores) and ends at
 *       once inside on_message, before it answers: a service killed between its effect and its answer.
 *   service_client answer-resume [OPTIONS with the same --outbox FILE2]
 *       starts on that outbox and answers every request "answered again"; the process's copy of the request the
 *       crash left unanswered must be answered (not taken for handled), and the answer's output ("answer:...")
 *       must come back, within 20 s.
 *   service_client renewal [OPTIONS]
 *       starts (verified) as a publisher and stays connected, running the network between commands read from
 *       stdin, one a line: "pub TEXT" publishes TEXT on input 'events' and waits for the broker's
 *       acknowledgement ("published"); "wait-certificates N" runs until the service has verified N
 *       certificates of the compartment, at most 30 s ("certificates N"); "stats" prints "certificates N
 *       epochs_started N epochs_accepted N refused N". Each answer is one line, flushed. */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


#include "service_internal.h"
#include "tap.h"

static int parse(idevs_service_config *cfg, int argc, char **argv, int first)
{
    char why[512];
    for (int i = first; i < argc; i++) {
        int r = idevs_service_cli_option(cfg, argc, argv, &i, why, sizeof why);
        if (r != 1) {
            fprintf(stderr, "service_client: %s\n", r < 0 ? why : argv[i]);
            return -1;
        }
    }
    return 0;
}

/* The service of the options from argv[first]: idevs_service_new (on_message may be NULL), then
 * idevs_service_start; *err is the first that failed, with why. false, and nothing made, when an option is
 * wrong. Free cfg with idevs_service_cli_free and *svc with idevs_service_free. */
static bool service_of(idevs_service_config *cfg, int argc, char **argv, int first, idevs_service_on_message on_message,
                       idevs_service **svc, idevs_err *err, char why[1024])
{
    idevs_service_config_default(cfg);
    if (parse(cfg, argc, argv, first) != 0)
        return false;
    *svc = NULL;
    why[0] = '\0';
    *err = idevs_service_new(cfg, on_message, NULL, svc, why, 1024);
    if (*err == IDEVS_OK)
        *err = idevs_service_start(*svc, why, 1024);
    return true;
}

/* service_of, and the check that it started (why it did not, as a comment line). */
static bool service_started(idevs_service_config *cfg, int argc, char **argv, int first,
                            idevs_service_on_message on_message, idevs_service **svc, idevs_err *err)
{
    char why[1024];
    if (!service_of(cfg, argc, argv, first, on_message, svc, err, why))
        return false;
    if (*err != IDEVS_OK)
        printf("# %s: %s\n", idevs_err_name(*err), why);
    tap_check(*err == IDEVS_OK, "the service starts");
    return true;
}

static int start(int argc, char **argv)
{
    const char *expected = argv[2];
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    char why[1024];
    if (!service_of(&cfg, argc, argv, 3, NULL, &svc, &err, why))
        return 2;
    printf("# %s: %s\n", idevs_err_name(err), why);
    char what[256];
    snprintf(what, sizeof what, "the library returns %s", expected);
    tap_check(strcmp(idevs_err_name(err), expected) == 0, what);
    if (err != IDEVS_OK)
        tap_check(strlen(why) > 20, "... with a sentence saying why");
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

static unsigned calls;
static char last_payload[256];
static void on_message(idevs_service *svc, const idevs_service_message *m, void *arg)
{
    (void)svc, (void)arg;
    calls++;
    snprintf(last_payload, sizeof last_payload, "%.*s", (int)(m->payload_len < 200 ? m->payload_len : 200),
             (const char *)m->payload);
}

/* A fresh envelope context for svc, with the compartment as its only peer: the state the library has after a
 * compartment's certificate is re-added, without the replay windows of before. */
static bool fresh_context(idevs_service *svc)
{
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX], count = 0;
    if (idevs_cert_read_chain_pem((const char *)svc->cert_pem, svc->cert_pem_len, der, len, IDEVS_CHAIN_MAX, &count,
                                  NULL, 0) != IDEVS_OK)
        return false;
    idevs_envelope_ctx *ctx = NULL;
    bool ok = count > 0 && idevs_envelope_ctx_new(svc->self, svc->policy, NULL, &ctx) == IDEVS_OK &&
              idevs_envelope_allow_sender(ctx, &svc->deployment->program) == IDEVS_OK &&
              idevs_envelope_add_peer(ctx, (const uint8_t *const *)der, len, count, NULL) == IDEVS_OK;
    idevs_cert_chain_free(der, count);
    if (!ok) {
        idevs_envelope_ctx_free(ctx);
        return false;
    }
    idevs_envelope_ctx_free(svc->ctx);
    svc->ctx = ctx;
    return true;
}

static int duplicate(int argc, char **argv)
{
    const char *file = argv[2], *topic = argv[3];
    FILE *f = fopen(file, "rb");
    static uint8_t env[1 << 20];
    size_t len = f != NULL ? fread(env, 1, sizeof env, f) : 0;
    if (f != NULL)
        fclose(f);
    tap_check(len > 0 && len < sizeof env, "the captured envelope is read");
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    if (!service_started(&cfg, argc, argv, 4, on_message, &svc, &err))
        return 2;
    if (err == IDEVS_OK) {
        idevs_service_stats s;
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        tap_check(calls == 1 && s.delivered == 1, "the envelope is opened and delivered once");
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        tap_check(calls == 1 && s.duplicates == 1 && s.rejected_by_reason[IDEVS_ERR_REPLAY] == 1 && s.rejected == 0,
                  "the same envelope again is dropped as a duplicate (replay window) and counted");
        tap_check(fresh_context(svc), "the replay windows are reset (a fresh envelope context)");
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        tap_check(calls == 1 && s.duplicates == 2 && s.rejected_by_reason[IDEVS_ERR_REPLAY] == 1 && s.rejected == 0,
                  "... and it is still dropped, by the message id window, and counted");
        tap_check(s.received == 3 && s.delivered == 1, "received 3, delivered 1");
        printf("# payload delivered: %s\n", last_payload[0] ? "yes" : "no");
    }
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

/* ---- reconnect: a listener that accepts and drops every connection ---- */

static int dropper_fd = -1;
static atomic_uint dropped;

static void *dropper(void *arg)
{
    (void)arg;
    for (;;) {
        int c = accept(dropper_fd, NULL, NULL);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return NULL; /* shut down */
        }
        atomic_fetch_add(&dropped, 1);
        close(c);
    }
}

static int reconnect(int argc, char **argv)
{
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    if (!service_started(&cfg, argc, argv, 2, NULL, &svc, &err))
        return 2;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t alen = sizeof a;
    dropper_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    pthread_t thread;
    bool listening = dropper_fd >= 0 && bind(dropper_fd, (struct sockaddr *)&a, sizeof a) == 0 &&
                     listen(dropper_fd, 64) == 0 && getsockname(dropper_fd, (struct sockaddr *)&a, &alen) == 0 &&
                     pthread_create(&thread, NULL, dropper, NULL) == 0;
    tap_check(listening, "a listener that drops every connection");
    if (err == IDEVS_OK && listening) {
        svc->port = ntohs(a.sin_port);
        mosquitto_disconnect(svc->mosq); /* the broker goes; the library reconnects, to the listener */
        uint64_t end = svc_now_ms() + 3000;
        while (svc_now_ms() < end)
            idevs_service_run(svc, 50);
        idevs_service_stats s;
        idevs_service_get_stats(svc, &s);
        unsigned n = atomic_load(&dropped);
        printf("# %u connection(s) accepted and dropped in 3 s, %llu attempt(s)\n", n,
               (unsigned long long)s.reconnects);
        tap_check(n >= 2, "the service tries again after its connection is dropped");
        tap_check(n <= 6 && s.reconnects <= 6,
                  "... with a growing backoff: a handful of attempts in 3 s (100, 200, 400, 800 ms ...), not a loop");
        tap_check(!idevs_service_ready(svc), "... and is not ready meanwhile");
    }
    if (listening) {
        shutdown(dropper_fd, SHUT_RDWR);
        pthread_join(thread, NULL);
    }
    if (dropper_fd >= 0)
        close(dropper_fd);
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

/* ---- outbox: what is not receipted survives the service and goes again ---- */

static unsigned receipts_seen;
static char receipt_keys[64][16];

static void on_receipt(idevs_service *svc, const idevs_msgid *id, const char *key, void *arg)
{
    (void)svc;
    (void)arg;
    char hex[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(id, hex);
    printf("# receipt %s %s\n", key != NULL ? key : "-", hex);
    if (receipts_seen < 64)
        snprintf(receipt_keys[receipts_seen], sizeof receipt_keys[0], "%s", key != NULL ? key : "-");
    receipts_seen++;
}

static int outbox(int argc, char **argv, bool resume)
{
    long n = strtol(argv[2], NULL, 10);
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    idevs_publish_options opts = {0};
    int first = 3;
    if (!resume && argc > 4 && strcmp(argv[3], "--partition-key") == 0) {
        opts.partition_key = argv[4];
        opts.partition_key_len = strlen(argv[4]);
        first = 5;
    }
    if (n < 1 || n > 64 || !service_started(&cfg, argc, argv, first, NULL, &svc, &err))
        return 2;
    if (err == IDEVS_OK && !resume) {
        bool all = true;
        for (long i = 1; i <= n; i++) {
            char key[16], payload[32];
            snprintf(key, sizeof key, "k%ld", i);
            snprintf(payload, sizeof payload, "outbox %ld", i);
            idevs_msgid id;
            opts.key = key;
            all &= idevs_service_publish_with(svc, "events", &opts, payload, strlen(payload), &id) == IDEVS_OK;
            char hex[IDEVS_UUID_STR_LEN];
            idevs_uuid_format(&id, hex);
            printf("# sent %s %s\n", key, hex);
        }
        tap_check(all, "N keyed messages enter the outbox");
        tap_check(idevs_service_unreceipted(svc) == (size_t)n, "... and none is receipted before the service stops");
        /* A crash: no stop, no flush, nothing more read (a clean stop would wait a second for what it sent). */
        fflush(stdout);
        _exit(tap_status());
    } else if (err == IDEVS_OK) {
        idevs_service_set_on_receipt(svc, on_receipt, NULL);
        tap_check(idevs_service_unreceipted(svc) == (size_t)n, "the restarted service's outbox holds the N");
        uint64_t end = svc_now_ms() + 20000;
        while (idevs_service_unreceipted(svc) > 0 && svc_now_ms() < end)
            idevs_service_run(svc, 50);
        idevs_service_stats s;
        idevs_service_get_stats(svc, &s);
        tap_check(idevs_service_unreceipted(svc) == 0 && receipts_seen == (unsigned)n && s.receipted == (uint64_t)n,
                  "... sent again, each receipted once");
        bool keys = true;
        for (long i = 1; i <= n && i <= 64; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%ld", i);
            bool found = false;
            for (unsigned k = 0; k < receipts_seen && k < 64; k++)
                found |= strcmp(receipt_keys[k], key) == 0;
            keys &= found;
        }
        tap_check(keys, "... on_receipt names every key");
        idevs_msgid id;
        err = idevs_service_publish_keyed(svc, "events", "k1", "other", 5, &id);
        tap_check(err == IDEVS_OK && receipts_seen == (unsigned)n + 1 && idevs_service_unreceipted(svc) == 0,
                  "publishing k1 again adds nothing and tells its receipt at once");
    }
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

/* ---- answers: a service killed between its effect and its answer answers the copy ---- */

static const char *effect_file;
static unsigned answered, answers_back;

static void on_request_crash(idevs_service *svc, const idevs_service_message *m, void *arg)
{
    (void)svc;
    (void)arg;
    if (m->kind != IDEVS_SERVICE_REQUEST)
        return;
    FILE *f = fopen(effect_file, "a");
    if (f != NULL) {
        fputs("effect\n", f);
        fclose(f);
    }
    printf("# request handled, effect stored; killed before the answer\n");
    fflush(stdout);
    _exit(0);
}

static void on_request_answer(idevs_service *svc, const idevs_service_message *m, void *arg)
{
    (void)arg;
    if (m->kind == IDEVS_SERVICE_REQUEST) {
        answered += idevs_service_respond(svc, m, "answered again", 14) == IDEVS_OK;
    } else if (m->payload_len >= 7 && memcmp(m->payload, "answer:", 7) == 0) {
        answers_back++;
    }
}

static int answer_crash(int argc, char **argv)
{
    effect_file = argv[2];
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    if (!service_started(&cfg, argc, argv, 3, on_request_crash, &svc, &err))
        return 2;
    printf("ready\n");
    fflush(stdout);
    uint64_t end = svc_now_ms() + 20000;
    while (err == IDEVS_OK && svc_now_ms() < end)
        idevs_service_run(svc, 50);
    tap_check(false, "a request arrives"); /* on_request_crash ends the program before */
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

static int answer_resume(int argc, char **argv)
{
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    if (!service_started(&cfg, argc, argv, 2, on_request_answer, &svc, &err))
        return 2;
    uint64_t end = svc_now_ms() + 20000;
    while (err == IDEVS_OK && answers_back == 0 && svc_now_ms() < end)
        idevs_service_run(svc, 50);
    idevs_service_stats s;
    idevs_service_get_stats(svc, &s);
    printf("# answered %u, answers back %u, duplicates %llu\n", answered, answers_back,
           (unsigned long long)s.duplicates);
    tap_check(answered == 1 && s.duplicates == 0, "the copy of the request the crash left unanswered is answered");
    tap_check(answers_back == 1, "... and the process's output for that answer comes back");
    idevs_service_flush(svc, 2000);
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return tap_status();
}

/* ---- held: the holding queue's byte limit counts everything it keeps ---- */

static int held(void)
{
    idevs_service *svc = calloc(1, sizeof *svc);
    static uint8_t corr[65535];
    memset(corr, 0xc0, sizeof corr);
    const uint8_t env[16] = {0x08, 0x01};
    const char *topic = "idevs/echo/out/out";
    if (svc == NULL)
        return 2;
    for (size_t i = 0; i < SVC_HELD_MAX; i++)
        svc_receive(svc, topic, env, sizeof env, corr, sizeof corr);
    size_t kept = 0;
    for (size_t i = 0; i < svc->held_count; i++)
        kept += svc->held[i].len + svc->held[i].correlation_len + strlen(svc->held[i].topic) + 1;
    printf("# %zu envelope(s) held, %zu bytes with their correlation data and topics, %llu dropped\n",
           svc->held_count, kept, (unsigned long long)svc->stats.held_dropped);
    tap_check(kept <= SVC_HELD_BYTES_MAX, "held envelopes with 64 KiB correlation data each stay within 32 MiB in all");
    tap_check(svc->stats.held_dropped > 0 && svc->held_count + svc->stats.held_dropped == SVC_HELD_MAX,
              "... the ones beyond are dropped and counted");
    tap_check(svc->held_bytes == kept, "... and the count of held bytes is what is held");
    svc_held_free(svc);
    tap_check(svc->held_bytes == 0 && svc->held_count == 0, "... all released");
    free(svc);
    return tap_status();
}

/* Runs the service until a line is readable on stdin, at most ms. */
static void run_until_input(idevs_service *svc, int ms)
{
    struct pollfd p = {.fd = 0, .events = POLLIN};
    for (int waited = 0; waited < ms; waited += 100) {
        idevs_err err = idevs_service_run(svc, 0);
        if (err != IDEVS_OK)
            printf("# run: %s: %s\n", idevs_err_name(err), idevs_service_last_error(svc));
        if (poll(&p, 1, 100) > 0)
            return;
    }
}

static int renewal(int argc, char **argv)
{
    idevs_service_config cfg;
    idevs_service *svc;
    idevs_err err;
    if (!service_started(&cfg, argc, argv, 2, NULL, &svc, &err) || err != IDEVS_OK) {
        fflush(stdout);
        return 1;
    }
    printf("started\n");
    fflush(stdout);
    char line[512];
    for (;;) {
        run_until_input(svc, 1000);
        struct pollfd p = {.fd = 0, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            continue;
        if (fgets(line, sizeof line, stdin) == NULL)
            break;
        line[strcspn(line, "\n")] = '\0';
        idevs_service_peer_info peer;
        idevs_service_stats st;
        if (strncmp(line, "pub ", 4) == 0) {
            err = IDEVS_ERR_NOT_NOW;
            for (int i = 0; i < 300 && err == IDEVS_ERR_NOT_NOW; i++)
                if ((err = idevs_service_publish(svc, "events", line + 4, strlen(line + 4), NULL)) == IDEVS_ERR_NOT_NOW)
                    idevs_service_run(svc, 100);
            if (err == IDEVS_OK)
                err = idevs_service_flush(svc, 10000);
            if (err == IDEVS_OK)
                printf("published\n");
            else
                printf("not published: %s: %s\n", idevs_err_name(err), idevs_service_last_error(svc));
        } else if (strncmp(line, "wait-certificates ", 18) == 0) {
            unsigned long want = strtoul(line + 18, NULL, 10);
            idevs_service_peer(svc, &peer);
            for (int i = 0; i < 300 && peer.certificates_verified < want; i++) {
                idevs_service_run(svc, 100);
                idevs_service_peer(svc, &peer);
            }
            printf("certificates %llu\n", (unsigned long long)peer.certificates_verified);
        } else if (strcmp(line, "stats") == 0) {
            idevs_service_peer(svc, &peer);
            idevs_service_get_stats(svc, &st);
            printf("certificates %llu epochs_started %llu epochs_accepted %llu refused %llu\n",
                   (unsigned long long)peer.certificates_verified, (unsigned long long)st.epochs_started,
                   (unsigned long long)st.epochs_accepted, (unsigned long long)st.refused);
        } else {
            printf("unknown command\n");
        }
        fflush(stdout);
    }
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return 0;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc >= 3 && strcmp(argv[1], "start") == 0)
        rc = start(argc, argv);
    else if (argc >= 4 && strcmp(argv[1], "duplicate") == 0)
        rc = duplicate(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "reconnect") == 0)
        rc = reconnect(argc, argv);
    else if (argc == 2 && strcmp(argv[1], "held") == 0)
        rc = held();
    else if (argc >= 3 && strcmp(argv[1], "outbox-send") == 0)
        rc = outbox(argc, argv, false);
    else if (argc >= 3 && strcmp(argv[1], "outbox-resume") == 0)
        rc = outbox(argc, argv, true);
    else if (argc >= 2 && strcmp(argv[1], "renewal") == 0)
        rc = renewal(argc, argv);
    else if (argc >= 3 && strcmp(argv[1], "answer-crash") == 0)
        rc = answer_crash(argc, argv);
    else if (argc >= 2 && strcmp(argv[1], "answer-resume") == 0)
        rc = answer_resume(argc, argv);
    else
        fprintf(stderr, "usage: service_client start EXPECTED_ERROR [OPTIONS] | duplicate ENVELOPE TOPIC [OPTIONS]"
                        " | reconnect [OPTIONS] | held | outbox-send N [OPTIONS] | outbox-resume N [OPTIONS]"
                        " | renewal [OPTIONS] | answer-crash FILE [OPTIONS] | answer-resume [OPTIONS]\n");
    return rc;
}
