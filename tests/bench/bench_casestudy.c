/* bench_casestudy: the whole confidential path of the case study beside plain Mosquitto, in one run.
 *
 * idevs: store, taxi and messaging (the service library) against a broker with mosquitto_idevs.so and the
 * rewards compartment: each sale is sealed in, opened in the compartment, a ride request sealed out to taxi,
 * taxi's answer sealed back in, a confirmation sealed out to messaging: four messages through the broker.
 *
 * plain: the same four messages of the same sizes and QoS through a broker without the plugin, with the
 * integration process as an ordinary MQTT client (plaintext JSON, the same threshold decision): what running
 * the integration without confidentiality costs.
 *
 * Phase 1 (throughput): N sales published as fast as the flow allows; time until the N-th confirmation.
 * Phase 2 (latency): sales at half of idevs's measured peak rate; sale published -> ride request received by
 * taxi, p50 and p99. All clients run in this one thread; the broker and the compartment are other processes.
 *
 *   bench_casestudy --pki DIR --idevs-port P --plain-port Q [--sales N] [--latency-sales M] [--rounds R]
 *
 * Run by tests/bench/bench_casestudy.sh, which starts both brokers. Prints figures; asserts nothing. */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mosquitto.h>

#include "bench_common.h"
#include "idevs_service.h"

#define SALES_MAX 100000
#define WINDOW 200
#define ROUNDS_MAX 20 /* sales published and not yet confirmed, in the throughput phase */

/* ---- what flows: the case study's payloads (docs/CASESTUDY.md); every sale qualifies ---- */

static int sale_json(char *buf, size_t cap, unsigned n)
{
    return snprintf(buf, cap,
                    "{\"sale_id\":\"S-%06u\",\"time\":\"2026-11-21T10:15:00Z\",\"customer\":{\"id\":\"C-%04u\","
                    "\"name\":\"Ana Lima\",\"phone\":\"+44 7700 900123\",\"address\":\"12 Harbour Street, Leith, "
                    "Edinburgh EH6 6LA\"},\"items\":[{\"sku\":\"JKT-204\",\"name\":\"Rain jacket\",\"qty\":1,"
                    "\"price\":\"129.00\"},{\"sku\":\"SCK-011\",\"name\":\"Wool socks\",\"qty\":2,\"price\":\"10.50\"}],"
                    "\"total\":\"150.00\"}",
                    n, n % 1000);
}

static unsigned sale_number(const uint8_t *payload, size_t len)
{
    const char *p = memmem(payload, len, "S-", 2);
    return p != NULL ? (unsigned)strtoul(p + 2, NULL, 10) : 0;
}

typedef struct run {
    const char *label;
    unsigned sales;
    unsigned published;
    unsigned requests;      /* ride requests seen by taxi */
    unsigned confirmations; /* confirmations seen by messaging */
    uint64_t *sent_at;      /* per sale number */
    uint64_t *latency;      /* sale published -> request at taxi, per received request */
    size_t latency_count;
    size_t bytes_in[4];     /* payload bytes of one message at each hop, for the plain run to match */
} run;

static void note_request(run *r, const uint8_t *payload, size_t len)
{
    unsigned n = sale_number(payload, len);
    if (n < r->sales && r->sent_at[n] != 0 && r->latency_count < r->sales)
        r->latency[r->latency_count++] = bench_now_us() - r->sent_at[n];
    r->requests++;
}

/* ---- idevs: three services over the service library ---- */

typedef struct idevs_side {
    idevs_service *store, *taxi, *messaging;
    struct mosquitto *watcher; /* sees the sealed envelopes, to give the plain run the same sizes */
    size_t sealed[4];          /* smallest envelope seen per hop: the steady-state size, without a chain */
    run *r;
} idevs_side;

static const char *const idevs_topic[4] = {"idevs/rewards/in/sales", "idevs/rewards/req/ride",
                                           "idevs/rewards/resp/ride", "idevs/rewards/out/confirmation"};

static void on_watch(struct mosquitto *m, void *arg, const struct mosquitto_message *msg)
{
    (void)m;
    idevs_side *s = arg;
    for (int hop = 0; hop < 4; hop++)
        if (strcmp(msg->topic, idevs_topic[hop]) == 0 &&
            (s->sealed[hop] == 0 || (size_t)msg->payloadlen < s->sealed[hop]))
            s->sealed[hop] = (size_t)msg->payloadlen;
}

