/* Certification: Init carries everything the compartment needs to check its deployment and recover its keys;
 * the CertifyRequest answers with its public keys and its keys sealed for the next start; the launcher persists
 * the blob, asks the backend for evidence bound to those keys, has the attestation authority sign the
 * compartment certificate and sends it back. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <limits.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "launcher_internal.h"

#define CERT_LEN_MAX IDEVS_CERT_MAX

static uint64_t realtime_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

idevs_err certify_prepare(idevs_launcher *l, certify_secrets *s, char *why, size_t why_len)
{
    memset(s, 0, sizeof *s);
    idevs_err err = idevs_backend_sealing_key(l->backend, &l->image, s->sealing_key, why, why_len);
    if (err != IDEVS_OK)
        return err;
    err = launcher_blob_read(l->state_dirfd, &l->program, &s->blob, &s->blob_len, why, why_len);
    if (err != IDEVS_OK)
        certify_secrets_clear(s);
    return err;
}

void certify_secrets_clear(certify_secrets *s)
{
    idevs_cleanse(s->sealing_key, sizeof s->sealing_key);
    free(s->blob);
    s->blob = NULL;
    s->blob_len = 0;
}

idevs_err certify_send_init(launcher_instance *c, const certify_secrets *secrets, char *why, size_t why_len)
{
    idevs_launcher *l = c->l;
    idevs_err err = IDEVS_OK;
    Idevs__Bridge__V1__ServiceCertificate *svc = calloc(l->service_count ? l->service_count : 1, sizeof *svc);
    Idevs__Bridge__V1__ServiceCertificate **svcp = calloc(l->service_count ? l->service_count : 1, sizeof *svcp);
    ProtobufCBinaryData *chains = calloc(l->service_count * IDEVS_CHAIN_MAX + 1, sizeof *chains);
    if (svc == NULL || svcp == NULL || chains == NULL) {
        err = IDEVS_ERR_NOMEM;
        goto done;
    }
    for (size_t i = 0; i < l->service_count; i++) {
        idevs__bridge__v1__service_certificate__init(&svc[i]);
        svc[i].name = l->services[i].name;
        svc[i].n_chain = l->services[i].chain.count;
        svc[i].chain = &chains[i * IDEVS_CHAIN_MAX];
        for (size_t j = 0; j < l->services[i].chain.count; j++) {
            svc[i].chain[j].data = l->services[i].chain.der[j];
            svc[i].chain[j].len = l->services[i].chain.len[j];
        }
        svcp[i] = &svc[i];
    }
    Idevs__Bridge__V1__Init init = IDEVS__BRIDGE__V1__INIT__INIT;
    init.descriptor.data = l->descriptor;
    init.descriptor.len = l->descriptor_len;
    init.operator_ca.data = l->operator_ca_der;
    init.operator_ca.len = l->operator_ca_len;
    init.n_services = l->service_count;
    init.services = svcp;
    init.sealing_key.data = (uint8_t *)secrets->sealing_key;
    init.sealing_key.len = sizeof secrets->sealing_key;
    init.sealed_keys.data = secrets->blob;
    init.sealed_keys.len = secrets->blob_len;
    init.measurement.data = l->image.measurement;
    init.measurement.len = IDEVS_SHA256_LEN;
    init.now_ms = realtime_ms();
    init.instance = c->number;
    init.instance_base = l->cfg.instance_base;
    init.timer_elsewhere = !l->runs_timer;
    c->timer_on = c->index == 0 && l->runs_timer; /* what the compartment does from its start */
    init.join = l->cfg.join;
    Idevs__Bridge__V1__HandledWindow handled[2 * IDEVS_DEPLOYMENT_MAX_ENTRIES], *handled_ptrs[2 * IDEVS_DEPLOYMENT_MAX_ENTRIES];
    init.handled = handled_ptrs;
    for (size_t i = 0; i < l->deployment->service_count && i < IDEVS_DEPLOYMENT_MAX_ENTRIES; i++) {
        const idevs_handled_stream *w[2] = {&l->replay.senders[i].handled.latest,
                                            &l->replay.senders[i].handled.previous};
        for (int k = 0; k < 2 && w[k]->used; k++) {
            Idevs__Bridge__V1__HandledWindow *h = &handled[init.n_handled];
            idevs__bridge__v1__handled_window__init(h);
            h->service = (uint32_t)i;
            h->stream = w[k]->stream;
            h->top = w[k]->window.top;
            h->n_bits = IDEVS_REPLAY_WORDS;
            h->bits = (uint64_t *)w[k]->window.bits;
            handled_ptrs[init.n_handled++] = h;
        }
    }
    Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
    frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_INIT;
    frame.init = &init;
    err = supervise_send(c, &frame);
    if (err != IDEVS_OK)
        snprintf(why, why_len, "sending Init failed: %s", idevs_strerror(err));
    c->blob_sent = secrets->blob_len > 0;
