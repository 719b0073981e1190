/* The launcher: what the plugin calls to run one compartment. It measures the host program, the logic and the
 * deployment descriptor, starts the compartment from exactly what it measured, certifies the compartment's
 * keys with the attestation authority, and then supervises it: deliveries in, publications out, restarts with
 * exponential backoff, and a kill for a compartment that stops answering.
 *
 * Made for a single-threaded caller (the broker's thread): nothing here starts a thread or blocks longer than
 * the timeouts the caller passes, except idevs_launcher_start() and idevs_launcher_stop(), which block up to
 * their configured timeouts. A launcher is not thread-safe. It installs no signal handler: it notices a
 * compartment's exit through a pidfd (or waitpid(WNOHANG)) and reaps only the pid it started.
 *
 * Deliveries are at-least-once towards the compartment and exactly-once towards the caller: every accepted
 * delivery gets exactly one on_done, and the publications it caused are handed over together, just before
 * that on_done. When a compartment dies, its unfinished deliveries are sent again to the next one, and the
 * publications of the interrupted attempt are discarded. A delivery that is being processed each time its
 * compartment dies or hangs is given up after max_attempts, with on_done(status != IDEVS_OK).
 *
 * Replay protection outlives compartments and brokers: the launcher keeps a replay record per declared sender
 * (its two latest key epochs, each a window over sequence numbers), advanced only when a compartment reports a
 * delivery done after opening it, and kept in state_dir/<program uuid>.replay. An envelope it records as done is
 * refused (IDEVS_ERR_REPLAY) by idevs_launcher_deliver(), or, when it was queued twice, ended with that status
 * instead of being sent again. docs/COMPARTMENT.md, "Replay across restarts". */
#ifndef IDEVS_LAUNCHER_H
#define IDEVS_LAUNCHER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/types.h>

#include "idevs_error.h"
#include "idevs_uuid.h"

typedef struct idevs_launcher idevs_launcher;
typedef struct idevs_identity idevs_identity; /* certs/idevs_identity.h; opaque here */

#define IDEVS_LAUNCHER_DIGEST_LEN 32 /* SHA-256: measurements and descriptor digests */

typedef enum idevs_launcher_event {
    IDEVS_LAUNCHER_EVENT_CERTIFIED = 1, /* a compartment is certified and ready */
    IDEVS_LAUNCHER_EVENT_EXITED,        /* a compartment ended (message: how, and why if it said) */
    IDEVS_LAUNCHER_EVENT_KILLED,        /* the launcher killed a compartment (timeout, protocol violation) */
    IDEVS_LAUNCHER_EVENT_RESTARTING,    /* a restart is scheduled */
    IDEVS_LAUNCHER_EVENT_START_FAILED,  /* a start failed before the compartment was ready */
    IDEVS_LAUNCHER_EVENT_GIVEN_UP,      /* a delivery was given up after max_attempts */
    IDEVS_LAUNCHER_EVENT_NOTICE,        /* anything else the operator should know */
    IDEVS_LAUNCHER_EVENT_WARNING,       /* something the operator should act on (e.g. the replay record was lost) */
    IDEVS_LAUNCHER_EVENT_RENEWED,       /* the running compartment's certificate was renewed: publish the new chain */
} idevs_launcher_event;

/* For the operator's log. message names the compartment and never holds keys or payloads. */
typedef void (*idevs_launcher_event_fn)(void *arg, idevs_launcher_event event, const char *message);

