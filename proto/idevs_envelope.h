/* Sealing and opening idevs envelopes (docs/PROTOCOL.md).
 *
 * A context belongs to one identity and keeps, per peer: the verified certificate, the current sending epoch
 * (ephemeral X25519 key, derived AEAD key, next sequence number) and the receiving epochs (current and, for
 * a grace period, previous) with their replay windows. Asymmetric work happens once per peer and key epoch;
 * each message then costs one AEAD operation. A context is not thread-safe: use one per thread. */
#ifndef IDEVS_ENVELOPE_H
#define IDEVS_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_cert.h"
#include "idevs_error.h"
#include "idevs_identity.h"
#include "idevs_uuid.h"

#define IDEVS_ENVELOPE_VERSION 2
#define IDEVS_ENVELOPE_VERSION_OLD 1 /* refused with IDEVS_ERR_OLD_VERSION */
#define IDEVS_SUITE_X25519_AES256GCM 1
#define IDEVS_SUITE_X25519_CHACHA20POLY1305 2

#define IDEVS_TOPIC_MAX 1024             /* bytes of an MQTT topic bound into an envelope */
#define IDEVS_PROVENANCE_MAX 64          /* input message ids per envelope */
#define IDEVS_PAYLOAD_MAX_DEFAULT (256u * 1024u)
#define IDEVS_PAYLOAD_MAX_LIMIT (16u * 1024u * 1024u)
#define IDEVS_AEAD_TAG_LEN 16

/* Padding rules (docs/PROTOCOL.md section 4.1): the sealed plaintext (provenance and payload, framed) is padded
 * to a size class. A value from IDEVS_PAD_BLOCK_MIN to IDEVS_PAD_BLOCK_MAX is a block size. */
#define IDEVS_PAD_POW2 0u  /* 64 bytes, powers of two up to 4 KiB, then multiples of 4 KiB: the default */
#define IDEVS_PAD_NONE 1u
#define IDEVS_PAD_BLOCK_MIN 16u
#define IDEVS_PAD_BLOCK_MAX 4096u

typedef struct idevs_envelope_options {
    uint32_t suite;              /* for sealing; opening accepts both suites. Default AES-256-GCM */
    uint64_t epoch_lifetime_ms;  /* a sending epoch is replaced after this long (default 1 h) */
    uint64_t epoch_max_messages; /* ... or after this many messages (default 2^32) */
    uint64_t grace_ms;           /* a replaced receiving epoch stays acceptable this long (default 5 min) */
    uint64_t max_epoch_age_ms;   /* offers older than this are refused (default lifetime + grace) */
    uint64_t max_clock_skew_ms;  /* offers from further in the future are refused (default 5 min) */
    size_t max_payload;          /* plaintext bytes (default IDEVS_PAYLOAD_MAX_DEFAULT, at most _LIMIT) */
    size_t max_peers;            /* known peers (default 1024) */
    /* This sender's instance number (docs/PROTOCOL.md section 5a; default 0): several running copies of one
     * identity seal concurrently under different numbers, never the same one at once. */
    uint32_t instance;
    /* Clock in ms since 1970; NULL means CLOCK_REALTIME. Tests pass their own to move time. */
    uint64_t (*clock_ms)(void *arg);
    void *clock_arg;
} idevs_envelope_options;

/* Fills opts with the defaults. idevs_envelope_ctx_new also treats any zero field as its default (and a zero
 * max_epoch_age_ms as lifetime + grace); a suite other than 1 or 2 or max_payload above IDEVS_PAYLOAD_MAX_LIMIT
 * is IDEVS_ERR_INVALID_ARG. */
void idevs_envelope_options_default(idevs_envelope_options *opts);

/* The largest envelope a context with these options accepts: payload, certificates, headers. */
size_t idevs_envelope_max_size(const idevs_envelope_options *opts);

typedef struct idevs_envelope_ctx idevs_envelope_ctx;

/* self must be certified (have a chain). self and policy are borrowed and must outlive the context.
 * opts may be NULL for the defaults. */
idevs_err idevs_envelope_ctx_new(const idevs_identity *self, const idevs_cert_policy *policy,
                                 const idevs_envelope_options *opts, idevs_envelope_ctx **out);
void idevs_envelope_ctx_free(idevs_envelope_ctx *ctx);

/* Registers a peer from its DER chain (leaf first) after verifying it under the context's policy: needed
 * before sealing to it, optional before opening from it (a chain in the envelope registers the sender).
 * Re-adding a peer with a new certificate for other keys replaces it and resets its epochs. A new certificate
 * for the same keys (a renewal, or another instance's certificate) keeps the epochs: the later-expiring one is the
 * peer's certificate, and the others (up to 64) still open the envelopes naming them until they expire. info may
 * be NULL. */
idevs_err idevs_envelope_add_peer(idevs_envelope_ctx *ctx, const uint8_t *const *der, const size_t *der_len,
                                  size_t count, idevs_cert_info *info);

/* Restricts opening to the listed senders; until the first call, any sender the policy verifies is accepted. */
idevs_err idevs_envelope_allow_sender(idevs_envelope_ctx *ctx, const idevs_uuid *sender);

