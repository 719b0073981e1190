/* The EVP wrappers against the published vectors of their RFCs, and their refusals. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "idevs_crypto.h"
#include "idevs_hex.h"

static void unhex_exact(const char *hex, uint8_t *out, size_t len)
{
    CU_ASSERT_FATAL(harness_unhex(hex, out, len) == len);
}

static void test_sha256_abc(void)
{
    uint8_t want[32], got[32];
    unhex_exact("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    CU_ASSERT_EQUAL(idevs_sha256("abc", 3, got), IDEVS_OK);
    CU_ASSERT(memcmp(want, got, 32) == 0);
}

/* In parts: "a", nothing (NULL), "bc" hash as "abc". */
static void test_sha256_parts(void)
{
    uint8_t want[32], got[32];
    unhex_exact("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", want, 32);
    const void *parts[] = {"a", NULL, "bc"};
    const size_t lens[] = {1, 0, 2};
    CU_ASSERT_EQUAL(idevs_sha256_parts(parts, lens, 3, got), IDEVS_OK);
    CU_ASSERT(memcmp(want, got, 32) == 0);
    const size_t bad[] = {1, 1, 2}; /* a NULL part with a length */
    CU_ASSERT_EQUAL(idevs_sha256_parts(parts, bad, 3, got), IDEVS_ERR_CRYPTO);
}

static void test_hkdf_rfc5869_case1(void)
{
    uint8_t ikm[22], salt[13], info[10], want[42], got[42];
    memset(ikm, 0x0b, sizeof ikm);
    unhex_exact("000102030405060708090a0b0c", salt, sizeof salt);
    unhex_exact("f0f1f2f3f4f5f6f7f8f9", info, sizeof info);
    unhex_exact("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865", want, 42);
    CU_ASSERT_EQUAL(idevs_hkdf_sha256(salt, sizeof salt, ikm, sizeof ikm, info, sizeof info, got, sizeof got), IDEVS_OK);
    CU_ASSERT(memcmp(want, got, sizeof got) == 0);
}

/* RFC 5869 case 3: empty salt and info, here passed as NULL. */
static void test_hkdf_rfc5869_case3_null_salt(void)
{
    uint8_t ikm[22], want[42], got[42];
    memset(ikm, 0x0b, sizeof ikm);
    unhex_exact("8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8", want, 42);
    CU_ASSERT_EQUAL(idevs_hkdf_sha256(NULL, 0, ikm, sizeof ikm, NULL, 0, got, sizeof got), IDEVS_OK);
    CU_ASSERT(memcmp(want, got, sizeof got) == 0);
}

