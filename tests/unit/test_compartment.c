/* The compartment host program, for real: each test starts idevs-compartment as a child process with a
 * socketpair on descriptor 3 and a test logic on descriptor 4, and plays the launcher's side of the channel.
 * Services are fixture identities that seal and open envelopes with their own contexts. Every wait is bounded,
 * every child reaped. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fixtures.h"
#include "harness.h"
#include "suspend.h"
#include "idevs_cert.h"
#include "idevs_channel.h"
#include "idevs_crypto.h"
#include "idevs_envelope.h"
#include "idevs_receipt.h"
#include "idevs_logic.h"

#define FRAME_WAIT_MS 10000 /* generous for sanitizer builds; a healthy child answers in milliseconds */
#define EXIT_WAIT_MS 10000
#define EXIT_SANDBOX 159 /* enclave-bridge/compartment/compartment.h */
#define EXIT_FATAL 1
#define EXIT_CLOSED 2

#define TOPIC_IN "idevs/test/in/events"
#define TOPIC_OUT "idevs/test/out/events"
#define TOPIC_REQ "idevs/test/req/ask"
#define TOPIC_RESP "idevs/test/resp/ask"

extern char **environ;

static fixture_pki pki;
static idevs_identity *source, *sink, *oracle, *outsider;
static uint8_t *ca_der;
static size_t ca_der_len;
static uint8_t ca_sha[32];
static idevs_uuid program;
static const char *compartment_path, *logic_dir;
static uint8_t sealing_key[32];

/* ---- the launcher's side, for tests ---- */

typedef struct child {
    pid_t pid;
    idevs_channel ch;
    char descriptor[4096];
    size_t descriptor_len;
    uint8_t digest[32];
    uint8_t measurement[32];
    uint8_t sign_pub[32], kex_pub[32];
    uint8_t sealed[256];
    size_t sealed_len;
    bool restored;
    idevs_identity *cert_id; /* the compartment's public keys and certificate chain, as services see them */
    int64_t started_ms;
    int their_end; /* the compartment's end of the channel when spawn() kept it (keep_compartment_end), else -1 */
    /* receipts (Publish frames on a receipt topic), which expect() takes aside: how many, and the last one */
    unsigned receipts;
    uint64_t receipt_delivery;
    char receipt_topic[128];
    uint8_t *receipt;
    size_t receipt_len;
} child;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void hex(const uint8_t *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02x", b[i]);
}

static const char *limits_extra = ""; /* more limits for the next start(), e.g. ", \"max_outstanding_requests\": 4" */
static const char *output_pad = "";   /* the output's "pad" member for the next start(), e.g. ", \"pad\": 256" */
static const char *request_pad = "";  /* the request's */
static const char *process_extra = ""; /* more of "process" for the next start(), e.g. ", \"instances\": 4" */
static uint32_t init_instance;         /* Init.instance of the next send_init() */

/* The test deployment: source -> events -> out -> sink; request ask -> oracle. */
static void make_descriptor(child *c, const char *config)
{
    char prog[IDEVS_UUID_STR_LEN], src[IDEVS_UUID_STR_LEN], snk[IDEVS_UUID_STR_LEN], orc[IDEVS_UUID_STR_LEN];
    char ca_hex[65];
    idevs_uuid_format(&program, prog);
    idevs_uuid_format(idevs_identity_uuid(source), src);
    idevs_uuid_format(idevs_identity_uuid(sink), snk);
    idevs_uuid_format(idevs_identity_uuid(oracle), orc);
    hex(ca_sha, 32, ca_hex);
    int n = snprintf(c->descriptor, sizeof c->descriptor,
                     "{\"version\": 1,\n"
                     " \"process\": {\"name\": \"echo-test\", \"uuid\": \"%s\", \"logic\": \"idevs_logic_echo.so\","
                     " \"config\": %s%s},\n"
                     " \"operator_ca_sha256\": \"%s\",\n"
                     " \"services\": [{\"name\": \"source\", \"uuid\": \"%s\", \"certificate\": \"source.crt\", \"receipts\": true},"
                     " {\"name\": \"sink\", \"uuid\": \"%s\", \"certificate\": \"sink.crt\", \"receipts\": true},"
                     " {\"name\": \"oracle\", \"uuid\": \"%s\", \"certificate\": \"oracle.crt\"}],\n"
                     " \"inputs\": [{\"name\": \"events\", \"topic\": \"" TOPIC_IN "\", \"from\": \"source\"}],\n"
                     " \"outputs\": [{\"name\": \"out\", \"topic\": \"" TOPIC_OUT "\", \"to\": \"sink\", \"qos\": 1%s}],\n"
                     " \"requests\": [{\"name\": \"ask\", \"topic\": \"" TOPIC_REQ "\", \"response_topic\": \"" TOPIC_RESP
                     "\", \"to\": \"oracle\", \"qos\": 2%s}],\n"
                     " \"refusals\": [\"not_a_sale\", \"amount_out_of_range\"],\n"
                     " \"limits\": {\"max_payload\": 65536, \"queue_depth\": 64, \"event_timeout_ms\": 2000%s}}\n",
                     prog, config, process_extra, ca_hex, src, snk, orc, output_pad, request_pad, limits_extra);
    CU_ASSERT_FATAL(n > 0 && (size_t)n < sizeof c->descriptor);
    c->descriptor_len = (size_t)n;
    CU_ASSERT_FATAL(idevs_sha256(c->descriptor, c->descriptor_len, c->digest) == IDEVS_OK);
}

/* The measurement a launcher would compute; here any fixed function of the logic's name. */
static void make_measurement(child *c, const char *logic)
{
    char label[128];
    snprintf(label, sizeof label, "test measurement of %s", logic);
    CU_ASSERT_FATAL(idevs_sha256(label, strlen(label), c->measurement) == IDEVS_OK);
}

/* A copy of the file in a memfd, as the launcher passes the logic (sealed, on an internal filesystem). */
static int memfd_copy(int fd)
{
    int m = memfd_create("logic", MFD_CLOEXEC);
    CU_ASSERT_FATAL(m >= 0);
    char buf[65536];
    ssize_t n;
    while ((n = read(fd, buf, sizeof buf)) > 0)
        CU_ASSERT_FATAL(write(m, buf, (size_t)n) == n);
    CU_ASSERT_FATAL(n == 0);
    close(fd);
    return m;
}

static bool logic_in_memfd;       /* spawn() passes the logic in a memfd instead of the file */
static bool keep_compartment_end; /* spawn() keeps the compartment's end of the channel open in the test */

static void spawn(child *c, const char *logic)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/idevs_logic_%s.so", logic_dir, logic);
    int sv[2];
    CU_ASSERT_FATAL(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    int lfd = open(path, O_RDONLY | O_CLOEXEC);
    CU_ASSERT_FATAL(lfd >= 0);
    if (logic_in_memfd)
        lfd = memfd_copy(lfd);
    int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
    CU_ASSERT_FATAL(devnull >= 0);
    c->started_ms = now_ms();
    pid_t pid = fork();
    CU_ASSERT_FATAL(pid >= 0);
    if (pid == 0) {
        /* Above 4 first, so that the dup2() onto 3 and 4 always clears close-on-exec. */
        int a = fcntl(sv[1], F_DUPFD_CLOEXEC, 10), b = fcntl(lfd, F_DUPFD_CLOEXEC, 10);
        if (a < 0 || b < 0 || dup2(devnull, 0) < 0 || dup2(devnull, 1) < 0 || dup2(a, 3) < 0 || dup2(b, 4) < 0)
            _exit(126);
        char *argv[] = {(char *)compartment_path, NULL};
        execve(compartment_path, argv, environ);
        _exit(127);
    }
    c->their_end = keep_compartment_end ? sv[1] : -1;
    if (!keep_compartment_end)
        close(sv[1]);
    close(lfd);
    close(devnull);
    c->pid = pid;
    idevs_channel_init(&c->ch, sv[0], 0);
}

/* Waits for the child to exit; kills it (and fails) after the bound. Returns its wait status. */
static int reap(child *c, int timeout_ms)
{
    int status = 0;
    int64_t deadline = now_ms() + timeout_ms;
    if (c->their_end >= 0)
        close(c->their_end);
    c->their_end = -1;
    free(c->receipt);
    c->receipt = NULL;
    for (;;) {
        pid_t r = waitpid(c->pid, &status, WNOHANG);
        if (r == c->pid)
            break;
        if (r < 0 && errno != EINTR) {
            CU_FAIL("waitpid");
            break;
        }
        if (now_ms() > deadline) {
            CU_FAIL("the compartment did not exit in time");
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &status, 0);
            break;
        }
        struct timespec ts = {0, 2 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    c->pid = -1;
    idevs_channel_close(&c->ch);
    idevs_identity_free(c->cert_id);
    c->cert_id = NULL;
    return status;
}

static int exit_code(int status)
{
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void send_frame(child *c, Idevs__Bridge__V1__Frame *f)
{
    CU_ASSERT_FATAL(idevs_channel_send(&c->ch, f, FRAME_WAIT_MS) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_channel_flush(&c->ch, FRAME_WAIT_MS) == IDEVS_OK);
}

/* The next frame, which must be of the given kind (NULL and a failure otherwise). */
/* A receipt frame is taken aside (c->receipt): the tests of outputs need not know which turn carries it. */
static bool took_receipt(child *c, Idevs__Bridge__V1__Frame *f)
{
    if (f->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH || strstr(f->publish->topic, "/receipt/to/") == NULL)
        return false;
    c->receipts++;
    c->receipt_delivery = f->publish->delivery_id;
    snprintf(c->receipt_topic, sizeof c->receipt_topic, "%s", f->publish->topic);
    free(c->receipt);
    c->receipt = malloc(f->publish->envelope.len);
    CU_ASSERT_FATAL(c->receipt != NULL);
    memcpy(c->receipt, f->publish->envelope.data, f->publish->envelope.len);
    c->receipt_len = f->publish->envelope.len;
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    return true;
}

/* The next frame but receipts, which must be of the given kind (NULL and a failure otherwise). */
static Idevs__Bridge__V1__Frame *expect(child *c, Idevs__Bridge__V1__Frame__BodyCase want)
{
    Idevs__Bridge__V1__Frame *f = NULL;
    idevs_err err;
    while ((err = idevs_channel_recv(&c->ch, &f, FRAME_WAIT_MS)) == IDEVS_OK && took_receipt(c, f))
        f = NULL;
    CU_ASSERT_EQUAL(err, IDEVS_OK);
    if (err != IDEVS_OK)
        return NULL;
    if (f->body_case != want) {
        if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_FATAL)
            fprintf(stderr, "\n    unexpected Fatal: %s (%s)\n", f->fatal->reason, idevs_err_name(f->fatal->status));
        CU_ASSERT_EQUAL(f->body_case, want);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        return NULL;
    }
    return f;
}

static void send_init(child *c, const uint8_t key[32], const uint8_t *blob, size_t blob_len)
{
    Idevs__Bridge__V1__Init init = IDEVS__BRIDGE__V1__INIT__INIT;
    init.descriptor.data = (uint8_t *)c->descriptor;
    init.descriptor.len = c->descriptor_len;
    init.operator_ca.data = ca_der;
    init.operator_ca.len = ca_der_len;
    Idevs__Bridge__V1__ServiceCertificate sc[3], *scp[3];
    idevs_identity *ids[3] = {source, sink, oracle};
    const char *names[3] = {"source", "sink", "oracle"};
    const uint8_t *der[3][IDEVS_CHAIN_MAX];
    size_t len[3][IDEVS_CHAIN_MAX];
    ProtobufCBinaryData chains[3][IDEVS_CHAIN_MAX];
    for (int i = 0; i < 3; i++) {
        idevs__bridge__v1__service_certificate__init(&sc[i]);
        sc[i].name = (char *)names[i];
        sc[i].n_chain = fixture_chain(ids[i], der[i], len[i]);
        for (size_t j = 0; j < sc[i].n_chain; j++) {
            chains[i][j].data = (uint8_t *)der[i][j];
            chains[i][j].len = len[i][j];
        }
        sc[i].chain = chains[i];
        scp[i] = &sc[i];
    }
    init.n_services = 3;
    init.services = scp;
    init.sealing_key.data = (uint8_t *)key;
    init.sealing_key.len = 32;
    init.sealed_keys.data = (uint8_t *)blob;
    init.sealed_keys.len = blob_len;
    init.measurement.data = c->measurement;
    init.measurement.len = 32;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    init.now_ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    init.instance = init_instance;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_INIT;
    f.init = &init;
    send_frame(c, &f);
}

/* Issues a certificate for the keys (not_before 0: now; else a renewal keeping it) with fresh evidence, makes
 * it c->cert_id's chain (as services see it) and sends it in a Certified frame. */
static void send_certified(child *c, const uint8_t sign_pub[32], const uint8_t kex_pub[32], time_t not_before)
{
    idevs_evidence ev;
    memset(&ev, 0, sizeof ev);
    ev.backend = IDEVS_BACKEND_PROCESS;
    memcpy(ev.measurement, c->measurement, 32);
    ev.program_uuid = program;
    memcpy(ev.descriptor_digest, c->digest, 32);
    CU_ASSERT_FATAL(idevs_key_binding(sign_pub, kex_pub, ev.key_binding) == IDEVS_OK);
    ev.issued_at = (uint64_t)time(NULL);
    ev.nonce_len = 16;
    CU_ASSERT_FATAL(idevs_random(ev.nonce, ev.nonce_len) == IDEVS_OK);
    idevs_identity_free(c->cert_id);
    c->cert_id = NULL;
    CU_ASSERT_FATAL(idevs_identity_from_public(&program, "echo-test", sign_pub, kex_pub, &c->cert_id) == IDEVS_OK);
    X509 *x = NULL;
    CU_ASSERT_FATAL(idevs_cert_renew_compartment(pki.authority, pki.authority_cert, c->cert_id, &ev, 3600,
                                                 not_before, &x) == IDEVS_OK);
    uint8_t *der[2] = {NULL, NULL};
    size_t len[2];
    CU_ASSERT_FATAL(idevs_cert_to_der(x, &der[0], &len[0]) == IDEVS_OK);
    CU_ASSERT_FATAL(idevs_cert_to_der(pki.authority_cert, &der[1], &len[1]) == IDEVS_OK);
    X509_free(x);
    CU_ASSERT_FATAL(idevs_identity_set_chain(c->cert_id, (const uint8_t *const *)der, len, 2) == IDEVS_OK);

    Idevs__Bridge__V1__Certified cert = IDEVS__BRIDGE__V1__CERTIFIED__INIT;
    ProtobufCBinaryData chain[2] = {{len[0], der[0]}, {len[1], der[1]}};
    cert.n_chain = 2;
    cert.chain = chain;
    Idevs__Bridge__V1__Frame cf = IDEVS__BRIDGE__V1__FRAME__INIT;
    cf.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED;
    cf.certified = &cert;
    send_frame(c, &cf);
    free(der[0]);
    free(der[1]);
}

/* Init, CertifyRequest, certificate issued by the fixture authority, Certified. */
static bool certify(child *c, const uint8_t key[32], const uint8_t *blob, size_t blob_len)
{
    send_init(c, key, blob, blob_len);
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST);
    if (f == NULL)
        return false;
    const Idevs__Bridge__V1__CertifyRequest *req = f->certify_request;
    CU_ASSERT_EQUAL_FATAL(req->sign_public.len, 32);
    CU_ASSERT_EQUAL_FATAL(req->kex_public.len, 32);
    CU_ASSERT_FATAL(req->sealed_keys.len > 0 && req->sealed_keys.len <= sizeof c->sealed);
    memcpy(c->sign_pub, req->sign_public.data, 32);
    memcpy(c->kex_pub, req->kex_public.data, 32);
    memcpy(c->sealed, req->sealed_keys.data, req->sealed_keys.len);
    c->sealed_len = req->sealed_keys.len;
    c->restored = req->keys_restored;
    idevs__bridge__v1__frame__free_unpacked(f, NULL);

    send_certified(c, c->sign_pub, c->kex_pub, 0);
    return true;
}

