/* Bounded decoding and encoding of idevs.v1.Envelope (format version 2) with the generated protobuf-c code, and
 * the field checks of docs/PROTOCOL.md section 5, steps 2 to 4. The caller bounds the input size (step 1) before
 * decoding. */
#include <stdlib.h>
#include <string.h>

#include "envelope_internal.h"

#define CIPHERTEXT_KEY 0x6a /* field 13, wire type 2 (length-delimited) */
#define INSTANCE_KEY 0x70   /* field 14, wire type 0 (varint) */

static bool has_len(const ProtobufCBinaryData *b, size_t len)
{
    return b->len == len && b->data != NULL;
}

idevs_err idevs_env_decode(const uint8_t *data, size_t len, idevs_env_decoded *out)
{
    memset(out, 0, sizeof *out);
    if (data == NULL && len > 0)
        return IDEVS_ERR_INVALID_ARG;
    Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, len, data);
    if (m == NULL)
        return IDEVS_ERR_MALFORMED;
    out->msg = m;
    /* Unknown fields would travel unauthenticated. */
    if (m->base.n_unknown_fields != 0)
        goto malformed;
    if (m->version != IDEVS_ENVELOPE_VERSION) {
        bool old = m->version == IDEVS_ENVELOPE_VERSION_OLD; /* read before m is freed */
        idevs_env_decoded_free(out);
        return old ? IDEVS_ERR_OLD_VERSION : IDEVS_ERR_VERSION;
    }
    if (!idevs_env_suite_valid(m->suite)) {
        idevs_env_decoded_free(out);
        return IDEVS_ERR_SUITE;
    }
    if (!has_len(&m->sender, IDEVS_UUID_LEN) || !has_len(&m->recipient, IDEVS_UUID_LEN) ||
        !has_len(&m->message_id, IDEVS_UUID_LEN) || !has_len(&m->ephemeral_key, IDEVS_X25519_LEN) ||
        !has_len(&m->epoch_signature, IDEVS_ED25519_SIG_LEN) || m->sequence == 0)
        goto malformed;
    /* exactly one of chain and digest */
    if (m->n_sender_chain > 0) {
        if (m->n_sender_chain > IDEVS_CHAIN_MAX || m->sender_cert_digest.len != 0)
            goto malformed;
        for (size_t i = 0; i < m->n_sender_chain; i++) {
            const ProtobufCBinaryData *c = &m->sender_chain[i];
            if (c->len == 0 || c->len > IDEVS_CERT_MAX || c->data == NULL)
                goto malformed;
            out->chain[i] = c->data;
            out->chain_len[i] = c->len;
        }
        out->chain_count = m->n_sender_chain;
    } else {
        if (!has_len(&m->sender_cert_digest, IDEVS_SHA256_LEN))
            goto malformed;
        memcpy(out->h.leaf_digest, m->sender_cert_digest.data, IDEVS_SHA256_LEN);
    }
    /* Version 2 seals the provenance; a clear one would be an unauthenticated leftover. */
    if (m->n_provenance != 0)
        goto malformed;
    if (m->ciphertext.len < IDEVS_AEAD_TAG_LEN + IDEVS_FRAME_FIXED || m->ciphertext.data == NULL)
        goto malformed;

    idevs_env_header *h = &out->h;
    h->version = m->version;
    h->suite = m->suite;
    h->instance = m->instance;
    memcpy(h->sender.b, m->sender.data, IDEVS_UUID_LEN);
    memcpy(h->recipient.b, m->recipient.data, IDEVS_UUID_LEN);
    memcpy(h->message_id.b, m->message_id.data, IDEVS_UUID_LEN);
    h->epoch = m->epoch;
    h->sequence = m->sequence;
    memcpy(h->ephemeral_key, m->ephemeral_key.data, IDEVS_X25519_LEN);
    memcpy(h->epoch_signature, m->epoch_signature.data, IDEVS_ED25519_SIG_LEN);
    out->ciphertext = m->ciphertext.data;
    out->ciphertext_len = m->ciphertext.len;
    return IDEVS_OK;

malformed:
    idevs_env_decoded_free(out);
    return IDEVS_ERR_MALFORMED;
}

