/* The key holder's event loop, inside its sandbox: deliveries from the launcher, the logic's timer, Shutdown.
 * The logic runs in the logic process (logic_link.c); this loop also watches its link, which must stay quiet
 * between events.
 *
 * Each Deliver is answered by its Publish frames, then exactly one Done. An envelope is accepted only on a
 * declared input topic from that input's service, or on a declared response topic from the service the request
 * went to; anything else is refused with its reason in Done.status and publishes nothing. The loop never waits
 * forever: writes are bounded by the deployment's event timeout, reads happen only when poll() says so.
 *
 * Back-pressure: while limits.max_outstanding_requests requests await their responses, an input delivery is not
 * run (nor opened: the replay window must not see it yet) but answered with Held instead of Done, and from then
 * on every input is held, in order, until a turn ends with room again: then Resumed, and the launcher sends the
 * held inputs again. Responses always run: they free room. */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compartment.h"
#include "idevs_receipt.h"

/* Queues a frame; the frames of one turn (a delivery's Publish frames and its Done) leave in one send, at the
 * next drain() or end_turn(). */
static void send_frame(compartment *c, const Idevs__Bridge__V1__Frame *f)
{
    idevs_err err = idevs_channel_queue(&c->ch, f);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "cannot queue a frame for the launcher: %s", idevs_strerror(err));
}

/* Empties the send queue before the logic runs, within the event timeout: a launcher that does not read is broken,
 * and outputs do not pile up behind it. (The SIGSYS report does not depend on it: it finishes the queue first.) */
static void drain(compartment *c)
{
    if (!idevs_channel_pending(&c->ch))
        return;
    idevs_err err = idevs_channel_flush(&c->ch, (int)c->dep->event_timeout_ms);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK)
        cmp_fatal(c, err, "the launcher does not read the channel: %s", idevs_strerror(err));
}

/* The end of a turn: writes what the socket takes without waiting; the rest waits for POLLOUT. */
static void end_turn(compartment *c)
{
    if (idevs_channel_pending(&c->ch) && idevs_channel_flush(&c->ch, 0) == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
}

static void publish_tx(compartment *c, uint64_t delivery_id)
{
    const idevs_deployment *d = c->dep;
    logic_link *k = &c->link;
    for (size_t i = 0; i < k->tx_count; i++) {
        const cmp_sealed *s = &k->tx[i];
        Idevs__Bridge__V1__Publish pub = IDEVS__BRIDGE__V1__PUBLISH__INIT;
        pub.delivery_id = delivery_id;
        pub.envelope.data = s->envelope;
        pub.envelope.len = s->envelope_len;
        pub.kept.data = s->kept;
        pub.kept.len = s->kept_len;
        if (s->is_request) {
            const idevs_deployment_request *r = &d->requests[s->index];
            pub.topic = r->topic;
            pub.qos = (uint32_t)r->qos;
            pub.response_topic = r->response_topic;
            pub.correlation_data.data = s->correlation;
            pub.correlation_data.len = s->correlation_len;
        } else {
            const idevs_deployment_output *o = &d->outputs[s->index];
            pub.topic = o->topic;
            pub.qos = (uint32_t)o->qos;
        }
        Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
        f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH;
        f.publish = &pub;
        send_frame(c, &f);
    }
}

/* Deliveries read in one turn are opened and sent to the logic process together, then answered in order: the
 * logic process works through its events while the key holder reads the next answers, and a turn costs one
 * write and a few reads on the link instead of a round trip per delivery. */
typedef struct batch_entry {
    uint64_t delivery_id;
    idevs_err status; /* IDEVS_OK: sent to the logic process, its answer to be collected */
    bool opened;      /* its envelope opened: service and id are authentic */
    bool receipt;     /* a service's receipt: handled here, never run nor receipted */
    size_t service;
    idevs_msgid id;
} batch_entry;

static batch_entry batch[CMP_EVENTS_MAX];
static size_t batch_count;

/* Whether the message was handled already (a copy its sender sent again); otherwise notes it as handled (the rule:
 * idevs_handled.h). One too far below its stream's window is handled: the sender broke the bound of
 * PROTOCOL.md 9.1, and the launcher's record, which the compartment's windows started from, refuses such a copy
 * before it gets here. */
static bool handled_before(compartment *c, size_t service, const idevs_msgid *id)
{
    if (idevs_handled_check(&c->handled[service], id) == IDEVS_ERR_REPLAY)
        return true;
    idevs_handled_note(&c->handled[service], id);
    return false;
}

/* A service's receipt (docs/PROTOCOL.md 9): opened, its ids handed to the launcher, which stops sending those
 * outputs and requests again. */
static idevs_err take_receipt(compartment *c, const Idevs__Bridge__V1__Deliver *dv, size_t service)
{
    idevs_opened opened;
    memset(&opened, 0, sizeof opened);
    idevs_err err = idevs_envelope_open(c->env, dv->topic, dv->envelope.data, dv->envelope.len, &opened);
    if (err != IDEVS_OK)
        return err;
    static idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    static ProtobufCBinaryData list[IDEVS_RECEIPT_IDS_MAX];
    size_t n = 0;
    if (!idevs_uuid_equal(&opened.sender, &c->dep->services[service].uuid))
        err = IDEVS_ERR_SENDER_NOT_ALLOWED;
    else
        err = idevs_receipt_decode(opened.payload, opened.payload_len, ids, &n);
    idevs_opened_clear(&opened);
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; i < n; i++) {
        list[i].data = ids[i].b;
        list[i].len = IDEVS_UUID_LEN;
    }
    Idevs__Bridge__V1__Receipted r = IDEVS__BRIDGE__V1__RECEIPTED__INIT;
    r.service = (uint32_t)service;
    r.n_message_ids = n;
    r.message_ids = list;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_RECEIPTED;
    f.receipted = &r;
    send_frame(c, &f);
    return IDEVS_OK;
}

