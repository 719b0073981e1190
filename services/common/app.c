/* Signals, numbers, options, start-up and the run loop of a service; see idevs_service_app.h. */
#include "idevs_service_app.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_hex.h"

volatile sig_atomic_t app_stopping;

static void on_signal(int sig)
{
    (void)sig;
    app_stopping = 1;
}

void app_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int app_parse_whole(const char *text, unsigned long long max, unsigned long long *out)
{
    /* strtoull alone would take a sign or leading space */
    if (text == NULL || text[0] < '0' || text[0] > '9')
        return 0;
    errno = 0;
    char *end = NULL;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return 0;
    *out = v;
    return 1;
}

int64_t app_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void app_config_default(idevs_service_config *cfg, const char *name)
{
    idevs_service_config_default(cfg);
    cfg->process = "rewards";
    /* --name through the shared parser, so that --pki composes the paths from it unless --name follows */
    char *name_default[] = {"--name", (char *)name};
    char why[256];
    int zero = 0;
    idevs_service_cli_option(cfg, 2, name_default, &zero, why, sizeof why);
}

int app_parse_receive_options(const char *prog, const char *usage, int argc, char **argv,
                              idevs_service_config *cfg, app_receive_options *out)
{
    char why[1024] = "";
    memset(out, 0, sizeof *out);
    for (int i = 1; i < argc; i++) {
        int r = idevs_service_cli_option(cfg, argc, argv, &i, why, sizeof why);
        if (r < 0) {
            fprintf(stderr, "%s: %s\n\n%s%s", prog, why, usage, idevs_service_cli_usage);
            idevs_service_cli_free(cfg);
            return 2;
        }
        if (r > 0)
            continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (strcmp(a, "--help") == 0) {
            printf("%s%s", usage, idevs_service_cli_usage);
            idevs_service_cli_free(cfg);
            return 0;
        } else if (strcmp(a, "--db") == 0 && v != NULL)
            out->db_path = v;
        else if (strcmp(a, "--count") == 0)
            ok = app_parse_whole(v, UINT32_MAX, &out->count);
        else if (strcmp(a, "--timeout") == 0)
            ok = app_parse_whole(v, 31536000, &out->timeout_s);
        else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "%s: unknown option, missing or bad value: %s\n\n%s%s", prog, a, usage,
                    idevs_service_cli_usage);
            idevs_service_cli_free(cfg);
            return 2;
        }
        i++;
    }
    if (out->db_path == NULL) {
        fprintf(stderr, "%s: --db FILE is required\n\n%s%s", prog, usage, idevs_service_cli_usage);
        idevs_service_cli_free(cfg);
        return 2;
    }
    return -1;
}

int app_parse_tool_options(const char *prog, const char *usage, int argc, char **argv, idevs_service_config *cfg,
                           app_tool_option_fn own, void *opts)
{
    char why[1024];
    int rc = -1;
    idevs_service_config_default(cfg);
    for (int i = 1; i < argc && rc < 0; i++) {
        const char *a = argv[i];
        int r = idevs_service_cli_option(cfg, argc, argv, &i, why, sizeof why);
        if (r == 1)
            continue;
        if (r < 0) {
            fprintf(stderr, "%s: %s\n", prog, why);
            rc = 2;
        } else if (strcmp(a, "--help") == 0) {
            printf("%s\n%s", usage, idevs_service_cli_usage);
            rc = 0;
        } else if ((r = own(opts, argc, argv, &i)) == APP_OPTION_UNKNOWN) {
            fprintf(stderr, "%s: unknown option or missing value: %s\n%s", prog, a, usage);
            rc = 2;
        } else if (r != 0) {
            rc = r;
        }
    }
    if (rc >= 0)
        idevs_service_cli_free(cfg);
    return rc;
}

