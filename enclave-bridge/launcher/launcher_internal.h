/* Shared inside the launcher only. One file per concern:
 *   image.c           sealed memfd copies and the measurement rule
 *   spawn.c           fork/exec of the compartment
 *   sealing.c         the state directory: sealing secret, sealing key, sealed key blobs
 *   backend.c         the backend interface's dispatch
 *   backend_process.c the process backend
 *   deliveries.c      the delivery queue and the publications held back until Done
 *   replay_record.c   the replay record that outlives compartments and brokers
 *   authority.c       reading the attestation authority and the operator CA
 *   topics.c          what a topic is for the process; conflicts between processes of one broker
 *   gate.c            the keyless checks of an envelope before it is queued
 *   shares.c          how much of the queue one client and one declared sender may hold
 *   retransmits.c     which client delivered which envelope, to tell its retransmissions from replays
 *   certify.c         Init, CertifyRequest -> Certified, Ready
 *   supervise.c       frames, exits, kills, restarts, timers, poll
 *   pool.c            which instance of the pool takes a delivery
 *   join.c            joining another host's process: requests, checks, grants (docs/SCALING.md)
 *   launcher.c        configuration, start, stop, deliver, stats */
#ifndef IDEVS_LAUNCHER_INTERNAL_H
#define IDEVS_LAUNCHER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "bridge.pb-c.h"
#include "idevs_replay.h"
#include "idevs_backend.h"
#include "idevs_channel.h"
#include "idevs_receipt.h"
#include "idevs_deployment.h"
#include "idevs_handled.h"
#include "idevs_launcher.h"

#define IDEVS_SEALING_SECRET_LEN 32
#define IDEVS_SEALED_BLOB_MAX (64u * 1024u)    /* a compartment's sealed keys */
#define LAUNCHER_PUBLISH_MAX 1024               /* publications held back for one delivery */
#define LAUNCHER_HELD_BYTES_MAX (64u * 1024u * 1024u) /* bytes of publications held back in all */
/* The default bound on the queue's envelope bytes: queue_depth envelopes of max_payload, at most this much (but
 * always one envelope of max_payload). */
#define LAUNCHER_QUEUE_BYTES_DEFAULT_MAX (64u * 1024u * 1024u)
#define LAUNCHER_CORRELATION_MAX 65535          /* MQTT correlation data */
_Static_assert(IDEVS_REQUEST_CORRELATION_LEN <= LAUNCHER_CORRELATION_MAX, "a request's fits MQTT's");
#define LAUNCHER_REASON_MAX 200                 /* characters of a compartment's Fatal reason kept */
#define LAUNCHER_RECEIPT_QOS 1u /* receipts: at least once, like inputs */
#define LAUNCHER_REPLAY_SAVE_MS 2000            /* the replay record is written at most this often while running */
#define LAUNCHER_TIMEOUT_BYTES_PER_MS 4096      /* a delivery's envelope adds 1 ms per this many bytes to the event timeout */

/* ---- backends ---- */

struct idevs_backend_impl {
    const idevs_backend_ops *ops;
    void *state;
};

idevs_backend_impl *launcher_backend_wrap(const idevs_backend_ops *ops, void *state);
/* The secret the replay record's key derives from: the backend's state_secret, or sealing.key of the state
 * directory (a backend without one, or no backend yet). */
/* The backend's rollback counter (see idevs_backend_ops); *has false (and IDEVS_OK) when it keeps none. */
idevs_err launcher_rollback_counter(idevs_launcher *l, uint64_t advance_to, bool *has, uint64_t *value,
                                    bool *created, char *why, size_t why_len);
idevs_err launcher_state_secret(idevs_launcher *l, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                                size_t why_len);

/* image.c: copies path into a sealed memfd (F_SEAL_WRITE|GROW|SHRINK|SEAL) and hashes the memfd. */
idevs_err launcher_seal_file(const char *path, const char *label, bool executable, int *fd,
                             uint8_t digest[IDEVS_SHA256_LEN], char *why, size_t why_len);

/* spawn.c */
typedef struct launcher_spawn_spec {
    int host_fd;
    int logic_fd;
    bool drop;
    uid_t uid;
    gid_t gid;
    const char *argv0;
} launcher_spawn_spec;

idevs_err launcher_spawn(const launcher_spawn_spec *spec, idevs_child *out, char *why, size_t why_len);

