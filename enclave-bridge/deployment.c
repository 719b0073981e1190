/* The deployment descriptor (docs/DEPLOYMENT.md): strict parsing with cJSON. Every rejection names the JSON path
 * of the offending field and the problem. */
#include "idevs_deployment.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "idevs_envelope.h"
#include "idevs_file.h"
#include "idevs_hex.h"
#include "idevs_utf8.h"

#define PATH_MAX_LEN 96

#define DEFAULT_MAX_PAYLOAD 65536u
#define DEFAULT_QUEUE_DEPTH 1024u
#define DEFAULT_EVENT_TIMEOUT_MS 2000u
#define QUEUE_DEPTH_MAX 1048576u
#define DEFAULT_MAX_OUTSTANDING 4096u
#define MAX_OUTSTANDING_MAX 65536u
#define EVENT_TIMEOUT_MIN_MS 10u
#define EVENT_TIMEOUT_MAX_MS 600000u
#define DEFAULT_PARTITIONS 64u

typedef struct parser {
    char *why;
    size_t why_len;
} parser;

static idevs_err fail(parser *p, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static idevs_err fail(parser *p, const char *path, const char *fmt, ...)
{
    if (p->why != NULL && p->why_len > 0) {
        int n = snprintf(p->why, p->why_len, "%s: ", path);
        if (n >= 0 && (size_t)n < p->why_len) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(p->why + n, p->why_len - (size_t)n, fmt, ap);
            va_end(ap);
        }
    }
    return IDEVS_ERR_CONFIG;
}

static const char *type_name(const cJSON *v)
{
    if (cJSON_IsObject(v))
        return "an object";
    if (cJSON_IsArray(v))
        return "an array";
    if (cJSON_IsString(v))
        return "a string";
    if (cJSON_IsNumber(v))
        return "a number";
    if (cJSON_IsBool(v))
        return "a boolean";
    if (cJSON_IsNull(v))
        return "null";
    return "invalid";
}

/* Refuses keys outside allowed[] and keys given twice (cJSON keeps both; a reader taking the first and another
 * taking the last must never disagree about a descriptor). */
static idevs_err check_keys(parser *p, const cJSON *obj, const char *path, const char *const *allowed)
{
    for (const cJSON *c = obj->child; c != NULL; c = c->next) {
        bool known = false;
        for (size_t i = 0; allowed[i] != NULL; i++)
            if (c->string != NULL && strcmp(c->string, allowed[i]) == 0)
                known = true;
        if (!known)
            return fail(p, path, "unknown key '%.64s'", c->string != NULL ? c->string : "");
        for (const cJSON *d = obj->child; d != c; d = d->next)
            if (strcmp(d->string, c->string) == 0)
                return fail(p, path, "key '%s' appears twice", c->string);
    }
    return IDEVS_OK;
}

/* snprintf into a path buffer; an over-long path is cut (it only names the place of an error). */
static void pathf(char *out, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void pathf(char *out, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, cap, fmt, ap);
    va_end(ap);
    if (n < 0)
        out[0] = '\0';
}

static void join(char *out, const char *path, const char *key)
{
    if (path[0] == '\0')
        pathf(out, PATH_MAX_LEN, "%s", key);
    else
        pathf(out, PATH_MAX_LEN, "%s.%s", path, key);
}

/* A required (or, with optional, possibly absent) member of a given type. *out NULL when absent. */
static idevs_err member(parser *p, const cJSON *obj, const char *path, const char *key, bool optional,
                        cJSON_bool (*is)(const cJSON *), const char *want, const cJSON **out)
{
    char where[PATH_MAX_LEN];
    join(where, path, key);
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    *out = NULL;
    if (v == NULL)
        return optional ? IDEVS_OK : fail(p, where, "missing");
    if (!is(v))
        return fail(p, where, "must be %s, not %s", want, type_name(v));
    *out = v;
    return IDEVS_OK;
}

static idevs_err get_name(parser *p, const cJSON *obj, const char *path, char out[IDEVS_NAME_MAX + 1])
{
    const cJSON *v;
    idevs_err err = member(p, obj, path, "name", false, cJSON_IsString, "a string", &v);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_name_valid(v->valuestring)) {
        char where[PATH_MAX_LEN];
        join(where, path, "name");
        return fail(p, where, "'%.64s' is not a name: 1 to %d of A-Z a-z 0-9 . _ -", v->valuestring,
                    IDEVS_NAME_MAX);
    }
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return IDEVS_OK;
}

static idevs_err get_uuid(parser *p, const cJSON *obj, const char *path, idevs_uuid *out)
{
    const cJSON *v;
    idevs_err err = member(p, obj, path, "uuid", false, cJSON_IsString, "a string", &v);
    if (err != IDEVS_OK)
        return err;
    char where[PATH_MAX_LEN];
    join(where, path, "uuid");
    if (idevs_uuid_parse(v->valuestring, out) != IDEVS_OK)
        return fail(p, where, "'%.40s' is not a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)", v->valuestring);
    if (idevs_uuid_is_nil(out))
        return fail(p, where, "the nil UUID is not an identity");
    return IDEVS_OK;
}

