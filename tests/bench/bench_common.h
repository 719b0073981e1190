/* What the benchmarks that drive a real broker share (bench_casestudy.c, bench_processes.c): a monotonic clock,
 * medians and percentiles, MQTT 5 clients of a loopback broker, waiting on several clients' sockets at once, and
 * the pacing of a driver that publishes either with a bounded window of unfinished messages (closed loop) or at
 * a fixed rate. */
#ifndef IDEVS_BENCH_COMMON_H
#define IDEVS_BENCH_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <mosquitto.h>

uint64_t bench_now_us(void);

/* The median of v[0..n), n > 0; sorts v. */
double bench_median(double *v, unsigned n);

/* Sorts v[0..n); then bench_percentile(v, n, p) is the p-th percentile (0 <= p < 100, nearest rank), n > 0. */
void bench_sort_u64(uint64_t *v, size_t n);
uint64_t bench_percentile(const uint64_t *v, size_t n, unsigned p);

typedef void (*bench_on_message)(struct mosquitto *m, void *arg, const struct mosquitto_message *msg,
                                 const mosquitto_property *props);

/* An MQTT 5 client `id` of the broker on 127.0.0.1:port with TCP_NODELAY (as the service library sets it) and
 * on_message as its message callback, arg its user data; CONNECT is sent, the CONNACK read by the first loops.
 * NULL (said on stderr) when it cannot connect. */
struct mosquitto *bench_client(const char *id, int port, void *arg, bench_on_message on_message);

/* Waits at most timeout_ms for the n (<= BENCH_SOCKETS_MAX) sockets fds[] and sets ready[i] for those with
 * something to do: readable, or want_write[i] (bytes to write), or fds[i] < 0 (disconnected: let its loop say
 * so). Blocking in poll() rather than spinning, and running only the clients with work, leaves the cores to
 * the broker and the compartments as far as a client in the same machine can. */
#define BENCH_SOCKETS_MAX 8
void bench_wait_sockets(const int *fds, const bool *want_write, int n, int timeout_ms, bool *ready);

/* Runs the loops of those of clients[0..n) (n <= BENCH_SOCKETS_MAX) with something to do, waiting for them at
 * most timeout_ms (bench_wait_sockets); false when a loop fails (a connection lost). */
bool bench_loop_ready(struct mosquitto *const *clients, int n, int timeout_ms);

/* The pace of a driver that publishes `total` messages: closed loop (rate 0) with at most `window` published
 * and not finished, or `rate` per second from `start` (bench_now_us()). */
typedef struct bench_pace {
    unsigned total, rate, window;
    uint64_t start;
} bench_pace;

/* Whether the next message is due, `published` out and `finished` of them done. */
bool bench_pace_due(const bench_pace *p, unsigned published, unsigned finished);

/* How long the driver may block for its sockets: until the next message is due, or 10 ms when it waits only
 * for what is under way (window full, or all published). */
int bench_pace_wait_ms(const bench_pace *p, unsigned published, unsigned finished);

#endif
