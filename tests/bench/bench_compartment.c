/* The compartment through the launcher, measured (not a test: run build/tests/bench/bench_compartment by hand,
 * on a release build):
 *   - start to certified and to ready: median of N starts of the real idevs-compartment with the echo logic;
 *   - events per second, pipelined: sealed 256-byte envelopes from a service identity, delivered as fast as the
 *     queue takes them, every output opened by the receiving service afterwards;
 *   - per-event latency, one event at a time (deliver -> Done with its output), p50 and p99;
 *   - the compartment's resident memory (VmRSS, VmHWM of /proc/<pid>/status) after the warm-up.
 * Targets (docs/COMPARTMENT.md): under 50 ms to certified, under 4 MB resident.
 *
 *   bench_compartment [EVENTS [STARTS]]     defaults 20000 and 20
 * The compartment and the echo logic are found in the build tree next to this program, or through
 * IDEVS_COMPARTMENT and IDEVS_TEST_LOGIC_DIR. */
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "idevs_cert.h"
#include "idevs_envelope.h"
#include "idevs_launcher.h"

#define IN_TOPIC "bench/in"
#define OUT_TOPIC "bench/out"
#define PAYLOAD 256

static void die(const char *what, idevs_err err)
{
    fprintf(stderr, "bench_compartment: %s: %s\n", what, idevs_strerror(err));
    exit(1);
}