/* sealing.c */
idevs_err launcher_state_dir_open(const char *path, int *dirfd, char *why, size_t why_len);
/* The sealing secret of the state directory dirfd; made (random, 0600) when there is none and create is set. */
idevs_err launcher_sealing_secret(int dirfd, bool create, uint8_t secret[IDEVS_SEALING_SECRET_LEN], char *why,
                                 size_t why_len);
idevs_err launcher_sealing_key(const uint8_t secret[IDEVS_SEALING_SECRET_LEN],
                               const uint8_t measurement[IDEVS_SHA256_LEN], uint8_t key[IDEVS_SEALING_KEY_LEN]);
idevs_err launcher_blob_read(int dirfd, const idevs_uuid *program, uint8_t **blob, size_t *len, char *why,
                             size_t why_len);
idevs_err launcher_blob_write(int dirfd, const idevs_uuid *program, const uint8_t *blob, size_t len, char *why,
                              size_t why_len);
/* Any private state file (a regular file of ours, mode 0600, min..max bytes); *data is NULL when it does not
 * exist. */
idevs_err launcher_state_read(int dirfd, const char *name, size_t min, size_t max, uint8_t **data, size_t *len,
                              char *why, size_t why_len);
/* Replaces name atomically: temporary file 0600, fsync, rename, fsync of the directory. On IDEVS_ERR_IO errno
 * says why (EROFS, EACCES, ENOSPC, ...). */
idevs_err launcher_state_write(int dirfd, const char *name, const uint8_t *data, size_t len, char *why,
                               size_t why_len);


/* ---- deliveries ---- */

typedef struct held_publish {
    struct held_publish *next;
    idevs_launcher_publish p; /* topic, envelope, response topic and correlation owned (malloc'd) */
    bool kept;                /* in the outbox already (written before the record that releases it) */
    uint8_t cert_digest[IDEVS_SHA256_LEN]; /* of the certificate its instance sealed it under (the outbox's) */
} held_publish;

typedef struct delivery {
    struct delivery *prev, *next;
    struct launcher_instance *at; /* the instance whose queue holds it; NULL off every queue */
    uint64_t id;
    char *topic;
    uint8_t *envelope;
    size_t envelope_len;
    uint8_t *correlation;
    size_t correlation_len;
    bool sent;         /* sent to the current compartment */
    bool response;     /* on a declared response topic: sent even while inputs are held */
    bool held_back;    /* the compartment answered Held: it waits, in order, at the head of the unsent ones */
    unsigned sends;    /* Deliver frames sent for it, over all compartments */
    unsigned attempts; /* compartments that died while this was the oldest unfinished delivery */
    held_publish *held, *held_tail;
    size_t held_count, held_bytes;
    /* Its clear header, when it names a declared sender: what the replay record notes once it is done. */
    bool tracked;
    size_t sender;     /* index into the descriptor's services */
    uint32_t instance; /* the sender's instance (docs/PROTOCOL.md section 5a) */
    uint64_t epoch, sequence;
    idevs_msgid message_id;
    bool receipt;      /* a service's receipt: its id is no numbered message of the service's outbox */
    idevs_err refused; /* on the refused list: the status its on_done will carry */
    idevs_err done_status; /* on the awaiting list: the status of its Done */
    uint32_t refusal;      /* from its Done: 0, or 1 + the declared refusal code the logic refused it with */
    struct share_client *share_client; /* the client whose share it counts in (shares.c); NULL: none */
    bool share_sender;                 /* it counts in its sender's share */
    bool share_copy;                   /* it is in the index of queued clear headers */
    bool share_id;                     /* it is in the index by message id */
} delivery;

/* ---- the outbox (outbox.c) ---- */

typedef struct outbox_entry {
    idevs_msgid id;
    size_t service;      /* its receiver, whose receipt ends it */
    int64_t created_ms;  /* wall clock */
    int64_t next_ms;     /* monotonic: when it goes again */
    unsigned attempts;
} outbox_entry;

typedef struct outbox {
    int dirfd;           /* <state_dir>/outbox; -1 until loaded */
    outbox_entry *entries;
    size_t count, cap;
    int64_t next_due_ms; /* the earliest next_ms: the polls before it scan nothing */
    bool write_failing;  /* warned once */
    int64_t expired_warned_ms;
} outbox;
/* ---- queue shares (shares.c) ---- */

