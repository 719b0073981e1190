/* Joining (enclave-bridge/launcher/join.c, enclave-bridge/compartment/join.c; docs/SCALING.md, "Several brokers"):
 * two launchers of one descriptor with two state directories, so two sealing secrets, as on two hosts. A makes
 * the keys; B is configured to join. The test carries what each publishes on the join topics to the other
 * (idevs_launcher_join_message), as the brokers' bridges would. Then B holds A's keys: its certificate has A's
 * key binding, an envelope sealed to A's certificate opens on B, and B restarts from the keys it sealed, without
 * joining. Refusals: a joiner of another measurement gets no grant; forged grants (keys that are not the
 * grantor's, a flipped byte, another joiner's) are refused and the joiner waits on.
 *
 * The compartment and the echo logic come from the environment meson gives the unit tests (IDEVS_COMPARTMENT,
 * IDEVS_ECHO_LOGIC). */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "bridge.pb-c.h"
#include "fixtures.h"
#include "harness.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
#include "idevs_hex.h"
#include "logic_world.h"

#define TOPIC_IN "t/in/events"
#define TOPIC_OUT "t/out"
#define ROUTES                                                                                                   \
    "\"inputs\": [{\"name\": \"events\", \"topic\": \"" TOPIC_IN "\", \"from\": \"store\"}],\n"                 \
    " \"outputs\": [{\"name\": \"out\", \"topic\": \"" TOPIC_OUT "\", \"to\": \"sink\", \"qos\": 1}]"
#define REQUEST_TOPIC "idevs/joined/join/request"
#define GRANT_PREFIX "idevs/joined/join/grant/"

static const char *const service_names[] = {"store", "sink", NULL};
static lw_suite suite;

/* ---- what a launcher published, the join topics apart ---- */

typedef struct join_pubs {
    launch_record *r;     /* everything else */
    size_t requests, grants;
    uint8_t request[IDEVS_JOIN_MESSAGE_MAX], grant[IDEVS_JOIN_MESSAGE_MAX];
    size_t request_len, grant_len;
    char grant_topic[256];
} join_pubs;

static void on_publish(void *arg, const idevs_launcher_publish *p)
{
    join_pubs *j = arg;
    bool request = strcmp(p->topic, REQUEST_TOPIC) == 0;
    if (!request && strncmp(p->topic, GRANT_PREFIX, strlen(GRANT_PREFIX)) != 0) {
        launch_record_on_publish(j->r, p);
        return;
    }
    CU_ASSERT_FATAL(p->envelope_len <= IDEVS_JOIN_MESSAGE_MAX && p->qos == 1 && !p->receipt);
    memcpy(request ? j->request : j->grant, p->envelope, p->envelope_len);
    if (request) {
        j->request_len = p->envelope_len;
        j->requests++;
    } else {
        j->grant_len = p->envelope_len;
        snprintf(j->grant_topic, sizeof j->grant_topic, "%s", p->topic);
        j->grants++;
    }
}

static void on_done(void *arg, uint64_t id, idevs_err status)
{
    join_pubs *j = arg;
    launch_record_callbacks(j->r).on_done(j->r, id, status);
}

/* Polls until *counter passes before (or the state is READY when counter is NULL), at most 10 s. */
static void poll_until(idevs_launcher *l, join_pubs *j, const size_t *counter, size_t before)
{
    idevs_launcher_callbacks cb = {on_publish, on_done, j, NULL};
    int64_t end = launch_now_ms() + 10000;
    idevs_launcher_stats st;
    for (;;) {
        idevs_launcher_get_stats(l, &st);
        if (counter != NULL ? *counter > before : st.state == IDEVS_LAUNCHER_READY)
            return;
        CU_ASSERT_FATAL(launch_now_ms() < end);
        CU_ASSERT_FATAL(idevs_launcher_poll(l, 20, &cb) == IDEVS_OK);
    }
}

/* Polls until the stats counter at offset changes, at most 10 s. */
static void poll_stat(idevs_launcher *l, join_pubs *j, size_t offset)
{
    idevs_launcher_stats st;
    idevs_launcher_get_stats(l, &st);
    uint64_t before = *(uint64_t *)((char *)&st + offset);
    idevs_launcher_callbacks cb = {on_publish, on_done, j, NULL};
    int64_t end = launch_now_ms() + 10000;
    while (*(uint64_t *)((char *)&st + offset) == before) {
        CU_ASSERT_FATAL(launch_now_ms() < end);
        CU_ASSERT_FATAL(idevs_launcher_poll(l, 20, &cb) == IDEVS_OK);
        idevs_launcher_get_stats(l, &st);
    }
}

