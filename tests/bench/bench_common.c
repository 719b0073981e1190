/* Helpers of the broker benchmarks: bench_common.h. */
#include "bench_common.h"

#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include <mqtt_protocol.h>

uint64_t bench_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

double bench_median(double *v, unsigned n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void bench_sort_u64(uint64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_u64);
}

uint64_t bench_percentile(const uint64_t *v, size_t n, unsigned p)
{
    return v[n * p / 100];
}

struct mosquitto *bench_client(const char *id, int port, void *arg, bench_on_message on_message)
{
    struct mosquitto *m = mosquitto_new(id, true, arg);
    if (m == NULL)
        return NULL;
    mosquitto_int_option(m, MOSQ_OPT_PROTOCOL_VERSION, MQTT_PROTOCOL_V5);
    mosquitto_int_option(m, MOSQ_OPT_TCP_NODELAY, 1);
    mosquitto_message_v5_callback_set(m, on_message);
    if (mosquitto_connect(m, "127.0.0.1", port, 30) != MOSQ_ERR_SUCCESS) {
        fprintf(stderr, "bench: %s cannot connect to 127.0.0.1:%d\n", id, port);
        mosquitto_destroy(m);
        return NULL;
    }
    return m;
}

void bench_wait_sockets(const int *fds, const bool *want_write, int n, int timeout_ms, bool *ready)
{
    struct pollfd p[BENCH_SOCKETS_MAX];
    int map[BENCH_SOCKETS_MAX], k = 0;
    for (int i = 0; i < n && i < BENCH_SOCKETS_MAX; i++) {
        ready[i] = fds[i] < 0 || want_write[i];
        if (fds[i] >= 0) {
            map[k] = i;
            p[k++] = (struct pollfd){.fd = fds[i], .events = (short)(POLLIN | (want_write[i] ? POLLOUT : 0))};
        }
    }
    if (poll(p, (nfds_t)k, timeout_ms) > 0)
        for (int j = 0; j < k; j++)
            if (p[j].revents != 0)
                ready[map[j]] = true;
}

bool bench_loop_ready(struct mosquitto *const *clients, int n, int timeout_ms)
{
    int fds[BENCH_SOCKETS_MAX] = {0};
    bool ww[BENCH_SOCKETS_MAX] = {false}, ready[BENCH_SOCKETS_MAX], ok = true;
    if (n > BENCH_SOCKETS_MAX)
        n = BENCH_SOCKETS_MAX;
    for (int i = 0; i < n; i++) {
        fds[i] = mosquitto_socket(clients[i]);
        ww[i] = mosquitto_want_write(clients[i]);
    }
    bench_wait_sockets(fds, ww, n, timeout_ms, ready);
    for (int i = 0; i < n; i++)
        if (ready[i] && mosquitto_loop(clients[i], 0, 1) != MOSQ_ERR_SUCCESS)
            ok = false;
    return ok;
}

static uint64_t due_at(const bench_pace *p, unsigned published)
{
    return p->start + (uint64_t)published * 1000000u / p->rate;
}

bool bench_pace_due(const bench_pace *p, unsigned published, unsigned finished)
{
    if (published >= p->total)
        return false;
    return p->rate > 0 ? bench_now_us() >= due_at(p, published) : published - finished < p->window;
}

int bench_pace_wait_ms(const bench_pace *p, unsigned published, unsigned finished)
{
    if (published >= p->total)
        return 10;
    if (p->rate == 0)
        return published - finished < p->window ? 0 : 10;
    uint64_t due = due_at(p, published), now = bench_now_us();
    return due <= now ? 0 : (int)((due - now + 999u) / 1000u);
}
