/* The launcher (enclave-bridge/idevs_launcher.h) with real child processes: the real idevs-compartment and the
 * test logics of tests/logic/, plus, for the framing tests only, tests/launcher/launcher_peer (a host program
 * that breaks the protocol on purpose) and tests/launcher/idevs_logic_hang.so (a logic that stops answering).
 *
 * The compartment and the logics come from the environment meson gives the unit tests (IDEVS_COMPARTMENT,
 * IDEVS_TEST_LOGIC_DIR); the launcher's own helpers lie next to this program in the build tree. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "fixtures.h"
#include "harness.h"
#include "idevs.pb-c.h"
#include "idevs_backend.h"
#include "idevs_envelope.h"
#include "idevs_file.h"
#include "idevs_receipt.h"
#include "idevs_launcher.h"
#include "launch_record.h"

#define IN_TOPIC "t/in/events"
#define OUT_TOPIC "t/out"

/* ---- the world every test starts from ---- */

static fixture_pki pki;
static idevs_identity *store; /* sends to the compartment */
static idevs_identity *sink;  /* receives from it */
static char host_path[PATH_MAX], echo_path[PATH_MAX], hang_path[PATH_MAX], peer_path[PATH_MAX],
    hostile_dir[PATH_MAX];

typedef struct world {
    char dir[64];
    char state[128];
    char descriptor[128];
    idevs_uuid program;
} world;

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

/* Writes the deployment descriptor of the test process: input "events" from store, output "out" to sink,
 * request "ask" to sink. logic is written as given (absolute). */
static const char *limits_extra = ""; /* more limits for the next world_init(), e.g. ", \"max_outstanding_requests\": 4" */
static const char *process_extra = ""; /* more of process for the next world_init(), e.g. ", \"instances\": 3" */
static const char *process_config = "{}"; /* process.config for the next world_init() */

static void write_descriptor(world *w, const char *logic, unsigned queue_depth, unsigned event_timeout_ms)
{
    char ca_hex[65], program[IDEVS_UUID_STR_LEN], store_u[IDEVS_UUID_STR_LEN], sink_u[IDEVS_UUID_STR_LEN];
    uint8_t *der = NULL;
    size_t der_len = 0;
    uint8_t digest[32];
    CU_ASSERT_FATAL(idevs_cert_to_der(pki.ca_cert, &der, &der_len) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_sha256(der, der_len, digest) == IDEVS_OK);
    free(der);
    hex(digest, 32, ca_hex);
    idevs_uuid_format(&w->program, program);
    idevs_uuid_format(idevs_identity_uuid(store), store_u);
    idevs_uuid_format(idevs_identity_uuid(sink), sink_u);
    char text[4096];
    int n = snprintf(text, sizeof text,
                     "{\"version\": 1,\n"
                     " \"process\": {\"name\": \"rewards\", \"uuid\": \"%s\", \"logic\": \"%s\", \"config\": %s%s},\n"
                     " \"operator_ca_sha256\": \"%s\",\n"
                     " \"services\": [{\"name\": \"store\", \"uuid\": \"%s\", \"certificate\": \"store.crt\", \"receipts\": true},\n"
                     "              {\"name\": \"sink\", \"uuid\": \"%s\", \"certificate\": \"sink.crt\"}],\n"
                     " \"inputs\": [{\"name\": \"events\", \"topic\": \"" IN_TOPIC "\", \"from\": \"store\"}],\n"
                     " \"outputs\": [{\"name\": \"out\", \"topic\": \"" OUT_TOPIC "\", \"to\": \"sink\", \"qos\": 1}],\n"
                     " \"requests\": [{\"name\": \"ask\", \"topic\": \"t/req/ask\", \"response_topic\": \"t/resp/ask\","
                     " \"to\": \"sink\", \"qos\": 1}],\n"
                     " \"refusals\": [\"not_a_sale\", \"amount_out_of_range\"],\n"
                     " \"limits\": {\"max_payload\": 65536, \"queue_depth\": %u, \"event_timeout_ms\": %u%s}}\n",
                     program, logic, process_config, process_extra, ca_hex, store_u, sink_u, queue_depth, event_timeout_ms,
                     limits_extra);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof text);
    launch_write_file(w->descriptor, text, (size_t)n);
}

static void world_init(world *w, const char *logic, unsigned queue_depth, unsigned event_timeout_ms)
{
    snprintf(w->dir, sizeof w->dir, "/tmp/idevs-launcher-XXXXXX");
    CU_ASSERT_FATAL(mkdtemp(w->dir) != NULL);
    snprintf(w->state, sizeof w->state, "%s/state", w->dir);
    CU_ASSERT_FATAL(mkdir(w->state, 0700) == 0);
    snprintf(w->descriptor, sizeof w->descriptor, "%s/deployment.json", w->dir);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/store.crt", w->dir);
    launch_write_cert(path, store);
    snprintf(path, sizeof path, "%s/sink.crt", w->dir);
    launch_write_cert(path, sink);
    idevs_uuid_generate(&w->program);
    write_descriptor(w, logic, queue_depth, event_timeout_ms);
}

static void world_free(world *w)
{
    CU_ASSERT(harness_remove_tree(w->dir) == 0);
}

static bool saw_event(const launch_record *r, const char *needle)
{
    for (size_t i = 0; i < r->event_count; i++)
        if (strstr(r->events[i], needle) != NULL)
            return true;
    return false;
}

static idevs_err done_status_of(const launch_record *r, uint64_t id, size_t *times)
{
    idevs_err st = IDEVS_ERR_COUNT;
    *times = 0;
    for (size_t i = 0; i < r->done_count; i++)
        if (r->done_id[i] == id) {
            st = r->done_status[i];
            (*times)++;
        }
    return st;
}

/* ---- launchers ---- */

static void config(idevs_launcher_config *cfg, const world *w, const char *host, launch_record *r)
{
    idevs_launcher_config_default(cfg);
    cfg->descriptor = w->descriptor;
    cfg->host_program = host;
    cfg->state_dir = w->state;
    cfg->operator_ca = pki.ca_cert;
    cfg->authority = pki.authority;
    cfg->authority_cert = pki.authority_cert;
    cfg->backoff_initial_ms = 20;
    cfg->exit_grace_ms = 200;
    cfg->on_event = launch_record_on_event;
    cfg->event_arg = r;
}

static idevs_launcher *launcher(const idevs_launcher_config *cfg)
{
    idevs_launcher *l = NULL;
    char why[512] = "";
    idevs_err err = idevs_launcher_new(cfg, &l, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "idevs_launcher_new: %s (%s)\n", idevs_strerror(err), why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    return l;
}

static void start(idevs_launcher *l)
{
    char why[512] = "";
    idevs_err err = idevs_launcher_start(l, why, sizeof why);
    if (err != IDEVS_OK)
        fprintf(stderr, "idevs_launcher_start: %s (%s)\n", idevs_strerror(err), why);
    CU_ASSERT_FATAL(err == IDEVS_OK);
}

/* Polls until want Done calls were seen or timeout_ms passed. */
static void poll_until_done(idevs_launcher *l, launch_record *r, size_t want, int timeout_ms)
{
    idevs_launcher_callbacks cb = launch_record_callbacks(r);
    int64_t end = launch_now_ms() + timeout_ms;
    while (r->done_count < want && launch_now_ms() < end)
        CU_ASSERT_FATAL(idevs_launcher_poll(l, 50, &cb) == IDEVS_OK);
}

static void poll_until_ready(idevs_launcher *l, launch_record *r, uint64_t started_before, int timeout_ms)
{
    idevs_launcher_callbacks cb = launch_record_callbacks(r);
    idevs_launcher_stats st;
    int64_t end = launch_now_ms() + timeout_ms;
    do {
        CU_ASSERT_FATAL(idevs_launcher_poll(l, 20, &cb) == IDEVS_OK);
        idevs_launcher_get_stats(l, &st);
    } while ((st.state != IDEVS_LAUNCHER_READY || st.started <= started_before) && launch_now_ms() < end);
    CU_ASSERT_FATAL(st.state == IDEVS_LAUNCHER_READY && st.started > started_before);
}

/* ---- envelopes ---- */

typedef struct party {
    idevs_cert_policy *policy;
    idevs_envelope_ctx *ctx;
} party;

static void party_init(party *p, const idevs_identity *self, idevs_launcher *l)
{
    p->policy = fixture_compartment_policy(&pki, idevs_launcher_measurement(l), idevs_launcher_descriptor_digest(l));
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(self, p->policy, NULL, &p->ctx) == IDEVS_OK);
}

/* (Re-)registers the compartment's current certificate. */
static void party_meet(party *p, idevs_launcher *l, idevs_cert_info *info)
{
    const uint8_t *der[2];
    size_t len[2];
    size_t n = idevs_launcher_chain_count(l);
    CU_ASSERT_FATAL(n == 2);
    for (size_t i = 0; i < n; i++)
        der[i] = idevs_launcher_chain_der(l, i, &len[i]);
    idevs_err err = idevs_envelope_add_peer(p->ctx, der, len, n, info);
    if (err != IDEVS_OK)
        fprintf(stderr, "add_peer: %s\n", idevs_strerror(err));
    CU_ASSERT_FATAL(err == IDEVS_OK);
}

/* Frees and zeroes: freeing again does nothing. */
static void party_free(party *p)
{
    idevs_envelope_ctx_free(p->ctx);
    idevs_cert_policy_free(p->policy);
    memset(p, 0, sizeof *p);
}

static uint8_t *seal(party *p, const world *w, const char *payload, size_t *len)
{
    idevs_seal_input in = {.recipient = &w->program, .topic = IN_TOPIC, .payload = (const uint8_t *)payload,
                           .payload_len = strlen(payload)};
    uint8_t *out = NULL;
    idevs_err err = idevs_envelope_seal(p->ctx, &in, &out, len, NULL);
    CU_ASSERT_FATAL(err == IDEVS_OK);
    return out;
}

/* Opens the i-th publication at the sink; returns its payload (malloc'd) or NULL. */
static char *open_output(party *p, const launch_record *r, size_t i)
{
    idevs_opened o;
    memset(&o, 0, sizeof o);
    idevs_err err = idevs_envelope_open(p->ctx, r->pub_topic[i], r->pub_env[i], r->pub_len[i], &o);
    if (err != IDEVS_OK) {
        fprintf(stderr, "open output %zu: %s\n", i, idevs_strerror(err));
        return NULL;
    }
    char *s = strndup((const char *)o.payload, o.payload_len);
    idevs_opened_clear(&o);
    return s;
}

static uint64_t deliver(idevs_launcher *l, party *p, const world *w, const char *payload)
{
    size_t len = 0;
    uint8_t *env = seal(p, w, payload, &len);
    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver(l, IN_TOPIC, env, len, NULL, 0, &id) == IDEVS_OK);
    free(env);
    return id;
}

/* The whole of a file the test made, read with the project's one file reader. */
static uint8_t *whole_file(const char *path, size_t *len)
{
    const idevs_file_rules rules = {.what = NULL, .min = 0, .max = 64u << 20, .flags = 0, .fail = 0};
    uint8_t *b = NULL;
    char why[256];
    CU_ASSERT_FATAL(idevs_file_read(AT_FDCWD, path, &rules, &b, len, why, sizeof why) == IDEVS_OK);
    return b;
}

static void file_sha256(const char *path, uint8_t out[32])
{
    size_t n = 0;
    uint8_t *b = whole_file(path, &n);
    CU_ASSERT_FATAL(idevs_sha256(b, n, out) == IDEVS_OK);
    free(b);
}

static void copy_file(const char *from, const char *to)
{
    size_t n = 0;
    uint8_t *b = whole_file(from, &n);
    launch_write_file(to, b, n);
    free(b);
}

/* ---- a test's world, record, launcher and parties, in one ---- */

typedef struct rig {
    launch_record r;
    world w;
    idevs_launcher_config cfg; /* config() of w and r */
    idevs_launcher *l;         /* NULL until rig_start(), or when the test frees it itself */
    party st, sk;              /* store and sink, once rig_start() met the compartment */
} rig;

/* A new world for logic and the launcher's configuration for it, with host as the host program; no launcher yet.
 * The test may change t->cfg before rig_start(). */
static rig *rig_new(const char *logic, unsigned queue_depth, unsigned event_timeout_ms, const char *host)
{
    rig *t = calloc(1, sizeof *t);
    CU_ASSERT_FATAL(t != NULL);
    world_init(&t->w, logic, queue_depth, event_timeout_ms);
    config(&t->cfg, &t->w, host, &t->r);
    return t;
}

/* Starts t->l (made from t->cfg when there is none yet); store meets the compartment (its certificate in *info
 * unless NULL), then sink. */
static void rig_start(rig *t, idevs_cert_info *info)
{
    if (t->l == NULL)
        t->l = launcher(&t->cfg);
    start(t->l);
    party_init(&t->st, store, t->l);
    party_meet(&t->st, t->l, info);
    party_init(&t->sk, sink, t->l);
    party_meet(&t->sk, t->l, NULL);
}

/* Frees t's launcher (it writes its replay record as it stops); the world, record and parties stay. */
static void rig_stop(rig *t)
{
    idevs_launcher_free(t->l);
    t->l = NULL;
}

static void rig_free(rig *t)
{
    party_free(&t->st);
    party_free(&t->sk);
    idevs_launcher_free(t->l);
    world_free(&t->w);
    launch_record_clear(&t->r);
    free(t);
}

/* A started launcher of the echo logic (queue 16, event timeout 2 s) in a new world, store and sink meeting it. */
static rig *echo_started(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    rig_start(t, NULL);
    return t;
}

/* ---- tests ---- */

/* measurement = SHA-256("idevs measurement v2" || SHA-256(host) || SHA-256(logic) || SHA-256(descriptor)),
 * computed here from the files; another logic gives another measurement. */
static void test_measurement_rule(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    idevs_launcher *a = launcher(&t->cfg);
    uint8_t in[20 + 96], expect[32];
    memcpy(in, "idevs measurement v2", 20);
    file_sha256(host_path, in + 20);
    file_sha256(echo_path, in + 52);
    file_sha256(t->w.descriptor, in + 84);
    CU_ASSERT_FATAL(idevs_sha256(in, sizeof in, expect) == IDEVS_OK);
    CU_ASSERT(memcmp(idevs_launcher_measurement(a), expect, 32) == 0);
    CU_ASSERT(memcmp(idevs_launcher_descriptor_digest(a), in + 84, 32) == 0);

    t->cfg.logic = hang_path; /* same descriptor, other logic */
    idevs_launcher *b = launcher(&t->cfg);
    CU_ASSERT(memcmp(idevs_launcher_measurement(a), idevs_launcher_measurement(b), 32) != 0);
    idevs_launcher_free(a);
    idevs_launcher_free(b);
    rig_free(t);
}

