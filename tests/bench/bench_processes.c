/* bench_processes: N integration processes on one broker beside one process on another, in one run.
 *
 * Two brokers with mosquitto_idevs.so and the echo logic (tests/logic/echo.c, which emits each input's payload on
 * its output): "one" serves a single process, "many" serves N, each in its own compartment. On each broker one
 * store client seals inputs to every process's input topic, and one sink client subscribes to every process's
 * output topic and opens what comes back. The client side is the same for 1 and N processes: what differs is
 * only what the broker, the plugin and the compartments do.
 *
 * Throughput: closed loop, with the same total window (--window) of messages published and not yet back at the
 * sink on both brokers, the messages spread round robin over the processes. So each configuration is offered
 * the same total load, as much as it sustains, and the ratio many / one is what serving it from N processes
 * instead of one costs. Rounds alternate the two brokers (which goes first alternates too); medians are
 * printed. CPU per message: utime + stime of each broker (/proc/PID/stat) over its rounds, the same for its
 * compartments (its descendants), and this client's own (getrusage), to tell which of them saturates the cores.
 * Memory is the script's: it reads the compartments' smaps_rollup once the runs are over.
 * Latency: both brokers at one fixed total rate, half of the one process's median peak, spread round robin;
 * input published (before sealing) -> output opened at the sink, p50 and p99 over all messages, and the worst
 * process's p99.
 * Partitions: with --partitions P, every input carries the idevs-partition user property (docs/PROTOCOL.md 8.5),
 * message number mod P, so that a process of several instances (process.instances) gets its inputs spread by
 * partition rather than to its least loaded instance (tests/bench/bench_scale.sh compares the two).
 *
 *   bench_processes --store-key K --store-cert C --sink-key K --sink-cert C --ca CA --one-port P --one-pid PID
 *                   --many-port Q --many-pid PID --processes N [--messages M] [--window W] [--rounds R]
 *                   [--seconds S] [--latency-messages L] [--payload-bytes B] [--partitions P]
 *   Rounds: R (7), but no new one after S seconds (30) once 3 are done, and latency over at most L messages
 *   (4000) or 4 s of them, so that a loaded machine does not make the run endless.
 *   CA: the operator CA; the compartments' chains are verified under it, with the process backend allowed.
 *
 * The processes are found by their retained certificates (idevs/<name>/certificate, and each instance's on
 * idevs/<name>/instance/<n>/certificate: an instance's envelopes name its own); each takes input on
 * idevs/<name>/in/events and emits on idevs/<name>/out/out. Run by tests/bench/bench_processes.sh, which starts
 * the brokers. Prints figures and, last, one line "result key=value..." for the script; asserts nothing. */
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <mosquitto.h>
#include <mqtt_protocol.h>

#include "bench_common.h"
#include "idevs_cert.h"
#include "idevs_deployment.h"
#include "idevs_envelope.h"
#include "idevs_identity.h"

#define PROCS_MAX 64
#define MESSAGES_MAX 200000
#define ROUNDS_MAX 20
#define MIN_ROUNDS 3 /* before --seconds may end the throughput rounds */
#define LATENCY_SECONDS 4
#define PAYLOAD_MAX 4096
#define TOPIC_MAX 160
#define RUN_LIMIT_US (60u * 1000000u)

typedef struct proc {
    char name[72];
    char in_topic[TOPIC_MAX];
    char out_topic[TOPIC_MAX];
    idevs_uuid uuid;
} proc;

typedef struct side {
    const char *label;
    int port, pid;
    unsigned want; /* processes expected */
    unsigned n;    /* processes whose certificate arrived */
    proc procs[PROCS_MAX];
    struct mosquitto *store, *sink;
    idevs_envelope_ctx *seal_ctx, *open_ctx;
    unsigned subacks;
    bool failed;
    /* the run under way */
    unsigned tag, total, published, received, stale, rejected;
    uint64_t *sent_at; /* per message number */
    uint64_t *rtt;     /* input published -> output opened, per message number; 0: not back */
} side;

static idevs_cert_policy *policy;
static idevs_identity *store_id, *sink_id;
static unsigned payload_bytes = 256;
static unsigned partitions; /* --partitions: 0, no partition property */

