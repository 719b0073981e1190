/* Sealing and opening envelopes (proto/idevs_envelope.h, docs/PROTOCOL.md sections 3 to 5): round trips,
 * epochs, every tampered field with its specific error, replay, certificates, malformed input and statistics. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope_internal.h"
#include "fixtures.h"
#include "harness.h"
#include "idevs.pb-c.h"
#include "idevs_envelope.h"

#define TOPIC "idevs/v1/store/sale"
#define MINUTE 60000ull
#define HOUR (60 * MINUTE)

static fixture_pki pki;
static idevs_identity *alice, *bob, *carol;
static idevs_cert_policy *policy;

static int suite_init(void)
{
    fixture_pki_init(&pki);
    alice = fixture_service(&pki, "alice");
    bob = fixture_service(&pki, "bob");
    carol = fixture_service(&pki, "carol");
    policy = fixture_service_policy(&pki);
    return 0;
}

static int suite_clean(void)
{
    idevs_identity_free(alice);
    idevs_identity_free(bob);
    idevs_identity_free(carol);
    idevs_cert_policy_free(policy);
    fixture_pki_free(&pki);
    return 0;
}

static uint64_t real_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint64_t test_clock(void *arg)
{
    return *(const uint64_t *)arg;
}

/* A context for id whose clock reads *clock; opts may be NULL. */
static idevs_envelope_ctx *ctx_for(const idevs_identity *id, const idevs_cert_policy *pol, uint64_t *clock,
                                   const idevs_envelope_options *base)
{
    idevs_envelope_options o;
    if (base != NULL)
        o = *base;
    else
        idevs_envelope_options_default(&o);
    o.clock_ms = test_clock;
    o.clock_arg = clock;
    idevs_envelope_ctx *ctx = NULL;
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(id, pol, &o, &ctx) == IDEVS_OK);
    return ctx;
}

static idevs_err add_peer(idevs_envelope_ctx *ctx, const idevs_identity *peer)
{
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    size_t n = fixture_chain(peer, der, len);
    return idevs_envelope_add_peer(ctx, der, len, n, NULL);
}

typedef struct sealed {
    uint8_t *buf;
    size_t len;
    idevs_msgid id;
} sealed;

static sealed seal_to(idevs_envelope_ctx *ctx, const idevs_identity *to, const char *topic, const void *payload,
                      size_t len)
{
    sealed s = {0};
    idevs_seal_input in = {idevs_identity_uuid(to), topic, payload, len, NULL, 0, NULL, IDEVS_PAD_POW2};
    idevs_err err = idevs_envelope_seal(ctx, &in, &s.buf, &s.len, &s.id);
    if (err != IDEVS_OK)
        fprintf(stderr, "seal: %s\n", idevs_err_name(err));
    CU_ASSERT_FATAL(err == IDEVS_OK);
    return s;
}

static sealed seal_msg(idevs_envelope_ctx *ctx, const idevs_identity *to)
{
    return seal_to(ctx, to, TOPIC, "hello", 5);
}

static idevs_err open_on(idevs_envelope_ctx *ctx, const char *topic, const sealed *s)
{
    idevs_opened o;
    idevs_err err = idevs_envelope_open(ctx, topic, s->buf, s->len, &o);
    if (err == IDEVS_OK)
        idevs_opened_clear(&o);
    else
        CU_ASSERT(o.payload == NULL);
    return err;
}

static idevs_err open_msg(idevs_envelope_ctx *ctx, const sealed *s)
{
    return open_on(ctx, TOPIC, s);
}

static idevs_err open_raw(idevs_envelope_ctx *ctx, const uint8_t *buf, size_t len)
{
    sealed s = {(uint8_t *)buf, len, {{0}}};
    return open_msg(ctx, &s);
}

static void drop(sealed *s)
{
    free(s->buf);
    s->buf = NULL;
}

/* ---- round trips ---- */

static void roundtrip(uint32_t suite, size_t size, size_t prov)
{
    uint64_t now = real_now_ms();
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.suite = suite;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, &o), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    uint8_t *payload = malloc(size + 1);
    CU_ASSERT_FATAL(payload != NULL);
    for (size_t i = 0; i < size; i++)
        payload[i] = (uint8_t)(i * 7 + 3);
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    for (size_t i = 0; i < prov; i++)
        memset(provenance[i].b, (int)i + 1, IDEVS_UUID_LEN);
    for (int round = 0; round < 3; round++) {
        idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, payload, size, prov ? provenance : NULL, prov, NULL,
                               IDEVS_PAD_POW2};
        uint8_t *buf = NULL;
        size_t len = 0;
        idevs_msgid id;
        CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &buf, &len, &id) == IDEVS_OK);
        CU_ASSERT(len <= idevs_envelope_max_size(NULL));
        idevs_opened out;
        CU_ASSERT_FATAL(idevs_envelope_open(b, TOPIC, buf, len, &out) == IDEVS_OK);
        CU_ASSERT_EQUAL(out.payload_len, size);
        CU_ASSERT_FATAL(out.payload != NULL);
        CU_ASSERT(size == 0 || memcmp(out.payload, payload, size) == 0);
        CU_ASSERT_EQUAL(out.payload[size], 0);
        CU_ASSERT(idevs_uuid_equal(&out.sender, idevs_identity_uuid(alice)));
        CU_ASSERT(memcmp(out.message_id.b, id.b, IDEVS_UUID_LEN) == 0);
        CU_ASSERT_EQUAL(out.sequence, (uint64_t)round + 1);
        CU_ASSERT_EQUAL(out.epoch, now);
        CU_ASSERT_EQUAL(out.provenance_count, prov);
        CU_ASSERT(prov == 0 || memcmp(out.provenance, provenance, prov * sizeof provenance[0]) == 0);
        idevs_opened_clear(&out);
        CU_ASSERT(out.payload == NULL);
        free(buf);
    }
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sealed, 3);
    CU_ASSERT_EQUAL(st.sending_epochs, 1);
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.opened, 3);
    CU_ASSERT_EQUAL(st.receiving_epochs, 1);
    free(payload);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_roundtrip_sizes(void)
{
    const size_t sizes[] = {0, 1, 64, 256, 1024, 16384, IDEVS_PAYLOAD_MAX_DEFAULT};
    for (uint32_t suite = 1; suite <= 2; suite++)
        for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
            roundtrip(suite, sizes[i], i % 3 == 0 ? 0 : (i == 6 ? IDEVS_PROVENANCE_MAX : i));
}

static void test_multiple_peers(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL),
                       *c = ctx_for(carol, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(a, carol) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(b, alice) == IDEVS_OK);
    for (int i = 0; i < 3; i++) {
        sealed to_b = seal_msg(a, bob), to_c = seal_msg(a, carol), b_to_a = seal_msg(b, alice);
        CU_ASSERT_EQUAL(open_msg(b, &to_b), IDEVS_OK);
        CU_ASSERT_EQUAL(open_msg(c, &to_c), IDEVS_OK);
        CU_ASSERT_EQUAL(open_msg(c, &to_b), IDEVS_ERR_WRONG_RECIPIENT);
        CU_ASSERT_EQUAL(open_msg(b, &to_c), IDEVS_ERR_WRONG_RECIPIENT);
        CU_ASSERT_EQUAL(open_msg(a, &b_to_a), IDEVS_OK);
        drop(&to_b), drop(&to_c), drop(&b_to_a);
    }
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sending_epochs, 2);
    CU_ASSERT_EQUAL(st.receiving_epochs, 1);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(c);
}

static void test_chain_first_then_digest(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_identity_cert_digest(alice, digest) == IDEVS_OK);
    size_t leaf_len = 0;
    const uint8_t *leaf = idevs_identity_chain_der(alice, 0, &leaf_len);
    for (int i = 1; i <= 3; i++) {
        sealed s = seal_msg(a, bob);
        Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, s.len, s.buf);
        CU_ASSERT_FATAL(m != NULL);
        CU_ASSERT_EQUAL(m->sequence, (uint64_t)i);
        if (i == 1) {
            CU_ASSERT_EQUAL(m->n_sender_chain, 1);
            CU_ASSERT(m->n_sender_chain == 1 && m->sender_chain[0].len == leaf_len &&
                      memcmp(m->sender_chain[0].data, leaf, leaf_len) == 0);
            CU_ASSERT_EQUAL(m->sender_cert_digest.len, 0);
        } else {
            CU_ASSERT_EQUAL(m->n_sender_chain, 0);
            CU_ASSERT(m->sender_cert_digest.len == 32 && memcmp(m->sender_cert_digest.data, digest, 32) == 0);
        }
        /* our hand-appended ciphertext field gives exactly what protobuf-c writes */
        size_t n = idevs__v1__envelope__get_packed_size(m);
        uint8_t *again = malloc(n);
        CU_ASSERT_FATAL(again != NULL);
        CU_ASSERT_EQUAL(idevs__v1__envelope__pack(m, again), n);
        CU_ASSERT(n == s.len && memcmp(again, s.buf, n) == 0);
        free(again);
        idevs__v1__envelope__free_unpacked(m, NULL);
        drop(&s);
    }
    idevs_envelope_ctx_free(a);
}

