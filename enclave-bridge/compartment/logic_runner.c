/* The logic process: loads the integration logic, keeps its handler registry, and runs its handlers for the
 * events the key holder sends, under the tightest sandbox of the compartment. It holds no key, no envelope
 * context and no channel to the launcher: its one descriptor (3) is its link to the key holder, and all it can
 * say there is what the host API offers: emit a payload to a declared output, send a payload as a declared
 * request, and return from a handler (with, when it refused the event, the index of a declared refusal code). It names outputs and requests by their index in the descriptor; the key
 * holder decides the receiver, the topic, the message id and the provenance, and checks all of it again.
 *
 * The host API checks what it can here too (declared names, sizes, the per-event bounds, handlers only), so
 * that a behaving logic gets its error codes at once; a logic that writes its own frames on the link meets the
 * key holder's checks instead. */
#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "compartment.h"

#define LOGIC_PATH_FMT "/proc/self/fd/%d"
#define TIMER_MIN_MS 10

typedef enum runner_phase { PHASE_IDLE, PHASE_SETUP, PHASE_HANDLER } runner_phase;

typedef struct runner {
    idevs_logic lg; /* what the logic holds; lg.host points back here */
    idevs_channel ch; /* to the key holder */
    idevs_deployment *dep;
    void *dl;
    const idevs_logic_module *module;
    void *state;
    runner_phase phase;
    idevs_handler *input_handlers;    /* per declared input */
    idevs_handler *response_handlers; /* per declared request */
    idevs_timer_handler timer;
    uint32_t timer_period_ms;
    size_t tx_count, tx_bytes; /* emits and requests of the current handler call */
    bool tx_over;              /* it tried to go past the bounds: nothing of this event leaves */
    uint64_t seq;              /* the current event's, echoed in every answer */
    uint32_t refusal;          /* the current event's idevs_refuse(): 0, or 1 + the declared code's index */
    /* Frames that came while a request waited for its id: the key holder sends events ahead (pipelining), so
     * the next events can come before the id. Handled, in order, after the current event. */
    Idevs__Bridge__V1__Frame *early[CMP_EVENTS_MAX + 1];
    size_t early_first, early_count;
} runner;

static runner the_runner;

/* A Fatal frame to the key holder, which reports it to the launcher; then exit. */
static void __attribute__((noreturn, format(printf, 3, 4))) runner_fatal(runner *r, idevs_err status, const char *fmt,
                                                                            ...)
{
    va_list ap;
    va_start(ap, fmt);
    cmp_report_fatal(&r->ch, status, fmt, ap);
    va_end(ap);
    _exit(CMP_EXIT_FATAL); /* no atexit handlers inside the sandbox */
}

static void send_or_die(runner *r, const Idevs__Bridge__V1__Frame *f, bool now)
{
    idevs_err err = now ? idevs_channel_send(&r->ch, f, -1) : idevs_channel_queue(&r->ch, f);
    if (err == IDEVS_OK && now)
        err = idevs_channel_flush(&r->ch, -1);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED); /* the key holder is gone: nothing to report to */
    if (err != IDEVS_OK)
        runner_fatal(r, err, "cannot send to the key holder: %s", idevs_strerror(err));
}

static runner *runner_of(idevs_logic *lg)
{
    return lg != NULL ? (runner *)lg->host : NULL;
}

/* Every host API call starts here: IDEVS_ERR_INVALID_ARG when lg is not a running logic or args_ok is false,
 * IDEVS_ERR_NOT_NOW outside the phase the call belongs to (setup calls in setup, emitting in a handler). */
static idevs_err runner_for_call(idevs_logic *lg, bool args_ok, runner_phase phase, runner **out)
{
    runner *r = runner_of(lg);
    if (r == NULL || !args_ok)
        return IDEVS_ERR_INVALID_ARG;
    if (r->phase != phase)
        return IDEVS_ERR_NOT_NOW;
    *out = r;
    return IDEVS_OK;
}

/* ---- registration, during setup() only ---- */

/* One handler per input and per response: a second registration is refused. */
static idevs_err take_slot(idevs_handler *slot, idevs_handler handler)
{
    if (*slot != NULL)
        return IDEVS_ERR_INVALID_ARG;
    *slot = handler;
    return IDEVS_OK;
}