static bool expect_ready(child *c)
{
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_READY);
    if (f == NULL)
        return false;
    CU_ASSERT_EQUAL(f->ready->abi, IDEVS_LOGIC_ABI);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    return true;
}

/* A compartment running the logic, certified and ready. */
static bool start(child *c, const char *logic, const char *config)
{
    memset(c, 0, sizeof *c);
    make_descriptor(c, config != NULL ? config : "{}");
    make_measurement(c, logic);
    spawn(c, logic);
    return certify(c, sealing_key, NULL, 0) && expect_ready(c);
}

/* start() with more limits in the descriptor, e.g. ", \"max_outstanding_requests\": 4". */
static bool start_limited(child *c, const char *logic, const char *limits)
{
    limits_extra = limits;
    bool ok = start(c, logic, NULL);
    limits_extra = "";
    return ok;
}

static int shutdown_child(child *c)
{
    Idevs__Bridge__V1__Shutdown sd = IDEVS__BRIDGE__V1__SHUTDOWN__INIT;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
    f.shutdown = &sd;
    send_frame(c, &f);
    return exit_code(reap(c, EXIT_WAIT_MS));
}

/* A service's envelope context towards this compartment (the compartment's chain registered unless bare). */
static idevs_envelope_ctx *service_ctx(const child *c, idevs_identity *svc, idevs_cert_policy **policy, bool bare)
{
    *policy = fixture_compartment_policy(&pki, c->measurement, c->digest);
    idevs_cert_policy_expect_program(*policy, &program);
    idevs_envelope_ctx *ctx = NULL;
    CU_ASSERT_FATAL(idevs_envelope_ctx_new(svc, *policy, NULL, &ctx) == IDEVS_OK);
    if (!bare) {
        const uint8_t *der[IDEVS_CHAIN_MAX];
        size_t len[IDEVS_CHAIN_MAX];
        size_t n = fixture_chain(c->cert_id, der, len);
        CU_ASSERT_FATAL(idevs_envelope_add_peer(ctx, der, len, n, NULL) == IDEVS_OK);
    }
    return ctx;
}

/* A service's context and the policy it checks the compartment with, freed together. */
static void party_free(idevs_envelope_ctx *ctx, idevs_cert_policy *policy)
{
    idevs_envelope_ctx_free(ctx);
    idevs_cert_policy_free(policy);
}

/* A child of the echo logic, with the source (which met the compartment) and the sink (bare), each with its
 * policy. */
typedef struct echo_child {
    child c;
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src, *snk;
} echo_child;

static void echo_child_start(echo_child *e)
{
    CU_ASSERT_TRUE_FATAL(start(&e->c, "echo", NULL));
    e->src = service_ctx(&e->c, source, &e->p1, false);
    e->snk = service_ctx(&e->c, sink, &e->p2, true);
}

/* Shuts the child down cleanly (checked) and frees the contexts and policies. */
static void echo_child_stop(echo_child *e)
{
    CU_ASSERT_EQUAL(shutdown_child(&e->c), 0);
    idevs_envelope_ctx_free(e->src);
    idevs_envelope_ctx_free(e->snk);
    idevs_cert_policy_free(e->p1);
    idevs_cert_policy_free(e->p2);
}

/* A child of the echo logic that asks the oracle: the source, the sink and the oracle, each with its policy. */
typedef struct asking_child {
    child c;
    idevs_cert_policy *p1, *p2, *p3;
    idevs_envelope_ctx *src, *snk, *orc;
} asking_child;

static void asking_child_start(asking_child *a)
{
    CU_ASSERT_TRUE_FATAL(start(&a->c, "echo", NULL));
    a->src = service_ctx(&a->c, source, &a->p1, false);
    a->snk = service_ctx(&a->c, sink, &a->p2, false);
    a->orc = service_ctx(&a->c, oracle, &a->p3, false);
}

/* The same child started again with the keys its former run sealed, as a restarted compartment gets them back
 * (request state and kept outputs are sealed under keys derived from them). */
static void asking_child_restart(asking_child *a)
{
    uint8_t blob[sizeof a->c.sealed];
    size_t blob_len = a->c.sealed_len;
    memcpy(blob, a->c.sealed, blob_len);
    memset(&a->c, 0, sizeof a->c);
    make_descriptor(&a->c, "{}");
    make_measurement(&a->c, "echo");
    spawn(&a->c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&a->c, sealing_key, blob, blob_len) && expect_ready(&a->c));
    a->src = service_ctx(&a->c, source, &a->p1, false);
    a->snk = service_ctx(&a->c, sink, &a->p2, false);
    a->orc = service_ctx(&a->c, oracle, &a->p3, false);
}

static void asking_child_stop(asking_child *a)
{
    CU_ASSERT_EQUAL(shutdown_child(&a->c), 0);
    party_free(a->src, a->p1);
    party_free(a->snk, a->p2);
    party_free(a->orc, a->p3);
}

static void seal(idevs_envelope_ctx *ctx, const char *topic, const char *text, const idevs_msgid *prov, size_t n,
                 uint8_t **env, size_t *env_len, idevs_msgid *id)
{
    idevs_seal_input in = {&program, topic, (const uint8_t *)text, strlen(text), prov, n, NULL, IDEVS_PAD_POW2};
    CU_ASSERT_FATAL(idevs_envelope_seal(ctx, &in, env, env_len, id) == IDEVS_OK);
}

static void deliver_correlated(child *c, uint64_t id, const char *topic, const uint8_t *env, size_t env_len,
                               const uint8_t *correlation, size_t correlation_len)
{
    Idevs__Bridge__V1__Deliver d = IDEVS__BRIDGE__V1__DELIVER__INIT;
    d.delivery_id = id;
    d.topic = (char *)topic;
    d.envelope.data = (uint8_t *)env;
    d.envelope.len = env_len;
    d.correlation_data.data = (uint8_t *)correlation;
    d.correlation_data.len = correlation_len;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
    f.deliver = &d;
    send_frame(c, &f);
}

static void deliver(child *c, uint64_t id, const char *topic, const uint8_t *env, size_t env_len,
                    const idevs_msgid *correlation)
{
    deliver_correlated(c, id, topic, env, env_len, correlation != NULL ? correlation->b : NULL,
                       correlation != NULL ? IDEVS_UUID_LEN : 0);
}

/* Seals text from svc on topic and delivers it on deliver_topic. */
static void deliver_text(child *c, idevs_envelope_ctx *ctx, uint64_t id, const char *seal_topic,
                         const char *deliver_topic, const char *text, idevs_msgid *msg_id)
{
    uint8_t *env = NULL;
    size_t env_len = 0;
    seal(ctx, seal_topic, text, NULL, 0, &env, &env_len, msg_id);
    deliver(c, id, deliver_topic, env, env_len, NULL);
    free(env);
}

/* The next Done: its delivery, status and refusal (0, or 1 + the declared code's index). */
static void expect_done_refusal(child *c, uint64_t id, idevs_err status, uint32_t refusal)
{
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_DONE);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->done->delivery_id, id);
    CU_ASSERT_EQUAL(f->done->status, (uint32_t)status);
    CU_ASSERT_EQUAL(f->done->refusal, refusal);
    if (f->done->status != (uint32_t)status)
        fprintf(stderr, "\n    Done status %s, expected %s\n", idevs_err_name(f->done->status), idevs_err_name(status));
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
}

static void expect_done(child *c, uint64_t id, idevs_err status)
{
    expect_done_refusal(c, id, status, 0);
}

/* The next Publish; opens it as the sink (or oracle) and checks payload and provenance. */
static uint8_t last_correlation[IDEVS_REQUEST_CORRELATION_LEN]; /* of the last request expect_publish read */
static size_t last_correlation_len;

static void expect_publish(child *c, uint64_t delivery_id, idevs_envelope_ctx *receiver, const char *topic,
                           const char *text, const idevs_msgid *prov, size_t prov_count, idevs_opened *out)
{
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const Idevs__Bridge__V1__Publish *p = f->publish;
    CU_ASSERT_EQUAL(p->delivery_id, delivery_id);
    CU_ASSERT_STRING_EQUAL(p->topic, topic);
    idevs_opened op;
    memset(&op, 0, sizeof op);
    idevs_err err = idevs_envelope_open(receiver, p->topic, p->envelope.data, p->envelope.len, &op);
    CU_ASSERT_EQUAL_FATAL(err, IDEVS_OK);
    CU_ASSERT_TRUE(idevs_uuid_equal(&op.sender, &program));
    CU_ASSERT_EQUAL(op.payload_len, strlen(text));
    CU_ASSERT_NSTRING_EQUAL(op.payload, text, strlen(text));
    CU_ASSERT_EQUAL(op.provenance_count, prov_count);
    for (size_t i = 0; i < prov_count && i < op.provenance_count; i++)
        CU_ASSERT_EQUAL(memcmp(op.provenance[i].b, prov[i].b, 16), 0);
    if (strcmp(topic, TOPIC_REQ) == 0) {
        CU_ASSERT_STRING_EQUAL(p->response_topic, TOPIC_RESP);
        CU_ASSERT_EQUAL(p->qos, 2);
        CU_ASSERT_EQUAL_FATAL(p->correlation_data.len, IDEVS_REQUEST_CORRELATION_LEN); /* whatever k and state */
        CU_ASSERT_EQUAL(memcmp(p->correlation_data.data, op.message_id.b, 16), 0);
        memcpy(last_correlation, p->correlation_data.data, p->correlation_data.len);
        last_correlation_len = p->correlation_data.len;
    } else {
        CU_ASSERT_EQUAL(p->qos, 1);
        CU_ASSERT_EQUAL(p->correlation_data.len, 0);
    }
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    if (out != NULL)
        *out = op;
    else
        idevs_opened_clear(&op);
}

/* ---- suite ---- */

static int suite_init(void)
{
    compartment_path = getenv("IDEVS_COMPARTMENT");
    logic_dir = getenv("IDEVS_TEST_LOGIC_DIR");
    if (compartment_path == NULL || logic_dir == NULL) {
        fprintf(stderr, "IDEVS_COMPARTMENT and IDEVS_TEST_LOGIC_DIR must be set (meson test does)\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    fixture_pki_init(&pki);
    source = fixture_service(&pki, "source");
    sink = fixture_service(&pki, "sink");
    oracle = fixture_service(&pki, "oracle");
    outsider = fixture_service(&pki, "outsider");
    if (idevs_cert_to_der(pki.ca_cert, &ca_der, &ca_der_len) != IDEVS_OK ||
        idevs_sha256(ca_der, ca_der_len, ca_sha) != IDEVS_OK || idevs_random(sealing_key, 32) != IDEVS_OK)
        return 1;
    idevs_uuid_generate(&program);
    return 0;
}

static int suite_clean(void)
{
    idevs_identity_free(source);
    idevs_identity_free(sink);
    idevs_identity_free(oracle);
    idevs_identity_free(outsider);
    free(ca_der);
    fixture_pki_free(&pki);
    return 0;
}

/* ---- tests ---- */

/* VmRSS, RssAnon and RssFile of a process, in kB (-1 when unknown). */
static void rss_kb(pid_t pid, long kb[3])
{
    static const char *keys[3] = {"VmRSS:", "RssAnon:", "RssFile:"};
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    kb[0] = kb[1] = kb[2] = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        for (int i = 0; i < 3; i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0)
                kb[i] = strtol(line + strlen(keys[i]), NULL, 10);
    if (f != NULL)
        fclose(f);
}

/* Pss from smaps_rollup: shared library pages divided among the processes that map them (-1 when unknown). */
static long pss_kb(pid_t pid)
{
    char path[64], line[256];
    long kb = -1;
    snprintf(path, sizeof path, "/proc/%d/smaps_rollup", (int)pid);
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, "Pss:", 4) == 0)
            kb = strtol(line + 4, NULL, 10);
    if (f != NULL)
        fclose(f);
    return kb;
}

static void test_events_round_trip(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    long kb[3];
    int64_t ready_ms = now_ms() - c.started_ms;
    rss_kb(c.pid, kb);
    printf("\n    start to ready: %lld ms; resident: %ld kB (anonymous %ld kB, files %ld kB), proportional %ld kB ",
           (long long)ready_ms, kb[0], kb[1], kb[2], pss_kb(c.pid));
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, true);
    for (uint64_t i = 1; i <= 3; i++) {
        idevs_msgid in_id;
        char text[32];
        snprintf(text, sizeof text, "sale %llu", (unsigned long long)i);
        deliver_text(&c, src, i, TOPIC_IN, TOPIC_IN, text, &in_id);
        /* The sink knows nothing of the compartment: the first envelope carries its chain. */
        expect_publish(&c, i, snk, TOPIC_OUT, text, &in_id, 1, NULL);
        expect_done(&c, i, IDEVS_OK);
    }
    idevs_msgid in_id;
    deliver_text(&c, src, 4, TOPIC_IN, TOPIC_IN, "upper:quiet", &in_id);
    expect_publish(&c, 4, snk, TOPIC_OUT, "QUIET", &in_id, 1, NULL);
    expect_done(&c, 4, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
}

