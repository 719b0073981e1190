/* The dedupe window: the last `capacity` message ids a service accepted, so that an envelope seen before (a
 * QoS 1 redelivery, a replay across a reset of the envelope's own windows) is dropped however it arrives.
 *
 * A ring of ids in arrival order, indexed by an open-addressing hash table with linear probing at most half
 * full; evicting the oldest id deletes its slot by backward shifting, so there are no tombstones and every
 * operation is O(1) expected. Ids are random bytes chosen by the authenticated sender; the table's hash is
 * keyed with random bytes anyway. */
#include <stdlib.h>
#include <string.h>

#include "idevs_crypto.h"
#include "service_internal.h"

struct idevs_service_dedupe {
    idevs_msgid *ring;  /* capacity entries */
    uint32_t *slots;    /* 0 empty, else ring index + 1 */
    size_t capacity, count, head, mask;
    uint64_t key;
};

static size_t home(const idevs_service_dedupe *d, const idevs_msgid *id)
{
    uint64_t a, b;
    memcpy(&a, id->b, 8);
    memcpy(&b, id->b + 8, 8);
    uint64_t h = (a ^ d->key) * 0x9e3779b97f4a7c15u;
    h ^= (b + (h >> 29)) * 0xbf58476d1ce4e5b9u;
    h ^= h >> 31;
    return (size_t)h & d->mask;
}

idevs_err idevs_service_dedupe_new(size_t capacity, idevs_service_dedupe **out)
{
    if (out == NULL || capacity == 0 || capacity > SVC_DEDUPE_MAX)
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    idevs_service_dedupe *d = calloc(1, sizeof *d);
    if (d == NULL)
        return IDEVS_ERR_NOMEM;
    size_t table = 16;
    while (table < capacity * 2)
        table *= 2;
    d->capacity = capacity;
    d->mask = table - 1;
    d->ring = calloc(capacity, sizeof *d->ring);
    d->slots = calloc(table, sizeof *d->slots);
    idevs_err err = d->ring == NULL || d->slots == NULL ? IDEVS_ERR_NOMEM
                                                         : idevs_random((uint8_t *)&d->key, sizeof d->key);
    if (err != IDEVS_OK) {
        idevs_service_dedupe_free(d);
        return err;
    }
    *out = d;
    return IDEVS_OK;
}

void idevs_service_dedupe_free(idevs_service_dedupe *d)
{
    if (d == NULL)
        return;
    free(d->ring);
    free(d->slots);
    free(d);
}

/* The slot holding id, or SIZE_MAX. */
static size_t find(const idevs_service_dedupe *d, const idevs_msgid *id)
{
    for (size_t i = home(d, id);; i = (i + 1) & d->mask) {
        uint32_t s = d->slots[i];
        if (s == 0)
            return SIZE_MAX;
        if (memcmp(d->ring[s - 1].b, id->b, IDEVS_UUID_LEN) == 0)
            return i;
    }
}

/* Empties slot i and moves later entries of its probe run back, so every entry stays reachable. */
static void delete_slot(idevs_service_dedupe *d, size_t i)
{
    size_t j = i;
    for (;;) {
        j = (j + 1) & d->mask;
        uint32_t s = d->slots[j];
        if (s == 0)
            break;
        size_t k = home(d, &d->ring[s - 1]);
        /* The entry at j may move to i unless its home lies cyclically in (i, j]. */
        bool stays = i <= j ? (k > i && k <= j) : (k > i || k <= j);
        if (!stays) {
            d->slots[i] = s;
            i = j;
        }
    }
    d->slots[i] = 0;
}

bool idevs_service_dedupe_contains(const idevs_service_dedupe *d, const idevs_msgid *id)
{
    return d != NULL && id != NULL && find(d, id) != SIZE_MAX;
}

bool idevs_service_dedupe_seen(idevs_service_dedupe *d, const idevs_msgid *id)
{
    if (d == NULL || id == NULL)
        return false;
    if (find(d, id) != SIZE_MAX)
        return true;
    if (d->count == d->capacity) {
        size_t old = find(d, &d->ring[d->head]);
        if (old != SIZE_MAX)
            delete_slot(d, old);
        d->count--;
    }
    d->ring[d->head] = *id;
    size_t i = home(d, id);
    while (d->slots[i] != 0)
        i = (i + 1) & d->mask;
    d->slots[i] = (uint32_t)(d->head + 1);
    d->head = (d->head + 1) % d->capacity;
    d->count++;
    return false;
}

size_t idevs_service_dedupe_count(const idevs_service_dedupe *d)
{
    return d == NULL ? 0 : d->count;
}
