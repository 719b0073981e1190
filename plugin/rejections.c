/* Rejections: every envelope the plugin refuses before the compartment, and every delivery the compartment
 * ends with an error, is counted by reason (idevs_err_name) and logged. A flood of bad envelopes must not flood
 * the log: per reason, at most one line per log_interval_s; the lines held back in an interval are summed up in
 * one line when it ends. Lines name the reason, topic, client id and size, never a payload. A delivery the logic
 * refused with a code its descriptor declares (idevs_refuse) is counted under that code too and its line names
 * the code, rate-limited per code. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "idevs_plugin.h"

#define NOTES_MAX 4096 /* deliveries remembered for their log line; older ones are logged without a client */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* A client id is the client's choice: in a log line it is cut at IDEVS_CLIENT_LOG_MAX bytes, and every byte
 * that is not printable ASCII, or the quote around it, becomes '?', so that it cannot end the line, forge
 * another or reach a terminal as an escape. Mosquitto 2.0.11 refuses control characters in a CONNECT's client
 * id; this does not rely on it. */
void idevs_rejections_copy_client(char dst[IDEVS_CLIENT_LOG_MAX + 1], const char *client)
{
    if (client == NULL)
        client = "?";
    size_t n = strnlen(client, IDEVS_CLIENT_LOG_MAX);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)client[i];
        dst[i] = c >= 0x20 && c <= 0x7e && c != '\'' ? (char)c : '?';
    }
    dst[n] = '\0';
}

bool idevs_rejections_init(idevs_process *proc, size_t queue_depth)
{
    size_t n = queue_depth;
    if (n == 0)
        n = 1;
    if (n > NOTES_MAX)
        n = NOTES_MAX;
    proc->notes = calloc(n, sizeof *proc->notes);
    if (proc->notes == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
        return false;
    }
    proc->note_count = n;
    return true;
}

void idevs_rejections_free(idevs_process *proc)
{
    free(proc->notes);
    proc->notes = NULL;
    proc->note_count = 0;
}

void idevs_rejections_note(idevs_process *proc, uint64_t id, const char *topic, const char *client, size_t size)
{
    if (proc->note_count == 0 || id == 0)
        return;
    idevs_delivery_note *n = &proc->notes[id % proc->note_count];
    n->id = id;
    n->topic = topic;
    n->size = size;
    n->refusal_logged = false;
    n->receipt = false;
    idevs_rejections_copy_client(n->client, client);
}

void idevs_rejections_note_receipt(idevs_process *proc, uint64_t id)
{
    if (proc->note_count > 0 && proc->notes[id % proc->note_count].id == id)
        proc->notes[id % proc->note_count].receipt = true;
}

bool idevs_rejections_is_receipt(const idevs_process *proc, uint64_t id)
{
    return proc->note_count > 0 && proc->notes[id % proc->note_count].id == id &&
           proc->notes[id % proc->note_count].receipt;
}

/* Operational trouble is a warning (a logic that breaks its sandbox is); an envelope that fails its checks is
 * routine on an open broker; a client's own retransmission (MQTT DUP) is no attack at all. */
static int level_for(idevs_err reason)
{
    switch (reason) {
    case IDEVS_ERR_QUEUE_FULL:
    case IDEVS_ERR_QUEUE_CLIENT_SHARE: /* a client, or the clients naming one sender, flooding: worth a look */
    case IDEVS_ERR_QUEUE_SENDER_SHARE:
    case IDEVS_ERR_NOT_NOW:
    case IDEVS_ERR_NOMEM:
    case IDEVS_ERR_TIMEOUT:
    case IDEVS_ERR_CHANNEL_CLOSED:
    case IDEVS_ERR_FRAME:
    case IDEVS_ERR_SANDBOX:
    case IDEVS_ERR_SANDBOX_VIOLATION:
        return MOSQ_LOG_WARNING;
    case IDEVS_ERR_DUPLICATE:
    case IDEVS_ERR_ALREADY_DONE: /* a sender's own retransmission: receipted again */
        return MOSQ_LOG_INFO;
    case IDEVS_ERR_NOT_OWNER: /* another broker's input: the normal case when several serve a process */
        return MOSQ_LOG_DEBUG;
    default:
        return MOSQ_LOG_NOTICE;
    }
}

/* The summary of the lines held back in r; what says what they were about. */
static void log_summary(idevs_process *proc, int level, const char *what, idevs_drop_log *r)
{
    mosquitto_log_printf(level,
                         IDEVS_PLUGIN_LOG_PREFIX "'%s': %" PRIu64 " more %s in the last %u s; the last on '%s' from "
                         "client '%s' (%zu bytes)",
                         idevs_process_name(proc), r->held, what, proc->plugin->cfg.log_interval_s,
                         r->last_topic != NULL ? r->last_topic : "?", r->last_client, r->last_size);
    r->held = 0;
}

static void what_dropped(idevs_err reason, char *out, size_t out_len)
{
    snprintf(out, out_len, "envelope(s) dropped for %s", idevs_err_name(reason));
}

#define GUARD_WHAT "publication(s) refused on protected topics"

/* The rate limit, one window per kind of line: true when this line is held back (it is counted in r and summed
 * up when the window ends); false when it is to be written now, which starts a window. */
static bool hold_back(idevs_process *proc, idevs_drop_log *r, int level, const char *what, const char *topic,
                      const char *client, size_t size)
{
    uint64_t now = now_ms();
    if (now < r->window_end_ms || r->held > 0) {
        /* Held back; when a window ended before the next TICK could sum it up, this line closes it. */
        r->held++;
        r->last_topic = topic;
        idevs_rejections_copy_client(r->last_client, client);
        r->last_size = size;
        if (now >= r->window_end_ms) {
            log_summary(proc, level, what, r);
            r->window_end_ms = now + (uint64_t)proc->plugin->cfg.log_interval_s * 1000u;
        }
        return true;
    }
    r->window_end_ms = now + (uint64_t)proc->plugin->cfg.log_interval_s * 1000u;
    return false;
}

