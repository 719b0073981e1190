/* The key holder's side of the link to the logic process: it hands the logic opened events and turns what the
 * logic answers into sealed envelopes. Everything the logic process sends is untrusted: a frame it may not send,
 * an index the descriptor does not declare, a payload over the limits or anything outside an event ends the
 * compartment (the launcher restarts it); the logic never chooses a receiver, a topic, a message id or a
 * provenance: each output is sealed to the receiver its descriptor entry names, with the provenance computed
 * here.
 *
 * Transactions: emits and requests are sealed as they arrive (a request's id is the message id of its envelope,
 * which the logic gets back), but the sealed envelopes stay here until the handler's LogicDone; only on
 * IDEVS_OK does serve.c publish them. A dropped envelope may have been the first of a sending epoch, the one that
 * carries our certificate chain; then every sending epoch is restarted, so that the next envelope to each
 * receiver carries the chain again. Per event at most CMP_TX_MAX envelopes and CMP_TX_BYTES_MAX payload bytes:
 * beyond that nothing of the event leaves (IDEVS_ERR_EMIT_LIMIT).
 *
 * Provenance: an output caused by an input names [the input's message id]; one caused by a response names
 * [the response's message id, then the ids that caused the request]; a timer's outputs name none.
 *
 * Message ids: the n-th envelope of an event caused by a message gets keys_output_id(its sender, its id, n), so
 * an input run again after its compartment died (before the launcher recorded it done) sends the same ids as the
 * first run, and its receivers handle each once; a timer's envelopes get random ids.
 *
 * Requests across restarts: each request's correlation data carries what its answer needs, sealed to ourselves
 * (request_state.c). An answer that matches nothing in the table below but carries such a token from a former run
 * of the compartment, naming a request of its own entry that its provenance names, is matched by the token: the
 * table is lost with the process, the token is not.
 *
 * Outstanding requests: each committed request is remembered until its response arrives, in a table of
 * limits.max_outstanding_requests slots that is never overrun: nothing is forgotten to make room. serve.c holds
 * inputs while the table is full (back-pressure on the launcher); a request the logic makes when no slot is left
 * (a timer's, a response handler's, or an event's second) fails with IDEVS_ERR_QUEUE_FULL and is not sent. Only
 * a request with a response handler is sent at all (its answer frees the slot): the runner refuses the others
 * (IDEVS_ERR_UNKNOWN_REQUEST), and a LogicRequest frame for one ends the compartment. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compartment.h"

#define TIMER_MIN_MS 10

void logic_link_init(logic_link *k, compartment *c)
{
    memset(k, 0, sizeof *k);
    k->c = c;
    idevs_channel_init(&k->ch, CMP_FD_LOGIC_LINK, 0);
}

static void send_or_die(logic_link *k, const Idevs__Bridge__V1__Frame *f)
{
    idevs_err err = idevs_channel_send(&k->ch, f, (int)k->c->dep->event_timeout_ms);
    if (err == IDEVS_OK)
        err = idevs_channel_flush(&k->ch, (int)k->c->dep->event_timeout_ms);
    if (err != IDEVS_OK)
        cmp_fatal(k->c, err, "cannot send to the logic process: %s", idevs_strerror(err));
}

/* The next frame from the logic process, within timeout_ms; what it says about itself ends us. */
static Idevs__Bridge__V1__Frame *receive(logic_link *k, int timeout_ms, const char *waiting_for)
{
    Idevs__Bridge__V1__Frame *f = NULL;
    idevs_err err = idevs_channel_recv(&k->ch, &f, timeout_ms);
    if (err == IDEVS_ERR_TIMEOUT)
        cmp_fatal(k->c, IDEVS_ERR_TIMEOUT, "the logic process did not answer within %d ms (%s)", timeout_ms,
                  waiting_for);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        cmp_fatal(k->c, IDEVS_ERR_CHANNEL_CLOSED, "the logic process ended (%s)", waiting_for);
    if (err != IDEVS_OK)
        cmp_fatal(k->c, err, "the logic process sent a bad frame (%s): %s", waiting_for, idevs_strerror(err));
    if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_FATAL) {
        /* Its own report (a setup failure, or the SIGSYS reporter's): passed on, cut and made printable. */
        char reason[240];
        const char *src = f->fatal->reason != NULL ? f->fatal->reason : "";
        size_t n = strnlen(src, sizeof reason - 1);
        for (size_t i = 0; i < n; i++)
            reason[i] = src[i] >= 0x20 && src[i] <= 0x7e ? src[i] : '?';
        reason[n] = '\0';
        idevs_err status = f->fatal->status < IDEVS_ERR_COUNT ? (idevs_err)f->fatal->status : IDEVS_ERR_LOGIC;
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        cmp_fatal(k->c, status, "%s (in the logic process)", reason);
    }
    return f;
}

