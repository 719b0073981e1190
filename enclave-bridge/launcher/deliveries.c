/* The delivery queues, one per instance: accepted envelopes, oldest first, the ones sent to its current
 * compartment forming a prefix. Publications a delivery causes are held back until its Done, so that a compartment dying halfway
 * through a delivery leaves no partial output behind: the delivery is sent again, and only the attempt that
 * finishes is handed to the caller, once the replay record that covers its input is on disk (supervise.c,
 * release_awaiting). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "launcher_internal.h"

void deliveries_append(launcher_instance *c, delivery *d)
{
    d->at = c;
    d->prev = c->tail;
    d->next = NULL;
    if (c->tail != NULL)
        c->tail->next = d;
    else
        c->head = d;
    c->tail = d;
    if (c->next_send == NULL)
        c->next_send = d;
    c->count++;
    c->l->count++;
}

/* Links d (not in the queue) in before at (NULL: at the tail). */
static void insert_before(launcher_instance *c, delivery *d, delivery *at)
{
    if (at == NULL) {
        delivery *keep = c->next_send;
        deliveries_append(c, d);
        if (keep != NULL)
            c->next_send = keep;
        return;
    }
    d->at = c;
    d->next = at;
    d->prev = at->prev;
    if (at->prev != NULL)
        at->prev->next = d;
    else
        c->head = d;
    at->prev = d;
    c->count++;
    c->l->count++;
}

void deliveries_hold_back(delivery *d)
{
    launcher_instance *c = d->at;
    delivery_drop_held(c->l, d);
    deliveries_unlink(d);
    d->sent = false;
    d->held_back = true;
    if (d->sends > 0)
        d->sends--; /* sending it again is no re-send */
    delivery *at = c->next_send;
    while (at != NULL && at->held_back)
        at = at->next;
    insert_before(c, d, at);
    if (c->next_send == at)
        c->next_send = d;
}

delivery *deliveries_response_first(launcher_instance *c)
{
    delivery *at = c->next_send, *r = at;
    while (r != NULL && !r->response)
        r = r->next;
    if (r == NULL || r == at)
        return r;
    deliveries_unlink(r); /* unsent, and not next_send: nothing else moves */
    insert_before(c, r, at);
    c->next_send = r;
    return r;
}

void deliveries_unlink(delivery *d)
{
    launcher_instance *c = d->at;
    if (c->next_send == d)
        c->next_send = d->next;
    if (d->prev != NULL)
        d->prev->next = d->next;
    else
        c->head = d->next;
    if (d->next != NULL)
        d->next->prev = d->prev;
    else
        c->tail = d->prev;
    d->prev = d->next = NULL;
    d->at = NULL;
    c->count--;
    c->l->count--;
    if (d->sent)
        c->in_flight--;
    c->l->held_bytes -= d->held_bytes;
}

delivery *deliveries_find_sent(launcher_instance *c, uint64_t id)
{
    for (delivery *d = c->head; d != NULL && d->sent; d = d->next)
        if (d->id == id)
            return d;
    return NULL;
}

static void held_free(held_publish *h)
{
    free((char *)h->p.topic);
    free((uint8_t *)h->p.envelope);
    free((char *)h->p.response_topic);
    free((uint8_t *)h->p.correlation);
    free((uint8_t *)h->p.kept);
    free(h);
}

void delivery_drop_held(idevs_launcher *l, delivery *d)
{
    held_publish *h = d->held;
    while (h != NULL) {
        held_publish *next = h->next;
        held_free(h);
        h = next;
    }
    if (l != NULL) {
        l->held_bytes -= d->held_bytes;
        l->stats.discarded_publishes += d->held_count;
    }
    d->held = d->held_tail = NULL;
    d->held_count = d->held_bytes = 0;
}

void delivery_free(delivery *d)
{
    if (d == NULL)
        return;
    delivery_drop_held(NULL, d);
    free(d->topic);
    free(d->envelope);
    free(d->correlation);
    free(d);
}

void deliveries_forget(idevs_launcher *l, delivery *d)
{
    l->queue_bytes -= d->envelope_len < l->queue_bytes ? d->envelope_len : l->queue_bytes;
    shares_give_back(l, d);
    delivery_free(d);
}

static void *dup_bytes(const void *p, size_t len)
{
    void *copy = malloc(len > 0 ? len : 1);
    if (copy != NULL && len > 0)
        memcpy(copy, p, len);
    return copy;
}