/* ---- /proc: CPU time of a process and of its children ---- */

static uint64_t cpu_ticks(int pid)
{
    char path[64], line[1024] = "";
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f != NULL) {
        if (fgets(line, sizeof line, f) == NULL)
            line[0] = '\0';
        fclose(f);
    }
    /* Fields 14 and 15, after the command name in parentheses (which may hold anything). */
    const char *after = strrchr(line, ')');
    unsigned long long utime = 0, stime = 0;
    return after != NULL && sscanf(after, ") %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                                   &stime) == 2
               ? utime + stime
               : 0;
}

/* Summed over the descendants of pid, `depth` generations down (the compartments of a broker, each a key
 * holder and its logic process), through the children of each of their threads. */
static uint64_t descendants_cpu_ticks(int pid, int depth)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", pid);
    DIR *d = depth > 0 ? opendir(path) : NULL;
    if (d == NULL)
        return 0;
    uint64_t sum = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char file[320];
        snprintf(file, sizeof file, "/proc/%d/task/%s/children", pid, e->d_name);
        FILE *f = fopen(file, "r");
        if (f == NULL)
            continue;
        int child;
        while (fscanf(f, "%d", &child) == 1)
            sum += cpu_ticks(child) + descendants_cpu_ticks(child, depth - 1);
        fclose(f);
    }
    closedir(d);
    return sum;
}

/* ---- the clients ---- */

/* Whether rest, what follows a process's name in a certificate topic, is "/certificate" or
 * "/instance/<n>/certificate". */
static bool certificate_topic_rest(const char *rest)
{
    int used = 0;
    unsigned instance;
    return strcmp(rest, "/certificate") == 0 ||
           (sscanf(rest, "/instance/%u/certificate%n", &instance, &used) == 1 && used > 0 && rest[used] == '\0');
}

/* idevs/<name>/certificate or an instance's: registers (or renews) the chain with both contexts. A fresh receiver
 * needs every instance's: after the first message of an epoch, an instance's envelopes carry only the digest of
 * its own certificate. */
static void on_certificate(side *s, const struct mosquitto_message *msg)
{
    if (strncmp(msg->topic, "idevs/", 6) != 0)
        return;
    const char *name = msg->topic + 6, *end = strchr(name, '/');
    if (end == NULL || !certificate_topic_rest(end) || (size_t)(end - name) >= sizeof s->procs[0].name)
        return;
    size_t name_len = (size_t)(end - name);
    uint8_t *der[IDEVS_CHAIN_MAX];
    size_t der_len[IDEVS_CHAIN_MAX], count = 0;
    char why[256];
    idevs_cert_info info;
    idevs_err err = idevs_cert_read_chain_pem(msg->payload, (size_t)msg->payloadlen, der, der_len, IDEVS_CHAIN_MAX,
                                              &count, why, sizeof why);
    if (err == IDEVS_OK)
        err = idevs_envelope_add_peer(s->seal_ctx, (const uint8_t *const *)der, der_len, count, &info);
    if (err == IDEVS_OK)
        err = idevs_envelope_add_peer(s->open_ctx, (const uint8_t *const *)der, der_len, count, NULL);
    idevs_cert_chain_free(der, count);
    if (err != IDEVS_OK) {
        fprintf(stderr, "bench: %s: the chain on %s is refused: %s\n", s->label, msg->topic, idevs_err_name(err));
        s->failed = true;
        return;
    }
    unsigned i = 0;
    while (i < s->n && !(strncmp(s->procs[i].name, name, name_len) == 0 && s->procs[i].name[name_len] == '\0'))
        i++;
    if (i == s->n) {
        if (s->n == PROCS_MAX)
            return;
        proc *p = &s->procs[s->n++];
        snprintf(p->name, sizeof p->name, "%.*s", (int)name_len, name);
        snprintf(p->in_topic, sizeof p->in_topic, "idevs/%.*s/in/events", (int)name_len, name);
        snprintf(p->out_topic, sizeof p->out_topic, "idevs/%.*s/out/out", (int)name_len, name);
    }
    s->procs[i].uuid = info.uuid;
}