static idevs_err api_on_input(idevs_logic *lg, const char *input, idevs_handler handler)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, handler != NULL && input != NULL, PHASE_SETUP, &r);
    if (err != IDEVS_OK)
        return err;
    const idevs_deployment_input *in = NULL;
    for (size_t i = 0; in == NULL && i < r->dep->input_count; i++)
        if (strcmp(r->dep->inputs[i].name, input) == 0)
            in = &r->dep->inputs[i];
    if (in == NULL)
        return IDEVS_ERR_UNKNOWN_INPUT;
    return take_slot(&r->input_handlers[in - r->dep->inputs], handler);
}

static idevs_err api_on_response(idevs_logic *lg, const char *request, idevs_handler handler)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, handler != NULL && request != NULL, PHASE_SETUP, &r);
    if (err != IDEVS_OK)
        return err;
    const idevs_deployment_request *rq = idevs_deployment_request_by_name(r->dep, request);
    if (rq == NULL)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    return take_slot(&r->response_handlers[rq - r->dep->requests], handler);
}

static idevs_err api_on_timer(idevs_logic *lg, uint32_t period_ms, idevs_timer_handler handler)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, handler != NULL && period_ms >= TIMER_MIN_MS, PHASE_SETUP, &r);
    if (err != IDEVS_OK)
        return err;
    if (r->timer != NULL)
        return IDEVS_ERR_INVALID_ARG;
    r->timer = handler;
    r->timer_period_ms = period_ms;
    return IDEVS_OK;
}

/* ---- emitting, during a handler only ---- */

static idevs_err tx_check(runner *r, const void *payload, size_t len)
{
    if (payload == NULL && len > 0)
        return IDEVS_ERR_INVALID_ARG;
    if (len > r->dep->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if (r->tx_count >= CMP_TX_MAX || len > CMP_TX_BYTES_MAX - r->tx_bytes) {
        r->tx_over = true;
        return IDEVS_ERR_EMIT_LIMIT;
    }
    r->tx_count++;
    r->tx_bytes += len;
    return IDEVS_OK;
}

static idevs_err api_emit(idevs_logic *lg, const char *output, const void *payload, size_t len)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, output != NULL, PHASE_HANDLER, &r);
    if (err != IDEVS_OK)
        return err;
    const idevs_deployment_output *o = idevs_deployment_output_by_name(r->dep, output);
    if (o == NULL)
        return IDEVS_ERR_UNKNOWN_OUTPUT;
    err = tx_check(r, payload, len);
    if (err != IDEVS_OK)
        return err;
    Idevs__Bridge__V1__LogicEmit emit = IDEVS__BRIDGE__V1__LOGIC_EMIT__INIT;
    emit.output = (uint32_t)(o - r->dep->outputs);
    emit.payload.data = (uint8_t *)payload;
    emit.payload.len = len;
    emit.seq = r->seq;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_EMIT;
    f.logic_emit = &emit;
    send_or_die(r, &f, false); /* leaves with the handler's LogicDone, in one write */
    return IDEVS_OK;
}