typedef struct idevs_launcher_config {
    const char *descriptor;   /* deployment descriptor file; read once */
    const char *host_program; /* the idevs-compartment executable */
    const char *logic;        /* NULL: the descriptor's process.logic (relative to the descriptor's directory) */
    const char *state_dir;    /* sealing.key, <program uuid>.sealed and .replay live here; must exist */
    bool state_dir_per_process; /* state lives in state_dir/<process name>/ instead, made (0700) if absent */
    X509 *operator_ca;        /* its DER's SHA-256 must equal the descriptor's operator_ca_sha256; copied */
    /* The attestation authority that signs compartment certificates; borrowed, must outlive the launcher. */
    const idevs_identity *authority;
    X509 *authority_cert; /* a reference is taken */
    const char *run_as;   /* user for the compartment when the launcher runs as root; NULL: "nobody" */
    /* The isolation backend (docs/BACKENDS.md): NULL or "process", or "tpm", whose TPM is reached through tpm_tcti
     * ("device:/dev/tpmrm0", "swtpm:path=...") and whose register is PCR tpm_pcr (0: 15). The tpm backend's
     * host-wide files (enrollment, event log) are in state_dir/tpm/, shared by the processes of a broker. */
    const char *backend;
    const char *tpm_tcti;
    unsigned tpm_pcr;
    unsigned certificate_validity_s; /* default 7 days */
    /* The running compartment's certificate is renewed (same keys, new evidence) this long after it was issued;
     * 0: two thirds of certificate_validity_s. Must be below certificate_validity_s. */
    unsigned certificate_renew_after_s;
    unsigned start_timeout_ms;       /* start to Ready; default 5000 */
    unsigned event_timeout_ms;       /* 0: the descriptor's limits.event_timeout_ms */
    size_t queue_depth;              /* deliveries accepted and not done; 0: the descriptor's limits.queue_depth */
    /* Envelope bytes of those deliveries, at most; 0: queue_depth envelopes of max_payload, capped at 64 MiB.
     * An empty queue accepts one envelope whatever its size (up to max_payload). */
    size_t queue_bytes;
    unsigned max_in_flight;          /* deliveries sent and not done; default 64 */
    unsigned max_attempts;           /* attempts of a delivery during which its compartment died; default 3 */
    unsigned backoff_initial_ms;     /* first restart delay, doubled per failed start; default 100 */
    unsigned backoff_max_ms;         /* default 30000 */
    unsigned stable_after_ms;        /* a compartment ready this long resets the backoff; default 10000 */
    unsigned exit_grace_ms;          /* after Fatal, end of stream or Shutdown, before SIGKILL; default 200 */
    /* Several brokers serving one process (docs/SCALING.md): this broker's instances are numbered instance_base
     * .. instance_base + process.instances - 1 in what they seal, apart from every other broker's. Default 0. */
    uint32_t instance_base;
    idevs_launcher_event_fn on_event;
    void *event_arg;
    /* Join (docs/SCALING.md, "Several brokers"): when the state directory holds no sealed keys the compartment
     * can open, it does not make fresh keys but gets the process's from a running instance on another host, over
     * idevs/<process>/join/ (idevs_launcher_join_message()); until then inputs are refused (IDEVS_ERR_JOINING). */
    bool join;
} idevs_launcher_config;

void idevs_launcher_config_default(idevs_launcher_config *cfg);

/* The attestation authority and the operator CA, read once from PEM files and shared by every launcher of a
 * broker (a launcher borrows them). On failure *failed says which file (0 the key, 1 its certificate, 2 the
 * operator CA) and why names the file and the problem. */
typedef struct idevs_launcher_authority {
    idevs_identity *identity; /* the authority's signing key, with its certificate */
    X509 *cert;
    X509 *operator_ca;
} idevs_launcher_authority;

idevs_err idevs_launcher_authority_load(const char *key_path, const char *cert_path, const char *operator_ca_path,
                                        idevs_launcher_authority *out, int *failed, char *why, size_t why_len);
void idevs_launcher_authority_clear(idevs_launcher_authority *a);

/* Reads the descriptor once (the bytes it measures are the bytes it routes by and publishes) and the service
 * certificates it names, opens the backend (process or tpm), measures the host program and the logic (into sealed
 * memfds every start reuses). Starts nothing. On failure why names the problem (the file, the field). */
idevs_err idevs_launcher_new(const idevs_launcher_config *cfg, idevs_launcher **out, char *why, size_t why_len);

/* Starts the compartment and waits until it is certified and ready, at most start_timeout_ms. The first start
 * also reads the replay record from state_dir (a damaged or foreign one: IDEVS_LAUNCHER_EVENT_WARNING, and the
 * record starts empty). On failure the
 * compartment is killed and reaped and why says what went wrong, e.g. "compartment 'rewards' (program ...) was
 * killed by signal 31 (SIGSYS): system call openat (257) outside the sandbox allowlist". */
idevs_err idevs_launcher_start(idevs_launcher *l, char *why, size_t why_len);