/* A required non-empty string, copied. */
static idevs_err get_string(parser *p, const cJSON *obj, const char *path, const char *key, size_t max, char **out)
{
    const cJSON *v;
    idevs_err err = member(p, obj, path, key, false, cJSON_IsString, "a string", &v);
    if (err != IDEVS_OK)
        return err;
    char where[PATH_MAX_LEN];
    join(where, path, key);
    size_t n = strlen(v->valuestring);
    if (n == 0)
        return fail(p, where, "must not be empty");
    if (n > max)
        return fail(p, where, "longer than %zu bytes", max);
    if ((*out = strdup(v->valuestring)) == NULL)
        return IDEVS_ERR_NOMEM;
    return IDEVS_OK;
}

/* An optional integer in [min, max]; *out keeps its default when absent. */
static idevs_err get_uint(parser *p, const cJSON *obj, const char *path, const char *key, double min, double max,
                          double *out)
{
    const cJSON *v;
    idevs_err err = member(p, obj, path, key, true, cJSON_IsNumber, "a number", &v);
    if (err != IDEVS_OK || v == NULL)
        return err;
    char where[PATH_MAX_LEN];
    join(where, path, key);
    double d = v->valuedouble;
    if (!isfinite(d) || d > 9e15 || d < -9e15 || (double)(int64_t)d != d)
        return fail(p, where, "must be a whole number");
    if (d < min || d > max)
        return fail(p, where, "%.0f is out of range: %.0f to %.0f", d, min, max);
    *out = d;
    return IDEVS_OK;
}

static idevs_err get_topic(parser *p, const cJSON *obj, const char *path, const char *key, char **out)
{
    idevs_err err = get_string(p, obj, path, key, IDEVS_TOPIC_MAX, out);
    if (err != IDEVS_OK)
        return err;
    char where[PATH_MAX_LEN];
    join(where, path, key);
    const char *t = *out;
    if (strchr(t, '+') != NULL || strchr(t, '#') != NULL)
        return fail(p, where, "'%.80s' contains a wildcard (+ or #)", t);
    if (t[0] == '$')
        return fail(p, where, "'%.80s' is under '$', the broker's own topics", t);
    if (!idevs_utf8_valid((const uint8_t *)t, strlen(t)))
        return fail(p, where, "not valid UTF-8");
    return IDEVS_OK;
}

static idevs_err get_qos(parser *p, const cJSON *obj, const char *path, int *qos)
{
    double d = 1;
    idevs_err err = get_uint(p, obj, path, "qos", 0, 2, &d);
    *qos = (int)d;
    return err;
}

/* "pad" (docs/DEPLOYMENT.md): "pow2" (the default), "none", or a block size in bytes. */
static idevs_err get_pad(parser *p, const cJSON *obj, const char *path, uint32_t *pad)
{
    *pad = IDEVS_PAD_POW2;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "pad");
    if (v == NULL)
        return IDEVS_OK;
    char where[PATH_MAX_LEN];
    join(where, path, "pad");
    if (cJSON_IsString(v) && strcmp(v->valuestring, "pow2") == 0)
        return IDEVS_OK;
    if (cJSON_IsString(v) && strcmp(v->valuestring, "none") == 0) {
        *pad = IDEVS_PAD_NONE;
        return IDEVS_OK;
    }
    if (!cJSON_IsNumber(v))
        return fail(p, where, "must be \"pow2\", \"none\" or a block size of %u to %u bytes", IDEVS_PAD_BLOCK_MIN,
                    IDEVS_PAD_BLOCK_MAX);
    double d = IDEVS_PAD_POW2;
    idevs_err err = get_uint(p, obj, path, "pad", IDEVS_PAD_BLOCK_MIN, IDEVS_PAD_BLOCK_MAX, &d);
    *pad = (uint32_t)d;
    return err;
}

/* The service a from/to names. */
static idevs_err get_service_ref(parser *p, const idevs_deployment *d, const cJSON *obj, const char *path,
                                 const char *key, size_t *index)
{
    const cJSON *v;
    idevs_err err = member(p, obj, path, key, false, cJSON_IsString, "a string", &v);
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; i < d->service_count; i++)
        if (strcmp(d->services[i].name, v->valuestring) == 0) {
            *index = i;
            return IDEVS_OK;
        }
    char where[PATH_MAX_LEN];
    join(where, path, key);
    return fail(p, where, "no service named '%.64s'", v->valuestring);
}

