/* Kept outputs: what the launcher keeps of an output or request to a service with receipts (docs/PROTOCOL.md
 * 9.5), so that a copy can be sealed anew when the service cannot open the one sealed first: after a restart, the
 * compartment has a new certificate, and a receiver that verified only that one refuses envelopes naming the
 * former (cert_digest_mismatch). Sealed anew, the copy keeps its message id (the receiver's dedupe) and
 * provenance, under the current certificate and epoch.
 *
 *   blob = nonce (12, random) || AES-256-GCM(keep_key, nonce, aad = "idevs kept v1" || program, KeptOutput) || tag
 *   keep_key = HKDF-SHA256(ikm = Ed25519 seed || X25519 private, salt = "", info = "idevs kept v1" || program)
 *
 * The key comes from the process's private keys (keys_derive): any instance holding them, on this host or one
 * that joined (join.c), opens what another kept; the launcher, which holds the blob, cannot read it. */
#include <stdlib.h>
#include <string.h>

#include "bridge.pb-c.h"
#include "compartment.h"
#include "idevs_crypto.h"

#define LABEL "idevs kept v1"
#define KEPT_MAX (IDEVS_CHANNEL_FRAME_MAX / 2)

void kept_init(compartment *c)
{
    if (keys_derive(c->self, LABEL, &c->dep->program, c->keep_key) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "cannot derive the key of kept outputs");
}

static void aad_of(const compartment *c, uint8_t aad[sizeof LABEL - 1 + IDEVS_UUID_LEN])
{
    memcpy(aad, LABEL, sizeof LABEL - 1);
    memcpy(aad + sizeof LABEL - 1, c->dep->program.b, IDEVS_UUID_LEN);
}

idevs_err kept_seal(compartment *c, bool is_request, size_t index, const idevs_msgid *id, const idevs_msgid *prov,
                    size_t prov_count, const uint8_t *payload, size_t len, const uint8_t *correlation,
                    size_t correlation_len, uint8_t **out, size_t *out_len)
{
    ProtobufCBinaryData list[IDEVS_PROVENANCE_MAX];
    if (prov_count > IDEVS_PROVENANCE_MAX)
        return IDEVS_ERR_INVALID_ARG;
    for (size_t i = 0; i < prov_count; i++)
        list[i] = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)prov[i].b};
    Idevs__Bridge__V1__KeptOutput k = IDEVS__BRIDGE__V1__KEPT_OUTPUT__INIT;
    k.is_request = is_request;
    k.index = (uint32_t)index;
    k.message_id = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)id->b};
    k.n_provenance = prov_count;
    k.provenance = list;
    k.payload = (ProtobufCBinaryData){len, (uint8_t *)payload};
    k.correlation = (ProtobufCBinaryData){correlation_len, (uint8_t *)correlation};
    size_t plain_len = idevs__bridge__v1__kept_output__get_packed_size(&k);
    if (plain_len > KEPT_MAX)
        return IDEVS_ERR_TOO_LARGE;
    uint8_t *plain = malloc(plain_len > 0 ? plain_len : 1);
    uint8_t *blob = malloc(KEYS_GCM_NONCE_LEN + plain_len + KEYS_GCM_TAG_LEN);
    idevs_err err = plain != NULL && blob != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
    if (err == IDEVS_OK) {
        idevs__bridge__v1__kept_output__pack(&k, plain);
        err = idevs_random(blob, KEYS_GCM_NONCE_LEN);
    }
    uint8_t aad[sizeof LABEL - 1 + IDEVS_UUID_LEN];
    aad_of(c, aad);
    if (err == IDEVS_OK)
        err = keys_gcm(true, c->keep_key, blob, aad, sizeof aad, plain, plain_len, blob + KEYS_GCM_NONCE_LEN,
                       blob + KEYS_GCM_NONCE_LEN + plain_len);
    if (plain != NULL) {
        idevs_cleanse(plain, plain_len);
        free(plain);
    }
    if (err != IDEVS_OK) {
        free(blob);
        return err;
    }
    *out = blob;
    *out_len = KEYS_GCM_NONCE_LEN + plain_len + KEYS_GCM_TAG_LEN;
    return IDEVS_OK;
}

