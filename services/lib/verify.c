/* Fetching and verifying what the plugin retains for a process: its certificate chain (PEM) on
 * idevs/<process>/certificate and its deployment descriptor (the file's bytes) on idevs/<process>/descriptor.
 *
 * A pair is accepted, in this order, when:
 *   1. the descriptor parses (idevs_deployment_parse)                                  else config
 *   2. it describes the process asked for (process.name)                                else program_mismatch
 *   3. the caller's own pins hold: "program UUID", "descriptor-digest HEX" / "descriptor FILE"
 *                                                              else program_mismatch, descriptor_mismatch
 *   4. its operator_ca_sha256 is the SHA-256 of this service's operator CA DER          else cert_untrusted
 *   5. this service's UUID is among its services                                        else sender_not_allowed
 *   6. the certificate is a PEM chain of 1..4 certificates and nothing else (idevs_cert_read_chain_pem)
 *                                                              else cert_malformed, too_large
 *   7. idevs_cert_verify under: the operator CA, evidence required, expected program = process.uuid,
 *      expected descriptor digest = SHA-256 of the retained bytes, and the caller's settings
 *                                                              else that check's own error
 * Then the compartment becomes the only sender accepted and the only recipient sealed to; a new descriptor
 * (another digest) also brings a new envelope context and new subscriptions. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_hex.h"
#include "service_internal.h"


/* Sentences about a retained message may quote it (a descriptor's unknown key, a certificate's name): every
 * byte outside printable ASCII becomes '?', so that what the callers print or log cannot carry a line break,
 * a terminal escape or a forged line. */
static void printable_only(char *s)
{
    for (; *s != '\0'; s++)
        if ((unsigned char)*s < 0x20 || (unsigned char)*s > 0x7e)
            *s = '?';
}

static void short_hex(const uint8_t *b, char out[17])
{
    idevs_hex_encode(b, 8, out);
}

idevs_err svc_policy_setup(idevs_service *svc, const char *const *settings, char *why, size_t why_len)
{
    svc->policy = idevs_cert_policy_new();
    if (svc->policy == NULL)
        return IDEVS_ERR_NOMEM;
    idevs_err err = idevs_cert_policy_add_ca_file(svc->policy, svc->operator_ca);
    if (err != IDEVS_OK) {
        return idevs_fail(why, why_len, err, "operator CA %s: %s", svc->operator_ca, idevs_strerror(err));
    }
    idevs_cert_policy_require_evidence(svc->policy, true);
    for (size_t i = 0; settings != NULL && settings[i] != NULL; i++) {
        const char *s = settings[i];
        char name[64];
        const char *eq = strchr(s, '=');
        size_t n = eq != NULL ? (size_t)(eq - s) : strlen(s);
        if (n == 0 || n >= sizeof name) {
            return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "policy setting '%s' is not a setting name", s);
        }
        memcpy(name, s, n);
        name[n] = '\0';
        const char *value = eq != NULL ? eq + 1 : NULL;
        bool takes_value = false;
        if (!idevs_cert_policy_is_setting(name, &takes_value)) {
            return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "policy setting '%s' is unknown (known: allow-process-backend-insecure, "
                              "allow-debug-insecure, allow-backend=NAME, measurement=HEX, descriptor-digest=HEX, "
                              "descriptor=FILE, program=UUID, nonce=HEX, require-evidence)", name);
        }
        if (takes_value != (value != NULL)) {
            return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, takes_value ? "policy setting '%s' needs a value: %s=VALUE"
                                          : "policy setting '%s' takes no value", name, name);
        }
        if (strcmp(name, "ca") == 0) {
            return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "policy setting 'ca': the compartment's chain must lead to the operator CA given as "
                              "operator_ca (--ca), and to nothing else");
        }
        /* The program and the descriptor digest are set per verification from the retained descriptor, so
         * the caller's pins on them are checked separately (verify_pair). */
        if (strcmp(name, "program") == 0) {
            if (idevs_uuid_parse(value, &svc->pinned_program) != IDEVS_OK) {
                return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "policy setting 'program': '%s' is not a UUID", value);
            }
            svc->pin_program = true;
            continue;
        }
        if (strcmp(name, "descriptor-digest") == 0) {
            if (!idevs_hex_decode(value, svc->pinned_descriptor, IDEVS_SHA256_LEN)) {
                return idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "policy setting 'descriptor-digest': needs 64 hex digits");
            }
            svc->pin_descriptor = true;
            continue;
        }
        if (strcmp(name, "descriptor") == 0) {
            if (idevs_sha256_file(value, svc->pinned_descriptor) != IDEVS_OK) {
                return idevs_fail(why, why_len, IDEVS_ERR_IO, "policy setting 'descriptor': cannot read %s", value);
            }
            svc->pin_descriptor = true;
            continue;
        }
        char inner[256];
        err = idevs_cert_policy_apply(svc->policy, name, value, inner, sizeof inner);
        if (err != IDEVS_OK) {
            return idevs_fail(why, why_len, err, "policy setting '%s': %s", name, inner);
        }
    }
    return IDEVS_OK;
}

