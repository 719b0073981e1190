/* The compartment host program (idevs-compartment): shared state and the interfaces between its files.
 *
 * It runs as two processes (privilege separation, as OpenSSH separates its monitor from its sandboxed child):
 *   - the key holder: the keys, the envelope context, the replay state and the channel to the launcher. It
 *     opens deliveries, hands their plaintext to the logic process, and seals what the logic emits, each only
 *     to the receiver the descriptor declares for that output, with provenance it computes itself;
 *   - the logic process: the integration logic, under a tighter sandbox, with no key and no channel: its only
 *     descriptor is its link to the key holder, over which it can only answer events with emits, requests and
 *     a result. It is forked first thing, before the key holder has anything secret.
 * Files:
 *   main.c              start-up: the fork, then each process's life in order
 *   handshake.c         key holder: Init (descriptor, operator CA, service certificates), CertifyRequest, Certified
 *   keys.c              key holder: the sealed-keys blob, the identity across restarts
 *   sandbox.c           both: process hardening, Landlock, the seccomp filters, the SIGSYS report
 *   seccomp_allowlist.c both: every system call each process may make, and why
 *   logic_link.c        key holder: the link to the logic process; sealing, transactions, provenance, requests
 *   logic_runner.c      logic process: loading the logic, its handler registry, the host API, its event loop
 *   serve.c             key holder: the event loop: Deliver, timers, Shutdown
 *   join.c              key holder: joining (the process's keys from another instance) and granting them
 * docs/COMPARTMENT.md describes the life of a compartment and the sandbox. */
#ifndef IDEVS_COMPARTMENT_H
#define IDEVS_COMPARTMENT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <seccomp.h>

#include "idevs_cert.h"
#include "idevs_channel.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"
#include "idevs_handled.h"
#include "idevs_identity.h"
#include "idevs_logic.h"
#include "idevs_logic.h"
#include "idevs_replay.h"

/* Descriptors. The launcher starts the host program with the channel on 3 and the logic file on 4. After the
 * fork, each process keeps two: the key holder the channel (3) and its link to the logic process (4, in place of
 * the logic file); the logic process its link to the key holder (3, in place of the channel) and the logic
 * file (4). So in either process descriptor 3 is the one peer it reports to. */
#define CMP_FD_CHANNEL 3
#define CMP_FD_LOGIC 4
#define CMP_FD_LOGIC_LINK 4

#define CMP_HANDSHAKE_TIMEOUT_MS 10000 /* for Init and for Certified */
#define CMP_FATAL_FLUSH_MS 1000        /* for the last frame before exiting */
#define CMP_TX_MAX 256                 /* envelopes one handler call may emit and request */
#define CMP_TX_BYTES_MAX (16u * 1024u * 1024u) /* payload bytes one handler call may emit and request */
#define CMP_EVENTS_MAX 64              /* events sent to the logic process ahead of their answers, at most */

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
    uint8_t *kept;     /* to a service with receipts: kept.c's blob for the launcher; NULL otherwise */
    size_t kept_len;
    idevs_msgid message_id;
    /* for requests: what caused it, remembered for the response's provenance */
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
    uint8_t *correlation; /* its id and sealed state (request_state.c) */
    size_t correlation_len; /* IDEVS_REQUEST_CORRELATION_LEN */
    uint8_t *state;       /* the logic's state for the answer (cleansed when freed) */
    size_t state_len;
} cmp_sealed;

/* Former runs' requests answered in this one, remembered (logic_link.c) so that each is matched once; a former
 * run had at most limits.max_outstanding_requests of them outstanding (4,096 by default). */
#define CMP_FORMER_MAX 4096

/* A request waiting for its response. */
typedef struct cmp_pending {
    bool used;
    size_t request; /* index into the deployment's requests */
    idevs_msgid id;
    idevs_msgid *provenance; /* the ids that caused the request */
    size_t provenance_count;
    uint8_t *state; /* the logic's state for the answer (cleansed when forgotten) */
    size_t state_len;
} cmp_pending;

typedef struct compartment compartment;

/* An event the logic process has been sent: what it is answered with must carry seq; its outputs name provenance. */
typedef struct cmp_event {
    uint64_t seq;
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX];
    size_t provenance_count;
    idevs_uuid sender; /* of the message that caused it (provenance[0]); none for a timer */
} cmp_event;

