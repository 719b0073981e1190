/* The launcher's replay record as it is read back at start (enclave-bridge/launcher/replay_record.c, the
 * ReplayRecord of replay_record.proto; docs/COMPARTMENT.md, "Replay across restarts"): the file
 * <program uuid>.replay in the state directory, two slots each u32 length || SealedReplayRecord, authenticated
 * with HMAC-SHA256 under a key derived from the sealing secret. The target keeps a state directory with a fixed
 * sealing secret, writes the file from the input, and loads it as a launcher does. The first byte chooses how:
 *   bits 0-1: 0  the rest is the file, as it is;
 *             1  the rest is two slots' bytes (u16 length of the first, then both), each zero-padded to a slot;
 *             2  the rest is a ReplayRecord, which the target seals (its HMAC under the documented key) into
 *                the slot of bit 2, the other left empty;
 *             3  the rest is two ReplayRecords (u16 length of the first), sealed into the two slots;
 *   bit 3: the former slot size (64 KiB, of version 2) instead of this descriptor's (modes 1 to 3).
 * A second reader written here from the documents says what each slot holds: nothing (a length of 0, never
 * written), a record (its HMAC right, version 3 or 2, this program, each declared sender once: in version 3
 * with 1 to 64 instances, each number once, in version 2 with one epoch pair, its instance 0; each instance
 * with a current window and maybe a previous one of an older epoch; handled streams only with a latest one and
 * two different ones, windows of IDEVS_REPLAY_WORDS words, no unknown field), or damage. For every input:
 *   - the load succeeds (a bad file never stops a launcher) and holds the good slot of the higher generation
 *     (the first on a tie), sender by sender, window by window; without one, it starts empty;
 *   - a file not good in either slot (one that is not right under the HMAC among them) gives the warning
 *     "starts with an empty replay record"; one good slot beside a written bad one "reads one slot"; else none;
 *   - a loaded record is within its bounds: at most 64 instances a sender, each number once, a previous epoch
 *     older than the current one, a previous handled stream only with a latest one, and another one;
 *   - what loaded is written again (into a file of the present size) and loads again the same, without a
 *     warning. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "fuzz.h"
#include "idevs_crypto.h"
#include "idevs_deployment.h"
#include "launcher_internal.h"
#include "replay_record.pb-c.h"

#define OLD_SLOT 65536u /* version 2's */
#define SLOT_MAX 65536u  /* OLD_SLOT, and this descriptor's (three services), at most */

/* Three services; the record may also name others (a former descriptor's), which are skipped. */
static const char descriptor[] =
    "{\"version\":1,\"process\":{\"name\":\"p\",\"uuid\":\"6f1c2a8e-4b7d-4e0a-9c3f-2d5e8a1b7c40\",\"logic\":\"l.so\"},"
    "\"operator_ca_sha256\":\"0000000000000000000000000000000000000000000000000000000000000000\","
    "\"services\":[{\"name\":\"store\",\"uuid\":\"1b4e28ba-2fa1-41d2-883f-0016d3cca427\",\"certificate\":\"s.crt\"},"
    "{\"name\":\"shop\",\"uuid\":\"2c5f39cb-3ab2-42e3-994a-1127e4ddb538\",\"certificate\":\"t.crt\"},"
    "{\"name\":\"taxi\",\"uuid\":\"3d6a4adc-4bc3-43f4-8a5b-2238f5eec649\",\"certificate\":\"x.crt\","
    "\"receipts\":true}],"
    "\"inputs\":[{\"name\":\"sales\",\"topic\":\"idevs/p/in/sales\",\"from\":\"store\"},"
    "{\"name\":\"orders\",\"topic\":\"idevs/p/in/orders\",\"from\":\"shop\"},"
    "{\"name\":\"rides\",\"topic\":\"idevs/p/in/rides\",\"from\":\"taxi\"}]}";

static idevs_deployment *deployment;
static char dir[64]; /* in memory when it can be (a fresh record file is synced) */
static int state_fd = -1;
static char file[IDEVS_UUID_STR_LEN + 8];
static uint8_t key[IDEVS_SHA256_LEN];

