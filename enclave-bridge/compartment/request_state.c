/* Request state: what a request's answer needs (the ids that caused the request, and the state the logic gave
 * idevs_request_with_state), sealed by the compartment to itself into the request's correlation data, which the
 * answering service copies into its answer unchanged (docs/PROTOCOL.md 8). Without it, an answer that reaches a
 * compartment restarted since its request (killed, crashed, the broker restarted) would find no request, and the
 * logic would have lost what it needed to go on.
 *
 *   correlation = message id (16) || nonce (12, random) || AES-256-GCM(request_key, nonce, aad, padded) || tag (16)
 *   aad         = "idevs request state v1" || program (16) || message id (16)
 *   padded      = u16 big-endian n || RequestState (n bytes, bridge.proto) || zeros:
 *                 IDEVS_REQUEST_STATE_PLAIN = 288 + 18 * 63 = 1,422 bytes, room for the largest (63 ids, full state)
 *   request_key = HKDF-SHA256(ikm = Ed25519 seed || X25519 private, salt = "", info = "idevs request state v1" || program)
 *
 * So every token is IDEVS_REQUEST_CORRELATION_LEN = 1,466 bytes: its length, in the clear, tells the broker and the
 * service neither the logic's state nor how many ids caused the request (which envelope version 2 seals:
 * docs/PROTOCOL.md 8.3). Only a compartment holding the process's keys opens it (keys_derive): an instance of any
 * host, so that the owner of the request's partition opens it wherever it runs. The run id inside tells this run's requests, which the table of outstanding requests
 * matches (logic_link.c), from a former run's, which only the token can. */
#include <string.h>

#include "bridge.pb-c.h"
#include "compartment.h"
#include "idevs_crypto.h"

#define LABEL "idevs request state v1"
#define AAD_LEN (sizeof LABEL - 1 + IDEVS_UUID_LEN + IDEVS_UUID_LEN)
#define TOKEN_OFF IDEVS_UUID_LEN
#define CIPHER_OFF (TOKEN_OFF + KEYS_GCM_NONCE_LEN)
#define IDS_MAX (IDEVS_PROVENANCE_MAX - 1) /* a response's provenance adds its own id to them */

_Static_assert(CIPHER_OFF + IDEVS_REQUEST_STATE_PLAIN + KEYS_GCM_TAG_LEN == IDEVS_REQUEST_CORRELATION_LEN,
               "the correlation layout");
_Static_assert(IDEVS_REQUEST_CORRELATION_LEN == 1466, "the size docs/PROTOCOL.md 8.3 states");
/* The largest RequestState: the length prefix, request index, run, the state, each with its tag and length, then
 * 18 bytes an id. */
_Static_assert(2 + 6 + 18 + 3 + IDEVS_REQUEST_STATE_MAX + 18 * IDS_MAX <= IDEVS_REQUEST_STATE_PLAIN,
               "room for the largest");

void request_state_init(compartment *c)
{
    if (keys_derive(c->self, LABEL, &c->dep->program, c->request_key) != IDEVS_OK ||
        idevs_random(c->run, sizeof c->run) != IDEVS_OK)
        cmp_fatal(c, IDEVS_ERR_CRYPTO, "cannot derive the key of request state");
}

static void aad_of(const compartment *c, const uint8_t id[IDEVS_UUID_LEN], uint8_t aad[AAD_LEN])
{
    memcpy(aad, LABEL, sizeof LABEL - 1);
    memcpy(aad + sizeof LABEL - 1, c->dep->program.b, IDEVS_UUID_LEN);
    memcpy(aad + sizeof LABEL - 1 + IDEVS_UUID_LEN, id, IDEVS_UUID_LEN);
}

