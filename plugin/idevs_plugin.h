/* Internal to mosquitto_idevs.so: the plugin's state and the functions its files share. Nothing here is
 * exported (the module is built with -fvisibility=hidden; only the three entry points in plugin.c are).
 *
 * The plugin is a thin MQTT adapter over the launcher (enclave-bridge/idevs_launcher.h), one launcher per
 * integration process: the launcher owns the deployment (descriptor, topics, the keyless gate, the replay
 * record, the compartment); the plugin turns broker events into launcher calls and launcher callbacks into
 * broker publications, counts and logs. One file per concern:
 *   plugin.c      entry points, the one-load rule, TICK
 *   config.c      plugin_opt_* lines; the attestation authority
 *   processes.c   the set of processes: start, conflicts, descriptor directory, retiring, stop
 *   routing.c     MESSAGE: envelopes to their process, outputs to the broker, poll budgets
 *   reload.c      RELOAD: descriptors added, removed, changed; retained topics republished
 *   guard.c       ACL_CHECK and the protected topics; the answer for the others
 *   acl_sources.c the broker's other ACL sources, from its configuration file
 *   rejections.c  counted, rate-limited log lines for refused envelopes
 *   metrics.c     $SYS counters per process and in total */
#ifndef IDEVS_PLUGIN_H
#define IDEVS_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include "idevs_launcher.h"

/* What the plugin_opt_* lines say (config.c). Strings are malloc'd copies. */
typedef enum idevs_acl_others {
    IDEVS_ACL_OTHERS_UNSET = 0, /* not given: the broker's configuration decides (guard.c) */
    IDEVS_ACL_OTHERS_ALLOW, /* topics the guard does not protect: allowed (idevs is the broker's only ACL source) */
    IDEVS_ACL_OTHERS_DEFER, /* ... left to the broker's other ACL sources (acl_file, another plugin) */
} idevs_acl_others;

/* The values of an option that may be given on several lines, in order. */
typedef struct idevs_text_list {
    char **items;
    size_t count;
} idevs_text_list;

typedef struct idevs_plugin_config {
    idevs_text_list descriptors; /* plugin_opt_descriptor lines, in order: one process each */
    char *descriptor_dir;    /* plugin_opt_descriptor_dir: every *.json in it is a process; rescanned on RELOAD */
    char *authority_key;
    char *authority_cert;
    char *operator_ca;
    char *state_dir;         /* each process keeps its state in <state_dir>/<process name>/ */
    char *compartment;
    unsigned start_timeout_ms;   /* default 5000 */
    unsigned poll_budget_ms;     /* per process and loop iteration: waiting for its outputs; default 2 */
    unsigned queue_bytes;        /* per process: envelope bytes queued at most; 0: the launcher's default */
    unsigned metrics_interval_s; /* 0: no $SYS counters; default 10 */
    unsigned log_interval_s;     /* at most one line per rejection reason and process per interval; default 10 */
    unsigned certificate_validity_s;    /* each compartment certificate's; 0: the launcher's (7 days) */
    unsigned certificate_renew_after_s; /* renewed this long after its issue; 0: two thirds of the validity */
    idevs_acl_others acl_others;
    /* Several brokers serving the same processes (docs/SCALING.md): */
    unsigned instance_base;      /* the first instance number of this broker's pools; default 0 */
    char *ownership;             /* a file: which partitions of each process this broker routes; read on RELOAD */
    idevs_text_list peer_users;  /* user names of peer brokers' bridges, which may publish a process's outputs */
    idevs_text_list peer_bridges;/* client ids of this broker's own bridges (local_clientid), likewise */
    idevs_text_list joins;       /* plugin_opt_join lines: processes that join a running one (docs/SCALING.md) */
    char *backend;               /* plugin_opt_backend: "process" (default) or "tpm" */
    char *tpm_tcti;              /* plugin_opt_tpm_tcti: required with backend tpm */
    unsigned tpm_pcr;            /* plugin_opt_tpm_pcr: the tpm backend's register, 8..15; default 15 */
} idevs_plugin_config;

/* Counters (metrics.c), per process. Only ever touched from the broker's thread. */
typedef struct idevs_metrics {
    uint64_t received;          /* client messages on a declared input or response topic */
    uint64_t routed;            /* of which accepted by the launcher; the rest is in rejected[] */
    uint64_t rejected[IDEVS_ERR_COUNT]; /* dropped envelopes by reason, by the launcher's gate or the compartment */
    uint64_t done_ok;           /* deliveries the compartment finished */
    uint64_t done_failed;       /* deliveries that ended in error (dropped envelope, logic error, given up) */
    uint64_t emitted;           /* outputs and requests handed to the broker */
    uint64_t receipts;          /* receipts handed to the broker */
    uint64_t receipts_in;       /* services' receipts the compartment took */
    uint64_t publish_failed;    /* publications the broker refused */
    uint64_t guard_denied;      /* client writes refused on protected topics */
    uint64_t from_peers;        /* peer brokers' publications on protected topics, let through (guard.c) */
    uint64_t restarts;          /* compartment certifications after the first */
    uint64_t certificate_renewals; /* certificates of a running compartment renewed and published */
    /* deliveries the logic refused with a declared code (idevs_refuse), by the code's index in the descriptor;
     * also counted in rejected[IDEVS_ERR_LOGIC] */
    uint64_t refused[IDEVS_LAUNCHER_REFUSALS_MAX];
} idevs_metrics;