/* The key holder's side of the link to the logic process (logic_link.c). */
typedef struct logic_link {
    compartment *c;
    idevs_channel ch;      /* to the logic process */
    uint32_t abi;
    char logic_name[65];
    bool *has_input;       /* per declared input: the logic registered a handler */
    bool *has_response;    /* per declared request */
    uint64_t seq;          /* of the last event sent */
    uint32_t timer_period_ms; /* 0: no timer (or not this instance's turn: TimerRole) */
    uint32_t timer_asked_ms;  /* what the logic asked for in LogicReady; 0: none */
    int64_t timer_next_ms;    /* CLOCK_MONOTONIC */
    /* events sent to the logic process and not answered yet, oldest first: a ring */
    cmp_event queued[CMP_EVENTS_MAX];
    size_t queued_first, queued_count;
    const cmp_event *current; /* the one whose answers are being read */
    cmp_sealed tx[CMP_TX_MAX];
    size_t tx_count;
    size_t tx_requests;        /* of tx_count, requests: each needs room in the pending table */
    size_t tx_bytes;
    bool tx_over;              /* the logic went past CMP_TX_MAX or CMP_TX_BYTES_MAX: nothing of it leaves */
    uint64_t epochs_before_tx; /* to tell whether an aborted transaction used up the first message of an epoch */
    uint32_t refusal;          /* the event collected last: 0, or 1 + the declared refusal code it was refused with */
    /* requests awaiting their responses: limits.max_outstanding_requests slots (none without requests), never
     * more; inputs are held (serve.c) while it is full, and a request with no room left fails (queue_full) */
    cmp_pending *pending;
    size_t pending_cap, pending_used, pending_next;
    /* former runs' requests this run matched by their token (request_state.c), so that each is matched once:
     * a ring of CMP_FORMER_MAX ids, the oldest forgotten first */
    idevs_msgid former[CMP_FORMER_MAX];
    size_t former_count, former_next;
} logic_link;

struct compartment {
    idevs_channel ch;
    idevs_deployment *dep;
    uint8_t *descriptor; /* the descriptor's bytes from Init, for the logic process */
    size_t descriptor_len;
    uint8_t measurement[IDEVS_SHA256_LEN];
    uint32_t instance; /* Init.instance: the envelope sender instance of what it seals (docs/PROTOCOL.md 5a) */
    bool timer_first;  /* runs the logic's timer from its start (until a TimerRole says otherwise) */
    idevs_identity *self;
    X509 *operator_ca;
    idevs_cert_policy *policy; /* towards services: the operator CA, no evidence */
    idevs_envelope_ctx *env;
    /* service chains from Init, per deployment service, until they are registered as peers */
    uint8_t *(*service_der)[IDEVS_CHAIN_MAX];
    size_t (*service_der_len)[IDEVS_CHAIN_MAX];
    size_t *service_chain_count;
    logic_link link;
    bool inputs_held; /* Held sent, Resumed not yet: every input is held (serve.c) */
    /* per deployment service: its latest two message-id streams, from Init (the launcher's record) and what
     * this compartment handled since (serve.c) */
    idevs_handled *handled;
    uint8_t keep_key[32]; /* kept.c: derived from the process's keys (keys_derive) once it holds them */
    uint8_t request_key[32]; /* request_state.c: likewise */
    uint8_t output_id_key[32]; /* logic_link.c: the ids of outputs and requests (keys_output_id); likewise */
    uint8_t run[16];         /* request_state.c: random, this run's: tells a former run's requests */
    idevs_backend backend;   /* of its own certificate's evidence: another instance must have the same (join.c) */
    bool joining;            /* Init.join and no sealed keys opened: certified for temporary keys, waiting (join.c) */
    uint8_t join_sealing_key[32]; /* while joining: Init.sealing_key, to seal the keys granted; cleansed after */
};

/* main.c: a Fatal frame on ch (sent and flushed within CMP_FATAL_FLUSH_MS), for either process. */
void cmp_report_fatal(idevs_channel *ch, idevs_err status, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));
/* main.c: the key holder's Fatal frame, then exit. Never returns. */
void cmp_fatal(compartment *c, idevs_err status, const char *fmt, ...) __attribute__((noreturn, format(printf, 3, 4)));
int64_t cmp_monotonic_ms(void);

/* handshake.c */
/* Init, the keys, CertifyRequest, Certified; a joiner (c->joining) returns certified for temporary keys only. */
void handshake_run(compartment *c);
/* A joiner, in its sandbox: waits for the process's keys (join_wait), seals them, and is certified for them. */
void handshake_join(compartment *c);
void handshake_clear(compartment *c);
/* Checks that cert certifies exactly this compartment (keys, program, measurement, descriptor) and installs it;
 * notes its backend. Fatal otherwise. */