done:
    free(svc);
    free(svcp);
    free(chains);
    return err;
}

/* A certificate's notBefore or notAfter as seconds since 1970; 0 when it cannot be read. */
static time_t cert_time(const ASN1_TIME *t)
{
    struct tm tm;
    return t != NULL && ASN1_TIME_to_tm(t, &tm) == 1 ? timegm(&tm) : 0;
}

/* Fresh evidence for the keys, and a certificate for them (not_before 0: now), DER in *der. On success the
 * launcher remembers the keys, notBefore and notAfter, and when the renewal is due. */
static idevs_err issue(launcher_instance *c, const uint8_t sign_pub[IDEVS_ED25519_PUB_LEN],
                       const uint8_t kex_pub[IDEVS_X25519_LEN], time_t not_before, uint8_t **der, size_t *der_len,
                       char *why, size_t why_len)
{
    idevs_launcher *l = c->l;
    uint8_t binding[IDEVS_SHA256_LEN];
    idevs_evidence ev;
    idevs_identity *subject = NULL;
    X509 *cert = NULL;
    idevs_err err;
    *der = NULL;
    *der_len = 0;
    if ((err = idevs_key_binding(sign_pub, kex_pub, binding)) != IDEVS_OK) {
        snprintf(why, why_len, "computing the key binding failed");
        goto done;
    }
    /* New evidence each time: a new nonce and issue time, as for a start. */
    if ((err = idevs_backend_evidence(l->backend, &l->image, &l->program, binding, &ev, why, why_len)) != IDEVS_OK)
        goto done;
    if ((err = idevs_identity_from_public(&l->program, l->name, sign_pub, kex_pub, &subject)) != IDEVS_OK) {
        snprintf(why, why_len, "its public keys are not usable: %s", idevs_strerror(err));
        goto done;
    }
    if ((err = idevs_cert_renew_compartment(l->authority, l->authority_cert, subject, &ev,
                                            l->cfg.certificate_validity_s, not_before, &cert)) != IDEVS_OK) {
        snprintf(why, why_len, "issuing its certificate failed: %s", idevs_strerror(err));
        goto done;
    }
    if ((err = idevs_cert_to_der(cert, der, der_len)) != IDEVS_OK || *der_len > CERT_LEN_MAX) {
        err = err != IDEVS_OK ? err : IDEVS_ERR_TOO_LARGE;
        snprintf(why, why_len, "encoding its certificate failed");
        free(*der);
        *der = NULL;
        goto done;
    }
    memcpy(c->certified_sign_pub, sign_pub, IDEVS_ED25519_PUB_LEN);
    memcpy(c->certified_kex_pub, kex_pub, IDEVS_X25519_LEN);
    c->cert_not_before = cert_time(X509_get0_notBefore(cert));
    c->certificate_not_after = (int64_t)cert_time(X509_get0_notAfter(cert));
    l->stats.certificate_not_after = c->certificate_not_after;
    c->renew_at = time(NULL) + (time_t)l->cfg.certificate_renew_after_s;
    c->renew_check_ms = launcher_now_ms() + CERTIFY_RENEW_CHECK_MS;
done:
    X509_free(cert);
    idevs_identity_free(subject);
    return err;
}

/* Sends the chain of leaf der and the authority's certificate to the compartment and makes it the current one;
 * takes der. */
static idevs_err send_chain(launcher_instance *c, uint8_t *der, size_t der_len, char *why, size_t why_len)
{
    idevs_launcher *l = c->l;
    uint8_t *authority = malloc(l->authority_der_len);
    if (authority == NULL) {
        free(der);
        snprintf(why, why_len, "out of memory");
        return IDEVS_ERR_NOMEM;
    }
    memcpy(authority, l->authority_der, l->authority_der_len);
    ProtobufCBinaryData chain[2] = {{der_len, der}, {l->authority_der_len, l->authority_der}};
    Idevs__Bridge__V1__Certified certified = IDEVS__BRIDGE__V1__CERTIFIED__INIT;
    certified.n_chain = 2;
    certified.chain = chain;
    Idevs__Bridge__V1__Frame frame = IDEVS__BRIDGE__V1__FRAME__INIT;
    frame.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED;
    frame.certified = &certified;
    idevs_err err = supervise_send(c, &frame);
    if (err != IDEVS_OK) {
        snprintf(why, why_len, "sending its certificate failed: %s", idevs_strerror(err));
        free(der);
        free(authority);
        return err;
    }
    idevs_der_chain_clear(&c->chain);
    c->chain.der[0] = der;
    c->chain.len[0] = der_len;
    c->chain.der[1] = authority;
    c->chain.len[1] = l->authority_der_len;
    c->chain.count = 2;
    if (idevs_sha256(der, der_len, c->cert_digest) != IDEVS_OK)
        memset(c->cert_digest, 0, sizeof c->cert_digest); /* unlike any copy's: they are sealed anew */
    l->stats.certified++;
    return IDEVS_OK;
}