/* An array of at most IDEVS_DEPLOYMENT_MAX_ENTRIES objects; absent means empty unless required. */
static idevs_err get_array(parser *p, const cJSON *root, const char *key, bool required, const cJSON **out,
                           size_t *count)
{
    idevs_err err = member(p, root, "", key, !required, cJSON_IsArray, "an array", out);
    *count = 0;
    if (err != IDEVS_OK || *out == NULL)
        return err;
    *count = (size_t)cJSON_GetArraySize(*out);
    if (required && *count == 0)
        return fail(p, key, "must not be empty");
    if (*count > IDEVS_DEPLOYMENT_MAX_ENTRIES)
        return fail(p, key, "%zu entries, at most %d", *count, IDEVS_DEPLOYMENT_MAX_ENTRIES);
    size_t i = 0;
    for (const cJSON *e = (*out)->child; e != NULL; e = e->next, i++)
        if (!cJSON_IsObject(e)) {
            char where[PATH_MAX_LEN];
            pathf(where, sizeof where, "%s[%zu]", key, i);
            return fail(p, where, "must be an object, not %s", type_name(e));
        }
    return IDEVS_OK;
}

/* The array under key with one zeroed entry of size bytes for each of its objects: *entries NULL and *n 0 when
 * the array is absent or empty. Every list of the descriptor starts this way. */
static idevs_err get_entries(parser *p, const cJSON *root, const char *key, bool required, size_t size,
                             const cJSON **first, size_t *n, void **entries)
{
    const cJSON *arr;
    *first = NULL;
    *entries = NULL;
    idevs_err err = get_array(p, root, key, required, &arr, n);
    if (err != IDEVS_OK || *n == 0)
        return err;
    if ((*entries = calloc(*n, size)) == NULL)
        return IDEVS_ERR_NOMEM;
    *first = arr->child;
    return IDEVS_OK;
}

/* ---- sections ---- */

static idevs_err parse_process(parser *p, const cJSON *root, idevs_deployment *d)
{
    static const char *const keys[] = {"name", "uuid", "logic", "config", "instances", "partitions", NULL};
    const cJSON *proc, *config;
    double instances = 1, partitions = DEFAULT_PARTITIONS;
    idevs_err err = member(p, root, "", "process", false, cJSON_IsObject, "an object", &proc);
    if (err == IDEVS_OK)
        err = check_keys(p, proc, "process", keys);
    if (err == IDEVS_OK)
        err = get_name(p, proc, "process", d->name);
    if (err == IDEVS_OK)
        err = get_uuid(p, proc, "process", &d->program);
    if (err == IDEVS_OK)
        err = get_string(p, proc, "process", "logic", 4096, &d->logic);
    if (err == IDEVS_OK)
        err = member(p, proc, "process", "config", true, cJSON_IsObject, "an object", &config);
    if (err == IDEVS_OK)
        err = get_uint(p, proc, "process", "instances", 1, IDEVS_DEPLOYMENT_MAX_INSTANCES, &instances);
    if (err == IDEVS_OK)
        err = get_uint(p, proc, "process", "partitions", 1, IDEVS_DEPLOYMENT_MAX_PARTITIONS, &partitions);
    if (err != IDEVS_OK)
        return err;
    d->instances = (uint32_t)instances;
    d->partitions = (uint32_t)partitions;
    d->config_json = config != NULL ? cJSON_PrintUnformatted(config) : strdup("{}");
    return d->config_json != NULL ? IDEVS_OK : IDEVS_ERR_NOMEM;
}

static idevs_err parse_ca_digest(parser *p, const cJSON *root, idevs_deployment *d)
{
    const cJSON *v;
    idevs_err err = member(p, root, "", "operator_ca_sha256", false, cJSON_IsString, "a string", &v);
    if (err != IDEVS_OK)
        return err;
    if (!idevs_hex_decode(v->valuestring, d->operator_ca_sha256, IDEVS_SHA256_LEN))
        return fail(p, "operator_ca_sha256", "must be %d hex digits", 2 * IDEVS_SHA256_LEN);
    return IDEVS_OK;
}

