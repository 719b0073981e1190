/* The deployment descriptor (enclave-bridge/deployment.c): written by an operator, and fetched by every
 * service from a retained topic before it verifies the compartment. For every input:
 *   - a refusal is IDEVS_ERR_CONFIG (or NOMEM) with a sentence in why, and no descriptor;
 *   - an accepted descriptor keeps every documented rule: names valid, from/to naming a declared service,
 *     qos 0..2, limits, instances and partitions in range, topics without wildcards, not under "$", distinct,
 *     and found again by the lookups; its digest is the SHA-256 of the bytes; the partition of any key (the
 *     input's bytes) is below its partitions and reads back from its decimal text;
 *   - a partition text (the input's first bytes) is accepted only in its one decimal spelling;
 *   - parsing is a function of the bytes: the same input parses the same way twice. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_crypto.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"

static void topic_ok(const char *t)
{
    FUZZ_CHECK(t != NULL && t[0] != '\0' && t[0] != '$' && strlen(t) <= IDEVS_TOPIC_MAX);
    FUZZ_CHECK(strchr(t, '+') == NULL && strchr(t, '#') == NULL);
}

/* The partition of the bytes as a key, and the bytes (at most 15 of them) as a property's value. */
static void check_partitions(const idevs_deployment *d, const uint8_t *data, size_t size)
{
    char text[16];
    uint32_t part = idevs_deployment_partition(d, data, size), back = UINT32_MAX;
    FUZZ_CHECK(part < d->partitions);
    snprintf(text, sizeof text, "%u", part);
    FUZZ_CHECK(idevs_deployment_partition_parse(d, text, &back) && back == part);
    size_t n = size < sizeof text - 1 ? size : sizeof text - 1;
    memcpy(text, data, n);
    text[n] = '\0';
    if (idevs_deployment_partition_parse(d, text, &back)) {
        char again[16];
        snprintf(again, sizeof again, "%u", back);
        FUZZ_CHECK(back < d->partitions && strcmp(again, text) == 0);
    }
}

static void check_accepted(const idevs_deployment *d, const uint8_t *data, size_t size)
{
    uint8_t digest[IDEVS_SHA256_LEN];
    FUZZ_CHECK(idevs_sha256(data, size, digest) == IDEVS_OK && memcmp(digest, d->digest, sizeof digest) == 0);
    FUZZ_CHECK(idevs_name_valid(d->name) && d->logic != NULL && d->config_json != NULL);
    FUZZ_CHECK(d->service_count <= IDEVS_DEPLOYMENT_MAX_ENTRIES && d->input_count <= IDEVS_DEPLOYMENT_MAX_ENTRIES &&
               d->output_count <= IDEVS_DEPLOYMENT_MAX_ENTRIES && d->request_count <= IDEVS_DEPLOYMENT_MAX_ENTRIES);
    FUZZ_CHECK(d->max_payload >= 1 && d->max_payload <= IDEVS_PAYLOAD_MAX_LIMIT);
    FUZZ_CHECK(d->max_outstanding_requests <= 65536 && d->refusal_count <= IDEVS_DEPLOYMENT_MAX_REFUSALS);
    FUZZ_CHECK(d->instances >= 1 && d->instances <= IDEVS_DEPLOYMENT_MAX_INSTANCES);
    FUZZ_CHECK(d->partitions >= 1 && d->partitions <= IDEVS_DEPLOYMENT_MAX_PARTITIONS);
    check_partitions(d, data, size);
    for (size_t i = 0; i < d->service_count; i++) {
        FUZZ_CHECK(idevs_name_valid(d->services[i].name));
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(d->services[i].name, d->services[j].name) != 0);
    }
    /* every topic, to check that they are distinct */
    size_t n = 0, cap = d->input_count + d->output_count + 2 * d->request_count;
    const char **topics = malloc((cap > 0 ? cap : 1) * sizeof *topics);
    if (topics == NULL)
        return;
    for (size_t i = 0; i < d->input_count; i++) {
        const idevs_deployment_input *in = &d->inputs[i];
        FUZZ_CHECK(idevs_name_valid(in->name) && in->from < d->service_count);
        topic_ok(in->topic);
        FUZZ_CHECK(idevs_deployment_input_by_topic(d, in->topic) == in);
        topics[n++] = in->topic;
    }
    for (size_t i = 0; i < d->output_count; i++) {
        const idevs_deployment_output *out = &d->outputs[i];
        FUZZ_CHECK(idevs_name_valid(out->name) && out->to < d->service_count && out->qos >= 0 && out->qos <= 2);
        topic_ok(out->topic);
        FUZZ_CHECK(idevs_deployment_output_by_name(d, out->name) == out);
        topics[n++] = out->topic;
    }
    for (size_t i = 0; i < d->request_count; i++) {
        const idevs_deployment_request *r = &d->requests[i];
        FUZZ_CHECK(idevs_name_valid(r->name) && r->to < d->service_count && r->qos >= 0 && r->qos <= 2);
        topic_ok(r->topic);
        topic_ok(r->response_topic);
        FUZZ_CHECK(idevs_deployment_request_by_name(d, r->name) == r);
        FUZZ_CHECK(idevs_deployment_request_by_response_topic(d, r->response_topic) == r);
        topics[n++] = r->topic;
        topics[n++] = r->response_topic;
    }
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < i; j++)
            FUZZ_CHECK(strcmp(topics[i], topics[j]) != 0);
    free(topics);
    for (size_t i = 0; i < d->refusal_count; i++) {
        const char *code = d->refusals[i];
        FUZZ_CHECK(code[0] != '\0' && strspn(code, "abcdefghijklmnopqrstuvwxyz0123456789_") == strlen(code));
        FUZZ_CHECK(idevs_deployment_refusal_index(d, code) == (int)i);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > IDEVS_DEPLOYMENT_MAX_BYTES)
        return 0;
    idevs_deployment *d = NULL;
    char why[512] = "unset";
    idevs_err err = idevs_deployment_parse(data, size, &d, why, sizeof why);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_CONFIG || err == IDEVS_ERR_NOMEM);
        FUZZ_CHECK(d == NULL && why[0] != '\0' && strcmp(why, "unset") != 0);
    } else {
        FUZZ_CHECK(d != NULL);
        check_accepted(d, data, size);
    }
    idevs_deployment *again = NULL;
    char why2[512];
    idevs_err err2 = idevs_deployment_parse(data, size, &again, why2, sizeof why2);
    FUZZ_CHECK(err2 == err || err2 == IDEVS_ERR_NOMEM || err == IDEVS_ERR_NOMEM);
    if (err == IDEVS_ERR_CONFIG && err2 == IDEVS_ERR_CONFIG)
        FUZZ_CHECK(strcmp(why, why2) == 0);
    idevs_deployment_free(again);
    idevs_deployment_free(d);
    return 0;
}