static void __attribute__((noreturn)) violation(logic_link *k, Idevs__Bridge__V1__Frame *f, const char *what)
{
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    cmp_fatal(k->c, IDEVS_ERR_FRAME, "the logic process broke the link's protocol: %s", what);
}

/* ---- setup ---- */

void logic_link_setup(logic_link *k)
{
    const idevs_deployment *d = k->c->dep;
    /* Frames from the logic carry at most one payload. */
    k->ch.max_frame = d->max_payload + 1024;
    k->has_input = calloc(d->input_count + 1, sizeof *k->has_input);
    k->has_response = calloc(d->request_count + 1, sizeof *k->has_response);
    k->pending_cap = d->request_count == 0 ? 0 : d->max_outstanding_requests;
    k->pending = calloc(k->pending_cap + 1, sizeof *k->pending);
    if (k->has_input == NULL || k->has_response == NULL || k->pending == NULL)
        cmp_fatal(k->c, IDEVS_ERR_NOMEM, "out of memory");

    Idevs__Bridge__V1__LogicSetup setup = IDEVS__BRIDGE__V1__LOGIC_SETUP__INIT;
    setup.descriptor.data = k->c->descriptor;
    setup.descriptor.len = k->c->descriptor_len;
    Idevs__Bridge__V1__Frame out = IDEVS__BRIDGE__V1__FRAME__INIT;
    out.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_SETUP;
    out.logic_setup = &setup;
    send_or_die(k, &out);

    Idevs__Bridge__V1__Frame *f = receive(k, CMP_HANDSHAKE_TIMEOUT_MS, "loading and setting up the logic");
    if (f->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_READY)
        violation(k, f, "the first frame is not LogicReady");
    const Idevs__Bridge__V1__LogicReady *r = f->logic_ready;
    for (size_t i = 0; i < r->n_inputs; i++) {
        if (r->inputs[i] >= d->input_count)
            violation(k, f, "LogicReady names an input the descriptor does not declare");
        k->has_input[r->inputs[i]] = true;
    }
    for (size_t i = 0; i < r->n_responses; i++) {
        if (r->responses[i] >= d->request_count)
            violation(k, f, "LogicReady names a request the descriptor does not declare");
        k->has_response[r->responses[i]] = true;
    }
    if (r->timer_period_ms != 0 && r->timer_period_ms < TIMER_MIN_MS)
        violation(k, f, "LogicReady asks for a timer under 10 ms");
    k->abi = r->abi;
    size_t n = strnlen(r->logic_name != NULL ? r->logic_name : "", sizeof k->logic_name - 1);
    for (size_t i = 0; i < n; i++)
        k->logic_name[i] = r->logic_name[i] >= 0x20 && r->logic_name[i] <= 0x7e ? r->logic_name[i] : '?';
    /* Only one instance runs the timer: the pool's instances share one logic, whose timer must run once.
     * The pool's first from its start (Init); another when the launcher hands it the role (TimerRole). */
    k->timer_asked_ms = r->timer_period_ms;
    logic_link_timer_role(k, k->c->timer_first);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
}

/* ---- requests in flight ---- */

static cmp_pending *pending_find(logic_link *k, size_t request, const idevs_msgid *id)
{
    for (size_t i = 0; i < k->pending_cap; i++) {
        cmp_pending *p = &k->pending[i];
        if (p->used && p->request == request && memcmp(p->id.b, id->b, IDEVS_UUID_LEN) == 0)
            return p;
    }
    return NULL;
}

static void pending_forget(logic_link *k, cmp_pending *p)
{
    free(p->provenance);
    idevs_cleanse(p->state, p->state_len);
    free(p->state);
    memset(p, 0, sizeof *p);
    k->pending_used--;
}

