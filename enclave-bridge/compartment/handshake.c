/* The start of a compartment's life, before the sandbox: Init, the keys, CertifyRequest, Certified.
 *
 * The compartment trusts nothing the launcher says that it can check itself: it computes the descriptor's
 * digest, checks the operator CA against the descriptor's pin, verifies every service certificate and the UUID
 * the descriptor gives it, and checks that its own certificate certifies exactly its keys, its program, its
 * measurement and its descriptor. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/x509.h>

#include "compartment.h"

#define CLOCK_SKEW_MAX_MS (5 * 60 * 1000) /* between the launcher's clock (Init.now_ms) and ours */

static Idevs__Bridge__V1__Frame *receive(compartment *c, Idevs__Bridge__V1__Frame__BodyCase want, const char *what)
{
    Idevs__Bridge__V1__Frame *f = NULL;
    idevs_err err = idevs_channel_recv(&c->ch, &f, CMP_HANDSHAKE_TIMEOUT_MS);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "waiting for %s: %s", what, idevs_strerror(err));
    if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_OFFER && want == IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED) {
        /* Another grant, sent before the launcher knew the first was taken: the first valid one wins. */
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        return receive(c, want, what);
    }
    if (f->body_case != want) {
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        cmp_fatal(c, IDEVS_ERR_FRAME, "expected %s, got another frame", what);
    }
    return f;
}

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void check_operator_ca(compartment *c, const ProtobufCBinaryData *ca)
{
    uint8_t digest[IDEVS_SHA256_LEN];
    if (ca->len == 0 || ca->len > IDEVS_CERT_MAX)
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.operator_ca: %zu bytes, expected 1 to %d", ca->len, IDEVS_CERT_MAX);
    if (idevs_sha256(ca->data, ca->len, digest) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "SHA-256 failed");
    if (!idevs_ct_equal(digest, c->dep->operator_ca_sha256, IDEVS_SHA256_LEN))
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.operator_ca: its SHA-256 is not the descriptor's operator_ca_sha256");
    const unsigned char *p = ca->data;
    c->operator_ca = d2i_X509(NULL, &p, (long)ca->len);
    if (c->operator_ca == NULL || p != ca->data + ca->len)
        cmp_fatal(c, IDEVS_ERR_CERT_MALFORMED, "Init.operator_ca: not one DER certificate");
    if ((c->policy = idevs_cert_policy_new()) == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    idevs_err err = idevs_cert_policy_add_ca(c->policy, c->operator_ca);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "Init.operator_ca: %s", idevs_strerror(err));
}

/* Verifies each service certificate against the operator CA and the descriptor's UUID for that name, and keeps
 * the chains until the services become peers of the envelope context. */
static void check_services(compartment *c, const Idevs__Bridge__V1__Init *init)
{
    const idevs_deployment *d = c->dep;
    c->service_der = calloc(d->service_count, sizeof *c->service_der);
    c->service_der_len = calloc(d->service_count, sizeof *c->service_der_len);
    c->service_chain_count = calloc(d->service_count, sizeof *c->service_chain_count);
    if (c->service_der == NULL || c->service_der_len == NULL || c->service_chain_count == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < init->n_services; i++) {
        const Idevs__Bridge__V1__ServiceCertificate *sc = init->services[i];
        size_t k = 0;
        while (k < d->service_count && strcmp(d->services[k].name, sc->name) != 0)
            k++;
        if (k == d->service_count)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.services[%zu]: the descriptor declares no service '%.64s'", i,
                      sc->name);
        if (c->service_chain_count[k] != 0)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.services[%zu]: a second certificate for service '%s'", i, sc->name);
        if (sc->n_chain == 0 || sc->n_chain > IDEVS_CHAIN_MAX)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.services[%zu]: %zu certificates, expected 1 to %d", i, sc->n_chain,
                      IDEVS_CHAIN_MAX);
        const uint8_t *der[IDEVS_CHAIN_MAX];
        size_t len[IDEVS_CHAIN_MAX];
        for (size_t j = 0; j < sc->n_chain; j++) {
            if (sc->chain[j].len == 0 || sc->chain[j].len > IDEVS_CERT_MAX)
                cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.services[%zu].chain[%zu]: %zu bytes, expected 1 to %d", i, j,
                          sc->chain[j].len, IDEVS_CERT_MAX);
            der[j] = sc->chain[j].data;
            len[j] = sc->chain[j].len;
        }
        idevs_cert_info info;
        char why[256];
        idevs_err err = idevs_cert_verify(c->policy, der, len, sc->n_chain, &info, why, sizeof why);
        if (err != IDEVS_OK)
            cmp_fatal(c, err, "service '%s': %s", sc->name, why);
        if (!idevs_uuid_equal(&info.uuid, &d->services[k].uuid))
            cmp_fatal(c, IDEVS_ERR_CONFIG, "service '%s': the certificate names another UUID than the descriptor",
                      sc->name);
        for (size_t j = 0; j < sc->n_chain; j++) {
            if ((c->service_der[k][j] = malloc(len[j])) == NULL)
                cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
            memcpy(c->service_der[k][j], der[j], len[j]);
            c->service_der_len[k][j] = len[j];
        }
        c->service_chain_count[k] = sc->n_chain;
    }
    for (size_t k = 0; k < d->service_count; k++)
        if (c->service_chain_count[k] == 0)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.services: no certificate for service '%s'", d->services[k].name);
}

