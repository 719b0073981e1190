/* The launcher's keyless gate and its replay record (enclave-bridge/launcher/gate.c, replay_record.c): what
 * every envelope that reaches the broker on a process's topics goes through before it costs the compartment
 * anything, and what keeps an envelope recorded from the wire from being run twice across compartment
 * restarts. The input is a sequence of 5-byte records, each one envelope through the gate and, when it passes,
 * a Done from the compartment:
 *   byte 0: bits 0-1 the topic (the input's, the request's response topic, an output's, another), bit 2 a
 *           recipient other than the program, bit 3 the other declared service as sender, bits 4-7 the low bits
 *           of the sender's instance
 *   byte 1: bits 0-2 the Done's status (one of eight: those that prove the envelope was opened, and refusals),
 *           bits 3-7 the high bits of the instance (0 to 511)
 *   byte 2: the epoch; bytes 3-4: the sequence number (big-endian)
 * The gate's first refusals are checked exactly (topic, structure, recipient, sender, in that order), and the
 * replay record against a model written from its description (docs/PROTOCOL.md section 5a): per (sender,
 * instance), the two highest epochs in which a delivery was done (with a status that proves it was opened),
 * each with a window of IDEVS_REPLAY_WINDOW sequence numbers; older epochs are forgotten (refused); at most 64
 * instances a sender, a 65th evicting the one of the oldest current epoch (then the lowest number), whose
 * epoch raises the sender's floor, at or below which an instance not kept is refused. */
#include <stdlib.h>
#include <string.h>

#include "envelope_internal.h"
#include "fuzz.h"
#include "idevs_deployment.h"
#include "launcher_internal.h"

#define RECORD 5
#define RECORDS_MAX 1024

static const char descriptor[] =
    "{\"version\":1,\"process\":{\"name\":\"gate\",\"uuid\":\"7a2d3b9f-5c8e-4f1b-8d40-3e6f9b2c8d51\","
    "\"logic\":\"libgate.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"},"
    "{\"name\":\"taxi\",\"uuid\":\"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\",\"certificate\":\"t.crt\"}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/gate/in/sales\",\"from\":\"store\"}],"
    "\"outputs\":[{\"name\":\"note\",\"topic\":\"idevs/gate/out/note\",\"to\":\"store\"}],"
    "\"requests\":[{\"name\":\"ride\",\"topic\":\"idevs/gate/req/ride\",\"response_topic\":\"idevs/gate/resp/ride\","
    "\"to\":\"taxi\"}]}";
static const char *const topics[4] = {"idevs/gate/in/sales", "idevs/gate/resp/ride", "idevs/gate/out/note",
                                      "idevs/gate/elsewhere"};
static const size_t topic_sender[2] = {0, 1}; /* sales come from store, ride's responses from taxi */

static const idevs_err statuses[8] = {IDEVS_OK, IDEVS_ERR_LOGIC, IDEVS_ERR_UNKNOWN_OUTPUT, IDEVS_ERR_UNKNOWN_REQUEST,
                                      IDEVS_ERR_DECRYPT, IDEVS_ERR_REPLAY, IDEVS_ERR_EPOCH_SIGNATURE,
                                      IDEVS_ERR_UNKNOWN_INPUT};

static idevs_deployment *deployment;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char why[256];
    FUZZ_SETUP(idevs_deployment_parse((const uint8_t *)descriptor, sizeof descriptor - 1, &deployment, why,
                                      sizeof why) == IDEVS_OK);
    return 0;
}

/* The model: every (sender, instance, epoch, sequence) done, with a status that proves the envelope was opened,
 * under the life of its instance (a new one each time the instance is kept again after an eviction); per sender
 * the lives kept and the floor. */
typedef struct done_entry {
    size_t life;
    uint64_t epoch, sequence;
} done_entry;

typedef struct kept {
    uint32_t instance;
    size_t life;
    uint64_t cur; /* the highest epoch done in this life */
} kept;

typedef struct model {
    done_entry done[RECORDS_MAX];
    size_t n_done, lives;
    kept kept[2][64];
    size_t n_kept[2];
    uint64_t floor[2];
} model;

/* The instance as kept, or NULL. */
static kept *kept_of(model *m, size_t sender, uint32_t instance)
{
    for (size_t i = 0; i < m->n_kept[sender]; i++)
        if (m->kept[sender][i].instance == instance)
            return &m->kept[sender][i];
    return NULL;
}

static void model_done(model *m, size_t sender, uint32_t instance, uint64_t epoch, uint64_t sequence)
{
    kept *k = kept_of(m, sender, instance);
    if (k == NULL && m->floor[sender] != 0 && epoch <= m->floor[sender])
        return; /* an evicted instance's epoch: nothing kept */
    if (k == NULL) {
        k = &m->kept[sender][m->n_kept[sender]];
        if (m->n_kept[sender] == 64) {
            k = &m->kept[sender][0];
            for (size_t i = 1; i < 64; i++) {
                kept *c = &m->kept[sender][i];
                if (c->cur < k->cur || (c->cur == k->cur && c->instance < k->instance))
                    k = c;
            }
            m->floor[sender] = k->cur > m->floor[sender] ? k->cur : m->floor[sender];
        } else {
            m->n_kept[sender]++;
        }
        *k = (kept){instance, m->lives++, epoch};
    }
    k->cur = epoch > k->cur ? epoch : k->cur;
    m->done[m->n_done++] = (done_entry){k->life, epoch, sequence};
}

