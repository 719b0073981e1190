/* Internal to mosquitto_idevs.so: the plugin's state and the functions its files share. Nothing here is
 * exported (the module is built with -fvisibility=hidden; only the three entry points in plugin.c are). */
#ifndef IDEVS_PLUGIN_H
#define IDEVS_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>

#include <openssl/x509.h>

#include "idevs_deployment.h"
#include "idevs_identity.h"
#include "idevs_launcher.h"

/* What the plugin_opt_* lines say (config.c). Strings are malloc'd copies. */
typedef enum idevs_acl_others {
    IDEVS_ACL_OTHERS_ALLOW = 0, /* topics the guard does not protect: allowed (idevs is the only ACL plugin) */
    IDEVS_ACL_OTHERS_DEFER,     /* ... deferred to the plugins loaded after this one */
} idevs_acl_others;

typedef struct idevs_plugin_config {
    char *descriptor;
    char *authority_key;
    char *authority_cert;
    char *operator_ca;
    char *state_dir;
    char *compartment;
    unsigned start_timeout_ms;   /* default 5000 */
    unsigned poll_budget_ms;     /* how long a MESSAGE callback waits for the compartment's outputs; default 2 */
    unsigned metrics_interval_s; /* 0: no $SYS counters; default 10 */
    unsigned log_interval_s;     /* at most one line per rejection reason per interval; default 10 */
    idevs_acl_others acl_others;
} idevs_plugin_config;

/* Counters (metrics.c). Only ever touched from the broker's thread. */
typedef struct idevs_metrics {
    uint64_t received;          /* client messages on a declared input or response topic */
    uint64_t routed;            /* of which accepted by the launcher; the rest is in rejected[] */
    uint64_t rejected[IDEVS_ERR_COUNT]; /* dropped envelopes by reason, by the plugin or the compartment */
    uint64_t done_ok;           /* deliveries the compartment finished */
    uint64_t done_failed;       /* deliveries that ended in error (dropped envelope, logic error, given up) */
    uint64_t emitted;           /* publications handed to the broker */
    uint64_t publish_failed;    /* publications the broker refused */
    uint64_t guard_denied;      /* client writes refused on protected topics */
    uint64_t restarts;          /* compartment certifications after the first */
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
} idevs_delivery_note;

typedef struct idevs_plugin {
    mosquitto_plugin_id_t *id;
    idevs_plugin_config cfg;
    idevs_identity *authority;
    X509 *authority_cert;
    X509 *operator_ca;
    idevs_deployment *deployment; /* the plugin's own parse of the descriptor: topics for routing and guard */
    uint8_t *descriptor_bytes;    /* exactly the bytes the launcher measured (digests compared at start) */
    size_t descriptor_len;
    char *certificate_topic;      /* idevs/<process>/certificate */
    char *descriptor_topic;       /* idevs/<process>/descriptor */
    idevs_launcher *launcher;
    bool certificate_stale;       /* a (re)certification happened: publish the chain again */
    uint64_t certifications;
    size_t max_envelope;          /* the largest envelope the compartment accepts (descriptor's max_payload) */
    idevs_metrics metrics;
    time_t metrics_next;          /* CLOCK_MONOTONIC seconds */
    idevs_drop_log drop_log[IDEVS_ERR_COUNT];
    idevs_delivery_note *notes;
    size_t note_count;
} idevs_plugin;

#define IDEVS_PLUGIN_LOG_PREFIX "idevs: "

/* config.c: parses the options into cfg; loads the keys and certificates. On failure logs a line naming the
 * option and the problem and returns false. */
bool idevs_plugin_config_parse(idevs_plugin *p, const struct mosquitto_opt *options, int option_count);
bool idevs_plugin_config_load(idevs_plugin *p);
void idevs_plugin_config_free(idevs_plugin *p);

/* routing.c */
bool idevs_routing_start(idevs_plugin *p);           /* launcher, retained topics; logs why not */
void idevs_routing_stop(idevs_plugin *p);
int idevs_routing_on_message(int event, void *event_data, void *userdata);
void idevs_routing_poll(idevs_plugin *p, unsigned budget_ms, uint64_t wait_for);
bool idevs_routing_is_output_topic(const idevs_plugin *p, const char *topic);
/* Publishes a copy of payload; frees properties on failure. true on success. */
bool idevs_routing_publish(idevs_plugin *p, const char *topic, const void *payload, size_t len, int qos,
                           bool retain, mosquitto_property *properties);

/* Re-reads the descriptor on MOSQ_EVT_RELOAD, warns if it changed, republishes the retained topics. */
int idevs_routing_on_reload(int event, void *event_data, void *userdata);

/* rejections.c */
bool idevs_rejections_init(idevs_plugin *p); /* sized for the descriptor's queue_depth; logs why not */
void idevs_rejections_free(idevs_plugin *p);
/* Remembers who sent delivery id, for idevs_rejections_done. topic must outlive it (a descriptor topic). */
void idevs_rejections_note(idevs_plugin *p, uint64_t id, const char *topic, const char *client, size_t size);
/* Counts an envelope the plugin refused before the compartment, and logs it (rate-limited). */
void idevs_rejections_refused(idevs_plugin *p, idevs_err reason, const char *topic, const char *client, size_t size);
/* on_done of a delivery: forgets its note; counts and logs a failure. */
void idevs_rejections_done(idevs_plugin *p, uint64_t id, idevs_err status);
/* On TICK: one summary line per reason whose interval ended with lines held back. */
void idevs_rejections_flush(idevs_plugin *p);

/* guard.c */
int idevs_guard_on_acl_check(int event, void *event_data, void *userdata);

/* metrics.c */
/* Publishes the counters as retained messages under $SYS/broker/idevs/<process>/ when they are due; now is
 * CLOCK_MONOTONIC seconds. */
void idevs_metrics_tick(idevs_plugin *p, time_t now);

#endif
