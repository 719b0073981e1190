/* The service library: what a service (store, taxi, messaging, or yours) links to talk to an integration
 * process through any MQTT broker.
 *
 * It connects with MQTT 5 (TLS optional), fetches the process's certificate chain and deployment descriptor
 * from their retained topics (idevs/<process>/certificate and idevs/<process>/descriptor), and verifies them
 * against the service's own policy before it sends or accepts anything: the chain leads to the operator CA,
 * the evidence names an allowed backend, the descriptor's SHA-256 and the program UUID in the evidence match
 * the retained descriptor, and whatever the policy pins (measurement, descriptor digest) matches. The verified
 * descriptor then tells the service its topics: the inputs it may publish to, the outputs and requests
 * addressed to it, and the response topics of those requests.
 *
 * Messages are sealed to the compartment and opened from it only (idevs_envelope_allow_sender). Duplicates
 * (QoS 1 redelivery, a replayed envelope) are dropped and counted, never handed to the callback twice. After a
 * lost connection or a broker restart the library reconnects with backoff, subscribes again and verifies the
 * certificate the restarted compartment publishes before it opens anything more from it.
 *
 * Single-threaded: every call, and every callback, happens on the caller's thread inside the library's calls.
 *
 *     idevs_service_config cfg;
 *     idevs_service_config_default(&cfg);
 *     cfg.key_file = "pki/taxi.key"; cfg.cert_file = "pki/taxi.crt"; cfg.operator_ca = "pki/ca.crt";
 *     cfg.process = "rewards";
 *     cfg.policy = (const char *const[]){ "allow-process-backend-insecure", NULL };
 *     idevs_service *svc;
 *     if (idevs_service_new(&cfg, on_message, state, &svc, why, sizeof why) != IDEVS_OK ||
 *         idevs_service_start(svc, why, sizeof why) != IDEVS_OK) { fprintf(stderr, "%s\n", why); ... }
 *     while (running) idevs_service_run(svc, 100);
 */
#ifndef IDEVS_SERVICE_H
#define IDEVS_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "idevs_crypto.h"
#include "idevs_error.h"
#include "idevs_uuid.h"

typedef struct idevs_service idevs_service;

typedef struct idevs_service_config {
    const char *host;          /* default "127.0.0.1" */
    int port;                  /* default 1883 (8883 is not implied by TLS: set it) */
    const char *client_id;     /* default: "<identity name>-<pid>"; give a stable one for a persistent session */
    const char *key_file;      /* the service's private key (idevs-ca service writes pki/NAME.key) */
    const char *cert_file;     /* its certificate chain, leaf first (pki/NAME.crt) */
    const char *operator_ca;   /* the operator CA certificate (pki/ca.crt): the compartment's chain must lead to it */
    const char *process;       /* the integration process's name in the descriptor, e.g. "rewards" */
    /* NULL-terminated settings for verifying the compartment's certificate, each "name" or "name=value" as
     * idevs_cert_policy_apply names them ("allow-process-backend-insecure", "measurement=<hex>",
     * "descriptor-digest=<hex>", "descriptor=<file>", ...). The operator CA, evidence being required, and the
     * program UUID and digest of the retained descriptor are always applied. NULL: nothing more (hardware
     * backends only, no measurement pinned). */
    const char *const *policy;
    const char *tls_cafile;    /* non-NULL: TLS to the broker, verified against this CA file */
    const char *tls_certfile;  /* optional client certificate for TLS */
    const char *tls_keyfile;
    const char *username;      /* optional MQTT credentials */
    const char *password;
    unsigned keepalive_s;      /* default 30 */
    unsigned start_timeout_ms; /* idevs_service_start: connect, fetch and verify; default 10000 */
    unsigned session_expiry_s; /* MQTT 5 session expiry; 0: clean session each connect (default) */
    size_t dedupe_window;      /* message ids remembered to drop duplicates; default 4096 */
    /* The outbox: a SQLite file (made 0600) holding what this service sent the process until its receipt comes;
     * what it holds is sent again after a restart of the service. NULL: in memory, lost when the service stops. */
    const char *outbox;
    void *cli_storage;         /* owned by idevs_service_cli_option(), released by idevs_service_cli_free() */
} idevs_service_config;

void idevs_service_config_default(idevs_service_config *cfg);

typedef enum idevs_service_kind {
    IDEVS_SERVICE_OUTPUT = 1, /* an output of the process addressed to this service */
    IDEVS_SERVICE_REQUEST,    /* a request of the process addressed to this service: answer it with respond() */
} idevs_service_kind;