static void test_request_response(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    idevs_cert_policy *p1, *p2, *p3;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false),
                       *orc = service_ctx(&c, oracle, &p3, false);
    idevs_msgid in_id, resp_id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "ask:how far?", &in_id);
    idevs_opened req;
    expect_publish(&c, 1, orc, TOPIC_REQ, "how far?", &in_id, 1, &req);
    expect_done(&c, 1, IDEVS_OK);

    /* The oracle answers: its response names the request in its provenance. */
    uint8_t *env = NULL;
    size_t env_len = 0;
    seal(orc, TOPIC_RESP, "12 km", &req.message_id, 1, &env, &env_len, &resp_id);
    deliver(&c, 2, TOPIC_RESP, env, env_len, &req.message_id);
    free(env);
    idevs_msgid prov[2] = {resp_id, in_id};
    expect_publish(&c, 2, snk, TOPIC_OUT, "answer:12 km", prov, 2, NULL);
    expect_done(&c, 2, IDEVS_OK);

    /* A second request, answered with only the MQTT correlation data naming it: correlation data is not
     * authenticated, so the answer is not tied to the request (provenance: the answer alone). */
    deliver_text(&c, src, 3, TOPIC_IN, TOPIC_IN, "ask:and back?", &in_id);
    idevs_opened req2;
    expect_publish(&c, 3, orc, TOPIC_REQ, "and back?", &in_id, 1, &req2);
    expect_done(&c, 3, IDEVS_OK);
    seal(orc, TOPIC_RESP, "12 km too", NULL, 0, &env, &env_len, &resp_id);
    deliver(&c, 4, TOPIC_RESP, env, env_len, &req2.message_id);
    free(env);
    expect_publish(&c, 4, snk, TOPIC_OUT, "answer:12 km too", &resp_id, 1, NULL);
    expect_done(&c, 4, IDEVS_OK);

    /* A response only the source could send is refused: responses come from the service asked. */
    deliver_text(&c, src, 5, TOPIC_RESP, TOPIC_RESP, "forged answer", &in_id);
    expect_done(&c, 5, IDEVS_ERR_SENDER_NOT_ALLOWED);

    /* The oracle copies the source's message id into an answer of its own (ids travel in clear): what that causes
     * gets other ids than what the source's message caused, so it cannot pass for a copy of it. */
    idevs_seal_input copied = {&program, TOPIC_RESP, (const uint8_t *)"copied", 6, NULL, 0, &in_id, IDEVS_PAD_POW2};
    CU_ASSERT_FATAL(idevs_envelope_seal(orc, &copied, &env, &env_len, NULL) == IDEVS_OK);
    deliver(&c, 6, TOPIC_RESP, env, env_len, NULL);
    free(env);
    idevs_opened out;
    expect_publish(&c, 6, snk, TOPIC_OUT, "answer:copied", &in_id, 1, &out);
    expect_done(&c, 6, IDEVS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(out.message_id.b, req2.message_id.b, IDEVS_UUID_LEN), 0);
    idevs_opened_clear(&out);

    idevs_opened_clear(&req);
    idevs_opened_clear(&req2);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    idevs_envelope_ctx_free(src);
    idevs_envelope_ctx_free(snk);
    idevs_envelope_ctx_free(orc);
    idevs_cert_policy_free(p1);
    idevs_cert_policy_free(p2);
    idevs_cert_policy_free(p3);
}

/* A request's correlation data carries its state, sealed by the compartment to itself: a compartment started
 * anew (same program, measurement and sealing key) matches the answer to a former run's request with it, once;
 * a token altered, of another program's, for a request the answer does not name, or of this run's own requests
 * matches nothing. */
static void test_request_state_across_restart(void)
{
    asking_child a;
    asking_child_start(&a);
    idevs_msgid in_id[3], resp_id;
    idevs_opened req[3];
    uint8_t corr[3][IDEVS_REQUEST_CORRELATION_LEN];
    static const char *const asks[3] = {"ask-keep:how far?", "ask-keep:and back?", "ask-keep:and then?"};
    for (int i = 0; i < 3; i++) {
        deliver_text(&a.c, a.src, 1 + i, TOPIC_IN, TOPIC_IN, asks[i], &in_id[i]);
        expect_publish(&a.c, 1 + i, a.orc, TOPIC_REQ, asks[i] + 9, &in_id[i], 1, &req[i]);
        expect_done(&a.c, 1 + i, IDEVS_OK);
        CU_ASSERT_EQUAL_FATAL(last_correlation_len, sizeof corr[i]);
        memcpy(corr[i], last_correlation, sizeof corr[i]);
    }
    uint8_t *env = NULL;
    size_t env_len = 0;
    /* In this run, the table matches request 2; a second answer to it, with its token, finds nothing. */
    seal(a.orc, TOPIC_RESP, "3 km", &req[2].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 4, TOPIC_RESP, env, env_len, corr[2], sizeof corr[2]);
    free(env);
    idevs_msgid prov[2] = {resp_id, in_id[2]};
    expect_publish(&a.c, 4, a.snk, TOPIC_OUT, "answer:3 km for and then?", prov, 2, NULL);
    expect_done(&a.c, 4, IDEVS_OK);
    seal(a.orc, TOPIC_RESP, "3 km again", &req[2].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 5, TOPIC_RESP, env, env_len, corr[2], sizeof corr[2]);
    free(env);
    expect_publish(&a.c, 5, a.snk, TOPIC_OUT, "answer:3 km again", &resp_id, 1, NULL);
    expect_done(&a.c, 5, IDEVS_OK);
    asking_child_stop(&a);

    /* A new run with the same keys: request 0 is matched by its token, with its provenance and state; once. */
    asking_child_restart(&a);
    seal(a.orc, TOPIC_RESP, "12 km", &req[0].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 1, TOPIC_RESP, env, env_len, corr[0], sizeof corr[0]);
    free(env);
    prov[0] = resp_id;
    prov[1] = in_id[0];
    expect_publish(&a.c, 1, a.snk, TOPIC_OUT, "answer:12 km for how far?", prov, 2, NULL);
    expect_done(&a.c, 1, IDEVS_OK);
    seal(a.orc, TOPIC_RESP, "12 km again", &req[0].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 2, TOPIC_RESP, env, env_len, corr[0], sizeof corr[0]);
    free(env);
    expect_publish(&a.c, 2, a.snk, TOPIC_OUT, "answer:12 km again", &resp_id, 1, NULL);
    expect_done(&a.c, 2, IDEVS_OK);
    /* Request 1's token: altered (one bit of the ciphertext), cut short, or with an answer naming request 0. */
    uint8_t bad[IDEVS_REQUEST_CORRELATION_LEN];
    memcpy(bad, corr[1], sizeof bad);
    bad[IDEVS_UUID_LEN + 40] ^= 1;
    seal(a.orc, TOPIC_RESP, "altered", &req[1].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 3, TOPIC_RESP, env, env_len, bad, sizeof bad);
    free(env);
    expect_publish(&a.c, 3, a.snk, TOPIC_OUT, "answer:altered", &resp_id, 1, NULL);
    expect_done(&a.c, 3, IDEVS_OK);
    seal(a.orc, TOPIC_RESP, "short", &req[1].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 4, TOPIC_RESP, env, env_len, corr[1], sizeof corr[1] - 1);
    free(env);
    expect_publish(&a.c, 4, a.snk, TOPIC_OUT, "answer:short", &resp_id, 1, NULL);
    expect_done(&a.c, 4, IDEVS_OK);
    seal(a.orc, TOPIC_RESP, "not named", &req[2].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 5, TOPIC_RESP, env, env_len, corr[1], sizeof corr[1]);
    free(env);
    expect_publish(&a.c, 5, a.snk, TOPIC_OUT, "answer:not named", &resp_id, 1, NULL);
    expect_done(&a.c, 5, IDEVS_OK);
    /* Then the real answer to request 1 is matched. */
    seal(a.orc, TOPIC_RESP, "home", &req[1].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 6, TOPIC_RESP, env, env_len, corr[1], sizeof corr[1]);
    free(env);
    prov[0] = resp_id;
    prov[1] = in_id[1];
    expect_publish(&a.c, 6, a.snk, TOPIC_OUT, "answer:home for and back?", prov, 2, NULL);
    expect_done(&a.c, 6, IDEVS_OK);
    asking_child_stop(&a);

    /* Another sealing key (another measurement's): the blob does not open, fresh keys, the token does not open. */
    uint8_t saved[32];
    memcpy(saved, sealing_key, sizeof saved);
    sealing_key[0] ^= 0xff;
    asking_child_start(&a);
    memcpy(sealing_key, saved, sizeof saved);
    seal(a.orc, TOPIC_RESP, "elsewhere", &req[0].message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 1, TOPIC_RESP, env, env_len, corr[0], sizeof corr[0]);
    free(env);
    expect_publish(&a.c, 1, a.snk, TOPIC_OUT, "answer:elsewhere", &resp_id, 1, NULL);
    expect_done(&a.c, 1, IDEVS_OK);
    asking_child_stop(&a);
    for (int i = 0; i < 3; i++)
        idevs_opened_clear(&req[i]);
}

/* Answers asking again: requests of 1 to 64 ids of provenance (the token keeps 63) and 0 to 256 bytes of state,
 * each with correlation data of the one length, so that its length shows neither. After a restart, a token with
 * 63 ids and one with the largest state open whole (the count is the sealed RequestState's); the same token one
 * byte longer, or as long as one id fewer would once have made it, matches nothing. */
static void test_request_state_one_size(void)
{
    for (size_t len = 0; len <= 65535; len++)
        if (idevs_request_correlation_len_ok(len) != (len == IDEVS_REQUEST_CORRELATION_LEN))
            CU_FAIL_FATAL("a request's correlation data has exactly one length");
    asking_child a;
    asking_child_start(&a);
    char full[9 + IDEVS_REQUEST_STATE_MAX + 1] = "ask-keep:", text[sizeof full] = "ask-keep:";
    memset(full + 9, 'a', IDEVS_REQUEST_STATE_MAX);
    full[sizeof full - 1] = '\0';
    idevs_msgid prov[IDEVS_PROVENANCE_MAX], in_id, resp_id;
    deliver_text(&a.c, a.src, 1, TOPIC_IN, TOPIC_IN, full, &in_id);
    prov[0] = in_id;
    idevs_opened first, req;
    expect_publish(&a.c, 1, a.orc, TOPIC_REQ, full + 9, prov, 1, &first);
    expect_done(&a.c, 1, IDEVS_OK);
    uint8_t first_corr[IDEVS_REQUEST_CORRELATION_LEN], corr[IDEVS_REQUEST_CORRELATION_LEN + 1];
    memcpy(first_corr, last_correlation, sizeof first_corr);
    const idevs_msgid *asked = &first.message_id;
    size_t n = 1;
    uint8_t *env = NULL;
    size_t env_len = 0;
    for (uint64_t hop = 2; hop <= IDEVS_PROVENANCE_MAX + 1; hop++) {
        size_t len = (size_t)((hop - 2) * 97) % (IDEVS_REQUEST_STATE_MAX + 1); /* from 0 */
        memset(text + 9, 'a' + (int)(hop % 26), len);
        text[9 + len] = '\0';
        seal(a.orc, TOPIC_RESP, text, asked, 1, &env, &env_len, &resp_id);
        deliver(&a.c, hop, TOPIC_RESP, env, env_len, asked);
        free(env);
        memmove(prov + 1, prov, (IDEVS_PROVENANCE_MAX - 1) * sizeof *prov);
        prov[0] = resp_id;
        n += n < IDEVS_PROVENANCE_MAX;
        if (hop > 2)
            idevs_opened_clear(&req);
        expect_publish(&a.c, hop, a.orc, TOPIC_REQ, text + 9, prov, n, &req);
        expect_done(&a.c, hop, IDEVS_OK);
        CU_ASSERT_EQUAL(last_correlation_len, sizeof first_corr);
        asked = &req.message_id;
    }
    memcpy(corr, last_correlation, IDEVS_REQUEST_CORRELATION_LEN);
    asking_child_stop(&a);

    /* A new run: only the token can match them. */
    asking_child_restart(&a);
    corr[IDEVS_REQUEST_CORRELATION_LEN] = 0;
    const size_t wrong[2] = {IDEVS_REQUEST_CORRELATION_LEN + 1, IDEVS_REQUEST_CORRELATION_LEN - 18};
    for (size_t i = 0; i < 2; i++) {
        seal(a.orc, TOPIC_RESP, "wrong length", &req.message_id, 1, &env, &env_len, &resp_id);
        deliver_correlated(&a.c, 1 + i, TOPIC_RESP, env, env_len, corr, wrong[i]);
        free(env);
        expect_publish(&a.c, 1 + i, a.snk, TOPIC_OUT, "answer:wrong length", &resp_id, 1, NULL);
        expect_done(&a.c, 1 + i, IDEVS_OK);
    }
    /* 63 ids from the token, after the answer's own. */
    seal(a.orc, TOPIC_RESP, "end", &req.message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 3, TOPIC_RESP, env, env_len, corr, IDEVS_REQUEST_CORRELATION_LEN);
    free(env);
    char want[sizeof full + 16];
    snprintf(want, sizeof want, "answer:end for %s", text + 9);
    memmove(prov + 1, prov, (IDEVS_PROVENANCE_MAX - 1) * sizeof *prov);
    prov[0] = resp_id;
    expect_publish(&a.c, 3, a.snk, TOPIC_OUT, want, prov, IDEVS_PROVENANCE_MAX, NULL);
    expect_done(&a.c, 3, IDEVS_OK);
    /* One id and the largest state. */
    seal(a.orc, TOPIC_RESP, "first", &first.message_id, 1, &env, &env_len, &resp_id);
    deliver_correlated(&a.c, 4, TOPIC_RESP, env, env_len, first_corr, sizeof first_corr);
    free(env);
    snprintf(want, sizeof want, "answer:first for %s", full + 9);
    idevs_msgid two[2] = {resp_id, in_id};
    expect_publish(&a.c, 4, a.snk, TOPIC_OUT, want, two, 2, NULL);
    expect_done(&a.c, 4, IDEVS_OK);
    asking_child_stop(&a);
    idevs_opened_clear(&first);
    idevs_opened_clear(&req);
}

/* An input run again by a new compartment (the first died before the launcher recorded it done) gets outputs with
 * the same message ids, so that their receivers handle them once; another input's differ. */
static void test_output_ids_follow_their_input(void)
{
    child c;
    idevs_msgid first_ids[2], in_id;
    uint8_t *env = NULL;
    size_t env_len = 0;
    uint8_t blob[sizeof c.sealed];
    size_t blob_len = 0;
    for (int run = 0; run < 2; run++) {
        if (run == 0) {
            CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
            memcpy(blob, c.sealed, c.sealed_len);
            blob_len = c.sealed_len;
        } else { /* the same keys, from the sealed blob: the input still opens */
            memset(&c, 0, sizeof c);
            make_descriptor(&c, "{}");
            make_measurement(&c, "echo");
            spawn(&c, "echo");
            CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, blob, blob_len) && expect_ready(&c));
            CU_ASSERT_TRUE(c.restored);
        }
        idevs_cert_policy *p1, *p2;
        idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false);
        if (run == 0)
            seal(src, TOPIC_IN, "same input", NULL, 0, &env, &env_len, &in_id);
        deliver(&c, 1, TOPIC_IN, env, env_len, NULL);
        idevs_opened o;
        expect_publish(&c, 1, snk, TOPIC_OUT, "same input", &in_id, 1, &o);
        expect_done(&c, 1, IDEVS_OK);
        if (run == 0)
            first_ids[0] = o.message_id;
        else
            CU_ASSERT_EQUAL(memcmp(o.message_id.b, first_ids[0].b, IDEVS_UUID_LEN), 0);
        idevs_opened_clear(&o);
        idevs_msgid other_id;
        deliver_text(&c, src, 2, TOPIC_IN, TOPIC_IN, "another input", &other_id);
        expect_publish(&c, 2, snk, TOPIC_OUT, "another input", &other_id, 1, &o);
        expect_done(&c, 2, IDEVS_OK);
        CU_ASSERT_NOT_EQUAL(memcmp(o.message_id.b, first_ids[0].b, IDEVS_UUID_LEN), 0);
        if (run == 0)
            first_ids[1] = o.message_id;
        else
            CU_ASSERT_NOT_EQUAL(memcmp(o.message_id.b, first_ids[1].b, IDEVS_UUID_LEN), 0); /* a new input */
        idevs_opened_clear(&o);
        CU_ASSERT_EQUAL(shutdown_child(&c), 0);
        party_free(src, p1);
        party_free(snk, p2);
    }
    free(env);
}