typedef struct share_client share_client;

/* Open addressing by a keyed hash; cap a power of two, or 0. */
typedef struct slot_table {
    void **slot;
    size_t cap, used;
} slot_table;

typedef struct queue_shares {
    size_t client_limit, sender_limit;             /* deliveries */
    size_t client_bytes_limit, sender_bytes_limit; /* envelope bytes */
    slot_table clients;   /* share_client, by client id */
    slot_table copies;    /* the tracked deliveries not yet forgotten, by (sender, instance, epoch, sequence) */
    slot_table ids;       /* with several instances, the same by (sender, message id): where a copy goes (pool.c) */
    size_t *senders;      /* deliveries counted per declared service, in the descriptor's order */
    size_t *sender_bytes; /* and their envelope bytes */
    uint64_t seed;
} queue_shares;

/* ---- the replay record (replay_record.c) ---- */

typedef struct replay_epoch {
    bool used;
    uint64_t epoch;
    idevs_replay window;
} replay_epoch;

/* One per instance of a sender: its two highest epochs in which a delivery was done after being opened. */
typedef struct replay_instance {
    uint32_t instance;
    replay_epoch cur, prev; /* cur is used in every kept instance */
} replay_instance;

/* One per declared service: its instances (at most IDEVS_INSTANCES_MAX, the rule in idevs_replay.h), and the
 * numbered message ids it handled, across its instances (docs/PROTOCOL.md section 9, idevs_handled.h). */
typedef struct replay_sender {
    replay_instance instances[IDEVS_INSTANCES_MAX]; /* instance_count of them, in no order */
    size_t instance_count;
    uint64_t instance_floor; /* an instance kept nothing of is refused at or below it: the newest epoch evicted */
    idevs_handled handled;
} replay_sender;

typedef struct replay_record {
    replay_sender *senders; /* service_count entries, in the descriptor's order */
    uint8_t key[IDEVS_SHA256_LEN]; /* authenticates the file; derived from the sealing key */
    bool loaded;            /* read (or found absent) at the first start; never written before */
    bool dirty;             /* changed since it was last written */
    bool unsynced;          /* written since the last fdatasync: in the kernel, not yet known to be on disk */
    int fd;                 /* the file, open for writing in place; -1 until the first write (or after a failure) */
    uint64_t generation;    /* of the newest slot written or read */
    int newest_slot;        /* the slot that holds it (0 before any): the next write goes to the other */
    bool replace;           /* the file was unusable: the next write makes a fresh one, both slots empty */
    bool save_failing;      /* the last write failed (warned once) */
    int64_t next_save_ms;
    uint64_t saves;
    /* With a backend's rollback counter: the value the records carry (the counter's, plus one until the next
     * sync advances the counter to it); 0 without. */
    uint64_t counter;
    bool counter_failing;   /* advancing the counter failed (warned once) */
} replay_record;

/* ---- the launcher ---- */

typedef struct service_chain {
    char name[IDEVS_NAME_MAX + 1];
    idevs_der_chain chain;
} service_chain;

/* One compartment of the process's pool: its child, channel and state, its queue, and its certificate. Every
 * instance runs the same measured image with the same keys; each has its own evidence (docs/SCALING.md). */