void handshake_install_chain(compartment *c, const Idevs__Bridge__V1__Certified *cert);
/* A renewed certificate for our keys while serving (Certified again): checked as at the start, then ours. */
void handshake_renewed(compartment *c, const Idevs__Bridge__V1__Certified *cert);

/* keys.c: the sealed-keys blob (docs/COMPARTMENT.md). */
#define KEYS_SEALED_VERSION 1
#define KEYS_SEALED_LEN (1 + 12 + 64 + 16)
/* Restores the identity from blob when it opens under sealing_key for this program and measurement, else
 * generates fresh keys. *restored tells which. */
/* AES-256-GCM, the one AEAD of the compartment's own secrets (the sealed keys, kept outputs). */
#define KEYS_GCM_NONCE_LEN 12
#define KEYS_GCM_TAG_LEN 16
idevs_err keys_gcm(bool encrypt, const uint8_t key[32], const uint8_t nonce[KEYS_GCM_NONCE_LEN], const uint8_t *aad,
                   size_t aad_len, const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[KEYS_GCM_TAG_LEN]);
/* kept.c: outputs and requests to services with receipts, sealed to the compartment itself so that the launcher
 * can keep them and have them sealed anew after a restart (a new certificate) without seeing them. */
void kept_init(compartment *c);
idevs_err kept_seal(compartment *c, bool is_request, size_t index, const idevs_msgid *id, const idevs_msgid *prov,
                    size_t prov_count, const uint8_t *payload, size_t len, const uint8_t *correlation,
                    size_t correlation_len, uint8_t **out, size_t *out_len);
/* Seals the kept output anew (same id, same provenance, same receiver) and queues its Publish (delivery 0). */
idevs_err kept_reseal(compartment *c, const uint8_t *kept, size_t len);

/* HKDF-SHA256(ikm = Ed25519 seed || X25519 private of self, salt = "", info = label || program): a key of the
 * process's own, which every instance that holds the process's keys derives alike, after a restart and on
 * another host (docs/SCALING.md). The one owner of that rule. */
idevs_err keys_derive(const idevs_identity *self, const char *label, const idevs_uuid *program, uint8_t out[32]);
/* The keys of kept outputs, request state and output ids from c->self (keys_derive); a failure is fatal. */
void keys_derive_own(compartment *c);
/* The message id of the index-th envelope an event's handler sealed, the event being the message `cause` that
 * `sender` sealed: HKDF-SHA256(ikm = key, salt = "", info = sender || cause || u32 index), 16 bytes. An input run
 * again (its compartment died before the launcher recorded it) yields the same ids, so its receivers handle its
 * outputs once. The sender is in it so that a service that copies another's message id (ids travel in clear) into
 * its own message makes other ids, and cannot have that service's outputs taken for copies of its own. */
idevs_err keys_output_id(const uint8_t key[32], const idevs_uuid *sender, const idevs_msgid *cause, uint32_t index,
                         idevs_msgid *out);

/* request_state.c: what a request's answer needs, sealed by the compartment to itself into the request's
 * correlation data (IDEVS_REQUEST_CORRELATION_LEN bytes: its message id, then the token), so that an answer
 * reaching a restarted compartment still finds its request. */
typedef struct request_state {
    idevs_msgid id; /* the request's message id */
    idevs_msgid provenance[IDEVS_PROVENANCE_MAX - 1];
    size_t provenance_count;
    uint8_t state[IDEVS_REQUEST_STATE_MAX];
    size_t state_len;
} request_state;
void request_state_init(compartment *c);
/* Writes the correlation data of the sealed request s (its message id, provenance and state) into out:
 * IDEVS_REQUEST_CORRELATION_LEN bytes, whatever its provenance and state. */
idevs_err request_state_seal(compartment *c, size_t request, const cmp_sealed *s, uint8_t *out);
/* An answer's correlation data, if it is a token this program sealed, in an earlier run of the compartment, for
 * a request of index `request` whose id the answer's (authenticated) provenance names: true, with *out filled
 * (the caller cleanses it). Anything else, false: the answer matches no request. */
bool request_state_open(compartment *c, size_t request, const uint8_t *correlation, size_t correlation_len,
                        const idevs_msgid *answer_provenance, size_t answer_provenance_count, request_state *out);

idevs_err keys_restore_or_generate(const uint8_t sealing_key[32], const idevs_uuid *program, const char *name,
                                   const uint8_t measurement[IDEVS_SHA256_LEN], const uint8_t *blob, size_t blob_len,
                                   idevs_identity **out, bool *restored);
/* Seals the identity's private keys with a fresh nonce. */
idevs_err keys_seal(const uint8_t sealing_key[32], const idevs_uuid *program,
                    const uint8_t measurement[IDEVS_SHA256_LEN], const idevs_identity *id,
                    uint8_t blob[KEYS_SEALED_LEN]);