static idevs_err parse_services(parser *p, const cJSON *root, idevs_deployment *d)
{
    static const char *const keys[] = {"name", "uuid", "certificate", "receipts", NULL};
    const cJSON *e;
    size_t n;
    void *entries;
    idevs_err err = get_entries(p, root, "services", true, sizeof *d->services, &e, &n, &entries);
    d->services = entries;
    if (err != IDEVS_OK)
        return err;
    for (size_t i = 0; e != NULL; e = e->next, i++) {
        idevs_deployment_service *s = &d->services[i];
        char path[PATH_MAX_LEN], where[PATH_MAX_LEN];
        pathf(path, sizeof path, "services[%zu]", i);
        d->service_count = i + 1; /* so that free() sees what was filled */
        if ((err = check_keys(p, e, path, keys)) != IDEVS_OK || (err = get_name(p, e, path, s->name)) != IDEVS_OK ||
            (err = get_uuid(p, e, path, &s->uuid)) != IDEVS_OK ||
            (err = get_string(p, e, path, "certificate", 4096, &s->certificate)) != IDEVS_OK)
            return err;
        const cJSON *receipts;
        if ((err = member(p, e, path, "receipts", true, cJSON_IsBool, "a boolean", &receipts)) != IDEVS_OK)
            return err;
        s->receipts = receipts != NULL && cJSON_IsTrue(receipts);
        for (size_t k = 0; k < i; k++) {
            if (strcmp(d->services[k].name, s->name) == 0) {
                join(where, path, "name");
                return fail(p, where, "'%s' is already the name of services[%zu]", s->name, k);
            }
            if (idevs_uuid_equal(&d->services[k].uuid, &s->uuid)) {
                join(where, path, "uuid");
                return fail(p, where, "already the UUID of services[%zu]", k);
            }
        }
        if (idevs_uuid_equal(&d->program, &s->uuid)) {
            join(where, path, "uuid");
            return fail(p, where, "the same as process.uuid");
        }
    }
    return IDEVS_OK;
}

/* Every topic the descriptor declares, for the distinctness check. */
typedef struct topic_ref {
    const char *topic;
    char path[PATH_MAX_LEN];
} topic_ref;

typedef struct topic_set {
    topic_ref refs[4 * IDEVS_DEPLOYMENT_MAX_ENTRIES];
    size_t count;
} topic_set;

static idevs_err add_topic(parser *p, topic_set *set, const char *topic, const char *path)
{
    for (size_t i = 0; i < set->count; i++)
        if (strcmp(set->refs[i].topic, topic) == 0)
            return fail(p, path, "topic '%.80s' is already used by %s", topic, set->refs[i].path);
    set->refs[set->count].topic = topic;
    pathf(set->refs[set->count].path, PATH_MAX_LEN, "%s", path);
    set->count++;
    return IDEVS_OK;
}

/* How an input, an output and a request begin: only the allowed keys, and a name that no earlier entry of the
 * same list has. path receives the entry's path, "inputs[2]". */
static idevs_err get_entry_name(parser *p, const cJSON *e, const char *list, size_t i, const char *const *keys,
                                const char *(*name_at)(const idevs_deployment *, size_t), const idevs_deployment *d,
                                char name[IDEVS_NAME_MAX + 1], char path[PATH_MAX_LEN])
{
    pathf(path, PATH_MAX_LEN, "%s[%zu]", list, i);
    idevs_err err = check_keys(p, e, path, keys);
    if (err == IDEVS_OK)
        err = get_name(p, e, path, name);
    for (size_t k = 0; err == IDEVS_OK && k < i; k++)
        if (strcmp(name_at(d, k), name) == 0) {
            char where[PATH_MAX_LEN];
            join(where, path, "name");
            return fail(p, where, "'%s' is already the name of %s[%zu]", name, list, k);
        }
    return err;
}

/* Claims topic, found under key of the entry at path, for this entry alone (topics are distinct). */
static idevs_err claim_topic(parser *p, topic_set *topics, const char *path, const char *key, const char *topic)
{
    char where[PATH_MAX_LEN];
    join(where, path, key);
    return add_topic(p, topics, topic, where);
}

static const char *input_name(const idevs_deployment *d, size_t i) { return d->inputs[i].name; }
static const char *output_name(const idevs_deployment *d, size_t i) { return d->outputs[i].name; }
static const char *request_name(const idevs_deployment *d, size_t i) { return d->requests[i].name; }

static idevs_err parse_inputs(parser *p, const cJSON *root, idevs_deployment *d, topic_set *topics)
{
    static const char *const keys[] = {"name", "topic", "from", "pad", NULL};
    const cJSON *e;
    size_t n;
    void *entries;
    idevs_err err = get_entries(p, root, "inputs", false, sizeof *d->inputs, &e, &n, &entries);
    d->inputs = entries;
    for (size_t i = 0; err == IDEVS_OK && e != NULL; e = e->next, i++) {
        idevs_deployment_input *in = &d->inputs[i];
        char path[PATH_MAX_LEN];
        d->input_count = i + 1; /* so that free() sees what was filled */
        if ((err = get_entry_name(p, e, "inputs", i, keys, input_name, d, in->name, path)) == IDEVS_OK &&
            (err = get_topic(p, e, path, "topic", &in->topic)) == IDEVS_OK &&
            (err = get_service_ref(p, d, e, path, "from", &in->from)) == IDEVS_OK &&
            (err = get_pad(p, e, path, &in->pad)) == IDEVS_OK)
            err = claim_topic(p, topics, path, "topic", in->topic);
    }
    return err;
}

