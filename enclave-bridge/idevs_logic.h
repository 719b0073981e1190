/* The integration-logic API: what a developer writes to run an integration process in an idevs compartment.
 *
 * A logic is a shared object that exports one symbol, `idevs_logic_entry`, of type idevs_logic_module. (Not
 * `idevs_logic`: in C that name is already the handle's typedef.) The compartment
 * loads it, calls setup() once with the configuration from the deployment descriptor, and then calls the
 * handlers setup() registered: one per declared input, one per declared request's response, and an optional
 * timer. Handlers get opened payloads; they answer by emitting payloads to declared outputs and by sending
 * requests to services. The compartment seals every emitted payload to the receiver the deployment declares
 * for that output, and records which input caused it (provenance).
 *
 * The logic never sees a key, a socket or a file: it runs inside the sandbox (no filesystem, no network; any
 * system call outside the allowlist kills the compartment). Its state lives in memory between events, and is
 * gone when the compartment restarts; what a request's answer needs travels with the request instead
 * (idevs_request_with_state), sealed to the compartment itself.
 * Emissions are transactional: what a handler emits leaves only if the handler returns IDEVS_OK. A handler that
 * refuses its event may name why with idevs_refuse(), among the codes the descriptor declares.
 *
 *     static idevs_err on_sale(idevs_logic *lg, const idevs_message *sale, void *state) {
 *         ...
 *         return idevs_emit(lg, "booking", booking, booking_len);
 *     }
 *     static idevs_err setup(idevs_logic *lg, const char *config_json, void **state) {
 *         return idevs_on_input(lg, "sales", on_sale);
 *     }
 *     const idevs_logic_module idevs_logic_entry = { IDEVS_LOGIC_ABI, "rewards", setup, NULL };
 */
#ifndef IDEVS_LOGIC_H
#define IDEVS_LOGIC_H

#include <stddef.h>
#include <stdint.h>

#include "idevs_error.h"
#include "idevs_uuid.h"

#define IDEVS_LOGIC_ABI 1
#define IDEVS_LOGIC_SYMBOL "idevs_logic_entry"
#define IDEVS_REQUEST_STATE_MAX 256 /* bytes a request may carry for its answer (idevs_request_with_state) */

typedef struct idevs_logic idevs_logic;

/* One opened message, valid for the duration of the handler call. */
typedef struct idevs_message {
    const char *name;           /* the declared input, or the request a response answers */
    const uint8_t *payload;     /* followed by a NUL not counted in payload_len */
    size_t payload_len;
    idevs_uuid sender;          /* the service that sealed it */
    const char *sender_name;    /* its name in the deployment descriptor */
    idevs_msgid message_id;
    idevs_msgid request_id;     /* for responses: the id idevs_request() gave the request; zero otherwise */
    /* Added after the first release (new fields go at the end). For a response whose request_id is set: the state
     * idevs_request_with_state() gave the request (NULL and 0 when it gave none), even when the compartment
     * restarted in between; NULL and 0 otherwise. */
    const uint8_t *request_state;
    size_t request_state_len;
} idevs_message;

typedef idevs_err (*idevs_handler)(idevs_logic *lg, const idevs_message *msg, void *state);
typedef idevs_err (*idevs_timer_handler)(idevs_logic *lg, void *state);

/* The calls the compartment offers the logic, reached through the inline functions below. */
typedef struct idevs_host_api {
    idevs_err (*on_input)(idevs_logic *lg, const char *input, idevs_handler handler);
    idevs_err (*on_response)(idevs_logic *lg, const char *request, idevs_handler handler);
    idevs_err (*on_timer)(idevs_logic *lg, uint32_t period_ms, idevs_timer_handler handler);
    idevs_err (*emit)(idevs_logic *lg, const char *output, const void *payload, size_t len);
    idevs_err (*request)(idevs_logic *lg, const char *request, const void *payload, size_t len,
                         idevs_msgid *request_id);
    /* Added after the first release: new calls go at the end, so that logics built against an older header
     * keep working. */
    idevs_err (*refuse)(idevs_logic *lg, const char *code);
    idevs_err (*request_with_state)(idevs_logic *lg, const char *request, const void *payload, size_t len,
                                    const void *state, size_t state_len, idevs_msgid *request_id);
} idevs_host_api;

struct idevs_logic {
    const idevs_host_api *api;
    void *host; /* the compartment's own; not for the logic */
};