typedef struct fixture {
    idevs_launcher l;
    int warnings;
    char last[2048];
} fixture;

static void on_event(void *arg, idevs_launcher_event event, const char *line)
{
    fixture *f = arg;
    if (event == IDEVS_LAUNCHER_EVENT_WARNING) {
        f->warnings++;
        snprintf(f->last, sizeof f->last, "%s", line);
    }
}

static void remove_dir(void)
{
    unlinkat(state_fd, file, 0);
    unlinkat(state_fd, "sealing.key", 0);
    close(state_fd);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char why[256];
    FUZZ_SETUP(idevs_deployment_parse((const uint8_t *)descriptor, sizeof descriptor - 1, &deployment, why,
                                      sizeof why) == IDEVS_OK);
    snprintf(dir, sizeof dir, "%s/idevs-fuzz-replay.XXXXXX", access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
    FUZZ_SETUP(mkdtemp(dir) != NULL && chmod(dir, 0700) == 0);
    state_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    FUZZ_SETUP(state_fd >= 0);
    atexit(remove_dir);
    /* the fixed test secret, and the record's key as COMPARTMENT.md gives it:
     * HKDF-SHA256(ikm = sealing secret, salt = "", info = "idevs replay record v2" || program UUID) */
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    for (size_t i = 0; i < sizeof secret; i++)
        secret[i] = (uint8_t)(0xa0 + i);
    int fd = openat(state_fd, "sealing.key", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FUZZ_SETUP(fd >= 0 && write(fd, secret, sizeof secret) == (ssize_t)sizeof secret && close(fd) == 0);
    static const char label[] = "idevs replay record v2";
    uint8_t info[sizeof label - 1 + IDEVS_UUID_LEN];
    memcpy(info, label, sizeof label - 1);
    memcpy(info + sizeof label - 1, deployment->program.b, IDEVS_UUID_LEN);
    static const uint8_t no_salt[1] = {0};
    FUZZ_SETUP(idevs_hkdf_sha256(no_salt, 0, secret, sizeof secret, info, sizeof info, key, sizeof key) == IDEVS_OK);
    char program[IDEVS_UUID_STR_LEN + 1];
    idevs_uuid_format(&deployment->program, program);
    snprintf(file, sizeof file, "%s.replay", program);
    return 0;
}

static void open_fixture(fixture *f)
{
    memset(f, 0, sizeof *f);
    f->l.deployment = deployment;
    f->l.program = deployment->program;
    idevs_uuid_format(&f->l.program, f->l.program_str);
    snprintf(f->l.name, sizeof f->l.name, "p");
    f->l.cfg.on_event = on_event;
    f->l.cfg.event_arg = f;
    f->l.state_dirfd = state_fd;
    FUZZ_CHECK(replay_record_init(&f->l) == IDEVS_OK);
    char why[256];
    FUZZ_CHECK(replay_record_load(&f->l, why, sizeof why) == IDEVS_OK);
}

static void close_fixture(fixture *f)
{
    f->l.state_dirfd = -1; /* the target's */
    replay_record_free(&f->l);
}

/* ---- the second reader ---- */

static bool window_ok(const Idevs__Launcher__V1__ReplayWindow *w, replay_epoch *e)
{
    if (w == NULL || w->base.n_unknown_fields != 0 || w->n_bits != IDEVS_REPLAY_WORDS)
        return false;
    e->used = true;
    e->epoch = w->epoch;
    e->window.top = w->top;
    memcpy(e->window.bits, w->bits, sizeof e->window.bits);
    return true;
}

static bool instance_ok(uint32_t number, const Idevs__Launcher__V1__ReplayWindow *current,
                        const Idevs__Launcher__V1__ReplayWindow *previous, replay_sender *s)
{
    for (size_t k = 0; k < s->instance_count; k++)
        if (s->instances[k].instance == number)
            return false;
    replay_instance *in = &s->instances[s->instance_count++];
    in->instance = number;
    return window_ok(current, &in->cur) &&
           (previous == NULL || (window_ok(previous, &in->prev) && in->prev.epoch < in->cur.epoch));
}

typedef enum slot_kind { SLOT_EMPTY, SLOT_GOOD, SLOT_BAD } slot_kind;

/* What a slot holds; a good one's senders (service_count, zeroed by the caller) and generation. */
static slot_kind read_slot(const uint8_t *slot, size_t slot_bytes, replay_sender *senders, uint64_t *generation)
{
    uint32_t len = (uint32_t)slot[0] << 24 | (uint32_t)slot[1] << 16 | (uint32_t)slot[2] << 8 | slot[3];
    if (len == 0)
        return SLOT_EMPTY;
    if (len > slot_bytes - 4)
        return SLOT_BAD;
    Idevs__Launcher__V1__SealedReplayRecord *sealed =
        idevs__launcher__v1__sealed_replay_record__unpack(NULL, len, slot + 4);
    if (sealed == NULL)
        return SLOT_BAD;
    slot_kind kind = SLOT_BAD;
    uint8_t mac[IDEVS_SHA256_LEN];
    size_t mac_len = 0;
    Idevs__Launcher__V1__ReplayRecord *rec = NULL;
    if (sealed->base.n_unknown_fields != 0 || sealed->mac.len != sizeof mac ||
        EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof key, sealed->record.data, sealed->record.len, mac,
                  sizeof mac, &mac_len) == NULL ||
        mac_len != sizeof mac || memcmp(mac, sealed->mac.data, sizeof mac) != 0)
        goto out;
    rec = idevs__launcher__v1__replay_record__unpack(NULL, sealed->record.len, sealed->record.data);
    if (rec == NULL || rec->base.n_unknown_fields != 0 || (rec->version != 2 && rec->version != 3) ||
        rec->program.len != IDEVS_UUID_LEN ||
        memcmp(rec->program.data, deployment->program.b, IDEVS_UUID_LEN) != 0 ||
        rec->n_senders > IDEVS_DEPLOYMENT_MAX_ENTRIES)
        goto out;
    for (size_t k = 0; k < rec->n_senders; k++) {
        const Idevs__Launcher__V1__ReplaySender *e = rec->senders[k];
        if (e->base.n_unknown_fields != 0 || e->uuid.len != IDEVS_UUID_LEN)
            goto out;
        size_t i = 0;
        while (i < deployment->service_count && memcmp(deployment->services[i].uuid.b, e->uuid.data, 16) != 0)
            i++;
        if (i == deployment->service_count)
            continue;
        replay_sender *s = &senders[i];
        if (s->instance_count != 0)
            goto out; /* a sender twice */
        if (rec->version == 2 && (e->n_instances != 0 || e->instance_floor != 0 ||
                                  !instance_ok(0, e->current, e->previous, s)))
            goto out;
        if (rec->version == 3 && (e->current != NULL || e->previous != NULL || e->n_instances == 0 ||
                                  e->n_instances > 64))
            goto out;
        for (size_t k = 0; rec->version == 3 && k < e->n_instances; k++) {
            const Idevs__Launcher__V1__ReplayInstance *in = e->instances[k];
            if (in->base.n_unknown_fields != 0 || !instance_ok(in->instance, in->current, in->previous, s))
                goto out;
        }
        s->instance_floor = e->instance_floor;
        replay_epoch latest = {0}, previous = {0}; /* streams of handled ids, the stream in the epoch field */
        if (e->handled != NULL && !window_ok(e->handled, &latest))
            goto out;
        if (e->handled_previous != NULL && (e->handled == NULL || !window_ok(e->handled_previous, &previous) ||
                                            previous.epoch == latest.epoch))
            goto out;
        s->handled.latest = (idevs_handled_stream){latest.used, latest.epoch, latest.window};
        s->handled.previous = (idevs_handled_stream){previous.used, previous.epoch, previous.window};
    }
    *generation = rec->generation;
    kind = SLOT_GOOD;
out:
    if (rec != NULL)
        idevs__launcher__v1__replay_record__free_unpacked(rec, NULL);
    idevs__launcher__v1__sealed_replay_record__free_unpacked(sealed, NULL);
    return kind;
}

static bool epoch_same(const replay_epoch *a, const replay_epoch *b)
{
    if (a->used != b->used)
        return false;
    return !a->used || (a->epoch == b->epoch && a->window.top == b->window.top &&
                        memcmp(a->window.bits, b->window.bits, sizeof a->window.bits) == 0);
}

static bool stream_same(const idevs_handled_stream *a, const idevs_handled_stream *b)
{
    replay_epoch x = {a->used, a->stream, a->window}, y = {b->used, b->stream, b->window};
    return epoch_same(&x, &y);
}

static bool senders_same(const replay_sender *a, const replay_sender *b)
{
    for (size_t i = 0; i < deployment->service_count; i++) {
        if (a[i].instance_count != b[i].instance_count || a[i].instance_floor != b[i].instance_floor ||
            !stream_same(&a[i].handled.latest, &b[i].handled.latest) ||
            !stream_same(&a[i].handled.previous, &b[i].handled.previous))
            return false;
        for (size_t k = 0; k < a[i].instance_count; k++) {
            const replay_instance *x = &a[i].instances[k], *y = &b[i].instances[k];
            if (x->instance != y->instance || !epoch_same(&x->cur, &y->cur) || !epoch_same(&x->prev, &y->prev))
                return false;
        }
    }
    return true;
}

static void bounds_ok(const replay_sender *senders)
{
    for (size_t i = 0; i < deployment->service_count; i++) {
        const replay_sender *s = &senders[i];
        FUZZ_CHECK(s->instance_count <= IDEVS_INSTANCES_MAX);
        for (size_t k = 0; k < s->instance_count; k++) {
            const replay_instance *in = &s->instances[k];
            FUZZ_CHECK(in->cur.used && (!in->prev.used || in->prev.epoch < in->cur.epoch));
            for (size_t j = 0; j < k; j++)
                FUZZ_CHECK(s->instances[j].instance != in->instance);
        }
        FUZZ_CHECK(!s->handled.previous.used ||
                   (s->handled.latest.used && s->handled.previous.stream != s->handled.latest.stream));
        FUZZ_CHECK(s->instance_count > 0 || (!s->handled.latest.used && s->instance_floor == 0));
    }
}

/* ---- writing the file ---- */

/* u32 length || SealedReplayRecord{record, HMAC(record)} into slot. */
static void seal_into(uint8_t *slot, size_t slot_bytes, const uint8_t *record, size_t record_len)
{
    uint8_t mac[IDEVS_SHA256_LEN];
    size_t mac_len = 0;
    FUZZ_SETUP(EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, sizeof key, record, record_len, mac, sizeof mac,
                         &mac_len) != NULL);
    Idevs__Launcher__V1__SealedReplayRecord sealed = IDEVS__LAUNCHER__V1__SEALED_REPLAY_RECORD__INIT;
    sealed.record.data = (uint8_t *)record;
    sealed.record.len = record_len;
    sealed.mac.data = mac;
    sealed.mac.len = sizeof mac;
    size_t len = idevs__launcher__v1__sealed_replay_record__get_packed_size(&sealed);
    if (len > slot_bytes - 4)
        return; /* left empty */
    slot[0] = (uint8_t)(len >> 24);
    slot[1] = (uint8_t)(len >> 16);
    slot[2] = (uint8_t)(len >> 8);
    slot[3] = (uint8_t)len;
    idevs__launcher__v1__sealed_replay_record__pack(&sealed, slot + 4);
}

