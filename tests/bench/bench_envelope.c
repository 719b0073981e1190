/* Envelope cost per message, for payloads of 64 B, 256 B, 1 KiB, 4 KiB and 16 KiB, with the default padding
 * (pow2, docs/PROTOCOL.md section 4.1) and without (none), and what the padding costs in bytes:
 *   seal, open, seal+open   steady state (inside an epoch: one AEAD, encoding, decoding)
 *   first seal, first open  the first message of an epoch (X25519 key generation and agreements, Ed25519
 *                           signature; on the receiver Ed25519 verification, agreements and chain verification)
 *   raw aead                AES-256-GCM encrypt + decrypt of the same payload through EVP, for comparison
 *   envelope, padding       the steady-state envelope's length, and the bytes of padding in it
 * Each row runs for about 0.3 s. Prints a table per rule, then one machine-readable line per rule and size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"

#define TOPIC "idevs/v1/store/sale"
#define TARGET_NS 300000000.0
#define BATCH 256

static double now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int die(const char *what)
{
    fprintf(stderr, "bench_envelope: %s failed\n", what);
    exit(1);
}

static idevs_identity *service(idevs_identity *ca, X509 *ca_cert, const char *name)
{
    idevs_uuid u;
    idevs_uuid_generate(&u);
    idevs_identity *id = NULL;
    X509 *cert = NULL;
    uint8_t *der = NULL;
    size_t len = 0;
    if (idevs_identity_generate(&u, name, &id) != IDEVS_OK ||
        idevs_cert_issue_service(ca, ca_cert, id, 30, &cert) != IDEVS_OK || idevs_cert_to_der(cert, &der, &len) != IDEVS_OK)
        die("identity");
    const uint8_t *d[1] = {der};
    if (idevs_identity_set_chain(id, d, &len, 1) != IDEVS_OK)
        die("set_chain");
    X509_free(cert);
    free(der);
    return id;
}

static void add_peer(idevs_envelope_ctx *ctx, const idevs_identity *peer)
{
    size_t len = 0;
    const uint8_t *der = idevs_identity_chain_der(peer, 0, &len);
    const uint8_t *d[1] = {der};
    if (idevs_envelope_add_peer(ctx, d, &len, 1, NULL) != IDEVS_OK)
        die("add_peer");
}

static idevs_identity *alice, *bob;
static idevs_cert_policy *policy;
static uint32_t pad_rule; /* IDEVS_PAD_POW2 or IDEVS_PAD_NONE, for every seal */

static idevs_envelope_ctx *ctx_for(const idevs_identity *self, const idevs_identity *peer)
{
    idevs_envelope_ctx *ctx = NULL;
    if (idevs_envelope_ctx_new(self, policy, NULL, &ctx) != IDEVS_OK)
        die("ctx_new");
    if (peer != NULL)
        add_peer(ctx, peer);
    return ctx;
}

static void seal(idevs_envelope_ctx *ctx, const uint8_t *payload, size_t len, uint8_t **out, size_t *out_len)
{
    idevs_seal_input in = {idevs_identity_uuid(bob), TOPIC, payload, len, NULL, 0, NULL, pad_rule};
    if (idevs_envelope_seal(ctx, &in, out, out_len, NULL) != IDEVS_OK)
        die("seal");
}

static void open_one(idevs_envelope_ctx *ctx, const uint8_t *buf, size_t len)
{
    idevs_opened o;
    if (idevs_envelope_open(ctx, TOPIC, buf, len, &o) != IDEVS_OK)
        die("open");
    idevs_opened_clear(&o);
}

struct row {
    double seal, open, both, first_seal, first_open, aead;
    size_t envelope, padding;
};

