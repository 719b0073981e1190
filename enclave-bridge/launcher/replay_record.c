/* The replay record: which envelopes the compartments of this program have already processed, kept by the
 * launcher so that it outlives every compartment (crash, kill, hang) and, through the state directory, the
 * broker. A restarted compartment has its keys back but empty replay windows; without this record an envelope
 * recorded from the wire would be accepted a second time (docs/COMPARTMENT.md, "Replay across restarts").
 *
 * Per declared service and instance of it (at most IDEVS_INSTANCES_MAX, evicted and floored by the rule of
 * base/idevs_replay.h, as the envelope library does), the two highest epochs in which a delivery was done, each
 * with a sliding window over sequence numbers (base/idevs_replay.h); per service, the two latest streams of its
 * numbered message ids, each with a window over the numbers handled (proto/idevs_receipt.h): a message its
 * sender sends again, sealed anew under another epoch and sequence (or by another instance) but with the same
 * id, is receipted again and not run again. Only outcomes that prove the envelope was opened move it (Done with
 * OK or an error of the logic): the header is read without keys, so a forged header must never advance it.
 *
 * The file <program uuid>.replay has two slots of replay_record_slot_bytes(services), each u32 (big-endian)
 * length || an encoded SealedReplayRecord (replay_record.proto): a ReplayRecord and its HMAC-SHA256 under
 *   key = HKDF-SHA256(ikm = sealing secret (sealing.c; the tpm backend's: tpm_seal.c), salt = "", info = "idevs replay record v2" || program).
 * A write goes, in place, to the slot the newer record does not occupy: it costs a pwrite (no new file, no
 * rename), and a write cut short by a crash leaves the other slot, the record before it, intact. Reading takes
 * the valid slot with the higher generation. Outputs leave after the pwrite (a crash of the broker cannot undo
 * it); fdatasync follows at most every LAUNCHER_REPLAY_SAVE_MS (a crash of the machine may undo what is not yet
 * synced). The file is made once, private, with both slots allocated, so a full file system does not stop it.
 * It holds no secret and no payload: service UUIDs, instance, epoch and sequence numbers, which travel in clear.
 * It is not bound to the measurement: what a former version of the program did was done all the same (and with
 * fresh keys after a new measurement, its envelopes no longer open anyway). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "launcher_internal.h"
#include "idevs_receipt.h"
#include "replay_record.pb-c.h"
#include "tpm_internal.h"

#define RECORD_VERSION 3u
#define RECORD_VERSION_SENDERS 2u /* one epoch pair per sender: read as its instance 0, then written anew */
#define RECORD_KEY_LABEL "idevs replay record v2"
#define MAC_LEN IDEVS_SHA256_LEN

/* Encoded sizes at most: a window (tag, length, epoch, top, packed bits), an instance (tag, length, number, two
 * windows), a sender (tag, length, uuid, two handled windows, its instances, floor), the rest (version,
 * program, generation, the sealing's MAC and lengths, the slot's u32). */
#define WINDOW_MAX (3u + 9u + 9u + 3u + 8u * IDEVS_REPLAY_WORDS)
#define INSTANCE_MAX (3u + 6u + 2u * WINDOW_MAX)
#define SENDER_MAX (4u + 18u + 2u * WINDOW_MAX + IDEVS_INSTANCES_MAX * INSTANCE_MAX + 9u)
#define RECORD_REST 256u
#define SLOT_UNIT 4096u /* every version's slot is a multiple (32 KiB, 64 KiB before instances) */

size_t replay_record_slot_bytes(size_t services)
{
    size_t bytes = RECORD_REST + services * SENDER_MAX;
    return (bytes + SLOT_UNIT - 1) / SLOT_UNIT * SLOT_UNIT;
}

/* A file of two slots of whole SLOT_UNITs, up to the largest a descriptor can need, is read (of a former version
 * or descriptor too); a write then makes one of this descriptor's size. */
#define FILE_MAX (2u * replay_record_slot_bytes(IDEVS_DEPLOYMENT_MAX_ENTRIES))

static void file_name(const idevs_launcher *l, char name[IDEVS_UUID_STR_LEN + 8])
{
    snprintf(name, IDEVS_UUID_STR_LEN + 8, "%s.replay", l->program_str);
}

idevs_err replay_record_init(idevs_launcher *l)
{
    size_t n = l->deployment->service_count;
    l->replay.fd = -1;
    l->replay.senders = calloc(n > 0 ? n : 1, sizeof *l->replay.senders);
    return l->replay.senders != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
}

void replay_record_free(idevs_launcher *l)
{
    free(l->replay.senders);
    l->replay.senders = NULL;
    if (l->replay.fd >= 0)
        close(l->replay.fd);
    l->replay.fd = -1;
    idevs_cleanse(l->replay.key, sizeof l->replay.key);
}

/* ---- deliveries ---- */

static replay_instance *instance_of(replay_sender *s, uint32_t instance)
{
    for (size_t i = 0; i < s->instance_count; i++)
        if (s->instances[i].instance == instance)
            return &s->instances[i];
    return NULL;
}

