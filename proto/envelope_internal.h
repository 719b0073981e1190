/* Internals of the envelope library, shared by its files (envelope*.c) and used by the test-vector test and
 * generator to recompute intermediate values. Not a public interface: nothing outside proto/ and tests/ may
 * include it. The layout of each byte string is in docs/PROTOCOL.md. */
#ifndef IDEVS_ENVELOPE_INTERNAL_H
#define IDEVS_ENVELOPE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "idevs.pb-c.h"
#include "idevs_cert.h"
#include "idevs_crypto.h"
#include "idevs_envelope.h"
#include "idevs_envelope_testing.h"
#include "idevs_replay.h"

#define IDEVS_OFFER_LABEL "idevs epoch v2"
#define IDEVS_OFFER_LABEL_LEN 14
#define IDEVS_AAD_LABEL "idevs envelope v2"
#define IDEVS_AAD_LABEL_LEN 17
#define IDEVS_KDF_LABEL "idevs epoch keys v2"
#define IDEVS_KDF_LABEL_LEN 19

#define IDEVS_KEY_LEN 32
#define IDEVS_NONCE_LEN 12
#define IDEVS_OKM_LEN (IDEVS_KEY_LEN + IDEVS_NONCE_LEN)
#define IDEVS_OFFER_LEN (IDEVS_OFFER_LABEL_LEN + 4 + 4 + 2 * IDEVS_UUID_LEN + 8 + 3 * 32)
#define IDEVS_AAD_FIXED_LEN                                                                                    \
    (IDEVS_AAD_LABEL_LEN + 4 + 4 + 4 + 3 * IDEVS_UUID_LEN + 8 + 8 + IDEVS_X25519_LEN + IDEVS_ED25519_SIG_LEN + \
     IDEVS_SHA256_LEN + 2)
#define IDEVS_AAD_MAX (IDEVS_AAD_FIXED_LEN + IDEVS_TOPIC_MAX)
/* Bytes of an envelope besides payload, tag and certificates: its clear header, and inside the ciphertext the
 * framing, the provenance and the padding (at most IDEVS_PAD_BLOCK_MAX - 1). */
#define IDEVS_ENVELOPE_HEADROOM 8192
/* The framing of section 4, step 4: u8(n) || n ids || u32(len(p)) || p. */
#define IDEVS_FRAME_FIXED 5
#define IDEVS_FRAME_MAX_EXTRA (IDEVS_FRAME_FIXED + IDEVS_PROVENANCE_MAX * IDEVS_UUID_LEN + IDEVS_PAD_BLOCK_MAX - 1)

/* ---- envelope_aad.c: the byte strings of sections 3 and 4 ---- */

void idevs_env_offer(uint8_t out[IDEVS_OFFER_LEN], uint32_t suite, uint32_t instance, const idevs_uuid *sender,
                     const idevs_uuid *recipient, uint64_t epoch, const uint8_t e_pub[IDEVS_X25519_LEN],
                     const uint8_t recipient_kex_pub[IDEVS_X25519_LEN], const uint8_t leaf_digest[IDEVS_SHA256_LEN]);

/* The clear fields an envelope authenticates. */
typedef struct idevs_env_header {
    IDEVS_ENVELOPE_CLEAR_FIELDS
    uint8_t ephemeral_key[IDEVS_X25519_LEN];
    uint8_t epoch_signature[IDEVS_ED25519_SIG_LEN];
    uint8_t leaf_digest[IDEVS_SHA256_LEN]; /* H(sender's leaf DER), carried or computed from the chain */
} idevs_env_header;

/* Topic rules of section 4: 1..IDEVS_TOPIC_MAX bytes, no '+' or '#', no NUL inside. *len receives its length. */
bool idevs_env_topic_valid(const char *topic, size_t *len);

/* Writes aad into out (cap bytes, at least IDEVS_AAD_MAX suffices) and returns its length; 0 when it does not
 * fit or the topic is too long. */
size_t idevs_env_aad(uint8_t *out, size_t cap, const idevs_env_header *h, const char *topic, size_t topic_len);

/* ---- envelope_padding.c: the plaintext's framing and padding (section 4, step 4 and 4.1) ---- */

/* The plaintext length for a framed length under a padding rule; false for an unknown rule or an overflow. */
bool idevs_env_padded_len(size_t framed, uint32_t pad, size_t *out);

/* Writes the framed, zero-padded plaintext (plain_len bytes, from idevs_env_padded_len) into out. */
void idevs_env_frame(uint8_t *out, size_t plain_len, const idevs_msgid *provenance, size_t provenance_count,
                     const uint8_t *payload, size_t payload_len);

/* Checks the framing and padding of an opened plaintext of plain_len bytes in buf (IDEVS_ERR_PADDING, or
 * IDEVS_ERR_TOO_LARGE for a payload over max_payload), copies the provenance out, moves the payload to the start
 * of buf and zeroes the rest of buf. On failure buf is zeroed whole. */
idevs_err idevs_env_unframe(uint8_t *buf, size_t plain_len, size_t max_payload, idevs_msgid *provenance,
                            size_t *provenance_count, size_t *payload_len);

