/* Counters, published as retained messages under $SYS/broker/idevs/<process>/ every metrics_interval_s
 * (clients cannot write under $SYS: the broker refuses it before any plugin is asked). Rejections appear as
 * rejected/<reason> once a reason has been seen: about fifty reasons exist, most never happen. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "idevs_plugin.h"

static void publish_counter(idevs_plugin *p, const char *name, uint64_t value)
{
    char topic[IDEVS_NAME_MAX + 96], text[32];
    snprintf(topic, sizeof topic, "$SYS/broker/idevs/%s/%s", p->deployment->name, name);
    int n = snprintf(text, sizeof text, "%" PRIu64, value);
    (void)idevs_routing_publish(p, topic, text, (size_t)n, 0, true, NULL);
}

void idevs_metrics_tick(idevs_plugin *p, time_t now)
{
    if (p->cfg.metrics_interval_s == 0 || p->launcher == NULL || now < p->metrics_next)
        return;
    p->metrics_next = now + (time_t)p->cfg.metrics_interval_s;
    idevs_launcher_stats st;
    idevs_launcher_get_stats(p->launcher, &st);
    const idevs_metrics *m = &p->metrics;
    publish_counter(p, "received", m->received);
    publish_counter(p, "routed", m->routed);
    for (size_t i = 0; i < IDEVS_ERR_COUNT; i++)
        if (m->rejected[i] > 0) {
            char name[64];
            snprintf(name, sizeof name, "rejected/%s", idevs_err_name((idevs_err)i));
            publish_counter(p, name, m->rejected[i]);
        }
    publish_counter(p, "done/ok", m->done_ok);
    publish_counter(p, "done/failed", m->done_failed);
    publish_counter(p, "emitted", m->emitted);
    publish_counter(p, "publish_failed", m->publish_failed);
    publish_counter(p, "guard_denied", m->guard_denied);
    publish_counter(p, "restarts", st.restarts);
    publish_counter(p, "queue_depth", st.queue_depth);
    publish_counter(p, "in_flight", st.in_flight);
}