static idevs_err api_request_with_state(idevs_logic *lg, const char *request, const void *payload, size_t len,
                                        const void *state, size_t state_len, idevs_msgid *request_id)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, request != NULL && (state != NULL || state_len == 0), PHASE_HANDLER, &r);
    if (err != IDEVS_OK)
        return err;
    const idevs_deployment_request *rq = idevs_deployment_request_by_name(r->dep, request);
    if (rq == NULL)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    /* Without a response handler its answers are refused before matching: the request would hold its
     * outstanding slot for good, and enough of them would hold every input back. */
    if (r->response_handlers[rq - r->dep->requests] == NULL)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    if (state_len > IDEVS_REQUEST_STATE_MAX)
        return IDEVS_ERR_TOO_LARGE;
    err = tx_check(r, payload, len);
    if (err != IDEVS_OK)
        return err;
    Idevs__Bridge__V1__LogicRequest req = IDEVS__BRIDGE__V1__LOGIC_REQUEST__INIT;
    req.request = (uint32_t)(rq - r->dep->requests);
    req.payload.data = (uint8_t *)payload;
    req.payload.len = len;
    req.state.data = (uint8_t *)state;
    req.state.len = state_len;
    req.seq = r->seq;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST;
    f.logic_request = &req;
    send_or_die(r, &f, true);
    /* The request's id is the message id of its sealed envelope: only the key holder knows it. */
    Idevs__Bridge__V1__Frame *answer = NULL;
    for (;;) {
        err = idevs_channel_recv(&r->ch, &answer, -1);
        if (err == IDEVS_ERR_CHANNEL_CLOSED)
            _exit(CMP_EXIT_CLOSED);
        if (err != IDEVS_OK || answer->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST_ID)
            break;
        /* A later event (or Shutdown) sent ahead: kept for after this one. */
        if (r->early_count == sizeof r->early / sizeof r->early[0]) {
            idevs__bridge__v1__frame__free_unpacked(answer, NULL);
            runner_fatal(r, IDEVS_ERR_FRAME, "the key holder sent too many events ahead of a request's id");
        }
        r->early[(r->early_first + r->early_count++) % (sizeof r->early / sizeof r->early[0])] = answer;
        answer = NULL;
    }
    if (err != IDEVS_OK || answer->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_REQUEST_ID ||
        (answer->logic_request_id->status == IDEVS_OK && answer->logic_request_id->request_id.len != IDEVS_UUID_LEN)) {
        if (answer != NULL)
            idevs__bridge__v1__frame__free_unpacked(answer, NULL);
        runner_fatal(r, IDEVS_ERR_FRAME, "the key holder did not answer a request with its id");
    }
    err = (idevs_err)answer->logic_request_id->status;
    if (err == IDEVS_OK && request_id != NULL)
        memcpy(request_id->b, answer->logic_request_id->request_id.data, IDEVS_UUID_LEN);
    idevs__bridge__v1__frame__free_unpacked(answer, NULL);
    return err < IDEVS_ERR_COUNT ? err : IDEVS_ERR_FRAME;
}

static idevs_err api_request(idevs_logic *lg, const char *request, const void *payload, size_t len,
                             idevs_msgid *request_id)
{
    return api_request_with_state(lg, request, payload, len, NULL, 0, request_id);
}

static idevs_err api_refuse(idevs_logic *lg, const char *code)
{
    runner *r = NULL;
    idevs_err err = runner_for_call(lg, code != NULL, PHASE_HANDLER, &r);
    if (err != IDEVS_OK)
        return err;
    int i = idevs_deployment_refusal_index(r->dep, code);
    if (i < 0)
        return IDEVS_ERR_INVALID_ARG; /* only the declared codes: nothing else can be said this way */
    r->refusal = (uint32_t)i + 1;
    return IDEVS_ERR_LOGIC;
}

static const idevs_host_api host_api = {
    .on_input = api_on_input,
    .on_response = api_on_response,
    .on_timer = api_on_timer,
    .emit = api_emit,
    .request = api_request,
    .refuse = api_refuse,
    .request_with_state = api_request_with_state,
};

/* ---- start-up ---- */

static void load(runner *r)
{
    char path[32], why[512];
    snprintf(path, sizeof path, LOGIC_PATH_FMT, CMP_FD_LOGIC);
    if (sandbox_enter_loading(CMP_FD_LOGIC, why, sizeof why) != IDEVS_OK)
        runner_fatal(r, IDEVS_ERR_SANDBOX, "%s", why);
    /* Runs the logic's constructors: under the first seccomp filter and Landlock. */
    r->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (r->dl == NULL) {
        const char *e = dlerror();
        runner_fatal(r, IDEVS_ERR_CONFIG, "cannot load the logic: %s", e != NULL ? e : "dlopen failed");
    }
    close(CMP_FD_LOGIC); /* mapped now; the descriptor is not needed any more */
    r->module = dlsym(r->dl, IDEVS_LOGIC_SYMBOL);
    if (r->module == NULL)
        runner_fatal(r, IDEVS_ERR_CONFIG, "the logic does not export '%s'", IDEVS_LOGIC_SYMBOL);
    if (r->module->abi != IDEVS_LOGIC_ABI)
        runner_fatal(r, IDEVS_ERR_CONFIG, "the logic was built for ABI %u, this compartment runs ABI %d",
                     r->module->abi, IDEVS_LOGIC_ABI);
    if (r->module->setup == NULL)
        runner_fatal(r, IDEVS_ERR_CONFIG, "the logic has no setup()");
    if (sandbox_enter_serving(why, sizeof why) != IDEVS_OK)
        runner_fatal(r, IDEVS_ERR_SANDBOX, "%s", why);
}

