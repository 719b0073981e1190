/* Writes the seed corpus of every fuzz target: DIR/<target>/<name>, one input a file. Seeds are valid inputs
 * of each kind, so that fuzzing starts deep inside the code rather than at its first length check; this program
 * checks that the code under test accepts each (or refuses it, where a seed is meant to be refused) before it
 * writes it: with --check (the meson test fuzz-seeds) one ok line per expectation and the last line
 * "N passed, M failed", so that a seed corpus that no longer reaches past the first check fails a test. Without
 * --check (the build) it only warns: a parser whose rules changed on purpose must not break the build.
 * Usage: make_seeds [--check] DIR (IDEVS_SOURCE_ROOT names the source tree, for the test vectors). */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "certs_internal.h"
#include "fuzz.h"
#include "fuzz_tpm_world.h"
#include "fuzz_world.h"
#include "envelope_internal.h"
#include "idevs_crypto.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
#include "idevs_hex.h"
#include "idevs_plugin.h"
#include "idevs_receipt.h"
#include "launcher_internal.h"
#include "payloads.h"
#include "replay_record.pb-c.h"
#include "sale.h"

static const char *out_dir;
static bool check_mode;
static int passed, failed;

/* What a seed is written for: accepted, or refused with a given code. */
__attribute__((format(printf, 2, 3))) static void expect(bool ok, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (ok)
        passed++;
    else
        failed++;
    if (check_mode)
        printf("%s - %s\n", ok ? "ok" : "not ok", what);
}

static void put(const char *target, const char *name, const void *a, size_t a_len, const void *b, size_t b_len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", out_dir, target);
    FUZZ_SETUP(mkdir(path, 0755) == 0 || errno == EEXIST);
    snprintf(path, sizeof path, "%s/%s/%s", out_dir, target, name);
    FILE *f = fopen(path, "wb");
    FUZZ_SETUP(f != NULL);
    FUZZ_SETUP(a_len == 0 || fwrite(a, 1, a_len, f) == a_len);
    FUZZ_SETUP(b_len == 0 || fwrite(b, 1, b_len, f) == b_len);
    FUZZ_SETUP(fclose(f) == 0);
}

/* Removes the seeds an earlier run wrote (DIR/<target>/<name>), so that a seed renamed or dropped here does
 * not linger in the corpus. */
static void clear_old_seeds(void)
{
    DIR *top = opendir(out_dir);
    FUZZ_SETUP(top != NULL);
    struct dirent *t;
    while ((t = readdir(top)) != NULL) {
        if (t->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", out_dir, t->d_name);
        DIR *sub = opendir(path);
        if (sub == NULL)
            continue;
        struct dirent *e;
        while ((e = readdir(sub)) != NULL) {
            char file[4096 + 256];
            snprintf(file, sizeof file, "%s/%s", path, e->d_name);
            if (e->d_name[0] != '.')
                FUZZ_SETUP(unlink(file) == 0);
        }
        closedir(sub);
    }
    closedir(top);
}

static void put_text(const char *target, const char *name, const char *text)
{
    put(target, name, text, strlen(text), NULL, 0);
}

/* fuzz_cert_verify's two policies (policy_new below). */
static idevs_cert_policy *service_policy, *compartment_policy;

/* A chain in fuzz_cert_verify's format, the policy byte, then each certificate with a 2-byte length, once the
 * policy gives it the expected answer. */
static void put_chain(const char *name, uint8_t policy, const uint8_t *const *der, const size_t *len, size_t n,
                      idevs_err expected)
{
    char why[512];
    idevs_err err = idevs_cert_verify(policy ? compartment_policy : service_policy, der, len, n, NULL, why, sizeof why);
    expect(err == expected, "chain %s is %s", name, expected == IDEVS_OK ? "accepted" : "refused as untrusted");
    if (err != expected)
        fprintf(stderr, "make_seeds: chain %s: %s\n", name, err == IDEVS_OK ? "accepted" : why);
    uint8_t buf[1 + IDEVS_CHAIN_MAX * (2 + IDEVS_CERT_MAX)];
    size_t at = 0;
    buf[at++] = policy;
    for (size_t i = 0; i < n; i++) {
        FUZZ_SETUP(len[i] <= 0xffff && at + 2 + len[i] <= sizeof buf);
        buf[at++] = (uint8_t)(len[i] >> 8);
        buf[at++] = (uint8_t)len[i];
        memcpy(buf + at, der[i], len[i]);
        at += len[i];
    }
    put("cert_verify", name, buf, at, NULL, 0);
}

/* Opens s as fuzz_envelope_open does with these flags. */
static idevs_err open_with(fuzz_world *w, uint8_t flags, const fuzz_sealed *s)
{
    idevs_envelope_options o;
    fuzz_world_options(w, 1, &o);
    idevs_envelope_ctx *ctx;
    FUZZ_SETUP(idevs_envelope_ctx_new(w->recipient, w->policy, &o, &ctx) == IDEVS_OK);
    if (flags & 1) {
        size_t der_len;
        const uint8_t *der = idevs_identity_chain_der(w->sender, 0, &der_len);
        FUZZ_SETUP(idevs_envelope_add_peer(ctx, &der, &der_len, 1, NULL) == IDEVS_OK);
    }
    if (flags & 2)
        FUZZ_SETUP(idevs_envelope_allow_sender(ctx, idevs_identity_uuid(w->recipient)) == IDEVS_OK);
    idevs_opened out;
    idevs_err err = idevs_envelope_open(ctx, w->topic, s->bytes, s->len, &out);
    if (err == IDEVS_OK) {
        expect(out.payload_len == s->payload_len && memcmp(out.payload, s->payload, s->payload_len) == 0,
               "an opened seed gives back its payload");
        idevs_opened_clear(&out);
    }
    idevs_envelope_ctx_free(ctx);
    return err;
}

static void envelopes(fuzz_world *w)
{
    fuzz_sealed sealed[FUZZ_SEEDS_MAX];
    size_t n = fuzz_world_seal(w, sealed);
    for (size_t i = 0; i < n; i++) {
        idevs_envelope_header h;
        expect(idevs_envelope_peek(sealed[i].bytes, sealed[i].len, &h) == IDEVS_OK, "envelope %zu passes the peek", i);
        expect(open_with(w, i % 4 == 0 ? 0 : 1, &sealed[i]) == IDEVS_OK, "envelope %zu opens", i);
        char name[32];
        snprintf(name, sizeof name, "sealed-%02zu", i);
        put("envelope_wire", name, sealed[i].bytes, sealed[i].len, NULL, 0);
        uint8_t indent = (uint8_t)(i % 3 * 2);
        put("inspect", name, &indent, 1, sealed[i].bytes, sealed[i].len);
        /* flags: the first message of each epoch without the sender registered, the others with it */
        uint8_t flags = (uint8_t)(i % 4 == 0 ? 0 : 1);
        put("envelope_open", name, &flags, 1, sealed[i].bytes, sealed[i].len);
    }
    expect(open_with(w, 1, &sealed[0]) == IDEVS_OK, "an epoch's first envelope opens from a registered sender");
    expect(open_with(w, 0, &sealed[1]) == IDEVS_ERR_UNKNOWN_SENDER,
           "an envelope with the sender's digest only is refused from an unknown sender");
    expect(open_with(w, 3, &sealed[0]) == IDEVS_ERR_SENDER_NOT_ALLOWED, "a sender not allowed is refused");
    uint8_t refused = 3;
    put("envelope_open", "sender-not-allowed", &refused, 1, sealed[0].bytes, sealed[0].len);
    fuzz_sealed_free(sealed, n);
}

/* The policies of fuzz_cert_verify: the world's CA; a compartment's also requires its evidence. */
static idevs_cert_policy *policy_new(fuzz_world *w, int compartment)
{
    const unsigned char *p = w->ca_der;
    X509 *ca = d2i_X509(NULL, &p, (long)w->ca_der_len);
    idevs_cert_policy *policy = idevs_cert_policy_new();
    FUZZ_SETUP(ca != NULL && policy != NULL && idevs_cert_policy_add_ca(policy, ca) == IDEVS_OK);
    X509_free(ca);
    if (compartment) {
        FUZZ_SETUP(idevs_cert_policy_add_measurement(policy, w->measurement) == IDEVS_OK);
        idevs_cert_policy_require_evidence(policy, true);
        idevs_cert_policy_allow_process_backend_insecure(policy);
        idevs_cert_policy_expect_descriptor(policy, w->descriptor);
    }
    return policy;
}

/* An envelope for fuzz_inspect that carries a compartment's chain, evidence and all: encoded, not sealed (the
 * inspector opens nothing). */
static void inspect_with_chain(const uint8_t *const *der, const size_t *len, size_t n)
{
    idevs_env_header h;
    memset(&h, 0x33, sizeof h);
    h.version = IDEVS_ENVELOPE_VERSION;
    h.suite = 2;
    h.instance = 0;
    h.epoch = 1800000000000ull;
    h.sequence = 1;
    uint8_t *env, *ct;
    size_t env_len;
    FUZZ_SETUP(idevs_env_encode(&h, der, len, n, 40, &env, &env_len, &ct) == IDEVS_OK);
    memset(ct, 0x55, 40);
    idevs_envelope_header peeked;
    expect(idevs_envelope_peek(env, env_len, &peeked) == IDEVS_OK && peeked.chain_count == n,
           "an envelope carrying a compartment's chain passes the peek");
    uint8_t indent = 4;
    put("inspect", "compartment-chain", &indent, 1, env, env_len);
    free(env);
}

/* fuzz_cert_pem's input: the max byte, then the chain as PEM with the given line end, checked to read back. */
static void put_pem(const char *name, uint8_t max, const uint8_t *const *der, const size_t *len, size_t n,
                    const char *eol)
{
    static char pem[IDEVS_CHAIN_MAX * IDEVS_CHAIN_PEM_EACH_MAX];
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        at += (size_t)sprintf(pem + at, "-----BEGIN CERTIFICATE-----%s", eol);
        for (size_t k = 0; k < len[i]; k += 48) {
            size_t chunk = len[i] - k < 48 ? len[i] - k : 48;
            at += (size_t)EVP_EncodeBlock((unsigned char *)pem + at, der[i] + k, (int)chunk);
            at += (size_t)sprintf(pem + at, "%s", eol);
        }
        at += (size_t)sprintf(pem + at, "-----END CERTIFICATE-----%s", eol);
    }
    uint8_t *got[IDEVS_CHAIN_MAX];
    size_t got_len[IDEVS_CHAIN_MAX], count;
    idevs_err err = idevs_cert_read_chain_pem(pem, at, got, got_len, IDEVS_CHAIN_MAX, &count, NULL, 0);
    expect(err == IDEVS_OK && count == n, "PEM chain %s reads back %zu certificates", name, n);
    if (err == IDEVS_OK)
        idevs_cert_chain_free(got, count);
    put("cert_pem", name, &max, 1, pem, at);
}