/* ---- a joiner ---- */

typedef struct joiner {
    char state[160];
    idevs_launcher *l;
    launch_record r;
    join_pubs pubs;
} joiner;

/* A launcher of descriptor with its own state directory (in dir, named name), configured to join (or not), started. */
static void launcher_start(joiner *b, const char *dir, const char *name, const char *descriptor, bool join)
{
    memset(b, 0, sizeof *b);
    b->pubs.r = &b->r;
    snprintf(b->state, sizeof b->state, "%s/%s", dir, name);
    if (mkdir(b->state, 0700) != 0)
        CU_ASSERT_FATAL(access(b->state, F_OK) == 0); /* started again: its state stays */
    idevs_launcher_config cfg;
    idevs_launcher_config_default(&cfg);
    cfg.descriptor = descriptor;
    cfg.host_program = suite.spec.host;
    cfg.state_dir = b->state;
    cfg.operator_ca = suite.pki.ca_cert;
    cfg.authority = suite.pki.authority;
    cfg.authority_cert = suite.pki.authority_cert;
    cfg.on_event = launch_record_on_event;
    cfg.event_arg = &b->r;
    cfg.join = join;
    char why[512] = "";
    idevs_err err = idevs_launcher_new(&cfg, &b->l, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_launcher_start(b->l, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "\n    joiner: %s (%s)\n", idevs_strerror(err), why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
}

static void joiner_start(joiner *b, const char *dir, const char *name, const char *descriptor)
{
    launcher_start(b, dir, name, descriptor, true);
}

static void joiner_free(joiner *b)
{
    idevs_launcher_free(b->l);
    launch_record_clear(&b->r);
}

static bool saw_event(const launch_record *r, const char *needle)
{
    for (size_t i = 0; i < r->event_count; i++)
        if (strstr(r->events[i], needle) != NULL)
            return true;
    return false;
}

/* The joiner is waiting: no certificate to publish, inputs refused (counted). */
static void expect_waiting(joiner *b, lw_world *a)
{
    idevs_launcher_stats st;
    idevs_launcher_get_stats(b->l, &st);
    CU_ASSERT_TRUE(st.join_waiting);
    CU_ASSERT_EQUAL(st.state, IDEVS_LAUNCHER_JOINING);
    CU_ASSERT_EQUAL(idevs_launcher_chain_count(b->l), 0);
    CU_ASSERT_EQUAL(idevs_launcher_instance_chain_count(b->l, 0), 0);
    CU_ASSERT_PTR_NULL(idevs_launcher_chain_pem(b->l, &(size_t){0}));
    idevs_seal_input in = {.recipient = &a->program, .topic = TOPIC_IN, .payload = (const uint8_t *)"x",
                           .payload_len = 1};
    uint8_t *env = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_envelope_seal(a->party[0].ctx, &in, &env, &len, NULL) == IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(b->l, TOPIC_IN, env, len, NULL, 0, NULL), IDEVS_ERR_JOINING);
    free(env);
    idevs_launcher_stats after;
    idevs_launcher_get_stats(b->l, &after);
    CU_ASSERT_EQUAL(after.joining_refused, st.joining_refused + 1);
}

/* The leaf of a chain verified as a service verifies the process: its key binding. */
static void binding_of(lw_world *a, const uint8_t *const *der, const size_t *len, size_t n, uint8_t out[32],
                       idevs_cert_info *info_out)
{
    idevs_cert_policy *p = fixture_compartment_policy(&suite.pki, idevs_launcher_measurement(a->l),
                                                      idevs_launcher_descriptor_digest(a->l));
    idevs_cert_info info;
    char why[256] = "";
    idevs_err err = idevs_cert_verify(p, der, len, n, &info, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "\n    verify: %s\n", why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    idevs_cert_policy_free(p);
    CU_ASSERT_FATAL(idevs_key_binding(info.sign_pub, info.kex_pub, out) == IDEVS_OK);
    if (info_out != NULL)
        *info_out = info;
}

static void launcher_binding(lw_world *a, idevs_launcher *l, uint8_t out[32])
{
    const uint8_t *der[2];
    size_t len[2];
    CU_ASSERT_FATAL(idevs_launcher_chain_count(l) == 2);
    for (size_t i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(l, i, &len[i]);
    binding_of(a, der, len, 2, out, NULL);
}

/* Carries b's latest JoinRequest (polling for its first) to a, as the brokers' bridges would. */
static void carry_request(joiner *b, lw_world *a)
{
    poll_until(b->l, &b->pubs, &b->pubs.requests, 0);
    idevs_err err = idevs_launcher_join_message(a->l, REQUEST_TOPIC, b->pubs.request, b->pubs.request_len);
    CU_ASSERT_EQUAL_FATAL(err, IDEVS_OK);
}

/* ---- the grant, forged: what compartment/join.c does, with other keys ---- */

static void forge(lw_world *a, const uint8_t *request, size_t request_len, bool flip, uint8_t **out, size_t *out_len)
{
    Idevs__Bridge__V1__JoinRequest *r = idevs__bridge__v1__join_request__unpack(NULL, request_len, request);
    CU_ASSERT_FATAL(r != NULL && r->n_chain == 2);
    const uint8_t *der[2] = {r->chain[0].data, r->chain[1].data};
    size_t len[2] = {r->chain[0].len, r->chain[1].len};
    uint8_t jb[32], gb[32];
    idevs_cert_info joiner;
    binding_of(a, der, len, 2, jb, &joiner);
    idevs__bridge__v1__join_request__free_unpacked(r, NULL);
    launcher_binding(a, a->l, gb); /* the grantor's chain, but keys of another identity */
    idevs_identity *other = NULL;
    CU_ASSERT_FATAL(idevs_identity_generate(&a->program, "joined", &other) == IDEVS_OK);
    uint8_t secret[64], info[13 + 16 + 64], okm[44], eph_pub[32], shared[32], sealed[80];
    size_t n1 = 32, n2 = 32;
    CU_ASSERT_FATAL(EVP_PKEY_get_raw_private_key(idevs_identity_sign_key(other), secret, &n1) == 1 &&
                    EVP_PKEY_get_raw_private_key(idevs_identity_kex_key(other), secret + 32, &n2) == 1);
    idevs_identity_free(other);
    memcpy(info, "idevs join v1", 13);
    memcpy(info + 13, a->program.b, 16);
    memcpy(info + 29, jb, 32);
    memcpy(info + 61, gb, 32);
    EVP_PKEY *eph = NULL;
    CU_ASSERT_FATAL(idevs_x25519_generate(&eph, eph_pub) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_x25519(eph, joiner.kex_pub, shared) == IDEVS_OK);
    EVP_PKEY_free(eph);
    CU_ASSERT_FATAL(idevs_hkdf_sha256(eph_pub, 32, shared, 32, info, sizeof info, okm, sizeof okm) == IDEVS_OK);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n = 0;
    CU_ASSERT_FATAL(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, okm, okm + 32) == 1 &&
                    EVP_EncryptUpdate(ctx, NULL, &n, info, sizeof info) == 1 &&
                    EVP_EncryptUpdate(ctx, sealed, &n, secret, 64) == 1 && EVP_EncryptFinal_ex(ctx, sealed + 64, &n) == 1 &&
                    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, sealed + 64) == 1);
    EVP_CIPHER_CTX_free(ctx);
    if (flip)
        sealed[5] ^= 1;
    ProtobufCBinaryData chain[2];
    for (size_t i = 0; i < 2; i++)
        chain[i].data = (uint8_t *)idevs_launcher_chain_der(a->l, i, &chain[i].len);
    Idevs__Bridge__V1__JoinGrant g = IDEVS__BRIDGE__V1__JOIN_GRANT__INIT;
    g.n_chain = 2;
    g.chain = chain;
    g.joiner = (ProtobufCBinaryData){32, jb};
    g.ephemeral = (ProtobufCBinaryData){32, eph_pub};
    g.sealed = (ProtobufCBinaryData){80, sealed};
    *out_len = idevs__bridge__v1__join_grant__get_packed_size(&g);
    *out = malloc(*out_len);
    CU_ASSERT_FATAL(*out != NULL);
    idevs__bridge__v1__join_grant__pack(&g, *out);
}

/* ---- tests ---- */

static void test_join_and_restart(void)
{
    lw_world a;
    CU_ASSERT_EQUAL_FATAL(lw_start(&a, &suite.spec, "{}"), IDEVS_OK);
    join_pubs ap = {.r = &a.r};
    joiner b;
    joiner_start(&b, a.dir, "state-b", a.descriptor);
    CU_ASSERT_TRUE(saw_event(&b.r, "joining: no sealed keys here open"));
    expect_waiting(&b, &a);

    /* B asks; A checks and grants; B takes the keys and is certified for them. */
    carry_request(&b, &a);
    poll_until(a.l, &ap, &ap.grants, 0);
    uint8_t ab[32], bb[32];
    launcher_binding(&a, a.l, ab);
    char topic[256], hex[65];
    CU_ASSERT_EQUAL(strncmp(ap.grant_topic, GRANT_PREFIX, strlen(GRANT_PREFIX)), 0);
    CU_ASSERT_EQUAL(strlen(ap.grant_topic), strlen(GRANT_PREFIX) + 64);
    snprintf(topic, sizeof topic, "%s", ap.grant_topic);
    CU_ASSERT_EQUAL(idevs_launcher_join_message(b.l, topic, ap.grant, ap.grant_len), IDEVS_OK);
    poll_until(b.l, &b.pubs, NULL, 0);
    idevs_launcher_stats st;
    idevs_launcher_get_stats(b.l, &st);
    CU_ASSERT_FALSE(st.join_waiting);
    CU_ASSERT_EQUAL(st.joined, 1);
    CU_ASSERT_EQUAL(st.join_grants_refused, 0);
    CU_ASSERT_TRUE(saw_event(&b.r, "joined; keys granted by an instance certified"));
    idevs_launcher_get_stats(a.l, &st);
    CU_ASSERT_EQUAL(st.joins_granted, 1);
    CU_ASSERT_EQUAL(st.joins_refused, 0);
    launcher_binding(&a, b.l, bb);
    CU_ASSERT_EQUAL(memcmp(ab, bb, 32), 0); /* one key pair, two hosts */
    idevs_hex_encode(bb, 32, hex);
    CU_ASSERT_STRING_NOT_EQUAL(topic + strlen(GRANT_PREFIX), hex); /* the grant named B's temporary keys */
    /* A second grant after the first was taken is ignored: nothing here waits any more. */
    CU_ASSERT_EQUAL(idevs_launcher_join_message(b.l, topic, ap.grant, ap.grant_len), IDEVS_ERR_NOT_NOW);
    /* and B, holding the keys, no longer asks, and checks joiners itself */
    CU_ASSERT_EQUAL(idevs_launcher_join_message(b.l, REQUEST_TOPIC, b.pubs.request, b.pubs.request_len),
                    IDEVS_OK);

    /* An envelope the store sealed to A's certificate opens on B; the sink opens B's output once it verified
     * B's certificate (any instance's, under the same policy). */
    idevs_seal_input in = {.recipient = &a.program, .topic = TOPIC_IN, .payload = (const uint8_t *)"hello from b",
                           .payload_len = 12};
    uint8_t *env = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_envelope_seal(a.party[0].ctx, &in, &env, &len, NULL) == IDEVS_OK);
    uint64_t id = 0;
    CU_ASSERT_EQUAL_FATAL(idevs_launcher_deliver(b.l, TOPIC_IN, env, len, NULL, 0, &id), IDEVS_OK);
    free(env);
    poll_until(b.l, &b.pubs, &b.r.done_count, 0);
    CU_ASSERT_EQUAL(b.r.done_status[0], IDEVS_OK);
    CU_ASSERT_EQUAL_FATAL(b.r.pub_count, 1);
    const uint8_t *der[2];
    size_t dl[2];
    for (size_t i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(b.l, i, &dl[i]);
    CU_ASSERT_FATAL(idevs_envelope_add_peer(a.party[1].ctx, der, dl, 2, NULL) == IDEVS_OK);
    idevs_opened o;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(a.party[1].ctx, b.r.pub_topic[0], b.r.pub_env[0], b.r.pub_len[0], &o),
                          IDEVS_OK);
    CU_ASSERT_EQUAL(o.payload_len, 12);
    CU_ASSERT_NSTRING_EQUAL(o.payload, "hello from b", 12);
    idevs_opened_clear(&o);

    /* B restarts (a new broker process on its host): the keys it sealed open, no join. */
    joiner_free(&b);
    joiner_start(&b, a.dir, "state-b", a.descriptor);
    idevs_launcher_get_stats(b.l, &st);
    CU_ASSERT_EQUAL(st.state, IDEVS_LAUNCHER_READY);
    CU_ASSERT_FALSE(st.join_waiting);
    CU_ASSERT_TRUE(st.last_keys_restored);
    launcher_binding(&a, b.l, bb);
    CU_ASSERT_EQUAL(memcmp(ab, bb, 32), 0);
    lw_poll_for(&a, 50);
    idevs_launcher_callbacks cb = {on_publish, on_done, &b.pubs, NULL};
    CU_ASSERT_EQUAL(idevs_launcher_poll(b.l, 50, &cb), IDEVS_OK);
    CU_ASSERT_EQUAL(b.pubs.requests, 0);
    joiner_free(&b);
    lw_free(&a);
}

