/* Counters, published as retained messages under $SYS/broker/idevs/<process>/ for each process and under
 * $SYS/broker/idevs/totals/ summed over the processes running, every metrics_interval_s (clients cannot write
 * under $SYS: the broker refuses it before any plugin is asked). Rejections appear as rejected/<reason> once a
 * reason has been seen: about fifty reasons exist, most never happen. The refusals a logic gave with a code its
 * descriptor declares (idevs_refuse) appear as refused/<code> once counted, per process and in total (summed by
 * code: each process declares its own). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_plugin.h"

/* The launcher's figures that are published beside the plugin's own. */
typedef struct launcher_figures {
    uint64_t restarts, queue_depth, in_flight, released_unrecorded, queued_while_down;
    uint64_t outbox, outbox_resent, outbox_expired, outbox_resealed; /* kept until receipted (launcher/outbox.c) */
    uint64_t instances, instances_ready, partition_ignored; /* the pool (docs/SCALING.md) */
    uint64_t join_waiting, joined, joins_granted, joins_refused, join_grants_refused; /* joining (SCALING.md) */
} launcher_figures;

static void publish_counter(idevs_process *via, const char *scope, const char *name, uint64_t value)
{
    char topic[256] /* process names have at most 64 bytes */, text[32];
    snprintf(topic, sizeof topic, "$SYS/broker/idevs/%s/%s", scope, name);
    int n = snprintf(text, sizeof text, "%" PRIu64, value);
    (void)idevs_routing_publish(via, topic, text, (size_t)n, 0, true, NULL);
}

static void publish_all(idevs_process *via, const char *scope, const idevs_metrics *m, const launcher_figures *f)
{
    publish_counter(via, scope, "received", m->received);
    publish_counter(via, scope, "routed", m->routed);
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        if (m->rejected[i] > 0) {
            char name[64];
            snprintf(name, sizeof name, "rejected/%s", idevs_err_name((idevs_err)i));
            publish_counter(via, scope, name, m->rejected[i]);
        }
    publish_counter(via, scope, "done/ok", m->done_ok);
    publish_counter(via, scope, "done/failed", m->done_failed);
    publish_counter(via, scope, "emitted", m->emitted);
    publish_counter(via, scope, "receipts", m->receipts);
    publish_counter(via, scope, "receipts_in", m->receipts_in);
    publish_counter(via, scope, "publish_failed", m->publish_failed);
    publish_counter(via, scope, "guard_denied", m->guard_denied);
    publish_counter(via, scope, "from_peers", m->from_peers);
    publish_counter(via, scope, "restarts", f->restarts);
    publish_counter(via, scope, "certificate_renewals", m->certificate_renewals);
    publish_counter(via, scope, "queue_depth", f->queue_depth);
    publish_counter(via, scope, "in_flight", f->in_flight);
    publish_counter(via, scope, "released_unrecorded", f->released_unrecorded);
    publish_counter(via, scope, "queued_while_down", f->queued_while_down);
    publish_counter(via, scope, "outbox", f->outbox);
    publish_counter(via, scope, "outbox_resent", f->outbox_resent);
    publish_counter(via, scope, "outbox_expired", f->outbox_expired);
    publish_counter(via, scope, "outbox_resealed", f->outbox_resealed);
    publish_counter(via, scope, "instances", f->instances);
    publish_counter(via, scope, "instances_ready", f->instances_ready);
    publish_counter(via, scope, "partition_ignored", f->partition_ignored);
    publish_counter(via, scope, "join_waiting", f->join_waiting);
    publish_counter(via, scope, "joined", f->joined);
    publish_counter(via, scope, "joins_granted", f->joins_granted);
    publish_counter(via, scope, "joins_refused", f->joins_refused);
    publish_counter(via, scope, "join_grants_refused", f->join_grants_refused);
}

/* refused/<code> of one process: the codes it counted. */
static void publish_refused(idevs_process *proc)
{
    for (size_t i = 0; i < IDEVS_LAUNCHER_REFUSALS_MAX; i++)
        if (proc->metrics.refused[i] > 0 && proc->refusal_code[i] != NULL) {
            char name[64];
            snprintf(name, sizeof name, "refused/%s", proc->refusal_code[i]);
            publish_counter(proc, idevs_process_name(proc), name, proc->metrics.refused[i]);
        }
}

typedef struct code_count {
    const char *code;
    uint64_t n;
} code_count;

static int by_code(const void *a, const void *b)
{
    return strcmp(((const code_count *)a)->code, ((const code_count *)b)->code);
}

/* totals/refused/<code>: the processes' counts summed by code. */
static void publish_refused_totals(idevs_plugin *p)
{
    code_count *all = malloc(p->proc_count * IDEVS_LAUNCHER_REFUSALS_MAX * sizeof *all);
    if (all == NULL)
        return; /* the next interval publishes them */
    size_t n = 0;
    for (size_t i = 0; i < p->proc_count; i++)
        for (size_t k = 0; k < IDEVS_LAUNCHER_REFUSALS_MAX; k++)
            if (p->procs[i]->metrics.refused[k] > 0 && p->procs[i]->refusal_code[k] != NULL)
                all[n++] = (code_count){p->procs[i]->refusal_code[k], p->procs[i]->metrics.refused[k]};
    qsort(all, n, sizeof *all, by_code);
    for (size_t i = 0, j; i < n; i = j) {
        uint64_t sum = 0;
        for (j = i; j < n && strcmp(all[j].code, all[i].code) == 0; j++)
            sum += all[j].n;
        char name[64];
        snprintf(name, sizeof name, "refused/%s", all[i].code);
        publish_counter(p->procs[0], IDEVS_METRICS_TOTALS, name, sum);
    }
    free(all);
}

