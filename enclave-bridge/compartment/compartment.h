/* The compartment host program (idevs-compartment): shared state and the interfaces between its files.
 *   main.c              start-up order: hardening, handshake, sandbox, logic, serve
 *   handshake.c         Init (descriptor, operator CA, service certificates), CertifyRequest, Certified
 *   keys.c              the sealed-keys blob: the identity across restarts
 *   sandbox.c           process hardening, Landlock, the two seccomp filters, the SIGSYS report
 *   seccomp_allowlist.c every system call the sandbox allows, and why
 *   logic_host.c        loading the logic, its handler registry, the host API, transactions, provenance
 *   serve.c             the event loop: Deliver, timers, Shutdown
 * docs/COMPARTMENT.md describes the life of a compartment and the sandbox. */
#ifndef IDEVS_COMPARTMENT_H
#define IDEVS_COMPARTMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <seccomp.h>

#include "idevs_cert.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"
#include "idevs_logic.h"

#define CMP_FD_CHANNEL 3
#define CMP_FD_LOGIC 4

#define CMP_HANDSHAKE_TIMEOUT_MS 10000 /* for Init and for Certified */
#define CMP_FATAL_FLUSH_MS 1000        /* for the last frame before exiting */
#define CMP_TX_MAX 256                 /* envelopes one handler call may emit and request */
#define CMP_PENDING_MAX 4096           /* requests remembered for their responses, at most */

/* Exit statuses, for the launcher's log. */
#define CMP_EXIT_OK 0
#define CMP_EXIT_FATAL 1     /* a Fatal frame was sent (or could not be) */
#define CMP_EXIT_CLOSED 2    /* the launcher closed the channel */
#define CMP_EXIT_USAGE 64    /* started without the expected descriptors */
#define CMP_EXIT_SANDBOX 159 /* a system call outside the allowlist (128 + SIGSYS) */

/* A sealed envelope waiting for its handler to return. */
typedef struct cmp_sealed {
    bool is_request;
    size_t index; /* into the deployment's outputs or requests */
    uint8_t *envelope;
    size_t envelope_len;
    idevs_msgid message_id;
    /* for requests: what caused it, remembered for the response's provenance */
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
} cmp_sealed;

/* A request waiting for its response. */
typedef struct cmp_pending {
    bool used;
    size_t request; /* index into the deployment's requests */
    idevs_msgid id;
    idevs_msgid *provenance; /* the ids that caused the request */
    size_t provenance_count;
} cmp_pending;

typedef enum cmp_phase { CMP_PHASE_IDLE, CMP_PHASE_SETUP, CMP_PHASE_HANDLER } cmp_phase;

typedef struct compartment compartment;

typedef struct logic_host {
    idevs_logic lg; /* what the logic holds; lg.host points back here */
    compartment *c;
    void *dl;
    const idevs_logic_module *module;
    void *state;
    cmp_phase phase;
    idevs_handler *input_handlers;    /* per declared input */
    idevs_handler *response_handlers; /* per declared request */
    idevs_timer_handler timer;
    uint32_t timer_period_ms;
    int64_t timer_next_ms; /* CLOCK_MONOTONIC */
    /* the current event */
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
    cmp_sealed tx[CMP_TX_MAX];
    size_t tx_count;
    uint64_t epochs_before_tx; /* to tell whether an aborted transaction used up the first message of an epoch */
    /* requests in flight: a ring, the oldest forgotten first */
    cmp_pending *pending;
    size_t pending_cap, pending_next;
} logic_host;

struct compartment {
    idevs_channel ch;
    idevs_deployment *dep;
    uint8_t measurement[IDEVS_SHA256_LEN];
    idevs_identity *self;
    X509 *operator_ca;
    idevs_cert_policy *policy; /* towards services: the operator CA, no evidence */
    idevs_envelope_ctx *env;
    /* service chains from Init, per deployment service, until they are registered as peers */
    uint8_t *(*service_der)[IDEVS_CHAIN_MAX];
    size_t (*service_der_len)[IDEVS_CHAIN_MAX];
    size_t *service_chain_count;
    logic_host host;
};

