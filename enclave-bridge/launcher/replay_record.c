/* The replay record: which envelopes the compartments of this program have already processed, kept by the
 * launcher so that it outlives every compartment (crash, kill, hang) and, through the state directory, the
 * broker. A restarted compartment has its keys back but empty replay windows; without this record an envelope
 * recorded from the wire would be accepted a second time (docs/COMPARTMENT.md, "Replay across restarts").
 *
 * Per declared service, the two highest epochs in which a delivery was done, each with a sliding window over
 * sequence numbers (proto/idevs_replay.h). Only outcomes that prove the envelope was opened move it (Done with
 * OK or an error of the logic): the header is read without keys, so a forged header must never advance it.
 *
 * The file <program uuid>.replay (all integers big-endian):
 *   magic "idevsrpl" (8) || u32 version (1) || u32 count || program UUID (16)
 *   count x { sender UUID (16) || u32 flags (bit 0: current epoch, bit 1: previous epoch) || u32 0
 *             || current {u64 epoch || u64 top || 16 x u64 window bits} || previous {same} }
 *   HMAC-SHA256(key, everything before) (32)
 *   key = HKDF-SHA256(ikm = sealing secret (sealing.c), salt = "", info = "idevs replay record v1" || program)
 * It holds no secret and no payload: service UUIDs, epoch numbers and sequence numbers, which travel in clear.
 * It is not bound to the measurement: what a former version of the program did was done all the same (and with
 * fresh keys after a new measurement, its envelopes no longer open anyway). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "launcher_internal.h"

#define RECORD_MAGIC "idevsrpl"
#define RECORD_VERSION 1u
#define RECORD_KEY_LABEL "idevs replay record v1"
#define HEADER_LEN (8u + 4u + 4u + IDEVS_UUID_LEN)
#define WINDOW_LEN (8u + 8u + IDEVS_REPLAY_WORDS * 8u)
#define ENTRY_LEN (IDEVS_UUID_LEN + 4u + 4u + 2u * WINDOW_LEN)
#define MAC_LEN IDEVS_SHA256_LEN
#define FILE_MAX (HEADER_LEN + IDEVS_DEPLOYMENT_MAX_ENTRIES * ENTRY_LEN + MAC_LEN)
#define FLAG_CUR 1u
#define FLAG_PREV 2u

static void file_name(const idevs_launcher *l, char name[IDEVS_UUID_STR_LEN + 8])
{
    snprintf(name, IDEVS_UUID_STR_LEN + 8, "%s.replay", l->program_str);
}

idevs_err replay_record_init(idevs_launcher *l)
{
    size_t n = l->deployment->service_count;
    l->replay.senders = calloc(n > 0 ? n : 1, sizeof *l->replay.senders);
    return l->replay.senders != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
}

void replay_record_free(idevs_launcher *l)
{
    free(l->replay.senders);
    l->replay.senders = NULL;
    idevs_cleanse(l->replay.key, sizeof l->replay.key);
}

/* ---- deliveries ---- */

idevs_err replay_record_check(const idevs_launcher *l, const delivery *d)
{
    if (!d->tracked)
        return IDEVS_OK;
    const replay_sender *s = &l->replay.senders[d->sender];
    if (!s->cur.used || d->epoch > s->cur.epoch)
        return IDEVS_OK;
    if (d->epoch == s->cur.epoch)
        return idevs_replay_check(&s->cur.window, d->sequence);
    if (s->prev.used) {
        if (d->epoch == s->prev.epoch)
            return idevs_replay_check(&s->prev.window, d->sequence);
        /* Forgotten, so possibly done; a compartment that kept its state would call it expired too. */
        if (d->epoch < s->prev.epoch)
            return IDEVS_ERR_EPOCH_EXPIRED;
    }
    return IDEVS_OK; /* between the two kept epochs: nothing of that epoch was ever done */
}

/* Statuses a compartment gives only after idevs_envelope_open() succeeded (compartment/serve.c, logic_host.c):
 * the envelope was authentic, so its clear header is too. Refusals of the envelope itself (decrypt, replay,
 * epoch, certificate, sender, malformed) are left out, and so is unknown_input, which can also come first. */
static bool opened_first(idevs_err status)
{
    switch (status) {
    case IDEVS_OK:
    case IDEVS_ERR_LOGIC:
    case IDEVS_ERR_UNKNOWN_OUTPUT:
    case IDEVS_ERR_UNKNOWN_REQUEST:
        return true;
    default:
        return false;
    }
}

