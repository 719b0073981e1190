/* Topics: what each topic is for this launcher's process, and whether two processes can share a broker. The
 * plugin asks; the rules live here, next to the descriptor that declares the topics. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "launcher_internal.h"

static bool join_topic(const idevs_launcher *l, const char *topic);

/* Every topic the process uses, for conflict checks: fills up to max, returns how many there are. */
static size_t all_topics(const idevs_launcher *l, const char **out, size_t max)
{
    const idevs_deployment *d = l->deployment;
    size_t n = 0;
#define ADD(t)            \
    do {                  \
        if (n < max)      \
            out[n] = (t); \
        n++;              \
    } while (0)
    for (size_t i = 0; i < d->input_count; i++)
        ADD(d->inputs[i].topic);
    for (size_t i = 0; i < d->output_count; i++)
        ADD(d->outputs[i].topic);
    for (size_t i = 0; i < d->request_count; i++) {
        ADD(d->requests[i].topic);
        ADD(d->requests[i].response_topic);
    }
    for (size_t i = 0; i < d->service_count; i++) {
        ADD(d->services[i].receipt_topic);
        ADD(d->services[i].receipt_from_topic);
    }
    ADD(l->certificate_topic);
    ADD(l->descriptor_topic);
    for (size_t i = 0; i < l->instance_count; i++)
        ADD(l->instance_topics[i]);
    ADD(l->join_request_topic);
#undef ADD
    return n;
}

#define TOPICS_MAX (7u * IDEVS_DEPLOYMENT_MAX_ENTRIES + 3u) /* instances: at most as many as entries */

/* The role topic has in the descriptor, for a message; NULL when it has none. */
static const char *declared_role(const idevs_deployment *d, const char *topic)
{
    if (idevs_deployment_input_by_topic(d, topic) != NULL)
        return "an input topic";
    if (idevs_deployment_request_by_response_topic(d, topic) != NULL)
        return "a response topic";
    for (size_t i = 0; i < d->output_count; i++)
        if (strcmp(d->outputs[i].topic, topic) == 0)
            return "an output topic";
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].topic, topic) == 0)
            return "a request topic";
    return NULL;
}

idevs_err topics_init(idevs_launcher *l, char *why, size_t why_len)
{
    l->certificate_topic = idevs_deployment_certificate_topic(l->name);
    l->descriptor_topic = idevs_deployment_descriptor_topic(l->name);
    l->instance_filter = idevs_deployment_instance_certificate_filter(l->name);
    if (l->certificate_topic == NULL || l->descriptor_topic == NULL || l->instance_filter == NULL ||
        join_init(l) != IDEVS_OK)
        return IDEVS_ERR_NOMEM;
    if ((l->instance_topics = calloc(l->instance_count, sizeof *l->instance_topics)) == NULL)
        return IDEVS_ERR_NOMEM;
    for (size_t i = 0; i < l->instance_count; i++)
        if ((l->instance_topics[i] = idevs_deployment_instance_certificate_topic(l->name, l->instances[i].number)) == NULL)
            return IDEVS_ERR_NOMEM;
    /* The descriptor's own topics must leave these to the plugin. */
    const char *mine[] = {l->certificate_topic, l->descriptor_topic};
    for (size_t k = 0; k < 2 + l->instance_count; k++) {
        const char *topic = k < 2 ? mine[k] : l->instance_topics[k - 2];
        const char *role = declared_role(l->deployment, topic);
        if (role != NULL) {
            snprintf(why, why_len, "%s: %s is '%s', where the plugin publishes the %s", l->descriptor_path, role,
                     topic, k == 1 ? "descriptor" : k == 0 ? "certificate" : "certificate of an instance");
            return IDEVS_ERR_CONFIG;
        }
    }
    /* idevs/<process>/join/...: the process's name is unique on a broker, so only its own descriptor can. */
    const idevs_deployment *dd = l->deployment;
    const char *declared[4 * IDEVS_DEPLOYMENT_MAX_ENTRIES];
    size_t nd = 0;
    for (size_t i = 0; i < dd->input_count; i++)
        declared[nd++] = dd->inputs[i].topic;
    for (size_t i = 0; i < dd->output_count; i++)
        declared[nd++] = dd->outputs[i].topic;
    for (size_t i = 0; i < dd->request_count; i++) {
        declared[nd++] = dd->requests[i].topic;
        declared[nd++] = dd->requests[i].response_topic;
    }
    for (size_t i = 0; i < nd; i++)
        if (join_topic(l, declared[i])) {
            snprintf(why, why_len, "%s: '%s' is a join topic of the process, where only plugins publish",
                     l->descriptor_path, declared[i]);
            return IDEVS_ERR_CONFIG;
        }
    const idevs_deployment *d = l->deployment;
    for (size_t i = 0; i < d->service_count; i++) {
        const char *receipts[2] = {d->services[i].receipt_topic, d->services[i].receipt_from_topic};
        for (size_t k = 0; k < 2; k++) {
            const char *role = declared_role(d, receipts[k]);
            if (role != NULL) {
                snprintf(why, why_len, "%s: %s is '%s', where receipts %s service '%s' travel", l->descriptor_path,
                         role, receipts[k], k == 0 ? "to" : "from", d->services[i].name);
                return IDEVS_ERR_CONFIG;
            }
        }
    }
    return IDEVS_OK;
}

