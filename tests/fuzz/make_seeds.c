/* Writes the seed corpus of every fuzz target: DIR/<target>/<name>, one input a file. Seeds are valid inputs
 * of each kind, so that fuzzing starts deep inside the code rather than at its first length check; this program
 * checks that the code under test accepts each (or refuses it, where a seed is meant to be refused) before it
 * writes it: with --check (the meson test fuzz-seeds) one ok line per expectation and the last line
 * "N passed, M failed", so that a seed corpus that no longer reaches past the first check fails a test. Without
 * --check (the build) it only warns: a parser whose rules changed on purpose must not break the build.
 * Usage: make_seeds [--check] DIR (IDEVS_SOURCE_ROOT names the source tree, for the test vectors). */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fuzz.h"
#include "fuzz_world.h"
#include "envelope_internal.h"
#include "idevs_crypto.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
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
    h.version = 1;
    h.suite = 2;
    h.epoch = 1800000000000ull;
    h.sequence = 1;
    idevs_msgid provenance[3];
    memset(provenance, 0x44, sizeof provenance);
    h.provenance = provenance;
    h.provenance_count = 3;
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
 * that replaces the older of two, and the refusals before the replay record. */
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
    fuzz_world_free(&w);

    char *documented = documented_descriptor();
    put_descriptor("documented", documented);
    put_descriptor_variant("with-refusals", documented, "\"limits\": {",
                           "\"refusals\": [\"below_threshold\", \"no_phone\"],\n  \"limits\": { "
                           "\"max_outstanding_requests\": 4096,",
                           IDEVS_OK);
    free(documented);
    put_descriptor("loyalty", descriptor_small);
    static const struct { const char *name, *from, *to; } refused[] = {
        {"topic-twice", "idevs/loyalty/out/award", "idevs/loyalty/in/sales"},
        {"topic-wildcard", "idevs/loyalty/out/award", "idevs/loyalty/out/+"},
        {"topic-dollar", "idevs/loyalty/in/sales", "$SYS/sales"},
        {"unknown-service", "\"to\":\"points\"", "\"to\":\"taxi\""},
        {"qos-3", "\"qos\":0", "\"qos\":3"},
        {"name-twice", "\"name\":\"points\"", "\"name\":\"store\""},
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
    if (check_mode) {
        printf("%d passed, %d failed\n", passed, failed);
        return failed == 0 ? 0 : 1;
    }
    if (failed > 0)
        fprintf(stderr, "make_seeds: %d seeds no longer do what they were written for (meson test fuzz-seeds)\n",
                failed);
    return 0;
}