/* Rejection log lines held back in the current interval, per reason (rejections.c). */
#define IDEVS_CLIENT_LOG_MAX 64 /* bytes of a client id in a log line */
typedef struct idevs_drop_log {
    uint64_t window_end_ms; /* monotonic; until then, lines for this reason are held back */
    uint64_t held;          /* lines held back in the current window */
    const char *last_topic; /* the last one held back: a topic of the descriptor, or NULL */
    char last_client[IDEVS_CLIENT_LOG_MAX + 1];
    size_t last_size;
} idevs_drop_log;

/* Who sent a delivery, for the log line if the compartment drops it. A ring indexed by delivery id. */
typedef struct idevs_delivery_note {
    uint64_t id; /* 0: unused */
    const char *topic;
    size_t size;
    char client[IDEVS_CLIENT_LOG_MAX + 1];
    bool refusal_logged; /* the logic refused it with a code: idevs_rejections_refusal logged it */
    bool receipt;        /* a service's receipt: counted apart from inputs and answers */
} idevs_delivery_note;

struct idevs_plugin;

/* One integration process: its launcher and what the plugin keeps about it. */
typedef struct idevs_process {
    struct idevs_plugin *plugin;
    idevs_launcher *launcher;
    char name[65];            /* the launcher's process name, for log lines */
    bool from_dir;            /* named by a file of plugin_opt_descriptor_dir: removed when the file goes */
    bool retiring;            /* removed by RELOAD: takes no new input, stops once its queue is empty */
    int64_t retire_deadline_ms;
    bool certificate_stale;   /* a (re)certification happened: publish the chain again */
    uint64_t certifications;
    int64_t budget_left_us;   /* of poll_budget_ms, in this loop iteration */
    bool warned_acl_order;    /* logged once: another ACL source granted a write on a protected topic */
    bool warned_instance_clash; /* a peer published on one of this broker's instance numbers (logged once) */
    char *adopt_at_start; /* the ownership file's "adopt DIR" read before the start, taken right after it */
    idevs_metrics metrics;
    idevs_drop_log drop_log[IDEVS_ERR_COUNT];
    idevs_drop_log guard_log; /* client writes refused on protected topics */
    idevs_drop_log refusal_log[IDEVS_LAUNCHER_REFUSALS_MAX]; /* per refusal code of the logic */
    const char *refusal_code[IDEVS_LAUNCHER_REFUSALS_MAX];   /* the launcher's copy, once one was counted */
    idevs_delivery_note *notes;
    size_t note_count;
} idevs_process;

typedef struct idevs_plugin {
    mosquitto_plugin_id_t *id;
    idevs_plugin_config cfg;
    idevs_launcher_authority authority;
    idevs_process **procs;
    size_t proc_count;
    time_t metrics_next; /* CLOCK_MONOTONIC seconds */
    int64_t loop_budget_left_us; /* of poll_budget_ms, for all processes together, in this loop iteration */
    bool acl_allow; /* the guard's answer for topics no process protects: allowed, or defer (guard.c) */
} idevs_plugin;

#define IDEVS_PLUGIN_LOG_PREFIX "idevs: "
#define IDEVS_PROCESSES_MAX 256 /* processes on one broker */

/* config.c: parses the options into cfg; loads the authority. On failure logs a line naming the option and the
 * problem and returns false. */
bool idevs_plugin_config_parse(idevs_plugin *p, const struct mosquitto_opt *options, int option_count);
bool idevs_plugin_config_load(idevs_plugin *p);
void idevs_plugin_config_free(idevs_plugin *p);

static inline const char *idevs_process_name(const idevs_process *proc)
{
    return proc->name;
}

/* processes.c */
/* Prepares every configured process, refuses conflicts (naming both files), starts them and publishes their
 * retained topics; logs why not. */
bool idevs_processes_start(idevs_plugin *p);
void idevs_processes_stop_all(idevs_plugin *p);
/* The descriptor files of plugin_opt_descriptor_dir, sorted (malloc'd paths); false when it cannot be read
 * (why says why). */
bool idevs_processes_scan_dir(const char *dir, char ***paths, size_t *count, char *why, size_t why_len);
void idevs_processes_free_paths(char **paths, size_t count);
/* Prepares, checks against the running processes, starts and adds one process; logs and returns NULL when it
 * cannot. */
idevs_process *idevs_processes_add(idevs_plugin *p, const char *descriptor, bool from_dir);
/* The process whose topic this is, what kind, and the launcher's copy of the topic (it outlives the message);
 * NULL (kind OTHER) when none. */
idevs_process *idevs_processes_find(const idevs_plugin *p, const char *topic, idevs_topic_kind *kind,
                                    const char **own_copy);