static void test_join_other_measurement(void)
{
    lw_world a;
    CU_ASSERT_EQUAL_FATAL(lw_start(&a, &suite.spec, "{}"), IDEVS_OK);
    join_pubs ap = {.r = &a.r};
    /* The same descriptor with one more byte: the same program, another digest, so another measurement. */
    uint8_t *bytes = NULL;
    size_t n = 0;
    char path[256], why[256];
    CU_ASSERT_FATAL(idevs_deployment_read_file(a.descriptor, &bytes, &n, why, sizeof why) == IDEVS_OK);
    snprintf(path, sizeof path, "%s/other.json", a.dir);
    uint8_t *more = malloc(n + 1);
    CU_ASSERT_FATAL(more != NULL);
    memcpy(more, bytes, n);
    more[n] = '\n';
    launch_write_file(path, more, n + 1);
    free(more);
    free(bytes);
    joiner c;
    joiner_start(&c, a.dir, "state-c", path);
    expect_waiting(&c, &a);
    carry_request(&c, &a);
    idevs_launcher_stats st;
    poll_stat(a.l, &ap, offsetof(idevs_launcher_stats, joins_refused));
    idevs_launcher_get_stats(a.l, &st);
    CU_ASSERT_EQUAL(st.joins_refused, 1);
    CU_ASSERT_EQUAL(st.joins_granted, 0);
    CU_ASSERT_EQUAL(ap.grants, 0);
    CU_ASSERT_TRUE(saw_event(&a.r, "refused a join: another measurement"));
    /* It asks again, bounded by the backoff, and stays joining. */
    poll_until(c.l, &c.pubs, &c.pubs.requests, 1);
    expect_waiting(&c, &a);
    joiner_free(&c);
    lw_free(&a);
}