/* ---- envelope_keys.c: key schedule and AEAD ---- */

/* okm = HKDF-SHA256("", dh_e || dh_s, "idevs epoch keys v1" || offer, 44) split into key and base_nonce.
 * The intermediate buffers are cleansed. */
idevs_err idevs_env_derive(const uint8_t dh_e[IDEVS_X25519_LEN], const uint8_t dh_s[IDEVS_X25519_LEN],
                           const uint8_t offer[IDEVS_OFFER_LEN], uint8_t key[IDEVS_KEY_LEN],
                           uint8_t base_nonce[IDEVS_NONCE_LEN]);

/* nonce = base_nonce XOR (0^32 || u64(sequence)). */
void idevs_env_nonce(const uint8_t base_nonce[IDEVS_NONCE_LEN], uint64_t sequence, uint8_t nonce[IDEVS_NONCE_LEN]);

bool idevs_env_suite_valid(uint32_t suite);

/* One AEAD key of one epoch in one direction: the cipher context is keyed once; each message sets only the
 * nonce. */
typedef struct idevs_aead {
    EVP_CIPHER_CTX *ctx;
    uint8_t base_nonce[IDEVS_NONCE_LEN];
    uint32_t suite;
    bool encrypt;
} idevs_aead;

/* Keys a for suite and direction; key is not kept outside OpenSSL's context (the caller cleanses its copy). */
idevs_err idevs_aead_init(idevs_aead *a, uint32_t suite, bool encrypt, const uint8_t key[IDEVS_KEY_LEN],
                          const uint8_t base_nonce[IDEVS_NONCE_LEN]);
/* Frees and forgets the key (EVP_CIPHER_CTX_free cleanses); a is zeroed. */
void idevs_aead_free(idevs_aead *a);
/* out receives len bytes of ciphertext followed by the tag (len + IDEVS_AEAD_TAG_LEN bytes). */
idevs_err idevs_aead_seal(idevs_aead *a, uint64_t sequence, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                          size_t len, uint8_t *out);
/* in is ct_len bytes of ciphertext and tag; out receives ct_len - IDEVS_AEAD_TAG_LEN bytes. IDEVS_ERR_DECRYPT
 * when authentication fails; out is then cleansed. */
idevs_err idevs_aead_open(idevs_aead *a, uint64_t sequence, const uint8_t *aad, size_t aad_len, const uint8_t *in,
                          size_t ct_len, uint8_t *out);

/* ---- envelope_wire.c: bounded decoding and encoding ---- */

/* Decodes and validates the sizes of every field (section 5, steps 2 to 4, without the payload limit).
 * On success *out must be released with idevs_env_decoded_free. */
typedef struct idevs_env_decoded {
    Idevs__V1__Envelope *msg;
    idevs_env_header h;                          /* leaf_digest filled only when the digest was carried */
    const uint8_t *chain[IDEVS_CHAIN_MAX];        /* into msg */
    size_t chain_len[IDEVS_CHAIN_MAX];
    size_t chain_count;                          /* 0 when the digest was carried */
    const uint8_t *ciphertext;                   /* into msg; ciphertext_len >= IDEVS_AEAD_TAG_LEN */
    size_t ciphertext_len;
} idevs_env_decoded;

idevs_err idevs_env_decode(const uint8_t *data, size_t len, idevs_env_decoded *out);
void idevs_env_decoded_free(idevs_env_decoded *d);

/* Encodes the header fields, the chain (when chain_count > 0, else the digest) and a ciphertext field of
 * ct_len bytes whose content is left for the caller to write at *ct (it is the last field). *out is malloc'd. */
idevs_err idevs_env_encode(const idevs_env_header *h, const uint8_t *const *chain, const size_t *chain_len,
                           size_t chain_count, size_t ct_len, uint8_t **out, size_t *out_len, uint8_t **ct);

/* ---- envelope_peers.c: the peer table ---- */

typedef struct idevs_send_epoch {
    bool active;
    uint64_t epoch;
    uint64_t started_ms;
    uint64_t next_sequence;
    uint64_t generation; /* ctx->rotation when started */
    uint32_t suite;
    uint8_t e_pub[IDEVS_X25519_LEN];
    uint8_t signature[IDEVS_ED25519_SIG_LEN];
    uint8_t leaf_digest[IDEVS_SHA256_LEN]; /* our certificate its offer names: kept when ours is renewed */
    idevs_aead aead;
} idevs_send_epoch;

typedef struct idevs_recv_epoch {
    bool active;
    uint64_t epoch;
    uint64_t replaced_ms; /* for the previous epoch: when it stopped being the current one */
    uint32_t suite;
    uint8_t e_pub[IDEVS_X25519_LEN];
    uint8_t signature[IDEVS_ED25519_SIG_LEN];
    idevs_aead aead;
    idevs_replay window;
} idevs_recv_epoch;

/* The receiving epochs of one instance of a peer (docs/PROTOCOL.md section 5a). */
typedef struct idevs_instance_epochs {
    uint32_t instance;
    idevs_recv_epoch cur, prev; /* cur is active in every kept instance */
} idevs_instance_epochs;

