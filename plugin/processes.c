/* The processes of one broker: one launcher each, from plugin_opt_descriptor lines (fixed at start) and the
 * *.json files of plugin_opt_descriptor_dir (added and removed on RELOAD). Two processes that share a name, a
 * program UUID or a topic cannot serve one broker: the launcher says so, naming both files. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_plugin.h"

#define RETIRE_DRAIN_MS 30000 /* a removed process's queue gets this long to empty before it is stopped */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the launcher's events ---- */

static void on_event(void *arg, idevs_launcher_event event, const char *message)
{
    idevs_process *proc = arg;
    int level = MOSQ_LOG_NOTICE;
    switch (event) {
    case IDEVS_LAUNCHER_EVENT_RENEWED:
        /* Published retained as after a start; services verify it and switch to it (docs/CERTIFICATES.md). */
        proc->certificate_stale = true;
        proc->metrics.certificate_renewals++;
        break;
    case IDEVS_LAUNCHER_EVENT_CERTIFIED:
        proc->certificate_stale = true;
        if (proc->certifications++ > 0)
            proc->metrics.restarts++;
        level = MOSQ_LOG_INFO;
        break;
    case IDEVS_LAUNCHER_EVENT_EXITED:
    case IDEVS_LAUNCHER_EVENT_KILLED:
    case IDEVS_LAUNCHER_EVENT_START_FAILED:
    case IDEVS_LAUNCHER_EVENT_GIVEN_UP:
    case IDEVS_LAUNCHER_EVENT_WARNING:
        level = MOSQ_LOG_WARNING;
        break;
    default:
        break;
    }
    mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "%s", message);
}

/* ---- retained topics ---- */

void idevs_process_publish_certificate(idevs_process *proc)
{
    size_t len = 0;
    char *pem = idevs_launcher_chain_pem(proc->launcher, &len);
    if (pem == NULL && idevs_launcher_chain_count(proc->launcher) == 0)
        return; /* joining: no instance holds the process's keys yet; stays stale until one does */
    if (pem == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot encode the compartment's certificate chain",
                             idevs_process_name(proc));
        return; /* stays stale: tried again after the next poll */
    }
    bool published = idevs_routing_publish(proc, idevs_launcher_certificate_topic(proc->launcher), pem, len, 1, true,
                                           NULL);
    free(pem);
    /* Each instance's own chain (its own evidence) on its own topic: a verifier may check any of them. */
    for (size_t i = 0; published && i < idevs_launcher_instance_count(proc->launcher); i++) {
        if ((pem = idevs_launcher_instance_chain_pem(proc->launcher, i, &len)) == NULL)
            continue; /* not certified yet (restarting): published with the next certification */
        published = idevs_routing_publish(proc, idevs_launcher_instance_certificate_topic(proc->launcher, i), pem,
                                          len, 1, true, NULL);
        free(pem);
    }
    if (published)
        proc->certificate_stale = false;
}

static bool publish_descriptor(idevs_process *proc)
{
    size_t len = 0;
    const uint8_t *bytes = idevs_launcher_descriptor_bytes(proc->launcher, &len);
    return idevs_routing_publish(proc, idevs_launcher_descriptor_topic(proc->launcher), bytes, len, 1, true, NULL);
}

/* ---- one process ---- */

static void process_free(idevs_process *proc)
{
    if (proc == NULL)
        return;
    if (proc->launcher != NULL)
        idevs_launcher_stop(proc->launcher, 1000);
    idevs_launcher_free(proc->launcher);
    free(proc->adopt_at_start);
    idevs_rejections_free(proc);
    free(proc);
}

