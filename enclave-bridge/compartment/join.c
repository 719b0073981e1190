/* Joining: one key pair for every host (docs/SCALING.md, "Several brokers"). A compartment whose sealed keys do not
 * open and that was started to join (Init.join) is certified for temporary keys, which nobody sees but other
 * instances of the process, and waits here for a grant of the process's keys; a ready compartment checks a
 * joiner's request and grants them. Each side verifies the other's chain under one policy (join_policy): the
 * operator CA, evidence of this compartment's measurement, descriptor, program and backend, no debug flag; the
 * joiner's evidence must also be fresh (JOIN_FRESH_S). The keys travel encrypted to the joiner's certified X25519
 * key (bridge.proto, JoinGrant):
 *
 *   info   = "idevs join v1" || program (16) || joiner's key binding (32) || grantor's key binding (32)
 *   key (32) || nonce (12) = HKDF-SHA256(ikm = X25519(ephemeral, joiner), salt = ephemeral public, info)
 *   sealed = AES-256-GCM(key, nonce, aad = info, Ed25519 seed || X25519 private) || tag (16)
 *
 * The joiner takes the keys only when their public halves give exactly the key binding the grantor's certificate
 * certifies: a grantor can only hand over the keys it is certified for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "compartment.h"

#define LABEL "idevs join v1"
#define INFO_LEN (sizeof LABEL - 1 + IDEVS_UUID_LEN + 2 * IDEVS_SHA256_LEN)
#define SECRET_LEN (IDEVS_ED25519_SEED_LEN + IDEVS_X25519_LEN)
#define SEALED_LEN (SECRET_LEN + KEYS_GCM_TAG_LEN)
#define JOIN_SKEW_S 60 /* a joiner's evidence issued this far in the future (another host's clock) still counts */

/* The policy both sides verify the other under: what this compartment's own certificate says it is. */
static idevs_cert_policy *join_policy(compartment *c)
{
    idevs_cert_policy *p = idevs_cert_policy_new();
    if (p == NULL)
        return NULL;
    idevs_cert_policy_require_evidence(p, true);
    if (c->backend == IDEVS_BACKEND_PROCESS)
        idevs_cert_policy_allow_process_backend_insecure(p);
    else if (idevs_cert_policy_allow_backend(p, c->backend) != IDEVS_OK)
        goto fail;
    idevs_cert_policy_expect_descriptor(p, c->dep->digest);
    idevs_cert_policy_expect_program(p, &c->dep->program);
    if (idevs_cert_policy_add_ca(p, c->operator_ca) != IDEVS_OK ||
        idevs_cert_policy_add_measurement(p, c->measurement) != IDEVS_OK)
        goto fail;
    return p;
fail:
    idevs_cert_policy_free(p);
    return NULL;
}

/* Verifies another instance's chain; its key binding in binding. why says why not (never key material). */
static idevs_err verify_peer(compartment *c, const ProtobufCBinaryData *chain, size_t n, idevs_cert_info *info,
                             uint8_t binding[IDEVS_SHA256_LEN], char *why, size_t why_len)
{
    if (n == 0 || n > IDEVS_CHAIN_MAX) {
        snprintf(why, why_len, "a chain of %zu certificates, expected 1 to %d", n, IDEVS_CHAIN_MAX);
        return IDEVS_ERR_CERT_MALFORMED;
    }
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    for (size_t i = 0; i < n; i++) {
        if (chain[i].len == 0 || chain[i].len > IDEVS_CERT_MAX) {
            snprintf(why, why_len, "certificate %zu of %zu bytes, expected 1 to %d", i, chain[i].len, IDEVS_CERT_MAX);
            return IDEVS_ERR_CERT_MALFORMED;
        }
        der[i] = chain[i].data;
        len[i] = chain[i].len;
    }
    idevs_cert_policy *p = join_policy(c);
    if (p == NULL) {
        snprintf(why, why_len, "out of memory");
        return IDEVS_ERR_NOMEM;
    }
    idevs_err err = idevs_cert_verify(p, der, len, n, info, why, why_len);
    idevs_cert_policy_free(p);
    if (err == IDEVS_OK && info->evidence.backend != c->backend) {
        snprintf(why, why_len, "its backend is not this compartment's");
        err = IDEVS_ERR_BACKEND_NOT_ALLOWED;
    }
    if (err == IDEVS_OK && idevs_key_binding(info->sign_pub, info->kex_pub, binding) != IDEVS_OK) {
        snprintf(why, why_len, "its key binding cannot be computed");
        err = IDEVS_ERR_CRYPTO;
    }
    return err;
}