/* Opens and checks one delivery and sends it to the logic process; what it must be answered with is noted. */
static idevs_err begin_delivery(compartment *c, const Idevs__Bridge__V1__Deliver *dv, batch_entry *b)
{
    const idevs_deployment *d = c->dep;
    const idevs_deployment_input *in = idevs_deployment_input_by_topic(d, dv->topic);
    const idevs_deployment_request *rq = in == NULL ? idevs_deployment_request_by_response_topic(d, dv->topic) : NULL;
    if (in == NULL && rq == NULL) {
        for (size_t s = 0; s < d->service_count; s++)
            if (strcmp(d->services[s].receipt_from_topic, dv->topic) == 0) {
                b->receipt = true;
                return take_receipt(c, dv, s);
            }
        return IDEVS_ERR_UNKNOWN_INPUT;
    }
    size_t service = in != NULL ? in->from : rq->to;

    idevs_opened opened;
    memset(&opened, 0, sizeof opened);
    idevs_err err = idevs_envelope_open(c->env, dv->topic, dv->envelope.data, dv->envelope.len, &opened);
    if (err != IDEVS_OK)
        return err;
    /* A declared service, but not the one this topic is from (or this request went to). */
    if (!idevs_uuid_equal(&opened.sender, &d->services[service].uuid)) {
        idevs_opened_clear(&opened);
        return IDEVS_ERR_SENDER_NOT_ALLOWED;
    }
    b->opened = true;
    b->service = service;
    b->id = opened.message_id;
    bool copy = handled_before(c, service, &opened.message_id); /* noted either way */
    if (copy || dv->handled) {
        idevs_opened_clear(&opened);
        return IDEVS_ERR_ALREADY_DONE;
    }
    size_t index = in != NULL ? (size_t)(in - d->inputs) : (size_t)(rq - d->requests);
    err = logic_link_queue(&c->link, in == NULL, index, &opened, dv->correlation_data.data, dv->correlation_data.len);
    idevs_opened_clear(&opened);
    return err;
}

static void send_done(compartment *c, uint64_t delivery_id, idevs_err status, uint32_t refusal)
{
    Idevs__Bridge__V1__Done done = IDEVS__BRIDGE__V1__DONE__INIT;
    done.delivery_id = delivery_id;
    done.status = (uint32_t)status;
    done.refusal = refusal;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DONE;
    f.done = &done;
    send_frame(c, &f);
}

/* One receipt per service for the turn's deliveries it sent that were handled (or handled before): Publish frames
 * for the turn's last delivery, so that the launcher releases them once its record holds every one of them. */
