/* A case-study logic in a real compartment; see logic_world.h. */
#include "logic_world.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <openssl/pem.h>

#include "harness.h"

static void write_cert(const lw_world *w, const char *name, const idevs_identity *id)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s.crt", w->dir, name);
    launch_write_cert(path, id);
}

/* The descriptor of docs/DEPLOYMENT.md with these identities, routes and process.config. */
static void write_descriptor(lw_world *w, const lw_spec *spec, const char *config)
{
    char ca_hex[65], program[IDEVS_UUID_STR_LEN];
    uint8_t *der = NULL;
    size_t der_len = 0;
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_cert_to_der(spec->pki->ca_cert, &der, &der_len) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_sha256(der, der_len, digest) == IDEVS_OK);
    free(der);
    for (int i = 0; i < 32; i++)
        sprintf(ca_hex + 2 * i, "%02x", digest[i]);
    idevs_uuid_format(&w->program, program);
    char services[1024] = "";
    size_t used = 0;
    for (size_t i = 0; spec->services[i] != NULL; i++) {
        char u[IDEVS_UUID_STR_LEN];
        idevs_uuid_format(idevs_identity_uuid(spec->identities[i]), u);
        used += (size_t)snprintf(services + used, sizeof services - used,
                                 "%s{\"name\": \"%s\", \"uuid\": \"%s\", \"certificate\": \"%s.crt\"}",
                                 i > 0 ? ",\n   " : "", spec->services[i], u, spec->services[i]);
        CU_ASSERT_FATAL(used < sizeof services);
    }
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "{\"version\": 1,\n"
                     " \"process\": {\"name\": \"%s\", \"uuid\": \"%s\", \"logic\": \"%s\", \"config\": %s},\n"
                     " \"operator_ca_sha256\": \"%s\",\n"
                     " \"services\": [%s],\n"
                     " %s,\n"
                     " \"limits\": {\"max_payload\": 65536, \"queue_depth\": 64, \"event_timeout_ms\": 2000}}\n",
                     spec->process, program, spec->logic, config, ca_hex, services, spec->routes);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof text);
    launch_write_file(w->descriptor, text, (size_t)n);
}

static void party_init(lw_party *p, fixture_pki *pki, const idevs_identity *self, idevs_launcher *l)
{
    p->policy = fixture_compartment_policy(pki, idevs_launcher_measurement(l), idevs_launcher_descriptor_digest(l));
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(self, p->policy, NULL, &p->ctx) == IDEVS_OK);
    const uint8_t *der[2];
    size_t len[2];
    CU_ASSERT_FATAL(idevs_launcher_chain_count(l) == 2);
    for (size_t i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(l, i, &len[i]);
    CU_ASSERT_FATAL(idevs_envelope_add_peer(p->ctx, der, len, 2, NULL) == IDEVS_OK);
}

int lw_suite_init(lw_suite *s, const char *logic_env, const char *process, const char *const *services,
                  const char *routes)
{
    memset(s, 0, sizeof *s);
    const char *host = getenv("IDEVS_COMPARTMENT"), *logic = getenv(logic_env);
    if (host == NULL || logic == NULL) {
        fprintf(stderr, "run through meson test (IDEVS_COMPARTMENT, %s)\n", logic_env);
        return 1;
    }
    snprintf(s->host, sizeof s->host, "%s", host);
    snprintf(s->logic, sizeof s->logic, "%s", logic);
    signal(SIGPIPE, SIG_IGN); /* a compartment that dies must fail a test, not end the program */
    fixture_pki_init(&s->pki);
    for (size_t i = 0; services[i] != NULL && i < LW_MAX_PARTIES; i++)
        s->identities[i] = fixture_service(&s->pki, services[i]);
    s->spec = (lw_spec){.pki = &s->pki, .host = s->host, .logic = s->logic, .process = process,
                        .services = services, .identities = s->identities, .routes = routes};
    return 0;
}

int lw_suite_clean(lw_suite *s)
{
    for (size_t i = 0; i < LW_MAX_PARTIES; i++)
        idevs_identity_free(s->identities[i]);
    fixture_pki_free(&s->pki);
    return 0;
}