/* An output: "r<tag> m<number> ..." opened; the round trip of that message. */
static void on_output(side *s, const struct mosquitto_message *msg)
{
    idevs_opened o;
    if (idevs_envelope_open(s->open_ctx, msg->topic, msg->payload, (size_t)msg->payloadlen, &o) != IDEVS_OK) {
        s->rejected++;
        return;
    }
    uint64_t now = bench_now_us();
    unsigned tag = 0, number = 0;
    if (sscanf((const char *)o.payload, "r%u m%u", &tag, &number) == 2 && tag == s->tag && number < s->published &&
        s->rtt[number] == 0) {
        s->rtt[number] = now - s->sent_at[number] + 1;
        s->received++;
    } else
        s->stale++;
    idevs_opened_clear(&o);
}

static void on_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                       const mosquitto_property *props)
{
    (void)props;
    side *s = arg;
    if (m == s->store)
        on_certificate(s, msg);
    else
        on_output(s, msg);
}

static void on_subscribe(struct mosquitto *m, void *arg, int mid, int count, const int *granted)
{
    (void)m, (void)mid;
    side *s = arg;
    if (count < 1 || granted[0] > 2) {
        fprintf(stderr, "bench: %s: a subscription is refused\n", s->label);
        s->failed = true;
    }
    s->subacks++;
}

/* Runs the clients with something to do, waiting at most timeout_ms. */
static void side_turn(side *s, int timeout_ms)
{
    struct mosquitto *all[2] = {s->store, s->sink};
    if (!bench_loop_ready(all, 2, timeout_ms)) {
        fprintf(stderr, "bench: %s: a client lost its connection\n", s->label);
        s->failed = true;
    }
}

static bool side_turn_until(side *s, const unsigned *counter, unsigned want, unsigned seconds)
{
    uint64_t deadline = bench_now_us() + seconds * 1000000u;
    while (*counter < want && !s->failed && bench_now_us() < deadline)
        side_turn(s, 10);
    return *counter >= want && !s->failed;
}

/* Connects both clients, collects the processes' certificates, subscribes the sink to every output topic. */
static bool side_start(side *s)
{
    char id[64];
    idevs_err err = idevs_envelope_ctx_new(store_id, policy, NULL, &s->seal_ctx);
    if (err == IDEVS_OK)
        err = idevs_envelope_ctx_new(sink_id, policy, NULL, &s->open_ctx);
    if (err != IDEVS_OK) {
        fprintf(stderr, "bench: envelope context: %s\n", idevs_err_name(err));
        return false;
    }
    snprintf(id, sizeof id, "bench-%s-store", s->label);
    if ((s->store = bench_client(id, s->port, s, on_message)) == NULL)
        return false;
    snprintf(id, sizeof id, "bench-%s-sink", s->label);
    if ((s->sink = bench_client(id, s->port, s, on_message)) == NULL)
        return false;
    mosquitto_subscribe_callback_set(s->sink, on_subscribe);
    /* The instances' first: their retained chains then arrive before the process counts as found. */
    if (mosquitto_subscribe(s->store, NULL, "idevs/+/instance/+/certificate", 1) != MOSQ_ERR_SUCCESS ||
        mosquitto_subscribe(s->store, NULL, "idevs/+/certificate", 1) != MOSQ_ERR_SUCCESS ||
        !side_turn_until(s, &s->n, s->want, 15)) {
        fprintf(stderr, "bench: %s: %u of %u certificates arrived\n", s->label, s->n, s->want);
        return false;
    }
    for (unsigned i = 0; i < s->n; i++)
        if (mosquitto_subscribe(s->sink, NULL, s->procs[i].out_topic, 1) != MOSQ_ERR_SUCCESS)
            return false;
    return side_turn_until(s, &s->subacks, s->n, 10);
}

static void side_free(side *s)
{
    if (s->store != NULL)
        mosquitto_destroy(s->store);
    if (s->sink != NULL)
        mosquitto_destroy(s->sink);
    idevs_envelope_ctx_free(s->seal_ctx);
    idevs_envelope_ctx_free(s->open_ctx);
    free(s->sent_at);
    free(s->rtt);
}