static void send_certify_request(compartment *c, const uint8_t sealing_key[32], bool restored);

/* Restores or creates the keys and asks the launcher to certify them. */
static void certify_request(compartment *c, const Idevs__Bridge__V1__Init *init)
{
    if (init->sealing_key.len != 32)
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.sealing_key: %zu bytes, expected 32", init->sealing_key.len);
    bool restored = false;
    idevs_err err = keys_restore_or_generate(init->sealing_key.data, &c->dep->program, c->dep->name, c->measurement,
                                             init->sealed_keys.data, init->sealed_keys.len, &c->self, &restored);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "cannot create the compartment's keys: %s", idevs_strerror(err));
    /* A joiner's fresh keys are temporary: nothing is derived from them, nothing sealed to keep. */
    c->joining = init->join && !restored;
    send_certify_request(c, init->sealing_key.data, restored);
}

static void send_certify_request(compartment *c, const uint8_t sealing_key[32], bool restored)
{
    idevs_err err;
    uint8_t blob[KEYS_SEALED_LEN];
    if (!c->joining) {
        keys_derive_own(c);
        err = keys_seal(sealing_key, &c->dep->program, c->measurement, c->self, blob);
        if (err != IDEVS_OK)
            cmp_fatal(c, err, "cannot seal the compartment's keys: %s", idevs_strerror(err));
    }

    Idevs__Bridge__V1__CertifyRequest req = IDEVS__BRIDGE__V1__CERTIFY_REQUEST__INIT;
    req.sign_public.data = (uint8_t *)idevs_identity_sign_public(c->self);
    req.sign_public.len = IDEVS_ED25519_PUB_LEN;
    req.kex_public.data = (uint8_t *)idevs_identity_kex_public(c->self);
    req.kex_public.len = IDEVS_X25519_LEN;
    req.sealed_keys.data = c->joining ? NULL : blob;
    req.sealed_keys.len = c->joining ? 0 : sizeof blob;
    req.keys_restored = restored;
    req.joining = c->joining;
    Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
    frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST;
    frame.certify_request = &req;
    err = idevs_channel_send(&c->ch, &frame, CMP_HANDSHAKE_TIMEOUT_MS);
    if (err == IDEVS_OK)
        err = idevs_channel_flush(&c->ch, CMP_HANDSHAKE_TIMEOUT_MS);
    idevs_cleanse(blob, sizeof blob);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "cannot send CertifyRequest: %s", idevs_strerror(err));
}