/* idevs/<process>/join/request, or idevs/<process>/join/grant/ and 64 lowercase hex digits. */
static bool join_topic(const idevs_launcher *l, const char *topic)
{
    if (strcmp(topic, l->join_request_topic) == 0)
        return true;
    size_t n = strlen(l->join_grant_prefix);
    if (strncmp(topic, l->join_grant_prefix, n) != 0 || strlen(topic + n) != 2 * IDEVS_SHA256_LEN)
        return false;
    for (const char *p = topic + n; *p != '\0'; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* The service whose receipt topic this is; SIZE_MAX when none. */
size_t topics_receipt_service(const idevs_deployment *d, const char *topic)
{
    for (size_t i = 0; i < d->service_count; i++)
        if (strcmp(d->services[i].receipt_topic, topic) == 0)
            return i;
    return SIZE_MAX;
}

void topics_free(idevs_launcher *l)
{
    join_free(l);
    free(l->certificate_topic);
    l->certificate_topic = NULL;
    free(l->descriptor_topic);
    l->descriptor_topic = NULL;
    free(l->instance_filter);
    l->instance_filter = NULL;
    for (size_t i = 0; l->instance_topics != NULL && i < l->instance_count; i++)
        free(l->instance_topics[i]);
    free(l->instance_topics);
    l->instance_topics = NULL;
}

idevs_topic_kind topics_incoming(const idevs_deployment *d, const char *topic, const char **own_copy, size_t *sender)
{
    const idevs_deployment_input *in = idevs_deployment_input_by_topic(d, topic);
    if (in != NULL) {
        *own_copy = in->topic;
        *sender = in->from;
        return IDEVS_TOPIC_INPUT;
    }
    const idevs_deployment_request *rq = idevs_deployment_request_by_response_topic(d, topic);
    if (rq != NULL) {
        *own_copy = rq->response_topic;
        *sender = rq->to;
        return IDEVS_TOPIC_RESPONSE;
    }
    for (size_t i = 0; i < d->service_count; i++)
        if (strcmp(d->services[i].receipt_from_topic, topic) == 0) {
            *own_copy = d->services[i].receipt_from_topic;
            *sender = i;
            return IDEVS_TOPIC_RECEIPT;
        }
    return IDEVS_TOPIC_OTHER;
}

/* idevs/<process>/instance/<one level>/certificate, the filter's topics. */
static bool instance_certificate_topic(const idevs_launcher *l, const char *topic)
{
    const char *plus = strchr(l->instance_filter, '+');
    size_t head = (size_t)(plus - l->instance_filter), tail = strlen(plus + 1), len = strlen(topic);
    if (len <= head + tail || strncmp(topic, l->instance_filter, head) != 0 ||
        strcmp(topic + len - tail, plus + 1) != 0)
        return false;
    return memchr(topic + head, '/', len - head - tail) == NULL && memchr(topic + head, '+', len - head - tail) == NULL &&
           memchr(topic + head, '#', len - head - tail) == NULL;
}

idevs_topic_kind idevs_launcher_topic_kind(const idevs_launcher *l, const char *topic, const char **own_copy)
{
    const char *sink;
    if (own_copy == NULL)
        own_copy = &sink;
    *own_copy = NULL;
    if (l == NULL || topic == NULL || l->deployment == NULL)
        return IDEVS_TOPIC_OTHER;
    const idevs_deployment *d = l->deployment;
    size_t sender;
    idevs_topic_kind incoming = topics_incoming(d, topic, own_copy, &sender);
    if (incoming != IDEVS_TOPIC_OTHER)
        return incoming;
    if (join_topic(l, topic)) {
        *own_copy = strcmp(topic, l->join_request_topic) == 0 ? l->join_request_topic : NULL;
        return IDEVS_TOPIC_JOIN;
    }
    const char *mine[] = {l->certificate_topic, l->descriptor_topic};
    for (size_t k = 0; k < 2; k++)
        if (strcmp(topic, mine[k]) == 0) {
            *own_copy = mine[k];
            return IDEVS_TOPIC_PROTECTED;
        }
    for (size_t i = 0; i < l->instance_count; i++)
        if (strcmp(topic, l->instance_topics[i]) == 0) {
            *own_copy = l->instance_topics[i];
            return IDEVS_TOPIC_PROTECTED;
        }
    /* Every instance's, this broker's or another's (docs/SCALING.md): only plugins publish there. */
    if (instance_certificate_topic(l, topic)) {
        *own_copy = l->instance_filter;
        return IDEVS_TOPIC_PROTECTED;
    }
    for (size_t i = 0; i < d->output_count; i++)
        if (strcmp(d->outputs[i].topic, topic) == 0) {
            *own_copy = d->outputs[i].topic;
            return IDEVS_TOPIC_PROTECTED;
        }
    size_t receipts = topics_receipt_service(d, topic);
    if (receipts != SIZE_MAX) {
        *own_copy = d->services[receipts].receipt_topic;
        return IDEVS_TOPIC_PROTECTED;
    }
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].topic, topic) == 0) {
            *own_copy = d->requests[i].topic;
            return IDEVS_TOPIC_PROTECTED;
        }
    return IDEVS_TOPIC_OTHER;
}

