/* The plugin's options (plugin/config.c): the plugin_opt_* lines of mosquitto.conf, through
 * idevs_plugin_config_parse, the function the plugin calls at start. The input is lines "KEY VALUE" (KEY without
 * "plugin_opt_", VALUE the rest of the line after the first space), one option each, in order; empty lines are
 * skipped. mosquitto_log_printf, which the broker provides, is provided here to keep the lines logged.
 *
 * A model written from docs/OPERATOR.md's option table (read at start: the options, which are required, their
 * bounds N..M, their defaults) says which line, or which missing option, must stop the start. For every input:
 *   - a refusal logs exactly one error line "idevs: plugin_opt_KEY: PROBLEM" naming the option the model names,
 *     and a problem of the model's kind (unknown, given twice, empty, more than 256 processes, not a whole number
 *     from N to M with the table's bounds, neither allow nor defer, missing, renewed after the validity);
 *   - an accepted configuration logs nothing, holds every value of the lines (the last one of each, every
 *     descriptor in order), each number within the table's bounds, the table's defaults for the numbers not
 *     given, and a compartment path;
 *   - the same lines give the same answer, and the same line, twice; idevs_plugin_config_free clears it all. */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "idevs_plugin.h"

#define LINES_MAX 1024
#define LOG_MAX 4
#define LOG_LINE (1 << 17) /* longer than any input: a line is never cut */

static char logged[LOG_MAX][LOG_LINE];
static int logged_level[LOG_MAX];
static size_t log_count;

void mosquitto_log_printf(int level, const char *fmt, ...)
{
    if (log_count < LOG_MAX) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(logged[log_count], sizeof logged[0], fmt, ap);
        va_end(ap);
        logged_level[log_count] = level;
    }
    log_count++;
}

/* The options as docs/OPERATOR.md's table has them, with where each lands in idevs_plugin_config. */
typedef enum kind { K_PATH, K_LIST, K_UINT, K_ACL } kind;
typedef struct option {
    const char *name;
    kind kind;
    size_t offset;
    /* from the table */
    bool documented, required;
    unsigned long min, max, fallback; /* bounds and default of a number (K_UINT); max: most lines (K_LIST) */
    bool has_fallback;
} option;

#define PATH(n) { #n, K_PATH, offsetof(idevs_plugin_config, n), false, false, 0, 0, 0, false }
#define UINT(n) { #n, K_UINT, offsetof(idevs_plugin_config, n), false, false, 0, 0, 0, false }
static option options[] = {
#define LIST(n, field, most) { #n, K_LIST, offsetof(idevs_plugin_config, field), false, false, 0, most, 0, false }
    LIST(descriptor, descriptors, IDEVS_PROCESSES_MAX), LIST(peer_user, peer_users, 64),
    LIST(peer_bridge, peer_bridges, 64), PATH(ownership), UINT(instance_base),
    PATH(descriptor_dir), PATH(authority_key), PATH(authority_cert), PATH(operator_ca), PATH(state_dir),
    PATH(compartment), UINT(start_timeout_ms), UINT(poll_budget_ms), UINT(queue_bytes), UINT(metrics_interval_s),
    UINT(log_interval_s), UINT(certificate_validity_s), UINT(certificate_renew_after_s),
    { "acl_others", K_ACL, offsetof(idevs_plugin_config, acl_others), false, false, 0, 0, 0, false },
    LIST(join, joins, IDEVS_PROCESSES_MAX),
    PATH(backend), PATH(tpm_tcti), UINT(tpm_pcr),
};
#define OPTION_COUNT (sizeof options / sizeof options[0])

static option *option_named(const char *name)
{
    for (size_t i = 0; i < OPTION_COUNT; i++)
        if (strcmp(options[i].name, name) == 0)
            return &options[i];
    return NULL;
}

/* The last "N..M" of a table row's description. */
static bool last_range(const char *row, unsigned long *min, unsigned long *max)
{
    bool found = false;
    for (const char *p = strstr(row, ".."); p != NULL; p = strstr(p + 2, "..")) {
        const char *a = p;
        while (a > row && a[-1] >= '0' && a[-1] <= '9')
            a--;
        if (a == p || p[2] < '0' || p[2] > '9')
            continue;
        *min = strtoul(a, NULL, 10);
        *max = strtoul(p + 2, NULL, 10);
        found = true;
    }
    return found;
}