/* Whether an instance the record keeps nothing of sends an epoch its evicted ones may have used. */
static bool below_floor(const replay_sender *s, uint64_t epoch)
{
    return s->instance_floor != 0 && epoch <= s->instance_floor;
}

idevs_err replay_record_check(const idevs_launcher *l, const delivery *d)
{
    if (!d->tracked)
        return IDEVS_OK;
    replay_sender *sender = &l->replay.senders[d->sender];
    const replay_instance *s = instance_of(sender, d->instance);
    if (s == NULL)
        return below_floor(sender, d->epoch) ? IDEVS_ERR_EPOCH_FORGOTTEN : IDEVS_OK;
    if (d->epoch > s->cur.epoch)
        return IDEVS_OK;
    if (d->epoch == s->cur.epoch)
        return idevs_replay_check(&s->cur.window, d->sequence);
    if (s->prev.used) {
        if (d->epoch == s->prev.epoch)
            return idevs_replay_check(&s->prev.window, d->sequence);
        /* Forgotten, so possibly done (a compartment that kept its state would refuse it as expired, but the
         * record cannot tell whether its grace period is over: it keeps no time). */
        if (d->epoch < s->prev.epoch)
            return IDEVS_ERR_EPOCH_FORGOTTEN;
    }
    return IDEVS_OK; /* between the two kept epochs: nothing of that epoch was ever done */
}

idevs_err replay_record_handled(const idevs_launcher *l, const delivery *d, bool *handled)
{
    *handled = false;
    if (!d->tracked)
        return IDEVS_OK;
    idevs_err err = idevs_handled_check(&l->replay.senders[d->sender].handled, &d->message_id);
    if (err == IDEVS_ERR_REPLAY) {
        *handled = true;
        return IDEVS_OK;
    }
    return err;
}

static void epoch_start(replay_epoch *e, uint64_t epoch)
{
    e->used = true;
    e->epoch = epoch;
    idevs_replay_init(&e->window);
}

/* A new instance's empty epochs; at IDEVS_INSTANCES_MAX, in place of the oldest (idevs_replay.h). */
static replay_instance *instance_add(replay_sender *s, uint32_t instance)
{
    replay_instance *slot = &s->instances[0];
    if (s->instance_count < IDEVS_INSTANCES_MAX) {
        slot = &s->instances[s->instance_count++];
    } else {
        for (size_t i = 1; i < s->instance_count; i++) {
            const replay_instance *c = &s->instances[i];
            if (idevs_instance_older(c->cur.epoch, c->instance, slot->cur.epoch, slot->instance))
                slot = &s->instances[i];
        }
        if (slot->cur.epoch > s->instance_floor)
            s->instance_floor = slot->cur.epoch;
    }
    memset(slot, 0, sizeof *slot);
    slot->instance = instance;
    return slot;
}

bool replay_record_done(idevs_launcher *l, const delivery *d, idevs_err status)
{
    if (!d->tracked || !idevs_bridge_done_handled(status))
        return false;
    replay_sender *sender = &l->replay.senders[d->sender];
    replay_instance *s = instance_of(sender, d->instance);
    if (s == NULL && !below_floor(sender, d->epoch))
        s = instance_add(sender, d->instance);
    replay_epoch *e;
    if (s == NULL) {
        e = NULL; /* of an evicted instance, yet opened */
    } else if (!s->cur.used || d->epoch > s->cur.epoch) {
        if (s->cur.used)
            s->prev = s->cur;
        epoch_start(&s->cur, d->epoch);
        e = &s->cur;
    } else if (d->epoch == s->cur.epoch) {
        e = &s->cur;
    } else if (s->prev.used && d->epoch == s->prev.epoch) {
        e = &s->prev;
    } else if (!s->prev.used || d->epoch > s->prev.epoch) {
        epoch_start(&s->prev, d->epoch);
        e = &s->prev;
    } else {
        e = NULL; /* older than both epochs, yet opened */
    }
    if (e == NULL && d->receipt)
        return false;
    if (e != NULL)
        (void)idevs_replay_accept(&e->window, d->sequence);
    if (!d->receipt) /* its message id is handled all the same */
        idevs_handled_note(&sender->handled, &d->message_id);
    l->replay.dirty = true;
    return true;
}


/* ---- the file ---- */

static idevs_err mac(const uint8_t key[MAC_LEN], const uint8_t *data, size_t len, uint8_t out[MAC_LEN])
{
    size_t out_len = 0;
    unsigned char *r = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, key, MAC_LEN, data, len, out, MAC_LEN, &out_len);
    if (r == NULL || out_len != MAC_LEN) {
        ERR_clear_error();
        return IDEVS_ERR_CRYPTO;
    }
    return IDEVS_OK;
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static bool window_from(const Idevs__Launcher__V1__ReplayWindow *w, replay_epoch *e)
{
    if (w == NULL || w->n_bits != IDEVS_REPLAY_WORDS || w->base.n_unknown_fields != 0)
        return false;
    e->used = true;
    e->epoch = w->epoch;
    e->window.top = w->top;
    memcpy(e->window.bits, w->bits, sizeof e->window.bits);
    return true;
}