/* Reads, measures and checks one descriptor; starts nothing. */
static idevs_process *process_prepare(idevs_plugin *p, const char *descriptor, bool from_dir)
{
    idevs_process *proc = calloc(1, sizeof *proc);
    if (proc == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
        return NULL;
    }
    proc->plugin = p;
    proc->from_dir = from_dir;
    proc->budget_left_us = (int64_t)p->cfg.poll_budget_ms * 1000; /* until the first TICK gives it again */
    idevs_launcher_config lc;
    idevs_launcher_config_default(&lc);
    lc.descriptor = descriptor;
    lc.host_program = p->cfg.compartment;
    lc.state_dir = p->cfg.state_dir;
    lc.state_dir_per_process = true;
    lc.backend = p->cfg.backend;
    lc.tpm_tcti = p->cfg.tpm_tcti;
    lc.tpm_pcr = p->cfg.tpm_pcr;
    lc.operator_ca = p->authority.operator_ca;
    lc.authority = p->authority.identity;
    lc.authority_cert = p->authority.cert;
    lc.start_timeout_ms = p->cfg.start_timeout_ms;
    lc.queue_bytes = p->cfg.queue_bytes;
    lc.certificate_validity_s = p->cfg.certificate_validity_s;
    lc.certificate_renew_after_s = p->cfg.certificate_renew_after_s;
    lc.instance_base = p->cfg.instance_base;
    lc.on_event = on_event;
    lc.event_arg = proc;
    char why[1024] = "";
    idevs_err err = idevs_launcher_new(&lc, &proc->launcher, why, sizeof why);
    const char *option = from_dir ? "plugin_opt_descriptor_dir" : "plugin_opt_descriptor";
    if (err != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "%s: %s", option,
                             why[0] != '\0' ? why : idevs_strerror(err));
        process_free(proc);
        return NULL;
    }
    snprintf(proc->name, sizeof proc->name, "%s", idevs_launcher_name(proc->launcher));
    for (size_t i = 0; i < p->cfg.joins.count; i++)
        if (strcmp(p->cfg.joins.items[i], proc->name) == 0)
            (void)idevs_launcher_set_join(proc->launcher, true); /* not started yet: cannot fail */
    if (strcmp(proc->name, IDEVS_METRICS_TOTALS) == 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "%s: %s: the process name '%s' is reserved (its "
                             "counters would mix with the totals under $SYS/broker/idevs/%s/)",
                             option, descriptor, IDEVS_METRICS_TOTALS, IDEVS_METRICS_TOTALS);
        process_free(proc);
        return NULL;
    }
    if (!idevs_ownership_apply(proc, false)) {
        process_free(proc);
        return NULL;
    }
    idevs_launcher_stats st;
    idevs_launcher_get_stats(proc->launcher, &st);
    if (!idevs_rejections_init(proc, st.queue_limit)) {
        process_free(proc);
        return NULL;
    }
    return proc;
}

/* Starts the compartment and publishes the retained descriptor and certificate. */
static bool process_start(idevs_process *proc)
{
    char why[1024] = "";
    idevs_err err = idevs_launcher_start(proc->launcher, why, sizeof why);
    if (err != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "cannot start the compartment: %s",
                             why[0] != '\0' ? why : idevs_strerror(err));
        return false;
    }
    if (!idevs_ownership_adopt_at_start(proc))
        return false;
    if (!publish_descriptor(proc))
        return false;
    idevs_launcher_stats st;
    idevs_launcher_get_stats(proc->launcher, &st);
    if (st.join_waiting) {
        /* Its certificate is published once it holds the process's keys (the launcher's CERTIFIED event). */
        mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': joining: waiting for the process's keys "
                             "from a running instance; inputs are refused until then", idevs_process_name(proc));
        return true;
    }
    idevs_process_publish_certificate(proc);
    if (proc->certificate_stale) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "'%s': cannot publish the certificate",
                             idevs_process_name(proc));
        return false;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         IDEVS_PLUGIN_LOG_PREFIX "'%s': compartment certified; certificate on '%s', descriptor on '%s'",
                         idevs_process_name(proc), idevs_launcher_certificate_topic(proc->launcher),
                         idevs_launcher_descriptor_topic(proc->launcher));
    return true;
}