static void epoch_start(replay_epoch *e, uint64_t epoch)
{
    e->used = true;
    e->epoch = epoch;
    idevs_replay_init(&e->window);
}

bool replay_record_done(idevs_launcher *l, const delivery *d, idevs_err status)
{
    if (!d->tracked || !opened_first(status))
        return false;
    replay_sender *s = &l->replay.senders[d->sender];
    replay_epoch *e;
    if (!s->cur.used || d->epoch > s->cur.epoch) {
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
        return false; /* older than both: refused by the check from now on anyway */
    }
    (void)idevs_replay_accept(&e->window, d->sequence);
    l->replay.dirty = true;
    return true;
}

/* ---- the file ---- */

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 3; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint32_t get32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v = (v << 8) | p[i];
    return v;
}

static uint64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static idevs_err mac(const idevs_launcher *l, const uint8_t *data, size_t len, uint8_t out[MAC_LEN])
{
    size_t out_len = 0;
    unsigned char *r = EVP_Q_mac(NULL, "HMAC", NULL, "SHA256", NULL, l->replay.key, sizeof l->replay.key, data, len,
                                 out, MAC_LEN, &out_len);
    if (r == NULL || out_len != MAC_LEN) {
        ERR_clear_error();
        return IDEVS_ERR_CRYPTO;
    }
    return IDEVS_OK;
}

static void put_window(uint8_t *p, const replay_epoch *e)
{
    put64(p, e->epoch);
    put64(p + 8, e->window.top);
    for (size_t i = 0; i < IDEVS_REPLAY_WORDS; i++)
        put64(p + 16 + 8 * i, e->window.bits[i]);
}

static void get_window(const uint8_t *p, replay_epoch *e)
{
    e->used = true;
    e->epoch = get64(p);
    e->window.top = get64(p + 8);
    for (size_t i = 0; i < IDEVS_REPLAY_WORDS; i++)
        e->window.bits[i] = get64(p + 16 + 8 * i);
}

/* Parses data into senders (service_count entries, zeroed by the caller). NULL when it is good; otherwise what
 * is wrong. */
static const char *parse(const idevs_launcher *l, const uint8_t *data, size_t len, replay_sender *senders)
{
    if (len < HEADER_LEN + MAC_LEN)
        return "it is too short";
    if (memcmp(data, RECORD_MAGIC, 8) != 0)
        return "it is not a replay record";
    if (get32(data + 8) != RECORD_VERSION)
        return "it has another format version";
    uint32_t count = get32(data + 12);
    if (memcmp(data + 16, l->program.b, IDEVS_UUID_LEN) != 0)
        return "it belongs to another program";
    if (count > IDEVS_DEPLOYMENT_MAX_ENTRIES || len != HEADER_LEN + (size_t)count * ENTRY_LEN + MAC_LEN)
        return "its size does not match its number of senders";
    uint8_t expect[MAC_LEN];
    if (mac(l, data, len - MAC_LEN, expect) != IDEVS_OK)
        return "its authentication code cannot be computed";
    if (!idevs_ct_equal(expect, data + len - MAC_LEN, MAC_LEN))
        return "its authentication code does not match (damaged, or written under another sealing secret)";
    const idevs_deployment *dep = l->deployment;
    for (uint32_t k = 0; k < count; k++) {
        const uint8_t *p = data + HEADER_LEN + (size_t)k * ENTRY_LEN;
        size_t i = 0;
        while (i < dep->service_count && memcmp(dep->services[i].uuid.b, p, IDEVS_UUID_LEN) != 0)
            i++;
        if (i == dep->service_count)
            continue; /* a service a former descriptor declared */
        replay_sender *s = &senders[i];
        uint32_t flags = get32(p + 16);
        if (s->cur.used || (flags & FLAG_CUR) == 0 || (flags & ~(FLAG_CUR | FLAG_PREV)) != 0 || get32(p + 20) != 0)
            return "it has an invalid sender entry";
        get_window(p + 24, &s->cur);
        if (flags & FLAG_PREV) {
            get_window(p + 24 + WINDOW_LEN, &s->prev);
            if (s->prev.epoch >= s->cur.epoch)
                return "it has an invalid sender entry";
        }
    }
    return NULL;
}