/* ---- outstanding requests: back-pressure ---- */

#define HOLD_INPUTS 10
#define HOLD_ANSWER_ID 100 /* delivery ids of the answers: 101.. */

typedef struct hold_state {
    idevs_envelope_ctx *src, *snk, *orc;
    uint8_t *env[HOLD_INPUTS];
    size_t env_len[HOLD_INPUTS];
    idevs_msgid in_id[HOLD_INPUTS], req_id[HOLD_INPUTS], resp_id[HOLD_INPUTS];
    bool requested[HOLD_INPUTS], waiting[HOLD_INPUTS];
    int done[HOLD_INPUTS];
    int held, resumed, answers;
} hold_state;

/* Reads frames as the launcher does until `ends` Done or Held frames came; checks every Publish. */
static void hold_read(child *c, hold_state *s, int ends)
{
    while (ends > 0) {
        Idevs__Bridge__V1__Frame *f = NULL;
        CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&c->ch, &f, FRAME_WAIT_MS), IDEVS_OK);
        if (took_receipt(c, f))
            continue;
        switch (f->body_case) {
        case IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH: {
            const Idevs__Bridge__V1__Publish *p = f->publish;
            bool request = strcmp(p->topic, TOPIC_REQ) == 0;
            size_t i = request ? (size_t)p->delivery_id - 1 : (size_t)p->delivery_id - HOLD_ANSWER_ID - 1;
            CU_ASSERT_FATAL(i < HOLD_INPUTS);
            idevs_opened op;
            memset(&op, 0, sizeof op);
            CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(request ? s->orc : s->snk, p->topic, p->envelope.data,
                                                      p->envelope.len, &op),
                                  IDEVS_OK);
            char want[32];
            snprintf(want, sizeof want, request ? "q%zu" : "answer:a%zu", i);
            CU_ASSERT_EQUAL(op.payload_len, strlen(want));
            CU_ASSERT_NSTRING_EQUAL(op.payload, want, strlen(want));
            if (request) {
                /* Each input asks once, and only when it runs. */
                CU_ASSERT_FALSE(s->requested[i]);
                CU_ASSERT_FALSE(s->waiting[i]);
                CU_ASSERT_EQUAL_FATAL(op.provenance_count, 1);
                CU_ASSERT_EQUAL(memcmp(op.provenance[0].b, s->in_id[i].b, 16), 0);
                s->req_id[i] = op.message_id;
                s->requested[i] = true;
            } else {
                /* The answer reached its request: provenance [the answer, the input that asked]. */
                CU_ASSERT_EQUAL_FATAL(op.provenance_count, 2);
                CU_ASSERT_EQUAL(memcmp(op.provenance[0].b, s->resp_id[i].b, 16), 0);
                CU_ASSERT_EQUAL(memcmp(op.provenance[1].b, s->in_id[i].b, 16), 0);
                s->answers++;
            }
            idevs_opened_clear(&op);
            break;
        }
        case IDEVS__BRIDGE__V1__FRAME__BODY_DONE:
            CU_ASSERT_EQUAL(f->done->status, IDEVS_OK);
            if (f->done->delivery_id >= 1 && f->done->delivery_id <= HOLD_INPUTS)
                s->done[f->done->delivery_id - 1]++;
            ends--;
            break;
        case IDEVS__BRIDGE__V1__FRAME__BODY_HELD: {
            size_t i = (size_t)f->held->delivery_id - 1;
            CU_ASSERT_FATAL(i < HOLD_INPUTS);
            CU_ASSERT_EQUAL(s->done[i], 0);
            s->waiting[i] = true;
            s->held++;
            ends--;
            break;
        }
        case IDEVS__BRIDGE__V1__FRAME__BODY_RESUMED:
            s->resumed++;
            break;
        default:
            if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_FATAL)
                fprintf(stderr, "\n    unexpected Fatal: %s\n", f->fatal->reason);
            CU_FAIL_FATAL("an unexpected frame");
        }
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
}

/* limits.max_outstanding_requests 4; ten inputs each asking, no answer yet: four run, the fifth and the rest are
 * held (not run, not opened). Each answer reaches its request (provenance), frees room, the compartment
 * resumes, and the held inputs sent again run once each, in order. */
static void test_outstanding_requests_hold_inputs(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start_limited(&c, "echo", ", \"max_outstanding_requests\": 4"));
    static hold_state s;
    memset(&s, 0, sizeof s);
    idevs_cert_policy *p1, *p2, *p3;
    s.src = service_ctx(&c, source, &p1, false);
    s.snk = service_ctx(&c, sink, &p2, false);
    s.orc = service_ctx(&c, oracle, &p3, false);
    for (size_t i = 0; i < HOLD_INPUTS; i++) {
        char text[32];
        snprintf(text, sizeof text, "ask:q%zu", i);
        seal(s.src, TOPIC_IN, text, NULL, 0, &s.env[i], &s.env_len[i], &s.in_id[i]);
        deliver(&c, i + 1, TOPIC_IN, s.env[i], s.env_len[i], NULL);
    }
    hold_read(&c, &s, HOLD_INPUTS);
    for (size_t i = 0; i < HOLD_INPUTS; i++) {
        CU_ASSERT_EQUAL(s.done[i], i < 4 ? 1 : 0);
        CU_ASSERT_EQUAL(s.requested[i], i < 4);
        CU_ASSERT_EQUAL(s.waiting[i], i >= 4); /* the fifth input waits, and every later one */
    }
    CU_ASSERT_EQUAL(s.held, HOLD_INPUTS - 4);

    /* The oracle answers one request at a time, oldest first. */
    for (size_t j = 0; j < HOLD_INPUTS; j++) {
        CU_ASSERT_TRUE_FATAL(s.requested[j]);
        char text[32];
        snprintf(text, sizeof text, "a%zu", j);
        uint8_t *env = NULL;
        size_t env_len = 0;
        seal(s.orc, TOPIC_RESP, text, &s.req_id[j], 1, &env, &env_len, &s.resp_id[j]);
        deliver(&c, HOLD_ANSWER_ID + 1 + j, TOPIC_RESP, env, env_len, &s.req_id[j]);
        free(env);
        hold_read(&c, &s, 1);
        CU_ASSERT_EQUAL(s.answers, (int)j + 1);
        int waiting = 0;
        for (size_t i = 0; i < HOLD_INPUTS; i++)
            waiting += s.waiting[i];
        if (waiting == 0)
            continue;
        /* Room again: Resumed, then the launcher sends the held inputs again, in order. */
        int before = s.resumed;
        Idevs__Bridge__V1__Frame *f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_RESUMED);
        CU_ASSERT_PTR_NOT_NULL_FATAL(f);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        CU_ASSERT_EQUAL(s.resumed, before);
        for (size_t i = 0; i < HOLD_INPUTS; i++)
            if (s.waiting[i]) {
                s.waiting[i] = false;
                deliver(&c, i + 1, TOPIC_IN, s.env[i], s.env_len[i], NULL);
            }
        hold_read(&c, &s, waiting);
        /* Exactly one ran (one slot freed): the oldest held. */
        CU_ASSERT_TRUE(s.requested[j + 4]);
        CU_ASSERT_EQUAL(s.done[j + 4], 1);
    }
    for (size_t i = 0; i < HOLD_INPUTS; i++) {
        CU_ASSERT_EQUAL(s.done[i], 1); /* every input processed exactly once */
        CU_ASSERT_TRUE(s.requested[i]);
        CU_ASSERT_FALSE(s.waiting[i]);
        free(s.env[i]);
    }
    CU_ASSERT_EQUAL(s.answers, HOLD_INPUTS);
    CU_ASSERT_EQUAL(s.resumed, 0);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    idevs_envelope_ctx_free(s.src);
    idevs_envelope_ctx_free(s.snk);
    idevs_envelope_ctx_free(s.orc);
    idevs_cert_policy_free(p1);
    idevs_cert_policy_free(p2);
    idevs_cert_policy_free(p3);
}

/* A logic that requests without a response handler: its answers could never be matched, so a request it sent
 * would hold its slot for good. idevs_request() refuses it (unknown_request) and nothing leaves; with
 * max_outstanding_requests 2, four such inputs in a row all run: no slot was taken, no input is held. */
static void test_request_without_response_handler(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start_limited(&c, "echo_no_response", ", \"max_outstanding_requests\": 2"));
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false);
    char refused[48];
    snprintf(refused, sizeof refused, "request refused: %d", (int)IDEVS_ERR_UNKNOWN_REQUEST);
    for (uint64_t i = 1; i <= 4; i++) {
        idevs_msgid in_id;
        deliver_text(&c, src, i, TOPIC_IN, TOPIC_IN, "ask:anyone?", &in_id);
        expect_publish(&c, i, snk, TOPIC_OUT, refused, &in_id, 1, NULL);
        expect_done(&c, i, IDEVS_OK);
    }
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
}

static void test_refusals(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    idevs_cert_policy *p1, *p2, *p3, *p4;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false),
                       *orc = service_ctx(&c, oracle, &p3, false), *out = service_ctx(&c, outsider, &p4, false);
    idevs_msgid id;
    /* A service the deployment does not declare. */
    deliver_text(&c, out, 1, TOPIC_IN, TOPIC_IN, "from outside", &id);
    expect_done(&c, 1, IDEVS_ERR_SENDER_NOT_ALLOWED);
    /* A declared service, on an input that is not from it. */
    deliver_text(&c, orc, 2, TOPIC_IN, TOPIC_IN, "not mine", &id);
    expect_done(&c, 2, IDEVS_ERR_SENDER_NOT_ALLOWED);
    /* A topic the deployment does not declare as an input. */
    deliver_text(&c, src, 3, "idevs/test/elsewhere", "idevs/test/elsewhere", "lost", &id);
    expect_done(&c, 3, IDEVS_ERR_UNKNOWN_INPUT);
    deliver_text(&c, src, 4, TOPIC_OUT, TOPIC_OUT, "loop", &id);
    expect_done(&c, 4, IDEVS_ERR_UNKNOWN_INPUT);
    /* Sealed for the input topic, delivered on another declared topic: the topic is authenticated. */
    deliver_text(&c, orc, 5, TOPIC_RESP, TOPIC_IN, "moved", &id);
    expect_done(&c, 5, IDEVS_ERR_DECRYPT);
    /* Garbage instead of an envelope. */
    static const uint8_t junk[] = "not an envelope";
    deliver(&c, 6, TOPIC_IN, junk, sizeof junk, NULL);
    expect_done(&c, 6, IDEVS_ERR_MALFORMED);
    /* The same envelope twice. */
    uint8_t *env = NULL;
    size_t env_len = 0;
    seal(src, TOPIC_IN, "once", NULL, 0, &env, &env_len, &id);
    deliver(&c, 7, TOPIC_IN, env, env_len, NULL);
    expect_publish(&c, 7, snk, TOPIC_OUT, "once", &id, 1, NULL);
    expect_done(&c, 7, IDEVS_OK);
    deliver(&c, 8, TOPIC_IN, env, env_len, NULL);
    expect_done(&c, 8, IDEVS_ERR_REPLAY);
    free(env);
    /* The logic emits to an output the deployment does not declare: refused, nothing leaves. */
    deliver_text(&c, src, 9, TOPIC_IN, TOPIC_IN, "undeclared", &id);
    expect_done(&c, 9, IDEVS_ERR_LOGIC);
    /* After all that, the compartment still serves. */
    deliver_text(&c, src, 10, TOPIC_IN, TOPIC_IN, "still here", &id);
    expect_publish(&c, 10, snk, TOPIC_OUT, "still here", &id, 1, NULL);
    expect_done(&c, 10, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    idevs_envelope_ctx_free(src);
    idevs_envelope_ctx_free(snk);
    idevs_envelope_ctx_free(orc);
    idevs_envelope_ctx_free(out);
    idevs_cert_policy_free(p1);
    idevs_cert_policy_free(p2);
    idevs_cert_policy_free(p3);
    idevs_cert_policy_free(p4);
}

static void test_transaction_dropped_on_error(void)
{
    echo_child e;
    echo_child_start(&e);
    idevs_msgid id;
    /* The handler emits (the first envelope to the sink, with the chain) and then fails: nothing leaves. */
    deliver_text(&e.c, e.src, 1, TOPIC_IN, TOPIC_IN, "fail", &id);
    expect_done(&e.c, 1, IDEVS_ERR_LOGIC);
    /* The next output still reaches a sink that never saw the compartment's certificate. */
    deliver_text(&e.c, e.src, 2, TOPIC_IN, TOPIC_IN, "after", &id);
    expect_publish(&e.c, 2, e.snk, TOPIC_OUT, "after", &id, 1, NULL);
    expect_done(&e.c, 2, IDEVS_OK);
    echo_child_stop(&e);
}

/* idevs_refuse(): a declared code travels in Done as its index + 1, with status logic and nothing published;
 * an undeclared one is refused by the API (the handler returns invalid_arg, a failure: logic, no code). */
static void test_refusal_codes(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    idevs_cert_policy *p;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p, false);
    idevs_msgid id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "refuse:not_a_sale", &id);
    expect_done_refusal(&c, 1, IDEVS_ERR_LOGIC, 1);
    deliver_text(&c, src, 2, TOPIC_IN, TOPIC_IN, "refuse:amount_out_of_range", &id);
    expect_done_refusal(&c, 2, IDEVS_ERR_LOGIC, 2);
    deliver_text(&c, src, 3, TOPIC_IN, TOPIC_IN, "refuse:customer Ana Lima", &id);
    expect_done_refusal(&c, 3, IDEVS_ERR_LOGIC, 0);
    deliver_text(&c, src, 4, TOPIC_IN, TOPIC_IN, "refuse:", &id);
    expect_done_refusal(&c, 4, IDEVS_ERR_LOGIC, 0);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p);
}

static void test_timer(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", "{\"timer_ms\":20}"));
    idevs_cert_policy *p;
    idevs_envelope_ctx *snk = service_ctx(&c, sink, &p, false);
    expect_publish(&c, 0, snk, TOPIC_OUT, "tick 1", NULL, 0, NULL);
    expect_publish(&c, 0, snk, TOPIC_OUT, "tick 2", NULL, 0, NULL);
    /* The timer starts after setup(), itself after the fork: two periods at least. */
    CU_ASSERT(now_ms() - c.started_ms >= 40);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    idevs_envelope_ctx_free(snk);
    idevs_cert_policy_free(p);
}