static void certificates(fuzz_world *w)
{
    service_policy = policy_new(w, 0);
    compartment_policy = policy_new(w, 1);
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    der[0] = idevs_identity_chain_der(w->sender, 0, &len[0]);
    put_chain("service", 0, der, len, 1, IDEVS_OK);
    der[1] = w->ca_der;
    len[1] = w->ca_der_len;
    put_chain("service-with-ca", 0, der, len, 2, IDEVS_OK);
    der[0] = idevs_identity_chain_der(w->recipient, 0, &len[0]);
    put_chain("recipient", 0, der, len, 1, IDEVS_OK);

    /* a compartment: an authority under the world's CA, and an attested leaf under it */
    const unsigned char *p = w->ca_der;
    X509 *ca = d2i_X509(NULL, &p, (long)w->ca_der_len), *authority_cert, *leaf;
    FUZZ_SETUP(ca != NULL);
    idevs_identity *authority, *compartment;
    idevs_uuid u, program;
    idevs_uuid_generate(&u);
    idevs_uuid_generate(&program);
    FUZZ_SETUP(idevs_identity_generate(&u, "seed-authority", &authority) == IDEVS_OK);
    FUZZ_SETUP(idevs_cert_issue_authority(w->ca, ca, authority, 36500, &authority_cert) == IDEVS_OK);
    FUZZ_SETUP(idevs_identity_generate(&program, "seed-compartment", &compartment) == IDEVS_OK);
    idevs_evidence ev;
    memset(&ev, 0, sizeof ev);
    ev.backend = IDEVS_BACKEND_PROCESS;
    memcpy(ev.measurement, w->measurement, sizeof ev.measurement);
    ev.program_uuid = program;
    memcpy(ev.descriptor_digest, w->descriptor, sizeof ev.descriptor_digest);
    FUZZ_SETUP(idevs_key_binding(idevs_identity_sign_public(compartment), idevs_identity_kex_public(compartment),
                            ev.key_binding) == IDEVS_OK);
    ev.issued_at = (uint64_t)time(NULL);
    ev.nonce_len = 16;
    FUZZ_SETUP(idevs_random(ev.nonce, ev.nonce_len) == IDEVS_OK);
    FUZZ_SETUP(idevs_cert_issue_compartment(authority, authority_cert, compartment, &ev, 36500u * 86400u, &leaf) ==
          IDEVS_OK);
    uint8_t *leaf_der, *authority_der;
    size_t leaf_len, authority_len;
    FUZZ_SETUP(idevs_cert_to_der(leaf, &leaf_der, &leaf_len) == IDEVS_OK);
    FUZZ_SETUP(idevs_cert_to_der(authority_cert, &authority_der, &authority_len) == IDEVS_OK);
    der[0] = leaf_der;
    len[0] = leaf_len;
    der[1] = authority_der;
    len[1] = authority_len;
    put_chain("compartment", 1, der, len, 2, IDEVS_OK);
    inspect_with_chain(der, len, 2);
    put_pem("compartment", 3, der, len, 2, "\n");
    put_pem("compartment-crlf", 3, der, len, 2, "\r\n");
    put_pem("leaf-only", 0, der, len, 1, "\n");
    put_chain("compartment-as-service", 0, der, len, 2, IDEVS_OK);
    put_chain("compartment-without-authority", 1, der, len, 1, IDEVS_ERR_CERT_UNTRUSTED); /* no issuer */
    free(leaf_der);
    free(authority_der);
    X509_free(leaf);
    X509_free(authority_cert);
    X509_free(ca);
    idevs_identity_free(authority);
    idevs_identity_free(compartment);
    idevs_cert_policy_free(service_policy);
    idevs_cert_policy_free(compartment_policy);
}

