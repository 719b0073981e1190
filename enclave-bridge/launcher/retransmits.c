/* Retransmissions are not replays. An MQTT client may hand the broker the same envelope twice without anyone
 * attacking: Mosquitto 2.0.11 passes a QoS 2 PUBLISH that the client sent again with DUP (its PUBREC was lost)
 * to the plugins a second time, before it notices the duplicate itself, and a QoS 1 PUBLISH comes again after a
 * reconnection. The launcher remembers which client delivered each recent tracked envelope (its sender, instance, epoch
 * and sequence number, from the clear header), so that idevs_launcher_deliver_from() can call that client's copy a
 * duplicate instead of a replay. The client id is the client's choice: it decides only how a refusal is named
 * and counted, never whether an envelope is processed. */
#include <stdlib.h>

#include "launcher_internal.h"

typedef struct retransmit_slot {
    uint64_t client; /* 0: empty */
    uint64_t epoch, sequence;
    size_t sender;
    uint32_t instance;
} retransmit_slot;

struct retransmits {
    retransmit_slot slot[LAUNCHER_RETRANSMIT_SLOTS];
};

uint64_t retransmits_client(const char *client_id)
{
    if (client_id == NULL)
        return 0;
    uint64_t h = 14695981039346656037ull; /* FNV-1a: a client id is short, and a collision only names a refusal */
    for (const unsigned char *p = (const unsigned char *)client_id; *p != '\0'; p++)
        h = (h ^ *p) * 1099511628211ull;
    return h != 0 ? h : 1;
}

static size_t slot_of(const delivery *d)
{
    uint64_t h = d->sequence * 0x9e3779b97f4a7c15ull ^ d->epoch * 0xc2b2ae3d27d4eb4full ^ (uint64_t)d->sender ^
                 (uint64_t)d->instance << 32;
    return (size_t)((h ^ (h >> 29)) % LAUNCHER_RETRANSMIT_SLOTS);
}

bool retransmits_note(idevs_launcher *l, const delivery *d, uint64_t client)
{
    if (!d->tracked || client == 0)
        return true;
    if (l->retransmits == NULL && (l->retransmits = calloc(1, sizeof *l->retransmits)) == NULL)
        return false;
    l->retransmits->slot[slot_of(d)] = (retransmit_slot){client, d->epoch, d->sequence, d->sender, d->instance};
    return true;
}

bool retransmits_by(const idevs_launcher *l, const delivery *d, uint64_t client)
{
    if (l->retransmits == NULL || !d->tracked || client == 0)
        return false;
    const retransmit_slot *s = &l->retransmits->slot[slot_of(d)];
    return s->client == client && s->epoch == d->epoch && s->sequence == d->sequence && s->sender == d->sender &&
           s->instance == d->instance;
}

void retransmits_free(idevs_launcher *l)
{
    free(l->retransmits);
    l->retransmits = NULL;
}
