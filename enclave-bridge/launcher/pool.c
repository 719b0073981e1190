/* The pool: which of a process's instances takes a delivery (docs/SCALING.md), and the launcher's state made of
 * theirs. Every instance holds the same keys, so any of them can open any envelope; the choice is about order
 * (one partition's inputs on one instance, in order), about copies (never run beside their first), and about
 * load. */
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "launcher_internal.h"

#define POOL_ROUTES 4096u /* requests remembered with their instance: a forgotten one's answer goes to any */

typedef struct pool_route {
    uint8_t id[IDEVS_UUID_LEN];
    uint32_t instance;
    bool used;
} pool_route;

static size_t route_slot(const uint8_t id[IDEVS_UUID_LEN])
{
    uint32_t h;
    memcpy(&h, id, sizeof h); /* request ids are the compartment's HKDF output or random: already uniform */
    return h & (POOL_ROUTES - 1);
}

void pool_note_request(idevs_launcher *l, const launcher_instance *c, const uint8_t id[IDEVS_UUID_LEN])
{
    if (l->instance_count == 1)
        return;
    if (l->routes == NULL && (l->routes = calloc(POOL_ROUTES, sizeof *l->routes)) == NULL)
        return; /* without the table, answers go to the least loaded instance, which opens them as well */
    pool_route *r = &l->routes[route_slot(id)];
    memcpy(r->id, id, IDEVS_UUID_LEN);
    r->instance = c->index;
    r->used = true;
}

void pool_free(idevs_launcher *l)
{
    free(l->routes);
    l->routes = NULL;
    free(l->owned);
    l->owned = NULL;
}

static launcher_instance *least_loaded(idevs_launcher *l, bool ready_only)
{
    launcher_instance *best = NULL;
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *c = &l->instances[i];
        if (ready_only && c->state != IDEVS_LAUNCHER_READY)
            continue;
        if (best == NULL || c->count < best->count)
            best = c;
    }
    return best;
}

launcher_instance *pool_ready(idevs_launcher *l)
{
    return least_loaded(l, true);
}

launcher_instance *pool_choose(idevs_launcher *l, const delivery *d, int64_t partition)
{
    if (l->instance_count == 1)
        return &l->instances[0];
    if (d->response && !d->receipt && d->correlation_len >= IDEVS_UUID_LEN && l->routes != NULL) {
        const pool_route *r = &l->routes[route_slot(d->correlation)];
        if (r->used && memcmp(r->id, d->correlation, IDEVS_UUID_LEN) == 0 && r->instance < l->instance_count)
            return &l->instances[r->instance];
    }
    const delivery *first = shares_queued_id(l, d); /* a copy goes where its first waits or runs */
    if (first != NULL)
        return first->at;
    launcher_instance *c;
    if (partition >= 0)
        return &l->instances[(uint64_t)partition % l->instance_count];
    c = least_loaded(l, true);
    return c != NULL ? c : least_loaded(l, false);
}

static void send_timer_role(launcher_instance *c, bool run)
{
    Idevs__Bridge__V1__TimerRole role = IDEVS__BRIDGE__V1__TIMER_ROLE__INIT;
    role.run = run;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_TIMER_ROLE;
    f.timer_role = &role;
    (void)supervise_send(c, &f); /* a closed channel: that instance is ending, and loses the role anyway */
}

void pool_assign_timer(idevs_launcher *l)
{
    /* The first ready instance holds the timer when this broker runs it (it owns partition 0, or owns all). Each
     * compartment is told only a change from what it believes: the first starts with the timer, the others
     * without (Init), and a TimerRole frame moves it. */
    launcher_instance *want = NULL;
    for (size_t i = 0; l->runs_timer && want == NULL && i < l->instance_count; i++)
        if (l->instances[i].state == IDEVS_LAUNCHER_READY)
            want = &l->instances[i];
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *c = &l->instances[i];
        bool should = c == want;
        if (c->state == IDEVS_LAUNCHER_READY && c->timer_on != should) {
            send_timer_role(c, should);
            c->timer_on = should;
        }
    }
    if (want == l->timer_holder)
        return;
    if (l->timer_holder != NULL && want != NULL)
        l->stats.timer_moves++;
    l->timer_holder = want;
}

bool pool_timer_holder(const idevs_launcher *l, const launcher_instance *c)
{
    return (l->instance_count == 1 && l->runs_timer) || l->timer_holder == c;
}

idevs_err pool_set_owned(idevs_launcher *l, const char *partitions, char *why, size_t why_len)
{
    const idevs_deployment *d = l->deployment;
    size_t bytes = (d->partitions + 7) / 8;
    uint8_t *bits = NULL;
    if (partitions != NULL) {
        if ((bits = malloc(bytes)) == NULL)
            return IDEVS_ERR_NOMEM;
        if (!idevs_deployment_partition_set_parse(d, partitions, bits, why, why_len)) {
            free(bits);
            return IDEVS_ERR_CONFIG;
        }
    }
    free(l->owned);
    l->owned = bits;
    l->runs_timer = pool_owns(l, 0);
    pool_assign_timer(l);
    return IDEVS_OK;
}

bool pool_owns(const idevs_launcher *l, uint32_t partition)
{
    return l->owned == NULL || (l->owned[partition / 8] >> (partition % 8) & 1u) != 0;
}

idevs_launcher_state pool_state(const idevs_launcher *l)
{
    for (size_t i = 0; i < l->instance_count; i++)
        if (l->instances[i].state == IDEVS_LAUNCHER_READY)
            return IDEVS_LAUNCHER_READY;
    return l->instance_count > 0 ? l->instances[0].state : IDEVS_LAUNCHER_STOPPED;
}

const launcher_instance *pool_chain_holder(const idevs_launcher *l)
{
    for (size_t i = 0; l != NULL && i < l->instance_count; i++)
        if (l->instances[i].chain.count > 0)
            return &l->instances[i];
    return NULL;
}

bool pool_all_stopped(const idevs_launcher *l)
{
    for (size_t i = 0; i < l->instance_count; i++)
        if (l->instances[i].state != IDEVS_LAUNCHER_STOPPED)
            return false;
    return true;
}

const char *pool_label(const launcher_instance *c)
{
    static char label[32]; /* the launcher is single-threaded; each use is printed before the next */
    if (c->l->instance_count == 1)
        return "";
    snprintf(label, sizeof label, "instance %u: ", c->number);
    return label;
}