static void info_of(compartment *c, const uint8_t joiner[IDEVS_SHA256_LEN], const uint8_t grantor[IDEVS_SHA256_LEN],
                    uint8_t info[INFO_LEN])
{
    memcpy(info, LABEL, sizeof LABEL - 1);
    memcpy(info + sizeof LABEL - 1, c->dep->program.b, IDEVS_UUID_LEN);
    memcpy(info + sizeof LABEL - 1 + IDEVS_UUID_LEN, joiner, IDEVS_SHA256_LEN);
    memcpy(info + sizeof LABEL - 1 + IDEVS_UUID_LEN + IDEVS_SHA256_LEN, grantor, IDEVS_SHA256_LEN);
}

/* key || nonce from the shared secret; cleanses shared. */
static idevs_err derive(uint8_t shared[IDEVS_X25519_LEN], const uint8_t ephemeral[IDEVS_X25519_LEN],
                        const uint8_t info[INFO_LEN], uint8_t okm[32 + KEYS_GCM_NONCE_LEN])
{
    idevs_err err = idevs_hkdf_sha256(ephemeral, IDEVS_X25519_LEN, shared, IDEVS_X25519_LEN, info, INFO_LEN, okm,
                                      32 + KEYS_GCM_NONCE_LEN);
    idevs_cleanse(shared, IDEVS_X25519_LEN);
    return err;
}

static idevs_err own_binding(const compartment *c, uint8_t out[IDEVS_SHA256_LEN])
{
    return idevs_key_binding(idevs_identity_sign_public(c->self), idevs_identity_kex_public(c->self), out);
}

static void answer(compartment *c, Idevs__Bridge__V1__JoinAnswer *a)
{
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_ANSWER;
    f.join_answer = a;
    idevs_err err = idevs_channel_send(&c->ch, &f, CMP_HANDSHAKE_TIMEOUT_MS);
    if (err == IDEVS_OK)
        err = idevs_channel_flush(&c->ch, CMP_HANDSHAKE_TIMEOUT_MS);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "cannot send JoinAnswer: %s", idevs_strerror(err));
}

static void refuse(compartment *c, bool as_joiner, idevs_err status, const char *reason)
{
    Idevs__Bridge__V1__JoinAnswer a = IDEVS__BRIDGE__V1__JOIN_ANSWER__INIT;
    a.as_joiner = as_joiner;
    a.status = (uint32_t)status;
    a.reason = (char *)reason;
    answer(c, &a);
}

/* ---- the grantor: a ready compartment ---- */

/* Encrypts this compartment's private keys to the joiner (the top comment); sealed is SEALED_LEN bytes. */
static idevs_err seal_keys(compartment *c, const idevs_cert_info *joiner, const uint8_t info[INFO_LEN],
                           uint8_t ephemeral[IDEVS_X25519_LEN], uint8_t sealed[SEALED_LEN])
{
    EVP_PKEY *eph = NULL;
    uint8_t shared[IDEVS_X25519_LEN], okm[32 + KEYS_GCM_NONCE_LEN], secret[SECRET_LEN];
    size_t sign_len = IDEVS_ED25519_SEED_LEN, kex_len = IDEVS_X25519_LEN;
    idevs_err err = idevs_x25519_generate(&eph, ephemeral);
    if (err == IDEVS_OK)
        err = idevs_x25519(eph, joiner->kex_pub, shared);
    EVP_PKEY_free(eph);
    if (err == IDEVS_OK)
        err = derive(shared, ephemeral, info, okm);
    if (err == IDEVS_OK &&
        !(EVP_PKEY_get_raw_private_key(idevs_identity_sign_key(c->self), secret, &sign_len) == 1 &&
          sign_len == IDEVS_ED25519_SEED_LEN &&
          EVP_PKEY_get_raw_private_key(idevs_identity_kex_key(c->self), secret + IDEVS_ED25519_SEED_LEN, &kex_len) ==
              1 &&
          kex_len == IDEVS_X25519_LEN))
        err = IDEVS_ERR_CRYPTO;
    if (err == IDEVS_OK)
        err = keys_gcm(true, okm, okm + 32, info, INFO_LEN, secret, SECRET_LEN, sealed, sealed + SECRET_LEN);
    idevs_cleanse(shared, sizeof shared);
    idevs_cleanse(okm, sizeof okm);
    idevs_cleanse(secret, sizeof secret);
    return err;
}