static void set_up(runner *r)
{
    const idevs_deployment *d = r->dep;
    r->input_handlers = calloc(d->input_count + 1, sizeof *r->input_handlers);
    r->response_handlers = calloc(d->request_count + 1, sizeof *r->response_handlers);
    if (r->input_handlers == NULL || r->response_handlers == NULL)
        runner_fatal(r, IDEVS_ERR_NOMEM, "out of memory");
    r->phase = PHASE_SETUP;
    idevs_err err = r->module->setup(&r->lg, d->config_json, &r->state);
    r->phase = PHASE_IDLE;
    if (err != IDEVS_OK)
        runner_fatal(r, IDEVS_ERR_LOGIC, "the logic's setup() failed: %s", idevs_strerror(err));

    uint32_t inputs[IDEVS_DEPLOYMENT_MAX_ENTRIES], responses[IDEVS_DEPLOYMENT_MAX_ENTRIES];
    Idevs__Bridge__V1__LogicReady ready = IDEVS__BRIDGE__V1__LOGIC_READY__INIT;
    ready.abi = r->module->abi;
    ready.logic_name = (char *)(r->module->name != NULL ? r->module->name : "");
    ready.inputs = inputs;
    ready.responses = responses;
    for (size_t i = 0; i < d->input_count; i++)
        if (r->input_handlers[i] != NULL)
            inputs[ready.n_inputs++] = (uint32_t)i;
    for (size_t i = 0; i < d->request_count; i++)
        if (r->response_handlers[i] != NULL)
            responses[ready.n_responses++] = (uint32_t)i;
    ready.timer_period_ms = r->timer != NULL ? r->timer_period_ms : 0;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_READY;
    f.logic_ready = &ready;
    send_or_die(r, &f, true);
}

/* ---- events ---- */

static void run_event(runner *r, const Idevs__Bridge__V1__LogicEvent *ev)
{
    const idevs_deployment *d = r->dep;
    idevs_message msg;
    memset(&msg, 0, sizeof msg);
    idevs_handler handler = NULL;
    bool timer = ev->kind == IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_TIMER;
    if (ev->kind == IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_INPUT && ev->index < d->input_count) {
        handler = r->input_handlers[ev->index];
        msg.name = d->inputs[ev->index].name;
        msg.sender_name = d->services[d->inputs[ev->index].from].name;
    } else if (ev->kind == IDEVS__BRIDGE__V1__LOGIC_EVENT_KIND__LOGIC_EVENT_RESPONSE && ev->index < d->request_count) {
        handler = r->response_handlers[ev->index];
        msg.name = d->requests[ev->index].name;
        msg.sender_name = d->services[d->requests[ev->index].to].name;
    }
    if ((!timer && handler == NULL) || (timer && r->timer == NULL) || ev->sender.len > IDEVS_UUID_LEN ||
        ev->message_id.len > IDEVS_UUID_LEN || ev->request_id.len > IDEVS_UUID_LEN ||
        ev->request_state.len > IDEVS_REQUEST_STATE_MAX || (ev->request_state.len > 0 && ev->request_id.len == 0))
        runner_fatal(r, IDEVS_ERR_FRAME, "an event the logic has no handler for");
    /* The payload is followed by a NUL not counted in payload_len (idevs_logic.h): protobuf-c's copy is not. */
    uint8_t *payload = malloc(ev->payload.len + 1);
    if (payload == NULL)
        runner_fatal(r, IDEVS_ERR_NOMEM, "out of memory");
    if (ev->payload.len > 0)
        memcpy(payload, ev->payload.data, ev->payload.len);
    payload[ev->payload.len] = '\0';
    msg.payload = payload;
    msg.payload_len = ev->payload.len;
    /* Absent fields (a timer's, an input's request id) are empty, with no data to copy. */
    if (ev->sender.len > 0)
        memcpy(msg.sender.b, ev->sender.data, ev->sender.len);
    if (ev->message_id.len > 0)
        memcpy(msg.message_id.b, ev->message_id.data, ev->message_id.len);
    if (ev->request_id.len > 0)
        memcpy(msg.request_id.b, ev->request_id.data, ev->request_id.len);
    if (ev->request_state.len > 0) {
        msg.request_state = ev->request_state.data;
        msg.request_state_len = ev->request_state.len;
    }

    r->tx_count = r->tx_bytes = 0;
    r->tx_over = false;
    r->seq = ev->seq;
    r->refusal = 0;
    r->phase = PHASE_HANDLER;
    idevs_err status = timer ? r->timer(&r->lg, r->state) : handler(&r->lg, &msg, r->state);
    r->phase = PHASE_IDLE;
    idevs_cleanse(payload, ev->payload.len);
    free(payload);

    Idevs__Bridge__V1__LogicDone done = IDEVS__BRIDGE__V1__LOGIC_DONE__INIT;
    done.status = (uint32_t)(r->tx_over ? IDEVS_ERR_EMIT_LIMIT : status);
    done.seq = r->seq;
    /* The code counts only for a handler that refused its event (IDEVS_ERR_LOGIC, as idevs_refuse returned). */
    done.refusal = done.status == IDEVS_ERR_LOGIC ? r->refusal : 0;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_DONE;
    f.logic_done = &done;
    send_or_die(r, &f, true);
}