typedef struct launcher_instance {
    struct idevs_launcher *l;
    uint32_t index;         /* 0 .. instance_count - 1: its place in the pool */
    uint32_t number;        /* cfg.instance_base + index: its envelope instance (docs/PROTOCOL.md 5a) */
    bool timer_on;          /* what its compartment was last told: it runs the logic's timer (Init, TimerRole) */
    idevs_launcher_state state;
    idevs_child child;
    bool have_child;
    idevs_channel ch;
    bool have_channel;
    bool blob_sent;         /* Init carried sealed keys */
    bool kill_sent;
    bool killed_by_us;
    bool abnormal;          /* the exit was not asked for */
    idevs_err exit_err;     /* why deliveries of the dead compartment failed, for giving up */
    char exit_note[512];    /* what the compartment said (Fatal) or why it was killed */
    int64_t spawn_us;
    int64_t start_deadline_ms;
    int64_t exit_deadline_ms;
    int64_t restart_at_ms;
    int64_t ready_at_ms;
    int64_t progress_ms;    /* last Done, or when the oldest in-flight delivery was sent */
    unsigned backoff_ms;
    uint32_t epoll_channel_events;
    uint64_t channel_moved; /* the channel's byte counter when last seen: a change is progress */

    /* its deliveries, oldest first; the sent ones form a prefix */
    delivery *head, *tail, *next_send;
    size_t count, in_flight;
    /* Held, no Resumed yet: the compartment's table of outstanding requests is full; only responses are sent,
     * each moved ahead of the waiting inputs (supervise_send_queued) */
    bool inputs_held;

    /* the last certificate issued to it */
    idevs_der_chain chain; /* the compartment's leaf and the authority's certificate */
    uint8_t cert_digest[IDEVS_SHA256_LEN]; /* SHA-256 of chain.der[0] (the outbox's copies name it); zeros without */
    uint8_t certified_sign_pub[IDEVS_ED25519_PUB_LEN], certified_kex_pub[IDEVS_X25519_LEN]; /* its keys */
    time_t cert_not_before;  /* its notBefore: a renewal keeps it */
    time_t renew_at;         /* wall-clock second its renewal is due; 0: none (no compartment certified) */
    int64_t renew_check_ms;  /* monotonic: when the wall clock is looked at again for it */
    int64_t certificate_not_after;
    /* Joining (join.c): the certificate of its temporary keys (published in JoinRequests, never as the process's;
     * certified_*_pub are those keys meanwhile) and when it is certified anew for fresh evidence (monotonic). */
    idevs_der_chain join_chain;
    int64_t join_renew_ms;
} launcher_instance;

struct idevs_launcher {
    idevs_launcher_config cfg; /* the caller's strings are not kept: see the copies below */
    char name[IDEVS_NAME_MAX + 1];
    idevs_uuid program;
    char program_str[IDEVS_UUID_STR_LEN];
    char *descriptor_path;   /* as configured */
    char *host_program_path; /* as configured, for messages */
    char *certificate_topic; /* idevs/<process>/certificate */
    char *descriptor_topic;  /* idevs/<process>/descriptor */
    char **instance_topics;  /* idevs/<process>/instance/<n>/certificate, one per instance */
    char *instance_filter;   /* idevs/<process>/instance/+/certificate: any broker's instances */
    idevs_deployment *deployment;
    uint8_t *descriptor;
    size_t descriptor_len;
    uint8_t *operator_ca_der;
    size_t operator_ca_len;
    service_chain *services;
    size_t service_count;
    const idevs_identity *authority;
    X509 *authority_cert;
    uint8_t *authority_der;
    size_t authority_der_len;
    idevs_backend_impl *backend;
    idevs_image image;
    int state_dirfd;
    size_t max_envelope;
    size_t queue_limit;
    /* Envelope bytes of the deliveries accepted and not done (refused ones until reported) and their bound:
     * count and bytes both bound what a flood of envelopes that pass the keyless gate can take. */
    size_t queue_bytes, queue_bytes_limit;
    unsigned event_timeout_ms;

    /* the compartments: process.instances of them (docs/SCALING.md), each with its own queue */
    launcher_instance *instances;
    size_t instance_count;
    bool started;           /* idevs_launcher_start() succeeded once and stop() has not run since */
    launcher_instance *blocking_start; /* the instance idevs_launcher_start() is starting: no automatic restart
                                        * for it (one started before it restarts as usual) */
    bool stopping;          /* idevs_launcher_stop() is running: an exit is planned */
    int64_t timer_warned_ms; /* the last warning about a dropped timer run */
    size_t count;           /* deliveries queued over all instances (not refused ones) */
    struct pool_route *routes; /* pool.c: requests and the instance that made them; NULL until one */
    launcher_instance *timer_holder; /* the instance whose timer runs count (pool.c); NULL: none ready */
    /* Several brokers (docs/SCALING.md): the partitions this broker routes, a bit each (NULL: all), and whether it
     * runs the logic's timer (it owns partition 0). */
    uint8_t *owned;
    bool runs_timer;

    int epfd;
    int timerfd;
    int64_t timer_armed_ms;

    /* taken off the queue before a send because the replay record refuses them; reported by the next poll */
    delivery *refused_head, *refused_tail;
    size_t refused_count;
    /* Done, with outputs that wait until the replay record covering their inputs is on disk; released, in
     * order, by the same pass of supervise_step that read their Done (so empty between passes) */
    delivery *awaiting_head, *awaiting_tail;
    replay_record replay;
    outbox outbox;
    struct retransmits *retransmits; /* allocated at the first delivery with a client id */
    queue_shares shares;
    uint64_t next_id;
    size_t held_bytes;

