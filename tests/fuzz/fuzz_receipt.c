/* A receipt's payload (proto/receipt.c, docs/PROTOCOL.md section 9.3): what a service's or the process's
 * receipt carries once opened, `Receipt { repeated bytes message_ids = 1; }`, 1 to IDEVS_RECEIPT_IDS_MAX ids
 * of 16 bytes each and no other field. The input is the payload. For every input:
 *   - the decoder agrees with a second reader written here from the protobuf encoding (a key varint of field 1,
 *     wire type 2, then a length varint of 16 and the id, as many times as there are ids, up to 5 bytes for
 *     each varint as protobuf-c reads them, however long their encoding);
 *   - a refusal is IDEVS_ERR_MALFORMED with a count of 0;
 *   - accepted ids are those the second reader found, in order; each reads back as the same id from its stream
 *     and number (proto/idevs_receipt.h); encoded again they give the canonical encoding (0x0a 0x10 id ...),
 *     which decodes to the same ids;
 *   - the encoder refuses 0 and more than IDEVS_RECEIPT_IDS_MAX ids with IDEVS_ERR_INVALID_ARG. */
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_receipt.h"

/* A protobuf varint of at most 5 bytes (protobuf-c's bound for keys and lengths); false when it is cut short
 * or longer. */
static bool varint5(const uint8_t *data, size_t size, size_t *at, uint64_t *value)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < 5; i++) {
        if (*at >= size)
            return false;
        uint8_t b = data[(*at)++];
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            *value = v;
            return true;
        }
    }
    return false;
}

/* The second reader: the ids, or false. */
static bool model_read(const uint8_t *data, size_t size, idevs_msgid *ids, size_t *count)
{
    *count = 0;
    if (size > IDEVS_RECEIPT_IDS_MAX * (2 + IDEVS_UUID_LEN))
        return false; /* longer than 1024 ids of 18 bytes: not decoded (idevs_receipt.h) */
    size_t at = 0;
    while (at < size) {
        uint64_t key, len;
        if (!varint5(data, size, &at, &key) || key != (1u << 3 | 2u))
            return false; /* another field, another wire type, or a cut key */
        if (!varint5(data, size, &at, &len) || len != IDEVS_UUID_LEN || size - at < len)
            return false;
        if (*count == IDEVS_RECEIPT_IDS_MAX)
            return false;
        memcpy(ids[(*count)++].b, data + at, IDEVS_UUID_LEN);
        at += IDEVS_UUID_LEN;
    }
    return *count >= 1;
}

static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX + 1], expected[IDEVS_RECEIPT_IDS_MAX], again[IDEVS_RECEIPT_IDS_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t count = 12345, model_count;
    idevs_err err = idevs_receipt_decode(size > 0 ? data : NULL, size, ids, &count);
    bool model_ok = model_read(data, size, expected, &model_count);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(err == IDEVS_ERR_MALFORMED);
        FUZZ_CHECK(count == 0);
        FUZZ_CHECK(!model_ok);
    } else {
        FUZZ_CHECK(model_ok);
        FUZZ_CHECK(count == model_count && count >= 1 && count <= IDEVS_RECEIPT_IDS_MAX);
        FUZZ_CHECK(memcmp(ids, expected, count * sizeof ids[0]) == 0);
        for (size_t i = 0; i < count; i++) {
            uint8_t stream[IDEVS_MSGID_STREAM_LEN];
            memcpy(stream, ids[i].b, sizeof stream);
            idevs_msgid back = idevs_msgid_numbered(stream, idevs_msgid_number(&ids[i]));
            FUZZ_CHECK(memcmp(back.b, ids[i].b, IDEVS_UUID_LEN) == 0);
            uint64_t s = idevs_msgid_stream(&ids[i]);
            for (int k = 0; k < 8; k++)
                FUZZ_CHECK(ids[i].b[k] == (uint8_t)(s >> (56 - 8 * k)));
        }
        uint8_t *enc = NULL;
        size_t enc_len = 0;
        err = idevs_receipt_encode(ids, count, &enc, &enc_len);
        if (err == IDEVS_ERR_NOMEM)
            return 0;
        FUZZ_CHECK(err == IDEVS_OK && enc_len == count * (2 + IDEVS_UUID_LEN));
        for (size_t i = 0; i < count; i++) {
            const uint8_t *e = enc + i * (2 + IDEVS_UUID_LEN);
            FUZZ_CHECK(e[0] == 0x0a && e[1] == IDEVS_UUID_LEN && memcmp(e + 2, ids[i].b, IDEVS_UUID_LEN) == 0);
        }
        size_t count2 = 0;
        FUZZ_CHECK(idevs_receipt_decode(enc, enc_len, again, &count2) == IDEVS_OK && count2 == count &&
                   memcmp(again, ids, count * sizeof ids[0]) == 0);
        if (size == enc_len) /* 18 bytes an id: the canonical encoding, which encodes to itself */
            FUZZ_CHECK(memcmp(enc, data, size) == 0);
        free(enc);
    }
    uint8_t *none = NULL;
    size_t none_len = 0;
    FUZZ_CHECK(idevs_receipt_encode(ids, 0, &none, &none_len) == IDEVS_ERR_INVALID_ARG && none == NULL);
    FUZZ_CHECK(idevs_receipt_encode(ids, IDEVS_RECEIPT_IDS_MAX + 1, &none, &none_len) == IDEVS_ERR_INVALID_ARG &&
               none == NULL);
    return 0;
}