static void test_x25519_rfc7748(void)
{
    uint8_t a_priv[32], b_priv[32], a_pub_want[32], b_pub_want[32], shared_want[32];
    uint8_t a_pub[32], b_pub[32], s1[32], s2[32];
    unhex_exact("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a_priv, 32);
    unhex_exact("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a", a_pub_want, 32);
    unhex_exact("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", b_priv, 32);
    unhex_exact("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f", b_pub_want, 32);
    unhex_exact("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742", shared_want, 32);
    EVP_PKEY *a = NULL, *b = NULL;
    CU_ASSERT_FATAL(idevs_x25519_from_private(a_priv, &a, a_pub) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_x25519_from_private(b_priv, &b, b_pub) == IDEVS_OK);
    CU_ASSERT(memcmp(a_pub, a_pub_want, 32) == 0);
    CU_ASSERT(memcmp(b_pub, b_pub_want, 32) == 0);
    CU_ASSERT_EQUAL(idevs_x25519(a, b_pub, s1), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_x25519(b, a_pub, s2), IDEVS_OK);
    CU_ASSERT(memcmp(s1, shared_want, 32) == 0);
    CU_ASSERT(memcmp(s2, shared_want, 32) == 0);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_x25519_refuses_low_order_point(void)
{
    EVP_PKEY *k = NULL;
    uint8_t pub[32], shared[32], zero_point[32] = {0};
    CU_ASSERT_FATAL(idevs_x25519_generate(&k, pub) == IDEVS_OK);
    memset(shared, 0xaa, sizeof shared);
    CU_ASSERT_EQUAL(idevs_x25519(k, zero_point, shared), IDEVS_ERR_CRYPTO);
    for (size_t i = 0; i < sizeof shared; i++)
        CU_ASSERT_EQUAL(shared[i], 0);
    EVP_PKEY_free(k);
}

static void test_ed25519_rfc8032_test1(void)
{
    uint8_t seed[32], pub_want[32], sig_want[64], pub[32], sig[64];
    unhex_exact("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60", seed, 32);
    unhex_exact("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", pub_want, 32);
    unhex_exact("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46b"
                "d25bf5f0595bbe24655141438e7a100b",
                sig_want, 64);
    EVP_PKEY *k = NULL;
    CU_ASSERT_FATAL(idevs_ed25519_from_private(seed, &k, pub) == IDEVS_OK);
    CU_ASSERT(memcmp(pub, pub_want, 32) == 0);
    CU_ASSERT_EQUAL(idevs_ed25519_sign(k, (const uint8_t *)"", 0, sig), IDEVS_OK);
    CU_ASSERT(memcmp(sig, sig_want, 64) == 0);
    CU_ASSERT_EQUAL(idevs_ed25519_verify(pub, (const uint8_t *)"", 0, sig), IDEVS_OK);
    sig[10] ^= 1;
    CU_ASSERT_EQUAL(idevs_ed25519_verify(pub, (const uint8_t *)"", 0, sig), IDEVS_ERR_CRYPTO);
    sig[10] ^= 1;
    CU_ASSERT_EQUAL(idevs_ed25519_verify(pub, (const uint8_t *)"x", 1, sig), IDEVS_ERR_CRYPTO);
    EVP_PKEY_free(k);
}

static void test_ct_equal(void)
{
    uint8_t a[33], b[33];
    memset(a, 7, sizeof a);
    memset(b, 7, sizeof b);
    CU_ASSERT_TRUE(idevs_ct_equal(a, b, sizeof a));
    b[32] = 8;
    CU_ASSERT_FALSE(idevs_ct_equal(a, b, sizeof a));
    CU_ASSERT_TRUE(idevs_ct_equal(a, b, 32));
}

static void test_random_differs(void)
{
    uint8_t a[32], b[32];
    CU_ASSERT_EQUAL(idevs_random(a, sizeof a), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_random(b, sizeof b), IDEVS_OK);
    CU_ASSERT(memcmp(a, b, sizeof a) != 0);
}

static void test_strerror_total(void)
{
    for (int e = 0; e < IDEVS_ERR_COUNT; e++) {
        CU_ASSERT_PTR_NOT_NULL(idevs_strerror((idevs_err)e));
        CU_ASSERT(strcmp(idevs_err_name((idevs_err)e), "unknown") != 0);
    }
    CU_ASSERT_STRING_EQUAL(idevs_strerror((idevs_err)999), "unknown idevs error");
    CU_ASSERT_STRING_EQUAL(idevs_err_name((idevs_err)-1), "unknown");
}

static void test_hex(void)
{
    uint8_t b[3];
    char text[7];
    CU_ASSERT_TRUE(idevs_hex_decode("00fFa1", b, 3));
    CU_ASSERT(b[0] == 0x00 && b[1] == 0xff && b[2] == 0xa1);
    idevs_hex_encode(b, 3, text);
    CU_ASSERT_STRING_EQUAL(text, "00ffa1");
    CU_ASSERT_FALSE(idevs_hex_decode("00ffa", b, 3));   /* short */
    CU_ASSERT_FALSE(idevs_hex_decode("00ffa1b", b, 3)); /* long */
    CU_ASSERT_FALSE(idevs_hex_decode("00ffg1", b, 3));  /* not a digit */
    CU_ASSERT_FALSE(idevs_hex_decode(NULL, b, 3));
}

static void test_sha256_file(void)
{
    char path[] = "/tmp/idevs-test-sha256-XXXXXX";
    int fd = mkstemp(path);
    CU_ASSERT_FATAL(fd >= 0);
    CU_ASSERT_FATAL(write(fd, "abc", 3) == 3);
    close(fd);
    uint8_t want[32], got[32];
    CU_ASSERT_FATAL(idevs_sha256("abc", 3, want) == IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_sha256_file(path, got), IDEVS_OK);
    CU_ASSERT(memcmp(want, got, 32) == 0);
    unlink(path);
    CU_ASSERT_EQUAL(idevs_sha256_file(path, got), IDEVS_ERR_IO);
}

static CU_TestInfo crypto_tests[] = {
    {"hex decoding and encoding", test_hex},
    {"SHA-256 of a file, and of a missing one", test_sha256_file},
    {"SHA-256 of 'abc' (FIPS 180-2)", test_sha256_abc},
    {"SHA-256 of 'abc' in parts", test_sha256_parts},
    {"HKDF-SHA256, RFC 5869 case 1", test_hkdf_rfc5869_case1},
    {"HKDF-SHA256, RFC 5869 case 3, NULL salt and info", test_hkdf_rfc5869_case3_null_salt},
    {"X25519, RFC 7748 section 6.1", test_x25519_rfc7748},
    {"X25519 refuses a low-order peer key and zeroes the output", test_x25519_refuses_low_order_point},
    {"Ed25519, RFC 8032 test 1, and tampering", test_ed25519_rfc8032_test1},
    {"constant-time comparison", test_ct_equal},
    {"random bytes differ", test_random_differs},
    {"every error has a name and a sentence", test_strerror_total},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("crypto", NULL, NULL, crypto_tests);
}