static void publish_receipts(compartment *c, uint64_t last_delivery)
{
    static idevs_msgid ids[CMP_EVENTS_MAX];
    const idevs_deployment *d = c->dep;
    for (size_t s = 0; s < d->service_count; s++) {
        size_t n = 0;
        for (size_t i = 0; i < batch_count; i++)
            if (d->services[s].receipts && batch[i].opened && batch[i].service == s &&
                idevs_bridge_done_handled(batch[i].status))
                ids[n++] = batch[i].id;
        if (n == 0)
            continue;
        uint8_t *payload = NULL, *env = NULL;
        size_t payload_len = 0, env_len = 0;
        idevs_err err = idevs_receipt_encode(ids, n, &payload, &payload_len);
        if (err == IDEVS_OK) {
            idevs_seal_input in = {.recipient = &d->services[s].uuid, .topic = d->services[s].receipt_topic,
                                   .payload = payload, .payload_len = payload_len};
            err = idevs_envelope_seal(c->env, &in, &env, &env_len, NULL);
        }
        free(payload);
        if (err != IDEVS_OK) /* no receipt: the sender sends again, and is receipted then */
            continue;
        Idevs__Bridge__V1__Publish pub = IDEVS__BRIDGE__V1__PUBLISH__INIT;
        pub.delivery_id = last_delivery;
        pub.topic = d->services[s].receipt_topic;
        pub.envelope.data = env;
        pub.envelope.len = env_len;
        pub.qos = 1;
        Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
        f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH;
        f.publish = &pub;
        send_frame(c, &f);
        free(env);
    }
}

/* Answers the batch's deliveries in order: Publish frames, then exactly one Done each. */
static void finish_batch(compartment *c)
{
    if (batch_count == 0)
        return;
    drain(c);
    for (size_t i = 0; i < batch_count; i++) {
        idevs_err status = batch[i].status;
        /* What earlier deliveries of the batch produced leaves before the next is waited for: a delivery that
         * hangs must not hold back the Done of one that finished (the launcher counts progress by them). */
        if (i > 0)
            end_turn(c);
        uint32_t refusal = 0; /* the logic's code, checked by the link */
        if (batch[i].receipt) {
            /* taken at once: nothing of the logic's to collect */
        } else if (status == IDEVS_OK && (status = logic_link_collect(&c->link)) == IDEVS_OK) {
            publish_tx(c, batch[i].delivery_id);
            logic_link_release(&c->link, true);
        } else if (status == IDEVS_ERR_LOGIC && batch[i].status == IDEVS_OK) {
            refusal = c->link.refusal;
        }
        batch[i].status = status;
        if (i + 1 == batch_count)
            publish_receipts(c, batch[i].delivery_id);
        send_done(c, batch[i].delivery_id, status, refusal);
    }
    batch_count = 0;
}

/* Whether an input delivery must wait for room in the table of outstanding requests. Each event queued before
 * it is assumed to make at most one request; near the bound they are answered first, so that the count is exact. */
static bool input_must_wait(compartment *c, const Idevs__Bridge__V1__Deliver *dv)
{
    logic_link *k = &c->link;
    if (k->pending_cap == 0 || idevs_deployment_input_by_topic(c->dep, dv->topic) == NULL)
        return false;
    if (c->inputs_held)
        return true;
    if (logic_link_room_for_input(k, k->queued_count))
        return false;
    finish_batch(c);
    return !logic_link_room_for_input(k, 0);
}

static void send_held(compartment *c, uint64_t delivery_id)
{
    Idevs__Bridge__V1__Held held = IDEVS__BRIDGE__V1__HELD__INIT;
    held.delivery_id = delivery_id;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_HELD;
    f.held = &held;
    send_frame(c, &f);
    c->inputs_held = true;
}

/* At the end of a turn: inputs held, and room again (the turn's responses freed it). */
static void maybe_resume(compartment *c)
{
    if (!c->inputs_held || !logic_link_room_for_input(&c->link, 0))
        return;
    Idevs__Bridge__V1__Resumed resumed = IDEVS__BRIDGE__V1__RESUMED__INIT;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_RESUMED;
    f.resumed = &resumed;
    send_frame(c, &f);
    c->inputs_held = false;
}

static void on_deliver(compartment *c, const Idevs__Bridge__V1__Deliver *dv)
{
    if (dv->delivery_id == 0)
        cmp_fatal(c, IDEVS_ERR_FRAME, "Deliver with delivery_id 0 (reserved for timers)");
    if (input_must_wait(c, dv)) {
        send_held(c, dv->delivery_id);
        return;
    }
    batch_entry *b = &batch[batch_count];
    memset(b, 0, sizeof *b);
    b->delivery_id = dv->delivery_id;
    b->status = begin_delivery(c, dv, b);
    batch_count++;
    if (batch_count == CMP_EVENTS_MAX)
        finish_batch(c);
}

