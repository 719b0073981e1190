/* mosquitto_idevs.so: the entry points of Mosquitto's plugin API v5. Thin, as dynamic-security's: the work is
 * in config.c (options), processes.c (one launcher per integration process), routing.c (MESSAGE), reload.c,
 * guard.c (ACL), rejections.c and metrics.c. MOSQ_EVT_DISCONNECT is not used: nothing is kept per client. */
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#pragma GCC visibility push(default)
#include <mosquitto_plugin.h>
#pragma GCC visibility pop

#include "idevs_plugin.h"

/* Set in the broker's environment while an instance of the plugin is loaded. Two instances (a second plugin
 * line for the same file, or for a copy under another name, which gets its own copy of every static) would
 * each guard only their own processes and allow the other's protected topics: one instance serves every
 * process. The environment is the one thing every copy of the library shares. */
#define LOADED_MARK "IDEVS_MOSQUITTO_PLUGIN_LOADED"

static int on_tick(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data; /* Mosquitto 2.0.11 leaves its now_s and now_ns at 0: keep time ourselves */
    idevs_plugin *p = userdata;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* A new loop iteration: every process gets its poll budget back. One poll() over the launchers' descriptors
     * (each readable when its launcher has work: frames, an exit, a deadline) tells which to visit, instead of a
     * visit, and a read that finds nothing, per process and iteration. */
    struct pollfd fds[IDEVS_PROCESSES_MAX];
    size_t n = p->proc_count < IDEVS_PROCESSES_MAX ? p->proc_count : IDEVS_PROCESSES_MAX;
    for (size_t i = 0; i < n; i++)
        fds[i] = (struct pollfd){.fd = idevs_launcher_fd(p->procs[i]->launcher), .events = POLLIN};
    bool polled = n > 0 && poll(fds, n, 0) >= 0;
    p->loop_budget_left_us = (int64_t)p->cfg.poll_budget_ms * 1000;
    for (size_t i = 0; i < p->proc_count; i++) {
        idevs_process *proc = p->procs[i];
        proc->budget_left_us = (int64_t)p->cfg.poll_budget_ms * 1000;
        if (!polled || i >= n || fds[i].revents != 0 || proc->certificate_stale)
            idevs_routing_poll(proc, 0);
        idevs_rejections_flush(proc);
    }
    idevs_processes_reap_retired(p);
    idevs_metrics_tick(p, ts.tv_sec);
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

static void release(idevs_plugin *p)
{
    if (p == NULL)
        return;
    if (p->id != NULL) {
        mosquitto_callback_unregister(p->id, MOSQ_EVT_MESSAGE, idevs_routing_on_message, NULL);
        mosquitto_callback_unregister(p->id, MOSQ_EVT_ACL_CHECK, idevs_guard_on_acl_check, NULL);
        mosquitto_callback_unregister(p->id, MOSQ_EVT_TICK, on_tick, NULL);
        mosquitto_callback_unregister(p->id, MOSQ_EVT_RELOAD, idevs_reload_on_reload, NULL);
        unsetenv(LOADED_MARK);
    }
    idevs_processes_stop_all(p);
    idevs_plugin_config_free(p);
    free(p);
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
                          int option_count)
{
    if (getenv(LOADED_MARK) != NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "mosquitto_idevs.so is already loaded in this "
                             "broker: load it once, and repeat plugin_opt_descriptor under that one plugin line, one "
                             "line per integration process");
        return MOSQ_ERR_INVAL;
    }
    idevs_plugin *p = calloc(1, sizeof *p);
    if (p == NULL)
        return MOSQ_ERR_NOMEM;
    if (!idevs_plugin_config_parse(p, options, option_count) || !idevs_guard_decide(p, false) ||
        !idevs_plugin_config_load(p) || !idevs_processes_start(p)) {
        release(p);
        return MOSQ_ERR_INVAL;
    }
    p->id = identifier;
    p->loop_budget_left_us = (int64_t)p->cfg.poll_budget_ms * 1000; /* until the first TICK gives it again */
    if (setenv(LOADED_MARK, "1", 1) != 0 ||
        mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, idevs_guard_on_acl_check, NULL, p) != 0 ||
        mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, idevs_routing_on_message, NULL, p) != 0 ||
        mosquitto_callback_register(identifier, MOSQ_EVT_TICK, on_tick, NULL, p) != 0 ||
        mosquitto_callback_register(identifier, MOSQ_EVT_RELOAD, idevs_reload_on_reload, NULL, p) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "cannot register the plugin's callbacks");
        release(p);
        return MOSQ_ERR_INVAL;
    }
    *userdata = p;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    (void)options;
    (void)option_count;
    release(userdata);
    return MOSQ_ERR_SUCCESS;
}