static bool handled_from(const Idevs__Launcher__V1__ReplayWindow *w, idevs_handled_stream *s)
{
    replay_epoch e;
    if (!window_from(w, &e))
        return false;
    *s = (idevs_handled_stream){.used = true, .stream = e.epoch, .window = e.window};
    return true;
}

/* One instance's epochs: a current window, and a previous one of an older epoch. */
static bool epochs_from(const Idevs__Launcher__V1__ReplayWindow *current,
                        const Idevs__Launcher__V1__ReplayWindow *previous, replay_instance *in)
{
    return window_from(current, &in->cur) &&
           (previous == NULL || (window_from(previous, &in->prev) && in->prev.epoch < in->cur.epoch));
}

/* One sender's entry into s (zeroed): in version 2 one epoch pair, its instance 0; since version 3 its
 * instances, each once, at most IDEVS_INSTANCES_MAX. */
static bool sender_from(const Idevs__Launcher__V1__ReplaySender *e, uint32_t version, replay_sender *s)
{
    if (version == RECORD_VERSION_SENDERS) {
        if (e->n_instances != 0 || e->instance_floor != 0 || !epochs_from(e->current, e->previous, &s->instances[0]))
            return false;
        s->instance_count = 1;
    } else {
        if (e->current != NULL || e->previous != NULL || e->n_instances == 0 ||
            e->n_instances > IDEVS_INSTANCES_MAX)
            return false;
        for (size_t k = 0; k < e->n_instances; k++) {
            const Idevs__Launcher__V1__ReplayInstance *in = e->instances[k];
            if (in->base.n_unknown_fields != 0 || instance_of(s, in->instance) != NULL)
                return false;
            s->instances[k].instance = in->instance;
            if (!epochs_from(in->current, in->previous, &s->instances[k]))
                return false;
            s->instance_count = k + 1;
        }
        s->instance_floor = e->instance_floor;
    }
    return (e->handled == NULL || handled_from(e->handled, &s->handled.latest)) &&
           (e->handled_previous == NULL || (e->handled != NULL &&
                                            handled_from(e->handled_previous, &s->handled.previous) &&
                                            idevs_handled_valid(&s->handled)));
}

/* Parses one slot into senders (service_count entries, zeroed by the caller). NULL when it is good (with its
 * generation); otherwise what is wrong. */
static const char *parse_slot(const idevs_launcher *l, const uint8_t key[MAC_LEN], const uint8_t *slot,
                              size_t slot_bytes, replay_sender *senders, uint64_t *generation, uint32_t *version,
                              uint64_t *counter)
{
    uint32_t len = get32(slot);
    if (len == 0)
        return "it is empty";
    if (len > slot_bytes - 4)
        return "its length is out of range";
    Idevs__Launcher__V1__SealedReplayRecord *sealed =
        idevs__launcher__v1__sealed_replay_record__unpack(NULL, len, slot + 4);
    if (sealed == NULL)
        return "it is not a replay record";
    const char *bad = NULL;
    uint8_t expect[MAC_LEN];
    if (sealed->base.n_unknown_fields != 0 || sealed->mac.len != MAC_LEN)
        bad = "it is not a replay record";
    else if (mac(key, sealed->record.data, sealed->record.len, expect) != IDEVS_OK)
        bad = "its authentication code cannot be computed";
    else if (!idevs_ct_equal(expect, sealed->mac.data, MAC_LEN))
        bad = "its authentication code does not match (damaged, or written under another sealing secret)";
    Idevs__Launcher__V1__ReplayRecord *rec =
        bad == NULL ? idevs__launcher__v1__replay_record__unpack(NULL, sealed->record.len, sealed->record.data) : NULL;
    if (bad == NULL && (rec == NULL || rec->base.n_unknown_fields != 0))
        bad = "its record cannot be decoded";
    else if (bad == NULL && rec->version != RECORD_VERSION && rec->version != RECORD_VERSION_SENDERS)
        bad = "it has another format version";
    else if (bad == NULL && (rec->program.len != IDEVS_UUID_LEN || memcmp(rec->program.data, l->program.b,
                                                                             IDEVS_UUID_LEN) != 0))
        bad = "it belongs to another program";
    else if (bad == NULL && rec->n_senders > IDEVS_DEPLOYMENT_MAX_ENTRIES)
        bad = "it names too many senders";
    const idevs_deployment *dep = l->deployment;
    for (size_t k = 0; bad == NULL && k < rec->n_senders; k++) {
        const Idevs__Launcher__V1__ReplaySender *e = rec->senders[k];
        if (e->uuid.len != IDEVS_UUID_LEN || e->base.n_unknown_fields != 0) {
            bad = "it has an invalid sender entry";
            break;
        }
        size_t i = 0;
        while (i < dep->service_count && memcmp(dep->services[i].uuid.b, e->uuid.data, IDEVS_UUID_LEN) != 0)
            i++;
        if (i == dep->service_count)
            continue; /* a service a former descriptor declared */
        if (senders[i].instance_count != 0 || !sender_from(e, rec->version, &senders[i]))
            bad = "it has an invalid sender entry";
    }
    if (bad == NULL) {
        *generation = rec->generation;
        *version = rec->version;
        *counter = rec->counter;
    }
    if (rec != NULL)
        idevs__launcher__v1__replay_record__free_unpacked(rec, NULL);
    idevs__launcher__v1__sealed_replay_record__free_unpacked(sealed, NULL);
    return bad;
}