/* The launcher runs what it measured: replacing the logic file after measuring changes nothing. */
static void test_no_swap_after_measuring(void)
{
    char logic[PATH_MAX + 16];
    rig *t = rig_new("placeholder.so", 16, 2000, host_path);
    snprintf(logic, sizeof logic, "%s/logic.so", t->w.dir);
    copy_file(echo_path, logic);
    write_descriptor(&t->w, logic, 16, 2000);
    t->l = launcher(&t->cfg);
    uint8_t measured[32];
    memcpy(measured, idevs_launcher_measurement(t->l), 32);
    copy_file(hang_path, logic); /* the swap: a logic that hangs on "hang..." */
    /* The certificate carries the measurement of the echo logic ... */
    idevs_cert_info info;
    rig_start(t, &info);
    CU_ASSERT(info.has_evidence && memcmp(info.evidence.measurement, measured, 32) == 0);
    /* ... and the echo logic is what runs: "hang now" comes back instead of hanging. */
    uint64_t id = deliver(t->l, &t->st, &t->w, "hang now");
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(times, 1);
    CU_ASSERT_FATAL(t->r.pub_count == 1);
    char *got = open_output(&t->sk, &t->r, 0);
    CU_ASSERT(got != NULL && strcmp(got, "hang now") == 0);
    free(got);
    rig_free(t);
}

static void test_round_trip_and_private_files(void)
{
    rig *t = echo_started();
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.state == IDEVS_LAUNCHER_READY && s.pid > 0 && s.started == 1 && s.certified == 1);
    CU_ASSERT(s.last_certified_us > 0 && s.last_ready_us >= s.last_certified_us);
    CU_ASSERT(!s.last_keys_restored);
    CU_ASSERT(saw_event(&t->r, "certified in"));
    CU_ASSERT(saw_event(&t->r, "compartment 'rewards' (program "));

    /* The compartment runs unprivileged: as "nobody" when the tests run as root, else as us. */
    char status_path[64], line[256];
    snprintf(status_path, sizeof status_path, "/proc/%d/status", (int)s.pid);
    FILE *f = fopen(status_path, "r");
    CU_ASSERT_FATAL(f != NULL);
    unsigned uid = 0;
    while (fgets(line, sizeof line, f) != NULL)
        if (sscanf(line, "Uid: %u", &uid) == 1)
            break;
    fclose(f);
    CU_ASSERT_EQUAL(uid, geteuid() == 0 ? 65534u : (unsigned)geteuid());

    /* The state files are private. */
    char path[PATH_MAX + 64], program[IDEVS_UUID_STR_LEN];
    struct stat st_;
    snprintf(path, sizeof path, "%s/sealing.key", t->w.state);
    CU_ASSERT_FATAL(stat(path, &st_) == 0);
    CU_ASSERT_EQUAL(st_.st_mode & 0777, 0600);
    CU_ASSERT_EQUAL(st_.st_size, 32);
    idevs_uuid_format(&t->w.program, program);
    snprintf(path, sizeof path, "%s/%s.sealed", t->w.state, program);
    CU_ASSERT_FATAL(stat(path, &st_) == 0);
    CU_ASSERT_EQUAL(st_.st_mode & 0777, 0600);

    uint64_t a = deliver(t->l, &t->st, &t->w, "hello");
    uint64_t b = deliver(t->l, &t->st, &t->w, "upper:quiet");
    poll_until_done(t->l, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, b, &times), IDEVS_OK);
    CU_ASSERT_FATAL(t->r.pub_count == 2);
    char *o1 = open_output(&t->sk, &t->r, 0), *o2 = open_output(&t->sk, &t->r, 1);
    CU_ASSERT(o1 != NULL && strcmp(o1, "hello") == 0 && t->r.pub_id[0] == a);
    CU_ASSERT(o2 != NULL && strcmp(o2, "QUIET") == 0 && t->r.pub_id[1] == b);
    CU_ASSERT_STRING_EQUAL(t->r.pub_topic[0], OUT_TOPIC);
    free(o1);
    free(o2);

    /* A failing handler: Done with its error and nothing published (transactional). */
    uint64_t c = deliver(t->l, &t->st, &t->w, "fail");
    poll_until_done(t->l, &t->r, 3, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, c, &times), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(t->r.pub_count, 2);

    /* A clean stop reaps the child: Shutdown, not a kill. */
    pid_t pid = s.pid;
    idevs_launcher_stop(t->l, 2000);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.state == IDEVS_LAUNCHER_STOPPED && s.pid == 0 && s.killed == 0);
    errno = 0;
    CU_ASSERT(waitpid(pid, NULL, WNOHANG) == -1 && errno == ECHILD);
    CU_ASSERT(kill(pid, 0) == -1);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, (const uint8_t *)"x", 1, NULL, 0, NULL), IDEVS_ERR_NOT_NOW);
    rig_free(t);
}

/* A group-readable sealing secret is refused, naming the file. */
static void test_sealing_key_must_be_private(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    char path[PATH_MAX + 16];
    snprintf(path, sizeof path, "%s/sealing.key", t->w.state);
    uint8_t secret[32] = {1};
    launch_write_file(path, secret, sizeof secret);
    CU_ASSERT_FATAL(chmod(path, 0640) == 0);
    t->l = launcher(&t->cfg);
    char why[512] = "";
    CU_ASSERT_EQUAL(idevs_launcher_start(t->l, why, sizeof why), IDEVS_ERR_KEY_FILE);
    CU_ASSERT(strstr(why, "sealing.key") != NULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.state == IDEVS_LAUNCHER_STOPPED && s.started == 0);
    rig_free(t);
}

/* kill -9 mid-stream: the compartment restarts with the same keys, an envelope sealed before the crash opens
 * after it, and every delivery gets exactly one Done and one output. */
static void test_kill9_keeps_identity_loses_nothing(void)
{
    enum { N = 1000 };
    rig *t = rig_new(echo_path, 1024, 5000, host_path);
    idevs_cert_info before, after;
    rig_start(t, &before);
    size_t early_len = 0;
    uint8_t *early = seal(&t->st, &t->w, "sealed before the crash", &early_len);

    uint64_t ids[N];
    char payload[32];
    for (int i = 0; i < N; i++) {
        snprintf(payload, sizeof payload, "event %d", i);
        ids[i] = deliver(t->l, &t->st, &t->w, payload);
    }
    poll_until_done(t->l, &t->r, 1, 5000);
    /* Freeze the compartment first: it can otherwise finish every delivery before the kill lands, and then
     * nothing would be in flight. Frozen, what it has not answered stays in flight. */
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0);
    poll_until_done(t->l, &t->r, N, 100); /* take the answers it sent before it froze */
    CU_ASSERT_FATAL(t->r.done_count >= 1 && t->r.done_count < N);
    CU_ASSERT_FATAL(kill(s.pid, SIGKILL) == 0);
    poll_until_done(t->l, &t->r, N, 20000);
    CU_ASSERT_FATAL(t->r.done_count == N);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.restarts == 1 && s.started == 2 && s.resent >= 1 && s.given_up == 0);
    CU_ASSERT(s.last_keys_restored);
    CU_ASSERT(strstr(s.last_exit, "signal 9") != NULL);
    CU_ASSERT(saw_event(&t->r, "restarting in 20 ms"));
    for (int i = 0; i < N; i++) {
        size_t times = 0;
        CU_ASSERT_EQUAL(done_status_of(&t->r, ids[i], &times), IDEVS_OK);
        CU_ASSERT_EQUAL(times, 1);
    }
    /* One output per delivery, in the order of the Done calls, each opening to its own payload. */
    party_meet(&t->sk, t->l, NULL); /* the new certificate (same keys) */
    CU_ASSERT_FATAL(t->r.pub_count == N);
    size_t opened = 0;
    for (size_t i = 0; i < t->r.pub_count; i++) {
        char *got = open_output(&t->sk, &t->r, i);
        int k = -1;
        for (int j = 0; j < N; j++)
            if (ids[j] == t->r.pub_id[i])
                k = j;
        snprintf(payload, sizeof payload, "event %d", k);
        if (got != NULL && k >= 0 && strcmp(got, payload) == 0)
            opened++;
        free(got);
    }
    CU_ASSERT_EQUAL(opened, N);

    /* Same keys in the new certificate. */
    CU_ASSERT_FATAL(idevs_launcher_chain_count(t->l) == 2);
    const uint8_t *der[2];
    size_t len[2];
    for (int i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(t->l, (size_t)i, &len[i]);
    idevs_cert_policy *pol = fixture_compartment_policy(&pki, idevs_launcher_measurement(t->l),
                                                        idevs_launcher_descriptor_digest(t->l));
    CU_ASSERT_FATAL(idevs_cert_verify(pol, der, len, 2, &after, NULL, 0) == IDEVS_OK);
    idevs_cert_policy_free(pol);
    CU_ASSERT(memcmp(before.sign_pub, after.sign_pub, 32) == 0);
    CU_ASSERT(memcmp(before.kex_pub, after.kex_pub, 32) == 0);
    CU_ASSERT(memcmp(before.cert_digest, after.cert_digest, 32) != 0);

    /* The envelope sealed to the first compartment opens in the second. */
    size_t base = t->r.done_count;
    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver(t->l, IN_TOPIC, early, early_len, NULL, 0, &id) == IDEVS_OK);
    poll_until_done(t->l, &t->r, base + 1, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    CU_ASSERT_FATAL(t->r.pub_count == N + 1);
    char *got = open_output(&t->sk, &t->r, N);
    CU_ASSERT(got != NULL && strcmp(got, "sealed before the crash") == 0);
    free(got);
    free(early);
    rig_free(t);
}

/* Another measurement (another logic) with the same state: the sealed keys do not open; fresh keys, a fresh
 * certificate, and envelopes sealed to the old keys are refused. */
static void test_other_measurement_gets_fresh_keys(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    idevs_cert_info first, second;
    rig_start(t, &first);
    size_t old_len = 0;
    uint8_t *old = seal(&t->st, &t->w, "for the old keys", &old_len);
    rig_stop(t);

    t->cfg.logic = hang_path;
    idevs_launcher *b = launcher(&t->cfg);
    start(b);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(b, &s);
    CU_ASSERT(!s.last_keys_restored);
    CU_ASSERT(saw_event(&t->r, "got fresh keys"));
    const uint8_t *der[2];
    size_t len[2];
    for (int i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(b, (size_t)i, &len[i]);
    idevs_cert_policy *pol = fixture_compartment_policy(&pki, idevs_launcher_measurement(b),
                                                        idevs_launcher_descriptor_digest(b));
    CU_ASSERT_FATAL(idevs_cert_verify(pol, der, len, 2, &second, NULL, 0) == IDEVS_OK);
    idevs_cert_policy_free(pol);
    CU_ASSERT(memcmp(first.sign_pub, second.sign_pub, 32) != 0);
    CU_ASSERT(memcmp(first.kex_pub, second.kex_pub, 32) != 0);
    CU_ASSERT(memcmp(first.evidence.measurement, second.evidence.measurement, 32) != 0);

    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver(b, IN_TOPIC, old, old_len, NULL, 0, &id) == IDEVS_OK);
    poll_until_done(b, &t->r, 1, 5000);
    size_t times = 0;
    idevs_err status = done_status_of(&t->r, id, &times);
    CU_ASSERT(times == 1 && status != IDEVS_OK && status != IDEVS_ERR_COUNT);
    CU_ASSERT_EQUAL(t->r.pub_count, 0);
    free(old);
    idevs_launcher_free(b);
    rig_free(t);
}

/* idevs_launcher_deliver_from() on the input topic, as MQTT client `client`. */
static idevs_err deliver_as(idevs_launcher *l, const char *client, const uint8_t *env, size_t len, uint64_t *id)
{
    return idevs_launcher_deliver_from(l, client, IN_TOPIC, env, len, NULL, 0, id);
}

/* Seals a payload of n bytes ('q' repeated), unpadded (IDEVS_PAD_NONE), so that envelope sizes follow n closely. */
static uint8_t *seal_sized(party *p, const world *w, size_t n, size_t *len)
{
    uint8_t *text = malloc(n);
    CU_ASSERT_FATAL(text != NULL);
    memset(text, 'q', n);
    idevs_seal_input in = {.recipient = &w->program, .topic = IN_TOPIC, .payload = text, .payload_len = n,
                           .pad = IDEVS_PAD_NONE};
    uint8_t *out = NULL;
    CU_ASSERT_FATAL(idevs_envelope_seal(p->ctx, &in, &out, len, NULL) == IDEVS_OK);
    free(text);
    return out;
}

/* The queue is bounded in envelope bytes as well as in count (queue_bytes): an envelope that would take the
 * deliveries not done over it is refused as queue full, an empty queue takes one whatever its size, and the
 * bytes of done deliveries are given back. Clients and senders share the bytes as they share the count. */
