/* The service library's state, shared by its files: service.c (lifecycle, connection, reconnection),
 * verify.c (the retained certificate and descriptor), messages.c (publish, respond, receive) and dedupe.c.
 * Not installed; tests include it to reach the receive path and the dedupe window directly. */
#ifndef IDEVS_SERVICE_INTERNAL_H
#define IDEVS_SERVICE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mosquitto.h>
#include <sqlite3.h>

#include "idevs_cert.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"
#include "idevs_receipt.h"
#include "idevs_replay.h"
#include "idevs_service.h"

#define SVC_WHY_MAX 768
#define SVC_CERT_PEM_MAX (IDEVS_CHAIN_MAX * IDEVS_CHAIN_PEM_EACH_MAX) /* a retained PEM chain */
#define SVC_HELD_MAX 65536                  /* envelopes held until the compartment is verified */
#define SVC_HELD_BYTES_MAX (32u * 1024u * 1024u)
#define SVC_DEDUPE_MAX (1u << 22)
#define SVC_BACKOFF_MIN_MS 100u
#define SVC_BACKOFF_MAX_MS 5000u
#define SVC_STABLE_MS 10000u /* a connection that lasted this long resets the backoff when it ends */
#define SVC_OUTSTANDING_MAX 65536u /* publications awaiting their PUBACK: MQTT has 65535 packet ids */
#define SVC_OUTBOX_INFLIGHT IDEVS_REPLAY_WINDOW /* sent and not receipted, at most (docs/PROTOCOL.md 9.1) */
#define SVC_SEEN_KEEP_TEXT "65536"              /* ids of outputs and requests handled, kept in the outbox file */

/* One message of the outbox in flight: sent, not receipted, going again at next_ms. */
typedef struct svc_outbox_entry {
    uint64_t number;
    uint64_t next_ms;
    unsigned attempts;
} svc_outbox_entry;

/* ---- the dedupe window (dedupe.c): the last `capacity` message ids, O(1) lookup ---- */
typedef struct idevs_service_dedupe idevs_service_dedupe;

/* capacity 1..SVC_DEDUPE_MAX, else IDEVS_ERR_INVALID_ARG. */
idevs_err idevs_service_dedupe_new(size_t capacity, idevs_service_dedupe **out);
void idevs_service_dedupe_free(idevs_service_dedupe *d);
/* True when id is among the remembered ids. Otherwise remembers it, forgetting the oldest when full, and
 * returns false. */
bool idevs_service_dedupe_seen(idevs_service_dedupe *d, const idevs_msgid *id);
bool idevs_service_dedupe_contains(const idevs_service_dedupe *d, const idevs_msgid *id);
size_t idevs_service_dedupe_count(const idevs_service_dedupe *d);

/* ---- an envelope received before the compartment was verified ---- */
typedef struct svc_held {
    char *topic;
    uint8_t *data;
    size_t len;
    uint8_t *correlation;
    size_t correlation_len;
} svc_held;

/* a publication awaiting the broker's acknowledgement: its packet id and the envelope's message id */
typedef struct svc_outstanding {
    int mid;
    idevs_msgid id;
} svc_outstanding;

/* MQTT QoS 0, 1 and 2: one SUBSCRIBE per QoS in use, as mosquitto_subscribe_multiple gives all its topics one. */
#define SVC_QOS_COUNT 3
/* The plugin publishes the retained certificate and descriptor at QoS 1 (docs/PROTOCOL.md 8.1). */
#define SVC_RETAINED_QOS 1
/* Inputs: the descriptor declares no QoS for them. */
#define SVC_INPUT_QOS 1

typedef enum svc_conn {
    SVC_DISCONNECTED = 0, /* waiting for the next attempt */
    SVC_CONNECTING,       /* CONNECT sent, no CONNACK yet */
    SVC_CONNECTED,        /* session up, subscriptions sent */
} svc_conn;

struct idevs_service {
    /* configuration, copied */
    char *host, *client_id, *process, *operator_ca;
    char *tls_cafile, *tls_certfile, *tls_keyfile, *username, *password;
    int port;
    unsigned keepalive_s, start_timeout_ms, session_expiry_s;
    char *certificate_topic, *descriptor_topic;
    char *instances_filter; /* idevs/<process>/instance/+/certificate: each instance's own certificate */
    idevs_service_on_message on_message;
    void *arg;