static idevs_err parse_outputs(parser *p, const cJSON *root, idevs_deployment *d, topic_set *topics)
{
    static const char *const keys[] = {"name", "topic", "to", "qos", "pad", NULL};
    const cJSON *e;
    size_t n;
    void *entries;
    idevs_err err = get_entries(p, root, "outputs", false, sizeof *d->outputs, &e, &n, &entries);
    d->outputs = entries;
    for (size_t i = 0; err == IDEVS_OK && e != NULL; e = e->next, i++) {
        idevs_deployment_output *out = &d->outputs[i];
        char path[PATH_MAX_LEN];
        d->output_count = i + 1;
        if ((err = get_entry_name(p, e, "outputs", i, keys, output_name, d, out->name, path)) == IDEVS_OK &&
            (err = get_topic(p, e, path, "topic", &out->topic)) == IDEVS_OK &&
            (err = get_service_ref(p, d, e, path, "to", &out->to)) == IDEVS_OK &&
            (err = get_qos(p, e, path, &out->qos)) == IDEVS_OK &&
            (err = get_pad(p, e, path, &out->pad)) == IDEVS_OK)
            err = claim_topic(p, topics, path, "topic", out->topic);
    }
    return err;
}

static idevs_err parse_requests(parser *p, const cJSON *root, idevs_deployment *d, topic_set *topics)
{
    static const char *const keys[] = {"name", "topic", "response_topic", "to", "qos", "pad", NULL};
    const cJSON *e;
    size_t n;
    void *entries;
    idevs_err err = get_entries(p, root, "requests", false, sizeof *d->requests, &e, &n, &entries);
    d->requests = entries;
    for (size_t i = 0; err == IDEVS_OK && e != NULL; e = e->next, i++) {
        idevs_deployment_request *r = &d->requests[i];
        char path[PATH_MAX_LEN];
        d->request_count = i + 1;
        if ((err = get_entry_name(p, e, "requests", i, keys, request_name, d, r->name, path)) == IDEVS_OK &&
            (err = get_topic(p, e, path, "topic", &r->topic)) == IDEVS_OK &&
            (err = get_topic(p, e, path, "response_topic", &r->response_topic)) == IDEVS_OK &&
            (err = get_service_ref(p, d, e, path, "to", &r->to)) == IDEVS_OK &&
            (err = get_qos(p, e, path, &r->qos)) == IDEVS_OK &&
            (err = get_pad(p, e, path, &r->pad)) == IDEVS_OK &&
            (err = claim_topic(p, topics, path, "topic", r->topic)) == IDEVS_OK)
            err = claim_topic(p, topics, path, "response_topic", r->response_topic);
    }
    return err;
}

static idevs_err parse_limits(parser *p, const cJSON *root, idevs_deployment *d)
{
    static const char *const keys[] = {"max_payload", "queue_depth", "event_timeout_ms", "max_outstanding_requests",
                                       NULL};
    double max_payload = DEFAULT_MAX_PAYLOAD, depth = DEFAULT_QUEUE_DEPTH, timeout = DEFAULT_EVENT_TIMEOUT_MS;
    double outstanding = DEFAULT_MAX_OUTSTANDING;
    const cJSON *lim;
    idevs_err err = member(p, root, "", "limits", true, cJSON_IsObject, "an object", &lim);
    if (err == IDEVS_OK && lim != NULL) {
        if ((err = check_keys(p, lim, "limits", keys)) != IDEVS_OK ||
            (err = get_uint(p, lim, "limits", "max_payload", 1, IDEVS_PAYLOAD_MAX_LIMIT, &max_payload)) != IDEVS_OK ||
            (err = get_uint(p, lim, "limits", "queue_depth", 1, QUEUE_DEPTH_MAX, &depth)) != IDEVS_OK ||
            (err = get_uint(p, lim, "limits", "event_timeout_ms", EVENT_TIMEOUT_MIN_MS, EVENT_TIMEOUT_MAX_MS,
                            &timeout)) != IDEVS_OK ||
            (err = get_uint(p, lim, "limits", "max_outstanding_requests", 1, MAX_OUTSTANDING_MAX, &outstanding)) !=
                IDEVS_OK)
            return err;
    }
    d->max_payload = (size_t)max_payload;
    d->queue_depth = (size_t)depth;
    d->event_timeout_ms = (uint32_t)timeout;
    d->max_outstanding_requests = (size_t)outstanding;
    return err;
}

static bool refusal_code_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > IDEVS_REFUSAL_CODE_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
            return false;
    return true;
}

/* The codes a logic may refuse an event with: short names a person reads in the broker's log and counters, so
 * a closed list the deployment declares (and the measurement covers), never text the logic makes up. */