/* Sets config.join after idevs_launcher_new() (a caller that knows the process by the name new() read), before
 * idevs_launcher_start(); IDEVS_ERR_NOT_NOW once started. */
idevs_err idevs_launcher_set_join(idevs_launcher *l, bool join);

/* What a topic is for this launcher's process. The plugin routes INPUT and RESPONSE topics to
 * idevs_launcher_deliver() and lets no client write on PROTECTED ones (outputs, requests, and the certificate and
 * descriptor topics, where only the plugin publishes). */
typedef enum idevs_topic_kind {
    IDEVS_TOPIC_OTHER = 0, /* not this process's */
    IDEVS_TOPIC_INPUT,     /* a declared input: services publish envelopes for the compartment */
    IDEVS_TOPIC_RESPONSE,  /* a request's response topic: its service answers there */
    IDEVS_TOPIC_PROTECTED, /* only the plugin publishes here */
    IDEVS_TOPIC_RECEIPT,   /* a service's receipts for the outputs and requests it handled (PROTOCOL.md 9) */
    IDEVS_TOPIC_JOIN,      /* idevs/<process>/join/request and .../join/grant/<64 hex>: only plugins publish here;
                            * their messages go to idevs_launcher_join_message() */
} idevs_topic_kind;

/* *own_copy (may be NULL) receives the launcher's copy of the topic, valid as long as the launcher, or NULL. */
idevs_topic_kind idevs_launcher_topic_kind(const idevs_launcher *l, const char *topic, const char **own_copy);

/* The keyless gate, then the queue. The gate checks, in this order and with one decoding of the clear header:
 * the topic is a declared input or response topic (IDEVS_ERR_UNKNOWN_INPUT), the size against the descriptor's
 * max_payload (IDEVS_ERR_TOO_LARGE), the structure, version and suite (IDEVS_ERR_MALFORMED, _VERSION, _SUITE),
 * the recipient is this process (IDEVS_ERR_WRONG_RECIPIENT), the sender is the service the descriptor declares
 * for that topic (IDEVS_ERR_SENDER_NOT_ALLOWED), and the replay record: IDEVS_ERR_REPLAY when it has its
 * (sender, instance, epoch, sequence) as done, IDEVS_ERR_OUTSIDE_WINDOW when its sequence number is below the
 * window of its epoch, IDEVS_ERR_EPOCH_FORGOTTEN when its epoch is older than the two the record keeps for that
 * instance, or, for an instance it keeps nothing of, at or below the sender's instance floor (a compartment that
 * never restarted would refuse those as well, the last as epoch_expired). What the gate refuses
 * never costs the compartment anything; what it passes may still be forged, which only the compartment can
 * tell. Then the queue: IDEVS_ERR_REPLAY for a byte-for-byte copy of an envelope queued or in flight (a copy
 * takes one slot at most), and IDEVS_ERR_QUEUE_FULL when queue_depth deliveries are waiting or this envelope would
 * take the queue's bytes over queue_bytes; IDEVS_ERR_NOT_NOW after stop. Deliveries are queued in every state
 * but STOPPED: while a compartment starts, or waits out its restart backoff, they wait for it.
 * idevs_launcher_deliver_from() also bounds each client's and each sender's share (stats.client_share,
 * stats.sender_share): IDEVS_ERR_QUEUE_CLIENT_SHARE, IDEVS_ERR_QUEUE_SENDER_SHARE, checked before the total.
 * Never blocks. *delivery_id (may be NULL) receives the id on_done will report. */
idevs_err idevs_launcher_deliver(idevs_launcher *l, const char *topic, const uint8_t *envelope, size_t len,
                                 const uint8_t *correlation, size_t correlation_len, uint64_t *delivery_id);