static void put_descriptor(const char *name, const char *text)
{
    idevs_deployment *d = NULL;
    char why[512];
    idevs_err err = idevs_deployment_parse((const uint8_t *)text, strlen(text), &d, why, sizeof why);
    expect(err == IDEVS_OK, "descriptor %s is accepted%s%s", name, err == IDEVS_OK ? "" : ": ", err == IDEVS_OK ? "" : why);
    idevs_deployment_free(d);
    put_text("deployment", name, text);
}

/* A variant of a descriptor: base with its first `from` replaced by `to`, accepted or refused (IDEVS_ERR_CONFIG)
 * as expected. Near-valid refusals give the fuzzer the rules' edges to start from. */
static void put_descriptor_variant(const char *name, const char *base, const char *from, const char *to,
                                   idevs_err expected)
{
    const char *at = strstr(base, from);
    FUZZ_SETUP(at != NULL);
    char *text = malloc(strlen(base) + strlen(to) + 1);
    FUZZ_SETUP(text != NULL);
    sprintf(text, "%.*s%s%s", (int)(at - base), base, to, at + strlen(from));
    idevs_deployment *d = NULL;
    char why[512];
    idevs_err err = idevs_deployment_parse((const uint8_t *)text, strlen(text), &d, why, sizeof why);
    expect(err == expected, "descriptor %s is %s", name, expected == IDEVS_OK ? "accepted" : "refused");
    if (err != expected)
        fprintf(stderr, "make_seeds: descriptor %s: %s\n", name, err == IDEVS_OK ? "accepted" : why);
    idevs_deployment_free(d);
    put_text("deployment", name, text);
    free(text);
}

/* The complete example of docs/DEPLOYMENT.md: its first json block. malloc'd. */
static char *documented_descriptor(void)
{
    size_t len;
    char *doc = fuzz_read_source_file("docs/DEPLOYMENT.md", &len);
    char *begin = strstr(doc, "```json\n"), *end = begin != NULL ? strstr(begin + 8, "```") : NULL;
    FUZZ_SETUP(begin != NULL && end != NULL);
    begin += 8;
    char *text = malloc((size_t)(end - begin) + 1);
    FUZZ_SETUP(text != NULL);
    memcpy(text, begin, (size_t)(end - begin));
    text[end - begin] = '\0';
    free(doc);
    return text;
}

static void put_sale(const char *name, const char *text)
{
    sale_record r;
    expect(sale_parse(text, strlen(text), &r) == IDEVS_OK, "sale %s is accepted", name);
    sale_cleanse(&r);
    put_text("sale", name, text);
}

static const char descriptor_small[] =
    "{\"version\":1,\"process\":{\"name\":\"loyalty\",\"uuid\":\"7a2d3b9f-5c8e-4f1b-8d40-3e6f9b2c8d51\","
    "\"logic\":\"libloyalty.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"},"
    "{\"name\":\"points\",\"uuid\":\"4e7b5bed-5cd4-44a5-9b6c-3349a6ffd75a\",\"certificate\":\"p.crt\"}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/loyalty/in/sales\",\"from\":\"store\"}],"
    "\"outputs\":[{\"name\":\"award\",\"topic\":\"idevs/loyalty/out/award\",\"to\":\"points\",\"qos\":0}]}";

static const char sale[] =
    "{\"sale_id\": \"S-000042\", \"time\": \"2026-11-21T10:15:00Z\", \"customer\": {\"id\": \"C-0007\", \"name\": "
    "\"Ana Lima\", \"phone\": \"+44 7700 900123\", \"address\": \"12 Harbour Street, Leith, Edinburgh EH6 6LA\"}, "
    "\"items\": [{\"sku\": \"JKT-204\", \"name\": \"Rain jacket\", \"qty\": 1, \"price\": \"150.00\"}], "
    "\"total\": \"150.00\"}";

static const char sale_items[] =
    "{\"sale_id\":\"S-1\",\"time\":\"2026-01-02T03:04:05Z\",\"customer\":{\"id\":\"C-1\",\"name\":"
    "\"Jos\xc3\xa9 \xe5\xb1\xb1\xe7\x94\xb0 \xf0\x9f\x98\x80\",\"phone\":\"+1 555 0100\",\"address\":\"1 Main St\"},"
    "\"items\":[{\"sku\":\"A-1\",\"name\":\"Tea\",\"qty\":3,\"price\":\"0.99\"},"
    "{\"sku\":\"B-2\",\"name\":\"Cup\",\"qty\":1000,\"price\":\"12.50\"}],\"total\":\"12502.97\"}";

/* Appends frame to buf in the channel's framing (a 4-byte big-endian length, then the frame). */
static size_t frame_out(uint8_t *buf, size_t at, size_t cap, const Idevs__Bridge__V1__Frame *f)
{
    size_t len = idevs__bridge__v1__frame__get_packed_size(f);
    FUZZ_SETUP(at + IDEVS_CHANNEL_HEADER + len <= cap);
    buf[at] = (uint8_t)(len >> 24);
    buf[at + 1] = (uint8_t)(len >> 16);
    buf[at + 2] = (uint8_t)(len >> 8);
    buf[at + 3] = (uint8_t)len;
    FUZZ_SETUP(idevs__bridge__v1__frame__pack(f, buf + at + IDEVS_CHANNEL_HEADER) == len);
    return at + IDEVS_CHANNEL_HEADER + len;
}

