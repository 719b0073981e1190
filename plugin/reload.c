/* RELOAD (SIGHUP). Mosquitto 2.0.11 does not give a plugin its options again on reload, so plugin_opt_* lines,
 * plugin_opt_descriptor ones included, are fixed at start; the file of plugin_opt_ownership is read again (ownership.c).
 * The directory of plugin_opt_descriptor_dir is read
 * again: a new descriptor file starts a new process, a removed one retires its process (no new input; stopped
 * once its queue is empty, its retained topics cleared). A changed descriptor of a running process keeps the
 * measured version running and is warned about: deploying it changes the measurement, and so the certificate
 * services pin, which is a restart's business. Every running process's certificate and descriptor are
 * republished, retained, exactly as measured. */
#include <stdlib.h>
#include <string.h>

#include "idevs_hex.h"
#include "idevs_plugin.h"

static void check_changed(idevs_process *proc)
{
    const char *name = idevs_process_name(proc);
    const char *path = idevs_launcher_descriptor_path(proc->launcher);
    bool changed = false;
    uint8_t now[IDEVS_LAUNCHER_DIGEST_LEN];
    char why[768] = "";
    if (idevs_launcher_descriptor_changed(proc->launcher, &changed, now, why, sizeof why) != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: cannot read the descriptor: %s; the running "
                             "compartment keeps the descriptor it was started with",
                             name, why);
    } else if (changed) {
        char now_hex[2 * IDEVS_LAUNCHER_DIGEST_LEN + 1], run_hex[2 * IDEVS_LAUNCHER_DIGEST_LEN + 1];
        idevs_hex_encode(now, sizeof now, now_hex);
        idevs_hex_encode(idevs_launcher_descriptor_digest(proc->launcher), IDEVS_LAUNCHER_DIGEST_LEN, run_hex);
        mosquitto_log_printf(MOSQ_LOG_WARNING,
                             IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: the descriptor '%s' changed (SHA-256 %s, running "
                             "%s); the running compartment keeps the descriptor it was started with: restart the "
                             "broker to deploy the new one (its measurement, and so its certificate, change)",
                             name, path, now_hex, run_hex);
    } else {
        mosquitto_log_printf(MOSQ_LOG_INFO, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: the descriptor is unchanged", name);
    }
}

static void republish(idevs_process *proc)
{
    size_t len = 0;
    const uint8_t *bytes = idevs_launcher_descriptor_bytes(proc->launcher, &len);
    (void)idevs_routing_publish(proc, idevs_launcher_descriptor_topic(proc->launcher), bytes, len, 1, true, NULL);
    proc->certificate_stale = true;
    idevs_process_publish_certificate(proc);
    mosquitto_log_printf(MOSQ_LOG_INFO, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: certificate and descriptor republished on "
                         "'%s' and '%s'; plugin_opt_* changes need a broker restart",
                         idevs_process_name(proc), idevs_launcher_certificate_topic(proc->launcher),
                         idevs_launcher_descriptor_topic(proc->launcher));
}

static bool listed(char *const *paths, size_t count, const char *path)
{
    for (size_t i = 0; i < count; i++)
        if (strcmp(paths[i], path) == 0)
            return true;
    return false;
}

static bool running(const idevs_plugin *p, const char *path)
{
    for (size_t i = 0; i < p->proc_count; i++)
        if (strcmp(idevs_launcher_descriptor_path(p->procs[i]->launcher), path) == 0)
            return true;
    return false;
}

/* The descriptor directory against the processes it started: retire the removed, start the new. */
static void rescan(idevs_plugin *p)
{
    char **paths = NULL;
    size_t count = 0;
    char why[768] = "";
    if (!idevs_processes_scan_dir(p->cfg.descriptor_dir, &paths, &count, why, sizeof why)) {
        mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "reload: plugin_opt_descriptor_dir: %s; the "
                             "processes keep running as they are", why);
        return;
    }
    for (size_t i = 0; i < p->proc_count; i++) {
        idevs_process *proc = p->procs[i];
        if (proc->from_dir && !listed(paths, count, idevs_launcher_descriptor_path(proc->launcher)))
            idevs_processes_retire(proc);
    }
    for (size_t i = 0; i < count; i++) {
        if (running(p, paths[i]))
            continue;
        idevs_process *proc = idevs_processes_add(p, paths[i], true);
        if (proc != NULL)
            mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': reload: started from the new "
                                 "descriptor '%s'", idevs_process_name(proc), paths[i]);
        else
            mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "reload: the new descriptor '%s' was not "
                                 "started (the line above says why); the other processes run on", paths[i]);
    }
    idevs_processes_free_paths(paths, count);
}

/* Mosquitto 2.0.11 stops calling RELOAD callbacks, and skips reloading its own password and ACL files, at the
 * first that does not answer MOSQ_ERR_PLUGIN_DEFER: so this one always defers. */
int idevs_reload_on_reload(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)event_data; /* 2.0.11 passes no options */
    idevs_plugin *p = userdata;
    (void)idevs_guard_decide(p, true); /* an acl_file added or removed */
    size_t before = p->proc_count; /* processes started by the rescan are new: nothing to check or republish */
    for (size_t i = 0; i < before; i++) {
        if (p->procs[i]->retiring)
            continue;
        check_changed(p->procs[i]);
        (void)idevs_ownership_apply(p->procs[i], true);
        republish(p->procs[i]);
    }
    if (p->cfg.descriptor_dir != NULL)
        rescan(p);
    return MOSQ_ERR_PLUGIN_DEFER;
}