static void on_timer(compartment *c)
{
    logic_link *k = &c->link;
    drain(c);
    idevs_err status = logic_link_run_timer(k);
    if (status == IDEVS_OK) {
        publish_tx(c, 0);
        logic_link_release(k, true);
    } else if (status != IDEVS_ERR_LOGIC) {
        send_done(c, 0, status, 0); /* counted and logged by the launcher: a timer run refused (the emit bounds) */
    }
    /* Catch up by skipping, never by firing in a burst. */
    int64_t now = cmp_monotonic_ms();
    k->timer_next_ms += k->timer_period_ms;
    if (k->timer_next_ms <= now)
        k->timer_next_ms = now + k->timer_period_ms;
}

/* Handles every whole frame already received; returns -1 to go on, or an exit status. */
static int on_readable(compartment *c)
{
    for (;;) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&c->ch, &f, 0);
        if (err == IDEVS_ERR_TIMEOUT) {
            finish_batch(c);
            maybe_resume(c);
            end_turn(c);
            return -1;
        }
        if (err == IDEVS_ERR_CHANNEL_CLOSED)
            return CMP_EXIT_CLOSED;
        if (err != IDEVS_OK)
            cmp_fatal(c, err, "frame from the launcher: %s", idevs_strerror(err));
        if (f->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER)
            finish_batch(c); /* a Shutdown comes after the deliveries before it */
        switch (f->body_case) {
        case IDEVS__BRIDGE__V1__FRAME__BODY_RESEAL: {
            /* A kept output the launcher could not deliver as first sealed. One that does not open is no kept
             * output of this program (the launcher's state was damaged): dropped. */
            idevs_err err = kept_reseal(c, f->reseal->kept.data, f->reseal->kept.len);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            if (err == IDEVS_ERR_CHANNEL_CLOSED)
                return CMP_EXIT_CLOSED;
            break;
        }
        case IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER:
            on_deliver(c, f->deliver);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED:
            /* After the deliveries before it (finished above): what they sealed named the former certificate. */
            handshake_renewed(c, f->certified);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_CHECK:
            join_check(c, f->join_check);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_JOIN_OFFER:
            /* A grant that came after the one this compartment took (or to one that never joined): ignored. */
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_TIMER_ROLE:
            logic_link_timer_role(&c->link, f->timer_role->run);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN:
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            drain(c);
            logic_link_shutdown(&c->link);
            return CMP_EXIT_OK;
        default:
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            cmp_fatal(c, IDEVS_ERR_FRAME,
                      "frame from the launcher: not a Deliver, Certified, Reseal, TimerRole, JoinCheck, JoinOffer or "
                      "Shutdown");
        }
    }
}

int serve_run(compartment *c)
{
    logic_link *k = &c->link;
    for (;;) {
        int timeout = -1;
        if (k->timer_period_ms != 0) {
            int64_t left = k->timer_next_ms - cmp_monotonic_ms();
            timeout = left <= 0 ? 0 : (int)(left > 60000 ? 60000 : left);
        }
        struct pollfd p[2] = {{.fd = c->ch.fd, .events = POLLIN}, {.fd = k->ch.fd, .events = POLLIN}};
        if (idevs_channel_pending(&c->ch))
            p[0].events |= POLLOUT;
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR)
            cmp_fatal(c, IDEVS_ERR_IO, "poll: %s", strerror(errno));
        if (n > 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)))
            logic_link_idle_input(k);
        if (n > 0 && (p[0].revents & POLLOUT)) {
            idevs_err err = idevs_channel_flush(&c->ch, 0);
            if (err == IDEVS_ERR_CHANNEL_CLOSED)
                return CMP_EXIT_CLOSED;
        }
        if (n > 0 && (p[0].revents & (POLLIN | POLLHUP | POLLERR))) {
            int status = on_readable(c);
            if (status >= 0)
                return status;
        }
        if (k->timer_period_ms != 0 && cmp_monotonic_ms() >= k->timer_next_ms) {
            on_timer(c);
            end_turn(c);
        }
    }
}