#define TRY(what, call)                  \
    do {                                 \
        idevs_err e_ = (call);           \
        if (e_ != IDEVS_OK)              \
            die(what, e_);               \
    } while (0)

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double percentile(double *v, size_t n, double p)
{
    qsort(v, n, sizeof *v, cmp_double);
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---- a throw-away PKI ---- */

static idevs_identity *ca, *authority, *store, *sink;
static X509 *ca_cert, *authority_cert;

static void set_chain(idevs_identity *id, X509 *cert)
{
    uint8_t *der = NULL;
    size_t len = 0;
    TRY("encode", idevs_cert_to_der(cert, &der, &len));
    const uint8_t *d[1] = {der};
    TRY("chain", idevs_identity_set_chain(id, d, &len, 1));
    free(der);
}

static idevs_identity *service(const char *name)
{
    idevs_uuid u;
    idevs_identity *id = NULL;
    X509 *cert = NULL;
    idevs_uuid_generate(&u);
    TRY("service keys", idevs_identity_generate(&u, name, &id));
    TRY("service certificate", idevs_cert_issue_service(ca, ca_cert, id, 1, &cert));
    set_chain(id, cert);
    X509_free(cert);
    return id;
}

static void pki(void)
{
    idevs_uuid u;
    idevs_uuid_generate(&u);
    TRY("ca keys", idevs_identity_generate(&u, "bench-ca", &ca));
    TRY("ca certificate", idevs_cert_issue_ca(ca, 1, &ca_cert));
    idevs_uuid_generate(&u);
    TRY("authority keys", idevs_identity_generate(&u, "bench-authority", &authority));
    TRY("authority certificate", idevs_cert_issue_authority(ca, ca_cert, authority, 1, &authority_cert));
    store = service("store");
    sink = service("sink");
}

static void write_pem(const char *path, const idevs_identity *id)
{
    size_t len = 0;
    const unsigned char *p = idevs_identity_chain_der(id, 0, &len);
    X509 *cert = d2i_X509(NULL, &p, (long)len);
    FILE *f = fopen(path, "w");
    if (cert == NULL || f == NULL || PEM_write_X509(f, cert) != 1) {
        fprintf(stderr, "bench_compartment: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
    X509_free(cert);
}

static void uuid_str(const idevs_uuid *u, char out[IDEVS_UUID_STR_LEN])
{
    idevs_uuid_format(u, out);
}

/* ---- the launcher ---- */

typedef struct counts {
    size_t done, failed, published;
    uint8_t **env;
    size_t *env_len;
    size_t cap;
} counts;

static void on_publish(void *arg, const idevs_launcher_publish *p)
{
    counts *c = arg;
    if (c->published < c->cap) {
        c->env[c->published] = malloc(p->envelope_len);
        if (c->env[c->published] == NULL)
            exit(1);
        memcpy(c->env[c->published], p->envelope, p->envelope_len);
        c->env_len[c->published] = p->envelope_len;
    }
    c->published++;
}

static void on_done(void *arg, uint64_t id, idevs_err status)
{
    (void)id;
    counts *c = arg;
    c->done++;
    c->failed += status != IDEVS_OK;
}

static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    size_t n = strlen(field);
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            kb = strtol(line + n + 1, NULL, 10);
    if (f != NULL)
        fclose(f);
    return kb;
}

/* The machine's floor for a process split: one byte there and back over two pipes between two processes, the
 * median of n round trips. A compartment in two processes makes one such trip per event it runs alone. */
static double pipe_round_trip_us(size_t n)
{
    int there[2], back[2];
    if (pipe(there) != 0 || pipe(back) != 0)
        return -1;
    pid_t child = fork();
    if (child == 0) {
        char c;
        for (size_t i = 0; i < n; i++)
            if (read(there[0], &c, 1) != 1 || write(back[1], &c, 1) != 1)
                _exit(1);
        _exit(0);
    }
    double *rt = calloc(n, sizeof *rt), median = -1;
    char c = 'x';
    size_t done = 0;
    for (; child > 0 && rt != NULL && done < n; done++) {
        double a = now_s();
        if (write(there[1], &c, 1) != 1 || read(back[0], &c, 1) != 1)
            break;
        rt[done] = (now_s() - a) * 1e6;
    }
    if (done == n)
        median = percentile(rt, n, 0.50);
    free(rt);
    close(there[0]);
    close(there[1]);
    close(back[0]);
    close(back[1]);
    if (child > 0)
        waitpid(child, NULL, 0);
    return median;
}

int main(int argc, char **argv)
{
    size_t events = argc > 1 ? strtoul(argv[1], NULL, 10) : 20000;
    size_t starts = argc > 2 ? strtoul(argv[2], NULL, 10) : 20;
    if (events < 100 || starts < 1) {
        fprintf(stderr, "usage: bench_compartment [EVENTS>=100 [STARTS>=1]]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    char self[PATH_MAX], host[PATH_MAX], logic[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0)
        return 1;
    self[n] = '\0';
    const char *dir = dirname(self);
    const char *env_host = getenv("IDEVS_COMPARTMENT"), *env_logic = getenv("IDEVS_TEST_LOGIC_DIR");
    if (env_host != NULL)
        snprintf(host, sizeof host, "%s", env_host);
    else
        snprintf(host, sizeof host, "%.4000s/../../enclave-bridge/compartment/idevs-compartment", dir);
    if (env_logic != NULL)
        snprintf(logic, sizeof logic, "%.4000s/idevs_logic_echo.so", env_logic);
    else
        snprintf(logic, sizeof logic, "%.4000s/../logic/idevs_logic_echo.so", dir);

    pki();
    char tmp[] = "/tmp/idevs-bench-XXXXXX";
    if (mkdtemp(tmp) == NULL)
        return 1;
    char path[256], state[256], descriptor[256];
    snprintf(state, sizeof state, "%s/state", tmp);
    mkdir(state, 0700);
    snprintf(path, sizeof path, "%s/store.crt", tmp);
    write_pem(path, store);
    snprintf(path, sizeof path, "%s/sink.crt", tmp);
    write_pem(path, sink);
    idevs_uuid program;
    idevs_uuid_generate(&program);
    char prog_s[IDEVS_UUID_STR_LEN], store_s[IDEVS_UUID_STR_LEN], sink_s[IDEVS_UUID_STR_LEN], ca_hex[65];
    uuid_str(&program, prog_s);
    uuid_str(idevs_identity_uuid(store), store_s);
    uuid_str(idevs_identity_uuid(sink), sink_s);
    uint8_t *ca_der = NULL, digest[32];
    size_t ca_len = 0;
    TRY("ca der", idevs_cert_to_der(ca_cert, &ca_der, &ca_len));
    TRY("sha256", idevs_sha256(ca_der, ca_len, digest));
    free(ca_der);
    for (int i = 0; i < 32; i++)
        sprintf(ca_hex + 2 * i, "%02x", digest[i]);
    snprintf(descriptor, sizeof descriptor, "%s/deployment.json", tmp);
    FILE *f = fopen(descriptor, "w");
    if (f == NULL)
        return 1;
    fprintf(f,
            "{\"version\": 1, \"process\": {\"name\": \"bench\", \"uuid\": \"%s\", \"logic\": \"%s\"},\n"
            " \"operator_ca_sha256\": \"%s\",\n"
            " \"services\": [{\"name\": \"store\", \"uuid\": \"%s\", \"certificate\": \"store.crt\"},\n"
            "              {\"name\": \"sink\", \"uuid\": \"%s\", \"certificate\": \"sink.crt\"}],\n"
            " \"inputs\": [{\"name\": \"events\", \"topic\": \"" IN_TOPIC "\", \"from\": \"store\"}],\n"
            " \"outputs\": [{\"name\": \"out\", \"topic\": \"" OUT_TOPIC "\", \"to\": \"sink\", \"qos\": 1}],\n"
            " \"limits\": {\"queue_depth\": 1024, \"event_timeout_ms\": 5000}}\n",
            prog_s, logic, ca_hex, store_s, sink_s);
    fclose(f);

    idevs_launcher_config cfg;
    idevs_launcher_config_default(&cfg);
    cfg.descriptor = descriptor;
    cfg.host_program = host;
    cfg.state_dir = state;
    cfg.operator_ca = ca_cert;
    cfg.authority = authority;
    cfg.authority_cert = authority_cert;
    cfg.max_in_flight = 256;
    idevs_launcher *l = NULL;
    char why[512] = "";
    idevs_err err = idevs_launcher_new(&cfg, &l, why, sizeof why);
    if (err != IDEVS_OK) {
        fprintf(stderr, "bench_compartment: %s\n", why);
        return 1;
    }

    /* ---- start to certified ---- */
    double *cert_ms = calloc(starts, sizeof *cert_ms), *ready_ms = calloc(starts, sizeof *ready_ms);
    if (cert_ms == NULL || ready_ms == NULL)
        return 1;
    idevs_launcher_stats st;
    for (size_t i = 0; i < starts; i++) {
        if ((err = idevs_launcher_start(l, why, sizeof why)) != IDEVS_OK) {
            fprintf(stderr, "bench_compartment: %s\n", why);
            return 1;
        }
        idevs_launcher_get_stats(l, &st);
        cert_ms[i] = (double)st.last_certified_us / 1000.0;
        ready_ms[i] = (double)st.last_ready_us / 1000.0;
        if (i + 1 < starts)
            idevs_launcher_stop(l, 1000);
    }
    printf("compartment start (%zu starts, first with fresh keys, then restored):\n", starts);
    printf("  spawn to certified: median %.2f ms, max %.2f ms  (target < 50 ms)\n",
           percentile(cert_ms, starts, 0.5), percentile(cert_ms, starts, 1.0));
    printf("  spawn to ready:     median %.2f ms, max %.2f ms\n", percentile(ready_ms, starts, 0.5),
           percentile(ready_ms, starts, 1.0));

    /* ---- the parties ---- */
    idevs_cert_policy *pol_store = idevs_cert_policy_new(), *pol_sink = idevs_cert_policy_new();
    idevs_envelope_ctx *cs = NULL, *ck = NULL;
    for (int i = 0; i < 2; i++) {
        idevs_cert_policy *p = i == 0 ? pol_store : pol_sink;
        TRY("policy", idevs_cert_policy_add_ca(p, ca_cert));
        idevs_cert_policy_require_evidence(p, true);
        idevs_cert_policy_allow_process_backend_insecure(p);
        TRY("policy", idevs_cert_policy_add_measurement(p, idevs_launcher_measurement(l)));
        idevs_cert_policy_expect_descriptor(p, idevs_launcher_descriptor_digest(l));
    }
    TRY("store ctx", idevs_envelope_ctx_new(store, pol_store, NULL, &cs));
    TRY("sink ctx", idevs_envelope_ctx_new(sink, pol_sink, NULL, &ck));
    const uint8_t *der[2];
    size_t len[2];
    for (size_t i = 0; i < 2; i++)
        der[i] = idevs_launcher_chain_der(l, i, &len[i]);
    TRY("store meets compartment", idevs_envelope_add_peer(cs, der, len, 2, NULL));
    TRY("sink meets compartment", idevs_envelope_add_peer(ck, der, len, 2, NULL));

    size_t latency_n = events / 4 < 5000 ? events / 4 : 5000;
    size_t total = events + latency_n + 200;
    uint8_t **sealed = calloc(total, sizeof *sealed);
    size_t *sealed_len = calloc(total, sizeof *sealed_len);
    counts c = {0};
    c.cap = total;
    c.env = calloc(total, sizeof *c.env);
    c.env_len = calloc(total, sizeof *c.env_len);
    if (sealed == NULL || sealed_len == NULL || c.env == NULL || c.env_len == NULL)
        return 1;
    uint8_t payload[PAYLOAD];
    memset(payload, 'x', sizeof payload);
    for (size_t i = 0; i < total; i++) {
        char label[32];
        int k = snprintf(label, sizeof label, "event %zu ", i);
        memcpy(payload, label, (size_t)k);
        idevs_seal_input in = {.recipient = &program, .topic = IN_TOPIC, .payload = payload,
                               .payload_len = sizeof payload};
        TRY("seal", idevs_envelope_seal(cs, &in, &sealed[i], &sealed_len[i], NULL));
    }
    idevs_launcher_callbacks cb = {on_publish, on_done, &c, NULL};

    /* ---- warm-up, then resident memory ---- */
    size_t next = 0;
    for (; next < 200; next++)
        TRY("deliver", idevs_launcher_deliver(l, IN_TOPIC, sealed[next], sealed_len[next], NULL, 0, NULL));
    while (c.done < 200)
        idevs_launcher_poll(l, 100, &cb);
    idevs_launcher_get_stats(l, &st);
    long rss = proc_kb(st.pid, "VmRSS"), hwm = proc_kb(st.pid, "VmHWM");
    /* Where the resident pages are: the compartment's own (anonymous), shared-library file pages, and the
     * sealed memfds the program and logic run from (shared memory). */
    long rss_anon = proc_kb(st.pid, "RssAnon"), rss_file = proc_kb(st.pid, "RssFile"),
         rss_shmem = proc_kb(st.pid, "RssShmem");

    /* ---- throughput ---- */
    size_t base = c.done;
    double t0 = now_s();
    size_t end = next + events;
    while (c.done < base + events) {
        while (next < end) {
            err = idevs_launcher_deliver(l, IN_TOPIC, sealed[next], sealed_len[next], NULL, 0, NULL);
            if (err == IDEVS_ERR_QUEUE_FULL)
                break;
            if (err != IDEVS_OK)
                die("deliver", err);
            next++;
        }
        idevs_launcher_poll(l, 100, &cb);
    }
    double t1 = now_s();

    /* ---- latency, one at a time ---- */
    double *lat = calloc(latency_n, sizeof *lat);
    if (lat == NULL)
        return 1;
    for (size_t i = 0; i < latency_n; i++, next++) {
        size_t want = c.done + 1;
        double a = now_s();
        TRY("deliver", idevs_launcher_deliver(l, IN_TOPIC, sealed[next], sealed_len[next], NULL, 0, NULL));
        while (c.done < want)
            idevs_launcher_poll(l, 100, &cb);
        lat[i] = (now_s() - a) * 1e6;
    }
    long rss_after = proc_kb(st.pid, "VmRSS"), hwm_after = proc_kb(st.pid, "VmHWM");

    /* ---- every output opens at the receiver ---- */
    size_t opened = 0;
    for (size_t i = 0; i < c.published && i < c.cap; i++) {
        idevs_opened o;
        memset(&o, 0, sizeof o);
        if (idevs_envelope_open(ck, OUT_TOPIC, c.env[i], c.env_len[i], &o) == IDEVS_OK && o.payload_len == PAYLOAD)
            opened++;
        idevs_opened_clear(&o);
    }

    printf("events through the compartment (%d-byte payloads, echo logic, sealed in and out):\n", PAYLOAD);
    printf("  throughput: %zu events in %.3f s = %.0f events/s (pipelined, up to %u in flight)\n", events, t1 - t0,
           (double)events / (t1 - t0), cfg.max_in_flight);
    printf("  latency, one at a time (%zu events): p50 %.1f us, p99 %.1f us\n", latency_n,
           percentile(lat, latency_n, 0.50), percentile(lat, latency_n, 0.99));
    printf("  for reference, one pipe round trip between two processes on this machine: p50 %.1f us\n",
           pipe_round_trip_us(latency_n));
    printf("  failed deliveries: %zu; outputs %zu, opened by the receiver %zu\n", c.failed, c.published, opened);
    printf("compartment memory (pid %d): VmRSS %ld kB after warm-up, %ld kB at the end; VmHWM %ld -> %ld kB "
           "(target < 4096 kB)\n",
           (int)st.pid, rss, rss_after, hwm, hwm_after);
    printf("  of which after warm-up: anonymous %ld kB, shared-library files %ld kB, program and logic memfds %ld kB\n",
           rss_anon, rss_file, rss_shmem);

    idevs_launcher_free(l);
    idevs_envelope_ctx_free(cs);
    idevs_envelope_ctx_free(ck);
    idevs_cert_policy_free(pol_store);
    idevs_cert_policy_free(pol_sink);
    for (size_t i = 0; i < total; i++)
        free(sealed[i]);
    for (size_t i = 0; i < c.published && i < c.cap; i++)
        free(c.env[i]);
    free(sealed);
    free(sealed_len);
    free(c.env);
    free(c.env_len);
    free(lat);
    free(cert_ms);
    free(ready_ms);
    char cmd[64];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        fprintf(stderr, "bench_compartment: could not remove %s\n", tmp);
    idevs_identity_free(ca);
    idevs_identity_free(authority);
    idevs_identity_free(store);
    idevs_identity_free(sink);
    X509_free(ca_cert);
    X509_free(authority_cert);
    return c.failed == 0 && opened == c.published ? 0 : 1;
}
