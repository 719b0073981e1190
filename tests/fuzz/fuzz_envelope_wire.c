/* The keyless decoding of an envelope (proto/envelope_wire.c), which every relay, the launcher's gate and
 * every receiver run on bytes from the network before any key is used. For every input:
 *   - idevs_envelope_peek() and idevs_env_decode() agree (the peek is the decode behind a size limit), and a
 *     refused envelope leaves the header zeroed;
 *   - what decodes is within the protocol's bounds (chain, provenance, ciphertext with its tag);
 *   - what decodes encodes again (idevs_env_encode) to bytes that decode to the same fields: the encoder and
 *     the decoder agree on every field a receiver authenticates. */
#include <stdlib.h>
#include <string.h>

#include "envelope_internal.h"
#include "fuzz.h"
#include "idevs_envelope.h"

static void same_fields(const idevs_env_decoded *a, const idevs_env_decoded *b)
{
    FUZZ_CHECK(a->h.version == b->h.version && a->h.suite == b->h.suite);
    FUZZ_CHECK(idevs_uuid_equal(&a->h.sender, &b->h.sender) && idevs_uuid_equal(&a->h.recipient, &b->h.recipient));
    FUZZ_CHECK(memcmp(&a->h.message_id, &b->h.message_id, sizeof a->h.message_id) == 0);
    FUZZ_CHECK(a->h.epoch == b->h.epoch && a->h.sequence == b->h.sequence);
    FUZZ_CHECK(memcmp(a->h.ephemeral_key, b->h.ephemeral_key, sizeof a->h.ephemeral_key) == 0);
    FUZZ_CHECK(memcmp(a->h.epoch_signature, b->h.epoch_signature, sizeof a->h.epoch_signature) == 0);
    FUZZ_CHECK(a->h.instance == b->h.instance);
    FUZZ_CHECK(a->chain_count == b->chain_count);
    if (a->chain_count == 0)
        FUZZ_CHECK(memcmp(a->h.leaf_digest, b->h.leaf_digest, sizeof a->h.leaf_digest) == 0);
    for (size_t i = 0; i < a->chain_count; i++)
        FUZZ_CHECK(a->chain_len[i] == b->chain_len[i] && memcmp(a->chain[i], b->chain[i], a->chain_len[i]) == 0);
    FUZZ_CHECK(a->ciphertext_len == b->ciphertext_len &&
               memcmp(a->ciphertext, b->ciphertext, a->ciphertext_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idevs_envelope_header peeked;
    idevs_err peek = idevs_envelope_peek(data, size, &peeked);
    FUZZ_CHECK(peek >= IDEVS_OK && peek < IDEVS_ERR_COUNT);
    if (peek != IDEVS_OK) {
        idevs_envelope_header zero;
        memset(&zero, 0, sizeof zero);
        FUZZ_CHECK(memcmp(&peeked, &zero, sizeof zero) == 0);
    }
    if (peek == IDEVS_ERR_TOO_LARGE)
        return 0; /* refused before decoding, as documented */

    idevs_env_decoded d;
    idevs_err err = idevs_env_decode(data, size, &d);
    FUZZ_CHECK(err == peek);
    if (err != IDEVS_OK)
        return 0;

    FUZZ_CHECK(d.chain_count <= IDEVS_CHAIN_MAX);
    FUZZ_CHECK(d.ciphertext_len >= IDEVS_AEAD_TAG_LEN && d.ciphertext_len <= size);
    for (size_t i = 0; i < d.chain_count; i++)
        FUZZ_CHECK(d.chain_len[i] >= 1 && d.chain_len[i] <= IDEVS_CERT_MAX);
    FUZZ_CHECK(peeked.version == d.h.version && peeked.suite == d.h.suite && peeked.epoch == d.h.epoch &&
               peeked.sequence == d.h.sequence && peeked.chain_count == d.chain_count &&
               peeked.instance == d.h.instance && peeked.ciphertext_len == d.ciphertext_len);

    uint8_t *again, *ct;
    size_t again_len;
    err = idevs_env_encode(&d.h, d.chain, d.chain_len, d.chain_count, d.ciphertext_len, &again, &again_len, &ct);
    if (err == IDEVS_ERR_NOMEM) {
        idevs_env_decoded_free(&d);
        return 0;
    }
    FUZZ_CHECK(err == IDEVS_OK);
    memcpy(ct, d.ciphertext, d.ciphertext_len);
    idevs_env_decoded d2;
    FUZZ_CHECK(idevs_env_decode(again, again_len, &d2) == IDEVS_OK);
    same_fields(&d, &d2);
    idevs_env_decoded_free(&d2);
    free(again);
    idevs_env_decoded_free(&d);
    return 0;
}