/* The MQTT 5 properties of message number: its partition, number mod --partitions, in decimal (NULL: none). */
static mosquitto_property *partition_property(unsigned number)
{
    mosquitto_property *props = NULL;
    if (partitions == 0)
        return NULL;
    char text[16];
    snprintf(text, sizeof text, "%u", number % partitions);
    if (mosquitto_property_add_string_pair(&props, MQTT_PROP_USER_PROPERTY, IDEVS_PARTITION_PROPERTY, text) !=
        MOSQ_ERR_SUCCESS)
        fprintf(stderr, "bench: cannot add the partition property\n"); /* then unkeyed, as the counters show */
    return props;
}

/* Seals message number `published` to process number % n and publishes it at QoS 1. */
static bool publish_next(side *s)
{
    unsigned number = s->published;
    const proc *p = &s->procs[number % s->n];
    char text[PAYLOAD_MAX];
    int head = snprintf(text, sizeof text, "r%u m%u ", s->tag, number);
    size_t len = payload_bytes > (unsigned)head ? payload_bytes : (size_t)head;
    memset(text + head, 'x', len - (size_t)head);
    s->sent_at[number] = bench_now_us();
    idevs_seal_input in = {.recipient = &p->uuid, .topic = p->in_topic, .payload = (const uint8_t *)text,
                           .payload_len = len};
    uint8_t *env = NULL;
    size_t env_len = 0;
    idevs_err err = idevs_envelope_seal(s->seal_ctx, &in, &env, &env_len, NULL);
    mosquitto_property *props = err == IDEVS_OK ? partition_property(number) : NULL;
    int rc = err == IDEVS_OK ? mosquitto_publish_v5(s->store, NULL, p->in_topic, (int)env_len, env, 1, false, props)
                             : MOSQ_ERR_INVAL;
    mosquitto_property_free_all(&props);
    free(env);
    if (rc != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: %s: cannot seal or publish: %s\n", s->label,
                err != IDEVS_OK ? idevs_err_name(err) : mosquitto_strerror(rc));
        return false;
    }
    s->published++;
    return true;
}

/* Publishes `total` messages round robin over the processes, closed loop with `window` (rate 0) or at `rate`
 * per second, until every output is back. */
static bool drive(side *s, unsigned total, unsigned rate, unsigned window)
{
    s->tag++;
    s->total = total;
    s->published = s->received = s->stale = s->rejected = 0;
    memset(s->rtt, 0, total * sizeof *s->rtt);
    bench_pace pace = {.total = total, .rate = rate, .window = window, .start = bench_now_us()};
    while (s->received < total) {
        if (s->failed || bench_now_us() > pace.start + RUN_LIMIT_US) {
            fprintf(stderr, "bench: %s: run stopped: %u of %u outputs back (%u rejected)\n", s->label, s->received,
                    total, s->rejected);
            return false;
        }
        while (bench_pace_due(&pace, s->published, s->received))
            if (!publish_next(s))
                return false;
        side_turn(s, bench_pace_wait_ms(&pace, s->published, s->received));
    }
    if (s->rejected > 0 || s->stale > 0)
        fprintf(stderr, "bench: %s: %u outputs did not open, %u were of an earlier run\n", s->label, s->rejected,
                s->stale);
    return true;
}

/* Round trips of the last run, of process k (or of all, k < 0), sorted into out; how many. */
static size_t latencies(const side *s, int k, uint64_t *out)
{
    size_t c = 0;
    for (unsigned i = 0; i < s->total; i++)
        if (s->rtt[i] != 0 && (k < 0 || i % s->n == (unsigned)k))
            out[c++] = s->rtt[i];
    bench_sort_u64(out, c);
    return c;
}

typedef struct lat_figures {
    double p50_ms, p99_ms, worst_p99_ms;
    char worst[72];
} lat_figures;

static void latency_figures(const side *s, uint64_t *scratch, lat_figures *f)
{
    size_t c = latencies(s, -1, scratch);
    f->p50_ms = c > 0 ? (double)bench_percentile(scratch, c, 50) / 1000 : 0;
    f->p99_ms = c > 0 ? (double)bench_percentile(scratch, c, 99) / 1000 : 0;
    f->worst_p99_ms = 0;
    f->worst[0] = '\0';
    for (unsigned k = 0; k < s->n; k++) {
        size_t ck = latencies(s, (int)k, scratch);
        double p99 = ck > 0 ? (double)bench_percentile(scratch, ck, 99) / 1000 : 0;
        if (p99 >= f->worst_p99_ms) {
            f->worst_p99_ms = p99;
            snprintf(f->worst, sizeof f->worst, "%s", s->procs[k].name);
        }
    }
}