static void test_known_peer_opens_digest_only(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(b, alice) == IDEVS_OK);
    sealed m1 = seal_msg(a, bob), m2 = seal_msg(a, bob), m3 = seal_msg(a, bob);
    /* the first message of the epoch is lost or late: the digest-only messages establish the epoch */
    CU_ASSERT_EQUAL(open_msg(b, &m2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m3), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m1), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.receiving_epochs, 1);
    drop(&m1), drop(&m2), drop(&m3);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_unknown_sender_then_add_peer(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed m1 = seal_msg(a, bob), m2 = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &m2), IDEVS_ERR_UNKNOWN_SENDER);
    CU_ASSERT_EQUAL(add_peer(b, alice), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m1), IDEVS_OK);
    /* a sender registered by a chain in the envelope */
    idevs_envelope_ctx *b2 = ctx_for(bob, policy, &now, NULL);
    sealed n1 = seal_msg(a, bob);
    idevs_envelope_rotate(a);
    sealed n2 = seal_msg(a, bob), n3 = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b2, &n3), IDEVS_ERR_UNKNOWN_SENDER);
    CU_ASSERT_EQUAL(open_msg(b2, &n2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b2, &n3), IDEVS_OK);
    /* n1 belongs to the epoch before n2's, which b2 never saw: refused as older than the current one */
    CU_ASSERT_EQUAL(open_msg(b2, &n1), IDEVS_ERR_EPOCH_EXPIRED);
    drop(&m1), drop(&m2), drop(&n1), drop(&n2), drop(&n3);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(b2);
}

/* ---- tampering ---- */

typedef void (*mutator)(Idevs__V1__Envelope *m);

/* Re-encodes s after applying fn to the decoded message. The mutators change bytes in place or swap in
 * static storage which they restore through the restore hook below. */
static ProtobufCBinaryData saved_field, *saved_at;
static size_t saved_n, *saved_n_at;
static ProtobufCBinaryData *saved_arr, **saved_arr_at;

static void restore(void)
{
    if (saved_at != NULL)
        *saved_at = saved_field;
    if (saved_n_at != NULL)
        *saved_n_at = saved_n;
    if (saved_arr_at != NULL)
        *saved_arr_at = saved_arr;
    saved_at = NULL, saved_n_at = NULL, saved_arr_at = NULL;
}

static void swap_field(ProtobufCBinaryData *f, ProtobufCBinaryData v)
{
    saved_field = *f;
    saved_at = f;
    *f = v;
}

static void swap_array(size_t *n, ProtobufCBinaryData **arr, size_t nv, ProtobufCBinaryData *v)
{
    saved_n = *n, saved_n_at = n;
    saved_arr = *arr, saved_arr_at = arr;
    *n = nv;
    *arr = v;
}

static sealed tampered(const sealed *s, mutator fn)
{
    Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, s->len, s->buf);
    CU_ASSERT_FATAL(m != NULL);
    fn(m);
    sealed t = {0};
    t.len = idevs__v1__envelope__get_packed_size(m);
    t.buf = malloc(t.len);
    CU_ASSERT_FATAL(t.buf != NULL);
    CU_ASSERT_FATAL(idevs__v1__envelope__pack(m, t.buf) == t.len);
    restore();
    idevs__v1__envelope__free_unpacked(m, NULL);
    return t;
}

static uint8_t other16[16] = {0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
static uint8_t carol_uuid[16], fake_digest[32];
static ProtobufCBinaryData prov_arr[2];
static uint8_t prov_ids[2][16];

static void m_version(Idevs__V1__Envelope *m) { m->version = 3; }
static void m_version1(Idevs__V1__Envelope *m) { m->version = 1; }
static void m_instance(Idevs__V1__Envelope *m) { m->instance = 1; }
static void m_version0(Idevs__V1__Envelope *m) { m->version = 0; }
static void m_suite3(Idevs__V1__Envelope *m) { m->suite = 3; }
static void m_suite_swap(Idevs__V1__Envelope *m) { m->suite = m->suite == 1 ? 2 : 1; }
static void m_sender(Idevs__V1__Envelope *m) { swap_field(&m->sender, (ProtobufCBinaryData){16, other16}); }
static void m_sender_carol(Idevs__V1__Envelope *m) { swap_field(&m->sender, (ProtobufCBinaryData){16, carol_uuid}); }
static void m_sender_short(Idevs__V1__Envelope *m) { m->sender.len = 15; }
static void m_recipient(Idevs__V1__Envelope *m) { m->recipient.data[3] ^= 1; }
static void m_message_id(Idevs__V1__Envelope *m) { m->message_id.data[0] ^= 0x80; }
static void m_epoch_up(Idevs__V1__Envelope *m) { m->epoch += 1; }
static void m_epoch_down(Idevs__V1__Envelope *m) { m->epoch -= 1; }
static void m_sequence(Idevs__V1__Envelope *m) { m->sequence += 1; }
static void m_sequence0(Idevs__V1__Envelope *m) { m->sequence = 0; }
static void m_ephemeral(Idevs__V1__Envelope *m) { m->ephemeral_key.data[31] ^= 0x01; }
static void m_signature(Idevs__V1__Envelope *m) { m->epoch_signature.data[10] ^= 0x40; }
static void m_chain_sig(Idevs__V1__Envelope *m) { m->sender_chain[0].data[m->sender_chain[0].len - 1] ^= 1; }
static void m_chain_body(Idevs__V1__Envelope *m) { m->sender_chain[0].data[m->sender_chain[0].len / 2] ^= 1; }
static void m_chain_plus_digest(Idevs__V1__Envelope *m) { swap_field(&m->sender_cert_digest, (ProtobufCBinaryData){32, fake_digest}); }
static void m_digest(Idevs__V1__Envelope *m) { m->sender_cert_digest.data[31] ^= 1; }
static void m_digest_removed(Idevs__V1__Envelope *m) { m->sender_cert_digest.len = 0; }
static void m_prov_add(Idevs__V1__Envelope *m)
{
    prov_arr[0] = (ProtobufCBinaryData){16, prov_ids[0]};
    swap_array(&m->n_provenance, &m->provenance, 1, prov_arr);
}
static void m_ciphertext(Idevs__V1__Envelope *m) { m->ciphertext.data[0] ^= 1; }
/* the sealed provenance (the first plaintext bytes) and the padding (the last ones before the tag) */
static void m_sealed_prov(Idevs__V1__Envelope *m) { m->ciphertext.data[3] ^= 1; }
static void m_sealed_padding(Idevs__V1__Envelope *m) { m->ciphertext.data[m->ciphertext.len - 17] ^= 1; }
static void m_ct_no_frame(Idevs__V1__Envelope *m) { m->ciphertext.len = 20; }
static void m_tag(Idevs__V1__Envelope *m) { m->ciphertext.data[m->ciphertext.len - 1] ^= 0x80; }
static void m_ct_short(Idevs__V1__Envelope *m) { m->ciphertext.len = 15; }

struct tamper_case {
    const char *what;
    mutator fn;
    idevs_err first;  /* on the first message of an epoch (chain), receiver without the epoch */
    idevs_err second; /* on a later message (digest), receiver holding the epoch */
};

static const struct tamper_case tamper_cases[] = {
    {"version 3", m_version, IDEVS_ERR_VERSION, IDEVS_ERR_VERSION},
    {"version 0", m_version0, IDEVS_ERR_VERSION, IDEVS_ERR_VERSION},
    {"version 1", m_version1, IDEVS_ERR_OLD_VERSION, IDEVS_ERR_OLD_VERSION},
    {"instance 1", m_instance, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_SIGNATURE},
    {"suite 3", m_suite3, IDEVS_ERR_SUITE, IDEVS_ERR_SUITE},
    {"other suite", m_suite_swap, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_CONFLICT},
    {"unknown sender", m_sender, IDEVS_ERR_MALFORMED, IDEVS_ERR_UNKNOWN_SENDER},
    {"other known sender", m_sender_carol, IDEVS_ERR_MALFORMED, IDEVS_ERR_CERT_DIGEST_MISMATCH},
    {"sender 15 bytes", m_sender_short, IDEVS_ERR_MALFORMED, IDEVS_ERR_MALFORMED},
    {"recipient", m_recipient, IDEVS_ERR_WRONG_RECIPIENT, IDEVS_ERR_WRONG_RECIPIENT},
    {"message id", m_message_id, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"epoch + 1", m_epoch_up, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_SIGNATURE},
    {"epoch - 1", m_epoch_down, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_EXPIRED},
    {"sequence + 1", m_sequence, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"sequence 0", m_sequence0, IDEVS_ERR_MALFORMED, IDEVS_ERR_MALFORMED},
    {"ephemeral key", m_ephemeral, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_CONFLICT},
    {"epoch signature", m_signature, IDEVS_ERR_EPOCH_SIGNATURE, IDEVS_ERR_EPOCH_CONFLICT},
    {"clear provenance added", m_prov_add, IDEVS_ERR_MALFORMED, IDEVS_ERR_MALFORMED},
    {"sealed provenance", m_sealed_prov, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"sealed padding", m_sealed_padding, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"ciphertext", m_ciphertext, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"tag", m_tag, IDEVS_ERR_DECRYPT, IDEVS_ERR_DECRYPT},
    {"ciphertext shorter than a tag", m_ct_short, IDEVS_ERR_MALFORMED, IDEVS_ERR_MALFORMED},
    {"ciphertext shorter than a tag and the framing", m_ct_no_frame, IDEVS_ERR_MALFORMED, IDEVS_ERR_MALFORMED},
};

static void test_tampered_fields(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    memcpy(carol_uuid, idevs_identity_uuid(carol)->b, 16);
    memset(fake_digest, 0x5a, sizeof fake_digest);
    memset(prov_ids, 0x33, sizeof prov_ids);
    idevs_msgid prov = {{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, (const uint8_t *)"payload!", 8, &prov, 1, NULL,
                           IDEVS_PAD_POW2};
    sealed first = {0}, second = {0};
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &first.buf, &first.len, NULL) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &second.buf, &second.len, NULL) == IDEVS_OK);

    for (size_t i = 0; i < sizeof tamper_cases / sizeof tamper_cases[0]; i++) {
        const struct tamper_case *c = &tamper_cases[i];
        /* the first message, to a receiver that knows carol but neither alice nor her epoch */
        idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
        CU_ASSERT_FATAL(add_peer(b, carol) == IDEVS_OK);
        sealed t = tampered(&first, c->fn);
        idevs_err got = open_msg(b, &t);
        if (got != c->first)
            fprintf(stderr, "\n    first message, %s: got %s, want %s", c->what, idevs_err_name(got),
                    idevs_err_name(c->first));
        CU_ASSERT_EQUAL(got, c->first);
        drop(&t);
        /* nothing changed: the genuine first message still opens, then the tampered second one fails */
        CU_ASSERT_EQUAL(open_msg(b, &first), IDEVS_OK);
        t = tampered(&second, c->fn);
        got = open_msg(b, &t);
        if (got != c->second)
            fprintf(stderr, "\n    second message, %s: got %s, want %s", c->what, idevs_err_name(got),
                    idevs_err_name(c->second));
        CU_ASSERT_EQUAL(got, c->second);
        drop(&t);
        CU_ASSERT_EQUAL(open_msg(b, &second), IDEVS_OK);
        idevs_envelope_stats st;
        idevs_envelope_get_stats(b, &st);
        CU_ASSERT_EQUAL(st.opened, 2);
        CU_ASSERT_EQUAL(st.receiving_epochs, 1);
        CU_ASSERT_EQUAL(st.rejected[c->first] + (c->first == c->second ? 0 : st.rejected[c->second]),
                        c->first == c->second ? 2u : 2u);
        idevs_envelope_ctx_free(b);
    }

    /* chain-specific tampering on the first message */
    struct {
        const char *what;
        mutator fn;
        idevs_err want;
    } chain_cases[] = {
        {"chain signature byte", m_chain_sig, IDEVS_ERR_CERT_UNTRUSTED},
        {"chain body byte", m_chain_body, IDEVS_ERR_COUNT /* any certificate error */},
        {"chain and digest both", m_chain_plus_digest, IDEVS_ERR_MALFORMED},
    };
    for (size_t i = 0; i < sizeof chain_cases / sizeof chain_cases[0]; i++) {
        idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
        sealed t = tampered(&first, chain_cases[i].fn);
        idevs_err got = open_msg(b, &t);
        if (chain_cases[i].want != IDEVS_ERR_COUNT)
            CU_ASSERT_EQUAL(got, chain_cases[i].want);
        CU_ASSERT(got != IDEVS_OK);
        if (chain_cases[i].fn == m_chain_body)
            CU_ASSERT(got >= IDEVS_ERR_CERT_MALFORMED && got <= IDEVS_ERR_CERT_NOT_YET_VALID);
        drop(&t);
        CU_ASSERT_EQUAL(open_msg(b, &first), IDEVS_OK);
        idevs_envelope_ctx_free(b);
    }
    /* digest-specific tampering on the second message */
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_EQUAL(open_msg(b, &first), IDEVS_OK);
    sealed t = tampered(&second, m_digest);
    CU_ASSERT_EQUAL(open_msg(b, &t), IDEVS_ERR_CERT_DIGEST_MISMATCH);
    drop(&t);
    t = tampered(&second, m_digest_removed);
    CU_ASSERT_EQUAL(open_msg(b, &t), IDEVS_ERR_MALFORMED);
    drop(&t);
    CU_ASSERT_EQUAL(open_msg(b, &second), IDEVS_OK);
    idevs_envelope_ctx_free(b);

    drop(&first), drop(&second);
    idevs_envelope_ctx_free(a);
}