static void on_taxi(idevs_service *svc, const idevs_service_message *m, void *arg)
{
    idevs_side *s = arg;
    if (m->kind != IDEVS_SERVICE_REQUEST)
        return;
    note_request(s->r, m->payload, m->payload_len);
    unsigned n = sale_number(m->payload, m->payload_len);
    char answer[256];
    int len = snprintf(answer, sizeof answer,
                       "{\"booking_ref\":\"S-%06u\",\"driver\":\"Sam Okafor\",\"vehicle\":\"Blue Skoda Octavia "
                       "SK21 XYZ\",\"eta_minutes\":7}",
                       n);
    s->r->bytes_in[1] = m->payload_len;
    s->r->bytes_in[2] = (size_t)len;
    if (idevs_service_respond(svc, m, answer, (size_t)len) != IDEVS_OK)
        fprintf(stderr, "bench: taxi could not answer\n");
}

static void on_messaging(idevs_service *svc, const idevs_service_message *m, void *arg)
{
    (void)svc;
    idevs_side *s = arg;
    s->r->bytes_in[3] = m->payload_len;
    s->r->confirmations++;
}

static idevs_service *service(const char *pki, int port, const char *name, idevs_service_on_message fn, void *arg)
{
    static const char *const policy[] = {"allow-process-backend-insecure", NULL};
    char key[512], cert[512], ca[512], why[512] = "";
    snprintf(key, sizeof key, "%s/%s.key", pki, name);
    snprintf(cert, sizeof cert, "%s/%s.crt", pki, name);
    snprintf(ca, sizeof ca, "%s/ca.crt", pki);
    idevs_service_config cfg;
    idevs_service_config_default(&cfg);
    cfg.port = port;
    cfg.key_file = key;
    cfg.cert_file = cert;
    cfg.operator_ca = ca;
    cfg.process = "rewards";
    cfg.policy = policy;
    idevs_service *svc = NULL;
    if (idevs_service_new(&cfg, fn, arg, &svc, why, sizeof why) != IDEVS_OK ||
        idevs_service_start(svc, why, sizeof why) != IDEVS_OK) {
        fprintf(stderr, "bench: %s cannot start: %s\n", name, why);
        idevs_service_free(svc);
        return NULL;
    }
    return svc;
}

static void idevs_turn_wait(idevs_side *s, int timeout_ms)
{
    int fds[4] = {idevs_service_socket(s->store), idevs_service_socket(s->taxi), idevs_service_socket(s->messaging),
                  s->watcher != NULL ? mosquitto_socket(s->watcher) : -1};
    bool ww[4] = {idevs_service_want_write(s->store), idevs_service_want_write(s->taxi),
                  idevs_service_want_write(s->messaging), s->watcher != NULL && mosquitto_want_write(s->watcher)};
    bool ready[4];
    bench_wait_sockets(fds, ww, 4, timeout_ms, ready);
    if (s->watcher != NULL && ready[3])
        mosquitto_loop(s->watcher, 0, 1);
    if (ready[0])
        idevs_service_run(s->store, 0);
    if (ready[1])
        idevs_service_run(s->taxi, 0);
    if (ready[2])
        idevs_service_run(s->messaging, 0);
}

/* Every client runs: keepalives and acknowledgements that need no readable socket. */
static void idevs_turn(idevs_side *s)
{
    if (s->watcher != NULL)
        mosquitto_loop(s->watcher, 0, 1);
    idevs_service_run(s->store, 0);
    idevs_service_run(s->taxi, 0);
    idevs_service_run(s->messaging, 0);
}

/* Publishes sales with at most `window` unconfirmed, or at `rate` per second when rate > 0. */
static bool idevs_drive(idevs_side *s, unsigned rate, unsigned window)
{
    run *r = s->r;
    char sale[1024];
    bench_pace pace = {.total = r->sales, .rate = rate, .window = window, .start = bench_now_us()};
    uint64_t deadline = pace.start + 120u * 1000000u;
    while (r->confirmations < r->sales) {
        if (bench_now_us() > deadline) {
            fprintf(stderr, "bench: idevs run stopped after 120 s: %u of %u confirmations\n", r->confirmations,
                    r->sales);
            return false;
        }
        if (bench_pace_due(&pace, r->published, r->confirmations)) {
            int len = sale_json(sale, sizeof sale, r->published);
            r->sent_at[r->published] = bench_now_us();
            r->bytes_in[0] = (size_t)len;
            if (idevs_service_publish(s->store, "sales", sale, (size_t)len, NULL) != IDEVS_OK) {
                fprintf(stderr, "bench: the store cannot publish\n");
                return false;
            }
            r->published++;
        }
        idevs_turn_wait(s, bench_pace_wait_ms(&pace, r->published, r->confirmations));
    }
    return true;
}