void idevs_env_decoded_free(idevs_env_decoded *d)
{
    if (d->msg != NULL)
        idevs__v1__envelope__free_unpacked(d->msg, NULL);
    memset(d, 0, sizeof *d);
}

idevs_err idevs_envelope_peek(const uint8_t *data, size_t len, idevs_envelope_header *out)
{
    if (out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    if (data == NULL && len > 0)
        return IDEVS_ERR_INVALID_ARG;
    /* The largest envelope any receiver accepts: refused before protobuf-c allocates anything for it. */
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.max_payload = IDEVS_PAYLOAD_MAX_LIMIT;
    if (len > idevs_envelope_max_size(&o))
        return IDEVS_ERR_TOO_LARGE;
    idevs_env_decoded d;
    idevs_err err = idevs_env_decode(data, len, &d);
    if (err != IDEVS_OK)
        return err;
    out->version = d.h.version;
    out->suite = d.h.suite;
    out->instance = d.h.instance;
    out->sender = d.h.sender;
    out->recipient = d.h.recipient;
    out->message_id = d.h.message_id;
    out->epoch = d.h.epoch;
    out->sequence = d.h.sequence;
    out->chain_count = d.chain_count;
    out->ciphertext_len = d.ciphertext_len;
    idevs_env_decoded_free(&d);
    return IDEVS_OK;
}

static size_t varint_len(size_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, size_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

idevs_err idevs_env_encode(const idevs_env_header *h, const uint8_t *const *chain, const size_t *chain_len,
                           size_t chain_count, size_t ct_len, uint8_t **out, size_t *out_len, uint8_t **ct)
{
    ProtobufCBinaryData chain_bd[IDEVS_CHAIN_MAX];
    if (chain_count > IDEVS_CHAIN_MAX || ct_len < IDEVS_AEAD_TAG_LEN)
        return IDEVS_ERR_INVALID_ARG;

    Idevs__V1__Envelope m = IDEVS__V1__ENVELOPE__INIT;
    m.version = h->version;
    m.suite = h->suite;
    m.sender = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)h->sender.b};
    m.recipient = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)h->recipient.b};
    m.message_id = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)h->message_id.b};
    m.epoch = h->epoch;
    m.sequence = h->sequence;
    m.ephemeral_key = (ProtobufCBinaryData){IDEVS_X25519_LEN, (uint8_t *)h->ephemeral_key};
    m.epoch_signature = (ProtobufCBinaryData){IDEVS_ED25519_SIG_LEN, (uint8_t *)h->epoch_signature};
    if (chain_count > 0) {
        for (size_t i = 0; i < chain_count; i++)
            chain_bd[i] = (ProtobufCBinaryData){chain_len[i], (uint8_t *)chain[i]};
        m.n_sender_chain = chain_count;
        m.sender_chain = chain_bd;
    } else {
        m.sender_cert_digest = (ProtobufCBinaryData){IDEVS_SHA256_LEN, (uint8_t *)h->leaf_digest};
    }
    /* ciphertext and instance are left empty (proto3 omits them) and appended by hand, in field-number order
     * exactly as protobuf-c would write them, so that the AEAD can encrypt straight into the output. */
    size_t head = idevs__v1__envelope__get_packed_size(&m);
    size_t tail = h->instance != 0 ? 1 + varint_len(h->instance) : 0;
    size_t total = head + 1 + varint_len(ct_len) + ct_len + tail;
    if (total < ct_len)
        return IDEVS_ERR_TOO_LARGE;
    uint8_t *buf = malloc(total);
    if (buf == NULL)
        return IDEVS_ERR_NOMEM;
    if (idevs__v1__envelope__pack(&m, buf) != head) {
        free(buf);
        return IDEVS_ERR_INVALID_ARG;
    }
    uint8_t *p = buf + head;
    *p++ = CIPHERTEXT_KEY;
    p = put_varint(p, ct_len);
    *ct = p;
    if (h->instance != 0) {
        p += ct_len;
        *p++ = INSTANCE_KEY;
        (void)put_varint(p, h->instance);
    }
    *out = buf;
    *out_len = total;
    return IDEVS_OK;
}
