/* idevs-pub: publish sealed envelopes to an integration process, in the style of mosquitto_pub.
 *
 *   idevs-pub --pki pki --name store --process rewards --policy allow-process-backend-insecure \
 *       -t sales -m '{"sale_id": "S-1", ...}'
 *
 * Connects, fetches and verifies the process's certificate and descriptor (idevs_service_start), seals each
 * message to the compartment for the declared input -t NAME, publishes it at QoS 1 and waits until the broker
 * acknowledged every publication. Exit status: 0 every publication acknowledged; 1 a failure (the message says
 * which); 2 a usage error. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_envelope.h"
#include "idevs_hex.h"
#include "idevs_service.h"
#include "idevs_service_app.h"

enum { EXIT_OK = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

#define FILE_MAX IDEVS_PAYLOAD_MAX_LIMIT /* the largest payload a descriptor allows (limits.max_payload) */

static const char usage[] =
    "usage: idevs-pub [OPTIONS] -t INPUT (-m MESSAGE | -f FILE | -l)\n"
    "Seals each message to the integration process's compartment and publishes it on the input's topic.\n"
    "  -t, --input NAME         the declared input (its \"from\" must be this service)\n"
    "  -m, --message TEXT       publish TEXT\n"
    "  -f, --file FILE          publish the contents of FILE (- for stdin)\n"
    "  -l, --stdin-line         publish each line of stdin as its own envelope (blank lines are skipped)\n"
    "  --partition-key TEXT     keep the messages with the others of this key on one instance of the process\n"
    "                           (their partition, not TEXT, is sent: docs/PROTOCOL.md 8.5)\n"
    "  -v, --verbose            print \"INPUT MESSAGE_ID\" for each publication\n"
    "  -W, --wait SECONDS       how long to wait for readiness and acknowledgements (default 10)\n"
    "  --help                   this text\n";

