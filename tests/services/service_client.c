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
 *       window. on_message must run exactly once. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/pem.h>

#include "service_internal.h"

static int passed, failed;

static void check(bool cond, const char *what)
{
    if (cond) {
        passed++;
        printf("ok - %s\n", what);
    } else {
        failed++;
        printf("not ok - %s\n", what);
    }
}

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

static int start(int argc, char **argv)
{
    const char *expected = argv[2];
    idevs_service_config cfg;
    idevs_service_config_default(&cfg);
    if (parse(&cfg, argc, argv, 3) != 0)
        return 2;
    char why[1024] = "";
    idevs_service *svc = NULL;
    idevs_err err = idevs_service_new(&cfg, NULL, NULL, &svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(svc, why, sizeof why);
    printf("# %s: %s\n", idevs_err_name(err), why);
    char what[256];
    snprintf(what, sizeof what, "the library returns %s", expected);
    check(strcmp(idevs_err_name(err), expected) == 0, what);
    if (err != IDEVS_OK)
        check(strlen(why) > 20, "... with a sentence saying why");
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return failed == 0 ? 0 : 1;
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
    BIO *bio = BIO_new_mem_buf(svc->cert_pem, (int)svc->cert_pem_len);
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX], count = 0;
    X509 *x;
    while (bio != NULL && count < IDEVS_CHAIN_MAX && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        der[count] = NULL;
        int n = i2d_X509(x, &der[count]);
        X509_free(x);
        if (n <= 0)
            break;
        len[count++] = (size_t)n;
    }
    BIO_free(bio);
    idevs_envelope_ctx *ctx = NULL;
    bool ok = count > 0 && idevs_envelope_ctx_new(svc->self, svc->policy, NULL, &ctx) == IDEVS_OK &&
              idevs_envelope_allow_sender(ctx, &svc->deployment->program) == IDEVS_OK &&
              idevs_envelope_add_peer(ctx, (const uint8_t *const *)der, len, count, NULL) == IDEVS_OK;
    for (size_t i = 0; i < count; i++)
        OPENSSL_free(der[i]);
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
    check(len > 0 && len < sizeof env, "the captured envelope is read");
    idevs_service_config cfg;
    idevs_service_config_default(&cfg);
    if (parse(&cfg, argc, argv, 4) != 0)
        return 2;
    char why[1024] = "";
    idevs_service *svc = NULL;
    idevs_err err = idevs_service_new(&cfg, on_message, NULL, &svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(svc, why, sizeof why);
    if (err != IDEVS_OK)
        printf("# %s: %s\n", idevs_err_name(err), why);
    check(err == IDEVS_OK, "the service starts");
    if (err == IDEVS_OK) {
        idevs_service_stats s;
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        check(calls == 1 && s.delivered == 1, "the envelope is opened and delivered once");
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        check(calls == 1 && s.duplicates == 1 && s.rejected_by_reason[IDEVS_ERR_REPLAY] == 1 && s.rejected == 0,
              "the same envelope again is dropped as a duplicate (replay window) and counted");
        check(fresh_context(svc), "the replay windows are reset (a fresh envelope context)");
        svc_receive(svc, topic, env, len, NULL, 0);
        idevs_service_get_stats(svc, &s);
        check(calls == 1 && s.duplicates == 2 && s.rejected_by_reason[IDEVS_ERR_REPLAY] == 1 && s.rejected == 0,
              "... and it is still dropped, by the message id window, and counted");
        check(s.received == 3 && s.delivered == 1, "received 3, delivered 1");
        printf("# payload delivered: %s\n", last_payload[0] ? "yes" : "no");
    }
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return failed == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
    int rc = 2;
    if (argc >= 3 && strcmp(argv[1], "start") == 0)
        rc = start(argc, argv);
    else if (argc >= 4 && strcmp(argv[1], "duplicate") == 0)
        rc = duplicate(argc, argv);
    else
        fprintf(stderr, "usage: service_client start EXPECTED_ERROR [OPTIONS] | duplicate ENVELOPE TOPIC [OPTIONS]\n");
    return rc;
}