/* main.c: a Fatal frame, then exit. Never returns. */
void cmp_fatal(compartment *c, idevs_err status, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
int64_t cmp_monotonic_ms(void);

/* handshake.c */
void handshake_run(compartment *c);
void handshake_clear(compartment *c);

/* keys.c: the sealed-keys blob (docs/COMPARTMENT.md). */
#define KEYS_SEALED_VERSION 1
#define KEYS_SEALED_LEN (1 + 12 + 64 + 16)
/* Restores the identity from blob when it opens under sealing_key for this program and measurement, else
 * generates fresh keys. *restored tells which. */
idevs_err keys_restore_or_generate(const uint8_t sealing_key[32], const idevs_uuid *program, const char *name,
                                   const uint8_t measurement[IDEVS_SHA256_LEN], const uint8_t *blob, size_t blob_len,
                                   idevs_identity **out, bool *restored);
/* Seals the identity's private keys with a fresh nonce. */
idevs_err keys_seal(const uint8_t sealing_key[32], const idevs_uuid *program,
                    const uint8_t measurement[IDEVS_SHA256_LEN], const idevs_identity *id,
                    uint8_t blob[KEYS_SEALED_LEN]);

/* sandbox.c */
/* No new privileges, not dumpable, no core files, resource limits, every descriptor but 0-4 closed. */
idevs_err sandbox_harden_process(char *why, size_t why_len);
/* Loads everything OpenSSL will need inside the sandbox, so that it never opens a file or module there. */
idevs_err sandbox_warm_up_crypto(void);
/* The SIGSYS reporter, Landlock (reading and executing only the logic file), and the first seccomp filter,
 * which still lets the dynamic loader map the logic. */
idevs_err sandbox_enter_loading(int logic_fd, char *why, size_t why_len);
/* The second seccomp filter: no more opening files or mapping executable memory. */
idevs_err sandbox_enter_serving(char *why, size_t why_len);
/* The channel the SIGSYS report goes to, after what its send queue still holds. */
void sandbox_set_channel(const idevs_channel *ch);

/* seccomp_allowlist.c */
#define SANDBOX_STAGE_LOADING 0x1u /* the first filter: while the logic is loaded */
#define SANDBOX_STAGE_SERVING 0x2u /* the second filter: from setup() on */
#define SANDBOX_STAGE_BOTH (SANDBOX_STAGE_LOADING | SANDBOX_STAGE_SERVING)
/* An argument value sandbox.c replaces with this process's id when it builds the filters. */
#define SANDBOX_SELF 0x5e1f5e1f5e1fULL
typedef struct sandbox_rule {
    const char *name; /* the system call, resolved with seccomp_syscall_resolve_name */
    unsigned stages;
    unsigned arg_count;
    struct scmp_arg_cmp args[2];
} sandbox_rule;
extern const sandbox_rule sandbox_allowlist[];
extern const size_t sandbox_allowlist_count;

/* logic_host.c */
void logic_host_init(logic_host *h, compartment *c);
idevs_err logic_host_load(logic_host *h, int fd, char *why, size_t why_len);
idevs_err logic_host_setup(logic_host *h, char *why, size_t why_len);
/* Runs the handler of a delivery (input or response) with msg; on success h->tx holds the sealed envelopes to
 * publish, then logic_host_release(h, true); on failure nothing is kept. */
idevs_err logic_host_deliver(logic_host *h, bool response, size_t index, idevs_message *msg,
                             const idevs_opened *opened, const char *correlation, size_t correlation_len);
idevs_err logic_host_run_timer(logic_host *h);
/* Commits the transaction: remembers its requests; the caller has published h->tx. */
void logic_host_release(logic_host *h, bool committed);
void logic_host_teardown(logic_host *h);

/* serve.c: returns the exit status. */
int serve_run(compartment *c);

#endif
