/* The program of a service that receives (messaging, taxi, points); see idevs_service_app.h. */
#include "idevs_service_app.h"

#include <stdio.h>
#include <string.h>

/* Hands the service's on_message only the messages of its kind: anything else the descriptor addresses to it is
 * ignored, and said so on stderr. */
static void receive(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    app_receiver_state *state = arg;
    const app_receiver *r = state->receiver;
    if (msg->kind != r->kind || strcmp(msg->name, r->name) != 0) {
        char id[IDEVS_UUID_STR_LEN];
        idevs_uuid_format(&msg->message_id, id);
        fprintf(stderr, "%s: ignored message %s on '%s': not %s\n", r->prog, id, msg->topic, r->what);
        return;
    }
    state->handled++;
    r->on_message(svc, msg, state);
}

int app_receiver_main(const app_receiver *r, int argc, char **argv)
{
    idevs_service_config cfg;
    app_receive_options opt;
    app_config_default(&cfg, r->prog);
    cfg.process = r->process;
    int rc = app_parse_receive_options(r->prog, r->usage, argc, argv, &cfg, &opt);
    if (rc >= 0)
        return rc;
    app_install_signals();

    rc = 1;
    app_receiver_state state;
    memset(&state, 0, sizeof state);
    state.receiver = r;
    idevs_service *svc = NULL;
    char why[1024] = "";
    state.db = app_db_open(opt.db_path, r->schema, NULL, why, sizeof why);
    if (state.db == NULL) {
        fprintf(stderr, "%s: %s\n", r->prog, why);
        goto out;
    }
    if (app_start_service(r->prog, &cfg, receive, &state, 4, &svc, "%s", r->doing) != IDEVS_OK)
        goto out;
    app_run(r->prog, svc, &state.handled, opt.count, opt.timeout_s);
    if (r->answers)
        idevs_service_flush(svc, 5000);
    idevs_service_stats last;
    memset(&last, 0, sizeof last);
    app_report_copies(r->prog, NULL, svc, &last, 1);
    printf("%s: %llu %s, %llu %s, %llu %s, %llu refused\n", r->prog, state.handled, r->labels[0], state.done,
           r->labels[1], state.repeated, r->labels[2], state.refused);
    rc = 0;
out:
    idevs_service_free(svc);
    sqlite3_close(state.db);
    idevs_service_cli_free(&cfg);
    return rc;
}