/* One opened message; everything is valid for the duration of the callback only. */
typedef struct idevs_service_message {
    idevs_service_kind kind;
    const char *name;        /* the output's or the request's name in the descriptor */
    const char *topic;
    const uint8_t *payload;  /* followed by a NUL not counted in payload_len */
    size_t payload_len;
    idevs_msgid message_id;
    const idevs_msgid *provenance; /* ids of the inputs that caused it */
    size_t provenance_count;
    /* requests only: where and how respond() answers */
    const char *response_topic;
    const uint8_t *correlation;
    size_t correlation_len;
} idevs_service_message;

typedef void (*idevs_service_on_message)(idevs_service *svc, const idevs_service_message *msg, void *arg);

/* The process handled a message this service sent (docs/PROTOCOL.md section 9): its id, and the key it was
 * published with (NULL without one). Called once per message from idevs_service_run(), and again from
 * idevs_service_publish_keyed() when a key that was receipted is published again. */
typedef void (*idevs_service_on_receipt)(idevs_service *svc, const idevs_msgid *id, const char *key, void *arg);
void idevs_service_set_on_receipt(idevs_service *svc, idevs_service_on_receipt on_receipt, void *arg);

/* Loads the identity, the operator CA and the policy; connects to nothing. on_message may be NULL for a
 * service that only publishes. On failure why names the file or setting and the problem. */
idevs_err idevs_service_new(const idevs_service_config *cfg, idevs_service_on_message on_message, void *arg,
                            idevs_service **out, char *why, size_t why_len);

/* Connects, fetches and verifies the certificate and descriptor, subscribes to this service's topics (each at
 * the QoS the descriptor declares for it).
 * Returns once all of that is done, or start_timeout_ms passed (IDEVS_ERR_TIMEOUT), or verification failed
 * (the verification's own error, e.g. IDEVS_ERR_MEASUREMENT_MISMATCH). why says which and why.
 * on_message is never called from here: what arrives meanwhile (with a persistent session, the outputs and
 * requests the broker queued while the service was away) is held and handed to on_message by the next
 * idevs_service_run() (or _flush()), first, where publish() and respond() work. */
idevs_err idevs_service_start(idevs_service *svc, char *why, size_t why_len);

/* Seals payload to the compartment for the declared input `input` (whose "from" must be this service) and
 * publishes it at QoS 1 (IDEVS_ERR_CERT_EXPIRED, nothing sent, when the compartment's certificate is past its
 * notAfter: the plugin renews it long before; idevs_service_last_error() says so) (the descriptor declares no QoS for inputs). IDEVS_ERR_UNKNOWN_INPUT for an input not
 * declared for this service; IDEVS_ERR_TOO_LARGE above the descriptor's limits.max_payload. Does not wait for
 * the broker's acknowledgement: idevs_service_flush() does. *message_id (may be NULL) gets the new id.
 * IDEVS_ERR_NOT_NOW while the service is not ready (idevs_service_ready() false: the connection is being
 * re-established, or the compartment's certificate is being verified again after a reconnection or a
 * compartment restart): nothing was sent; call idevs_service_run() and try again. */
idevs_err idevs_service_publish(idevs_service *svc, const char *input, const void *payload, size_t len,
                                idevs_msgid *message_id);

/* publish() through the outbox under the application's own key (a sale id; at most 256 bytes of text): the first
 * call adds the message; a later call with the same key (a restarted application that does not know whether it
 * published) adds nothing and gives the same id, and calls on_receipt at once when it was receipted already. Every
 * message, keyed or not, stays in the outbox and is sent again, sealed anew under its id, until the process
 * receipts it: 5 s after it was sent, then 10, 20, 40 s, then every 60 s, and at once after a reconnection.
 * IDEVS_ERR_IO when the outbox cannot be written (nothing was sent). */
idevs_err idevs_service_publish_keyed(idevs_service *svc, const char *input, const char *key, const void *payload,
                                      size_t len, idevs_msgid *message_id);

