/* Writes tests/vectors/envelope-v2.json: fixed inputs and every intermediate and final value of sealing them
 * (docs/PROTOCOL.md section 7). Usage: make_vectors OUT.json [EXISTING.json]
 * With EXISTING.json, the CA, sender and recipient certificates are taken from it, so that regenerating
 * gives the same file; without it, new certificates valid for 100 years are issued (their serial numbers and
 * validity dates differ at every run, and the vector epoch must lie after their notBefore). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/x509.h>

#include "envelope_internal.h"
#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_envelope_testing.h"
#include "idevs_identity.h"
#include "vector_random.h"

#define EPOCH_MS 1800000000000ull /* 2027-01-15T08:00:00Z */
#define TOPIC "idevs/v1/store/sale"

#define CHECK(cond)                                                                                            \
    do {                                                                                                       \
        if (!(cond)) {                                                                                         \
            fprintf(stderr, "make_vectors: %s:%d: %s\n", __FILE__, __LINE__, #cond);                         \
            return 1;                                                                                          \
        }                                                                                                      \
    } while (0)

static char *hex(const uint8_t *b, size_t n)
{
    char *s = malloc(2 * n + 1);
    if (s == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        sprintf(s + 2 * i, "%02x", b[i]);
    s[2 * n] = 0;
    return s;
}

static void add_hex(cJSON *o, const char *name, const uint8_t *b, size_t n)
{
    char *s = hex(b, n);
    cJSON_AddStringToObject(o, name, s != NULL ? s : "");
    free(s);
}

static size_t unhex(const char *h, uint8_t *out, size_t cap)
{
    size_t n = strlen(h);
    if (n % 2 || n / 2 > cap)
        return 0;
    for (size_t i = 0; i < n / 2; i++) {
        unsigned v;
        if (sscanf(h + 2 * i, "%2x", &v) != 1)
            return 0;
        out[i] = (uint8_t)v;
    }
    return n / 2;
}

static void fill(uint8_t *b, size_t n, uint8_t start)
{
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(start + i);
}

struct party {
    const char *name;
    idevs_uuid uuid;
    uint8_t sign_seed[32], kex_private[32];
    idevs_identity *id;
    uint8_t *cert;
    size_t cert_len;
};

static int make_party(struct party *p, const char *name, uint8_t base)
{
    p->name = name;
    fill(p->uuid.b, 16, base);
    p->uuid.b[6] = (uint8_t)((p->uuid.b[6] & 0x0f) | 0x40); /* version 4 */
    p->uuid.b[8] = (uint8_t)((p->uuid.b[8] & 0x3f) | 0x80); /* variant */
    fill(p->sign_seed, 32, (uint8_t)(base + 0x20));
    fill(p->kex_private, 32, (uint8_t)(base + 0x40));
    return idevs_identity_from_private(&p->uuid, name, p->sign_seed, p->kex_private, &p->id) == IDEVS_OK ? 0 : 1;
}

static int cert_from_existing(cJSON *existing, const char *party, struct party *p)
{
    cJSON *in = cJSON_GetObjectItem(existing, "inputs");
    cJSON *o = cJSON_GetObjectItem(in, party);
    cJSON *c = cJSON_GetObjectItem(o, "certificate");
    if (!cJSON_IsString(c))
        return 1;
    p->cert = malloc(IDEVS_CERT_MAX);
    if (p->cert == NULL)
        return 1;
    p->cert_len = unhex(c->valuestring, p->cert, IDEVS_CERT_MAX);
    return p->cert_len == 0;
}

static cJSON *party_json(const struct party *p)
{
    cJSON *o = cJSON_CreateObject();
    char u[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(&p->uuid, u);
    cJSON_AddStringToObject(o, "uuid", u);
    cJSON_AddStringToObject(o, "name", p->name);
    add_hex(o, "ed25519_seed", p->sign_seed, 32);
    add_hex(o, "x25519_private", p->kex_private, 32);
    add_hex(o, "ed25519_public", idevs_identity_sign_public(p->id), 32);
    add_hex(o, "x25519_public", idevs_identity_kex_public(p->id), 32);
    add_hex(o, "certificate", p->cert, p->cert_len);
    return o;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: make_vectors OUT.json [EXISTING.json]\n");
        return 2;
    }
    cJSON *existing = NULL;
    if (argc == 3) {
        FILE *f = fopen(argv[2], "rb");
        CHECK(f != NULL);
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = 0;
        existing = cJSON_Parse(text);
        CHECK(existing != NULL);
    }
    struct party ca = {0}, sender = {0}, recipient = {0};
    CHECK(make_party(&ca, "vector-ca", 0x10) == 0);
    CHECK(make_party(&sender, "vector-sender", 0x60) == 0);
    CHECK(make_party(&recipient, "vector-recipient", 0xb0) == 0);
    if (existing != NULL) {
        CHECK(cert_from_existing(existing, "ca", &ca) == 0);
        CHECK(cert_from_existing(existing, "sender", &sender) == 0);
        CHECK(cert_from_existing(existing, "recipient", &recipient) == 0);
    } else {
        X509 *ca_cert = NULL, *s_cert = NULL, *r_cert = NULL;
        CHECK(idevs_cert_issue_ca(ca.id, 36500, &ca_cert) == IDEVS_OK);
        CHECK(idevs_cert_issue_service(ca.id, ca_cert, sender.id, 36500, &s_cert) == IDEVS_OK);
        CHECK(idevs_cert_issue_service(ca.id, ca_cert, recipient.id, 36500, &r_cert) == IDEVS_OK);
        CHECK(idevs_cert_to_der(ca_cert, &ca.cert, &ca.cert_len) == IDEVS_OK);
        CHECK(idevs_cert_to_der(s_cert, &sender.cert, &sender.cert_len) == IDEVS_OK);
        CHECK(idevs_cert_to_der(r_cert, &recipient.cert, &recipient.cert_len) == IDEVS_OK);
        X509_free(ca_cert), X509_free(s_cert), X509_free(r_cert);
    }
    const uint8_t *der[1];
    size_t der_len[1];
    der[0] = sender.cert, der_len[0] = sender.cert_len;
    CHECK(idevs_identity_set_chain(sender.id, der, der_len, 1) == IDEVS_OK);
    der[0] = recipient.cert, der_len[0] = recipient.cert_len;
    CHECK(idevs_identity_set_chain(recipient.id, der, der_len, 1) == IDEVS_OK);
    const unsigned char *p = ca.cert;
    X509 *ca_x = d2i_X509(NULL, &p, (long)ca.cert_len);
    CHECK(ca_x != NULL);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    CHECK(policy != NULL && idevs_cert_policy_add_ca(policy, ca_x) == IDEVS_OK);
    idevs_cert_policy_set_time(policy, (time_t)(EPOCH_MS / 1000));
    X509_free(ca_x);

    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "description",
                            "idevs envelope protocol v2 test vectors: docs/PROTOCOL.md section 7 describes every field");
    cJSON *inputs = cJSON_AddObjectToObject(root, "inputs");
    cJSON_AddItemToObject(inputs, "ca", party_json(&ca));
    cJSON_AddItemToObject(inputs, "sender", party_json(&sender));
    cJSON_AddItemToObject(inputs, "recipient", party_json(&recipient));
    cJSON_AddStringToObject(inputs, "topic", TOPIC);
    cJSON_AddNumberToObject(inputs, "epoch", (double)EPOCH_MS);
    cJSON *vectors = cJSON_AddArrayToObject(root, "vectors");

    uint8_t sender_digest[32];
    CHECK(idevs_identity_cert_digest(sender.id, sender_digest) == IDEVS_OK);
    /* Each suite as instance 0; then instances other than 0, in the offer, the aad and field 14: 7 (a one-byte
     * varint) and 4,000,000,000 (five bytes). seed makes each vector's ephemeral key, ids and payload its own. */
    static const struct {
        uint32_t suite, instance;
        uint8_t seed;
    } cases[] = {{1, 0, 1}, {2, 0, 2}, {1, 7, 3}, {2, 4000000000u, 4}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        uint32_t suite = cases[c].suite, instance = cases[c].instance;
        uint8_t seed = cases[c].seed;
        uint8_t e_priv[32], ids[3][16], payload1[64], payload2[300];
        fill(e_priv, 32, (uint8_t)(0xe0 + seed));
        fill(ids[0], 16, (uint8_t)(0x80 + 16 * seed));
        fill(ids[1], 16, (uint8_t)(0xa0 + 16 * seed));
        fill(ids[2], 16, (uint8_t)(0xc0 + 16 * seed));
        const char *text = "{\"customer\":\"Ada\",\"total\":\"151.00\"}";
        size_t len1 = strlen(text);
        memcpy(payload1, text, len1);
        fill(payload2, sizeof payload2, seed);
        vector_queue q = {{e_priv, ids[0], ids[1], ids[2]}, {32, 16, 16, 16}, 4, 0};
        uint64_t clock = EPOCH_MS;
        idevs_envelope_options o;
        vector_options(&o, suite, &clock);
        o.instance = instance;
        idevs_envelope_ctx *ctx = NULL;
        CHECK(idevs_envelope_ctx_new(sender.id, policy, &o, &ctx) == IDEVS_OK);
        idevs_envelope_testing_set_random(ctx, vector_from_queue, &q);
        der[0] = recipient.cert, der_len[0] = recipient.cert_len;
        CHECK(idevs_envelope_add_peer(ctx, der, der_len, 1, NULL) == IDEVS_OK);

        /* the epoch's values */
        EVP_PKEY *e = NULL;
        uint8_t e_pub[32], dh_e[32], dh_s[32], offer[IDEVS_OFFER_LEN], sig[64], key[32], base_nonce[12];
        CHECK(idevs_x25519_from_private(e_priv, &e, e_pub) == IDEVS_OK);
        CHECK(idevs_x25519(e, idevs_identity_kex_public(recipient.id), dh_e) == IDEVS_OK);
        EVP_PKEY_free(e);
        CHECK(idevs_x25519(idevs_identity_kex_key(sender.id), idevs_identity_kex_public(recipient.id), dh_s) ==
              IDEVS_OK);
        idevs_env_offer(offer, suite, instance, &sender.uuid, &recipient.uuid, EPOCH_MS, e_pub,
                        idevs_identity_kex_public(recipient.id), sender_digest);
        CHECK(idevs_ed25519_sign(idevs_identity_sign_key(sender.id), offer, sizeof offer, sig) == IDEVS_OK);
        CHECK(idevs_env_derive(dh_e, dh_s, offer, key, base_nonce) == IDEVS_OK);

        cJSON *v = cJSON_CreateObject();
        cJSON_AddNumberToObject(v, "suite", suite);
        cJSON_AddNumberToObject(v, "instance", instance);
        add_hex(v, "ephemeral_private", e_priv, 32);
        cJSON *ex = cJSON_AddObjectToObject(v, "expected");
        add_hex(ex, "ephemeral_public", e_pub, 32);
        add_hex(ex, "sender_cert_digest", sender_digest, 32);
        add_hex(ex, "offer", offer, sizeof offer);
        add_hex(ex, "epoch_signature", sig, 64);
        add_hex(ex, "dh_e", dh_e, 32);
        add_hex(ex, "dh_s", dh_s, 32);
        add_hex(ex, "key", key, 32);
        add_hex(ex, "base_nonce", base_nonce, 12);
        cJSON *msgs = cJSON_AddArrayToObject(v, "messages");

        /* message 1: no provenance, pow2; 2: one id, pow2 over 256; 3: two ids, a block size of 48 */
        for (int m = 0; m < 3; m++) {
            const uint8_t *payload = m == 0 ? payload1 : m == 1 ? payload2 : (const uint8_t *)"ok";
            size_t plen = m == 0 ? len1 : m == 1 ? sizeof payload2 : 2;
            uint32_t pad = m == 2 ? 48 : IDEVS_PAD_POW2;
            idevs_msgid prov[2];
            memcpy(prov[0].b, ids[0], 16);
            memcpy(prov[1].b, ids[1], 16);
            idevs_seal_input in = {&recipient.uuid, TOPIC, payload, plen, m == 0 ? NULL : prov, (size_t)m, NULL, pad};
            size_t plain_len = 0;
            CHECK(idevs_env_padded_len(5 + 16 * (size_t)m + plen, pad, &plain_len));
            uint8_t plain[512];
            CHECK(plain_len <= sizeof plain);
            idevs_env_frame(plain, plain_len, prov, (size_t)m, payload, plen);
            uint8_t *env = NULL;
            size_t env_len = 0;
            CHECK(idevs_envelope_seal(ctx, &in, &env, &env_len, NULL) == IDEVS_OK);
            Idevs__V1__Envelope *pm = idevs__v1__envelope__unpack(NULL, env_len, env);
            CHECK(pm != NULL && pm->sequence == (uint64_t)m + 1 && pm->instance == instance &&
                  pm->ciphertext.len == plain_len + 16);
            CHECK(memcmp(pm->epoch_signature.data, sig, 64) == 0);

            idevs_env_header h;
            memset(&h, 0, sizeof h);
            h.version = IDEVS_ENVELOPE_VERSION;
            h.suite = suite;
            h.instance = instance;
            h.sender = sender.uuid;
            h.recipient = recipient.uuid;
            memcpy(h.message_id.b, ids[m], 16);
            h.epoch = EPOCH_MS;
            h.sequence = (uint64_t)m + 1;
            memcpy(h.ephemeral_key, e_pub, 32);
            memcpy(h.epoch_signature, sig, 64);
            memcpy(h.leaf_digest, sender_digest, 32);
            uint8_t aad[IDEVS_AAD_MAX], nonce[12];
            size_t aad_len = idevs_env_aad(aad, sizeof aad, &h, TOPIC, strlen(TOPIC));
            CHECK(aad_len > 0);
            idevs_env_nonce(base_nonce, h.sequence, nonce);

            cJSON *jm = cJSON_CreateObject();
            add_hex(jm, "message_id", ids[m], 16);
            cJSON_AddNumberToObject(jm, "sequence", (double)h.sequence);
            cJSON *jp = cJSON_AddArrayToObject(jm, "provenance");
            for (int k = 0; k < m; k++) {
                char *s = hex(prov[k].b, 16);
                cJSON_AddItemToArray(jp, cJSON_CreateString(s));
                free(s);
            }
            add_hex(jm, "payload", payload, plen);
            if (pad == IDEVS_PAD_POW2)
                cJSON_AddStringToObject(jm, "pad", "pow2");
            else
                cJSON_AddNumberToObject(jm, "pad", pad);
            cJSON_AddStringToObject(jm, "carries", m == 0 ? "chain" : "digest");
            cJSON *jx = cJSON_AddObjectToObject(jm, "expected");
            add_hex(jx, "plaintext", plain, plain_len);
            add_hex(jx, "aad", aad, aad_len);
            add_hex(jx, "nonce", nonce, 12);
            add_hex(jx, "ciphertext", pm->ciphertext.data, pm->ciphertext.len);
            add_hex(jx, "envelope", env, env_len);
            cJSON_AddItemToArray(msgs, jm);
            idevs__v1__envelope__free_unpacked(pm, NULL);
            free(env);
        }
        idevs_cleanse(key, sizeof key);
        idevs_cleanse(dh_e, sizeof dh_e);
        idevs_cleanse(dh_s, sizeof dh_s);
        idevs_envelope_ctx_free(ctx);
        cJSON_AddItemToArray(vectors, v);
    }

    char *out = cJSON_Print(root);
    CHECK(out != NULL);
    FILE *f = fopen(argv[1], "wb");
    CHECK(f != NULL);
    fputs(out, f);
    fputc('\n', f);
    CHECK(fclose(f) == 0);
    free(out);
    cJSON_Delete(root);
    cJSON_Delete(existing);
    idevs_cert_policy_free(policy);
    struct party *all[] = {&ca, &sender, &recipient};
    for (int i = 0; i < 3; i++) {
        idevs_identity_free(all[i]->id);
        free(all[i]->cert);
    }
    return 0;
}