static idevs_err parse_refusals(parser *p, const cJSON *root, idevs_deployment *d)
{
    const cJSON *arr;
    idevs_err err = member(p, root, "", "refusals", true, cJSON_IsArray, "an array", &arr);
    if (err != IDEVS_OK || arr == NULL)
        return err;
    size_t n = (size_t)cJSON_GetArraySize(arr);
    if (n > IDEVS_DEPLOYMENT_MAX_REFUSALS)
        return fail(p, "refusals", "%zu codes, at most %d", n, IDEVS_DEPLOYMENT_MAX_REFUSALS);
    size_t i = 0;
    for (const cJSON *e = arr->child; e != NULL; e = e->next, i++) {
        char where[PATH_MAX_LEN];
        pathf(where, sizeof where, "refusals[%zu]", i);
        if (!cJSON_IsString(e))
            return fail(p, where, "must be a string, not %s", type_name(e));
        if (!refusal_code_valid(e->valuestring))
            return fail(p, where, "'%.40s' is not a refusal code: 1 to %d of a-z 0-9 _", e->valuestring,
                        IDEVS_REFUSAL_CODE_MAX);
        if (idevs_deployment_refusal_index(d, e->valuestring) >= 0)
            return fail(p, where, "'%s' is declared twice", e->valuestring);
        memcpy(d->refusals[i], e->valuestring, strlen(e->valuestring) + 1);
        d->refusal_count = i + 1;
    }
    return IDEVS_OK;
}

#define PARTITION_LABEL "idevs partition v1"

uint32_t idevs_deployment_partition(const idevs_deployment *d, const void *key, size_t len)
{
    if (d == NULL || d->partitions == 0 || (key == NULL && len > 0))
        return 0;
    const void *parts[] = {PARTITION_LABEL, d->program.b, key};
    const size_t lens[] = {strlen(PARTITION_LABEL), IDEVS_UUID_LEN, len};
    uint8_t h[IDEVS_SHA256_LEN];
    /* A failed hash (out of memory) gives partition 0: a partition only steers, it never decides delivery. */
    if (idevs_sha256_parts(parts, lens, 3, h) != IDEVS_OK)
        return 0;
    uint32_t v = (uint32_t)h[0] << 24 | (uint32_t)h[1] << 16 | (uint32_t)h[2] << 8 | (uint32_t)h[3];
    return v % d->partitions;
}

/* One spelling per number (no leading zero but "0", at most 5 digits), so that no two texts name the same
 * partition. */
static bool partition_number(const char *text, size_t len, uint32_t limit, uint32_t *out)
{
    if (len == 0 || len > 5 || (len > 1 && text[0] == '0'))
        return false;
    uint32_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return false;
        v = v * 10 + (uint32_t)(text[i] - '0');
    }
    if (v >= limit)
        return false;
    *out = v;
    return true;
}

bool idevs_deployment_partition_parse(const idevs_deployment *d, const char *text, uint32_t *out)
{
    if (d == NULL || text == NULL || out == NULL)
        return false;
    return partition_number(text, strlen(text), d->partitions, out);
}

uint32_t idevs_deployment_partition_of_id(const idevs_deployment *d, const uint8_t id[16])
{
    return idevs_deployment_partition(d, id, 16);
}

bool idevs_deployment_partition_set_parse(const idevs_deployment *d, const char *text, uint8_t *bits, char *why,
                                          size_t why_len)
{
    if (d == NULL || text == NULL || bits == NULL)
        return false;
    size_t bytes = (d->partitions + 7) / 8;
    memset(bits, 0, bytes);
    if (strcmp(text, "none") == 0)
        return true;
    if (strcmp(text, "all") == 0) {
        for (uint32_t p = 0; p < d->partitions; p++)
            bits[p / 8] |= (uint8_t)(1u << (p % 8));
        return true;
    }
    const char *at = text;
    for (;;) {
        size_t len = strcspn(at, ",");
        const char *dash = memchr(at, '-', len);
        uint32_t lo = 0, hi = 0;
        bool ok = dash == NULL ? partition_number(at, len, d->partitions, &lo)
                               : partition_number(at, (size_t)(dash - at), d->partitions, &lo) &&
                                     partition_number(dash + 1, len - (size_t)(dash - at) - 1, d->partitions, &hi) &&
                                     lo <= hi;
        if (dash == NULL)
            hi = lo;
        if (!ok) {
            snprintf(why, why_len, "'%.*s' is not a partition or range of partitions from 0 to %u (\"all\", "
                     "\"none\", or e.g. \"0-31,40\")", (int)(len > 32 ? 32 : len), at, d->partitions - 1);
            return false;
        }
        for (uint32_t p = lo; p <= hi; p++)
            bits[p / 8] |= (uint8_t)(1u << (p % 8));
        if (at[len] == '\0')
            return true;
        at += len + 1;
    }
}

