/* The processes a store run publishes to; see targets.h. */
#include "targets.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "idevs_service_app.h"

int store_targets_init(store_targets *ts, int argc, char **argv)
{
    memset(ts, 0, sizeof *ts);
    ts->argc = argc;
    ts->argv = argv;
    ts->scope = malloc((size_t)(argc > 0 ? argc : 1) * sizeof *ts->scope);
    if (ts->scope == NULL)
        return -1;
    for (int i = 0; i < argc; i++)
        ts->scope[i] = -1;
    app_config_default(&ts->scratch, "store");
    return 0;
}

int store_targets_option(store_targets *ts, int *i, char *why, size_t why_len)
{
    if (strcmp(ts->argv[*i], "--process") == 0) {
        const char *name = *i + 1 < ts->argc ? ts->argv[*i + 1] : NULL;
        if (name == NULL || name[0] == '\0')
            return app_fail(why, why_len, "--process needs a process name");
        if (ts->count == STORE_TARGETS_MAX)
            return app_fail(why, why_len, "--process: at most %d processes", STORE_TARGETS_MAX);
        for (size_t k = 0; k < ts->count; k++)
            if (strcmp(ts->t[k].process, name) == 0)
                return app_fail(why, why_len, "--process: '%s' is named twice", name);
        ts->t[ts->count++].process = name;
        *i += 1;
        return 1;
    }
    int first = *i;
    int r = idevs_service_cli_option(&ts->scratch, ts->argc, ts->argv, i, why, why_len);
    for (int k = first; r > 0 && k <= *i; k++)
        ts->scope[k] = (int)ts->count; /* 0 before any --process */
    return r;
}

/* Applies the connection options of one scope to cfg, in their order on the command line. */
static int apply(store_targets *ts, int scope, idevs_service_config *cfg, char *why, size_t why_len)
{
    for (int i = 0; i < ts->argc; i++) {
        if (ts->scope[i] != scope)
            continue;
        if (idevs_service_cli_option(cfg, ts->argc, ts->argv, &i, why, why_len) != 1)
            return -1; /* read once already: cannot fail but for memory */
    }
    return 0;
}

int store_targets_configure(store_targets *ts, char *why, size_t why_len)
{
    int several = ts->count > 1;
    if (ts->count == 0)
        ts->t[ts->count++].process = NULL; /* the default process */
    for (size_t k = 0; k < ts->count; k++) {
        store_target *t = &ts->t[k];
        app_config_default(&t->cfg, "store");
        if (t->process != NULL)
            t->cfg.process = t->process;
        t->process = t->cfg.process;
        if (apply(ts, 0, &t->cfg, why, why_len) != 0)
            return -1;
        /* one MQTT client id each: the broker disconnects the older of two clients with the same id */
        if (several) {
            if (t->cfg.client_id != NULL)
                snprintf(t->client_id, sizeof t->client_id, "%s-%s", t->cfg.client_id, t->process);
            else
                snprintf(t->client_id, sizeof t->client_id, "store-%ld-%s", (long)getpid(), t->process);
            t->cfg.client_id = t->client_id;
        }
        if (apply(ts, (int)k + 1, &t->cfg, why, why_len) != 0)
            return -1;
    }
    return 0;
}

void store_targets_free(store_targets *ts)
{
    for (size_t k = 0; k < ts->count; k++) {
        idevs_service_free(ts->t[k].svc);
        idevs_service_cli_free(&ts->t[k].cfg);
    }
    idevs_service_cli_free(&ts->scratch);
    free(ts->scope);
    memset(ts, 0, sizeof *ts);
}
