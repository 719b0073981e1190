/* The command-line options every service and tool shares (idevs_service_cli_option): the broker, the
 * identity, the operator CA, the process and the verification policy. */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "idevs_service.h"
#include "service_internal.h"

const char idevs_service_cli_usage[] =
    "Connection and identity:\n"
    "  -h, --host HOST          broker host (default 127.0.0.1)\n"
    "  -p, --port PORT          broker port (default 1883)\n"
    "  -i, --id CLIENT_ID       MQTT client id (default NAME-PID; give a stable one with -x)\n"
    "  -k, --keepalive SECONDS  MQTT keepalive, 5..65535 (default 30)\n"
    "  -x, --session-expiry SECONDS   keep the MQTT session this long after a disconnection (default 0)\n"
    "  -u, --username USER      MQTT user name\n"
    "  -P, --password PASS      MQTT password\n"
    "  --tls-ca FILE            connect with TLS, verifying the broker against this CA file\n"
    "  --tls-cert FILE, --tls-key FILE   TLS client certificate and key\n"
    "  --key FILE               this service's key file (idevs-ca service writes DIR/NAME.key)\n"
    "  --cert FILE              this service's certificate (DIR/NAME.crt)\n"
    "  --ca FILE                the operator CA certificate (DIR/ca.crt)\n"
    "  --pki DIR --name NAME    shorthand for --key DIR/NAME.key --cert DIR/NAME.crt --ca DIR/ca.crt\n"
    "  --process NAME           the integration process (its descriptor's process.name)\n"
    "  --policy SETTING[=VALUE] verify the compartment also with this setting (repeatable):\n"
    "                           allow-process-backend-insecure, measurement=HEX, descriptor-digest=HEX,\n"
    "                           descriptor=FILE, program=UUID, allow-backend=NAME, allow-debug-insecure,\n"
    "                           nonce=HEX\n"
    "  --start-timeout MS       connect, fetch and verify within this time (default 10000)\n"
    "  --dedupe-window N        message ids remembered to drop duplicates (default 4096)\n"
    "  --outbox FILE            keep what is sent until it is receipted in this SQLite file (default: memory)\n";

typedef struct cli_storage {
    const char **policy; /* NULL-terminated; the strings point into argv or the caller's list */
    size_t policy_count;
    const char *pki, *name;
    char *key, *cert, *ca; /* composed from --pki and --name */
    bool key_explicit, cert_explicit, ca_explicit;
} cli_storage;


static cli_storage *storage(idevs_service_config *cfg)
{
    if (cfg->cli_storage == NULL)
        cfg->cli_storage = calloc(1, sizeof(cli_storage));
    return cfg->cli_storage;
}

static bool whole_number(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
    if (text == NULL || text[0] < '0' || text[0] > '9')
        return false;
    errno = 0;
    char *end;
    unsigned long v = strtoul(text, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max)
        return false;
    *out = v;
    return true;
}

/* An option's value as a whole number from min to max, into *n; else why says "ARG: 'VALUE' is not WHAT". */
static bool number_option(const char *arg, const char *value, unsigned long min, unsigned long max, const char *what,
                          unsigned long *n, char *why, size_t why_len)
{
    if (whole_number(value, min, max, n))
        return true;
    idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "%s: '%s' is not %s", arg, value, what);
    return false;
}

static char *join(const char *dir, const char *name, const char *suffix)
{
    size_t n = strlen(dir) + 1 + strlen(name) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p != NULL)
        snprintf(p, n, "%s/%s%s", dir, name, suffix);
    return p;
}

/* Fills key, cert and ca from --pki and --name where they were not given explicitly. */
static int compose(idevs_service_config *cfg, cli_storage *st, char *why, size_t why_len)
{
    if (st->pki == NULL)
        return 1;
    if (!st->ca_explicit) {
        free(st->ca);
        if ((st->ca = join(st->pki, "ca", ".crt")) == NULL)
            goto nomem;
        cfg->operator_ca = st->ca;
    }
    if (st->name == NULL)
        return 1;
    if (!st->key_explicit) {
        free(st->key);
        if ((st->key = join(st->pki, st->name, ".key")) == NULL)
            goto nomem;
        cfg->key_file = st->key;
    }
    if (!st->cert_explicit) {
        free(st->cert);
        if ((st->cert = join(st->pki, st->name, ".crt")) == NULL)
            goto nomem;
        cfg->cert_file = st->cert;
    }
    return 1;
nomem:
    idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
    return -1;
}

static int add_policy(idevs_service_config *cfg, cli_storage *st, const char *setting, char *why, size_t why_len)
{
    if (st->policy == NULL && cfg->policy != NULL) /* keep what the program set before the options */
        for (size_t i = 0; cfg->policy[i] != NULL; i++)
            if (add_policy(cfg, st, cfg->policy[i], why, why_len) < 0)
                return -1;
    if (st->policy_count >= 256) {
        idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "--policy: at most 256 settings");
        return -1;
    }
    const char **list = realloc(st->policy, (st->policy_count + 2) * sizeof *list);
    if (list == NULL) {
        idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
        return -1;
    }
    list[st->policy_count++] = setting;
    list[st->policy_count] = NULL;
    st->policy = list;
    cfg->policy = list;
    return 1;
}