static void bench_size(size_t size, struct row *r)
{
    uint8_t *payload = malloc(size);
    if (payload == NULL)
        die("malloc");
    memset(payload, 0x5a, size);
    idevs_envelope_ctx *a = ctx_for(alice, bob), *b = ctx_for(bob, NULL);
    uint8_t *bufs[BATCH];
    size_t lens[BATCH];
    /* warm up: the epoch starts here */
    seal(a, payload, size, &bufs[0], &lens[0]);
    open_one(b, bufs[0], lens[0]);
    free(bufs[0]);
    /* a steady-state envelope (the certificate digest, not the chain): its length, and the padding in it (the
     * framing is 5 bytes with no provenance) */
    seal(a, payload, size, &bufs[0], &lens[0]);
    open_one(b, bufs[0], lens[0]);
    idevs_envelope_header h;
    if (idevs_envelope_peek(bufs[0], lens[0], &h) != IDEVS_OK)
        die("peek");
    r->envelope = lens[0];
    r->padding = h.ciphertext_len - IDEVS_AEAD_TAG_LEN - 5 - size;
    free(bufs[0]);

    /* seal, then open, in batches: only the measured half is timed */
    double t_seal = 0, t_open = 0;
    unsigned long n = 0;
    while (t_seal + t_open < 2 * TARGET_NS) {
        double t0 = now_ns();
        for (int i = 0; i < BATCH; i++)
            seal(a, payload, size, &bufs[i], &lens[i]);
        double t1 = now_ns();
        for (int i = 0; i < BATCH; i++)
            open_one(b, bufs[i], lens[i]);
        double t2 = now_ns();
        for (int i = 0; i < BATCH; i++)
            free(bufs[i]);
        t_seal += t1 - t0;
        t_open += t2 - t1;
        n += BATCH;
    }
    r->seal = t_seal / (double)n;
    r->open = t_open / (double)n;

    double t = 0;
    n = 0;
    double start = now_ns();
    while ((t = now_ns() - start) < TARGET_NS) {
        for (int i = 0; i < BATCH; i++) {
            uint8_t *buf;
            size_t len;
            seal(a, payload, size, &buf, &len);
            open_one(b, buf, len);
            free(buf);
        }
        n += BATCH;
    }
    r->both = t / (double)n;

    /* first message of an epoch: rotation on the sender, a receiver that has never seen the sender (chain
     * verification included; creating the receiver's context is not timed) */
    double ts = 0, to = 0;
    n = 0;
    while (ts + to < TARGET_NS) {
        idevs_envelope_rotate(a);
        uint8_t *buf;
        size_t len;
        double t0 = now_ns();
        seal(a, payload, size, &buf, &len);
        double t1 = now_ns();
        idevs_envelope_ctx *fresh = ctx_for(bob, NULL);
        double t2 = now_ns();
        open_one(fresh, buf, len);
        double t3 = now_ns();
        idevs_envelope_ctx_free(fresh);
        free(buf);
        ts += t1 - t0;
        to += t3 - t2;
        n++;
    }
    r->first_seal = ts / (double)n;
    r->first_open = to / (double)n;

    /* raw AEAD: AES-256-GCM with keyed contexts, a 200-byte AAD as an envelope's, encrypt then decrypt */
    EVP_CIPHER_CTX *enc = EVP_CIPHER_CTX_new(), *dec = EVP_CIPHER_CTX_new();
    uint8_t key[32] = {1}, iv[12] = {2}, aad[200] = {3}, tag[16];
    uint8_t *ct = malloc(size + 16), *pt = malloc(size + 16);
    if (enc == NULL || dec == NULL || ct == NULL || pt == NULL ||
        EVP_EncryptInit_ex2(enc, EVP_aes_256_gcm(), key, NULL, NULL) != 1 ||
        EVP_DecryptInit_ex2(dec, EVP_aes_256_gcm(), key, NULL, NULL) != 1)
        die("evp");
    n = 0;
    start = now_ns();
    while ((t = now_ns() - start) < TARGET_NS) {
        for (int i = 0; i < BATCH; i++) {
            int l = 0, f = 0;
            iv[11] = (uint8_t)i;
            if (EVP_EncryptInit_ex2(enc, NULL, NULL, iv, NULL) != 1 || EVP_EncryptUpdate(enc, NULL, &l, aad, sizeof aad) != 1 ||
                EVP_EncryptUpdate(enc, ct, &l, payload, (int)size) != 1 || EVP_EncryptFinal_ex(enc, ct + l, &f) != 1 ||
                EVP_CIPHER_CTX_ctrl(enc, EVP_CTRL_AEAD_GET_TAG, 16, tag) != 1)
                die("encrypt");
            if (EVP_DecryptInit_ex2(dec, NULL, NULL, iv, NULL) != 1 ||
                EVP_CIPHER_CTX_ctrl(dec, EVP_CTRL_AEAD_SET_TAG, 16, tag) != 1 ||
                EVP_DecryptUpdate(dec, NULL, &l, aad, sizeof aad) != 1 || EVP_DecryptUpdate(dec, pt, &l, ct, (int)size) != 1 ||
                EVP_DecryptFinal_ex(dec, pt + l, &f) != 1)
                die("decrypt");
        }
        n += BATCH;
    }
    r->aead = t / (double)n;
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
    free(ct);
    free(pt);
    free(payload);
    idevs_envelope_ctx_free(a);
    idevs_envelope_ctx_free(b);
}

