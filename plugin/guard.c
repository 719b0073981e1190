/* The guard: only the plugin publishes on output, request, certificate and descriptor topics. The plugin's own
 * publications are queued without a client and are not checked; a client's write there is refused. Reads and
 * subscriptions are never refused here: receivers must be able to subscribe. */
#include <string.h>

#include "idevs_plugin.h"

int idevs_guard_on_acl_check(int event, void *event_data, void *userdata)
{
    (void)event;
    idevs_plugin *p = userdata;
    const struct mosquitto_evt_acl_check *ed = event_data;
    if (ed->access == MOSQ_ACL_WRITE && ed->topic != NULL && idevs_routing_is_output_topic(p, ed->topic)) {
        p->metrics.guard_denied++;
        const char *id = ed->client != NULL ? mosquitto_client_id(ed->client) : NULL;
        mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "refused a publication by client '%s' on '%s': "
                             "only the plugin publishes there",
                             id != NULL ? id : "?", ed->topic);
        return MOSQ_ERR_ACL_DENIED;
    }
    /* Mosquitto 2.0.11 denies what every ACL plugin defers: with idevs alone, allow; with another ACL plugin
     * loaded after this one (plugin_opt_acl_others defer), let it decide. */
    return p->cfg.acl_others == IDEVS_ACL_OTHERS_DEFER ? MOSQ_ERR_PLUGIN_DEFER : MOSQ_ERR_SUCCESS;
}