idevs_err replay_record_load(idevs_launcher *l, char *why, size_t why_len)
{
    replay_record *r = &l->replay;
    if (r->loaded)
        return IDEVS_OK;
    uint8_t secret[IDEVS_SEALING_SECRET_LEN];
    idevs_err err = launcher_sealing_secret(l->state_dirfd, secret, why, why_len);
    if (err != IDEVS_OK)
        return err;
    uint8_t info[sizeof RECORD_KEY_LABEL - 1 + IDEVS_UUID_LEN];
    memcpy(info, RECORD_KEY_LABEL, sizeof RECORD_KEY_LABEL - 1);
    memcpy(info + sizeof RECORD_KEY_LABEL - 1, l->program.b, IDEVS_UUID_LEN);
    static const uint8_t no_salt[1] = {0};
    err = idevs_hkdf_sha256(no_salt, 0, secret, sizeof secret, info, sizeof info, r->key, sizeof r->key);
    idevs_cleanse(secret, sizeof secret);
    if (err != IDEVS_OK) {
        snprintf(why, why_len, "deriving the replay record's key failed");
        return err;
    }
    r->loaded = true;

    char name[IDEVS_UUID_STR_LEN + 8], problem[256] = "";
    file_name(l, name);
    uint8_t *data = NULL;
    size_t len = 0;
    err = launcher_state_read(l->state_dirfd, name, 0, FILE_MAX, &data, &len, problem, sizeof problem);
    if (err == IDEVS_OK && data == NULL)
        return IDEVS_OK; /* the first start */
    const char *bad = NULL;
    if (err == IDEVS_OK) {
        size_t n = l->deployment->service_count;
        replay_sender *parsed = calloc(n > 0 ? n : 1, sizeof *parsed);
        if (parsed == NULL) {
            free(data);
            return IDEVS_ERR_NOMEM;
        }
        bad = parse(l, data, len, parsed);
        free(data);
        if (bad == NULL) {
            free(r->senders);
            r->senders = parsed;
            return IDEVS_OK;
        }
        free(parsed);
    } else {
        bad = problem[0] != '\0' ? problem : idevs_strerror(err);
    }
    /* Start empty, and replace the file at the next write so that the loss is reported once. */
    r->dirty = true;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                   "starts with an empty replay record: '%s' is unusable: %s. Envelopes it recorded as done may be "
                   "accepted once more while their key epochs are still accepted", name, bad);
    return IDEVS_OK;
}

bool replay_record_save(idevs_launcher *l, bool force)
{
    replay_record *r = &l->replay;
    if (!r->loaded || !r->dirty)
        return true;
    int64_t now = launcher_now_ms();
    if (!force && now < r->next_save_ms)
        return false;
    r->next_save_ms = now + LAUNCHER_REPLAY_SAVE_MS;
    const idevs_deployment *dep = l->deployment;
    size_t count = 0;
    for (size_t i = 0; i < dep->service_count; i++)
        count += r->senders[i].cur.used;
    size_t len = HEADER_LEN + count * ENTRY_LEN + MAC_LEN;
    uint8_t *buf = calloc(1, len);
    idevs_err err = buf != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
    if (err == IDEVS_OK) {
        memcpy(buf, RECORD_MAGIC, 8);
        put32(buf + 8, RECORD_VERSION);
        put32(buf + 12, (uint32_t)count);
        memcpy(buf + 16, l->program.b, IDEVS_UUID_LEN);
        uint8_t *p = buf + HEADER_LEN;
        for (size_t i = 0; i < dep->service_count; i++) {
            const replay_sender *s = &r->senders[i];
            if (!s->cur.used)
                continue;
            memcpy(p, dep->services[i].uuid.b, IDEVS_UUID_LEN);
            put32(p + 16, FLAG_CUR | (s->prev.used ? FLAG_PREV : 0u));
            put_window(p + 24, &s->cur);
            if (s->prev.used)
                put_window(p + 24 + WINDOW_LEN, &s->prev);
            p += ENTRY_LEN;
        }
        err = mac(l, buf, len - MAC_LEN, p);
    }
    char name[IDEVS_UUID_STR_LEN + 8];
    file_name(l, name);
    int write_errno = 0;
    if (err == IDEVS_OK && (err = launcher_state_write(l->state_dirfd, name, buf, len)) == IDEVS_ERR_IO)
        write_errno = errno;
    free(buf);
    if (err == IDEVS_OK) {
        r->dirty = false;
        l->stats.replay_saves++;
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
    return l->replay.loaded && l->replay.dirty ? l->replay.next_save_ms : -1;
}
