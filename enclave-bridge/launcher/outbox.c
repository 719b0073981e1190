/* The outbox: outputs and requests kept until their receiver's receipt (docs/PROTOCOL.md section 9), so that
 * nothing the process released is lost between the broker and a service: not in the broker's queues, not with a
 * service that was away without a session, not when the broker is killed.
 *
 * Each kept publication is the file outbox/<message id in hex> in the process's state directory: an OutboxEntry
 * (replay_record.proto) holding the sealed envelope exactly as released, written (not synced, like the replay
 * record) before the publication leaves. Without a receipt it is published again, the same bytes, 5 s later, then
 * 10, 20, 40 s, then every 60 s, and at once after a broker restart; the receiver drops a copy it handled (by its
 * replay window, or by the message id it keeps) and receipts it again. After 65 minutes no receiver would open it
 * anyway (its key epoch is too old): it is given up, counted and warned about. The envelopes are sealed; the
 * files hold nothing the host may not see. */
#include <dirent.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "idevs_crypto.h"
#include "idevs_envelope.h"
#include "idevs_file.h"
#include "idevs_hex.h"
#include "launcher_internal.h"
#include "replay_record.pb-c.h"

#define OUTBOX_DIR "outbox"
#define ENTRY_VERSION 1u
#define NAME_LEN (2 * IDEVS_UUID_LEN)
#define ENTRY_MAX (IDEVS_CHANNEL_FRAME_MAX) /* an envelope and its topics */

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void entry_name(const idevs_msgid *id, char name[NAME_LEN + 1])
{
    idevs_hex_encode(id->b, IDEVS_UUID_LEN, name);
}

static bool append(idevs_launcher *l, const idevs_msgid *id, size_t service, int64_t created_ms, int64_t next_ms)
{
    outbox *o = &l->outbox;
    if (o->count == o->cap) {
        size_t cap = o->cap == 0 ? 64 : o->cap * 2;
        outbox_entry *grown = realloc(o->entries, cap * sizeof *grown);
        if (grown == NULL)
            return false;
        o->entries = grown;
        o->cap = cap;
    }
    o->entries[o->count++] = (outbox_entry){*id, service, created_ms, next_ms, 0};
    if (o->count == 1 || next_ms < o->next_due_ms)
        o->next_due_ms = next_ms;
    return true;
}

static outbox_entry *find(idevs_launcher *l, const idevs_msgid *id)
{
    for (size_t i = 0; i < l->outbox.count; i++)
        if (idevs_uuid_equal(&l->outbox.entries[i].id, id))
            return &l->outbox.entries[i];
    return NULL;
}

/* The receiver of a publication of this process: the service its envelope is sealed to. */
static bool receiver_of(const idevs_launcher *l, const uint8_t *env, size_t len, idevs_msgid *id, size_t *service)
{
    idevs_envelope_header h;
    if (idevs_envelope_peek(env, len, &h) != IDEVS_OK)
        return false;
    for (size_t i = 0; i < l->deployment->service_count; i++)
        if (idevs_uuid_equal(&h.recipient, &l->deployment->services[i].uuid)) {
            *id = h.message_id;
            *service = i;
            return true;
        }
    return false;
}

static void unkept(idevs_launcher *l, const char *why)
{
    l->stats.outbox_unkept++;
    if (l->outbox.write_failing)
        return;
    l->outbox.write_failing = true;
    launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                   "cannot keep its outputs until their receipts (%s): they leave all the same, and one lost on the "
                   "way is not sent again", why);
}

/* Reads the entries of the outbox directory dirfd: this process's own (into is -1), checked as if released now,
 * the unusable ones removed; or another broker's (into is this outbox's directory), each one this outbox lacks
 * copied into it, the source left as it is. Returns the number of entries taken, *bad the number refused. */