/* What the shared object exports under IDEVS_LOGIC_SYMBOL. */
typedef struct idevs_logic_module {
    uint32_t abi;      /* IDEVS_LOGIC_ABI */
    const char *name;  /* for logs and errors */
    /* Called once, inside the sandbox, with the descriptor's "config" object as JSON text ("{}" when absent).
     * Registers the handlers and may set *state, which every handler then receives. Anything but IDEVS_OK
     * stops the compartment from starting. */
    idevs_err (*setup)(idevs_logic *lg, const char *config_json, void **state);
    /* Optional: called when the compartment stops normally. */
    void (*teardown)(void *state);
} idevs_logic_module;

/* Registers the handler for a declared input; only during setup(). */
static inline idevs_err idevs_on_input(idevs_logic *lg, const char *input, idevs_handler handler)
{
    return lg->api->on_input(lg, input, handler);
}

/* Registers the handler for the responses to a declared request; only during setup(). */
static inline idevs_err idevs_on_response(idevs_logic *lg, const char *request, idevs_handler handler)
{
    return lg->api->on_response(lg, request, handler);
}

/* Calls handler every period_ms milliseconds (at least 10); only during setup(). When the process runs as
 * several instances (process.instances), one of them calls it at a time (instance 0, or another while instance 0
 * restarts): the timer runs once, not once per instance. */
static inline idevs_err idevs_on_timer(idevs_logic *lg, uint32_t period_ms, idevs_timer_handler handler)
{
    return lg->api->on_timer(lg, period_ms, handler);
}

/* Emits payload to a declared output: sealed to that output's receiver, with the current message as
 * provenance. Only from a handler. */
static inline idevs_err idevs_emit(idevs_logic *lg, const char *output, const void *payload, size_t len)
{
    return lg->api->emit(lg, output, payload, len);
}

/* Sends a request to the service a declared request names (the "read" action): sealed to it, published with
 * an MQTT 5 response topic and correlation data; the answer arrives later at the on_response handler with
 * msg->request_id equal to *request_id. Only from a handler (else IDEVS_ERR_NOT_NOW), and only for a request
 * whose response handler setup() registered: otherwise IDEVS_ERR_UNKNOWN_REQUEST and nothing is sent (its
 * answer could reach no handler, and the request would hold one of limits.max_outstanding_requests for
 * good). IDEVS_ERR_UNKNOWN_REQUEST too for a name the descriptor does not declare. */
static inline idevs_err idevs_request(idevs_logic *lg, const char *request, const void *payload, size_t len,
                                      idevs_msgid *request_id)
{
    return lg->api->request(lg, request, payload, len, request_id);
}

/* idevs_request() with up to IDEVS_REQUEST_STATE_MAX bytes of state that come back with the answer
 * (msg->request_state), so the response handler needs nothing the logic kept in memory: the answer still finds
 * it after the compartment restarted (killed, crashed, or the broker restarted). The compartment seals the state
 * to itself, under a key from its sealing key, into the request's MQTT correlation data, padded to one size for
 * every request (IDEVS_REQUEST_CORRELATION_LEN): the service and the broker see an opaque token that tells nothing
 * of it, and only this compartment's measurement opens it. IDEVS_ERR_TOO_LARGE, and nothing is
 * sent, past IDEVS_REQUEST_STATE_MAX. The state is personal data like any payload: the compartment cleanses its
 * copies. */
static inline idevs_err idevs_request_with_state(idevs_logic *lg, const char *request, const void *payload,
                                                 size_t len, const void *state, size_t state_len,
                                                 idevs_msgid *request_id)
{
    return lg->api->request_with_state(lg, request, payload, len, state, state_len, request_id);
}

/* Refuses the current event with a short reason code that the deployment descriptor declares ("refusals"):
 * the handler returns what this returns,
 *
 *     return idevs_refuse(lg, "not_a_sale");
 *
 * IDEVS_ERR_LOGIC, with the code recorded: nothing the handler emitted leaves, and the broker counts the
 * refusal under that code ($SYS/broker/idevs/<process>/refused/<code>) and logs it with the topic and the
 * client, never the payload. IDEVS_ERR_INVALID_ARG, recording nothing, for a code the descriptor does not
 * declare (a logic cannot say anything else: the codes are a closed list, measured with the descriptor);
 * IDEVS_ERR_NOT_NOW outside a handler. The code counts only if the handler then returns IDEVS_ERR_LOGIC; a
 * later call replaces an earlier one. */
static inline idevs_err idevs_refuse(idevs_logic *lg, const char *code)
{
    return lg->api->refuse(lg, code);
}

#endif
