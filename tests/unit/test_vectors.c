/* The committed test vectors (tests/vectors/envelope-v2.json, docs/PROTOCOL.md section 7): every intermediate
 * value recomputed from the inputs, deterministic sealing compared byte for byte, committed envelopes opened; and
 * the version 1 vectors' envelopes (envelope-v1.json) refused as old_version. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/x509.h>

#include "envelope_internal.h"
#include "harness.h"
#include "idevs_envelope_testing.h"
#include "vector_random.h"

#define VECTORS "../vectors/envelope-v2.json"
#define VECTORS_V1 "../vectors/envelope-v1.json"

static cJSON *root, *root_v1;

static cJSON *load_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = 0;
    return cJSON_Parse(text);
}

static int load(void)
{
    root = load_file(VECTORS);
    root_v1 = load_file(VECTORS_V1);
    return root == NULL || root_v1 == NULL;
}

static int unload(void)
{
    cJSON_Delete(root);
    cJSON_Delete(root_v1);
    return 0;
}

static const char *str(const cJSON *o, const char *name)
{
    const cJSON *s = cJSON_GetObjectItem(o, name);
    CU_ASSERT_FATAL(cJSON_IsString(s));
    return s->valuestring;
}

/* Hex field name of o into a malloc'd buffer. */
static uint8_t *bytes(const cJSON *o, const char *name, size_t *len)
{
    const char *h = str(o, name);
    size_t cap = strlen(h) / 2 + 1;
    uint8_t *b = malloc(cap);
    CU_ASSERT_FATAL(b != NULL);
    *len = harness_unhex(h, b, cap);
    CU_ASSERT_FATAL(*len != (size_t)-1);
    return b;
}

static void fixed(const cJSON *o, const char *name, uint8_t *out, size_t len)
{
    CU_ASSERT_FATAL(harness_unhex(str(o, name), out, len) == len);
}

/* Asserts the hex field equals got. */
static void expect(const cJSON *o, const char *name, const uint8_t *got, size_t len)
{
    size_t n = 0;
    uint8_t *want = bytes(o, name, &n);
    CU_ASSERT_EQUAL(n, len);
    if (n != len || memcmp(want, got, len) != 0) {
        fprintf(stderr, "\n    %s differs", name);
        CU_FAIL("vector value differs");
    }
    free(want);
}

struct party {
    idevs_identity *id;
    uint8_t *cert;
    size_t cert_len;
};

static void party(const char *which, struct party *p)
{
    const cJSON *o = cJSON_GetObjectItem(cJSON_GetObjectItem(root, "inputs"), which);
    CU_ASSERT_FATAL(o != NULL);
    idevs_uuid u;
    uint8_t seed[32], kex[32];
    CU_ASSERT_FATAL(idevs_uuid_parse(str(o, "uuid"), &u) == IDEVS_OK);
    fixed(o, "ed25519_seed", seed, 32);
    fixed(o, "x25519_private", kex, 32);
    CU_ASSERT_FATAL(idevs_identity_from_private(&u, str(o, "name"), seed, kex, &p->id) == IDEVS_OK);
    expect(o, "ed25519_public", idevs_identity_sign_public(p->id), 32);
    expect(o, "x25519_public", idevs_identity_kex_public(p->id), 32);
    p->cert = bytes(o, "certificate", &p->cert_len);
    if (strcmp(which, "ca") != 0) {
        const uint8_t *der[1] = {p->cert};
        CU_ASSERT_FATAL(idevs_identity_set_chain(p->id, der, &p->cert_len, 1) == IDEVS_OK);
    }
}

static void party_free(struct party *p)
{
    idevs_identity_free(p->id);
    free(p->cert);
}

