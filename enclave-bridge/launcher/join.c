/* Joining, the launcher's side (docs/SCALING.md, "Several brokers"): a launcher configured to join whose compartment
 * found no sealed keys it could open has it certified for temporary keys (certify.c keeps that chain apart, so it
 * is never published as the process's), refuses inputs meanwhile, and publishes a JoinRequest with that chain on
 * idevs/<process>/join/request, again after JOIN_RETRY_FIRST_MS doubling up to JOIN_RETRY_MAX_MS, until a grant
 * arrives for its key binding. A launcher whose instances hold the keys passes a request to one ready instance
 * and publishes its grant on idevs/<process>/join/grant/<hex of the joiner's key binding>. The launcher reads
 * neither message: the compartments (compartment/join.c) verify everything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_cert.h"
#include "idevs_hex.h"
#include "launcher_internal.h"

#define BINDING_HEX (2 * IDEVS_SHA256_LEN)

idevs_err join_init(idevs_launcher *l)
{
    size_t n = strlen("idevs/") + strlen(l->name) + strlen("/join/request") + 1; /* the longer of the two */
    l->join_request_topic = malloc(n);
    l->join_grant_prefix = malloc(n);
    if (l->join_request_topic == NULL || l->join_grant_prefix == NULL)
        return IDEVS_ERR_NOMEM;
    snprintf(l->join_request_topic, n, "idevs/%s/join/request", l->name);
    snprintf(l->join_grant_prefix, n, "idevs/%s/join/grant/", l->name);
    return IDEVS_OK;
}

void join_free(idevs_launcher *l)
{
    free(l->join_request_topic);
    free(l->join_grant_prefix);
    l->join_request_topic = l->join_grant_prefix = NULL;
}

static launcher_instance *joiner(const idevs_launcher *l)
{
    for (size_t i = 0; l->joining && i < l->instance_count; i++)
        if (l->instances[i].state == IDEVS_LAUNCHER_JOINING && l->instances[i].join_chain.count > 0)
            return &l->instances[i];
    return NULL;
}

void join_began(launcher_instance *c, bool temporary)
{
    idevs_launcher *l = c->l;
    if (temporary) {
        /* certified for temporary keys: ask at once */
        l->joining = true;
        l->join_next_ms = 0;
        l->join_backoff_ms = JOIN_RETRY_FIRST_MS;
        if (!l->join_others)
            launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "%sjoining: no sealed keys here open; asking a running "
                           "instance for the process's keys on '%s' (inputs are refused until then)", pool_label(c),
                           l->join_request_topic);
        l->join_others = true;
    } else if (c->state == IDEVS_LAUNCHER_JOINING) {
        /* certified for the keys it was granted: an ordinary instance from now on */
        l->joining = false;
        c->start_deadline_ms = launcher_now_ms() + l->cfg.start_timeout_ms; /* Ready comes as after a start */
        idevs_der_chain_clear(&c->join_chain);
    }
    l->stats.join_waiting = l->joining;
}

void join_done(launcher_instance *c)
{
    idevs_launcher *l = c->l;
    if (!l->join_others || l->joining)
        return;
    l->join_others = false;
    int64_t now = launcher_now_ms();
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *o = &l->instances[i];
        if (o != c && o->state == IDEVS_LAUNCHER_STOPPED && !l->stopping) {
            o->state = IDEVS_LAUNCHER_BACKOFF; /* started by the next pass, from the blob the joiner left */
            o->restart_at_ms = now;
        }
    }
}

int64_t join_deadline(const idevs_launcher *l)
{
    const launcher_instance *c = joiner(l);
    if (c == NULL)
        return -1;
    return l->join_next_ms < c->join_renew_ms ? l->join_next_ms : c->join_renew_ms;
}

static void publish(const idevs_launcher_callbacks *cb, const char *topic, const uint8_t *data,
                    size_t len)
{
    idevs_launcher_publish p;
    memset(&p, 0, sizeof p);
    p.topic = topic;
    p.envelope = data;
    p.envelope_len = len;
    p.qos = 1;
    cb->on_publish(cb->arg, &p);
}