/* After the context's identity got a renewed chain for the same keys (idevs_identity_set_chain): sending
 * epochs started from now on name the new certificate; those already running go on under the former one and
 * carry its chain in every envelope, so that a receiver that knows only the new one can open them (a
 * renewal comes days apart, an epoch lasts an hour). IDEVS_ERR_NOMEM changes nothing. */
idevs_err idevs_envelope_self_renewed(idevs_envelope_ctx *ctx);

/* Starts new sending epochs for every peer at the next seal (for key rotation on demand). */
void idevs_envelope_rotate(idevs_envelope_ctx *ctx);

typedef struct idevs_seal_input {
    const idevs_uuid *recipient;
    const char *topic;              /* NUL-terminated, at most IDEVS_TOPIC_MAX bytes */
    const uint8_t *payload;
    size_t payload_len;
    const idevs_msgid *provenance;  /* may be NULL when provenance_count is 0 */
    size_t provenance_count;        /* at most IDEVS_PROVENANCE_MAX */
    /* NULL: a new id (16 random bytes). Otherwise this id: a message sent again keeps the id it was first sent
     * with, so that its receiver can tell it handled it already (docs/PROTOCOL.md section 9). */
    const idevs_msgid *message_id;
    uint32_t pad; /* IDEVS_PAD_POW2 (0, the default), IDEVS_PAD_NONE or a block size; others IDEVS_ERR_INVALID_ARG */
} idevs_seal_input;

/* Seals in->payload for in->recipient on in->topic. *out is malloc'd (free() it); *message_id, if not NULL,
 * receives the new message's id. */
idevs_err idevs_envelope_seal(idevs_envelope_ctx *ctx, const idevs_seal_input *in, uint8_t **out, size_t *out_len,
                              idevs_msgid *message_id);

typedef struct idevs_opened {
    idevs_uuid sender;
    uint32_t instance;
    idevs_msgid message_id;
    uint64_t epoch;
    uint64_t sequence;
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX]; /* from the plaintext: authenticated, never in the clear */
    size_t provenance_count;
    uint8_t *payload; /* malloc'd, payload_len bytes plus a NUL not counted; release with idevs_opened_clear */
    size_t payload_len;
} idevs_opened;

/* Opens an envelope received on topic (1..IDEVS_TOPIC_MAX bytes without '+' or '#', else
 * IDEVS_ERR_INVALID_ARG). On success fills *out; on failure *out is zeroed, holds nothing to free and the
 * failure is counted in stats.rejected. Nothing about a rejected envelope changes the context's state (a forgery cannot
 * advance a replay window or replace an epoch). */
idevs_err idevs_envelope_open(idevs_envelope_ctx *ctx, const char *topic, const uint8_t *data, size_t len,
                              idevs_opened *out);

/* Cleanses and frees the payload; the structure can be reused. */
void idevs_opened_clear(idevs_opened *opened);

/* The clear fields that name an envelope, declared once for this header and for the one the envelope code
 * authenticates (proto/envelope_internal.h), so that the two keep the same names and types. */
#define IDEVS_ENVELOPE_CLEAR_FIELDS \
    uint32_t version;               \
    uint32_t suite;                 \
    uint32_t instance;              \
    idevs_uuid sender;              \
    idevs_uuid recipient;           \
    idevs_msgid message_id;         \
    uint64_t epoch;                 \
    uint64_t sequence;

/* The clear header of an envelope, as idevs_envelope_peek() decodes it: what routing and replay protection need.
 * Provenance is not in it (version 2 seals it with the payload). */
typedef struct idevs_envelope_header {
    IDEVS_ENVELOPE_CLEAR_FIELDS
    size_t chain_count;      /* certificates carried; 0 when the sender's certificate digest is carried instead */
    size_t ciphertext_len;   /* padded plaintext (provenance and payload) plus the 16-byte tag */
} idevs_envelope_header;

/* Checks an envelope's structure without any key (docs/PROTOCOL.md section 5, steps 1 to 4): size at most
 * idevs_envelope_max_size() for IDEVS_PAYLOAD_MAX_LIMIT (IDEVS_ERR_TOO_LARGE, before decoding), protobuf without
 * unknown fields (IDEVS_ERR_MALFORMED), version (IDEVS_ERR_OLD_VERSION for 1, else IDEVS_ERR_VERSION), suite
 * (IDEVS_ERR_SUITE), field sizes (IDEVS_ERR_MALFORMED). On success fills *out; otherwise *out is zeroed.
 * Authenticates nothing: an envelope that passes may still be forged, and only idevs_envelope_open() decides. For
 * relays that drop obvious junk early. */
idevs_err idevs_envelope_peek(const uint8_t *data, size_t len, idevs_envelope_header *out);

typedef struct idevs_envelope_stats {
    uint64_t sealed;
    uint64_t opened;
    uint64_t sending_epochs;            /* epochs started (asymmetric work when sealing) */
    uint64_t receiving_epochs;          /* offers verified (asymmetric work when opening) */
    uint64_t rejected[IDEVS_ERR_COUNT]; /* by reason */
} idevs_envelope_stats;

void idevs_envelope_get_stats(const idevs_envelope_ctx *ctx, idevs_envelope_stats *out);

#endif