idevs_err app_start_service(const char *prog, const idevs_service_config *cfg, idevs_service_on_message on_message,
                            void *arg, size_t measurement_bytes, idevs_service **svc, const char *what_fmt, ...)
{
    char why[1024] = "";
    idevs_err err = idevs_service_new(cfg, on_message, arg, svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(*svc, why, sizeof why);
    if (err != IDEVS_OK) {
        fprintf(stderr, "%s: %s (%s)\n", prog, why, idevs_strerror(err));
        return err;
    }
    idevs_service_peer_info peer;
    idevs_service_peer(*svc, &peer);
    char hex[2 * IDEVS_SHA256_LEN + 1];
    idevs_hex_encode(peer.measurement, measurement_bytes < IDEVS_SHA256_LEN ? measurement_bytes : IDEVS_SHA256_LEN,
                     hex);
    /* scripts/demo and tests/casestudy look for the lines that start with "verified" */
    printf("verified the compartment of '%s' (backend %s, measurement %s...); ", cfg->process,
           peer.backend != NULL ? peer.backend : "?", hex);
    va_list ap;
    va_start(ap, what_fmt);
    vprintf(what_fmt, ap);
    va_end(ap);
    putchar('\n');
    fflush(stdout);
    return IDEVS_OK;
}

int app_run_command(const char *usage, const app_command *commands, size_t n, int argc, char **argv)
{
    for (size_t i = 0; argc >= 2 && i < n; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc, argv);
    if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0)) {
        printf("%s%s", usage, idevs_service_cli_usage);
        return 0;
    }
    fprintf(stderr, "%s%s", usage, idevs_service_cli_usage);
    return 2;
}

void app_provenance(const idevs_service_message *msg, char out[APP_PROVENANCE_LEN])
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < msg->provenance_count && i < IDEVS_PROVENANCE_MAX; i++) {
        char p[IDEVS_UUID_STR_LEN];
        idevs_uuid_format(&msg->provenance[i], p);
        used += (size_t)snprintf(out + used, APP_PROVENANCE_LEN - used, "%s%s", i > 0 ? "," : "", p);
    }
}

void app_report_copies(const char *prog, const char *process, idevs_service *svc, idevs_service_stats *last,
                       int force)
{
    idevs_service_stats s;
    idevs_service_get_stats(svc, &s);
    if (s.rejected != last->rejected || (force && s.rejected > 0)) {
        fprintf(stderr, "%s%s%s%s: refused: %llu envelopes could not be opened (", prog, process != NULL ? " to '" : "",
                process != NULL ? process : "", process != NULL ? "'" : "", (unsigned long long)s.rejected);
        const char *sep = "";
        for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
            if (i != IDEVS_ERR_REPLAY && s.rejected_by_reason[i] > 0) { /* replays are counted as duplicates */
                fprintf(stderr, "%s%s %llu", sep, idevs_err_name((idevs_err)i),
                        (unsigned long long)s.rejected_by_reason[i]);
                sep = ", ";
            }
        fprintf(stderr, ")\n");
        last->rejected = s.rejected;
    }
    if (!force && s.retransmitted == last->retransmitted && s.unreceipted_at_start == last->unreceipted_at_start &&
        s.duplicates == last->duplicates && s.reconnects == last->reconnects)
        return;
    *last = s;
    fprintf(stderr, "%s%s%s%s: copies: %llu sent again, %llu unreceipted at start, %llu duplicates, %llu receipted, "
            "%llu receipts sent, %llu reconnects\n", prog, process != NULL ? " to '" : "", process != NULL ? process : "",
            process != NULL ? "'" : "", (unsigned long long)s.retransmitted,
            (unsigned long long)s.unreceipted_at_start, (unsigned long long)s.duplicates,
            (unsigned long long)s.receipted, (unsigned long long)s.receipts_sent, (unsigned long long)s.reconnects);
    fflush(stderr);
}

void app_run(const char *prog, idevs_service *svc, const unsigned long long *handled, unsigned long long count,
             unsigned long long timeout_s)
{
    int64_t deadline = timeout_s > 0 ? app_now_ms() + (int64_t)timeout_s * 1000 : 0;
    idevs_service_stats last;
    memset(&last, 0, sizeof last);
    while (!app_stopping && (count == 0 || *handled < count) && (deadline == 0 || app_now_ms() < deadline)) {
        idevs_err err = idevs_service_run(svc, 100);
        app_report_copies(prog, NULL, svc, &last, 0);
        if (err == IDEVS_ERR_NOT_NOW)
            break;
        if (err != IDEVS_OK)
            fprintf(stderr, "%s: %s\n", prog, idevs_service_last_error(svc));
    }
}