int join_step(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    launcher_instance *c = joiner(l);
    if (c == NULL || cb == NULL || cb->on_publish == NULL)
        return 0;
    int64_t now = launcher_now_ms();
    int work = 0;
    if (now >= c->join_renew_ms) {
        char why[256] = "";
        if (certify_join_renew(c, why, sizeof why) != IDEVS_OK)
            launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "%scertifying the temporary keys of the join anew "
                           "failed, tried again in %d s: %s", pool_label(c), CERTIFY_RENEW_CHECK_MS / 1000, why);
        work++;
    }
    if (now < l->join_next_ms)
        return work;
    ProtobufCBinaryData chain[IDEVS_CHAIN_MAX];
    for (size_t i = 0; i < c->join_chain.count; i++)
        chain[i] = (ProtobufCBinaryData){c->join_chain.len[i], c->join_chain.der[i]};
    Idevs__Bridge__V1__JoinRequest r = IDEVS__BRIDGE__V1__JOIN_REQUEST__INIT;
    r.n_chain = c->join_chain.count;
    r.chain = chain;
    size_t len = idevs__bridge__v1__join_request__get_packed_size(&r);
    uint8_t *packed = len <= IDEVS_JOIN_MESSAGE_MAX ? malloc(len) : NULL;
    if (packed != NULL) {
        idevs__bridge__v1__join_request__pack(&r, packed);
        publish(cb, l->join_request_topic, packed, len);
        free(packed);
        l->stats.join_requests++;
    }
    l->join_next_ms = now + l->join_backoff_ms;
    l->join_backoff_ms = l->join_backoff_ms > JOIN_RETRY_MAX_MS / 2 ? JOIN_RETRY_MAX_MS : l->join_backoff_ms * 2;
    return work + 1;
}

static char *grant_topic(const idevs_launcher *l, const uint8_t binding[IDEVS_SHA256_LEN])
{
    size_t n = strlen(l->join_grant_prefix) + BINDING_HEX + 1;
    char *t = malloc(n);
    if (t != NULL) {
        memcpy(t, l->join_grant_prefix, strlen(l->join_grant_prefix));
        idevs_hex_encode(binding, IDEVS_SHA256_LEN, t + strlen(l->join_grant_prefix));
        t[n - 1] = '\0';
    }
    return t;
}

void join_answer(launcher_instance *c, const Idevs__Bridge__V1__JoinAnswer *a, const idevs_launcher_callbacks *cb)
{
    idevs_launcher *l = c->l;
    char reason[LAUNCHER_REASON_MAX + 1];
    supervise_sanitize(reason, sizeof reason, a->reason);
    if (a->as_joiner) {
        if (a->status != IDEVS_OK) {
            l->stats.join_grants_refused++;
            launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "%srefused a grant of the process's keys: %s",
                           pool_label(c), reason);
            return;
        }
        l->stats.joined++;
        char when[32] = "?", digest[17] = "?";
        time_t at = (time_t)a->grantor_issued_at;
        struct tm tm;
        if (gmtime_r(&at, &tm) != NULL)
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        if (a->grantor_cert.len == IDEVS_SHA256_LEN)
            idevs_hex_encode(a->grantor_cert.data, 8, digest);
        launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "%sjoined; keys granted by an instance certified with "
                       "evidence of %s (certificate sha256 %s...), sealed here for the next start",
                       pool_label(c), when, digest);
        return;
    }
    l->join_check_ms = 0;
    if (a->status != IDEVS_OK) {
        l->stats.joins_refused++;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "%srefused a join: %s", pool_label(c), reason);
        return;
    }
    char *topic = a->joiner.len == IDEVS_SHA256_LEN && a->grant.len > 0 && a->grant.len <= IDEVS_JOIN_MESSAGE_MAX
                      ? grant_topic(l, a->joiner.data)
                      : NULL;
    if (topic == NULL || cb == NULL || cb->on_publish == NULL) {
        free(topic);
        l->stats.protocol_errors += topic == NULL;
        return; /* without callbacks (a blocking stop): the joiner asks again */
    }
    publish(cb, topic, a->grant.data, a->grant.len);
    l->stats.joins_granted++;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "%sgranted the process's keys to a joining instance on '%s'",
                   pool_label(c), topic);
    free(topic);
}