static size_t load_dir(idevs_launcher *l, int dirfd, int into, size_t *bad)
{
    outbox *o = &l->outbox;
    size_t taken = 0;
    *bad = 0;
    int scan = dup(dirfd);
    DIR *dir = scan >= 0 ? fdopendir(scan) : NULL;
    if (dir == NULL) {
        if (scan >= 0)
            close(scan);
        return 0;
    }
    for (struct dirent *e; (e = readdir(dir)) != NULL;) {
        if (strlen(e->d_name) != NAME_LEN || e->d_name[0] == '.') {
            if (into < 0 && strlen(e->d_name) == NAME_LEN + 4 && strcmp(e->d_name + NAME_LEN, ".new") == 0)
                unlinkat(dirfd, e->d_name, 0); /* a copy whose rename a crash cut short: the former one stays */
            continue;
        }
        uint8_t *data = NULL;
        size_t len = 0;
        char why[256];
        Idevs__Launcher__V1__OutboxEntry *k = NULL;
        bool good = launcher_state_read(dirfd, e->d_name, 1, ENTRY_MAX, &data, &len, why, sizeof why) == IDEVS_OK &&
                    data != NULL && (k = idevs__launcher__v1__outbox_entry__unpack(NULL, len, data)) != NULL &&
                    k->version == ENTRY_VERSION && k->base.n_unknown_fields == 0;
        idevs_msgid id;
        size_t service = 0;
        char name[NAME_LEN + 1];
        bool known = false;
        if (good) {
            /* What a former run of this process released, checked again as if it were released now. */
            Idevs__Bridge__V1__Publish p = IDEVS__BRIDGE__V1__PUBLISH__INIT;
            p.delivery_id = 1;
            p.topic = k->topic;
            p.envelope = k->envelope;
            p.qos = k->qos;
            p.response_topic = k->response_topic;
            p.correlation_data = k->correlation;
            good = supervise_publish_problem(l, &p, -1) == NULL &&
                   receiver_of(l, k->envelope.data, k->envelope.len, &id, &service);
            if (good)
                entry_name(&id, name);
            good = good && strcmp(name, e->d_name) == 0;
            known = good && into >= 0 && find(l, &id) != NULL;
            if (good && !known && into >= 0) {
                int fd = openat(into, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
                good = fd >= 0 && idevs_file_write_all(fd, data, len) == IDEVS_OK;
                if (fd >= 0 && close(fd) != 0)
                    good = false;
                if (!good && fd >= 0)
                    unlinkat(into, name, 0);
            }
            good = good && (known || o->count >= LAUNCHER_OUTBOX_MAX ? known : append(l, &id, service,
                                                                                     (int64_t)k->created_ms, 0));
        }
        if (k != NULL)
            idevs__launcher__v1__outbox_entry__free_unpacked(k, NULL);
        free(data);
        if (good && !known)
            taken++;
        if (!good) {
            if (into < 0)
                unlinkat(dirfd, e->d_name, 0);
            (*bad)++;
        }
    }
    closedir(dir);
    return taken;
}

void outbox_load(idevs_launcher *l)
{
    outbox *o = &l->outbox;
    if (o->dirfd >= 0)
        return;
    if (mkdirat(l->state_dirfd, OUTBOX_DIR, 0700) != 0 && errno != EEXIST)
        return unkept(l, strerror(errno));
    o->dirfd = openat(l->state_dirfd, OUTBOX_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (o->dirfd < 0)
        return unkept(l, strerror(errno));
    size_t bad = 0;
    (void)load_dir(l, o->dirfd, -1, &bad);
    if (bad > 0)
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "removed %zu unusable file(s) from its outbox", bad);
    if (o->count > 0)
        launcher_event(l, IDEVS_LAUNCHER_EVENT_NOTICE, "has %zu output(s) waiting for their receipts: sent again now",
                       o->count);
}

idevs_err outbox_adopt(idevs_launcher *l, int state_dirfd, size_t *taken, char *why, size_t why_len)
{
    outbox *o = &l->outbox;
    *taken = 0;
    if (o->dirfd < 0)
        return idevs_fail(why, why_len, IDEVS_ERR_NOT_NOW, "this broker's outbox is not open");
    int dirfd = openat(state_dirfd, OUTBOX_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? IDEVS_OK : idevs_fail(why, why_len, IDEVS_ERR_IO, "its outbox: %s", strerror(errno));
    size_t bad = 0;
    *taken = load_dir(l, dirfd, o->dirfd, &bad);
    close(dirfd);
    if (bad > 0)
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING, "left %zu unusable or surplus file(s) of the adopted outbox",
                       bad);
    return IDEVS_OK; /* what was taken is due at once: published again from here */
}

void outbox_free(idevs_launcher *l)
{
    free(l->outbox.entries);
    l->outbox.entries = NULL;
    l->outbox.count = l->outbox.cap = 0;
    if (l->outbox.dirfd >= 0)
        close(l->outbox.dirfd);
    l->outbox.dirfd = -1;
}

void outbox_keep(idevs_launcher *l, const idevs_launcher_publish *p, const uint8_t cert_digest[IDEVS_SHA256_LEN])
{
    outbox *o = &l->outbox;
    idevs_msgid id;
    size_t service;
    /* Receipts are not receipted; QoS 0 asks for no delivery; a service without receipts would never end it. */
    if (p->receipt || p->qos == 0 || !receiver_of(l, p->envelope, p->envelope_len, &id, &service) ||
        !l->deployment->services[service].receipts)
        return;
    /* A copy sealed anew (kept.c) replaces the one kept: its first release time stays. */
    outbox_entry *known = find(l, &id);
    if (o->dirfd < 0 || (known == NULL && o->count >= LAUNCHER_OUTBOX_MAX))
        return unkept(l, o->dirfd < 0 ? "no outbox directory" : "the outbox is full");
    Idevs__Launcher__V1__OutboxEntry k = IDEVS__LAUNCHER__V1__OUTBOX_ENTRY__INIT;
    k.version = ENTRY_VERSION;
    k.topic = (char *)p->topic;
    k.envelope.data = (uint8_t *)p->envelope;
    k.envelope.len = p->envelope_len;
    k.qos = (uint32_t)p->qos;
    k.response_topic = (char *)(p->response_topic != NULL ? p->response_topic : "");
    k.correlation.data = (uint8_t *)p->correlation;
    k.correlation.len = p->correlation_len;
    k.kept.data = (uint8_t *)p->kept;
    k.kept.len = p->kept_len;
    k.cert_digest.data = (uint8_t *)cert_digest;
    k.cert_digest.len = IDEVS_SHA256_LEN;
    int64_t created = known != NULL ? known->created_ms : wall_ms();
    k.created_ms = (uint64_t)created;
    size_t len = idevs__launcher__v1__outbox_entry__get_packed_size(&k);
    uint8_t *buf = malloc(len);
    char name[NAME_LEN + 1];
    entry_name(&id, name);
    /* A copy sealed anew replaces its file by a rename, so that a crash never leaves half of one; a new entry
     * is written in place (a file cut short is refused at the next load, and its output was not released). */
    char tmp[NAME_LEN + 8];
    snprintf(tmp, sizeof tmp, known != NULL ? "%s.new" : "%s", name);
    int fd = buf != NULL ? openat(o->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    bool ok = fd >= 0;
    if (ok) {
        idevs__launcher__v1__outbox_entry__pack(&k, buf);
        ok = idevs_file_write_all(fd, buf, len) == IDEVS_OK;
    }
    if (fd >= 0 && close(fd) != 0)
        ok = false;
    if (ok && known != NULL && renameat(o->dirfd, tmp, o->dirfd, name) != 0)
        ok = false;
    int saved = errno;
    free(buf);
    int64_t next = launcher_now_ms() + idevs_resend_delay_ms(1);
    if (ok && known != NULL) {
        known->next_ms = next;
        if (next < o->next_due_ms)
            o->next_due_ms = next;
    } else if (!ok || !append(l, &id, service, created, next)) {
        unlinkat(o->dirfd, tmp, 0);
        if (known == NULL)
            unlinkat(o->dirfd, name, 0);
        return unkept(l, ok ? "out of memory" : strerror(saved));
    }
    o->write_failing = false;
}

static void forget(idevs_launcher *l, size_t i)
{
    outbox *o = &l->outbox;
    char name[NAME_LEN + 1];
    entry_name(&o->entries[i].id, name);
    unlinkat(o->dirfd, name, 0);
    o->entries[i] = o->entries[--o->count];
}

void outbox_receipted(idevs_launcher *l, const Idevs__Bridge__V1__Receipted *r)
{
    outbox *o = &l->outbox;
    for (size_t k = 0; k < r->n_message_ids; k++) {
        if (r->message_ids[k].len != IDEVS_UUID_LEN)
            continue;
        for (size_t i = 0; i < o->count; i++)
            /* only its receiver's receipt ends it */
            if (o->entries[i].service == r->service &&
                memcmp(o->entries[i].id.b, r->message_ids[k].data, IDEVS_UUID_LEN) == 0) {
                forget(l, i);
                l->stats.outbox_receipted++;
                break;
            }
    }
}

/* Whether digest names the certificate an instance holds now (receivers know it, or learn it from its chain). */
static bool current_certificate(const idevs_launcher *l, const uint8_t digest[IDEVS_SHA256_LEN])
{
    for (size_t i = 0; i < l->instance_count; i++)
        if (memcmp(l->instances[i].cert_digest, digest, IDEVS_SHA256_LEN) == 0)
            return true;
    return false;
}

/* Sends entry e again: the same envelope, or, sealed under a former certificate of the compartment (a receiver
 * that knows only the current one cannot open it), a Reseal of its kept copy, which the compartment answers with
 * a Publish of delivery 0 that replaces the entry. Returns how long to wait before the next copy when it is not
 * the backoff (1 s while no compartment is ready to seal anew), 0 for the backoff, -1 when its file cannot be read
 * (nothing was sent). */
static int resend_one(idevs_launcher *l, const idevs_launcher_callbacks *cb, const outbox_entry *e)
{
    char name[NAME_LEN + 1];
    entry_name(&e->id, name);
    uint8_t *data = NULL;
    size_t len = 0;
    char why[256];
    int wait = 0;
    Idevs__Launcher__V1__OutboxEntry *k = NULL;
    if (launcher_state_read(l->outbox.dirfd, name, 1, ENTRY_MAX, &data, &len, why, sizeof why) != IDEVS_OK ||
        data == NULL || (k = idevs__launcher__v1__outbox_entry__unpack(NULL, len, data)) == NULL) {
        free(data);
        return -1;
    }
    bool stale = k->cert_digest.len != IDEVS_SHA256_LEN || !current_certificate(l, k->cert_digest.data);
    launcher_instance *c = pool_ready(l);
    if (stale && k->kept.len > 0) {
        if (c != NULL) {
            Idevs__Bridge__V1__Reseal rs = IDEVS__BRIDGE__V1__RESEAL__INIT;
            rs.kept = k->kept;
            Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
            f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_RESEAL;
            f.reseal = &rs;
            if (supervise_send(c, &f) == IDEVS_OK)
                l->stats.outbox_resealed++;
        } else {
            wait = 1000;
        }
    } else {
        bool rt = k->response_topic != NULL && k->response_topic[0] != '\0';
        idevs_launcher_publish pub = {
            .delivery_id = 0, .topic = k->topic, .envelope = k->envelope.data, .envelope_len = k->envelope.len,
            .qos = (int)k->qos, .response_topic = rt ? k->response_topic : NULL,
            .correlation = rt ? k->correlation.data : NULL, .correlation_len = rt ? k->correlation.len : 0,
        };
        cb->on_publish(cb->arg, &pub);
        l->stats.outbox_resent++;
    }
    idevs__launcher__v1__outbox_entry__free_unpacked(k, NULL);
    free(data);
    return wait;
}

void outbox_resend(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    outbox *o = &l->outbox;
    int64_t now = launcher_now_ms();
    if (o->count == 0 || cb == NULL || cb->on_publish == NULL || now < o->next_due_ms)
        return;
    int64_t wall = wall_ms(), next_due = INT64_MAX;
    unsigned sent = 0, expired = 0;
    for (size_t i = 0; i < o->count && sent < LAUNCHER_OUTBOX_RESENDS_PER_POLL;) {
        outbox_entry *e = &o->entries[i];
        if (e->next_ms > now) {
            next_due = e->next_ms < next_due ? e->next_ms : next_due;
            i++;
            continue;
        }
        /* (not wall - created_ms: a file's time, which a damaged file may hold near -2^63, would overflow) */
        if (e->created_ms < wall - LAUNCHER_OUTBOX_EXPIRE_MS) {
            forget(l, i);
            l->stats.outbox_expired++;
            expired++;
            continue;
        }
        int wait = resend_one(l, cb, e);
        if (wait >= 0)
            sent++;
        e->attempts++;
        e->next_ms = now + (wait > 0 ? wait : (int64_t)idevs_resend_delay_ms(e->attempts + 1)); /* sent once more */
        next_due = e->next_ms < next_due ? e->next_ms : next_due;
        i++;
    }
    /* Stopped at the bound per poll: the rest is due at once. */
    o->next_due_ms = sent >= LAUNCHER_OUTBOX_RESENDS_PER_POLL ? now : next_due;
    if (expired > 0 && now - o->expired_warned_ms >= 60000) {
        o->expired_warned_ms = now;
        launcher_event(l, IDEVS_LAUNCHER_EVENT_WARNING,
                       "gave up %u output(s) that no receiver receipted within %d minutes (%llu in all)", expired,
                       LAUNCHER_OUTBOX_EXPIRE_MS / 60000, (unsigned long long)l->stats.outbox_expired);
    }
}