/* An epoch offer correctly formed but signed by another identity's key. */
static void test_forged_epoch_signature(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(b, alice) == IDEVS_OK);
    sealed s = seal_msg(a, bob), s2 = seal_msg(a, bob);
    Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, s2.len, s2.buf);
    CU_ASSERT_FATAL(m != NULL);
    uint8_t offer[IDEVS_OFFER_LEN], digest[32], sig[64];
    CU_ASSERT_FATAL(idevs_identity_cert_digest(alice, digest) == IDEVS_OK);
    idevs_env_offer(offer, m->suite, m->instance, idevs_identity_uuid(alice), idevs_identity_uuid(bob), m->epoch,
                    m->ephemeral_key.data, idevs_identity_kex_public(bob), digest);
    /* the genuine signature is over exactly this offer */
    CU_ASSERT(idevs_ed25519_verify(idevs_identity_sign_public(alice), offer, sizeof offer, m->epoch_signature.data) ==
              IDEVS_OK);
    CU_ASSERT_FATAL(idevs_ed25519_sign(idevs_identity_sign_key(carol), offer, sizeof offer, sig) == IDEVS_OK);
    memcpy(m->epoch_signature.data, sig, 64);
    size_t n = idevs__v1__envelope__get_packed_size(m);
    uint8_t *buf = malloc(n);
    CU_ASSERT_FATAL(buf != NULL);
    idevs__v1__envelope__pack(m, buf);
    CU_ASSERT_EQUAL(open_raw(b, buf, n), IDEVS_ERR_EPOCH_SIGNATURE);
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    free(buf);
    idevs__v1__envelope__free_unpacked(m, NULL);
    drop(&s), drop(&s2);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_wrong_recipient_and_topic(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL),
                       *c = ctx_for(carol, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed s = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(c, &s), IDEVS_ERR_WRONG_RECIPIENT);
    CU_ASSERT_EQUAL(open_on(b, "idevs/v1/store/salf", &s), IDEVS_ERR_DECRYPT);
    CU_ASSERT_EQUAL(open_on(b, "idevs/v1/store/sale/", &s), IDEVS_ERR_DECRYPT);
    CU_ASSERT_EQUAL(open_on(b, "idevs/v1/+/sale", &s), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(open_on(b, "", &s), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_DECRYPT], 2);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_INVALID_ARG], 2);
    CU_ASSERT_EQUAL(st.opened, 1);
    drop(&s);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(c);
}

static void test_sender_not_allowed(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed s = seal_msg(a, bob);
    CU_ASSERT_EQUAL(idevs_envelope_allow_sender(b, idevs_identity_uuid(carol)), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_ERR_SENDER_NOT_ALLOWED);
    CU_ASSERT_EQUAL(idevs_envelope_allow_sender(b, idevs_identity_uuid(alice)), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_envelope_allow_sender(b, idevs_identity_uuid(alice)), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

/* ---- replay ---- */

static void test_replay_window(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    enum { N = 1100 };
    sealed *m = calloc(N + 1, sizeof *m);
    CU_ASSERT_FATAL(m != NULL);
    for (int i = 1; i <= N; i++)
        m[i] = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &m[1]), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m[1]), IDEVS_ERR_REPLAY);
    /* reordering inside the window */
    for (int i = 20; i >= 2; i--)
        CU_ASSERT_EQUAL(open_msg(b, &m[i]), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m[7]), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(open_msg(b, &m[N]), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m[N - 1023]), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &m[N - 1024]), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(open_msg(b, &m[21]), IDEVS_ERR_OUTSIDE_WINDOW);
    CU_ASSERT_EQUAL(open_msg(b, &m[N]), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(open_msg(b, &m[N - 1]), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_REPLAY], 3);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_OUTSIDE_WINDOW], 2);
    CU_ASSERT_EQUAL(st.opened, 23);
    for (int i = 1; i <= N; i++)
        drop(&m[i]);
    free(m);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

/* A forgery (bad tag) with a high sequence number or a new epoch changes nothing. */
static void test_forgery_changes_nothing(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *a2 = ctx_for(alice, policy, &now, NULL),
                       *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(a2, bob) == IDEVS_OK);
    sealed m1 = seal_msg(a, bob), m2 = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &m1), IDEVS_OK);
    /* sequence 5000 with a wrong tag would push m2 out of the window if it counted */
    Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, m2.len, m2.buf);
    CU_ASSERT_FATAL(m != NULL);
    m->sequence = 5000;
    sealed f = {0};
    f.len = idevs__v1__envelope__get_packed_size(m);
    f.buf = malloc(f.len);
    CU_ASSERT_FATAL(f.buf != NULL);
    idevs__v1__envelope__pack(m, f.buf);
    idevs__v1__envelope__free_unpacked(m, NULL);
    CU_ASSERT_EQUAL(open_msg(b, &f), IDEVS_ERR_DECRYPT);
    drop(&f);
    /* a new epoch (a second context of alice, 1 ms later) whose ciphertext is altered */
    now += 1;
    sealed n1 = seal_msg(a2, bob), n2 = seal_msg(a2, bob);
    f = tampered(&n1, m_tag);
    CU_ASSERT_EQUAL(open_msg(b, &f), IDEVS_ERR_DECRYPT);
    drop(&f);
    /* the old epoch is still the current one: its messages open, and no grace period started */
    now += 10 * MINUTE;
    CU_ASSERT_EQUAL(open_msg(b, &m2), IDEVS_OK);
    /* a forged chain message from an unknown sender installs no peer */
    idevs_envelope_ctx *c = ctx_for(carol, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(c, bob) == IDEVS_OK);
    sealed c1 = seal_msg(c, bob), c2 = seal_msg(c, bob);
    f = tampered(&c1, m_ciphertext);
    CU_ASSERT_EQUAL(open_msg(b, &f), IDEVS_ERR_DECRYPT);
    drop(&f);
    CU_ASSERT_EQUAL(open_msg(b, &c2), IDEVS_ERR_UNKNOWN_SENDER);
    CU_ASSERT_EQUAL(open_msg(b, &c1), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &c2), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.receiving_epochs, 2);
    /* the genuine new epoch of alice is then accepted */
    CU_ASSERT_EQUAL(open_msg(b, &n2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &n1), IDEVS_OK);
    drop(&m1), drop(&m2), drop(&n1), drop(&n2), drop(&c1), drop(&c2);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(a2);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(c);
}