/* The chain just sent becomes the joiner's temporary one: never the process's, so never published as it. */
static void keep_as_join_chain(launcher_instance *c)
{
    idevs_der_chain_clear(&c->join_chain);
    c->join_chain = c->chain;
    memset(&c->chain, 0, sizeof c->chain);
    memset(c->cert_digest, 0, sizeof c->cert_digest);
    c->renew_at = 0; /* certify_join_renew's business */
    c->join_renew_ms = launcher_now_ms() + JOIN_RENEW_MS;
}

static idevs_err certify_joiner(launcher_instance *c, const Idevs__Bridge__V1__CertifyRequest *req, char *why,
                                size_t why_len)
{
    if (!c->l->cfg.join || req->sealed_keys.len != 0 || req->keys_restored) {
        snprintf(why, why_len, "it asked to join, which this launcher did not start it for, or with sealed keys");
        return IDEVS_ERR_FRAME;
    }
    uint8_t *der = NULL;
    size_t der_len = 0;
    idevs_err err = issue(c, req->sign_public.data, req->kex_public.data, 0, &der, &der_len, why, why_len);
    if (err == IDEVS_OK)
        err = send_chain(c, der, der_len, why, why_len);
    if (err == IDEVS_OK)
        keep_as_join_chain(c);
    return err;
}

idevs_err certify_join_renew(launcher_instance *c, char *why, size_t why_len)
{
    /* The same temporary keys, new evidence; send_chain makes it c->chain for a moment, and it moves back. */
    idevs_der_chain kept = c->join_chain;
    memset(&c->join_chain, 0, sizeof c->join_chain);
    uint8_t *der = NULL;
    size_t der_len = 0;
    idevs_err err = issue(c, c->certified_sign_pub, c->certified_kex_pub, 0, &der, &der_len, why, why_len);
    if (err == IDEVS_OK)
        err = send_chain(c, der, der_len, why, why_len);
    if (err == IDEVS_OK) {
        idevs_der_chain_clear(&kept);
        keep_as_join_chain(c);
    } else {
        c->join_chain = kept;
        c->join_renew_ms = launcher_now_ms() + CERTIFY_RENEW_CHECK_MS;
    }
    return err;
}

idevs_err certify_handle_request(launcher_instance *c, const Idevs__Bridge__V1__CertifyRequest *req, char *why,
                                 size_t why_len)
{
    idevs_launcher *l = c->l;
    if (req->sign_public.len != IDEVS_ED25519_PUB_LEN || req->kex_public.len != IDEVS_X25519_LEN ||
        req->sign_public.data == NULL || req->kex_public.data == NULL) {
        snprintf(why, why_len, "its certificate request has public keys of the wrong size");
        return IDEVS_ERR_FRAME;
    }
    if (req->joining) /* temporary keys: nothing to persist, no other instance to agree with (join.c) */
        return certify_joiner(c, req, why, why_len);
    if (req->sealed_keys.len == 0 || req->sealed_keys.len > IDEVS_SEALED_BLOB_MAX) {
        snprintf(why, why_len, "its certificate request has sealed keys of %zu bytes, not 1..%u",
                 req->sealed_keys.len, IDEVS_SEALED_BLOB_MAX);
        return IDEVS_ERR_FRAME;
    }
    /* Fresh keys are persisted first: a certificate for keys that would not survive a restart is not issued.
     * Keys restored from the blob this launcher read and sent are in the state directory already, intact: that
     * blob stays as it is (the compartment's new one only differs by its nonce), so a full or read-only state
     * directory never stops a compartment whose keys are intact from starting again. */
    idevs_err err = IDEVS_OK;
    if (!(c->blob_sent && req->keys_restored)) {
        err = launcher_blob_write(l->state_dirfd, &l->program, req->sealed_keys.data, req->sealed_keys.len, why,
                                  why_len);
        if (err != IDEVS_OK)
            return err;
    }

    /* Every instance holds the process's keys (from the same sealed blob): one with others would be another
     * identity under the same program UUID, which receivers would take for a replacement of the process. */
    for (size_t i = 0; i < l->instance_count; i++) {
        const launcher_instance *o = &l->instances[i];
        if (o != c && o->chain.count > 0 &&
            (memcmp(o->certified_sign_pub, req->sign_public.data, IDEVS_ED25519_PUB_LEN) != 0 ||
             memcmp(o->certified_kex_pub, req->kex_public.data, IDEVS_X25519_LEN) != 0)) {
            snprintf(why, why_len, "its keys are not those of instance %u, which runs", o->number);
            return IDEVS_ERR_KEY_BINDING_MISMATCH;
        }
    }
    uint8_t *der = NULL;
    size_t der_len = 0;
    if ((err = issue(c, req->sign_public.data, req->kex_public.data, 0, &der, &der_len, why, why_len)) != IDEVS_OK)
        return err;
    if ((err = send_chain(c, der, der_len, why, why_len)) != IDEVS_OK)
        return err;
    l->stats.last_keys_restored = req->keys_restored;
    if (c->blob_sent && !req->keys_restored && c->state != IDEVS_LAUNCHER_JOINING)
        launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE,
                       "got fresh keys: the sealed keys in the state directory were made under another "
                       "measurement or are damaged, and were replaced");
    return IDEVS_OK;
}