void logic_runner_main(void)
{
    runner *r = &the_runner;
    r->lg.api = &host_api;
    r->lg.host = r;
    idevs_channel_init(&r->ch, CMP_FD_CHANNEL, 0);
    char why[512];
    if (sandbox_harden_process(why, sizeof why) != IDEVS_OK)
        runner_fatal(r, IDEVS_ERR_SANDBOX, "%s", why);
    /* OpenSSL without its configuration file, as in the key holder (the descriptor's digest uses it). */
    if (OPENSSL_init_crypto(OPENSSL_INIT_NO_LOAD_CONFIG, NULL) != 1)
        runner_fatal(r, IDEVS_ERR_CRYPTO, "OpenSSL failed to initialise");

    /* The descriptor, once the key holder is certified. */
    Idevs__Bridge__V1__Frame *f = NULL;
    idevs_err err = idevs_channel_recv(&r->ch, &f, -1);
    if (err == IDEVS_ERR_CHANNEL_CLOSED)
        _exit(CMP_EXIT_CLOSED);
    if (err != IDEVS_OK || f->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_SETUP)
        runner_fatal(r, IDEVS_ERR_FRAME, "the key holder's first frame is not LogicSetup");
    err = idevs_deployment_parse(f->logic_setup->descriptor.data, f->logic_setup->descriptor.len, &r->dep, why,
                                 sizeof why);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    if (err != IDEVS_OK)
        runner_fatal(r, err, "deployment descriptor: %s", why);
    /* Events carry at most one payload: a bigger frame on the link is refused. */
    r->ch.max_frame = r->dep->max_payload + 1024;
    /* The time zone, read now: localtime_r() in the logic then needs no file. */
    tzset();
    sandbox_set_channel(&r->ch);
    load(r);
    set_up(r);

    for (;;) {
        f = NULL;
        if (r->early_count > 0) {
            f = r->early[r->early_first];
            r->early_first = (r->early_first + 1) % (sizeof r->early / sizeof r->early[0]);
            r->early_count--;
            err = IDEVS_OK;
        } else {
            err = idevs_channel_recv(&r->ch, &f, -1);
        }
        if (err == IDEVS_ERR_CHANNEL_CLOSED)
            _exit(CMP_EXIT_CLOSED);
        if (err != IDEVS_OK)
            runner_fatal(r, err, "frame from the key holder: %s", idevs_strerror(err));
        if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_LOGIC_EVENT) {
            run_event(r, f->logic_event);
            /* protobuf-c's copies of the opened payload and the request's state */
            idevs_cleanse(f->logic_event->payload.data, f->logic_event->payload.len);
            idevs_cleanse(f->logic_event->request_state.data, f->logic_event->request_state.len);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            continue;
        }
        bool shutdown = f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        if (!shutdown)
            runner_fatal(r, IDEVS_ERR_FRAME, "frame from the key holder: not an event");
        if (r->module->teardown != NULL)
            r->module->teardown(r->state);
        _exit(CMP_EXIT_OK); /* see runner_fatal */
    }
}
