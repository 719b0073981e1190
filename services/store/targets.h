/* The processes one store run publishes its sales to (docs/CASESTUDY.md, "The programs"):
 *
 *   store run --db FILE [connection options] [--process NAME [connection options]]...
 *
 * Each process gets its own service (connection, verified compartment, policy). The connection options before
 * the first --process apply to every process, those after a --process to that process only: the policy that
 * pins one compartment's measurement and descriptor cannot pin another's. Without --process, one process,
 * 'rewards', takes every option, as it always did. */
#ifndef STORE_TARGETS_H
#define STORE_TARGETS_H

#include <stddef.h>

#include "idevs_service.h"

#define STORE_TARGETS_MAX 16

typedef struct store_target {
    const char *process;
    idevs_service_config cfg;
    idevs_service *svc;
    char client_id[320]; /* "<id>-<process>" when several processes share one id */
} store_target;

typedef struct store_targets {
    store_target t[STORE_TARGETS_MAX];
    size_t count;
    int argc;
    char **argv;
    int *scope; /* per argument: -1 not a connection option, 0 one for every process, k + 1 one for t[k] */
    idevs_service_config scratch; /* checks each connection option as it is read */
} store_targets;

/* 0, or -1 when out of memory. */
int store_targets_init(store_targets *ts, int argc, char **argv);

/* Like idevs_service_cli_option: takes --process NAME or a connection option at argv[*i] (leaving *i on its
 * value); 1 when it took one, 0 when argv[*i] is neither, -1 with why for a bad one. */
int store_targets_option(store_targets *ts, int *i, char *why, size_t why_len);

/* After the command line: each process's configuration, its own options after those for every process. With
 * several processes, each connects with its own client id: the one given with -i followed by "-PROCESS", or
 * "store-PID-PROCESS". 0, or -1 with why. */
int store_targets_configure(store_targets *ts, char *why, size_t why_len);

/* Frees the services and the configurations. */
void store_targets_free(store_targets *ts);

#endif