/* Remembers a committed request in a free slot; tx_seal reserved it, so there is one. */
static void pending_remember(logic_link *k, const cmp_sealed *s)
{
    if (k->pending_used >= k->pending_cap)
        cmp_fatal(k->c, IDEVS_ERR_QUEUE_FULL, "no room to remember a request (a bug)");
    cmp_pending *p = &k->pending[k->pending_next];
    while (p->used) {
        k->pending_next = (k->pending_next + 1) % k->pending_cap;
        p = &k->pending[k->pending_next];
    }
    k->pending_next = (k->pending_next + 1) % k->pending_cap;
    p->provenance = s->provenance_count > 0 ? malloc(s->provenance_count * sizeof(idevs_msgid)) : NULL;
    if (s->provenance_count > 0 && p->provenance == NULL)
        cmp_fatal(k->c, IDEVS_ERR_NOMEM, "out of memory remembering a request");
    if (s->provenance_count > 0)
        memcpy(p->provenance, s->provenance, s->provenance_count * sizeof(idevs_msgid));
    p->provenance_count = s->provenance_count;
    p->state = s->state; /* taken over from the transaction */
    p->state_len = s->state_len;
    p->request = s->index;
    p->id = s->message_id;
    p->used = true;
    k->pending_used++;
}

/* Whether a former run's request is answered for the first time in this run; it is remembered as answered. */
static bool former_first_answer(logic_link *k, const idevs_msgid *id)
{
    for (size_t i = 0; i < k->former_count; i++)
        if (memcmp(k->former[i].b, id->b, IDEVS_UUID_LEN) == 0)
            return false;
    k->former[k->former_next] = *id;
    k->former_next = (k->former_next + 1) % CMP_FORMER_MAX;
    if (k->former_count < CMP_FORMER_MAX)
        k->former_count++;
    return true;
}

bool logic_link_room_for_input(const logic_link *k, size_t ahead)
{
    return k->pending_cap == 0 || k->pending_used + ahead < k->pending_cap;
}

/* ---- the transaction ---- */

static void sealed_free(cmp_sealed *s)
{
    free(s->envelope);
    free(s->kept);
    free(s->correlation);
    idevs_cleanse(s->state, s->state_len);
    free(s->state);
    memset(s, 0, sizeof *s);
}

/* A request's own part: what caused it (for the provenance of what its response causes, with room for the
 * response's id), the logic's state, and both sealed into its correlation data. */
static idevs_err tx_request_state(logic_link *k, cmp_sealed *s, size_t index, const ProtobufCBinaryData *state)
{
    size_t n = k->current->provenance_count;
    s->provenance_count = n < IDEVS_PROVENANCE_MAX ? n : IDEVS_PROVENANCE_MAX - 1;
    memcpy(s->provenance, k->current->provenance, s->provenance_count * sizeof(idevs_msgid));
    s->correlation_len = IDEVS_REQUEST_CORRELATION_LEN;
    s->correlation = malloc(s->correlation_len);
    s->state = state->len > 0 ? malloc(state->len) : NULL;
    if (s->correlation == NULL || (state->len > 0 && s->state == NULL))
        return IDEVS_ERR_NOMEM;
    if (state->len > 0)
        memcpy(s->state, state->data, state->len);
    s->state_len = state->len;
    return request_state_seal(k->c, index, s, s->correlation);
}