/* The NV index of the tpm backend's counter, for messages (0 with another backend). */
static uint32_t counter_index(const idevs_launcher *l)
{
    return l->backend != NULL && idevs_backend_kind(l->backend) == IDEVS_BACKEND_TPM ? tpm_counter_index(&l->program) : 0;
}

/* Whether one slot of the file holds a record of ours (its authentication code matches). */
static bool usable(const idevs_launcher *l, const uint8_t *data, size_t len)
{
    size_t slot_bytes = len / 2, n = l->deployment->service_count;
    if (len % 2 != 0 || slot_bytes == 0 || slot_bytes % SLOT_UNIT != 0)
        return false;
    bool any = false;
    for (int i = 0; i < 2 && !any; i++) {
        replay_sender *senders = calloc(n > 0 ? n : 1, sizeof *senders);
        uint64_t generation, counter;
        uint32_t version;
        any = senders != NULL && parse_slot(l, l->replay.key, data + (size_t)i * slot_bytes, slot_bytes, senders,
                                            &generation, &version, &counter) == NULL;
        free(senders);
    }
    return any;
}

/* After a sync: the counter goes up to what the synced record carries, and later records carry one more. A
 * failure is warned about once; the records written meanwhile stay acceptable (at or above the counter). */
static void advance_counter(idevs_launcher *l)
{
    replay_record *r = &l->replay;
    if (r->counter == 0)
        return;
    bool has = false, created = false;
    uint64_t value = 0;
    char why[512] = "";
    if (launcher_rollback_counter(l, r->counter, &has, &value, &created, why, sizeof why) == IDEVS_OK &&
        value >= r->counter) {
        r->counter = value + 1;
        if (r->counter_failing)
            launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "advances its replay counter again");
        r->counter_failing = false;
    } else if (!r->counter_failing) {
        r->counter_failing = true;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                       "cannot advance its replay counter (%s): until it can, an older copy of the replay record "
                       "would not be told from the current one", why);
    }
}


/* The key that authenticates the record of the state directory dirfd: from its sealing secret (created when
 * absent and create is set). */
static idevs_err record_key(idevs_launcher *l, int dirfd, bool create, uint8_t key[MAC_LEN], char *why,
                            size_t why_len)
{
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    /* This broker's own: the backend's (the tpm backend's is sealed by the TPM); another broker's, moving its
     * partitions here: its sealing.key, never made here. */
    idevs_err err = dirfd == l->state_dirfd ? launcher_state_secret(l, secret, why, why_len)
                                            : launcher_sealing_secret(dirfd, create, secret, why, why_len);
    if (err != IDEVS_OK)
        return err;
    uint8_t info[sizeof RECORD_KEY_LABEL - 1 + IDEVS_UUID_LEN];
    memcpy(info, RECORD_KEY_LABEL, sizeof RECORD_KEY_LABEL - 1);
    memcpy(info + sizeof RECORD_KEY_LABEL - 1, l->program.b, IDEVS_UUID_LEN);
    static const uint8_t no_salt[1] = {0};
    err = idevs_hkdf_sha256(no_salt, 0, secret, sizeof secret, info, sizeof info, key, MAC_LEN);
    idevs_cleanse(secret, sizeof secret);
    if (err != IDEVS_OK)
        snprintf(why, why_len, "deriving the replay record's key failed");
    return err;
}