void svc_on_retained(idevs_service *svc, bool certificate, const uint8_t *data, size_t len)
{
    if (len == 0)
        return; /* a cleared retained message: wait for the next one */
    size_t limit = certificate ? SVC_CERT_PEM_MAX : IDEVS_DEPLOYMENT_MAX_BYTES;
    if (len > limit) {
        svc->failure = certificate ? IDEVS_ERR_TOO_LARGE : IDEVS_ERR_CONFIG;
        svc_set_why(svc, "the retained %s on %s is %zu bytes, at most %zu", certificate ? "certificate" : "descriptor",
                    certificate ? svc->certificate_topic : svc->descriptor_topic, len, limit);
        svc->ready = false;
        return;
    }
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
        svc->failure = IDEVS_ERR_NOMEM;
        svc_set_why(svc, "out of memory for the retained %s", certificate ? "certificate" : "descriptor");
        return;
    }
    memcpy(copy, data, len);
    if (certificate) {
        free(svc->pending_cert);
        svc->pending_cert = copy;
        svc->pending_cert_len = len;
        svc->have_cert = true;
    } else {
        free(svc->pending_descriptor);
        svc->pending_descriptor = copy;
        svc->pending_descriptor_len = len;
        svc->have_descriptor = true;
    }
    svc_try_verify(svc);
}

/* Sets the policy's expectations to those of deployment d (NULL: none). */
static void expect(idevs_service *svc, const idevs_deployment *d)
{
    idevs_cert_policy_expect_program(svc->policy, d != NULL ? &d->program : NULL);
    idevs_cert_policy_expect_descriptor(svc->policy, d != NULL ? d->digest : NULL);
}

typedef struct candidate {
    idevs_deployment *d;
    size_t self_index;
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t der_len[IDEVS_CHAIN_MAX];
    size_t count;
    idevs_cert_info info;
} candidate;

static void candidate_free(candidate *c)
{
    idevs_deployment_free(c->d);
    idevs_cert_chain_free(c->der, c->count);
    memset(c, 0, sizeof *c);
}