/* ---- main ---- */

static int usage(const char *why)
{
    fprintf(stderr, "bench_processes: %s\nusage: bench_processes --store-key K --store-cert C --sink-key K "
                    "--sink-cert C --ca CA --one-port P --one-pid PID --many-port Q --many-pid PID --processes N "
                    "[--messages M] [--window W] [--rounds R] [--seconds S] [--latency-messages L] "
                    "[--payload-bytes B] [--partitions P]\n",
            why);
    return 2;
}

static bool number(const char *text, unsigned long min, unsigned long max, unsigned *out)
{
    char *end = NULL;
    unsigned long v = strtoul(text, &end, 10);
    if (end == text || *end != '\0' || v < min || v > max)
        return false;
    *out = (unsigned)v;
    return true;
}

typedef struct options {
    const char *store_key, *store_cert, *sink_key, *sink_cert, *ca;
    unsigned one_port, one_pid, many_port, many_pid, processes, messages, window, rounds, seconds, latency_messages;
} options;

/* Every option takes a value: a path, or a whole number in a range. */
static int parse(int argc, char **argv, options *o)
{
    *o = (options){.messages = 4000, .window = 128, .rounds = 7, .seconds = 30, .latency_messages = 4000};
    const struct {
        const char *name;
        const char **path;
        unsigned *value;
        unsigned long min, max;
    } opt[] = {{"--store-key", &o->store_key, NULL, 0, 0},
               {"--store-cert", &o->store_cert, NULL, 0, 0},
               {"--sink-key", &o->sink_key, NULL, 0, 0},
               {"--sink-cert", &o->sink_cert, NULL, 0, 0},
               {"--ca", &o->ca, NULL, 0, 0},
               {"--one-port", NULL, &o->one_port, 1, 65535},
               {"--many-port", NULL, &o->many_port, 1, 65535},
               {"--one-pid", NULL, &o->one_pid, 1, 1u << 30},
               {"--many-pid", NULL, &o->many_pid, 1, 1u << 30},
               {"--processes", NULL, &o->processes, 1, PROCS_MAX},
               {"--messages", NULL, &o->messages, 100, MESSAGES_MAX},
               {"--window", NULL, &o->window, 1, 100000},
               {"--rounds", NULL, &o->rounds, 1, ROUNDS_MAX},
               {"--seconds", NULL, &o->seconds, 1, 3600},
               {"--latency-messages", NULL, &o->latency_messages, 100, MESSAGES_MAX},
               {"--payload-bytes", NULL, &payload_bytes, 16, PAYLOAD_MAX},
               {"--partitions", NULL, &partitions, 0, IDEVS_DEPLOYMENT_MAX_PARTITIONS}};
    for (int i = 1; i < argc; i += 2) {
        size_t k = 0;
        while (k < sizeof opt / sizeof opt[0] && strcmp(argv[i], opt[k].name) != 0)
            k++;
        if (k == sizeof opt / sizeof opt[0])
            return usage("unknown option");
        if (i + 1 >= argc)
            return usage("an option lacks its value");
        if (opt[k].path != NULL)
            *opt[k].path = argv[i + 1];
        else if (!number(argv[i + 1], opt[k].min, opt[k].max, opt[k].value))
            return usage("a bad value");
    }
    if (o->store_key == NULL || o->store_cert == NULL || o->sink_key == NULL || o->sink_cert == NULL ||
        o->ca == NULL || o->one_port == 0 || o->one_pid == 0 || o->many_port == 0 || o->many_pid == 0 ||
        o->processes == 0)
        return usage("the keys, certificates, CA, ports, pids and --processes are required");
    /* The compartments run in the process backend (the plugin's): accepted under that loud name. */
    if (idevs_cert_policy_add_ca_file(policy, o->ca) != IDEVS_OK)
        return usage("--ca: cannot load the operator CA");
    idevs_cert_policy_allow_process_backend_insecure(policy);
    return 0;
}