/* ---- epochs ---- */

static uint64_t epoch_of(const sealed *s)
{
    Idevs__V1__Envelope *m = idevs__v1__envelope__unpack(NULL, s->len, s->buf);
    CU_ASSERT_FATAL(m != NULL);
    uint64_t e = m->epoch * 100000u + m->sequence; /* epoch and sequence in one number for the checks below */
    idevs__v1__envelope__free_unpacked(m, NULL);
    return e;
}

static void test_rollover_by_lifetime_and_grace(void)
{
    uint64_t t0 = real_now_ms(), now = t0;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed e1a = seal_msg(a, bob), e1b = seal_msg(a, bob), e1c = seal_msg(a, bob), e1d = seal_msg(a, bob);
    CU_ASSERT_EQUAL(epoch_of(&e1b), t0 * 100000u + 2);
    CU_ASSERT_EQUAL(open_msg(b, &e1a), IDEVS_OK);
    now = t0 + HOUR - 1;
    sealed e1e = seal_msg(a, bob);
    CU_ASSERT_EQUAL(epoch_of(&e1e), t0 * 100000u + 5);
    now = t0 + HOUR;
    sealed e2a = seal_msg(a, bob), e2b = seal_msg(a, bob);
    CU_ASSERT_EQUAL(epoch_of(&e2a), (t0 + HOUR) * 100000u + 1);
    CU_ASSERT_EQUAL(open_msg(b, &e2a), IDEVS_OK); /* the epoch of e1 becomes the previous one, grace starts */
    now += 5 * MINUTE - 1;
    CU_ASSERT_EQUAL(open_msg(b, &e1b), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &e1e), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &e1b), IDEVS_ERR_REPLAY);
    now += 1;
    CU_ASSERT_EQUAL(open_msg(b, &e1c), IDEVS_ERR_EPOCH_EXPIRED);
    CU_ASSERT_EQUAL(open_msg(b, &e2b), IDEVS_OK);
    /* a third epoch forgets the first entirely */
    now += HOUR;
    sealed e3a = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &e3a), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &e1d), IDEVS_ERR_EPOCH_EXPIRED);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sending_epochs, 3);
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.receiving_epochs, 3);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_EPOCH_EXPIRED], 2);
    drop(&e1a), drop(&e1b), drop(&e1c), drop(&e1d), drop(&e1e), drop(&e2a), drop(&e2b), drop(&e3a);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_rollover_by_count_and_rotate(void)
{
    uint64_t t0 = real_now_ms(), now = t0;
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.epoch_max_messages = 3;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, &o), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed s[8];
    for (int i = 0; i < 8; i++) {
        if (i == 5)
            idevs_envelope_rotate(a);
        s[i] = seal_msg(a, bob);
    }
    /* the clock stands still: epoch numbers go up by one */
    CU_ASSERT_EQUAL(epoch_of(&s[0]), t0 * 100000u + 1);
    CU_ASSERT_EQUAL(epoch_of(&s[2]), t0 * 100000u + 3);
    CU_ASSERT_EQUAL(epoch_of(&s[3]), (t0 + 1) * 100000u + 1);
    CU_ASSERT_EQUAL(epoch_of(&s[4]), (t0 + 1) * 100000u + 2);
    CU_ASSERT_EQUAL(epoch_of(&s[5]), (t0 + 2) * 100000u + 1);
    CU_ASSERT_EQUAL(epoch_of(&s[7]), (t0 + 2) * 100000u + 3);
    for (int i = 0; i < 8; i++)
        CU_ASSERT_EQUAL(open_msg(b, &s[i]), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sending_epochs, 3);
    for (int i = 0; i < 8; i++)
        drop(&s[i]);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_stale_and_future_epochs(void)
{
    uint64_t t0 = real_now_ms(), ta = t0, tb = t0;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &ta, NULL), *b = ctx_for(bob, policy, &tb, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed old = seal_msg(a, bob);
    tb = t0 + 65 * MINUTE + 1;
    CU_ASSERT_EQUAL(open_msg(b, &old), IDEVS_ERR_EPOCH_STALE);
    tb = t0 + 65 * MINUTE;
    CU_ASSERT_EQUAL(open_msg(b, &old), IDEVS_OK);
    idevs_envelope_ctx *b2 = ctx_for(bob, policy, &tb, NULL);
    idevs_envelope_rotate(a);
    ta = t0 + 10 * MINUTE;
    tb = t0 + 5 * MINUTE - 1;
    sealed future = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b2, &future), IDEVS_ERR_EPOCH_FUTURE);
    tb = t0 + 5 * MINUTE;
    CU_ASSERT_EQUAL(open_msg(b2, &future), IDEVS_OK);
    drop(&old), drop(&future);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(b2);
}

static void test_epoch_conflict(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *a2 = ctx_for(alice, policy, &now, NULL),
                       *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(a2, bob) == IDEVS_OK);
    /* same clock, same epoch number, different ephemeral keys (a sender restarted with its clock set back) */
    sealed x1 = seal_msg(a, bob), y1 = seal_msg(a2, bob), y2 = seal_msg(a2, bob);
    CU_ASSERT_EQUAL(epoch_of(&x1) / 100000u, epoch_of(&y1) / 100000u);
    CU_ASSERT_EQUAL(open_msg(b, &x1), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &y1), IDEVS_ERR_EPOCH_CONFLICT);
    CU_ASSERT_EQUAL(open_msg(b, &y2), IDEVS_ERR_EPOCH_CONFLICT);
    drop(&x1), drop(&y1), drop(&y2);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(a2);
    idevs_envelope_ctx_free(b);
}

/* ---- certificates ---- */

static void test_compartment_sender(void)
{
    uint64_t now = real_now_ms();
    uint8_t measurement[32], other[32], descriptor[32];
    memset(measurement, 0x11, 32);
    memset(other, 0x12, 32);
    memset(descriptor, 0x22, 32);
    idevs_uuid program;
    idevs_uuid_generate(&program);
    idevs_identity *proc = fixture_compartment(&pki, "proc", &program, measurement, descriptor, 3600, 0);
    idevs_cert_policy *good = fixture_compartment_policy(&pki, measurement, descriptor);
    idevs_cert_policy *bad = fixture_compartment_policy(&pki, other, descriptor);
    CU_ASSERT_EQUAL(idevs_identity_chain_count(proc), 2);
    idevs_envelope_ctx *p = ctx_for(proc, policy, &now, NULL), *b = ctx_for(bob, good, &now, NULL),
                       *b_bad = ctx_for(bob, bad, &now, NULL), *b_svc = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(p, bob) == IDEVS_OK);
    sealed s1 = seal_msg(p, bob), s2 = seal_msg(p, bob);
    CU_ASSERT_EQUAL(open_msg(b_bad, &s1), IDEVS_ERR_MEASUREMENT_MISMATCH);
    CU_ASSERT_EQUAL(open_msg(b_bad, &s2), IDEVS_ERR_UNKNOWN_SENDER);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_OK);
    /* a service (no evidence) is not accepted under a compartment policy */
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed from_service = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &from_service), IDEVS_ERR_EVIDENCE_MISSING);
    /* add_peer applies the policy too */
    CU_ASSERT_EQUAL(add_peer(b_bad, proc), IDEVS_ERR_MEASUREMENT_MISMATCH);
    /* the policy verdict is cached with the certificate's expiry: a compartment certificate of one hour is
     * refused an hour later on the receiver's clock, by digest and by chain alike */
    sealed s3 = seal_msg(p, bob);
    idevs_envelope_rotate(p);
    sealed s4 = seal_msg(p, bob);
    CU_ASSERT_EQUAL(open_msg(b_svc, &s1), IDEVS_OK);
    now += 3600 * 1000u + 1000;
    CU_ASSERT_EQUAL(open_msg(b, &s3), IDEVS_ERR_CERT_EXPIRED);
    CU_ASSERT_EQUAL(open_msg(b_svc, &s4), IDEVS_ERR_CERT_EXPIRED);
    drop(&s1), drop(&s2), drop(&s3), drop(&s4), drop(&from_service);
    idevs_envelope_ctx_free(p);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(b_bad);
    idevs_envelope_ctx_free(b_svc);
    idevs_envelope_ctx_free(a);
    idevs_cert_policy_free(good);
    idevs_cert_policy_free(bad);
    idevs_identity_free(proc);
}

static void test_sender_certificate_expired(void)
{
    uint64_t t0 = real_now_ms(), ta = t0, tb = t0;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &ta, NULL), *b = ctx_for(bob, policy, &tb, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(b, alice) == IDEVS_OK);
    sealed s1 = seal_msg(a, bob), s2 = seal_msg(a, bob), s3 = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_OK);
    /* fixture certificates last 30 days */
    tb = t0 + 31ull * 24 * HOUR;
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_ERR_CERT_EXPIRED);
    CU_ASSERT_EQUAL(add_peer(b, alice), IDEVS_ERR_CERT_EXPIRED);
    tb = t0;
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s3), IDEVS_OK);
    drop(&s1), drop(&s2), drop(&s3);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