static void test_join_forged_grants(void)
{
    lw_world a;
    CU_ASSERT_EQUAL_FATAL(lw_start(&a, &suite.spec, "{}"), IDEVS_OK);
    join_pubs ap = {.r = &a.r};
    joiner d, e;
    joiner_start(&d, a.dir, "state-d", a.descriptor);
    joiner_start(&e, a.dir, "state-e", a.descriptor);
    poll_until(d.l, &d.pubs, &d.pubs.requests, 0);
    poll_until(e.l, &e.pubs, &e.pubs.requests, 0);
    /* E's true grant, from A. */
    CU_ASSERT_EQUAL_FATAL(idevs_launcher_join_message(a.l, REQUEST_TOPIC, e.pubs.request, e.pubs.request_len),
                          IDEVS_OK);
    poll_until(a.l, &ap, &ap.grants, 0);
    char e_topic[256];
    snprintf(e_topic, sizeof e_topic, "%s", ap.grant_topic);
    /* D's binding, from its request, names its topic. */
    uint8_t db[32];
    {
        Idevs__Bridge__V1__JoinRequest *r = idevs__bridge__v1__join_request__unpack(NULL, d.pubs.request_len,
                                                                                  d.pubs.request);
        CU_ASSERT_FATAL(r != NULL && r->n_chain == 2);
        const uint8_t *der[2] = {r->chain[0].data, r->chain[1].data};
        size_t len[2] = {r->chain[0].len, r->chain[1].len};
        binding_of(&a, der, len, 2, db, NULL);
        idevs__bridge__v1__join_request__free_unpacked(r, NULL);
    }
    char d_topic[256], hex[65];
    idevs_hex_encode(db, 32, hex);
    snprintf(d_topic, sizeof d_topic, GRANT_PREFIX "%s", hex);

    /* Another joiner's grant on its own topic: the launcher does not pass it on. */
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, e_topic, ap.grant, ap.grant_len), IDEVS_ERR_WRONG_RECIPIENT);
    /* ... nor does D take it on D's topic: it names E's key binding. */
    idevs_launcher_stats st;
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, ap.grant, ap.grant_len), IDEVS_OK);
    poll_stat(d.l, &d.pubs, offsetof(idevs_launcher_stats, join_grants_refused));
    CU_ASSERT_TRUE(saw_event(&d.r, "refused a grant of the process's keys: a grant for another key binding"));
    /* Keys that are not those A's certificate certifies, well encrypted to D. */
    uint8_t *forged = NULL;
    size_t forged_len = 0;
    forge(&a, d.pubs.request, d.pubs.request_len, false, &forged, &forged_len);
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, forged, forged_len), IDEVS_OK);
    poll_stat(d.l, &d.pubs, offsetof(idevs_launcher_stats, join_grants_refused));
    CU_ASSERT_TRUE(saw_event(&d.r, "the keys granted are not those the grantor's certificate certifies"));
    free(forged);
    /* A flipped byte of the sealed keys. */
    forge(&a, d.pubs.request, d.pubs.request_len, true, &forged, &forged_len);
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, forged, forged_len), IDEVS_OK);
    poll_stat(d.l, &d.pubs, offsetof(idevs_launcher_stats, join_grants_refused));
    CU_ASSERT_TRUE(saw_event(&d.r, "the keys do not open"));
    free(forged);
    /* Not a grant at all, and too long a message. */
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, (const uint8_t *)"\xff\xff", 2), IDEVS_OK);
    poll_stat(d.l, &d.pubs, offsetof(idevs_launcher_stats, join_grants_refused));
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, d.pubs.request, IDEVS_JOIN_MESSAGE_MAX + 1),
                    IDEVS_ERR_TOO_LARGE);
    idevs_launcher_get_stats(d.l, &st);
    CU_ASSERT_EQUAL(st.join_grants_refused, 4);
    CU_ASSERT_EQUAL(st.joined, 0);
    CU_ASSERT_TRUE(st.join_ignored >= 2);
    expect_waiting(&d, &a);
    /* E's own grant still works, and D's from A after all that. */
    CU_ASSERT_EQUAL(idevs_launcher_join_message(e.l, e_topic, ap.grant, ap.grant_len), IDEVS_OK);
    poll_until(e.l, &e.pubs, NULL, 0);
    size_t grants = ap.grants;
    poll_until(d.l, &d.pubs, &d.pubs.requests, d.pubs.requests); /* its next request, after the backoff */
    CU_ASSERT_EQUAL_FATAL(idevs_launcher_join_message(a.l, REQUEST_TOPIC, d.pubs.request, d.pubs.request_len),
                          IDEVS_OK);
    poll_until(a.l, &ap, &ap.grants, grants);
    CU_ASSERT_STRING_EQUAL(ap.grant_topic, d_topic);
    CU_ASSERT_EQUAL(idevs_launcher_join_message(d.l, d_topic, ap.grant, ap.grant_len), IDEVS_OK);
    poll_until(d.l, &d.pubs, NULL, 0);
    uint8_t ab[32], eb[32];
    launcher_binding(&a, a.l, ab);
    launcher_binding(&a, d.l, db);
    launcher_binding(&a, e.l, eb);
    CU_ASSERT_EQUAL(memcmp(ab, db, 32), 0);
    CU_ASSERT_EQUAL(memcmp(ab, eb, 32), 0);
    joiner_free(&d);
    joiner_free(&e);
    lw_free(&a);
}

