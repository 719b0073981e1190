/* bridge_probe.so: a Mosquitto plugin for tests/scale/probe_bridges.sh only. It logs what a plugin can see of
 * every MOSQ_EVT_MESSAGE and MOSQ_EVT_ACL_CHECK (client id, user name, address, the idevs-partition user
 * property), so that the script can state from a real broker's log how bridged messages reach a plugin. It also
 * publishes from inside the broker, as mosquitto_idevs.so does, when a message arrives on probe/trigger: once
 * with mosquitto_broker_publish_copy and once with mosquitto_broker_publish, to see whether bridges carry such
 * publications. It allows every ACL check except writes on the topic of its option plugin_opt_deny, to show
 * where the broker asks ACL plugins about a bridge's publications. */
#include <stdio.h>
#include <string.h>

#include <mosquitto.h>
#include <mosquitto_broker.h>
#include <mqtt_protocol.h>
#pragma GCC visibility push(default)
#include <mosquitto_plugin.h>
#pragma GCC visibility pop

#define PROBE_PREFIX "bridge-probe: "

static mosquitto_plugin_id_t *probe_id;
static char deny_topic[256]; /* plugin_opt_deny: writes there are refused; empty: none */

/* The address is NULL for a connection the broker opened itself (its own bridges): shown as "-". */
static const char *or_dash(const char *s) { return s != NULL ? s : "-"; }

static void describe(char *out, size_t size, struct mosquitto *client)
{
    if (client == NULL) {
        snprintf(out, size, "client=- user=- address=-");
        return;
    }
    snprintf(out, size, "client=%s user=%s address=%s", or_dash(mosquitto_client_id(client)),
             or_dash(mosquitto_client_username(client)), or_dash(mosquitto_client_address(client)));
}

static int on_message(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)userdata;
    struct mosquitto_evt_message *msg = event_data;
    char who[512];
    describe(who, sizeof who, msg->client);
    char *name = NULL, *value = NULL;
    for (const mosquitto_property *p = msg->properties; p != NULL && value == NULL; p = mosquitto_property_next(p)) {
        if (mosquitto_property_identifier(p) != MQTT_PROP_USER_PROPERTY ||
            mosquitto_property_read_string_pair(p, MQTT_PROP_USER_PROPERTY, &name, &value, false) == NULL)
            continue;
        if (strcmp(name, "idevs-partition") != 0) { /* only the property the design uses */
            mosquitto_free(name);
            mosquitto_free(value);
            name = value = NULL;
        }
    }
    mosquitto_log_printf(MOSQ_LOG_NOTICE, PROBE_PREFIX "MESSAGE topic=%s %s retain=%d partition=%s", msg->topic, who,
                         msg->retain ? 1 : 0, value != NULL ? value : "-");
    mosquitto_free(name);
    mosquitto_free(value);
    if (msg->topic != NULL && strcmp(msg->topic, "probe/trigger") == 0) {
        /* The plugin's own publications: no client, as idevs_routing_publish's. */
        mosquitto_broker_publish_copy(NULL, "probe/plugin/copy", (int)msg->payloadlen, msg->payload, 1, false, NULL);
        void *payload = mosquitto_malloc(msg->payloadlen + 1);
        if (payload != NULL) {
            memcpy(payload, msg->payload, msg->payloadlen);
            if (mosquitto_broker_publish(NULL, "probe/plugin/owned", (int)msg->payloadlen, payload, 1, true, NULL) !=
                MOSQ_ERR_SUCCESS)
                mosquitto_free(payload);
        }
    }
    return MOSQ_ERR_SUCCESS;
}

static int on_acl_check(int event, void *event_data, void *userdata)
{
    (void)event;
    (void)userdata;
    struct mosquitto_evt_acl_check *ed = event_data;
    if (ed->access != MOSQ_ACL_WRITE || ed->topic == NULL)
        return MOSQ_ERR_SUCCESS;
    char who[512];
    describe(who, sizeof who, ed->client);
    bool deny = deny_topic[0] != '\0' && strcmp(ed->topic, deny_topic) == 0;
    mosquitto_log_printf(MOSQ_LOG_NOTICE, PROBE_PREFIX "ACL_CHECK write topic=%s %s answer=%s", ed->topic, who,
                         deny ? "denied" : "allowed");
    return deny ? MOSQ_ERR_ACL_DENIED : MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_version(int supported_version_count, const int *supported_versions)
{
    for (int i = 0; i < supported_version_count; i++)
        if (supported_versions[i] == 5)
            return 5;
    return -1;
}

int mosquitto_plugin_init(mosquitto_plugin_id_t *identifier, void **userdata, struct mosquitto_opt *options,
                          int option_count)
{
    for (int i = 0; i < option_count; i++)
        if (strcmp(options[i].key, "deny") == 0)
            snprintf(deny_topic, sizeof deny_topic, "%s", options[i].value);
    *userdata = NULL;
    probe_id = identifier;
    if (mosquitto_callback_register(identifier, MOSQ_EVT_MESSAGE, on_message, NULL, NULL) != MOSQ_ERR_SUCCESS ||
        mosquitto_callback_register(identifier, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL, NULL) != MOSQ_ERR_SUCCESS)
        return MOSQ_ERR_INVAL;
    return MOSQ_ERR_SUCCESS;
}

int mosquitto_plugin_cleanup(void *userdata, struct mosquitto_opt *options, int option_count)
{
    (void)userdata;
    (void)options;
    (void)option_count;
    mosquitto_callback_unregister(probe_id, MOSQ_EVT_MESSAGE, on_message, NULL);
    mosquitto_callback_unregister(probe_id, MOSQ_EVT_ACL_CHECK, on_acl_check, NULL);
    return MOSQ_ERR_SUCCESS;
}
