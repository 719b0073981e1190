/* The integration logic inside the compartment: loading it, the handler registry, the host API the logic
 * calls (idevs_logic.h), transactions and provenance.
 *
 * Transactions: emit() and request() seal at once (a request's id is the message id of its envelope, which the
 * logic gets back), but the sealed envelopes stay here until the handler returns; only then, and only on
 * IDEVS_OK, does serve.c publish them. On any other result they are dropped. A dropped envelope may have been
 * the first of a sending epoch, the one that carries our certificate chain; then every sending epoch is
 * restarted, so that the next envelope to each receiver carries the chain again.
 *
 * Provenance: an output caused by an input names [the input's message id]; one caused by a response names
 * [the response's message id, then the ids that caused the request]; a timer's outputs name none. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compartment.h"

#define LOGIC_PATH_FMT "/proc/self/fd/%d"
#define TIMER_MIN_MS 10

static logic_host *host_of(idevs_logic *lg)
{
    return lg != NULL ? (logic_host *)lg->host : NULL;
}

/* ---- registration, during setup() only ---- */

static idevs_err find_index(const char *name, size_t count, const char *(*name_at)(const idevs_deployment *, size_t),
                            const idevs_deployment *d, size_t *index)
{
    if (name == NULL)
        return IDEVS_ERR_INVALID_ARG;
    for (size_t i = 0; i < count; i++)
        if (strcmp(name_at(d, i), name) == 0) {
            *index = i;
            return IDEVS_OK;
        }
    return IDEVS_ERR_NOT_NOW; /* replaced by the caller's own code */
}

static const char *input_name(const idevs_deployment *d, size_t i) { return d->inputs[i].name; }
static const char *request_name(const idevs_deployment *d, size_t i) { return d->requests[i].name; }