static void test_vectors(void)
{
    struct party ca, sender, recipient;
    party("ca", &ca);
    party("sender", &sender);
    party("recipient", &recipient);
    const cJSON *inputs = cJSON_GetObjectItem(root, "inputs");
    const char *topic = str(inputs, "topic");
    const cJSON *je = cJSON_GetObjectItem(inputs, "epoch");
    CU_ASSERT_FATAL(cJSON_IsNumber(je));
    uint64_t epoch = (uint64_t)je->valuedouble;
    const unsigned char *p = ca.cert;
    X509 *ca_x = d2i_X509(NULL, &p, (long)ca.cert_len);
    CU_ASSERT_FATAL(ca_x != NULL);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    CU_ASSERT_FATAL(policy != NULL && idevs_cert_policy_add_ca(policy, ca_x) == IDEVS_OK);
    X509_free(ca_x);
    idevs_cert_policy_set_time(policy, (time_t)(epoch / 1000));
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_identity_cert_digest(sender.id, digest) == IDEVS_OK);

    const cJSON *vectors = cJSON_GetObjectItem(root, "vectors"), *v;
    int count = 0;
    bool five_byte_instance = false; /* field 14 as a varint of the largest length a u32 has */
    cJSON_ArrayForEach(v, vectors)
    {
        count++;
        uint32_t suite = (uint32_t)cJSON_GetObjectItem(v, "suite")->valuedouble;
        const cJSON *ji = cJSON_GetObjectItem(v, "instance");
        CU_ASSERT_FATAL(cJSON_IsNumber(ji));
        uint32_t instance = (uint32_t)ji->valuedouble;
        five_byte_instance |= instance >= 1u << 28;
        const cJSON *ex = cJSON_GetObjectItem(v, "expected");
        uint8_t e_priv[32], e_pub[32], dh_e[32], dh_e2[32], dh_s[32], dh_s2[32], offer[IDEVS_OFFER_LEN], sig[64];
        uint8_t key[32], base_nonce[12];
        fixed(v, "ephemeral_private", e_priv, 32);
        EVP_PKEY *e = NULL;
        CU_ASSERT_FATAL(idevs_x25519_from_private(e_priv, &e, e_pub) == IDEVS_OK);
        expect(ex, "ephemeral_public", e_pub, 32);
        expect(ex, "sender_cert_digest", digest, 32);
        idevs_env_offer(offer, suite, instance, idevs_identity_uuid(sender.id), idevs_identity_uuid(recipient.id),
                        epoch, e_pub, idevs_identity_kex_public(recipient.id), digest);
        expect(ex, "offer", offer, sizeof offer);
        CU_ASSERT(idevs_ed25519_sign(idevs_identity_sign_key(sender.id), offer, sizeof offer, sig) == IDEVS_OK);
        expect(ex, "epoch_signature", sig, 64);
        CU_ASSERT(idevs_ed25519_verify(idevs_identity_sign_public(sender.id), offer, sizeof offer, sig) == IDEVS_OK);
        /* both sides of each Diffie-Hellman */
        CU_ASSERT(idevs_x25519(e, idevs_identity_kex_public(recipient.id), dh_e) == IDEVS_OK);
        CU_ASSERT(idevs_x25519(idevs_identity_kex_key(recipient.id), e_pub, dh_e2) == IDEVS_OK);
        EVP_PKEY_free(e);
        CU_ASSERT(idevs_x25519(idevs_identity_kex_key(sender.id), idevs_identity_kex_public(recipient.id), dh_s) ==
                  IDEVS_OK);
        CU_ASSERT(idevs_x25519(idevs_identity_kex_key(recipient.id), idevs_identity_kex_public(sender.id), dh_s2) ==
                  IDEVS_OK);
        expect(ex, "dh_e", dh_e, 32);
        expect(ex, "dh_e", dh_e2, 32);
        expect(ex, "dh_s", dh_s, 32);
        expect(ex, "dh_s", dh_s2, 32);
        CU_ASSERT(idevs_env_derive(dh_e, dh_s, offer, key, base_nonce) == IDEVS_OK);
        expect(ex, "key", key, 32);
        expect(ex, "base_nonce", base_nonce, 12);
        idevs_aead enc;
        CU_ASSERT_FATAL(idevs_aead_init(&enc, suite, true, key, base_nonce) == IDEVS_OK);

        /* sender and receiver contexts at the vector's time, sealing deterministically */
        uint64_t clock = epoch;
        idevs_envelope_options o;
        vector_options(&o, suite, &clock);
        o.instance = instance;
        idevs_envelope_ctx *sctx = NULL, *rctx = NULL;
        CU_ASSERT_FATAL(idevs_envelope_ctx_new(sender.id, policy, &o, &sctx) == IDEVS_OK);
        CU_ASSERT_FATAL(idevs_envelope_ctx_new(recipient.id, policy, &o, &rctx) == IDEVS_OK);
        const uint8_t *der[1] = {recipient.cert};
        CU_ASSERT_FATAL(idevs_envelope_add_peer(sctx, der, &recipient.cert_len, 1, NULL) == IDEVS_OK);
        uint8_t ids[4][16];
        vector_queue q = {{e_priv}, {32}, 1, 0};
        const cJSON *msgs = cJSON_GetObjectItem(v, "messages"), *m;
        cJSON_ArrayForEach(m, msgs)
        {
            CU_ASSERT_FATAL(q.n < 4);
            fixed(m, "message_id", ids[q.n], 16);
            q.item[q.n] = ids[q.n];
            q.len[q.n++] = 16;
        }
        idevs_envelope_testing_set_random(sctx, vector_from_queue, &q);

        size_t mi = 1;
        cJSON_ArrayForEach(m, msgs)
        {
            const cJSON *mx = cJSON_GetObjectItem(m, "expected");
            idevs_env_header h;
            memset(&h, 0, sizeof h);
            h.version = IDEVS_ENVELOPE_VERSION;
            h.suite = suite;
            h.instance = instance;
            h.sender = *idevs_identity_uuid(sender.id);
            h.recipient = *idevs_identity_uuid(recipient.id);
            fixed(m, "message_id", h.message_id.b, 16);
            h.epoch = epoch;
            h.sequence = (uint64_t)cJSON_GetObjectItem(m, "sequence")->valuedouble;
            CU_ASSERT_EQUAL(h.sequence, mi);
            memcpy(h.ephemeral_key, e_pub, 32);
            memcpy(h.epoch_signature, sig, 64);
            memcpy(h.leaf_digest, digest, 32);
            idevs_msgid prov[IDEVS_PROVENANCE_MAX];
            size_t prov_count = 0;
            const cJSON *jp = cJSON_GetObjectItem(m, "provenance"), *id;
            cJSON_ArrayForEach(id, jp)
            {
                CU_ASSERT_FATAL(prov_count < IDEVS_PROVENANCE_MAX);
                CU_ASSERT_FATAL(harness_unhex(id->valuestring, prov[prov_count].b, 16) == 16);
                prov_count++;
            }
            const cJSON *jpad = cJSON_GetObjectItem(m, "pad");
            uint32_t pad = 2; /* no rule: idevs_env_padded_len refuses it */
            if (cJSON_IsString(jpad))
                pad = strcmp(jpad->valuestring, "pow2") == 0 ? IDEVS_PAD_POW2
                      : strcmp(jpad->valuestring, "none") == 0 ? IDEVS_PAD_NONE
                                                                : 2;
            else if (cJSON_IsNumber(jpad))
                pad = (uint32_t)jpad->valuedouble;
            uint8_t aad[IDEVS_AAD_MAX], nonce[12];
            size_t aad_len = idevs_env_aad(aad, sizeof aad, &h, topic, strlen(topic));
            expect(mx, "aad", aad, aad_len);
            idevs_env_nonce(base_nonce, h.sequence, nonce);
            expect(mx, "nonce", nonce, 12);
            size_t plen = 0, plain_len = 0;
            uint8_t *payload = bytes(m, "payload", &plen);
            CU_ASSERT_FATAL(idevs_env_padded_len(5 + 16 * prov_count + plen, pad, &plain_len));
            uint8_t *plain = malloc(plain_len), *ct = malloc(plain_len + 16);
            CU_ASSERT_FATAL(plain != NULL && ct != NULL);
            idevs_env_frame(plain, plain_len, prov, prov_count, payload, plen);
            expect(mx, "plaintext", plain, plain_len);
            CU_ASSERT(idevs_aead_seal(&enc, h.sequence, aad, aad_len, plain, plain_len, ct) == IDEVS_OK);
            expect(mx, "ciphertext", ct, plain_len + 16);
            free(plain);
            free(ct);

            /* the library seals the same bytes */
            idevs_seal_input in = {&h.recipient, topic, payload, plen, prov, prov_count, NULL, pad};
            uint8_t *env = NULL;
            size_t env_len = 0;
            CU_ASSERT_FATAL(idevs_envelope_seal(sctx, &in, &env, &env_len, NULL) == IDEVS_OK);
            expect(mx, "envelope", env, env_len);
            free(env);
            /* the committed envelope opens (the first one registers the sender from its chain) */
            size_t clen = 0;
            uint8_t *committed = bytes(mx, "envelope", &clen);
            idevs_opened out;
            CU_ASSERT_EQUAL(idevs_envelope_open(rctx, topic, committed, clen, &out), IDEVS_OK);
            CU_ASSERT(out.payload_len == plen && memcmp(out.payload, payload, plen) == 0);
            CU_ASSERT(out.provenance_count == prov_count &&
                      memcmp(out.provenance, prov, prov_count * sizeof prov[0]) == 0);
            CU_ASSERT(memcmp(out.message_id.b, h.message_id.b, 16) == 0);
            CU_ASSERT_EQUAL(out.sequence, h.sequence);
            CU_ASSERT_EQUAL(out.epoch, epoch);
            CU_ASSERT_EQUAL(out.instance, instance);
            CU_ASSERT_EQUAL(strcmp(str(m, "carries"), mi == 1 ? "chain" : "digest"), 0);
            idevs_opened_clear(&out);
            free(committed);
            free(payload);
            mi++;
        }
        CU_ASSERT(mi >= 4);
        idevs_aead_free(&enc);
        idevs_envelope_ctx_free(sctx);
        idevs_envelope_ctx_free(rctx);
    }
    CU_ASSERT_EQUAL(count, 4); /* each suite as instance 0, then as instances 7 and 4,000,000,000 */
    CU_ASSERT(five_byte_instance);
    idevs_cert_policy_free(policy);
    party_free(&ca);
    party_free(&sender);
    party_free(&recipient);
}