static void test_queue_bytes_bound(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    t->cfg.queue_bytes = 8000;
    rig_start(t, NULL);
    size_t big_len = 0, len[4] = {0};
    uint8_t *big = seal_sized(&t->st, &t->w, 9000, &big_len), *env[4];
    for (int i = 0; i < 4; i++)
        env[i] = seal_sized(&t->st, &t->w, 3000, &len[i]);
    CU_ASSERT_FATAL(big_len > 8000 && len[0] * 2 <= 8000 && len[0] * 3 > 8000);
    uint64_t id = 0;
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, big, big_len, NULL, 0, &id), IDEVS_OK); /* empty queue */
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env[0], len[0], NULL, 0, &id), IDEVS_ERR_QUEUE_FULL);
    poll_until_done(t->l, &t->r, 1, 5000);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env[0], len[0], NULL, 0, &id), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env[1], len[1], NULL, 0, &id), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env[2], len[2], NULL, 0, &id), IDEVS_ERR_QUEUE_FULL);
    poll_until_done(t->l, &t->r, 3, 5000);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env[3], len[3], NULL, 0, &id), IDEVS_OK);
    poll_until_done(t->l, &t->r, 4, 5000);
    CU_ASSERT_EQUAL(t->r.done_count, 4);
    CU_ASSERT_EQUAL(t->r.pub_count, 4);
    free(big);
    for (int i = 0; i < 4; i++)
        free(env[i]);

    /* Shared by clients (shares.c): one client holds half the bytes (4000), the envelopes naming store three
     * quarters (6000); a client holding nothing may queue one envelope whatever its size. Stopped meanwhile, so
     * that nothing drains between the calls. */
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0);
    for (int i = 0; i < 3; i++)
        env[i] = seal_sized(&t->st, &t->w, 2700, &len[i]);
    CU_ASSERT_FATAL(len[0] <= 4000 && len[0] * 2 > 4000 && len[0] * 2 <= 6000);
    uint64_t ids[2] = {0};
    CU_ASSERT_EQUAL(deliver_as(t->l, "client-1", env[0], len[0], &ids[0]), IDEVS_OK);
    CU_ASSERT_EQUAL(deliver_as(t->l, "client-1", env[1], len[1], NULL), IDEVS_ERR_QUEUE_CLIENT_SHARE);
    CU_ASSERT_EQUAL(deliver_as(t->l, "client-2", env[1], len[1], &ids[1]), IDEVS_OK);
    CU_ASSERT_EQUAL(deliver_as(t->l, "client-3", env[2], len[2], NULL), IDEVS_ERR_QUEUE_SENDER_SHARE);
    CU_ASSERT_FATAL(kill(s.pid, SIGCONT) == 0);
    poll_until_done(t->l, &t->r, 6, 5000);
    CU_ASSERT_EQUAL(deliver_as(t->l, "client-3", env[2], len[2], NULL), IDEVS_OK); /* given back */
    poll_until_done(t->l, &t->r, 7, 5000);
    CU_ASSERT_EQUAL(t->r.pub_count, 7);
    for (int i = 0; i < 3; i++)
        free(env[i]);
    rig_free(t);
}

/* A compartment that does not answer within the event timeout is killed; the delivery is tried max_attempts
 * times and then given up with IDEVS_ERR_TIMEOUT; the next delivery is served. */
static void test_hung_compartment_killed(void)
{
    rig *t = rig_new(hang_path, 16, 300, host_path);
    t->cfg.max_attempts = 2;
    rig_start(t, NULL);
    int64_t t0 = launch_now_ms();
    uint64_t hung = deliver(t->l, &t->st, &t->w, "hang forever");
    uint64_t fine = deliver(t->l, &t->st, &t->w, "fine");
    poll_until_done(t->l, &t->r, 2, 10000);
    int64_t took = launch_now_ms() - t0;
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, hung, &times), IDEVS_ERR_TIMEOUT);
    CU_ASSERT_EQUAL(times, 1);
    CU_ASSERT_EQUAL(done_status_of(&t->r, fine, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(times, 1);
    CU_ASSERT(t->r.pub_count == 1 && t->r.pub_id[0] == fine);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    /* Two watchdogs race with the same 300 ms: the launcher's (it kills the compartment) and the compartment
     * host's own over its logic process (the host exits with status 1). Either ends each attempt. */
    CU_ASSERT(s.given_up == 1 && s.restarts == 2 && s.killed <= 2);
    CU_ASSERT(strstr(s.last_exit, "not answered within 300 ms") != NULL ||
              strstr(s.last_exit, "did not answer within 300 ms") != NULL);
    CU_ASSERT(saw_event(&t->r, "gave up delivery"));
    CU_ASSERT(took >= 600 && took < 5000);
    rig_free(t);
}

/* What the launcher owns of its deployment: the kind of each topic, the keyless gate's sender check, whether
 * two processes can share a broker, and whether the descriptor file changed (a FIFO in its place is refused at
 * once, never waited on). */
static void test_topics_gate_conflicts_and_reload_check(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path), *t2 = rig_new(echo_path, 16, 2000, host_path);
    t->l = launcher(&t->cfg);
    const char *own = NULL;
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, IN_TOPIC, &own), IDEVS_TOPIC_INPUT);
    CU_ASSERT(own != NULL && strcmp(own, IN_TOPIC) == 0);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "t/resp/ask", NULL), IDEVS_TOPIC_RESPONSE);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, OUT_TOPIC, NULL), IDEVS_TOPIC_PROTECTED);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "t/req/ask", NULL), IDEVS_TOPIC_PROTECTED);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "idevs/rewards/certificate", NULL), IDEVS_TOPIC_PROTECTED);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "idevs/rewards/descriptor", NULL), IDEVS_TOPIC_PROTECTED);
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "t/other", &own), IDEVS_TOPIC_OTHER);
    CU_ASSERT(own == NULL);
    CU_ASSERT_STRING_EQUAL(idevs_launcher_certificate_topic(t->l), "idevs/rewards/certificate");

    /* Same process name (both worlds call it 'rewards'): refused, naming both files. */
    t2->l = launcher(&t2->cfg);
    char why[1024] = "";
    CU_ASSERT_EQUAL(idevs_launcher_conflict(t->l, t2->l, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT(strstr(why, t->w.descriptor) != NULL && strstr(why, t2->w.descriptor) != NULL &&
              strstr(why, "both declare the process 'rewards'") != NULL);

    /* The gate: a well-formed envelope from a service other than the input's declared sender. */
    rig_start(t, NULL);
    size_t len = 0;
    uint8_t *env = seal(&t->sk, &t->w, "from the wrong service", &len);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_SENDER_NOT_ALLOWED);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, OUT_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_UNKNOWN_INPUT);
    free(env);

    /* The descriptor file: unchanged, changed, then a FIFO in its place. */
    bool changed = true;
    CU_ASSERT_EQUAL(idevs_launcher_descriptor_changed(t->l, &changed, NULL, why, sizeof why), IDEVS_OK);
    CU_ASSERT_FALSE(changed);
    FILE *f = fopen(t->w.descriptor, "a");
    CU_ASSERT_FATAL(f != NULL);
    fputs(" ", f);
    fclose(f);
    CU_ASSERT_EQUAL(idevs_launcher_descriptor_changed(t->l, &changed, NULL, why, sizeof why), IDEVS_OK);
    CU_ASSERT_TRUE(changed);
    CU_ASSERT_FATAL(unlink(t->w.descriptor) == 0 && mkfifo(t->w.descriptor, 0600) == 0);
    /* A blocking open would never return here: no writer ever comes. */
    CU_ASSERT_EQUAL(idevs_launcher_descriptor_changed(t->l, &changed, NULL, why, sizeof why), IDEVS_ERR_CONFIG);
    CU_ASSERT(strstr(why, "not a regular file") != NULL);

    rig_free(t2);
    rig_free(t);
}

static void test_queue_full_and_bad_deliveries(void)
{
    rig *t = rig_new(echo_path, 4, 2000, host_path);
    t->l = launcher(&t->cfg);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, (const uint8_t *)"x", 1, NULL, 0, NULL), IDEVS_ERR_NOT_NOW);
    rig_start(t, NULL);
    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "one", &len);
    /* Four envelopes with one clear header (the first real, three forged: another last byte each) take four
     * slots; a byte-for-byte copy of one takes none. */
    const uint8_t last = env[len - 1];
    for (int i = 0; i < 4; i++) {
        env[len - 1] = (uint8_t)(last ^ i);
        CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_OK);
        CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    }
    env[len - 1] = (uint8_t)(last ^ 4);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_QUEUE_FULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.queue_depth == 4 && s.queue_limit == 4 && s.delivered == 4);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, "t/not/declared", env, len, NULL, 0, NULL), IDEVS_ERR_UNKNOWN_INPUT);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, 0, NULL, 0, NULL), IDEVS_ERR_INVALID_ARG);
    uint8_t *big = calloc(1, 1u << 20);
    CU_ASSERT_FATAL(big != NULL);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, big, 1u << 20, NULL, 0, NULL), IDEVS_ERR_TOO_LARGE);
    free(big);
    poll_until_done(t->l, &t->r, 4, 5000);
    CU_ASSERT_EQUAL(t->r.done_count, 4);
    /* Only the real one opens. */
    size_t ok = 0;
    for (size_t i = 0; i < t->r.done_count; i++)
        ok += t->r.done_status[i] == IDEVS_OK;
    CU_ASSERT_EQUAL(ok, 1);
    /* Done once, the launcher's replay record refuses it itself; the queue has room again for another. */
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.replays_refused, 5);
    free(env);
    env = seal(&t->st, &t->w, "two", &len);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_OK);
    free(env);
    rig_free(t);
}

/* Seals payload as p on topic (an input or a response topic): what the gate reads is all that matters here. */
static uint8_t *seal_on(party *p, const world *w, const char *topic, const char *payload, size_t *len)
{
    idevs_seal_input in = {.recipient = &w->program, .topic = topic, .payload = (const uint8_t *)payload,
                           .payload_len = strlen(payload)};
    uint8_t *out = NULL;
    CU_ASSERT_FATAL(idevs_envelope_seal(p->ctx, &in, &out, len, NULL) == IDEVS_OK);
    return out;
}

/* The queue's shares (shares.c) with queue_depth 8 and two services that send (store on the input, sink on the
 * response topic): a client holds 4 at most, envelopes naming one sender 6. A flooding client copying the clear
 * header of a real envelope of store's (other last bytes: the gate cannot tell) gets its 4 slots and then
 * queue_client_share; a byte-for-byte copy takes no slot (replay); store's real client still gets its envelopes
 * in beside it until store's share is used (queue_sender_share, whichever client); sink still gets in beside
 * both; the total is queue_full, for a caller without a client id too. The compartment is stopped (SIGSTOP) so
 * that nothing drains meanwhile; once it runs, every real envelope is done exactly once and the shares are given
 * back. */
static void test_queue_shares(void)
{
    rig *t = rig_new(echo_path, 8, 5000, host_path);
    rig_start(t, NULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.client_share, 4);
    CU_ASSERT_EQUAL(s.sender_share, 6);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0);

    size_t clen = 0, len = 0;
    uint8_t *captured = seal(&t->st, &t->w, "a real sale", &clen);
    uint64_t real[3] = {0};
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-1", captured, clen, &real[0]), IDEVS_OK);
    CU_ASSERT_EQUAL(deliver_as(t->l, "flooder", captured, clen, NULL), IDEVS_ERR_REPLAY); /* the copy as it is */
    uint8_t *forged = malloc(clen);
    CU_ASSERT_FATAL(forged != NULL);
    memcpy(forged, captured, clen);
    size_t accepted = 0;
    idevs_err last = IDEVS_OK;
    for (int i = 1; i < 20 && last == IDEVS_OK; i++) {
        forged[clen - 1] = (uint8_t)(captured[clen - 1] ^ i);
        if ((last = deliver_as(t->l, "flooder", forged, clen, NULL)) == IDEVS_OK)
            accepted++;
    }
    CU_ASSERT_EQUAL(accepted, 4);
    CU_ASSERT_EQUAL(last, IDEVS_ERR_QUEUE_CLIENT_SHARE);
    /* store's real client: 1 queued, one more fits store's share of 6 (4 of them the flooder's) */
    uint8_t *env = seal(&t->st, &t->w, "another real sale", &len);
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-1", env, len, &real[1]), IDEVS_OK);
    free(env);
    env = seal(&t->st, &t->w, "one too many for store", &len);
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-1", env, len, NULL), IDEVS_ERR_QUEUE_SENDER_SHARE);
    CU_ASSERT_EQUAL(deliver_as(t->l, "flooder-2", env, len, NULL), IDEVS_ERR_QUEUE_SENDER_SHARE);
    free(env);
    /* sink, on the response topic: its own share */
    env = seal_on(&t->sk, &t->w, "t/resp/ask", "an answer nobody asked for", &len);
    CU_ASSERT_EQUAL(idevs_launcher_deliver_from(t->l, "sink-1", "t/resp/ask", env, len, NULL, 0, &real[2]), IDEVS_OK);
    free(env);
    env = seal_on(&t->sk, &t->w, "t/resp/ask", "a second answer", &len);
    uint64_t eighth = 0;
    CU_ASSERT_EQUAL(idevs_launcher_deliver_from(t->l, "sink-1", "t/resp/ask", env, len, NULL, 0, &eighth), IDEVS_OK);
    free(env);
    /* the total: 8 */
    env = seal_on(&t->sk, &t->w, "t/resp/ask", "a third answer", &len);
    CU_ASSERT_EQUAL(idevs_launcher_deliver_from(t->l, "sink-2", "t/resp/ask", env, len, NULL, 0, NULL),
                    IDEVS_ERR_QUEUE_FULL);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, "t/resp/ask", env, len, NULL, 0, NULL), IDEVS_ERR_QUEUE_FULL);
    free(env);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.queue_depth, 8);
    CU_ASSERT_EQUAL(s.replays_refused, 1);

    CU_ASSERT_FATAL(kill(s.pid, SIGCONT) == 0);
    poll_until_done(t->l, &t->r, 8, 10000);
    CU_ASSERT_EQUAL(t->r.done_count, 8);
    size_t times = 0;
    for (int i = 0; i < 2; i++) {
        CU_ASSERT_EQUAL(done_status_of(&t->r, real[i], &times), IDEVS_OK);
        CU_ASSERT_EQUAL(times, 1);
    }
    CU_ASSERT(done_status_of(&t->r, real[2], &times) != IDEVS_ERR_COUNT && times == 1);
    for (int i = 0; i < 2; i++) {
        size_t outs = 0;
        for (size_t k = 0; k < t->r.pub_count; k++)
            outs += t->r.pub_id[k] == real[i];
        CU_ASSERT_EQUAL(outs, 1);
    }
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.restarts, 0);
    CU_ASSERT_EQUAL(s.queue_depth, 0);
    /* Given back: the flooder has its share again, and store's real client its room. */
    env = seal(&t->st, &t->w, "a sale after the flood", &len);
    env[len - 1] ^= 1; /* the flooder's copy of its header, first */
    CU_ASSERT_EQUAL(deliver_as(t->l, "flooder", env, len, NULL), IDEVS_OK);
    env[len - 1] ^= 1;
    uint64_t after = 0;
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-1", env, len, &after), IDEVS_OK);
    free(env);
    poll_until_done(t->l, &t->r, 10, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, after, &times), IDEVS_OK);
    free(forged);
    free(captured);
    rig_free(t);
}

/* Many clients at once (queue_depth 128: a client holds 64, store's envelopes 96): 90 clients with one envelope
 * each are all queued, and a byte-for-byte copy of each is a replay; once all are done, every count is given
 * back: one client gets exactly its 64 again. */
