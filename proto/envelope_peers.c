/* The peer table: per known identity its verified certificate info, the validity of that verification, the
 * cached static Diffie-Hellman value, the sending epoch and the receiving epochs of each of its instances (at
 * most IDEVS_INSTANCES_MAX, docs/PROTOCOL.md section 5a; the rule in base/idevs_replay.h). Sorted by UUID for
 * lookups in O(log n); insertions are rare (one per new peer). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/x509.h>

#include "envelope_internal.h"

void idevs_send_epoch_clear(idevs_send_epoch *e)
{
    idevs_aead_free(&e->aead);
    idevs_cleanse(e, sizeof *e);
}

void idevs_recv_epoch_clear(idevs_recv_epoch *e)
{
    idevs_aead_free(&e->aead);
    idevs_cleanse(e, sizeof *e);
}

idevs_peer *idevs_peer_new(const idevs_cert_info *info, uint64_t not_after_ms)
{
    idevs_peer *p = calloc(1, sizeof *p);
    if (p == NULL)
        return NULL;
    p->info = *info;
    p->info.evidence.hardware_report = NULL;
    p->info.evidence.hardware_report_len = 0;
    p->not_after_ms = not_after_ms;
    return p;
}

void idevs_peer_free(idevs_peer *p)
{
    if (p == NULL)
        return;
    idevs_send_epoch_clear(&p->send);
    for (size_t i = 0; i < p->instance_count; i++) {
        idevs_recv_epoch_clear(&p->instances[i].cur);
        idevs_recv_epoch_clear(&p->instances[i].prev);
    }
    free(p->instances);
    idevs_cleanse(p, sizeof *p);
    free(p);
}

idevs_instance_epochs *idevs_peer_instance(const idevs_peer *p, uint32_t instance)
{
    for (size_t i = 0; i < p->instance_count; i++)
        if (p->instances[i].instance == instance)
            return &p->instances[i];
    return NULL;
}

idevs_err idevs_peer_instance_reserve(idevs_peer *p)
{
    if (p->instance_count < p->instance_cap || p->instance_cap == IDEVS_INSTANCES_MAX)
        return IDEVS_OK;
    size_t cap = p->instance_cap == 0 ? 1 : p->instance_cap * 2;
    if (cap > IDEVS_INSTANCES_MAX)
        cap = IDEVS_INSTANCES_MAX;
    idevs_instance_epochs *n = realloc(p->instances, cap * sizeof *n);
    if (n == NULL)
        return IDEVS_ERR_NOMEM;
    p->instances = n;
    p->instance_cap = cap;
    return IDEVS_OK;
}

idevs_instance_epochs *idevs_peer_instance_add(idevs_peer *p, uint32_t instance)
{
    idevs_instance_epochs *slot;
    if (p->instance_count == IDEVS_INSTANCES_MAX) {
        /* Evicting forgets windows: the floor keeps the evicted epochs from opening again with empty ones. */
        slot = &p->instances[0];
        for (size_t i = 1; i < p->instance_count; i++) {
            const idevs_instance_epochs *c = &p->instances[i];
            if (idevs_instance_older(c->cur.epoch, c->instance, slot->cur.epoch, slot->instance))
                slot = &p->instances[i];
        }
        if (slot->cur.epoch > p->instance_floor)
            p->instance_floor = slot->cur.epoch;
        idevs_recv_epoch_clear(&slot->cur);
        idevs_recv_epoch_clear(&slot->prev);
    } else {
        if (p->instance_count >= p->instance_cap)
            return NULL; /* not reserved */
        slot = &p->instances[p->instance_count++];
    }
    memset(slot, 0, sizeof *slot);
    slot->instance = instance;
    return slot;
}

uint64_t idevs_peer_epoch_high(const idevs_peer *p)
{
    uint64_t high = p->epoch_floor > p->instance_floor ? p->epoch_floor : p->instance_floor;
    for (size_t i = 0; i < p->instance_count; i++) {
        const idevs_instance_epochs *s = &p->instances[i];
        if (s->cur.active && s->cur.epoch > high)
            high = s->cur.epoch;
        if (s->prev.active && s->prev.epoch > high)
            high = s->prev.epoch;
    }
    return high;
}

void idevs_peers_init(idevs_peer_table *t, size_t max)
{
    memset(t, 0, sizeof *t);
    t->max = max;
}

void idevs_peers_free(idevs_peer_table *t)
{
    for (size_t i = 0; i < t->count; i++)
        idevs_peer_free(t->by_uuid[i]);
    free(t->by_uuid);
    memset(t, 0, sizeof *t);
}

/* Index of uuid, or of where it would be inserted; *found tells which. */
static size_t locate(const idevs_peer_table *t, const idevs_uuid *uuid, bool *found)
{
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(t->by_uuid[mid]->info.uuid.b, uuid->b, IDEVS_UUID_LEN);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

idevs_peer *idevs_peers_find(const idevs_peer_table *t, const idevs_uuid *uuid)
{
    bool found;
    size_t i = locate(t, uuid, &found);
    return found ? t->by_uuid[i] : NULL;
}

bool idevs_peers_full(const idevs_peer_table *t)
{
    return t->count >= t->max;
}

idevs_err idevs_peers_put(idevs_peer_table *t, idevs_peer *peer)
{
    bool found;
    size_t i = locate(t, &peer->info.uuid, &found);
    if (found) {
        if (t->by_uuid[i] != peer)
            idevs_peer_free(t->by_uuid[i]);
        t->by_uuid[i] = peer;
        return IDEVS_OK;
    }
    if (t->count >= t->max)
        return IDEVS_ERR_PEER_LIMIT;
    if (t->count == t->cap) {
        size_t cap = t->cap == 0 ? 8 : t->cap * 2;
        if (cap > t->max)
            cap = t->max;
        idevs_peer **n = realloc(t->by_uuid, cap * sizeof *n);
        if (n == NULL)
            return IDEVS_ERR_NOMEM;
        t->by_uuid = n;
        t->cap = cap;
    }
    memmove(&t->by_uuid[i + 1], &t->by_uuid[i], (t->count - i) * sizeof t->by_uuid[0]);
    t->by_uuid[i] = peer;
    t->count++;
    return IDEVS_OK;
}

idevs_err idevs_env_chain_not_after(const uint8_t *const *der, const size_t *der_len, size_t count, uint64_t *out)
{
    uint64_t earliest = UINT64_MAX;
    if (count == 0)
        return IDEVS_ERR_INVALID_ARG;
    for (size_t i = 0; i < count; i++) {
        if (der[i] == NULL || der_len[i] == 0 || der_len[i] > IDEVS_CERT_MAX)
            return IDEVS_ERR_CERT_MALFORMED;
        const unsigned char *p = der[i];
        X509 *x = d2i_X509(NULL, &p, (long)der_len[i]);
        struct tm tm;
        int ok = x != NULL && p == der[i] + der_len[i] && ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm) == 1;
        X509_free(x);
        if (!ok)
            return IDEVS_ERR_CERT_MALFORMED;
        time_t t = timegm(&tm);
        uint64_t ms = t <= 0 ? 0 : (uint64_t)t * 1000u;
        if (ms < earliest)
            earliest = ms;
    }
    *out = earliest;
    return IDEVS_OK;
}