/* Seals one payload the logic emitted or requested, to the receiver the descriptor declares for it. */
static idevs_err tx_seal(logic_link *k, bool is_request, size_t index, const ProtobufCBinaryData *payload,
                         const ProtobufCBinaryData *state)
{
    const idevs_deployment *d = k->c->dep;
    if (payload->len > d->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if (k->tx_over || k->tx_count >= CMP_TX_MAX || payload->len > CMP_TX_BYTES_MAX - k->tx_bytes) {
        k->tx_over = true;
        return IDEVS_ERR_EMIT_LIMIT;
    }
    /* Room to remember it: the table is never overrun, and a request that cannot be tied to its response is
     * not sent. */
    if (is_request && k->pending_used + k->tx_requests >= k->pending_cap)
        return IDEVS_ERR_QUEUE_FULL;
    const char *topic = is_request ? d->requests[index].topic : d->outputs[index].topic;
    size_t to = is_request ? d->requests[index].to : d->outputs[index].to;
    cmp_sealed *s = &k->tx[k->tx_count];
    memset(s, 0, sizeof *s);
    idevs_seal_input in = {
        .recipient = &d->services[to].uuid,
        .topic = topic,
        .payload = payload->data,
        .payload_len = payload->len,
        .provenance = k->current->provenance,
        .provenance_count = k->current->provenance_count,
        .pad = is_request ? d->requests[index].pad : d->outputs[index].pad,
    };
    /* An event caused by a message (an input, a response) gives its envelopes ids derived from that message's: run
     * again, it sends the same ids. A timer's are random. */
    idevs_msgid derived;
    idevs_err err = IDEVS_OK;
    if (k->current->provenance_count > 0) {
        err = keys_output_id(k->c->output_id_key, &k->current->sender, &k->current->provenance[0],
                             (uint32_t)k->tx_count, &derived);
        in.message_id = &derived;
    }
    if (err == IDEVS_OK)
        err = idevs_envelope_seal(k->c->env, &in, &s->envelope, &s->envelope_len, &s->message_id);
    if (err == IDEVS_OK && is_request)
        err = tx_request_state(k, s, index, state);
    /* To a service with receipts, the launcher keeps it until the receipt: what it needs to be sealed anew. */
    if (err == IDEVS_OK && d->services[to].receipts)
        err = kept_seal(k->c, is_request, index, &s->message_id, k->current->provenance, k->current->provenance_count,
                        payload->data, payload->len, s->correlation, is_request ? s->correlation_len : 0,
                        &s->kept, &s->kept_len);
    if (err != IDEVS_OK) {
        sealed_free(s);
        return err;
    }
    s->is_request = is_request;
    s->index = index;
    k->tx_count++;
    k->tx_requests += is_request;
    k->tx_bytes += payload->len;
    return IDEVS_OK;
}

void logic_link_release(logic_link *k, bool committed)
{
    for (size_t i = 0; i < k->tx_count; i++) {
        if (committed && k->tx[i].is_request) {
            pending_remember(k, &k->tx[i]);
            k->tx[i].state = NULL; /* the table's now */
            k->tx[i].state_len = 0;
        }
        sealed_free(&k->tx[i]);
    }
    if (!committed && k->tx_count > 0) {
        idevs_envelope_stats st;
        idevs_envelope_get_stats(k->c->env, &st);
        if (st.sending_epochs != k->epochs_before_tx)
            idevs_envelope_rotate(k->c->env);
    }
    k->tx_count = 0;
    k->tx_requests = 0;
    k->tx_bytes = 0;
    k->tx_over = false;
}

static void answer_request(logic_link *k, idevs_err status)
{
    Idevs__Bridge__V1__LogicRequestId id = IDEVS__BRIDGE__V1__LOGIC_REQUEST_ID__INIT;
    id.status = (uint32_t)status;
    if (status == IDEVS_OK) {
        id.request_id.data = k->tx[k->tx_count - 1].message_id.b;
        id.request_id.len = IDEVS_UUID_LEN;
    }
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST_ID;
    f.logic_request_id = &id;
    send_or_die(k, &f);
}

/* Sends an event (queued on the link, flushed by the next collect) and remembers it with its provenance. */
static void queue_event(logic_link *k, Idevs__Bridge__V1__LogicEvent *ev, const cmp_event *what)
{
    cmp_event *e = &k->queued[(k->queued_first + k->queued_count) % CMP_EVENTS_MAX];
    *e = *what;
    e->seq = ev->seq = ++k->seq;
    k->queued_count++;
    Idevs__Bridge__V1__Frame out = IDEVS__BRIDGE__V1__FRAME__INIT;
    out.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_EVENT;
    out.logic_event = ev;
    idevs_err err = idevs_channel_queue(&k->ch, &out);
    if (err != IDEVS_OK)
        cmp_fatal(k->c, err, "cannot send to the logic process: %s", idevs_strerror(err));
}

bool logic_link_full(const logic_link *k)
{
    return k->queued_count >= CMP_EVENTS_MAX;
}

idevs_err logic_link_collect(logic_link *k)
{
    const idevs_deployment *d = k->c->dep;
    if (k->queued_count == 0)
        cmp_fatal(k->c, IDEVS_ERR_FRAME, "no event to collect (a bug)");
    if (idevs_channel_pending(&k->ch)) {
        idevs_err err = idevs_channel_flush(&k->ch, (int)d->event_timeout_ms);
        if (err != IDEVS_OK)
            cmp_fatal(k->c, err, "cannot send to the logic process: %s", idevs_strerror(err));
    }
    cmp_event *e = &k->queued[k->queued_first];
    k->current = e;
    idevs_envelope_stats st;
    idevs_envelope_get_stats(k->c->env, &st);
    k->epochs_before_tx = st.sending_epochs;
    k->tx_count = k->tx_requests = k->tx_bytes = 0;
    k->tx_over = false;
    k->refusal = 0;
    idevs_err result = IDEVS_OK;
    for (bool done = false; !done;) {
        Idevs__Bridge__V1__Frame *f = receive(k, (int)d->event_timeout_ms, "an event's handler");
        /* Anything the logic wrote before it read this event (after an earlier handler returned) has an older
         * seq; one of a later event cannot come before this one's LogicDone. Either belongs to no event. */
        uint64_t seq;
        if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_EMIT)
            seq = f->logic_emit->seq;
        else if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST)
            seq = f->logic_request->seq;
        else if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_DONE)
            seq = f->logic_done->seq;
        else
            violation(k, f, "a frame the logic process may not send");
        if (seq != e->seq)
            violation(k, f, "a frame that answers no current event (written after a handler returned?)");
        switch (f->body_case) {
        case IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_EMIT:
            if (f->logic_emit->output >= d->output_count)
                violation(k, f, "an emit to an output the descriptor does not declare");
            (void)tx_seal(k, false, f->logic_emit->output, &f->logic_emit->payload, &(ProtobufCBinaryData){0, NULL});
            /* The plaintext the logic emitted: protobuf-c's copy, cleansed before it is freed. */
            idevs_cleanse(f->logic_emit->payload.data, f->logic_emit->payload.len);
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST: {
            if (f->logic_request->request >= d->request_count)
                violation(k, f, "a request the descriptor does not declare");
            /* The runner refuses such a request itself; sent anyway, it would take a slot no answer frees. */
            if (!k->has_response[f->logic_request->request])
                violation(k, f, "a request the logic registered no response handler for");
            /* The runner refuses a larger state itself. */
            if (f->logic_request->state.len > IDEVS_REQUEST_STATE_MAX)
                violation(k, f, "a request's state over IDEVS_REQUEST_STATE_MAX");
            idevs_err err =
                tx_seal(k, true, f->logic_request->request, &f->logic_request->payload, &f->logic_request->state);
            idevs_cleanse(f->logic_request->payload.data, f->logic_request->payload.len);
            idevs_cleanse(f->logic_request->state.data, f->logic_request->state.len);
            answer_request(k, err);
            break;
        }
        default: { /* LogicDone */
            idevs_err status = (idevs_err)f->logic_done->status;
            uint32_t refusal = f->logic_done->refusal;
            /* A code is one of the declared ones, for a refused event: the logic chooses among them, and can
             * say nothing else this way (at most log2(n + 1) bits per event, like its choice to fail). */
            if (refusal > d->refusal_count)
                violation(k, f, "a refusal code the descriptor does not declare");
            if (refusal != 0 && status != IDEVS_ERR_LOGIC)
                violation(k, f, "a refusal code for an event the handler did not refuse");
            done = true;
            if (k->tx_over || status == IDEVS_ERR_EMIT_LIMIT)
                result = IDEVS_ERR_EMIT_LIMIT;
            else if (status != IDEVS_OK)
                result = IDEVS_ERR_LOGIC;
            k->refusal = result == IDEVS_ERR_LOGIC ? refusal : 0;
        }
        }
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    if (result != IDEVS_OK)
        logic_link_release(k, false);
    k->current = NULL;
    idevs_cleanse(e, sizeof *e);
    k->queued_first = (k->queued_first + 1) % CMP_EVENTS_MAX;
    k->queued_count--;
    return result;
}