/* Streams of frames for fuzz_channel: the limit byte, then frames of the kinds each end reads. */
static void frames(void)
{
    static uint8_t buf[16384];
    uint8_t envelope[300];
    memset(envelope, 0x42, sizeof envelope);
    Idevs__Bridge__V1__Deliver deliver = IDEVS__BRIDGE__V1__DELIVER__INIT;
    deliver.delivery_id = 7;
    deliver.topic = "idevs/rewards/in/sales";
    deliver.envelope.data = envelope;
    deliver.envelope.len = sizeof envelope;
    Idevs__Bridge__V1__Publish publish = IDEVS__BRIDGE__V1__PUBLISH__INIT;
    publish.delivery_id = 7;
    publish.topic = "idevs/rewards/req/ride";
    publish.envelope.data = envelope;
    publish.envelope.len = 100;
    publish.qos = 1;
    publish.response_topic = "idevs/rewards/resp/ride";
    publish.correlation_data.data = envelope;
    publish.correlation_data.len = 16;
    Idevs__Bridge__V1__Done done = IDEVS__BRIDGE__V1__DONE__INIT;
    done.delivery_id = 7;
    Idevs__Bridge__V1__Shutdown shutdown = IDEVS__BRIDGE__V1__SHUTDOWN__INIT;
    Idevs__Bridge__V1__Frame f[4] = {IDEVS__BRIDGE__V1__FRAME__INIT, IDEVS__BRIDGE__V1__FRAME__INIT,
                                     IDEVS__BRIDGE__V1__FRAME__INIT, IDEVS__BRIDGE__V1__FRAME__INIT};
    f[0].body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
    f[0].deliver = &deliver;
    f[1].body_case = IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH;
    f[1].publish = &publish;
    f[2].body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DONE;
    f[2].done = &done;
    f[3].body_case = IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
    f[3].shutdown = &shutdown;
    size_t at = 0;
    buf[at++] = 0xff; /* a limit of 16 KiB */
    for (size_t i = 0; i < 4; i++)
        at = frame_out(buf, at, sizeof buf, &f[i]);
    put("channel", "four-frames", buf, at, NULL, 0);
    buf[0] = 3; /* a limit of 256 bytes: the Deliver frame is over it */
    put("channel", "over-the-limit", buf, at, NULL, 0);
    buf[0] = 0xff;
    put("channel", "cut-short", buf, at - 1, NULL, 0);
}

/* fuzz_gate's records (see there): done inputs and responses, a replay, a jump past the window, an epoch
 * that replaces the older of two, the refusals before the replay record, and instances up to an eviction. */
static void gate_records(void)
{
    static const uint8_t flow[][5] = {
        {0, 0, 1, 0, 1},  {0, 0, 1, 0, 1},  {0, 4, 1, 0, 2},  {0, 0, 1, 0, 2},  {1, 1, 7, 0, 1},
        {0, 0, 1, 8, 0},  {0, 0, 1, 0, 3},  {0, 0, 2, 0, 1},  {0, 0, 3, 0, 1},  {0, 0, 1, 0, 9},
        {2, 0, 1, 0, 1},  {3, 0, 1, 0, 1},  {4, 0, 1, 0, 5},  {8, 0, 1, 0, 5},  {0, 0, 1, 0, 0},
        {1, 5, 7, 0, 2},  {1, 0, 7, 0, 2},  {0, 2, 2, 0, 2},  {0, 3, 2, 0, 2},  {9, 0, 7, 0, 3},
    };
    put("gate", "flow", flow, sizeof flow, NULL, 0);
    put("gate", "one", flow[0], sizeof flow[0], NULL, 0);
    /* Instances: 0 and 1 at the same epoch and sequence, each done and replayed; then 64 more at later epochs,
     * the 65th evicting instance 0, whose epoch is then refused and its next taken. */
    uint8_t many[(4 + 64 + 2) * 5];
    size_t n = 0;
    const uint8_t two[4][5] = {{0x00, 0, 1, 0, 1}, {0x10, 0, 1, 0, 1}, {0x00, 0, 1, 0, 1}, {0x10, 0, 1, 0, 1}};
    memcpy(many, two, sizeof two);
    n = sizeof two;
    for (unsigned i = 2; i < 66; i++, n += 5) {
        many[n] = (uint8_t)((i & 15u) << 4);
        many[n + 1] = (uint8_t)((i >> 4) << 3);
        many[n + 2] = 2;
        many[n + 3] = 0;
        many[n + 4] = 1;
    }
    const uint8_t after[2][5] = {{0x00, 0, 1, 0, 2}, {0x00, 0, 3, 0, 1}};
    memcpy(many + n, after, sizeof after);
    put("gate", "instances", many, sizeof many, NULL, 0);
}

/* ---- plugin_options: lines "KEY VALUE" (fuzz_plugin_options.c) ---- */

/* The broker's log, which idevs_plugin_config_parse writes to: kept, to say why a seed was not what it was
 * written for. */
static char plugin_log[1024];

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    (void)level;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(plugin_log, sizeof plugin_log, fmt, ap);
    va_end(ap);
}

static void put_options(const char *name, const char *text, bool accepted)
{
    static char buf[1 << 14];
    static struct mosquitto_opt opts[512];
    FUZZ_SETUP(strlen(text) < sizeof buf);
    strcpy(buf, text);
    int n = 0;
    for (char *line = strtok(buf, "\n"); line != NULL && n < 512; line = strtok(NULL, "\n")) {
        char *space = strchr(line, ' ');
        if (space != NULL)
            *space = '\0';
        opts[n].key = line;
        opts[n++].value = space != NULL ? space + 1 : line + strlen(line);
    }
    static idevs_plugin p;
    memset(&p, 0, sizeof p);
    plugin_log[0] = '\0';
    bool ok = idevs_plugin_config_parse(&p, opts, n);
    expect(ok == accepted, "options %s are %s", name, accepted ? "accepted" : "refused");
    if (ok != accepted)
        fprintf(stderr, "make_seeds: options %s: %s\n", name, ok ? "accepted" : plugin_log);
    idevs_plugin_config_free(&p);
    put_text("plugin_options", name, text);
}

#define OPTIONS_BASE                                                                                           \
    "descriptor /etc/idevs/echo.json\nauthority_key /etc/idevs/pki/authority.key\n"                           \
    "authority_cert /etc/idevs/pki/authority.crt\noperator_ca /etc/idevs/pki/ca.crt\nstate_dir /var/lib/idevs\n"