/* ---- plain: the same flow through a broker without the plugin ---- */

typedef struct plain_side {
    struct mosquitto *store, *process, *taxi, *messaging;
    run *r;
    char pad[4][4096]; /* payloads padded to the sealed sizes of the idevs run */
    size_t size[4];
} plain_side;

static const char *const plain_topic[4] = {"plain/rewards/in/sales", "plain/rewards/req/ride",
                                           "plain/rewards/resp/ride", "plain/rewards/out/confirmation"};

static void plain_publish(struct mosquitto *m, int hop, plain_side *s, unsigned n)
{
    char *p = s->pad[hop];
    int head = snprintf(p, sizeof s->pad[hop], "{\"ref\":\"S-%06u\",\"total\":\"150.00\"}", n);
    size_t len = s->size[hop] > (size_t)head ? s->size[hop] : (size_t)head;
    if (len > sizeof s->pad[hop])
        len = sizeof s->pad[hop];
    memset(p + head, ' ', len - (size_t)head);
    if (mosquitto_publish_v5(m, NULL, plain_topic[hop], (int)len, p, 1, false, NULL) != MOSQ_ERR_SUCCESS)
        fprintf(stderr, "bench: plain publish failed\n");
}

static void on_plain_message(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                             const mosquitto_property *props)
{
    (void)props;
    plain_side *s = arg;
    unsigned n = sale_number(msg->payload, (size_t)msg->payloadlen);
    if (m == s->process && strcmp(msg->topic, plain_topic[0]) == 0) {
        /* the integration process as a client: the same decision, in the clear */
        const char *t = memmem(msg->payload, (size_t)msg->payloadlen, "\"total\":\"", 9);
        if (t != NULL && strtol(t + 9, NULL, 10) >= 150)
            plain_publish(m, 1, s, n);
    } else if (m == s->taxi) {
        note_request(s->r, msg->payload, (size_t)msg->payloadlen);
        plain_publish(m, 2, s, n);
    } else if (m == s->process && strcmp(msg->topic, plain_topic[2]) == 0) {
        plain_publish(m, 3, s, n);
    } else if (m == s->messaging) {
        s->r->confirmations++;
    }
}

static struct mosquitto *plain_client(plain_side *s, int port, const char *id, const char *topic1,
                                      const char *topic2)
{
    struct mosquitto *m = bench_client(id, port, s, on_plain_message);
    if (m == NULL)
        return NULL;
    if ((topic1 != NULL && mosquitto_subscribe(m, NULL, topic1, 1) != MOSQ_ERR_SUCCESS) ||
        (topic2 != NULL && mosquitto_subscribe(m, NULL, topic2, 1) != MOSQ_ERR_SUCCESS)) {
        mosquitto_destroy(m);
        return NULL;
    }
    return m;
}

static void plain_turn_wait(plain_side *s, int timeout_ms)
{
    struct mosquitto *all[4] = {s->store, s->process, s->taxi, s->messaging};
    (void)bench_loop_ready(all, 4, timeout_ms);
}

static void plain_turn(plain_side *s)
{
    mosquitto_loop(s->store, 0, 1);
    mosquitto_loop(s->process, 0, 1);
    mosquitto_loop(s->taxi, 0, 1);
    mosquitto_loop(s->messaging, 0, 1);
}

static bool plain_drive(plain_side *s, unsigned rate, unsigned window)
{
    run *r = s->r;
    bench_pace pace = {.total = r->sales, .rate = rate, .window = window, .start = bench_now_us()};
    uint64_t deadline = pace.start + 120u * 1000000u;
    while (r->confirmations < r->sales) {
        if (bench_now_us() > deadline) {
            fprintf(stderr, "bench: plain run stopped after 120 s\n");
            return false;
        }
        if (bench_pace_due(&pace, r->published, r->confirmations)) {
            r->sent_at[r->published] = bench_now_us();
            plain_publish(s->store, 0, s, r->published);
            r->published++;
        }
        plain_turn_wait(s, bench_pace_wait_ms(&pace, r->published, r->confirmations));
    }
    return true;
}

/* ---- the runs ---- */

