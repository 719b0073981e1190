/* Ownership: which partitions of each process this broker routes when several brokers serve it
 * (plugin_opt_ownership, docs/SCALING.md). The file has one line per process, "NAME PARTITIONS [adopt DIR]",
 * PARTITIONS as idevs_deployment_partition_set_parse() reads it ("all", "none", "0-31,40"); '#' starts a comment.
 * A process the file does not name routes all its partitions. "adopt DIR" names the state directory of that
 * process on a broker whose partitions this one takes over: its replay record and kept outputs are taken first
 * (idevs_launcher_adopt), and the partitions change only when that worked. Read at each process's start, where a
 * bad file stops the broker, and again on RELOAD, where a bad file keeps what was in force: that is how
 * partitions move between brokers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_plugin.h"

#define LINE_MAX_LEN 4096

/* The set the file gives proc, into set (set_len bytes): "" when the file does not name it. False, with why
 * naming the file and line, when the file cannot be read or a line is not "NAME PARTITIONS". */
static bool lookup(const char *path, const char *name, char *set, size_t set_len, char *adopt, size_t adopt_len,
                   char *why, size_t why_len)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        snprintf(why, why_len, "'%s': %s", path, strerror(errno));
        return false;
    }
    set[0] = adopt[0] = '\0';
    char line[LINE_MAX_LEN];
    bool ok = true;
    for (unsigned n = 1; ok && fgets(line, sizeof line, f) != NULL; n++) {
        size_t len = strlen(line);
        if (len == sizeof line - 1 && line[len - 1] != '\n') {
            snprintf(why, why_len, "%s:%u: longer than %d bytes", path, n, LINE_MAX_LEN - 2);
            ok = false;
            break;
        }
        char *hash = strchr(line, '#');
        if (hash != NULL)
            *hash = '\0';
        char *save = NULL, *proc = strtok_r(line, " \t\r\n", &save);
        if (proc == NULL)
            continue;
        char *parts = strtok_r(NULL, " \t\r\n", &save), *verb = strtok_r(NULL, " \t\r\n", &save);
        char *dir = verb != NULL ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        char *extra = dir != NULL ? strtok_r(NULL, " \t\r\n", &save) : NULL;
        if (parts == NULL || (verb != NULL && (strcmp(verb, "adopt") != 0 || dir == NULL || extra != NULL))) {
            snprintf(why, why_len, "%s:%u: expected 'PROCESS PARTITIONS [adopt DIRECTORY]' (e.g. 'rewards 0-31')",
                     path, n);
            ok = false;
        } else if (strcmp(proc, name) == 0) {
            if (set[0] != '\0') {
                snprintf(why, why_len, "%s:%u: '%s' is named twice", path, n, name);
                ok = false;
            } else {
                snprintf(set, set_len, "%s", parts);
                snprintf(adopt, adopt_len, "%s", dir != NULL ? dir : "");
            }
        }
    }
    fclose(f);
    return ok;
}

bool idevs_ownership_apply(idevs_process *proc, bool reload)
{
    const char *path = proc->plugin->cfg.ownership;
    if (path == NULL)
        return true;
    char set[LINE_MAX_LEN] = "", adopt[LINE_MAX_LEN] = "", why[2 * LINE_MAX_LEN + 256] = "";
    int level = reload ? MOSQ_LOG_WARNING : MOSQ_LOG_ERR;
    const char *keep = reload ? "; the partitions routed stay as they were" : "";
    if (!lookup(path, idevs_process_name(proc), set, sizeof set, adopt, sizeof adopt, why, sizeof why)) {
        mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_ownership: %s%s", why, keep);
        return false;
    }
    /* Before the process starts, only which partitions (the timer goes with partition 0), and what another broker
     * left is taken right after the start (idevs_ownership_adopt_at_start); on RELOAD, that first. */
    idevs_err err = IDEVS_OK;
    idevs_launcher_stats st;
    idevs_launcher_get_stats(proc->launcher, &st);
    if (adopt[0] != '\0' && st.state == IDEVS_LAUNCHER_STOPPED) {
        free(proc->adopt_at_start);
        if ((proc->adopt_at_start = strdup(adopt)) == NULL) {
            mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
            return false;
        }
    } else if (adopt[0] != '\0' && (err = idevs_launcher_adopt(proc->launcher, adopt, why, sizeof why)) != IDEVS_OK) {
        mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_ownership: %s: '%s': cannot adopt %s%s", path,
                             idevs_process_name(proc), why, keep);
        return false;
    }
    err = idevs_launcher_set_owned(proc->launcher, set[0] != '\0' ? set : NULL, why, sizeof why);
    if (err != IDEVS_OK) {
        mosquitto_log_printf(level, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_ownership: %s: '%s': %s%s", path,
                             idevs_process_name(proc), err == IDEVS_ERR_CONFIG ? why : idevs_strerror(err), keep);
        return false;
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': routes partitions %s%s",
                         idevs_process_name(proc), set[0] != '\0' ? set : "all",
                         set[0] != '\0' ? "" : " (the ownership file does not name it)");
    return true;
}

bool idevs_ownership_adopt_at_start(idevs_process *proc)
{
    if (proc->adopt_at_start == NULL)
        return true;
    char why[LINE_MAX_LEN + 256] = "";
    idevs_err err = idevs_launcher_adopt(proc->launcher, proc->adopt_at_start, why, sizeof why);
    if (err != IDEVS_OK)
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_ownership: %s: '%s': cannot adopt %s",
                             proc->plugin->cfg.ownership, idevs_process_name(proc), why);
    free(proc->adopt_at_start);
    proc->adopt_at_start = NULL;
    return err == IDEVS_OK;
}