#define IDEVS_SAME_KEYS_MAX IDEVS_INSTANCES_MAX /* other certificates of a peer's keys kept: one per instance */

typedef struct idevs_same_keys_cert {
    uint8_t digest[IDEVS_SHA256_LEN];
    uint64_t not_after_ms;
} idevs_same_keys_cert;

typedef struct idevs_peer {
    idevs_cert_info info;
    uint64_t not_after_ms; /* earliest notAfter of the verified chain */
    bool has_dh_s;
    uint8_t dh_s[IDEVS_X25519_LEN]; /* X25519(own kex private, peer kex public), cached; cleansed on free */
    uint64_t epoch_floor;           /* offers must be above this (survives certificate replacement) */
    /* The other certificates of the same keys (docs/PROTOCOL.md 5, step 7): the one a renewal replaced, an older
     * one a chain brought, another instance's (each instance has its own evidence). Envelopes naming one open
     * until it expires. At most IDEVS_SAME_KEYS_MAX; beyond, the one expiring first is forgotten. */
    idevs_same_keys_cert others[IDEVS_SAME_KEYS_MAX];
    size_t other_count;
    idevs_send_epoch send;
    idevs_instance_epochs *instances; /* instance_count of them, in no order */
    size_t instance_count, instance_cap;
    uint64_t instance_floor; /* an instance without epochs offers above this: the newest epoch evicted */
} idevs_peer;

typedef struct idevs_peer_table {
    idevs_peer **by_uuid; /* sorted by uuid */
    size_t count, cap, max;
} idevs_peer_table;

void idevs_peers_init(idevs_peer_table *t, size_t max);
void idevs_peers_free(idevs_peer_table *t);
idevs_peer *idevs_peers_find(const idevs_peer_table *t, const idevs_uuid *uuid);
/* Takes ownership of peer on success; replaces (and frees) an entry with the same uuid. */
idevs_err idevs_peers_put(idevs_peer_table *t, idevs_peer *peer);
bool idevs_peers_full(const idevs_peer_table *t);
/* A new peer from verified info; epochs empty. */
idevs_peer *idevs_peer_new(const idevs_cert_info *info, uint64_t not_after_ms);
void idevs_peer_free(idevs_peer *p);
void idevs_send_epoch_clear(idevs_send_epoch *e);
void idevs_recv_epoch_clear(idevs_recv_epoch *e);
/* The epochs of the peer's instance, NULL when it has none. */
idevs_instance_epochs *idevs_peer_instance(const idevs_peer *p, uint32_t instance);
/* Room for one more instance (allocated ahead, so that installing an epoch cannot fail); changes nothing else. */
idevs_err idevs_peer_instance_reserve(idevs_peer *p);
/* A new instance's empty epochs. At IDEVS_INSTANCES_MAX the instance whose current epoch is the oldest (then the
 * lowest instance number) is forgotten first and instance_floor raised to its epoch. Needs a reservation. */
idevs_instance_epochs *idevs_peer_instance_add(idevs_peer *p, uint32_t instance);
/* The highest epoch number the peer's instances have, or its floors: what a replacing certificate must exceed. */
uint64_t idevs_peer_epoch_high(const idevs_peer *p);

/* The earliest notAfter among the DER certificates, in ms since 1970. */
idevs_err idevs_env_chain_not_after(const uint8_t *const *der, const size_t *der_len, size_t count, uint64_t *out);

/* ---- envelope.c: the context ---- */

struct idevs_envelope_ctx {
    const idevs_identity *self;
    const idevs_cert_policy *policy;
    idevs_envelope_options opts;
    uint8_t self_digest[IDEVS_SHA256_LEN];
    /* Our chain before the last idevs_envelope_self_renewed(): carried by every envelope of a sending epoch
     * begun under it (former_count 0: none). own_* is a copy of the current one, to become the former. */
    uint8_t *own_der[IDEVS_CHAIN_MAX], *former_der[IDEVS_CHAIN_MAX];
    size_t own_len[IDEVS_CHAIN_MAX], former_len[IDEVS_CHAIN_MAX], own_count, former_count;
    uint8_t former_digest[IDEVS_SHA256_LEN];
    idevs_peer_table peers;
    idevs_uuid *allowed; /* sorted; NULL until the first allow_sender */
    size_t allowed_count, allowed_cap;
    bool restrict_senders;
    uint64_t rotation;
    /* Message ids come from a pool of random bytes refilled 1 KiB at a time: RAND_bytes costs ~0.9 us a call
     * here, more than the AEAD of a small message. Ids are public; consumed bytes are zeroed anyway. A context
     * must not be used on both sides of a fork() (neither must its epochs). */
    uint8_t id_pool[1024];
    size_t id_pool_next; /* bytes of id_pool already handed out; sizeof id_pool when empty */
    idevs_envelope_testing_random_fn random_fn;
    void *random_arg;
    idevs_envelope_stats stats;
};

uint64_t idevs_env_now(const idevs_envelope_ctx *ctx);

#endif