idevs_err replay_record_load(idevs_launcher *l, char *why, size_t why_len)
{
    replay_record *r = &l->replay;
    if (r->loaded)
        return IDEVS_OK;
    idevs_err err = record_key(l, l->state_dirfd, true, r->key, why, why_len);
    if (err != IDEVS_OK)
        return err;
    bool has_counter = false, created = false;
    uint64_t nv = 0;
    if ((err = launcher_rollback_counter(l, 0, &has_counter, &nv, &created, why, why_len)) != IDEVS_OK)
        return err;
    char name[IDEVS_UUID_STR_LEN + 8], problem[256] = "";
    file_name(l, name);
    uint8_t *data = NULL;
    size_t len = 0;
    err = launcher_state_read(l->state_dirfd, name, 0, FILE_MAX, &data, &len, problem, sizeof problem);
    /* A counter that was there already has seen records: none, or none usable, is a file removed or spoilt. */
    if (has_counter && !created && (err != IDEVS_OK || data == NULL || !usable(l, data, len))) {
        free(data);
        return idevs_fail(why, why_len, IDEVS_ERR_REPLAY,
                          "its replay record '%s' is %s, but the TPM's replay counter 0x%08x says records were "
                          "written: refused, since envelopes done before would be accepted again; docs/BACKENDS.md, "
                          "\"The NV counter\", says how to recover", name, data == NULL ? "missing" : "unusable",
                          counter_index(l));
    }
    r->counter = has_counter ? nv + 1 : 0;
    r->loaded = true;
    if (err == IDEVS_OK && data == NULL) {
        /* The first start. With a new counter, a record now: from here on, no record means a removed one. */
        if (created) {
            r->dirty = true;
            replay_record_save(l, REPLAY_SAVE_FINAL);
        }
        return IDEVS_OK;
    }
    const char *bad = NULL;
    size_t slot_bytes = len / 2;
    if (err == IDEVS_OK && (len % 2 != 0 || slot_bytes == 0 || slot_bytes % SLOT_UNIT != 0)) {
        bad = "it has another size (not two slots of whole 4 KiB)";
    } else if (err == IDEVS_OK) {
        size_t n = l->deployment->service_count;
        replay_sender *slot_senders[2] = {calloc(n > 0 ? n : 1, sizeof(replay_sender)),
                                          calloc(n > 0 ? n : 1, sizeof(replay_sender))};
        if (slot_senders[0] == NULL || slot_senders[1] == NULL) {
            free(slot_senders[0]);
            free(slot_senders[1]);
            free(data);
            return IDEVS_ERR_NOMEM;
        }
        uint64_t generation[2] = {0, 0}, counter[2] = {0, 0};
        uint32_t version[2] = {0, 0};
        const char *slot_bad[2];
        for (int i = 0; i < 2; i++)
            slot_bad[i] = parse_slot(l, r->key, data + (size_t)i * slot_bytes, slot_bytes, slot_senders[i],
                                     &generation[i], &version[i], &counter[i]);
        int best = slot_bad[0] != NULL ? 1 : slot_bad[1] != NULL ? 0 : generation[1] > generation[0];
        /* An empty slot is one never written (the file's first write goes to the second). */
        bool empty[2] = {get32(data) == 0, get32(data + slot_bytes) == 0};
        if (slot_bad[best] == NULL && has_counter && counter[best] < nv) {
            free(slot_senders[0]);
            free(slot_senders[1]);
            free(data);
            return idevs_fail(why, why_len, IDEVS_ERR_REPLAY,
                              "its replay record '%s' is older than the TPM's replay counter 0x%08x (record at %llu, "
                              "counter at %llu): an earlier copy of the file was put back. Refused, since envelopes "
                              "done since would be accepted again; docs/BACKENDS.md, \"The NV counter\", says how "
                              "to recover", name, counter_index(l), (unsigned long long)counter[best],
                              (unsigned long long)nv);
        }
        if (slot_bad[best] == NULL) {
            r->counter = has_counter ? (counter[best] > nv ? counter[best] : nv) + 1 : 0;
            if (slot_bytes != replay_record_slot_bytes(n) || version[best] != RECORD_VERSION)
                r->dirty = true; /* written at once, in this format, into a file of this descriptor's size */
            free(r->senders);
            r->senders = slot_senders[best];
            r->generation = generation[best];
            r->newest_slot = best;
            /* A count near its end (only a forged file has one) starts again at 1, in a fresh file: a write of
             * a generation that wrapped would never be read as the newer. */
            if (r->generation >= UINT64_C(1) << 63)
                r->replace = true;
            free(slot_senders[1 - best]);
            free(data);
            if (slot_bad[1 - best] != NULL && !empty[1 - best])
                /* A write cut short by a crash (its outputs never left: harmless), or damage to the newer slot. */
                launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                               "reads one slot of its replay record '%s', the other is unusable: %s. Unless a crash "
                               "cut its write short, envelopes done in its last write may be accepted once more",
                               name, slot_bad[1 - best]);
            return IDEVS_OK;
        }
        bad = slot_bad[empty[0] ? 1 : 0]; /* both unusable: the reason of one that was written */
        free(slot_senders[0]);
        free(slot_senders[1]);
    } else {
        bad = problem[0] != '\0' ? problem : idevs_strerror(err);
    }
    free(data);
    /* Start empty, and write at the next save, into a fresh file, so that the loss is reported once: a slot of
     * the unusable file left beside the first write would be reported again at the next start. */
    r->dirty = true;
    r->replace = true;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                   "starts with an empty replay record: '%s' is unusable: %s. Envelopes it recorded as done may be "
                   "accepted once more while their key epochs are still accepted", name, bad);
    if (created)
        replay_record_save(l, REPLAY_SAVE_FINAL);
    return IDEVS_OK;
}

/* The record's file, open for writing: the one there when it is a private regular file of ours of the right
 * size (and not to be replaced); otherwise a fresh one in its place, allocated (both slots) and its directory
 * entry synced. -1 with errno when it cannot be had. */