static idevs_err verify_pair(idevs_service *svc, candidate *c, char *why, size_t why_len)
{
    char inner[SVC_WHY_MAX - 128];
    const char *dt = svc->descriptor_topic, *ct = svc->certificate_topic;
    idevs_err err = idevs_deployment_parse(svc->pending_descriptor, svc->pending_descriptor_len, &c->d, inner,
                                           sizeof inner);
    if (err != IDEVS_OK) {
        return idevs_fail(why, why_len, err, "the retained descriptor on %s is not a valid deployment descriptor: %s", dt, inner);
    }
    const idevs_deployment *d = c->d;
    char a[IDEVS_UUID_STR_LEN], b[IDEVS_UUID_STR_LEN], ha[17], hb[17];
    if (strcmp(d->name, svc->process) != 0) {
        return idevs_fail(why, why_len, IDEVS_ERR_PROGRAM_MISMATCH, "the descriptor on %s describes process '%s', not '%s'", dt, d->name, svc->process);
    }
    if (svc->pin_program && !idevs_uuid_equal(&svc->pinned_program, &d->program)) {
        idevs_uuid_format(&d->program, a);
        idevs_uuid_format(&svc->pinned_program, b);
        return idevs_fail(why, why_len, IDEVS_ERR_PROGRAM_MISMATCH, "the descriptor on %s names program %s, the policy expects program %s", dt, a, b);
    }
    if (svc->pin_descriptor && !idevs_ct_equal(svc->pinned_descriptor, d->digest, IDEVS_SHA256_LEN)) {
        short_hex(d->digest, ha);
        short_hex(svc->pinned_descriptor, hb);
        return idevs_fail(why, why_len, IDEVS_ERR_DESCRIPTOR_MISMATCH, "the descriptor on %s has digest %s..., the policy expects descriptor digest %s...", dt, ha,
            hb);
    }
    if (!idevs_ct_equal(d->operator_ca_sha256, svc->operator_ca_sha256, IDEVS_SHA256_LEN)) {
        short_hex(d->operator_ca_sha256, ha);
        short_hex(svc->operator_ca_sha256, hb);
        return idevs_fail(why, why_len, IDEVS_ERR_CERT_UNTRUSTED, "the descriptor on %s pins operator CA %s... (operator_ca_sha256), this service's operator "
                          "CA %s is %s...: they are different operators", dt, ha, svc->operator_ca, hb);
    }
    const idevs_uuid *me = idevs_identity_uuid(svc->self);
    size_t i = 0;
    while (i < d->service_count && !idevs_uuid_equal(&d->services[i].uuid, me))
        i++;
    if (i == d->service_count) {
        idevs_uuid_format(me, a);
        return idevs_fail(why, why_len, IDEVS_ERR_SENDER_NOT_ALLOWED, "this service ('%s', urn:uuid:%s) is not among the services of process '%s' (%s)",
            idevs_identity_name(svc->self), a, d->name, dt);
    }
    c->self_index = i;
    err = idevs_cert_read_chain_pem((const char *)svc->pending_cert, svc->pending_cert_len, c->der, c->der_len,
                                    IDEVS_CHAIN_MAX, &c->count, inner, sizeof inner);
    if (err != IDEVS_OK) {
        return idevs_fail(why, why_len, err, "the retained certificate on %s is not a PEM chain of 1 to %d certificates (%s): %s", ct,
            IDEVS_CHAIN_MAX, idevs_err_name(err), inner);
    }
    expect(svc, d);
    err = idevs_cert_verify(svc->policy, (const uint8_t *const *)c->der, c->der_len, c->count, &c->info, inner,
                            sizeof inner);
    if (err != IDEVS_OK) {
        idevs_fail(why, why_len, err, "the compartment's certificate on %s is refused (%s): %s", ct, idevs_err_name(err), inner);
        expect(svc, svc->deployment);
    }
    return err;
}

/* This service's outputs and requests in d, and the QoS each is declared with. */
static idevs_err subscriptions_of(const idevs_deployment *d, size_t self, char ***out, int **out_qos, size_t *count)
{
    size_t n = 0;
    bool sends = false; /* inputs or answers: then its receipts too */
    for (size_t i = 0; i < d->output_count; i++)
        n += d->outputs[i].to == self;
    for (size_t i = 0; i < d->request_count; i++) {
        n += d->requests[i].to == self;
        sends |= d->requests[i].to == self;
    }
    for (size_t i = 0; i < d->input_count; i++)
        sends |= d->inputs[i].from == self;
    sends &= d->services[self].receipts;
    n += sends;
    char **subs = calloc(n > 0 ? n : 1, sizeof *subs); /* a service that only sends has none */
    int *qos = calloc(n > 0 ? n : 1, sizeof *qos);
    if (subs == NULL || qos == NULL) {
        free(subs);
        free(qos);
        return IDEVS_ERR_NOMEM;
    }
    size_t k = 0;
    bool ok = true;
    for (size_t i = 0; i < d->output_count; i++)
        if (d->outputs[i].to == self) {
            qos[k] = d->outputs[i].qos;
            ok &= (subs[k++] = strdup(d->outputs[i].topic)) != NULL;
        }
    for (size_t i = 0; i < d->request_count; i++)
        if (d->requests[i].to == self) {
            qos[k] = d->requests[i].qos;
            ok &= (subs[k++] = strdup(d->requests[i].topic)) != NULL;
        }
    if (sends) {
        qos[k] = 1;
        ok &= (subs[k++] = strdup(d->services[self].receipt_topic)) != NULL;
    }
    if (!ok) {
        svc_topics_free(subs, n);
        free(qos);
        return IDEVS_ERR_NOMEM;
    }
    *out = subs;
    *out_qos = qos;
    *count = n;
    return IDEVS_OK;
}

