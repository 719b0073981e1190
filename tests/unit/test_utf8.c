/* The one UTF-8 validator (base/idevs_utf8.c), against the cases RFC 3629 and Markus Kuhn's stress test name:
 * each length at its bounds, overlong forms, surrogates, above U+10FFFF, sequences cut short, stray continuation
 * bytes, bytes that never occur. */
#include <string.h>

#include "harness.h"
#include "idevs_utf8.h"

static bool valid(const char *s)
{
    return idevs_utf8_valid((const uint8_t *)s, strlen(s));
}

static void test_well_formed(void)
{
    CU_ASSERT_TRUE(idevs_utf8_valid((const uint8_t *)"", 0));
    CU_ASSERT_TRUE(valid("plain ASCII, \x7f and \x01 too"));
    CU_ASSERT_TRUE(valid("\xc2\x80"));             /* U+0080, the first of two bytes */
    CU_ASSERT_TRUE(valid("\xdf\xbf"));             /* U+07FF */
    CU_ASSERT_TRUE(valid("\xe0\xa0\x80"));         /* U+0800 */
    CU_ASSERT_TRUE(valid("\xed\x9f\xbf"));         /* U+D7FF, just below the surrogates */
    CU_ASSERT_TRUE(valid("\xee\x80\x80"));         /* U+E000, just above them */
    CU_ASSERT_TRUE(valid("\xef\xbf\xbf"));         /* U+FFFF */
    CU_ASSERT_TRUE(valid("\xf0\x90\x80\x80"));     /* U+10000 */
    CU_ASSERT_TRUE(valid("\xf4\x8f\xbf\xbf"));     /* U+10FFFF, the last */
    CU_ASSERT_TRUE(valid("S\xc3\xa3o Paulo, \xe2\x82\xac 150, \xf0\x9f\x9a\x95"));
    uint32_t cp = 0;
    CU_ASSERT_EQUAL(idevs_utf8_next((const uint8_t *)"\xe2\x82\xac", 3, &cp), 3);
    CU_ASSERT_EQUAL(cp, 0x20ac);
    CU_ASSERT_EQUAL(idevs_utf8_next((const uint8_t *)"A", 1, &cp), 1);
    CU_ASSERT_EQUAL(cp, 'A');
}

static void test_ill_formed(void)
{
    CU_ASSERT_FALSE(valid("\x80"));                /* a continuation byte alone */
    CU_ASSERT_FALSE(valid("a\xbf" "b"));
    CU_ASSERT_FALSE(valid("\xc0\x80"));            /* overlong NUL */
    CU_ASSERT_FALSE(valid("\xc1\xbf"));            /* overlong U+007F */
    CU_ASSERT_FALSE(valid("\xe0\x9f\xbf"));        /* overlong U+07FF */
    CU_ASSERT_FALSE(valid("\xf0\x8f\xbf\xbf"));    /* overlong U+FFFF */
    CU_ASSERT_FALSE(valid("\xed\xa0\x80"));        /* U+D800, a surrogate */
    CU_ASSERT_FALSE(valid("\xed\xbf\xbf"));        /* U+DFFF */
    CU_ASSERT_FALSE(valid("\xf4\x90\x80\x80"));    /* U+110000 */
    CU_ASSERT_FALSE(valid("\xf5\x80\x80\x80"));    /* a lead byte that never occurs */
    CU_ASSERT_FALSE(valid("\xfe"));
    CU_ASSERT_FALSE(valid("\xff"));
    CU_ASSERT_FALSE(valid("\xe2\x82"));            /* cut short at the end */
    CU_ASSERT_FALSE(valid("\xe2\x82z"));           /* cut short by another character */
    CU_ASSERT_FALSE(valid("\xf0\x9f\x9a"));
    uint32_t cp = 7;
    CU_ASSERT_EQUAL(idevs_utf8_next((const uint8_t *)"\xc3", 1, &cp), 0);
    CU_ASSERT_EQUAL(idevs_utf8_next((const uint8_t *)"x", 0, &cp), 0);
    CU_ASSERT_EQUAL(cp, 7); /* untouched when not well formed */
    /* Validity stops at len, not at a NUL: a NUL inside is a character like any other. */
    CU_ASSERT_TRUE(idevs_utf8_valid((const uint8_t *)"a\0b", 3));
    CU_ASSERT_FALSE(idevs_utf8_valid((const uint8_t *)"\xe2\x82\xac", 2));
}

static CU_TestInfo tests[] = {
    {"well formed: each length at its bounds", test_well_formed},
    {"ill formed: overlong, surrogates, too high, cut short, stray, impossible", test_ill_formed},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("utf8", NULL, NULL, tests);
}