/* Both hosts run a pool of two: B's first instance joins, then its second starts from the keys it sealed. */
static void test_join_pool(void)
{
    lw_world a; /* for its directory, certificates and parties: its own process is left alone */
    CU_ASSERT_EQUAL_FATAL(lw_start(&a, &suite.spec, "{}"), IDEVS_OK);
    uint8_t *bytes = NULL;
    size_t n = 0;
    char path[256], why[256];
    CU_ASSERT_FATAL(idevs_deployment_read_file(a.descriptor, &bytes, &n, why, sizeof why) == IDEVS_OK);
    char *text = strndup((const char *)bytes, n), *at = strstr(text, "\"config\": {}");
    CU_ASSERT_FATAL(at != NULL);
    char pooled[8192];
    snprintf(pooled, sizeof pooled, "%.*s\"config\": {}, \"instances\": 2%s", (int)(at - text), text,
             at + strlen("\"config\": {}"));
    snprintf(path, sizeof path, "%s/pool.json", a.dir);
    launch_write_file(path, pooled, strlen(pooled));
    free(text);
    free(bytes);
    joiner p, q;
    launcher_start(&p, a.dir, "state-p", path, false);
    CU_ASSERT_EQUAL(idevs_launcher_instance_chain_count(p.l, 1), 2);
    joiner_start(&q, a.dir, "state-q", path);
    CU_ASSERT_EQUAL(idevs_launcher_instance_pid(q.l, 1), 0); /* the second waits for the keys */
    poll_until(q.l, &q.pubs, &q.pubs.requests, 0);
    CU_ASSERT_EQUAL_FATAL(idevs_launcher_join_message(p.l, REQUEST_TOPIC, q.pubs.request, q.pubs.request_len),
                          IDEVS_OK);
    poll_until(p.l, &p.pubs, &p.pubs.grants, 0);
    CU_ASSERT_EQUAL(idevs_launcher_join_message(q.l, p.pubs.grant_topic, p.pubs.grant, p.pubs.grant_len), IDEVS_OK);
    idevs_launcher_callbacks cb = {on_publish, on_done, &q.pubs, NULL};
    idevs_launcher_stats st;
    int64_t end = launch_now_ms() + 10000;
    do {
        CU_ASSERT_FATAL(idevs_launcher_poll(q.l, 20, &cb) == IDEVS_OK);
        idevs_launcher_get_stats(q.l, &st);
    } while (st.instances_ready < 2 && launch_now_ms() < end);
    CU_ASSERT_EQUAL_FATAL(st.instances_ready, 2);
    CU_ASSERT_EQUAL(st.joined, 1);
    /* every instance of both hosts: one key pair */
    idevs_cert_policy *pol = fixture_compartment_policy(&suite.pki, idevs_launcher_measurement(p.l),
                                                        idevs_launcher_descriptor_digest(p.l));
    uint8_t first[32];
    idevs_launcher *ls[2] = {p.l, q.l};
    for (size_t k = 0; k < 4; k++) {
        const uint8_t *der[2];
        size_t len[2];
        CU_ASSERT_FATAL(idevs_launcher_instance_chain_count(ls[k / 2], k % 2) == 2);
        for (size_t i = 0; i < 2; i++)
            der[i] = idevs_launcher_instance_chain_der(ls[k / 2], k % 2, i, &len[i]);
        idevs_cert_info info;
        uint8_t b[32];
        CU_ASSERT_FATAL(idevs_cert_verify(pol, der, len, 2, &info, NULL, 0) == IDEVS_OK);
        CU_ASSERT_FATAL(idevs_key_binding(info.sign_pub, info.kex_pub, b) == IDEVS_OK);
        if (k == 0)
            memcpy(first, b, 32);
        CU_ASSERT_EQUAL(memcmp(first, b, 32), 0);
    }
    idevs_cert_policy_free(pol);
    joiner_free(&q);
    joiner_free(&p);
    lw_free(&a);
}

/* ---- suite ---- */

static int suite_init(void)
{
    return lw_suite_init(&suite, "IDEVS_ECHO_LOGIC", "joined", service_names, ROUTES);
}

static int suite_clean(void)
{
    return lw_suite_clean(&suite);
}

static CU_TestInfo tests[] = {
    {"a second host joins: one key pair, inputs routed after, restarts without joining", test_join_and_restart},
    {"a joiner of another measurement gets no grant and waits on", test_join_other_measurement},
    {"forged grants (other keys, a flipped byte, another joiner's) are refused; the true one is taken",
     test_join_forged_grants},
    {"pools of two on both hosts: the joiner's second instance starts from the keys its first was granted",
     test_join_pool},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("join", suite_init, suite_clean, tests);
}
