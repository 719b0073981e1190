/* Sealing and opening (docs/PROTOCOL.md sections 3 to 5): the context, epochs and the orchestration of the
 * other envelope files. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "envelope_internal.h"

#define MS_PER_MINUTE 60000ull
#define DEFAULT_LIFETIME_MS (60 * MS_PER_MINUTE)
#define DEFAULT_GRACE_MS (5 * MS_PER_MINUTE)
#define DEFAULT_SKEW_MS (5 * MS_PER_MINUTE)
#define DEFAULT_MAX_MESSAGES (1ull << 32)
#define DEFAULT_MAX_PEERS 1024

void idevs_envelope_options_default(idevs_envelope_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->suite = IDEVS_SUITE_X25519_AES256GCM;
    opts->epoch_lifetime_ms = DEFAULT_LIFETIME_MS;
    opts->epoch_max_messages = DEFAULT_MAX_MESSAGES;
    opts->grace_ms = DEFAULT_GRACE_MS;
    opts->max_epoch_age_ms = DEFAULT_LIFETIME_MS + DEFAULT_GRACE_MS;
    opts->max_clock_skew_ms = DEFAULT_SKEW_MS;
    opts->max_payload = IDEVS_PAYLOAD_MAX_DEFAULT;
    opts->max_peers = DEFAULT_MAX_PEERS;
}

/* Zero fields take their defaults; max_epoch_age_ms 0 means lifetime + grace. */
static idevs_err normalize(const idevs_envelope_options *in, idevs_envelope_options *out)
{
    idevs_envelope_options d;
    idevs_envelope_options_default(&d);
    if (in == NULL) {
        *out = d;
        return IDEVS_OK;
    }
    *out = *in;
#define TAKE_DEFAULT(field) (out->field = out->field != 0 ? out->field : d.field)
    TAKE_DEFAULT(suite);
    TAKE_DEFAULT(epoch_lifetime_ms);
    TAKE_DEFAULT(epoch_max_messages);
    TAKE_DEFAULT(grace_ms);
    if (out->max_epoch_age_ms == 0) {
        out->max_epoch_age_ms = out->epoch_lifetime_ms + out->grace_ms;
        if (out->max_epoch_age_ms < out->epoch_lifetime_ms)
            out->max_epoch_age_ms = UINT64_MAX;
    }
    TAKE_DEFAULT(max_clock_skew_ms);
    TAKE_DEFAULT(max_payload);
    TAKE_DEFAULT(max_peers);
#undef TAKE_DEFAULT
    if (!idevs_env_suite_valid(out->suite) || out->max_payload > IDEVS_PAYLOAD_MAX_LIMIT ||
        out->max_peers > SIZE_MAX / sizeof(idevs_peer *))
        return IDEVS_ERR_INVALID_ARG;
    return IDEVS_OK;
}

size_t idevs_envelope_max_size(const idevs_envelope_options *opts)
{
    idevs_envelope_options o;
    if (normalize(opts, &o) != IDEVS_OK)
        idevs_envelope_options_default(&o);
    return o.max_payload + IDEVS_AEAD_TAG_LEN + (size_t)IDEVS_CHAIN_MAX * IDEVS_CERT_MAX + IDEVS_ENVELOPE_HEADROOM;
}

uint64_t idevs_env_now(const idevs_envelope_ctx *ctx)
{
    if (ctx->opts.clock_ms != NULL)
        return ctx->opts.clock_ms(ctx->opts.clock_arg);
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0)
        return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void chain_free(uint8_t **der, size_t *len, size_t *count)
{
    for (size_t i = 0; i < *count; i++) {
        free(der[i]);
        der[i] = NULL;
        len[i] = 0;
    }
    *count = 0;
}

/* A copy of the identity's current chain. */
static idevs_err copy_own_chain(const idevs_identity *self, uint8_t **der, size_t *len, size_t *count)
{
    size_t n = idevs_identity_chain_count(self);
    *count = 0;
    for (size_t i = 0; i < n && i < IDEVS_CHAIN_MAX; i++) {
        size_t l = 0;
        const uint8_t *d = idevs_identity_chain_der(self, i, &l);
        if (d == NULL || (der[i] = malloc(l)) == NULL) {
            chain_free(der, len, count);
            return d == NULL ? IDEVS_ERR_INVALID_ARG : IDEVS_ERR_NOMEM;
        }
        memcpy(der[i], d, l);
        len[i] = l;
        *count = i + 1;
    }
    return IDEVS_OK;
}

