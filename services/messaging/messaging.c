/* messaging: receives the rewards process's confirmations (docs/CASESTUDY.md) and queues them in its own
 * SQLite outbox, the table a real SMS or WhatsApp gateway would drain.
 *
 *   messaging --db FILE [--count N] [--timeout S] [connection options]
 *
 * Each confirmation {phone, text} is stored once, keyed by its message id, with its provenance (the ids of the
 * sale's and the ride response's envelopes). Runs until SIGINT or SIGTERM, N messages, or S seconds. Prints
 * message ids and the booking reference the text names: never a phone number. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "idevs_envelope.h"
#include "idevs_service.h"
#include "outbox_db.h"

#define PHONE_MAX 32
#define TEXT_MAX 1024
#define REF_MAX 64

static const char usage[] =
    "usage: messaging --db FILE [--count N] [--timeout S] [connection options]\n"
    "Queues the confirmations of the process (default 'rewards') in the outbox of FILE (SQLite). Runs until\n"
    "interrupted, or N messages, or S seconds.\n"
    "\n";

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

typedef struct messaging {
    sqlite3 *db;
    unsigned long long handled, queued, repeated, refused;
} messaging;

static int member(const cJSON *j, const char *key, size_t max)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) && v->valuestring != NULL && v->valuestring[0] != '\0' &&
           strnlen(v->valuestring, max + 1) <= max;
}

/* The booking reference in "... (ref S-000042) ...", or "-". */
static void ref_in(const char *text, char out[REF_MAX + 1])
{
    const char *p = strstr(text, "(ref ");
    size_t n = 0;
    if (p != NULL) {
        p += 5;
        while (n < REF_MAX && ((p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= 'a' && p[n] <= 'z') ||
                               (p[n] >= '0' && p[n] <= '9') || p[n] == '.' || p[n] == '_' || p[n] == '-'))
            n++;
        if (p[n] != ')')
            n = 0;
    }
    if (n == 0) {
        strcpy(out, "-");
        return;
    }
    memcpy(out, p, n);
    out[n] = '\0';
}

static void on_message(idevs_service *svc, const idevs_service_message *msg, void *arg)
{
    (void)svc;
    messaging *m = arg;
    char id[IDEVS_UUID_STR_LEN], why[512] = "";
    idevs_uuid_format(&msg->message_id, id);
    if (msg->kind != IDEVS_SERVICE_OUTPUT || strcmp(msg->name, "confirmation") != 0) {
        fprintf(stderr, "messaging: ignored message %s on '%s': not a confirmation\n", id, msg->topic);
        return;
    }
    m->handled++;
    cJSON *j = NULL;
    if (memchr(msg->payload, '\0', msg->payload_len) == NULL)
        j = cJSON_ParseWithLengthOpts((const char *)msg->payload, msg->payload_len + 1, NULL, 1);
    int keys = 0, ok = cJSON_IsObject(j);
    for (const cJSON *c = ok ? j->child : NULL; c != NULL && ok; c = c->next, keys++)
        ok = strcmp(c->string, "phone") == 0 || strcmp(c->string, "text") == 0;
    ok = ok && keys == 2 && member(j, "phone", PHONE_MAX) && member(j, "text", TEXT_MAX);
    if (!ok) {
        m->refused++;
        fprintf(stderr, "messaging: refused message %s: not a confirmation {phone, text}\n", id);
        cJSON_Delete(j);
        return;
    }
    const char *phone = cJSON_GetObjectItemCaseSensitive(j, "phone")->valuestring;
    const char *text = cJSON_GetObjectItemCaseSensitive(j, "text")->valuestring;
    char provenance[IDEVS_PROVENANCE_MAX * IDEVS_UUID_STR_LEN + 1] = "";
    size_t used = 0;
    for (size_t i = 0; i < msg->provenance_count && i < IDEVS_PROVENANCE_MAX; i++) {
        char p[IDEVS_UUID_STR_LEN];
        idevs_uuid_format(&msg->provenance[i], p);
        used += (size_t)snprintf(provenance + used, sizeof provenance - used, "%s%s", i > 0 ? "," : "", p);
    }
    char ref[REF_MAX + 1];
    ref_in(text, ref);
    int stored = outbox_db_queue(m->db, id, phone, text, provenance, why, sizeof why);
    cJSON_Delete(j);
    if (stored < 0) {
        fprintf(stderr, "messaging: message %s not queued: %s\n", id, why);
        return;
    }
    if (stored > 0)
        m->queued++;
    else
        m->repeated++;
    printf("%s %s ref %s\n", stored > 0 ? "queued" : "already queued", id, ref);
    fflush(stdout);
}