/* join.c (docs/SCALING.md, "Several brokers") */
#define JOIN_FRESH_S 600 /* a joiner's evidence must have been issued at most this long ago */
/* Joiner: waits for a JoinOffer whose keys it takes (refusing the others with a JoinAnswer), renewed
 * certificates of its temporary keys and Shutdown; returns with c->self the process's keys. */
void join_wait(compartment *c);
/* Grantor: checks a joiner's request and answers with a JoinAnswer (a JoinGrant, or why not). */
void join_check(compartment *c, const Idevs__Bridge__V1__JoinCheck *jc);

/* sandbox.c */
/* No new privileges, not dumpable, no core files, resource limits (no new processes), every descriptor but 0-4
 * closed. Each process, after the fork. */
idevs_err sandbox_harden_process(char *why, size_t why_len);
/* Loads everything OpenSSL will need inside the sandbox, so that it never opens a file or module there. */
idevs_err sandbox_warm_up_crypto(void);
/* Key holder: the SIGSYS reporter, Landlock (no file at all) and its one seccomp filter. */
idevs_err sandbox_enter_key_holder(char *why, size_t why_len);
/* Logic process: the SIGSYS reporter, Landlock (reading and executing only the logic file), and the first
 * seccomp filter, which still lets the dynamic loader map the logic. */
idevs_err sandbox_enter_loading(int logic_fd, char *why, size_t why_len);
/* Logic process: the second seccomp filter: no more opening files or mapping executable memory. */
idevs_err sandbox_enter_serving(char *why, size_t why_len);
/* The channel the SIGSYS report goes to (descriptor 3 of either process), after what its send queue holds. */
void sandbox_set_channel(const idevs_channel *ch);

/* seccomp_allowlist.c: which filters a row belongs to. The logic process's two filters are stacked (both apply
 * once the second is loaded), so every SERVING row of the logic is also a LOADING row. */
#define SANDBOX_KEY_HOLDER 0x1u    /* the key holder's one filter */
#define SANDBOX_LOGIC_LOADING 0x2u /* the logic process, while the logic is loaded */
#define SANDBOX_LOGIC_SERVING 0x4u /* the logic process, from setup() on */
#define SANDBOX_LOGIC (SANDBOX_LOGIC_LOADING | SANDBOX_LOGIC_SERVING)
#define SANDBOX_ALL (SANDBOX_KEY_HOLDER | SANDBOX_LOGIC)
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

/* logic_runner.c: the logic process's whole life, from right after the fork. Never returns. */
void logic_runner_main(void) __attribute__((noreturn));

/* logic_link.c */
void logic_link_init(logic_link *k, compartment *c);
/* Sends the descriptor to the logic process and waits for its LogicReady (the logic loaded and set up). */
void logic_link_setup(logic_link *k);
/* Events are pipelined: several are sent before the first is answered, and answered in order.
 * logic_link_queue() sends (without flushing) one opened delivery to the logic process: IDEVS_OK, or, when the
 * logic has no handler for it, the status (nothing was sent). At most CMP_EVENTS_MAX wait (logic_link_full).
 * logic_link_collect() reads the answers to the oldest event sent: on IDEVS_OK k->tx holds its sealed envelopes
 * to publish, then logic_link_release(k, true); on failure nothing is kept. */
idevs_err logic_link_queue(logic_link *k, bool response, size_t index, const idevs_opened *opened,
                           const uint8_t *correlation, size_t correlation_len);
bool logic_link_full(const logic_link *k);
idevs_err logic_link_collect(logic_link *k);
/* A timer run: queued and collected at once (nothing else may be waiting). */
idevs_err logic_link_run_timer(logic_link *k);
/* Whether this instance runs the logic's timer (TimerRole; instance 0 does from its start), if it asked for one. */
void logic_link_timer_role(logic_link *k, bool run);
/* Whether an input may run now, with `ahead` events queued before it each assumed to make at most one request:
 * room in the pending table (always, when the logic declares no requests). */
bool logic_link_room_for_input(const logic_link *k, size_t ahead);
/* Commits the transaction (remembers its requests) or drops it; the caller has published k->tx. */
void logic_link_release(logic_link *k, bool committed);
/* The link became readable (or closed) while no event runs: ends the compartment, saying why. */
void logic_link_idle_input(logic_link *k) __attribute__((noreturn));
/* Asks the logic process to run its teardown and end. */
void logic_link_shutdown(logic_link *k);

/* serve.c: returns the exit status. */
int serve_run(compartment *c);

#endif