#define MANY_CLIENTS 90
static void test_queue_shares_many_clients(void)
{
    rig *t = rig_new(echo_path, 128, 5000, host_path);
    rig_start(t, NULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(s.client_share == 64 && s.sender_share == 96);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0);
    uint8_t *env[MANY_CLIENTS];
    size_t len[MANY_CLIENTS];
    for (int i = 0; i < MANY_CLIENTS; i++) {
        char client[32], text[32];
        snprintf(client, sizeof client, "client-%d", i);
        snprintf(text, sizeof text, "sale %d", i);
        env[i] = seal(&t->st, &t->w, text, &len[i]);
        CU_ASSERT_EQUAL(deliver_as(t->l, client, env[i], len[i], NULL), IDEVS_OK);
    }
    for (int i = 0; i < MANY_CLIENTS; i++)
        CU_ASSERT_EQUAL(deliver_as(t->l, "copier", env[i], len[i], NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_FATAL(kill(s.pid, SIGCONT) == 0);
    poll_until_done(t->l, &t->r, MANY_CLIENTS, 10000);
    CU_ASSERT_EQUAL(t->r.pub_count, MANY_CLIENTS);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.queue_depth, 0);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0);
    size_t flen = 0;
    uint8_t *forged = seal(&t->st, &t->w, "never sent as it is", &flen);
    const uint8_t last_byte = forged[flen - 1];
    size_t accepted = 0;
    idevs_err last = IDEVS_OK;
    for (int i = 1; i < 100 && last == IDEVS_OK; i++) {
        forged[flen - 1] = (uint8_t)(last_byte ^ i); /* another body each time */
        if ((last = deliver_as(t->l, "client-0", forged, flen, NULL)) == IDEVS_OK)
            accepted++;
    }
    CU_ASSERT_EQUAL(accepted, 64);
    CU_ASSERT_EQUAL(last, IDEVS_ERR_QUEUE_CLIENT_SHARE);
    CU_ASSERT_FATAL(kill(s.pid, SIGCONT) == 0);
    poll_until_done(t->l, &t->r, MANY_CLIENTS + 64, 10000);
    for (int i = 0; i < MANY_CLIENTS; i++)
        free(env[i]);
    free(forged);
    rig_free(t);
}

/* Inputs keep coming while the compartment crashes and waits out its restart backoff: each is queued, not
 * dropped (the queue has room), and once a compartment stays up, every input accepted is done exactly once, its
 * output out once. The echo logic aborts on "crash-until:T:..." until the wall clock reaches T, so every
 * compartment started before then crashes on its first input; max_attempts is high so that the input at the
 * head, charged with each crash, is not given up meanwhile. */
#define BACKOFF_INPUTS_MAX 200
static void test_backoff_holds_inputs(void)
{
    rig *t = rig_new(echo_path, 256, 5000, host_path);
    t->cfg.max_attempts = 1000;
    t->cfg.backoff_initial_ms = 40;
    t->cfg.backoff_max_ms = 160;
    rig_start(t, NULL);
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    unsigned long long until = (unsigned long long)wall.tv_sec * 1000u + (unsigned long long)wall.tv_nsec / 1000000u
                               + 1500u;
    idevs_launcher_callbacks cb = launch_record_callbacks(&t->r);
    uint64_t id[BACKOFF_INPUTS_MAX];
    size_t n = 0, in_backoff = 0;
    int64_t end = launch_now_ms() + 2500;
    while (launch_now_ms() < end && n < BACKOFF_INPUTS_MAX) {
        char text[64];
        snprintf(text, sizeof text, "crash-until:%llu:input %zu", until, n);
        idevs_launcher_stats s;
        idevs_launcher_get_stats(t->l, &s);
        size_t len = 0;
        uint8_t *env = seal(&t->st, &t->w, text, &len);
        CU_ASSERT_FATAL(deliver_as(t->l, "store-1", env, len, &id[n]) == IDEVS_OK); /* never refused: room */
        free(env);
        in_backoff += s.state == IDEVS_LAUNCHER_BACKOFF;
        n++;
        CU_ASSERT_FATAL(idevs_launcher_poll(t->l, 20, &cb) == IDEVS_OK);
    }
    poll_until_done(t->l, &t->r, n, 20000);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.restarts >= 2);
    CU_ASSERT(in_backoff >= 1);
    CU_ASSERT(s.queued_while_down >= in_backoff);
    CU_ASSERT_EQUAL(s.given_up, 0);
    CU_ASSERT(saw_event(&t->r, "queued deliveries wait for it"));
    CU_ASSERT_EQUAL(t->r.done_count, n);
    for (size_t i = 0; i < n; i++) {
        size_t times = 0;
        CU_ASSERT_EQUAL(done_status_of(&t->r, id[i], &times), IDEVS_OK);
        CU_ASSERT_EQUAL(times, 1);
    }
    /* Each output once, in the order of the inputs, opened by the sink under the last compartment's certificate
     * (every restart certifies the same keys). */
    party_meet(&t->sk, t->l, NULL);
    CU_ASSERT_EQUAL(t->r.pub_count, n);
    for (size_t i = 0; i < t->r.pub_count && i < n; i++) {
        char want[32];
        snprintf(want, sizeof want, "input %zu", i);
        char *got = open_output(&t->sk, &t->r, i);
        CU_ASSERT(got != NULL && strcmp(got, want) == 0 && t->r.pub_id[i] == id[i]);
        free(got);
    }
    fprintf(stderr, "backoff: %zu inputs, %zu while in backoff, %llu restarts, %llu queued while down\n", n,
            in_backoff, (unsigned long long)s.restarts, (unsigned long long)s.queued_while_down);
    rig_free(t);
}

/* The launcher never gives up restarting; only a stop ends queued deliveries without their compartment, and it
 * says so: a warning with how many, counted in abandoned. */
static void test_stop_reports_abandoned(void)
{
    rig *t = echo_started();
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0); /* nothing gets done */
    deliver(t->l, &t->st, &t->w, "left behind 1");
    deliver(t->l, &t->st, &t->w, "left behind 2");
    idevs_launcher_stop(t->l, 200);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.abandoned, 2);
    CU_ASSERT(saw_event(&t->r, "stopped with 2 deliveries not done: dropped without output"));
    rig_free(t);
}

/* The launcher's fd is enough to wait on: it becomes readable when the compartment answers. */
static void test_fd_for_poll_integration(void)
{
    rig *t = echo_started();
    idevs_launcher_callbacks cb = launch_record_callbacks(&t->r);
    uint64_t id = deliver(t->l, &t->st, &t->w, "via the fd");
    int64_t end = launch_now_ms() + 5000;
    while (t->r.done_count == 0 && launch_now_ms() < end) {
        struct pollfd p = {.fd = idevs_launcher_fd(t->l), .events = POLLIN};
        CU_ASSERT_FATAL(poll(&p, 1, 5000) == 1);
        CU_ASSERT_FATAL(idevs_launcher_poll(t->l, 0, &cb) == IDEVS_OK);
    }
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    /* Nothing in flight; only the fsync of the replay record, written into the kernel before the output left,
     * is timed (within 2 s). Once it is done, only the look at the wall clock for the certificate's renewal
     * is (every 5 s). */
    int64_t sync_in = idevs_launcher_next_timeout_ms(t->l);
    CU_ASSERT(sync_in >= 0 && sync_in <= 2000);
    poll(NULL, 0, (int)sync_in + 10);
    CU_ASSERT_EQUAL(idevs_launcher_poll(t->l, 0, &cb), IDEVS_OK);
    int64_t renew_check_in = idevs_launcher_next_timeout_ms(t->l);
    CU_ASSERT(renew_check_in >= 0 && renew_check_in <= 5000);
    rig_free(t);
}

/* Hostile logic: the compartment dies, and the report names the system call. */
static void test_hostile_logic_reported(void)
{
    char logic[PATH_MAX + 64];
    snprintf(logic, sizeof logic, "%s/idevs_logic_hostile_socket.so", hostile_dir);
    rig *t = rig_new(logic, 16, 2000, host_path);
    t->cfg.max_attempts = 1;
    rig_start(t, NULL);
    uint64_t id = deliver(t->l, &t->st, &t->w, "go");
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t times = 0;
    CU_ASSERT(done_status_of(&t->r, id, &times) != IDEVS_OK && times == 1);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    fprintf(stderr, "hostile socket: %s\n", s.last_exit);
    CU_ASSERT(strstr(s.last_exit, "system call socket (41)") != NULL);
    CU_ASSERT(strstr(s.last_exit, "outside the sandbox allowlist") != NULL);
    CU_ASSERT(saw_event(&t->r, "socket"));
    party_free(&t->st);
    party_free(&t->sk);
    idevs_launcher_free(t->l);

    /* In a constructor, while the logic loads: the blocking start fails and says why. */
    snprintf(logic, sizeof logic, "%s/idevs_logic_hostile_ctor_socket.so", hostile_dir);
    write_descriptor(&t->w, logic, 16, 2000);
    t->l = launcher(&t->cfg);
    char why[512] = "";
    CU_ASSERT(idevs_launcher_start(t->l, why, sizeof why) != IDEVS_OK);
    fprintf(stderr, "hostile ctor_socket: %s\n", why);
    CU_ASSERT(strstr(why, "compartment 'rewards'") != NULL && strstr(why, "socket") != NULL);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.state == IDEVS_LAUNCHER_STOPPED && s.pid == 0);
    rig_free(t);
}

/* A world for the peer (tests/launcher/launcher_peer) in mode, which a file beside the descriptor names; not
 * started. */
static rig *peer_rig(const char *mode)
{
    rig *t = rig_new("peer.mode", 16, 2000, peer_path);
    char mode_file[PATH_MAX + 16];
    snprintf(mode_file, sizeof mode_file, "%s/peer.mode", t->w.dir);
    launch_write_file(mode_file, mode, strlen(mode));
    return t;
}

/* Broken frames from the compartment's side: the launcher kills, reaps and reports, and never crashes. */
static void peer_start_fails(const char *mode, idevs_err expect, const char *needle, bool protocol)
{
    rig *t = peer_rig(mode);
    t->cfg.start_timeout_ms = 500;
    t->l = launcher(&t->cfg);
    for (int round = 0; round < 2; round++) { /* and again: the launcher is reusable after a failure */
        char why[512] = "";
        idevs_err err = idevs_launcher_start(t->l, why, sizeof why);
        if (err != expect || strstr(why, needle) == NULL)
            fprintf(stderr, "peer %s: %s (%s)\n", mode, idevs_strerror(err), why);
        CU_ASSERT_EQUAL(err, expect);
        CU_ASSERT(strstr(why, needle) != NULL);
        idevs_launcher_stats s;
        idevs_launcher_get_stats(t->l, &s);
        CU_ASSERT(s.state == IDEVS_LAUNCHER_STOPPED && s.pid == 0);
        CU_ASSERT_EQUAL(s.protocol_errors, protocol ? (uint64_t)round + 1 : 0);
    }
    rig_free(t);
}

/* One test each: the peer's mode, what its start returns and says, and whether that counts as a protocol error. */
#define PEER_START_FAILS(test, mode, expect, needle, protocol) \
    static void test(void) { peer_start_fails(mode, expect, needle, protocol); }
PEER_START_FAILS(test_peer_garbage, "garbage", IDEVS_ERR_FRAME, "malformed", true)
PEER_START_FAILS(test_peer_oversized, "oversized", IDEVS_ERR_FRAME, "oversized", true)
PEER_START_FAILS(test_peer_undecodable, "undecodable", IDEVS_ERR_FRAME, "malformed", true)
PEER_START_FAILS(test_peer_wrong_frame, "wrong", IDEVS_ERR_FRAME, "only the launcher may send", true)
PEER_START_FAILS(test_peer_truncated, "truncated", IDEVS_ERR_CHANNEL_CLOSED, "exited with status 0", false)
PEER_START_FAILS(test_peer_silent, "silent", IDEVS_ERR_TIMEOUT, "not ready within 500 ms", false)

/* A started launcher of the peer in mode (a correct handshake, then what mode says on the first Deliver). */
static rig *peer_serving(const char *mode)
{
    rig *t = peer_rig(mode);
    rig_start(t, NULL);
    return t;
}

/* One envelope of store's to the peer, which answers it wrongly each time: it ends once, with IDEVS_ERR_FRAME. */
static void peer_fails_one(rig *t, const char *text)
{
    uint64_t id = deliver(t->l, &t->st, &t->w, text);
    poll_until_done(t->l, &t->r, 1, 10000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_ERR_FRAME);
    CU_ASSERT_EQUAL(times, 1);
}

/* Garbage in the middle of serving: each attempt kills and restarts the compartment, and the delivery gets
 * exactly one Done (IDEVS_ERR_FRAME) after max_attempts. */
static void test_peer_garbage_midstream(void)
{
    rig *t = peer_serving("midstream");
    /* The launcher's gate refuses what is not an envelope for this process: the peer gets a real one. */
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, (const uint8_t *)"not even an envelope", 20, NULL, 0, NULL),
                    IDEVS_ERR_MALFORMED);
    peer_fails_one(t, "answered with garbage");
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.protocol_errors == 3 && s.killed == 3 && s.given_up == 1 && s.sent == 3 && s.resent == 2);
    /* It keeps supervising: the next compartment comes up. */
    poll_until_ready(t->l, &t->r, 3, 5000);
    rig_free(t);
}

/* ---- replay across restarts ---- */

/* kill -9 of the running compartment, then polls until its successor is ready. */
static void kill9_and_wait(idevs_launcher *l, launch_record *r)
{
    idevs_launcher_stats s;
    idevs_launcher_get_stats(l, &s);
    CU_ASSERT_FATAL(s.pid > 0 && kill(s.pid, SIGKILL) == 0);
    poll_until_ready(l, r, s.started, 10000);
}

static uint64_t deliver_env(idevs_launcher *l, const uint8_t *env, size_t len)
{
    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver(l, IN_TOPIC, env, len, NULL, 0, &id) == IDEVS_OK);
    return id;
}

/* Overwrites the sequence number (field 7, fixed64, little-endian on the wire) of an encoded envelope. */
static bool set_sequence(uint8_t *env, size_t len, uint64_t seq)
{
    size_t i = 0;
    while (i < len) {
        uint64_t key = 0, n = 0;
        for (int shift = 0; i < len && shift < 64; shift += 7) {
            uint8_t b = env[i++];
            key |= (uint64_t)(b & 0x7f) << shift;
            if (!(b & 0x80))
                break;
        }
        switch (key & 7) {
        case 0:
            while (i < len && (env[i++] & 0x80)) {
            }
            break;
        case 1:
            if (key >> 3 == 7 && i + 8 <= len) {
                for (int k = 0; k < 8; k++)
                    env[i + k] = (uint8_t)(seq >> (8 * k));
                return true;
            }
            i += 8;
            break;
        case 2:
            for (int shift = 0; i < len && shift < 64; shift += 7) {
                uint8_t b = env[i++];
                n |= (uint64_t)(b & 0x7f) << shift;
                if (!(b & 0x80))
                    break;
            }
            if (n > len - i)
                return false;
            i += n;
            break;
        case 5:
            i += 4;
            break;
        default:
            return false;
        }
    }
    return false;
}

