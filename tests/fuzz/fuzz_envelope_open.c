/* Opening an envelope (proto/envelope.c), what every service and the compartment's key holder run on bytes
 * from the network, in a world whose only key holders are the test vectors' sender and recipient
 * (fuzz_world.h). Input: one byte of flags, then the envelope, received on the world's topic by a fresh
 * recipient context. Flag 1: the sender's certificate is registered beforehand (else only a carried chain
 * registers it); flag 2: only the recipient's own UUID may send (so every sender is refused).
 *
 * For every input:
 *   - a refused envelope is counted once, under its reason, and leaves *out zeroed;
 *   - an opened one can only be one the sender sealed (fuzz_world_seal): the same message id, payload and
 *     provenance count, from the sender, never past flag 2; and opening the same bytes again is a replay. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "fuzz_world.h"

static fuzz_world world;
static fuzz_sealed sealed[FUZZ_SEEDS_MAX];
static size_t sealed_count;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_world_init(&world);
    sealed_count = fuzz_world_seal(&world, sealed);
    return 0;
}

static const fuzz_sealed *sealed_by_id(const idevs_msgid *id)
{
    for (size_t i = 0; i < sealed_count; i++)
        if (memcmp(&sealed[i].message_id, id, sizeof *id) == 0)
            return &sealed[i];
    return NULL;
}

static uint64_t rejected_total(const idevs_envelope_stats *st)
{
    uint64_t n = 0;
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        n += st->rejected[i];
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;

    idevs_envelope_options o;
    fuzz_world_options(&world, 1, &o);
    idevs_envelope_ctx *ctx;
    if (idevs_envelope_ctx_new(world.recipient, world.policy, &o, &ctx) != IDEVS_OK)
        return 0;
    if (flags & 1) {
        size_t der_len;
        const uint8_t *der = idevs_identity_chain_der(world.sender, 0, &der_len);
        FUZZ_CHECK(idevs_envelope_add_peer(ctx, &der, &der_len, 1, NULL) == IDEVS_OK);
    }
    if (flags & 2)
        FUZZ_CHECK(idevs_envelope_allow_sender(ctx, idevs_identity_uuid(world.recipient)) == IDEVS_OK);

    idevs_opened out;
    idevs_err err = idevs_envelope_open(ctx, world.topic, data, size, &out);
    FUZZ_CHECK(err >= IDEVS_OK && err < IDEVS_ERR_COUNT);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(ctx, &st);
    if (err != IDEVS_OK) {
        FUZZ_CHECK(fuzz_all_zero(&out, sizeof out));
        FUZZ_CHECK(st.opened == 0 && st.rejected[err] == 1 && rejected_total(&st) == 1);
    } else {
        FUZZ_CHECK(st.opened == 1 && rejected_total(&st) == 0);
        FUZZ_CHECK(!(flags & 2));
        FUZZ_CHECK(idevs_uuid_equal(&out.sender, idevs_identity_uuid(world.sender)));
        const fuzz_sealed *s = sealed_by_id(&out.message_id);
        FUZZ_CHECK(s != NULL);
        FUZZ_CHECK(out.payload_len == s->payload_len && out.payload != NULL && out.payload[out.payload_len] == 0);
        FUZZ_CHECK(memcmp(out.payload, s->payload, s->payload_len) == 0);
        idevs_opened_clear(&out);
        idevs_err again = idevs_envelope_open(ctx, world.topic, data, size, &out);
        FUZZ_CHECK(again == IDEVS_ERR_REPLAY);
    }
    idevs_envelope_ctx_free(ctx);
    return 0;
}
