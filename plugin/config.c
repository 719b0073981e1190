/* Configuration: the plugin_opt_* lines of mosquitto.conf, and the keys and certificates they name. Every
 * problem is logged with the option's full name and refuses the start (docs/OPERATOR.md lists them). */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "idevs_backend.h"
#include "idevs_plugin.h"

#ifndef IDEVS_COMPARTMENT_DEFAULT
#define IDEVS_COMPARTMENT_DEFAULT "/usr/local/libexec/idevs/idevs-compartment"
#endif

typedef enum opt_kind { OPT_PATH, OPT_LIST, OPT_UINT, OPT_ACL } opt_kind;

typedef struct opt_spec {
    const char *name;
    opt_kind kind;
    bool required;
    size_t offset; /* into idevs_plugin_config */
    unsigned min, max; /* OPT_UINT: the range; OPT_LIST: min is the most lines */
} opt_spec;

#define STR_OPT(n, req) { #n, OPT_PATH, req, offsetof(idevs_plugin_config, n), 0, 0 }
#define UINT_OPT(n, lo, hi) { #n, OPT_UINT, false, offsetof(idevs_plugin_config, n), lo, hi }

static const opt_spec specs[] = {
    /* One line per process; plugin_opt_descriptor_dir adds those of a directory. At least one of the two. */
    { "descriptor", OPT_LIST, false, offsetof(idevs_plugin_config, descriptors), IDEVS_PROCESSES_MAX, 0 },
    STR_OPT(descriptor_dir, false),
    STR_OPT(authority_key, true),
    STR_OPT(authority_cert, true),
    STR_OPT(operator_ca, true),
    STR_OPT(state_dir, true),
    STR_OPT(compartment, false),
    UINT_OPT(start_timeout_ms, 100, 600000),
    UINT_OPT(poll_budget_ms, 0, 100),
    UINT_OPT(queue_bytes, 65536, 4294967295u),
    UINT_OPT(metrics_interval_s, 0, 86400),
    UINT_OPT(log_interval_s, 1, 3600),
    UINT_OPT(certificate_validity_s, 600, 31536000),
    UINT_OPT(certificate_renew_after_s, 60, 31535999),
    { "acl_others", OPT_ACL, false, offsetof(idevs_plugin_config, acl_others), 0, 0 },
    /* Several brokers (docs/SCALING.md). A multiple of 64 per broker keeps their instances apart. */
    UINT_OPT(instance_base, 0, 4294967232u),
    STR_OPT(ownership, false),
    { "peer_user", OPT_LIST, false, offsetof(idevs_plugin_config, peer_users), 64, 0 },
    { "peer_bridge", OPT_LIST, false, offsetof(idevs_plugin_config, peer_bridges), 64, 0 },
    /* One line per process that joins a running one on another broker; the name is checked at the start. */
    { "join", OPT_LIST, false, offsetof(idevs_plugin_config, joins), IDEVS_PROCESSES_MAX, 0 },
    STR_OPT(backend, false),
    STR_OPT(tpm_tcti, false),
    UINT_OPT(tpm_pcr, 8, 15), /* not 16 or 23 (resettable), not 0-7 (the boot PCRs): docs/BACKENDS.md */
};
#define SPEC_COUNT (sizeof specs / sizeof specs[0])

static bool parse_uint(const char *text, unsigned min, unsigned max, unsigned *out)
{
    if (text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    char *end = NULL;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = (unsigned)v;
    return true;
}

/* plugin_opt_backend and the tpm options that go with it (pcr_given: plugin_opt_tpm_pcr was a line). */
static bool backend_options(idevs_plugin_config *c, bool pcr_given)
{
    bool tpm = c->backend != NULL && strcmp(c->backend, "tpm") == 0;
    if (c->backend != NULL && !tpm && strcmp(c->backend, "process") != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_backend: '%s' is neither 'process' "
                             "nor 'tpm'", c->backend);
        return false;
    }
    if (!tpm && (c->tpm_tcti != NULL || pcr_given)) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: only with plugin_opt_backend tpm",
                             c->tpm_tcti != NULL ? "tpm_tcti" : "tpm_pcr");
        return false;
    }
    if (!tpm)
        return true;
    if (c->tpm_tcti == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_tpm_tcti: missing (required with "
                             "plugin_opt_backend tpm), e.g. device:/dev/tpmrm0");
        return false;
    }
    return true;
}