/* idevs_launcher_deliver() for a message an MQTT client published; client is its client id (NULL: unknown,
 * then this is idevs_launcher_deliver()). A client may hand the same envelope over twice without any attack:
 * Mosquitto 2.0.11 passes a QoS 2 PUBLISH retransmitted with DUP (its PUBREC was lost) to the plugins again,
 * and a QoS 1 one comes again after a reconnection. Such a copy, from the client that delivered the envelope
 * (the same sender, instance, epoch and sequence number in its clear header) among the last few thousand
 * deliveries, is refused with IDEVS_ERR_DUPLICATE, counted in stats.duplicates, not as a replay: while the first
 * is queued when its bytes are the same, afterwards when the replay record refuses it. The same envelope from another
 * client, or any client's copy once that client's delivery is forgotten, is IDEVS_ERR_REPLAY as before. Of a
 * copy, only the name given to the refusal depends on the client id, which a client chooses: nothing is processed
 * twice, and no other client's envelope is refused for it. The client id also names the share of the queue the
 * delivery counts in (shares.c): a client over its share is refused with IDEVS_ERR_QUEUE_CLIENT_SHARE, and the
 * envelopes naming one sender, whatever their clients, with IDEVS_ERR_QUEUE_SENDER_SHARE. */
idevs_err idevs_launcher_deliver_from(idevs_launcher *l, const char *client, const char *topic,
                                      const uint8_t *envelope, size_t len, const uint8_t *correlation,
                                      size_t correlation_len, uint64_t *delivery_id);

/* idevs_launcher_deliver_from() with the input's partition: the text of its idevs-partition property (NULL: none;
 * one that is not a partition of the descriptor, e.g. after a redeployment changed process.partitions, is
 * counted in stats.partition_ignored and the input goes on without one). With several instances
 * (process.instances, docs/SCALING.md) it chooses the instance: partition p goes to instance p mod instances, even
 * while that one restarts (its inputs wait for it, in order); a response to the instance whose request it answers;
 * an envelope whose (sender, message id) is queued already to the instance that has it, so that a copy is never
 * run beside its first; the rest to the least loaded ready instance. */
idevs_err idevs_launcher_deliver_partitioned(idevs_launcher *l, const char *client, const char *topic,
                                             const uint8_t *envelope, size_t len, const uint8_t *correlation,
                                             size_t correlation_len, const char *partition, uint64_t *delivery_id);

/* Several brokers serving one process (docs/SCALING.md): the partitions this broker routes, as
 * idevs_deployment_partition_set_parse() reads them ("all", "none", "0-31,40"); NULL: all (the default). Inputs and
 * answers of the others are refused with IDEVS_ERR_NOT_OWNER (stats.not_owner), by their message id's partition
 * (idevs_deployment_partition_of_id; the idevs-partition property chooses only among this broker's instances);
 * receipts are taken everywhere. The broker that owns partition 0 runs the logic's timer. May be called again at any time
 * (RELOAD); IDEVS_ERR_CONFIG with why for a set that is not one of the descriptor's. */
idevs_err idevs_launcher_set_owned(idevs_launcher *l, const char *partitions, char *why, size_t why_len);

/* Moving partitions (docs/SCALING.md): takes over what another broker's launcher of this process kept in its
 * state directory (that process's: <state_dir>/<process name>, reachable from here, e.g. copied), so that this
 * broker can route the partitions that broker owned with nothing done twice and nothing lost: merges its replay
 * record (authenticated by that directory's sealing secret) into this one, which is written at once, and copies
 * its kept outputs into this outbox, published again from here until receipted. Call before giving this broker
 * the partitions (idevs_launcher_set_owned). Taking the same directory again changes nothing. */
idevs_err idevs_launcher_adopt(idevs_launcher *l, const char *state_dir, char *why, size_t why_len);

/* A message on the process's join topics (IDEVS_TOPIC_JOIN), as another broker's plugin published it:
 *   - a JoinRequest (idevs/<process>/join/request), when this launcher holds the keys, goes to one ready
 *     instance, which checks the joiner and answers; the next poll publishes the grant (through on_publish) on
 *     idevs/<process>/join/grant/<hex of the joiner's key binding>. One check at a time: IDEVS_ERR_NOT_NOW while
 *     one is under way or no instance is ready (the joiner asks again), IDEVS_ERR_JOINING when this launcher
 *     holds no keys itself;
 *   - a JoinGrant, when this launcher is joining and the topic names its joining compartment's key binding, goes
 *     to that compartment, which takes the first valid one (IDEVS_ERR_WRONG_RECIPIENT for another binding,
 *     IDEVS_ERR_NOT_NOW when nothing here is joining).
 * IDEVS_ERR_TOO_LARGE above IDEVS_JOIN_MESSAGE_MAX bytes (idevs_channel.h), IDEVS_ERR_UNKNOWN_INPUT on another
 * topic. Every message not passed on is counted in stats.join_ignored. The compartments verify everything; the
 * launcher reads nothing of the message. */