static int whole(const char *text, unsigned long long max, unsigned long long *out)
{
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

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    const char *db_path = NULL;
    unsigned long long count = 0, timeout_s = 0;
    idevs_service_config cfg;
    idevs_service_config_default(&cfg);
    cfg.process = "rewards";
    char why[1024] = "";
    static char *name_default[] = {"--name", "messaging"};
    int zero = 0;
    idevs_service_cli_option(&cfg, 2, name_default, &zero, why, sizeof why);
    for (int i = 1; i < argc; i++) {
        int r = idevs_service_cli_option(&cfg, argc, argv, &i, why, sizeof why);
        if (r < 0) {
            fprintf(stderr, "messaging: %s\n\n%s%s", why, usage, idevs_service_cli_usage);
            idevs_service_cli_free(&cfg);
            return 2;
        }
        if (r > 0)
            continue;
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int ok = v != NULL;
        if (strcmp(a, "--help") == 0) {
            printf("%s%s", usage, idevs_service_cli_usage);
            idevs_service_cli_free(&cfg);
            return 0;
        } else if (strcmp(a, "--db") == 0 && v != NULL)
            db_path = v;
        else if (strcmp(a, "--count") == 0)
            ok = whole(v, UINT32_MAX, &count);
        else if (strcmp(a, "--timeout") == 0)
            ok = whole(v, 31536000, &timeout_s);
        else
            ok = 0;
        if (!ok) {
            fprintf(stderr, "messaging: unknown option, missing or bad value: %s\n\n%s%s", a, usage,
                    idevs_service_cli_usage);
            idevs_service_cli_free(&cfg);
            return 2;
        }
        i++;
    }
    if (db_path == NULL) {
        fprintf(stderr, "messaging: --db FILE is required\n\n%s%s", usage, idevs_service_cli_usage);
        idevs_service_cli_free(&cfg);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    int rc = 1;
    messaging m;
    memset(&m, 0, sizeof m);
    idevs_service *svc = NULL;
    m.db = outbox_db_open(db_path, why, sizeof why);
    if (m.db == NULL) {
        fprintf(stderr, "messaging: %s\n", why);
        goto out;
    }
    idevs_err err = idevs_service_new(&cfg, on_message, &m, &svc, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_service_start(svc, why, sizeof why);
    if (err != IDEVS_OK) {
        fprintf(stderr, "messaging: %s (%s)\n", why, idevs_strerror(err));
        goto out;
    }
    idevs_service_peer_info peer;
    idevs_service_peer(svc, &peer);
    printf("verified the compartment of '%s' (backend %s, measurement %02x%02x%02x%02x...); receiving confirmations\n",
           cfg.process, peer.backend != NULL ? peer.backend : "?", peer.measurement[0], peer.measurement[1],
           peer.measurement[2], peer.measurement[3]);
    fflush(stdout);
    int64_t deadline = timeout_s > 0 ? now_ms() + (int64_t)timeout_s * 1000 : 0;
    while (!stopping && (count == 0 || m.handled < count) && (deadline == 0 || now_ms() < deadline)) {
        err = idevs_service_run(svc, 100);
        if (err == IDEVS_ERR_NOT_NOW)
            break;
        if (err != IDEVS_OK)
            fprintf(stderr, "messaging: %s\n", idevs_service_last_error(svc));
    }
    printf("messaging: %llu messages, %llu queued, %llu already queued, %llu refused\n", m.handled, m.queued,
           m.repeated, m.refused);
    rc = 0;
out:
    idevs_service_free(svc);
    outbox_db_close(m.db);
    idevs_service_cli_free(&cfg);
    return rc;
}