/* Nothing is sealed to a peer whose certificate is past its notAfter, not even in a running epoch. (A renewed
 * certificate of the same keys: tests/unit/test_compartment.c and test_launcher.c.) */
static void test_recipient_certificate_expired(void)
{
    uint64_t t0 = real_now_ms(), ta = t0;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &ta, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed s1 = seal_msg(a, bob);
    ta = t0 + 31ull * 24 * HOUR; /* fixture certificates last 30 days */
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, (const uint8_t *)"late", 4, NULL, 0, NULL, IDEVS_PAD_POW2};
    uint8_t *buf = NULL;
    size_t len = 0;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_CERT_EXPIRED);
    CU_ASSERT_PTR_NULL(buf);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sealed, 1);
    drop(&s1);
    idevs_envelope_ctx_free(a);
}

/* ---- malformed input ---- */

static uint64_t rng_state = 0x243f6a8885a308d3ull;
static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static bool decoding_error(idevs_err e)
{
    return e == IDEVS_ERR_MALFORMED || e == IDEVS_ERR_VERSION || e == IDEVS_ERR_SUITE;
}

static void test_truncated_oversized_garbage(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    idevs_msgid prov[2] = {{{1}}, {{2}}};
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, (const uint8_t *)"0123456789", 10, prov, 2, NULL,
                           IDEVS_PAD_POW2};
    sealed s1 = {0}, s2 = {0};
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &s1.buf, &s1.len, NULL) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &s2.buf, &s2.len, NULL) == IDEVS_OK);
    unsigned bad = 0;
    for (size_t n = 0; n < s1.len; n++)
        if (!decoding_error(open_raw(b, s1.buf, n)))
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_OK);
    for (size_t n = 0; n < s2.len; n++)
        if (!decoding_error(open_raw(b, s2.buf, n)))
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
    /* oversized input and an oversized plaintext */
    size_t max = idevs_envelope_max_size(NULL);
    uint8_t *big = calloc(max + 1, 1);
    CU_ASSERT_FATAL(big != NULL);
    memcpy(big, s2.buf, s2.len);
    CU_ASSERT_EQUAL(open_raw(b, big, max + 1), IDEVS_ERR_TOO_LARGE);
    free(big);
    idevs_envelope_options small;
    idevs_envelope_options_default(&small);
    small.max_payload = 9;
    idevs_envelope_ctx *b_small = ctx_for(bob, policy, &now, &small);
    CU_ASSERT_EQUAL(open_msg(b_small, &s1), IDEVS_ERR_TOO_LARGE);
    idevs_envelope_ctx_free(b_small);
    /* unknown field appended (field 15, varint 1) */
    uint8_t *ext = malloc(s2.len + 2);
    CU_ASSERT_FATAL(ext != NULL);
    memcpy(ext, s2.buf, s2.len);
    ext[s2.len] = 0x78, ext[s2.len + 1] = 0x01;
    CU_ASSERT_EQUAL(open_raw(b, ext, s2.len + 2), IDEVS_ERR_MALFORMED);
    /* and a large unknown field number */
    ext[s2.len] = 0xf8, ext[s2.len + 1] = 0x01;
    CU_ASSERT(open_raw(b, ext, s2.len + 2) == IDEVS_ERR_MALFORMED);
    free(ext);
    /* random garbage */
    uint8_t junk[700];
    for (int i = 0; i < 3000; i++) {
        size_t n = (size_t)(rng() % sizeof junk);
        for (size_t k = 0; k < n; k++)
            junk[k] = (uint8_t)rng();
        if (open_raw(b, junk, n) == IDEVS_OK)
            bad++;
    }
    /* random bit flips of a genuine envelope */
    uint8_t *copy = malloc(s2.len);
    CU_ASSERT_FATAL(copy != NULL);
    for (int i = 0; i < 3000; i++) {
        memcpy(copy, s2.buf, s2.len);
        int flips = 1 + (int)(rng() % 3);
        for (int k = 0; k < flips; k++)
            copy[rng() % s2.len] ^= (uint8_t)(1u << (rng() % 8));
        if (memcmp(copy, s2.buf, s2.len) != 0 && open_raw(b, copy, s2.len) == IDEVS_OK)
            bad++;
    }
    free(copy);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_OK);
    drop(&s1), drop(&s2);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_seal_arguments(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    uint8_t *buf = NULL;
    size_t len = 0;
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, (const uint8_t *)"x", 1, NULL, 0, NULL, IDEVS_PAD_POW2};
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_UNKNOWN_RECIPIENT);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    char topic[IDEVS_TOPIC_MAX + 2];
    memset(topic, 'a', sizeof topic);
    topic[IDEVS_TOPIC_MAX + 1] = 0;
    in.topic = topic;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    topic[IDEVS_TOPIC_MAX] = 0;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_OK);
    idevs_opened o;
    CU_ASSERT_EQUAL(idevs_envelope_open(b, topic, buf, len, &o), IDEVS_OK);
    idevs_opened_clear(&o);
    free(buf);
    const char *bad_topics[] = {"", "a/+/b", "a/#", "#", "+"};
    for (size_t i = 0; i < sizeof bad_topics / sizeof bad_topics[0]; i++) {
        in.topic = bad_topics[i];
        CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    }
    in.topic = NULL;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    in.topic = TOPIC;
    uint8_t *huge = calloc(IDEVS_PAYLOAD_MAX_DEFAULT + 1, 1);
    CU_ASSERT_FATAL(huge != NULL);
    in.payload = huge;
    in.payload_len = IDEVS_PAYLOAD_MAX_DEFAULT + 1;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_TOO_LARGE);
    free(huge);
    in.payload = NULL;
    in.payload_len = 3;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    in.payload_len = 0;
    idevs_msgid prov[IDEVS_PROVENANCE_MAX + 1];
    memset(prov, 0, sizeof prov);
    in.provenance = prov;
    in.provenance_count = IDEVS_PROVENANCE_MAX + 1;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    in.provenance = NULL;
    in.provenance_count = 1;
    CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &buf, &len, NULL), IDEVS_ERR_INVALID_ARG);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(a, &st);
    CU_ASSERT_EQUAL(st.sealed, 1);
    /* options out of range */
    idevs_envelope_options opts;
    idevs_envelope_options_default(&opts);
    opts.suite = 7;
    idevs_envelope_ctx *x = NULL;
    CU_ASSERT_EQUAL(idevs_envelope_ctx_new(alice, policy, &opts, &x), IDEVS_ERR_INVALID_ARG);
    opts.suite = 1;
    opts.max_payload = IDEVS_PAYLOAD_MAX_LIMIT + 1;
    CU_ASSERT_EQUAL(idevs_envelope_ctx_new(alice, policy, &opts, &x), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT(x == NULL);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

static void test_peer_limit(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.max_peers = 1;
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, &o), *a = ctx_for(alice, policy, &now, NULL),
                       *c = ctx_for(carol, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    CU_ASSERT_FATAL(add_peer(c, bob) == IDEVS_OK);
    sealed sa = seal_msg(a, bob), sc = seal_msg(c, bob);
    CU_ASSERT_EQUAL(open_msg(b, &sa), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &sc), IDEVS_ERR_PEER_LIMIT);
    CU_ASSERT_EQUAL(add_peer(b, carol), IDEVS_ERR_PEER_LIMIT);
    CU_ASSERT_EQUAL(add_peer(b, alice), IDEVS_OK); /* the same peer again is no new entry */
    drop(&sa), drop(&sc);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(c);
}

static void test_stats_per_reason(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL),
                       *c = ctx_for(carol, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed s1 = seal_msg(a, bob), s2 = seal_msg(a, bob);
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_ERR_UNKNOWN_SENDER);
    CU_ASSERT_EQUAL(open_msg(c, &s1), IDEVS_ERR_WRONG_RECIPIENT);
    CU_ASSERT_EQUAL(open_raw(b, (const uint8_t *)"\xff", 1), IDEVS_ERR_MALFORMED);
    CU_ASSERT_EQUAL(open_on(b, "other", &s1), IDEVS_ERR_DECRYPT);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(open_msg(b, &s1), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(open_msg(b, &s2), IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.opened, 2);
    CU_ASSERT_EQUAL(st.sealed, 0);
    CU_ASSERT_EQUAL(st.receiving_epochs, 1);
    uint64_t total = 0;
    for (int i = 0; i < IDEVS_ERR_COUNT; i++)
        total += st.rejected[i];
    CU_ASSERT_EQUAL(total, 5);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_UNKNOWN_SENDER], 1);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_MALFORMED], 1);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_DECRYPT], 1);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_REPLAY], 2);
    idevs_envelope_get_stats(c, &st);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_WRONG_RECIPIENT], 1);
    drop(&s1), drop(&s2);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
    idevs_envelope_ctx_free(c);
}

/* ---- peek: the keyless structural check ---- */

