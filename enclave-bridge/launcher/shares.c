/* Queue shares: how much of the queue one MQTT client, and one declared sender, may hold. The keyless gate cannot
 * tell a real envelope from a copy of its clear header on a body that does not open, so without shares one client
 * publishing such copies fills queue_depth and every service's envelopes after it are refused (queue_full). With
 * them, with Q = queue_depth:
 *   - a client (by its MQTT client id) holds at most max(1, Q/2) deliveries and half the queue's bytes: a client
 *     alone gets half the queue, and whatever one client does, the other half stays for the others
 *     (queue_client_share);
 *   - when more than one service may send to the process, envelopes naming one sender hold at most
 *     max(1, Q - Q/4) deliveries and three quarters of the bytes, whichever clients published them: a flood naming
 *     the store, from any number of client ids, leaves a quarter of the queue to the other senders
 *     (queue_sender_share). Within one sender the real client still has a quarter beside one flooding client
 *     (Q - Q/4 - Q/2).
 * A client or sender holding nothing may always queue one envelope (up to max_payload): the total decides, as
 * for an empty queue.
 * A share is fixed rather than shrinking with the number of clients queued: what a client may still queue then
 * never depends on what others did, and the guarantee above needs no eviction of accepted deliveries. Client ids
 * are the clients' choice: many ids together can still fill the queue (docs/OPERATOR.md, "Queue shares": give
 * input topics to authenticated clients only). A delivery without a client id (idevs_launcher_deliver(): a
 * program of the broker's host, not an MQTT client) is bound by the total only.
 *
 * Counts are kept from acceptance until the delivery is forgotten (done, refused, given up, cleared), exactly as
 * the queue's count and bytes. Clients are kept by their id (compared whole, so that no chosen id can be counted
 * against another client), in an open-addressing table indexed by a keyed hash. A second such table finds the
 * queued deliveries with a given clear header (sender, instance, epoch, sequence), so that telling a copy of a
 * queued envelope costs one lookup, not a walk of the queue, however long the queue is. */
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "launcher_internal.h"

struct share_client {
    char *id;
    uint64_t hash;
    size_t count; /* deliveries of this client not yet forgotten; the entry goes at 0 */
    size_t bytes; /* their envelopes' bytes */
};

/* ---- open addressing, at most half full, deletion by moving entries back (no tombstones) ---- */

typedef uint64_t (*entry_hash)(const idevs_launcher *l, const void *entry);

/* Room for one more entry; false when out of memory (nothing changed). */
static bool table_grow(const idevs_launcher *l, slot_table *t, entry_hash hash)
{
    if ((t->used + 1) * 2 <= t->cap)
        return true;
    size_t cap = t->cap > 0 ? t->cap * 2 : 64;
    void **slot = calloc(cap, sizeof *slot);
    if (slot == NULL)
        return false;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slot[i] == NULL)
            continue;
        size_t j = hash(l, t->slot[i]) & (cap - 1);
        while (slot[j] != NULL)
            j = (j + 1) & (cap - 1);
        slot[j] = t->slot[i];
    }
    free(t->slot);
    t->slot = slot;
    t->cap = cap;
    return true;
}

/* After table_grow(). */
static void table_insert(const idevs_launcher *l, slot_table *t, void *entry, entry_hash hash)
{
    size_t i = hash(l, entry) & (t->cap - 1);
    while (t->slot[i] != NULL)
        i = (i + 1) & (t->cap - 1);
    t->slot[i] = entry;
    t->used++;
}

static void table_remove(const idevs_launcher *l, slot_table *t, const void *entry, entry_hash hash)
{
    if (t->cap == 0)
        return;
    size_t i = hash(l, entry) & (t->cap - 1);
    while (t->slot[i] != entry) {
        if (t->slot[i] == NULL)
            return; /* never happens: only what was inserted is removed */
        i = (i + 1) & (t->cap - 1);
    }
    t->slot[i] = NULL;
    t->used--;
    for (size_t j = (i + 1) & (t->cap - 1); t->slot[j] != NULL; j = (j + 1) & (t->cap - 1)) {
        size_t home = hash(l, t->slot[j]) & (t->cap - 1);
        /* The entry at j moves to the hole at i unless its home lies after the hole, up to j (cyclically). */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            t->slot[i] = t->slot[j];
            t->slot[j] = NULL;
            i = j;
        }
    }
}

/* ---- keys ---- */