static void replay_file(const world *w, char *path, size_t size)
{
    char program[IDEVS_UUID_STR_LEN];
    idevs_uuid_format(&w->program, program);
    snprintf(path, size, "%s/%s.replay", w->state, program);
}

static size_t events_of_kind(const launch_record *r, idevs_launcher_event kind, const char *needle)
{
    size_t n = 0;
    for (size_t i = 0; i < r->event_count; i++)
        n += r->event_kind[i] == (int)kind && strstr(r->events[i], needle) != NULL;
    return n;
}

/* The running compartment's certificate is renewed certificate_renew_after_s after its issue (here 1 s, looked at
 * every 5 s): the same keys and notBefore, a later notAfter, new evidence, one RENEWED event; the store takes it
 * as from the retained topic, and deliveries go on without a new key epoch. */
static void test_certificate_renewal(void)
{
    rig *t = rig_new(echo_path, 16, 2000, host_path);
    t->cfg.certificate_validity_s = 3600;
    t->cfg.certificate_renew_after_s = 1;
    idevs_cert_info first, renewed;
    rig_start(t, &first);
    size_t len = 0;
    const uint8_t *der = idevs_launcher_chain_der(t->l, 0, &len);
    const unsigned char *q = der;
    X509 *before = d2i_X509(NULL, &q, (long)len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(before);
    uint64_t id = deliver(t->l, &t->st, &t->w, "before");
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);

    idevs_launcher_callbacks cb = launch_record_callbacks(&t->r);
    int64_t end = launch_now_ms() + 15000;
    while (events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_RENEWED, "renewed for the same keys") == 0 &&
           launch_now_ms() < end)
        CU_ASSERT_EQUAL_FATAL(idevs_launcher_poll(t->l, 500, &cb), IDEVS_OK);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_RENEWED, "renewed for the same keys"), 1);
    idevs_launcher_stats st;
    idevs_launcher_get_stats(t->l, &st);
    CU_ASSERT_EQUAL(st.renewed, 1);
    CU_ASSERT_EQUAL(st.certified, 2);
    CU_ASSERT_EQUAL(st.restarts, 0);
    der = idevs_launcher_chain_der(t->l, 0, &len);
    q = der;
    X509 *after = d2i_X509(NULL, &q, (long)len);
    CU_ASSERT_PTR_NOT_NULL_FATAL(after);
    CU_ASSERT_EQUAL(ASN1_TIME_compare(X509_get0_notBefore(before), X509_get0_notBefore(after)), 0);
    CU_ASSERT(ASN1_TIME_compare(X509_get0_notAfter(before), X509_get0_notAfter(after)) < 0);
    CU_ASSERT(st.certificate_not_after > (int64_t)time(NULL) + 3000 &&
              st.certificate_not_after <= (int64_t)time(NULL) + 3600);
    X509_free(before);
    X509_free(after);

    /* The store verifies the renewed chain as from the retained topic: same keys, new evidence. */
    const uint8_t *chain[2];
    size_t chain_len[2];
    for (size_t i = 0; i < 2; i++)
        chain[i] = idevs_launcher_chain_der(t->l, i, &chain_len[i]);
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_add_peer(t->st.ctx, chain, chain_len, 2, &renewed), IDEVS_OK);
    CU_ASSERT_EQUAL(memcmp(renewed.sign_pub, first.sign_pub, 32), 0);
    CU_ASSERT_EQUAL(memcmp(renewed.kex_pub, first.kex_pub, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(renewed.cert_digest, first.cert_digest, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(renewed.evidence.nonce, first.evidence.nonce, first.evidence.nonce_len), 0);

    id = deliver(t->l, &t->st, &t->w, "after");
    poll_until_done(t->l, &t->r, 2, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    CU_ASSERT_FATAL(t->r.pub_count == 2);
    for (size_t i = 0; i < 2; i++) {
        char *got = open_output(&t->sk, &t->r, i);
        CU_ASSERT(got != NULL && strcmp(got, i == 0 ? "before" : "after") == 0);
        free(got);
    }
    idevs_envelope_stats es;
    idevs_envelope_get_stats(t->st.ctx, &es);
    CU_ASSERT_EQUAL(es.sending_epochs, 1);
    idevs_envelope_get_stats(t->sk.ctx, &es);
    CU_ASSERT_EQUAL(es.receiving_epochs, 1);
    rig_free(t);
}

/* A Done with a refusal code the descriptor does not declare is a protocol error, whatever the compartment
 * says: the delivery is tried again and given up like one answered with garbage, and no code is reported. */
static void test_peer_undeclared_refusal(void)
{
    rig *t = peer_serving("refusal");
    peer_fails_one(t, "refused with code 99");
    CU_ASSERT_STRING_EQUAL(t->r.done_refusal[0], "");
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.protocol_errors == 3 && s.given_up == 1);
    CU_ASSERT(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_KILLED, "refusal code 99") >= 1);
    rig_free(t);
}

/* The echo logic refuses with idevs_refuse(): a declared code reaches on_refused, then on_done(logic); an
 * undeclared one is no code at all. */
static void test_refusal_reported(void)
{
    rig *t = echo_started();
    uint64_t a = deliver(t->l, &t->st, &t->w, "refuse:not_a_sale");
    uint64_t b = deliver(t->l, &t->st, &t->w, "refuse:amount_out_of_range");
    uint64_t c = deliver(t->l, &t->st, &t->w, "refuse:free text");
    poll_until_done(t->l, &t->r, 3, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(done_status_of(&t->r, b, &times), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(done_status_of(&t->r, c, &times), IDEVS_ERR_LOGIC);
    for (size_t i = 0; i < t->r.done_count; i++) {
        const char *want = t->r.done_id[i] == a ? "not_a_sale" : t->r.done_id[i] == b ? "amount_out_of_range" : "";
        CU_ASSERT_STRING_EQUAL(t->r.done_refusal[i], want);
    }
    CU_ASSERT_EQUAL(t->r.pub_count, 0);
    rig_free(t);
}

/* An envelope done (or failed by the logic) is refused when the same bytes come again after a kill -9: the new
 * compartment's own windows are empty, the launcher's record is not. A fresh envelope still goes through. */
static void test_replay_refused_after_kill(void)
{
    rig *t = echo_started();
    size_t once_len = 0, fail_len = 0;
    uint8_t *once = seal(&t->st, &t->w, "book one taxi", &once_len);
    uint8_t *fail = seal(&t->st, &t->w, "fail", &fail_len);
    uint64_t a = deliver_env(t->l, once, once_len), b = deliver_env(t->l, fail, fail_len);
    poll_until_done(t->l, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, b, &times), IDEVS_ERR_LOGIC);
    CU_ASSERT_EQUAL(t->r.pub_count, 1);

    kill9_and_wait(t->l, &t->r);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, once, once_len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, fail, fail_len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.replays_refused, 2);
    CU_ASSERT_EQUAL(s.delivered, 2);
    uint64_t c = deliver(t->l, &t->st, &t->w, "fresh");
    poll_until_done(t->l, &t->r, 3, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, c, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(t->r.pub_count, 2);
    free(once);
    free(fail);
    rig_free(t);
}

/* An envelope of a key epoch older than the two the record keeps for its sender is refused before the
 * compartment as epoch_forgotten (possibly done: the record forgot that epoch), not with a sentence about a grace
 * period the record cannot know; it counts as a refused replay. */
static void test_replay_epoch_forgotten(void)
{
    rig *t = echo_started();
    size_t old_len = 0;
    uint8_t *old = seal(&t->st, &t->w, "sealed in the first epoch", &old_len);
    idevs_envelope_rotate(t->st.ctx);
    uint64_t a = deliver(t->l, &t->st, &t->w, "second epoch");
    idevs_envelope_rotate(t->st.ctx);
    uint64_t b = deliver(t->l, &t->st, &t->w, "third epoch");
    poll_until_done(t->l, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, b, &times), IDEVS_OK);
    idevs_launcher_stats before;
    idevs_launcher_get_stats(t->l, &before);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, old, old_len, NULL, 0, NULL), IDEVS_ERR_EPOCH_FORGOTTEN);
    idevs_launcher_stats after;
    idevs_launcher_get_stats(t->l, &after);
    CU_ASSERT_EQUAL(after.replays_refused, before.replays_refused + 1);
    CU_ASSERT_STRING_EQUAL(idevs_err_name(IDEVS_ERR_EPOCH_FORGOTTEN), "epoch_forgotten");
    CU_ASSERT_PTR_NULL(strstr(idevs_strerror(IDEVS_ERR_EPOCH_FORGOTTEN), "grace"));
    free(old);
    rig_free(t);
}

/* An MQTT retransmission (Mosquitto 2.0.11 hands a QoS 2 PUBLISH retransmitted with DUP to the plugins again) is
 * the same envelope from the same client: a duplicate, not a replay, while the first is in flight and after it
 * is done; the same bytes from another client, or from an unknown one, remain a replay. Nothing is processed
 * twice, and a fresh envelope of that client goes through. */
static void test_retransmission_is_not_a_replay(void)
{
    rig *t = echo_started();
    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "book one taxi", &len);
    uint64_t a = 0, b = 0;
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-7", env, len, &a), IDEVS_OK);
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-7", env, len, &b), IDEVS_ERR_DUPLICATE);
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(times, 1);
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-7", env, len, NULL), IDEVS_ERR_DUPLICATE);
    CU_ASSERT_EQUAL(deliver_as(t->l, "eavesdropper", env, len, NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(deliver_as(t->l, NULL, env, len, NULL), IDEVS_ERR_REPLAY); /* idevs_launcher_deliver() */
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.duplicates, 2);
    CU_ASSERT_EQUAL(s.replays_refused, 2);
    CU_ASSERT_EQUAL(s.delivered, 1);

    /* Another client's copy while the first is in flight is a replay (the same bytes: it takes no second slot);
     * a client id decides how a refusal is named, never whether another client's envelope is taken: the
     * eavesdropper's forgery with the same clear header is queued and the compartment's window refuses it. */
    size_t len2 = 0;
    uint8_t *env2 = seal(&t->st, &t->w, "book another", &len2);
    uint64_t c = 0, d = 0;
    CU_ASSERT_EQUAL(deliver_as(t->l, "store-7", env2, len2, &c), IDEVS_OK);
    CU_ASSERT_EQUAL(deliver_as(t->l, "eavesdropper", env2, len2, NULL), IDEVS_ERR_REPLAY);
    env2[len2 - 1] ^= 1;
    CU_ASSERT_EQUAL(deliver_as(t->l, "eavesdropper", env2, len2, &d), IDEVS_OK);
    poll_until_done(t->l, &t->r, 3, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, c, &times), IDEVS_OK);
    CU_ASSERT(done_status_of(&t->r, d, &times) != IDEVS_OK && times == 1);
    CU_ASSERT_EQUAL(t->r.pub_count, 2);
    free(env);
    free(env2);
    rig_free(t);
}

/* In flight when the compartment dies: sent again and done exactly once. Then an envelope and a forgery of it (its
 * clear header, another last byte: the gate cannot tell which is real) in flight together, the first done, the
 * compartment killed while the logic hangs on an envelope between them: the forgery is ended as a replay instead
 * of being sent to the next compartment, whose window is empty. */