int idevs_service_cli_option(idevs_service_config *cfg, int argc, char **argv, int *i, char *why, size_t why_len)
{
    if (cfg == NULL || argv == NULL || i == NULL || *i < 0 || *i >= argc || argv[*i] == NULL) {
        idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "idevs_service_cli_option: bad arguments");
        return -1;
    }
    static const struct {
        const char *short_name, *long_name;
    } options[] = {
        {"-h", "--host"}, {"-p", "--port"}, {"-i", "--id"}, {"-k", "--keepalive"}, {"-x", "--session-expiry"},
        {"-u", "--username"}, {"-P", "--password"}, {NULL, "--tls-ca"}, {NULL, "--tls-cert"}, {NULL, "--tls-key"},
        {NULL, "--key"}, {NULL, "--cert"}, {NULL, "--ca"}, {NULL, "--pki"}, {NULL, "--name"}, {NULL, "--process"},
        {NULL, "--policy"}, {NULL, "--start-timeout"}, {NULL, "--dedupe-window"}, {NULL, "--outbox"},
    };
    const char *arg = argv[*i];
    const char *option = NULL;
    for (size_t k = 0; option == NULL && k < sizeof options / sizeof options[0]; k++)
        if ((options[k].short_name != NULL && strcmp(arg, options[k].short_name) == 0) ||
            strcmp(arg, options[k].long_name) == 0)
            option = options[k].long_name;
    if (option == NULL)
        return 0;
    if (*i + 1 >= argc || argv[*i + 1] == NULL) {
        idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "option %s needs a value", arg);
        return -1;
    }
    const char *value = argv[*i + 1];
    cli_storage *st = storage(cfg);
    if (st == NULL) {
        idevs_fail(why, why_len, IDEVS_ERR_NOMEM, "out of memory");
        return -1;
    }
    unsigned long n = 0;
    int rc = 1;
    if (strcmp(option, "--host") == 0) {
        cfg->host = value;
    } else if (strcmp(option, "--port") == 0) {
        if (!number_option(arg, value, 1, 65535, "a port number (1 to 65535)", &n, why, why_len))
            return -1;
        cfg->port = (int)n;
    } else if (strcmp(option, "--id") == 0) {
        if (value[0] == '\0' || strlen(value) > 65535) {
            idevs_fail(why, why_len, IDEVS_ERR_INVALID_ARG, "%s: the client id must not be empty", arg);
            return -1;
        }
        cfg->client_id = value;
    } else if (strcmp(option, "--keepalive") == 0) {
        if (!number_option(arg, value, 5, 65535, "a whole number from 5 to 65535", &n, why, why_len))
            return -1;
        cfg->keepalive_s = (unsigned)n;
    } else if (strcmp(option, "--session-expiry") == 0) {
        if (!number_option(arg, value, 0, UINT32_MAX, "a whole number of seconds", &n, why, why_len))
            return -1;
        cfg->session_expiry_s = (unsigned)n;
    } else if (strcmp(option, "--username") == 0) {
        cfg->username = value;
    } else if (strcmp(option, "--password") == 0) {
        cfg->password = value;
    } else if (strcmp(option, "--tls-ca") == 0) {
        cfg->tls_cafile = value;
    } else if (strcmp(option, "--tls-cert") == 0) {
        cfg->tls_certfile = value;
    } else if (strcmp(option, "--tls-key") == 0) {
        cfg->tls_keyfile = value;
    } else if (strcmp(option, "--key") == 0) {
        cfg->key_file = value;
        st->key_explicit = true;
    } else if (strcmp(option, "--cert") == 0) {
        cfg->cert_file = value;
        st->cert_explicit = true;
    } else if (strcmp(option, "--ca") == 0) {
        cfg->operator_ca = value;
        st->ca_explicit = true;
    } else if (strcmp(option, "--pki") == 0) {
        st->pki = value;
        rc = compose(cfg, st, why, why_len);
    } else if (strcmp(option, "--name") == 0) {
        st->name = value;
        rc = compose(cfg, st, why, why_len);
    } else if (strcmp(option, "--process") == 0) {
        cfg->process = value;
    } else if (strcmp(option, "--policy") == 0) {
        rc = add_policy(cfg, st, value, why, why_len);
    } else if (strcmp(option, "--start-timeout") == 0) {
        if (!number_option(arg, value, 1, 3600000, "a whole number of milliseconds from 1 to 3600000", &n, why,
                           why_len))
            return -1;
        cfg->start_timeout_ms = (unsigned)n;
    } else if (strcmp(option, "--dedupe-window") == 0) {
        if (!number_option(arg, value, 1, 1u << 22, "a whole number from 1 to 4194304", &n, why, why_len))
            return -1;
        cfg->dedupe_window = (size_t)n;
    } else if (strcmp(option, "--outbox") == 0) {
        cfg->outbox = value;
    }
    if (rc < 0)
        return -1;
    *i += 1;
    return 1;
}

void idevs_service_cli_free(idevs_service_config *cfg)
{
    if (cfg == NULL || cfg->cli_storage == NULL)
        return;
    cli_storage *st = cfg->cli_storage;
    if (cfg->policy == st->policy)
        cfg->policy = NULL;
    if (cfg->key_file == st->key)
        cfg->key_file = NULL;
    if (cfg->cert_file == st->cert)
        cfg->cert_file = NULL;
    if (cfg->operator_ca == st->ca)
        cfg->operator_ca = NULL;
    free(st->policy);
    free(st->key);
    free(st->cert);
    free(st->ca);
    free(st);
    cfg->cli_storage = NULL;
}