    idevs_launcher_stats stats;

    /* joining (join.c) */
    char *join_request_topic; /* idevs/<process>/join/request */
    char *join_grant_prefix;  /* idevs/<process>/join/grant/ */
    bool joining;             /* an instance is certified for temporary keys and none holds the process's */
    bool join_others;         /* the other instances start once the joiner holds the keys */
    int64_t join_check_ms;    /* monotonic: when a JoinCheck was sent whose answer is not read yet; 0: none */
    int64_t join_next_ms;     /* monotonic: the next JoinRequest */
    unsigned join_backoff_ms;
};

/* time */
int64_t launcher_now_ms(void);
int64_t launcher_now_us(void);

/* launcher.c: an event for the operator's log, "compartment 'NAME' (program UUID) ..." */
void launcher_event(idevs_launcher *l, idevs_launcher_event event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* deliveries.c */
delivery *deliveries_find_sent(launcher_instance *c, uint64_t id);
void deliveries_append(launcher_instance *c, delivery *d);
void deliveries_unlink(delivery *d);
/* Frees a delivery that was accepted (queued or refused) and takes its envelope off the queue's bytes. */
void deliveries_forget(idevs_launcher *l, delivery *d);
void delivery_free(delivery *d);
void delivery_drop_held(idevs_launcher *l, delivery *d);
idevs_err delivery_hold(idevs_launcher *l, delivery *d, const Idevs__Bridge__V1__Publish *p);
/* The compartment held d (sent, nothing published): unsent again, after the deliveries held before it and before
 * every other unsent one, so that it is sent again first and inputs keep their order. */
void deliveries_hold_back(delivery *d);
/* The first unsent response after next_send (an input), moved in front of it; NULL if there is none. */
delivery *deliveries_response_first(launcher_instance *c);
/* Marks every delivery of c unsent (its compartment died) and discards what it had published. */
void deliveries_rewind(launcher_instance *c);
/* Frees every delivery, refused and awaiting ones included; returns how many there were. */
size_t deliveries_clear(idevs_launcher *l);
/* Moves d (unlinked, not sent) to the refused list, to be ended with status by the next poll. */
void deliveries_refuse(idevs_launcher *l, delivery *d, idevs_err status);
/* Ends the refused deliveries (on_done); returns how many. */
int deliveries_report_refused(idevs_launcher *l, const idevs_launcher_callbacks *cb);
/* Appends d (unlinked, done with status) to the awaiting list, its held publications with it. */
void deliveries_await(idevs_launcher *l, delivery *d, idevs_err status);

/* outbox.c: outputs and requests kept in state_dir until their receiver's receipt (docs/PROTOCOL.md 9) */
#define LAUNCHER_OUTBOX_MAX 65536u               /* kept at most; beyond, published without being kept (counted) */
#define LAUNCHER_OUTBOX_EXPIRE_MS (65 * 60 * 1000) /* a receiver refuses an epoch older than this anyway */
#define LAUNCHER_OUTBOX_RESENDS_PER_POLL 256
/* Reads what a former run kept (sent again at the next poll); called at the first start. */
void outbox_load(idevs_launcher *l);
/* Takes the kept outputs of another launcher of this program, from its state directory: each one this outbox
 * lacks is copied into it and published again from here until its receipt (*taken of them). */
idevs_err outbox_adopt(idevs_launcher *l, int state_dirfd, size_t *taken, char *why, size_t why_len);
void outbox_free(idevs_launcher *l);
/* Keeps a publication about to be released, when its QoS asks for delivery (1, 2) and it is no receipt. */
void outbox_keep(idevs_launcher *l, const idevs_launcher_publish *p, const uint8_t cert_digest[IDEVS_SHA256_LEN]);
/* A service's receipt, opened by the compartment. */
void outbox_receipted(idevs_launcher *l, const Idevs__Bridge__V1__Receipted *r);
/* Publishes again what is due, through cb; forgets what is older than LAUNCHER_OUTBOX_EXPIRE_MS. */
void outbox_resend(idevs_launcher *l, const idevs_launcher_callbacks *cb);
/* Whether p is a publication this process may make (the Publish frames' check, supervise.c). */
/* instance: the publishing instance's number, whose envelopes must say it; -1: any (a kept copy). */
const char *supervise_publish_problem(const idevs_launcher *l, const Idevs__Bridge__V1__Publish *p,
                                      int64_t instance);

/* replay_record.c */
idevs_err replay_record_init(idevs_launcher *l);
void replay_record_free(idevs_launcher *l);
/* At the first start: derives the file's key and reads the file. A missing, damaged or foreign file leaves the
 * record empty (with an event); only a sealing key that cannot be had fails. */
idevs_err replay_record_load(idevs_launcher *l, char *why, size_t why_len);
/* The size of each of the record file's two slots for a descriptor of this many services: room for every
 * instance of every one of them. */
size_t replay_record_slot_bytes(size_t services);
/* gate.c: the keyless checks of idevs_launcher_deliver() (its comment lists them); on IDEVS_OK d's tracking
 * fields hold the sender (an index into the descriptor's services), epoch and sequence of the clear header. */
idevs_err gate_check(const idevs_launcher *l, const char *topic, const uint8_t *envelope, size_t len, delivery *d);

/* shares.c (its top comment gives the rule) */
idevs_err shares_init(idevs_launcher *l); /* after queue_limit is known */
void shares_free(idevs_launcher *l);
/* IDEVS_OK, or why a delivery of len bytes from client (NULL: none, bound by the total only) with probe's sender
 * may not be queued now: IDEVS_ERR_QUEUE_CLIENT_SHARE, IDEVS_ERR_QUEUE_SENDER_SHARE. Changes nothing. */
idevs_err shares_admit(const idevs_launcher *l, const char *client, const delivery *probe, size_t len);
/* A delivery not yet forgotten (queued, in flight, refused or awaiting its end) with probe's clear header and
 * exactly these bytes. */
bool shares_queued_copy(const idevs_launcher *l, const delivery *probe, const uint8_t *envelope, size_t len);
/* A delivery on an instance's queue (queued or in flight) whose sender and message id are probe's; NULL when none
 * (kept only with several instances). */
const delivery *shares_queued_id(const idevs_launcher *l, const delivery *probe);
/* Counts d (accepted, tracking fields set, its envelope len bytes) in its client's and sender's shares and indexes
 * its clear header; false when out of memory (then nothing changed). */
bool shares_take(idevs_launcher *l, const char *client, delivery *d, size_t len);
/* Takes d out of the shares it counts in (deliveries_forget). */
void shares_give_back(idevs_launcher *l, delivery *d);
/* Forgets every count (deliveries_clear). */
void shares_clear(idevs_launcher *l);

/* retransmits.c: who delivered the last LAUNCHER_RETRANSMIT_SLOTS tracked envelopes (a table indexed by sender,
 * epoch and sequence; a later one in the same slot replaces an earlier one). client is a client id's hash, never
 * 0 (retransmits_client). */
#define LAUNCHER_RETRANSMIT_SLOTS 4096u
uint64_t retransmits_client(const char *client_id); /* 0 for NULL */
/* Notes that client delivered d (tracked); false when out of memory (then nothing is noted). */
bool retransmits_note(idevs_launcher *l, const delivery *d, uint64_t client);
/* True when client delivered the envelope with d's sender, instance, epoch and sequence (still noted). */
bool retransmits_by(const idevs_launcher *l, const delivery *d, uint64_t client);
void retransmits_free(idevs_launcher *l);

/* topics.c */
idevs_err topics_init(idevs_launcher *l, char *why, size_t why_len);
void topics_free(idevs_launcher *l);
/* What comes in on topic: IDEVS_TOPIC_INPUT (an input's topic, written by the input's sender) or
 * IDEVS_TOPIC_RESPONSE (a request's response topic, written by the service the request went to), with the
 * descriptor's copy of the topic in *own_copy and that service's index in *sender; IDEVS_TOPIC_OTHER otherwise. */
idevs_topic_kind topics_incoming(const idevs_deployment *d, const char *topic, const char **own_copy, size_t *sender);
/* The index of the service whose receipt topic this is; SIZE_MAX when none. */
size_t topics_receipt_service(const idevs_deployment *d, const char *topic);
/* IDEVS_OK, or why d must not be delivered: IDEVS_ERR_REPLAY (done already), IDEVS_ERR_OUTSIDE_WINDOW,
 * IDEVS_ERR_EPOCH_FORGOTTEN (older than both epochs kept of its instance, or, for an instance the record keeps
 * nothing of, at or below its sender's instance floor). Changes nothing. */
idevs_err replay_record_check(const idevs_launcher *l, const delivery *d);
/* Whether d's message id is one the record notes as handled (a sender's retransmission): IDEVS_OK with
 * *handled, or IDEVS_ERR_OUTSIDE_WINDOW when its number lies below the window of its stream (the sender broke the
 * bound on what it keeps unreceipted: whether it was handled cannot be told). Changes nothing. */
idevs_err replay_record_handled(const idevs_launcher *l, const delivery *d, bool *handled);
/* The compartment ended d with status: notes it when status proves d was opened (authenticated); true when it
 * did (the record changed and must be written before d's outputs leave). */
bool replay_record_done(idevs_launcher *l, const delivery *d, idevs_err status);
/* When the record is written:
 *   REPLAY_SAVE_DUE      what changed or was not synced yet, written and synced once LAUNCHER_REPLAY_SAVE_MS
 *                        have passed since the last sync or the first write after it;
 *   REPLAY_SAVE_RELEASE  what changed, now, in place (pwrite, no fdatasync): before outputs leave, so that a crash
 *                        of the broker cannot forget their inputs (after a failed write, retried when DUE);
 *   REPLAY_SAVE_FINAL    everything, now, written and synced (stop).
 * True when the file covers everything done (written now, or nothing new). */
typedef enum replay_save { REPLAY_SAVE_DUE, REPLAY_SAVE_RELEASE, REPLAY_SAVE_FINAL } replay_save;
bool replay_record_save(idevs_launcher *l, replay_save when);
/* Merges the replay record of another launcher of this program, in the state directory dirfd (authenticated by
 * that directory's sealing secret), into this one and writes it: what either did is done for both. */
idevs_err replay_record_adopt(idevs_launcher *l, int dirfd, char *why, size_t why_len);
/* When the next write is due; -1 when none. */
int64_t replay_record_deadline(const idevs_launcher *l);

/* certify.c */
typedef struct certify_secrets {
    uint8_t sealing_key[IDEVS_SEALING_KEY_LEN];
    uint8_t *blob; /* the sealed keys from the state directory; NULL on a first start */
    size_t blob_len;
} certify_secrets;

/* Before spawning: the sealing key and the sealed keys, so that a bad state directory starts nothing. */
idevs_err certify_prepare(idevs_launcher *l, certify_secrets *s, char *why, size_t why_len);
void certify_secrets_clear(certify_secrets *s);
idevs_err certify_send_init(launcher_instance *c, const certify_secrets *s, char *why, size_t why_len);
idevs_err certify_handle_request(launcher_instance *c, const Idevs__Bridge__V1__CertifyRequest *req, char *why,
                                 size_t why_len);
void certify_forget(launcher_instance *c);
/* Renews a running compartment's certificate when its renewal is due (renew_at, by the wall clock): new
 * evidence for the same keys, a certificate with the same notBefore and a later notAfter, sent to the
 * compartment in a Certified frame, then IDEVS_LAUNCHER_EVENT_RENEWED. A failure is told and tried again
 * after CERTIFY_RENEW_RETRY_S. 1 when it did something. */
int certify_renew_if_due(launcher_instance *c);
#define CERTIFY_RENEW_CHECK_MS 5000 /* the wall clock is looked at this often: it may jump (NTP, suspend) */
#define CERTIFY_RENEW_RETRY_S 60

/* certify.c: certifies a joining instance's temporary keys again (fresh evidence for its JoinRequests). */
idevs_err certify_join_renew(launcher_instance *c, char *why, size_t why_len);

/* join.c */
#define JOIN_RETRY_FIRST_MS 2000u   /* a JoinRequest again after this, doubling ... */
#define JOIN_RETRY_MAX_MS 30000u    /* ... up to this */
#define JOIN_CHECK_MS 10000         /* one JoinCheck at a time, unless its answer is this late (its instance died) */
#define JOIN_RENEW_MS (300 * 1000)  /* the temporary keys certified anew: a grantor wants evidence of 600 s at most */
idevs_err join_init(idevs_launcher *l); /* the topics */
void join_free(idevs_launcher *l);
/* c's CertifyRequest was for temporary keys (joining) or for the process's keys after a join. */
void join_began(launcher_instance *c, bool temporary);
/* The JoinRequests due and the renewals of temporary certificates; 1 when it did something. */
int join_step(idevs_launcher *l, const idevs_launcher_callbacks *cb);
int64_t join_deadline(const idevs_launcher *l);
void join_answer(launcher_instance *c, const Idevs__Bridge__V1__JoinAnswer *a, const idevs_launcher_callbacks *cb);
/* The joiner is ready with the process's keys: the other instances start (from the sealed blob it left). */
void join_done(launcher_instance *c);

/* supervise.c: one compartment (an instance), and the launcher's pass over all of them */
idevs_err supervise_send(launcher_instance *c, const Idevs__Bridge__V1__Frame *frame);
idevs_err supervise_flush(launcher_instance *c, int timeout_ms);
/* Spawns and sends Init; on failure why says why and nothing runs. */
idevs_err supervise_begin_start(launcher_instance *c, char *why, size_t why_len);
/* One round of non-blocking work over every instance; returns how many things happened. */
int supervise_step(idevs_launcher *l, const idevs_launcher_callbacks *cb);
/* Sends c's queued deliveries while the window allows. */
void supervise_send_queued(launcher_instance *c);
/* Waits for the launcher's fds up to wait_ms. */
void supervise_wait(idevs_launcher *l, int wait_ms);
void supervise_arm_timer(idevs_launcher *l);
int64_t supervise_next_deadline(const idevs_launcher *l);
/* Kills the compartment now (SIGKILL) and records why. */
void supervise_kill(launcher_instance *c, idevs_err err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The compartment is going away (Fatal, end of stream, Shutdown): SIGKILL after exit_grace_ms. */
void supervise_expect_exit(launcher_instance *c, idevs_err err, unsigned grace_ms);
/* Reaps if the child has exited; true when it was reaped (state changed). */
bool supervise_try_reap(launcher_instance *c, const idevs_launcher_callbacks *cb);
void supervise_close_channel(launcher_instance *c);
/* Watches the channel for writability while bytes wait to be written. */
void supervise_update_channel_events(launcher_instance *c);
/* The compartment's words for the log: printable ASCII only, at most LAUNCHER_REASON_MAX characters. */
void supervise_sanitize(char *out, size_t out_len, const char *in);
/* Whether c runs a compartment (starting, certifying or ready). */
bool supervise_live(const launcher_instance *c);

/* pool.c: which instance takes a delivery, and the launcher-wide state made of its instances' */
/* The instance a new delivery goes to: a response to its request's instance, a copy of a queued message to its
 * first's, an input with a partition to the partition's instance, anything else to the least loaded ready one. */
launcher_instance *pool_choose(idevs_launcher *l, const delivery *d, int64_t partition);
/* The partitions this broker owns (idevs_launcher_set_owned); whether it owns one. */
idevs_err pool_set_owned(idevs_launcher *l, const char *partitions, char *why, size_t why_len);
bool pool_owns(const idevs_launcher *l, uint32_t partition);
/* Notes that c published a request (its message id), for pool_choose. */
void pool_note_request(idevs_launcher *l, const launcher_instance *c, const uint8_t id[IDEVS_UUID_LEN]);
void pool_free(idevs_launcher *l);
/* A ready instance, the least loaded; NULL when none is ready. */
launcher_instance *pool_ready(idevs_launcher *l);
/* Gives the logic's timer to instance 0 when it is ready, else to the lowest-numbered ready instance, telling the
 * instances that lose or gain it (TimerRole). */
void pool_assign_timer(idevs_launcher *l);
/* Whether what c's timer emits counts now: its instance holds the timer. */
bool pool_timer_holder(const idevs_launcher *l, const launcher_instance *c);
/* The launcher's state as one: READY when an instance is; else the first instance's. */
idevs_launcher_state pool_state(const idevs_launcher *l);
bool pool_all_stopped(const idevs_launcher *l);
/* The instance whose chain stands for the process where one chain is asked for (the retained
 * idevs/<process>/certificate): the first that has one; NULL when none has. */
const launcher_instance *pool_chain_holder(const idevs_launcher *l);
/* "instance N: " before what the log says of one compartment of a pool; "" for a process of one. */
const char *pool_label(const launcher_instance *c);

#endif