/* ---- the sandbox ---- */

static void expect_sandbox_kill(child *c, const char *syscall_name)
{
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_FATAL);
    CU_ASSERT_PTR_NOT_NULL(f);
    if (f != NULL) {
        char want[64];
        snprintf(want, sizeof want, "system call %s (", syscall_name);
        CU_ASSERT_EQUAL(f->fatal->status, IDEVS_ERR_SANDBOX_VIOLATION);
        CU_ASSERT_PTR_NOT_NULL(strstr(f->fatal->reason, want));
        CU_ASSERT_PTR_NOT_NULL(strstr(f->fatal->reason, "outside the sandbox allowlist"));
        if (strstr(f->fatal->reason, want) == NULL)
            fprintf(stderr, "\n    Fatal reason: %s (expected %s)\n", f->fatal->reason, syscall_name);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    CU_ASSERT_EQUAL(exit_code(reap(c, EXIT_WAIT_MS)), EXIT_SANDBOX);
}

static void hostile(const char *logic, const char *syscall_name)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, logic, NULL));
    idevs_cert_policy *p;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p, false);
    idevs_msgid id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "trigger", &id);
    /* Killed before its handler returns: no Publish, no Done, the report. */
    expect_sandbox_kill(&c, syscall_name);
    party_free(src, p);
}

/* ---- hostile logics against the split (tests/logic/hostile_link.c) ---- */

#define SECRET "customer Ana Lima, +44 7700 900123"

/* True when the frame, encoded, holds the secret's bytes. */
static bool frame_leaks(const Idevs__Bridge__V1__Frame *f)
{
    size_t n = idevs__bridge__v1__frame__get_packed_size(f);
    uint8_t *buf = malloc(n + 1);
    CU_ASSERT_FATAL(buf != NULL);
    idevs__bridge__v1__frame__pack(f, buf);
    bool leak = memmem(buf, n, SECRET, strlen(SECRET)) != NULL || memmem(buf, n, "+44 7700", 8) != NULL;
    free(buf);
    return leak;
}

/* The key holder's child, the logic process (0 if none). */
static pid_t logic_process_of(pid_t key_holder)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)key_holder, (int)key_holder);
    FILE *f = fopen(path, "r");
    int pid = 0;
    if (f != NULL) {
        if (fscanf(f, "%d", &pid) != 1)
            pid = 0;
        fclose(f);
    }
    return (pid_t)pid;
}

/* Whether a process is gone (or a zombie nobody reaped yet): waits up to timeout_ms. */
static bool gone(pid_t pid, int timeout_ms)
{
    for (int waited = 0; waited <= timeout_ms; waited += 10) {
        char path[64], state = '?';
        snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            return true;
        int n = fscanf(f, "%*d (%*[^)]) %c", &state);
        fclose(f);
        if (n == 1 && (state == 'Z' || state == 'X'))
            return true;
        usleep(10 * 1000);
    }
    return false;
}

/* Delivers `events` events holding SECRET to the hostile logic and reads everything the compartment sends until
 * it ends, or until the Done of the last event. No frame may hold the secret. With fatal_has, the compartment
 * must end with a Fatal that says so; otherwise the last event must be Done with done_status, nothing published. */
static void hostile_link(const char *logic, int events, const char *fatal_has, idevs_err done_status)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, logic, NULL));
    pid_t logic_pid = logic_process_of(c.pid);
    CU_ASSERT(logic_pid > 0);
    idevs_cert_policy *p;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p, false);
    idevs_msgid id;
    for (int i = 1; i <= events; i++)
        deliver_text(&c, src, (uint64_t)i, TOPIC_IN, TOPIC_IN, SECRET, &id);
    bool fatal_seen = false, done_seen = false, leaked = false;
    size_t published = 0;
    for (;;) {
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&c.ch, &f, FRAME_WAIT_MS);
        if (err != IDEVS_OK)
            break; /* closed: it ended */
        leaked |= frame_leaks(f);
        if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH && strstr(f->publish->topic, "/receipt/to/") == NULL)
            published++; /* a receipt is the key holder's, not the logic's */
        if (f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_FATAL) {
            fatal_seen = fatal_has != NULL && strstr(f->fatal->reason, fatal_has) != NULL;
            if (!fatal_seen)
                fprintf(stderr, "\n    %s: Fatal: %s (expected '%s')\n", logic, f->fatal->reason,
                        fatal_has != NULL ? fatal_has : "none");
        }
        bool last = f->body_case == IDEVS__BRIDGE__V1__FRAME__BODY_DONE && f->done->delivery_id == (uint64_t)events;
        if (last) {
            done_seen = f->done->status == (uint32_t)done_status;
            if (!done_seen)
                fprintf(stderr, "\n    %s: Done %s (expected %s)\n", logic, idevs_err_name(f->done->status),
                        idevs_err_name(done_status));
        }
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
        if (last)
            break;
    }
    CU_ASSERT_FALSE(leaked);
    if (fatal_has != NULL) {
        CU_ASSERT_TRUE(fatal_seen);
        CU_ASSERT_NOT_EQUAL(reap(&c, EXIT_WAIT_MS), -1);
    } else {
        CU_ASSERT_TRUE(done_seen);
        CU_ASSERT_EQUAL(published, 0);
        CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    }
    /* The logic process never outlives the key holder, whatever it was doing (PR_SET_PDEATHSIG). */
    if (logic_pid > 0)
        CU_ASSERT_TRUE(gone(logic_pid, 5000));
    party_free(src, p);
}

/* One test each: the hostile logic, then hostile_link's other arguments. */
#define HOSTILE_LINK(test, logic, events, fatal_has, done_status) \
    static void test(void) { hostile_link(logic, events, fatal_has, done_status); }
HOSTILE_LINK(test_link_raw_publish, "hostile_raw_publish", 1, "a frame the logic process may not send", IDEVS_OK)
HOSTILE_LINK(test_link_raw_fds, "hostile_raw_fds", 1, "system call write (1) outside the sandbox allowlist (in the logic process)", IDEVS_OK)
HOSTILE_LINK(test_link_vmread, "hostile_vmread", 1, "system call process_vm_readv (", IDEVS_OK)
HOSTILE_LINK(test_link_procmem, "hostile_procmem", 1, "system call openat (", IDEVS_OK)
HOSTILE_LINK(test_link_ptrace_attach, "hostile_ptrace_attach", 1, "system call ptrace (", IDEVS_OK)
HOSTILE_LINK(test_link_undeclared_raw, "hostile_undeclared_raw", 1, "an emit to an output the descriptor does not declare", IDEVS_OK)
HOSTILE_LINK(test_link_late_emit, "hostile_late_emit", 2, "a frame that answers no current event", IDEVS_OK)
HOSTILE_LINK(test_link_flood, "hostile_flood", 1, NULL, IDEVS_ERR_EMIT_LIMIT)
HOSTILE_LINK(test_link_flood_raw, "hostile_flood_raw", 1, NULL, IDEVS_ERR_EMIT_LIMIT)
HOSTILE_LINK(test_link_huge, "hostile_huge", 1, NULL, IDEVS_ERR_LOGIC)
HOSTILE_LINK(test_link_huge_raw, "hostile_huge_raw", 1, "the logic process sent a bad frame", IDEVS_OK)
HOSTILE_LINK(test_link_refusal_raw, "hostile_refusal_raw", 1, "a refusal code the descriptor does not declare", IDEVS_OK)
HOSTILE_LINK(test_link_request_raw, "hostile_request_raw", 1, "a request the logic registered no response handler for", IDEVS_OK)
HOSTILE_LINK(test_link_spin, "hostile_spin", 1, "the logic process did not answer within 2000 ms", IDEVS_OK)

static void test_hostile_open(void) { hostile("hostile_open", "openat"); }
static void test_hostile_socket(void) { hostile("hostile_socket", "socket"); }
static void test_hostile_execve(void) { hostile("hostile_execve", "execve"); }
static void test_hostile_fork(void) { hostile("hostile_fork", "clone"); }
static void test_hostile_ptrace(void) { hostile("hostile_ptrace", "ptrace"); }
static void test_hostile_write(void) { hostile("hostile_write", "write"); }

static void test_hostile_constructor_socket(void)
{
    child c;
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "hostile_ctor_socket");
    spawn(&c, "hostile_ctor_socket");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, NULL, 0));
    /* The constructor runs inside dlopen(), under the first filter: stopped before Ready. */
    expect_sandbox_kill(&c, "socket");
}

static bool kernel_has_landlock(void)
{
    return syscall(SYS_landlock_create_ruleset, NULL, 0, 1u) >= 1;
}

static void test_hostile_constructor_open(void)
{
    child c;
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "hostile_ctor_open");
    spawn(&c, "hostile_ctor_open");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, NULL, 0));
    if (kernel_has_landlock()) {
        /* Landlock refused the constructor's open(): its setup() saw that and went on. */
        CU_ASSERT_TRUE(expect_ready(&c));
        CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    } else {
        /* Without Landlock the first filter lets the loader's read-only opens through: documented. */
        Idevs__Bridge__V1__Frame *f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_FATAL);
        if (f != NULL)
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
        CU_ASSERT_EQUAL(exit_code(reap(&c, EXIT_WAIT_MS)), EXIT_FATAL);
    }
}

static void test_logic_in_memfd(void)
{
    logic_in_memfd = true;
    child c;
    CU_ASSERT_TRUE(start(&c, "echo", NULL));
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false);
    idevs_msgid id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "from a memfd", &id);
    expect_publish(&c, 1, snk, TOPIC_OUT, "from a memfd", &id, 1, NULL);
    expect_done(&c, 1, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
    /* The Landlock ruleset then has no rule at all: the constructor still cannot open a file. */
    test_hostile_constructor_open();
    test_hostile_constructor_socket();
    logic_in_memfd = false;
}

/* ---- identity across restarts ---- */

static void test_restart_restores_keys(void)
{
    child c;
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "echo");
    spawn(&c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, NULL, 0) && expect_ready(&c));
    CU_ASSERT_FALSE(c.restored);
    uint8_t sign1[32], kex1[32], blob[256];
    size_t blob_len = c.sealed_len;
    memcpy(sign1, c.sign_pub, 32);
    memcpy(kex1, c.kex_pub, 32);
    memcpy(blob, c.sealed, blob_len);
    CU_ASSERT_EQUAL(blob_len, 93);
    CU_ASSERT_EQUAL(blob[0], 1);
    /* A service seals an envelope to this incarnation; the compartment crashes before it is delivered. */
    idevs_cert_policy *p1;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false);
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_msgid queued;
    seal(src, TOPIC_IN, "queued before the crash", NULL, 0, &env, &env_len, &queued);
    kill(c.pid, SIGKILL);
    CU_ASSERT_EQUAL(exit_code(reap(&c, EXIT_WAIT_MS)), 1000 + SIGKILL);

    /* Same sealing key, same measurement: the same keys, and the queued envelope opens. */
    spawn(&c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, blob, blob_len) && expect_ready(&c));
    CU_ASSERT_TRUE(c.restored);
    CU_ASSERT_EQUAL(memcmp(c.sign_pub, sign1, 32), 0);
    CU_ASSERT_EQUAL(memcmp(c.kex_pub, kex1, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(c.sealed, blob, blob_len), 0); /* sealed again, with a fresh nonce */
    idevs_cert_policy *p2;
    idevs_envelope_ctx *snk = service_ctx(&c, sink, &p2, false);
    deliver(&c, 1, TOPIC_IN, env, env_len, NULL);
    expect_publish(&c, 1, snk, TOPIC_OUT, "queued before the crash", &queued, 1, NULL);
    expect_done(&c, 1, IDEVS_OK);
    free(env);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);

    /* Another sealing key: fresh keys. */
    uint8_t other_key[32];
    memcpy(other_key, sealing_key, 32);
    other_key[0] ^= 1;
    spawn(&c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&c, other_key, blob, blob_len) && expect_ready(&c));
    CU_ASSERT_FALSE(c.restored);
    CU_ASSERT_NOT_EQUAL(memcmp(c.sign_pub, sign1, 32), 0);
    CU_ASSERT_NOT_EQUAL(memcmp(c.kex_pub, kex1, 32), 0);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);

    /* Another measurement (changed logic), even with the same sealing key: fresh keys. */
    make_measurement(&c, "echo, changed");
    spawn(&c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, blob, blob_len) && expect_ready(&c));
    CU_ASSERT_FALSE(c.restored);
    CU_ASSERT_NOT_EQUAL(memcmp(c.sign_pub, sign1, 32), 0);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);

    /* A damaged blob: fresh keys, no crash. */
    make_measurement(&c, "echo");
    blob[40] ^= 0x80;
    spawn(&c, "echo");
    CU_ASSERT_TRUE_FATAL(certify(&c, sealing_key, blob, blob_len) && expect_ready(&c));
    CU_ASSERT_FALSE(c.restored);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);

    party_free(src, p1);
    party_free(snk, p2);
}

/* ---- what the launcher may get wrong ---- */

static void expect_fatal(child *c, idevs_err status, const char *reason_part)
{
    Idevs__Bridge__V1__Frame *f = expect(c, IDEVS__BRIDGE__V1__FRAME__BODY_FATAL);
    if (f != NULL) {
        CU_ASSERT_EQUAL(f->fatal->status, status);
        CU_ASSERT_PTR_NOT_NULL(strstr(f->fatal->reason, reason_part));
        if (strstr(f->fatal->reason, reason_part) == NULL)
            fprintf(stderr, "\n    Fatal reason: %s\n", f->fatal->reason);
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    CU_ASSERT_EQUAL(exit_code(reap(c, EXIT_WAIT_MS)), EXIT_FATAL);
}

static void test_init_checks(void)
{
    child c;
    /* A descriptor that does not parse: the reason names the field. */
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "echo");
    char *q = strstr(c.descriptor, "\"qos\": 1");
    CU_ASSERT_PTR_NOT_NULL_FATAL(q);
    q[7] = '7';
    spawn(&c, "echo");
    send_init(&c, sealing_key, NULL, 0);
    expect_fatal(&c, IDEVS_ERR_CONFIG, "outputs[0].qos");

    /* An operator CA other than the one the descriptor pins. */
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "echo");
    char *pin = strstr(c.descriptor, "operator_ca_sha256\": \"");
    CU_ASSERT_PTR_NOT_NULL_FATAL(pin);
    pin += strlen("operator_ca_sha256\": \"");
    pin[0] = pin[0] == '0' ? '1' : '0';
    CU_ASSERT_FATAL(idevs_sha256(c.descriptor, c.descriptor_len, c.digest) == IDEVS_OK);
    spawn(&c, "echo");
    send_init(&c, sealing_key, NULL, 0);
    expect_fatal(&c, IDEVS_ERR_CONFIG, "operator_ca_sha256");

    /* A certificate for other keys than the ones the compartment asked for. */
    memset(&c, 0, sizeof c);
    make_descriptor(&c, "{}");
    make_measurement(&c, "echo");
    spawn(&c, "echo");
    send_init(&c, sealing_key, NULL, 0);
    Idevs__Bridge__V1__Frame *f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFY_REQUEST);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    idevs_identity *impostor = fixture_compartment(&pki, "echo-test", &program, c.measurement, c.digest, 3600, 0);
    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    size_t n = fixture_chain(impostor, der, len);
    ProtobufCBinaryData chain[IDEVS_CHAIN_MAX];
    for (size_t i = 0; i < n; i++) {
        chain[i].data = (uint8_t *)der[i];
        chain[i].len = len[i];
    }
    Idevs__Bridge__V1__Certified cert = IDEVS__BRIDGE__V1__CERTIFIED__INIT;
    cert.n_chain = n;
    cert.chain = chain;
    Idevs__Bridge__V1__Frame cf = IDEVS__BRIDGE__V1__FRAME__INIT;
    cf.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_CERTIFIED;
    cf.certified = &cert;
    send_frame(&c, &cf);
    expect_fatal(&c, IDEVS_ERR_INVALID_ARG, "Certified");
    idevs_identity_free(impostor);
}

