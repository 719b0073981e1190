/* messaging: receives the rewards process's confirmations (docs/CASESTUDY.md) and queues them in its own
 * SQLite outbox, the table a real SMS or WhatsApp gateway would drain.
 *
 *   messaging --db FILE [--count N] [--timeout S] [connection options]
 *
 * Each confirmation {phone, text} is stored once, keyed by its message id, with its provenance (the ids of the
 * sale's and the ride response's envelopes). Runs until SIGINT or SIGTERM, N messages, or S seconds. Prints
 * message ids and the booking reference the text names: never a phone number. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "idevs_envelope.h"
#include "idevs_service.h"
#include "idevs_service_app.h"
#include "outbox_db.h"

#define PHONE_MAX 32
#define TEXT_MAX 1024
#define REF_MAX 64

static const char usage[] =
    "usage: messaging --db FILE [--count N] [--timeout S] [connection options]\n"
    "Queues the confirmations of the process (default 'rewards') in the outbox of FILE (SQLite). Runs until\n"
    "interrupted, or N messages, or S seconds.\n"
    "\n";

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
    char provenance[APP_PROVENANCE_LEN];
    app_provenance(msg, provenance);
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

int main(int argc, char **argv)
{
    idevs_service_config cfg;
    app_receive_options opt;
    app_config_default(&cfg, "messaging");
    int rc = app_parse_receive_options("messaging", usage, argc, argv, &cfg, &opt);
    if (rc >= 0)
        return rc;
    app_install_signals();

    rc = 1;
    messaging m;
    memset(&m, 0, sizeof m);
    idevs_service *svc = NULL;
    char why[1024] = "";
    m.db = outbox_db_open(opt.db_path, why, sizeof why);
    if (m.db == NULL) {
        fprintf(stderr, "messaging: %s\n", why);
        goto out;
    }
    if (app_start_service("messaging", &cfg, on_message, &m, 4, &svc, "receiving confirmations") != IDEVS_OK)
        goto out;
    app_run("messaging", svc, &m.handled, opt.count, opt.timeout_s);
    printf("messaging: %llu messages, %llu queued, %llu already queued, %llu refused\n", m.handled, m.queued,
           m.repeated, m.refused);
    rc = 0;
out:
    idevs_service_free(svc);
    outbox_db_close(m.db);
    idevs_service_cli_free(&cfg);
    return rc;
}