/* Installs our chain after checking it certifies what this compartment is: at the start and at each renewal. */
void handshake_install_chain(compartment *c, const Idevs__Bridge__V1__Certified *cert)
{
    if (cert->n_chain == 0 || cert->n_chain > IDEVS_CHAIN_MAX)
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Certified: %zu certificates, expected 1 to %d", cert->n_chain,
                  IDEVS_CHAIN_MAX);
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    for (size_t j = 0; j < cert->n_chain; j++) {
        if (cert->chain[j].len == 0 || cert->chain[j].len > IDEVS_CERT_MAX)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Certified.chain[%zu]: %zu bytes, expected 1 to %d", j, cert->chain[j].len,
                      IDEVS_CERT_MAX);
        der[j] = cert->chain[j].data;
        len[j] = cert->chain[j].len;
    }
    /* The leaf must certify exactly our keys and program UUID ... */
    idevs_err err = idevs_identity_set_chain(c->self, der, len, cert->n_chain);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "Certified: the certificate is not for this compartment's keys and program: %s",
                  idevs_strerror(err));
    /* ... and, as services will check, chain to the operator CA with evidence of this measurement and this
     * descriptor. A launcher that certified something else would only make every service refuse us. */
    idevs_cert_policy *self_policy = idevs_cert_policy_new();
    if (self_policy == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    idevs_cert_policy_require_evidence(self_policy, true);
    idevs_cert_policy_allow_process_backend_insecure(self_policy);
    /* Which backend isolates us is the launcher's configuration, not ours to refuse; the TPM report inside is
     * for the services, which check it under their own policy. */
    idevs_cert_policy_allow_backend(self_policy, IDEVS_BACKEND_TPM);
    idevs_cert_policy_allow_debug_insecure(self_policy);
    idevs_cert_policy_expect_descriptor(self_policy, c->dep->digest);
    idevs_cert_policy_expect_program(self_policy, &c->dep->program);
    err = idevs_cert_policy_add_ca(self_policy, c->operator_ca);
    if (err == IDEVS_OK)
        err = idevs_cert_policy_add_measurement(self_policy, c->measurement);
    char why[256] = "";
    idevs_cert_info info;
    if (err == IDEVS_OK)
        err = idevs_cert_verify(self_policy, der, len, cert->n_chain, &info, why, sizeof why);
    idevs_cert_policy_free(self_policy);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "Certified: %s", why[0] != '\0' ? why : idevs_strerror(err));
    c->backend = info.evidence.backend;
}

void handshake_renewed(compartment *c, const Idevs__Bridge__V1__Certified *cert)
{
    /* The same checks as at the start; the keys must be ours, so the epochs under way go on. */
    handshake_install_chain(c, cert);
    idevs_err err = idevs_envelope_self_renewed(c->env);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "Certified (renewal): %s", idevs_strerror(err));
}

/* The envelope context, once our chain is installed, with every service as a peer. */
static void certified(compartment *c, const Idevs__Bridge__V1__Certified *cert)
{
    handshake_install_chain(c, cert);
    idevs_err err;
    idevs_envelope_options opts;
    idevs_envelope_options_default(&opts);
    opts.max_payload = c->dep->max_payload;
    /* Instances share the keys: their own instance numbers keep their epochs apart at every receiver. */
    opts.instance = c->instance;
    if ((err = idevs_envelope_ctx_new(c->self, c->policy, &opts, &c->env)) != IDEVS_OK)
        cmp_fatal(c, err, "cannot create the envelope context: %s", idevs_strerror(err));
    for (size_t k = 0; k < c->dep->service_count; k++) {
        const idevs_deployment_service *s = &c->dep->services[k];
        idevs_cert_info peer;
        err = idevs_envelope_add_peer(c->env, (const uint8_t *const *)c->service_der[k], c->service_der_len[k],
                                      c->service_chain_count[k], &peer);
        if (err == IDEVS_OK && !idevs_uuid_equal(&peer.uuid, &s->uuid))
            err = IDEVS_ERR_CONFIG;
        if (err == IDEVS_OK)
            err = idevs_envelope_allow_sender(c->env, &s->uuid);
        if (err != IDEVS_OK)
            cmp_fatal(c, err, "service '%s': %s", s->name, idevs_strerror(err));
    }
}

void handshake_clear(compartment *c)
{
    if (c->dep == NULL || c->service_chain_count == NULL)
        return;
    for (size_t k = 0; k < c->dep->service_count; k++)
        for (size_t j = 0; j < c->service_chain_count[k]; j++)
            free(c->service_der[k][j]);
    free(c->service_der);
    free(c->service_der_len);
    free(c->service_chain_count);
    c->service_der = NULL;
    c->service_der_len = NULL;
    c->service_chain_count = NULL;
}