idevs_err idevs_launcher_join_message(idevs_launcher *l, const char *topic, const uint8_t *payload, size_t len);

typedef struct idevs_launcher_publish {
    uint64_t delivery_id;   /* the delivery that caused it; 0 for the logic's timer */
    const char *topic;      /* a declared output or request topic */
    const uint8_t *envelope;
    size_t envelope_len;
    int qos;
    const char *response_topic; /* NULL unless a request */
    const uint8_t *correlation; /* NULL unless a request */
    size_t correlation_len;
    bool receipt;               /* a receipt to a service (docs/PROTOCOL.md 9.3), not an output or a request */
    const uint8_t *kept;        /* to a service with receipts: what the compartment needs to seal it anew (the
                                 * launcher's outbox keeps it); NULL otherwise. Not for the broker */
    size_t kept_len;
} idevs_launcher_publish;

/* A delivery's publications come in order, then its on_done; when its Done moved the replay record, only once
 * the record is on disk (unless it cannot be written: stats.released_unrecorded). */
typedef struct idevs_launcher_callbacks {
    void (*on_publish)(void *arg, const idevs_launcher_publish *publish); /* data valid during the call */
    void (*on_done)(void *arg, uint64_t delivery_id, idevs_err status);
    void *arg;
    /* Optional (added last: it is NULL for callers that name the first three members; a positional initializer of
     * three gets -Wmissing-field-initializers and wants a fourth, NULL). Called just
     * before on_done(IDEVS_ERR_LOGIC) for a delivery the logic refused with idevs_refuse(): index is the code's
     * place in the descriptor's "refusals" (below IDEVS_LAUNCHER_REFUSALS_MAX), code the code, valid as long as
     * the launcher. The compartment and the launcher check that it is a declared one; it never holds payload. */
    void (*on_refused)(void *arg, uint64_t delivery_id, size_t index, const char *code);
} idevs_launcher_callbacks;

#define IDEVS_LAUNCHER_REFUSALS_MAX 16 /* the descriptor's refusal codes, at most (IDEVS_DEPLOYMENT_MAX_REFUSALS) */

/* Does the pending work: sends queued deliveries, reads the compartment's frames and invokes the callbacks,
 * notices an exit, kills a hung compartment, restarts after the backoff. Waits at most timeout_ms (0: not at
 * all, -1: until something happened) for something to do; returns once something was done. Returns IDEVS_OK,
 * or IDEVS_ERR_NOT_NOW when the launcher is stopped. The callbacks may call idevs_launcher_deliver(). */
idevs_err idevs_launcher_poll(idevs_launcher *l, int timeout_ms, const idevs_launcher_callbacks *cb);

/* A descriptor that becomes readable whenever idevs_launcher_poll() has something to do (an epoll set of the
 * channel, the child's pidfd and a timer for the next deadline). Stable for the launcher's lifetime. */
int idevs_launcher_fd(const idevs_launcher *l);

/* Milliseconds until poll has timed work (a restart, a kill); -1 when none. */
int idevs_launcher_next_timeout_ms(const idevs_launcher *l);

/* True while a frame is partly written to or read from a compartment that has deliveries in progress: a caller
 * that can afford to wait should poll now (a large envelope moves only while someone polls), not at its next
 * turn. */
bool idevs_launcher_transferring(const idevs_launcher *l);

/* Sends Shutdown, waits up to timeout_ms for the compartment to exit, then kills it; always reaps it.
 * Deliveries not done are dropped (counted in stats.abandoned). Writes the replay record if it changed. After
 * stop, the launcher can be started again. */
void idevs_launcher_stop(idevs_launcher *l, unsigned timeout_ms);

/* Stops (with exit_grace_ms) if needed, and frees. NULL is fine. */
void idevs_launcher_free(idevs_launcher *l);