void join_check(compartment *c, const Idevs__Bridge__V1__JoinCheck *jc)
{
    char why[256] = "";
    Idevs__Bridge__V1__JoinRequest *r =
        jc->request.len > 0 && jc->request.len <= IDEVS_JOIN_MESSAGE_MAX
            ? idevs__bridge__v1__join_request__unpack(NULL, jc->request.len, jc->request.data)
            : NULL;
    if (r == NULL) {
        refuse(c, false, IDEVS_ERR_MALFORMED, "not a JoinRequest");
        return;
    }
    idevs_cert_info joiner;
    uint8_t jb[IDEVS_SHA256_LEN], gb[IDEVS_SHA256_LEN];
    idevs_err err = verify_peer(c, r->chain, r->n_chain, &joiner, jb, why, sizeof why);
    idevs__bridge__v1__join_request__free_unpacked(r, NULL);
    if (err == IDEVS_ERR_MEASUREMENT_MISMATCH) {
        refuse(c, false, err, "another measurement");
        return;
    }
    if (err != IDEVS_OK) {
        refuse(c, false, err, why);
        return;
    }
    int64_t now = (int64_t)time(NULL), issued = (int64_t)joiner.evidence.issued_at;
    if (issued > now + JOIN_SKEW_S || now - issued > JOIN_FRESH_S) {
        snprintf(why, sizeof why, "its evidence was issued %lld s ago, not within %d s", (long long)(now - issued),
                 JOIN_FRESH_S);
        refuse(c, false, IDEVS_ERR_CERT_EXPIRED, why);
        return;
    }
    if ((err = own_binding(c, gb)) != IDEVS_OK || idevs_ct_equal(jb, gb, sizeof gb)) {
        refuse(c, false, err != IDEVS_OK ? err : IDEVS_ERR_KEY_BINDING_MISMATCH,
               "it holds the process's keys already");
        return;
    }
    uint8_t info[INFO_LEN], ephemeral[IDEVS_X25519_LEN], sealed[SEALED_LEN];
    info_of(c, jb, gb, info);
    if ((err = seal_keys(c, &joiner, info, ephemeral, sealed)) != IDEVS_OK) {
        idevs_cleanse(sealed, sizeof sealed);
        refuse(c, false, err, "the keys cannot be encrypted to it");
        return;
    }
    ProtobufCBinaryData chain[IDEVS_CHAIN_MAX];
    size_t n = idevs_identity_chain_count(c->self);
    for (size_t i = 0; i < n && i < IDEVS_CHAIN_MAX; i++)
        chain[i].data = (uint8_t *)idevs_identity_chain_der(c->self, i, &chain[i].len);
    Idevs__Bridge__V1__JoinGrant g = IDEVS__BRIDGE__V1__JOIN_GRANT__INIT;
    g.n_chain = n < IDEVS_CHAIN_MAX ? n : IDEVS_CHAIN_MAX;
    g.chain = chain;
    g.joiner = (ProtobufCBinaryData){sizeof jb, jb};
    g.ephemeral = (ProtobufCBinaryData){sizeof ephemeral, ephemeral};
    g.sealed = (ProtobufCBinaryData){sizeof sealed, sealed};
    size_t len = idevs__bridge__v1__join_grant__get_packed_size(&g);
    uint8_t *packed = malloc(len);
    if (packed == NULL)
        cmp_fatal(c, IDEVS_ERR_NOMEM, "out of memory");
    idevs__bridge__v1__join_grant__pack(&g, packed);
    Idevs__Bridge__V1__JoinAnswer a = IDEVS__BRIDGE__V1__JOIN_ANSWER__INIT;
    a.status = IDEVS_OK;
    a.reason = "";
    a.joiner = (ProtobufCBinaryData){sizeof jb, jb};
    a.grant = (ProtobufCBinaryData){len, packed};
    answer(c, &a);
    free(packed); /* the keys inside are encrypted to the joiner */
}

/* ---- the joiner ---- */

/* A grant for us: true when its keys are adopted (the caller seals and has them certified); otherwise the
 * refusal is told to the launcher and nothing changed. */