/* Counts one rejection and logs it, or holds its line back. delivery_id 0: the plugin refused it. */
static void reject(idevs_process *proc, idevs_err reason, const char *topic, const char *client, size_t size,
                   uint64_t delivery_id)
{
    if ((unsigned)reason >= IDEVS_ERR_COUNT || reason == IDEVS_OK)
        reason = IDEVS_ERR_LOGIC; /* never happens: the launcher maps unknown statuses; keep the index valid */
    proc->metrics.rejected[reason]++;
    char what[96];
    what_dropped(reason, what, sizeof what);
    if (hold_back(proc, &proc->drop_log[reason], level_for(reason), what, topic, client, size))
        return;
    char who[IDEVS_CLIENT_LOG_MAX + 1];
    idevs_rejections_copy_client(who, client);
    char by[48] = "the plugin";
    if (delivery_id != 0)
        snprintf(by, sizeof by, "the compartment (delivery %" PRIu64 ")", delivery_id);
    mosquitto_log_printf(level_for(reason),
                         IDEVS_PLUGIN_LOG_PREFIX "'%s': envelope on '%s' from client '%s' (%zu bytes) dropped by %s: "
                         "%s: %s",
                         idevs_process_name(proc), topic != NULL ? topic : "?", who, size, by, idevs_err_name(reason),
                         idevs_strerror(reason));
}

bool idevs_rejections_guard_hold(idevs_process *proc, const char *topic, const char *client, size_t size)
{
    return hold_back(proc, &proc->guard_log, MOSQ_LOG_NOTICE, GUARD_WHAT, topic, client, size);
}

void idevs_rejections_refused(idevs_process *proc, idevs_err reason, const char *topic, const char *client, size_t size)
{
    reject(proc, reason, topic, client, size, 0);
}

void idevs_rejections_done(idevs_process *proc, uint64_t id, idevs_err status)
{
    idevs_delivery_note *n = proc->note_count > 0 ? &proc->notes[id % proc->note_count] : NULL;
    bool known = n != NULL && n->id == id;
    if (known && n->refusal_logged && status == IDEVS_ERR_LOGIC)
        proc->metrics.rejected[status]++; /* counted; its line, with the logic's code, is written */
    else if (status != IDEVS_OK)
        reject(proc, status, known ? n->topic : NULL, known ? n->client : NULL, known ? n->size : 0, id);
    if (known) {
        n->id = 0;
        n->refusal_logged = false;
    }
}

static void what_refused(const char *code, char *out, size_t out_len)
{
    snprintf(out, out_len, "envelope(s) refused by the logic: %s", code);
}

void idevs_rejections_refusal(idevs_process *proc, uint64_t id, size_t index, const char *code)
{
    if (index >= IDEVS_LAUNCHER_REFUSALS_MAX || code == NULL)
        return; /* never happens: the launcher checked it against the descriptor */
    proc->metrics.refused[index]++;
    proc->refusal_code[index] = code;
    idevs_delivery_note *n = proc->note_count > 0 ? &proc->notes[id % proc->note_count] : NULL;
    bool known = n != NULL && n->id == id;
    const char *topic = known ? n->topic : NULL;
    const char *client = known ? n->client : NULL;
    size_t size = known ? n->size : 0;
    if (known)
        n->refusal_logged = true;
    char what[96];
    what_refused(code, what, sizeof what);
    if (hold_back(proc, &proc->refusal_log[index], MOSQ_LOG_NOTICE, what, topic, client, size))
        return;
    char who[IDEVS_CLIENT_LOG_MAX + 1];
    idevs_rejections_copy_client(who, client);
    mosquitto_log_printf(MOSQ_LOG_NOTICE,
                         IDEVS_PLUGIN_LOG_PREFIX "'%s': envelope on '%s' from client '%s' (%zu bytes) refused by the "
                         "logic (delivery %" PRIu64 "): %s",
                         idevs_process_name(proc), topic != NULL ? topic : "?", who, size, id, code);
}

/* The lines held back in r are due for their summary: its window has ended. */
static bool due(const idevs_drop_log *r, uint64_t now)
{
    return r->held > 0 && now >= r->window_end_ms;
}

/* The summary is this interval's line: the next one is held back until the next interval ends. */
static void summarize(idevs_process *proc, int level, const char *what, idevs_drop_log *r, uint64_t now)
{
    log_summary(proc, level, what, r);
    r->window_end_ms = now + (uint64_t)proc->plugin->cfg.log_interval_s * 1000u;
}

void idevs_rejections_flush(idevs_process *proc)
{
    uint64_t now = now_ms();
    char what[96];
    if (due(&proc->guard_log, now))
        summarize(proc, MOSQ_LOG_NOTICE, GUARD_WHAT, &proc->guard_log, now);
    for (size_t i = 0; i < IDEVS_LAUNCHER_REFUSALS_MAX; i++)
        if (due(&proc->refusal_log[i], now) && proc->refusal_code[i] != NULL) {
            what_refused(proc->refusal_code[i], what, sizeof what);
            summarize(proc, MOSQ_LOG_NOTICE, what, &proc->refusal_log[i], now);
        }
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        if (due(&proc->drop_log[i], now)) {
            what_dropped((idevs_err)i, what, sizeof what);
            summarize(proc, level_for((idevs_err)i), what, &proc->drop_log[i], now);
        }
}
