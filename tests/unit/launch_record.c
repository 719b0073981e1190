/* What a launcher's callbacks saw; see launch_record.h. */
#include "launch_record.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>

#include "harness.h"

void launch_record_on_event(void *arg, idevs_launcher_event event, const char *message)
{
    launch_record *r = arg;
    if (r->event_count < LAUNCH_EVENTS_MAX) {
        snprintf(r->events[r->event_count], sizeof r->events[0], "%s", message);
        r->event_kind[r->event_count++] = (int)event;
    }
}

void launch_record_on_publish(void *arg, const idevs_launcher_publish *p)
{
    launch_record *r = arg;
    if (strstr(p->topic, "/receipt/to/") != NULL) {
        r->receipt_count++;
        r->receipt_id = p->delivery_id;
        snprintf(r->receipt_topic, sizeof r->receipt_topic, "%s", p->topic);
        free(r->receipt_env);
        r->receipt_env = malloc(p->envelope_len);
        CU_ASSERT_FATAL(r->receipt_env != NULL);
        memcpy(r->receipt_env, p->envelope, p->envelope_len);
        r->receipt_len = p->envelope_len;
        return;
    }
    CU_ASSERT_FATAL(r->pub_count < LAUNCH_RECORD_MAX);
    size_t i = r->pub_count++;
    r->pub_id[i] = p->delivery_id;
    r->pub_env[i] = malloc(p->envelope_len);
    CU_ASSERT_FATAL(r->pub_env[i] != NULL);
    memcpy(r->pub_env[i], p->envelope, p->envelope_len);
    r->pub_len[i] = p->envelope_len;
    snprintf(r->pub_topic[i], sizeof r->pub_topic[i], "%s", p->topic);
    snprintf(r->pub_response_topic[i], sizeof r->pub_response_topic[i], "%s",
             p->response_topic != NULL ? p->response_topic : "");
    r->pub_correlation_len[i] = p->correlation_len;
    if (p->correlation != NULL && p->correlation_len > 0) {
        r->pub_correlation[i] = malloc(p->correlation_len);
        CU_ASSERT_FATAL(r->pub_correlation[i] != NULL);
        memcpy(r->pub_correlation[i], p->correlation, p->correlation_len);
    }
}

static void on_refused(void *arg, uint64_t id, size_t index, const char *code)
{
    launch_record *r = arg;
    CU_ASSERT(index < IDEVS_LAUNCHER_REFUSALS_MAX);
    r->refused_id = id;
    snprintf(r->refused_code, sizeof r->refused_code, "%s", code);
}

static void on_done(void *arg, uint64_t id, idevs_err status)
{
    launch_record *r = arg;
    CU_ASSERT_FATAL(r->done_count < LAUNCH_RECORD_MAX);
    snprintf(r->done_refusal[r->done_count], sizeof r->done_refusal[0], "%s",
             r->refused_id == id ? r->refused_code : "");
    r->refused_id = 0;
    r->done_id[r->done_count] = id;
    r->done_status[r->done_count++] = status;
}

idevs_launcher_callbacks launch_record_callbacks(launch_record *r)
{
    idevs_launcher_callbacks cb = {launch_record_on_publish, on_done, r, on_refused};
    return cb;
}

void launch_record_clear(launch_record *r)
{
    for (size_t i = 0; i < r->pub_count; i++) {
        free(r->pub_env[i]);
        free(r->pub_correlation[i]);
    }
    free(r->receipt_env);
    memset(r, 0, sizeof *r);
}

void launch_write_file(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fwrite(data, 1, len, f) == len);
    CU_ASSERT_FATAL(fclose(f) == 0);
}

void launch_write_cert(const char *path, const idevs_identity *id)
{
    size_t len = 0;
    const uint8_t *der = idevs_identity_chain_der(id, 0, &len);
    const unsigned char *p = der;
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    CU_ASSERT_FATAL(cert != NULL);
    FILE *f = fopen(path, "w");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(PEM_write_X509(f, cert) == 1);
    fclose(f);
    X509_free(cert);
}

int64_t launch_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}