/* What idevs_service_publish_with() takes besides the input and the payload; every field may be zero. */
typedef struct idevs_publish_options {
    const char *key; /* idempotency key, as publish_keyed()'s; NULL: none */
    /* The partition key (any bytes, e.g. a customer id; NULL: none, partition_key_len 0): inputs of the same key
     * go to the same instance of the process while it is up, so they are handled in order. Only its partition
     * (docs/PROTOCOL.md 8.5) leaves the service, in the MQTT 5 user property idevs-partition, and only that
     * number is stored in the outbox: a message sent again carries the same partition. The partition is not
     * authenticated, and an onlooker sees it: inputs of one key are linkable by it. */
    const void *partition_key;
    size_t partition_key_len;
} idevs_publish_options;

/* publish_keyed() with options (opts NULL: none); publish() and publish_keyed() are this call. */
idevs_err idevs_service_publish_with(idevs_service *svc, const char *input, const idevs_publish_options *opts,
                                     const void *payload, size_t len, idevs_msgid *message_id);

/* Messages in the outbox that the process has not receipted yet. */
size_t idevs_service_unreceipted(const idevs_service *svc);

/* Answers a request received in on_message: sealed to the compartment, published on the request's response
 * topic at the request's declared QoS (requests[].qos) with its correlation data, and naming the request's
 * message id in its (authenticated) provenance, which is how the compartment matches the answer to its
 * request. May be called from on_message or later (then with a copy of the message's response_topic,
 * correlation and message_id; the other fields are not used; a nil message_id is IDEVS_ERR_INVALID_ARG:
 * correlation data is not authenticated and never stands in for it). IDEVS_ERR_UNKNOWN_REQUEST when
 * response_topic is not the response topic of a request addressed to this service; IDEVS_ERR_NOT_NOW as for
 * publish. */
idevs_err idevs_service_respond(idevs_service *svc, const idevs_service_message *request, const void *payload,
                                size_t len);

/* Runs the network for up to timeout_ms: sends, receives, calls on_message, reconnects after a lost
 * connection. IDEVS_OK, or an error when the service cannot go on (IDEVS_ERR_NOT_NOW after stop), or once the
 * error of a failed verification of a new retained certificate or descriptor (then
 * idevs_service_last_error() says why; the service stays connected, seals nothing and opens nothing more
 * until a certificate that verifies arrives; the caller decides whether to go on). */
idevs_err idevs_service_run(idevs_service *svc, int timeout_ms);

/* True when connected and the compartment's current certificate and descriptor are verified: publish() and
 * respond() seal. */
bool idevs_service_ready(const idevs_service *svc);

/* For a caller with its own event loop: the connection's socket (-1 while disconnected) and whether the
 * library has bytes waiting to be written. Poll it for reading (and writing when asked), then call
 * idevs_service_run(svc, 0); call run() at least every second regardless, for keepalives and reconnects. */
int idevs_service_socket(const idevs_service *svc);
bool idevs_service_want_write(const idevs_service *svc);

/* The sentence describing the last failure reported by run() (a verification), "" when none. */
const char *idevs_service_last_error(const idevs_service *svc);

/* Runs until the broker answered every publication so far, or timeout_ms (IDEVS_ERR_TIMEOUT). IDEVS_ERR_BROKER
 * when it refused any of them since the previous flush (an MQTT 5 reason code of 0x80 or more, e.g. 0x87 not
 * authorized by an ACL): idevs_service_last_error() says how many and the last reason; the on_published
 * callback says which. A refused publication is not delivered: publish it again once the cause is fixed. */
idevs_err idevs_service_flush(idevs_service *svc, int timeout_ms);

/* The outcome of one publication (publish() or respond()), by the message id publish() gave: IDEVS_OK when
 * the broker acknowledged it, IDEVS_ERR_BROKER when it refused it, with why such as "the broker refused the
 * publication: 0x87 not authorized" ("" on success). Called from run() and flush(); refusals are also
 * counted in stats.refused. */
typedef void (*idevs_service_on_published)(idevs_service *svc, const idevs_msgid *message_id, idevs_err result,
                                           const char *why, void *arg);

/* Sets (NULL: clears) the callback for the publications made from now on. */
void idevs_service_set_on_published(idevs_service *svc, idevs_service_on_published cb, void *arg);

/* An MQTT 5 PUBACK or PUBREC reason code as an outcome: IDEVS_OK below 0x80, else IDEVS_ERR_BROKER with why
 * naming the code and its MQTT name ("the broker refused the publication: 0x97 quota exceeded"). */
idevs_err idevs_service_puback_result(int reason_code, char *why, size_t why_len);

/* Disconnects; idevs_service_free() also does. */
void idevs_service_stop(idevs_service *svc);
void idevs_service_free(idevs_service *svc);