static void test_peek(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    idevs_msgid prov[2] = {{{7}}, {{8}}};
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, (const uint8_t *)"0123456789", 10, prov, 2, NULL,
                           IDEVS_PAD_POW2};
    sealed first = {0}, second = {0};
    idevs_msgid first_id, second_id;
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &first.buf, &first.len, &first_id) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &second.buf, &second.len, &second_id) == IDEVS_OK);

    idevs_envelope_header h;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_peek(first.buf, first.len, &h), IDEVS_OK);
    CU_ASSERT_EQUAL(h.version, IDEVS_ENVELOPE_VERSION);
    CU_ASSERT_EQUAL(h.suite, IDEVS_SUITE_X25519_AES256GCM);
    CU_ASSERT(idevs_uuid_equal(&h.sender, idevs_identity_uuid(alice)));
    CU_ASSERT(idevs_uuid_equal(&h.recipient, idevs_identity_uuid(bob)));
    CU_ASSERT(idevs_uuid_equal(&h.message_id, &first_id));
    CU_ASSERT_EQUAL(h.sequence, 1);
    CU_ASSERT(h.epoch > 0);
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t der_len[IDEVS_CHAIN_MAX];
    CU_ASSERT(h.chain_count > 0);
    CU_ASSERT_EQUAL(h.chain_count, fixture_chain(alice, der, der_len));
    CU_ASSERT_EQUAL(h.instance, 0);
    /* 5 + 2 x 16 + 10 bytes framed, padded to 64: the clear header shows neither the provenance nor the length */
    CU_ASSERT_EQUAL(h.ciphertext_len, 64 + IDEVS_AEAD_TAG_LEN);
    uint64_t epoch = h.epoch;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_peek(second.buf, second.len, &h), IDEVS_OK);
    CU_ASSERT_EQUAL(h.sequence, 2);
    CU_ASSERT_EQUAL(h.epoch, epoch);
    CU_ASSERT_EQUAL(h.chain_count, 0); /* digest only */
    CU_ASSERT(idevs_uuid_equal(&h.message_id, &second_id));

    /* each structural fault has the error open() gives for it, and leaves the header zeroed */
    struct {
        const char *what;
        mutator fn;
        idevs_err want;
    } cases[] = {
        {"version 3", m_version, IDEVS_ERR_VERSION},
        {"version 0", m_version0, IDEVS_ERR_VERSION},
        {"version 1", m_version1, IDEVS_ERR_OLD_VERSION},
        {"suite 3", m_suite3, IDEVS_ERR_SUITE},
        {"sender 15 bytes", m_sender_short, IDEVS_ERR_MALFORMED},
        {"sequence 0", m_sequence0, IDEVS_ERR_MALFORMED},
        {"clear provenance", m_prov_add, IDEVS_ERR_MALFORMED},
        {"ciphertext shorter than a tag", m_ct_short, IDEVS_ERR_MALFORMED},
        {"chain and digest both", m_chain_plus_digest, IDEVS_ERR_MALFORMED},
    };
    memset(fake_digest, 0x5a, sizeof fake_digest);
    static const uint8_t zero[sizeof h] = {0};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sealed t = tampered(&first, cases[i].fn);
        memset(&h, 0xff, sizeof h);
        idevs_err got = idevs_envelope_peek(t.buf, t.len, &h);
        if (got != cases[i].want)
            fprintf(stderr, "\n    peek, %s: got %s, want %s", cases[i].what, idevs_err_name(got),
                    idevs_err_name(cases[i].want));
        CU_ASSERT_EQUAL(got, cases[i].want);
        CU_ASSERT(memcmp(&h, zero, sizeof h) == 0);
        drop(&t);
    }
    /* The digest removed from a digest-only message leaves neither. */
    sealed t = tampered(&second, m_digest_removed);
    CU_ASSERT_EQUAL(idevs_envelope_peek(t.buf, t.len, &h), IDEVS_ERR_MALFORMED);
    drop(&t);
    /* What only keys can tell passes: a flipped tag, another recipient. */
    t = tampered(&first, m_tag);
    CU_ASSERT_EQUAL(idevs_envelope_peek(t.buf, t.len, &h), IDEVS_OK);
    drop(&t);
    t = tampered(&first, m_recipient);
    CU_ASSERT_EQUAL(idevs_envelope_peek(t.buf, t.len, &h), IDEVS_OK);
    CU_ASSERT(!idevs_uuid_equal(&h.recipient, idevs_identity_uuid(bob)));
    drop(&t);

    /* every truncation fails, and none as OK */
    unsigned bad = 0;
    for (size_t n = 0; n < first.len; n++)
        if (!decoding_error(idevs_envelope_peek(first.buf, n, &h)))
            bad++;
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(idevs_envelope_peek(first.buf, 0, &h), IDEVS_ERR_VERSION); /* all fields absent */
    /* an unknown field */
    uint8_t *ext = malloc(second.len + 2);
    CU_ASSERT_FATAL(ext != NULL);
    memcpy(ext, second.buf, second.len);
    ext[second.len] = 0x78, ext[second.len + 1] = 0x01; /* field 15 */
    CU_ASSERT_EQUAL(idevs_envelope_peek(ext, second.len + 2, &h), IDEVS_ERR_MALFORMED);
    free(ext);
    /* garbage never passes */
    uint8_t junk[512];
    for (int i = 0; i < 2000; i++) {
        size_t n = (size_t)(rng() % sizeof junk);
        for (size_t k = 0; k < n; k++)
            junk[k] = (uint8_t)rng();
        if (idevs_envelope_peek(junk, n, &h) == IDEVS_OK)
            bad++;
    }
    CU_ASSERT_EQUAL(bad, 0);
    /* size: refused before decoding, at the largest size any receiver accepts */
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.max_payload = IDEVS_PAYLOAD_MAX_LIMIT;
    size_t max = idevs_envelope_max_size(&o);
    uint8_t *big = calloc(max + 1, 1);
    CU_ASSERT_FATAL(big != NULL);
    memcpy(big, second.buf, second.len);
    CU_ASSERT_EQUAL(idevs_envelope_peek(big, max + 1, &h), IDEVS_ERR_TOO_LARGE);
    CU_ASSERT_EQUAL(idevs_envelope_peek(big, max, &h), IDEVS_ERR_MALFORMED); /* zeros after the envelope */
    free(big);
    /* arguments */
    CU_ASSERT_EQUAL(idevs_envelope_peek(NULL, 5, &h), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT_EQUAL(idevs_envelope_peek(first.buf, first.len, NULL), IDEVS_ERR_INVALID_ARG);
    /* peek changes nothing: the genuine messages still open in order */
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_EQUAL(open_msg(b, &first), IDEVS_OK);
    CU_ASSERT_EQUAL(open_msg(b, &second), IDEVS_OK);
    idevs_envelope_ctx_free(b);
    drop(&first), drop(&second);
    idevs_envelope_ctx_free(a);
}


/* ---- version 2: padding and sealed provenance (PROTOCOL.md section 4, step 4, and 4.1) ---- */

/* The pow2 class of a framed length, written from the table of section 4.1. */
static size_t pow2_class(size_t framed)
{
    if (framed > 4096)
        return (framed + 4095) / 4096 * 4096;
    size_t l = 64;
    while (l < framed)
        l *= 2;
    return l;
}

static sealed seal_padded(idevs_envelope_ctx *a, const void *payload, size_t len, const idevs_msgid *prov,
                          size_t prov_count, uint32_t pad)
{
    sealed s = {0};
    idevs_seal_input in = {.recipient = idevs_identity_uuid(bob), .topic = TOPIC, .payload = payload,
                           .payload_len = len, .provenance = prov, .provenance_count = prov_count, .pad = pad};
    CU_ASSERT_FATAL(idevs_envelope_seal(a, &in, &s.buf, &s.len, &s.id) == IDEVS_OK);
    return s;
}

/* An envelope's length depends only on the size class of its framed plaintext: payloads and provenance lists of
 * one class give envelopes of one length, and the receiver gets each back exactly. */
static void test_padding_classes(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, NULL);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    static uint8_t payload[20000];
    for (size_t i = 0; i < sizeof payload; i++)
        payload[i] = (uint8_t)(i * 7 + 1);
    idevs_msgid prov[3] = {{{1}}, {{2}}, {{3}}};
    sealed first = seal_padded(a, payload, 1, NULL, 0, IDEVS_PAD_POW2); /* carries the chain */
    CU_ASSERT_EQUAL(open_msg(b, &first), IDEVS_OK);
    drop(&first);

    static const size_t sizes[] = {0, 1, 10, 59, 60, 123, 124, 1000, 2043, 4091, 4092, 8187, 8188, 16384, 20000};
    size_t length_of_class[8] = {0}; /* envelope length per class below 4 KiB: 64 << i */
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
        for (size_t k = 0; k <= 3; k += 3) {
            size_t framed = 5 + 16 * k + sizes[i], cls = pow2_class(framed);
            sealed s = seal_padded(a, payload, sizes[i], k ? prov : NULL, k, IDEVS_PAD_POW2);
            idevs_envelope_header h;
            CU_ASSERT_FATAL(idevs_envelope_peek(s.buf, s.len, &h) == IDEVS_OK);
            CU_ASSERT_EQUAL(h.ciphertext_len, cls + IDEVS_AEAD_TAG_LEN);
            for (size_t c = 0; c < 7; c++)
                if (cls == (size_t)64 << c) {
                    if (length_of_class[c] == 0)
                        length_of_class[c] = s.len;
                    CU_ASSERT_EQUAL(s.len, length_of_class[c]);
                }
            idevs_opened o;
            CU_ASSERT_FATAL(idevs_envelope_open(b, TOPIC, s.buf, s.len, &o) == IDEVS_OK);
            CU_ASSERT_EQUAL(o.payload_len, sizes[i]);
            CU_ASSERT(sizes[i] == 0 || memcmp(o.payload, payload, sizes[i]) == 0);
            CU_ASSERT_EQUAL(o.payload[o.payload_len], 0);
            CU_ASSERT_EQUAL(o.provenance_count, k);
            CU_ASSERT(k == 0 || memcmp(o.provenance, prov, sizeof prov) == 0);
            idevs_opened_clear(&o);
            drop(&s);
        }
    /* the other rules: none (the framed length), a block size; an unknown rule seals nothing */
    sealed s = seal_padded(a, payload, 100, prov, 1, IDEVS_PAD_NONE);
    idevs_envelope_header h;
    CU_ASSERT(idevs_envelope_peek(s.buf, s.len, &h) == IDEVS_OK && h.ciphertext_len == 5 + 16 + 100 + 16);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);
    s = seal_padded(a, payload, 100, prov, 1, 256);
    CU_ASSERT(idevs_envelope_peek(s.buf, s.len, &h) == IDEVS_OK && h.ciphertext_len == 256 + 16);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);
    s = seal_padded(a, payload, 4000, NULL, 0, 4096);
    CU_ASSERT(idevs_envelope_peek(s.buf, s.len, &h) == IDEVS_OK && h.ciphertext_len == 4096 + 16);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);
    static const uint32_t bad_rules[] = {2, 15, 4097, 65536};
    for (size_t i = 0; i < sizeof bad_rules / sizeof bad_rules[0]; i++) {
        idevs_seal_input in = {.recipient = idevs_identity_uuid(bob), .topic = TOPIC, .payload = payload,
                               .payload_len = 10, .pad = bad_rules[i]};
        uint8_t *out = NULL;
        size_t out_len = 0;
        CU_ASSERT_EQUAL(idevs_envelope_seal(a, &in, &out, &out_len, NULL), IDEVS_ERR_INVALID_ARG);
        CU_ASSERT(out == NULL);
    }
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