int idevs_deployment_refusal_index(const idevs_deployment *d, const char *code)
{
    if (d == NULL || code == NULL)
        return -1;
    for (size_t i = 0; i < d->refusal_count; i++)
        if (strcmp(d->refusals[i], code) == 0)
            return (int)i;
    return -1;
}

static char *retained_topic(const char *process, const char *what);

/* Each service's receipt topic, from the process's and the service's names (both names: no '/', '+', '#'). */
static idevs_err receipt_topics(idevs_deployment *d)
{
    for (size_t i = 0; i < d->service_count; i++) {
        char what[sizeof "receipt/from/" + IDEVS_NAME_MAX];
        snprintf(what, sizeof what, "receipt/to/%s", d->services[i].name);
        if ((d->services[i].receipt_topic = retained_topic(d->name, what)) == NULL)
            return IDEVS_ERR_NOMEM;
        snprintf(what, sizeof what, "receipt/from/%s", d->services[i].name);
        if ((d->services[i].receipt_from_topic = retained_topic(d->name, what)) == NULL)
            return IDEVS_ERR_NOMEM;
    }
    return IDEVS_OK;
}

static idevs_err parse_root(parser *p, const cJSON *root, idevs_deployment *d)
{
    static const char *const keys[] = {"version",  "process", "operator_ca_sha256", "services", "inputs",
                                       "outputs", "requests", "limits",             "refusals", NULL};
    if (!cJSON_IsObject(root))
        return fail(p, "(top level)", "must be an object, not %s", type_name(root));
    idevs_err err = check_keys(p, root, "(top level)", keys);
    if (err != IDEVS_OK)
        return err;
    double version = 0;
    const cJSON *v;
    if ((err = member(p, root, "", "version", false, cJSON_IsNumber, "a number", &v)) != IDEVS_OK)
        return err;
    if ((err = get_uint(p, root, "", "version", 0, 1e9, &version)) != IDEVS_OK)
        return err;
    if (version != IDEVS_DEPLOYMENT_VERSION)
        return fail(p, "version", "%.0f is not supported (this reader knows version %d)", version,
                    IDEVS_DEPLOYMENT_VERSION);
    topic_set *topics = calloc(1, sizeof *topics);
    if (topics == NULL)
        return IDEVS_ERR_NOMEM;
    if ((err = parse_process(p, root, d)) == IDEVS_OK && (err = parse_ca_digest(p, root, d)) == IDEVS_OK &&
        (err = parse_services(p, root, d)) == IDEVS_OK && (err = receipt_topics(d)) == IDEVS_OK &&
        (err = parse_inputs(p, root, d, topics)) == IDEVS_OK &&
        (err = parse_outputs(p, root, d, topics)) == IDEVS_OK &&
        (err = parse_requests(p, root, d, topics)) == IDEVS_OK && (err = parse_limits(p, root, d)) == IDEVS_OK)
        err = parse_refusals(p, root, d);
    free(topics);
    return err;
}