    /* identity and trust */
    idevs_identity *self;
    uint8_t operator_ca_sha256[IDEVS_SHA256_LEN];
    idevs_cert_policy *policy;          /* towards the compartment: CA, evidence, settings, expectations */
    bool pin_program, pin_descriptor;   /* the caller's own "program" and "descriptor[-digest]" settings */
    idevs_uuid pinned_program;
    uint8_t pinned_descriptor[IDEVS_SHA256_LEN];

    /* the verified deployment and compartment */
    idevs_deployment *deployment;       /* NULL before the first verification */
    uint8_t *descriptor_bytes;
    size_t descriptor_len, self_index;
    uint8_t *cert_pem;                  /* the verified retained chain, as received */
    size_t cert_pem_len;
    idevs_cert_info peer;
    uint64_t certificates_verified;
    idevs_envelope_ctx *ctx;
    char **subscriptions;               /* this service's outputs and requests */
    int *subscription_qos;              /* the QoS the descriptor declares for each */
    size_t subscription_count;
    char **sent_topics;                 /* copies of the topics last subscribed, grouped by QoS, for the SUBACKs */
    size_t sent_count;
    size_t sent_first[SVC_QOS_COUNT + 1]; /* sent_topics[sent_first[q] .. sent_first[q + 1]) went at QoS q */

    /* the latest retained messages, and whether they arrived since the last subscription */
    uint8_t *pending_cert, *pending_descriptor;
    size_t pending_cert_len, pending_descriptor_len;
    bool have_cert, have_descriptor;
    bool ready;                         /* connected and the current retained pair verified */
    int subscribe_mid[SVC_QOS_COUNT];   /* the last SUBSCRIBE sent at each QoS; 0: none awaits its SUBACK */
    int subscribe_pending;              /* SUBACKs still awaited; subscribed once none is */
    bool subscribed;

    /* connection */
    struct mosquitto *mosq;
    svc_conn conn;
    bool started, stopped, connack_refused;
    int connack_reason;
    uint64_t next_attempt_ms;
    unsigned backoff_ms;                /* wait before the next attempt after a connection ends or fails */
    uint64_t connected_ms;              /* when the current connection's CONNACK accepted it; 0: none */

    /* receiving */
    idevs_service_dedupe *dedupe;
    svc_held *held;                     /* held_cap entries, grown on demand up to SVC_HELD_MAX */
    size_t held_count, held_cap, held_bytes; /* held_bytes counts envelopes, correlation data and topics */

    /* publications awaiting their PUBACK (kept only with an on_published callback), and refusals not yet
     * reported by flush() */
    idevs_service_on_published on_published;
    void *on_published_arg;
    svc_outstanding *outstanding;
    size_t outstanding_count, outstanding_cap;
    uint64_t refused_unreported;
    char last_refusal[128];

    /* a failure to report from the next run() (verification of an update) and the last sentence */
    idevs_err failure;
    char why[SVC_WHY_MAX];

    /* the outbox (outbox.c): what was sent and is not receipted yet */
    char *outbox_path;
    sqlite3 *outbox_db;
    uint8_t outbox_stream[IDEVS_MSGID_STREAM_LEN];
    svc_outbox_entry outbox[SVC_OUTBOX_INFLIGHT]; /* by number */
    size_t outbox_count;
    uint64_t outbox_loaded;             /* the highest number taken into the in-flight set */
    idevs_service_on_receipt on_receipt;
    void *on_receipt_arg;
    /* receipts this service owes the process, sent at the end of a run() */
    idevs_msgid receipt_ids[IDEVS_RECEIPT_IDS_MAX];
    size_t receipt_count;
    unsigned seen_since_prune;

    idevs_service_stats stats;
};