idevs_err idevs_envelope_ctx_new(const idevs_identity *self, const idevs_cert_policy *policy,
                                 const idevs_envelope_options *opts, idevs_envelope_ctx **out)
{
    if (self == NULL || policy == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    if (idevs_identity_chain_count(self) == 0 || idevs_identity_chain_count(self) > IDEVS_CHAIN_MAX)
        return IDEVS_ERR_INVALID_ARG;
    idevs_envelope_ctx *ctx = calloc(1, sizeof *ctx);
    if (ctx == NULL)
        return IDEVS_ERR_NOMEM;
    idevs_err err = normalize(opts, &ctx->opts);
    if (err == IDEVS_OK)
        err = idevs_identity_cert_digest(self, ctx->self_digest);
    if (err == IDEVS_OK)
        err = copy_own_chain(self, ctx->own_der, ctx->own_len, &ctx->own_count);
    if (err != IDEVS_OK) {
        free(ctx);
        return err;
    }
    ctx->self = self;
    ctx->policy = policy;
    ctx->id_pool_next = sizeof ctx->id_pool;
    idevs_peers_init(&ctx->peers, ctx->opts.max_peers);
    *out = ctx;
    return IDEVS_OK;
}

void idevs_envelope_ctx_free(idevs_envelope_ctx *ctx)
{
    if (ctx == NULL)
        return;
    idevs_peers_free(&ctx->peers);
    chain_free(ctx->own_der, ctx->own_len, &ctx->own_count);
    chain_free(ctx->former_der, ctx->former_len, &ctx->former_count);
    free(ctx->allowed);
    idevs_cleanse(ctx, sizeof *ctx);
    free(ctx);
}

void idevs_envelope_testing_set_random(idevs_envelope_ctx *ctx, idevs_envelope_testing_random_fn fn, void *arg)
{
    ctx->random_fn = fn;
    ctx->random_arg = fn != NULL ? arg : NULL;
}

static idevs_err random_bytes(const idevs_envelope_ctx *ctx, uint8_t *buf, size_t len)
{
    if (ctx->random_fn != NULL)
        return ctx->random_fn(ctx->random_arg, buf, len);
    return idevs_random(buf, len);
}

/* A fresh message id: from the test source when one is set, else from the pool. */
static idevs_err next_message_id(idevs_envelope_ctx *ctx, idevs_msgid *id)
{
    if (ctx->random_fn != NULL)
        return ctx->random_fn(ctx->random_arg, id->b, IDEVS_UUID_LEN);
    _Static_assert(sizeof ctx->id_pool % IDEVS_UUID_LEN == 0, "the pool holds whole ids");
    if (ctx->id_pool_next >= sizeof ctx->id_pool) {
        idevs_err err = idevs_random(ctx->id_pool, sizeof ctx->id_pool);
        if (err != IDEVS_OK)
            return err;
        ctx->id_pool_next = 0;
    }
    memcpy(id->b, ctx->id_pool + ctx->id_pool_next, IDEVS_UUID_LEN);
    idevs_cleanse(ctx->id_pool + ctx->id_pool_next, IDEVS_UUID_LEN);
    ctx->id_pool_next += IDEVS_UUID_LEN;
    return IDEVS_OK;
}

/* ---- peers and senders ---- */

static bool same_digest(const uint8_t a[IDEVS_SHA256_LEN], const uint8_t b[IDEVS_SHA256_LEN])
{
    return idevs_ct_equal(a, b, IDEVS_SHA256_LEN);
}

/* What a replaced peer hands on to the peer replacing it: epoch numbers only go up, for every instance. */
static void inherit(idevs_peer *fresh, const idevs_peer *old)
{
    fresh->epoch_floor = idevs_peer_epoch_high(old);
    fresh->send.epoch = old->send.epoch; /* inactive; the next sending epoch starts above it */
}

/* Whether a certificate certifies the keys a peer is known by. */
static bool same_keys(const idevs_peer *p, const idevs_cert_info *ci)
{
    return memcmp(p->info.sign_pub, ci->sign_pub, sizeof ci->sign_pub) == 0 &&
           memcmp(p->info.kex_pub, ci->kex_pub, sizeof ci->kex_pub) == 0;
}

/* The other certificate of p's keys with this digest; NULL when none. */
static idevs_same_keys_cert *other_cert(idevs_peer *p, const uint8_t digest[IDEVS_SHA256_LEN])
{
    for (size_t i = 0; i < p->other_count; i++)
        if (same_digest(p->others[i].digest, digest))
            return &p->others[i];
    return NULL;
}

/* Remembers a certificate of p's keys among the others: a known one takes the later notAfter; when all slots are
 * taken, the one expiring first gives way (among equals, the first remembered), unless it expires after this one. */
static void remember_other(idevs_peer *p, const uint8_t digest[IDEVS_SHA256_LEN], uint64_t not_after)
{
    idevs_same_keys_cert *slot = other_cert(p, digest);
    if (slot == NULL && p->other_count < IDEVS_SAME_KEYS_MAX)
        slot = &p->others[p->other_count++];
    if (slot == NULL) {
        slot = &p->others[0];
        for (size_t i = 1; i < p->other_count; i++)
            if (p->others[i].not_after_ms < slot->not_after_ms)
                slot = &p->others[i];
        if (slot->not_after_ms > not_after)
            return;
    }
    memcpy(slot->digest, digest, IDEVS_SHA256_LEN);
    slot->not_after_ms = not_after;
}

/* Another verified certificate of a peer's keys (a renewal, another instance's): the later-expiring one becomes (or
 * stays) the current one, the other is remembered among the others. The epochs, the static DH value and the epoch
 * floor stay. */
static void renew_peer(idevs_peer *p, const idevs_cert_info *ci, uint64_t not_after)
{
    if (same_digest(p->info.cert_digest, ci->cert_digest)) {
        p->info = *ci;
        p->not_after_ms = not_after;
    } else if (not_after >= p->not_after_ms) {
        remember_other(p, p->info.cert_digest, p->not_after_ms);
        idevs_same_keys_cert *was = other_cert(p, ci->cert_digest);
        if (was != NULL) /* the new current one is no longer an other */
            *was = p->others[--p->other_count];
        p->info = *ci;
        p->not_after_ms = not_after;
    } else {
        remember_other(p, ci->cert_digest, not_after);
    }
    p->info.evidence.hardware_report = NULL;
    p->info.evidence.hardware_report_len = 0;
}

/* digest names another certificate of the peer's keys, still valid at now. */
static bool other_valid(idevs_peer *p, const uint8_t digest[IDEVS_SHA256_LEN], uint64_t now)
{
    const idevs_same_keys_cert *o = other_cert(p, digest);
    return o != NULL && now < o->not_after_ms;
}

static idevs_err verify_chain(const idevs_envelope_ctx *ctx, const uint8_t *const *der, const size_t *der_len,
                              size_t count, uint64_t now, idevs_cert_info *info, uint64_t *not_after)
{
    idevs_err err = idevs_cert_verify(ctx->policy, der, der_len, count, info, NULL, 0);
    if (err == IDEVS_OK)
        err = idevs_env_chain_not_after(der, der_len, count, not_after);
    if (err == IDEVS_OK && now >= *not_after)
        err = IDEVS_ERR_CERT_EXPIRED;
    return err;
}

idevs_err idevs_envelope_add_peer(idevs_envelope_ctx *ctx, const uint8_t *const *der, const size_t *der_len,
                                  size_t count, idevs_cert_info *info)
{
    if (ctx == NULL || der == NULL || der_len == NULL || count == 0 || count > IDEVS_CHAIN_MAX)
        return IDEVS_ERR_INVALID_ARG;
    for (size_t i = 0; i < count; i++)
        if (der[i] == NULL || der_len[i] == 0 || der_len[i] > IDEVS_CERT_MAX)
            return IDEVS_ERR_INVALID_ARG;
    idevs_cert_info ci;
    uint64_t not_after = 0;
    idevs_err err = verify_chain(ctx, der, der_len, count, idevs_env_now(ctx), &ci, &not_after);
    if (err != IDEVS_OK)
        return err;
    ci.evidence.hardware_report = NULL;
    ci.evidence.hardware_report_len = 0;
    idevs_peer *old = idevs_peers_find(&ctx->peers, &ci.uuid);
    if (old != NULL && (same_digest(old->info.cert_digest, ci.cert_digest) || same_keys(old, &ci))) {
        renew_peer(old, &ci, not_after); /* the same certificate verified again, or a renewal: keep the epochs */
    } else {
        if (old == NULL && idevs_peers_full(&ctx->peers))
            return IDEVS_ERR_PEER_LIMIT;
        idevs_peer *p = idevs_peer_new(&ci, not_after);
        if (p == NULL)
            return IDEVS_ERR_NOMEM;
        if (old != NULL)
            inherit(p, old);
        err = idevs_peers_put(&ctx->peers, p);
        if (err != IDEVS_OK) {
            idevs_peer_free(p);
            return err;
        }
    }
    if (info != NULL)
        *info = ci;
    return IDEVS_OK;
}

idevs_err idevs_envelope_allow_sender(idevs_envelope_ctx *ctx, const idevs_uuid *sender)
{
    if (ctx == NULL || sender == NULL)
        return IDEVS_ERR_INVALID_ARG;
    size_t i = 0;
    while (i < ctx->allowed_count && memcmp(ctx->allowed[i].b, sender->b, IDEVS_UUID_LEN) < 0)
        i++;
    if (i < ctx->allowed_count && idevs_uuid_equal(&ctx->allowed[i], sender)) {
        ctx->restrict_senders = true;
        return IDEVS_OK;
    }
    if (ctx->allowed_count == ctx->allowed_cap) {
        size_t cap = ctx->allowed_cap == 0 ? 8 : ctx->allowed_cap * 2;
        idevs_uuid *n = realloc(ctx->allowed, cap * sizeof *n);
        if (n == NULL)
            return IDEVS_ERR_NOMEM;
        ctx->allowed = n;
        ctx->allowed_cap = cap;
    }
    memmove(&ctx->allowed[i + 1], &ctx->allowed[i], (ctx->allowed_count - i) * sizeof ctx->allowed[0]);
    ctx->allowed[i] = *sender;
    ctx->allowed_count++;
    ctx->restrict_senders = true;
    return IDEVS_OK;
}

static bool sender_allowed(const idevs_envelope_ctx *ctx, const idevs_uuid *sender)
{
    if (!ctx->restrict_senders)
        return true;
    size_t lo = 0, hi = ctx->allowed_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(ctx->allowed[mid].b, sender->b, IDEVS_UUID_LEN);
        if (c == 0)
            return true;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return false;
}

idevs_err idevs_envelope_self_renewed(idevs_envelope_ctx *ctx)
{
    if (ctx == NULL)
        return IDEVS_ERR_INVALID_ARG;
    uint8_t digest[IDEVS_SHA256_LEN];
    idevs_err err = idevs_identity_cert_digest(ctx->self, digest);
    if (err != IDEVS_OK)
        return err;
    if (same_digest(digest, ctx->self_digest))
        return IDEVS_OK; /* the same certificate again */
    uint8_t *der[IDEVS_CHAIN_MAX] = {NULL};
    size_t len[IDEVS_CHAIN_MAX] = {0}, count = 0;
    if ((err = copy_own_chain(ctx->self, der, len, &count)) != IDEVS_OK)
        return err;
    chain_free(ctx->former_der, ctx->former_len, &ctx->former_count);
    memcpy(ctx->former_der, ctx->own_der, sizeof ctx->former_der);
    memcpy(ctx->former_len, ctx->own_len, sizeof ctx->former_len);
    ctx->former_count = ctx->own_count;
    memcpy(ctx->former_digest, ctx->self_digest, IDEVS_SHA256_LEN);
    memcpy(ctx->own_der, der, sizeof ctx->own_der);
    memcpy(ctx->own_len, len, sizeof ctx->own_len);
    ctx->own_count = count;
    memcpy(ctx->self_digest, digest, IDEVS_SHA256_LEN);
    return IDEVS_OK;
}

void idevs_envelope_rotate(idevs_envelope_ctx *ctx)
{
    if (ctx != NULL)
        ctx->rotation++;
}

void idevs_envelope_get_stats(const idevs_envelope_ctx *ctx, idevs_envelope_stats *out)
{
    if (out == NULL)
        return;
    if (ctx == NULL) {
        memset(out, 0, sizeof *out);
        return;
    }
    *out = ctx->stats;
}

/* dh_s for peer: the cached value, or computed into out (and *computed set) without touching the peer. */
static idevs_err static_dh(const idevs_envelope_ctx *ctx, const idevs_peer *peer, uint8_t out[IDEVS_X25519_LEN],
                           bool *computed)
{
    *computed = false;
    if (peer->has_dh_s) {
        memcpy(out, peer->dh_s, IDEVS_X25519_LEN);
        return IDEVS_OK;
    }
    idevs_err err = idevs_x25519(idevs_identity_kex_key(ctx->self), peer->info.kex_pub, out);
    *computed = err == IDEVS_OK;
    return err;
}

static void cache_dh(idevs_peer *peer, const uint8_t dh_s[IDEVS_X25519_LEN])
{
    memcpy(peer->dh_s, dh_s, IDEVS_X25519_LEN);
    peer->has_dh_s = true;
}

/* ---- sealing ---- */

static idevs_err start_sending_epoch(idevs_envelope_ctx *ctx, idevs_peer *peer, uint64_t now)
{
    idevs_send_epoch e;
    memset(&e, 0, sizeof e);
    uint8_t e_priv[IDEVS_X25519_LEN], dh_e[IDEVS_X25519_LEN], dh_s[IDEVS_X25519_LEN];
    uint8_t offer[IDEVS_OFFER_LEN], key[IDEVS_KEY_LEN], base_nonce[IDEVS_NONCE_LEN];
    EVP_PKEY *ephemeral = NULL;
    bool computed = false;

    e.epoch = now > peer->send.epoch ? now : peer->send.epoch + 1;
    if (e.epoch == 0) /* the previous epoch number was UINT64_MAX */
        return IDEVS_ERR_SEQUENCE_EXHAUSTED;
    e.suite = ctx->opts.suite;
    e.started_ms = now;
    e.next_sequence = 1;
    e.generation = ctx->rotation;

    idevs_err err = random_bytes(ctx, e_priv, sizeof e_priv);
    if (err == IDEVS_OK)
        err = idevs_x25519_from_private(e_priv, &ephemeral, e.e_pub);
    idevs_cleanse(e_priv, sizeof e_priv);
    if (err == IDEVS_OK)
        err = idevs_x25519(ephemeral, peer->info.kex_pub, dh_e);
    EVP_PKEY_free(ephemeral); /* e_private is forgotten here (EVP_PKEY_free cleanses) */
    if (err != IDEVS_OK)
        goto out;
    err = static_dh(ctx, peer, dh_s, &computed);
    if (err != IDEVS_OK)
        goto out;
    idevs_env_offer(offer, e.suite, ctx->opts.instance, idevs_identity_uuid(ctx->self), &peer->info.uuid, e.epoch,
                    e.e_pub, peer->info.kex_pub, ctx->self_digest);
    err = idevs_ed25519_sign(idevs_identity_sign_key(ctx->self), offer, sizeof offer, e.signature);
    if (err == IDEVS_OK)
        err = idevs_env_derive(dh_e, dh_s, offer, key, base_nonce);
    if (err == IDEVS_OK)
        err = idevs_aead_init(&e.aead, e.suite, true, key, base_nonce);
    if (err == IDEVS_OK) {
        if (computed)
            cache_dh(peer, dh_s);
        idevs_send_epoch_clear(&peer->send);
        memcpy(e.leaf_digest, ctx->self_digest, IDEVS_SHA256_LEN);
        e.active = true;
        peer->send = e;
        ctx->stats.sending_epochs++;
    }
out:
    idevs_cleanse(dh_e, sizeof dh_e);
    idevs_cleanse(dh_s, sizeof dh_s);
    idevs_cleanse(key, sizeof key);
    idevs_cleanse(base_nonce, sizeof base_nonce);
    return err;
}

static bool sending_epoch_spent(const idevs_envelope_ctx *ctx, const idevs_send_epoch *e, uint64_t now)
{
    if (!e->active || e->generation != ctx->rotation)
        return true;
    /* Begun under a certificate of ours that is neither the current nor the former one (renewed twice). */
    if (!same_digest(e->leaf_digest, ctx->self_digest) &&
        (ctx->former_count == 0 || !same_digest(e->leaf_digest, ctx->former_digest)))
        return true;
    if (now >= e->started_ms && now - e->started_ms >= ctx->opts.epoch_lifetime_ms)
        return true;
    return e->next_sequence == 0 || e->next_sequence > ctx->opts.epoch_max_messages;
}

idevs_err idevs_envelope_seal(idevs_envelope_ctx *ctx, const idevs_seal_input *in, uint8_t **out, size_t *out_len,
                              idevs_msgid *message_id)
{
    size_t topic_len = 0;
    if (ctx == NULL || in == NULL || out == NULL || out_len == NULL || in->recipient == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    *out_len = 0;
    if (!idevs_env_topic_valid(in->topic, &topic_len))
        return IDEVS_ERR_INVALID_ARG;
    if (in->payload_len > ctx->opts.max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if ((in->payload == NULL && in->payload_len > 0) || in->provenance_count > IDEVS_PROVENANCE_MAX ||
        (in->provenance == NULL && in->provenance_count > 0))
        return IDEVS_ERR_INVALID_ARG;
    /* max_payload <= 16 MiB, so the framed length cannot overflow */
    size_t plain_len = 0;
    if (!idevs_env_padded_len(IDEVS_FRAME_FIXED + in->provenance_count * IDEVS_UUID_LEN + in->payload_len, in->pad,
                              &plain_len))
        return IDEVS_ERR_INVALID_ARG;
    idevs_peer *peer = idevs_peers_find(&ctx->peers, in->recipient);
    if (peer == NULL)
        return IDEVS_ERR_UNKNOWN_RECIPIENT;

    uint64_t now = idevs_env_now(ctx);
    /* Nothing is sealed to a certificate past its notAfter: the recipient's renewed one must come first. */
    if (now >= peer->not_after_ms)
        return IDEVS_ERR_CERT_EXPIRED;
    idevs_err err;
    if (sending_epoch_spent(ctx, &peer->send, now) && (err = start_sending_epoch(ctx, peer, now)) != IDEVS_OK)
        return err;
    idevs_send_epoch *e = &peer->send;

    idevs_env_header h;
    h.version = IDEVS_ENVELOPE_VERSION;
    h.suite = e->suite;
    h.instance = ctx->opts.instance;
    h.sender = *idevs_identity_uuid(ctx->self);
    h.recipient = peer->info.uuid;
    if (in->message_id != NULL)
        h.message_id = *in->message_id;
    else if ((err = next_message_id(ctx, &h.message_id)) != IDEVS_OK)
        return err;
    h.epoch = e->epoch;
    h.sequence = e->next_sequence;
    memcpy(h.ephemeral_key, e->e_pub, IDEVS_X25519_LEN);
    memcpy(h.epoch_signature, e->signature, IDEVS_ED25519_SIG_LEN);
    memcpy(h.leaf_digest, e->leaf_digest, IDEVS_SHA256_LEN);

    uint8_t aad[IDEVS_AAD_MAX];
    size_t aad_len = idevs_env_aad(aad, sizeof aad, &h, in->topic, topic_len);
    if (aad_len == 0)
        return IDEVS_ERR_INVALID_ARG;

    const uint8_t *chain[IDEVS_CHAIN_MAX];
    size_t chain_len[IDEVS_CHAIN_MAX], chain_count = 0;
    if (!same_digest(e->leaf_digest, ctx->self_digest)) {
        /* An epoch begun before our renewal: its certificate travels with each of its envelopes. */
        chain_count = ctx->former_count;
        for (size_t i = 0; i < chain_count; i++) {
            chain[i] = ctx->former_der[i];
            chain_len[i] = ctx->former_len[i];
        }
    } else if (h.sequence == 1) {
        chain_count = ctx->own_count;
        for (size_t i = 0; i < chain_count; i++) {
            chain[i] = ctx->own_der[i];
            chain_len[i] = ctx->own_len[i];
        }
    }
    uint8_t *buf = NULL, *ct = NULL;
    size_t buf_len = 0;
    err = idevs_env_encode(&h, chain, chain_len, chain_count, plain_len + IDEVS_AEAD_TAG_LEN, &buf, &buf_len, &ct);
    if (err != IDEVS_OK)
        return err;
    /* The plaintext is framed in the output and encrypted in place: no other copy of it to cleanse. */
    idevs_env_frame(ct, plain_len, in->provenance, in->provenance_count, in->payload, in->payload_len);
    err = idevs_aead_seal(&e->aead, h.sequence, aad, aad_len, ct, plain_len, ct);
    if (err != IDEVS_OK) {
        idevs_cleanse(buf, buf_len);
        free(buf);
        return err;
    }
    e->next_sequence++;
    ctx->stats.sealed++;
    if (message_id != NULL)
        *message_id = h.message_id;
    *out = buf;
    *out_len = buf_len;
    return IDEVS_OK;
}

/* ---- opening ---- */

static bool same_offer(const idevs_recv_epoch *e, const idevs_env_header *h)
{
    /* evaluate both comparisons: no early exit on the first difference */
    bool k = idevs_ct_equal(e->e_pub, h->ephemeral_key, IDEVS_X25519_LEN);
    bool s = idevs_ct_equal(e->signature, h->epoch_signature, IDEVS_ED25519_SIG_LEN);
    return k & s & (e->suite == h->suite);
}

/* Verifies a new offer and derives its receiving epoch into *e (not installed). */
static idevs_err accept_offer(idevs_envelope_ctx *ctx, const idevs_peer *keys, const idevs_env_header *h,
                              uint64_t now, idevs_recv_epoch *e, uint8_t dh_s[IDEVS_X25519_LEN], bool *dh_computed)
{
    if (now > h->epoch && now - h->epoch > ctx->opts.max_epoch_age_ms)
        return IDEVS_ERR_EPOCH_STALE;
    if (h->epoch > now && h->epoch - now > ctx->opts.max_clock_skew_ms)
        return IDEVS_ERR_EPOCH_FUTURE;
    uint8_t offer[IDEVS_OFFER_LEN], dh_e[IDEVS_X25519_LEN], key[IDEVS_KEY_LEN], base_nonce[IDEVS_NONCE_LEN];
    idevs_env_offer(offer, h->suite, h->instance, &h->sender, &h->recipient, h->epoch, h->ephemeral_key,
                    idevs_identity_kex_public(ctx->self), h->leaf_digest);
    if (idevs_ed25519_verify(keys->info.sign_pub, offer, sizeof offer, h->epoch_signature) != IDEVS_OK)
        return IDEVS_ERR_EPOCH_SIGNATURE;
    idevs_err err = idevs_x25519(idevs_identity_kex_key(ctx->self), h->ephemeral_key, dh_e);
    if (err == IDEVS_OK)
        err = static_dh(ctx, keys, dh_s, dh_computed);
    if (err == IDEVS_OK)
        err = idevs_env_derive(dh_e, dh_s, offer, key, base_nonce);
    memset(e, 0, sizeof *e);
    if (err == IDEVS_OK)
        err = idevs_aead_init(&e->aead, h->suite, false, key, base_nonce);
    if (err == IDEVS_OK) {
        e->active = true;
        e->epoch = h->epoch;
        e->suite = h->suite;
        memcpy(e->e_pub, h->ephemeral_key, IDEVS_X25519_LEN);
        memcpy(e->signature, h->epoch_signature, IDEVS_ED25519_SIG_LEN);
        idevs_replay_init(&e->window);
    }
    idevs_cleanse(dh_e, sizeof dh_e);
    idevs_cleanse(key, sizeof key);
    idevs_cleanse(base_nonce, sizeof base_nonce);
    return err;
}

typedef struct open_state {
    idevs_env_decoded d;
    idevs_peer *candidate;      /* a sender certificate from the chain, not yet installed */
    idevs_cert_info renewal;    /* another certificate of a known sender's keys, from the chain, not yet installed */
    uint64_t renewal_not_after;
    bool have_renewal;
    idevs_recv_epoch fresh;     /* a new receiving epoch, not yet installed */
    bool have_fresh;
    uint8_t dh_s[IDEVS_X25519_LEN];
    bool dh_computed;
    uint8_t *payload;   /* the plaintext, then (unframed) the payload at its start */
    size_t payload_len; /* the bytes of payload to cleanse: the whole plaintext until unframed */
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
} open_state;

static void open_state_clear(open_state *s)
{
    idevs_env_decoded_free(&s->d);
    idevs_peer_free(s->candidate);
    if (s->have_fresh)
        idevs_recv_epoch_clear(&s->fresh);
    if (s->payload != NULL) {
        idevs_cleanse(s->payload, s->payload_len);
        free(s->payload);
    }
    idevs_cleanse(s->dh_s, sizeof s->dh_s);
    memset(s, 0, sizeof *s);
}

static idevs_err open_envelope(idevs_envelope_ctx *ctx, const char *topic, const uint8_t *data, size_t len,
                               idevs_opened *out, open_state *s)
{
    size_t topic_len = 0;
    if (topic == NULL || (data == NULL && len > 0) || !idevs_env_topic_valid(topic, &topic_len))
        return IDEVS_ERR_INVALID_ARG;
    /* 1. size */
    if (len > idevs_envelope_max_size(&ctx->opts))
        return IDEVS_ERR_TOO_LARGE;
    /* 2-4. decoding, version, suite, field sizes */
    idevs_err err = idevs_env_decode(data, len, &s->d);
    if (err != IDEVS_OK)
        return err;
    idevs_env_header *h = &s->d.h;
    if (s->d.ciphertext_len - IDEVS_AEAD_TAG_LEN > ctx->opts.max_payload + IDEVS_FRAME_MAX_EXTRA)
        return IDEVS_ERR_TOO_LARGE;
    /* 5. recipient */
    if (!idevs_uuid_equal(&h->recipient, idevs_identity_uuid(ctx->self)))
        return IDEVS_ERR_WRONG_RECIPIENT;
    /* 6. allowed senders */
    if (!sender_allowed(ctx, &h->sender))
        return IDEVS_ERR_SENDER_NOT_ALLOWED;

    /* 7. sender certificate */
    uint64_t now = idevs_env_now(ctx);
    idevs_peer *peer = idevs_peers_find(&ctx->peers, &h->sender);
    if (s->d.chain_count > 0) {
        if ((err = idevs_sha256(s->d.chain[0], s->d.chain_len[0], h->leaf_digest)) != IDEVS_OK)
            return err;
        bool cached = peer != NULL && ((same_digest(peer->info.cert_digest, h->leaf_digest) && now < peer->not_after_ms) ||
                                       other_valid(peer, h->leaf_digest, now));
        if (!cached) {
            idevs_cert_info ci;
            uint64_t not_after = 0;
            err = verify_chain(ctx, s->d.chain, s->d.chain_len, s->d.chain_count, now, &ci, &not_after);
            if (err != IDEVS_OK)
                return err;
            if (!idevs_uuid_equal(&ci.uuid, &h->sender))
                return IDEVS_ERR_MALFORMED;
            if (peer != NULL && same_keys(peer, &ci)) {
                /* A renewal (or the certificate it renewed): the same keys, so the same epochs. */
                s->renewal = ci;
                s->renewal_not_after = not_after;
                s->have_renewal = true;
            } else {
                if (peer == NULL && idevs_peers_full(&ctx->peers))
                    return IDEVS_ERR_PEER_LIMIT;
                if ((s->candidate = idevs_peer_new(&ci, not_after)) == NULL)
                    return IDEVS_ERR_NOMEM;
                if (peer != NULL)
                    inherit(s->candidate, peer);
            }
        }
    } else {
        if (peer == NULL)
            return IDEVS_ERR_UNKNOWN_SENDER;
        if (same_digest(peer->info.cert_digest, h->leaf_digest)) {
            if (now >= peer->not_after_ms)
                return IDEVS_ERR_CERT_EXPIRED;
        } else if (other_cert(peer, h->leaf_digest) != NULL) {
            if (!other_valid(peer, h->leaf_digest, now))
                return IDEVS_ERR_CERT_EXPIRED;
        } else {
            return IDEVS_ERR_CERT_DIGEST_MISMATCH;
        }
    }

    /* 8. epoch, among those of the sender's instance (section 5a). With a new certificate for a known sender, only
     * a new offer above all its epochs is acceptable. */
    idevs_peer *known = s->candidate != NULL ? s->candidate : peer; /* keys and epoch floor to use */
    idevs_instance_epochs *slot = idevs_peer_instance(known, h->instance);
    const idevs_instance_epochs *old = s->candidate != NULL && peer != NULL ? idevs_peer_instance(peer, h->instance)
                                                                            : NULL;
    /* Room for a new instance now, so that installing its epoch below cannot fail (nor move slot, taken after). */
    if (slot == NULL && (err = idevs_peer_instance_reserve(known)) != IDEVS_OK)
        return err;
    idevs_recv_epoch *e = NULL;
    if (s->candidate == NULL && slot != NULL && h->epoch == slot->cur.epoch) {
        if (!same_offer(&slot->cur, h))
            return IDEVS_ERR_EPOCH_CONFLICT;
        e = &slot->cur;
    } else if (s->candidate == NULL && slot != NULL && slot->prev.active && h->epoch == slot->prev.epoch) {
        if (!same_offer(&slot->prev, h))
            return IDEVS_ERR_EPOCH_CONFLICT;
        if (now >= slot->prev.replaced_ms && now - slot->prev.replaced_ms >= ctx->opts.grace_ms)
            return IDEVS_ERR_EPOCH_EXPIRED;
        e = &slot->prev;
    } else if (old != NULL && (h->epoch == old->cur.epoch || (old->prev.active && h->epoch == old->prev.epoch))) {
        return IDEVS_ERR_EPOCH_CONFLICT; /* same epoch number offered under another certificate */
    } else if ((slot != NULL && h->epoch < slot->cur.epoch) ||
               (known->epoch_floor != 0 && h->epoch <= known->epoch_floor) ||
               (slot == NULL && known->instance_floor != 0 && h->epoch <= known->instance_floor)) {
        return IDEVS_ERR_EPOCH_EXPIRED;
    } else {
        err = accept_offer(ctx, known, h, now, &s->fresh, s->dh_s, &s->dh_computed);
        if (err != IDEVS_OK)
            return err;
        s->have_fresh = true;
        e = &s->fresh;
    }

    /* 9. replay window */
    if ((err = idevs_replay_check(&e->window, h->sequence)) != IDEVS_OK)
        return err;

    /* 10. AEAD */
    uint8_t aad[IDEVS_AAD_MAX];
    size_t aad_len = idevs_env_aad(aad, sizeof aad, h, topic, topic_len);
    if (aad_len == 0)
        return IDEVS_ERR_MALFORMED;
    s->payload_len = s->d.ciphertext_len - IDEVS_AEAD_TAG_LEN;
    if ((s->payload = malloc(s->payload_len + 1)) == NULL)
        return IDEVS_ERR_NOMEM;
    if ((err = idevs_aead_open(&e->aead, h->sequence, aad, aad_len, s->d.ciphertext, s->d.ciphertext_len,
                               s->payload)) != IDEVS_OK)
        return err;

    /* 11. framing and padding; the payload moves to the start of the buffer, the rest is zeroed */
    size_t plain_len = s->payload_len;
    if ((err = idevs_env_unframe(s->payload, plain_len, ctx->opts.max_payload, s->provenance, &s->provenance_count,
                                 &s->payload_len)) != IDEVS_OK) {
        s->payload_len = plain_len; /* zeroed already; cleansed again on the way out */
        return err;
    }
    s->payload[s->payload_len] = 0;

    /* 12. only now change state (nothing below fails but the insertion of a new peer, before any other change) */
    if (s->candidate != NULL) {
        if ((err = idevs_peers_put(&ctx->peers, s->candidate)) != IDEVS_OK)
            return err;
        peer = s->candidate; /* the table owns it now and freed the one it replaced */
        s->candidate = NULL;
    }
    if (s->have_renewal)
        renew_peer(peer, &s->renewal, s->renewal_not_after);
    if (s->have_fresh) {
        if (slot == NULL)
            slot = idevs_peer_instance_add(peer, h->instance); /* reserved above: never NULL */
        idevs_recv_epoch_clear(&slot->prev);
        if (slot->cur.active) {
            slot->prev = slot->cur;
            slot->prev.replaced_ms = now;
        }
        slot->cur = s->fresh;
        memset(&s->fresh, 0, sizeof s->fresh);
        s->have_fresh = false;
        e = &slot->cur;
        ctx->stats.receiving_epochs++;
    }
    if (s->dh_computed && !peer->has_dh_s)
        cache_dh(peer, s->dh_s);
    (void)idevs_replay_accept(&e->window, h->sequence);

    out->sender = h->sender;
    out->instance = h->instance;
    out->message_id = h->message_id;
    out->epoch = h->epoch;
    out->sequence = h->sequence;
    memcpy(out->provenance, s->provenance, s->provenance_count * sizeof s->provenance[0]);
    out->provenance_count = s->provenance_count;
    out->payload = s->payload;
    out->payload_len = s->payload_len;
    s->payload = NULL;
    return IDEVS_OK;
}

idevs_err idevs_envelope_open(idevs_envelope_ctx *ctx, const char *topic, const uint8_t *data, size_t len,
                              idevs_opened *out)
{
    if (ctx == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    memset(out, 0, sizeof *out);
    open_state s;
    memset(&s, 0, sizeof s);
    idevs_err err = open_envelope(ctx, topic, data, len, out, &s);
    open_state_clear(&s);
    if (err == IDEVS_OK)
        ctx->stats.opened++;
    else if ((unsigned)err < IDEVS_ERR_COUNT)
        ctx->stats.rejected[err]++;
    return err;
}

void idevs_opened_clear(idevs_opened *opened)
{
    if (opened == NULL)
        return;
    if (opened->payload != NULL) {
        idevs_cleanse(opened->payload, opened->payload_len);
        free(opened->payload);
    }
    idevs_cleanse(opened, sizeof *opened);
}