idevs_err idevs_deployment_parse(const uint8_t *bytes, size_t len, idevs_deployment **out, char *why, size_t why_len)
{
    parser p = {why, why_len};
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (out == NULL || (bytes == NULL && len > 0))
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    if (len > IDEVS_DEPLOYMENT_MAX_BYTES)
        return fail(&p, "(descriptor)", "%zu bytes, at most %u", len, IDEVS_DEPLOYMENT_MAX_BYTES);
    if (memchr(bytes, '\0', len) != NULL)
        return fail(&p, "(descriptor)", "contains a NUL byte");
    idevs_deployment *d = calloc(1, sizeof *d);
    if (d == NULL)
        return IDEVS_ERR_NOMEM;
    idevs_err err = idevs_sha256(bytes, len, d->digest);
    if (err != IDEVS_OK) {
        free(d);
        return err;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts((const char *)bytes, len, &end, 0);
    if (root == NULL) {
        size_t at = end != NULL && end >= (const char *)bytes ? (size_t)(end - (const char *)bytes) : 0;
        err = fail(&p, "(descriptor)", "not valid JSON (near byte %zu)", at);
    } else {
        /* Only white space may follow the value. */
        for (const char *c = end; err == IDEVS_OK && c != NULL && c < (const char *)bytes + len; c++)
            if (*c != ' ' && *c != '\t' && *c != '\r' && *c != '\n')
                err = fail(&p, "(descriptor)", "text after the JSON value (byte %zu)", (size_t)(c - (const char *)bytes));
        if (err == IDEVS_OK)
            err = parse_root(&p, root, d);
        cJSON_Delete(root);
    }
    if (err != IDEVS_OK) {
        idevs_deployment_free(d);
        return err;
    }
    *out = d;
    return IDEVS_OK;
}

idevs_err idevs_deployment_read_file(const char *path, uint8_t **bytes, size_t *len, char *why, size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (path == NULL || bytes == NULL || len == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *bytes = NULL;
    *len = 0;
    /* The one bounded file reader (idevs_file.h): a regular file (a FIFO is refused without waiting for a
     * writer, at start-up and at RELOAD alike) of at most IDEVS_DEPLOYMENT_MAX_BYTES, refused if it grows. */
    static const idevs_file_rules rules = {NULL, 0, IDEVS_DEPLOYMENT_MAX_BYTES, 0, IDEVS_ERR_CONFIG};
    idevs_err err = idevs_file_read(AT_FDCWD, path, &rules, bytes, len, why, why_len);
    return err == IDEVS_OK || err == IDEVS_ERR_NOMEM ? err : IDEVS_ERR_CONFIG;
}

idevs_err idevs_deployment_load(const char *path, idevs_deployment **out, uint8_t **bytes, size_t *len, char *why,
                                size_t why_len)
{
    if (why != NULL && why_len > 0)
        why[0] = '\0';
    if (path == NULL || out == NULL)
        return IDEVS_ERR_INVALID_ARG;
    *out = NULL;
    if (bytes != NULL)
        *bytes = NULL;
    if (len != NULL)
        *len = 0;
    uint8_t *buf = NULL;
    size_t got = 0;
    idevs_err err = idevs_deployment_read_file(path, &buf, &got, why, why_len);
    if (err != IDEVS_OK)
        return err;
    char inner[256];
    err = idevs_deployment_parse(buf, got, out, inner, sizeof inner);
    if (err != IDEVS_OK) {
        if (why != NULL)
            snprintf(why, why_len, "%s: %s", path, inner);
        free(buf);
        return err;
    }
    if (bytes != NULL) {
        *bytes = buf;
        if (len != NULL)
            *len = got;
    } else {
        free(buf);
    }
    return IDEVS_OK;
}

const idevs_deployment_input *idevs_deployment_input_by_topic(const idevs_deployment *d, const char *topic)
{
    if (d == NULL || topic == NULL)
        return NULL;
    for (size_t i = 0; i < d->input_count; i++)
        if (strcmp(d->inputs[i].topic, topic) == 0)
            return &d->inputs[i];
    return NULL;
}

const idevs_deployment_output *idevs_deployment_output_by_name(const idevs_deployment *d, const char *name)
{
    if (d == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < d->output_count; i++)
        if (strcmp(d->outputs[i].name, name) == 0)
            return &d->outputs[i];
    return NULL;
}

const idevs_deployment_request *idevs_deployment_request_by_name(const idevs_deployment *d, const char *name)
{
    if (d == NULL || name == NULL)
        return NULL;
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].name, name) == 0)
            return &d->requests[i];
    return NULL;
}

const idevs_deployment_request *idevs_deployment_request_by_response_topic(const idevs_deployment *d,
                                                                           const char *topic)
{
    if (d == NULL || topic == NULL)
        return NULL;
    for (size_t i = 0; i < d->request_count; i++)
        if (strcmp(d->requests[i].response_topic, topic) == 0)
            return &d->requests[i];
    return NULL;
}

void idevs_deployment_free(idevs_deployment *d)
{
    if (d == NULL)
        return;
    for (size_t i = 0; i < d->service_count; i++) {
        free(d->services[i].certificate);
        free(d->services[i].receipt_topic);
        free(d->services[i].receipt_from_topic);
    }
    for (size_t i = 0; i < d->input_count; i++)
        free(d->inputs[i].topic);
    for (size_t i = 0; i < d->output_count; i++)
        free(d->outputs[i].topic);
    for (size_t i = 0; i < d->request_count; i++) {
        free(d->requests[i].topic);
        free(d->requests[i].response_topic);
    }
    free(d->services);
    free(d->inputs);
    free(d->outputs);
    free(d->requests);
    free(d->logic);
    if (d->config_json != NULL) {
        /* the logic's configuration may hold secrets of its own */
        idevs_cleanse(d->config_json, strlen(d->config_json));
        free(d->config_json);
    }
    free(d);
}

static char *retained_topic(const char *process, const char *what)
{
    size_t n = strlen("idevs/") + strlen(process) + 1 + strlen(what) + 1;
    char *t = malloc(n);
    if (t != NULL)
        snprintf(t, n, "idevs/%s/%s", process, what);
    return t;
}

char *idevs_deployment_certificate_topic(const char *process)
{
    return retained_topic(process, "certificate");
}

char *idevs_deployment_descriptor_topic(const char *process)
{
    return retained_topic(process, "descriptor");
}

char *idevs_deployment_instance_certificate_topic(const char *process, uint32_t instance)
{
    char what[sizeof "instance/4294967295/certificate"];
    snprintf(what, sizeof what, "instance/%u/certificate", instance);
    return retained_topic(process, what);
}

char *idevs_deployment_instance_certificate_filter(const char *process)
{
    return retained_topic(process, "instance/+/certificate");
}