static void test_in_flight_redelivered_once(void)
{
    rig *t = rig_new(hang_path, 16, 1000, host_path);
    t->cfg.max_attempts = 2;
    rig_start(t, NULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(kill(s.pid, SIGSTOP) == 0); /* frozen: what is sent stays in flight */
    uint64_t y = deliver(t->l, &t->st, &t->w, "in flight");
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(s.in_flight == 1);
    CU_ASSERT_FATAL(kill(s.pid, SIGKILL) == 0);
    poll_until_done(t->l, &t->r, 1, 10000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, y, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(times, 1);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.restarts == 1 && s.resent == 1);

    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "twice in flight", &len);
    uint64_t first = deliver_env(t->l, env, len);
    uint64_t hang = deliver(t->l, &t->st, &t->w, "hang here");
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY); /* a copy */
    env[len - 1] ^= 1;
    uint64_t copy = deliver_env(t->l, env, len);
    poll_until_done(t->l, &t->r, 2, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, first, &times), IDEVS_OK);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_FATAL(s.in_flight == 2 && kill(s.pid, SIGKILL) == 0);
    poll_until_done(t->l, &t->r, 4, 10000); /* the next compartment hangs too, until the event timeout */
    CU_ASSERT_EQUAL(done_status_of(&t->r, first, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(times, 1);
    CU_ASSERT_EQUAL(done_status_of(&t->r, copy, &times), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(times, 1);
    idevs_err hung = done_status_of(&t->r, hang, &times);
    CU_ASSERT(hung != IDEVS_OK && times == 1);
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.replays_refused == 2 && s.given_up == 1 && s.done == 4 && s.queue_depth == 0);
    party_meet(&t->sk, t->l, NULL);
    CU_ASSERT_FATAL(t->r.pub_count == 2);
    char *o1 = open_output(&t->sk, &t->r, 0), *o2 = open_output(&t->sk, &t->r, 1);
    CU_ASSERT(o1 != NULL && strcmp(o1, "in flight") == 0 && t->r.pub_id[0] == y);
    CU_ASSERT(o2 != NULL && strcmp(o2, "twice in flight") == 0 && t->r.pub_id[1] == first);
    free(o1);
    free(o2);
    free(env);
    rig_free(t);
}

/* limits.max_outstanding_requests 4 and the echo logic: ten inputs each asking the sink, no answer yet: four run,
 * the rest wait in the launcher (held, not lost, not refused). The sink answers one request at a time: each answer
 * reaches its request (provenance back to the input), and each answer lets one more input run; every input is
 * done exactly once. */
#define HOLD_N 10
static void test_outstanding_requests_hold_inputs(void)
{
    limits_extra = ", \"max_outstanding_requests\": 4";
    rig *t = echo_started();
    limits_extra = "";

    uint64_t in_delivery[HOLD_N];
    idevs_msgid in_id[HOLD_N], req_id[HOLD_N], resp_id[HOLD_N];
    bool requested[HOLD_N] = {false}, answered[HOLD_N] = {false};
    for (size_t i = 0; i < HOLD_N; i++) {
        char text[32];
        snprintf(text, sizeof text, "ask:q%zu", i);
        idevs_seal_input in = {.recipient = &t->w.program, .topic = IN_TOPIC, .payload = (const uint8_t *)text,
                               .payload_len = strlen(text)};
        uint8_t *env = NULL;
        size_t len = 0;
        CU_ASSERT_FATAL(idevs_envelope_seal(t->st.ctx, &in, &env, &len, &in_id[i]) == IDEVS_OK);
        in_delivery[i] = deliver_env(t->l, env, len);
        free(env);
    }
    poll_until_done(t->l, &t->r, HOLD_N, 1500); /* only four can finish */
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(t->r.done_count, 4);
    CU_ASSERT(s.held >= 1);
    CU_ASSERT_EQUAL(s.queue_depth, HOLD_N - 4);
    CU_ASSERT_EQUAL(s.in_flight, 0);
    CU_ASSERT_EQUAL(s.state, IDEVS_LAUNCHER_READY);

    size_t seen = 0, answers = 0, asked = 0, queue[HOLD_N];
    size_t qhead = 0, qtail = 0;
    for (int round = 0; round < 4 * HOLD_N && answers < HOLD_N; round++) {
        /* What was published so far: requests (to answer, oldest first) and answers (checked). */
        for (; seen < t->r.pub_count; seen++) {
            idevs_opened o;
            memset(&o, 0, sizeof o);
            CU_ASSERT_FATAL(idevs_envelope_open(t->sk.ctx, t->r.pub_topic[seen], t->r.pub_env[seen], t->r.pub_len[seen], &o) ==
                            IDEVS_OK);
            size_t i = HOLD_N;
            if (strcmp(t->r.pub_topic[seen], "t/req/ask") == 0) {
                CU_ASSERT_FATAL(o.payload_len >= 2 && o.payload[0] == 'q');
                i = (size_t)atoi((const char *)o.payload + 1);
                CU_ASSERT_FATAL(i < HOLD_N && !requested[i]);
                CU_ASSERT(o.provenance_count == 1 && memcmp(o.provenance[0].b, in_id[i].b, 16) == 0);
                requested[i] = true;
                req_id[i] = o.message_id;
                queue[qtail++] = i;
                asked++;
            } else {
                CU_ASSERT_FATAL(strcmp(t->r.pub_topic[seen], OUT_TOPIC) == 0);
                CU_ASSERT_FATAL(o.payload_len >= 9 && memcmp(o.payload, "answer:a", 8) == 0);
                i = (size_t)atoi((const char *)o.payload + 8);
                CU_ASSERT_FATAL(i < HOLD_N && !answered[i]);
                /* The answer knew its request: [the answer, the input that asked]. */
                CU_ASSERT_FATAL(o.provenance_count == 2);
                CU_ASSERT(memcmp(o.provenance[0].b, resp_id[i].b, 16) == 0);
                CU_ASSERT(memcmp(o.provenance[1].b, in_id[i].b, 16) == 0);
                answered[i] = true;
                answers++;
            }
            idevs_opened_clear(&o);
        }
        if (qhead == qtail)
            continue;
        size_t i = queue[qhead++];
        char text[32];
        snprintf(text, sizeof text, "a%zu", i);
        idevs_seal_input in = {.recipient = &t->w.program, .topic = "t/resp/ask", .payload = (const uint8_t *)text,
                               .payload_len = strlen(text), .provenance = &req_id[i], .provenance_count = 1};
        uint8_t *env = NULL;
        size_t len = 0;
        CU_ASSERT_FATAL(idevs_envelope_seal(t->sk.ctx, &in, &env, &len, &resp_id[i]) == IDEVS_OK);
        uint64_t id = 0;
        CU_ASSERT_FATAL(idevs_launcher_deliver(t->l, "t/resp/ask", env, len, req_id[i].b, 16, &id) == IDEVS_OK);
        free(env);
        /* The answer, and (while inputs wait) the next input it made room for. */
        size_t want = t->r.done_count + 1 + (asked < HOLD_N ? 1 : 0);
        poll_until_done(t->l, &t->r, want, 5000);
        CU_ASSERT_EQUAL(t->r.done_count, want);
    }
    CU_ASSERT_EQUAL(answers, HOLD_N);
    for (size_t i = 0; i < HOLD_N; i++) {
        size_t times = 0;
        CU_ASSERT_EQUAL(done_status_of(&t->r, in_delivery[i], &times), IDEVS_OK);
        CU_ASSERT_EQUAL(times, 1); /* every input exactly once */
        CU_ASSERT(requested[i] && answered[i]);
    }
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT(s.done == 2 * HOLD_N && s.queue_depth == 0 && s.in_flight == 0 && s.restarts == 0 &&
              s.protocol_errors == 0 && s.resent == 0 && s.given_up == 0);
    rig_free(t);
}

/* A forged envelope (valid header, sequence 2^40, garbage ciphertext) is refused by the compartment and moves
 * nothing: the genuine envelope it was made from, with its lower sequence number, still goes through, also
 * after a restart. */
static void test_forged_header_does_not_advance(void)
{
    rig *t = echo_started();
    uint64_t a = deliver(t->l, &t->st, &t->w, "first");
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t len = 0;
    uint8_t *genuine = seal(&t->st, &t->w, "second", &len);
    uint8_t *forged = malloc(len);
    CU_ASSERT_FATAL(forged != NULL);
    memcpy(forged, genuine, len);
    CU_ASSERT_FATAL(set_sequence(forged, len, (uint64_t)1 << 40));
    forged[len - 1] ^= 0x5a;
    forged[len - 20] ^= 0xa5;
    idevs_envelope_header h;
    CU_ASSERT_FATAL(idevs_envelope_peek(forged, len, &h) == IDEVS_OK && h.sequence == (uint64_t)1 << 40);
    uint64_t f = deliver_env(t->l, forged, len);
    poll_until_done(t->l, &t->r, 2, 5000);
    kill9_and_wait(t->l, &t->r);
    uint64_t f2 = deliver_env(t->l, forged, len); /* not recorded: still goes to the compartment, which refuses it */
    uint64_t g = deliver_env(t->l, genuine, len);
    poll_until_done(t->l, &t->r, 4, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, f, &times), IDEVS_ERR_DECRYPT);
    CU_ASSERT_EQUAL(done_status_of(&t->r, f2, &times), IDEVS_ERR_DECRYPT);
    CU_ASSERT_EQUAL(done_status_of(&t->r, g, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(t->r.pub_count, 2);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.replays_refused, 0);
    free(genuine);
    free(forged);
    rig_free(t);
}

/* Instances (PROTOCOL.md section 5a): an envelope of the store's instance 1 passes the gate and is run beside
 * instance 0's of the same sequence number; the record refuses a copy of either, also after a restart. */
static void test_record_instances(void)
{
    rig *t = echo_started();
    party one;
    idevs_envelope_options o;
    idevs_envelope_options_default(&o);
    o.instance = 1;
    one.policy = fixture_compartment_policy(&pki, idevs_launcher_measurement(t->l),
                                            idevs_launcher_descriptor_digest(t->l));
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(store, one.policy, &o, &one.ctx) == IDEVS_OK);
    party_meet(&one, t->l, NULL);
    size_t len0 = 0, len1 = 0;
    uint8_t *env0 = seal(&t->st, &t->w, "from instance 0", &len0);
    uint8_t *env1 = seal(&one, &t->w, "from instance 1", &len1);
    idevs_envelope_header h;
    CU_ASSERT_FATAL(idevs_envelope_peek(env1, len1, &h) == IDEVS_OK);
    CU_ASSERT_EQUAL(h.instance, 1);
    CU_ASSERT_EQUAL(h.sequence, 1);
    uint64_t a = deliver_env(t->l, env0, len0), b = deliver_env(t->l, env1, len1);
    poll_until_done(t->l, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, a, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, b, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(t->l, IN_TOPIC, env1, len1, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    rig_stop(t);

    idevs_launcher *l = launcher(&t->cfg);
    start(l);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(l, IN_TOPIC, env1, len1, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(l, IN_TOPIC, env0, len0, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    idevs_launcher_free(l);
    free(env0);
    free(env1);
    party_free(&one);
    rig_free(t);
}

/* Like a broker restart: the record is written when the launcher stops, private, and a new launcher on the same
 * state directory refuses what the old one had done. */
static void test_record_survives_launcher(void)
{
    rig *t = echo_started();
    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "before the restart", &len);
    deliver_env(t->l, env, len);
    poll_until_done(t->l, &t->r, 1, 5000);
    CU_ASSERT_EQUAL(t->r.done_status[0], IDEVS_OK);
    rig_stop(t);

    char path[PATH_MAX + 64];
    replay_file(&t->w, path, sizeof path);
    struct stat st_;
    CU_ASSERT_FATAL(stat(path, &st_) == 0);
    CU_ASSERT_EQUAL(st_.st_mode & 0777, 0600);
    CU_ASSERT(st_.st_size > 0 && st_.st_size % 8192 == 0); /* two slots of whole pages, allocated at once */

    idevs_launcher *b = launcher(&t->cfg);
    start(b);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(b, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    uint64_t id = deliver(b, &t->st, &t->w, "after the restart");
    poll_until_done(b, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(b, &s);
    CU_ASSERT(s.last_keys_restored && s.replays_refused == 1);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, ""), 0);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_NOTICE, "replay record"), 0);
    idevs_launcher_free(b);
    free(env);
    rig_free(t);
}

/* Moving partitions (docs/SCALING.md): a launcher with a state directory of its own (another host's sealing
 * secret) adopts the directory of one that handled an envelope, and refuses that envelope as done; its own
 * directory, a missing one and a damaged record are refused with a reason, and change nothing. */
static void test_record_adopted(void)
{
    rig *t = echo_started();
    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "done by the first broker", &len);
    deliver_env(t->l, env, len);
    poll_until_done(t->l, &t->r, 1, 5000);
    CU_ASSERT_EQUAL(t->r.done_status[0], IDEVS_OK);
    rig_stop(t);

    char other[] = "/tmp/idevs-adopt-XXXXXX";
    CU_ASSERT_FATAL(mkdtemp(other) != NULL);
    idevs_launcher_config cfg = t->cfg;
    cfg.state_dir = other;
    idevs_launcher *b = launcher(&cfg);
    char why[1024] = "";
    CU_ASSERT_EQUAL(idevs_launcher_adopt(b, t->w.state, why, sizeof why), IDEVS_ERR_NOT_NOW); /* not started */
    start(b);
    CU_ASSERT_EQUAL(idevs_launcher_adopt(b, other, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT(strstr(why, "own state directory") != NULL);
    CU_ASSERT_NOT_EQUAL(idevs_launcher_adopt(b, "/nonexistent/idevs", why, sizeof why), IDEVS_OK);

    /* A damaged record (one byte of each slot flipped) is refused: the HMAC under the first's sealing secret. */
    char path[PATH_MAX + 64], saved[PATH_MAX + 80];
    replay_file(&t->w, path, sizeof path);
    snprintf(saved, sizeof saved, "%s.saved", path);
    FILE *in = fopen(path, "rb"), *out = fopen(saved, "wb");
    CU_ASSERT_FATAL(in != NULL && out != NULL);
    uint8_t buf[4096];
    for (size_t n; (n = fread(buf, 1, sizeof buf, in)) > 0;)
        CU_ASSERT(fwrite(buf, 1, n, out) == n);
    fclose(in);
    fclose(out);
    struct stat st_;
    CU_ASSERT_FATAL(stat(path, &st_) == 0);
    int fd = open(path, O_RDWR);
    CU_ASSERT_FATAL(fd >= 0);
    for (off_t slot = 0; slot < 2; slot++) {
        uint8_t byte = 0;
        off_t at = slot * (st_.st_size / 2) + 40;
        CU_ASSERT(pread(fd, &byte, 1, at) == 1);
        byte ^= 0x01;
        CU_ASSERT(pwrite(fd, &byte, 1, at) == 1);
    }
    close(fd);
    CU_ASSERT_EQUAL(idevs_launcher_adopt(b, t->w.state, why, sizeof why), IDEVS_ERR_INVALID_ARG);
    CU_ASSERT(strstr(why, "authentication code") != NULL);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(b, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_OK); /* nothing merged */
    poll_until_done(b, &t->r, 2, 5000);
    CU_ASSERT_EQUAL_FATAL(chmod(saved, 0600), 0);
    CU_ASSERT_EQUAL_FATAL(rename(saved, path), 0);

    /* The first broker's record merged in: its envelope is done here too, and stays so after a restart. */
    idevs_launcher_free(b);
    b = launcher(&cfg);
    start(b);
    why[0] = '\0';
    CU_ASSERT_EQUAL(idevs_launcher_adopt(b, t->w.state, why, sizeof why), IDEVS_OK);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(b, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(idevs_launcher_adopt(b, t->w.state, why, sizeof why), IDEVS_OK); /* again: the same */
    CU_ASSERT(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_NOTICE, "adopted the replay record") >= 1);
    idevs_launcher_free(b);
    b = launcher(&cfg);
    start(b);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(b, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    idevs_launcher_free(b);
    char cmd[sizeof other + 16];
    snprintf(cmd, sizeof cmd, "rm -rf %s", other);
    CU_ASSERT(system(cmd) == 0);
    free(env);
    rig_free(t);
}

/* The store's message sent again with the id it was first sent with: sealed anew, so no replay of its bytes. */
static uint8_t *seal_numbered(party *p, const world *w, const char *payload, const idevs_msgid *id, size_t *len)
{
    idevs_seal_input in = {.recipient = &w->program, .topic = IN_TOPIC, .payload = (const uint8_t *)payload,
                           .payload_len = strlen(payload), .message_id = id};
    uint8_t *out = NULL;
    CU_ASSERT_FATAL(idevs_envelope_seal(p->ctx, &in, &out, len, NULL) == IDEVS_OK);
    return out;
}

/* The last receipt, opened by the store: it names exactly id. */
static void expect_receipt_for(party *store, const launch_record *r, const idevs_msgid *id)
{
    CU_ASSERT_FATAL(r->receipt_env != NULL);
    idevs_opened op;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(store->ctx, r->receipt_topic, r->receipt_env, r->receipt_len, &op),
                          IDEVS_OK);
    idevs_msgid ids[IDEVS_RECEIPT_IDS_MAX];
    size_t n = 0;
    CU_ASSERT_EQUAL(idevs_receipt_decode(op.payload, op.payload_len, ids, &n), IDEVS_OK);
    CU_ASSERT(n == 1 && idevs_uuid_equal(&ids[0], id));
    idevs_opened_clear(&op);
}

/* Receipts leave with the outputs, once the record holds the input; the record keeps the ids handled across a
 * restart (a broker's), so a copy sent again afterwards is receipted and not run. */
static void test_receipts_outlive_launcher(void)
{
    rig *t = echo_started();
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {9, 8, 7, 6, 5, 4, 3, 2};
    idevs_msgid sale = idevs_msgid_numbered(stream, 41);
    size_t len = 0;
    uint8_t *env = seal_numbered(&t->st, &t->w, "sale 41", &sale, &len);
    uint64_t first = deliver_env(t->l, env, len);
    free(env);
    poll_until_done(t->l, &t->r, 1, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, first, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(t->r.pub_count, 1);
    CU_ASSERT_EQUAL(t->r.receipt_count, 1);
    CU_ASSERT_EQUAL(t->r.receipt_id, first);
    CU_ASSERT_STRING_EQUAL(t->r.receipt_topic, "idevs/rewards/receipt/to/store");
    expect_receipt_for(&t->st, &t->r, &sale);
    /* Only the plugin publishes receipts: the topic is protected. */
    CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, "idevs/rewards/receipt/to/store", NULL), IDEVS_TOPIC_PROTECTED);
    rig_stop(t);

    idevs_launcher *b = launcher(&t->cfg);
    start(b);
    env = seal_numbered(&t->st, &t->w, "sale 41", &sale, &len);
    uint64_t again = deliver_env(b, env, len);
    free(env);
    poll_until_done(b, &t->r, 2, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, again, &times), IDEVS_ERR_ALREADY_DONE);
    CU_ASSERT_EQUAL(t->r.pub_count, 1); /* not run again */
    CU_ASSERT_EQUAL(t->r.receipt_count, 2);
    expect_receipt_for(&t->st, &t->r, &sale);
    idevs_launcher_free(b);
    rig_free(t);
}