bool idevs_plugin_config_parse(idevs_plugin *p, const struct mosquitto_opt *options, int option_count)
{
    idevs_plugin_config *c = &p->cfg;
    bool seen[SPEC_COUNT] = { false };
    c->start_timeout_ms = 5000;
    c->poll_budget_ms = 2;
    c->metrics_interval_s = 10;
    c->log_interval_s = 10;
    c->tpm_pcr = IDEVS_TPM_PCR_DEFAULT;

    for (int i = 0; i < option_count; i++) {
        const char *key = options[i].key, *value = options[i].value;
        if (key == NULL || value == NULL) /* mosquitto does not pass these; be safe */
            continue;
        size_t s = 0;
        while (s < SPEC_COUNT && strcmp(specs[s].name, key) != 0)
            s++;
        if (s == SPEC_COUNT) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: unknown option", key);
            return false;
        }
        if (seen[s] && specs[s].kind != OPT_LIST) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: given twice", key);
            return false;
        }
        seen[s] = true;
        void *field = (char *)c + specs[s].offset;
        switch (specs[s].kind) {
        case OPT_PATH:
            if (value[0] == '\0') {
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: must not be empty", key);
                return false;
            }
            if ((*(char **)field = strdup(value)) == NULL) {
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
                return false;
            }
            break;
        case OPT_LIST: {
            idevs_text_list *list = field;
            if (value[0] == '\0') {
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: must not be empty", key);
                return false;
            }
            for (size_t j = 0; j < list->count; j++)
                if (strcmp(list->items[j], value) == 0) {
                    mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: '%s' given twice", key,
                                         value);
                    return false;
                }
            if (list->count >= specs[s].min) {
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: more than %u lines", key,
                                     specs[s].min);
                return false;
            }
            char **grown = realloc(list->items, (list->count + 1) * sizeof *grown);
            if (grown == NULL || (grown[list->count] = strdup(value)) == NULL) {
                if (grown != NULL)
                    list->items = grown;
                mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
                return false;
            }
            list->items = grown;
            list->count++;
            break;
        }
        case OPT_UINT:
            if (!parse_uint(value, specs[s].min, specs[s].max, field)) {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: '%s' is not a whole number from %u to %u",
                                     key, value, specs[s].min, specs[s].max);
                return false;
            }
            break;
        case OPT_ACL:
            if (strcmp(value, "allow") == 0)
                c->acl_others = IDEVS_ACL_OTHERS_ALLOW;
            else if (strcmp(value, "defer") == 0)
                c->acl_others = IDEVS_ACL_OTHERS_DEFER;
            else {
                mosquitto_log_printf(MOSQ_LOG_ERR,
                                     IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: '%s' is neither 'allow' nor 'defer'", key,
                                     value);
                return false;
            }
            break;
        }
    }
    if (c->descriptors.count == 0 && c->descriptor_dir == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_descriptor: missing (required): one "
                             "line per integration process, or plugin_opt_descriptor_dir");
        return false;
    }
    for (size_t s = 0; s < SPEC_COUNT; s++)
        if (specs[s].required && !seen[s]) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: missing (required)",
                                 specs[s].name);
            return false;
        }
    unsigned validity = c->certificate_validity_s != 0 ? c->certificate_validity_s : 7u * 86400u;
    if (c->certificate_renew_after_s >= validity) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_certificate_renew_after_s: %u s is not "
                             "before the end of the certificate's validity (%u s): a certificate must be renewed "
                             "before it expires", c->certificate_renew_after_s, validity);
        return false;
    }
    size_t pcr_spec = 0;
    while (strcmp(specs[pcr_spec].name, "tpm_pcr") != 0)
        pcr_spec++;
    if (!backend_options(c, seen[pcr_spec]))
        return false;
    if (c->compartment == NULL && (c->compartment = strdup(IDEVS_COMPARTMENT_DEFAULT)) == NULL) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "out of memory");
        return false;
    }
    return true;
}

static bool check_file(const char *option, const char *path, bool directory)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: '%s': %s", option, path,
                             strerror(errno));
        return false;
    }
    if (directory ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: '%s' is not a %s", option, path,
                             directory ? "directory" : "regular file");
        return false;
    }
    return true;
}

bool idevs_plugin_config_load(idevs_plugin *p)
{
    const idevs_plugin_config *c = &p->cfg;
    if (!check_file("state_dir", c->state_dir, true) || !check_file("compartment", c->compartment, false))
        return false;
    /* The launcher runs its sealed copy, not the file: a file without execute permission is a wrong path. */
    if (access(c->compartment, X_OK) != 0) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_compartment: '%s' is not executable: %s",
                             c->compartment, strerror(errno));
        return false;
    }
    if (!check_file("authority_key", c->authority_key, false) ||
        !check_file("authority_cert", c->authority_cert, false) || !check_file("operator_ca", c->operator_ca, false))
        return false;
    if (c->descriptor_dir != NULL && !check_file("descriptor_dir", c->descriptor_dir, true))
        return false;
    if (c->ownership != NULL && !check_file("ownership", c->ownership, false))
        return false;
    if (c->backend != NULL && strcmp(c->backend, "tpm") == 0) {
        /* The TPM answers, the host is enrolled and the AK loads: said once, here, not by every process. */
        idevs_tpm_backend_options topts = {.state_dir = c->state_dir, .tcti = c->tpm_tcti, .pcr = c->tpm_pcr};
        idevs_backend_impl *probe = NULL;
        char twhy[1024] = "";
        if (idevs_backend_tpm_new(&topts, &probe, twhy, sizeof twhy) != IDEVS_OK) {
            mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_backend tpm: %s", twhy);
            return false;
        }
        idevs_backend_free(probe);
    }
    static const char *const parts[] = {"authority_key", "authority_cert", "operator_ca"};
    int failed = 0;
    char why[768] = "";
    if (idevs_launcher_authority_load(c->authority_key, c->authority_cert, c->operator_ca, &p->authority, &failed,
                                      why, sizeof why) != IDEVS_OK) {
        mosquitto_log_printf(MOSQ_LOG_ERR, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: %s",
                             parts[failed >= 0 && failed <= 2 ? failed : 0], why);
        return false;
    }
    return true;
}

void idevs_plugin_config_free(idevs_plugin *p)
{
    idevs_plugin_config *c = &p->cfg;
    idevs_text_list *lists[] = {&c->descriptors, &c->peer_users, &c->peer_bridges, &c->joins};
    for (size_t k = 0; k < sizeof lists / sizeof lists[0]; k++) {
        for (size_t i = 0; i < lists[k]->count; i++)
            free(lists[k]->items[i]);
        free(lists[k]->items);
    }
    free(c->ownership);
    free(c->descriptor_dir);
    free(c->authority_key);
    free(c->authority_cert);
    free(c->operator_ca);
    free(c->state_dir);
    free(c->compartment);
    free(c->backend);
    free(c->tpm_tcti);
    memset(c, 0, sizeof *c);
    idevs_launcher_authority_clear(&p->authority);
}