static int failed(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("idevs-pub: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return EXIT_FAILED;
}

static int read_file(const char *path, uint8_t **data, size_t *len)
{
    bool std = strcmp(path, "-") == 0;
    FILE *f = std ? stdin : fopen(path, "rb");
    if (f == NULL)
        return failed("cannot open %s: %s", path, strerror(errno));
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    bool too_large = false;
    while (buf != NULL) {
        if (n == cap) {
            if (cap >= FILE_MAX) {
                /* Exactly FILE_MAX bytes is allowed: too large only if one more byte follows. */
                int extra = fgetc(f);
                too_large = extra != EOF;
                break;
            }
            size_t bigger_cap = cap * 2 < FILE_MAX ? cap * 2 : FILE_MAX;
            uint8_t *bigger = realloc(buf, bigger_cap);
            if (bigger == NULL) {
                idevs_cleanse(buf, cap);
                free(buf);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap = bigger_cap;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
    }
    bool no_memory = buf == NULL, error = no_memory || ferror(f) || too_large;
    if (!std)
        fclose(f);
    if (error) {
        if (buf != NULL)
            idevs_cleanse(buf, cap);
        free(buf);
        return too_large ? failed("cannot read %s: larger than %u bytes, the largest payload a descriptor allows",
                                  path, (unsigned)FILE_MAX)
                         : failed("cannot read %s: %s", path, no_memory ? "out of memory" : "read error");
    }
    *data = buf;
    *len = n;
    return EXIT_OK;
}

typedef struct pub_state {
    idevs_service *svc;
    const char *input;
    idevs_publish_options opts;
    bool verbose;
    uint64_t deadline_ms;
} pub_state;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Publishes one message, running the network while the service is not ready (reconnecting). */
static int publish_one(pub_state *st, const uint8_t *payload, size_t len)
{
    for (;;) {
        idevs_msgid id;
        idevs_err err = idevs_service_publish_with(st->svc, st->input, &st->opts, payload, len, &id);
        if (err == IDEVS_OK) {
            if (st->verbose) {
                char text[2 * IDEVS_UUID_LEN + 1];
                idevs_hex_encode(id.b, sizeof id.b, text);
                printf("%s %s\n", st->input, text);
                fflush(stdout);
            }
            return EXIT_OK;
        }
        if (err != IDEVS_ERR_NOT_NOW)
            return failed("cannot publish to input '%s': %s", st->input, idevs_strerror(err));
        if (app_stopping || now_ms() >= st->deadline_ms)
            return failed("the service is not ready to publish to '%s'%s", st->input,
                          app_stopping ? " (interrupted)" : " in time");
        err = idevs_service_run(st->svc, 100);
        if (err != IDEVS_OK)
            return failed("%s (%s)", idevs_service_last_error(st->svc), idevs_err_name(err));
    }
}

/* idevs-pub's own options. */
typedef struct pub_options {
    const char *input, *message, *file, *partition_key;
    bool lines, verbose;
    unsigned long wait_s;
} pub_options;

static int pub_option(void *opts, int argc, char **argv, int *i)
{
    pub_options *o = opts;
    const char *a = argv[*i];
    if (strcmp(a, "-l") == 0 || strcmp(a, "--stdin-line") == 0) {
        o->lines = true;
    } else if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
        o->verbose = true;
    } else if (*i + 1 < argc && (strcmp(a, "-t") == 0 || strcmp(a, "--input") == 0)) {
        o->input = argv[++*i];
    } else if (*i + 1 < argc && (strcmp(a, "-m") == 0 || strcmp(a, "--message") == 0)) {
        o->message = argv[++*i];
    } else if (*i + 1 < argc && (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0)) {
        o->file = argv[++*i];
    } else if (*i + 1 < argc && strcmp(a, "--partition-key") == 0) {
        o->partition_key = argv[++*i];
    } else if (*i + 1 < argc && (strcmp(a, "-W") == 0 || strcmp(a, "--wait") == 0)) {
        char *end;
        errno = 0;
        o->wait_s = strtoul(argv[++*i], &end, 10);
        if (errno != 0 || *end != '\0' || o->wait_s == 0 || o->wait_s > 86400) {
            fprintf(stderr, "idevs-pub: -W: '%s' is not a whole number of seconds from 1 to 86400\n", argv[*i]);
            return EXIT_USAGE;
        }
    } else {
        return APP_OPTION_UNKNOWN;
    }
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    idevs_service_config cfg;
    pub_options o = {.wait_s = 10};
    int rc = app_parse_tool_options("idevs-pub", usage, argc, argv, &cfg, pub_option, &o);
    if (rc >= 0)
        return rc;
    if (o.input == NULL || (o.message != NULL) + (o.file != NULL) + o.lines != 1) {
        fprintf(stderr, "idevs-pub: give -t INPUT and exactly one of -m, -f, -l\n%s", usage);
        idevs_service_cli_free(&cfg);
        return EXIT_USAGE;
    }
    rc = EXIT_OK;
    char why[1024];
    app_install_signals();

    uint8_t *data = NULL;
    size_t len = 0;
    if (o.file != NULL && read_file(o.file, &data, &len) != EXIT_OK) {
        idevs_service_cli_free(&cfg);
        return EXIT_FAILED;
    }
    idevs_service *svc = NULL;
    idevs_err err = idevs_service_new(&cfg, NULL, NULL, &svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(svc, why, sizeof why);
    if (err != IDEVS_OK) {
        fprintf(stderr, "idevs-pub: %s (%s)\n", why, idevs_err_name(err));
        idevs_service_free(svc);
        idevs_service_cli_free(&cfg);
        free(data);
        return EXIT_FAILED;
    }
    pub_state st = {svc, o.input, {NULL, o.partition_key, o.partition_key != NULL ? strlen(o.partition_key) : 0},
                    o.verbose, now_ms() + o.wait_s * 1000u};
    if (o.message != NULL) {
        rc = publish_one(&st, (const uint8_t *)o.message, strlen(o.message));
    } else if (o.file != NULL) {
        rc = publish_one(&st, data, len);
    } else {
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while (rc == EXIT_OK && !app_stopping && (n = getline(&line, &cap, stdin)) >= 0) {
            size_t l = (size_t)n;
            while (l > 0 && (line[l - 1] == '\n' || line[l - 1] == '\r'))
                l--;
            if (l == 0)
                continue;
            st.deadline_ms = now_ms() + o.wait_s * 1000u;
            rc = publish_one(&st, (const uint8_t *)line, l);
            /* Keep the network moving between lines: acknowledgements, keepalive. */
            if (rc == EXIT_OK && idevs_service_run(svc, 0) != IDEVS_OK)
                rc = failed("%s", idevs_service_last_error(svc));
        }
        if (line != NULL)
            idevs_cleanse(line, cap);
        free(line);
    }
    if (rc == EXIT_OK) {
        err = idevs_service_flush(svc, (int)(o.wait_s * 1000u));
        idevs_service_stats stats;
        idevs_service_get_stats(svc, &stats);
        if (err != IDEVS_OK)
            rc = failed("%s (%s)", err == IDEVS_ERR_TIMEOUT ? "not every publication was acknowledged in time"
                                                          : idevs_service_last_error(svc),
                        idevs_err_name(err));
        else if (stats.refused > 0)
            rc = failed("the broker refused %llu publication(s)", (unsigned long long)stats.refused);
    }
    if (data != NULL)
        idevs_cleanse(data, len);
    free(data);
    idevs_service_free(svc);
    idevs_service_cli_free(&cfg);
    return rc;
}