/* ---- a pool of instances (docs/SCALING.md) ---- */

static uint64_t deliver_partition(idevs_launcher *l, const uint8_t *env, size_t len, const char *partition)
{
    uint64_t id = 0;
    CU_ASSERT_FATAL(idevs_launcher_deliver_partitioned(l, NULL, IN_TOPIC, env, len, NULL, 0, partition, &id) ==
                    IDEVS_OK);
    return id;
}

/* The instance publication i says it was sealed by (its clear header). */
static uint32_t instance_of(const launch_record *r, size_t i)
{
    idevs_envelope_header h;
    CU_ASSERT_FATAL(idevs_envelope_peek(r->pub_env[i], r->pub_len[i], &h) == IDEVS_OK);
    return h.instance;
}

/* Sends n inputs "p<k>" with partition k mod 6, k from first; returns nothing, the record counts. */
static void deliver_partitioned_run(rig *t, unsigned first, unsigned n)
{
    for (unsigned k = first; k < first + n; k++) {
        char payload[16], partition[8];
        snprintf(payload, sizeof payload, "p%u", k);
        snprintf(partition, sizeof partition, "%u", k % 6);
        size_t len = 0;
        uint8_t *env = seal(&t->st, &t->w, payload, &len);
        deliver_partition(t->l, env, len, partition);
        free(env);
    }
}

/* The outputs from the from-th on: the sink opens each (learning each instance's certificate from the chain its
 * first envelope carries), and the instance that sealed it is its partition's (k mod 6 mod 3); each payload once
 * (seen: over the test). */
static void expect_partitioned_outputs(rig *t, size_t from, size_t total, bool seen[64])
{
    CU_ASSERT_EQUAL_FATAL(t->r.pub_count, total);
    for (size_t i = from; i < t->r.pub_count; i++) {
        char *payload = open_output(&t->sk, &t->r, i);
        CU_ASSERT_PTR_NOT_NULL_FATAL(payload);
        unsigned k = (unsigned)strtoul(payload + 1, NULL, 10);
        CU_ASSERT_FATAL(k < 64);
        CU_ASSERT_FALSE(seen[k]);
        seen[k] = true;
        CU_ASSERT_EQUAL(instance_of(&t->r, i), k % 6 % 3);
        free(payload);
    }
}

/* Three instances: each its own certificate (its own evidence) of the same keys; an input goes to its
 * partition's instance and a receiver opens what each sends; a copy of a message another instance ran is
 * receipted and not run; a killed instance's inputs wait for its restart and lose nothing, while the others go
 * on; a partition the descriptor does not have is ignored and counted. */
static void test_pool(void)
{
    process_extra = ", \"instances\": 3";
    rig *t = rig_new(echo_path, 256, 2000, host_path);
    process_extra = "";
    rig_start(t, NULL);
    idevs_launcher_stats st;
    idevs_launcher_get_stats(t->l, &st);
    CU_ASSERT(st.instances == 3 && st.instances_ready == 3 && st.certified == 3);
    CU_ASSERT_EQUAL(idevs_launcher_instance_count(t->l), 3);
    uint8_t digest[3][32];
    for (size_t i = 0; i < 3; i++) {
        size_t len = 0;
        CU_ASSERT_EQUAL_FATAL(idevs_launcher_instance_chain_count(t->l, i), 2);
        const uint8_t *der = idevs_launcher_instance_chain_der(t->l, i, 0, &len);
        CU_ASSERT_FATAL(der != NULL && idevs_sha256(der, len, digest[i]) == IDEVS_OK);
        CU_ASSERT(idevs_launcher_instance_pid(t->l, i) > 0);
        char want[64];
        snprintf(want, sizeof want, "idevs/rewards/instance/%zu/certificate", i);
        CU_ASSERT_STRING_EQUAL(idevs_launcher_instance_certificate_topic(t->l, i), want);
        CU_ASSERT_EQUAL(idevs_launcher_topic_kind(t->l, want, NULL), IDEVS_TOPIC_PROTECTED);
    }
    CU_ASSERT(memcmp(digest[0], digest[1], 32) != 0 && memcmp(digest[1], digest[2], 32) != 0);

    bool seen[64] = {false};
    deliver_partitioned_run(t, 0, 12);
    poll_until_done(t->l, &t->r, 12, 10000);
    CU_ASSERT_EQUAL(t->r.done_count, 12);
    expect_partitioned_outputs(t, 0, 12, seen);

    /* a numbered message run by partition 0's instance, then a copy (sealed anew) on partition 1's */
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
    idevs_msgid sale = idevs_msgid_numbered(stream, 7);
    size_t len = 0;
    uint8_t *env = seal_numbered(&t->st, &t->w, "p60", &sale, &len);
    deliver_partition(t->l, env, len, "0");
    free(env);
    poll_until_done(t->l, &t->r, 13, 5000);
    env = seal_numbered(&t->st, &t->w, "p60", &sale, &len);
    uint64_t copy = deliver_partition(t->l, env, len, "1");
    free(env);
    poll_until_done(t->l, &t->r, 14, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, copy, &times), IDEVS_ERR_ALREADY_DONE);
    CU_ASSERT_EQUAL(t->r.pub_count, 13);

    /* instance 1 killed: partitions 1 and 4 wait for it, 2 and 5 go on */
    pid_t victim = idevs_launcher_instance_pid(t->l, 1);
    CU_ASSERT_FATAL(victim > 0 && kill(victim, SIGKILL) == 0);
    deliver_partitioned_run(t, 20, 12);
    poll_until_done(t->l, &t->r, 26, 15000);
    CU_ASSERT_EQUAL(t->r.done_count, 26);
    idevs_launcher_get_stats(t->l, &st);
    CU_ASSERT(st.restarts >= 1 && st.instances_ready == 3);
    CU_ASSERT_NOT_EQUAL(idevs_launcher_instance_pid(t->l, 1), victim);
    for (size_t i = 0; i < t->r.done_count; i++)
        CU_ASSERT(t->r.done_status[i] == IDEVS_OK || t->r.done_id[i] == copy);
    /* outputs: 12 + the numbered one + 12; the numbered one is partition 0's (p60: 60 mod 6 = 0) */
    expect_partitioned_outputs(t, 12, 25, seen);

    /* a copy delivered while its first still waits: it follows the first to its instance, and runs not */
    idevs_msgid sale2 = idevs_msgid_numbered(stream, 8);
    env = seal_numbered(&t->st, &t->w, "p54", &sale2, &len);
    uint64_t first2 = deliver_partition(t->l, env, len, "0");
    free(env);
    env = seal_numbered(&t->st, &t->w, "p54", &sale2, &len);
    uint64_t copy2 = deliver_partition(t->l, env, len, "1");
    free(env);
    poll_until_done(t->l, &t->r, 28, 5000);
    CU_ASSERT_EQUAL(done_status_of(&t->r, first2, &times), IDEVS_OK);
    CU_ASSERT_EQUAL(done_status_of(&t->r, copy2, &times), IDEVS_ERR_ALREADY_DONE);
    expect_partitioned_outputs(t, 25, 26, seen);

    /* a partition the descriptor (64 partitions) does not have */
    env = seal(&t->st, &t->w, "p61", &len);
    deliver_partition(t->l, env, len, "64");
    free(env);
    poll_until_done(t->l, &t->r, 29, 5000);
    idevs_launcher_get_stats(t->l, &st);
    CU_ASSERT_EQUAL(st.partition_ignored, 1);
    rig_free(t);
}

/* Polls for ms milliseconds. */
static void poll_for(rig *t, int ms)
{
    idevs_launcher_callbacks cb = launch_record_callbacks(&t->r);
    int64_t end = launch_now_ms() + ms;
    while (launch_now_ms() < end)
        CU_ASSERT_FATAL(idevs_launcher_poll(t->l, 20, &cb) == IDEVS_OK);
}

/* How many publications from the from-th on came from instance n. */
static size_t ticks_of(const rig *t, size_t from, uint32_t n)
{
    size_t count = 0;
    for (size_t i = from; i < t->r.pub_count; i++)
        count += instance_of(&t->r, i) == n;
    return count;
}

/* The logic's timer runs on one instance of a pool: instance 0; while instance 0 restarts, instance 1; then 0
 * again, and nothing instance 1's timer emits after the handover is published. */
static void test_pool_timer(void)
{
    process_extra = ", \"instances\": 2";
    process_config = "{\"timer_ms\": 50}";
    rig *t = rig_new(echo_path, 64, 2000, host_path);
    process_extra = "";
    process_config = "{}";
    t->cfg.backoff_initial_ms = 1500; /* instance 0's restart waits: instance 1 holds the timer meanwhile */
    rig_start(t, NULL);
    poll_for(t, 500);
    size_t before = t->r.pub_count;
    CU_ASSERT(before >= 3 && ticks_of(t, 0, 1) == 0);

    pid_t victim = idevs_launcher_instance_pid(t->l, 0);
    CU_ASSERT_FATAL(victim > 0 && kill(victim, SIGKILL) == 0);
    poll_for(t, 1000);
    CU_ASSERT(ticks_of(t, before, 1) >= 3); /* instance 1 took the timer over */

    idevs_launcher_stats st;
    int64_t end = launch_now_ms() + 5000;
    do {
        poll_for(t, 50);
        idevs_launcher_get_stats(t->l, &st);
    } while ((st.instances_ready < 2 || idevs_launcher_instance_pid(t->l, 0) == victim) && launch_now_ms() < end);
    CU_ASSERT_FATAL(st.instances_ready == 2);
    poll_for(t, 100); /* the pass that saw instance 0 ready may still have published instance 1's last run */
    size_t back = t->r.pub_count;
    poll_for(t, 500);
    CU_ASSERT(ticks_of(t, back, 0) >= 3 && ticks_of(t, back, 1) == 0);
    idevs_launcher_get_stats(t->l, &st);
    CU_ASSERT(st.timer_moves >= 2);
    rig_free(t);
}

/* The replay record as it is on disk when an output leaves: what a broker killed right then restarts with. */
static char record_on_disk[PATH_MAX + 64], record_at_output[PATH_MAX + 64];

/* A copy of from (mode 0600), or no file to when there is none. */
static void copy_private_file(const char *from, const char *to)
{
    uint8_t buf[8192];
    int in = open(from, O_RDONLY | O_CLOEXEC);
    if (in < 0 && errno == ENOENT) {
        (void)unlink(to);
        return;
    }
    int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CU_ASSERT_FATAL(in >= 0 && out >= 0);
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        CU_ASSERT_FATAL(write(out, buf, (size_t)n) == n);
    CU_ASSERT_FATAL(n == 0);
    close(in);
    close(out);
}

static void on_publish_copy_record(void *arg, const idevs_launcher_publish *p)
{
    launch_record_on_publish(arg, p);
    copy_private_file(record_on_disk, record_at_output);
}

/* An output leaves only once the record that holds its input is on disk: with the file as it was when the last
 * output left (a broker killed with SIGKILL then, no write at stop), every input is refused as a replay. */
static void test_output_waits_for_record(void)
{
    enum { N = 5 };
    rig *t = echo_started();
    replay_file(&t->w, record_on_disk, sizeof record_on_disk);
    snprintf(record_at_output, sizeof record_at_output, "%s/at-output.replay", t->w.dir);
    /* One delivery first: the record's first write, after a quiet spell, was always at once. */
    deliver(t->l, &t->st, &t->w, "warm up");
    poll_until_done(t->l, &t->r, 1, 5000);
    launch_record_clear(&t->r);
    uint8_t *env[N];
    size_t len[N];
    for (size_t i = 0; i < N; i++) {
        env[i] = seal(&t->st, &t->w, "book one taxi", &len[i]);
        deliver_env(t->l, env[i], len[i]);
    }
    idevs_launcher_callbacks cb = launch_record_callbacks(&t->r);
    cb.on_publish = on_publish_copy_record;
    int64_t end = launch_now_ms() + 5000;
    while (t->r.done_count < N && launch_now_ms() < end)
        CU_ASSERT_FATAL(idevs_launcher_poll(t->l, 50, &cb) == IDEVS_OK);
    CU_ASSERT_EQUAL(t->r.pub_count, N);
    for (size_t i = 0; i < N; i++) /* the outputs in the order of their deliveries' Done */
        CU_ASSERT_EQUAL(t->r.pub_id[i], t->r.done_id[i]);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    CU_ASSERT_EQUAL(s.released_unrecorded, 0);
    CU_ASSERT(s.replay_saves >= 1);
    rig_stop(t);

    CU_ASSERT(rename(record_at_output, record_on_disk) == 0); /* there was a record when the last output left */
    idevs_launcher *b = launcher(&t->cfg);
    start(b);
    for (size_t i = 0; i < N; i++)
        CU_ASSERT_EQUAL(idevs_launcher_deliver(b, IN_TOPIC, env[i], len[i], NULL, 0, NULL), IDEVS_ERR_REPLAY);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, ""), 0);
    idevs_launcher_free(b);
    for (size_t i = 0; i < N; i++)
        free(env[i]);
    rig_free(t);
}