static void plugin_options(void)
{
    /* docs/OPERATOR.md's example */
    put_options("documented", OPTIONS_BASE "compartment /usr/local/libexec/idevs/idevs-compartment\n"
                "acl_others allow\nmetrics_interval_s 10\n", true);
    put_options("every-option", OPTIONS_BASE "descriptor /etc/idevs/echo2.json\ndescriptor_dir /etc/idevs/d\n"
                "compartment /c\nstart_timeout_ms 600000\npoll_budget_ms 0\nqueue_bytes 4294967295\n"
                "metrics_interval_s 86400\nlog_interval_s 1\ncertificate_validity_s 600\n"
                "certificate_renew_after_s 599\nacl_others defer\n", true);
    put_options("descriptor-dir", "descriptor_dir /etc/idevs/d\nauthority_key k\nauthority_cert c\noperator_ca ca\n"
                "state_dir s\nstart_timeout_ms 100\nqueue_bytes 65536\ncertificate_renew_after_s 60\n", true);
    static const struct { const char *name, *extra; } refused[] = {
        {"unknown", "descriptors /etc/idevs/echo.json\n"},
        {"twice", "state_dir /tmp\n"},
        {"empty", "compartment\n"},
        {"below", "start_timeout_ms 99\n"},
        {"above", "poll_budget_ms 101\n"},
        {"not-a-number", "queue_bytes 64k\n"},
        {"over-32-bits", "queue_bytes 4294967296\n"},
        {"signed", "log_interval_s +5\n"},
        {"acl", "acl_others deny\n"},
        {"renew-after-validity", "certificate_validity_s 3600\ncertificate_renew_after_s 3600\n"},
        {"renew-after-default", "certificate_renew_after_s 604800\n"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        char text[1024];
        snprintf(text, sizeof text, "%s%s", OPTIONS_BASE, refused[i].extra);
        put_options(refused[i].name, text, false);
    }
    put_options("missing", "descriptor /etc/idevs/echo.json\nauthority_key k\nauthority_cert c\nstate_dir s\n", false);
    put_options("no-descriptor", "authority_key k\nauthority_cert c\noperator_ca ca\nstate_dir s\n", false);
    static char many[1 << 14];
    size_t at = (size_t)snprintf(many, sizeof many, "%s", OPTIONS_BASE);
    for (unsigned i = 1; i <= IDEVS_PROCESSES_MAX; i++)
        at += (size_t)snprintf(many + at, sizeof many - at, "descriptor d%u\n", i);
    put_options("257-descriptors", many, false);
}

/* ---- receipt: a Receipt payload (fuzz_receipt.c) ---- */

static void put_receipt(const char *name, const uint8_t *bytes, size_t len, idevs_err expected)
{
    static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    size_t count;
    expect(idevs_receipt_decode(bytes, len, ids, &count) == expected, "receipt %s is %s", name,
           expected == IDEVS_OK ? "accepted" : "refused");
    put("receipt", name, bytes, len, NULL, 0);
}

static void receipts(void)
{
    static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {0x5e, 0x11, 0x3a, 0x07, 0x9c, 0x42, 0xd0, 0x1b};
    for (size_t i = 0; i < IDEVS_RECEIPT_IDS_MAX; i++)
        ids[i] = idevs_msgid_numbered(stream, i + 1);
    static const size_t counts[] = {1, 3, IDEVS_RECEIPT_IDS_MAX};
    uint8_t *enc;
    size_t len;
    for (size_t c = 0; c < 3; c++) {
        FUZZ_SETUP(idevs_receipt_encode(ids, counts[c], &enc, &len) == IDEVS_OK);
        char name[32];
        snprintf(name, sizeof name, "ids-%zu", counts[c]);
        put_receipt(name, enc, len, IDEVS_OK);
        if (c == 1) {
            uint8_t near[128];
            memcpy(near, enc, len);
            near[1] = 15; /* an id of 15 bytes, then a stray byte */
            put_receipt("short-id", near, len, IDEVS_ERR_MALFORMED);
            memcpy(near, enc, len);
            near[len] = 0x10; /* field 2, a varint: an unknown field */
            near[len + 1] = 0x01;
            put_receipt("unknown-field", near, len + 2, IDEVS_ERR_MALFORMED);
            static const uint8_t overlong[] = {0x8a, 0x00, 0x90, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                               15, 16};
            put_receipt("overlong-varints", overlong, sizeof overlong, IDEVS_OK);
        }
        if (c == 2) { /* one id more than a receipt holds */
            uint8_t *more = malloc(len + 18);
            FUZZ_SETUP(more != NULL);
            memcpy(more, enc, len);
            memcpy(more + len, enc, 18);
            put_receipt("ids-1025", more, len + 18, IDEVS_ERR_MALFORMED);
            free(more);
        }
        free(enc);
    }
    put_receipt("empty", NULL, 0, IDEVS_ERR_MALFORMED);
}

/* ---- rewards_payloads: a ride response, or a sale (fuzz_rewards_payloads.c) ---- */

static void put_ride(const char *name, const char *text, idevs_err expected)
{
    rewards_ride r;
    expect(rewards_parse_ride(text, strlen(text), &r) == expected, "ride %s is %s", name,
           expected == IDEVS_OK ? "accepted" : "refused");
    rewards_ride_cleanse(&r);
    put_text("rewards_payloads", name, text);
}

static void rides(void)
{
    /* docs/CASESTUDY.md's */
    put_ride("documented", "{ \"booking_ref\": \"S-000042\", \"driver\": \"Sam Okafor\", \"vehicle\": "
             "\"Blue Skoda Octavia SK21 XYZ\",\n  \"eta_minutes\": 7 }", IDEVS_OK);
    put_ride("escapes", "{\"booking_ref\":\"a.b_c-9\",\"driver\":\"Jos\\u00e9 \\\"JJ\\\" \\\\ \xe5\xb1\xb1\","
             "\"vehicle\":\"\xf0\x9f\x9a\x95\",\"eta_minutes\":1440}", IDEVS_OK);
    put_ride("eta-over", "{\"booking_ref\":\"B-1\",\"driver\":\"D\",\"vehicle\":\"V\",\"eta_minutes\":1441}",
             IDEVS_ERR_MALFORMED);
    put_ride("eta-fraction", "{\"booking_ref\":\"B-1\",\"driver\":\"D\",\"vehicle\":\"V\",\"eta_minutes\":2.5}",
             IDEVS_ERR_MALFORMED);
    put_ride("extra-key", "{\"booking_ref\":\"B-1\",\"driver\":\"D\",\"vehicle\":\"V\",\"eta_minutes\":2,\"x\":1}",
             IDEVS_ERR_MALFORMED);
    put_ride("key-twice", "{\"booking_ref\":\"B-1\",\"driver\":\"D\",\"driver\":\"V\",\"eta_minutes\":2}",
             IDEVS_ERR_MALFORMED);
    put_ride("control", "{\"booking_ref\":\"B-1\",\"driver\":\"D\\u0085\",\"vehicle\":\"V\",\"eta_minutes\":2}",
             IDEVS_ERR_MALFORMED);
    put_ride("bad-ref", "{\"booking_ref\":\"B 1\",\"driver\":\"D\",\"vehicle\":\"V\",\"eta_minutes\":2}",
             IDEVS_ERR_MALFORMED);
}

/* ---- replay_record: the launcher's record (fuzz_replay_record.c) ---- */

/* fuzz_replay_record's descriptor and fixed sealing secret */
static const char replay_descriptor[] =
    "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\"logic\":\"l.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"},"
    "{\"name\":\"shop\",\"uuid\":\"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\",\"certificate\":\"t.crt\"},"
    "{\"name\":\"taxi\",\"uuid\":\"3d6a4adc-4bc3-43f4-8a5b-2238f5eec649\",\"certificate\":\"x.crt\","
    "\"receipts\":true}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/p/in/sales\",\"from\":\"store\"},"
    "{\"name\":\"orders\",\"topic\":\"idevs/p/in/orders\",\"from\":\"shop\"},"
    "{\"name\":\"rides\",\"topic\":\"idevs/p/in/rides\",\"from\":\"taxi\"}]}";