/* The launcher's record of the message ids handled, per service: at most two streams each, the latest first. */
static void load_handled(compartment *c, const Idevs__Bridge__V1__Init *init)
{
    size_t n = c->dep->service_count;
    if ((c->handled = calloc(n > 0 ? n : 1, sizeof *c->handled)) == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < init->n_handled; i++) {
        const Idevs__Bridge__V1__HandledWindow *h = init->handled[i];
        if (h->service >= n || h->n_bits != IDEVS_REPLAY_WORDS)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.handled[%zu]: no such service, or a window of another size", i);
        idevs_handled *w = &c->handled[h->service];
        idevs_handled_stream *s = w->latest.used ? &w->previous : &w->latest;
        if (w->previous.used)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.handled[%zu]: more than two streams for a service", i);
        s->used = true;
        s->stream = h->stream;
        s->window.top = h->top;
        memcpy(s->window.bits, h->bits, sizeof s->window.bits);
        if (!idevs_handled_valid(w))
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.handled[%zu]: a stream twice for a service", i);
    }
}

void handshake_run(compartment *c)
{
    Idevs__Bridge__V1__Frame *f = receive(c, IDEVS__BRIDGE__V1__FRAME__BODY_INIT, "Init");
    const Idevs__Bridge__V1__Init *init = f->init;
    char why[256];
    idevs_err err = idevs_deployment_parse(init->descriptor.data, init->descriptor.len, &c->dep, why, sizeof why);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "deployment descriptor: %s", err == IDEVS_ERR_CONFIG ? why : idevs_strerror(err));
    /* The same bytes go to the logic process, which needs its names and configuration. */
    if ((c->descriptor = malloc(init->descriptor.len + 1)) == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    memcpy(c->descriptor, init->descriptor.data, init->descriptor.len);
    c->descriptor_len = init->descriptor.len;
    if (init->measurement.len != IDEVS_SHA256_LEN)
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.measurement: %zu bytes, expected %d", init->measurement.len,
                  IDEVS_SHA256_LEN);
    memcpy(c->measurement, init->measurement.data, IDEVS_SHA256_LEN);
    if (init->instance < init->instance_base || init->instance - init->instance_base >= c->dep->instances)
        cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.instance: %u, but the descriptor's process.instances is %u (%u to %u)",
                  init->instance, c->dep->instances, init->instance_base,
                  init->instance_base + (c->dep->instances - 1));
    c->instance = init->instance;
    /* The first instance of this broker's pool runs the timer from its start, unless another broker does. */
    c->timer_first = init->instance == init->instance_base && !init->timer_elsewhere;
    if (init->now_ms != 0) {
        uint64_t now = realtime_ms();
        uint64_t skew = now > init->now_ms ? now - init->now_ms : init->now_ms - now;
        if (skew > CLOCK_SKEW_MAX_MS)
            cmp_fatal(c, IDEVS_ERR_CONFIG, "Init.now_ms: the launcher's clock differs from ours by %llu ms",
                      (unsigned long long)skew);
    }
    check_operator_ca(c, &init->operator_ca);
    check_services(c, init);
    load_handled(c, init);
    certify_request(c, init);
    if (c->joining) /* kept for sealing the keys it will be granted (handshake_join), then cleansed */
        memcpy(c->join_sealing_key, init->sealing_key.data, sizeof c->join_sealing_key);
    /* The channel cleansed its buffer; cleanse protobuf-c's copy of the sealing key and blob too. */
    idevs_cleanse(f->init->sealing_key.data, f->init->sealing_key.len);
    idevs_cleanse(f->init->sealed_keys.data, f->init->sealed_keys.len);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);

    f = receive(c, IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED, "Certified");
    if (c->joining) {
        /* Certified for the temporary keys only: the rest comes in handshake_join, inside the sandbox. */
        handshake_install_chain(c, f->certified);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        return;
    }
    certified(c, f->certified);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    handshake_clear(c);
}

void handshake_join(compartment *c)
{
    /* The process's keys from another instance (join.c), sealed under this host's sealing key so that the next
     * start restores them, and certified as any instance's. Grants come from other hosts: they are read here,
     * in the sandbox. */
    join_wait(c);
    c->joining = false;
    send_certify_request(c, c->join_sealing_key, false);
    idevs_cleanse(c->join_sealing_key, sizeof c->join_sealing_key);
    Idevs__Bridge__V1__Frame *f = receive(c, IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED, "Certified");
    certified(c, f->certified);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    handshake_clear(c);
}
