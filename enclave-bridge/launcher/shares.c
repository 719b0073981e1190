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
 * against another client), in an open-addressing table indexed by a keyed hash. */
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

static uint64_t hash_id(const idevs_launcher *l, const char *id)
{
    uint64_t h = l->shares.seed; /* FNV-1a from a random start: only spreads the table, never decides identity */
    for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h;
}

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
    shares_clear(l);
    free(l->shares.table);
    free(l->shares.senders);
    free(l->shares.sender_bytes);
    l->shares.table = NULL;
    l->shares.senders = NULL;
    l->shares.sender_bytes = NULL;
    l->shares.cap = 0;
}

/* The slot of id in the table, or the empty slot where it would go; NULL when the table is empty. */
static share_client **slot_of(const idevs_launcher *l, const char *id, uint64_t h)
{
    const queue_shares *s = &l->shares;
    if (s->cap == 0)
        return NULL;
    for (size_t i = h & (s->cap - 1);; i = (i + 1) & (s->cap - 1)) {
        share_client **at = &s->table[i];
        if (*at == NULL || ((*at)->hash == h && strcmp((*at)->id, id) == 0))
            return at;
    }
}

/* Room for one more client: at most half full, so that probing always ends at an empty slot. */
static bool grow(idevs_launcher *l)
{
    queue_shares *s = &l->shares;
    if ((s->used + 1) * 2 <= s->cap)
        return true;
    size_t cap = s->cap > 0 ? s->cap * 2 : 64;
    share_client **table = calloc(cap, sizeof *table);
    if (table == NULL)
        return false;
    for (size_t i = 0; i < s->cap; i++) {
        share_client *c = s->table[i];
        if (c == NULL)
            continue;
        size_t j = c->hash & (cap - 1);
        while (table[j] != NULL)
            j = (j + 1) & (cap - 1);
        table[j] = c;
    }
    free(s->table);
    s->table = table;
    s->cap = cap;
    return true;
}

/* Takes the entry at slot i out and moves later entries of its probe run back (no tombstones). */
static void remove_at(queue_shares *s, size_t i)
{
    free(s->table[i]->id);
    free(s->table[i]);
    s->table[i] = NULL;
    s->used--;
    for (size_t j = (i + 1) & (s->cap - 1); s->table[j] != NULL; j = (j + 1) & (s->cap - 1)) {
        size_t home = s->table[j]->hash & (s->cap - 1);
        /* The entry at j may move to the hole at i when its home is not between the hole and j (cyclically). */
        bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
        if (!stays) {
            s->table[i] = s->table[j];
            s->table[j] = NULL;
            i = j;
        }
    }
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
    share_client **at = slot_of(l, client, hash_id(l, client));
    if (at != NULL && *at != NULL && over((*at)->count, (*at)->bytes, len, s->client_limit, s->client_bytes_limit))
        return IDEVS_ERR_QUEUE_CLIENT_SHARE;
    if (probe->tracked && probe->sender < l->deployment->service_count &&
        over(s->senders[probe->sender], s->sender_bytes[probe->sender], len, s->sender_limit, s->sender_bytes_limit))
        return IDEVS_ERR_QUEUE_SENDER_SHARE;
    return IDEVS_OK;
}

bool shares_take(idevs_launcher *l, const char *client, delivery *d, size_t len)
{
    d->share_client = NULL;
    d->share_sender = false;
    if (client == NULL)
        return true;
    uint64_t h = hash_id(l, client);
    share_client **at = slot_of(l, client, h);
    if (at == NULL || *at == NULL) {
        if (!grow(l))
            return false;
        at = slot_of(l, client, h); /* the table may have moved */
        share_client *c = calloc(1, sizeof *c);
        if (c == NULL || (c->id = strdup(client)) == NULL) {
            free(c);
            return false;
        }
        c->hash = h;
        *at = c;
        l->shares.used++;
    }
    (*at)->count++;
    (*at)->bytes += len;
    d->share_client = *at;
    if (d->tracked && d->sender < l->deployment->service_count) {
        l->shares.senders[d->sender]++;
        l->shares.sender_bytes[d->sender] += len;
        d->share_sender = true;
    }
    return true;
}

void shares_give_back(idevs_launcher *l, delivery *d)
{
    queue_shares *s = &l->shares;
    size_t len = d->envelope_len;
    if (d->share_sender) {
        s->senders[d->sender] -= s->senders[d->sender] > 0;
        s->sender_bytes[d->sender] -= len < s->sender_bytes[d->sender] ? len : s->sender_bytes[d->sender];
    }
    d->share_sender = false;
    share_client *c = d->share_client;
    d->share_client = NULL;
    if (c == NULL)
        return;
    c->bytes -= len < c->bytes ? len : c->bytes;
    if (--c->count > 0)
        return;
    for (size_t i = c->hash & (s->cap - 1);; i = (i + 1) & (s->cap - 1))
        if (s->table[i] == c) {
            remove_at(s, i);
            return;
        }
}

void shares_clear(idevs_launcher *l)
{
    queue_shares *s = &l->shares;
    for (size_t i = 0; i < s->cap; i++)
        if (s->table[i] != NULL) {
            free(s->table[i]->id);
            free(s->table[i]);
            s->table[i] = NULL;
        }
    s->used = 0;
    if (s->senders != NULL)
        memset(s->senders, 0, l->deployment->service_count * sizeof *s->senders);
    if (s->sender_bytes != NULL)
        memset(s->sender_bytes, 0, l->deployment->service_count * sizeof *s->sender_bytes);
}