idevs_err idevs_launcher_conflict(const idevs_launcher *a, const idevs_launcher *b, char *why, size_t why_len)
{
    if (a == NULL || b == NULL)
        return IDEVS_ERR_INVALID_ARG;
    if (strcmp(a->name, b->name) == 0) {
        snprintf(why, why_len, "%s and %s both declare the process '%s'", a->descriptor_path, b->descriptor_path,
                 a->name);
        return IDEVS_ERR_CONFIG;
    }
    if (idevs_uuid_equal(&a->program, &b->program)) {
        snprintf(why, why_len, "%s and %s both declare the program UUID %s", a->descriptor_path, b->descriptor_path,
                 a->program_str);
        return IDEVS_ERR_CONFIG;
    }
    const char *ta[TOPICS_MAX], *tb[TOPICS_MAX];
    size_t na = all_topics(a, ta, TOPICS_MAX), nb = all_topics(b, tb, TOPICS_MAX);
    for (size_t i = 0; i < na && i < TOPICS_MAX; i++)
        for (size_t j = 0; j < nb && j < TOPICS_MAX; j++)
            if (strcmp(ta[i], tb[j]) == 0) {
                snprintf(why, why_len, "%s ('%s') and %s ('%s') both use the topic '%s'", a->descriptor_path,
                         a->name, b->descriptor_path, b->name, ta[i]);
                return IDEVS_ERR_CONFIG;
            }
    return IDEVS_OK;
}