typedef struct usage_sum {
    uint64_t broker, compartments, client_us, messages;
} usage_sum;

/* This client's own CPU time (all its clients run in this thread), microseconds. */
static uint64_t self_cpu_us(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000u +
           (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
}

/* A throughput run of s: messages per second; its CPU added to u. */
static double timed_run(side *s, const options *o, usage_sum *u, bool *ok)
{
    uint64_t b0 = cpu_ticks(s->pid), c0 = descendants_cpu_ticks(s->pid, 3), u0 = self_cpu_us(), t0 = bench_now_us();
    *ok = drive(s, o->messages, 0, o->window);
    uint64_t t1 = bench_now_us();
    u->client_us += self_cpu_us() - u0;
    u->broker += cpu_ticks(s->pid) - b0;
    u->compartments += descendants_cpu_ticks(s->pid, 3) - c0;
    u->messages += o->messages;
    return o->messages / ((double)(t1 - t0) / 1e6);
}

static double us_per_message(uint64_t ticks, uint64_t messages)
{
    return messages == 0 ? 0 : (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK) / (double)messages;
}

int main(int argc, char **argv)
{
    options o;
    policy = idevs_cert_policy_new();
    if (policy == NULL)
        return 1;
    int rc = parse(argc, argv, &o);
    if (rc != 0) {
        idevs_cert_policy_free(policy);
        return rc;
    }
    rc = 1;
    mosquitto_lib_init();
    unsigned most = o.messages > o.latency_messages ? o.messages : o.latency_messages;
    side one = {.label = "one", .port = (int)o.one_port, .pid = (int)o.one_pid, .want = 1};
    side many = {.label = "many", .port = (int)o.many_port, .pid = (int)o.many_pid, .want = o.processes};
    side *both[2] = {&one, &many};
    uint64_t *scratch = calloc(most, sizeof *scratch);
    idevs_err err = idevs_identity_load(o.store_key, o.store_cert, &store_id);
    if (err == IDEVS_OK)
        err = idevs_identity_load(o.sink_key, o.sink_cert, &sink_id);
    if (err != IDEVS_OK) {
        fprintf(stderr, "bench: loading the identities: %s\n", idevs_strerror(err));
        goto out;
    }
    for (int i = 0; i < 2; i++) {
        both[i]->sent_at = calloc(most, sizeof *both[i]->sent_at);
        both[i]->rtt = calloc(most, sizeof *both[i]->rtt);
        if (scratch == NULL || both[i]->sent_at == NULL || both[i]->rtt == NULL || !side_start(both[i]))
            goto out;
    }
    /* Warm-up: a key epoch with every process is set up once, outside the timed runs. */
    for (int i = 0; i < 2; i++) {
        unsigned warm = 20 * both[i]->n > 400 ? 20 * both[i]->n : 400;
        if (!drive(both[i], warm < most ? warm : most, 0, o.window))
            goto out;
    }

    printf("%u process(es) beside one: %u messages of %u B a round, closed loop, window %u in total "
           "(about %u per process)\n",
           many.n, o.messages, payload_bytes, o.window, (o.window + many.n - 1) / many.n);
    double one_rate[ROUNDS_MAX], many_rate[ROUNDS_MAX], ratio[ROUNDS_MAX];
    usage_sum one_use = {0}, many_use = {0};
    unsigned rounds = 0;
    uint64_t began = bench_now_us();
    for (unsigned k = 0; k < o.rounds; k++) {
        bool ok1 = true, ok2 = true;
        if (k % 2 == 0) {
            one_rate[k] = timed_run(&one, &o, &one_use, &ok1);
            side_turn(&many, 0);
            many_rate[k] = timed_run(&many, &o, &many_use, &ok2);
            side_turn(&one, 0);
        } else {
            many_rate[k] = timed_run(&many, &o, &many_use, &ok2);
            side_turn(&one, 0);
            one_rate[k] = timed_run(&one, &o, &one_use, &ok1);
            side_turn(&many, 0);
        }
        if (!ok1 || !ok2)
            goto out;
        ratio[k] = many_rate[k] / one_rate[k];
        printf("  round %u: one %6.0f msg/s, %2u processes %6.0f msg/s, ratio %.2f\n", k + 1, one_rate[k], many.n,
               many_rate[k], ratio[k]);
        rounds = k + 1;
        if (rounds >= MIN_ROUNDS && rounds < o.rounds && bench_now_us() - began > o.seconds * 1000000ull) {
            printf("  (no more rounds: %u s spent, over the budget of --seconds %u)\n",
                   (unsigned)((bench_now_us() - began) / 1000000u), o.seconds);
            break;
        }
    }
    double one_med = bench_median(one_rate, rounds), many_med = bench_median(many_rate, rounds);
    double ratio_med = bench_median(ratio, rounds);
    printf("  median: one %6.0f msg/s, %2u processes %6.0f msg/s, ratio %.2f\n", one_med, many.n, many_med,
           ratio_med);
    double cpu_one = us_per_message(one_use.broker, one_use.messages),
           cpu_many = us_per_message(many_use.broker, many_use.messages),
           comp_one = us_per_message(one_use.compartments, one_use.messages),
           comp_many = us_per_message(many_use.compartments, many_use.messages),
           client_one = (double)one_use.client_us / (double)one_use.messages,
           client_many = (double)many_use.client_us / (double)many_use.messages;
    printf("  CPU per message: broker one %.1f us, %u processes %.1f us; compartments one %.1f us, %u processes "
           "%.1f us; this client %.1f us, %.1f us\n",
           cpu_one, many.n, cpu_many, comp_one, many.n, comp_many, client_one, client_many);

    /* At most LATENCY_SECONDS of messages a broker, so that a loaded machine's low rates do not stretch it. */
    unsigned rate = (unsigned)(one_med / 2) > 0 ? (unsigned)(one_med / 2) : 1;
    unsigned count = rate * LATENCY_SECONDS < o.latency_messages ? rate * LATENCY_SECONDS : o.latency_messages;
    count = count < 200 ? 200 : count;
    lat_figures lo, lm;
    if (!drive(&one, count, rate, o.window))
        goto out;
    latency_figures(&one, scratch, &lo);
    side_turn(&many, 0);
    uint64_t t0 = bench_now_us();
    if (!drive(&many, count, rate, o.window))
        goto out;
    double took = (double)(bench_now_us() - t0) / 1e6;
    latency_figures(&many, scratch, &lm);
    printf("  latency at %u msg/s in total (half of one process's peak), %u messages: one p50 %.3f ms p99 %.3f ms;"
           " %u processes p50 %.3f ms p99 %.3f ms, worst process (%s) p99 %.3f ms\n",
           rate, count, lo.p50_ms, lo.p99_ms, many.n, lm.p50_ms, lm.p99_ms, lm.worst, lm.worst_p99_ms);
    /* Near or above their peak, or slower than offered: the N processes' figures are a queue's. */
    bool queueing = rate > 0.9 * many_med || took > 1.25 * count / rate;
    if (queueing)
        printf("  (the %u processes did not keep up with that rate (near their peak, or %.1f s for %.1f s of "
               "messages): their latency is mostly queueing)\n",
               many.n, took, (double)count / rate);
    printf("result processes=%u one_rate=%.0f many_rate=%.0f ratio=%.3f latency_rate=%u p50_ms=%.3f p99_ms=%.3f "
           "worst_p99_ms=%.3f one_p50_ms=%.3f one_p99_ms=%.3f cpu_us=%.1f one_cpu_us=%.1f comp_cpu_us=%.1f "
           "one_comp_cpu_us=%.1f client_cpu_us=%.1f one_client_cpu_us=%.1f queueing=%d\n",
           many.n, one_med, many_med, ratio_med, rate, lm.p50_ms, lm.p99_ms, lm.worst_p99_ms, lo.p50_ms, lo.p99_ms,
           cpu_many, cpu_one, comp_many, comp_one, client_many, client_one, queueing);
    rc = 0;
out:
    for (int i = 0; i < 2; i++)
        side_free(both[i]);
    free(scratch);
    idevs_identity_free(store_id);
    idevs_identity_free(sink_id);
    idevs_cert_policy_free(policy);
    mosquitto_lib_cleanup();
    return rc;
}