/* service.c */
uint64_t svc_now_ms(void);
void svc_set_why(idevs_service *svc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Subscribes, one SUBSCRIBE per QoS in use: on a new connection (already NULL) to the retained certificate and
 * descriptor (QoS 1) and every topic of svc->subscriptions at its declared QoS; after a redeployment only to
 * its topics not in already at the same QoS (already_qos: the QoS each was subscribed at). */
idevs_err svc_subscribe(idevs_service *svc, char *const *already, const int *already_qos, size_t already_count);
void svc_topics_free(char **topics, size_t count);

/* verify.c */
/* Policy settings of the configuration, with "program", "descriptor" and "descriptor-digest" kept aside. */
idevs_err svc_policy_setup(idevs_service *svc, const char *const *settings, char *why, size_t why_len);
/* A retained message on the certificate or descriptor topic. */
void svc_on_retained(idevs_service *svc, bool certificate, const uint8_t *data, size_t len);
/* An instance's retained certificate (a process run as a pool, docs/SCALING.md): once the process is verified, its
 * chain is added as another certificate of the process's keys when it verifies under the same policy, so that
 * envelopes of an instance whose epoch began before this service came open too. Anything else is ignored. */
void svc_on_instance_certificate(idevs_service *svc, const uint8_t *data, size_t len);
/* Verifies the latest certificate and descriptor when both arrived; installs them on success, sets
 * svc->failure and svc->why otherwise. */
void svc_try_verify(idevs_service *svc);
void svc_verified_free(idevs_service *svc);

/* messages.c */
/* An envelope on one of this service's topics: held until the compartment is verified and the start has
 * completed, then opened, deduplicated and handed to on_message. */
void svc_receive(idevs_service *svc, const char *topic, const uint8_t *data, size_t len,
                 const uint8_t *correlation, size_t correlation_len);
/* Opens the envelopes held while the compartment was not verified yet; nothing before the start completed. */
void svc_release_held(idevs_service *svc);
void svc_held_free(idevs_service *svc);
/* An input's partition (docs/PROTOCOL.md 8.5), or none. */
#define SVC_NO_PARTITION (-1)
/* Seal and publish, with the outbox's numbered id: an input by its name, with its partition (or SVC_NO_PARTITION);
 * an answer on its response topic, naming its request. IDEVS_ERR_NOT_NOW while disconnected. */
idevs_err svc_send_input(idevs_service *svc, const char *input, int32_t partition, const void *payload, size_t len,
                         const idevs_msgid *id);
idevs_err svc_send_answer(idevs_service *svc, const char *response_topic, const idevs_msgid *request,
                          const uint8_t *corr, size_t corr_len, const void *payload, size_t len, const idevs_msgid *id);

/* outbox.c */
/* Opens (path) or makes (in memory when path is NULL) the outbox and its stream. */
idevs_err svc_outbox_open(idevs_service *svc, const char *path, char *why, size_t why_len);
void svc_outbox_close(idevs_service *svc);
/* Adds a message (kind 0: an input named target, with its partition or SVC_NO_PARTITION; 1: an answer on response
 * topic target to request, with corr) and sends it when the window allows. With a key already in the outbox, adds
 * nothing: *id is the one it has, and on_receipt runs at once when it was receipted. */
idevs_err svc_outbox_add(idevs_service *svc, int kind, const char *target, const char *key, int32_t partition,
                         const void *payload, size_t len, const idevs_msgid *request, const uint8_t *corr,
                         size_t corr_len, idevs_msgid *id);
/* Sends what is due: new messages inside the window, copies of those not receipted in time. */
void svc_outbox_pump(idevs_service *svc);
/* After a new connection and verification: everything in flight goes again now. */
void svc_outbox_resend_all(idevs_service *svc);
/* A receipt's opened payload. */
void svc_outbox_receipt(idevs_service *svc, const uint8_t *payload, size_t len);
size_t svc_outbox_unreceipted(const idevs_service *svc);
/* Whether this service handled the output or request id before (the dedupe window, then the outbox file). */
bool svc_seen_before(idevs_service *svc, const idevs_msgid *id);
/* Notes it is being handled, in the window in memory only: a copy that arrives while on_message runs is not run. */
void svc_seen_remember(idevs_service *svc, const idevs_msgid *id);
/* Notes it handled: in the window and the file (the last SVC_SEEN_KEEP_TEXT kept), once on_message returned (an
 * answer notes its request in the file with itself, svc_outbox_add). */
void svc_seen_note(idevs_service *svc, const idevs_msgid *id);
/* A receipt owed for id; svc_receipts_flush() sends them, at most 1024 in one. */
void svc_receipt_note(idevs_service *svc, const idevs_msgid *id);
void svc_receipts_flush(idevs_service *svc);
/* messages.c: seals a receipt payload to the process on this service's receipt topic. */
idevs_err svc_send_receipt(idevs_service *svc, const uint8_t *payload, size_t len);

/* puback.c */
/* Remembers that packet mid carries envelope id, for the on_published callback (nothing without one). */
idevs_err svc_outstanding_add(idevs_service *svc, int mid, const idevs_msgid *id);
/* A PUBACK (or PUBREC) for packet mid: counted as acknowledged or refused, and told to on_published. */
void svc_on_publish_ack(idevs_service *svc, int mid, int reason_code);
void svc_outstanding_free(idevs_service *svc);

#endif