static uint64_t mix(uint64_t x) /* splitmix64's finaliser */
{
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t hash_id(const idevs_launcher *l, const char *id)
{
    uint64_t h = l->shares.seed; /* FNV-1a from a random start: only spreads the table, never decides identity */
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

static uint64_t client_hash(const idevs_launcher *l, const void *entry)
{
    (void)l;
    return ((const share_client *)entry)->hash;
}

static uint64_t header_hash(const idevs_launcher *l, const delivery *d)
{
    return mix(mix(mix(mix(l->shares.seed ^ d->sender) ^ d->instance) ^ d->epoch) ^ d->sequence);
}

static uint64_t copy_hash(const idevs_launcher *l, const void *entry)
{
    return header_hash(l, entry);
}

static uint64_t message_id_hash(const idevs_launcher *l, const delivery *d)
{
    uint64_t lo, hi;
    memcpy(&lo, d->message_id.b, sizeof lo);
    memcpy(&hi, d->message_id.b + sizeof lo, sizeof hi);
    return mix(mix(mix(l->shares.seed ^ d->sender) ^ lo) ^ hi);
}

static uint64_t id_hash(const idevs_launcher *l, const void *entry)
{
    return message_id_hash(l, entry);
}

/* The client's entry, or NULL. */
static share_client *client_of(const idevs_launcher *l, const char *id, uint64_t h)
{
    const slot_table *t = &l->shares.clients;
    if (t->cap == 0)
        return NULL;
    for (size_t i = h & (t->cap - 1); t->slot[i] != NULL; i = (i + 1) & (t->cap - 1)) {
        share_client *c = t->slot[i];
        if (c->hash == h && strcmp(c->id, id) == 0)
            return c;
    }
    return NULL;
}

/* ---- the shares ---- */

idevs_err shares_init(idevs_launcher *l)
{
    queue_shares *s = &l->shares;
    size_t q = l->queue_limit;
    s->client_limit = q / 2 > 0 ? q / 2 : 1;
    /* How many services may send anything in: the senders of the inputs and of the requests' responses. */
    size_t senders = 0;
    for (size_t i = 0; i < l->deployment->service_count; i++) {
        bool sends = false;
        for (size_t j = 0; j < l->deployment->input_count && !sends; j++)
            sends = l->deployment->inputs[j].from == i;
        for (size_t j = 0; j < l->deployment->request_count && !sends; j++)
            sends = l->deployment->requests[j].to == i;
        senders += sends;
    }
    s->sender_limit = senders > 1 ? (q - q / 4 > 0 ? q - q / 4 : 1) : q;
    size_t b = l->queue_bytes_limit;
    s->client_bytes_limit = b / 2;
    s->sender_bytes_limit = senders > 1 ? b - b / 4 : b;
    size_t n = l->deployment->service_count > 0 ? l->deployment->service_count : 1;
    s->senders = calloc(n, sizeof *s->senders);
    s->sender_bytes = calloc(n, sizeof *s->sender_bytes);
    if (s->senders == NULL || s->sender_bytes == NULL || RAND_bytes((unsigned char *)&s->seed, sizeof s->seed) != 1)
        return IDEVS_ERR_NOMEM;
    return IDEVS_OK;
}

void shares_free(idevs_launcher *l)
{
    queue_shares *s = &l->shares;
    shares_clear(l);
    free(s->clients.slot);
    free(s->copies.slot);
    free(s->ids.slot);
    free(s->senders);
    free(s->sender_bytes);
    memset(s, 0, sizeof *s);
}

bool shares_queued_copy(const idevs_launcher *l, const delivery *probe, const uint8_t *envelope, size_t len)
{
    const slot_table *t = &l->shares.copies;
    if (!probe->tracked || t->cap == 0)
        return false;
    for (size_t i = header_hash(l, probe) & (t->cap - 1); t->slot[i] != NULL; i = (i + 1) & (t->cap - 1)) {
        const delivery *d = t->slot[i];
        if (d->sender == probe->sender && d->instance == probe->instance && d->epoch == probe->epoch &&
            d->sequence == probe->sequence &&
            d->envelope_len == len && memcmp(d->envelope, envelope, len) == 0)
            return true;
    }
    return false;
}

const delivery *shares_queued_id(const idevs_launcher *l, const delivery *probe)
{
    const slot_table *t = &l->shares.ids;
    if (!probe->tracked || probe->receipt || t->cap == 0)
        return NULL;
    for (size_t i = message_id_hash(l, probe) & (t->cap - 1); t->slot[i] != NULL; i = (i + 1) & (t->cap - 1)) {
        const delivery *d = t->slot[i];
        if (d->at != NULL && d->sender == probe->sender && idevs_uuid_equal(&d->message_id, &probe->message_id))
            return d;
    }
    return NULL;
}

/* Whether one more envelope of len bytes fits a share that holds count deliveries of bytes. */
static bool over(size_t count, size_t bytes, size_t len, size_t count_limit, size_t bytes_limit)
{
    return count >= count_limit || (count > 0 && (bytes > bytes_limit || len > bytes_limit - bytes));
}

idevs_err shares_admit(const idevs_launcher *l, const char *client, const delivery *probe, size_t len)
{
    const queue_shares *s = &l->shares;
    if (client == NULL)
        return IDEVS_OK;
    const share_client *c = client_of(l, client, hash_id(l, client));
    if (c != NULL && over(c->count, c->bytes, len, s->client_limit, s->client_bytes_limit))
        return IDEVS_ERR_QUEUE_CLIENT_SHARE;
    if (probe->tracked && probe->sender < l->deployment->service_count &&
        over(s->senders[probe->sender], s->sender_bytes[probe->sender], len, s->sender_limit, s->sender_bytes_limit))
        return IDEVS_ERR_QUEUE_SENDER_SHARE;
    return IDEVS_OK;
}

bool shares_take(idevs_launcher *l, const char *client, delivery *d, size_t len)
{
    queue_shares *s = &l->shares;
    d->share_client = NULL;
    d->share_sender = d->share_copy = d->share_id = false;
    /* Everything that can fail first, so that a failure changes nothing. */
    bool tracked = d->tracked && d->sender < l->deployment->service_count;
    bool by_id = tracked && !d->receipt && l->instance_count > 1;
    if ((tracked && !table_grow(l, &s->copies, copy_hash)) || (by_id && !table_grow(l, &s->ids, id_hash)))
        return false;
    share_client *c = NULL;
    if (client != NULL) {
        uint64_t h = hash_id(l, client);
        if ((c = client_of(l, client, h)) == NULL) {
            if (!table_grow(l, &s->clients, client_hash) || (c = calloc(1, sizeof *c)) == NULL)
                return false;
            if ((c->id = strdup(client)) == NULL) {
                free(c);
                return false;
            }
            c->hash = h;
            table_insert(l, &s->clients, c, client_hash);
        }
    }
    if (tracked) {
        table_insert(l, &s->copies, d, copy_hash); /* its tracking fields and bytes never change while queued */
        d->share_copy = true;
    }
    if (by_id) {
        table_insert(l, &s->ids, d, id_hash);
        d->share_id = true;
    }
    if (c == NULL)
        return true; /* no client id: the total only */
    c->count++;
    c->bytes += len;
    d->share_client = c;
    if (tracked) {
        s->senders[d->sender]++;
        s->sender_bytes[d->sender] += len;
        d->share_sender = true;
    }
    return true;
}

void shares_give_back(idevs_launcher *l, delivery *d)
{
    queue_shares *s = &l->shares;
    size_t len = d->envelope_len;
    if (d->share_copy)
        table_remove(l, &s->copies, d, copy_hash);
    if (d->share_id)
        table_remove(l, &s->ids, d, id_hash);
    if (d->share_sender) {
        s->senders[d->sender] -= s->senders[d->sender] > 0;
        s->sender_bytes[d->sender] -= len < s->sender_bytes[d->sender] ? len : s->sender_bytes[d->sender];
    }
    share_client *c = d->share_client;
    d->share_client = NULL;
    d->share_sender = d->share_copy = d->share_id = false;
    if (c == NULL)
        return;
    c->bytes -= len < c->bytes ? len : c->bytes;
    if (--c->count > 0)
        return;
    table_remove(l, &s->clients, c, client_hash);
    free(c->id);
    free(c);
}

void shares_clear(idevs_launcher *l)
{
    queue_shares *s = &l->shares;
    for (size_t i = 0; i < s->clients.cap; i++) {
        share_client *c = s->clients.slot[i];
        if (c != NULL) {
            free(c->id);
            free(c);
        }
    }
    if (s->clients.slot != NULL)
        memset(s->clients.slot, 0, s->clients.cap * sizeof *s->clients.slot);
    if (s->copies.slot != NULL)
        memset(s->copies.slot, 0, s->copies.cap * sizeof *s->copies.slot);
    if (s->ids.slot != NULL)
        memset(s->ids.slot, 0, s->ids.cap * sizeof *s->ids.slot);
    s->clients.used = s->copies.used = s->ids.used = 0;
    if (s->senders != NULL)
        memset(s->senders, 0, l->deployment->service_count * sizeof *s->senders);
    if (s->sender_bytes != NULL)
        memset(s->sender_bytes, 0, l->deployment->service_count * sizeof *s->sender_bytes);
}