static void run_init(run *r, const char *label, unsigned sales)
{
    memset(r, 0, sizeof *r);
    r->label = label;
    r->sales = sales;
    r->sent_at = calloc(sales, sizeof *r->sent_at);
    r->latency = calloc(sales, sizeof *r->latency);
}

static void run_reset(run *r, unsigned sales)
{
    r->sales = sales;
    r->published = r->requests = r->confirmations = 0;
    r->latency_count = 0;
    memset(r->sent_at, 0, sales * sizeof *r->sent_at);
}

static void print_latency(const run *r)
{
    uint64_t *l = r->latency;
    size_t n = r->latency_count;
    bench_sort_u64(l, n);
    if (n == 0) {
        printf("  %-6s no samples\n", r->label);
        return;
    }
    printf("  %-6s sale -> ride request at taxi: p50 %7.3f ms   p99 %7.3f ms   max %7.3f ms   (%zu samples)\n",
           r->label, (double)bench_percentile(l, n, 50) / 1000.0,
           (double)bench_percentile(l, n, 99) / 1000.0, (double)l[n - 1] / 1000.0, n);
}

int main(int argc, char **argv)
{
    const char *pki = NULL;
    int idevs_port = 0, plain_port = 0;
    unsigned sales = 2000, latency_sales = 1000, rounds = 3;
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--pki") == 0 && v != NULL)
            pki = v, i++;
        else if (strcmp(argv[i], "--idevs-port") == 0 && v != NULL)
            idevs_port = atoi(v), i++;
        else if (strcmp(argv[i], "--plain-port") == 0 && v != NULL)
            plain_port = atoi(v), i++;
        else if (strcmp(argv[i], "--sales") == 0 && v != NULL)
            sales = (unsigned)strtoul(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--rounds") == 0 && v != NULL)
            rounds = (unsigned)strtoul(v, NULL, 10), i++;
        else if (strcmp(argv[i], "--latency-sales") == 0 && v != NULL)
            latency_sales = (unsigned)strtoul(v, NULL, 10), i++;
        else {
            fprintf(stderr, "usage: bench_casestudy --pki DIR --idevs-port P --plain-port Q [--sales N] "
                            "[--latency-sales M] [--rounds R]\n");
            return 2;
        }
    }
    if (pki == NULL || idevs_port <= 0 || plain_port <= 0 || sales == 0 || sales > SALES_MAX ||
        latency_sales == 0 || latency_sales > SALES_MAX || rounds == 0 || rounds > ROUNDS_MAX) {
        fprintf(stderr, "bench_casestudy: --pki, --idevs-port and --plain-port are needed; 1 <= sales <= %d\n",
                SALES_MAX);
        return 2;
    }
    unsigned most = sales > latency_sales ? sales : latency_sales;
    mosquitto_lib_init();
    run ri, rp;
    run_init(&ri, "idevs", most);
    run_init(&rp, "plain", most);
    idevs_side is = {.r = &ri};
    plain_side ps = {.r = &rp};
    int rc = 1;
    if (ri.sent_at == NULL || ri.latency == NULL || rp.sent_at == NULL || rp.latency == NULL)
        goto out;
    if ((is.taxi = service(pki, idevs_port, "taxi", on_taxi, &is)) == NULL ||
        (is.messaging = service(pki, idevs_port, "messaging", on_messaging, &is)) == NULL ||
        (is.store = service(pki, idevs_port, "store", NULL, &is)) == NULL)
        goto out;
    if ((ps.store = plain_client(&ps, plain_port, "bench-store", NULL, NULL)) == NULL ||
        (ps.process = plain_client(&ps, plain_port, "bench-process", plain_topic[0], plain_topic[2])) == NULL ||
        (ps.taxi = plain_client(&ps, plain_port, "bench-taxi", plain_topic[1], NULL)) == NULL ||
        (ps.messaging = plain_client(&ps, plain_port, "bench-messaging", plain_topic[3], NULL)) == NULL)
        goto out;
    for (int i = 0; i < 20; i++) /* let the subscriptions settle */
        plain_turn(&ps), idevs_turn(&is);

    /* Warm-up: key epochs with every peer are set up once, not inside the timed run; the watcher learns the
     * sealed sizes. */
    if ((is.watcher = mosquitto_new("bench-watcher", true, &is)) == NULL ||
        mosquitto_connect(is.watcher, "127.0.0.1", idevs_port, 30) != MOSQ_ERR_SUCCESS ||
        mosquitto_subscribe(is.watcher, NULL, "idevs/rewards/+/+", 0) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: the watcher cannot subscribe\n");
        goto out;
    }
    mosquitto_message_callback_set(is.watcher, on_watch);
    for (int i = 0; i < 20; i++)
        idevs_turn(&is);
    run_reset(&ri, 20);
    if (!idevs_drive(&is, 0, WINDOW))
        goto out;
    for (int i = 0; i < 50; i++)
        idevs_turn(&is);
    mosquitto_destroy(is.watcher);
    is.watcher = NULL;
    for (int hop = 0; hop < 4; hop++)
        ps.size[hop] = is.sealed[hop];
    run_reset(&rp, 20);
    if (!plain_drive(&ps, 0, WINDOW))
        goto out;

    printf("bench_casestudy: %u sales, each: sale in, ride request out, answer in, confirmation out (QoS 1)\n",
           sales);
    printf("plaintext sizes: sale %zu B, request %zu B, answer %zu B, confirmation %zu B\n", ri.bytes_in[0],
           ri.bytes_in[1], ri.bytes_in[2], ri.bytes_in[3]);
    printf("sealed sizes:    sale %zu B, request %zu B, answer %zu B, confirmation %zu B (plain payloads padded "
           "to these)\n",
           is.sealed[0], is.sealed[1], is.sealed[2], is.sealed[3]);

    /* Rounds alternate plain and idevs, so that both see the same background; the medians are reported. */
    double plain_rates[ROUNDS_MAX], idevs_rates[ROUNDS_MAX], ratios[ROUNDS_MAX];
    printf("throughput (messages through the broker per second, 4 per sale), %u rounds:\n", rounds);
    for (unsigned k = 0; k < rounds; k++) {
        run_reset(&rp, sales);
        uint64_t t0 = bench_now_us();
        if (!plain_drive(&ps, 0, WINDOW))
            goto out;
        plain_rates[k] = 4.0 * sales / ((double)(bench_now_us() - t0) / 1e6);
        run_reset(&ri, sales);
        t0 = bench_now_us();
        if (!idevs_drive(&is, 0, WINDOW))
            goto out;
        idevs_rates[k] = 4.0 * sales / ((double)(bench_now_us() - t0) / 1e6);
        ratios[k] = idevs_rates[k] / plain_rates[k];
        printf("  round %u: plain %7.0f msg/s, idevs %7.0f msg/s, ratio %.2f\n", k + 1, plain_rates[k],
               idevs_rates[k], ratios[k]);
    }
    double plain_rate = bench_median(plain_rates, rounds), idevs_rate = bench_median(idevs_rates, rounds);
    printf("  median: plain %7.0f msg/s (%5.0f sales/s), idevs %7.0f msg/s (%5.0f sales/s), ratio %.2f\n",
           plain_rate, plain_rate / 4, idevs_rate, idevs_rate / 4, bench_median(ratios, rounds));

    unsigned half = (unsigned)(idevs_rate / 4 / 2);
    if (half == 0)
        half = 1;
    printf("latency at %u sales/s (half of idevs's peak), %u sales:\n", half, latency_sales);
    run_reset(&rp, latency_sales);
    if (!plain_drive(&ps, half, WINDOW))
        goto out;
    run_reset(&ri, latency_sales);
    if (!idevs_drive(&is, half, WINDOW))
        goto out;
    print_latency(&rp);
    print_latency(&ri);
    idevs_service_stats st;
    idevs_service_get_stats(is.taxi, &st);
    printf("taxi: %" PRIu64 " delivered, %" PRIu64 " duplicates, %" PRIu64 " rejected\n", st.delivered, st.duplicates,
           st.rejected);
    rc = 0;
out:
    if (is.watcher != NULL)
        mosquitto_destroy(is.watcher);
    idevs_service_free(is.store);
    idevs_service_free(is.taxi);
    idevs_service_free(is.messaging);
    if (ps.store != NULL)
        mosquitto_destroy(ps.store);
    if (ps.process != NULL)
        mosquitto_destroy(ps.process);
    if (ps.taxi != NULL)
        mosquitto_destroy(ps.taxi);
    if (ps.messaging != NULL)
        mosquitto_destroy(ps.messaging);
    free(ri.sent_at);
    free(ri.latency);
    free(rp.sent_at);
    free(rp.latency);
    mosquitto_lib_cleanup();
    return rc;
}
