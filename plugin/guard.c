/* The guard: only the plugin publishes on a process's protected topics (outputs, requests, certificate,
 * descriptor). It holds at two places, so that it holds whatever other ACL sources the broker has:
 *   - ACL_CHECK refuses a client's write there. Mosquitto 2.0.11 asks ACL plugins in the order of their plugin
 *     lines, then the acl_file, and stops at the first answer that is not "defer": this refusal is reached when
 *     idevs comes first, or when the sources before it defer. Wills are only ever checked here.
 *   - MESSAGE drops a client's message there whatever the ACL sources answered (an ACL plugin loaded before
 *     idevs may have allowed it), and says loudly once that the arrangement lets wills through.
 * The plugin's own publications are queued without a client and are checked by neither. Reads and
 * subscriptions are never refused here: receivers must be able to subscribe.
 *
 * Peers (docs/SCALING.md): when several brokers serve a process, their plugins' publications reach this broker
 * through Mosquitto's bridges, and pass both places when they come from a peer: a client whose user name is a
 * plugin_opt_peer_user (a peer's bridge; the broker's password_file must authenticate that name: a client id
 * proves nothing), or one of this broker's own bridges named by plugin_opt_peer_bridge (a connection the broker
 * opened itself, which has no address: a client that takes the bridge's id has one). The process's certificate and
 * descriptor topics stay this broker's own: every broker publishes them, for the same keys and descriptor.
 *
 * For every other topic the guard never grants what another ACL source would refuse: it answers "allowed" only
 * when it is the broker's only ACL source (acl_sources.h: read from the broker's configuration file at start and
 * on every RELOAD), and "defer" otherwise. plugin_opt_acl_others, when given, must agree with what the file
 * says; the start is refused when it does not. */
#include <string.h>

#include "acl_sources.h"
#include "idevs_plugin.h"

static const char *answer_name(bool allow)
{
    return allow ? "allowed (idevs is the broker's only ACL source)" : "left to the broker's other ACL sources";
}

bool idevs_guard_decide(idevs_plugin *p, bool reload)
{
    idevs_acl_sources src;
    idevs_acl_sources_of_broker(&src);
    idevs_acl_others given = p->cfg.acl_others;
    bool allow;
    if (!src.known) {
        if (given == IDEVS_ACL_OTHERS_UNSET && !reload) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_acl_others: missing, and the "
                                 "broker's configuration does not say whether idevs is its only ACL source (%s): "
                                 "say 'allow' (it is) or 'defer' (an acl_file or another plugin decides)", src.why);
            return false;
        }
        allow = given == IDEVS_ACL_OTHERS_UNSET ? p->acl_allow : given == IDEVS_ACL_OTHERS_ALLOW;
        mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "cannot check which ACL sources the broker "
                             "has (%s); topics no process protects stay %s", src.why, answer_name(allow));
    } else if (src.others) {
        if (given == IDEVS_ACL_OTHERS_ALLOW) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_acl_others allow: the broker has "
                                 "another ACL source, %s, and idevs would grant what it refuses: say 'defer', or "
                                 "leave the option out%s", src.first, reload ? "; idevs defers from now on" : "");
            if (!reload)
                return false;
        }
        allow = false;
    } else {
        if (given == IDEVS_ACL_OTHERS_DEFER) {
            mosquitto_log_printf(reload ? MOSQ_LOG_WARNING : MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX
                                 "plugin_opt_acl_others defer: idevs is the broker's only ACL source (no acl_file "
                                 "and no other plugin line in its configuration), so every client would be refused "
                                 "every topic: say 'allow', or leave the option out");
            if (!reload)
                return false;
        }
        allow = given != IDEVS_ACL_OTHERS_DEFER;
    }
    if (!reload || allow != p->acl_allow)
        mosquitto_log_printf(reload ? MOSQ_LOG_NOTICE : MOSQ_LOG_INFO, IDEVS_PLUGIN_LOG_PREFIX "topics no process "
                             "protects: %s%s%s", answer_name(allow), src.others ? ", the first " : "",
                             src.others ? src.first : "");
    p->acl_allow = allow;
    return true;
}

static bool listed(const idevs_text_list *list, const char *name)
{
    for (size_t i = 0; name != NULL && i < list->count; i++)
        if (strcmp(list->items[i], name) == 0)
            return true;
    return false;
}