int main(void)
{
    idevs_uuid u;
    idevs_uuid_generate(&u);
    idevs_identity *ca = NULL;
    X509 *ca_cert = NULL;
    if (idevs_identity_generate(&u, "bench-ca", &ca) != IDEVS_OK || idevs_cert_issue_ca(ca, 30, &ca_cert) != IDEVS_OK)
        die("ca");
    alice = service(ca, ca_cert, "alice");
    bob = service(ca, ca_cert, "bob");
    policy = idevs_cert_policy_new();
    if (policy == NULL || idevs_cert_policy_add_ca(policy, ca_cert) != IDEVS_OK)
        die("policy");

#define SIZES 5
    const size_t sizes[SIZES] = {64, 256, 1024, 4096, 16384};
    const uint32_t rules[2] = {IDEVS_PAD_POW2, IDEVS_PAD_NONE};
    const char *rule_names[2] = {"pow2", "none"};
    struct row rows[2][SIZES];
    for (int p = 0; p < 2; p++) {
        pad_rule = rules[p];
        for (int i = 0; i < SIZES; i++)
            bench_size(sizes[i], &rows[p][i]);
    }

    for (int p = 0; p < 2; p++) {
        printf("envelope cost per message (ns), suite 1 (AES-256-GCM), envelope format %d, padding %s%s\n",
               IDEVS_ENVELOPE_VERSION, rule_names[p], p == 0 ? " (the default)" : "");
        printf("%8s %10s %10s %10s %12s %12s %10s %10s %9s %8s\n", "payload", "seal", "open", "seal+open",
               "first seal", "first open", "raw aead", "overhead", "envelope", "padding");
        for (int i = 0; i < SIZES; i++) {
            const struct row *r = &rows[p][i];
            printf("%8zu %10.0f %10.0f %10.0f %12.0f %12.0f %10.0f %10.0f %9zu %8zu\n", sizes[i], r->seal, r->open,
                   r->both, r->first_seal, r->first_open, r->aead, r->both - r->aead, r->envelope, r->padding);
        }
    }
    printf("(raw aead: EVP AES-256-GCM encrypt + decrypt of the payload alone with a 200-byte AAD; overhead: "
           "seal+open - raw aead;\n envelope: bytes of a steady-state envelope, no provenance; padding: bytes of it "
           "that are padding)\n");
    for (int p = 0; p < 2; p++)
        for (int i = 0; i < SIZES; i++) {
            const struct row *r = &rows[p][i];
            printf("bench_envelope pad=%s payload=%zu seal_ns=%.0f open_ns=%.0f seal_open_ns=%.0f first_seal_ns=%.0f "
                   "first_open_ns=%.0f raw_aead_ns=%.0f envelope_bytes=%zu padding_bytes=%zu\n",
                   rule_names[p], sizes[i], r->seal, r->open, r->both, r->first_seal, r->first_open, r->aead,
                   r->envelope, r->padding);
        }
    idevs_identity_free(alice);
    idevs_identity_free(bob);
    idevs_identity_free(ca);
    X509_free(ca_cert);
    idevs_cert_policy_free(policy);
    return 0;
}
