/* Receipts and numbered message ids; see idevs_receipt.h. */
#include <stdlib.h>
#include <string.h>

#include "idevs.pb-c.h"
#include "idevs_receipt.h"

idevs_msgid idevs_msgid_numbered(const uint8_t stream[IDEVS_MSGID_STREAM_LEN], uint64_t number)
{
    idevs_msgid id;
    memcpy(id.b, stream, IDEVS_MSGID_STREAM_LEN);
    for (int i = 0; i < 8; i++)
        id.b[IDEVS_MSGID_STREAM_LEN + i] = (uint8_t)(number >> (56 - 8 * i));
    return id;
}

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

uint64_t idevs_msgid_stream(const idevs_msgid *id)
{
    return be64(id->b);
}

uint64_t idevs_msgid_number(const idevs_msgid *id)
{
    return be64(id->b + IDEVS_MSGID_STREAM_LEN);
}

idevs_err idevs_receipt_encode(const idevs_msgid *ids, size_t count, uint8_t **out, size_t *out_len)
{
    if (ids == NULL || out == NULL || out_len == NULL || count == 0 || count > IDEVS_RECEIPT_IDS_MAX)
        return IDEVS_ERR_INVALID_ARG;
    ProtobufCBinaryData *list = calloc(count, sizeof *list);
    if (list == NULL)
        return IDEVS_ERR_NOMEM;
    for (size_t i = 0; i < count; i++) {
        list[i].data = (uint8_t *)ids[i].b;
        list[i].len = IDEVS_UUID_LEN;
    }
    Idevs__V1__Receipt r = IDEVS__V1__RECEIPT__INIT;
    r.n_message_ids = count;
    r.message_ids = list;
    size_t len = idevs__v1__receipt__get_packed_size(&r);
    *out = malloc(len);
    if (*out == NULL) {
        free(list);
        return IDEVS_ERR_NOMEM;
    }
    *out_len = idevs__v1__receipt__pack(&r, *out);
    free(list);
    return IDEVS_OK;
}

idevs_err idevs_receipt_decode(const uint8_t *data, size_t len, idevs_msgid *ids, size_t *count)
{
    if ((data == NULL && len > 0) || ids == NULL || count == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *count = 0;
    /* 1024 ids of 18 bytes each and nothing else: anything longer is no receipt, and is not decoded. */
    if (len > IDEVS_RECEIPT_IDS_MAX * (2 + IDEVS_UUID_LEN))
        return IDEVS_ERR_MALFORMED;
    Idevs__V1__Receipt *r = idevs__v1__receipt__unpack(NULL, len, data);
    if (r == NULL)
        return IDEVS_ERR_MALFORMED;
    idevs_err err = r->base.n_unknown_fields == 0 && r->n_message_ids >= 1 && r->n_message_ids <= IDEVS_RECEIPT_IDS_MAX
                        ? IDEVS_OK
                        : IDEVS_ERR_MALFORMED;
    for (size_t i = 0; err == IDEVS_OK && i < r->n_message_ids; i++) {
        if (r->message_ids[i].len != IDEVS_UUID_LEN)
            err = IDEVS_ERR_MALFORMED;
        else
            memcpy(ids[i].b, r->message_ids[i].data, IDEVS_UUID_LEN);
    }
    if (err == IDEVS_OK)
        *count = r->n_message_ids;
    idevs__v1__receipt__free_unpacked(r, NULL);
    return err;
}

uint32_t idevs_resend_delay_ms(unsigned sends)
{
    unsigned doublings = sends <= 1 ? 0 : sends - 1 > 4 ? 4 : sends - 1;
    uint64_t ms = (uint64_t)IDEVS_RESEND_FIRST_MS << doublings;
    return ms > IDEVS_RESEND_MAX_MS ? IDEVS_RESEND_MAX_MS : (uint32_t)ms;
}