/* An echo_child of instance `instance` of a descriptor with `instances` (process.instances). */
static void echo_instance_start(echo_child *e, const char *config, uint32_t instance, const char *instances)
{
    char extra[64];
    snprintf(extra, sizeof extra, ", \"instances\": %s", instances);
    process_extra = extra;
    init_instance = instance;
    bool started = start(&e->c, "echo", config);
    process_extra = "";
    init_instance = 0;
    CU_ASSERT_TRUE_FATAL(started);
    e->src = service_ctx(&e->c, source, &e->p1, false);
    e->snk = service_ctx(&e->c, sink, &e->p2, true);
}

/* Instance 3 of 4 seals under instance 3: its clear header says so, and the sink opens it. */
static void test_instance_seals(void)
{
    echo_child e;
    echo_instance_start(&e, "{}", 3, "4");
    idevs_msgid in_id;
    deliver_text(&e.c, e.src, 1, TOPIC_IN, TOPIC_IN, "from instance 3", &in_id);
    Idevs__Bridge__V1__Frame *f = expect(&e.c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    const ProtobufCBinaryData *env = &f->publish->envelope;
    idevs_envelope_header h;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_peek(env->data, env->len, &h), IDEVS_OK);
    CU_ASSERT_EQUAL(h.instance, 3);
    CU_ASSERT_TRUE(idevs_uuid_equal(&h.sender, &program));
    idevs_opened op;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(e.snk, f->publish->topic, env->data, env->len, &op), IDEVS_OK);
    CU_ASSERT_EQUAL(op.instance, 3);
    CU_ASSERT_EQUAL(op.payload_len, strlen("from instance 3"));
    idevs_opened_clear(&op);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    expect_done(&e.c, 1, IDEVS_OK);
    echo_child_stop(&e);
}

/* Init.instance must be below process.instances: 4 of 4, or 1 of the default 1, is refused at Init. */
static void test_instance_out_of_range(void)
{
    const char *instances[] = {"4", "1"};
    const uint32_t instance[] = {4, 1};
    for (size_t i = 0; i < 2; i++) {
        child c;
        memset(&c, 0, sizeof c);
        char extra[64];
        snprintf(extra, sizeof extra, ", \"instances\": %s", instances[i]);
        process_extra = extra;
        make_descriptor(&c, "{}");
        process_extra = "";
        make_measurement(&c, "echo");
        spawn(&c, "echo");
        init_instance = instance[i];
        send_init(&c, sealing_key, NULL, 0);
        init_instance = 0;
        expect_fatal(&c, IDEVS_ERR_CONFIG, "Init.instance");
    }
}

/* The logic's timer runs on instance 0 only: instance 1's first output is its input's, however long it waited. */
static void test_timer_instance_0_only(void)
{
    echo_child e;
    echo_instance_start(&e, "{\"timer_ms\":20}", 1, "2");
    struct timespec ts = {0, 200 * 1000 * 1000}; /* ten periods */
    nanosleep(&ts, NULL);
    idevs_msgid in_id;
    deliver_text(&e.c, e.src, 1, TOPIC_IN, TOPIC_IN, "no tick before me", &in_id);
    expect_publish(&e.c, 1, e.snk, TOPIC_OUT, "no tick before me", &in_id, 1, NULL);
    expect_done(&e.c, 1, IDEVS_OK);
    echo_child_stop(&e);
}

/* Writes raw bytes on the launcher's end of the channel. */
static void write_raw(child *c, const void *data, size_t len)
{
    CU_ASSERT_EQUAL((size_t)write(c->ch.fd, data, len), len);
}

static void test_bad_frames_before_init(void)
{
    child c;
    /* garbage: a length, then bytes that are no protobuf Frame */
    memset(&c, 0, sizeof c);
    spawn(&c, "echo");
    static const uint8_t garbage[] = {0, 0, 0, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    write_raw(&c, garbage, sizeof garbage);
    expect_fatal(&c, IDEVS_ERR_FRAME, "Init");

    /* oversized: refused from the header alone, nothing is allocated for it */
    memset(&c, 0, sizeof c);
    spawn(&c, "echo");
    static const uint8_t huge[] = {0x7f, 0xff, 0xff, 0xff, 1, 2, 3};
    write_raw(&c, huge, sizeof huge);
    expect_fatal(&c, IDEVS_ERR_FRAME, "Init");

    /* empty frame */
    memset(&c, 0, sizeof c);
    spawn(&c, "echo");
    static const uint8_t empty[] = {0, 0, 0, 0};
    write_raw(&c, empty, sizeof empty);
    expect_fatal(&c, IDEVS_ERR_FRAME, "Init");

    /* truncated, then the launcher goes away */
    memset(&c, 0, sizeof c);
    spawn(&c, "echo");
    static const uint8_t truncated[] = {0, 0, 0, 100, 0x0a, 0x05};
    write_raw(&c, truncated, sizeof truncated);
    shutdown(c.ch.fd, SHUT_WR);
    CU_ASSERT_EQUAL(exit_code(reap(&c, EXIT_WAIT_MS)), EXIT_CLOSED);

    /* a valid frame of the wrong kind */
    memset(&c, 0, sizeof c);
    spawn(&c, "echo");
    Idevs__Bridge__V1__Shutdown sd = IDEVS__BRIDGE__V1__SHUTDOWN__INIT;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_SHUTDOWN;
    f.shutdown = &sd;
    send_frame(&c, &f);
    expect_fatal(&c, IDEVS_ERR_FRAME, "expected Init");
}

static void test_bad_frames_while_serving(void)
{
    child c;
    static const uint8_t garbage[] = {0, 0, 0, 6, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    write_raw(&c, garbage, sizeof garbage);
    expect_fatal(&c, IDEVS_ERR_FRAME, "frame from the launcher");

    static const uint8_t huge[] = {0x01, 0x40, 0x00, 0x01};
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    write_raw(&c, huge, sizeof huge);
    expect_fatal(&c, IDEVS_ERR_FRAME, "frame from the launcher");

    static const uint8_t truncated[] = {0, 0, 1, 0, 0x1a, 0x10};
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    write_raw(&c, truncated, sizeof truncated);
    shutdown(c.ch.fd, SHUT_WR);
    CU_ASSERT_EQUAL(exit_code(reap(&c, EXIT_WAIT_MS)), EXIT_CLOSED);

    /* Init again while serving */
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    send_init(&c, sealing_key, NULL, 0);
    expect_fatal(&c, IDEVS_ERR_FRAME, "not a Deliver, Certified, Reseal, TimerRole, JoinCheck, JoinOffer or Shutdown");

    /* the launcher closes the channel without Shutdown */
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    shutdown(c.ch.fd, SHUT_WR);
    CU_ASSERT_EQUAL(exit_code(reap(&c, EXIT_WAIT_MS)), EXIT_CLOSED);
}

/* A renewed certificate while serving (the launcher's Certified again): for our keys, the compartment switches
 * to it without a new key epoch, and a receiver that knows only the new certificate opens what it sealed in the
 * epoch begun under the former one; for other keys, it refuses and ends. */
static void test_renewal_while_serving(void)
{
    echo_child e;
    echo_child_start(&e);
    idevs_msgid in_id;
    deliver_text(&e.c, e.src, 1, TOPIC_IN, TOPIC_IN, "before", &in_id);
    expect_publish(&e.c, 1, e.snk, TOPIC_OUT, "before", &in_id, 1, NULL);
    expect_done(&e.c, 1, IDEVS_OK);

    const uint8_t *der[IDEVS_CHAIN_MAX];
    size_t len[IDEVS_CHAIN_MAX];
    uint8_t former[IDEVS_SHA256_LEN], renewed[IDEVS_SHA256_LEN];
    CU_ASSERT_FATAL(idevs_identity_cert_digest(e.c.cert_id, former) == IDEVS_OK);
    send_certified(&e.c, e.c.sign_pub, e.c.kex_pub, time(NULL) - 120);
    CU_ASSERT_FATAL(idevs_identity_cert_digest(e.c.cert_id, renewed) == IDEVS_OK);
    CU_ASSERT_NOT_EQUAL(memcmp(former, renewed, sizeof former), 0);
    /* The source takes the renewed certificate as a service does from the retained topic: epochs kept. */
    size_t n = fixture_chain(e.c.cert_id, der, len);
    CU_ASSERT_EQUAL(idevs_envelope_add_peer(e.src, der, len, n, NULL), IDEVS_OK);
    /* A sink that starts now knows only the renewed certificate. */
    idevs_cert_policy *p3;
    idevs_envelope_ctx *late = service_ctx(&e.c, sink, &p3, false);

    deliver_text(&e.c, e.src, 2, TOPIC_IN, TOPIC_IN, "after", &in_id);
    Idevs__Bridge__V1__Frame *f = expect(&e.c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    idevs_opened op;
    CU_ASSERT_EQUAL(idevs_envelope_open(e.snk, f->publish->topic, f->publish->envelope.data,
                                        f->publish->envelope.len, &op), IDEVS_OK);
    CU_ASSERT_TRUE(op.payload_len == 5 && memcmp(op.payload, "after", 5) == 0);
    idevs_opened_clear(&op);
    CU_ASSERT_EQUAL(idevs_envelope_open(late, f->publish->topic, f->publish->envelope.data,
                                        f->publish->envelope.len, &op), IDEVS_OK);
    idevs_opened_clear(&op);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    expect_done(&e.c, 2, IDEVS_OK);
    idevs_envelope_stats st;
    idevs_envelope_get_stats(e.src, &st);
    CU_ASSERT_EQUAL(st.sending_epochs, 1);
    idevs_envelope_get_stats(e.snk, &st);
    CU_ASSERT_EQUAL(st.receiving_epochs, 1);
    party_free(late, p3);

    /* A certificate for keys that are not the compartment's. */
    send_certified(&e.c, idevs_identity_sign_public(source), idevs_identity_kex_public(source), 0);
    expect_fatal(&e.c, IDEVS_ERR_INVALID_ARG, "not for this compartment's keys");
    idevs_envelope_ctx_free(e.src);
    idevs_envelope_ctx_free(e.snk);
    idevs_cert_policy_free(e.p1);
    idevs_cert_policy_free(e.p2);
}

static void test_start_up_time(void)
{
    /* Not a benchmark: a sanity bound far above the target (50 ms), so that a regression that makes start-up
     * take seconds is noticed. tests/bench measures it properly. */
    int64_t best = INT64_MAX;
    for (int i = 0; i < 5; i++) {
        child c;
        CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
        int64_t t = now_ms() - c.started_ms;
        if (t < best)
            best = t;
        CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    }
    printf("\n    best start to ready of 5: %lld ms ", (long long)best);
    CU_ASSERT(best < 2000);
}


/* ---- the channel's buffering, without a compartment ---- */

#include <sys/ioctl.h>

/* A Deliver frame whose envelope is env_len bytes of a pattern derived from id. */
static Idevs__Bridge__V1__Frame *chan_frame(uint64_t id, size_t env_len)
{
    static Idevs__Bridge__V1__Frame f;
    static Idevs__Bridge__V1__Deliver dv;
    static uint8_t env[300000];
    if (env_len > sizeof env)
        env_len = sizeof env;
    for (size_t i = 0; i < env_len; i++)
        env[i] = (uint8_t)(id * 31u + i);
    idevs__bridge__v1__frame__init(&f);
    idevs__bridge__v1__deliver__init(&dv);
    dv.delivery_id = id;
    dv.topic = (char *)TOPIC_IN;
    dv.envelope.data = env;
    dv.envelope.len = env_len;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER;
    f.deliver = &dv;
    return &f;
}

/* The frame on the wire (header and body) in a malloc'd buffer. */
static uint8_t *chan_wire(const Idevs__Bridge__V1__Frame *f, size_t *len)
{
    size_t body = idevs__bridge__v1__frame__get_packed_size(f);
    uint8_t *w = malloc(IDEVS_CHANNEL_HEADER + body);
    if (w == NULL)
        return NULL;
    w[0] = (uint8_t)(body >> 24);
    w[1] = (uint8_t)(body >> 16);
    w[2] = (uint8_t)(body >> 8);
    w[3] = (uint8_t)body;
    idevs__bridge__v1__frame__pack(f, w + IDEVS_CHANNEL_HEADER);
    *len = IDEVS_CHANNEL_HEADER + body;
    return w;
}

/* Checks that f is the Deliver chan_frame(id, env_len) built. */
static int chan_is(const Idevs__Bridge__V1__Frame *f, uint64_t id, size_t env_len)
{
    if (f == NULL || f->body_case != IDEVS__BRIDGE__V1__FRAME__BODY_DELIVER || f->deliver->delivery_id != id ||
        f->deliver->envelope.len != env_len || strcmp(f->deliver->topic, TOPIC_IN) != 0)
        return 0;
    for (size_t i = 0; i < env_len; i++)
        if (f->deliver->envelope.data[i] != (uint8_t)(id * 31u + i))
            return 0;
    return 1;
}

static int chan_unread(int fd)
{
    int n = -1;
    return ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

static void write_all(int fd, const uint8_t *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        p += n;
        len -= (size_t)n;
    }
}

static void test_channel_many_frames_one_read(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    idevs_channel ch;
    idevs_channel_init(&ch, sv[0], 0);
    size_t all = 0;
    uint8_t *stream = NULL;
    for (uint64_t id = 1; id <= 100; id++) {
        size_t len = 0;
        uint8_t *w = chan_wire(chan_frame(id, 200), &len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(w);
        stream = realloc(stream, all + len);
        CU_ASSERT_PTR_NOT_NULL_FATAL(stream);
        memcpy(stream + all, w, len);
        all += len;
        free(w);
    }
    CU_ASSERT_TRUE_FATAL(all < IDEVS_CHANNEL_READ_CHUNK);
    write_all(sv[1], stream, all);
    free(stream);
    Idevs__Bridge__V1__Frame *f = NULL;
    CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&ch, &f, 0), IDEVS_OK);
    CU_ASSERT_TRUE(chan_is(f, 1, 200));
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    /* the first call took all hundred frames out of the socket in one read */
    CU_ASSERT_EQUAL(chan_unread(sv[0]), 0);
    for (uint64_t id = 2; id <= 100; id++) {
        CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&ch, &f, 0), IDEVS_OK);
        CU_ASSERT_TRUE(chan_is(f, id, 200));
        idevs__bridge__v1__frame__free_unpacked(f, NULL);
    }
    CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 0), IDEVS_ERR_TIMEOUT);
    CU_ASSERT_PTR_NULL(f);
    /* more arrives after the socket was found empty: the next calls get it */
    size_t len = 0;
    uint8_t *w = chan_wire(chan_frame(101, 10), &len);
    write_all(sv[1], w, len);
    free(w);
    idevs_err err = idevs_channel_recv(&ch, &f, 0);
    if (err == IDEVS_ERR_TIMEOUT)
        err = idevs_channel_recv(&ch, &f, 0);
    CU_ASSERT_EQUAL_FATAL(err, IDEVS_OK);
    CU_ASSERT_TRUE(chan_is(f, 101, 10));
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    /* end of stream */
    close(sv[1]);
    err = idevs_channel_recv(&ch, &f, 0);
    if (err == IDEVS_ERR_TIMEOUT)
        err = idevs_channel_recv(&ch, &f, 0);
    CU_ASSERT_EQUAL(err, IDEVS_ERR_CHANNEL_CLOSED);
    idevs_channel_close(&ch);
}