idevs_err logic_link_queue(logic_link *k, bool response, size_t index, const idevs_opened *opened,
                           const uint8_t *correlation, size_t correlation_len)
{
    if (!(response ? k->has_response[index] : k->has_input[index]))
        return response ? IDEVS_ERR_UNKNOWN_REQUEST : IDEVS_ERR_UNKNOWN_INPUT;
    if (logic_link_full(k))
        cmp_fatal(k->c, IDEVS_ERR_FRAME, "too many events queued for the logic process (a bug)");
    cmp_event e;
    memset(&e, 0, sizeof e);
    e.provenance[0] = opened->message_id;
    e.provenance_count = 1;
    e.sender = opened->sender;
    idevs_msgid request_id;
    memset(&request_id, 0, sizeof request_id);
    bool known = false;
    request_state rs; /* the matched request's state, from the table or from a former run's token */
    memset(&rs, 0, sizeof rs);
    if (response) {
        /* The response names the request's id in its provenance, which is authenticated. MQTT correlation
         * data is not: the broker could swap it between two answers, so it never decides which request an
         * answer belongs to. */
        cmp_pending *p = NULL;
        for (size_t i = 0; p == NULL && i < opened->provenance_count; i++)
            p = pending_find(k, index, &opened->provenance[i]);
        if (p != NULL) {
            request_id = p->id;
            known = true;
            size_t room = IDEVS_PROVENANCE_MAX - 1;
            size_t n = p->provenance_count < room ? p->provenance_count : room;
            if (n > 0)
                memcpy(&e.provenance[1], p->provenance, n * sizeof(idevs_msgid));
            e.provenance_count += n;
            if (p->state_len > 0)
                memcpy(rs.state, p->state, p->state_len);
            rs.state_len = p->state_len;
            pending_forget(k, p);
        } else if (request_state_open(k->c, index, correlation, correlation_len, opened->provenance,
                                      opened->provenance_count, &rs) &&
                   former_first_answer(k, &rs.id)) {
            /* A former run's request: no slot of ours to free, the rest as from the table. */
            request_id = rs.id;
            known = true;
            if (rs.provenance_count > 0)
                memcpy(&e.provenance[1], rs.provenance, rs.provenance_count * sizeof(idevs_msgid));
            e.provenance_count += rs.provenance_count;
        }
    }
    Idevs__Bridge__V1__LogicEvent ev = IDEVS__BRIDGE__V1__LOGIC_EVENT__INIT;
    ev.kind = response ? IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_RESPONSE
                       : IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_INPUT;
    ev.index = (uint32_t)index;
    ev.payload.data = opened->payload;
    ev.payload.len = opened->payload_len;
    ev.sender.data = (uint8_t *)opened->sender.b;
    ev.sender.len = IDEVS_UUID_LEN;
    ev.message_id.data = (uint8_t *)opened->message_id.b;
    ev.message_id.len = IDEVS_UUID_LEN;
    if (known) {
        ev.request_id.data = request_id.b;
        ev.request_id.len = IDEVS_UUID_LEN;
        ev.request_state.data = rs.state;
        ev.request_state.len = rs.state_len;
    }
    queue_event(k, &ev, &e); /* packed into the link's buffer: rs is not needed after */
    idevs_cleanse(&rs, sizeof rs);
    return IDEVS_OK;
}