/* Topics of old that new lacks: unsubscribed after a redeployment. */
static void unsubscribe_gone(idevs_service *svc, char **old, size_t old_count)
{
    for (size_t i = 0; i < old_count; i++) {
        bool kept = false;
        for (size_t j = 0; !kept && j < svc->subscription_count; j++)
            kept = strcmp(old[i], svc->subscriptions[j]) == 0;
        if (!kept && svc->conn == SVC_CONNECTED)
            mosquitto_unsubscribe(svc->mosq, NULL, old[i]);
    }
}

void svc_on_instance_certificate(idevs_service *svc, const uint8_t *data, size_t len)
{
    if (svc->ctx == NULL || svc->deployment == NULL || len == 0 || len > SVC_CERT_PEM_MAX)
        return; /* verified first through the process's own topic; an instance's then adds to it */
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t der_len[IDEVS_CHAIN_MAX], count = 0;
    char inner[256];
    if (idevs_cert_read_chain_pem((const char *)data, len, der, der_len, IDEVS_CHAIN_MAX, &count, inner,
                                  sizeof inner) != IDEVS_OK)
        return;
    idevs_cert_info info;
    /* The same policy as the process's certificate (measurement, descriptor digest, backend); the same keys, or
     * add_peer would take it for a replacement of the process: such a chain is ignored. */
    if (idevs_cert_verify(svc->policy, (const uint8_t *const *)der, der_len, count, &info, inner, sizeof inner) ==
            IDEVS_OK &&
        idevs_uuid_equal(&info.uuid, &svc->deployment->program) &&
        memcmp(info.sign_pub, svc->peer.sign_pub, sizeof info.sign_pub) == 0 &&
        memcmp(info.kex_pub, svc->peer.kex_pub, sizeof info.kex_pub) == 0)
        (void)idevs_envelope_add_peer(svc->ctx, (const uint8_t *const *)der, der_len, count, NULL);
    idevs_cert_chain_free(der, count);
}

static idevs_err new_context(idevs_service *svc, const candidate *c, idevs_envelope_ctx **out)
{
    idevs_envelope_options opts;
    idevs_envelope_options_default(&opts);
    opts.max_payload = c->d->max_payload;
    idevs_envelope_ctx *ctx;
    idevs_err err = idevs_envelope_ctx_new(svc->self, svc->policy, &opts, &ctx);
    if (err != IDEVS_OK)
        return err;
    err = idevs_envelope_allow_sender(ctx, &c->d->program);
    if (err == IDEVS_OK)
        err = idevs_envelope_add_peer(ctx, (const uint8_t *const *)c->der, c->der_len, c->count, NULL);
    if (err != IDEVS_OK) {
        idevs_envelope_ctx_free(ctx);
        return err;
    }
    *out = ctx;
    return IDEVS_OK;
}