static int open_for_writing(const idevs_launcher *l, const char *name)
{
    size_t file_bytes = 2u * replay_record_slot_bytes(l->deployment->service_count);
    int fd = openat(l->state_dirfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd >= 0 && !l->replay.replace && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == geteuid() &&
        (st.st_mode & (S_IRWXG | S_IRWXO)) == 0 && st.st_size == (off_t)file_bytes)
        return fd;
    if (fd >= 0)
        close(fd);
    else if (errno != ENOENT && errno != ELOOP)
        return -1; /* EACCES, EROFS ...: the caller says so */
    /* Absent, or not fit (a symlink, another owner or mode, an older format, unusable): replaced by a fresh one. */
    if (unlinkat(l->state_dirfd, name, 0) != 0 && errno != ENOENT)
        return -1;
    fd = openat(l->state_dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return -1;
    int e = posix_fallocate(fd, 0, (off_t)file_bytes); /* both slots' blocks now: a full disk later is no matter */
    if (e == 0 && (fsync(fd) != 0 || fsync(l->state_dirfd) != 0))
        e = errno;
    if (e != 0) {
        close(fd);
        unlinkat(l->state_dirfd, name, 0);
        errno = e;
        return -1;
    }
    return fd;
}

/* w, pointing into window: the handled streams are written as windows too, the stream in the epoch field. */
static Idevs__Launcher__V1__ReplayWindow *put_window(Idevs__Launcher__V1__ReplayWindow *w, uint64_t number,
                                                     const idevs_replay *window)
{
    idevs__launcher__v1__replay_window__init(w);
    w->epoch = number;
    w->top = window->top;
    w->n_bits = IDEVS_REPLAY_WORDS;
    w->bits = (uint64_t *)window->bits;
    return w;
}

#define SENDER_WINDOWS (2u + 2u * IDEVS_INSTANCES_MAX)

/* Encodes the record with the next generation into slot (u32 length || SealedReplayRecord). */
static idevs_err encode_slot(const idevs_launcher *l, uint64_t generation, uint8_t *slot, size_t slot_bytes,
                             size_t *slot_len)
{
    const replay_record *r = &l->replay;
    const idevs_deployment *dep = l->deployment;
    size_t n = dep->service_count > 0 ? dep->service_count : 1;
    Idevs__Launcher__V1__ReplaySender *senders = calloc(n, sizeof *senders);
    Idevs__Launcher__V1__ReplaySender **sender_ptrs = calloc(n, sizeof *sender_ptrs);
    Idevs__Launcher__V1__ReplayInstance *instances = calloc(n * IDEVS_INSTANCES_MAX, sizeof *instances);
    Idevs__Launcher__V1__ReplayInstance **instance_ptrs = calloc(n * IDEVS_INSTANCES_MAX, sizeof *instance_ptrs);
    Idevs__Launcher__V1__ReplayWindow *windows = calloc(n * SENDER_WINDOWS, sizeof *windows);
    idevs_err err = senders != NULL && sender_ptrs != NULL && instances != NULL && instance_ptrs != NULL &&
                    windows != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
    Idevs__Launcher__V1__ReplayRecord rec = IDEVS__LAUNCHER__V1__REPLAY_RECORD__INIT;
    rec.version = RECORD_VERSION;
    rec.program.data = (uint8_t *)l->program.b;
    rec.program.len = IDEVS_UUID_LEN;
    rec.generation = generation;
    rec.counter = r->counter;
    rec.senders = sender_ptrs;
    for (size_t i = 0; err == IDEVS_OK && i < dep->service_count; i++) {
        const replay_sender *s = &r->senders[i];
        if (s->instance_count == 0)
            continue;
        size_t at = rec.n_senders;
        Idevs__Launcher__V1__ReplaySender *e = &senders[at];
        Idevs__Launcher__V1__ReplayWindow *w = &windows[at * SENDER_WINDOWS];
        idevs__launcher__v1__replay_sender__init(e);
        e->uuid.data = (uint8_t *)dep->services[i].uuid.b;
        e->uuid.len = IDEVS_UUID_LEN;
        e->instance_floor = s->instance_floor;
        if (s->handled.latest.used)
            e->handled = put_window(w++, s->handled.latest.stream, &s->handled.latest.window);
        if (s->handled.previous.used)
            e->handled_previous = put_window(w++, s->handled.previous.stream, &s->handled.previous.window);
        e->instances = &instance_ptrs[at * IDEVS_INSTANCES_MAX];
        for (size_t k = 0; k < s->instance_count; k++) {
            const replay_instance *in = &s->instances[k];
            Idevs__Launcher__V1__ReplayInstance *out = &instances[at * IDEVS_INSTANCES_MAX + k];
            idevs__launcher__v1__replay_instance__init(out);
            out->instance = in->instance;
            out->current = put_window(w++, in->cur.epoch, &in->cur.window);
            if (in->prev.used)
                out->previous = put_window(w++, in->prev.epoch, &in->prev.window);
            e->instances[e->n_instances++] = out;
        }
        sender_ptrs[rec.n_senders++] = e;
    }
    uint8_t *record = NULL;
    size_t record_len = err == IDEVS_OK ? idevs__launcher__v1__replay_record__get_packed_size(&rec) : 0;
    uint8_t tag[MAC_LEN];
    if (err == IDEVS_OK && (record = malloc(record_len > 0 ? record_len : 1)) == NULL)
        err = IDEVS_ERR_NOMEM;
    if (err == IDEVS_OK) {
        idevs__launcher__v1__replay_record__pack(&rec, record);
        err = mac(l->replay.key, record, record_len, tag);
    }
    if (err == IDEVS_OK) {
        Idevs__Launcher__V1__SealedReplayRecord sealed = IDEVS__LAUNCHER__V1__SEALED_REPLAY_RECORD__INIT;
        sealed.record.data = record;
        sealed.record.len = record_len;
        sealed.mac.data = tag;
        sealed.mac.len = MAC_LEN;
        size_t len = idevs__launcher__v1__sealed_replay_record__get_packed_size(&sealed);
        if (len > slot_bytes - 4) {
            err = IDEVS_ERR_TOO_LARGE; /* cannot happen: the slot's size is that of the most it keeps */
        } else {
            slot[0] = (uint8_t)(len >> 24);
            slot[1] = (uint8_t)(len >> 16);
            slot[2] = (uint8_t)(len >> 8);
            slot[3] = (uint8_t)len;
            idevs__launcher__v1__sealed_replay_record__pack(&sealed, slot + 4);
            *slot_len = 4 + len;
        }
    }
    free(record);
    free(windows);
    free(instance_ptrs);
    free(instances);
    free(sender_ptrs);
    free(senders);
    return err;
}

bool replay_record_save(idevs_launcher *l, replay_save when)
{
    replay_record *r = &l->replay;
    if (!r->loaded || (!r->dirty && (when == REPLAY_SAVE_RELEASE || !r->unsynced)))
        return true;
    int64_t now = launcher_now_ms();
    bool due = now >= r->next_save_ms;
    if (when == REPLAY_SAVE_DUE && !due)
        return false;
    if (when == REPLAY_SAVE_RELEASE && r->save_failing && !due)
        return false; /* a failing directory is retried every LAUNCHER_REPLAY_SAVE_MS, not on every pass */
    bool sync = when != REPLAY_SAVE_RELEASE, was_unsynced = r->unsynced;
    char name[IDEVS_UUID_STR_LEN + 8];
    file_name(l, name);
    idevs_err err = IDEVS_OK;
    int write_errno = 0;
    if (r->dirty) {
        size_t slot_len = 0, slot_bytes = replay_record_slot_bytes(l->deployment->service_count);
        uint8_t *slot = malloc(slot_bytes);
        bool fresh = r->replace; /* a fresh file counts from 1 again, its first write into the second slot */
        uint64_t generation = fresh ? 1 : r->generation + 1;
        err = slot != NULL ? encode_slot(l, generation, slot, slot_bytes, &slot_len) : IDEVS_ERR_NOMEM;
        if (err == IDEVS_OK && r->fd < 0) {
            if ((r->fd = open_for_writing(l, name)) < 0) {
                err = IDEVS_ERR_IO;
                write_errno = errno;
            } else {
                r->replace = false;
            }
        }
        /* into the slot the newer record does not occupy (the first write of a file: the second) */
        int to = fresh ? 1 : 1 - r->newest_slot;
        if (err == IDEVS_OK) {
            ssize_t n = pwrite(r->fd, slot, slot_len, (off_t)((size_t)to * slot_bytes));
            if (n < 0 || (size_t)n != slot_len) {
                err = IDEVS_ERR_IO;
                write_errno = n < 0 ? errno : EIO;
            }
        }
        free(slot);
        if (err == IDEVS_OK) {
            r->generation = generation;
            r->newest_slot = to;
            r->dirty = false;
            r->unsynced = true;
            l->stats.replay_saves++;
        }
    }
    if (err == IDEVS_OK && sync && r->unsynced) {
        if (fdatasync(r->fd) != 0) {
            err = IDEVS_ERR_IO;
            write_errno = errno;
        } else {
            r->unsynced = false;
            advance_counter(l);
        }
    }
    /* The clock runs from a sync, a failure, or the first unsynced write after a sync: what is written is synced
     * within LAUNCHER_REPLAY_SAVE_MS. */
    if (sync || err != IDEVS_OK || !was_unsynced)
        r->next_save_ms = now + LAUNCHER_REPLAY_SAVE_MS;
    if (err != IDEVS_OK && r->fd >= 0) {
        close(r->fd); /* opened afresh at the next try */
        r->fd = -1;
    }
    if (err == IDEVS_OK) {
        if (r->save_failing)
            launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "wrote its replay record '%s' again", name);
        r->save_failing = false;
    } else if (!r->save_failing) {
        r->save_failing = true;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                       "cannot write its replay record '%s' in the state directory (%s); retried every %u ms. Until "
                       "then, a broker restart would forget the envelopes done since the last write",
                       name, write_errno != 0 ? strerror(write_errno) : idevs_strerror(err), LAUNCHER_REPLAY_SAVE_MS);
    }
    return err == IDEVS_OK;
}