/* Every envelope of the version 1 vectors, genuine and from the same parties, is refused by the peek and by a
 * receiver that knows the sender, as old_version, before any key is used. */
static void test_v1_refused(void)
{
    struct party recipient;
    cJSON *v2 = root;
    root = root_v1;
    party("recipient", &recipient);
    root = v2;
    idevs_cert_policy *policy = idevs_cert_policy_new();
    CU_ASSERT_FATAL(policy != NULL);
    idevs_envelope_ctx *rctx = NULL;
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(recipient.id, policy, NULL, &rctx) == IDEVS_OK);
    const char *topic = str(cJSON_GetObjectItem(root_v1, "inputs"), "topic");
    size_t refused = 0;
    const cJSON *v, *m;
    cJSON_ArrayForEach(v, cJSON_GetObjectItem(root_v1, "vectors"))
    {
        cJSON_ArrayForEach(m, cJSON_GetObjectItem(v, "messages"))
        {
            size_t len = 0;
            uint8_t *env = bytes(cJSON_GetObjectItem(m, "expected"), "envelope", &len);
            idevs_envelope_header h;
            CU_ASSERT_EQUAL(idevs_envelope_peek(env, len, &h), IDEVS_ERR_OLD_VERSION);
            idevs_opened out;
            CU_ASSERT_EQUAL(idevs_envelope_open(rctx, topic, env, len, &out), IDEVS_ERR_OLD_VERSION);
            CU_ASSERT(out.payload == NULL);
            refused++;
            free(env);
        }
    }
    CU_ASSERT_EQUAL(refused, 4);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(rctx, &st);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_OLD_VERSION], 4);
    CU_ASSERT_EQUAL(st.opened, 0);
    idevs_envelope_ctx_free(rctx);
    idevs_cert_policy_free(policy);
    party_free(&recipient);
}

static CU_TestInfo tests[] = {
    {"envelope-v2.json: intermediates, sealing, opening", test_vectors},
    {"envelope-v1.json: every version 1 envelope refused as old_version", test_v1_refused},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("vectors", load, unload, tests);
}