static void write_file(const uint8_t *bytes, size_t len)
{
    unlinkat(state_fd, file, 0);
    int fd = openat(state_fd, file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    FUZZ_SETUP(fd >= 0);
    for (size_t at = 0; at < len;) {
        ssize_t n = write(fd, bytes + at, len - at);
        FUZZ_SETUP(n > 0);
        at += (size_t)n;
    }
    FUZZ_SETUP(close(fd) == 0);
}

static uint8_t image[2 * SLOT_MAX];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4 * SLOT_MAX)
        return 0;
    unsigned mode = data[0] & 3u;
    size_t slot = replay_record_slot_bytes(deployment->service_count);
    FUZZ_SETUP(slot <= SLOT_MAX);
    size_t slot_bytes = data[0] & 8u ? OLD_SLOT : slot;
    const uint8_t *body = data + 1;
    size_t body_len = size - 1;
    const uint8_t *file_bytes = image;
    size_t file_len = 2 * slot_bytes;
    if (mode == 0) {
        file_bytes = body;
        file_len = body_len;
        slot_bytes = body_len / 2; /* two slots of whole 4 KiB are read, whatever their size */
    } else {
        memset(image, 0, sizeof image);
        const uint8_t *part[2] = {body, NULL};
        size_t part_len[2] = {body_len, 0};
        if (mode == 1 || mode == 3) {
            if (body_len < 2)
                return 0;
            size_t first = (size_t)body[0] << 8 | body[1];
            if (first > body_len - 2)
                first = body_len - 2;
            part[0] = body + 2;
            part_len[0] = first;
            part[1] = body + 2 + first;
            part_len[1] = body_len - 2 - first;
        }
        if (mode == 1) {
            for (int i = 0; i < 2; i++)
                memcpy(image + i * slot_bytes, part[i], part_len[i] < slot_bytes ? part_len[i] : slot_bytes);
        } else if (mode == 2) {
            seal_into(image + (data[0] & 4u ? slot_bytes : 0), slot_bytes, part[0], part_len[0]);
        } else {
            for (int i = 0; i < 2; i++)
                seal_into(image + i * slot_bytes, slot_bytes, part[i], part_len[i]);
        }
    }
    if (file_len == 0)
        return 0; /* an empty file is read as none (the first start) */
    write_file(file_bytes, file_len);

    /* what the second reader finds */
    size_t n = deployment->service_count;
    replay_sender *expect[2] = {calloc(n, sizeof(replay_sender)), calloc(n, sizeof(replay_sender))};
    FUZZ_SETUP(expect[0] != NULL && expect[1] != NULL);
    slot_kind kind[2] = {SLOT_BAD, SLOT_BAD};
    uint64_t generation[2] = {0, 0};
    if (file_len == 2 * slot_bytes && slot_bytes > 0 && slot_bytes % 4096 == 0)
        for (int i = 0; i < 2; i++)
            kind[i] = read_slot(file_bytes + i * slot_bytes, slot_bytes, expect[i], &generation[i]);
    int best = kind[0] != SLOT_GOOD ? (kind[1] == SLOT_GOOD ? 1 : -1)
               : kind[1] != SLOT_GOOD ? 0
                                      : generation[1] > generation[0];

    fixture *f = malloc(sizeof *f), *g = malloc(sizeof *g);
    FUZZ_SETUP(f != NULL && g != NULL);
    open_fixture(f);
    if (best < 0) {
        FUZZ_CHECK(f->warnings == 1 && strstr(f->last, "starts with an empty replay record") != NULL);
        replay_sender *none = calloc(n, sizeof(replay_sender));
        FUZZ_SETUP(none != NULL);
        FUZZ_CHECK(senders_same(f->l.replay.senders, none));
        free(none);
    } else {
        FUZZ_CHECK(senders_same(f->l.replay.senders, expect[best]));
        FUZZ_CHECK(f->l.replay.generation == generation[best]);
        if (kind[1 - best] == SLOT_BAD)
            FUZZ_CHECK(f->warnings == 1 && strstr(f->last, "reads one slot of its replay record") != NULL);
        else
            FUZZ_CHECK(f->warnings == 0);
    }
    bounds_ok(f->l.replay.senders);

    /* written again, and read back the same */
    f->l.replay.dirty = true;
    FUZZ_CHECK(replay_record_save(&f->l, REPLAY_SAVE_RELEASE));
    struct stat st;
    FUZZ_CHECK(fstatat(state_fd, file, &st, 0) == 0 && st.st_size == (off_t)(2 * slot) && (st.st_mode & 0777) == 0600);
    open_fixture(g);
    FUZZ_CHECK(g->warnings == 0);
    FUZZ_CHECK(senders_same(g->l.replay.senders, f->l.replay.senders));
    FUZZ_CHECK(g->l.replay.generation == f->l.replay.generation);
    close_fixture(g);
    close_fixture(f);
    free(f);
    free(g);
    free(expect[0]);
    free(expect[1]);
    return 0;
}