typedef enum idevs_launcher_state {
    IDEVS_LAUNCHER_STOPPED = 0,
    IDEVS_LAUNCHER_STARTING,   /* spawned; certificate request awaited */
    IDEVS_LAUNCHER_CERTIFYING, /* certificate sent; Ready awaited */
    IDEVS_LAUNCHER_READY,
    IDEVS_LAUNCHER_EXITING,    /* ending; to be reaped */
    IDEVS_LAUNCHER_BACKOFF,    /* waiting to restart */
    IDEVS_LAUNCHER_JOINING,    /* certified for temporary keys; waiting for the process's (config.join) */
} idevs_launcher_state;

typedef struct idevs_launcher_stats {
    idevs_launcher_state state;
    pid_t pid;                   /* 0 when none runs */
    uint64_t started;            /* compartments spawned */
    uint64_t restarts;           /* spawns after an unplanned end */
    uint64_t certified;          /* certificates issued */
    uint64_t renewed;            /* of which renewals of a running compartment's certificate */
    uint64_t renew_failed;       /* renewals that failed (tried again later; the current certificate stays) */
    int64_t certificate_not_after; /* the current certificate's notAfter, seconds since 1970; 0 before one */
    uint64_t delivered;          /* deliveries accepted */
    uint64_t sent;               /* Deliver frames sent, re-sends included */
    uint64_t resent;             /* of which re-sends after a restart */
    uint64_t done;               /* on_done calls (given-up deliveries included) */
    uint64_t given_up;           /* deliveries ended by the launcher after max_attempts */
    uint64_t published;          /* on_publish calls */
    uint64_t discarded_publishes;/* publications of interrupted attempts */
    uint64_t killed;             /* compartments the launcher killed (hung, misbehaving, too slow to start) */
    uint64_t protocol_errors;    /* malformed or unexpected frames from a compartment */
    uint64_t abandoned;          /* deliveries dropped by stop() */
    uint64_t replays_refused;    /* deliveries refused by the replay record, by deliver() or before a send */
    uint64_t duplicates;         /* retransmissions refused by deliver_from(): the same client's copies */
    uint64_t replay_saves;       /* times the replay record was written to state_dir */
    uint64_t released_unrecorded;/* publications released although the replay record holding their input could
                                    not be written (state_dir read-only or full): replayable after a broker crash */
    uint64_t timer_failed;       /* runs of the logic's timer whose emits the compartment dropped (emit bounds) */
    uint64_t held;               /* inputs the compartment held (max_outstanding_requests reached), sent again */
    size_t outbox;               /* outputs and requests kept until their receiver's receipt */
    uint64_t outbox_resent;      /* copies of them published again for want of a receipt */
    uint64_t outbox_receipted;   /* of them receipted */
    uint64_t outbox_expired;     /* given up unreceipted after 65 minutes (no receiver would open them) */
    uint64_t outbox_unkept;      /* released without being kept: the outbox full or its file not written */
    uint64_t outbox_resealed;    /* copies the compartment sealed anew: sealed first under a former certificate */
    uint64_t queued_while_down;  /* deliveries accepted while no compartment was ready (starting, or restarting
                                    after its backoff): they wait in the queue for the next one */
    size_t queue_depth;          /* deliveries accepted and not done */
    size_t queue_limit;
    size_t client_share;         /* of those, one MQTT client's at most: max(1, queue_limit / 2) (and half the
                                    queue's bytes) */
    size_t sender_share;         /* naming one sender, at most: max(1, queue_limit - queue_limit / 4) (and three
                                    quarters of the bytes), or queue_limit when only one service sends */
    size_t in_flight;            /* sent to the current compartments and not done */
    size_t instances;            /* compartments of the pool (process.instances) */
    uint64_t partition_ignored;  /* idevs-partition values that name no partition of the descriptor */
    uint64_t not_owner;          /* inputs and answers of partitions another broker owns: not routed here */
    uint64_t timer_moves;        /* times the logic's timer moved to another instance of the pool and back */
    uint64_t timer_dropped;      /* timer runs of an instance that did not hold the timer then, not published */
    size_t instances_ready;      /* of them ready now */
    uint64_t last_certified_us;  /* spawn to certificate sent, last start */
    uint64_t last_ready_us;      /* spawn to Ready, last start */
    bool last_keys_restored;     /* the last compartment got its keys back from the sealed blob */
    char last_exit[256];         /* how the last compartment ended; "" if none did */
    /* Joining (docs/SCALING.md, "Several brokers") */
    bool join_waiting;           /* a compartment here waits for the process's keys: inputs are refused */
    uint64_t join_requests;      /* JoinRequests published while waiting */
    uint64_t joined;             /* times a compartment here took the process's keys from a grant */
    uint64_t join_grants_refused;/* grants a joining compartment here refused (forged, another measurement) */
    uint64_t joins_granted;      /* joiners an instance here checked and granted the keys to */
    uint64_t joins_refused;      /* joiners an instance here refused (another measurement, stale evidence, ...) */
    uint64_t join_ignored;       /* join messages not passed on (idevs_launcher_join_message()) */
    uint64_t joining_refused;    /* inputs refused with IDEVS_ERR_JOINING */
} idevs_launcher_stats;