static int seed_warnings;

static void seed_event(void *arg, idevs_launcher_event event, const char *line)
{
    (void)arg;
    (void)line;
    if (event == IDEVS_LAUNCHER_EVENT_WARNING)
        seed_warnings++;
}

/* A launcher with the record loaded from dirfd. */
static void replay_fixture(idevs_launcher *l, idevs_deployment *d, int dirfd)
{
    memset(l, 0, sizeof *l);
    l->deployment = d;
    l->program = d->program;
    idevs_uuid_format(&l->program, l->program_str);
    snprintf(l->name, sizeof l->name, "p");
    l->cfg.on_event = seed_event;
    l->state_dirfd = dirfd;
    char why[256];
    FUZZ_SETUP(replay_record_init(l) == IDEVS_OK && replay_record_load(l, why, sizeof why) == IDEVS_OK);
}

static void done(idevs_launcher *l, size_t sender, uint32_t instance, uint64_t epoch, uint64_t sequence,
                 uint64_t stream, uint64_t n)
{
    delivery d;
    memset(&d, 0, sizeof d);
    d.tracked = true;
    d.sender = sender;
    d.instance = instance;
    d.epoch = epoch;
    d.sequence = sequence;
    uint8_t s[IDEVS_MSGID_STREAM_LEN];
    for (int i = 0; i < 8; i++)
        s[i] = (uint8_t)(stream >> (56 - 8 * i));
    d.message_id = idevs_msgid_numbered(s, n);
    FUZZ_SETUP(replay_record_done(l, &d, IDEVS_OK));
}

/* The ReplayRecord of a slot (its SealedReplayRecord's record), unpacked; NULL when the slot holds none. */
static Idevs__Launcher__V1__ReplayRecord *slot_record(const uint8_t *slot)
{
    uint32_t len = (uint32_t)slot[0] << 24 | (uint32_t)slot[1] << 16 | (uint32_t)slot[2] << 8 | slot[3];
    if (len == 0)
        return NULL;
    Idevs__Launcher__V1__SealedReplayRecord *sealed =
        idevs__launcher__v1__sealed_replay_record__unpack(NULL, len, slot + 4);
    FUZZ_SETUP(sealed != NULL);
    Idevs__Launcher__V1__ReplayRecord *rec =
        idevs__launcher__v1__replay_record__unpack(NULL, sealed->record.len, sealed->record.data);
    idevs__launcher__v1__sealed_replay_record__free_unpacked(sealed, NULL);
    return rec;
}

/* mode byte || the packed record */
static void put_record(const char *name, uint8_t mode, const Idevs__Launcher__V1__ReplayRecord *rec)
{
    size_t len = idevs__launcher__v1__replay_record__get_packed_size(rec);
    uint8_t *buf = malloc(len + 1);
    FUZZ_SETUP(buf != NULL);
    buf[0] = mode;
    idevs__launcher__v1__replay_record__pack(rec, buf + 1);
    put("replay_record", name, buf, len + 1, NULL, 0);
    free(buf);
}

static uint8_t *read_all(int dirfd, const char *name, size_t *len)
{
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    FUZZ_SETUP(fd >= 0);
    struct stat st;
    FUZZ_SETUP(fstat(fd, &st) == 0);
    uint8_t *data = malloc((size_t)st.st_size);
    FUZZ_SETUP(data != NULL && read(fd, data, (size_t)st.st_size) == st.st_size);
    close(fd);
    *len = (size_t)st.st_size;
    return data;
}

