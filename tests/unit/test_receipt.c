/* Receipts and numbered message ids (proto/receipt.c): the id layout, a receipt's encoding, and every way a
 * receipt payload can be wrong (docs/PROTOCOL.md section 9). */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "idevs_receipt.h"

static void test_numbered_ids(void)
{
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef};
    idevs_msgid id = idevs_msgid_numbered(stream, 0x0102030405060708ull);
    static const uint8_t expected[16] = {0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef,
                                         0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08};
    CU_ASSERT_EQUAL(memcmp(id.b, expected, 16), 0);
    CU_ASSERT_EQUAL(idevs_msgid_stream(&id), 0x0123456789abcdefull);
    CU_ASSERT_EQUAL(idevs_msgid_number(&id), 0x0102030405060708ull);
    idevs_msgid last = idevs_msgid_numbered(stream, UINT64_MAX);
    CU_ASSERT_EQUAL(idevs_msgid_number(&last), UINT64_MAX);
}

static void test_round_trip(void)
{
    idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX], got[IDEVS_RECEIPT_IDS_MAX];
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {7};
    for (size_t i = 0; i < IDEVS_RECEIPT_IDS_MAX; i++)
        ids[i] = idevs_msgid_numbered(stream, i + 1);
    size_t counts[] = {1, 2, IDEVS_RECEIPT_IDS_MAX};
    for (size_t k = 0; k < sizeof counts / sizeof counts[0]; k++) {
        uint8_t *data = NULL;
        size_t len = 0, n = 0;
        CU_ASSERT_EQUAL_FATAL(idevs_receipt_encode(ids, counts[k], &data, &len), IDEVS_OK);
        CU_ASSERT_EQUAL(len, counts[k] * 18); /* tag, length, 16 bytes: nothing else */
        CU_ASSERT_EQUAL(idevs_receipt_decode(data, len, got, &n), IDEVS_OK);
        CU_ASSERT_EQUAL(n, counts[k]);
        CU_ASSERT_EQUAL(memcmp(got, ids, counts[k] * sizeof ids[0]), 0);
        free(data);
    }
    uint8_t *data = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(idevs_receipt_encode(ids, 0, &data, &len), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_receipt_encode(ids, IDEVS_RECEIPT_IDS_MAX + 1, &data, &len), IDEVS_ERR_INVALID_ARG);
}

static idevs_err decode(const uint8_t *data, size_t len)
{
    static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    size_t n = 99;
    idevs_err err = idevs_receipt_decode(data, len, ids, &n);
    if (err != IDEVS_OK)
        CU_ASSERT_EQUAL(n, 0);
    return err;
}

static void test_malformed(void)
{
    uint8_t one[18] = {0x0a, 16};
    CU_ASSERT_EQUAL(decode(one, sizeof one), IDEVS_OK);
    CU_ASSERT_EQUAL(decode(one, 0), IDEVS_ERR_MALFORMED);            /* no id at all */
    CU_ASSERT_EQUAL(decode(one, 17), IDEVS_ERR_MALFORMED);           /* cut short */
    uint8_t short_id[17] = {0x0a, 15};
    CU_ASSERT_EQUAL(decode(short_id, sizeof short_id), IDEVS_ERR_MALFORMED); /* an id of 15 bytes */
    uint8_t unknown[20] = {0x0a, 16};
    unknown[18] = 0x10; /* field 2, varint 0: unknown, so refused */
    CU_ASSERT_EQUAL(decode(unknown, sizeof unknown), IDEVS_ERR_MALFORMED);
    uint8_t junk[4] = {0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_EQUAL(decode(junk, sizeof junk), IDEVS_ERR_MALFORMED);
    /* 1025 ids: one too many, refused before decoding by its length, and by the count too */
    size_t big_len = (IDEVS_RECEIPT_IDS_MAX + 1) * 18;
    uint8_t *big = calloc(1, big_len);
    CU_ASSERT_FATAL(big != NULL);
    for (size_t i = 0; i <= IDEVS_RECEIPT_IDS_MAX; i++) {
        big[i * 18] = 0x0a;
        big[i * 18 + 1] = 16;
    }
    CU_ASSERT_EQUAL(decode(big, big_len), IDEVS_ERR_MALFORMED);
    CU_ASSERT_EQUAL(decode(big, big_len - 18), IDEVS_OK);
    free(big);
    CU_ASSERT_EQUAL(idevs_receipt_decode(NULL, 1, NULL, NULL), IDEVS_ERR_INVALID_ARG);
}

/* The one resend schedule of both outboxes: 5 s after the first copy, doubling, at most 60 s. */
static void test_resend_schedule(void)
{
    static const uint32_t want[] = {5000, 5000, 10000, 20000, 40000, 60000, 60000};
    for (unsigned sends = 0; sends < sizeof want / sizeof want[0]; sends++)
        CU_ASSERT_EQUAL(idevs_resend_delay_ms(sends), want[sends]);
    CU_ASSERT_EQUAL(idevs_resend_delay_ms(1000000), IDEVS_RESEND_MAX_MS);
}

static CU_TestInfo tests[] = {
    {"numbered ids: stream then number, big-endian", test_numbered_ids},
    {"a receipt of 1, 2 and 1024 ids round trips, 18 bytes an id", test_round_trip},
    {"malformed receipts: empty, cut, short id, unknown field, junk, 1025 ids", test_malformed},
    {"resend schedule: 5 s, doubling, at most 60 s", test_resend_schedule},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("receipt", NULL, NULL, tests);
}