static idevs_err api_on_input(idevs_logic *lg, const char *input, idevs_handler handler)
{
    logic_host *h = host_of(lg);
    size_t i;
    if (h == NULL || handler == NULL || input == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (h->phase != CMP_PHASE_SETUP)
        return IDEVS_ERR_NOT_NOW;
    if (find_index(input, h->c->dep->input_count, input_name, h->c->dep, &i) != IDEVS_OK)
        return IDEVS_ERR_UNKNOWN_INPUT;
    if (h->input_handlers[i] != NULL)
        return IDEVS_ERR_INVALID_ARG; /* one handler per input */
    h->input_handlers[i] = handler;
    return IDEVS_OK;
}

static idevs_err api_on_response(idevs_logic *lg, const char *request, idevs_handler handler)
{
    logic_host *h = host_of(lg);
    size_t i;
    if (h == NULL || handler == NULL || request == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (h->phase != CMP_PHASE_SETUP)
        return IDEVS_ERR_NOT_NOW;
    if (find_index(request, h->c->dep->request_count, request_name, h->c->dep, &i) != IDEVS_OK)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    if (h->response_handlers[i] != NULL)
        return IDEVS_ERR_INVALID_ARG;
    h->response_handlers[i] = handler;
    return IDEVS_OK;
}

static idevs_err api_on_timer(idevs_logic *lg, uint32_t period_ms, idevs_timer_handler handler)
{
    logic_host *h = host_of(lg);
    if (h == NULL || handler == NULL || period_ms < TIMER_MIN_MS)
        return IDEVS_ERR_INVALID_ARG;
    if (h->phase != CMP_PHASE_SETUP)
        return IDEVS_ERR_NOT_NOW;
    if (h->timer != NULL)
        return IDEVS_ERR_INVALID_ARG;
    h->timer = handler;
    h->timer_period_ms = period_ms;
    return IDEVS_OK;
}

/* ---- emitting, during a handler only ---- */

static idevs_err tx_seal(logic_host *h, bool is_request, size_t index, const char *topic, size_t to,
                         const void *payload, size_t len)
{
    const idevs_deployment *d = h->c->dep;
    if (payload == NULL && len > 0)
        return IDEVS_ERR_INVALID_ARG;
    if (len > d->max_payload)
        return IDEVS_ERR_TOO_LARGE;
    if (h->tx_count >= CMP_TX_MAX)
        return IDEVS_ERR_QUEUE_FULL;
    cmp_sealed *s = &h->tx[h->tx_count];
    memset(s, 0, sizeof *s);
    idevs_seal_input in = {
        .recipient = &d->services[to].uuid,
        .topic = topic,
        .payload = payload,
        .payload_len = len,
        .provenance = h->provenance,
        .provenance_count = h->provenance_count,
    };
    idevs_err err = idevs_envelope_seal(h->c->env, &in, &s->envelope, &s->envelope_len, &s->message_id);
    if (err != IDEVS_OK)
        return err;
    s->is_request = is_request;
    s->index = index;
    if (is_request) {
        /* What caused the request, for the provenance of what its response causes: room for the response's id. */
        s->provenance_count = h->provenance_count < IDEVS_PROVENANCE_MAX ? h->provenance_count
                                                                         : IDEVS_PROVENANCE_MAX - 1;
        memcpy(s->provenance, h->provenance, s->provenance_count * sizeof(idevs_msgid));
    }
    h->tx_count++;
    return IDEVS_OK;
}

static idevs_err api_emit(idevs_logic *lg, const char *output, const void *payload, size_t len)
{
    logic_host *h = host_of(lg);
    if (h == NULL || output == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (h->phase != CMP_PHASE_HANDLER)
        return IDEVS_ERR_NOT_NOW;
    const idevs_deployment_output *o = idevs_deployment_output_by_name(h->c->dep, output);
    if (o == NULL)
        return IDEVS_ERR_UNKNOWN_OUTPUT;
    return tx_seal(h, false, (size_t)(o - h->c->dep->outputs), o->topic, o->to, payload, len);
}

static idevs_err api_request(idevs_logic *lg, const char *request, const void *payload, size_t len,
                             idevs_msgid *request_id)
{
    logic_host *h = host_of(lg);
    if (h == NULL || request == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (h->phase != CMP_PHASE_HANDLER)
        return IDEVS_ERR_NOT_NOW;
    const idevs_deployment_request *r = idevs_deployment_request_by_name(h->c->dep, request);
    if (r == NULL)
        return IDEVS_ERR_UNKNOWN_REQUEST;
    idevs_err err = tx_seal(h, true, (size_t)(r - h->c->dep->requests), r->topic, r->to, payload, len);
    if (err == IDEVS_OK && request_id != NULL)
        *request_id = h->tx[h->tx_count - 1].message_id;
    return err;
}

static const idevs_host_api host_api = {
    .on_input = api_on_input,
    .on_response = api_on_response,
    .on_timer = api_on_timer,
    .emit = api_emit,
    .request = api_request,
};

/* ---- requests in flight ---- */

static cmp_pending *pending_find(logic_host *h, size_t request, const idevs_msgid *id)
{
    for (size_t i = 0; i < h->pending_cap; i++) {
        cmp_pending *p = &h->pending[i];
        if (p->used && p->request == request && memcmp(p->id.b, id->b, IDEVS_UUID_LEN) == 0)
            return p;
    }
    return NULL;
}

static void pending_forget(cmp_pending *p)
{
    free(p->provenance);
    memset(p, 0, sizeof *p);
}

/* Remembers a committed request; the oldest is forgotten when the table is full (its response then arrives
 * with a zero request_id and only its own id as provenance). */
static void pending_remember(logic_host *h, const cmp_sealed *s)
{
    if (h->pending_cap == 0)
        return;
    cmp_pending *p = &h->pending[h->pending_next];
    h->pending_next = (h->pending_next + 1) % h->pending_cap;
    if (p->used)
        pending_forget(p);
    p->provenance = s->provenance_count > 0 ? malloc(s->provenance_count * sizeof(idevs_msgid)) : NULL;
    if (s->provenance_count > 0 && p->provenance == NULL)
        return; /* out of memory: not remembered, as if forgotten */
    if (s->provenance_count > 0)
        memcpy(p->provenance, s->provenance, s->provenance_count * sizeof(idevs_msgid));
    p->provenance_count = s->provenance_count;
    p->request = s->index;
    p->id = s->message_id;
    p->used = true;
}

/* ---- the life of the logic ---- */

void logic_host_init(logic_host *h, compartment *c)
{
    memset(h, 0, sizeof *h);
    h->c = c;
    h->lg.api = &host_api;
    h->lg.host = h;
}

idevs_err logic_host_load(logic_host *h, int fd, char *why, size_t why_len)
{
    char path[32];
    snprintf(path, sizeof path, LOGIC_PATH_FMT, fd);
    /* Runs the logic's constructors: under the first seccomp filter and Landlock. */
    h->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h->dl == NULL) {
        const char *e = dlerror();
        snprintf(why, why_len, "cannot load the logic: %s", e != NULL ? e : "dlopen failed");
        return IDEVS_ERR_CONFIG;
    }
    close(fd); /* mapped now; the descriptor is not needed any more */
    h->module = dlsym(h->dl, IDEVS_LOGIC_SYMBOL);
    if (h->module == NULL) {
        snprintf(why, why_len, "the logic does not export '%s'", IDEVS_LOGIC_SYMBOL);
        return IDEVS_ERR_CONFIG;
    }
    if (h->module->abi != IDEVS_LOGIC_ABI) {
        snprintf(why, why_len, "the logic was built for ABI %u, this compartment runs ABI %d", h->module->abi,
                 IDEVS_LOGIC_ABI);
        return IDEVS_ERR_CONFIG;
    }
    if (h->module->setup == NULL) {
        snprintf(why, why_len, "the logic has no setup()");
        return IDEVS_ERR_CONFIG;
    }
    return IDEVS_OK;
}

idevs_err logic_host_setup(logic_host *h, char *why, size_t why_len)
{
    const idevs_deployment *d = h->c->dep;
    h->input_handlers = calloc(d->input_count + 1, sizeof *h->input_handlers);
    h->response_handlers = calloc(d->request_count + 1, sizeof *h->response_handlers);
    h->pending_cap = d->request_count == 0 ? 0 : (d->queue_depth < CMP_PENDING_MAX ? d->queue_depth : CMP_PENDING_MAX);
    h->pending = calloc(h->pending_cap + 1, sizeof *h->pending);
    if (h->input_handlers == NULL || h->response_handlers == NULL || h->pending == NULL) {
        snprintf(why, why_len, "out of memory");
        return IDEVS_ERR_NOMEM;
    }
    h->phase = CMP_PHASE_SETUP;
    idevs_err err = h->module->setup(&h->lg, d->config_json, &h->state);
    h->phase = CMP_PHASE_IDLE;
    if (err != IDEVS_OK) {
        snprintf(why, why_len, "the logic's setup() failed: %s", idevs_strerror(err));
        return IDEVS_ERR_LOGIC;
    }
    if (h->timer != NULL)
        h->timer_next_ms = cmp_monotonic_ms() + h->timer_period_ms;
    return IDEVS_OK;
}

static void tx_begin(logic_host *h)
{
    idevs_envelope_stats st;
    idevs_envelope_get_stats(h->c->env, &st);
    h->epochs_before_tx = st.sending_epochs;
    h->tx_count = 0;
}

void logic_host_release(logic_host *h, bool committed)
{
    for (size_t i = 0; i < h->tx_count; i++) {
        if (committed && h->tx[i].is_request)
            pending_remember(h, &h->tx[i]);
        free(h->tx[i].envelope);
        h->tx[i].envelope = NULL;
    }
    if (!committed && h->tx_count > 0) {
        idevs_envelope_stats st;
        idevs_envelope_get_stats(h->c->env, &st);
        if (st.sending_epochs != h->epochs_before_tx)
            idevs_envelope_rotate(h->c->env);
    }
    h->tx_count = 0;
    idevs_cleanse(h->provenance, sizeof h->provenance);
    h->provenance_count = 0;
}

static idevs_err run(logic_host *h, idevs_handler handler, const idevs_message *msg)
{
    tx_begin(h);
    h->phase = CMP_PHASE_HANDLER;
    idevs_err err = handler(&h->lg, msg, h->state);
    h->phase = CMP_PHASE_IDLE;
    if (err != IDEVS_OK) {
        logic_host_release(h, false);
        return IDEVS_ERR_LOGIC;
    }
    return IDEVS_OK;
}

idevs_err logic_host_deliver(logic_host *h, bool response, size_t index, idevs_message *msg,
                             const idevs_opened *opened, const char *correlation, size_t correlation_len)
{
    idevs_handler handler = response ? h->response_handlers[index] : h->input_handlers[index];
    if (handler == NULL)
        return response ? IDEVS_ERR_UNKNOWN_REQUEST : IDEVS_ERR_UNKNOWN_INPUT;
    h->provenance[0] = opened->message_id;
    h->provenance_count = 1;
    memset(&msg->request_id, 0, sizeof msg->request_id);
    if (response) {
        /* The response names the request's id in its provenance, which is authenticated. MQTT correlation
         * data is not: the broker could swap it between two answers, so it never decides which request an
         * answer belongs to. */
        (void)correlation;
        (void)correlation_len;
        cmp_pending *p = NULL;
        for (size_t i = 0; p == NULL && i < opened->provenance_count; i++)
            p = pending_find(h, index, &opened->provenance[i]);
        if (p != NULL) {
            msg->request_id = p->id;
            size_t room = IDEVS_PROVENANCE_MAX - 1;
            size_t n = p->provenance_count < room ? p->provenance_count : room;
            memcpy(&h->provenance[1], p->provenance, n * sizeof(idevs_msgid));
            h->provenance_count += n;
            pending_forget(p);
        }
    }
    return run(h, handler, msg);
}

idevs_err logic_host_run_timer(logic_host *h)
{
    h->provenance_count = 0;
    tx_begin(h);
    h->phase = CMP_PHASE_HANDLER;
    idevs_err err = h->timer(&h->lg, h->state);
    h->phase = CMP_PHASE_IDLE;
    if (err != IDEVS_OK) {
        logic_host_release(h, false);
        return IDEVS_ERR_LOGIC;
    }
    return IDEVS_OK;
}

void logic_host_teardown(logic_host *h)
{
    if (h->module != NULL && h->module->teardown != NULL && h->phase == CMP_PHASE_IDLE)
        h->module->teardown(h->state);
    logic_host_release(h, false);
    for (size_t i = 0; i < h->pending_cap; i++)
        if (h->pending[i].used)
            pending_forget(&h->pending[i]);
    free(h->pending);
    free(h->input_handlers);
    free(h->response_handlers);
    h->pending = NULL;
    h->input_handlers = h->response_handlers = NULL;
    /* No dlclose: the logic's destructors would run, and its code may still be referenced by its own state. */
}