static void replay_records(void)
{
    idevs_deployment *d;
    char why[256];
    FUZZ_SETUP(idevs_deployment_parse((const uint8_t *)replay_descriptor, strlen(replay_descriptor), &d, why,
                                      sizeof why) == IDEVS_OK);
    char dir[] = "/tmp/idevs-seeds-replay.XXXXXX";
    FUZZ_SETUP(mkdtemp(dir) != NULL);
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_SETUP(dirfd >= 0);
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (uint8_t)(0xa0 + i);
    int fd = openat(dirfd, "sealing.key", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FUZZ_SETUP(fd >= 0 && write(fd, secret, sizeof secret) == (ssize_t)sizeof secret && close(fd) == 0);

    /* generation 1 (the second slot): store in two epochs and a second instance, taxi with two streams of
     * handled ids */
    idevs_launcher l;
    replay_fixture(&l, d, dirfd);
    done(&l, 0, 0, 1800000000000ull, 5, 0x1111, 1);
    done(&l, 0, 0, 1800000000000ull, 7, 0x1111, 2);
    done(&l, 0, 0, 1800000600000ull, 1, 0x1111, 3);
    done(&l, 0, 7, 1800000600000ull, 1, 0x1111, 4);
    done(&l, 2, 0, 1800000000000ull, 2000, 0x2222, 1);
    done(&l, 2, 0, 1800000000000ull, 2001, 0x3333, 1);
    FUZZ_SETUP(replay_record_save(&l, REPLAY_SAVE_RELEASE));
    /* generation 2 (the first slot): shop too */
    done(&l, 1, 0, 42, 1, 0x4444, 9);
    FUZZ_SETUP(replay_record_save(&l, REPLAY_SAVE_RELEASE));
    replay_record_free(&l);
    char file[IDEVS_UUID_STR_LEN + 8];
    snprintf(file, sizeof file, "%s.replay", l.program_str);

    seed_warnings = 0;
    replay_fixture(&l, d, dirfd);
    expect(seed_warnings == 0 && l.replay.generation == 2 && l.replay.senders[1].instance_count == 1 &&
           l.replay.senders[0].instance_count == 2,
           "the replay record written reads back, its newer slot");
    replay_record_free(&l);

    size_t len;
    uint8_t *image = read_all(dirfd, file, &len);
    size_t slot = replay_record_slot_bytes(d->service_count);
    FUZZ_SETUP(len == 2 * slot);
    uint8_t mode = 0;
    put("replay_record", "file", &mode, 1, image, len);
    /* both slots as they are, then each alone */
    uint32_t used[2];
    for (int i = 0; i < 2; i++) {
        const uint8_t *s = image + i * slot;
        used[i] = 4 + ((uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 | (uint32_t)s[2] << 8 | s[3]);
    }
    uint8_t *slots = malloc(3 + used[0] + used[1]);
    FUZZ_SETUP(slots != NULL);
    slots[0] = 1;
    slots[1] = (uint8_t)(used[0] >> 8);
    slots[2] = (uint8_t)used[0];
    memcpy(slots + 3, image, used[0]);
    memcpy(slots + 3 + used[0], image + slot, used[1]);
    put("replay_record", "slots", slots, 3 + used[0] + used[1], NULL, 0);
    slots[3 + 40] ^= 1; /* the newer slot damaged: the older is read */
    put("replay_record", "slots-newer-damaged", slots, 3 + used[0] + used[1], NULL, 0);
    free(slots);

    /* the records themselves, for the target to seal */
    Idevs__Launcher__V1__ReplayRecord *newer = slot_record(image), *older = slot_record(image + slot);
    expect(newer != NULL && older != NULL && newer->generation == 2 && older->generation == 1 &&
           newer->n_senders == 3, "the replay record's slots decode");
    put_record("record", 2, newer);
    put_record("record-second-slot", 6, older);
    put_record("record-former-size", 10, newer);
    size_t a = idevs__launcher__v1__replay_record__get_packed_size(newer);
    size_t b = idevs__launcher__v1__replay_record__get_packed_size(older);
    uint8_t *two = malloc(3 + a + b);
    FUZZ_SETUP(two != NULL);
    two[0] = 3;
    two[1] = (uint8_t)(a >> 8);
    two[2] = (uint8_t)a;
    idevs__launcher__v1__replay_record__pack(newer, two + 3);
    idevs__launcher__v1__replay_record__pack(older, two + 3 + a);
    put("replay_record", "two-records", two, 3 + a + b, NULL, 0);
    free(two);
    /* near-valid: each of the rules behind the HMAC */
    newer->version = 1;
    put_record("version-1", 2, newer);
    newer->version = 3;
    newer->program.data[0] ^= 1;
    put_record("other-program", 2, newer);
    newer->program.data[0] ^= 1;
    Idevs__Launcher__V1__ReplaySender *store = newer->senders[0];
    Idevs__Launcher__V1__ReplayInstance *first = store->instances[0];
    uint64_t prev = first->previous->epoch;
    first->previous->epoch = first->current->epoch;
    put_record("previous-not-older", 2, newer);
    first->previous->epoch = prev;
    first->current->n_bits--;
    put_record("short-window", 2, newer);
    first->current->n_bits++;
    uint32_t number = store->instances[1]->instance;
    store->instances[1]->instance = first->instance;
    put_record("instance-twice", 2, newer);
    store->instances[1]->instance = number;
    store->current = first->current;
    put_record("version-3-with-current", 2, newer);
    store->current = NULL;
    /* the former version: each sender's epochs as its instance 0, in a slot of its size (64 KiB) */
    Idevs__Launcher__V1__ReplayInstance **instances[3];
    size_t n_instances[3];
    newer->version = 2;
    for (size_t k = 0; k < newer->n_senders; k++) {
        Idevs__Launcher__V1__ReplaySender *e = newer->senders[k];
        instances[k] = e->instances;
        n_instances[k] = e->n_instances;
        e->current = e->instances[0]->current;
        e->previous = e->instances[0]->previous;
        e->n_instances = 0;
        e->instances = NULL;
    }
    put_record("version-2", 10, newer);
    store->instances = instances[0];
    store->n_instances = 1;
    put_record("version-2-with-instances", 10, newer);
    for (size_t k = 0; k < newer->n_senders; k++) {
        Idevs__Launcher__V1__ReplaySender *e = newer->senders[k];
        e->current = e->previous = NULL;
        e->instances = instances[k];
        e->n_instances = n_instances[k];
    }
    newer->version = 3;
    Idevs__Launcher__V1__ReplaySender *taxi = newer->senders[2];
    Idevs__Launcher__V1__ReplayWindow *handled = taxi->handled;
    taxi->handled = NULL;
    put_record("handled-previous-alone", 2, newer);
    taxi->handled = handled;
    Idevs__Launcher__V1__ReplaySender *shop = newer->senders[1];
    newer->senders[1] = newer->senders[0];
    put_record("sender-twice", 2, newer);
    newer->senders[1] = shop;
    idevs__launcher__v1__replay_record__free_unpacked(older, NULL);
    idevs__launcher__v1__replay_record__free_unpacked(newer, NULL);
    free(image);
    unlinkat(dirfd, file, 0);
    unlinkat(dirfd, "sealing.key", 0);
    close(dirfd);
    rmdir(dir);
    idevs_deployment_free(d);
}

/* ---- launcher_outbox: one outbox file (fuzz_launcher_outbox.c) ---- */

static const char outbox_program[] = "6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40";
static const char *const outbox_services[2] = {"1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                                               "2c5f39cb-3ab2-42e3-994a-1127e4ddb538"};

/* flags || an OutboxEntry of an envelope from the program to service `to`, numbered n. */
static void put_entry(const char *name, uint8_t flags, const char *topic, size_t to, uint32_t qos, bool request,
                      uint64_t created_ms, bool kept, bool stale)
{
    idevs_env_header h;
    memset(&h, 0, sizeof h);
    h.version = IDEVS_ENVELOPE_VERSION;
    h.suite = 1;
    FUZZ_SETUP(idevs_uuid_parse(outbox_program, &h.sender) == IDEVS_OK &&
               idevs_uuid_parse(outbox_services[to], &h.recipient) == IDEVS_OK);
    static const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {0xa1, 0xb2, 0xc3, 0xd4, 0xe5, 0xf6, 0x07, 0x18};
    h.message_id = idevs_msgid_numbered(stream, 7);
    h.epoch = 1800000000000ull;
    h.sequence = 3;
    uint8_t *env, *ct;
    size_t env_len;
    FUZZ_SETUP(idevs_env_encode(&h, NULL, NULL, 0, 48, &env, &env_len, &ct) == IDEVS_OK);
    memset(ct, 0x5c, 48);
    idevs_envelope_header peeked;
    expect(idevs_envelope_peek(env, env_len, &peeked) == IDEVS_OK, "outbox entry %s's envelope passes the peek",
           name);
    uint8_t copy[64], digest[IDEVS_SHA256_LEN];
    memset(copy, 0x6b, sizeof copy);
    memset(digest, stale ? 0x99 : 0, sizeof digest);
    Idevs__Launcher__V1__OutboxEntry k = IDEVS__LAUNCHER__V1__OUTBOX_ENTRY__INIT;
    k.version = 1;
    k.topic = (char *)topic;
    k.envelope.data = env;
    k.envelope.len = env_len;
    k.qos = qos;
    k.response_topic = request ? "idevs/p/resp/ride" : "";
    /* A request's correlation data: its message id, then the compartment's token (opaque here). */
    static uint8_t correlation[IDEVS_REQUEST_CORRELATION_LEN];
    memcpy(correlation, h.message_id.b, IDEVS_UUID_LEN);
    memset(correlation + IDEVS_UUID_LEN, 0x3c, sizeof correlation - IDEVS_UUID_LEN);
    if (request) {
        k.correlation.data = correlation;
        k.correlation.len = sizeof correlation;
    }
    k.created_ms = created_ms;
    if (kept) {
        k.kept.data = copy;
        k.kept.len = sizeof copy;
    }
    k.cert_digest.data = digest;
    k.cert_digest.len = sizeof digest;
    size_t len = idevs__launcher__v1__outbox_entry__get_packed_size(&k);
    uint8_t *buf = malloc(len);
    FUZZ_SETUP(buf != NULL);
    idevs__launcher__v1__outbox_entry__pack(&k, buf);
    put("launcher_outbox", name, &flags, 1, buf, len);
    free(buf);
    free(env);
}

static void outbox_entries(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000;
    put_entry("output", 1, "idevs/p/out/note", 0, 1, false, now, true, false);
    put_entry("output-qos-2", 3, "idevs/p/out/tick", 1, 2, false, now, false, false);
    put_entry("request", 1, "idevs/p/req/ride", 1, 1, true, now, true, false);
    put_entry("receipt", 1, "idevs/p/receipt/to/store", 0, 1, false, now, false, false);
    put_entry("stale-with-copy", 1, "idevs/p/out/note", 0, 1, false, now, true, true);
    put_entry("stale-without-copy", 1, "idevs/p/out/note", 0, 1, false, now, false, true);
    put_entry("expired", 1, "idevs/p/out/note", 0, 1, false, now - 66 * 60 * 1000, false, false);
    put_entry("created-far-ahead", 1, "idevs/p/out/note", 0, 1, false, UINT64_MAX - 5, false, false);
    /* refused */
    put_entry("other-name", 0, "idevs/p/out/note", 0, 1, false, now, false, false);
    put_entry("other-qos", 1, "idevs/p/out/note", 0, 2, false, now, false, false);
    put_entry("other-receiver", 1, "idevs/p/out/note", 1, 1, false, now, false, false);
    put_entry("request-as-output", 1, "idevs/p/out/tick", 1, 2, true, now, false, false);
    put_entry("undeclared-topic", 1, "idevs/p/out/other", 0, 1, false, now, false, false);
}

/* fuzz_tpm_report's seeds: a report that verifies, and refused ones that reach past decoding. */
static void tpm_reports(const fuzz_world *w)
{
    idevs_cert_policy *policy = fuzz_tpm_policy(w);
    idevs_evidence ev;
    fuzz_tpm_evidence(&ev);
    static const struct {
        const char *name;
        size_t events;
        unsigned reg;
        int flip; /* a byte of the report to flip, from the end; 0: none */
        idevs_err expected;
    } seeds[] = {
        {"one-event", 1, FUZZ_TPM_REGISTER, 0, IDEVS_OK},
        {"ten-events", 10, FUZZ_TPM_REGISTER, 0, IDEVS_OK},
        {"register-16", 1, 16, 0, IDEVS_ERR_EVIDENCE_MALFORMED},
        {"register-14", 1, 14, 0, IDEVS_ERR_TPM_PCR_SELECTION},
        {"event-altered", 2, FUZZ_TPM_REGISTER, 1, IDEVS_ERR_TPM_LOG_REPLAY},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof seeds[0]; i++) {
        size_t len = 0;
        uint8_t *r = fuzz_tpm_report(w, seeds[i].events, seeds[i].reg, &len);
        if (seeds[i].flip > 0)
            r[len - (size_t)seeds[i].flip] ^= 0x01; /* the last event's key binding */
        char why[512];
        idevs_err err = certs_tpm_verify(policy, &ev, r, len, "certificate 'seed'", why, sizeof why);
        expect(err == seeds[i].expected, "tpm report %s gives %s", seeds[i].name, idevs_err_name(seeds[i].expected));
        if (err != seeds[i].expected)
            fprintf(stderr, "make_seeds: tpm report %s: %s\n", seeds[i].name, err == IDEVS_OK ? "accepted" : why);
        put("tpm_report", seeds[i].name, r, len, NULL, 0);
        free(r);
    }
    idevs_cert_policy_free(policy);
}

int main(int argc, char **argv)
{
    check_mode = argc == 3 && strcmp(argv[1], "--check") == 0;
    if (argc != 2 + check_mode) {
        fprintf(stderr, "usage: make_seeds [--check] DIR\n");
        return 2;
    }
    out_dir = argv[1 + check_mode];
    FUZZ_SETUP(mkdir(out_dir, 0755) == 0 || errno == EEXIST);
    clear_old_seeds();
    fuzz_world w;
    fuzz_world_init(&w);
    envelopes(&w);
    certificates(&w);
    tpm_reports(&w);
    fuzz_world_free(&w);

    char *documented = documented_descriptor();
    put_descriptor("documented", documented);
    put_descriptor_variant("with-refusals", documented, "\"limits\": {",
                           "\"refusals\": [\"below_threshold\", \"no_phone\"],\n  \"limits\": { "
                           "\"max_outstanding_requests\": 4096,",
                           IDEVS_OK);
    free(documented);
    put_descriptor("loyalty", descriptor_small);
    put_descriptor_variant("instances-and-partitions", descriptor_small, "\"logic\":\"libloyalty.so\"",
                           "\"logic\":\"libloyalty.so\",\"instances\":4,\"partitions\":65536", IDEVS_OK);
    static const struct { const char *name, *from, *to; } refused[] = {
        {"topic-twice", "idevs/loyalty/out/award", "idevs/loyalty/in/sales"},
        {"topic-wildcard", "idevs/loyalty/out/award", "idevs/loyalty/out/+"},
        {"topic-dollar", "idevs/loyalty/in/sales", "$SYS/sales"},
        {"unknown-service", "\"to\":\"points\"", "\"to\":\"taxi\""},
        {"qos-3", "\"qos\":0", "\"qos\":3"},
        {"name-twice", "\"name\":\"points\"", "\"name\":\"store\""},
        {"instances-65", "\"logic\":\"libloyalty.so\"", "\"logic\":\"libloyalty.so\",\"instances\":65"},
        {"partitions-0", "\"logic\":\"libloyalty.so\"", "\"logic\":\"libloyalty.so\",\"partitions\":0"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++)
        put_descriptor_variant(refused[i].name, descriptor_small, refused[i].from, refused[i].to, IDEVS_ERR_CONFIG);
    put_sale("one-item", sale);
    put_sale("two-items", sale_items);
    frames();
    gate_records();
    put_text("utf8", "ascii", "Ana Lima, 12 Harbour Street");
    put_text("utf8", "every-length", "a \xc3\xa9 \xe5\xb1\xb1 \xf0\x9f\x98\x80 \xf4\x8f\xbf\xbf \xed\x9f\xbf");
    put_text("utf8", "ill-formed", "\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 \xe0\x80 \x80 \xf8");
    plugin_options();
    receipts();
    rides();
    put_text("rewards_payloads", "sale", sale);
    put_text("rewards_payloads", "sale-items", sale_items);
    replay_records();
    outbox_entries();
    if (check_mode) {
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
    if (failed > 0)
        fprintf(stderr, "make_seeds: %d seeds no longer do what they were written for (meson test fuzz-seeds)\n",
                failed);
    return 0;
}