static idevs_err model_check(model *m, size_t sender, uint32_t instance, uint64_t epoch, uint64_t sequence)
{
    const kept *k = kept_of(m, sender, instance);
    size_t life = k != NULL ? k->life : SIZE_MAX;
    if (life == SIZE_MAX)
        return m->floor[sender] != 0 && epoch <= m->floor[sender] ? IDEVS_ERR_EPOCH_FORGOTTEN : IDEVS_OK;
    const done_entry *done = m->done;
    size_t n = m->n_done;
    bool any = false;
    uint64_t cur = 0, prev = 0;
    bool have_prev = false;
    for (size_t i = 0; i < n; i++) {
        if (done[i].life != life)
            continue;
        uint64_t e = done[i].epoch;
        if (!any || e > cur) {
            if (any && (!have_prev || cur > prev)) {
                prev = cur;
                have_prev = true;
            }
            cur = e;
            any = true;
        } else if (e < cur && (!have_prev || e > prev)) {
            prev = e;
            have_prev = true;
        }
    }
    if (!any || epoch > cur)
        return IDEVS_OK;
    if (epoch != cur && !(have_prev && epoch == prev))
        return have_prev && epoch < prev ? IDEVS_ERR_EPOCH_FORGOTTEN : IDEVS_OK;
    uint64_t top = 0;
    bool seen = false;
    for (size_t i = 0; i < n; i++)
        if (done[i].life == life && done[i].epoch == epoch) {
            top = done[i].sequence > top ? done[i].sequence : top;
            seen = seen || done[i].sequence == sequence;
        }
    if (sequence > top)
        return IDEVS_OK;
    if (top - sequence >= IDEVS_REPLAY_WINDOW)
        return IDEVS_ERR_OUTSIDE_WINDOW;
    return seen ? IDEVS_ERR_REPLAY : IDEVS_OK;
}

static bool opens(idevs_err status)
{
    return status == IDEVS_OK || status == IDEVS_ERR_LOGIC || status == IDEVS_ERR_UNKNOWN_OUTPUT ||
           status == IDEVS_ERR_UNKNOWN_REQUEST;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    idevs_launcher *l = calloc(1, sizeof *l);
    model *m = calloc(1, sizeof *m);
    if (l == NULL || m == NULL) {
        free(l);
        free(m);
        return 0;
    }
    l->deployment = deployment;
    l->program = deployment->program;
    l->max_envelope = 4096;
    FUZZ_CHECK(replay_record_init(l) == IDEVS_OK);
    for (size_t at = 0; at + RECORD <= size && at / RECORD < RECORDS_MAX; at += RECORD) {
        const uint8_t *r = data + at;
        unsigned topic = r[0] & 3u;
        bool wrong_recipient = r[0] & 4u, other_sender = r[0] & 8u;
        idevs_err status = statuses[r[1] & 7u];
        uint32_t instance = (uint32_t)(r[0] >> 4) | (uint32_t)(r[1] >> 3) << 4;
        uint64_t epoch = r[2], sequence = (uint64_t)r[3] << 8 | r[4];
        size_t sender = topic < 2 ? topic_sender[topic] : 0;
        if (other_sender)
            sender = 1 - sender;

        idevs_env_header h;
        memset(&h, 0, sizeof h);
        h.version = IDEVS_ENVELOPE_VERSION;
        h.suite = 1;
        h.sender = deployment->services[sender].uuid;
        h.recipient = deployment->program;
        h.instance = instance;
        if (wrong_recipient)
            h.recipient.b[15] ^= 1;
        memcpy(h.message_id.b, r, RECORD);
        h.epoch = epoch;
        h.sequence = sequence;
        uint8_t *env, *ct;
        size_t env_len;
        FUZZ_CHECK(idevs_env_encode(&h, NULL, NULL, 0, IDEVS_AEAD_TAG_LEN + IDEVS_FRAME_FIXED, &env, &env_len, &ct) ==
                   IDEVS_OK);
        memset(ct, 0, IDEVS_AEAD_TAG_LEN + IDEVS_FRAME_FIXED);

        delivery d;
        memset(&d, 0, sizeof d);
        idevs_err err = gate_check(l, topics[topic], env, env_len, &d);
        free(env);
        idevs_err expected;
        if (topic >= 2)
            expected = IDEVS_ERR_UNKNOWN_INPUT;
        else if (sequence == 0)
            expected = IDEVS_ERR_MALFORMED;
        else if (wrong_recipient)
            expected = IDEVS_ERR_WRONG_RECIPIENT;
        else if (other_sender)
            expected = IDEVS_ERR_SENDER_NOT_ALLOWED;
        else
            expected = model_check(m, sender, instance, epoch, sequence);
        FUZZ_CHECK(err == expected);
        if (err != IDEVS_OK)
            continue;
        FUZZ_CHECK(d.tracked && d.sender == sender && d.instance == instance && d.epoch == epoch &&
                   d.sequence == sequence);
        bool changed = replay_record_done(l, &d, status);
        FUZZ_CHECK(changed == opens(status));
        if (changed)
            model_done(m, sender, instance, epoch, sequence);
    }
    replay_record_free(l);
    free(l);
    free(m);
    return 0;
}