/* Reads the table: "| `plugin_opt_NAME` | required | default | description |". */
static void read_table(void)
{
    size_t len;
    char *doc = fuzz_read_source_file("docs/OPERATOR.md", &len);
    bool in_table = false;
    for (char *line = doc; line != NULL && *line != '\0';) {
        char *next = strchr(line, '\n');
        if (next != NULL)
            *next++ = '\0';
        if (in_table && line[0] != '|')
            break; /* the first table only: later ones quote the log lines */
        if (strncmp(line, "| `plugin_opt_", 14) == 0) {
            in_table = true;
            char *name = line + 14, *tick = strchr(name, '`');
            FUZZ_SETUP(tick != NULL);
            *tick = '\0';
            option *o = option_named(name);
            FUZZ_SETUP(o != NULL && !o->documented); /* every documented option is parsed, once */
            o->documented = true;
            char *cols[4] = {NULL, NULL, NULL, NULL};
            char *p = tick + 1;
            for (int c = 0; c < 3 && (p = strchr(p, '|')) != NULL; c++)
                cols[c] = ++p;
            FUZZ_SETUP(cols[2] != NULL);
            o->required = strncmp(cols[0], " yes |", 6) == 0; /* "yes, or ..." is the descriptor's rule, below */
            if (o->kind == K_UINT) {
                FUZZ_SETUP(last_range(cols[2], &o->min, &o->max));
                o->has_fallback = cols[1][1] >= '0' && cols[1][1] <= '9';
                if (o->has_fallback)
                    o->fallback = strtoul(cols[1] + 1, NULL, 10);
            }
        }
        line = next;
    }
    free(doc);
    for (size_t i = 0; i < OPTION_COUNT; i++)
        FUZZ_SETUP(options[i].documented);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    read_table();
    return 0;
}

/* What the model expects: accepted, or the option a refusal names and a word its problem contains. */
typedef struct verdict {
    bool ok;
    const char *key;
    char problem[64];
} verdict;

static bool whole_number(const char *v, unsigned long min, unsigned long max)
{
    if (v[0] == '\0' || strspn(v, "0123456789") != strlen(v))
        return false;
    unsigned long long n = 0;
    for (; *v != '\0'; v++) {
        n = n * 10 + (unsigned)(*v - '0');
        if (n > max)
            return false;
    }
    return n >= min;
}

static unsigned long number(const char *v)
{
    return strtoul(v, NULL, 10);
}

static verdict model(const struct mosquitto_opt *opts, size_t n)
{
    verdict v = {false, NULL, ""};
    bool seen[OPTION_COUNT] = {false};
    size_t lines[OPTION_COUNT] = {0};
    const char *validity = NULL, *renew = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *key = opts[i].key, *value = opts[i].value;
        option *o = option_named(key);
        v.key = key;
        if (o == NULL) {
            snprintf(v.problem, sizeof v.problem, "unknown");
            return v;
        }
        size_t s = (size_t)(o - options);
        if (seen[s] && o->kind != K_LIST) {
            snprintf(v.problem, sizeof v.problem, "twice");
            return v;
        }
        if (o->kind == K_LIST && value[0] != '\0') /* repeatable, each value once */
            for (size_t j = 0; j < i; j++)
                if (strcmp(opts[j].key, key) == 0 && strcmp(opts[j].value, value) == 0) {
                    snprintf(v.problem, sizeof v.problem, "twice");
                    return v;
                }
        seen[s] = true;
        if ((o->kind == K_PATH || o->kind == K_LIST) && value[0] == '\0') {
            snprintf(v.problem, sizeof v.problem, "empty");
            return v;
        }
        if (o->kind == K_LIST && ++lines[s] > o->max) {
            snprintf(v.problem, sizeof v.problem, "more than %lu lines", o->max);
            return v;
        }
        if (o->kind == K_UINT && !whole_number(value, o->min, o->max)) {
            snprintf(v.problem, sizeof v.problem, "from %lu to %lu", o->min, o->max);
            return v;
        }
        if (o->kind == K_ACL && strcmp(value, "allow") != 0 && strcmp(value, "defer") != 0) {
            snprintf(v.problem, sizeof v.problem, "'allow' nor 'defer'");
            return v;
        }
        if (strcmp(key, "certificate_validity_s") == 0)
            validity = value;
        if (strcmp(key, "certificate_renew_after_s") == 0)
            renew = value;
    }
    snprintf(v.problem, sizeof v.problem, "missing");
    if (lines[option_named("descriptor") - options] == 0 && !seen[option_named("descriptor_dir") - options]) {
        v.key = "descriptor";
        return v;
    }
    for (size_t s = 0; s < OPTION_COUNT; s++)
        if (options[s].required && !seen[s]) {
            v.key = options[s].name;
            return v;
        }
    /* renewed before the certificate ends: the validity given, or its default (7 days) */
    if (renew != NULL && number(renew) >= (validity != NULL ? number(validity) : 7ul * 86400ul)) {
        v.key = "certificate_renew_after_s";
        snprintf(v.problem, sizeof v.problem, "validity");
        return v;
    }
    /* the backend, and the tpm options only with backend tpm */
    const char *backend = NULL;
    for (size_t i = 0; i < n; i++)
        if (strcmp(opts[i].key, "backend") == 0)
            backend = opts[i].value;
    bool tpm = backend != NULL && strcmp(backend, "tpm") == 0;
    if (backend != NULL && !tpm && strcmp(backend, "process") != 0) {
        v.key = "backend";
        snprintf(v.problem, sizeof v.problem, "neither 'process' nor 'tpm'");
        return v;
    }
    bool tcti = seen[option_named("tpm_tcti") - options], pcr = seen[option_named("tpm_pcr") - options];
    if (!tpm && (tcti || pcr)) {
        v.key = tcti ? "tpm_tcti" : "tpm_pcr";
        snprintf(v.problem, sizeof v.problem, "only with plugin_opt_backend tpm");
        return v;
    }
    if (tpm && !tcti) {
        v.key = "tpm_tcti";
        snprintf(v.problem, sizeof v.problem, "missing");
        return v;
    }
    v.ok = true;
    v.key = NULL;
    v.problem[0] = '\0';
    return v;
}