idevs_err kept_reseal(compartment *c, const uint8_t *kept, size_t len)
{
    if (len < KEYS_GCM_NONCE_LEN + KEYS_GCM_TAG_LEN || len > KEPT_MAX + KEYS_GCM_NONCE_LEN + KEYS_GCM_TAG_LEN)
        return IDEVS_ERR_MALFORMED;
    size_t plain_len = len - KEYS_GCM_NONCE_LEN - KEYS_GCM_TAG_LEN;
    uint8_t *plain = malloc(plain_len > 0 ? plain_len : 1);
    if (plain == NULL)
        return IDEVS_ERR_NOMEM;
    uint8_t aad[sizeof LABEL - 1 + IDEVS_UUID_LEN], tag[KEYS_GCM_TAG_LEN];
    aad_of(c, aad);
    memcpy(tag, kept + len - KEYS_GCM_TAG_LEN, KEYS_GCM_TAG_LEN);
    idevs_err err = keys_gcm(false, c->keep_key, kept, aad, sizeof aad, kept + KEYS_GCM_NONCE_LEN, plain_len, plain,
                             tag);
    Idevs__Bridge__V1__KeptOutput *k =
        err == IDEVS_OK ? idevs__bridge__v1__kept_output__unpack(NULL, plain_len, plain) : NULL;
    idevs_cleanse(plain, plain_len);
    free(plain);
    if (err != IDEVS_OK)
        return err;
    const idevs_deployment *d = c->dep;
    /* A request's correlation data goes out again as it was first sent: its id, then its sealed state. */
    if (k == NULL || k->message_id.len != IDEVS_UUID_LEN || k->n_provenance > IDEVS_PROVENANCE_MAX ||
        (k->is_request ? k->index >= d->request_count : k->index >= d->output_count) ||
        (k->is_request ? !idevs_request_correlation_len_ok(k->correlation.len) ||
                             memcmp(k->correlation.data, k->message_id.data, IDEVS_UUID_LEN) != 0
                       : k->correlation.len != 0)) {
        if (k != NULL)
            idevs__bridge__v1__kept_output__free_unpacked(k, NULL);
        return IDEVS_ERR_MALFORMED; /* authenticated, so only a former descriptor's: nothing to seal it to */
    }
    idevs_msgid id, prov[IDEVS_PROVENANCE_MAX];
    memcpy(id.b, k->message_id.data, IDEVS_UUID_LEN);
    for (size_t i = 0; i < k->n_provenance; i++) {
        if (k->provenance[i].len != IDEVS_UUID_LEN)
            err = IDEVS_ERR_MALFORMED;
        else
            memcpy(prov[i].b, k->provenance[i].data, IDEVS_UUID_LEN);
    }
    size_t to = k->is_request ? d->requests[k->index].to : d->outputs[k->index].to;
    const char *topic = k->is_request ? d->requests[k->index].topic : d->outputs[k->index].topic;
    uint32_t pad = k->is_request ? d->requests[k->index].pad : d->outputs[k->index].pad;
    idevs_seal_input in = {.recipient = &d->services[to].uuid, .topic = topic, .payload = k->payload.data,
                           .payload_len = k->payload.len, .provenance = prov, .provenance_count = k->n_provenance,
                           .message_id = &id, .pad = pad};
    uint8_t *env = NULL;
    size_t env_len = 0;
    if (err == IDEVS_OK)
        err = idevs_envelope_seal(c->env, &in, &env, &env_len, NULL);
    if (err == IDEVS_OK) {
        Idevs__Bridge__V1__Publish pub = IDEVS__BRIDGE__V1__PUBLISH__INIT;
        pub.delivery_id = 0;
        pub.topic = (char *)topic;
        pub.envelope = (ProtobufCBinaryData){env_len, env};
        pub.kept = (ProtobufCBinaryData){len, (uint8_t *)kept};
        if (k->is_request) {
            pub.qos = (uint32_t)d->requests[k->index].qos;
            pub.response_topic = d->requests[k->index].response_topic;
            pub.correlation_data = k->correlation;
        } else {
            pub.qos = (uint32_t)d->outputs[k->index].qos;
        }
        Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
        f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH;
        f.publish = &pub;
        err = idevs_channel_queue(&c->ch, &f);
    }
    if (k->payload.data != NULL)
        idevs_cleanse(k->payload.data, k->payload.len);
    idevs__bridge__v1__kept_output__free_unpacked(k, NULL);
    free(env);
    return err;
}