/* Seals plain (a plaintext framed by hand) as a's next message to bob, on a's current epoch: what a sender with
 * the key but broken framing would send. */
static sealed seal_plaintext(idevs_envelope_ctx *a, const uint8_t *plain, size_t plain_len)
{
    idevs_peer *peer = idevs_peers_find(&a->peers, idevs_identity_uuid(bob));
    CU_ASSERT_FATAL(peer != NULL && peer->send.active);
    idevs_send_epoch *e = &peer->send;
    idevs_env_header h;
    memset(&h, 0, sizeof h);
    h.version = IDEVS_ENVELOPE_VERSION;
    h.suite = e->suite;
    h.sender = *idevs_identity_uuid(alice);
    h.recipient = *idevs_identity_uuid(bob);
    h.message_id.b[0] = 0x42;
    h.message_id.b[15] = (uint8_t)e->next_sequence;
    h.epoch = e->epoch;
    h.sequence = e->next_sequence++;
    memcpy(h.ephemeral_key, e->e_pub, sizeof h.ephemeral_key);
    memcpy(h.epoch_signature, e->signature, sizeof h.epoch_signature);
    memcpy(h.leaf_digest, e->leaf_digest, sizeof h.leaf_digest);
    uint8_t aad[IDEVS_AAD_MAX];
    size_t aad_len = idevs_env_aad(aad, sizeof aad, &h, TOPIC, strlen(TOPIC));
    CU_ASSERT_FATAL(aad_len > 0);
    sealed s = {0};
    uint8_t *ct = NULL;
    CU_ASSERT_FATAL(idevs_env_encode(&h, NULL, NULL, 0, plain_len + IDEVS_AEAD_TAG_LEN, &s.buf, &s.len, &ct) ==
                    IDEVS_OK);
    CU_ASSERT_FATAL(idevs_aead_seal(&e->aead, h.sequence, aad, aad_len, plain, plain_len, ct) == IDEVS_OK);
    return s;
}

/* Framing by hand, from section 4 step 4: a right one opens with its provenance; each wrong one is refused as
 * padding (or too_large), counted, and changes nothing. */
static void test_padding_refused(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_options small;
    idevs_envelope_options_default(&small);
    small.max_payload = 100;
    idevs_envelope_ctx *a = ctx_for(alice, policy, &now, NULL), *b = ctx_for(bob, policy, &now, &small);
    CU_ASSERT_FATAL(add_peer(a, bob) == IDEVS_OK);
    sealed first = seal_msg(a, bob);
    CU_ASSERT_FATAL(open_msg(b, &first) == IDEVS_OK);
    drop(&first);

    uint8_t good[64] = {1}; /* one id, "hi", zeros */
    memset(good + 1, 0xab, 16);
    good[20] = 2;
    good[21] = 'h', good[22] = 'i';
    sealed s = seal_plaintext(a, good, sizeof good);
    idevs_opened o;
    CU_ASSERT_FATAL(idevs_envelope_open(b, TOPIC, s.buf, s.len, &o) == IDEVS_OK);
    CU_ASSERT(o.payload_len == 2 && memcmp(o.payload, "hi", 3) == 0);
    CU_ASSERT(o.provenance_count == 1 && o.provenance[0].b[0] == 0xab && o.provenance[0].b[15] == 0xab);
    idevs_opened_clear(&o);
    drop(&s);
    s = seal_plaintext(a, good, 23); /* no padding at all (the rule none) */
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);

    struct {
        const char *what;
        size_t at, len;
        uint8_t value;
        idevs_err want;
    } cases[] = {
        {"the last padding byte not zero", 63, 64, 1, IDEVS_ERR_PADDING},
        {"the first padding byte not zero", 23, 64, 0x80, IDEVS_ERR_PADDING},
        {"65 ids", 0, 64, 65, IDEVS_ERR_PADDING},
        {"more ids than the plaintext holds", 0, 64, 4, IDEVS_ERR_PADDING},
        {"a payload length past the end", 20, 64, 44, IDEVS_ERR_PADDING},
        {"a payload length of 2^32 - 1", 17, 64, 0xff, IDEVS_ERR_PADDING},
        {"the payload length cut off", 0, 20, 1, IDEVS_ERR_PADDING},
        {"a payload over the receiver's limit", 20, 64, 101, IDEVS_ERR_TOO_LARGE},
    };
    uint8_t plain[300];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        memset(plain, 0, sizeof plain);
        memcpy(plain, good, sizeof good);
        if (cases[i].want == IDEVS_ERR_TOO_LARGE) /* 101 bytes of payload, framed right */
            cases[i].len = 5 + 16 + 101;
        if (cases[i].at == 17) /* the four length bytes all 0xff */
            memset(plain + 17, 0xff, 4);
        else
            plain[cases[i].at] = cases[i].value;
        s = seal_plaintext(a, plain, cases[i].len);
        idevs_err got = open_msg(b, &s);
        if (got != cases[i].want)
            fprintf(stderr, "\n    %s: got %s, want %s", cases[i].what, idevs_err_name(got),
                    idevs_err_name(cases[i].want));
        CU_ASSERT_EQUAL(got, cases[i].want);
        drop(&s);
    }
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_PADDING], 7);
    CU_ASSERT_EQUAL(st.rejected[IDEVS_ERR_TOO_LARGE], 1);
    CU_ASSERT_EQUAL(st.opened, 3);
    /* a refused plaintext marked nothing: the sequence numbers it used are still free, and later ones open */
    s = seal_plaintext(a, good, sizeof good);
    CU_ASSERT_EQUAL(open_msg(b, &s), IDEVS_OK);
    drop(&s);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

/* ---- instances (PROTOCOL.md section 5a) ---- */

static idevs_envelope_ctx *ctx_instance(const idevs_identity *id, uint64_t *clock, uint32_t instance)
{
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.instance = instance;
    idevs_envelope_ctx *ctx = ctx_for(id, policy, clock, &o);
    CU_ASSERT_FATAL(add_peer(ctx, bob) == IDEVS_OK);
    return ctx;
}

static idevs_err open_instance(idevs_envelope_ctx *b, const sealed *s, uint32_t want_instance)
{
    idevs_opened o;
    idevs_err err = idevs_envelope_open(b, TOPIC, s->buf, s->len, &o);
    if (err == IDEVS_OK) {
        CU_ASSERT_EQUAL(o.instance, want_instance);
        idevs_opened_clear(&o);
    }
    return err;
}

/* Two instances of one identity, with the same epoch numbers, interleaved: each has its own epochs and windows, a
 * replay of either is refused, a new epoch of one leaves the other's alone. */