/* The accepted configuration holds what the lines say, within the table's bounds. */
static void check_accepted(const idevs_plugin_config *c, const struct mosquitto_opt *opts, size_t n)
{
    size_t d = 0;
    for (size_t s = 0; s < OPTION_COUNT; s++) {
        const option *o = &options[s];
        const void *field = (const char *)c + o->offset;
        const char *last = NULL;
        for (size_t i = 0; i < n; i++)
            if (strcmp(opts[i].key, o->name) == 0)
                last = opts[i].value;
        switch (o->kind) {
        case K_PATH:
            if (last != NULL)
                FUZZ_CHECK(*(char *const *)field != NULL && strcmp(*(char *const *)field, last) == 0);
            else if (strcmp(o->name, "compartment") == 0) /* the build's default */
                FUZZ_CHECK(c->compartment != NULL && c->compartment[0] != '\0');
            else
                FUZZ_CHECK(*(char *const *)field == NULL);
            break;
        case K_LIST: {
            const idevs_text_list *list = field;
            d = 0;
            for (size_t i = 0; i < n; i++)
                if (strcmp(opts[i].key, o->name) == 0) {
                    FUZZ_CHECK(d < list->count && strcmp(list->items[d], opts[i].value) == 0);
                    d++;
                }
            FUZZ_CHECK(d == list->count && d <= o->max);
            break;
        }
        case K_UINT: {
            unsigned got = *(const unsigned *)field;
            if (last != NULL)
                FUZZ_CHECK(got == number(last) && got >= o->min && got <= o->max);
            else if (o->has_fallback && strcmp(o->name, "certificate_validity_s") != 0)
                FUZZ_CHECK(got == o->fallback);
            else /* the launcher's default, or one computed from another option */
                FUZZ_CHECK(got == 0);
            break;
        }
        case K_ACL:
            FUZZ_CHECK(c->acl_others == (last == NULL                  ? IDEVS_ACL_OTHERS_UNSET
                                         : strcmp(last, "allow") == 0 ? IDEVS_ACL_OTHERS_ALLOW
                                                                       : IDEVS_ACL_OTHERS_DEFER));
            break;
        }
    }
    unsigned validity = c->certificate_validity_s != 0 ? c->certificate_validity_s : 7u * 86400u;
    FUZZ_CHECK(c->certificate_renew_after_s < validity);
}

static char buf[1 << 16];
static struct mosquitto_opt opts[LINES_MAX];

/* Parses opts[0..n) once; the answer, and the line logged in line. */
static bool parse_once(const struct mosquitto_opt *o, size_t n, idevs_plugin *p, char *line, size_t *lines)
{
    memset(p, 0, sizeof *p);
    log_count = 0;
    bool ok = idevs_plugin_config_parse(p, o, (int)n);
    *lines = log_count;
    snprintf(line, LOG_LINE, "%s", log_count > 0 ? logged[0] : "");
    if (log_count > 0)
        FUZZ_CHECK(logged_level[0] == MOSQ_LOG_ERR);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size >= sizeof buf)
        return 0;
    memcpy(buf, data, size);
    buf[size] = '\0';
    size_t n = 0;
    for (char *line = buf; line <= buf + size && n < LINES_MAX;) {
        char *end = memchr(line, '\n', (size_t)(buf + size - line));
        if (end == NULL)
            end = buf + size;
        *end = '\0';
        if (end > line) {
            char *space = memchr(line, ' ', (size_t)(end - line));
            if (space != NULL)
                *space = '\0';
            opts[n].key = line;
            opts[n].value = space != NULL ? space + 1 : end;
            n++;
        }
        line = end + 1;
    }

    static idevs_plugin p, q;
    static char first[LOG_LINE], second[LOG_LINE], prefix[LOG_LINE];
    size_t lines, lines2;
    bool ok = parse_once(opts, n, &p, first, &lines);
    verdict v = model(opts, n);
    if (ok) {
        FUZZ_CHECK(v.ok && lines == 0);
        check_accepted(&p.cfg, opts, n);
    } else {
        FUZZ_CHECK(!v.ok && lines == 1);
        snprintf(prefix, sizeof prefix, IDEVS_PLUGIN_LOG_PREFIX "plugin_opt_%s: ", v.key);
        FUZZ_CHECK(strncmp(first, prefix, strlen(prefix)) == 0);
        FUZZ_CHECK(strstr(first + strlen(prefix), v.problem) != NULL);
    }
    idevs_plugin_config_free(&p);
    FUZZ_CHECK(fuzz_all_zero(&p.cfg, sizeof p.cfg));

    bool ok2 = parse_once(opts, n, &q, second, &lines2);
    FUZZ_CHECK(ok2 == ok && lines2 == lines && strcmp(first, second) == 0);
    idevs_plugin_config_free(&q);
    return 0;
}
