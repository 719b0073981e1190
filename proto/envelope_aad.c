/* The byte strings of docs/PROTOCOL.md sections 3 and 4: the epoch offer and the additional data (version 2:
 * both name the sender's instance; the provenance is sealed in the plaintext instead). */
#include <string.h>

#include "envelope_internal.h"

static uint8_t *put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
    return p + 2;
}

static uint8_t *put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint8_t *put(uint8_t *p, const void *src, size_t len)
{
    memcpy(p, src, len);
    return p + len;
}

void idevs_env_offer(uint8_t out[IDEVS_OFFER_LEN], uint32_t suite, uint32_t instance, const idevs_uuid *sender,
                     const idevs_uuid *recipient, uint64_t epoch, const uint8_t e_pub[IDEVS_X25519_LEN],
                     const uint8_t recipient_kex_pub[IDEVS_X25519_LEN], const uint8_t leaf_digest[IDEVS_SHA256_LEN])
{
    uint8_t *p = out;
    p = put(p, IDEVS_OFFER_LABEL, IDEVS_OFFER_LABEL_LEN);
    p = put_u32(p, suite);
    p = put_u32(p, instance);
    p = put(p, sender->b, IDEVS_UUID_LEN);
    p = put(p, recipient->b, IDEVS_UUID_LEN);
    p = put_u64(p, epoch);
    p = put(p, e_pub, IDEVS_X25519_LEN);
    p = put(p, recipient_kex_pub, IDEVS_X25519_LEN);
    p = put(p, leaf_digest, IDEVS_SHA256_LEN);
    (void)p;
}

bool idevs_env_topic_valid(const char *topic, size_t *len)
{
    if (topic == NULL)
        return false;
    size_t n = strnlen(topic, IDEVS_TOPIC_MAX + 1);
    if (n == 0 || n > IDEVS_TOPIC_MAX)
        return false;
    if (memchr(topic, '+', n) != NULL || memchr(topic, '#', n) != NULL)
        return false;
    *len = n;
    return true;
}

size_t idevs_env_aad(uint8_t *out, size_t cap, const idevs_env_header *h, const char *topic, size_t topic_len)
{
    if (topic_len > IDEVS_TOPIC_MAX)
        return 0;
    size_t need = IDEVS_AAD_FIXED_LEN + topic_len;
    if (need > cap)
        return 0;
    uint8_t *p = out;
    p = put(p, IDEVS_AAD_LABEL, IDEVS_AAD_LABEL_LEN);
    p = put_u32(p, h->version);
    p = put_u32(p, h->suite);
    p = put_u32(p, h->instance);
    p = put(p, h->sender.b, IDEVS_UUID_LEN);
    p = put(p, h->recipient.b, IDEVS_UUID_LEN);
    p = put(p, h->message_id.b, IDEVS_UUID_LEN);
    p = put_u64(p, h->epoch);
    p = put_u64(p, h->sequence);
    p = put(p, h->ephemeral_key, IDEVS_X25519_LEN);
    p = put(p, h->epoch_signature, IDEVS_ED25519_SIG_LEN);
    p = put(p, h->leaf_digest, IDEVS_SHA256_LEN);
    p = put_u16(p, (uint16_t)topic_len);
    p = put(p, topic, topic_len);
    return (size_t)(p - out);
}