/* false (logged) when candidate cannot join the processes already there. */
static bool fits(const idevs_plugin *p, const idevs_process *candidate)
{
    for (size_t i = 0; i < p->proc_count; i++) {
        char why[1024] = "";
        if (idevs_launcher_conflict(p->procs[i]->launcher, candidate->launcher, why, sizeof why) != IDEVS_OK) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "two processes cannot serve one broker: %s",
                                 why);
            return false;
        }
    }
    return true;
}

static bool append(idevs_plugin *p, idevs_process *proc)
{
    idevs_process **grown = realloc(p->procs, (p->proc_count + 1) * sizeof *grown);
    if (grown == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
        return false;
    }
    p->procs = grown;
    p->procs[p->proc_count++] = proc;
    return true;
}

idevs_process *idevs_processes_add(idevs_plugin *p, const char *descriptor, bool from_dir)
{
    if (p->proc_count >= IDEVS_PROCESSES_MAX) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "%s: not started: %u processes already run",
                             descriptor, IDEVS_PROCESSES_MAX);
        return NULL;
    }
    idevs_process *proc = process_prepare(p, descriptor, from_dir);
    if (proc == NULL)
        return NULL;
    if (!fits(p, proc) || !process_start(proc) || !append(p, proc)) {
        process_free(proc);
        return NULL;
    }
    return proc;
}

/* ---- the descriptor directory ---- */

static bool is_descriptor_name(const char *name)
{
    size_t n = strlen(name);
    return name[0] != '.' && n > 5 && strcmp(name + n - 5, ".json") == 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

void idevs_processes_free_paths(char **paths, size_t count)
{
    for (size_t i = 0; i < count; i++)
        free(paths[i]);
    free(paths);
}

bool idevs_processes_scan_dir(const char *dir, char ***paths, size_t *count, char *why, size_t why_len)
{
    *paths = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (d == NULL) {
        snprintf(why, why_len, "'%s': %s", dir, strerror(errno));
        return false;
    }
    char **list = NULL;
    size_t n = 0;
    bool ok = true;
    struct dirent *e;
    while (ok && (e = readdir(d)) != NULL) {
        if (!is_descriptor_name(e->d_name))
            continue;
        if (n >= IDEVS_PROCESSES_MAX) {
            snprintf(why, why_len, "'%s': more than %u descriptors", dir, IDEVS_PROCESSES_MAX);
            ok = false;
            break;
        }
        size_t len = strlen(dir) + 1 + strlen(e->d_name) + 1;
        char **grown = realloc(list, (n + 1) * sizeof *grown);
        char *path = malloc(len);
        if (grown != NULL)
            list = grown;
        if (grown == NULL || path == NULL) {
            free(path);
            snprintf(why, why_len, "out of memory");
            ok = false;
            break;
        }
        snprintf(path, len, "%s/%s", dir, e->d_name);
        list[n++] = path;
    }
    closedir(d);
    if (!ok) {
        idevs_processes_free_paths(list, n);
        return false;
    }
    if (n > 1)
        qsort(list, n, sizeof *list, by_name);
    *paths = list;
    *count = n;
    return true;
}

/* ---- all of them ---- */

bool idevs_processes_start(idevs_plugin *p)
{
    char **dir_paths = NULL;
    size_t dir_count = 0;
    char why[768] = "";
    if (p->cfg.descriptor_dir != NULL &&
        !idevs_processes_scan_dir(p->cfg.descriptor_dir, &dir_paths, &dir_count, why, sizeof why)) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_descriptor_dir: %s", why);
        return false;
    }
    /* Every descriptor is read and checked against the others before any compartment starts. */
    bool ok = true;
    size_t total = p->cfg.descriptors.count + dir_count;
    for (size_t i = 0; ok && i < total; i++) {
        bool from_dir = i >= p->cfg.descriptors.count;
        const char *path = from_dir ? dir_paths[i - p->cfg.descriptors.count] : p->cfg.descriptors.items[i];
        idevs_process *proc = process_prepare(p, path, from_dir);
        ok = proc != NULL && fits(p, proc) && append(p, proc);
        if (!ok)
            process_free(proc);
    }
    idevs_processes_free_paths(dir_paths, dir_count);
    for (size_t j = 0; ok && j < p->cfg.joins.count; j++) {
        bool known = false;
        for (size_t i = 0; i < p->proc_count && !known; i++)
            known = strcmp(p->procs[i]->name, p->cfg.joins.items[j]) == 0;
        if (!known) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_join %s: no process of that name "
                                 "among the descriptors", p->cfg.joins.items[j]);
            ok = false;
        }
    }
    for (size_t i = 0; ok && i < p->proc_count; i++)
        ok = process_start(p->procs[i]);
    if (ok && p->proc_count == 0)
        mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "no integration process yet: add descriptors to "
                             "'%s' and reload", p->cfg.descriptor_dir);
    return ok;
}