static bool take(compartment *c, const Idevs__Bridge__V1__JoinOffer *offer)
{
    char why[256] = "";
    Idevs__Bridge__V1__JoinGrant *g =
        offer->grant.len > 0 && offer->grant.len <= IDEVS_JOIN_MESSAGE_MAX
            ? idevs__bridge__v1__join_grant__unpack(NULL, offer->grant.len, offer->grant.data)
            : NULL;
    if (g == NULL) {
        refuse(c, true, IDEVS_ERR_MALFORMED, "not a JoinGrant");
        return false;
    }
    uint8_t jb[IDEVS_SHA256_LEN], gb[IDEVS_SHA256_LEN], info[INFO_LEN];
    idevs_cert_info grantor;
    idevs_err err = own_binding(c, jb);
    if (err == IDEVS_OK && (g->joiner.len != sizeof jb || !idevs_ct_equal(g->joiner.data, jb, sizeof jb))) {
        snprintf(why, sizeof why, "a grant for another key binding");
        err = IDEVS_ERR_WRONG_RECIPIENT;
    }
    if (err == IDEVS_OK)
        err = verify_peer(c, g->chain, g->n_chain, &grantor, gb, why, sizeof why);
    if (err == IDEVS_ERR_MEASUREMENT_MISMATCH)
        snprintf(why, sizeof why, "another measurement");
    if (err == IDEVS_OK && (g->ephemeral.len != IDEVS_X25519_LEN || g->sealed.len != SEALED_LEN)) {
        snprintf(why, sizeof why, "an ephemeral key of %zu bytes or sealed keys of %zu, expected %d and %d",
                 g->ephemeral.len, g->sealed.len, IDEVS_X25519_LEN, (int)SEALED_LEN);
        err = IDEVS_ERR_MALFORMED;
    }
    uint8_t shared[IDEVS_X25519_LEN], okm[32 + KEYS_GCM_NONCE_LEN], secret[SECRET_LEN], tag[KEYS_GCM_TAG_LEN];
    idevs_identity *keys = NULL;
    if (err == IDEVS_OK) {
        info_of(c, jb, gb, info);
        err = idevs_x25519(idevs_identity_kex_key(c->self), g->ephemeral.data, shared);
        if (err == IDEVS_OK)
            err = derive(shared, g->ephemeral.data, info, okm);
        memcpy(tag, g->sealed.data + SECRET_LEN, sizeof tag);
        if (err == IDEVS_OK &&
            keys_gcm(false, okm, okm + 32, info, INFO_LEN, g->sealed.data, SECRET_LEN, secret, tag) != IDEVS_OK)
            err = IDEVS_ERR_DECRYPT;
        if (err != IDEVS_OK)
            snprintf(why, sizeof why, "the keys do not open");
    }
    if (err == IDEVS_OK) {
        uint8_t kb[IDEVS_SHA256_LEN];
        err = idevs_identity_from_private(&c->dep->program, c->dep->name, secret, secret + IDEVS_ED25519_SEED_LEN,
                                          &keys);
        if (err == IDEVS_OK)
            err = idevs_key_binding(idevs_identity_sign_public(keys), idevs_identity_kex_public(keys), kb);
        if (err == IDEVS_OK && !idevs_ct_equal(kb, gb, sizeof kb))
            err = IDEVS_ERR_KEY_BINDING_MISMATCH;
        if (err != IDEVS_OK)
            snprintf(why, sizeof why, "the keys granted are not those the grantor's certificate certifies");
    }
    idevs_cleanse(shared, sizeof shared);
    idevs_cleanse(okm, sizeof okm);
    idevs_cleanse(secret, sizeof secret);
    idevs__bridge__v1__join_grant__free_unpacked(g, NULL);
    if (err != IDEVS_OK) {
        idevs_identity_free(keys);
        refuse(c, true, err, why);
        return false;
    }
    /* The process's keys from now on; the temporary ones are freed (cleansed) with their chain. */
    idevs_identity_free(c->self);
    c->self = keys;
    Idevs__Bridge__V1__JoinAnswer a = IDEVS__BRIDGE__V1__JOIN_ANSWER__INIT;
    a.as_joiner = true;
    a.status = IDEVS_OK;
    a.reason = "";
    a.grantor_issued_at = grantor.evidence.issued_at;
    a.grantor_cert = (ProtobufCBinaryData){sizeof grantor.cert_digest, grantor.cert_digest};
    answer(c, &a);
    return true;
}

void join_wait(compartment *c)
{
    for (;;) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&c->ch, &f, -1);
        if (err == IDEVS_ERR_CHANNEL_CLOSED)
            _exit(CMP_EXIT_CLOSED);
        if (err != IDEVS_OK)
            cmp_fatal(c, err, "waiting for a grant of the process's keys: %s", idevs_strerror(err));
        switch (f->body_case) {
        case IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_OFFER: {
            bool taken = take(c, f->join_offer);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            if (taken)
                return;
            break;
        }
        case IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED:
            /* The temporary keys certified again: fresh evidence for the requests still to come. */
            handshake_install_chain(c, f->certified);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN:
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            idevs_identity_free(c->self);
            c->self = NULL;
            idevs_cleanse(c->join_sealing_key, sizeof c->join_sealing_key);
            _exit(CMP_EXIT_OK);
        default:
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            cmp_fatal(c, IDEVS_ERR_FRAME, "frame from the launcher while joining: not a JoinOffer, Certified or "
                      "Shutdown");
        }
    }
}