static void test_channel_frame_split_across_reads(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    idevs_channel ch;
    idevs_channel_init(&ch, sv[0], 0);
    size_t len1 = 0, len2 = 0;
    uint8_t *w1 = chan_wire(chan_frame(7, 1000), &len1);
    uint8_t *w2 = chan_wire(chan_frame(8, 3000), &len2);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(w2);
    Idevs__Bridge__V1__Frame *f = NULL;
    /* half a header, then half a body: no frame yet, whatever the number of calls */
    write_all(sv[1], w1, 2);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 0), IDEVS_ERR_TIMEOUT);
    write_all(sv[1], w1 + 2, 600);
    for (int i = 0; i < 3; i++)
        CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 0), IDEVS_ERR_TIMEOUT);
    /* with a timeout, a partial frame waits in poll() and then gives up */
    int64_t t0 = now_ms();
    CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 100), IDEVS_ERR_TIMEOUT);
    CU_ASSERT_TRUE(now_ms() - t0 >= 90);
    /* the rest of frame 1 with the first 3 bytes of frame 2 */
    uint8_t *rest = malloc(len1 - 602 + 3);
    memcpy(rest, w1 + 602, len1 - 602);
    memcpy(rest + len1 - 602, w2, 3);
    write_all(sv[1], rest, len1 - 602 + 3);
    free(rest);
    CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&ch, &f, 1000), IDEVS_OK);
    CU_ASSERT_TRUE(chan_is(f, 7, 1000));
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 0), IDEVS_ERR_TIMEOUT);
    /* the rest of frame 2 in two writes, one after the reader started waiting */
    write_all(sv[1], w2 + 3, 1500);
    CU_ASSERT_EQUAL(idevs_channel_recv(&ch, &f, 0), IDEVS_ERR_TIMEOUT);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        usleep(50000);
        write_all(sv[1], w2 + 1503, len2 - 1503);
        _exit(0);
    }
    CU_ASSERT_EQUAL_FATAL(idevs_channel_recv(&ch, &f, FRAME_WAIT_MS), IDEVS_OK);
    CU_ASSERT_TRUE(chan_is(f, 8, 3000));
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    waitpid(pid, NULL, 0);
    free(w1);
    free(w2);
    close(sv[1]);
    idevs_channel_close(&ch);
}

/* A Deliver frame whose packed size is exactly size. */
static Idevs__Bridge__V1__Frame *chan_frame_of_size(size_t size)
{
    size_t env = size;
    for (;;) {
        Idevs__Bridge__V1__Frame *f = chan_frame(3, env);
        size_t packed = idevs__bridge__v1__frame__get_packed_size(f);
        if (packed == size)
            return f;
        if (packed > size && env > 0)
            env -= (packed - size) > 1 ? packed - size - 1 : 1;
        else
            env++;
    }
}

static void test_channel_frame_at_the_limit(void)
{
    /* a limit above the read chunk, so that the frame needs a larger buffer than one read asks for */
    const size_t limit = 200000;
    CU_ASSERT_TRUE_FATAL(limit > IDEVS_CHANNEL_READ_CHUNK);
    for (int over = 0; over <= 1; over++) {
        int sv[2];
        CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        idevs_channel rx, tx;
        idevs_channel_init(&rx, sv[0], limit);
        idevs_channel_init(&tx, dup(sv[1]), limit);
        Idevs__Bridge__V1__Frame *big = chan_frame_of_size(limit + (size_t)over);
        size_t env_len = big->deliver->envelope.len;
        CU_ASSERT_EQUAL(idevs_channel_queue(&tx, big), over ? IDEVS_ERR_TOO_LARGE : IDEVS_OK);
        size_t len = 0;
        uint8_t *w = chan_wire(big, &len);
        CU_ASSERT_EQUAL_FATAL(len, IDEVS_CHANNEL_HEADER + limit + (size_t)over);
        pid_t pid = fork();
        CU_ASSERT_TRUE_FATAL(pid >= 0);
        if (pid == 0) {
            write_all(sv[1], w, len);
            _exit(0);
        }
        Idevs__Bridge__V1__Frame *f = NULL;
        idevs_err err = idevs_channel_recv(&rx, &f, FRAME_WAIT_MS);
        if (over) {
            CU_ASSERT_EQUAL(err, IDEVS_ERR_FRAME);
        } else {
            CU_ASSERT_EQUAL_FATAL(err, IDEVS_OK);
            CU_ASSERT_TRUE(chan_is(f, 3, env_len));
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
        }
        waitpid(pid, NULL, 0);
        free(w);
        close(sv[1]);
        idevs_channel_close(&tx);
        idevs_channel_close(&rx);
    }
}

static int all_zero(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (p[i] != 0)
            return 0;
    return 1;
}

static void test_channel_coalesced_writes_slow_peer(void)
{
    int sv[2];
    CU_ASSERT_EQUAL_FATAL(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int small = 4096;
    setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    idevs_channel tx, rx;
    idevs_channel_init(&tx, sv[0], 0);
    idevs_channel_init(&rx, sv[1], 0);
    /* queued frames are not written until the end of the turn */
    for (uint64_t id = 1; id <= 60; id++)
        CU_ASSERT_EQUAL_FATAL(idevs_channel_queue(&tx, chan_frame(id, 2000)), IDEVS_OK);
    CU_ASSERT_TRUE(idevs_channel_pending(&tx));
    CU_ASSERT_EQUAL(chan_unread(sv[1]), 0);
    size_t used = tx.out_len; /* the most of the buffer ever written: all of it must end wiped */
    /* the peer does not read: a partial write, and every sent byte already wiped */
    CU_ASSERT_EQUAL(idevs_channel_flush(&tx, 0), IDEVS_ERR_TIMEOUT);
    CU_ASSERT_TRUE(idevs_channel_pending(&tx));
    CU_ASSERT_TRUE(tx.out_off > 0 && tx.out_off < tx.out_len);
    CU_ASSERT_TRUE(all_zero(tx.out, tx.out_off));
    CU_ASSERT_FALSE(all_zero(tx.out + tx.out_off, tx.out_len - tx.out_off));
    /* a frame queued behind a partial write keeps its place */
    CU_ASSERT_EQUAL_FATAL(idevs_channel_queue(&tx, chan_frame(61, 2000)), IDEVS_OK);
    CU_ASSERT_TRUE(all_zero(tx.out, tx.out_off));
    /* the peer reads slowly, one frame at a time, between partial writes */
    uint64_t next = 1;
    for (int rounds = 0; next <= 61 && rounds < 100000; rounds++) {
        idevs_err err = idevs_channel_flush(&tx, 0);
        CU_ASSERT_TRUE_FATAL(err == IDEVS_OK || err == IDEVS_ERR_TIMEOUT);
        Idevs__Bridge__V1__Frame *f = NULL;
        err = idevs_channel_recv(&rx, &f, 0);
        CU_ASSERT_TRUE_FATAL(err == IDEVS_OK || err == IDEVS_ERR_TIMEOUT);
        if (err == IDEVS_OK) {
            CU_ASSERT_TRUE_FATAL(chan_is(f, next, 2000));
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            next++;
        }
    }
    CU_ASSERT_EQUAL(next, 62);
    CU_ASSERT_FALSE(idevs_channel_pending(&tx));
    CU_ASSERT_TRUE(all_zero(tx.out, used));
    /* a blocking flush against a peer (another process) that reads a little at a time */
    for (uint64_t id = 1; id <= 40; id++)
        CU_ASSERT_EQUAL_FATAL(idevs_channel_queue(&tx, chan_frame(id, 3000)), IDEVS_OK);
    pid_t pid = fork();
    CU_ASSERT_TRUE_FATAL(pid >= 0);
    if (pid == 0) {
        uint64_t want = 1;
        while (want <= 40) {
            usleep(500);
            Idevs__Bridge__V1__Frame *f = NULL;
            idevs_err err = idevs_channel_recv(&rx, &f, 5000);
            if (err != IDEVS_OK || !chan_is(f, want, 3000))
                _exit(1);
            idevs__bridge__v1__frame__free_unpacked(f, NULL);
            want++;
        }
        _exit(0);
    }
    CU_ASSERT_EQUAL(idevs_channel_flush(&tx, FRAME_WAIT_MS), IDEVS_OK);
    CU_ASSERT_FALSE(idevs_channel_pending(&tx));
    int status = -1;
    waitpid(pid, &status, 0);
    CU_ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    idevs_channel_close(&rx);
    idevs_channel_close(&tx);
}

/* ---- stopped and continued; a trap behind output the launcher has not read ---- */

/* True while pid has not ended (it is not reaped: the status stays for reap()). */
static bool still_running(pid_t pid)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    return waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Waits until the compartment has written at least bytes the test has not read, and waits in poll() again. */
static void wait_output_unread(child *c, int bytes)
{
    for (int waited = 0; chan_unread(c->ch.fd) < bytes && waited < FRAME_WAIT_MS; waited += 2)
        sleep_ms(2);
    CU_ASSERT_FATAL(chan_unread(c->ch.fd) >= bytes);
    CU_ASSERT_FATAL(suspend_wait_sleeping(c->pid));
}

/* The compartment's send buffer, as small as the kernel allows (a few kB): what it has written and the launcher
 * has not read fills it. The test's copy of the compartment's end is closed: its exit must still end the stream. */
static void shrink_send_buffer(child *c)
{
    int one = 1;
    CU_ASSERT_FATAL(c->their_end >= 0);
    CU_ASSERT_EQUAL(setsockopt(c->their_end, SOL_SOCKET, SO_SNDBUF, &one, sizeof one), 0);
    close(c->their_end);
    c->their_end = -1;
}

/* start(), keeping the compartment's end of the channel for shrink_send_buffer(). */
static void start_keeping_end(child *c, const char *logic)
{
    keep_compartment_end = true;
    bool started = start(c, logic, NULL);
    keep_compartment_end = false;
    CU_ASSERT_TRUE_FATAL(started);
}

/* A payload of len bytes: prefix, then filler. */
static char *filler(const char *prefix, size_t len)
{
    char *text = malloc(len + 1);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    memset(text, 'm', len);
    memcpy(text, prefix, strlen(prefix));
    text[len] = '\0';
    return text;
}

/* Stopped for 300 ms while it waits in poll() for a frame, then continued: the kernel resumes the poll() through
 * restart_syscall. The same process then serves the next delivery and ends normally at Shutdown. */
static void stopped_while_waiting(suspend_how how)
{
    echo_child e;
    echo_child_start(&e);
    pid_t pid = e.c.pid;
    CU_ASSERT_TRUE_FATAL(suspend_wait_sleeping(pid));
    char why[512];
    if (suspend_for(pid, how, 300, why, sizeof why)) {
        idevs_msgid id;
        deliver_text(&e.c, e.src, 1, TOPIC_IN, TOPIC_IN, "after a pause", &id);
        expect_publish(&e.c, 1, e.snk, TOPIC_OUT, "after a pause", &id, 1, NULL);
        expect_done(&e.c, 1, IDEVS_OK);
        CU_ASSERT_TRUE(still_running(pid));
    } else {
        suspend_skipped(how, why);
    }
    echo_child_stop(&e);
}

static void test_stopped_sigstop(void) { stopped_while_waiting(SUSPEND_SIGSTOP); }
static void test_stopped_cgroup_freeze(void) { stopped_while_waiting(SUSPEND_CGROUP_FREEZE); }
static void test_stopped_ptrace(void) { stopped_while_waiting(SUSPEND_PTRACE); }

/* Stopped mid-stream: a Publish frame half written, the rest in the compartment's queue while it waits in poll()
 * for room. After SIGCONT it finishes the frame. */
static void test_stopped_mid_stream(void)
{
    child c;
    start_keeping_end(&c, "echo");
    shrink_send_buffer(&c);
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false);
    char *big = filler("long ", 60000);
    idevs_msgid id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, big, &id);
    wait_output_unread(&c, 1);
    CU_ASSERT(chan_unread(c.ch.fd) < 60000); /* the rest waits in the compartment */
    char why[512];
    CU_ASSERT_TRUE(suspend_for(c.pid, SUSPEND_SIGSTOP, 300, why, sizeof why));
    expect_publish(&c, 1, snk, TOPIC_OUT, big, &id, 1, NULL);
    expect_done(&c, 1, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    free(big);
    party_free(src, p1);
    party_free(snk, p2);
}

/* The logic traps while the output of the previous delivery still fills the channel (the launcher has not read
 * it): the report waits for room and arrives whole, after that output, naming the system call. */
static void test_trap_behind_unread_output(void)
{
    child c;
    start_keeping_end(&c, "hostile_after_output");
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, false);
    char *pass = filler("pass ", 16000);
    idevs_msgid id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, pass, &id);
    wait_output_unread(&c, 16000); /* all of it in the socket, unread */
    shrink_send_buffer(&c);        /* which now has no room left */
    idevs_msgid trap;
    deliver_text(&c, src, 2, TOPIC_IN, TOPIC_IN, "socket", &trap);
    sleep_ms(200);
    CU_ASSERT_TRUE(still_running(c.pid)); /* trapped, and waiting for the launcher to read */
    expect_publish(&c, 1, snk, TOPIC_OUT, pass, &id, 1, NULL);
    expect_done(&c, 1, IDEVS_OK);
    expect_sandbox_kill(&c, "socket");
    free(pass);
    party_free(src, p1);
    party_free(snk, p2);
}