idevs_err delivery_hold(idevs_launcher *l, delivery *d, const Idevs__Bridge__V1__Publish *p)
{
    size_t topic_len = strlen(p->topic);
    size_t rt_len = p->response_topic != NULL ? strlen(p->response_topic) : 0;
    size_t bytes = topic_len + p->envelope.len + rt_len + p->correlation_data.len + p->kept.len + sizeof(held_publish);
    if (d->held_count >= LAUNCHER_PUBLISH_MAX || bytes > LAUNCHER_HELD_BYTES_MAX - l->held_bytes)
        return IDEVS_ERR_TOO_LARGE;
    held_publish *h = calloc(1, sizeof *h);
    if (h == NULL)
        return IDEVS_ERR_NOMEM;
    h->p.delivery_id = d->id;
    h->p.qos = (int)p->qos;
    memcpy(h->cert_digest, d->at->cert_digest, IDEVS_SHA256_LEN); /* d is in flight on its instance */
    h->p.receipt = topics_receipt_service(l->deployment, p->topic) != SIZE_MAX;
    h->p.envelope_len = p->envelope.len;
    h->p.topic = dup_bytes(p->topic, topic_len + 1);
    h->p.envelope = dup_bytes(p->envelope.data, p->envelope.len);
    bool ok = h->p.topic != NULL && h->p.envelope != NULL;
    if (rt_len > 0) {
        h->p.response_topic = dup_bytes(p->response_topic, rt_len + 1);
        h->p.correlation = dup_bytes(p->correlation_data.data, p->correlation_data.len);
        h->p.correlation_len = p->correlation_data.len;
        ok = ok && h->p.response_topic != NULL && h->p.correlation != NULL;
    }
    if (p->kept.len > 0) {
        h->p.kept = dup_bytes(p->kept.data, p->kept.len);
        h->p.kept_len = p->kept.len;
        ok = ok && h->p.kept != NULL;
    }
    if (!ok) {
        held_free(h);
        return IDEVS_ERR_NOMEM;
    }
    if (d->held_tail != NULL)
        d->held_tail->next = h;
    else
        d->held = h;
    d->held_tail = h;
    d->held_count++;
    d->held_bytes += bytes;
    l->held_bytes += bytes;
    return IDEVS_OK;
}

void deliveries_rewind(launcher_instance *c)
{
    for (delivery *d = c->head; d != NULL && d->sent; d = d->next) {
        d->sent = false;
        delivery_drop_held(c->l, d);
    }
    c->in_flight = 0;
    c->inputs_held = false; /* the next compartment starts with no request outstanding */
    c->next_send = c->head;
}

/* Appends d (unlinked) to a list linked through next: the refused or the awaiting deliveries. */
static void list_append(delivery **head, delivery **tail, delivery *d)
{
    d->prev = d->next = NULL;
    if (*tail != NULL)
        (*tail)->next = d;
    else
        *head = d;
    *tail = d;
}

void deliveries_refuse(idevs_launcher *l, delivery *d, idevs_err status)
{
    d->refused = status;
    list_append(&l->refused_head, &l->refused_tail, d);
    l->refused_count++;
}

int deliveries_report_refused(idevs_launcher *l, const idevs_launcher_callbacks *cb)
{
    int n = 0;
    /* One at a time from the head: on_done may deliver, and a send may refuse more. */
    while (l->refused_head != NULL) {
        delivery *d = l->refused_head;
        l->refused_head = d->next;
        if (l->refused_head == NULL)
            l->refused_tail = NULL;
        l->refused_count--;
        uint64_t id = d->id;
        idevs_err status = d->refused;
        deliveries_forget(l, d);
        l->stats.done++;
        n++;
        if (cb != NULL && cb->on_done != NULL)
            cb->on_done(cb->arg, id, status);
    }
    return n;
}

void deliveries_await(idevs_launcher *l, delivery *d, idevs_err status)
{
    d->done_status = status;
    list_append(&l->awaiting_head, &l->awaiting_tail, d);
}

size_t deliveries_clear(idevs_launcher *l)
{
    size_t n = 0;
    /* Empty outside supervise_step, which releases what it made await: freed here so that nothing can leak. */
    while (l->awaiting_head != NULL) {
        delivery *d = l->awaiting_head;
        l->awaiting_head = d->next;
        l->stats.discarded_publishes += d->held_count;
        delivery_free(d);
        n++;
    }
    l->awaiting_tail = NULL;
    while (l->refused_head != NULL) {
        delivery *d = l->refused_head;
        l->refused_head = d->next;
        delivery_free(d);
        n++;
    }
    l->refused_tail = NULL;
    l->refused_count = 0;
    for (size_t i = 0; i < l->instance_count; i++) {
        launcher_instance *c = &l->instances[i];
        while (c->head != NULL) {
            delivery *d = c->head;
            deliveries_unlink(d);
            delivery_free(d);
            n++;
        }
        c->next_send = NULL;
        c->in_flight = 0;
    }
    l->held_bytes = 0;
    l->queue_bytes = 0;
    shares_clear(l);
    return n;
}