/* What the service verified about the compartment it talks to (valid after a successful start). */
typedef struct idevs_service_peer_info {
    idevs_uuid compartment;  /* the compartment's certified identity */
    idevs_uuid program;      /* the process's program UUID */
    uint8_t measurement[IDEVS_SHA256_LEN];
    uint8_t descriptor_digest[IDEVS_SHA256_LEN];
    const char *backend;     /* "process", "sgx", ... */
    uint64_t certificates_verified; /* 1 after start; more after restarts of the compartment */
} idevs_service_peer_info;

void idevs_service_peer(const idevs_service *svc, idevs_service_peer_info *out);

typedef struct idevs_service_stats {
    uint64_t published;    /* envelopes sealed and handed to MQTT */
    uint64_t acknowledged; /* of which acknowledged by the broker */
    uint64_t received;     /* envelopes that arrived on this service's topics */
    uint64_t delivered;    /* opened and handed to on_message */
    uint64_t duplicates;   /* dropped as already seen: by message id, or by the envelope's replay window
                            * (those are also in rejected_by_reason[IDEVS_ERR_REPLAY], not in rejected) */
    uint64_t rejected;     /* could not be opened (see rejected_by_reason) */
    uint64_t rejected_by_reason[IDEVS_ERR_COUNT];
    uint64_t reconnects;
    uint64_t retransmitted; /* copies of messages sent again because no receipt came in time */
    uint64_t unreceipted_at_start; /* messages the outbox file held unreceipted when this service opened it: sent
                                    * again now (all but those a stop caught between keeping and sending) */
    uint64_t receipted;     /* messages of this service the process receipted */
    uint64_t receipts_sent; /* receipts this service sent the process for outputs and requests it handled */
    uint64_t refused;      /* publications the broker refused (MQTT 5 reason code >= 128, e.g. not authorized) */
    uint64_t untracked;    /* publications whose outcome on_published will not tell (no memory to remember
                            * them, or 65536 awaiting the broker): they still count in acknowledged or refused */
    uint64_t epochs_started;  /* key epochs this service started towards the compartment (asymmetric work) */
    uint64_t epochs_accepted; /* key epochs of the compartment this service accepted */
    uint64_t held_dropped; /* envelopes that arrived before the compartment was verified and did not fit the
                            * holding queue (65536 envelopes, 32 MiB) */
} idevs_service_stats;

void idevs_service_get_stats(const idevs_service *svc, idevs_service_stats *out);

/* Creates path as an empty file of mode 0600 unless it exists (a symbolic link there is not followed: the
 * call fails). For a service's database of personal data, before SQLite opens it: SQLite gives its -wal,
 * -shm and journal files the database's mode, so they are private too. Returns 1 when it created the file, 0
 * when it existed (its mode is left as it is), -1 with why on failure. */
int idevs_service_private_file(const char *path, char *why, size_t why_len);

/* ---- common command-line options (idevs_service_cli.c), shared by every service and tool ---- */

/* Recognizes the connection options below at argv[*i] and consumes them: *i is left on the option's value, the
 * last argument consumed, so that a `for (i = 1; i < argc; i++)` loop goes on with the next argument.
 * Returns 1 when it consumed one, 0 when argv[*i] is not one of them, -1 (with why) for a missing or bad value.
 * Call idevs_service_config_default() on cfg first.
 *   -h/--host HOST  -p/--port PORT  -i/--id CLIENT_ID  --key FILE  --cert FILE  --ca FILE
 *   --process NAME  --policy SETTING[=VALUE] (repeatable)  --tls-ca FILE  --tls-cert FILE  --tls-key FILE
 *   -u/--username USER  -P/--password PASS  --pki DIR --name NAME (shorthand: key DIR/NAME.key,
 *   cert DIR/NAME.crt, ca DIR/ca.crt; an explicit --key, --cert or --ca wins)  -k/--keepalive SECONDS
 *   -x/--session-expiry SECONDS  --start-timeout MS  --dedupe-window N  --outbox FILE
 * Strings point into argv or into storage the config keeps until idevs_service_cli_free(). */
int idevs_service_cli_option(idevs_service_config *cfg, int argc, char **argv, int *i, char *why, size_t why_len);

/* The usage lines of those options, for a program's --help. */
extern const char idevs_service_cli_usage[];

/* Releases what idevs_service_cli_option allocated (the policy list, composed paths). */
void idevs_service_cli_free(idevs_service_config *cfg);

#endif