/* Starts retiring: no new input; stopped by idevs_processes_reap_retired() once drained. */
void idevs_processes_retire(idevs_process *proc);
/* Stops and removes retired processes whose queue is empty or whose drain time is up; clears their retained
 * certificate and descriptor. */
void idevs_processes_reap_retired(idevs_plugin *p);
/* Publishes the certificate chain, retained; leaves certificate_stale set when it cannot. */
void idevs_process_publish_certificate(idevs_process *proc);

/* routing.c */
int idevs_routing_on_message(int event, void *event_data, void *userdata);
/* Does the process's pending work without waiting, then, until delivery wait_for (0: none) is done, waits for
 * it for at most the process's budget left in this loop iteration. */
void idevs_routing_poll(idevs_process *proc, uint64_t wait_for);
/* Publishes a copy of payload; frees properties on failure. true on success. */
bool idevs_routing_publish(idevs_process *proc, const char *topic, const void *payload, size_t len, int qos,
                           bool retain, mosquitto_property *properties);

/* reload.c: MOSQ_EVT_RELOAD */
int idevs_reload_on_reload(int event, void *event_data, void *userdata);

/* ownership.c: reads plugin_opt_ownership's line for proc and gives it to its launcher; logs why not (an error
 * at start, a warning on reload, when what was in force stays). True without the option. */
bool idevs_ownership_apply(idevs_process *proc, bool reload);
/* Right after the process starts: takes what the ownership file's "adopt DIR" named (read by the apply before the
 * start); true when there was none or it worked, else logged. */
bool idevs_ownership_adopt_at_start(idevs_process *proc);

/* guard.c */
int idevs_guard_on_acl_check(int event, void *event_data, void *userdata);
/* Decides the answer for topics no process protects from the broker's ACL sources and plugin_opt_acl_others,
 * and logs it. At start, false (logged) when the option contradicts the broker's configuration; on RELOAD it
 * never fails, and never keeps "allowed" beside another source. */
bool idevs_guard_decide(idevs_plugin *p, bool reload);
/* A client's message on a protected topic reached MESSAGE: an ACL source before idevs granted it. Counts,
 * warns (once per process) and says to drop it. */
int idevs_guard_refuse_message(idevs_process *proc, const char *topic, const char *client, size_t size);
/* A peer broker's publication on proc's protected topic (its outputs, requests, instance certificates), which
 * passes the guard; never on the process's certificate or descriptor topic. */
bool idevs_guard_peer_may_publish(idevs_process *proc, const char *topic, struct mosquitto *client);
/* How the log names a join grant's topic, which has no copy that outlives the message. */
#define IDEVS_JOIN_GRANT_LOG "a join grant topic (idevs/<process>/join/grant/...)"

/* rejections.c */
bool idevs_rejections_init(idevs_process *proc, size_t queue_depth); /* logs why not */
void idevs_rejections_free(idevs_process *proc);
/* Remembers who sent delivery id, for idevs_rejections_done. topic must outlive it (the launcher's copy). */
void idevs_rejections_note(idevs_process *proc, uint64_t id, const char *topic, const char *client, size_t size);
/* Marks the noted delivery id as a service's receipt; whether one is (until its idevs_rejections_done). */
void idevs_rejections_note_receipt(idevs_process *proc, uint64_t id);
bool idevs_rejections_is_receipt(const idevs_process *proc, uint64_t id);
/* Counts an envelope refused before the compartment, and logs it (rate-limited). */
void idevs_rejections_refused(idevs_process *proc, idevs_err reason, const char *topic, const char *client,
                              size_t size);
/* on_done of a delivery: forgets its note; counts and logs a failure. */
void idevs_rejections_done(idevs_process *proc, uint64_t id, idevs_err status);
/* The logic refused delivery id with its descriptor's refusal code index (code: the launcher's copy; its
 * on_done follows): counts it under refused/<code> and logs it, rate-limited per code, with the topic and the
 * client, never a payload. */
void idevs_rejections_refusal(idevs_process *proc, uint64_t id, size_t index, const char *code);
/* A client's write refused by the guard: true when its log line is to be held back (rate limit, as for
 * rejections; summed up by idevs_rejections_flush). */
bool idevs_rejections_guard_hold(idevs_process *proc, const char *topic, const char *client, size_t size);
/* On TICK: one summary line per reason whose interval ended with lines held back. */
void idevs_rejections_flush(idevs_process *proc);
/* A client id made safe for a log line: cut at IDEVS_CLIENT_LOG_MAX bytes, non-printables as '?'. */
void idevs_rejections_copy_client(char dst[IDEVS_CLIENT_LOG_MAX + 1], const char *client);

/* metrics.c */
/* Publishes the counters as retained messages under $SYS/broker/idevs/<process>/ and their totals under
 * $SYS/broker/idevs/totals/ when they are due; now is CLOCK_MONOTONIC seconds. */
void idevs_metrics_tick(idevs_plugin *p, time_t now);
/* Clears a removed process's retained counters. */
void idevs_metrics_clear(idevs_process *proc);
#define IDEVS_METRICS_TOTALS "totals" /* a process may not have this name: its counters would mix with them */

#endif