static void add(idevs_metrics *sum, const idevs_metrics *m)
{
    sum->received += m->received;
    sum->routed += m->routed;
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        sum->rejected[i] += m->rejected[i];
    sum->done_ok += m->done_ok;
    sum->done_failed += m->done_failed;
    sum->emitted += m->emitted;
    sum->receipts += m->receipts;
    sum->receipts_in += m->receipts_in;
    sum->publish_failed += m->publish_failed;
    sum->guard_denied += m->guard_denied;
    sum->from_peers += m->from_peers;
    sum->certificate_renewals += m->certificate_renewals;
}

void idevs_metrics_tick(idevs_plugin *p, time_t now)
{
    if (p->cfg.metrics_interval_s == 0 || p->proc_count == 0 || now < p->metrics_next)
        return;
    p->metrics_next = now + (time_t)p->cfg.metrics_interval_s;
    idevs_metrics sum;
    memset(&sum, 0, sizeof sum);
    launcher_figures total;
    memset(&total, 0, sizeof total);
    for (size_t i = 0; i < p->proc_count; i++) {
        idevs_process *proc = p->procs[i];
        idevs_launcher_stats st;
        idevs_launcher_get_stats(proc->launcher, &st);
        launcher_figures f = {st.restarts, st.queue_depth, st.in_flight, st.released_unrecorded,
                              st.queued_while_down, st.outbox, st.outbox_resent, st.outbox_expired,
                              st.outbox_resealed, st.instances, st.instances_ready, st.partition_ignored,
                              st.join_waiting, st.joined, st.joins_granted, st.joins_refused,
                              st.join_grants_refused};
        publish_all(proc, idevs_process_name(proc), &proc->metrics, &f);
        publish_refused(proc);
        add(&sum, &proc->metrics);
        total.restarts += f.restarts;
        total.queue_depth += f.queue_depth;
        total.in_flight += f.in_flight;
        total.released_unrecorded += f.released_unrecorded;
        total.queued_while_down += f.queued_while_down;
        total.outbox += f.outbox;
        total.outbox_resent += f.outbox_resent;
        total.outbox_expired += f.outbox_expired;
        total.outbox_resealed += f.outbox_resealed;
        total.instances += f.instances;
        total.instances_ready += f.instances_ready;
        total.partition_ignored += f.partition_ignored;
        total.join_waiting += f.join_waiting;
        total.joined += f.joined;
        total.joins_granted += f.joins_granted;
        total.joins_refused += f.joins_refused;
        total.join_grants_refused += f.join_grants_refused;
    }
    /* Publication failures of the totals are counted against the first process: somewhere to count them. */
    publish_all(p->procs[0], IDEVS_METRICS_TOTALS, &sum, &total);
    publish_refused_totals(p);
    publish_counter(p->procs[0], IDEVS_METRICS_TOTALS, "processes", p->proc_count);
}

void idevs_metrics_clear(idevs_process *proc)
{
    /* Retained counters of a process that no longer runs would mislead: an empty retained message removes each
     * one the process could have published. */
    static const char *const names[] = {"received", "routed", "done/ok", "done/failed", "emitted", "receipts",
                                        "receipts_in", "publish_failed", "guard_denied", "restarts",
                                        "certificate_renewals", "queue_depth", "in_flight", "released_unrecorded",
                                        "queued_while_down", "outbox", "outbox_resent", "outbox_expired",
                                        "outbox_resealed",
                                        "join_waiting", "joined", "joins_granted", "joins_refused",
                                        "join_grants_refused"};
    char topic[256] /* process names have at most 64 bytes */;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(topic, sizeof topic, "$SYS/broker/idevs/%s/%s", idevs_process_name(proc), names[i]);
        (void)idevs_routing_publish(proc, topic, NULL, 0, 0, true, NULL);
    }
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        if (proc->metrics.rejected[i] > 0) {
            snprintf(topic, sizeof topic, "$SYS/broker/idevs/%s/rejected/%s", idevs_process_name(proc),
                     idevs_err_name((idevs_err)i));
            (void)idevs_routing_publish(proc, topic, NULL, 0, 0, true, NULL);
        }
    for (size_t i = 0; i < IDEVS_LAUNCHER_REFUSALS_MAX; i++)
        if (proc->metrics.refused[i] > 0 && proc->refusal_code[i] != NULL) {
            snprintf(topic, sizeof topic, "$SYS/broker/idevs/%s/refused/%s", idevs_process_name(proc),
                     proc->refusal_code[i]);
            (void)idevs_routing_publish(proc, topic, NULL, 0, 0, true, NULL);
        }
}