static CU_TestInfo channel_tests[] = {
    {"many frames in one read", test_channel_many_frames_one_read},
    {"a frame split across reads", test_channel_frame_split_across_reads},
    {"a frame exactly at the size limit, and one byte over", test_channel_frame_at_the_limit},
    {"coalesced writes, partial writes, a slow peer", test_channel_coalesced_writes_slow_peer},
    CU_TEST_INFO_NULL,
};

static void send_reseal(child *c, const uint8_t *kept, size_t len)
{
    Idevs__Bridge__V1__Reseal rs = IDEVS__BRIDGE__V1__RESEAL__INIT;
    rs.kept.data = (uint8_t *)kept;
    rs.kept.len = len;
    Idevs__Bridge__V1__Frame f = IDEVS__BRIDGE__V1__FRAME__INIT;
    f.body_case = IDEVS__BRIDGE__V1__FRAME__BODY_RESEAL;
    f.reseal = &rs;
    send_frame(c, &f);
}

/* An output to a service with receipts comes with its kept copy; Reseal gives the same message, sealed anew. */
static void test_kept_reseal(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, true);
    idevs_msgid in_id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "kept for later", &in_id);
    Idevs__Bridge__V1__Frame *f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_FATAL(f->publish->kept.len > 0);
    size_t kept_len = f->publish->kept.len;
    uint8_t *kept = malloc(kept_len);
    CU_ASSERT_FATAL(kept != NULL);
    memcpy(kept, f->publish->kept.data, kept_len);
    idevs_opened first;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(snk, TOPIC_OUT, f->publish->envelope.data, f->publish->envelope.len,
                                              &first), IDEVS_OK);
    CU_ASSERT(memmem(kept, kept_len, "kept for later", 14) == NULL); /* sealed: no plaintext in it */
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    expect_done(&c, 1, IDEVS_OK);

    send_reseal(&c, kept, kept_len);
    f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(f->publish->delivery_id, 0);
    CU_ASSERT_STRING_EQUAL(f->publish->topic, TOPIC_OUT);
    CU_ASSERT(f->publish->kept.len == kept_len && memcmp(f->publish->kept.data, kept, kept_len) == 0);
    idevs_opened again;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(snk, TOPIC_OUT, f->publish->envelope.data, f->publish->envelope.len,
                                              &again), IDEVS_OK);
    CU_ASSERT(idevs_uuid_equal(&again.message_id, &first.message_id));
    CU_ASSERT(again.sequence != first.sequence); /* sealed anew, not the same bytes */
    CU_ASSERT(again.payload_len == 14 && memcmp(again.payload, "kept for later", 14) == 0);
    CU_ASSERT(again.provenance_count == 1 && idevs_uuid_equal(&again.provenance[0], &in_id));
    idevs_opened_clear(&again);
    idevs_opened_clear(&first);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);

    /* A damaged kept copy opens nothing: dropped, and the compartment goes on. */
    kept[kept_len / 2] ^= 1;
    send_reseal(&c, kept, kept_len);
    deliver_text(&c, src, 2, TOPIC_IN, TOPIC_IN, "after", &in_id);
    expect_publish(&c, 2, snk, TOPIC_OUT, "after", &in_id, 1, NULL);
    expect_done(&c, 2, IDEVS_OK);
    free(kept);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
}

/* The size an envelope's ciphertext shows: its padded plaintext and tag. */
static size_t ciphertext_len(const ProtobufCBinaryData *envelope)
{
    idevs_envelope_header h;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_peek(envelope->data, envelope->len, &h), IDEVS_OK);
    return h.ciphertext_len;
}

/* The descriptor's "pad" of an output and of a request is what the compartment seals them with, also when it seals
 * a kept output anew; the output's plaintext is 1 + 16 + 4 + 6 bytes (one id, "sale 1"), the request's 1 + 16 + 4 +
 * 8 ("how far?"). */
static void test_pad_from_descriptor(void)
{
    child c;
    output_pad = ", \"pad\": 256";
    request_pad = ", \"pad\": \"none\"";
    bool started = start(&c, "echo", NULL);
    output_pad = request_pad = "";
    CU_ASSERT_TRUE_FATAL(started);
    idevs_cert_policy *p1, *p2, *p3;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, true),
                       *orc = service_ctx(&c, oracle, &p3, false);
    idevs_msgid in_id;
    deliver_text(&c, src, 1, TOPIC_IN, TOPIC_IN, "sale 1", &in_id);
    Idevs__Bridge__V1__Frame *f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(ciphertext_len(&f->publish->envelope), 256 + IDEVS_AEAD_TAG_LEN);
    size_t kept_len = f->publish->kept.len;
    uint8_t *kept = malloc(kept_len);
    CU_ASSERT_FATAL(kept != NULL);
    memcpy(kept, f->publish->kept.data, kept_len);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    expect_done(&c, 1, IDEVS_OK);
    send_reseal(&c, kept, kept_len);
    free(kept);
    f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(ciphertext_len(&f->publish->envelope), 256 + IDEVS_AEAD_TAG_LEN);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);

    deliver_text(&c, src, 2, TOPIC_IN, TOPIC_IN, "ask:how far?", &in_id);
    f = expect(&c, IDEVS__BRIDGE__V1__FRAME__BODY_PUBLISH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_STRING_EQUAL(f->publish->topic, TOPIC_REQ);
    CU_ASSERT_EQUAL(ciphertext_len(&f->publish->envelope), 1 + 16 + 4 + 8 + IDEVS_AEAD_TAG_LEN);
    idevs__bridge__v1__frame__free_unpacked(f, NULL);
    expect_done(&c, 2, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
    party_free(orc, p3);
}

/* Sealed anew with the id it was first sent with (a sender's retransmission). */
static void deliver_numbered(child *c, idevs_envelope_ctx *src, uint64_t delivery, const idevs_msgid *id,
                             const char *text)
{
    idevs_seal_input in = {.recipient = &program, .topic = TOPIC_IN, .payload = (const uint8_t *)text,
                           .payload_len = strlen(text), .message_id = id};
    uint8_t *env = NULL;
    size_t env_len = 0;
    CU_ASSERT_FATAL(idevs_envelope_seal(src, &in, &env, &env_len, NULL) == IDEVS_OK);
    deliver(c, delivery, TOPIC_IN, env, env_len, NULL);
    free(env);
}

/* The last receipt, opened as the source: it came with delivery, on the source's receipt topic, naming ids. */
static void expect_receipt(child *c, idevs_envelope_ctx *src, unsigned count, uint64_t delivery,
                           const idevs_msgid *ids, size_t n)
{
    CU_ASSERT_EQUAL_FATAL(c->receipts, count);
    CU_ASSERT_EQUAL(c->receipt_delivery, delivery);
    CU_ASSERT_STRING_EQUAL(c->receipt_topic, "idevs/echo-test/receipt/to/source");
    idevs_opened op;
    CU_ASSERT_EQUAL_FATAL(idevs_envelope_open(src, c->receipt_topic, c->receipt, c->receipt_len, &op), IDEVS_OK);
    CU_ASSERT_TRUE(idevs_uuid_equal(&op.sender, &program));
    idevs_msgid got[IDEVS_RECEIPT_IDS_MAX];
    size_t got_n = 0;
    CU_ASSERT_EQUAL(idevs_receipt_decode(op.payload, op.payload_len, got, &got_n), IDEVS_OK);
    CU_ASSERT_EQUAL(got_n, n);
    if (got_n != n)
        fprintf(stderr, "\n    receipt %u names %zu ids, expected %zu\n", count, got_n, n);
    for (size_t i = 0; i < n && i < got_n; i++)
        CU_ASSERT_TRUE(idevs_uuid_equal(&got[i], &ids[i]));
    idevs_opened_clear(&op);
}

/* A numbered message is receipted once handled; sent again (sealed anew, same id) it is receipted again and not
 * run; one a logic refused is receipted too (it will not be run again); an unnumbered id is receipted, never
 * taken for a copy. */
static void test_receipts_and_copies(void)
{
    child c;
    CU_ASSERT_TRUE_FATAL(start(&c, "echo", NULL));
    idevs_cert_policy *p1, *p2;
    idevs_envelope_ctx *src = service_ctx(&c, source, &p1, false), *snk = service_ctx(&c, sink, &p2, true);
    const uint8_t stream[IDEVS_MSGID_STREAM_LEN] = {1, 2, 3, 4, 5, 6, 7, 8};
    idevs_msgid first = idevs_msgid_numbered(stream, 1), second = idevs_msgid_numbered(stream, 2);

    deliver_numbered(&c, src, 1, &first, "once");
    expect_publish(&c, 1, snk, TOPIC_OUT, "once", &first, 1, NULL);
    expect_done(&c, 1, IDEVS_OK);
    expect_receipt(&c, src, 1, 1, &first, 1);

    deliver_numbered(&c, src, 2, &first, "once");
    expect_done(&c, 2, IDEVS_ERR_ALREADY_DONE); /* no output before it: not run */
    expect_receipt(&c, src, 2, 2, &first, 1);

    deliver_numbered(&c, src, 3, &second, "fail:refused by the logic");
    expect_done(&c, 3, IDEVS_ERR_LOGIC);
    expect_receipt(&c, src, 3, 3, &second, 1);
    deliver_numbered(&c, src, 4, &second, "fail:refused by the logic");
    expect_done(&c, 4, IDEVS_ERR_ALREADY_DONE);
    expect_receipt(&c, src, 4, 4, &second, 1);

    /* Two in one turn: one receipt, for the last delivery, names both. */
    idevs_msgid third = idevs_msgid_numbered(stream, 3), fourth = idevs_msgid_numbered(stream, 4);
    deliver_numbered(&c, src, 5, &third, "a");
    deliver_numbered(&c, src, 6, &fourth, "b");
    expect_publish(&c, 5, snk, TOPIC_OUT, "a", &third, 1, NULL);
    expect_done(&c, 5, IDEVS_OK);
    expect_publish(&c, 6, snk, TOPIC_OUT, "b", &fourth, 1, NULL);
    expect_done(&c, 6, IDEVS_OK);
    idevs_msgid both[2] = {third, fourth};
    if (c.receipts == 5) /* the two came in one turn; else each had its own */
        expect_receipt(&c, src, 5, 6, both, 2);
    else
        expect_receipt(&c, src, 6, 6, &fourth, 1);

    /* A random (unnumbered) id twice: each copy is a message of its own. */
    idevs_msgid in_id;
    deliver_text(&c, src, 7, TOPIC_IN, TOPIC_IN, "random", &in_id);
    expect_publish(&c, 7, snk, TOPIC_OUT, "random", &in_id, 1, NULL);
    expect_done(&c, 7, IDEVS_OK);
    CU_ASSERT_EQUAL(shutdown_child(&c), 0);
    party_free(src, p1);
    party_free(snk, p2);
}

static CU_TestInfo tests[] = {
    {"events round trip with provenance", test_events_round_trip},
    {"kept outputs: sealed anew on Reseal with the same id and provenance; a damaged one is dropped",
     test_kept_reseal},
    {"receipts: handled once, a copy sent again receipted and not run", test_receipts_and_copies},
    {"request and response, provenance back to the input", test_request_response},
    {"pad of an output and a request from the descriptor, also when sealed anew", test_pad_from_descriptor},
    {"an input run again by a new compartment: its outputs keep their message ids", test_output_ids_follow_their_input},
    {"request state: a former run's request answered once after a restart; altered, foreign or unnamed tokens match nothing", test_request_state_across_restart},
    {"request state: one length of correlation data for every provenance count and state; any other matches nothing",
     test_request_state_one_size},
    {"max_outstanding_requests 4: the fifth input waits; every answer reaches its request, each input runs once",
     test_outstanding_requests_hold_inputs},
    {"a request without a response handler is refused (unknown_request) and holds no slot",
     test_request_without_response_handler},
    {"undeclared sender, wrong topic, replay, undeclared output refused", test_refusals},
    {"idevs_refuse: declared codes in Done, undeclared ones refused", test_refusal_codes},
    {"a failing handler publishes nothing", test_transaction_dropped_on_error},
    {"timer", test_timer},
    {"instance 3 of 4: outputs sealed under instance 3", test_instance_seals},
    {"an Init.instance not below process.instances is refused", test_instance_out_of_range},
    {"the timer runs on instance 0 only", test_timer_instance_0_only},
    {"split: a raw Publish frame on the link", test_link_raw_publish},
    {"split: raw frames on every other descriptor", test_link_raw_fds},
    {"split: process_vm_readv of the key holder", test_link_vmread},
    {"split: /proc/<key holder>/mem", test_link_procmem},
    {"split: ptrace attach to the key holder", test_link_ptrace_attach},
    {"split: a raw emit to an undeclared output", test_link_undeclared_raw},
    {"split: an emit after its handler returned", test_link_late_emit},
    {"split: an emit flood through the API", test_link_flood},
    {"split: an emit flood of raw frames", test_link_flood_raw},
    {"split: a 100 MB emit", test_link_huge},
    {"split: a 100 MB frame on the link", test_link_huge_raw},
    {"split: a logic that never returns", test_link_spin},
    {"split: a raw request for which no response handler was registered", test_link_request_raw},
    {"split: a raw LogicDone with an undeclared refusal code", test_link_refusal_raw},
    {"hostile logic: open", test_hostile_open},
    {"hostile logic: socket", test_hostile_socket},
    {"hostile logic: execve", test_hostile_execve},
    {"hostile logic: fork", test_hostile_fork},
    {"hostile logic: ptrace", test_hostile_ptrace},
    {"hostile logic: write to stdout", test_hostile_write},
    {"hostile constructor: socket", test_hostile_constructor_socket},
    {"hostile constructor: open is refused by Landlock", test_hostile_constructor_open},
    {"logic in a memfd, as the launcher passes it", test_logic_in_memfd},
    {"restart: same keys, other key or measurement: fresh keys", test_restart_restores_keys},
    {"Init checks: descriptor, CA pin, certificate for other keys", test_init_checks},
    {"bad frames before Init", test_bad_frames_before_init},
    {"bad frames while serving", test_bad_frames_while_serving},
    {"a renewed certificate while serving: same keys switch, other keys end it", test_renewal_while_serving},
    {"start-up time bound", test_start_up_time},
    {"stopped and continued (SIGSTOP) while waiting: same process serves on", test_stopped_sigstop},
    {"frozen and thawed (cgroup v2) while waiting: same process serves on", test_stopped_cgroup_freeze},
    {"a debugger attaches and detaches (ptrace) while waiting: same process serves on", test_stopped_ptrace},
    {"stopped and continued mid-stream: the frame is finished", test_stopped_mid_stream},
    {"a trap behind output the launcher has not read: the report still names the call",
     test_trap_behind_unread_output},
    CU_TEST_INFO_NULL,
};

int main(void)
{
    CU_SuiteInfo suites[] = {{"channel", NULL, NULL, NULL, NULL, channel_tests},
                             {"compartment", suite_init, suite_clean, NULL, NULL, tests},
                             CU_SUITE_INFO_NULL};
    return harness_run(suites);
}