void idevs_launcher_get_stats(const idevs_launcher *l, idevs_launcher_stats *out);

/* The measurement the compartment is started with (IDEVS_LAUNCHER_DIGEST_LEN bytes). */
const uint8_t *idevs_launcher_measurement(const idevs_launcher *l);
/* The descriptor's digest, program UUID and process name. */
const uint8_t *idevs_launcher_descriptor_digest(const idevs_launcher *l);
const idevs_uuid *idevs_launcher_program(const idevs_launcher *l);
const char *idevs_launcher_name(const idevs_launcher *l);
/* The descriptor file as configured, and exactly the bytes read from it once (measured, routed by, published). */
const char *idevs_launcher_descriptor_path(const idevs_launcher *l);
const uint8_t *idevs_launcher_descriptor_bytes(const idevs_launcher *l, size_t *len);
/* Where the plugin publishes, retained, the certificate chain and the descriptor: idevs/<process>/certificate
 * and idevs/<process>/descriptor. */
const char *idevs_launcher_certificate_topic(const idevs_launcher *l);
const char *idevs_launcher_descriptor_topic(const idevs_launcher *l);

/* Reads the descriptor file again (a regular file only: a FIFO never blocks) and says whether it differs from
 * what runs. IDEVS_OK with *changed; on a read or parse failure why says why. now_digest (may be NULL) receives
 * the new file's SHA-256 when it was read. */
idevs_err idevs_launcher_descriptor_changed(const idevs_launcher *l, bool *changed,
                                            uint8_t now_digest[IDEVS_LAUNCHER_DIGEST_LEN], char *why, size_t why_len);

/* Whether two launchers can serve one broker: IDEVS_ERR_CONFIG when they have the same process name or program
 * UUID, or share a topic (any input, output, request, response, certificate or descriptor topic of one equal to
 * one of the other's); why then names both descriptor files and what they share. */
idevs_err idevs_launcher_conflict(const idevs_launcher *a, const idevs_launcher *b, char *why, size_t why_len);

/* The current compartment's certificate chain (leaf, authority) as last issued; count 0 before the first
 * certification. Pointers stay valid until the next certification or free. For publishing it on a retained
 * topic. */
size_t idevs_launcher_chain_count(const idevs_launcher *l);
const uint8_t *idevs_launcher_chain_der(const idevs_launcher *l, size_t index, size_t *len);
/* The same chain as PEM text (malloc'd, *len bytes, no terminating NUL), or NULL before the first
 * certification or when out of memory. */
char *idevs_launcher_chain_pem(const idevs_launcher *l, size_t *len);

/* The pool: how many instances, and instance n's chain (count 0 while it has none); instance n's chain as PEM
 * (malloc'd), for idevs/<process>/instance/<n>/certificate. The functions above give the first instance's that
 * has one: any instance's chain certifies the process's keys. */
size_t idevs_launcher_instance_count(const idevs_launcher *l);
const char *idevs_launcher_instance_certificate_topic(const idevs_launcher *l, size_t instance);
/* Instance n's compartment's pid; 0 when none runs. */
pid_t idevs_launcher_instance_pid(const idevs_launcher *l, size_t instance);
size_t idevs_launcher_instance_chain_count(const idevs_launcher *l, size_t instance);
const uint8_t *idevs_launcher_instance_chain_der(const idevs_launcher *l, size_t instance, size_t index, size_t *len);
char *idevs_launcher_instance_chain_pem(const idevs_launcher *l, size_t instance, size_t *len);

#endif