void idevs_processes_stop_all(idevs_plugin *p)
{
    for (size_t i = 0; i < p->proc_count; i++)
        process_free(p->procs[i]);
    free(p->procs);
    p->procs = NULL;
    p->proc_count = 0;
}

idevs_process *idevs_processes_find(const idevs_plugin *p, const char *topic, idevs_topic_kind *kind,
                                    const char **own_copy)
{
    for (size_t i = 0; i < p->proc_count; i++) {
        idevs_topic_kind k = idevs_launcher_topic_kind(p->procs[i]->launcher, topic, own_copy);
        if (k != IDEVS_TOPIC_OTHER) {
            *kind = k;
            return p->procs[i];
        }
    }
    *kind = IDEVS_TOPIC_OTHER;
    return NULL;
}

void idevs_processes_retire(idevs_process *proc)
{
    if (proc->retiring)
        return;
    proc->retiring = true;
    proc->retire_deadline_ms = now_ms() + RETIRE_DRAIN_MS;
    mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: its descriptor '%s' is gone; it takes "
                         "no new input and stops once its queue is empty (at most %d s)",
                         idevs_process_name(proc), idevs_launcher_descriptor_path(proc->launcher),
                         RETIRE_DRAIN_MS / 1000);
}

/* A removed process leaves nothing retained that a service could take for a running compartment. */
static void clear_retained(idevs_process *proc)
{
    (void)idevs_routing_publish(proc, idevs_launcher_certificate_topic(proc->launcher), NULL, 0, 1, true, NULL);
    (void)idevs_routing_publish(proc, idevs_launcher_descriptor_topic(proc->launcher), NULL, 0, 1, true, NULL);
    idevs_metrics_clear(proc);
}

void idevs_processes_reap_retired(idevs_plugin *p)
{
    size_t kept = 0;
    int64_t now = now_ms();
    for (size_t i = 0; i < p->proc_count; i++) {
        idevs_process *proc = p->procs[i];
        idevs_launcher_stats st;
        idevs_launcher_get_stats(proc->launcher, &st);
        bool drained = st.queue_depth == 0;
        if (!proc->retiring || (!drained && now < proc->retire_deadline_ms)) {
            p->procs[kept++] = proc;
            continue;
        }
        idevs_launcher_stop(proc->launcher, 1000);
        idevs_launcher_get_stats(proc->launcher, &st);
        clear_retained(proc);
        mosquitto_log_printf(drained ? MOSQ_LOG_NOTICE : MOSQ_LOG_WARNING,
                             IDEVS_PLUGIN_LOG_PREFIX "'%s': stopped and removed%s; its retained certificate and "
                             "descriptor are cleared",
                             idevs_process_name(proc),
                             drained ? " after its queue drained" : " with deliveries still queued (dropped)");
        process_free(proc);
    }
    p->proc_count = kept;
}