bool idevs_guard_peer_may_publish(idevs_process *proc, const char *topic, struct mosquitto *client)
{
    const idevs_plugin_config *c = &proc->plugin->cfg;
    if (client == NULL || topic == NULL || (c->peer_users.count == 0 && c->peer_bridges.count == 0) ||
        strcmp(topic, idevs_launcher_certificate_topic(proc->launcher)) == 0 ||
        strcmp(topic, idevs_launcher_descriptor_topic(proc->launcher)) == 0)
        return false;
    bool peer = listed(&c->peer_users, mosquitto_client_username(client)) ||
                (mosquitto_client_address(client) == NULL && listed(&c->peer_bridges, mosquitto_client_id(client)));
    if (!peer)
        return false;
    /* Another broker's compartment under one of this broker's instance numbers: two brokers share an instance
     * base, and receivers would take the two for one instance (its epochs and replay windows). Refused, and said. */
    for (size_t i = 0; i < idevs_launcher_instance_count(proc->launcher); i++)
        if (strcmp(topic, idevs_launcher_instance_certificate_topic(proc->launcher, i)) == 0) {
            if (!proc->warned_instance_clash) {
                proc->warned_instance_clash = true;
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "'%s': a peer broker published the "
                                     "certificate of an instance numbered as one of this broker's, on '%s': two "
                                     "brokers use the same instance numbers; give each its own "
                                     "plugin_opt_instance_base (docs/SCALING.md)", idevs_process_name(proc), topic);
            }
            return false;
        }
    return true;
}

int idevs_guard_on_acl_check(int event, void *event_data, void *userdata)
{
    (void)event;
    idevs_plugin *p = userdata;
    const struct mosquitto_evt_acl_check *ed = event_data;
    if (ed->access == MOSQ_ACL_WRITE && ed->topic != NULL) {
        idevs_topic_kind kind;
        const char *topic = NULL;
        idevs_process *proc = idevs_processes_find(p, ed->topic, &kind, &topic);
        bool protected = kind == IDEVS_TOPIC_PROTECTED || kind == IDEVS_TOPIC_JOIN;
        if (proc != NULL && protected && idevs_guard_peer_may_publish(proc, ed->topic, ed->client))
            return MOSQ_ERR_SUCCESS;
        if (proc != NULL && protected) {
            if (topic == NULL) /* a grant's topic: no copy that outlives the event, for the log */
                topic = IDEVS_JOIN_GRANT_LOG;
            proc->metrics.guard_denied++;
            const char *id = ed->client != NULL ? mosquitto_client_id(ed->client) : NULL;
            if (idevs_rejections_guard_hold(proc, topic, id, ed->payloadlen))
                return MOSQ_ERR_ACL_DENIED;
            char who[IDEVS_CLIENT_LOG_MAX + 1];
            idevs_rejections_copy_client(who, id);
            mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': refused a publication by client '%s' "
                                 "on '%s': only the plugin publishes there",
                                 idevs_process_name(proc), who, topic);
            return MOSQ_ERR_ACL_DENIED;
        }
    }
    return p->acl_allow ? MOSQ_ERR_SUCCESS : MOSQ_ERR_PLUGIN_DEFER;
}

int idevs_guard_refuse_message(idevs_process *proc, const char *topic, const char *client, size_t size)
{
    proc->metrics.guard_denied++;
    char who[IDEVS_CLIENT_LOG_MAX + 1];
    idevs_rejections_copy_client(who, client);
    if (!proc->warned_acl_order) { /* once, whatever the rate limit: the operator must act on it */
        proc->warned_acl_order = true;
        mosquitto_log_printf(MOSQ_LOG_WARNING, IDEVS_PLUGIN_LOG_PREFIX "'%s': client '%s' was allowed to publish on "
                             "'%s' by an ACL source asked before idevs (a plugin line above mosquitto_idevs.so, or a "
                             "bridge); the message is dropped, but a client's will on that topic would not be: load "
                             "mosquitto_idevs.so first, or deny writes on the process's topics in that source "
                             "(docs/OPERATOR.md, \"The guard\")",
                             idevs_process_name(proc), who, topic);
    } else if (!idevs_rejections_guard_hold(proc, topic, client, size)) {
        mosquitto_log_printf(MOSQ_LOG_NOTICE, IDEVS_PLUGIN_LOG_PREFIX "'%s': dropped a publication by client '%s' on "
                             "'%s': only the plugin publishes there",
                             idevs_process_name(proc), who, topic);
    }
    return MOSQ_ERR_ACL_DENIED;
}