/* Makes candidate c the verified deployment and compartment. */
static idevs_err install(idevs_service *svc, candidate *c)
{
    bool same_descriptor = svc->deployment != NULL && svc->descriptor_len == svc->pending_descriptor_len &&
                           memcmp(svc->descriptor_bytes, svc->pending_descriptor, svc->descriptor_len) == 0;
    bool same_cert = svc->deployment != NULL &&
                     memcmp(svc->peer.cert_digest, c->info.cert_digest, IDEVS_SHA256_LEN) == 0;
    uint8_t *cert_copy = malloc(svc->pending_cert_len);
    uint8_t *desc_copy = same_descriptor ? NULL : malloc(svc->pending_descriptor_len);
    if (cert_copy == NULL || (!same_descriptor && desc_copy == NULL)) {
        free(cert_copy);
        free(desc_copy);
        return IDEVS_ERR_NOMEM;
    }
    memcpy(cert_copy, svc->pending_cert, svc->pending_cert_len);
    if (same_descriptor) {
        if (!same_cert) {
            /* A renewal (the same keys, docs/CERTIFICATES.md "Renewal") replaces the certificate and keeps the
             * epochs: nothing is held or sealed again. A compartment restarted with other keys replaces the
             * peer and resets the epochs, so the next envelope sealed to it starts a new epoch and carries this
             * service's chain again. */
            idevs_err err = idevs_envelope_add_peer(svc->ctx, (const uint8_t *const *)c->der, c->der_len, c->count,
                                                    NULL);
            if (err != IDEVS_OK) {
                free(cert_copy);
                return err;
            }
        }
    } else {
        idevs_envelope_ctx *ctx;
        char **subs;
        int *sub_qos;
        size_t sub_count;
        idevs_err err = new_context(svc, c, &ctx);
        if (err == IDEVS_OK) {
            err = subscriptions_of(c->d, c->self_index, &subs, &sub_qos, &sub_count);
            if (err != IDEVS_OK)
                idevs_envelope_ctx_free(ctx);
        }
        if (err != IDEVS_OK) {
            free(cert_copy);
            free(desc_copy);
            return err;
        }
        memcpy(desc_copy, svc->pending_descriptor, svc->pending_descriptor_len);
        idevs_envelope_ctx_free(svc->ctx);
        svc->ctx = ctx;
        idevs_deployment_free(svc->deployment);
        svc->deployment = c->d;
        c->d = NULL;
        free(svc->descriptor_bytes);
        svc->descriptor_bytes = desc_copy;
        svc->descriptor_len = svc->pending_descriptor_len;
        svc->self_index = c->self_index;
        char **old = svc->subscriptions;
        int *old_qos = svc->subscription_qos;
        size_t old_count = svc->subscription_count;
        svc->subscriptions = subs;
        svc->subscription_qos = sub_qos;
        svc->subscription_count = sub_count;
        /* old is NULL before the first verification: then every topic is new on this connection. */
        static char *const none[1] = {NULL};
        svc_subscribe(svc, old != NULL ? old : none, old_qos, old_count);
        unsubscribe_gone(svc, old, old_count);
        svc_topics_free(old, old_count);
        free(old_qos);
    }
    free(svc->cert_pem);
    svc->cert_pem = cert_copy;
    svc->cert_pem_len = svc->pending_cert_len;
    if (!same_cert)
        svc->certificates_verified++;
    svc->peer = c->info;
    return IDEVS_OK;
}

void svc_try_verify(idevs_service *svc)
{
    if (!svc->have_cert || !svc->have_descriptor || svc->stopped)
        return;
    bool unchanged = svc->deployment != NULL && svc->cert_pem_len == svc->pending_cert_len &&
                     memcmp(svc->cert_pem, svc->pending_cert, svc->cert_pem_len) == 0 &&
                     svc->descriptor_len == svc->pending_descriptor_len &&
                     memcmp(svc->descriptor_bytes, svc->pending_descriptor, svc->descriptor_len) == 0;
    if (!unchanged) {
        candidate c;
        memset(&c, 0, sizeof c);
        char why[SVC_WHY_MAX];
        idevs_err err = verify_pair(svc, &c, why, sizeof why);
        if (err == IDEVS_OK) {
            err = install(svc, &c);
            if (err != IDEVS_OK) {
                snprintf(why, sizeof why, "cannot install the verified compartment of process '%s': %s",
                         svc->process, idevs_strerror(err));
                expect(svc, svc->deployment);
            }
        }
        candidate_free(&c);
        if (err != IDEVS_OK) {
            svc->failure = err;
            printable_only(why);
            snprintf(svc->why, sizeof svc->why, "%s", why);
            svc->ready = false;
            return;
        }
    }
    svc->ready = svc->conn == SVC_CONNECTED;
    if (svc->ready) {
        svc_release_held(svc);
        /* A new connection or compartment: what was in flight may be lost, and goes again now. */
        svc_outbox_resend_all(svc);
    }
}

void svc_verified_free(idevs_service *svc)
{
    idevs_envelope_ctx_free(svc->ctx);
    svc->ctx = NULL;
    idevs_deployment_free(svc->deployment);
    svc->deployment = NULL;
    free(svc->descriptor_bytes);
    svc->descriptor_bytes = NULL;
    free(svc->cert_pem);
    svc->cert_pem = NULL;
    svc_topics_free(svc->subscriptions, svc->subscription_count);
    svc->subscriptions = NULL;
    free(svc->subscription_qos);
    svc->subscription_qos = NULL;
    svc->subscription_count = 0;
    svc_topics_free(svc->sent_topics, svc->sent_count);
    svc->sent_topics = NULL;
    svc->sent_count = 0;
    memset(svc->sent_first, 0, sizeof svc->sent_first);
    memset(svc->subscribe_mid, 0, sizeof svc->subscribe_mid); /* a late SUBACK finds no topics to name */
}