int64_t replay_record_deadline(const idevs_launcher *l)
{
    return l->replay.loaded && (l->replay.dirty || l->replay.unsynced) ? l->replay.next_save_ms : -1;
}

/* ---- another broker's record (docs/SCALING.md, "Moving partitions") ---- */

/* Marks every number of window w as done in this record, as deliveries of (sender, instance, epoch) would. */
static void merge_window(idevs_launcher *l, size_t sender, uint32_t instance, uint64_t epoch, const idevs_replay *w)
{
    delivery probe;
    memset(&probe, 0, sizeof probe);
    probe.tracked = true;
    probe.receipt = true; /* the message ids are merged apart, from the handled windows */
    probe.sender = sender;
    probe.instance = instance;
    probe.epoch = epoch;
    uint64_t low = w->top >= IDEVS_REPLAY_WINDOW ? w->top - IDEVS_REPLAY_WINDOW + 1 : 1;
    for (uint64_t s = low; w->top != 0 && s <= w->top; s++)
        if (w->bits[(s % IDEVS_REPLAY_WINDOW) / 64] >> (s % 64) & 1u) {
            probe.sequence = s;
            (void)replay_record_done(l, &probe, IDEVS_OK);
        }
}

static void merge_handled(idevs_handled *into, const idevs_handled_stream *h)
{
    if (!h->used)
        return;
    uint8_t stream[IDEVS_MSGID_STREAM_LEN];
    for (size_t i = 0; i < IDEVS_MSGID_STREAM_LEN; i++)
        stream[i] = (uint8_t)(h->stream >> (8 * (IDEVS_MSGID_STREAM_LEN - 1 - i)));
    const idevs_replay *w = &h->window;
    uint64_t low = w->top >= IDEVS_REPLAY_WINDOW ? w->top - IDEVS_REPLAY_WINDOW + 1 : 1;
    for (uint64_t n = low; w->top != 0 && n <= w->top; n++)
        if (w->bits[(n % IDEVS_REPLAY_WINDOW) / 64] >> (n % 64) & 1u) {
            idevs_msgid id = idevs_msgid_numbered(stream, n);
            idevs_handled_note(into, &id);
        }
}