idevs_err request_state_seal(compartment *c, size_t request, const cmp_sealed *s, uint8_t *out)
{
    if (s->provenance_count > IDS_MAX || s->state_len > IDEVS_REQUEST_STATE_MAX)
        return IDEVS_ERR_INVALID_ARG;
    ProtobufCBinaryData list[IDS_MAX];
    for (size_t i = 0; i < s->provenance_count; i++)
        list[i] = (ProtobufCBinaryData){IDEVS_UUID_LEN, (uint8_t *)s->provenance[i].b};
    Idevs__Bridge__V1__RequestState m = IDEVS__BRIDGE__V1__REQUEST_STATE__INIT;
    m.request = (uint32_t)request;
    m.run = (ProtobufCBinaryData){sizeof c->run, c->run};
    m.n_provenance = s->provenance_count;
    m.provenance = list;
    m.state = (ProtobufCBinaryData){s->state_len, (uint8_t *)s->state};
    size_t n = idevs__bridge__v1__request_state__get_packed_size(&m);
    if (n > IDEVS_REQUEST_STATE_PLAIN - 2)
        return IDEVS_ERR_TOO_LARGE; /* cannot be, by the assertion above */
    uint8_t plain[IDEVS_REQUEST_STATE_PLAIN];
    memset(plain, 0, sizeof plain);
    plain[0] = (uint8_t)(n >> 8);
    plain[1] = (uint8_t)n;
    idevs__bridge__v1__request_state__pack(&m, plain + 2);
    memcpy(out, s->message_id.b, IDEVS_UUID_LEN);
    uint8_t aad[AAD_LEN];
    aad_of(c, s->message_id.b, aad);
    idevs_err err = idevs_random(out + TOKEN_OFF, KEYS_GCM_NONCE_LEN);
    if (err == IDEVS_OK)
        err = keys_gcm(true, c->request_key, out + TOKEN_OFF, aad, sizeof aad, plain, sizeof plain, out + CIPHER_OFF,
                       out + CIPHER_OFF + sizeof plain);
    idevs_cleanse(plain, sizeof plain);
    return err;
}

bool request_state_open(compartment *c, size_t request, const uint8_t *correlation, size_t correlation_len,
                        const idevs_msgid *answer_provenance, size_t answer_provenance_count, request_state *out)
{
    memset(out, 0, sizeof *out);
    if (correlation == NULL || !idevs_request_correlation_len_ok(correlation_len))
        return false;
    /* The request the answer names in its authenticated provenance, and only that one. */
    bool named = false;
    for (size_t i = 0; !named && i < answer_provenance_count; i++)
        named = memcmp(answer_provenance[i].b, correlation, IDEVS_UUID_LEN) == 0;
    if (!named)
        return false;
    uint8_t aad[AAD_LEN], plain[IDEVS_REQUEST_STATE_PLAIN], tag[KEYS_GCM_TAG_LEN];
    aad_of(c, correlation, aad);
    memcpy(tag, correlation + CIPHER_OFF + sizeof plain, sizeof tag);
    bool ok = keys_gcm(false, c->request_key, correlation + TOKEN_OFF, aad, sizeof aad, correlation + CIPHER_OFF,
                       sizeof plain, plain, tag) == IDEVS_OK;
    size_t n = ok ? (size_t)plain[0] << 8 | plain[1] : 0;
    Idevs__Bridge__V1__RequestState *m =
        ok && n <= sizeof plain - 2 ? idevs__bridge__v1__request_state__unpack(NULL, n, plain + 2) : NULL;
    idevs_cleanse(plain, sizeof plain);
    /* Authenticated, so written by this program; still read as strictly as anything else. The number of ids is
     * the RequestState's own: the length no longer says it. */
    ok = m != NULL && m->request == request && m->run.len == sizeof c->run &&
         m->n_provenance <= IDS_MAX && m->state.len <= IDEVS_REQUEST_STATE_MAX &&
         memcmp(m->run.data, c->run, sizeof c->run) != 0; /* this run's requests: the table's to match */
    for (size_t i = 0; ok && i < m->n_provenance; i++) {
        ok = m->provenance[i].len == IDEVS_UUID_LEN;
        if (ok)
            memcpy(out->provenance[i].b, m->provenance[i].data, IDEVS_UUID_LEN);
    }
    if (ok) {
        memcpy(out->id.b, correlation, IDEVS_UUID_LEN);
        out->provenance_count = m->n_provenance;
        if (m->state.len > 0)
            memcpy(out->state, m->state.data, m->state.len);
        out->state_len = m->state.len;
    } else {
        idevs_cleanse(out, sizeof *out);
    }
    if (m != NULL) {
        idevs_cleanse(m->state.data, m->state.len);
        idevs__bridge__v1__request_state__free_unpacked(m, NULL);
    }
    return ok;
}