void logic_link_timer_role(logic_link *k, bool run)
{
    uint32_t period = run ? k->timer_asked_ms : 0;
    if (period != 0 && k->timer_period_ms == 0)
        k->timer_next_ms = cmp_monotonic_ms() + period;
    k->timer_period_ms = period;
}

idevs_err logic_link_run_timer(logic_link *k)
{
    cmp_event e;
    memset(&e, 0, sizeof e); /* a timer's outputs name no input */
    Idevs__Bridge__V1__LogicEvent ev = IDEVS__BRIDGE__V1__LOGIC_EVENT__INIT;
    ev.kind = IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_TIMER;
    queue_event(k, &ev, &e);
    return logic_link_collect(k);
}

void logic_link_idle_input(logic_link *k)
{
    /* Between events the logic process has nothing to say: a Fatal (reported by receive) or a violation. */
    Idevs__Bridge__V1__Frame *f = receive(k, CMP_FATAL_FLUSH_MS, "between events");
    violation(k, f, "a frame between events (an emit after its handler returned?)");
}

void logic_link_shutdown(logic_link *k)
{
    Idevs__Bridge__V1__Shutdown shutdown = IDEVS__BRIDGE__V1__SHUTDOWN__INIT;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
    f.shutdown = &shutdown;
    /* Best effort: the logic process also dies with us (PR_SET_PDEATHSIG). */
    if (idevs_channel_send(&k->ch, &f, 0) == IDEVS_OK)
        (void)idevs_channel_flush(&k->ch, CMP_FATAL_FLUSH_MS);
    logic_link_release(k, false);
    for (size_t i = 0; i < k->pending_cap; i++)
        if (k->pending[i].used)
            pending_forget(k, &k->pending[i]);
    free(k->pending);
    free(k->has_input);
    free(k->has_response);
    k->pending = NULL;
    k->has_input = k->has_response = NULL;
}