idevs_err replay_record_adopt(idevs_launcher *l, int dirfd, char *why, size_t why_len)
{
    /* A TPM-sealed secret opens only on its own host: a tpm broker's record cannot be read elsewhere. */
    if (l->backend != NULL && idevs_backend_kind(l->backend) == IDEVS_BACKEND_TPM)
        return idevs_fail(why, why_len, IDEVS_ERR_CONFIG, "the tpm backend's replay record is authenticated by a "
                          "secret only its own host's TPM unseals: moving partitions takes the process backend");
    uint8_t key[MAC_LEN];
    idevs_err err = record_key(l, dirfd, false, key, why, why_len);
    if (err != IDEVS_OK)
        return err;
    char name[IDEVS_UUID_STR_LEN + 8], problem[256] = "";
    file_name(l, name);
    uint8_t *data = NULL;
    size_t len = 0;
    err = launcher_state_read(dirfd, name, 0, FILE_MAX, &data, &len, problem, sizeof problem);
    if (err != IDEVS_OK || data == NULL) {
        idevs_cleanse(key, sizeof key);
        free(data);
        snprintf(why, why_len, "its replay record '%s': %s", name, err != IDEVS_OK ? problem : "there is none");
        return err != IDEVS_OK ? err : IDEVS_ERR_IO;
    }
    size_t n = l->deployment->service_count, slot_bytes = len / 2;
    replay_sender *slot[2] = {calloc(n > 0 ? n : 1, sizeof(replay_sender)), calloc(n > 0 ? n : 1, sizeof(replay_sender))};
    const char *bad[2] = {"it has another size", "it has another size"};
    uint64_t generation[2] = {0, 0}, counter[2] = {0, 0};
    uint32_t version[2] = {0, 0};
    if (slot[0] != NULL && slot[1] != NULL && len % 2 == 0 && slot_bytes > 0 && slot_bytes % SLOT_UNIT == 0)
        for (int i = 0; i < 2; i++)
            bad[i] = parse_slot(l, key, data + (size_t)i * slot_bytes, slot_bytes, slot[i], &generation[i], &version[i],
                                &counter[i]);
    idevs_cleanse(key, sizeof key);
    free(data);
    int best = bad[0] != NULL ? 1 : bad[1] != NULL ? 0 : generation[1] > generation[0];
    if (slot[0] == NULL || slot[1] == NULL || bad[best] != NULL) {
        snprintf(why, why_len, "its replay record '%s' is unusable: %s", name,
                 slot[0] == NULL || slot[1] == NULL ? "out of memory" : bad[best]);
        free(slot[0]);
        free(slot[1]);
        return slot[0] == NULL || slot[1] == NULL ? IDEVS_ERR_NOMEM : IDEVS_ERR_INVALID_ARG;
    }
    /* In the order deliveries would have come: older epochs first, ascending numbers. */
    for (size_t i = 0; i < n; i++) {
        const replay_sender *s = &slot[best][i];
        for (size_t k = 0; k < s->instance_count; k++) {
            const replay_instance *in = &s->instances[k];
            if (in->prev.used)
                merge_window(l, i, in->instance, in->prev.epoch, &in->prev.window);
            if (in->cur.used)
                merge_window(l, i, in->instance, in->cur.epoch, &in->cur.window);
        }
        if (s->instance_floor > l->replay.senders[i].instance_floor)
            l->replay.senders[i].instance_floor = s->instance_floor;
        merge_handled(&l->replay.senders[i].handled, &s->handled.previous);
        merge_handled(&l->replay.senders[i].handled, &s->handled.latest);
    }
    free(slot[0]);
    free(slot[1]);
    l->replay.dirty = true;
    if (!replay_record_save(l, REPLAY_SAVE_FINAL)) {
        snprintf(why, why_len, "the merged replay record cannot be written to this broker's state directory");
        return IDEVS_ERR_IO;
    }
    return IDEVS_OK;
}