idevs_err lw_start(lw_world *w, const lw_spec *spec, const char *config)
{
    memset(w, 0, sizeof *w);
    snprintf(w->dir, sizeof w->dir, "/tmp/idevs-%s-XXXXXX", spec->process);
    CU_ASSERT_FATAL(mkdtemp(w->dir) != NULL);
    snprintf(w->state, sizeof w->state, "%s/state", w->dir);
    CU_ASSERT_FATAL(mkdir(w->state, 0700) == 0);
    snprintf(w->descriptor, sizeof w->descriptor, "%s/%s.json", w->dir, spec->process);
    size_t count = 0;
    for (; spec->services[count] != NULL; count++) {
        CU_ASSERT_FATAL(count < LW_MAX_PARTIES);
        write_cert(w, spec->services[count], spec->identities[count]);
    }
    idevs_uuid_generate(&w->program);
    write_descriptor(w, spec, config);
    idevs_launcher_config cfg;
    idevs_launcher_config_default(&cfg);
    cfg.descriptor = w->descriptor;
    cfg.host_program = spec->host;
    cfg.state_dir = w->state;
    cfg.operator_ca = spec->pki->ca_cert;
    cfg.authority = spec->pki->authority;
    cfg.authority_cert = spec->pki->authority_cert;
    cfg.max_attempts = 1;
    cfg.on_event = launch_record_on_event; /* into w->r: what the operator's log would say */
    cfg.event_arg = &w->r;
    char why[512] = "";
    idevs_err err = idevs_launcher_new(&cfg, &w->l, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "\n    idevs_launcher_new: %s (%s)\n", idevs_strerror(err), why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    err = idevs_launcher_start(w->l, why, sizeof why);
    if (err == IDEVS_OK) {
        for (size_t i = 0; i < count; i++)
            party_init(&w->party[i], spec->pki, spec->identities[i], w->l);
        w->party_count = count;
    }
    return err;
}

void lw_free(lw_world *w)
{
    for (size_t i = 0; i < w->party_count; i++) {
        idevs_envelope_ctx_free(w->party[i].ctx);
        idevs_cert_policy_free(w->party[i].policy);
    }
    idevs_launcher_free(w->l);
    launch_record_clear(&w->r);
    CU_ASSERT(harness_remove_tree(w->dir) == 0);
}

void lw_expect_refused(const lw_spec *spec, const char *const *configs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        lw_world w;
        idevs_err err = lw_start(&w, spec, configs[i]);
        CU_ASSERT_NOT_EQUAL(err, IDEVS_OK);
        if (err == IDEVS_OK)
            fprintf(stderr, "\n    the logic started with the configuration %s\n", configs[i]);
        lw_free(&w);
    }
}

uint64_t lw_deliver(lw_world *w, lw_party *p, const char *topic, const char *text, const idevs_msgid *prov,
                    idevs_msgid *message_id)
{
    idevs_seal_input in = {.recipient = &w->program, .topic = topic, .payload = (const uint8_t *)text,
                           .payload_len = strlen(text), .provenance = prov, .provenance_count = prov ? 1 : 0};
    uint8_t *env = NULL;
    size_t len = 0;
    CU_ASSERT_FATAL(idevs_envelope_seal(p->ctx, &in, &env, &len, message_id) == IDEVS_OK);
    /* As a service answers: with the correlation data of the request it names, when the process sent one. */
    const uint8_t *corr = prov != NULL ? prov->b : NULL;
    size_t corr_len = prov != NULL ? IDEVS_UUID_LEN : 0;
    for (size_t i = 0; prov != NULL && i < w->r.pub_count; i++)
        if (w->r.pub_correlation_len[i] >= IDEVS_UUID_LEN && memcmp(w->r.pub_correlation[i], prov->b, IDEVS_UUID_LEN) == 0) {
            corr = w->r.pub_correlation[i];
            corr_len = w->r.pub_correlation_len[i];
        }
    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver(w->l, topic, env, len, corr, corr_len, &id) == IDEVS_OK);
    free(env);
    return id;
}

idevs_err lw_wait_done(lw_world *w, uint64_t id)
{
    idevs_launcher_callbacks cb = launch_record_callbacks(&w->r);
    int64_t end = launch_now_ms() + 10000;
    for (;;) {
        for (size_t i = 0; i < w->r.done_count; i++)
            if (w->r.done_id[i] == id)
                return w->r.done_status[i];
        if (launch_now_ms() > end) {
            CU_FAIL("no Done in time");
            return IDEVS_ERR_TIMEOUT;
        }
        CU_ASSERT_FATAL(idevs_launcher_poll(w->l, 50, &cb) == IDEVS_OK);
    }
}

const char *lw_done_refusal(const lw_world *w, uint64_t id)
{
    for (size_t i = 0; i < w->r.done_count; i++)
        if (w->r.done_id[i] == id)
            return w->r.done_refusal[i];
    return "(not done)";
}

void lw_poll_for(lw_world *w, int ms)
{
    idevs_launcher_callbacks cb = launch_record_callbacks(&w->r);
    int64_t end = launch_now_ms() + ms;
    while (launch_now_ms() < end)
        CU_ASSERT_FATAL(idevs_launcher_poll(w->l, 20, &cb) == IDEVS_OK);
}

char *lw_open_pub(lw_world *w, lw_party *p, size_t i, idevs_opened *o)
{
    memset(o, 0, sizeof *o);
    idevs_err err = idevs_envelope_open(p->ctx, w->r.pub_topic[i], w->r.pub_env[i], w->r.pub_len[i], o);
    if (err != IDEVS_OK)
        fprintf(stderr, "\n    open publication %zu: %s\n", i, idevs_strerror(err));
    CU_ASSERT_FATAL(err == IDEVS_OK);
    return strndup((const char *)o->payload, o->payload_len);
}

bool lw_json_keys_are(const char *text, const char *const *keys, size_t n)
{
    cJSON *j = cJSON_Parse(text);
    bool ok = cJSON_IsObject(j);
    size_t k = 0;
    for (const cJSON *c = ok ? j->child : NULL; c != NULL && ok; c = c->next, k++)
        ok = k < n && strcmp(c->string, keys[k]) == 0;
    cJSON_Delete(j);
    return ok && k == n;
}

const char *lw_json_str(cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? v->valuestring : "(missing)";
}