static void test_instances_interleaved(void)
{
    uint64_t now = real_now_ms();
    idevs_envelope_ctx *a1 = ctx_instance(alice, &now, 1), *a2 = ctx_instance(alice, &now, 2);
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
    sealed m[6];
    for (int i = 0; i < 4; i++)
        m[i] = seal_msg(i % 2 ? a2 : a1, bob);
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(open_instance(b, &m[i], i % 2 ? 2 : 1), IDEVS_OK);
    idevs_envelope_header h1, h2;
    CU_ASSERT(idevs_envelope_peek(m[0].buf, m[0].len, &h1) == IDEVS_OK && h1.instance == 1);
    CU_ASSERT(idevs_envelope_peek(m[1].buf, m[1].len, &h2) == IDEVS_OK && h2.instance == 2);
    CU_ASSERT(h1.epoch == h2.epoch && h1.sequence == h2.sequence); /* the same numbers, told apart by instance */
    for (int i = 0; i < 4; i++)
        CU_ASSERT_EQUAL(open_instance(b, &m[i], 0), IDEVS_ERR_REPLAY);
    /* instance 2 starts a new epoch; instance 1's current one still opens, and so does its replaced one */
    now += 1000;
    idevs_envelope_rotate(a2);
    m[4] = seal_msg(a2, bob);
    CU_ASSERT_EQUAL(open_instance(b, &m[4], 2), IDEVS_OK);
    m[5] = seal_msg(a1, bob);
    CU_ASSERT_EQUAL(open_instance(b, &m[5], 1), IDEVS_OK);
    sealed late = seal_msg(a2, bob);
    CU_ASSERT_EQUAL(open_instance(b, &late, 2), IDEVS_OK);
    drop(&late);
    /* an envelope of instance 1 told it is of instance 2 names instance 2's previous epoch number with another
     * offer: refused */
    Idevs__V1__Envelope *pm = idevs__v1__envelope__unpack(NULL, m[5].len, m[5].buf);
    CU_ASSERT_FATAL(pm != NULL);
    pm->instance = 2;
    size_t n = idevs__v1__envelope__get_packed_size(pm);
    uint8_t *buf = malloc(n);
    CU_ASSERT_FATAL(buf != NULL);
    idevs__v1__envelope__pack(pm, buf);
    idevs__v1__envelope__free_unpacked(pm, NULL);
    CU_ASSERT_EQUAL(open_raw(b, buf, n), IDEVS_ERR_EPOCH_CONFLICT);
    free(buf);
    for (int i = 0; i < 6; i++)
        drop(&m[i]);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.opened, 7);
    CU_ASSERT_EQUAL(st.receiving_epochs, 3);
    idevs_envelope_ctx_free(a1);
    idevs_envelope_ctx_free(a2);
    idevs_envelope_ctx_free(b);
}

/* Instances of one identity, each with its own certificate of the same keys (its own evidence): each one's chain is
 * taken as another certificate of the known keys, so the epochs stay, and each one's envelopes naming only its
 * certificate's digest open. At most IDEVS_SAME_KEYS_MAX others are kept besides the current one: beyond, the one
 * expiring first (among equals, the first remembered) is forgotten, and its digest alone no longer opens. */
static void test_instances_own_certificates(void)
{
    enum { N = IDEVS_SAME_KEYS_MAX + 2 };
    uint8_t seed[32], kex[32];
    CU_ASSERT_FATAL(idevs_random(seed, sizeof seed) == IDEVS_OK && idevs_random(kex, sizeof kex) == IDEVS_OK);
    idevs_uuid uuid;
    idevs_uuid_generate(&uuid);
    uint64_t t0 = real_now_ms(), now = t0;
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
    idevs_identity *id[N];
    idevs_envelope_ctx *a[N];
    for (int i = 0; i < N; i++) {
        id[i] = fixture_service_keys(&pki, "pool", &uuid, seed, kex);
        a[i] = ctx_instance(id[i], &now, (uint32_t)i);
    }
    /* three instances: chains first, then digests only, interleaved; instance i's epoch is t0 + i */
    for (int round = 0; round < 2; round++)
        for (uint32_t i = 0; i < 3; i++) {
            now = t0 + (round == 0 ? i : 2);
            sealed m = seal_msg(a[i], bob);
            idevs_envelope_header h;
            CU_ASSERT_FATAL(idevs_envelope_peek(m.buf, m.len, &h) == IDEVS_OK);
            CU_ASSERT_EQUAL(h.chain_count > 0, round == 0);
            CU_ASSERT_EQUAL(open_instance(b, &m, i), IDEVS_OK);
            drop(&m);
        }
    /* the others (the 65th and 66th instances evict instances 0 and 1, whose epochs are the oldest); the first
     * instance's certificate is the first remembered of equals, so it is the one forgotten */
    for (uint32_t i = 3; i < N; i++) {
        now = t0 + i;
        sealed m = seal_msg(a[i], bob);
        CU_ASSERT_EQUAL(open_instance(b, &m, i), IDEVS_OK);
        drop(&m);
    }
    sealed m = seal_msg(a[0], bob);
    CU_ASSERT_EQUAL(open_instance(b, &m, 0), IDEVS_ERR_CERT_DIGEST_MISMATCH);
    drop(&m);
    m = seal_msg(a[2], bob);
    CU_ASSERT_EQUAL(open_instance(b, &m, 2), IDEVS_OK);
    drop(&m);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(b, &st);
    CU_ASSERT_EQUAL(st.receiving_epochs, N); /* one offer verified per instance: a new certificate kept them */
    for (int i = 0; i < N; i++) {
        idevs_envelope_ctx_free(a[i]);
        idevs_identity_free(id[i]);
    }
    idevs_envelope_ctx_free(b);
}

/* At most 64 instances per sender: a 65th that opens evicts the one whose current epoch is the oldest; that
 * instance's envelopes of the evicted epoch are refused from then on (the instance floor), its next epoch opens. */
static void test_instances_evicted(void)
{
    enum { N = IDEVS_INSTANCES_MAX + 1 };
    uint64_t t0 = real_now_ms(), now = t0;
    idevs_envelope_ctx *b = ctx_for(bob, policy, &now, NULL);
    idevs_envelope_ctx *a[N];
    sealed first[N];
    for (int i = 0; i < N; i++) {
        now = t0 + (uint64_t)i; /* instance 100 + i's epoch is t0 + i */
        a[i] = ctx_instance(alice, &now, 100u + (uint32_t)i);
        first[i] = seal_msg(a[i], bob);
        CU_ASSERT_EQUAL(open_instance(b, &first[i], 100u + (uint32_t)i), IDEVS_OK);
    }
    idevs_peer *p = idevs_peers_find(&b->peers, idevs_identity_uuid(alice));
    CU_ASSERT_FATAL(p != NULL);
    CU_ASSERT_EQUAL(p->instance_count, IDEVS_INSTANCES_MAX);
    CU_ASSERT(idevs_peer_instance(p, 100) == NULL && idevs_peer_instance(p, 101) != NULL);
    CU_ASSERT_EQUAL(p->instance_floor, t0);
    /* the evicted instance: its epoch's envelopes, new or replayed, are refused; the others go on */
    sealed again = seal_msg(a[0], bob);
    CU_ASSERT_EQUAL(open_instance(b, &again, 100), IDEVS_ERR_EPOCH_EXPIRED);
    CU_ASSERT_EQUAL(open_instance(b, &first[0], 100), IDEVS_ERR_EPOCH_EXPIRED);
    drop(&again);
    again = seal_msg(a[1], bob);
    CU_ASSERT_EQUAL(open_instance(b, &again, 101), IDEVS_OK);
    CU_ASSERT_EQUAL(open_instance(b, &first[1], 101), IDEVS_ERR_REPLAY);
    drop(&again);
    /* its next epoch is above the floor: it comes back, evicting the next oldest (instance 101, epoch t0 + 1) */
    now = t0 + 1000;
    idevs_envelope_rotate(a[0]);
    again = seal_msg(a[0], bob);
    CU_ASSERT_EQUAL(open_instance(b, &again, 100), IDEVS_OK);
    drop(&again);
    CU_ASSERT(idevs_peer_instance(p, 100) != NULL && idevs_peer_instance(p, 101) == NULL);
    CU_ASSERT_EQUAL(p->instance_floor, t0 + 1);
    CU_ASSERT_EQUAL(p->instance_count, IDEVS_INSTANCES_MAX);
    /* a forgery from a new instance evicts nothing */
    sealed forged = tampered(&first[2], m_instance);
    CU_ASSERT(open_instance(b, &forged, 1) != IDEVS_OK);
    drop(&forged);
    CU_ASSERT(idevs_peer_instance(p, 102) != NULL);
    for (int i = 0; i < N; i++) {
        drop(&first[i]);
        idevs_envelope_ctx_free(a[i]);
    }
    idevs_envelope_ctx_free(b);
}

static CU_TestInfo tests[] = {
    {"round trips, both suites, 0 B to max payload", test_roundtrip_sizes},
    {"multiple peers", test_multiple_peers},
    {"chain in the first message of an epoch, digest after", test_chain_first_then_digest},
    {"known peer opens digest-only messages", test_known_peer_opens_digest_only},
    {"unknown sender, then add_peer", test_unknown_sender_then_add_peer},
    {"each header field tampered gives its error", test_tampered_fields},
    {"forged epoch signature", test_forged_epoch_signature},
    {"wrong recipient, wrong topic", test_wrong_recipient_and_topic},
    {"sender not allowed", test_sender_not_allowed},
    {"replay, outside window, reordering", test_replay_window},
    {"a forgery advances no window and replaces no epoch", test_forgery_changes_nothing},
    {"rollover by lifetime, grace period", test_rollover_by_lifetime_and_grace},
    {"rollover by message count and by rotate", test_rollover_by_count_and_rotate},
    {"stale and future epochs", test_stale_and_future_epochs},
    {"epoch conflict", test_epoch_conflict},
    {"compartment sender under compartment policies", test_compartment_sender},
    {"sender certificate expired at open time", test_sender_certificate_expired},
    {"recipient certificate expired: nothing sealed to it", test_recipient_certificate_expired},
    {"truncated, oversized, garbage, unknown field", test_truncated_oversized_garbage},
    {"seal arguments and options", test_seal_arguments},
    {"peer limit", test_peer_limit},
    {"statistics per reason", test_stats_per_reason},
    {"peek: the header without keys, structural faults", test_peek},
    {"padding: the length shows only the size class", test_padding_classes},
    {"padding and framing refused: padding, too_large", test_padding_refused},
    {"instances: interleaved, own epochs and windows, replays refused", test_instances_interleaved},
    {"instances: at most 64, the oldest evicted, its epoch not opened again", test_instances_evicted},
    {"instances: each its own certificate of the same keys, at most 64 others kept", test_instances_own_certificates},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("envelope", suite_init, suite_clean, tests);
}
