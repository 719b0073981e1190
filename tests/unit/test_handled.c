/* The numbered message ids a receiver handled (enclave-bridge/handled.c, docs/PROTOCOL.md 9.2): handled once per
 * number, two streams kept, a third replacing the older, unnumbered ids never noted. */
#include <string.h>

#include "harness.h"
#include "idevs_handled.h"
#include "idevs_receipt.h"

static idevs_msgid id_of(uint8_t stream_byte, uint64_t number)
{
    uint8_t stream[IDEVS_MSGID_STREAM_LEN];
    memset(stream, stream_byte, sizeof stream);
    return idevs_msgid_numbered(stream, number);
}

static void test_once_per_number(void)
{
    idevs_handled h;
    memset(&h, 0, sizeof h);
    idevs_msgid one = id_of(1, 1), two = id_of(1, 2);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &one), IDEVS_OK);
    idevs_handled_note(&h, &one);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &one), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &two), IDEVS_OK);
    /* out of order within the window, then far above: the lowest fall out of the window */
    idevs_msgid far = id_of(1, 5000);
    idevs_handled_note(&h, &far);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &far), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &one), IDEVS_ERR_OUTSIDE_WINDOW);
    /* an id that is not numbered is never taken for a copy */
    idevs_msgid plain = id_of(1, 0);
    idevs_handled_note(&h, &plain);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &plain), IDEVS_OK);
    CU_ASSERT_TRUE(idevs_handled_valid(&h));
}

static void test_two_streams(void)
{
    idevs_handled h;
    memset(&h, 0, sizeof h);
    idevs_msgid a = id_of(0xa, 1), b = id_of(0xb, 1), c = id_of(0xc, 1);
    idevs_handled_note(&h, &a);
    idevs_handled_note(&h, &b);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &a), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &b), IDEVS_ERR_REPLAY);
    CU_ASSERT_TRUE(idevs_handled_valid(&h));
    /* a note in the older stream keeps the order of the two */
    idevs_msgid a2 = id_of(0xa, 2);
    idevs_handled_note(&h, &a2);
    CU_ASSERT_EQUAL(h.latest.stream, idevs_msgid_stream(&b));
    /* a third stream replaces the older one */
    idevs_handled_note(&h, &c);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &a), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &b), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_handled_check(&h, &c), IDEVS_ERR_REPLAY);
    CU_ASSERT_TRUE(idevs_handled_valid(&h));
    /* what a reader of a record must refuse: a previous stream alone, or the same stream twice */
    idevs_handled bad = h;
    bad.previous.stream = bad.latest.stream;
    CU_ASSERT_FALSE(idevs_handled_valid(&bad));
    bad = h;
    bad.latest.used = false;
    CU_ASSERT_FALSE(idevs_handled_valid(&bad));
}

static CU_TestInfo tests[] = {
    {"each number handled once; outside the window; unnumbered ids never noted", test_once_per_number},
    {"two streams kept, a third replaces the older", test_two_streams},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("handled", NULL, NULL, tests);
}