/* A damaged record file: a warning naming it, an empty record (the documented consequence: what it held is
 * accepted once more), and a good file written again, which the next launcher reads without a warning. */
static void test_damaged_record_warns(void)
{
    rig *t = echo_started();
    size_t len = 0;
    uint8_t *env = seal(&t->st, &t->w, "recorded", &len);
    deliver_env(t->l, env, len);
    poll_until_done(t->l, &t->r, 1, 5000);
    rig_stop(t);

    char path[PATH_MAX + 64];
    replay_file(&t->w, path, sizeof path);
    FILE *f = fopen(path, "r+b");
    CU_ASSERT_FATAL(f != NULL);
    /* One write: generation 1, in the second slot (the first is still empty). A bit of it flipped. */
    CU_ASSERT_FATAL(fseek(f, 0, SEEK_END) == 0);
    long second = ftell(f) / 2;
    CU_ASSERT_FATAL(fseek(f, second + 100, SEEK_SET) == 0);
    int c = fgetc(f);
    CU_ASSERT_FATAL(c != EOF && fseek(f, second + 100, SEEK_SET) == 0 && fputc(c ^ 0x01, f) != EOF);
    CU_ASSERT_FATAL(fclose(f) == 0);

    idevs_launcher *b = launcher(&t->cfg);
    start(b);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, "replay record"), 1);
    CU_ASSERT(saw_event(&t->r, "authentication code does not match"));
    uint64_t id = deliver_env(b, env, len);
    poll_until_done(b, &t->r, 2, 5000);
    size_t times = 0;
    CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
    idevs_launcher_free(b);

    /* Written again: the next launcher reads it quietly and refuses the envelope. */
    idevs_launcher *c2 = launcher(&t->cfg);
    start(c2);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, "replay record"), 1);
    CU_ASSERT_EQUAL(idevs_launcher_deliver(c2, IN_TOPIC, env, len, NULL, 0, NULL), IDEVS_ERR_REPLAY);
    idevs_launcher_free(c2);

    /* Both slots written by now (b wrote its empty start, then the envelope): the first damaged, the other is
     * read, with a warning that names the damage. */
    f = fopen(path, "r+b");
    CU_ASSERT_FATAL(f != NULL);
    CU_ASSERT_FATAL(fseek(f, 100, SEEK_SET) == 0);
    c = fgetc(f);
    CU_ASSERT_FATAL(c != EOF && fseek(f, 100, SEEK_SET) == 0 && fputc(c ^ 0x01, f) != EOF);
    CU_ASSERT_FATAL(fclose(f) == 0);
    idevs_launcher *c3 = launcher(&t->cfg);
    start(c3);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, "replay record"), 2);
    CU_ASSERT(saw_event(&t->r, "reads one slot of its replay record"));
    idevs_launcher_free(c3);

    /* Truncated, and then not ours to read (mode 0644): a warning each, and the launcher still starts. */
    launch_write_file(path, "idevsrpl", 8);
    CU_ASSERT_FATAL(chmod(path, 0600) == 0);
    idevs_launcher *d = launcher(&t->cfg);
    start(d);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, "replay record"), 3);
    CU_ASSERT(saw_event(&t->r, "another size"));
    idevs_launcher_free(d);
    CU_ASSERT_FATAL(chmod(path, 0644) == 0);
    idevs_launcher *e = launcher(&t->cfg);
    start(e);
    CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_WARNING, "replay record"), 4);
    CU_ASSERT(saw_event(&t->r, "mode 0600"));
    idevs_launcher_free(e);
    struct stat st_;
    CU_ASSERT_FATAL(stat(path, &st_) == 0);
    CU_ASSERT_EQUAL(st_.st_mode & 0777, 0600); /* replaced by a private one */
    free(env);
    rig_free(t);
}

/* ---- stopped and continued; a trap behind output the launcher has not read ---- */

#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>

#include "suspend.h"

/* Stopped for 300 ms while it waits for a frame, then continued, in each way this machine allows: the same
 * compartment (no restart) serves the next delivery. */
static void test_stopped_and_continued(void)
{
    static const suspend_how ways[] = {SUSPEND_SIGSTOP, SUSPEND_CGROUP_FREEZE, SUSPEND_PTRACE};
    rig *t = echo_started();
    idevs_launcher_stats first;
    idevs_launcher_get_stats(t->l, &first);
    for (size_t i = 0; i < sizeof ways / sizeof ways[0]; i++) {
        /* Between polls the launcher waits for nothing: a traced child's stop is the test's to collect. */
        CU_ASSERT_TRUE_FATAL(suspend_wait_sleeping(first.pid));
        char why[512], text[64];
        if (!suspend_for(first.pid, ways[i], 300, why, sizeof why)) {
            suspend_skipped(ways[i], why);
            continue;
        }
        snprintf(text, sizeof text, "after %s", suspend_name(ways[i]));
        size_t published = t->r.pub_count;
        uint64_t id = deliver(t->l, &t->st, &t->w, text);
        poll_until_done(t->l, &t->r, t->r.done_count + 1, 5000);
        size_t times = 0;
        CU_ASSERT_EQUAL(done_status_of(&t->r, id, &times), IDEVS_OK);
        CU_ASSERT_FATAL(t->r.pub_count == published + 1);
        char *got = open_output(&t->sk, &t->r, published);
        CU_ASSERT(got != NULL && strcmp(got, text) == 0);
        free(got);
        idevs_launcher_stats now;
        idevs_launcher_get_stats(t->l, &now);
        CU_ASSERT_EQUAL(now.pid, first.pid);
        CU_ASSERT_EQUAL(now.restarts, 0);
        CU_ASSERT_EQUAL(now.started, 1);
        if (now.restarts != 0)
            fprintf(stderr, "after %s: %s\n", suspend_name(ways[i]), now.last_exit);
    }
    rig_free(t);
}

/* Bytes the compartment wrote on its end that the launcher has not read yet. */
static int unread_by_launcher(int compartment_end)
{
    int n = -1;
    return ioctl(compartment_end, SIOCOUTQ, &n) == 0 ? n : -1;
}

/* The logic traps while the previous delivery's output fills the channel, unread by the launcher: the event of the
 * exit still names the system call. The compartment's end of the channel (pidfd_getfd, which needs the right to
 * trace it) gets the smallest send buffer: without that right the test is skipped. */
static void test_trap_behind_unread_output_named(void)
{
    char logic[PATH_MAX + 64];
    snprintf(logic, sizeof logic, "%s/idevs_logic_hostile_after_output.so", hostile_dir);
    rig *t = rig_new(logic, 16, 2000, host_path);
    t->cfg.max_attempts = 1;
    rig_start(t, NULL);
    idevs_launcher_stats s;
    idevs_launcher_get_stats(t->l, &s);
    int pidfd = (int)syscall(SYS_pidfd_open, s.pid, 0);
    int end = pidfd >= 0 ? (int)syscall(SYS_pidfd_getfd, pidfd, 3, 0) : -1;
    if (end < 0) {
        printf("\n    SKIPPED: the compartment's end of the channel is out of reach (pidfd_getfd: %s) ", strerror(errno));
    } else {
        char pass[16001];
        memset(pass, 'p', sizeof pass - 1);
        memcpy(pass, "pass ", 5);
        pass[sizeof pass - 1] = '\0';
        uint64_t first = deliver(t->l, &t->st, &t->w, pass); /* sent at once; the launcher reads only when polled */
        for (int waited = 0; unread_by_launcher(end) < 16000 && waited < 5000; waited++)
            usleep(1000);
        CU_ASSERT_FATAL(unread_by_launcher(end) >= 16000);
        CU_ASSERT_TRUE_FATAL(suspend_wait_sleeping(s.pid));
        int one = 1;
        CU_ASSERT_EQUAL(setsockopt(end, SOL_SOCKET, SO_SNDBUF, &one, sizeof one), 0); /* now full */
        close(end);
        uint64_t second = deliver(t->l, &t->st, &t->w, "socket");
        usleep(200 * 1000);
        poll_until_done(t->l, &t->r, 2, 5000);
        size_t times = 0;
        CU_ASSERT_EQUAL(done_status_of(&t->r, first, &times), IDEVS_OK);
        CU_ASSERT(done_status_of(&t->r, second, &times) != IDEVS_OK && times == 1);
        CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_EXITED,
                                       "exited with status 159: system call socket ("), 1);
        CU_ASSERT_EQUAL(events_of_kind(&t->r, IDEVS_LAUNCHER_EVENT_EXITED, "outside the sandbox allowlist"), 1);
        for (size_t i = 0; i < t->r.event_count; i++)
            if (t->r.event_kind[i] == IDEVS_LAUNCHER_EVENT_EXITED)
                fprintf(stderr, "trap behind unread output: %s\n", t->r.events[i]);
    }
    if (pidfd >= 0)
        close(pidfd);
    rig_free(t);
}

/* ---- suite ---- */

static void build_path(char *out, const char *dir, const char *name)
{
    snprintf(out, PATH_MAX, "%.3000s/%.200s", dir, name);
}

static int suite_init(void)
{
    const char *host = getenv("IDEVS_COMPARTMENT"), *logic_dir = getenv("IDEVS_TEST_LOGIC_DIR");
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (host == NULL || logic_dir == NULL || n <= 0) {
        fprintf(stderr, "test_launcher: run through meson test (IDEVS_COMPARTMENT, IDEVS_TEST_LOGIC_DIR)\n");
        return 1;
    }
    self[n] = '\0';
    char helpers[PATH_MAX];
    snprintf(helpers, sizeof helpers, "%.4000s/../launcher", dirname(self));
    snprintf(host_path, sizeof host_path, "%s", host);
    snprintf(hostile_dir, sizeof hostile_dir, "%s", logic_dir);
    build_path(echo_path, logic_dir, "idevs_logic_echo.so");
    build_path(hang_path, helpers, "idevs_logic_hang.so");
    build_path(peer_path, helpers, "launcher_peer");
    signal(SIGPIPE, SIG_IGN); /* a dead compartment's socket must not end the tests; the launcher copes anyway */
    fixture_pki_init(&pki);
    store = fixture_service(&pki, "store");
    sink = fixture_service(&pki, "sink");
    return 0;
}

static int suite_clean(void)
{
    idevs_identity_free(store);
    idevs_identity_free(sink);
    fixture_pki_free(&pki);
    return 0;
}

static CU_TestInfo tests[] = {
    {"measurement follows the documented rule and the logic", test_measurement_rule},
    {"what was measured runs, whatever happens to the file", test_no_swap_after_measuring},
    {"round trip, unprivileged child, private state files, clean stop", test_round_trip_and_private_files},
    {"a group-readable sealing.key is refused", test_sealing_key_must_be_private},
    {"kill -9 mid-stream: same keys, nothing lost, nothing twice", test_kill9_keeps_identity_loses_nothing},
    {"a pool of 3: own certificates of the same keys, partitions, a copy across instances, one killed", test_pool},
    {"a pool's timer: instance 0's, another's while it restarts, then 0's again", test_pool_timer},
    {"another measurement gets fresh keys and cannot unseal", test_other_measurement_gets_fresh_keys},
    {"a hung compartment is killed after the event timeout", test_hung_compartment_killed},
    {"the queue is bounded in envelope bytes (queue_bytes)", test_queue_bytes_bound},
    {"queue full and refused deliveries", test_queue_full_and_bad_deliveries},
    {"queue shares: a flooding client keeps its share, others get in; copies take one slot", test_queue_shares},
    {"queue shares: 90 clients at once, copies found, counts given back", test_queue_shares_many_clients},
    {"restart backoff: inputs wait in the queue, each done once when a compartment stays up",
     test_backoff_holds_inputs},
    {"a stop with deliveries not done says how many it drops", test_stop_reports_abandoned},
    {"topics, the gate's sender check, conflicts, the reload check", test_topics_gate_conflicts_and_reload_check},
    {"the launcher fd signals work", test_fd_for_poll_integration},
    {"the running compartment's certificate is renewed: same keys, no new epoch", test_certificate_renewal},
    {"hostile logic is reported with its system call", test_hostile_logic_reported},
    {"peer: garbage", test_peer_garbage},
    {"peer: oversized frame", test_peer_oversized},
    {"peer: undecodable frame", test_peer_undecodable},
    {"peer: a launcher-only frame", test_peer_wrong_frame},
    {"peer: a Done with an undeclared refusal code", test_peer_undeclared_refusal},
    {"refusal codes reach on_refused before on_done", test_refusal_reported},
    {"peer: truncated frame then exit", test_peer_truncated},
    {"peer: silent until the start timeout", test_peer_silent},
    {"peer: garbage mid-stream, restarts, one Done", test_peer_garbage_midstream},
    {"replay: refused after kill -9, fresh envelopes pass", test_replay_refused_after_kill},
    {"replay: an epoch older than the two kept is epoch_forgotten", test_replay_epoch_forgotten},
    {"replay: instances: instance 1 passes the gate, each instance's copy refused, also after a restart",
     test_record_instances},
    {"a client's retransmission is a duplicate, not a replay", test_retransmission_is_not_a_replay},
    {"replay: in flight at a kill, done once; a copy in flight is refused", test_in_flight_redelivered_once},
    {"max_outstanding_requests 4: inputs wait in the launcher, every answer reaches its request, each input once",
     test_outstanding_requests_hold_inputs},
    {"replay: a forged high sequence number moves nothing", test_forged_header_does_not_advance},
    {"replay: the record outlives the launcher (broker restart)", test_record_survives_launcher},
    {"replay: another broker's record adopted (moving partitions)", test_record_adopted},
    {"receipts: after the record, and a copy sent again after a restart is receipted, not run", test_receipts_outlive_launcher},
    {"replay: an output leaves only once the record holding its input is on disk", test_output_waits_for_record},
    {"replay: a damaged record file warns and starts empty", test_damaged_record_warns},
    {"stopped and continued (SIGSTOP, cgroup freeze, ptrace): same compartment, no restart",
     test_stopped_and_continued},
    {"a trap behind output the launcher has not read: the exit event names the call",
     test_trap_behind_unread_output_named},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    return harness_run_suite("launcher", suite_init, suite_clean, tests);
}
