/* The fixed world of fuzz_world.h: the test vectors' parties, read from tests/vectors/envelope-v1.json. */
#include "fuzz_world.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "fuzz.h"
#include "idevs_envelope_testing.h"
#include "idevs_hex.h"
#include "vector_random.h"

static const char *text(const cJSON *o, const char *name)
{
    const cJSON *j = cJSON_GetObjectItem(o, name);
    FUZZ_SETUP(cJSON_IsString(j));
    return j->valuestring;
}

static uint8_t *hex_bytes(const cJSON *o, const char *name, size_t *len)
{
    const char *h = text(o, name);
    *len = strlen(h) / 2;
    uint8_t *b = malloc(*len + 1);
    FUZZ_SETUP(b != NULL && strlen(h) % 2 == 0 && idevs_hex_decode(h, b, *len));
    return b;
}

static idevs_identity *party(const cJSON *inputs, const char *which, uint8_t **der, size_t *der_len)
{
    const cJSON *o = cJSON_GetObjectItem(inputs, which);
    FUZZ_SETUP(o != NULL);
    idevs_uuid u;
    uint8_t seed[32], kex[32];
    FUZZ_SETUP(idevs_uuid_parse(text(o, "uuid"), &u) == IDEVS_OK);
    FUZZ_SETUP(strlen(text(o, "ed25519_seed")) == 64 && idevs_hex_decode(text(o, "ed25519_seed"), seed, 32));
    FUZZ_SETUP(strlen(text(o, "x25519_private")) == 64 && idevs_hex_decode(text(o, "x25519_private"), kex, 32));
    idevs_identity *id;
    FUZZ_SETUP(idevs_identity_from_private(&u, text(o, "name"), seed, kex, &id) == IDEVS_OK);
    size_t len;
    uint8_t *cert = hex_bytes(o, "certificate", &len);
    const uint8_t *chain[1] = {cert};
    FUZZ_SETUP(idevs_identity_set_chain(id, chain, &len, 1) == IDEVS_OK);
    if (der != NULL) {
        *der = cert;
        *der_len = len;
    } else {
        free(cert);
    }
    return id;
}

void fuzz_world_init(fuzz_world *w)
{
    memset(w, 0, sizeof *w);
    size_t len;
    char *json = fuzz_read_source_file("tests/vectors/envelope-v1.json", &len);
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    FUZZ_SETUP(root != NULL);
    const cJSON *inputs = cJSON_GetObjectItem(root, "inputs");
    w->ca = party(inputs, "ca", &w->ca_der, &w->ca_der_len);
    w->sender = party(inputs, "sender", NULL, NULL);
    w->recipient = party(inputs, "recipient", NULL, NULL);
    FUZZ_SETUP(strlen(text(inputs, "topic")) < sizeof w->topic);
    strcpy(w->topic, text(inputs, "topic"));
    const cJSON *epoch = cJSON_GetObjectItem(inputs, "epoch");
    FUZZ_SETUP(cJSON_IsNumber(epoch));
    w->clock_ms = (uint64_t)epoch->valuedouble;
    cJSON_Delete(root);

    const unsigned char *p = w->ca_der;
    X509 *ca = d2i_X509(NULL, &p, (long)w->ca_der_len);
    FUZZ_SETUP(ca != NULL);
    FUZZ_SETUP((w->policy = idevs_cert_policy_new()) != NULL);
    FUZZ_SETUP(idevs_cert_policy_add_ca(w->policy, ca) == IDEVS_OK);
    X509_free(ca);
    idevs_cert_policy_set_time(w->policy, (time_t)(w->clock_ms / 1000));
    memset(w->measurement, 0x11, sizeof w->measurement);
    memset(w->descriptor, 0x22, sizeof w->descriptor);
}

void fuzz_world_free(fuzz_world *w)
{
    idevs_identity_free(w->ca);
    idevs_identity_free(w->sender);
    idevs_identity_free(w->recipient);
    idevs_cert_policy_free(w->policy);
    free(w->ca_der);
    memset(w, 0, sizeof *w);
}

void fuzz_world_options(fuzz_world *w, uint32_t suite, idevs_envelope_options *o)
{
    vector_options(o, suite, &w->clock_ms);
}

/* Counts up: ephemeral keys and message ids that differ from each other and are the same at every run. */
static idevs_err counting_random(void *arg, uint8_t *buf, size_t len)
{
    uint32_t *counter = arg;
    for (size_t i = 0; i < len; i++)
        buf[i] = (uint8_t)(*counter * 37u + i * 11u + 1u);
    (*counter)++;
    return IDEVS_OK;
}

size_t fuzz_world_seal(fuzz_world *w, fuzz_sealed out[FUZZ_SEEDS_MAX])
{
    size_t n = 0;
    memset(out, 0, FUZZ_SEEDS_MAX * sizeof out[0]);
    for (uint32_t suite = 1; suite <= 2; suite++) {
        idevs_envelope_options o;
        fuzz_world_options(w, suite, &o);
        idevs_envelope_ctx *ctx;
        FUZZ_SETUP(idevs_envelope_ctx_new(w->sender, w->policy, &o, &ctx) == IDEVS_OK);
        size_t der_len;
        const uint8_t *der = idevs_identity_chain_der(w->recipient, 0, &der_len);
        FUZZ_SETUP(idevs_envelope_add_peer(ctx, &der, &der_len, 1, NULL) == IDEVS_OK);
        uint32_t counter = suite * 1000u;
        idevs_envelope_testing_set_random(ctx, counting_random, &counter);
        static const char *const payloads[] = {"{\"sale_id\":\"S-000042\",\"total\":\"150.00\"}", "", NULL, "ok"};
        for (size_t i = 0; i < 4; i++) {
            fuzz_sealed *s = &out[n++];
            if (payloads[i] != NULL) {
                s->payload_len = strlen(payloads[i]);
                memcpy(s->payload, payloads[i], s->payload_len);
            } else {
                s->payload_len = sizeof s->payload;
                for (size_t k = 0; k < s->payload_len; k++)
                    s->payload[k] = (uint8_t)(k * 7u);
            }
            idevs_msgid provenance[2];
            memset(provenance, 0x5a, sizeof provenance);
            provenance[1].b[0] = 1;
            idevs_seal_input in = {.recipient = idevs_identity_uuid(w->recipient), .topic = w->topic,
                                   .payload = s->payload, .payload_len = s->payload_len,
                                   .provenance = provenance, .provenance_count = i % 3};
            FUZZ_SETUP(idevs_envelope_seal(ctx, &in, &s->bytes, &s->len, &s->message_id) == IDEVS_OK);
        }
        idevs_envelope_ctx_free(ctx);
    }
    return n;
}

void fuzz_sealed_free(fuzz_sealed *s, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        free(s[i].bytes);
        s[i].bytes = NULL;
    }
}