static idevs_err pass(launcher_instance *c, const Idevs__Bridge__V1__Frame *f)
{
    idevs_err err = supervise_send(c, f);
    if (err == IDEVS_OK) {
        (void)supervise_flush(c, 0);
        supervise_update_channel_events(c);
        supervise_arm_timer(c->l);
    }
    return err;
}

idevs_err idevs_launcher_set_join(idevs_launcher *l, bool join)
{
    if (l == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (l->started)
        return IDEVS_ERR_NOT_NOW;
    l->cfg.join = join;
    return IDEVS_OK;
}

idevs_err idevs_launcher_join_message(idevs_launcher *l, const char *topic, const uint8_t *payload, size_t len)
{
    if (l == NULL || topic == NULL || (payload == NULL && len > 0))
        return IDEVS_ERR_INVALID_ARG;
    size_t prefix = strlen(l->join_grant_prefix);
    bool request = strcmp(topic, l->join_request_topic) == 0;
    bool grant = !request && strncmp(topic, l->join_grant_prefix, prefix) == 0;
    if (!request && !grant)
        return IDEVS_ERR_UNKNOWN_INPUT;
    idevs_err err = IDEVS_OK;
    launcher_instance *c = NULL;
    if (!l->started || l->stopping)
        err = IDEVS_ERR_NOT_NOW;
    else if (len == 0 || len > IDEVS_JOIN_MESSAGE_MAX)
        err = IDEVS_ERR_TOO_LARGE;
    else if (request && l->joining)
        err = IDEVS_ERR_JOINING;             /* it holds no keys to give */
    else if (request && ((l->join_check_ms != 0 && launcher_now_ms() - l->join_check_ms < JOIN_CHECK_MS) ||
                         (c = pool_ready(l)) == NULL))
        err = IDEVS_ERR_NOT_NOW;             /* one check at a time; the joiner asks again */
    else if (grant && (c = joiner(l)) == NULL)
        err = IDEVS_ERR_NOT_NOW;             /* nothing here waits for keys */
    if (err == IDEVS_OK && grant) {
        uint8_t binding[IDEVS_SHA256_LEN];
        char hex[BINDING_HEX + 1];
        if (idevs_key_binding(c->certified_sign_pub, c->certified_kex_pub, binding) != IDEVS_OK)
            err = IDEVS_ERR_CRYPTO;
        else {
            idevs_hex_encode(binding, sizeof binding, hex);
            if (strcmp(topic + prefix, hex) != 0)
                err = IDEVS_ERR_WRONG_RECIPIENT; /* another joiner's */
        }
    }
    if (err == IDEVS_OK) {
        Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
        Idevs__Bridge__V1__JoinCheck check = IDEVS__BRIDGE__V1__JOIN_CHECK__INIT;
        Idevs__Bridge__V1__JoinOffer offer = IDEVS__BRIDGE__V1__JOIN_OFFER__INIT;
        if (request) {
            check.request = (ProtobufCBinaryData){len, (uint8_t *)payload};
            f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_CHECK;
            f.join_check = &check;
        } else {
            offer.grant = (ProtobufCBinaryData){len, (uint8_t *)payload};
            f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_OFFER;
            f.join_offer = &offer;
        }
        err = pass(c, &f);
        if (err == IDEVS_OK && request)
            l->join_check_ms = launcher_now_ms();
    }
    if (err != IDEVS_OK)
        l->stats.join_ignored++;
    return err;
}
