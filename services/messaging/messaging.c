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

#include "idevs_envelope.h"
#include "idevs_service.h"
#include "idevs_service_app.h"
#include "json_in.h"
#include "outbox_db.h"

#define PHONE_MAX 32
#define TEXT_MAX 1024
#define REF_MAX 64

static const char usage[] =
    "usage: messaging --db FILE [--count N] [--timeout S] [connection options]\n"
    "Queues the confirmations of the process (default 'rewards') in the outbox of FILE (SQLite). Runs until\n"
    "interrupted, or N messages, or S seconds.\n"
    "\n";

/* {phone, text}: exactly these keys, each once, a phone number and a text, read as strictly as every payload of the
 * case study (json_in.h). */
static int parse_confirmation(const idevs_service_message *msg, char phone[PHONE_MAX + 1], char text[TEXT_MAX + 1])
{
    static const char *const keys[] = {"phone", "text"};
    cJSON *j = json_in_parse_object((const char *)msg->payload, msg->payload_len);
    int ok = json_in_keys_exactly(j, keys, 2) && json_in_string(j, "phone", JSON_IN_PHONE, phone, PHONE_MAX) &&
             json_in_string(j, "text", JSON_IN_TEXT, text, TEXT_MAX);
    json_in_delete(j);
    return ok;
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
    app_receiver_state *m = arg;
    char id[IDEVS_UUID_STR_LEN], why[512] = "";
    idevs_uuid_format(&msg->message_id, id);
    char phone[PHONE_MAX + 1], text[TEXT_MAX + 1];
    if (!parse_confirmation(msg, phone, text)) {
        m->refused++;
        fprintf(stderr, "messaging: refused message %s: not a confirmation {phone, text}\n", id);
        return;
    }
    char provenance[APP_PROVENANCE_LEN];
    app_provenance(msg, provenance);
    char ref[REF_MAX + 1];
    ref_in(text, ref);
    int stored = outbox_db_queue(m->db, id, phone, text, provenance, why, sizeof why);
    explicit_bzero(phone, sizeof phone); /* personal data */
    explicit_bzero(text, sizeof text);
    if (stored < 0) {
        fprintf(stderr, "messaging: message %s not queued: %s\n", id, why);
        return;
    }
    if (stored > 0)
        m->done++;
    else
        m->repeated++;
    printf("%s %s ref %s\n", stored > 0 ? "queued" : "already queued", id, ref);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    static const app_receiver messaging = {.prog = "messaging", .process = "rewards", .usage = usage,
        .schema = outbox_db_schema, .kind = IDEVS_SERVICE_OUTPUT, .name = "confirmation", .what = "a confirmation",
        .on_message = on_message, .doing = "receiving confirmations",
        .labels = {"messages", "queued", "already queued"}};
    return app_receiver_main(&messaging, argc, argv);
}
