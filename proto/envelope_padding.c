/* The plaintext of a version 2 envelope (docs/PROTOCOL.md section 4, step 4, and 4.1): the provenance and the
 * payload framed, then zero-padded to a size class, so that an onlooker learns neither which inputs caused a
 * message nor its exact length. Opening checks every byte of the framing and the padding. */
#include <string.h>

#include "envelope_internal.h"

#define POW2_MIN 64u
#define POW2_LAST 4096u /* above it, multiples of 4096 */

static bool round_up(size_t x, size_t block, size_t *out)
{
    size_t r = x % block;
    if (r == 0) {
        *out = x;
        return true;
    }
    if (x > SIZE_MAX - (block - r))
        return false;
    *out = x + (block - r);
    return true;
}

bool idevs_env_padded_len(size_t framed, uint32_t pad, size_t *out)
{
    if (pad == IDEVS_PAD_NONE) {
        *out = framed;
        return true;
    }
    if (pad == IDEVS_PAD_POW2) {
        if (framed > POW2_LAST)
            return round_up(framed, POW2_LAST, out);
        size_t l = POW2_MIN;
        while (l < framed)
            l *= 2;
        *out = l;
        return true;
    }
    if (pad < IDEVS_PAD_BLOCK_MIN || pad > IDEVS_PAD_BLOCK_MAX)
        return false;
    return round_up(framed, pad, out);
}

void idevs_env_frame(uint8_t *out, size_t plain_len, const idevs_msgid *provenance, size_t provenance_count,
                     const uint8_t *payload, size_t payload_len)
{
    uint8_t *p = out;
    *p++ = (uint8_t)provenance_count;
    for (size_t i = 0; i < provenance_count; i++, p += IDEVS_UUID_LEN)
        memcpy(p, provenance[i].b, IDEVS_UUID_LEN);
    for (int i = 3; i >= 0; i--)
        *p++ = (uint8_t)(payload_len >> (8 * i));
    if (payload_len > 0)
        memcpy(p, payload, payload_len);
    p += payload_len;
    memset(p, 0, plain_len - (size_t)(p - out));
}

idevs_err idevs_env_unframe(uint8_t *buf, size_t plain_len, size_t max_payload, idevs_msgid *provenance,
                            size_t *provenance_count, size_t *payload_len)
{
    idevs_err err = IDEVS_ERR_PADDING;
    *provenance_count = 0;
    *payload_len = 0;
    if (plain_len < IDEVS_FRAME_FIXED)
        goto fail;
    size_t n = buf[0];
    if (n > IDEVS_PROVENANCE_MAX || plain_len - IDEVS_FRAME_FIXED < n * IDEVS_UUID_LEN)
        goto fail;
    size_t head = IDEVS_FRAME_FIXED + n * IDEVS_UUID_LEN;
    const uint8_t *l = buf + 1 + n * IDEVS_UUID_LEN;
    size_t len = (size_t)l[0] << 24 | (size_t)l[1] << 16 | (size_t)l[2] << 8 | (size_t)l[3];
    if (len > plain_len - head)
        goto fail;
    /* Every padding byte is read, whatever the first non-zero one: the time taken depends on lengths only. */
    uint8_t nonzero = 0;
    for (size_t i = head + len; i < plain_len; i++)
        nonzero |= buf[i];
    if (nonzero != 0)
        goto fail;
    if (len > max_payload) {
        err = IDEVS_ERR_TOO_LARGE;
        goto fail;
    }
    for (size_t i = 0; i < n; i++)
        memcpy(provenance[i].b, buf + 1 + i * IDEVS_UUID_LEN, IDEVS_UUID_LEN);
    memmove(buf, buf + head, len);
    idevs_cleanse(buf + len, plain_len - len);
    *provenance_count = n;
    *payload_len = len;
    return IDEVS_OK;
fail:
    idevs_cleanse(buf, plain_len);
    return err;
}