int certify_renew_if_due(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    if (c->state != IDEVS_LAUNCHER_READY || c->renew_at == 0 || launcher_now_ms() < c->renew_check_ms)
        return 0;
    c->renew_check_ms = launcher_now_ms() + CERTIFY_RENEW_CHECK_MS;
    time_t now = time(NULL);
    if (now < c->renew_at)
        return 0;
    char why[256] = "";
    uint8_t *der = NULL;
    size_t der_len = 0;
    int64_t old_not_after = c->certificate_not_after;
    idevs_err err = issue(c, c->certified_sign_pub, c->certified_kex_pub, c->cert_not_before, &der, &der_len, why,
                          sizeof why);
    if (err == IDEVS_OK)
        err = send_chain(c, der, der_len, why, sizeof why);
    if (err != IDEVS_OK) {
        c->certificate_not_after = old_not_after;
        c->renew_at = now + CERTIFY_RENEW_RETRY_S;
        l->stats.renew_failed++;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                       "renewing its certificate (valid until %lld) failed, tried again in %d s: %s",
                       (long long)old_not_after, CERTIFY_RENEW_RETRY_S, why);
        return 1;
    }
    l->stats.renewed++;
    char until[32] = "?";
    time_t na = (time_t)c->certificate_not_after;
    struct tm tm;
    if (gmtime_r(&na, &tm) != NULL)
        strftime(until, sizeof until, "%Y-%m-%dT%H:%M:%SZ", &tm);
    launcher_event(l, IDEVS_LAUNCHER_EVENT_RENEWED,
                   "%scertificate renewed for the same keys, valid until %s (renewal %llu); the next is due in %u s",
                   pool_label(c), until, (unsigned long long)l->stats.renewed, l->cfg.certificate_renew_after_s);
    return 1;
}

void certify_forget(launcher_instance *c)
{
    idevs_der_chain_clear(&c->chain);
    idevs_der_chain_clear(&c->join_chain);
    memset(c->cert_digest, 0, sizeof c->cert_digest);
    c->renew_at = 0; /* the next compartment gets its own certificate, and its own renewal */
}

static char *chain_pem(const idevs_der_chain *chain, size_t *len)
{
    if (len != NULL)
        *len = 0;
    if (chain == NULL || len == NULL || chain->count == 0)
        return NULL;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return NULL;
    bool ok = true;
    for (size_t i = 0; ok && i < chain->count; i++) {
        const unsigned char *q = chain->der[i];
        X509 *x = chain->len[i] <= LONG_MAX ? d2i_X509(NULL, &q, (long)chain->len[i]) : NULL;
        ok = x != NULL && PEM_write_bio_X509(bio, x) == 1;
        X509_free(x);
    }
    char *data = NULL;
    long n = ok ? BIO_get_mem_data(bio, &data) : 0;
    char *copy = n > 0 ? malloc((size_t)n) : NULL;
    if (copy != NULL) {
        memcpy(copy, data, (size_t)n);
        *len = (size_t)n;
    }
    BIO_free(bio);
    ERR_clear_error();
    return copy;
}

char *idevs_launcher_chain_pem(const idevs_launcher *l, size_t *len)
{
    const launcher_instance *c = pool_chain_holder(l);
    return chain_pem(c != NULL ? &c->chain : NULL, len);
}

char *idevs_launcher_instance_chain_pem(const idevs_launcher *l, size_t instance, size_t *len)
{
    return chain_pem(l != NULL && instance < l->instance_count ? &l->instances[instance].chain : NULL, len);
}
